// Update latency of the eBPF backend for one-pod events (issue 13): a node with `--local`
// pods (veths in a namespace this program creates and deletes) in a cluster of `--pods`
// pods; each event is a pod elsewhere in the cluster added, deleted, relabelled or its
// address reused, applied with Backend::Update. Prints p50/p99 of Update, of its parts
// (BuildMaps of the next IR, PlanIdentityEdit), and of a full Apply for comparison; every
// other event goes through UpdateDelta instead (the delta from DiffPrograms, untimed), and
// its p50/p99 and its plan's are printed too.
// Every fourth event or so is a pod of the node relabelled into another identity, by
// UpdateDelta, timed apart ("UpdateDelta local relabel"). A fourth argument "back-to-back"
// leaves out the untimed work between events.
// A fourth argument "policy" times policy events instead (PolicyMain); "policy-delta" times
// them as deltas through UpdateDelta, natively against the default path (PolicyDeltaMain;
// a fifth argument: the gap between events in ms, default 20).
// Root only.
//   bazel run //np/backends/ebpf:update_bench -- 110 10000 300 [back-to-back|policy|policy-delta [gap_ms]]
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include <bpf/bpf.h>

#include "np/backends/ebpf/ebpf_backend.h"
#include "np/backends/ebpf/loader.h"
#include "np/backends/ebpf/maps.h"
#include "np/backends/ebpf/testing/random_ir.h"
#include "np/backends/util.h"

namespace np::backends::ebpf {
namespace {

struct Pod {
  uint32_t slot;  // 10.1.0.0 + slot, fd00:1::slot
  uint32_t identity;
};

IpAddress V6(uint32_t v) {
  uint8_t b[16] = {0xfd, 0x00};
  for (int i = 0; i < 4; ++i) b[12 + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
  return IpAddress::V6Bytes(b);
}

// `local` pods on the node (10.0.x.y, endpoints l0..), `remote` elsewhere; identities 1..8
// are label classes, 0 outside. Every local pod is selected by one of 8 tables, each
// allowing TCP 80 from two classes and UDP 53 from every pod.
ir::CompiledPolicy NodeIr(int local, const std::vector<Pod>& remote,
                          const std::vector<uint32_t>& local_identity) {
  ir::CompiledPolicy ir;
  constexpr int kClasses = 8;
  for (int i = 0; i <= kClasses; ++i) ir.add_identities()->set_id(static_cast<uint32_t>(i));
  ir.mutable_identities(0)->set_external(true);
  std::vector<std::pair<uint32_t, uint32_t>> v4;
  for (int i = 0; i < local; ++i) v4.push_back({0x0a000001u + static_cast<uint32_t>(i), local_identity[static_cast<size_t>(i)]});
  for (const Pod& p : remote) v4.push_back({0x0a010000u + p.slot, p.identity});
  std::sort(v4.begin(), v4.end());
  for (int family = 0; family < 2; ++family) {
    auto address = [&](uint32_t v) { return family == 0 ? IpAddress::V4(v) : V6(v); };
    auto add = [&](const IpAddress& first, const IpAddress& last, uint32_t identity) {
      testing::AddRange(ir, first, last, identity);
    };
    IpAddress next = family == 0 ? IpAddress::V4(0) : *IpAddress::Parse("::");
    for (const auto& [v, identity] : v4) {
      if (next < address(v)) add(next, address(v - 1), 0);
      add(address(v), address(v), identity);
      next = address(v + 1);
    }
    add(next, family == 0 ? IpAddress::V4(0xffffffffu)
                          : *IpAddress::Parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        0);
  }
  for (int c = 0; c < kClasses; ++c) {
    ir::PeerSet* s = ir.add_peer_sets();
    s->set_id(static_cast<uint32_t>(c));
    s->add_identities(1 + static_cast<uint32_t>(c));
    s->add_identities(1 + static_cast<uint32_t>((c + 1) % kClasses));
    std::sort(s->mutable_identities()->begin(), s->mutable_identities()->end());
  }
  ir::PeerSet* every = ir.add_peer_sets();
  every->set_id(kClasses);
  for (int c = 1; c <= kClasses; ++c) every->add_identities(static_cast<uint32_t>(c));
  for (int t = 0; t < kClasses; ++t) {
    ir::Table* table = ir.add_tables();
    table->set_id(static_cast<uint32_t>(t));
    table->mutable_ingress()->set_isolated(true);
    for (auto [proto, port, set] : {std::tuple<ir::Protocol, uint32_t, uint32_t>{ir::TCP, 80, t},
                                    {ir::UDP, 53, kClasses}}) {
      ir::PortRule* r = table->mutable_ingress()->add_rules();
      r->set_protocol(proto);
      r->set_first_port(port);
      r->set_last_port(port);
      r->set_peer_set(set);
    }
  }
  std::vector<std::string> names;
  for (int i = 0; i < local; ++i) names.push_back(absl::StrCat("l", i));
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const int i = std::atoi(name.c_str() + 1);
    ir::Endpoint* e = ir.add_endpoints();
    e->set_namespace_("x");
    e->set_name(name);
    e->add_ips(IpAddress::V4(0x0a000001u + static_cast<uint32_t>(i)).ToString());
    e->add_ips(V6(0x0a000001u + static_cast<uint32_t>(i)).ToString());
    e->set_selected(true);
    e->set_table(static_cast<uint32_t>(i % kClasses));
  }
  return ir;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Policy events (argv[4] == "policy"): a policy added to and deleted from the node's
// tables with ids kept (as np::AlignNumbering leaves them): a rule TCP 443 from a peer set
// appended for it added to one table, then deleted again (its peer set left a tombstone).
// Each event goes once through Update in place and once as a new generation (Apply of
// the same program on the same instance), alternately, so both see the same load. Also
// splits a new generation's cost: Generation::Load of empty maps (object open, the
// verifier, tiny maps), Load of the node's maps, the fill alone (every entry written again
// into the loaded maps), BuildMaps, and what Apply adds (attach / replace on every veth).
// Policy event `e` of the benchmarks on `previous` (NodeIr's): even ones add a rule (TCP 443
// of table e / 2 % 8 from peer set 9, a tombstone or new, now three classes or so), odd ones
// delete it again (peer set 9 a tombstone).
ir::CompiledPolicy PolicyEvent(const ir::CompiledPolicy& previous, int e, std::mt19937_64& rng) {
  ir::CompiledPolicy next = previous;
  const uint32_t table = static_cast<uint32_t>(e / 2 % 8);
  if (e % 2 == 0) {
    if (next.peer_sets_size() < 10) next.add_peer_sets()->set_id(9);
    ir::PeerSet* set = next.mutable_peer_sets(9);
    set->clear_identities();
    for (uint32_t c = 1; c <= 8; ++c) {
      if (rng() % 3 == 0) set->add_identities(c);
    }
    ir::PortRule* r = next.mutable_tables(static_cast<int>(table))->mutable_ingress()->add_rules();
    r->set_protocol(ir::TCP);
    r->set_first_port(443);
    r->set_last_port(443);
    r->set_peer_set(9);
  } else {
    auto* rules = next.mutable_tables(static_cast<int>(table))->mutable_ingress()->mutable_rules();
    rules->RemoveLast();
    next.mutable_peer_sets(9)->clear_identities();
  }
  return next;
}

// Policy events as deltas (DiffPrograms, untimed) through UpdateDelta: natively (planned
// from the delta, maps.h PlanPolicyEditFromDelta) and through Backend::UpdateDelta's default
// (copy + ApplyDelta + Update, which plans from the whole next program), alternating by
// pairs of events (add and delete) on one backend, `gap_ms` apart (the agent's
// --min-interval). Prints p50/p99 of each and their ratio, and how many events waited for
// the previous edit's grace period.
int PolicyDeltaMain(int local, int cluster, int events, int gap_ms, const std::string& netns,
                    const Attachment& attachment, const std::vector<Pod>& pods,
                    const std::vector<uint32_t>& local_identity) {
  std::unique_ptr<Backend> backend = MakeEbpfBackend();
  ir::CompiledPolicy previous = NodeIr(local, pods, local_identity);
  absl::Status s = backend->Apply(previous, attachment);
  std::vector<double> arm_ms[2];  // 0: native, 1: the default path
  int waited[2] = {0, 0}, wrong_path[2] = {0, 0};
  std::vector<double> wait_ms[2];  // how long the events that waited did
  std::string last_wrong;
  std::mt19937_64 rng(2);
  // The events and their deltas made first, so that with `gap_ms` 0 one edit follows the
  // other at once (and waits for what is left of the previous one's grace period).
  std::vector<std::pair<ir::CompiledPolicy, ir::CompiledPolicyDelta>> steps;
  for (int e = 0; e < events; ++e) {
    const ir::CompiledPolicy& base = steps.empty() ? previous : steps.back().first;
    ir::CompiledPolicy next = PolicyEvent(base, e, rng);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(base, next);
    if (!delta.has_value()) return 1;
    steps.emplace_back(std::move(next), std::move(*delta));
  }
  for (int e = 0; s.ok() && e < events; ++e) {
    const int arm = (e / 2) % 2;
    const ir::CompiledPolicy& next = steps[static_cast<size_t>(e)].first;
    const std::optional<ir::CompiledPolicyDelta> delta = steps[static_cast<size_t>(e)].second;
    const uint64_t before = EbpfPolicyDeltasInPlace(*backend);
    absl::Time t = absl::Now();
    s = arm == 0 ? backend->UpdateDelta(previous, *delta, attachment)
                 : backend->Backend::UpdateDelta(previous, *delta, attachment);
    arm_ms[arm].push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    const std::string path = EbpfLastUpdate(*backend);
    const bool native = EbpfPolicyDeltasInPlace(*backend) == before + 1;
    if (arm == 0 ? !native : (native || !absl::StartsWith(path, "in place: policy"))) {
      ++wrong_path[arm];
      last_wrong = path;
    }
    if (const size_t at = path.find("; waited "); at != std::string::npos) {
      ++waited[arm];
      wait_ms[arm].push_back(std::atof(path.c_str() + at + 9));
    }
    previous = next;
    if (gap_ms > 0) absl::SleepFor(absl::Milliseconds(gap_ms));
  }
  if (!s.ok()) std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  (void)backend->Remove(attachment);
  (void)RunCommand({"ip", "netns", "del", netns});
  if (!s.ok() || arm_ms[0].empty() || arm_ms[1].empty()) return 1;
  std::printf("ebpf policy deltas: %d pods on the node, %d in the cluster, %d events %d ms "
              "apart (policy add / delete), native and default path alternating by pairs; "
              "wrong path taken %d / %d times%s%s\n",
              local, cluster, events, gap_ms, wrong_path[0], wrong_path[1],
              last_wrong.empty() ? "" : ", last: ", last_wrong.c_str());
  for (int arm = 0; arm < 2; ++arm) {
    std::printf("%-34s p50 %8.3f ms  p99 %8.3f ms  max %8.3f ms  waited %d of %zu",
                arm == 0 ? "UpdateDelta native" : "UpdateDelta default (copy+Update)",
                Percentile(arm_ms[arm], 0.5), Percentile(arm_ms[arm], 0.99),
                *std::max_element(arm_ms[arm].begin(), arm_ms[arm].end()), waited[arm],
                arm_ms[arm].size());
    if (!wait_ms[arm].empty()) {
      std::printf(" (p50 %.3f ms, max %.3f ms)", Percentile(wait_ms[arm], 0.5),
                  *std::max_element(wait_ms[arm].begin(), wait_ms[arm].end()));
    }
    std::printf("\n");
  }
  std::printf("ratio native / default: p50 %.3f  p99 %.3f\n",
              Percentile(arm_ms[0], 0.5) / Percentile(arm_ms[1], 0.5),
              Percentile(arm_ms[0], 0.99) / Percentile(arm_ms[1], 0.99));
  return 0;
}

int PolicyMain(int local, int cluster, int events, const std::string& netns,
               const Attachment& attachment, const std::vector<Pod>& pods,
               const std::vector<uint32_t>& local_identity) {
  std::unique_ptr<Backend> backend = MakeEbpfBackend();
  const ir::CompiledPolicy base = NodeIr(local, pods, local_identity);
  absl::Status s = backend->Apply(base, attachment);
  std::vector<double> in_place_ms, full_ms, build_ms, load_empty_ms, load_ms, fill_ms;
  std::vector<double> compare_ms, policy_build_ms, plan_ms, writes;
  int in_place = 0;
  std::string last_full;
  ir::CompiledPolicy previous = base;
  std::mt19937_64 rng(2);
  for (int e = 0; s.ok() && e < events; ++e) {
    ir::CompiledPolicy next = PolicyEvent(previous, e, rng);
    absl::Time t = absl::Now();
    s = backend->Update(previous, next, attachment);
    in_place_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    const std::string path = EbpfLastUpdate(*backend);
    if (absl::StartsWith(path, "in place")) ++in_place; else last_full = path;
    if (!s.ok()) break;
    // The in-place path's parts, alone (the live generation's layout: a fresh load's).
    t = absl::Now();
    absl::Status same = PolicyOnlyChange(previous, next);
    compare_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    t = absl::Now();
    absl::StatusOr<MapContents> policy_maps = BuildPolicyMaps(next);
    policy_build_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    if (!same.ok() || !policy_maps.ok()) return 1;
    if (absl::StatusOr<MapContents> before = BuildPolicyMaps(previous); before.ok()) {
      const PolicyLayout layout = InitialLayout(*before);
      t = absl::Now();
      absl::StatusOr<PolicyEdit> edit = PlanPolicyEdit(layout, *policy_maps, 2);
      plan_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
      if (edit.ok()) writes.push_back(static_cast<double>(edit->Writes()));
    }
    // The same program as a new generation (the next Update then starts from it).
    t = absl::Now();
    s = backend->Apply(next, attachment);
    full_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    previous = std::move(next);
    if (e % 4 != 0) continue;
    // A new generation's parts.
    t = absl::Now();
    absl::StatusOr<MapContents> maps = BuildMaps(previous);
    build_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    if (!maps.ok()) return 1;
    t = absl::Now();
    { auto g = Generation::Load(MapContents{}, {}); if (!g.ok()) return 1; }
    load_empty_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    t = absl::Now();
    absl::StatusOr<std::unique_ptr<Generation>> g = Generation::Load(*maps, {});
    load_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    if (!g.ok()) return 1;
    t = absl::Now();
    const uint8_t present = 1;
    auto put = [&](const char* map, const void* k, const void* v) {
      bpf_map_update_elem((*g)->map_fd(map), k, v, BPF_ANY);
    };
    for (const auto& [k, v] : maps->ident_hosts) {
      put(k.family == NP_FAMILY_V4 ? "np_ident_hosts" : "np_ident_hosts6", &k, &v);
    }
    for (const auto& [k, v] : maps->ident4) put("np_ident4", &k, &v);
    for (const auto& [k, v] : maps->ident6) put("np_ident6", &k, &v);
    for (const auto& [k, v] : maps->endpoints_addr) put("np_endpoints_addr", &k, &v);
    for (uint32_t i = 0; i < maps->tables.size(); ++i) put("np_tables", &i, &maps->tables[i]);
    for (const auto& [k, v] : maps->ports) put("np_ports", &k, &v);
    for (const auto& [k, v] : maps->tiers) put("np_tiers", &k, &v);
    for (const np_member_key& k : maps->members) put("np_members", &k, &present);
    fill_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
  }
  if (!s.ok()) std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  (void)backend->Remove(attachment);
  (void)RunCommand({"ip", "netns", "del", netns});
  if (!s.ok() || in_place_ms.empty() || build_ms.empty() || writes.empty()) return 1;
  std::printf("ebpf policy events: %d pods on the node, %d in the cluster, %zu events (policy "
              "add / delete alternately), %d in place%s%s\n",
              local, cluster, in_place_ms.size(), in_place,
              last_full.empty() ? "" : "; last full: ", last_full.c_str());
  std::printf("writes of an edit: p50 %.0f, max %.0f\n", Percentile(writes, 0.5),
              *std::max_element(writes.begin(), writes.end()));
  for (auto [name, v] : {std::pair<const char*, std::vector<double>*>{"Update in place", &in_place_ms},
                         {"  PolicyOnlyChange", &compare_ms},
                         {"  BuildPolicyMaps", &policy_build_ms},
                         {"  PlanPolicyEdit", &plan_ms},
                         {"new generation (Apply)", &full_ms},
                         {"  BuildMaps", &build_ms},
                         {"  Load, empty maps", &load_empty_ms},
                         {"  Load, the node's maps", &load_ms},
                         {"  fill alone", &fill_ms}}) {
    std::printf("%-26s p50 %8.3f ms  p99 %8.3f ms  max %8.3f ms\n", name, Percentile(*v, 0.5),
                Percentile(*v, 0.99), *std::max_element(v->begin(), v->end()));
  }
  return 0;
}

int Main(int argc, char** argv) {
  const int local = argc > 1 ? std::atoi(argv[1]) : 110;
  const int cluster = argc > 2 ? std::atoi(argv[2]) : 10000;
  const int events = argc > 3 ? std::atoi(argv[3]) : 300;
  // "back-to-back": no untimed work between events (the parts timed alone, a membarrier),
  // so that an event follows the previous one at once and waits for what is left of its
  // grace period (loader.cc EditIdentities).
  const bool back_to_back = argc > 4 && std::string(argv[4]) == "back-to-back";
  const std::string netns = absl::StrCat("npebpf-bench-", getpid());
  if (!RunCommand({"ip", "netns", "add", netns}).ok()) return 1;
  {
    std::ofstream batch("/tmp/" + netns + ".batch");
    for (int i = 0; i < local; ++i) {
      batch << "link add h" << i << " type veth peer name c" << i << "\nlink set h" << i << " up\n";
    }
  }
  absl::Status s = RunCommand({"ip", "-n", netns, "-batch", "/tmp/" + netns + ".batch"}).status();
  Attachment attachment;
  attachment.netns = netns;
  for (int i = 0; i < local; ++i) attachment.interfaces.push_back({absl::StrCat("x/l", i), absl::StrCat("h", i)});
  std::mt19937_64 rng(1);
  std::vector<Pod> pods;
  std::vector<bool> used(static_cast<size_t>(cluster) * 2, false);
  while (static_cast<int>(pods.size()) < cluster - local) {
    uint32_t slot = static_cast<uint32_t>(rng() % used.size());
    if (used[slot]) continue;
    used[slot] = true;
    pods.push_back({slot, 1 + static_cast<uint32_t>(rng() % 8)});
  }
  std::vector<uint32_t> local_identity;
  for (int i = 0; i < local; ++i) local_identity.push_back(1 + static_cast<uint32_t>(i % 8));
  if (argc > 4 && std::string(argv[4]) == "policy") {
    std::remove(("/tmp/" + netns + ".batch").c_str());
    return PolicyMain(local, cluster, events, netns, attachment, pods, local_identity);
  }
  if (argc > 4 && std::string(argv[4]) == "policy-delta") {
    std::remove(("/tmp/" + netns + ".batch").c_str());
    return PolicyDeltaMain(local, cluster, events, argc > 5 ? std::atoi(argv[5]) : 20, netns,
                           attachment, pods, local_identity);
  }
  std::unique_ptr<Backend> backend = MakeEbpfBackend();
  ir::CompiledPolicy previous = NodeIr(local, pods, local_identity);
  std::vector<double> local_ms;  // UpdateDelta of a pod of the node relabelled
  int local_in_place = 0;
  int waited = 0;  // events that waited for the previous edit's grace period
  std::vector<double> apply_ms, update_ms, build_ms, plan_ms, delta_ms, delta_plan_ms, barrier_ms;
  int in_place = 0, delta_in_place = 0;
  std::vector<std::pair<np_endpoint_addr_key, np_endpoint>> local_addresses;
  if (absl::StatusOr<MapContents> m = BuildMaps(previous); m.ok()) local_addresses = m->endpoints_addr;
  std::string last_full;
  for (int i = 0; s.ok() && i < 5; ++i) {
    absl::Time t = absl::Now();
    s = backend->Apply(previous, attachment);
    apply_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
  }
  for (int e = 0; s.ok() && e < events; ++e) {
    const int op = static_cast<int>(rng() % 4);
    if (op == 3) {
      // A pod of the node relabelled into another identity (its table unchanged): by
      // UpdateDelta, timed apart.
      uint32_t& id = local_identity[rng() % local_identity.size()];
      id = 1 + id % 8;
      ir::CompiledPolicy next = NodeIr(local, pods, local_identity);
      std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
      if (!delta.has_value()) {
        s = absl::InternalError("no delta for a local relabel");
        break;
      }
      absl::Time t = absl::Now();
      s = backend->UpdateDelta(previous, *delta, attachment);
      local_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
      const std::string path = EbpfLastUpdate(*backend);
      if (absl::StartsWith(path, "in place")) ++local_in_place; else last_full = path;
      if (absl::StrContains(path, "waited")) ++waited;
      previous = std::move(next);
      continue;
    }
    if (op == 0) {
      uint32_t slot = static_cast<uint32_t>(rng() % used.size());
      if (used[slot]) continue;
      used[slot] = true;
      pods.push_back({slot, 1 + static_cast<uint32_t>(rng() % 8)});
    } else if (op == 1) {
      size_t i = rng() % pods.size();
      used[pods[i].slot] = false;
      pods.erase(pods.begin() + static_cast<long>(i));
    } else {
      Pod& p = pods[rng() % pods.size()];
      p.identity = 1 + p.identity % 8;
    }
    ir::CompiledPolicy next = NodeIr(local, pods, local_identity);
    // Update and UpdateDelta take turns on the same instance, so that both see the same
    // load; the delta (as the agent's lowering would give it) is made untimed.
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
    if (!delta.has_value()) {
      s = absl::InternalError("no delta between two pod events' programs");
      break;
    }
    const bool by_delta = e % 2 == 1;
    absl::Time t = absl::Now();
    s = by_delta ? backend->UpdateDelta(previous, *delta, attachment)
                 : backend->Update(previous, next, attachment);
    (by_delta ? delta_ms : update_ms).push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    const std::string path = EbpfLastUpdate(*backend);
    if (absl::StartsWith(path, "in place")) ++(by_delta ? delta_in_place : in_place); else last_full = path;
    if (absl::StrContains(path, "waited")) ++waited;
    if (back_to_back) {
      previous = std::move(next);
      continue;
    }
    t = absl::Now();
    absl::StatusOr<IdentityEdit> delta_edit =
        PlanIdentityEditFromDelta(previous, *delta, local_addresses);
    delta_plan_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    // One RCU grace period as the in-place edit waits for it (loader.cc Barrier): an edit
    // that adds a pod into a range waits for two.
    t = absl::Now();
    (void)syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
    barrier_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    t = absl::Now();
    absl::StatusOr<MapContents> a = BuildMaps(previous);
    absl::StatusOr<MapContents> b = BuildMaps(next);
    build_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t) / 2);
    t = absl::Now();
    absl::StatusOr<IdentityEdit> edit = PlanIdentityEditFromIr(previous, next);
    plan_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    previous = std::move(next);
  }
  if (!s.ok()) std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  (void)backend->Remove(attachment);
  (void)RunCommand({"ip", "netns", "del", netns});
  std::remove(("/tmp/" + netns + ".batch").c_str());
  if (!s.ok() || update_ms.empty()) return 1;
  std::printf("ebpf update bench: %d pods on the node, %d in the cluster, %zu events by Update "
              "(%d in place), %zu by UpdateDelta (%d in place), %zu local relabels by "
              "UpdateDelta (%d in place); %d waited for the previous edit's grace period%s%s%s\n",
              local, cluster, update_ms.size(), in_place, delta_ms.size(), delta_in_place,
              local_ms.size(), local_in_place, waited, back_to_back ? ", back to back" : "",
              last_full.empty() ? "" : "; last full: ", last_full.c_str());
  for (std::vector<double>* v : {&build_ms, &plan_ms, &delta_plan_ms, &barrier_ms, &local_ms}) {
    if (v->empty()) v->push_back(0);
  }
  for (auto [name, v] : {std::pair<const char*, std::vector<double>*>{"full Apply", &apply_ms},
                         {"Update", &update_ms},
                         {"BuildMaps (one IR)", &build_ms},
                         {"  PlanIdentityEditFromIr", &plan_ms},
                         {"UpdateDelta", &delta_ms},
                         {"  PlanIdentityEditFromDelta", &delta_plan_ms},
                         {"membarrier(GLOBAL) alone", &barrier_ms},
                         {"UpdateDelta local relabel", &local_ms}}) {
    std::printf("%-26s p50 %8.3f ms  p99 %8.3f ms  max %8.3f ms\n", name, Percentile(*v, 0.5),
                Percentile(*v, 0.99), *std::max_element(v->begin(), v->end()));
  }
  return 0;
}

}  // namespace
}  // namespace np::backends::ebpf

int main(int argc, char** argv) { return np::backends::ebpf::Main(argc, argv); }
