// The probe harness on real namespaces (root only; skips otherwise): it passes a correct
// backend and catches wrong ones — a backend that enforces nothing, and a backend whose
// replace is not atomic (the update test must see the gap). It cleans up after itself, after
// a signal, and after a dead harness; and it leaves the caller's own namespace untouched.
#include "np/probe/harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "np/backends/backend.h"
#include "np/backends/util.h"
#include "np/loader.h"

namespace np::probe {
namespace {

constexpr char kAgent[] = "np/probe/probe_agent";

Cluster Load(const std::string& file) {
  ClusterLoader loader;
  EXPECT_TRUE(loader.AddPath(absl::StrCat("testdata/upstream/", file)).ok());
  absl::StatusOr<Cluster> cluster = loader.Build();
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  return *cluster;
}

std::vector<std::string> OurNamespaces(pid_t pid) {
  std::vector<std::string> out;
  DIR* dir = opendir("/run/netns");
  if (dir == nullptr) return out;
  std::string prefix = absl::StrCat("npprobe-", pid, "-");
  while (dirent* e = readdir(dir)) {
    if (absl::StartsWith(e->d_name, prefix)) out.push_back(e->d_name);
  }
  closedir(dir);
  return out;
}

// Enforces nothing.
class NoopBackend : public backends::Backend {
 public:
  std::string name() const override { return "noop"; }
  absl::StatusOr<ir::BackendCapacity> Capacity(const ir::CompiledPolicy&) const override {
    return ir::BackendCapacity();
  }
  absl::StatusOr<std::string> Render(const ir::CompiledPolicy&) const override { return ""; }
  absl::Status Apply(const ir::CompiledPolicy&, const backends::Attachment&) override {
    return absl::OkStatus();
  }
  absl::Status Remove(const backends::Attachment&) override { return absl::OkStatus(); }
  absl::StatusOr<std::string> Explain(const ir::CompiledPolicy&,
                                      const backends::FlowQuery&) const override {
    return "";
  }
};

// nft, but replacing in two steps: remove, a pause, then the new program. Not atomic.
class TwoStepNft : public backends::Backend {
 public:
  TwoStepNft() : nft_(backends::MakeBackend("nft")) {}
  std::string name() const override { return "two-step-nft"; }
  absl::StatusOr<ir::BackendCapacity> Capacity(const ir::CompiledPolicy& ir) const override {
    return nft_->Capacity(ir);
  }
  absl::StatusOr<std::string> Render(const ir::CompiledPolicy& ir) const override {
    return nft_->Render(ir);
  }
  absl::Status Apply(const ir::CompiledPolicy& ir, const backends::Attachment& a) override {
    if (absl::Status s = nft_->Remove(a); !s.ok()) return s;
    usleep(30000);
    return nft_->Apply(ir, a);
  }
  absl::Status Remove(const backends::Attachment& a) override { return nft_->Remove(a); }
  absl::StatusOr<std::string> Explain(const ir::CompiledPolicy& ir,
                                      const backends::FlowQuery& f) const override {
    return nft_->Explain(ir, f);
  }

 protected:
  std::unique_ptr<backends::Backend> nft_;
};

// nft, but with a window at every replace in which a drop-everything table stands in front
// of the program: flows that both programs allow are dropped for 30 ms.
class DropWindowNft : public TwoStepNft {
 public:
  std::string name() const override { return "drop-window-nft"; }
  absl::Status Apply(const ir::CompiledPolicy& ir, const backends::Attachment& a) override {
    const std::string drop_all =
        "table inet npdrop {\n chain f {\n type filter hook forward priority -10; "
        "policy drop;\n }\n}\n";
    if (absl::Status s = backends::RunCommand({"nft", "-f", "-"}, drop_all, a.netns).status();
        !s.ok()) {
      return s;
    }
    usleep(30000);
    if (absl::Status s = nft_->Apply(ir, a); !s.ok()) return s;
    return backends::RunCommand({"nft", "delete", "table", "inet", "npdrop"}, "", a.netns)
        .status();
  }
};

PodSpec NetPod(const std::string& key, const std::string& ip, const std::string& node = "n1") {
  absl::StatusOr<IpAddress> address = IpAddress::Parse(ip);
  return PodSpec{key, {*address}, node};
}

TEST(ChurnNetworkSpec, AddedDeletedRelabelledAndReusedAddresses) {
  NetworkSpec a{{NetPod("x/a", "10.0.0.1"), NetPod("x/b", "10.0.0.2"), NetPod("x/gone", "10.0.0.3")}};
  NetworkSpec b{{NetPod("x/a", "10.0.0.1"), NetPod("x/new", "10.0.0.2"), NetPod("x/added", "10.0.0.4")}};
  std::vector<std::string> notes;
  absl::StatusOr<NetworkSpec> joined = ChurnNetworkSpec(a, b, &notes);
  ASSERT_TRUE(joined.ok()) << joined.status();
  ASSERT_EQ(joined->pods.size(), 4u);
  EXPECT_EQ(joined->pods[0].key, "x/a");
  EXPECT_EQ(joined->pods[1].key, "x/b|x/new");  // one namespace for the reused address
  EXPECT_EQ(joined->pods[2].key, "x/gone");
  EXPECT_EQ(joined->pods[3].key, "x/added");
  EXPECT_EQ(notes.size(), 3u);  // reused, only in b, only in a
  // The same pods: the same network, nothing to note.
  notes.clear();
  joined = ChurnNetworkSpec(a, a, &notes);
  ASSERT_TRUE(joined.ok());
  EXPECT_TRUE(*joined == a);
  EXPECT_TRUE(notes.empty());
  // A pod moved to another address, or to another node: refused.
  EXPECT_FALSE(ChurnNetworkSpec(a, NetworkSpec{{NetPod("x/a", "10.0.0.9")}}, &notes).ok());
  EXPECT_FALSE(ChurnNetworkSpec(a, NetworkSpec{{NetPod("x/a", "10.0.0.1", "n2")}}, &notes).ok());
}

class HarnessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    options_.agent_command = {kAgent};
  }
  HarnessOptions options_;
};

TEST_F(HarnessTest, NftMatchesTheEngineAndJsonHasTheMatrixShape) {
  options_.backend = "nft";
  Harness harness(options_);
  for (const char* file : {"default-deny-ingress.yaml", "egress-cidr-except.yaml",
                           "ingress-on-one-named-port.yaml", "udp-ports.yaml"}) {
    absl::StatusOr<ScenarioReport> report = harness.Probe(Load(file), file);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->mismatches, 0) << FormatText(*report);
    // 9 pods, 81 ordered pairs, 2 families, TCP+UDP, ports 80 and 81; then each external
    // address to and from each pod.
    EXPECT_EQ(report->probes,
              81 * 2 * 2 * 2 + static_cast<int>(report->externals.size()) * 9 * 2 * 2 * 2);
    EXPECT_FALSE(report->externals.empty());
    std::string json = FormatJson(*report);
    EXPECT_TRUE(absl::StartsWith(
        json, "{\"pods\": [\"x/a\", \"x/b\", \"x/c\", \"y/a\", \"y/b\", \"y/c\", \"z/a\", "
              "\"z/b\", \"z/c\"], \"matrices\": [{\"protocol\": \"TCP\", \"port\": 80, "
              "\"allowed\": [[true, "))
        << json;
  }
  // The namespaces were reused (same pods): only one set of them exists.
  EXPECT_EQ(OurNamespaces(getpid()).size(), 11u);  // node, 9 pods, external addresses
  ASSERT_TRUE(harness.Close().ok());
  EXPECT_TRUE(OurNamespaces(getpid()).empty());
}

// Pods on three nodes: each node's namespace gets the program compiled for that node, and
// a fabric namespace routes between the nodes.
TEST_F(HarnessTest, SeveralNodes) {
  for (const char* file : {"ingress-and-egress-together.yaml", "egress-cidr-except.yaml"}) {
    ClusterObjects objects = Load(file).ToObjects();
    for (auto& pod : objects.pods) {
      const std::string& ns = pod.object.metadata().namespace_();
      if (ns == "z") pod.object.mutable_spec()->set_nodename("node-2");
      if (ns == "y" && pod.object.metadata().name() == "b") {
        pod.object.mutable_spec()->set_nodename("node-3");
      }
    }
    absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    Harness harness(options_);
    absl::StatusOr<ScenarioReport> report = harness.Probe(*cluster, file);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->nodes, (std::vector<std::string>{"node-1", "node-2", "node-3"}));
    EXPECT_EQ(report->mismatches, 0) << FormatText(*report);
    EXPECT_EQ(OurNamespaces(getpid()).size(), 3u + 1 + 9 + 1);  // nodes, fabric, pods, ext
  }
  EXPECT_TRUE(OurNamespaces(getpid()).empty());
}

// Addresses outside the cluster: one per CIDR class of the program (and any given), probed
// to and from every pod.
TEST_F(HarnessTest, ExternalAddresses) {
  options_.protocols = {Protocol::kTCP};
  options_.ports = {80};
  options_.external_addresses = {*IpAddress::Parse("198.51.100.7"),
                                 *IpAddress::Parse("10.1.0.2")};  // a pod's: ignored
  Harness harness(options_);
  absl::StatusOr<ScenarioReport> report =
      harness.Probe(Load("egress-cidr-except.yaml"), "egress-cidr-except");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->mismatches, 0) << FormatText(*report);
  // x/a may reach 0.0.0.0/4 except x/b: an address inside the block and one outside it are
  // among the samples, and both answers are what the engine says.
  bool inside = false, outside = false, given = false;
  for (const IpAddress& a : report->externals) {
    EXPECT_FALSE(a == *IpAddress::Parse("10.1.0.2"));
    if (a == *IpAddress::Parse("198.51.100.7")) given = true;
    if (a.is_v4() && a.v4() < 0x10000000u) inside = true;
    if (a.is_v4() && a.v4() >= 0x10000000u) outside = true;
  }
  EXPECT_TRUE(inside && outside && given) << FormatText(*report);
  ASSERT_EQ(report->external_matrices.size(), 1u);
  int outbound_from_xa_allowed = 0;
  const size_t pods = report->pods.size();
  for (size_t e = 0; e < report->externals.size(); ++e) {
    const ProbeCell& c = report->external_matrices[0].outbound[e * pods + 0];  // x/a -> e
    if (c.probed && c.observed) ++outbound_from_xa_allowed;
  }
  EXPECT_GT(outbound_from_xa_allowed, 0);
  EXPECT_LT(outbound_from_xa_allowed, static_cast<int>(report->externals.size()));
}

// Scenarios that reuse the network change the external addresses: when a family's last one
// goes, the kernel drops the external namespace's routes of that family; an address that
// comes back must still be reachable.
TEST_F(HarnessTest, ExternalAddressesComeBackAfterAScenarioWithout) {
  options_.protocols = {Protocol::kTCP};
  options_.ports = {80};
  options_.sample_external = false;
  Harness harness(options_);
  const Cluster cluster = Load("allow-all.yaml");
  for (bool with_external : {true, false, true}) {
    harness.set_external_addresses(
        with_external ? std::vector<IpAddress>{*IpAddress::Parse("198.51.100.7")}
                      : std::vector<IpAddress>{});
    absl::StatusOr<ScenarioReport> report = harness.Probe(cluster, "allow-all");
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->mismatches, 0) << FormatText(*report);
    EXPECT_EQ(report->externals.size(), with_external ? 1u : 0u);
  }
}

// Policy tiers reach the kernel: upstream's CNPAdminTierEgressNodePeers state (an Admin
// ClusterNetworkPolicy with node and CIDR peers, two Nodes) probed through nft, its node
// addresses (the flows' IP ends) among the external addresses.
TEST_F(HarnessTest, TieredClusterMatchesTheEngine) {
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddPath("testdata/tiers/v1alpha2/admin-egress-node-peers.yaml").ok());
  absl::StatusOr<Cluster> cluster = loader.Build();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_GT(cluster->tier_policy_count(), 0);
  options_.protocols = {Protocol::kTCP};
  options_.families = {AddressFamily::kIPv4};
  options_.external_addresses = {*IpAddress::Parse("172.18.0.2"), *IpAddress::Parse("172.18.0.3")};
  Harness harness(options_);
  absl::StatusOr<ScenarioReport> report = harness.Probe(*cluster, "admin-egress-node-peers");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->mismatches, 0) << FormatText(*report);
  // The Admin tier denies some flows to the nodes and allows others (upstream's expectations).
  int denied = 0, allowed = 0;
  for (const ExternalMatrix& m : report->external_matrices) {
    for (const ProbeCell& c : m.outbound) {
      if (!c.probed) continue;
      (c.observed ? allowed : denied)++;
    }
  }
  EXPECT_GT(denied, 0);
  EXPECT_GT(allowed, 0);
}

TEST_F(HarnessTest, CatchesABackendThatEnforcesNothing) {
  options_.backend_factory = [] { return std::make_unique<NoopBackend>(); };
  options_.sample_external = false;
  options_.protocols = {Protocol::kTCP};
  options_.ports = {80};
  options_.retry_timeout_ms = 500;
  Harness harness(options_);
  absl::StatusOr<ScenarioReport> report =
      harness.Probe(Load("default-deny-ingress.yaml"), "default-deny-ingress");
  ASSERT_TRUE(report.ok()) << report.status();
  // x's pods deny ingress from everyone but themselves: 3 rows x 8 other pods... every
  // flow into x (from a different pod) connects, on both families.
  EXPECT_EQ(report->mismatches, 2 * (9 * 3 - 3)) << FormatText(*report);
  EXPECT_TRUE(absl::StrContains(FormatText(*report), "connected, the engine denies"));
}

TEST_F(HarnessTest, UpdateTestHoldsForNftAndCatchesANonAtomicReplace) {
  Cluster before = Load("stacked-policies-overlapping-pod-selectors-before.yaml");
  Cluster after = Load("stacked-policies-overlapping-pod-selectors-after.yaml");
  options_.protocols = {Protocol::kTCP};
  {
    Harness harness(options_);
    absl::StatusOr<UpdateReport> report = harness.UpdateTest(before, after, 30);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_GT(report->denied_flows, 0);
    EXPECT_EQ(report->swaps, 30);
    EXPECT_GE(report->rounds, 3);
    EXPECT_TRUE(report->violations.empty()) << FormatUpdateReport(*report);
    // Flows both sets allow keep connecting through the swaps: nft's generation switch
    // never closes them.
    EXPECT_EQ(report->allowed_failures, 0) << FormatUpdateReport(*report);
    EXPECT_TRUE(report->passed());
  }
  {
    options_.backend_factory = [] { return std::make_unique<DropWindowNft>(); };
    Harness harness(options_);
    absl::StatusOr<UpdateReport> report = harness.UpdateTest(before, after, 10);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->violations.empty()) << FormatUpdateReport(*report);
    EXPECT_GT(report->allowed_failures, 0) << FormatUpdateReport(*report);
    EXPECT_FALSE(report->passed());
    // Probed again after the swaps, the dropped flows connect: it was the window.
    ASSERT_FALSE(report->allowed_failure_examples.empty());
    EXPECT_TRUE(absl::StrContains(report->allowed_failure_examples[0],
                                  "after the swaps: connected"))
        << FormatUpdateReport(*report);
  }
  {
    options_.backend_factory = [] { return std::make_unique<TwoStepNft>(); };
    Harness harness(options_);
    absl::StatusOr<UpdateReport> report = harness.UpdateTest(before, after, 30);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_FALSE(report->violations.empty()) << FormatUpdateReport(*report);
  }
}

TEST_F(HarnessTest, NothingOutsideItsNamespaces) {
  absl::StatusOr<std::string> addresses = backends::RunCommand({"ip", "-o", "addr"});
  absl::StatusOr<std::string> routes4 = backends::RunCommand({"ip", "-4", "route"});
  absl::StatusOr<std::string> routes6 = backends::RunCommand({"ip", "-6", "route"});
  absl::StatusOr<std::string> links = backends::RunCommand({"ip", "-o", "link"});
  ASSERT_TRUE(addresses.ok() && routes4.ok() && routes6.ok() && links.ok());
  Cluster cluster = Load("allow-all.yaml");
  absl::StatusOr<NetworkSpec> spec = NetworkSpecOf(cluster);
  ASSERT_TRUE(spec.ok());
  absl::StatusOr<std::unique_ptr<TestNetwork>> net = TestNetwork::Create(*spec, {kAgent});
  ASSERT_TRUE(net.ok()) << net.status();
  // While it exists, the caller's namespace has not changed.
  EXPECT_EQ(*backends::RunCommand({"ip", "-o", "addr"}), *addresses);
  EXPECT_EQ(*backends::RunCommand({"ip", "-4", "route"}), *routes4);
  EXPECT_EQ(*backends::RunCommand({"ip", "-6", "route"}), *routes6);
  EXPECT_EQ(*backends::RunCommand({"ip", "-o", "link"}), *links);
  // Pods reach each other, and nothing else: an address outside the test network has no
  // route in the node namespace.
  ASSERT_TRUE((*net)->EnsureListening({{Protocol::kTCP, 80}, {Protocol::kUDP, 80}}).ok());
  std::vector<ProbeRequest> requests = {
      {0, std::nullopt, *IpAddress::Parse("10.2.0.2"), Protocol::kTCP, 80, 1000},
      {0, std::nullopt, *IpAddress::Parse("fd00:10:2::2"), Protocol::kUDP, 80, 1000},
      {0, std::nullopt, *IpAddress::Parse("192.0.2.1"), Protocol::kTCP, 80, 300},
      {0, std::nullopt, *IpAddress::Parse("2001:db8::1"), Protocol::kUDP, 80, 300},
  };
  absl::StatusOr<std::vector<ProbeOutcome>> out = (*net)->Run(requests);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE((*out)[0].connected()) << (*out)[0].status;
  EXPECT_TRUE((*out)[1].connected()) << (*out)[1].status;
  EXPECT_FALSE((*out)[2].connected());
  EXPECT_FALSE((*out)[3].connected());
  ASSERT_TRUE((*net)->Destroy().ok());
  EXPECT_TRUE(OurNamespaces(getpid()).empty());
  EXPECT_EQ(*backends::RunCommand({"ip", "-o", "link"}), *links);
}

// The update test's probe of a both-allowed flow (one packet, `once:WATCH_MS`) tells a slow
// answer from a dropped packet: a destination agent stopped for 1.5 s answers late ("late",
// where a probe without the watch reads "timeout": the old design's false drop); a dropped
// datagram stays "timeout"; a TCP handshake that needed a re-sent SYN is "resent", however
// fast it then completed.
TEST_F(HarnessTest, OncePacketsTellALateAnswerFromADrop) {
  Cluster cluster = Load("allow-all.yaml");
  absl::StatusOr<NetworkSpec> spec = NetworkSpecOf(cluster);
  ASSERT_TRUE(spec.ok());
  absl::StatusOr<std::unique_ptr<TestNetwork>> net = TestNetwork::Create(*spec, {kAgent});
  ASSERT_TRUE(net.ok()) << net.status();
  ASSERT_TRUE((*net)->EnsureListening({{Protocol::kTCP, 80}, {Protocol::kUDP, 80},
                                       {Protocol::kUDP, 81}}).ok());
  // Pod 0 probes pods 1 and 2 on their first addresses.
  const IpAddress to1 = spec->pods[1].ips.front(), to2 = spec->pods[2].ips.front();
  const std::string node = (*net)->NodeNetns((*net)->nodes().front());

  // Late: pod 1's agent (its UDP echo) stopped for 1.5 s.
  absl::StatusOr<std::string> pids =
      backends::RunCommand({"ip", "netns", "pids", (*net)->PodNetns(1)});
  ASSERT_TRUE(pids.ok() && !pids->empty()) << pids.status();
  std::vector<pid_t> stopped;
  for (absl::string_view p : absl::StrSplit(*pids, '\n', absl::SkipWhitespace())) {
    int pid;
    if (absl::SimpleAtoi(p, &pid) && pid > 1) stopped.push_back(pid);
  }
  for (pid_t pid : stopped) kill(pid, SIGSTOP);
  std::thread resume([&stopped] {
    usleep(1500000);
    for (pid_t pid : stopped) kill(pid, SIGCONT);
  });
  std::vector<ProbeRequest> slow = {
      {0, std::nullopt, to1, Protocol::kUDP, 80, 300, /*once=*/true, /*watch_ms=*/3000},
      {0, std::nullopt, to1, Protocol::kUDP, 81, 300, /*once=*/true, /*watch_ms=*/0},
  };
  absl::StatusOr<std::vector<ProbeOutcome>> out = (*net)->Run(slow);
  resume.join();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].status, "late") << (*out)[0].millis;
  EXPECT_GE((*out)[0].millis, 1000);
  EXPECT_EQ((*out)[1].status, "timeout");  // without the watch: a slow agent reads as a drop

  // Dropped: the node drops UDP to pod 2, and only the first SYN to it (quota: one SYN's
  // bytes).
  const std::string drop =
      absl::StrCat("table inet h85drop {\n chain f {\n type filter hook forward priority -10;\n",
                   " udp dport 80 drop\n",
                   " tcp dport 80 tcp flags & (syn|ack) == syn quota until 100 bytes drop\n",
                   " }\n}\n");
  ASSERT_TRUE(backends::RunCommand({"nft", "-f", "-"}, drop, node).ok());
  std::vector<ProbeRequest> dropped = {
      {0, std::nullopt, to2, Protocol::kUDP, 80, 300, /*once=*/true, /*watch_ms=*/2000},
      {0, std::nullopt, to2, Protocol::kTCP, 80, 900, /*once=*/true, /*watch_ms=*/3000},
  };
  out = (*net)->Run(dropped);
  EXPECT_TRUE(backends::RunCommand({"nft", "delete", "table", "inet", "h85drop"}, "", node).ok());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].status, "timeout") << (*out)[0].detail;
  EXPECT_EQ((*out)[1].status, "resent") << (*out)[1].detail;
  EXPECT_GE((*out)[1].millis, 900);
  // Undisturbed, the same probes are plain "ok".
  out = (*net)->Run({slow[0], dropped[0], dropped[1]});
  ASSERT_TRUE(out.ok()) << out.status();
  for (const ProbeOutcome& o : *out) EXPECT_EQ(o.status, "ok") << o.detail;
  ASSERT_TRUE((*net)->Destroy().ok());
}

TEST_F(HarnessTest, SignalCleansUp) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    InstallSignalHandlers();
    Harness harness(options_);
    Cluster cluster = Load("default-deny-all.yaml");
    for (int i = 0; i < 200 && !Interrupted(); ++i) (void)harness.Probe(cluster);
    _exit(harness.Close().ok() && Interrupted() ? 0 : 1);
  }
  // Wait until its namespaces exist, then interrupt it.
  for (int i = 0; i < 100 && OurNamespaces(child).size() < 10; ++i) usleep(50000);
  EXPECT_GE(OurNamespaces(child).size(), 10u);
  usleep(300000);
  kill(child, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(OurNamespaces(child).empty());
}

TEST_F(HarnessTest, CleanupRemovesWhatADeadHarnessLeft) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    Cluster cluster = Load("allow-all.yaml");
    absl::StatusOr<NetworkSpec> spec = NetworkSpecOf(cluster);
    absl::StatusOr<std::unique_ptr<TestNetwork>> net = TestNetwork::Create(*spec, {kAgent});
    if (!net.ok()) _exit(2);
    (void)net->release();  // leak it, and die as a killed harness would
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(OurNamespaces(child).size(), 10u);
  absl::StatusOr<std::vector<std::string>> removed = CleanupLeftovers();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_GE(removed->size(), 10u);
  EXPECT_TRUE(OurNamespaces(child).empty());
  // Our own (living) namespaces are not touched.
  Harness harness(options_);
  ASSERT_TRUE(harness.Probe(Load("allow-all.yaml")).ok());
  ASSERT_TRUE(CleanupLeftovers().ok());
  EXPECT_EQ(OurNamespaces(getpid()).size(), 11u);
}

}  // namespace
}  // namespace np::probe
