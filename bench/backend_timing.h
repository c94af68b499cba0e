// How the backend benchmarks time a backend's install, atomic replace and removal: in a
// network namespace of their own, three rounds, medians (the machine is shared and noisy).
#ifndef BENCH_BACKEND_TIMING_H_
#define BENCH_BACKEND_TIMING_H_

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "np/backends/backend.h"
#include "proto/compiled.pb.h"

namespace np::bench {

double SecondsSince(std::chrono::steady_clock::time_point since);
double Median(std::vector<double> values);  // -1 when empty

struct ApplyTimes {
  double apply_s = -1, replace_s = -1, remove_s = -1;  // medians; -1: not measured
  std::string error;                                   // the first failure, if any
};

// Creates the network namespace "$NP_BENCH_NETNS_PREFIX<prefix>-<pid>", lets `prepare` (optional) build what the
// backend attaches to and fill the Attachment, then three rounds of Apply(first),
// Apply(second) (the atomic replace; skipped when `second` is null) and Remove. Always
// deletes the namespace.
ApplyTimes TimeApplyReplaceRemove(
    backends::Backend& backend, const ir::CompiledPolicy& first,
    const ir::CompiledPolicy* second, absl::string_view prefix,
    const std::function<absl::Status(const std::string& netns, backends::Attachment*)>&
        prepare = nullptr);

}  // namespace np::bench

#endif  // BENCH_BACKEND_TIMING_H_
