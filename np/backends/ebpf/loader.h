// np/backends/ebpf/loader.h — puts the eBPF datapath into the kernel with libbpf: loads a
// generation (np_policy.o with its maps filled from MapContents), attaches its two programs
// to each endpoint's host-side veth (tcx, or tc clsact on kernels without it), replaces them
// with the next generation, and removes everything again. Also runs a loaded program on
// crafted packets (BPF_PROG_TEST_RUN) for tests and benchmarks.
//
// Attachment. np_from_ep goes on the veth's ingress (what the pod sends), np_to_ep on its
// egress. On Linux 6.6+ through tcx (BPF_PROG_ATTACH with BPF_TCX_INGRESS/EGRESS: no qdisc,
// no link; the device keeps the program until it is detached or the device goes, so the
// agent may exit and the pod stays filtered — fail closed), as the first program of the
// hook (BPF_F_BEFORE), so that a program of the CNI that ends the chain (TCX_PASS) or
// redirects the packet comes after np's verdict. np's program returns TCX_NEXT (-1, which
// is TC_ACT_UNSPEC) when it allows and TCX_DROP (TC_ACT_SHOT) when it drops: an allowed
// packet goes on to the CNI's own tcx programs and legacy tc filters, a dropped one ends
// there. A CNI program that later puts itself first runs before np; np cannot prevent that.
// When the kernel refuses tcx (EINVAL, EOPNOTSUPP, ENOTSUPP: before 6.6), or after
// SetAttachMode(kTcOnly), the programs are tc filters (np's handle and priority) on a
// clsact qdisc, with the same return codes (TC_ACT_UNSPEC: the next filter decides).
// Upgrade of an interface that carries np's legacy filter (an older np, or kTcOnly): the
// new program is attached through tcx first, then the legacy filter is deleted (its clsact
// qdisc stays: it may hold the CNI's filters). In between both run, tcx first: a packet
// passes only if the new generation allows it (TCX_NEXT) and then the old one does (the
// filter), so a flow both deny never passes, a flow both allow is never cut, and the
// interface is never without an np program. "Is np attached here?" (the next Apply finding
// the live generation, in-place edits checking that theirs still runs, DumpMaps, Remove)
// asks tcx first (BPF_PROG_QUERY, np's program by name), then np's tc filter (FindAttached).
//
// Generation scheme (fail closed). Apply builds a complete new generation next to the live
// one: a new load of np_policy.o with new maps sized for the IR, filled. Then, interface by
// interface, it replaces np's program on each hook with the new one: the kernel swaps it
// atomically (tcx BPF_F_REPLACE writes one pointer; a tc filter replace likewise), so each
// hook runs either the old or the new generation, both complete, and never nothing. Each
// hook decides every local side of a flow (np_policy.c), so while some interfaces run the
// old generation and others the new one, a packet passes only if both generations allow
// it: a flow that both deny never gets through. An old generation is freed by the kernel
// when its last filter is replaced. Conntrack (np_ct) and fragment (np_frag) maps are handed
// from each generation to the next, so established connections keep flowing.
// In-place edits (EditIdentities, EditPolicy) are the exception: for a pod event that
// changes only identity entries, or a policy event that changes only tables and peer sets,
// the process that installed a generation edits its maps instead of loading the next one
// (maps.h IdentityEdit and PolicyEdit say why that is safe).
// Nothing is pinned and no process has to stay alive: the hooks hold their programs, which
// hold their maps. The next Apply (from any process) finds the live generation's shared
// maps through the program on one of the interfaces (FindAttached).
//
// Thread safety: the functions are thread-compatible; Apply and Remove on one network
// namespace must not run concurrently. They switch the calling thread's network namespace
// for their duration.
#ifndef NP_BACKENDS_EBPF_LOADER_H_
#define NP_BACKENDS_EBPF_LOADER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/backends/ebpf/maps.h"

struct bpf_object;

namespace np::backends::ebpf {

// tc filter identity of np's programs on every interface (clsact ingress and egress), where
// tcx is not used.
inline constexpr uint32_t kTcHandle = 0x6e70;  // "np"
inline constexpr uint32_t kTcPriority = 1;

// How the next attachments of this process are made (see the top of this file). Process-wide
// (an atomic): tests set kTcOnly to make the legacy filters an upgrade starts from.
enum class AttachMode { kTcxWhenAvailable, kTcOnly };
void SetAttachMode(AttachMode mode);

// np's program on one hook (NP_HOOK_FROM_ENDPOINT: ingress, NP_HOOK_TO_ENDPOINT: egress) of
// interface `ifindex` of the calling thread's network namespace: on tcx (by its name), else
// np's tc filter; id 0 when there is none.
struct AttachedProgram {
  uint32_t id = 0;
  bool tcx = false;
};
AttachedProgram FindAttached(int ifindex, uint32_t hook);

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

  // np_from_ep (NP_HOOK_FROM_ENDPOINT) or np_to_ep (NP_HOOK_TO_ENDPOINT).
  int program_fd(uint32_t hook) const;
  int map_fd(absl::string_view name) const;  // -1 when there is no such map
  // Points np_endpoints_if[ifindex] at `endpoint` (tests: BPF_PROG_TEST_RUN always runs on
  // the loopback device, ifindex 1).
  absl::Status SetInterface(uint32_t ifindex, const np_endpoint& endpoint);

 private:
  explicit Generation(bpf_object* object) : object_(object) {}
  bpf_object* object_;
};

// BPF_PROG_TEST_RUN of `program_fd` on an Ethernet frame. The kernel runs it on the
// loopback device (ifindex 1) unless `ifindex` names another device.
struct TestRunResult {
  int verdict = 0;           // TC_ACT_UNSPEC (-1) = pass, TC_ACT_SHOT (2) = drop
  uint32_t duration_ns = 0;  // mean per run over `repeat`
};
absl::StatusOr<TestRunResult> TestRun(int program_fd, absl::string_view frame,
                                      uint32_t ifindex = 1, uint32_t repeat = 1);

// An interface to enforce an endpoint on.
struct InterfaceEndpoint {
  std::string interface;  // host-side veth, in the target network namespace
  uint32_t endpoint = 0;  // id in MapContents, or kOutside
  // The interface's pod is not an endpoint of the IR: np_endpoints_if marks it
  // NP_ENDPOINT_OUTSIDE (np_abi.h). Such an interface that no longer exists is skipped.
  static constexpr uint32_t kOutside = 0xffffffffu;
};

// The maps of an installed generation that an in-place edit writes, held open by the
// process that installed it (the kernel keeps them while a filter runs the programs; these
// descriptors only let this process reach them without a search).
class LiveMaps {
 public:
  LiveMaps() = default;
  ~LiveMaps();
  LiveMaps(const LiveMaps&) = delete;
  LiveMaps& operator=(const LiveMaps&) = delete;

  // hosts: np_ident_hosts (IPv4 host keys), hosts6: np_ident_hosts6 (IPv6); endpoints:
  // np_endpoints_addr (pods of this node added or deleted in place).
  int config = -1, hosts = -1, hosts6 = -1, ident4 = -1, ident6 = -1, endpoints = -1;
  // np_endpoints_if and the generation's two programs: interfaces attached in place.
  int interfaces = -1, from_program = -1, to_program = -1;
  // np_endpoint_states: endpoints' tables, selection and identities (maps.h IdentityEdit).
  int states = -1;
  // np_runs (np_abi.h): the runs in progress by generation, what the next edit waits for.
  int runs = -1;
  uint32_t states_capacity = 0;  // its max_entries: endpoint ids below it
  // The policy maps: in-place policy edits (EditPolicy).
  int table_slots = -1, tables = -1, ports = -1, tiers = -1, tier_lists = -1, members = -1;
  // The last EditPolicy's step 3 (maps.h PolicyEdit), written by the next in-place edit of
  // either kind once the grace period it waits for is over: before any later bump, so
  // that both banks of np_table_slots are equal whenever a bump flips them.
  std::optional<PolicyCleanup> pending_cleanup;
  uint32_t interfaces_capacity = 0;  // np_endpoints_if's max_entries
  std::vector<int> attached;         // ifindexes whose filters run the generation
  uint32_t hosts_capacity = 0, hosts6_capacity = 0, ident4_capacity = 0,
           ident6_capacity = 0, endpoints_capacity = 0;  // max_entries
  size_t hosts_entries = 0, hosts6_entries = 0, ident4_entries = 0,
         ident6_entries = 0, endpoints_entries = 0;  // held now
  np_config config_value{};  // np_config now (its generation included)
  uint32_t generation = 0;  // np_config.generation now
  uint32_t program_id = 0;  // the generation's np_from_ep
  int ifindex = 0;          // an interface whose ingress runs it (0: none attached)
  bool tcx = false;         // through tcx there (else a tc filter)
  std::string netns;
  int netns_fd = -1;        // of `netns` (-1 when ""): tcx checks enter it

  // A NETLINK_ROUTE socket of `netns` (-1: none yet), through which each edit checks that
  // the generation still runs, and the sequence number of its last question.
  int netlink = -1;
  uint32_t netlink_seq = 0;
  // What the next edit waits for before writing (loader.cc EditIdentities says why), and
  // records how long it waited: the end of the runs of the generation before the last
  // edit's bump, by its parity (np_runs; -1: none), or the grace period the last edit
  // started after its writes (0: none) where that count cannot be used.
  int pending_runs = -1;
  uint64_t pending_grace_period = 0;
  double last_wait_ms = 0;
};

// What one Apply did, for people and tests.
struct ApplyReport {
  uint32_t generation = 0;       // NextGeneration(the live one's) (maps.h), 1 on a fresh node
  bool conntrack_reused = false; // np_ct/np_frag came from the live generation
  int interfaces = 0;            // interfaces switched to the new generation
  bool tcx = false;              // attached through tcx (else tc filters)
  std::shared_ptr<LiveMaps> live;  // for EditIdentities
};

// Installs `maps` as the next generation on `interfaces` in network namespace `netns` ("" =
// the current one), as described at the top of this file.
absl::StatusOr<ApplyReport> ApplyGeneration(const MapContents& maps,
                                            const std::vector<InterfaceEndpoint>& interfaces,
                                            absl::string_view netns);

// Edits the identity maps (and np_endpoints_addr) of the generation `live` in place, as
// `edit` plans it (maps.h PlanIdentityEdit, which says why this is safe): endpoints added,
// the identity writes in the plan's order, endpoints deleted, then np_config.generation =
// NextGeneration of it (maps.h). The next edit first waits until no program run that
// started before this bump is left: on x86 by reading the program's count of runs by generation
// (np_abi.h np_runs; one map read, no wait unless such a run is still deciding a packet),
// elsewhere by a grace period (membarrier(MEMBARRIER_CMD_GLOBAL)) run in the background
// after each edit, which only events closer together than 10-20 ms wait for (loader.cc
// says why that is enough).
// FailedPrecondition, with nothing written, when the
// maps lack the room (max_entries), `live` is no longer what runs on its interface, or the
// kernel has no membarrier; any other error may leave the edit half done (every step is a
// state whose verdicts are the old program's or the new one's): load a new generation.
// `policy_first` (maps.h PodPolicyEdit): a policy edit's step 1 written before the identity
// writes, its cleanup left pending after the bump, as EditPolicy leaves it.
absl::Status EditIdentities(LiveMaps& live, const IdentityEdit& edit,
                            const PolicyEdit* policy_first = nullptr);

// Writes `edit` (maps.h PlanPolicyEdit, which says why it is safe) into the generation
// `live`: after the previous edit's grace period and its pending cleanup, step 1, then
// np_config.generation = NextGeneration of it (which must be the plan's next_generation);
// step 3 is left pending for the next in-place edit (a grace period must pass first:
// started now, run meanwhile, as EditIdentities does). FailedPrecondition, with nothing
// written, when `live` no longer runs or the kernel has no membarrier; after any other error load a new
// generation (every state on the way has the old program's verdicts until the bump).
absl::Status EditPolicy(LiveMaps& live, const PolicyEdit& edit, uint32_t next_generation);

// Attaches the live generation to `interface` (a pod of this node added in place, with
// its veth): np_endpoints_if[its ifindex] = `endpoint` first, then the generation's
// programs on its ingress and egress, as ApplyGeneration attaches them — no program
// is loaded. FailedPrecondition, with nothing written, when `live` no longer runs, the
// interface is missing or attached already, or np_endpoints_if has no room; after any
// other error load a new generation.
absl::Status AttachInPlace(LiveMaps& live, const std::string& interface,
                           const np_endpoint& endpoint);
// The reverse, in the reverse order (fail closed): np's programs off `interface`, then its
// np_endpoints_if entry deleted.
absl::Status DetachInPlace(LiveMaps& live, const std::string& interface);

// Every entry of each map of the generation running on `interface` (ingress), as raw
// key and value bytes sorted by key, by map name; np_ct and np_frag are left out. For
// tests: what the kernel holds, to compare with what another Apply writes.
absl::StatusOr<std::map<std::string, std::vector<std::pair<std::string, std::string>>>>
DumpMaps(absl::string_view interface, absl::string_view netns);

// Detaches np's programs from `interfaces`: from tcx, and np's legacy tc filters with their
// clsact qdiscs; interfaces that no longer exist are skipped. When the last hook lets go,
// the kernel frees the programs and every map, conntrack included.
absl::Status RemoveFromInterfaces(const std::vector<std::string>& interfaces,
                                  absl::string_view netns);

}  // namespace np::backends::ebpf

#endif  // NP_BACKENDS_EBPF_LOADER_H_
