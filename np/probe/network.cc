#include "np/probe/network.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/match.h"
#include "np/backends/util.h"

namespace np::probe {
namespace {

constexpr absl::string_view kNamePrefix = "npprobe-";
constexpr char kNetnsDir[] = "/run/netns";

volatile std::sig_atomic_t g_signal = 0;

void OnSignal(int signal) { g_signal = signal; }

// Locally administered MACs: 02:6e:70:<kind>:<index>.
enum MacKind {
  kPodEth0 = 1,
  kHostVeth = 2,
  kNodeUplink = 3,
  kFabricPort = 4,
  kExternalEth0 = 5,
  kExternalHost = 6
};
std::string Mac(MacKind kind, int index) {
  return absl::StrFormat("02:6e:70:%02x:%02x:%02x", static_cast<int>(kind), (index >> 8) & 0xff,
                         index & 0xff);
}

// The gateway every pod routes through: a static neighbour on the pod's eth0.
constexpr char kPodGateway4[] = "169.254.1.1";
constexpr char kPodGateway6[] = "fe80::1";
// A node's gateway on the fabric.
constexpr char kFabricGateway4[] = "169.254.2.1";
constexpr char kFabricGateway6[] = "fe80::2";

std::string HostPrefix(const IpAddress& a) {
  return absl::StrCat(a.ToString(), a.is_v4() ? "/32" : "/128");
}

int EnableForwarding(void*) {
  for (const char* path :
       {"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    if (write(fd, "1\n", 2) != 2) {
      close(fd);
      return 1;
    }
    close(fd);
  }
  return 0;
}

// IPCTNL_MSG_CT_DELETE without a tuple: the kernel flushes the namespace's conntrack table
// (of one family per message).
int FlushConntrackHere(void*) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return 1;
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) return 1;
  uint32_t seq = 1;
  for (int family : {AF_INET, AF_INET6}) {
    struct {
      nlmsghdr header;
      nfgenmsg body;
    } request{};
    request.header.nlmsg_len = sizeof(request);
    request.header.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    request.header.nlmsg_seq = seq++;
    request.body.nfgen_family = static_cast<uint8_t>(family);
    request.body.version = NFNETLINK_V0;
    request.body.res_id = 0;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (sendto(fd, &request, sizeof(request), 0, reinterpret_cast<sockaddr*>(&kernel),
               sizeof(kernel)) < 0) {
      return 1;
    }
    char reply[4096];
    ssize_t r = recv(fd, reply, sizeof(reply), 0);
    if (r < static_cast<ssize_t>(sizeof(nlmsghdr))) return 1;
    auto* h = reinterpret_cast<nlmsghdr*>(reply);
    if (h->nlmsg_type == NLMSG_ERROR) {
      auto* e = reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h));
      // ENOENT: nothing to flush.
      if (e->error != 0 && e->error != -ENOENT) return 1;
    }
  }
  close(fd);
  return 0;
}

absl::Status RunIpBatch(absl::string_view netns, const std::vector<std::string>& lines,
                        bool force = false) {
  if (lines.empty()) return absl::OkStatus();
  std::vector<std::string> argv = {"ip"};
  if (force) argv.push_back("-force");
  if (!netns.empty()) {
    argv.push_back("-n");
    argv.push_back(std::string(netns));
  }
  argv.push_back("-batch");
  argv.push_back("-");
  absl::StatusOr<std::string> out =
      backends::RunCommand(argv, absl::StrCat(absl::StrJoin(lines, "\n"), "\n"));
  return out.status();
}

}  // namespace

void InstallSignalHandlers() {
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &action, nullptr);
}

bool Interrupted() { return g_signal != 0; }
int InterruptSignal() { return g_signal; }

bool KernelHasSctp() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_SCTP);
  if (fd < 0) return false;
  close(fd);
  return true;
}

absl::Status RunInNetns(absl::string_view netns, int (*fn)(void*), void* arg,
                        absl::string_view what) {
  std::string path = absl::StrCat(kNetnsDir, "/", netns);
  int nsfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) {
    return absl::NotFoundError(absl::StrCat(what, ": cannot open ", path, ": ",
                                            std::strerror(errno)));
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(nsfd);
    return absl::InternalError(absl::StrCat(what, ": fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    if (setns(nsfd, CLONE_NEWNET) != 0) _exit(125);
    _exit(fn(arg));
  }
  close(nsfd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(what, " in namespace ", netns, " failed (status ",
                                            WIFEXITED(status) ? WEXITSTATUS(status) : -1, ")"));
  }
  return absl::OkStatus();
}

std::vector<std::string> NetworkSpec::Nodes() const {
  std::vector<std::string> nodes;
  for (const PodSpec& p : pods) nodes.push_back(p.node);
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  return nodes;
}

absl::StatusOr<NetworkSpec> NetworkSpecOf(const Cluster& cluster,
                                          std::vector<std::string>* notes) {
  NetworkSpec spec;
  int scheduled = 0, unscheduled = 0;
  for (int i = 0; i < cluster.pod_count(); ++i) {
    const PodInfo& pod = cluster.pod(i);
    if (pod.ips.empty()) {
      if (notes != nullptr) {
        notes->push_back(absl::StrCat(pod.Key(), ": no address in status.podIPs; not probed"));
      }
      continue;
    }
    // A shared address (two live pods hold it, both quarantined) can be routed to one pod
    // only: its owner for packet lookups (Cluster::PodByIp), as the backends attribute it.
    std::vector<IpAddress> ips;
    for (const IpAddress& ip : pod.ips) {
      std::optional<int> holder = cluster.PodByIp(ip);
      if (holder && *holder != i) {
        if (notes != nullptr) {
          notes->push_back(absl::StrCat(pod.Key(), ": shares ", ip.ToString(), " with ",
                                        cluster.pod(*holder).Key(),
                                        ", which gets the address in the test network"));
        }
        continue;
      }
      ips.push_back(ip);
    }
    if (ips.empty()) continue;
    (pod.node_name.empty() ? unscheduled : scheduled)++;
    spec.pods.push_back(PodSpec{pod.Key(), std::move(ips), pod.node_name});
  }
  if (scheduled > 0 && unscheduled > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        unscheduled, " pod(s) have no spec.nodeName while ", scheduled,
        " do: the harness needs every pod on a node, or none (then all share one node)"));
  }
  if (spec.pods.empty()) {
    return absl::InvalidArgumentError("no pod with an address: nothing to probe");
  }
  return spec;
}

TestNetwork::TestNetwork(NetworkSpec spec, std::string prefix)
    : spec_(std::move(spec)), prefix_(std::move(prefix)) {
  nodes_ = spec_.Nodes();
  for (const PodSpec& p : spec_.pods) {
    pod_node_.push_back(static_cast<int>(
        std::lower_bound(nodes_.begin(), nodes_.end(), p.node) - nodes_.begin()));
  }
}

TestNetwork::~TestNetwork() { (void)Destroy(); }

std::string TestNetwork::NodeNetns(absl::string_view node) const {
  auto it = std::lower_bound(nodes_.begin(), nodes_.end(), node);
  if (it == nodes_.end() || *it != node) return "";
  return absl::StrCat(prefix_, "n", it - nodes_.begin());
}

std::string TestNetwork::PodNetns(int pod) const { return absl::StrCat(prefix_, "p", pod); }

backends::Attachment TestNetwork::AttachmentFor(absl::string_view node) const {
  backends::Attachment attachment;
  attachment.netns = NodeNetns(node);
  for (size_t i = 0; i < spec_.pods.size(); ++i) {
    if (spec_.pods[i].node != node) continue;
    attachment.interfaces.push_back({spec_.pods[i].key, absl::StrCat("p", i)});
  }
  return attachment;
}

absl::StatusOr<std::unique_ptr<TestNetwork>> TestNetwork::Create(
    const NetworkSpec& spec, std::vector<std::string> agent_command) {
  static std::atomic<int> counter{0};
  std::string prefix = absl::StrCat(kNamePrefix, getpid(), "-", counter++, "-");
  std::unique_ptr<TestNetwork> network(new TestNetwork(spec, prefix));
  if (absl::Status s = network->Build(agent_command); !s.ok()) {
    absl::Status cleanup = network->Destroy();
    if (!cleanup.ok()) {
      return absl::Status(s.code(), absl::StrCat(s.message(), "; and cleaning up: ",
                                                 cleanup.message()));
    }
    return s;
  }
  return network;
}

std::string TestNetwork::AgentName(size_t index) const {
  return index < spec_.pods.size() ? spec_.pods[index].key : "the external addresses";
}

absl::Status TestNetwork::Build(const std::vector<std::string>& agent_command) {
  agent_command_ = agent_command;
  if (spec_.pods.size() > 65535) {
    return absl::InvalidArgumentError("the harness supports at most 65535 pods");
  }
  const bool fabric = nodes_.size() > 1;
  std::vector<std::string> names;
  for (size_t k = 0; k < nodes_.size(); ++k) names.push_back(absl::StrCat(prefix_, "n", k));
  if (fabric) names.push_back(absl::StrCat(prefix_, "fab"));
  for (size_t i = 0; i < spec_.pods.size(); ++i) names.push_back(PodNetns(static_cast<int>(i)));
  // Record before creating, so that a half-made network is removed too.
  namespaces_ = names;
  std::vector<std::string> add;
  for (const std::string& n : names) add.push_back(absl::StrCat("netns add ", n));
  if (absl::Status s = RunIpBatch("", add); !s.ok()) return s;
  if (Interrupted()) return absl::CancelledError("interrupted");

  // Nodes: forwarding, lo, one veth per pod with host routes and static neighbours.
  for (size_t k = 0; k < nodes_.size(); ++k) {
    std::string node_ns = absl::StrCat(prefix_, "n", k);
    if (absl::Status s = RunInNetns(node_ns, EnableForwarding, nullptr, "enabling forwarding");
        !s.ok()) {
      return s;
    }
    std::vector<std::string> lines = {"link set lo up"};
    for (size_t i = 0; i < spec_.pods.size(); ++i) {
      if (pod_node_[i] != static_cast<int>(k)) continue;
      std::string host = absl::StrCat("p", i);
      lines.push_back(absl::StrCat("link add ", host, " address ", Mac(kHostVeth, i),
                                   " type veth peer name eth0 address ", Mac(kPodEth0, i),
                                   " netns ", PodNetns(static_cast<int>(i))));
      lines.push_back(absl::StrCat("link set ", host, " up"));
      for (const IpAddress& ip : spec_.pods[i].ips) {
        lines.push_back(absl::StrCat("route add ", HostPrefix(ip), " dev ", host));
        lines.push_back(absl::StrCat("neigh replace ", ip.ToString(), " lladdr ",
                                     Mac(kPodEth0, i), " dev ", host, " nud permanent"));
      }
    }
    if (fabric) {
      lines.push_back(absl::StrCat("link add fab0 address ", Mac(kNodeUplink, k),
                                   " type veth peer name n", k, " address ",
                                   Mac(kFabricPort, k), " netns ", prefix_, "fab"));
      lines.push_back("link set fab0 up");
      lines.push_back(absl::StrCat("route add default via ", kFabricGateway4,
                                   " dev fab0 onlink"));
      lines.push_back(absl::StrCat("neigh replace ", kFabricGateway4, " lladdr ",
                                   Mac(kFabricPort, k), " dev fab0 nud permanent"));
      lines.push_back(absl::StrCat("route add ::/0 via ", kFabricGateway6, " dev fab0 onlink"));
      lines.push_back(absl::StrCat("neigh replace ", kFabricGateway6, " lladdr ",
                                   Mac(kFabricPort, k), " dev fab0 nud permanent"));
    }
    if (absl::Status s = RunIpBatch(node_ns, lines); !s.ok()) return s;
  }
  if (fabric) {
    std::string fab = absl::StrCat(prefix_, "fab");
    if (absl::Status s = RunInNetns(fab, EnableForwarding, nullptr, "enabling forwarding");
        !s.ok()) {
      return s;
    }
    std::vector<std::string> lines = {"link set lo up"};
    for (size_t k = 0; k < nodes_.size(); ++k) lines.push_back(absl::StrCat("link set n", k, " up"));
    for (size_t i = 0; i < spec_.pods.size(); ++i) {
      int k = pod_node_[i];
      for (const IpAddress& ip : spec_.pods[i].ips) {
        lines.push_back(absl::StrCat("route add ", HostPrefix(ip), " dev n", k));
        lines.push_back(absl::StrCat("neigh replace ", ip.ToString(), " lladdr ",
                                     Mac(kNodeUplink, k), " dev n", k, " nud permanent"));
      }
    }
    if (absl::Status s = RunIpBatch(fab, lines); !s.ok()) return s;
  }
  // Pods: addresses, default routes through the static gateway neighbours.
  for (size_t i = 0; i < spec_.pods.size(); ++i) {
    if (Interrupted()) return absl::CancelledError("interrupted");
    std::vector<std::string> lines = {"link set lo up", "link set eth0 up"};
    bool v4 = false, v6 = false;
    for (const IpAddress& ip : spec_.pods[i].ips) {
      lines.push_back(absl::StrCat("addr add ", HostPrefix(ip), " dev eth0",
                                   ip.is_v6() ? " nodad" : ""));
      (ip.is_v4() ? v4 : v6) = true;
    }
    if (v4) {
      lines.push_back(absl::StrCat("route add default via ", kPodGateway4, " dev eth0 onlink"));
      lines.push_back(absl::StrCat("neigh replace ", kPodGateway4, " lladdr ",
                                   Mac(kHostVeth, i), " dev eth0 nud permanent"));
    }
    if (v6) {
      lines.push_back(absl::StrCat("route add ::/0 via ", kPodGateway6, " dev eth0 onlink"));
      lines.push_back(absl::StrCat("neigh replace ", kPodGateway6, " lladdr ",
                                   Mac(kHostVeth, i), " dev eth0 nud permanent"));
    }
    if (absl::Status s = RunIpBatch(PodNetns(static_cast<int>(i)), lines); !s.ok()) return s;
  }
  agents_.resize(spec_.pods.size());
  for (size_t i = 0; i < spec_.pods.size(); ++i) {
    if (absl::Status s = StartAgent(static_cast<int>(i), PodNetns(static_cast<int>(i)));
        !s.ok()) {
      return s;
    }
  }
  // Every agent says "ready" once it runs in its namespace.
  std::vector<std::string> nothing(agents_.size(), "ping\n");
  std::vector<std::string> failures;
  absl::Status s = Exchange(
      nothing,
      [&](int i, const std::string& line) {
        if (line == "pong") return true;
        if (line != "ready") failures.push_back(absl::StrCat(AgentName(i), ": ", line));
        return false;
      },
      absl::Now() + absl::Seconds(10));
  if (!failures.empty()) {
    return absl::InternalError(absl::StrCat("probe agents failed to start: ",
                                            absl::StrJoin(failures, "; ")));
  }
  return s;
}

absl::Status TestNetwork::StartAgent(int index, const std::string& netns) {
  if (agent_command_.empty()) return absl::InvalidArgumentError("no probe agent command");
  std::string path = absl::StrCat(kNetnsDir, "/", netns);
  int nsfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) {
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  int in_pipe[2], out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) {
    close(nsfd);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    close(nsfd);
    close(in_pipe[0]);
    close(in_pipe[1]);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  std::vector<std::string> argv = agent_command_;
  argv.push_back("serve");
  argv.push_back("--control");
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(nsfd);
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]}) close(fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // Its own process group: a terminal's ^C reaches the harness, which stops agents in
    // order; if the harness dies, the kernel kills the agent.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    if (setns(nsfd, CLONE_NEWNET) != 0) _exit(125);
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(nsfd);
  close(in_pipe[0]);
  close(out_pipe[1]);
  Agent& agent = agents_[index];
  agent.pid = pid;
  agent.in_fd = in_pipe[1];
  agent.out_fd = out_pipe[0];
  fcntl(agent.in_fd, F_SETFL, fcntl(agent.in_fd, F_GETFL) | O_NONBLOCK);
  fcntl(agent.out_fd, F_SETFL, fcntl(agent.out_fd, F_GETFL) | O_NONBLOCK);
  return absl::OkStatus();
}

absl::Status TestNetwork::Exchange(const std::vector<std::string>& outgoing,
                                   const std::function<bool(int, const std::string&)>& on_line,
                                   absl::Time deadline) {
  const size_t n = agents_.size();
  std::vector<size_t> written(n, 0);
  std::vector<bool> done(n, false);
  for (size_t i = 0; i < n; ++i) done[i] = outgoing[i].empty();
  while (true) {
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    if (Interrupted()) return absl::CancelledError("interrupted");
    absl::Time now = absl::Now();
    if (now >= deadline) {
      std::vector<std::string> late;
      for (size_t i = 0; i < n; ++i) {
        if (!done[i]) late.push_back(AgentName(i));
      }
      return absl::DeadlineExceededError(absl::StrCat(
          "probe agents did not answer in time: ", absl::StrJoin(late, ", ")));
    }
    std::vector<pollfd> fds;
    std::vector<std::pair<size_t, bool>> what;  // (agent, is_write)
    for (size_t i = 0; i < n; ++i) {
      if (done[i]) continue;
      if (agents_[i].out_fd < 0) {
        return absl::InternalError(absl::StrCat("the probe agent of ", AgentName(i),
                                                " is not running"));
      }
      fds.push_back({agents_[i].out_fd, POLLIN, 0});
      what.push_back({i, false});
      if (written[i] < outgoing[i].size()) {
        fds.push_back({agents_[i].in_fd, POLLOUT, 0});
        what.push_back({i, true});
      }
    }
    int wait_ms = static_cast<int>(
        std::min<int64_t>(50, absl::ToInt64Milliseconds(deadline - now) + 1));
    int r = poll(fds.data(), fds.size(), wait_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    }
    for (size_t f = 0; f < fds.size(); ++f) {
      if (fds[f].revents == 0) continue;
      auto [i, is_write] = what[f];
      Agent& agent = agents_[i];
      if (is_write) {
        ssize_t w = write(agent.in_fd, outgoing[i].data() + written[i],
                          outgoing[i].size() - written[i]);
        if (w > 0) written[i] += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
          return absl::InternalError(absl::StrCat("the probe agent of ", AgentName(i),
                                                  " stopped reading: ", std::strerror(errno)));
        }
        continue;
      }
      char buf[65536];
      ssize_t got = read(agent.out_fd, buf, sizeof(buf));
      if (got == 0) {
        return absl::InternalError(
            absl::StrCat("the probe agent of ", AgentName(i), " exited"));
      }
      if (got < 0) continue;
      agent.buffer.append(buf, static_cast<size_t>(got));
      size_t start = 0;
      while (true) {
        size_t nl = agent.buffer.find('\n', start);
        if (nl == std::string::npos) break;
        std::string line = agent.buffer.substr(start, nl - start);
        start = nl + 1;
        if (on_line(static_cast<int>(i), line)) done[i] = true;
      }
      agent.buffer.erase(0, start);
    }
  }
  return absl::OkStatus();
}

absl::Status TestNetwork::EnsureListening(
    const std::vector<std::pair<Protocol, uint16_t>>& ports) {
  std::vector<std::string> outgoing(agents_.size());
  for (size_t i = 0; i < agents_.size(); ++i) {
    for (const auto& [protocol, port] : ports) {
      if (agents_[i].listening.count({static_cast<int>(protocol), port}) > 0) continue;
      absl::StrAppend(&outgoing[i], "listen ", backends::ProtocolLower(
                                                   static_cast<ir::Protocol>(protocol)),
                      " ", port, "\n");
    }
    if (!outgoing[i].empty()) outgoing[i] += "ping\n";
  }
  std::vector<std::string> errors;
  absl::Status s = Exchange(
      outgoing,
      [&](int i, const std::string& line) {
        if (line == "pong") return true;
        if (absl::StartsWith(line, "error")) {
          errors.push_back(absl::StrCat(AgentName(i), ": ", line));
        }
        return false;
      },
      absl::Now() + absl::Seconds(10));
  if (!s.ok()) return s;
  if (!errors.empty()) {
    return absl::InternalError(absl::StrCat("probe agents could not listen: ",
                                            absl::StrJoin(errors, "; ")));
  }
  for (Agent& agent : agents_) {
    for (const auto& [protocol, port] : ports) {
      agent.listening.insert({static_cast<int>(protocol), port});
    }
  }
  return absl::OkStatus();
}

absl::Status TestNetwork::SetExternalAddresses(const std::vector<IpAddress>& wanted_in) {
  std::vector<IpAddress> wanted = wanted_in;
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  if (wanted == externals_) return absl::OkStatus();
  for (const IpAddress& a : wanted) {
    for (const PodSpec& p : spec_.pods) {
      if (std::find(p.ips.begin(), p.ips.end(), a) != p.ips.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(a.ToString(), " is ", p.key, "'s address, not an external one"));
      }
    }
  }
  const std::string ext = absl::StrCat(prefix_, "ext");
  const std::string node0 = absl::StrCat(prefix_, "n0");
  const std::string fab = absl::StrCat(prefix_, "fab");
  const bool fabric = nodes_.size() > 1;
  if (!external_) {
    namespaces_.push_back(ext);
    if (absl::Status s = RunIpBatch("", {absl::StrCat("netns add ", ext)}); !s.ok()) return s;
    external_ = true;
    std::vector<std::string> node_lines = {
        absl::StrCat("link add ext0 address ", Mac(kExternalHost, 0),
                     " type veth peer name eth0 address ", Mac(kExternalEth0, 0), " netns ", ext),
        "link set ext0 up"};
    if (absl::Status s = RunIpBatch(node0, node_lines); !s.ok()) return s;
    std::vector<std::string> ext_lines = {
        "link set lo up", "link set eth0 up",
        absl::StrCat("route add default via ", kPodGateway4, " dev eth0 onlink"),
        absl::StrCat("neigh replace ", kPodGateway4, " lladdr ", Mac(kExternalHost, 0),
                     " dev eth0 nud permanent"),
        absl::StrCat("route add ::/0 via ", kPodGateway6, " dev eth0 onlink"),
        absl::StrCat("neigh replace ", kPodGateway6, " lladdr ", Mac(kExternalHost, 0),
                     " dev eth0 nud permanent")};
    if (absl::Status s = RunIpBatch(ext, ext_lines); !s.ok()) return s;
    agents_.resize(spec_.pods.size() + 1);
    if (absl::Status s = StartAgent(external_agent(), ext); !s.ok()) return s;
    std::vector<std::string> outgoing(agents_.size());
    outgoing[external_agent()] = "ping\n";
    std::string failure;
    absl::Status s = Exchange(
        outgoing,
        [&](int, const std::string& line) {
          if (line == "pong") return true;
          if (line != "ready") failure = line;
          return false;
        },
        absl::Now() + absl::Seconds(10));
    if (!failure.empty()) {
      return absl::InternalError(absl::StrCat("the external probe agent failed: ", failure));
    }
    if (!s.ok()) return s;
  }
  std::vector<std::string> ext_lines, node_lines, fab_lines;
  for (const IpAddress& a : externals_) {
    if (std::binary_search(wanted.begin(), wanted.end(), a)) continue;
    ext_lines.push_back(absl::StrCat("addr del ", HostPrefix(a), " dev eth0"));
    node_lines.push_back(absl::StrCat("route del ", HostPrefix(a), " dev ext0"));
    node_lines.push_back(absl::StrCat("neigh del ", a.ToString(), " dev ext0"));
    if (fabric) {
      fab_lines.push_back(absl::StrCat("route del ", HostPrefix(a), " dev n0"));
      fab_lines.push_back(absl::StrCat("neigh del ", a.ToString(), " dev n0"));
    }
  }
  for (const IpAddress& a : wanted) {
    if (std::binary_search(externals_.begin(), externals_.end(), a)) continue;
    ext_lines.push_back(absl::StrCat("addr add ", HostPrefix(a), " dev eth0",
                                     a.is_v6() ? " nodad" : ""));
    node_lines.push_back(absl::StrCat("route add ", HostPrefix(a), " dev ext0"));
    node_lines.push_back(absl::StrCat("neigh replace ", a.ToString(), " lladdr ",
                                      Mac(kExternalEth0, 0), " dev ext0 nud permanent"));
    if (fabric) {
      fab_lines.push_back(absl::StrCat("route add ", HostPrefix(a), " dev n0"));
      fab_lines.push_back(absl::StrCat("neigh replace ", a.ToString(), " lladdr ",
                                       Mac(kNodeUplink, 0), " dev n0 nud permanent"));
    }
  }
  // When a family's last address leaves eth0, the kernel flushes that family's routes and
  // neighbours on it, so a later scenario's addresses would be unreachable: restore them
  // (idempotent) whenever the family has addresses again.
  for (bool v6 : {false, true}) {
    if (std::none_of(wanted.begin(), wanted.end(),
                     [&](const IpAddress& a) { return a.is_v6() == v6; })) {
      continue;
    }
    const char* gateway = v6 ? kPodGateway6 : kPodGateway4;
    ext_lines.push_back(absl::StrCat("route replace ", v6 ? "::/0" : "default", " via ", gateway,
                                     " dev eth0 onlink"));
    ext_lines.push_back(absl::StrCat("neigh replace ", gateway, " lladdr ",
                                     Mac(kExternalHost, 0), " dev eth0 nud permanent"));
  }
  externals_.clear();  // unknown until every batch went through
  if (absl::Status s = RunIpBatch(ext, ext_lines); !s.ok()) return s;
  if (absl::Status s = RunIpBatch(node0, node_lines); !s.ok()) return s;
  if (absl::Status s = RunIpBatch(fab, fab_lines); !s.ok()) return s;
  externals_ = wanted;
  return absl::OkStatus();
}

absl::Status TestNetwork::FlushConntrack() {
  std::vector<std::string> where;
  for (size_t k = 0; k < nodes_.size(); ++k) where.push_back(absl::StrCat(prefix_, "n", k));
  if (nodes_.size() > 1) where.push_back(absl::StrCat(prefix_, "fab"));
  for (const std::string& ns : where) {
    if (absl::Status s = RunInNetns(ns, FlushConntrackHere, nullptr, "flushing conntrack");
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ProbeOutcome>> TestNetwork::Run(
    const std::vector<ProbeRequest>& requests, absl::Duration slack) {
  std::vector<ProbeOutcome> outcomes(requests.size());
  std::vector<bool> answered(requests.size(), false);
  std::vector<int> remaining(agents_.size(), 0);
  std::vector<std::string> outgoing(agents_.size());
  int longest = 0;
  for (size_t r = 0; r < requests.size(); ++r) {
    const ProbeRequest& q = requests[r];
    if (q.source_pod < 0 || q.source_pod >= static_cast<int>(agents_.size())) {
      return absl::InvalidArgumentError("probe request from an unknown pod");
    }
    absl::StrAppend(&outgoing[q.source_pod], "probe ", r, " ",
                    backends::ProtocolLower(static_cast<ir::Protocol>(q.protocol)), " ",
                    q.destination.ToString(), " ", q.port, " ", q.timeout_ms,
                    q.source ? absl::StrCat(" ", q.source->ToString()) : "",
                    !q.once             ? ""
                    : q.watch_ms > 0 ? absl::StrCat(" once:", q.watch_ms)
                                     : " once",
                    "\n");
    ++remaining[q.source_pod];
    longest = std::max(longest, q.timeout_ms + (q.once ? q.watch_ms : 0));
  }
  absl::Status s = Exchange(
      outgoing,
      [&](int i, const std::string& line) {
        std::vector<std::string> w = absl::StrSplit(line, ' ');
        size_t r;
        if (w.size() < 4 || w[0] != "result" || !absl::SimpleAtoi(w[1], &r) ||
            r >= requests.size() || answered[r] || requests[r].source_pod != i) {
          return remaining[i] == 0;
        }
        answered[r] = true;
        outcomes[r].status = w[2];
        (void)absl::SimpleAtoi(w[3], &outcomes[r].millis);
        if (w.size() > 4) outcomes[r].detail = w[4];
        return --remaining[i] == 0;
      },
      absl::Now() + absl::Milliseconds(longest) + slack);
  if (!s.ok()) return s;
  return outcomes;
}

void TestNetwork::StopAgents() {
  for (Agent& agent : agents_) {
    if (agent.in_fd >= 0) close(agent.in_fd);  // EOF: the agent exits
    agent.in_fd = -1;
  }
  absl::Time deadline = absl::Now() + absl::Seconds(1);
  for (Agent& agent : agents_) {
    if (agent.pid <= 0) continue;
    int status;
    while (true) {
      pid_t r = waitpid(agent.pid, &status, WNOHANG);
      if (r == agent.pid || (r < 0 && errno != EINTR)) break;
      if (absl::Now() >= deadline) {
        kill(agent.pid, SIGKILL);
        while (waitpid(agent.pid, &status, 0) < 0 && errno == EINTR) {
        }
        break;
      }
      usleep(2000);
    }
    agent.pid = -1;
    if (agent.out_fd >= 0) close(agent.out_fd);
    agent.out_fd = -1;
  }
}

absl::Status TestNetwork::Destroy() {
  if (destroyed_) return absl::OkStatus();
  destroyed_ = true;
  StopAgents();
  std::vector<std::string> del;
  // Pods first: their veths disappear with them; nodes and the fabric last.
  for (auto it = namespaces_.rbegin(); it != namespaces_.rend(); ++it) {
    if (access(absl::StrCat(kNetnsDir, "/", *it).c_str(), F_OK) != 0) continue;
    del.push_back(absl::StrCat("netns del ", *it));
  }
  return RunIpBatch("", del, /*force=*/true);
}

absl::StatusOr<std::vector<std::string>> CleanupLeftovers() {
  std::vector<std::string> removed;
  DIR* dir = opendir(kNetnsDir);
  if (dir == nullptr) return removed;  // no namespaces at all
  std::vector<std::string> stale;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (!absl::StartsWith(name, kNamePrefix)) continue;
    std::vector<std::string> parts = absl::StrSplit(name.substr(kNamePrefix.size()), '-');
    int pid;
    if (parts.empty() || !absl::SimpleAtoi(parts[0], &pid) || pid <= 0) continue;
    if (kill(pid, 0) == 0 || errno != ESRCH) continue;  // its harness still runs
    stale.push_back(name);
  }
  closedir(dir);
  std::sort(stale.begin(), stale.end());
  std::vector<std::string> del;
  for (const std::string& name : stale) {
    // Agents of a dead harness die with it (PR_SET_PDEATHSIG); anything left is ours too.
    absl::StatusOr<std::string> pids = backends::RunCommand({"ip", "netns", "pids", name});
    if (pids.ok()) {
      for (absl::string_view p : absl::StrSplit(*pids, '\n', absl::SkipWhitespace())) {
        int pid;
        if (absl::SimpleAtoi(p, &pid) && pid > 1) kill(pid, SIGKILL);
      }
    }
    del.push_back(absl::StrCat("netns del ", name));
    removed.push_back(name);
  }
  if (absl::Status s = RunIpBatch("", del, /*force=*/true); !s.ok()) return s;
  return removed;
}

}  // namespace np::probe
