// The IR against the engine: a literal interpreter of proto/compiled.proto (the simplest
// possible "backend") answers every packet of random clusters as the engine does.
#include "np/lower.h"

#include <algorithm>
#include <iostream>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "np/backends/util.h"
#include "np/loader.h"
#include "np/testgen/random_cluster.h"

namespace np {
namespace {

std::string Bytes(const IpAddress& a) {
  uint8_t b[16];
  a.ToBytes(b);
  return std::string(reinterpret_cast<char*>(b), a.is_v4() ? 4 : 16);
}

// What the IR says about a packet, read literally (np::backends::IrAllows: proto/compiled.proto's
// meaning, itself tested in np/backends/util_test against the proto's sentences).
class IrInterpreter {
 public:
  explicit IrInterpreter(const ir::CompiledPolicy& ir) : ir_(ir) {
    absl::Status valid = backends::CheckIr(ir);
    EXPECT_TRUE(valid.ok()) << valid;
  }

  bool Allowed(const IpAddress& src, const IpAddress& dst, Protocol protocol,
               uint16_t port) const {
    return backends::IrAllows(ir_, Bytes(src), Bytes(dst), static_cast<int>(protocol), port);
  }

 private:
  const ir::CompiledPolicy& ir_;
};

void CheckRangesPartitionTheSpace(const ir::CompiledPolicy& ir) {
  for (int f = 0; f < 2; ++f) {
    const auto& ranges = f == 0 ? ir.ipv4() : ir.ipv6();
    size_t n = f == 0 ? 4 : 16;
    ASSERT_GT(ranges.size(), 0);
    EXPECT_EQ(ranges[0].first(), std::string(n, '\0'));
    EXPECT_EQ(ranges[ranges.size() - 1].last(), std::string(n, '\xff'));
    for (int i = 0; i < ranges.size(); ++i) {
      EXPECT_LE(ranges[i].first(), ranges[i].last());
      ASSERT_LT(ranges[i].identity(), static_cast<uint32_t>(ir.identities_size()));
      EXPECT_FALSE(ranges[i].cidrs().empty());
      if (i > 0) {
        // Disjoint and contiguous: last + 1 == next first.
        std::string next = ranges[i - 1].last();
        for (int b = static_cast<int>(n) - 1; b >= 0; --b) {
          if (static_cast<uint8_t>(next[b]) == 0xff) {
            next[b] = 0;
          } else {
            next[b] = static_cast<char>(static_cast<uint8_t>(next[b]) + 1);
            break;
          }
        }
        EXPECT_EQ(next, ranges[i].first()) << "gap or overlap before range " << i;
      }
    }
  }
}

TEST(LowerToIr, CidrDecomposition) {
  ClusterObjects objects;
  k8s::NetworkPolicy p;
  p.mutable_metadata()->set_namespace_("x");
  p.mutable_metadata()->set_name("p");
  p.mutable_spec()->mutable_podselector();
  auto* block = p.mutable_spec()->add_ingress()->add_from()->mutable_ipblock();
  block->set_cidr("10.0.0.0/8");
  block->add_except("10.0.0.0/24");
  objects.policies.push_back({p, {}});
  k8s::Pod pod;
  pod.mutable_metadata()->set_namespace_("x");
  pod.mutable_metadata()->set_name("a");
  pod.mutable_status()->add_podips()->set_ip("10.1.0.5");
  objects.pods.push_back({pod, {}});
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  ASSERT_TRUE(cluster.ok());
  absl::StatusOr<ir::CompiledPolicy> ir = LowerToIr(**Engine::Build(*cluster));
  ASSERT_TRUE(ir.ok());
  CheckRangesPartitionTheSpace(*ir);
  // Outside the block and its except alike: [0.0.0.0, 10.0.0.255] is one identity (no
  // ipBlock holds it) = 0/5 + 8/7 + 10.0.0.0/24; then the block up to the pod, the pod.
  ASSERT_GE(ir->ipv4_size(), 4);
  EXPECT_EQ(std::vector<std::string>(ir->ipv4(0).cidrs().begin(), ir->ipv4(0).cidrs().end()),
            (std::vector<std::string>{"0.0.0.0/5", "8.0.0.0/7", "10.0.0.0/24"}));
  EXPECT_EQ(ir->ipv4(1).cidrs(0), "10.0.1.0/24");
  EXPECT_EQ(ir->ipv4(2).cidrs(0), "10.1.0.5/32");
  EXPECT_EQ(ir->ipv4(2).pod(), "x/a");
  EXPECT_EQ(ir->ipv4(3).cidrs(0), "10.1.0.6/31");
  // The block's two sides of the pod share an identity; the outside has another.
  EXPECT_EQ(ir->ipv4(1).identity(), ir->ipv4(3).identity());
  EXPECT_NE(ir->ipv4(0).identity(), ir->ipv4(1).identity());
  ASSERT_EQ(ir->endpoints_size(), 1);
  EXPECT_TRUE(ir->endpoints(0).selected());
  const ir::Table& t = ir->tables(ir->endpoints(0).table());
  EXPECT_TRUE(t.ingress().isolated());
  EXPECT_FALSE(t.egress().isolated());
  EXPECT_EQ(ir->ipv6_size(), 1);  // one range: the whole IPv6 space
  EXPECT_EQ(ir->ipv6(0).cidrs(0), "::/0");
}

// Every probe address pair, protocol and probe port: the IR answers as the engine.
void CheckIrEqualsEngine(uint64_t seed, const Cluster& cluster, const Engine& engine,
                         const ir::CompiledPolicy& ir) {
  CheckRangesPartitionTheSpace(ir);
  IrInterpreter interpreter(ir);
  std::vector<IpAddress> addresses = testgen::RandomCluster::ProbeAddresses();
  for (int i = 0; i < cluster.pod_count(); ++i) {
    for (const IpAddress& a : cluster.pod(i).ips) addresses.push_back(a);
  }
  for (const IpAddress& s : addresses) {
    for (const IpAddress& d : addresses) {
      if (s.family() != d.family()) continue;
      for (Protocol protocol : kAllProtocols) {
        for (uint16_t port : testgen::RandomCluster::ProbePorts()) {
          bool expected = engine.AllowedPacket(s, d, protocol, port);
          bool got = interpreter.Allowed(s, d, protocol, port);
          ASSERT_EQ(got, expected)
              << "seed " << seed << ": " << s.ToString() << " -> " << d.ToString() << " "
              << ProtocolName(protocol) << "/" << port << "\n"
              << ir.DebugString();
        }
      }
    }
  }
}

// Lowers the engine for `options`, with the tiers ordered and flattened, and checks that
// each IR answers every probe address pair, protocol and probe port as the engine does.
// Without tier policies the two forms are the same IR.
void CheckInterpreterEqualsEngine(uint64_t seed, const Cluster& cluster,
                                  const EngineOptions& options) {
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(cluster, options);
  ASSERT_TRUE(engine.ok()) << "seed " << seed << ": " << engine.status();
  std::string ordered_bytes;
  for (bool flatten : {false, true}) {
    SCOPED_TRACE(flatten ? "flattened tiers" : "ordered tiers");
    LowerOptions lower_options;
    lower_options.flatten_tiers = flatten;
    absl::StatusOr<ir::CompiledPolicy> ir = LowerToIr(**engine, lower_options);
    ASSERT_TRUE(ir.ok()) << "seed " << seed << ": " << ir.status();
    if (flatten && cluster.tier_policy_count() == 0) {
      // The same bytes, so the same answers: no need to ask them again.
      ASSERT_EQ(ir->SerializeAsString(), ordered_bytes) << "seed " << seed;
      continue;
    }
    ASSERT_NO_FATAL_FAILURE(CheckIrEqualsEngine(seed, cluster, **engine, *ir));
    if (!flatten) {
      ordered_bytes = ir->SerializeAsString();
      continue;
    }
    for (const ir::Table& t : ir->tables()) {
      EXPECT_TRUE(t.ingress().admin().empty() && t.ingress().baseline().empty() &&
                  t.egress().admin().empty() && t.egress().baseline().empty());
    }
  }
}

// The options a seed's cluster is lowered with: per node or whole, each ipBlock scope,
// with and without always-allow-self.
EngineOptions OptionsForSeed(uint64_t seed) {
  EngineOptions options;
  if (seed % 2 == 0) options.node_name = "node-1";
  if (seed % 7 == 3) {
    options.evaluation.ip_block_scope = EvaluationOptions::IpBlockScope::kExternalOnly;
  }
  if (seed % 5 == 2) options.evaluation.always_allow_self = true;
  return options;
}

TEST(LowerToIr, InterpreterEqualsEngineOnRandomClusters) {
  for (uint64_t seed = 0; seed < 1500; ++seed) {
    testgen::RandomCluster generator(seed);
    absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
    ASSERT_TRUE(cluster.ok());
    ASSERT_NO_FATAL_FAILURE(CheckInterpreterEqualsEngine(seed, *cluster, OptionsForSeed(seed)));
  }
}

// Whether a tier rule's action lets its peers through ("Allow" v1alpha1, "Accept" v1alpha2).
bool Accepts(const std::string& action) { return action == "Allow" || action == "Accept"; }

// Drops the domainNames peers of Deny and Pass rules (and a rule left with no peer), which the
// lowering refuses (DomainNamesInDenyOrPassAreRefused); returns whether it dropped any.
template <typename Rules>
bool DropUnenforceableDomainNames(Rules* rules) {
  bool dropped = false;
  for (int r = rules->size() - 1; r >= 0; --r) {
    auto* rule = rules->Mutable(r);
    if (Accepts(rule->action())) continue;
    auto* peers = rule->mutable_peers();
    for (int p = peers->size() - 1; p >= 0; --p) {
      if (peers->Get(p).domainnames_size() == 0) continue;
      peers->DeleteSubrange(p, 1);
      dropped = true;
    }
    if (peers->empty()) rules->DeleteSubrange(r, 1);
  }
  return dropped;
}

bool DropUnenforceableDomainNames(ClusterObjects& objects) {
  bool dropped = false;
  for (auto& p : objects.admin_network_policies) {
    dropped |= DropUnenforceableDomainNames(p.object.mutable_spec()->mutable_egress());
  }
  for (auto& p : objects.baseline_admin_network_policies) {
    dropped |= DropUnenforceableDomainNames(p.object.mutable_spec()->mutable_egress());
  }
  for (auto& p : objects.cluster_network_policies) {
    dropped |= DropUnenforceableDomainNames(p.object.mutable_spec()->mutable_egress());
  }
  return dropped;
}

// The tiers (Admin, NetworkPolicy, Baseline, priorities, Pass, every peer kind, named ports)
// lowered into the IR's allow tables answer as the engine, which equals the reference on
// random tiered clusters (engine_test). Replay one seed: --gtest_filter=*Tiered* and
// NP_TIERED_LOWER_SEED=<seed>.
TEST(LowerToIr, InterpreterEqualsEngineOnRandomTieredClusters) {
  uint64_t first = 5000000, count = 1500;
  if (const char* one = std::getenv("NP_TIERED_LOWER_SEED")) {
    first = std::strtoull(one, nullptr, 10);
    count = 1;
  }
  testgen::RandomClusterOptions generator_options;
  generator_options.tier_chance = 1;
  int refused = 0, with_tiers = 0;
  for (uint64_t seed = first; seed < first + count; ++seed) {
    testgen::RandomCluster generator(seed, generator_options);
    ClusterObjects objects = generator.Objects();
    ClusterObjects enforceable = objects;
    if (DropUnenforceableDomainNames(enforceable)) {
      // As generated, the lowering refuses it, naming the rule.
      absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
      ASSERT_TRUE(cluster.ok()) << "seed " << seed << ": " << cluster.status();
      absl::StatusOr<ir::CompiledPolicy> ir = LowerToIr(**Engine::Build(*cluster, {}));
      ASSERT_FALSE(ir.ok()) << "seed " << seed << ": a Deny/Pass domainNames peer was lowered";
      EXPECT_EQ(ir.status().code(), absl::StatusCode::kUnimplemented);
      EXPECT_NE(ir.status().message().find("].domainNames (action "), std::string::npos)
          << ir.status();
      ++refused;
    }
    absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(enforceable));
    ASSERT_TRUE(cluster.ok()) << "seed " << seed << ": " << cluster.status();
    with_tiers += cluster->tier_policy_count() > 0;
    ASSERT_NO_FATAL_FAILURE(CheckInterpreterEqualsEngine(seed, *cluster, OptionsForSeed(seed)));
  }
  if (count > 1) {
    // The generator does draw what this test is about.
    EXPECT_GT(with_tiers, static_cast<int>(count) * 9 / 10);
    EXPECT_GT(refused, 0);
  }
}

// A ClusterNetworkPolicy of `tier` with `priority`, `subject` and `rules` (YAML of
// "ingress:"/"egress:" lists, indented two spaces).
std::string Cnp(const std::string& name, const std::string& tier, int priority,
                const std::string& subject, const std::string& rules) {
  return absl::StrCat("---\napiVersion: policy.networking.k8s.io/v1alpha2\n",
                      "kind: ClusterNetworkPolicy\nmetadata: {name: ", name, "}\nspec:\n  tier: ",
                      tier, "\n  priority: ", priority, "\n  subject: ", subject, "\n", rules);
}

constexpr char kNamespaceA[] = "{namespaces: {matchLabels: {team: a}}}";
constexpr char kFromB[] = "from: [{namespaces: {matchLabels: {team: b}}}]";

// Two namespaces a, b (pods a/p1 10.0.1.1, a/p2 10.0.1.2, b/q 10.0.2.1), then `policies`
// (and any other objects), lowered with the tiers ordered.
IrInterpreter* LowerYaml(const std::string& policies, absl::Status* status,
                         std::optional<ir::CompiledPolicy>& ir) {
  std::string objects;
  for (const char* ns : {"a", "b"}) {
    absl::StrAppend(&objects, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ", ns,
                    ", labels: {team: ", ns, "}}\n");
  }
  for (const auto& [ns, name, ip] : {std::tuple{"a", "p1", "10.0.1.1"}, std::tuple{"a", "p2", "10.0.1.2"},
                                     std::tuple{"b", "q", "10.0.2.1"}}) {
    absl::StrAppend(&objects, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ", name,
                    ", namespace: ", ns, "}\nstatus: {podIP: ", ip, "}\n");
  }
  ClusterLoader loader;
  *status = loader.AddText(absl::StrCat(objects, policies), "in.yaml");
  if (!status->ok()) return nullptr;
  absl::StatusOr<Cluster> cluster = loader.Build();
  if (!cluster.ok()) {
    *status = cluster.status();
    return nullptr;
  }
  absl::StatusOr<ir::CompiledPolicy> lowered = LowerToIr(**Engine::Build(*cluster));
  if (!lowered.ok()) {
    *status = lowered.status();
    return nullptr;
  }
  ir = *std::move(lowered);
  static std::optional<IrInterpreter> interpreter;
  interpreter.emplace(*ir);
  return &*interpreter;
}

bool Allowed(IrInterpreter* ir, const char* from, const char* to, uint16_t port = 80) {
  return ir->Allowed(*IpAddress::Parse(from), *IpAddress::Parse(to), Protocol::kTCP, port);
}

constexpr char kP1[] = "10.0.1.1", kP2[] = "10.0.1.2", kQ[] = "10.0.2.1";

// The tier order in the kernel's tables, one sentence of the API each (network-policy-api
// apis/v1alpha2): expected verdicts come from the sentences, not from np.
TEST(LowerToIr, TierOrderInTheTables) {
  absl::Status status;
  std::optional<ir::CompiledPolicy> ir;
  // "Deny: ... No further ClusterNetworkPolicy or NetworkPolicy rules will be processed":
  // an Admin Deny from b beats a NetworkPolicy allowing every ingress of namespace a; the
  // Admin tier selects b/q too (namespaces {}), yet it denies only ingress from b.
  IrInterpreter* i = LowerYaml(
      "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
      "metadata: {name: all, namespace: a}\nspec: {podSelector: {}, ingress: [{}]}\n" +
          Cnp("deny-b", "Admin", 5, "{namespaces: {}}",
              absl::StrCat("  ingress:\n  - {action: Deny, ", kFromB, "}\n")),
      &status, ir);
  ASSERT_NE(i, nullptr) << status;
  EXPECT_FALSE(Allowed(i, kQ, kP1));
  EXPECT_TRUE(Allowed(i, kP2, kP1));
  EXPECT_TRUE(Allowed(i, kP1, kQ));  // a is not b
  EXPECT_FALSE(Allowed(i, kQ, kQ));  // b's own pod from b (no always-allow-self in the IR)

  // "Pass: ... the traffic ... is delegated to NetworkPolicy and then the Baseline tier":
  // Pass from b (priority 1) comes before Admin Deny everything (priority 2); a pod that no
  // NetworkPolicy selects falls to the Baseline tier, which denies b -> a.
  i = LowerYaml(
      Cnp("pass-b", "Admin", 1, kNamespaceA,
          absl::StrCat("  ingress:\n  - {action: Pass, ", kFromB, "}\n")) +
          Cnp("deny-all", "Admin", 2, kNamespaceA,
              "  ingress:\n  - {action: Deny, from: [{namespaces: {}}]}\n") +
          Cnp("baseline", "Baseline", 1,
              "{pods: {namespaceSelector: {matchLabels: {team: a}}, podSelector: {}}}",
              absl::StrCat("  ingress:\n  - {action: Deny, ", kFromB,
                           ", protocols: [{tcp: {destinationPort: {number: 80}}}]}\n")),
      &status, ir);
  ASSERT_NE(i, nullptr) << status;
  EXPECT_FALSE(Allowed(i, kP2, kP1));       // a -> a: the Admin Deny
  EXPECT_FALSE(Allowed(i, kQ, kP1, 80));    // passed, then the Baseline Deny on TCP 80
  EXPECT_TRUE(Allowed(i, kQ, kP1, 81));     // passed, no Baseline rule: the default allows
  EXPECT_TRUE(Allowed(i, "192.0.2.1", kP1));  // no namespace peer matches an address
}

// The table of endpoint namespace/name.
const ir::Table& TableOf(const ir::CompiledPolicy& ir, absl::string_view pod) {
  for (const ir::Endpoint& e : ir.endpoints()) {
    if (absl::StrCat(e.namespace_(), "/", e.name()) == pod && e.selected()) {
      return ir.tables(static_cast<int>(e.table()));
    }
  }
  ADD_FAILURE() << "no selected endpoint " << pod;
  static const ir::Table none;
  return none;
}

constexpr char kAllowFromBOn80[] =
    "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
    "metadata: {name: from-b, namespace: a}\nspec:\n  podSelector: {}\n"
    "  ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}], ports: [{port: 80}]}]\n";

// The ordered form keeps NetworkPolicy and the tiers apart: `isolated`/`rules` are what the
// NetworkPolicies alone say, `admin`/`baseline` the tier rules, and the kernel decides in the
// API's order. Expected verdicts: network-policy-api v1alpha2 sentences.
TEST(LowerToIr, OrderedTiersPassOnToNetworkPolicy) {
  absl::Status status;
  std::optional<ir::CompiledPolicy> ir;
  // "Pass: ... delegated to NetworkPolicy": a Pass from b ahead of an Admin Deny of every
  // namespace leaves b's traffic to the NetworkPolicy, which allows TCP 80 only (it isolates
  // the pods: "no further rules").
  IrInterpreter* i = LowerYaml(
      std::string(kAllowFromBOn80) +
          Cnp("pass-b", "Admin", 1, kNamespaceA,
              absl::StrCat("  ingress:\n  - {name: pass-from-b, action: Pass, ", kFromB, "}\n")) +
          Cnp("deny-all", "Admin", 2, kNamespaceA,
              "  ingress:\n  - {action: Deny, from: [{namespaces: {}}]}\n") +
          Cnp("base-allow", "Baseline", 1, kNamespaceA,
              "  ingress:\n  - {action: Accept, from: [{namespaces: {}}]}\n"),
      &status, ir);
  ASSERT_NE(i, nullptr) << status;
  EXPECT_TRUE(Allowed(i, kQ, kP1, 80));   // passed; the NetworkPolicy allows TCP 80 from b
  EXPECT_FALSE(Allowed(i, kQ, kP1, 81));  // passed; isolated, so the Baseline Accept is not read
  EXPECT_FALSE(Allowed(i, kP2, kP1, 80)); // the Admin Deny
  EXPECT_FALSE(Allowed(i, "192.0.2.1", kP1, 80));  // isolated, no rule admits it

  const ir::DirectionPolicy& in = TableOf(*ir, "a/p1").ingress();
  EXPECT_TRUE(in.isolated());  // by the NetworkPolicy alone
  ASSERT_EQ(in.rules_size(), 1);
  EXPECT_EQ(in.rules(0).first_port(), 80u);
  EXPECT_EQ(in.rules(0).last_port(), 80u);
  ASSERT_EQ(in.admin_size(), 2);  // one TierRule per rule: no ports, one peer
  EXPECT_EQ(in.admin(0).origin(),
            "ClusterNetworkPolicy pass-b priority 1 ingress[0] \"pass-from-b\"");
  EXPECT_EQ(in.admin(0).action(), ir::TIER_PASS);
  EXPECT_EQ(in.admin(1).origin(), "ClusterNetworkPolicy deny-all priority 2 ingress[0]");
  EXPECT_EQ(in.admin(1).action(), ir::TIER_DENY);
  ASSERT_EQ(in.baseline_size(), 1);
  EXPECT_EQ(in.baseline(0).action(), ir::TIER_ALLOW);
  // Egress: no policy of any kind has egress rules.
  EXPECT_FALSE(backends::Restricted(TableOf(*ir, "a/p1").egress()));
  EXPECT_EQ(std::vector<std::string>(TableOf(*ir, "a/p1").policies().begin(),
                                     TableOf(*ir, "a/p1").policies().end()),
            (std::vector<std::string>{"a/from-b", "ClusterNetworkPolicy pass-b",
                                      "ClusterNetworkPolicy deny-all",
                                      "ClusterNetworkPolicy base-allow"}));
}

// "BaselineAdminNetworkPolicy ... rules are evaluated only if no NetworkPolicy selects the
// pod": a Baseline Deny from b decides for a/p2, which no NetworkPolicy selects, and not for
// a/p3, whose NetworkPolicy admits b on TCP 80; an Admin Accept of UDP 53 beats both.
TEST(LowerToIr, OrderedBaselineOnlyWhereNetworkPolicyDoesNotIsolate) {
  absl::Status status;
  std::optional<ir::CompiledPolicy> ir;
  std::string only_p1 = kAllowFromBOn80;
  only_p1.replace(only_p1.find("podSelector: {}"), 15,
                  "podSelector: {matchLabels: {app: one}}");
  absl::StrAppend(&only_p1,
                  "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p3, namespace: a, "
                  "labels: {app: one}}\nstatus: {podIP: 10.0.1.3}\n");
  IrInterpreter* i = LowerYaml(
      only_p1 +
          Cnp("base-deny", "Baseline", 1, kNamespaceA,
              absl::StrCat("  ingress:\n  - {action: Deny, ", kFromB, "}\n")) +
          Cnp("admin-allow", "Admin", 1, kNamespaceA,
              absl::StrCat("  ingress:\n  - {action: Accept, ", kFromB,
                           ", protocols: [{udp: {destinationPort: {number: 53}}}]}\n")),
      &status, ir);
  ASSERT_NE(i, nullptr) << status;
  constexpr char kP3[] = "10.0.1.3";
  EXPECT_TRUE(Allowed(i, kQ, kP3, 80));   // the NetworkPolicy isolates p3 and admits b
  EXPECT_FALSE(Allowed(i, kQ, kP3, 81));  // isolated: not admitted, the Baseline is not read
  EXPECT_FALSE(Allowed(i, kQ, kP2, 80));  // no NetworkPolicy: the Baseline Deny
  EXPECT_TRUE(Allowed(i, kP1, kP2, 80));  // no Baseline rule matches a: the default
  EXPECT_TRUE(i->Allowed(*IpAddress::Parse(kQ), *IpAddress::Parse(kP2), Protocol::kUDP, 53));
  EXPECT_TRUE(i->Allowed(*IpAddress::Parse(kQ), *IpAddress::Parse(kP3), Protocol::kUDP, 53));
  EXPECT_FALSE(TableOf(*ir, "a/p2").ingress().isolated());
  EXPECT_TRUE(TableOf(*ir, "a/p3").ingress().isolated());
}

// A tier rule without ports matches "all ports and protocols": one TierRule of every IP
// protocol (ICMP too). Peers `networks` (pod addresses included) and `nodes` (the Node's
// addresses) become identity sets like ipBlocks.
TEST(LowerToIr, OrderedRuleWithoutPortsAndAddressPeers) {
  absl::Status status;
  std::optional<ir::CompiledPolicy> ir;
  IrInterpreter* i = LowerYaml(
      "---\napiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {role: infra}}\n"
      "status: {addresses: [{type: InternalIP, address: 172.16.0.1}]}\n"
      "---\napiVersion: v1\nkind: Node\nmetadata: {name: n2, labels: {role: app}}\n"
      "status: {addresses: [{type: InternalIP, address: 172.16.0.2}]}\n" +
          Cnp("fence", "Admin", 3, kNamespaceA,
              "  egress:\n"
              "  - {name: no-infra, action: Deny, to: [{nodes: {matchLabels: {role: infra}}}]}\n"
              "  - {action: Deny, to: [{networks: [10.0.2.0/24]}]}\n"),
      &status, ir);
  ASSERT_NE(i, nullptr) << status;
  auto allowed = [&](const char* to, Protocol protocol, uint16_t port) {
    return i->Allowed(*IpAddress::Parse(kP1), *IpAddress::Parse(to), protocol, port);
  };
  EXPECT_FALSE(allowed("172.16.0.1", Protocol::kTCP, 22));
  EXPECT_FALSE(allowed("172.16.0.1", Protocol::kSCTP, 9));
  EXPECT_TRUE(allowed("172.16.0.2", Protocol::kTCP, 22));   // n2 is no infra node
  EXPECT_FALSE(allowed(kQ, Protocol::kUDP, 53));             // networks holds b/q's address
  EXPECT_FALSE(allowed("10.0.2.200", Protocol::kTCP, 80));
  EXPECT_TRUE(allowed("10.0.3.1", Protocol::kTCP, 80));
  EXPECT_TRUE(allowed(kP2, Protocol::kTCP, 80));
  // ICMP (protocol 1): only a rule without ports names it.
  EXPECT_FALSE(backends::IrAllows(*ir, Bytes(*IpAddress::Parse(kP1)),
                                  Bytes(*IpAddress::Parse("172.16.0.1")), 1, 0));
  EXPECT_TRUE(backends::IrAllows(*ir, Bytes(*IpAddress::Parse(kP1)),
                                 Bytes(*IpAddress::Parse("172.16.0.2")), 1, 0));

  const ir::DirectionPolicy& out = TableOf(*ir, "a/p1").egress();
  EXPECT_FALSE(out.isolated());
  ASSERT_EQ(out.admin_size(), 2);
  const ir::TierRule& infra = out.admin(0);
  EXPECT_EQ(infra.origin(), "ClusterNetworkPolicy fence priority 3 egress[0] \"no-infra\"");
  EXPECT_EQ(infra.protocol(), ir::PROTOCOL_UNSPECIFIED);
  EXPECT_EQ(infra.first_port(), 0u);
  EXPECT_EQ(infra.last_port(), 65535u);
  // The infra node's address is one identity, which no pod carries.
  const ir::PeerSet& node_set = ir->peer_sets(static_cast<int>(infra.peer_set()));
  ASSERT_EQ(node_set.identities_size(), 1);
  EXPECT_FALSE(node_set.all());
  EXPECT_TRUE(ir->identities(static_cast<int>(node_set.identities(0))).pods().empty());
  // b's pod is outside the subject and no policy selects it.
  for (const ir::Endpoint& e : ir->endpoints()) EXPECT_EQ(e.selected(), e.namespace_() == "a");
}

// Named ports in tier rules: "a named port ... on the destination pod". Egress resolves on
// each destination's own container ports — one TierRule per port number, towards the pods
// that give the name that number; ingress on the target's own.
TEST(LowerToIr, OrderedNamedPorts) {
  absl::Status status;
  std::optional<ir::CompiledPolicy> ir;
  std::string pods;
  for (const auto& [name, ip, port] :
       {std::tuple{"web1", "10.0.2.11", 8080}, std::tuple{"web2", "10.0.2.12", 9090}}) {
    absl::StrAppend(&pods, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ", name,
                    ", namespace: b}\nspec: {containers: [{name: c, ports: [{name: web, "
                    "containerPort: ", port, "}]}]}\nstatus: {podIP: ", ip, "}\n");
  }
  IrInterpreter* i = LowerYaml(
      pods +
          Cnp("no-web-out", "Admin", 1, kNamespaceA,
              "  egress:\n  - {action: Deny, to: [{namespaces: {matchLabels: {team: b}}}],"
              " protocols: [{destinationNamedPort: web}]}\n") +
          Cnp("no-web-in", "Admin", 1, "{namespaces: {matchLabels: {team: b}}}",
              "  ingress:\n  - {action: Deny, from: [{namespaces: {matchLabels: {team: a}}}],"
              " protocols: [{destinationNamedPort: web}]}\n"),
      &status, ir);
  ASSERT_NE(i, nullptr) << status;
  constexpr char kWeb1[] = "10.0.2.11", kWeb2[] = "10.0.2.12";
  EXPECT_FALSE(Allowed(i, kP1, kWeb1, 8080));
  EXPECT_TRUE(Allowed(i, kP1, kWeb1, 9090));
  EXPECT_FALSE(Allowed(i, kP1, kWeb2, 9090));
  EXPECT_TRUE(Allowed(i, kP1, kWeb2, 8080));
  EXPECT_TRUE(Allowed(i, kP1, kQ, 8080));  // q has no port named web
  EXPECT_TRUE(Allowed(i, kQ, kWeb1, 8080));  // b is no subject of the egress rule, nor a peer

  // Egress: one rule, two TierRules (one per destination port map), same action and origin.
  const ir::DirectionPolicy& out = TableOf(*ir, "a/p1").egress();
  ASSERT_EQ(out.admin_size(), 2);
  for (const ir::TierRule& rule : out.admin()) {
    EXPECT_EQ(rule.action(), ir::TIER_DENY);
    EXPECT_EQ(rule.protocol(), ir::TCP);
    EXPECT_EQ(rule.origin(), "ClusterNetworkPolicy no-web-out priority 1 egress[0]");
    EXPECT_EQ(ir->peer_sets(static_cast<int>(rule.peer_set())).identities_size(), 1);
  }
  std::set<uint32_t> ports = {out.admin(0).first_port(), out.admin(1).first_port()};
  EXPECT_EQ(ports, (std::set<uint32_t>{8080, 9090}));
  // Ingress: on the target's own port; q (no port named web) gets no TierRule at all.
  const ir::DirectionPolicy& in = TableOf(*ir, "b/web2").ingress();
  ASSERT_EQ(in.admin_size(), 1);
  EXPECT_EQ(in.admin(0).first_port(), 9090u);
  EXPECT_FALSE(backends::Restricted(TableOf(*ir, "b/q").ingress()));
  EXPECT_FALSE(Allowed(i, kP2, kWeb2, 9090));
}

// The reason for the ordered form: "deny 10.0.0.0/8 egress for everyone" is one TierRule
// over one identity per table, where the folded form lists every other identity per
// protocol in every table. 400 namespaces, each with a NetworkPolicy admitting ingress from
// its own namespace (so each namespace is an identity and has a table of its own); pods live
// in 172.16.0.0/16, outside the denied network.
TEST(LowerToIr, OrderedAdminDenyStaysSmall) {
  std::string objects;
  constexpr int kNamespaces = 400;
  for (int n = 0; n < kNamespaces; ++n) {
    absl::StrAppend(&objects, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns", n,
                    "}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n",
                    "metadata: {name: own, namespace: ns", n, "}\n",
                    "spec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}\n");
    for (int p = 0; p < 2; ++p) {
      absl::StrAppend(&objects, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p", p,
                      ", namespace: ns", n, "}\nstatus: {podIP: 172.16.", n / 128, ".",
                      (n % 128) * 2 + p, "}\n");
    }
  }
  absl::StrAppend(&objects, Cnp("no-ten", "Admin", 1, "{namespaces: {}}",
                                "  egress:\n  - {action: Deny, to: [{networks: [10.0.0.0/8]}]}\n"));
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddText(objects, "in.yaml").ok());
  absl::StatusOr<Cluster> cluster = loader.Build();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster);
  ASSERT_TRUE(engine.ok()) << engine.status();
  struct Size {
    size_t peer_set_identities = 0;  // over the IR's (interned) peer sets
    size_t egress_references = 0;    // identities named by egress rules, table by table
    size_t egress_rules = 0;         // port rules and tier rules
  };
  auto size_of = [](const ir::CompiledPolicy& ir) {
    Size size;
    for (const ir::PeerSet& set : ir.peer_sets()) size.peer_set_identities += set.identities_size();
    for (const ir::Table& t : ir.tables()) {
      std::vector<uint32_t> sets;
      for (const ir::PortRule& r : t.egress().rules()) sets.push_back(r.peer_set());
      for (const ir::TierRule& r : t.egress().admin()) sets.push_back(r.peer_set());
      for (const ir::TierRule& r : t.egress().baseline()) sets.push_back(r.peer_set());
      size.egress_rules += sets.size();
      for (uint32_t set : sets) {
        size.egress_references += ir.peer_sets(static_cast<int>(set)).identities_size();
      }
    }
    return size;
  };
  absl::StatusOr<ir::CompiledPolicy> ordered = LowerToIr(**engine);
  ASSERT_TRUE(ordered.ok()) << ordered.status();
  LowerOptions flatten;
  flatten.flatten_tiers = true;
  absl::StatusOr<ir::CompiledPolicy> flattened = LowerToIr(**engine, flatten);
  ASSERT_TRUE(flattened.ok()) << flattened.status();
  Size o = size_of(*ordered), f = size_of(*flattened);
  std::cout << ordered->identities_size() << " identities, " << ordered->tables_size()
            << " tables; ordered: " << o.peer_set_identities << " peer-set identities, "
            << o.egress_rules << " egress rules naming " << o.egress_references
            << " identities; flattened: " << f.peer_set_identities << " peer-set identities, "
            << f.egress_rules << " egress rules naming " << f.egress_references
            << " identities\n";
  ASSERT_GT(ordered->identities_size(), kNamespaces);
  ASSERT_EQ(ordered->tables_size(), kNamespaces);
  // Ordered: each namespace's own set, and {10.0.0.0/8}; one tier rule per table.
  EXPECT_EQ(o.peer_set_identities, kNamespaces + 1u);
  EXPECT_EQ(o.egress_rules, 1u * kNamespaces);
  EXPECT_EQ(o.egress_references, 1u * kNamespaces);
  // Flattened: also "everyone but 10.0.0.0/8", named by TCP, UDP and SCTP rules per table.
  EXPECT_GE(f.peer_set_identities, 2u * kNamespaces);
  EXPECT_EQ(f.egress_rules, 3u * kNamespaces);
  EXPECT_GE(f.egress_references, 3u * kNamespaces * kNamespaces);
}

// domainNames: which addresses a name has is not in the objects, and the datapath never
// silently allows. In an Accept rule the peer matches nothing, so the kernel denies what only
// that rule would accept; in a Deny or Pass rule matching nothing would let traffic through,
// so the lowering refuses the program (fail closed), naming the rule.
TEST(LowerToIr, DomainNamesNeverAllowInTheDatapath) {
  absl::Status status;
  std::optional<ir::CompiledPolicy> ir;
  IrInterpreter* i = LowerYaml(
      Cnp("dns", "Admin", 1, kNamespaceA,
          "  egress:\n  - {action: Accept, to: [{domainNames: [\"*.example.com\"]}]}\n"
          "  - {action: Deny, to: [{networks: [0.0.0.0/0]}]}\n"),
      &status, ir);
  ASSERT_NE(i, nullptr) << status;
  EXPECT_FALSE(Allowed(i, kP1, "93.184.216.34"));
  EXPECT_FALSE(Allowed(i, kP1, kQ));
  EXPECT_TRUE(Allowed(i, kQ, "93.184.216.34"));  // b is no subject

  for (const char* action : {"Deny", "Pass"}) {
    i = LowerYaml(Cnp("block", "Admin", 1, "{namespaces: {}}",
                      absl::StrCat("  egress:\n  - {action: Accept, to: [{domainNames: "
                                   "[ok.example.com]}]}\n  - {action: ",
                                   action, ", to: [{networks: [10.9.0.0/16]}, ",
                                   "{domainNames: [\"*.example.org\"]}]}\n")),
                  &status, ir);
    EXPECT_EQ(i, nullptr) << action;
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
    EXPECT_NE(status.message().find(absl::StrCat("ClusterNetworkPolicy block: spec.egress[1].to[1]."
                                                 "domainNames (action ", action, ")")),
              std::string::npos)
        << status;
  }
}

}  // namespace
}  // namespace np
