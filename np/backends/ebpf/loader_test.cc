// The loader on real interfaces, in a network namespace this test creates (and always
// deletes): Apply attaches to each endpoint's interface, the next Apply (also from another
// Backend instance) finds the live generation and hands its conntrack on, errors leave
// nothing half-done, Remove takes everything away. Runs as root; skips otherwise.
// Traffic itself is checked by `netpol probe --backend ebpf` (probe_test.sh).
#include "np/backends/ebpf/loader.h"

#include <unistd.h>

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

  std::string netns_;
  bool created_ = false;
};

TEST_F(LoaderTest, ApplyReplacesGenerationsAndRemoveCleansUp) {
  absl::StatusOr<MapContents> maps = BuildMaps(testing::TwoPods());
  ASSERT_TRUE(maps.ok());
  std::vector<InterfaceEndpoint> interfaces = {{"h0", 0}, {"h1", 1}};
  absl::StatusOr<ApplyReport> first = ApplyGeneration(*maps, interfaces, netns_);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->generation, 1u);
  EXPECT_FALSE(first->conntrack_reused);
  EXPECT_EQ(first->interfaces, 2);
  for (const char* dev : {"h0", "h1"}) {
    EXPECT_TRUE(absl::StrContains(Tc({"filter", "show", "dev", dev, "ingress"}), "np_from_ep"));
    EXPECT_TRUE(absl::StrContains(Tc({"filter", "show", "dev", dev, "egress"}), "np_to_ep"));
  }
  std::string before = Tc({"filter", "show", "dev", "h0", "ingress"});

  absl::StatusOr<ApplyReport> second = ApplyGeneration(*maps, interfaces, netns_);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->generation, 2u);
  EXPECT_TRUE(second->conntrack_reused);
  // Replaced in place: one filter per hook, a new program id.
  std::string after = Tc({"filter", "show", "dev", "h0", "ingress"});
  EXPECT_NE(before, after);
  EXPECT_EQ(std::count(after.begin(), after.end(), '\n'),
            std::count(before.begin(), before.end(), '\n'));

  // Another Backend instance (as another process would) continues the sequence.
  std::unique_ptr<Backend> backend = MakeEbpfBackend();
  ASSERT_TRUE(backend->Apply(testing::TwoPods(true), Both()).ok());
  absl::StatusOr<ApplyReport> fourth = ApplyGeneration(*maps, interfaces, netns_);
  ASSERT_TRUE(fourth.ok());
  EXPECT_EQ(fourth->generation, 4u);

  ASSERT_TRUE(backend->Remove(Both()).ok());
  for (const char* dev : {"h0", "h1"}) {
    EXPECT_FALSE(absl::StrContains(Tc({"qdisc", "show", "dev", dev}), "clsact"));
  }
  EXPECT_TRUE(backend->Remove(Both()).ok());  // idempotent
  // After Remove the next Apply starts over.
  absl::StatusOr<ApplyReport> fresh = ApplyGeneration(*maps, interfaces, netns_);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->generation, 1u);
  EXPECT_TRUE(backend->Remove(Both()).ok());
}

TEST_F(LoaderTest, BadAttachmentsAreErrors) {
  std::unique_ptr<Backend> backend = MakeEbpfBackend();
  absl::Status s = backend->Apply(testing::TwoPods(), Attachment{{{"x/a", "nosuch0"}}, netns_});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  s = backend->Apply(testing::TwoPods(), Attachment{{{"x/a", "h0"}}, "npebpf-no-such-netns"});
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(absl::StrContains(Tc({"qdisc", "show", "dev", "h0"}), "clsact"));
  // A malformed IR never reaches the kernel.
  ir::CompiledPolicy bad = testing::TwoPods();
  bad.mutable_ipv4(0)->set_identity(99);
  EXPECT_FALSE(backend->Apply(bad, Both()).ok());
  EXPECT_FALSE(absl::StrContains(Tc({"qdisc", "show", "dev", "h0"}), "clsact"));
  // Not an error: the interface of a pod that is not an endpoint of the IR gets the
  // pass-through entry (NP_ENDPOINT_OUTSIDE), and such an interface that is gone is skipped.
  s = backend->Apply(testing::TwoPods(),
                     Attachment{{{"x/zz", "h0"}, {"x/gone", "nosuch0"}}, netns_});
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(absl::StrContains(Tc({"qdisc", "show", "dev", "h0"}), "clsact"));
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
