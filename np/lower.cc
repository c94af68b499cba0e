#include "np/lower.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "np/internal/engine_state.h"
#include "np/internal/ir_ranges.h"

namespace np {
namespace {

using internal::EngineAccess;
using internal::EngineState;
using internal::kNone;
using internal::U128;

using internal::AddressBytes;
using internal::FamilyMax;
using internal::ToCidrs;

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

// domainNames peers never match offline (README, policy tiers): in an Allow/Accept rule that
// only leaves out traffic the rule would allow, but in a Deny or Pass rule it would let
// through traffic that the policy's author meant to stop before NetworkPolicy and the
// Baseline tier see it. The datapath never silently allows: such programs are refused.
absl::Status RefuseUnenforceableDomainNames(const EngineState& s) {
  if (s.tier_policies == nullptr) return absl::OkStatus();
  std::vector<std::string> found;
  for (const internal::CompiledTierPolicy& policy : *s.tier_policies) {
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

}  // namespace

absl::StatusOr<ir::CompiledPolicy> LowerToIr(const Engine& engine) {
  return LowerToIr(engine, LowerOptions());
}

absl::StatusOr<ir::CompiledPolicy> LowerToIr(const Engine& engine, const LowerOptions& options) {
  const EngineState& s = EngineAccess::State(engine);
  if (absl::Status refused = RefuseUnenforceableDomainNames(s); !refused.ok()) return refused;
  ir::CompiledPolicy out;
  out.set_node(s.options.node_name);
  out.set_always_allow_self(s.options.evaluation.always_allow_self);

  // Identities: the peer classes some address carries, numbered densely in class order.
  std::map<uint32_t, uint32_t> identity_of_class;
  std::map<uint32_t, std::vector<std::string>> pods_of_class;
  std::map<uint32_t, bool> external_class;
  struct PodAddress {
    U128 address;
    uint32_t peer_class;
    std::string pod;
  };
  std::vector<PodAddress> pod_addresses[2];
  for (uint32_t p = 0; p < s.pods.size(); ++p) {
    const auto& pod = s.pods[p].state;
    if (pod == nullptr) continue;
    for (const IpAddress& ip : pod->ips) {
      int f = ip.is_v4() ? 0 : 1;
      uint32_t c = s.records[p].peer[f];  // internal::kSharedPeer for a shared address
      pods_of_class[c].push_back(pod->key);
      // A shared address has one range, under its owner (its first holder on this node).
      std::optional<uint32_t> owner = s.FindPodByIp(ip);
      if (!owner || *owner != p) continue;
      pod_addresses[f].push_back(PodAddress{internal::ToU128(ip), c, pod->key});
    }
  }
  // Ranges: the external atoms, with each pod address carved out of the atom holding it.
  struct Range {
    U128 first, last;
    uint32_t peer_class;
    std::string pod;
  };
  std::vector<Range> ranges[2];
  for (int f = 0; f < 2; ++f) {
    auto& pods = pod_addresses[f];
    std::sort(pods.begin(), pods.end(),
              [](const PodAddress& a, const PodAddress& b) { return a.address < b.address; });
    const internal::AtomTable& atoms = *s.atoms[f];
    size_t next_pod = 0;
    for (size_t i = 0; i < atoms.starts.size(); ++i) {
      U128 start = atoms.starts[i];
      U128 end = i + 1 < atoms.starts.size() ? atoms.starts[i + 1] - 1 : FamilyMax(f);
      uint32_t c = atoms.peer_class[i];
      U128 cursor = start;
      bool open = true;  // cursor..end still to emit
      while (next_pod < pods.size() && pods[next_pod].address <= end) {
        PodAddress& pa = pods[next_pod++];  // read once: its key is moved on
        if (pa.address > cursor) ranges[f].push_back(Range{cursor, pa.address - 1, c, ""});
        ranges[f].push_back(Range{pa.address, pa.address, pa.peer_class, std::move(pa.pod)});
        if (pa.address == end) {
          open = false;
          break;
        }
        cursor = pa.address + 1;
      }
      if (open) {
        ranges[f].push_back(Range{cursor, end, c, ""});
        external_class[c] = true;
      }
    }
  }
  for (int f = 0; f < 2; ++f) {
    for (const Range& r : ranges[f]) identity_of_class.emplace(r.peer_class, 0);
    for (const Range& r : ranges[f]) {
      if (r.pod.empty()) external_class[r.peer_class] = true;
    }
  }
  uint32_t next_identity = 0;
  std::vector<uint32_t> class_of_identity;  // kSharedPeer for the shared-address identity
  // identity_of_class as a vector by class (kNoIdentity: no address carries it; the
  // shared-address class is in no selector's set or interval's list, so it is left out):
  // the per-interval and per-rule lookups below were map finds over every identity.
  constexpr uint32_t kNoIdentity = UINT32_MAX;
  std::vector<uint32_t> identity_by_class;
  for (auto& [c, id] : identity_of_class) {
    id = next_identity++;
    class_of_identity.push_back(c);
    if (c < internal::kSharedPeer) {
      if (identity_by_class.size() <= c) identity_by_class.resize(c + 1, kNoIdentity);
      identity_by_class[c] = id;
    }
    ir::Identity* identity = out.add_identities();
    identity->set_id(id);
    std::vector<std::string>& pods = pods_of_class[c];
    std::sort(pods.begin(), pods.end());
    pods.erase(std::unique(pods.begin(), pods.end()), pods.end());
    for (const std::string& pod : pods) identity->add_pods(pod);
    identity->set_external(external_class.count(c) > 0);
  }
  for (int f = 0; f < 2; ++f) {
    (f == 0 ? out.mutable_ipv4() : out.mutable_ipv6())->Reserve(static_cast<int>(ranges[f].size()));
    for (Range& r : ranges[f]) {
      ir::AddressRange* range = f == 0 ? out.add_ipv4() : out.add_ipv6();
      range->set_first(AddressBytes(r.first, f));
      range->set_last(AddressBytes(r.last, f));
      range->set_identity(identity_of_class.at(r.peer_class));
      range->set_pod(std::move(r.pod));
      for (std::string& cidr : ToCidrs(r.first, r.last, f)) range->add_cidrs(std::move(cidr));
    }
  }

  // Peer sets, interned by content (hashed: the key is moved in, not copied, and not
  // compared element-wise along a tree path).
  absl::flat_hash_map<std::pair<bool, std::vector<uint32_t>>, uint32_t> peer_set_ids;
  auto peer_set = [&](bool all, std::vector<uint32_t> identities) {
    auto [it, fresh] = peer_set_ids.try_emplace(std::make_pair(all, std::move(identities)),
                                                static_cast<uint32_t>(out.peer_sets_size()));
    if (!fresh) return it->second;
    ir::PeerSet* set = out.add_peer_sets();
    set->set_id(it->second);
    set->set_all(all);
    set->mutable_identities()->Add(it->first.second.begin(), it->first.second.end());
    return it->second;
  };

  // The identities some address carries whose peer class is in `classes` (a bitset over
  // peer classes): sorted, and never the shared-address identity (it is no class of a
  // selector's bitset).
  // Walks the set bits, not every identity: identities are numbered in class order, so
  // the result comes out sorted.
  auto identities_in = [&](const internal::Bitset& classes) {
    std::vector<uint32_t> identities;
    const size_t words = std::min(classes.size(), (identity_by_class.size() + 63) / 64);
    for (size_t w = 0; w < words; ++w) {
      for (uint64_t word = classes[w]; word != 0; word &= word - 1) {
        const size_t c = w * 64 + static_cast<size_t>(__builtin_ctzll(word));
        if (c < identity_by_class.size() && identity_by_class[c] != kNoIdentity) {
          identities.push_back(identity_by_class[c]);
        }
      }
    }
    return identities;
  };
  // A tier peer set: `all` when it holds every identity (then no address is shared).
  auto tier_peer_set = [&](std::vector<uint32_t> identities) {
    if (identities.size() == class_of_identity.size()) return peer_set(true, {});
    return peer_set(false, std::move(identities));
  };

  // The identities a tier rule's peers match (the union of its peers' interned selectors; a
  // domainNames peer has none), per rule: every table the rule applies to shares them.
  std::map<const internal::CompiledTierRule*, std::vector<uint32_t>> tier_rule_peers;
  auto peers_of = [&](const internal::CompiledTierRule& rule) -> const std::vector<uint32_t>& {
    auto it = tier_rule_peers.find(&rule);
    if (it != tier_rule_peers.end()) return it->second;
    internal::Bitset classes;
    for (const internal::CompiledTierPeer& peer : rule.peers) {
      for (uint32_t selector : peer.selectors) {
        const internal::Bitset& bits = *s.selector_bits[selector];
        if (classes.size() < bits.size()) classes.resize(bits.size(), 0);
        for (size_t w = 0; w < bits.size(); ++w) classes[w] |= bits[w];
      }
    }
    return tier_rule_peers.emplace(&rule, identities_in(classes)).first->second;
  };

  // The identities whose pods' named ports are map m's.
  std::map<uint32_t, std::vector<uint32_t>> named_map_identities;
  auto identities_of_named_map = [&](uint32_t m) -> const std::vector<uint32_t>& {
    auto it = named_map_identities.find(m);
    if (it != named_map_identities.end()) return it->second;
    return named_map_identities.emplace(m, identities_in(*s.named_map_classes[m])).first->second;
  };

  // One tier rule as consecutive TierRules of `out`: each port it names (a named port
  // resolved as the engine does: ingress on the target's own container ports, egress on each
  // destination's, towards the identities whose named ports give that number) times its peers.
  auto lower_tier_rule = [&](const internal::CompiledTierPolicy& policy, int d, size_t index,
                             uint32_t own_named_map,
                             google::protobuf::RepeatedPtrField<ir::TierRule>* out) {
    const internal::CompiledTierRule& rule = policy.rules[d][index];
    const std::vector<uint32_t>& peers = peers_of(rule);
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
      add(ir::PROTOCOL_UNSPECIFIED, 0, 65535, tier_peer_set(peers));
      return;
    }
    for (const internal::CompiledPort& port : rule.ports) {
      if (port.kind != internal::CompiledPort::Kind::kNamed) {
        add(ToIrProtocol(port.protocol), port.first, port.last, tier_peer_set(peers));
        continue;
      }
      auto same_port = [&](const NamedPort& named) {
        return named.name == port.name && (port.any_protocol || named.protocol == port.protocol);
      };
      if (d == 0) {
        for (const NamedPort& named : *s.named_maps[own_named_map]) {
          if (same_port(named)) add(ToIrProtocol(named.protocol), named.port, named.port, tier_peer_set(peers));
        }
        continue;
      }
      for (uint32_t m = 1; m < s.named_maps.size(); ++m) {
        for (const NamedPort& named : *s.named_maps[m]) {
          if (!same_port(named)) continue;
          std::vector<uint32_t> towards = IntersectSorted(peers, identities_of_named_map(m));
          if (!towards.empty()) {
            add(ToIrProtocol(named.protocol), named.port, named.port, tier_peer_set(std::move(towards)));
          }
        }
      }
    }
  };

  // A direction of an engine table as NetworkPolicy port rules (`isolated` and `rules`).
  auto lower_allows = [&](const internal::TableView& table, int d, ir::DirectionPolicy* dp) {
    const internal::DirectionTable& dt = table.direction(d);
    dp->set_isolated(dt.isolated);
    if (!dt.isolated) return;
    for (Protocol protocol : kAllProtocols) {
      int pi = ProtocolIndex(protocol);
      for (uint32_t i = dt.begin[pi]; i < dt.end[pi]; ++i) {
        const internal::Interval& iv = table.intervals(d)[i];
        uint32_t last = i + 1 < dt.end[pi] ? table.intervals(d)[i + 1].first - 1u : 65535u;
        uint32_t set;
        if (iv.all_peers) {
          set = peer_set(true, {});
        } else {
          // The identities the interval lists: the allowed ones, or with `negated` (a
          // tier table) the denied ones.
          // Collected from the interval's list (sorted, as ids follow class order), not by a
          // scan of every identity per interval: that scan was most of LowerToIr at 1,000
          // pods.
          std::vector<uint32_t> listed;
          table.ForEachPeer(iv, [&](uint32_t c) {
            if (c < identity_by_class.size() && identity_by_class[c] != kNoIdentity) {
              listed.push_back(identity_by_class[c]);
            }
          });
          if (!std::is_sorted(listed.begin(), listed.end())) std::sort(listed.begin(), listed.end());
          listed.erase(std::unique(listed.begin(), listed.end()), listed.end());
          // Port rules are allow lists: a negated interval (flattened tiers) becomes its
          // complement over the identities some address carries, the shared-address
          // identity included (it matches no tier peer, so no tier rule denies it:
          // IntervalAllows).
          const uint32_t identity_count = static_cast<uint32_t>(class_of_identity.size());
          std::vector<uint32_t> identities;
          if (!iv.negated) {
            identities = std::move(listed);
          } else {
            size_t k = 0;
            for (uint32_t id = 0; id < identity_count; ++id) {
              if (k < listed.size() && listed[k] == id) {
                ++k;
              } else {
                identities.push_back(id);
              }
            }
          }
          if (identities.empty()) continue;  // no address is allowed: deny
          if (iv.negated && identities.size() == identity_count) {
            set = peer_set(true, {});  // every identity, so every address
          } else {
            set = peer_set(false, std::move(identities));
          }
        }
        ir::PortRule* rule = dp->add_rules();
        rule->set_protocol(ToIrProtocol(protocol));
        rule->set_first_port(iv.first);
        rule->set_last_port(last);
        rule->set_peer_set(set);
      }
    }
  };

  // Tables of the node's endpoints' target classes.
  std::map<uint32_t, uint32_t> table_of_class;
  auto lower_table = [&](uint32_t target_class) {
    auto it = table_of_class.find(target_class);
    if (it != table_of_class.end()) return it->second;
    uint32_t id = static_cast<uint32_t>(out.tables_size());
    table_of_class.emplace(target_class, id);
    const internal::TargetClassSlot& slot = s.target_classes[target_class];
    ir::Table* t = out.add_tables();
    t->set_id(id);
    std::vector<std::string> policies;
    for (uint32_t p : s.IdList(slot.key.policies)) policies.push_back(s.policies[p]->key);
    std::sort(policies.begin(), policies.end());
    for (const std::string& p : policies) t->add_policies(p);
    // Then the tier policies selecting them, in evaluation order (kNone: quarantine).
    const std::vector<uint32_t> no_tier_policies;
    const std::vector<uint32_t>& tier_policies =
        slot.key.tier_policies == kNone ? no_tier_policies : s.IdList(slot.key.tier_policies);
    for (uint32_t p : tier_policies) t->add_policies((*s.tier_policies)[p].key);
    // Flattened, or without tier policies: the engine's table as it is. Ordered: the table
    // the NetworkPolicies alone make, with the tiers' rules in order around it.
    bool ordered = !options.flatten_tiers && !tier_policies.empty();
    std::shared_ptr<const internal::TargetTable> network_policy_only;
    if (ordered) network_policy_only = s.NetworkPolicyTable(slot.key);
    const internal::TableView table =
        ordered ? network_policy_only->view() : slot.table->view();
    for (int d = 0; d < 2; ++d) {
      ir::DirectionPolicy* dp = d == 0 ? t->mutable_ingress() : t->mutable_egress();
      lower_allows(table, d, dp);
      if (!ordered) continue;
      for (uint32_t p : tier_policies) {
        const internal::CompiledTierPolicy& policy = (*s.tier_policies)[p];
        auto* rules = policy.tier == tiers::Tier::kAdmin ? dp->mutable_admin() : dp->mutable_baseline();
        for (size_t r = 0; r < policy.rules[d].size(); ++r) {
          lower_tier_rule(policy, d, r, slot.key.named_map, rules);
        }
      }
    }
    return id;
  };

  std::vector<std::pair<std::string, uint32_t>> node_pods;
  for (uint32_t p = 0; p < s.pods.size(); ++p) {
    const auto& pod = s.pods[p].state;
    if (pod == nullptr) continue;
    if (!s.options.node_name.empty() && pod->node_name != s.options.node_name) continue;
    node_pods.emplace_back(pod->namespace_name + '\0' + pod->name, p);
  }
  std::sort(node_pods.begin(), node_pods.end());
  for (const auto& [sort_key, p] : node_pods) {
    const internal::PodState& pod = *s.pods[p].state;
    ir::Endpoint* e = out.add_endpoints();
    e->set_namespace_(pod.namespace_name);
    e->set_name(pod.name);
    // Every address is listed under one endpoint: a shared one under its owner only (all
    // its holders are quarantined, so any of them would deny the same flows).
    for (const IpAddress& ip : pod.ips) {
      std::optional<uint32_t> owner = s.FindPodByIp(ip);
      if (owner && *owner == p) e->add_ips(ip.ToString());
    }
    for (const IpAddress& ip : s.SharedAddresses(pod)) e->add_shared_ips(ip.ToString());
    uint32_t target = s.records[p].target;
    if (target != kNone) {
      e->set_selected(true);
      e->set_table(lower_table(target));
    }
  }
  return out;
}

}  // namespace np
