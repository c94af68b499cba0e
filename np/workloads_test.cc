// Tests for np/workloads.h through the loader. Expected labels come from the controllers'
// documented behaviour (StatefulSet: statefulset.kubernetes.io/pod-name, apps.kubernetes.io/
// pod-index; Job: batch.kubernetes.io/job-name and job-name); expected addresses from the
// stated allocation rule (in order from the CIDR's first host, skipping live pods' addresses).
#include "np/workloads.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "np/loader.h"

namespace np {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

std::string Workload(absl::string_view api, absl::string_view kind, absl::string_view name,
                     absl::string_view spec) {
  return absl::StrCat("apiVersion: ", api, "\nkind: ", kind, "\nmetadata: {name: ", name,
                      ", namespace: ns}\nspec:\n", spec, "\n---\n");
}

constexpr absl::string_view kTemplate = R"(  template:
    metadata: {labels: {app: x}}
    spec:
      containers:
        - name: c
          ports: [{name: web, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}])";

absl::StatusOr<Cluster> Load(const std::string& text, WorkloadOptions options = {},
                             std::vector<Diagnostic>* diagnostics = nullptr) {
  ClusterLoader loader;
  loader.SetWorkloadOptions(std::move(options));
  if (absl::Status s = loader.AddText(text, "in.yaml"); !s.ok()) return s;
  return loader.Build(diagnostics);
}

TEST(WorkloadsTest, EveryKindBecomesAPodFromItsTemplate) {
  const std::string replicas = absl::StrCat("  replicas: 3\n", kTemplate);
  std::string text = Workload("apps/v1", "Deployment", "deploy", replicas) +
                     Workload("apps/v1", "ReplicaSet", "rs", replicas) +
                     Workload("apps/v1", "StatefulSet", "sts", replicas) +
                     Workload("apps/v1", "DaemonSet", "ds", kTemplate) +
                     Workload("batch/v1", "Job", "job", kTemplate) +
                     Workload("v1", "ReplicationController", "rc", replicas) +
                     Workload("batch/v1", "CronJob", "cron",
                              "  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n" +
                                  absl::StrCat("    ", absl::StrReplaceAll(kTemplate, {{"\n", "\n    "}})));
  absl::StatusOr<Cluster> cluster = Load(text);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_EQ(cluster->pod_count(), 7);
  for (const char* name : {"cron", "deploy", "ds", "job", "rc", "rs", "sts"}) {
    std::optional<int> index = cluster->FindPod("ns", absl::StrCat(name, "-0"));
    ASSERT_TRUE(index.has_value()) << name;
    const PodInfo& pod = cluster->pod(*index);
    EXPECT_EQ(pod.labels.at("app"), "x") << name;
    ASSERT_EQ(pod.named_ports.size(), 2u) << name;
    EXPECT_EQ(pod.named_ports[0].name, "web");
    EXPECT_EQ(pod.named_ports[0].port, 8080);
    EXPECT_EQ(pod.named_ports[1].protocol, Protocol::kUDP);
    EXPECT_TRUE(pod.ipv4.has_value() && pod.ipv6.has_value()) << name;
    EXPECT_THAT(pod.synthesized_from, HasSubstr(absl::StrCat(" ns/", name))) << name;
    // The workload's name names its pod.
    EXPECT_EQ(cluster->FindPod(absl::StrCat("ns/", name)), index) << name;
  }
  const PodInfo& sts = cluster->pod(*cluster->FindPod("ns/sts-0"));
  EXPECT_EQ(sts.synthesized_from, "StatefulSet ns/sts");
  EXPECT_EQ(sts.labels.at("statefulset.kubernetes.io/pod-name"), "sts-0");
  EXPECT_EQ(sts.labels.at("apps.kubernetes.io/pod-index"), "0");
  const PodInfo& job = cluster->pod(*cluster->FindPod("ns/job-0"));
  EXPECT_EQ(job.labels.at("batch.kubernetes.io/job-name"), "job");
  EXPECT_EQ(job.labels.at("job-name"), "job");
  EXPECT_EQ(cluster->pod(*cluster->FindPod("ns/deploy-0")).labels.size(), 1u);
}

TEST(WorkloadsTest, AddressesAreDeterministicAndSkipLivePods) {
  const std::string text =
      Workload("apps/v1", "Deployment", "b", kTemplate) +
      Workload("apps/v1", "Deployment", "a", kTemplate) +
      "apiVersion: v1\nkind: Pod\nmetadata: {name: live, namespace: ns}\n"
      "status: {podIP: 10.9.0.1}\n";
  WorkloadOptions options;
  options.pod_cidrs = {*IpPrefix::Parse("10.9.0.0/24")};
  absl::StatusOr<Cluster> cluster = Load(text, options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  // Sorted by (namespace, name): a first. 10.9.0.1 is the live pod's.
  EXPECT_EQ(cluster->pod(*cluster->FindPod("ns/a-0")).ipv4->ToString(), "10.9.0.2");
  EXPECT_EQ(cluster->pod(*cluster->FindPod("ns/b-0")).ipv4->ToString(), "10.9.0.3");
  EXPECT_FALSE(cluster->pod(*cluster->FindPod("ns/a-0")).ipv6.has_value());
  EXPECT_FALSE(cluster->pod(*cluster->FindPod("ns/live")).quarantined());
}

TEST(WorkloadsTest, ExpandReplicasAndExhaustion) {
  const std::string text =
      Workload("apps/v1", "StatefulSet", "db", absl::StrCat("  replicas: 3\n", kTemplate));
  WorkloadOptions options;
  options.expand_replicas = true;
  options.pod_cidrs = {*IpPrefix::Parse("10.0.0.0/30")};  // hosts .1 and .2 only
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = Load(text, options, &diagnostics);
  EXPECT_FALSE(cluster.ok());
  bool exhausted = false;
  for (const Diagnostic& d : diagnostics) {
    exhausted |= d.is_error() && absl::StrContains(d.message, "no free address left for ns/db-2");
  }
  EXPECT_TRUE(exhausted);

  options.pod_cidrs = {*IpPrefix::Parse("fd00::/120")};
  cluster = Load(text, options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_EQ(cluster->pod_count(), 3);
  EXPECT_EQ(cluster->pod(2).name, "db-2");
  EXPECT_EQ(cluster->pod(2).labels.at("apps.kubernetes.io/pod-index"), "2");
  EXPECT_EQ(cluster->pod(2).ipv6->ToString(), "fd00::3");
}

TEST(WorkloadsTest, LivePodsAndOwnedWorkloadsAreNotDoubled) {
  const std::string text =
      Workload("apps/v1", "Deployment", "web", kTemplate) +
      Workload("batch/v1", "CronJob", "nightly",
               "  jobTemplate:\n    spec:\n      template: {metadata: {labels: {a: b}}}") +
      // A ReplicaSet the Deployment made: its pods are the Deployment's.
      "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-5f9\n  namespace: ns\n"
      "  ownerReferences: [{kind: Deployment, name: web, controller: true}]\n"
      "spec:\n" + std::string(kTemplate) + "\n---\n"
      // A live pod of the CronJob's Job.
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nightly-2890-abc\n  namespace: ns\n"
      "  ownerReferences: [{kind: Job, name: nightly-2890, controller: true}]\n";
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = Load(text, {}, &diagnostics);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::vector<std::string> pods;
  for (int i = 0; i < cluster->pod_count(); ++i) pods.push_back(cluster->pod(i).name);
  EXPECT_THAT(pods, ElementsAre("nightly-2890-abc", "web-0"));
}

TEST(WorkloadsTest, HostNetworkTemplateIsLeftOutAndNameCollisionIsAnError) {
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster =
      Load(Workload("apps/v1", "DaemonSet", "agent",
                    "  template: {spec: {hostNetwork: true, containers: [{name: a}]}}"),
           {}, &diagnostics);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_EQ(cluster->pod_count(), 0);

  cluster = Load(Workload("apps/v1", "Deployment", "web", kTemplate) +
                     "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: ns}\n",
                 {}, &diagnostics);
  EXPECT_FALSE(cluster.ok());
  EXPECT_THAT(cluster.status().message(), HasSubstr("a pod of that name is already in the input"));
}

TEST(WorkloadsTest, TemplateErrorsNameTheWorkloadField) {
  absl::StatusOr<Cluster> cluster = Load(Workload(
      "apps/v1", "Deployment", "web",
      "  template: {spec: {containers: [{name: a, ports: [{containerPort: x}]}]}}"));
  ASSERT_FALSE(cluster.ok());
  EXPECT_THAT(cluster.status().message(),
              HasSubstr("Deployment ns/web: spec.template.spec.containers[0].ports[0].containerPort"));
}

// Namespaces and pods that live only in the cluster (ClusterLoader::AddNamespaceLabels,
// ParseClusterPod): what manifests kept in git lack to test DNS egress.
constexpr absl::string_view kPolicyInShop =
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\n"
    "spec: {podSelector: {}}\n";

TEST(ClusterOnlyTest, NamespaceLabelsMakeAnImpliedOrUnmentionedNamespaceReal) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddText(kPolicyInShop, "in.yaml").ok());
  ASSERT_TRUE(loader.AddNamespaceLabels("shop", {{"team", "shop"}}, "--namespace-labels").ok());
  ASSERT_TRUE(
      loader.AddNamespaceLabels("kube-system", {{"team", "platform"}}, "--namespace-labels").ok());
  // Given again: merged.
  ASSERT_TRUE(loader.AddNamespaceLabels("kube-system", {{"tier", "infra"}}, "--namespace-labels")
                  .ok());
  absl::StatusOr<Cluster> cluster = loader.Build();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::optional<int> shop = cluster->FindNamespace("shop");
  std::optional<int> kube = cluster->FindNamespace("kube-system");
  ASSERT_TRUE(shop && kube);
  EXPECT_FALSE(cluster->ns(*shop).implied);
  EXPECT_THAT(cluster->ns(*shop).labels,
              UnorderedElementsAre(Pair("team", "shop"),
                                   Pair("kubernetes.io/metadata.name", "shop")));
  EXPECT_THAT(cluster->ns(*kube).labels,
              UnorderedElementsAre(Pair("team", "platform"), Pair("tier", "infra"),
                                   Pair("kubernetes.io/metadata.name", "kube-system")));
}

TEST(ClusterOnlyTest, NamespaceLabelsForADefinedNamespaceOrTwoValuesAreErrors) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddText("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
                             "ns.yaml").ok());
  ASSERT_TRUE(loader.AddNamespaceLabels("shop", {{"team", "shop"}}, "--namespace-labels").ok());
  absl::StatusOr<Cluster> cluster = loader.Build();
  ASSERT_FALSE(cluster.ok());
  EXPECT_THAT(cluster.status().message(),
              HasSubstr("--namespace-labels: Namespace shop: labels given here, but the input "
                        "defines this namespace too (ns.yaml:1)"));

  absl::Status twice =
      loader.AddNamespaceLabels("shop", {{"team", "web"}}, "--namespace-labels");
  EXPECT_THAT(twice.message(), HasSubstr("--namespace-labels: Namespace shop: "
                                         "metadata.labels[team]: given twice"));
}

TEST(ClusterOnlyTest, NamespaceLabelsAreValidatedAndErrorsNameWhereTheyWereGiven) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddNamespaceLabels("kube-system", {{"bad key!", "x"}}, "--namespace-labels")
                  .ok());
  absl::StatusOr<Cluster> cluster = loader.Build();
  ASSERT_FALSE(cluster.ok());
  EXPECT_THAT(cluster.status().message(),
              HasSubstr("--namespace-labels: Namespace kube-system: metadata.labels"));
  EXPECT_THAT(cluster.status().message(), HasSubstr("bad key!"));

  ClusterLoader bad_name;
  ASSERT_TRUE(bad_name.AddNamespaceLabels("Kube_System", {}, "--namespace-labels").ok());
  cluster = bad_name.Build();
  ASSERT_FALSE(cluster.ok());
  EXPECT_THAT(cluster.status().message(),
              HasSubstr("--namespace-labels: Namespace Kube_System: metadata.name"));
}

TEST(ClusterOnlyTest, ParseNamespaceLabels) {
  auto parsed = ParseNamespaceLabels("kube-system:name=kube-system,team=platform");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->first, "kube-system");
  EXPECT_THAT(parsed->second,
              UnorderedElementsAre(Pair("name", "kube-system"), Pair("team", "platform")));
  parsed = ParseNamespaceLabels("kube-system:");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->second, IsEmpty());
  EXPECT_THAT(ParseNamespaceLabels("kube-system").status().message(),
              HasSubstr("is not NAMESPACE:KEY=VALUE"));
  EXPECT_THAT(ParseNamespaceLabels("kube-system:team").status().message(),
              HasSubstr("\"team\" is not KEY=VALUE"));
  EXPECT_THAT(ParseNamespaceLabels("kube-system:a=1,a=2").status().message(),
              HasSubstr("label a given twice"));
}

TEST(ClusterOnlyTest, ClusterPodBecomesAnAddressedMarkedPod) {
  absl::StatusOr<np::Workload> dns =
      ParseClusterPod("kube-system/coredns:k8s-app=kube-dns:dns=53/UDP,dns-tcp=53/TCP,9153",
                      "--cluster-pod");
  ASSERT_TRUE(dns.ok()) << dns.status();
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddText(kPolicyInShop, "in.yaml").ok());
  loader.AddClusterPod(*std::move(dns));
  absl::StatusOr<Cluster> cluster = loader.Build();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::optional<int> pod = cluster->FindPod("kube-system/coredns");
  ASSERT_TRUE(pod);
  const PodInfo& info = cluster->pod(*pod);
  EXPECT_EQ(info.Key(), "kube-system/coredns-0");
  EXPECT_EQ(info.synthesized_from, "--cluster-pod kube-system/coredns");
  EXPECT_THAT(info.labels, UnorderedElementsAre(Pair("k8s-app", "kube-dns")));
  ASSERT_TRUE(info.ipv4);
  EXPECT_EQ(info.ipv4->ToString(), "10.244.0.1");  // the first host of the default pod CIDR
  ASSERT_EQ(info.named_ports.size(), 2u);
  EXPECT_EQ(info.named_ports[0].name, "dns");
  EXPECT_EQ(info.named_ports[0].protocol, Protocol::kUDP);
  EXPECT_EQ(info.named_ports[0].port, 53);
  EXPECT_EQ(info.named_ports[1].name, "dns-tcp");
  EXPECT_EQ(info.named_ports[1].protocol, Protocol::kTCP);
  // The namespace is implied, as for any pod.
  EXPECT_TRUE(cluster->FindNamespace("kube-system"));
}

TEST(ClusterOnlyTest, ClusterPodErrorsQuoteTheTextOrNameWhereItWasGiven) {
  EXPECT_THAT(ParseClusterPod("coredns", "--cluster-pod").status().message(),
              HasSubstr("is not NAMESPACE/NAME[:LABELS[:PORTS]]"));
  EXPECT_THAT(ParseClusterPod("kube-system/coredns:a=b:dns=fifty", "--cluster-pod")
                  .status()
                  .message(),
              HasSubstr("kube-system/coredns: port \"dns=fifty\" is not [NAME=]PORT[/PROTOCOL]"));
  EXPECT_THAT(ParseClusterPod("kube-system/coredns:app", "--cluster-pod").status().message(),
              HasSubstr("\"app\" is not KEY=VALUE"));
  // What a Pod's validation rejects is rejected as it would be in a manifest.
  absl::StatusOr<np::Workload> lower = ParseClusterPod("kube-system/coredns::53/udp", "--cluster-pod");
  ASSERT_TRUE(lower.ok());
  ClusterLoader loader;
  loader.AddClusterPod(*std::move(lower));
  absl::StatusOr<Cluster> cluster = loader.Build();
  ASSERT_FALSE(cluster.ok());
  EXPECT_THAT(cluster.status().message(), HasSubstr("--cluster-pod: "));
  EXPECT_THAT(cluster.status().message(), HasSubstr("protocol"));
}

}  // namespace
}  // namespace np
