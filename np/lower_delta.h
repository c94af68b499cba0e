// np/lower_delta.h — the IR change a few pod events make, without lowering the node again:
// in time proportional to the change (binary searches in the installed program's sorted
// ranges and endpoints), not to the cluster. For the agent's pod events (issue 13).
//
//   auto index = np::PodDeltaLowering::Index(snapshot, installed);   // after a full lowering
//   ...pod events applied to the engine: `next`, keys {"ns/a", "ns/b"}...
//   std::optional<np::PodDelta> d = index.Lower(next, installed, keys);
//   if (d) { backend->UpdateDelta(installed, d->delta, attachment);
//            np::backends::ApplyDelta(d->delta, &installed); index.Commit(*d);
//            index.Recycle(*std::move(d)); }   // optional: the next delta reuses its storage
//   else   { installed = *np::AlignNumbering(installed, *np::LowerToIr(*next));
//            index = PodDeltaLowering::Index(next, installed); }
//   // Policy, tier, namespace or node events only (no pod changed): the same, with
//   d = index.LowerPolicyChange(next, installed);
//
// The contract: ApplyDelta(installed, Lower(...)->delta) means what LowerToIr(*next) means,
// numbered as `installed` is: np::backends::EquivalentPrograms with it, installed's ids kept,
// provided `installed` is LowerToIr of the indexed snapshot or that aligned to an earlier
// program (np/lower_align.h: equivalent, with stable ids and maybe unused "tombstone" items),
// kept in step by the deltas committed since, and `changed_pods` names every pod whose object
// changed between the two snapshots, and nothing but pods changed (no namespace, policy, tier
// or node event: the caller lowers whole then). Tables as np/lower_align.h numbers them: a
// pod of a target class with no table on the node brings that class's table (lowered as
// LowerPolicyChange lowers one, same LowerOptions as `installed`) at the id of the table its
// endpoints leave if that one retires (as np/lower_align.h numbers tables: a relabelled
// pod's table is replaced in place, not the pod moved between tables), else at the lowest
// unused table id, else appended; a table whose last endpoint leaves becomes a tombstone;
// peer sets by content, new ones as LowerPolicyChange numbers them, sets no rule names any
// more become tombstones. Identities (a relabel into or out of a label set): a pod whose peer class has
// no identity in the program gets one — the lowest unused identity id (np/lower_align.h's
// tombstone), else appended (CompiledPolicyDelta.identities) — and an identity losing its
// last address becomes a tombstone (pods emptied). The tables whose rules may name such a
// class — found from the class's selectors through each table's policies (and egress named
// ports; every tier table, since tier sets are over the live identities), not by reading the
// rules — and the tables whose engine table was rebuilt are lowered again with the new
// numbering and replaced when they differ, their peer sets interned as above: so a set
// gains the new identity, or drops the retired one, in a new or reused set id. Every other
// table and peer set is untouched. When `installed` is LowerToIr's own dense numbering, no
// table is retired, no identity comes or goes and no table's first endpoint changes order,
// the result is LowerToIr(*next) exactly.
// nullopt ("not expressible", lower whole) when the change would touch anything else of the
// program: an identity gaining or losing its external addresses (or an ipBlock atom's
// identity its last address), different atoms or tier policies, any shared address among
// the changed pods', or unused identities, tables or peer sets past AlignNumbering's
// compaction threshold.
//
// Policy events (LowerPolicyChange): policies, tier policies, namespaces or nodes changed and no
// pod did. The same atoms, pods and addresses are required. When every address keeps its
// identity (peer classes at most renamed one to one: O(pods) array reads, no protobuf built),
// the delta re-lowers only the tables whose engine table changed (np/internal/lower_tables.h,
// the code LowerToIr uses; every table when a namespace or tier change renamed classes) with
// the installed program's identity ids. When a selector splits a pods' class (or, gone,
// merges two), identities are numbered as np/lower_align.h numbers them (atoms keep theirs;
// per class now, the installed identity most of its pods had, greedy one to one, ties by
// lowest id) and as Lower numbers a new class (the lowest unused id, else appended:
// CompiledPolicyDelta.identities); an identity left without addresses becomes a tombstone
// (pods emptied); the moved pods' ranges are re-pointed, identities' pods edited, and the
// tables that may name a class whose identity gains or loses addresses lowered again too.
// Tables and peer sets are numbered as np/lower_align.h does: a table keeps the
// id of the installed table most of its endpoints had, a table new to the node takes the
// lowest unused id (else is appended), a table no endpoint names any more becomes a
// tombstone; a peer set is the installed set of the same identities, else takes the id of a
// set only the replaced tables used, else the lowest unused id, else is appended; sets no
// rule names any more become tombstones; endpoints whose `table` or `selected` changed are
// edited. ApplyDelta(installed, delta) is then EquivalentPrograms with LowerToIr(*next)
// (same LowerOptions as the index's). nullopt, with why, when the atoms change or an atom's
// class splits or merges (an identity's `external` would change), the domainNames refusal
// (np/lower.h) applies, or unused identities, tables or peer sets would exceed
// AlignNumbering's compaction threshold (the caller lowers whole, which compacts).
//
// Thread safety: an index is driven by one thread (Lower is const but reuses the storage
// Recycle gave it; Commit and Recycle mutate).
#ifndef NP_LOWER_DELTA_H_
#define NP_LOWER_DELTA_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "np/engine.h"
#include "np/lower.h"
#include "proto/compiled.pb.h"

namespace np {

namespace internal {
class TargetTable;
struct EngineState;
struct IdentityNumbering;
}  // namespace internal

// One pod or policy change as a program delta, with what the index must learn once it is
// installed.
struct PodDelta {
  ir::CompiledPolicyDelta delta;

 private:
  friend class PodDeltaLowering;
  std::shared_ptr<const Engine> next;
  // A policy change: the index's tables afterwards, whole (O(tables), not O(program)), and
  // the peer sets' reference changes and contents.
  struct Tables;
  std::shared_ptr<const Tables> tables;
  std::vector<std::pair<uint32_t, int64_t>> range_counts;                     // identity, change
  std::vector<std::pair<uint32_t, int64_t>> external_counts;                  // identity, change
  std::vector<std::pair<uint32_t, std::string>> endpoints_out, endpoints_in;  // table, key
  // Per endpoint of the delta's endpoint edits, in order: its pod's id in `next`; and the
  // installed endpoints the delta keeps whose pod's id changed (position, id).
  std::vector<uint32_t> endpoint_pods;
  std::vector<std::pair<int, uint32_t>> endpoint_pod_moves;
  // A pod delta that adds or retires identities: the identities as tables are lowered
  // afterwards, and the (peer class, identity) pairs that came and went.
  std::shared_ptr<const internal::IdentityNumbering> numbering;
  std::vector<std::pair<uint32_t, uint32_t>> identities_added, identities_retired;
};

class PodDeltaLowering {
 public:
  // Indexes `installed`: LowerToIr(*snapshot), or that aligned (see the contract above).
  // O(size of the program): do it after a whole lowering, not per event.
  // `options`: those `installed` was lowered with (the policy delta lowers tables alike).
  static PodDeltaLowering Index(std::shared_ptr<const Engine> snapshot,
                                const ir::CompiledPolicy& installed,
                                const LowerOptions& options = LowerOptions());

  // The delta from `installed` to LowerToIr(*next) (see the contract above); nullopt when it
  // is not expressible. `changed_pods`: "namespace/name" keys, repeats allowed.
  // `why` (optional): set to why not, when nullopt.
  std::optional<PodDelta> Lower(std::shared_ptr<const Engine> next,
                                const ir::CompiledPolicy& installed,
                                const std::vector<std::string>& changed_pods,
                                std::string* why = nullptr) const;

  // The delta from `installed` to LowerToIr(*next) when, since the indexed snapshot, no pod
  // changed (policy, tier policy, namespace and node events; see above); nullopt when it is
  // not expressible, `why` (optional) then says why.
  std::optional<PodDelta> LowerPolicyChange(std::shared_ptr<const Engine> next,
                                            const ir::CompiledPolicy& installed,
                                            std::string* why = nullptr) const;

  // The delta (of Lower or LowerPolicyChange) was applied to `installed`: the index now
  // describes it and `next`.
  void Commit(const PodDelta& applied);

  // Gives a delta the caller is done with back to the index: the next Lower or
  // LowerPolicyChange builds its delta in that message's storage. Why: allocating each of a
  // delta's messages and strings (ranges, endpoints, names) afresh from a heap the agent has
  // aged costs more than building them (bench/RESULTS.md, h89); a cleared protobuf keeps its
  // elements and strings for reuse.
  void Recycle(PodDelta&& used);

  const std::shared_ptr<const Engine>& snapshot() const { return snapshot_; }

 private:
  // Lower's table changes: the `added` (target class, table id) tables lowered, the `retired`
  // ones made tombstones, with the peer sets their rules name (numbered as LowerPolicyChange
  // numbers them), into out->delta and out->tables. Why not, when not expressible.
  // `relowered` tables lowered again and replaced when they differ; every table lowered
  // with `numbering`.
  std::optional<std::string> EditTables(const internal::EngineState& next,
                                        const ir::CompiledPolicy& installed,
                                        const internal::IdentityNumbering& numbering,
                                        const std::vector<std::pair<uint32_t, uint32_t>>& added,
                                        const std::vector<uint32_t>& relowered,
                                        const std::vector<uint32_t>& retired, PodDelta* out) const;
  // Appends to `tables` (sorted on return) the installed tables, other than those listed
  // there or `retired`, whose rules may name one of `classes` (peer classes gaining or
  // losing their identity): found from the classes' selectors through the policies of each
  // table's target class (tables_by_selector_), not from the tables' rules; every table
  // with tier policies. Pod events only: the policies are the indexed snapshot's.
  void AddTablesNaming(const internal::EngineState& next, const std::vector<uint32_t>& classes,
                       const std::vector<uint32_t>& retired, std::vector<uint32_t>* tables) const;
  // Fills tables_by_selector_, tier_tables_ and named_port_tables_ from table_target_ and
  // the policies of `s` (the indexed snapshot). O(tables x their policies' rules): after a
  // whole lowering or a delta that changed tables, off the event's path.
  void IndexTableNames(const internal::EngineState& s);
  // Moves the recycled delta's (cleared) storage into `delta` (empty).
  void TakeSpareDelta(ir::CompiledPolicyDelta* delta) const;

  // LowerPolicyChange's identities when a class splits or merges (the same atoms and pods):
  // the classes now numbered as np/lower_align.h numbers identities (atoms keep theirs; by
  // address votes, greedy one to one, ties by lowest id; the rest as Lower numbers new
  // classes; identities left without a class retired), the ranges of addresses whose
  // identity changes re-pointed, identities' pods edited, into `out` (delta, numbering,
  // identities added and retired, range counts). `pairs`: every (class before, class now)
  // of an address with an identity; `touched_classes`: the classes now whose identity gains
  // or loses addresses. Why not, when not expressible.
  std::optional<std::string> SplitIdentities(const internal::EngineState& next,
                                             const ir::CompiledPolicy& installed,
                                             std::vector<std::pair<uint32_t, uint32_t>>* pairs,
                                             std::vector<uint32_t>* touched_classes,
                                             PodDelta* out) const;

  std::shared_ptr<const Engine> snapshot_;

  // A delta given back (Recycle), cleared: the next delta is built in its storage.

  mutable ir::CompiledPolicyDelta spare_delta_;
  absl::flat_hash_map<uint32_t, uint32_t> identity_of_class_;
  std::vector<int64_t> range_count_;     // per identity: ranges carrying it
  std::vector<int64_t> external_count_;  // per identity: those that are no pod's
  std::set<uint32_t> unused_identities_;  // tombstones (np/lower_align.h), reused lowest first
  std::vector<uint32_t> table_target_;   // per table: the engine's target class
  // The engine tables lowered (held, so that "same pointer" cannot be a reused address).
  std::vector<std::shared_ptr<const internal::TargetTable>> table_source_;
  absl::flat_hash_map<uint32_t, uint32_t> table_of_target_;
  // Per installed endpoint, its pod's id in the snapshot (kNone: not live): a policy delta
  // reads targets by it.
  std::vector<uint32_t> endpoint_pod_;
  // Per table, how many endpoints name it: a pod delta that empties one retires it.
  std::vector<int64_t> table_endpoints_;
  // Per peer selector, the tables (ascending) whose target class has a policy with a rule
  // naming it; the tables whose target class has tier policies; those with a policy with
  // egress named ports (a rule without peers there lists the classes of each named map).
  // Reading each table's policies' rules at every relabel was most of a 1,000-pod node's
  // delta lowering (policies scattered in memory, hundreds of them).
  absl::flat_hash_map<uint32_t, std::vector<uint32_t>> tables_by_selector_;
  std::vector<uint32_t> tier_tables_, named_port_tables_;
  // For policy deltas: how the program was lowered, its identities as a table's lowering
  // sees them (pod deltas change neither the class -> identity map nor the live set), and
  // per peer set how many rules name it, with the content of those that some rule names.
  LowerOptions options_;
  std::shared_ptr<const internal::IdentityNumbering> numbering_;
  std::vector<int64_t> peer_set_refs_;
  absl::flat_hash_map<std::pair<bool, std::vector<uint32_t>>, uint32_t> peer_set_by_content_;
};

}  // namespace np

#endif  // NP_LOWER_DELTA_H_
