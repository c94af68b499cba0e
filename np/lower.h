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
// with an IR interpreter on random clusters, with and without policy tiers). Policy tiers are
// lowered as each direction's final verdict (proto/compiled.proto explains the shape).
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

absl::StatusOr<ir::CompiledPolicy> LowerToIr(const Engine& engine);

}  // namespace np

#endif  // NP_LOWER_H_
