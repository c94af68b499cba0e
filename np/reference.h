// np/reference.h — the NetworkPolicy specification written literally: for one flow, walk
// every policy, every rule, every peer and every port, exactly as the API documents them.
// Slow and obvious on purpose. It is the oracle every fast path of np is tested against
// (the indexed engine, each datapath backend on real packets); never optimise it.
//
//   absl::StatusOr<np::Cluster> cluster = ...;
//   np::Flow flow{np::Endpoint::Pod(*cluster->FindPod("x/a")),
//                 np::Endpoint::Pod(*cluster->FindPod("y/b")), np::Protocol::kTCP, 80};
//   np::Verdict v = np::reference::Evaluate(*cluster, flow);
//   if (!v.allowed) { ... v.ingress.isolating_policies ... }
//
// Thread safety: pure functions of their arguments; call from any thread.
#ifndef NP_REFERENCE_H_
#define NP_REFERENCE_H_

#include "np/cluster.h"
#include "np/verdict.h"

namespace np::reference {

// The verdict on `flow`, with every isolating policy and every admitting rule.
// A flow with no pod end at all (external to external) is not governed by
// NetworkPolicy: allowed, with neither side applying.
Verdict Evaluate(const Cluster& cluster, const Flow& flow,
                 const EvaluationOptions& options = EvaluationOptions());

// The verdict on `flow` in a given address family, as a packet has one (pod ends are seen
// through their address of that family).
Verdict EvaluateInFamily(const Cluster& cluster, const Flow& flow, AddressFamily family,
                         const EvaluationOptions& options = EvaluationOptions());

// The same for a packet as a datapath sees it: each address is resolved to the pod that
// owns it (Cluster::PodByIp; the first holder of a shared address), else treated as
// external.
Verdict EvaluatePacket(const Cluster& cluster, const IpAddress& source,
                       const IpAddress& destination, Protocol protocol, uint16_t port,
                       const EvaluationOptions& options = EvaluationOptions());

// The pieces of the specification the functions above are made of, for analyses that reason
// about policies rather than single flows (np/analysis/lint.h), so that no second reading of
// the API exists.

// "The result of matchLabels and matchExpressions are ANDed. An empty label selector
// matches all objects."
bool SelectorMatches(const k8s::LabelSelector& selector,
                     const absl::flat_hash_map<std::string, std::string>& labels);
// Whether `policy` applies to `direction` (policyTypes, or its default).
bool PolicyAffects(const k8s::NetworkPolicy& policy, Direction direction);
// Whether `policy`'s spec.podSelector selects pod `pod` (an index of `cluster`).
bool PolicySelectsPod(const Cluster& cluster, const k8s::NetworkPolicy& policy, int pod);
// Whether `address` is in the ipBlock (its cidr and none of its excepts).
bool IpBlockMatches(const k8s::IPBlock& block, const IpAddress& address);
// Whether the peer `peer` of a rule of `policy` matches the other end of a flow, `other`,
// seen through its address of `family` (kNone: selectors only).
bool PeerMatches(const Cluster& cluster, const k8s::NetworkPolicy& policy,
                 const k8s::NetworkPolicyPeer& peer, const Endpoint& other, AddressFamily family,
                 const EvaluationOptions& options);

}  // namespace np::reference

#endif  // NP_REFERENCE_H_
