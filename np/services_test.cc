// Tests for reading Services (loader, validation) and np/services.h. Expected errors are the
// API server's (ValidateService, validateServicePort); expected endpoints follow the endpoint
// controller's documented rules (selector over the Service's namespace, named targetPort
// looked up per pod for the port's protocol); expected verdicts are worked out by hand from
// the NetworkPolicy API for the resolved target ports.
#include "np/services.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "np/evaluator.h"
#include "np/loader.h"

namespace np {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

absl::StatusOr<Cluster> Load(const std::string& text,
                             std::vector<Diagnostic>* diagnostics = nullptr) {
  ClusterLoader loader;
  (void)loader.AddText(text, "in.yaml");
  return loader.Build(diagnostics);
}

std::string Pod(absl::string_view ns, absl::string_view name, absl::string_view labels,
                absl::string_view ip, absl::string_view ports) {
  return absl::StrCat("apiVersion: v1\nkind: Pod\nmetadata: {name: ", name, ", namespace: ", ns,
                      ", labels: ", labels, "}\nspec:\n  containers:\n    - name: c\n      ports: ",
                      ports, "\nstatus: {podIP: ", ip, "}\n---\n");
}

// Two web pods define the named port "http" with different numbers; a third lacks it.
const std::string kPods =
    Pod("ns", "web-a", "{app: web}", "10.0.0.1", "[{name: http, containerPort: 8080}]") +
    Pod("ns", "web-b", "{app: web}", "10.0.0.2", "[{name: http, containerPort: 8081}]") +
    Pod("ns", "web-c", "{app: web}", "10.0.0.3", "[{name: metrics, containerPort: 9090}]") +
    Pod("ns", "client", "{app: client}", "10.0.0.9", "[]") +
    Pod("other", "web-z", "{app: web}", "10.0.1.1", "[{name: http, containerPort: 8080}]");

const std::string kServices = R"(apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: http}
    - {name: raw, port: 81, targetPort: 9000}
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: ns}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: ns}
spec:
  selector: {app: none}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: alias, namespace: ns}
spec:
  type: ExternalName
  externalName: example.com
---
# In a namespace nothing else mentions: it must not be implied.
apiVersion: v1
kind: Service
metadata: {name: lonely, namespace: elsewhere}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
)";

// Only TCP 8080 reaches the web pods.
const std::string kPolicy = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-8080, namespace: ns}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - ports: [{port: 8080}]
---
)";

std::vector<std::string> Names(const Cluster& cluster, const ServiceTarget& target) {
  std::vector<std::string> out;
  for (const ServiceEndpoint& e : target.endpoints) {
    out.push_back(absl::StrCat(cluster.pod(e.pod_index).Key(), ":", ProtocolName(e.protocol),
                               "/", e.port));
  }
  for (const NotAnEndpoint& n : target.not_endpoints) {
    out.push_back(absl::StrCat(cluster.pod(n.pod_index).Key(), " not: ", n.reason));
  }
  return out;
}

TEST(ServicesTest, LoaderReadsServicesWithDefaults) {
  std::vector<Diagnostic> diagnostics;
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddText(kPods + kServices, "in.yaml").ok());
  EXPECT_THAT(loader.skipped_kinds(), IsEmpty());
  absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_EQ(cluster->service_count(), 5);
  std::optional<int> web = cluster->FindService("ns", "web");
  ASSERT_TRUE(web);
  const k8s::Service& s = cluster->service(*web);
  EXPECT_EQ(s.spec().type(), "ClusterIP");
  EXPECT_EQ(s.spec().ports(0).protocol(), "TCP");
  EXPECT_EQ(s.spec().ports(0).targetport().strval(), "http");
  // An absent targetPort is the port (SetDefaults_ServicePort).
  EXPECT_EQ(s.spec().ports(2).targetport().type(), 0);
  EXPECT_EQ(s.spec().ports(2).targetport().intval(), 53);
  EXPECT_EQ(s.spec().ports(2).protocol(), "UDP");
  // Services imply no namespace: "elsewhere" is not one.
  EXPECT_FALSE(cluster->FindNamespace("elsewhere"));
  EXPECT_FALSE(cluster->FindService("ns", "absent"));
}

TEST(ServicesTest, ServicesChangeNoVerdict) {
  absl::StatusOr<Cluster> without = Load(kPods + kPolicy);
  absl::StatusOr<Cluster> with = Load(kPods + kPolicy + kServices);
  ASSERT_TRUE(without.ok()) << without.status();
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ(without->namespace_count(), with->namespace_count());
  ASSERT_EQ(without->pod_count(), with->pod_count());
  for (auto kind : {ClusterEvaluator::Kind::kEngine, ClusterEvaluator::Kind::kReference}) {
    absl::StatusOr<ClusterEvaluator> a = ClusterEvaluator::Create(*without, kind);
    absl::StatusOr<ClusterEvaluator> b = ClusterEvaluator::Create(*with, kind);
    ASSERT_TRUE(a.ok() && b.ok());
    for (uint16_t port : {53, 80, 8080, 8081, 9000}) {
      for (Protocol protocol : kAllProtocols) {
        EXPECT_EQ(a->Matrix(protocol, port), b->Matrix(protocol, port)) << port;
      }
    }
  }
}

TEST(ServicesTest, NamedTargetPortResolvesPerPod) {
  absl::StatusOr<Cluster> cluster = Load(kPods + kPolicy + kServices);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  absl::StatusOr<ServiceTarget> target = ResolveService(*cluster, "ns/web", "http", std::nullopt);
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(target->port, 80);
  EXPECT_EQ(target->target_port, "http");
  // web-z is in another namespace; web-c has no port "http": not an endpoint.
  EXPECT_THAT(Names(*cluster, *target),
              ElementsAre("ns/web-a:TCP/8080", "ns/web-b:TCP/8081",
                          "ns/web-c not: no container port named \"http\" for TCP"));

  // Per pod on its own number: only 8080 is admitted, so web-a is reachable, web-b is not.
  absl::StatusOr<ClusterEvaluator> evaluator =
      ClusterEvaluator::Create(*cluster, ClusterEvaluator::Kind::kEngine);
  ASSERT_TRUE(evaluator.ok());
  const Endpoint client = Endpoint::Pod(*cluster->FindPod("ns/client"));
  std::vector<bool> allowed;
  for (const ServiceEndpoint& e : target->endpoints) {
    allowed.push_back(evaluator->Allowed(Flow{client, Endpoint::Pod(e.pod_index), e.protocol, e.port}));
  }
  EXPECT_THAT(allowed, ElementsAre(true, false));
}

TEST(ServicesTest, NumericTargetPortAndPortChoice) {
  absl::StatusOr<Cluster> cluster = Load(kPods + kServices);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  // By number; every selected pod in the namespace is an endpoint on 9000.
  absl::StatusOr<ServiceTarget> raw = ResolveService(*cluster, "ns/web", "81", std::nullopt);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->port_name, "raw");
  EXPECT_THAT(Names(*cluster, *raw),
              ElementsAre("ns/web-a:TCP/9000", "ns/web-b:TCP/9000", "ns/web-c:TCP/9000"));
  // 53 is there for UDP and TCP: the protocol picks.
  absl::StatusOr<ServiceTarget> dns = ResolveService(*cluster, "ns/web", "53", Protocol::kUDP);
  ASSERT_TRUE(dns.ok()) << dns.status();
  EXPECT_EQ(dns->protocol, Protocol::kUDP);
  EXPECT_EQ(dns->endpoints.at(0).port, 53);
  EXPECT_THAT(ResolveService(*cluster, "ns/web", "53", std::nullopt).status().message(),
              HasSubstr("several protocols"));
  // A protocol that contradicts the named port.
  absl::Status contradiction =
      ResolveService(*cluster, "ns/web", "http", Protocol::kUDP).status();
  EXPECT_EQ(contradiction.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(contradiction.message(), HasSubstr("is TCP, not UDP"));
  // Several ports and none given; an unknown port lists the ports.
  EXPECT_THAT(ResolveService(*cluster, "ns/web", "", std::nullopt).status().message(),
              HasSubstr("has 4 ports"));
  EXPECT_THAT(ResolveService(*cluster, "ns/web", "https", std::nullopt).status().message(),
              HasSubstr("http TCP/80 -> targetPort http"));
  // One port: it may be left out.
  absl::StatusOr<ServiceTarget> lonely = ResolveService(*cluster, "elsewhere/lonely", "", std::nullopt);
  ASSERT_TRUE(lonely.ok()) << lonely.status();
  EXPECT_THAT(lonely->endpoints, IsEmpty());  // no pods in "elsewhere"
}

TEST(ServicesTest, ServicesWithoutKnowablePods) {
  absl::StatusOr<Cluster> cluster = Load(kPods + kServices);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  absl::Status manual = ResolveService(*cluster, "ns/manual", "", std::nullopt).status();
  EXPECT_EQ(manual.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(manual.message(), HasSubstr("has no selector"));
  absl::Status alias = ResolveService(*cluster, "ns/alias", "", std::nullopt).status();
  EXPECT_EQ(alias.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(alias.message(), HasSubstr("ExternalName"));
  absl::StatusOr<ServiceTarget> nobody = ResolveService(*cluster, "ns/nobody", "80", std::nullopt);
  ASSERT_TRUE(nobody.ok()) << nobody.status();
  EXPECT_THAT(nobody->endpoints, IsEmpty());
  EXPECT_THAT(nobody->not_endpoints, IsEmpty());
  EXPECT_EQ(ResolveService(*cluster, "ns/absent", "80", std::nullopt).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ServicesTest, ServiceInTheShopManifests) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddPath("testdata/workloads/shop").ok());
  absl::StatusOr<Cluster> cluster = loader.Build();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  // frontend.yaml: port 80 -> targetPort http, which the Deployment's template names 8080.
  absl::StatusOr<ServiceTarget> target =
      ResolveService(*cluster, "shop/frontend", "", std::nullopt);
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_THAT(Names(*cluster, *target), ElementsAre("shop/frontend-0:TCP/8080"));
  EXPECT_EQ(cluster->pod(target->endpoints[0].pod_index).synthesized_from,
            "Deployment shop/frontend");
}

TEST(ServicesTest, PodPortByName) {
  absl::StatusOr<Cluster> cluster = Load(kPods);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const int web_b = *cluster->FindPod("ns/web-b");
  absl::StatusOr<uint16_t> port = ResolvePodPortName(*cluster, web_b, "http", Protocol::kTCP);
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_EQ(*port, 8081);
  absl::Status udp = ResolvePodPortName(*cluster, web_b, "http", Protocol::kUDP).status();
  EXPECT_THAT(udp.message(), HasSubstr("pod ns/web-b has no container port named \"http\" for "
                                       "UDP (its named ports: http TCP/8081)"));
}

TEST(ServicesTest, ServiceReferences) {
  std::string key;
  EXPECT_TRUE(IsServiceReference("svc/shop/api", &key));
  EXPECT_EQ(key, "shop/api");
  // A pod of a namespace named "svc" keeps its name.
  EXPECT_FALSE(IsServiceReference("svc/api"));
  EXPECT_FALSE(IsServiceReference("svc/a/b/c"));
  EXPECT_FALSE(IsServiceReference("shop/api"));
}

// --- Validation: each field the API server checks, with its path.

struct InvalidCase {
  std::string spec;  // YAML under spec:, indented two spaces
  std::string field;
  std::string message;
};

TEST(ServicesTest, ValidationNamesTheField) {
  const std::vector<InvalidCase> cases = {
      {"  ports: [{port: 0}]", "spec.ports[0].port", "must be between 1 and 65535"},
      {"  ports: [{port: 65536}]", "spec.ports[0].port", "must be between 1 and 65535"},
      {"  ports: [{port: 80, targetPort: 70000}]", "spec.ports[0].targetPort",
       "Invalid value: 70000"},
      {"  ports: [{port: 80, targetPort: HTTP}]", "spec.ports[0].targetPort",
       "Invalid value: \"HTTP\""},
      {"  ports: [{port: 80, targetPort: web-server-long-name}]", "spec.ports[0].targetPort",
       "must be no more than 15 characters"},
      {"  ports: [{port: 80, protocol: ICMP}]", "spec.ports[0].protocol",
       "Unsupported value: \"ICMP\""},
      {"  ports: [{name: a, port: 80}, {port: 81}]", "spec.ports[1].name", "Required value"},
      {"  ports: [{name: a, port: 80}, {name: a, port: 81}]", "spec.ports[1].name",
       "Duplicate value: \"a\""},
      {"  ports: [{name: A_1, port: 80}]", "spec.ports[0].name", "RFC 1123 label"},
      {"  selector: {app: web}", "spec.ports", "Required value"},
      {"  type: Magic\n  ports: [{port: 80}]", "spec.type", "Unsupported value: \"Magic\""},
      {"  clusterIP: 10.0.0\n  ports: [{port: 80}]", "spec.clusterIP", "Invalid value"},
      {"  clusterIP: 10.0.0.1\n  clusterIPs: [10.0.0.2]\n  ports: [{port: 80}]",
       "spec.clusterIPs", "first value must match"},
      {"  selector: {app: -bad-}\n  ports: [{port: 80}]", "spec.selector", "Invalid value"},
      // Types, found by the loader.
      {"  ports: [{port: \"80\"}]", "spec.ports[0].port", "integer"},
      {"  ports: [{port: 80, targetPort: true}]", "spec.ports[0].targetPort",
       "an integer or a string"},
      {"  ports: {port: 80}", "spec.ports", "a list"},
  };
  for (const InvalidCase& c : cases) {
    std::vector<Diagnostic> diagnostics;
    absl::StatusOr<Cluster> cluster = Load(
        absl::StrCat("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec:\n",
                     c.spec, "\n"),
        &diagnostics);
    EXPECT_FALSE(cluster.ok()) << c.spec;
    bool found = false;
    for (const Diagnostic& d : diagnostics) {
      if (d.is_error() && d.field == c.field && absl::StrContains(d.message, c.message)) {
        found = true;
        EXPECT_EQ(d.kind, "Service");
        EXPECT_EQ(d.object, "ns/s");
      }
    }
    std::string all;
    for (const Diagnostic& d : diagnostics) absl::StrAppend(&all, d.ToString(), "\n");
    EXPECT_TRUE(found) << c.spec << "\nwant " << c.field << ": " << c.message << "\ngot:\n" << all;
  }
}

TEST(ServicesTest, ValidServicesAndTheirName) {
  // Headless and ExternalName need no ports; one unnamed port needs no name; clusterIPs match.
  for (const std::string spec : {
           "  clusterIP: None\n  selector: {app: web}",
           "  type: ExternalName\n  externalName: db.example.com",
           "  ports: [{port: 80, targetPort: 0}]",
           "  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10, fd00::10]\n  ports: [{port: 53, "
           "protocol: UDP}]",
           "  ports: [{name: a-long-service-port-name, port: 80, targetPort: http}]",
       }) {
    std::vector<Diagnostic> diagnostics;
    absl::StatusOr<Cluster> cluster = Load(
        absl::StrCat("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec:\n",
                     spec, "\n"),
        &diagnostics);
    EXPECT_TRUE(cluster.ok()) << spec << "\n" << cluster.status();
  }
  // A Service name is a DNS-1035 label: no leading digit (a pod may have one).
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = Load(
      "apiVersion: v1\nkind: Service\nmetadata: {name: 1web, namespace: ns}\nspec:\n  ports: "
      "[{port: 80}]\n",
      &diagnostics);
  ASSERT_FALSE(cluster.ok());
  ASSERT_FALSE(diagnostics.empty());
  EXPECT_EQ(diagnostics[0].field, "metadata.name");
  EXPECT_THAT(diagnostics[0].message, HasSubstr("DNS-1035 label"));
  EXPECT_EQ(diagnostics[0].location.line, 3);  // metadata
}

TEST(ServicesTest, ServiceIsNotAChange) {
  absl::StatusOr<Change> change = ParseChange(
      "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
      "svc.yaml");
  ASSERT_FALSE(change.ok());
  EXPECT_THAT(std::string(change.status().message()), HasSubstr("a Service cannot be a change"));
  EXPECT_FALSE(ParseChangeOfKind("metadata: {name: s}\n", "svc.yaml", "Service").ok());
}

}  // namespace
}  // namespace np
