// Engine benchmarks on synthetic clusters (bench/cluster_generator.h): verdict lookup by pod
// and by packet, the reference evaluator on the same flows (for the ratio), full compile
// time and index size, and incremental update latency. Sizes: 1k, 10k (standard) and 100k
// pods. `bench/run` turns the output into the table and JSON the README describes.
#include <map>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "bench/cluster_generator.h"
#include "benchmark/benchmark.h"
#include "np/engine.h"
#include "np/reference.h"

namespace np::bench {
namespace {

constexpr int kQueries = 4096;

struct Fixture {
  SyntheticOptions options;
  std::unique_ptr<Cluster> cluster;
  std::shared_ptr<const Engine> engine;
  std::vector<PodQuery> pod_queries;
  std::vector<PacketQuery> packet_queries;
  std::vector<Flow> flows;  // the same flows in cluster indexes, for the reference
};

Fixture& Get(int pods) {
  static auto* fixtures = new std::map<int, std::unique_ptr<Fixture>>();
  auto it = fixtures->find(pods);
  if (it != fixtures->end()) return *it->second;
  auto f = std::make_unique<Fixture>();
  f->options = SizeForPods(pods);
  absl::StatusOr<Cluster> cluster = Cluster::Create(GenerateCluster(f->options));
  if (!cluster.ok()) {
    fprintf(stderr, "generator: %s\n", std::string(cluster.status().message()).c_str());
    abort();
  }
  f->cluster = std::make_unique<Cluster>(*std::move(cluster));
  f->engine = *Engine::Build(*f->cluster);
  // Uniformly random pod pairs, on the ports the generated policies use.
  std::mt19937_64 rng(42);
  const int n = f->cluster->pod_count();
  static const std::pair<Protocol, uint16_t> kPorts[] = {
      {Protocol::kTCP, 8080}, {Protocol::kTCP, 5432}, {Protocol::kUDP, 53},
      {Protocol::kTCP, 443},  {Protocol::kTCP, 9090}, {Protocol::kTCP, 80}};
  // Half the pairs within one namespace (where policies allow traffic and both sides are
  // consulted), half across the cluster (mostly denied at the source's egress).
  for (int q = 0; q < kQueries; ++q) {
    int s = static_cast<int>(rng() % n), d = static_cast<int>(rng() % n);
    if (q % 2 == 0) {
      d = std::min(n - 1, std::max(0, s - 10 + static_cast<int>(rng() % 20)));
    }
    auto [protocol, port] = kPorts[rng() % 6];
    PodId src = *f->engine->FindPod(f->cluster->pod(s).Key());
    PodId dst = *f->engine->FindPod(f->cluster->pod(d).Key());
    f->pod_queries.push_back(PodQuery{src, dst, protocol, port});
    f->packet_queries.push_back(
        PacketQuery{*f->cluster->pod(s).ipv4, *f->cluster->pod(d).ipv4, protocol, port});
    f->flows.push_back(Flow{Endpoint::Pod(s), Endpoint::Pod(d), protocol, port});
  }
  Fixture& ref = *f;
  fixtures->emplace(pods, std::move(f));
  return ref;
}

void BM_LookupByPod(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  const Engine& engine = *f.engine;
  size_t allowed = 0;
  for (auto _ : state) {
    for (const PodQuery& q : f.pod_queries) {
      allowed += engine.Allowed(q.source, q.destination, q.protocol, q.port);
    }
  }
  benchmark::DoNotOptimize(allowed);
  state.counters["ns_per_lookup"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kQueries,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["allowed_fraction"] =
      static_cast<double>(allowed) / (static_cast<double>(state.iterations()) * kQueries);
}

void BM_LookupByPacket(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  const Engine& engine = *f.engine;
  size_t allowed = 0;
  for (auto _ : state) {
    for (const PacketQuery& q : f.packet_queries) {
      allowed += engine.AllowedPacket(q.source, q.destination, q.protocol, q.port);
    }
  }
  benchmark::DoNotOptimize(allowed);
  state.counters["allowed_fraction"] =
      static_cast<double>(allowed) / (static_cast<double>(state.iterations()) * kQueries);
  state.counters["ns_per_lookup"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kQueries,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_ReferenceLookup(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  size_t i = 0, allowed = 0;
  for (auto _ : state) {
    allowed += reference::Evaluate(*f.cluster, f.flows[i++ % f.flows.size()]).allowed;
  }
  benchmark::DoNotOptimize(allowed);
  state.counters["ns_per_lookup"] = benchmark::Counter(
      static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_Compile(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  size_t bytes = 0;
  for (auto _ : state) {
    std::shared_ptr<const Engine> engine = *Engine::Build(*f.cluster);
    bytes = engine->stats().index_bytes;
    state.PauseTiming();
    engine.reset();  // freeing is not compiling
    state.ResumeTiming();
  }
  Engine::Stats stats = f.engine->stats();
  state.counters["index_bytes"] = static_cast<double>(bytes);
  state.counters["pods"] = static_cast<double>(stats.pods);
  state.counters["policies"] = static_cast<double>(stats.policies);
  state.counters["target_classes"] = static_cast<double>(stats.target_classes);
  state.counters["peer_classes"] = static_cast<double>(stats.peer_classes);
}

// One change applied to the standing snapshot, again and again; the new snapshot is
// dropped outside the timed region.
void RunUpdate(benchmark::State& state, const std::function<Change(int)>& make_change) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  int n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Change change = make_change(n++);
    state.ResumeTiming();
    absl::StatusOr<std::shared_ptr<const Engine>> next = f.engine->Apply({change});
    state.PauseTiming();
    if (!next.ok()) state.SkipWithError(std::string(next.status().message()).c_str());
    next = absl::StatusOr<std::shared_ptr<const Engine>>();
    state.ResumeTiming();
  }
}

// A new replica of an existing deployment (same labels: an existing class).
void BM_UpdatePodAdd(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  RunUpdate(state, [&](int n) {
    int source = 5 + (n * 7919) % (f.cluster->pod_count() - 5);
    k8s::Pod pod = f.cluster->pod_object(source);
    pod.mutable_metadata()->set_name(absl::StrCat(pod.metadata().name(), "-new-", n));
    pod.mutable_status()->clear_podips();
    std::string ip = absl::StrCat("10.32.", (n >> 8) & 255, ".", n & 255);
    pod.mutable_status()->set_podip(ip);
    pod.mutable_status()->add_podips()->set_ip(ip);
    return Change{Change::Op::kUpsert, pod};
  });
}

// An existing pod moved to another deployment's labels in its namespace.
void BM_UpdatePodRelabel(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  RunUpdate(state, [&](int n) {
    int i = 5 + (n * 7919) % (f.cluster->pod_count() - 10);
    k8s::Pod pod = f.cluster->pod_object(i);
    // The pod 5 places later is in the same namespace but (usually) another deployment.
    const k8s::Pod& other = f.cluster->pod_object(i + 5);
    if (other.metadata().namespace_() == pod.metadata().namespace_()) {
      *pod.mutable_metadata()->mutable_labels() = other.metadata().labels();
      *pod.mutable_spec() = other.spec();
    }
    return Change{Change::Op::kUpsert, pod};
  });
}

// An existing pod gets a label no policy mentions (a new identity, same classes).
void BM_UpdatePodNewLabel(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  RunUpdate(state, [&](int n) {
    k8s::Pod pod = f.cluster->pod_object(5 + (n * 7919) % (f.cluster->pod_count() - 5));
    (*pod.mutable_metadata()->mutable_labels())["canary"] = absl::StrCat("c", n);
    return Change{Change::Op::kUpsert, pod};
  });
}

void BM_UpdatePolicyAdd(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  RunUpdate(state, [&](int n) {
    return Change{Change::Op::kUpsert,
                  ExtraPolicy(f.options, (n * 31) % f.options.namespaces, n)};
  });
}

BENCHMARK(BM_LookupByPod)->Arg(1000)->Arg(10000)->Arg(100000);
BENCHMARK(BM_LookupByPacket)->Arg(1000)->Arg(10000)->Arg(100000);
BENCHMARK(BM_ReferenceLookup)->Arg(1000)->Arg(10000)->Arg(100000);
BENCHMARK(BM_Compile)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_UpdatePodAdd)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_UpdatePodRelabel)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_UpdatePodNewLabel)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_UpdatePolicyAdd)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace np::bench

BENCHMARK_MAIN();
