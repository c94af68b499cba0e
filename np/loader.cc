// Placeholder until the YAML/JSON reader lands.
#include "np/loader.h"

namespace np {
absl::Status ClusterLoader::AddPath(absl::string_view) { return absl::UnimplementedError("loader"); }
absl::Status ClusterLoader::AddText(absl::string_view, absl::string_view) {
  return absl::UnimplementedError("loader");
}
void ClusterLoader::Add(k8s::Namespace ns, ObjectSource source) {
  objects_.namespaces.push_back({std::move(ns), std::move(source)});
}
void ClusterLoader::Add(k8s::Pod pod, ObjectSource source) {
  objects_.pods.push_back({std::move(pod), std::move(source)});
}
void ClusterLoader::Add(k8s::NetworkPolicy policy, ObjectSource source) {
  objects_.policies.push_back({std::move(policy), std::move(source)});
}
absl::StatusOr<Cluster> ClusterLoader::Build(std::vector<Diagnostic>* diagnostics) const {
  return Cluster::Create(objects_, diagnostics);
}
absl::StatusOr<Change> ParseChange(absl::string_view, absl::string_view) {
  return absl::UnimplementedError("loader");
}
}  // namespace np
