// Explanations from the engine's own compiled data: the policies that isolate a side are
// the target class's policies that affect the direction; a rule admits the flow when one of
// its peer selectors is in the other end's peer class signature (or it has no peers) and
// one of its compiled ports matches. The result has the content of reference::Evaluate.
#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"

#include "np/internal/engine_state.h"

namespace np::internal {
namespace {

bool PortMatches(bool all_ports, const std::vector<CompiledPort>& ports, Protocol protocol,
                 uint16_t port, const std::vector<NamedPort>* destination_ports) {
  if (all_ports) return true;
  for (const CompiledPort& p : ports) {
    if (p.protocol != protocol && !p.any_protocol) continue;
    switch (p.kind) {
      case CompiledPort::Kind::kAllPorts:
        return true;
      case CompiledPort::Kind::kRange:
        if (p.first <= port && port <= p.last) return true;
        break;
      case CompiledPort::Kind::kNamed:
        if (destination_ports == nullptr) break;
        for (const NamedPort& np : *destination_ports) {
          if (np.name == p.name && np.protocol == protocol && np.port == port) return true;
        }
        break;
    }
  }
  return false;
}

}  // namespace

Verdict EngineState::Explain(const Endpoint& source, const Endpoint& destination,
                             Protocol protocol, uint16_t port, AddressFamily family) const {
  Verdict verdict;
  verdict.family = family;
  if (options.evaluation.always_allow_self && source.is_pod && destination.is_pod &&
      source.pod_index == destination.pod_index) {
    verdict.allowed = true;
    verdict.allowed_as_self = true;
    return verdict;
  }
  int f = FamilyIndex(family);
  auto peer_class = [&](const Endpoint& e) {
    if (!e.is_pod) return ExternalPeerClass(e.address);
    return records[e.pod_index].peer[f];
  };
  const std::vector<NamedPort>* destination_ports =
      destination.is_pod ? named_maps[pods[destination.pod_index].state->named_map].get()
                         : nullptr;
  auto side = [&](const Endpoint& target, const Endpoint& other, Direction direction) {
    // The sender's rules cannot resolve a named port on a shared address (np cannot tell
    // which pod it is): it has none, like an address outside the cluster.
    const std::vector<NamedPort>* ports =
        direction == Direction::kEgress && peer_class(other) == kSharedPeer ? nullptr
                                                                            : destination_ports;
    DirectionVerdict out;
    if (!target.is_pod) return out;
    const PodSlot& slot = pods[target.pod_index];
    const PodState& pod = *slot.state;
    // Node-scoped engines enforce only their node's pods.
    if (!OnNode(pod)) return out;
    out.applies = true;
    // A quarantined pod denies (DirectionVerdict::allowed()); what its policies would say
    // is explained all the same, from its identity (its target class is the quarantine).
    for (const IpAddress& a : SharedAddresses(pod)) out.shared_addresses.push_back(a.ToString());
    const IdentitySlot& identity = identities[slot.identity];
    if (identity.target_policies == kNone) return out;  // (a live pod's never is)
    uint32_t other_class = peer_class(other);
    int d = static_cast<int>(direction);
    for (uint32_t p : IdList(identity.target_policies)) {
      const CompiledPolicy& policy = *policies[p];
      if (!policy.affects[d]) continue;
      out.isolated = true;
      out.isolating_policies.push_back(policy.key);
      for (size_t r = 0; r < policy.rules[d].size(); ++r) {
        const CompiledRule& rule = policy.rules[d][r];
        bool peer_ok = rule.all_peers;
        for (uint32_t s : rule.selectors) {
          // kNone / kSharedPeer: no address of the family, or a shared one: no peer.
          if (other_class < kSharedPeer && PeerClassHasSelector(other_class, s)) peer_ok = true;
        }
        if (peer_ok && PortMatches(rule.all_ports, rule.ports, protocol, port, ports)) {
          out.allowing_rules.push_back(RuleRef{policy.key, direction, static_cast<int>(r)});
        }
      }
    }
    std::sort(out.isolating_policies.begin(), out.isolating_policies.end());
    std::sort(out.allowing_rules.begin(), out.allowing_rules.end());
    if (!has_tier_policies()) return out;
    // The tiers around it, as np/tiers/evaluate.cc: the Admin tier first; unless it decided
    // (Allow or Deny), NetworkPolicy for a pod it isolates, else the Baseline tier.
    auto first_match = [&](tiers::Tier tier) -> std::optional<TierRuleRef> {
      const char* list = direction == Direction::kIngress ? "ingress" : "egress";
      const char* peers_field = direction == Direction::kIngress ? "from" : "to";
      for (uint32_t t : IdList(identity.tier_policies)) {
        const CompiledTierPolicy& policy = (*tier_policies)[t];
        if (policy.tier != tier) continue;
        for (size_t r = 0; r < policy.rules[d].size(); ++r) {
          const CompiledTierRule& rule = policy.rules[d][r];
          if (!PortMatches(rule.all_ports, rule.ports, protocol, port, ports)) continue;
          bool peer_ok = false;
          // An address two live pods hold is no pod's and no network's.
          for (size_t p = 0; p < rule.peers.size() && !peer_ok && other_class != kSharedPeer;
               ++p) {
            if (rule.peers[p].kind == tiers::Peer::Kind::kDomainNames) {
              out.not_evaluable.push_back(absl::StrCat(policy.key, " spec.", list, "[", r, "].",
                                                       peers_field, "[", p, "]"));
              continue;
            }
            for (uint32_t s : rule.peers[p].selectors) {
              if (other_class < kSharedPeer && PeerClassHasSelector(other_class, s)) peer_ok = true;
            }
          }
          if (!peer_ok) continue;
          return TierRuleRef{tier, policy.key, policy.priority, direction, static_cast<int>(r),
                             rule.name, rule.action};
        }
      }
      return std::nullopt;
    };
    out.admin_rule = first_match(tiers::Tier::kAdmin);
    if (out.admin_rule && out.admin_rule->action != tiers::Action::kPass) return out;
    if (out.isolated) return out;
    out.baseline_rule = first_match(tiers::Tier::kBaseline);
    return out;
  };
  verdict.egress = side(source, destination, Direction::kEgress);
  verdict.ingress = side(destination, source, Direction::kIngress);
  verdict.allowed = verdict.egress.allowed() && verdict.ingress.allowed();
  return verdict;
}

}  // namespace np::internal
