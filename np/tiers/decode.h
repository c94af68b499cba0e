// np/tiers/decode.h (internal) — reads the policy tiers' kinds and v1 Node from a YAML tree
// for the loader (np/loader.cc), with the loader's strictness: in the tier kinds every unknown
// field is an error (including a field that only the other API version has, e.g. `ports` in a
// api::ClusterNetworkPolicy or `protocols` in an api::AdminNetworkPolicy); Node is read leniently (only
// metadata and status.addresses), like Pod.
//
//   tiers::DecodeClusterNetworkPolicy(decoder, node, &policy);
//   if (decoder.ok()) objects.cluster_network_policies.push_back(...);
//
// Thread safety: pure functions over the decoder they are given.
#ifndef NP_TIERS_DECODE_H_
#define NP_TIERS_DECODE_H_

#include "np/internal/object_decoder.h"
#include "proto/k8s.pb.h"
#include "proto/tiers.pb.h"

namespace np::tiers {

// The objects as the API defines them (proto/tiers.proto).
namespace api = ::np::policy_networking;

inline constexpr absl::string_view kPolicyV1Alpha1 = "policy.networking.k8s.io/v1alpha1";
inline constexpr absl::string_view kPolicyV1Alpha2 = "policy.networking.k8s.io/v1alpha2";

void DecodeAdminNetworkPolicy(::np::internal::ObjectDecoder& d, const ::np::internal::YamlNode& node,
                              api::AdminNetworkPolicy* policy);
void DecodeBaselineAdminNetworkPolicy(::np::internal::ObjectDecoder& d, const ::np::internal::YamlNode& node,
                                      api::BaselineAdminNetworkPolicy* policy);
void DecodeClusterNetworkPolicy(::np::internal::ObjectDecoder& d, const ::np::internal::YamlNode& node,
                                api::ClusterNetworkPolicy* policy);
void DecodeNode(::np::internal::ObjectDecoder& d, const ::np::internal::YamlNode& node, k8s::Node* out);

}  // namespace np::tiers

#endif  // NP_TIERS_DECODE_H_
