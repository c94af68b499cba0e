// `netpol compile`: what one node's datapath runs — the backend's program (Render), the IR
// it comes from (--ir), or which rule, set element or map key decides a flow (--explain).
#include <iostream>
#include <set>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "np/backends/backend.h"
#include "np/backends/util.h"
#include "np/cli/cli.h"
#include "np/engine.h"
#include "np/lower.h"

ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(std::string, from);
ABSL_DECLARE_FLAG(std::string, to);
ABSL_DECLARE_FLAG(std::string, port);
ABSL_DECLARE_FLAG(std::string, protocol);
ABSL_DECLARE_FLAG(std::string, family);
ABSL_FLAG(std::string, backend, "nft", "compile, probe: the datapath: nft, iptables or ebpf.");
ABSL_FLAG(std::string, node, "",
          "compile: the node whose program to print (spec.nodeName); default: the only node "
          "of the input's pods (all pods when none has a node).");
ABSL_FLAG(bool, ir, false, "compile: print the compiled IR (proto/compiled.proto) instead.");
ABSL_FLAG(std::string, ir_format, "text", "compile --ir: text (protobuf text format) or json.");
ABSL_FLAG(bool, flatten_tiers, false,
          "compile: fold the policy tiers into each direction's allow rules (the final "
          "verdict) instead of handing the datapath the ordered tier rules: a fallback for a "
          "datapath that does not enforce tier rules, and a check of the ordered form.");
ABSL_FLAG(bool, explain, false,
          "compile: with --from, --to, --port, --protocol: which rule, set element or map key "
          "of the backend's program decides the flow. connections, diff: each line with the "
          "rules that decide it, per side.");
ABSL_FLAG(bool, stats, false,
          "compile: what the program asks of the kernel (rules, sets, set elements, map "
          "entries, identities) against each backend's limits and budgets; --backend may "
          "name several (comma-separated) or all; -o json. Exit 1 when a program does not fit.");
ABSL_FLAG(std::string, budget, "",
          "compile: budgets to raise, NAME=N[,NAME=N...], names as --stats prints them; "
          "BACKEND.NAME=N for one backend only.");

namespace np::cli {
namespace {

int Fail(const absl::Status& s) {
  std::cerr << "netpol compile: " << s.message() << "\n";
  return kExitError;
}

absl::StatusOr<std::string> ChooseNode(const Cluster& cluster) {
  std::string node = absl::GetFlag(FLAGS_node);
  std::set<std::string> nodes;
  for (int i = 0; i < cluster.pod_count(); ++i) {
    if (!cluster.pod(i).node_name.empty()) nodes.insert(cluster.pod(i).node_name);
  }
  if (!node.empty()) {
    // A program without endpoints enforces nothing: most likely a misspelt node.
    if (nodes.count(node) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "no pod of the input runs on node ", DisplayText(node),
          ", so its program would enforce nothing (",
          nodes.empty() ? "no pod has spec.nodeName; leave out --node"
                        : absl::StrCat("nodes: ", absl::StrJoin(nodes, ", ")),
          ")"));
    }
    return node;
  }
  if (nodes.size() <= 1) return nodes.empty() ? std::string() : *nodes.begin();
  return absl::InvalidArgumentError(absl::StrCat("the pods run on several nodes (",
                                                 absl::StrJoin(nodes, ", "),
                                                 "): choose one with --node"));
}

// A flow end as an address: a pod's address of the chosen family, or the address given.
absl::StatusOr<std::string> AddressOf(const Cluster& cluster, const Endpoint& e,
                                      AddressFamily family, absl::string_view what) {
  if (!e.is_pod) return e.address.ToString();
  const PodInfo& pod = cluster.pod(e.pod_index);
  if (pod.ip(family)) return pod.ip(family)->ToString();
  for (const IpAddress& ip : pod.ips) return ip.ToString();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " ", pod.Key(), " has no address: a datapath cannot see its packets"));
}

// --stats: the IR's sizes and each named backend's capacity report.
int PrintStats(const ir::CompiledPolicy& ir, std::string* text) {
  std::vector<std::string> names = absl::StrSplit(absl::GetFlag(FLAGS_backend), ',');
  if (names.size() == 1 && names[0] == "all") names = {"nft", "iptables", "ebpf"};
  ir::CompileStats stats;
  stats.set_node(ir.node());
  stats.set_endpoints(ir.endpoints_size());
  stats.set_identities(ir.identities_size());
  stats.set_address_ranges(ir.ipv4_size() + ir.ipv6_size());
  stats.set_peer_sets(ir.peer_sets_size());
  stats.set_tables(ir.tables_size());
  for (const ir::Table& t : ir.tables()) {
    for (const ir::DirectionPolicy* d : {&t.ingress(), &t.egress()}) {
      stats.set_rules(stats.rules() + d->rules_size());
      stats.set_tier_rules(stats.tier_rules() + d->admin_size() + d->baseline_size());
    }
  }
  bool fits = true;
  for (const std::string& name : names) {
    absl::StatusOr<backends::BackendOptions> options = BudgetOptions(name);
    if (!options.ok()) return Fail(options.status());
    std::unique_ptr<backends::Backend> backend = backends::MakeBackend(name, *options);
    if (backend == nullptr) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("no backend \"", name, "\" in this build (nft, iptables, ebpf, all)")));
    }
    absl::StatusOr<ir::BackendCapacity> capacity = backend->Capacity(ir);
    if (!capacity.ok()) return Fail(capacity.status());
    fits = fits && capacity->fits();
    *stats.add_backends() = *std::move(capacity);
  }
  if (absl::GetFlag(FLAGS_output) == "json") {
    google::protobuf::util::JsonPrintOptions json;
    json.add_whitespace = true;
    json.preserve_proto_field_names = true;
    json.always_print_primitive_fields = true;
    if (!google::protobuf::util::MessageToJsonString(stats, text, json).ok()) {
      return Fail(absl::InternalError("could not print the stats as JSON"));
    }
  } else {
    *text = absl::StrCat(
        "IR", stats.node().empty() ? "" : absl::StrCat(" for node ", backends::EscapeText(stats.node())),
        ": ", stats.endpoints(), " endpoints, ", stats.identities(), " identities, ",
        stats.address_ranges(), " address ranges, ", stats.peer_sets(), " peer sets, ",
        stats.tables(), " tables, ", stats.rules(), " port rules, ", stats.tier_rules(),
        " tier rules\n");
    for (const ir::BackendCapacity& c : stats.backends()) {
      absl::StrAppend(text, backends::CapacityText(c));
    }
  }
  return fits ? kExitOk : kExitNo;
}

}  // namespace

absl::StatusOr<backends::BackendOptions> BudgetOptions(absl::string_view backend) {
  backends::BackendOptions options;
  std::string text = absl::GetFlag(FLAGS_budget);
  if (text.empty()) return options;
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    uint64_t value = 0;
    if (kv.first.empty() || !absl::SimpleAtoi(kv.second, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--budget: \"", entry, "\" is not NAME=N or BACKEND.NAME=N"));
    }
    absl::string_view name = kv.first;
    size_t dot = name.find('.');
    if (dot != absl::string_view::npos) {
      if (name.substr(0, dot) != backend) continue;
      name = name.substr(dot + 1);
    }
    options.budgets[std::string(name)] = value;
  }
  return options;
}

int RunCompile(const Args& args) {
  absl::StatusOr<Cluster> cluster = LoadCluster(args, /*print_warnings=*/false);
  if (!cluster.ok()) return Fail(cluster.status());
  absl::StatusOr<EvaluationOptions> evaluation = OptionsFromFlags();
  if (!evaluation.ok()) return Fail(evaluation.status());
  absl::StatusOr<std::string> node = ChooseNode(*cluster);
  if (!node.ok()) return Fail(node.status());
  EngineOptions engine_options;
  engine_options.evaluation = *evaluation;
  engine_options.node_name = *node;
  // The kernel answers this node's verdicts from the lowering; no lookup reads the verdict
  // bits here, so they would only cost build time and memory.
  engine_options.verdict_bits_bytes = 0;
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, engine_options);
  if (!engine.ok()) return Fail(engine.status());
  LowerOptions lower_options;
  lower_options.flatten_tiers = absl::GetFlag(FLAGS_flatten_tiers);
  absl::StatusOr<ir::CompiledPolicy> ir = LowerToIr(**engine, lower_options);
  if (!ir.ok()) return Fail(ir.status());

  std::string text;
  int exit_code = kExitOk;
  if (absl::GetFlag(FLAGS_stats)) {
    exit_code = PrintStats(*ir, &text);
    if (exit_code == kExitError) return exit_code;
  } else if (absl::GetFlag(FLAGS_ir)) {
    std::string format = absl::GetFlag(FLAGS_ir_format);
    if (format == "json") {
      google::protobuf::util::JsonPrintOptions json;
      json.add_whitespace = true;
      json.preserve_proto_field_names = true;
      if (!google::protobuf::util::MessageToJsonString(*ir, &text, json).ok()) {
        return Fail(absl::InternalError("could not print the IR as JSON"));
      }
    } else if (format == "text") {
      google::protobuf::TextFormat::PrintToString(*ir, &text);
    } else {
      return Fail(absl::InvalidArgumentError("--ir-format must be text or json"));
    }
  } else {
    std::string name = absl::GetFlag(FLAGS_backend);
    absl::StatusOr<backends::BackendOptions> options = BudgetOptions(name);
    if (!options.ok()) return Fail(options.status());
    std::unique_ptr<backends::Backend> backend = backends::MakeBackend(name, *options);
    if (backend == nullptr) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "no backend \"", name, "\" in this build (nft, iptables, ebpf)")));
    }
    if (absl::GetFlag(FLAGS_explain)) {
      if (absl::GetFlag(FLAGS_from).empty() || absl::GetFlag(FLAGS_to).empty()) {
        return Fail(absl::InvalidArgumentError("--explain needs --from and --to"));
      }
      absl::StatusOr<Endpoint> from = ParseEndpoint(*cluster, absl::GetFlag(FLAGS_from));
      if (!from.ok()) return Fail(from.status());
      absl::StatusOr<Endpoint> to = ParseEndpoint(*cluster, absl::GetFlag(FLAGS_to));
      if (!to.ok()) return Fail(to.status());
      absl::StatusOr<std::vector<uint16_t>> ports = ParsePortList(absl::GetFlag(FLAGS_port));
      if (!ports.ok()) return Fail(ports.status());
      absl::StatusOr<std::vector<Protocol>> protocols =
          ParseProtocolList(absl::GetFlag(FLAGS_protocol));
      if (!protocols.ok()) return Fail(protocols.status());
      if (ports->size() != 1 || protocols->size() != 1) {
        return Fail(absl::InvalidArgumentError("--explain takes one --port and one --protocol"));
      }
      AddressFamily family = absl::GetFlag(FLAGS_family).substr(0, 1) == "6"
                                 ? AddressFamily::kIPv6
                                 : AddressFamily::kIPv4;
      // An external end fixes the family.
      if (!from->is_pod) family = from->address.family();
      if (!to->is_pod) family = to->address.family();
      absl::StatusOr<std::string> src = AddressOf(*cluster, *from, family, "source");
      if (!src.ok()) return Fail(src.status());
      absl::StatusOr<std::string> dst = AddressOf(*cluster, *to, family, "destination");
      if (!dst.ok()) return Fail(dst.status());
      backends::FlowQuery query{*src, *dst, static_cast<uint8_t>(protocols->front()),
                                ports->front()};
      absl::StatusOr<std::string> why = backend->Explain(*ir, query);
      if (!why.ok()) return Fail(why.status());
      text = *why;
      // The engine's word on the same packet, cluster-wide, for comparison.
      absl::StatusOr<IpAddress> s = IpAddress::Parse(*src);
      absl::StatusOr<IpAddress> d = IpAddress::Parse(*dst);
      EngineOptions whole;
      whole.evaluation = *evaluation;
      whole.verdict_bits_bytes = 0;  // one verdict: the exact path is cheaper than the bits
      absl::StatusOr<std::shared_ptr<const Engine>> all = Engine::Build(*cluster, whole);
      if (s.ok() && d.ok() && all.ok()) {
        bool allowed = (*all)->AllowedPacket(*s, *d, protocols->front(), ports->front());
        absl::StrAppend(&text, "engine (whole cluster): ", allowed ? "ALLOWED" : "DENIED",
                        node->empty() ? "" : absl::StrCat(" (this program enforces node ", *node,
                                                          "'s side only)"),
                        "\n");
      }
    } else {
      absl::StatusOr<std::string> rendered = backend->Render(*ir);
      if (!rendered.ok()) return Fail(rendered.status());
      text = *rendered;
    }
  }
  std::string output = absl::GetFlag(FLAGS_output);
  if (output == "text" || output == "-" || (absl::GetFlag(FLAGS_stats) && output == "json")) {
    std::cout << text;
    return exit_code;
  }
  if (absl::Status written = WriteOutputFile(output, text); !written.ok()) return Fail(written);
  return exit_code;
}

}  // namespace np::cli
