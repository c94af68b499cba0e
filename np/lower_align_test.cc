// AlignNumbering against the contract (np/lower_align.h): on seeded random clusters with
// policy, tier, namespace and pod events between snapshots, the aligned
// program means what LowerToIr made of the next snapshot (canonical forms equal, sampled
// flows alike by IrAllows), unused items are tombstones of the specified shape, new items take
// the lowest free id, items whose addresses / endpoints / identities did not change keep
// their ids, and ids stay bounded. Hand-written cases check the ids a policy event must keep.
// Replay: NP_LOWER_ALIGN_SEED=<seed> runs that seed alone (printed on failure).
#include "np/lower_align.h"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "np/backends/util.h"
#include "np/lower.h"
#include "np/testgen/random_cluster.h"

namespace np {
namespace {

using google::protobuf::util::MessageDifferencer;

// What each identity carries (its ranges), each table serves (its endpoints): for the
// "unchanged items keep their ids" checks.
std::map<uint32_t, std::set<std::pair<std::string, std::string>>> RangesOf(
    const ir::CompiledPolicy& p) {
  std::map<uint32_t, std::set<std::pair<std::string, std::string>>> out;
  for (const auto* ranges : {&p.ipv4(), &p.ipv6()}) {
    for (const ir::AddressRange& r : *ranges) out[r.identity()].emplace(r.first(), r.last());
  }
  return out;
}
std::map<uint32_t, std::set<std::string>> EndpointsOf(const ir::CompiledPolicy& p) {
  std::map<uint32_t, std::set<std::string>> out;
  for (const ir::Endpoint& e : p.endpoints()) {
    if (e.selected()) out[e.table()].insert(e.namespace_() + "/" + e.name());
  }
  return out;
}

// The contract's checks of one alignment; `rng` samples flows.
void CheckAligned(const ir::CompiledPolicy& installed, const ir::CompiledPolicy& next,
                  const ir::CompiledPolicy& aligned, const AlignStats& stats, std::mt19937_64& rng) {
  ASSERT_TRUE(backends::CheckIr(aligned).ok()) << backends::CheckIr(aligned);
  std::string why;
  ASSERT_TRUE(backends::EquivalentPrograms(aligned, next, &why)) << why;
  // The meaning read literally, on sampled flows between range starts (every identity).
  std::vector<std::string> addresses[2];
  for (int f = 0; f < 2; ++f) {
    for (const ir::AddressRange& r : f == 0 ? next.ipv4() : next.ipv6()) {
      addresses[f].push_back(r.first());
    }
  }
  const std::vector<uint16_t> ports = testgen::RandomCluster::ProbePorts();
  for (int i = 0; i < 200; ++i) {
    const auto& a = addresses[i % 2];
    const std::string& src = a[rng() % a.size()];
    const std::string& dst = a[rng() % a.size()];
    const int protocol = std::vector<int>{6, 17, 132}[rng() % 3];
    const uint32_t port = ports[rng() % ports.size()];
    ASSERT_EQ(backends::IrAllows(aligned, src, dst, protocol, port),
              backends::IrAllows(next, src, dst, protocol, port))
        << backends::AddressText(src) << " -> " << backends::AddressText(dst) << " " << protocol
        << "/" << port;
  }
  if (stats.compacted) {
    EXPECT_TRUE(MessageDifferencer::Equals(aligned, next)) << "compacted: next as lowered";
    return;
  }
  // Tombstones: the installed ids nothing uses now, of the specified shape; and new items
  // took the lowest free ids before any was appended.
  std::set<uint32_t> carried, named_sets, named_tables;
  for (const auto* ranges : {&aligned.ipv4(), &aligned.ipv6()}) {
    for (const ir::AddressRange& r : *ranges) carried.insert(r.identity());
  }
  for (const ir::Table& t : aligned.tables()) {
    for (const ir::DirectionPolicy* d : {&t.ingress(), &t.egress()}) {
      for (const ir::PortRule& r : d->rules()) named_sets.insert(r.peer_set());
      for (const ir::TierRule& r : d->admin()) named_sets.insert(r.peer_set());
      for (const ir::TierRule& r : d->baseline()) named_sets.insert(r.peer_set());
    }
  }
  for (const ir::Endpoint& e : aligned.endpoints()) {
    if (e.selected()) named_tables.insert(e.table());
  }
  std::set<uint32_t> in_peer_sets;
  for (const ir::PeerSet& s : aligned.peer_sets()) {
    in_peer_sets.insert(s.identities().begin(), s.identities().end());
  }
  auto check_kind = [&](const char* kind, int size, int installed_size, int live,
                        const std::set<uint32_t>& used, const AlignItemStats& s,
                        const std::function<void(int)>& tombstone) {
    SCOPED_TRACE(kind);
    EXPECT_EQ(static_cast<int>(used.size()), live);
    EXPECT_EQ(size - live, s.unused);
    EXPECT_GE(size, installed_size);
    if (size > installed_size) {
      EXPECT_EQ(s.unused, 0) << "an id was appended while an installed one was free";
    }
    EXPECT_LE(size - live, std::max(16, live / 4));
    for (int i = 0; i < size; ++i) {
      if (used.count(i) == 0) tombstone(i);
    }
  };
  check_kind("identities", aligned.identities_size(), installed.identities_size(),
             next.identities_size(), carried, stats.identities, [&](int i) {
               EXPECT_EQ(aligned.identities(i).pods_size(), 0) << i;
               EXPECT_FALSE(aligned.identities(i).external()) << i;
               EXPECT_EQ(in_peer_sets.count(i), 0u) << "tombstone identity in a peer set: " << i;
             });
  check_kind("peer sets", aligned.peer_sets_size(), installed.peer_sets_size(),
             next.peer_sets_size(), named_sets, stats.peer_sets, [&](int i) {
               EXPECT_FALSE(aligned.peer_sets(i).all()) << i;
               EXPECT_EQ(aligned.peer_sets(i).identities_size(), 0) << i;
             });
  check_kind("tables", aligned.tables_size(), installed.tables_size(), next.tables_size(),
             named_tables, stats.tables, [&](int i) {
               ir::Table empty;
               empty.set_id(i);
               empty.mutable_ingress();
               empty.mutable_egress();
               EXPECT_TRUE(MessageDifferencer::Equivalent(aligned.tables(i), empty))
                   << aligned.tables(i).DebugString();
             });
  // Unchanged items keep their ids: an identity carrying exactly the ranges an installed one
  // carried, a table serving exactly the endpoints an installed one served, a peer set of
  // exactly an installed set's identities (in aligned ids).
  auto old_ranges = RangesOf(installed), new_ranges = RangesOf(aligned);
  std::map<std::set<std::pair<std::string, std::string>>, uint32_t> by_ranges;
  for (const auto& [id, rs] : old_ranges) by_ranges[rs] = id;
  for (const auto& [id, rs] : new_ranges) {
    auto it = by_ranges.find(rs);
    if (it != by_ranges.end()) EXPECT_EQ(id, it->second) << "identity carrying the same ranges";
  }
  std::map<std::set<std::string>, uint32_t> by_endpoints;
  for (const auto& [id, es] : EndpointsOf(installed)) by_endpoints[es] = id;
  for (const auto& [id, es] : EndpointsOf(aligned)) {
    auto it = by_endpoints.find(es);
    if (it != by_endpoints.end()) EXPECT_EQ(id, it->second) << "table serving the same pods";
  }
  std::map<std::pair<bool, std::vector<uint32_t>>, uint32_t> by_content;
  for (const ir::PeerSet& s : installed.peer_sets()) {
    if (s.all() || s.identities_size() > 0) {
      by_content[{s.all(), {s.identities().begin(), s.identities().end()}}] = s.id();
    }
  }
  for (uint32_t id : named_sets) {
    const ir::PeerSet& s = aligned.peer_sets(id);
    auto it = by_content.find({s.all(), {s.identities().begin(), s.identities().end()}});
    if (it != by_content.end()) EXPECT_EQ(id, it->second) << "peer set of the same identities";
  }
}

struct Totals {
  int alignments = 0, compacted = 0, kept_all_tables = 0;
};

// One seed: a cluster, then `steps` random events; each lowering aligned to the previous
// aligned program.
void RunSeed(uint64_t seed, int steps, Totals* totals) {
  SCOPED_TRACE(absl::StrCat("seed ", seed, " (replay: NP_LOWER_ALIGN_SEED=", seed, ")"));
  std::mt19937_64 rng(seed);
  testgen::RandomClusterOptions generator_options;
  generator_options.max_pods = 12;
  generator_options.tier_chance = seed % 3 == 0 ? 1 : 0;
  testgen::RandomCluster generator(seed, generator_options);
  absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EngineOptions options;
  if (seed % 4 != 3) options.node_name = "node-1";
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::shared_ptr<const Engine> current = *engine;
  std::optional<ir::CompiledPolicy> installed;
  for (int step = 0; step < steps; ++step) {
    SCOPED_TRACE(absl::StrCat("step ", step));
    absl::StatusOr<ir::CompiledPolicy> next = LowerToIr(*current);
    if (next.ok()) {
      if (installed.has_value()) {
        AlignStats stats;
        absl::StatusOr<ir::CompiledPolicy> aligned = AlignNumbering(*installed, *next, &stats);
        ASSERT_TRUE(aligned.ok()) << aligned.status();
        ASSERT_NO_FATAL_FAILURE(CheckAligned(*installed, *next, *aligned, stats, rng));
        totals->alignments++;
        if (stats.compacted) totals->compacted++;
        installed = *std::move(aligned);
      } else {
        installed = *std::move(next);
      }
    }
    absl::StatusOr<Cluster> now = current->ToCluster();
    ASSERT_TRUE(now.ok());
    const bool tier = generator_options.tier_chance > 0 && rng() % 4 == 0;
    Change change = tier ? generator.RandomTierChange(*now) : generator.RandomChange(*now);
    absl::StatusOr<std::shared_ptr<const Engine>> after = current->Apply({change});
    ASSERT_TRUE(after.ok()) << after.status();
    current = *after;
  }
}

TEST(AlignNumbering, RandomEventsMeanTheSameAndKeepIds) {
  if (const char* seed = std::getenv("NP_LOWER_ALIGN_SEED")) {
    Totals totals;
    RunSeed(std::strtoull(seed, nullptr, 10), 40, &totals);
    return;
  }
  Totals totals;
  for (uint64_t seed = 0; seed < 200; ++seed) ASSERT_NO_FATAL_FAILURE(RunSeed(seed, 20, &totals));
  std::cout << totals.alignments << " alignments, " << totals.compacted << " compacted\n";
  EXPECT_GT(totals.alignments, 2000);
  EXPECT_LT(totals.compacted * 10, totals.alignments);  // small clusters: rarely compacted
}

// 200 random events in one cluster, each lowering aligned to the previous aligned program:
// every step is right and the ids stay within live + max(16, live / 4) of each kind.
TEST(AlignNumbering, RepeatedEventsKeepIdsBounded) {
  // 424244 compacts twice on the way; 424248 has policy tiers (seed % 3 == 0).
  for (uint64_t seed : {424244, 424248}) {
    Totals totals;
    ASSERT_NO_FATAL_FAILURE(RunSeed(seed, 201, &totals));
    EXPECT_EQ(totals.alignments, 200) << seed;  // every lowering succeeded and was aligned
  }
}

// ---- Hand-written: the ids a policy event must keep -------------------------------------

k8s::Pod Pod(const std::string& name, const std::string& app, int address,
             const std::string& node = "node-1") {
  k8s::Pod p;
  p.mutable_metadata()->set_namespace_("ns");
  p.mutable_metadata()->set_name(name);
  (*p.mutable_metadata()->mutable_labels())["app"] = app;
  p.mutable_spec()->set_nodename(node);
  p.mutable_status()->add_podips()->set_ip(absl::StrCat("10.0.0.", address));
  return p;
}

// Selects app=`target`, admitting app=`from` (none: denies all ingress).
k8s::NetworkPolicy Policy(const std::string& name, const std::string& target,
                          const std::string& from = "") {
  k8s::NetworkPolicy p;
  p.mutable_metadata()->set_namespace_("ns");
  p.mutable_metadata()->set_name(name);
  (*p.mutable_spec()->mutable_podselector()->mutable_matchlabels())["app"] = target;
  p.mutable_spec()->add_policytypes("Ingress");
  if (!from.empty()) {
    (*p.mutable_spec()->add_ingress()->add_from()->mutable_podselector()->mutable_matchlabels())
        ["app"] = from;
  }
  return p;
}

class Events {
 public:
  explicit Events(ClusterObjects objects) {
    EngineOptions options;
    options.node_name = "node-1";
    engine_ = *Engine::Build(*Cluster::Create(std::move(objects)), options);
  }
  ir::CompiledPolicy Lower() const { return *LowerToIr(*engine_); }
  void Apply(Change change) { engine_ = *engine_->Apply({std::move(change)}); }

 private:
  std::shared_ptr<const Engine> engine_;
};

uint32_t TableOf(const ir::CompiledPolicy& p, const std::string& name) {
  for (const ir::Endpoint& e : p.endpoints()) {
    if (e.name() == name) return e.selected() ? e.table() : UINT32_MAX;
  }
  return UINT32_MAX;
}

TEST(AlignNumbering, PolicyAddedForOnePodKeepsEveryOtherId) {
  ClusterObjects objects;
  for (auto& p : {Pod("a", "a", 1), Pod("b", "b", 2), Pod("c", "c", 3), Pod("d", "d", 4),
                  Pod("x", "b", 9, "node-2")}) {
    objects.pods.push_back({p, {}});
  }
  objects.policies.push_back({Policy("pa", "a", "b"), {}});
  objects.policies.push_back({Policy("pd", "d", "a"), {}});
  Events events(std::move(objects));
  const ir::CompiledPolicy installed = events.Lower();
  ASSERT_EQ(installed.tables_size(), 2);
  // A policy selecting c alone (no peers of its own: the same classes and identities).
  events.Apply(Change{Change::Op::kUpsert, Policy("pc", "c")});
  const ir::CompiledPolicy next = events.Lower();
  ASSERT_EQ(next.tables_size(), 3);
  ASSERT_NE(TableOf(next, "d"), TableOf(installed, "d")) << "dense numbering moved d's table "
                                                            "(else this case tests nothing)";
  AlignStats stats;
  absl::StatusOr<ir::CompiledPolicy> aligned = AlignNumbering(installed, next, &stats);
  ASSERT_TRUE(aligned.ok()) << aligned.status();
  std::string why;
  EXPECT_TRUE(backends::EquivalentPrograms(*aligned, next, &why)) << why;
  EXPECT_EQ(TableOf(*aligned, "a"), TableOf(installed, "a"));
  EXPECT_EQ(TableOf(*aligned, "d"), TableOf(installed, "d"));
  EXPECT_EQ(TableOf(*aligned, "c"), 2u);  // appended: no installed id was free
  for (int t = 0; t < 2; ++t) {
    EXPECT_TRUE(MessageDifferencer::Equals(aligned->tables(t), installed.tables(t))) << t;
  }
  EXPECT_TRUE(MessageDifferencer::Equals(aligned->ipv4(0), installed.ipv4(0)));
  ASSERT_EQ(aligned->ipv4_size(), installed.ipv4_size());
  for (int i = 0; i < installed.ipv4_size(); ++i) {
    EXPECT_EQ(aligned->ipv4(i).identity(), installed.ipv4(i).identity()) << i;
  }
  EXPECT_EQ(aligned->identities_size(), installed.identities_size());
  EXPECT_EQ(aligned->peer_sets_size(), installed.peer_sets_size());
  EXPECT_EQ(stats.tables.added, 1);
  EXPECT_EQ(stats.tables.changed, 0);
  EXPECT_EQ(stats.identities.changed + stats.identities.added, 0);
  EXPECT_EQ(stats.peer_sets.changed + stats.peer_sets.added, 0);

  // pa deleted: a's table has no counterpart (a tombstone), d's keeps its id.
  events.Apply(Change{Change::Op::kDelete, Policy("pa", "a", "b")});
  absl::StatusOr<ir::CompiledPolicy> second = AlignNumbering(*aligned, events.Lower(), &stats);
  ASSERT_TRUE(second.ok()) << second.status();
  const uint32_t a_table = TableOf(*aligned, "a");
  EXPECT_EQ(TableOf(*second, "a"), UINT32_MAX);  // not selected
  EXPECT_EQ(TableOf(*second, "d"), TableOf(installed, "d"));
  EXPECT_EQ(TableOf(*second, "c"), 2u);
  ASSERT_EQ(second->tables_size(), 3);
  EXPECT_FALSE(second->tables(a_table).ingress().isolated());
  EXPECT_EQ(second->tables(a_table).policies_size(), 0);
  EXPECT_EQ(stats.tables.unused, 1);
  EXPECT_TRUE(backends::CheckIr(*second).ok());

  // A policy selecting b: the new table takes the free id.
  events.Apply(Change{Change::Op::kUpsert, Policy("pb", "b")});
  absl::StatusOr<ir::CompiledPolicy> third = AlignNumbering(*second, events.Lower(), &stats);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(TableOf(*third, "b"), a_table);
  EXPECT_EQ(TableOf(*third, "d"), TableOf(installed, "d"));
  EXPECT_EQ(third->tables_size(), 3);
  EXPECT_EQ(stats.tables.unused, 0);
  EXPECT_EQ(stats.tables.added, 1);
  EXPECT_TRUE(backends::EquivalentPrograms(*third, events.Lower(), &why)) << why;
}

// A class split by a new selector keeps the old identity on its bigger part; the new part
// takes a new id; a peer set whose identities changed keeps its id (named at the same rule).
TEST(AlignNumbering, SplitKeepsIdOnTheBiggerPart) {
  ClusterObjects objects;
  for (auto& p : {Pod("t", "t", 1), Pod("w1", "web", 2, "node-2"), Pod("w2", "web", 3, "node-2"),
                  Pod("w3", "web", 4, "node-2")}) {
    objects.pods.push_back({p, {}});
  }
  objects.policies.push_back({Policy("pt", "t", "web"), {}});
  Events events(std::move(objects));
  const ir::CompiledPolicy installed = events.Lower();
  auto identity_at = [](const ir::CompiledPolicy& p, int last_byte) {
    std::string key = {10, 0, 0, static_cast<char>(last_byte)};
    return *backends::IdentityOf(p, key);
  };
  const uint32_t web = identity_at(installed, 2);
  ASSERT_EQ(identity_at(installed, 4), web);
  // w3 labelled tier=canary and a second rule admitting that label: web splits into
  // {w1, w2} (two votes: the old id) and {w3} (a new identity, appended: none is free).
  k8s::Pod w3 = Pod("w3", "web", 4, "node-2");
  (*w3.mutable_metadata()->mutable_labels())["tier"] = "canary";
  events.Apply(Change{Change::Op::kUpsert, w3});
  k8s::NetworkPolicy pt = Policy("pt", "t", "web");
  (*pt.mutable_spec()->add_ingress()->add_from()->mutable_podselector()->mutable_matchlabels())
      ["tier"] = "canary";
  events.Apply(Change{Change::Op::kUpsert, pt});
  const ir::CompiledPolicy next = events.Lower();
  absl::StatusOr<ir::CompiledPolicy> aligned = AlignNumbering(installed, next);
  ASSERT_TRUE(aligned.ok()) << aligned.status();
  EXPECT_EQ(identity_at(*aligned, 2), web);
  EXPECT_EQ(identity_at(*aligned, 3), web);
  EXPECT_NE(identity_at(*aligned, 4), web);
  EXPECT_EQ(identity_at(*aligned, 4), static_cast<uint32_t>(installed.identities_size()));
  // t's rule names the same peer set id, now holding both parts.
  const uint32_t table = TableOf(*aligned, "t");
  ASSERT_EQ(table, TableOf(installed, "t"));
  const ir::DirectionPolicy& before = installed.tables(table).ingress();
  const ir::DirectionPolicy& after = aligned->tables(table).ingress();
  ASSERT_GT(before.rules_size(), 0);
  ASSERT_EQ(after.rules_size(), before.rules_size());
  EXPECT_EQ(after.rules(0).peer_set(), before.rules(0).peer_set());
  const ir::PeerSet& set = aligned->peer_sets(after.rules(0).peer_set());
  ASSERT_EQ(set.identities_size(), 2);
  EXPECT_EQ(set.identities(0), web);
  EXPECT_EQ(set.identities(1), identity_at(*aligned, 4));
  std::string why;
  EXPECT_TRUE(backends::EquivalentPrograms(*aligned, next, &why)) << why;
}

// Past max(16, live / 4) unused tables the result is `next` as lowered; at 16 it is aligned.
TEST(AlignNumbering, Compaction) {
  for (int deleted : {16, 17}) {
    SCOPED_TRACE(deleted);
    ClusterObjects objects;
    for (int i = 0; i < 20; ++i) {
      objects.pods.push_back({Pod(absl::StrCat("p", i), absl::StrCat("a", i), i + 1), {}});
      objects.policies.push_back({Policy(absl::StrCat("pol", i), absl::StrCat("a", i)), {}});
    }
    Events events(std::move(objects));
    const ir::CompiledPolicy installed = events.Lower();
    ASSERT_EQ(installed.tables_size(), 20);
    for (int i = 0; i < deleted; ++i) {
      events.Apply(Change{Change::Op::kDelete, Policy(absl::StrCat("pol", i), "")});
    }
    const ir::CompiledPolicy next = events.Lower();
    ASSERT_EQ(next.tables_size(), 20 - deleted);
    AlignStats stats;
    absl::StatusOr<ir::CompiledPolicy> aligned = AlignNumbering(installed, next, &stats);
    ASSERT_TRUE(aligned.ok());
    EXPECT_EQ(stats.compacted, deleted > 16);
    if (deleted > 16) {
      EXPECT_TRUE(MessageDifferencer::Equals(*aligned, next));
    } else {
      EXPECT_EQ(aligned->tables_size(), 20);
      EXPECT_EQ(stats.tables.unused, 16);
      for (int i = deleted; i < 20; ++i) {
        EXPECT_EQ(TableOf(*aligned, absl::StrCat("p", i)),
                  TableOf(installed, absl::StrCat("p", i)));
      }
    }
  }
}

TEST(AlignNumbering, RefusesMalformedPrograms) {
  ClusterObjects objects;
  objects.pods.push_back({Pod("a", "a", 1), {}});
  objects.policies.push_back({Policy("pa", "a", "a"), {}});
  Events events(std::move(objects));
  const ir::CompiledPolicy good = events.Lower();
  ir::CompiledPolicy bad = good;
  bad.mutable_tables(0)->set_id(7);
  absl::StatusOr<ir::CompiledPolicy> r = AlignNumbering(bad, good);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("installed"), std::string::npos) << r.status();
  r = AlignNumbering(good, bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("tables[0]"), std::string::npos) << r.status();
  // Aligning a program to itself changes nothing.
  AlignStats stats;
  r = AlignNumbering(good, good, &stats);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(MessageDifferencer::Equals(*r, good));
  EXPECT_EQ(stats.tables.changed + stats.identities.changed + stats.peer_sets.changed, 0);
}

// The oracle itself must be able to fail: a program with one peer set's identity swapped is
// not equivalent; one renumbered by hand is.
TEST(EquivalentPrograms, DetectsMeaningNotNumbering) {
  ClusterObjects objects;
  for (auto& p : {Pod("a", "a", 1), Pod("b", "b", 2), Pod("c", "c", 3)}) {
    objects.pods.push_back({p, {}});
  }
  objects.policies.push_back({Policy("pa", "a", "b"), {}});
  objects.policies.push_back({Policy("pc", "c", "a"), {}});
  Events events(std::move(objects));
  const ir::CompiledPolicy p = events.Lower();
  ASSERT_EQ(p.tables_size(), 2);
  ir::CompiledPolicy swapped = p;  // tables 0 and 1 exchanged, endpoints follow
  swapped.mutable_tables()->SwapElements(0, 1);
  swapped.mutable_tables(0)->set_id(0);
  swapped.mutable_tables(1)->set_id(1);
  for (ir::Endpoint& e : *swapped.mutable_endpoints()) {
    if (e.selected()) e.set_table(1 - e.table());
  }
  EXPECT_TRUE(backends::EquivalentPrograms(p, swapped));
  EXPECT_FALSE(MessageDifferencer::Equals(p, swapped));
  ir::CompiledPolicy wrong = swapped;
  for (ir::Endpoint& e : *wrong.mutable_endpoints()) {
    if (e.selected()) e.set_table(1 - e.table());  // endpoints now on each other's tables
  }
  std::string why;
  EXPECT_FALSE(backends::EquivalentPrograms(p, wrong, &why));
  EXPECT_FALSE(why.empty());
}

}  // namespace
}  // namespace np
