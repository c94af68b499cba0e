// Lint: each check reads the policies with np::reference's own pieces (selectors, peers,
// ipBlocks), so that lint and the evaluators never disagree on what a selector matches, and
// NP105 compares connection listings with and without the policy (DiffChanges) rather than
// evaluating anything itself.
#include "np/analysis/lint.h"

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "np/analysis/connections.h"
#include "np/engine.h"
#include "np/evaluator.h"
#include "np/reference.h"

namespace np::analysis {
namespace {

using Severity = Finding::Severity;

// "shop/a, shop/b and 3 more". The names are printed as they are: callers pass them
// through DisplayText.
std::string NameList(const std::vector<std::string>& names) {
  std::vector<std::string> shown;
  for (size_t i = 0; i < names.size() && i < static_cast<size_t>(kMaxPodsNamed); ++i) {
    shown.push_back(names[i]);
  }
  std::string out = absl::StrJoin(shown, ", ");
  if (names.size() > shown.size()) {
    absl::StrAppend(&out, " and ", names.size() - shown.size(), " more");
  }
  return out;
}

std::string PodNames(const Cluster& cluster, const std::vector<int>& pods) {
  std::vector<std::string> names;
  for (int pod : pods) names.push_back(DisplayText(cluster.pod(pod).Key()));
  return NameList(names);
}

bool IsEmptySelector(const k8s::LabelSelector& selector) {
  return selector.matchlabels().empty() && selector.matchexpressions().empty();
}

// The rules of one direction of a policy, read the same way for ingress (from) and egress (to).
int RuleCount(const k8s::NetworkPolicy& policy, Direction direction) {
  return direction == Direction::kIngress ? policy.spec().ingress_size()
                                          : policy.spec().egress_size();
}
const google::protobuf::RepeatedPtrField<k8s::NetworkPolicyPeer>& Peers(
    const k8s::NetworkPolicy& policy, Direction direction, int rule) {
  return direction == Direction::kIngress ? policy.spec().ingress(rule).from()
                                          : policy.spec().egress(rule).to();
}
const google::protobuf::RepeatedPtrField<k8s::NetworkPolicyPort>& Ports(
    const k8s::NetworkPolicy& policy, Direction direction, int rule) {
  return direction == Direction::kIngress ? policy.spec().ingress(rule).ports()
                                          : policy.spec().egress(rule).ports();
}
// "spec.ingress[0].from[1]" / "spec.egress[0].to[1]" (peer < 0: the rule itself).
std::string RulePath(Direction direction, int rule, int peer = -1) {
  const bool ingress = direction == Direction::kIngress;
  std::string path = absl::StrCat(ingress ? "spec.ingress[" : "spec.egress[", rule, "]");
  if (peer >= 0) absl::StrAppend(&path, ingress ? ".from[" : ".to[", peer, "]");
  return path;
}

// Whether `block` (its cidr minus its excepts) holds some but not all addresses of
// `pod_cidr`. Prefixes are nested or disjoint, which makes this a few containment tests.
bool CoversPart(const k8s::IPBlock& block, const IpPrefix& pod_cidr) {
  absl::StatusOr<IpPrefix> cidr = IpPrefix::Parse(block.cidr(), /*allow_leading_zeros=*/true);
  if (!cidr.ok() || cidr->family() != pod_cidr.family()) return false;
  // A cidr strictly inside the pod CIDR: part of it (excepts are strictly inside the cidr,
  // so something of it is left).
  if (!cidr->Contains(pod_cidr)) return pod_cidr.Contains(*cidr);
  bool some_taken = false;
  for (const std::string& text : block.except()) {
    absl::StatusOr<IpPrefix> except = IpPrefix::Parse(text, /*allow_leading_zeros=*/true);
    if (!except.ok() || except->family() != pod_cidr.family()) continue;
    if (except->Contains(pod_cidr)) return false;  // none of the pod CIDR is in the block
    if (pod_cidr.Contains(*except)) some_taken = true;
  }
  return some_taken;
}

class Linter {
 public:
  Linter(const Cluster& cluster, const LintOptions& options)
      : cluster_(cluster), options_(options), objects_(cluster.ToObjects()) {}

  absl::StatusOr<std::vector<Finding>> Run() {
    // Which pods each policy selects, and how many policies isolate each pod per direction.
    std::vector<std::vector<int>> selected(cluster_.policy_count());
    isolating_.assign(cluster_.pod_count(), {0, 0});
    for (int p = 0; p < cluster_.policy_count(); ++p) {
      const k8s::NetworkPolicy& policy = cluster_.policy(p);
      const bool affects[2] = {reference::PolicyAffects(policy, Direction::kIngress),
                               reference::PolicyAffects(policy, Direction::kEgress)};
      for (int i = 0; i < cluster_.pod_count(); ++i) {
        if (!reference::PolicySelectsPod(cluster_, policy, i)) continue;
        selected[p].push_back(i);
        for (int d = 0; d < 2; ++d) isolating_[i][d] += affects[d];
      }
    }
    absl::StatusOr<ClusterEvaluator> evaluator = ClusterEvaluator::Create(
        cluster_, ClusterEvaluator::Kind::kEngine, options_.evaluation);
    if (!evaluator.ok()) return evaluator.status();
    for (int p = 0; p < cluster_.policy_count(); ++p) {
      LintPolicy(p, selected[p]);
      // NP101 covers a policy that selects nothing. The shortcuts find a flow that changes
      // for most policies that matter, without listing every connection twice. They read
      // NetworkPolicy alone: with policy tiers a flow's verdict may not be NetworkPolicy's
      // (an Admin rule decides first, a Baseline rule decides for pods it leaves
      // unisolated), so there only the diff answers.
      if (selected[p].empty()) continue;
      if (!cluster_.has_tier_policies() && (IsolatesAlone(*evaluator, p, selected[p]) ||
                                            AdmitsAlone(*evaluator, p, selected[p]))) {
        continue;
      }
      if (absl::Status s = CheckAddsSomething(*evaluator->engine(), p); !s.ok()) return s;
    }
    OneSidedIsolation();
    return std::move(findings_);
  }

  // NP109 for one flow (InventedAddressFindings).
  std::vector<Finding> InventedAddresses(const Flow& flow, const Verdict& verdict) {
    for (const Endpoint* end : {&flow.source, &flow.destination}) {
      if (!end->is_pod) continue;
      const PodInfo& pod = cluster_.pod(end->pod_index);
      const std::optional<IpAddress>& address = pod.ip(verdict.family);
      if (pod.synthesized_from.empty() || !address) continue;
      // The synthesized pod is the peer of the other side's rules.
      const bool is_source = end == &flow.source;
      const Direction direction = is_source ? Direction::kIngress : Direction::kEgress;
      const DirectionVerdict& side = is_source ? verdict.ingress : verdict.egress;
      for (const std::string& key : side.isolating_policies) {
        const size_t slash = key.find('/');
        std::optional<int> p = cluster_.FindPolicy(key.substr(0, slash), key.substr(slash + 1));
        if (!p) continue;
        ForEachPeer(*p, direction, [&](const k8s::NetworkPolicyPeer& peer, const std::string& path) {
          if (!peer.has_ipblock()) return;
          for (const IpPrefix& pod_cidr : options_.pod_cidrs) {
            if (!pod_cidr.Contains(*address) || !CoversPart(peer.ipblock(), pod_cidr)) continue;
            Add(*p, "NP109", "ipblock-splits-pod-cidr", Severity::kWarning,
                absl::StrCat(path, ".ipBlock"),
                absl::StrCat("the verdict depends on the address np assigned to ",
                             DisplayText(pod.Key()),
                             " (", address->ToString(), ", made from ", pod.synthesized_from,
                             "): this ipBlock covers only part of the pod CIDR ",
                             pod_cidr.ToString()));
          }
        });
      }
    }
    return std::move(findings_);
  }

 private:
  void Add(int policy, absl::string_view code, absl::string_view name, Severity severity,
           std::string field, std::string message) {
    Finding f;
    f.code = std::string(code);
    f.name = std::string(name);
    f.severity = severity;
    f.kind = "NetworkPolicy";
    f.object = cluster_.PolicyKey(policy);
    const ObjectSource* source = PolicySource(policy);
    if (source != nullptr) f.location = {source->location.file, source->LineOf(field)};
    f.field = std::move(field);
    f.message = std::move(message);
    findings_.push_back(std::move(f));
  }

  // ToObjects() lists policies in the cluster's order; checked rather than assumed.
  const ObjectSource* PolicySource(int policy) const {
    if (policy >= static_cast<int>(objects_.policies.size())) return nullptr;
    const auto& sourced = objects_.policies[policy];
    const auto& meta = cluster_.policy(policy).metadata();
    if (sourced.object.metadata().name() != meta.name()) return nullptr;
    return &sourced.source;
  }

  // Calls visit(peer, "spec.ingress[r].from[k]") for each peer of each rule of `direction`.
  template <typename F>
  void ForEachPeer(int policy, Direction direction, F&& visit) const {
    const k8s::NetworkPolicy& p = cluster_.policy(policy);
    for (int r = 0; r < RuleCount(p, direction); ++r) {
      const auto& peers = Peers(p, direction, r);
      for (int k = 0; k < peers.size(); ++k) visit(peers[k], RulePath(direction, r, k));
    }
  }

  // The pods a peer matches, through any of their addresses (only an ipBlock sees them).
  std::vector<int> PodsOfPeer(int policy, const k8s::NetworkPolicyPeer& peer) const {
    std::vector<AddressFamily> families = {AddressFamily::kNone};
    if (peer.has_ipblock()) families = {AddressFamily::kIPv4, AddressFamily::kIPv6};
    std::vector<int> pods;
    for (int i = 0; i < cluster_.pod_count(); ++i) {
      for (AddressFamily family : families) {
        if (reference::PeerMatches(cluster_, cluster_.policy(policy), peer, Endpoint::Pod(i),
                                   family, options_.evaluation)) {
          pods.push_back(i);
          break;
        }
      }
    }
    return pods;
  }

  void LintPolicy(int p, const std::vector<int>& selected) {
    const k8s::NetworkPolicy& policy = cluster_.policy(p);
    const std::string& ns = policy.metadata().namespace_();
    if (selected.empty()) {
      int in_namespace = 0;
      for (int i = 0; i < cluster_.pod_count(); ++i) in_namespace += cluster_.pod(i).namespace_name == ns;
      Add(p, "NP101", "selector-matches-nothing", Severity::kWarning, "spec.podSelector",
          in_namespace == 0
              ? absl::StrCat("selects no pod: namespace ", DisplayText(ns), " has no pods in the input")
              : absl::StrCat("selects none of the ", in_namespace, " pods of namespace ",
                             DisplayText(ns)));
    }
    for (Direction direction : {Direction::kIngress, Direction::kEgress}) {
      const bool ingress = direction == Direction::kIngress;
      for (int r = 0; r < RuleCount(policy, direction); ++r) {
        const auto& peers = Peers(policy, direction, r);
        const auto& ports = Ports(policy, direction, r);
        std::set<int> destinations;
        if (ingress) destinations.insert(selected.begin(), selected.end());
        if (peers.empty()) {
          Add(p, "NP106", "rule-admits-all", ports.empty() ? Severity::kWarning : Severity::kInfo,
              RulePath(direction, r),
              absl::StrCat("has no ", ingress ? "from" : "to", ": it admits every ",
                           ingress ? "source" : "destination",
                           ", addresses outside the cluster included",
                           ports.empty() ? ", on every port and protocol" : ""));
          if (!ingress) {
            for (int i = 0; i < cluster_.pod_count(); ++i) destinations.insert(i);
          }
        }
        for (int k = 0; k < peers.size(); ++k) {
          const std::string path = RulePath(direction, r, k);
          const std::vector<int> pods = PodsOfPeer(p, peers[k]);
          if (!ingress) destinations.insert(pods.begin(), pods.end());
          LintPeer(p, peers[k], path, pods, ports.empty());
        }
        if (!destinations.empty()) {
          LintNamedPorts(p, direction, r, std::vector<int>(destinations.begin(), destinations.end()));
        }
      }
    }
  }

  void LintPeer(int p, const k8s::NetworkPolicyPeer& peer, const std::string& path,
                const std::vector<int>& pods, bool all_ports) {
    const std::string& ns = cluster_.policy(p).metadata().namespace_();
    const Severity admits_all = all_ports ? Severity::kWarning : Severity::kInfo;
    if (peer.has_ipblock()) {
      LintIpBlock(p, peer.ipblock(), absl::StrCat(path, ".ipBlock"), pods, admits_all);
      return;
    }
    if (!peer.has_namespaceselector()) {
      if (pods.empty()) {
        Add(p, "NP102", "peer-matches-nothing", Severity::kWarning, absl::StrCat(path, ".podSelector"),
            absl::StrCat("matches no pod in namespace ", DisplayText(ns)));
      }
      return;
    }
    const std::string ns_path = absl::StrCat(path, ".namespaceSelector");
    const bool undefined_named = LintNamespaceNames(p, peer.namespaceselector(), ns_path);
    if (IsEmptySelector(peer.namespaceselector()) &&
        (!peer.has_podselector() || IsEmptySelector(peer.podselector()))) {
      Add(p, "NP106", "rule-admits-all", admits_all, path,
          absl::StrCat("namespaceSelector: {}", peer.has_podselector() ? " with podSelector: {}" : "",
                       " admits every pod of every namespace",
                       all_ports ? ", on every port and protocol" : ""));
    }
    if (!pods.empty() || undefined_named) return;
    std::vector<std::string> matched;
    for (int n = 0; n < cluster_.namespace_count(); ++n) {
      if (reference::SelectorMatches(peer.namespaceselector(), cluster_.ns(n).labels)) {
        matched.push_back(DisplayText(cluster_.ns(n).name));
      }
    }
    if (matched.empty()) {
      Add(p, "NP102", "peer-matches-nothing", Severity::kWarning, ns_path,
          "matches no namespace of the input");
    } else if (peer.has_podselector()) {
      Add(p, "NP102", "peer-matches-nothing", Severity::kWarning, absl::StrCat(path, ".podSelector"),
          absl::StrCat("matches no pod in the namespaces the namespaceSelector matches (",
                       NameList(matched), ")"));
    } else {
      Add(p, "NP102", "peer-matches-nothing", Severity::kWarning, ns_path,
          absl::StrCat("the namespaces it matches have no pods in the input (", NameList(matched),
                       ")"));
    }
  }

  // NP103. Returns whether a name was reported.
  bool LintNamespaceNames(int p, const k8s::LabelSelector& selector, const std::string& path) {
    bool reported = false;
    auto check = [&](const std::string& name, const std::string& field) {
      std::optional<int> n = cluster_.FindNamespace(name);
      if (n && !cluster_.ns(*n).implied) return;
      Add(p, "NP103", "namespace-not-defined", Severity::kWarning, field,
          absl::StrCat("names namespace ", DisplayText(name), ", which the input does not define",
                       n ? " (pods or policies are in it, but no Namespace object)" : ""));
      reported = true;
    };
    auto it = selector.matchlabels().find(std::string(kNamespaceNameLabel));
    if (it != selector.matchlabels().end()) {
      check(it->second, absl::StrCat(path, ".matchLabels[", kNamespaceNameLabel, "]"));
    }
    for (int e = 0; e < selector.matchexpressions_size(); ++e) {
      const k8s::LabelSelectorRequirement& req = selector.matchexpressions(e);
      if (req.key() != kNamespaceNameLabel || req.operator_() != "In") continue;
      for (int v = 0; v < req.values_size(); ++v) {
        check(req.values(v), absl::StrCat(path, ".matchExpressions[", e, "].values[", v, "]"));
      }
    }
    return reported;
  }

  void LintIpBlock(int p, const k8s::IPBlock& block, const std::string& path,
                   const std::vector<int>& pods, Severity admits_all) {
    absl::StatusOr<IpPrefix> cidr = IpPrefix::Parse(block.cidr(), /*allow_leading_zeros=*/true);
    if (cidr.ok() && cidr->length() == 0 && block.except().empty()) {
      Add(p, "NP106", "rule-admits-all", admits_all, path,
          absl::StrCat(cidr->ToString(), " without except admits every ",
                       AddressFamilyName(cidr->family()), " address",
                       options_.evaluation.ip_block_scope ==
                               EvaluationOptions::IpBlockScope::kAllAddresses
                           ? ", pods of every namespace included"
                           : " outside the cluster",
                       admits_all == Severity::kWarning ? ", on every port and protocol" : ""));
    }
    if (options_.evaluation.ip_block_scope == EvaluationOptions::IpBlockScope::kExternalOnly) {
      return;
    }
    bool split = false;
    for (const IpPrefix& pod_cidr : options_.pod_cidrs) {
      if (!CoversPart(block, pod_cidr)) continue;
      std::vector<int> invented;
      for (int i = 0; i < cluster_.pod_count(); ++i) {
        const PodInfo& pod = cluster_.pod(i);
        const std::optional<IpAddress>& a = pod.ip(pod_cidr.family());
        if (!pod.synthesized_from.empty() && a && pod_cidr.Contains(*a)) invented.push_back(i);
      }
      if (invented.empty()) continue;
      split = true;
      Add(p, "NP109", "ipblock-splits-pod-cidr", Severity::kWarning, path,
          absl::StrCat("covers only part of the pod CIDR ", pod_cidr.ToString(),
                       " from which np assigned addresses to ", invented.size(),
                       " pods made from workloads (", PodNames(cluster_, invented),
                       "): its verdict on them depends on addresses np invented"));
    }
    if (split || pods.empty()) return;
    std::vector<std::string> named;
    for (int i : pods) {
      std::vector<std::string> addresses;
      for (const IpAddress& a : cluster_.pod(i).ips) {
        if (reference::IpBlockMatches(block, a)) addresses.push_back(a.ToString());
      }
      named.push_back(
          absl::StrCat(DisplayText(cluster_.pod(i).Key()), " ", absl::StrJoin(addresses, ",")));
    }
    Add(p, "NP108", "ipblock-contains-pods", Severity::kInfo, path,
        absl::StrCat("contains the addresses of ", pods.size(), " pod", pods.size() == 1 ? "" : "s",
                     " (", NameList(named),
                     "): np matches ipBlocks against pod addresses too "
                     "(--ipblock-scope=external: only outside the cluster)"));
  }

  // NP104 for the ports of rule `r`, against its destination pods.
  void LintNamedPorts(int p, Direction direction, int r, const std::vector<int>& destinations) {
    const auto& ports = Ports(cluster_.policy(p), direction, r);
    for (int k = 0; k < ports.size(); ++k) {
      const k8s::NetworkPolicyPort& port = ports[k];
      if (!port.has_port() || port.port().type() != 1) continue;
      absl::StatusOr<Protocol> protocol =
          port.has_protocol() ? ParseProtocol(port.protocol()) : Protocol::kTCP;
      if (!protocol.ok()) continue;
      const std::string& name = port.port().strval();
      std::set<std::string> other_protocols;
      bool defined = false;
      for (int i : destinations) {
        for (const NamedPort& named : cluster_.pod(i).named_ports) {
          if (named.name != name) continue;
          if (named.protocol == *protocol) defined = true;
          else other_protocols.insert(std::string(ProtocolName(named.protocol)));
        }
      }
      if (defined) continue;
      Add(p, "NP104", "named-port-undefined", Severity::kWarning,
          absl::StrCat(RulePath(direction, r), ".ports[", k, "].port"),
          absl::StrCat("no ", direction == Direction::kIngress ? "selected" : "destination",
                       " pod has a ", ProtocolName(*protocol), " port named ", DisplayText(name),
                       other_protocols.empty()
                           ? ""
                           : absl::StrCat(" (it is a ", absl::StrJoin(other_protocols, ", "),
                                          " port there)"),
                       "; pods: ", PodNames(cluster_, destinations)));
    }
  }

  // Two sound shortcuts past NP105's diff, each a flow whose verdict certainly changes when
  // `p` is removed. IsolatesAlone: a pod `p` selects is isolated in a direction by `p` alone,
  // and a flow between it and an address outside the cluster (which has no side of its own)
  // is denied now; without `p` it is allowed. Tried on documentation addresses (RFC 5737,
  // RFC 3849) at the lowest and highest port of each protocol.
  bool IsolatesAlone(const ClusterEvaluator& evaluator, int p,
                     const std::vector<int>& selected) const {
    static const std::array<IpAddress, 2> kOutside = {*IpAddress::Parse("192.0.2.1"),
                                                       *IpAddress::Parse("2001:db8::1")};
    for (int pod : selected) {
      if (cluster_.pod(pod).quarantined()) continue;
      for (Direction direction : {Direction::kIngress, Direction::kEgress}) {
        if (isolating_[pod][static_cast<int>(direction)] != 1 ||
            !reference::PolicyAffects(cluster_.policy(p), direction)) {
          continue;
        }
        for (const IpAddress& outside : kOutside) {
          if (!cluster_.pod(pod).ip(outside.family()) || cluster_.PodByIp(outside)) continue;
          for (Protocol protocol : kAllProtocols) {
            for (uint16_t port : {uint16_t{1}, uint16_t{65535}}) {
              Flow flow{Endpoint::External(outside), Endpoint::Pod(pod), protocol, port};
              if (direction == Direction::kEgress) std::swap(flow.source, flow.destination);
              if (!evaluator.Allowed(flow)) return true;
            }
          }
        }
      }
    }
    return false;
  }

  // AdmitsAlone: a pod-to-pod flow that only rules of `p` admit at a pod that another policy
  // keeps isolated in that direction; without `p` that side denies it. Witnesses: the first
  // kWitnesses selected pods, the first kWitnesses pods of each selector peer (every pod for
  // a rule without peers), each port of the rule (a named one resolved on the destination).
  bool AdmitsAlone(const ClusterEvaluator& evaluator, int p, const std::vector<int>& selected) const {
    constexpr size_t kWitnesses = 4;
    const k8s::NetworkPolicy& policy = cluster_.policy(p);
    const std::string key = cluster_.PolicyKey(p);
    for (Direction direction : {Direction::kIngress, Direction::kEgress}) {
      if (!reference::PolicyAffects(policy, direction)) continue;
      const bool ingress = direction == Direction::kIngress;
      for (int r = 0; r < RuleCount(policy, direction); ++r) {
        const auto& peers = Peers(policy, direction, r);
        const auto& ports = Ports(policy, direction, r);
        std::vector<int> others;
        if (peers.empty()) {
          for (int i = 0; i < cluster_.pod_count() && others.size() < 2 * kWitnesses; ++i) others.push_back(i);
        }
        for (const k8s::NetworkPolicyPeer& peer : peers) {
          if (peer.has_ipblock()) continue;
          std::vector<int> pods = PodsOfPeer(p, peer);
          if (pods.size() > kWitnesses) pods.resize(kWitnesses);
          others.insert(others.end(), pods.begin(), pods.end());
        }
        for (size_t s = 0; s < selected.size() && s < kWitnesses; ++s) {
          const int pod = selected[s];
          if (isolating_[pod][static_cast<int>(direction)] < 2) continue;
          for (int other : others) {
            if (other == pod || cluster_.pod(other).quarantined() || cluster_.pod(pod).quarantined()) {
              continue;
            }
            Flow flow{Endpoint::Pod(other), Endpoint::Pod(pod), Protocol::kTCP, 1};
            if (!ingress) std::swap(flow.source, flow.destination);
            for (int k = 0; k < std::max(1, ports.size()); ++k) {
              if (!ports.empty() && !PortOf(ports[k], flow.destination.pod_index, &flow)) continue;
              const Verdict verdict = evaluator.Evaluate(flow);
              const DirectionVerdict& side = ingress ? verdict.ingress : verdict.egress;
              if (!verdict.allowed) continue;
              if (std::all_of(side.allowing_rules.begin(), side.allowing_rules.end(),
                              [&](const RuleRef& rule) { return rule.policy == key; })) {
                return true;
              }
            }
          }
        }
      }
    }
    return false;
  }

  // Sets flow->protocol and flow->port to one the rule port admits at `destination`; false
  // when it admits none there (a named port the pod lacks).
  bool PortOf(const k8s::NetworkPolicyPort& port, int destination, Flow* flow) const {
    absl::StatusOr<Protocol> protocol =
        port.has_protocol() ? ParseProtocol(port.protocol()) : Protocol::kTCP;
    if (!protocol.ok()) return false;
    flow->protocol = *protocol;
    flow->port = 1;
    if (!port.has_port()) return true;
    if (port.port().type() != 1) {
      flow->port = static_cast<uint16_t>(port.port().intval());
      return flow->port != 0;
    }
    for (const NamedPort& named : cluster_.pod(destination).named_ports) {
      if (named.name == port.port().strval() && named.protocol == *protocol) {
        flow->port = named.port;
        return named.port != 0;
      }
    }
    return false;
  }

  // NP105: the connections with and without the policy.
  absl::Status CheckAddsSomething(const Engine& engine, int p) {
    Change remove;
    remove.op = Change::Op::kDelete;
    remove.object = cluster_.policy(p);
    absl::StatusOr<ConnectionDiff> diff = DiffChanges(engine, {remove});
    if (!diff.ok()) return diff.status();
    if (!diff->empty()) return absl::OkStatus();
    Add(p, "NP105", "policy-adds-nothing", Severity::kWarning, "",
        "removing it changes no connection: every flow it admits is admitted without it, and "
        "the isolation it adds denies nothing that is not denied anyway");
    return absl::OkStatus();
  }

  // NP107: per namespace, pods isolated in one direction only.
  void OneSidedIsolation() {
    // namespace -> pods, for "ingress isolated, egress open" [0] and the reverse [1].
    std::map<std::string, std::array<std::vector<int>, 2>> one_sided;
    for (int i = 0; i < cluster_.pod_count(); ++i) {
      const bool ingress = isolating_[i][0] > 0, egress = isolating_[i][1] > 0;
      if (ingress != egress) {
        one_sided[cluster_.pod(i).namespace_name][ingress ? 0 : 1].push_back(i);
      }
    }
    for (const auto& [ns, lists] : one_sided) {
      for (int which = 0; which < 2; ++which) {
        if (lists[which].empty()) continue;
        Finding f;
        f.code = "NP107";
        f.name = "one-sided-isolation";
        f.severity = Severity::kInfo;
        f.kind = "Namespace";
        f.object = ns;
        for (const auto& sourced : objects_.namespaces) {
          if (sourced.object.metadata().name() == ns) f.location = sourced.source.location;
        }
        const size_t n = lists[which].size();
        f.message = absl::StrCat(n, " pod", n == 1 ? " is" : "s are", " isolated for ",
                                 which == 0 ? "ingress but not for egress" : "egress but not for ingress",
                                 ": ", PodNames(cluster_, lists[which]));
        findings_.push_back(std::move(f));
      }
    }
  }

  const Cluster& cluster_;
  const LintOptions& options_;
  const ClusterObjects objects_;
  // Per pod: how many policies isolate it for ingress [0] and for egress [1].
  std::vector<std::array<int, 2>> isolating_;
  std::vector<Finding> findings_;
};

}  // namespace

absl::string_view SeverityName(Finding::Severity severity) {
  switch (severity) {
    case Severity::kError:
      return "error";
    case Severity::kWarning:
      return "warning";
    case Severity::kInfo:
      return "info";
  }
  return "info";
}

absl::StatusOr<Finding::Severity> ParseSeverity(absl::string_view text) {
  for (Severity s : {Severity::kError, Severity::kWarning, Severity::kInfo}) {
    if (SeverityName(s) == text) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("severity must be error, warning or info, not ", DisplayText(text)));
}

std::string Finding::ToString() const {
  std::string out;
  if (!location.file.empty()) {
    absl::StrAppend(&out, DisplayText(location.file),
                    location.line > 0 ? absl::StrCat(":", location.line) : "", ": ");
  }
  absl::StrAppend(&out, code, " ", SeverityName(severity), " ", DisplayText(kind), " ",
                  DisplayText(object), ": ");
  if (!field.empty()) absl::StrAppend(&out, DisplayText(field), ": ");
  absl::StrAppend(&out, message);
  return out;
}

absl::StatusOr<std::vector<Finding>> Lint(const Cluster& cluster, const LintOptions& options) {
  try {
    return Linter(cluster, options).Run();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("linting the input needs more memory than is available");
  }
}

std::vector<Finding> InventedAddressFindings(const Cluster& cluster, const Flow& flow,
                                             const Verdict& verdict, const LintOptions& options) {
  return Linter(cluster, options).InventedAddresses(flow, verdict);
}

std::string FindingsJson(const std::vector<Finding>& findings) {
  std::string out = "{\"findings\": [";
  int64_t counts[3] = {0, 0, 0};
  for (size_t i = 0; i < findings.size(); ++i) {
    const Finding& f = findings[i];
    ++counts[static_cast<int>(f.severity)];
    absl::StrAppend(&out, i == 0 ? "" : ", ", "{\"code\": ", JsonQuote(f.code),
                    ", \"name\": ", JsonQuote(f.name), ", \"severity\": \"",
                    SeverityName(f.severity), "\", \"kind\": ", JsonQuote(f.kind),
                    ", \"object\": ", JsonQuote(f.object), ", \"field\": ", JsonQuote(f.field),
                    ", \"file\": ", JsonQuote(f.location.file), ", \"line\": ", f.location.line,
                    ", \"message\": ", JsonQuote(f.message), "}");
  }
  absl::StrAppend(&out, "], \"counts\": {\"error\": ", counts[0], ", \"warning\": ", counts[1],
                  ", \"info\": ", counts[2], "}}");
  return out;
}

}  // namespace np::analysis
