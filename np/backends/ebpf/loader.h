// np/backends/ebpf/loader.h — puts the eBPF datapath into the kernel with libbpf: loads a
// generation (np_policy.o with maps filled from MapContents), the per-interface dispatchers
// (np_dispatch.o), attaches them with tc (clsact), switches generations atomically and
// removes everything again. Also runs a loaded program on crafted packets
// (BPF_PROG_TEST_RUN) for tests and benchmarks.
//
// Generation scheme (fail closed). The programs attached to interfaces never change: each
// tail calls slot 0 of one program array, np_gen_progs. Apply builds a complete new
// generation next to the live one — a new np_policy program with new maps sized for the
// IR, filled — attaches the dispatchers to any interface that lacks them (those drop until
// the switch: the live generation has no entry for them), and then replaces np_gen_progs[0]
// with one map update. Every packet is decided by exactly one generation; the old one is
// freed by the kernel when the last packet using it finishes. Conntrack (np_ct) and
// fragment (np_frag) maps are handed from each generation to the next. Nothing is pinned:
// the next Apply (from any process) finds the dispatcher from the filter attached to an
// interface (bpf_tc_query), its program array, and through it the live generation's
// conntrack maps.
//
// Thread safety: the functions are thread-compatible; Apply and Remove on one network
// namespace must not run concurrently. They switch the calling thread's network namespace
// for their duration.
#ifndef NP_BACKENDS_EBPF_LOADER_H_
#define NP_BACKENDS_EBPF_LOADER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/backends/ebpf/maps.h"

struct bpf_object;

namespace np::backends::ebpf {

// tc filter identity of the dispatchers on every interface (clsact ingress and egress).
inline constexpr uint32_t kTcHandle = 0x6e70;  // "np"
inline constexpr uint32_t kTcPriority = 1;

// One loaded np_policy program with its maps, filled; not attached.
class Generation {
 public:
  // `interfaces`: (ifindex, endpoint id) for np_endpoints_if. `ct_fd`/`frag_fd`: the
  // conntrack maps to share, or -1 for fresh ones.
  static absl::StatusOr<std::unique_ptr<Generation>> Load(
      const MapContents& maps, const std::vector<std::pair<uint32_t, uint32_t>>& interfaces,
      int ct_fd = -1, int frag_fd = -1);
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  int program_fd() const;
  int map_fd(absl::string_view name) const;  // -1 when there is no such map
  // Points np_endpoints_if[ifindex] at `endpoint` (tests: BPF_PROG_TEST_RUN always runs on
  // the loopback device, ifindex 1).
  absl::Status SetInterface(uint32_t ifindex, const np_endpoint& endpoint);
  // Empties np_ct and np_frag.
  absl::Status ClearConntrack();

 private:
  explicit Generation(bpf_object* object) : object_(object) {}
  bpf_object* object_;
};

// The dispatcher programs and their program array (loaded fresh or found attached).
class Dispatcher {
 public:
  static absl::StatusOr<std::unique_ptr<Dispatcher>> Load();
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  int from_fd() const { return from_fd_; }
  int to_fd() const { return to_fd_; }
  int progs_fd() const { return progs_fd_; }
  // Makes `generation` the live one: one update of np_gen_progs[0].
  absl::Status Switch(const Generation& generation);

 private:
  friend class DispatcherFinder;
  Dispatcher(int from_fd, int to_fd, int progs_fd)
      : from_fd_(from_fd), to_fd_(to_fd), progs_fd_(progs_fd) {}
  int from_fd_, to_fd_, progs_fd_;
};

// BPF_PROG_TEST_RUN of `program_fd` on an Ethernet frame, with skb->cb[0] = hook.
struct TestRunResult {
  int verdict = 0;           // TC_ACT_UNSPEC (-1) = pass, TC_ACT_SHOT (2) = drop
  uint32_t duration_ns = 0;  // mean per run over `repeat`
};
absl::StatusOr<TestRunResult> TestRun(int program_fd, absl::string_view frame, uint32_t hook,
                                      uint32_t ifindex = 1, uint32_t repeat = 1);

// An interface to enforce an endpoint on.
struct InterfaceEndpoint {
  std::string interface;  // host-side veth, in the target network namespace
  uint32_t endpoint = 0;  // id in MapContents
};

// What one Apply did, for people and tests.
struct ApplyReport {
  uint32_t generation = 0;
  bool dispatcher_reused = false;
  int interfaces_attached = 0;  // interfaces that got the dispatchers in this Apply
};

// Installs `maps` as the next generation on `interfaces` in network namespace `netns` ("" =
// the current one), as described at the top of this file.
absl::StatusOr<ApplyReport> ApplyGeneration(const MapContents& maps,
                                            const std::vector<InterfaceEndpoint>& interfaces,
                                            absl::string_view netns);

// Detaches the dispatchers from `interfaces` and removes their clsact qdiscs; interfaces that
// no longer exist are skipped. When the last attachment goes, the kernel frees the program
// array, every generation and the conntrack maps.
absl::Status RemoveFromInterfaces(const std::vector<std::string>& interfaces,
                                  absl::string_view netns);

}  // namespace np::backends::ebpf

#endif  // NP_BACKENDS_EBPF_LOADER_H_
