// np/lower_align.h — stable numbering across whole lowerings (issue 13, policy events).
// LowerToIr numbers identities, peer sets and tables densely and afresh, so one policy event
// renumbers most of the program and every backend rewrites it whole. AlignNumbering renumbers
// a fresh lowering so that what corresponds to the installed program keeps its ids; a
// backend's Update(installed, aligned) can then compare items by id and change only what
// differs.
//
//   ir::CompiledPolicy next = *np::LowerToIr(*snapshot);
//   np::AlignStats stats;
//   absl::StatusOr<ir::CompiledPolicy> aligned = np::AlignNumbering(installed, next, &stats);
//   if (aligned.ok()) { backend->Update(installed, *aligned, attachment); installed = *aligned; }
//
// The aligned form (what backends' Update and Apply accept; Update stays right for any pair
// of programs that pass CheckIr, the matching only decides how much changes):
//  - The same meaning as `next`: same endpoints and addresses, same ranges, every flow the
//    same verdict (np::backends::EquivalentPrograms says so). Only ids differ.
//  - Correspondence: an identity of `next` keeps the installed id of the identity that held
//    most of its ranges' first addresses (greedy one-to-one by votes, ties by lowest id: a
//    class split keeps the old id on its bigger part); a table the id of the installed table
//    most of its endpoints had; a peer set the installed id of the set with the same
//    identities (in aligned ids), else of the set named at the same (table, direction, stage,
//    rule position) in both programs, so that a changed set keeps its id. Never two items
//    one id.
//  - Items of `installed` with no counterpart stay as unused "tombstones": an identity with
//    no pods, not external, in no range or peer set; a peer set no rule names, `all` false,
//    no identities; a table no endpoint names, not isolated, without rules, tier rules or
//    policies. New items take the lowest unused id of `installed` first, then are appended.
//  - Compaction: when the unused items of a kind would exceed max(16, live / 4), `next` is
//    returned as lowered (dense, stats->compacted): the backend then takes its whole path, and
//    ids stay bounded under any sequence of events.
// Errors: InvalidArgument when `installed` or `next` fails np::backends::CheckIr.
// Cost: O(program size) plus sorting the votes; no step is quadratic. About 0.4× LowerToIr's
// CPU, half of it CheckIr of both programs (bench/RESULTS.md, "Stable numbering").
//
// Thread safety: a pure function.
#ifndef NP_LOWER_ALIGN_H_
#define NP_LOWER_ALIGN_H_

#include "absl/status/statusor.h"
#include "proto/compiled.pb.h"

namespace np {

// What an alignment changed, per kind, against `installed` (for the agent's metrics and log).
struct AlignItemStats {
  int changed = 0;  // kept an installed id, content differs
  int added = 0;    // no counterpart: took an unused id or was appended
  int unused = 0;   // tombstones in the result
};
struct AlignStats {
  bool compacted = false;  // the result is `next` as lowered
  AlignItemStats identities, peer_sets, tables;
};

absl::StatusOr<ir::CompiledPolicy> AlignNumbering(const ir::CompiledPolicy& installed,
                                                  ir::CompiledPolicy next,
                                                  AlignStats* stats = nullptr);

}  // namespace np

#endif  // NP_LOWER_ALIGN_H_
