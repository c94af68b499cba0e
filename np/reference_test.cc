// The semantics checklist (README, "Semantics"), one test (or more) per line, against the
// reference evaluator. Expected verdicts come from the NetworkPolicy API documentation;
// each test names the sentence it checks.
#include "np/reference.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace np {
namespace {

k8s::Namespace Ns(const std::string& name, std::vector<std::pair<std::string, std::string>> labels = {}) {
  k8s::Namespace ns;
  ns.mutable_metadata()->set_name(name);
  for (auto& [k, v] : labels) (*ns.mutable_metadata()->mutable_labels())[k] = v;
  return ns;
}

// "ns/name", labels "k=v,k2=v2", IPs "10.0.0.1,fd00::1", named ports "http:TCP:8080,dns:UDP:53".
k8s::Pod Pod(const std::string& key, const std::string& labels, const std::string& ips = "",
             const std::string& named_ports = "") {
  k8s::Pod pod;
  std::vector<std::string> parts = absl::StrSplit(key, '/');
  pod.mutable_metadata()->set_namespace_(parts[0]);
  pod.mutable_metadata()->set_name(parts[1]);
  for (absl::string_view kv : absl::StrSplit(labels, ',', absl::SkipEmpty())) {
    std::vector<std::string> p = absl::StrSplit(kv, '=');
    (*pod.mutable_metadata()->mutable_labels())[p[0]] = p[1];
  }
  for (absl::string_view ip : absl::StrSplit(ips, ',', absl::SkipEmpty())) {
    pod.mutable_status()->add_podips()->set_ip(std::string(ip));
  }
  k8s::Container* c = pod.mutable_spec()->add_containers();
  c->set_name("main");
  for (absl::string_view np : absl::StrSplit(named_ports, ',', absl::SkipEmpty())) {
    std::vector<std::string> p = absl::StrSplit(np, ':');
    k8s::ContainerPort* port = c->add_ports();
    port->set_name(p[0]);
    port->set_protocol(p[1]);
    port->set_containerport(std::stoi(p[2]));
  }
  return pod;
}

// A policy from protobuf text of its spec.
k8s::NetworkPolicy Policy(const std::string& key, const std::string& spec_text) {
  k8s::NetworkPolicy policy;
  std::vector<std::string> parts = absl::StrSplit(key, '/');
  policy.mutable_metadata()->set_namespace_(parts[0]);
  policy.mutable_metadata()->set_name(parts[1]);
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(spec_text, policy.mutable_spec()))
      << spec_text;
  return policy;
}

class ReferenceTest : public ::testing::Test {
 protected:
  void Build(std::vector<k8s::Namespace> namespaces, std::vector<k8s::Pod> pods,
             std::vector<k8s::NetworkPolicy> policies) {
    ClusterObjects objects;
    for (auto& n : namespaces) objects.namespaces.push_back({n, {}});
    for (auto& p : pods) objects.pods.push_back({p, {}});
    for (auto& p : policies) objects.policies.push_back({p, {}});
    absl::StatusOr<Cluster> c = Cluster::Create(std::move(objects));
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::make_unique<Cluster>(*std::move(c));
  }
  Endpoint P(const std::string& key) {
    std::optional<int> i = cluster_->FindPod(key);
    EXPECT_TRUE(i.has_value()) << key;
    return Endpoint::Pod(i.value_or(0));
  }
  static Endpoint Ext(const std::string& ip) { return Endpoint::External(*IpAddress::Parse(ip)); }
  Verdict V(Endpoint from, Endpoint to, int port = 80, Protocol protocol = Protocol::kTCP,
            EvaluationOptions options = {}) {
    return reference::Evaluate(*cluster_, Flow{from, to, protocol, static_cast<uint16_t>(port)},
                               options);
  }
  bool Allowed(const std::string& from, const std::string& to, int port = 80,
               Protocol protocol = Protocol::kTCP, EvaluationOptions options = {}) {
    auto end = [&](const std::string& s) {
      return s.find('/') != std::string::npos ? P(s) : Ext(s);
    };
    return V(end(from), end(to), port, protocol, options).allowed;
  }
  std::unique_ptr<Cluster> cluster_;
};

// Two namespaces x and y, pods a and b in each, dual-stack.
std::vector<k8s::Namespace> TwoNamespaces() {
  return {Ns("x", {{"team", "red"}}), Ns("y", {{"team", "blue"}})};
}
std::vector<k8s::Pod> FourPods() {
  return {Pod("x/a", "app=a", "10.0.0.1,fd00::1", "http:TCP:8080,dns:UDP:53"),
          Pod("x/b", "app=b", "10.0.0.2,fd00::2"),
          Pod("y/a", "app=a", "10.0.1.1,fd00::101", "http:TCP:9090"),
          Pod("y/b", "app=b", "10.0.1.2,fd00::102")};
}

// "By default, pods are non-isolated; they accept traffic from any source" (and egress).
TEST_F(ReferenceTest, UnselectedPodIsNotIsolated) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/deny-b", R"pb(podSelector { matchLabels { key: "app" value: "b" } })pb")});
  Verdict v = V(P("x/a"), P("y/a"));
  EXPECT_TRUE(v.allowed);
  EXPECT_FALSE(v.ingress.isolated);
  EXPECT_FALSE(v.egress.isolated);
  EXPECT_TRUE(Allowed("x/a", "x/a"));
  EXPECT_TRUE(Allowed("203.0.113.9", "x/a", 22, Protocol::kUDP));
  EXPECT_TRUE(Allowed("x/a", "203.0.113.9", 443));
}

// "A pod is isolated for ingress if there is any NetworkPolicy that both selects the pod
// and has Ingress in its policyTypes" — a policy without rules denies everything.
TEST_F(ReferenceTest, SelectedPodWithNoRulesIsDeniedThatDirectionOnly) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/deny-a", R"pb(podSelector { matchLabels { key: "app" value: "a" } }
                                 policyTypes: "Ingress")pb")});
  Verdict v = V(P("x/b"), P("x/a"));
  EXPECT_FALSE(v.allowed);
  EXPECT_TRUE(v.ingress.isolated);
  EXPECT_EQ(v.ingress.isolating_policies, std::vector<std::string>{"x/deny-a"});
  EXPECT_TRUE(v.ingress.allowing_rules.empty());
  // Egress from the isolated pod is untouched.
  EXPECT_TRUE(Allowed("x/a", "x/b"));
  EXPECT_FALSE(Allowed("203.0.113.9", "x/a"));
  // The same labels in another namespace are not selected.
  EXPECT_TRUE(Allowed("x/b", "y/a"));
}

// "The effects of those ingress lists combine additively": the union of all rules of all
// selecting policies, whatever their order.
TEST_F(ReferenceTest, RulesOfAllSelectingPoliciesUnite) {
  std::vector<k8s::NetworkPolicy> policies = {
      Policy("x/allow-from-b", R"pb(podSelector { matchLabels { key: "app" value: "a" } }
             ingress { from { podSelector { matchLabels { key: "app" value: "b" } } } })pb"),
      Policy("x/allow-from-y", R"pb(podSelector {}
             ingress { from { namespaceSelector { matchLabels { key: "team" value: "blue" } } } })pb"),
      Policy("x/deny-all", R"pb(podSelector {} policyTypes: "Ingress")pb"),
  };
  for (int round = 0; round < 6; ++round) {
    std::mt19937 rng(round);
    std::shuffle(policies.begin(), policies.end(), rng);
    Build(TwoNamespaces(), FourPods(), policies);
    EXPECT_TRUE(Allowed("x/b", "x/a"));   // first policy
    EXPECT_TRUE(Allowed("y/a", "x/a"));   // second policy
    EXPECT_TRUE(Allowed("y/b", "x/b"));   // second policy selects x/b too
    EXPECT_FALSE(Allowed("x/a", "x/b"));  // nothing admits x/a -> x/b
    Verdict v = V(P("y/b"), P("x/a"));
    EXPECT_EQ(v.ingress.isolating_policies,
              (std::vector<std::string>{"x/allow-from-b", "x/allow-from-y", "x/deny-all"}));
    ASSERT_EQ(v.ingress.allowing_rules.size(), 1u);
    EXPECT_EQ(v.ingress.allowing_rules[0].ToString(), "x/allow-from-y spec.ingress[0]");
    Verdict both = V(P("x/b"), P("x/a"));
    EXPECT_EQ(both.ingress.allowing_rules.size(), 1u);
  }
}

// "If this field is not specified, it will default based on the existence of ingress or
// egress rules; policies that contain an egress section are assumed to affect egress, and all
// policies (whether or not they contain an ingress section) are assumed to affect ingress."
TEST_F(ReferenceTest, PolicyTypesDefaulting) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/egress-rules-only", R"pb(podSelector { matchLabels { key: "app" value: "a" } }
                egress { to { podSelector { matchLabels { key: "app" value: "b" } } } })pb")});
  // Absent policyTypes + an egress section: both directions are isolated.
  EXPECT_TRUE(Allowed("x/a", "x/b"));
  EXPECT_FALSE(Allowed("x/a", "y/a"));
  EXPECT_FALSE(Allowed("x/b", "x/a"));  // ingress isolated, no ingress rules
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/explicit-egress", R"pb(podSelector { matchLabels { key: "app" value: "a" } }
                policyTypes: "Egress")pb")});
  EXPECT_TRUE(Allowed("x/b", "x/a"));   // Egress only: ingress open
  EXPECT_FALSE(Allowed("x/a", "x/b"));  // egress denied
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/no-types", R"pb(podSelector { matchLabels { key: "app" value: "a" } })pb")});
  EXPECT_FALSE(Allowed("x/b", "x/a"));  // ingress isolated by default
  EXPECT_TRUE(Allowed("x/a", "x/b"));   // egress not, without egress rules
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/empty-egress-list",
                R"pb(podSelector { matchLabels { key: "app" value: "a" } }
                     ingress {})pb")});
  EXPECT_TRUE(Allowed("x/a", "203.0.113.1"));  // no egress section: egress open
  EXPECT_TRUE(Allowed("x/b", "x/a"));          // ingress {} admits everything
}

// "An empty podSelector matches all pods in this namespace."
TEST_F(ReferenceTest, EmptyPodSelectorSelectsTheWholeNamespaceOnly) {
  Build(TwoNamespaces(), FourPods(), {Policy("x/deny", R"pb(podSelector {})pb")});
  EXPECT_FALSE(Allowed("y/a", "x/a"));
  EXPECT_FALSE(Allowed("y/a", "x/b"));
  EXPECT_TRUE(Allowed("x/a", "y/b"));
}

// "If this field is empty or missing, this rule matches all sources (traffic not restricted
// by source)"; "If this field is empty or missing, this rule matches all ports".
TEST_F(ReferenceTest, RuleWithoutPeersOrPortsMatchesEverything) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/all-to-8080", R"pb(podSelector {}
                ingress { ports { port { type: 0 intVal: 8080 } } })pb"),
         Policy("y/all", R"pb(podSelector {} ingress { from { ipBlock { cidr: "192.0.2.0/24" } } })pb")});
  EXPECT_TRUE(Allowed("y/b", "x/a", 8080));
  EXPECT_TRUE(Allowed("198.51.100.7", "x/a", 8080));  // external sources too
  EXPECT_FALSE(Allowed("y/b", "x/a", 8081));
  EXPECT_FALSE(Allowed("y/b", "x/a", 8080, Protocol::kUDP));
  for (Protocol p : kAllProtocols) {
    EXPECT_TRUE(Allowed("192.0.2.9", "y/a", 1, p));
    EXPECT_TRUE(Allowed("192.0.2.9", "y/a", 65535, p));
    EXPECT_FALSE(Allowed("x/a", "y/a", 1, p));
  }
}

// podSelector alone: "selects the pods matching podSelector in the policy's own namespace".
TEST_F(ReferenceTest, PodSelectorPeerIsScopedToThePolicyNamespace) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/from-b", R"pb(podSelector {}
                ingress { from { podSelector { matchLabels { key: "app" value: "b" } } } })pb")});
  EXPECT_TRUE(Allowed("x/b", "x/a"));
  EXPECT_FALSE(Allowed("y/b", "x/a"));  // same labels, other namespace
}

// namespaceSelector alone: "selects all pods in the namespaces selected".
TEST_F(ReferenceTest, NamespaceSelectorPeerSelectsAllPodsOfThoseNamespaces) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/from-blue", R"pb(podSelector {}
                ingress { from { namespaceSelector { matchLabels { key: "team" value: "blue" } } } })pb")});
  EXPECT_TRUE(Allowed("y/a", "x/a"));
  EXPECT_TRUE(Allowed("y/b", "x/a"));
  EXPECT_FALSE(Allowed("x/b", "x/a"));  // x is red
}

// Both selectors in one peer element: AND. Two elements: OR.
TEST_F(ReferenceTest, SelectorsInOneElementAndTwoElementsOr) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/and", R"pb(podSelector { matchLabels { key: "app" value: "a" } }
                ingress { from {
                  namespaceSelector { matchLabels { key: "team" value: "blue" } }
                  podSelector { matchLabels { key: "app" value: "b" } } } })pb"),
         Policy("x/or", R"pb(podSelector { matchLabels { key: "app" value: "b" } }
                ingress {
                  from { namespaceSelector { matchLabels { key: "team" value: "blue" } } }
                  from { podSelector { matchLabels { key: "app" value: "a" } } } })pb")});
  EXPECT_TRUE(Allowed("y/b", "x/a"));   // blue AND app=b
  EXPECT_FALSE(Allowed("y/a", "x/a"));  // blue but app=a
  EXPECT_FALSE(Allowed("x/b", "x/a"));  // app=b but red
  EXPECT_TRUE(Allowed("y/a", "x/b"));   // blue
  EXPECT_TRUE(Allowed("x/a", "x/b"));   // app=a in x
  EXPECT_FALSE(Allowed("x/b", "x/b"));  // neither (self is evaluated like any flow)
}

// ipBlock: "a particular CIDR ... The except entry describes CIDRs that should not be
// included within this rule."
TEST_F(ReferenceTest, IpBlockCidrMinusExcept) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/cidr", R"pb(podSelector {}
                ingress { from { ipBlock { cidr: "172.17.0.0/16" except: "172.17.1.0/24"
                                           except: "172.17.2.128/25" } } }
                egress { to { ipBlock { cidr: "2001:db8::/32" except: "2001:db8:1::/48" } } })pb")});
  EXPECT_TRUE(Allowed("172.17.0.1", "x/a"));
  EXPECT_TRUE(Allowed("172.17.255.255", "x/a"));
  EXPECT_FALSE(Allowed("172.17.1.1", "x/a"));
  EXPECT_TRUE(Allowed("172.17.2.127", "x/a"));
  EXPECT_FALSE(Allowed("172.17.2.128", "x/a"));
  EXPECT_FALSE(Allowed("172.18.0.1", "x/a"));
  // IPv4-mapped text is the IPv4 address, as Go reads it (np/types.h); a real IPv6 address
  // is never in an IPv4 block.
  EXPECT_TRUE(Allowed("::ffff:172.17.0.1", "x/a"));
  EXPECT_FALSE(Allowed("::ffff:172.17.1.1", "x/a"));
  EXPECT_FALSE(Allowed("::172.17.0.1", "x/a"));
  EXPECT_TRUE(Allowed("x/a", "2001:db8::5"));
  EXPECT_FALSE(Allowed("x/a", "2001:db8:1::5"));
  EXPECT_FALSE(Allowed("x/a", "172.17.0.1"));
}

// The issue-8 findings: an IPv4-mapped except excludes the IPv4 range it denotes (before, it
// was read as IPv6 and excluded nothing), and a pod whose IP is written IPv4-mapped is
// isolated on its IPv4 address.
TEST_F(ReferenceTest, IPv4MappedExceptAndPodIpMeanIPv4) {
  std::vector<k8s::Pod> pods = FourPods();
  pods.push_back(Pod("x/mapped", "app=m", "::ffff:10.0.0.9"));
  Build(TwoNamespaces(), pods,
        {Policy("x/block", R"pb(podSelector { matchLabels { key: "app" value: "a" } }
                ingress { from { ipBlock { cidr: "192.168.0.0/16"
                                           except: "::ffff:192.168.66.0/120" } } })pb"),
         Policy("x/deny-m", R"pb(podSelector { matchLabels { key: "app" value: "m" } }
                policyTypes: "Ingress" policyTypes: "Egress")pb")});
  EXPECT_TRUE(Allowed("192.168.65.7", "x/a"));
  EXPECT_FALSE(Allowed("192.168.66.7", "x/a"));
  EXPECT_FALSE(Allowed("::ffff:192.168.66.7", "x/a"));
  EXPECT_FALSE(Allowed("203.0.113.1", "x/mapped"));
  EXPECT_FALSE(Allowed("x/b", "x/mapped"));
  Verdict packet = reference::EvaluatePacket(*cluster_, *IpAddress::Parse("10.0.0.2"),
                                             *IpAddress::Parse("10.0.0.9"), Protocol::kTCP, 80);
  EXPECT_FALSE(packet.allowed);
  EXPECT_EQ(packet.family, AddressFamily::kIPv4);
  EXPECT_EQ(packet.ingress.isolating_policies, std::vector<std::string>{"x/deny-m"});
}

// np's rule for an address two live pods hold (README, "Shared addresses"): both holders are
// quarantined — every flow from or to either is denied, isolated or not — and, as the other
// end of a flow, the shared address matches only rules that admit every peer.
TEST_F(ReferenceTest, SharedAddressQuarantinesEveryHolder) {
  std::vector<k8s::Pod> pods = FourPods();
  pods.push_back(Pod("y/c", "app=c", "10.0.0.2,fd00::202"));  // shares 10.0.0.2 with x/b
  Build(TwoNamespaces(), pods,
        {Policy("x/from-b", R"pb(podSelector { matchLabels { key: "app" value: "a" } }
                ingress { from { podSelector { matchLabels { key: "app" value: "b" } } } }
                ingress { from { ipBlock { cidr: "10.0.0.0/8" } } ports { port { intVal: 81 } } }
                ingress { ports { port { intVal: 82 } } })pb")});
  // x/b and y/c are quarantined in both directions, though nothing isolates them.
  EXPECT_FALSE(Allowed("x/b", "y/a"));
  EXPECT_FALSE(Allowed("y/a", "x/b"));
  EXPECT_FALSE(Allowed("y/c", "y/a"));
  EXPECT_FALSE(Allowed("203.0.113.9", "y/c"));
  EXPECT_FALSE(Allowed("y/c", "203.0.113.9"));
  Verdict v = V(P("y/a"), P("y/c"));
  EXPECT_FALSE(v.allowed);
  EXPECT_TRUE(v.egress.allowed());
  EXPECT_FALSE(v.ingress.allowed());
  EXPECT_FALSE(v.ingress.isolated);
  EXPECT_EQ(v.ingress.shared_addresses, std::vector<std::string>{"10.0.0.2"});
  // Self traffic stays allowed under the option (it never reaches a datapath).
  EvaluationOptions self;
  self.always_allow_self = true;
  EXPECT_TRUE(Allowed("x/b", "x/b", 80, Protocol::kTCP, self));
  // As a peer at x/a: the podSelector and the ipBlock do not match the shared address; the
  // rule without peers does (the flow is still denied by x/b's quarantine).
  Verdict at_a = V(P("x/b"), P("x/a"), 80);
  EXPECT_TRUE(at_a.ingress.allowing_rules.empty());
  EXPECT_TRUE(V(P("x/b"), P("x/a"), 81).ingress.allowing_rules.empty());
  EXPECT_EQ(V(P("x/b"), P("x/a"), 82).ingress.allowing_rules.size(), 1u);
  // By packet, the shared address is its first holder (x/b), quarantined all the same.
  Verdict packet = reference::EvaluatePacket(*cluster_, *IpAddress::Parse("10.0.0.2"),
                                             *IpAddress::Parse("10.0.1.1"), Protocol::kTCP, 80);
  EXPECT_FALSE(packet.allowed);
  EXPECT_EQ(packet.egress.shared_addresses, std::vector<std::string>{"10.0.0.2"});
  // y/c's own IPv6 address is not shared, but the pod is quarantined as a whole.
  EXPECT_FALSE(reference::EvaluatePacket(*cluster_, *IpAddress::Parse("fd00::202"),
                                         *IpAddress::Parse("fd00::101"), Protocol::kTCP, 80)
                   .allowed);
  // Pods that share nothing are unaffected.
  EXPECT_TRUE(Allowed("y/a", "y/b"));
}

// A shared address has no named ports for the sender's rules: np cannot tell which pod's
// container ports to read (as the kernel cannot).
TEST_F(ReferenceTest, SharedDestinationHasNoNamedPortsForTheSender) {
  std::vector<k8s::Pod> pods = FourPods();
  pods.push_back(Pod("y/c", "app=c", "10.0.0.1", "http:TCP:8080"));  // shares x/a's IPv4
  Build(TwoNamespaces(), pods,
        {Policy("y/out", R"pb(podSelector { matchLabels { key: "app" value: "a" } }
                egress { ports { port { type: 1 strVal: "http" } } })pb")});
  Verdict v = V(P("y/a"), P("x/a"), 8080);
  EXPECT_TRUE(v.egress.isolated);
  EXPECT_TRUE(v.egress.allowing_rules.empty());
  // Over IPv6, x/a's own address is not shared: the named port resolves.
  pods.back() = Pod("y/c", "app=c", "10.0.0.1");
  pods[2] = Pod("y/a", "app=a", "fd00::101", "http:TCP:9090");
  Build(TwoNamespaces(), pods,
        {Policy("y/out", R"pb(podSelector { matchLabels { key: "app" value: "a" } }
                egress { ports { port { type: 1 strVal: "http" } } })pb")});
  EXPECT_EQ(V(P("y/a"), P("x/a"), 8080).family, AddressFamily::kIPv6);
  EXPECT_EQ(V(P("y/a"), P("x/a"), 8080).egress.allowing_rules.size(), 1u);
}

// Label selectors: matchLabels AND matchExpressions; NotIn and DoesNotExist match when the
// key is absent.
TEST_F(ReferenceTest, SelectorOperators) {
  std::vector<k8s::Pod> pods = {Pod("x/t", "role=db"), Pod("x/p1", "tier=web,env=prod"),
                                Pod("x/p2", "tier=web,env=dev"), Pod("x/p3", "tier=api"),
                                Pod("x/p4", "")};
  auto allowed_sources = [&](const std::string& selector) {
    Build({Ns("x")}, pods,
          {Policy("x/p", absl::StrCat(R"pb(podSelector { matchLabels { key: "role" value: "db" } }
                  ingress { from { podSelector { )pb", selector, " } } }"))});
    std::string out;
    for (const char* s : {"x/p1", "x/p2", "x/p3", "x/p4"}) {
      if (Allowed(s, "x/t")) absl::StrAppend(&out, s, " ");
    }
    return out;
  };
  EXPECT_EQ(allowed_sources(R"pb(matchExpressions { key: "env" operator: "In" values: "prod" values: "qa" })pb"),
            "x/p1 ");
  EXPECT_EQ(allowed_sources(R"pb(matchExpressions { key: "env" operator: "NotIn" values: "prod" })pb"),
            "x/p2 x/p3 x/p4 ");
  EXPECT_EQ(allowed_sources(R"pb(matchExpressions { key: "env" operator: "Exists" })pb"), "x/p1 x/p2 ");
  EXPECT_EQ(allowed_sources(R"pb(matchExpressions { key: "env" operator: "DoesNotExist" })pb"),
            "x/p3 x/p4 ");
  // matchLabels AND matchExpressions, and several expressions AND.
  EXPECT_EQ(allowed_sources(R"pb(matchLabels { key: "tier" value: "web" }
                               matchExpressions { key: "env" operator: "NotIn" values: "dev" })pb"),
            "x/p1 ");
  EXPECT_EQ(allowed_sources(R"pb(matchExpressions { key: "tier" operator: "Exists" }
                               matchExpressions { key: "env" operator: "DoesNotExist" })pb"),
            "x/p3 ");
  EXPECT_EQ(allowed_sources(""), "x/p1 x/p2 x/p3 x/p4 ");  // empty selector: all pods
}

// "Namespaces always carry kubernetes.io/metadata.name", also implied ones.
TEST_F(ReferenceTest, NamespaceNameLabelIsAlwaysThere) {
  Build({Ns("x")}, {Pod("x/a", ""), Pod("implied/b", "")},
        {Policy("x/p", R"pb(podSelector {} ingress { from { namespaceSelector {
                matchLabels { key: "kubernetes.io/metadata.name" value: "implied" } } } })pb")});
  EXPECT_TRUE(Allowed("implied/b", "x/a"));
  EXPECT_FALSE(Allowed("x/a", "x/a"));
  ASSERT_TRUE(cluster_->FindNamespace("implied").has_value());
  EXPECT_TRUE(cluster_->ns(*cluster_->FindNamespace("implied")).implied);
}

// Ports: "protocol ... defaults to TCP"; numeric port; endPort inclusive; port absent = all
// ports of the protocol.
TEST_F(ReferenceTest, PortsProtocolsAndRanges) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/ports", R"pb(podSelector {}
                ingress { ports { port { type: 0 intVal: 80 } } }
                ingress { ports { protocol: "UDP" port { type: 0 intVal: 1000 } endPort: 1010 } }
                ingress { ports { protocol: "SCTP" } })pb")});
  EXPECT_TRUE(Allowed("y/a", "x/a", 80, Protocol::kTCP));
  EXPECT_FALSE(Allowed("y/a", "x/a", 80, Protocol::kUDP));
  EXPECT_FALSE(Allowed("y/a", "x/a", 81, Protocol::kTCP));
  EXPECT_FALSE(Allowed("y/a", "x/a", 999, Protocol::kUDP));
  EXPECT_TRUE(Allowed("y/a", "x/a", 1000, Protocol::kUDP));
  EXPECT_TRUE(Allowed("y/a", "x/a", 1010, Protocol::kUDP));
  EXPECT_FALSE(Allowed("y/a", "x/a", 1011, Protocol::kUDP));
  EXPECT_FALSE(Allowed("y/a", "x/a", 1005, Protocol::kTCP));
  EXPECT_TRUE(Allowed("y/a", "x/a", 1, Protocol::kSCTP));
  EXPECT_TRUE(Allowed("y/a", "x/a", 65535, Protocol::kSCTP));
}

// Named ports resolve against the destination pod's container ports, by name and protocol.
TEST_F(ReferenceTest, NamedPortsResolveAtTheDestination) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/http-in", R"pb(podSelector {}
                ingress { ports { port { type: 1 strVal: "http" } } }
                ingress { ports { protocol: "TCP" port { type: 1 strVal: "dns" } } })pb"),
         Policy("y/http-out", R"pb(podSelector { matchLabels { key: "app" value: "b" } }
                egress { ports { port { type: 1 strVal: "http" } } })pb")});
  EXPECT_TRUE(Allowed("y/b", "x/a", 8080));    // x/a: http = TCP 8080
  EXPECT_FALSE(Allowed("y/a", "x/a", 9090));   // 9090 is http only on y/a
  EXPECT_FALSE(Allowed("y/a", "x/b", 8080));   // x/b has no port named http
  EXPECT_FALSE(Allowed("y/a", "x/a", 53, Protocol::kUDP));  // dns is UDP; the rule says TCP
  EXPECT_FALSE(Allowed("y/a", "x/a", 53, Protocol::kTCP));
  // Egress: resolved against the destination, not the source.
  EXPECT_TRUE(Allowed("y/b", "y/a", 9090));
  EXPECT_FALSE(Allowed("y/b", "y/a", 8080));
  EXPECT_FALSE(Allowed("y/b", "203.0.113.1", 8080));  // no named ports outside the cluster
}

// Pod to pod needs egress at the source and ingress at the destination.
TEST_F(ReferenceTest, PodToPodNeedsBothSides) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/a-egress", R"pb(podSelector { matchLabels { key: "app" value: "a" } }
                policyTypes: "Egress" egress { to { namespaceSelector {} } })pb"),
         Policy("y/b-ingress", R"pb(podSelector { matchLabels { key: "app" value: "b" } }
                ingress { from { podSelector {} } })pb")});
  Verdict v = V(P("x/a"), P("y/b"));
  EXPECT_TRUE(v.egress.allowed());
  EXPECT_FALSE(v.ingress.allowed());  // y/b admits only pods of y
  EXPECT_FALSE(v.allowed);
  EXPECT_TRUE(Allowed("y/a", "y/b"));
  EXPECT_TRUE(Allowed("x/a", "y/a"));
  EXPECT_FALSE(Allowed("x/a", "203.0.113.1"));  // egress to external is egress only
  // External to pod is ingress only: no egress side.
  Verdict ext = V(Ext("203.0.113.1"), P("x/a"));
  EXPECT_FALSE(ext.egress.applies);
  EXPECT_TRUE(ext.allowed);
  Verdict out = V(P("y/b"), Ext("203.0.113.1"));
  EXPECT_FALSE(out.ingress.applies);
  EXPECT_TRUE(out.allowed);
}

// ipBlock matches pod IPs by default (upstream conformance relies on it); an option keeps
// ipBlocks for addresses outside the cluster.
TEST_F(ReferenceTest, IpBlockAndPodAddresses) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/from-cidr", R"pb(podSelector {}
                ingress { from { ipBlock { cidr: "10.0.1.0/24" except: "10.0.1.2/32" } } })pb")});
  EXPECT_TRUE(Allowed("y/a", "x/a"));   // 10.0.1.1
  EXPECT_FALSE(Allowed("y/b", "x/a"));  // 10.0.1.2 is excepted
  EXPECT_FALSE(Allowed("x/b", "x/a"));  // 10.0.0.2
  EvaluationOptions external_only;
  external_only.ip_block_scope = EvaluationOptions::IpBlockScope::kExternalOnly;
  EXPECT_FALSE(Allowed("y/a", "x/a", 80, Protocol::kTCP, external_only));
  EXPECT_TRUE(Allowed("10.0.1.77", "x/a", 80, Protocol::kTCP, external_only));
}

// A flow has one family: IPv4 when both pods have one, else IPv6; an ipBlock sees a pod
// through its address of that family.
TEST_F(ReferenceTest, AddressFamiliesAndDualStack) {
  Build({Ns("x")},
        {Pod("x/dual", "", "10.0.0.1,fd00::1"), Pod("x/v6", "", "fd00::2"),
         Pod("x/v4", "", "10.0.0.3"), Pod("x/none", ""), Pod("x/t", "role=t", "10.0.0.9,fd00::9")},
        {Policy("x/p", R"pb(podSelector { matchLabels { key: "role" value: "t" } }
                ingress { from { ipBlock { cidr: "fd00::/120" } } })pb")});
  Verdict dual = V(P("x/dual"), P("x/t"));
  EXPECT_EQ(dual.family, AddressFamily::kIPv4);
  EXPECT_FALSE(dual.allowed);  // IPv4 flow: the IPv6 block does not see x/dual
  Verdict v6 = V(P("x/v6"), P("x/t"));
  EXPECT_EQ(v6.family, AddressFamily::kIPv6);
  EXPECT_TRUE(v6.allowed);
  EXPECT_FALSE(Allowed("x/v4", "x/t"));
  Verdict none = V(P("x/none"), P("x/t"));
  EXPECT_EQ(none.family, AddressFamily::kNone);
  EXPECT_FALSE(none.allowed);
  // A packet carries its own family: the dual-stack pod over IPv6 is admitted.
  Verdict packet = reference::EvaluatePacket(*cluster_, *IpAddress::Parse("fd00::1"),
                                             *IpAddress::Parse("fd00::9"), Protocol::kTCP, 80);
  EXPECT_TRUE(packet.allowed);
  EXPECT_EQ(packet.family, AddressFamily::kIPv6);
  Verdict packet4 = reference::EvaluatePacket(*cluster_, *IpAddress::Parse("10.0.0.1"),
                                              *IpAddress::Parse("10.0.0.9"), Protocol::kTCP, 80);
  EXPECT_FALSE(packet4.allowed);
  EXPECT_TRUE(packet4.ingress.applies);  // 10.0.0.9 resolved to x/t
}

// Self traffic is evaluated like any other flow unless the option allows it.
TEST_F(ReferenceTest, SelfTraffic) {
  Build(TwoNamespaces(), FourPods(), {Policy("x/deny", R"pb(podSelector {})pb")});
  EXPECT_FALSE(Allowed("x/a", "x/a"));
  EvaluationOptions allow_self;
  allow_self.always_allow_self = true;
  Verdict v = V(P("x/a"), P("x/a"), 80, Protocol::kTCP, allow_self);
  EXPECT_TRUE(v.allowed);
  EXPECT_TRUE(v.allowed_as_self);
  EXPECT_FALSE(Allowed("x/b", "x/a", 80, Protocol::kTCP, allow_self));
}

TEST_F(ReferenceTest, ExplanationListsEveryAdmittingRule) {
  Build(TwoNamespaces(), FourPods(),
        {Policy("x/p1", R"pb(podSelector {} ingress { ports { port { type: 0 intVal: 80 } } }
                ingress { from { podSelector {} } } ingress { ports { port { type: 0 intVal: 81 } } })pb"),
         Policy("x/p2", R"pb(podSelector { matchLabels { key: "app" value: "a" } } ingress {})pb")});
  Verdict v = V(P("x/b"), P("x/a"));
  EXPECT_TRUE(v.allowed);
  std::vector<std::string> rules;
  for (const RuleRef& r : v.ingress.allowing_rules) rules.push_back(r.ToString());
  EXPECT_EQ(rules, (std::vector<std::string>{"x/p1 spec.ingress[0]", "x/p1 spec.ingress[1]",
                                             "x/p2 spec.ingress[0]"}));
  std::string text = FormatVerdict(*cluster_, Flow{P("x/b"), P("x/a"), Protocol::kTCP, 80}, v);
  EXPECT_NE(text.find("ALLOWED: x/b -> x/a TCP/80"), std::string::npos) << text;
  EXPECT_NE(text.find("admitted by x/p2 spec.ingress[0]"), std::string::npos) << text;
  Verdict denied = V(P("y/a"), P("x/b"), 82);
  EXPECT_FALSE(denied.allowed);
  std::string denied_text =
      FormatVerdict(*cluster_, Flow{P("y/a"), P("x/b"), Protocol::kTCP, 82}, denied);
  EXPECT_NE(denied_text.find("DENIED"), std::string::npos) << denied_text;
  EXPECT_NE(denied_text.find("no rule of those policies admits this flow"), std::string::npos)
      << denied_text;
}

}  // namespace
}  // namespace np
