// Connection listings and diffs against the reference evaluator: a hand-written cluster whose
// listing is written out from the NetworkPolicy API, and seeded random clusters where every
// listed interval is sampled at its edges, inside and just outside (NP_SEED replays a seed).
#include "np/analysis/connections.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "np/loader.h"
#include "np/reference.h"
#include "np/testing/expectation.h"
#include "np/testgen/random_cluster.h"

namespace np::analysis {
namespace {

k8s::Pod MakePod(const std::string& name, const std::string& ip, bool named_http = false) {
  k8s::Pod pod;
  pod.mutable_metadata()->set_namespace_("x");
  pod.mutable_metadata()->set_name(name);
  (*pod.mutable_metadata()->mutable_labels())["pod"] = name;
  pod.mutable_status()->add_podips()->set_ip(ip);
  k8s::Container* c = pod.mutable_spec()->add_containers();
  c->set_name("main");
  if (named_http) {
    k8s::ContainerPort* port = c->add_ports();
    port->set_name("http");
    port->set_containerport(8080);
  }
  return pod;
}

std::shared_ptr<const Engine> HandWritten() {
  ClusterObjects objects;
  objects.pods.push_back({MakePod("a", "10.0.0.1", true), {}});
  objects.pods.push_back({MakePod("b", "10.0.0.2"), {}});
  objects.pods.push_back({MakePod("c", "10.0.0.3"), {}});
  // x/a admits pod b on TCP 80 and on its named port http (8080).
  k8s::NetworkPolicy in;
  in.mutable_metadata()->set_namespace_("x");
  in.mutable_metadata()->set_name("a-in");
  (*in.mutable_spec()->mutable_podselector()->mutable_matchlabels())["pod"] = "a";
  auto* rule = in.mutable_spec()->add_ingress();
  (*rule->add_from()->mutable_podselector()->mutable_matchlabels())["pod"] = "b";
  rule->add_ports()->mutable_port()->set_intval(80);
  rule->add_ports()->mutable_port()->set_type(1);
  rule->mutable_ports(1)->mutable_port()->set_strval("http");
  objects.policies.push_back({in, {}});
  // x/c may send only UDP 53 to 192.168.0.0/16 except 192.168.1.0/24.
  k8s::NetworkPolicy out;
  out.mutable_metadata()->set_namespace_("x");
  out.mutable_metadata()->set_name("c-out");
  (*out.mutable_spec()->mutable_podselector()->mutable_matchlabels())["pod"] = "c";
  out.mutable_spec()->add_policytypes("Egress");
  auto* e = out.mutable_spec()->add_egress();
  auto* block = e->add_to()->mutable_ipblock();
  block->set_cidr("192.168.0.0/16");
  block->add_except("192.168.1.0/24");
  e->add_ports()->set_protocol("UDP");
  e->mutable_ports(0)->mutable_port()->set_intval(53);
  objects.policies.push_back({out, {}});
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  return *Engine::Build(*cluster);
}

std::vector<std::string> Lines(const std::vector<Connection>& list) {
  std::vector<std::string> out;
  for (const Connection& c : list) {
    out.push_back(absl::StrCat(c.from.name, " => ", c.to.name, " : ", c.ports.ToString()));
  }
  return out;
}

// Written from the API: unisolated sides admit everything; x/a's ingress admits only pod b
// on 80 and http (8080); x/c's egress only UDP 53 into the block minus its except. Ranges are
// the runs between ipBlock boundaries; x/a..c have no IPv6 address, so no IPv6 range.
TEST(Connections, HandWrittenClusterListsExactlyWhatTheApiAllows) {
  std::shared_ptr<const Engine> engine = HandWritten();
  absl::StatusOr<Connections> c = ListConnections(*engine);
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string all = "All connections";
  std::vector<std::string> ranges = {"0.0.0.0-192.167.255.255", "192.168.0.0-192.168.0.255",
                                     "192.168.1.0-192.168.1.255", "192.168.2.0-192.168.255.255",
                                     "192.169.0.0-255.255.255.255"};
  std::vector<std::string> want = {"x/a => x/b : " + all, "x/a => x/c : " + all};
  for (const std::string& r : ranges) want.push_back("x/a => " + r + " : " + all);
  want.push_back("x/b => x/a : TCP 80,8080");
  want.push_back("x/b => x/c : " + all);
  for (const std::string& r : ranges) want.push_back("x/b => " + r + " : " + all);
  want.push_back("x/c => 192.168.0.0-192.168.0.255 : UDP 53");
  want.push_back("x/c => 192.168.2.0-192.168.255.255 : UDP 53");
  for (const std::string& r : ranges) {
    want.push_back(r + " => x/b : " + all);
    want.push_back(r + " => x/c : " + all);
  }
  std::vector<std::string> got = Lines(c->connections);
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want) << absl::StrJoin(got, "\n");

  // Filters and the JSON shape of the issue.
  ConnectionOptions to_a;
  to_a.to = "x/a";
  absl::StatusOr<Connections> who = ListConnections(*engine, to_a);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(ConnectionsJson(*who),
            "{\"connections\": [\n  {\"from\": \"x/b\", \"to\": \"x/a\", \"ports\": "
            "{\"TCP\": [[80, 80], [8080, 8080]]}}\n]}\n");
  ConnectionOptions from_c;
  from_c.from = "x/c";
  from_c.to = "192.168.0.0/16";
  from_c.protocols = {Protocol::kUDP};
  absl::StatusOr<Connections> out = ListConnections(*engine, from_c);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(Lines(out->connections),
            (std::vector<std::string>{"x/c => 192.168.0.0-192.168.0.255 : UDP 53",
                                      "x/c => 192.168.2.0-192.168.255.255 : UDP 53"}));
  ConnectionOptions ports;
  ports.from = "x/*";
  ports.to = "x/a";
  ports.ports = {PortRange{81, 9000}};
  absl::StatusOr<Connections> narrowed = ListConnections(*engine, ports);
  ASSERT_TRUE(narrowed.ok());
  EXPECT_EQ(Lines(narrowed->connections), std::vector<std::string>{"x/b => x/a : TCP 8080"});
  EXPECT_FALSE(ListConnections(*engine, ConnectionOptions{"nonsense"}).ok());

  // --explain: x/b has no egress policy; x/a-in's only ingress rule admits it. x/c's egress
  // is c-out's rule, and a range has no side of its own.
  ConnectionOptions explained = to_a;
  explained.explain = true;
  absl::StatusOr<Connections> why = ListConnections(*engine, explained);
  ASSERT_TRUE(why.ok());
  ASSERT_EQ(why->connections.size(), 1u);
  EXPECT_EQ(why->connections[0].why,
            (Reasons{{"not isolated"}, {"x/a-in spec.ingress[0]"}}));
  EXPECT_EQ(FormatConnections(*why),
            "x/b => x/a : TCP 80,8080\n"
            "    egress at x/b: not isolated\n"
            "    ingress at x/a: x/a-in spec.ingress[0]\n");
  EXPECT_NE(ConnectionsJson(*why).find(
                "\"why\": {\"egress\": [\"not isolated\"], \"ingress\": [\"x/a-in spec.ingress[0]\"]}"),
            std::string::npos)
      << ConnectionsJson(*why);
  from_c.explain = true;
  absl::StatusOr<Connections> c_why = ListConnections(*engine, from_c);
  ASSERT_TRUE(c_why.ok());
  ASSERT_EQ(c_why->connections.size(), 2u);
  EXPECT_EQ(c_why->connections[0].why, (Reasons{{"x/c-out spec.egress[0]"}, {}}));
}

// Sampled ports of one protocol for a listed set: each interval's edges, middle, and the
// ports just outside; plus fixed probes.
std::vector<uint16_t> Samples(const std::vector<PortRange>& ranges) {
  std::vector<uint16_t> out = testgen::RandomCluster::ProbePorts();
  for (const PortRange& r : ranges) {
    for (uint32_t p : {uint32_t{r.first}, uint32_t{r.last}, (uint32_t{r.first} + r.last) / 2,
                       uint32_t{r.first} - 1, uint32_t{r.last} + 1}) {
      if (p >= 1 && p <= 65535) out.push_back(static_cast<uint16_t>(p));
    }
  }
  return out;
}

// The reference's verdict for a listing pair (pods by index, ranges by a sample address).
struct Ends {
  std::vector<Endpoint> endpoints;  // parallel to names
  std::vector<std::string> names;
};

Ends EndsOf(const Cluster& cluster, const Connections& listing_all) {
  Ends out;
  for (int i = 0; i < cluster.pod_count(); ++i) {
    out.endpoints.push_back(Endpoint::Pod(i));
    out.names.push_back(cluster.pod(i).Key());
  }
  int pods = 0;
  for (const ConnectionEnd& e : listing_all.ends) {
    if (e.is_pod) {
      ++pods;
      continue;
    }
    // The range's first and last address must both behave as the listing says.
    for (const IpAddress& a : {e.first, e.last}) {
      out.endpoints.push_back(Endpoint::External(a));
      out.names.push_back(e.name);
    }
  }
  EXPECT_EQ(pods, cluster.pod_count());
  return out;
}

// "testdata/<dir>/*.yaml" in the runfiles (TEST_SRCDIR), sorted.
std::vector<std::string> TestFiles(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path root;
  if (const char* srcdir = std::getenv("TEST_SRCDIR"); srcdir != nullptr) root = fs::path(srcdir) / "np";
  std::vector<std::string> files;
  std::error_code ec;
  for (fs::directory_iterator it(root / dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".yaml") files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

int Seeds() {
  const char* n = std::getenv("NP_RANDOM_CLUSTERS");
  return n != nullptr ? std::atoi(n) : 600;
}

bool HasFamily(const Cluster& cluster, const Endpoint& pod, const Endpoint& other) {
  if (other.is_pod) return true;
  return cluster.pod(pod.pod_index).ip(other.address.family()).has_value();
}

// The reference's deciders of `ports` from `src` to `dst`, per side: over `sample` ports
// (those inside `ports`), or over every port of `ports` when `sample` is null.
Reasons ReferenceDeciders(const Cluster& cluster, const Endpoint& src, const Endpoint& dst,
                          const PortSet& ports, const std::vector<uint16_t>* sample,
                          const EvaluationOptions& options) {
  std::set<std::string> egress, ingress;
  for (Protocol protocol : kAllProtocols) {
    std::vector<uint16_t> every;
    for (const PortRange& r : ports.by_protocol[ProtocolIndex(protocol)]) {
      for (uint32_t p = r.first; p <= r.last; ++p) every.push_back(static_cast<uint16_t>(p));
    }
    for (uint16_t port : sample != nullptr ? *sample : every) {
      if (!ports.Contains(protocol, port)) continue;
      Verdict v = reference::Evaluate(cluster, Flow{src, dst, protocol, port}, options);
      for (std::string& d : Deciders(v.egress)) egress.insert(std::move(d));
      for (std::string& d : Deciders(v.ingress)) ingress.insert(std::move(d));
    }
  }
  return Reasons{{egress.begin(), egress.end()}, {ingress.begin(), ingress.end()}};
}

bool Includes(const std::vector<std::string>& all, const std::vector<std::string>& some) {
  return std::includes(all.begin(), all.end(), some.begin(), some.end());
}

// Lists `cluster`'s connections (explained when `explain`) and compares every pair with the
// reference on sampled ports; explanations hold the reference's deciders of the sampled
// ports, and equal them over every port for the first `exact_explained` pairs. Returns the
// number of problems (each reported, the first few in full).
int CheckListing(const Cluster& cluster, const EngineOptions& options, const std::string& label,
                 bool explain, int exact_explained = 0) {
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(cluster, options);
  EXPECT_TRUE(engine.ok()) << label << ": " << engine.status();
  if (!engine.ok()) return 1;
  ConnectionOptions listing_options;
  listing_options.explain = explain;
  absl::StatusOr<Connections> listing = ListConnections(**engine, listing_options);
  EXPECT_TRUE(listing.ok()) << label << ": " << listing.status();
  if (!listing.ok()) return 1;
  std::map<std::pair<std::string, std::string>, const Connection*> listed;
  for (const Connection& c : listing->connections) listed[{c.from.name, c.to.name}] = &c;
  Ends ends = EndsOf(cluster, *listing);
  int problems = 0;
  for (size_t s = 0; s < ends.endpoints.size(); ++s) {
    for (size_t d = 0; d < ends.endpoints.size(); ++d) {
      const Endpoint& src = ends.endpoints[s];
      const Endpoint& dst = ends.endpoints[d];
      if (!src.is_pod && !dst.is_pod) continue;
      if (src.is_pod && dst.is_pod && src.pod_index == dst.pod_index) continue;
      if (src.is_pod && !HasFamily(cluster, src, dst)) continue;
      if (dst.is_pod && !HasFamily(cluster, dst, src)) continue;
      auto it = listed.find({ends.names[s], ends.names[d]});
      PortSet none;
      const PortSet& ports = it == listed.end() ? none : it->second->ports;
      std::vector<uint16_t> samples[3];
      for (Protocol protocol : kAllProtocols) {
        samples[ProtocolIndex(protocol)] = Samples(ports.by_protocol[ProtocolIndex(protocol)]);
        for (uint16_t port : samples[ProtocolIndex(protocol)]) {
          bool want = reference::Evaluate(cluster, Flow{src, dst, protocol, port}, options.evaluation)
                          .allowed;
          if (want != ports.Contains(protocol, port) && problems++ < 5) {
            ADD_FAILURE() << label << ": " << ends.names[s] << " => " << ends.names[d] << " "
                          << ProtocolName(protocol) << "/" << port << ": reference "
                          << (want ? "allows" : "denies") << ", listing says "
                          << ports.ToString();
          }
        }
      }
      if (!explain || it == listed.end()) continue;
      const Reasons& why = it->second->why;
      std::vector<uint16_t> sample;
      for (const auto& list : samples) sample.insert(sample.end(), list.begin(), list.end());
      const bool exact = exact_explained > 0 && src.is_pod && dst.is_pod;
      exact_explained -= exact;
      Reasons want = ReferenceDeciders(cluster, src, dst, ports, exact ? nullptr : &sample,
                                       options.evaluation);
      bool ok = exact ? want == why : Includes(why.egress, want.egress) &&
                                          Includes(why.ingress, want.ingress);
      if (!ok && problems++ < 5) {
        ADD_FAILURE() << label << ": " << ends.names[s] << " => " << ends.names[d] << " "
                      << ports.ToString() << (exact ? " (every port)" : " (sampled ports)")
                      << ": explained as egress [" << absl::StrJoin(why.egress, " | ")
                      << "] ingress [" << absl::StrJoin(why.ingress, " | ")
                      << "], the reference's deciders are egress ["
                      << absl::StrJoin(want.egress, " | ") << "] ingress ["
                      << absl::StrJoin(want.ingress, " | ") << "]";
      }
    }
  }
  return problems;
}

TEST(Connections, RandomClustersEqualTheReference) {
  const char* only = std::getenv("NP_SEED");
  for (int seed = 0; seed < Seeds(); ++seed) {
    if (only != nullptr && seed != std::atoi(only)) continue;
    testgen::RandomCluster generator(seed);
    absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
    ASSERT_TRUE(cluster.ok());
    EngineOptions options;
    if (seed % 7 == 3) options.evaluation.ip_block_scope = EvaluationOptions::IpBlockScope::kExternalOnly;
    if (CheckListing(*cluster, options, absl::StrCat("seed ", seed, " (NP_SEED=", seed, ")"),
                     /*explain=*/seed % 10 == 0, /*exact_explained=*/seed % 50 == 0) > 0) {
      return;
    }
  }
}

// The same with AdminNetworkPolicy, BaselineAdminNetworkPolicy and ClusterNetworkPolicy in
// every cluster (tier tables list denied peers: the `negated` intervals).
TEST(Connections, RandomTieredClustersEqualTheReference) {
  const char* only = std::getenv("NP_SEED");
  testgen::RandomClusterOptions tiered;
  tiered.tier_chance = 1;
  for (int seed = 0; seed < Seeds() / 2; ++seed) {
    if (only != nullptr && seed != std::atoi(only)) continue;
    testgen::RandomCluster generator(seed, tiered);
    absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    EngineOptions options;
    if (seed % 7 == 3) options.evaluation.ip_block_scope = EvaluationOptions::IpBlockScope::kExternalOnly;
    if (CheckListing(*cluster, options,
                     absl::StrCat("tiered seed ", seed, " (NP_SEED=", seed, ")"),
                     /*explain=*/seed % 3 == 0, /*exact_explained=*/seed % 12 == 0) > 0) {
      return;
    }
  }
}

// network-policy-api's conformance data (testdata/tiers): the listing allows exactly the
// connections upstream expects (each PokeServer call), and equals the reference elsewhere.
TEST(Connections, TierConformanceListingsMatchUpstream) {
  int files = 0, flows = 0;
  for (const char* dir : {"testdata/tiers/v1alpha1", "testdata/tiers/v1alpha2"}) {
    for (const std::string& path : TestFiles(dir)) {
      ++files;
      ClusterLoader loader;
      ASSERT_TRUE(loader.AddPath(path).ok()) << path;
      absl::StatusOr<Cluster> cluster = loader.Build();
      ASSERT_TRUE(cluster.ok()) << path << ": " << cluster.status();
      absl::StatusOr<std::vector<testing::Expectation>> expectations =
          testing::ReadExpectations(path);
      ASSERT_TRUE(expectations.ok()) << expectations.status();
      for (const testing::Expectation& e : *expectations) {
        EngineOptions options;
        options.evaluation = e.options;
        std::shared_ptr<const Engine> engine = *Engine::Build(*cluster, options);
        absl::StatusOr<Connections> listing = ListConnections(*engine);
        ASSERT_TRUE(listing.ok()) << path << ": " << listing.status();
        // An end as the listing names it: a pod, or the range holding an address.
        auto name_of = [&](const std::string& end) {
          if (testing::IsPodName(end)) return end;
          IpAddress a = *IpAddress::Parse(end);
          if (std::optional<int> pod = cluster->PodByIp(a)) return cluster->pod(*pod).Key();
          for (const ConnectionEnd& r : listing->ends) {
            if (!r.is_pod && r.first.family() == a.family() &&
                !(a < r.first) && !(r.last < a)) {
              return r.name;
            }
          }
          return std::string("(no range holds ") + end + ")";
        };
        for (const testing::FlowExpectation& f : e.flows) {
          ++flows;
          const std::string from = name_of(f.from), to = name_of(f.to);
          bool listed = false;
          for (const Connection& c : listing->connections) {
            if (c.from.name == from && c.to.name == to) listed = c.ports.Contains(f.protocol, f.port);
          }
          EXPECT_EQ(listed, f.allowed)
              << path << ":" << f.line << ": " << f.from << " -> " << f.to << " "
              << ProtocolName(f.protocol) << "/" << f.port << ": upstream expects "
              << (f.allowed ? "allowed" : "denied");
        }
        CheckListing(*cluster, options, path, /*explain=*/files % 4 == 0);
      }
    }
  }
  EXPECT_EQ(files, 133) << "the tier conformance files were not all found";
  EXPECT_GT(flows, 600);
}

// A namespace relabel changes no pod, only which namespaceSelector its pods match: the
// incremental diff must still find the opened pair (the API: a namespaceSelector matches
// every pod of the namespaces whose labels it selects).
TEST(Connections, NamespaceRelabelShowsInTheIncrementalDiff) {
  ClusterObjects objects;
  objects.pods.push_back({MakePod("a", "10.0.0.1"), {}});
  k8s::Pod other = MakePod("b", "10.0.1.1");
  other.mutable_metadata()->set_namespace_("y");
  objects.pods.push_back({other, {}});
  // z is blue already: y/b's new peer class after the relabel is z/c's, which x/a's table
  // already admits — no table changes, only y/b's peer class does.
  k8s::Namespace z;
  z.mutable_metadata()->set_name("z");
  (*z.mutable_metadata()->mutable_labels())["team"] = "blue";
  objects.namespaces.push_back({z, {}});
  k8s::Pod third = MakePod("c", "10.0.2.1");
  third.mutable_metadata()->set_namespace_("z");
  objects.pods.push_back({third, {}});
  k8s::NetworkPolicy in;
  in.mutable_metadata()->set_namespace_("x");
  in.mutable_metadata()->set_name("from-blue");
  in.mutable_spec()->mutable_podselector();
  auto* peer = in.mutable_spec()->add_ingress()->add_from();
  (*peer->mutable_namespaceselector()->mutable_matchlabels())["team"] = "blue";
  objects.policies.push_back({in, {}});
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  ASSERT_TRUE(cluster.ok());
  std::shared_ptr<const Engine> before = *Engine::Build(*cluster);
  k8s::Namespace y;
  y.mutable_metadata()->set_name("y");
  (*y.mutable_metadata()->mutable_labels())["team"] = "blue";
  ConnectionOptions pods_only;
  pods_only.external = false;
  absl::StatusOr<ConnectionDiff> diff =
      DiffChanges(*before, {Change{Change::Op::kUpsert, y}}, pods_only);
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_EQ(Lines(diff->added), std::vector<std::string>{"y/b => x/a : All connections"});
  EXPECT_TRUE(diff->removed.empty());
  // Explained: from-blue's rule admits y/b now; before, from-blue isolated x/a and no rule
  // admitted y/b; y/b's egress allowed both times (not a reason it was denied).
  pods_only.explain = true;
  diff = DiffChanges(*before, {Change{Change::Op::kUpsert, y}}, pods_only);
  ASSERT_TRUE(diff.ok()) << diff.status();
  ASSERT_EQ(diff->added.size(), 1u);
  EXPECT_EQ(diff->added[0].why, (Reasons{{"not isolated"}, {"x/from-blue spec.ingress[0]"}}));
  EXPECT_EQ(diff->added[0].why_not, (Reasons{{}, {"isolated by x/from-blue; no rule admits"}}));
  EXPECT_EQ(FormatDiff(*diff),
            "+ y/b => x/a : All connections\n"
            "    after: egress at y/b: not isolated\n"
            "    after: ingress at x/a: x/from-blue spec.ingress[0]\n"
            "    before: ingress at x/a: isolated by x/from-blue; no rule admits\n");
}

// Incremental diff = full diff = diff of recomputed changes; diff(A, A) is empty; diff(A, B)
// is diff(B, A) reversed; the edges of every added (removed) interval are allowed after and
// denied before (the reverse) by the reference, whose deciders there the explanation holds.
void CheckDiffs(int seed, const testgen::RandomClusterOptions& generator_options) {
  {
    testgen::RandomCluster generator(seed, generator_options);
    absl::StatusOr<Cluster> a = Cluster::Create(generator.Objects());
    ASSERT_TRUE(a.ok());
    std::vector<Change> changes;
    Cluster current = *a;
    // A namespace relabel now and then: it changes peer classes without touching a pod.
    int steps = seed % 3 == 0 ? 6 : 3;
    for (int i = 0; i < steps; ++i) {
      if (i == 0 && seed % 3 == 0 && current.namespace_count() > 0) {
        k8s::Namespace ns;
        ns.mutable_metadata()->set_name(current.ns(0).name);
        (*ns.mutable_metadata()->mutable_labels())[seed % 2 ? "team" : "env"] =
            seed % 4 ? "a" : "dev";
        changes.push_back(Change{Change::Op::kUpsert, ns});
        absl::StatusOr<Cluster> next = current.Apply({changes.back()});
        ASSERT_TRUE(next.ok()) << next.status();
        current = *next;
        continue;
      }
      // Tier policies and Nodes too: ChangesBetween must recompute those as well.
      changes.push_back(i % 2 == 1 ? generator.RandomTierChange(current)
                                   : generator.RandomChange(current));
      absl::StatusOr<Cluster> next = current.Apply({changes.back()});
      ASSERT_TRUE(next.ok()) << next.status();
      current = *next;
    }
    std::shared_ptr<const Engine> before = *Engine::Build(*a);
    std::shared_ptr<const Engine> after = *Engine::Build(current);
    // The incremental diff (only the pairs the change touches) equals the full one, from the
    // changes themselves and from the changes recomputed between the two clusters.
    absl::StatusOr<ConnectionDiff> incremental = DiffChanges(*before, changes);
    ASSERT_TRUE(incremental.ok()) << incremental.status();
    absl::StatusOr<ConnectionDiff> full = DiffConnections(*before, *after);
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(Lines(incremental->added), Lines(full->added)) << "seed " << seed;
    EXPECT_EQ(Lines(incremental->removed), Lines(full->removed)) << "seed " << seed;
    absl::StatusOr<ConnectionDiff> recomputed = DiffChanges(*before, ChangesBetween(*a, current));
    ASSERT_TRUE(recomputed.ok()) << recomputed.status();
    EXPECT_EQ(Lines(recomputed->added), Lines(full->added)) << "seed " << seed;
    EXPECT_EQ(Lines(recomputed->removed), Lines(full->removed)) << "seed " << seed;
    absl::StatusOr<ConnectionDiff> same = DiffConnections(*before, *before);
    ASSERT_TRUE(same.ok());
    EXPECT_TRUE(same->empty()) << FormatDiff(*same);
    ConnectionOptions explained;
    explained.explain = true;
    absl::StatusOr<ConnectionDiff> forward = DiffConnections(*before, *after, explained);
    absl::StatusOr<ConnectionDiff> backward = DiffConnections(*after, *before);
    ASSERT_TRUE(forward.ok() && backward.ok());
    EXPECT_EQ(Lines(forward->added), Lines(backward->removed)) << "seed " << seed;
    EXPECT_EQ(Lines(forward->removed), Lines(backward->added)) << "seed " << seed;
    // Every added port is allowed after and denied before (sampled), and the reverse.
    auto endpoint = [&](const Cluster& c, const ConnectionEnd& e) -> std::optional<Endpoint> {
      if (!e.is_pod) return Endpoint::External(e.first);
      std::optional<int> i = c.FindPod(e.name);
      if (!i) return std::nullopt;
      return Endpoint::Pod(*i);
    };
    for (bool added : {true, false}) {
      for (const Connection& c : added ? forward->added : forward->removed) {
        for (Protocol protocol : kAllProtocols) {
          for (const PortRange& r : c.ports.by_protocol[ProtocolIndex(protocol)]) {
            for (uint16_t port : {r.first, r.last}) {
              for (bool in_after : {false, true}) {
                const Cluster& cl = in_after ? current : *a;
                std::optional<Endpoint> s = endpoint(cl, c.from), d = endpoint(cl, c.to);
                if (!s || !d) {
                  EXPECT_NE(in_after, added) << "seed " << seed << ": " << c.from.name;
                  continue;
                }
                const Verdict v = reference::Evaluate(cl, Flow{*s, *d, protocol, port});
                EXPECT_EQ(v.allowed, in_after == added)
                    << "seed " << seed << ": " << c.from.name << " => " << c.to.name << " "
                    << ProtocolName(protocol) << "/" << port << (added ? " added" : " removed");
                // The state that allows the port explains it in `why`; the other's denying
                // sides are in `why_not`.
                const Reasons& reasons = v.allowed ? c.why : c.why_not;
                for (const auto& [side, list] :
                     {std::pair{&v.egress, &reasons.egress}, {&v.ingress, &reasons.ingress}}) {
                  if (side->allowed() != v.allowed) continue;
                  std::vector<std::string> want = Deciders(*side);
                  std::sort(want.begin(), want.end());
                  EXPECT_TRUE(Includes(*list, want))
                      << "seed " << seed << ": " << c.from.name << " => " << c.to.name << " "
                      << ProtocolName(protocol) << "/" << port << " in the "
                      << (in_after ? "after" : "before") << " state: explained as ["
                      << absl::StrJoin(*list, " | ") << "], the reference's deciders ["
                      << absl::StrJoin(want, " | ") << "]";
                }
              }
            }
          }
        }
      }
    }
  }
}

// The incremental diff along a chain of single changes, each applied to the snapshot the
// previous one produced (so tables, classes and ids are shared the way a long-running user
// shares them): pod adds, relabels and deletes, namespace relabels, policy adds, edits and
// deletes, tier policy and Node adds, edits and deletes. Each step must equal the full diff
// of the same two snapshots and the full diff of two engines built from scratch (no shared
// tables, independent class ids), with and without filters. A pair the incremental diff
// fails to visit shows up as a missing line.
void CheckDiffChain(int seed, const testgen::RandomClusterOptions& generator_options) {
  testgen::RandomCluster generator(seed, generator_options);
  absl::StatusOr<Cluster> start = Cluster::Create(generator.Objects());
  ASSERT_TRUE(start.ok());
  Cluster current = *start;
  std::shared_ptr<const Engine> engine = *Engine::Build(current);
  std::vector<ConnectionOptions> variants(3);
  variants[1].external = false;
  variants[1].from = current.pod_count() > 0 ? absl::StrCat(current.pod(0).namespace_name, "/*")
                                             : "x/*";
  variants[2].ports = {{80, 81}};
  variants[2].protocols = {Protocol::kTCP, Protocol::kUDP};
  for (int step = 0; step < 16; ++step) {
    Change change;
    if (step % 4 == 3 && current.namespace_count() > 0) {
      // A relabel that namespaceSelectors of the generator's policies can tell apart.
      k8s::Namespace ns;
      ns.mutable_metadata()->set_name(current.ns(step % current.namespace_count()).name);
      (*ns.mutable_metadata()->mutable_labels())[step % 8 == 3 ? "team" : "env"] =
          (seed + step) % 2 ? "a" : "dev";
      change = Change{Change::Op::kUpsert, ns};
    } else if (step % 4 == 1) {
      // A tier policy or Node: Apply rebuilds every table holding a tier policy, may intern
      // new selectors and split peer classes (pods' and, for networks and nodes peers,
      // address ranges').
      change = generator.RandomTierChange(current);
    } else {
      change = generator.RandomChange(current);
    }
    absl::StatusOr<Cluster> next_cluster = current.Apply({change});
    ASSERT_TRUE(next_cluster.ok()) << next_cluster.status();
    std::shared_ptr<const Engine> rebuilt_before = *Engine::Build(current);
    std::shared_ptr<const Engine> rebuilt_after = *Engine::Build(*next_cluster);
    std::shared_ptr<const Engine> next;
    for (const ConnectionOptions& options : variants) {
      absl::StatusOr<ConnectionDiff> incremental = DiffChanges(*engine, {change}, options, &next);
      ASSERT_TRUE(incremental.ok()) << incremental.status();
      absl::StatusOr<ConnectionDiff> full = DiffConnections(*engine, *next, options);
      absl::StatusOr<ConnectionDiff> rebuilt =
          DiffConnections(*rebuilt_before, *rebuilt_after, options);
      ASSERT_TRUE(full.ok() && rebuilt.ok());
      EXPECT_EQ(Lines(incremental->added), Lines(full->added))
          << "seed " << seed << " step " << step << " from " << options.from;
      EXPECT_EQ(Lines(incremental->removed), Lines(full->removed))
          << "seed " << seed << " step " << step << " from " << options.from;
      EXPECT_EQ(Lines(incremental->added), Lines(rebuilt->added))
          << "seed " << seed << " step " << step << " from " << options.from;
      EXPECT_EQ(Lines(incremental->removed), Lines(rebuilt->removed))
          << "seed " << seed << " step " << step << " from " << options.from;
    }
    engine = next;
    current = *next_cluster;
  }
}

TEST(Connections, IncrementalDiffAlongAChainOfChangesEqualsTheFullDiff) {
  for (int seed = 0; seed < Seeds() / 6; ++seed) CheckDiffChain(seed, {});
}

TEST(Connections, TieredIncrementalDiffAlongAChainOfChangesEqualsTheFullDiff) {
  testgen::RandomClusterOptions tiered;
  tiered.tier_chance = 1;
  for (int seed = 0; seed < Seeds() / 6; ++seed) CheckDiffChain(seed, tiered);
}

TEST(Connections, DiffIsEmptyForIdenticalInputsAndAntisymmetric) {
  for (int seed = 0; seed < Seeds() / 4; ++seed) CheckDiffs(seed, {});
}

TEST(Connections, TieredDiffIsEmptyForIdenticalInputsAndAntisymmetric) {
  testgen::RandomClusterOptions tiered;
  tiered.tier_chance = 1;
  for (int seed = 0; seed < Seeds() / 4; ++seed) CheckDiffs(seed, tiered);
}

}  // namespace
}  // namespace np::analysis
