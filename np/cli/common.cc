#include <cstdio>
#include <iostream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "np/cli/cli.h"
#include "np/loader.h"
#include "np/evaluator.h"

ABSL_DECLARE_FLAG(std::string, engine);

namespace np::cli {

absl::StatusOr<Cluster> LoadCluster(const Args& args, bool print_warnings) {
  if (args.files.empty()) {
    return absl::InvalidArgumentError("no input: give at least one -f FILE (or -f - for stdin)");
  }
  ClusterLoader loader;
  if (absl::Status s = ConfigureWorkloads(&loader); !s.ok()) return s;
  for (const std::string& file : args.files) {
    // Read errors are recorded in the loader's diagnostics; Build reports them all.
    (void)loader.AddPath(file);
  }
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
  int errors = 0;
  for (const Diagnostic& d : diagnostics) {
    if (d.is_error()) ++errors;
    if (d.is_error() || print_warnings || d.affects_verdicts) std::cerr << d.ToString() << "\n";
  }
  if (!cluster.ok()) {
    if (errors == 0) std::cerr << cluster.status().message() << "\n";
    return absl::InvalidArgumentError(absl::StrCat("input rejected: ", errors, " error",
                                                   errors == 1 ? "" : "s"));
  }
  if (absl::Status s = RequirePods(*cluster, loader, diagnostics); !s.ok()) return s;
  if (std::string skipped = SkippedSummary(loader, diagnostics); !skipped.empty()) {
    std::cerr << "note: " << skipped << "\n";
  }
  return cluster;
}

absl::StatusOr<ClusterEvaluator> MakeEvaluator(const Cluster& cluster,
                                               const EvaluationOptions& options) {
  std::string engine = absl::GetFlag(FLAGS_engine);
  if (engine == "reference") {
    return ClusterEvaluator::Create(cluster, ClusterEvaluator::Kind::kReference, options);
  }
  if (engine == "engine") {
    return ClusterEvaluator::Create(cluster, ClusterEvaluator::Kind::kEngine, options);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--engine must be 'engine' or 'reference', not '", engine, "'"));
}

absl::StatusOr<std::vector<uint16_t>> ParsePortList(absl::string_view text) {
  std::vector<uint16_t> ports;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int port;
    if (!absl::SimpleAtoi(part, &port) || port < 1 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad port \"", part, "\": must be a number from 1 to 65535"));
    }
    ports.push_back(static_cast<uint16_t>(port));
  }
  if (ports.empty()) return absl::InvalidArgumentError("no port given");
  return ports;
}

absl::StatusOr<std::vector<Protocol>> ParseProtocolList(absl::string_view text) {
  std::vector<Protocol> protocols;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    absl::StatusOr<Protocol> p = ParseProtocol(part, /*case_insensitive=*/true);
    if (!p.ok()) return p.status();
    protocols.push_back(*p);
  }
  if (protocols.empty()) return absl::InvalidArgumentError("no protocol given");
  return protocols;
}

}  // namespace np::cli
