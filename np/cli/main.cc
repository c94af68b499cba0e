// netpol — is this flow allowed by the cluster's NetworkPolicies, and why?
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "np/cli/cli.h"

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
  connections  every pair of pods / outside address ranges that can connect, with exactly
            which ports per protocol [--from X] [--to Y] (pod namespace/name with * globs, an
            IP or a CIDR) [--port 80,8000-8090,http,all] [--protocol TCP,UDP|all]
            [--pods-only] [-o text|json|csv|md|dot|svg|png]
  diff      --before PATH... --after PATH...: connections added and removed (same filters)
            [-o text|json|csv|md]                       (exit 0 no change, 1 changed, 2 error)
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
  --engine NAME          engine (indexed, default) or reference (the literal oracle)
  --allow-self           always allow a pod's traffic to itself
  --ipblock-scope SCOPE  all (ipBlocks match pod IPs too; default) or external
  -o, --output FORMAT    text (default) or json
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace np::cli;
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help" ||
      std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? kExitError : kExitOk;
  }
  std::string command = argv[1];
  // The probe harness's agent has flags of its own (np/probe/agent.h).
  if (command == "probe-agent") return RunProbeAgent(argc, argv);
  absl::StatusOr<Args> args = ParseArgs(argc, argv, 2);
  if (!args.ok()) {
    std::cerr << "netpol " << command << ": " << args.status().message() << "\n"
              << "run 'netpol help' for usage\n";
    return kExitError;
  }
  if (command == "validate") return RunValidate(*args);
  if (command == "check") return RunCheck(*args, /*explain=*/false);
  if (command == "explain") return RunCheck(*args, /*explain=*/true);
  if (command == "matrix") return RunMatrix(*args);
  if (command == "connections") return RunConnections(*args);
  if (command == "diff") return RunDiff(*args);
  if (command == "compile") return RunCompile(*args);
  if (command == "probe") return RunProbe(*args, argc, argv);
  std::cerr << "netpol: unknown command \"" << command << "\"; run 'netpol help'\n";
  return kExitError;
}
