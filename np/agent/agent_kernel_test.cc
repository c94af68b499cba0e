// `netpol agent` end to end, as root: the node's pods are network namespaces (np/probe's
// TestNetwork), the agent follows a scripted watch-event stream written into a FIFO, and
// after every step real packets between every ordered pod pair (TCP 80 and 81) must get
// through exactly when the expected verdict says so. The expectation is a fresh Engine::Build
// of the step's objects, kept by the test itself (not the agent's incremental state; the
// engine equals np::reference on every cluster, engine_test checks that). Also: metrics
// scraped and checked, SIGTERM leaves the rules in place, --remove removes them.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/loader.h"
#include "np/probe/network.h"

namespace np::agent {
namespace {

constexpr char kNetpol[] = "np/cli/netpol";
constexpr char kProbeAgent[] = "np/probe/probe_agent";
constexpr char kNode[] = "n1";

std::string Labels(const std::map<std::string, std::string>& labels) {
  std::vector<std::string> items;
  for (const auto& [k, v] : labels) items.push_back(absl::StrCat("\"", k, "\":\"", v, "\""));
  return absl::StrCat("{", absl::StrJoin(items, ","), "}");
}

std::string NamespaceJson(const std::string& name,
                          const std::map<std::string, std::string>& labels) {
  return absl::StrCat(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":")", name,
                      R"(","labels":)", Labels(labels), "}}");
}

// Without kind and apiVersion, as an informer hands pods out (the agent runs with --kind Pod).
// With a condition's `lastProbeTime: null`, as kubectl prints every pod (JSON null once
// made the event parser refuse the whole event).
std::string PodJson(const std::string& ns, const std::string& name, const std::string& app,
                    const std::string& ip) {
  return absl::StrCat(R"({"metadata":{"name":")", name, R"(","namespace":")", ns,
                      R"(","labels":{"app":")", app, R"("}},"spec":{"nodeName":")", kNode,
                      R"(","containers":[{"name":"c","image":"i"}]},"status":{"podIP":")", ip,
                      R"(","podIPs":[{"ip":")", ip,
                      R"("}],"conditions":[{"type":"Ready","status":"True","lastProbeTime":null}]}})");
}

// As a manifest holds it: pods name their kind there.
std::string Manifest(const std::string& key, const std::string& json) {
  if (key.rfind("Pod ", 0) != 0) return json;
  return absl::StrCat(R"({"apiVersion":"v1","kind":"Pod",)", json.substr(1));
}

std::string PolicyJson(const std::string& ns, const std::string& name, const std::string& spec) {
  return absl::StrCat(R"({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",)",
                      R"("metadata":{"name":")", name, R"(","namespace":")", ns, R"("},"spec":)",
                      spec, "}");
}

// One step of the script: what is written to the FIFO, and how the test's own copy of the
// objects changes (key "KIND ns/name"; empty json: deleted). `rejected` events change nothing.
struct Step {
  std::string what;
  std::vector<std::string> lines;  // written in one write(): a burst
  std::vector<std::pair<std::string, std::string>> changes;
  int rejected = 0;
  // A pod deleted (index into kPods): as a CNI does, the test removes its host-side link
  // before the event, and probes it no more.
  int deleted_pod = -1;
  // How the agent must send it to the kernel ("delta_of" of its "kernel updated" log line,
  // np/agent/agent.cc): "pods" or "policies" (a policy event that kept every identity:
  // np/lower_delta.h LowerPolicyChange); empty: either, or a whole lowering.
  std::string delta_of;
};

std::string Event(const std::string& type, const std::string& object) {
  return absl::StrCat(R"({"type":")", type, R"(","object":)", object, "}\n");
}

struct PodAddress {
  std::string ns, name, ip;
};
const std::vector<PodAddress> kPods = {{"x", "a", "10.216.0.1"},
                                       {"x", "b", "10.216.0.2"},
                                       {"y", "c", "10.216.0.3"},
                                       {"y", "d", "10.216.0.4"},
                                       {"x", "e", "10.216.0.5"}};

class AgentKernelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
    probe::NetworkSpec spec;
    for (const PodAddress& p : kPods) {
      spec.pods.push_back({p.ns + "/" + p.name, {*IpAddress::Parse(p.ip)}, kNode});
    }
    absl::StatusOr<std::unique_ptr<probe::TestNetwork>> net =
        probe::TestNetwork::Create(spec, {kProbeAgent});
    ASSERT_TRUE(net.ok()) << net.status();
    network_ = *std::move(net);
    ASSERT_TRUE(network_->EnsureListening({{Protocol::kTCP, 80}, {Protocol::kTCP, 81}}).ok());
    tmp_ = std::getenv("TEST_TMPDIR") != nullptr ? std::getenv("TEST_TMPDIR") : "/tmp";
    tmp_ = absl::StrCat(tmp_, "/h16agent-", GetParam(), "-", getpid());
    ASSERT_EQ(system(("rm -rf " + tmp_ + " && mkdir -p " + tmp_).c_str()), 0);
  }

  void TearDown() override {
    if (agent_pid_ > 0) {
      kill(agent_pid_, SIGKILL);
      waitpid(agent_pid_, nullptr, 0);
    }
    if (fifo_fd_ >= 0) close(fifo_fd_);
    if (network_ != nullptr) {
      RunNetpol({"agent", "--remove", "--backend", GetParam(), "--netns",
                 network_->NodeNetns(kNode), "--interfaces", Interfaces()});
      EXPECT_TRUE(network_->Destroy().ok());
    }
  }

  std::string Interfaces() const {
    std::vector<std::string> items;
    const std::vector<backends::EndpointInterface> all = network_->AttachmentFor(kNode).interfaces;
    for (int i = 0; i < static_cast<int>(all.size()); ++i) {
      if (gone_.count(i) == 0) items.push_back(all[i].pod + "=" + all[i].interface);
    }
    return absl::StrJoin(items, ",");
  }

  // Runs netpol to the end; its exit status.
  int RunNetpol(const std::vector<std::string>& args) {
    pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> argv = {const_cast<char*>(kNetpol)};
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 2);
      execv(kNetpol, argv.data());
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  void StartAgent(const std::string& initial_file) {
    const std::string fifo = tmp_ + "/events";
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    log_path_ = tmp_ + "/agent.log";
    agent_pid_ = fork();
    if (agent_pid_ == 0) {
      std::vector<std::string> args = {kNetpol,
                                       "agent",
                                       "-f",
                                       initial_file,
                                       "--events",
                                       fifo,
                                       "--kind",
                                       "Pod",
                                       "--node",
                                       kNode,
                                       "--backend",
                                       GetParam(),
                                       "--netns",
                                       network_->NodeNetns(kNode),
                                       "--interfaces",
                                       Interfaces(),
                                       "--metrics-address",
                                       "127.0.0.1:0"};
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(log, 2);
      execv(kNetpol, argv.data());
      _exit(127);
    }
    fifo_fd_ = open(fifo.c_str(), O_WRONLY);  // waits for the agent to open it
    ASSERT_GE(fifo_fd_, 0);
    // The metrics port, from the "serving metrics" log line.
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (metrics_port_ == 0 && absl::Now() < deadline) {
      std::ifstream in(log_path_);
      for (std::string line; std::getline(in, line);) {
        const size_t at = line.find("\"address\":\"127.0.0.1:");
        if (at != std::string::npos) {
          ASSERT_TRUE(absl::SimpleAtoi(line.substr(at + 21, line.find('"', at + 21) - at - 21),
                                       &metrics_port_));
        }
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_NE(metrics_port_, 0) << AgentLog();
    // The metrics are served before the reconcile: wait for it.
    while (Sample(Scrape(), "np_agent_syncs_total") < 1 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    ASSERT_GE(Sample(Scrape(), "np_agent_syncs_total"), 1) << AgentLog();
  }

  std::string AgentLog() const {
    std::ifstream in(log_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // The agent's last "kernel updated" log line ("" when none).
  std::string LastUpdateLine() const {
    const std::string log = AgentLog();
    const size_t last = log.rfind("\"msg\":\"kernel updated\"");
    if (last == std::string::npos) return "";
    return log.substr(last, log.find('\n', last) - last);
  }

  std::string Scrape() const {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(metrics_port_));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    std::string response;
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      const std::string request = "GET /metrics HTTP/1.0\r\n\r\n";
      (void)write(fd, request.data(), request.size());
      char buffer[4096];
      for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
    }
    close(fd);
    return response;
  }

  // The value of one sample line ("name{labels}") in the exposition, -1 when absent.
  static double Sample(const std::string& text, const std::string& series) {
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (absl::StartsWith(line, series + " ")) {
        double v = 0;
        if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
      }
    }
    return -1;
  }

  // Waits until the agent has read `events` events and has none waiting for the kernel.
  void WaitForAgent(int events) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      const std::string m = Scrape();
      if (Sample(m, "np_agent_events_total{result=\"applied\"}") +
                  Sample(m, "np_agent_events_total{result=\"rejected\"}") ==
              events &&
          Sample(m, "np_agent_pending_events") == 0) {
        return;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    FAIL() << "the agent did not take " << events << " events in 20 s:\n" << Scrape() << AgentLog();
  }

  // A fresh engine of `objects`: the expectation.
  std::shared_ptr<const Engine> ExpectedEngine(const std::map<std::string, std::string>& objects) {
    ClusterLoader loader;
    for (const auto& [key, json] : objects) {
      EXPECT_TRUE(loader.AddText(Manifest(key, json), key).ok()) << key;
    }
    absl::StatusOr<Cluster> cluster = std::move(loader).Build();
    EXPECT_TRUE(cluster.ok()) << cluster.status();
    if (!cluster.ok()) return nullptr;
    absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *engine : nullptr;
  }

  // Every ordered pair of distinct pods still on the node, on TCP 80 and 81.
  std::vector<probe::ProbeRequest> Flows() const {
    std::vector<probe::ProbeRequest> flows;
    for (int s = 0; s < static_cast<int>(kPods.size()); ++s) {
      for (int d = 0; d < static_cast<int>(kPods.size()); ++d) {
        if (s == d || gone_.count(s) > 0 || gone_.count(d) > 0) continue;
        for (uint16_t port : {80, 81}) {
          flows.push_back(
              {s, std::nullopt, *IpAddress::Parse(kPods[d].ip), Protocol::kTCP, port, 300});
        }
      }
    }
    return flows;
  }

  static bool Allowed(const Engine& engine, const probe::ProbeRequest& flow) {
    return engine.AllowedPacket(*IpAddress::Parse(kPods[flow.source_pod].ip), flow.destination,
                                flow.protocol, flow.port);
  }

  static std::string FlowText(const probe::ProbeRequest& flow) {
    const PodAddress& s = kPods[flow.source_pod];
    return absl::StrCat(s.ns, "/", s.name, " -> ", flow.destination.ToString(), ":", flow.port);
  }

  // Probes `flows`; one that should connect but got no answer is asked again, patiently (a
  // slow machine is not a deny; `slow` counts these); one that connected is never retried.
  // The outcomes' statuses, in order; empty on error.
  std::vector<std::string> ProbeFlows(const std::vector<probe::ProbeRequest>& flows,
                                      const std::vector<bool>& expected, int* slow) {
    absl::StatusOr<std::vector<probe::ProbeOutcome>> outcomes = network_->Run(flows);
    EXPECT_TRUE(outcomes.ok()) << outcomes.status();
    if (!outcomes.ok()) return {};
    std::vector<probe::ProbeRequest> retry;
    std::vector<size_t> retried;
    for (size_t i = 0; i < flows.size(); ++i) {
      if (expected[i] && !(*outcomes)[i].connected()) {
        retry.push_back(flows[i]);
        retry.back().timeout_ms = 3000;
        retried.push_back(i);
      }
    }
    if (!retry.empty()) {
      absl::StatusOr<std::vector<probe::ProbeOutcome>> again = network_->Run(retry);
      EXPECT_TRUE(again.ok()) << again.status();
      for (size_t j = 0; again.ok() && j < retried.size(); ++j) {
        if ((*again)[j].connected()) ++*slow;
        (*outcomes)[retried[j]] = (*again)[j];
      }
    }
    std::vector<std::string> statuses;
    for (const probe::ProbeOutcome& o : *outcomes) statuses.push_back(o.status);
    return statuses;
  }

  // Probes every flow and compares with the expected verdicts of `objects`; the mismatches.
  std::vector<std::string> Compare(const std::map<std::string, std::string>& objects) {
    std::shared_ptr<const Engine> engine = ExpectedEngine(objects);
    if (engine == nullptr) return {"no engine"};
    EXPECT_TRUE(network_->FlushConntrack().ok());
    const std::vector<probe::ProbeRequest> flows = Flows();
    std::vector<bool> expected;
    for (const probe::ProbeRequest& f : flows) expected.push_back(Allowed(*engine, f));
    int slow = 0;
    const std::vector<std::string> statuses = ProbeFlows(flows, expected, &slow);
    if (statuses.size() != flows.size()) return {"probe failed"};
    std::vector<std::string> mismatches;
    for (size_t i = 0; i < flows.size(); ++i) {
      if ((statuses[i] == "ok") != expected[i]) {
        mismatches.push_back(absl::StrCat(FlowText(flows[i]), " expected ",
                                          expected[i] ? "allowed" : "denied", ", got ",
                                          statuses[i]));
      }
    }
    return mismatches;
  }

  // Item 4's strict rule while the kernel changes: runs `change` while probing, round after
  // round (at least one), every flow that `before` and `after` agree on. A flow both deny
  // must never connect; a flow both allow must never fail (after its patient retry).
  std::vector<std::string> ProbeWhile(const std::map<std::string, std::string>& before,
                                      const std::map<std::string, std::string>& after,
                                      const std::function<void()>& change, int* rounds, int* slow) {
    std::shared_ptr<const Engine> old_engine = ExpectedEngine(before);
    std::shared_ptr<const Engine> new_engine = ExpectedEngine(after);
    if (old_engine == nullptr || new_engine == nullptr) return {"no engine"};
    std::vector<probe::ProbeRequest> stable;
    std::vector<bool> expected;
    for (const probe::ProbeRequest& f : Flows()) {
      if (Allowed(*old_engine, f) == Allowed(*new_engine, f)) {
        stable.push_back(f);
        expected.push_back(Allowed(*new_engine, f));
      }
    }
    std::atomic<bool> done{false};
    std::map<std::string, int> violations;  // flow and outcome -> how many rounds saw it
    std::thread prober([&] {
      do {
        const std::vector<std::string> statuses = ProbeFlows(stable, expected, slow);
        ++*rounds;
        for (size_t i = 0; i < statuses.size(); ++i) {
          if ((statuses[i] == "ok") != expected[i]) {
            ++violations[absl::StrCat(FlowText(stable[i]), ", which before and after ",
                                      expected[i] ? "allow" : "deny", ": ", statuses[i])];
          }
        }
      } while (!done);
    });
    change();
    done = true;
    prober.join();
    std::vector<std::string> lines;
    for (const auto& [what, times] : violations) {
      lines.push_back(absl::StrCat(what, " (", times, " of ", *rounds, " rounds)"));
    }
    return lines;
  }

  std::unique_ptr<probe::TestNetwork> network_;
  std::string tmp_, log_path_;
  pid_t agent_pid_ = -1;
  int fifo_fd_ = -1;
  int metrics_port_ = 0;
  std::set<int> gone_;  // pods deleted, whose network the CNI has taken down
};

TEST_P(AgentKernelTest, KernelFollowsTheEventStream) {
  // Initial state (-f): namespaces x and y, pods x/a, x/b, y/c; no policy.
  std::map<std::string, std::string> objects = {
      {"Namespace x", NamespaceJson("x", {{"team", "a"}})},
      {"Namespace y", NamespaceJson("y", {{"team", "b"}})},
      {"Pod x/a", PodJson("x", "a", "web", "10.216.0.1")},
      {"Pod x/b", PodJson("x", "b", "db", "10.216.0.2")},
      {"Pod y/c", PodJson("y", "c", "client", "10.216.0.3")},
  };
  auto write_manifest = [&](const std::string& path,
                            const std::map<std::string, std::string>& content) {
    std::ofstream out(path);
    for (const auto& [key, json] : content) out << "---\n" << Manifest(key, json) << "\n";
  };
  const std::string initial = tmp_ + "/initial.yaml";
  write_manifest(initial, objects);

  // What an earlier agent left: every pod isolated both ways (an agent run to the end of an
  // empty input, --exit-at-eof). The agent started next must replace it, not keep it.
  std::map<std::string, std::string> stale = objects;
  const std::string isolate_all = R"({"podSelector":{},"policyTypes":["Ingress","Egress"]})";
  stale["NetworkPolicy x/isolate"] = PolicyJson("x", "isolate", isolate_all);
  stale["NetworkPolicy y/isolate"] = PolicyJson("y", "isolate", isolate_all);
  write_manifest(tmp_ + "/stale.yaml", stale);
  ASSERT_EQ(RunNetpol({"agent", "-f", tmp_ + "/stale.yaml", "--events", "/dev/null",
                       "--exit-at-eof", "--node", kNode, "--backend", GetParam(), "--netns",
                       network_->NodeNetns(kNode), "--interfaces", Interfaces()}),
            0);
  EXPECT_THAT(Compare(stale), ::testing::IsEmpty()) << "the stale program";

  StartAgent(initial);
  ASSERT_FALSE(HasFatalFailure());

  const std::string db_from_web = PolicyJson(
      "x", "db",
      R"({"podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"web"}}}],"ports":[{"port":80}]}]})");
  const std::string db_from_any_web = PolicyJson(
      "x", "db",
      R"({"podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"from":[{"namespaceSelector":{},"podSelector":{"matchLabels":{"app":"web"}}}],"ports":[{"port":80},{"port":81}]}]})");
  const std::string y_only_trusted = PolicyJson(
      "y", "trusted",
      R"({"podSelector":{},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"team":"trusted"}}}]}]})");
  // Policy events that keep every identity, so the agent sends them as policy deltas: their
  // peers use selectors the cluster already uses (any namespace's app=web; team=trusted
  // namespaces), together (a new peer set), or one no pod matches yet (env=prod); then x
  // gains env=prod, which renames its pods' peer class one to one (the tables re-lowered).
  // Each changes some verdict, so packets tell a kernel the delta did not reach.
  const std::string db_from_any_web_80 = PolicyJson(
      "x", "db",
      R"({"podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"from":[{"namespaceSelector":{},"podSelector":{"matchLabels":{"app":"web"}}}],"ports":[{"port":80}]}]})");
  const std::string other_to_trusted = PolicyJson(
      "x", "other-out",
      R"({"podSelector":{"matchLabels":{"app":"other"}},"policyTypes":["Egress"],"egress":[{"to":[{"namespaceSelector":{"matchLabels":{"team":"trusted"}}},{"namespaceSelector":{},"podSelector":{"matchLabels":{"app":"web"}}}]}]})");
  const std::string other_to_trusted_isolated = PolicyJson(
      "x", "other-out",
      R"({"podSelector":{"matchLabels":{"app":"other"}},"policyTypes":["Ingress","Egress"],"egress":[{"to":[{"namespaceSelector":{"matchLabels":{"team":"trusted"}}},{"namespaceSelector":{},"podSelector":{"matchLabels":{"app":"web"}}}]}]})");
  const std::string client_to_prod = PolicyJson(
      "y", "client-out",
      R"({"podSelector":{"matchLabels":{"app":"client"}},"policyTypes":["Egress"],"egress":[{"to":[{"namespaceSelector":{"matchLabels":{"env":"prod"}}}]}]})");
  // A target class no pod has yet: its table comes with the first pod (a pod delta that
  // brings a table) and goes with the last (one that retires it).
  const std::string admin_from_web = PolicyJson(
      "x", "admin-in",
      R"({"podSelector":{"matchLabels":{"app":"admin"}},"ingress":[{"from":[{"namespaceSelector":{},"podSelector":{"matchLabels":{"app":"web"}}}],"ports":[{"port":81}]}]})");
  const std::string bad_policy =
      PolicyJson("x", "bad", R"({"podSelector":{},"ingress":[{"ports":[{"port":70000}]}]})");
  const std::vector<Step> steps = {
      {"initial state (the stale program replaced)", {}, {}},
      {"policy added: x/b takes port 80 from app=web of x",
       {Event("ADDED", db_from_web)},
       {{"NetworkPolicy x/db", db_from_web}}},
      {"pod appears: y/d app=web",
       {Event("ADDED", PodJson("y", "d", "web", "10.216.0.4"))},
       {{"Pod y/d", PodJson("y", "d", "web", "10.216.0.4")}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       // The pod comes with its interface: still a delta (the backend attaches it in place
       // or loads anew as it must), not a whole lowering for the interfaces' sake.
       /*delta_of=*/"pods"},
      {"policy edited: app=web of any namespace, ports 80 and 81",
       {Event("MODIFIED", db_from_any_web)},
       {{"NetworkPolicy x/db", db_from_any_web}}},
      {"pod relabelled: x/a app=web -> app=other (x/b's peer class: that identity's pods "
       "change)",
       {Event("MODIFIED", PodJson("x", "a", "other", "10.216.0.1"))},
       {{"Pod x/a", PodJson("x", "a", "other", "10.216.0.1")}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       /*delta_of=*/"pods"},
      {"burst: y admits only team=trusted namespaces; x relabelled team=trusted",
       {Event("ADDED", y_only_trusted),
        Event("MODIFIED", NamespaceJson("x", {{"team", "trusted"}}))},
       {{"NetworkPolicy y/trusted", y_only_trusted},
        {"Namespace x", NamespaceJson("x", {{"team", "trusted"}})}}},
      {"policy delta, a port changed: x/db takes app=web of any namespace on port 80 only",
       {Event("MODIFIED", db_from_any_web_80)},
       {{"NetworkPolicy x/db", db_from_any_web_80}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       /*delta_of=*/"policies"},
      {"policy delta, a policy added: x/a (app=other) may only reach team=trusted namespaces "
       "and app=web pods",
       {Event("ADDED", other_to_trusted)},
       {{"NetworkPolicy x/other-out", other_to_trusted}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       /*delta_of=*/"policies"},
      {"policy delta, policyTypes changed: x/other-out isolates x/a's ingress too",
       {Event("MODIFIED", other_to_trusted_isolated)},
       {{"NetworkPolicy x/other-out", other_to_trusted_isolated}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       /*delta_of=*/"policies"},
      {"policy delta, a policy deleted whose peers others still use: x/other-out",
       {Event("DELETED", other_to_trusted_isolated)},
       {{"NetworkPolicy x/other-out", ""}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       /*delta_of=*/"policies"},
      {"policy delta, a policy added whose peer no pod matches yet: y/c (app=client) may only "
       "reach env=prod namespaces (none)",
       {Event("ADDED", client_to_prod)},
       {{"NetworkPolicy y/client-out", client_to_prod}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       /*delta_of=*/"policies"},
      {"policy delta, a namespace relabel that renames x's pods' peer class: x env=prod, so "
       "y/c may reach them",
       {Event("MODIFIED", NamespaceJson("x", {{"team", "trusted"}, {"env", "prod"}}))},
       {{"Namespace x", NamespaceJson("x", {{"team", "trusted"}, {"env", "prod"}})}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       /*delta_of=*/"policies"},
      {"malformed events: a line that is no JSON, a policy the API server would refuse",
       {"this is not an event\n", Event("ADDED", bad_policy)},
       {},
       /*rejected=*/2},
      {"pod leaves, the last address of its identity and the last endpoint of its table: x/b",
       {Event("DELETED", PodJson("x", "b", "db", "10.216.0.2"))},
       {{"Pod x/b", ""}},
       /*rejected=*/0,
       /*deleted_pod=*/1,
       /*delta_of=*/"pods"},
      {"policy deleted: y/trusted",
       {Event("DELETED", y_only_trusted)},
       {{"NetworkPolicy y/trusted", ""}}},
      {"policy added whose target no pod matches yet: x/admin-in (app=admin) takes port 81 "
       "from app=web of any namespace",
       {Event("ADDED", admin_from_web)},
       {{"NetworkPolicy x/admin-in", admin_from_web}}},
      {"pod appears in a target class of its own: x/e app=admin (x/admin-in's table comes "
       "with it)",
       {Event("ADDED", PodJson("x", "e", "admin", "10.216.0.5"))},
       {{"Pod x/e", PodJson("x", "e", "admin", "10.216.0.5")}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       /*delta_of=*/"pods"},
      {"pod leaves, the last of its target class: x/e (its table retired)",
       {Event("DELETED", PodJson("x", "e", "admin", "10.216.0.5"))},
       {{"Pod x/e", ""}},
       /*rejected=*/0,
       /*deleted_pod=*/4,
       /*delta_of=*/"pods"},
      {"pod relabelled out of the last address of its identity and out of its table: y/c "
       "app=client -> app=web (y/d's class; y/client-out no longer isolates it)",
       {Event("MODIFIED", PodJson("y", "c", "web", "10.216.0.3"))},
       {{"Pod y/c", PodJson("y", "c", "web", "10.216.0.3")}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       /*delta_of=*/"pods"},
      {"pod relabelled into a peer class no address has: y/c back to app=client (its identity "
       "and y/client-out's table come back with the delta)",
       {Event("MODIFIED", PodJson("y", "c", "client", "10.216.0.3"))},
       {{"Pod y/c", PodJson("y", "c", "client", "10.216.0.3")}},
       /*rejected=*/0,
       /*deleted_pod=*/-1,
       /*delta_of=*/"pods"},
  };
  int sent = 0, rejected = 0, applied = 0, probe_rounds = 0, slow_probes = 0;
  std::map<std::string, int> expected_deltas;  // delta_of -> steps that must go so
  for (const Step& step : steps) {
    SCOPED_TRACE(step.what);
    if (step.deleted_pod >= 0) {
      ASSERT_EQ(
          system(absl::StrCat("ip -n ", network_->NodeNetns(kNode), " link del p", step.deleted_pod)
                     .c_str()),
          0);
      gone_.insert(step.deleted_pod);
    }
    const std::map<std::string, std::string> before = objects;
    for (const auto& [key, json] : step.changes) {
      if (json.empty()) {
        objects.erase(key);
      } else {
        objects[key] = json;
      }
    }
    sent += static_cast<int>(step.lines.size());
    rejected += step.rejected;
    applied += static_cast<int>(step.lines.size()) - step.rejected;
    int rounds = 0;
    auto send_and_wait = [&] {
      const std::string burst = absl::StrJoin(step.lines, "");
      EXPECT_EQ(write(fifo_fd_, burst.data(), burst.size()), static_cast<ssize_t>(burst.size()));
      WaitForAgent(sent);
    };
    const std::vector<std::string> disrupted =
        ProbeWhile(before, objects, send_and_wait, &rounds, &slow_probes);
    EXPECT_THAT(disrupted, ::testing::IsEmpty()) << "while the kernel changed";
    ASSERT_FALSE(HasFatalFailure());
    probe_rounds += rounds;
    EXPECT_THAT(Compare(objects), ::testing::IsEmpty());
    if (!step.delta_of.empty()) {
      const std::string line = LastUpdateLine();
      EXPECT_THAT(line, ::testing::HasSubstr("\"update\":\"delta\"")) << line;
      EXPECT_THAT(line, ::testing::HasSubstr(absl::StrCat("\"delta_of\":\"", step.delta_of, "\"")))
          << line;
      ++expected_deltas[step.delta_of];
      // What the delta carried, for the reader of the test log.
      std::cout << GetParam() << ": " << step.what << ": "
                << line.substr(std::min(line.size(), line.find("\"delta_tables\"")), 100) << "\n";
    }
  }

  const std::string metrics = Scrape();
  EXPECT_EQ(Sample(metrics, "np_agent_events_total{result=\"applied\"}"), applied);
  EXPECT_EQ(Sample(metrics, "np_agent_events_total{result=\"rejected\"}"), rejected);
  EXPECT_EQ(Sample(metrics, "np_agent_update_latency_seconds_count"), applied);
  EXPECT_EQ(Sample(metrics, "np_agent_update_latency_seconds_bucket{le=\"+Inf\"}"), applied);
  EXPECT_GT(Sample(metrics, "np_agent_last_sync_timestamp_seconds"),
            absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()) - 600);
  EXPECT_THAT(metrics, ::testing::HasSubstr("np_agent_program_items{item="));
  EXPECT_GT(std::max(Sample(metrics, "np_agent_rules"), Sample(metrics, "np_agent_map_entries")),
            0);
  // Not vacuous: at least the steps above went as deltas of their kind, and the counter
  // agrees with the log's count of such syncs (other steps may go as deltas too).
  const std::string log = AgentLog();
  ASSERT_GE(expected_deltas["policies"], 6);
  ASSERT_GE(expected_deltas["pods"], 7);
  for (const auto& [delta_of, kind] :
       std::vector<std::pair<std::string, std::string>>{{"pods", "pod"}, {"policies", "policy"}}) {
    const double counted =
        Sample(metrics, absl::StrCat("np_agent_delta_syncs_total{kind=\"", kind, "\"}"));
    EXPECT_GE(counted, expected_deltas[delta_of]) << kind;
    int logged = 0;
    const std::string needle = absl::StrCat("\"delta_of\":\"", delta_of, "\"");
    for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) {
      ++logged;
    }
    EXPECT_EQ(counted, logged) << kind;
  }
  EXPECT_THAT(log, ::testing::HasSubstr("spec.ingress[0].ports[0].port"));
  std::cout << GetParam() << ": " << probe_rounds << " probe rounds during updates, " << slow_probes
            << " allowed probes answered only on the patient retry\n"
            << metrics.substr(metrics.find("\r\n\r\n") + 4);

  // SIGTERM: exit 0, rules stay (the last step's verdicts still hold).
  ASSERT_EQ(kill(agent_pid_, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(agent_pid_, &status, 0), agent_pid_);
  agent_pid_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << AgentLog();
  EXPECT_THAT(Compare(objects), ::testing::IsEmpty()) << "after SIGTERM";

  // --remove: no program left, so every flow connects.
  ASSERT_EQ(RunNetpol({"agent", "--remove", "--backend", GetParam(), "--netns",
                       network_->NodeNetns(kNode), "--interfaces", Interfaces()}),
            0);
  std::map<std::string, std::string> no_policies;
  for (const auto& [key, json] : objects) {
    if (key.rfind("NetworkPolicy ", 0) != 0) no_policies[key] = json;
  }
  EXPECT_THAT(Compare(no_policies), ::testing::IsEmpty()) << "after --remove";
}

INSTANTIATE_TEST_SUITE_P(Backends, AgentKernelTest, ::testing::Values("nft", "iptables", "ebpf"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace np::agent
