// Decoding of api::AdminNetworkPolicy, api::BaselineAdminNetworkPolicy (v1alpha1), api::ClusterNetworkPolicy
// (v1alpha2) and Node. Field names and shapes are upstream's JSON tags
// (kubernetes-sigs/network-policy-api apis/v1alpha1, apis/v1alpha2): each version accepts
// exactly its own fields, so a field of the other version is an unknown field.
#include "np/tiers/decode.h"

#include <functional>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace np::tiers {
namespace {

using ::np::internal::DecodeLabelSelector;
using ::np::internal::DecodeMetadata;
using ::np::internal::ObjectDecoder;
using ::np::internal::YamlNode;

// The API version whose shape a decoder reads, and the kind within it.
enum class Shape { kAnp, kBanp, kCnp };

// Lists the CRDs give `MinItems=1` and that may be absent: present but empty is refused by the
// API server's schema check. (A proto list cannot tell empty from absent, so it is checked here.)
bool NonEmpty(ObjectDecoder& d, const YamlNode& v, const std::string& field, int line) {
  if (!v.is_sequence() || !v.children().empty()) return true;
  d.Error(line, field, "Invalid value: 0: must have at least 1 item");
  return false;
}

void DecodeNamespacedPod(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                         api::NamespacedPod* pods) {
  d.Fields(node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                            const std::string& f, int l) {
    if (n == "namespaceSelector") {
      if (d.IsMapping(v, f, l)) DecodeLabelSelector(d, v, f, pods->mutable_namespaceselector());
    } else if (n == "podSelector") {
      if (d.IsMapping(v, f, l)) DecodeLabelSelector(d, v, f, pods->mutable_podselector());
    } else {
      return false;
    }
    return true;
  });
}

void DecodeSubject(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                   api::Subject* subject) {
  d.Fields(node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                            const std::string& f, int l) {
    if (n == "namespaces") {
      if (d.IsMapping(v, f, l)) DecodeLabelSelector(d, v, f, subject->mutable_namespaces());
    } else if (n == "pods") {
      if (d.IsMapping(v, f, l)) DecodeNamespacedPod(d, v, f, subject->mutable_pods());
    } else {
      return false;
    }
    return true;
  });
}

// Ingress peers: namespaces, pods. Egress peers add nodes and networks, and domainNames in
// api::AdminNetworkPolicy and api::ClusterNetworkPolicy (api::BaselineAdminNetworkPolicy has none).
void DecodePeer(ObjectDecoder& d, const YamlNode& node, const std::string& path, Shape shape,
                bool egress, api::Peer* peer) {
  d.Fields(node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                            const std::string& f, int l) {
    if (n == "namespaces") {
      if (d.IsMapping(v, f, l)) DecodeLabelSelector(d, v, f, peer->mutable_namespaces());
    } else if (n == "pods") {
      if (d.IsMapping(v, f, l)) DecodeNamespacedPod(d, v, f, peer->mutable_pods());
    } else if (egress && n == "nodes") {
      if (d.IsMapping(v, f, l)) DecodeLabelSelector(d, v, f, peer->mutable_nodes());
    } else if (egress && n == "networks") {
      if (NonEmpty(d, v, f, l)) d.StringList(v, f, l, peer->mutable_networks());
    } else if (egress && shape != Shape::kBanp && n == "domainNames") {
      if (NonEmpty(d, v, f, l)) d.StringList(v, f, l, peer->mutable_domainnames());
    } else {
      return false;
    }
    return true;
  });
}

// A mapping of int32 fields, and a `protocol` string when `protocol` is given: v1alpha1's
// portNumber and portRange, v1alpha2's range.
void DecodeNumbers(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                   std::initializer_list<std::pair<absl::string_view, std::function<void(int32_t)>>> numbers,
                   const std::function<void(const std::string&)>& protocol = nullptr) {
  if (!d.IsMapping(node, path, node.line)) return;
  d.Fields(node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                            const std::string& f, int l) {
    if (protocol && n == "protocol") {
      std::string text;
      if (d.String(v, f, l, &text)) protocol(text);
      return true;
    }
    for (const auto& [name, set] : numbers) {
      if (n != name) continue;
      int32_t value = 0;
      if (d.Int32(v, f, l, &value)) set(value);
      return true;
    }
    return false;
  });
}

// v1alpha1 AdminNetworkPolicyPort: portNumber {protocol, port}, namedPort, portRange
// {protocol, start, end}.
void DecodeV1Alpha1Port(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                        api::AdminNetworkPolicyPort* port) {
  d.Fields(node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                            const std::string& f, int l) {
    std::string s;
    if (n == "namedPort") {
      if (d.String(v, f, l, &s)) port->set_namedport(s);
    } else if (n == "portNumber") {
      api::PortNumber* number = port->mutable_portnumber();
      DecodeNumbers(d, v, f, {{"port", [&](int32_t x) { number->set_port(x); }}},
                    [&](const std::string& p) { number->set_protocol(p); });
    } else if (n == "portRange") {
      api::PortRange* range = port->mutable_portrange();
      DecodeNumbers(d, v, f,
                    {{"start", [&](int32_t x) { range->set_start(x); }},
                     {"end", [&](int32_t x) { range->set_end(x); }}},
                    [&](const std::string& p) { range->set_protocol(p); });
    } else {
      return false;
    }
    return true;
  });
}

// v1alpha2 Port: number, or range {start, end}.
void DecodeV1Alpha2Port(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                        api::ClusterNetworkPolicyPort* port) {
  d.Fields(node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                            const std::string& f, int l) {
    int32_t value = 0;
    if (n == "number") {
      if (d.Int32(v, f, l, &value)) port->set_number(value);
    } else if (n == "range") {
      api::ClusterNetworkPolicyPortRange* range = port->mutable_range();
      DecodeNumbers(d, v, f,
                    {{"start", [&](int32_t x) { range->set_start(x); }},
                     {"end", [&](int32_t x) { range->set_end(x); }}});
    } else {
      return false;
    }
    return true;
  });
}

// v1alpha2 ClusterNetworkPolicyProtocol: tcp|udp|sctp {destinationPort}, destinationNamedPort.
void DecodeProtocol(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                    api::ClusterNetworkPolicyProtocol* protocol) {
  d.Fields(node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                            const std::string& f, int l) {
    api::ClusterNetworkPolicyProtocolPorts* ports = nullptr;
    if (n == "tcp") {
      ports = protocol->mutable_tcp();
    } else if (n == "udp") {
      ports = protocol->mutable_udp();
    } else if (n == "sctp") {
      ports = protocol->mutable_sctp();
    } else if (n == "destinationNamedPort") {
      std::string s;
      if (d.String(v, f, l, &s)) protocol->set_destinationnamedport(s);
      return true;
    } else {
      return false;
    }
    if (!d.IsMapping(v, f, l)) return true;
    d.Fields(v, f, /*strict=*/true, [&](const std::string& pn, const YamlNode& pv,
                                        const std::string& pf, int pl) {
      if (pn != "destinationPort") return false;
      if (d.IsMapping(pv, pf, pl)) DecodeV1Alpha2Port(d, pv, pf, ports->mutable_destinationport());
      return true;
    });
    return true;
  });
}

template <typename Rule>
void DecodeRule(ObjectDecoder& d, const YamlNode& node, const std::string& path, Shape shape,
                bool egress, Rule* rule) {
  const char* peers_field = egress ? "to" : "from";
  d.Fields(node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                            const std::string& f, int l) {
    std::string s;
    if (n == "name") {
      if (d.String(v, f, l, &s)) rule->set_name(s);
    } else if (n == "action") {
      if (d.String(v, f, l, &s)) rule->set_action(s);
    } else if (n == peers_field) {
      if (!d.IsSequence(v, f, l)) return true;
      d.Items(v, f, [&](const YamlNode& item, const std::string& item_path, int item_line) {
        api::Peer* peer = rule->add_peers();
        if (d.IsMapping(item, item_path, item_line)) {
          DecodePeer(d, item, item_path, shape, egress, peer);
        }
      });
    } else if constexpr (std::is_same_v<Rule, api::ClusterNetworkPolicyRule>) {
      if (n != "protocols") return false;
      if (!d.IsSequence(v, f, l) || !NonEmpty(d, v, f, l)) return true;
      d.Items(v, f, [&](const YamlNode& item, const std::string& item_path, int item_line) {
        api::ClusterNetworkPolicyProtocol* protocol = rule->add_protocols();
        if (d.IsMapping(item, item_path, item_line)) DecodeProtocol(d, item, item_path, protocol);
      });
    } else {
      if (n != "ports") return false;
      if (!d.IsSequence(v, f, l) || !NonEmpty(d, v, f, l)) return true;
      d.Items(v, f, [&](const YamlNode& item, const std::string& item_path, int item_line) {
        api::AdminNetworkPolicyPort* port = rule->add_ports();
        if (d.IsMapping(item, item_path, item_line)) DecodeV1Alpha1Port(d, item, item_path, port);
      });
    }
    return true;
  });
}

// The object around a spec: apiVersion, kind, metadata, spec, status (ignored).
template <typename Policy, typename DecodeSpec>
void DecodeObject(ObjectDecoder& d, const YamlNode& node, Policy* policy, DecodeSpec&& spec) {
  d.Fields(node, "", /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                          const std::string& f, int l) {
    if (n == "apiVersion" || n == "kind" || n == "status") return true;
    if (n == "metadata") {
      if (d.IsMapping(v, f, l)) DecodeMetadata(d, v, f, /*strict=*/true, policy->mutable_metadata());
      return true;
    }
    if (n != "spec") return false;
    if (d.IsMapping(v, f, l)) spec(v, f);
    return true;
  });
}

template <typename Spec>
void DecodeRules(ObjectDecoder& d, const YamlNode& v, const std::string& f, int l, Shape shape,
                 bool egress, Spec* spec) {
  if (!d.IsSequence(v, f, l)) return;
  d.Items(v, f, [&](const YamlNode& item, const std::string& item_path, int item_line) {
    auto* rule = egress ? spec->add_egress() : spec->add_ingress();
    if (d.IsMapping(item, item_path, item_line)) {
      DecodeRule(d, item, item_path, shape, egress, rule);
    }
  });
}

}  // namespace

void DecodeAdminNetworkPolicy(ObjectDecoder& d, const YamlNode& node, api::AdminNetworkPolicy* policy) {
  DecodeObject(d, node, policy, [&](const YamlNode& spec_node, const std::string& path) {
    api::AdminNetworkPolicySpec* spec = policy->mutable_spec();
    d.Fields(spec_node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                                   const std::string& f, int l) {
      int32_t priority = 0;
      if (n == "priority") {
        if (d.Int32(v, f, l, &priority)) spec->set_priority(priority);
      } else if (n == "subject") {
        if (d.IsMapping(v, f, l)) DecodeSubject(d, v, f, spec->mutable_subject());
      } else if (n == "ingress" || n == "egress") {
        DecodeRules(d, v, f, l, Shape::kAnp, n == "egress", spec);
      } else {
        return false;
      }
      return true;
    });
  });
}

void DecodeBaselineAdminNetworkPolicy(ObjectDecoder& d, const YamlNode& node,
                                      api::BaselineAdminNetworkPolicy* policy) {
  DecodeObject(d, node, policy, [&](const YamlNode& spec_node, const std::string& path) {
    api::BaselineAdminNetworkPolicySpec* spec = policy->mutable_spec();
    d.Fields(spec_node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                                   const std::string& f, int l) {
      if (n == "subject") {
        if (d.IsMapping(v, f, l)) DecodeSubject(d, v, f, spec->mutable_subject());
      } else if (n == "ingress" || n == "egress") {
        DecodeRules(d, v, f, l, Shape::kBanp, n == "egress", spec);
      } else {
        return false;
      }
      return true;
    });
  });
}

void DecodeClusterNetworkPolicy(ObjectDecoder& d, const YamlNode& node,
                                api::ClusterNetworkPolicy* policy) {
  DecodeObject(d, node, policy, [&](const YamlNode& spec_node, const std::string& path) {
    api::ClusterNetworkPolicySpec* spec = policy->mutable_spec();
    d.Fields(spec_node, path, /*strict=*/true, [&](const std::string& n, const YamlNode& v,
                                                   const std::string& f, int l) {
      std::string tier;
      int32_t priority = 0;
      if (n == "tier") {
        if (d.String(v, f, l, &tier)) spec->set_tier(tier);
      } else if (n == "priority") {
        if (d.Int32(v, f, l, &priority)) spec->set_priority(priority);
      } else if (n == "subject") {
        if (d.IsMapping(v, f, l)) DecodeSubject(d, v, f, spec->mutable_subject());
      } else if (n == "ingress" || n == "egress") {
        DecodeRules(d, v, f, l, Shape::kCnp, n == "egress", spec);
      } else {
        return false;
      }
      return true;
    });
  });
}

void DecodeNode(ObjectDecoder& d, const YamlNode& node, k8s::Node* out) {
  d.Fields(node, "", /*strict=*/false, [&](const std::string& n, const YamlNode& v,
                                           const std::string& f, int l) {
    if (n == "metadata") {
      if (d.IsMapping(v, f, l)) DecodeMetadata(d, v, f, /*strict=*/false, out->mutable_metadata());
      return true;
    }
    if (n != "status") return false;
    if (!d.IsMapping(v, f, l)) return true;
    d.Fields(v, f, /*strict=*/false, [&](const std::string& sn, const YamlNode& sv,
                                         const std::string& sf, int sl) {
      if (sn != "addresses") return false;
      if (!d.IsSequence(sv, sf, sl)) return true;
      d.Items(sv, sf, [&](const YamlNode& item, const std::string& item_path, int item_line) {
        k8s::NodeAddress* address = out->mutable_status()->add_addresses();
        if (!d.IsMapping(item, item_path, item_line)) return;
        d.Fields(item, item_path, /*strict=*/false,
                 [&](const std::string& an, const YamlNode& av, const std::string& af, int al) {
                   std::string s;
                   if (an == "type") {
                     if (d.String(av, af, al, &s)) address->set_type(s);
                   } else if (an == "address") {
                     if (d.String(av, af, al, &s)) address->set_address(s);
                   } else {
                     return false;
                   }
                   return true;
                 });
      });
      return true;
    });
    return true;
  });
}

}  // namespace np::tiers
