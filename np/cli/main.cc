// netpol — is this flow allowed by the cluster's NetworkPolicies, and why?
#include <iostream>
#include <new>
#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "np/cli/cli.h"

ABSL_DECLARE_FLAG(int64_t, memory_budget);

namespace {

constexpr char kUsage[] = R"(netpol — Kubernetes NetworkPolicy, evaluated exactly.

usage: netpol COMMAND -f FILE [-f FILE ...] [flags]

commands:
  validate  check objects with the API server's rules; every error names the
            file, line, object and field path                (exit 0 valid, 2 invalid)
  check     --from A --to B [--port 80] [--protocol TCP]: ALLOWED or DENIED, with the
            policies that isolate each side and the rules that admit the flow
            (A, B: namespace/pod, or an IP address outside the cluster)
                                                              (exit 0 allowed, 1 denied, 2 error)
  explain   like check, but always exits 0 after the explanation
  matrix    truth table of every pod pair [--port 80,81] [--protocol TCP,UDP] [-o json]
  compile   --backend nft|iptables|ebpf [--node NODE] [-o FILE]: the node's datapath
            program; --ir [--ir-format json]: the compiled IR; --explain --from A --to B
            --port P --protocol X: the rule, set element or map key that decides the flow
  probe     (root) --backend nft|iptables|ebpf: build the pods as network namespaces, apply
            the backend, probe every pod pair with real packets and compare with the
            engine [--port 80,81] [--protocol TCP,UDP] [--family 4,6] [-o json];
            --each -f DIR: one scenario per file; --swap-with FILE: the update test;
            --cleanup: remove leftovers                         (exit 0 match, 1 mismatch)

common flags:
  -f, --file FILE        YAML or JSON (kubectl get -o yaml, manifests, Lists); a directory
                         is read recursively; - reads stdin. Repeatable.
  --engine NAME          indexed (the indexed engine; default) or reference (the
                         literal oracle)
  --memory-budget MIB    fail cleanly (exit 2) when the input needs more memory than
                         this; default: 100 bytes per input byte, at least 1024, at
                         most 3/4 of physical memory or of `ulimit -v`
  --allow-self           always allow a pod's traffic to itself
  --ipblock-scope SCOPE  all (ipBlocks match pod IPs too; default) or external
  -o, --output FORMAT    text (default) or json
)";

}  // namespace

namespace {

int Run(const std::string& command, int argc, char** argv) {
  using namespace np::cli;
  absl::StatusOr<Args> args = ParseArgs(argc, argv, 2);
  if (!args.ok()) {
    std::cerr << "netpol " << np::DisplayText(command) << ": " << args.status().message() << "\n"
              << "run 'netpol help' for usage\n";
    return kExitError;
  }
  const int64_t budget_mib = absl::GetFlag(FLAGS_memory_budget);
  if (budget_mib < 0) {
    std::cerr << "netpol: --memory-budget must be a number of MiB (0: automatic)\n";
    return kExitError;
  }
  SetMemoryBudget(budget_mib > 0 ? budget_mib << 20 : MemoryBudgetFor(InputBytes(*args)));
  if (command == "validate") return RunValidate(*args);
  if (command == "check") return RunCheck(*args, /*explain=*/false);
  if (command == "explain") return RunCheck(*args, /*explain=*/true);
  if (command == "matrix") return RunMatrix(*args);
  if (command == "compile") return RunCompile(*args);
  if (command == "probe") return RunProbe(*args, argc, argv);
  std::cerr << "netpol: unknown command " << np::DisplayText(command) << "; run 'netpol help'\n";
  return kExitError;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace np::cli;
  SetMemoryBudget(MemoryAvailable());
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help" ||
      std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return FinishOutput(argc < 2 ? kExitError : kExitOk);
  }
  const std::string command = argv[1];
  // The probe harness's agent has flags of its own (np/probe/agent.h).
  if (command == "probe-agent") return RunProbeAgent(argc, argv);
  int exit_code;
  try {
    exit_code = Run(command, argc, argv);
  } catch (const std::bad_alloc&) {
    // What np's library did not turn into a status itself (the engine, a backend, printing).
    std::cerr << "netpol: " << OverBudgetMessage() << "\n";
    exit_code = kExitError;
  }
  return FinishOutput(exit_code);
}
