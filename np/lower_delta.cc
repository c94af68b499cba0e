#include "np/lower_delta.h"

#include <algorithm>
#include <iterator>
#include <map>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/util/message_differencer.h"
#include "np/internal/engine_state.h"
#include "np/internal/ir_ranges.h"
#include "np/internal/lower_tables.h"

namespace np {
namespace {

using internal::EngineAccess;
using internal::EngineState;
using internal::kNone;
using internal::kSharedPeer;
using internal::U128;

using Ranges = google::protobuf::RepeatedPtrField<ir::AddressRange>;

std::string SortKey(const std::string& namespace_name, const std::string& name) {
  return namespace_name + '\0' + name;
}

// The pod id of "namespace/name" in a snapshot, if live.
std::optional<uint32_t> LivePodId(const EngineState& s, const std::string& key) {
  const uint32_t* id = s.pod_by_key.Find(key);
  if (id == nullptr || s.pods[*id].state == nullptr) return std::nullopt;
  return *id;
}

// Index of the range holding `address` (the ranges cover the family: one does).
int RangeHolding(const Ranges& ranges, U128 address) {
  int lo = 0, hi = ranges.size() - 1;
  while (lo < hi) {  // the first range whose last >= address
    int mid = lo + (hi - lo) / 2;
    if (internal::BytesValue(ranges[mid].last()) >= address) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// Position of the endpoint (namespace, name) in the sorted endpoints, and whether it is there.
std::pair<int, bool> EndpointPosition(const ir::CompiledPolicy& ir, const std::string& ns,
                                      const std::string& name) {
  const auto& e = ir.endpoints();
  auto less = [](const ir::Endpoint& a,
                 const std::pair<const std::string*, const std::string*>& k) {
    return std::tie(a.namespace_(), a.name()) < std::tie(*k.first, *k.second);
  };
  auto it = std::lower_bound(e.begin(), e.end(), std::make_pair(&ns, &name), less);
  int pos = static_cast<int>(it - e.begin());
  return {pos, it != e.end() && it->namespace_() == ns && it->name() == name};
}

using PeerSetContent = std::pair<bool, std::vector<uint32_t>>;

PeerSetContent ContentOf(const ir::PeerSet& set) {
  return {set.all(), std::vector<uint32_t>(set.identities().begin(), set.identities().end())};
}

// Calls f(peer set id) for every rule of `table` (port rules and tier rules, both directions).
template <typename F>
void ForEachPeerSetOf(const ir::Table& table, F&& f) {
  for (const ir::DirectionPolicy* d : {&table.ingress(), &table.egress()}) {
    for (const ir::PortRule& r : d->rules()) f(r.peer_set());
    for (const ir::TierRule& r : d->admin()) f(r.peer_set());
    for (const ir::TierRule& r : d->baseline()) f(r.peer_set());
  }
}

// The same, with the ids rewritten by `map`.
template <typename F>
void RenumberPeerSets(ir::Table* table, F&& map) {
  for (ir::DirectionPolicy* d : {table->mutable_ingress(), table->mutable_egress()}) {
    for (ir::PortRule& r : *d->mutable_rules()) r.set_peer_set(map(r.peer_set()));
    for (ir::TierRule& r : *d->mutable_admin()) r.set_peer_set(map(r.peer_set()));
    for (ir::TierRule& r : *d->mutable_baseline()) r.set_peer_set(map(r.peer_set()));
  }
}

// An unused table of the fixed shape (np/lower_align.h): a tombstone already.
bool IsTombstone(const ir::Table& t) {
  return t.policies_size() == 0 && !t.ingress().isolated() && !t.egress().isolated() &&
         t.ingress().rules_size() == 0 && t.egress().rules_size() == 0 &&
         t.ingress().admin_size() == 0 && t.egress().admin_size() == 0 &&
         t.ingress().baseline_size() == 0 && t.egress().baseline_size() == 0;
}

// AlignNumbering's compaction threshold (np/lower_align.h): past it the caller lowers whole,
// which compacts, so that ids stay bounded under any sequence of events.
bool PastCompaction(int64_t count, int64_t live) {
  return count - live > std::max<int64_t>(16, live / 4);
}

// Ids for identities new to the program, as np/lower_align.h numbers them: the lowest unused
// (tombstone) id first, then appended.
class IdentityIds {
 public:
  IdentityIds(const std::set<uint32_t>& unused, uint32_t count)
      : next_(unused.begin()), end_(unused.end()), appended_(count) {}
  uint32_t Take() { return next_ != end_ ? *next_++ : appended_++; }
  // The program's count of identities afterwards.
  uint32_t count() const { return appended_; }

 private:
  std::set<uint32_t>::const_iterator next_, end_;
  uint32_t appended_;
};

using ClassIdentities = std::vector<std::pair<uint32_t, uint32_t>>;  // class, identity

// The identities as tables are lowered after `came` and `went` (class, identity; `by_class`
// has neither went's classes nor came's yet): nullptr past the compaction threshold.
std::shared_ptr<internal::IdentityNumbering> NumberingAfter(
    const std::vector<uint32_t>& live_before, std::vector<uint32_t> by_class,
    const ClassIdentities& came, const ClassIdentities& went, uint32_t count) {
  const int64_t live =
      static_cast<int64_t>(live_before.size() + came.size()) - static_cast<int64_t>(went.size());
  if (PastCompaction(count, live)) return nullptr;
  auto numbering = std::make_shared<internal::IdentityNumbering>();
  numbering->by_class = std::move(by_class);
  std::vector<uint32_t> came_ids, went_ids;
  for (const auto& [c, id] : went) went_ids.push_back(id);
  for (const auto& [c, id] : came) {
    if (numbering->by_class.size() <= c) {
      numbering->by_class.resize(c + 1, internal::IdentityNumbering::kNoIdentity);
    }
    numbering->by_class[c] = id;
    came_ids.push_back(id);
  }
  std::sort(came_ids.begin(), came_ids.end());
  std::sort(went_ids.begin(), went_ids.end());
  std::vector<uint32_t> kept;
  std::set_difference(live_before.begin(), live_before.end(), went_ids.begin(), went_ids.end(),
                      std::back_inserter(kept));
  std::merge(kept.begin(), kept.end(), came_ids.begin(), came_ids.end(),
             std::back_inserter(numbering->live));
  return numbering;
}

// The pod edits of each `touched` identity: the `moved` pods it holds in `installed` leave
// it, the pods `gains` gives it join it; an edit (compiled.proto IdentityPodsEdit: the names
// added and removed, not the list) where they differ, an appended identity whole (pods
// sorted). Binary searches in the installed identity's sorted, distinct pods: an identity may
// have thousands of pods and a pod event moves one (copying the whole list into the delta,
// ~2,000 strings a relabel at 1,000 pods a node, was most of a pod event's lowering: h89).
void EmitIdentityPods(const ir::CompiledPolicy& installed, const std::set<uint32_t>& touched,
                      const std::vector<std::string>& moved,
                      const std::map<uint32_t, std::vector<std::string>>& gains,
                      ir::CompiledPolicyDelta* delta) {
  static const google::protobuf::RepeatedPtrField<std::string> kNoPods;
  for (uint32_t id : touched) {
    const bool appended = id >= static_cast<uint32_t>(installed.identities_size());
    const google::protobuf::RepeatedPtrField<std::string>& pods =
        appended ? kNoPods : installed.identities(static_cast<int>(id)).pods();
    auto holds = [&](const std::string& name) {
      return std::binary_search(pods.begin(), pods.end(), name);
    };
    std::vector<const std::string*> joining;
    if (auto gained = gains.find(id); gained != gains.end()) {
      for (const std::string& name : gained->second) joining.push_back(&name);
      auto less = [](const std::string* a, const std::string* b) { return *a < *b; };
      std::sort(joining.begin(), joining.end(), less);
      joining.erase(std::unique(joining.begin(), joining.end(),
                                [](const std::string* a, const std::string* b) { return *a == *b; }),
                    joining.end());
    }
    auto joins = [&](const std::string& name) {
      return std::binary_search(joining.begin(), joining.end(), &name,
                                [](const std::string* a, const std::string* b) { return *a < *b; });
    };
    if (appended) {
      ir::Identity* identity = delta->add_identities();
      identity->set_id(id);
      for (const std::string* name : joining) identity->add_pods(*name);
      continue;
    }
    // Removed: the moved pods it holds that do not join it again (a pod whose addresses or
    // labels changed within its identity stays); added: the joining pods it does not hold.
    ir::IdentityPodsEdit* edit = nullptr;
    auto edit_of = [&]() {
      if (edit == nullptr) {
        edit = delta->add_identity_pods();
        edit->set_identity(id);
      }
      return edit;
    };
    for (const std::string* name : joining) {
      if (!holds(*name)) edit_of()->add_added(*name);
    }
    for (const std::string& name : moved) {  // sorted and distinct
      if (holds(name) && !joins(name)) edit_of()->add_removed(name);
    }
  }
}

// Whether a target class's table may name one of `classes` (peer classes gaining or losing
// their identity): found from the classes' selectors through the class's policies (and egress
// named ports: a rule without peers lists the classes of each named map), not from the
// tables' rules; every class with tier policies, since tier sets are over the live
// identities and a flattened tier interval's complement is over them.
class TablesNaming {
 public:
  TablesNaming(const EngineState& s, const std::vector<uint32_t>& classes)
      : s_(s), selectors_(s.selectors.size(), false), memo_(s.policies.size(), kUnknown) {
    for (uint32_t c : classes) {
      const internal::PeerClassKey& key = s.peer_classes[c];
      for (uint32_t part : {key.label_part, key.ipblock_part}) {
        for (uint32_t selector : s.IdList(part)) {
          if (selector < selectors_.size()) selectors_[selector] = true;
        }
      }
      named_ = named_ || key.named_map != 0;
    }
  }

  bool Names(uint32_t target) {
    const internal::TargetClassKey& key = s_.target_classes[target].key;
    if (key.tier_policies != kNone && !s_.IdList(key.tier_policies).empty()) return true;
    for (uint32_t p : s_.IdList(key.policies)) {
      if (PolicyNames(p)) return true;
    }
    return false;
  }

 private:
  static constexpr int8_t kUnknown = -1;

  bool PolicyNames(uint32_t p) {
    if (p >= memo_.size()) return true;  // (no policy id is past the snapshot's: lower it)
    if (memo_[p] != kUnknown) return memo_[p] != 0;
    const internal::CompiledPolicy* policy = s_.policies[p].get();
    bool found = policy != nullptr && named_ && policy->has_egress_named_ports;
    for (int d = 0; policy != nullptr && d < 2 && !found; ++d) {
      for (const internal::CompiledRule& rule : policy->rules[d]) {
        for (uint32_t selector : rule.selectors) {
          found = found || (selector < selectors_.size() && selectors_[selector]);
        }
      }
    }
    memo_[p] = found ? 1 : 0;
    return found;
  }

  const EngineState& s_;
  // Per selector id: whether it matches one of the classes. Per policy id: whether it may
  // name them (kUnknown until asked). Arrays, not hash sets: a split asks every table on
  // the node, each table each of its policies (hashing those was a quarter of a 1,000-pod
  // node's split lowering, perf, bench/RESULTS.md h94).
  std::vector<bool> selectors_;
  bool named_ = false;
  std::vector<int8_t> memo_;
};

// Whether the policies LowerToIr would name in the table of `slot` are `table`'s.
bool SamePolicies(const EngineState& s, const internal::TargetClassSlot& slot,
                  const ir::Table& table) {
  std::vector<absl::string_view> names;
  for (uint32_t p : s.IdList(slot.key.policies)) names.push_back(s.policies[p]->key);
  std::sort(names.begin(), names.end());
  if (slot.key.tier_policies != kNone) {
    for (uint32_t p : s.IdList(slot.key.tier_policies)) names.push_back((*s.tier_policies)[p].key);
  }
  return std::equal(names.begin(), names.end(), table.policies().begin(), table.policies().end());
}

// Tables a delta replaces, appends or retires, and the peer sets their rules name: shared by
// the pod and policy deltas. Sets are interned by content: an installed set some rule names
// keeps its id, a new content takes a provisional id, numbered by Finish once the replaced
// tables' sets are known to be free.
class TableEdits {
 public:
  static constexpr uint32_t kProvisional = 0x80000000u;

  TableEdits(const ir::CompiledPolicy& installed,
             const absl::flat_hash_map<PeerSetContent, uint32_t>& known)
      : installed_(installed), known_(known) {}

  uint32_t Intern(bool all, std::vector<uint32_t> ids) {
    return Intern(PeerSetContent(all, std::move(ids)));
  }
  uint32_t Intern(PeerSetContent content) {
    auto rewritten = rewritten_.find(content);
    if (rewritten != rewritten_.end()) return rewritten->second;
    auto found = known_.find(content);
    if (found != known_.end() && rewritten_ids_.count(found->second) == 0) return found->second;
    auto [it, fresh] =
        fresh_ids_.try_emplace(content, kProvisional + static_cast<uint32_t>(fresh_sets_.size()));
    if (fresh) fresh_sets_.push_back(std::move(content));
    return it->second;
  }

  // `table` (its id set) replaces the installed table of its id, or is appended.
  void Replace(ir::Table table) {
    if (table.id() < static_cast<uint32_t>(installed_.tables_size())) {
      ForEachPeerSetOf(installed_.tables(table.id()), [&](uint32_t set) { ref_change_[set]--; });
    }
    ForEachPeerSetOf(table, [&](uint32_t set) {
      if (set < kProvisional) ref_change_[set]++;
    });
    emitted_.push_back(std::move(table));
  }

  bool empty() const { return emitted_.empty(); }

  // Installed peer set `id` (some rule names it) gets `content` in place: every rule naming it
  // means the new content now, so the tables naming it need not change. `content` must be no
  // other set's. Before any Intern of either content.
  void Rewrite(uint32_t id, PeerSetContent content) {
    rewritten_ids_.insert(id);
    rewrites_.emplace_back(id, content);
    rewritten_.emplace(std::move(content), id);
  }
  bool Known(const PeerSetContent& content) const {
    return known_.count(content) != 0 || rewritten_.count(content) != 0;
  }

  // Provisional peer sets take the ids of sets only the replaced tables named (lowest first),
  // then the installed program's unused ids, then are appended; freed sets left over become
  // tombstones. Adds the sets and tables to `delta`; for the index: `refs` (rules naming each
  // set whose count changed, by `peer_set_refs` before), the contents dropped and added, and
  // the program's count of peer sets afterwards. nullptr, else why not.
  const char* Finish(const std::vector<int64_t>& peer_set_refs, ir::CompiledPolicyDelta* delta,
                     size_t* peer_sets, std::vector<std::pair<uint32_t, int64_t>>* refs,
                     std::vector<std::pair<uint32_t, PeerSetContent>>* dropped,
                     std::vector<std::pair<uint32_t, PeerSetContent>>* added) {
    const uint32_t old_sets = static_cast<uint32_t>(installed_.peer_sets_size());
    std::vector<uint32_t> freed;
    for (const auto& [set, change] : ref_change_) {
      if (change != 0) refs->emplace_back(set, peer_set_refs[set] + change);
      if (change < 0 && peer_set_refs[set] + change == 0) freed.push_back(set);
    }
    std::sort(freed.begin(), freed.end());
    int64_t live_sets = 0;
    std::vector<uint32_t> unused;
    for (uint32_t set = 0; set < old_sets; ++set) {
      if (peer_set_refs[set] > 0) {
        ++live_sets;
      } else {
        unused.push_back(set);
      }
    }
    live_sets += static_cast<int64_t>(fresh_sets_.size()) - static_cast<int64_t>(freed.size());
    std::vector<uint32_t> fresh_id(fresh_sets_.size());
    size_t next_freed = 0, next_unused = 0;
    uint32_t appended = old_sets;
    for (uint32_t& id : fresh_id) {
      if (next_freed < freed.size()) {
        id = freed[next_freed++];
      } else if (next_unused < unused.size()) {
        id = unused[next_unused++];
      } else {
        id = appended++;
      }
    }
    *peer_sets = appended;
    if (PastCompaction(appended, live_sets)) {
      return "unused peer sets past the compaction threshold";
    }
    for (size_t k = next_freed; k < freed.size(); ++k) delta->add_peer_sets()->set_id(freed[k]);
    for (uint32_t set : freed) dropped->emplace_back(set, ContentOf(installed_.peer_sets(set)));
    for (auto& [id, content] : rewrites_) {
      ir::PeerSet* set = delta->add_peer_sets();
      set->set_id(id);
      set->set_all(content.first);
      set->mutable_identities()->Add(content.second.begin(), content.second.end());
      dropped->emplace_back(id, ContentOf(installed_.peer_sets(id)));
      added->emplace_back(id, std::move(content));
    }
    for (size_t k = 0; k < fresh_sets_.size(); ++k) {
      ir::PeerSet* set = delta->add_peer_sets();
      set->set_id(fresh_id[k]);
      set->set_all(fresh_sets_[k].first);
      set->mutable_identities()->Add(fresh_sets_[k].second.begin(), fresh_sets_[k].second.end());
      added->emplace_back(fresh_id[k], std::move(fresh_sets_[k]));
    }
    // Rules naming a provisional set: each table names it at least once.
    absl::flat_hash_map<uint32_t, int64_t> fresh_refs;
    for (ir::Table& table : emitted_) {
      RenumberPeerSets(&table, [&](uint32_t set) {
        if (set < kProvisional) return set;
        const uint32_t id = fresh_id[set - kProvisional];
        fresh_refs[id]++;
        return id;
      });
    }
    for (const auto& [set, n] : fresh_refs) refs->emplace_back(set, n);
    std::sort(refs->begin(), refs->end());
    std::sort(delta->mutable_peer_sets()->begin(), delta->mutable_peer_sets()->end(),
              [](const ir::PeerSet& a, const ir::PeerSet& b) { return a.id() < b.id(); });
    std::sort(emitted_.begin(), emitted_.end(),
              [](const ir::Table& a, const ir::Table& b) { return a.id() < b.id(); });
    for (ir::Table& table : emitted_) *delta->add_tables() = std::move(table);
    return nullptr;
  }

 private:
  const ir::CompiledPolicy& installed_;
  const absl::flat_hash_map<PeerSetContent, uint32_t>& known_;
  std::vector<PeerSetContent> fresh_sets_;
  absl::flat_hash_map<PeerSetContent, uint32_t> fresh_ids_;
  absl::flat_hash_map<uint32_t, int64_t> ref_change_;  // installed peer set id -> change
  std::vector<ir::Table> emitted_;
  // Installed sets given new content in place (Rewrite), by content and by id.
  absl::flat_hash_map<PeerSetContent, uint32_t> rewritten_;
  absl::flat_hash_set<uint32_t> rewritten_ids_;
  std::vector<std::pair<uint32_t, PeerSetContent>> rewrites_;
};

// Whether two tables are the same but for the peer sets their rules name.
bool SameButPeerSets(ir::Table a, ir::Table b) {
  RenumberPeerSets(&a, [](uint32_t) { return 0u; });
  RenumberPeerSets(&b, [](uint32_t) { return 0u; });
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

// A new table (of `new_tables`: target class, provisional id) whose endpoints come from a
// table the delta would retire takes that table's id, as np/lower_align.h numbers tables (the
// id most of its endpoints had; greedy by votes, ties by lowest ids): a relabelled pod's
// table is then replaced in place, not the pod moved between two tables (which nft and
// eBPF do by a full replace). The other new tables take the first of the ids allocated, in
// order, so that appended ids leave no gap. Returns provisional id -> final id (empty: none
// taken).
std::map<uint32_t, uint32_t> TakeRetiredIds(
    const std::vector<uint32_t>& retired,
    const std::vector<std::pair<uint32_t, std::string>>& endpoints_out,
    const std::vector<std::pair<uint32_t, std::string>>& endpoints_in,
    std::vector<std::pair<uint32_t, uint32_t>>* new_tables) {
  absl::flat_hash_map<absl::string_view, uint32_t> left;  // endpoint key -> table it left
  for (const auto& [t, key] : endpoints_out) left.emplace(key, t);
  absl::flat_hash_set<uint32_t> fresh;
  for (const auto& [target, id] : *new_tables) fresh.insert(id);
  std::map<std::pair<uint32_t, uint32_t>, int64_t> votes;  // (provisional id, retired id)
  for (const auto& [t, key] : endpoints_in) {
    auto from = left.find(key);
    if (from == left.end() || fresh.count(t) == 0 ||
        !std::binary_search(retired.begin(), retired.end(), from->second)) {
      continue;
    }
    votes[{t, from->second}]++;
  }
  std::vector<std::tuple<int64_t, uint32_t, uint32_t>> ranked;  // -votes, retired, provisional
  for (const auto& [key, n] : votes) ranked.emplace_back(-n, key.second, key.first);
  std::sort(ranked.begin(), ranked.end());
  std::map<uint32_t, uint32_t> renumber;
  absl::flat_hash_set<uint32_t> taken;
  for (const auto& [n, old_id, provisional] : ranked) {
    if (taken.count(old_id) != 0 || renumber.count(provisional) != 0) continue;
    taken.insert(old_id);
    renumber.emplace(provisional, old_id);
  }
  if (renumber.empty()) return renumber;
  std::vector<uint32_t> allocated;  // in allocation order: unused ids ascending, then appended
  for (const auto& [target, id] : *new_tables) allocated.push_back(id);
  size_t next = 0;
  for (auto& [target, id] : *new_tables) {
    auto it = renumber.find(id);
    if (it == renumber.end()) it = renumber.emplace(id, allocated[next++]).first;
    id = it->second;
  }
  return renumber;
}

}  // namespace

// What a policy delta changes of the index (PodDeltaLowering::Commit).
struct PodDelta::Tables {
  // A policy delta: the index's tables afterwards, whole.
  std::vector<uint32_t> target;
  std::vector<std::shared_ptr<const internal::TargetTable>> source;
  std::vector<int64_t> endpoints;
  absl::flat_hash_map<uint32_t, uint32_t> of_target;
  // A pod delta: only the table slots it changes (retired, lowered again, new), the whole
  // vectors above left empty, and the count of tables afterwards. Copying the index's tables
  // whole into the delta was a third of a 1,000-pod node's relabel lowering (perf).
  struct Slot {
    uint32_t id;
    uint32_t target;  // kNone: retired
    std::shared_ptr<const internal::TargetTable> source;
  };
  bool slots_only = false;
  size_t count = 0;
  std::vector<Slot> slots;  // ascending id, each id once
  size_t peer_sets = 0;                                 // the program's count afterwards
  std::vector<std::pair<uint32_t, int64_t>> refs;       // peer set id, rules naming it now
  std::vector<std::pair<uint32_t, PeerSetContent>> dropped, added;  // contents by id
  // The identities by the next snapshot's classes, when the classes were renamed.
  std::shared_ptr<const internal::IdentityNumbering> numbering;
};

PodDeltaLowering PodDeltaLowering::Index(std::shared_ptr<const Engine> snapshot,
                                         const ir::CompiledPolicy& installed,
                                         const LowerOptions& options) {
  PodDeltaLowering x;
  x.options_ = options;
  const EngineState& s = EngineAccess::State(*snapshot);
  x.snapshot_ = std::move(snapshot);
  x.range_count_.assign(installed.identities_size(), 0);
  x.external_count_.assign(installed.identities_size(), 0);
  for (int f = 0; f < 2; ++f) {
    for (const ir::AddressRange& r : f == 0 ? installed.ipv4() : installed.ipv6()) {
      uint32_t c;
      if (r.pod().empty()) {
        c = s.atoms[f]->peer_class[s.atoms[f]->Find(internal::BytesValue(r.first()))];
        x.external_count_[r.identity()]++;
      } else {
        std::optional<uint32_t> p = LivePodId(s, r.pod());
        c = p ? s.records[*p].peer[f] : kNone;
      }
      x.range_count_[r.identity()]++;
      x.identity_of_class_.emplace(c, r.identity());
    }
  }
  for (const ir::Identity& identity : installed.identities()) {
    if (x.range_count_[identity.id()] == 0 && !identity.external() && identity.pods().empty()) {
      x.unused_identities_.insert(identity.id());
    }
  }
  x.table_target_.assign(installed.tables_size(), kNone);
  x.table_source_.resize(installed.tables_size());
  x.table_endpoints_.assign(installed.tables_size(), 0);
  x.endpoint_pod_.reserve(installed.endpoints_size());
  for (const ir::Endpoint& e : installed.endpoints()) {
    std::optional<uint32_t> p = LivePodId(s, e.namespace_() + "/" + e.name());
    x.endpoint_pod_.push_back(p ? *p : kNone);
    if (!e.selected() || !p) continue;
    uint32_t target = s.records[*p].target;
    x.table_endpoints_[e.table()]++;
    if (target == kNone || x.table_target_[e.table()] != kNone) continue;
    x.table_target_[e.table()] = target;
    x.table_source_[e.table()] = s.target_classes[target].table;
    x.table_of_target_.emplace(target, e.table());
  }
  // The identities as TableLowering numbers rules: every class some address carries (the
  // shared-address one aside), and the identities carrying addresses.
  auto numbering = std::make_shared<internal::IdentityNumbering>();
  for (const auto& [c, id] : x.identity_of_class_) {
    if (c >= kSharedPeer) continue;
    if (numbering->by_class.size() <= c) {
      numbering->by_class.resize(c + 1, internal::IdentityNumbering::kNoIdentity);
    }
    numbering->by_class[c] = id;
  }
  for (uint32_t id = 0; id < x.range_count_.size(); ++id) {
    if (x.range_count_[id] > 0) numbering->live.push_back(id);
  }
  x.numbering_ = std::move(numbering);
  x.IndexTableNames(s);
  x.peer_set_refs_.assign(installed.peer_sets_size(), 0);
  for (const ir::Table& t : installed.tables()) {
    ForEachPeerSetOf(t, [&](uint32_t set) { x.peer_set_refs_[set]++; });
  }
  for (const ir::PeerSet& set : installed.peer_sets()) {
    if (x.peer_set_refs_[set.id()] == 0) continue;
    x.peer_set_by_content_.try_emplace(ContentOf(set), set.id());
  }
  return x;
}

void PodDeltaLowering::Recycle(PodDelta&& used) {
  spare_delta_.Swap(&used.delta);
  spare_delta_.Clear();  // keeps the repeated fields' elements (and strings' capacity)
}

void PodDeltaLowering::TakeSpareDelta(ir::CompiledPolicyDelta* delta) const {
  delta->Swap(&spare_delta_);
}

std::optional<PodDelta> PodDeltaLowering::Lower(std::shared_ptr<const Engine> next_engine,
                                                const ir::CompiledPolicy& installed,
                                                const std::vector<std::string>& changed_pods,
                                                std::string* why) const {
  std::string reason_storage;
  std::string& reason = why != nullptr ? *why : reason_storage;
  reason.clear();
  // Not expressible: says why (for the agent's log and for tests), lower whole.
  auto refuse = [&](absl::string_view r) -> std::optional<PodDelta> {
    if (reason.empty()) reason = std::string(r);
    return std::nullopt;
  };
  if (snapshot_ == nullptr || next_engine == nullptr) return refuse("no snapshot");
  const EngineState& prev = EngineAccess::State(*snapshot_);
  const EngineState& next = EngineAccess::State(*next_engine);
  // What the delta cannot change must be the very same objects.
  if (prev.atoms[0] != next.atoms[0] || prev.atoms[1] != next.atoms[1] ||
      prev.tier_policies != next.tier_policies ||
      prev.options.node_name != next.options.node_name ||
      prev.options.evaluation.always_allow_self != next.options.evaluation.always_allow_self ||
      installed.identities_size() != static_cast<int>(range_count_.size()) ||
      installed.tables_size() != static_cast<int>(table_target_.size())) {
    return refuse("atoms, tier policies, options or the program's shape differ");
  }
  std::vector<std::string> keys = changed_pods;
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());

  struct Address {
    U128 address;
    uint32_t identity;
    const std::string* pod;
  };
  std::vector<Address> removed[2], added[2];
  std::map<uint32_t, std::vector<std::string>> identity_gains;  // identity -> new pods
  std::set<uint32_t> touched_identities;
  std::map<uint32_t, uint32_t> class_of_identity;  // of the changed pods' old addresses
  // A peer class no address of `installed` carries (a relabel into a new label set): its
  // identity is the lowest unused one of the program (np/lower_align.h's tombstone: no pods,
  // not external, in no range or peer set), else appended; one per class across the delta.
  ClassIdentities new_identities;
  IdentityIds identity_ids(unused_identities_, static_cast<uint32_t>(installed.identities_size()));
  auto identity_for_new_class = [&](uint32_t c) {
    for (const auto& [known, id] : new_identities) {
      if (known == c) return id;
    }
    const uint32_t id = identity_ids.Take();
    new_identities.emplace_back(c, id);
    return id;
  };
  // A pod's addresses in one snapshot, each with its identity; false when not expressible.
  auto addresses = [&](const EngineState& s, uint32_t id, bool is_next, std::vector<Address>* out) {
    const internal::PodState& pod = *s.pods[id].state;
    for (size_t i = 0; i < pod.ips.size(); ++i) {
      const IpAddress& ip = pod.ips[i];
      for (size_t j = 0; j < i; ++j) {
        if (pod.ips[j] == ip) {  // listed twice: leave it to the whole lowering
          reason = "a pod lists an address twice";
          return false;
        }
      }
      if (prev.shared_ips.Find(ip) != nullptr || next.shared_ips.Find(ip) != nullptr) {
        reason = "a shared address";
        return false;
      }
      std::optional<uint32_t> owner = s.FindPodByIp(ip);
      if (!owner || *owner != id) {
        reason = "an address owned by another pod";
        return false;
      }
      int f = ip.is_v4() ? 0 : 1;
      uint32_t c = s.records[id].peer[f];
      if (c >= kSharedPeer) {
        reason = "a pod without a peer class";
        return false;
      }
      auto found = identity_of_class_.find(c);
      if (is_next) {
        // The same class id must mean the same class in both snapshots (a class the engine
        // interned with these events, past prev's, has no identity yet).
        if (c >= next.peer_classes.size() ||
            (c < prev.peer_classes.size() ? !(prev.peer_classes[c] == next.peer_classes[c])
                                          : found != identity_of_class_.end())) {
          reason = "a peer class id that means another class now";
          return false;
        }
      } else {
        if (found == identity_of_class_.end()) {
          reason = "an installed address's peer class without an identity";
          return false;
        }
        class_of_identity.emplace(found->second, c);
      }
      const uint32_t identity =
          found != identity_of_class_.end() ? found->second : identity_for_new_class(c);
      out[f].push_back(Address{internal::ToU128(ip), identity, &pod.key});
      touched_identities.insert(identity);
      if (is_next) identity_gains[identity].push_back(pod.key);
    }
    return true;
  };

  PodDelta out;
  out.next = next_engine;
  TakeSpareDelta(&out.delta);
  // Target classes new to the node's tables, each with its table's id: the lowest unused
  // (tombstone) id of `installed`, else appended (np/lower_align.h).
  std::vector<std::pair<uint32_t, uint32_t>> new_tables;  // target class, table id
  uint32_t unused_table = 0, appended_table = static_cast<uint32_t>(installed.tables_size());
  auto table_for_new_target = [&](uint32_t target) {
    for (const auto& [t, id] : new_tables) {
      if (t == target) return id;
    }
    while (unused_table < table_target_.size() &&
           (table_endpoints_[unused_table] != 0 || table_target_[unused_table] != kNone ||
            !IsTombstone(installed.tables(unused_table)))) {
      ++unused_table;
    }
    const uint32_t id = unused_table < table_target_.size() ? unused_table++ : appended_table++;
    new_tables.emplace_back(target, id);
    return id;
  };
  // Endpoints, in key order.
  struct EndpointChange {
    int begin, end;
    std::optional<ir::Endpoint> endpoint;
    uint32_t pod;  // the endpoint's pod id in `next`
  };
  std::vector<std::pair<std::string, EndpointChange>> endpoint_changes;
  for (const std::string& key : keys) {
    std::optional<uint32_t> old_id = LivePodId(prev, key), new_id = LivePodId(next, key);
    if (old_id && !addresses(prev, *old_id, false, removed)) return refuse("?");
    if (new_id && !addresses(next, *new_id, true, added)) return refuse("?");
    const internal::PodState* pod = new_id   ? next.pods[*new_id].state.get()
                                    : old_id ? prev.pods[*old_id].state.get()
                                             : nullptr;
    if (pod == nullptr) continue;  // neither live (e.g. left out of networking both times)
    auto [pos, present] = EndpointPosition(installed, pod->namespace_name, pod->name);
    std::optional<ir::Endpoint> endpoint;
    if (new_id && next.OnNode(*pod)) {
      ir::Endpoint e;
      e.set_namespace_(pod->namespace_name);
      e.set_name(pod->name);
      for (const IpAddress& ip : pod->ips) e.add_ips(ip.ToString());
      uint32_t target = next.records[*new_id].target;
      if (target != kNone) {
        auto t = table_of_target_.find(target);
        e.set_selected(true);
        e.set_table(t != table_of_target_.end() ? t->second : table_for_new_target(target));
      }
      endpoint = std::move(e);
    }
    std::string sort_key = SortKey(pod->namespace_name, pod->name);
    if (present) {
      const ir::Endpoint& old = installed.endpoints(pos);
      if (endpoint && google::protobuf::util::MessageDifferencer::Equals(old, *endpoint)) {
        // The same endpoint, maybe under a new pod id (an update can move the pod's slot).
        if (pos < static_cast<int>(endpoint_pod_.size()) && endpoint_pod_[pos] != *new_id) {
          out.endpoint_pod_moves.emplace_back(pos, *new_id);
        }
        continue;
      }
      if (old.selected()) out.endpoints_out.emplace_back(old.table(), sort_key);
    }
    if (!present && !endpoint) continue;
    if (endpoint && endpoint->selected())
      out.endpoints_in.emplace_back(endpoint->table(), sort_key);
    endpoint_changes.push_back({sort_key, EndpointChange{pos, pos + (present ? 1 : 0),
                                                         std::move(endpoint),
                                                         new_id ? *new_id : kNone}});
  }
  // Tables whose last endpoint leaves become tombstones (np/lower_align.h).
  std::vector<uint32_t> retired;
  auto find_retired = [&]() {
    retired.clear();
    std::map<uint32_t, int64_t> change;
    for (const auto& [t, k] : out.endpoints_out) change[t]--;
    for (const auto& [t, k] : out.endpoints_in) change[t]++;
    for (const auto& [t, c] : change) {
      if (t < table_endpoints_.size() && table_endpoints_[t] + c <= 0) retired.push_back(t);
    }
  };
  find_retired();
  if (!new_tables.empty() && !retired.empty()) {
    const std::map<uint32_t, uint32_t> renumber =
        TakeRetiredIds(retired, out.endpoints_out, out.endpoints_in, &new_tables);
    if (!renumber.empty()) {
      // Only new tables' provisional ids are renumbered: no live table has one.
      auto renumbered = [&](uint32_t table) {
        auto it = renumber.find(table);
        return it != renumber.end() ? it->second : table;
      };
      for (auto& [table, key] : out.endpoints_in) table = renumbered(table);
      for (auto& [sort_key, change] : endpoint_changes) {
        if (change.endpoint && change.endpoint->selected()) {
          change.endpoint->set_table(renumbered(change.endpoint->table()));
        }
      }
      find_retired();
    }
  }
  // The other tables: the same engine tables, else lowered again (a pod event that makes a
  // new peer class rebuilds the tables of the policies its selectors are in). O(tables), no
  // pass over pods.
  std::vector<uint32_t> relowered;
  // Retired, or taken by a new table (TakeRetiredIds): lowered as neither.
  std::vector<uint32_t> replaced = retired;
  for (const auto& [target, id] : new_tables) {
    if (id < table_target_.size()) replaced.push_back(id);
  }
  std::sort(replaced.begin(), replaced.end());
  for (size_t t = 0, r = 0; t < table_target_.size(); ++t) {
    if (r < replaced.size() && replaced[r] == t) {
      ++r;
      continue;
    }
    uint32_t target = table_target_[t];
    // A table no endpoint names (an aligned program's tombstone, np/lower_align.h) stays
    // unnamed: no endpoint of the delta can take it (table_of_target_ does not know it).
    if (target == kNone && table_endpoints_[t] == 0) continue;
    if (target == kNone || target >= next.target_classes.size() || table_source_[t] == nullptr ||
        next.target_classes[target].table == nullptr) {
      return refuse("a table without its engine table");
    }
    if (next.target_classes[target].table != table_source_[t]) {
      relowered.push_back(static_cast<uint32_t>(t));
    }
  }
  for (auto& [sort_key, change] : endpoint_changes) {
    auto* edits = out.delta.mutable_endpoints();
    if (!edits->empty() && edits->rbegin()->end() == static_cast<uint32_t>(change.begin)) {
      ir::EndpointSliceEdit& last = *edits->rbegin();
      last.set_end(change.end);
      if (change.endpoint) {
        *last.add_endpoints() = std::move(*change.endpoint);
        out.endpoint_pods.push_back(change.pod);
      }
      continue;
    }
    ir::EndpointSliceEdit* edit = edits->Add();
    edit->set_begin(change.begin);
    edit->set_end(change.end);
    if (change.endpoint) {
      *edit->add_endpoints() = std::move(*change.endpoint);
      out.endpoint_pods.push_back(change.pod);
    }
  }

  // Ranges: around each changed address, the slice from the range before the one holding it
  // to the range after, re-emitted as LowerToIr emits it: the atoms' addresses with each pod
  // address carved out. The slice's ends are boundaries in both programs (an atom's start, or
  // an unchanged pod's address or the address after it), so the rest is untouched.
  std::map<uint32_t, int64_t> range_counts, external_counts;
  for (int f = 0; f < 2; ++f) {
    if (removed[f].empty() && added[f].empty()) continue;
    const Ranges& ranges = f == 0 ? installed.ipv4() : installed.ipv6();
    const internal::AtomTable& atoms = *next.atoms[f];
    std::vector<std::pair<int, int>> windows;
    for (const auto* list : {&removed[f], &added[f]}) {
      for (const Address& a : *list) {
        int i = RangeHolding(ranges, a.address);
        windows.emplace_back(std::max(0, i - 1), std::min(ranges.size(), i + 2));
      }
    }
    std::sort(windows.begin(), windows.end());
    std::vector<std::pair<int, int>> slices;
    for (const auto& w : windows) {
      if (!slices.empty() && w.first <= slices.back().second) {
        slices.back().second = std::max(slices.back().second, w.second);
      } else {
        slices.push_back(w);
      }
    }
    for (const auto& [begin, end] : slices) {
      const U128 span_first = internal::BytesValue(ranges[begin].first());
      const U128 span_last = internal::BytesValue(ranges[end - 1].last());
      std::vector<Address> pods;
      for (int i = begin; i < end; ++i) {
        const ir::AddressRange& r = ranges[i];
        range_counts[r.identity()]--;
        if (r.pod().empty()) {
          external_counts[r.identity()]--;
        } else if (!std::binary_search(keys.begin(), keys.end(), r.pod())) {
          pods.push_back(Address{internal::BytesValue(r.first()), r.identity(), &r.pod()});
        }
      }
      for (const Address& a : added[f]) {
        if (a.address >= span_first && a.address <= span_last) pods.push_back(a);
      }
      std::sort(pods.begin(), pods.end(),
                [](const Address& a, const Address& b) { return a.address < b.address; });
      for (size_t i = 1; i < pods.size(); ++i) {
        if (pods[i].address == pods[i - 1].address) return refuse("two pods at one address");
      }
      ir::RangeSliceEdit* edit = f == 0 ? out.delta.add_ipv4() : out.delta.add_ipv6();
      edit->set_begin(begin);
      edit->set_end(end);
      // The installed range at or after the last one emitted: a range the slice keeps as it
      // was (its neighbours of a changed address, mostly) keeps its prefixes, copied rather
      // than computed again (an IPv6 gap between pods is dozens of prefixes).
      int same = begin;
      auto emit = [&](U128 first, U128 last, uint32_t identity, const std::string& pod) {
        ir::AddressRange* r = edit->add_ranges();
        r->set_first(internal::AddressBytes(first, f));
        r->set_last(internal::AddressBytes(last, f));
        r->set_identity(identity);
        r->set_pod(pod);
        while (same < end && internal::BytesValue(ranges[same].first()) < first) ++same;
        if (same < end && ranges[same].first() == r->first() && ranges[same].last() == r->last()) {
          *r->mutable_cidrs() = ranges[same].cidrs();
        } else {
          for (std::string& cidr : internal::ToCidrs(first, last, f)) r->add_cidrs(std::move(cidr));
        }
        range_counts[identity]++;
        if (pod.empty()) external_counts[identity]++;
      };
      size_t next_pod = 0;
      for (size_t ai = atoms.Find(span_first);
           ai < atoms.starts.size() && atoms.starts[ai] <= span_last; ++ai) {
        U128 start = std::max(atoms.starts[ai], span_first);
        U128 atom_end =
            ai + 1 < atoms.starts.size() ? atoms.starts[ai + 1] - 1 : internal::FamilyMax(f);
        U128 stop = std::min(atom_end, span_last);
        auto found = identity_of_class_.find(atoms.peer_class[ai]);
        std::optional<uint32_t> atom_identity;
        if (found != identity_of_class_.end()) atom_identity = found->second;
        U128 cursor = start;
        bool open = true;
        while (next_pod < pods.size() && pods[next_pod].address <= stop) {
          const Address& pa = pods[next_pod++];
          if (pa.address > cursor) {
            if (!atom_identity) return refuse("an atom without an identity");
            emit(cursor, pa.address - 1, *atom_identity, "");
          }
          emit(pa.address, pa.address, pa.identity, *pa.pod);
          if (pa.address == stop) {
            open = false;
            break;
          }
          cursor = pa.address + 1;
        }
        if (open) {
          if (!atom_identity) return refuse("an atom without an identity");
          emit(cursor, stop, *atom_identity, "");
        }
      }
      if (next_pod != pods.size()) return refuse("a pod outside its span");  // cannot happen
    }
  }
  // Identities: one whose last address leaves becomes unused (np/lower_align.h's tombstone:
  // its pods emptied below, and out of every peer set once the tables naming its class are
  // lowered again); none may gain or lose external addresses.
  const int installed_identities = installed.identities_size();
  ClassIdentities retired_identities;
  for (const auto& [id, change] : range_counts) {
    if (change == 0) continue;
    const int64_t before = id < range_count_.size() ? range_count_[id] : 0;
    if (before + change <= 0) {
      // Only a pod class's identity can go: an atom's keeps its external addresses.
      auto c = class_of_identity.find(id);
      if (c == class_of_identity.end() || external_count_[id] != 0) {
        return refuse("an identity loses its last address");
      }
      retired_identities.emplace_back(c->second, id);
    }
    out.range_counts.emplace_back(id, change);
  }
  for (const auto& [id, change] : external_counts) {
    if (change == 0) continue;
    if (static_cast<int>(id) >= installed_identities ||
        (external_count_[id] + change > 0) != installed.identities(id).external()) {
      return refuse("an identity gains or loses its external addresses");
    }
    out.external_counts.emplace_back(id, change);
  }
  if (!new_identities.empty() || !retired_identities.empty()) {
    std::vector<uint32_t> by_class = numbering_->by_class, classes;
    for (const auto& [c, id] : retired_identities) {
      by_class[c] = internal::IdentityNumbering::kNoIdentity;
      classes.push_back(c);
    }
    for (const auto& [c, id] : new_identities) classes.push_back(c);
    std::shared_ptr<internal::IdentityNumbering> numbering =
        NumberingAfter(numbering_->live, std::move(by_class), new_identities, retired_identities,
                       identity_ids.count());
    if (numbering == nullptr) return refuse("unused identities past the compaction threshold");
    AddTablesNaming(next, classes, replaced, &relowered);
    out.numbering = std::move(numbering);
    out.identities_added = std::move(new_identities);
    out.identities_retired = std::move(retired_identities);
  }
  if (!new_tables.empty() || !retired.empty() || !relowered.empty()) {
    const internal::IdentityNumbering& numbering =
        out.numbering != nullptr ? *out.numbering : *numbering_;
    if (std::optional<std::string> r =
            EditTables(next, installed, numbering, new_tables, relowered, retired, &out)) {
      return refuse(*r);
    }
  }
  // Each touched identity's pods; an appended identity whole, in id order (the set's).
  EmitIdentityPods(installed, touched_identities, keys, identity_gains, &out.delta);
  return out;
}

void PodDeltaLowering::AddTablesNaming(const EngineState& next,
                                       const std::vector<uint32_t>& classes,
                                       const std::vector<uint32_t>& retired,
                                       std::vector<uint32_t>* tables) const {
  // As TablesNaming::Names decides, from the index: only pods changed since the indexed
  // snapshot, so every table that is not lowered again has the same policies.
  std::vector<uint32_t> found = tier_tables_;
  bool named = false;
  for (uint32_t c : classes) {
    const internal::PeerClassKey& key = next.peer_classes[c];
    for (uint32_t part : {key.label_part, key.ipblock_part}) {
      for (uint32_t selector : next.IdList(part)) {
        auto it = tables_by_selector_.find(selector);
        if (it != tables_by_selector_.end()) {
          found.insert(found.end(), it->second.begin(), it->second.end());
        }
      }
    }
    named = named || key.named_map != 0;
  }
  if (named) found.insert(found.end(), named_port_tables_.begin(), named_port_tables_.end());
  std::sort(found.begin(), found.end());
  found.erase(std::unique(found.begin(), found.end()), found.end());
  std::vector<uint32_t> skip = *tables;
  skip.insert(skip.end(), retired.begin(), retired.end());
  std::sort(skip.begin(), skip.end());
  for (uint32_t t : found) {
    if (table_target_[t] != kNone && !std::binary_search(skip.begin(), skip.end(), t)) {
      tables->push_back(t);
    }
  }
  std::sort(tables->begin(), tables->end());
}

void PodDeltaLowering::IndexTableNames(const EngineState& s) {
  tables_by_selector_.clear();
  tier_tables_.clear();
  named_port_tables_.clear();
  for (uint32_t t = 0; t < table_target_.size(); ++t) {
    if (table_target_[t] == kNone) continue;
    const internal::TargetClassKey& key = s.target_classes[table_target_[t]].key;
    if (key.tier_policies != kNone && !s.IdList(key.tier_policies).empty()) {
      tier_tables_.push_back(t);
    }
    bool named = false;
    for (uint32_t p : s.IdList(key.policies)) {
      const internal::CompiledPolicy* policy = s.policies[p].get();
      if (policy == nullptr) continue;
      named = named || policy->has_egress_named_ports;
      for (int d = 0; d < 2; ++d) {
        for (const internal::CompiledRule& rule : policy->rules[d]) {
          for (uint32_t selector : rule.selectors) {
            std::vector<uint32_t>& list = tables_by_selector_[selector];
            if (list.empty() || list.back() != t) list.push_back(t);
          }
        }
      }
    }
    if (named) named_port_tables_.push_back(t);
  }
}

std::optional<std::string> PodDeltaLowering::EditTables(
    const internal::EngineState& next, const ir::CompiledPolicy& installed,
    const internal::IdentityNumbering& numbering,
    const std::vector<std::pair<uint32_t, uint32_t>>& added, const std::vector<uint32_t>& relowered,
    const std::vector<uint32_t>& retired, PodDelta* out) const {
  const EngineState& prev = EngineAccess::State(*snapshot_);
  if (!added.empty() || !relowered.empty()) {
    // The tables' rules are numbered by class with the installed identities: each class
    // an identity stands for must be the same class now (Lower checked the new ones').
    const std::vector<uint32_t>& by_class = numbering_->by_class;
    for (size_t c = 0; c < by_class.size(); ++c) {
      if (by_class[c] == internal::IdentityNumbering::kNoIdentity) continue;
      if (c >= prev.peer_classes.size() || c >= next.peer_classes.size() ||
          !(prev.peer_classes[c] == next.peer_classes[c])) {
        return "a peer class id that means another class now";
      }
    }
  }
  auto tables = std::make_shared<PodDelta::Tables>();
  tables->slots_only = true;
  size_t count = table_target_.size();
  for (const auto& [t, id] : added) count = std::max<size_t>(count, id + 1);
  tables->count = count;
  // The slots this delta sets, by id (Commit applies them; the index is not copied).
  std::map<uint32_t, PodDelta::Tables::Slot> slots;
  auto set_slot = [&](uint32_t id, uint32_t target) {
    slots.insert_or_assign(id, PodDelta::Tables::Slot{
                                   id, target,
                                   target == kNone ? nullptr : next.target_classes[target].table});
  };

  TableEdits edits(installed, peer_set_by_content_);
  for (uint32_t id : retired) {
    ir::Table tombstone;
    tombstone.set_id(id);
    edits.Replace(std::move(tombstone));
    set_slot(id, kNone);
  }
  // Tables whose engine table was rebuilt, or whose rules may name a class that gained or
  // lost its identity: lowered with their sets by content first. An installed set whose rules
  // all sit in these tables, at the same places, and all get one new content no other set
  // has, takes that content in place (the set of a relabel's class gains or drops its
  // identity, as np/lower_align.h keeps a changed set's id): those tables then stay as they
  // are, and a backend edits set members, not rules. The others are sent when they differ.
  std::vector<PeerSetContent> contents;
  absl::flat_hash_map<PeerSetContent, uint32_t> content_index;
  internal::TableLowering by_content(next, options_.flatten_tiers, numbering,
                                     [&](bool all, std::vector<uint32_t> ids) {
                                       auto [it, fresh] = content_index.try_emplace(
                                           PeerSetContent(all, std::move(ids)),
                                           static_cast<uint32_t>(contents.size()));
                                       if (fresh) contents.push_back(it->first);
                                       return it->second;
                                     });
  std::vector<ir::Table> lowered(relowered.size());
  // Per installed set: the content its rules get (kNone: more than one, or a table whose
  // rules moved), and how many rules.
  absl::flat_hash_map<uint32_t, std::pair<uint32_t, int64_t>> becomes;
  for (size_t k = 0; k < relowered.size(); ++k) {
    const uint32_t id = relowered[k], t = table_target_[id];
    lowered[k].set_id(id);
    by_content.Lower(t, &lowered[k]);
    set_slot(id, t);
    const bool same_places = SameButPeerSets(lowered[k], installed.tables(id));
    std::vector<uint32_t> now;
    ForEachPeerSetOf(lowered[k], [&](uint32_t c) { now.push_back(c); });
    size_t i = 0;
    ForEachPeerSetOf(installed.tables(id), [&](uint32_t set) {
      auto [it, fresh] = becomes.try_emplace(set, same_places ? now[i] : kNone, 0);
      if (!same_places || it->second.first != now[i]) it->second.first = kNone;
      it->second.second++;
      ++i;
    });
  }
  {
    // Rules of retired tables go with them: they need not agree.
    absl::flat_hash_map<uint32_t, int64_t> leaving;
    for (uint32_t id : retired) ForEachPeerSetOf(installed.tables(id), [&](uint32_t set) {
      leaving[set]++;
    });
    absl::flat_hash_map<uint32_t, uint32_t> candidates;  // content -> set, kNone: several
    for (const auto& [set, change] : becomes) {
      const auto& [c, rules] = change;
      auto gone = leaving.find(set);
      const int64_t others = peer_set_refs_[set] - (gone != leaving.end() ? gone->second : 0);
      if (c == kNone || rules != others || edits.Known(contents[c])) continue;
      auto [it, fresh] = candidates.try_emplace(c, set);
      if (!fresh) it->second = kNone;
    }
    std::vector<std::pair<uint32_t, uint32_t>> rewrites;  // set, content
    for (const auto& [c, set] : candidates) {
      if (set != kNone) rewrites.emplace_back(set, c);
    }
    std::sort(rewrites.begin(), rewrites.end());  // hash order must not number the delta
    for (const auto& [set, c] : rewrites) edits.Rewrite(set, contents[c]);
  }
  for (ir::Table& table : lowered) {
    RenumberPeerSets(&table, [&](uint32_t c) { return edits.Intern(contents[c]); });
    if (google::protobuf::util::MessageDifferencer::Equals(table, installed.tables(table.id()))) {
      continue;
    }
    edits.Replace(std::move(table));
  }
  internal::TableLowering lowering(
      next, options_.flatten_tiers, numbering,
      [&](bool all, std::vector<uint32_t> ids) { return edits.Intern(all, std::move(ids)); });
  for (const auto& [t, id] : added) {
    if (t >= next.target_classes.size() || next.target_classes[t].table == nullptr) {
      return "a target class without its engine table";
    }
    ir::Table table;
    table.set_id(id);
    lowering.Lower(t, &table);
    edits.Replace(std::move(table));
    // (A retired table's id taken by the new table, TakeRetiredIds: its class is gone.)
    set_slot(id, t);
  }
  for (auto& [id, slot] : slots) tables->slots.push_back(std::move(slot));
  // AlignNumbering's compaction threshold: past it the caller lowers whole, which compacts.
  int64_t live = static_cast<int64_t>(added.size()) - static_cast<int64_t>(retired.size());
  for (int64_t n : table_endpoints_) live += n > 0 ? 1 : 0;
  if (PastCompaction(static_cast<int64_t>(count), live)) {
    return "unused tables past the compaction threshold";
  }
  if (const char* r = edits.Finish(peer_set_refs_, &out->delta, &tables->peer_sets, &tables->refs,
                                   &tables->dropped, &tables->added)) {
    return std::string(r);
  }
  out->tables = std::move(tables);
  return std::nullopt;
}

std::optional<std::string> PodDeltaLowering::SplitIdentities(
    const EngineState& next, const ir::CompiledPolicy& installed,
    std::vector<std::pair<uint32_t, uint32_t>>* pairs, std::vector<uint32_t>* touched_classes,
    PodDelta* out) const {
  constexpr uint32_t kNoIdentity = internal::IdentityNumbering::kNoIdentity;
  const EngineState& prev = EngineAccess::State(*snapshot_);
  const std::vector<uint32_t>& old_by_class = numbering_->by_class;
  auto old_identity = [&](uint32_t c) {
    return c < old_by_class.size() ? old_by_class[c] : kNoIdentity;
  };
  std::vector<uint32_t> by_class(next.peer_classes.size(), kNoIdentity);
  std::vector<bool> carried(next.peer_classes.size(), false);
  std::vector<bool> taken(installed.identities_size(), false);
  // Atoms keep their identities (a delta cannot change an identity's `external`); their
  // classes map one to one (LowerPolicyChange checked). An atom pods cover whole carries no
  // external address: its class may be a pod's, numbered by the pods' votes below.
  for (int f = 0; f < 2; ++f) {
    const std::vector<uint32_t>& was = prev.atoms[f]->peer_class;
    const std::vector<uint32_t>& now = next.atoms[f]->peer_class;
    for (size_t i = 0; i < was.size(); ++i) {
      const uint32_t id = old_identity(was[i]);
      if (was[i] >= kSharedPeer || id == kNoIdentity || external_count_[id] == 0) continue;
      pairs->emplace_back(was[i], now[i]);
      by_class[now[i]] = id;
      carried[now[i]] = true;
      taken[id] = true;
    }
  }
  // Per pod and family with addresses, a vote for (class before, class now): how
  // np/lower_align.h numbers identities (a pod's addresses of one family count once). The
  // records only, a flat array: a pod's state is read below only when its identity changes.
  // Most classes go to one class now: their votes are counted in arrays, the rest hashed.
  std::vector<uint32_t> first_now(prev.peer_classes.size(), kNone);
  std::vector<int64_t> first_votes(prev.peer_classes.size(), 0);
  absl::flat_hash_map<std::pair<uint32_t, uint32_t>, int64_t> other_votes;  // (before, now)
  for (uint32_t p = 0; p < prev.pods.size(); ++p) {
    if (prev.pods[p].state == nullptr) continue;
    for (int f = 0; f < 2; ++f) {
      const uint32_t was = prev.records[p].peer[f], now = next.records[p].peer[f];
      if (was >= kSharedPeer || now >= kSharedPeer) {  // no address, or a shared one: it stays
        if (was != now) return "a shared address's class changes";
        continue;
      }
      if (old_identity(was) == kNoIdentity || now >= by_class.size() ||
          was >= first_now.size()) {
        return "an installed address's peer class without an identity";
      }
      carried[now] = true;
      if (first_now[was] == kNone) first_now[was] = now;
      if (first_now[was] == now) {
        first_votes[was]++;
      } else {
        other_votes[{was, now}]++;
      }
    }
  }
  std::vector<std::tuple<int64_t, uint32_t, uint32_t>> ranked;  // -votes, identity, class
  for (uint32_t was = 0; was < first_now.size(); ++was) {
    if (first_now[was] == kNone) continue;
    pairs->emplace_back(was, first_now[was]);
    ranked.emplace_back(-first_votes[was], old_identity(was), first_now[was]);
  }
  for (const auto& [key, n] : other_votes) {
    pairs->emplace_back(key.first, key.second);
    ranked.emplace_back(-n, old_identity(key.first), key.second);
  }
  std::sort(pairs->begin(), pairs->end());
  pairs->erase(std::unique(pairs->begin(), pairs->end()), pairs->end());
  std::sort(ranked.begin(), ranked.end());
  for (const auto& [n, id, c] : ranked) {
    if (taken[id] || by_class[c] != kNoIdentity) continue;
    by_class[c] = id;
    taken[id] = true;
  }
  for (const auto& [c, id] : identity_of_class_) {
    if (c >= kSharedPeer && id < taken.size()) taken[id] = true;
  }
  // The other classes get identities as Lower's new classes do; identities left without a
  // class are retired (tombstones).
  ClassIdentities came, went;
  IdentityIds ids(unused_identities_, static_cast<uint32_t>(installed.identities_size()));
  for (uint32_t c = 0; c < by_class.size(); ++c) {
    if (carried[c] && by_class[c] == kNoIdentity) came.emplace_back(c, ids.Take());
  }
  for (uint32_t c = 0; c < old_by_class.size(); ++c) {
    const uint32_t id = old_by_class[c];
    if (id == kNoIdentity || id >= taken.size() || taken[id]) continue;
    if (external_count_[id] != 0) return "an identity loses its external addresses";
    went.emplace_back(c, id);
    taken[id] = true;
  }
  std::shared_ptr<internal::IdentityNumbering> numbering =
      NumberingAfter(numbering_->live, std::move(by_class), came, went, ids.count());
  if (numbering == nullptr) return "unused identities past the compaction threshold";
  const std::vector<uint32_t>& identity_of = numbering->by_class;

  // Addresses whose identity changes: their ranges re-pointed (pod ranges are one address).
  std::vector<std::pair<int, uint32_t>> repointed[2];  // range index, identity
  std::vector<std::string> moved;  // sorted before EmitIdentityPods
  std::set<uint32_t> touched;
  std::map<uint32_t, int64_t> range_counts;
  std::map<uint32_t, std::vector<std::string>> gains;  // a moved pod: its identities now
  for (uint32_t p = 0; p < prev.pods.size(); ++p) {
    if (prev.pods[p].state == nullptr) continue;
    const internal::PodRecord& was_record = prev.records[p];
    const internal::PodRecord& now_record = next.records[p];
    auto changes = [&](int f) {
      return was_record.peer[f] < kSharedPeer &&
             identity_of[now_record.peer[f]] != old_identity(was_record.peer[f]);
    };
    if (!changes(0) && !changes(1)) continue;
    const internal::PodState& pod = *prev.pods[p].state;
    moved.push_back(pod.key);
    for (size_t k = 0; k < pod.ips.size(); ++k) {
      const IpAddress& ip = pod.ips[k];
      const int f = ip.is_v4() ? 0 : 1;
      if (was_record.peer[f] >= kSharedPeer ||
          std::find(pod.ips.begin(), pod.ips.begin() + k, ip) != pod.ips.begin() + k) {
        continue;  // a shared address stays; an address listed twice has one range
      }
      const uint32_t was = old_identity(was_record.peer[f]), now = identity_of[now_record.peer[f]];
      gains[now].push_back(pod.key);
      if (now == was) continue;
      const Ranges& ranges = f == 0 ? installed.ipv4() : installed.ipv6();
      const U128 address = internal::ToU128(ip);
      const int i = RangeHolding(ranges, address);
      const ir::AddressRange& r = ranges[i];
      if (r.pod() != pod.key || internal::BytesValue(r.first()) != address || r.identity() != was) {
        return "an address the ranges do not carry as its pod's";
      }
      repointed[f].emplace_back(i, now);
      range_counts[was]--;
      range_counts[now]++;
      touched.insert(was);
      touched.insert(now);
    }
  }
  for (int f = 0; f < 2; ++f) {
    std::sort(repointed[f].begin(), repointed[f].end());
    repointed[f].erase(std::unique(repointed[f].begin(), repointed[f].end()), repointed[f].end());
    const Ranges& ranges = f == 0 ? installed.ipv4() : installed.ipv6();
    ir::RangeSliceEdit* edit = nullptr;
    for (const auto& [i, id] : repointed[f]) {
      if (edit == nullptr || edit->end() != static_cast<uint32_t>(i)) {
        edit = f == 0 ? out->delta.add_ipv4() : out->delta.add_ipv6();
        edit->set_begin(i);
      }
      edit->set_end(i + 1);
      ir::AddressRange* r = edit->add_ranges();
      *r = ranges[i];
      r->set_identity(id);
    }
  }
  for (const auto& [id, change] : range_counts) {
    if (change != 0) out->range_counts.emplace_back(id, change);
  }
  std::sort(moved.begin(), moved.end());
  moved.erase(std::unique(moved.begin(), moved.end()), moved.end());
  EmitIdentityPods(installed, touched, moved, gains, &out->delta);
  for (uint32_t c = 0; c < identity_of.size(); ++c) {
    if (identity_of[c] != kNoIdentity && touched.count(identity_of[c]) != 0) {
      touched_classes->push_back(c);
    }
  }
  out->numbering = std::move(numbering);
  out->identities_added = std::move(came);
  out->identities_retired = std::move(went);
  return std::nullopt;
}

std::optional<PodDelta> PodDeltaLowering::LowerPolicyChange(
    std::shared_ptr<const Engine> next_engine, const ir::CompiledPolicy& installed,
    std::string* why) const {
  std::string reason_storage;
  std::string& reason = why != nullptr ? *why : reason_storage;
  reason.clear();
  auto refuse = [&](absl::string_view r) -> std::optional<PodDelta> {
    reason = std::string(r);
    return std::nullopt;
  };
  if (snapshot_ == nullptr || next_engine == nullptr || numbering_ == nullptr) {
    return refuse("no snapshot");
  }
  const EngineState& prev = EngineAccess::State(*snapshot_);
  const EngineState& next = EngineAccess::State(*next_engine);
  if (prev.options.node_name != next.options.node_name ||
      prev.options.evaluation.always_allow_self != next.options.evaluation.always_allow_self ||
      installed.identities_size() != static_cast<int>(range_count_.size()) ||
      installed.tables_size() != static_cast<int>(table_target_.size()) ||
      installed.peer_sets_size() != static_cast<int>(peer_set_refs_.size())) {
    return refuse("options or the program's shape differ");
  }
  // The whole lowering's refusal (np/lower.h, Errors): O(tier rules).
  if (!internal::RefuseUnenforceableDomainNames(next).ok()) {
    return refuse("a domainNames peer in a Deny or Pass tier rule");
  }

  // The same atoms (ipBlock and node-address cuts) and the same pods with the same addresses.
  // Every address keeps its identity when the classes addresses carried map one to one to
  // those they carry now (a new selector that matches whole classes renames them): array
  // reads, O(pods + atoms + classes), no hashing. A selector that tells apart pods of one
  // class splits it (one gone merges two): `split`, then SplitIdentities numbers them.
  std::vector<uint32_t> forward(prev.peer_classes.size(), kNone);
  std::vector<uint32_t> backward(next.peer_classes.size(), kNone);
  auto same_identity = [&](uint32_t a, uint32_t b) {
    if (a >= kSharedPeer || b >= kSharedPeer) return a == b;
    if (a >= forward.size() || b >= backward.size()) return false;
    if (forward[a] == kNone && backward[b] == kNone) {
      forward[a] = b;
      backward[b] = a;
      return true;
    }
    return forward[a] == b && backward[b] == a;
  };
  for (int f = 0; f < 2; ++f) {
    const internal::AtomTable& a = *prev.atoms[f];
    const internal::AtomTable& b = *next.atoms[f];
    if (&a != &b && a.starts != b.starts) {
      return refuse("the address atoms differ (an ipBlock or node address changed)");
    }
    for (size_t i = 0; i < a.peer_class.size(); ++i) {
      if (!same_identity(a.peer_class[i], b.peer_class[i])) {
        return refuse("an address atom's class splits or merges (identities would change)");
      }
    }
  }
  bool split = false;
  if (prev.pods.size() != next.pods.size()) return refuse("the pods differ");
  for (size_t p = 0; p < prev.pods.size(); ++p) {
    const std::shared_ptr<const internal::PodState>& a = prev.pods[p].state;
    const std::shared_ptr<const internal::PodState>& b = next.pods[p].state;
    if (a != b && (a == nullptr || b == nullptr || a->key != b->key || a->ips != b->ips ||
                   a->node_name != b->node_name)) {
      return refuse("the pods differ");
    }
    if (a == nullptr) continue;
    for (int f = 0; f < 2; ++f) {  // the families addresses carry ([2] is no address's)
      split = split || !same_identity(prev.records[p].peer[f], next.records[p].peer[f]);
    }
  }
  // The identities by the classes of `next`; whether the classes are the very same (then an
  // engine table that is the same object lowers to the same rules).
  std::shared_ptr<const internal::IdentityNumbering> numbering = numbering_;
  bool same_classes = true;
  // Classes renamed only because selectors new to `next` match them (a policy's new peer),
  // or selectors gone from it no longer do, each to an id no address's class had: every live
  // selector matches the same addresses, so an engine table the engine kept (the same object)
  // lowers to the same rules; a table listing a renamed class must have been rebuilt, or the
  // engine's own verdicts for its addresses would have changed. (A namespace relabel changes
  // what existing selectors match: then every table is lowered again.) Tier rules are
  // lowered from selectors, not from the table: tables with tier policies need the very same
  // classes.
  bool fresh_renames = true;
  auto selector_live = [](const EngineState& s, uint32_t id) {
    return id < s.selectors.size() && s.selectors[id] != nullptr;
  };
  auto only_selectors_came_or_went = [&](const internal::PeerClassKey& a,
                                         const internal::PeerClassKey& b) {
    if (a.named_map != b.named_map ||
        prev.IdList(a.ipblock_part) != next.IdList(b.ipblock_part)) {
      return false;
    }
    const std::vector<uint32_t>& was = prev.IdList(a.label_part);
    const std::vector<uint32_t>& now = next.IdList(b.label_part);
    std::vector<uint32_t> came, went;
    std::set_difference(now.begin(), now.end(), was.begin(), was.end(), std::back_inserter(came));
    std::set_difference(was.begin(), was.end(), now.begin(), now.end(), std::back_inserter(went));
    for (uint32_t id : came) {
      if (selector_live(prev, id)) return false;
    }
    for (uint32_t id : went) {
      if (selector_live(next, id)) return false;
    }
    return true;
  };
  PodDelta out;
  out.next = next_engine;
  TakeSpareDelta(&out.delta);
  // (class before, class now) of the addresses carrying an identity.
  std::vector<std::pair<uint32_t, uint32_t>> pairs;
  // Split: the classes whose identity gains or loses addresses; the tables that may name them
  // are lowered again.
  std::vector<uint32_t> touched_classes;
  const std::vector<uint32_t>& by_class = numbering_->by_class;
  if (split) {
    if (std::optional<std::string> r = SplitIdentities(next, installed, &pairs, &touched_classes,
                                                       &out)) {
      return refuse(*r);
    }
    numbering = out.numbering;
  } else {
    for (size_t c = 0; c < by_class.size(); ++c) {
      if (by_class[c] == internal::IdentityNumbering::kNoIdentity) continue;
      if (forward[c] == kNone) return refuse("an identity's class carries no address");
      pairs.emplace_back(static_cast<uint32_t>(c), forward[c]);
    }
  }
  same_classes = !split;
  for (const auto& [was, now] : pairs) {
    if (!same_classes) break;
    same_classes = was == now && prev.peer_classes[was] == next.peer_classes[now];
  }
  if (!same_classes) {
    // A class id that meant another class before may mean other addresses in a kept engine
    // table; not so when its own addresses keep it (a merge into it: `pairs` holds (now,
    // now), and the tables naming the merged identities are lowered again, TablesNaming).
    auto keeps_its_id = [&](uint32_t c) {
      return split && std::binary_search(pairs.begin(), pairs.end(), std::make_pair(c, c));
    };
    for (const auto& [was, now] : pairs) {
      if ((now != was && now < by_class.size() &&
           by_class[now] != internal::IdentityNumbering::kNoIdentity && !keeps_its_id(now)) ||
          !only_selectors_came_or_went(prev.peer_classes[was], next.peer_classes[now])) {
        fresh_renames = false;
        break;
      }
    }
  }
  if (!same_classes && !split) {
    auto renamed = std::make_shared<internal::IdentityNumbering>();
    renamed->live = numbering_->live;
    for (const auto& [was, now] : pairs) {
      if (renamed->by_class.size() <= now) {
        renamed->by_class.resize(now + 1, internal::IdentityNumbering::kNoIdentity);
      }
      renamed->by_class[now] = by_class[was];
    }
    numbering = std::move(renamed);
  }
  std::optional<TablesNaming> naming;
  if (split) naming.emplace(next, touched_classes);

  // The node's endpoints (the same pods, so the same endpoints) and their target classes
  // now; per target class, in first-endpoint order, the installed tables' votes.
  const int endpoint_count = installed.endpoints_size();
  std::vector<uint32_t> endpoint_target(endpoint_count, kNone);
  std::vector<uint32_t> targets;  // distinct target classes, by first endpoint
  std::vector<int64_t> target_endpoints;
  // Per target class id: its index in `targets`. Per selected endpoint: (target index,
  // installed table), sorted and counted below. Arrays, not a hash map and a tree: with
  // ~1,000 endpoints their inserts were a quarter of a policy event's lowering at 1,000 pods
  // (perf, bench/RESULTS.md h94).
  std::vector<uint32_t> target_index(next.target_classes.size(), kNone);
  std::vector<std::pair<uint32_t, uint32_t>> votes;
  votes.reserve(endpoint_count);
  if (endpoint_pod_.size() != static_cast<size_t>(endpoint_count)) {
    return refuse("options or the program's shape differ");
  }
  for (int i = 0; i < endpoint_count; ++i) {
    const ir::Endpoint& e = installed.endpoints(i);
    // The same pods (checked above): the endpoint's pod id in the indexed snapshot is its id
    // in `next` (no "namespace/name" built and hashed per endpoint).
    const uint32_t p = endpoint_pod_[i];
    if (p >= next.pods.size() || next.pods[p].state == nullptr) {
      return refuse("an endpoint without its pod");
    }
    const uint32_t t = next.records[p].target;
    endpoint_target[i] = t;
    if (t == kNone) continue;
    if (t >= next.target_classes.size() || next.target_classes[t].table == nullptr) {
      return refuse("a target class without its engine table");
    }
    uint32_t& index = target_index[t];
    if (index == kNone) {
      index = static_cast<uint32_t>(targets.size());
      targets.push_back(t);
      target_endpoints.push_back(0);
    }
    target_endpoints[index]++;
    if (e.selected()) votes.emplace_back(index, e.table());
  }

  // Table ids (np/lower_align.h): greedy one-to-one by votes, ties by lowest table id; the
  // rest take the lowest unused ids, then are appended.
  const uint32_t old_tables = static_cast<uint32_t>(installed.tables_size());
  std::vector<uint32_t> table_of(targets.size(), kNone);
  uint32_t new_tables = old_tables;
  {
    std::vector<std::tuple<int64_t, uint32_t, uint32_t>> ranked;  // -votes, table, target
    std::sort(votes.begin(), votes.end());
    for (size_t i = 0; i < votes.size();) {
      size_t j = i;
      while (j < votes.size() && votes[j] == votes[i]) ++j;
      ranked.emplace_back(-static_cast<int64_t>(j - i), votes[i].second, votes[i].first);
      i = j;
    }
    std::sort(ranked.begin(), ranked.end());
    std::vector<bool> taken(old_tables, false);
    for (const auto& [n, table, target] : ranked) {
      if (taken[table] || table_of[target] != kNone) continue;
      taken[table] = true;
      table_of[target] = table;
    }
    uint32_t free = 0, appended = old_tables;
    for (uint32_t& id : table_of) {
      if (id != kNone) continue;
      while (free < old_tables && taken[free]) ++free;
      if (free < old_tables) {
        taken[free] = true;
        id = free;
      } else {
        id = appended++;
      }
    }
    new_tables = appended;
  }
  if (PastCompaction(new_tables, static_cast<int64_t>(targets.size()))) {
    return refuse("unused tables past the compaction threshold");
  }

  TableEdits edits(installed, peer_set_by_content_);
  internal::TableLowering lowering(
      next, options_.flatten_tiers, *numbering,
      [&](bool all, std::vector<uint32_t> ids) { return edits.Intern(all, std::move(ids)); });

  auto tables = std::make_shared<PodDelta::Tables>();
  tables->target.assign(new_tables, kNone);
  tables->source.resize(new_tables);
  tables->endpoints.assign(new_tables, 0);
  std::vector<bool> used(old_tables, false);
  for (size_t k = 0; k < targets.size(); ++k) {
    const uint32_t id = table_of[k], t = targets[k];
    const internal::TargetClassSlot& slot = next.target_classes[t];
    tables->target[id] = t;
    tables->source[id] = slot.table;
    tables->endpoints[id] = target_endpoints[k];
    tables->of_target.emplace(t, id);
    if (id < old_tables) used[id] = true;
    // The engine's table, its key, the tier policies and (above) every class the same: the
    // lowering would be the installed table's. The policy names it lists need no reading: a
    // target class's key is interned (immutable), a policy id is never reused (an edit is a
    // new id, a delete leaves null), so the same key names the same policies as when the
    // installed table was lowered from this very engine table. Reading and sorting every
    // table's policy names (policies scattered in memory) was a third of a policy event's
    // lowering at 1,000 pods (perf, bench/RESULTS.md h94). Tier tables are still compared:
    // their ids are positions in the tier list (a recompile rebuilds each such table, but
    // the comparison is cheap next to a tier table's lowering and keeps that a check).
    const bool tier_table =
        slot.key.tier_policies != kNone && !next.IdList(slot.key.tier_policies).empty();
    if ((same_classes || (fresh_renames && !tier_table)) && id < old_tables &&
        table_target_[id] == t && table_source_[id] == slot.table &&
        prev.tier_policies == next.tier_policies && t < prev.target_classes.size() &&
        prev.target_classes[t].key == slot.key && !(naming && naming->Names(t)) &&
        (!tier_table || SamePolicies(next, slot, installed.tables(id)))) {
      continue;
    }
    ir::Table table;
    table.set_id(id);
    lowering.Lower(t, &table);
    if (id < old_tables &&
        google::protobuf::util::MessageDifferencer::Equals(table, installed.tables(id))) {
      continue;
    }
    edits.Replace(std::move(table));
  }
  for (uint32_t id = 0; id < old_tables; ++id) {
    if (used[id] || IsTombstone(installed.tables(id))) continue;
    ir::Table tombstone;
    tombstone.set_id(id);
    edits.Replace(std::move(tombstone));
  }
  if (const char* r = edits.Finish(peer_set_refs_, &out.delta, &tables->peer_sets, &tables->refs,
                                   &tables->dropped, &tables->added)) {
    return refuse(r);
  }

  // Endpoints whose table or selection changed, adjacent ones in one slice edit.
  for (int i = 0; i < endpoint_count; ++i) {
    const ir::Endpoint& e = installed.endpoints(i);
    const uint32_t t = endpoint_target[i];
    const bool selected = t != kNone;
    const uint32_t table = selected ? table_of[target_index[t]] : 0;
    if (selected == e.selected() && table == e.table()) continue;
    auto* edits = out.delta.mutable_endpoints();
    ir::EndpointSliceEdit* edit;
    if (!edits->empty() && edits->rbegin()->end() == static_cast<uint32_t>(i)) {
      edit = &*edits->rbegin();
    } else {
      edit = edits->Add();
      edit->set_begin(i);
    }
    edit->set_end(i + 1);
    ir::Endpoint* changed = edit->add_endpoints();
    *changed = e;
    changed->set_selected(selected);
    changed->set_table(table);
    out.endpoint_pods.push_back(endpoint_pod_[i]);
  }
  if (!same_classes) tables->numbering = std::move(numbering);
  out.tables = std::move(tables);
  return out;
}

void PodDeltaLowering::Commit(const PodDelta& applied) {
  if (applied.numbering != nullptr) {  // identities added or retired
    numbering_ = applied.numbering;
    for (const auto& [c, id] : applied.identities_retired) {
      identity_of_class_.erase(c);
      unused_identities_.insert(id);
    }
    for (const auto& [c, id] : applied.identities_added) {
      identity_of_class_.insert_or_assign(c, id);
      unused_identities_.erase(id);
      if (range_count_.size() <= id) {
        range_count_.resize(id + 1, 0);
        external_count_.resize(id + 1, 0);
      }
    }
  }
  if (applied.tables != nullptr) {
    const PodDelta::Tables& t = *applied.tables;
    if (t.slots_only) {
      for (const PodDelta::Tables::Slot& slot : t.slots) {
        if (slot.id >= table_target_.size()) continue;
        auto it = table_of_target_.find(table_target_[slot.id]);
        if (it != table_of_target_.end() && it->second == slot.id) table_of_target_.erase(it);
      }
      table_target_.resize(t.count, kNone);
      table_source_.resize(t.count);
      table_endpoints_.resize(t.count, 0);
      for (const PodDelta::Tables::Slot& slot : t.slots) {
        table_target_[slot.id] = slot.target;
        table_source_[slot.id] = slot.source;
        if (slot.target != kNone) table_of_target_.insert_or_assign(slot.target, slot.id);
      }
    } else {
      table_target_ = t.target;
      table_source_ = t.source;
      table_endpoints_ = t.endpoints;
      table_of_target_ = t.of_target;
    }
    peer_set_refs_.resize(t.peer_sets, 0);
    for (const auto& [set, refs] : t.refs) peer_set_refs_[set] = refs;
    for (const auto& [set, content] : t.dropped) {
      auto it = peer_set_by_content_.find(content);
      if (it != peer_set_by_content_.end() && it->second == set) peer_set_by_content_.erase(it);
    }
    for (const auto& [set, content] : t.added) peer_set_by_content_.insert_or_assign(content, set);
    if (t.numbering != nullptr) {  // renamed classes: the pod deltas' map follows
      absl::flat_hash_map<uint32_t, uint32_t> renamed;
      for (const auto& [c, id] : identity_of_class_) {
        if (c >= kSharedPeer) renamed.emplace(c, id);
      }
      for (size_t c = 0; c < t.numbering->by_class.size(); ++c) {
        if (t.numbering->by_class[c] != internal::IdentityNumbering::kNoIdentity) {
          renamed.emplace(static_cast<uint32_t>(c), t.numbering->by_class[c]);
        }
      }
      identity_of_class_ = std::move(renamed);
      numbering_ = t.numbering;
    }
  }
  for (const auto& [i, pod] : applied.endpoint_pod_moves) endpoint_pod_[i] = pod;
  if (applied.delta.endpoints_size() > 0) {  // the edits' original positions, in order
    std::vector<uint32_t> pods;
    pods.reserve(endpoint_pod_.size() + applied.endpoint_pods.size());
    size_t at = 0, k = 0;
    for (const ir::EndpointSliceEdit& edit : applied.delta.endpoints()) {
      pods.insert(pods.end(), endpoint_pod_.begin() + at, endpoint_pod_.begin() + edit.begin());
      for (int j = 0; j < edit.endpoints_size(); ++j) pods.push_back(applied.endpoint_pods[k++]);
      at = edit.end();
    }
    pods.insert(pods.end(), endpoint_pod_.begin() + at, endpoint_pod_.end());
    endpoint_pod_ = std::move(pods);
  }
  for (const auto& [id, change] : applied.range_counts) range_count_[id] += change;
  for (const auto& [id, change] : applied.external_counts) external_count_[id] += change;
  for (const auto& [t, key] : applied.endpoints_out) table_endpoints_[t]--;
  for (const auto& [t, key] : applied.endpoints_in) table_endpoints_[t]++;
  snapshot_ = applied.next;
  // Tables came, went or were lowered again (their policies may have changed). Every table
  // again, also for a pod delta's few: re-indexing only those (tried) left the next event's
  // LiveEngine::Apply 1.5 ms longer on the agent bench's node-0 move at 1,000 pods, though
  // it has no more CPU samples and no context switch; this pass reads the new snapshot's
  // policies after the backend, off the event's path (not understood; h84's RESULTS).
  if (applied.tables != nullptr) IndexTableNames(EngineAccess::State(*snapshot_));
}

}  // namespace np
