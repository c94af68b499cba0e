#include "np/cluster.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "np/verdict.h"

#include "gtest/gtest.h"

namespace np {
namespace {

k8s::Pod MakePod(const std::string& ns, const std::string& name, const std::string& ip = "",
                 const std::string& phase = "") {
  k8s::Pod pod;
  if (!ns.empty()) pod.mutable_metadata()->set_namespace_(ns);
  pod.mutable_metadata()->set_name(name);
  if (!ip.empty()) pod.mutable_status()->set_podip(ip);
  if (!phase.empty()) pod.mutable_status()->set_phase(phase);
  return pod;
}

k8s::NetworkPolicy MakePolicy(const std::string& ns, const std::string& name) {
  k8s::NetworkPolicy p;
  p.mutable_metadata()->set_namespace_(ns);
  p.mutable_metadata()->set_name(name);
  p.mutable_spec()->mutable_podselector();
  return p;
}

TEST(Cluster, SortsIndexesAndImpliesNamespaces) {
  ClusterObjects objects;
  k8s::Namespace ns;
  ns.mutable_metadata()->set_name("zeta");
  (*ns.mutable_metadata()->mutable_labels())["team"] = "red";
  objects.namespaces.push_back({ns, {}});
  objects.pods.push_back({MakePod("zeta", "b", "10.0.0.2"), {}});
  objects.pods.push_back({MakePod("alpha", "a", "10.0.0.1"), {}});
  objects.pods.push_back({MakePod("", "c"), {}});  // no namespace: "default"
  objects.policies.push_back({MakePolicy("beta", "p"), {}});
  absl::StatusOr<Cluster> c = Cluster::Create(std::move(objects));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->pod_count(), 3);
  EXPECT_EQ(c->pod(0).Key(), "alpha/a");
  EXPECT_EQ(c->pod(1).Key(), "default/c");
  EXPECT_EQ(c->pod(2).Key(), "zeta/b");
  ASSERT_EQ(c->namespace_count(), 4);  // alpha, beta, default (implied), zeta
  EXPECT_EQ(c->ns(0).name, "alpha");
  EXPECT_TRUE(c->ns(0).implied);
  EXPECT_EQ(c->ns(1).name, "beta");
  EXPECT_FALSE(c->ns(3).implied);
  EXPECT_EQ(c->ns(3).labels.at("team"), "red");
  EXPECT_EQ(c->ns(3).labels.at(std::string(kNamespaceNameLabel)), "zeta");
  EXPECT_EQ(c->ns(0).labels.at(std::string(kNamespaceNameLabel)), "alpha");
  EXPECT_EQ(c->FindPod("zeta/b"), 2);
  EXPECT_EQ(c->FindPod("zeta", "b"), 2);
  EXPECT_FALSE(c->FindPod("zeta/x").has_value());
  EXPECT_EQ(c->PodByIp(*IpAddress::Parse("10.0.0.1")), 0);
  EXPECT_FALSE(c->PodByIp(*IpAddress::Parse("10.0.0.3")).has_value());
  EXPECT_EQ(c->PolicyKey(0), "beta/p");
  EXPECT_EQ(c->FindPolicy("beta", "p"), 0);
}

TEST(Cluster, NamespaceNameLabelCannotBeOverridden) {
  ClusterObjects objects;
  k8s::Namespace ns;
  ns.mutable_metadata()->set_name("x");
  (*ns.mutable_metadata()->mutable_labels())[std::string(kNamespaceNameLabel)] = "other";
  objects.namespaces.push_back({ns, {}});
  absl::StatusOr<Cluster> c = Cluster::Create(std::move(objects));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->ns(0).labels.at(std::string(kNamespaceNameLabel)), "x");
}

TEST(Cluster, LeavesOutFinishedAndHostNetworkPodsWithWarnings) {
  ClusterObjects objects;
  objects.pods.push_back({MakePod("x", "done", "10.0.0.1", "Succeeded"), {}});
  objects.pods.push_back({MakePod("x", "failed", "10.0.0.1", "Failed"), {}});
  k8s::Pod host = MakePod("x", "host", "192.168.0.1", "Running");
  host.mutable_spec()->set_hostnetwork(true);
  objects.pods.push_back({host, {}});
  objects.pods.push_back({MakePod("x", "live", "10.0.0.1", "Running"), {}});
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> c = Cluster::Create(std::move(objects), &diagnostics);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->pod_count(), 1);
  EXPECT_EQ(c->PodByIp(*IpAddress::Parse("10.0.0.1")), 0);
  int warnings = 0;
  for (const Diagnostic& d : diagnostics) {
    EXPECT_FALSE(d.is_error()) << d.ToString();
    ++warnings;
  }
  EXPECT_EQ(warnings, 3);
  // Left-out pods survive a round trip through Apply.
  absl::StatusOr<Cluster> again = c->Apply({});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ToObjects().pods.size(), 4u);
  // ... and are named, with why, rather than reported missing.
  const std::vector<std::pair<std::string, std::string>> left_out = {
      {"x/done", "phase Succeeded"}, {"x/failed", "phase Failed"}, {"x/host", "hostNetwork"}};
  EXPECT_EQ(c->LeftOutPods(), left_out);
  EXPECT_EQ(again->LeftOutPods(), left_out);
  EXPECT_EQ(c->WhyLeftOut("x/host"),
            "pod x/host is hostNetwork: NetworkPolicy does not apply to it (its traffic is the "
            "node's)");
  EXPECT_EQ(c->WhyLeftOut("x/done"),
            "pod x/done is in phase Succeeded: a finished pod holds no address and takes no "
            "traffic");
  EXPECT_EQ(c->WhyLeftOut("x/live"), std::nullopt);  // not left out
  EXPECT_EQ(c->WhyLeftOut("x/none"), std::nullopt);  // not in the input
  absl::StatusOr<Endpoint> end = ParseEndpoint(*c, "x/failed");
  EXPECT_EQ(end.status().message(),
            "pod x/failed is in phase Failed: a finished pod holds no address and takes no "
            "traffic");
}

TEST(Cluster, DuplicateObjectsAreErrorsNamingBothPlaces) {
  ClusterObjects objects;
  ObjectSource first{{"a.yaml", 3}, {}};
  ObjectSource second{{"b.yaml", 7}, {}};
  objects.policies.push_back({MakePolicy("x", "p"), first});
  objects.policies.push_back({MakePolicy("x", "p"), second});
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> c = Cluster::Create(std::move(objects), &diagnostics);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(diagnostics.size(), 1u);
  EXPECT_EQ(diagnostics[0].ToString(),
            "b.yaml:7: NetworkPolicy x/p: duplicate object: already defined a.yaml:3");
}

// np's rule for an address two live pods hold (README, "Shared addresses"): both are
// quarantined, each gets a warning naming the other, and packet lookups name the first.
TEST(Cluster, SharedPodIpsQuarantineEveryHolder) {
  ClusterObjects objects;
  objects.pods.push_back({MakePod("x", "b", "10.0.0.1"), {}});
  objects.pods.push_back({MakePod("x", "a", "10.0.0.1"), {}});
  objects.pods.push_back({MakePod("x", "c", "10.0.0.3"), {}});
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> c = Cluster::Create(std::move(objects), &diagnostics);
  ASSERT_TRUE(c.ok());
  IpAddress shared = *IpAddress::Parse("10.0.0.1");
  EXPECT_EQ(c->PodByIp(shared), 0);
  EXPECT_EQ(c->PodsByIp(shared), (std::vector<int>{0, 1}));
  EXPECT_EQ(c->pod(0).name, "a");
  EXPECT_EQ(c->pod(0).shared_ips, std::vector<IpAddress>{shared});
  EXPECT_EQ(c->pod(1).shared_ips, std::vector<IpAddress>{shared});
  EXPECT_TRUE(c->pod(1).quarantined());
  EXPECT_FALSE(c->pod(2).quarantined());
  ASSERT_EQ(diagnostics.size(), 2u);
  EXPECT_FALSE(diagnostics[0].is_error());
  EXPECT_NE(diagnostics[0].message.find("also held by x/b"), std::string::npos)
      << diagnostics[0].message;
  EXPECT_NE(diagnostics[1].message.find("also held by x/a"), std::string::npos)
      << diagnostics[1].message;
}

// IPv4-mapped IPv6 text means the IPv4 address (Go's reading): the objects are rewritten at
// load so that every reader sees one value, and validation's warning says so.
TEST(Cluster, IPv4MappedAddressesAreReadAsIPv4AndRewritten) {
  ClusterObjects objects;
  objects.pods.push_back({MakePod("x", "a", "::ffff:10.0.0.9"), {}});
  k8s::NetworkPolicy policy = MakePolicy("x", "p");
  auto* block = policy.mutable_spec()->add_ingress()->add_from()->mutable_ipblock();
  block->set_cidr("192.168.0.0/16");
  block->add_except("::ffff:192.168.66.0/120");
  objects.policies.push_back({policy, {}});
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> c = Cluster::Create(std::move(objects), &diagnostics);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->pod(0).ipv4.has_value());
  EXPECT_FALSE(c->pod(0).ipv6.has_value());
  EXPECT_EQ(c->pod(0).ipv4->ToString(), "10.0.0.9");
  EXPECT_EQ(c->PodByIp(*IpAddress::Parse("10.0.0.9")), 0);
  EXPECT_EQ(c->pod_object(0).status().podip(), "10.0.0.9");
  EXPECT_EQ(c->policy(0).spec().ingress(0).from(0).ipblock().except(0), "192.168.66.0/24");
  int mapped_warnings = 0;
  for (const Diagnostic& d : diagnostics) {
    EXPECT_FALSE(d.is_error()) << d.ToString();
    if (d.message.find("np reads it as") != std::string::npos) ++mapped_warnings;
  }
  EXPECT_EQ(mapped_warnings, 2);
}

TEST(Cluster, ApplyUpsertsAndDeletesWithoutTouchingTheOriginal) {
  ClusterObjects objects;
  objects.pods.push_back({MakePod("x", "a", "10.0.0.1"), {}});
  absl::StatusOr<Cluster> c = Cluster::Create(std::move(objects));
  ASSERT_TRUE(c.ok());
  k8s::Pod relabeled = MakePod("x", "a", "10.0.0.1");
  (*relabeled.mutable_metadata()->mutable_labels())["app"] = "web";
  absl::StatusOr<Cluster> next =
      c->Apply({Change{Change::Op::kUpsert, relabeled},
                Change{Change::Op::kUpsert, MakePod("x", "b", "10.0.0.2")},
                Change{Change::Op::kUpsert, MakePolicy("x", "p")}});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->pod_count(), 2);
  EXPECT_EQ(next->pod(0).labels.at("app"), "web");
  EXPECT_EQ(next->policy_count(), 1);
  EXPECT_EQ(c->pod_count(), 1);
  EXPECT_TRUE(c->pod(0).labels.empty());
  absl::StatusOr<Cluster> deleted = next->Apply({Change{Change::Op::kDelete, MakePolicy("x", "p")}});
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(deleted->policy_count(), 0);
  EXPECT_FALSE(deleted->Apply({Change{Change::Op::kDelete, MakePolicy("x", "p")}}).ok());
}

TEST(Cluster, NamedPortsAndDualStackAddresses) {
  k8s::Pod pod = MakePod("x", "a");
  pod.mutable_status()->add_podips()->set_ip("fd00::1");
  pod.mutable_status()->add_podips()->set_ip("10.0.0.1");
  k8s::ContainerPort* port = pod.mutable_spec()->add_containers()->add_ports();
  port->set_name("dns");
  port->set_protocol("UDP");
  port->set_containerport(53);
  k8s::ContainerPort* unnamed = pod.mutable_spec()->mutable_containers(0)->add_ports();
  unnamed->set_containerport(80);
  ClusterObjects objects;
  objects.pods.push_back({pod, {}});
  absl::StatusOr<Cluster> c = Cluster::Create(std::move(objects));
  ASSERT_TRUE(c.ok());
  const PodInfo& info = c->pod(0);
  ASSERT_EQ(info.ips.size(), 2u);
  EXPECT_EQ(info.ipv4->ToString(), "10.0.0.1");
  EXPECT_EQ(info.ipv6->ToString(), "fd00::1");
  ASSERT_EQ(info.named_ports.size(), 1u);
  EXPECT_EQ(info.named_ports[0].name, "dns");
  EXPECT_EQ(info.named_ports[0].protocol, Protocol::kUDP);
  EXPECT_EQ(info.named_ports[0].port, 53);
}

TEST(ObjectSource, LineOfFallsBackToEnclosingField) {
  ObjectSource s;
  s.location = {"f.yaml", 10};
  s.field_lines["spec"] = 12;
  s.field_lines["spec.ingress[0]"] = 14;
  EXPECT_EQ(s.LineOf("spec.ingress[0].ports[1].endPort"), 14);
  EXPECT_EQ(s.LineOf("spec.egress[0]"), 12);
  EXPECT_EQ(s.LineOf("metadata.name"), 10);
}

}  // namespace
}  // namespace np
