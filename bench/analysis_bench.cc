// Analyses on synthetic clusters (bench/cluster_generator.h): the full connection listing
// (every pod pair and external range, every port and protocol) and the diff of one added
// policy or AdminNetworkPolicy, computed incrementally (np::analysis::DiffChanges), against
// the full diff of the same two snapshots in the same run for the ratio; and "what can reach
// X (and why)": the listing to one pod, with and without explanations. Sizes: 1k, 10k
// (standard), 100k pods, and 10k pods with 1k to 8k policies (growth with policies).
#include <map>
#include <memory>

#include "bench/cluster_generator.h"
#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "np/analysis/connections.h"
#include "np/engine.h"

namespace np::bench {
namespace {

struct Fixture {
  SyntheticOptions options;
  std::shared_ptr<const Engine> engine;
};

// `policies` 0: the standard ratio (SizeForPods: one policy per 5 pods).
Fixture& Get(int pods, int policies = 0) {
  static auto* fixtures = new std::map<std::pair<int, int>, std::unique_ptr<Fixture>>();
  auto it = fixtures->find({pods, policies});
  if (it != fixtures->end()) return *it->second;
  auto f = std::make_unique<Fixture>();
  f->options = SizeForPods(pods);
  if (policies > 0) f->options.policies = policies;
  absl::StatusOr<Cluster> cluster = Cluster::Create(GenerateCluster(f->options));
  if (!cluster.ok()) abort();
  f->engine = *Engine::Build(*cluster);
  return *fixtures->emplace(std::make_pair(pods, policies), std::move(f)).first->second;
}

void Listing(benchmark::State& state, Fixture& f) {
  size_t pairs = 0;
  for (auto _ : state) {
    absl::StatusOr<analysis::Connections> c = analysis::ListConnections(*f.engine);
    pairs = c->connections.size();
    benchmark::DoNotOptimize(pairs);
  }
  state.counters["pairs"] = static_cast<double>(pairs);
}
void BM_Connections(benchmark::State& state) { Listing(state, Get(static_cast<int>(state.range(0)))); }
// range(0) pods, range(1) policies.
void BM_ConnectionsByPolicies(benchmark::State& state) {
  Listing(state, Get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1))));
}
BENCHMARK(BM_Connections)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond)->Iterations(1);
// Growth with policies at a fixed 10k pods: half, standard, double and four times the policies
// (from 4 a namespace on, the generator's later templates appear: namespace-wide and ipBlock
// peers).
BENCHMARK(BM_ConnectionsByPolicies)
    ->Args({10000, 1000})->Args({10000, 2000})->Args({10000, 4000})->Args({10000, 8000})
    ->Unit(benchmark::kMillisecond)->Iterations(1);

// "What can reach X, and why": the listing filtered to one destination pod, without
// (range(1) == 0) and with (1) the deciding rules of each line (ConnectionOptions::explain).
void BM_ConnectionsToOnePod(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  analysis::ConnectionOptions options;
  // A destination that something can reach (pods every source is denied have no lines).
  std::vector<PodId> pods = f.engine->Pods();
  for (size_t i = pods.size() / 2; i < pods.size(); ++i) {
    options.to = f.engine->PodKey(pods[i]);
    if (!analysis::ListConnections(*f.engine, options)->connections.empty()) break;
  }
  options.explain = state.range(1) != 0;
  size_t lines = 0;
  for (auto _ : state) {
    absl::StatusOr<analysis::Connections> c = analysis::ListConnections(*f.engine, options);
    lines = c->connections.size();
    benchmark::DoNotOptimize(lines);
  }
  state.counters["lines"] = static_cast<double>(lines);
}
BENCHMARK(BM_ConnectionsToOnePod)
    ->Args({1000, 0})->Args({1000, 1})->Args({10000, 0})->Args({10000, 1})
    ->Unit(benchmark::kMillisecond);

void DiffOnePolicy(benchmark::State& state, Fixture& f) {
  int n = 0;
  size_t changed = 0;
  for (auto _ : state) {
    std::vector<Change> change = {
        Change{Change::Op::kUpsert, ExtraPolicy(f.options, n % f.options.namespaces, n)}};
    ++n;
    absl::StatusOr<analysis::ConnectionDiff> d = analysis::DiffChanges(*f.engine, change);
    changed = d->added.size() + d->removed.size();
  }
  state.counters["changed_pairs"] = static_cast<double>(changed);
}
void BM_DiffOnePolicy(benchmark::State& state) {
  DiffOnePolicy(state, Get(static_cast<int>(state.range(0))));
}
// range(0) pods, range(1) policies.
void BM_DiffOnePolicyByPolicies(benchmark::State& state) {
  DiffOnePolicy(state, Get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1))));
}
BENCHMARK(BM_DiffOnePolicy)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DiffOnePolicyByPolicies)
    ->Args({10000, 1000})->Args({10000, 2000})->Args({10000, 4000})->Args({10000, 8000})
    ->Unit(benchmark::kMillisecond);

// An AdminNetworkPolicy a platform team adds: monitoring reaches the databases of one team's
// namespaces (1 in 20), whatever their NetworkPolicies say (they admit only the team's api).
policy_networking::AdminNetworkPolicy ExtraAdminPolicy(int n) {
  policy_networking::AdminNetworkPolicy policy;
  policy.mutable_metadata()->set_name(absl::StrCat("extra-admin-", n));
  policy_networking::AdminNetworkPolicySpec& spec = *policy.mutable_spec();
  spec.set_priority(n % 1000);
  policy_networking::NamespacedPod& subject = *spec.mutable_subject()->mutable_pods();
  (*subject.mutable_namespaceselector()->mutable_matchlabels())["team"] =
      absl::StrCat("team-", n % 20);
  (*subject.mutable_podselector()->mutable_matchlabels())["app"] = "db";
  policy_networking::AdminNetworkPolicyRule& rule = *spec.add_ingress();
  rule.set_name("monitoring-to-db");
  rule.set_action("Allow");
  (*rule.add_peers()->mutable_namespaces()->mutable_matchlabels())["team"] = "monitoring";
  policy_networking::PortNumber& port = *rule.add_ports()->mutable_portnumber();
  port.set_protocol("TCP");
  port.set_port(5432);
  return policy;
}

// Issue 11's diff with tiered policies: the same as BM_DiffOnePolicy for one added
// AdminNetworkPolicy, which makes the engine rebuild every table holding a tier policy.
// range(0) pods, range(1) AdminNetworkPolicies already in the cluster (other ones of the
// same kind, whose tables the added one makes the engine rebuild).
void BM_DiffOneTierPolicy(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  const int existing = static_cast<int>(state.range(1));
  std::vector<Change> setup;
  for (int i = 0; i < existing; ++i) {
    setup.push_back(Change{Change::Op::kUpsert, ExtraAdminPolicy(100000 + i)});
  }
  absl::StatusOr<std::shared_ptr<const Engine>> before = f.engine->Apply(setup);
  if (!before.ok()) {
    state.SkipWithError(std::string(before.status().message()).c_str());
    return;
  }
  int n = 0;
  size_t changed = 0;
  for (auto _ : state) {
    std::vector<Change> change = {Change{Change::Op::kUpsert, ExtraAdminPolicy(n++)}};
    absl::StatusOr<analysis::ConnectionDiff> d = analysis::DiffChanges(**before, change);
    if (!d.ok()) {
      state.SkipWithError(std::string(d.status().message()).c_str());
      return;
    }
    changed = d->added.size() + d->removed.size();
  }
  state.counters["changed_pairs"] = static_cast<double>(changed);
}
BENCHMARK(BM_DiffOneTierPolicy)
    ->Args({1000, 0})->Args({10000, 0})->Args({10000, 50})
    ->Unit(benchmark::kMillisecond);

// The engine's own part of BM_DiffOnePolicy: the same change applied, nothing compared.
void BM_ApplyOnePolicy(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  int n = 0;
  for (auto _ : state) {
    std::vector<Change> change = {
        Change{Change::Op::kUpsert, ExtraPolicy(f.options, n % f.options.namespaces, n)}};
    ++n;
    absl::StatusOr<std::shared_ptr<const Engine>> after = f.engine->Apply(change);
    benchmark::DoNotOptimize(after);
  }
}
BENCHMARK(BM_ApplyOnePolicy)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond);

void BM_DiffOnePolicyFull(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  std::vector<Change> change = {
      Change{Change::Op::kUpsert, ExtraPolicy(f.options, 0, 0)}};
  std::shared_ptr<const Engine> after = *f.engine->Apply(change);
  for (auto _ : state) {
    absl::StatusOr<analysis::ConnectionDiff> d = analysis::DiffConnections(*f.engine, *after);
    benchmark::DoNotOptimize(d);
  }
}
// Every pair of ends in both snapshots: minutes at 10k pods, so 1k only (the 10k listing is
// the yardstick for the incremental diff there).
BENCHMARK(BM_DiffOnePolicyFull)->Arg(1000)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace
}  // namespace np::bench

BENCHMARK_MAIN();
