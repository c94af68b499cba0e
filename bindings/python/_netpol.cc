// netpol._netpol — the pybind11 module under the Python package `netpol`.
//
// Thin over np's public API (np/loader.h, np/cluster.h, np/engine.h, np/reference.h,
// np/verdict.h): load objects into a Cluster, compile an Engine (or keep the reference
// evaluator), answer flows, explain them, fill truth tables. The GIL is released while
// loading, validating, compiling and evaluating (house style: re2 python/_re2.cc).
//
// The library never throws; this module turns its Status values into Python exceptions of
// the classes in netpol/_errors.py (ParseError, ValidationError, PodNotFoundError), so that
// Python sees one set of error types whichever layer found the problem. Everything that is
// convenience rather than API (snake_case dicts, Reachability tables) lives in Python.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "np/analysis/connections.h"
#include "np/analysis/lint.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/evaluator.h"
#include "np/loader.h"
#include "np/reference.h"
#include "np/services.h"
#include "np/types.h"
#include "np/verdict.h"

namespace py = pybind11;

namespace {

// Raises netpol._errors.<name>(*args): the error classes are plain Python, defined once.
[[noreturn]] void Raise(const char* name, const py::tuple& args) {
  py::object cls = py::module_::import("netpol._errors").attr(name);
  py::object instance = cls(*args);
  PyErr_SetObject(cls.ptr(), instance.ptr());
  throw py::error_already_set();
}

std::string SeverityName(const np::Diagnostic& d) { return d.is_error() ? "error" : "warning"; }

// What one load produced: the cluster (when valid) and every diagnostic, in the loader's order
// (reading first, then validation). `read_errors` counts errors found while reading (syntax,
// types, unknown fields); the Python layer raises ParseError for those, ValidationError else.
struct LoadResult {
  std::optional<np::Cluster> cluster;
  std::vector<np::Diagnostic> diagnostics;
  int read_errors = 0;
  std::string status_message;  // the Status text when the load failed without diagnostics
  std::map<std::string, int> skipped_kinds;
};

// Objects that come as one-line JSON text from Python dicts have no useful line numbers.
struct TextInput {
  std::string text;
  std::string source_name;
  bool keep_lines = true;
};

// What lives only in the cluster: the namespace_labels and cluster_pods arguments.
struct ClusterOnly {
  std::map<std::string, std::map<std::string, std::string>> namespace_labels;
  std::vector<np::Workload> pods;
};

LoadResult Load(const std::vector<std::string>& paths, const std::vector<TextInput>& texts,
                np::WorkloadOptions workload_options, ClusterOnly cluster_only) {
  LoadResult result;
  np::ClusterLoader loader;
  loader.SetWorkloadOptions(std::move(workload_options));
  for (const auto& [name, labels] : cluster_only.namespace_labels) {
    // One set of labels per namespace: AddNamespaceLabels cannot fail here.
    loader.AddNamespaceLabels(name, labels, "namespace_labels").IgnoreError();
  }
  for (np::Workload& pod : cluster_only.pods) loader.AddClusterPod(std::move(pod));
  for (const std::string& path : paths) {
    absl::Status status = loader.AddPath(path);
    // A path that cannot be read is an OS error in Python (FileNotFoundError, ...), raised
    // before anything else: nothing was read from it to report on.
    if (absl::IsNotFound(status) || (!status.ok() && !absl::IsInvalidArgument(status))) {
      result.status_message = std::string(status.message());
      result.read_errors = -static_cast<int>(status.code());
      return result;
    }
  }
  for (const TextInput& input : texts) {
    loader.AddText(input.text, input.source_name).IgnoreError();
  }
  for (const np::Diagnostic& d : loader.diagnostics()) {
    if (d.is_error()) ++result.read_errors;
  }
  result.skipped_kinds = loader.skipped_kinds();
  absl::StatusOr<np::Cluster> cluster = loader.Build(&result.diagnostics);
  if (cluster.ok()) {
    result.cluster = *std::move(cluster);
  } else {
    result.status_message = std::string(cluster.status().message());
  }
  for (np::Diagnostic& d : result.diagnostics) {
    for (const TextInput& input : texts) {
      if (!input.keep_lines && d.location.file == input.source_name) d.location.line = 0;
    }
  }
  return result;
}

// A cluster with its evaluator: the indexed engine, or the reference (no compile step).
class PyCluster {
 public:
  PyCluster(np::ClusterEvaluator evaluator, std::vector<np::Diagnostic> warnings,
            std::map<std::string, int> skipped)
      : evaluator_(std::move(evaluator)),
        cluster_(evaluator_.cluster()),
        warnings_(std::move(warnings)),
        skipped_(std::move(skipped)) {}
  // cluster_ refers into evaluator_: never copied or moved (Python holds a shared_ptr).
  PyCluster(const PyCluster&) = delete;
  PyCluster& operator=(const PyCluster&) = delete;

  const np::Cluster& cluster() const { return cluster_; }
  const std::vector<np::Diagnostic>& warnings() const { return warnings_; }
  const std::map<std::string, int>& skipped_kinds() const { return skipped_; }
  const np::EvaluationOptions& options() const { return evaluator_.options(); }
  const std::vector<np::IpPrefix>& pod_cidrs() const { return pod_cidrs_; }
  void set_pod_cidrs(std::vector<np::IpPrefix> cidrs) { pod_cidrs_ = std::move(cidrs); }
  std::string engine_name() const {
    return evaluator_.kind() == np::ClusterEvaluator::Kind::kEngine ? "engine" : "reference";
  }

  std::vector<std::string> Pods() const {
    std::vector<std::string> out;
    for (int i = 0; i < cluster_.pod_count(); ++i) out.push_back(cluster_.pod(i).Key());
    return out;
  }
  std::vector<std::string> Namespaces() const {
    std::vector<std::string> out;
    for (int i = 0; i < cluster_.namespace_count(); ++i) out.push_back(cluster_.ns(i).name);
    return out;
  }
  std::vector<std::string> Services() const {
    std::vector<std::string> out;
    for (int i = 0; i < cluster_.service_count(); ++i) {
      const np::k8s::ObjectMeta& m = cluster_.service(i).metadata();
      out.push_back(absl::StrCat(m.namespace_(), "/", m.name()));
    }
    return out;
  }
  std::vector<std::string> Policies() const {
    std::vector<std::string> out;
    for (int i = 0; i < cluster_.policy_count(); ++i) out.push_back(cluster_.PolicyKey(i));
    return out;
  }
  std::vector<std::string> PodIps(const std::string& key) const {
    std::optional<int> pod = cluster_.FindPod(WithNamespace(key));
    if (!pod) RaisePodNotFound(key);
    std::vector<std::string> out;
    for (const np::IpAddress& ip : cluster_.pod(*pod).ips) out.push_back(ip.ToString());
    return out;
  }
  std::map<std::string, std::string> PodLabels(const std::string& key) const {
    std::optional<int> pod = cluster_.FindPod(WithNamespace(key));
    if (!pod) RaisePodNotFound(key);
    std::map<std::string, std::string> out;
    for (const auto& [k, v] : cluster_.pod(*pod).labels) out[k] = v;
    return out;
  }

  std::optional<std::string> SynthesizedFrom(const std::string& key) const {
    std::optional<int> pod = cluster_.FindPod(WithNamespace(key));
    if (!pod) RaisePodNotFound(key);
    const std::string& from = cluster_.pod(*pod).synthesized_from;
    if (from.empty()) return std::nullopt;
    return from;
  }

  // As the CLI reads an end (np::ParseEndpoint). Raises with the GIL held.
  np::Endpoint ParseEndpoint(const std::string& text) const {
    absl::StatusOr<np::Endpoint> endpoint = np::ParseEndpoint(cluster_, text);
    if (!endpoint.ok()) RaisePodNotFound(text);
    return *endpoint;
  }

  // A port as Python gives it: a number, a name, or None (80 for a pod; a Service's only port).
  using PortArg = std::optional<std::variant<int, std::string>>;

  np::Flow ParseFlow(const std::string& source, const std::string& destination,
                     const PortArg& port, const std::optional<std::string>& protocol) const {
    np::Flow flow;
    flow.protocol = ParseProtocolOrRaise(protocol.value_or("TCP"));
    flow.source = ParseSourceOfService(source);
    flow.destination = ParseEndpoint(destination);
    if (!flow.source.is_pod && !flow.destination.is_pod) {
      throw py::value_error(absl::StrCat(
          "neither ", source, " nor ", destination,
          " is a pod of the cluster: NetworkPolicy does not govern this flow"));
    }
    int number_given = 0;
    if (port && std::holds_alternative<std::string>(*port) &&
        !absl::SimpleAtoi(std::get<std::string>(*port), &number_given)) {
      // A name is the destination pod's container port of that name and protocol.
      const std::string& name = std::get<std::string>(*port);
      if (!flow.destination.is_pod) {
        throw py::value_error(absl::StrCat("port \"", name, "\": a port name needs a pod "
                                           "destination (it names a container port)"));
      }
      absl::StatusOr<uint16_t> number =
          np::ResolvePodPortName(cluster_, flow.destination.pod_index, name, flow.protocol);
      if (!number.ok()) throw py::value_error(std::string(number.status().message()));
      flow.port = *number;
    } else {
      if (port && std::holds_alternative<int>(*port)) number_given = std::get<int>(*port);
      flow.port = ParsePortOrRaise(port ? number_given : 80);
    }
    return flow;
  }

  // "svc/namespace/name" resolved on a Service port (np/services.h). Raises KeyError for an
  // unknown Service, ValueError for a port or protocol that does not fit, or a Service whose
  // pods np cannot know. Needs the GIL.
  np::ServiceTarget ResolveServiceOrRaise(const std::string& key, const PortArg& port,
                                          const std::optional<std::string>& protocol) const {
    std::optional<np::Protocol> p;
    if (protocol) p = ParseProtocolOrRaise(*protocol);
    std::string port_text;
    if (port) {
      port_text = std::holds_alternative<int>(*port) ? absl::StrCat(std::get<int>(*port))
                                                     : std::get<std::string>(*port);
    }
    absl::StatusOr<np::ServiceTarget> target = np::ResolveService(cluster_, key, port_text, p);
    if (absl::IsNotFound(target.status())) {
      throw py::key_error(std::string(target.status().message()));
    }
    if (!target.ok()) throw py::value_error(std::string(target.status().message()));
    return *std::move(target);
  }

  np::Endpoint ParseSourceOfService(const std::string& source) const {
    if (np::IsServiceReference(source)) {
      throw py::value_error("source: a Service is not a packet source (its pods send from "
                            "their own addresses); name a pod or an address");
    }
    return ParseEndpoint(source);
  }

  // The evaluation itself: no Python objects touched, safe without the GIL.
  bool Allowed(const np::Flow& flow) const { return evaluator_.Allowed(flow); }
  np::Verdict Explain(const np::Flow& flow) const { return evaluator_.Evaluate(flow); }
  // A cluster-wide engine with this cluster's options (the evaluator may be the reference),
  // built on first use. Called without the GIL; serialized by its own mutex.
  absl::StatusOr<std::shared_ptr<const np::Engine>> AnalysisEngine() const {
    std::lock_guard<std::mutex> lock(engine_mutex_);
    if (engine_ == nullptr) {
      np::EngineOptions options;
      options.evaluation = evaluator_.options();
      absl::StatusOr<std::shared_ptr<const np::Engine>> built = np::Engine::Build(cluster_, options);
      if (!built.ok()) return built.status();
      engine_ = *built;
    }
    return engine_;
  }

  // Row-major pods x pods, 1 allowed, 0 denied, in the order of Pods().
  std::string Matrix(np::Protocol protocol, uint16_t port) const {
    std::vector<uint8_t> table = evaluator_.Matrix(protocol, port);
    return std::string(table.begin(), table.end());
  }

  static np::Protocol ParseProtocolOrRaise(const std::string& text) {
    absl::StatusOr<np::Protocol> p = np::ParseProtocol(text, /*case_insensitive=*/true);
    if (!p.ok()) {
      throw py::value_error(
          absl::StrCat("protocol must be TCP, UDP or SCTP, not \"", text, "\""));
    }
    return *p;
  }
  static uint16_t ParsePortOrRaise(int port) {
    if (port < 1 || port > 65535) {
      throw py::value_error(absl::StrCat("port must be from 1 to 65535, not ", port));
    }
    return static_cast<uint16_t>(port);
  }

 private:
  static std::string WithNamespace(absl::string_view key) {
    return key.find('/') == absl::string_view::npos ? absl::StrCat("default/", key)
                                                    : std::string(key);
  }
  // A pod the input holds but leaves out of pod networking (hostNetwork, finished) is named
  // with the reason, rather than as if it were missing.
  [[noreturn]] void RaisePodNotFound(const std::string& text) const {
    std::string key = WithNamespace(text);
    std::optional<std::string> why = cluster_.WhyLeftOut(key);
    Raise("PodNotFoundError",
          py::make_tuple(why ? *why
                             : absl::StrCat("no pod \"", key,
                                            "\" in the cluster (write namespace/name, or an IP "
                                            "address for a peer outside the cluster)"),
                         key));
  }
  np::ClusterEvaluator evaluator_;  // the engine or the reference, over cluster_
  const np::Cluster& cluster_;
  std::vector<np::Diagnostic> warnings_;
  std::map<std::string, int> skipped_;
  // The CIDRs synthesized pods took their addresses from: explain's note on a verdict that
  // depends on an address np invented (np/analysis/lint.h, NP109).
  std::vector<np::IpPrefix> pod_cidrs_ = np::WorkloadOptions::DefaultPodCidrs();
  mutable std::mutex engine_mutex_;
  mutable std::shared_ptr<const np::Engine> engine_;
};

// Listing filters from Python arguments (the CLI's spelling: see `netpol connections`).
np::analysis::ConnectionOptions AnalysisOptions(const std::string& source,
                                                const std::string& destination,
                                                const std::vector<std::string>& ports,
                                                const std::vector<std::string>& protocols,
                                                bool external, bool explain) {
  np::analysis::ConnectionOptions options;
  options.from = source;
  options.to = destination;
  options.external = external;
  options.explain = explain;
  for (const std::string& p : ports) {
    if (p == "all") {
      options.ports.clear();
      options.port_names.clear();
      break;
    }
    std::vector<std::string> ends = absl::StrSplit(p, absl::MaxSplits('-', 1));
    int first = 0, last = 0;
    if (absl::SimpleAtoi(ends[0], &first)) {
      last = first;
      if (ends.size() == 2 && !absl::SimpleAtoi(ends[1], &last)) last = -1;
      if (first < 1 || last > 65535 || last < first) {
        throw py::value_error(absl::StrCat("bad port \"", p,
                                           "\": a number or range within 1-65535, a name, or all"));
      }
      options.ports.push_back(np::PortRange{static_cast<uint16_t>(first), static_cast<uint16_t>(last)});
    } else {
      options.port_names.push_back(p);
    }
  }
  for (const std::string& p : protocols) options.protocols.push_back(PyCluster::ParseProtocolOrRaise(p));
  return options;
}

// [{"from": ..., "to": ..., "ports": {"TCP": [(first, last), ...]}}] as `-o json` shapes it.
py::list ConnectionsToPython(const std::vector<np::analysis::Connection>& list) {
  py::list out;
  for (const np::analysis::Connection& c : list) {
    py::dict ports;
    for (np::Protocol p : np::kAllProtocols) {
      const auto& ranges = c.ports.by_protocol[np::ProtocolIndex(p)];
      if (ranges.empty()) continue;
      py::list items;
      for (const np::PortRange& r : ranges) items.append(py::make_tuple(r.first, r.last));
      ports[py::str(std::string(np::ProtocolName(p)))] = items;
    }
    py::dict entry;
    entry["from"] = c.from.name;
    entry["to"] = c.to.name;
    entry["ports"] = ports;
    // With explain=True, as `-o json` adds them.
    auto reasons = [](const np::analysis::Reasons& r) {
      py::dict sides;
      sides["egress"] = py::cast(r.egress);
      sides["ingress"] = py::cast(r.ingress);
      return sides;
    };
    if (!c.why.empty()) entry["why"] = reasons(c.why);
    if (!c.why_not.empty()) entry["why_not"] = reasons(c.why_not);
    out.append(entry);
  }
  return out;
}

// A verdict with the flow it answers, and its text (np::FormatVerdict) made while the
// cluster is at hand.
struct Explanation {
  np::Verdict verdict;
  std::string source, destination, protocol, text;
  int port = 0;
};

// Evaluates `flow` and keeps what Python reads of it. Needs no GIL.
Explanation Explain(const PyCluster& c, const np::Flow& flow) {
  Explanation e;
  e.verdict = c.Explain(flow);
  e.text = np::FormatVerdict(c.cluster(), flow, e.verdict);
  // As `netpol explain` does: say when the verdict hangs on an address np made up.
  np::analysis::LintOptions lint_options;
  lint_options.evaluation = c.options();
  lint_options.pod_cidrs = c.pod_cidrs();
  for (const np::analysis::Finding& f :
       np::analysis::InventedAddressFindings(c.cluster(), flow, e.verdict, lint_options)) {
    absl::StrAppend(&e.text, "  note: ", f.message, " (", np::DisplayText(f.object), " ",
                    np::DisplayText(f.field), ")\n");
  }
  e.source = np::EndpointName(c.cluster(), flow.source);
  e.destination = np::EndpointName(c.cluster(), flow.destination);
  e.protocol = std::string(np::ProtocolName(flow.protocol));
  e.port = flow.port;
  return e;
}

// Verdicts on every endpoint pod of a Service port (np/services.h).
struct ServiceExplanation {
  np::ServiceTarget target;
  std::vector<Explanation> endpoints;
  std::vector<std::pair<std::string, std::string>> not_endpoints;  // pod, reason
  std::string text;
  bool allowed() const {
    if (endpoints.empty()) return false;
    for (const Explanation& e : endpoints) {
      if (!e.verdict.allowed) return false;
    }
    return true;
  }
};

// Needs no GIL.
ServiceExplanation ExplainService(const PyCluster& c, const np::Endpoint& source,
                                  np::ServiceTarget target) {
  ServiceExplanation out;
  int allowed = 0;
  for (const np::ServiceEndpoint& e : target.endpoints) {
    out.endpoints.push_back(
        Explain(c, np::Flow{source, np::Endpoint::Pod(e.pod_index), e.protocol, e.port}));
    allowed += out.endpoints.back().verdict.allowed;
  }
  out.text = absl::StrCat(np::ServiceVerdictSummary(target, allowed), "\n  (",
                          np::kServiceNote, ")\n");
  for (const Explanation& e : out.endpoints) absl::StrAppend(&out.text, e.text);
  for (const np::NotAnEndpoint& n : target.not_endpoints) {
    out.not_endpoints.emplace_back(c.cluster().pod(n.pod_index).Key(), n.reason);
    absl::StrAppend(&out.text, "  not an endpoint: ", out.not_endpoints.back().first, " (",
                    n.reason, ")\n");
  }
  out.target = std::move(target);
  return out;
}

std::shared_ptr<PyCluster> MakeCluster(const std::vector<std::string>& paths,
                                       const std::vector<TextInput>& texts,
                                       const std::string& engine, bool allow_self,
                                       const std::string& ipblock_scope,
                                       const std::optional<std::vector<std::string>>& pod_cidrs,
                                       bool expand_replicas,
                                       const std::map<std::string, std::map<std::string, std::string>>&
                                           namespace_labels,
                                       const std::vector<std::string>& cluster_pods) {
  ClusterOnly cluster_only;
  cluster_only.namespace_labels = namespace_labels;
  for (const std::string& text : cluster_pods) {
    absl::StatusOr<np::Workload> pod = np::ParseClusterPod(text, "cluster_pods");
    if (!pod.ok()) throw py::value_error(absl::StrCat("cluster_pods: ", pod.status().message()));
    cluster_only.pods.push_back(*std::move(pod));
  }
  np::WorkloadOptions workload_options;
  workload_options.expand_replicas = expand_replicas;
  if (pod_cidrs) {
    absl::StatusOr<std::vector<np::IpPrefix>> cidrs = np::ParsePodCidrs(*pod_cidrs);
    if (!cidrs.ok()) throw py::value_error(absl::StrCat("pod_cidrs: ", cidrs.status().message()));
    workload_options.pod_cidrs = *std::move(cidrs);
  }
  const std::vector<np::IpPrefix> pod_cidrs_used = workload_options.pod_cidrs;
  if (engine != "engine" && engine != "reference") {
    throw py::value_error(
        absl::StrCat("engine must be \"engine\" or \"reference\", not \"", engine, "\""));
  }
  np::EvaluationOptions options;
  options.always_allow_self = allow_self;
  if (ipblock_scope == "all") {
    options.ip_block_scope = np::EvaluationOptions::IpBlockScope::kAllAddresses;
  } else if (ipblock_scope == "external") {
    options.ip_block_scope = np::EvaluationOptions::IpBlockScope::kExternalOnly;
  } else {
    throw py::value_error(absl::StrCat("ipblock_scope must be \"all\" or \"external\", not \"",
                                       ipblock_scope, "\""));
  }

  LoadResult loaded;
  absl::StatusOr<np::ClusterEvaluator> built = absl::UnknownError("not loaded");
  {
    py::gil_scoped_release release;
    loaded = Load(paths, texts, std::move(workload_options), std::move(cluster_only));
    if (loaded.cluster) {
      built = np::ClusterEvaluator::Create(*loaded.cluster,
                                           engine == "engine"
                                               ? np::ClusterEvaluator::Kind::kEngine
                                               : np::ClusterEvaluator::Kind::kReference,
                                           options);
    }
  }
  if (loaded.read_errors < 0) {
    // An unreadable path: FileNotFoundError for a missing one, OSError otherwise.
    auto code = static_cast<absl::StatusCode>(-loaded.read_errors);
    py::object os_error = py::module_::import("builtins")
                              .attr(code == absl::StatusCode::kNotFound ? "FileNotFoundError"
                                                                        : "OSError");
    PyErr_SetObject(os_error.ptr(), py::str(loaded.status_message).ptr());
    throw py::error_already_set();
  }
  if (!loaded.cluster) {
    py::list errors, warnings;
    for (const np::Diagnostic& d : loaded.diagnostics) (d.is_error() ? errors : warnings).append(d);
    Raise(loaded.read_errors > 0 ? "ParseError" : "ValidationError",
          py::make_tuple(loaded.status_message, errors, warnings));
  }
  if (!built.ok()) {
    throw std::runtime_error(
        absl::StrCat("compiling the cluster failed: ", built.status().ToString()));
  }
  std::vector<np::Diagnostic> warnings;
  for (const np::Diagnostic& d : loaded.diagnostics) {
    if (!d.is_error()) warnings.push_back(d);
  }
  auto cluster = std::make_shared<PyCluster>(*std::move(built), std::move(warnings),
                                             std::move(loaded.skipped_kinds));
  cluster->set_pod_cidrs(pod_cidrs_used);
  return cluster;
}

}  // namespace

PYBIND11_MODULE(_netpol, m) {
  m.doc() =
      "The C++ core of netpol (np's public API). Use the `netpol` package; this module is "
      "its implementation.";

  py::class_<np::Diagnostic>(m, "Diagnostic",
                             "One finding about the input, naming object and field path.")
      .def_property_readonly("severity", &SeverityName)
      .def_property_readonly("kind", [](const np::Diagnostic& d) { return d.kind.str(); })
      .def_property_readonly("object", [](const np::Diagnostic& d) { return d.object.str(); })
      .def_property_readonly("field", [](const np::Diagnostic& d) { return d.field; })
      .def_property_readonly("message", [](const np::Diagnostic& d) { return d.message; })
      .def_property_readonly("omitted_errors",
                             [](const np::Diagnostic& d) { return d.omitted_errors; })
      .def_property_readonly("omitted_warnings",
                             [](const np::Diagnostic& d) { return d.omitted_warnings; })
      .def_property_readonly("file",
                             [](const np::Diagnostic& d) -> std::optional<std::string> {
                               if (d.location.file.empty()) return std::nullopt;
                               return d.location.file.str();
                             })
      .def_property_readonly("line",
                             [](const np::Diagnostic& d) -> std::optional<int> {
                               if (d.location.line <= 0) return std::nullopt;
                               return d.location.line;
                             })
      .def("__str__", &np::Diagnostic::ToString)
      .def("__repr__", [](const np::Diagnostic& d) {
        return absl::StrCat("<netpol.Diagnostic ", SeverityName(d), ": ",
                            py::repr(py::str(d.ToString())).cast<std::string>(), ">");
      });

  py::class_<np::RuleRef>(m, "Rule", "A rule of a policy: spec.ingress[i] or spec.egress[i].")
      .def_property_readonly("policy", [](const np::RuleRef& r) { return r.policy; })
      .def_property_readonly(
          "direction",
          [](const np::RuleRef& r) { return std::string(np::DirectionName(r.direction)); })
      .def_property_readonly("index", [](const np::RuleRef& r) { return r.rule; })
      .def("__str__", &np::RuleRef::ToString)
      .def("__repr__",
           [](const np::RuleRef& r) { return absl::StrCat("<netpol.Rule ", r.ToString(), ">"); })
      .def("__eq__", [](const np::RuleRef& a, const np::RuleRef& b) { return a == b; })
      .def("__hash__", [](const np::RuleRef& r) {
        return py::hash(py::make_tuple(r.policy, static_cast<int>(r.direction), r.rule));
      });

  py::class_<np::DirectionVerdict>(m, "DirectionVerdict",
                                   "What one side decided: egress at the source pod, or "
                                   "ingress at the destination pod.")
      .def_property_readonly("applies", [](const np::DirectionVerdict& v) { return v.applies; })
      .def_property_readonly("isolated",
                             [](const np::DirectionVerdict& v) { return v.isolated; })
      .def_property_readonly("isolating_policies",
                             [](const np::DirectionVerdict& v) { return v.isolating_policies; })
      .def_property_readonly("allowing_rules",
                             [](const np::DirectionVerdict& v) { return v.allowing_rules; })
      .def_property_readonly("shared_addresses",
                             [](const np::DirectionVerdict& v) { return v.shared_addresses; })
      .def_property_readonly("allowed", &np::DirectionVerdict::allowed)
      .def("__repr__", [](const np::DirectionVerdict& v) {
        return absl::StrCat("<netpol.DirectionVerdict applies=", v.applies ? "True" : "False",
                            " isolated=", v.isolated ? "True" : "False",
                            " allowed=", v.allowed() ? "True" : "False", ">");
      });

  py::class_<Explanation>(m, "Explanation", "A verdict on one flow with its reasons.")
      .def_property_readonly("allowed", [](const Explanation& e) { return e.verdict.allowed; })
      .def_property_readonly("allowed_as_self",
                             [](const Explanation& e) { return e.verdict.allowed_as_self; })
      .def_property_readonly("family",
                             [](const Explanation& e) -> std::optional<std::string> {
                               if (e.verdict.family == np::AddressFamily::kNone) {
                                 return std::nullopt;
                               }
                               return std::string(np::AddressFamilyName(e.verdict.family));
                             })
      .def_property_readonly("egress", [](const Explanation& e) { return e.verdict.egress; })
      .def_property_readonly("ingress", [](const Explanation& e) { return e.verdict.ingress; })
      .def_property_readonly("source", [](const Explanation& e) { return e.source; })
      .def_property_readonly("destination", [](const Explanation& e) { return e.destination; })
      .def_property_readonly("port", [](const Explanation& e) { return e.port; })
      .def_property_readonly("protocol", [](const Explanation& e) { return e.protocol; })
      .def("__str__", [](const Explanation& e) { return e.text; })
      .def("__repr__", [](const Explanation& e) {
        return absl::StrCat("<netpol.Explanation ", e.verdict.allowed ? "ALLOWED" : "DENIED",
                            ": ", e.source, " -> ", e.destination, " ", e.protocol, "/",
                            e.port, ">");
      });

  py::class_<ServiceExplanation>(
      m, "ServiceExplanation",
      "Verdicts on every endpoint pod of a Service port. Services are not a policy input: "
      "each verdict is an ordinary pod-to-pod one on the pod's targetPort.")
      .def_property_readonly("allowed", &ServiceExplanation::allowed)
      .def_property_readonly("service", [](const ServiceExplanation& e) { return e.target.key; })
      .def_property_readonly("port", [](const ServiceExplanation& e) { return e.target.port; })
      .def_property_readonly("port_name",
                             [](const ServiceExplanation& e) { return e.target.port_name; })
      .def_property_readonly("protocol",
                             [](const ServiceExplanation& e) {
                               return std::string(np::ProtocolName(e.target.protocol));
                             })
      .def_property_readonly("target_port",
                             [](const ServiceExplanation& e) { return e.target.target_port; })
      .def_property_readonly("endpoints", [](const ServiceExplanation& e) { return e.endpoints; })
      .def_property_readonly("not_endpoints",
                             [](const ServiceExplanation& e) { return e.not_endpoints; })
      .def("__str__", [](const ServiceExplanation& e) { return e.text; })
      .def("__repr__", [](const ServiceExplanation& e) {
        int allowed = 0;
        for (const Explanation& x : e.endpoints) allowed += x.verdict.allowed;
        return absl::StrCat("<netpol.ServiceExplanation ", e.target.key, " port ", e.target.port,
                            ": ", allowed, " of ", e.endpoints.size(), " endpoint pods allowed>");
      });

  py::class_<TextInput>(m, "TextInput")
      .def(py::init([](std::string text, std::string source_name, bool keep_lines) {
             return TextInput{std::move(text), std::move(source_name), keep_lines};
           }),
           py::arg("text"), py::arg("source_name"), py::arg("keep_lines") = true);

  py::class_<PyCluster, std::shared_ptr<PyCluster>>(m, "Cluster",
                                                    "A validated cluster and its evaluator.")
      .def_static("load", &MakeCluster, py::arg("paths"), py::arg("texts"),
                  py::arg("engine") = "engine", py::arg("allow_self") = false,
                  py::arg("ipblock_scope") = "all", py::arg("pod_cidrs") = std::nullopt,
                  py::arg("expand_replicas") = false,
                  py::arg("namespace_labels") =
                      std::map<std::string, std::map<std::string, std::string>>(),
                  py::arg("cluster_pods") = std::vector<std::string>(),
                  "Reads files/directories and texts, validates, compiles. Raises "
                  "ParseError, ValidationError, FileNotFoundError/OSError.")
      .def_property_readonly("pods", &PyCluster::Pods)
      .def_property_readonly("namespaces", &PyCluster::Namespaces)
      .def_property_readonly("policies", &PyCluster::Policies)
      .def_property_readonly("warnings", &PyCluster::warnings)
      .def_property_readonly("skipped_kinds", &PyCluster::skipped_kinds)
      .def_property_readonly("engine", &PyCluster::engine_name)
      .def_property_readonly("allow_self",
                             [](const PyCluster& c) { return c.options().always_allow_self; })
      .def_property_readonly(
          "ipblock_scope",
          [](const PyCluster& c) {
            return c.options().ip_block_scope ==
                           np::EvaluationOptions::IpBlockScope::kExternalOnly
                       ? "external"
                       : "all";
          })
      .def("pod_ips", &PyCluster::PodIps, py::arg("pod"))
      .def("pod_labels", &PyCluster::PodLabels, py::arg("pod"))
      .def("synthesized_from", &PyCluster::SynthesizedFrom, py::arg("pod"))
      .def(
          "allowed",
          [](const PyCluster& c, const std::string& source, const std::string& destination,
             const PyCluster::PortArg& port, const std::optional<std::string>& protocol) {
            std::string key;
            if (np::IsServiceReference(destination, &key)) {
              np::Endpoint from = c.ParseSourceOfService(source);
              np::ServiceTarget target = c.ResolveServiceOrRaise(key, port, protocol);
              if (target.endpoints.empty()) {
                throw py::value_error(absl::StrCat(
                    "Service ", target.key, " has no endpoint pod",
                    target.not_endpoints.empty()
                        ? " (its selector matches no live pod in its namespace)"
                        : " (the pods it selects lack its targetPort)",
                    ": nothing to evaluate"));
              }
              py::gil_scoped_release release;
              for (const np::ServiceEndpoint& e : target.endpoints) {
                if (!c.Allowed(np::Flow{from, np::Endpoint::Pod(e.pod_index), e.protocol,
                                        e.port})) {
                  return false;
                }
              }
              return true;
            }
            np::Flow flow = c.ParseFlow(source, destination, port, protocol);
            py::gil_scoped_release release;
            return c.Allowed(flow);
          },
          py::arg("source"), py::arg("destination"), py::arg("port") = py::none(),
          py::arg("protocol") = py::none())
      .def(
          "explain",
          [](const PyCluster& c, const std::string& source, const std::string& destination,
             const PyCluster::PortArg& port,
             const std::optional<std::string>& protocol) -> py::object {
            std::string key;
            if (np::IsServiceReference(destination, &key)) {
              np::Endpoint from = c.ParseSourceOfService(source);
              np::ServiceTarget target = c.ResolveServiceOrRaise(key, port, protocol);
              ServiceExplanation e;
              {
                py::gil_scoped_release release;
                e = ExplainService(c, from, std::move(target));
              }
              return py::cast(std::move(e));
            }
            np::Flow flow = c.ParseFlow(source, destination, port, protocol);
            Explanation e;
            {
              py::gil_scoped_release release;
              e = Explain(c, flow);
            }
            return py::cast(std::move(e));
          },
          py::arg("source"), py::arg("destination"), py::arg("port") = py::none(),
          py::arg("protocol") = py::none())
      .def("services", &PyCluster::Services,
           "Every Service, \"namespace/name\", sorted (a query convenience, not a policy "
           "input).")
      .def(
          "connections",
          [](const PyCluster& c, const std::string& source, const std::string& destination,
             const std::vector<std::string>& ports, const std::vector<std::string>& protocols,
             bool external, bool explain) {
            np::analysis::ConnectionOptions options =
                AnalysisOptions(source, destination, ports, protocols, external, explain);
            // An empty listing must mean "nothing is allowed", not "the filter matched nothing".
            if (absl::Status s = np::analysis::CheckFiltersMatch({&c.cluster()}, options); !s.ok()) {
              throw py::value_error(std::string(s.message()));
            }
            absl::StatusOr<np::analysis::Connections> listing = absl::UnknownError("");
            {
              py::gil_scoped_release release;
              absl::StatusOr<std::shared_ptr<const np::Engine>> engine = c.AnalysisEngine();
              listing = engine.ok() ? np::analysis::ListConnections(**engine, options)
                                    : absl::StatusOr<np::analysis::Connections>(engine.status());
            }
            if (!listing.ok()) throw py::value_error(std::string(listing.status().message()));
            return ConnectionsToPython(listing->connections);
          },
          py::arg("source") = "", py::arg("destination") = "",
          py::arg("ports") = std::vector<std::string>(),
          py::arg("protocols") = std::vector<std::string>(), py::arg("external") = true,
          py::arg("explain") = false)
      .def(
          "diff",
          [](const PyCluster& c, const PyCluster& other, const std::string& source,
             const std::string& destination, const std::vector<std::string>& ports,
             const std::vector<std::string>& protocols, bool external, bool explain) {
            np::analysis::ConnectionOptions options =
                AnalysisOptions(source, destination, ports, protocols, external, explain);
            if (absl::Status s =
                    np::analysis::CheckFiltersMatch({&c.cluster(), &other.cluster()}, options);
                !s.ok()) {
              throw py::value_error(std::string(s.message()));
            }
            absl::StatusOr<np::analysis::ConnectionDiff> diff = absl::UnknownError("");
            {
              py::gil_scoped_release release;
              absl::StatusOr<std::shared_ptr<const np::Engine>> a = c.AnalysisEngine();
              const np::EvaluationOptions& x = c.options();
              const np::EvaluationOptions& y = other.options();
              if (!a.ok()) {
                diff = a.status();
              } else if (x.ip_block_scope == y.ip_block_scope &&
                         x.always_allow_self == y.always_allow_self) {
                // `other` as changes to this engine: only the pairs they touch are visited.
                diff = np::analysis::DiffChanges(
                    **a, np::analysis::ChangesBetween(c.cluster(), other.cluster()), options);
              } else {
                // Evaluated under different options, the two snapshots are not one engine's
                // update of the other: compared whole.
                absl::StatusOr<std::shared_ptr<const np::Engine>> b = other.AnalysisEngine();
                diff = b.ok() ? np::analysis::DiffConnections(**a, **b, options)
                              : absl::StatusOr<np::analysis::ConnectionDiff>(b.status());
              }
            }
            if (!diff.ok()) throw py::value_error(std::string(diff.status().message()));
            py::dict out;
            out["added"] = ConnectionsToPython(diff->added);
            out["removed"] = ConnectionsToPython(diff->removed);
            return out;
          },
          py::arg("other"), py::arg("source") = "", py::arg("destination") = "",
          py::arg("ports") = std::vector<std::string>(),
          py::arg("protocols") = std::vector<std::string>(), py::arg("external") = true,
          py::arg("explain") = false)
      .def(
          "matrix",
          [](const PyCluster& c, int port, const std::string& protocol) {
            np::Protocol p = PyCluster::ParseProtocolOrRaise(protocol);
            uint16_t port16 = PyCluster::ParsePortOrRaise(port);
            std::string cells;
            {
              py::gil_scoped_release release;
              cells = c.Matrix(p, port16);
            }
            return py::bytes(cells);
          },
          py::arg("port") = 80, py::arg("protocol") = "TCP",
          "Row-major bytes over `pods`: 1 allowed, 0 denied.");

  // np/analysis/lint.h. Tuples, which netpol.Finding (netpol/_lint.py) names.
  m.def(
      "lint",
      [](const PyCluster& c, const std::optional<std::vector<std::string>>& pod_cidrs) {
        np::analysis::LintOptions options;
        options.evaluation = c.options();
        if (pod_cidrs) {
          absl::StatusOr<std::vector<np::IpPrefix>> cidrs = np::ParsePodCidrs(*pod_cidrs);
          if (!cidrs.ok()) {
            throw py::value_error(absl::StrCat("pod_cidrs: ", cidrs.status().message()));
          }
          options.pod_cidrs = *std::move(cidrs);
        }
        absl::StatusOr<std::vector<np::analysis::Finding>> findings = absl::UnknownError("");
        {
          py::gil_scoped_release release;
          findings = np::analysis::Lint(c.cluster(), options);
        }
        if (!findings.ok()) throw std::runtime_error(findings.status().ToString());
        py::list out;
        for (const np::analysis::Finding& f : *findings) {
          py::object file = py::none(), line = py::none();
          if (!f.location.file.empty()) file = py::str(f.location.file.str());
          if (f.location.line > 0) line = py::int_(f.location.line);
          out.append(py::make_tuple(f.code, f.name,
                                    std::string(np::analysis::SeverityName(f.severity)), f.kind,
                                    f.object, f.field, file, line, f.message));
        }
        return out;
      },
      py::arg("cluster"), py::arg("pod_cidrs") = std::nullopt,
      "(code, name, severity, kind, object, field, file, line, message) per finding.");
}
