// What the agent benchmarks (bench/agent_latency_bench.cc, bench/agent_churn.cc) share: a
// node of a synthetic cluster (bench/cluster_generator.h) with its own network namespace and
// an np::agent::Agent over a real backend, the watch events they feed it (JSON, as the
// Kubernetes watch streams them), and a backend wrapper that times what the agent asks of
// the backend, so a figure can say where an event's time went (engine apply, lowering,
// backend).
//
//   absl::StatusOr<std::unique_ptr<np::bench::AgentNode>> node =
//       np::bench::AgentNode::Create("nft", np::bench::NodeShape::kLarge, {});
//   (*node)->agent().HandleEvent(np::bench::PodEvent("ADDED", pod), absl::Now());
//   absl::Status s = (*node)->agent().Sync();
//   double backend_s = (*node)->backend().last_call_s();
//   // ~AgentNode deletes the namespace (and the veths in it).
//
// The agent is driven as `netpol agent` drives it (HandleEvent, Sync), through Backend::
// Update after the first sync: whatever the backends do there is what gets measured.
//
// Thread safety: none; one thread drives an AgentNode.
#ifndef BENCH_AGENT_WORKLOAD_H_
#define BENCH_AGENT_WORKLOAD_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/cluster_generator.h"
#include "np/agent/agent.h"
#include "np/agent/metrics.h"
#include "np/backends/backend.h"
#include "np/cluster.h"

namespace np::bench {

// The two node sizes of issue 13: a node running 110 pods of a small cluster (55 namespaces
// of 20 pods over 10 nodes: 1,105 pods, 111 on node-0, 220 policies), and a node running
// 1,000 pods of the standard 10k-pod cluster (10,005 pods over 10 nodes: 1,001 on node-0,
// 2,000 policies).
enum class NodeShape { kSmall, kLarge };
const char* ShapeName(NodeShape shape);  // "110/1k", "1000/10k"
SyntheticOptions OptionsFor(NodeShape shape);
inline constexpr char kNode[] = "node-0";

// Forwards to a real backend and remembers how long its last Apply/Update (and Capacity)
// took, and which of the two the agent called.
class TimedBackend : public backends::Backend {
 public:
  explicit TimedBackend(std::unique_ptr<backends::Backend> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  absl::StatusOr<ir::BackendCapacity> Capacity(const ir::CompiledPolicy& ir) const override;
  absl::StatusOr<std::string> Render(const ir::CompiledPolicy& ir) const override {
    return inner_->Render(ir);
  }
  absl::Status Apply(const ir::CompiledPolicy& ir, const backends::Attachment& a) override;
  absl::Status Update(const ir::CompiledPolicy& previous, const ir::CompiledPolicy& next,
                      const backends::Attachment& a) override;
  // Forwarded so that the agent's pod-event deltas reach the backend's own delta path (the
  // default would rebuild next and time the copy path instead).
  absl::Status UpdateDelta(const ir::CompiledPolicy& previous, const ir::CompiledPolicyDelta& delta,
                           const backends::Attachment& a) override;
  absl::Status Remove(const backends::Attachment& a) override { return inner_->Remove(a); }
  absl::StatusOr<std::string> Explain(const ir::CompiledPolicy& ir,
                                      const backends::FlowQuery& flow) const override {
    return inner_->Explain(ir, flow);
  }

  const backends::Backend& inner() const { return *inner_; }  // e.g. IptablesLastUpdate
  double last_call_s() const { return last_call_s_; }        // the last Apply or Update
  absl::Time last_done() const { return last_done_; }        // when it returned
  bool last_was_update() const { return last_was_update_; }  // Update/UpdateDelta (else Apply)
  int64_t delta_updates() const { return delta_updates_; }
  double last_capacity_s() const { return last_capacity_s_; }
  // The calling thread's CPU seconds (CLOCK_THREAD_CPUTIME_ID) when the last Apply/Update
  // began: splits a sync's CPU into before and after the backend (agent_latency_bench --probe).
  double call_start_cpu_s() const { return call_start_cpu_s_; }
  int64_t updates() const { return updates_; }
  int64_t applies() const { return applies_; }

 private:
  std::chrono::steady_clock::time_point CallStart();  // also records call_start_cpu_s_

  std::unique_ptr<backends::Backend> inner_;
  double last_call_s_ = 0;
  double call_start_cpu_s_ = 0;
  absl::Time last_done_;
  bool last_was_update_ = false;
  mutable double last_capacity_s_ = 0;
  int64_t updates_ = 0, applies_ = 0, delta_updates_ = 0;
};

struct AgentNodeOptions {
  // Pods (beyond the node's own) that may become local and need an interface (eBPF only):
  // "namespace/name". Their veths are made up front: the agent's attachment is fixed.
  std::vector<std::string> extra_local_pods;
  absl::Duration min_interval = absl::Milliseconds(20);
  // Appended to the namespace name: "npagentbench-<pid>-<n>" ($NP_BENCH_NETNS_PREFIX first).
  std::string netns_tag;
};

// One node: the cluster's objects, the engine built for node-0, a network namespace (with
// one veth per local pod for eBPF, which attaches per interface; nft and iptables get none),
// and an agent that has reconciled (the program is installed).
class AgentNode {
 public:
  static absl::StatusOr<std::unique_ptr<AgentNode>> Create(const std::string& backend,
                                                           NodeShape shape,
                                                           const AgentNodeOptions& options);
  ~AgentNode();
  AgentNode(const AgentNode&) = delete;
  AgentNode& operator=(const AgentNode&) = delete;

  agent::Agent& agent() { return *agent_; }
  TimedBackend& backend() { return *backend_; }
  agent::AgentMetrics& metrics() { return metrics_; }
  const ClusterObjects& objects() const { return objects_; }  // as generated
  const std::string& netns() const { return netns_; }
  int local_pods() const { return local_pods_; }
  double build_s() const { return build_s_; }          // engine build
  double reconcile_s() const { return reconcile_s_; }  // the first full install

 private:
  AgentNode() = default;
  ClusterObjects objects_;
  std::string netns_;
  bool netns_made_ = false;
  agent::AgentMetrics metrics_;
  std::unique_ptr<std::ostream> null_out_;
  std::unique_ptr<agent::JsonLog> log_;
  TimedBackend* backend_ = nullptr;  // owned by agent_
  std::unique_ptr<agent::Agent> agent_;
  int local_pods_ = 0;
  double build_s_ = 0, reconcile_s_ = 0;
};

// JSON string literal of a label, name or value (the generator's are plain; escape anyway).
std::string Quote(const std::string& s);
// Watch-event texts (one line each), objects naming their kind.
std::string PodJson(const k8s::Pod& pod);
std::string PodEvent(const std::string& type, const k8s::Pod& pod);  // ADDED, MODIFIED
std::string PodDeleteEvent(const std::string& ns, const std::string& name);
// An allow policy: pods of `app` in `ns` admit the monitoring namespace on TCP `port`.
std::string PolicyEvent(const std::string& type, const std::string& ns, const std::string& name,
                        const std::string& app, int port);
std::string PolicyDeleteEvent(const std::string& ns, const std::string& name);

// `pod` renamed to `name`, on `node`, with the addresses of churn serial `serial`
// (10.250.0.0/16 and fd00:fa::/64: outside the generator's ranges).
k8s::Pod ClonePod(const k8s::Pod& pod, const std::string& name, const std::string& node,
                  int serial);
std::string PodKey(const k8s::Pod& pod);  // "namespace/name"

// Resident set size now and its peak (VmHWM), bytes.
int64_t RssBytes();
int64_t PeakRssBytes();

// q in [0, 1] of `values` (nearest rank); -1 when empty.
double Quantile(std::vector<double> values, double q);

}  // namespace np::bench

#endif  // BENCH_AGENT_WORKLOAD_H_
