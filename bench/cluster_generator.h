// A synthetic cluster with the shape of a real one, for benchmarks: many namespaces, each
// running a few deployments (frontend, api, worker, db, cache) whose replicas share labels
// and named ports; every namespace isolated by default-deny and opened by allow policies
// (same-namespace tiers, DNS egress to kube-system, Prometheus from monitoring, ingress
// controller to frontends, internet egress by ipBlock with private ranges excepted, an
// office CIDR). Deterministic for a given seed.
#ifndef BENCH_CLUSTER_GENERATOR_H_
#define BENCH_CLUSTER_GENERATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "np/cluster.h"

namespace np::bench {

struct SyntheticOptions {
  int namespaces = 500;          // application namespaces (plus kube-system, monitoring,
                                 // ingress-nginx)
  int pods_per_namespace = 20;   // 4 deployments of 5 replicas
  int policies = 2000;           // spread evenly over the application namespaces
  int nodes = 50;
  bool dual_stack = true;
  uint64_t seed = 1;
};

// 1k, 10k (the standard size: 10,000 pods, 500 namespaces, 2,000 policies) or 100k pods.
SyntheticOptions SizeForPods(int pods);

ClusterObjects GenerateCluster(const SyntheticOptions& options);

// The standard cluster plus the cluster-scoped tiers administrators put on top of it (issue
// 10): 50 Admin-tier policies — AdminNetworkPolicy and ClusterNetworkPolicy tier Admin, with
// Allow, Deny and Pass, namespace, pod and network peers, numbered, named and ranged ports —
// and one BaselineAdminNetworkPolicy. In priority order: monitoring may scrape every
// application's metrics, every pod may reach cluster DNS, the ingress namespace may reach
// frontends; pods of application namespaces may not reach the internet (cluster addresses
// are passed on to the teams); per team, its own namespaces are passed on to the team's
// NetworkPolicies and other teams' are denied (tenant isolation); per team, data pods are
// cut from the internet; production refuses development's traffic and node ports. The
// baseline denies what no NetworkPolicy decides in application namespaces. Every
// application namespace keeps its own NetworkPolicies, so most flows end with a Pass.
void AddAdminTiers(const SyntheticOptions& options, ClusterObjects& objects);
inline constexpr int kAdminTierPolicies = 50;

// A new allow policy for namespace `namespace_index` (one of the templates, renamed), for
// update benchmarks.
k8s::NetworkPolicy ExtraPolicy(const SyntheticOptions& options, int namespace_index, int n);
std::string AppNamespace(int index);

// The shape of issue 8 item 6, "distinct peers": one server pod (x/server on node-0, IPv4
// 10.0.0.1) whose ingress policy has `peers` rules, rule i admitting a peer of its own on a
// TCP port of its own (1 + i mod 65535). Peer i is an ipBlock in 11.0.0.0/8 whose addresses
// are exactly `prefixes_per_peer` CIDR prefixes (a block of 2^prefixes_per_peer addresses
// with its second address cut out by `except`), so the IR has one identity per peer and, up
// to 65,535 peers, one port rule and one peer set per peer. `shift` moves every block (a
// replace installs the shifted program: same sizes, other addresses).
ClusterObjects DistinctPeersCluster(int peers, int prefixes_per_peer = 1, int shift = 0);

}  // namespace np::bench

#endif  // BENCH_CLUSTER_GENERATOR_H_
