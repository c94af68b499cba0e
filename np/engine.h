// np/engine.h — the indexed verdict engine: compile a cluster once into an immutable
// snapshot, then answer "is this flow allowed?" in nanoseconds, from many threads, without
// locks or allocation; explain any verdict; apply changes incrementally.
//
//   absl::StatusOr<std::shared_ptr<const np::Engine>> engine = np::Engine::Build(cluster);
//   np::PodId a = *(*engine)->FindPod("x/a"), b = *(*engine)->FindPod("y/b");
//   bool ok = (*engine)->Allowed(a, b, np::Protocol::kTCP, 80);          // by pod
//   bool ok2 = (*engine)->AllowedPacket(src_ip, dst_ip, np::Protocol::kTCP, 80);  // by packet
//   np::Verdict why = (*engine)->Explain(np::Endpoint::Pod(a), np::Endpoint::Pod(b),
//                                        np::Protocol::kTCP, 80);
//
//   // An agent keeps the current snapshot in a LiveEngine and applies watch events:
//   np::LiveEngine live(*engine);
//   absl::Status s = live.Apply({np::Change{np::Change::Op::kUpsert, new_pod}});
//   np::LiveEngine::Reader reader(live);          // one per reader thread
//   bool allowed = reader.Pin().Allowed(a, b, np::Protocol::kTCP, 80);
//
// Every answer equals np::reference::Evaluate on the same cluster (tests check it on the
// conformance data and on randomized clusters).
//
// How it works: pods are grouped into *target
// classes* (same set of selecting policies and named ports: same tables) and *peer
// classes* (matched by the same rule peers: indistinguishable as a source or destination);
// addresses outside the cluster fall into peer classes by the ipBlocks that contain them.
// Each target class has, per direction and protocol, sorted port intervals mapped to a
// bitset of allowed peer classes. A verdict is two array reads, two short interval scans
// and two bit tests. The policy tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
// ClusterNetworkPolicy) are folded in at compile time: a target class is also keyed by the
// tier policies selecting it, and its intervals hold the outcome of the whole order (Admin
// tier, NetworkPolicy, Baseline tier, default), so a verdict reads the same as without
// tiers (np/internal/engine_state.h explains how). Apply() takes every kind a Change holds:
// Namespaces, Pods, NetworkPolicies, the three tier kinds and Nodes.
//
// Thread safety: an Engine is immutable; every const method may be called concurrently
// from any number of threads. Apply() returns a new snapshot and leaves this one intact
// (or returns this one when the changes change nothing it answers, see Apply).
// LiveEngine: any number of Readers, one writer at a time (Apply serializes writers);
// readers never wait for the writer.
#ifndef NP_ENGINE_H_
#define NP_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "np/cluster.h"
#include "np/types.h"
#include "np/verdict.h"

namespace np {

namespace internal {
struct EngineState;
struct EngineAccess;
}  // namespace internal

struct EngineOptions {
  EvaluationOptions evaluation;
  // Node-scoped compile: when set, only pods with this spec.nodeName are targets (their
  // ingress and egress are enforced); all pods of the cluster still count as peers. Verdict
  // sides whose pod is on another node are "not applicable" (allowed, explained as such).
  std::string node_name;
  // Memory for the precomputed verdict bits (every side's answer per port class and peer
  // class, painted by Build): target classes with the most pods get them first, the others
  // (and every class a later Apply rebuilds) answer by the exact path. 0: no bits.
  size_t verdict_bits_bytes = size_t{32} << 20;
};

// A pod of an engine snapshot. Stable across incremental updates for as long as the pod
// exists (a deleted pod's id is not reused).
using PodId = uint32_t;

struct PacketQuery {
  IpAddress source;
  IpAddress destination;
  Protocol protocol = Protocol::kTCP;
  uint16_t port = 0;
};

struct PodQuery {
  PodId source = 0;
  PodId destination = 0;
  Protocol protocol = Protocol::kTCP;
  uint16_t port = 0;
};

// (enable_shared_from_this: Apply returns the snapshot itself when nothing changes; every
// Engine is created owned by a shared_ptr, by Build or Apply.)
class Engine : public std::enable_shared_from_this<Engine> {
 public:
  // Compiles a validated cluster.
  static absl::StatusOr<std::shared_ptr<const Engine>> Build(
      const Cluster& cluster, const EngineOptions& options = EngineOptions());

  // A new snapshot with `changes` applied in order (upsert by kind/namespace/name, delete).
  // Each changed object is validated as in Cluster::Create; on any error nothing is applied
  // and the error lists every problem (also in `diagnostics`). The cost is proportional to
  // what the change touches, not to the cluster — except for a change to a tier policy or
  // a Node: the tiers are recompiled (a handful of objects) and every identity's tier list
  // and every table holding a tier policy redone, about 10 ms at 10k pods
  // (bench/engine_bench.cc BM_UpdateTierPolicyAdd; a fresh Build is 50 times that). Pod ids
  // stay; verdicts equal a fresh Build of the resulting objects.
  // A batch of pod upserts that change nothing an answer reads — each pod held, with the
  // same labels, addresses, node and named ports, still networked (a kubelet status
  // heartbeat: conditions, resource version, annotations) — returns this snapshot itself,
  // at the cost of reading and validating the objects: no state is copied. Its objects
  // (ToCluster) then keep the status they had.
  absl::StatusOr<std::shared_ptr<const Engine>> Apply(
      absl::Span<const Change> changes, std::vector<Diagnostic>* diagnostics = nullptr) const;

  // True when this snapshot holds the object a change names (its kind, namespace and name;
  // kind and name for the cluster-scoped kinds; a pod left out of networking counts): lets a caller make deletes idempotent, as an
  // informer's relist needs (it may delete what is already gone).
  bool Holds(const Change& change) const;

  // Pods.
  std::optional<PodId> FindPod(absl::string_view key) const;  // "namespace/name"
  std::optional<PodId> PodByIp(const IpAddress& address) const;
  std::string PodKey(PodId pod) const;
  std::vector<PodId> Pods() const;  // every live pod, sorted by namespace/name
  bool IsLivePod(PodId pod) const;

  // Verdicts: const, lock-free, allocation-free. Pod to pod has the family FlowFamily()
  // describes (IPv4 when both have one, else IPv6, else none); a packet has its own.
  bool Allowed(PodId source, PodId destination, Protocol protocol, uint16_t port) const;
  bool Allowed(const Endpoint& source, const Endpoint& destination, Protocol protocol,
               uint16_t port) const;
  bool AllowedPacket(const IpAddress& source, const IpAddress& destination, Protocol protocol,
                     uint16_t port) const;
  // out[i] = verdict on queries[i] (1 allowed, 0 denied), for i < min(sizes). With the
  // verdict bits (EngineOptions::verdict_bits_bytes) both overloads answer in blocks of 16
  // flows: each flow's two bit words are worked out and asked for, then the block is answered
  // from cache (bench/RESULTS.md: less per flow than single calls on the allowed mix); without
  // them, by pod, a rolling prefetch pipeline over the exact path's chain.
  void AllowedBatch(absl::Span<const PodQuery> queries, absl::Span<uint8_t> out) const;
  void AllowedBatch(absl::Span<const PacketQuery> queries, absl::Span<uint8_t> out) const;

  // The same verdict with its reasons (allocates): which policies isolate each side and
  // which rules admit the flow — the content np::reference::Evaluate gives.
  Verdict Explain(const Endpoint& source, const Endpoint& destination, Protocol protocol,
                  uint16_t port) const;
  Verdict ExplainPacket(const IpAddress& source, const IpAddress& destination,
                        Protocol protocol, uint16_t port) const;

  // A fresh compile of this snapshot's objects: same verdicts, no garbage left by updates.
  absl::StatusOr<std::shared_ptr<const Engine>> Compact() const;

  struct Stats {
    size_t pods = 0;
    size_t policies = 0;
    size_t namespaces = 0;
    size_t target_classes = 0;  // distinct (selecting policies, named ports) among targets
    size_t peer_classes = 0;    // distinct peers as rules see them (pods and CIDR ranges)
    size_t peer_selectors = 0;  // distinct rule peers across all policies
    size_t index_bytes = 0;     // memory of the lookup structures
    // Target classes whose pods' verdicts the verdict bits answer (the others: the exact
    // path), and the bits' size (within EngineOptions::verdict_bits_bytes).
    size_t verdict_bits_classes = 0;
    size_t verdict_bits_bytes = 0;
  };
  Stats stats() const;
  const EngineOptions& options() const;

  // The objects of this snapshot as a Cluster (for the reference evaluator and tools).
  absl::StatusOr<Cluster> ToCluster() const;

  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

 private:
  friend struct internal::EngineAccess;  // np/lower.cc reads the compiled tables
  explicit Engine(std::unique_ptr<internal::EngineState> state);
  std::unique_ptr<internal::EngineState> state_;
};

// Holds the current snapshot for a process that updates it while other threads read.
class LiveEngine {
 public:
  explicit LiveEngine(std::shared_ptr<const Engine> initial);
  ~LiveEngine();
  LiveEngine(const LiveEngine&) = delete;
  LiveEngine& operator=(const LiveEngine&) = delete;

  // Builds the next snapshot from the current one and publishes it with an atomic swap.
  // On error the current snapshot stays, and when the changes change nothing (Engine::Apply
  // returns the same snapshot) nothing is published: Current() is the same pointer.
  // Writers are serialized; readers are never blocked.
  absl::Status Apply(absl::Span<const Change> changes,
                     std::vector<Diagnostic>* diagnostics = nullptr);
  // Publishes a snapshot built elsewhere.
  void Publish(std::shared_ptr<const Engine> next);
  // The current snapshot, kept alive by the returned pointer (takes the writer's mutex
  // briefly: for occasional use; hot paths use a Reader).
  std::shared_ptr<const Engine> Current() const;

  // A reader thread's handle. Pin() returns the current snapshot, which stays valid until
  // the next Pin() of this Reader or its destruction. Wait-free except for a retry when a
  // swap happens at that very instant. At most kMaxReaders Readers exist at once.
  class Reader {
   public:
    explicit Reader(LiveEngine& live);
    ~Reader();
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;
    const Engine& Pin();

   private:
    LiveEngine& live_;
    int slot_;
  };
  static constexpr int kMaxReaders = 256;

 private:
  void ReclaimLocked();

  std::atomic<const Engine*> current_;
  // Hazard slots: the snapshot each Reader is using, or nullptr.
  std::atomic<const Engine*> hazards_[kMaxReaders];
  std::atomic<bool> slot_used_[kMaxReaders];
  mutable std::mutex writer_mutex_;
  std::shared_ptr<const Engine> current_owner_;               // guarded by writer_mutex_
  std::vector<std::shared_ptr<const Engine>> retired_;        // guarded by writer_mutex_
};

}  // namespace np

#endif  // NP_ENGINE_H_
