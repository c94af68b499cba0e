// The cost of the C ABI (bindings/c/np.h) over the C++ engine: the same verdicts on the same
// cluster through np::Engine::Allowed and through np_engine_allowed / np_reader_allowed /
// np_engine_allowed_batch / np_reader_allowed_batch (issue 12: target ≤ 5 ns of overhead per
// verdict), and each batch beside Engine::AllowedBatch.
// `bazel run -c opt //bench:cabi_bench`.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "benchmark/benchmark.h"
#include "bindings/c/np.h"
#include "np/engine.h"
#include "np/loader.h"

namespace {

// The cluster and queries of bindings/go/bench_test.go, so Go's figures sit beside these.
constexpr int kNamespaces = 50;
constexpr int kPodsPerNamespace = 20;

// 1,000 pods in 50 namespaces (app-0..4), two policies per namespace: app-1 may reach
// app-0 on TCP 80, and app-2 of the next team's namespaces may reach app-3 on 443.
std::string ClusterText() {
  std::string text;
  for (int n = 0; n < kNamespaces; ++n) {
    absl::StrAppend(&text, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns-", n,
                    ", labels: {team: t-", n % 5, "}}\n");
    for (int p = 0; p < kPodsPerNamespace; ++p) {
      absl::StrAppend(&text, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p-", p,
                      ", namespace: ns-", n, ", labels: {app: app-", p % 5,
                      "}}\nstatus: {podIP: 10.", n / 200, ".", n % 200, ".", p + 1, "}\n");
    }
    absl::StrAppend(&text,
                    "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: "
                    "{name: web, namespace: ns-", n,
                    "}\nspec: {podSelector: {matchLabels: {app: app-0}}, ingress: [{from: "
                    "[{podSelector: {matchLabels: {app: app-1}}}], ports: [{port: 80}]}]}\n");
    absl::StrAppend(&text,
                    "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: "
                    "{name: api, namespace: ns-", n,
                    "}\nspec: {podSelector: {matchLabels: {app: app-3}}, ingress: [{from: "
                    "[{namespaceSelector: {matchLabels: {team: t-", (n + 1) % 5,
                    "}}, podSelector: {matchLabels: {app: app-2}}}], ports: [{port: 443}]}]}\n");
  }
  return text;
}

struct Fixture {
  Fixture() {
    const std::string text = ClusterText();
    np::ClusterLoader loader;
    if (!loader.AddText(text, "bench").ok()) std::abort();
    cxx = *np::Engine::Build(*loader.Build());
    np_cluster* cluster = nullptr;
    if (np_cluster_load(text.data(), text.size(), "bench", &cluster, nullptr) != NP_OK ||
        np_engine_build(cluster, nullptr, &c, nullptr) != NP_OK ||
        np_live_new(c, &live, nullptr) != NP_OK || np_reader_new(live, &reader, nullptr) != NP_OK) {
      std::abort();
    }
    np_cluster_free(cluster);
    std::vector<std::string> keys;  // ns-major, as the Go benchmark lists them
    for (int n = 0; n < kNamespaces; ++n) {
      for (int p = 0; p < kPodsPerNamespace; ++p) keys.push_back(absl::StrCat("ns-", n, "/p-", p));
    }
    for (size_t i = 0; i < 1024; ++i) {
      const std::string& s = keys[(i * 7919) % keys.size()];
      const std::string& d = keys[(i * 104729 + 3) % keys.size()];
      np_pod_query q{};
      // Both ids come from each API's own lookup; the verdicts are compared below.
      q.source = *cxx->FindPod(s);
      q.destination = *cxx->FindPod(d);
      uint32_t cs = 0, cd = 0;
      np_engine_find_pod(c, s.c_str(), &cs, nullptr);
      np_engine_find_pod(c, d.c_str(), &cd, nullptr);
      if (cs != q.source || cd != q.destination) std::abort();
      q.protocol = NP_TCP;
      q.port = i % 2 ? 443 : 80;
      queries.push_back(q);
      if (np_engine_allowed(c, q.source, q.destination, NP_TCP, q.port) !=
          (cxx->Allowed(q.source, q.destination, np::Protocol::kTCP, q.port) ? 1 : 0)) {
        std::abort();  // the two paths must agree before their speed means anything
      }
    }
  }
  std::shared_ptr<const np::Engine> cxx;
  np_engine* c = nullptr;
  np_live* live = nullptr;
  np_reader* reader = nullptr;
  std::vector<np_pod_query> queries;
};

Fixture& F() {
  static Fixture* fixture = new Fixture;
  return *fixture;
}

void BM_CxxAllowed(benchmark::State& state) {
  Fixture& f = F();
  size_t i = 0;
  for (auto _ : state) {
    const np_pod_query& q = f.queries[i++ & 1023];
    benchmark::DoNotOptimize(f.cxx->Allowed(q.source, q.destination, np::Protocol::kTCP, q.port));
  }
}

void BM_CAbiAllowed(benchmark::State& state) {
  Fixture& f = F();
  size_t i = 0;
  for (auto _ : state) {
    const np_pod_query& q = f.queries[i++ & 1023];
    benchmark::DoNotOptimize(np_engine_allowed(f.c, q.source, q.destination, NP_TCP, q.port));
  }
}

void BM_CAbiReaderAllowed(benchmark::State& state) {
  Fixture& f = F();
  size_t i = 0;
  for (auto _ : state) {
    const np_pod_query& q = f.queries[i++ & 1023];
    benchmark::DoNotOptimize(np_reader_allowed(f.reader, q.source, q.destination, NP_TCP, q.port));
  }
}

// Items are verdicts: time per item is per verdict. The C++ batch is the floor the C and Go
// batches are measured against (same 1,024 queries, same engine build).
void BM_CxxAllowedBatch(benchmark::State& state) {
  Fixture& f = F();
  std::vector<np::PodQuery> queries;
  for (const np_pod_query& q : f.queries) {
    queries.push_back(np::PodQuery{q.source, q.destination, np::Protocol::kTCP, q.port});
  }
  std::vector<uint8_t> out(queries.size());
  for (auto _ : state) {
    f.cxx->AllowedBatch(queries, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * queries.size());
}

void BM_CAbiReaderBatch(benchmark::State& state) {
  Fixture& f = F();
  std::vector<uint8_t> out(f.queries.size());
  for (auto _ : state) {
    np_reader_allowed_batch(f.reader, f.queries.data(), f.queries.size(), out.data(), nullptr);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * f.queries.size());
}

void BM_CAbiBatch(benchmark::State& state) {
  Fixture& f = F();
  std::vector<uint8_t> out(f.queries.size());
  for (auto _ : state) {
    np_engine_allowed_batch(f.c, f.queries.data(), f.queries.size(), out.data(), nullptr);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * f.queries.size());
}

BENCHMARK(BM_CxxAllowed);
BENCHMARK(BM_CAbiAllowed);
BENCHMARK(BM_CAbiReaderAllowed);
BENCHMARK(BM_CxxAllowedBatch);
BENCHMARK(BM_CAbiBatch);
BENCHMARK(BM_CAbiReaderBatch);

}  // namespace

BENCHMARK_MAIN();
