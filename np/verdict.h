// np/verdict.h — flows, verdicts and their explanations: the vocabulary shared by the
// reference evaluator (np/reference.h), the indexed engine (np/engine.h) and the CLI.
//
//   np::Flow flow{np::Endpoint::Pod(*cluster.FindPod("x/a")),
//                 np::Endpoint::Pod(*cluster.FindPod("y/b")), np::Protocol::kTCP, 80};
//   np::Verdict v = np::reference::Evaluate(cluster, flow);
//   std::cout << np::FormatVerdict(cluster, flow, v);
//
// Thread safety: plain values.
#ifndef NP_VERDICT_H_
#define NP_VERDICT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "np/cluster.h"
#include "np/types.h"

namespace np {

// How the evaluation reads the parts of the API that CNIs read differently. The defaults
// are what upstream's conformance suite checks.
struct EvaluationOptions {
  // Which addresses an ipBlock peer matches.
  enum class IpBlockScope : uint8_t {
    // Any address, pod IPs included: a pod whose IP is in the block matches it
    // (upstream's e2e suite relies on this).
    kAllAddresses,
    // Only addresses outside the cluster: a pod never matches an ipBlock, whatever its IP.
    kExternalOnly,
  };
  IpBlockScope ip_block_scope = IpBlockScope::kAllAddresses;
  // Traffic from a pod to itself is evaluated like any other flow unless this is set, in
  // which case it is always allowed (CNIs differ; upstream's e2e suite leaves it unchecked).
  bool always_allow_self = false;
};

// One end of a flow: a pod of the cluster, or an address outside it.
struct Endpoint {
  static Endpoint Pod(int pod_index) { return Endpoint{true, pod_index, IpAddress()}; }
  static Endpoint External(const IpAddress& address) { return Endpoint{false, -1, address}; }
  bool is_pod = false;
  int pod_index = -1;   // when is_pod: index into Cluster::pod()
  IpAddress address;    // when !is_pod
};

// A connection attempt: source, destination, protocol and destination port.
struct Flow {
  Endpoint source;
  Endpoint destination;
  Protocol protocol = Protocol::kTCP;
  uint16_t port = 0;
};

// The address family a flow has, as a packet has one. Pod to pod: IPv4 when both pods have
// an IPv4 address, else IPv6 when both have one, else kNone (no address in common: only
// selectors can match, ipBlocks never). With an external end, that address's family.
AddressFamily FlowFamily(const Cluster& cluster, const Flow& flow);

// A rule of a policy: spec.ingress[rule] or spec.egress[rule] of `policy` ("namespace/name").
struct RuleRef {
  std::string policy;
  Direction direction = Direction::kIngress;
  int rule = 0;

  friend bool operator==(const RuleRef& a, const RuleRef& b) {
    return a.policy == b.policy && a.direction == b.direction && a.rule == b.rule;
  }
  friend bool operator<(const RuleRef& a, const RuleRef& b) {
    return std::tie(a.policy, a.direction, a.rule) < std::tie(b.policy, b.direction, b.rule);
  }
  std::string ToString() const;  // "default/allow-db spec.ingress[0]"
};

// A rule of a cluster-scoped tier policy (np/tiers/model.h) that matched a flow: the first
// matching rule of its tier, which decided (Allow, Deny) or passed the flow on (Pass).
struct TierRuleRef {
  tiers::Tier tier = tiers::Tier::kAdmin;
  std::string policy;  // "ClusterNetworkPolicy deny-all"
  int32_t priority = 0;
  Direction direction = Direction::kIngress;
  int rule = 0;
  std::string rule_name;  // may be empty
  tiers::Action action = tiers::Action::kDeny;

  friend bool operator==(const TierRuleRef& a, const TierRuleRef& b) {
    return std::tie(a.tier, a.policy, a.priority, a.direction, a.rule, a.rule_name, a.action) ==
           std::tie(b.tier, b.policy, b.priority, b.direction, b.rule, b.rule_name, b.action);
  }
  // "Admin tier, ClusterNetworkPolicy x (priority 5) spec.ingress[0] \"deny-ssh\": Deny"
  std::string ToString() const;
};

// What one side of a flow decided: egress at the source pod, or ingress at the destination.
// With policy tiers, per direction: the Admin tier's first matching rule (Allow, Deny final;
// Pass goes on), then NetworkPolicy (decides for pods it isolates), then the Baseline tier's
// first matching rule, then allow.
struct DirectionVerdict {
  bool applies = false;   // false when that end is outside the cluster
  bool isolated = false;  // some policy selecting the pod has this direction in policyTypes
  std::vector<std::string> isolating_policies;  // those policies, sorted "namespace/name"
  std::vector<RuleRef> allowing_rules;          // every rule of them that admits the flow, sorted
  // Addresses of the pod that another live pod holds too (sorted text). np cannot tell whose
  // packet is whose, so such a pod is quarantined: this side denies whatever the rules say.
  std::vector<std::string> shared_addresses;
  // The Admin tier's matching rule, if any; the Baseline tier's, when it was consulted (no
  // final Admin decision and no NetworkPolicy isolating the pod).
  std::optional<TierRuleRef> admin_rule;
  std::optional<TierRuleRef> baseline_rule;
  // Peers skipped on the way because objects cannot decide them (domainNames), e.g.
  // "ClusterNetworkPolicy allow-dns spec.egress[0].to[1].domainNames".
  std::vector<std::string> not_evaluable;

  bool allowed() const {
    if (!applies) return true;
    if (!shared_addresses.empty()) return false;
    if (admin_rule && admin_rule->action != tiers::Action::kPass) {
      return admin_rule->action == tiers::Action::kAllow;
    }
    if (isolated) return !allowing_rules.empty();
    if (baseline_rule && baseline_rule->action != tiers::Action::kPass) {
      return baseline_rule->action == tiers::Action::kAllow;
    }
    return true;
  }

  friend bool operator==(const DirectionVerdict& a, const DirectionVerdict& b) {
    return a.applies == b.applies && a.isolated == b.isolated &&
           a.isolating_policies == b.isolating_policies &&
           a.allowing_rules == b.allowing_rules && a.shared_addresses == b.shared_addresses &&
           a.admin_rule == b.admin_rule && a.baseline_rule == b.baseline_rule &&
           a.not_evaluable == b.not_evaluable;
  }
};

// The verdict on a flow, with the reason.
struct Verdict {
  bool allowed = false;
  // Allowed only because EvaluationOptions::always_allow_self and source == destination.
  bool allowed_as_self = false;
  AddressFamily family = AddressFamily::kNone;
  DirectionVerdict egress;   // at the source
  DirectionVerdict ingress;  // at the destination

  friend bool operator==(const Verdict& a, const Verdict& b) {
    return a.allowed == b.allowed && a.allowed_as_self == b.allowed_as_self &&
           a.family == b.family && a.egress == b.egress && a.ingress == b.ingress;
  }
  friend bool operator!=(const Verdict& a, const Verdict& b) { return !(a == b); }
};

// "x/a" for a pod, the address for an external end.
std::string EndpointName(const Cluster& cluster, const Endpoint& endpoint);

// One truth table: every ordered pod pair on one protocol and port; allowed[i * n + j] is 1
// when pod i may reach pod j.
struct TruthTable {
  Protocol protocol = Protocol::kTCP;
  uint16_t port = 0;
  std::vector<uint8_t> allowed;
};

// The JSON of `netpol matrix -o json` (and of `netpol probe -o json`), exactly:
// {"pods": ["ns/name", ...], "matrices": [{"protocol": "TCP", "port": 80,
//  "allowed": [[true, ...], ...]}]} with allowed[i][j] the verdict from pods[i] to pods[j].
std::string TruthTablesJson(const std::vector<std::string>& pods,
                            const std::vector<TruthTable>& tables);
// A JSON string literal, quotes included.
std::string JsonQuote(absl::string_view text);

// Reads one end of a flow as people write it: "namespace/name" is that pod ("name" alone is
// in namespace default, as kubectl reads it, else the first address of the Node of that name);
// an IPv4 or IPv6 address is the pod that owns it, else an address outside the cluster. NotFound names the pod when there is no such pod.
absl::StatusOr<Endpoint> ParseEndpoint(const Cluster& cluster, absl::string_view text);

// A readable, multi-line explanation: ALLOWED or DENIED, then for each side whether the pod
// is isolated, by which policies, and which rules admitted the flow — or that none did.
std::string FormatVerdict(const Cluster& cluster, const Flow& flow, const Verdict& verdict);

}  // namespace np

#endif  // NP_VERDICT_H_
