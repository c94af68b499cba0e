// The policy tiers in the reference evaluator, one test per sentence of the API's semantics
// (kubernetes-sigs/network-policy-api apis/v1alpha1, apis/v1alpha2 doc comments, quoted per
// test): tier order, priorities, rule order, actions, each peer kind, ports, and what the
// explanation says. Expected verdicts come from those sentences, never from np.
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/loader.h"
#include "np/lower.h"
#include "np/reference.h"
#include "np/verdict.h"

namespace np {
namespace {

// Namespaces a and b; pods a/p1 (10.0.1.1, named port web = TCP 8080), a/p3 (10.0.1.3) and
// b/p2 (10.0.2.1); nodes n1 (role=cp, 172.18.0.2) and n2 (172.18.0.3) with a host-network
// pod b/host on n2.
constexpr char kCluster[] = R"(
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: b}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: a, labels: {app: one}}
spec:
  containers:
  - name: c
    ports: [{name: web, containerPort: 8080, protocol: TCP}]
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: p3, namespace: a, labels: {app: three}}
status: {podIP: 10.0.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: b, labels: {app: two}}
status: {podIP: 10.0.2.1}
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: b}
spec: {hostNetwork: true, nodeName: n2}
status: {podIP: 172.18.0.3}
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {role: cp}}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 172.18.0.3}]}
)";

// A ClusterNetworkPolicy of `tier` with `priority`, subject `subject` and `rules` (YAML of
// "ingress:"/"egress:" lists, indented two spaces).
std::string Cnp(const std::string& name, const std::string& tier, int priority,
                const std::string& subject, const std::string& rules) {
  return absl::StrCat("---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n",
                      "metadata: {name: ", name, "}\nspec:\n  tier: ", tier, "\n  priority: ",
                      priority, "\n  subject: ", subject, "\n", rules);
}

constexpr char kSubjectA[] = "{namespaces: {matchLabels: {team: a}}}";
constexpr char kSubjectB[] = "{namespaces: {matchLabels: {team: b}}}";
constexpr char kFromB[] = "from: [{namespaces: {matchLabels: {team: b}}}]";

// A NetworkPolicy in namespace a selecting every pod, with `spec_tail` after podSelector.
std::string NetworkPolicy(const std::string& spec_tail) {
  return absl::StrCat("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n",
                      "metadata: {name: np, namespace: a}\nspec:\n  podSelector: {}\n", spec_tail);
}

class TiersTest : public ::testing::Test {
 protected:
  void Build(const std::string& policies) {
    ClusterLoader loader;
    absl::Status added = loader.AddText(absl::StrCat(kCluster, policies), "in.yaml");
    ASSERT_TRUE(added.ok()) << added;
    absl::StatusOr<Cluster> cluster = loader.Build();
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
  }
  Verdict Check(const std::string& from, const std::string& to, uint16_t port = 80,
                Protocol protocol = Protocol::kTCP) {
    absl::StatusOr<Endpoint> source = ParseEndpoint(*cluster_, from);
    absl::StatusOr<Endpoint> destination = ParseEndpoint(*cluster_, to);
    EXPECT_TRUE(source.ok() && destination.ok()) << from << " " << to;
    last_flow_ = Flow{*source, *destination, protocol, port};
    return reference::Evaluate(*cluster_, last_flow_);
  }
  std::string Explain(const Verdict& v) { return FormatVerdict(*cluster_, last_flow_, v); }
  bool Allowed(const std::string& from, const std::string& to, uint16_t port = 80,
               Protocol protocol = Protocol::kTCP) {
    return Check(from, to, port, protocol).allowed;
  }

  std::optional<Cluster> cluster_;
  Flow last_flow_;
};

// "If Admin tier has made a final decision (Accept or Deny) on a connection, then no further
// evaluation is done." Deny beats a NetworkPolicy that allows.
TEST_F(TiersTest, AdminDenyIsFinalOverNetworkPolicy) {
  Build(NetworkPolicy("  ingress: [{}]\n") +
        Cnp("deny-b", "Admin", 5, kSubjectA,
            absl::StrCat("  ingress:\n  - {name: deny-from-b, action: Deny, ", kFromB, "}\n")));
  const Verdict v = Check("b/p2", "a/p1");
  EXPECT_FALSE(v.allowed);
  EXPECT_TRUE(Allowed("a/p3", "a/p1"));  // not from b: NetworkPolicy allows
  EXPECT_NE(Explain(v).find("ingress at a/p1: DENIED by Admin tier, ClusterNetworkPolicy deny-b "
                            "(priority 5) spec.ingress[0] \"deny-from-b\": Deny"),
            std::string::npos)
      << Explain(v);
}

// "Accept: Accepts the selected traffic ... No further ingress ClusterNetworkPolicy or
// NetworkPolicy rules will be processed." Allow beats a NetworkPolicy that denies.
TEST_F(TiersTest, AdminAllowIsFinalOverNetworkPolicy) {
  Build(NetworkPolicy("  policyTypes: [Ingress]\n") +
        "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n"
        "metadata: {name: allow-b}\nspec:\n  priority: 3\n  subject: {namespaces: {}}\n"
        "  ingress:\n  - {action: Allow, from: [{namespaces: {matchLabels: {team: b}}}]}\n");
  EXPECT_TRUE(Allowed("b/p2", "a/p1"));
  EXPECT_FALSE(Allowed("a/p3", "a/p1"));  // NetworkPolicy's default deny still applies
}

// "Pass: Skips all further ClusterNetworkPolicy rules in the current tier for the selected
// traffic, and passes evaluation to the next tier." Then NetworkPolicy decides for the pods
// it selects, and the Baseline tier for the others.
TEST_F(TiersTest, PassGoesToNetworkPolicyThenBaseline) {
  const std::string pass_then_allow =
      Cnp("pass", "Admin", 1, kSubjectA, absl::StrCat("  ingress:\n  - {name: p, action: Pass, ", kFromB, "}\n")) +
      Cnp("allow", "Admin", 2, kSubjectA, absl::StrCat("  ingress:\n  - {action: Accept, ", kFromB, "}\n"));
  const std::string baseline_deny =
      Cnp("baseline", "Baseline", 1, kSubjectA, absl::StrCat("  ingress:\n  - {action: Deny, ", kFromB, "}\n"));
  // The later Admin policy's Accept is skipped; nothing else: allowed by default.
  Build(pass_then_allow);
  Verdict v = Check("b/p2", "a/p1");
  EXPECT_TRUE(v.allowed);
  ASSERT_TRUE(v.ingress.admin_rule.has_value());
  EXPECT_EQ(v.ingress.admin_rule->policy, "ClusterNetworkPolicy pass");
  EXPECT_NE(Explain(v).find("passed on to NetworkPolicy by Admin tier, ClusterNetworkPolicy pass"),
            std::string::npos)
      << Explain(v);
  // The Baseline tier decides for a pod no NetworkPolicy selects.
  Build(pass_then_allow + baseline_deny);
  EXPECT_FALSE(Allowed("b/p2", "a/p1"));
  // A NetworkPolicy selecting the pod decides, and the Baseline tier is not consulted.
  Build(pass_then_allow + baseline_deny + NetworkPolicy("  ingress: [{}]\n"));
  v = Check("b/p2", "a/p1");
  EXPECT_TRUE(v.allowed);
  EXPECT_FALSE(v.ingress.baseline_rule.has_value());
}

// "Baseline tier is a cluster-wide policy that can be overridden by the v1.NetworkPolicy."
TEST_F(TiersTest, NetworkPolicyOverridesBaseline) {
  const std::string banp =
      "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\n"
      "metadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n"
      "  ingress:\n  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}\n";
  Build(banp);
  Verdict v = Check("b/p2", "a/p1");
  EXPECT_FALSE(v.allowed);
  EXPECT_NE(Explain(v).find("DENIED (no NetworkPolicy isolates a/p1) by Baseline tier, "
                            "BaselineAdminNetworkPolicy default (priority 1000) spec.ingress[0] "
                            "\"deny-all\": Deny"),
            std::string::npos)
      << Explain(v);
  Build(banp + NetworkPolicy("  ingress: [{from: [{namespaceSelector: {}}]}]\n"));
  EXPECT_TRUE(Allowed("b/p2", "a/p1"));
  EXPECT_FALSE(Allowed("a/p1", "b/p2"));  // b/p2 is selected by no NetworkPolicy
}

// "Policies with lower priority values have higher precedence, and are checked before
// policies with higher priority values in the same tier."
TEST_F(TiersTest, LowerPriorityValueFirst) {
  const std::string accept = absl::StrCat("  ingress:\n  - {action: Accept, ", kFromB, "}\n");
  const std::string deny = absl::StrCat("  ingress:\n  - {action: Deny, ", kFromB, "}\n");
  Build(Cnp("first", "Admin", 1, kSubjectA, accept) + Cnp("second", "Admin", 2, kSubjectA, deny));
  EXPECT_TRUE(Allowed("b/p2", "a/p1"));
  Build(Cnp("first", "Admin", 3, kSubjectA, accept) + Cnp("second", "Admin", 2, kSubjectA, deny));
  EXPECT_FALSE(Allowed("b/p2", "a/p1"));
  // "All Admin tier rules have higher precedence than NetworkPolicy or Baseline tier rules",
  // whatever the numbers.
  Build(Cnp("first", "Admin", 1000, kSubjectA, accept) + Cnp("second", "Baseline", 0, kSubjectA, deny));
  EXPECT_TRUE(Allowed("b/p2", "a/p1"));
}

// Upstream leaves same-priority order undefined; np evaluates by name (np/tiers/model.h).
TEST_F(TiersTest, SamePriorityTiesByName) {
  const std::string accept = absl::StrCat("  ingress:\n  - {action: Accept, ", kFromB, "}\n");
  const std::string deny = absl::StrCat("  ingress:\n  - {action: Deny, ", kFromB, "}\n");
  Build(Cnp("a-accept", "Admin", 7, kSubjectA, accept) + Cnp("b-deny", "Admin", 7, kSubjectA, deny));
  EXPECT_TRUE(Allowed("b/p2", "a/p1"));
  Build(Cnp("b-accept", "Admin", 7, kSubjectA, accept) + Cnp("a-deny", "Admin", 7, kSubjectA, deny));
  EXPECT_FALSE(Allowed("b/p2", "a/p1"));
}

// "The relative precedence of ingress rules within a single CNP object ... will be
// determined by the order in which the rule is written."
TEST_F(TiersTest, RulesInWrittenOrder) {
  Build(Cnp("c", "Admin", 1, kSubjectA,
            absl::StrCat("  ingress:\n  - {action: Deny, ", kFromB, "}\n  - {action: Accept, ",
                         kFromB, "}\n")));
  Verdict v = Check("b/p2", "a/p1");
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.ingress.admin_rule->rule, 0);
  Build(Cnp("c", "Admin", 1, kSubjectA,
            absl::StrCat("  ingress:\n  - {action: Accept, ", kFromB, "}\n  - {action: Deny, ",
                         kFromB, "}\n")));
  EXPECT_TRUE(Allowed("b/p2", "a/p1"));
}

// Egress Accept: "No further egress ClusterNetworkPolicy or NetworkPolicy rules will be
// processed but any ingress rules at the destination do apply."
TEST_F(TiersTest, EgressAndIngressAreDecidedIndependently) {
  Build(Cnp("out", "Admin", 1, kSubjectB,
            "  egress:\n  - {action: Accept, to: [{namespaces: {}}]}\n") +
        Cnp("in", "Baseline", 1, kSubjectA, absl::StrCat("  ingress:\n  - {action: Deny, ", kFromB, "}\n")));
  const Verdict v = Check("b/p2", "a/p1");
  EXPECT_TRUE(v.egress.allowed());
  EXPECT_FALSE(v.ingress.allowed());
  EXPECT_FALSE(v.allowed);
}

// Subject "pods": "Pods is used to select pods via namespace AND pod selectors."
TEST_F(TiersTest, SubjectPodsNarrowsToThePodSelector) {
  Build(Cnp("c", "Admin", 1,
            "{pods: {namespaceSelector: {matchLabels: {team: a}}, podSelector: {matchLabels: {app: one}}}}",
            absl::StrCat("  ingress:\n  - {action: Deny, ", kFromB, "}\n")));
  EXPECT_FALSE(Allowed("b/p2", "a/p1"));
  EXPECT_TRUE(Allowed("b/p2", "a/p3"));
}

// Networks: "note that cluster-internal traffic will be checked against the rule as well.
// So if you Accept or Deny traffic to "0.0.0.0/0", that will allow or deny all IPv4
// pod-to-pod traffic as well."
TEST_F(TiersTest, NetworksMatchPodAddressesToo) {
  Build(Cnp("c", "Admin", 1, kSubjectB, "  egress:\n  - {action: Deny, to: [{networks: [10.0.1.0/24]}]}\n"));
  EXPECT_FALSE(Allowed("b/p2", "a/p1"));
  EXPECT_FALSE(Allowed("b/p2", "10.0.1.99"));
  EXPECT_TRUE(Allowed("b/p2", "10.0.3.1"));
}

// Nodes: "It selects the nodeIPs as the peer type by matching on the IPs present in the
// node.Status.Addresses field of the node." A host-network pod's address is its node's.
TEST_F(TiersTest, NodesPeerMatchesTheSelectedNodesAddresses) {
  Build(Cnp("c", "Admin", 1, kSubjectA,
            "  egress:\n  - {action: Deny, to: [{nodes: {matchLabels: {role: cp}}}]}\n"
            "  - {action: Accept, to: [{nodes: {}}]}\n"));
  EXPECT_FALSE(Allowed("a/p1", "172.18.0.2"));
  // n2 (no role label) is matched by the second rule only; the host-network pod b/host is n2.
  Verdict v = Check("a/p1", "172.18.0.3");
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.egress.admin_rule->rule, 1);
  EXPECT_FALSE(v.ingress.applies);  // a node address is not a pod
  // A node's name stands for its first address.
  EXPECT_FALSE(Allowed("a/p1", "n1"));
  EXPECT_TRUE(Allowed("a/p1", "n2"));
  // An address no node has is matched by neither.
  EXPECT_FALSE(Check("a/p1", "172.18.0.9").egress.admin_rule.has_value());
}

// DomainNames: which addresses a name has is not in the objects. np never matches such a
// peer offline and says so; a later rule decides.
TEST_F(TiersTest, DomainNamesAreNotEvaluableOffline) {
  Build(Cnp("c", "Admin", 1, kSubjectA,
            "  egress:\n  - {name: dns, action: Accept, to: [{domainNames: [\"*.example.com\"]}]}\n"
            "  - {action: Deny, to: [{networks: [0.0.0.0/0]}]}\n"));
  const Verdict v = Check("a/p1", "93.184.216.34");
  EXPECT_FALSE(v.allowed);
  ASSERT_EQ(v.egress.not_evaluable.size(), 1u);
  EXPECT_EQ(v.egress.not_evaluable[0], "ClusterNetworkPolicy c spec.egress[0].to[0]");
  EXPECT_NE(Explain(v).find("not evaluable offline"), std::string::npos) << Explain(v);
}

// Ports: a named port "selects a destination port on a pod based on the ContainerPort name";
// a range is inclusive; a rule without ports matches every port.
TEST_F(TiersTest, NamedPortsAndRanges) {
  Build(Cnp("c", "Admin", 1, kSubjectA,
            absl::StrCat("  ingress:\n  - {action: Deny, ", kFromB,
                         ", protocols: [{destinationNamedPort: web}]}\n"
                         "  - {action: Deny, ", kFromB,
                         ", protocols: [{udp: {destinationPort: {range: {start: 50, end: 60}}}}]}\n")));
  EXPECT_FALSE(Allowed("b/p2", "a/p1", 8080));
  EXPECT_TRUE(Allowed("b/p2", "a/p1", 8081));
  EXPECT_TRUE(Allowed("b/p2", "a/p3", 8080));  // a/p3 has no port named web
  EXPECT_FALSE(Allowed("b/p2", "a/p1", 50, Protocol::kUDP));
  EXPECT_FALSE(Allowed("b/p2", "a/p1", 60, Protocol::kUDP));
  EXPECT_TRUE(Allowed("b/p2", "a/p1", 61, Protocol::kUDP));
  EXPECT_TRUE(Allowed("b/p2", "a/p1", 55, Protocol::kTCP));
}

// The IR lowering takes the tiers (lower_test checks its verdicts): a subject with no rules
// is lowered, but "CNPs with no ingress rules do not affect ingress traffic" — nor egress.
TEST_F(TiersTest, TheLoweringTakesTiers) {
  Build(Cnp("c", "Admin", 1, kSubjectA, ""));
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster_);
  ASSERT_TRUE(engine.ok()) << engine.status();
  absl::StatusOr<ir::CompiledPolicy> lowered = LowerToIr(**engine);
  ASSERT_TRUE(lowered.ok()) << lowered.status();
  for (const ir::Endpoint& e : lowered->endpoints()) {
    if (!e.selected()) continue;
    EXPECT_FALSE(lowered->tables(e.table()).ingress().isolated()) << e.name();
    EXPECT_FALSE(lowered->tables(e.table()).egress().isolated()) << e.name();
  }
}

}  // namespace
}  // namespace np
