// PodDeltaLowering against the whole lowering: on random clusters with random pod churn on
// and off the node (with and without policy tiers), whenever a delta comes out,
// ApplyDelta(installed, delta) must mean LowerToIr(next) (EquivalentPrograms), keep installed
// ids, leave tombstones of np/lower_align.h's shape, and equal it field for field while the
// program is densely numbered; and most pod events (a floor of them adding or retiring a
// table) must come out as deltas, so that the check is not vacuous.
// Replay: NP_LOWER_DELTA_SEED=<seed> runs that seed alone (printed on failure);
// NP_LOWER_DELTA_SEEDS=<n> runs seeds 0..n-1 (default 300).
// Policy events (LowerPolicyChange) likewise, against LowerToIr(next) up to numbering
// (EquivalentPrograms), with the numbering rules of np/lower_align.h checked directly.
// Policy and namespace events that split or merge pods' identities are deltas too (a floor).
// Replay: NP_POLICY_DELTA_SEED=<seed>; NP_POLICY_DELTA_SEEDS=<n> runs n seeds (default 240).
#include "np/lower_delta.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <type_traits>
#include <variant>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "np/backends/util.h"
#include "np/internal/ir_ranges.h"
#include "np/lower.h"
#include "np/lower_align.h"
#include "np/testgen/random_cluster.h"

namespace np {
namespace {

// A random cluster's engine as the seed varies it: scoped to node-1 on three seeds in four
// (else every pod is an endpoint), self traffic always allowed on one in five.
absl::StatusOr<std::shared_ptr<const Engine>> BuildForSeed(ClusterObjects objects,
                                                           uint64_t seed) {
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  if (!cluster.ok()) return cluster.status();
  EngineOptions options;
  if (seed % 4 != 3) options.node_name = "node-1";
  if (seed % 5 == 2) options.evaluation.always_allow_self = true;
  return Engine::Build(*cluster, options);
}

std::string Key(const k8s::Pod& pod) {
  return pod.metadata().namespace_() + "/" + pod.metadata().name();
}

void SetAddresses(k8s::Pod* pod, int index, bool v4, bool v6) {
  pod->mutable_status()->clear_podips();
  pod->mutable_status()->clear_podip();
  if (v4) pod->mutable_status()->add_podips()->set_ip(absl::StrCat("10.0.0.", index));
  if (v6) pod->mutable_status()->add_podips()->set_ip(absl::StrCat("fd00::", index));
}

// A pod of `ns` labelled app=`app`, on `node`, with the IPv4 address of `address`.
k8s::Pod AppPod(const std::string& ns, const std::string& name, const std::string& app,
                int address, const std::string& node = "node-1") {
  k8s::Pod p;
  p.mutable_metadata()->set_namespace_(ns);
  p.mutable_metadata()->set_name(name);
  (*p.mutable_metadata()->mutable_labels())["app"] = app;
  p.mutable_spec()->set_nodename(node);
  SetAddresses(&p, address, true, false);
  return p;
}

// node-1's engine of `objects`; a cluster the objects do not make fails the test.
std::shared_ptr<const Engine> NodeOneEngine(ClusterObjects objects) {
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  EngineOptions options;
  options.node_name = "node-1";
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return *std::move(engine);
}

// Whether every table is named by an endpoint and the tables' first endpoints come in id order
// (LowerToIr's numbering).
bool TablesInFirstEndpointOrder(const ir::CompiledPolicy& p) {
  std::set<uint32_t> seen;
  uint32_t next = 0;
  for (const ir::Endpoint& e : p.endpoints()) {
    if (!e.selected() || !seen.insert(e.table()).second) continue;
    if (e.table() != next++) return false;
  }
  return next == static_cast<uint32_t>(p.tables_size());
}

// The peer sets some rule names.
std::set<uint32_t> PeerSetsNamed(const ir::CompiledPolicy& p) {
  std::set<uint32_t> named;
  for (const ir::Table& t : p.tables()) {
    for (const ir::DirectionPolicy* d : {&t.ingress(), &t.egress()}) {
      for (const ir::PortRule& r : d->rules()) named.insert(r.peer_set());
      for (const ir::TierRule& r : d->admin()) named.insert(r.peer_set());
      for (const ir::TierRule& r : d->baseline()) named.insert(r.peer_set());
    }
  }
  return named;
}

// The identities some range carries.
std::set<uint32_t> LiveIdentities(const ir::CompiledPolicy& p) {
  std::set<uint32_t> live;
  for (const auto* ranges : {&p.ipv4(), &p.ipv6()}) {
    for (const ir::AddressRange& r : *ranges) live.insert(r.identity());
  }
  return live;
}

// The identity rules of a delta (proto/compiled.proto, np/lower_align.h), from `before` to
// `after`: none removed, installed ids keep their `external`, and every identity no range
// carries is a tombstone: no pods, not external, in no peer set.
void ExpectIdentitiesKept(const ir::CompiledPolicy& before, const ir::CompiledPolicy& after) {
  ASSERT_GE(after.identities_size(), before.identities_size());
  for (int i = 0; i < before.identities_size(); ++i) {
    ASSERT_EQ(after.identities(i).external(), before.identities(i).external()) << "identity " << i;
  }
  const std::set<uint32_t> live = LiveIdentities(after);
  for (const ir::Identity& identity : after.identities()) {
    if (live.count(identity.id()) != 0) continue;
    ASSERT_TRUE(identity.pods().empty() && !identity.external())
        << "identity " << identity.id() << " carries no address but is not a tombstone";
  }
  for (const ir::PeerSet& set : after.peer_sets()) {
    for (uint32_t id : set.identities()) {
      ASSERT_NE(live.count(id), 0u) << "peer set " << set.id() << " names unused identity " << id;
    }
  }
}

// Whether every peer set is named by a rule and the sets' first uses come in id order, rules
// read as LowerToIr interns them (tables in id order; ingress, then egress; port rules, then
// tier rules): a new table that took a retired table's id may name sets out of that order.
bool PeerSetsInFirstUseOrder(const ir::CompiledPolicy& p) {
  std::set<uint32_t> seen;
  uint32_t next = 0;
  bool in_order = true;
  for (const ir::Table& t : p.tables()) {
    for (const ir::DirectionPolicy* d : {&t.ingress(), &t.egress()}) {
      auto use = [&](uint32_t set) {
        if (seen.insert(set).second) in_order = in_order && set == next++;
      };
      for (const ir::PortRule& r : d->rules()) use(r.peer_set());
      for (const ir::TierRule& r : d->admin()) use(r.peer_set());
      for (const ir::TierRule& r : d->baseline()) use(r.peer_set());
    }
  }
  return in_order && next == static_cast<uint32_t>(p.peer_sets_size());
}

// The numbering rules of np/lower_align.h across a pod delta, from `before` to `after`:
// installed ids kept (nothing removed), a table an endpoint names in both programs unchanged
// (a pod event changes a live table's rules only when an identity comes or goes:
// `identities_changed`, or when every endpoint that named it is one the delta edits: a new
// table took its id, as it takes the id most of its endpoints had), every table no endpoint
// names and every peer set no rule names of the fixed tombstone shape.
void ExpectTablesKept(const ir::CompiledPolicy& before, const ir::CompiledPolicy& after,
                      bool identities_changed = false,
                      const ir::CompiledPolicyDelta* delta = nullptr) {
  ASSERT_GE(after.tables_size(), before.tables_size());
  ASSERT_GE(after.peer_sets_size(), before.peer_sets_size());
  auto named = [](const ir::CompiledPolicy& p) {
    std::set<uint32_t> tables;
    for (const ir::Endpoint& e : p.endpoints()) {
      if (e.selected()) tables.insert(e.table());
    }
    return tables;
  };
  // Endpoints the delta edits, deletes included (the slices it replaces).
  std::set<std::pair<std::string, std::string>> edited;
  if (delta != nullptr) {
    for (const ir::EndpointSliceEdit& edit : delta->endpoints()) {
      for (const ir::Endpoint& e : edit.endpoints()) edited.emplace(e.namespace_(), e.name());
      for (uint32_t i = edit.begin(); i < edit.end(); ++i) {
        const ir::Endpoint& e = before.endpoints(static_cast<int>(i));
        edited.emplace(e.namespace_(), e.name());
      }
    }
  }
  std::set<uint32_t> kept_endpoints;  // tables some endpoint the delta leaves names before
  for (const ir::Endpoint& e : before.endpoints()) {
    if (e.selected() && edited.count({e.namespace_(), e.name()}) == 0) {
      kept_endpoints.insert(e.table());
    }
  }
  const std::set<uint32_t> was = named(before), is = named(after);
  for (uint32_t t : is) {
    if (!identities_changed && t < static_cast<uint32_t>(before.tables_size()) &&
        was.count(t) != 0 && kept_endpoints.count(t) != 0) {
      ASSERT_TRUE(
          google::protobuf::util::MessageDifferencer::Equals(before.tables(t), after.tables(t)))
          << "table " << t << " changed";
    }
  }
  const std::set<uint32_t> sets_named = PeerSetsNamed(after);
  for (const ir::Table& t : after.tables()) {
    if (is.count(t.id()) != 0) continue;
    ir::DirectionPolicy empty;
    ASSERT_TRUE(t.policies_size() == 0 &&
                google::protobuf::util::MessageDifferencer::Equals(t.ingress(), empty) &&
                google::protobuf::util::MessageDifferencer::Equals(t.egress(), empty))
        << "table " << t.id() << " is named by no endpoint but is not a tombstone";
  }
  for (const ir::PeerSet& set : after.peer_sets()) {
    if (sets_named.count(set.id()) != 0) continue;
    ASSERT_TRUE(!set.all() && set.identities_size() == 0)
        << "peer set " << set.id() << " is named by no rule but is not a tombstone";
  }
}

struct Counts {
  int pod_events = 0;
  int expressed = 0;
  int table_deltas = 0;  // of those, adding or retiring a table
  int exact = 0;  // of those, compared field for field with the whole lowering
  // Deltas onto a densely numbered program that keep its identities: exact candidates.
  int dense_same_identities = 0;
  // Of the deltas: identities that came (appended, or an unused id taken again) and went.
  int identities_appended = 0, identities_reused = 0, identities_retired = 0;
  // Deltas that gave an installed peer set some rule names new content without a table.
  int sets_rewritten = 0;
  std::map<std::string, int> refusals;  // why not, for the log
};

// The identity floors' counts, for the log.
std::string IdentityCounts(const Counts& counts) {
  return absl::StrCat("  identities: ", counts.identities_appended, " appended, ",
                      counts.identities_reused, " unused ids taken again, ",
                      counts.identities_retired, " retired; ", counts.sets_rewritten,
                      " deltas gave a named peer set new content in place\n");
}

// One seed: a cluster, then `steps` batches of changes; returns through `counts`.
// `relabel_heavy`: most events move a pod into another pod's labels, half of them with its
// containers too (its named ports: then exactly into that pod's class).
// `aligned`: whole lowerings go through AlignNumbering onto the installed program, as the
// agent's do (tombstones, ids not in first-endpoint order).
void RunSeed(uint64_t seed, int steps, Counts* counts, bool relabel_heavy = false,
             bool aligned = false) {
  SCOPED_TRACE(absl::StrCat("seed ", seed, " (replay: NP_LOWER_DELTA_SEED=", seed, ")"));
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  testgen::RandomClusterOptions generator_options;
  generator_options.max_pods = 14;
  generator_options.shared_address_chance = 0.02;
  generator_options.tier_chance = seed % 3 == 0 ? 1 : 0;
  testgen::RandomCluster generator(seed, generator_options);
  ClusterObjects objects = generator.Objects();
  std::map<std::string, k8s::Pod> pods;  // what the engine holds, by key
  for (const auto& p : objects.pods) pods[Key(p.object)] = p.object;
  absl::StatusOr<std::shared_ptr<const Engine>> engine = BuildForSeed(std::move(objects), seed);
  ASSERT_TRUE(engine.ok()) << engine.status();
  absl::StatusOr<ir::CompiledPolicy> installed = LowerToIr(**engine);
  if (!installed.ok()) return;  // a domainNames Deny: refused whole, nothing to update
  PodDeltaLowering index = PodDeltaLowering::Index(*engine, *installed);
  std::shared_ptr<const Engine> current = *engine;
  int next_name = 0;
  bool dense = !aligned;  // `installed` numbered as LowerToIr numbers it

  for (int step = 0; step < steps; ++step) {
    SCOPED_TRACE(absl::StrCat("step ", step));
    std::vector<Change> changes;
    std::vector<std::string> keys;
    bool pods_only = uniform(0, 9) != 0;
    if (!pods_only) {
      absl::StatusOr<Cluster> now = current->ToCluster();
      ASSERT_TRUE(now.ok());
      changes.push_back(generator.RandomChange(*now));
      if (const auto* pod = std::get_if<k8s::Pod>(&changes.back().object)) {
        if (changes.back().op == Change::Op::kDelete) {
          pods.erase(Key(*pod));
        } else {
          pods[Key(*pod)] = *pod;
        }
        keys.push_back(Key(*pod));
        pods_only = true;
      }
    } else {
      std::set<int> used;
      for (const auto& [k, p] : pods) {
        for (const auto& ip : p.status().podips()) {
          std::string text = ip.ip();
          size_t dot = text.rfind('.');
          if (dot != std::string::npos) used.insert(std::atoi(text.c_str() + dot + 1));
        }
      }
      // A free address near `near` (the generator's ipBlocks cut the range: a near address
      // more likely keeps the pod's peer class, the case deltas exist for).
      auto fresh_index = [&](int near) {
        for (int tries = 0; tries < 50; ++tries) {
          int i = tries < 20 ? std::clamp(near + uniform(-4, 4), 1, 249) : uniform(1, 249);
          if (used.insert(i).second) return i;
        }
        return uniform(1, 249);  // maybe shared: the delta must then refuse or be right
      };
      for (int n = uniform(0, 2) == 0 ? uniform(2, 3) : 1; n > 0; --n) {  // mostly one event
        int kind = pods.empty() ? 0 : uniform(0, 8) / 2;  // kind 4 (new labels) 1 in 9
        if (relabel_heavy && !pods.empty() && uniform(0, 3) != 0) kind = 2;
        auto pick = [&]() -> k8s::Pod& {
          auto it = pods.begin();
          std::advance(it, uniform(0, static_cast<int>(pods.size()) - 1));
          return it->second;
        };
        k8s::Pod pod;
        auto index_of = [](const k8s::Pod& p) {
          for (const auto& ip : p.status().podips()) {
            size_t dot = ip.ip().rfind('.');
            if (dot != std::string::npos) return std::atoi(ip.ip().c_str() + dot + 1);
          }
          return 100;
        };
        if (kind == 0) {  // a new pod like an existing one (same peer class, likely)
          pod = pods.empty() ? generator.RandomPod("ns0", "x", 1) : pick();
          pod.mutable_metadata()->set_name(absl::StrCat("d", next_name++));
          pod.mutable_spec()->set_nodename(uniform(0, 1) ? "node-1" : "node-2");
          SetAddresses(&pod, fresh_index(index_of(pod)), uniform(0, 5) != 0, uniform(0, 5) != 0);
        } else if (kind == 1) {  // delete
          pod = pick();
          std::string key = Key(pod);
          pods.erase(key);
          keys.push_back(key);
          changes.push_back(Change{Change::Op::kDelete, pod});
          continue;
        } else if (kind == 2) {  // relabel as another pod (and its ports: into its class)
          pod = pick();
          const k8s::Pod& like = pick();
          *pod.mutable_metadata()->mutable_labels() = like.metadata().labels();
          if (relabel_heavy && uniform(0, 1) == 0) {
            *pod.mutable_spec()->mutable_containers() = like.spec().containers();
          }
        } else if (kind == 3) {  // new address (or its address given to a new pod)
          pod = pick();
          if (uniform(0, 1) == 0) {
            SetAddresses(&pod, fresh_index(index_of(pod)), true, uniform(0, 3) != 0);
          } else {  // IP reuse: delete it, a new pod with its labels takes its address
            std::string key = Key(pod);
            pods.erase(key);
            keys.push_back(key);
            changes.push_back(Change{Change::Op::kDelete, pod});
            pod.mutable_metadata()->set_name(absl::StrCat("d", next_name++));
          }
        } else {  // a random pod of the generator's (new labels: often a new class)
          pod = generator.RandomPod(pick().metadata().namespace_(), absl::StrCat("d", next_name++),
                                    fresh_index(uniform(1, 249)));
        }
        pods[Key(pod)] = pod;
        keys.push_back(Key(pod));
        changes.push_back(Change{Change::Op::kUpsert, pod});
      }
    }
    absl::StatusOr<std::shared_ptr<const Engine>> next = current->Apply(changes);
    ASSERT_TRUE(next.ok()) << next.status();
    absl::StatusOr<ir::CompiledPolicy> expected = LowerToIr(**next);
    ASSERT_TRUE(expected.ok()) << expected.status();
    std::optional<PodDelta> delta;
    if (pods_only) {
      counts->pod_events++;
      std::string why;
      delta = index.Lower(*next, *installed, keys, &why);
      if (!delta) counts->refusals[why]++;
    }
    if (delta) {
      counts->expressed++;
      const ir::CompiledPolicy before = *installed;
      absl::Status applied = backends::ApplyDelta(delta->delta, &*installed);
      ASSERT_TRUE(applied.ok()) << applied << "\n" << delta->delta.DebugString();
      ASSERT_TRUE(backends::CheckIr(*installed).ok()) << backends::CheckIr(*installed);
      // The meaning of the whole lowering, with installed's ids: the same tables and peer
      // sets (by id); identities only appended, unused ones tombstones.
      std::string why;
      ASSERT_TRUE(backends::EquivalentPrograms(*expected, *installed, &why))
          << why << "\ndelta:\n" << delta->delta.DebugString();
      ASSERT_NO_FATAL_FAILURE(ExpectIdentitiesKept(before, *installed));
      const std::set<uint32_t> live_before = LiveIdentities(before), live = LiveIdentities(*installed);
      const bool identities_changed = live_before != live;
      for (uint32_t id : live) {
        if (live_before.count(id) != 0) continue;
        if (id >= static_cast<uint32_t>(before.identities_size())) {
          counts->identities_appended++;
        } else {
          counts->identities_reused++;
        }
      }
      for (uint32_t id : live_before) counts->identities_retired += live.count(id) == 0 ? 1 : 0;
      ASSERT_NO_FATAL_FAILURE(
          ExpectTablesKept(before, *installed, identities_changed, &delta->delta));
      if (delta->delta.tables_size() == 0) {
        const std::set<uint32_t> named = PeerSetsNamed(before);
        for (const ir::PeerSet& set : delta->delta.peer_sets()) {
          if (named.count(set.id()) != 0) {
            counts->sets_rewritten++;
            break;
          }
        }
      }
      if (delta->delta.tables_size() > 0) counts->table_deltas++;
      // Numbered densely before (a whole lowering, or exact deltas since), and still dense
      // (no tombstone, no identity that came or went: the whole lowering numbers classes
      // afresh) with the tables in first-endpoint order: exactly the whole lowering, field
      // for field.
      if (dense && !identities_changed) counts->dense_same_identities++;
      dense = dense && !identities_changed && TablesInFirstEndpointOrder(*installed) &&
              PeerSetsInFirstUseOrder(*installed);
      if (dense) {
        std::string report;
        {
          google::protobuf::util::MessageDifferencer differencer;
          differencer.ReportDifferencesToString(&report);
          if (differencer.Compare(*expected, *installed)) report.clear();
        }
        ASSERT_TRUE(report.empty()) << report << "\ndelta:\n" << delta->delta.DebugString();
        counts->exact++;
      }
      index.Commit(*delta);
      index.Recycle(*std::move(delta));  // as the agent does: the next delta reuses it
    } else {
      if (aligned) {
        absl::StatusOr<ir::CompiledPolicy> a = AlignNumbering(*installed, *std::move(expected));
        ASSERT_TRUE(a.ok()) << a.status();
        installed = *std::move(a);
      } else {
        installed = *std::move(expected);
      }
      dense = !aligned;
      index = PodDeltaLowering::Index(*next, *installed);
    }
    current = *next;
  }
}

// ToCidrs' IPv6 text is written by hand (AppendV6Prefix, for speed): it must equal
// IpPrefix::ToString (np/types.cc, RFC 5952), the text LowerToIr wrote before, on addresses
// with every pattern of zero groups (the "::" rules) and every length. NP_CIDR_SEED=<n>
// replays one seed.
TEST(ToCidrs, Ipv6TextEqualsIpPrefixToString) {
  uint64_t first_seed = 0, seeds = 20;
  if (const char* seed = std::getenv("NP_CIDR_SEED")) {
    first_seed = std::strtoull(seed, nullptr, 10);
    seeds = 1;
  }
  for (uint64_t seed = first_seed; seed < first_seed + seeds; ++seed) {
    std::mt19937_64 rng(seed);
    auto random_value = [&] {
      // Each group zero, small, or any: runs of zeros of every length and place.
      internal::U128 v = 0;
      for (int i = 0; i < 8; ++i) {
        const uint64_t kind = rng() % 3;
        const uint16_t g = kind == 0 ? 0 : kind == 1 ? rng() % 16 : static_cast<uint16_t>(rng());
        v = (v << 16) | g;
      }
      return v;
    };
    for (int i = 0; i < 2000; ++i) {
      const internal::U128 v = random_value();
      const int length = static_cast<int>(rng() % 129);
      const internal::U128 mask = length == 0 ? 0 : ~internal::U128{0} << (128 - length);
      const internal::U128 network = v & mask;
      std::string text;
      internal::AppendV6Prefix(network, length, &text);
      ASSERT_EQ(text, IpPrefix(internal::ToAddress(network, 1), length).ToString())
          << "NP_CIDR_SEED=" << seed;
    }
    // Whole ranges: every prefix ToCidrs gives is IpPrefix's text of a block that starts
    // where the previous one ended, and the last ends at `last`.
    for (int i = 0; i < 200; ++i) {
      internal::U128 a = random_value(), b = a + (rng() % 4 == 0 ? random_value() : rng() % 5000);
      if (b < a) std::swap(a, b);
      internal::U128 next = a;
      for (const std::string& cidr : internal::ToCidrs(a, b, 1)) {
        absl::StatusOr<IpPrefix> parsed = IpPrefix::Parse(cidr);
        ASSERT_TRUE(parsed.ok()) << cidr << " NP_CIDR_SEED=" << seed;
        ASSERT_EQ(cidr, parsed->ToString()) << "NP_CIDR_SEED=" << seed;
        const IpAddress start = parsed->network();
        const internal::U128 start_value =
            (internal::U128{start.hi()} << 64) | internal::U128{start.lo()};
        ASSERT_EQ(start_value, next) << cidr << " NP_CIDR_SEED=" << seed;
        const int host_bits = 128 - parsed->length();
        next = start_value + (host_bits == 128 ? 0 : internal::U128{1} << host_bits);
      }
      ASSERT_EQ(next, b + 1) << "NP_CIDR_SEED=" << seed;
    }
  }
}

TEST(PodDeltaLowering, DeltaEqualsWholeLoweringOnRandomPodChurn) {
  if (const char* seed = std::getenv("NP_LOWER_DELTA_SEED")) {
    Counts counts;
    RunSeed(std::strtoull(seed, nullptr, 10), 60, &counts);
    return;
  }
  Counts counts;
  uint64_t seeds = 300;  // NP_LOWER_DELTA_SEEDS=<n>: more, for a longer soak
  if (const char* n = std::getenv("NP_LOWER_DELTA_SEEDS")) seeds = std::strtoull(n, nullptr, 10);
  for (uint64_t seed = 0; seed < seeds; ++seed) {
    ASSERT_NO_FATAL_FAILURE(RunSeed(seed, 40, &counts));
  }
  std::cout << counts.expressed << " of " << counts.pod_events
            << " pod-event batches expressed as deltas, " << counts.table_deltas
            << " adding or retiring a table, " << counts.exact << " compared exactly\n";
  for (const auto& [why, n] : counts.refusals) std::cout << "  " << n << " whole: " << why << "\n";
  std::cout << IdentityCounts(counts);
  // Nearly all pod events are: shared addresses and an ipBlock atom a pod covered whole are
  // the usual exceptions. And most keep the tables' order: compared exactly (a retired
  // table's tombstone, or an identity that came or went, makes the program not dense until
  // the next whole lowering: those deltas are compared up to numbering only).
  EXPECT_GT(counts.expressed * 10, counts.pod_events * 9);
  EXPECT_GT(counts.exact * 10, counts.dense_same_identities * 8);
  EXPECT_GT(counts.exact, 1000);
  // A pod of a target class new to the node, or a table's last pod leaving: deltas now.
  EXPECT_GT(counts.table_deltas, 300);
  // A pod in a peer class new to the program, or a class's last pod leaving: deltas now,
  // with new identities both appended and taking unused ids.
  EXPECT_GT(counts.identities_appended, 1000);
  EXPECT_GT(counts.identities_reused, 700);
  EXPECT_GT(counts.identities_retired, 1500);
  // Many of those change peer sets in place, not the rules naming them.
  EXPECT_GT(counts.sets_rewritten, 700);
}

// The same with most events relabels and moves into another pod's class (issue 13: the
// agent bench's relabel rows): whenever they come out as deltas, exact; and moves into an
// existing class mostly do come out as deltas.
TEST(PodDeltaLowering, DeltaEqualsWholeLoweringOnRelabelHeavyChurn) {
  Counts counts;
  uint64_t seeds = 150;
  if (const char* n = std::getenv("NP_LOWER_DELTA_SEEDS")) seeds = std::strtoull(n, nullptr, 10);
  for (uint64_t seed = 0; seed < seeds; ++seed) {
    ASSERT_NO_FATAL_FAILURE(RunSeed(1000000 + seed, 40, &counts, /*relabel_heavy=*/true));
  }
  std::cout << counts.expressed << " of " << counts.pod_events
            << " relabel-heavy pod-event batches expressed as deltas, " << counts.table_deltas
            << " adding or retiring a table\n";
  for (const auto& [why, n] : counts.refusals) std::cout << "  " << n << " whole: " << why << "\n";
  std::cout << IdentityCounts(counts);
  EXPECT_GT(counts.expressed * 10, counts.pod_events * 9);
  EXPECT_GT(counts.table_deltas, 150);
  EXPECT_GT(counts.identities_appended, 350);
  EXPECT_GT(counts.identities_reused, 400);
  EXPECT_GT(counts.identities_retired, 850);
}

// The same with whole lowerings aligned onto the installed program, as the agent does
// (issue 13, policy events): deltas onto aligned programs (tombstones, tables out of
// first-endpoint order) mean the whole lowering, and are as frequent.
TEST(PodDeltaLowering, DeltaOnAlignedProgramsMeansTheWholeLowering) {
  Counts counts;
  uint64_t seeds = 200;
  if (const char* n = std::getenv("NP_LOWER_DELTA_SEEDS")) seeds = std::strtoull(n, nullptr, 10);
  for (uint64_t seed = 0; seed < seeds; ++seed) {
    ASSERT_NO_FATAL_FAILURE(
        RunSeed(2000000 + seed, 40, &counts, /*relabel_heavy=*/seed % 2 == 1, /*aligned=*/true));
  }
  std::cout << counts.expressed << " of " << counts.pod_events
            << " pod-event batches on aligned programs expressed as deltas, " << counts.table_deltas
            << " adding or retiring a table\n";
  for (const auto& [why, n] : counts.refusals) std::cout << "  " << n << " whole: " << why << "\n";
  std::cout << IdentityCounts(counts);
  EXPECT_GT(counts.expressed * 10, counts.pod_events * 9);
  EXPECT_GT(counts.table_deltas, 170);
  EXPECT_GT(counts.identities_appended, 300);
  EXPECT_GT(counts.identities_reused, 700);
  EXPECT_GT(counts.identities_retired, 1000);
}

// The agent bench's relabel rows, on a small cluster: pods of two deployments (their own
// labels and named ports) on another node, a policy allowing one from the other by named
// port. Given the other deployment's labels and ports (exactly the other class), and back:
// deltas of identity pod lists, each equal to the whole lowering. Given its labels only (it
// keeps its named ports): a peer class no address carries, so a new identity — appended,
// and db's peer set for app=api gains it; back: that identity a tombstone (no pods, in no
// peer set); into the class again: the tombstone's id taken again; another pod into
// another new class while no id is free: appended. Each step EquivalentPrograms with the
// whole lowering, installed ids kept.
TEST(PodDeltaLowering, BenchRelabelShapes) {
  auto pod = [](const std::string& name, const std::string& app, const std::string& node,
                const std::string& port_name, int port, int address) {
    k8s::Pod p;
    p.mutable_metadata()->set_namespace_("ns");
    p.mutable_metadata()->set_name(name);
    (*p.mutable_metadata()->mutable_labels())["app"] = app;
    p.mutable_spec()->set_nodename(node);
    k8s::ContainerPort* cp = p.mutable_spec()->add_containers()->add_ports();
    cp->set_name(port_name);
    cp->set_containerport(port);
    SetAddresses(&p, address, true, true);
    return p;
  };
  ClusterObjects objects;
  const k8s::Pod web = pod("web-1", "web", "node-2", "http", 8080, 5);
  const k8s::Pod web2 = pod("web-2", "web", "node-2", "http", 8080, 7);
  const k8s::Pod api = pod("api-1", "api", "node-2", "grpc", 9000, 6);
  for (const k8s::Pod& p : {web, web2, api, pod("api-2", "api", "node-2", "grpc", 9000, 8),
                            pod("local", "db", "node-1", "sql", 5432, 9)}) {
    objects.pods.push_back({p, {}});
  }
  k8s::NetworkPolicy policy;  // db admits api on its named port... and web on tcp 5432
  policy.mutable_metadata()->set_namespace_("ns");
  policy.mutable_metadata()->set_name("db");
  (*policy.mutable_spec()->mutable_podselector()->mutable_matchlabels())["app"] = "db";
  policy.mutable_spec()->add_policytypes("Ingress");
  for (const char* app : {"api", "web"}) {
    k8s::NetworkPolicyIngressRule* rule = policy.mutable_spec()->add_ingress();
    (*rule->add_from()->mutable_podselector()->mutable_matchlabels())["app"] = app;
  }
  k8s::NetworkPolicy egress;  // web may reach api's grpc port (a named port of the peer)
  egress.mutable_metadata()->set_namespace_("ns");
  egress.mutable_metadata()->set_name("to-grpc");
  egress.mutable_spec()->add_policytypes("Egress");
  k8s::NetworkPolicyEgressRule* out = egress.mutable_spec()->add_egress();
  k8s::NetworkPolicyPort* named = out->add_ports();
  named->mutable_port()->set_type(1);
  named->mutable_port()->set_strval("grpc");
  objects.policies.push_back({policy, {}});
  objects.policies.push_back({egress, {}});
  std::shared_ptr<const Engine> current = NodeOneEngine(std::move(objects));
  ir::CompiledPolicy installed = *LowerToIr(*current);
  PodDeltaLowering index = PodDeltaLowering::Index(current, installed);

  // One event as a delta: applied, checked against the whole lowering, committed.
  auto step = [&](const k8s::Pod& p, ir::CompiledPolicyDelta* applied) {
    std::shared_ptr<const Engine> after = *current->Apply({Change{Change::Op::kUpsert, p}});
    std::string why;
    std::optional<PodDelta> delta = index.Lower(after, installed, {Key(p)}, &why);
    ASSERT_TRUE(delta.has_value()) << why;
    const ir::CompiledPolicy before = installed;
    ASSERT_TRUE(backends::ApplyDelta(delta->delta, &installed).ok());
    ASSERT_TRUE(backends::CheckIr(installed).ok()) << backends::CheckIr(installed);
    ASSERT_TRUE(backends::EquivalentPrograms(*LowerToIr(*after), installed, &why))
        << why << "\ndelta:\n" << delta->delta.DebugString();
    ASSERT_NO_FATAL_FAILURE(ExpectIdentitiesKept(before, installed));
    index.Commit(*delta);
    current = after;
    *applied = delta->delta;
  };
  // The identity of an address of the installed program (IPv4 10.0.0.<n>).
  auto identity_at = [&](int n) {
    return *backends::IdentityOf(installed, std::string{10, 0, 0, static_cast<char>(n)});
  };
  // The identities of the db table's rules' peer sets, all of them.
  auto db_peers = [&]() {
    std::set<uint32_t> ids;
    for (const ir::Endpoint& e : installed.endpoints()) {
      if (e.name() != "local") continue;
      for (const ir::PortRule& r : installed.tables(e.table()).ingress().rules()) {
        const ir::PeerSet& set = installed.peer_sets(r.peer_set());
        ids.insert(set.identities().begin(), set.identities().end());
      }
    }
    return ids;
  };

  // Labels and ports: into api's class, and back into web's.
  k8s::Pod moved = web;
  *moved.mutable_metadata()->mutable_labels() = api.metadata().labels();
  *moved.mutable_spec()->mutable_containers() = api.spec().containers();
  ir::CompiledPolicyDelta d;
  for (const k8s::Pod* p : {static_cast<const k8s::Pod*>(&moved), &web}) {
    ASSERT_NO_FATAL_FAILURE(step(*p, &d));
    EXPECT_EQ(d.identity_pods_size(), 2);  // one identity loses it, one gains it
    EXPECT_EQ(d.identities_size(), 0);
    EXPECT_EQ(d.tables_size(), 0);
    std::string report;
    google::protobuf::util::MessageDifferencer differencer;
    differencer.ReportDifferencesToString(&report);
    EXPECT_TRUE(differencer.Compare(*LowerToIr(*current), installed)) << report;
  }

  // Labels only: a class of its own, appended (the whole lowering has no unused id).
  const int count = installed.identities_size();
  const uint32_t web_identity = identity_at(5);
  k8s::Pod relabelled = web;
  *relabelled.mutable_metadata()->mutable_labels() = api.metadata().labels();
  ASSERT_NO_FATAL_FAILURE(step(relabelled, &d));
  ASSERT_EQ(d.identities_size(), 1);
  const uint32_t fresh = d.identities(0).id();
  EXPECT_EQ(fresh, static_cast<uint32_t>(count));
  EXPECT_EQ(identity_at(5), fresh);
  EXPECT_EQ(identity_at(7), web_identity) << "web-2 keeps web's identity";
  EXPECT_EQ(std::vector<std::string>(d.identities(0).pods().begin(), d.identities(0).pods().end()),
            std::vector<std::string>{"ns/web-1"});
  EXPECT_EQ(db_peers().count(fresh), 1u) << "db admits app=api: its peer set gains the identity";
  EXPECT_EQ(d.tables_size(), 0) << "in place: the rules naming the set stay";
  EXPECT_EQ(d.peer_sets_size(), 1);

  // Back: the new identity loses its last address, a tombstone (ExpectIdentitiesKept).
  ASSERT_NO_FATAL_FAILURE(step(web, &d));
  EXPECT_EQ(d.identities_size(), 0);
  EXPECT_EQ(installed.identities_size(), count + 1);
  EXPECT_TRUE(installed.identities(fresh).pods().empty());
  EXPECT_EQ(db_peers().count(fresh), 0u);
  EXPECT_EQ(identity_at(5), web_identity);
  EXPECT_EQ(d.tables_size(), 0);
  EXPECT_EQ(d.peer_sets_size(), 1);

  // Into the class again: the tombstone's id is taken again, nothing appended.
  ASSERT_NO_FATAL_FAILURE(step(relabelled, &d));
  EXPECT_EQ(d.identities_size(), 0);
  EXPECT_EQ(installed.identities_size(), count + 1);
  EXPECT_EQ(identity_at(5), fresh);
  EXPECT_EQ(db_peers().count(fresh), 1u);

  // Another pod into another new class, no unused id left: appended.
  k8s::Pod other = web2;
  (*other.mutable_metadata()->mutable_labels())["app"] = "other";
  ASSERT_NO_FATAL_FAILURE(step(other, &d));
  ASSERT_EQ(d.identities_size(), 1);
  EXPECT_EQ(d.identities(0).id(), static_cast<uint32_t>(count + 1));
  EXPECT_EQ(identity_at(7), static_cast<uint32_t>(count + 1));
  EXPECT_EQ(db_peers().count(count + 1), 0u) << "db admits no app=other";
  // web's identity lost its last address (web-1 and web-2 both left it): a tombstone.
  EXPECT_TRUE(installed.identities(web_identity).pods().empty());
  EXPECT_EQ(db_peers().count(web_identity), 0u);
}

// A peer set two tables share, only one of whose rules takes a relabelled pod's new class:
// db admits app=web, cache admits app=web,tier=x; both sets hold the one identity of w1 and
// w2 (app=web,tier=x), so they are one set. w2 relabelled to app=web alone: db's rule gains
// the new identity, cache's must not, so the shared set cannot change in place — db's rule
// names another set and the shared one keeps its content. Then w1 too: the old identity is
// retired (cache's rule then admits no address and goes). Each step means the whole
// lowering, with every unused identity in no peer set.
TEST(PodDeltaLowering, SharedPeerSetSplitsWhenOnlySomeRulesTakeTheClass) {
  auto pod = [](const std::string& name, const std::string& node, int address,
                std::map<std::string, std::string> labels) {
    k8s::Pod p;
    p.mutable_metadata()->set_namespace_("ns");
    p.mutable_metadata()->set_name(name);
    for (const auto& [k, v] : labels) (*p.mutable_metadata()->mutable_labels())[k] = v;
    p.mutable_spec()->set_nodename(node);
    SetAddresses(&p, address, true, false);
    return p;
  };
  auto admits = [](const std::string& name, const std::string& target,
                   std::map<std::string, std::string> from) {
    k8s::NetworkPolicy policy;
    policy.mutable_metadata()->set_namespace_("ns");
    policy.mutable_metadata()->set_name(name);
    (*policy.mutable_spec()->mutable_podselector()->mutable_matchlabels())["app"] = target;
    policy.mutable_spec()->add_policytypes("Ingress");
    auto* labels = policy.mutable_spec()->add_ingress()->add_from()->mutable_podselector()
                       ->mutable_matchlabels();
    for (const auto& [k, v] : from) (*labels)[k] = v;
    return policy;
  };
  ClusterObjects objects;
  const k8s::Pod w1 = pod("w1", "node-2", 5, {{"app", "web"}, {"tier", "x"}});
  const k8s::Pod w2 = pod("w2", "node-2", 6, {{"app", "web"}, {"tier", "x"}});
  for (const k8s::Pod& p : {w1, w2, pod("db", "node-1", 7, {{"app", "db"}}),
                            pod("cache", "node-1", 8, {{"app", "cache"}})}) {
    objects.pods.push_back({p, {}});
  }
  objects.policies.push_back({admits("db", "db", {{"app", "web"}}), {}});
  objects.policies.push_back({admits("cache", "cache", {{"app", "web"}, {"tier", "x"}}), {}});
  std::shared_ptr<const Engine> current = NodeOneEngine(std::move(objects));
  ir::CompiledPolicy installed = *LowerToIr(*current);
  ASSERT_EQ(installed.peer_sets_size(), 1) << "db and cache name one set";
  PodDeltaLowering index = PodDeltaLowering::Index(current, installed);
  for (const std::string name : {"w2", "w1"}) {
    k8s::Pod p = name == "w2" ? w2 : w1;
    p.mutable_metadata()->mutable_labels()->erase("tier");
    std::shared_ptr<const Engine> after = *current->Apply({Change{Change::Op::kUpsert, p}});
    std::string why;
    std::optional<PodDelta> delta = index.Lower(after, installed, {Key(p)}, &why);
    ASSERT_TRUE(delta.has_value()) << why;
    const ir::CompiledPolicy before = installed;
    ASSERT_TRUE(backends::ApplyDelta(delta->delta, &installed).ok());
    ASSERT_TRUE(backends::CheckIr(installed).ok()) << backends::CheckIr(installed);
    ASSERT_TRUE(backends::EquivalentPrograms(*LowerToIr(*after), installed, &why))
        << name << ": " << why << "\ndelta:\n" << delta->delta.DebugString();
    ASSERT_NO_FATAL_FAILURE(ExpectIdentitiesKept(before, installed));
    if (name == "w2") {
      EXPECT_EQ(delta->delta.identities_size(), 1);
      EXPECT_EQ(delta->delta.tables_size(), 1) << "db's rule names another set";
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(installed.peer_sets(0),
                                                                     before.peer_sets(0)))
          << "cache's set keeps its content";
    }
    index.Commit(*delta);
    current = after;
  }
}

// A pod of the node relabelled from app=a to app=b, the last endpoint of a's table, b having
// no table on the node: b's table takes a's id (the id its endpoint had, as
// np/lower_align.h numbers tables), so the endpoint keeps its table id and no table is
// retired: backends replace one table's rules instead of moving the endpoint. And back.
TEST(PodDeltaLowering, RelabelledLastEndpointsNewTableTakesItsTableId) {
  auto selects = [](const std::string& name, const std::string& app, int port) {
    k8s::NetworkPolicy policy;
    policy.mutable_metadata()->set_namespace_("ns");
    policy.mutable_metadata()->set_name(name);
    (*policy.mutable_spec()->mutable_podselector()->mutable_matchlabels())["app"] = app;
    policy.mutable_spec()->add_policytypes("Ingress");
    policy.mutable_spec()->add_ingress()->add_ports()->mutable_port()->set_intval(port);
    return policy;
  };
  auto pod = [](const std::string& name, const std::string& app, const std::string& node,
                int address) { return AppPod("ns", name, app, address, node); };
  ClusterObjects objects;
  const k8s::Pod l1 = pod("l1", "a", "node-1", 5);
  for (const k8s::Pod& p : {l1, pod("l2", "c", "node-1", 6), pod("r1", "b", "node-2", 7)}) {
    objects.pods.push_back({p, {}});
  }
  for (const auto& policy : {selects("a", "a", 80), selects("b", "b", 81), selects("c", "c", 82)}) {
    objects.policies.push_back({policy, {}});
  }
  std::shared_ptr<const Engine> current = NodeOneEngine(std::move(objects));
  ir::CompiledPolicy installed = *LowerToIr(*current);
  PodDeltaLowering index = PodDeltaLowering::Index(current, installed);
  auto table_of_l1 = [&]() {
    for (const ir::Endpoint& e : installed.endpoints()) {
      if (e.name() == "l1") return e.table();
    }
    return ~0u;
  };
  const uint32_t id = table_of_l1();
  const int tables = installed.tables_size();
  for (const std::string app : {"b", "a"}) {
    k8s::Pod p = l1;
    (*p.mutable_metadata()->mutable_labels())["app"] = app;
    std::shared_ptr<const Engine> after = *current->Apply({Change{Change::Op::kUpsert, p}});
    std::string why;
    std::optional<PodDelta> delta = index.Lower(after, installed, {Key(p)}, &why);
    ASSERT_TRUE(delta.has_value()) << why;
    ASSERT_EQ(delta->delta.tables_size(), 1) << delta->delta.DebugString();
    EXPECT_EQ(delta->delta.tables(0).id(), id) << "the new table takes the retiring one's id";
    EXPECT_EQ(delta->delta.tables(0).policies(0), "ns/" + app);
    const ir::CompiledPolicy before = installed;
    ASSERT_TRUE(backends::ApplyDelta(delta->delta, &installed).ok());
    ASSERT_TRUE(backends::CheckIr(installed).ok()) << backends::CheckIr(installed);
    ASSERT_TRUE(backends::EquivalentPrograms(*LowerToIr(*after), installed, &why)) << why;
    EXPECT_EQ(table_of_l1(), id);
    EXPECT_EQ(installed.tables_size(), tables) << "nothing appended, nothing retired";
    ASSERT_NO_FATAL_FAILURE(ExpectTablesKept(before, installed, false, &delta->delta));
    index.Commit(*delta);
    current = after;
  }
}

// The delta a pod event on the node makes, checked by hand: one endpoint inserted, the pod's
// address carved out of its atom.
TEST(PodDeltaLowering, NewPodOfAnExistingClass) {
  ClusterObjects objects;
  k8s::Pod a;
  a.mutable_metadata()->set_namespace_("ns");
  a.mutable_metadata()->set_name("a");
  (*a.mutable_metadata()->mutable_labels())["app"] = "web";
  a.mutable_spec()->set_nodename("node-1");
  SetAddresses(&a, 5, true, false);
  objects.pods.push_back({a, {}});
  std::shared_ptr<const Engine> engine = NodeOneEngine(std::move(objects));
  ir::CompiledPolicy installed = *LowerToIr(*engine);
  PodDeltaLowering index = PodDeltaLowering::Index(engine, installed);
  k8s::Pod b = a;
  b.mutable_metadata()->set_name("b");
  SetAddresses(&b, 9, true, false);
  std::shared_ptr<const Engine> next = *engine->Apply({Change{Change::Op::kUpsert, b}});
  std::optional<PodDelta> delta = index.Lower(next, installed, {"ns/b"});
  ASSERT_TRUE(delta.has_value());
  ASSERT_EQ(delta->delta.endpoints_size(), 1);
  EXPECT_EQ(delta->delta.endpoints(0).begin(), 1u);  // after ns/a
  EXPECT_EQ(delta->delta.endpoints(0).end(), 1u);
  EXPECT_EQ(delta->delta.endpoints(0).endpoints(0).name(), "b");
  ASSERT_EQ(delta->delta.ipv4_size(), 1);
  EXPECT_EQ(delta->delta.ipv6_size(), 0);
  // Only the pod that joins its identity is named (compiled.proto IdentityPodsEdit).
  ASSERT_EQ(delta->delta.identity_pods_size(), 1);
  ASSERT_EQ(delta->delta.identity_pods(0).added_size(), 1);
  EXPECT_EQ(delta->delta.identity_pods(0).added(0), "ns/b");
  EXPECT_EQ(delta->delta.identity_pods(0).removed_size(), 0);
  ASSERT_TRUE(backends::ApplyDelta(delta->delta, &installed).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(installed, *LowerToIr(*next)));
  index.Commit(*delta);
  // And back: deleting b is the reverse delta.
  k8s::Pod gone;
  gone.mutable_metadata()->set_namespace_("ns");
  gone.mutable_metadata()->set_name("b");
  std::shared_ptr<const Engine> back = *next->Apply({Change{Change::Op::kDelete, gone}});
  std::optional<PodDelta> undo = index.Lower(back, installed, {"ns/b"});
  ASSERT_TRUE(undo.has_value());
  ASSERT_EQ(undo->delta.identity_pods_size(), 1);
  EXPECT_EQ(undo->delta.identity_pods(0).added_size(), 0);
  ASSERT_EQ(undo->delta.identity_pods(0).removed_size(), 1);
  EXPECT_EQ(undo->delta.identity_pods(0).removed(0), "ns/b");
  ASSERT_TRUE(backends::ApplyDelta(undo->delta, &installed).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(installed, *LowerToIr(*engine)));
  // A pod with a named port is of a peer class no address carries yet: a new identity,
  // appended (the program has no unused id), as the whole lowering numbers it (the class is
  // the engine's newest).
  index.Commit(*undo);
  k8s::Pod c = a;
  c.mutable_metadata()->set_name("c");
  k8s::ContainerPort* port = c.mutable_spec()->add_containers()->add_ports();
  port->set_name("http");
  port->set_containerport(80);
  SetAddresses(&c, 7, true, false);
  std::shared_ptr<const Engine> other = *back->Apply({Change{Change::Op::kUpsert, c}});
  std::optional<PodDelta> added = index.Lower(other, installed, {"ns/c"});
  ASSERT_TRUE(added.has_value());
  ASSERT_EQ(added->delta.identities_size(), 1);
  EXPECT_EQ(added->delta.identities(0).id(), static_cast<uint32_t>(installed.identities_size()));
  EXPECT_EQ(added->delta.identity_pods_size(), 0);
  ASSERT_TRUE(backends::ApplyDelta(added->delta, &installed).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(installed, *LowerToIr(*other)));
}

// A pod's table, by hand: the first pod of a target class on the node brings its table (and
// the peer set its rule names), the last one leaving makes both tombstones, and coming back
// takes the tombstones' ids again. Each step a delta that means the whole lowering.
TEST(PodDeltaLowering, FirstPodOfAClassBringsItsTableAndTheLastRetiresIt) {
  auto pod = [](const std::string& name, const std::string& app, const std::string& node,
                int address) { return AppPod("ns", name, app, address, node); };
  ClusterObjects objects;
  const k8s::Pod db1 = pod("db-1", "db", "node-1", 7);
  for (const k8s::Pod& p : {pod("web-1", "web", "node-1", 5), pod("db-2", "db", "node-2", 6)}) {
    objects.pods.push_back({p, {}});
  }
  k8s::NetworkPolicy policy;  // db admits web
  policy.mutable_metadata()->set_namespace_("ns");
  policy.mutable_metadata()->set_name("db");
  (*policy.mutable_spec()->mutable_podselector()->mutable_matchlabels())["app"] = "db";
  policy.mutable_spec()->add_policytypes("Ingress");
  (*policy.mutable_spec()
        ->add_ingress()
        ->add_from()
        ->mutable_podselector()
        ->mutable_matchlabels())["app"] = "web";
  objects.policies.push_back({policy, {}});
  std::shared_ptr<const Engine> current = NodeOneEngine(std::move(objects));
  ir::CompiledPolicy installed = *LowerToIr(*current);
  ASSERT_EQ(installed.tables_size(), 0);  // web-1 is selected by no policy
  PodDeltaLowering index = PodDeltaLowering::Index(current, installed);

  k8s::Pod gone;
  gone.mutable_metadata()->set_namespace_("ns");
  gone.mutable_metadata()->set_name("db-1");
  const Change come{Change::Op::kUpsert, db1}, leave{Change::Op::kDelete, gone};
  // Come: table 0 appended with its set; leave: both tombstones; come back: the same ids.
  for (const Change& change : {come, leave, come}) {
    SCOPED_TRACE(change.op == Change::Op::kDelete ? "leave" : "come");
    std::shared_ptr<const Engine> next = *current->Apply({change});
    std::string why;
    std::optional<PodDelta> delta = index.Lower(next, installed, {"ns/db-1"}, &why);
    ASSERT_TRUE(delta.has_value()) << why;
    ASSERT_EQ(delta->delta.tables_size(), 1) << delta->delta.DebugString();
    EXPECT_EQ(delta->delta.tables(0).id(), 0u);
    ASSERT_EQ(delta->delta.peer_sets_size(), 1) << delta->delta.DebugString();
    EXPECT_EQ(delta->delta.peer_sets(0).id(), 0u);
    const ir::CompiledPolicy before = installed;
    ASSERT_TRUE(backends::ApplyDelta(delta->delta, &installed).ok());
    ASSERT_TRUE(backends::CheckIr(installed).ok()) << backends::CheckIr(installed);
    ASSERT_NO_FATAL_FAILURE(ExpectTablesKept(before, installed));
    EXPECT_EQ(installed.tables_size(), 1);
    EXPECT_EQ(installed.peer_sets_size(), 1);
    const ir::CompiledPolicy expected = *LowerToIr(*next);
    ASSERT_TRUE(backends::EquivalentPrograms(expected, installed, &why))
        << why << "\ndelta:\n"
        << delta->delta.DebugString();
    if (change.op == Change::Op::kDelete) {
      EXPECT_EQ(delta->delta.tables(0).policies_size(), 0);  // the tombstone
      EXPECT_EQ(delta->delta.peer_sets(0).identities_size(), 0);
      EXPECT_EQ(expected.tables_size(), 0);
    } else {
      ASSERT_EQ(delta->delta.tables(0).policies_size(), 1);
      EXPECT_EQ(delta->delta.tables(0).policies(0), "ns/db");
      EXPECT_EQ(delta->delta.peer_sets(0).identities_size(), 1);
      // Dense, as the whole lowering numbers it: field for field.
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(expected, installed));
    }
    index.Commit(*delta);
    current = next;
  }
}

// ---- Policy events (LowerPolicyChange) ---------------------------------------------------

std::map<uint32_t, std::set<std::string>> EndpointsByTable(const ir::CompiledPolicy& p) {
  std::map<uint32_t, std::set<std::string>> out;
  for (const ir::Endpoint& e : p.endpoints()) {
    if (e.selected()) out[e.table()].insert(e.namespace_() + "/" + e.name());
  }
  return out;
}

// The contract of a policy delta, read from the programs alone: `after` (installed with the
// delta applied) passes CheckIr and means `expected` (LowerToIr of the next snapshot); the
// identities and endpoints' addresses are untouched; a table serving the same endpoints as
// before keeps its id, and a peer set of the same identities as an installed set some rule
// still names keeps that id; unused items are tombstones of the fixed shape, within the
// compaction threshold, and nothing was appended while an id was free.
void CheckPolicyDelta(const ir::CompiledPolicy& before, const ir::CompiledPolicy& after,
                      const ir::CompiledPolicy& expected, const ir::CompiledPolicyDelta& delta) {
  ASSERT_TRUE(backends::CheckIr(after).ok()) << backends::CheckIr(after);
  std::string why;
  ASSERT_TRUE(backends::EquivalentPrograms(expected, after, &why))
      << why << "\ndelta:\n" << delta.DebugString();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(
      backends::CanonicalProgram(expected), backends::CanonicalProgram(after)));
  // Identities: installed ids kept, unused ones tombstones (a split or merge appends, reuses
  // or retires some); the addresses and their ranges' bounds as they were.
  ASSERT_NO_FATAL_FAILURE(ExpectIdentitiesKept(before, after));
  for (const bool v4 : {true, false}) {
    const auto& was = v4 ? before.ipv4() : before.ipv6();
    const auto& is = v4 ? after.ipv4() : after.ipv6();
    ASSERT_EQ(was.size(), is.size());
    for (int i = 0; i < was.size(); ++i) {
      ASSERT_EQ(was[i].first(), is[i].first());
      ASSERT_EQ(was[i].pod(), is[i].pod());
      if (was[i].pod().empty()) ASSERT_EQ(was[i].identity(), is[i].identity()) << "an atom's range";
    }
  }
  ASSERT_EQ(after.endpoints_size(), before.endpoints_size());
  for (int i = 0; i < after.endpoints_size(); ++i) {
    ir::Endpoint a = after.endpoints(i), b = before.endpoints(i);
    a.clear_table(), b.clear_table(), a.clear_selected(), b.clear_selected();
    ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(a, b)) << i;
  }
  // Same endpoints, same id.
  const auto tables_before = EndpointsByTable(before), tables_after = EndpointsByTable(after);
  for (const auto& [id, endpoints] : tables_after) {
    for (const auto& [old_id, old_endpoints] : tables_before) {
      if (old_endpoints == endpoints) EXPECT_EQ(id, old_id) << "a table kept its endpoints";
    }
  }
  // Tombstones and the threshold.
  auto check_kind = [&](const char* kind, int size, int before_size, int live) {
    SCOPED_TRACE(kind);
    EXPECT_GE(size, before_size);
    if (size > before_size) EXPECT_EQ(size, live) << "appended while an id was free";
    EXPECT_LE(size - live, std::max(16, live / 4));
  };
  for (const ir::Table& t : after.tables()) {
    if (tables_after.count(t.id()) > 0) continue;
    ir::Table tombstone;
    tombstone.set_id(t.id());
    tombstone.mutable_ingress();
    tombstone.mutable_egress();
    ir::Table shape = t;
    shape.mutable_ingress();
    shape.mutable_egress();
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(shape, tombstone))
        << t.DebugString();
  }
  check_kind("tables", after.tables_size(), before.tables_size(),
             static_cast<int>(tables_after.size()));
  const std::set<uint32_t> named = PeerSetsNamed(after), named_before = PeerSetsNamed(before);
  std::map<std::pair<bool, std::vector<uint32_t>>, uint32_t> content_before;
  for (const ir::PeerSet& set : before.peer_sets()) {
    if (named_before.count(set.id()) == 0) continue;
    content_before.emplace(std::make_pair(set.all(), std::vector<uint32_t>(
                                                         set.identities().begin(),
                                                         set.identities().end())),
                           set.id());
  }
  for (const ir::PeerSet& set : after.peer_sets()) {
    if (named.count(set.id()) == 0) {
      EXPECT_FALSE(set.all());
      EXPECT_EQ(set.identities_size(), 0) << "an unused peer set is a tombstone";
      continue;
    }
    auto it = content_before.find(std::make_pair(
        set.all(), std::vector<uint32_t>(set.identities().begin(), set.identities().end())));
    if (it != content_before.end()) EXPECT_EQ(set.id(), it->second) << "same identities, same id";
  }
  check_kind("peer sets", after.peer_sets_size(), before.peer_sets_size(),
             static_cast<int>(named.size()));
}

struct PolicyCounts {
  std::map<std::string, int> events, expressed;  // by kind of object
  std::map<std::string, int> refusals;
  int chained = 0;  // deltas onto a program an earlier delta made
  int longest_chain = 0;
  int cross_checked = 0;  // events offered to a fresh index too (the same answer)
  int pod_deltas = 0;     // pod events between them, as pod deltas on the same index
  // Policy deltas that split or merge identities: re-pointed an address's range, and of
  // those how many appended an identity, took an unused id again, or retired one.
  int splits = 0, appended = 0, reused = 0, retired = 0;
};

// Counts a policy delta that changed identities (from the programs: ranges re-pointed,
// identities appended, tombstones taken again or made).
void CountSplit(const ir::CompiledPolicy& before, const ir::CompiledPolicy& after,
                const ir::CompiledPolicyDelta& delta, PolicyCounts* counts) {
  if (delta.ipv4_size() + delta.ipv6_size() == 0) return;
  counts->splits++;
  if (delta.identities_size() > 0) counts->appended++;
  const std::set<uint32_t> was = LiveIdentities(before), is = LiveIdentities(after);
  bool reused = false, retired = false;
  for (int i = 0; i < before.identities_size(); ++i) {
    const uint32_t id = static_cast<uint32_t>(i);
    reused = reused || (was.count(id) == 0 && is.count(id) != 0);
    retired = retired || (was.count(id) != 0 && is.count(id) == 0);
  }
  counts->reused += reused ? 1 : 0;
  counts->retired += retired ? 1 : 0;
}

std::string KindOf(const Change& change) {
  return std::visit(
      [](const auto& object) -> std::string {
        using T = std::decay_t<decltype(object)>;
        if constexpr (std::is_same_v<T, k8s::NetworkPolicy>) return "policy";
        if constexpr (std::is_same_v<T, k8s::Namespace>) return "namespace";
        if constexpr (std::is_same_v<T, k8s::Pod>) return "pod";
        return "tier/node";
      },
      change.object);
}

// One seed: a cluster (tiers on every third seed), then `steps` random events. Pod events are
// lowered whole; the others are offered to LowerPolicyChange and, when a delta comes out,
// checked against the whole lowering and applied, with Commit, so that chains of deltas
// test that the index stays in step. A refused event is lowered whole and aligned (as the
// agent does), and the index rebuilt.
// `cross_check`: each event is also offered to an index built afresh from the installed
// program: the committed index must give the same answer (the index stays in step).
void RunPolicySeed(uint64_t seed, int steps, PolicyCounts* counts, bool cross_check = false) {
  SCOPED_TRACE(absl::StrCat("seed ", seed, " (replay: NP_POLICY_DELTA_SEED=", seed, ")"));
  std::mt19937_64 rng(seed);
  testgen::RandomClusterOptions generator_options;
  generator_options.max_pods = 14;
  generator_options.tier_chance = seed % 3 == 0 ? 1 : 0;
  testgen::RandomCluster generator(seed, generator_options);
  absl::StatusOr<std::shared_ptr<const Engine>> engine =
      BuildForSeed(generator.Objects(), seed);
  ASSERT_TRUE(engine.ok()) << engine.status();
  // Flattened tiers on some tiered seeds: the delta lowers tables as the index's options say.
  LowerOptions lower_options;
  lower_options.flatten_tiers = seed % 6 == 3;
  absl::StatusOr<ir::CompiledPolicy> first = LowerToIr(**engine, lower_options);
  if (!first.ok()) return;  // a domainNames Deny: refused whole, nothing to update
  ir::CompiledPolicy installed = *std::move(first);
  PodDeltaLowering index = PodDeltaLowering::Index(*engine, installed, lower_options);
  std::shared_ptr<const Engine> current = *engine;
  bool last_was_delta = false;
  int chain = 0;
  for (int step = 0; step < steps; ++step) {
    SCOPED_TRACE(absl::StrCat("step ", step));
    absl::StatusOr<Cluster> now = current->ToCluster();
    ASSERT_TRUE(now.ok());
    const bool tier = generator_options.tier_chance > 0 && rng() % 4 == 0;
    Change change = tier ? generator.RandomTierChange(*now) : generator.RandomChange(*now);
    const std::string kind = KindOf(change);
    SCOPED_TRACE(kind);
    absl::StatusOr<std::shared_ptr<const Engine>> next = current->Apply({change});
    ASSERT_TRUE(next.ok()) << next.status();
    absl::StatusOr<ir::CompiledPolicy> expected = LowerToIr(**next, lower_options);
    std::optional<PodDelta> delta;
    if (kind != "pod") {
      counts->events[kind]++;
      std::string why;
      delta = index.LowerPolicyChange(*next, installed, &why);
      if (cross_check) {
        std::string fresh_why;
        std::optional<PodDelta> fresh = PodDeltaLowering::Index(index.snapshot(), installed, lower_options)
                                            .LowerPolicyChange(*next, installed, &fresh_why);
        ASSERT_EQ(fresh.has_value(), delta.has_value()) << why << " / " << fresh_why;
        if (fresh) {
          ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(fresh->delta, delta->delta))
              << "committed index:\n" << delta->delta.DebugString() << "fresh index:\n"
              << fresh->delta.DebugString();
        }
        counts->cross_checked++;
      }
      if (!expected.ok()) {
        ASSERT_FALSE(delta.has_value()) << "a delta for a program LowerToIr refuses";
        current = *next;
        continue;  // the kernel keeps the installed program; the index its snapshot
      }
      if (!delta) counts->refusals[why]++;
    }
    if (!expected.ok()) {  // a pod event under a refused program: nothing installable
      current = *next;
      continue;
    }
    if (kind == "pod") {  // the agent's other delta, between policy deltas on the same index
      const k8s::Pod& pod = std::get<k8s::Pod>(change.object);
      std::optional<PodDelta> pod_delta = index.Lower(*next, installed, {Key(pod)});
      if (pod_delta) {
        ASSERT_TRUE(backends::ApplyDelta(pod_delta->delta, &installed).ok());
        ASSERT_TRUE(backends::CheckIr(installed).ok()) << backends::CheckIr(installed);
        std::string why;
        ASSERT_TRUE(backends::EquivalentPrograms(*expected, installed, &why)) << why;
        index.Commit(*pod_delta);
        index.Recycle(*std::move(pod_delta));  // as the agent does: the next delta reuses it
        counts->pod_deltas++;
        current = *next;
        continue;
      }
    }
    if (delta) {
      counts->expressed[kind]++;
      if (last_was_delta) counts->chained++;
      const ir::CompiledPolicy before = installed;
      absl::Status applied = backends::ApplyDelta(delta->delta, &installed);
      ASSERT_TRUE(applied.ok()) << applied << "\n" << delta->delta.DebugString();
      ASSERT_NO_FATAL_FAILURE(CheckPolicyDelta(before, installed, *expected, delta->delta));
      CountSplit(before, installed, delta->delta, counts);
      index.Commit(*delta);
      index.Recycle(*std::move(delta));  // as the agent does: the next delta reuses it
      last_was_delta = true;
      counts->longest_chain = std::max(counts->longest_chain, ++chain);
    } else {
      absl::StatusOr<ir::CompiledPolicy> aligned = AlignNumbering(installed, *std::move(expected));
      ASSERT_TRUE(aligned.ok()) << aligned.status();
      installed = *std::move(aligned);
      index = PodDeltaLowering::Index(*next, installed, lower_options);
      last_was_delta = false;
      chain = 0;
    }
    current = *next;
  }
}

void PrintPolicyCounts(const PolicyCounts& counts) {
  for (const auto& [kind, n] : counts.events) {
    auto e = counts.expressed.find(kind);
    std::cout << (e == counts.expressed.end() ? 0 : e->second) << " of " << n << " " << kind
              << " events expressed as deltas\n";
  }
  std::cout << counts.chained << " deltas onto a delta-made program, longest chain "
            << counts.longest_chain << ", " << counts.cross_checked
            << " events cross-checked with a fresh index, " << counts.pod_deltas
            << " pod deltas between\n"
            << counts.splits << " deltas split or merged identities: " << counts.appended
            << " appended one, " << counts.reused << " took an unused id again, "
            << counts.retired << " retired one\n";
  for (const auto& [why, n] : counts.refusals) std::cout << "  " << n << " whole: " << why << "\n";
}

TEST(PolicyDelta, RandomPolicyEventsMeanTheWholeLowering) {
  if (const char* seed = std::getenv("NP_POLICY_DELTA_SEED")) {
    PolicyCounts counts;
    RunPolicySeed(std::strtoull(seed, nullptr, 10), 80, &counts);
    PrintPolicyCounts(counts);
    return;
  }
  PolicyCounts counts;
  uint64_t seeds = 240;  // NP_POLICY_DELTA_SEEDS=<n>: more, for a longer soak
  if (const char* n = std::getenv("NP_POLICY_DELTA_SEEDS")) seeds = std::strtoull(n, nullptr, 10);
  for (uint64_t seed = 0; seed < seeds; ++seed) {
    ASSERT_NO_FATAL_FAILURE(RunPolicySeed(3000000 + seed, 25, &counts));
  }
  PrintPolicyCounts(counts);
  // The floors keep the check from being vacuous (and catch a check that refuses too much).
  // The generator's random policies often bring ipBlocks of their own (new atoms: new
  // external identities), which no delta expresses; selectors that split or merge pods'
  // classes come out as deltas (about one policy or namespace event in ten): at 240 seeds,
  // 1332 of 2200 policy events, 565 of 575 namespace events, 229 splitting (base: 1162,
  // 508, none).
  EXPECT_GT(counts.expressed["policy"] * 100, counts.events["policy"] * 58);
  EXPECT_GT(counts.expressed["namespace"] * 20, counts.events["namespace"] * 19);
  EXPECT_GT(counts.chained, 500);
  EXPECT_GT(counts.splits * 100, (counts.events["policy"] + counts.events["namespace"]) * 8);
  EXPECT_GT(counts.appended, 0);
  EXPECT_GT(counts.reused, 0);
  EXPECT_GT(counts.retired, 0);
}

// Long chains: over 120 events per cluster (pod events between, as pod deltas when they are
// ones), each policy event is also offered to an index built
// afresh from the installed program, and the committed index must answer the same.
TEST(PolicyDelta, LongChainsKeepTheIndexInStep) {
  PolicyCounts counts;
  for (uint64_t seed = 4000000; seed < 4000012; ++seed) {
    ASSERT_NO_FATAL_FAILURE(RunPolicySeed(seed, 120, &counts, /*cross_check=*/true));
  }
  PrintPolicyCounts(counts);
  EXPECT_GT(counts.chained, 100);
  EXPECT_GT(counts.splits, 40);
}

// ---- Hand-written policy events -----------------------------------------------------------

// In `ns`, selects app=`target` ("": every pod), admitting app=`from` on TCP `port` (0: every
// port; from "": denies all ingress).
k8s::NetworkPolicy AppPolicy(const std::string& ns, const std::string& name,
                             const std::string& target, const std::string& from = "",
                             int port = 0) {
  k8s::NetworkPolicy p;
  p.mutable_metadata()->set_namespace_(ns);
  p.mutable_metadata()->set_name(name);
  if (!target.empty()) (*p.mutable_spec()->mutable_podselector()->mutable_matchlabels())["app"] = target;
  p.mutable_spec()->add_policytypes("Ingress");
  if (!from.empty()) {
    k8s::NetworkPolicyIngressRule* rule = p.mutable_spec()->add_ingress();
    (*rule->add_from()->mutable_podselector()->mutable_matchlabels())["app"] = from;
    if (port != 0) rule->add_ports()->mutable_port()->set_intval(port);
  }
  return p;
}

// A cluster, its installed program and index; Step applies one event and offers it as a
// policy delta (checked as CheckPolicyDelta does, and against a fresh index), else lowers
// whole and aligns.
class PolicyChain {
 public:
  explicit PolicyChain(ClusterObjects objects) {
    current_ = NodeOneEngine(std::move(objects));
    installed_ = *LowerToIr(*current_);
    index_ = PodDeltaLowering::Index(current_, installed_);
  }
  // The delta the event made (applied), or nullopt with `why_` set (lowered whole).
  std::optional<ir::CompiledPolicyDelta> Step(Change change) {
    std::shared_ptr<const Engine> next = *current_->Apply({std::move(change)});
    const ir::CompiledPolicy expected = *LowerToIr(*next);
    std::optional<PodDelta> delta = index_.LowerPolicyChange(next, installed_, &why_);
    std::string fresh_why;
    std::optional<PodDelta> fresh =
        PodDeltaLowering::Index(current_, installed_).LowerPolicyChange(next, installed_, &fresh_why);
    EXPECT_EQ(fresh.has_value(), delta.has_value()) << why_ << " / " << fresh_why;
    if (fresh && delta) {
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(fresh->delta, delta->delta));
    }
    current_ = next;
    if (!delta) {
      installed_ = *AlignNumbering(installed_, expected);
      index_ = PodDeltaLowering::Index(current_, installed_);
      return std::nullopt;
    }
    const ir::CompiledPolicy before = installed_;
    EXPECT_TRUE(backends::ApplyDelta(delta->delta, &installed_).ok());
    CheckPolicyDelta(before, installed_, expected, delta->delta);
    index_.Commit(*delta);
    return delta->delta;
  }
  const ir::CompiledPolicy& installed() const { return installed_; }
  const std::string& why() const { return why_; }

 private:
  std::shared_ptr<const Engine> current_;
  ir::CompiledPolicy installed_;
  PodDeltaLowering index_;
  std::string why_;
};

uint32_t TableOfPod(const ir::CompiledPolicy& p, const std::string& name) {
  for (const ir::Endpoint& e : p.endpoints()) {
    if (e.name() == name) return e.selected() ? e.table() : UINT32_MAX;
  }
  return UINT32_MAX;
}

// web pods w1, w2 (node-1), a db pod (node-1) and a client pod c (node-2); an anchor policy
// (selecting no pod) whose peers make web, db and client classes of their own (a pod no peer
// selector matches shares the class of the addresses outside every ipBlock), and policies.
ClusterObjects WebDb() {
  ClusterObjects objects;
  for (const k8s::Pod& p : {AppPod("ns", "w1", "web", 1), AppPod("ns", "w2", "web", 2),
                            AppPod("ns", "db", "db", 3), AppPod("ns", "c", "client", 4, "node-2")}) {
    objects.pods.push_back({p, {}});
  }
  k8s::NetworkPolicy anchor = AppPolicy("ns", "anchor", "none");
  for (const char* app : {"web", "db", "client"}) {
    (*anchor.mutable_spec()->add_ingress()->add_from()->mutable_podselector()
          ->mutable_matchlabels())["app"] = app;
  }
  objects.policies.push_back({anchor, {}});
  objects.policies.push_back({AppPolicy("ns", "web", "web", "client"), {}});
  objects.policies.push_back({AppPolicy("ns", "db", "db", "web", 5432), {}});
  return objects;
}

TEST(PolicyDelta, PolicyAddedToATableReplacesItInPlace) {
  PolicyChain chain(WebDb());
  const uint32_t web = TableOfPod(chain.installed(), "w1");
  const int tables = chain.installed().tables_size();
  // A second policy selecting web (and only web), admitting db on 80: web's table changes.
  std::optional<ir::CompiledPolicyDelta> d =
      chain.Step(Change{Change::Op::kUpsert, AppPolicy("ns", "web2", "web", "db", 80)});
  ASSERT_TRUE(d.has_value()) << chain.why();
  ASSERT_EQ(d->tables_size(), 1);
  EXPECT_EQ(d->tables(0).id(), web);
  EXPECT_EQ(d->tables(0).policies_size(), 2);
  EXPECT_EQ(d->endpoints_size(), 0);
  EXPECT_EQ(chain.installed().tables_size(), tables);
  EXPECT_EQ(TableOfPod(chain.installed(), "w1"), web);
}

TEST(PolicyDelta, PolicySplittingATableMovesEndpoints) {
  ClusterObjects objects = WebDb();
  // w2 labelled also tier=canary; an anchor policy's peer makes canary a class of its own.
  (*objects.pods[1].object.mutable_metadata()->mutable_labels())["tier"] = "canary";
  k8s::NetworkPolicy anchor = AppPolicy("ns", "canary-anchor", "db", "web");
  (*anchor.mutable_spec()->mutable_ingress(0)->mutable_from(0)->mutable_podselector()
        ->mutable_matchlabels())["tier"] = "canary";
  objects.policies.push_back({anchor, {}});
  PolicyChain chain(std::move(objects));
  const uint32_t web = TableOfPod(chain.installed(), "w1");
  ASSERT_EQ(TableOfPod(chain.installed(), "w2"), web);
  const int tables = chain.installed().tables_size();
  // A policy selecting the canary alone: w2 moves to a new table, appended.
  k8s::NetworkPolicy canary = AppPolicy("ns", "canary", "web", "db");
  (*canary.mutable_spec()->mutable_podselector()->mutable_matchlabels())["tier"] = "canary";
  std::optional<ir::CompiledPolicyDelta> d = chain.Step(Change{Change::Op::kUpsert, canary});
  ASSERT_TRUE(d.has_value()) << chain.why();
  EXPECT_EQ(TableOfPod(chain.installed(), "w1"), web);
  EXPECT_EQ(TableOfPod(chain.installed(), "w2"), static_cast<uint32_t>(tables));
  EXPECT_EQ(chain.installed().tables_size(), tables + 1);
  ASSERT_EQ(d->endpoints_size(), 1);
  EXPECT_EQ(d->endpoints(0).endpoints(0).name(), "w2");
}

TEST(PolicyDelta, PolicyDeletedLeavesATombstone) {
  PolicyChain chain(WebDb());
  const uint32_t db = TableOfPod(chain.installed(), "db");
  k8s::NetworkPolicy gone;
  gone.mutable_metadata()->set_namespace_("ns");
  gone.mutable_metadata()->set_name("db");
  std::optional<ir::CompiledPolicyDelta> d = chain.Step(Change{Change::Op::kDelete, gone});
  ASSERT_TRUE(d.has_value()) << chain.why();
  EXPECT_EQ(TableOfPod(chain.installed(), "db"), UINT32_MAX);  // no policy selects it
  ASSERT_EQ(d->tables_size(), 1);
  EXPECT_EQ(d->tables(0).id(), db);
  EXPECT_EQ(d->tables(0).policies_size(), 0);
  EXPECT_FALSE(d->tables(0).ingress().isolated());
  // Its peer set (web on 5432) is named by no rule now: a tombstone too.
  bool tombstone = false;
  for (const ir::PeerSet& s : d->peer_sets()) tombstone |= !s.all() && s.identities_size() == 0;
  EXPECT_TRUE(tombstone) << d->DebugString();
  // And back: the table takes its old id again (the lowest unused).
  d = chain.Step(Change{Change::Op::kUpsert, AppPolicy("ns", "db", "db", "web", 5432)});
  ASSERT_TRUE(d.has_value()) << chain.why();
  EXPECT_EQ(TableOfPod(chain.installed(), "db"), db);
}

// The identity of `pod`'s (IPv4) address.
uint32_t IdentityOfPod(const ir::CompiledPolicy& p, const std::string& pod) {
  for (const ir::AddressRange& r : p.ipv4()) {
    if (r.pod() == pod) return r.identity();
  }
  return UINT32_MAX;
}

// Whether some rule of `table` names a peer set holding `identity`.
bool TableNamesIdentity(const ir::CompiledPolicy& p, uint32_t table, uint32_t identity) {
  ir::CompiledPolicy one;
  *one.add_tables() = p.tables(static_cast<int>(table));
  for (uint32_t set : PeerSetsNamed(one)) {
    const auto& ids = p.peer_sets(static_cast<int>(set)).identities();
    if (std::find(ids.begin(), ids.end(), identity) != ids.end()) return true;
  }
  return false;
}

// Nothing told w1 and w2 apart: one identity. A peer tier=canary splits it: the part the
// votes do not keep (one pod each: the tie goes to one of them) takes an appended identity,
// its range re-pointed; db's table names it. Deleting the policy merges them back (the
// appended identity a tombstone), and adding it again takes that id again.
TEST(PolicyDelta, PeerSelectorSplittingAnIdentityIsADelta) {
  ClusterObjects objects = WebDb();
  (*objects.pods[1].object.mutable_metadata()->mutable_labels())["tier"] = "canary";
  PolicyChain chain(std::move(objects));
  const uint32_t web = IdentityOfPod(chain.installed(), "ns/w1");
  ASSERT_EQ(IdentityOfPod(chain.installed(), "ns/w2"), web);
  const uint32_t identities = chain.installed().identities_size();
  const uint32_t db = TableOfPod(chain.installed(), "db");
  k8s::NetworkPolicy p = AppPolicy("ns", "from-canary", "db", "web");
  (*p.mutable_spec()->mutable_ingress(0)->mutable_from(0)->mutable_podselector()
        ->mutable_matchlabels())["tier"] = "canary";
  std::optional<ir::CompiledPolicyDelta> d = chain.Step(Change{Change::Op::kUpsert, p});
  ASSERT_TRUE(d.has_value()) << chain.why();
  const uint32_t w1 = IdentityOfPod(chain.installed(), "ns/w1");
  const uint32_t w2 = IdentityOfPod(chain.installed(), "ns/w2");
  EXPECT_NE(w1, w2);
  EXPECT_TRUE(w1 == web || w2 == web);
  const uint32_t canary = w2;
  EXPECT_EQ(std::max(w1, w2), identities) << "the split-off part is appended";
  ASSERT_EQ(d->identities_size(), 1);
  EXPECT_EQ(d->identities(0).id(), identities);
  ASSERT_EQ(d->ipv4_size(), 1);
  EXPECT_EQ(d->ipv4(0).ranges_size(), 1) << "one range re-pointed";
  EXPECT_EQ(d->ipv6_size(), 0);
  EXPECT_TRUE(TableNamesIdentity(chain.installed(), db, canary));
  // The split undone: one identity again, the other a tombstone.
  k8s::NetworkPolicy gone;
  gone.mutable_metadata()->set_namespace_("ns");
  gone.mutable_metadata()->set_name("from-canary");
  d = chain.Step(Change{Change::Op::kDelete, gone});
  ASSERT_TRUE(d.has_value()) << chain.why();
  const uint32_t merged = IdentityOfPod(chain.installed(), "ns/w1");
  EXPECT_EQ(IdentityOfPod(chain.installed(), "ns/w2"), merged);
  EXPECT_EQ(chain.installed().identities_size(), static_cast<int>(identities) + 1);
  const uint32_t tombstone = merged == w1 ? w2 : w1;
  EXPECT_EQ(chain.installed().identities(static_cast<int>(tombstone)).pods_size(), 0);
  EXPECT_EQ(d->identities_size(), 0);
  // Split again: the tombstone's id taken again, nothing appended.
  d = chain.Step(Change{Change::Op::kUpsert, p});
  ASSERT_TRUE(d.has_value()) << chain.why();
  EXPECT_EQ(d->identities_size(), 0);
  EXPECT_EQ(chain.installed().identities_size(), static_cast<int>(identities) + 1);
  EXPECT_NE(IdentityOfPod(chain.installed(), "ns/w1"), IdentityOfPod(chain.installed(), "ns/w2"));
  EXPECT_TRUE(IdentityOfPod(chain.installed(), "ns/w1") == tombstone ||
              IdentityOfPod(chain.installed(), "ns/w2") == tombstone);
}

// Web pods in two namespaces that no selector tells apart (an anchor's peer matches web pods
// in every namespace; a peer namespaceSelector env=prod matches no namespace yet): one
// identity. Labelling n2 env=prod splits it; removing the label merges it back.
TEST(PolicyDelta, NamespaceRelabelSplittingAnIdentityIsADelta) {
  ClusterObjects objects;
  for (const k8s::Pod& p : {AppPod("n1", "a", "web", 1), AppPod("n2", "b", "web", 2),
                            AppPod("n1", "db", "db", 3)}) {
    objects.pods.push_back({p, {}});
  }
  k8s::NetworkPolicy anchor = AppPolicy("n1", "anchor", "none");
  k8s::NetworkPolicyPeer* any_web = anchor.mutable_spec()->add_ingress()->add_from();
  any_web->mutable_namespaceselector();
  (*any_web->mutable_podselector()->mutable_matchlabels())["app"] = "web";
  objects.policies.push_back({anchor, {}});
  k8s::NetworkPolicy prod = AppPolicy("n1", "from-prod", "db");
  (*prod.mutable_spec()->add_ingress()->add_from()->mutable_namespaceselector()
        ->mutable_matchlabels())["env"] = "prod";
  objects.policies.push_back({prod, {}});
  for (const char* name : {"n1", "n2"}) {
    k8s::Namespace ns;
    ns.mutable_metadata()->set_name(name);
    objects.namespaces.push_back({ns, {}});
  }
  PolicyChain chain(std::move(objects));
  const uint32_t web = IdentityOfPod(chain.installed(), "n2/b");
  ASSERT_EQ(IdentityOfPod(chain.installed(), "n1/a"), web);
  const uint32_t db = TableOfPod(chain.installed(), "db");
  k8s::Namespace n2;
  n2.mutable_metadata()->set_name("n2");
  (*n2.mutable_metadata()->mutable_labels())["env"] = "prod";
  std::optional<ir::CompiledPolicyDelta> d = chain.Step(Change{Change::Op::kUpsert, n2});
  ASSERT_TRUE(d.has_value()) << chain.why();
  const uint32_t b = IdentityOfPod(chain.installed(), "n2/b");
  EXPECT_NE(IdentityOfPod(chain.installed(), "n1/a"), b);
  EXPECT_TRUE(TableNamesIdentity(chain.installed(), db, b));
  EXPECT_FALSE(TableNamesIdentity(chain.installed(), db, IdentityOfPod(chain.installed(), "n1/a")));
  n2.mutable_metadata()->clear_labels();
  d = chain.Step(Change{Change::Op::kUpsert, n2});
  ASSERT_TRUE(d.has_value()) << chain.why();
  EXPECT_EQ(IdentityOfPod(chain.installed(), "n1/a"), IdentityOfPod(chain.installed(), "n2/b"));
  EXPECT_FALSE(TableNamesIdentity(chain.installed(), db, IdentityOfPod(chain.installed(), "n1/a")));
}

// 80 random edits of policies over labels that anchors already tell apart: none changes an
// identity, so every one must come out as a delta, each checked, the index kept in step.
TEST(PolicyDelta, LongChainOfPolicyEditsAllDeltas) {
  const std::vector<std::string> apps = {"a", "b", "c", "d"};
  const std::vector<std::string> namespaces = {"n1", "n2"};
  ClusterObjects objects;
  int address = 1;
  for (const std::string& ns : namespaces) {
    for (const std::string& app : apps) {
      for (int i = 0; i < 3; ++i) {
        objects.pods.push_back({AppPod(ns, absl::StrCat(app, i), app, address++,
                                       i == 2 ? "node-2" : "node-1"), {}});
      }
    }
    k8s::NetworkPolicy anchor = AppPolicy(ns, "anchor", "none");  // selects no pod
    for (const std::string& app : apps) {
      (*anchor.mutable_spec()->add_ingress()->add_from()->mutable_podselector()
            ->mutable_matchlabels())["app"] = app;
    }
    objects.policies.push_back({anchor, {}});
  }
  PolicyChain chain(std::move(objects));
  std::mt19937_64 rng(1234);
  auto pick = [&](const std::vector<std::string>& v) { return v[rng() % v.size()]; };
  std::set<std::pair<std::string, std::string>> live;
  int deltas = 0;
  for (int step = 0; step < 80; ++step) {
    SCOPED_TRACE(absl::StrCat("step ", step));
    Change change;
    if (!live.empty() && rng() % 3 == 0) {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      k8s::NetworkPolicy gone;
      gone.mutable_metadata()->set_namespace_(it->first);
      gone.mutable_metadata()->set_name(it->second);
      change = Change{Change::Op::kDelete, gone};
      live.erase(it);
    } else {
      const std::string ns = pick(namespaces);
      const std::string name = absl::StrCat("p", rng() % 8);
      const int port = std::vector<int>{0, 80, 443}[rng() % 3];
      change = Change{Change::Op::kUpsert,
                      AppPolicy(ns, name, rng() % 4 == 0 ? "" : pick(apps), pick(apps), port)};
      live.emplace(ns, name);
    }
    std::optional<ir::CompiledPolicyDelta> d = chain.Step(change);
    ASSERT_FALSE(::testing::Test::HasFailure());
    ASSERT_TRUE(d.has_value()) << chain.why();
    ++deltas;
  }
  EXPECT_EQ(deltas, 80);
}

}  // namespace
}  // namespace np
