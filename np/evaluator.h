// np/evaluator.h — one cluster, one evaluator: the indexed engine or the literal reference,
// chosen at run time, answering flows written with the Cluster's own pod indexes. What a
// command line, a binding or a test needs when it holds a Cluster and wants verdicts.
//
//   absl::StatusOr<np::ClusterEvaluator> e =
//       np::ClusterEvaluator::Create(cluster, np::ClusterEvaluator::Kind::kEngine);
//   absl::StatusOr<np::Endpoint> a = np::ParseEndpoint(cluster, "x/a");
//   np::Verdict v = e->Evaluate(np::Flow{*a, *b, np::Protocol::kTCP, 80});
//   std::vector<uint8_t> table = e->Matrix(np::Protocol::kTCP, 80);  // row-major pods x pods
//
// Thread safety: immutable after Create; const methods may be called from any thread.
#ifndef NP_EVALUATOR_H_
#define NP_EVALUATOR_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/verdict.h"

namespace np {

class ClusterEvaluator {
 public:
  enum class Kind : uint8_t { kEngine, kReference };
  // Compiles the engine when kind is kEngine; the reference needs no compile step.
  static absl::StatusOr<ClusterEvaluator> Create(const Cluster& cluster, Kind kind,
                                                 const EvaluationOptions& options = {});

  Kind kind() const { return kind_; }
  const Cluster& cluster() const { return cluster_; }
  const EvaluationOptions& options() const { return options_; }
  // The engine, when kind() is kEngine; else null.
  const std::shared_ptr<const Engine>& engine() const { return engine_; }

  // Flows name pods by Cluster index (Endpoint::Pod(cluster.FindPod(...))).
  Verdict Evaluate(const Flow& flow) const;
  bool Allowed(const Flow& flow) const;
  // Every ordered pod pair on one protocol and port: cell [i * n + j] is 1 when pod i may
  // reach pod j, in the Cluster's pod order.
  std::vector<uint8_t> Matrix(Protocol protocol, uint16_t port) const;

 private:
  ClusterEvaluator(const Cluster& cluster, Kind kind, const EvaluationOptions& options,
                   std::shared_ptr<const Engine> engine);
  Endpoint ToEngine(const Endpoint& e) const;

  Cluster cluster_;
  Kind kind_;
  EvaluationOptions options_;
  std::shared_ptr<const Engine> engine_;
  std::vector<PodId> ids_;  // cluster pod index -> engine pod id
};

}  // namespace np

#endif  // NP_EVALUATOR_H_
