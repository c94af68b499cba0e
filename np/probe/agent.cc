#include "np/probe/agent.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace np::probe {
namespace {

constexpr int kMaxInFlight = 1024;
constexpr int kUdpSends = 3;

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

enum class Proto { kTcp, kUdp, kSctp };

bool ParseProto(const std::string& text, Proto* out) {
  if (text == "tcp" || text == "TCP") {
    *out = Proto::kTcp;
  } else if (text == "udp" || text == "UDP") {
    *out = Proto::kUdp;
  } else if (text == "sctp" || text == "SCTP") {
    *out = Proto::kSctp;
  } else {
    return false;
  }
  return true;
}

const char* ProtoName(Proto p) {
  switch (p) {
    case Proto::kTcp:
      return "tcp";
    case Proto::kUdp:
      return "udp";
    case Proto::kSctp:
      return "sctp";
  }
  return "?";
}

int SocketType(Proto p) { return p == Proto::kUdp ? SOCK_DGRAM : SOCK_STREAM; }
int SocketProtocol(Proto p) { return p == Proto::kSctp ? IPPROTO_SCTP : 0; }

bool ParsePort(const std::string& text, uint16_t* port) {
  if (text.empty() || text.size() > 5) return false;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  if (value < 1 || value > 65535) return false;
  *port = static_cast<uint16_t>(value);
  return true;
}

// "10.1.0.2" or "fd00::2" (brackets allowed) and a port -> sockaddr.
bool ParseAddress(std::string text, uint16_t port, sockaddr_storage* out, socklen_t* len) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  std::memset(out, 0, sizeof(*out));
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (inet_pton(AF_INET, text.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (inet_pton(AF_INET6, text.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

std::vector<std::string> SplitWords(const std::string& line) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

struct Listener {
  Proto proto;
  int family;
};

struct Probe {
  std::string id;
  Proto proto = Proto::kTcp;
  sockaddr_storage address{};
  socklen_t address_len = 0;
  sockaddr_storage source{};  // bound before connect when source_len > 0
  socklen_t source_len = 0;
  int timeout_ms = 1000;
  int max_sends = kUdpSends;  // UDP datagrams within the timeout; 1 with `once`
  bool once = false;
  // `once:WATCH_MS`: how long past timeout_ms an unanswered probe keeps its socket, so that
  // an answer to its one packet that comes late is told apart from no answer at all.
  int watch_ms = 0;
  int fd = -1;
  int64_t start = 0;
  int64_t deadline = 0;  // start + timeout_ms + watch_ms: the probe ends, answered or not
  int64_t next_send = 0;
  int sends = 0;
  std::string payload;
};

class Agent {
 public:
  bool Init() {
    signal(SIGPIPE, SIG_IGN);
    rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
      limit.rlim_cur = limit.rlim_max;
      setrlimit(RLIMIT_NOFILE, &limit);
    }
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    return epoll_fd_ >= 0;
  }

  // Binds `port` for `proto` on every address of both families (IPv6 where the kernel has
  // it). Idempotent.
  bool Listen(Proto proto, uint16_t port, std::string* error) {
    if (listening_.count({static_cast<int>(proto), port}) > 0) return true;
    int bound = 0;
    std::string why;
    for (int family : {AF_INET, AF_INET6}) {
      int fd = socket(family, SocketType(proto) | SOCK_NONBLOCK | SOCK_CLOEXEC,
                      SocketProtocol(proto));
      if (fd < 0) {
        if (errno == EAFNOSUPPORT && family == AF_INET6) continue;
        why = errno == EPROTONOSUPPORT || errno == ESOCKTNOSUPPORT
                  ? std::string(ProtoName(proto)) + " sockets are not supported by this kernel"
                  : std::string("socket: ") + std::strerror(errno);
        break;
      }
      int one = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      sockaddr_storage addr{};
      socklen_t len;
      if (family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&addr);
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        len = sizeof(*a);
        if (proto == Proto::kUdp) setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
      } else {
        auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        a->sin6_addr = in6addr_any;
        len = sizeof(*a);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (proto == Proto::kUdp) {
          setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
        }
      }
      if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
        int e = errno;
        close(fd);
        if (family == AF_INET6 && (e == EADDRNOTAVAIL || e == EAFNOSUPPORT)) continue;
        why = std::string("bind: ") + std::strerror(e);
        break;
      }
      if (proto != Proto::kUdp && listen(fd, 4096) != 0) {
        why = std::string("listen: ") + std::strerror(errno);
        close(fd);
        break;
      }
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
      listeners_[fd] = Listener{proto, family};
      ++bound;
    }
    if (!why.empty() || bound == 0) {
      *error = why.empty() ? "no address family could be bound" : why;
      return false;
    }
    listening_.insert({static_cast<int>(proto), port});
    return true;
  }

  // Queues a probe; it starts at once unless kMaxInFlight are already running.
  void AddProbe(std::unique_ptr<Probe> probe) {
    queue_.push_back(std::move(probe));
    StartQueued();
  }

  // control: read commands from stdin until it closes. Otherwise (connect mode) return when
  // every probe has finished; serve mode without control never returns.
  void Run(bool control, bool until_probes_done) {
    if (control) {
      fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = 0;
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, 0, &ev);
    }
    std::vector<epoll_event> events(256);
    while (!quit_) {
      if (until_probes_done && in_flight_.empty() && queue_.empty()) break;
      int64_t now = NowMs();
      int wait = -1;
      for (const auto& [fd, probe] : in_flight_) {
        int64_t next = probe->deadline;
        if (probe->proto == Proto::kUdp && probe->sends < probe->max_sends) {
          next = std::min(next, probe->next_send);
        }
        int64_t delta = std::max<int64_t>(0, next - now);
        if (wait < 0 || delta < wait) wait = static_cast<int>(delta);
      }
      int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), wait);
      if (n < 0 && errno != EINTR) break;
      for (int i = 0; i < n; ++i) {
        int fd = events[i].data.fd;
        if (fd == 0 && control) {
          ReadCommands();
        } else if (auto l = listeners_.find(fd); l != listeners_.end()) {
          Serve(fd, l->second);
        } else if (auto p = in_flight_.find(fd); p != in_flight_.end()) {
          OnProbeEvent(p->second.get());
        }
      }
      Tick();
      Flush();
    }
    Flush();
  }

  int failures() const { return failures_; }

 private:
  void Emit(const std::string& line) {
    out_ += line;
    out_ += '\n';
  }

  void Flush() {
    size_t off = 0;
    while (off < out_.size()) {
      ssize_t w = write(1, out_.data() + off, out_.size() - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          usleep(1000);
          continue;
        }
        quit_ = true;  // nobody reads us any more
        break;
      }
      off += static_cast<size_t>(w);
    }
    out_.clear();
  }

  void ReadCommands() {
    char buf[65536];
    while (true) {
      ssize_t r = read(0, buf, sizeof(buf));
      if (r > 0) {
        in_.append(buf, static_cast<size_t>(r));
        continue;
      }
      if (r == 0) {
        quit_ = true;  // the harness went away
        return;
      }
      if (errno == EINTR) continue;
      break;  // EAGAIN
    }
    size_t start = 0;
    while (true) {
      size_t nl = in_.find('\n', start);
      if (nl == std::string::npos) break;
      Command(in_.substr(start, nl - start));
      start = nl + 1;
    }
    in_.erase(0, start);
  }

  void Command(const std::string& line) {
    std::vector<std::string> w = SplitWords(line);
    if (w.empty()) return;
    // The optional last word: `once` or `once:WATCH_MS`.
    bool once = false;
    int watch = 0;
    if (w.size() >= 7 && (w.back() == "once" || w.back().rfind("once:", 0) == 0)) {
      once = true;
      if (w.back().size() > 4) {
        watch = std::atoi(w.back().c_str() + 5);
        if (watch <= 0 || watch > 600000) {
          Emit("result " + w[1] + " error 0 bad-once-watch");
          return;
        }
      }
      w.pop_back();
    }
    if (w[0] == "probe" && (w.size() == 6 || w.size() == 7)) {
      auto probe = std::make_unique<Probe>();
      probe->id = w[1];
      uint16_t port = 0;
      int timeout = std::atoi(w[5].c_str());
      if (!ParseProto(w[2], &probe->proto) || !ParsePort(w[4], &port) ||
          !ParseAddress(w[3], port, &probe->address, &probe->address_len) || timeout <= 0 ||
          timeout > 600000) {
        Emit("result " + w[1] + " error 0 bad-probe-command");
        return;
      }
      if (w.size() == 7 &&
          (!ParseAddress(w[6], 0, &probe->source, &probe->source_len) ||
           probe->source.ss_family != probe->address.ss_family)) {
        Emit("result " + w[1] + " error 0 bad-source-address");
        return;
      }
      probe->timeout_ms = timeout;
      if (once) {
        probe->once = true;
        probe->max_sends = 1;
        probe->watch_ms = watch;
      }
      AddProbe(std::move(probe));
    } else if (w[0] == "listen" && w.size() == 3) {
      Proto proto;
      uint16_t port;
      std::string error;
      if (!ParseProto(w[1], &proto) || !ParsePort(w[2], &port)) {
        Emit("error listen " + w[1] + " " + w[2] + ": bad arguments");
      } else if (!Listen(proto, port, &error)) {
        Emit("error listen " + w[1] + " " + w[2] + ": " + error);
      } else {
        Emit("listening " + w[1] + " " + w[2]);
      }
    } else if (w[0] == "ping") {
      Emit("pong");
    } else if (w[0] == "quit") {
      quit_ = true;
    } else {
      Emit("error unknown command: " + line);
    }
  }

  void Serve(int fd, const Listener& listener) {
    if (listener.proto != Proto::kUdp) {
      // The handshake is what the client waits for; accepting drains the backlog.
      while (true) {
        int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
          if (errno == EINTR) continue;
          return;
        }
        close(c);
      }
    }
    // UDP: echo every datagram from the address it was sent to.
    for (int budget = 0; budget < 1024; ++budget) {
      char data[2048];
      char control[256];
      sockaddr_storage peer{};
      iovec iov{data, sizeof(data)};
      msghdr msg{};
      msg.msg_name = &peer;
      msg.msg_namelen = sizeof(peer);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t r = recvmsg(fd, &msg, MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EINTR) continue;
        return;
      }
      char reply_control[256];
      std::memset(reply_control, 0, sizeof(reply_control));
      msghdr reply{};
      iovec reply_iov{data, static_cast<size_t>(r)};
      reply.msg_name = &peer;
      reply.msg_namelen = msg.msg_namelen;
      reply.msg_iov = &reply_iov;
      reply.msg_iovlen = 1;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
          in_pktinfo info;
          std::memcpy(&info, CMSG_DATA(c), sizeof(info));
          in_pktinfo out{};
          out.ipi_spec_dst = info.ipi_addr;
          reply.msg_control = reply_control;
          reply.msg_controllen = CMSG_SPACE(sizeof(out));
          cmsghdr* rc = CMSG_FIRSTHDR(&reply);
          rc->cmsg_level = IPPROTO_IP;
          rc->cmsg_type = IP_PKTINFO;
          rc->cmsg_len = CMSG_LEN(sizeof(out));
          std::memcpy(CMSG_DATA(rc), &out, sizeof(out));
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
          in6_pktinfo info;
          std::memcpy(&info, CMSG_DATA(c), sizeof(info));
          in6_pktinfo out{};
          out.ipi6_addr = info.ipi6_addr;
          reply.msg_control = reply_control;
          reply.msg_controllen = CMSG_SPACE(sizeof(out));
          cmsghdr* rc = CMSG_FIRSTHDR(&reply);
          rc->cmsg_level = IPPROTO_IPV6;
          rc->cmsg_type = IPV6_PKTINFO;
          rc->cmsg_len = CMSG_LEN(sizeof(out));
          std::memcpy(CMSG_DATA(rc), &out, sizeof(out));
        }
      }
      sendmsg(fd, &reply, MSG_DONTWAIT);
    }
  }

  void StartQueued() {
    while (!queue_.empty() && static_cast<int>(in_flight_.size()) < kMaxInFlight) {
      std::unique_ptr<Probe> probe = std::move(queue_.front());
      queue_.pop_front();
      Start(std::move(probe));
    }
  }

  static const char* Classify(int error) {
    switch (error) {
      case ECONNREFUSED:
        return "refused";
      case ETIMEDOUT:
        return "timeout";
      case EHOSTUNREACH:
      case ENETUNREACH:
      case EACCES:
      case EPERM:
      case EHOSTDOWN:
      case ENETDOWN:
        return "unreachable";
      default:
        return "error";
    }
  }

  void Start(std::unique_ptr<Probe> probe) {
    Probe* p = probe.get();
    p->start = NowMs();
    p->deadline = p->start + p->timeout_ms + p->watch_ms;
    int family = p->address.ss_family;
    int fd = socket(family, SocketType(p->proto) | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    SocketProtocol(p->proto));
    if (fd < 0) {
      int e = errno;
      Result(*p, e == EPROTONOSUPPORT || e == ESOCKTNOSUPPORT ? "error" : Classify(e),
             std::string("socket:") + std::strerror(e));
      return;
    }
    p->fd = fd;
    if (p->source_len > 0 &&
        bind(fd, reinterpret_cast<sockaddr*>(&p->source), p->source_len) != 0) {
      int e = errno;
      Result(*p, "error", std::string("bind:") + std::strerror(e));
      CloseProbe(p);
      return;
    }
    int r = connect(fd, reinterpret_cast<sockaddr*>(&p->address), p->address_len);
    if (r != 0 && errno != EINPROGRESS) {
      int e = errno;
      Result(*p, Classify(e), std::string("connect:") + std::strerror(e));
      CloseProbe(p);
      return;
    }
    epoll_event ev{};
    ev.data.fd = fd;
    if (p->proto == Proto::kUdp) {
      p->payload = "np-probe " + p->id + " " + std::to_string(p->start) + "\n";
      ev.events = EPOLLIN;
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
      in_flight_[fd] = std::move(probe);
      SendUdp(p);
      return;
    }
    if (r == 0) {
      Answered(p, "connected");
      return;
    }
    ev.events = EPOLLOUT;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    in_flight_[fd] = std::move(probe);
  }

  void SendUdp(Probe* p) {
    ++p->sends;
    p->next_send = p->start + static_cast<int64_t>(p->timeout_ms) * p->sends / p->max_sends;
    ssize_t w = send(p->fd, p->payload.data(), p->payload.size(), MSG_DONTWAIT);
    if (w < 0 && errno != EAGAIN && errno != ENOBUFS) {
      int e = errno;
      Finish(p, Classify(e), std::string("send:") + std::strerror(e));
    }
  }

  void OnProbeEvent(Probe* p) {
    if (p->proto != Proto::kUdp) {
      int error = 0;
      socklen_t len = sizeof(error);
      getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &error, &len);
      if (error == 0) {
        Answered(p, "connected");
      } else {
        Finish(p, Classify(error), std::strerror(error));
      }
      return;
    }
    while (true) {
      char buf[2048];
      ssize_t r = recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        int e = errno;
        Finish(p, Classify(e), std::strerror(e));
        return;
      }
      if (static_cast<size_t>(r) == p->payload.size() &&
          std::memcmp(buf, p->payload.data(), p->payload.size()) == 0) {
        Answered(p, "echoed");
        return;
      }
      // Anything else is not our answer; keep waiting.
    }
  }

  void Tick() {
    int64_t now = NowMs();
    std::vector<Probe*> expired;
    std::vector<Probe*> resend;
    for (const auto& [fd, probe] : in_flight_) {
      if (now >= probe->deadline) {
        expired.push_back(probe.get());
      } else if (probe->proto == Proto::kUdp && probe->sends < probe->max_sends &&
                 now >= probe->next_send) {
        resend.push_back(probe.get());
      }
    }
    for (Probe* p : resend) SendUdp(p);
    std::vector<int> expired_fds;
    for (Probe* p : expired) expired_fds.push_back(p->fd);
    for (int fd : expired_fds) {
      auto it = in_flight_.find(fd);
      if (it == in_flight_.end()) continue;
      // The last look before "timeout": an answer may sit in the socket while epoll_wait
      // returned other descriptors first (at most `events.size()` a call), or while this
      // process was not scheduled.
      pollfd pfd{fd, static_cast<int16_t>(it->second->proto == Proto::kUdp ? POLLIN : POLLOUT),
                 0};
      if (poll(&pfd, 1, 0) == 1) OnProbeEvent(it->second.get());
      it = in_flight_.find(fd);
      if (it != in_flight_.end()) Finish(it->second.get(), "timeout", "no-answer");
    }
    StartQueued();
  }

  // A probe got its answer (a TCP handshake, a UDP echo). Its status (agent.h): `ok` within
  // the timeout; for `once`, `late` when the answer came after the timeout but was the
  // answer to the probe's one packet, and `resent` when a TCP handshake needed a re-sent
  // packet (the kernel's own count: tcpi_total_retrans) or a full initial RTO (1 s: the
  // peer re-sent its SYN-ACK) — a packet was lost, however fast this process was.
  void Answered(Probe* p, const std::string& how) {
    const int64_t elapsed = NowMs() - p->start;
    if (p->once && p->proto != Proto::kUdp) {
      tcp_info info{};
      socklen_t len = sizeof(info);
      if (p->proto == Proto::kTcp && getsockopt(p->fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0) {
        std::string rtt = "_rtt_" + std::to_string(info.tcpi_rtt) + "us";
        if (info.tcpi_total_retrans > 0) {
          Finish(p, "resent", how + "_after_" + std::to_string(info.tcpi_total_retrans) +
                                  "_resends" + rtt);
          return;
        }
        if (info.tcpi_rtt >= 1000000) {
          Finish(p, "resent", how + "_after_a_peer_resend" + rtt);
          return;
        }
        if (elapsed > p->timeout_ms) {
          Finish(p, "late", how + rtt);
          return;
        }
      }
    }
    Finish(p, p->once && elapsed > p->timeout_ms ? "late" : "ok", how);
  }

  void Result(const Probe& p, const char* status, const std::string& detail) {
    if (std::strcmp(status, "ok") != 0) ++failures_;
    std::string d = detail;
    for (char& c : d) {
      if (c == ' ' || c == '\n') c = '_';
    }
    Emit("result " + p.id + " " + status + " " + std::to_string(NowMs() - p.start) + " " + d);
  }

  void Finish(Probe* p, const char* status, const std::string& detail) {
    Result(*p, status, detail);
    auto it = in_flight_.find(p->fd);
    std::unique_ptr<Probe> owned;
    if (it != in_flight_.end()) {
      owned = std::move(it->second);
      in_flight_.erase(it);
    }
    CloseProbe(p);
  }

  void CloseProbe(Probe* p) {
    if (p->fd < 0) return;
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, p->fd, nullptr);
    if (p->proto != Proto::kUdp) {
      // Reset rather than FIN: no TIME_WAIT pile-up across thousands of probes.
      linger l{1, 0};
      setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(p->fd);
    p->fd = -1;
  }

  int epoll_fd_ = -1;
  bool quit_ = false;
  int failures_ = 0;
  std::string in_;
  std::string out_;
  std::unordered_map<int, Listener> listeners_;
  std::set<std::pair<int, uint16_t>> listening_;
  std::unordered_map<int, std::unique_ptr<Probe>> in_flight_;
  std::deque<std::unique_ptr<Probe>> queue_;
};

void Usage() {
  std::fprintf(stderr,
               "usage: probe_agent serve [--listen tcp:80,udp:80,...] [--control]\n"
               "       probe_agent connect [--timeout-ms N] PROTO:ADDRESS:PORT ...\n");
}

// "tcp:80,udp:81" -> (proto, port) pairs.
bool ParseListenList(const std::string& text, std::vector<std::pair<Proto, uint16_t>>* out) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos
                                                                      : comma - start);
    if (!item.empty()) {
      size_t colon = item.find(':');
      Proto proto;
      uint16_t port;
      if (colon == std::string::npos || !ParseProto(item.substr(0, colon), &proto) ||
          !ParsePort(item.substr(colon + 1), &port)) {
        return false;
      }
      out->push_back({proto, port});
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return true;
}

}  // namespace

int AgentMain(int argc, char** argv) {
  if (argc < 2) {
    Usage();
    return 2;
  }
  std::string mode = argv[1];
  Agent agent;
  if (!agent.Init()) {
    std::fprintf(stderr, "probe_agent: epoll: %s\n", std::strerror(errno));
    return 1;
  }
  if (mode == "serve") {
    bool control = false;
    std::vector<std::pair<Proto, uint16_t>> listen;
    for (int i = 2; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "--control") {
        control = true;
      } else if (arg == "--listen" && i + 1 < argc) {
        if (!ParseListenList(argv[++i], &listen)) {
          std::fprintf(stderr, "probe_agent: bad --listen %s\n", argv[i]);
          return 2;
        }
      } else {
        Usage();
        return 2;
      }
    }
    for (const auto& [proto, port] : listen) {
      std::string error;
      if (!agent.Listen(proto, port, &error)) {
        std::printf("error listen %s %u: %s\n", ProtoName(proto), port, error.c_str());
        std::fflush(stdout);
        return 1;
      }
    }
    std::printf("ready\n");
    std::fflush(stdout);
    agent.Run(control, /*until_probes_done=*/false);
    return 0;
  }
  if (mode == "connect") {
    int timeout = 1000;
    int id = 0;
    for (int i = 2; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "--timeout-ms" && i + 1 < argc) {
        timeout = std::atoi(argv[++i]);
        if (timeout <= 0 || timeout > 600000) {
          std::fprintf(stderr, "probe_agent: --timeout-ms must be 1..600000\n");
          return 2;
        }
        continue;
      }
      // PROTO:ADDRESS:PORT, the address in brackets when it is IPv6.
      size_t first = arg.find(':');
      size_t last = arg.rfind(':');
      auto probe = std::make_unique<Probe>();
      uint16_t port = 0;
      if (first == std::string::npos || last == first ||
          !ParseProto(arg.substr(0, first), &probe->proto) ||
          !ParsePort(arg.substr(last + 1), &port) ||
          !ParseAddress(arg.substr(first + 1, last - first - 1), port, &probe->address,
                        &probe->address_len)) {
        std::fprintf(stderr, "probe_agent: bad target %s (want tcp:10.0.0.1:80 or "
                             "udp:[fd00::1]:53)\n", arg.c_str());
        return 2;
      }
      probe->id = std::to_string(id++) + ":" + arg;
      probe->timeout_ms = timeout;
      agent.AddProbe(std::move(probe));
    }
    if (id == 0) {
      Usage();
      return 2;
    }
    agent.Run(/*control=*/false, /*until_probes_done=*/true);
    return agent.failures() == 0 ? 0 : 1;
  }
  Usage();
  return 2;
}

}  // namespace np::probe
