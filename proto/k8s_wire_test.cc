// Wire compatibility with the API server's protobuf encoding: bytes written with the field
// numbers of Kubernetes' own generated.proto files (k8s.io/api/networking/v1,
// k8s.io/api/core/v1, k8s.io/apimachinery/pkg/apis/meta/v1, util/intstr) — typed in here as
// literals, independent of proto/k8s.proto — must decode into np's messages with every value
// in place. A renumbered field in proto/k8s.proto fails this test.
#include <string>

#include "gtest/gtest.h"
#include "proto/k8s.pb.h"

namespace {

// A minimal protobuf writer: just enough to spell messages by field number.
std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
  return out;
}
std::string Bytes(int field, const std::string& payload) {
  return Varint(static_cast<uint64_t>(field) << 3 | 2) + Varint(payload.size()) + payload;
}
std::string Int(int field, uint64_t value) {
  return Varint(static_cast<uint64_t>(field) << 3 | 0) + Varint(value);
}
std::string MapEntry(int field, const std::string& key, const std::string& value) {
  return Bytes(field, Bytes(1, key) + Bytes(2, value));
}

// Field numbers from upstream's generated.proto, written out here on purpose.
namespace meta {  // k8s.io.apimachinery.pkg.apis.meta.v1
constexpr int kObjectMetaName = 1, kObjectMetaNamespace = 3, kObjectMetaUid = 5,
              kObjectMetaResourceVersion = 6, kObjectMetaLabels = 11,
              kObjectMetaAnnotations = 12;
constexpr int kLabelSelectorMatchLabels = 1, kLabelSelectorMatchExpressions = 2;
constexpr int kRequirementKey = 1, kRequirementOperator = 2, kRequirementValues = 3;
}  // namespace meta
namespace intstr {  // k8s.io.apimachinery.pkg.util.intstr
constexpr int kType = 1, kIntVal = 2, kStrVal = 3;
}
namespace networking {  // k8s.io.api.networking.v1
constexpr int kPolicyMetadata = 1, kPolicySpec = 2;
constexpr int kSpecPodSelector = 1, kSpecIngress = 2, kSpecEgress = 3, kSpecPolicyTypes = 4;
constexpr int kIngressPorts = 1, kIngressFrom = 2, kEgressPorts = 1, kEgressTo = 2;
constexpr int kPeerPodSelector = 1, kPeerNamespaceSelector = 2, kPeerIpBlock = 3;
constexpr int kIpBlockCidr = 1, kIpBlockExcept = 2;
constexpr int kPortProtocol = 1, kPortPort = 2, kPortEndPort = 3;
}  // namespace networking
namespace core {  // k8s.io.api.core.v1
constexpr int kPodMetadata = 1, kPodSpec = 2, kPodStatus = 3;
constexpr int kSpecContainers = 2, kSpecNodeName = 10, kSpecHostNetwork = 11;
constexpr int kContainerName = 1, kContainerImage = 2, kContainerPorts = 6;
constexpr int kPortName = 1, kPortHostPort = 2, kPortContainerPort = 3, kPortProtocol = 4;
constexpr int kStatusPhase = 1, kStatusHostIp = 5, kStatusPodIp = 6, kStatusPodIps = 12;
constexpr int kPodIpIp = 1;
constexpr int kNamespaceMetadata = 1;
constexpr int kServiceMetadata = 1, kServiceSpec = 2;
constexpr int kServiceSpecPorts = 1, kServiceSpecSelector = 2, kServiceSpecClusterIp = 3,
              kServiceSpecType = 4, kServiceSpecClusterIps = 18;
constexpr int kServicePortName = 1, kServicePortProtocol = 2, kServicePortPort = 3,
              kServicePortTargetPort = 4, kServicePortNodePort = 5;
}  // namespace core

TEST(WireCompatibility, NetworkPolicyDecodes) {
  using namespace networking;
  std::string metadata = Bytes(meta::kObjectMetaName, "allow-db") +
                         Bytes(meta::kObjectMetaNamespace, "prod") +
                         Bytes(meta::kObjectMetaUid, "0e4c") +
                         Bytes(meta::kObjectMetaResourceVersion, "42") +
                         MapEntry(meta::kObjectMetaLabels, "team", "db") +
                         MapEntry(meta::kObjectMetaAnnotations, "note", "x");
  std::string selector =
      MapEntry(meta::kLabelSelectorMatchLabels, "app", "db") +
      Bytes(meta::kLabelSelectorMatchExpressions,
            Bytes(meta::kRequirementKey, "tier") + Bytes(meta::kRequirementOperator, "In") +
                Bytes(meta::kRequirementValues, "a") + Bytes(meta::kRequirementValues, "b"));
  std::string int_port = Int(intstr::kType, 0) + Int(intstr::kIntVal, 5432);
  std::string named_port = Int(intstr::kType, 1) + Bytes(intstr::kStrVal, "metrics");
  std::string ingress =
      Bytes(kIngressPorts, Bytes(kPortProtocol, "TCP") + Bytes(kPortPort, int_port) +
                               Int(kPortEndPort, 5440)) +
      Bytes(kIngressPorts, Bytes(kPortPort, named_port)) +
      Bytes(kIngressFrom, Bytes(kPeerPodSelector, MapEntry(meta::kLabelSelectorMatchLabels,
                                                           "app", "api")) +
                              Bytes(kPeerNamespaceSelector, "")) +
      Bytes(kIngressFrom, Bytes(kPeerIpBlock, Bytes(kIpBlockCidr, "10.0.0.0/8") +
                                                  Bytes(kIpBlockExcept, "10.1.0.0/16")));
  std::string egress = Bytes(kEgressPorts, Bytes(kPortProtocol, "UDP")) +
                       Bytes(kEgressTo, Bytes(kPeerNamespaceSelector, ""));
  std::string spec = Bytes(kSpecPodSelector, selector) + Bytes(kSpecIngress, ingress) +
                     Bytes(kSpecEgress, egress) + Bytes(kSpecPolicyTypes, "Ingress") +
                     Bytes(kSpecPolicyTypes, "Egress");
  std::string wire = Bytes(kPolicyMetadata, metadata) + Bytes(kPolicySpec, spec);

  np::k8s::NetworkPolicy p;
  ASSERT_TRUE(p.ParseFromString(wire));
  EXPECT_EQ(p.metadata().name(), "allow-db");
  EXPECT_EQ(p.metadata().namespace_(), "prod");
  EXPECT_EQ(p.metadata().uid(), "0e4c");
  EXPECT_EQ(p.metadata().resourceversion(), "42");
  EXPECT_EQ(p.metadata().labels().at("team"), "db");
  EXPECT_EQ(p.metadata().annotations().at("note"), "x");
  const auto& s = p.spec();
  EXPECT_EQ(s.podselector().matchlabels().at("app"), "db");
  ASSERT_EQ(s.podselector().matchexpressions_size(), 1);
  EXPECT_EQ(s.podselector().matchexpressions(0).key(), "tier");
  EXPECT_EQ(s.podselector().matchexpressions(0).operator_(), "In");
  EXPECT_EQ(s.podselector().matchexpressions(0).values_size(), 2);
  ASSERT_EQ(s.ingress_size(), 1);
  ASSERT_EQ(s.ingress(0).ports_size(), 2);
  EXPECT_EQ(s.ingress(0).ports(0).protocol(), "TCP");
  EXPECT_EQ(s.ingress(0).ports(0).port().type(), 0);
  EXPECT_EQ(s.ingress(0).ports(0).port().intval(), 5432);
  EXPECT_EQ(s.ingress(0).ports(0).endport(), 5440);
  EXPECT_FALSE(s.ingress(0).ports(1).has_protocol());
  EXPECT_EQ(s.ingress(0).ports(1).port().type(), 1);
  EXPECT_EQ(s.ingress(0).ports(1).port().strval(), "metrics");
  ASSERT_EQ(s.ingress(0).from_size(), 2);
  EXPECT_EQ(s.ingress(0).from(0).podselector().matchlabels().at("app"), "api");
  // Present but empty ("{}") stays distinguishable from absent.
  EXPECT_TRUE(s.ingress(0).from(0).has_namespaceselector());
  EXPECT_FALSE(s.ingress(0).from(0).has_ipblock());
  EXPECT_EQ(s.ingress(0).from(1).ipblock().cidr(), "10.0.0.0/8");
  EXPECT_EQ(s.ingress(0).from(1).ipblock().except(0), "10.1.0.0/16");
  ASSERT_EQ(s.egress_size(), 1);
  EXPECT_EQ(s.egress(0).ports(0).protocol(), "UDP");
  EXPECT_FALSE(s.egress(0).ports(0).has_port());
  EXPECT_TRUE(s.egress(0).to(0).has_namespaceselector());
  ASSERT_EQ(s.policytypes_size(), 2);
  EXPECT_EQ(s.policytypes(1), "Egress");
}

TEST(WireCompatibility, PodAndNamespaceDecode) {
  using namespace core;
  std::string container =
      Bytes(kContainerName, "web") + Bytes(kContainerImage, "nginx") +
      Bytes(kContainerPorts, Bytes(kPortName, "http") + Int(kPortHostPort, 0) +
                                 Int(kPortContainerPort, 8080) + Bytes(kPortProtocol, "TCP")) +
      Bytes(kContainerPorts, Bytes(kPortName, "dns") + Int(kPortContainerPort, 53) +
                                 Bytes(kPortProtocol, "UDP"));
  std::string spec = Bytes(kSpecContainers, container) + Bytes(kSpecNodeName, "node-3") +
                     Int(kSpecHostNetwork, 1);
  std::string status = Bytes(kStatusPhase, "Running") + Bytes(kStatusHostIp, "192.168.1.3") +
                       Bytes(kStatusPodIp, "10.0.0.7") +
                       Bytes(kStatusPodIps, Bytes(kPodIpIp, "10.0.0.7")) +
                       Bytes(kStatusPodIps, Bytes(kPodIpIp, "fd00::7"));
  std::string wire =
      Bytes(kPodMetadata, Bytes(meta::kObjectMetaName, "web-0") +
                              Bytes(meta::kObjectMetaNamespace, "shop") +
                              MapEntry(meta::kObjectMetaLabels, "app", "web")) +
      Bytes(kPodSpec, spec) + Bytes(kPodStatus, status);
  np::k8s::Pod pod;
  ASSERT_TRUE(pod.ParseFromString(wire));
  EXPECT_EQ(pod.metadata().name(), "web-0");
  EXPECT_EQ(pod.metadata().namespace_(), "shop");
  EXPECT_EQ(pod.metadata().labels().at("app"), "web");
  ASSERT_EQ(pod.spec().containers_size(), 1);
  EXPECT_EQ(pod.spec().containers(0).name(), "web");
  ASSERT_EQ(pod.spec().containers(0).ports_size(), 2);
  EXPECT_EQ(pod.spec().containers(0).ports(0).name(), "http");
  EXPECT_EQ(pod.spec().containers(0).ports(0).containerport(), 8080);
  EXPECT_EQ(pod.spec().containers(0).ports(1).protocol(), "UDP");
  EXPECT_EQ(pod.spec().nodename(), "node-3");
  EXPECT_TRUE(pod.spec().hostnetwork());
  EXPECT_EQ(pod.status().phase(), "Running");
  EXPECT_EQ(pod.status().hostip(), "192.168.1.3");
  EXPECT_EQ(pod.status().podip(), "10.0.0.7");
  ASSERT_EQ(pod.status().podips_size(), 2);
  EXPECT_EQ(pod.status().podips(1).ip(), "fd00::7");

  np::k8s::Namespace ns;
  ASSERT_TRUE(ns.ParseFromString(Bytes(
      kNamespaceMetadata, Bytes(meta::kObjectMetaName, "shop") +
                              MapEntry(meta::kObjectMetaLabels, "team", "retail"))));
  EXPECT_EQ(ns.metadata().name(), "shop");
  EXPECT_EQ(ns.metadata().labels().at("team"), "retail");
}

TEST(WireCompatibility, ServiceDecodes) {
  using namespace core;
  std::string http = Bytes(kServicePortName, "http") + Bytes(kServicePortProtocol, "TCP") +
                     Int(kServicePortPort, 80) +
                     Bytes(kServicePortTargetPort,
                           Int(intstr::kType, 1) + Bytes(intstr::kStrVal, "web")) +
                     Int(kServicePortNodePort, 30080);
  std::string dns = Bytes(kServicePortName, "dns") + Bytes(kServicePortProtocol, "UDP") +
                    Int(kServicePortPort, 53) +
                    Bytes(kServicePortTargetPort, Int(intstr::kType, 0) + Int(intstr::kIntVal, 5353));
  std::string spec = Bytes(kServiceSpecPorts, http) + Bytes(kServiceSpecPorts, dns) +
                     MapEntry(kServiceSpecSelector, "app", "web") +
                     Bytes(kServiceSpecClusterIp, "10.96.0.10") +
                     Bytes(kServiceSpecType, "NodePort") +
                     Bytes(kServiceSpecClusterIps, "10.96.0.10") +
                     Bytes(kServiceSpecClusterIps, "fd00::10");
  std::string wire = Bytes(kServiceMetadata, Bytes(meta::kObjectMetaName, "web") +
                                                 Bytes(meta::kObjectMetaNamespace, "shop")) +
                     Bytes(kServiceSpec, spec);
  np::k8s::Service service;
  ASSERT_TRUE(service.ParseFromString(wire));
  EXPECT_EQ(service.metadata().name(), "web");
  EXPECT_EQ(service.metadata().namespace_(), "shop");
  EXPECT_EQ(service.spec().selector().at("app"), "web");
  EXPECT_EQ(service.spec().clusterip(), "10.96.0.10");
  EXPECT_EQ(service.spec().type(), "NodePort");
  ASSERT_EQ(service.spec().clusterips_size(), 2);
  EXPECT_EQ(service.spec().clusterips(1), "fd00::10");
  ASSERT_EQ(service.spec().ports_size(), 2);
  EXPECT_EQ(service.spec().ports(0).name(), "http");
  EXPECT_EQ(service.spec().ports(0).port(), 80);
  EXPECT_EQ(service.spec().ports(0).targetport().type(), 1);
  EXPECT_EQ(service.spec().ports(0).targetport().strval(), "web");
  EXPECT_EQ(service.spec().ports(1).protocol(), "UDP");
  EXPECT_EQ(service.spec().ports(1).targetport().intval(), 5353);
}

// Fields np does not model survive a decode as unknown fields (re-encoding keeps them).
TEST(WireCompatibility, UnknownFieldsAreKept) {
  std::string wire = Bytes(1, Bytes(1, "a")) + Bytes(99, "future field") + Int(100, 7);
  np::k8s::NetworkPolicy p;
  ASSERT_TRUE(p.ParseFromString(wire));
  EXPECT_EQ(p.metadata().name(), "a");
  std::string again;
  ASSERT_TRUE(p.SerializeToString(&again));
  EXPECT_NE(again.find("future field"), std::string::npos);
}

}  // namespace
