#include "np/backends/util.h"

#include <fcntl.h>
#include <pthread.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>

#include <map>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/message_differencer.h"
#include "np/types.h"

extern char** environ;

namespace np::backends {

namespace {

// argv[0] as a path: as given when it has a slash, else the first executable of that name
// in PATH (as execvp would find it; looked up here because the child must not allocate).
absl::StatusOr<std::string> ExecutablePath(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(
           path != nullptr ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return absl::NotFoundError(absl::StrCat("cannot run ", name, ": not found in PATH"));
}

// What the child of StartChild needs, all prepared by the parent: the child shares the
// parent's memory until it execs (CLONE_VM | CLONE_VFORK) and may only make system calls.
struct ChildSetup {
  const char* path;
  char* const* argv;
  int stdio[3];
  int netns;                     // -1: stay in the parent's network namespace
  const sigset_t* parent_mask;   // restored just before exec
};

int ChildMain(void* arg) {
  const ChildSetup& c = *static_cast<const ChildSetup*>(arg);
  // Every caught signal back to its default (the handlers are the parent's code, on the
  // parent's memory), and SIGPIPE too (the parent ignores it); all signals are blocked
  // until the mask is restored below, so no handler runs here in between.
  struct sigaction action = {};
  for (int s = 1; s < NSIG; ++s) {
    if (sigaction(s, nullptr, &action) != 0) continue;
    if (s == SIGPIPE || (action.sa_handler != SIG_DFL && action.sa_handler != SIG_IGN)) {
      action = {};
      action.sa_handler = SIG_DFL;
      (void)sigaction(s, &action, nullptr);
    }
  }
  // dup2 leaves the copies without O_CLOEXEC; every pipe end itself closes at exec.
  for (int fd = 0; fd < 3; ++fd) {
    if (dup2(c.stdio[fd], fd) < 0) _exit(127);
  }
  auto fail = [](const char* what) {
    const char* text = strerror(errno);
    (void)!write(2, what, strlen(what));
    (void)!write(2, text, strlen(text));
    (void)!write(2, "\n", 1);
    _exit(127);
  };
  if (c.netns >= 0 && setns(c.netns, CLONE_NEWNET) != 0) fail("setns: ");
  sigprocmask(SIG_SETMASK, c.parent_mask, nullptr);
  execve(c.path, c.argv, environ);
  fail("exec: ");
  return 127;
}

// Starts `path` with `argv` on the descriptors `stdio` (its 0, 1 and 2) inside the network
// namespace open as `netns` (-1: this process's), sharing this process's memory until it
// execs (clone(CLONE_VM | CLONE_VFORK): this thread waits until then, on whose stack the child
// runs). The child's pid.
absl::StatusOr<pid_t> CloneExec(const std::string& path, const std::vector<std::string>& argv,
                                const std::array<int, 3>& stdio, int netns) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  sigset_t all, parent_mask;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &parent_mask);
  ChildSetup setup{path.c_str(), args.data(), {stdio[0], stdio[1], stdio[2]}, netns,
                   &parent_mask};
  constexpr size_t kStack = 64 * 1024;
  std::unique_ptr<char[]> stack(new char[kStack]);
  const pid_t pid = clone(ChildMain, stack.get() + kStack, CLONE_VM | CLONE_VFORK | SIGCHLD,
                          &setup);
  const int error = errno;
  pthread_sigmask(SIG_SETMASK, &parent_mask, nullptr);
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("cannot run ", argv[0], ": ", std::strerror(error)));
  }
  return pid;
}

// One started command and its ends of the pipes (-1 once closed).
struct Child {
  pid_t pid = -1;
  std::string what;  // argv joined, for errors
  absl::string_view input;
  size_t written = 0;
  int in = -1, out = -1, err = -1;
  std::string stdout_text, stderr_text;
};

// Starts argv with pipes on its stdin, stdout and stderr, inside the network namespace open
// as `netns` (-1: this process's). Like posix_spawn, the child shares the parent's memory
// until it execs (no copy of a large agent's page tables, no copy-on-write faults after: bench/
// RESULTS.md, issue 13); unlike it, the child can enter a network namespace first (setns),
// so no `ip netns exec` process is needed. The pipes are O_CLOEXEC: a child started beside
// this one (RunCommands) inherits none of them, so never holds this one's stdin open.
absl::Status StartChild(const std::vector<std::string>& argv, int netns, Child& child) {
  child.what = absl::StrJoin(argv, " ");
  absl::StatusOr<std::string> path = ExecutablePath(argv[0]);
  if (!path.ok()) return path.status();
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int error = errno;
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]}) close(fd);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(error)));
  }
  absl::StatusOr<pid_t> pid =
      CloneExec(*path, argv, {in_pipe[0], out_pipe[1], err_pipe[1]}, netns);
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (!pid.ok()) {
    for (int fd : {in_pipe[1], out_pipe[0], err_pipe[0]}) close(fd);
    return pid.status();
  }
  child.pid = *pid;
  child.in = in_pipe[1];
  child.out = out_pipe[0];
  child.err = err_pipe[0];
  fcntl(child.in, F_SETFL, O_NONBLOCK);
  if (child.input.empty()) {
    close(child.in);
    child.in = -1;
  }
  return absl::OkStatus();
}

// Feeds every child's stdin and drains its stdout and stderr, all at once (so that large
// inputs and outputs never block, and children run side by side), then reaps each: its
// stdout, or an error with its stderr and exit status.
std::vector<absl::StatusOr<std::string>> FinishChildren(std::vector<Child>& children) {
  signal(SIGPIPE, SIG_IGN);  // a child that exits early must not kill this process
  char buffer[65536];
  while (true) {
    std::vector<pollfd> fds;
    std::vector<std::pair<Child*, int*>> owners;  // per pollfd: its child and which end
    for (Child& c : children) {
      if (c.in >= 0) fds.push_back({c.in, POLLOUT, 0}), owners.emplace_back(&c, &c.in);
      if (c.out >= 0) fds.push_back({c.out, POLLIN, 0}), owners.emplace_back(&c, &c.out);
      if (c.err >= 0) fds.push_back({c.err, POLLIN, 0}), owners.emplace_back(&c, &c.err);
    }
    if (fds.empty()) break;
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      Child& c = *owners[i].first;
      int& fd = *owners[i].second;
      if (&fd == &c.in) {
        const ssize_t w = write(fd, c.input.data() + c.written, c.input.size() - c.written);
        if (w > 0) c.written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN) c.written = c.input.size();  // the child stopped reading
        if (c.written < c.input.size()) continue;
      } else {
        const ssize_t r = read(fd, buffer, sizeof(buffer));
        if (r > 0) {
          (&fd == &c.out ? c.stdout_text : c.stderr_text).append(buffer, static_cast<size_t>(r));
          continue;
        }
        if (r < 0 && errno == EINTR) continue;
      }
      close(fd);
      fd = -1;
    }
  }
  std::vector<absl::StatusOr<std::string>> results;
  for (Child& c : children) {
    for (int* fd : {&c.in, &c.out, &c.err}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
    int status = 0;
    while (waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      results.push_back(absl::InternalError(absl::StrCat(
          c.what, " failed (",
          WIFEXITED(status) ? absl::StrCat("exit ", WEXITSTATUS(status)) : "killed", "): ",
          absl::StripAsciiWhitespace(c.stderr_text))));
    } else {
      results.push_back(std::move(c.stdout_text));
    }
  }
  return results;
}

}  // namespace

absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv_in,
                                       absl::string_view input, absl::string_view netns) {
  std::vector<std::string> argv;
  if (!netns.empty()) argv = {"ip", "netns", "exec", std::string(netns)};
  argv.insert(argv.end(), argv_in.begin(), argv_in.end());
  std::vector<Child> children(1);
  children[0].input = input;
  if (absl::Status s = StartChild(argv, -1, children[0]); !s.ok()) return s;
  return std::move(FinishChildren(children)[0]);
}

absl::StatusOr<RunningProcess> StartProcess(const std::vector<std::string>& argv,
                                            absl::string_view netns) {
  absl::StatusOr<std::string> path = ExecutablePath(argv[0]);
  if (!path.ok()) return path.status();
  int ns = -1;
  if (!netns.empty()) {
    const std::string at = absl::StrCat("/run/netns/", netns);
    ns = open(at.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
      return absl::NotFoundError(
          absl::StrCat("network namespace ", netns, ": ", at, ": ", std::strerror(errno)));
    }
  }
  int in[2] = {-1, -1}, err[2] = {-1, -1};
  const int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  absl::Status status = absl::OkStatus();
  if (devnull < 0 || pipe2(in, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    status = absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  const absl::StatusOr<pid_t> pid =
      status.ok() ? CloneExec(*path, argv, {in[0], devnull, err[1]}, ns)
                  : absl::StatusOr<pid_t>(status);
  for (int fd : {in[0], err[1], devnull, ns}) {
    if (fd >= 0) close(fd);
  }
  if (!pid.ok()) {
    for (int fd : {in[1], err[0]}) {
      if (fd >= 0) close(fd);
    }
    return pid.status();
  }
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  return RunningProcess{*pid, in[1], err[0]};
}

std::vector<absl::StatusOr<std::string>> RunCommands(const std::vector<Command>& commands,
                                                     absl::string_view netns) {
  std::vector<absl::StatusOr<std::string>> results(commands.size(),
                                                   absl::StatusOr<std::string>(""));
  int fd = -1;
  if (!netns.empty()) {
    const std::string path = absl::StrCat("/run/netns/", netns);
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const absl::Status error = absl::NotFoundError(
          absl::StrCat("network namespace ", netns, ": ", path, ": ", std::strerror(errno)));
      for (auto& r : results) r = error;
      return results;
    }
  }
  std::vector<Child> children;
  std::vector<size_t> started;  // command index of each child
  for (size_t i = 0; i < commands.size(); ++i) {
    Child child;
    child.input = commands[i].input;
    if (absl::Status s = StartChild(commands[i].argv, fd, child); !s.ok()) {
      results[i] = s;
      continue;
    }
    children.push_back(std::move(child));
    started.push_back(i);
  }
  if (fd >= 0) close(fd);
  std::vector<absl::StatusOr<std::string>> finished = FinishChildren(children);
  for (size_t k = 0; k < started.size(); ++k) results[started[k]] = std::move(finished[k]);
  return results;
}

std::string AddressText(absl::string_view bytes) {
  const auto* b = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.size() == 4) {
    return IpAddress::V4((uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) |
                         b[3])
        .ToString();
  }
  if (bytes.size() == 16) return IpAddress::V6Bytes(b).ToString();
  return "?";
}

absl::StatusOr<std::string> AddressBytes(absl::string_view text) {
  absl::StatusOr<IpAddress> a = IpAddress::Parse(text);
  if (!a.ok()) return a.status();
  uint8_t b[16];
  a->ToBytes(b);
  return std::string(reinterpret_cast<char*>(b), a->is_v4() ? 4 : 16);
}

absl::StatusOr<FlowAddresses> ParseFlowAddresses(const FlowQuery& flow) {
  absl::StatusOr<std::string> source = AddressBytes(flow.source);
  if (!source.ok()) return source.status();
  absl::StatusOr<std::string> destination = AddressBytes(flow.destination);
  if (!destination.ok()) return destination.status();
  if (source->size() != destination->size()) {
    return absl::InvalidArgumentError("source and destination are of different families");
  }
  return FlowAddresses{*std::move(source), *std::move(destination)};
}

absl::StatusOr<uint32_t> IdentityOf(const ir::CompiledPolicy& ir, absl::string_view key) {
  const auto& ranges = key.size() == 4 ? ir.ipv4() : ir.ipv6();
  auto it = std::upper_bound(ranges.begin(), ranges.end(), key,
                             [](absl::string_view k, const ir::AddressRange& r) {
                               return k < absl::string_view(r.first());
                             });
  if (it == ranges.begin()) {
    return absl::InvalidArgumentError("the IR's address ranges do not cover this address");
  }
  --it;
  if (key > absl::string_view(it->last())) {
    return absl::InvalidArgumentError("the IR's address ranges do not cover this address");
  }
  return it->identity();
}

namespace {

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed IR: ", what));
}

absl::Status CheckRanges(const google::protobuf::RepeatedPtrField<ir::AddressRange>& ranges,
                         const char* field, size_t width, uint32_t identities) {
  if (ranges.empty()) return Malformed(absl::StrCat(field, ": empty (it must cover the family)"));
  // The first address the next range must start at (a fixed buffer: no string work per range).
  uint8_t next[16] = {};
  for (int i = 0; i < ranges.size(); ++i) {
    const ir::AddressRange& r = ranges[i];
    // Built only for an error: CheckIr runs on every update (agent, backends), and the
    // strings dominated its cost.
    auto where = [&] { return absl::StrCat(field, "[", i, "]"); };
    if (r.first().size() != width || r.last().size() != width) {
      return Malformed(absl::StrCat(where(), ": addresses of ", r.first().size(), " and ",
                                    r.last().size(), " bytes in a family of ", width));
    }
    if (r.identity() >= identities) {
      return Malformed(absl::StrCat(where(), ": identity ", r.identity(), " does not exist"));
    }
    if (std::memcmp(r.first().data(), next, width) != 0 || r.last() < r.first()) {
      return Malformed(absl::StrCat(where(), ": ", AddressText(r.first()), "-",
                                    AddressText(r.last()), " does not start where the ranges "
                                    "before it end (they must partition the address space)"));
    }
    // The address after r.last(); all-zero after wrapping past the family's last address.
    std::memcpy(next, r.last().data(), width);
    bool wrapped = true;
    for (int b = static_cast<int>(width) - 1; b >= 0; --b) {
      if (++next[b] != 0) {
        wrapped = false;
        break;
      }
    }
    if (wrapped && i + 1 < ranges.size()) {
      return Malformed(absl::StrCat(field, "[", i + 1, "]: after the family's last address"));
    }
  }
  if (ranges[ranges.size() - 1].last() != std::string(width, '\xff')) {
    return Malformed(absl::StrCat(field, ": the ranges stop at ",
                                  AddressText(ranges[ranges.size() - 1].last()),
                                  ", short of the family's last address"));
  }
  return absl::OkStatus();
}

absl::Status CheckRules(uint32_t peer_sets, int table, const char* direction,
                        const ir::DirectionPolicy& policy) {
  // Per protocol (TCP, UDP, SCTP): the lowest port a later rule may start at.
  uint32_t next_port[3] = {0, 0, 0};
  for (int i = 0; i < policy.rules_size(); ++i) {
    const ir::PortRule& r = policy.rules(i);
    auto where = [&] {
      return absl::StrCat("tables[", table, "].", direction, ".rules[", i, "]");
    };
    const int protocol = static_cast<int>(r.protocol());
    if (protocol != ir::TCP && protocol != ir::UDP && protocol != ir::SCTP) {
      return Malformed(absl::StrCat(where(), ": protocol ", protocol, " is not TCP, UDP or SCTP"));
    }
    if (r.first_port() > r.last_port() || r.last_port() > 65535) {
      return Malformed(
          absl::StrCat(where(), ": port range ", r.first_port(), "-", r.last_port()));
    }
    if (r.peer_set() >= peer_sets) {
      return Malformed(absl::StrCat(where(), ": peer set ", r.peer_set(), " does not exist"));
    }
    uint32_t& after = next_port[protocol == ir::TCP ? 0 : protocol == ir::UDP ? 1 : 2];
    if (r.first_port() < after) {
      return Malformed(absl::StrCat(where(), ": ", ProtocolUpper(r.protocol()), " ",
                                    r.first_port(), "-", r.last_port(),
                                    " overlaps or precedes an earlier rule of the protocol"));
    }
    after = r.last_port() + 1;
  }
  return absl::OkStatus();
}

absl::Status CheckTierRules(uint32_t peer_sets, int table, const char* direction,
                            const char* tier,
                            const google::protobuf::RepeatedPtrField<ir::TierRule>& rules) {
  for (int i = 0; i < rules.size(); ++i) {
    const ir::TierRule& r = rules[i];
    auto where = [&] {
      return absl::StrCat("tables[", table, "].", direction, ".", tier, "[", i, "]");
    };
    if (r.action() != ir::TIER_ALLOW && r.action() != ir::TIER_DENY &&
        r.action() != ir::TIER_PASS) {
      return Malformed(absl::StrCat(where(), ": action ", static_cast<int>(r.action()),
                                    " is not allow, deny or pass"));
    }
    const int protocol = static_cast<int>(r.protocol());
    if (protocol != ir::PROTOCOL_UNSPECIFIED && protocol != ir::TCP && protocol != ir::UDP &&
        protocol != ir::SCTP) {
      return Malformed(absl::StrCat(where(), ": protocol ", protocol,
                                    " is not TCP, UDP, SCTP or unspecified (every protocol)"));
    }
    if (r.first_port() > r.last_port() || r.last_port() > 65535 ||
        (protocol == ir::PROTOCOL_UNSPECIFIED && (r.first_port() != 0 || r.last_port() != 65535))) {
      return Malformed(absl::StrCat(where(), ": port range ", r.first_port(), "-", r.last_port(),
                                    protocol == ir::PROTOCOL_UNSPECIFIED
                                        ? " (every protocol needs 0-65535)"
                                        : ""));
    }
    if (r.peer_set() >= peer_sets) {
      return Malformed(absl::StrCat(where(), ": peer set ", r.peer_set(), " does not exist"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDirection(uint32_t peer_sets, int table, const char* direction,
                            const ir::DirectionPolicy& policy) {
  if (absl::Status s = CheckRules(peer_sets, table, direction, policy); !s.ok()) return s;
  if (absl::Status s = CheckTierRules(peer_sets, table, direction, "admin", policy.admin());
      !s.ok()) {
    return s;
  }
  return CheckTierRules(peer_sets, table, direction, "baseline", policy.baseline());
}

bool PeerSetHolds(const ir::PeerSet& set, uint32_t identity) {
  return set.all() ||
         std::binary_search(set.identities().begin(), set.identities().end(), identity);
}

bool TierRuleMatches(const ir::CompiledPolicy& ir, const ir::TierRule& rule, int protocol,
                     uint32_t port, uint32_t peer) {
  if (rule.protocol() != ir::PROTOCOL_UNSPECIFIED) {
    if (static_cast<int>(rule.protocol()) != protocol) return false;
    if (port < rule.first_port() || port > rule.last_port()) return false;
  }
  return PeerSetHolds(ir.peer_sets(static_cast<int>(rule.peer_set())), peer);
}

// The first of `rules` matching decides; nullopt when none does or a Pass matches.
std::optional<bool> FirstTierMatch(const ir::CompiledPolicy& ir,
                                   const google::protobuf::RepeatedPtrField<ir::TierRule>& rules,
                                   int protocol, uint32_t port, uint32_t peer) {
  for (const ir::TierRule& rule : rules) {
    if (!TierRuleMatches(ir, rule, protocol, port, peer)) continue;
    if (rule.action() == ir::TIER_PASS) return std::nullopt;
    return rule.action() == ir::TIER_ALLOW;
  }
  return std::nullopt;
}

}  // namespace

ir::TierRule* AddTierRule(google::protobuf::RepeatedPtrField<ir::TierRule>* rules,
                          ir::TierAction action, ir::Protocol protocol, uint32_t first_port,
                          uint32_t last_port, uint32_t peer_set) {
  const bool every_protocol = protocol == ir::PROTOCOL_UNSPECIFIED;
  ir::TierRule* rule = rules->Add();
  rule->set_action(action);
  rule->set_protocol(protocol);
  rule->set_first_port(every_protocol ? 0 : first_port);
  rule->set_last_port(every_protocol ? 65535 : last_port);
  rule->set_peer_set(peer_set);
  return rule;
}

ir::PortRule* AddPortRule(ir::DirectionPolicy* direction, ir::Protocol protocol,
                          uint32_t first_port, uint32_t last_port, uint32_t peer_set) {
  ir::PortRule* rule = direction->add_rules();
  rule->set_protocol(protocol);
  rule->set_first_port(first_port);
  rule->set_last_port(last_port);
  rule->set_peer_set(peer_set);
  return rule;
}

bool Restricted(const ir::DirectionPolicy& direction) {
  return direction.isolated() || direction.admin_size() > 0 || direction.baseline_size() > 0;
}

bool SideAllows(const ir::CompiledPolicy& ir, const ir::DirectionPolicy& direction,
                int protocol, uint32_t port, uint32_t peer) {
  if (std::optional<bool> admin = FirstTierMatch(ir, direction.admin(), protocol, port, peer)) {
    return *admin;
  }
  if (direction.isolated()) {
    for (const ir::PortRule& rule : direction.rules()) {
      if (static_cast<int>(rule.protocol()) != protocol) continue;
      if (port < rule.first_port() || port > rule.last_port()) continue;
      if (PeerSetHolds(ir.peer_sets(static_cast<int>(rule.peer_set())), peer)) return true;
    }
    return false;
  }
  return FirstTierMatch(ir, direction.baseline(), protocol, port, peer).value_or(true);
}

bool IrAllows(const ir::CompiledPolicy& ir, absl::string_view source_bytes,
              absl::string_view destination_bytes, int protocol, uint32_t port) {
  auto endpoint_of = [&](absl::string_view bytes) -> const ir::Endpoint* {
    for (const ir::Endpoint& e : ir.endpoints()) {
      for (const std::string& ip : e.ips()) {
        absl::StatusOr<std::string> parsed = AddressBytes(ip);
        if (parsed.ok() && *parsed == bytes) return &e;
      }
    }
    return nullptr;
  };
  const ir::Endpoint* source = endpoint_of(source_bytes);
  const ir::Endpoint* destination = endpoint_of(destination_bytes);
  if (source != nullptr && source == destination && ir.always_allow_self()) return true;
  if (source != nullptr && source->selected()) {
    absl::StatusOr<uint32_t> peer = IdentityOf(ir, destination_bytes);
    if (!peer.ok() || !SideAllows(ir, ir.tables(static_cast<int>(source->table())).egress(),
                                  protocol, port, *peer)) {
      return false;
    }
  }
  if (destination != nullptr && destination->selected()) {
    absl::StatusOr<uint32_t> peer = IdentityOf(ir, source_bytes);
    if (!peer.ok() || !SideAllows(ir, ir.tables(static_cast<int>(destination->table())).ingress(),
                                  protocol, port, *peer)) {
      return false;
    }
  }
  return true;
}

absl::Status CheckPeerSet(const ir::PeerSet& set, uint32_t position, uint32_t identities) {
  const uint32_t i = position;
  if (set.id() != position) return Malformed(absl::StrCat("peer_sets[", i, "]: id ", set.id()));
  for (int j = 0; j < set.identities_size(); ++j) {
    if (set.identities(j) >= identities) {
      return Malformed(absl::StrCat("peer_sets[", i, "]: identity ", set.identities(j),
                                    " does not exist"));
    }
    if (j > 0 && set.identities(j) <= set.identities(j - 1)) {
      return Malformed(absl::StrCat("peer_sets[", i, "]: identities not sorted or repeated at ",
                                    set.identities(j)));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTable(const ir::Table& table, uint32_t position, uint32_t peer_sets) {
  const int t = static_cast<int>(position);
  if (table.id() != position) return Malformed(absl::StrCat("tables[", t, "]: id ", table.id()));
  if (absl::Status s = CheckDirection(peer_sets, t, "ingress", table.ingress()); !s.ok()) {
    return s;
  }
  return CheckDirection(peer_sets, t, "egress", table.egress());
}

absl::Status CheckIr(const ir::CompiledPolicy& ir) {
  const uint32_t identities = static_cast<uint32_t>(ir.identities_size());
  for (int i = 0; i < ir.identities_size(); ++i) {
    if (ir.identities(i).id() != static_cast<uint32_t>(i)) {
      return Malformed(absl::StrCat("identities[", i, "]: id ", ir.identities(i).id()));
    }
  }
  if (absl::Status s = CheckRanges(ir.ipv4(), "ipv4", 4, identities); !s.ok()) return s;
  if (absl::Status s = CheckRanges(ir.ipv6(), "ipv6", 16, identities); !s.ok()) return s;
  for (int i = 0; i < ir.peer_sets_size(); ++i) {
    if (absl::Status s = CheckPeerSet(ir.peer_sets(i), static_cast<uint32_t>(i), identities);
        !s.ok()) {
      return s;
    }
  }
  const uint32_t peer_sets = static_cast<uint32_t>(ir.peer_sets_size());
  for (int t = 0; t < ir.tables_size(); ++t) {
    if (absl::Status s = CheckTable(ir.tables(t), static_cast<uint32_t>(t), peer_sets); !s.ok()) {
      return s;
    }
  }
  absl::flat_hash_map<std::string, int> owner_of_address;
  absl::flat_hash_map<std::string, int> endpoint_named;
  // Sized up front: rehashing these maps as they grew was a visible share of CheckIr, which
  // runs twice per whole sync (AlignNumbering) and again in the backend.
  owner_of_address.reserve(static_cast<size_t>(ir.endpoints_size()) * 2);
  endpoint_named.reserve(static_cast<size_t>(ir.endpoints_size()));
  for (int e = 0; e < ir.endpoints_size(); ++e) {
    const ir::Endpoint& endpoint = ir.endpoints(e);
    auto [named, fresh_name] =
        endpoint_named.emplace(absl::StrCat(endpoint.namespace_(), "/", endpoint.name()), e);
    if (!fresh_name) {
      return Malformed(absl::StrCat(EndpointLabel(ir, e), ": the same pod as ",
                                    EndpointLabel(ir, named->second)));
    }
    if (endpoint.selected() && endpoint.table() >= static_cast<uint32_t>(ir.tables_size())) {
      return Malformed(absl::StrCat(EndpointLabel(ir, e), ": table ", endpoint.table(),
                                    " does not exist"));
    }
    for (const std::string& ip : endpoint.ips()) {
      absl::StatusOr<std::string> bytes = AddressBytes(ip);
      if (!bytes.ok()) {
        return Malformed(absl::StrCat(EndpointLabel(ir, e), ": \"", EscapeText(ip),
                                      "\" is not an IP address"));
      }
      auto [owner, fresh] = owner_of_address.emplace(*bytes, e);
      if (!fresh) {
        return Malformed(absl::StrCat(
            EndpointLabel(ir, e), ": address ", AddressText(*bytes),
            owner->second == e ? " is listed twice"
                               : absl::StrCat(" is also ", EndpointLabel(ir, owner->second),
                                              "'s (an address belongs to one endpoint)")));
      }
    }
  }
  return absl::OkStatus();
}

ir::CompiledPolicy CanonicalProgram(const ir::CompiledPolicy& ir) {
  constexpr uint32_t kDropped = std::numeric_limits<uint32_t>::max();
  // New ids in order of first appearance; kDropped for items nothing uses.
  auto number = [](std::vector<uint32_t>& id, uint32_t& next, uint32_t old) {
    if (id[old] == kDropped) id[old] = next++;
  };
  std::vector<uint32_t> identity(ir.identities_size(), kDropped);
  std::vector<uint32_t> table(ir.tables_size(), kDropped);
  std::vector<uint32_t> peer_set(ir.peer_sets_size(), kDropped);
  uint32_t identities = 0, tables = 0, peer_sets = 0;
  for (const auto* ranges : {&ir.ipv4(), &ir.ipv6()}) {
    for (const ir::AddressRange& r : *ranges) number(identity, identities, r.identity());
  }
  for (const ir::Endpoint& e : ir.endpoints()) {
    if (e.selected()) number(table, tables, e.table());
  }
  std::vector<int> table_order(tables);
  for (int t = 0; t < ir.tables_size(); ++t) {
    if (table[t] != kDropped) table_order[table[t]] = t;
  }
  for (int t : table_order) {
    for (const ir::DirectionPolicy* d : {&ir.tables(t).ingress(), &ir.tables(t).egress()}) {
      for (const ir::PortRule& r : d->rules()) number(peer_set, peer_sets, r.peer_set());
      for (const ir::TierRule& r : d->admin()) number(peer_set, peer_sets, r.peer_set());
      for (const ir::TierRule& r : d->baseline()) number(peer_set, peer_sets, r.peer_set());
    }
  }
  ir::CompiledPolicy out;
  out.set_node(ir.node());
  out.set_always_allow_self(ir.always_allow_self());
  out.mutable_identities()->Reserve(static_cast<int>(identities));
  for (uint32_t i = 0; i < identities; ++i) out.add_identities();
  for (int i = 0; i < ir.identities_size(); ++i) {
    if (identity[i] == kDropped) continue;
    ir::Identity* x = out.mutable_identities(static_cast<int>(identity[i]));
    *x = ir.identities(i);
    x->set_id(identity[i]);
  }
  for (int f = 0; f < 2; ++f) {
    for (const ir::AddressRange& r : f == 0 ? ir.ipv4() : ir.ipv6()) {
      ir::AddressRange* x = f == 0 ? out.add_ipv4() : out.add_ipv6();
      *x = r;
      x->set_identity(identity[r.identity()]);
    }
  }
  for (uint32_t i = 0; i < peer_sets; ++i) out.add_peer_sets();
  for (int i = 0; i < ir.peer_sets_size(); ++i) {
    if (peer_set[i] == kDropped) continue;
    ir::PeerSet* x = out.mutable_peer_sets(static_cast<int>(peer_set[i]));
    x->set_id(peer_set[i]);
    x->set_all(ir.peer_sets(i).all());
    std::vector<uint32_t> ids;
    for (uint32_t id : ir.peer_sets(i).identities()) {
      if (identity[id] != kDropped) ids.push_back(identity[id]);  // no address carries it
    }
    std::sort(ids.begin(), ids.end());
    x->mutable_identities()->Add(ids.begin(), ids.end());
  }
  auto renumber = [&](ir::DirectionPolicy* d) {
    for (ir::PortRule& r : *d->mutable_rules()) r.set_peer_set(peer_set[r.peer_set()]);
    for (ir::TierRule& r : *d->mutable_admin()) r.set_peer_set(peer_set[r.peer_set()]);
    for (ir::TierRule& r : *d->mutable_baseline()) r.set_peer_set(peer_set[r.peer_set()]);
  };
  for (int t : table_order) {
    ir::Table* x = out.add_tables();
    *x = ir.tables(t);
    x->set_id(table[t]);
    renumber(x->mutable_ingress());
    renumber(x->mutable_egress());
  }
  for (const ir::Endpoint& e : ir.endpoints()) {
    ir::Endpoint* x = out.add_endpoints();
    *x = e;
    x->set_table(e.selected() ? table[e.table()] : 0);
  }
  return out;
}

bool EquivalentPrograms(const ir::CompiledPolicy& a, const ir::CompiledPolicy& b,
                        std::string* why) {
  std::string report;
  bool same;
  {  // the report is complete once the differencer (its stream) is gone
    google::protobuf::util::MessageDifferencer differencer;
    if (why != nullptr) differencer.ReportDifferencesToString(&report);
    same = differencer.Compare(CanonicalProgram(a), CanonicalProgram(b));
  }
  if (why != nullptr) *why = std::move(report);
  return same;
}

std::string EndpointLabel(const ir::CompiledPolicy& ir, int index) {
  const ir::Endpoint& e = ir.endpoints(index);
  return absl::StrCat("endpoints[", index, "] (", EscapeText(e.namespace_()), "/",
                      EscapeText(e.name()), ")");
}

namespace {

// Characters that print nothing visible or move the cursor, beyond ASCII: C1 controls,
// separators other than space, format characters (bidirectional overrides, zero-width
// marks), private use, surrogates' code points and non-characters.
bool Invisible(uint32_t c) {
  if (c < 0xa0) return c >= 0x80;  // C1 controls
  if (c == 0xa0 || c == 0xad || c == 0x61c || c == 0x6dd || c == 0x70f || c == 0x180e ||
      c == 0x1680 || c == 0x202f || c == 0x205f || c == 0x3000 || c == 0xfeff) {
    return true;
  }
  if ((c >= 0x600 && c <= 0x605) || (c >= 0x2000 && c <= 0x200f) ||
      (c >= 0x2028 && c <= 0x202e) || (c >= 0x2060 && c <= 0x206f) ||
      (c >= 0xfff9 && c <= 0xfffb) || (c >= 0xe000 && c <= 0xf8ff) ||
      (c >= 0xfdd0 && c <= 0xfdef) || (c & 0xfffe) == 0xfffe || c >= 0xf0000 ||
      (c >= 0xe0000 && c <= 0xe007f) || (c >= 0x1d173 && c <= 0x1d17a) ||
      (c >= 0x1bca0 && c <= 0x1bca3) || c == 0x110bd || c == 0x110cd) {
    return true;
  }
  return false;
}

// Decodes one UTF-8 character at the start of `s`; 0 when the bytes there are not valid
// UTF-8 (overlong forms, surrogates and code points past U+10FFFF included).
size_t DecodeUtf8(absl::string_view s, uint32_t* code_point) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  size_t n;
  uint32_t c, min;
  if (b(0) < 0x80) {
    *code_point = b(0);
    return 1;
  } else if ((b(0) & 0xe0) == 0xc0) {
    n = 2, c = b(0) & 0x1f, min = 0x80;
  } else if ((b(0) & 0xf0) == 0xe0) {
    n = 3, c = b(0) & 0x0f, min = 0x800;
  } else if ((b(0) & 0xf8) == 0xf0) {
    n = 4, c = b(0) & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xc0) != 0x80) return 0;
    c = (c << 6) | (b(i) & 0x3f);
  }
  if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
  *code_point = c;
  return n;
}

// EscapeText as a list of pieces, each a character or one escape (never to be split).
std::vector<std::string> EscapedPieces(absl::string_view bytes) {
  std::vector<std::string> out;
  while (!bytes.empty()) {
    uint32_t c = 0;
    size_t n = DecodeUtf8(bytes, &c);
    if (n == 0) {
      out.push_back(absl::StrFormat("\\x%02x", static_cast<uint8_t>(bytes[0])));
      bytes.remove_prefix(1);
      continue;
    }
    switch (c) {
      case '\a': out.push_back("\\a"); break;
      case '\b': out.push_back("\\b"); break;
      case '\f': out.push_back("\\f"); break;
      case '\n': out.push_back("\\n"); break;
      case '\r': out.push_back("\\r"); break;
      case '\t': out.push_back("\\t"); break;
      case '\v': out.push_back("\\v"); break;
      case '\\': out.push_back("\\\\"); break;
      case '"': out.push_back("\\x22"); break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out.push_back(absl::StrFormat("\\x%02x", c));
        } else if (Invisible(c)) {
          out.push_back(c <= 0xffff ? absl::StrFormat("\\u%04x", c)
                                    : absl::StrFormat("\\U%08x", c));
        } else {
          out.emplace_back(bytes.substr(0, n));
        }
    }
    bytes.remove_prefix(n);
  }
  return out;
}

}  // namespace

std::string EscapeText(absl::string_view bytes) {
  return absl::StrJoin(EscapedPieces(bytes), "");
}

std::string CommentText(absl::string_view bytes, size_t max_bytes) {
  std::vector<std::string> pieces = EscapedPieces(bytes);
  size_t total = 0;
  for (const std::string& p : pieces) total += p.size();
  if (total <= max_bytes) return absl::StrJoin(pieces, "");
  std::string out;
  for (const std::string& p : pieces) {
    if (out.size() + p.size() + 3 > max_bytes) break;
    out += p;
  }
  return out + "...";
}

void AddCapacityItem(ir::BackendCapacity& report, absl::string_view name, uint64_t used,
                     uint64_t limit, absl::string_view limit_source, uint64_t budget,
                     absl::string_view budget_source) {
  // Counts are uint32 in the report: a larger one (none fits in an IR) shows as the maximum.
  constexpr uint64_t kMax = std::numeric_limits<uint32_t>::max();
  ir::CapacityItem* item = report.add_items();
  item->set_name(std::string(name));
  item->set_used(static_cast<uint32_t>(std::min(used, kMax)));
  item->set_limit(static_cast<uint32_t>(std::min(limit, kMax)));
  item->set_limit_source(std::string(limit_source));
  item->set_budget(static_cast<uint32_t>(std::min(budget, kMax)));
  item->set_budget_source(std::string(budget_source));
}

namespace {

bool OverLimit(const ir::CapacityItem& item) {
  return item.limit() > 0 && item.used() > item.limit();
}
bool OverBudget(const ir::CapacityItem& item) {
  return item.budget() > 0 && item.used() > item.budget();
}

// 1234567 -> "1,234,567".
std::string Grouped(uint64_t n) {
  std::string digits = absl::StrCat(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

absl::Status FinishCapacity(ir::BackendCapacity& report, const BackendOptions& options) {
  for (const auto& [name, value] : options.budgets) {
    ir::CapacityItem* found = nullptr;
    for (ir::CapacityItem& item : *report.mutable_items()) {
      if (item.name() == name) found = &item;
    }
    if (found == nullptr || found->budget() == 0) {
      std::vector<std::string> budgets;
      for (const ir::CapacityItem& item : report.items()) {
        if (item.budget() > 0) budgets.push_back(item.name());
      }
      return absl::InvalidArgumentError(absl::StrCat(
          report.backend(), ": no budget \"", EscapeText(name), "\"",
          found != nullptr ? " (a hard limit cannot be raised)" : "", "; its budgets: ",
          absl::StrJoin(budgets, ", ")));
    }
    if (value == 0 || value > std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(report.backend(), ": budget ", EscapeText(name), "=",
                                                     value, " is not between 1 and 4294967295"));
    }
    found->set_budget_source(absl::StrCat("set by the caller; np's default ",
                                          Grouped(found->budget()), ": ", found->budget_source()));
    found->set_budget(static_cast<uint32_t>(value));
  }
  bool fits = true;
  for (const ir::CapacityItem& item : report.items()) fits = fits && !OverLimit(item) && !OverBudget(item);
  report.set_fits(fits);
  return absl::OkStatus();
}

absl::Status CheckCapacity(const ir::BackendCapacity& report) {
  std::vector<std::string> over;
  for (const ir::CapacityItem& item : report.items()) {
    if (OverLimit(item)) {
      over.push_back(absl::StrCat(item.name(), " ", Grouped(item.used()), " > limit ",
                                  Grouped(item.limit()), " (", item.limit_source(), ")"));
    } else if (OverBudget(item)) {
      over.push_back(absl::StrCat(item.name(), " ", Grouped(item.used()), " > budget ",
                                  Grouped(item.budget()), " (", item.budget_source(),
                                  "; a budget, not a kernel limit: netpol --budget ",
                                  item.name(), "=N raises it)"));
    }
  }
  if (over.empty()) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat(report.backend(), ": the program is past what the kernel or np's budgets allow: ",
                   absl::StrJoin(over, "; ")));
}

std::string CapacityText(const ir::BackendCapacity& report) {
  std::string out = absl::StrCat(report.backend(), ": ", report.fits() ? "fits" : "DOES NOT FIT", "\n");
  size_t width = 0, digits = 0;
  for (const ir::CapacityItem& item : report.items()) {
    width = std::max(width, item.name().size());
    digits = std::max(digits, Grouped(item.used()).size());
  }
  for (const ir::CapacityItem& item : report.items()) {
    const std::string used = Grouped(item.used());
    std::string line = absl::StrCat("  ", item.name(), std::string(width - item.name().size(), ' '),
                                    std::string(digits - used.size() + 2, ' '), used);
    if (item.limit() > 0) {
      absl::StrAppend(&line, OverLimit(item) ? "  OVER limit " : "  limit ", Grouped(item.limit()),
                      " (", item.limit_source(), ")");
    } else if (!item.limit_source().empty()) {
      absl::StrAppend(&line, "  no hard limit (", item.limit_source(), ")");
    }
    if (item.budget() > 0) {
      absl::StrAppend(&line, OverBudget(item) ? "  OVER budget " : "  budget ",
                      Grouped(item.budget()), " (", item.budget_source(), ")");
    }
    absl::StrAppend(&out, line, "\n");
  }
  for (const std::string& note : report.notes()) absl::StrAppend(&out, "  note: ", note, "\n");
  return out;
}

std::string ProtocolUpper(ir::Protocol protocol) {
  switch (protocol) {
    case ir::TCP:
      return "TCP";
    case ir::UDP:
      return "UDP";
    case ir::SCTP:
      return "SCTP";
    default:
      return "?";
  }
}

std::string ProtocolLower(ir::Protocol protocol) {
  return absl::AsciiStrToLower(ProtocolUpper(protocol));
}

}  // namespace np::backends
