// `netpol lint`: findings about policies that validate but probably do not do what their
// author meant (np/analysis/lint.h), and the note `check`/`explain` add when a verdict
// depends on an address np invented for a pod made from a workload.
#include <iostream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "np/analysis/lint.h"
#include "np/cli/cli.h"

ABSL_DECLARE_FLAG(std::string, output);
ABSL_FLAG(std::string, fail_on, "warning",
          "lint: exit 1 when a finding is at least this severe: error, warning, info or none.");

namespace np::cli {
namespace {

absl::StatusOr<analysis::LintOptions> LintOptionsFromFlags() {
  analysis::LintOptions options;
  absl::StatusOr<EvaluationOptions> evaluation = OptionsFromFlags();
  if (!evaluation.ok()) return evaluation.status();
  options.evaluation = *evaluation;
  absl::StatusOr<std::vector<IpPrefix>> cidrs = PodCidrsFromFlags();
  if (!cidrs.ok()) return cidrs.status();
  options.pod_cidrs = *std::move(cidrs);
  return options;
}

}  // namespace

void PrintInventedAddressNotes(const Cluster& cluster, const Flow& flow, const Verdict& verdict) {
  absl::StatusOr<analysis::LintOptions> options = LintOptionsFromFlags();
  if (!options.ok()) return;  // the command has checked these flags already
  for (const analysis::Finding& f :
       analysis::InventedAddressFindings(cluster, flow, verdict, *options)) {
    std::cout << "  note: " << f.message << " (" << DisplayText(f.object) << " "
              << DisplayText(f.field) << ")\n";
  }
}

int RunLint(const Args& args) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "netpol lint: " << s.message() << "\n";
    return kExitError;
  };
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output != "text" && output != "json") {
    return fail(absl::InvalidArgumentError("-o must be text or json"));
  }
  // none: never exit 1; else the least severe finding that fails the run.
  const std::string fail_on_text = absl::GetFlag(FLAGS_fail_on);
  std::optional<analysis::Finding::Severity> fail_on;
  if (fail_on_text != "none") {
    absl::StatusOr<analysis::Finding::Severity> parsed = analysis::ParseSeverity(fail_on_text);
    if (!parsed.ok()) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("--fail-on must be error, warning, info or none, not ",
                       DisplayText(fail_on_text))));
    }
    fail_on = *parsed;
  }
  absl::StatusOr<analysis::LintOptions> options = LintOptionsFromFlags();
  if (!options.ok()) return fail(options.status());
  absl::StatusOr<Cluster> cluster = LoadCluster(args, /*print_warnings=*/true);
  if (!cluster.ok()) return fail(cluster.status());
  absl::StatusOr<std::vector<analysis::Finding>> findings = analysis::Lint(*cluster, *options);
  if (!findings.ok()) return fail(findings.status());

  int64_t counts[3] = {0, 0, 0};
  bool failed = false;
  for (const analysis::Finding& f : *findings) {
    ++counts[static_cast<int>(f.severity)];
    // Severities are ordered from error (0) to info (2).
    if (fail_on && f.severity <= *fail_on) failed = true;
  }
  if (output == "json") {
    std::cout << analysis::FindingsJson(*findings) << "\n";
  } else {
    for (const analysis::Finding& f : *findings) std::cout << f.ToString() << "\n";
    auto count = [](int64_t n, absl::string_view what) {
      return absl::StrCat(n, " ", what, n == 1 ? "" : "s");
    };
    std::cout << (findings->empty() ? "no findings"
                                    : absl::StrCat(count(counts[0], "error"), ", ",
                                                   count(counts[1], "warning"), ", ",
                                                   counts[2], " info"))
              << "\n";
  }
  return failed ? kExitNo : kExitOk;
}

}  // namespace np::cli
