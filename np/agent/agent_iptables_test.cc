// The agent over the real iptables backend, as root (skips otherwise), in a network namespace
// of its own: the pod events of the agent benchmark (bench/agent_latency_bench.cc) — a pod of
// another node added and deleted, moved into another class and back, a pod of the node whose
// table is there added and deleted — must reach the kernel
// through the pod delta (np/lower_delta.h, Backend::UpdateDelta) and the backend's in-place
// set edit (IptablesLastUpdate "in place by delta"), not a new generation; and after every
// event the namespace must hold exactly what a fresh Apply of LowerToIr(the agent's engine)
// puts in a second namespace. The node's policy allows the pods' class on two ports (two
// rules of one chain look their set up: the case that used to force the full path).
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "np/agent/agent.h"
#include "np/backends/iptables/iptables.h"
#include "np/backends/util.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/lower.h"

namespace np::agent {
namespace {

// Network namespaces made by the test, deleted when it ends.
class Netns {
 public:
  explicit Netns(const std::string& suffix)
      : name_(absl::StrCat("npagentipt", getpid(), "-", suffix)) {
    ok_ = backends::RunCommand({"ip", "netns", "add", name_}).ok();
  }
  ~Netns() {
    if (ok_) (void)backends::RunCommand({"ip", "netns", "del", name_});
  }
  const std::string& name() const { return name_; }
  bool ok() const { return ok_; }

 private:
  std::string name_;
  bool ok_ = false;
};

// np's part of a namespace, comparable between two: the NP lines of iptables-save with the
// set generation and counters blanked, and each np set's members, sorted.
std::string NpKernelState(const std::string& netns) {
  const std::regex generation("np-g[0-9]+-");
  std::vector<std::string> lines;
  for (const char* tool : {"iptables-save", "ip6tables-save"}) {
    absl::StatusOr<std::string> s = backends::RunCommand({tool, "-t", "filter"}, "", netns);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) continue;
    for (absl::string_view line : absl::StrSplit(*s, '\n')) {
      if (!absl::StrContains(line, "NP-")) continue;
      std::string l(line);
      if (absl::StartsWith(l, ":")) l = l.substr(0, l.find(' '));
      lines.push_back(absl::StrCat(tool, ": ", std::regex_replace(l, generation, "np-g*-")));
    }
  }
  absl::StatusOr<std::string> sets = backends::RunCommand({"ipset", "save"}, "", netns);
  EXPECT_TRUE(sets.ok()) << sets.status();
  std::vector<std::string> members;
  for (absl::string_view line : absl::StrSplit(sets.ok() ? *sets : "", '\n', absl::SkipEmpty())) {
    std::vector<std::string> t = absl::StrSplit(line, ' ');
    if (t.size() < 3 || !absl::StartsWith(t[1], "np-g")) continue;
    members.push_back(std::regex_replace(
        absl::StrCat("ipset: ", t[1], " ", t[0] == "add" ? t[2] : "(set)"), generation, "np-g*-"));
  }
  std::sort(members.begin(), members.end());
  lines.insert(lines.end(), members.begin(), members.end());
  std::string out;
  for (const std::string& l : lines) absl::StrAppend(&out, l, "\n");
  return out;
}

k8s::Pod MakePod(const std::string& name, const std::string& app, const std::string& node,
                 int n) {
  k8s::Pod pod;
  pod.mutable_metadata()->set_namespace_("shop");
  pod.mutable_metadata()->set_name(name);
  (*pod.mutable_metadata()->mutable_labels())["app"] = app;
  pod.mutable_spec()->set_nodename(node);
  pod.mutable_status()->set_phase("Running");
  const std::string v4 = absl::StrCat("10.0.0.", n), v6 = absl::StrCat("fd00::", n);
  pod.mutable_status()->set_podip(v4);
  pod.mutable_status()->add_podips()->set_ip(v4);
  pod.mutable_status()->add_podips()->set_ip(v6);
  return pod;
}

std::string PodEvent(const std::string& type, const std::string& name, const std::string& app,
                     const std::string& node, int n) {
  return absl::StrCat(R"({"type":")", type,
                      R"(","object":{"apiVersion":"v1","kind":"Pod","metadata":{"namespace":"shop","name":")",
                      name, R"(","labels":{"app":")", app, R"("}},"spec":{"nodeName":")", node,
                      R"("},"status":{"phase":"Running","podIP":"10.0.0.)", n,
                      R"(","podIPs":[{"ip":"10.0.0.)", n, R"("},{"ip":"fd00::)", n, R"("}]}}})",
                      "\n");
}

std::string Delete(const std::string& name) {
  return absl::StrCat(
      R"({"type":"DELETED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"namespace":"shop","name":")",
      name, R"("}}})", "\n");
}

TEST(AgentIptables, PodEventsAreInPlaceAndEqualAFreshApply) {
  if (geteuid() != 0 || !backends::RunCommand({"ipset", "version"}).ok()) {
    GTEST_SKIP() << "needs root and ipset";
  }
  Netns agent_ns("agent"), fresh_ns("fresh");
  ASSERT_TRUE(agent_ns.ok() && fresh_ns.ok());

  ClusterObjects objects;
  objects.pods.push_back({MakePod("db-1", "db", "node-0", 10), {}});
  objects.pods.push_back({MakePod("api-1", "api", "node-1", 20), {}});
  objects.pods.push_back({MakePod("api-2", "api", "node-2", 21), {}});
  objects.pods.push_back({MakePod("web-1", "web", "node-1", 30), {}});
  k8s::NetworkPolicy policy;  // db admits api on TCP 5432 and 6379: two rules, one set
  policy.mutable_metadata()->set_namespace_("shop");
  policy.mutable_metadata()->set_name("db");
  (*policy.mutable_spec()->mutable_podselector()->mutable_matchlabels())["app"] = "db";
  policy.mutable_spec()->add_policytypes("Ingress");
  k8s::NetworkPolicyIngressRule* rule = policy.mutable_spec()->add_ingress();
  (*rule->add_from()->mutable_podselector()->mutable_matchlabels())["app"] = "api";
  for (int port : {5432, 6379}) {
    k8s::NetworkPolicyPort* p = rule->add_ports();
    p->set_protocol("TCP");
    p->mutable_port()->set_type(0);
    p->mutable_port()->set_intval(port);
  }
  // And db may reach api on TCP 8080 (an egress chain: dispatch rules both ways).
  policy.mutable_spec()->add_policytypes("Egress");
  k8s::NetworkPolicyEgressRule* out = policy.mutable_spec()->add_egress();
  (*out->add_to()->mutable_podselector()->mutable_matchlabels())["app"] = "api";
  k8s::NetworkPolicyPort* port = out->add_ports();
  port->set_protocol("TCP");
  port->mutable_port()->set_type(0);
  port->mutable_port()->set_intval(8080);
  objects.policies.push_back({policy, {}});
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EngineOptions engine_options;
  engine_options.node_name = "node-0";
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, engine_options);
  ASSERT_TRUE(engine.ok()) << engine.status();

  std::unique_ptr<backends::Backend> owned = backends::MakeIptablesBackend();
  backends::Backend* backend = owned.get();  // (IptablesSettle waits on it)
  AgentOptions options;
  options.attachment.netns = agent_ns.name();
  options.min_interval = absl::ZeroDuration();
  AgentMetrics metrics;
  std::ostringstream log_text;
  JsonLog log(&log_text);
  Agent agent(*engine, std::move(owned), options, &metrics, &log);
  ASSERT_TRUE(agent.Reconcile().ok());

  struct Step {
    std::string what, event;
  };
  const std::vector<Step> steps = {
      {"api pod added (other node)", PodEvent("ADDED", "api-3", "api", "node-1", 22)},
      {"api pod deleted (other node)", Delete("api-3")},
      {"api pod moved into web's class", PodEvent("MODIFIED", "api-2", "web", "node-2", 21)},
      {"and back into api's", PodEvent("MODIFIED", "api-2", "api", "node-2", 21)},
      {"web pod moved into api's class", PodEvent("MODIFIED", "web-1", "api", "node-1", 30)},
      {"and back into web's", PodEvent("MODIFIED", "web-1", "web", "node-1", 30)},
      // Pods of node-0 whose table is there (db-1's): dispatch rules inserted in place, before
      // and after db-1's (the kernel must hold them in a fresh Apply's order).
      {"db pod added (node-0, after db-1)", PodEvent("ADDED", "db-2", "db", "node-0", 12)},
      {"db pod added (node-0, before db-1)", PodEvent("ADDED", "db-0", "db", "node-0", 11)},
      {"db pod deleted (node-0)", Delete("db-2")},
      {"db pod deleted (node-0), the other", Delete("db-0")},
      {"db pod added again (node-0)", PodEvent("ADDED", "db-2", "db", "node-0", 12)},
  };
  // The agent's kernel state equals what a fresh full Apply of the agent's current snapshot
  // writes into a namespace of its own.
  auto expect_kernel_equals_fresh_apply = [&](const std::string& how) {
    backends::IptablesSettle(*backend);  // the backend's deferred cleanup, then the listing
    absl::StatusOr<ir::CompiledPolicy> want = LowerToIr(*agent.current());
    ASSERT_TRUE(want.ok()) << want.status();
    std::unique_ptr<backends::Backend> once = backends::MakeIptablesBackend();
    backends::Attachment at_fresh;
    at_fresh.netns = fresh_ns.name();
    ASSERT_TRUE(once->Apply(*want, at_fresh).ok());
    ASSERT_EQ(NpKernelState(agent_ns.name()), NpKernelState(fresh_ns.name())) << how;
  };
  for (int round = 0; round < 2; ++round) {
    for (const Step& step : steps) {
      SCOPED_TRACE(absl::StrCat("round ", round, ": ", step.what));
      const int64_t deltas = agent.delta_syncs();
      agent.HandleEvent(step.event, absl::Now());
      ASSERT_EQ(agent.pending_events(), 1) << "event not applied:\n" << log_text.str();
      ASSERT_TRUE(agent.Sync().ok());
      EXPECT_EQ(agent.delta_syncs(), deltas + 1) << "lowered whole: " << agent.last_whole_reason();
      const std::string how = backends::IptablesLastUpdate(*backend);
      EXPECT_TRUE(absl::StartsWith(how, "in place by delta")) << how;
      expect_kernel_equals_fresh_apply(how);
      if (HasFatalFailure()) return;
    }
    // A pod of another node with a named port of its own: a new peer class, whose identity
    // comes with the pod delta (appended in round 0; in round 1 the id round 0's pod left
    // unused, with the peer sets that admit it). The backend's delta planner edits the
    // rewritten peer sets' members in place, as for any pod of another node.
    SCOPED_TRACE(absl::StrCat("round ", round, ": a new class"));
    const std::string name = absl::StrCat("api-named-", round);
    std::string event = PodEvent("ADDED", name, "api", "node-1", 40 + round);
    event.replace(event.find(R"("spec":{)"), 8,
                  R"("spec":{"containers":[{"name":"c","ports":[{"name":"web","containerPort":80}]}],)");
    const int64_t deltas = agent.delta_syncs();
    agent.HandleEvent(event, absl::Now());
    ASSERT_EQ(agent.pending_events(), 1) << "event not applied:\n" << log_text.str();
    ASSERT_TRUE(agent.Sync().ok());
    EXPECT_EQ(agent.delta_syncs(), deltas + 1) << "lowered whole: " << agent.last_whole_reason();
    const std::string how = backends::IptablesLastUpdate(*backend);
    EXPECT_TRUE(absl::StartsWith(how, "in place by delta: ")) << how;
    expect_kernel_equals_fresh_apply(how);
    if (HasFatalFailure()) return;
    // Back to the start for the next round.
    agent.HandleEvent(Delete(name), absl::Now());
    agent.HandleEvent(Delete("db-2"), absl::Now());
    ASSERT_TRUE(agent.Sync().ok());
  }
}

}  // namespace
}  // namespace np::agent
