// Tests for np/loader.h. Expected values come from the inputs (testdata/loader/ and the texts
// below) and from how Kubernetes reads YAML: go-yaml v2 scalars, strict JSON decoding.
#include "np/loader.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace np {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Pair;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

std::string Data(absl::string_view name) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  std::string path = absl::StrCat("testdata/loader/", name);
  if (srcdir != nullptr && workspace != nullptr) {
    return absl::StrCat(srcdir, "/", workspace, "/", path);
  }
  return path;
}

std::string Dump(const std::vector<Diagnostic>& diagnostics) {
  std::vector<std::string> lines;
  for (const Diagnostic& d : diagnostics) lines.push_back(d.ToString());
  return absl::StrJoin(lines, "\n");
}

std::vector<Diagnostic> Errors(const std::vector<Diagnostic>& diagnostics) {
  std::vector<Diagnostic> out;
  for (const Diagnostic& d : diagnostics) {
    if (d.is_error()) out.push_back(d);
  }
  return out;
}

// A diagnostic at `line` of `file` about `field`, whose message contains `text`.
auto IsError(absl::string_view file, int line, absl::string_view field, absl::string_view text) {
  return AllOf(Field(&Diagnostic::severity, Diagnostic::Severity::kError),
               Field(&Diagnostic::location,
                     AllOf(Field(&SourceLocation::file, std::string(file)),
                           Field(&SourceLocation::line, line))),
               Field(&Diagnostic::field, std::string(field)),
               Field(&Diagnostic::message, HasSubstr(std::string(text))));
}

// A NetworkPolicy named `name` in namespace ns: `spec` is the text after "spec:" (its
// lines indented by two spaces), starting at line 5 as in the files it stands for.
std::string PolicyText(absl::string_view name, absl::string_view spec) {
  return absl::StrCat("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ",
                      name, ", namespace: ns}\nspec:\n", spec);
}

// Reads `text` as `file` into `loader`; a failure shows the diagnostics.
::testing::AssertionResult Added(ClusterLoader& loader, absl::string_view text,
                                 absl::string_view file) {
  if (loader.AddText(text, file).ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << Dump(loader.diagnostics());
}

// Loads `text` and expects exactly one error.
Diagnostic OnlyError(absl::string_view text) {
  ClusterLoader loader;
  absl::Status status = loader.AddText(text, "in.yaml");
  EXPECT_FALSE(status.ok());
  std::vector<Diagnostic> errors = Errors(loader.diagnostics());
  EXPECT_THAT(errors, SizeIs(1)) << Dump(loader.diagnostics());
  return errors.empty() ? Diagnostic() : errors[0];
}

// --- Well-formed inputs.

TEST(LoaderTest, SingleNetworkPolicy) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddPath(Data("policy.yaml")).ok()) << Dump(loader.diagnostics());
  EXPECT_THAT(loader.diagnostics(), IsEmpty());
  ASSERT_THAT(loader.objects().policies, SizeIs(1));
  EXPECT_THAT(loader.objects().pods, IsEmpty());
  const k8s::NetworkPolicy& p = loader.objects().policies[0].object;
  EXPECT_EQ(p.metadata().name(), "allow-db");
  EXPECT_EQ(p.metadata().namespace_(), "prod");
  EXPECT_THAT(p.metadata().labels(), UnorderedElementsAre(Pair("team", "storage")));
  ASSERT_TRUE(p.spec().has_podselector());
  EXPECT_THAT(p.spec().podselector().matchlabels(), UnorderedElementsAre(Pair("app", "db")));
  EXPECT_THAT(p.spec().policytypes(), ElementsAre("Ingress"));
  EXPECT_EQ(p.spec().egress_size(), 0);
  ASSERT_EQ(p.spec().ingress_size(), 1);
  const k8s::NetworkPolicyIngressRule& rule = p.spec().ingress(0);
  ASSERT_EQ(rule.from_size(), 3);
  EXPECT_TRUE(rule.from(0).has_podselector());
  EXPECT_FALSE(rule.from(0).has_namespaceselector());
  EXPECT_THAT(rule.from(0).podselector().matchlabels(), UnorderedElementsAre(Pair("app", "api")));
  // namespaceSelector AND podSelector {} in one peer.
  ASSERT_TRUE(rule.from(1).has_namespaceselector());
  ASSERT_TRUE(rule.from(1).has_podselector());
  EXPECT_EQ(rule.from(1).podselector().matchlabels_size(), 0);
  ASSERT_EQ(rule.from(1).namespaceselector().matchexpressions_size(), 1);
  const k8s::LabelSelectorRequirement& r = rule.from(1).namespaceselector().matchexpressions(0);
  EXPECT_EQ(r.key(), "env");
  EXPECT_EQ(r.operator_(), "In");
  EXPECT_THAT(r.values(), ElementsAre("prod", "staging"));
  ASSERT_TRUE(rule.from(2).has_ipblock());
  EXPECT_EQ(rule.from(2).ipblock().cidr(), "10.0.0.0/8");
  EXPECT_THAT(rule.from(2).ipblock().except(), ElementsAre("10.1.0.0/16"));
  ASSERT_EQ(rule.ports_size(), 3);
  EXPECT_EQ(rule.ports(0).protocol(), "TCP");
  EXPECT_EQ(rule.ports(0).port().type(), 0);
  EXPECT_EQ(rule.ports(0).port().intval(), 5432);
  EXPECT_FALSE(rule.ports(1).has_protocol());
  EXPECT_EQ(rule.ports(1).port().type(), 1);
  EXPECT_EQ(rule.ports(1).port().strval(), "metrics");
  EXPECT_EQ(rule.ports(2).port().intval(), 8000);
  EXPECT_TRUE(rule.ports(2).has_endport());
  EXPECT_EQ(rule.ports(2).endport(), 8100);
  EXPECT_FALSE(rule.ports(0).has_endport());
}

TEST(LoaderTest, RecordsObjectAndFieldLines) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddPath(Data("policy.yaml")).ok());
  ASSERT_THAT(loader.objects().policies, SizeIs(1));
  const ObjectSource& source = loader.objects().policies[0].source;
  EXPECT_EQ(source.location.file, Data("policy.yaml"));
  EXPECT_EQ(source.location.line, 2);  // line 1 is a comment
  // The lines of the input, counted by hand. (A field on the line of its enclosing field,
  // such as spec.ingress[0].from, needs no entry of its own: LineOf finds it either way.)
  const std::pair<const char*, int> lines[] = {
      {"kind", 3},
      {"metadata", 4},
      {"metadata.name", 5},
      {"metadata.labels", 7},
      {"spec", 9},
      {"spec.podSelector", 10},
      {"spec.podSelector.matchLabels", 11},
      {"spec.policyTypes", 13},
      {"spec.policyTypes[0]", 14},
      {"spec.ingress", 15},
      {"spec.ingress[0]", 16},
      {"spec.ingress[0].from", 16},
      {"spec.ingress[0].from[1]", 20},
      {"spec.ingress[0].from[1].namespaceSelector.matchExpressions[0]", 22},
      {"spec.ingress[0].from[1].namespaceSelector.matchExpressions[0].values", 24},
      {"spec.ingress[0].from[1].podSelector", 25},
      {"spec.ingress[0].from[2].ipBlock.cidr", 27},
      {"spec.ingress[0].from[2].ipBlock.except[0]", 29},
      {"spec.ingress[0].ports[0].port", 32},
      {"spec.ingress[0].ports[2]", 34},
  };
  for (const auto& [field, line] : lines) EXPECT_EQ(source.LineOf(field), line) << field;
  EXPECT_EQ(source.LineOf("spec.ingress[0].ports[2].endPort"), 35);
}

TEST(LoaderTest, MultiDocumentSkipsOtherKinds) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddPath(Data("multi.yaml")).ok()) << Dump(loader.diagnostics());
  EXPECT_THAT(loader.diagnostics(), IsEmpty());
  ASSERT_THAT(loader.objects().namespaces, SizeIs(1));
  ASSERT_THAT(loader.objects().pods, SizeIs(1));
  ASSERT_THAT(loader.objects().policies, SizeIs(1));
  // Services are read (np/services.h); np's own expectation documents are not.
  EXPECT_THAT(loader.objects().services, SizeIs(1));
  EXPECT_THAT(loader.skipped_kinds(), UnorderedElementsAre(Pair("ReachabilityExpectation", 1)));

  const k8s::Namespace& ns = loader.objects().namespaces[0].object;
  EXPECT_EQ(ns.metadata().name(), "x");
  EXPECT_THAT(ns.metadata().labels(), UnorderedElementsAre(Pair("ns", "x")));
  EXPECT_EQ(loader.objects().namespaces[0].source.location.line, 3);

  const k8s::Pod& pod = loader.objects().pods[0].object;
  EXPECT_EQ(pod.metadata().name(), "a");
  EXPECT_EQ(pod.metadata().namespace_(), "x");
  EXPECT_EQ(loader.objects().pods[0].source.location.line, 10);
  ASSERT_EQ(pod.spec().containers_size(), 1);
  EXPECT_EQ(pod.spec().containers(0).name(), "server");
  ASSERT_EQ(pod.spec().containers(0).ports_size(), 1);
  EXPECT_EQ(pod.spec().containers(0).ports(0).name(), "serve-80-tcp");
  EXPECT_EQ(pod.spec().containers(0).ports(0).containerport(), 80);
  EXPECT_EQ(pod.spec().containers(0).ports(0).protocol(), "TCP");
  EXPECT_EQ(pod.status().phase(), "Running");
  EXPECT_EQ(pod.status().podip(), "10.0.0.1");
  ASSERT_EQ(pod.status().podips_size(), 2);
  EXPECT_EQ(pod.status().podips(1).ip(), "fd00::1");

  const k8s::NetworkPolicy& policy = loader.objects().policies[0].object;
  EXPECT_EQ(policy.metadata().name(), "deny-all");
  EXPECT_TRUE(policy.spec().has_podselector());
  EXPECT_EQ(loader.objects().policies[0].source.location.line, 34);

  absl::StatusOr<Cluster> cluster = loader.Build();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_TRUE(cluster->FindPod("x", "a").has_value());
  EXPECT_TRUE(cluster->FindPolicy("x", "deny-all").has_value());
}

TEST(LoaderTest, KindList) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddPath(Data("list.yaml")).ok()) << Dump(loader.diagnostics());
  ASSERT_THAT(loader.objects().namespaces, SizeIs(1));
  ASSERT_THAT(loader.objects().pods, SizeIs(1));
  ASSERT_THAT(loader.objects().policies, SizeIs(1));
  EXPECT_THAT(loader.skipped_kinds(), UnorderedElementsAre(Pair("ConfigMap", 1)));
  EXPECT_EQ(loader.objects().namespaces[0].object.metadata().name(), "y");
  EXPECT_EQ(loader.objects().pods[0].object.status().podip(), "10.0.0.2");
  EXPECT_EQ(loader.objects().pods[0].source.location.line, 10);
  // `- {}`: one rule, present and empty (it allows everything).
  const k8s::NetworkPolicy& policy = loader.objects().policies[0].object;
  ASSERT_EQ(policy.spec().ingress_size(), 1);
  EXPECT_EQ(policy.spec().ingress(0).from_size(), 0);
  EXPECT_EQ(policy.spec().ingress(0).ports_size(), 0);
}

TEST(LoaderTest, TypedListItemsInheritKind) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddPath(Data("networkpolicylist.yaml")).ok()) << Dump(loader.diagnostics());
  ASSERT_THAT(loader.objects().policies, SizeIs(2));
  EXPECT_EQ(loader.objects().policies[0].object.metadata().name(), "p1");
  EXPECT_EQ(loader.objects().policies[0].source.location.line, 7);
  EXPECT_THAT(loader.objects().policies[0].object.spec().podselector().matchlabels(),
              UnorderedElementsAre(Pair("app", "web")));
  EXPECT_EQ(loader.objects().policies[1].object.metadata().name(), "p2");
  EXPECT_THAT(loader.objects().policies[1].object.spec().policytypes(), ElementsAre("Egress"));
  EXPECT_THAT(loader.skipped_kinds(), IsEmpty());
}

TEST(LoaderTest, JsonObject) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddPath(Data("policy.json")).ok()) << Dump(loader.diagnostics());
  ASSERT_THAT(loader.objects().policies, SizeIs(1));
  const k8s::NetworkPolicy& p = loader.objects().policies[0].object;
  EXPECT_EQ(p.metadata().name(), "web");
  ASSERT_EQ(p.spec().ingress_size(), 1);
  const auto& ports = p.spec().ingress(0).ports();
  ASSERT_EQ(ports.size(), 3);
  EXPECT_EQ(ports[0].port().type(), 0);
  EXPECT_EQ(ports[0].port().intval(), 80);
  EXPECT_EQ(ports[1].port().type(), 1);
  EXPECT_EQ(ports[1].port().strval(), "http");
  EXPECT_EQ(ports[2].protocol(), "UDP");
  EXPECT_EQ(ports[2].endport(), 60);
  EXPECT_EQ(loader.objects().policies[0].source.location.line, 1);
  EXPECT_EQ(loader.objects().policies[0].source.LineOf("spec.ingress[0].ports"), 12);
}

TEST(LoaderTest, JsonList) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddPath(Data("list.json")).ok()) << Dump(loader.diagnostics());
  ASSERT_THAT(loader.objects().namespaces, SizeIs(1));
  ASSERT_THAT(loader.objects().pods, SizeIs(1));
  ASSERT_THAT(loader.objects().policies, SizeIs(1));
  EXPECT_THAT(loader.objects().namespaces[0].object.metadata().labels(),
              UnorderedElementsAre(Pair("a", "b")));
  const k8s::Pod& pod = loader.objects().pods[0].object;
  EXPECT_TRUE(pod.spec().has_hostnetwork());
  EXPECT_TRUE(pod.spec().hostnetwork());
  EXPECT_EQ(pod.spec().nodename(), "node-1");
  EXPECT_EQ(loader.objects().pods[0].source.location.line, 6);
  const k8s::NetworkPolicy& p = loader.objects().policies[0].object;
  ASSERT_EQ(p.spec().egress_size(), 1);
  EXPECT_EQ(p.spec().egress(0).to(0).ipblock().cidr(), "0.0.0.0/0");
}

TEST(LoaderTest, KubectlDump) {
  ClusterLoader loader;
  const std::string file = Data("kubectl_dump.yaml");
  ASSERT_TRUE(loader.AddPath(file).ok()) << Dump(loader.diagnostics());
  EXPECT_THAT(loader.diagnostics(), IsEmpty()) << Dump(loader.diagnostics());
  EXPECT_THAT(loader.skipped_kinds(), IsEmpty());
  const ClusterObjects& objects = loader.objects();
  ASSERT_THAT(objects.namespaces, SizeIs(1));
  ASSERT_THAT(objects.pods, SizeIs(3));
  ASSERT_THAT(objects.policies, SizeIs(1));

  const k8s::Namespace& ns = objects.namespaces[0].object;
  EXPECT_EQ(ns.metadata().name(), "shop");
  EXPECT_EQ(ns.metadata().resourceversion(), "412");
  EXPECT_THAT(ns.metadata().labels(),
              UnorderedElementsAre(Pair("kubernetes.io/metadata.name", "shop"),
                                   Pair("team", "checkout")));

  const k8s::Pod& frontend = objects.pods[0].object;
  EXPECT_EQ(frontend.metadata().name(), "frontend-7d9f8b6c5d-x2x9k");
  EXPECT_EQ(frontend.metadata().generatename(), "frontend-7d9f8b6c5d-");
  EXPECT_EQ(frontend.metadata().namespace_(), "shop");
  EXPECT_THAT(frontend.metadata().labels(),
              UnorderedElementsAre(Pair("app", "frontend"), Pair("pod-template-hash", "7d9f8b6c5d"),
                                   Pair("tier", "web")));
  EXPECT_EQ(frontend.metadata().annotations_size(), 0);  // not read
  EXPECT_EQ(frontend.spec().nodename(), "worker-2");
  EXPECT_FALSE(frontend.spec().has_hostnetwork());
  ASSERT_EQ(frontend.spec().containers_size(), 2);
  const k8s::Container& main = frontend.spec().containers(0);
  EXPECT_EQ(main.name(), "frontend");
  EXPECT_EQ(main.image(), "ghcr.io/example/frontend:1.4.2");
  ASSERT_EQ(main.ports_size(), 2);
  EXPECT_EQ(main.ports(0).name(), "http");
  EXPECT_EQ(main.ports(0).containerport(), 8080);
  EXPECT_EQ(main.ports(1).name(), "metrics");
  EXPECT_EQ(main.ports(1).containerport(), 9090);
  const k8s::Container& sidecar = frontend.spec().containers(1);
  ASSERT_EQ(sidecar.ports_size(), 2);
  EXPECT_EQ(sidecar.ports(0).name(), "admin");
  EXPECT_FALSE(sidecar.ports(0).has_protocol());
  EXPECT_EQ(sidecar.ports(1).protocol(), "UDP");
  EXPECT_EQ(sidecar.ports(1).containerport(), 53);
  EXPECT_EQ(frontend.status().phase(), "Running");
  EXPECT_EQ(frontend.status().hostip(), "172.18.0.3");
  EXPECT_EQ(frontend.status().podip(), "10.244.1.17");
  ASSERT_EQ(frontend.status().podips_size(), 2);
  EXPECT_EQ(frontend.status().podips(1).ip(), "fd00:10:244:1::11");
  const ObjectSource& source = objects.pods[0].source;
  EXPECT_EQ(source.location.line, 30);
  EXPECT_EQ(source.LineOf("metadata.name"), 42);
  EXPECT_EQ(source.LineOf("spec.containers[0].ports[0].name"), 77);
  EXPECT_EQ(source.LineOf("spec.nodeName"), 114);
  EXPECT_EQ(source.LineOf("status.podIPs"), 173);
  EXPECT_EQ(source.LineOf("status.podIPs[1]"), 175);
  // Ignored fields get no line; LineOf falls back to the enclosing field's.
  EXPECT_FALSE(source.field_lines.contains("spec.tolerations"));

  EXPECT_EQ(objects.pods[1].object.metadata().name(), "kube-proxy-q7w8e");
  EXPECT_TRUE(objects.pods[1].object.spec().hostnetwork());
  EXPECT_EQ(objects.pods[1].source.LineOf("spec.hostNetwork"), 201);
  EXPECT_EQ(objects.pods[2].object.status().phase(), "Succeeded");

  const k8s::NetworkPolicy& policy = objects.policies[0].object;
  EXPECT_EQ(policy.metadata().name(), "frontend-ingress");
  EXPECT_EQ(policy.metadata().generation(), 3);
  EXPECT_EQ(policy.metadata().uid(), "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f");
  ASSERT_EQ(policy.spec().ingress_size(), 1);
  EXPECT_THAT(policy.spec().ingress(0).from(0).namespaceselector().matchlabels(),
              UnorderedElementsAre(Pair("kubernetes.io/metadata.name", "ingress-nginx")));
  EXPECT_EQ(policy.spec().ingress(0).ports(0).port().strval(), "http");
  EXPECT_EQ(objects.policies[0].source.location.line, 227);

  // The hostNetwork and the finished pod are left out of the cluster (with warnings).
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_EQ(cluster->pod_count(), 1);
  EXPECT_TRUE(cluster->FindPod("shop", "frontend-7d9f8b6c5d-x2x9k").has_value());
  EXPECT_EQ(cluster->policy_count(), 1);
}

TEST(LoaderTest, DirectoryInSortedOrder) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddPath(Data("dir")).ok()) << Dump(loader.diagnostics());
  std::vector<std::string> names;
  for (const auto& ns : loader.objects().namespaces) names.push_back(ns.object.metadata().name());
  // Walk order: names sorted within each directory, subdirectories where they sort;
  // notes.txt is not read.
  EXPECT_THAT(names, ElementsAre("ns-0", "ns-a-x", "ns-a-z", "ns-ab-y", "ns-b"));
  EXPECT_EQ(loader.objects().namespaces[1].source.location.file, Data("dir/a/x.yml"));
}

TEST(LoaderTest, MissingPath) {
  ClusterLoader loader;
  absl::Status status = loader.AddPath(Data("no-such-file.yaml"));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("no-such-file.yaml"));
  ASSERT_THAT(loader.diagnostics(), SizeIs(1));
  EXPECT_EQ(loader.diagnostics()[0].location.file, Data("no-such-file.yaml"));
  EXPECT_FALSE(loader.Build().ok());
}

TEST(LoaderTest, EmptyAndNullDocumentsAreIgnored) {
  ClusterLoader loader;
  EXPECT_TRUE(loader.AddText("", "empty.yaml").ok());
  EXPECT_TRUE(loader.AddText("---\n---\n# only a comment\n...\n", "comments.yaml").ok());
  EXPECT_TRUE(loader.AddText("null\n---\n~\n", "nulls.yaml").ok());
  EXPECT_THAT(loader.diagnostics(), IsEmpty());
  EXPECT_TRUE(loader.Build().ok());
}

// --- Strictness of NetworkPolicy decoding.

TEST(LoaderTest, UnknownNetworkPolicyFields) {
  ClusterLoader loader;
  absl::Status status = loader.AddText(R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: typo
  namespace: default
  annotation: {}
spec:
  podSelecter: {}
  ingress:
  - from:
    - ipBlock:
        cidr: 10.0.0.0/8
        exept: []
status: {}
extra: 1
)",
                                       "typo.yaml");
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("unknown field \"spec.podSelecter\""));
  EXPECT_THAT(loader.diagnostics(),
              ElementsAre(IsError("typo.yaml", 6, "metadata.annotation",
                                  "unknown field \"metadata.annotation\""),
                          IsError("typo.yaml", 8, "spec.podSelecter",
                                  "unknown field \"spec.podSelecter\""),
                          IsError("typo.yaml", 13, "spec.ingress[0].from[0].ipBlock.exept",
                                  "unknown field \"spec.ingress[0].from[0].ipBlock.exept\""),
                          IsError("typo.yaml", 15, "extra", "unknown field \"extra\"")));
  EXPECT_EQ(loader.diagnostics()[0].kind, "NetworkPolicy");
  EXPECT_EQ(loader.diagnostics()[0].object, "default/typo");
  EXPECT_THAT(loader.objects().policies, IsEmpty());
  EXPECT_FALSE(loader.Build().ok());
}

TEST(LoaderTest, IgnoredMetadataFieldsOfNetworkPolicy) {
  ClusterLoader loader;
  EXPECT_TRUE(Added(loader, R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: p
  namespace: ns
  annotations: {a: b}
  uid: 123e4567-e89b-12d3-a456-426614174000
  resourceVersion: "7"
  generation: 2
  creationTimestamp: "2024-01-01T00:00:00Z"
  managedFields: [{manager: kubectl}]
  ownerReferences: []
  finalizers: [x]
  selfLink: /apis/networking.k8s.io/v1/namespaces/n/networkpolicies/p
spec:
  podSelector: {}
status: {whatever: true}
)", "p.yaml"));
  ASSERT_THAT(loader.objects().policies, SizeIs(1));
  EXPECT_EQ(loader.objects().policies[0].object.metadata().resourceversion(), "7");
}

TEST(LoaderTest, DuplicateKeys) {
  ClusterLoader loader;
  EXPECT_FALSE(loader.AddText(R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: dup
  namespace: ns
  labels: {a: "1", b: "2", a: "3"}
spec:
  podSelector: {}
  podSelector:
    matchLabels: {x: y}
)",
                              "dup.yaml")
                   .ok());
  EXPECT_THAT(loader.diagnostics(),
              ElementsAre(IsError("dup.yaml", 6, "metadata.labels.a",
                                  "duplicate field \"metadata.labels.a\""),
                          IsError("dup.yaml", 9, "spec.podSelector",
                                  "duplicate field \"spec.podSelector\"")));
  EXPECT_THAT(loader.objects().policies, IsEmpty());

  // YAML in JSON's braces too; "80" and 80 are the same key once YAML becomes JSON.
  ClusterLoader flow;
  EXPECT_FALSE(flow.AddText(R"(--- {"apiVersion": "v1", "kind": "Namespace",
"metadata": {"name": "n", "labels": {"80": "a", 80: "b"}}})",
                            "dup.yaml")
                   .ok());
  EXPECT_THAT(flow.diagnostics(), ElementsAre(IsError("dup.yaml", 2, "metadata.labels.80",
                                                      "duplicate field")));
  // The same text as JSON (it starts with `{`) is not JSON: a key must be quoted.
  ClusterLoader json;
  EXPECT_FALSE(json.AddText(R"({"apiVersion": "v1", "kind": "Namespace",
"metadata": {"name": "n", "labels": {"80": "a", 80: "b"}}})",
                            "dup.json")
                   .ok());
  EXPECT_THAT(json.diagnostics(),
              ElementsAre(IsError("dup.json", 2, "", "invalid JSON: an object key must be a string")));
}

TEST(LoaderTest, IntOrStringPort) {
  ClusterLoader loader;
  ASSERT_TRUE(Added(loader, PolicyText("ports", R"(  podSelector: {}
  ingress:
  - ports:
    - port: 80
    - port: "80"
    - port: '443'
    - port: http
    - port: 0x50
    - port: !!str 8080
    - port: null
    - port: +81
    - port: 1_000
)"), "ports.yaml"));
  ASSERT_THAT(loader.objects().policies, SizeIs(1));
  const auto& ports = loader.objects().policies[0].object.spec().ingress(0).ports();
  ASSERT_EQ(ports.size(), 9);
  auto is_int = [](const k8s::NetworkPolicyPort& p, int value) {
    return p.has_port() && p.port().type() == 0 && p.port().intval() == value;
  };
  auto is_string = [](const k8s::NetworkPolicyPort& p, const std::string& value) {
    return p.has_port() && p.port().type() == 1 && p.port().strval() == value;
  };
  EXPECT_TRUE(is_int(ports[0], 80));
  EXPECT_TRUE(is_string(ports[1], "80"));  // quoted: a string, as the API server reads it
  EXPECT_TRUE(is_string(ports[2], "443"));
  EXPECT_TRUE(is_string(ports[3], "http"));
  EXPECT_TRUE(is_int(ports[4], 80));  // YAML 1.1 hexadecimal
  EXPECT_TRUE(is_string(ports[5], "8080"));
  EXPECT_FALSE(ports[6].has_port());  // null: absent
  EXPECT_TRUE(is_int(ports[7], 81));
  EXPECT_TRUE(is_int(ports[8], 1000));
}

TEST(LoaderTest, PortTypeErrors) {
  struct Case {
    std::string value;
    std::string message;
  };
  const Case cases[] = {
      {"true", "must be an integer or a string, got a boolean"},
      {"[80]", "must be an integer or a string, got a list"},
      {"{number: 80}", "must be an integer or a string, got an object"},
      {"80.5", "must be an integer or a string, got a number"},
      {"2147483648", "out of the 32-bit integer range"},
      {"-2147483649", "out of the 32-bit integer range"},
      {"99999999999999999999999999", "out of the 32-bit integer range"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.value);
    Diagnostic d = OnlyError(absl::StrCat(PolicyText("p", R"(  podSelector: {}
  ingress:
  - ports:
    - protocol: TCP
    - port: )"),
                                          c.value, "\n"));
    EXPECT_THAT(d, IsError("in.yaml", 9, "spec.ingress[0].ports[1].port", c.message));
    EXPECT_EQ(d.kind, "NetworkPolicy");
    EXPECT_EQ(d.object, "ns/p");
  }
  // The largest int32 is fine; endPort must be an integer, not a string.
  ClusterLoader loader;
  EXPECT_TRUE(Added(loader, PolicyText("p", R"(  podSelector: {}
  egress:
  - ports: [{port: 2147483647}, {port: -2147483648}]
)"), "edge.yaml"));
  EXPECT_THAT(OnlyError(PolicyText("p", R"(  egress:
  - ports:
    - port: 80
      endPort: "90"
)")),
              IsError("in.yaml", 8, "spec.egress[0].ports[0].endPort",
                      "must be an integer, got a string"));
}

TEST(LoaderTest, NullMeansAbsentAndEmptyObjectMeansPresent) {
  ClusterLoader loader;
  ASSERT_TRUE(Added(loader, PolicyText("absent", R"(  podSelector: null
  ingress: null
  egress: ~
  policyTypes:
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: present, namespace: ns}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
      namespaceSelector: null
    - namespaceSelector: {}
      ipBlock: ~
  egress: []
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-spec, namespace: ns}
spec: null
)"), "null.yaml"));
  ASSERT_THAT(loader.objects().policies, SizeIs(3));
  const k8s::NetworkPolicy& absent = loader.objects().policies[0].object;
  EXPECT_TRUE(absent.has_spec());
  EXPECT_FALSE(absent.spec().has_podselector());
  EXPECT_EQ(absent.spec().ingress_size(), 0);
  EXPECT_EQ(absent.spec().egress_size(), 0);
  EXPECT_EQ(absent.spec().policytypes_size(), 0);

  const k8s::NetworkPolicy& present = loader.objects().policies[1].object;
  EXPECT_TRUE(present.spec().has_podselector());
  ASSERT_EQ(present.spec().ingress_size(), 1);
  ASSERT_EQ(present.spec().ingress(0).from_size(), 2);
  const k8s::NetworkPolicyPeer& first = present.spec().ingress(0).from(0);
  EXPECT_TRUE(first.has_podselector());
  EXPECT_FALSE(first.has_namespaceselector());
  const k8s::NetworkPolicyPeer& second = present.spec().ingress(0).from(1);
  EXPECT_TRUE(second.has_namespaceselector());
  EXPECT_FALSE(second.has_podselector());
  EXPECT_FALSE(second.has_ipblock());

  EXPECT_FALSE(loader.objects().policies[2].object.has_spec());
  EXPECT_TRUE(loader.objects().policies[2].object.has_metadata());
}

TEST(LoaderTest, LabelValuesMustBeStrings) {
  // kubectl: "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels
  // of type string". YAML 1.1 booleans (yes, on) are booleans too.
  EXPECT_THAT(OnlyError(R"(apiVersion: v1
kind: Pod
metadata:
  name: p
  labels:
    app: web
    version: 2
)"),
              AllOf(IsError("in.yaml", 7, "metadata.labels",
                            "the value of \"version\" must be a string, got an integer"),
                    Field(&Diagnostic::message, HasSubstr("quote it: \"2\"")),
                    Field(&Diagnostic::kind, "Pod"), Field(&Diagnostic::object, "default/p")));
  EXPECT_THAT(OnlyError(R"(apiVersion: v1
kind: Namespace
metadata:
  name: ns
  labels: {enabled: yes}
)"),
              AllOf(IsError("in.yaml", 5, "metadata.labels",
                            "the value of \"enabled\" must be a string, got a boolean"),
                    Field(&Diagnostic::object, "ns")));
  EXPECT_THAT(OnlyError(PolicyText("p", R"(  podSelector:
    matchLabels:
      tier: 1.5
)")),
              IsError("in.yaml", 7, "spec.podSelector.matchLabels",
                      "the value of \"tier\" must be a string, got a number"));

  // go-yaml v2 (YAML 1.1) also reads y and n as booleans: a namespace named n must be quoted.
  EXPECT_THAT(OnlyError("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n"),
              IsError("in.yaml", 4, "metadata.name",
                      "must be a string, got a boolean (quote it: \"n\")"));

  ClusterLoader loader;
  ASSERT_TRUE(Added(loader, R"(apiVersion: v1
kind: Namespace
metadata:
  name: ns
  labels:
    version: "2"
    enabled: 'yes'
    empty:
    text: plain words
)", "ok.yaml"));
  EXPECT_THAT(loader.objects().namespaces[0].object.metadata().labels(),
              UnorderedElementsAre(Pair("version", "2"), Pair("enabled", "yes"),
                                   Pair("empty", ""), Pair("text", "plain words")));
}

TEST(LoaderTest, OtherTypeErrors) {
  EXPECT_THAT(OnlyError(R"(apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
spec:
  hostNetwork: "true"
)"),
              IsError("in.yaml", 5, "spec.hostNetwork", "must be a boolean"));
  EXPECT_THAT(OnlyError(R"(apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
spec:
  containers:
  - name: c
    ports:
    - containerPort: "80"
)"),
              IsError("in.yaml", 8, "spec.containers[0].ports[0].containerPort",
                      "must be an integer, got a string"));
  EXPECT_THAT(OnlyError(PolicyText("p", R"(  podSelector: {}
  ingress:
  - from:
    - {}
    - ipBlock:
        cidr: [10.0.0.0/8]
)")),
              IsError("in.yaml", 10, "spec.ingress[0].from[1].ipBlock.cidr",
                      "must be a string, got a list"));
  EXPECT_THAT(OnlyError(PolicyText("p", R"(  policyTypes: Ingress
)")),
              IsError("in.yaml", 5, "spec.policyTypes", "must be a list, got a string"));
  EXPECT_THAT(OnlyError(R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: 7, namespace: ns}
)"),
              IsError("in.yaml", 3, "metadata.name", "must be a string, got an integer"));
  EXPECT_THAT(OnlyError(PolicyText("p", R"(  podSelector:
    matchExpressions:
    - key: tier
      operator: In
      values: [web, 3]
)")),
              IsError("in.yaml", 9,
                      "spec.podSelector.matchExpressions[0].values[1]",
                      "must be a string, got an integer"));
}

TEST(LoaderTest, PodsIgnoreFieldsNpDoesNotRead) {
  ClusterLoader loader;
  ASSERT_TRUE(Added(loader, R"(apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {count: 3}
  somethingNew: [1, 2]
spec:
  restartPolicy: 5
  containers:
  - name: c
    resources: {limits: {cpu: 1}}
    ports:
    - containerPort: 80
      appProtocol: http2
  hostNetwork: yes
status:
  phase: Running
  conditions: 12
futureField: {a: b}
)", "pod.yaml"));
  ASSERT_THAT(loader.objects().pods, SizeIs(1));
  const k8s::Pod& pod = loader.objects().pods[0].object;
  EXPECT_TRUE(pod.spec().hostnetwork());  // YAML 1.1 "yes"
  EXPECT_EQ(pod.spec().containers(0).ports(0).containerport(), 80);
  EXPECT_FALSE(pod.metadata().has_namespace_());  // Cluster defaults it
}

TEST(LoaderTest, KindsAndApiVersions) {
  EXPECT_THAT(OnlyError(R"(apiVersion: extensions/v1beta1
kind: NetworkPolicy
metadata: {name: old, namespace: ns}
)"),
              AllOf(IsError("in.yaml", 1, "apiVersion",
                            "apiVersion \"extensions/v1beta1\" is not supported for "
                            "NetworkPolicy; use networking.k8s.io/v1"),
                    Field(&Diagnostic::object, "ns/old")));
  EXPECT_THAT(OnlyError("kind: Pod\nmetadata: {name: p}\n"),
              IsError("in.yaml", 1, "apiVersion", "apiVersion is missing"));
  EXPECT_THAT(OnlyError("apiVersion: v2\nkind: Namespace\nmetadata: {name: n}\n"),
              IsError("in.yaml", 1, "apiVersion", "use v1"));
  EXPECT_THAT(OnlyError("apiVersion: v1\nmetadata:\n  name: kindless\n"),
              AllOf(IsError("in.yaml", 1, "kind", "Object 'Kind' is missing"),
                    Field(&Diagnostic::object, "kindless")));
  EXPECT_THAT(OnlyError("apiVersion: v1\nkind: [Pod]\n"),
              IsError("in.yaml", 2, "kind", "must be a string, got a list"));
  EXPECT_THAT(OnlyError("apiVersion: v1\nkind: Pod\nkind: Namespace\n"),
              IsError("in.yaml", 3, "kind", "duplicate field \"kind\""));

  // Unknown kinds are counted; a known kind in the wrong case gets a warning.
  ClusterLoader loader;
  EXPECT_TRUE(loader.AddText(R"(apiVersion: v1
kind: ConfigMap
metadata: {name: d}
---
apiVersion: networking.k8s.io/v1
kind: networkpolicy
metadata: {name: lower}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: e}
)",
                             "kinds.yaml")
                  .ok());
  EXPECT_THAT(loader.skipped_kinds(),
              UnorderedElementsAre(Pair("ConfigMap", 2), Pair("networkpolicy", 1)));
  ASSERT_THAT(loader.diagnostics(), SizeIs(1));
  EXPECT_EQ(loader.diagnostics()[0].severity, Diagnostic::Severity::kWarning);
  EXPECT_EQ(loader.diagnostics()[0].location.line, 6);
  EXPECT_THAT(loader.diagnostics()[0].message, HasSubstr("did you mean NetworkPolicy?"));
  EXPECT_TRUE(loader.Build().ok());
}

TEST(LoaderTest, ListErrors) {
  ClusterLoader loader;
  EXPECT_FALSE(loader.AddText(R"(apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: good}
- just text
- apiVersion: v1
  metadata: {name: no-kind}
- apiVersion: v1
  kind: Namespace
  metadata: {name: also-good}
)",
                              "list.yaml")
                   .ok());
  EXPECT_THAT(Errors(loader.diagnostics()),
              ElementsAre(IsError("list.yaml", 7, "items[1]", "must be an object, got a string"),
                          IsError("list.yaml", 8, "kind", "Object 'Kind' is missing")));
  // Objects read fine stay.
  ASSERT_THAT(loader.objects().namespaces, SizeIs(2));
  EXPECT_EQ(loader.objects().namespaces[1].object.metadata().name(), "also-good");
  EXPECT_THAT(OnlyError("apiVersion: v1\nkind: List\nitems: {a: b}\n"),
              IsError("in.yaml", 3, "items", "must be a list, got an object"));
}

TEST(LoaderTest, AnchorsAliasesAndMergeKeys) {
  ClusterLoader loader;
  ASSERT_TRUE(Added(loader, PolicyText("anchors", R"(  podSelector: &web
    matchLabels: {app: web}
  ingress:
  - from:
    - podSelector: *web
    ports:
    - &tcp80
      protocol: TCP
      port: 80
    - <<: *tcp80
      port: 81
)"), "anchors.yaml"));
  const k8s::NetworkPolicy& p = loader.objects().policies[0].object;
  EXPECT_THAT(p.spec().ingress(0).from(0).podselector().matchlabels(),
              UnorderedElementsAre(Pair("app", "web")));
  ASSERT_EQ(p.spec().ingress(0).ports_size(), 2);
  EXPECT_EQ(p.spec().ingress(0).ports(1).protocol(), "TCP");
  EXPECT_EQ(p.spec().ingress(0).ports(1).port().intval(), 81);
}

TEST(LoaderTest, ErrorsKeepEarlierDocuments) {
  ClusterLoader loader;
  absl::Status status = loader.AddText(R"(apiVersion: v1
kind: Namespace
metadata: {name: first}
---
apiVersion: v1
kind: Namespace
metadata: {name: "second
)",
                                       "partial.yaml");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("partial.yaml:7:"));
  ASSERT_THAT(loader.objects().namespaces, SizeIs(1));
  EXPECT_EQ(loader.objects().namespaces[0].object.metadata().name(), "first");
  // Build fails on read errors, and reports them with the validation findings.
  EXPECT_TRUE(loader.AddText("apiVersion: v1\nkind: Namespace\nmetadata: {name: third}\n",
                             "more.yaml")
                  .ok());
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
  EXPECT_EQ(cluster.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(cluster.status().message()), HasSubstr("partial.yaml:7:"));
  EXPECT_THAT(diagnostics, Contains(IsError("partial.yaml", 7, "", "not closed")));
}

// Validation runs after reading; its findings point at the lines the loader recorded.
TEST(LoaderTest, ValidationErrorsGetFieldLines) {
  ClusterLoader loader;
  ASSERT_TRUE(Added(loader, PolicyText("backwards", R"(  podSelector: {}
  ingress:
  - ports:
    - {protocol: TCP, port: 90, endPort: 80}
)"), "v.yaml"));
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
  EXPECT_FALSE(cluster.ok());
  // endPort below port: whatever field validation names, everything about that port is on
  // line 8.
  std::vector<Diagnostic> errors = Errors(diagnostics);
  ASSERT_THAT(errors, SizeIs(1)) << Dump(diagnostics);
  EXPECT_EQ(errors[0].location.file, "v.yaml");
  EXPECT_EQ(errors[0].location.line, 8) << errors[0].ToString();
  EXPECT_THAT(errors[0].field, HasSubstr("spec.ingress[0].ports[0]"));
}

TEST(LoaderTest, ParseChange) {
  absl::StatusOr<Change> change = ParseChange(PolicyText("p", R"(  podSelector: {}
)"),
                                              "change.yaml");
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_EQ(change->op, Change::Op::kUpsert);
  ASSERT_TRUE(std::holds_alternative<k8s::NetworkPolicy>(change->object));
  EXPECT_EQ(std::get<k8s::NetworkPolicy>(change->object).metadata().name(), "p");

  change = ParseChange("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\n", "pod");
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_TRUE(std::holds_alternative<k8s::Pod>(change->object));

  change = ParseChange("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {hostNetwork: 1}\n",
                       "bad.yaml");
  EXPECT_EQ(change.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(change.status().message()),
              HasSubstr("bad.yaml:4: Pod default/a: spec.hostNetwork: must be a boolean"));

  change = ParseChange(R"(apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
)",
                       "two.yaml");
  EXPECT_THAT(std::string(change.status().message()), HasSubstr("found 2"));
  change = ParseChange("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n", "svc.yaml");
  EXPECT_THAT(std::string(change.status().message()), HasSubstr("a Service cannot be a change"));
  change = ParseChange("", "empty.yaml");
  EXPECT_FALSE(change.ok());
}

// --- Malformed inputs (testdata/loader/malformed/, also the fuzzer's seeds). Each must give
// an error with its file and line, and never crash.

struct MalformedCase {
  const char* file;
  int line;             // the line the input puts the problem on
  const char* message;  // part of the message
};

class MalformedTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedTest, ErrorWithLine) {
  const MalformedCase& c = GetParam();
  const std::string path = Data(absl::StrCat("malformed/", c.file));
  ClusterLoader loader;
  absl::Status status = loader.AddPath(path);
  EXPECT_FALSE(status.ok());
  std::vector<Diagnostic> errors = Errors(loader.diagnostics());
  ASSERT_THAT(errors, SizeIs(1)) << Dump(loader.diagnostics());
  EXPECT_EQ(errors[0].location.file, path);
  EXPECT_EQ(errors[0].location.line, c.line) << errors[0].ToString();
  EXPECT_THAT(errors[0].message, HasSubstr(c.message)) << errors[0].ToString();
  EXPECT_FALSE(loader.Build().ok());
}

INSTANTIATE_TEST_SUITE_P(
    Corpus, MalformedTest,
    ::testing::Values(
        MalformedCase{"unterminated_double_quote.yaml", 4, "quoted string is not closed"},
        MalformedCase{"unterminated_single_quote.yaml", 8, "quoted string is not closed"},
        MalformedCase{"tab_indentation.yaml", 4, "tabs are not allowed"},
        MalformedCase{"nested_brackets.yaml", 1, "nested more than 128 levels"},
        MalformedCase{"nested_braces.yaml", 4, "nested more than 128 levels"},
        // Line n opens the n-th nested collection (the root mapping is the first).
        MalformedCase{"nested_block.yaml", 128, "nested more than 128 levels"},
        MalformedCase{"nul_byte.yaml", 3, "control character 0x00"},
        MalformedCase{"non_utf8.yaml", 5, "invalid UTF-8 (byte 0xFC"},
        MalformedCase{"truncated_utf8.yaml", 2, "invalid UTF-8 (byte 0xE2"},
        MalformedCase{"utf16.yaml", 1, "UTF-16"},
        MalformedCase{"scalar_document.yaml", 6, "must be an object with apiVersion and kind, "
                                                 "got a string"},
        MalformedCase{"list_document.yaml", 1, "got a list"},
        MalformedCase{"list_for_map.yaml", 7, "must be an object, got a list"},
        MalformedCase{"map_for_list.yaml", 8, "must be a list, got an object"},
        MalformedCase{"huge_integer.yaml", 10, "out of the 32-bit integer range"},
        MalformedCase{"huge_int32.yaml", 9, "must be an integer from -2147483648 to 2147483647"},
        MalformedCase{"unclosed_flow.yaml", 3, "never closed"},
        MalformedCase{"truncated.json", 1, "never closed"},
        MalformedCase{"alias_cycle.yaml", 5, "refers to the node that contains it"},
        // Line 6+i anchors level i (10^i "lol"s); counting the nodes that aliases repeat,
        // level 5's aliases pass 200000 nodes.
        MalformedCase{"alias_bomb.yaml", 11, "aliases repeat more than 200000 nodes"},
        MalformedCase{"undefined_alias.yaml", 5, "anchor is not defined"},
        MalformedCase{"bad_indentation.yaml", 5, ""},
        MalformedCase{"missing_kind.yaml", 1, "Object 'Kind' is missing"},
        // yaml-cpp 0.7 loops forever on a stray comma after a top-level flow collection.
        MalformedCase{"trailing_comma.json", 1, "parser cannot go on"},
        // JSON ends at its first problem, as kubectl's JSON decoder does.
        MalformedCase{"fuzz_parser_loop.json", 3, "invalid JSON: `de-1\"` is not a JSON value"},
        MalformedCase{"merge_scalar.yaml", 6, "map merge requires map or sequence of maps"},
        MalformedCase{"json_number_out_of_range.json", 3, "the number 1e400 is out of range"},
        MalformedCase{"json_unquoted_word.json", 2, "invalid JSON: `yes` is not a JSON value"}),
    [](const ::testing::TestParamInfo<MalformedCase>& info) {
      std::string name = info.param.file;
      std::replace_if(name.begin(), name.end(), [](char c) { return !std::isalnum(c); }, '_');
      return name;
    });

TEST(MalformedTest, BinaryGarbage) {
  ClusterLoader loader;
  EXPECT_FALSE(loader.AddPath(Data("malformed/binary_garbage.yaml")).ok());
  std::vector<Diagnostic> errors = Errors(loader.diagnostics());
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_GE(errors[0].location.line, 1);
}

// Every file of the corpus, and every prefix of the small ones, loads without crashing.
TEST(MalformedTest, WholeDirectoryAndTruncations) {
  ClusterLoader loader;
  EXPECT_FALSE(loader.AddPath(Data("malformed")).ok());
  for (const Diagnostic& d : loader.diagnostics()) {
    if (d.is_error()) {
      EXPECT_GT(d.location.line, 0) << d.ToString();
    }
  }
  for (const char* file : {"../policy.yaml", "../list.json", "../multi.yaml"}) {
    std::string text;
    {
      ClusterLoader whole;
      ASSERT_TRUE(whole.AddPath(Data(absl::StrCat("malformed/", file))).ok());
    }
    FILE* f = std::fopen(Data(absl::StrCat("malformed/", file)).c_str(), "rb");
    ASSERT_NE(f, nullptr);
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) text.append(buffer, n);
    std::fclose(f);
    for (size_t cut = 0; cut <= text.size(); ++cut) {
      ClusterLoader prefix;
      prefix.AddText(absl::string_view(text).substr(0, cut), "prefix").IgnoreError();
      for (const Diagnostic& d : prefix.diagnostics()) {
        if (d.is_error()) {
          EXPECT_GT(d.location.line, 0) << cut << ": " << d.ToString();
        }
      }
    }
  }
}

// --- Hostile input: memory bounded by the input's size, not by products of its parts.

// A long name times many errors: every finding names the object, and used to copy the name.
TEST(HostileInputTest, FindingsShareTheObjectNameAndStayBounded) {
  const std::string name(100000, 'a');
  std::vector<std::string> items(5000, "{}");
  const std::string text = absl::StrCat(
      "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: ", name,
      "\n  namespace: x\nspec:\n  podSelector:\n    matchExpressions: [",
      absl::StrJoin(items, ","), "]\n");
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddText(text, "long.yaml").ok()) << Dump(loader.diagnostics());
  std::vector<Diagnostic> diagnostics;
  EXPECT_FALSE(loader.Build(&diagnostics).ok());
  // Upstream's findings: the name is longer than 253 characters (it is all 'a': one message),
  // and each empty requirement has an invalid operator and a key that is empty and does not
  // match the qualified-name pattern (ValidateLabelSelectorRequirement): 1 + 5000 * 3.
  EXPECT_EQ(CountErrors(diagnostics), 15001);
  ASSERT_EQ(diagnostics.size(), kMaxDiagnostics + 1);
  EXPECT_TRUE(diagnostics.back().is_omission());
  EXPECT_EQ(diagnostics.back().omitted_errors, 15001 - static_cast<int64_t>(kMaxDiagnostics));
  EXPECT_THAT(diagnostics.back().ToString(), HasSubstr("... and 14001 more errors not shown"));
  // One copy of the name for all of them, and a line of output that is not 100 KB long.
  EXPECT_EQ(diagnostics[1].object.str().data(), diagnostics[999].object.str().data());
  EXPECT_LT(diagnostics[999].ToString().size(), 1000u);
  EXPECT_THAT(diagnostics[999].ToString(), HasSubstr("(100002 bytes)"));
}

// 16 aliases of a 1 MiB scalar: the node budget sees 16 nodes, the bytes are what counts.
TEST(HostileInputTest, AliasesAreBoundedInBytes) {
  const std::string big(1 << 20, 'x');
  auto text = [&](int aliases) {
    std::vector<std::string> refs(aliases, "*big");
    return absl::StrCat("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns\n  annotations:\n",
                        "    a: &big ", big, "\n    b: [", absl::StrJoin(refs, ", "), "]\n");
  };
  ClusterLoader few;
  EXPECT_TRUE(few.AddText(text(8), "few.yaml").ok()) << Dump(few.diagnostics());
  ClusterLoader many;
  EXPECT_FALSE(many.AddText(text(20), "many.yaml").ok());
  EXPECT_THAT(Errors(many.diagnostics()),
              ElementsAre(IsError("many.yaml", 7, "", "aliases repeat more than 200000 nodes or "
                                                      "16 MiB of text in this input")));
}

// Small documents must not each get a fresh budget: the loader has one.
TEST(HostileInputTest, AliasBudgetIsSharedByEveryText) {
  std::vector<std::string> items(100, "x");
  std::vector<std::string> refs(10, "*l");
  const std::string text =
      absl::StrCat("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns\n  annotations:\n",
                   "    a: &l [", absl::StrJoin(items, ", "), "]\n    b: [",
                   absl::StrJoin(refs, ", "), "]\n");
  ClusterLoader loader;
  int accepted = 0;
  // Each text's aliases repeat 10 * 101 nodes: 198 texts fit in 200000 nodes, the 199th not.
  for (int i = 0; i < 300 && loader.AddText(text, absl::StrCat("t", i, ".yaml")).ok(); ++i) {
    ++accepted;
  }
  EXPECT_EQ(accepted, 198);
}

// --- Loader fidelity: what go-yaml v2 (through sigs.k8s.io/yaml) and kubectl do.

// go-yaml v2's decoder.merge: failWantMap() unless the value is a mapping or a list of
// mappings; the whole document fails, wherever the merge is.
TEST(LoaderFidelityTest, MergeKeyNeedsAMapping) {
  const std::string cases[] = {
      "  labels:\n    <<: 5\n",
      "  labels:\n    <<: [{a: b}, 5]\n",
      "  labels:\n    <<:\n",
      "  annotations:\n    <<: ~\n",  // a field np does not read: the document still fails
      "  x: &s text\n  labels:\n    <<: *s\n",
  };
  for (const std::string& labels : cases) {
    SCOPED_TRACE(labels);
    ClusterLoader loader;
    EXPECT_FALSE(
        loader.AddText(absl::StrCat("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns\n",
                                    labels),
                       "merge.yaml")
            .ok());
    EXPECT_THAT(Errors(loader.diagnostics()),
                ElementsAre(Field(&Diagnostic::message,
                                  "map merge requires map or sequence of maps as the value")));
    EXPECT_THAT(loader.objects().namespaces, IsEmpty());
  }
  ClusterLoader good;
  ASSERT_TRUE(good.AddText("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns\n"
                           "  x: &m {a: b}\n  labels:\n    <<: [*m, {c: d}]\n",
                           "merge.yaml")
                  .ok())
      << Dump(good.diagnostics());
  EXPECT_THAT(good.objects().namespaces[0].object.metadata().labels(),
              UnorderedElementsAre(Pair("a", "b"), Pair("c", "d")));
}

// kubectl reads a text that starts with `{` as JSON (YAMLOrJSONDecoder), and Kubernetes
// decodes JSON numbers into int64 or float64 (apimachinery util/json): 1e400 fits neither.
// The same number in YAML is a string to go-yaml v2 (strconv.ParseFloat fails), so a port
// named "1e400" there.
TEST(LoaderFidelityTest, NumbersInJsonAsGoReadsThem) {
  auto policy_json = [](absl::string_view port) {
    return absl::StrCat(R"({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
"metadata": {"name": "p", "namespace": "x"},
"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": )",
                        port, "}]}]}}\n");
  };
  ClusterLoader json;
  EXPECT_FALSE(json.AddText(policy_json("1e400"), "p.json").ok());
  EXPECT_THAT(Errors(json.diagnostics()),
              ElementsAre(IsError("p.json", 3, "spec.ingress[0].ports[0].port", "out of range")));
  ClusterLoader big;
  EXPECT_FALSE(big.AddText(policy_json("2147483648"), "p.json").ok());
  EXPECT_THAT(Errors(big.diagnostics()),
              ElementsAre(IsError("p.json", 3, "spec.ingress[0].ports[0].port",
                                  "out of the 32-bit integer range")));
  ClusterLoader word;
  EXPECT_FALSE(word.AddText(policy_json("http"), "p.json").ok());
  EXPECT_THAT(Errors(word.diagnostics()),
              ElementsAre(IsError("p.json", 3, "", "invalid JSON: `http` is not a JSON value")));
  ClusterLoader whole;  // 80.0 is float64 80, which Go prints back as 80
  ASSERT_TRUE(whole.AddText(policy_json("80.0"), "p.json").ok()) << Dump(whole.diagnostics());
  EXPECT_EQ(whole.objects().policies[0].object.spec().ingress(0).ports(0).port().intval(), 80);

  ClusterLoader yaml;
  ASSERT_TRUE(yaml.AddText("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                           "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n"
                           "  ingress:\n  - ports:\n    - port: 1e400\n",
                           "p.yaml")
                  .ok())
      << Dump(yaml.diagnostics());
  const k8s::IntOrString& port = yaml.objects().policies[0].object.spec().ingress(0).ports(0).port();
  EXPECT_EQ(port.type(), 1);
  EXPECT_EQ(port.strval(), "1e400");
}

// go-yaml v2 keeps no tag on a mapping or a sequence (its parser's mapping() and sequence()
// do not copy the event's tag), so `!!null {...}` is a mapping; on a scalar, resolve() forces
// the tags it knows and leaves the text of any other (!!map on a scalar is a string), and
// !!binary decodes base64.
TEST(LoaderFidelityTest, TagsAsGoYamlV2ReadsThem) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddText("apiVersion: v1\nkind: Namespace\nmetadata: !!null\n"
                             "  name: !!map n\n  labels: !!seq {a: !!binary YWJj}\n",
                             "tags.yaml")
                  .ok())
      << Dump(loader.diagnostics());
  ASSERT_THAT(loader.objects().namespaces, SizeIs(1));
  EXPECT_EQ(loader.objects().namespaces[0].object.metadata().name(), "n");
  EXPECT_THAT(loader.objects().namespaces[0].object.metadata().labels(),
              UnorderedElementsAre(Pair("a", "abc")));
  EXPECT_THAT(OnlyError("apiVersion: v1\nkind: Namespace\nmetadata: {name: !!int abc}\n").message,
              HasSubstr("cannot decode !!str `abc` as a !!int"));
  EXPECT_THAT(OnlyError("apiVersion: v1\nkind: Namespace\nmetadata: {name: !!binary \"%%\"}\n")
                  .message,
              HasSubstr("!!binary value contains invalid base64 data"));
}

// --- Directories: read as kubectl -R reads them, and say what is skipped.

class DirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/dir-", ::testing::UnitTest::GetInstance()
                                                                   ->current_test_info()
                                                                   ->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ + "/sub");
    std::filesystem::create_directories(dir_ + "/elsewhere");
  }
  void Write(const std::string& name, const std::string& text) {
    FILE* f = std::fopen((dir_ + "/" + name).c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  static std::string Namespace(absl::string_view name) {
    return absl::StrCat("apiVersion: v1\nkind: Namespace\nmetadata: {name: ", name, "}\n");
  }
  std::string dir_;
};

TEST_F(DirectoryTest, ReportsEverythingItSkips) {
  namespace fs = std::filesystem;
  Write("a.yaml", Namespace("a"));
  Write("sub/b.json", R"({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}})");
  Write("C.YAML", Namespace("c"));
  Write("notes.txt", "not YAML");
  Write("elsewhere/d.yaml", Namespace("d"));
  fs::create_symlink("loop.yaml", dir_ + "/loop.yaml");
  fs::create_symlink("no-such-file", dir_ + "/dangling.yaml");
  fs::create_symlink("no-such-file", dir_ + "/dangling.txt");
  fs::create_symlink("elsewhere", dir_ + "/linked-dir");
  fs::create_symlink("a.yaml", dir_ + "/linked-file.yml");
  ASSERT_EQ(mkfifo((dir_ + "/pipe.yaml").c_str(), 0600), 0);

  ClusterLoader loader;
  absl::Status status = loader.AddPath(dir_);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  std::vector<std::string> names;
  for (const auto& ns : loader.objects().namespaces) names.push_back(ns.object.metadata().name());
  // elsewhere/ is a real directory below: read. The link to a file is read as the file.
  EXPECT_THAT(names, ElementsAre("a", "d", "a", "b"));
  auto finding = [&](Diagnostic::Severity severity, absl::string_view file,
                     absl::string_view text) {
    return AllOf(Field(&Diagnostic::severity, severity),
                 Field(&Diagnostic::location, Field(&SourceLocation::file, dir_ + "/" +
                                                                          std::string(file))),
                 Field(&Diagnostic::message, HasSubstr(std::string(text))));
  };
  using S = Diagnostic::Severity;
  EXPECT_THAT(
      loader.diagnostics(),
      UnorderedElementsAre(
          // kubectl skips C.YAML too (it compares extensions case-sensitively): say so.
          finding(S::kWarning, "C.YAML", "kubectl reads only the lowercase extensions"),
          // kubectl would fail to open these two.
          finding(S::kError, "dangling.yaml", "a dangling symbolic link"),
          finding(S::kError, "loop.yaml", "a symbolic link loop"),
          finding(S::kWarning, "dangling.txt", "a dangling symbolic link"),
          finding(S::kWarning, "linked-dir", "a symbolic link to a directory (not followed"),
          finding(S::kWarning, "pipe.yaml", "not a regular file"),
          AllOf(Field(&Diagnostic::location, Field(&SourceLocation::file, dir_)),
                Field(&Diagnostic::message,
                      "skipped 1 file whose name does not end in .yaml, .yml or .json "
                      "(notes.txt)"))));
}

// --- Names and other bytes from the input never reach the output raw.

TEST(HostileInputTest, NamesCannotForgeALine) {
  ClusterLoader loader;
  // YAML's double-quoted escapes put any byte in a name: ESC, CR, LF, NUL.
  ASSERT_TRUE(loader.AddText("apiVersion: v1\nkind: Pod\nmetadata:\n"
                             "  name: \"a\\e[2J\\r\\nvalid: 1 NetworkPolicies\\0\"\n"
                             "  namespace: x\n",
                             "pod.yaml")
                  .ok());
  std::vector<Diagnostic> diagnostics;
  EXPECT_FALSE(loader.Build(&diagnostics).ok());
  ASSERT_THAT(diagnostics, Not(IsEmpty()));
  for (const Diagnostic& d : diagnostics) {
    const std::string line = d.ToString();
    EXPECT_EQ(line.find_first_of(std::string("\x1b\r\n\0", 4)), std::string::npos) << line;
    EXPECT_THAT(line, HasSubstr(R"(Pod "x/a\x1b[2J\r\nvalid: 1 NetworkPolicies\x00": )"));
  }
}

}  // namespace
}  // namespace np
