// The loader on real interfaces, in a network namespace this test creates (and always
// deletes): Apply attaches to each endpoint's interface, the next Apply (also from another
// Backend instance) finds the live generation and hands its conntrack on, errors leave
// nothing half-done, Remove takes everything away. Runs as root; skips otherwise.
// Traffic itself is checked by `netpol probe --backend ebpf` (probe_test.sh).
#include "np/backends/ebpf/loader.h"

#include <bpf/bpf.h>
#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "np/backends/ebpf/ebpf_backend.h"
#include "np/backends/ebpf/testing/random_ir.h"
#include "np/backends/util.h"

namespace np::backends::ebpf {
namespace {

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    netns_ = absl::StrCat("npebpf-", getpid(), "-loader");
    ASSERT_TRUE(RunCommand({"ip", "netns", "add", netns_}).ok());
    created_ = true;
    for (const char* pair : {"0", "1"}) {
      ASSERT_TRUE(RunCommand({"ip", "-n", netns_, "link", "add", absl::StrCat("h", pair), "type",
                              "veth", "peer", "name", absl::StrCat("c", pair)})
                      .ok());
      ASSERT_TRUE(RunCommand({"ip", "-n", netns_, "link", "set", absl::StrCat("h", pair), "up"})
                      .ok());
    }
  }
  void TearDown() override {
    if (created_) EXPECT_TRUE(RunCommand({"ip", "netns", "del", netns_}).ok());
  }
  std::string Tc(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"tc", "-n", netns_};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<std::string> out = RunCommand(argv);
    return out.ok() ? *out : out.status().ToString();
  }
  Attachment Both() const { return Attachment{{{"x/a", "h0"}, {"x/b", "h1"}}, netns_}; }
  // What holds np's program on `hook` of `dev` (FindAttached, in netns_): "tcx <name>",
  // "tc <name>" or "none".
  std::string Attached(const std::string& dev, uint32_t hook);
  uint32_t AttachedId(const std::string& dev, uint32_t hook);
  // How many programs tcx `hook` of `dev` runs (any program, np's or not).
  int TcxCount(const std::string& dev, uint32_t hook);

  std::string netns_;
  bool created_ = false;
};

// Runs `f` on a thread of its own inside network namespace `netns`.
template <typename F>
void InNamespace(const std::string& netns, F&& f) {
  std::thread t([&] {
    int ns = open(("/var/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_TRUE(ns >= 0 && setns(ns, CLONE_NEWNET) == 0) << netns;
    close(ns);
    f();
  });
  t.join();
}

std::string ProgramNameOf(uint32_t id) {
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return "gone";
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  std::string name = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.name : "?";
  close(fd);
  return name;
}

std::string LoaderTest::Attached(const std::string& dev, uint32_t hook) {
  AttachedProgram a;
  InNamespace(netns_, [&] { a = FindAttached(static_cast<int>(if_nametoindex(dev.c_str())), hook); });
  if (a.id == 0) return "none";
  return absl::StrCat(a.tcx ? "tcx " : "tc ", ProgramNameOf(a.id));
}

uint32_t LoaderTest::AttachedId(const std::string& dev, uint32_t hook) {
  AttachedProgram a;
  InNamespace(netns_, [&] { a = FindAttached(static_cast<int>(if_nametoindex(dev.c_str())), hook); });
  return a.id;
}

int LoaderTest::TcxCount(const std::string& dev, uint32_t hook) {
  int count = -1;
  InNamespace(netns_, [&] {
    // BPF_PROG_QUERY of tcx (linux 6.6: BPF_TCX_INGRESS = 46, BPF_TCX_EGRESS = 47), asked
    // here without the loader's code.
    uint32_t ids[16];
    bpf_attr attr{};
    attr.query.target_fd = if_nametoindex(dev.c_str());
    attr.query.attach_type = hook == NP_HOOK_FROM_ENDPOINT ? 46 : 47;
    attr.query.prog_ids = reinterpret_cast<uint64_t>(ids);
    attr.query.prog_cnt = 16;
    if (syscall(SYS_bpf, BPF_PROG_QUERY, &attr, sizeof(attr)) == 0) {
      count = static_cast<int>(attr.query.prog_cnt);
    } else if (errno == ENOENT) {
      count = 0;
    }
  });
  return count;
}

TEST_F(LoaderTest, ApplyReplacesGenerationsAndRemoveCleansUp) {
  absl::StatusOr<MapContents> maps = BuildMaps(testing::TwoPods());
  ASSERT_TRUE(maps.ok());
  std::vector<InterfaceEndpoint> interfaces = {{"h0", 0}, {"h1", 1}};
  absl::StatusOr<ApplyReport> first = ApplyGeneration(*maps, interfaces, netns_);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->generation, 1u);
  EXPECT_FALSE(first->conntrack_reused);
  EXPECT_EQ(first->interfaces, 2);
  EXPECT_TRUE(first->tcx);  // kernel 6.6+
  for (const char* dev : {"h0", "h1"}) {
    EXPECT_EQ(Attached(dev, NP_HOOK_FROM_ENDPOINT), "tcx np_from_ep");
    EXPECT_EQ(Attached(dev, NP_HOOK_TO_ENDPOINT), "tcx np_to_ep");
    // No qdisc: tcx needs none.
    EXPECT_FALSE(absl::StrContains(Tc({"qdisc", "show", "dev", dev}), "clsact"));
  }
  const uint32_t before = AttachedId("h0", NP_HOOK_FROM_ENDPOINT);

  absl::StatusOr<ApplyReport> second = ApplyGeneration(*maps, interfaces, netns_);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->generation, 2u);
  EXPECT_TRUE(second->conntrack_reused);
  // Replaced in place: one np program per hook, a new program id.
  EXPECT_NE(AttachedId("h0", NP_HOOK_FROM_ENDPOINT), before);
  EXPECT_EQ(TcxCount("h0", NP_HOOK_FROM_ENDPOINT), 1);
  EXPECT_EQ(TcxCount("h0", NP_HOOK_TO_ENDPOINT), 1);

  // Another Backend instance (as another process would) continues the sequence.
  std::unique_ptr<Backend> backend = MakeEbpfBackend();
  ASSERT_TRUE(backend->Apply(testing::TwoPods(true), Both()).ok());
  absl::StatusOr<ApplyReport> fourth = ApplyGeneration(*maps, interfaces, netns_);
  ASSERT_TRUE(fourth.ok());
  EXPECT_EQ(fourth->generation, 4u);

  ASSERT_TRUE(backend->Remove(Both()).ok());
  for (const char* dev : {"h0", "h1"}) {
    EXPECT_FALSE(absl::StrContains(Tc({"qdisc", "show", "dev", dev}), "clsact"));
    EXPECT_EQ(Attached(dev, NP_HOOK_FROM_ENDPOINT), "none");
    EXPECT_EQ(Attached(dev, NP_HOOK_TO_ENDPOINT), "none");
  }
  EXPECT_TRUE(backend->Remove(Both()).ok());  // idempotent
  // After Remove the next Apply starts over.
  absl::StatusOr<ApplyReport> fresh = ApplyGeneration(*maps, interfaces, netns_);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->generation, 1u);
  EXPECT_TRUE(backend->Remove(Both()).ok());
}

// np_runs (np_abi.h) of `live`, summed over the CPUs, by parity.
std::array<uint64_t, 2> RunsInProgress(const LiveMaps& live) {
  std::vector<np_runs> per_cpu(static_cast<size_t>(libbpf_num_possible_cpus()));
  const uint32_t zero = 0;
  std::array<uint64_t, 2> sum = {0, 0};
  if (bpf_map_lookup_elem(live.runs, &zero, per_cpu.data()) != 0) return {~0ull, ~0ull};
  for (const np_runs& r : per_cpu) {
    sum[0] += r.active[0];
    sum[1] += r.active[1];
  }
  return sum;
}

// Pretends that `count` runs which read a generation of `parity` are in progress on CPU 0.
void SetRunsInProgress(const LiveMaps& live, int parity, uint64_t count) {
  std::vector<np_runs> per_cpu(static_cast<size_t>(libbpf_num_possible_cpus()));
  const uint32_t zero = 0;
  ASSERT_EQ(bpf_map_lookup_elem(live.runs, &zero, per_cpu.data()), 0);
  per_cpu[0].active[parity] = count;
  ASSERT_EQ(bpf_map_update_elem(live.runs, &zero, per_cpu.data(), BPF_ANY), 0);
}

uint32_t LiveGenerationNumber(const LiveMaps& live) {
  np_config c{};
  const uint32_t zero = 0;
  return bpf_map_lookup_elem(live.config, &zero, &c) == 0 ? c.generation : 0;
}

// The program counts each run under the generation it read while it decides, and takes
// the count back when done (a run seen in progress from another thread, none left after).
TEST_F(LoaderTest, ProgramRunsAreCountedWhileTheyDecide) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "needs two CPUs";
  absl::StatusOr<MapContents> maps = BuildMaps(testing::TwoPods());
  ASSERT_TRUE(maps.ok());
  absl::StatusOr<ApplyReport> applied = ApplyGeneration(*maps, {{"h0", 0}, {"h1", 1}}, netns_);
  ASSERT_TRUE(applied.ok()) << applied.status();
  const LiveMaps& live = *applied->live;
  testing::FrameSpec spec;
  spec.src = *IpAddress::Parse("10.0.0.1");
  spec.dst = *IpAddress::Parse("10.0.0.2");
  const std::string frame = testing::Frame(spec);
  std::atomic<bool> done{false};
  absl::Status ran = absl::OkStatus();
  // The runner and the reader on two CPUs: a run is never preempted, so a reader on its
  // CPU could never meet one in progress.
  auto pin = [](int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
  };
  std::thread runner([&] {
    pin(0);
    for (int i = 0; i < 20 && !done; ++i) {
      absl::StatusOr<TestRunResult> r = TestRun(live.from_program, frame, 1, 200000);
      if (!r.ok()) ran = r.status();
    }
    done = true;
  });
  cpu_set_t before;
  sched_getaffinity(0, sizeof(before), &before);
  pin(1);
  const int parity = static_cast<int>(live.generation & 1u);
  bool seen = false;
  uint64_t reads = 0;
  while (!done && !seen) {
    ++reads;
    const std::array<uint64_t, 2> now = RunsInProgress(live);
    EXPECT_EQ(now[1 - parity], 0u);
    seen = now[parity] == 1;
  }
  done = true;
  runner.join();
  sched_setaffinity(0, sizeof(before), &before);
  EXPECT_TRUE(ran.ok()) << ran;
  EXPECT_TRUE(seen) << "no run of generation " << live.generation << " seen counted in "
                    << reads << " reads";
  EXPECT_EQ(RunsInProgress(live), (std::array<uint64_t, 2>{0, 0}));
}

// An in-place edit waits for the runs that read a generation before the previous edit's
// bump (np_runs), not for runs of the live generation, and gives up (nothing written) when
// they never end.
TEST_F(LoaderTest, EditsWaitForTheRunsOfTheGenerationBeforeTheLastBump) {
  absl::StatusOr<MapContents> maps = BuildMaps(testing::TwoPods());
  ASSERT_TRUE(maps.ok());
  absl::StatusOr<ApplyReport> applied = ApplyGeneration(*maps, {{"h0", 0}, {"h1", 1}}, netns_);
  ASSERT_TRUE(applied.ok()) << applied.status();
  LiveMaps& live = *applied->live;
  const uint32_t first = live.generation;
  ASSERT_TRUE(EditIdentities(live, IdentityEdit{}).ok());  // a bump, nothing else
  ASSERT_EQ(LiveGenerationNumber(live), first + 1);
  // A run that read `first` is still deciding, and one that read first + 1 (live).
  SetRunsInProgress(live, static_cast<int>(first & 1u), 1);
  SetRunsInProgress(live, static_cast<int>((first + 1) & 1u), 3);
  std::atomic<bool> edited{false};
  absl::Status second = absl::UnknownError("not run");
  std::thread editor([&] {
    second = EditIdentities(live, IdentityEdit{});
    edited = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(edited) << "the edit did not wait for the run of generation " << first;
  EXPECT_EQ(LiveGenerationNumber(live), first + 1);
  SetRunsInProgress(live, static_cast<int>(first & 1u), 0);  // that run ends
  editor.join();
  EXPECT_TRUE(second.ok()) << second;
  EXPECT_EQ(LiveGenerationNumber(live), first + 2);
  // The run of first + 1 never ends: the next edit gives up, writing nothing.
  absl::Status third = EditIdentities(live, IdentityEdit{});
  EXPECT_TRUE(absl::IsFailedPrecondition(third)) << third;
  EXPECT_EQ(LiveGenerationNumber(live), first + 2);
  SetRunsInProgress(live, static_cast<int>((first + 1) & 1u), 0);
  EXPECT_TRUE(EditIdentities(live, IdentityEdit{}).ok());
  EXPECT_EQ(LiveGenerationNumber(live), first + 3);
  std::unique_ptr<Backend> backend = MakeEbpfBackend();
  EXPECT_TRUE(backend->Remove(Both()).ok());
}

// The same wait across the u32 wrap of np_config.generation (maps.h NextGeneration): the
// edit that bumps 0xfffffffe goes to 1, the other parity, so a run that read 0xfffffffe
// is still told from runs of the live generation, and the next edit waits for it (here:
// gives up after np_runs' timeout, writing nothing, while it never ends).
TEST_F(LoaderTest, EditsWaitForTheRunsOfTheGenerationBeforeTheWrap) {
  absl::StatusOr<MapContents> maps = BuildMaps(testing::TwoPods());
  ASSERT_TRUE(maps.ok());
  absl::StatusOr<ApplyReport> applied = ApplyGeneration(*maps, {{"h0", 0}, {"h1", 1}}, netns_);
  ASSERT_TRUE(applied.ok()) << applied.status();
  LiveMaps& live = *applied->live;
  // As if 2^32 - 2 edits had gone by (both banks are equal after a load: any number is).
  np_config c = live.config_value;
  c.generation = 0xfffffffeu;
  const uint32_t zero = 0;
  ASSERT_EQ(bpf_map_update_elem(live.config, &zero, &c, BPF_ANY), 0);
  live.config_value = c;
  live.generation = c.generation;
  ASSERT_TRUE(EditIdentities(live, IdentityEdit{}).ok());
  ASSERT_EQ(LiveGenerationNumber(live), 1u);
  SetRunsInProgress(live, static_cast<int>(0xfffffffeu & 1u), 1);  // a run of 0xfffffffe
  absl::Status waited = EditIdentities(live, IdentityEdit{});
  EXPECT_TRUE(absl::IsFailedPrecondition(waited)) << waited;
  EXPECT_EQ(LiveGenerationNumber(live), 1u);
  SetRunsInProgress(live, static_cast<int>(0xfffffffeu & 1u), 0);  // that run ends
  EXPECT_TRUE(EditIdentities(live, IdentityEdit{}).ok());
  EXPECT_EQ(LiveGenerationNumber(live), 2u);
  std::unique_ptr<Backend> backend = MakeEbpfBackend();
  EXPECT_TRUE(backend->Remove(Both()).ok());
}

// An edit asks whether its generation still runs through the generation's own netlink
// socket (no namespace switch) where its programs are tc filters (kTcOnly), opens another
// one when that socket fails, and refuses, writing nothing, once another generation runs.
TEST_F(LoaderTest, EditsCheckTheLiveGenerationThroughTheirSocket) {
  absl::StatusOr<MapContents> maps = BuildMaps(testing::TwoPods());
  ASSERT_TRUE(maps.ok());
  SetAttachMode(AttachMode::kTcOnly);
  absl::StatusOr<ApplyReport> applied = ApplyGeneration(*maps, {{"h0", 0}, {"h1", 1}}, netns_);
  SetAttachMode(AttachMode::kTcxWhenAvailable);
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_FALSE(applied->tcx);
  LiveMaps& live = *applied->live;
  ASSERT_GE(live.netlink, 0);
  const uint32_t first = live.generation;
  EXPECT_TRUE(EditIdentities(live, IdentityEdit{}).ok());
  // A socket that fails (not a socket at all): another one is opened, the edit goes on.
  close(live.netlink);
  live.netlink = open("/dev/null", O_RDONLY | O_CLOEXEC);
  EXPECT_TRUE(EditIdentities(live, IdentityEdit{}).ok());
  EXPECT_EQ(LiveGenerationNumber(live), first + 2);
  int type = 0;
  socklen_t len = sizeof(type);
  EXPECT_EQ(getsockopt(live.netlink, SOL_SOCKET, SO_TYPE, &type, &len), 0);
  // Another generation replaces this one (through tcx: an upgrade): the edit refuses,
  // nothing written.
  absl::StatusOr<ApplyReport> next = ApplyGeneration(*maps, {{"h0", 0}, {"h1", 1}}, netns_);
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_TRUE(next->tcx);
  absl::Status refused = EditIdentities(live, IdentityEdit{});
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "another generation runs")) << refused;
  EXPECT_EQ(LiveGenerationNumber(live), first + 2);
  // The same through tcx (BPF_PROG_QUERY in the generation's namespace): edits go on while
  // it runs, and stop once another generation replaced it.
  LiveMaps& tcx_live = *next->live;
  EXPECT_TRUE(EditIdentities(tcx_live, IdentityEdit{}).ok());
  EXPECT_EQ(LiveGenerationNumber(tcx_live), next->generation + 1);
  absl::StatusOr<ApplyReport> third = ApplyGeneration(*maps, {{"h0", 0}, {"h1", 1}}, netns_);
  ASSERT_TRUE(third.ok()) << third.status();
  refused = EditIdentities(tcx_live, IdentityEdit{});
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "another generation runs")) << refused;
  EXPECT_TRUE(EditIdentities(*third->live, IdentityEdit{}).ok());
  std::unique_ptr<Backend> backend = MakeEbpfBackend();
  EXPECT_TRUE(backend->Remove(Both()).ok());
}

TEST_F(LoaderTest, BadAttachmentsAreErrors) {
  std::unique_ptr<Backend> backend = MakeEbpfBackend();
  absl::Status s = backend->Apply(testing::TwoPods(), Attachment{{{"x/a", "nosuch0"}}, netns_});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  s = backend->Apply(testing::TwoPods(), Attachment{{{"x/a", "h0"}}, "npebpf-no-such-netns"});
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(Attached("h0", NP_HOOK_FROM_ENDPOINT), "none");
  // A malformed IR never reaches the kernel.
  ir::CompiledPolicy bad = testing::TwoPods();
  bad.mutable_ipv4(0)->set_identity(99);
  EXPECT_FALSE(backend->Apply(bad, Both()).ok());
  EXPECT_EQ(Attached("h0", NP_HOOK_FROM_ENDPOINT), "none");
  // Not an error: the interface of a pod that is not an endpoint of the IR gets the
  // pass-through entry (NP_ENDPOINT_OUTSIDE), and such an interface that is gone is skipped.
  s = backend->Apply(testing::TwoPods(),
                     Attachment{{{"x/zz", "h0"}, {"x/gone", "nosuch0"}}, netns_});
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(Attached("h0", NP_HOOK_FROM_ENDPOINT), "tcx np_from_ep");
  EXPECT_TRUE(backend->Remove(Attachment{{{"x/zz", "h0"}}, netns_}).ok());
  // The caller's own namespace is where it was.
  char self[64] = {}, before[64] = {};
  ASSERT_GT(readlink("/proc/thread-self/ns/net", self, sizeof(self) - 1), 0);
  ASSERT_TRUE(backend->Apply(testing::TwoPods(), Both()).ok());
  ASSERT_GT(readlink("/proc/thread-self/ns/net", before, sizeof(before) - 1), 0);
  EXPECT_STREQ(self, before);
  EXPECT_TRUE(backend->Remove(Both()).ok());
}

}  // namespace
}  // namespace np::backends::ebpf

namespace np::backends::ebpf {
namespace {

// Pod churn through Backend::Update on one namespace, and each step's IR applied fresh
// (a new Backend, a new generation) on a twin namespace: after every step the maps the
// kernel holds must be the same entries (np_config's generation aside). The churn is
// seeded (NP_TEST_SEED replays it) and made of events of pods that are not on the node —
// added, deleted, relabelled into another identity, an address reused — which Update edits
// in place (EbpfLastUpdate says so), and events of the node's own pods, which it must not.
struct ChurnPod {
  int slot;      // address 10.1.0.<slot> and fd00:1::<slot>
  int identity;  // 1..3: a label class
};

// Up to 40 pods of other nodes at random slots of 10.1.0.0/24, marked in `used`.
std::vector<ChurnPod> FirstChurnPods(std::mt19937_64& rng, std::vector<bool>& used) {
  std::vector<ChurnPod> pods;
  for (int i = 0; i < 40; ++i) {
    int slot = 1 + static_cast<int>(rng() % 249);
    if (used[static_cast<size_t>(slot)]) continue;
    used[static_cast<size_t>(slot)] = true;
    pods.push_back({slot, 1 + static_cast<int>(rng() % 3)});
  }
  return pods;
}

// The churn's address `v` (10.x.0.y as a number) in `family` (0: itself, 1: fd00:x::y).
IpAddress ChurnAddress(int family, uint32_t v) {
  if (family == 0) return IpAddress::V4(v);
  uint8_t b[16] = {0xfd, 0x00, 0, static_cast<uint8_t>((v >> 16) & 0xff)};
  b[15] = static_cast<uint8_t>(v & 0xff);
  return IpAddress::V6Bytes(b);
}

// A pod of the node with no interface in the attachment: x/m<slot> at 10.0.0.<slot> and
// fd00::<slot> (slot 10..99), table 0 when selected.
struct ExtraLocalPod {
  int slot;
  int identity;
  bool selected;
};

// The node's pods: x/l0 (10.0.0.1, selected: ingress TCP 80 from identity 1, UDP 53 from
// identities 1 and 2, TCP 8080 from identity 0; egress isolated, TCP 443 to identity 3),
// x/l1 (10.0.0.2, not selected), and x/l2 (10.0.0.3) when `third_local`, of identities
// `local_identities` (1, 2, 3 unless relabelled), then `extra` (sorted by slot). The other
// pods of the cluster are `pods`. Identity 0 is everything outside the cluster.
ir::CompiledPolicy ChurnIr(const std::vector<ChurnPod>& pods, bool third_local,
                           std::array<int, 3> local_identities = {1, 2, 3},
                           const std::vector<ExtraLocalPod>& extra = {}) {
  ir::CompiledPolicy ir;
  for (int i = 0; i < 4; ++i) ir.add_identities()->set_id(static_cast<uint32_t>(i));
  ir.mutable_identities(0)->set_external(true);
  std::vector<std::pair<uint32_t, int>> v4;  // (last octets as a number, identity)
  v4.push_back({0x0a000001, local_identities[0]});
  v4.push_back({0x0a000002, local_identities[1]});
  if (third_local) v4.push_back({0x0a000003, local_identities[2]});
  for (const ExtraLocalPod& p : extra) v4.push_back({0x0a000000u + static_cast<uint32_t>(p.slot), p.identity});
  for (const ChurnPod& p : pods) v4.push_back({0x0a010000u + static_cast<uint32_t>(p.slot), p.identity});
  std::sort(v4.begin(), v4.end());
  for (int family = 0; family < 2; ++family) {
    auto address = [&](uint32_t v) { return ChurnAddress(family, v); };
    auto add = [&](const IpAddress& first, const IpAddress& last, int identity) {
      testing::AddRange(ir, first, last, static_cast<uint32_t>(identity));
    };
    IpAddress next = family == 0 ? *IpAddress::Parse("0.0.0.0") : *IpAddress::Parse("::");
    for (const auto& [v, identity] : v4) {
      IpAddress a = address(v);
      if (next < a) add(next, address(v - 1), 0);  // v - 1 stays in the same /16
      add(a, a, identity);
      next = address(v + 1);
    }
    add(next, family == 0 ? *IpAddress::Parse("255.255.255.255")
                          : *IpAddress::Parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        0);
  }
  for (std::vector<uint32_t> ids : {std::vector<uint32_t>{1}, {1, 2}, {3}, {0}}) {
    ir::PeerSet* s = ir.add_peer_sets();
    s->set_id(static_cast<uint32_t>(ir.peer_sets_size() - 1));
    for (uint32_t id : ids) s->add_identities(id);
  }
  ir::Table* t = ir.add_tables();
  t->mutable_ingress()->set_isolated(true);
  t->mutable_egress()->set_isolated(true);
  for (auto [d, proto, port, set] :
       {std::tuple<ir::DirectionPolicy*, ir::Protocol, uint32_t, uint32_t>{
            t->mutable_ingress(), ir::TCP, 80, 0},
        {t->mutable_ingress(), ir::UDP, 53, 1},
        {t->mutable_ingress(), ir::TCP, 8080, 3},
        {t->mutable_egress(), ir::TCP, 443, 2}}) {
    AddPortRule(d, proto, port, port, set);
  }
  for (int i = 0; i < (third_local ? 3 : 2); ++i) {
    ir::Endpoint* e = ir.add_endpoints();
    e->set_namespace_("x");
    e->set_name(absl::StrCat("l", i));
    e->add_ips(absl::StrCat("10.0.0.", i + 1));
    e->add_ips(absl::StrCat("fd00::", i + 1));
    e->set_selected(i == 0);
  }
  for (const ExtraLocalPod& p : extra) {
    ir::Endpoint* e = ir.add_endpoints();
    e->set_namespace_("x");
    e->set_name(absl::StrCat("m", p.slot));
    for (int family = 0; family < 2; ++family) {
      e->add_ips(ChurnAddress(family, 0x0a000000u + static_cast<uint32_t>(p.slot)).ToString());
    }
    e->set_selected(p.selected);
  }
  return ir;
}

class UpdateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    for (const char* which : {"inc", "fresh"}) {
      std::string ns = absl::StrCat("npebpf-", getpid(), "-", which);
      ASSERT_TRUE(RunCommand({"ip", "netns", "add", ns}).ok());
      netns_.push_back(ns);
      for (const char* pair : {"0", "1", "2"}) {
        ASSERT_TRUE(RunCommand({"ip", "-n", ns, "link", "add", absl::StrCat("h", pair), "type",
                                "veth", "peer", "name", absl::StrCat("c", pair)})
                        .ok());
        ASSERT_TRUE(RunCommand({"ip", "-n", ns, "link", "set", absl::StrCat("h", pair), "up"}).ok());
      }
    }
  }
  void TearDown() override {
    for (const std::string& ns : netns_) EXPECT_TRUE(RunCommand({"ip", "netns", "del", ns}).ok());
  }
  Attachment On(int i) const {
    return Attachment{{{"x/l0", "h0"}, {"x/l1", "h1"}, {"x/l2", "h2"}}, netns_[i]};
  }
  // The maps of both namespaces, np_config's generation left out.
  // Another instance applies `ir` afresh on the second interface; the maps must be the first's
  // (with `ids_may_differ`, endpoint ids as a partition: see ExpectSameMaps).
  void ExpectMapsOfAFreshApply(const ir::CompiledPolicy& ir, const std::string& where,
                               bool ids_may_differ = false) {
    std::unique_ptr<Backend> fresh = MakeEbpfBackend();
    ASSERT_TRUE(fresh->Apply(ir, On(1)).ok()) << where;
    ExpectSameMaps(where, ids_may_differ);
  }
  // `ids_may_differ`: endpoints added in place keep ids no endpoint had (np_abi.h
  // np_endpoint.id), a fresh Apply numbers them densely; np_endpoints_addr and
  // np_endpoints_if must then hold the same entries with ids renumbered by first appearance
  // in np_endpoints_addr's key order — which holds iff both give each endpoint one id of
  // its own, the same on its addresses and its interface.
  void ExpectSameMaps(const std::string& where, bool ids_may_differ = false) {
    std::vector<std::map<std::string, std::vector<std::pair<std::string, std::string>>>> dumps;
    for (const std::string& ns : netns_) {
      auto d = DumpMaps("h0", ns);
      ASSERT_TRUE(d.ok()) << d.status();
      uint32_t generation = 0;
      for (auto& [k, v] : (*d)["np_config"]) {
        std::memcpy(&generation, v.data(), 4);
        v.replace(0, 4, 4, '\0');
      }
      // np_endpoint_states (an array: every index below its room, which follows the
      // endpoint count) compared at the ids the endpoint entries name, in the bank runs
      // read (the other one is an in-place edit's pending cleanup until the next edit).
      std::set<std::string> named;
      for (const char* map : {"np_endpoints_ad", "np_endpoints_if"}) {
        for (const auto& [k, v] : (*d)[map]) named.insert(v.substr(0, 4));
      }
      auto& states = (*d)["np_endpoint_sta"];
      states.erase(std::remove_if(states.begin(), states.end(),
                                  [&](const auto& e) { return named.count(e.first) == 0; }),
                   states.end());
      for (auto& [k, v] : states) {
        v = v.substr((generation & 1u) * sizeof(np_endpoint_state), sizeof(np_endpoint_state));
      }
      if (ids_may_differ) {
        std::map<std::string, uint32_t> canonical;  // id bytes -> order of appearance
        // (the kernel keeps 15 characters of a map's name)
        for (auto& [k, v] : (*d)["np_endpoints_ad"]) {
          canonical.emplace(v.substr(0, 4), static_cast<uint32_t>(canonical.size()));
        }
        for (auto& [k, v] : states) {
          auto it = canonical.find(k);
          if (it != canonical.end()) k.assign(reinterpret_cast<const char*>(&it->second), 4);
        }
        std::sort(states.begin(), states.end());
        for (const char* map : {"np_endpoints_ad", "np_endpoints_if"}) {
          for (auto& [k, v] : (*d)[map]) {
            auto it = canonical.find(v.substr(0, 4));
            if (it == canonical.end()) continue;  // kOutside, or no address
            v.replace(0, 4, reinterpret_cast<const char*>(&it->second), 4);
          }
        }
      }
      dumps.push_back(std::move(*d));
    }
    ASSERT_EQ(dumps[0].size(), dumps[1].size()) << where;
    for (const auto& [name, entries] : dumps[1]) {
      EXPECT_TRUE(dumps[0][name] == entries)
          << where << ": " << name << " holds " << dumps[0][name].size()
          << " entries after Update, " << entries.size() << " after a fresh Apply";
    }
  }
  // np_config's generation in the first (i = 0) or second namespace; 0 when unreadable.
  uint32_t LiveGeneration(int i) const {
    auto d = DumpMaps("h0", netns_[i]);
    if (!d.ok() || (*d)["np_config"].size() != 1) return 0;
    uint32_t g;
    std::memcpy(&g, (*d)["np_config"][0].second.data(), 4);
    return g;
  }
  std::vector<std::string> netns_;
};

TEST_F(UpdateTest, PodChurnInPlaceEqualsAFreshApply) {
  const uint64_t seed = testing::FirstSeed();
  std::mt19937_64 rng(seed);
  std::vector<bool> used(250, false);
  std::vector<ChurnPod> pods = FirstChurnPods(rng, used);
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  ir::CompiledPolicy previous = ChurnIr(pods, true);
  ASSERT_TRUE(inc->Apply(previous, On(0)).ok());
  int in_place = 0, full = 0;
  for (int step = 0; step < 150; ++step) {
    const int op = static_cast<int>(rng() % 4);
    std::string what;
    if (op == 0 || pods.size() < 5) {  // added
      int slot = 1 + static_cast<int>(rng() % 249);
      if (used[static_cast<size_t>(slot)]) continue;
      used[static_cast<size_t>(slot)] = true;
      pods.push_back({slot, 1 + static_cast<int>(rng() % 3)});
      what = absl::StrCat("add 10.1.0.", slot);
    } else {
      size_t i = rng() % pods.size();
      if (op == 1) {  // deleted
        what = absl::StrCat("delete 10.1.0.", pods[i].slot);
        used[static_cast<size_t>(pods[i].slot)] = false;
        pods.erase(pods.begin() + static_cast<long>(i));
      } else {  // relabelled, or its address reused by a pod of another class
        pods[i].identity = 1 + pods[i].identity % 3;
        what = absl::StrCat(op == 2 ? "relabel 10.1.0." : "reuse 10.1.0.", pods[i].slot);
      }
    }
    const std::string where = absl::StrCat("seed ", seed, " step ", step, " (", what, ")");
    ir::CompiledPolicy next = ChurnIr(pods, true);
    ASSERT_TRUE(inc->Update(previous, next, On(0)).ok()) << where;
    const std::string path = EbpfLastUpdate(*inc);
    if (absl::StartsWith(path, "in place")) {
      ++in_place;
    } else {
      // The only reason for a new generation here: the identity maps' room is used up.
      EXPECT_TRUE(absl::StrContains(path, "no room")) << where << ": " << path;
      ++full;
    }
    ExpectMapsOfAFreshApply(next, where);
    if (HasFailure()) return;
    previous = std::move(next);
  }
  std::printf("seed %llu: %d updates in place, %d full\n", static_cast<unsigned long long>(seed), in_place, full);
  EXPECT_GT(in_place, 100) << "full: " << full;

  // Another instance (another process) installs a generation: this instance's maps are no
  // longer what runs, so its next Update loads a new generation rather than edit them.
  {
    std::unique_ptr<Backend> other = MakeEbpfBackend();
    ASSERT_TRUE(other->Apply(previous, On(0)).ok());
    pods.push_back({250, 1});
    ir::CompiledPolicy next = ChurnIr(pods, true);
    ASSERT_TRUE(inc->Update(previous, next, On(0)).ok());
    EXPECT_TRUE(absl::StrContains(EbpfLastUpdate(*inc), "another generation runs"))
        << EbpfLastUpdate(*inc);
    ExpectMapsOfAFreshApply(next, "after another instance's Apply");
    previous = std::move(next);
  }

  // A pod of the node added and deleted: endpoints change, never in place; the maps still
  // end up as a fresh Apply's.
  for (bool third : {false, true}) {
    ir::CompiledPolicy next = ChurnIr(pods, third);
    ASSERT_TRUE(inc->Update(previous, next, On(0)).ok());
    EXPECT_TRUE(absl::StartsWith(EbpfLastUpdate(*inc), "full: ")) << EbpfLastUpdate(*inc);
    ExpectMapsOfAFreshApply(next, third ? "x/l2 added back" : "x/l2 deleted");
    previous = std::move(next);
  }

  // A `previous` that is not what was installed (here: no pod off the node at all) is not
  // edited from.
  pods.push_back({251, 2});
  ir::CompiledPolicy next = ChurnIr(pods, true);
  ASSERT_TRUE(inc->Update(ChurnIr({}, true), next, On(0)).ok());
  EXPECT_TRUE(absl::StartsWith(EbpfLastUpdate(*inc), "full: `previous` is not"))
      << EbpfLastUpdate(*inc);
  ExpectMapsOfAFreshApply(next, "after an Update from the wrong `previous`");
}

// Sends crafted packets through the program that np_to_ep of `interface` in `netns` runs
// now (BPF_PROG_TEST_RUN, looked up again before every pair) while the churn edits the
// maps, from a thread of its own: a SYN from an address that is not a pod before nor after
// the step under way (identity 0 in both programs) to 10.0.0.1:8080 is allowed by both,
// to 10.0.0.1:80 denied by both, so neither verdict may ever differ — whatever a run meets
// half way through an edit (an LPM key split or merged around that address, a host key
// added next to it).
class LiveChecker {
 public:
  LiveChecker(std::string netns, std::string interface)
      : netns_(std::move(netns)), interface_(std::move(interface)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~LiveChecker() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Addresses (10.1.0.<slot>) that are no pod in the program installed now nor in the
  // next one.
  void SetStable(std::vector<int> slots) {
    std::lock_guard<std::mutex> lock(mu_);
    stable_ = std::move(slots);
  }
  int pairs() const { return pairs_; }
  const std::string& wrong() const { return wrong_; }  // the first wrong verdict, or ""

 private:
  void Run() {
    int ns = open(("/var/run/netns/" + netns_).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
      wrong_ = "cannot enter " + netns_;
      return;
    }
    close(ns);
    const unsigned ifindex = if_nametoindex(interface_.c_str());
    std::mt19937_64 rng(7);
    uint16_t sport = 1024;
    while (!stop_ && wrong_.empty()) {
      // The whole pair under the lock: SetStable, called before each update, then waits for
      // a pair whose slot came from the previous list — a slot the coming update may give
      // to a pod (the race made this test fail now and then on a loaded machine).
      std::unique_lock<std::mutex> lock(mu_);
      if (stable_.empty()) {
        lock.unlock();
        std::this_thread::yield();
        continue;
      }
      const int slot = stable_[rng() % stable_.size()];
      const uint32_t id = FindAttached(static_cast<int>(ifindex), NP_HOOK_TO_ENDPOINT).id;
      if (id == 0) continue;
      int fd = bpf_prog_get_fd_by_id(id);
      if (fd < 0) continue;
      for (auto [port, pass] : {std::pair<uint16_t, bool>{8080, true}, {80, false}}) {
        testing::FrameSpec f;
        f.src = IpAddress::V4(0x0a010000u + static_cast<uint32_t>(slot));
        f.dst = IpAddress::V4(0x0a000001u);
        f.sport = sport = static_cast<uint16_t>(sport == 65535 ? 1024 : sport + 1);
        f.dport = port;
        absl::StatusOr<TestRunResult> r = TestRun(fd, testing::Frame(f), ifindex);
        if (!r.ok()) {
          wrong_ = r.status().ToString();
        } else if ((r->verdict == TC_ACT_UNSPEC) != pass) {
          wrong_ = absl::StrCat("SYN 10.1.0.", slot, " -> 10.0.0.1:", port, " ",
                                pass ? "dropped" : "passed", " (verdict ", r->verdict, ")");
        }
      }
      close(fd);
      ++pairs_;
    }
  }
  const std::string netns_, interface_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> pairs_{0};
  std::mutex mu_;
  std::vector<int> stable_;
  std::string wrong_;  // written by the thread only; read after Stop
};

// The same churn through UpdateDelta, with each step's delta from DiffPrograms(previous,
// next) (the slow, whole-program diff): after every step the kernel's maps equal a fresh
// Apply of next. Some steps relabel a pod of the node into another identity, which goes in
// place too; some add or delete a pod of the node (x/l2), which must go full. Meanwhile a
// LiveChecker sends packets through the live program.
TEST_F(UpdateTest, PodChurnThroughDeltasEqualsAFreshApply) {
  const uint64_t seed = testing::FirstSeed();
  std::mt19937_64 rng(seed);
  std::vector<bool> used(250, false);
  std::vector<ChurnPod> pods = FirstChurnPods(rng, used);
  bool third = true;
  std::array<int, 3> local_ids = {1, 2, 3};
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  ir::CompiledPolicy previous = ChurnIr(pods, third);
  // Nothing installed by this instance yet: the delta goes full.
  {
    ir::CompiledPolicy start = ChurnIr({}, third);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(start, previous);
    ASSERT_TRUE(delta.has_value());
    ASSERT_TRUE(inc->UpdateDelta(start, *delta, On(0)).ok());
    EXPECT_TRUE(absl::StartsWith(EbpfLastUpdate(*inc), "full: nothing installed"))
        << EbpfLastUpdate(*inc);
  }
  int in_place = 0, full = 0, local = 0, local_in_place = 0;
  LiveChecker checker(netns_[0], "h0");
  for (int step = 0; step < 150; ++step) {
    const int op = static_cast<int>(rng() % 10);
    std::string what;
    bool local_event = false, local_relabel = false;
    const std::vector<bool> used_before = used;
    if (op == 9) {  // a pod of the node added or deleted: its interface gets an endpoint
      third = !third;
      local_event = true;
      what = third ? "x/l2 added" : "x/l2 deleted";
    } else if (op == 8) {  // a pod of the node relabelled into another identity
      const size_t i = rng() % (third ? 3 : 2);
      local_ids[i] = 1 + local_ids[i] % 3;
      local_relabel = true;
      what = absl::StrCat("relabel x/l", i);
    } else if (op < 3 || pods.size() < 5) {  // added
      int slot = 1 + static_cast<int>(rng() % 249);
      if (used[static_cast<size_t>(slot)]) continue;
      used[static_cast<size_t>(slot)] = true;
      pods.push_back({slot, 1 + static_cast<int>(rng() % 3)});
      what = absl::StrCat("add 10.1.0.", slot);
    } else {
      size_t i = rng() % pods.size();
      if (op < 6) {  // deleted
        what = absl::StrCat("delete 10.1.0.", pods[i].slot);
        used[static_cast<size_t>(pods[i].slot)] = false;
        pods.erase(pods.begin() + static_cast<long>(i));
      } else {  // relabelled, or its address reused by a pod of another class
        pods[i].identity = 1 + pods[i].identity % 3;
        what = absl::StrCat("relabel 10.1.0.", pods[i].slot);
      }
    }
    const std::string where = absl::StrCat("seed ", seed, " step ", step, " (", what, ")");
    ir::CompiledPolicy next = ChurnIr(pods, third, local_ids);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
    ASSERT_TRUE(delta.has_value()) << where;
    std::vector<int> stable;
    for (int slot = 1; slot < 250; ++slot) {
      if (!used_before[static_cast<size_t>(slot)] && !used[static_cast<size_t>(slot)]) stable.push_back(slot);
    }
    checker.SetStable(std::move(stable));
    ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok()) << where;
    const std::string path = EbpfLastUpdate(*inc);
    if (local_event) {
      EXPECT_TRUE(absl::StartsWith(path, "full: ")) << where << ": " << path;
      ++local;
    } else if (local_relabel) {
      EXPECT_TRUE(absl::StartsWith(path, "in place") &&
                  absl::StrContains(path, "(a pod of this node)"))
          << where << ": " << path;
      ++local_in_place;
    } else if (absl::StartsWith(path, "in place")) {
      ++in_place;
    } else {
      // The only other reason for a new generation here: the identity maps' room is used up.
      EXPECT_TRUE(absl::StrContains(path, "no room")) << where << ": " << path;
      ++full;
    }
    ExpectMapsOfAFreshApply(next, where);
    if (HasFailure()) return;
    previous = std::move(next);
  }
  checker.Stop();
  std::printf("seed %llu: %d deltas in place, %d full for room, %d of the node's pods "
              "relabelled in place, %d full for the node's pods added or deleted; %d packet "
              "pairs checked meanwhile\n",
              static_cast<unsigned long long>(seed), in_place, full, local_in_place, local,
              checker.pairs());
  EXPECT_GT(in_place, 100) << "full: " << full << ", local: " << local;
  EXPECT_GT(local_in_place, 5);
  EXPECT_EQ(checker.wrong(), "");
  EXPECT_GT(checker.pairs(), 150);

  // A malformed delta is refused before anything is written: the maps stay previous's.
  {
    pods.push_back({250, 1});
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, ChurnIr(pods, third, local_ids));
    pods.pop_back();
    ASSERT_TRUE(delta.has_value() && delta->ipv4_size() == 1);
    delta->mutable_ipv4(0)->mutable_ranges()->RemoveLast();
    absl::Status s = inc->UpdateDelta(previous, *delta, On(0));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    ExpectMapsOfAFreshApply(previous, "after a malformed delta");
  }
  // Two pods off the node in one delta: two addresses change identity, full.
  {
    std::vector<ChurnPod> more = pods;
    for (int slot : {250, 251}) more.push_back({slot, 2});
    ir::CompiledPolicy next = ChurnIr(more, third, local_ids);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
    ASSERT_TRUE(delta.has_value());
    ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok());
    EXPECT_TRUE(absl::StrContains(EbpfLastUpdate(*inc), "more than one IPv4 address"))
        << EbpfLastUpdate(*inc);
    ExpectMapsOfAFreshApply(next, "after two pods in one delta");
    previous = std::move(next);
    pods = std::move(more);
  }
  // Another instance installs a generation: the delta loads a new one rather than edit.
  {
    std::unique_ptr<Backend> other = MakeEbpfBackend();
    ASSERT_TRUE(other->Apply(previous, On(0)).ok());
    pods.push_back({252, 1});
    ir::CompiledPolicy next = ChurnIr(pods, third, local_ids);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
    ASSERT_TRUE(delta.has_value());
    ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok());
    EXPECT_TRUE(absl::StrContains(EbpfLastUpdate(*inc), "another generation runs"))
        << EbpfLastUpdate(*inc);
    ExpectMapsOfAFreshApply(next, "after another instance's Apply");
    previous = std::move(next);
  }
  // A `previous` that is not what was installed is not edited from.
  {
    const ir::CompiledPolicy wrong = ChurnIr({}, third);
    ir::CompiledPolicy next = ChurnIr({{253, 2}}, third);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(wrong, next);
    ASSERT_TRUE(delta.has_value());
    ASSERT_TRUE(inc->UpdateDelta(wrong, *delta, On(0)).ok());
    EXPECT_TRUE(absl::StartsWith(EbpfLastUpdate(*inc), "full: `previous` is not"))
        << EbpfLastUpdate(*inc);
    ExpectMapsOfAFreshApply(next, "after a delta from the wrong `previous`");
  }
}


// At most six of FirstChurnPods' pods of other nodes: peers enough, probes few enough.
std::vector<ChurnPod> FewChurnPods(std::mt19937_64& rng) {
  std::vector<bool> used(250, false);
  std::vector<ChurnPod> pods = FirstChurnPods(rng, used);
  pods.resize(std::min<size_t>(pods.size(), 6));
  return pods;
}

// The node's pods x/l0..x/l2, an address outside the cluster and `pods` elsewhere, in
// both families: the peers ProbeHooks tries.
std::vector<IpAddress> ChurnPeers(const std::vector<ChurnPod>& pods) {
  std::vector<IpAddress> peers;
  for (int family = 0; family < 2; ++family) {
    for (uint32_t v : {0x0a000001u, 0x0a000002u, 0x0a000003u, 0x0a020001u}) {
      peers.push_back(ChurnAddress(family, v));
    }
    for (const ChurnPod& p : pods) {
      peers.push_back(ChurnAddress(family, 0x0a010000u + static_cast<uint32_t>(p.slot)));
    }
  }
  return peers;
}

// InNamespace (above), by its older name (BPF_PROG_TEST_RUN finds the context's ifindex
// in the caller's namespace).
template <typename F>
void InNetns(const std::string& netns, F&& f) {
  InNamespace(netns, std::forward<F>(f));
}

// The id of the program that tc `point` of `interface` runs, in the calling thread's
// namespace; 0 when none.
uint32_t RunningProgram(const std::string& interface, bpf_tc_attach_point point) {
  return FindAttached(static_cast<int>(if_nametoindex(interface.c_str())),
                      point == BPF_TC_INGRESS ? NP_HOOK_FROM_ENDPOINT : NP_HOOK_TO_ENDPOINT)
      .id;
}

struct ProbeCounts {
  int probes = 0, allowed = 0, changed = 0;  // changed: previous and next disagree
};

// Both hooks of each interface (`hooks`: its name and the low 32 bits of its pod's
// addresses; by default h0..h2: x/l0..x/l2) on TCP SYNs and UDP datagrams between
// its pod and every address of `peers`, through the program the hook runs now: each
// verdict must be `next`'s, read by the IR interpreter. Source ports only grow, so no probe
// is the reply of an earlier one (np_ct would pass it); SYNs and datagrams of a new
// generation number are decided by policy (np_policy.c np_decide).
void ProbeHooks(const std::string& netns, const ir::CompiledPolicy& previous,
                const ir::CompiledPolicy& next, const std::vector<IpAddress>& peers,
                const std::string& where, ProbeCounts& counts,
                const std::vector<std::pair<std::string, uint32_t>>& hooks = {
                    {"h0", 0x0a000001u}, {"h1", 0x0a000002u}, {"h2", 0x0a000003u}}) {
  const testing::IrInterpreter before(previous), after(next);
  static uint16_t sport = 40000;
  InNetns(netns, [&] {
    for (const auto& [interface, own] : hooks) {
      const unsigned ifindex = if_nametoindex(interface.c_str());
      for (bool from : {true, false}) {
        int fd = bpf_prog_get_fd_by_id(
            RunningProgram(interface, from ? BPF_TC_INGRESS : BPF_TC_EGRESS));
        ASSERT_GE(fd, 0) << where << ": no program on " << interface;
        for (const IpAddress& peer : peers) {
          const IpAddress self = ChurnAddress(peer.is_v4() ? 0 : 1, own);
          for (auto [protocol, port] : {std::pair<uint8_t, uint16_t>{6, 80}, {17, 53}, {6, 8080},
                                        {6, 443}, {6, 81}}) {
            testing::FrameSpec f;
            f.src = from ? self : peer;
            f.dst = from ? peer : self;
            f.protocol = protocol;
            f.sport = sport = static_cast<uint16_t>(sport >= 65000 ? 40000 : sport + 1);
            f.dport = port;
            const bool expected = after.Allowed(f.src, f.dst, protocol, port);
            absl::StatusOr<TestRunResult> r = TestRun(fd, testing::Frame(f), ifindex);
            ASSERT_TRUE(r.ok()) << where << ": " << r.status();
            EXPECT_EQ(r->verdict == TC_ACT_UNSPEC, expected)
                << where << ": " << interface << (from ? " np_from_ep " : " np_to_ep ")
                << f.src.ToString() << " -> " << f.dst.ToString() << " "
                << ProtocolName(protocol) << "/" << port;
            ++counts.probes;
            counts.allowed += expected;
            counts.changed += expected != before.Allowed(f.src, f.dst, protocol, port);
          }
        }
        close(fd);
      }
    }
  });
}

// Pods of the node added and deleted one at a time through UpdateDelta (deltas from
// DiffPrograms), their table there and their interface not in the attachment (the agent's
// case: bench/agent_latency_bench "pod add (node-0, table there)"): each goes in place —
// np_endpoints_addr entries and the address's identity written, no new program — and
// then every hook of the node decides as the IR interpreter reads the next program, and
// the maps are a fresh Apply's but for endpoint ids.
TEST_F(UpdateTest, PodsOfTheNodeAddedAndDeletedInPlaceDecideAsTheNextProgram) {
  const uint64_t seed = testing::FirstSeed();
  std::mt19937_64 rng(seed);
  std::vector<ChurnPod> pods = FewChurnPods(rng);
  std::vector<ExtraLocalPod> extra;
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  ir::CompiledPolicy previous = ChurnIr(pods, true, {1, 2, 3}, extra);
  ASSERT_TRUE(inc->Apply(previous, On(0)).ok());
  uint32_t program = 0;
  InNetns(netns_[0], [&] { program = RunningProgram("h0", BPF_TC_INGRESS); });
  ASSERT_NE(program, 0u);
  auto generation = [&] { return LiveGeneration(0); };
  const uint32_t first_generation = generation();
  int adds = 0, deletes = 0;
  ProbeCounts counts;
  for (int step = 0; step < 50; ++step) {
    std::vector<ExtraLocalPod> next_extra = extra;
    std::string what;
    if (extra.empty() || (extra.size() < 10 && rng() % 3 != 0)) {
      const int slot = 10 + static_cast<int>(rng() % 50);
      if (std::any_of(extra.begin(), extra.end(), [&](const auto& p) { return p.slot == slot; })) {
        continue;
      }
      next_extra.push_back({slot, 1 + static_cast<int>(rng() % 3), rng() % 2 == 0});
      std::sort(next_extra.begin(), next_extra.end(),
                [](const auto& a, const auto& b) { return a.slot < b.slot; });
      what = absl::StrCat("x/m", slot, " added");
      ++adds;
    } else {
      const size_t i = rng() % extra.size();
      what = absl::StrCat("x/m", extra[i].slot, " deleted");
      next_extra.erase(next_extra.begin() + static_cast<long>(i));
      ++deletes;
    }
    const std::string where = absl::StrCat("seed ", seed, " step ", step, " (", what, ")");
    ir::CompiledPolicy next = ChurnIr(pods, true, {1, 2, 3}, next_extra);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
    ASSERT_TRUE(delta.has_value()) << where;
    ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok()) << where;
    const std::string path = EbpfLastUpdate(*inc);
    EXPECT_TRUE(absl::StartsWith(path, "in place") &&
                absl::StrContains(path, absl::StrCat("endpoints ", what.substr(what.find(' ') + 1),
                                                     ": ", what.substr(0, what.find(' ')))))
        << where << ": " << path;
    // No new generation: the same program runs, np_config's generation went up by one.
    uint32_t running = 0;
    InNetns(netns_[0], [&] { running = RunningProgram("h0", BPF_TC_INGRESS); });
    EXPECT_EQ(running, program) << where;
    EXPECT_EQ(generation(), first_generation + static_cast<uint32_t>(adds + deletes)) << where;

    std::vector<IpAddress> peers;
    for (int family = 0; family < 2; ++family) {
      auto address = [&](uint32_t v) { return ChurnAddress(family, v); };
      for (uint32_t v : {0x0a000001u, 0x0a000002u, 0x0a000003u, 0x0a020001u}) {
        peers.push_back(address(v));
      }
      for (const ChurnPod& p : pods) peers.push_back(address(0x0a010000u + static_cast<uint32_t>(p.slot)));
      std::set<int> slots;  // the pods of the node before and after
      for (const auto* list : {&extra, &next_extra}) {
        for (const ExtraLocalPod& p : *list) slots.insert(p.slot);
      }
      for (int slot : slots) peers.push_back(address(0x0a000000u + static_cast<uint32_t>(slot)));
    }
    ProbeHooks(netns_[0], previous, next, peers, where, counts);
    ExpectMapsOfAFreshApply(next, where, /*ids_may_differ=*/true);
    if (HasFailure()) return;
    previous = std::move(next);
    extra = std::move(next_extra);
  }
  std::printf("seed %llu: %d pods of the node added and %d deleted in place; %d probes, %d "
              "allowed, %d whose verdict the step changed\n",
              static_cast<unsigned long long>(seed), adds, deletes, counts.probes,
              counts.allowed, counts.changed);
  EXPECT_GT(adds, 10);
  EXPECT_GT(deletes, 5);
  EXPECT_GT(counts.changed, 0);
  EXPECT_GT(counts.allowed, 0);
  EXPECT_LT(counts.allowed, counts.probes);

  // A pod of the node that changes (here: becomes selected or not) is not an add or a
  // delete: its endpoint state changes.
  {
    ASSERT_FALSE(extra.empty());
    std::vector<ExtraLocalPod> changed = extra;
    changed[0].selected = !changed[0].selected;
    ir::CompiledPolicy next = ChurnIr(pods, true, {1, 2, 3}, changed);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
    ASSERT_TRUE(delta.has_value());
    uint32_t before = 0;
    InNetns(netns_[0], [&] { before = RunningProgram("h0", BPF_TC_INGRESS); });
    ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok());
    // In place: its state (selected, table 0) switched by the bump, no new generation.
    EXPECT_TRUE(absl::StartsWith(EbpfLastUpdate(*inc), "in place: ") &&
                absl::StrContains(EbpfLastUpdate(*inc), "endpoint states switched with the bump: 1"))
        << EbpfLastUpdate(*inc);
    uint32_t after = 0;
    InNetns(netns_[0], [&] { after = RunningProgram("h0", BPF_TC_INGRESS); });
    EXPECT_EQ(after, before);
    std::vector<IpAddress> peers = ChurnPeers(pods);
    for (int family = 0; family < 2; ++family) {
      for (const ExtraLocalPod& p : changed) {
        peers.push_back(ChurnAddress(family, 0x0a000000u + static_cast<uint32_t>(p.slot)));
      }
    }
    ProbeHooks(netns_[0], previous, next, peers, "after a pod of the node changed", counts);
    ExpectMapsOfAFreshApply(next, "after a pod of the node changed", /*ids_may_differ=*/true);
  }
}

// An agent's long life on one generation: thousands of pod events of the node (pods added
// and deleted) and policy events (peer sets' members changed) through UpdateDelta, seeded (NP_TEST_SEED replays it). Every event goes in place
// (no new generation, DeltaStats::full stays 0), and the numbers the backend hands out stay
// bounded (maps.h PolicyLayout, "numbers that a long-lived agent keeps handing out"):
// endpoint ids below the peak endpoint count plus one delta's adds, physical peer sets
// below the peer sets plus one edit's changes — before, np_endpoint_states' room (64
// more) ran out after ~64 adds and a new generation was loaded. An id is never given in
// the edit that frees it (the runs of that edit may still hold it; a pod deleted and
// another added in one delta is not in place anyway: two addresses change identity), nor
// is a peer set number (its old members are deleted after the bump). Phase 1 (pods only):
// the maps equal a fresh Apply's but for endpoint ids, every 200 events; phase 2 (mixed):
// every policy event and every 50th pod event, every hook decides as the IR interpreter
// reads the next program.
TEST_F(UpdateTest, LongChurnKeepsItsNumbersBoundedWithoutReloading) {
  const uint64_t seed = testing::FirstSeed();
  std::mt19937_64 rng(seed);
  const std::vector<ChurnPod> pods = FewChurnPods(rng);
  constexpr size_t kMostExtra = 12;  // pods of the node beside x/l0..x/l2
  // Policy variants: bit 0 gives peer set 0 identity 3 too, bit 1 peer set 2 identity 2.
  auto build = [&](const std::vector<ExtraLocalPod>& extra, int variant) {
    ir::CompiledPolicy ir = ChurnIr(pods, true, {1, 2, 3}, extra);
    if (variant & 1) ir.mutable_peer_sets(0)->add_identities(3);
    if (variant & 2) {
      ir.mutable_peer_sets(2)->clear_identities();
      ir.mutable_peer_sets(2)->add_identities(2);
      ir.mutable_peer_sets(2)->add_identities(3);
    }
    return ir;
  };
  std::vector<ExtraLocalPod> extra;
  int variant = 0;
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  ir::CompiledPolicy previous = build(extra, variant);
  ASSERT_TRUE(inc->Apply(previous, On(0)).ok());
  const int peer_sets = previous.peer_sets_size();
  uint32_t program = 0;
  InNetns(netns_[0], [&] { program = RunningProgram("h0", BPF_TC_INGRESS); });
  // The endpoint ids np_endpoints_addr names, and the largest physical peer set of np_members.
  auto numbers = [&](std::set<uint32_t>& ids, uint32_t& top_peer_set) {
    ids.clear();
    top_peer_set = 0;
    auto d = DumpMaps("h0", netns_[0]);
    ASSERT_TRUE(d.ok()) << d.status();
    for (const auto& [k, v] : (*d)["np_endpoints_ad"]) {
      uint32_t id;
      std::memcpy(&id, v.data(), 4);
      ids.insert(id);
    }
    for (const auto& [k, v] : (*d)["np_members"]) {
      uint32_t p;
      std::memcpy(&p, k.data(), 4);
      top_peer_set = std::max(top_peer_set, p);
    }
  };
  std::set<uint32_t> ids_before;
  uint32_t top_peer_set = 0;
  numbers(ids_before, top_peer_set);
  ProbeCounts counts;
  int adds = 0, deletes = 0, policy_events = 0;
  uint32_t top_id = 0, top_set = 0;
  constexpr int kPodSteps = 1200, kSteps = 2000;
  for (int step = 0; step < kSteps; ++step) {
    std::vector<ExtraLocalPod> next_extra = extra;
    int next_variant = variant;
    std::string what;
    auto free_slot = [&] {
      for (;;) {
        const int slot = 10 + static_cast<int>(rng() % 80);
        if (std::none_of(next_extra.begin(), next_extra.end(),
                         [&](const auto& p) { return p.slot == slot; }) &&
            std::none_of(extra.begin(), extra.end(), [&](const auto& p) { return p.slot == slot; })) {
          return slot;
        }
      }
    };
    const int r = static_cast<int>(rng() % 10);
    if (step >= kPodSteps && r < 3) {
      next_variant ^= 1 << (rng() % 2);
      what = absl::StrCat("policy variant ", variant, " -> ", next_variant);
      ++policy_events;
    } else if (extra.empty() || (extra.size() < kMostExtra && rng() % 2 == 0)) {
      const int slot = free_slot();
      next_extra.push_back({slot, 1 + static_cast<int>(rng() % 3), rng() % 2 == 0});
      what = absl::StrCat("x/m", slot, " added");
      ++adds;
    } else {
      const size_t i = rng() % extra.size();
      what = absl::StrCat("x/m", extra[i].slot, " deleted");
      next_extra.erase(next_extra.begin() + static_cast<long>(i));
      ++deletes;
    }
    std::sort(next_extra.begin(), next_extra.end(),
              [](const auto& a, const auto& b) { return a.slot < b.slot; });
    const std::string where = absl::StrCat("seed ", seed, " step ", step, " (", what, ")");
    ir::CompiledPolicy next = build(next_extra, next_variant);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
    ASSERT_TRUE(delta.has_value()) << where;
    ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok()) << where;
    const std::string path = EbpfLastUpdate(*inc);
    ASSERT_TRUE(absl::StartsWith(path, "in place")) << where << ": " << path;
    std::set<uint32_t> ids;
    numbers(ids, top_peer_set);
    // Ids the step gave were no endpoint's before it: none is taken in the edit that
    // frees it.
    std::vector<uint32_t> kept;
    std::set_intersection(ids.begin(), ids.end(), ids_before.begin(), ids_before.end(),
                          std::back_inserter(kept));
    const size_t stayed = 3 + std::count_if(next_extra.begin(), next_extra.end(), [&](const auto& p) {
      return std::any_of(extra.begin(), extra.end(), [&](const auto& q) { return q.slot == p.slot; });
    });
    ASSERT_EQ(kept.size(), stayed)
        << where << ": an id freed by this edit was given by it to another endpoint";
    ASSERT_EQ(ids.size(), 3 + next_extra.size()) << where << ": one id an endpoint";
    top_id = std::max(top_id, *ids.rbegin());
    top_set = std::max(top_set, top_peer_set);
    // Ids below the peak endpoint count plus one delta's adds; physical peer sets below the
    // IR's plus one edit's changes (a policy event changes one set).
    ASSERT_LT(*ids.rbegin(), 3 + kMostExtra + 1) << where;
    ASSERT_LE(top_peer_set, static_cast<uint32_t>(peer_sets) + 1) << where;
    if (step < kPodSteps && (step + 1) % 200 == 0) {
      ExpectMapsOfAFreshApply(next, where, /*ids_may_differ=*/true);
    }
    if (step >= kPodSteps && (next_variant != variant || step % 50 == 0)) {
      std::vector<IpAddress> peers = ChurnPeers(pods);
      for (int family = 0; family < 2; ++family) {
        for (const auto* list : {&extra, &next_extra}) {
          for (const ExtraLocalPod& p : *list) {
            peers.push_back(ChurnAddress(family, 0x0a000000u + static_cast<uint32_t>(p.slot)));
          }
        }
      }
      ProbeHooks(netns_[0], previous, next, peers, where, counts);
    }
    if (HasFailure()) return;
    previous = std::move(next);
    extra = std::move(next_extra);
    variant = next_variant;
    ids_before = std::move(ids);
  }
  uint32_t running = 0;
  InNetns(netns_[0], [&] { running = RunningProgram("h0", BPF_TC_INGRESS); });
  EXPECT_EQ(running, program) << "no new generation was loaded";
  EXPECT_EQ(EbpfDeltaStats(*inc).full, 0u);
  std::printf("seed %llu: %d adds, %d deletes, %d policy events in place; largest "
              "endpoint id %u, largest physical peer set %u; %d probes, %d changed\n",
              static_cast<unsigned long long>(seed), adds, deletes, policy_events,
              top_id, top_set, counts.probes, counts.changed);
  EXPECT_GT(adds, 300);  // far past np_endpoint_states' 64 spare ids
  EXPECT_GT(policy_events, 150);
  EXPECT_GT(counts.changed, 0);
}

// A pod of the node added with its interface (the agent's common case: every new pod comes
// with its veth) and then deleted with it: both in place — the live generation's programs
// attached to (then detached from) the interface, np_endpoints_if written before (deleted
// after), no program loaded — and the new interface's hooks decide as the IR interpreter
// reads the next program; the maps are a fresh Apply's but for endpoint ids.
TEST_F(UpdateTest, PodOfTheNodeAddedWithItsInterfaceIsAttachedInPlace) {
  const uint64_t seed = testing::FirstSeed();
  std::mt19937_64 rng(seed);
  std::vector<ChurnPod> pods = FewChurnPods(rng);
  for (const std::string& ns : netns_) {
    ASSERT_TRUE(RunCommand({"ip", "-n", ns, "link", "add", "h3", "type", "veth", "peer", "name",
                            "c3"}).ok());
    ASSERT_TRUE(RunCommand({"ip", "-n", ns, "link", "set", "h3", "up"}).ok());
  }
  auto with_h3 = [&](int i) {
    Attachment a = On(i);
    a.interfaces.push_back({"x/m20", "h3"});
    return a;
  };
  auto generation = [&] { return LiveGeneration(0); };
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  const ir::CompiledPolicy before = ChurnIr(pods, true, {1, 2, 3}, {});
  ASSERT_TRUE(inc->Apply(before, On(0)).ok());
  uint32_t program = 0;
  InNetns(netns_[0], [&] { program = RunningProgram("h0", BPF_TC_INGRESS); });
  ASSERT_NE(program, 0u);
  const uint32_t first_generation = generation();

  const bool selected = rng() % 2 == 0;
  const ir::CompiledPolicy after =
      ChurnIr(pods, true, {1, 2, 3}, {{20, 1 + static_cast<int>(rng() % 3), selected}});
  std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(before, after);
  ASSERT_TRUE(delta.has_value());
  ASSERT_TRUE(inc->UpdateDelta(before, *delta, with_h3(0)).ok());
  std::string path = EbpfLastUpdate(*inc);
  EXPECT_TRUE(absl::StartsWith(path, "in place") && absl::StrContains(path, "added: x/m20") &&
              absl::StrContains(path, "interfaces attached: 1"))
      << path;
  EXPECT_EQ(generation(), first_generation + 1);
  uint32_t h0_egress = 0;
  InNetns(netns_[0], [&] {
    EXPECT_EQ(RunningProgram("h0", BPF_TC_INGRESS), program);
    EXPECT_EQ(RunningProgram("h3", BPF_TC_INGRESS), program);
    h0_egress = RunningProgram("h0", BPF_TC_EGRESS);
    EXPECT_NE(h0_egress, 0u);
    EXPECT_EQ(RunningProgram("h3", BPF_TC_EGRESS), h0_egress);
  });

  // The new interface's hooks, on the pod's own addresses against the node's other pods,
  // pods elsewhere and an external address: the interpreter's verdicts for `after`.
  const std::vector<IpAddress> peers = ChurnPeers(pods);
  ProbeCounts counts;
  ProbeHooks(netns_[0], before, after, peers, absl::StrCat("seed ", seed, ": h3"), counts,
             {{"h3", 0x0a000000u + 20}});
  std::printf("seed %llu: x/m20 (selected %d) attached in place; %d probes on h3, %d allowed, "
              "%d changed\n",
              static_cast<unsigned long long>(seed), selected, counts.probes, counts.allowed,
              counts.changed);
  EXPECT_GT(counts.allowed, 0);
  EXPECT_LT(counts.allowed, counts.probes);
  {
    std::unique_ptr<Backend> fresh = MakeEbpfBackend();
    ASSERT_TRUE(fresh->Apply(after, with_h3(1)).ok());
    ExpectSameMaps("after x/m20 added with h3", /*ids_may_differ=*/true);
  }

  // Deleted with its interface: detached in place, its entry gone.
  delta = DiffPrograms(after, before);
  ASSERT_TRUE(delta.has_value());
  ASSERT_TRUE(inc->UpdateDelta(after, *delta, On(0)).ok());
  path = EbpfLastUpdate(*inc);
  EXPECT_TRUE(absl::StartsWith(path, "in place") && absl::StrContains(path, "deleted: x/m20") &&
              absl::StrContains(path, "detached: 1"))
      << path;
  EXPECT_EQ(generation(), first_generation + 2);
  InNetns(netns_[0], [&] {
    EXPECT_EQ(RunningProgram("h0", BPF_TC_INGRESS), program);
    EXPECT_EQ(RunningProgram("h3", BPF_TC_INGRESS), 0u);
    EXPECT_EQ(RunningProgram("h3", BPF_TC_EGRESS), 0u);
  });
  {
    // The fresh namespace's h3 goes too, as a fresh Apply without it leaves it.
    ASSERT_TRUE(RemoveFromInterfaces({"h3"}, netns_[1]).ok());
    std::unique_ptr<Backend> fresh = MakeEbpfBackend();
    ASSERT_TRUE(fresh->Apply(before, On(1)).ok());
    ExpectSameMaps("after x/m20 deleted with h3", /*ids_may_differ=*/true);
  }

  // An interface that comes without its pod being added is no in-place change.
  delta = DiffPrograms(before, before);
  if (delta.has_value()) {
    Attachment a = On(0);
    a.interfaces.push_back({"x/l1", "h3"});
    ASSERT_TRUE(inc->UpdateDelta(before, *delta, a).ok());
    EXPECT_TRUE(absl::StartsWith(EbpfLastUpdate(*inc), "full: the interface h3 of x/l1"))
        << EbpfLastUpdate(*inc);
  }
}

// Policy deltas written by hand (not DiffPrograms'), each sent and then undone by another
// hand-made delta: a table replaced; a peer set turned into every address with no table in
// the delta (the tables naming it are rewritten all the same); a peer set appended and named
// in one delta, undone with it left a tombstone. Each goes in place (the same program, "in
// place: policy delta", counted), and every hook of the node then decides as the IR
// interpreter reads ApplyDelta(previous, delta). A malformed delta is refused with nothing
// written; one that also moves an endpoint into a table loads a new generation (as Update
// does), which decides right too.
TEST_F(UpdateTest, HandMadePolicyDeltasGoInPlaceBothWays) {
  const uint64_t seed = testing::FirstSeed();
  std::mt19937_64 rng(seed);
  const std::vector<ChurnPod> pods = FewChurnPods(rng);
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  const ir::CompiledPolicy original = ChurnIr(pods, true);
  ir::CompiledPolicy previous = original;
  ASSERT_TRUE(inc->Apply(previous, On(0)).ok());
  const std::vector<IpAddress> peers = ChurnPeers(pods);
  ProbeCounts counts;
  auto program = [&] {
    uint32_t id = 0;
    InNetns(netns_[0], [&] { id = RunningProgram("h0", BPF_TC_INGRESS); });
    return id;
  };
  // `in_place`: as a policy delta; `banked`: as a pod delta whose policy edit and endpoint
  // states switch with one bump (maps.h PodPolicyEdit::banked).
  auto send = [&](const ir::CompiledPolicyDelta& delta, const std::string& where,
                  bool in_place, bool banked = false) {
    ir::CompiledPolicy next = previous;
    ASSERT_TRUE(ApplyDelta(delta, &next).ok()) << where;
    const uint32_t before_program = program();
    const uint64_t before_deltas = EbpfPolicyDeltasInPlace(*inc);
    ASSERT_TRUE(inc->UpdateDelta(previous, delta, On(0)).ok()) << where;
    const std::string path = EbpfLastUpdate(*inc);
    if (banked) {
      EXPECT_TRUE(absl::StartsWith(path, "in place: ") &&
                  absl::StrContains(path, "banked with the policy edit"))
          << where << ": " << path;
      EXPECT_EQ(program(), before_program) << where << ": no new generation";
    } else if (in_place) {
      EXPECT_TRUE(absl::StartsWith(path, "in place: policy delta")) << where << ": " << path;
      EXPECT_EQ(program(), before_program) << where << ": no new generation";
      EXPECT_EQ(EbpfPolicyDeltasInPlace(*inc), before_deltas + 1) << where;
    } else {
      // (A delta that moves an endpoint between tables is a pod delta's form: it is
      // refused as an endpoint that changes.)
      EXPECT_TRUE(absl::StartsWith(path, "full: ") &&
                  (absl::StrContains(path, "policy delta not in place") ||
                   absl::StrContains(path, "changes (addresses, selected or table)")))
          << where << ": " << path;
      EXPECT_NE(program(), before_program) << where << ": a new generation";
    }
    ProbeHooks(netns_[0], previous, next, peers, where, counts);
    previous = next;
  };
  {  // Table 0: TCP 80 from peer set 2 ({3}) instead of 0 ({1}); egress open.
    ir::CompiledPolicyDelta there, back;
    ir::Table* t = there.add_tables();
    *t = original.tables(0);
    t->mutable_ingress()->mutable_rules(0)->set_peer_set(2);
    t->mutable_egress()->set_isolated(false);
    t->mutable_egress()->clear_rules();
    *back.add_tables() = original.tables(0);
    send(there, "table 0 replaced", true);
    send(back, "table 0 replaced back", true);
  }
  {  // Peer set 1 ({1, 2}: UDP 53) turned every address, no table in the delta.
    ir::CompiledPolicyDelta there, back;
    ir::PeerSet* p = there.add_peer_sets();
    p->set_id(1);
    p->set_all(true);
    *back.add_peer_sets() = original.peer_sets(1);
    send(there, "peer set 1 turned all", true);
    send(back, "peer set 1 turned back", true);
  }
  {  // Peer set 4 = {2} appended, TCP 8080 (peer set 3 before) pointed at it; undone with
     // peer set 4 left a tombstone.
    ir::CompiledPolicyDelta there, back;
    ir::PeerSet* p = there.add_peer_sets();
    p->set_id(4);
    p->add_identities(2);
    ir::Table* t = there.add_tables();
    *t = original.tables(0);
    t->mutable_ingress()->mutable_rules(2)->set_peer_set(4);
    back.add_peer_sets()->set_id(4);
    *back.add_tables() = original.tables(0);
    send(there, "peer set 4 appended and named", true);
    send(back, "peer set 4 tombstoned", true);
  }
  {  // Malformed: a table past the program's count with a gap. Nothing written.
    ir::CompiledPolicyDelta bad;
    ir::Table* t = bad.add_tables();
    *t = original.tables(0);
    t->set_id(3);
    const uint32_t before_generation = LiveGeneration(0);
    EXPECT_TRUE(absl::IsInvalidArgument(inc->UpdateDelta(previous, bad, On(0))));
    EXPECT_EQ(LiveGeneration(0), before_generation);
    ProbeHooks(netns_[0], previous, previous, peers, "after a malformed delta", counts);
  }
  {  // Table 0 replaced and x/l1 selected into it: an endpoint's table changes while x/l0
     // names table 0 before and after: a banked edit, in place.
    ir::CompiledPolicyDelta moved;
    ir::Table* t = moved.add_tables();
    *t = original.tables(0);
    t->mutable_ingress()->mutable_rules(0)->set_peer_set(1);
    ir::EndpointSliceEdit* e = moved.add_endpoints();
    e->set_begin(1);
    e->set_end(2);
    ir::Endpoint* l1 = e->add_endpoints();
    *l1 = original.endpoints(1);
    l1->set_selected(true);
    l1->set_table(0);
    send(moved, "table 0 replaced, x/l1 moved into it", false, /*banked=*/true);
  }
  {  // In place again after it (its cleanup written first).
    ir::CompiledPolicyDelta there;
    ir::PeerSet* p = there.add_peer_sets();
    *p = original.peer_sets(0);
    p->add_identities(3);
    send(there, "peer set 0 gains identity 3", true);
  }
  std::printf("%d probes, %d allowed, %d changed\n", counts.probes, counts.allowed,
              counts.changed);
  EXPECT_EQ(EbpfPolicyDeltasInPlace(*inc), 7u);
  EXPECT_GT(counts.changed, 20) << "the deltas should change verdicts the probes see";
}

// The program `ir` (ChurnIr's, extra pods of the node not selected) with each selected
// extra pod in a table of its own, numbered as np/lower_align.h numbers what a pod delta
// brings (np/lower_delta.h): a pod of `installed` keeps its table, a new one takes the
// lowest table id no endpoint names (a tombstone), else appends; its peer set {2, 3} is the
// set of those identities, else the lowest set no rule names, else appended; tables and
// sets no longer named are tombstones.
ir::CompiledPolicy WithPodTables(ir::CompiledPolicy ir, const ir::CompiledPolicy& installed) {
  *ir.mutable_tables() = installed.tables();
  *ir.mutable_peer_sets() = installed.peer_sets();
  std::map<std::string, uint32_t> kept;  // pod -> its table in `installed`
  for (const ir::Endpoint& e : installed.endpoints()) {
    if (e.selected() && e.table() != 0) kept[e.name()] = e.table();
  }
  std::set<uint32_t> named = {0};
  for (const ir::Endpoint& e : ir.endpoints()) {
    if (e.selected() && kept.count(e.name())) named.insert(kept[e.name()]);
  }
  for (ir::Table& t : *ir.mutable_tables()) {
    if (named.count(t.id()) != 0) continue;
    const uint32_t id = t.id();
    t.Clear();
    t.set_id(id);
  }
  auto set_named = [&](uint32_t p) {
    for (const ir::Table& t : ir.tables()) {
      for (const ir::DirectionPolicy* d : {&t.ingress(), &t.egress()}) {
        for (const ir::PortRule& r : d->rules()) {
          if (r.peer_set() == p) return true;
        }
      }
    }
    return false;
  };
  for (ir::Endpoint& e : *ir.mutable_endpoints()) {
    if (!e.selected() || e.name().rfind("m", 0) != 0) continue;
    if (kept.count(e.name())) {
      e.set_table(kept[e.name()]);
      continue;
    }
    uint32_t t = 1;
    while (t < static_cast<uint32_t>(ir.tables_size()) && named.count(t)) ++t;
    if (t == static_cast<uint32_t>(ir.tables_size())) ir.add_tables()->set_id(t);
    named.insert(t);
    e.set_table(t);
    uint32_t set = 0;
    for (; set < static_cast<uint32_t>(ir.peer_sets_size()); ++set) {
      const auto& ids = ir.peer_sets(static_cast<int>(set)).identities();
      if (ids.size() == 2 && ids[0] == 2 && ids[1] == 3) break;
    }
    if (set == static_cast<uint32_t>(ir.peer_sets_size())) {
      set = 0;
      while (set < static_cast<uint32_t>(ir.peer_sets_size()) && set_named(set)) ++set;
      if (set == static_cast<uint32_t>(ir.peer_sets_size())) ir.add_peer_sets()->set_id(set);
      ir::PeerSet* p = ir.mutable_peer_sets(static_cast<int>(set));
      p->add_identities(2);
      p->add_identities(3);
    }
    ir::Table* table = ir.mutable_tables(static_cast<int>(t));
    table->mutable_ingress()->set_isolated(true);
    table->mutable_egress()->set_isolated(true);
    // TCP 80 or 81 by the pod's slot: a table brought at a retired one's id may differ.
    const uint32_t port = 80 + static_cast<uint32_t>(std::stoi(e.name().substr(1)) % 2);
    AddPortRule(table->mutable_ingress(), ir::TCP, port, port, set);
    AddPortRule(table->mutable_ingress(), ir::UDP, 53, 53, 0);
    AddPortRule(table->mutable_egress(), ir::TCP, 443, 443, 0);
  }
  for (ir::PeerSet& p : *ir.mutable_peer_sets()) {
    if (!set_named(p.id())) p.clear_identities();
  }
  return ir;
}

// Pods of the node added and deleted through UpdateDelta, each selected into a table of its
// own (the first pod of a target class on the node, the last one leaving): the delta brings
// the table (appended, or a tombstone's id reused) and its peer set, or retires them. Each
// goes in place — the same program keeps running, np_config's generation goes up by one
// (a retired table's entries are left: maps.h PodPolicyEdit) — and every hook of the node
// then decides as the IR interpreter reads the next program (BPF_PROG_TEST_RUN), also
// when a later pod brings a table at a retired one's id. Seeded (NP_TEST_SEED).
TEST_F(UpdateTest, PodsBringingOrRetiringTheirTablesGoInPlace) {
  const uint64_t seed = testing::FirstSeed();
  std::mt19937_64 rng(seed);
  const std::vector<ChurnPod> pods = FewChurnPods(rng);
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  std::vector<ExtraLocalPod> extra;
  ir::CompiledPolicy previous = ChurnIr(pods, true, {1, 2, 3}, extra);
  ASSERT_TRUE(inc->Apply(previous, On(0)).ok());
  uint32_t program = 0;
  InNetns(netns_[0], [&] { program = RunningProgram("h0", BPF_TC_INGRESS); });
  ASSERT_NE(program, 0u);
  int brought = 0, retired = 0, reused = 0, kept = 0;
  ProbeCounts counts;
  for (int step = 0; step < 24; ++step) {
    std::vector<ExtraLocalPod> next_extra = extra;
    const int slot = 10 + static_cast<int>(rng() % 6);
    auto it = std::find_if(next_extra.begin(), next_extra.end(),
                           [&](const ExtraLocalPod& p) { return p.slot == slot; });
    const bool adding = it == next_extra.end();
    if (adding) {
      next_extra.push_back({slot, 1 + static_cast<int>(rng() % 3), true});
      std::sort(next_extra.begin(), next_extra.end(),
                [](const auto& a, const auto& b) { return a.slot < b.slot; });
    } else {
      next_extra.erase(it);
    }
    const std::string where = absl::StrCat("seed ", seed, " step ", step, " (x/m", slot,
                                           adding ? " added)" : " deleted)");
    const ir::CompiledPolicy next =
        WithPodTables(ChurnIr(pods, true, {1, 2, 3}, next_extra), previous);
    ASSERT_TRUE(CheckIr(next).ok()) << where << ": " << CheckIr(next);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
    ASSERT_TRUE(delta.has_value()) << where;
    ASSERT_GT(delta->tables_size(), 0) << where << ": each pod has a table of its own";
    if (adding && delta->tables(0).id() < static_cast<uint32_t>(previous.tables_size())) ++reused;
    const uint32_t before = LiveGeneration(0);
    ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok()) << where;
    const std::string path = EbpfLastUpdate(*inc);
    // A table brought at a retired one's id with the same entries writes nothing of it.
    const bool left_there = adding && !absl::StrContains(path, "tables ");
    kept += left_there ? 1 : 0;
    EXPECT_TRUE(absl::StartsWith(path, "in place") &&
                (left_there ||
                 absl::StrContains(path, adding ? "written first" : "left as they were")))
        << where << ": " << path;
    uint32_t running = 0;
    InNetns(netns_[0], [&] { running = RunningProgram("h0", BPF_TC_INGRESS); });
    EXPECT_EQ(running, program) << where << ": no new generation";
    EXPECT_EQ(LiveGeneration(0), before + 1) << where;
    std::vector<IpAddress> peers = ChurnPeers(pods);
    for (int family = 0; family < 2; ++family) {
      for (int s = 10; s < 16; ++s) {
        peers.push_back(ChurnAddress(family, 0x0a000000u + static_cast<uint32_t>(s)));
      }
    }
    ProbeHooks(netns_[0], previous, next, peers, where, counts);
    if (HasFailure()) return;
    (adding ? brought : retired) += 1;
    previous = next;
    extra = std::move(next_extra);
  }
  std::printf("seed %llu: %d tables brought (%d at a reused id, %d of them found in place), "
              "%d retired in place; %d probes, %d allowed, %d whose verdict the step changed\n",
              static_cast<unsigned long long>(seed), brought, reused, kept, retired,
              counts.probes, counts.allowed, counts.changed);
  EXPECT_GT(brought, 6);
  EXPECT_GT(retired, 3);
  EXPECT_GT(reused, 0);
  EXPECT_LT(kept, reused) << "some tables brought at a retired id should differ from it";
  EXPECT_GT(counts.changed, 0);
  // What is installed is still a whole program: a policy event after the chain goes in
  // place from it, and a fresh Apply decides the same.
  ir::CompiledPolicy next = previous;
  next.mutable_peer_sets(0)->add_identities(3);
  std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
  ASSERT_TRUE(delta.has_value());
  ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok());
  EXPECT_TRUE(absl::StartsWith(EbpfLastUpdate(*inc), "in place: policy delta"))
      << EbpfLastUpdate(*inc);
  ProbeHooks(netns_[0], previous, next, ChurnPeers(pods), "after the chain", counts);
}

// Pods of the node (x/m10..x/m13, no interface) relabelled through UpdateDelta: into
// another identity, selected or not (a table of its own brought or retired with it), or
// both at once (np_endpoint_states: the pod's identity and table switch together, with the
// bump). Each goes in place — the same program keeps running, np_config's generation goes
// up by one, no grace period on the path — and every hook of the node then decides as the
// IR interpreter reads the next program (BPF_PROG_TEST_RUN on the running programs).
// Seeded (NP_TEST_SEED).
TEST_F(UpdateTest, PodsOfTheNodeRelabelledAcrossTablesGoInPlace) {
  const uint64_t seed = testing::FirstSeed();
  std::mt19937_64 rng(seed);
  const std::vector<ChurnPod> pods = FewChurnPods(rng);
  std::vector<ExtraLocalPod> extra;
  for (int slot = 10; slot < 14; ++slot) {
    extra.push_back({slot, 1 + static_cast<int>(rng() % 3), rng() % 2 == 0});
  }
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  ir::CompiledPolicy previous = WithPodTables(ChurnIr(pods, true, {1, 2, 3}, extra), ChurnIr(pods, true));
  ASSERT_TRUE(CheckIr(previous).ok()) << CheckIr(previous);
  ASSERT_TRUE(inc->Apply(previous, On(0)).ok());
  uint32_t program = 0;
  InNetns(netns_[0], [&] { program = RunningProgram("h0", BPF_TC_INGRESS); });
  ASSERT_NE(program, 0u);
  std::vector<IpAddress> peers = ChurnPeers(pods);
  for (int family = 0; family < 2; ++family) {
    for (const ExtraLocalPod& p : extra) {
      peers.push_back(ChurnAddress(family, 0x0a000000u + static_cast<uint32_t>(p.slot)));
    }
  }
  int relabels = 0, moves = 0;
  ProbeCounts counts;
  for (int step = 0; step < 24; ++step) {
    std::vector<ExtraLocalPod> next_extra = extra;
    ExtraLocalPod& pod = next_extra[rng() % next_extra.size()];
    const int kind = static_cast<int>(rng() % 3);  // 0: identity, 1: selection, 2: both
    if (kind != 1) pod.identity = 1 + (pod.identity + static_cast<int>(rng() % 2)) % 3;
    if (kind != 0) pod.selected = !pod.selected;
    const std::string where = absl::StrCat("seed ", seed, " step ", step, " (x/m", pod.slot,
                                           kind != 1 ? " into identity " : "",
                                           kind != 1 ? absl::StrCat(pod.identity) : "",
                                           kind != 0 ? (pod.selected ? " selected" : " unselected")
                                                     : "",
                                           ")");
    const ir::CompiledPolicy next =
        WithPodTables(ChurnIr(pods, true, {1, 2, 3}, next_extra), previous);
    ASSERT_TRUE(CheckIr(next).ok()) << where << ": " << CheckIr(next);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
    ASSERT_TRUE(delta.has_value()) << where;
    const uint32_t before = LiveGeneration(0);
    ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok()) << where;
    const std::string path = EbpfLastUpdate(*inc);
    EXPECT_TRUE(absl::StartsWith(path, "in place") &&
                absl::StrContains(path, "endpoint states switched with the bump: 1"))
        << where << ": " << path;
    uint32_t running = 0;
    InNetns(netns_[0], [&] { running = RunningProgram("h0", BPF_TC_INGRESS); });
    EXPECT_EQ(running, program) << where << ": no new generation";
    EXPECT_EQ(LiveGeneration(0), before + 1) << where;
    ProbeHooks(netns_[0], previous, next, peers, where, counts);
    if (HasFailure()) return;
    relabels += kind != 1;
    moves += kind != 0;
    previous = next;
    extra = std::move(next_extra);
  }
  const ebpf::DeltaStats stats = EbpfDeltaStats(*inc);
  std::printf("seed %llu: %d relabels and %d selection changes of the node's pods in place "
              "(%llu state switches, %llu full); %d probes, %d allowed, %d whose verdict the "
              "step changed\n",
              static_cast<unsigned long long>(seed), relabels, moves,
              static_cast<unsigned long long>(stats.states_in_place),
              static_cast<unsigned long long>(stats.full), counts.probes, counts.allowed,
              counts.changed);
  EXPECT_EQ(stats.full, 0u);
  EXPECT_EQ(stats.states_in_place, 24u);
  EXPECT_GT(counts.changed, 0);
  EXPECT_GT(relabels, 4);
  EXPECT_GT(moves, 4);
}

// ChurnIr of `pods` where a pod of class 4 or 5 (ChurnPod::identity) is of a class of its
// own, whose identity comes with the class's first pod and goes with its last, numbered as
// np/lower_delta.h and np/lower_align.h number them: the lowest id past 3 unused in
// `installed` (no pods: a retired class's), else appended; a retired id keeps its place
// without pods or peer sets. Class 4 is admitted by peer sets 0 (x/l0's ingress TCP 80)
// and 2 (its egress TCP 443), class 5 by peer set 1 (UDP 53). `identity_of` (class -> id)
// is the installed numbering, updated.
ir::CompiledPolicy WithNewClasses(std::vector<ChurnPod> pods, const ir::CompiledPolicy& installed,
                                  std::map<int, uint32_t>& identity_of) {
  std::map<int, std::vector<std::string>> members;  // class -> "y/p<slot>", sorted
  for (const ChurnPod& p : pods) {
    if (p.identity >= 4) members[p.identity].push_back(absl::StrCat("y/p", p.slot));
  }
  for (auto& [c, names] : members) std::sort(names.begin(), names.end());
  uint32_t count = static_cast<uint32_t>(std::max(installed.identities_size(), 4));
  std::set<uint32_t> taken;
  for (const auto& [c, names] : members) {
    if (identity_of.count(c) != 0) continue;
    uint32_t id = 4;
    while (id < static_cast<uint32_t>(installed.identities_size()) &&
           (installed.identities(static_cast<int>(id)).pods_size() > 0 || taken.count(id))) {
      ++id;
    }
    if (id >= static_cast<uint32_t>(installed.identities_size())) id = std::max(id, count);
    count = std::max(count, id + 1);
    taken.insert(id);
    identity_of[c] = id;
  }
  for (auto it = identity_of.begin(); it != identity_of.end();) {
    it = members.count(it->first) == 0 ? identity_of.erase(it) : std::next(it);
  }
  for (ChurnPod& p : pods) {
    if (p.identity >= 4) p.identity = static_cast<int>(identity_of[p.identity]);
  }
  ir::CompiledPolicy ir = ChurnIr(pods, true);
  for (uint32_t id = static_cast<uint32_t>(ir.identities_size()); id < count; ++id) {
    ir.add_identities()->set_id(id);
  }
  for (const auto& [c, id] : identity_of) {
    for (const std::string& name : members[c]) ir.mutable_identities(static_cast<int>(id))->add_pods(name);
    for (int set : c == 4 ? std::vector<int>{0, 2} : std::vector<int>{1}) {
      ir::PeerSet* ps = ir.mutable_peer_sets(set);
      ps->add_identities(id);
      std::sort(ps->mutable_identities()->begin(), ps->mutable_identities()->end());
    }
  }
  return ir;
}

// Pods of other nodes relabelled through UpdateDelta between the three classes of ChurnIr
// and two classes of their own (WithNewClasses): identities appended, reused and retired,
// with the peer sets that admit them. Each delta goes in place — the same program keeps
// running, np_config's generation goes up by one, EbpfDeltaStats counts it, nothing goes
// full — and every hook of the node then decides as the IR interpreter reads the next
// program (BPF_PROG_TEST_RUN). Seeded (NP_TEST_SEED).
TEST_F(UpdateTest, RelabelsIntoNewIdentitiesGoInPlace) {
  const uint64_t seed = testing::FirstSeed();
  std::mt19937_64 rng(seed);
  std::vector<ChurnPod> pods = FewChurnPods(rng);
  ASSERT_GE(pods.size(), 3u);
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  std::map<int, uint32_t> identity_of;
  ir::CompiledPolicy previous = WithNewClasses(pods, ChurnIr(pods, true), identity_of);
  ASSERT_TRUE(CheckIr(previous).ok()) << CheckIr(previous);
  ASSERT_TRUE(inc->Apply(previous, On(0)).ok());
  uint32_t program = 0;
  InNetns(netns_[0], [&] { program = RunningProgram("h0", BPF_TC_INGRESS); });
  ASSERT_NE(program, 0u);
  int appended = 0, reused = 0, retired = 0, steps = 0;
  ProbeCounts counts;
  for (int step = 0; step < 30; ++step) {
    ChurnPod& pod = pods[rng() % pods.size()];
    const int was = pod.identity;  // a class of its own and back, mostly
    pod.identity = was >= 4 ? 1 + static_cast<int>(rng() % 3) : 4 + static_cast<int>(rng() % 2);
    const std::string where = absl::StrCat("seed ", seed, " step ", step, " (10.1.0.", pod.slot,
                                           " from class ", was, " to ", pod.identity, ")");
    const ir::CompiledPolicy next = WithNewClasses(pods, previous, identity_of);
    ASSERT_TRUE(CheckIr(next).ok()) << where << ": " << CheckIr(next);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
    ASSERT_TRUE(delta.has_value()) << where;
    appended += delta->identities_size();
    for (const ir::IdentityPodsEdit& e : delta->identity_pods()) {
      const bool had = previous.identities(static_cast<int>(e.identity())).pods_size() > 0;
      const bool has = PodsAfterEdit(previous, *delta, e) > 0;
      retired += had && !has;
      reused += !had && has;
    }
    const uint32_t before = LiveGeneration(0);
    ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok()) << where;
    const std::string path = EbpfLastUpdate(*inc);
    EXPECT_TRUE(absl::StartsWith(path, "in place")) << where << ": " << path;
    uint32_t running = 0;
    InNetns(netns_[0], [&] { running = RunningProgram("h0", BPF_TC_INGRESS); });
    EXPECT_EQ(running, program) << where << ": no new generation";
    EXPECT_EQ(LiveGeneration(0), before + 1) << where;
    ProbeHooks(netns_[0], previous, next, ChurnPeers(pods), where, counts);
    if (HasFailure()) return;
    previous = next;
    ++steps;
  }
  const ebpf::DeltaStats stats = EbpfDeltaStats(*inc);
  std::printf("seed %llu: %d relabels in place (%d identities appended, %d reused, %d retired; "
              "%llu with peer sets' members edited); %d probes, %d whose verdict the step "
              "changed\n",
              static_cast<unsigned long long>(seed), steps, appended, reused, retired,
              static_cast<unsigned long long>(stats.identities_in_place), counts.probes,
              counts.changed);
  EXPECT_EQ(stats.full, 0u);
  EXPECT_EQ(stats.pod_in_place, static_cast<uint64_t>(steps));
  EXPECT_GT(stats.identities_in_place, 2u);
  EXPECT_GT(appended, 0);
  EXPECT_GT(reused, 0);
  EXPECT_GT(retired, 0);
  EXPECT_GT(counts.changed, 0);
  // What is installed is a whole program: a fresh Apply of it holds the same maps but for
  // physical numbers; its verdicts are checked above, and a policy delta still goes in place.
  ir::CompiledPolicy policy = previous;
  policy.mutable_peer_sets(3)->add_identities(2);
  std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, policy);
  ASSERT_TRUE(delta.has_value());
  ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok());
  EXPECT_TRUE(absl::StartsWith(EbpfLastUpdate(*inc), "in place: policy delta"))
      << EbpfLastUpdate(*inc);
  ProbeHooks(netns_[0], previous, policy, ChurnPeers(pods), "after the chain", counts);
}

// Policy events whose ids carry over (stable numbering: testing::PolicyEvent, and
// hand-written ones: a table's rules and tier rules changed,
// a peer set's identities changed, a peer set appended and named, a table appended, a
// peer set made a tombstone and its id reused) go in place: the same program keeps
// running, np_config's generation goes up by one, EbpfLastUpdate says "in place: policy",
// and every hook of the node decides as the IR interpreter reads the next program; pod
// relabels (identity edits, which flip the bank too) in between decide right as well. A
// pair that changes an endpoint's table is refused and loads a new generation, which is
// right too; policy edits after it are in place again. Seeded (NP_TEST_SEED).
// `through_deltas`: each event reaches the backend as DiffPrograms' delta through
// UpdateDelta, the expected verdicts are the IR interpreter's of ApplyDelta(previous,
// delta), EbpfLastUpdate says "in place: policy delta" and EbpfPolicyDeltasInPlace counts
// them; every third seeded event is also undone (appended items left as tombstones) and
// redone, and every fifth event goes through Update instead (both paths on one layout).
class PolicyEventTest : public UpdateTest {
 protected:
  void Run(bool through_deltas);
};
TEST_F(PolicyEventTest, EditedInPlaceThroughUpdate) { Run(false); }
TEST_F(PolicyEventTest, EditedInPlaceThroughDeltas) { Run(true); }

void PolicyEventTest::Run(bool through_deltas) {
  const uint64_t seed = testing::FirstSeed();
  std::mt19937_64 rng(seed);
  const std::vector<ChurnPod> pods = FewChurnPods(rng);
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  ir::CompiledPolicy previous = ChurnIr(pods, true);
  ASSERT_TRUE(inc->Apply(previous, On(0)).ok());
  const std::vector<IpAddress> peers = ChurnPeers(pods);
  auto program = [&] {
    uint32_t id = 0;
    InNetns(netns_[0], [&] { id = RunningProgram("h0", BPF_TC_INGRESS); });
    return id;
  };
  ProbeCounts counts;
  int in_place = 0, full = 0, deltas_in_place = 0, sent = 0;
  // One Update: in place (same program, generation + 1) unless `expect_full`. `moves`: an
  // endpoint moves between tables, in place through a delta (a pod delta's form: its state
  // switched, maps.h IdentityEdit::state_changes), a new generation through Update.
  auto update = [&](const ir::CompiledPolicy& next, const std::string& where, bool expect_full,
                    bool moves = false) {
    ASSERT_TRUE(CheckIr(next).ok()) << where << ": " << CheckIr(next);
    const uint32_t before_program = program(), before_generation = LiveGeneration(0);
    const uint64_t before_deltas = EbpfPolicyDeltasInPlace(*inc);
    ir::CompiledPolicy expected = next;
    bool policy_delta = false;
    // Every fifth event by Update, so that whole-program edits follow native delta edits on
    // the layout those left (and the other way round).
    if (through_deltas && ++sent % 5 != 0) {
      const std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(previous, next);
      ASSERT_TRUE(delta.has_value()) << where;
      policy_delta = delta->peer_sets_size() + delta->tables_size() > 0;
      expected = previous;
      ASSERT_TRUE(ApplyDelta(*delta, &expected).ok()) << where;
      ASSERT_TRUE(inc->UpdateDelta(previous, *delta, On(0)).ok()) << where;
    } else {
      ASSERT_TRUE(inc->Update(previous, next, On(0)).ok()) << where;
    }
    const std::string path = EbpfLastUpdate(*inc);
    if (moves) {
      if (through_deltas && sent % 5 != 0) {
        EXPECT_TRUE(absl::StartsWith(path, "in place: ") &&
                    absl::StrContains(path, "endpoint states switched"))
            << where << ": " << path;
        EXPECT_EQ(program(), before_program) << where << ": no new generation";
        EXPECT_EQ(LiveGeneration(0), before_generation + 1) << where;
        ++in_place;
      } else {
        EXPECT_TRUE(absl::StartsWith(path, "full: ")) << where << ": " << path;
        ++full;
      }
      ProbeHooks(netns_[0], previous, expected, peers, where, counts);
      previous = expected;
      return;
    }
    if (policy_delta && !expect_full) {
      EXPECT_TRUE(absl::StartsWith(path, "in place: policy delta") ||
                  path == "in place: nothing to change")
          << where << ": " << path;
      deltas_in_place += absl::StartsWith(path, "in place: policy delta");
      EXPECT_EQ(EbpfPolicyDeltasInPlace(*inc) - before_deltas,
                absl::StartsWith(path, "in place: policy delta") ? 1u : 0u)
          << where << ": " << path;
    }
    if (expect_full) {
      EXPECT_TRUE(absl::StartsWith(path, "full: ")) << where << ": " << path;
      EXPECT_NE(program(), before_program) << where << ": a new generation runs";
      ++full;
    } else {
      EXPECT_TRUE(absl::StartsWith(path, "in place: policy") ||
                  path == "in place: nothing to change")
          << where << ": " << path;
      EXPECT_EQ(program(), before_program) << where << ": no new generation";
      EXPECT_EQ(LiveGeneration(0),
                before_generation + (path == "in place: nothing to change" ? 0 : 1))
          << where;
      in_place += absl::StartsWith(path, "in place: policy");
    }
    ProbeHooks(netns_[0], previous, expected, peers, where, counts);
    previous = expected;
  };
  auto rule = [](ir::DirectionPolicy* d, ir::Protocol protocol, uint32_t port, uint32_t set) {
    AddPortRule(d, protocol, port, port, set);
  };
  {  // Table 0's ingress: TCP 80 dropped, TCP 81 from peer set 0.
    ir::CompiledPolicy next = previous;
    ir::PortRule* r = next.mutable_tables(0)->mutable_ingress()->mutable_rules(0);
    ASSERT_EQ(r->first_port(), 80u);
    r->set_first_port(81);
    r->set_last_port(81);
    update(next, "table 0's rules changed", false);
  }
  {  // Peer set 1: {1, 2} -> {2, 3}.
    ir::CompiledPolicy next = previous;
    next.mutable_peer_sets(1)->clear_identities();
    next.mutable_peer_sets(1)->add_identities(2);
    next.mutable_peer_sets(1)->add_identities(3);
    update(next, "peer set 1 changed", false);
  }
  {  // Peer set 4 = {0, 3} appended, TCP 8080 pointed at it.
    ir::CompiledPolicy next = previous;
    ir::PeerSet* p = next.add_peer_sets();
    p->set_id(4);
    p->add_identities(0);
    p->add_identities(3);
    for (ir::PortRule& r : *next.mutable_tables(0)->mutable_ingress()->mutable_rules()) {
      if (r.first_port() == 8080) r.set_peer_set(4);
    }
    update(next, "peer set 4 appended and named", false);
  }
  {  // Admin tier on table 0's ingress: deny TCP 81 from peer set 0 ({1}), allow TCP from
     // peer set 4.
    ir::CompiledPolicy next = previous;
    ir::DirectionPolicy* in = next.mutable_tables(0)->mutable_ingress();
    ir::TierRule* deny = AddTierRule(in->mutable_admin(), ir::TIER_DENY, ir::TCP, 81, 81, 0);
    deny->set_origin("deny-81");
    AddTierRule(in->mutable_admin(), ir::TIER_ALLOW, ir::TCP, 0, 65535, 4)->set_origin("allow");
    update(next, "admin tier rules added", false);
  }
  {  // Table 1 appended (no endpoint names it): nothing the program reads changes.
    ir::CompiledPolicy next = previous;
    ir::Table* t = next.add_tables();
    t->set_id(1);
    t->mutable_ingress()->set_isolated(true);
    rule(t->mutable_ingress(), ir::UDP, 53, 3);
    update(next, "table 1 appended", false);
  }
  {  // x/l1 moved to table 1, which no endpoint named (its entries were never written):
     // through a delta the table is brought and x/l1's state switched, in place.
    ir::CompiledPolicy next = previous;
    next.mutable_endpoints(1)->set_selected(true);
    next.mutable_endpoints(1)->set_table(1);
    update(next, "x/l1 moved to table 1", false, /*moves=*/true);
  }
  {  // Peer set 3 made a tombstone (TCP 8080 used it before: now peer set 4 does).
    ir::CompiledPolicy next = previous;
    next.mutable_peer_sets(3)->clear_identities();
    update(next, "peer set 3 tombstoned", false);
  }
  {  // Its id reused with a new meaning, named by table 1 (x/l1's).
    ir::CompiledPolicy next = previous;
    next.mutable_peer_sets(3)->add_identities(2);
    rule(next.mutable_tables(1)->mutable_ingress(), ir::TCP, 80, 3);
    update(next, "peer set 3 reused", false);
  }
  int relabels = 0;
  for (int step = 0; step < 30; ++step) {
    std::string what;
    const ir::CompiledPolicy before = previous;
    const ir::CompiledPolicy next = testing::PolicyEvent(previous, seed * 100 + step, &what);
    update(next, absl::StrCat("seed ", seed, " event ", step, ": ", what), false);
    if (through_deltas && step % 3 == 1) {  // back (appended items as tombstones), forward
      ir::CompiledPolicy undone = before;
      for (int i = before.peer_sets_size(); i < next.peer_sets_size(); ++i) {
        undone.add_peer_sets()->set_id(static_cast<uint32_t>(i));
      }
      for (int i = before.tables_size(); i < next.tables_size(); ++i) {
        undone.add_tables()->set_id(static_cast<uint32_t>(i));
      }
      update(undone, absl::StrCat("seed ", seed, " event ", step, " undone"), false);
      update(next, absl::StrCat("seed ", seed, " event ", step, " redone"), false);
    }
    if (step % 3 != 2) continue;
    // A pod elsewhere relabelled (an identity edit, which bumps the generation too and so
    // flips the bank: the policy edit's cleanup must have made both banks equal first).
    ir::CompiledPolicy relabelled = previous;
    const ChurnPod& pod = pods[static_cast<size_t>(step) % pods.size()];
    for (int family = 0; family < 2; ++family) {
      const IpAddress a = ChurnAddress(family, 0x0a010000u + static_cast<uint32_t>(pod.slot));
      uint8_t b[16] = {};
      a.ToBytes(b);
      const std::string bytes(reinterpret_cast<const char*>(b), family == 0 ? 4 : 16);
      for (ir::AddressRange& r : family == 0 ? *relabelled.mutable_ipv4() : *relabelled.mutable_ipv6()) {
        if (r.first() == bytes && r.last() == bytes) r.set_identity(1 + (r.identity() % 3));
      }
    }
    const std::string where = absl::StrCat("seed ", seed, " step ", step, ": 10.1.0.", pod.slot,
                                           " relabelled");
    const uint32_t before_generation = LiveGeneration(0);
    ASSERT_TRUE(inc->Update(previous, relabelled, On(0)).ok()) << where;
    EXPECT_TRUE(absl::StartsWith(EbpfLastUpdate(*inc), "in place: ") &&
                !absl::StartsWith(EbpfLastUpdate(*inc), "in place: policy"))
        << where << ": " << EbpfLastUpdate(*inc);
    EXPECT_EQ(LiveGeneration(0), before_generation + 1) << where;
    ProbeHooks(netns_[0], previous, relabelled, peers, where, counts);
    previous = relabelled;
    ++relabels;
  }
  EXPECT_EQ(relabels, 10);
  std::printf("%s: %d policy edits in place (%d policy deltas), %d full; %d probes, %d "
              "allowed, %d changed\n", through_deltas ? "UpdateDelta" : "Update", in_place,
              deltas_in_place, full, counts.probes, counts.allowed, counts.changed);
  EXPECT_GE(in_place, 15);
  if (through_deltas) {
    EXPECT_GE(deltas_in_place, 20) << "the native delta path should be taken";
    EXPECT_EQ(EbpfPolicyDeltasInPlace(*inc), static_cast<uint64_t>(deltas_in_place));
  }
  // The move of x/l1: a new generation through Update (which plans no endpoint states),
  // in place through a delta.
  EXPECT_EQ(full, through_deltas ? 0 : 1);
  EXPECT_GT(counts.changed, 20) << "the events should change verdicts the probes see";
  EXPECT_GT(counts.allowed, 50);
  EXPECT_LT(counts.allowed, counts.probes);
}

// Real packets through the attached programs: a pod namespace behind h0 (c0, 10.0.0.1 = x/a
// of TwoPods) and the node side of h0 at 10.0.0.2 (x/b's address, so the node's packets
// are b's). TwoPods(): a's ingress allows b on UDP 53 only, a's egress is closed. So
// node -> a:53 must arrive (np_to_ep on h0's egress allows it), node -> a:54 must not (it
// drops it), a -> node:53 must not (np_from_ep on h0's ingress). Without np's programs all
// three arrive; with the two programs on the wrong hooks the first is dropped.
// Sets np_config.generation of the generation that `interface` in `netns` runs to
// `generation` (as if that many edits had gone by), through the program's own map.
void SetKernelGeneration(const std::string& netns, const std::string& interface,
                         uint32_t generation) {
  InNetns(netns, [&] {
    int prog = bpf_prog_get_fd_by_id(RunningProgram(interface, BPF_TC_INGRESS));
    ASSERT_GE(prog, 0);
    std::array<uint32_t, 64> ids{};
    bpf_prog_info info{};
    info.nr_map_ids = ids.size();
    info.map_ids = reinterpret_cast<uint64_t>(ids.data());
    uint32_t len = sizeof(info);
    ASSERT_EQ(bpf_obj_get_info_by_fd(prog, &info, &len), 0);
    close(prog);
    bool written = false;
    for (uint32_t i = 0; i < info.nr_map_ids && i < ids.size(); ++i) {
      int map = bpf_map_get_fd_by_id(ids[i]);
      if (map < 0) continue;
      bpf_map_info m{};
      uint32_t mlen = sizeof(m);
      if (bpf_obj_get_info_by_fd(map, &m, &mlen) == 0 && std::string(m.name) == "np_config") {
        np_config c{};
        const uint32_t zero = 0;
        if (bpf_map_lookup_elem(map, &zero, &c) == 0) {
          c.generation = generation;
          written = bpf_map_update_elem(map, &zero, &c, BPF_ANY) == 0;
        }
      }
      close(map);
    }
    ASSERT_TRUE(written) << "np_config of " << interface << " in " << netns;
  });
}

// np_config.generation across the u32 wrap (maps.h NextGeneration): the live generation
// starts a few edits before 0xffffffff (np_policy.c's NP_ANY_GENERATION) and in-place
// policy edits flip x/a's ingress between allowing UDP 53 from x/b and allowing nothing.
// One UDP flow b -> a:53 (one source port throughout) sends a datagram after every edit:
// np_ct recorded it under the generation before whenever that allowed it, and a
// connectionless flow is authorised again under each new generation (np_abi.h np_ct), so
// each datagram's verdict must be the IR interpreter's reading of the program now — also
// at the edit that `+ 1` would have numbered 0xffffffff, where ct_fresh would have let
// the recorded flow pass whatever the policy. An established TCP connection (np_abi.h:
// keeps flowing when the policy changes) passes throughout; every edit goes in place to
// NextGeneration of the number before, and leaves the maps a fresh Apply's (the banks
// the edits write follow the parity across the wrap).
TEST_F(UpdateTest, GenerationNumbersWrapWithoutPassingConnectionlessFlowsUndecided) {
  const Attachment mine{{{"x/a", "h0"}, {"x/b", "h1"}}, netns_[0]};
  const ir::CompiledPolicy allow = testing::TwoPods(/*egress_open=*/true);
  ir::CompiledPolicy deny = allow;
  deny.mutable_peer_sets(0)->clear_identities();  // a's ingress: isolated, nobody allowed
  ASSERT_TRUE(CheckIr(deny).ok()) << CheckIr(deny);
  const IpAddress a = *IpAddress::Parse("10.0.0.1"), b = *IpAddress::Parse("10.0.0.2");
  std::vector<IpAddress> peers;
  for (const char* p : {"10.0.0.1", "10.0.0.2", "10.0.0.99", "fd00::1", "fd00::2", "fd00::99"}) {
    peers.push_back(*IpAddress::Parse(p));
  }
  ProbeCounts counts;
  std::unique_ptr<Backend> inc = MakeEbpfBackend();
  ASSERT_TRUE(inc->Apply(allow, mine).ok());
  // As if 2^32 - 7 edits had gone by: the next Apply takes the kernel's number + 1, and
  // edits after the fifth reach the wrap. (An even start puts the wrap on a deny.)
  SetKernelGeneration(netns_[0], "h0", 0xfffffff9u);
  ASSERT_TRUE(inc->Apply(allow, mine).ok());
  ASSERT_EQ(LiveGeneration(0), 0xfffffffau);
  // `tcp_flags` 0x10: an ACK, `sport` the flow's. Returns whether a's np_to_ep passed it.
  auto send = [&](uint8_t protocol, uint16_t sport, uint16_t dport, uint8_t tcp_flags) {
    bool passed = false;
    InNetns(netns_[0], [&] {
      const unsigned ifindex = if_nametoindex("h0");
      int fd = bpf_prog_get_fd_by_id(RunningProgram("h0", BPF_TC_EGRESS));
      ASSERT_GE(fd, 0);
      testing::FrameSpec f;
      f.src = b;
      f.dst = a;
      f.protocol = protocol;
      f.sport = sport;
      f.dport = dport;
      f.tcp_flags = tcp_flags;
      absl::StatusOr<TestRunResult> r = TestRun(fd, testing::Frame(f), ifindex);
      close(fd);
      ASSERT_TRUE(r.ok()) << r.status();
      passed = r->verdict == TC_ACT_UNSPEC;
    });
    return passed;
  };
  ASSERT_TRUE(testing::IrInterpreter(allow).Allowed(b, a, 6, 80));
  ASSERT_TRUE(send(6, 31000, 80, 0x02)) << "the SYN that opens the TCP connection";
  ASSERT_TRUE(send(17, 31001, 53, 0)) << "the UDP flow's first datagram";
  ir::CompiledPolicy previous = allow;
  bool wrapped = false;
  for (int step = 1; step <= 10; ++step) {
    const ir::CompiledPolicy& next = step % 2 == 1 ? deny : allow;
    const uint32_t before = LiveGeneration(0);
    const std::string where = absl::StrCat("step ", step, " from generation ", before,
                                           step % 2 == 1 ? " (deny)" : " (allow)");
    ASSERT_TRUE(inc->Update(previous, next, mine).ok()) << where;
    EXPECT_TRUE(absl::StartsWith(EbpfLastUpdate(*inc), "in place: policy"))
        << where << ": " << EbpfLastUpdate(*inc);
    const uint32_t now = LiveGeneration(0);
    EXPECT_NE(now, NP_ANY_GENERATION) << where;
    EXPECT_EQ(now, NextGeneration(before)) << where;
    EXPECT_NE(now & 1u, before & 1u) << where;
    wrapped = wrapped || now < before;
    const bool expected = testing::IrInterpreter(next).Allowed(b, a, 17, 53);
    EXPECT_EQ(send(17, 31001, 53, 0), expected)
        << where << ": UDP " << b.ToString() << " -> " << a.ToString()
        << ":53, recorded in np_ct under " << before << ", now generation " << now;
    EXPECT_TRUE(send(6, 31000, 80, 0x10)) << where << ": the established TCP connection";
    // Fresh flows (new source ports) as well: SYN and datagram.
    EXPECT_EQ(send(6, static_cast<uint16_t>(32000 + step), 80, 0x02),
              testing::IrInterpreter(next).Allowed(b, a, 6, 80))
        << where << ": a new TCP connection";
    // Every hook of both pods on fresh flows (ProbeHooks' source ports, 40000 and up).
    ProbeHooks(netns_[0], previous, next, peers, where, counts,
               {{"h0", 0x0a000001u}, {"h1", 0x0a000002u}});
    if (HasFailure()) return;
    previous = next;
  }
  EXPECT_TRUE(wrapped) << "the edits never crossed the wrap";
  EXPECT_GT(counts.changed, 0) << "the probes never saw the policy change";
  // A new generation loaded over 0xfffffffe (ApplyGeneration numbers it from the kernel's)
  // wraps the same way, and decides the recorded UDP flow by policy (the deny here).
  ASSERT_TRUE(send(17, 31001, 53, 0)) << "the UDP flow under the allow";
  SetKernelGeneration(netns_[0], "h0", 0xfffffffeu);
  ASSERT_TRUE(inc->Apply(deny, mine).ok());
  EXPECT_EQ(LiveGeneration(0), 1u);
  EXPECT_FALSE(send(17, 31001, 53, 0)) << "the UDP flow recorded under 0xfffffffe, denied now";
  EXPECT_FALSE(testing::IrInterpreter(deny).Allowed(b, a, 17, 53));
  EXPECT_TRUE(inc->Remove(mine).ok());
}

class RealPackets {
 public:
  explicit RealPackets(const std::string& node) : node_(node), pod_(node + "-pod") {
    ok_ = RunCommand({"ip", "netns", "add", pod_}).ok();
    // No packet but the probes' (a CNI's program below counts what passes): no IPv6 (no
    // router or multicast listener messages), fixed neighbours (no ARP).
    for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
             {"ip", "-n", node_, "link", "set", "c0", "netns", pod_},
             {"ip", "netns", "exec", pod_, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"},
             {"ip", "netns", "exec", node_, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"},
             {"ip", "netns", "exec", node_, "sysctl", "-qw", "net.ipv6.conf.h0.disable_ipv6=1"},
             {"ip", "netns", "exec", pod_, "sysctl", "-qw", "net.ipv6.conf.c0.disable_ipv6=1"},
             {"ip", "-n", pod_, "link", "set", "c0", "address", "02:00:00:00:00:01"},
             {"ip", "-n", node_, "link", "set", "h0", "address", "02:00:00:00:00:02"},
             {"ip", "-n", pod_, "addr", "add", "10.0.0.1/24", "dev", "c0"},
             {"ip", "-n", pod_, "link", "set", "c0", "up"},
             {"ip", "-n", pod_, "link", "set", "lo", "up"},
             {"ip", "-n", node_, "addr", "add", "10.0.0.2/24", "dev", "h0"},
             {"ip", "-n", node_, "link", "set", "h0", "up"},
             {"ip", "-n", pod_, "neigh", "replace", "10.0.0.2", "lladdr", "02:00:00:00:00:02",
              "dev", "c0", "nud", "permanent"},
             {"ip", "-n", node_, "neigh", "replace", "10.0.0.1", "lladdr", "02:00:00:00:00:01",
              "dev", "h0", "nud", "permanent"}}) {
      if (ok_) ok_ = RunCommand(argv).ok();
    }
    if (!ok_) return;
    InNamespace(pod_, [&] { pod_sock_ = Socket("10.0.0.1"); });
    InNamespace(node_, [&] { node_sock_ = Socket("10.0.0.2"); });
    ok_ = pod_sock_ >= 0 && node_sock_ >= 0;
  }
  ~RealPackets() {
    if (pod_sock_ >= 0) close(pod_sock_);
    if (node_sock_ >= 0) close(node_sock_);
    RunCommand({"ip", "netns", "del", pod_}).IgnoreError();
  }
  bool ok() const { return ok_; }
  // Whether a datagram from the node to a's `port` (to_pod) or from a to the node's port
  // arrives: up to `tries` datagrams, each waited for `wait_ms`.
  bool Arrives(bool to_pod, uint16_t port, int tries = 3, int wait_ms = 500) {
    const int from = to_pod ? node_sock_ : pod_sock_, to = to_pod ? pod_sock_ : node_sock_;
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(port);
    dst.sin_addr.s_addr = htonl(to_pod ? 0x0a000001u : 0x0a000002u);
    Drain(to);
    for (int i = 0; i < tries; ++i) {
      const std::string payload = absl::StrCat("np", ++sequence_);
      // The receiving socket is bound to `port` (made once per port).
      if (!Rebind(to, to_pod ? "10.0.0.1" : "10.0.0.2", port)) return false;
      if (sendto(from, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&dst),
                 sizeof(dst)) < 0) {
        return false;
      }
      timeval timeout{0, wait_ms * 1000};
      setsockopt(Receiver(to), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
      char buffer[64];
      while (true) {
        const ssize_t n = recv(Receiver(to), buffer, sizeof(buffer), 0);
        if (n < 0) break;
        if (std::string(buffer, static_cast<size_t>(n)) == payload) return true;
      }
    }
    return false;
  }
  // Sends datagrams from the node to a's `port` until `stop`, and counts those that arrive.
  void Flood(uint16_t port, const std::atomic<bool>& stop, int& sent, int& arrived) {
    if (!Rebind(pod_sock_, "10.0.0.1", port)) return;
    const int receiver = Receiver(pod_sock_);
    timeval none{0, 1};
    setsockopt(receiver, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(port);
    dst.sin_addr.s_addr = htonl(0x0a000001u);
    char buffer[64];
    while (!stop.load()) {
      if (sendto(node_sock_, "f", 1, 0, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) == 1) ++sent;
      while (recv(receiver, buffer, sizeof(buffer), MSG_DONTWAIT) > 0) ++arrived;
    }
    usleep(100000);
    while (recv(receiver, buffer, sizeof(buffer), MSG_DONTWAIT) > 0) ++arrived;
  }

 private:
  static int Socket(const char* address) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = inet_addr(address);
    if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }
  // The receiving socket of a side for one port, made in that side's namespace.
  bool Rebind(int side, const char* address, uint16_t port) {
    auto& r = side == pod_sock_ ? pod_receiver_ : node_receiver_;
    if (r.first >= 0 && r.second == port) return true;
    if (r.first >= 0) close(r.first);
    r = {-1, port};
    InNamespace(side == pod_sock_ ? pod_ : node_, [&] {
      int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      a.sin_addr.s_addr = inet_addr(address);
      if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
        r.first = fd;
      } else if (fd >= 0) {
        close(fd);
      }
    });
    return r.first >= 0;
  }
  int Receiver(int side) const { return side == pod_sock_ ? pod_receiver_.first : node_receiver_.first; }
  void Drain(int side) {
    char buffer[64];
    const int fd = Receiver(side);
    if (fd < 0) return;
    while (recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT) > 0) {
    }
  }

  std::string node_, pod_;
  bool ok_ = false;
  int pod_sock_ = -1, node_sock_ = -1;
  std::pair<int, uint16_t> pod_receiver_{-1, 0}, node_receiver_{-1, 0};
  int sequence_ = 0;
};

// The agent's case: a process attaches np's programs (tcx, no qdisc) and exits; the pod
// stays filtered, by the programs the hooks hold, as the IR says, until Remove.
TEST_F(LoaderTest, TcxProgramsOutliveTheProcessAndDecideRealPackets) {
  RealPackets packets(netns_);
  ASSERT_TRUE(packets.ok());
  // Unfiltered: everything arrives (the probe itself works).
  EXPECT_TRUE(packets.Arrives(true, 54));
  EXPECT_TRUE(packets.Arrives(false, 53));
  absl::StatusOr<MapContents> maps = BuildMaps(testing::TwoPods());
  ASSERT_TRUE(maps.ok());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    absl::StatusOr<ApplyReport> r = ApplyGeneration(*maps, {{"h0", 0}}, netns_);
    _exit(r.ok() && r->tcx ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(Attached("h0", NP_HOOK_FROM_ENDPOINT), "tcx np_from_ep");
  EXPECT_EQ(Attached("h0", NP_HOOK_TO_ENDPOINT), "tcx np_to_ep");
  EXPECT_FALSE(absl::StrContains(Tc({"qdisc", "show", "dev", "h0"}), "clsact"));
  EXPECT_TRUE(packets.Arrives(true, 53));
  EXPECT_FALSE(packets.Arrives(true, 54, 2, 300));
  EXPECT_FALSE(packets.Arrives(false, 53, 2, 300));
  // Re-attached by the next generation (this process): replaced in place, same verdicts.
  absl::StatusOr<ApplyReport> next = ApplyGeneration(*maps, {{"h0", 0}}, netns_);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->generation, 2u);
  EXPECT_TRUE(next->conntrack_reused);
  EXPECT_EQ(TcxCount("h0", NP_HOOK_FROM_ENDPOINT), 1);
  EXPECT_EQ(TcxCount("h0", NP_HOOK_TO_ENDPOINT), 1);
  EXPECT_TRUE(packets.Arrives(true, 53));
  EXPECT_FALSE(packets.Arrives(true, 54, 2, 300));
  // Detached: unfiltered again, nothing of np left on the hooks.
  ASSERT_TRUE(RemoveFromInterfaces({"h0"}, netns_).ok());
  EXPECT_EQ(Attached("h0", NP_HOOK_FROM_ENDPOINT), "none");
  EXPECT_EQ(Attached("h0", NP_HOOK_TO_ENDPOINT), "none");
  EXPECT_TRUE(packets.Arrives(true, 54));
  EXPECT_TRUE(packets.Arrives(false, 53));
}

// An interface with np's legacy tc filters (an older np; here SetAttachMode(kTcOnly)) is
// upgraded to tcx by the next Apply: tcx program first, then the filters off (loader.h),
// while the node floods a's closed port: no datagram may arrive at any moment (a window
// without a program would let them through), and a's open port keeps working.
TEST_F(LoaderTest, UpgradeFromLegacyFiltersNeverLeavesTheInterfaceUnfiltered) {
  RealPackets packets(netns_);
  ASSERT_TRUE(packets.ok());
  absl::StatusOr<MapContents> maps = BuildMaps(testing::TwoPods());
  ASSERT_TRUE(maps.ok());
  SetAttachMode(AttachMode::kTcOnly);
  absl::StatusOr<ApplyReport> legacy = ApplyGeneration(*maps, {{"h0", 0}, {"h1", 1}}, netns_);
  SetAttachMode(AttachMode::kTcxWhenAvailable);
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_FALSE(legacy->tcx);
  EXPECT_EQ(Attached("h0", NP_HOOK_FROM_ENDPOINT), "tc np_from_ep");
  EXPECT_EQ(Attached("h0", NP_HOOK_TO_ENDPOINT), "tc np_to_ep");
  EXPECT_TRUE(absl::StrContains(Tc({"qdisc", "show", "dev", "h0"}), "clsact"));
  EXPECT_TRUE(packets.Arrives(true, 53));
  EXPECT_FALSE(packets.Arrives(true, 54, 2, 300));

  std::atomic<bool> stop{false};
  int sent = 0, arrived = 0;
  std::thread flood([&] { packets.Flood(54, stop, sent, arrived); });
  // Several upgrades, each a chance for a window.
  absl::StatusOr<ApplyReport> upgraded;
  for (int round = 0; round < 5; ++round) {
    if (round > 0) {
      // Back to legacy filters only, never unfiltered: a generation's tc filters next to
      // the tcx programs, then the tcx programs off.
      SetAttachMode(AttachMode::kTcOnly);
      absl::StatusOr<ApplyReport> back = ApplyGeneration(*maps, {{"h0", 0}, {"h1", 1}}, netns_);
      SetAttachMode(AttachMode::kTcxWhenAvailable);
      ASSERT_TRUE(back.ok()) << back.status();
      InNamespace(netns_, [&] {
        for (const char* dev : {"h0", "h1"}) {
          const int index = static_cast<int>(if_nametoindex(dev));
          for (uint32_t hook : {NP_HOOK_FROM_ENDPOINT, NP_HOOK_TO_ENDPOINT}) {
            AttachedProgram a = FindAttached(index, hook);
            ASSERT_TRUE(a.tcx);
            int fd = bpf_prog_get_fd_by_id(a.id);
            bpf_attr attr{};
            attr.target_fd = static_cast<uint32_t>(index);
            attr.attach_bpf_fd = static_cast<uint32_t>(fd);
            attr.attach_type = hook == NP_HOOK_FROM_ENDPOINT ? 46 : 47;
            EXPECT_EQ(syscall(SYS_bpf, BPF_PROG_DETACH, &attr, sizeof(attr)), 0);
            close(fd);
            EXPECT_FALSE(FindAttached(index, hook).tcx);
          }
        }
      });
    }
    upgraded = ApplyGeneration(*maps, {{"h0", 0}, {"h1", 1}}, netns_);
    ASSERT_TRUE(upgraded.ok()) << upgraded.status();
  }
  stop = true;
  flood.join();
  EXPECT_GT(sent, 0);
  EXPECT_EQ(arrived, 0) << sent << " datagrams to a closed port were sent during upgrades";
  EXPECT_TRUE(upgraded->tcx);
  for (const char* dev : {"h0", "h1"}) {
    EXPECT_EQ(Attached(dev, NP_HOOK_FROM_ENDPOINT), "tcx np_from_ep") << dev;
    EXPECT_EQ(Attached(dev, NP_HOOK_TO_ENDPOINT), "tcx np_to_ep") << dev;
    EXPECT_EQ(TcxCount(dev, NP_HOOK_FROM_ENDPOINT), 1) << dev;
    // np's legacy filters are gone (the qdisc may stay: another filter could be on it).
    EXPECT_FALSE(absl::StrContains(Tc({"filter", "show", "dev", dev, "ingress"}), "np_from_ep"));
    EXPECT_FALSE(absl::StrContains(Tc({"filter", "show", "dev", dev, "egress"}), "np_to_ep"));
  }
  EXPECT_TRUE(packets.Arrives(true, 53));
  EXPECT_FALSE(packets.Arrives(true, 54, 2, 300));
  // The in-place edits of the upgraded generation check it through tcx.
  EXPECT_TRUE(EditIdentities(*upgraded->live, IdentityEdit{}).ok());
  ASSERT_TRUE(RemoveFromInterfaces({"h0", "h1"}, netns_).ok());
  EXPECT_EQ(Attached("h0", NP_HOOK_FROM_ENDPOINT), "none");
}

// A program of the CNI on the same tcx hook still runs after np allows a packet (np
// returns TCX_NEXT, not TCX_PASS, which would end the chain), and np runs first: the
// CNI's program here counts the packets it sees in a map.
TEST_F(LoaderTest, TcxLeavesAllowedPacketsToTheCnisPrograms) {
  RealPackets packets(netns_);
  ASSERT_TRUE(packets.ok());
  // The "CNI": r0 = TCX_NEXT after counting in an array map (r1 = map, r2 = &key, lookup,
  // add 1). Written as instructions: no second object file.
  int counter = bpf_map_create(BPF_MAP_TYPE_ARRAY, "cni_count", 4, 8, 1, nullptr);
  ASSERT_GE(counter, 0);
  struct bpf_insn insns[] = {
      {BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, -4, 0},          // *(u32 *)(fp - 4) = 0
      {BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0},  // r2 = fp
      {BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -4},          // r2 -= 4
      {BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, counter},
      {0, 0, 0, 0, 0},
      {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem},
      {BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 2, 0},             // if r0 == 0 skip 2
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_1, 0, 0, 1},           // r1 = 1
      {BPF_STX | BPF_ATOMIC | BPF_DW, BPF_REG_0, BPF_REG_1, 0, BPF_ADD},  // *r0 += r1
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, -1},          // TCX_NEXT
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  int cni = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "cni_next", "GPL", insns,
                          sizeof(insns) / sizeof(insns[0]), nullptr);
  ASSERT_GE(cni, 0) << std::strerror(errno);
  InNamespace(netns_, [&] {
    bpf_attr attr{};
    attr.target_fd = if_nametoindex("h0");
    attr.attach_bpf_fd = static_cast<uint32_t>(cni);
    attr.attach_type = 47;  // BPF_TCX_EGRESS: what the pod receives
    ASSERT_EQ(syscall(SYS_bpf, BPF_PROG_ATTACH, &attr, sizeof(attr)), 0) << std::strerror(errno);
  });
  absl::StatusOr<MapContents> maps = BuildMaps(testing::TwoPods());
  ASSERT_TRUE(maps.ok());
  absl::StatusOr<ApplyReport> applied = ApplyGeneration(*maps, {{"h0", 0}}, netns_);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(TcxCount("h0", NP_HOOK_TO_ENDPOINT), 2);
  auto count = [&] {
    const uint32_t zero = 0;
    uint64_t v = 0;
    bpf_map_lookup_elem(counter, &zero, &v);
    return v;
  };
  const uint64_t before = count();
  EXPECT_TRUE(packets.Arrives(true, 53));
  const uint64_t after_allowed = count();
  EXPECT_GT(after_allowed, before) << "np ended the tcx chain on an allowed packet";
  EXPECT_FALSE(packets.Arrives(true, 54, 2, 300));
  EXPECT_EQ(count(), after_allowed) << "a packet np drops reached the CNI's program (np "
                                       "is not first)";
  ASSERT_TRUE(RemoveFromInterfaces({"h0"}, netns_).ok());
  EXPECT_EQ(TcxCount("h0", NP_HOOK_TO_ENDPOINT), 1);  // the CNI's stays
  close(cni);
  close(counter);
}

}  // namespace
}  // namespace np::backends::ebpf
