// `netpol validate` and `netpol matrix` (check and explain: check_command.cc).
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "np/cli/cli.h"
#include "np/loader.h"

ABSL_DECLARE_FLAG(std::string, output);
ABSL_FLAG(std::string, from, "", "check: source, namespace/pod or an IP address.");
ABSL_FLAG(std::string, to, "",
          "check: destination, namespace/pod, svc/namespace/name or an IP address.");
ABSL_FLAG(std::string, port, "80",
          "Destination port(s); matrix takes a comma-separated list; check also a port name "
          "(of the destination pod, or of the Service).");
ABSL_FLAG(std::string, protocol, "TCP",
          "Protocol(s): TCP, UDP, SCTP; matrix takes a comma-separated list.");
ABSL_FLAG(std::string, group_by, "",
          "matrix: one row and column per workload (pods made from one workload together, "
          "any other pod alone) or per namespace; a cell is \".\" when every pod pair of the "
          "two groups is allowed, \"X\" when every one is denied, \"~\" when some are each.");

namespace np::cli {
namespace {

// The policy tiers' kinds and Nodes read, by kind, those with any objects only (so that the
// output of inputs without them stays as it was).
std::vector<std::pair<const char*, size_t>> TierObjectCounts(const ClusterObjects& objects) {
  std::vector<std::pair<const char*, size_t>> counts;
  for (const auto& [kind, n] :
       {std::pair{"AdminNetworkPolicy", objects.admin_network_policies.size()},
        std::pair{"BaselineAdminNetworkPolicy", objects.baseline_admin_network_policies.size()},
        std::pair{"ClusterNetworkPolicy", objects.cluster_network_policies.size()},
        std::pair{"Node", objects.nodes.size()}}) {
    if (n > 0) counts.emplace_back(kind, n);
  }
  return counts;
}

// A group's name for `matrix --group-by`: the namespace, or the workload a pod was made from
// ("namespace/name"; a pod made from no workload is a group of its own).
std::string GroupOf(const PodInfo& pod, absl::string_view by) {
  if (by == "namespace") return pod.namespace_name;
  if (pod.synthesized_from.empty()) return pod.Key();
  // "Deployment shop/api" -> "shop/api"
  absl::string_view made_from = pod.synthesized_from;
  return std::string(made_from.substr(made_from.find(' ') + 1));
}

// One cell of a grouped table: what the pod pairs between two groups have in common.
enum class GroupCell : uint8_t { kAllowed, kDenied, kMixed };

// Prints the tables with pods merged into groups (`matrix --group-by`). A cell covers the
// same pod pairs the ungrouped table has for those rows and columns (a pod's flow to itself
// included, as there).
void PrintGroupedTables(const Cluster& cluster, const std::vector<TruthTable>& tables,
                        const std::string& by, bool json) {
  std::map<std::string, std::vector<int>> members;
  for (int i = 0; i < cluster.pod_count(); ++i) members[GroupOf(cluster.pod(i), by)].push_back(i);
  std::vector<std::string> names;
  std::vector<int> group_of(cluster.pod_count());
  for (const auto& [name, pods] : members) {
    for (int i : pods) group_of[i] = static_cast<int>(names.size());
    names.push_back(name);
  }
  const size_t g = names.size(), n = static_cast<size_t>(cluster.pod_count());
  auto cells_of = [&](const TruthTable& table) {
    std::vector<uint32_t> allowed(g * g, 0), total(g * g, 0);
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < n; ++j) {
        const size_t cell = group_of[i] * g + group_of[j];
        ++total[cell];
        allowed[cell] += table.allowed[i * n + j] != 0;
      }
    }
    std::vector<GroupCell> out(g * g);
    for (size_t c = 0; c < g * g; ++c) {
      out[c] = allowed[c] == total[c] ? GroupCell::kAllowed
               : allowed[c] == 0      ? GroupCell::kDenied
                                      : GroupCell::kMixed;
    }
    return out;
  };
  if (json) {
    std::string out = absl::StrCat("{\"group_by\": ", JsonQuote(by), ", \"groups\": [");
    for (size_t k = 0; k < g; ++k) {
      std::vector<std::string> pods;
      for (int i : members[names[k]]) pods.push_back(JsonQuote(cluster.pod(i).Key()));
      absl::StrAppend(&out, k ? ", " : "", "{\"name\": ", JsonQuote(names[k]), ", \"pods\": [",
                      absl::StrJoin(pods, ", "), "]}");
    }
    absl::StrAppend(&out, "],\n\"matrices\": [");
    for (size_t t = 0; t < tables.size(); ++t) {
      absl::StrAppend(&out, t ? ",\n  " : "\n  ", "{\"protocol\": \"",
                      ProtocolName(tables[t].protocol), "\", \"port\": ", tables[t].port,
                      ", \"cells\": [");
      std::vector<GroupCell> cells = cells_of(tables[t]);
      for (size_t r = 0; r < g; ++r) {
        absl::StrAppend(&out, r ? ", [" : "[");
        for (size_t c = 0; c < g; ++c) {
          GroupCell cell = cells[r * g + c];
          absl::StrAppend(&out, c ? ", " : "",
                          cell == GroupCell::kAllowed  ? "\"allowed\""
                          : cell == GroupCell::kDenied ? "\"denied\""
                                                       : "\"mixed\"");
        }
        absl::StrAppend(&out, "]");
      }
      absl::StrAppend(&out, "]}");
    }
    std::cout << out << "\n]}\n";
    return;
  }
  // Columns as wide as the widest group name, or the "TCP/80" corner.
  size_t width = 3;
  for (const std::string& name : names) width = std::max(width, name.size());
  for (const TruthTable& table : tables) {
    width = std::max(width, absl::StrCat(ProtocolName(table.protocol), "/", table.port).size());
  }
  for (const TruthTable& table : tables) {
    std::string row = absl::StrFormat(
        "%-*s", width, absl::StrCat(ProtocolName(table.protocol), "/", table.port));
    for (const std::string& name : names) absl::StrAppend(&row, " ", absl::StrFormat("%*s", width, name));
    std::cout << row << "\n";
    std::vector<GroupCell> cells = cells_of(table);
    for (size_t r = 0; r < g; ++r) {
      row = absl::StrFormat("%-*s", width, names[r]);
      for (size_t c = 0; c < g; ++c) {
        GroupCell cell = cells[r * g + c];
        absl::StrAppend(&row, " ", absl::StrFormat("%*s", width,
                                                   cell == GroupCell::kAllowed  ? "."
                                                   : cell == GroupCell::kDenied ? "X"
                                                                                : "~"));
      }
      std::cout << row << "\n";
    }
    std::cout << "\n";
  }
  std::cout << "rows: source " << by << "; columns: destination " << by
            << "; \".\" every pod pair allowed, \"X\" every pod pair denied, \"~\" some "
               "allowed and some denied\n";
}

}  // namespace

// `validate -o json`: {"valid": bool, "objects": {"NetworkPolicy": n, "Pod": n,
// "Namespace": n, "workloads": n, "synthesized_pods": n, "Service": n, "pods_in_networking": n},
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
      ", \"Service\": ", objects.services.size(),
      // 0 with policies: check and matrix would have nothing to evaluate.
      ", \"pods_in_networking\": ", cluster.ok() ? cluster->pod_count() : 0);
  for (const auto& [kind, n] : TierObjectCounts(objects)) {
    absl::StrAppend(&json, ", \"", kind, "\": ", n);
  }
  absl::StrAppend(&json, "}, \"skipped\": {");
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
// The most cells (pod pairs times ports times protocols) `matrix` computes.
constexpr int64_t kMaxMatrixCells = int64_t{1} << 26;

int RunValidate(const Args& args) {
  if (args.files.empty()) {
    std::cerr << "netpol validate: give at least one -f FILE\n";
    return kExitError;
  }
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output != "text" && output != "json") {
    std::cerr << "netpol validate: -o must be text or json\n";
    return kExitError;
  }
  ClusterLoader loader;
  if (absl::Status s = ConfigureLoader(args, &loader); !s.ok()) {
    std::cerr << "netpol validate: " << s.message() << "\n";
    return kExitError;
  }
  for (const std::string& file : args.files) (void)loader.AddPath(file);
  const size_t policies = loader.objects().policies.size();
  const size_t pods = loader.objects().pods.size();
  const size_t namespaces = loader.objects().namespaces.size();
  const size_t workloads = loader.workloads().size();
  const size_t services = loader.objects().services.size();
  size_t count = policies + pods + namespaces + workloads + services;
  // "2 ClusterNetworkPolicy, 2 Node": the policy tiers and the Nodes their peers select.
  std::string tier_objects;
  for (const auto& [kind, n] : TierObjectCounts(loader.objects())) {
    absl::StrAppend(&tier_objects, ", ", n, " ", kind);
    count += n;
  }
  std::vector<Diagnostic> diagnostics;
  if (output == "json") {
    absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
    if (MemoryBudgetRefused()) {
      std::cerr << "netpol: " << OverBudgetMessage() << "\n";
      return kExitError;
    }
    return PrintValidateJson(loader, diagnostics, cluster);
  }
  absl::StatusOr<Cluster> cluster = std::move(loader).Build(&diagnostics);
  PrintDiagnostics(std::cout, diagnostics, /*warnings=*/true);
  if (MemoryBudgetRefused()) {
    std::cerr << "netpol: " << OverBudgetMessage() << "\n";
    return kExitError;
  }
  const int64_t errors = CountErrors(diagnostics);
  const int64_t warnings = CountWarnings(diagnostics);
  if (!cluster.ok()) {
    if (errors == 0) std::cout << cluster.status().message() << "\n";
    std::cout << absl::StrFormat("invalid: %d error%s in %d object%s\n", errors,
                                 errors == 1 ? "" : "s", count, count == 1 ? "" : "s");
    return kExitError;
  }
  std::cout << absl::StrFormat("valid: %d NetworkPolicies, %d Pods, %d Namespaces", policies,
                               pods, namespaces)
            << tier_objects;
  if (workloads > 0) {
    std::cout << absl::StrFormat(", %d workloads (%d pods synthesized)", workloads,
                                 SynthesizedPodCount(*cluster));
  }
  if (services > 0) {
    std::cout << absl::StrFormat(", %d Service%s", services, services == 1 ? "" : "s");
  }
  if (cluster->policy_count() > 0 && cluster->pod_count() == 0) {
    std::cout << "; warning: no pod takes part in pod networking, so check and matrix "
                 "have nothing to evaluate";
  }
  if (warnings > 0) {
    std::cout << absl::StrFormat(" (%d warning%s)", warnings, warnings == 1 ? "" : "s");
  }
  if (std::string skipped = SkippedSummary(loader, *cluster); !skipped.empty()) {
    std::cout << "; " << skipped;
  }
  std::cout << "\n";
  return kExitOk;
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
  const std::string group_by = absl::GetFlag(FLAGS_group_by);
  if (!group_by.empty() && group_by != "workload" && group_by != "namespace") {
    return fail(absl::InvalidArgumentError("--group-by must be workload or namespace"));
  }
  absl::StatusOr<Cluster> cluster = LoadCluster(args, /*print_warnings=*/false);
  if (!cluster.ok()) return fail(cluster.status());

  // Pods are sorted by namespace, then name: the Cluster's own order.
  const int n = cluster->pod_count();
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(cluster->pod(i).Key());
  // A table has a cell per pod pair: refuse what no one can read rather than run out of
  // memory building it.
  const int64_t cells = static_cast<int64_t>(n) * n * static_cast<int64_t>(ports->size()) *
                        static_cast<int64_t>(protocols->size());
  if (cells > kMaxMatrixCells) {
    return fail(absl::ResourceExhaustedError(absl::StrFormat(
        "%d pods make %d table cells, more than the %d matrix prints; narrow the input, the "
        "ports or the protocols, or ask about single flows with check",
        n, cells, kMaxMatrixCells)));
  }
  absl::StatusOr<ClusterEvaluator> evaluator = MakeEvaluator(*cluster, *options);
  if (!evaluator.ok()) return fail(evaluator.status());
  std::vector<TruthTable> tables;
  for (Protocol protocol : *protocols) {
    for (uint16_t port : *ports) {
      tables.push_back(TruthTable{protocol, port, evaluator->Matrix(protocol, port)});
    }
  }
  if (!group_by.empty()) {
    PrintGroupedTables(*cluster, tables, group_by, output == "json");
    return kExitOk;
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
    // Row by row: the whole table as text is n * n * width bytes.
    std::string row = absl::StrFormat(
        "%-*s", width, absl::StrCat(ProtocolName(table.protocol), "/", table.port));
    for (const std::string& name : names) absl::StrAppend(&row, " ", absl::StrFormat("%*s", width, name));
    std::cout << row << "\n";
    for (int i = 0; i < n; ++i) {
      row = absl::StrFormat("%-*s", width, names[i]);
      for (int j = 0; j < n; ++j) {
        bool allowed = table.allowed[static_cast<size_t>(i) * n + j] != 0;
        absl::StrAppend(&row, " ", absl::StrFormat("%*s", width, allowed ? "." : "X"));
      }
      std::cout << row << "\n";
    }
    std::cout << "\n";
  }
  std::cout << "rows: source pod; columns: destination pod; \".\" allowed, \"X\" denied\n";
  return kExitOk;
}

}  // namespace np::cli
