// np/backends/backend.h — what every datapath backend offers: it turns the compiled IR
// (proto/compiled.proto) into what the kernel runs, installs it atomically, explains which
// rule, set element or map key enforces a flow, and says what the program asks of the
// kernel against its limits before anything is loaded. Backends see only the IR.
//
//   std::unique_ptr<np::backends::Backend> nft = np::backends::MakeBackend("nft");
//   absl::StatusOr<ir::BackendCapacity> c = nft->Capacity(ir);    // rules, sets, ... vs limits
//   absl::StatusOr<std::string> text = nft->Render(ir);          // e.g. for `nft -f`
//   absl::Status s = nft->Apply(ir, attachment);                  // atomic replace
//   s = nft->Update(ir, next_ir, attachment);                     // only what changed
//   s = nft->UpdateDelta(next_ir, delta, attachment);            // a pod event's change
//
// Every backend checks the IR's invariants first (util.h CheckIr) and refuses, in Render and
// in Apply, a program the kernel would refuse or that is past np's load-time budgets
// (ResourceExhausted, naming each item with its numbers): what Render returns, the kernel
// loads.
//
// Thread safety: a Backend instance is not thread-safe; Render is a pure function.
#ifndef NP_BACKENDS_BACKEND_H_
#define NP_BACKENDS_BACKEND_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/compiled.pb.h"

namespace np::backends {

// Where the node's endpoints live, for backends that attach per interface (eBPF) or
// dispatch on interface names. Filled by whoever built the node's networking (a CNI, or
// the probe harness).
struct EndpointInterface {
  std::string pod;        // "namespace/name", as in ir::Endpoint
  std::string interface;  // host-side interface of the pod (veth peer), in the node's netns
};
struct Attachment {
  // The node's pod interfaces. One whose pod is not an endpoint of the IR being applied
  // (deleted, not yet known) gets no filter: its addresses are outside the cluster for
  // that IR, judged by address at the other end.
  std::vector<EndpointInterface> interfaces;
  // Name of the network namespace to work in (`ip netns` name); empty: the current one.
  std::string netns;
};

// One flow as a datapath sees it, for Explain.
struct FlowQuery {
  std::string source;       // an IP address
  std::string destination;  // an IP address
  uint8_t protocol = 6;     // IANA number
  uint16_t port = 0;
};

// How a backend is made. Budgets are sizes past which load time grows beyond what np accepts
// (the kernel has no hard limit there): each backend documents its own, by the item names
// of its Capacity report ("rules", "ipsets", "map_entries", ...). Raise one here (netpol:
// --budget NAME=N) to load a bigger program; hard limits cannot be raised.
struct BackendOptions {
  std::map<std::string, uint64_t> budgets;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // What the program for `ir` uses — rules, sets, set elements, map entries, identities —
  // against the kernel's hard limits and np's budgets (`fits` false when an item is over).
  // Errors: a malformed IR, a budget override with an unknown name.
  virtual absl::StatusOr<ir::BackendCapacity> Capacity(const ir::CompiledPolicy& ir) const = 0;
  // What the kernel will run, as text a person can read and the tool consumes
  // (nft -f input; ipset restore + iptables-restore input; the eBPF maps' contents).
  virtual absl::StatusOr<std::string> Render(const ir::CompiledPolicy& ir) const = 0;
  // Installs the program, replacing any previous one atomically: no instant where a
  // selected endpoint is open. Established connections keep flowing (conntrack).
  virtual absl::Status Apply(const ir::CompiledPolicy& ir, const Attachment& attachment) = 0;
  // Moves the kernel from `previous` — what the last successful Apply or Update of this
  // instance installed, with the same attachment — to `next`, with Apply's guarantees (no
  // instant where a flow both programs deny passes, or one both allow is dropped). A backend
  // that can changes only what differs (set elements, map entries) when that is safe, and
  // otherwise does a full Apply; the default always does. Callers that do not know what is
  // installed (a fresh start, a failed update) call Apply.
  virtual absl::Status Update(const ir::CompiledPolicy& previous, const ir::CompiledPolicy& next,
                              const Attachment& attachment) {
    (void)previous;
    return Apply(next, attachment);
  }
  // Update with the next program given as a change to `previous` (proto/compiled.proto
  // CompiledPolicyDelta; next = ApplyDelta(delta, previous)): a pod event's few ranges and
  // endpoints. Same guarantees as Update. A backend that can edits the kernel from the delta
  // alone in time proportional to it; the default builds the next program and calls Update.
  // An invalid delta is refused (InvalidArgument) before the kernel is touched.
  virtual absl::Status UpdateDelta(const ir::CompiledPolicy& previous,
                                   const ir::CompiledPolicyDelta& delta,
                                   const Attachment& attachment);
  // Removes everything this backend installed.
  virtual absl::Status Remove(const Attachment& attachment) = 0;
  // Which rule, set element or map key decides `flow`, and the verdict.
  virtual absl::StatusOr<std::string> Explain(const ir::CompiledPolicy& ir,
                                              const FlowQuery& flow) const = 0;
};

// "nft", "iptables", "ebpf"; null for an unknown name.
std::unique_ptr<Backend> MakeBackend(absl::string_view name, const BackendOptions& options = {});

}  // namespace np::backends

#endif  // NP_BACKENDS_BACKEND_H_
