// np/validation.h — the API server's validation rules for the objects np reads, so that np
// rejects exactly what `kubectl apply` would be refused, and says why with the field path.
//
//   std::vector<np::Diagnostic> d = np::ValidateNetworkPolicy(policy);
//   for (const auto& e : d) std::cerr << e.ToString() << "\n";
//   // NetworkPolicy default/allow-db: spec.ingress[0].ports[0].endPort: Invalid value: 79:
//   //   must be greater than or equal to `port`
//
// Each function returns every problem found (errors and warnings), with kind, object and
// field filled in; the source location is left for the caller, who knows it.
//
// Thread safety: pure functions; call from any thread.
#ifndef NP_VALIDATION_H_
#define NP_VALIDATION_H_

#include <vector>

#include "np/cluster.h"
#include "proto/k8s.pb.h"

namespace np {

// networking.k8s.io/v1 NetworkPolicy: metadata (name, namespace, labels), spec.podSelector,
// every peer (selectors, ipBlock CIDR and except), every port (protocol, port number or
// name, endPort), policyTypes. A CIDR with host bits set is accepted with a warning, as the
// API server accepts it in objects stored before it became strict.
std::vector<Diagnostic> ValidateNetworkPolicy(const k8s::NetworkPolicy& policy);

// The parts of a Pod np reads: name, namespace, labels, container ports (number, name,
// protocol), status.podIP/podIPs.
std::vector<Diagnostic> ValidatePod(const k8s::Pod& pod);

// Name and labels of a Namespace.
std::vector<Diagnostic> ValidateNamespace(const k8s::Namespace& ns);

}  // namespace np

#endif  // NP_VALIDATION_H_
