// The agent benchmarks' events are what they claim to be: each text is accepted by the agent
// (not rejected, which would make a benchmark time nothing) and does to the engine what its
// name says; Quantile is nearest-rank. No root: a backend that records nothing stands in.
#include "bench/agent_workload.h"

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "np/agent/agent.h"
#include "np/agent/metrics.h"
#include "np/backends/backend.h"
#include "np/cluster.h"
#include "np/engine.h"

namespace np::bench {
namespace {

class NullBackend : public backends::Backend {
 public:
  std::string name() const override { return "null"; }
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

class AgentWorkloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    objects_ = GenerateCluster(OptionsFor(NodeShape::kSmall));
    absl::StatusOr<Cluster> cluster = Cluster::Create(objects_);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    EngineOptions options;
    options.node_name = kNode;
    absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    agent_ = std::make_unique<agent::Agent>(*engine, std::make_unique<NullBackend>(),
                                            agent::AgentOptions(), &metrics_, &log_);
  }
  // Whether the agent took the event (it then waits for the kernel).
  bool Take(const std::string& text) {
    const int before = agent_->pending_events();
    agent_->HandleEvent(text, absl::Now());
    return agent_->pending_events() == before + 1;
  }
  const k8s::Pod& AppPod(const std::string& node) {
    for (const Sourced<k8s::Pod>& p : objects_.pods) {
      if (p.object.spec().nodename() == node && p.object.metadata().labels().count("tier")) {
        return p.object;
      }
    }
    ADD_FAILURE() << "no application pod on " << node;
    return objects_.pods[0].object;
  }

  ClusterObjects objects_;
  agent::AgentMetrics metrics_;
  std::ostream null_{nullptr};
  agent::JsonLog log_{&null_};
  std::unique_ptr<agent::Agent> agent_;
};

TEST_F(AgentWorkloadTest, PodAddRelabelDelete) {
  const k8s::Pod pod = ClonePod(AppPod(kNode), "bench-x", kNode, 7);
  const std::string key = PodKey(pod);
  EXPECT_FALSE(agent_->current()->FindPod(key).has_value());
  ASSERT_TRUE(Take(PodEvent("ADDED", pod)));
  EXPECT_TRUE(agent_->current()->FindPod(key).has_value());
  EXPECT_EQ(pod.status().podips_size(), 2);
  EXPECT_EQ(pod.status().podip(), "10.250.0.7");
  k8s::Pod moved = pod;
  (*moved.mutable_metadata()->mutable_labels())["app"] = "elsewhere";
  ASSERT_TRUE(Take(PodEvent("MODIFIED", moved)));
  ASSERT_TRUE(Take(PodDeleteEvent(pod.metadata().namespace_(), pod.metadata().name())));
  EXPECT_FALSE(agent_->current()->FindPod(key).has_value());
  EXPECT_EQ(agent_->pending_events(), 3);
}

TEST_F(AgentWorkloadTest, PolicyAddEditDelete) {
  const k8s::Pod& pod = AppPod(kNode);
  const std::string ns = pod.metadata().namespace_();
  const std::string app = pod.metadata().labels().at("app");
  ASSERT_TRUE(Take(PolicyEvent("ADDED", ns, "bench-p", app, 7777)));
  ASSERT_TRUE(Take(PolicyEvent("MODIFIED", ns, "bench-p", app, 7778)));
  ASSERT_TRUE(Take(PolicyDeleteEvent(ns, "bench-p")));
  // Deleting what is gone is taken as a no-op, not as work for the kernel.
  EXPECT_FALSE(Take(PolicyDeleteEvent(ns, "bench-p")));
}

TEST_F(AgentWorkloadTest, MalformedTextIsRejected) {
  // The check the benchmarks rely on to notice an event that does nothing.
  EXPECT_FALSE(Take("{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\"}}"));
}

TEST(QuantileTest, NearestRank) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  EXPECT_EQ(Quantile(v, 0.5), 50);
  EXPECT_EQ(Quantile(v, 0.99), 99);
  EXPECT_EQ(Quantile(v, 1), 100);
  EXPECT_EQ(Quantile(v, 0), 1);
  EXPECT_EQ(Quantile({}, 0.5), -1);
  EXPECT_EQ(Quantile({3, 1, 2}, 0.99), 3);
}

TEST(NodeShapeTest, NodeZeroHoldsTheIssuesPodCounts) {
  for (auto [shape, want] : {std::pair{NodeShape::kSmall, 111}, {NodeShape::kLarge, 1001}}) {
    int on_node = 0;
    for (const Sourced<k8s::Pod>& p : GenerateCluster(OptionsFor(shape)).pods) {
      on_node += p.object.spec().nodename() == kNode ? 1 : 0;
    }
    EXPECT_EQ(on_node, want) << ShapeName(shape);
  }
}

}  // namespace
}  // namespace np::bench
