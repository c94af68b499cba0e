#include "bench/synthetic_ir.h"

#include "absl/strings/numbers.h"
#include "np/engine.h"
#include "np/lower.h"

namespace np::bench {

absl::StatusOr<ir::CompiledPolicy> CompileSynthetic(const SyntheticOptions& options,
                                                    const std::string& node,
                                                    int extra_policies) {
  ClusterObjects objects = GenerateCluster(options);
  for (int n = 0; n < extra_policies; ++n) {
    objects.policies.push_back({ExtraPolicy(options, n % options.namespaces, n), {}});
  }
  return CompileObjects(std::move(objects), node);
}

absl::StatusOr<ir::CompiledPolicy> CompileObjects(ClusterObjects objects, const std::string& node) {
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  if (!cluster.ok()) return cluster.status();
  EngineOptions engine_options;
  engine_options.node_name = node;
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, engine_options);
  if (!engine.ok()) return engine.status();
  return LowerToIr(**engine);
}

std::vector<int> PolicyCounts(int argc, char** argv) {
  std::vector<int> counts;
  for (int i = 1; i < argc; ++i) {
    int n;
    if (absl::SimpleAtoi(argv[i], &n) && n > 0) counts.push_back(n);
  }
  if (counts.empty()) counts = {100, 1000, 10000};
  return counts;
}

}  // namespace np::bench
