// np/lower.h — lowers an engine snapshot to the compiled IR (proto/compiled.proto) that
// datapath backends consume: identities with their address ranges, shared tables of port
// rules over peer sets, and the node's endpoints.
//
//   np::EngineOptions options;
//   options.node_name = "node-1";                     // what this node's agent enforces
//   auto engine = np::Engine::Build(cluster, options);
//   absl::StatusOr<np::ir::CompiledPolicy> ir = np::LowerToIr(**engine);
//
// The IR answers every flow as the engine does for the node's pods (lower_test checks it
// with np::backends::SideAllows on random clusters, with and without policy tiers).
//
// Policy tiers keep their order (proto/compiled.proto, "Policy tiers"), so the kernel holds
// the ordered rules: per table and direction, `isolated` and `rules` are the NetworkPolicy
// part alone, `admin` and `baseline` the tier rules that apply, in evaluation order, one
// TierRule per (port, peer set) of each rule. An admin "deny 10.0.0.0/8 for everyone" stays
// one rule per table instead of an "everyone but" allow list per port piece.
// LowerOptions::flatten_tiers lowers instead each direction's final verdict into the allow
// tables (no tier rules): a differential check, and a fallback for a datapath that does not
// enforce tier rules. Tables without tier policies come out the same either way.
// Errors: Unimplemented for a domainNames peer in a Deny or Pass tier rule, which no datapath
// can enforce offline (matching nothing would let the traffic through), naming the rule.
//
// Thread safety: a pure function of an immutable snapshot.
#ifndef NP_LOWER_H_
#define NP_LOWER_H_

#include "absl/status/statusor.h"
#include "np/engine.h"
#include "proto/compiled.pb.h"

namespace np {

struct LowerOptions {
  // Fold the policy tiers into `isolated` and `rules` (each direction's final verdict) and
  // leave `admin` and `baseline` empty.
  bool flatten_tiers = false;
};

// The ordered form (LowerOptions defaults).
absl::StatusOr<ir::CompiledPolicy> LowerToIr(const Engine& engine);
absl::StatusOr<ir::CompiledPolicy> LowerToIr(const Engine& engine, const LowerOptions& options);

}  // namespace np

#endif  // NP_LOWER_H_
