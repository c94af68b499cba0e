// np/loader.h — reads Kubernetes objects from YAML and JSON, the way kubectl prints and
// accepts them, into a Cluster.
//
//   np::ClusterLoader loader;
//   if (absl::Status s = loader.AddPath("dump.yaml"); !s.ok()) { ... }   // file or directory
//   std::vector<np::Diagnostic> diagnostics;
//   absl::StatusOr<np::Cluster> cluster = loader.Build(&diagnostics);
//
// Input: multi-document YAML or JSON; each document a single object or a `kind: List`
// (what `kubectl get -o yaml` prints), or any `*List` kind with `items`. Kinds other than
// Namespace, Pod and NetworkPolicy are skipped and counted. Every error names the file and
// line, the object (kind, namespace/name) and the field path. Malformed input never crashes.
//
// Thread safety: a ClusterLoader is not thread-safe; use one per thread.
#ifndef NP_LOADER_H_
#define NP_LOADER_H_

#include <map>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "np/cluster.h"

namespace np {

class ClusterLoader {
 public:
  // A file, or every *.yaml, *.yml and *.json file below a directory (recursively, in
  // sorted order). "-" reads standard input.
  absl::Status AddPath(absl::string_view path);
  // YAML or JSON text; `source_name` is used as the file name in diagnostics.
  absl::Status AddText(absl::string_view text, absl::string_view source_name);
  // Objects that are already decoded.
  void Add(k8s::Namespace ns, ObjectSource source = {});
  void Add(k8s::Pod pod, ObjectSource source = {});
  void Add(k8s::NetworkPolicy policy, ObjectSource source = {});

  const ClusterObjects& objects() const { return objects_; }
  // Kind -> how many objects of it were skipped.
  const std::map<std::string, int>& skipped_kinds() const { return skipped_kinds_; }
  // Problems found while reading (malformed documents, wrong field types, unknown fields).
  const std::vector<Diagnostic>& diagnostics() const { return diagnostics_; }

  // Validates and indexes what was read. Fails if reading or validation found any error;
  // `diagnostics` receives all of them (reading and validation), errors and warnings.
  absl::StatusOr<Cluster> Build(std::vector<Diagnostic>* diagnostics = nullptr) const;

 private:
  ClusterObjects objects_;
  std::map<std::string, int> skipped_kinds_;
  std::vector<Diagnostic> diagnostics_;
};

// Decodes one Namespace, Pod or NetworkPolicy from YAML/JSON text as an upsert (for callers
// that hold a single object, e.g. an incremental update). Reading only: validation happens
// where the change is applied. Fails with file, line and field path of the first problem.
absl::StatusOr<Change> ParseChange(absl::string_view text, absl::string_view source_name);

}  // namespace np

#endif  // NP_LOADER_H_
