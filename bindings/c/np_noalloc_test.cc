// The C ABI's verdict path allocates nothing (np.h: "Allocation-free"): this binary counts
// every operator new, and the counter must not move while single and batched verdicts are
// answered through np_engine_* and np_reader_*, batches longer than the library's internal
// chunk included.
#include <string>
#include <vector>

#include "bindings/c/np.h"
#include "gtest/gtest.h"
#include "np/testing/allocation_counter.h"

namespace {

// x/a admits x/b on TCP 80; x/c is not admitted.
constexpr char kCluster[] = R"(
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {app: c}}
status: {podIP: 10.0.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{from: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 80}]}]
)";

TEST(CAbi, VerdictsAllocateNothing) {
  np_cluster* cluster = nullptr;
  np_engine* engine = nullptr;
  np_live* live = nullptr;
  np_reader* reader = nullptr;
  ASSERT_EQ(np_cluster_load(kCluster, sizeof kCluster - 1, "test", &cluster, nullptr), NP_OK);
  ASSERT_EQ(np_engine_build(cluster, nullptr, &engine, nullptr), NP_OK);
  ASSERT_EQ(np_live_new(engine, &live, nullptr), NP_OK);
  ASSERT_EQ(np_reader_new(live, &reader, nullptr), NP_OK);
  uint32_t a = 0, b = 0, c = 0;
  ASSERT_EQ(np_engine_find_pod(engine, "x/a", &a, nullptr), NP_OK);
  ASSERT_EQ(np_engine_find_pod(engine, "x/b", &b, nullptr), NP_OK);
  ASSERT_EQ(np_engine_find_pod(engine, "x/c", &c, nullptr), NP_OK);
  std::vector<np_pod_query> queries;
  for (int i = 0; i < 1000; ++i) {
    queries.push_back({i % 2 ? c : b, a, NP_TCP, 0, 80});  // allowed, denied, ...
  }
  std::vector<uint8_t> out(queries.size());
  size_t bad_index = 0;

  const long before = np::testing::AllocationCount();
  int allowed = 0;
  for (int round = 0; round < 10; ++round) {
    allowed += np_engine_allowed(engine, b, a, NP_TCP, 80);
    allowed += np_reader_allowed(reader, b, a, NP_TCP, 80);
    ASSERT_EQ(np_engine_allowed_batch(engine, queries.data(), queries.size(), out.data(),
                                      &bad_index), NP_OK);
    ASSERT_EQ(np_reader_allowed_batch(reader, queries.data(), queries.size(), out.data(),
                                      &bad_index), NP_OK);
  }
  const long after = np::testing::AllocationCount();
  EXPECT_EQ(after - before, 0);
  EXPECT_EQ(allowed, 20);
  EXPECT_EQ(out[0], 1);
  EXPECT_EQ(out[1], 0);

  np_reader_free(reader);
  np_live_free(live);
  np_engine_free(engine);
  np_cluster_free(cluster);
}

}  // namespace
