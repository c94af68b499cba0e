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
//   bazel run //bench:backend_iptables_bench -- policy-events     # Update in place vs full (root)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
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

// ---- Policy events: Update in place vs the full path (issue 13, h46) ----------------------

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

// `ir` with a policy added as np::AlignNumbering would hand it over (ids carried over): a new
// peer set appended — the identities of the pods of the first node endpoint's namespace —
// and a TCP rule from it on the ingress of that endpoint's table (past its TCP rules).
ir::CompiledPolicy WithPolicyAdded(const ir::CompiledPolicy& ir) {
  ir::CompiledPolicy out = ir;
  const ir::Endpoint* first = nullptr;
  for (const ir::Endpoint& e : ir.endpoints()) {
    if (e.selected()) {
      first = &e;
      break;
    }
  }
  if (first == nullptr) return out;
  ir::PeerSet* set = out.add_peer_sets();
  set->set_id(static_cast<uint32_t>(out.peer_sets_size() - 1));
  const std::string prefix = first->namespace_() + "/";
  for (const ir::Identity& identity : ir.identities()) {
    for (const std::string& pod : identity.pods()) {
      if (absl::StartsWith(pod, prefix)) {
        set->add_identities(identity.id());
        break;
      }
    }
  }
  ir::DirectionPolicy* in =
      out.mutable_tables(static_cast<int>(first->table()))->mutable_ingress();
  uint32_t port = 7777;
  for (const ir::PortRule& r : in->rules()) {
    if (r.protocol() == ir::TCP) port = std::max(port, r.last_port() + 1);
  }
  in->set_isolated(true);
  ir::PortRule* rule = in->add_rules();
  rule->set_protocol(ir::TCP);
  rule->set_first_port(std::min<uint32_t>(port, 65535));
  rule->set_last_port(std::min<uint32_t>(port, 65535));
  rule->set_peer_set(set->id());
  return out;
}

// The node programs of issue 13 (110 pods of a 1k-pod cluster; 1,000 pods of a 10k-pod one):
// a policy added and deleted in turn (the deleted one's peer set left as a tombstone), each
// event through Update in one namespace (the in-place rules path) and, in the same minute,
// through Apply in another (the full path Update took before). p50/p99 and processes per
// event for both.
int PolicyEvents() {
  if (geteuid() != 0) {
    printf("policy-events needs root\n");
    return 1;
  }
  printf("| node program | events | in place p50 / p99 ms | procs/event | full (Apply) p50 / p99 ms "
         "| procs/event | how Update went | UpdateDelta p50 / p99 ms (its restores p50) |\n"
         "|---|---|---|---|---|---|---|---|\n");
  struct Shape {
    const char* name;
    SyntheticOptions options;
  };
  SyntheticOptions small;
  small.namespaces = 55;
  small.pods_per_namespace = 20;
  small.policies = 220;
  small.nodes = 10;
  SyntheticOptions large = SizeForPods(10000);
  large.nodes = 10;
  for (const Shape& shape : {Shape{"110 pods / 1k", small}, Shape{"1,000 pods / 10k", large}}) {
    absl::StatusOr<ir::CompiledPolicy> base = Compile(shape.options, "node-0");
    if (!base.ok()) {
      printf("| %s | %s |\n", shape.name, std::string(base.status().message()).c_str());
      continue;
    }
    const ir::CompiledPolicy added = WithPolicyAdded(*base);
    ir::CompiledPolicy deleted = *base;  // the added peer set left as a tombstone
    deleted.add_peer_sets()->set_id(static_cast<uint32_t>(base->peer_sets_size()));
    const std::string a = absl::StrCat("npiptpol-", getpid(), "-a");
    const std::string b = absl::StrCat("npiptpol-", getpid(), "-b");
    const std::string c = absl::StrCat("npiptpol-", getpid(), "-c");
    for (const std::string& n : {a, b, c}) (void)backends::RunCommand({"ip", "netns", "add", n});
    backends::Attachment in_a, in_b, in_c;
    in_a.netns = a;
    in_b.netns = b;
    in_c.netns = c;
    std::unique_ptr<backends::Backend> inc = backends::MakeIptablesBackend();
    std::unique_ptr<backends::Backend> full = backends::MakeIptablesBackend();
    // The same events as deltas (DiffPrograms, as np/lower_delta.h sends a policy event)
    // through UpdateDelta, in a third namespace.
    std::unique_ptr<backends::Backend> by_delta = backends::MakeIptablesBackend();
    const std::optional<ir::CompiledPolicyDelta> deltas[2] = {
        backends::DiffPrograms(deleted, added), backends::DiffPrograms(added, deleted)};
    std::vector<double> inc_ms, full_ms, delta_ms, restore_ms;
    int64_t inc_procs = 0, full_procs = 0;
    std::map<std::string, int> how;
    absl::Status s = inc->Apply(deleted, in_a);
    if (s.ok()) s = full->Apply(deleted, in_b);
    if (s.ok()) s = by_delta->Apply(deleted, in_c);
    constexpr int kEvents = 40;
    for (int i = 0; i < kEvents && s.ok(); ++i) {
      const ir::CompiledPolicy& previous = i % 2 == 0 ? deleted : added;
      const ir::CompiledPolicy& next = i % 2 == 0 ? added : deleted;
      int64_t procs = backends::IptablesProcessesSpawned();
      auto t0 = std::chrono::steady_clock::now();
      s = inc->Update(previous, next, in_a);
      inc_ms.push_back(Seconds(t0) * 1000);
      inc_procs += backends::IptablesProcessesSpawned() - procs;
      const std::string path = backends::IptablesLastUpdate(*inc);
      ++how[path.substr(0, path.find(':'))];
      if (!s.ok()) break;
      procs = backends::IptablesProcessesSpawned();
      t0 = std::chrono::steady_clock::now();
      s = full->Apply(next, in_b);
      full_ms.push_back(Seconds(t0) * 1000);
      full_procs += backends::IptablesProcessesSpawned() - procs;
      if (!s.ok() || !deltas[i % 2].has_value()) continue;
      t0 = std::chrono::steady_clock::now();
      s = by_delta->UpdateDelta(previous, *deltas[i % 2], in_c);
      delta_ms.push_back(Seconds(t0) * 1000);
      // The restores' share, as the rules path reports it ("...; ms: ..., restore R, ...").
      const std::string how = backends::IptablesLastUpdate(*by_delta);
      const size_t at = how.find(", restore ");
      double restore = 0;
      if (at != std::string::npos &&
          absl::SimpleAtod(how.substr(at + 10, how.find(',', at + 10) - at - 10), &restore)) {
        restore_ms.push_back(restore);
      }
    }
    std::string paths;
    for (const auto& [path, n] : how) {
      absl::StrAppend(&paths, paths.empty() ? "" : ", ", n, " ", path);
    }
    if (!s.ok()) absl::StrAppend(&paths, "; error: ", s.message());
    const double n = std::max<size_t>(inc_ms.size(), 1);
    printf("| %s (%d endpoints, %d tables, %d peer sets) | %zu | %.1f / %.1f | %.1f | %.1f / %.1f | "
           "%.1f | %s | %.1f / %.1f (%.1f) |\n",
           shape.name, base->endpoints_size(), base->tables_size(), base->peer_sets_size(),
           inc_ms.size(), Percentile(inc_ms, 0.5), Percentile(inc_ms, 0.99),
           static_cast<double>(inc_procs) / n, Percentile(full_ms, 0.5), Percentile(full_ms, 0.99),
           static_cast<double>(full_procs) / std::max<size_t>(full_ms.size(), 1), paths.c_str(),
           Percentile(delta_ms, 0.5), Percentile(delta_ms, 0.99), Percentile(restore_ms, 0.5));
    (void)inc->Remove(in_a);
    (void)full->Remove(in_b);
    (void)by_delta->Remove(in_c);
    for (const std::string& ns : {a, b, c}) (void)backends::RunCommand({"ip", "netns", "del", ns});
  }
  return 0;
}

int Main(int argc, char** argv) {
  const bool root = geteuid() == 0;
  if (argc > 1 && std::string(argv[1]) == "policy-events") return PolicyEvents();
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
