// np/services.h — a Service as a query target: "may x/a reach Service shop/api on port http?"
// resolved to the pods behind it, each with the port the packet really arrives on.
//
//   absl::StatusOr<np::ServiceTarget> target =
//       np::ResolveService(cluster, "shop/api", "http", std::nullopt);
//   for (const np::ServiceEndpoint& e : target->endpoints) {
//     np::Flow flow{source, np::Endpoint::Pod(e.pod_index), e.protocol, e.port};
//     ...                                          // one ordinary pod -> pod verdict each
//   }
//   for (const np::NotAnEndpoint& n : target->not_endpoints) { ... n.reason ... }
//
// Services are not a policy input: NetworkPolicy never sees a Service, only the pod a packet
// reaches and its destination port after kube-proxy's translation (the targetPort). So a
// Service adds no verdict of its own; it names a group of pods and a port mapping.
// Resolution follows Kubernetes' endpoint controller: the backing pods are the live pods of
// the Service's namespace whose labels include every spec.selector entry (np does not model
// readiness: every live pod counts, also one without an address); a numeric targetPort is
// used as is; a named targetPort is looked up in each pod's container ports with the Service
// port's protocol (the first container port that has both, as podutil.FindPort does), and a
// pod without it is not an endpoint of that port.
//
// Thread safety: pure functions over an immutable Cluster.
#ifndef NP_SERVICES_H_
#define NP_SERVICES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/cluster.h"
#include "np/types.h"

namespace np {

// A backing pod that receives the Service port's traffic, and where.
struct ServiceEndpoint {
  int pod_index = -1;  // into Cluster::pod()
  uint16_t port = 0;   // the targetPort, resolved on this pod
  Protocol protocol = Protocol::kTCP;
};

// A pod the selector matches that is no endpoint of the port, and why.
struct NotAnEndpoint {
  int pod_index = -1;
  std::string reason;  // e.g. `no container port named "http" for TCP`
};

struct ServiceTarget {
  int service_index = -1;  // into Cluster::service()
  std::string key;         // "namespace/name"
  std::string port_name;   // the Service port's name; may be empty (a single unnamed port)
  uint16_t port = 0;       // the Service port
  Protocol protocol = Protocol::kTCP;
  std::string target_port;  // as the Service writes it: "8080" or "http"
  std::vector<ServiceEndpoint> endpoints;    // in pod order
  std::vector<NotAnEndpoint> not_endpoints;  // in pod order
};

// Resolves Service `key` ("namespace/name"; "name" alone is in namespace default) on one of
// its ports: `port` is the Service port's number or name, or empty when the Service has
// exactly one port. `protocol`, when given, must be the chosen port's (it also picks between
// ports that share a number, as DNS's 53/TCP and 53/UDP do). Errors: NotFound (no such
// Service), InvalidArgument (no such port, an ambiguous or contradicting choice; the message
// lists the Service's ports), FailedPrecondition (a Service without selector or of type
// ExternalName: Kubernetes keeps no endpoints of its own for it, so np cannot know its pods).
// A selector that matches no pod is not an error: `endpoints` is empty.
absl::StatusOr<ServiceTarget> ResolveService(const Cluster& cluster, absl::string_view key,
                                             absl::string_view port,
                                             std::optional<Protocol> protocol);

// A port name on a destination pod, as a query gives it (`check --port http`): the number of
// the first container port with that name and protocol. InvalidArgument names the pod and the
// named ports it has.
absl::StatusOr<uint16_t> ResolvePodPortName(const Cluster& cluster, int pod_index,
                                            absl::string_view name, Protocol protocol);

// What every answer about a Service says, since a reader may expect the Service to matter.
inline constexpr absl::string_view kServiceNote =
    "Services are not a policy input: NetworkPolicy sees the backing pod and its target port";

// The summary line of verdicts on a Service's endpoints: "Service shop/api port http
// (TCP/80 -> targetPort http): 1 of 2 backing pods ALLOWED, 1 DENIED", or "...: no endpoint
// pod, nothing evaluated" when `target` has none.
std::string ServiceVerdictSummary(const ServiceTarget& target, int allowed_endpoints);

// Whether `text` names a Service: "svc/NAMESPACE/NAME" (both parts, so that "svc/web" keeps
// naming pod web of a namespace called svc); `key` then gets "NAMESPACE/NAME".
bool IsServiceReference(absl::string_view text, std::string* key = nullptr);
// The prefix of a Service reference in queries.
inline constexpr absl::string_view kServicePrefix = "svc/";

}  // namespace np

#endif  // NP_SERVICES_H_
