#include "np/internal/lower_tables.h"

#include <algorithm>
#include <iterator>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace np::internal {
namespace {

ir::Protocol ToIrProtocol(Protocol protocol) {
  return static_cast<ir::Protocol>(static_cast<int>(protocol));  // both IANA numbers
}

ir::TierAction ToTierAction(tiers::Action action) {
  switch (action) {
    case tiers::Action::kAllow:
      return ir::TIER_ALLOW;
    case tiers::Action::kDeny:
      return ir::TIER_DENY;
    case tiers::Action::kPass:
      return ir::TIER_PASS;
  }
  return ir::TIER_ACTION_UNSPECIFIED;  // unreachable: CheckIr would refuse it
}

std::vector<uint32_t> IntersectSorted(const std::vector<uint32_t>& a,
                                      const std::vector<uint32_t>& b) {
  std::vector<uint32_t> out;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

}  // namespace

// domainNames peers never match offline (README, policy tiers): in an Allow/Accept rule that
// only leaves out traffic the rule would allow, but in a Deny or Pass rule it would let
// through traffic that the policy's author meant to stop before NetworkPolicy and the
// Baseline tier see it. The datapath never silently allows: such programs are refused.
absl::Status RefuseUnenforceableDomainNames(const EngineState& s) {
  if (s.tier_policies == nullptr) return absl::OkStatus();
  std::vector<std::string> found;
  for (const CompiledTierPolicy& policy : *s.tier_policies) {
    for (int d = 0; d < 2; ++d) {
      const auto& rules = policy.rules[d];
      for (size_t r = 0; r < rules.size(); ++r) {
        if (rules[r].action == tiers::Action::kAllow) continue;
        for (size_t p = 0; p < rules[r].peers.size(); ++p) {
          if (rules[r].peers[p].kind != tiers::Peer::Kind::kDomainNames) continue;
          found.push_back(absl::StrCat(policy.key, ": spec.", d == 0 ? "ingress" : "egress", "[",
                                       r, d == 0 ? "].from[" : "].to[", p,
                                       "].domainNames (action ",
                                       tiers::ActionName(rules[r].action), ")"));
        }
      }
    }
  }
  if (found.empty()) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat(
      "the IR lowering cannot enforce a domainNames peer in a Deny or Pass rule: which "
      "addresses a name has is not in the objects, and matching none would let that traffic "
      "through; ",
      absl::StrJoin(found, "; ")));
}

TableLowering::TableLowering(const EngineState& s, bool flatten_tiers,
                             const IdentityNumbering& identities, PeerSetInterner peer_set)
    : s_(s), flatten_tiers_(flatten_tiers), identities_(identities), peer_set_(std::move(peer_set)) {}

// The identities some address carries whose peer class is in `classes` (a bitset over peer
// classes): sorted, and never the shared-address identity (it is no class of a selector's
// bitset). Walks the set bits, not every identity: with LowerToIr's numbering (identities in
// class order) the result comes out sorted; a renumbered program's ids are sorted after.
std::vector<uint32_t> TableLowering::IdentitiesIn(const Bitset& classes) const {
  const std::vector<uint32_t>& by_class = identities_.by_class;
  std::vector<uint32_t> identities;
  const size_t words = std::min(classes.size(), (by_class.size() + 63) / 64);
  for (size_t w = 0; w < words; ++w) {
    for (uint64_t word = classes[w]; word != 0; word &= word - 1) {
      const size_t c = w * 64 + static_cast<size_t>(__builtin_ctzll(word));
      if (c < by_class.size() && by_class[c] != IdentityNumbering::kNoIdentity) {
        identities.push_back(by_class[c]);
      }
    }
  }
  if (!std::is_sorted(identities.begin(), identities.end())) {
    std::sort(identities.begin(), identities.end());
  }
  return identities;
}

// A tier peer set: `all` when it holds every identity (then no address is shared).
uint32_t TableLowering::TierPeerSet(std::vector<uint32_t> identities) {
  if (identities.size() == identities_.live.size()) return peer_set_(true, {});
  return peer_set_(false, std::move(identities));
}

// The identities a tier rule's peers match (the union of its peers' interned selectors; a
// domainNames peer has none).
const std::vector<uint32_t>& TableLowering::PeersOf(const CompiledTierRule& rule) {
  auto it = tier_rule_peers_.find(&rule);
  if (it != tier_rule_peers_.end()) return it->second;
  Bitset classes;
  for (const CompiledTierPeer& peer : rule.peers) {
    for (uint32_t selector : peer.selectors) {
      const Bitset& bits = *s_.selector_bits[selector];
      if (classes.size() < bits.size()) classes.resize(bits.size(), 0);
      for (size_t w = 0; w < bits.size(); ++w) classes[w] |= bits[w];
    }
  }
  return tier_rule_peers_.emplace(&rule, IdentitiesIn(classes)).first->second;
}

const std::vector<uint32_t>& TableLowering::IdentitiesOfNamedMap(uint32_t m) {
  auto it = named_map_identities_.find(m);
  if (it != named_map_identities_.end()) return it->second;
  return named_map_identities_.emplace(m, IdentitiesIn(*s_.named_map_classes[m])).first->second;
}

// One tier rule as consecutive TierRules of `out`: each port it names (a named port resolved
// as the engine does: ingress on the target's own container ports, egress on each
// destination's, towards the identities whose named ports give that number) times its peers.
void TableLowering::LowerTierRule(const CompiledTierPolicy& policy, int d, size_t index,
                                  uint32_t own_named_map,
                                  google::protobuf::RepeatedPtrField<ir::TierRule>* out) {
  const CompiledTierRule& rule = policy.rules[d][index];
  const std::vector<uint32_t>& peers = PeersOf(rule);
  if (peers.empty()) return;  // matches no address: it decides nothing
  std::string origin = absl::StrCat(policy.key, " priority ", policy.priority, " ",
                                    d == 0 ? "ingress" : "egress", "[", index, "]");
  if (!rule.name.empty()) absl::StrAppend(&origin, " \"", rule.name, "\"");
  auto add = [&](ir::Protocol protocol, uint32_t first, uint32_t last, uint32_t set) {
    ir::TierRule* t = out->Add();
    t->set_action(ToTierAction(rule.action));
    t->set_protocol(protocol);
    t->set_first_port(first);
    t->set_last_port(last);
    t->set_peer_set(set);
    t->set_origin(origin);
  };
  if (rule.all_ports) {
    add(ir::PROTOCOL_UNSPECIFIED, 0, 65535, TierPeerSet(peers));
    return;
  }
  for (const CompiledPort& port : rule.ports) {
    if (port.kind != CompiledPort::Kind::kNamed) {
      add(ToIrProtocol(port.protocol), port.first, port.last, TierPeerSet(peers));
      continue;
    }
    auto same_port = [&](const NamedPort& named) {
      return named.name == port.name && (port.any_protocol || named.protocol == port.protocol);
    };
    if (d == 0) {
      for (const NamedPort& named : *s_.named_maps[own_named_map]) {
        if (same_port(named)) add(ToIrProtocol(named.protocol), named.port, named.port, TierPeerSet(peers));
      }
      continue;
    }
    for (uint32_t m = 1; m < s_.named_maps.size(); ++m) {
      for (const NamedPort& named : *s_.named_maps[m]) {
        if (!same_port(named)) continue;
        std::vector<uint32_t> towards = IntersectSorted(peers, IdentitiesOfNamedMap(m));
        if (!towards.empty()) {
          add(ToIrProtocol(named.protocol), named.port, named.port, TierPeerSet(std::move(towards)));
        }
      }
    }
  }
}

// A direction of an engine table as NetworkPolicy port rules (`isolated` and `rules`).
void TableLowering::LowerAllows(const TableView& table, int d, ir::DirectionPolicy* dp) {
  const DirectionTable& dt = table.direction(d);
  dp->set_isolated(dt.isolated);
  if (!dt.isolated) return;
  const std::vector<uint32_t>& by_class = identities_.by_class;
  const std::vector<uint32_t>& live = identities_.live;
  for (Protocol protocol : kAllProtocols) {
    int pi = ProtocolIndex(protocol);
    for (uint32_t i = dt.begin[pi]; i < dt.end[pi]; ++i) {
      const Interval& iv = table.intervals(d)[i];
      uint32_t last = i + 1 < dt.end[pi] ? table.intervals(d)[i + 1].first - 1u : 65535u;
      uint32_t set;
      if (iv.all_peers) {
        set = peer_set_(true, {});
      } else {
        // The identities the interval lists: the allowed ones, or with `negated` (a tier
        // table) the denied ones. Collected from the interval's list (sorted, as ids follow
        // class order), not by a scan of every identity per interval: that scan was most of
        // LowerToIr at 1,000 pods.
        std::vector<uint32_t> listed;
        table.ForEachPeer(iv, [&](uint32_t c) {
          if (c < by_class.size() && by_class[c] != IdentityNumbering::kNoIdentity) {
            listed.push_back(by_class[c]);
          }
        });
        if (!std::is_sorted(listed.begin(), listed.end())) std::sort(listed.begin(), listed.end());
        listed.erase(std::unique(listed.begin(), listed.end()), listed.end());
        // Port rules are allow lists: a negated interval (flattened tiers) becomes its
        // complement over the identities some address carries, the shared-address identity
        // included (it matches no tier peer, so no tier rule denies it: IntervalAllows).
        std::vector<uint32_t> identities;
        if (!iv.negated) {
          identities = std::move(listed);
        } else {
          std::set_difference(live.begin(), live.end(), listed.begin(), listed.end(),
                              std::back_inserter(identities));
        }
        if (identities.empty()) continue;  // no address is allowed: deny
        if (iv.negated && identities.size() == live.size()) {
          set = peer_set_(true, {});  // every identity, so every address
        } else {
          set = peer_set_(false, std::move(identities));
        }
      }
      ir::PortRule* rule = dp->add_rules();
      rule->set_protocol(ToIrProtocol(protocol));
      rule->set_first_port(iv.first);
      rule->set_last_port(last);
      rule->set_peer_set(set);
    }
  }
}

void TableLowering::Lower(uint32_t target_class, ir::Table* t) {
  const TargetClassSlot& slot = s_.target_classes[target_class];
  std::vector<std::string> policies;
  for (uint32_t p : s_.IdList(slot.key.policies)) policies.push_back(s_.policies[p]->key);
  std::sort(policies.begin(), policies.end());
  for (const std::string& p : policies) t->add_policies(p);
  // Then the tier policies selecting them, in evaluation order (kNone: quarantine).
  const std::vector<uint32_t> no_tier_policies;
  const std::vector<uint32_t>& tier_policies =
      slot.key.tier_policies == kNone ? no_tier_policies : s_.IdList(slot.key.tier_policies);
  for (uint32_t p : tier_policies) t->add_policies((*s_.tier_policies)[p].key);
  // Flattened, or without tier policies: the engine's table as it is. Ordered: the table the
  // NetworkPolicies alone make, with the tiers' rules in order around it.
  bool ordered = !flatten_tiers_ && !tier_policies.empty();
  std::shared_ptr<const TargetTable> network_policy_only;
  if (ordered) network_policy_only = s_.NetworkPolicyTable(slot.key);
  const TableView table = ordered ? network_policy_only->view() : slot.table->view();
  for (int d = 0; d < 2; ++d) {
    ir::DirectionPolicy* dp = d == 0 ? t->mutable_ingress() : t->mutable_egress();
    LowerAllows(table, d, dp);
    if (!ordered) continue;
    for (uint32_t p : tier_policies) {
      const CompiledTierPolicy& policy = (*s_.tier_policies)[p];
      auto* rules = policy.tier == tiers::Tier::kAdmin ? dp->mutable_admin() : dp->mutable_baseline();
      for (size_t r = 0; r < policy.rules[d].size(); ++r) {
        LowerTierRule(policy, d, r, slot.key.named_map, rules);
      }
    }
  }
}

}  // namespace np::internal
