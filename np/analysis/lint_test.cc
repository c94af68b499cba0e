// Each lint finding on a small cluster written to have it, and on one written not to. The
// expected findings are read off the manifests (which pod a selector names, which ports a
// container has), never taken from lint's output.
#include "np/analysis/lint.h"

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "np/analysis/connections.h"
#include "np/engine.h"
#include "np/loader.h"
#include "np/reference.h"
#include "np/testgen/random_cluster.h"

namespace np::analysis {
namespace {

// Namespace shop (defined) with two live pods: shop/web (app=web, TCP port "http" 8080,
// 10.0.0.1) and shop/db (app=db, TCP port "pg" 5432, 10.0.0.2); namespace ops (defined,
// team=ops) with ops/prom (app=prom, 10.0.1.1). `extra` adds policies and objects.
constexpr char kBase[] = R"(apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: ops}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers:
    - name: web
      ports: [{name: http, containerPort: 8080}]
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec:
  containers:
    - name: db
      ports: [{name: pg, containerPort: 5432}]
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: prom, namespace: ops, labels: {app: prom}}
spec: {containers: [{name: prom}]}
status: {podIP: 10.0.1.1}
)";

Cluster Load(const std::string& extra, const std::string& base = kBase) {
  ClusterLoader loader;
  absl::Status s = loader.AddText(absl::StrCat(base, "---\n", extra), "test.yaml");
  EXPECT_TRUE(s.ok()) << s;
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  return *cluster;
}

std::vector<Finding> LintAll(const Cluster& cluster, const LintOptions& options = {}) {
  absl::StatusOr<std::vector<Finding>> findings = Lint(cluster, options);
  EXPECT_TRUE(findings.ok()) << findings.status();
  return findings.ok() ? *findings : std::vector<Finding>();
}

std::vector<Finding> WithCode(const std::vector<Finding>& all, const std::string& code) {
  std::vector<Finding> out;
  for (const Finding& f : all) {
    if (f.code == code) out.push_back(f);
  }
  return out;
}

std::string Dump(const std::vector<Finding>& all) {
  std::string out;
  for (const Finding& f : all) absl::StrAppend(&out, f.ToString(), "\n");
  return out;
}

// The policy spec.podSelector selects app=<selected>; `rest` follows it (more spec fields).
std::string Policy(const std::string& name, const std::string& selector, const std::string& rest) {
  return absl::StrCat("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ",
                      name, ", namespace: shop}\nspec:\n  podSelector: ", selector, "\n", rest,
                      "\n");
}

constexpr char kFromWeb[] = R"(  ingress:
    - from:
        - podSelector: {matchLabels: {app: web}}
      ports: [{port: 5432}])";

TEST(LintTest, PodSelectorThatSelectsNoPod) {
  std::vector<Finding> f = LintAll(Load(Policy("typo", "{matchLabels: {app: dbb}}", kFromWeb)));
  std::vector<Finding> np101 = WithCode(f, "NP101");
  ASSERT_EQ(np101.size(), 1u) << Dump(f);
  EXPECT_EQ(np101[0].object, "shop/typo");
  EXPECT_EQ(np101[0].field, "spec.podSelector");
  EXPECT_EQ(np101[0].severity, Finding::Severity::kWarning);
  EXPECT_NE(np101[0].message.find("namespace shop"), std::string::npos) << np101[0].message;
  EXPECT_TRUE(WithCode(f, "NP105").empty()) << Dump(f);  // NP101 stands for it

  f = LintAll(Load(Policy("ok", "{matchLabels: {app: db}}", kFromWeb)));
  EXPECT_TRUE(WithCode(f, "NP101").empty()) << Dump(f);
}

TEST(LintTest, PeerThatMatchesNothing) {
  // The issue's typo: postgress for postgres; here "wbe" for web.
  const std::string typo = Policy("db", "{matchLabels: {app: db}}", R"(  ingress:
    - from:
        - podSelector: {matchLabels: {app: web}}
        - podSelector: {matchLabels: {app: wbe}}
        - namespaceSelector: {matchLabels: {team: nobody}}
        - namespaceSelector: {matchLabels: {team: ops}}
          podSelector: {matchLabels: {app: grafana}})");
  std::vector<Finding> f = LintAll(Load(typo));
  std::vector<Finding> np102 = WithCode(f, "NP102");
  ASSERT_EQ(np102.size(), 3u) << Dump(f);
  EXPECT_EQ(np102[0].field, "spec.ingress[0].from[1].podSelector");
  EXPECT_EQ(np102[1].field, "spec.ingress[0].from[2].namespaceSelector");
  EXPECT_EQ(np102[2].field, "spec.ingress[0].from[3].podSelector");
  EXPECT_NE(np102[2].message.find("ops"), std::string::npos) << np102[2].message;
  // The line of that podSelector: kBase has 31 lines, then "---", then the policy, whose
  // 9th line it is.
  EXPECT_EQ(np102[0].location.file, "test.yaml");
  EXPECT_EQ(np102[0].location.line, 32 + 9);

  const std::string fine = Policy("db", "{matchLabels: {app: db}}", R"(  ingress:
    - from:
        - podSelector: {matchLabels: {app: web}}
        - namespaceSelector: {matchLabels: {team: ops}}
          podSelector: {matchLabels: {app: prom}})");
  f = LintAll(Load(fine));
  EXPECT_TRUE(WithCode(f, "NP102").empty()) << Dump(f);
}

TEST(LintTest, NamespaceNamedButNotDefined) {
  const std::string policy = Policy("db", "{matchLabels: {app: db}}", R"(  ingress:
    - from:
        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
        - namespaceSelector:
            matchExpressions:
              - {key: kubernetes.io/metadata.name, operator: In, values: [ops, kube-system]})");
  std::vector<Finding> f = LintAll(Load(policy));
  std::vector<Finding> np103 = WithCode(f, "NP103");
  ASSERT_EQ(np103.size(), 2u) << Dump(f);
  EXPECT_EQ(np103[0].field,
            "spec.ingress[0].from[0].namespaceSelector.matchLabels[kubernetes.io/metadata.name]");
  EXPECT_NE(np103[0].message.find("monitoring"), std::string::npos);
  EXPECT_EQ(np103[1].field,
            "spec.ingress[0].from[1].namespaceSelector.matchExpressions[0].values[1]");
  EXPECT_NE(np103[1].message.find("kube-system"), std::string::npos);
  // The peer that names only an undefined namespace is NP103's, not also NP102's.
  EXPECT_TRUE(WithCode(f, "NP102").empty()) << Dump(f);

  // Defined: ops is a Namespace of the input.
  f = LintAll(Load(Policy("db", "{matchLabels: {app: db}}", R"(  ingress:
    - from:
        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}})")));
  EXPECT_TRUE(WithCode(f, "NP103").empty()) << Dump(f);

  // Implied: a pod lives in "batch" but no Namespace object defines it.
  f = LintAll(Load(Policy("db", "{matchLabels: {app: db}}", R"(  ingress:
    - from:
        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: batch}})") + R"(---
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: batch}
spec: {containers: [{name: job}]}
status: {podIP: 10.0.2.1}
)"));
  np103 = WithCode(f, "NP103");
  ASSERT_EQ(np103.size(), 1u) << Dump(f);
  EXPECT_NE(np103[0].message.find("no Namespace object"), std::string::npos) << np103[0].message;
}

TEST(LintTest, NamedPortThatNoDestinationDefines) {
  // Ingress: db has "pg" (TCP), not "postgres", and no UDP "pg".
  std::vector<Finding> f = LintAll(Load(Policy("db", "{matchLabels: {app: db}}", R"(  ingress:
    - ports: [{port: postgres}, {port: pg}, {port: pg, protocol: UDP}])")));
  std::vector<Finding> np104 = WithCode(f, "NP104");
  ASSERT_EQ(np104.size(), 2u) << Dump(f);
  EXPECT_EQ(np104[0].field, "spec.ingress[0].ports[0].port");
  EXPECT_EQ(np104[1].field, "spec.ingress[0].ports[2].port");
  EXPECT_NE(np104[1].message.find("TCP port there"), std::string::npos) << np104[1].message;

  // Egress: the destinations are the peers' pods — db has "pg", web has not.
  f = LintAll(Load(Policy("web-out", "{matchLabels: {app: web}}", R"(  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {app: db}}}]
      ports: [{port: pg}]
    - to: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: pg}])")));
  np104 = WithCode(f, "NP104");
  ASSERT_EQ(np104.size(), 1u) << Dump(f);
  EXPECT_EQ(np104[0].field, "spec.egress[1].ports[0].port");

  // Egress without peers: every pod is a destination, db has "pg".
  f = LintAll(Load(Policy("web-out", "{matchLabels: {app: web}}", R"(  policyTypes: [Egress]
  egress:
    - ports: [{port: pg}])")));
  EXPECT_TRUE(WithCode(f, "NP104").empty()) << Dump(f);
}

TEST(LintTest, PolicyThatAddsNothing) {
  const std::string deny_all = Policy("deny-all", "{}", "  policyTypes: [Ingress]");
  const std::string web_to_db = Policy("web-to-db", "{matchLabels: {app: db}}", kFromWeb);
  const std::string again = Policy("web-to-db-again", "{matchLabels: {app: db}}", kFromWeb);
  // A second copy of an allow rule: removing either leaves the other admitting the flows.
  std::vector<Finding> f = LintAll(Load(deny_all + "---\n" + web_to_db + "---\n" + again));
  std::vector<Finding> np105 = WithCode(f, "NP105");
  ASSERT_EQ(np105.size(), 2u) << Dump(f);
  EXPECT_EQ(np105[0].object, "shop/web-to-db");
  EXPECT_EQ(np105[1].object, "shop/web-to-db-again");
  // Without the copy, the allow rule admits web -> db 5432, which deny-all denies without it;
  // deny-all isolates shop/web (removing it opens web's ingress).
  f = LintAll(Load(deny_all + "---\n" + web_to_db));
  EXPECT_TRUE(WithCode(f, "NP105").empty()) << Dump(f);

  // Isolation that matters nothing: db's only policy admits every source on every port.
  const std::string allow_all = Policy("allow-all", "{matchLabels: {app: db}}", "  ingress: [{}]");
  f = LintAll(Load(allow_all));
  np105 = WithCode(f, "NP105");
  ASSERT_EQ(np105.size(), 1u) << Dump(f);
  EXPECT_EQ(np105[0].object, "shop/allow-all");
  // Isolation that matters: db's only policy admits web alone; removing it opens db to all.
  f = LintAll(Load(web_to_db));
  EXPECT_TRUE(WithCode(f, "NP105").empty()) << Dump(f);

  // With an AdminNetworkPolicy that allows web -> db on every port before NetworkPolicy is
  // consulted (the Admin tier's Allow is final), web-to-db admits nothing that is not
  // admitted anyway: it adds nothing, although it alone admits web at db's NetworkPolicy.
  const std::string admin_allow = R"(apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: web-to-db}
spec:
  priority: 5
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
  ingress:
    - name: from-web
      action: Allow
      from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]
)";
  f = LintAll(Load(deny_all + "---\n" + web_to_db + "---\n" + admin_allow));
  np105 = WithCode(f, "NP105");
  ASSERT_EQ(np105.size(), 1u) << Dump(f);
  EXPECT_EQ(np105[0].object, "shop/web-to-db");
}

// NP105 by its definition, written here without lint's shortcuts: a policy that selects a
// pod and whose removal changes no connection (DiffChanges). Random clusters make policies
// that duplicate, shadow and half-open each other; NP_SEED replays one.
TEST(LintTest, AddsNothingIsExactlyAnEmptyDiffOnRandomClusters) {
  const char* only = std::getenv("NP_SEED");
  int reported = 0, kept = 0;
  for (int seed = 0; seed < 300; ++seed) {
    if (only != nullptr && seed != std::atoi(only)) continue;
    testgen::RandomCluster generator(seed);
    absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
    ASSERT_TRUE(cluster.ok());
    LintOptions options;
    if (seed % 7 == 3) options.evaluation.ip_block_scope = EvaluationOptions::IpBlockScope::kExternalOnly;
    EngineOptions engine_options;
    engine_options.evaluation = options.evaluation;
    absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, engine_options);
    ASSERT_TRUE(engine.ok());
    std::set<std::string> expected;
    for (int p = 0; p < cluster->policy_count(); ++p) {
      bool selects = false;
      for (int i = 0; i < cluster->pod_count(); ++i) {
        selects |= reference::PolicySelectsPod(*cluster, cluster->policy(p), i);
      }
      Change remove{Change::Op::kDelete, cluster->policy(p)};
      absl::StatusOr<ConnectionDiff> diff = DiffChanges(**engine, {remove});
      ASSERT_TRUE(diff.ok());
      if (selects && diff->empty()) expected.insert(cluster->PolicyKey(p));
    }
    std::set<std::string> got;
    for (const Finding& f : WithCode(LintAll(*cluster, options), "NP105")) got.insert(f.object);
    EXPECT_EQ(got, expected) << "seed " << seed << " (NP_SEED=" << seed << ")";
    reported += static_cast<int>(expected.size());
    kept += cluster->policy_count() - static_cast<int>(expected.size());
  }
  // Both answers occur, so the comparison means something.
  if (only == nullptr) {
    EXPECT_GT(reported, 20);
    EXPECT_GT(kept, 20);
  }
}

// NP105 with the policy tiers, against the reference (an Admin rule may decide a flow before
// NetworkPolicy, a Baseline rule after it): a policy reported adds nothing — no flow between
// its cluster's pods, and the addresses outside, changes verdict on the probe ports when it is
// removed; a policy kept has a witness — the first port of the diff's first entry, whose
// verdict the reference sees change.
TEST(LintTest, AddsNothingWithPolicyTiersMatchesTheReference) {
  const char* only = std::getenv("NP_SEED");
  testgen::RandomClusterOptions tiered;
  tiered.tier_chance = 1;
  int reported = 0, kept = 0;
  for (int seed = 0; seed < 80; ++seed) {
    if (only != nullptr && seed != std::atoi(only)) continue;
    testgen::RandomCluster generator(seed, tiered);
    absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    std::set<std::string> got;
    for (const Finding& f : WithCode(LintAll(*cluster), "NP105")) got.insert(f.object);
    std::shared_ptr<const Engine> engine = *Engine::Build(*cluster);
    std::vector<Endpoint> ends;
    for (int i = 0; i < cluster->pod_count(); ++i) ends.push_back(Endpoint::Pod(i));
    for (const IpAddress& a : testgen::RandomCluster::ProbeAddresses()) {
      if (!cluster->PodByIp(a)) ends.push_back(Endpoint::External(a));
    }
    for (int p = 0; p < cluster->policy_count(); ++p) {
      const std::string key = cluster->PolicyKey(p);
      Change remove{Change::Op::kDelete, cluster->policy(p)};
      absl::StatusOr<Cluster> without = cluster->Apply({remove});
      ASSERT_TRUE(without.ok());
      // Pods keep their indexes: removing a policy changes no pod.
      auto changes = [&](const Endpoint& s, const Endpoint& d, Protocol protocol, uint16_t port) {
        Flow flow{s, d, protocol, port};
        return reference::Evaluate(*cluster, flow).allowed !=
               reference::Evaluate(*without, flow).allowed;
      };
      const std::string where = absl::StrCat("seed ", seed, " (NP_SEED=", seed, "): ", key);
      if (got.count(key)) {
        ++reported;
        for (const Endpoint& s : ends) {
          for (const Endpoint& d : ends) {
            if (!s.is_pod && !d.is_pod) continue;
            if (s.is_pod && d.is_pod && s.pod_index == d.pod_index) continue;
            // A pod has flows with addresses of the families it has an address of (the
            // listing's ends, np/analysis/connections.h).
            const Endpoint& pod = s.is_pod ? s : d;
            const Endpoint& other = s.is_pod ? d : s;
            if (!other.is_pod && !cluster->pod(pod.pod_index).ip(other.address.family())) continue;
            for (Protocol protocol : kAllProtocols) {
              for (uint16_t port : testgen::RandomCluster::ProbePorts()) {
                ASSERT_FALSE(changes(s, d, protocol, port))
                    << where << " is reported as adding nothing, yet removing it changes "
                    << EndpointName(*cluster, s) << " -> " << EndpointName(*cluster, d) << " "
                    << ProtocolName(protocol) << "/" << port;
              }
            }
          }
        }
        continue;
      }
      bool selects = false;
      for (int i = 0; i < cluster->pod_count(); ++i) {
        selects |= reference::PolicySelectsPod(*cluster, cluster->policy(p), i);
      }
      if (!selects) continue;  // NP101's case
      ++kept;
      absl::StatusOr<ConnectionDiff> diff = DiffChanges(*engine, {remove});
      ASSERT_TRUE(diff.ok());
      ASSERT_FALSE(diff->empty()) << where << " is kept, but removing it changes nothing";
      const Connection& c = diff->added.empty() ? diff->removed.front() : diff->added.front();
      auto endpoint = [&](const ConnectionEnd& e) {
        return e.is_pod ? Endpoint::Pod(*cluster->FindPod(e.name)) : Endpoint::External(e.first);
      };
      bool witnessed = false;
      for (Protocol protocol : kAllProtocols) {
        const auto& ranges = c.ports.by_protocol[ProtocolIndex(protocol)];
        if (!ranges.empty()) {
          witnessed = changes(endpoint(c.from), endpoint(c.to), protocol, ranges.front().first);
          break;
        }
      }
      EXPECT_TRUE(witnessed) << where << ": the reference sees no change on " << c.from.name
                             << " => " << c.to.name << " " << c.ports.ToString();
    }
  }
  if (only == nullptr) {
    EXPECT_GT(reported, 5);
    EXPECT_GT(kept, 20);
  }
}

TEST(LintTest, RuleThatAdmitsEverything) {
  std::vector<Finding> f = LintAll(Load(Policy("wide", "{matchLabels: {app: db}}", R"(  ingress:
    - {}
    - ports: [{port: 5432}]
    - from: [{namespaceSelector: {}, podSelector: {}}]
      ports: [{port: 5432}]
    - from: [{ipBlock: {cidr: 0.0.0.0/0}}]
      ports: [{port: 5432}])")));
  std::vector<Finding> np106 = WithCode(f, "NP106");
  ASSERT_EQ(np106.size(), 4u) << Dump(f);
  EXPECT_EQ(np106[0].field, "spec.ingress[0]");
  EXPECT_EQ(np106[0].severity, Finding::Severity::kWarning);  // and every port
  EXPECT_EQ(np106[1].field, "spec.ingress[1]");
  EXPECT_EQ(np106[1].severity, Finding::Severity::kInfo);
  EXPECT_EQ(np106[2].field, "spec.ingress[2].from[0]");
  EXPECT_EQ(np106[3].field, "spec.ingress[3].from[0].ipBlock");

  f = LintAll(Load(Policy("narrow", "{matchLabels: {app: db}}", R"(  ingress:
    - from:
        - namespaceSelector: {matchLabels: {team: ops}}
        - ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}
        - ipBlock: {cidr: 192.168.0.0/16})")));
  EXPECT_TRUE(WithCode(f, "NP106").empty()) << Dump(f);
}

TEST(LintTest, IsolationInOneDirectionOnly) {
  // db and web isolated for ingress only; prom (ops) not at all.
  std::vector<Finding> f = LintAll(Load(Policy("deny-in", "{}", "  policyTypes: [Ingress]")));
  std::vector<Finding> np107 = WithCode(f, "NP107");
  ASSERT_EQ(np107.size(), 1u) << Dump(f);
  EXPECT_EQ(np107[0].kind, "Namespace");
  EXPECT_EQ(np107[0].object, "shop");
  EXPECT_EQ(np107[0].severity, Finding::Severity::kInfo);
  EXPECT_NE(np107[0].message.find("shop/db, shop/web"), std::string::npos) << np107[0].message;
  EXPECT_NE(np107[0].message.find("ingress but not for egress"), std::string::npos);

  f = LintAll(Load(Policy("deny-both", "{}", "  policyTypes: [Ingress, Egress]")));
  EXPECT_TRUE(WithCode(f, "NP107").empty()) << Dump(f);
}

TEST(LintTest, IpBlockThatContainsPodAddresses) {
  const std::string policy = Policy("db", "{matchLabels: {app: db}}", R"(  ingress:
    - from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.0.0.2/32]}}])");
  std::vector<Finding> f = LintAll(Load(policy));
  std::vector<Finding> np108 = WithCode(f, "NP108");
  ASSERT_EQ(np108.size(), 1u) << Dump(f);
  EXPECT_EQ(np108[0].field, "spec.ingress[0].from[0].ipBlock");
  // web (10.0.0.1) is in it; db (10.0.0.2) is excepted; prom (10.0.1.1) is outside.
  EXPECT_NE(np108[0].message.find("1 pod (shop/web 10.0.0.1)"), std::string::npos)
      << Dump(np108);

  LintOptions external;
  external.evaluation.ip_block_scope = EvaluationOptions::IpBlockScope::kExternalOnly;
  EXPECT_TRUE(WithCode(LintAll(Load(policy), external), "NP108").empty());

  f = LintAll(Load(Policy("db", "{matchLabels: {app: db}}", R"(  ingress:
    - from: [{ipBlock: {cidr: 192.168.0.0/16}}])")));
  EXPECT_TRUE(WithCode(f, "NP108").empty()) << Dump(f);
}

// A Deployment whose pod np makes, with an address from the default pod CIDR 10.244.0.0/16.
constexpr char kDeployment[] = R"(apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api}]}
---
)";

TEST(LintTest, IpBlockThatSplitsThePodCidr) {
  auto lint = [](const std::string& block) {
    return LintAll(Load(kDeployment + Policy("db", "{matchLabels: {app: db}}",
                                         absl::StrCat("  ingress:\n    - from: [{ipBlock: ",
                                                      block, "}]"))));
  };
  for (const char* splits :
       {"{cidr: 10.244.0.0/17}", "{cidr: 10.0.0.0/8, except: [10.244.128.0/17]}"}) {
    std::vector<Finding> f = lint(splits);
    std::vector<Finding> np109 = WithCode(f, "NP109");
    ASSERT_EQ(np109.size(), 1u) << splits << "\n" << Dump(f);
    EXPECT_EQ(np109[0].severity, Finding::Severity::kWarning);
    EXPECT_NE(np109[0].message.find("shop/api-0"), std::string::npos) << np109[0].message;
    EXPECT_TRUE(WithCode(f, "NP108").empty()) << Dump(f);  // NP109 says more
  }
  // The whole pod CIDR, or none of it: the invented address does not matter.
  for (const char* whole :
       {"{cidr: 10.244.0.0/16}", "{cidr: 10.0.0.0/8}", "{cidr: 10.0.0.0/8, except: [10.244.0.0/16]}",
        "{cidr: 192.168.0.0/16}"}) {
    EXPECT_TRUE(WithCode(lint(whole), "NP109").empty()) << whole;
  }
  // No pod made from a workload: nothing was invented.
  std::vector<Finding> f = LintAll(Load(Policy("db", "{matchLabels: {app: db}}", R"(  ingress:
    - from: [{ipBlock: {cidr: 10.244.0.0/17}}])")));
  EXPECT_TRUE(WithCode(f, "NP109").empty()) << Dump(f);
}

TEST(LintTest, ExplainNamesTheInventedAddressThatDecides) {
  Cluster cluster = Load(kDeployment + Policy("db", "{matchLabels: {app: db}}", R"(  ingress:
    - from: [{ipBlock: {cidr: 10.244.0.0/17}}])"));
  Flow flow{Endpoint::Pod(*cluster.FindPod("shop/api")), Endpoint::Pod(*cluster.FindPod("shop/db")),
            Protocol::kTCP, 80};
  Verdict verdict;
  verdict.family = AddressFamily::kIPv4;
  verdict.ingress.isolating_policies = {"shop/db"};
  std::vector<Finding> f = InventedAddressFindings(cluster, flow, verdict, {});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].field, "spec.ingress[0].from[0].ipBlock");
  EXPECT_NE(f[0].message.find("shop/api-0 (10.244."), std::string::npos) << f[0].message;
  // The reverse flow: db's address is its own; api-0 has no policy with an ipBlock.
  Flow back{flow.destination, flow.source, Protocol::kTCP, 80};
  Verdict back_verdict;
  back_verdict.family = AddressFamily::kIPv4;
  EXPECT_TRUE(InventedAddressFindings(cluster, back, back_verdict, {}).empty());
}

TEST(LintTest, TextAndJson) {
  std::vector<Finding> f = LintAll(Load(Policy("typo", "{matchLabels: {app: dbb}}", kFromWeb)));
  std::vector<Finding> np101 = WithCode(f, "NP101");
  ASSERT_EQ(np101.size(), 1u);
  // spec.podSelector is on line 32 + 5 (see PeerThatMatchesNothing).
  EXPECT_EQ(np101[0].ToString(),
            "test.yaml:37: NP101 warning NetworkPolicy shop/typo: spec.podSelector: selects none "
            "of the 2 pods of namespace shop");
  const std::string json = FindingsJson(np101);
  EXPECT_EQ(json,
            "{\"findings\": [{\"code\": \"NP101\", \"name\": \"selector-matches-nothing\", "
            "\"severity\": \"warning\", \"kind\": \"NetworkPolicy\", \"object\": \"shop/typo\", "
            "\"field\": \"spec.podSelector\", \"file\": \"test.yaml\", \"line\": 37, "
            "\"message\": \"selects none of the 2 pods of namespace shop\"}], "
            "\"counts\": {\"error\": 0, \"warning\": 1, \"info\": 0}}");
  EXPECT_TRUE(ParseSeverity("info").ok());
  EXPECT_FALSE(ParseSeverity("fatal").ok());
}

}  // namespace
}  // namespace np::analysis
