// The reference evaluator: the NetworkPolicy API documentation, line by line. Every
// decision below cites the sentence of the API it implements. Keep it that way — this
// file's value is that a reader can check it against the spec without cleverness in
// between. Performance is explicitly not a goal.
#include "np/reference.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "np/tiers/evaluate.h"

namespace np::reference {

// Shared with the policy tiers' evaluation (np/tiers/evaluate.h): selectors and shared
// addresses mean the same there.
// "A label selector is a label query over a set of resources. The result of matchLabels
// and matchExpressions are ANDed. An empty label selector matches all objects."
bool SelectorMatches(const k8s::LabelSelector& selector,
                     const absl::flat_hash_map<std::string, std::string>& labels) {
  for (const auto& [key, value] : selector.matchlabels()) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  for (const k8s::LabelSelectorRequirement& req : selector.matchexpressions()) {
    auto it = labels.find(req.key());
    bool has_key = it != labels.end();
    bool in_values = has_key && std::find(req.values().begin(), req.values().end(),
                                          it->second) != req.values().end();
    const std::string& op = req.operator_();
    if (op == "In") {
      if (!in_values) return false;
    } else if (op == "NotIn") {
      // NotIn matches objects that lack the key.
      if (in_values) return false;
    } else if (op == "Exists") {
      if (!has_key) return false;
    } else if (op == "DoesNotExist") {
      if (has_key) return false;
    } else {
      return false;  // rejected by validation; never matches
    }
  }
  return true;
}

// np's rule for an address two live pods hold (README, "Shared addresses"): a packet with
// it cannot be attributed to either pod, so as the other end of a flow it is no pod's and no
// ipBlock's — only a rule that admits every peer admits it.
bool SharesFlowAddress(const Cluster& cluster, const Endpoint& end, AddressFamily family) {
  if (!end.is_pod || family == AddressFamily::kNone) return false;
  const PodInfo& pod = cluster.pod(end.pod_index);
  const std::optional<IpAddress>& address = pod.ip(family);
  return address.has_value() && std::find(pod.shared_ips.begin(), pod.shared_ips.end(),
                                          *address) != pod.shared_ips.end();
}

// "policyTypes ... If this field is not specified, it will default based on the existence
// of ingress or egress rules; policies that contain an egress section are assumed to affect
// egress, and all policies (whether or not they contain an ingress section) are assumed to
// affect ingress."
bool PolicyAffects(const k8s::NetworkPolicy& policy, Direction direction) {
  const k8s::NetworkPolicySpec& spec = policy.spec();
  if (spec.policytypes_size() > 0) {
    for (const std::string& type : spec.policytypes()) {
      if (type == DirectionName(direction)) return true;
    }
    return false;
  }
  if (direction == Direction::kIngress) return true;
  return spec.egress_size() > 0;
}

// "podSelector selects the pods to which this NetworkPolicy object applies ... An empty
// podSelector matches all pods in this namespace."
bool PolicySelectsPod(const Cluster& cluster, const k8s::NetworkPolicy& policy, int pod) {
  const PodInfo& info = cluster.pod(pod);
  if (policy.metadata().namespace_() != info.namespace_name) return false;
  return SelectorMatches(policy.spec().podselector(), info.labels);
}

// ipBlock: "IPBlock describes a particular CIDR (Ex. "192.168.1.0/24","2001:db8::/64") that
// is allowed to the pods matched by a NetworkPolicySpec's podSelector. The except entry
// describes CIDRs that should not be included within this rule."
// (The texts were read once by Cluster::Create; IpPrefix::Parse reads them the same way
// everywhere, IPv4-mapped text included.)
bool IpBlockMatches(const k8s::IPBlock& block, const IpAddress& address) {
  absl::StatusOr<IpPrefix> cidr = IpPrefix::Parse(block.cidr(), /*allow_leading_zeros=*/true);
  if (!cidr.ok() || !cidr->Contains(address)) return false;
  for (const std::string& text : block.except()) {
    absl::StatusOr<IpPrefix> except = IpPrefix::Parse(text, /*allow_leading_zeros=*/true);
    if (except.ok() && except->Contains(address)) return false;
  }
  return true;
}

// The peer of a rule against the other end of the flow.
bool PeerMatches(const Cluster& cluster, const k8s::NetworkPolicy& policy,
                 const k8s::NetworkPolicyPeer& peer, const Endpoint& other, AddressFamily family,
                 const EvaluationOptions& options) {
  if (SharesFlowAddress(cluster, other, family)) return false;
  if (peer.has_ipblock()) {
    if (!other.is_pod) return IpBlockMatches(peer.ipblock(), other.address);
    // A pod is matched through its address of the flow's family (np's documented reading;
    // upstream's conformance suite matches pod IPs with ipBlocks), unless the option says
    // ipBlocks are for cluster-external addresses only.
    if (options.ip_block_scope == EvaluationOptions::IpBlockScope::kExternalOnly) return false;
    if (family == AddressFamily::kNone) return false;
    const std::optional<IpAddress>& address = cluster.pod(other.pod_index).ip(family);
    return address.has_value() && IpBlockMatches(peer.ipblock(), *address);
  }
  if (!peer.has_podselector() && !peer.has_namespaceselector()) return false;  // invalid
  // Selectors only ever select pods.
  if (!other.is_pod) return false;
  const PodInfo& pod = cluster.pod(other.pod_index);
  // "namespaceSelector ... If podSelector is also set, then the NetworkPolicyPeer as a whole
  // selects the pods matching podSelector in the Namespaces selected by NamespaceSelector.
  // Otherwise it selects all pods in the namespaces selected by namespaceSelector."
  // "podSelector ... Otherwise [no namespaceSelector] it selects the pods matching
  // podSelector in the policy's own namespace."
  bool namespace_ok;
  if (peer.has_namespaceselector()) {
    namespace_ok = SelectorMatches(peer.namespaceselector(), cluster.ns(pod.namespace_index).labels);
  } else {
    namespace_ok = pod.namespace_name == policy.metadata().namespace_();
  }
  bool pod_ok = !peer.has_podselector() || SelectorMatches(peer.podselector(), pod.labels);
  return namespace_ok && pod_ok;
}

namespace {

// NetworkPolicyPort: "protocol ... If not specified, this field defaults to TCP." "port ...
// This can either be a numerical or named port on a pod. If this field is not provided, this
// matches all port names and numbers." "endPort indicates that the range of ports from port to
// endPort if set, inclusive, should be allowed by the policy."
bool PortMatches(const Cluster& cluster, const k8s::NetworkPolicyPort& port, const Flow& flow,
                 bool destination_named_ports) {
  Protocol protocol = Protocol::kTCP;
  if (port.has_protocol()) {
    absl::StatusOr<Protocol> parsed = ParseProtocol(port.protocol());
    if (!parsed.ok()) return false;  // rejected by validation
    protocol = *parsed;
  }
  if (protocol != flow.protocol) return false;
  if (!port.has_port()) return true;
  if (port.port().type() != 1) {
    int first = port.port().intval();
    int last = port.has_endport() ? port.endport() : first;
    return first <= flow.port && flow.port <= last;
  }
  // A named port is resolved against the destination pod's container ports, by name and
  // protocol. An address outside the cluster has no named ports, nor has a shared address
  // for the sender's rules (np cannot tell which pod it is).
  if (!flow.destination.is_pod || !destination_named_ports) return false;
  for (const NamedPort& named : cluster.pod(flow.destination.pod_index).named_ports) {
    if (named.name == port.port().strval() && named.protocol == protocol &&
        named.port == flow.port) {
      return true;
    }
  }
  return false;
}

// One side of the flow: egress at the source pod, or ingress at the destination pod.
// "By default, a pod is non-isolated for [direction]; ... A pod is isolated for
// [direction] if there is any NetworkPolicy that both selects the pod and has
// "[Direction]" in its policyTypes." "When a pod is isolated for [direction], the only
// allowed connections ... are those allowed by the [direction] list of some
// NetworkPolicy that applies to the pod. The effects of those lists combine additively."
DirectionVerdict EvaluateSide(const Cluster& cluster, const Flow& flow, Direction direction,
                              AddressFamily family, const EvaluationOptions& options) {
  DirectionVerdict side;
  const Endpoint& target = direction == Direction::kEgress ? flow.source : flow.destination;
  const Endpoint& other = direction == Direction::kEgress ? flow.destination : flow.source;
  if (!target.is_pod) return side;  // no pod there: this direction has nothing to say
  side.applies = true;
  for (int i = 0; i < cluster.policy_count(); ++i) {
    const k8s::NetworkPolicy& policy = cluster.policy(i);
    if (!PolicySelectsPod(cluster, policy, target.pod_index)) continue;
    if (!PolicyAffects(policy, direction)) continue;
    side.isolated = true;
    side.isolating_policies.push_back(cluster.PolicyKey(i));
    int rule_count = direction == Direction::kIngress ? policy.spec().ingress_size()
                                                      : policy.spec().egress_size();
    for (int r = 0; r < rule_count; ++r) {
      const auto& peers = direction == Direction::kIngress ? policy.spec().ingress(r).from()
                                                           : policy.spec().egress(r).to();
      const auto& ports = direction == Direction::kIngress ? policy.spec().ingress(r).ports()
                                                           : policy.spec().egress(r).ports();
      // "If this field is empty or missing, this rule matches all sources/destinations."
      bool peer_ok = peers.empty();
      for (const k8s::NetworkPolicyPeer& peer : peers) {
        if (PeerMatches(cluster, policy, peer, other, family, options)) peer_ok = true;
      }
      // "If this field is empty or missing, this rule matches all ports."
      bool port_ok = ports.empty();
      bool named_ports = direction == Direction::kIngress ||
                         !SharesFlowAddress(cluster, flow.destination, family);
      for (const k8s::NetworkPolicyPort& port : ports) {
        if (PortMatches(cluster, port, flow, named_ports)) port_ok = true;
      }
      if (peer_ok && port_ok) {
        side.allowing_rules.push_back(RuleRef{cluster.PolicyKey(i), direction, r});
      }
    }
  }
  std::sort(side.isolating_policies.begin(), side.isolating_policies.end());
  std::sort(side.allowing_rules.begin(), side.allowing_rules.end());
  // np's rule for a pod holding an address another live pod holds too: quarantined, this
  // side denies whatever the policies say (DirectionVerdict::allowed()).
  for (const IpAddress& a : cluster.pod(target.pod_index).shared_ips) {
    side.shared_addresses.push_back(a.ToString());
  }
  tiers::EvaluateTiers(cluster, flow, direction, family, &side);
  return side;
}

}  // namespace

Verdict EvaluateInFamily(const Cluster& cluster, const Flow& flow, AddressFamily family,
                         const EvaluationOptions& options) {
  Verdict verdict;
  verdict.family = family;
  if (options.always_allow_self && flow.source.is_pod && flow.destination.is_pod &&
      flow.source.pod_index == flow.destination.pod_index) {
    verdict.allowed = true;
    verdict.allowed_as_self = true;
    return verdict;
  }
  // Pod to pod needs both: egress allowed at the source and ingress at the destination.
  verdict.egress = EvaluateSide(cluster, flow, Direction::kEgress, family, options);
  verdict.ingress = EvaluateSide(cluster, flow, Direction::kIngress, family, options);
  verdict.allowed = verdict.egress.allowed() && verdict.ingress.allowed();
  return verdict;
}

Verdict Evaluate(const Cluster& cluster, const Flow& flow, const EvaluationOptions& options) {
  return EvaluateInFamily(cluster, flow, FlowFamily(cluster, flow), options);
}

Verdict EvaluatePacket(const Cluster& cluster, const IpAddress& source,
                       const IpAddress& destination, Protocol protocol, uint16_t port,
                       const EvaluationOptions& options) {
  auto resolve = [&](const IpAddress& a) {
    std::optional<int> pod = cluster.PodByIp(a);
    return pod ? Endpoint::Pod(*pod) : Endpoint::External(a);
  };
  Flow flow{resolve(source), resolve(destination), protocol, port};
  // A packet has one family: the one its addresses are written in.
  return EvaluateInFamily(cluster, flow, source.family(), options);
}

}  // namespace np::reference
