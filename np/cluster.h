// np/cluster.h — a validated, immutable snapshot of the Kubernetes objects that decide
// NetworkPolicy verdicts: Namespaces, Pods and NetworkPolicies (plus Services, which decide
// nothing but name groups of pods in queries: np/services.h).
//
//   np::ClusterObjects objects;
//   objects.pods.push_back({pod_proto, {}});
//   objects.policies.push_back({policy_proto, {}});
//   std::vector<np::Diagnostic> diagnostics;
//   absl::StatusOr<np::Cluster> cluster = np::Cluster::Create(std::move(objects), &diagnostics);
//   if (!cluster.ok()) { /* every error is in `diagnostics`, with object and field path */ }
//   std::optional<int> a = cluster->FindPod("x", "a");
//
// Objects usually come from np::ClusterLoader (np/loader.h), which reads YAML and JSON.
// A Cluster is cheap to copy (the data is shared and never changes).
//
// Thread safety: immutable after Create(); every const method may be called from any thread.
#ifndef NP_CLUSTER_H_
#define NP_CLUSTER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "np/tiers/model.h"
#include "np/types.h"
#include "proto/k8s.pb.h"
#include "proto/tiers.pb.h"

namespace np {

// The label every namespace carries, set by the API server to the namespace's name.
inline constexpr absl::string_view kNamespaceNameLabel = "kubernetes.io/metadata.name";

// Text that every copy shares instead of copying: one object's name in all of its
// diagnostics, one file name in all of its objects, so that memory does not grow with name
// length times the number of findings. Immutable; converts from and compares with strings.
class SharedString {
 public:
  SharedString() = default;
  // Implicit, so that `diagnostic.object = name;` reads as it would for a std::string.
  SharedString(std::string text)  // NOLINT(google-explicit-constructor)
      : text_(text.empty() ? nullptr : std::make_shared<const std::string>(std::move(text))) {}
  SharedString(absl::string_view text) : SharedString(std::string(text)) {}  // NOLINT
  SharedString(const char* text) : SharedString(std::string(text)) {}        // NOLINT

  const std::string& str() const;
  operator absl::string_view() const { return str(); }  // NOLINT
  bool empty() const { return text_ == nullptr; }
  size_t size() const { return str().size(); }

  friend bool operator==(const SharedString& a, const SharedString& b) {
    return a.str() == b.str();
  }
  friend bool operator==(const SharedString& a, absl::string_view b) { return a.str() == b; }
  friend bool operator==(const SharedString& a, const std::string& b) { return a.str() == b; }
  friend bool operator==(const SharedString& a, const char* b) { return a.str() == b; }
  template <typename T>
  friend bool operator==(const T& a, const SharedString& b) {
    return b == a;
  }
  template <typename T>
  friend bool operator!=(const SharedString& a, const T& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& out, const SharedString& s) {
    return out << s.str();
  }

 private:
  std::shared_ptr<const std::string> text_;
};

struct SourceLocation {
  SharedString file;  // empty when the object did not come from a file
  int line = 0;       // 1-based; 0 when unknown
};

// One finding about the input: an error (the input is rejected) or a warning (accepted,
// but worth a look). Its text names the object and the field path, e.g.
// "policies.yaml:12: NetworkPolicy default/allow-db: spec.ingress[0].ports[1].endPort:
// must be greater than or equal to port".
//
// Lists of diagnostics are bounded: every list np fills (ClusterLoader, Cluster::Create, the
// Validate* functions) keeps at most kMaxDiagnostics findings. Past that it counts them, in
// one last entry that says how many errors and warnings were left out (is_omission()).
struct Diagnostic {
  enum class Severity : uint8_t { kError, kWarning };
  Severity severity = Severity::kError;
  SharedString kind;    // "NetworkPolicy", "Pod", "Namespace"; empty before the kind is known
  SharedString object;  // "namespace/name" ("name" for a Namespace); empty when unknown
  std::string field;    // field path, e.g. "spec.ingress[0].from[1].ipBlock.cidr"; may be empty
  std::string message;  // what is wrong, in the API server's words where it has them
  SourceLocation location;
  // A warning about something that changes verdicts (an address np reads differently from
  // its text, a pod quarantined for a shared address): every command prints these, not only
  // `validate`.
  bool affects_verdicts = false;
  // Only on the entry that ends a list cut short: how many findings it stands for. Its
  // severity is kError when any of them is an error; its message says how many were left out.
  int64_t omitted_errors = 0;
  int64_t omitted_warnings = 0;

  bool is_error() const { return severity == Severity::kError; }
  bool is_omission() const { return omitted_errors + omitted_warnings > 0; }
  // One line, safe to print: names, field and file are printed as they are when plain and
  // quoted and escaped like Go's %q otherwise (`NetworkPolicy "x\x1b[2J"`), long ones cut in
  // the middle; control characters in the message are escaped the same way (\n, \x1b).
  std::string ToString() const;
};

// The most findings one list of diagnostics keeps (see Diagnostic).
inline constexpr size_t kMaxDiagnostics = 1000;

// Appends `d` to `list`, or counts it in the list's last entry once the list holds
// kMaxDiagnostics findings. An omission entry adds its counts.
void AppendDiagnostic(std::vector<Diagnostic>* list, Diagnostic d);
// How many errors (warnings) `list` reports, those left out included.
int64_t CountErrors(const std::vector<Diagnostic>& list);
int64_t CountWarnings(const std::vector<Diagnostic>& list);
// The errors of `list`, one per line, for a Status message: the first `max_lines`, then how
// many more there are.
std::string ErrorSummary(const std::vector<Diagnostic>& list, size_t max_lines = 20);

// `text` for a line of output: as it is when plain, else quoted and escaped as Diagnostic
// ToString() prints names (for text from the input that np prints elsewhere, e.g. a kind).
std::string DisplayText(absl::string_view text);

// Where an object came from, and the line of each of its fields where the input had lines.
struct ObjectSource {
  SourceLocation location;                            // where the object starts
  absl::flat_hash_map<std::string, int> field_lines;  // field path -> line
  // The line of `field`, else of its nearest enclosing field that has one, else the object's.
  int LineOf(absl::string_view field) const;
};

template <typename T>
struct Sourced {
  T object;
  ObjectSource source;
};

// The raw input of a Cluster: objects in any order, not yet validated.
struct ClusterObjects {
  std::vector<Sourced<k8s::Namespace>> namespaces;
  std::vector<Sourced<k8s::Pod>> pods;
  std::vector<Sourced<k8s::NetworkPolicy>> policies;
  // v1 Services: a query convenience (np/services.h), never a policy input. They change no
  // verdict and imply no namespace.
  std::vector<Sourced<k8s::Service>> services;
  // The cluster-scoped policy tiers (np/tiers/model.h) and the Nodes their `nodes` peers select.
  std::vector<Sourced<policy_networking::AdminNetworkPolicy>> admin_network_policies;
  std::vector<Sourced<policy_networking::BaselineAdminNetworkPolicy>> baseline_admin_network_policies;
  std::vector<Sourced<policy_networking::ClusterNetworkPolicy>> cluster_network_policies;
  std::vector<Sourced<k8s::Node>> nodes;
};

// A change to a cluster. For kDelete only the object's metadata (namespace, name) is read.
// The policy tier kinds and Node are cluster-scoped: only the name is read.
struct Change {
  enum class Op : uint8_t { kUpsert, kDelete };
  Op op = Op::kUpsert;
  std::variant<k8s::Namespace, k8s::Pod, k8s::NetworkPolicy,
               policy_networking::AdminNetworkPolicy,
               policy_networking::BaselineAdminNetworkPolicy,
               policy_networking::ClusterNetworkPolicy, k8s::Node>
      object;
  // Whether the object is a tier policy or a Node (what the policy tiers compile from).
  bool is_tier_object() const { return object.index() >= 3; }
};

// Applies a change to a tier policy or Node (Change::is_tier_object) to `objects`: an upsert
// replaces by kind and name or adds; deleting an absent object is NotFound naming it.
// Nothing is validated here.
absl::Status ApplyTierChange(const Change& change, ClusterObjects* objects);

// A container port, as named ports resolve against it.
struct NamedPort {
  std::string name;
  Protocol protocol = Protocol::kTCP;
  uint16_t port = 0;
};

// A namespace, real or implied (referenced by a pod or policy but absent from the input).
struct NamespaceInfo {
  std::string name;
  // The object's labels plus kubernetes.io/metadata.name=<name>, as the API server sets it.
  absl::flat_hash_map<std::string, std::string> labels;
  bool implied = false;
};

// A pod that takes part in pod networking (see Cluster::Create for which are left out).
struct PodInfo {
  std::string namespace_name;
  std::string name;
  int namespace_index = 0;
  absl::flat_hash_map<std::string, std::string> labels;
  std::vector<IpAddress> ips;           // status.podIPs (or status.podIP), in order
  std::optional<IpAddress> ipv4, ipv6;  // the first address of each family, if any
  std::vector<NamedPort> named_ports;   // container ports that have a name
  std::string node_name;                // spec.nodeName; may be empty
  // Addresses of this pod that another live pod holds too. np cannot tell such pods'
  // packets apart, so it quarantines them: every flow from or to the pod is denied, and a
  // shared address matches no rule peer but "every peer" (README, "Shared addresses").
  std::vector<IpAddress> shared_ips;
  // "Deployment shop/api" when np made this pod from a workload (np/workloads.h), else empty.
  std::string synthesized_from;
  bool quarantined() const { return !shared_ips.empty(); }
  std::string Key() const { return namespace_name + "/" + name; }
  const std::optional<IpAddress>& ip(AddressFamily f) const {
    return f == AddressFamily::kIPv6 ? ipv6 : ipv4;
  }
};

// A Node: its labels and the IP addresses of status.addresses (each read once, by
// IpAddress::Parse; Hostname entries and other non-addresses are left out).
struct NodeInfo {
  std::string name;
  absl::flat_hash_map<std::string, std::string> labels;
  std::vector<IpAddress> addresses;
};

class Cluster {
 public:
  // Validates every object with the API server's rules (np/validation.h) and indexes them.
  // Errors (including duplicates of the same kind/namespace/name) make it fail with
  // InvalidArgument whose message lists them; `diagnostics`, when given, receives every
  // error and warning with its source location.
  //
  // Left out, with a warning: pods in phase Succeeded or Failed (they hold no address any
  // more), and hostNetwork pods (NetworkPolicy does not apply to them). Namespaces that pods
  // or policies reference but the input lacks are implied, with only the name label.
  // Addresses are read once, here: IPv4-mapped IPv6 text in pod IPs and ipBlocks is rewritten
  // to the IPv4 form it denotes (with validation's warning), so every later reader of the
  // objects sees one value. Two live pods with the same IP are both quarantined
  // (PodInfo::shared_ips), with a warning naming them; PodByIp() returns the first in order.
  // Running out of memory gives ResourceExhausted (the C++ runtime's std::bad_alloc is caught
  // here, so that no input can abort the caller).
  static absl::StatusOr<Cluster> Create(ClusterObjects objects,
                                        std::vector<Diagnostic>* diagnostics = nullptr);

  // A new cluster with `changes` applied in order (upsert replaces by kind/namespace/name;
  // deleting an absent object is an error). This cluster is unchanged either way.
  absl::StatusOr<Cluster> Apply(absl::Span<const Change> changes,
                                std::vector<Diagnostic>* diagnostics = nullptr) const;

  // Namespaces sorted by name; pods sorted by (namespace, name); policies by (namespace, name).
  int namespace_count() const;
  int pod_count() const;
  int policy_count() const;
  const NamespaceInfo& ns(int index) const;
  const PodInfo& pod(int index) const;
  const k8s::Pod& pod_object(int index) const;
  const k8s::NetworkPolicy& policy(int index) const;
  std::string PolicyKey(int index) const;  // "namespace/name"

  // The policy tiers in evaluation order (np/tiers/model.h: tier, priority, name, kind), and
  // the Nodes sorted by name. has_tier_policies(): any AdminNetworkPolicy,
  // BaselineAdminNetworkPolicy or ClusterNetworkPolicy (the engine refuses such clusters).
  int tier_policy_count() const;
  const tiers::TierPolicy& tier_policy(int index) const;
  bool has_tier_policies() const { return tier_policy_count() > 0; }
  int node_count() const;
  const NodeInfo& node(int index) const;

  std::optional<int> FindNamespace(absl::string_view name) const;
  std::optional<int> FindPod(absl::string_view namespace_name, absl::string_view name) const;
  // Accepts "namespace/name". When no pod has that name, "namespace/workload" names the
  // first pod synthesized from that workload (np/workloads.h).
  std::optional<int> FindPod(absl::string_view key) const;
  std::optional<int> FindPolicy(absl::string_view namespace_name, absl::string_view name) const;
  // Pods of the input that take no part in pod networking (see Create), sorted, each as
  // ("namespace/name", why): ("shop/agent", "hostNetwork"), ("shop/done", "phase Succeeded").
  std::vector<std::pair<std::string, std::string>> LeftOutPods() const;
  // Why `key` ("namespace/name", or "namespace/workload" as FindPod takes it) names no pod
  // of this cluster although the input holds it, e.g. "pod shop/agent is hostNetwork:
  // NetworkPolicy does not apply to it (its traffic is the node's)"; nullopt when the input
  // has no such pod at all.
  std::optional<std::string> WhyLeftOut(absl::string_view key) const;
  // Services, sorted by (namespace, name), with the API server's defaults applied: protocol
  // TCP, targetPort = port when absent, type ClusterIP. np/services.h resolves them to pods.
  int service_count() const;
  const k8s::Service& service(int index) const;
  std::optional<int> FindService(absl::string_view namespace_name, absl::string_view name) const;
  std::optional<int> PodByIp(const IpAddress& address) const;
  // Every live pod holding `address`, in pod order (two or more: a shared address).
  std::vector<int> PodsByIp(const IpAddress& address) const;

  // The objects this cluster was built from (sorted as above), e.g. to derive a changed copy.
  ClusterObjects ToObjects() const;

 private:
  struct Data;
  explicit Cluster(std::shared_ptr<const Data> data) : data_(std::move(data)) {}
  static absl::StatusOr<Cluster> CreateOrThrow(ClusterObjects objects,
                                               std::vector<Diagnostic>* diagnostics);
  static void IndexTierObjects(ClusterObjects objects, Data* data,
                               std::vector<Diagnostic>* found);
  std::shared_ptr<const Data> data_;
};

}  // namespace np

#endif  // NP_CLUSTER_H_
