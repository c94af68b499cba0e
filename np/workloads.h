// np/workloads.h — turns workloads (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job,
// CronJob, ReplicationController) into the pods their controllers would create, so that
// manifests as teams keep them in git — with no Pod objects at all — can be evaluated.
//
//   np::ClusterLoader loader;
//   np::WorkloadOptions options;                      // defaults: 10.244.0.0/16, fd00:10:244::/64
//   options.expand_replicas = true;                   // one pod per replica, not one in all
//   loader.SetWorkloadOptions(options);
//   loader.AddPath("manifests/");                     // Deployments, Services, policies, ...
//   absl::StatusOr<np::Cluster> cluster = loader.Build();
//   cluster->FindPod("shop/api");                     // the first pod of Deployment shop/api
//
// A synthesized pod has the pod template's labels plus the labels the controller adds that a
// policy could select (StatefulSet: statefulset.kubernetes.io/pod-name and
// apps.kubernetes.io/pod-index; Job: batch.kubernetes.io/job-name and job-name), the
// workload's namespace, the template's container ports (named ones included) and
// hostNetwork. Labels whose values are hashes or uids np cannot know (pod-template-hash,
// controller-revision-hash, controller-uid) are not invented. Pods are named
// WORKLOAD-INDEX (as a StatefulSet names them; "api-0" for Deployment shop/api) and carry
// the annotation kSynthesizedFromAnnotation ("Deployment shop/api"), which Cluster exposes
// as PodInfo::synthesized_from.
//
// Addresses: every synthesized pod gets one address from each configured pod CIDR, in
// (namespace, workload, index) order, skipping addresses that live pods hold, so they never
// collide (which would quarantine both) and are the same on every run for the same input.
//
// A workload is not synthesized when a live Pod of the input is controlled by it (its
// ownerReferences name the workload, or — for Deployments and CronJobs — a ReplicaSet or
// Job that the workload made, named WORKLOAD-SUFFIX): its real pods are already there.
//
// Thread safety: plain values and a pure function.
#ifndef NP_WORKLOADS_H_
#define NP_WORKLOADS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/k8s.pb.h"
#include "np/cluster.h"
#include "np/types.h"

namespace np {

// The annotation that marks a synthesized pod: "KIND NAMESPACE/NAME" of its workload.
inline constexpr absl::string_view kSynthesizedFromAnnotation = "np.netpol/synthesized-from";

struct WorkloadOptions {
  // One address per CIDR per pod (at most one CIDR per family). Empty: no addresses (pods are
  // then matched by selectors only, never by ipBlocks).
  std::vector<IpPrefix> pod_cidrs = DefaultPodCidrs();
  // One pod per replica (spec.replicas, default 1; a DaemonSet or CronJob has one) instead
  // of one representative pod per workload. Every replica has the same labels and ports, so
  // only ipBlocks can tell them apart.
  bool expand_replicas = false;

  static std::vector<IpPrefix> DefaultPodCidrs();
};

// A workload as read from the input: what the controller would stamp out.
struct Workload {
  std::string kind;            // "Deployment", "StatefulSet", ...
  std::string namespace_name;  // "default" when the object had none
  std::string name;
  int replicas = 1;            // spec.replicas, or 1
  k8s::Pod pod_template;       // spec.template (CronJob: spec.jobTemplate.spec.template)
  // metadata.ownerReferences: a ReplicaSet owned by a Deployment of the input is that
  // Deployment's, and gets no pods of its own.
  std::vector<k8s::OwnerReference> owner_references;
  ObjectSource source;
  std::string Key() const { return namespace_name + "/" + name; }
};

// The workload kinds that are read, with their apiVersion.
struct WorkloadKind {
  absl::string_view kind;
  absl::string_view api_version;
};
inline constexpr WorkloadKind kWorkloadKinds[] = {
    {"Deployment", "apps/v1"}, {"ReplicaSet", "apps/v1"}, {"StatefulSet", "apps/v1"},
    {"DaemonSet", "apps/v1"},  {"Job", "batch/v1"},       {"CronJob", "batch/v1"},
    {"ReplicationController", "v1"},
};

// Pod CIDRs as a flag or argument gives them: each text a CIDR, at most one per family.
// Errors name the bad text.
absl::StatusOr<std::vector<IpPrefix>> ParsePodCidrs(const std::vector<std::string>& texts);

// A pod that lives only in the cluster (a DNS server for egress policies to reach), in the
// --cluster-pod form "NAMESPACE/NAME[:LABELS[:PORTS]]": LABELS "KEY=VALUE,..." and PORTS
// "[PORTNAME=]PORT[/PROTOCOL],..." (protocol TCP by default), e.g.
// "kube-system/coredns:k8s-app=kube-dns:dns=53/UDP,dns-tcp=53/TCP". It is returned as a
// one-replica workload of kind `origin` (a word without spaces, "--cluster-pod"), so that its
// pod is made, addressed and marked as a workload's. Errors quote the text; labels, names
// and port names are validated at Build, as a Pod's are.
absl::StatusOr<Workload> ParseClusterPod(absl::string_view text, absl::string_view origin);

// Appends the pods of `workloads` to `objects->pods` (see above). A warning per workload
// whose pods are already live; an error when the CIDRs run out of addresses or a synthesized
// name is taken by a live pod.
absl::Status SynthesizeWorkloadPods(const std::vector<Workload>& workloads,
                                    const WorkloadOptions& options, ClusterObjects* objects,
                                    std::vector<Diagnostic>* diagnostics);

}  // namespace np

#endif  // NP_WORKLOADS_H_
