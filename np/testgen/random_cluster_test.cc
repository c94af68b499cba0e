// The random cluster generator's tier objects: valid by np's validation on every seed, rich
// enough to exercise what the tiers' semantics turn on (each action, ties, every peer and
// port form, nodes), and drawn so that seeds without tiers give the clusters they always gave.
#include "np/testgen/random_cluster.h"

#include <map>
#include <set>
#include <string>
#include <utility>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "np/cluster.h"

namespace np::testgen {
namespace {

constexpr int kSeeds = 1000;

// (Serialized bytes would differ: map fields serialize in no fixed order.)
bool Same(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

RandomClusterOptions Tiered() {
  RandomClusterOptions options;
  options.tier_chance = 1;
  return options;
}

TEST(RandomClusterTiers, EveryTieredClusterIsValid) {
  for (int seed = 0; seed < kSeeds; ++seed) {
    RandomCluster generator(seed, Tiered());
    std::vector<Diagnostic> diagnostics;
    absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects(), &diagnostics);
    ASSERT_TRUE(cluster.ok()) << "seed " << seed << ": " << cluster.status();
    ASSERT_TRUE(cluster->has_tier_policies()) << "seed " << seed;
  }
}

// What a differential test needs to see somewhere in the seeds, counted on the model
// (np/tiers/model.h) that evaluation reads.
TEST(RandomClusterTiers, SeedsCoverTheFeaturesTiersTurnOn) {
  std::map<std::string, int> seen;
  for (int seed = 0; seed < kSeeds; ++seed) {
    RandomCluster generator(seed, Tiered());
    absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
    ASSERT_TRUE(cluster.ok()) << "seed " << seed << ": " << cluster.status();
    if (cluster->node_count() > 0) seen["node"]++;
    if (cluster->policy_count() > 0) seen["networkpolicy beside tiers"]++;
    std::set<std::pair<tiers::Tier, int32_t>> priorities;
    for (int i = 0; i < cluster->tier_policy_count(); ++i) {
      const tiers::TierPolicy& p = cluster->tier_policy(i);
      seen[p.kind + " " + std::string(tiers::TierName(p.tier))]++;
      if (!priorities.insert({p.tier, p.priority}).second) seen["same-priority tie"]++;
      if (i > 0 && cluster->tier_policy(i - 1).name == p.name) seen["tie broken by kind"]++;
      for (const auto* rules : {&p.ingress, &p.egress}) {
        for (const tiers::Rule& rule : *rules) {
          seen[std::string("action ") + std::string(tiers::ActionName(rule.action))]++;
          if (rule.ports.empty()) seen["rule without ports"]++;
          for (const tiers::PortMatch& port : rule.ports) {
            if (!port.named_port.empty()) {
              seen["named port"]++;
            } else if (port.range.first != port.range.last) {
              seen["port range"]++;
            } else {
              seen["single port"]++;
            }
          }
          for (const tiers::Peer& peer : rule.peers) {
            seen["peer kind " + std::to_string(static_cast<int>(peer.kind))]++;
          }
        }
      }
    }
  }
  for (const char* feature :
       {"node", "networkpolicy beside tiers", "AdminNetworkPolicy Admin",
        "BaselineAdminNetworkPolicy Baseline", "ClusterNetworkPolicy Admin",
        "ClusterNetworkPolicy Baseline", "same-priority tie", "tie broken by kind",
        "action Allow", "action Deny", "action Pass", "rule without ports", "named port",
        "port range", "single port", "peer kind 0", "peer kind 1", "peer kind 2",
        "peer kind 3", "peer kind 4"}) {
    EXPECT_GT(seen[feature], 0) << feature;
  }
}

// The tier objects are drawn after everything else: a seed's namespaces, pods and
// NetworkPolicies do not depend on the knob, so every existing differential test replays
// the clusters its seeds always gave.
TEST(RandomClusterTiers, KnobLeavesTheRestOfTheClusterAsItWas) {
  for (int seed = 0; seed < 200; ++seed) {
    ClusterObjects plain = RandomCluster(seed).Objects();
    ClusterObjects tiered = RandomCluster(seed, Tiered()).Objects();
    EXPECT_TRUE(plain.admin_network_policies.empty() && plain.cluster_network_policies.empty() &&
                plain.baseline_admin_network_policies.empty() && plain.nodes.empty());
    ASSERT_EQ(plain.namespaces.size(), tiered.namespaces.size()) << "seed " << seed;
    ASSERT_EQ(plain.pods.size(), tiered.pods.size()) << "seed " << seed;
    ASSERT_EQ(plain.policies.size(), tiered.policies.size()) << "seed " << seed;
    for (size_t i = 0; i < plain.namespaces.size(); ++i) {
      EXPECT_TRUE(Same(plain.namespaces[i].object, tiered.namespaces[i].object)) << "seed " << seed;
    }
    for (size_t i = 0; i < plain.pods.size(); ++i) {
      EXPECT_TRUE(Same(plain.pods[i].object, tiered.pods[i].object)) << "seed " << seed;
    }
    for (size_t i = 0; i < plain.policies.size(); ++i) {
      EXPECT_TRUE(Same(plain.policies[i].object, tiered.policies[i].object)) << "seed " << seed;
    }
  }
}

}  // namespace
}  // namespace np::testgen
