// Pods from workloads: what each controller stamps out of its pod template (np/workloads.h).
#include "np/workloads.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace np {
namespace {

Diagnostic WorkloadDiagnostic(Diagnostic::Severity severity, const Workload& w,
                              std::string message) {
  Diagnostic d;
  d.severity = severity;
  d.kind = w.kind;
  d.object = w.Key();
  d.message = std::move(message);
  d.location = w.source.location;
  return d;
}

// True when `ref`, found on an object of namespace `ns`, points at `w` or at an object that
// `w`'s controller made and named after it (a Deployment's ReplicaSet NAME-HASH, a CronJob's
// Job NAME-TIME).
bool RefersTo(const k8s::OwnerReference& ref, const Workload& w) {
  if (ref.kind() == w.kind && ref.name() == w.name) return true;
  const std::string prefix = w.name + "-";
  if (w.kind == "Deployment" && ref.kind() == "ReplicaSet") {
    return absl::StartsWith(ref.name(), prefix);
  }
  if (w.kind == "CronJob" && ref.kind() == "Job") return absl::StartsWith(ref.name(), prefix);
  return false;
}

// The labels the controller adds to every pod it creates, where their values are known
// without the cluster (no hashes, no uids).
void AddControllerLabels(const Workload& w, const std::string& pod_name, int index,
                         k8s::ObjectMeta* meta) {
  auto& labels = *meta->mutable_labels();
  if (w.kind == "StatefulSet") {
    // StatefulSet controller: StatefulSetPodNameLabel and PodIndexLabel.
    labels["statefulset.kubernetes.io/pod-name"] = pod_name;
    labels["apps.kubernetes.io/pod-index"] = absl::StrCat(index);
  } else if (w.kind == "Job") {
    // Job controller: JobNameLabel, and the legacy job-name label it still sets.
    labels["batch.kubernetes.io/job-name"] = w.name;
    labels["job-name"] = w.name;
  }
}

// The address `offset` places after the network address of `cidr`, or nullopt past its end.
std::optional<IpAddress> AddressAt(const IpPrefix& cidr, uint64_t offset) {
  const IpAddress network = cidr.network();
  const int host_bits = network.bit_width() - cidr.length();
  if (host_bits < 64 && offset >= (uint64_t{1} << host_bits)) return std::nullopt;
  if (network.is_v4()) {
    // The last address of an IPv4 subnet is its broadcast address: never a pod's.
    if (host_bits >= 2 && offset == (uint64_t{1} << host_bits) - 1) return std::nullopt;
    return IpAddress::V4(network.v4() + static_cast<uint32_t>(offset));
  }
  const uint64_t lo = network.lo() + offset;
  return IpAddress::V6(network.hi() + (lo < network.lo() ? 1 : 0), lo);
}

}  // namespace

std::vector<IpPrefix> WorkloadOptions::DefaultPodCidrs() {
  // kind's and kubeadm's customary pod subnet, and a unique-local IPv6 one beside it.
  return {*IpPrefix::Parse("10.244.0.0/16"), *IpPrefix::Parse("fd00:10:244::/64")};
}

absl::StatusOr<std::vector<IpPrefix>> ParsePodCidrs(const std::vector<std::string>& texts) {
  std::vector<IpPrefix> cidrs;
  bool v4 = false, v6 = false;
  for (const std::string& text : texts) {
    absl::StatusOr<IpPrefix> cidr = IpPrefix::Parse(text);
    if (!cidr.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("pod CIDR \"", text,
                                                     "\" is not a CIDR: ", cidr.status().message()));
    }
    bool& seen = cidr->family() == AddressFamily::kIPv4 ? v4 : v6;
    if (seen) {
      return absl::InvalidArgumentError(
          absl::StrCat("more than one ", AddressFamilyName(cidr->family()),
                       " pod CIDR (a pod has one address per family)"));
    }
    seen = true;
    cidrs.push_back(*cidr);
  }
  return cidrs;
}

absl::Status SynthesizeWorkloadPods(const std::vector<Workload>& workloads,
                                    const WorkloadOptions& options, ClusterObjects* objects,
                                    std::vector<Diagnostic>* diagnostics) {
  // Synthesis follows (namespace, name, kind) order, so addresses do not depend on the order
  // of files or documents.
  std::vector<const Workload*> sorted;
  for (const Workload& w : workloads) sorted.push_back(&w);
  std::sort(sorted.begin(), sorted.end(), [](const Workload* a, const Workload* b) {
    return std::tie(a->namespace_name, a->name, a->kind) <
           std::tie(b->namespace_name, b->name, b->kind);
  });

  absl::flat_hash_set<IpAddress> taken;
  absl::flat_hash_set<std::string> pod_names;
  for (const auto& pod : objects->pods) {
    const k8s::ObjectMeta& meta = pod.object.metadata();
    pod_names.insert(absl::StrCat(meta.namespace_().empty() ? "default" : meta.namespace_(),
                                  "/", meta.name()));
    std::vector<std::string> texts;
    for (const auto& ip : pod.object.status().podips()) texts.push_back(ip.ip());
    texts.push_back(pod.object.status().podip());
    for (const std::string& text : texts) {
      if (absl::StatusOr<IpAddress> a = IpAddress::Parse(text, true); a.ok()) taken.insert(*a);
    }
  }
  std::vector<uint64_t> next_offset(options.pod_cidrs.size(), 1);

  absl::Status result;
  for (const Workload* w : sorted) {
    // Already made by a controller in the input (a Deployment's ReplicaSet, a CronJob's Job):
    // the owner stands for it.
    bool owned_by_input = false;
    for (const Workload& other : workloads) {
      if (other.namespace_name != w->namespace_name || &other == w) continue;
      for (const auto& ref : w->owner_references) {
        if (ref.controller() && ref.kind() == other.kind && ref.name() == other.name) {
          owned_by_input = true;
        }
      }
    }
    if (owned_by_input) continue;
    int live = 0;
    for (const auto& pod : objects->pods) {
      const k8s::ObjectMeta& meta = pod.object.metadata();
      if ((meta.namespace_().empty() ? "default" : meta.namespace_()) != w->namespace_name) {
        continue;
      }
      for (const auto& ref : meta.ownerreferences()) {
        if (RefersTo(ref, *w)) {
          ++live;
          break;
        }
      }
    }
    if (live > 0) {
      diagnostics->push_back(WorkloadDiagnostic(
          Diagnostic::Severity::kWarning, *w,
          absl::StrCat("not synthesized: ", live, " live pod", live == 1 ? "" : "s",
                       " of the input ", live == 1 ? "belongs" : "belong", " to it")));
      continue;
    }
    const int count = options.expand_replicas ? std::max(w->replicas, 0) : 1;
    for (int index = 0; index < count; ++index) {
      Sourced<k8s::Pod> pod{w->pod_template, w->source};
      k8s::ObjectMeta* meta = pod.object.mutable_metadata();
      const std::string name = absl::StrCat(w->name, "-", index);
      meta->set_name(name);
      meta->set_namespace_(w->namespace_name);
      meta->clear_generatename();
      meta->clear_ownerreferences();
      AddControllerLabels(*w, name, index, meta);
      (*meta->mutable_annotations())[std::string(kSynthesizedFromAnnotation)] =
          absl::StrCat(w->kind, " ", w->Key());
      if (!pod_names.insert(absl::StrCat(w->namespace_name, "/", name)).second) {
        diagnostics->push_back(WorkloadDiagnostic(
            Diagnostic::Severity::kError, *w,
            absl::StrCat("cannot synthesize pod ", w->namespace_name, "/", name,
                         ": a pod of that name is already in the input")));
        result = absl::InvalidArgumentError("synthesized pod names collide");
        continue;
      }
      pod.object.clear_status();
      pod.object.mutable_status()->set_phase("Running");
      // A hostNetwork pod has the node's address, not one from the pod CIDR (and Cluster
      // leaves it out of pod networking, as it does live ones).
      for (size_t c = 0; c < options.pod_cidrs.size() && !pod.object.spec().hostnetwork();
           ++c) {
        std::optional<IpAddress> address;
        while ((address = AddressAt(options.pod_cidrs[c], next_offset[c])) &&
               taken.contains(*address)) {
          ++next_offset[c];
        }
        if (!address) {
          diagnostics->push_back(WorkloadDiagnostic(
              Diagnostic::Severity::kError, *w,
              absl::StrCat("pod CIDR ", options.pod_cidrs[c].ToString(),
                           " has no free address left for ", w->namespace_name, "/", name)));
          result = absl::ResourceExhaustedError("pod CIDR exhausted");
          break;
        }
        ++next_offset[c];
        taken.insert(*address);
        pod.object.mutable_status()->add_podips()->set_ip(address->ToString());
      }
      objects->pods.push_back(std::move(pod));
    }
  }
  return result;
}

}  // namespace np
