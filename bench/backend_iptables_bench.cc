// The iptables + ipset backend on synthetic clusters (bench/cluster_generator.h), for
// issue 5 item 4: ruleset size (iptables rules, ipset sets and entries) and apply time as
// policies grow (100, 1k, 10k policies on 10k pods), and as pods grow at a fixed policy
// count. The IR is compiled for one node (node-0), as a CNI agent would.
//
// Apply times need root: the program creates its own network namespace
// ("npiptbench-<pid>"), applies there (first install, then a replace by the ruleset of
// the same cluster generated with another seed, then Remove; medians of three rounds) and
// deletes it. Without root only the sizes are printed.
//
//   bazel run -c opt //bench:backend_iptables_bench            # markdown table on stdout
//   bazel run -c opt //bench:backend_iptables_bench -- 100 1000  # only these policy counts
//   bazel run -c opt //bench:backend_iptables_bench -- peers     # only the distinct-peers sweep
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
#include "np/backends/iptables/iptables.h"
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
  std::string label;
  int pods = 0, policies = 0, endpoints = 0, tables = 0, ir_rules = 0, peer_sets = 0;
  backends::iptables::Ruleset rs;
  double render_s = 0;
  ApplyTimes times;  // -1: not measured
  std::string error;
};

// Sizes and times of `ir`'s ruleset; `replacement` (optional) is what the replace installs.
Row MeasureIr(const ir::CompiledPolicy& ir, const ir::CompiledPolicy* replacement, bool root,
              const backends::BackendOptions& options = {}) {
  Row row;
  row.endpoints = ir.endpoints_size();
  row.tables = ir.tables_size();
  row.peer_sets = ir.peer_sets_size();
  for (const ir::Table& t : ir.tables()) row.ir_rules += t.ingress().rules_size() + t.egress().rules_size();
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<backends::iptables::Ruleset> rs = backends::iptables::RenderRuleset(ir);
  row.render_s = Seconds(t0);
  if (!rs.ok()) {
    row.error = std::string(rs.status().message());
    return row;
  }
  row.rs = *std::move(rs);
  if (!root) return row;
  std::unique_ptr<backends::Backend> backend = backends::MakeIptablesBackend(options);
  row.times = TimeApplyReplaceRemove(*backend, ir, replacement, "npiptbench");
  row.error = row.times.error;
  return row;
}

Row Measure(const SyntheticOptions& o, bool root, const std::string& node = "node-0") {
  // A second ruleset for the replace: the same cluster with another seed.
  SyntheticOptions other = o;
  other.seed = o.seed + 1;
  absl::StatusOr<ir::CompiledPolicy> ir = Compile(o, node);
  absl::StatusOr<ir::CompiledPolicy> ir2 = Compile(other, node);
  Row row;
  if (!ir.ok() || !ir2.ok()) {
    row.error = std::string((ir.ok() ? ir2 : ir).status().message());
  } else {
    row = MeasureIr(*ir, &*ir2, root);
  }
  row.pods = o.namespaces * o.pods_per_namespace;
  row.policies = o.policies;
  return row;
}

// Issue 8 item 6: `peers` ipBlock peers, each with a port rule and a peer set of its own, each
// `prefixes` CIDR prefixes. The ipset budget is lifted, to measure what it guards against.
Row MeasureDistinctPeers(int peers, bool root, int prefixes = 1) {
  backends::BackendOptions unbudgeted;
  unbudgeted.budgets["ipsets"] = 65472;
  absl::StatusOr<ir::CompiledPolicy> ir =
      CompileObjects(DistinctPeersCluster(peers, prefixes), "node-0");
  absl::StatusOr<ir::CompiledPolicy> ir2 =
      CompileObjects(DistinctPeersCluster(peers, prefixes, /*shift=*/1), "node-0");
  Row row;
  if (!ir.ok() || !ir2.ok()) {
    row.error = std::string((ir.ok() ? ir2 : ir).status().message());
  } else {
    row = MeasureIr(*ir, &*ir2, root, unbudgeted);
  }
  row.pods = 1;
  row.policies = 1;
  return row;
}

std::string Ms(double s) { return s < 0 ? "-" : absl::StrCat(static_cast<int64_t>(s * 1000 + 0.5)); }

void Print(const Row& r) {
  const auto& x = r.rs;
  printf("| %d | %d | %d | %d | %d | %d | %d + %d | %d + %d | %d + %d | %lld + %lld | %s | %s | %s | %s |%s\n",
         r.policies, r.pods, r.endpoints, r.tables, r.ir_rules, r.peer_sets, x.rules[0],
         x.rules[1], x.port_rules[0], x.port_rules[1], x.sets[0], x.sets[1],
         static_cast<long long>(x.set_entries[0]), static_cast<long long>(x.set_entries[1]),
         Ms(r.render_s).c_str(), Ms(r.times.apply_s).c_str(), Ms(r.times.replace_s).c_str(),
         Ms(r.times.remove_s).c_str(), r.error.empty() ? "" : (" error: " + r.error).c_str());
  fflush(stdout);
}

void Header() {
  printf("| policies | pods | node endpoints | tables | IR rules | peer sets | iptables rules "
         "(v4 + v6) | of which port rules | ipset sets | set entries | render ms | apply ms | "
         "replace ms | remove ms |\n");
  printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
}

void DistinctPeers(bool root) {
  printf("\nDistinct peers (issue 8 item 6; bench/cluster_generator.h DistinctPeersCluster: one "
         "pod, one policy, N ipBlock peers each on a port of its own):\n\n");
  Header();
  for (int peers : {2000, 4000, 8000}) Print(MeasureDistinctPeers(peers, root));
  printf("\nThe same with peers of %d prefixes each (more than kMaxInlinePrefixes: one ipset per "
         "peer; the ipsets budget lifted):\n\n", backends::iptables::kMaxInlinePrefixes + 1);
  Header();
  for (int peers : {2000, 4000, 8000}) {
    Print(MeasureDistinctPeers(peers, root, backends::iptables::kMaxInlinePrefixes + 1));
  }
}

int Main(int argc, char** argv) {
  const bool root = geteuid() == 0;
  if (argc > 1 && std::string(argv[1]) == "peers") {  // only the distinct-peers sweep
    DistinctPeers(root);
    return 0;
  }
  const std::vector<int> policies = PolicyCounts(argc, argv);
  printf("iptables backend, IR compiled for node-0 (%s)\n\nPolicies grow, pods fixed "
         "(10k pods, 500 namespaces, 50 nodes, dual-stack):\n\n",
         root ? "apply times measured in a private network namespace" : "not root: no apply");
  Header();
  for (int n : policies) {
    SyntheticOptions o = SizeForPods(10000);
    o.policies = n;
    Print(Measure(o, root));
  }
  printf("\nPods grow, policies fixed (2,000 policies, 500 namespaces, 50 nodes; 4, 20 and 60 "
         "pods per namespace):\n\n");
  Header();
  for (int per_namespace : {4, 20, 60}) {
    SyntheticOptions o = SizeForPods(10000);
    o.policies = 2000;
    o.pods_per_namespace = per_namespace;
    Print(Measure(o, root));
  }
  printf("\nWorst case: the whole 10k-pod cluster compiled as one node (every pod an "
         "endpoint):\n\n");
  Header();
  for (int n : {2000, 10000}) {
    SyntheticOptions o = SizeForPods(10000);
    o.policies = n;
    Print(Measure(o, root, ""));
  }
  DistinctPeers(root);
  return 0;
}

}  // namespace
}  // namespace np::bench

int main(int argc, char** argv) { return np::bench::Main(argc, argv); }
