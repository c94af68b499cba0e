// netpol — is this flow allowed by the cluster's NetworkPolicies, and why?
#include <initializer_list>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "np/cli/cli.h"

ABSL_DECLARE_FLAG(int64_t, memory_budget);
ABSL_DECLARE_FLAG(bool, ir);
ABSL_DECLARE_FLAG(bool, explain);
ABSL_DECLARE_FLAG(bool, stats);
ABSL_DECLARE_FLAG(bool, cleanup);
ABSL_DECLARE_FLAG(bool, each);
ABSL_DECLARE_FLAG(std::string, swap_with);
ABSL_DECLARE_FLAG(bool, remove);

namespace {

constexpr char kUsage[] = R"(netpol — Kubernetes NetworkPolicy, evaluated exactly.

usage: netpol COMMAND -f FILE [-f FILE ...] [flags]

commands:
  validate  check objects with the API server's rules; every error names the
            file, line, object and field path                (exit 0 valid, 2 invalid)
  check     --from A --to B [--port 80] [--protocol TCP] [-o json]: ALLOWED or DENIED,
            with the policies that isolate each side and the rules that admit the flow
            (A, B: namespace/pod, or an IP address outside the cluster; --port may name
            the destination pod's container port). B may be a Service, svc/NAMESPACE/NAME:
            --port is a Service port (number or name; may be left out when it has one),
            the protocol is that port's, and each backing pod gets its own verdict on
            its targetPort                        (exit 0 allowed, 1 denied, 2 error;
                                                   Service: 0 every endpoint pod allowed,
                                                   1 any denied, 2 no endpoint pod)
  explain   like check, but always exits 0 after the explanation (2 on error or when a
            Service has no endpoint pod)
  matrix    truth table of every pod pair [--port 80,81] [--protocol TCP,UDP] [-o json]
            [--group-by workload|namespace: a row and column per group; "." every pod
            pair of the two groups allowed, "X" every one denied, "~" some of each]
  connections  every pair of pods / outside address ranges that can connect, with exactly
            which ports per protocol [--from X] [--to Y] (pod namespace/name with * globs, an
            IP or a CIDR) [--port 80,8000-8090,http,all] [--protocol TCP,UDP|all]
            [--pods-only] [-o text|json|csv|md|dot|svg|png] [--explain: each line with
            the rules that decide it, per side: egress at the source, ingress at the
            destination]
  diff      --before PATH... --after PATH...: connections added and removed (same filters)
            [-o text|json|csv|md] [--explain: what allows the ports in one state and
            what denies them in the other]      (exit 0 no change, 1 changed, 2 error)
  lint      findings about policies that validate but probably do not do what was meant:
            selectors that match nothing, undefined namespaces and named ports, policies
            that add nothing, rules that admit everything, ... (codes NP101-NP109)
            [-o text|json] [--fail-on error|warning|info|none (default warning)]
                                        (exit 0 clean, 1 findings at --fail-on or above, 2 error)
  compile   one mode at a time, each with only its own flags:
            --backend nft|iptables|ebpf [--node NODE] [-o FILE]: the node's datapath
            program; --budget NAME=N[,...]: raise a budget (names as --stats prints them)
            --ir [--ir-format text|json] [--node NODE] [-o FILE]: the compiled IR
            --explain --from A --to B [--port P] [--protocol X] [--family 4|6] [--backend B]
            [--node NODE]: the rule, set element or map key that decides the flow
            --stats [--backend B,...|all] [--budget ...] [-o json]: rules, sets, set
            elements, map entries and identities against each backend's kernel limits and
            budgets (exit 1: over). All modes: --allow-self, --ipblock-scope,
            --flatten-tiers (policy tiers folded into allow rules, not ordered tier rules).
            --node must name a node that runs a pod of the input (exit 2 otherwise)
  probe     (root) one mode at a time:
            --backend nft|iptables|ebpf: build the pods as network namespaces, apply the
            backend, probe every pod pair with real packets and compare with the engine
            [--port 80,81] [--protocol TCP,UDP] [--family 4,6] [-o json] [--external IPS]
            [--nosample-external] [--timeout-ms MS] [--retry-timeout-ms MS] [--agent BIN];
            --each -f DIR: the same, one scenario per file (exit 2: no scenario file);
            --swap-with FILE [--swaps N] [--retry-timeout-ms MS]: the update test (no -o,
            --external or --sample-external); --cleanup: remove leftovers (no
            other flag)                                       (exit 0 match, 1 mismatch)
  agent     (root) one node's policy agent: follows watch events (--events FILE|FIFO|-, JSON
            as `kubectl get ... --watch --output-watch-events -o json` prints them, the
            policy tiers and Nodes included; --kind KIND for objects without one) from the
            -f state (optional) and keeps the node's program equal to them: --node NODE --backend nft|iptables|ebpf --netns NS
            [--interfaces NS/POD=IF,...] [--budget ...] [--min-interval 20ms (coalesces
            bursts)] [--metrics-address 127.0.0.1:PORT (Prometheus)] [--exit-at-eof];
            --remove: uninstall and exit. JSON log lines on stderr; SIGTERM/SIGINT stop it
            and leave the program in place                  (exit 0 stopped, 2 error)

common flags:
  -f, --file FILE        YAML or JSON (kubectl get -o yaml, manifests, Lists); a directory
                         is read recursively; - reads stdin. Repeatable.
  --engine NAME          indexed (the indexed engine; default) or reference (the
                         literal oracle); check, explain and matrix only (the
                         others always use the indexed engine)
  --memory-budget MIB    fail cleanly (exit 2) when the input needs more memory than
                         this; default: 100 bytes per input byte, at least 1024, at
                         most 3/4 of physical memory or of `ulimit -v`
  --allow-self           always allow a pod's traffic to itself
  --ipblock-scope SCOPE  all (ipBlocks match pod IPs too; default) or external
  -o, --output FORMAT    text (default) or json
  --pod-cidr CIDRS       addresses for pods made from workloads (Deployment, StatefulSet,
                         ...): default 10.244.0.0/16,fd00:10:244::/64; none for none
  --expand-replicas      one pod per replica of each workload, not one per workload
  --namespace-labels NS:KEY=VALUE[,KEY=VALUE...]
                         labels of a namespace that lives only in the cluster (e.g.
                         kube-system:team=platform); it then exists, with these labels and
                         kubernetes.io/metadata.name. A namespace the input defines is an
                         error (give its labels in its manifest). Repeatable.
  --namespace-labels-file FILE
                         the same, one NS:KEY=VALUE,... per line (# comments)
  --cluster-pod NS/NAME[:KEY=VALUE,...[:[PORTNAME=]PORT[/PROTOCOL],...]]
                         a pod that lives only in the cluster, e.g. kube-system/coredns:
                         k8s-app=kube-dns:dns=53/UDP,dns-tcp=53/TCP; made like a workload's
                         pod (NAME-0, an address from --pod-cidr). Repeatable.

netpol COMMAND --help (or -h) prints that command's usage.
)";

// The lines of kUsage that describe `command` (its entry under "commands:" up to the next
// command), followed by the common flags: what `netpol COMMAND --help` prints.
std::string CommandUsage(const std::string& command) {
  const std::string text = kUsage;
  const std::string start = "\n  " + command + " ";
  size_t begin = text.find(start);
  if (begin == std::string::npos) return text;
  ++begin;
  size_t end = begin;
  while (true) {
    end = text.find('\n', end);
    if (end == std::string::npos || end + 3 >= text.size()) break;
    // A line that starts a new entry ("  word") or the end of the commands section.
    if (text[end + 1] == '\n' || (text[end + 3] != ' ' && text[end + 1] == ' ')) break;
    ++end;
  }
  const size_t flags = text.find("common flags:");
  return absl::StrCat("usage: netpol ", command, " -f FILE [-f FILE ...] [flags]\n\n",
                      text.substr(begin, end - begin + 1), "\n", text.substr(flags));
}

// The flags each command reads. A flag it does not read is an error rather than silently
// ignored (`matrix --from x/a` must not look like a filtered table, `compile --ir --backend
// iptables` not like iptables' IR). compile and probe work in modes, each reading its own.
constexpr absl::string_view kLoadFlags[] = {"file",          "pod_cidr",
                                           "expand_replicas", "memory_budget",
                                           "namespace_labels", "namespace_labels_file",
                                           "cluster_pod"};
constexpr absl::string_view kEvaluationFlags[] = {"engine", "allow_self", "ipblock_scope",
                                                  "port", "protocol"};
bool In(absl::string_view flag, std::initializer_list<absl::string_view> flags) {
  for (absl::string_view f : flags) {
    if (f == flag) return true;
  }
  return false;
}

// compile's mode: "--ir", "--explain", "--stats", or "" for the backend's program.
std::string CompileMode() {
  if (absl::GetFlag(FLAGS_stats)) return "--stats";
  if (absl::GetFlag(FLAGS_ir)) return "--ir";
  if (absl::GetFlag(FLAGS_explain)) return "--explain";
  return "";
}
bool CompileReadsFlag(const std::string& flag) {
  // The engine is always the indexed one: a datapath is compiled from it.
  if (In(flag, {"node", "allow_self", "ipblock_scope", "flatten_tiers", "output", "ir", "explain",
                "stats"})) {
    return true;
  }
  const std::string mode = CompileMode();
  if (mode == "--ir") return flag == "ir_format";
  if (mode == "--explain") {
    return In(flag, {"backend", "budget", "from", "to", "port", "protocol", "family"});
  }
  return In(flag, {"backend", "budget"});  // the program, --stats
}

// probe's mode: "--cleanup", "--swap-with", "--each", or "" for one scenario.
std::string ProbeMode() {
  if (absl::GetFlag(FLAGS_cleanup)) return "--cleanup";
  if (!absl::GetFlag(FLAGS_swap_with).empty()) return "--swap-with";
  if (absl::GetFlag(FLAGS_each)) return "--each";
  return "";
}
bool ProbeReadsFlag(const std::string& flag) {
  const std::string mode = ProbeMode();
  if (In(flag, {"cleanup", "each", "swap_with"})) return true;  // mode flags: see ProbeModes
  // --cleanup removes what earlier runs left: it reads no input.
  if (mode == "--cleanup") return flag == "memory_budget";
  if (In(flag, {"backend", "port", "protocol", "family", "allow_self", "ipblock_scope",
                "timeout_ms", "agent"})) {
    return true;
  }
  // The update test prints its own report and probes pod pairs only, once each round.
  if (mode == "--swap-with") return flag == "swaps" || flag == "retry_timeout_ms";
  return In(flag, {"output", "external", "sample_external", "retry_timeout_ms"});
}

bool CommandReadsFlag(const std::string& command, const std::string& flag) {
  if (command == "agent") {
    if (flag == "remove" || flag == "backend" || flag == "netns" || flag == "interfaces") {
      return true;
    }
    // --remove uninstalls: it reads no events and no state.
    if (absl::GetFlag(FLAGS_remove)) return false;
    for (absl::string_view f : kLoadFlags) {
      if (f == flag) return true;
    }
    return In(flag, {"events", "kind", "node", "budget", "min_interval", "metrics_address",
                     "exit_at_eof", "allow_self", "ipblock_scope"});
  }
  if (command == "probe" && ProbeMode() == "--cleanup") return ProbeReadsFlag(flag);
  for (absl::string_view f : kLoadFlags) {
    if (f == flag) return true;
  }
  if (command == "compile") return CompileReadsFlag(flag);
  if (command == "probe") return ProbeReadsFlag(flag);
  if (command == "validate") return flag == "output";
  if (command == "lint") {
    return flag == "output" || flag == "fail_on" || flag == "allow_self" ||
           flag == "ipblock_scope";
  }
  if ((command == "connections" || command == "diff") && flag == "engine") {
    return false;  // the analyses run on the indexed engine only
  }
  for (absl::string_view f : kEvaluationFlags) {
    if (f == flag) return true;
  }
  if (command == "matrix") return flag == "output" || flag == "group_by";
  if (command == "connections" || command == "diff") {
    if (command == "diff" && (flag == "before" || flag == "after")) return true;
    return flag == "from" || flag == "to" || flag == "output" || flag == "pods_only" ||
           flag == "explain";
  }
  return flag == "from" || flag == "to" || flag == "output";  // check, explain
}

// The command as the error message names it, with compile's or probe's mode.
std::string CommandWithMode(const std::string& command) {
  const std::string mode =
      command == "compile" ? CompileMode() : command == "probe" ? ProbeMode() : "";
  return mode.empty() ? command : absl::StrCat(command, " ", mode);
}

// compile and probe take one mode at a time: two would silently drop one.
std::string ConflictingModes(const std::string& command) {
  std::vector<std::string> modes;
  if (command == "compile") {
    if (absl::GetFlag(FLAGS_stats)) modes.push_back("--stats");
    if (absl::GetFlag(FLAGS_ir)) modes.push_back("--ir");
    if (absl::GetFlag(FLAGS_explain)) modes.push_back("--explain");
  } else if (command == "probe") {
    if (absl::GetFlag(FLAGS_cleanup)) modes.push_back("--cleanup");
    if (!absl::GetFlag(FLAGS_swap_with).empty()) modes.push_back("--swap-with");
    if (absl::GetFlag(FLAGS_each)) modes.push_back("--each");
  }
  return modes.size() > 1 ? absl::StrJoin(modes, " and ") : "";
}

// The first flag in argv[first..] that `command` does not read, as written; empty if none.
std::string FlagNotRead(const std::string& command, int argc, char** argv, int first) {
  if (command != "validate" && command != "check" && command != "explain" &&
      command != "matrix" && command != "connections" && command != "diff" &&
      command != "compile" && command != "probe" && command != "lint" && command != "agent") {
    return "";
  }
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    std::string name = arg.substr(arg[1] == '-' ? 2 : 1);
    name = name.substr(0, name.find('='));
    if (name == "f") name = "file";
    if (name == "o") name = "output";
    for (char& c : name) {
      if (c == '-') c = '_';
    }
    if (absl::StartsWith(name, "no") && CommandReadsFlag(command, name.substr(2))) continue;
    if (!CommandReadsFlag(command, name)) return arg;
  }
  return "";
}

}  // namespace

namespace {

int Run(const std::string& command, int argc, char** argv) {
  using namespace np::cli;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-h" || arg == "-help") {
      std::cout << CommandUsage(command);
      return kExitOk;
    }
  }
  absl::StatusOr<Args> args = ParseArgs(argc, argv, 2);
  if (!args.ok()) {
    std::cerr << "netpol " << np::DisplayText(command) << ": " << args.status().message() << "\n"
              << "run 'netpol help' for usage\n";
    return kExitError;
  }
  if (std::string modes = ConflictingModes(command); !modes.empty()) {
    std::cerr << "netpol " << command << ": " << modes << " are different modes: give one\n"
              << "run 'netpol " << command << " --help' for usage\n";
    return kExitError;
  }
  if (std::string flag = FlagNotRead(command, argc, argv, 2); !flag.empty()) {
    std::cerr << "netpol " << command << ": " << flag << " does not apply to "
              << CommandWithMode(command) << "\nrun 'netpol " << command
              << " --help' for usage\n";
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
  if (command == "connections") return RunConnections(*args);
  if (command == "diff") return RunDiff(*args);
  if (command == "lint") return RunLint(*args);
  if (command == "compile") return RunCompile(*args);
  if (command == "probe") return RunProbe(*args, argc, argv);
  if (command == "agent") return RunAgent(*args);
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
