// The synthetic cluster (bench/cluster_generator.h) compiled for one node and lowered to the
// IR the backends consume: the input of every backend benchmark.
#ifndef BENCH_SYNTHETIC_IR_H_
#define BENCH_SYNTHETIC_IR_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/cluster_generator.h"
#include "proto/compiled.pb.h"

namespace np::bench {

// `node` empty: the whole cluster as one node. With `extra_policies` > 0, that many more
// allow policies over the same pods (what a replace installs).
absl::StatusOr<ir::CompiledPolicy> CompileSynthetic(const SyntheticOptions& options,
                                                    const std::string& node,
                                                    int extra_policies = 0);

// `objects` compiled for `node` (empty: the whole cluster as one node) and lowered.
absl::StatusOr<ir::CompiledPolicy> CompileObjects(ClusterObjects objects, const std::string& node);

// The policy counts a backend benchmark sweeps: its numeric arguments, else 100, 1k, 10k.
std::vector<int> PolicyCounts(int argc, char** argv);

}  // namespace np::bench

#endif  // BENCH_SYNTHETIC_IR_H_
