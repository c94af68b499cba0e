// np/tiers/validation.h — the policy tiers' CRD validation (kubernetes-sigs/network-policy-api
// config/crd: the OpenAPI bounds and the CEL x-kubernetes-validations of each version), with
// field paths as the API server prints them (`spec.ingress[0].from[1].namespaces`), and the
// conversion of a valid object to np's version-independent TierPolicy (np/tiers/model.h).
//
//   std::vector<np::Diagnostic> d = np::tiers::ValidateClusterNetworkPolicy(policy);
//   if (d.empty()) np::tiers::TierPolicy p = np::tiers::FromClusterNetworkPolicy(policy);
//
// Cluster::Create calls these; the conversions assume a valid object.
//
// Thread safety: pure functions; call from any thread.
#ifndef NP_TIERS_VALIDATION_H_
#define NP_TIERS_VALIDATION_H_

#include <vector>

#include "np/cluster.h"
#include "np/tiers/model.h"
#include "proto/k8s.pb.h"
#include "proto/tiers.pb.h"

namespace np::tiers {

// The objects as the API defines them (proto/tiers.proto).
namespace api = ::np::policy_networking;

// Bounds from the CRDs.
inline constexpr int kMinPriority = 0;
inline constexpr int kMaxPriority = 1000;
inline constexpr int kMaxRuleNameLength = 100;
inline constexpr int kV1Alpha1MaxRules = 100;  // per direction, and peers / ports per rule
inline constexpr int kV1Alpha2MaxRules = 25;   // per direction, and peers / protocols per rule
inline constexpr int kMaxNetworks = 25;        // CIDRs per networks peer (both versions)
inline constexpr int kMaxDomainNames = 25;
inline constexpr int kMaxCidrLength = 43;
// "BaselineAdminNetworkPolicy ... only one is allowed per cluster, named "default"".
inline constexpr absl::string_view kBaselineAdminNetworkPolicyName = "default";

std::vector<Diagnostic> ValidateAdminNetworkPolicy(const api::AdminNetworkPolicy& policy);
std::vector<Diagnostic> ValidateBaselineAdminNetworkPolicy(const api::BaselineAdminNetworkPolicy& policy);
std::vector<Diagnostic> ValidateClusterNetworkPolicy(const api::ClusterNetworkPolicy& policy);
// Metadata, and each status.addresses entry of type InternalIP or ExternalIP must be an
// IP address (other types, e.g. Hostname, are names and never match a flow).
std::vector<Diagnostic> ValidateNode(const k8s::Node& node);

// Warnings for policies of one tier with the same priority, naming both: upstream leaves
// their order undefined (np's order is in np/tiers/model.h). `policies` in evaluation order.
std::vector<Diagnostic> SamePriorityWarnings(const std::vector<TierPolicy>& policies);

// OK when `cluster` has no tier policy; else Unimplemented, naming them, for the parts of np
// that do not handle tiers yet (the IR, every backend, the connection listing), so that
// they refuse the input rather than silently ignore the policies. `who` starts the message.
absl::Status RefuseTiers(const Cluster& cluster, absl::string_view who);
// The same from the policies' keys ("ClusterNetworkPolicy x", TierPolicy::Key), in
// evaluation order.
absl::Status RefuseTierPolicies(const std::vector<std::string>& keys, absl::string_view who);

TierPolicy FromAdminNetworkPolicy(const api::AdminNetworkPolicy& policy);
TierPolicy FromBaselineAdminNetworkPolicy(const api::BaselineAdminNetworkPolicy& policy);
TierPolicy FromClusterNetworkPolicy(const api::ClusterNetworkPolicy& policy);

}  // namespace np::tiers

#endif  // NP_TIERS_VALIDATION_H_
