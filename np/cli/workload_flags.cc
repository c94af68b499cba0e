// How `netpol` turns workloads into pods (--pod-cidr, --expand-replicas), and the check that
// no reachability command answers from an input without pods ("nothing passes vacuously").
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "np/cli/cli.h"
#include "np/loader.h"
#include "np/workloads.h"

ABSL_FLAG(std::string, pod_cidr, "",
          "Comma-separated pod CIDRs (at most one per family) from which pods synthesized from "
          "workloads get addresses; default 10.244.0.0/16,fd00:10:244::/64; 'none' for none.");
ABSL_FLAG(bool, expand_replicas, false,
          "Synthesize one pod per replica of each workload instead of one representative.");

namespace np::cli {

absl::StatusOr<std::vector<IpPrefix>> PodCidrsFromFlags() {
  const std::string text = absl::GetFlag(FLAGS_pod_cidr);
  if (text == "none") return std::vector<IpPrefix>();
  if (text.empty()) return WorkloadOptions::DefaultPodCidrs();
  const std::vector<std::string> texts = absl::StrSplit(text, ',', absl::SkipWhitespace());
  absl::StatusOr<std::vector<IpPrefix>> cidrs = ParsePodCidrs(texts);
  if (!cidrs.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--pod-cidr: ", cidrs.status().message()));
  }
  return cidrs;
}

absl::Status ConfigureWorkloads(ClusterLoader* loader) {
  WorkloadOptions options;
  absl::StatusOr<std::vector<IpPrefix>> cidrs = PodCidrsFromFlags();
  if (!cidrs.ok()) return cidrs.status();
  options.pod_cidrs = *std::move(cidrs);
  options.expand_replicas = absl::GetFlag(FLAGS_expand_replicas);
  loader->SetWorkloadOptions(std::move(options));
  return absl::OkStatus();
}

std::string SkippedSummary(const ClusterLoader& loader,
                           const std::vector<Diagnostic>& diagnostics) {
  std::vector<std::string> parts;
  for (const auto& [kind, n] : loader.skipped_kinds()) parts.push_back(absl::StrCat(n, " ", kind));
  std::string out;
  if (!parts.empty()) out = absl::StrCat("skipped ", absl::StrJoin(parts, ", "));
  int left_out = 0;
  for (const Diagnostic& d : diagnostics) {
    if (!d.is_error() && d.kind == "Pod" && absl::StartsWith(d.message, "left out")) ++left_out;
  }
  if (left_out > 0) {
    absl::StrAppend(&out, out.empty() ? "" : "; ", "left out ", left_out, " pod",
                    left_out == 1 ? "" : "s", " (finished or hostNetwork)");
  }
  return out;
}

int SynthesizedPodCount(const Cluster& cluster) {
  int n = 0;
  for (int i = 0; i < cluster.pod_count(); ++i) n += !cluster.pod(i).synthesized_from.empty();
  return n;
}

absl::Status RequirePods(const Cluster& cluster, const ClusterLoader& loader,
                         const std::vector<Diagnostic>& diagnostics) {
  if (cluster.pod_count() > 0) return absl::OkStatus();
  const std::string skipped = SkippedSummary(loader, diagnostics);
  return absl::InvalidArgumentError(absl::StrCat(
      "nothing to evaluate: ", cluster.policy_count(), " NetworkPolicies but no pod takes part "
      "in pod networking (give Pods or workloads such as Deployments)",
      skipped.empty() ? "" : absl::StrCat("; ", skipped)));
}

}  // namespace np::cli
