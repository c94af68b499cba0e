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

namespace np::testgen {

struct RandomClusterOptions {
  int max_namespaces = 4;
  int max_pods = 9;
  int max_policies = 6;
  // How often a new pod reuses an earlier pod's address (a shared address).
  double shared_address_chance = 0.06;
};

class RandomCluster {
 public:
  explicit RandomCluster(uint64_t seed, RandomClusterOptions options = {});

  ClusterObjects Objects();
  // A random valid change against `current` (add/relabel/delete a pod, relabel a
  // namespace, add/change/delete a policy).
  Change RandomChange(const Cluster& current);
  // Addresses outside the cluster's pods that sit inside, at the edge of and outside the
  // ipBlocks the generator uses.
  static std::vector<IpAddress> ProbeAddresses();
  // Ports worth probing: the numbers, ranges' edges and named ports the generator uses.
  static std::vector<uint16_t> ProbePorts();

  k8s::NetworkPolicy RandomPolicy(const std::string& namespace_name, const std::string& name);
  k8s::Pod RandomPod(const std::string& namespace_name, const std::string& name, int index);
  k8s::Namespace RandomNamespace(const std::string& name);

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <typename T>
  const T& Pick(const std::vector<T>& v) { return v[Uniform(0, static_cast<int>(v.size()) - 1)]; }
  void RandomLabels(google::protobuf::Map<std::string, std::string>* labels, bool for_pod);
  void RandomSelector(k8s::LabelSelector* selector, bool for_pod);
  void RandomPeer(k8s::NetworkPolicyPeer* peer);
  void RandomPort(k8s::NetworkPolicyPort* port);
  int AddressIndex(int pod_number);  // the host part of a new pod's addresses

  std::mt19937_64 rng_;
  RandomClusterOptions options_;
  std::vector<std::string> namespaces_;
  int next_pod_ = 0;
  int next_policy_ = 0;
};

}  // namespace np::testgen

#endif  // NP_TESTGEN_RANDOM_CLUSTER_H_
