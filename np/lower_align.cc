#include "np/lower_align.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "np/backends/util.h"

namespace np {
namespace {

constexpr uint32_t kUnassigned = UINT32_MAX;

// One kind's numbering: for each item of `next`, its id in the result; for each id of
// `installed`, whether an item of `next` took it.
struct Numbering {
  std::vector<uint32_t> id_of;  // per next item
  std::vector<bool> taken;      // per installed id
  std::vector<bool> matched;    // per next item: a counterpart (not a new item)

  Numbering(int next_items, int installed_items)
      : id_of(next_items, kUnassigned), taken(installed_items, false), matched(next_items, false) {}

  void Match(uint32_t item, uint32_t id) {
    id_of[item] = id;
    taken[id] = true;
    matched[item] = true;
  }

  // Greedy one-to-one by votes ((next item, installed id) -> count): most votes first, ties
  // by lowest installed id, then lowest next item, so the result does not depend on hashing.
  void MatchByVotes(const absl::flat_hash_map<uint64_t, uint32_t>& votes) {
    std::vector<std::tuple<uint32_t, uint32_t, uint32_t>> order;  // -count, id, item
    order.reserve(votes.size());
    for (const auto& [key, count] : votes) {
      order.emplace_back(UINT32_MAX - count, static_cast<uint32_t>(key),
                         static_cast<uint32_t>(key >> 32));
    }
    std::sort(order.begin(), order.end());
    for (const auto& [unused, id, item] : order) {
      if (id_of[item] == kUnassigned && !taken[id]) Match(item, id);
    }
  }

  // New items, in `next`'s order: the lowest ids no item took, then appended ones. Returns
  // the result's size (at least installed's: its unused ids stay as tombstones).
  uint32_t AssignRest() {
    uint32_t free = 0;
    uint32_t size = static_cast<uint32_t>(taken.size());
    for (uint32_t& id : id_of) {
      if (id != kUnassigned) continue;
      while (free < taken.size() && taken[free]) ++free;
      if (free < taken.size()) {
        id = free;
        taken[free] = true;
      } else {
        id = size++;
      }
    }
    return size;
  }
};

uint64_t VoteKey(uint32_t item, uint32_t id) { return (uint64_t{item} << 32) | id; }

// Identities by the addresses they carry: each range of `next` votes for the installed
// identity holding its first address. Both lists of a family are sorted and cover it, so one
// forward walk finds each holder.
void VoteIdentities(const google::protobuf::RepeatedPtrField<ir::AddressRange>& next,
                    const google::protobuf::RepeatedPtrField<ir::AddressRange>& installed,
                    absl::flat_hash_map<uint64_t, uint32_t>* votes) {
  int j = 0;
  for (const ir::AddressRange& r : next) {
    while (j + 1 < installed.size() && installed[j].last() < r.first()) ++j;
    ++(*votes)[VoteKey(r.identity(), installed[j].identity())];
  }
}

std::string PeerSetKey(bool all, const std::vector<uint32_t>& identities) {
  std::string key(1, all ? '\1' : '\0');
  key.append(reinterpret_cast<const char*>(identities.data()),
             identities.size() * sizeof(uint32_t));
  return key;
}

const google::protobuf::RepeatedPtrField<ir::TierRule>& Stage(const ir::DirectionPolicy& d,
                                                             int stage) {
  return stage == 1 ? d.admin() : d.baseline();
}

// Calls f(next peer set, installed peer set) for each rule position named in both programs:
// (table, direction, stage, position), the next table taken at its aligned id.
template <typename F>
void ForEachRulePosition(const ir::CompiledPolicy& installed, const ir::CompiledPolicy& next,
                         const std::vector<uint32_t>& table_id, F f) {
  for (int t = 0; t < next.tables_size(); ++t) {
    const uint32_t id = table_id[t];
    if (id >= static_cast<uint32_t>(installed.tables_size())) continue;
    for (int d = 0; d < 2; ++d) {
      const ir::DirectionPolicy& n = d == 0 ? next.tables(t).ingress() : next.tables(t).egress();
      const ir::DirectionPolicy& i =
          d == 0 ? installed.tables(id).ingress() : installed.tables(id).egress();
      for (int p = 0; p < std::min(n.rules_size(), i.rules_size()); ++p) {
        f(n.rules(p).peer_set(), i.rules(p).peer_set());
      }
      for (int stage = 1; stage <= 2; ++stage) {
        const auto& nr = Stage(n, stage);
        const auto& ir = Stage(i, stage);
        for (int p = 0; p < std::min(nr.size(), ir.size()); ++p) {
          f(nr[p].peer_set(), ir[p].peer_set());
        }
      }
    }
  }
}

void RenumberPeerSets(ir::DirectionPolicy* d, const std::vector<uint32_t>& id) {
  for (ir::PortRule& r : *d->mutable_rules()) r.set_peer_set(id[r.peer_set()]);
  for (ir::TierRule& r : *d->mutable_admin()) r.set_peer_set(id[r.peer_set()]);
  for (ir::TierRule& r : *d->mutable_baseline()) r.set_peer_set(id[r.peer_set()]);
}

// Moves `items` (in next's order) to their ids in a list of `size`, the ids no item took
// left as tombstones: messages with only their id. In place, by swapping element pointers
// along the permutation's cycles: building a fresh list of `size` messages and swapping each
// item's content over cost an allocation and a free per item.
template <typename T>
void Place(google::protobuf::RepeatedPtrField<T>* items, const std::vector<uint32_t>& id_of,
           uint32_t size, google::protobuf::RepeatedPtrField<T>* out) {
  const int live = items->size();
  // dest[k]: the id the element now at position k goes to; tombstones (appended) take the
  // ids no item took, in order.
  std::vector<uint32_t> dest(id_of.begin(), id_of.end());
  dest.reserve(size);
  {
    std::vector<bool> taken(size, false);
    for (uint32_t id : id_of) taken[id] = true;
    for (uint32_t id = 0; id < size; ++id) {
      if (!taken[id]) dest.push_back(id);
    }
  }
  items->Reserve(static_cast<int>(size));
  for (uint32_t k = static_cast<uint32_t>(live); k < size; ++k) items->Add();
  for (uint32_t k = 0; k < size; ++k) {
    while (dest[k] != k) {
      const uint32_t to = dest[k];
      items->SwapElements(static_cast<int>(k), static_cast<int>(to));
      std::swap(dest[k], dest[to]);
    }
  }
  for (uint32_t i = 0; i < size; ++i) items->Mutable(static_cast<int>(i))->set_id(i);
  out->Swap(items);
}

// Content equality for the stats, field by field: MessageDifferencer's reflection cost as
// much as the rest of the alignment.
template <typename T>
bool SameList(const T& a, const T& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}
bool Same(const ir::Identity& a, const ir::Identity& b) {
  return a.external() == b.external() && SameList(a.pods(), b.pods());
}
bool Same(const ir::PeerSet& a, const ir::PeerSet& b) {
  return a.all() == b.all() && SameList(a.identities(), b.identities());
}
bool Same(const ir::PortRule& a, const ir::PortRule& b) {
  return a.protocol() == b.protocol() && a.first_port() == b.first_port() &&
         a.last_port() == b.last_port() && a.peer_set() == b.peer_set();
}
bool Same(const ir::TierRule& a, const ir::TierRule& b) {
  return a.action() == b.action() && a.protocol() == b.protocol() &&
         a.first_port() == b.first_port() && a.last_port() == b.last_port() &&
         a.peer_set() == b.peer_set() && a.origin() == b.origin();
}
template <typename T>
bool SameRules(const google::protobuf::RepeatedPtrField<T>& a,
               const google::protobuf::RepeatedPtrField<T>& b) {
  if (a.size() != b.size()) return false;
  for (int i = 0; i < a.size(); ++i) {
    if (!Same(a[i], b[i])) return false;
  }
  return true;
}
bool Same(const ir::DirectionPolicy& a, const ir::DirectionPolicy& b) {
  return a.isolated() == b.isolated() && SameRules(a.rules(), b.rules()) &&
         SameRules(a.admin(), b.admin()) && SameRules(a.baseline(), b.baseline());
}
bool Same(const ir::Table& a, const ir::Table& b) {
  return Same(a.ingress(), b.ingress()) && Same(a.egress(), b.egress()) &&
         SameList(a.policies(), b.policies());
}

// Matched items whose content differs from installed's under the same id.
template <typename T>
int Changed(const Numbering& n, const google::protobuf::RepeatedPtrField<T>& out,
            const google::protobuf::RepeatedPtrField<T>& installed) {
  int changed = 0;
  for (size_t i = 0; i < n.id_of.size(); ++i) {
    const int id = static_cast<int>(n.id_of[i]);
    if (n.matched[i] && !Same(out[id], installed[id])) ++changed;
  }
  return changed;
}

void Count(const Numbering& n, uint32_t size, int live, AlignItemStats* s) {
  s->added = static_cast<int>(std::count(n.matched.begin(), n.matched.end(), false));
  s->unused = static_cast<int>(size) - live;
}

bool TooManyUnused(uint32_t size, int live) {
  const int64_t unused = static_cast<int64_t>(size) - live;
  return unused > std::max<int64_t>(16, live / 4);
}

}  // namespace

absl::StatusOr<ir::CompiledPolicy> AlignNumbering(const ir::CompiledPolicy& installed,
                                                  ir::CompiledPolicy next, AlignStats* stats) {
  if (absl::Status s = backends::CheckIr(installed); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("AlignNumbering: installed: ", s.message()));
  }
  if (absl::Status s = backends::CheckIr(next); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("AlignNumbering: next: ", s.message()));
  }
  AlignStats local;
  AlignStats& st = stats != nullptr ? *stats : local;
  st = AlignStats();

  // Identities, by the addresses they carry.
  Numbering identities(next.identities_size(), installed.identities_size());
  {
    absl::flat_hash_map<uint64_t, uint32_t> votes;
    VoteIdentities(next.ipv4(), installed.ipv4(), &votes);
    VoteIdentities(next.ipv6(), installed.ipv6(), &votes);
    identities.MatchByVotes(votes);
  }
  const uint32_t identity_count = identities.AssignRest();

  // Tables, by the installed table of each of their endpoints.
  Numbering tables(next.tables_size(), installed.tables_size());
  {
    absl::flat_hash_map<std::string, uint32_t> installed_table;
    installed_table.reserve(static_cast<size_t>(installed.endpoints_size()));
    for (const ir::Endpoint& e : installed.endpoints()) {
      if (e.selected()) installed_table.emplace(absl::StrCat(e.namespace_(), "/", e.name()), e.table());
    }
    absl::flat_hash_map<uint64_t, uint32_t> votes;
    for (const ir::Endpoint& e : next.endpoints()) {
      if (!e.selected()) continue;
      auto it = installed_table.find(absl::StrCat(e.namespace_(), "/", e.name()));
      if (it != installed_table.end()) ++votes[VoteKey(e.table(), it->second)];
    }
    tables.MatchByVotes(votes);
  }
  const uint32_t table_count = tables.AssignRest();

  // Peer sets: the same identities (in aligned ids) first, then by the rule positions that
  // name them in both programs.
  std::vector<std::vector<uint32_t>> set_identities(next.peer_sets_size());
  Numbering peer_sets(next.peer_sets_size(), installed.peer_sets_size());
  {
    absl::flat_hash_map<std::string, uint32_t> installed_set;
    for (const ir::PeerSet& s : installed.peer_sets()) {
      installed_set.emplace(
          PeerSetKey(s.all(), std::vector<uint32_t>(s.identities().begin(), s.identities().end())),
          s.id());
    }
    for (int i = 0; i < next.peer_sets_size(); ++i) {
      std::vector<uint32_t>& ids = set_identities[i];
      for (uint32_t id : next.peer_sets(i).identities()) ids.push_back(identities.id_of[id]);
      std::sort(ids.begin(), ids.end());
      auto it = installed_set.find(PeerSetKey(next.peer_sets(i).all(), ids));
      if (it != installed_set.end() && !peer_sets.taken[it->second]) peer_sets.Match(i, it->second);
    }
    absl::flat_hash_map<uint64_t, uint32_t> votes;
    ForEachRulePosition(installed, next, tables.id_of, [&](uint32_t n, uint32_t i) {
      if (peer_sets.id_of[n] == kUnassigned && !peer_sets.taken[i]) ++votes[VoteKey(n, i)];
    });
    peer_sets.MatchByVotes(votes);
  }
  const uint32_t peer_set_count = peer_sets.AssignRest();

  if (TooManyUnused(identity_count, next.identities_size()) ||
      TooManyUnused(peer_set_count, next.peer_sets_size()) ||
      TooManyUnused(table_count, next.tables_size())) {
    st.compacted = true;
    st.identities.added = next.identities_size();
    st.peer_sets.added = next.peer_sets_size();
    st.tables.added = next.tables_size();
    return next;
  }

  ir::CompiledPolicy out;
  out.set_node(next.node());
  out.set_always_allow_self(next.always_allow_self());
  for (auto* ranges : {next.mutable_ipv4(), next.mutable_ipv6()}) {
    for (ir::AddressRange& r : *ranges) r.set_identity(identities.id_of[r.identity()]);
  }
  out.mutable_ipv4()->Swap(next.mutable_ipv4());
  out.mutable_ipv6()->Swap(next.mutable_ipv6());
  for (int i = 0; i < next.peer_sets_size(); ++i) {
    auto* ids = next.mutable_peer_sets(i)->mutable_identities();
    ids->Clear();
    ids->Add(set_identities[i].begin(), set_identities[i].end());  // sorted above
  }
  for (ir::Table& t : *next.mutable_tables()) {
    RenumberPeerSets(t.mutable_ingress(), peer_sets.id_of);
    RenumberPeerSets(t.mutable_egress(), peer_sets.id_of);
  }
  for (ir::Endpoint& e : *next.mutable_endpoints()) {
    if (e.selected()) e.set_table(tables.id_of[e.table()]);
  }
  const int live_identities = next.identities_size();
  const int live_peer_sets = next.peer_sets_size();
  const int live_tables = next.tables_size();
  Place(next.mutable_identities(), identities.id_of, identity_count, out.mutable_identities());
  Place(next.mutable_peer_sets(), peer_sets.id_of, peer_set_count, out.mutable_peer_sets());
  Place(next.mutable_tables(), tables.id_of, table_count, out.mutable_tables());
  out.mutable_endpoints()->Swap(next.mutable_endpoints());

  if (stats != nullptr) {
    Count(identities, identity_count, live_identities, &st.identities);
    Count(peer_sets, peer_set_count, live_peer_sets, &st.peer_sets);
    Count(tables, table_count, live_tables, &st.tables);
    st.identities.changed = Changed(identities, out.identities(), installed.identities());
    st.peer_sets.changed = Changed(peer_sets, out.peer_sets(), installed.peer_sets());
    st.tables.changed = Changed(tables, out.tables(), installed.tables());
  }
  return out;
}

}  // namespace np
