// The nft backend on synthetic clusters (bench/cluster_generator.h), for issue 5 item 4:
// ruleset size (rules, chains, sets and maps, set elements) and render/apply time as
// policies grow (100, 1k, 10k policies on 10k pods) and as pods grow at a fixed policy
// count. The IR is compiled for one node (node-0), as a CNI agent would. Each row is also
// recompiled for the whole cluster (every pod an endpoint) to show the worst case.
//
// Apply times need root: the program creates its own network namespace
// ("npnftbench-<pid>"), applies there (first install, then a replace by another ruleset, then
// Remove) and deletes it. Without root only sizes and render times are printed.
//
//   bazel run -c opt //bench:backend_nft_bench            # markdown tables on stdout
//   bazel run -c opt //bench:backend_nft_bench -- 100 1000  # only these policy counts
//   bazel run -c opt //bench:backend_nft_bench -- peers     # only the distinct-peers sweep
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/cluster_generator.h"
#include "bench/backend_timing.h"
#include "bench/synthetic_ir.h"
#include "np/backends/backend.h"
#include "np/backends/nft/nft.h"
#include "np/backends/util.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/lower.h"

namespace np::bench {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) { return SecondsSince(since); }

absl::StatusOr<ir::CompiledPolicy> Compile(const SyntheticOptions& o, const std::string& node) {
  return CompileSynthetic(o, node);
}

struct Row {
  std::string scope;
  int pods = 0, policies = 0, endpoints = 0, identities = 0, tables = 0, ir_rules = 0,
      peer_sets = 0;
  size_t rules = 0, chains = 0, sets = 0, elements = 0, address_elements = 0,
         dispatch_elements = 0, peer_elements = 0, text_bytes = 0;
  double render_s = 0;
  ApplyTimes times;  // -1: not measured
  std::string error;
};

// Sizes and times of `ir`'s program; `replacement` (optional) is what the replace installs.
Row MeasureIr(const ir::CompiledPolicy& ir, const ir::CompiledPolicy* replacement, bool root) {
  Row row;
  row.endpoints = ir.endpoints_size();
  row.identities = ir.identities_size();
  row.tables = ir.tables_size();
  row.peer_sets = ir.peer_sets_size();
  for (const ir::Table& t : ir.tables()) {
    row.ir_rules += t.ingress().rules_size() + t.egress().rules_size();
  }
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<backends::nft::Program> program = backends::nft::Build(ir);
  std::string text;
  if (program.ok()) text = backends::nft::Text(*program);
  row.render_s = Seconds(t0);
  if (!program.ok()) {
    row.error = std::string(program.status().message());
    return row;
  }
  row.rules = program->rule_count();
  row.chains = program->chains.size();
  row.sets = program->sets.size();
  row.elements = program->element_count();
  for (const backends::nft::Set& s : program->sets) {
    if (s.name == "identity4" || s.name == "identity6") {
      row.address_elements += s.elements.size();
    } else if (s.map) {
      row.dispatch_elements += s.elements.size();
    } else {
      row.peer_elements += s.elements.size();
    }
  }
  row.text_bytes = text.size();
  if (!root) return row;
  std::unique_ptr<backends::Backend> backend = backends::MakeNftBackend();
  row.times = TimeApplyReplaceRemove(*backend, ir, replacement, "npnftbench");
  row.error = row.times.error;
  return row;
}

Row Measure(const SyntheticOptions& o, const std::string& node, bool root) {
  absl::StatusOr<ir::CompiledPolicy> ir = Compile(o, node);
  if (!ir.ok()) {
    Row row;
    row.error = std::string(ir.status().message());
    return row;
  }
  // A second ruleset for the replace: the same cluster with another seed.
  SyntheticOptions other = o;
  other.seed = o.seed + 1;
  absl::StatusOr<ir::CompiledPolicy> ir2 = Compile(other, node);
  Row row = MeasureIr(*ir, ir2.ok() ? &*ir2 : nullptr, root);
  row.scope = node.empty() ? "cluster" : node;
  row.pods = o.namespaces * o.pods_per_namespace;
  row.policies = o.policies;
  return row;
}

// Issue 8 item 6: `peers` ipBlock peers, each with a port rule and a peer set of its own.
Row MeasureDistinctPeers(int peers, bool root) {
  absl::StatusOr<ir::CompiledPolicy> ir = CompileObjects(DistinctPeersCluster(peers), "node-0");
  absl::StatusOr<ir::CompiledPolicy> ir2 =
      CompileObjects(DistinctPeersCluster(peers, 1, /*shift=*/1), "node-0");
  if (!ir.ok() || !ir2.ok()) {
    Row row;
    row.error = std::string((ir.ok() ? ir2 : ir).status().message());
    return row;
  }
  Row row = MeasureIr(*ir, &*ir2, root);
  row.scope = absl::StrCat(peers, " peers");
  row.pods = 1;
  row.policies = 1;
  return row;
}

std::string Ms(double s) {
  return s < 0 ? "-" : absl::StrCat(static_cast<int64_t>(s * 1000 + 0.5));
}

void Print(const Row& r) {
  printf("| %d | %d | %s | %d | %d | %d | %d | %d | %zu | %zu | %zu | %zu (%zu + %zu + %zu) | "
         "%zu | %s | %s | %s | %s |%s\n",
         r.policies, r.pods, r.scope.c_str(), r.endpoints, r.identities, r.tables, r.ir_rules,
         r.peer_sets, r.rules, r.chains, r.sets, r.elements, r.address_elements,
         r.dispatch_elements, r.peer_elements, r.text_bytes / 1024, Ms(r.render_s).c_str(),
         Ms(r.times.apply_s).c_str(), Ms(r.times.replace_s).c_str(), Ms(r.times.remove_s).c_str(),
         r.error.empty() ? "" : (" error: " + r.error).c_str());
  fflush(stdout);
}

void Header() {
  printf("| policies | pods | compiled for | endpoints | identities | IR tables | IR rules | "
         "peer sets | nft rules | chains | sets+maps | elements (address + dispatch + peer) | "
         "text KiB | render ms | apply ms | replace ms | remove ms |\n");
  printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
}

void DistinctPeers(bool root) {
  printf("\nDistinct peers (issue 8 item 6; bench/cluster_generator.h DistinctPeersCluster: one "
         "pod, one policy, N ipBlock peers each on a port of its own):\n\n");
  Header();
  for (int peers : {2000, 4000, 8000}) Print(MeasureDistinctPeers(peers, root));
}

int Main(int argc, char** argv) {
  const bool root = geteuid() == 0;
  if (argc > 1 && std::string(argv[1]) == "peers") {  // only the distinct-peers sweep
    DistinctPeers(root);
    return 0;
  }
  const std::vector<int> policies = PolicyCounts(argc, argv);
  printf("nft backend (%s)\n\nPolicies grow, pods fixed (10k pods, 500 namespaces, 50 nodes, "
         "dual-stack):\n\n",
         root ? "apply times measured in a private network namespace" : "not root: no apply");
  Header();
  for (int n : policies) {
    SyntheticOptions o = SizeForPods(10000);
    o.policies = n;
    Print(Measure(o, "node-0", root));
    Print(Measure(o, "", root));
  }
  printf("\nPods grow, policies fixed (2,000 policies, 500 namespaces, 50 nodes; 4, 20 and 60 "
         "pods per namespace):\n\n");
  Header();
  for (int per_namespace : {4, 20, 60}) {
    SyntheticOptions o = SizeForPods(10000);
    o.policies = 2000;
    o.pods_per_namespace = per_namespace;
    Print(Measure(o, "node-0", root));
    Print(Measure(o, "", root));
  }
  DistinctPeers(root);
  return 0;
}

}  // namespace
}  // namespace np::bench

int main(int argc, char** argv) { return np::bench::Main(argc, argv); }
