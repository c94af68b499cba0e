// Validation of the policy tiers' objects, rule by rule from their CRDs
// (kubernetes-sigs/network-policy-api config/crd/{standard,experimental}/
// policy.networking.k8s.io_{adminnetworkpolicies,baselineadminnetworkpolicies,
// clusternetworkpolicies}.yaml and the +kubebuilder markers in apis/v1alpha1, apis/v1alpha2):
// OpenAPI minimum/maximum, maxLength, minItems/maxItems, enum, required,
// minProperties/maxProperties = 1 ("exactly one field must be set"), and the CEL rules quoted
// where they are checked. Messages follow the API server's field.Error kinds.
#include "np/tiers/validation.h"

#include <algorithm>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "np/internal/text.h"
#include "np/validation.h"
#include "re2/re2.h"

namespace np::tiers {
namespace {

using ::np::internal::GoQuote;
using Severity = Diagnostic::Severity;

constexpr absl::string_view kAnp = "AdminNetworkPolicy";
constexpr absl::string_view kBanp = "BaselineAdminNetworkPolicy";
constexpr absl::string_view kCnp = "ClusterNetworkPolicy";

std::string At(absl::string_view path, absl::string_view child) {
  return absl::StrCat(path, ".", child);
}
std::string At(absl::string_view path, int index) { return absl::StrCat(path, "[", index, "]"); }

// The findings about one object.
class Report {
 public:
  Report(absl::string_view kind, const std::string& name) : kind_(kind), name_(name) {}
  void Error(const std::string& field, std::string message) {
    Add(Severity::kError, field, std::move(message));
  }
  void Warning(const std::string& field, std::string message) {
    Add(Severity::kWarning, field, std::move(message));
  }
  void Required(const std::string& field) { Error(field, "Required value"); }
  void Append(std::vector<Diagnostic> found) {
    for (Diagnostic& d : found) AppendDiagnostic(&out_, std::move(d));
  }
  // `maxItems`/`minItems` of a list.
  void Count(const std::string& field, int size, int min, int max) {
    if (size < min) {
      Error(field, size == 0 ? "Required value" : absl::StrCat("Invalid value: ", size,
                                                              ": must have at least ", min,
                                                              min == 1 ? " item" : " items"));
    } else if (size > max) {
      Error(field, absl::StrCat("Too many: ", size, ": must have at most ", max, " items"));
    }
  }
  // minimum/maximum of an integer.
  void Bounds(const std::string& field, int64_t value, int64_t min, int64_t max) {
    if (value < min || value > max) {
      Error(field, absl::StrCat("Invalid value: ", value, ": must be from ", min, " to ", max));
    }
  }
  // enum.
  void Enum(const std::string& field, bool present, const std::string& value,
            std::initializer_list<absl::string_view> allowed) {
    if (!present) return Required(field);
    if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
    std::vector<std::string> quoted;
    for (absl::string_view a : allowed) quoted.push_back(GoQuote(a));
    Error(field, absl::StrCat("Unsupported value: ", GoQuote(value),
                              ": supported values: ", absl::StrJoin(quoted, ", ")));
  }
  // minProperties = maxProperties = 1: "Exactly one field must be set."
  void ExactlyOne(const std::string& field, const std::vector<absl::string_view>& set,
                  absl::string_view choices) {
    if (set.size() == 1) return;
    Error(field, set.empty()
                     ? absl::StrCat("Required value: exactly one of ", choices, " must be set")
                     : absl::StrCat("Invalid value: ", absl::StrJoin(set, ", "),
                                    ": exactly one of ", choices, " may be set"));
  }
  void Selector(const k8s::LabelSelector& selector, const std::string& path) {
    Append(ValidateSelector(kind_, name_.str(), selector, path));
  }
  std::vector<Diagnostic> Take() { return std::move(out_); }

 private:
  void Add(Severity severity, const std::string& field, std::string message) {
    AppendDiagnostic(&out_, Diagnostic{severity, kind_, name_, field, std::move(message)});
  }
  SharedString kind_;  // shared by every finding about the object
  SharedString name_;
  std::vector<Diagnostic> out_;
};

enum class Version { kV1Alpha1, kV1Alpha2 };

void CheckNamespacedPod(Report& r, const api::NamespacedPod& pods, const std::string& path,
                        Version version) {
  // v1alpha1 requires both selectors; v1alpha2 makes namespaceSelector optional (absent: all
  // namespaces, as empty).
  if (pods.has_namespaceselector()) {
    r.Selector(pods.namespaceselector(), At(path, "namespaceSelector"));
  } else if (version == Version::kV1Alpha1) {
    r.Required(At(path, "namespaceSelector"));
  }
  if (pods.has_podselector()) {
    r.Selector(pods.podselector(), At(path, "podSelector"));
  } else {
    r.Required(At(path, "podSelector"));
  }
}

void CheckSubject(Report& r, const api::Subject& subject, bool present, Version version) {
  const std::string path = "spec.subject";
  if (!present) return r.Required(path);
  std::vector<absl::string_view> set;
  if (subject.has_namespaces()) set.push_back("namespaces");
  if (subject.has_pods()) set.push_back("pods");
  r.ExactlyOne(path, set, "namespaces, pods");
  if (subject.has_namespaces()) r.Selector(subject.namespaces(), At(path, "namespaces"));
  if (subject.has_pods()) CheckNamespacedPod(r, subject.pods(), At(path, "pods"), version);
}

// CIDR: maxLength 43; v1alpha1 `self.contains(':') != self.contains('.')` (no IPv4 embedded
// in IPv6) and net.ParseCIDR; v1alpha2 `isCIDR(self)`.
void CheckCidr(Report& r, const std::string& text, const std::string& path, Version version) {
  if (text.size() > static_cast<size_t>(kMaxCidrLength)) {
    return r.Error(path, absl::StrCat("Too long: may not be more than ", kMaxCidrLength,
                                      " bytes"));
  }
  const bool colon = text.find(':') != std::string::npos;
  const bool dot = text.find('.') != std::string::npos;
  if (version == Version::kV1Alpha1 && colon == dot) {
    return r.Error(path, absl::StrCat("Invalid value: ", GoQuote(text),
                                      ": CIDR must be either an IPv4 or IPv6 address. IPv4 "
                                      "address embedded in IPv6 addresses are not supported"));
  }
  if (!IpPrefix::Parse(text).ok()) {
    r.Error(path, absl::StrCat("Invalid value: ", GoQuote(text), ": Invalid CIDR format provided"));
  }
}

// DomainName: the CRD's pattern.
void CheckDomainName(Report& r, const std::string& name, const std::string& path) {
  static const RE2 pattern(
      R"(^(\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$)");
  if (!RE2::FullMatch(name, pattern)) {
    r.Error(path, absl::StrCat("Invalid value: ", GoQuote(name),
                               ": must be a domain name, optionally with a leading \"*.\""));
  }
}

// One peer; returns whether it is a networks, nodes or domainNames peer (no named ports).
bool CheckPeer(Report& r, const api::Peer& peer, const std::string& path, Version version) {
  std::vector<absl::string_view> set;
  if (peer.has_namespaces()) set.push_back("namespaces");
  if (peer.has_pods()) set.push_back("pods");
  if (peer.has_nodes()) set.push_back("nodes");
  if (peer.networks_size() > 0) set.push_back("networks");
  if (peer.domainnames_size() > 0) set.push_back("domainNames");
  r.ExactlyOne(path, set, "namespaces, pods, nodes, networks, domainNames");
  if (peer.has_namespaces()) r.Selector(peer.namespaces(), At(path, "namespaces"));
  if (peer.has_pods()) CheckNamespacedPod(r, peer.pods(), At(path, "pods"), version);
  if (peer.has_nodes()) r.Selector(peer.nodes(), At(path, "nodes"));
  if (peer.networks_size() > 0) {
    const std::string networks = At(path, "networks");
    r.Count(networks, peer.networks_size(), 1, kMaxNetworks);
    for (int i = 0; i < peer.networks_size(); ++i) {
      CheckCidr(r, peer.networks(i), At(networks, i), version);
      // x-kubernetes-list-type: set
      for (int j = 0; j < i; ++j) {
        if (peer.networks(j) == peer.networks(i)) {
          r.Error(At(networks, i), absl::StrCat("Duplicate value: ", GoQuote(peer.networks(i))));
        }
      }
    }
  }
  if (peer.domainnames_size() > 0) {
    const std::string names = At(path, "domainNames");
    r.Count(names, peer.domainnames_size(), 1, kMaxDomainNames);
    for (int i = 0; i < peer.domainnames_size(); ++i) {
      CheckDomainName(r, peer.domainnames(i), At(names, i));
    }
  }
  return peer.has_nodes() || peer.networks_size() > 0 || peer.domainnames_size() > 0;
}

// Peers of a rule, and the egress rule's CEL rule:
// "!(self.to.exists(peer, has(peer.networks) || has(peer.nodes) || has(peer.domainNames)) &&
//  has(self.ports) && self.ports.exists(port, has(port.namedPort)))".
template <typename Rule>
void CheckPeers(Report& r, const Rule& rule, const std::string& path, bool egress,
                bool has_named_port, Version version, int max_peers) {
  const std::string peers = At(path, egress ? "to" : "from");
  r.Count(peers, rule.peers_size(), 1, max_peers);
  bool without_named_ports = false;
  bool domain_names = false;
  for (int i = 0; i < rule.peers_size(); ++i) {
    without_named_ports |= CheckPeer(r, rule.peers(i), At(peers, i), version);
    domain_names |= rule.peers(i).domainnames_size() > 0;
  }
  if (egress && without_named_ports && has_named_port) {
    r.Error(path, "Invalid value: \"object\": networks/nodes/domainNames peer cannot be set with "
                  "namedPorts since there are no namedPorts for networks/nodes/domainNames");
  }
  const bool accepts = rule.action() == "Allow" || rule.action() == "Accept";
  if (domain_names && !accepts) {
    r.Warning(path, absl::StrCat("domainNames peers are only supported for ",
                                 version == Version::kV1Alpha1 ? "Allow" : "Accept",
                                 " rules (upstream's API documentation)"));
  }
}

void CheckRuleName(Report& r, const std::string& name, const std::string& path) {
  if (name.size() > static_cast<size_t>(kMaxRuleNameLength)) {
    r.Error(At(path, "name"),
            absl::StrCat("Too long: may not be more than ", kMaxRuleNameLength, " bytes"));
  }
}

void CheckProtocolName(Report& r, const std::string& protocol, const std::string& path) {
  // Defaulted to TCP when absent (CRD `default: TCP`).
  if (protocol.empty()) return;
  r.Enum(path, true, protocol, {"TCP", "UDP", "SCTP"});
}

// A port range of either version: start and end required, 1-65535, start < end.
template <typename Range>
void CheckRange(Report& r, const Range& range, const std::string& at, absl::string_view order) {
  if (!range.has_start()) r.Required(At(at, "start"));
  if (!range.has_end()) r.Required(At(at, "end"));
  r.Bounds(At(at, "start"), range.start(), 1, 65535);
  r.Bounds(At(at, "end"), range.end(), 1, 65535);
  if (range.has_start() && range.has_end() && range.start() >= range.end()) {
    r.Error(at, absl::StrCat("Invalid value: ", range.start(), "-", range.end(), ": ", order));
  }
}

// One v1alpha1 AdminNetworkPolicyPort: exactly one of portNumber, namedPort, portRange.
void CheckV1Alpha1Port(Report& r, const api::AdminNetworkPolicyPort& port,
                       const std::string& path) {
  std::vector<absl::string_view> set;
  if (port.has_portnumber()) set.push_back("portNumber");
  if (port.has_namedport()) set.push_back("namedPort");
  if (port.has_portrange()) set.push_back("portRange");
  r.ExactlyOne(path, set, "portNumber, namedPort, portRange");
  if (port.has_namedport() && port.namedport().empty()) r.Required(At(path, "namedPort"));
  if (port.has_portnumber()) {
    const std::string at = At(path, "portNumber");
    CheckProtocolName(r, port.portnumber().protocol(), At(at, "protocol"));
    if (!port.portnumber().has_port()) {
      r.Required(At(at, "port"));
    } else {
      r.Bounds(At(at, "port"), port.portnumber().port(), 1, 65535);
    }
  }
  if (port.has_portrange()) {
    const std::string at = At(path, "portRange");
    CheckProtocolName(r, port.portrange().protocol(), At(at, "protocol"));
    // "Start defines a network port that is the start of a port range, the Start value
    // must be less than End."
    CheckRange(r, port.portrange(), at, "start must be less than end");
  }
}

// One v1alpha2 ClusterNetworkPolicyProtocol: exactly one of tcp, udp, sctp (each with a
// destinationPort: number or range), destinationNamedPort.
void CheckV1Alpha2Protocol(Report& r, const api::ClusterNetworkPolicyProtocol& protocol,
                           const std::string& path) {
  const std::pair<const char*, const api::ClusterNetworkPolicyProtocolPorts*> by_protocol[] = {
      {"tcp", protocol.has_tcp() ? &protocol.tcp() : nullptr},
      {"udp", protocol.has_udp() ? &protocol.udp() : nullptr},
      {"sctp", protocol.has_sctp() ? &protocol.sctp() : nullptr}};
  std::vector<absl::string_view> set;
  for (const auto& [name, ports] : by_protocol) {
    if (ports != nullptr) set.push_back(name);
  }
  if (protocol.has_destinationnamedport()) set.push_back("destinationNamedPort");
  r.ExactlyOne(path, set, "tcp, udp, sctp, destinationNamedPort");
  if (protocol.has_destinationnamedport() && protocol.destinationnamedport().empty()) {
    r.Required(At(path, "destinationNamedPort"));
  }
  for (const auto& [name, ports] : by_protocol) {
    if (ports == nullptr) continue;
    const std::string at = At(path, name);
    // ClusterNetworkPolicyProtocolTCP/UDP/SCTP: MinProperties=1.
    if (!ports->has_destinationport()) {
      r.Error(at, "Invalid value: 0: must have at least 1 property (destinationPort)");
      continue;
    }
    const api::ClusterNetworkPolicyPort& port = ports->destinationport();
    const std::string port_path = At(at, "destinationPort");
    std::vector<absl::string_view> fields;
    if (port.has_number()) fields.push_back("number");
    if (port.has_range()) fields.push_back("range");
    r.ExactlyOne(port_path, fields, "number, range");
    if (port.has_number()) r.Bounds(At(port_path, "number"), port.number(), 1, 65535);
    // CEL "self.start < self.end": "Start port must be less than End port".
    if (port.has_range()) {
      CheckRange(r, port.range(), At(port_path, "range"), "Start port must be less than End port");
    }
  }
}

// The ports of a rule: v1alpha1 `ports`, v1alpha2 `protocols`.
const auto& PortsOf(const api::AdminNetworkPolicyRule& rule) { return rule.ports(); }
const auto& PortsOf(const api::ClusterNetworkPolicyRule& rule) { return rule.protocols(); }
const char* PortsField(const api::AdminNetworkPolicyRule&) { return "ports"; }
bool IsNamedPort(const api::AdminNetworkPolicyPort& port) { return port.has_namedport(); }
bool IsNamedPort(const api::ClusterNetworkPolicyProtocol& p) { return p.has_destinationnamedport(); }
const char* PortsField(const api::ClusterNetworkPolicyRule&) { return "protocols"; }

// The rules of one direction: how many, each one's name, action, ports and peers.
template <typename Rule, typename CheckPort>
void CheckRules(Report& r, const google::protobuf::RepeatedPtrField<Rule>& rules, bool egress,
                Version version, int max, std::initializer_list<absl::string_view> actions,
                CheckPort&& check_port) {
  const std::string list = egress ? "spec.egress" : "spec.ingress";
  r.Count(list, rules.size(), 0, max);
  for (int i = 0; i < rules.size(); ++i) {
    const Rule& rule = rules.Get(i);
    const std::string path = At(list, i);
    CheckRuleName(r, rule.name(), path);
    r.Enum(At(path, "action"), rule.has_action(), rule.action(), actions);
    // A rule's ports (v1alpha1) or protocols (v1alpha2), each checked by `check_port`.
    const auto& ports = PortsOf(rule);
    const std::string ports_path = At(path, PortsField(rule));
    r.Count(ports_path, ports.size(), 0, max);
    bool named = false;
    for (int p = 0; p < ports.size(); ++p) {
      check_port(r, ports.Get(p), At(ports_path, p));
      named |= IsNamedPort(ports.Get(p));
    }
    CheckPeers(r, rule, path, egress, named, version, max);
  }
}

// ANP: Allow, Deny, Pass; BANP: Allow, Deny.
void CheckV1Alpha1Rules(Report& r,
                        const google::protobuf::RepeatedPtrField<api::AdminNetworkPolicyRule>& rules,
                        bool egress, bool baseline) {
  if (baseline) {
    CheckRules(r, rules, egress, Version::kV1Alpha1, kV1Alpha1MaxRules, {"Allow", "Deny"},
               CheckV1Alpha1Port);
  } else {
    CheckRules(r, rules, egress, Version::kV1Alpha1, kV1Alpha1MaxRules, {"Allow", "Deny", "Pass"},
               CheckV1Alpha1Port);
  }
}

void CheckV1Alpha2Rules(Report& r,
                        const google::protobuf::RepeatedPtrField<api::ClusterNetworkPolicyRule>& rules,
                        bool egress) {
  CheckRules(r, rules, egress, Version::kV1Alpha2, kV1Alpha2MaxRules, {"Accept", "Deny", "Pass"},
             CheckV1Alpha2Protocol);
}

// Peers of a rule, converted.
template <typename Rule>
std::vector<tiers::Peer> ConvertPeers(const Rule& rule) {
  std::vector<tiers::Peer> out;
  for (const api::Peer& in : rule.peers()) {
    tiers::Peer& peer = out.emplace_back();
    if (in.has_namespaces()) {
      peer.kind = tiers::Peer::Kind::kNamespaces;
      peer.namespace_selector = in.namespaces();
    } else if (in.has_pods()) {
      peer.kind = tiers::Peer::Kind::kPods;
      peer.namespace_selector = in.pods().namespaceselector();
      peer.pod_selector = in.pods().podselector();
    } else if (in.has_nodes()) {
      peer.kind = tiers::Peer::Kind::kNodes;
      peer.node_selector = in.nodes();
    } else if (in.networks_size() > 0) {
      peer.kind = tiers::Peer::Kind::kNetworks;
      for (const std::string& text : in.networks()) {
        absl::StatusOr<IpPrefix> prefix = IpPrefix::Parse(text);
        if (prefix.ok()) peer.networks.push_back(*prefix);
      }
    } else {
      peer.kind = tiers::Peer::Kind::kDomainNames;
      peer.domain_names.assign(in.domainnames().begin(), in.domainnames().end());
    }
  }
  return out;
}

Action ParseAction(const std::string& text) {
  if (text == "Allow" || text == "Accept") return Action::kAllow;
  if (text == "Pass") return Action::kPass;
  return Action::kDeny;
}

Protocol ProtocolOrTcp(const std::string& text) {
  absl::StatusOr<Protocol> p = ParseProtocol(text);
  return p.ok() ? *p : Protocol::kTCP;
}

PortMatch ConvertPort(const api::AdminNetworkPolicyPort& port) {
  PortMatch match;
  if (port.has_portnumber()) {
    match.protocol = ProtocolOrTcp(port.portnumber().protocol());
    const uint16_t number = static_cast<uint16_t>(port.portnumber().port());
    match.range = {number, number};
  } else if (port.has_portrange()) {
    match.protocol = ProtocolOrTcp(port.portrange().protocol());
    match.range = {static_cast<uint16_t>(port.portrange().start()),
                   static_cast<uint16_t>(port.portrange().end())};
  } else {
    match.named_port = port.namedport();
  }
  return match;
}

PortMatch ConvertPort(const api::ClusterNetworkPolicyProtocol& protocol) {
  PortMatch match;
  if (protocol.has_destinationnamedport()) {
    match.named_port = protocol.destinationnamedport();
    return match;
  }
  const api::ClusterNetworkPolicyProtocolPorts& ports =
      protocol.has_tcp() ? protocol.tcp() : protocol.has_udp() ? protocol.udp() : protocol.sctp();
  match.protocol = protocol.has_tcp()   ? Protocol::kTCP
                   : protocol.has_udp() ? Protocol::kUDP
                                        : Protocol::kSCTP;
  const api::ClusterNetworkPolicyPort& port = ports.destinationport();
  if (port.has_number()) {
    match.range = {static_cast<uint16_t>(port.number()), static_cast<uint16_t>(port.number())};
  } else {
    match.range = {static_cast<uint16_t>(port.range().start()),
                   static_cast<uint16_t>(port.range().end())};
  }
  return match;
}

// The rules of either version in np's model (np/tiers/model.h).
template <typename Rule>
std::vector<tiers::Rule> ConvertRules(const google::protobuf::RepeatedPtrField<Rule>& rules) {
  std::vector<tiers::Rule> out;
  for (const Rule& in : rules) {
    tiers::Rule& rule = out.emplace_back();
    rule.name = in.name();
    rule.action = ParseAction(in.action());
    rule.peers = ConvertPeers(in);
    for (const auto& port : PortsOf(in)) rule.ports.push_back(ConvertPort(port));
  }
  return out;
}

tiers::Subject ConvertSubject(const api::Subject& in) {
  tiers::Subject subject;
  if (in.has_namespaces()) {
    subject.namespace_selector = in.namespaces();
  } else {
    subject.namespace_selector = in.pods().namespaceselector();
    subject.pod_selector = in.pods().podselector();
  }
  return subject;
}

}  // namespace

std::vector<Diagnostic> ValidateAdminNetworkPolicy(const api::AdminNetworkPolicy& policy) {
  Report r(kAnp, policy.metadata().name());
  r.Append(ValidateClusterScopedMetadata(kAnp, policy.metadata()));
  const api::AdminNetworkPolicySpec& spec = policy.spec();
  if (!spec.has_priority()) {
    r.Required("spec.priority");
  } else {
    r.Bounds("spec.priority", spec.priority(), kMinPriority, kMaxPriority);
  }
  CheckSubject(r, spec.subject(), spec.has_subject(), Version::kV1Alpha1);
  CheckV1Alpha1Rules(r, spec.ingress(), /*egress=*/false, /*baseline=*/false);
  CheckV1Alpha1Rules(r, spec.egress(), /*egress=*/true, /*baseline=*/false);
  return r.Take();
}

std::vector<Diagnostic> ValidateBaselineAdminNetworkPolicy(const api::BaselineAdminNetworkPolicy& policy) {
  Report r(kBanp, policy.metadata().name());
  r.Append(ValidateClusterScopedMetadata(kBanp, policy.metadata()));
  // CEL "self.metadata.name == 'default'".
  if (!policy.metadata().name().empty() &&
      policy.metadata().name() != kBaselineAdminNetworkPolicyName) {
    r.Error("metadata.name",
            absl::StrCat("Invalid value: ", GoQuote(policy.metadata().name()),
                         ": Only one baseline admin network policy with "
                         "metadata.name=\"default\" can be created in the cluster"));
  }
  const api::BaselineAdminNetworkPolicySpec& spec = policy.spec();
  CheckSubject(r, spec.subject(), spec.has_subject(), Version::kV1Alpha1);
  CheckV1Alpha1Rules(r, spec.ingress(), /*egress=*/false, /*baseline=*/true);
  CheckV1Alpha1Rules(r, spec.egress(), /*egress=*/true, /*baseline=*/true);
  return r.Take();
}

std::vector<Diagnostic> ValidateClusterNetworkPolicy(const api::ClusterNetworkPolicy& policy) {
  Report r(kCnp, policy.metadata().name());
  r.Append(ValidateClusterScopedMetadata(kCnp, policy.metadata()));
  const api::ClusterNetworkPolicySpec& spec = policy.spec();
  r.Enum("spec.tier", spec.has_tier(), spec.tier(), {"Admin", "Baseline"});
  if (!spec.has_priority()) {
    r.Required("spec.priority");
  } else {
    r.Bounds("spec.priority", spec.priority(), kMinPriority, kMaxPriority);
  }
  CheckSubject(r, spec.subject(), spec.has_subject(), Version::kV1Alpha2);
  CheckV1Alpha2Rules(r, spec.ingress(), /*egress=*/false);
  CheckV1Alpha2Rules(r, spec.egress(), /*egress=*/true);
  return r.Take();
}

std::vector<Diagnostic> ValidateNode(const k8s::Node& node) {
  Report r("Node", node.metadata().name());
  r.Append(ValidateClusterScopedMetadata("Node", node.metadata()));
  for (int i = 0; i < node.status().addresses_size(); ++i) {
    const k8s::NodeAddress& address = node.status().addresses(i);
    if (address.type() != "InternalIP" && address.type() != "ExternalIP") continue;
    if (!IpAddress::Parse(address.address()).ok()) {
      r.Error(absl::StrCat("status.addresses[", i, "].address"),
              absl::StrCat("Invalid value: ", GoQuote(address.address()),
                           ": must be a valid IP address"));
    }
  }
  return r.Take();
}

std::vector<Diagnostic> SamePriorityWarnings(const std::vector<TierPolicy>& policies) {
  std::vector<Diagnostic> out;
  for (size_t i = 1; i < policies.size(); ++i) {
    const TierPolicy& before = policies[i - 1];
    const TierPolicy& p = policies[i];
    if (p.tier != before.tier || p.priority != before.priority || p.priority_implied ||
        before.priority_implied) {
      continue;
    }
    Diagnostic d;
    d.severity = Severity::kWarning;
    d.kind = p.kind;
    d.object = p.name;
    d.field = "spec.priority";
    d.message = absl::StrCat(
        "the ", TierName(p.tier), " tier has another policy with priority ", p.priority, " (",
        before.Key(), "): upstream leaves the order of same-priority policies undefined; np "
        "evaluates ", before.Key(), " first (by name, then kind)");
    d.affects_verdicts = true;
    AppendDiagnostic(&out, std::move(d));
  }
  return out;
}

namespace {

// What every kind shares: name, subject, rules in order.
template <typename Policy>
TierPolicy FromObject(const Policy& policy, Tier tier, int32_t priority, absl::string_view kind,
                      absl::string_view api_version) {
  TierPolicy out;
  out.tier = tier;
  out.priority = priority;
  out.kind = std::string(kind);
  out.api_version = std::string(api_version);
  out.name = policy.metadata().name();
  out.subject = ConvertSubject(policy.spec().subject());
  out.ingress = ConvertRules(policy.spec().ingress());
  out.egress = ConvertRules(policy.spec().egress());
  return out;
}

}  // namespace

TierPolicy FromAdminNetworkPolicy(const api::AdminNetworkPolicy& policy) {
  return FromObject(policy, Tier::kAdmin, policy.spec().priority(), kAnp,
                    "policy.networking.k8s.io/v1alpha1");
}

TierPolicy FromBaselineAdminNetworkPolicy(const api::BaselineAdminNetworkPolicy& policy) {
  TierPolicy out = FromObject(policy, Tier::kBaseline, kBaselineAdminNetworkPolicyPriority, kBanp,
                              "policy.networking.k8s.io/v1alpha1");
  out.priority_implied = true;
  return out;
}

TierPolicy FromClusterNetworkPolicy(const api::ClusterNetworkPolicy& policy) {
  return FromObject(policy, policy.spec().tier() == "Baseline" ? Tier::kBaseline : Tier::kAdmin,
                    policy.spec().priority(), kCnp, "policy.networking.k8s.io/v1alpha2");
}

absl::Status RefuseTiers(const Cluster& cluster, absl::string_view who) {
  std::vector<std::string> keys;
  for (int i = 0; i < cluster.tier_policy_count(); ++i) keys.push_back(cluster.tier_policy(i).Key());
  return RefuseTierPolicies(keys, who);
}

absl::Status RefuseTierPolicies(const std::vector<std::string>& keys, absl::string_view who) {
  if (keys.empty()) return absl::OkStatus();
  constexpr size_t kNamed = 5;
  std::vector<std::string> names(keys.begin(), keys.begin() + std::min(keys.size(), kNamed));
  const size_t more = keys.size() - names.size();
  return absl::UnimplementedError(absl::StrCat(
      who, " does not handle the policy tiers yet (AdminNetworkPolicy, "
      "BaselineAdminNetworkPolicy, ClusterNetworkPolicy); the input has ",
      absl::StrJoin(names, ", "), more > 0 ? absl::StrCat(" and ", more, " more") : "",
      ". The reference evaluator and the indexed engine evaluate them (check, explain, matrix)"));
}

absl::string_view TierName(Tier tier) { return tier == Tier::kAdmin ? "Admin" : "Baseline"; }

absl::string_view ActionName(Action action) {
  switch (action) {
    case Action::kAllow:
      return "Allow";
    case Action::kDeny:
      return "Deny";
    case Action::kPass:
      return "Pass";
  }
  return "Deny";
}

bool EvaluatedBefore(const TierPolicy& a, const TierPolicy& b) {
  return std::tie(a.tier, a.priority, a.name, a.kind) < std::tie(b.tier, b.priority, b.name, b.kind);
}

}  // namespace np::tiers
