#include "np/evaluator.h"

#include "np/reference.h"

namespace np {

absl::StatusOr<ClusterEvaluator> ClusterEvaluator::Create(const Cluster& cluster, Kind kind,
                                                          const EvaluationOptions& options) {
  std::shared_ptr<const Engine> engine;
  if (kind == Kind::kEngine) {
    EngineOptions engine_options;
    engine_options.evaluation = options;
    absl::StatusOr<std::shared_ptr<const Engine>> built = Engine::Build(cluster, engine_options);
    if (!built.ok()) return built.status();
    engine = *std::move(built);
  }
  return ClusterEvaluator(cluster, kind, options, std::move(engine));
}

ClusterEvaluator::ClusterEvaluator(const Cluster& cluster, Kind kind,
                                   const EvaluationOptions& options,
                                   std::shared_ptr<const Engine> engine)
    : cluster_(cluster), kind_(kind), options_(options), engine_(std::move(engine)) {
  if (engine_ != nullptr) {
    // A fresh engine names pods by its own ids: translate by name once.
    for (int i = 0; i < cluster_.pod_count(); ++i) {
      ids_.push_back(*engine_->FindPod(cluster_.pod(i).Key()));
    }
  }
}

Endpoint ClusterEvaluator::ToEngine(const Endpoint& e) const {
  return e.is_pod ? Endpoint::Pod(static_cast<int>(ids_[e.pod_index])) : e;
}

Verdict ClusterEvaluator::Evaluate(const Flow& flow) const {
  if (engine_ == nullptr) return reference::Evaluate(cluster_, flow, options_);
  return engine_->Explain(ToEngine(flow.source), ToEngine(flow.destination), flow.protocol,
                          flow.port);
}

bool ClusterEvaluator::Allowed(const Flow& flow) const {
  if (engine_ == nullptr) return reference::Evaluate(cluster_, flow, options_).allowed;
  return engine_->Allowed(ToEngine(flow.source), ToEngine(flow.destination), flow.protocol,
                          flow.port);
}

std::vector<uint8_t> ClusterEvaluator::Matrix(Protocol protocol, uint16_t port) const {
  const size_t n = static_cast<size_t>(cluster_.pod_count());
  std::vector<uint8_t> out(n * n, 0);
  if (engine_ != nullptr) {
    std::vector<PodQuery> queries;
    queries.reserve(n * n);
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < n; ++j) queries.push_back({ids_[i], ids_[j], protocol, port});
    }
    engine_->AllowedBatch(absl::MakeConstSpan(queries), absl::MakeSpan(out));
    return out;
  }
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      Flow flow{Endpoint::Pod(static_cast<int>(i)), Endpoint::Pod(static_cast<int>(j)), protocol,
                port};
      out[i * n + j] = reference::Evaluate(cluster_, flow, options_).allowed ? 1 : 0;
    }
  }
  return out;
}

}  // namespace np
