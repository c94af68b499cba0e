// Engine benchmarks on synthetic clusters (bench/cluster_generator.h): verdict lookups by
// pod, by packet and batched (by pod and by packet), on flows drawn from the cluster's allowed
// connections (traffic that happens) and, separately, from denied ones; the floor of a
// verdict on this machine (one bit read from a dense pods x pods x ports verdict matrix, for
// the same flows) measured pass by pass beside each lookup; the reference evaluator on the
// same flows (for the speedup); full compile time and index size; incremental update
// latency. Sizes: 1k, 10k (standard) and 100k
// pods (compile and updates only at 100k: its matrix would take 8.75 GB). The tiered workload
// (issue 10: BM_Tiered*) is the same cluster plus the 50 Admin-tier policies and the baseline
// of bench/cluster_generator.h's AddAdminTiers, compiled and looked up the same ways. `bench/run`
// turns the output into the table and JSON the README describes.
#include <sys/mman.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "bench/cluster_generator.h"
#include "benchmark/benchmark.h"
#include "np/analysis/connections.h"
#include "np/engine.h"
#include "np/reference.h"

namespace np::bench {
namespace {

constexpr int kQueries = 4096;
// Sizes whose verdict matrix is built (7 ports x pods^2 bits: 0.9 MB at 1k, 88 MB at 10k).
constexpr int kMatrixMaxPods = 20000;

// The ports flows use: those the generated policies name (DNS on UDP and TCP, the
// deployments' http, metrics and postgres ports, HTTPS) and one that no policy names (80).
constexpr std::pair<Protocol, uint16_t> kPorts[] = {
    {Protocol::kTCP, 8080}, {Protocol::kTCP, 5432}, {Protocol::kUDP, 53}, {Protocol::kTCP, 53},
    {Protocol::kTCP, 443},  {Protocol::kTCP, 9090}, {Protocol::kTCP, 80}};
constexpr int kPortCount = sizeof(kPorts) / sizeof(kPorts[0]);

[[noreturn]] void Fail(const std::string& message) {
  fprintf(stderr, "engine_bench: %s\n", message.c_str());
  exit(1);
}

// Every pod pair's verdict on each of kPorts, one bit each, [port][source][destination] by
// PodId: the floor of a verdict is reading one of these bits.
// The matrix sits on transparent huge pages, as the engine's verdict bits do (engine.cc):
// the floor must get every advantage the engine gets, or the ratio flatters the engine (on
// 4 KB pages each of its random reads also walks the page tables).
class VerdictMatrix {
 public:
  explicit VerdictMatrix(size_t pods) : pods_(pods) {
    constexpr size_t kHugePage = size_t{2} << 20;
    const size_t words = (kPortCount * pods * pods + 63) / 64;
    const size_t bytes = (words * sizeof(uint64_t) + kHugePage - 1) / kHugePage * kHugePage;
    words_.reset(static_cast<uint64_t*>(std::aligned_alloc(kHugePage, bytes)));
    if (words_ == nullptr) Fail("no memory for the verdict matrix");
    madvise(words_.get(), bytes, MADV_HUGEPAGE);  // best effort, before the first touch
    std::memset(words_.get(), 0, bytes);
  }
  void Set(int port_index, PodId source, PodId destination) {
    uint64_t i = Index(port_index, source, destination);
    words_[i >> 6] |= uint64_t{1} << (i & 63);
  }
  bool Get(int port_index, PodId source, PodId destination) const {
    uint64_t i = Index(port_index, source, destination);
    return (words_[i >> 6] >> (i & 63)) & 1;
  }
  size_t pods() const { return pods_; }

 private:
  uint64_t Index(int port_index, PodId source, PodId destination) const {
    return (static_cast<uint64_t>(port_index) * pods_ + source) * pods_ + destination;
  }
  struct Free {
    void operator()(uint64_t* p) const { std::free(p); }
  };
  size_t pods_;
  std::unique_ptr<uint64_t[], Free> words_;
};

struct MatrixQuery {
  PodId source = 0, destination = 0;
  int port_index = 0;
};

// One mix of flows, in each form a lookup takes.
struct FlowSample {
  std::vector<PodQuery> pod_queries;
  std::vector<PacketQuery> packet_queries;  // the pods' IPv4 addresses
  std::vector<MatrixQuery> matrix_queries;
  std::vector<Flow> flows;  // cluster pod indexes, for the reference
};

// The standard workload (NetworkPolicy only) or the tiered one (plus AddAdminTiers).
enum class Workload { kStandard, kTiered };

struct Fixture {
  SyntheticOptions options;
  std::unique_ptr<Cluster> cluster;
  std::shared_ptr<const Engine> engine;
  std::unique_ptr<VerdictMatrix> matrix;  // null above kMatrixMaxPods
  FlowSample allowed, denied;
};

// Fills the matrix with the verdicts np::analysis::ListConnections gives — the engine's
// compiled tables read interval by interval, not its lookup path — and returns the allowed
// (source, destination, port index) triples. Self pairs are not listed: never drawn.
std::vector<MatrixQuery> FillMatrix(const Engine& engine, VerdictMatrix& matrix) {
  analysis::ConnectionOptions options;
  options.external = false;
  absl::StatusOr<analysis::Connections> listing = analysis::ListConnections(engine, options);
  if (!listing.ok()) Fail(std::string(listing.status().message()));
  std::vector<MatrixQuery> allowed;
  for (const analysis::Connection& c : listing->connections) {
    for (int k = 0; k < kPortCount; ++k) {
      if (!c.ports.Contains(kPorts[k].first, kPorts[k].second)) continue;
      matrix.Set(k, c.from.pod, c.to.pod);
      allowed.push_back(MatrixQuery{c.from.pod, c.to.pod, k});
    }
  }
  return allowed;
}

void Add(const Fixture& f, const std::vector<int>& cluster_index, const MatrixQuery& m,
         FlowSample& sample) {
  auto [protocol, port] = kPorts[m.port_index];
  int s = cluster_index[m.source], d = cluster_index[m.destination];
  sample.pod_queries.push_back(PodQuery{m.source, m.destination, protocol, port});
  sample.packet_queries.push_back(
      PacketQuery{*f.cluster->pod(s).ipv4, *f.cluster->pod(d).ipv4, protocol, port});
  sample.matrix_queries.push_back(m);
  sample.flows.push_back(Flow{Endpoint::Pod(s), Endpoint::Pod(d), protocol, port});
}

// Every drawn flow must have the verdict its mix claims, by np::reference (the oracle) and by
// the engine under measurement; and the matrix must agree with the reference on uniformly
// random flows too (its denied bits included). Costs about 0.3 s at 10k pods.
void Verify(const Fixture& f, const std::vector<int>& cluster_index, std::mt19937_64& rng) {
  auto check = [&](const FlowSample& sample, bool expected, const char* mix) {
    for (size_t i = 0; i < sample.flows.size(); ++i) {
      const Flow& flow = sample.flows[i];
      const PodQuery& q = sample.pod_queries[i];
      std::string what = absl::StrCat(mix, " flow ", f.cluster->pod(flow.source.pod_index).Key(),
                                      " -> ", f.cluster->pod(flow.destination.pod_index).Key(),
                                      " port ", flow.port);
      if (reference::Evaluate(*f.cluster, flow).allowed != expected) {
        Fail(absl::StrCat(what, ": the reference disagrees with the matrix"));
      }
      if (f.engine->Allowed(q.source, q.destination, q.protocol, q.port) != expected ||
          f.engine->AllowedPacket(sample.packet_queries[i].source,
                                  sample.packet_queries[i].destination, q.protocol,
                                  q.port) != expected) {
        Fail(absl::StrCat(what, ": the engine disagrees with the reference"));
      }
    }
  };
  check(f.allowed, true, "allowed");
  check(f.denied, false, "denied");
  const size_t n = f.matrix->pods();
  for (int i = 0; i < 1000; ++i) {
    MatrixQuery m{static_cast<PodId>(rng() % n), static_cast<PodId>(rng() % n),
                  static_cast<int>(rng() % kPortCount)};
    if (m.source == m.destination) continue;
    FlowSample one;
    Add(f, cluster_index, m, one);
    if (reference::Evaluate(*f.cluster, one.flows[0]).allowed !=
        f.matrix->Get(m.port_index, m.source, m.destination)) {
      Fail(absl::StrCat("matrix bit of ", f.cluster->pod(one.flows[0].source.pod_index).Key(),
                        " -> ", f.cluster->pod(one.flows[0].destination.pod_index).Key(),
                        " port ", one.flows[0].port, " disagrees with the reference"));
    }
  }
}

// The allowed mix: uniform over the allowed (source, destination, port) triples. The denied
// mix keeps the old benchmark's shape, rejecting allowed triples: half the pairs within a few
// pods of each other (mostly one namespace, where both sides' tables are read), half across
// the cluster.
void DrawFlows(Fixture& f) {
  const int n = f.cluster->pod_count();
  std::vector<int> cluster_index(n, -1);  // PodId -> cluster pod index
  for (int i = 0; i < n; ++i) {
    std::optional<PodId> id = f.engine->FindPod(f.cluster->pod(i).Key());
    if (!id || *id >= static_cast<PodId>(n)) Fail("engine pod ids are not dense");
    cluster_index[*id] = i;
  }
  f.matrix = std::make_unique<VerdictMatrix>(n);
  std::vector<MatrixQuery> allowed = FillMatrix(*f.engine, *f.matrix);
  if (allowed.empty()) Fail("the cluster allows no flow on the benchmark's ports");
  std::mt19937_64 rng(42);
  for (int q = 0; q < kQueries; ++q) Add(f, cluster_index, allowed[rng() % allowed.size()], f.allowed);
  while (f.denied.flows.size() < kQueries) {
    int q = static_cast<int>(f.denied.flows.size());
    PodId s = static_cast<PodId>(rng() % n), d = static_cast<PodId>(rng() % n);
    if (q % 2 == 0) d = std::min(n - 1, std::max(0, static_cast<int>(s) - 10 + static_cast<int>(rng() % 20)));
    int k = static_cast<int>(rng() % kPortCount);
    if (s == d || f.matrix->Get(k, s, d)) continue;
    Add(f, cluster_index, MatrixQuery{s, d, k}, f.denied);
  }
  Verify(f, cluster_index, rng);
}

Fixture& Get(int pods, Workload workload = Workload::kStandard) {
  static auto* fixtures = new std::map<std::pair<int, Workload>, std::unique_ptr<Fixture>>();
  auto it = fixtures->find({pods, workload});
  if (it != fixtures->end()) return *it->second;
  auto f = std::make_unique<Fixture>();
  f->options = SizeForPods(pods);
  ClusterObjects objects = GenerateCluster(f->options);
  if (workload == Workload::kTiered) AddAdminTiers(f->options, objects);
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  if (!cluster.ok()) Fail(absl::StrCat("generator: ", cluster.status().message()));
  f->cluster = std::make_unique<Cluster>(*std::move(cluster));
  const int expected_tiers = workload == Workload::kTiered ? kAdminTierPolicies + 1 : 0;
  if (f->cluster->tier_policy_count() != expected_tiers) {
    Fail(absl::StrCat("the cluster has ", f->cluster->tier_policy_count(),
                      " tier policies, not ", expected_tiers));
  }
  f->engine = *Engine::Build(*f->cluster);
  if (f->cluster->pod_count() <= kMatrixMaxPods) DrawFlows(*f);
  Fixture& ref = *f;
  fixtures->emplace(std::make_pair(pods, workload), std::move(f));
  return ref;
}

int64_t ThreadCpuNs() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return int64_t{t.tv_sec} * 1000000000 + t.tv_nsec;
}

// Runs `lookups` (one pass over the mix, returning how many flows it allowed) under manual
// timing, and after each pass the floor over the same flows, untimed by the framework: both
// see the same machine from pass to pass, which on a shared machine matters more than either
// absolute figure. Times are the thread's CPU time. Counters: ns_per_lookup, floor_ns (ns per
// matrix bit read), floor_ratio (ns_per_lookup / floor_ns) and allowed_fraction (the engine's
// verdicts over the mix: 1.0 allowed, 0.0 denied).
void RunAgainstFloor(benchmark::State& state, const Fixture& f, const FlowSample& sample,
                     const std::function<size_t()>& lookups) {
  const VerdictMatrix& matrix = *f.matrix;
  int64_t engine_ns = 0, floor_ns = 0;
  size_t allowed = 0, floor_allowed = 0;
  for (auto _ : state) {
    int64_t t0 = ThreadCpuNs();
    allowed += lookups();
    int64_t t1 = ThreadCpuNs();
    for (const MatrixQuery& m : sample.matrix_queries) {
      floor_allowed += matrix.Get(m.port_index, m.source, m.destination);
    }
    int64_t t2 = ThreadCpuNs();
    engine_ns += t1 - t0;
    floor_ns += t2 - t1;
    state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
  }
  benchmark::DoNotOptimize(floor_allowed);
  const double count = static_cast<double>(state.iterations()) * sample.matrix_queries.size();
  state.counters["ns_per_lookup"] = static_cast<double>(engine_ns) / count;
  state.counters["floor_ns"] = static_cast<double>(floor_ns) / count;
  state.counters["floor_ratio"] = static_cast<double>(engine_ns) / static_cast<double>(floor_ns);
  state.counters["allowed_fraction"] = static_cast<double>(allowed) / count;
  if (floor_allowed != allowed) state.SkipWithError("the engine and the matrix disagree");
}

size_t ByPod(const Engine& engine, const FlowSample& sample) {
  size_t allowed = 0;
  for (const PodQuery& q : sample.pod_queries) {
    allowed += engine.Allowed(q.source, q.destination, q.protocol, q.port);
  }
  return allowed;
}

size_t ByPacket(const Engine& engine, const FlowSample& sample) {
  size_t allowed = 0;
  for (const PacketQuery& q : sample.packet_queries) {
    allowed += engine.AllowedPacket(q.source, q.destination, q.protocol, q.port);
  }
  return allowed;
}

// One lookup path over the allowed or the denied mix, against the floor.
void RunLookup(benchmark::State& state, Workload workload, bool allowed_mix,
               size_t (*lookup)(const Engine&, const FlowSample&)) {
  Fixture& f = Get(static_cast<int>(state.range(0)), workload);
  const FlowSample& sample = allowed_mix ? f.allowed : f.denied;
  RunAgainstFloor(state, f, sample, [&] { return lookup(*f.engine, sample); });
}

constexpr Workload kStandard = Workload::kStandard, kTiered = Workload::kTiered;
void BM_LookupByPod(benchmark::State& state) { RunLookup(state, kStandard, true, ByPod); }
void BM_LookupByPodDenied(benchmark::State& state) { RunLookup(state, kStandard, false, ByPod); }
void BM_LookupByPacket(benchmark::State& state) { RunLookup(state, kStandard, true, ByPacket); }
void BM_LookupByPacketDenied(benchmark::State& state) {
  RunLookup(state, kStandard, false, ByPacket);
}
void BM_TieredLookupByPod(benchmark::State& state) { RunLookup(state, kTiered, true, ByPod); }
void BM_TieredLookupByPodDenied(benchmark::State& state) {
  RunLookup(state, kTiered, false, ByPod);
}
void BM_TieredLookupByPacket(benchmark::State& state) {
  RunLookup(state, kTiered, true, ByPacket);
}
void BM_TieredLookupByPacketDenied(benchmark::State& state) {
  RunLookup(state, kTiered, false, ByPacket);
}

// The whole mix as one Engine::AllowedBatch call, by pod (`queries` = the sample's
// pod_queries) or by packet (its packet_queries); counting the answers is part of the pass,
// as a caller would read them.
template <typename Query>
void RunBatch(benchmark::State& state, Workload workload,
              std::vector<Query> FlowSample::*queries) {
  Fixture& f = Get(static_cast<int>(state.range(0)), workload);
  const std::vector<Query>& mix = f.allowed.*queries;
  std::vector<uint8_t> out(mix.size());
  RunAgainstFloor(state, f, f.allowed, [&] {
    f.engine->AllowedBatch(absl::MakeConstSpan(mix), absl::MakeSpan(out));
    size_t allowed = 0;
    for (uint8_t v : out) allowed += v;
    return allowed;
  });
}
void BM_LookupBatch(benchmark::State& state) {
  RunBatch(state, kStandard, &FlowSample::pod_queries);
}
void BM_TieredLookupBatch(benchmark::State& state) {
  RunBatch(state, kTiered, &FlowSample::pod_queries);
}
void BM_LookupBatchByPacket(benchmark::State& state) {
  RunBatch(state, kStandard, &FlowSample::packet_queries);
}
void BM_TieredLookupBatchByPacket(benchmark::State& state) {
  RunBatch(state, kTiered, &FlowSample::packet_queries);
}

// On the allowed mix, the one the speedup is quoted on.
void RunReference(benchmark::State& state, Workload workload) {
  Fixture& f = Get(static_cast<int>(state.range(0)), workload);
  const std::vector<Flow>& flows = f.allowed.flows;
  size_t i = 0, allowed = 0;
  for (auto _ : state) {
    allowed += reference::Evaluate(*f.cluster, flows[i++ % flows.size()]).allowed;
  }
  benchmark::DoNotOptimize(allowed);
  // Inverted rate of (iterations x 1e-9) per second: CPU ns per lookup, the unit the
  // floor-paired lookups report.
  state.counters["ns_per_lookup"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * 1e-9,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["allowed_fraction"] =
      static_cast<double>(allowed) / static_cast<double>(state.iterations());
}
void BM_ReferenceLookup(benchmark::State& state) { RunReference(state, kStandard); }
void BM_TieredReferenceLookup(benchmark::State& state) { RunReference(state, kTiered); }

void RunCompile(benchmark::State& state, Workload workload) {
  Fixture& f = Get(static_cast<int>(state.range(0)), workload);
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
  // The verdict bits (issue 10): how many target classes they answer for, and their share
  // of index_bytes.
  state.counters["bits_classes"] = static_cast<double>(stats.verdict_bits_classes);
  state.counters["bits_bytes"] = static_cast<double>(stats.verdict_bits_bytes);
}
void BM_Compile(benchmark::State& state) { RunCompile(state, kStandard); }
void BM_CompileTiered(benchmark::State& state) { RunCompile(state, kTiered); }

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

// Lookups need the verdict matrix: 1k and 10k pods.
BENCHMARK(BM_LookupByPod)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_LookupByPodDenied)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_LookupByPacket)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_LookupByPacketDenied)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_LookupBatch)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_LookupBatchByPacket)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_ReferenceLookup)->Arg(1000)->Arg(10000);
BENCHMARK(BM_Compile)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond);
// The tiered workload at the standard size (issue 10's targets are quoted there) and 1k.
BENCHMARK(BM_TieredLookupByPod)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_TieredLookupByPodDenied)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_TieredLookupByPacket)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_TieredLookupByPacketDenied)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_TieredLookupBatch)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_TieredLookupBatchByPacket)->Arg(1000)->Arg(10000)->UseManualTime();
BENCHMARK(BM_TieredReferenceLookup)->Arg(1000)->Arg(10000);
BENCHMARK(BM_CompileTiered)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_UpdatePodAdd)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_UpdatePodRelabel)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_UpdatePodNewLabel)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_UpdatePolicyAdd)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);

// ---------------------------------------------------------------- tier policy updates
// (h21, issue 10 item 3.) The standard cluster plus kStandingAdminPolicies
// AdminNetworkPolicies, each denying one application namespace's ingress from the next one;
// BM_UpdateTierPolicyAdd adds one more at a priority between theirs, so that the policies
// after it are renumbered (tier policy ids are evaluation order) and every table that holds
// a tier policy is rebuilt: the cost of one ANP add as the engine pays it.
constexpr int kStandingAdminPolicies = 20;

policy_networking::AdminNetworkPolicy AdminDenyBetween(const std::string& name, int priority,
                                                       const std::string& subject,
                                                       const std::string& peer) {
  policy_networking::AdminNetworkPolicy policy;
  policy.mutable_metadata()->set_name(name);
  policy.mutable_spec()->set_priority(priority);
  (*policy.mutable_spec()->mutable_subject()->mutable_namespaces()->mutable_matchlabels())
      [std::string(kNamespaceNameLabel)] = subject;
  policy_networking::AdminNetworkPolicyRule* rule = policy.mutable_spec()->add_ingress();
  rule->set_name("deny-neighbour");
  rule->set_action("Deny");
  (*rule->add_peers()->mutable_namespaces()->mutable_matchlabels())
      [std::string(kNamespaceNameLabel)] = peer;
  return policy;
}

const Engine& TieredEngine(int pods) {
  static auto* engines = new std::map<int, std::shared_ptr<const Engine>>();
  auto it = engines->find(pods);
  if (it != engines->end()) return *it->second;
  SyntheticOptions options = SizeForPods(pods);
  ClusterObjects objects = GenerateCluster(options);
  for (int k = 0; k < kStandingAdminPolicies; ++k) {
    objects.admin_network_policies.push_back(
        {AdminDenyBetween(absl::StrCat("standing-", k), 10 * k, AppNamespace(k),
                          AppNamespace(k + 1)),
         {}});
  }
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  if (!cluster.ok()) Fail(absl::StrCat("generator: ", cluster.status().message()));
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster);
  if (!engine.ok()) Fail(absl::StrCat("build: ", engine.status().message()));
  return *engines->emplace(pods, *engine).first->second;
}

void BM_UpdateTierPolicyAdd(benchmark::State& state) {
  const Engine& engine = TieredEngine(static_cast<int>(state.range(0)));
  const int namespaces = SizeForPods(static_cast<int>(state.range(0))).namespaces;
  int n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    // Between the standing policies' priorities: half of them move back one id.
    const int k = 30 + n % (namespaces - 31);
    Change change{Change::Op::kUpsert,
                  AdminDenyBetween(absl::StrCat("added-", n), 10 * (kStandingAdminPolicies / 2) + 5,
                                   AppNamespace(k), AppNamespace(k + 1))};
    ++n;
    state.ResumeTiming();
    absl::StatusOr<std::shared_ptr<const Engine>> next = engine.Apply({change});
    state.PauseTiming();
    if (!next.ok()) state.SkipWithError(std::string(next.status().message()).c_str());
    next = absl::StatusOr<std::shared_ptr<const Engine>>();
    state.ResumeTiming();
  }
  state.counters["tier_policies_before"] = kStandingAdminPolicies;
}

BENCHMARK(BM_UpdateTierPolicyAdd)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace np::bench

BENCHMARK_MAIN();
