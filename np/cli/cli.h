// Shared pieces of the `netpol` command: flag parsing with our exit codes, loading the
// cluster from -f files, evaluating flows with the chosen evaluator, printing diagnostics.
// Private to np/cli.
#ifndef NP_CLI_CLI_H_
#define NP_CLI_CLI_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/cluster.h"
#include "np/evaluator.h"
#include "np/backends/backend.h"
#include "np/loader.h"
#include "np/verdict.h"

namespace np::cli {

// Exit codes of every subcommand.
inline constexpr int kExitOk = 0;       // allowed / valid / matched
inline constexpr int kExitNo = 1;       // denied / mismatches found
inline constexpr int kExitError = 2;    // bad input, bad usage, I/O failure

// Arguments after the subcommand: `-f FILE` / `--file FILE` (repeatable) are collected
// here; every other `--flag[=value]` is set on the absl flag of that name.
struct Args {
  std::vector<std::string> files;
  std::vector<std::string> positional;
  std::vector<std::string> before, after;  // diff: --before / --after PATH (repeatable)
  // What lives only in the cluster (repeatable): --namespace-labels NS:K=V,...,
  // --namespace-labels-file FILE, --cluster-pod NS/NAME[:LABELS[:PORTS]].
  std::vector<std::string> namespace_labels, namespace_labels_files, cluster_pods;
  std::vector<std::string> given_flags;    // names of the flags given ("port", "from", ...)
};
// Parses argv; on error prints to stderr and returns the status.
absl::StatusOr<Args> ParseArgs(int argc, char** argv, int first);

// Loads every -f input into a Cluster, printing diagnostics (warnings too, unless quiet) to
// stderr. Errors when the input is invalid, and, unless `allow_empty` (the agent, whose
// pods may all come later as events), when no file was given or no pod takes part.
absl::StatusOr<Cluster> LoadCluster(const Args& args, bool print_warnings = true,
                                    bool allow_empty = false);

// Prints diagnostics, one per line (errors only unless `warnings`), and stops after
// kMaxDiagnosticOutputBytes with a line that counts what was left out.
inline constexpr size_t kMaxDiagnosticOutputBytes = size_t{1} << 20;
void PrintDiagnostics(std::ostream& out, const std::vector<Diagnostic>& diagnostics,
                      bool warnings);

// The memory budget (memory_budget.cc): operator new fails past it, so that running out of
// memory is an error message and exit code 2, not an abort. --memory-budget sets it; by
// default it is MemoryBudgetFor(the size of the -f inputs): kMemoryPerInputByte per input
// byte, at least 1 GiB, at most MemoryAvailable().
inline constexpr int64_t kMemoryPerInputByte = 100;
int64_t MemoryBudgetFor(int64_t input_bytes);
int64_t MemoryAvailable();  // 3/4 of physical memory, or of `ulimit -v` when less
// Bytes in the -f inputs (the files below a directory; 0 for stdin).
int64_t InputBytes(const Args& args);
void SetMemoryBudget(int64_t bytes);
int64_t MemoryBudget();
bool MemoryBudgetRefused();  // whether an allocation has failed for the budget
// "the input needs more memory than the budget (N MiB; --memory-budget=MiB raises it)".
std::string OverBudgetMessage();

// Writes `text` to the file `path` and closes it, reporting a failed write or close.
absl::Status WriteOutputFile(const std::string& path, absl::string_view text);
// Flushes and closes standard output and standard error; returns `exit_code`, or kExitError
// (with a message on stderr when it still can) when a write or the close failed, so that a
// full disk never passes for a complete output.
int FinishOutput(int exit_code);

// The options chosen by --allow-self and --ipblock-scope.
absl::StatusOr<EvaluationOptions> OptionsFromFlags();

// The evaluator chosen by --engine (the indexed engine, or the reference).
absl::StatusOr<ClusterEvaluator> MakeEvaluator(const Cluster& cluster,
                                               const EvaluationOptions& options);

// Comma-separated lists for --port and --protocol.
absl::StatusOr<std::vector<uint16_t>> ParsePortList(absl::string_view text);
absl::StatusOr<std::vector<Protocol>> ParseProtocolList(absl::string_view text);

// workload_flags.cc: --pod-cidr and --expand-replicas applied to a loader; the one-line
// "skipped 2 Service; left out 1 pod: shop/agent (hostNetwork)" summary that validate and
// every command that loads input print; and the refusal to answer reachability from an
// input in which no pod takes part (so that nothing passes vacuously).
absl::Status ConfigureWorkloads(ClusterLoader* loader);
// ConfigureWorkloads, then what lives only in the cluster (--namespace-labels,
// --namespace-labels-file, --cluster-pod) added to `loader`. What every command that loads
// -f input calls.
absl::Status ConfigureLoader(const Args& args, ClusterLoader* loader);
// The pod CIDRs --pod-cidr names (its default when unset; none for "none").
absl::StatusOr<std::vector<IpPrefix>> PodCidrsFromFlags();
std::string SkippedSummary(const ClusterLoader& loader, const Cluster& cluster);
int SynthesizedPodCount(const Cluster& cluster);
absl::Status RequirePods(const Cluster& cluster, const ClusterLoader& loader);

// --budget for `backend`: "NAME=N" entries apply to every backend, "BACKEND.NAME=N" to one
// (compile_command.cc; the agent reads it too).
absl::StatusOr<backends::BackendOptions> BudgetOptions(absl::string_view backend);

// Subcommands.
int RunValidate(const Args& args);
int RunCheck(const Args& args, bool explain);
int RunMatrix(const Args& args);
int RunConnections(const Args& args);                       // analysis_commands.cc
int RunDiff(const Args& args);                              // analysis_commands.cc
int RunCompile(const Args& args);                           // compile_command.cc
int RunProbe(const Args& args, int argc, char** argv);      // probe_command.cc
int RunProbeAgent(int argc, char** argv);                   // probe_command.cc
int RunLint(const Args& args);                              // lint_command.cc
int RunAgent(const Args& args);                             // agent_command.cc
// check/explain: one "  note:" line per ipBlock whose verdict on a pod made from a workload
// depends on the address np assigned it (lint_command.cc).
void PrintInventedAddressNotes(const Cluster& cluster, const Flow& flow, const Verdict& verdict);

}  // namespace np::cli

#endif  // NP_CLI_CLI_H_
