// `netpol validate`, `netpol check` / `explain`, `netpol matrix`.
#include <iostream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "np/cli/cli.h"
#include "np/loader.h"

ABSL_DECLARE_FLAG(std::string, output);
ABSL_FLAG(std::string, from, "", "check: source, namespace/pod or an IP address.");
ABSL_FLAG(std::string, to, "", "check: destination, namespace/pod or an IP address.");
ABSL_FLAG(std::string, port, "80", "Destination port(s); matrix takes a comma-separated list.");
ABSL_FLAG(std::string, protocol, "TCP",
          "Protocol(s): TCP, UDP, SCTP; matrix takes a comma-separated list.");

namespace np::cli {

// `validate -o json`: {"valid": bool, "objects": {"NetworkPolicy": n, "Pod": n,
// "Namespace": n, "workloads": n, "synthesized_pods": n, "pods_in_networking": n},
// "skipped": {"Service": n},
// "diagnostics": [{"severity", "kind", "object", "field", "message", "file", "line"}]}.
int PrintValidateJson(const ClusterLoader& loader, const std::vector<Diagnostic>& diagnostics,
                      const absl::StatusOr<Cluster>& cluster) {
  const ClusterObjects& objects = loader.objects();
  std::string json = absl::StrCat(
      "{\"valid\": ", cluster.ok() ? "true" : "false", ", \"objects\": {\"NetworkPolicy\": ",
      objects.policies.size(), ", \"Pod\": ", objects.pods.size(), ", \"Namespace\": ",
      objects.namespaces.size(), ", \"workloads\": ", loader.workloads().size(),
      ", \"synthesized_pods\": ", cluster.ok() ? SynthesizedPodCount(*cluster) : 0,
      // 0 with policies: check and matrix would have nothing to evaluate.
      ", \"pods_in_networking\": ", cluster.ok() ? cluster->pod_count() : 0,
      "}, \"skipped\": {");
  bool first = true;
  for (const auto& [kind, n] : loader.skipped_kinds()) {
    absl::StrAppend(&json, first ? "" : ", ", JsonQuote(kind), ": ", n);
    first = false;
  }
  absl::StrAppend(&json, "}, \"diagnostics\": [");
  first = true;
  for (const Diagnostic& d : diagnostics) {
    absl::StrAppend(&json, first ? "" : ", ", "{\"severity\": \"",
                    d.is_error() ? "error" : "warning", "\", \"kind\": ", JsonQuote(d.kind),
                    ", \"object\": ", JsonQuote(d.object), ", \"field\": ", JsonQuote(d.field),
                    ", \"message\": ", JsonQuote(d.message), ", \"file\": ",
                    JsonQuote(d.location.file), ", \"line\": ", d.location.line, "}");
    first = false;
  }
  std::cout << json << "]}\n";
  return cluster.ok() ? kExitOk : kExitError;
}

int RunValidate(const Args& args) {
  if (args.files.empty()) {
    std::cerr << "netpol validate: give at least one -f FILE\n";
    return kExitError;
  }
  ClusterLoader loader;
  if (absl::Status s = ConfigureWorkloads(&loader); !s.ok()) {
    std::cerr << "netpol validate: " << s.message() << "\n";
    return kExitError;
  }
  for (const std::string& file : args.files) (void)loader.AddPath(file);
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
  if (const std::string output = absl::GetFlag(FLAGS_output); output == "json") {
    return PrintValidateJson(loader, diagnostics, cluster);
  } else if (output != "text") {
    std::cerr << "netpol validate: -o must be text or json\n";
    return kExitError;
  }
  int errors = 0, warnings = 0;
  for (const Diagnostic& d : diagnostics) {
    (d.is_error() ? errors : warnings)++;
    std::cout << d.ToString() << "\n";
  }
  const ClusterObjects& objects = loader.objects();
  size_t count = objects.namespaces.size() + objects.pods.size() + objects.policies.size();
  if (!cluster.ok()) {
    if (errors == 0) std::cout << cluster.status().message() << "\n";
    std::cout << absl::StrFormat("invalid: %d error%s in %d object%s\n", errors,
                                 errors == 1 ? "" : "s", count, count == 1 ? "" : "s");
    return kExitError;
  }
  std::string skipped;
  for (const auto& [kind, n] : loader.skipped_kinds()) {
    absl::StrAppend(&skipped, skipped.empty() ? "" : ", ", n, " ", kind);
  }
  std::cout << absl::StrFormat("valid: %d NetworkPolicies, %d Pods, %d Namespaces", 
                               objects.policies.size(), objects.pods.size(),
                               objects.namespaces.size());
  if (!loader.workloads().empty()) {
    std::cout << absl::StrFormat(", %d workloads (%d pods synthesized)", loader.workloads().size(),
                                 SynthesizedPodCount(*cluster));
  }
  if (cluster->policy_count() > 0 && cluster->pod_count() == 0) {
    std::cout << "; warning: no pod takes part in pod networking, so check and matrix "
                 "have nothing to evaluate";
  }
  if (warnings > 0) std::cout << absl::StrFormat(" (%d warning%s)", warnings, warnings == 1 ? "" : "s");
  if (!skipped.empty()) std::cout << "; skipped " << skipped;
  std::cout << "\n";
  return kExitOk;
}

int RunCheck(const Args& args, bool explain) {
  absl::StatusOr<Cluster> cluster = LoadCluster(args, /*print_warnings=*/false);
  if (!cluster.ok()) {
    std::cerr << "netpol: " << cluster.status().message() << "\n";
    return kExitError;
  }
  auto fail = [](const absl::Status& s) {
    std::cerr << "netpol: " << s.message() << "\n";
    return kExitError;
  };
  if (absl::GetFlag(FLAGS_from).empty() || absl::GetFlag(FLAGS_to).empty()) {
    return fail(absl::InvalidArgumentError("--from and --to are required"));
  }
  absl::StatusOr<Endpoint> from = ParseEndpoint(*cluster, absl::GetFlag(FLAGS_from));
  if (!from.ok()) return fail(from.status());
  absl::StatusOr<Endpoint> to = ParseEndpoint(*cluster, absl::GetFlag(FLAGS_to));
  if (!to.ok()) return fail(to.status());
  if (!from->is_pod && !to->is_pod) {
    return fail(absl::InvalidArgumentError(
        "neither end is a pod of the cluster: NetworkPolicy does not govern this flow"));
  }
  absl::StatusOr<std::vector<uint16_t>> ports = ParsePortList(absl::GetFlag(FLAGS_port));
  if (!ports.ok()) return fail(ports.status());
  absl::StatusOr<std::vector<Protocol>> protocols =
      ParseProtocolList(absl::GetFlag(FLAGS_protocol));
  if (!protocols.ok()) return fail(protocols.status());
  if (ports->size() != 1 || protocols->size() != 1) {
    return fail(absl::InvalidArgumentError("check takes one --port and one --protocol"));
  }
  absl::StatusOr<EvaluationOptions> options = OptionsFromFlags();
  if (!options.ok()) return fail(options.status());
  absl::StatusOr<ClusterEvaluator> evaluator = MakeEvaluator(*cluster, *options);
  if (!evaluator.ok()) return fail(evaluator.status());
  Flow flow{*from, *to, protocols->front(), ports->front()};
  Verdict verdict = evaluator->Evaluate(flow);
  std::cout << FormatVerdict(*cluster, flow, verdict);
  if (explain) return kExitOk;
  return verdict.allowed ? kExitOk : kExitNo;
}


int RunMatrix(const Args& args) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "netpol: " << s.message() << "\n";
    return kExitError;
  };
  std::string output = absl::GetFlag(FLAGS_output);
  if (output != "text" && output != "json") {
    return fail(absl::InvalidArgumentError("-o must be text or json"));
  }
  absl::StatusOr<std::vector<uint16_t>> ports = ParsePortList(absl::GetFlag(FLAGS_port));
  if (!ports.ok()) return fail(ports.status());
  absl::StatusOr<std::vector<Protocol>> protocols =
      ParseProtocolList(absl::GetFlag(FLAGS_protocol));
  if (!protocols.ok()) return fail(protocols.status());
  absl::StatusOr<EvaluationOptions> options = OptionsFromFlags();
  if (!options.ok()) return fail(options.status());
  absl::StatusOr<Cluster> cluster = LoadCluster(args, /*print_warnings=*/false);
  if (!cluster.ok()) return fail(cluster.status());
  absl::StatusOr<ClusterEvaluator> evaluator = MakeEvaluator(*cluster, *options);
  if (!evaluator.ok()) return fail(evaluator.status());

  // Pods are sorted by namespace, then name: the Cluster's own order.
  const int n = cluster->pod_count();
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(cluster->pod(i).Key());
  std::vector<TruthTable> tables;
  for (Protocol protocol : *protocols) {
    for (uint16_t port : *ports) {
      tables.push_back(TruthTable{protocol, port, evaluator->Matrix(protocol, port)});
    }
  }
  if (output == "json") {
    std::string json = TruthTablesJson(names, tables);
    // Pods made from workloads, so a reader knows which rows stand for a Deployment & co.
    std::string synthesized;
    for (int i = 0; i < n; ++i) {
      const PodInfo& pod = cluster->pod(i);
      if (pod.synthesized_from.empty()) continue;
      absl::StrAppend(&synthesized, synthesized.empty() ? "" : ", ", JsonQuote(pod.Key()), ": ",
                      JsonQuote(pod.synthesized_from));
    }
    // Only when there are any, so that the shape for pod-only input stays as it was.
    if (!synthesized.empty()) {
      json.insert(json.size() - 1, absl::StrCat(", \"synthesized\": {", synthesized, "}"));
    }
    std::cout << json << "\n";
    return kExitOk;
  }
  size_t width = 3;
  for (const std::string& name : names) width = std::max(width, name.size());
  for (const TruthTable& table : tables) {
    std::string text = absl::StrFormat(
        "%-*s", width, absl::StrCat(ProtocolName(table.protocol), "/", table.port));
    for (const std::string& name : names) absl::StrAppend(&text, " ", absl::StrFormat("%*s", width, name));
    absl::StrAppend(&text, "\n");
    for (int i = 0; i < n; ++i) {
      absl::StrAppend(&text, absl::StrFormat("%-*s", width, names[i]));
      for (int j = 0; j < n; ++j) {
        bool allowed = table.allowed[static_cast<size_t>(i) * n + j] != 0;
        absl::StrAppend(&text, " ", absl::StrFormat("%*s", width, allowed ? "." : "X"));
      }
      absl::StrAppend(&text, "\n");
    }
    std::cout << text << "\n";
  }
  std::cout << "rows: source pod; columns: destination pod; \".\" allowed, \"X\" denied\n";
  return kExitOk;
}

}  // namespace np::cli
