// np/tiers/evaluate.h (internal to the reference) — the policy tiers' part of the reference
// evaluator: for one side of a flow, the first matching rule of the Admin tier and, when
// neither it nor NetworkPolicy decided, of the Baseline tier (np/verdict.h DirectionVerdict).
//
//   tiers::EvaluateTiers(cluster, flow, Direction::kIngress, family, &side);
//   bool allowed = side.allowed();
//
// Thread safety: pure functions of their arguments.
#ifndef NP_TIERS_EVALUATE_H_
#define NP_TIERS_EVALUATE_H_

#include <string>

#include "absl/container/flat_hash_map.h"
#include "np/cluster.h"
#include "np/verdict.h"

namespace np::reference {
// Defined in np/reference.cc, the same meaning for NetworkPolicy and the tiers.
bool SelectorMatches(const k8s::LabelSelector& selector,
                     const absl::flat_hash_map<std::string, std::string>& labels);
bool SharesFlowAddress(const Cluster& cluster, const Endpoint& end, AddressFamily family);
}  // namespace np::reference

namespace np::tiers {

// Fills side->admin_rule, side->baseline_rule and side->not_evaluable for the side
// `direction` of `flow` (its pod: the destination for ingress, the source for egress), after
// the NetworkPolicy part of `side` (isolated) is known. Does nothing for a side without a pod.
void EvaluateTiers(const Cluster& cluster, const Flow& flow, Direction direction,
                   AddressFamily family, DirectionVerdict* side);

}  // namespace np::tiers

#endif  // NP_TIERS_EVALUATE_H_
