// np/loader.h — reads Kubernetes objects from YAML and JSON, the way kubectl prints and
// accepts them, into a Cluster.
//
//   np::ClusterLoader loader;
//   if (absl::Status s = loader.AddPath("dump.yaml"); !s.ok()) { ... }   // file or directory
//   std::vector<np::Diagnostic> diagnostics;
//   absl::StatusOr<np::Cluster> cluster = loader.Build(&diagnostics);
//
// Input: multi-document YAML or JSON (UTF-8); each document a single object or a `kind: List`
// (what `kubectl get -o yaml` prints), or any `*List` kind with `items` (items of a typed
// list such as NetworkPolicyList may omit kind and apiVersion). Empty and null documents are
// ignored. Workloads (Deployment, ReplicaSet, StatefulSet, DaemonSet: apps/v1; Job, CronJob:
// batch/v1; ReplicationController: v1) are read and become pods at Build (np/workloads.h).
// Services (v1) are read into ClusterObjects::services (a query convenience, np/services.h).
// The policy tiers are read too: AdminNetworkPolicy and BaselineAdminNetworkPolicy
// (policy.networking.k8s.io/v1alpha1), ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2)
// — strictly, like NetworkPolicy — and Node (v1: labels and status.addresses, leniently).
// Kinds other than those, Namespace (v1), Pod (v1) and NetworkPolicy (networking.k8s.io/v1)
// are skipped and counted, e.g. np's own ReachabilityExpectation documents; a known kind with
// another apiVersion, or a document without kind, is an error.
//
// Reading follows Kubernetes (go-yaml v2, then strict JSON decoding into the API types):
// - Plain scalars resolve by YAML 1.1 rules: `80` and `0x50` are integers, `true`, `yes`,
//   `on`, `y` and `n` are booleans, `~` and `null` are null. A string field given another
//   type is an error, so `version: 2` or `namespace: n` must be quoted, as kubectl requires.
// - `port` (IntOrString): an integer is a number, a string is a name; `port: "80"` stays
//   the string "80" (which validation then rejects, as the API server does).
// - null means absent (`podSelector: null` is no selector); `{}` is present and empty.
// - NetworkPolicy: unknown fields are errors (`unknown field "spec.podSelecter"`), except
//   `status` and ObjectMeta's fields that np does not read (annotations, managedFields, ...).
//   Service: only metadata, spec.selector, spec.ports[] (name, protocol, port, targetPort),
//   spec.type, spec.clusterIP and spec.clusterIPs are read; everything else is ignored.
//   Pod and Namespace: only name, namespace, labels, generateName, uid, resourceVersion,
//   generation, spec.containers[].ports[], spec.nodeName, spec.hostNetwork and
//   status.phase/podIP/podIPs/hostIP are read; everything else is ignored.
// - Duplicate keys in a mapping that is read are errors. Anchors, aliases and `<<` merge
//   keys work; a merge key whose value is not a mapping or a list of mappings fails the
//   document, wherever it is ("map merge requires map or sequence of maps as the value").
// - Tags as go-yaml v2 reads them: on a mapping or a list they are ignored (`!!null {...}`
//   is a mapping); on a scalar, !!str/!!int/!!float/!!bool/!!null force the type or fail,
//   !!binary decodes base64, any other tag leaves the text a string.
// - A text whose first non-blank character is `{` is JSON, as kubectl decides: unquoted
//   words, unquoted keys, single quotes, tags, anchors and aliases are errors there, and
//   numbers are Go's JSON numbers (`1e400` is out of range: an error; in YAML it is the
//   string "1e400", as go-yaml leaves it). The first problem ends a JSON text.
//
// Every error is a Diagnostic naming the file and line, the object (kind, namespace/name)
// and the field path in upstream's spelling (`spec.ingress[0].ports[0].port`); an object
// with an error is left out. Each object's ObjectSource holds its first line and the line
// of every field read (LineOf), so that validation errors found later point at the right
// line. Malformed input (bad syntax or encoding, nesting deeper than 128 levels) gives an
// error and never crashes; parsing needs about 100 KB of stack.
//
// Resources are bounded by the input's size, never by a product of its parts: diagnostics
// share object and file names and a list keeps at most kMaxDiagnostics of them (np/cluster.h);
// what anchors and aliases repeat is charged to one budget per loader, 200000 nodes and
// 16 MiB of scalar text ("billion laughs" across many small files included); a YAML node
// costs 32 bytes. Running out of memory (std::bad_alloc from the C++ runtime) is caught at
// AddPath, AddText, Build and ParseChange and reported as ResourceExhausted.
//
// Thread safety: a ClusterLoader is not thread-safe; use one per thread. ParseChange is
// reentrant.
#ifndef NP_LOADER_H_
#define NP_LOADER_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/cluster.h"
#include "np/workloads.h"

namespace np {

class ClusterLoader {
 public:
  // A file, or every *.yaml, *.yml and *.json file below a directory, walked as `kubectl -R`
  // walks it (filepath.Walk): recursively, names sorted within each directory, extensions
  // compared case-sensitively, symbolic links to files read, links to directories not
  // followed. What is skipped is reported: a link loop or a dangling link named *.yaml,
  // *.yml or *.json is an error (kubectl fails to open it), other broken links, links to
  // directories, files that are not regular, and `*.YAML`-style names (kubectl skips them
  // too) are warnings, and other names are counted in one warning per directory.
  // A file below a directory that holds no Kubernetes object at all (no document with
  // apiVersion and kind) is skipped with a warning and counted as "(not Kubernetes)" in
  // skipped_kinds(). "-" reads standard input. A missing or unreadable path is an error naming it (NotFound,
  // ...); errors in the content give InvalidArgument. Either way they are also in
  // diagnostics().
  absl::Status AddPath(absl::string_view path);
  // YAML or JSON text; `source_name` is used as the file name in diagnostics. Fails with
  // InvalidArgument (listing the errors) when the text has any; objects read without error,
  // in this text and before, are kept.
  absl::Status AddText(absl::string_view text, absl::string_view source_name);
  // Objects that are already decoded.
  void Add(k8s::Namespace ns, ObjectSource source = {});
  void Add(k8s::Pod pod, ObjectSource source = {});
  void Add(k8s::NetworkPolicy policy, ObjectSource source = {});
  void Add(k8s::Service service, ObjectSource source = {});

  // How workloads become pods (np/workloads.h); applies at Build().
  void SetWorkloadOptions(WorkloadOptions options) { workload_options_ = std::move(options); }

  // Objects that live only in the cluster, which manifests kept in git lack (kube-system and
  // its DNS pods). `origin` names where they were given ("--namespace-labels", "the
  // namespace_labels argument"): diagnostics about them carry it in place of a file name.
  //
  // Labels of a namespace the input implies (a pod or policy is in it) or does not mention at
  // all: at Build it becomes a Namespace with these labels plus kubernetes.io/metadata.name,
  // validated as the API server validates one. Given twice for the same namespace, labels are
  // merged; one key with two values is an error here. A namespace the input also defines is
  // an error at Build naming both places: its manifest is where its labels belong, and np
  // will not guess which of the two sets the cluster has.
  absl::Status AddNamespaceLabels(absl::string_view namespace_name,
                                  const std::map<std::string, std::string>& labels,
                                  absl::string_view origin);
  // A pod that lives only in the cluster, as ParseClusterPod reads it: at Build it becomes a
  // pod like a workload's (named NAME-0, an address from the pod CIDR, synthesized_from
  // "ORIGIN NAMESPACE/NAME"), so "NAMESPACE/NAME" names it wherever a pod is named.
  void AddClusterPod(Workload pod) { cluster_pods_.push_back(std::move(pod)); }

  // What was read; workloads are turned into pods only by Build().
  const ClusterObjects& objects() const { return objects_; }
  const std::vector<Workload>& workloads() const { return workloads_; }
  // Kind -> how many objects of it were skipped.
  const std::map<std::string, int>& skipped_kinds() const { return skipped_kinds_; }
  // Problems found while reading (malformed documents, wrong field types, unknown fields).
  const std::vector<Diagnostic>& diagnostics() const { return diagnostics_; }

  // Validates and indexes what was read (Cluster::Create). Fails if reading or validation
  // found any error; `diagnostics` receives all of them (reading, then validation), errors
  // and warnings, at most kMaxDiagnostics and a count of the rest. `std::move(loader).Build()`
  // hands the objects over instead of copying them (objects() is empty afterwards).
  absl::StatusOr<Cluster> Build(std::vector<Diagnostic>* diagnostics = nullptr) const&;
  absl::StatusOr<Cluster> Build(std::vector<Diagnostic>* diagnostics = nullptr) &&;

 private:
  void SkipIfNotKubernetes(size_t first_diagnostic, size_t objects_before,
                           const std::string& file);
  absl::Status AddPathOrThrow(absl::string_view path);
  void AddTextOrThrow(absl::string_view text, absl::string_view source_name);
  absl::Status OutOfMemory(absl::string_view source_name);
  absl::StatusOr<Cluster> BuildFrom(ClusterObjects objects,
                                    std::vector<Diagnostic>* diagnostics) const;

  ClusterObjects objects_;
  std::vector<Workload> workloads_;
  std::vector<Workload> cluster_pods_;
  struct ClusterNamespace {
    std::map<std::string, std::string> labels;
    std::string origin;
  };
  std::map<std::string, ClusterNamespace> cluster_namespaces_;
  WorkloadOptions workload_options_;
  std::map<std::string, int> skipped_kinds_;
  std::vector<Diagnostic> diagnostics_;
  // What anchors and aliases have added over every text read (np/internal/yaml_tree.h).
  int64_t alias_nodes_ = 0;
  int64_t alias_bytes_ = 0;
};

// "NAMESPACE:KEY=VALUE[,KEY=VALUE...]" (the --namespace-labels form; no labels after the
// colon is allowed) as a namespace name and its labels. Errors quote the text; the labels
// themselves are validated at Build.
absl::StatusOr<std::pair<std::string, std::map<std::string, std::string>>> ParseNamespaceLabels(
    absl::string_view text);

// Decodes one Namespace, Pod or NetworkPolicy from YAML/JSON text as an upsert (for callers
// that hold a single object, e.g. an incremental update), with the same rules as
// ClusterLoader. A Service is refused: it decides no verdict, so it is not a change. Reading only: validation happens where the change is applied. Fails with
// file, line and field path of the first problem, or when the text holds no object or more
// than one.
absl::StatusOr<Change> ParseChange(absl::string_view text, absl::string_view source_name);
// The same, for objects that may lack kind and apiVersion, as a client-go informer hands
// them out: `kind` ("Namespace", "Pod" or "NetworkPolicy"; empty = as ParseChange) is the
// kind of a document that has none. A document that names a kind keeps its own.
absl::StatusOr<Change> ParseChangeOfKind(absl::string_view text, absl::string_view source_name,
                                         absl::string_view kind);

// Decodes the Kubernetes protobuf wire form — "k8s\0" then a runtime.Unknown envelope, as
// client-go and the API server exchange it with application/vnd.kubernetes.protobuf — holding
// a Namespace, Pod, NetworkPolicy or Service (v1, networking.k8s.io/v1) or a List of them. Objects
// are not validated here (ClusterLoader::Add them, then Build). Errors name the input, the
// kind and the item index.
absl::StatusOr<ClusterObjects> DecodeKubernetesProtobuf(absl::string_view bytes,
                                                        absl::string_view source_name);

}  // namespace np

#endif  // NP_LOADER_H_
