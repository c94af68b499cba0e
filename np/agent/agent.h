// np/agent/agent.h — one node's policy agent: watch events in, the node's kernel program out.
// It keeps a LiveEngine, applies each event to it (a bad one is logged, counted and leaves
// the last good state), and at most once per `min_interval` lowers the current snapshot for
// its node and installs it through a datapath backend. `netpol agent` is this plus flags.
//
//   np::agent::AgentOptions options;
//   options.attachment.netns = "node-1";
//   np::agent::Agent agent(engine, np::backends::MakeBackend("nft"), options, &metrics, &log);
//   absl::Status s = agent.Reconcile();          // replaces whatever np program is there
//   for (...) agent.HandleEvent(text, absl::Now());
//   if (agent.SyncDue(absl::Now())) s = agent.Sync();
//   // or all of it: np::agent::RunLoop(agent, fd, [] { return stop_requested; },
//   //                                  /*exit_at_end=*/false);
//
// After that, each sync hands the backend what it installed last and the new program
// (Backend::Update), the new one numbered onto the old (np/lower_align.h: identities, peer
// sets and tables that correspond keep their ids), so that a backend can change only what
// differs. When only pods changed
// since the last sync, the interfaces stay the same and np/lower_delta.h can express the
// change, the sync lowers nothing whole: it hands the backend the delta
// (Backend::UpdateDelta) and applies it to the installed program in place (issue 13).
// Likewise when only policies, tier policies, namespaces or nodes changed and every address
// keeps its identity (PodDeltaLowering::LowerPolicyChange: the changed tables and peer sets,
// and endpoints moving between tables). Pods and other objects changed in one sync: whole. The
// index that takes (PodDeltaLowering::Index, O(program)) is rebuilt after each whole sync,
// once the kernel has the program: off the latency path, on the agent's thread.
// Reconcile on start *replaces* (Backend::Apply is an atomic full replace): np cannot trust
// a program it finds (another version, a crashed agent's state, hand edits), and replacing it
// atomically costs no window in which a selected pod is open, so adopting would save one
// load at the price of trusting unverified state.
// Coalescing: events arriving within `min_interval` of the last kernel update are all in the
// engine at once and reach the kernel together in the next update; none is dropped.
// Latency is counted per event, from the moment it was read to the backend's Apply returning.
//
// Thread safety: an Agent is driven by one thread; the metrics it writes are thread-safe.
#ifndef NP_AGENT_AGENT_H_
#define NP_AGENT_AGENT_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "np/agent/metrics.h"
#include "np/backends/backend.h"
#include "np/engine.h"
#include "np/lower_align.h"
#include "np/lower_delta.h"

namespace np::agent {

struct AgentOptions {
  // Kind of event objects that name none ("" : each must name its kind).
  std::string default_kind;
  absl::Duration min_interval = absl::Milliseconds(20);
  // How often the program-size gauges (np_agent_program_items: rules, set elements, map
  // entries) are recounted after a sync: counting a 1,000-pod program costs 20-200 ms
  // (bench/RESULTS.md, issue 13), which under churn would hold up the next events.
  absl::Duration capacity_interval = absl::Seconds(5);
  // Where the backend installs the program (a netns, and each pod's host interface).
  backends::Attachment attachment;
};

class Agent {
 public:
  // `initial`: the engine built from the initial objects (options.node_name is the node).
  Agent(std::shared_ptr<const Engine> initial, std::unique_ptr<backends::Backend> backend,
        AgentOptions options, AgentMetrics* metrics, JsonLog* log);

  // Installs the current state, replacing any np program there (see above).
  absl::Status Reconcile();

  // Applies one event's text to the engine (read at `received`). Malformed or invalid
  // events are logged with the object and field path and counted; the state stays. An event
  // that changes nothing the engine reads (a pod's status heartbeat: Engine::Apply keeps the
  // snapshot) is counted and logged as such, and nothing waits for the kernel.
  void HandleEvent(absl::string_view text, absl::Time received);

  // Whether events wait for the kernel and the interval since the last update has passed.
  bool SyncDue(absl::Time now) const;
  // How long until SyncDue may become true (InfiniteDuration when nothing waits).
  absl::Duration UntilSyncDue(absl::Time now) const;
  // Lowers the current snapshot and installs it. On error the kernel keeps its last
  // program and the events stay pending (retried after the interval, at least 1 s later).
  absl::Status Sync();

  // Uninstalls the program (--remove).
  absl::Status Remove();

  int pending_events() const { return static_cast<int>(pending_.size()); }
  // How many syncs went through Backend::UpdateDelta (for tests and benchmarks), and how
  // many of those carried policy-side events (LowerPolicyChange) rather than pod events.
  int64_t delta_syncs() const { return delta_syncs_; }
  int64_t policy_delta_syncs() const { return policy_delta_syncs_; }
  // How many whole syncs were numbered onto the installed program (np/lower_align.h), and
  // what the last successful sync's alignment changed (none: a delta, or nothing installed).
  int64_t aligned_syncs() const { return aligned_syncs_; }
  const std::optional<AlignStats>& last_alignment() const { return last_alignment_; }
  // Why the last successful sync lowered whole ("" when it sent a delta).
  const std::string& last_whole_reason() const { return last_whole_reason_; }
  std::shared_ptr<const Engine> current() const { return live_.Current(); }

 private:
  // Brings installed_attachment_ (and attached_) to the interfaces to attach once `delta`
  // is installed (installed_ with it applied): only the changed pods' interfaces can come
  // or go, so the others are not looked at (a 1,000-pod node's interfaces, compared as
  // strings at every event, were a fifth of a pod event's lowering on eBPF).
  void EditAttachment(const ir::CompiledPolicyDelta& delta);
  // Whether the pod "namespace/name" is an endpoint once `delta` is installed.
  bool EndpointAfter(const std::string& key, const ir::CompiledPolicyDelta& delta) const;
  // installed_attachment_ as the interfaces of options_.attachment whose pods are the
  // program's endpoints (a whole sync).
  void SetAttachment(const ir::CompiledPolicy& program);

  LiveEngine live_;
  std::unique_ptr<backends::Backend> backend_;
  AgentOptions options_;
  AgentMetrics* metrics_;
  JsonLog* log_;
  std::vector<absl::Time> pending_;  // when each event not yet in the kernel was read
  absl::Time last_sync_start_ = absl::InfinitePast();
  absl::Time retry_after_ = absl::InfinitePast();
  std::string last_sync_error_;  // logged once, not on every retry
  int64_t events_ = 0;
  // What the last successful Sync installed (none after Reconcile starts or a failed sync):
  // the `previous` of the next Backend::Update.
  std::optional<ir::CompiledPolicy> installed_;
  absl::Time last_capacity_ = absl::InfinitePast();
  std::map<std::string, uint64_t> capacity_items_;
  // The interfaces the installed program is attached to (the next Update's attachment):
  // those of options_.attachment whose pods are endpoints, in its order; attached_ says
  // which, by position there. After a failed sync they may be ahead of the kernel: the next
  // sync installs whole (installed_ is none), from the program's endpoints.
  backends::Attachment installed_attachment_;
  std::vector<bool> attached_;
  // options_.attachment's interfaces by pod key (positions there).
  absl::flat_hash_map<std::string, std::vector<uint32_t>> interfaces_of_pod_;
  // Since the last successful sync: the keys of the pods that applied events changed, and
  // whether anything else changed (then the next sync lowers whole).
  std::vector<std::string> changed_pods_;
  bool other_changes_ = false;
  // The index of `installed_` and the snapshot it was lowered from, for pod deltas; none
  // when `installed_` is none.
  std::optional<PodDeltaLowering> delta_index_;
  int64_t delta_syncs_ = 0;
  int64_t policy_delta_syncs_ = 0;
  int64_t aligned_syncs_ = 0;
  std::optional<AlignStats> last_alignment_;
  std::string last_whole_reason_;
};

// Reads events from `fd` until `stop()` says so (it is polled at least every 100 ms, and
// after each read), feeding them to `agent` and syncing when due. At the end of input: the
// pending events are synced and, if `exit_at_end` is false, the loop keeps syncing nothing
// until stop() (the rules stay, the metrics keep being served). Returns an error only when
// reading fails; stopping leaves the kernel program as it is (fail closed).
absl::Status RunLoop(Agent& agent, int fd, const std::function<bool()>& stop, bool exit_at_end);

}  // namespace np::agent

#endif  // NP_AGENT_AGENT_H_
