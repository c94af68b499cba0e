// Verdict calls allocate nothing: this binary counts every operator new, and the counter
// must not move while thousands of verdicts (by pod, by endpoint, by packet, in batches)
// are answered.

#include "gtest/gtest.h"
#include "np/testing/allocation_counter.h"
#include "np/engine.h"
#include "np/testgen/random_cluster.h"

namespace np {
namespace {

TEST(Engine, VerdictsAllocateNothing) {
  for (uint64_t seed = 0; seed < 30; ++seed) {
    testgen::RandomCluster generator(seed);
    absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
    ASSERT_TRUE(cluster.ok());
    absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster);
    ASSERT_TRUE(engine.ok());
    std::vector<PodId> pods = (*engine)->Pods();
    std::vector<IpAddress> addresses = testgen::RandomCluster::ProbeAddresses();
    for (int i = 0; i < cluster->pod_count(); ++i) {
      for (const IpAddress& a : cluster->pod(i).ips) addresses.push_back(a);
    }
    std::vector<PodQuery> queries;
    for (PodId s : pods) {
      for (PodId d : pods) queries.push_back(PodQuery{s, d, Protocol::kTCP, 80});
    }
    std::vector<uint8_t> out(queries.size());
    std::vector<PacketQuery> packets;
    for (const IpAddress& s : addresses) {
      for (const IpAddress& d : addresses) {
        if (s.family() == d.family()) packets.push_back(PacketQuery{s, d, Protocol::kTCP, 80});
      }
    }
    std::vector<uint8_t> packets_out(packets.size());
    const std::vector<uint16_t> ports = testgen::RandomCluster::ProbePorts();
    const Engine& e = **engine;
    long before = np::testing::AllocationCount();
    long allowed = 0;
    for (PodId s : pods) {
      for (PodId d : pods) {
        for (Protocol p : kAllProtocols) {
          for (uint16_t port : ports) {
            allowed += e.Allowed(s, d, p, port);
            allowed += e.Allowed(Endpoint::Pod(static_cast<int>(s)),
                                 Endpoint::External(addresses[0]), p, port);
          }
        }
      }
    }
    for (const IpAddress& s : addresses) {
      for (const IpAddress& d : addresses) {
        if (s.family() == d.family()) allowed += e.AllowedPacket(s, d, Protocol::kUDP, 53);
      }
    }
    e.AllowedBatch(absl::MakeConstSpan(queries), absl::MakeSpan(out));
    e.AllowedBatch(absl::MakeConstSpan(packets), absl::MakeSpan(packets_out));
    long after = np::testing::AllocationCount();
    EXPECT_EQ(after, before) << "seed " << seed << ": verdicts allocated " << (after - before)
                             << " times";
    EXPECT_GE(allowed, 0);
  }
  // The counter works: an explanation does allocate.
  long before = np::testing::AllocationCount();
  testgen::RandomCluster generator(1);
  absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
  EXPECT_GT(np::testing::AllocationCount(), before);
}

}  // namespace
}  // namespace np
