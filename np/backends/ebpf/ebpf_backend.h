// np/backends/ebpf/ebpf_backend.h — the eBPF datapath backend (`--backend ebpf`): a tc
// (clsact) program written for np (bpf/np_policy.c, bpf/np_dispatch.c), compiled by clang at
// build time and embedded, plus maps filled from the compiled IR by a libbpf loader.
//
//   std::unique_ptr<np::backends::Backend> b = np::backends::MakeEbpfBackend();
//   absl::StatusOr<std::string> maps = b->Render(ir);   // the maps' contents, readable
//   absl::Status s = b->Apply(ir, {{{"x/a", "veth-x-a"}}, "node"});  // attach, switch
//
// Apply attaches to the host-side veth of each pod in the Attachment (tc ingress decides
// what the pod sends, tc egress what it receives) and switches all of them to the new maps
// with one map update (loader.h explains the scheme). Needs CAP_BPF and CAP_NET_ADMIN.
//
// Capacity (Capacity(), `netpol compile --stats`): every per-generation map is created at
// its exact size; a hash map holds at most 2^27 entries (kernel/bpf/hashtab.c), LPM tries
// and arrays have no limit but memory. np's budget is 2,000,000 map entries in all (about
// 5 s of loading on the reference VM, bench/RESULTS.md); Render and Apply refuse past a
// limit or the budget (ResourceExhausted, with the numbers); BackendOptions::budgets raises
// it. The programs themselves are fixed, so the verifier's limits do not grow with the IR.
//
// Update edits the identity maps of the live generation in place when a pod event changes
// nothing else (maps.h PlanIdentityEdit: which events, and why no packet sees a mix of the
// two programs). A policy, namespace or tier event whose next program keeps the installed
// ids (np::AlignNumbering's output) and leaves the node's endpoints and every address's
// identity alone is edited in place too, without loading programs (maps.h PlanPolicyEdit):
// changed tables and peer sets are written under fresh numbers beside the live ones, and
// ONE np_config write (maps.h NextGeneration: its low bit flips and picks the bank of
// np_table_slots a run reads) moves every run from the old data to the new. Why that design and not
// per-endpoint flips through an intermediate table: an endpoint's table is named by its
// np_endpoints_if entry and by one np_endpoints_addr entry per address, and a run reads
// both sides of a flow, so flips need several writes per endpoint, an intersection table
// per changed table and grace periods between the phases; the bank switch needs one write,
// no grace period on the path (the old entries go at the start of the next edit, after
// one), and costs each packet one array lookup. Ids that carry over decide how much is
// written, never whether it is right: any pair CheckIr accepts is compared by id. Pairs
// whose endpoints or address ranges also change (a relabel into a new identity together
// with the policy that made it) load a new generation; otherwise Update loads a new
// generation as Apply does. UpdateDelta makes the same
// edit planned from a CompiledPolicyDelta alone (maps.h PlanIdentityEditFromDelta), in
// time proportional to the delta; what it cannot edit in place it loads as Update does.
// A policy delta (tables and peer sets by id, nothing else) is planned from the delta and
// the layout the backend keeps of the live policy maps (maps.h PlanPolicyEditFromDelta:
// the delta's tables and those naming a peer set whose members or `all` change are
// encoded, nothing else) and written as Update writes a policy edit; one that also carries
// endpoint, range or identity-pod edits, or does not fit, takes Backend::UpdateDelta's
// default (copy + ApplyDelta + Update), which decides as Update does.
// UpdateDelta also adds and deletes pods of this node in place (np_endpoints_addr entries,
// with ids the backend keeps stable: np_abi.h np_endpoint.id; a deleted pod's id is given
// again from the next edit on, so that months of pod churn stay within the generation's
// room: maps.h PolicyLayout lists every number and its bound) when their table exists. A
// pod added with its interface (in `attachment`, not in the one installed) gets the live
// generation's programs attached to it in place (its np_endpoints_if entry first), one
// deleted with it is detached (filters first, entry after). A pod whose interface stays
// attached, an interface that comes or goes without its pod, a deleted pod's interface
// already gone, a changed endpoint, shared addresses or full maps load a new generation.
// A pod delta that appends identities, reuses unused ones or retires them (a relabel into a
// label set no address carries yet) is in place too: the peer sets that admit a new
// identity gain it in their live numbers before any address carries it, those of a retired
// one lose it after the grace period that follows (maps.h PodPolicyEdit says why).
//
// Thread safety: as np/backends/backend.h.
#ifndef NP_BACKENDS_EBPF_EBPF_BACKEND_H_
#define NP_BACKENDS_EBPF_EBPF_BACKEND_H_

#include <memory>

#include "np/backends/backend.h"

namespace np::backends {

std::unique_ptr<Backend> MakeEbpfBackend(const BackendOptions& options = {});

// How the last Update of `backend` (made by MakeEbpfBackend) went, for tests and
// benchmarks: "in place: ..." (identity map entries edited, no new generation; "in place:
// policy, ..." for a policy edit) or
// "full: <why not in place>"; empty before any Update or for another backend.
std::string EbpfLastUpdate(const Backend& backend);
// How the pod deltas (UpdateDelta with endpoint, range or identity edits) of `backend` went,
// for tests, benchmarks and the agent's metrics; zeros for another backend.
namespace ebpf {
struct DeltaStats {
  uint64_t pod_in_place = 0;         // written into the live generation
  // of which appending, reusing or retiring identities (peer sets' members edited in place)
  uint64_t identities_in_place = 0;
  // of which switching endpoint states (a pod of this node relabelled or moved between
  // tables: maps.h IdentityEdit::state_changes), and of those banked with a policy edit
  // that changes tables in use (maps.h PodPolicyEdit::banked: a split or merge too)
  uint64_t states_in_place = 0, banked_in_place = 0;
  uint64_t full = 0;                 // loaded as a new generation instead
  uint64_t full_no_room = 0;         // of which because a map or the entry budget lacked room
};
// Explain's narration of `flow` on maps already built (maps.h MapModel of BuildMaps(ir)):
// what Backend::Explain returns for that IR, without building the maps again per flow.
class MapModel;
absl::StatusOr<std::string> ExplainFlow(const MapModel& model, const FlowQuery& flow);
}  // namespace ebpf
ebpf::DeltaStats EbpfDeltaStats(const Backend& backend);

// How many policy deltas (CompiledPolicyDelta with tables or peer sets) `backend`'s
// UpdateDelta wrote in place, planned from the delta alone ("in place: policy delta"; one
// that changes nothing the program reads is not counted), 0 for another backend.
uint64_t EbpfPolicyDeltasInPlace(const Backend& backend);

}  // namespace np::backends

#endif  // NP_BACKENDS_EBPF_EBPF_BACKEND_H_
