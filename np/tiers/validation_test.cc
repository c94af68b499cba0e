// The policy tiers' loader and validation: each CRD rule (OpenAPI bounds, required fields,
// exactly-one-of, CEL) with an object the API server accepts and one it refuses, and each
// version's own shape (a field of the other version is unknown). The bounds and messages come
// from kubernetes-sigs/network-policy-api's CRDs and API types.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "np/cluster.h"
#include "np/loader.h"

namespace np {
namespace {

// Loads `yaml` and returns every diagnostic, one per line ("" when there is none).
std::string Load(const std::string& yaml, absl::StatusOr<Cluster>* out = nullptr) {
  ClusterLoader loader;
  (void)loader.AddText(yaml, "in.yaml");
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
  if (out != nullptr) *out = cluster;
  std::vector<std::string> lines;
  for (const Diagnostic& d : diagnostics) lines.push_back(d.ToString());
  return absl::StrJoin(lines, "\n");
}

std::string Errors(const std::string& yaml) {
  ClusterLoader loader;
  (void)loader.AddText(yaml, "in.yaml");
  std::vector<Diagnostic> diagnostics;
  (void)loader.Build(&diagnostics);
  std::vector<std::string> lines;
  for (const Diagnostic& d : diagnostics) {
    if (d.is_error()) lines.push_back(d.ToString());
  }
  return absl::StrJoin(lines, "\n");
}

// A valid ClusterNetworkPolicy; tests replace one part with `{{X}}` substitutions.
constexpr char kCnp[] = R"(apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: cnp
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces: {}
  ingress:
  - name: r0
    action: Deny
    from:
    - namespaces: {}
    protocols:
    - tcp:
        destinationPort:
          number: 80
  egress:
  - action: Accept
    to:
    - networks: ["10.0.0.0/8"]
)";

constexpr char kAnp[] = R"(apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata:
  name: anp
spec:
  priority: 10
  subject:
    pods:
      namespaceSelector: {}
      podSelector: {}
  ingress:
  - name: r0
    action: Pass
    from:
    - pods:
        namespaceSelector: {}
        podSelector: {}
    ports:
    - portNumber: {protocol: UDP, port: 53}
  egress:
  - action: Allow
    to:
    - nodes: {}
    ports:
    - portRange: {start: 1000, end: 2000}
)";

constexpr char kBanp[] = R"(apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata:
  name: default
spec:
  subject:
    namespaces: {}
  ingress:
  - action: Deny
    from:
    - namespaces: {}
)";

std::string Replace(const std::string& text, const std::string& from, const std::string& to) {
  EXPECT_NE(text.find(from), std::string::npos) << from;
  return absl::StrReplaceAll(text, {{from, to}});
}

TEST(TierLoader, ReadsEachKindIntoTheCluster) {
  absl::StatusOr<Cluster> cluster;
  const std::string node = R"(apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {zone: a}}
status:
  addresses:
  - {type: InternalIP, address: 172.18.0.2}
  - {type: InternalIP, address: "fc00::2"}
  - {type: Hostname, address: node-1}
)";
  const std::string anp = Replace(kAnp, "priority: 10", "priority: 5");
  EXPECT_EQ(Load(absl::StrJoin({std::string(kCnp), anp, std::string(kBanp), node},
                               "---\n"),
                 &cluster),
            "");
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_EQ(cluster->tier_policy_count(), 3);
  // Admin tier by ascending priority (anp 5, cnp 10), then the Baseline tier.
  EXPECT_EQ(cluster->tier_policy(0).Key(), "AdminNetworkPolicy anp");
  EXPECT_EQ(cluster->tier_policy(1).Key(), "ClusterNetworkPolicy cnp");
  EXPECT_EQ(cluster->tier_policy(2).Key(), "BaselineAdminNetworkPolicy default");
  EXPECT_EQ(cluster->tier_policy(2).tier, tiers::Tier::kBaseline);
  const tiers::Rule& pass = cluster->tier_policy(0).ingress[0];
  EXPECT_EQ(pass.action, tiers::Action::kPass);
  ASSERT_EQ(pass.ports.size(), 1u);
  EXPECT_EQ(pass.ports[0].protocol, Protocol::kUDP);
  EXPECT_EQ(pass.ports[0].range, (PortRange{53, 53}));
  EXPECT_EQ(cluster->tier_policy(0).egress[0].ports[0].range, (PortRange{1000, 2000}));
  EXPECT_EQ(cluster->tier_policy(0).egress[0].ports[0].protocol, Protocol::kTCP);  // default
  EXPECT_EQ(cluster->tier_policy(1).egress[0].action, tiers::Action::kAllow);  // Accept
  ASSERT_EQ(cluster->node_count(), 1);
  EXPECT_EQ(cluster->node(0).addresses.size(), 2u);  // the Hostname entry is no address
  // They travel with the cluster (ToObjects, as Apply rebuilds from it).
  ClusterObjects objects = cluster->ToObjects();
  EXPECT_EQ(objects.cluster_network_policies.size(), 1u);
  EXPECT_EQ(objects.admin_network_policies.size(), 1u);
  EXPECT_EQ(objects.baseline_admin_network_policies.size(), 1u);
  EXPECT_EQ(objects.nodes.size(), 1u);
}

TEST(TierLoader, ListsOfEachKind) {
  absl::StatusOr<Cluster> cluster;
  EXPECT_EQ(Load(R"(apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicyList
items:
- metadata: {name: a}
  spec: {tier: Baseline, priority: 1, subject: {namespaces: {}}}
- metadata: {name: b}
  spec: {tier: Baseline, priority: 2, subject: {namespaces: {}}}
)",
                 &cluster),
            "");
  ASSERT_TRUE(cluster.ok());
  EXPECT_EQ(cluster->tier_policy_count(), 2);
}

TEST(TierLoader, EachVersionAcceptsOnlyItsOwnFields) {
  // v1alpha2 has `protocols`, not v1alpha1's `ports`; and the other way round.
  EXPECT_EQ(Errors(Replace(kCnp, "    protocols:", "    ports:")),
            "in.yaml:15: ClusterNetworkPolicy cnp: spec.ingress[0].ports: unknown field "
            "\"spec.ingress[0].ports\"");
  EXPECT_EQ(Errors(Replace(kAnp, "    ports:\n    - portNumber", "    protocols:\n    - portNumber")),
            "in.yaml:18: AdminNetworkPolicy anp: spec.ingress[0].protocols: unknown field "
            "\"spec.ingress[0].protocols\"");
  // A BaselineAdminNetworkPolicy has no priority and no domainNames peers.
  EXPECT_EQ(Errors(Replace(kBanp, "spec:\n", "spec:\n  priority: 3\n")),
            "in.yaml:6: BaselineAdminNetworkPolicy default: spec.priority: unknown field "
            "\"spec.priority\"");
  EXPECT_EQ(Errors(Replace(kBanp, "  ingress:\n  - action: Deny\n    from:",
                           "  egress:\n  - action: Deny\n    to:\n    - domainNames: [a.io]\n")),
            "in.yaml:11: BaselineAdminNetworkPolicy default: spec.egress[0].to[0].domainNames: "
            "unknown field \"spec.egress[0].to[0].domainNames\"");
  // Ingress peers have no nodes or networks.
  EXPECT_EQ(Errors(Replace(kCnp, "    from:\n    - namespaces: {}", "    from:\n    - nodes: {}")),
            "in.yaml:14: ClusterNetworkPolicy cnp: spec.ingress[0].from[0].nodes: unknown field "
            "\"spec.ingress[0].from[0].nodes\"");
  // The wrong apiVersion for a kind.
  EXPECT_NE(Errors(Replace(kCnp, "v1alpha2", "v1alpha1")).find("is not supported for "
                                                              "ClusterNetworkPolicy"),
            std::string::npos);
}

// Tier objects are engine changes (np/engine.h): a watch event or an applied file carries
// them; the engine validates them when it applies the change, as the loader does.
TEST(TierLoader, ChangesCarryTierObjects) {
  absl::StatusOr<Change> change = ParseChange(kCnp, "event.yaml");
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_TRUE(change->is_tier_object());
  const auto* cnp = std::get_if<policy_networking::ClusterNetworkPolicy>(&change->object);
  ASSERT_NE(cnp, nullptr);
  EXPECT_EQ(cnp->metadata().name(), "cnp");
  EXPECT_EQ(cnp->spec().priority(), 10);
}

TEST(TierLoader, PresentButEmptyListsAreRefused) {
  EXPECT_EQ(Errors(Replace(kAnp, "    ports:\n    - portNumber: {protocol: UDP, port: 53}",
                           "    ports: []")),
            "in.yaml:18: AdminNetworkPolicy anp: spec.ingress[0].ports: Invalid value: 0: must "
            "have at least 1 item");
  EXPECT_EQ(Errors(Replace(kCnp, "networks: [\"10.0.0.0/8\"]", "networks: []")),
            "in.yaml:22: ClusterNetworkPolicy cnp: spec.egress[0].to[0].networks: Invalid "
            "value: 0: must have at least 1 item");
}

// One error expected (substring of its text), or none when `want` is empty.
void ExpectOnly(const std::string& yaml, const std::string& want) {
  const std::string errors = Errors(yaml);
  if (want.empty()) {
    EXPECT_EQ(errors, "") << yaml;
  } else {
    EXPECT_NE(errors.find(want), std::string::npos) << "want: " << want << "\ngot: " << errors;
    EXPECT_EQ(errors.find('\n'), std::string::npos) << "more than one error:\n" << errors;
  }
}

TEST(TierValidation, ValidObjectsPass) {
  ExpectOnly(kCnp, "");
  ExpectOnly(kAnp, "");
  ExpectOnly(kBanp, "");
}

TEST(TierValidation, Priority) {
  // "+kubebuilder:validation:Minimum=0, Maximum=1000"; required.
  ExpectOnly(Replace(kCnp, "priority: 10", "priority: 0"), "");
  ExpectOnly(Replace(kCnp, "priority: 10", "priority: 1000"), "");
  ExpectOnly(Replace(kCnp, "priority: 10", "priority: 1001"),
             "spec.priority: Invalid value: 1001: must be from 0 to 1000");
  ExpectOnly(Replace(kAnp, "priority: 10", "priority: -1"),
             "spec.priority: Invalid value: -1: must be from 0 to 1000");
  ExpectOnly(Replace(kAnp, "  priority: 10\n", ""), "spec.priority: Required value");
}

TEST(TierValidation, TierIsAdminOrBaseline) {
  ExpectOnly(Replace(kCnp, "tier: Admin", "tier: Baseline"), "");
  ExpectOnly(Replace(kCnp, "tier: Admin", "tier: NetworkPolicy"),
             "spec.tier: Unsupported value: \"NetworkPolicy\": supported values: \"Admin\", "
             "\"Baseline\"");
  ExpectOnly(Replace(kCnp, "  tier: Admin\n", ""), "spec.tier: Required value");
}

TEST(TierValidation, ActionsPerKind) {
  // v1alpha2 Accept|Deny|Pass; v1alpha1 ANP Allow|Deny|Pass; BANP Allow|Deny.
  ExpectOnly(Replace(kCnp, "action: Deny", "action: Pass"), "");
  ExpectOnly(Replace(kCnp, "action: Deny", "action: Allow"),
             "spec.ingress[0].action: Unsupported value: \"Allow\"");
  ExpectOnly(Replace(kAnp, "action: Pass", "action: Accept"),
             "spec.ingress[0].action: Unsupported value: \"Accept\"");
  ExpectOnly(Replace(kBanp, "action: Deny", "action: Allow"), "");
  ExpectOnly(Replace(kBanp, "action: Deny", "action: Pass"),
             "spec.ingress[0].action: Unsupported value: \"Pass\": supported values: \"Allow\", "
             "\"Deny\"");
  ExpectOnly(Replace(kCnp, "    action: Deny\n", ""), "spec.ingress[0].action: Required value");
}

TEST(TierValidation, BaselineAdminNetworkPolicyIsNamedDefault) {
  // CEL "self.metadata.name == 'default'".
  ExpectOnly(Replace(kBanp, "name: default", "name: other"),
             "BaselineAdminNetworkPolicy other: metadata.name: Invalid value: \"other\": Only "
             "one baseline admin network policy with metadata.name=\"default\" can be created");
}

TEST(TierValidation, SubjectExactlyOne) {
  ExpectOnly(Replace(kCnp, "  subject:\n    namespaces: {}\n", "  subject: {}\n"),
             "spec.subject: Required value: exactly one of namespaces, pods must be set");
  ExpectOnly(Replace(kCnp, "    namespaces: {}\n  ingress",
                     "    namespaces: {}\n    pods: {podSelector: {}}\n  ingress"),
             "spec.subject: Invalid value: namespaces, pods: exactly one of");
  ExpectOnly(Replace(kCnp, "  subject:\n    namespaces: {}\n", ""), "spec.subject: Required value");
}

TEST(TierValidation, NamespacedPodSelectorsPerVersion) {
  // v1alpha2: namespaceSelector optional, podSelector required.
  ExpectOnly(Replace(kCnp, "    namespaces: {}\n  ingress", "    pods: {podSelector: {}}\n  ingress"),
             "");
  ExpectOnly(Replace(kCnp, "    namespaces: {}\n  ingress",
                     "    pods: {namespaceSelector: {}}\n  ingress"),
             "spec.subject.pods.podSelector: Required value");
  // v1alpha1: both required.
  ExpectOnly(Replace(kAnp, "  subject:\n    pods:\n      namespaceSelector: {}\n",
                     "  subject:\n    pods:\n"),
             "spec.subject.pods.namespaceSelector: Required value");
}

TEST(TierValidation, RulesPerDirection) {
  // v1alpha2: MaxItems=25 rules; v1alpha1: 100.
  std::string rules;
  for (int i = 0; i < 26; ++i) rules += "  - {action: Deny, from: [{namespaces: {}}]}\n";
  ExpectOnly(absl::StrCat(R"(apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: many}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  ingress:
)", rules),
             "spec.ingress: Too many: 26: must have at most 25 items");
  std::string anp_rules;
  for (int i = 0; i < 100; ++i) anp_rules += "  - {action: Deny, from: [{namespaces: {}}]}\n";
  const std::string anp = absl::StrCat(R"(apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: many}
spec:
  priority: 1
  subject: {namespaces: {}}
  ingress:
)", anp_rules);
  ExpectOnly(anp, "");
  ExpectOnly(absl::StrCat(anp, "  - {action: Deny, from: [{namespaces: {}}]}\n"),
             "spec.ingress: Too many: 101: must have at most 100 items");
}

TEST(TierValidation, PeersOfARule) {
  // from/to: MinItems=1, MaxItems=25 (v1alpha2); exactly one field per peer.
  ExpectOnly(Replace(kCnp, "    from:\n    - namespaces: {}\n", ""),
             "spec.ingress[0].from: Required value");
  std::string peers;
  for (int i = 0; i < 26; ++i) peers += "    - namespaces: {}\n";
  ExpectOnly(Replace(kCnp, "    from:\n    - namespaces: {}\n", "    from:\n" + peers),
             "spec.ingress[0].from: Too many: 26: must have at most 25 items");
  ExpectOnly(Replace(kCnp, "    - networks: [\"10.0.0.0/8\"]",
                     "    - networks: [\"10.0.0.0/8\"]\n      nodes: {}"),
             "spec.egress[0].to[0]: Invalid value: nodes, networks: exactly one of");
  ExpectOnly(Replace(kCnp, "    - namespaces: {}\n    protocols", "    - {}\n    protocols"),
             "spec.ingress[0].from[0]: Required value: exactly one of");
}

TEST(TierValidation, Networks) {
  // MaxItems=25; CIDR maxLength 43; isCIDR (v1alpha2); v1alpha1 also refuses IPv4 embedded
  // in IPv6 ("self.contains(':') != self.contains('.')"); a list-type set.
  ExpectOnly(Replace(kCnp, "\"10.0.0.0/8\"", "\"fd00::/8\", \"0.0.0.0/0\""), "");
  ExpectOnly(Replace(kCnp, "\"10.0.0.0/8\"", "\"10.0.0.0/33\""),
             "spec.egress[0].to[0].networks[0]: Invalid value: \"10.0.0.0/33\": Invalid CIDR "
             "format provided");
  ExpectOnly(Replace(kCnp, "\"10.0.0.0/8\"", "\"10.0.0.0/8\", \"10.0.0.0/8\""),
             "spec.egress[0].to[0].networks[1]: Duplicate value: \"10.0.0.0/8\"");
  std::string many;
  for (int i = 0; i < 26; ++i) many += absl::StrCat(i ? ", " : "", "\"10.", i, ".0.0/16\"");
  ExpectOnly(Replace(kCnp, "\"10.0.0.0/8\"", many),
             "spec.egress[0].to[0].networks: Too many: 26: must have at most 25 items");
  ExpectOnly(Replace(kCnp, "\"10.0.0.0/8\"", "\"0000:0000:0000:0000:0000:0000:0000:0000/0128\""),
             "spec.egress[0].to[0].networks[0]: Too long: may not be more than 43 bytes");
  const std::string anp = Replace(kAnp, "    - nodes: {}", "    - networks: [\"::ffff:10.0.0.0/104\"]");
  ExpectOnly(anp, "CIDR must be either an IPv4 or IPv6 address. IPv4 address embedded in IPv6 "
                  "addresses are not supported");
}

TEST(TierValidation, DomainNames) {
  ExpectOnly(Replace(kCnp, "networks: [\"10.0.0.0/8\"]", "domainNames: [\"*.kubernetes.io\"]"), "");
  ExpectOnly(Replace(kCnp, "networks: [\"10.0.0.0/8\"]", "domainNames: [\"kube*.io\"]"),
             "spec.egress[0].to[0].domainNames[0]: Invalid value: \"kube*.io\"");
}

TEST(TierValidation, PortsV1Alpha1) {
  ExpectOnly(Replace(kAnp, "{protocol: UDP, port: 53}", "{protocol: UDP, port: 0}"),
             "spec.ingress[0].ports[0].portNumber.port: Invalid value: 0: must be from 1 to 65535");
  ExpectOnly(Replace(kAnp, "{protocol: UDP, port: 53}", "{protocol: ICMP, port: 53}"),
             "spec.ingress[0].ports[0].portNumber.protocol: Unsupported value: \"ICMP\"");
  ExpectOnly(Replace(kAnp, "{protocol: UDP, port: 53}", "{protocol: UDP}"),
             "spec.ingress[0].ports[0].portNumber.port: Required value");
  ExpectOnly(Replace(kAnp, "{start: 1000, end: 2000}", "{start: 2000, end: 2000}"),
             "spec.egress[0].ports[0].portRange: Invalid value: 2000-2000: start must be less than end");
  ExpectOnly(Replace(kAnp, "{start: 1000, end: 2000}", "{start: 1000, end: 65536}"),
             "spec.egress[0].ports[0].portRange.end: Invalid value: 65536: must be from 1 to 65535");
  ExpectOnly(Replace(kAnp, "    - portNumber: {protocol: UDP, port: 53}",
                     "    - portNumber: {protocol: UDP, port: 53}\n      namedPort: dns"),
             "spec.ingress[0].ports[0]: Invalid value: portNumber, namedPort: exactly one of");
  ExpectOnly(Replace(kAnp, "    - portNumber: {protocol: UDP, port: 53}", "    - namedPort: dns"), "");
}

TEST(TierValidation, ProtocolsV1Alpha2) {
  ExpectOnly(Replace(kCnp, "number: 80", "range: {start: 80, end: 90}"), "");
  ExpectOnly(Replace(kCnp, "number: 80", "range: {start: 90, end: 80}"),
             "spec.ingress[0].protocols[0].tcp.destinationPort.range: Invalid value: 90-80: Start "
             "port must be less than End port");
  ExpectOnly(Replace(kCnp, "number: 80", "number: 65536"),
             "spec.ingress[0].protocols[0].tcp.destinationPort.number: Invalid value: 65536");
  ExpectOnly(Replace(kCnp, "number: 80", "number: 80\n          range: {start: 1, end: 2}"),
             "spec.ingress[0].protocols[0].tcp.destinationPort: Invalid value: number, range: "
             "exactly one of");
  ExpectOnly(Replace(kCnp, "    - tcp:\n        destinationPort:\n          number: 80",
                     "    - tcp: {}"),
             "spec.ingress[0].protocols[0].tcp: Invalid value: 0: must have at least 1 property");
  ExpectOnly(Replace(kCnp, "    - tcp:\n", "    - destinationNamedPort: web\n      tcp:\n"),
             "spec.ingress[0].protocols[0]: Invalid value: tcp, destinationNamedPort: exactly one of");
}

TEST(TierValidation, NamedPortsNeedPodPeers) {
  // CEL: "networks/nodes/domainNames peer cannot be set with namedPorts since there are no
  // namedPorts for networks/nodes/domainNames".
  ExpectOnly(Replace(kCnp, "    to:\n    - networks: [\"10.0.0.0/8\"]\n",
                     "    to:\n    - networks: [\"10.0.0.0/8\"]\n    protocols:\n"
                     "    - destinationNamedPort: web\n"),
             "ClusterNetworkPolicy cnp: spec.egress[0]: Invalid value: \"object\": "
             "networks/nodes/domainNames peer cannot be set with namedPorts");
  ExpectOnly(Replace(kAnp, "    - portRange: {start: 1000, end: 2000}", "    - namedPort: web"),
             "AdminNetworkPolicy anp: spec.egress[0]: Invalid value: \"object\": "
             "networks/nodes/domainNames peer cannot be set with namedPorts");
  ExpectOnly(Replace(kAnp, "    - nodes: {}\n    ports:\n    - portRange: {start: 1000, end: 2000}",
                     "    - namespaces: {}\n    ports:\n    - namedPort: web"),
             "");
}

TEST(TierValidation, RuleNameAtMost100Characters) {
  ExpectOnly(Replace(kCnp, "name: r0", "name: " + std::string(100, 'a')), "");
  ExpectOnly(Replace(kCnp, "name: r0", "name: " + std::string(101, 'a')),
             "spec.ingress[0].name: Too long: may not be more than 100 bytes");
}

TEST(TierValidation, MetadataOfClusterScopedObjects) {
  ExpectOnly(Replace(kCnp, "name: cnp", "name: Not_A_Name"), "metadata.name: Invalid value");
  ExpectOnly(Replace(kCnp, "  name: cnp\n", ""), "metadata.name: Required value");
}

TEST(TierValidation, SamePriorityInOneTierIsAWarningNamingBoth) {
  const std::string two = absl::StrCat(kCnp, "---\n", Replace(kCnp, "name: cnp", "name: another"));
  absl::StatusOr<Cluster> cluster;
  const std::string diagnostics = Load(two, &cluster);
  ASSERT_TRUE(cluster.ok()) << diagnostics;
  EXPECT_NE(diagnostics.find("ClusterNetworkPolicy cnp: spec.priority: the Admin tier has another "
                             "policy with priority 10 (ClusterNetworkPolicy another)"),
            std::string::npos)
      << diagnostics;
  // Other tiers or priorities: no warning.
  EXPECT_EQ(Load(absl::StrCat(kCnp, "---\n", Replace(Replace(kCnp, "name: cnp", "name: another"),
                                                      "tier: Admin", "tier: Baseline"))),
            "");
}

TEST(TierValidation, NodeAddresses) {
  const std::string node = R"(apiVersion: v1
kind: Node
metadata: {name: node-1}
status:
  addresses:
  - {type: InternalIP, address: "10.0.0.300"}
)";
  ExpectOnly(node, "Node node-1: status.addresses[0].address: Invalid value: \"10.0.0.300\"");
  ExpectOnly(Replace(node, "type: InternalIP", "type: Hostname"), "");
}

TEST(TierValidation, DuplicateObjects) {
  ExpectOnly(absl::StrCat(kCnp, "---\n", kCnp), "ClusterNetworkPolicy cnp: duplicate object");
}

}  // namespace
}  // namespace np
