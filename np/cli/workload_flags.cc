// How `netpol` turns workloads into pods (--pod-cidr, --expand-replicas), and the check that
// no reachability command answers from an input without pods ("nothing passes vacuously").
#include <fstream>
#include <map>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "np/cli/cli.h"
#include "np/loader.h"
#include "np/workloads.h"

ABSL_FLAG(std::string, pod_cidr, "",
          "Comma-separated pod CIDRs (at most one per family) from which pods synthesized from "
          "workloads get addresses; default 10.244.0.0/16,fd00:10:244::/64; 'none' for none.");
ABSL_FLAG(bool, expand_replicas, false,
          "Synthesize one pod per replica of each workload instead of one representative.");

namespace np::cli {

absl::Status ConfigureWorkloads(ClusterLoader* loader) {
  WorkloadOptions options;
  const std::string text = absl::GetFlag(FLAGS_pod_cidr);
  if (text == "none") {
    options.pod_cidrs.clear();
  } else if (!text.empty()) {
    const std::vector<std::string> texts = absl::StrSplit(text, ',', absl::SkipWhitespace());
    absl::StatusOr<std::vector<IpPrefix>> cidrs = ParsePodCidrs(texts);
    if (!cidrs.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--pod-cidr: ", cidrs.status().message()));
    }
    options.pod_cidrs = *std::move(cidrs);
  }
  options.expand_replicas = absl::GetFlag(FLAGS_expand_replicas);
  loader->SetWorkloadOptions(std::move(options));
  return absl::OkStatus();
}

absl::Status ConfigureLoader(const Args& args, ClusterLoader* loader) {
  if (absl::Status s = ConfigureWorkloads(loader); !s.ok()) return s;
  auto add_labels = [&](absl::string_view text, absl::string_view flag,
                        absl::string_view origin) -> absl::Status {
    absl::StatusOr<std::pair<std::string, std::map<std::string, std::string>>> parsed =
        ParseNamespaceLabels(text);
    if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", parsed.status().message()));
    return loader->AddNamespaceLabels(parsed->first, parsed->second, origin);
  };
  for (const std::string& text : args.namespace_labels) {
    if (absl::Status s = add_labels(text, "--namespace-labels", "--namespace-labels"); !s.ok()) {
      return s;
    }
  }
  // The file form: one NAMESPACE:KEY=VALUE,... per line, as the flag takes it; blank lines
  // and lines starting with # are ignored. Diagnostics name FILE:LINE.
  for (const std::string& path : args.namespace_labels_files) {
    std::ifstream in(path);
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat("--namespace-labels-file: cannot read ", DisplayText(path)));
    }
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      absl::string_view text = absl::StripAsciiWhitespace(line);
      if (text.empty() || text[0] == '#') continue;
      const std::string where = absl::StrCat(path, ":", number);
      if (absl::Status s = add_labels(text, where, where); !s.ok()) return s;
    }
  }
  for (const std::string& text : args.cluster_pods) {
    absl::StatusOr<Workload> pod = ParseClusterPod(text, "--cluster-pod");
    if (!pod.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--cluster-pod: ", pod.status().message()));
    }
    loader->AddClusterPod(*std::move(pod));
  }
  return absl::OkStatus();
}

std::string SkippedSummary(const ClusterLoader& loader, const Cluster& cluster) {
  // Kinds and pods named up to a point: an input can hold a million of them.
  constexpr int kMaxNamed = 10;
  std::string kinds;
  int named = 0, more_kinds = 0, more_objects = 0;
  for (const auto& [kind, n] : loader.skipped_kinds()) {
    if (named++ < kMaxNamed) {
      // "(not Kubernetes)" is np's own name for files without objects: printed as it is.
      absl::StrAppend(&kinds, kinds.empty() ? "" : ", ", n, " ",
                      kind == "(not Kubernetes)" ? kind : DisplayText(kind));
    } else {
      ++more_kinds;
      more_objects += n;
    }
  }
  if (more_kinds > 0) {
    absl::StrAppend(&kinds, " and ", more_objects, " object", more_objects == 1 ? "" : "s",
                    " of ", more_kinds, " other kind", more_kinds == 1 ? "" : "s");
  }
  std::string out = kinds.empty() ? "" : absl::StrCat("skipped ", kinds);
  const std::vector<std::pair<std::string, std::string>> left_out = cluster.LeftOutPods();
  if (!left_out.empty()) {
    // Pods that exist but that NetworkPolicy does not govern: a matrix has no row for them.
    absl::StrAppend(&out, out.empty() ? "" : "; ", "left out ", left_out.size(), " pod",
                    left_out.size() == 1 ? "" : "s", ": ");
    for (size_t i = 0; i < left_out.size() && i < kMaxNamed; ++i) {
      absl::StrAppend(&out, i == 0 ? "" : ", ", DisplayText(left_out[i].first), " (",
                      left_out[i].second, ")");
    }
    if (left_out.size() > kMaxNamed) absl::StrAppend(&out, " and ", left_out.size() - kMaxNamed, " more");
  }
  return out;
}

int SynthesizedPodCount(const Cluster& cluster) {
  int n = 0;
  for (int i = 0; i < cluster.pod_count(); ++i) n += !cluster.pod(i).synthesized_from.empty();
  return n;
}

absl::Status RequirePods(const Cluster& cluster, const ClusterLoader& loader) {
  if (cluster.pod_count() > 0) return absl::OkStatus();
  const std::string skipped = SkippedSummary(loader, cluster);
  return absl::InvalidArgumentError(absl::StrCat(
      "nothing to evaluate: ", cluster.policy_count(), " NetworkPolicies but no pod takes part "
      "in pod networking (give Pods or workloads such as Deployments)",
      skipped.empty() ? "" : absl::StrCat("; ", skipped)));
}

}  // namespace np::cli
