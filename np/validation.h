// np/validation.h — the API server's validation rules for the objects np reads, so that np
// rejects exactly what `kubectl apply` would be refused, and says why with the field path.
//
//   std::vector<np::Diagnostic> d = np::ValidateNetworkPolicy(policy);
//   for (const auto& e : d) std::cerr << e.ToString() << "\n";
//   // NetworkPolicy default/allow-db: spec.ingress[0].ports[0].endPort: Invalid value: 79:
//   //   must be greater than or equal to `port`
//
// Each function returns every problem found (errors and warnings; past kMaxDiagnostics, a
// count of the rest, see np::Diagnostic), with kind, object and field filled in; the source
// location is left for the caller, who knows it. Field paths are
// spelled as the API server spells them, and messages carry its field.Error kinds: "Invalid
// value: <value>: <why>", "Required value", "Unsupported value: ... supported values: ...",
// "Forbidden: ...", "Duplicate value: ...", "Too long: ...".
//
// Errors are what the API server refuses in any object. Warnings are values it still keeps
// in objects stored before it became strict, which np must read in snapshots of live
// clusters: IP and CIDR values in legacy forms (leading zeros, IPv4-mapped IPv6, CIDR host
// bits; KEP-4858), and selector values that are not label values. np also warns where the API
// server is silent but a policy likely means something else (policyTypes listed twice, a
// port name defined in two containers, a wrong kubernetes.io/metadata.name label). The
// implementation file lists the upstream sources.
//
// Thread safety: pure functions; call from any thread.
#ifndef NP_VALIDATION_H_
#define NP_VALIDATION_H_

#include <vector>

#include "np/cluster.h"
#include "proto/k8s.pb.h"

namespace np {

// networking.k8s.io/v1 NetworkPolicy: metadata (name, generateName, namespace, labels,
// annotations, generation), spec.podSelector, every peer (exactly one of: podSelector and/or
// namespaceSelector, or ipBlock alone; selectors; ipBlock cidr and each except strictly
// inside it), every port (protocol, port number or IANA name, endPort), policyTypes. A CIDR
// with host bits set ("10.0.0.1/8") is accepted with a warning and means its network.
std::vector<Diagnostic> ValidateNetworkPolicy(const k8s::NetworkPolicy& policy);

// The parts of a Pod np reads: metadata, container ports (number, host port, name unique in
// its container, protocol), spec.nodeName (a DNS-1123 subdomain), status.podIP/podIPs (valid addresses, at most one per family,
// no repeats, podIP equal to podIPs[0] when both are set). Containers themselves (names,
// images) are not checked: np does not read them.
std::vector<Diagnostic> ValidatePod(const k8s::Pod& pod);

// Metadata of a Namespace: the name is a DNS-1123 label, metadata.namespace must be empty.
std::vector<Diagnostic> ValidateNamespace(const k8s::Namespace& ns);

// v1 Service, the fields np reads (ValidateService): metadata (the name a DNS-1035 label),
// spec.type, spec.selector (labels), spec.clusterIP/clusterIPs ("None" or addresses; clusterIPs[0]
// equal to clusterIP), spec.ports (at least one unless headless or ExternalName; names DNS-1123
// labels, required and unique when there are several; port 1..65535; protocol; targetPort a
// number 1..65535 or an IANA port name). Absent protocol and targetPort are defaults, not errors.
std::vector<Diagnostic> ValidateService(const k8s::Service& service);
// Shared with the policy tiers' validation (np/tiers/validation.h): ObjectMeta of a
// cluster-scoped object of `kind` (name a DNS-1123 subdomain, no namespace), and one label
// selector at `path` (e.g. "spec.subject.namespaces").
std::vector<Diagnostic> ValidateClusterScopedMetadata(absl::string_view kind,
                                                      const k8s::ObjectMeta& meta);
std::vector<Diagnostic> ValidateSelector(absl::string_view kind, std::string object,
                                         const k8s::LabelSelector& selector,
                                         const std::string& path);

}  // namespace np

#endif  // NP_VALIDATION_H_
