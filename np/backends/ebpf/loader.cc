#include "np/backends/ebpf/loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <linux/membarrier.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_ether.h>
#include <arpa/inet.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <thread>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "np/backends/ebpf/bpf_objects.h"

namespace np::backends::ebpf {
namespace {

// libbpf reports through one global print callback. While a call of ours runs, the calling
// thread collects warnings here, so that errors (e.g. the verifier's log) end up in the
// returned status instead of on stderr.
thread_local std::string* libbpf_log = nullptr;

int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG || libbpf_log == nullptr) return 0;
  char buffer[4096];
  int n = vsnprintf(buffer, sizeof(buffer), format, args);
  if (n > 0) libbpf_log->append(buffer, std::min<size_t>(static_cast<size_t>(n), sizeof(buffer) - 1));
  if (libbpf_log->size() > 65536) libbpf_log->erase(0, libbpf_log->size() - 65536);
  return n;
}

class LibbpfLogScope {
 public:
  LibbpfLogScope() {
    static std::once_flag once;
    std::call_once(once, [] { libbpf_set_print(LibbpfPrint); });
    previous_ = libbpf_log;
    libbpf_log = &log_;
  }
  ~LibbpfLogScope() { libbpf_log = previous_; }
  // The last lines of what libbpf said, for an error message.
  std::string Tail() const {
    if (log_.size() <= 3000) return log_;
    return "..." + log_.substr(log_.size() - 3000);
  }

 private:
  std::string log_;
  std::string* previous_;
};

absl::Status Errno(absl::string_view what, int err) {
  if (err < 0) err = -err;
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

// Switches the calling thread into a named network namespace until destroyed.
class NetnsScope {
 public:
  static absl::StatusOr<std::unique_ptr<NetnsScope>> Enter(absl::string_view name) {
    auto scope = std::unique_ptr<NetnsScope>(new NetnsScope());
    if (name.empty()) return scope;
    if (name.find('/') != absl::string_view::npos || name == "." || name == "..") {
      return absl::InvalidArgumentError(absl::StrCat("bad network namespace name \"", name, "\""));
    }
    scope->original_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (scope->original_ < 0) return Errno("open /proc/thread-self/ns/net", errno);
    std::string path = absl::StrCat("/var/run/netns/", name);
    int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (target < 0) return Errno(absl::StrCat("open ", path), errno);
    int rc = setns(target, CLONE_NEWNET);
    int err = errno;
    close(target);
    if (rc != 0) return Errno(absl::StrCat("setns ", path), err);
    return scope;
  }
  ~NetnsScope() {
    if (original_ >= 0) {
      setns(original_, CLONE_NEWNET);
      close(original_);
    }
  }

 private:
  NetnsScope() = default;
  int original_ = -1;
};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { if (fd_ >= 0) close(fd_); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (fd_ >= 0) close(fd_);
    fd_ = o.release();
    return *this;
  }
  int get() const { return fd_; }
  int release() { int f = fd_; fd_ = -1; return f; }

 private:
  int fd_;
};

absl::Status SetMaxEntries(bpf_object* obj, const char* name, size_t n) {
  bpf_map* map = bpf_object__find_map_by_name(obj, name);
  if (map == nullptr) return absl::InternalError(absl::StrCat("np_policy.o has no map ", name));
  int err = bpf_map__set_max_entries(map, static_cast<uint32_t>(std::max<size_t>(n, 1)));
  if (err != 0) return Errno(absl::StrCat("set max_entries of ", name), err);
  return absl::OkStatus();
}

constexpr uint32_t kZero = 0;

absl::Status Update(int fd, const char* map, const void* key, const void* value) {
  if (bpf_map_update_elem(fd, key, value, BPF_ANY) != 0) {
    return Errno(absl::StrCat("update ", map), errno);
  }
  return absl::OkStatus();
}

struct ProgInfo {
  std::string name;
  std::vector<uint32_t> map_ids;
};

absl::StatusOr<ProgInfo> GetProgInfo(int fd) {
  uint32_t ids[64];
  bpf_prog_info info{};
  info.nr_map_ids = 64;
  info.map_ids = reinterpret_cast<uint64_t>(ids);
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return Errno("prog info", errno);
  ProgInfo out;
  out.name = std::string(info.name, strnlen(info.name, sizeof(info.name)));
  for (uint32_t i = 0; i < std::min<uint32_t>(info.nr_map_ids, 64); ++i) {
    out.map_ids.push_back(ids[i]);
  }
  return out;
}

// The map of `prog_fd` called `name`, as a new fd (or -1).
Fd MapOfProgram(int prog_fd, absl::string_view name) {
  absl::StatusOr<ProgInfo> info = GetProgInfo(prog_fd);
  if (!info.ok()) return Fd();
  for (uint32_t id : info->map_ids) {
    Fd fd(bpf_map_get_fd_by_id(id));
    if (fd.get() < 0) continue;
    bpf_map_info mi{};
    uint32_t len = sizeof(mi);
    if (bpf_obj_get_info_by_fd(fd.get(), &mi, &len) != 0) continue;
    if (absl::string_view(mi.name, strnlen(mi.name, sizeof(mi.name))) == name) return fd;
  }
  return Fd();
}

bpf_tc_hook Hook(int ifindex, bpf_tc_attach_point point) {
  bpf_tc_hook h{};
  h.sz = sizeof(h);
  h.ifindex = ifindex;
  h.attach_point = point;
  return h;
}

bpf_tc_opts TcOpts() {
  bpf_tc_opts o{};
  o.sz = sizeof(o);
  o.handle = kTcHandle;
  o.priority = kTcPriority;
  return o;
}

uint32_t ProgramId(int fd);

// The id of our filter's program at `point` of `ifindex`, or 0.
uint32_t QueryFilter(int ifindex, bpf_tc_attach_point point) {
  bpf_tc_hook h = Hook(ifindex, point);
  bpf_tc_opts o = TcOpts();
  if (bpf_tc_query(&h, &o) != 0) return 0;
  return o.prog_id;
}

// A NETLINK_ROUTE socket of the calling thread's network namespace (it stays in that one
// whatever namespace the thread enters later), or -1.
int OpenRouteSocket() {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return -1;
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  timeval timeout{1, 0};  // the kernel answers before send returns: never waited for
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// QueryFilter(ifindex, BPF_TC_INGRESS) asked on `sock` (OpenRouteSocket), as libbpf's
// bpf_tc_query asks it (RTM_GETTFILTER for np's handle and priority), without entering a
// network namespace or opening a socket: 0 when the kernel refuses (no such filter); an
// error when the socket fails (the caller opens another).
absl::StatusOr<uint32_t> QueryIngressFilter(int sock, int ifindex, uint32_t seq) {
  struct {
    nlmsghdr header;
    tcmsg tc;
    alignas(4) char kind[RTA_SPACE(4)];
  } request{};
  request.header.nlmsg_len = sizeof(request);
  request.header.nlmsg_type = RTM_GETTFILTER;
  request.header.nlmsg_flags = NLM_F_REQUEST;
  request.header.nlmsg_seq = seq;
  request.tc.tcm_family = AF_UNSPEC;
  request.tc.tcm_ifindex = ifindex;
  request.tc.tcm_handle = kTcHandle;
  request.tc.tcm_parent = TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS);
  request.tc.tcm_info = TC_H_MAKE(kTcPriority << 16, htons(ETH_P_ALL));
  static_assert(offsetof(decltype(request), kind) == NLMSG_LENGTH(sizeof(tcmsg)));
  rtattr kind{};
  kind.rta_len = RTA_LENGTH(4);
  kind.rta_type = TCA_KIND;
  std::memcpy(request.kind, &kind, sizeof(kind));
  std::memcpy(request.kind + RTA_LENGTH(0), "bpf", 4);
  if (send(sock, &request, sizeof(request), 0) != static_cast<ssize_t>(sizeof(request))) {
    return Errno("send RTM_GETTFILTER", errno);
  }
  alignas(nlmsghdr) char buffer[8192];
  while (true) {
    const ssize_t got = recv(sock, buffer, sizeof(buffer), 0);
    if (got < 0) return Errno("recv RTM_GETTFILTER", errno);
    int left = static_cast<int>(got);
    for (const nlmsghdr* h = reinterpret_cast<const nlmsghdr*>(buffer); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != seq) continue;  // an answer to an earlier question
      if (h->nlmsg_type == NLMSG_ERROR) return 0u;
      if (h->nlmsg_type != RTM_NEWTFILTER) continue;
      const auto* tc = static_cast<const tcmsg*>(NLMSG_DATA(h));
      int attrs_left = static_cast<int>(h->nlmsg_len) - NLMSG_LENGTH(sizeof(tcmsg));
      for (const rtattr* a = reinterpret_cast<const rtattr*>(
               reinterpret_cast<const char*>(tc) + NLMSG_ALIGN(sizeof(tcmsg)));
           RTA_OK(a, attrs_left); a = RTA_NEXT(a, attrs_left)) {
        if (a->rta_type != TCA_OPTIONS) continue;
        int options_left = static_cast<int>(RTA_PAYLOAD(a));
        for (const rtattr* o = static_cast<const rtattr*>(RTA_DATA(a)); RTA_OK(o, options_left);
             o = RTA_NEXT(o, options_left)) {
          if (o->rta_type == TCA_BPF_ID && RTA_PAYLOAD(o) >= sizeof(uint32_t)) {
            uint32_t id;
            std::memcpy(&id, RTA_DATA(o), sizeof(id));
            return id;
          }
        }
      }
      return 0u;
    }
  }
}

// ---------------------------------------------------------------------------------------
// tcx (linux 6.6: "bpf: Add fd-based tcx multi-prog infra with link support"): BPF programs
// on a device's ingress and egress without a qdisc, attached with BPF_PROG_ATTACH and kept
// by the device until detached (no link, no pin, no process). Debian 12's kernel headers
// (6.1) and libbpf (1.1) lack it: the constants are named here, with the values of
// linux 6.6's include/uapi/linux/bpf.h, and the calls made with the raw bpf(2) syscall
// (their attribute layout is 6.1's union bpf_attr, zero past the fields used).
constexpr uint32_t kBpfTcxIngress = 46;    // enum bpf_attach_type BPF_TCX_INGRESS (6.6)
constexpr uint32_t kBpfTcxEgress = 47;     // BPF_TCX_EGRESS (6.6)
constexpr uint32_t kBpfFBefore = 1u << 3;  // BPF_F_BEFORE (6.6): no relative program: first
constexpr int kEnotsupp = 524;             // the kernel's ENOTSUPP (no userspace header)

std::atomic<AttachMode> attach_mode{AttachMode::kTcxWhenAvailable};

uint32_t TcxType(uint32_t hook) {
  return hook == NP_HOOK_FROM_ENDPOINT ? kBpfTcxIngress : kBpfTcxEgress;
}
const char* HookProgram(uint32_t hook) {
  return hook == NP_HOOK_FROM_ENDPOINT ? "np_from_ep" : "np_to_ep";
}
bpf_tc_attach_point TcPoint(uint32_t hook) {
  return hook == NP_HOOK_FROM_ENDPOINT ? BPF_TC_INGRESS : BPF_TC_EGRESS;
}
// What a kernel without tcx (before 6.6, or CONFIG_NET_XGRESS off) answers.
bool NoTcx(int err) { return err == EINVAL || err == EOPNOTSUPP || err == kEnotsupp; }

long SysBpf(int cmd, bpf_attr& attr) { return syscall(SYS_bpf, cmd, &attr, sizeof(attr)); }

// The ids of the programs on tcx hook `type` of `ifindex` (calling thread's namespace), in
// the order they run; none when the hook has none, or the kernel has no tcx.
std::vector<uint32_t> TcxPrograms(int ifindex, uint32_t type) {
  uint32_t ids[64];
  bpf_attr attr{};
  attr.query.target_fd = static_cast<uint32_t>(ifindex);  // target_ifindex in 6.6
  attr.query.attach_type = type;
  attr.query.prog_ids = reinterpret_cast<uint64_t>(ids);
  attr.query.prog_cnt = 64;
  if (SysBpf(BPF_PROG_QUERY, attr) != 0) return {};
  return std::vector<uint32_t>(ids, ids + std::min<uint32_t>(attr.query.prog_cnt, 64));
}

// The name of program `id`, "" when it is gone.
std::string ProgramName(uint32_t id) {
  Fd fd(bpf_prog_get_fd_by_id(id));
  if (fd.get() < 0) return "";
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) return "";
  return std::string(info.name, strnlen(info.name, sizeof(info.name)));
}

// np's program (by its name) on tcx hook `hook` of `ifindex`, or 0: the first one that
// runs. `known`: the id of a program of np's for `hook` (a live generation's), or 0. When
// the hook runs it first (AttachTcx puts np's program first), it is the answer without
// asking any program its name: three syscalls fewer (BPF_PROG_GET_FD_BY_ID,
// BPF_OBJ_GET_INFO_BY_FD, close) on every in-place edit's check that its generation still
// runs. Anything else is answered by names, as without `known`.
uint32_t TcxProgram(int ifindex, uint32_t hook, uint32_t known = 0) {
  const std::vector<uint32_t> ids = TcxPrograms(ifindex, TcxType(hook));
  if (known != 0 && !ids.empty() && ids.front() == known) return known;
  for (uint32_t id : ids) {
    if (ProgramName(id) == HookProgram(hook)) return id;
  }
  return 0;
}

// Puts `fd` (np's program for `hook`) on tcx `hook` of `ifindex`: in place of np's program
// there (BPF_F_REPLACE: the kernel swaps the one pointer, each packet runs the old program
// or the new one), else first of the hook's programs. False when the kernel has no tcx.
absl::StatusOr<bool> AttachTcx(int ifindex, const std::string& name, uint32_t hook, int fd) {
  const uint32_t old = TcxProgram(ifindex, hook);
  if (old != 0 && old == ProgramId(fd)) return true;  // attached already
  Fd old_fd(old == 0 ? -1 : bpf_prog_get_fd_by_id(old));
  bpf_attr attr{};
  attr.target_fd = static_cast<uint32_t>(ifindex);  // target_ifindex in 6.6
  attr.attach_bpf_fd = static_cast<uint32_t>(fd);
  attr.attach_type = TcxType(hook);
  if (old_fd.get() >= 0) {
    attr.attach_flags = BPF_F_REPLACE;
    attr.replace_bpf_fd = static_cast<uint32_t>(old_fd.get());
  } else {
    attr.attach_flags = kBpfFBefore;
  }
  if (SysBpf(BPF_PROG_ATTACH, attr) == 0) return true;
  const int err = errno;
  if (old == 0 && NoTcx(err)) return false;
  return Errno(absl::StrCat("tcx attach to ", name, " (",
                            hook == NP_HOOK_FROM_ENDPOINT ? "ingress" : "egress", ")"),
               err);
}

// Takes np's program off tcx `hook` of `ifindex`; not there is no error. Whether it was
// there.
absl::StatusOr<bool> DetachTcx(int ifindex, const std::string& name, uint32_t hook) {
  const uint32_t id = TcxProgram(ifindex, hook);
  if (id == 0) return false;
  Fd fd(bpf_prog_get_fd_by_id(id));
  if (fd.get() < 0) return false;  // gone meanwhile
  bpf_attr attr{};
  attr.target_fd = static_cast<uint32_t>(ifindex);
  attr.attach_bpf_fd = static_cast<uint32_t>(fd.get());
  attr.attach_type = TcxType(hook);
  if (SysBpf(BPF_PROG_DETACH, attr) != 0 && errno != ENOENT && errno != ENODEV) {
    return Errno(absl::StrCat("tcx detach from ", name), errno);
  }
  return true;
}

// Takes np's legacy tc filter off `hook` of `ifindex` (its clsact qdisc stays: it may hold
// other filters); not there is no error.
absl::Status DetachTcFilter(int ifindex, const std::string& name, uint32_t hook) {
  bpf_tc_hook h = Hook(ifindex, TcPoint(hook));
  bpf_tc_opts o = TcOpts();
  const int err = bpf_tc_detach(&h, &o);
  if (err != 0 && err != -ENOENT && err != -EINVAL) {
    return Errno(absl::StrCat("detach tc filter from ", name), err);
  }
  return absl::OkStatus();
}

// Puts `fd` on `hook` of `ifindex` as a legacy tc filter (clsact, np's handle and priority),
// replacing np's filter there atomically.
absl::Status AttachTcFilter(int ifindex, const std::string& name, uint32_t hook, int fd) {
  bpf_tc_hook h = Hook(ifindex, TcPoint(hook));
  int err = bpf_tc_hook_create(&h);
  if (err != 0 && err != -EEXIST) return Errno(absl::StrCat("create clsact on ", name), err);
  bpf_tc_opts o = TcOpts();
  o.prog_fd = fd;
  o.flags = BPF_TC_F_REPLACE;
  err = bpf_tc_attach(&h, &o);
  if (err != 0) {
    return Errno(absl::StrCat("attach to ", name, " (",
                              hook == NP_HOOK_FROM_ENDPOINT ? "ingress" : "egress", ")"),
                 err);
  }
  return absl::OkStatus();
}

// Puts `from_fd` on ingress of `ifindex` (`name`) and `to_fd` on its egress, replacing np's
// programs there, as loader.h "Attachment" describes: through tcx unless the kernel has
// none (or SetAttachMode said kTcOnly), then np's legacy filters off (an upgrade), else as
// legacy tc filters. Each replacement is atomic (the hook runs the old program or the new
// one, never none). Whether tcx holds them.
absl::StatusOr<bool> AttachFilters(int ifindex, const std::string& name, int from_fd, int to_fd) {
  bool tcx = attach_mode.load(std::memory_order_relaxed) == AttachMode::kTcxWhenAvailable;
  if (tcx) {
    for (auto [hook, fd] : {std::pair<uint32_t, int>{NP_HOOK_FROM_ENDPOINT, from_fd},
                            {NP_HOOK_TO_ENDPOINT, to_fd}}) {
      absl::StatusOr<bool> attached = AttachTcx(ifindex, name, hook, fd);
      if (!attached.ok()) return attached.status();
      if (!*attached) {
        // No tcx in this kernel: its first attach was refused, nothing is on tcx.
        tcx = false;
        break;
      }
    }
  }
  for (uint32_t hook : {NP_HOOK_FROM_ENDPOINT, NP_HOOK_TO_ENDPOINT}) {
    // tcx runs before the legacy filters, and np's tcx program ends in TCX_NEXT when it
    // allows: until np's legacy filter is gone a packet passes only when both generations
    // allow it (loader.h: fail closed, and no flow both allow is cut).
    absl::Status s = tcx ? DetachTcFilter(ifindex, name, hook)
                         : AttachTcFilter(ifindex, name, hook,
                                          hook == NP_HOOK_FROM_ENDPOINT ? from_fd : to_fd);
    if (!s.ok()) return s;
  }
  return tcx;
}

// Takes np's programs off `ifindex` (`name`): from tcx, and np's legacy filters with their
// clsact qdisc (np made it); what is not there is no error. `after_tcx_look_for_tc`: false
// when np's programs were on both tcx hooks (a pod of this node deleted in place: an
// interface AttachFilters put on tcx has no legacy filter of np left, it took them off
// before it returned), saving two netlink questions.
absl::Status DetachFilters(int ifindex, const std::string& name,
                           bool after_tcx_look_for_tc = true) {
  absl::Status result = absl::OkStatus();
  int on_tcx = 0;
  for (uint32_t hook : {NP_HOOK_FROM_ENDPOINT, NP_HOOK_TO_ENDPOINT}) {
    absl::StatusOr<bool> s = DetachTcx(ifindex, name, hook);
    if (!s.ok() && result.ok()) result = s.status();
    on_tcx += s.ok() && *s;
  }
  if (on_tcx == 2 && !after_tcx_look_for_tc && result.ok()) return result;
  const bool legacy = QueryFilter(ifindex, BPF_TC_INGRESS) != 0 ||
                      QueryFilter(ifindex, BPF_TC_EGRESS) != 0;
  if (!legacy) return result;
  for (uint32_t hook : {NP_HOOK_FROM_ENDPOINT, NP_HOOK_TO_ENDPOINT}) {
    absl::Status s = DetachTcFilter(ifindex, name, hook);
    if (!s.ok() && result.ok()) result = s;
  }
  bpf_tc_hook h = Hook(ifindex, static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
  int err = bpf_tc_hook_destroy(&h);
  if (err != 0 && err != -ENOENT && err != -EINVAL && result.ok()) {
    result = Errno(absl::StrCat("remove clsact from ", name), err);
  }
  return result;
}

// The identity maps get room beyond the IR's entries for in-place edits (EditIdentities):
// pod events add host keys and split LPM ranges; np_endpoints_addr gets the same room as
// np_ident_hosts for pods of this node added in place. np_ident_hosts(6) are preallocated (about
// 80 bytes an entry), so their room is an eighth more. The LPM tries allocate nodes as they
// are added, so their room costs nothing: enough more for an edit's new keys to come before
// its old ones go (up to about 6 x 128 for an IPv6 pod in a wide range: maps.cc).
// Never past the kernel's 2^27 entries of a hash map (ebpf_backend.cc: Capacity refuses
// more entries than that, not more room).
size_t IdentityRoom(size_t entries) {
  return std::max(entries, std::min<size_t>(entries + entries / 8 + 64, size_t{1} << 27));
}
size_t LpmRoom(size_t entries) {
  return std::min<size_t>(entries + entries / 8 + 2048, size_t{1} << 27);
}

// How many of `maps`' host keys are of `family` (np_ident_hosts holds IPv4, np_ident_hosts6
// IPv6).
size_t HostKeys(const MapContents& maps, uint8_t family) {
  return static_cast<size_t>(std::count_if(maps.ident_hosts.begin(), maps.ident_hosts.end(),
                                           [&](const auto& e) { return e.first.family == family; }));
}

// What the kernel's np_endpoints_if and np_endpoints_addr hold of an endpoint: its id and
// NP_ENDPOINT_OUTSIDE. Its table and selection are read from np_endpoint_states (np_abi.h),
// so that an entry never changes while its endpoint lives (a relabel writes the state).
np_endpoint KernelEndpoint(np_endpoint v) {
  v.table = 0;
  v.flags &= NP_ENDPOINT_OUTSIDE;
  return v;
}

uint32_t MaxEntries(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return 0;
  return info.max_entries;
}

uint32_t ProgramId(int fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return 0;
  return info.id;
}

}  // namespace

void SetAttachMode(AttachMode mode) { attach_mode.store(mode, std::memory_order_relaxed); }

namespace {
// FindAttached, told that `known` is np's program for `hook` when not 0 (TcxProgram).
AttachedProgram FindAttachedKnown(int ifindex, uint32_t hook, uint32_t known) {
  if (const uint32_t id = TcxProgram(ifindex, hook, known); id != 0) return {id, true};
  return {QueryFilter(ifindex, TcPoint(hook)), false};
}
}  // namespace

AttachedProgram FindAttached(int ifindex, uint32_t hook) {
  return FindAttachedKnown(ifindex, hook, /*known=*/0);
}

// ---------------------------------------------------------------------------------------
// Generation

absl::StatusOr<std::unique_ptr<Generation>> Generation::Load(
    const MapContents& maps, const std::vector<std::pair<uint32_t, uint32_t>>& interfaces,
    int ct_fd, int frag_fd) {
  LibbpfLogScope log;
  bpf_object_open_opts opts{};
  opts.sz = sizeof(opts);
  opts.object_name = "np_policy";
  bpf_object* obj = bpf_object__open_mem(internal::kPolicyObject, internal::kPolicyObjectSize,
                                         &opts);
  if (obj == nullptr) {
    return absl::InternalError(absl::StrCat("open np_policy.o: ", std::strerror(errno), "\n",
                                            log.Tail()));
  }
  std::unique_ptr<Generation> g(new Generation(obj));
  // The policy maps get room for in-place policy edits (maps.h PolicyRoom).
  const PolicyCapacity room = PolicyRoom(maps);
  for (auto [name, n] : std::vector<std::pair<const char*, size_t>>{
           {"np_ident_hosts", IdentityRoom(HostKeys(maps, NP_FAMILY_V4))},
           {"np_ident_hosts6", IdentityRoom(HostKeys(maps, NP_FAMILY_V6))},
           {"np_ident4", LpmRoom(maps.ident4.size())},
           {"np_ident6", LpmRoom(maps.ident6.size())},
           {"np_endpoints_if", IdentityRoom(interfaces.size())},
           {"np_endpoints_addr", IdentityRoom(maps.endpoints_addr.size())},
           // Indexed by endpoint id: endpoints added in place take ids past every one.
           {"np_endpoint_states", IdentityRoom(maps.endpoint_states.size())},
           {"np_table_slots", room.table_slots},
           {"np_tables", room.tables},
           {"np_ports", room.ports},
           {"np_tiers", room.tiers},
           {"np_tier_lists", room.tier_lists},
           {"np_members", room.members}}) {
    absl::Status s = SetMaxEntries(obj, name, n);
    if (!s.ok()) return s;
  }
  for (auto [name, fd] : {std::pair<const char*, int>{"np_ct", ct_fd}, {"np_frag", frag_fd}}) {
    if (fd < 0) continue;
    int err = bpf_map__reuse_fd(bpf_object__find_map_by_name(obj, name), fd);
    if (err != 0) return Errno(absl::StrCat("reuse ", name), err);
  }
  int err = bpf_object__load(obj);
  if (err != 0) {
    return absl::InternalError(absl::StrCat("load np_policy.o: ", std::strerror(-err), "\n",
                                            log.Tail()));
  }
  uint32_t zero = 0;
  absl::Status s = Update(g->map_fd("np_config"), "np_config", &zero, &maps.config);
  for (const auto& [k, v] : maps.ident_hosts) {
    const char* name = k.family == NP_FAMILY_V4 ? "np_ident_hosts" : "np_ident_hosts6";
    if (s.ok()) s = Update(g->map_fd(name), name, &k, &v);
  }
  for (const auto& [k, v] : maps.ident4) {
    if (s.ok()) s = Update(g->map_fd("np_ident4"), "np_ident4", &k, &v);
  }
  for (const auto& [k, v] : maps.ident6) {
    if (s.ok()) s = Update(g->map_fd("np_ident6"), "np_ident6", &k, &v);
  }
  for (uint32_t i = 0; i < maps.endpoint_states.size(); ++i) {
    if (s.ok()) {
      s = Update(g->map_fd("np_endpoint_states"), "np_endpoint_states", &i,
                 &maps.endpoint_states[i]);
    }
  }
  for (const auto& [k, v] : maps.endpoints_addr) {
    const np_endpoint kernel = KernelEndpoint(v);
    if (s.ok()) s = Update(g->map_fd("np_endpoints_addr"), "np_endpoints_addr", &k, &kernel);
  }
  for (uint32_t i = 0; i < maps.tables.size(); ++i) {
    if (s.ok()) s = Update(g->map_fd("np_tables"), "np_tables", &i, &maps.tables[i]);
    // Both banks: each table where the IR numbers it (maps.h InitialLayout).
    for (uint32_t bank = 0; bank < 2; ++bank) {
      const uint32_t slot = NP_TABLE_SLOT(i, bank);
      if (s.ok()) s = Update(g->map_fd("np_table_slots"), "np_table_slots", &slot, &i);
    }
  }
  for (const auto& [k, v] : maps.ports) {
    if (s.ok()) s = Update(g->map_fd("np_ports"), "np_ports", &k, &v);
  }
  for (const auto& [k, v] : maps.tiers) {
    if (s.ok()) s = Update(g->map_fd("np_tiers"), "np_tiers", &k, &v);
  }
  for (uint32_t i = 0; i < maps.tier_lists.size(); ++i) {
    if (s.ok()) s = Update(g->map_fd("np_tier_lists"), "np_tier_lists", &i, &maps.tier_lists[i]);
  }
  // The room past them holds lists that deny (maps.h kUnusedTierList), not the array's
  // zeros (an empty list: no verdict), so that a reference past the IR's lists fails closed.
  for (uint32_t i = static_cast<uint32_t>(maps.tier_lists.size()); i < room.tier_lists; ++i) {
    if (s.ok()) s = Update(g->map_fd("np_tier_lists"), "np_tier_lists", &i, &kUnusedTierList);
  }
  const uint8_t present = 1;
  for (const np_member_key& k : maps.members) {
    if (s.ok()) s = Update(g->map_fd("np_members"), "np_members", &k, &present);
  }
  np_endpoint outside{};
  outside.id = InterfaceEndpoint::kOutside;
  outside.flags = NP_ENDPOINT_OUTSIDE;
  for (const auto& [ifindex, endpoint] : interfaces) {
    if (endpoint != InterfaceEndpoint::kOutside && endpoint >= maps.endpoints.size()) {
      return absl::InvalidArgumentError(absl::StrCat("no endpoint ", endpoint));
    }
    if (s.ok()) {
      const np_endpoint kernel =
          endpoint == InterfaceEndpoint::kOutside ? outside : KernelEndpoint(maps.endpoints[endpoint]);
      s = Update(g->map_fd("np_endpoints_if"), "np_endpoints_if", &ifindex, &kernel);
    }
  }
  if (!s.ok()) return s;
  return g;
}

Generation::~Generation() { bpf_object__close(object_); }

int Generation::program_fd(uint32_t hook) const {
  bpf_program* p = bpf_object__find_program_by_name(
      object_, hook == NP_HOOK_FROM_ENDPOINT ? "np_from_ep" : "np_to_ep");
  return p == nullptr ? -1 : bpf_program__fd(p);
}

int Generation::map_fd(absl::string_view name) const {
  bpf_map* m = bpf_object__find_map_by_name(object_, std::string(name).c_str());
  return m == nullptr ? -1 : bpf_map__fd(m);
}

absl::Status Generation::SetInterface(uint32_t ifindex, const np_endpoint& endpoint) {
  const np_endpoint kernel = KernelEndpoint(endpoint);
  return Update(map_fd("np_endpoints_if"), "np_endpoints_if", &ifindex, &kernel);
}

// The live generation on one of the interfaces: its shared maps and generation number.
struct LiveGeneration {
  Fd ct, frag;
  uint32_t generation = 0;
};

std::optional<LiveGeneration> FindLiveGeneration(const std::vector<int>& ifindexes) {
  for (int ifindex : ifindexes) {
    uint32_t id = FindAttached(ifindex, NP_HOOK_FROM_ENDPOINT).id;
    if (id == 0) continue;
    Fd prog(bpf_prog_get_fd_by_id(id));
    if (prog.get() < 0) continue;
    absl::StatusOr<ProgInfo> info = GetProgInfo(prog.get());
    if (!info.ok() || info->name != "np_from_ep") continue;
    LiveGeneration live;
    live.ct = MapOfProgram(prog.get(), "np_ct");
    live.frag = MapOfProgram(prog.get(), "np_frag");
    if (live.ct.get() < 0 || live.frag.get() < 0) continue;
    Fd config = MapOfProgram(prog.get(), "np_config");
    np_config c{};
    uint32_t zero = 0;
    if (config.get() >= 0 && bpf_map_lookup_elem(config.get(), &zero, &c) == 0) {
      live.generation = c.generation;
    }
    return live;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// Test run

absl::StatusOr<TestRunResult> TestRun(int program_fd, absl::string_view frame,
                                      uint32_t ifindex, uint32_t repeat) {
  __sk_buff ctx{};
  ctx.ifindex = ifindex;
  bpf_test_run_opts opts{};
  opts.sz = sizeof(opts);
  opts.data_in = frame.data();
  opts.data_size_in = static_cast<uint32_t>(frame.size());
  opts.ctx_in = &ctx;
  opts.ctx_size_in = sizeof(ctx);
  opts.repeat = static_cast<int>(repeat);
  if (bpf_prog_test_run_opts(program_fd, &opts) != 0) {
    return Errno("BPF_PROG_TEST_RUN", errno);
  }
  TestRunResult r;
  r.verdict = static_cast<int>(opts.retval);
  r.duration_ns = opts.duration;
  return r;
}

// ---------------------------------------------------------------------------------------
// Apply / Remove

absl::StatusOr<ApplyReport> ApplyGeneration(const MapContents& maps,
                                            const std::vector<InterfaceEndpoint>& interfaces,
                                            absl::string_view netns) {
  absl::StatusOr<std::unique_ptr<NetnsScope>> scope = NetnsScope::Enter(netns);
  if (!scope.ok()) return scope.status();
  LibbpfLogScope log;

  std::vector<int> ifindexes;
  std::vector<std::pair<uint32_t, uint32_t>> entries;
  std::vector<const InterfaceEndpoint*> attached;
  for (const InterfaceEndpoint& i : interfaces) {
    unsigned index = if_nametoindex(i.interface.c_str());
    if (index == 0 && i.endpoint == InterfaceEndpoint::kOutside) continue;  // gone with its pod
    if (index == 0) {
      return absl::NotFoundError(absl::StrCat("interface ", i.interface, " not found",
                                              netns.empty() ? "" : " in netns ", netns));
    }
    ifindexes.push_back(static_cast<int>(index));
    entries.emplace_back(index, i.endpoint);
    attached.push_back(&i);
  }

  ApplyReport report;
  std::optional<LiveGeneration> live = FindLiveGeneration(ifindexes);
  report.generation = live.has_value() ? NextGeneration(live->generation) : 1;
  report.conntrack_reused = live.has_value();
  MapContents next = maps;
  next.config.generation = report.generation;
  absl::StatusOr<std::unique_ptr<Generation>> generation =
      Generation::Load(next, entries, live.has_value() ? live->ct.get() : -1,
                       live.has_value() ? live->frag.get() : -1);
  if (!generation.ok()) return generation.status();

  // Replace (or create) the filters, interface by interface. Each replacement is atomic.
  bool tcx = false;
  for (size_t i = 0; i < ifindexes.size(); ++i) {
    absl::StatusOr<bool> s = AttachFilters(ifindexes[i], attached[i]->interface,
                                           (*generation)->program_fd(NP_HOOK_FROM_ENDPOINT),
                                           (*generation)->program_fd(NP_HOOK_TO_ENDPOINT));
    if (!s.ok()) return s.status();
    if (i == 0) tcx = *s;
    ++report.interfaces;
  }
  report.tcx = tcx;
  auto installed = std::make_shared<LiveMaps>();
  installed->config = fcntl((*generation)->map_fd("np_config"), F_DUPFD_CLOEXEC, 0);
  installed->hosts = fcntl((*generation)->map_fd("np_ident_hosts"), F_DUPFD_CLOEXEC, 0);
  installed->hosts6 = fcntl((*generation)->map_fd("np_ident_hosts6"), F_DUPFD_CLOEXEC, 0);
  installed->ident4 = fcntl((*generation)->map_fd("np_ident4"), F_DUPFD_CLOEXEC, 0);
  installed->ident6 = fcntl((*generation)->map_fd("np_ident6"), F_DUPFD_CLOEXEC, 0);
  installed->endpoints = fcntl((*generation)->map_fd("np_endpoints_addr"), F_DUPFD_CLOEXEC, 0);
  installed->interfaces = fcntl((*generation)->map_fd("np_endpoints_if"), F_DUPFD_CLOEXEC, 0);
  installed->states = fcntl((*generation)->map_fd("np_endpoint_states"), F_DUPFD_CLOEXEC, 0);
  installed->runs = fcntl((*generation)->map_fd("np_runs"), F_DUPFD_CLOEXEC, 0);
  installed->from_program =
      fcntl((*generation)->program_fd(NP_HOOK_FROM_ENDPOINT), F_DUPFD_CLOEXEC, 0);
  installed->to_program = fcntl((*generation)->program_fd(NP_HOOK_TO_ENDPOINT), F_DUPFD_CLOEXEC, 0);
  for (auto [fd, name] : {std::pair<int*, const char*>{&installed->table_slots, "np_table_slots"},
                          {&installed->tables, "np_tables"},
                          {&installed->ports, "np_ports"},
                          {&installed->tiers, "np_tiers"},
                          {&installed->tier_lists, "np_tier_lists"},
                          {&installed->members, "np_members"}}) {
    *fd = fcntl((*generation)->map_fd(name), F_DUPFD_CLOEXEC, 0);
  }
  if (installed->config >= 0 && installed->hosts >= 0 && installed->hosts6 >= 0 &&
      installed->ident4 >= 0 && installed->ident6 >= 0 && installed->endpoints >= 0 &&
      installed->interfaces >= 0 && installed->states >= 0 && installed->runs >= 0 &&
      installed->from_program >= 0 &&
      installed->to_program >= 0 &&
      installed->table_slots >= 0 && installed->tables >= 0 && installed->ports >= 0 &&
      installed->tiers >= 0 && installed->tier_lists >= 0 && installed->members >= 0) {
    installed->interfaces_capacity = MaxEntries(installed->interfaces);
    installed->attached = ifindexes;
    installed->endpoints_capacity = MaxEntries(installed->endpoints);
    installed->states_capacity = MaxEntries(installed->states);
    installed->endpoints_entries = maps.endpoints_addr.size();
    installed->hosts_capacity = MaxEntries(installed->hosts);
    installed->hosts6_capacity = MaxEntries(installed->hosts6);
    installed->ident4_capacity = MaxEntries(installed->ident4);
    installed->ident6_capacity = MaxEntries(installed->ident6);
    installed->generation = report.generation;
    installed->hosts_entries = HostKeys(maps, NP_FAMILY_V4);
    installed->hosts6_entries = HostKeys(maps, NP_FAMILY_V6);
    installed->ident4_entries = maps.ident4.size();
    installed->ident6_entries = maps.ident6.size();
    installed->config_value = next.config;
    installed->program_id = ProgramId((*generation)->program_fd(NP_HOOK_FROM_ENDPOINT));
    installed->ifindex = ifindexes.empty() ? 0 : ifindexes.front();
    installed->netns = std::string(netns);
    installed->tcx = tcx;
    if (!netns.empty()) installed->netns_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    installed->netlink = OpenRouteSocket();  // in `netns` (the scope above)
    report.live = std::move(installed);
  }
  return report;
}

LiveMaps::~LiveMaps() {
  for (int fd : {config, hosts, hosts6, ident4, ident6, endpoints, interfaces, states, runs,
                 from_program, to_program, table_slots, tables, ports, tiers, tier_lists,
                 members, netlink, netns_fd}) {
    if (fd >= 0) close(fd);
  }
}

namespace {

// Waits until every BPF program run that started before has finished: membarrier's
// MEMBARRIER_CMD_GLOBAL is synchronize_rcu(), and tc programs run inside RCU read-side
// sections (softirq or rcu_read_lock_bh).
absl::Status Barrier() {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0) {
    return Errno("membarrier(MEMBARRIER_CMD_GLOBAL)", errno);
  }
  return absl::OkStatus();
}

bool HaveBarrier() {
  static const bool have = [] {
    long commands = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    return commands >= 0 && (commands & MEMBARRIER_CMD_GLOBAL) != 0;
  }();
  return have;
}

// Grace periods run on a thread of their own, so that an edit can start one and return:
// Start() asks for one that begins after the call, Wait(ticket) blocks until it is over.
// One process-wide thread (never destroyed: nothing to join at exit), one membarrier at a
// time, covering every request made before it began.
class GracePeriods {
 public:
  static GracePeriods& Get() {
    static GracePeriods* const instance = new GracePeriods();
    return *instance;
  }
  uint64_t Start() {
    std::lock_guard<std::mutex> lock(mu_);
    ++requested_;
    wake_.notify_all();
    return requested_;
  }
  absl::Status Wait(uint64_t ticket) {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return completed_ >= ticket; });
    return status_;
  }

 private:
  GracePeriods() {
    std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (true) {
        wake_.wait(lock, [&] { return requested_ > completed_; });
        const uint64_t covers = requested_;  // asked for before the barrier below begins
        lock.unlock();
        absl::Status s = Barrier();
        lock.lock();
        completed_ = covers;
        if (!s.ok()) status_ = s;
        done_.notify_all();
      }
    }).detach();
  }
  std::mutex mu_;
  std::condition_variable wake_, done_;
  uint64_t requested_ = 0, completed_ = 0;
  absl::Status status_;  // the first failure, kept: membarrier does not start failing once
};

absl::Status Delete(int fd, const char* map, const void* key) {
  if (bpf_map_delete_elem(fd, key) != 0) return Errno(absl::StrCat("delete from ", map), errno);
  return absl::OkStatus();
}

// What BPF_MAP_*_BATCH says for a map type without batch operations (ENOTSUPP, 524, is the
// kernel's own: no userspace header has it).
bool NoBatch(int err) { return err == 524 || err == EOPNOTSUPP || err == EINVAL; }

// Writes `entries` in their order: one BPF_MAP_UPDATE_BATCH (the kernel's generic batch
// writes the elements one after the other, as single updates would, in one syscall) when
// the map takes it, else one update each. An IPv6 pod event writes up to hundreds of LPM
// keys.
template <typename K, typename V>
absl::Status UpdateInOrder(int fd, const char* map, const std::vector<std::pair<K, V>>& entries) {
  if (entries.size() > 1) {
    std::vector<K> keys;
    std::vector<V> values;
    keys.reserve(entries.size());
    values.reserve(entries.size());
    for (const auto& [k, v] : entries) {
      keys.push_back(k);
      values.push_back(v);
    }
    uint32_t count = static_cast<uint32_t>(entries.size());
    LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
    if (bpf_map_update_batch(fd, keys.data(), values.data(), &count, &opts) == 0) {
      return absl::OkStatus();
    }
    const int err = errno;
    // The map has no batch operation: nothing written, one by one below. Anything else:
    // the first `count` were written, in order: the edit fails (a full load follows).
    if (count != 0 || !NoBatch(err)) return Errno(absl::StrCat("batch update ", map), err);
  }
  for (const auto& [k, v] : entries) {
    if (absl::Status s = Update(fd, map, &k, &v); !s.ok()) return s;
  }
  return absl::OkStatus();
}

template <typename K>
absl::Status DeleteInOrder(int fd, const char* map, const std::vector<K>& keys) {
  if (keys.size() > 1) {
    uint32_t count = static_cast<uint32_t>(keys.size());
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    if (bpf_map_delete_batch(fd, keys.data(), &count, &opts) == 0) return absl::OkStatus();
    const int err = errno;
    if (count != 0 || !NoBatch(err)) return Errno(absl::StrCat("batch delete from ", map), err);
  }
  for (const K& k : keys) {
    if (absl::Status s = Delete(fd, map, &k); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

// Whether a program run on another CPU sees the loader's writes in the order it made them:
// x86 keeps stores in order and loads in order (TSO), so a run whose lookup saw a later
// write (an LPM key deleted, np_config's new generation) sees every earlier one in its
// later lookups. The two grace periods that this ordering replaces in EditIdentities stay
// where it is not known (a weakly ordered CPU would need acquire loads in np_policy.c).
#if defined(__x86_64__) || defined(__i386__)
constexpr bool kWritesSeenInOrder = true;
#else
constexpr bool kWritesSeenInOrder = false;
#endif

// Why no grace period is waited for on the common path (maps.h IdentityEdit says why each
// state an edit passes through has old-or-new verdicts; this is what keeps a program run
// from mixing more than that):
//   - between the writes of two edits, the end of every run that read a generation before
//     the earlier edit's bump, so that no run sees parts of more than one edit (it would
//     mix two edits' changed addresses) and no run still holds an element that the earlier
//     edit replaced or deleted when the later one allocates it again (a preallocated hash
//     reuses a freed element at once). On x86 the program counts its runs by the generation
//     they read (np_abi.h np_runs), and the next edit reads that count (WaitForRuns): one
//     map read, no wait unless a run of the old generation is still deciding a packet.
//     Elsewhere (or when an edit stopped before its bump) a grace period (membarrier) is
//     started when an edit is done and waited for when the next one starts: 10-20 ms, so
//     back-to-back edits waited that long each;
//   - within an edit, none on x86 (kWritesSeenInOrder): each hash map replaces at most
//     one element (np_ident_hosts holds IPv4 keys, np_ident_hosts6 IPv6 ones, and at most
//     one address per family changes identity), and the adds come before it and the
//     deletes (which allocate nothing) after it, so nothing freed is reused within the
//     edit; an address moving from an LPM key to a host key is found by np_policy.c
//     identity_of's second host lookup (the host key was added before the LPM key went);
//     np_endpoints_addr only gains (pods added) then loses (pods deleted) entries, never
//     replaces one, so it too reuses nothing within an edit, and an address's endpoint
//     entry and identity are read in an order that makes their write order enough
//     (np_policy.c policy_allows);
//   - before the generation bump, none on x86: np_policy.c reads np_config.generation
//     once, before its lookups, and stamps np_ct with what it read (see there).
namespace {
// np's tcx ingress program on live's interface, asked in live's namespace (the calling
// thread's when it has no name).
absl::StatusOr<uint32_t> TcxInNetns(LiveMaps& live) {
  if (live.netns.empty()) return TcxProgram(live.ifindex, NP_HOOK_FROM_ENDPOINT, live.program_id);
  if (live.netns_fd < 0) return absl::UnavailableError("no descriptor of the namespace");
  Fd original(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (original.get() < 0) return Errno("open /proc/thread-self/ns/net", errno);
  if (setns(live.netns_fd, CLONE_NEWNET) != 0) return Errno("setns", errno);
  const uint32_t id = TcxProgram(live.ifindex, NP_HOOK_FROM_ENDPOINT, live.program_id);
  if (setns(original.get(), CLONE_NEWNET) != 0) {
    // The thread cannot get back: nothing this process may do on it is safe any more.
    return Errno("setns back", errno);
  }
  return id;
}

// FailedPrecondition unless `live` is what runs on its interface: `ingress` is the program
// id its tc ingress runs, asked by `query` (a QueryFilter of its netns) when not given.
template <typename Query>
absl::Status StillRuns(const LiveMaps& live, Query query) {
  if (live.ifindex == 0 || live.program_id == 0) {
    return absl::FailedPreconditionError("the generation runs on no interface");
  }
  if (query() != live.program_id) {
    return absl::FailedPreconditionError("another generation runs now");
  }
  return absl::OkStatus();
}
// The same in the current netns (libbpf's query).
absl::Status StillRuns(const LiveMaps& live) {
  return StillRuns(live, [&] {
    return FindAttachedKnown(live.ifindex, NP_HOOK_FROM_ENDPOINT, live.program_id).id;
  });
}
}  // namespace

namespace {
// How long WaitForRuns waits for runs of an old generation before it gives up (the caller
// then loads a new generation): a run decides one packet in microseconds, so only a
// program that lost a count (a bug) or a CPU stopped for that long gets there.
constexpr auto kRunsTimeout = std::chrono::seconds(1);

// Waits until no run of live's generation that has `parity` is left (np_abi.h np_runs),
// which must no longer be the live generation's parity: the sum of np_runs.active[parity]
// over the CPUs is 0. FailedPrecondition when np_runs cannot be read or after
// kRunsTimeout.
absl::Status WaitForRuns(const LiveMaps& live, int parity) {
  static const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return absl::FailedPreconditionError("no count of possible CPUs");
  std::vector<np_runs> per_cpu(static_cast<size_t>(cpus));
  const auto start = std::chrono::steady_clock::now();
  for (int attempt = 0;; ++attempt) {
    // The other half of np_policy.c np_run's argument: this read comes after the bump.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint32_t zero = 0;
    if (bpf_map_lookup_elem(live.runs, &zero, per_cpu.data()) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("read np_runs: ", std::strerror(errno)));
    }
    uint64_t active = 0;  // each CPU's count is its own adds and subtractions: the sum is exact
    for (const np_runs& r : per_cpu) active += r.active[parity];
    if (active == 0) return absl::OkStatus();
    if (std::chrono::steady_clock::now() - start > kRunsTimeout) {
      return absl::FailedPreconditionError(
          absl::StrCat(active, " runs of the generation before ", live.generation,
                       " still counted after 1 s (np_runs)"));
    }
    if (attempt < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

// What an edit leaves for the next one to wait for (see above): the end of the runs of
// the generation before its bump, when it bumped on x86; else a grace period, started now.
void AfterEdit(LiveMaps& live, bool bumped) {
  if (kWritesSeenInOrder && bumped && live.runs >= 0) {
    // The other parity than the live number's: NextGeneration always changes it.
    live.pending_runs = static_cast<int>((live.generation & 1u) ^ 1u);
  } else {
    live.pending_runs = -1;
    live.pending_grace_period = GracePeriods::Get().Start();
  }
}

// The previous edit's runs or grace period (see above), then its pending policy cleanup
// (maps.h PolicyEdit step 3: no run of the generation before it is left).
// FailedPrecondition when the wait failed (nothing written); another error: the cleanup is
// half done, which only leaves entries no bank names (load a new generation).
absl::Status FinishPrevious(LiveMaps& live) {
  live.last_wait_ms = 0;
  const auto start = std::chrono::steady_clock::now();
  if (live.pending_runs >= 0) {
    if (absl::Status w = WaitForRuns(live, live.pending_runs); !w.ok()) return w;
    live.pending_runs = -1;
  }
  if (live.pending_grace_period != 0) {
    absl::Status b = GracePeriods::Get().Wait(live.pending_grace_period);
    if (!b.ok()) return absl::FailedPreconditionError(b.message());
    live.pending_grace_period = 0;
  }
  live.last_wait_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!live.pending_cleanup.has_value()) return absl::OkStatus();
  const PolicyCleanup cleanup = std::move(*live.pending_cleanup);
  live.pending_cleanup.reset();
  absl::Status s = UpdateInOrder(live.table_slots, "np_table_slots", cleanup.slot_writes);
  if (s.ok()) s = DeleteInOrder(live.ports, "np_ports", cleanup.port_deletes);
  if (s.ok()) s = DeleteInOrder(live.tiers, "np_tiers", cleanup.tier_deletes);
  if (s.ok()) s = DeleteInOrder(live.members, "np_members", cleanup.member_deletes);
  for (uint32_t list : cleanup.lists_freed) {
    if (s.ok()) s = Update(live.tier_lists, "np_tier_lists", &list, &kUnusedTierList);
  }
  if (s.ok()) s = UpdateInOrder(live.states, "np_endpoint_states", cleanup.state_writes);
  return s;
}

// What every in-place edit checks and waits for before its first write: FailedPrecondition,
// nothing written, when the kernel has no membarrier or `live` no longer runs; then the
// previous edit's grace period and pending cleanup (FinishPrevious).
// The check asks through live's own netlink socket (LiveMaps::netlink): each pod event
// entered the namespace and opened a socket for it, ~0.1 ms of a 0.25 ms edit. A socket
// that fails is closed and another one opened in the namespace, which asks instead.
absl::Status StartEdit(LiveMaps& live) {
  if (!HaveBarrier()) {
    return absl::FailedPreconditionError("no membarrier(MEMBARRIER_CMD_GLOBAL)");
  }
  absl::StatusOr<uint32_t> ingress = absl::UnavailableError("no socket");
  if (live.tcx) {
    // BPF_PROG_QUERY finds the interface in the calling thread's namespace: entered
    // through the descriptor the generation's Apply kept (no path to open).
    ingress = TcxInNetns(live);
    if (!ingress.ok()) return absl::FailedPreconditionError(ingress.status().message());
  } else if (live.netlink >= 0) {
    ingress = QueryIngressFilter(live.netlink, live.ifindex, ++live.netlink_seq);
    if (!ingress.ok()) {
      close(live.netlink);
      live.netlink = -1;
    }
  }
  if (!ingress.ok()) {
    absl::StatusOr<std::unique_ptr<NetnsScope>> scope = NetnsScope::Enter(live.netns);
    if (!scope.ok()) return absl::FailedPreconditionError(scope.status().message());
    live.netlink = OpenRouteSocket();
    ingress = QueryFilter(live.ifindex, BPF_TC_INGRESS);
  }
  if (absl::Status s = StillRuns(live, [&] { return *ingress; }); !s.ok()) return s;
  return FinishPrevious(live);
}
}  // namespace

namespace {
// A policy edit's step 1: entries no run reads yet (maps.h PolicyEdit), in an order that
// needs none.
absl::Status WritePolicyEntries(LiveMaps& live, const PolicyEdit& edit) {
  std::vector<std::pair<np_member_key, uint8_t>> members;
  members.reserve(edit.member_adds.size());
  for (const np_member_key& k : edit.member_adds) members.emplace_back(k, 1);
  absl::Status s = UpdateInOrder(live.members, "np_members", members);
  if (s.ok()) s = UpdateInOrder(live.tier_lists, "np_tier_lists", edit.list_writes);
  if (s.ok()) s = UpdateInOrder(live.tables, "np_tables", edit.table_writes);
  if (s.ok()) s = UpdateInOrder(live.ports, "np_ports", edit.port_adds);
  if (s.ok()) s = UpdateInOrder(live.tiers, "np_tiers", edit.tier_adds);
  if (s.ok()) s = UpdateInOrder(live.table_slots, "np_table_slots", edit.slot_writes);
  return s;
}
}  // namespace

absl::Status EditPolicy(LiveMaps& live, const PolicyEdit& edit, uint32_t next_generation) {
  if (next_generation != NextGeneration(live.generation)) {
    return absl::FailedPreconditionError("the plan is for another generation number");
  }
  if (absl::Status s = StartEdit(live); !s.ok()) return s;
  absl::Status s = WritePolicyEntries(live, edit);
  // Step 2: the bump. A run that reads the new number must see every write above: on x86
  // it does (kWritesSeenInOrder), elsewhere a grace period orders them.
  if (s.ok() && !kWritesSeenInOrder) s = Barrier();
  if (s.ok()) {
    np_config c = live.config_value;
    c.generation = next_generation;
    s = Update(live.config, "np_config", &kZero, &c);
    if (s.ok()) {
      live.generation = c.generation;
      live.config_value = c;
      live.pending_cleanup = edit.cleanup;
    }
  }
  AfterEdit(live, s.ok());
  return s;
}

absl::Status EditIdentities(LiveMaps& live, const IdentityEdit& edit,
                            const PolicyEdit* policy_first) {
  size_t adds[2] = {0, 0}, changes[2] = {0, 0}, deletes[2] = {0, 0};
  for (const auto& [k, v] : edit.host_adds) ++adds[k.family == NP_FAMILY_V4 ? 0 : 1];
  for (const auto& [k, v] : edit.host_changes) ++changes[k.family == NP_FAMILY_V4 ? 0 : 1];
  for (const auto& k : edit.host_deletes) ++deletes[k.family == NP_FAMILY_V4 ? 0 : 1];
  // Nothing is written until every precondition holds.
  if (live.hosts_entries + adds[0] > live.hosts_capacity ||
      live.hosts6_entries + adds[1] > live.hosts6_capacity ||
      live.ident4_entries + edit.new_lpm4_keys > live.ident4_capacity ||
      live.ident6_entries + edit.new_lpm6_keys > live.ident6_capacity) {
    return absl::FailedPreconditionError("the identity maps have no room for the edit");
  }
  if (live.endpoints_entries + edit.endpoint_adds.size() > live.endpoints_capacity) {
    return absl::FailedPreconditionError("np_endpoints_addr has no room for the edit");
  }
  for (const auto& [id, v] : edit.state_adds) {
    if (id >= live.states_capacity) {
      return absl::FailedPreconditionError("np_endpoint_states has no room for the edit");
    }
  }
  if (absl::Status s = StartEdit(live); !s.ok()) return s;
  auto hosts = [&](const np_endpoint_addr_key& k) {
    return k.family == NP_FAMILY_V4 ? std::pair<int, const char*>{live.hosts, "np_ident_hosts"}
                                    : std::pair<int, const char*>{live.hosts6, "np_ident_hosts6"};
  };
  // A pod's table and peer sets first (maps.h PodPolicyEdit): complete before an
  // endpoint entry names them.
  absl::Status s = policy_first == nullptr ? absl::OkStatus() : WritePolicyEntries(live, *policy_first);
  if (s.ok() && policy_first != nullptr && !kWritesSeenInOrder) s = Barrier();
  // Endpoint states (maps.h IdentityEdit::state_adds, state_changes): an added one's before
  // any entry names its id; a changed one's in the bank of the generation the bump below
  // makes live, which no run reads before it (the previous edit's cleanup left both banks
  // equal: StartEdit), each value written whole in place (an array), so the bank runs read
  // keeps its bytes.
  if (s.ok()) s = UpdateInOrder(live.states, "np_endpoint_states", edit.state_adds);
  PolicyCleanup state_cleanup;
  for (const IdentityEdit::StateChange& c : edit.state_changes) {
    np_endpoint_states v{};
    v.bank[live.generation & 1u] = c.before;
    v.bank[NextGeneration(live.generation) & 1u] = c.after;
    if (s.ok()) s = Update(live.states, "np_endpoint_states", &c.id, &v);
    state_cleanup.state_writes.emplace_back(c.id, BothBanks(c.after));
  }
  // Pods of this node added: their endpoint entries before their addresses' identities,
  // deleted: after (np_policy.c policy_allows says why; on x86 the order of the writes is
  // what runs see, elsewhere a grace period separates them).
  for (const auto& [k, v] : edit.endpoint_adds) {
    const np_endpoint kernel = KernelEndpoint(v);
    if (s.ok()) s = Update(live.endpoints, "np_endpoints_addr", &k, &kernel);
  }
  if (s.ok() && !edit.endpoint_adds.empty() && !kWritesSeenInOrder) s = Barrier();
  for (const auto& [k, v] : edit.host_adds) {
    if (s.ok()) s = Update(hosts(k).first, hosts(k).second, &k, &v);
  }
  if (s.ok() && edit.barrier_after_host_adds) s = Barrier();
  if (s.ok()) s = UpdateInOrder(live.ident4, "np_ident4", edit.lpm4_puts);
  if (s.ok()) s = UpdateInOrder(live.ident6, "np_ident6", edit.lpm6_puts);
  int replaced[2] = {0, 0};
  for (const auto& [k, v] : edit.host_changes) {
    // A second replacement in one map could reuse the element the first one freed while a
    // run still reads it (PlanIdentityEdit never plans one: kept for safety).
    if (s.ok() && replaced[k.family == NP_FAMILY_V4 ? 0 : 1]++ > 0) s = Barrier();
    if (s.ok()) s = Update(hosts(k).first, hosts(k).second, &k, &v);
  }
  if (s.ok() && edit.barrier_before_deletes && !kWritesSeenInOrder) s = Barrier();
  if (s.ok()) s = DeleteInOrder(live.ident4, "np_ident4", edit.lpm4_deletes);
  if (s.ok()) s = DeleteInOrder(live.ident6, "np_ident6", edit.lpm6_deletes);
  for (const np_endpoint_addr_key& k : edit.host_deletes) {
    if (s.ok()) s = Delete(hosts(k).first, hosts(k).second, &k);
  }
  if (s.ok() && !edit.endpoint_deletes.empty() && !kWritesSeenInOrder) s = Barrier();
  for (const np_endpoint_addr_key& k : edit.endpoint_deletes) {
    if (s.ok()) s = Delete(live.endpoints, "np_endpoints_addr", &k);
  }
  // As a new generation: np_ct's connectionless flows are decided again, by runs that
  // read the new generation, hence saw every write above (np_policy.c np_decide).
  if (s.ok() && !kWritesSeenInOrder) s = Barrier();
  if (s.ok()) {
    np_config c = live.config_value;
    c.generation = NextGeneration(live.generation);
    s = Update(live.config, "np_config", &kZero, &c);
    if (s.ok()) {
      live.generation = c.generation;
      live.config_value = c;
      live.hosts_entries = live.hosts_entries + adds[0] - deletes[0];
      live.hosts6_entries = live.hosts6_entries + adds[1] - deletes[1];
      live.ident4_entries = static_cast<size_t>(static_cast<long>(live.ident4_entries) + edit.Lpm4Delta());
      live.ident6_entries = static_cast<size_t>(static_cast<long>(live.ident6_entries) + edit.Lpm6Delta());
      live.endpoints_entries =
          live.endpoints_entries + edit.endpoint_adds.size() - edit.endpoint_deletes.size();
      if (policy_first != nullptr) live.pending_cleanup = policy_first->cleanup;
      if (!state_cleanup.state_writes.empty()) {
        if (!live.pending_cleanup.has_value()) live.pending_cleanup.emplace();
        live.pending_cleanup->state_writes = std::move(state_cleanup.state_writes);
      }
    }
  }
  // What the next edit waits for (AfterEdit). Also after a failed write: the caller then
  // loads a new generation, which needs none.
  AfterEdit(live, s.ok());
  return s;
}

absl::StatusOr<std::map<std::string, std::vector<std::pair<std::string, std::string>>>>
DumpMaps(absl::string_view interface, absl::string_view netns) {
  absl::StatusOr<std::unique_ptr<NetnsScope>> scope = NetnsScope::Enter(netns);
  if (!scope.ok()) return scope.status();
  unsigned index = if_nametoindex(std::string(interface).c_str());
  if (index == 0) return absl::NotFoundError(absl::StrCat("interface ", interface, " not found"));
  uint32_t id = FindAttached(static_cast<int>(index), NP_HOOK_FROM_ENDPOINT).id;
  if (id == 0) return absl::NotFoundError(absl::StrCat("no np filter on ", interface));
  Fd prog(bpf_prog_get_fd_by_id(id));
  if (prog.get() < 0) return Errno("prog fd", errno);
  absl::StatusOr<ProgInfo> info = GetProgInfo(prog.get());
  if (!info.ok()) return info.status();
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> out;
  for (uint32_t map_id : info->map_ids) {
    Fd fd(bpf_map_get_fd_by_id(map_id));
    if (fd.get() < 0) return Errno("map fd", errno);
    bpf_map_info mi{};
    uint32_t len = sizeof(mi);
    if (bpf_obj_get_info_by_fd(fd.get(), &mi, &len) != 0) return Errno("map info", errno);
    std::string name(mi.name, strnlen(mi.name, sizeof(mi.name)));
    // np_runs: counts of runs in progress, per CPU (np_abi.h), no state of the program.
    if (name == "np_ct" || name == "np_frag" || name == "np_runs" ||
        name.find('.') != std::string::npos) {
      continue;
    }
    std::vector<std::pair<std::string, std::string>>& entries = out[name];
    std::string key(mi.key_size, '\0'), next(mi.key_size, '\0'), value(mi.value_size, '\0');
    const void* previous = nullptr;
    while (bpf_map_get_next_key(fd.get(), previous, next.data()) == 0) {
      if (bpf_map_lookup_elem(fd.get(), next.data(), value.data()) == 0) {
        entries.emplace_back(next, value);
      }
      key = next;
      previous = key.data();
    }
    std::sort(entries.begin(), entries.end());
  }
  return out;
}

absl::Status RemoveFromInterfaces(const std::vector<std::string>& interfaces,
                                  absl::string_view netns) {
  absl::StatusOr<std::unique_ptr<NetnsScope>> scope = NetnsScope::Enter(netns);
  if (!scope.ok()) return scope.status();
  LibbpfLogScope log;
  absl::Status result = absl::OkStatus();
  for (const std::string& name : interfaces) {
    unsigned index = if_nametoindex(name.c_str());
    if (index == 0) continue;  // gone with its pod
    absl::Status s = DetachFilters(static_cast<int>(index), name);
    if (!s.ok() && result.ok()) result = s;
  }
  return result;
}

absl::Status AttachInPlace(LiveMaps& live, const std::string& interface,
                           const np_endpoint& endpoint) {
  absl::StatusOr<std::unique_ptr<NetnsScope>> scope = NetnsScope::Enter(live.netns);
  if (!scope.ok()) return absl::FailedPreconditionError(scope.status().message());
  LibbpfLogScope log;
  if (absl::Status s = StillRuns(live); !s.ok()) return s;
  const unsigned index = if_nametoindex(interface.c_str());
  if (index == 0) return absl::FailedPreconditionError(absl::StrCat("interface ", interface, " not found"));
  if (std::find(live.attached.begin(), live.attached.end(), static_cast<int>(index)) !=
      live.attached.end()) {
    return absl::FailedPreconditionError(absl::StrCat(interface, " is attached already"));
  }
  if (live.attached.size() + 1 > live.interfaces_capacity) {
    return absl::FailedPreconditionError("np_endpoints_if has no room for the interface");
  }
  // The entry first: a program that runs on an interface without one drops every packet
  // (np_abi.h), so the other order would cut the pod off for a moment.
  const uint32_t key = index;
  const np_endpoint kernel = KernelEndpoint(endpoint);
  if (absl::Status s = Update(live.interfaces, "np_endpoints_if", &key, &kernel); !s.ok()) {
    return s;
  }
  if (absl::StatusOr<bool> s = AttachFilters(static_cast<int>(index), interface,
                                              live.from_program, live.to_program);
      !s.ok()) {
    return s.status();
  }
  live.attached.push_back(static_cast<int>(index));
  return absl::OkStatus();
}

absl::Status DetachInPlace(LiveMaps& live, const std::string& interface) {
  absl::StatusOr<std::unique_ptr<NetnsScope>> scope = NetnsScope::Enter(live.netns);
  if (!scope.ok()) return absl::FailedPreconditionError(scope.status().message());
  LibbpfLogScope log;
  if (absl::Status s = StillRuns(live); !s.ok()) return s;
  const unsigned index = if_nametoindex(interface.c_str());
  auto it = std::find(live.attached.begin(), live.attached.end(), static_cast<int>(index));
  if (index == 0 || it == live.attached.end()) {
    return absl::FailedPreconditionError(absl::StrCat(interface, " is not attached"));
  }
  // Filters first, the entry after: no run on the interface is left to miss it.
  if (absl::Status s = DetachFilters(static_cast<int>(index), interface,
                                     /*after_tcx_look_for_tc=*/false);
      !s.ok()) {
    return s;
  }
  live.attached.erase(it);
  // The interface EditIdentities checks the generation on: one that still runs it.
  if (live.ifindex == static_cast<int>(index)) {
    live.ifindex = live.attached.empty() ? 0 : live.attached.front();
    if (live.ifindex != 0) live.tcx = FindAttached(live.ifindex, NP_HOOK_FROM_ENDPOINT).tcx;
  }
  const uint32_t key = index;
  return Delete(live.interfaces, "np_endpoints_if", &key);
}

}  // namespace np::backends::ebpf
