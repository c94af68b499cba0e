// `netpol check` and `netpol explain`: one flow, or a Service's backing pods (np/services.h),
// as text or as JSON (-o json, shape in README "check / explain -o json").
#include <algorithm>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "np/cli/cli.h"
#include "np/services.h"

ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(std::string, from);
ABSL_DECLARE_FLAG(std::string, to);
ABSL_DECLARE_FLAG(std::string, port);
ABSL_DECLARE_FLAG(std::string, protocol);

namespace np::cli {
namespace {

bool Given(const Args& args, absl::string_view flag) {
  return std::find(args.given_flags.begin(), args.given_flags.end(), flag) !=
         args.given_flags.end();
}

std::string JsonList(const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  for (const std::string& item : items) quoted.push_back(JsonQuote(item));
  return absl::StrCat("[", absl::StrJoin(quoted, ", "), "]");
}

// {"kind": "pod", "name": "x/a", "synthesized_from": "Deployment x/a"} or an address's.
std::string EndpointJson(const Cluster& cluster, const Endpoint& end) {
  if (!end.is_pod) {
    return absl::StrCat("{\"kind\": \"address\", \"name\": ", JsonQuote(end.address.ToString()),
                        "}");
  }
  const PodInfo& pod = cluster.pod(end.pod_index);
  std::vector<std::string> ips;
  for (const IpAddress& a : pod.ips) ips.push_back(a.ToString());
  return absl::StrCat("{\"kind\": \"pod\", \"name\": ", JsonQuote(pod.Key()),
                      ", \"ips\": ", JsonList(ips),
                      pod.synthesized_from.empty()
                          ? ""
                          : absl::StrCat(", \"synthesized_from\": ",
                                         JsonQuote(pod.synthesized_from)),
                      "}");
}

std::string SideJson(const DirectionVerdict& v) {
  std::vector<std::string> rules;
  for (const RuleRef& r : v.allowing_rules) {
    rules.push_back(absl::StrCat("{\"policy\": ", JsonQuote(r.policy), ", \"direction\": \"",
                                 DirectionName(r.direction), "\", \"rule\": ", r.rule, "}"));
  }
  return absl::StrCat("{\"applies\": ", v.applies ? "true" : "false",
                      ", \"allowed\": ", v.allowed() ? "true" : "false",
                      ", \"isolated\": ", v.isolated ? "true" : "false",
                      ", \"isolating_policies\": ", JsonList(v.isolating_policies),
                      ", \"admitting_rules\": [", absl::StrJoin(rules, ", "), "]",
                      ", \"shared_addresses\": ", JsonList(v.shared_addresses), "}");
}

// The fields of one evaluated flow, without braces (the caller adds its own fields).
std::string FlowFields(const Cluster& cluster, const Flow& flow, const Verdict& verdict) {
  return absl::StrCat("\"source\": ", EndpointJson(cluster, flow.source),
                      ", \"destination\": ", EndpointJson(cluster, flow.destination),
                      ", \"port\": ", flow.port, ", \"protocol\": \"",
                      ProtocolName(flow.protocol), "\", \"family\": \"",
                      AddressFamilyName(verdict.family), "\", \"allowed\": ",
                      verdict.allowed ? "true" : "false",
                      ", \"allowed_as_self\": ", verdict.allowed_as_self ? "true" : "false",
                      ", \"egress\": ", SideJson(verdict.egress),
                      ", \"ingress\": ", SideJson(verdict.ingress));
}

int Fail(const absl::Status& s) {
  std::cerr << "netpol: " << s.message() << "\n";
  return kExitError;
}

int CheckService(const Cluster& cluster, const ClusterEvaluator& evaluator, const Args& args,
                 const Endpoint& source, const std::string& key, bool explain, bool json) {
  std::optional<Protocol> protocol;
  if (Given(args, "protocol")) {
    absl::StatusOr<Protocol> p =
        ParseProtocol(absl::GetFlag(FLAGS_protocol), /*case_insensitive=*/true);
    if (!p.ok()) return Fail(p.status());
    protocol = *p;
  }
  const std::string port = Given(args, "port") ? absl::GetFlag(FLAGS_port) : "";
  absl::StatusOr<ServiceTarget> target = ResolveService(cluster, key, port, protocol);
  if (!target.ok()) return Fail(target.status());
  std::vector<Verdict> verdicts;
  std::vector<Flow> flows;
  int allowed = 0;
  for (const ServiceEndpoint& e : target->endpoints) {
    flows.push_back(Flow{source, Endpoint::Pod(e.pod_index), e.protocol, e.port});
    verdicts.push_back(evaluator.Evaluate(flows.back()));
    allowed += verdicts.back().allowed;
  }
  const int total = static_cast<int>(flows.size());
  const int exit_code = total == 0 ? kExitError : explain ? kExitOk
                                              : allowed == total ? kExitOk : kExitNo;
  if (json) {
    std::vector<std::string> endpoints, not_endpoints;
    for (size_t i = 0; i < flows.size(); ++i) {
      endpoints.push_back(absl::StrCat("{", FlowFields(cluster, flows[i], verdicts[i]), "}"));
    }
    for (const NotAnEndpoint& n : target->not_endpoints) {
      not_endpoints.push_back(absl::StrCat("{\"pod\": ", JsonQuote(cluster.pod(n.pod_index).Key()),
                                           ", \"reason\": ", JsonQuote(n.reason), "}"));
    }
    std::cout << "{\"source\": " << EndpointJson(cluster, source)
              << ", \"destination\": {\"kind\": \"service\", \"name\": " << JsonQuote(target->key)
              << "}, \"port\": " << target->port << ", \"protocol\": \""
              << ProtocolName(target->protocol) << "\", \"allowed\": "
              << (total > 0 && allowed == total ? "true" : "false")
              << ", \"service\": {\"name\": " << JsonQuote(target->key)
              << ", \"port\": " << target->port << ", \"port_name\": "
              << JsonQuote(target->port_name) << ", \"protocol\": \""
              << ProtocolName(target->protocol) << "\", \"target_port\": "
              << JsonQuote(target->target_port) << ", \"endpoints\": ["
              << absl::StrJoin(endpoints, ", ") << "], \"not_endpoints\": ["
              << absl::StrJoin(not_endpoints, ", ") << "], \"note\": " << JsonQuote(kServiceNote)
              << "}}\n";
    if (total == 0) std::cerr << "netpol: Service " << target->key << " has no endpoint pod\n";
    return exit_code;
  }
  std::cout << ServiceVerdictSummary(*target, allowed) << "\n";
  std::cout << "  (" << kServiceNote << ")\n";
  for (size_t i = 0; i < flows.size(); ++i) {
    if (explain) {
      std::cout << FormatVerdict(cluster, flows[i], verdicts[i]);
      PrintInventedAddressNotes(cluster, flows[i], verdicts[i]);
    } else {
      std::cout << "  " << (verdicts[i].allowed ? "ALLOWED" : "DENIED") << ": "
                << EndpointName(cluster, flows[i].source) << " -> "
                << EndpointName(cluster, flows[i].destination) << " "
                << ProtocolName(flows[i].protocol) << "/" << flows[i].port << "\n";
    }
  }
  for (const NotAnEndpoint& n : target->not_endpoints) {
    std::cout << "  not an endpoint: " << cluster.pod(n.pod_index).Key() << " (" << n.reason
              << ")\n";
  }
  if (total == 0) {
    std::cerr << "netpol: Service " << target->key << " has no endpoint pod"
              << (target->not_endpoints.empty()
                      ? ": its selector matches no live pod in its namespace"
                      : "")
              << "\n";
  }
  return exit_code;
}

}  // namespace

int RunCheck(const Args& args, bool explain) {
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output != "text" && output != "json") {
    return Fail(absl::InvalidArgumentError("-o must be text or json"));
  }
  const bool json = output == "json";
  absl::StatusOr<Cluster> cluster = LoadCluster(args, /*print_warnings=*/false);
  if (!cluster.ok()) return Fail(cluster.status());
  if (absl::GetFlag(FLAGS_from).empty() || absl::GetFlag(FLAGS_to).empty()) {
    return Fail(absl::InvalidArgumentError("--from and --to are required"));
  }
  if (IsServiceReference(absl::GetFlag(FLAGS_from))) {
    return Fail(absl::InvalidArgumentError(
        "--from: a Service is not a packet source (its pods send from their own addresses); "
        "name a pod or an address"));
  }
  absl::StatusOr<Endpoint> from = ParseEndpoint(*cluster, absl::GetFlag(FLAGS_from));
  if (!from.ok()) return Fail(from.status());
  absl::StatusOr<EvaluationOptions> options = OptionsFromFlags();
  if (!options.ok()) return Fail(options.status());

  std::string service_key;
  if (IsServiceReference(absl::GetFlag(FLAGS_to), &service_key)) {
    absl::StatusOr<ClusterEvaluator> evaluator = MakeEvaluator(*cluster, *options);
    if (!evaluator.ok()) return Fail(evaluator.status());
    return CheckService(*cluster, *evaluator, args, *from, service_key, explain, json);
  }

  absl::StatusOr<Endpoint> to = ParseEndpoint(*cluster, absl::GetFlag(FLAGS_to));
  if (!to.ok()) return Fail(to.status());
  if (!from->is_pod && !to->is_pod) {
    return Fail(absl::InvalidArgumentError(
        "neither end is a pod of the cluster: NetworkPolicy does not govern this flow"));
  }
  absl::StatusOr<std::vector<Protocol>> protocols =
      ParseProtocolList(absl::GetFlag(FLAGS_protocol));
  if (!protocols.ok()) return Fail(protocols.status());
  if (protocols->size() != 1) {
    return Fail(absl::InvalidArgumentError("check takes one --port and one --protocol"));
  }
  // A port name (`--port http`) is the destination pod's container port of that name.
  const std::string port_text = absl::GetFlag(FLAGS_port);
  uint16_t port = 0;
  const bool is_name =
      !port_text.empty() && port_text.find(',') == std::string::npos &&
      std::any_of(port_text.begin(), port_text.end(), [](char c) { return absl::ascii_isalpha(c); });
  if (is_name) {
    if (!to->is_pod) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--port ", DisplayText(port_text),
          ": a port name needs a pod destination (it names a container port)")));
    }
    absl::StatusOr<uint16_t> number =
        ResolvePodPortName(*cluster, to->pod_index, port_text, protocols->front());
    if (!number.ok()) return Fail(number.status());
    port = *number;
  } else {
    absl::StatusOr<std::vector<uint16_t>> ports = ParsePortList(port_text);
    if (!ports.ok()) return Fail(ports.status());
    if (ports->size() != 1) {
      return Fail(absl::InvalidArgumentError("check takes one --port and one --protocol"));
    }
    port = ports->front();
  }
  absl::StatusOr<ClusterEvaluator> evaluator = MakeEvaluator(*cluster, *options);
  if (!evaluator.ok()) return Fail(evaluator.status());
  Flow flow{*from, *to, protocols->front(), port};
  Verdict verdict = evaluator->Evaluate(flow);
  if (json) {
    std::cout << "{" << FlowFields(*cluster, flow, verdict);
    if (is_name) std::cout << ", \"port_name\": " << JsonQuote(port_text);
    std::cout << "}\n";
  } else {
    if (is_name) {
      std::cout << "port " << DisplayText(port_text) << " of " << cluster->pod(to->pod_index).Key()
                << " is " << ProtocolName(flow.protocol) << "/" << port << "\n";
    }
    std::cout << FormatVerdict(*cluster, flow, verdict);
    PrintInventedAddressNotes(*cluster, flow, verdict);
  }
  if (explain) return kExitOk;
  return verdict.allowed ? kExitOk : kExitNo;
}

}  // namespace np::cli
