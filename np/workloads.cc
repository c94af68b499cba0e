// Pods from workloads: what each controller stamps out of its pod template (np/workloads.h).
#include "np/workloads.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "np/loader.h"

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

// "KEY=VALUE,KEY=VALUE" (empty: no labels) into `labels`. Keys and values are validated
// later, with the object they belong to, by the API server's rules.
absl::Status ParseLabelList(absl::string_view text, absl::string_view what,
                            std::map<std::string, std::string>* labels) {
  for (absl::string_view pair : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const size_t eq = pair.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": \"", DisplayText(pair), "\" is not KEY=VALUE"));
    }
    const std::string key(pair.substr(0, eq));
    const std::string value(pair.substr(eq + 1));
    auto [it, inserted] = labels->emplace(key, value);
    if (!inserted && it->second != value) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": label ", DisplayText(key),
                                                     " given twice, with different values"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::pair<std::string, std::map<std::string, std::string>>> ParseNamespaceLabels(
    absl::string_view text) {
  const size_t colon = text.find(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", DisplayText(text), "\" is not NAMESPACE:KEY=VALUE[,KEY=VALUE...]"));
  }
  std::pair<std::string, std::map<std::string, std::string>> out;
  out.first = std::string(text.substr(0, colon));
  if (absl::Status s = ParseLabelList(text.substr(colon + 1), out.first, &out.second); !s.ok()) {
    return s;
  }
  return out;
}

absl::StatusOr<Workload> ParseClusterPod(absl::string_view text, absl::string_view origin) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  const size_t slash = parts[0].find('/');
  if (parts.size() > 3 || slash == absl::string_view::npos || slash == 0 ||
      slash + 1 == parts[0].size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", DisplayText(text), "\" is not NAMESPACE/NAME[:LABELS[:PORTS]]"));
  }
  Workload w;
  w.kind = std::string(origin);
  w.namespace_name = std::string(parts[0].substr(0, slash));
  w.name = std::string(parts[0].substr(slash + 1));
  w.source.location.file = std::string(origin);
  k8s::ObjectMeta* meta = w.pod_template.mutable_metadata();
  std::map<std::string, std::string> labels;
  if (parts.size() > 1) {
    if (absl::Status s = ParseLabelList(parts[1], w.Key(), &labels); !s.ok()) return s;
  }
  for (const auto& [k, v] : labels) (*meta->mutable_labels())[k] = v;
  k8s::Container* container = w.pod_template.mutable_spec()->add_containers();
  container->set_name(w.name);
  if (parts.size() > 2) {
    for (absl::string_view port : absl::StrSplit(parts[2], ',', absl::SkipEmpty())) {
      k8s::ContainerPort* p = container->add_ports();
      absl::string_view number = port;
      if (const size_t eq = port.find('='); eq != absl::string_view::npos) {
        p->set_name(std::string(port.substr(0, eq)));
        number = port.substr(eq + 1);
      }
      if (const size_t slash = number.find('/'); slash != absl::string_view::npos) {
        p->set_protocol(std::string(number.substr(slash + 1)));
        number = number.substr(0, slash);
      }
      int value = 0;
      if (!absl::SimpleAtoi(number, &value) || value < 1 || value > 65535) {
        return absl::InvalidArgumentError(absl::StrCat(
            w.Key(), ": port \"", DisplayText(port),
            "\" is not [NAME=]PORT[/PROTOCOL] with PORT from 1 to 65535"));
      }
      p->set_containerport(value);
    }
  }
  return w;
}

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
