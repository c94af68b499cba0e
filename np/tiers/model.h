// np/tiers/model.h — the cluster-scoped policy tiers in one version-independent form:
// AdminNetworkPolicy and BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1) and
// ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) all become a TierPolicy, which is
// what evaluation reads (np/reference.cc). Cluster::Create builds them from the validated
// objects (np/cluster.h: Cluster::tier_policy) and keeps them in evaluation order.
//
//   for (int i = 0; i < cluster.tier_policy_count(); ++i) {
//     const np::tiers::TierPolicy& p = cluster.tier_policy(i);   // Admin tier first
//     ... p.tier, p.priority, p.ingress[r].action ...
//   }
//
// Evaluation order (np's documented choice where the API leaves room): by tier (Admin, then
// Baseline), then ascending priority, then name, then kind. Upstream leaves the order of two
// policies of one tier with the same priority undefined; np orders them by name so that every
// run gives the same verdict, and validation warns about the tie. A BaselineAdminNetworkPolicy
// has no priority; np ranks it as priority 1000, the last a ClusterNetworkPolicy can have.
//
// Thread safety: plain values.
#ifndef NP_TIERS_MODEL_H_
#define NP_TIERS_MODEL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "np/types.h"
#include "proto/k8s.pb.h"

namespace np::tiers {

enum class Tier : uint8_t { kAdmin = 0, kBaseline = 1 };
absl::string_view TierName(Tier tier);  // "Admin", "Baseline"

// v1alpha1 "Allow" and v1alpha2 "Accept" are the same action.
enum class Action : uint8_t { kAllow, kDeny, kPass };
absl::string_view ActionName(Action action);  // "Allow", "Deny", "Pass"

// The policy's pods: every pod of the namespaces `namespace_selector` selects, narrowed to
// those `pod_selector` selects when it is set ("pods": namespace AND pod selectors).
// Host-network pods are never subjects (np leaves them out of the cluster's pods).
struct Subject {
  k8s::LabelSelector namespace_selector;
  std::optional<k8s::LabelSelector> pod_selector;
};

struct Peer {
  enum class Kind : uint8_t {
    kNamespaces,   // every pod of the selected namespaces
    kPods,         // pods matching both selectors
    kNodes,        // the addresses (status.addresses) of the selected Nodes
    kNetworks,     // addresses in any of the CIDRs, pod addresses included
    kDomainNames,  // FQDNs: never decidable from objects ("not evaluable offline")
  };
  Kind kind = Kind::kNamespaces;
  k8s::LabelSelector namespace_selector;  // kNamespaces, kPods
  k8s::LabelSelector pod_selector;        // kPods
  k8s::LabelSelector node_selector;       // kNodes
  std::vector<IpPrefix> networks;         // kNetworks
  std::vector<std::string> domain_names;  // kDomainNames
};

// A port condition: a protocol with a port range (a single port is a range of one), or a
// named port resolved against the destination pod's container ports.
struct PortMatch {
  Protocol protocol = Protocol::kTCP;
  PortRange range;          // when named_port is empty
  std::string named_port;   // when set: the destination pod's container port of that name
};

struct Rule {
  std::string name;  // may be empty
  Action action = Action::kDeny;
  std::vector<Peer> peers;       // OR; at least one
  std::vector<PortMatch> ports;  // OR; empty: every port of every protocol
};

struct TierPolicy {
  Tier tier = Tier::kAdmin;
  int32_t priority = 0;
  std::string kind;         // "AdminNetworkPolicy", "BaselineAdminNetworkPolicy", "ClusterNetworkPolicy"
  std::string api_version;  // "policy.networking.k8s.io/v1alpha1" or ".../v1alpha2"
  std::string name;         // cluster-scoped: no namespace
  bool priority_implied = false;  // a BANP, ranked as kBaselineAdminNetworkPolicyPriority
  Subject subject;
  std::vector<Rule> ingress;  // in written order: the first matching rule decides
  std::vector<Rule> egress;

  const std::vector<Rule>& rules(Direction d) const {
    return d == Direction::kIngress ? ingress : egress;
  }
  // "ClusterNetworkPolicy deny-all" for messages.
  std::string Key() const { return kind + " " + name; }
};

// Where a BaselineAdminNetworkPolicy ranks within the Baseline tier (see above).
inline constexpr int32_t kBaselineAdminNetworkPolicyPriority = 1000;

// True when `a` is evaluated before `b` (tier, priority, name, kind).
bool EvaluatedBefore(const TierPolicy& a, const TierPolicy& b);

}  // namespace np::tiers

#endif  // NP_TIERS_MODEL_H_
