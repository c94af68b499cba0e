// The policy tiers, as the API documents them (kubernetes-sigs/network-policy-api
// apis/v1alpha1 and apis/v1alpha2 doc comments). Like np/reference.cc: every step quotes the
// sentence it implements, and nothing is clever. Performance is not a goal.
#include "np/tiers/evaluate.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace np::tiers {
namespace {

using ::np::reference::SelectorMatches;
using ::np::reference::SharesFlowAddress;

// "Subject defines the pods to which this ClusterNetworkPolicy applies." "Namespaces is used
// to select pods via namespace selectors." "Pods is used to select pods via namespace AND pod
// selectors." "Note that host-networked pods are not included in subject selection." (np
// leaves host-network pods out of the cluster's pods altogether.)
bool SubjectSelects(const Cluster& cluster, const TierPolicy& policy, int pod_index) {
  const PodInfo& pod = cluster.pod(pod_index);
  if (!SelectorMatches(policy.subject.namespace_selector,
                       cluster.ns(pod.namespace_index).labels)) {
    return false;
  }
  return !policy.subject.pod_selector || SelectorMatches(*policy.subject.pod_selector, pod.labels);
}

// The address of the other end of the flow in the flow's family, if it has one.
std::optional<IpAddress> AddressOf(const Cluster& cluster, const Endpoint& end,
                                   AddressFamily family) {
  if (!end.is_pod) return end.address;
  if (family == AddressFamily::kNone) return std::nullopt;
  return cluster.pod(end.pod_index).ip(family);
}

// One peer against the other end of the flow. domainNames peers never match here and are
// recorded as not evaluable offline.
bool PeerMatches(const Cluster& cluster, const Peer& peer, const Endpoint& other,
                 AddressFamily family, const std::string& where,
                 std::vector<std::string>* not_evaluable) {
  switch (peer.kind) {
    case Peer::Kind::kNamespaces:
      // "Namespaces defines a way to select all pods within a set of Namespaces. Note that
      // host-networked pods are not included in this type of peer."
      return other.is_pod && SelectorMatches(peer.namespace_selector,
                                             cluster.ns(cluster.pod(other.pod_index).namespace_index).labels);
    case Peer::Kind::kPods: {
      // "Pods defines a way to select a set of pods in a set of namespaces."
      if (!other.is_pod) return false;
      const PodInfo& pod = cluster.pod(other.pod_index);
      return SelectorMatches(peer.namespace_selector, cluster.ns(pod.namespace_index).labels) &&
             SelectorMatches(peer.pod_selector, pod.labels);
    }
    case Peer::Kind::kNodes: {
      // "Nodes defines a way to select a set of nodes in the cluster (based on the node's
      // labels). It selects the nodeIPs as the peer type by matching on the IPs present in the
      // node.Status.Addresses field of the node." A host-network pod's traffic is its node's:
      // np sees it as the node's address, never as a pod.
      if (other.is_pod) return false;
      for (int n = 0; n < cluster.node_count(); ++n) {
        const NodeInfo& node = cluster.node(n);
        if (!SelectorMatches(peer.node_selector, node.labels)) continue;
        for (const IpAddress& address : node.addresses) {
          if (address == other.address) return true;
        }
      }
      return false;
    }
    case Peer::Kind::kNetworks: {
      // "Networks defines a way to select peers via CIDR blocks. This is intended for
      // representing entities that live outside the cluster, which can't be selected by pods,
      // namespaces and nodes peers, but note that cluster-internal traffic will be checked
      // against the rule as well." So a pod is matched through its address of the flow's family.
      std::optional<IpAddress> address = AddressOf(cluster, other, family);
      if (!address) return false;
      for (const IpPrefix& network : peer.networks) {
        if (network.Contains(*address)) return true;
      }
      return false;
    }
    case Peer::Kind::kDomainNames:
      // "DomainNames provides a way to specify domain names as peers." Which addresses a name
      // has is known only to DNS at run time: offline, np never matches it, and says so.
      not_evaluable->push_back(where);
      return false;
  }
  return false;
}

// v1alpha1 ports / v1alpha2 protocols: "If Ports is not set then the rule does not filter
// traffic via port." A named port "selects a destination port on a pod based on the
// ContainerPort name", with that container port's protocol.
bool PortMatches(const Cluster& cluster, const PortMatch& port, const Flow& flow,
                 bool destination_named_ports) {
  if (port.named_port.empty()) {
    return port.protocol == flow.protocol && port.range.Contains(flow.port);
  }
  if (!flow.destination.is_pod || !destination_named_ports) return false;
  for (const NamedPort& named : cluster.pod(flow.destination.pod_index).named_ports) {
    if (named.name == port.named_port && named.protocol == flow.protocol &&
        named.port == flow.port) {
      return true;
    }
  }
  return false;
}

// "Policies with lower priority values have higher precedence, and are checked before
// policies with higher priority values in the same tier." (Cluster keeps tier_policy() in
// that order, ties by name: np/tiers/model.h.) "The relative precedence of ingress rules
// within a single CNP object (all of which share the priority) will be determined by the
// order in which the rule is written." "If any element matches the source of incoming
// traffic then the specified action is applied."
std::optional<TierRuleRef> FirstMatch(const Cluster& cluster, const Flow& flow,
                                      Direction direction, AddressFamily family, Tier tier,
                                      std::vector<std::string>* not_evaluable) {
  const Endpoint& target = direction == Direction::kEgress ? flow.source : flow.destination;
  const Endpoint& other = direction == Direction::kEgress ? flow.destination : flow.source;
  const bool other_shared = SharesFlowAddress(cluster, other, family);
  const bool named_ports = direction == Direction::kIngress ||
                           !SharesFlowAddress(cluster, flow.destination, family);
  const char* list = direction == Direction::kIngress ? "ingress" : "egress";
  const char* peers_field = direction == Direction::kIngress ? "from" : "to";
  for (int i = 0; i < cluster.tier_policy_count(); ++i) {
    const TierPolicy& policy = cluster.tier_policy(i);
    if (policy.tier != tier || !SubjectSelects(cluster, policy, target.pod_index)) continue;
    // "CNPs with no ingress rules do not affect ingress traffic."
    const std::vector<Rule>& rules = policy.rules(direction);
    for (size_t r = 0; r < rules.size(); ++r) {
      const Rule& rule = rules[r];
      bool port_ok = rule.ports.empty();
      for (const PortMatch& port : rule.ports) {
        port_ok = port_ok || PortMatches(cluster, port, flow, named_ports);
      }
      if (!port_ok) continue;
      bool peer_ok = false;
      for (size_t p = 0; p < rule.peers.size() && !peer_ok; ++p) {
        // An address two live pods hold is no pod's and no network's (np's rule, as for
        // NetworkPolicy's ipBlock).
        if (other_shared) break;
        const std::string where =
            absl::StrCat(policy.Key(), " spec.", list, "[", r, "].", peers_field, "[", p, "]");
        peer_ok = PeerMatches(cluster, rule.peers[p], other, family, where, not_evaluable);
      }
      if (!peer_ok) continue;
      return TierRuleRef{tier,      policy.Key(), policy.priority, direction,
                         static_cast<int>(r), rule.name,   rule.action};
    }
  }
  return std::nullopt;
}

}  // namespace

void EvaluateTiers(const Cluster& cluster, const Flow& flow, Direction direction,
                   AddressFamily family, DirectionVerdict* side) {
  const Endpoint& target = direction == Direction::kEgress ? flow.source : flow.destination;
  if (!target.is_pod || !cluster.has_tier_policies()) return;
  // "The Admin tier takes precedence over all other policies. ... If Admin tier has made a
  // final decision (Accept or Deny) on a connection, then no further evaluation is done."
  side->admin_rule =
      FirstMatch(cluster, flow, direction, family, Tier::kAdmin, &side->not_evaluable);
  if (side->admin_rule && side->admin_rule->action != Action::kPass) return;
  // Pass: "Skips all further ClusterNetworkPolicy rules in the current tier for the selected
  // traffic, and passes evaluation to the next tier." "v1.NetworkPolicy always makes a final
  // decision for selected pods. Further evaluation only happens for Pods not selected by a
  // v1.NetworkPolicy."
  if (side->isolated) return;
  // "Baseline tier is a cluster-wide policy that can be overridden by the v1.NetworkPolicy.
  // If Baseline tier has made a final decision (Accept or Deny) on a connection, then no
  // further evaluation is done." "If a given connection wasn't allowed or denied by any of
  // the tiers, the default kubernetes policy is applied, which says that all pods can
  // communicate with each other." (DirectionVerdict::allowed())
  side->baseline_rule =
      FirstMatch(cluster, flow, direction, family, Tier::kBaseline, &side->not_evaluable);
}

}  // namespace np::tiers
