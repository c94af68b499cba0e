#include "np/cluster.h"
#include "np/workloads.h"

#include <algorithm>
#include <map>
#include <new>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "np/internal/text.h"
#include "np/tiers/validation.h"
#include "np/validation.h"

namespace np {

const std::string& SharedString::str() const {
  static const std::string* const kEmpty = new std::string();
  return text_ != nullptr ? *text_ : *kEmpty;
}

std::string DisplayText(absl::string_view text) { return internal::DisplayText(text); }

std::string Diagnostic::ToString() const {
  std::string out;
  if (!location.file.empty()) {
    absl::StrAppend(&out, internal::DisplayText(location.file),
                    location.line > 0 ? absl::StrCat(":", location.line) : "", ": ");
  }
  if (severity == Severity::kWarning) absl::StrAppend(&out, "warning: ");
  if (!kind.empty() || !object.empty()) {
    absl::StrAppend(&out, internal::DisplayText(kind), kind.empty() || object.empty() ? "" : " ",
                    internal::DisplayText(object), ": ");
  }
  if (!field.empty()) absl::StrAppend(&out, internal::DisplayText(field), ": ");
  absl::StrAppend(&out, internal::EscapeUnprintable(message));
  return out;
}

namespace {

// "... and 12345 more errors and 2 more warnings not shown".
std::string OmissionMessage(int64_t errors, int64_t warnings) {
  auto count = [](int64_t n, absl::string_view what) {
    return absl::StrCat(n, " more ", what, n == 1 ? "" : "s");
  };
  std::string out = "... and ";
  if (errors > 0) absl::StrAppend(&out, count(errors, "error"));
  if (errors > 0 && warnings > 0) absl::StrAppend(&out, " and ");
  if (warnings > 0) absl::StrAppend(&out, count(warnings, "warning"));
  absl::StrAppend(&out, " not shown (np keeps the first ", kMaxDiagnostics, " findings)");
  return out;
}

}  // namespace

void AppendDiagnostic(std::vector<Diagnostic>* list, Diagnostic d) {
  const bool has_omission = !list->empty() && list->back().is_omission();
  if (!has_omission) {
    if (d.is_omission() || list->size() < kMaxDiagnostics) {
      list->push_back(std::move(d));
      return;
    }
    list->push_back(Diagnostic());  // the list is full: from now on, count
    list->back().severity = Diagnostic::Severity::kWarning;
  }
  Diagnostic& omission = list->back();
  if (d.is_omission()) {
    omission.omitted_errors += d.omitted_errors;
    omission.omitted_warnings += d.omitted_warnings;
  } else {
    ++(d.is_error() ? omission.omitted_errors : omission.omitted_warnings);
  }
  if (omission.omitted_errors > 0) omission.severity = Diagnostic::Severity::kError;
  omission.message = OmissionMessage(omission.omitted_errors, omission.omitted_warnings);
}

int64_t CountErrors(const std::vector<Diagnostic>& list) {
  int64_t n = 0;
  for (const Diagnostic& d : list) {
    n += d.is_omission() ? d.omitted_errors : (d.is_error() ? 1 : 0);
  }
  return n;
}

int64_t CountWarnings(const std::vector<Diagnostic>& list) {
  int64_t n = 0;
  for (const Diagnostic& d : list) {
    n += d.is_omission() ? d.omitted_warnings : (d.is_error() ? 0 : 1);
  }
  return n;
}

std::string ErrorSummary(const std::vector<Diagnostic>& list, size_t max_lines) {
  std::string out;
  size_t lines = 0;
  int64_t left_out = 0;
  for (const Diagnostic& d : list) {
    if (d.is_omission()) {
      left_out += d.omitted_errors;
    } else if (d.is_error() && lines < max_lines) {
      absl::StrAppend(&out, lines++ == 0 ? "" : "\n", d.ToString());
    } else if (d.is_error()) {
      ++left_out;
    }
  }
  if (left_out > 0) {
    absl::StrAppend(&out, lines == 0 ? "" : "\n", "... and ", left_out, " more error",
                    left_out == 1 ? "" : "s");
  }
  return out;
}

int ObjectSource::LineOf(absl::string_view field) const {
  absl::string_view path = field;  // looked up without a copy (the map's hash is transparent)
  while (!path.empty()) {
    auto it = field_lines.find(path);
    if (it != field_lines.end()) return it->second;
    // Strip the last component: "a.b[2]" -> "a.b", "a.b" -> "a".
    size_t cut = path.find_last_of(".[");
    if (cut == absl::string_view::npos) break;
    path = path.substr(0, cut);
  }
  return location.line;
}

namespace {

// The API server fills an absent namespace from the request; kubectl sends "default".
template <typename T>
void DefaultNamespace(T& object) {
  if (object.metadata().namespace_().empty()) {
    object.mutable_metadata()->set_namespace_("default");
  }
}

template <typename T>
std::string ObjectKey(const T& object) {
  return absl::StrCat(object.metadata().namespace_(), "/", object.metadata().name());
}
std::string ObjectKey(const k8s::Namespace& ns) { return ns.metadata().name(); }

// Copies validation findings into `out`, with the source location of each field.
bool Collect(std::vector<Diagnostic> found, const ObjectSource& source,
             std::vector<Diagnostic>* out) {
  bool ok = true;
  for (Diagnostic& d : found) {
    if (d.location.file.empty() && !d.is_omission()) {
      d.location.file = source.location.file;
      d.location.line = source.LineOf(d.field);
    }
    if (d.is_error()) ok = false;
    AppendDiagnostic(out, std::move(d));
  }
  return ok;
}

Diagnostic MakeDiagnostic(Diagnostic::Severity severity, std::string kind, std::string object,
                          std::string message, const ObjectSource& source) {
  Diagnostic d;
  d.severity = severity;
  d.kind = std::move(kind);
  d.object = std::move(object);
  d.message = std::move(message);
  d.location = source.location;
  return d;
}

std::string Where(const ObjectSource& source) {
  if (source.location.file.empty()) return "earlier in the input";
  return absl::StrCat(internal::DisplayText(source.location.file),
                      source.location.line > 0 ? absl::StrCat(":", source.location.line) : "");
}

Protocol ProtocolOrTcp(const std::string& text) {
  absl::StatusOr<Protocol> p = ParseProtocol(text);
  return p.ok() ? *p : Protocol::kTCP;
}

// IPv4-mapped IPv6 text ("::ffff:10.0.0.9", "::ffff:10.0.0.0/104") rewritten to the IPv4
// form np reads it as (IpAddress::Parse), so that the objects themselves — which the engine,
// the bindings and tools re-read — carry one meaning. Other text is left as written.
void NormalizeIpText(std::string* text) {
  bool mapped = false;
  absl::StatusOr<IpAddress> a = IpAddress::Parse(*text, /*allow_leading_zeros=*/true, &mapped);
  if (a.ok() && mapped) *text = a->ToString();
}
void NormalizeCidrText(std::string* text) {
  absl::StatusOr<IpPrefix> p = IpPrefix::Parse(*text, /*allow_leading_zeros=*/true);
  if (p.ok() && p->family() == AddressFamily::kIPv4 && text->find(':') != std::string::npos) {
    *text = absl::StrCat(p->address().ToString(), "/", p->length());  // host bits as written
  }
}
void NormalizeAddresses(k8s::Pod& pod) {
  k8s::PodStatus* status = pod.mutable_status();
  if (status->has_podip()) NormalizeIpText(status->mutable_podip());
  for (auto& ip : *status->mutable_podips()) NormalizeIpText(ip.mutable_ip());
}
void NormalizeAddresses(k8s::NetworkPolicy& policy) {
  auto normalize_peers = [](auto* peers) {
    for (k8s::NetworkPolicyPeer& peer : *peers) {
      if (!peer.has_ipblock()) continue;
      NormalizeCidrText(peer.mutable_ipblock()->mutable_cidr());
      for (std::string& e : *peer.mutable_ipblock()->mutable_except()) NormalizeCidrText(&e);
    }
  };
  for (auto& rule : *policy.mutable_spec()->mutable_ingress()) normalize_peers(rule.mutable_from());
  for (auto& rule : *policy.mutable_spec()->mutable_egress()) normalize_peers(rule.mutable_to());
}

// SetDefaults_Service and SetDefaults_ServicePort: what the API server stores for fields the
// manifest left out, so that every reader sees one value.
void DefaultServiceFields(k8s::Service& service) {
  k8s::ServiceSpec* spec = service.mutable_spec();
  if (spec->type().empty()) spec->set_type("ClusterIP");
  for (k8s::ServicePort& port : *spec->mutable_ports()) {
    if (port.protocol().empty()) port.set_protocol("TCP");
    const k8s::IntOrString& target = port.targetport();
    const bool absent = !port.has_targetport() ||
                        (target.type() == 0 && target.intval() == 0) ||
                        (target.type() != 0 && target.strval().empty());
    if (absent) {
      port.mutable_targetport()->set_type(0);
      port.mutable_targetport()->set_intval(port.port());
      port.mutable_targetport()->clear_strval();
    }
  }
}

}  // namespace

struct Cluster::Data {
  std::vector<NamespaceInfo> namespaces;
  std::vector<PodInfo> pods;
  std::vector<Sourced<k8s::Pod>> pod_objects;  // parallel to pods
  std::vector<Sourced<k8s::NetworkPolicy>> policies;
  // Input objects that are not part of the indexed view but belong to the cluster's state:
  // real Namespace objects (sorted), and pods left out of networking (finished, hostNetwork).
  std::vector<Sourced<k8s::Namespace>> namespace_objects;
  std::vector<Sourced<k8s::Pod>> left_out_pods;
  // The policy tiers: the objects as read, and their evaluation form in evaluation order.
  ClusterObjects tier_objects;  // only the tier kinds and nodes
  std::vector<tiers::TierPolicy> tier_policies;
  std::vector<NodeInfo> nodes;

  absl::flat_hash_map<std::string, int> namespace_index;
  absl::flat_hash_map<std::string, int> pod_index;     // "ns/name"
  absl::flat_hash_map<std::string, int> policy_index;  // "ns/name"
  absl::flat_hash_map<std::string, int> workload_index;  // "ns/workload" -> its first pod
  std::vector<Sourced<k8s::Service>> services;
  absl::flat_hash_map<std::string, int> service_index;  // "ns/name"
  absl::flat_hash_map<IpAddress, std::vector<int>> ip_index;  // holders in pod order
};

namespace {

// Validates the policy tiers' objects and Nodes (np/tiers/validation.h); false on any error.
template <typename CheckDuplicate>
bool ValidateTierObjects(ClusterObjects& objects, CheckDuplicate& check_duplicate,
                         std::vector<Diagnostic>* found) {
  bool ok = true;
  auto validate = [&](auto& list, absl::string_view kind, auto&& validator) {
    for (auto& item : list) {
      item.object.mutable_metadata()->clear_namespace_();  // cluster-scoped: kubectl drops it
      ok &= Collect(validator(item.object), item.source, found);
      ok &= check_duplicate(kind, item.object.metadata().name(), item.source);
    }
  };
  validate(objects.admin_network_policies, "AdminNetworkPolicy",
           tiers::ValidateAdminNetworkPolicy);
  validate(objects.baseline_admin_network_policies, "BaselineAdminNetworkPolicy",
           tiers::ValidateBaselineAdminNetworkPolicy);
  validate(objects.cluster_network_policies, "ClusterNetworkPolicy",
           tiers::ValidateClusterNetworkPolicy);
  validate(objects.nodes, "Node", tiers::ValidateNode);
  return ok;
}

}  // namespace

// Keeps the tier objects and Nodes, and builds their evaluation form (validated already).
void Cluster::IndexTierObjects(ClusterObjects objects, Data* data,
                               std::vector<Diagnostic>* found) {
  auto by_name = [](const auto& a, const auto& b) {
    return a.object.metadata().name() < b.object.metadata().name();
  };
  ClusterObjects& kept = data->tier_objects;
  kept.admin_network_policies = std::move(objects.admin_network_policies);
  kept.baseline_admin_network_policies = std::move(objects.baseline_admin_network_policies);
  kept.cluster_network_policies = std::move(objects.cluster_network_policies);
  kept.nodes = std::move(objects.nodes);
  std::sort(kept.admin_network_policies.begin(), kept.admin_network_policies.end(), by_name);
  std::sort(kept.baseline_admin_network_policies.begin(),
            kept.baseline_admin_network_policies.end(), by_name);
  std::sort(kept.cluster_network_policies.begin(), kept.cluster_network_policies.end(), by_name);
  std::sort(kept.nodes.begin(), kept.nodes.end(), by_name);
  std::vector<const ObjectSource*> sources;  // parallel to tier_policies before sorting
  for (const auto& p : kept.admin_network_policies) {
    data->tier_policies.push_back(tiers::FromAdminNetworkPolicy(p.object));
  }
  for (const auto& p : kept.baseline_admin_network_policies) {
    data->tier_policies.push_back(tiers::FromBaselineAdminNetworkPolicy(p.object));
  }
  for (const auto& p : kept.cluster_network_policies) {
    data->tier_policies.push_back(tiers::FromClusterNetworkPolicy(p.object));
  }
  std::sort(data->tier_policies.begin(), data->tier_policies.end(), tiers::EvaluatedBefore);
  for (Diagnostic& d : tiers::SamePriorityWarnings(data->tier_policies)) {
    AppendDiagnostic(found, std::move(d));
  }
  for (const auto& n : kept.nodes) {
    NodeInfo info;
    info.name = n.object.metadata().name();
    for (const auto& [k, v] : n.object.metadata().labels()) info.labels[k] = v;
    for (const k8s::NodeAddress& a : n.object.status().addresses()) {
      absl::StatusOr<IpAddress> address = IpAddress::Parse(a.address());
      if (address.ok() && std::find(info.addresses.begin(), info.addresses.end(), *address) ==
                              info.addresses.end()) {
        info.addresses.push_back(*address);
      }
    }
    data->nodes.push_back(std::move(info));
  }
}

int Cluster::tier_policy_count() const { return static_cast<int>(data_->tier_policies.size()); }
const tiers::TierPolicy& Cluster::tier_policy(int index) const {
  return data_->tier_policies[index];
}
int Cluster::node_count() const { return static_cast<int>(data_->nodes.size()); }
const NodeInfo& Cluster::node(int index) const { return data_->nodes[index]; }

absl::StatusOr<Cluster> Cluster::Create(ClusterObjects objects,
                                        std::vector<Diagnostic>* diagnostics) {
  try {
    return CreateOrThrow(std::move(objects), diagnostics);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        "validating and indexing the input needs more memory than is available");
  }
}

absl::StatusOr<Cluster> Cluster::CreateOrThrow(ClusterObjects objects,
                                               std::vector<Diagnostic>* diagnostics) {
  std::vector<Diagnostic> found;
  bool ok = true;
  auto data = std::make_shared<Data>();

  // Validate everything first, so that one run reports every problem.
  absl::flat_hash_map<std::string, const ObjectSource*> seen;
  auto check_duplicate = [&](absl::string_view kind, const std::string& key,
                             const ObjectSource& source) {
    auto [it, inserted] = seen.emplace(absl::StrCat(kind, " ", key), &source);
    if (inserted) return true;
    AppendDiagnostic(&found, MakeDiagnostic(Diagnostic::Severity::kError, std::string(kind), key,
                                   absl::StrCat("duplicate object: already defined ",
                                                Where(*it->second)),
                                   source));
    return false;
  };
  for (auto& ns : objects.namespaces) {
    ok &= Collect(ValidateNamespace(ns.object), ns.source, &found);
    ok &= check_duplicate("Namespace", ObjectKey(ns.object), ns.source);
  }
  for (auto& pod : objects.pods) {
    DefaultNamespace(pod.object);
    ok &= Collect(ValidatePod(pod.object), pod.source, &found);
    ok &= check_duplicate("Pod", ObjectKey(pod.object), pod.source);
  }
  for (auto& policy : objects.policies) {
    DefaultNamespace(policy.object);
    ok &= Collect(ValidateNetworkPolicy(policy.object), policy.source, &found);
    ok &= check_duplicate("NetworkPolicy", ObjectKey(policy.object), policy.source);
  }
  for (auto& service : objects.services) {
    DefaultNamespace(service.object);
    ok &= Collect(ValidateService(service.object), service.source, &found);
    ok &= check_duplicate("Service", ObjectKey(service.object), service.source);
  }
  ok &= ValidateTierObjects(objects, check_duplicate, &found);
  if (!ok) {
    std::string summary = ErrorSummary(found);
    if (diagnostics != nullptr) *diagnostics = std::move(found);
    return absl::InvalidArgumentError(summary);
  }
  for (auto& pod : objects.pods) NormalizeAddresses(pod.object);
  for (auto& policy : objects.policies) NormalizeAddresses(policy.object);

  // Namespaces: the real ones, then those implied by pods and policies.
  auto by_name = [](const auto& a, const auto& b) {
    return std::tie(a.object.metadata().namespace_(), a.object.metadata().name()) <
           std::tie(b.object.metadata().namespace_(), b.object.metadata().name());
  };
  std::sort(objects.namespaces.begin(), objects.namespaces.end(), by_name);
  std::sort(objects.pods.begin(), objects.pods.end(), by_name);
  std::sort(objects.policies.begin(), objects.policies.end(), by_name);
  std::sort(objects.services.begin(), objects.services.end(), by_name);

  std::map<std::string, NamespaceInfo> namespaces;
  for (const auto& ns : objects.namespaces) {
    NamespaceInfo info;
    info.name = ns.object.metadata().name();
    for (const auto& [k, v] : ns.object.metadata().labels()) info.labels[k] = v;
    namespaces[info.name] = std::move(info);
  }
  auto imply = [&](const std::string& name) {
    if (namespaces.count(name)) return;
    NamespaceInfo info;
    info.name = name;
    info.implied = true;
    namespaces[name] = std::move(info);
  };
  for (const auto& pod : objects.pods) imply(pod.object.metadata().namespace_());
  for (const auto& policy : objects.policies) imply(policy.object.metadata().namespace_());
  for (auto& [name, info] : namespaces) {
    // The API server always sets this label to the namespace's own name.
    info.labels[std::string(kNamespaceNameLabel)] = name;
    data->namespace_index[name] = static_cast<int>(data->namespaces.size());
    data->namespaces.push_back(std::move(info));
  }
  data->namespace_objects = std::move(objects.namespaces);

  for (auto& pod : objects.pods) {
    const k8s::Pod& p = pod.object;
    std::string key = ObjectKey(p);
    const std::string& phase = p.status().phase();
    if (phase == "Succeeded" || phase == "Failed") {
      AppendDiagnostic(&found, MakeDiagnostic(
          Diagnostic::Severity::kWarning, "Pod", key,
          absl::StrCat("left out: phase ", phase, " (a finished pod holds no address)"),
          pod.source));
      data->left_out_pods.push_back(std::move(pod));
      continue;
    }
    if (p.spec().hostnetwork()) {
      AppendDiagnostic(&found, MakeDiagnostic(
          Diagnostic::Severity::kWarning, "Pod", key,
          "left out: hostNetwork pods share the node's network; NetworkPolicy does not apply",
          pod.source));
      data->left_out_pods.push_back(std::move(pod));
      continue;
    }
    PodInfo info;
    info.namespace_name = p.metadata().namespace_();
    info.name = p.metadata().name();
    info.namespace_index = data->namespace_index.at(info.namespace_name);
    for (const auto& [k, v] : p.metadata().labels()) info.labels[k] = v;
    std::vector<std::string> ip_texts;
    for (const auto& ip : p.status().podips()) ip_texts.push_back(ip.ip());
    if (ip_texts.empty() && !p.status().podip().empty()) ip_texts.push_back(p.status().podip());
    for (const std::string& text : ip_texts) {
      absl::StatusOr<IpAddress> a = IpAddress::Parse(text, /*allow_leading_zeros=*/true);
      if (!a.ok()) continue;  // validation already reported it
      info.ips.push_back(*a);
      if (a->is_v4() && !info.ipv4) info.ipv4 = *a;
      if (a->is_v6() && !info.ipv6) info.ipv6 = *a;
    }
    for (const auto& container : p.spec().containers()) {
      for (const auto& port : container.ports()) {
        if (port.name().empty()) continue;
        info.named_ports.push_back(NamedPort{port.name(), ProtocolOrTcp(port.protocol()),
                                             static_cast<uint16_t>(port.containerport())});
      }
    }
    info.node_name = p.spec().nodename();
    if (auto it = p.metadata().annotations().find(std::string(kSynthesizedFromAnnotation));
        it != p.metadata().annotations().end()) {
      info.synthesized_from = it->second;
      // "KIND NAMESPACE/NAME": the workload's key names its first pod (pods come sorted).
      const size_t space = it->second.find(' ');
      if (space != std::string::npos) {
        data->workload_index.emplace(it->second.substr(space + 1), data->pods.size());
      }
    }
    int index = static_cast<int>(data->pods.size());
    for (const IpAddress& a : info.ips) data->ip_index[a].push_back(index);
    data->pod_index[key] = index;
    data->pods.push_back(std::move(info));
    data->pod_objects.push_back(std::move(pod));
  }

  // Shared addresses: every holder is quarantined, and each says with whom it shares.
  for (const auto& [address, holders] : data->ip_index) {
    if (holders.size() < 2) continue;
    for (int holder : holders) data->pods[holder].shared_ips.push_back(address);
  }
  for (size_t i = 0; i < data->pods.size(); ++i) {
    PodInfo& info = data->pods[i];
    if (!info.quarantined()) continue;
    std::sort(info.shared_ips.begin(), info.shared_ips.end());
    for (const IpAddress& a : info.shared_ips) {
      std::vector<std::string> others;
      for (int holder : data->ip_index.at(a)) {
        if (holder != static_cast<int>(i)) others.push_back(data->pods[holder].Key());
      }
      Diagnostic d = MakeDiagnostic(
          Diagnostic::Severity::kWarning, "Pod", info.Key(),
          absl::StrCat("IP ", a.ToString(), " is also held by ", absl::StrJoin(others, ", "),
                       ": np cannot tell their packets apart, so it denies every flow from or "
                       "to this pod until only one live pod holds the address"),
          data->pod_objects[i].source);
      d.affects_verdicts = true;
      AppendDiagnostic(&found, std::move(d));
    }
  }

  for (auto& policy : objects.policies) {
    data->policy_index[ObjectKey(policy.object)] = static_cast<int>(data->policies.size());
    data->policies.push_back(std::move(policy));
  }
  // Services imply no namespace: they are not part of what policies see.
  for (auto& service : objects.services) {
    DefaultServiceFields(service.object);
    data->service_index[ObjectKey(service.object)] = static_cast<int>(data->services.size());
    data->services.push_back(std::move(service));
  }
  IndexTierObjects(std::move(objects), data.get(), &found);
  if (diagnostics != nullptr) *diagnostics = std::move(found);
  return Cluster(std::move(data));
}

absl::Status ApplyTierChange(const Change& change, ClusterObjects* objects) {
  // Cluster-scoped: an object is its kind and name.
  auto apply = [&](auto& list, const auto& object, absl::string_view kind) -> absl::Status {
    const std::string& name = object.metadata().name();
    auto it = std::find_if(list.begin(), list.end(), [&](const auto& existing) {
      return existing.object.metadata().name() == name;
    });
    if (change.op == Change::Op::kDelete) {
      if (it == list.end()) {
        return absl::NotFoundError(
            absl::StrCat("cannot delete ", kind, " ", DisplayText(name), ": no such object"));
      }
      list.erase(it);
    } else if (it != list.end()) {
      it->object = object;
    } else {
      list.push_back({object, {}});
    }
    return absl::OkStatus();
  };
  if (const auto* p = std::get_if<policy_networking::AdminNetworkPolicy>(&change.object)) {
    return apply(objects->admin_network_policies, *p, "AdminNetworkPolicy");
  }
  if (const auto* p = std::get_if<policy_networking::BaselineAdminNetworkPolicy>(&change.object)) {
    return apply(objects->baseline_admin_network_policies, *p, "BaselineAdminNetworkPolicy");
  }
  if (const auto* p = std::get_if<policy_networking::ClusterNetworkPolicy>(&change.object)) {
    return apply(objects->cluster_network_policies, *p, "ClusterNetworkPolicy");
  }
  if (const auto* node = std::get_if<k8s::Node>(&change.object)) {
    return apply(objects->nodes, *node, "Node");
  }
  return absl::InvalidArgumentError("not a tier policy or Node change");
}

absl::StatusOr<Cluster> Cluster::Apply(absl::Span<const Change> changes,
                                       std::vector<Diagnostic>* diagnostics) const {
  ClusterObjects objects = ToObjects();
  auto apply = [](auto& list, const auto& object, Change::Op op) -> absl::Status {
    auto same = [&](const auto& existing) {
      auto ns = [](const auto& o) {
        return o.metadata().namespace_().empty() ? std::string("default")
                                                 : o.metadata().namespace_();
      };
      return existing.object.metadata().name() == object.metadata().name() &&
             ns(existing.object) == ns(object);
    };
    auto it = std::find_if(list.begin(), list.end(), same);
    if (op == Change::Op::kDelete) {
      if (it == list.end()) {
        return absl::NotFoundError(absl::StrCat("cannot delete ", object.GetTypeName(), " ",
                                                ObjectKey(object), ": no such object"));
      }
      list.erase(it);
      return absl::OkStatus();
    }
    if (it != list.end()) {
      it->object = object;
    } else {
      list.push_back({object, {}});
    }
    return absl::OkStatus();
  };
  for (const Change& change : changes) {
    absl::Status status;
    if (const auto* ns = std::get_if<k8s::Namespace>(&change.object)) {
      // Namespaces have no namespace; compare by name only.
      auto it = std::find_if(objects.namespaces.begin(), objects.namespaces.end(),
                             [&](const auto& e) {
                               return e.object.metadata().name() == ns->metadata().name();
                             });
      if (change.op == Change::Op::kDelete) {
        if (it == objects.namespaces.end()) {
          status = absl::NotFoundError(absl::StrCat("cannot delete Namespace ",
                                                    ns->metadata().name(), ": no such object"));
        } else {
          objects.namespaces.erase(it);
        }
      } else if (it != objects.namespaces.end()) {
        it->object = *ns;
      } else {
        objects.namespaces.push_back({*ns, {}});
      }
    } else if (const auto* pod = std::get_if<k8s::Pod>(&change.object)) {
      status = apply(objects.pods, *pod, change.op);
    } else if (const auto* policy = std::get_if<k8s::NetworkPolicy>(&change.object)) {
      status = apply(objects.policies, *policy, change.op);
    } else {
      status = ApplyTierChange(change, &objects);
    }
    if (!status.ok()) return status;
  }
  return Create(std::move(objects), diagnostics);
}

int Cluster::namespace_count() const { return static_cast<int>(data_->namespaces.size()); }
int Cluster::pod_count() const { return static_cast<int>(data_->pods.size()); }
int Cluster::policy_count() const { return static_cast<int>(data_->policies.size()); }
const NamespaceInfo& Cluster::ns(int index) const { return data_->namespaces[index]; }
const PodInfo& Cluster::pod(int index) const { return data_->pods[index]; }
const k8s::Pod& Cluster::pod_object(int index) const {
  return data_->pod_objects[index].object;
}
const k8s::NetworkPolicy& Cluster::policy(int index) const {
  return data_->policies[index].object;
}
std::string Cluster::PolicyKey(int index) const { return ObjectKey(policy(index)); }

std::optional<int> Cluster::FindNamespace(absl::string_view name) const {
  auto it = data_->namespace_index.find(name);
  if (it == data_->namespace_index.end()) return std::nullopt;
  return it->second;
}

std::optional<int> Cluster::FindPod(absl::string_view namespace_name,
                                    absl::string_view name) const {
  return FindPod(absl::StrCat(namespace_name, "/", name));
}

std::optional<int> Cluster::FindPod(absl::string_view key) const {
  auto it = data_->pod_index.find(key);
  if (it != data_->pod_index.end()) return it->second;
  auto workload = data_->workload_index.find(key);
  if (workload != data_->workload_index.end()) return workload->second;
  return std::nullopt;
}

std::optional<int> Cluster::FindPolicy(absl::string_view namespace_name,
                                       absl::string_view name) const {
  auto it = data_->policy_index.find(absl::StrCat(namespace_name, "/", name));
  if (it == data_->policy_index.end()) return std::nullopt;
  return it->second;
}

namespace {

// Why Create leaves `pod` out of pod networking, in a few words; empty when it does not.
std::string LeftOutBecause(const k8s::Pod& pod) {
  const std::string& phase = pod.status().phase();
  if (phase == "Succeeded" || phase == "Failed") return absl::StrCat("phase ", phase);
  if (pod.spec().hostnetwork()) return "hostNetwork";
  return "";
}

}  // namespace

std::vector<std::pair<std::string, std::string>> Cluster::LeftOutPods() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& pod : data_->left_out_pods) {
    out.emplace_back(ObjectKey(pod.object), LeftOutBecause(pod.object));
  }
  return out;
}

std::optional<std::string> Cluster::WhyLeftOut(absl::string_view key) const {
  for (const auto& pod : data_->left_out_pods) {
    const k8s::ObjectMeta& meta = pod.object.metadata();
    const std::string pod_key = ObjectKey(pod.object);
    bool named = pod_key == key;
    // A synthesized pod is also named by its workload ("KIND NAMESPACE/NAME").
    if (auto it = meta.annotations().find(std::string(kSynthesizedFromAnnotation));
        !named && it != meta.annotations().end()) {
      const size_t space = it->second.find(' ');
      named = space != std::string::npos && absl::string_view(it->second).substr(space + 1) == key;
    }
    if (!named) continue;
    const std::string because = LeftOutBecause(pod.object);
    if (because == "hostNetwork") {
      return absl::StrCat("pod ", pod_key, " is hostNetwork: NetworkPolicy does not apply to it "
                          "(its traffic is the node's)");
    }
    return absl::StrCat("pod ", pod_key, " is in ", because,
                        ": a finished pod holds no address and takes no traffic");
  }
  return std::nullopt;
}

int Cluster::service_count() const { return static_cast<int>(data_->services.size()); }
const k8s::Service& Cluster::service(int index) const {
  return data_->services[index].object;
}
std::optional<int> Cluster::FindService(absl::string_view namespace_name,
                                        absl::string_view name) const {
  auto it = data_->service_index.find(absl::StrCat(namespace_name, "/", name));
  if (it == data_->service_index.end()) return std::nullopt;
  return it->second;
}

std::optional<int> Cluster::PodByIp(const IpAddress& address) const {
  auto it = data_->ip_index.find(address);
  if (it == data_->ip_index.end()) return std::nullopt;
  return it->second.front();
}

std::vector<int> Cluster::PodsByIp(const IpAddress& address) const {
  auto it = data_->ip_index.find(address);
  if (it == data_->ip_index.end()) return {};
  return it->second;
}

ClusterObjects Cluster::ToObjects() const {
  ClusterObjects objects;
  objects.namespaces = data_->namespace_objects;
  objects.pods = data_->pod_objects;
  objects.pods.insert(objects.pods.end(), data_->left_out_pods.begin(),
                      data_->left_out_pods.end());
  objects.policies = data_->policies;
  objects.services = data_->services;
  objects.admin_network_policies = data_->tier_objects.admin_network_policies;
  objects.baseline_admin_network_policies = data_->tier_objects.baseline_admin_network_policies;
  objects.cluster_network_policies = data_->tier_objects.cluster_network_policies;
  objects.nodes = data_->tier_objects.nodes;
  return objects;
}

}  // namespace np
