#include "np/services.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace np {
namespace {

// "http (TCP/80 -> targetPort http)" for the list of a Service's ports in error messages.
std::string DescribePort(const k8s::ServicePort& port) {
  const k8s::IntOrString& target = port.targetport();
  return absl::StrCat(port.name().empty() ? "(unnamed)" : DisplayText(port.name()), " ",
                      port.protocol(), "/", port.port(), " -> targetPort ",
                      target.type() == 0 ? absl::StrCat(target.intval())
                                         : DisplayText(target.strval()));
}

std::string DescribePorts(const k8s::Service& service) {
  std::vector<std::string> ports;
  for (const k8s::ServicePort& port : service.spec().ports()) ports.push_back(DescribePort(port));
  return ports.empty() ? "none" : absl::StrJoin(ports, ", ");
}

Protocol ProtocolOf(const k8s::ServicePort& port) {
  absl::StatusOr<Protocol> p = ParseProtocol(port.protocol());
  return p.ok() ? *p : Protocol::kTCP;  // validated and defaulted by Cluster::Create
}

// The Service port a query means: by name, by number (and protocol), or the only one.
absl::StatusOr<const k8s::ServicePort*> ChoosePort(const k8s::Service& service,
                                                   const std::string& key,
                                                   absl::string_view port,
                                                   std::optional<Protocol> protocol) {
  std::vector<const k8s::ServicePort*> candidates;
  uint32_t number = 0;
  const bool by_number = !port.empty() && absl::SimpleAtoi(port, &number);
  for (const k8s::ServicePort& p : service.spec().ports()) {
    if (port.empty() || (by_number ? p.port() == static_cast<int64_t>(number) : p.name() == port)) {
      candidates.push_back(&p);
    }
  }
  const std::string listing =
      absl::StrCat(" (its ports: ", DescribePorts(service), ")");
  if (port.empty() && candidates.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Service ", key, " has ", candidates.size(),
        " ports: give one by name or number with --port", listing));
  }
  if (candidates.empty()) {
    return absl::InvalidArgumentError(
        port.empty() ? absl::StrCat("Service ", key, " has no ports")
                     : absl::StrCat("Service ", key, " has no port ", DisplayText(port), listing));
  }
  if (protocol) {
    std::vector<const k8s::ServicePort*> same_protocol;
    for (const k8s::ServicePort* p : candidates) {
      if (ProtocolOf(*p) == *protocol) same_protocol.push_back(p);
    }
    if (same_protocol.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Service ", key, " port ", DisplayText(port.empty() ? candidates[0]->name() : port),
          " is ", candidates[0]->protocol(), ", not ", ProtocolName(*protocol), listing));
    }
    candidates = std::move(same_protocol);
  }
  if (candidates.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Service ", key, " has port ", DisplayText(port), " for several protocols: give one "
        "with --protocol", listing));
  }
  return candidates[0];
}

// podutil.FindPort: the first container port with the name and protocol.
std::optional<uint16_t> FindNamedPort(const PodInfo& pod, absl::string_view name,
                                      Protocol protocol) {
  for (const NamedPort& p : pod.named_ports) {
    if (p.name == name && p.protocol == protocol) return p.port;
  }
  return std::nullopt;
}

bool SelectorMatches(const k8s::Service& service, const PodInfo& pod) {
  for (const auto& [key, value] : service.spec().selector()) {
    auto it = pod.labels.find(key);
    if (it == pod.labels.end() || it->second != value) return false;
  }
  return true;
}

}  // namespace

bool IsServiceReference(absl::string_view text, std::string* key) {
  if (!absl::StartsWith(text, kServicePrefix)) return false;
  absl::string_view rest = text.substr(kServicePrefix.size());
  // Exactly NAMESPACE/NAME: "svc/web" stays pod web of a namespace named svc, as before.
  if (std::count(rest.begin(), rest.end(), '/') != 1) return false;
  if (key != nullptr) *key = std::string(rest);
  return true;
}

absl::StatusOr<ServiceTarget> ResolveService(const Cluster& cluster, absl::string_view key,
                                             absl::string_view port,
                                             std::optional<Protocol> protocol) {
  std::string full_key(key);
  if (!absl::StrContains(full_key, '/')) full_key = absl::StrCat("default/", full_key);
  const size_t slash = full_key.find('/');
  const std::string namespace_name = full_key.substr(0, slash);
  std::optional<int> index =
      cluster.FindService(namespace_name, absl::string_view(full_key).substr(slash + 1));
  if (!index) {
    return absl::NotFoundError(absl::StrCat("no Service \"", DisplayText(full_key),
                                            "\" in the input (write svc/namespace/name)"));
  }
  const k8s::Service& service = cluster.service(*index);
  if (service.spec().type() == "ExternalName") {
    return absl::FailedPreconditionError(absl::StrCat(
        "Service ", full_key, " is of type ExternalName: it is a DNS alias, with no pods "
        "behind it that NetworkPolicy could govern"));
  }
  if (service.spec().selector().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Service ", full_key, " has no selector: its endpoints are kept by hand (EndpointSlices "
        "or Endpoints objects, which np does not read), so np cannot know its backing pods"));
  }
  absl::StatusOr<const k8s::ServicePort*> chosen = ChoosePort(service, full_key, port, protocol);
  if (!chosen.ok()) return chosen.status();
  const k8s::ServicePort& service_port = **chosen;

  ServiceTarget target;
  target.service_index = *index;
  target.key = full_key;
  target.port_name = service_port.name();
  target.port = static_cast<uint16_t>(service_port.port());
  target.protocol = ProtocolOf(service_port);
  const k8s::IntOrString& target_port = service_port.targetport();
  const bool named_target = target_port.type() != 0;
  target.target_port =
      named_target ? target_port.strval() : absl::StrCat(target_port.intval());
  for (int i = 0; i < cluster.pod_count(); ++i) {
    const PodInfo& pod = cluster.pod(i);
    if (pod.namespace_name != namespace_name || !SelectorMatches(service, pod)) continue;
    if (!named_target) {
      target.endpoints.push_back(
          {i, static_cast<uint16_t>(target_port.intval()), target.protocol});
      continue;
    }
    std::optional<uint16_t> number = FindNamedPort(pod, target_port.strval(), target.protocol);
    if (number) {
      target.endpoints.push_back({i, *number, target.protocol});
    } else {
      target.not_endpoints.push_back(
          {i, absl::StrCat("no container port named \"", DisplayText(target_port.strval()),
                           "\" for ", ProtocolName(target.protocol))});
    }
  }
  return target;
}

std::string ServiceVerdictSummary(const ServiceTarget& t, int allowed_endpoints) {
  std::string out = absl::StrCat(
      "Service ", t.key, " port ",
      t.port_name.empty() ? absl::StrCat(t.port) : DisplayText(t.port_name), " (",
      ProtocolName(t.protocol), "/", t.port, " -> targetPort ", DisplayText(t.target_port),
      "): ");
  const int total = static_cast<int>(t.endpoints.size());
  if (total == 0) return absl::StrCat(out, "no endpoint pod, nothing evaluated");
  absl::StrAppend(&out, allowed_endpoints, " of ", total, " backing pod", total == 1 ? "" : "s",
                  " ALLOWED");
  if (allowed_endpoints < total) absl::StrAppend(&out, ", ", total - allowed_endpoints, " DENIED");
  return out;
}

absl::StatusOr<uint16_t> ResolvePodPortName(const Cluster& cluster, int pod_index,
                                            absl::string_view name, Protocol protocol) {
  const PodInfo& pod = cluster.pod(pod_index);
  if (std::optional<uint16_t> number = FindNamedPort(pod, name, protocol)) return *number;
  std::vector<std::string> named;
  for (const NamedPort& p : pod.named_ports) {
    named.push_back(absl::StrCat(DisplayText(p.name), " ", ProtocolName(p.protocol), "/", p.port));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "pod ", pod.Key(), " has no container port named \"", DisplayText(name), "\" for ",
      ProtocolName(protocol), " (its named ports: ",
      named.empty() ? "none" : absl::StrJoin(named, ", "), ")"));
}

}  // namespace np
