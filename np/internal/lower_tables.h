// np/internal/lower_tables.h — lowers one engine table (a target class) into an ir::Table.
// Shared by the whole lowering (np/lower.cc, LowerToIr) and the policy-event delta
// (np/lower_delta.cc, PodDeltaLowering::LowerPolicyChange), so that both emit the very same
// rules: the delta path differs only in how identities are numbered (the installed
// program's ids) and how peer sets are interned (reusing the installed program's sets).
//
//   internal::IdentityNumbering ids = ...;   // class -> identity, and the live identities
//   internal::TableLowering lowering(state, /*flatten_tiers=*/false, ids, [&](bool all, std::vector<uint32_t> v) {
//     return InternPeerSet(all, std::move(v));
//   });
//   ir::Table table;
//   lowering.Lower(target_class, &table);   // everything but table.id()
//
// Thread safety: a TableLowering is used by one thread (it caches per-rule results).
#ifndef NP_INTERNAL_LOWER_TABLES_H_
#define NP_INTERNAL_LOWER_TABLES_H_

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "np/internal/engine_state.h"
#include "proto/compiled.pb.h"

namespace np::internal {

// The program's identities as a table's lowering needs them.
struct IdentityNumbering {
  static constexpr uint32_t kNoIdentity = UINT32_MAX;
  // Peer class -> identity; kNoIdentity when no address carries the class. The
  // shared-address class (kSharedPeer) is left out: no selector's set or interval lists it.
  std::vector<uint32_t> by_class;
  // Every identity some address carries, sorted, the shared-address one included: what
  // `all` means, and what a negated (flattened tier) interval is the complement over.
  // A renumbered program's unused ids (np/lower_align.h tombstones) are not in it.
  std::vector<uint32_t> live;
};

// Refuses a program with a domainNames peer in a Deny or Pass tier rule (np/lower.h, Errors).
absl::Status RefuseUnenforceableDomainNames(const EngineState& s);

class TableLowering {
 public:
  // Returns the id of the peer set with this content (`identities` sorted; empty with `all`).
  using PeerSetInterner = std::function<uint32_t(bool all, std::vector<uint32_t> identities)>;

  // `s` and `identities` must outlive this object.
  // `flatten_tiers`: LowerOptions::flatten_tiers (np/lower.h).
  TableLowering(const EngineState& s, bool flatten_tiers, const IdentityNumbering& identities,
                PeerSetInterner peer_set);

  // Fills `out` (empty) with the table of `target_class`: policies, both directions' port
  // rules and tier rules. Peer sets are interned in the order LowerToIr always used (tables'
  // order, then ingress before egress, rules before tier rules), so LowerToIr's numbering
  // is unchanged. Leaves out->id() to the caller.
  void Lower(uint32_t target_class, ir::Table* out);

 private:
  std::vector<uint32_t> IdentitiesIn(const Bitset& classes) const;
  uint32_t TierPeerSet(std::vector<uint32_t> identities);
  const std::vector<uint32_t>& PeersOf(const CompiledTierRule& rule);
  const std::vector<uint32_t>& IdentitiesOfNamedMap(uint32_t m);
  void LowerTierRule(const CompiledTierPolicy& policy, int d, size_t index,
                     uint32_t own_named_map, google::protobuf::RepeatedPtrField<ir::TierRule>* out);
  void LowerAllows(const TableView& table, int d, ir::DirectionPolicy* dp);

  const EngineState& s_;
  const bool flatten_tiers_;
  const IdentityNumbering& identities_;
  PeerSetInterner peer_set_;
  // Per tier rule: the identities its peers match (every table it applies to shares them).
  std::map<const CompiledTierRule*, std::vector<uint32_t>> tier_rule_peers_;
  // Per named map: the identities whose pods' named ports are that map's.
  std::map<uint32_t, std::vector<uint32_t>> named_map_identities_;
};

}  // namespace np::internal

#endif  // NP_INTERNAL_LOWER_TABLES_H_
