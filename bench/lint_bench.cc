// np::analysis::Lint on synthetic clusters (bench/cluster_generator.h): every check, NP105's
// one incremental connection diff per policy included. Sizes: 1k pods (100 policies) and the
// standard 10k pods (500 namespaces, 2k policies).
#include <map>
#include <memory>
#include <string>

#include "bench/cluster_generator.h"
#include "benchmark/benchmark.h"
#include "np/analysis/lint.h"

namespace np::bench {
namespace {

const Cluster& Get(int pods) {
  static auto* clusters = new std::map<int, Cluster>();
  auto it = clusters->find(pods);
  if (it != clusters->end()) return it->second;
  absl::StatusOr<Cluster> cluster = Cluster::Create(GenerateCluster(SizeForPods(pods)));
  if (!cluster.ok()) abort();
  return clusters->emplace(pods, *std::move(cluster)).first->second;
}

void BM_Lint(benchmark::State& state) {
  const Cluster& cluster = Get(static_cast<int>(state.range(0)));
  std::map<std::string, int> by_code;
  for (auto _ : state) {
    absl::StatusOr<std::vector<analysis::Finding>> f = analysis::Lint(cluster);
    if (!f.ok()) abort();
    by_code.clear();
    for (const analysis::Finding& finding : *f) ++by_code[finding.code];
  }
  for (const auto& [code, n] : by_code) state.counters[code] = n;
  state.counters["policies"] = cluster.policy_count();
}
BENCHMARK(BM_Lint)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace
}  // namespace np::bench

BENCHMARK_MAIN();
