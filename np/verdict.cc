#include "np/verdict.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace np {

AddressFamily FlowFamily(const Cluster& cluster, const Flow& flow) {
  if (!flow.source.is_pod) return flow.source.address.family();
  if (!flow.destination.is_pod) return flow.destination.address.family();
  const PodInfo& s = cluster.pod(flow.source.pod_index);
  const PodInfo& d = cluster.pod(flow.destination.pod_index);
  if (s.ipv4 && d.ipv4) return AddressFamily::kIPv4;
  if (s.ipv6 && d.ipv6) return AddressFamily::kIPv6;
  return AddressFamily::kNone;
}

std::string RuleRef::ToString() const {
  return absl::StrCat(policy, " spec.", direction == Direction::kIngress ? "ingress" : "egress",
                      "[", rule, "]");
}

std::string EndpointName(const Cluster& cluster, const Endpoint& endpoint) {
  if (endpoint.is_pod) return cluster.pod(endpoint.pod_index).Key();
  return endpoint.address.ToString();
}

std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string TruthTablesJson(const std::vector<std::string>& pods,
                            const std::vector<TruthTable>& tables) {
  const size_t n = pods.size();
  std::string json = "{\"pods\": [";
  for (size_t i = 0; i < n; ++i) absl::StrAppend(&json, i ? ", " : "", JsonQuote(pods[i]));
  absl::StrAppend(&json, "], \"matrices\": [");
  for (size_t t = 0; t < tables.size(); ++t) {
    const TruthTable& table = tables[t];
    absl::StrAppend(&json, t ? ", " : "", "{\"protocol\": \"", ProtocolName(table.protocol),
                    "\", \"port\": ", table.port, ", \"allowed\": [");
    for (size_t i = 0; i < n; ++i) {
      absl::StrAppend(&json, i ? ", " : "", "[");
      for (size_t j = 0; j < n; ++j) {
        absl::StrAppend(&json, j ? ", " : "", table.allowed[i * n + j] ? "true" : "false");
      }
      absl::StrAppend(&json, "]");
    }
    absl::StrAppend(&json, "]}");
  }
  absl::StrAppend(&json, "]}");
  return json;
}

absl::StatusOr<Endpoint> ParseEndpoint(const Cluster& cluster, absl::string_view text) {
  if (absl::StatusOr<IpAddress> ip = IpAddress::Parse(text); ip.ok()) {
    std::optional<int> pod = cluster.PodByIp(*ip);
    return pod ? Endpoint::Pod(*pod) : Endpoint::External(*ip);
  }
  std::string key(text);
  if (key.find('/') == std::string::npos) key = absl::StrCat("default/", key);
  std::optional<int> pod = cluster.FindPod(key);
  if (!pod && text.find('/') == absl::string_view::npos) {
    // A Node's name is its first address: a host-network pod's traffic is its node's.
    for (int n = 0; n < cluster.node_count(); ++n) {
      const NodeInfo& node = cluster.node(n);
      if (node.name == text && !node.addresses.empty()) {
        return Endpoint::External(node.addresses.front());
      }
    }
  }
  if (!pod) {
    if (std::optional<std::string> why = cluster.WhyLeftOut(key)) {
      return absl::NotFoundError(*why);
    }
    return absl::NotFoundError(absl::StrCat("no pod \"", key,
                                            "\" in the input (write namespace/name, or an IP "
                                            "address for a peer outside the cluster)"));
  }
  return Endpoint::Pod(*pod);
}

std::string TierRuleRef::ToString() const {
  return absl::StrCat(tiers::TierName(tier), " tier, ", policy, " (priority ", priority, ") spec.",
                      direction == Direction::kIngress ? "ingress" : "egress", "[", rule, "]",
                      rule_name.empty() ? "" : absl::StrCat(" ", JsonQuote(rule_name)), ": ",
                      tiers::ActionName(action));
}

namespace {

// The tiers' part of one side (np/tiers/model.h). Returns true when a tier decided it.
bool AppendTiers(std::string* out, absl::string_view side, absl::string_view pod,
                 const DirectionVerdict& v) {
  for (const std::string& peer : v.not_evaluable) {
    absl::StrAppend(out, "    skipped ", peer, ": not evaluable offline (domain names)\n");
  }
  if (v.admin_rule && v.admin_rule->action != tiers::Action::kPass) {
    absl::StrAppend(out, "  ", side, " at ", pod, ": ", v.allowed() ? "allowed" : "DENIED",
                    " by ", v.admin_rule->ToString(), "\n");
    return true;
  }
  if (v.admin_rule) {
    absl::StrAppend(out, "  ", side, " at ", pod, ": passed on to NetworkPolicy by ",
                    v.admin_rule->ToString(), "\n");
  }
  if (v.isolated || !v.baseline_rule) return false;
  if (v.baseline_rule->action == tiers::Action::kPass) {
    absl::StrAppend(out, "  ", side, " at ", pod, ": no NetworkPolicy isolates ", pod,
                    "; passed on to the default (allow) by ", v.baseline_rule->ToString(), "\n");
    return false;
  }
  absl::StrAppend(out, "  ", side, " at ", pod, ": ", v.allowed() ? "allowed" : "DENIED",
                  " (no NetworkPolicy isolates ", pod, ") by ", v.baseline_rule->ToString(),
                  "\n");
  return true;
}

void AppendSide(std::string* out, const Cluster& cluster, absl::string_view side,
                absl::string_view pod, const DirectionVerdict& v) {
  if (!v.applies) {
    absl::StrAppend(out, "  ", side, ": not applicable (", pod, " is outside the cluster)\n");
    return;
  }
  if (!v.shared_addresses.empty()) {
    absl::StrAppend(out, "  ", side, " at ", pod, ": DENIED (quarantined: np cannot tell its "
                    "packets from another live pod's)\n");
    for (const std::string& text : v.shared_addresses) {
      std::vector<std::string> others;
      if (absl::StatusOr<IpAddress> a = IpAddress::Parse(text); a.ok()) {
        for (int holder : cluster.PodsByIp(*a)) {
          if (cluster.pod(holder).Key() != pod) others.push_back(cluster.pod(holder).Key());
        }
      }
      absl::StrAppend(out, "    address ", text, " is also held by ",
                      others.empty() ? "another pod" : absl::StrJoin(others, ", "), "\n");
    }
    absl::StrAppend(out, "    (without the conflict: ",
                    !v.isolated ? "not isolated"
                    : v.allowing_rules.empty()
                        ? absl::StrCat("isolated by ", absl::StrJoin(v.isolating_policies, ", "),
                                       ", no rule admits the flow")
                        : absl::StrCat("admitted by ", v.allowing_rules.front().ToString()),
                    ")\n");
    return;
  }
  if (AppendTiers(out, side, pod, v)) return;
  if (!v.isolated) {
    absl::StrAppend(out, "  ", side, " at ", pod, ": allowed (no policy isolates ", pod,
                    " for ", side, ")\n");
    return;
  }
  absl::StrAppend(out, "  ", side, " at ", pod, ": ", v.allowed() ? "allowed" : "DENIED",
                  " (isolated by ", absl::StrJoin(v.isolating_policies, ", "), ")\n");
  if (v.allowing_rules.empty()) {
    absl::StrAppend(out, "    no rule of those policies admits this flow\n");
  }
  for (const RuleRef& rule : v.allowing_rules) {
    absl::StrAppend(out, "    admitted by ", rule.ToString(), "\n");
  }
}

}  // namespace

std::string FormatVerdict(const Cluster& cluster, const Flow& flow, const Verdict& verdict) {
  std::string source = EndpointName(cluster, flow.source);
  std::string destination = EndpointName(cluster, flow.destination);
  std::string out = absl::StrCat(verdict.allowed ? "ALLOWED" : "DENIED", ": ", source, " -> ",
                                 destination, " ", ProtocolName(flow.protocol), "/", flow.port,
                                 " (", AddressFamilyName(verdict.family), ")\n");
  for (const Endpoint* end : {&flow.source, &flow.destination}) {
    if (!end->is_pod) continue;
    const PodInfo& pod = cluster.pod(end->pod_index);
    const bool same_pod = end == &flow.destination && flow.source.is_pod &&
                          flow.source.pod_index == end->pod_index;
    if (pod.synthesized_from.empty() || same_pod) continue;
    std::vector<std::string> addresses;
    for (const IpAddress& a : pod.ips) addresses.push_back(a.ToString());
    absl::StrAppend(&out, "  ", pod.Key(), " is synthesized from ", pod.synthesized_from,
                    addresses.empty() ? ""
                                      : absl::StrCat(" (address ", absl::StrJoin(addresses, ", "),
                                                     " assigned by np from the pod CIDR)"),
                    "\n");
  }
  if (verdict.allowed_as_self) {
    absl::StrAppend(&out, "  a pod's traffic to itself is always allowed (option)\n");
    return out;
  }
  AppendSide(&out, cluster, "egress", source, verdict.egress);
  AppendSide(&out, cluster, "ingress", destination, verdict.ingress);
  return out;
}

}  // namespace np
