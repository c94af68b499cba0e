#include "bench/backend_timing.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "np/backends/util.h"

namespace np::bench {

double SecondsSince(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

double Median(std::vector<double> values) {
  if (values.empty()) return -1;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

ApplyTimes TimeApplyReplaceRemove(
    backends::Backend& backend, const ir::CompiledPolicy& first,
    const ir::CompiledPolicy* second, absl::string_view prefix,
    const std::function<absl::Status(const std::string& netns, backends::Attachment*)>&
        prepare) {
  ApplyTimes times;
  // NP_BENCH_NETNS_PREFIX lets whoever runs the benchmark keep its namespaces apart from
  // those of other people on the machine.
  const char* own = getenv("NP_BENCH_NETNS_PREFIX");
  const std::string netns = absl::StrCat(own != nullptr ? own : "", prefix, "-", getpid());
  if (!backends::RunCommand({"ip", "netns", "add", netns}).ok()) {
    times.error = "could not create a network namespace";
    return times;
  }
  backends::Attachment where;
  where.netns = netns;
  absl::Status s = prepare ? prepare(netns, &where) : absl::OkStatus();
  std::vector<double> apply, replace, remove;
  for (int round = 0; round < 3 && s.ok(); ++round) {
    auto t0 = std::chrono::steady_clock::now();
    s = backend.Apply(first, where);
    apply.push_back(SecondsSince(t0));
    if (s.ok() && second != nullptr) {
      t0 = std::chrono::steady_clock::now();
      s = backend.Apply(*second, where);
      replace.push_back(SecondsSince(t0));
    }
    if (s.ok()) {
      t0 = std::chrono::steady_clock::now();
      s = backend.Remove(where);
      remove.push_back(SecondsSince(t0));
    }
  }
  times.apply_s = Median(apply);
  times.replace_s = Median(replace);
  times.remove_s = Median(remove);
  if (!s.ok()) times.error = std::string(s.message()).substr(0, 200);
  (void)backends::RunCommand({"ip", "netns", "del", netns});
  return times;
}

}  // namespace np::bench
