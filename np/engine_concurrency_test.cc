// Readers verdicting while a writer applies updates: run under ThreadSanitizer
// (bazel test --config=tsan //np:engine_concurrency_test). Each reader checks that every
// snapshot it pins is self-consistent (a snapshot with the deny policy denies, one without
// allows): a torn or freed snapshot would break that or trip the sanitizer.
#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "np/engine.h"

namespace np {
namespace {

k8s::Pod MakePod(int i) {
  k8s::Pod pod;
  pod.mutable_metadata()->set_namespace_("x");
  pod.mutable_metadata()->set_name(absl::StrCat("p", i));
  (*pod.mutable_metadata()->mutable_labels())["app"] = i % 2 ? "web" : "db";
  pod.mutable_status()->add_podips()->set_ip(absl::StrCat("10.0.0.", i + 1));
  return pod;
}

TEST(LiveEngine, ReadersNeverSeeATornSnapshot) {
  ClusterObjects objects;
  for (int i = 0; i < 16; ++i) objects.pods.push_back({MakePod(i), {}});
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  ASSERT_TRUE(cluster.ok());
  LiveEngine live(*Engine::Build(*cluster));
  k8s::NetworkPolicy deny;
  deny.mutable_metadata()->set_namespace_("x");
  deny.mutable_metadata()->set_name("deny-db");
  (*deny.mutable_spec()->mutable_podselector()->mutable_matchlabels())["app"] = "db";

  std::atomic<bool> stop{false};
  std::atomic<long> reads{0}, bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      LiveEngine::Reader reader(live);
      uint32_t i = t;
      while (!stop.load()) {
        const Engine& e = reader.Pin();
        bool has_policy = e.stats().policies == 1;
        std::optional<PodId> web = e.FindPod("x/p1"), db = e.FindPod("x/p0");
        if (!web || !db) {
          bad++;
          continue;
        }
        // web -> db is denied exactly when the snapshot holds the policy.
        if (e.Allowed(*web, *db, Protocol::kTCP, 80) == has_policy) bad++;
        if (!e.Allowed(*db, *web, Protocol::kTCP, static_cast<uint16_t>(i++ % 1000))) bad++;
        reads++;
      }
    });
  }
  for (int round = 0; round < 300; ++round) {
    Change change{round % 2 == 0 ? Change::Op::kUpsert : Change::Op::kDelete, deny};
    ASSERT_TRUE(live.Apply({change}).ok());
    // Pod churn too: relabel a pod back and forth.
    k8s::Pod pod = MakePod(5);
    (*pod.mutable_metadata()->mutable_labels())["round"] = absl::StrCat(round % 3);
    ASSERT_TRUE(live.Apply({Change{Change::Op::kUpsert, pod}}).ok());
  }
  stop = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0);
}

}  // namespace
}  // namespace np
