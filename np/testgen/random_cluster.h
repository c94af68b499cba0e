// Seeded random clusters and changes for differential tests: small clusters where
// selectors, ipBlocks and ports collide often, using every feature of the API. The same
// seed always gives the same cluster, so a failure prints a seed that replays it.
#ifndef NP_TESTGEN_RANDOM_CLUSTER_H_
#define NP_TESTGEN_RANDOM_CLUSTER_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "np/cluster.h"
#include "np/types.h"
#include "proto/tiers.pb.h"

namespace np::testgen {

struct RandomClusterOptions {
  int max_namespaces = 4;
  int max_pods = 9;
  int max_policies = 6;
  // How often a new pod reuses an earlier pod's address (a shared address).
  double shared_address_chance = 0.06;
  // How often a cluster also gets the policy tiers (AdminNetworkPolicy,
  // BaselineAdminNetworkPolicy, ClusterNetworkPolicy of both tiers) and Nodes for their
  // `nodes` peers. At 0 the generator draws nothing for them, so every seed gives the
  // cluster it gave before tiers existed.
  double tier_chance = 0;
  int max_tier_policies = 5;
};

class RandomCluster {
 public:
  explicit RandomCluster(uint64_t seed, RandomClusterOptions options = {});

  ClusterObjects Objects();
  // A random valid change against `current` (add/relabel/delete a pod, relabel a
  // namespace, add/change/delete a policy).
  Change RandomChange(const Cluster& current);
  // A random valid change to `current`'s policy tiers or Nodes: add, replace or delete an
  // AdminNetworkPolicy, ClusterNetworkPolicy or the BaselineAdminNetworkPolicy, move one to
  // another priority only (its rules kept), add, change or delete a Node.
  Change RandomTierChange(const Cluster& current);
  // Addresses outside the cluster's pods that sit inside, at the edge of and outside the
  // ipBlocks the generator uses.
  static std::vector<IpAddress> ProbeAddresses();
  // Ports worth probing: the numbers, ranges' edges and named ports the generator uses.
  static std::vector<uint16_t> ProbePorts();

  k8s::NetworkPolicy RandomPolicy(const std::string& namespace_name, const std::string& name);
  k8s::Pod RandomPod(const std::string& namespace_name, const std::string& name, int index);
  k8s::Namespace RandomNamespace(const std::string& name);
  // Valid by np's validation (np/tiers/validation.h). Priorities come from a short list, so
  // ties within a tier are common; rules overlap each other and NetworkPolicies by design.
  policy_networking::AdminNetworkPolicy RandomAdminNetworkPolicy(const std::string& name);
  policy_networking::BaselineAdminNetworkPolicy RandomBaselineAdminNetworkPolicy();
  policy_networking::ClusterNetworkPolicy RandomClusterNetworkPolicy(const std::string& name);
  k8s::Node RandomNode(const std::string& name);

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <typename T>
  const T& Pick(const std::vector<T>& v) { return v[Uniform(0, static_cast<int>(v.size()) - 1)]; }
  void RandomLabels(google::protobuf::Map<std::string, std::string>* labels, bool for_pod);
  void RandomSelector(k8s::LabelSelector* selector, bool for_pod);
  void RandomPeer(k8s::NetworkPolicyPeer* peer);
  void RandomPort(k8s::NetworkPolicyPort* port);
  void AddTiers(ClusterObjects& objects);
  void RandomSubject(policy_networking::Subject* subject);
  // A peer of a tier rule; returns whether it is a networks, nodes or domainNames peer
  // (such an egress rule may not name a port).
  bool RandomTierPeer(policy_networking::Peer* peer, bool egress);
  template <typename Rule>
  void FillTierRule(Rule* rule, bool egress, const std::vector<std::string>& actions);
  // Subject and rules of any of the three kinds (`actions`: the kind's action names).
  template <typename Spec>
  void FillTierSpec(Spec* spec, const std::vector<std::string>& actions);
  void AddTierPort(policy_networking::AdminNetworkPolicyRule* rule, bool named_allowed);
  void AddTierPort(policy_networking::ClusterNetworkPolicyRule* rule, bool named_allowed);
  void RandomV1Alpha1Port(policy_networking::AdminNetworkPolicyPort* port, bool named_allowed);
  void RandomV1Alpha2Protocol(policy_networking::ClusterNetworkPolicyProtocol* protocol,
                              bool named_allowed);
  int AddressIndex(int pod_number);  // the host part of a new pod's addresses

  std::mt19937_64 rng_;
  RandomClusterOptions options_;
  std::vector<std::string> namespaces_;
  int next_pod_ = 0;
  int next_policy_ = 0;
  int next_tier_policy_ = 0;
};

}  // namespace np::testgen

#endif  // NP_TESTGEN_RANDOM_CLUSTER_H_
