// Reads Namespaces, Pods and NetworkPolicies from YAML/JSON the way Kubernetes does:
// go-yaml v2 turns YAML into JSON (YAML 1.1 scalars), then strict JSON decoding into the Go
// types (unknown and duplicate fields are errors; types must match: a number is not a
// string). np/internal/yaml_tree.h does the YAML part; this file knows the objects.
#include "np/loader.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "np/internal/object_decoder.h"
#include "np/internal/text.h"
#include "np/internal/yaml_tree.h"
#include "np/tiers/decode.h"
#include "np/workloads.h"

namespace np {
namespace {

using internal::Child;
using internal::DecodeLabelSelector;
using internal::DecodeMetadata;
using internal::Element;
using internal::Find;
using internal::IsMergeKey;
using internal::ObjectDecoder;
using internal::StringOrEmpty;
using internal::TypeMessage;
using internal::ResolvedScalar;
using internal::YamlDocument;
using internal::YamlNode;

constexpr absl::string_view kCoreV1 = "v1";
constexpr absl::string_view kNetworkingV1 = "networking.k8s.io/v1";
// How deeply List documents may nest (kubectl prints one level).
constexpr int kMaxListDepth = 4;
// Errors quoted in a returned Status; all of them are in diagnostics().
constexpr size_t kMaxErrorsInStatus = 20;

// entries), for a Status message. Once the list is full they are only counted.
std::string Summary(const std::vector<Diagnostic>& diagnostics, size_t size_before,
                    int64_t errors_before) {
  std::vector<Diagnostic> recent;
  for (size_t i = size_before; i < diagnostics.size(); ++i) {
    if (!diagnostics[i].is_omission()) AppendDiagnostic(&recent, diagnostics[i]);
  }
  const int64_t left_out = CountErrors(diagnostics) - errors_before - CountErrors(recent);
  std::string summary = ErrorSummary(recent, kMaxErrorsInStatus);
  if (left_out > 0) {
    absl::StrAppend(&summary, summary.empty() ? "" : "\n", left_out, " error",
                    left_out == 1 ? "" : "s", " not kept: the list of diagnostics is full");
  }
  return summary;
}


// --- The objects' schemas. Strict: NetworkPolicy (unknown fields are errors). Lenient: Pod
// and Namespace (only the fields in k8s.proto are read; the rest is ignored).

void DecodePeer(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                k8s::NetworkPolicyPeer* peer) {
  d.Fields(node, path, /*strict=*/true, [&](const std::string& name, const YamlNode& v,
                                            const std::string& field, int line) {
    if (name == "podSelector") {
      if (d.IsMapping(v, field, line)) {
        DecodeLabelSelector(d, v, field, peer->mutable_podselector());
      }
    } else if (name == "namespaceSelector") {
      if (d.IsMapping(v, field, line)) {
        DecodeLabelSelector(d, v, field, peer->mutable_namespaceselector());
      }
    } else if (name == "ipBlock") {
      if (!d.IsMapping(v, field, line)) return true;
      k8s::IPBlock* block = peer->mutable_ipblock();
      d.Fields(v, field, /*strict=*/true,
               [&](const std::string& n, const YamlNode& bv, const std::string& f, int l) {
                 std::string s;
                 if (n == "cidr") {
                   if (d.String(bv, f, l, &s)) block->set_cidr(s);
                 } else if (n == "except") {
                   d.StringList(bv, f, l, block->mutable_except());
                 } else {
                   return false;
                 }
                 return true;
               });
    } else {
      return false;
    }
    return true;
  });
}

void DecodePort(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                k8s::NetworkPolicyPort* port) {
  d.Fields(node, path, /*strict=*/true, [&](const std::string& name, const YamlNode& v,
                                            const std::string& field, int line) {
    std::string s;
    int32_t n = 0;
    if (name == "protocol") {
      if (d.String(v, field, line, &s)) port->set_protocol(s);
    } else if (name == "port") {
      k8s::IntOrString value;
      if (d.IntOrString(v, field, line, &value)) *port->mutable_port() = value;
    } else if (name == "endPort") {
      if (d.Int32(v, field, line, &n)) port->set_endport(n);
    } else {
      return false;
    }
    return true;
  });
}

// An ingress or egress rule: `peers_field` is "from" or "to".
template <typename Rule>
void DecodeRule(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                absl::string_view peers_field,
                google::protobuf::RepeatedPtrField<k8s::NetworkPolicyPeer>* peers, Rule* rule) {
  d.Fields(node, path, /*strict=*/true, [&](const std::string& name, const YamlNode& v,
                                            const std::string& field, int line) {
    if (name == "ports") {
      if (!d.IsSequence(v, field, line)) return true;
      d.Items(v, field, [&](const YamlNode& item, const std::string& item_path, int item_line) {
        k8s::NetworkPolicyPort* port = rule->add_ports();
        if (d.IsMapping(item, item_path, item_line)) DecodePort(d, item, item_path, port);
      });
    } else if (name == peers_field) {
      if (!d.IsSequence(v, field, line)) return true;
      d.Items(v, field, [&](const YamlNode& item, const std::string& item_path, int item_line) {
        k8s::NetworkPolicyPeer* peer = peers->Add();
        if (d.IsMapping(item, item_path, item_line)) DecodePeer(d, item, item_path, peer);
      });
    } else {
      return false;
    }
    return true;
  });
}

void DecodeNetworkPolicy(ObjectDecoder& d, const YamlNode& node, k8s::NetworkPolicy* policy) {
  d.Fields(node, "", /*strict=*/true, [&](const std::string& name, const YamlNode& v,
                                          const std::string& field, int line) {
    if (name == "apiVersion" || name == "kind" || name == "status") return true;
    if (name == "metadata") {
      if (d.IsMapping(v, field, line)) {
        DecodeMetadata(d, v, field, /*strict=*/true, policy->mutable_metadata());
      }
      return true;
    }
    if (name != "spec") return false;
    if (!d.IsMapping(v, field, line)) return true;
    k8s::NetworkPolicySpec* spec = policy->mutable_spec();
    d.Fields(v, field, /*strict=*/true, [&](const std::string& n, const YamlNode& sv,
                                            const std::string& f, int l) {
      if (n == "podSelector") {
        if (d.IsMapping(sv, f, l)) DecodeLabelSelector(d, sv, f, spec->mutable_podselector());
      } else if (n == "policyTypes") {
        d.StringList(sv, f, l, spec->mutable_policytypes());
      } else if (n == "ingress") {
        if (!d.IsSequence(sv, f, l)) return true;
        d.Items(sv, f, [&](const YamlNode& item, const std::string& item_path, int item_line) {
          k8s::NetworkPolicyIngressRule* rule = spec->add_ingress();
          if (d.IsMapping(item, item_path, item_line)) {
            DecodeRule(d, item, item_path, "from", rule->mutable_from(), rule);
          }
        });
      } else if (n == "egress") {
        if (!d.IsSequence(sv, f, l)) return true;
        d.Items(sv, f, [&](const YamlNode& item, const std::string& item_path, int item_line) {
          k8s::NetworkPolicyEgressRule* rule = spec->add_egress();
          if (d.IsMapping(item, item_path, item_line)) {
            DecodeRule(d, item, item_path, "to", rule->mutable_to(), rule);
          }
        });
      } else {
        return false;
      }
      return true;
    });
    return true;
  });
}

void DecodeContainer(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                     k8s::Container* container) {
  d.Fields(node, path, /*strict=*/false, [&](const std::string& name, const YamlNode& v,
                                             const std::string& field, int line) {
    std::string s;
    if (name == "name") {
      if (d.String(v, field, line, &s)) container->set_name(s);
    } else if (name == "image") {
      if (d.String(v, field, line, &s)) container->set_image(s);
    } else if (name == "ports") {
      if (!d.IsSequence(v, field, line)) return true;
      d.Items(v, field, [&](const YamlNode& item, const std::string& item_path, int item_line) {
        k8s::ContainerPort* port = container->add_ports();
        if (!d.IsMapping(item, item_path, item_line)) return;
        d.Fields(item, item_path, /*strict=*/false,
                 [&](const std::string& n, const YamlNode& pv, const std::string& f, int l) {
                   std::string text;
                   int32_t number = 0;
                   if (n == "name") {
                     if (d.String(pv, f, l, &text)) port->set_name(text);
                   } else if (n == "protocol") {
                     if (d.String(pv, f, l, &text)) port->set_protocol(text);
                   } else if (n == "hostIP") {
                     if (d.String(pv, f, l, &text)) port->set_hostip(text);
                   } else if (n == "containerPort") {
                     if (d.Int32(pv, f, l, &number)) port->set_containerport(number);
                   } else if (n == "hostPort") {
                     if (d.Int32(pv, f, l, &number)) port->set_hostport(number);
                   } else {
                     return false;
                   }
                   return true;
                 });
      });
    } else {
      return false;
    }
    return true;
  });
}

void DecodePod(ObjectDecoder& d, const YamlNode& node, k8s::Pod* pod,
               const std::string& path = "") {
  d.Fields(node, path, /*strict=*/false, [&](const std::string& name, const YamlNode& v,
                                           const std::string& field, int line) {
    if (name == "apiVersion" || name == "kind") return true;
    if (name == "metadata") {
      if (d.IsMapping(v, field, line)) {
        DecodeMetadata(d, v, field, /*strict=*/false, pod->mutable_metadata());
      }
      return true;
    }
    if (name == "spec") {
      if (!d.IsMapping(v, field, line)) return true;
      k8s::PodSpec* spec = pod->mutable_spec();
      d.Fields(v, field, /*strict=*/false, [&](const std::string& n, const YamlNode& sv,
                                               const std::string& f, int l) {
        std::string s;
        bool b = false;
        if (n == "nodeName") {
          if (d.String(sv, f, l, &s)) spec->set_nodename(s);
        } else if (n == "hostNetwork") {
          if (d.Bool(sv, f, l, &b)) spec->set_hostnetwork(b);
        } else if (n == "containers") {
          if (!d.IsSequence(sv, f, l)) return true;
          d.Items(sv, f, [&](const YamlNode& item, const std::string& item_path, int item_line) {
            k8s::Container* container = spec->add_containers();
            if (d.IsMapping(item, item_path, item_line)) {
              DecodeContainer(d, item, item_path, container);
            }
          });
        } else {
          return false;
        }
        return true;
      });
      return true;
    }
    if (name == "status") {
      if (!d.IsMapping(v, field, line)) return true;
      k8s::PodStatus* status = pod->mutable_status();
      d.Fields(v, field, /*strict=*/false, [&](const std::string& n, const YamlNode& sv,
                                               const std::string& f, int l) {
        std::string s;
        if (n == "phase") {
          if (d.String(sv, f, l, &s)) status->set_phase(s);
        } else if (n == "podIP") {
          if (d.String(sv, f, l, &s)) status->set_podip(s);
        } else if (n == "hostIP") {
          if (d.String(sv, f, l, &s)) status->set_hostip(s);
        } else if (n == "podIPs") {
          if (!d.IsSequence(sv, f, l)) return true;
          d.Items(sv, f, [&](const YamlNode& item, const std::string& item_path, int item_line) {
            k8s::PodIP* ip = status->add_podips();
            if (!d.IsMapping(item, item_path, item_line)) return;
            d.Fields(item, item_path, /*strict=*/false,
                     [&](const std::string& in, const YamlNode& iv, const std::string& ifield,
                         int il) {
                       std::string text;
                       if (in != "ip") return false;
                       if (d.String(iv, ifield, il, &text)) ip->set_ip(text);
                       return true;
                     });
          });
        } else {
          return false;
        }
        return true;
      });
      return true;
    }
    return false;
  });
}

void DecodeNamespace(ObjectDecoder& d, const YamlNode& node, k8s::Namespace* ns) {
  d.Fields(node, "", /*strict=*/false, [&](const std::string& name, const YamlNode& v,
                                           const std::string& field, int line) {
    if (name == "apiVersion" || name == "kind") return true;
    if (name != "metadata") return false;
    if (d.IsMapping(v, field, line)) {
      DecodeMetadata(d, v, field, /*strict=*/false, ns->mutable_metadata());
    }
    return true;
  });
}

// A workload (np/workloads.h): its metadata, spec.replicas and the pod template (a CronJob's
// under spec.jobTemplate.spec.template). Lenient, like Pod: other fields are ignored.
void DecodeWorkload(ObjectDecoder& d, const YamlNode& node, Workload* workload) {
  auto template_of = [&](const YamlNode& spec, const std::string& spec_path, auto& self,
                         bool job_template) -> void {
    d.Fields(spec, spec_path, /*strict=*/false, [&](const std::string& n, const YamlNode& v,
                                                    const std::string& f, int l) {
      int32_t replicas = 0;
      if (n == "replicas" && !job_template) {
        if (d.Int32(v, f, l, &replicas)) workload->replicas = replicas;
      } else if (n == "template" && !job_template) {
        if (d.IsMapping(v, f, l)) DecodePod(d, v, &workload->pod_template, f);
      } else if (n == "jobTemplate" && job_template) {
        if (!d.IsMapping(v, f, l)) return true;
        d.Fields(v, f, /*strict=*/false, [&](const std::string& jn, const YamlNode& jv,
                                             const std::string& jf, int jl) {
          if (jn != "spec") return false;
          if (d.IsMapping(jv, jf, jl)) self(jv, jf, self, false);
          return true;
        });
      } else {
        return false;
      }
      return true;
    });
  };
  d.Fields(node, "", /*strict=*/false, [&](const std::string& name, const YamlNode& v,
                                           const std::string& field, int line) {
    if (name == "apiVersion" || name == "kind") return true;
    if (name == "metadata") {
      k8s::ObjectMeta meta;
      if (d.IsMapping(v, field, line)) DecodeMetadata(d, v, field, /*strict=*/false, &meta);
      workload->name = meta.name();
      workload->namespace_name = meta.namespace_().empty() ? "default" : meta.namespace_();
      workload->owner_references.assign(meta.ownerreferences().begin(),
                                        meta.ownerreferences().end());
      return true;
    }
    if (name != "spec") return false;
    if (d.IsMapping(v, field, line)) {
      template_of(v, field, template_of, workload->kind == "CronJob");
    }
    return true;
  });
  if (workload->name.empty()) d.Error(d.source.location.line, "metadata.name", "Required value");
}

// The envelope of a lenient object: apiVersion and kind (checked by the caller), metadata, and
// spec, each of whose fields goes to `spec_field(name, value, path, line)`; other fields are
// ignored.
template <typename F>
void DecodeLenientObject(ObjectDecoder& d, const YamlNode& node, k8s::ObjectMeta* meta,
                         F&& spec_field) {
  d.Fields(node, "", /*strict=*/false, [&](const std::string& name, const YamlNode& v,
                                           const std::string& field, int line) {
    if (name == "apiVersion" || name == "kind") return true;
    if (name == "metadata") {
      if (d.IsMapping(v, field, line)) DecodeMetadata(d, v, field, /*strict=*/false, meta);
      return true;
    }
    if (name != "spec") return false;
    if (d.IsMapping(v, field, line)) d.Fields(v, field, /*strict=*/false, spec_field);
    return true;
  });
}

// A v1 Service (np/services.h): metadata, spec.selector, spec.ports, spec.type and the cluster
// IPs. Lenient, like Pod: other fields are ignored.
void DecodeServicePort(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                       k8s::ServicePort* port) {
  d.Fields(node, path, /*strict=*/false, [&](const std::string& name, const YamlNode& v,
                                             const std::string& field, int line) {
    std::string text;
    int32_t number = 0;
    k8s::IntOrString target;
    if (name == "name") {
      if (d.String(v, field, line, &text)) port->set_name(text);
    } else if (name == "protocol") {
      if (d.String(v, field, line, &text)) port->set_protocol(text);
    } else if (name == "port") {
      if (d.Int32(v, field, line, &number)) port->set_port(number);
    } else if (name == "targetPort") {
      if (d.IntOrString(v, field, line, &target)) *port->mutable_targetport() = target;
    } else {
      return false;
    }
    return true;
  });
}

void DecodeService(ObjectDecoder& d, const YamlNode& node, k8s::Service* service) {
  k8s::ServiceSpec* spec = service->mutable_spec();
  auto spec_field = [&](const std::string& name, const YamlNode& v, const std::string& field,
                        int line) {
    std::string text;
    if (name == "selector") {
      d.StringMap(v, field, line, spec->mutable_selector());
    } else if (name == "type") {
      if (d.String(v, field, line, &text)) spec->set_type(text);
    } else if (name == "clusterIP") {
      if (d.String(v, field, line, &text)) spec->set_clusterip(text);
    } else if (name == "clusterIPs") {
      d.StringList(v, field, line, spec->mutable_clusterips());
    } else if (name == "ports") {
      if (!d.IsSequence(v, field, line)) return true;
      d.Items(v, field, [&](const YamlNode& item, const std::string& item_path, int item_line) {
        k8s::ServicePort* port = spec->add_ports();
        if (d.IsMapping(item, item_path, item_line)) DecodeServicePort(d, item, item_path, port);
      });
    } else {
      return false;
    }
    return true;
  };
  DecodeLenientObject(d, node, service->mutable_metadata(), spec_field);
}

struct KnownKind {
  absl::string_view kind;
  absl::string_view api_version;
  bool namespaced;
};
constexpr KnownKind kKnownKinds[] = {
    {"Namespace", kCoreV1, false},
    {"Pod", kCoreV1, true},
    {"NetworkPolicy", kNetworkingV1, true},
    {"Service", kCoreV1, true},  // a query convenience (np/services.h)
    // Workloads (np/workloads.h), read when the caller collects them.
    {"Deployment", "apps/v1", true},
    {"ReplicaSet", "apps/v1", true},
    {"StatefulSet", "apps/v1", true},
    {"DaemonSet", "apps/v1", true},
    {"Job", "batch/v1", true},
    {"CronJob", "batch/v1", true},
    {"ReplicationController", kCoreV1, true},
    // The policy tiers (np/tiers/decode.h) and the Nodes their `nodes` peers select.
    {"AdminNetworkPolicy", tiers::kPolicyV1Alpha1, false},
    {"BaselineAdminNetworkPolicy", tiers::kPolicyV1Alpha1, false},
    {"ClusterNetworkPolicy", tiers::kPolicyV1Alpha2, false},
    {"Node", kCoreV1, false},
};

bool IsWorkloadKind(absl::string_view kind) {
  for (const WorkloadKind& k : kWorkloadKinds) {
    if (k.kind == kind) return true;
  }
  return false;
}

// Reads the documents of one input into objects, skipped kinds and diagnostics.
class Reader {
 public:
  Reader(std::string file, ClusterObjects* objects, std::map<std::string, int>* skipped,
         std::vector<Diagnostic>* diagnostics, internal::AliasBudget* budget)
      : file_(std::move(file)),
        objects_(objects),
        skipped_(skipped),
        out_(diagnostics),
        budget_(budget) {}
  // Where workloads go; without it they are skipped kinds.
  void CollectWorkloads(std::vector<Workload>* workloads) { workloads_ = workloads; }

  void Text(absl::string_view text) {
    internal::YamlError error;
    bool ok = internal::ParseYamlDocuments(
        text, [this](YamlDocument&& doc) { Document(doc); }, budget_, &error);
    if (!ok) Error(error.line, "", "", "", error.message);
  }

 private:
  void Error(int line, std::string kind, std::string object, std::string field,
             std::string message, Diagnostic::Severity severity = Diagnostic::Severity::kError) {
    Diagnostic d;
    d.severity = severity;
    d.kind = std::move(kind);
    d.object = std::move(object);
    d.field = std::move(field);
    d.message = std::move(message);
    d.location = {file_, line};
    AppendDiagnostic(out_, std::move(d));
  }

  void Document(const YamlDocument& doc) {
    if (!doc.error.empty()) {
      Error(doc.error_line, "", "", "", doc.error);
      return;
    }
    const YamlNode& root = doc.root;
    if (root.is_null()) return;  // an empty document
    if (!root.is_mapping()) {
      if (root.is_scalar() &&
          internal::ResolveScalar(root).type == ResolvedScalar::Type::kNull) {
        return;  // "null" or "~"
      }
      Error(root.line, "", "", "",
            absl::StrCat("a document must be an object with apiVersion and kind, got ",
                         internal::DescribeYamlType(root)));
      return;
    }
    Object(root, default_kind_, default_api_, 0);
  }

 public:
  // Documents without kind/apiVersion are read as this kind (what an informer hands out).
  void SetDefaultKind(absl::string_view kind, absl::string_view api_version) {
    default_kind_ = std::string(kind);
    default_api_ = std::string(api_version);
  }

 private:
  std::string default_kind_, default_api_;

  // One object, or a List of them. `default_kind`/`default_api` come from a typed list
  // (NetworkPolicyList) whose items may omit kind and apiVersion, as the API returns them.
  void Object(const YamlNode& node, const std::string& default_kind,
              const std::string& default_api, int list_depth) {
    // Identify the object for messages, before anything else can fail.
    const YamlNode* metadata = Find(node, "metadata");
    std::string name, namespace_name;
    if (metadata != nullptr) {
      name = StringOrEmpty(Find(*metadata, "name"));
      namespace_name = StringOrEmpty(Find(*metadata, "namespace"));
    }

    int kind_count = 0, kind_duplicate_line = 0;
    const YamlNode* kind_node = Find(node, "kind", &kind_count, &kind_duplicate_line);
    std::string kind = default_kind;
    if (kind_count > 1) {
      Error(kind_duplicate_line, "", name, "kind", "duplicate field \"kind\"");
      return;
    }
    if (kind_node != nullptr && !kind_node->is_null()) {
      ResolvedScalar r = internal::ResolveScalar(*kind_node);
      if (r.type == ResolvedScalar::Type::kString) {
        kind = r.string_value;
      } else if (r.type != ResolvedScalar::Type::kNull) {
        Error(kind_node->line, "", name, "kind", TypeMessage("a string", *kind_node));
        return;
      }
    }
    if (kind.empty()) {
      Error(node.line, "", name, "kind",
            "Object 'Kind' is missing: every object needs apiVersion and kind");
      return;
    }
    int api_count = 0, api_duplicate_line = 0;
    const YamlNode* api_node = Find(node, "apiVersion", &api_count, &api_duplicate_line);
    std::string api_version = default_api;
    if (api_node != nullptr && !api_node->is_null()) {
      ResolvedScalar r = internal::ResolveScalar(*api_node);
      if (r.type == ResolvedScalar::Type::kString) {
        api_version = r.string_value;
      } else if (r.type != ResolvedScalar::Type::kNull) {
        Error(api_node->line, kind, name, "apiVersion", TypeMessage("a string", *api_node));
        return;
      }
    }

    // Lists: kind List (kubectl's), or FooList with items (the API's typed lists).
    const YamlNode* items = Find(node, "items");
    if (kind == "List" || (absl::EndsWith(kind, "List") && items != nullptr)) {
      List(node, kind, api_version, items, list_depth);
      return;
    }

    const KnownKind* known = nullptr;
    for (const KnownKind& k : kKnownKinds) {
      if (k.kind == kind) known = &k;
    }
    if (known != nullptr && workloads_ == nullptr && IsWorkloadKind(kind)) known = nullptr;
    if (known == nullptr) {
      ++(*skipped_)[kind];
      for (const KnownKind& k : kKnownKinds) {
        if (absl::EqualsIgnoreCase(k.kind, kind)) {
          Error(kind_node != nullptr ? kind_node->line : node.line, kind, name, "kind",
                absl::StrCat("kind ", internal::GoQuote(kind), " is not read (kinds are case-sensitive); did you "
                             "mean ", k.kind, "?"),
                Diagnostic::Severity::kWarning);
        }
      }
      return;
    }
    std::string object = name;
    if (known->namespaced && !name.empty()) {
      object = absl::StrCat(namespace_name.empty() ? "default" : namespace_name, "/", name);
    }
    if (api_count > 1) {
      Error(api_duplicate_line, kind, object, "apiVersion", "duplicate field \"apiVersion\"");
      return;
    }
    if (api_version != known->api_version) {
      Error(api_node != nullptr ? api_node->line : node.line, kind, object, "apiVersion",
            api_version.empty()
                ? absl::StrCat("apiVersion is missing; ", kind, " is read as ",
                               known->api_version)
                : absl::StrCat("apiVersion ", internal::GoQuote(api_version), " is not supported for ", kind,
                               "; use ", known->api_version));
      return;
    }

    ObjectDecoder d(file_, kind, object, out_);
    d.source.location.line = node.line;
    // Only lines LineOf would not give (it falls back to the object's line): a one-line
    // watch event then records none, and its decoder skips a map lookup per field
    // (ObjectDecoder::RecordLine).
    if (kind_node != nullptr && kind_node->line != node.line) {
      d.source.field_lines["kind"] = kind_node->line;
    }
    if (api_node != nullptr && api_node->line != node.line) {
      d.source.field_lines["apiVersion"] = api_node->line;
    }
    if (IsWorkloadKind(kind)) {
      Workload workload;
      workload.kind = kind;
      DecodeWorkload(d, node, &workload);
      workload.source = std::move(d.source);
      if (d.ok()) workloads_->push_back(std::move(workload));
    } else if (kind == "NetworkPolicy") {
      k8s::NetworkPolicy policy;
      DecodeNetworkPolicy(d, node, &policy);
      if (d.ok()) objects_->policies.push_back({std::move(policy), std::move(d.source)});
    } else if (kind == "Service") {
      k8s::Service service;
      DecodeService(d, node, &service);
      if (d.ok()) objects_->services.push_back({std::move(service), std::move(d.source)});
    } else if (kind == "AdminNetworkPolicy") {
      Keep(d, &tiers::DecodeAdminNetworkPolicy, node, &objects_->admin_network_policies);
    } else if (kind == "BaselineAdminNetworkPolicy") {
      Keep(d, &tiers::DecodeBaselineAdminNetworkPolicy, node,
           &objects_->baseline_admin_network_policies);
    } else if (kind == "ClusterNetworkPolicy") {
      Keep(d, &tiers::DecodeClusterNetworkPolicy, node, &objects_->cluster_network_policies);
    } else if (kind == "Node") {
      Keep(d, &tiers::DecodeNode, node, &objects_->nodes);
    } else if (kind == "Pod") {
      k8s::Pod pod;
      DecodePod(d, node, &pod);
      if (d.ok()) objects_->pods.push_back({std::move(pod), std::move(d.source)});
    } else {
      k8s::Namespace ns;
      DecodeNamespace(d, node, &ns);
      if (d.ok()) objects_->namespaces.push_back({std::move(ns), std::move(d.source)});
    }
  }

  // Decodes one object with `decode` and keeps it when it has no error.
  template <typename T>
  static void Keep(ObjectDecoder& d, void (*decode)(ObjectDecoder&, const YamlNode&, T*),
                   const YamlNode& node, std::vector<Sourced<T>>* out) {
    T object;
    decode(d, node, &object);
    if (d.ok()) out->push_back({std::move(object), std::move(d.source)});
  }

  void List(const YamlNode& node, const std::string& kind, const std::string& api_version,
            const YamlNode* items, int list_depth) {
    if (list_depth >= kMaxListDepth) {
      Error(node.line, kind, "", "", "lists nested too deeply");
      return;
    }
    if (items == nullptr || items->is_null()) return;
    if (!items->is_sequence()) {
      if (items->is_scalar() &&
          internal::ResolveScalar(*items).type == ResolvedScalar::Type::kNull) {
        return;
      }
      Error(items->line, kind, "", "items", TypeMessage("a list", *items));
      return;
    }
    // Items of a typed list may leave out kind and apiVersion.
    std::string item_kind, item_api;
    if (kind != "List") {
      item_kind = kind.substr(0, kind.size() - 4);
      item_api = api_version;
    }
    for (size_t i = 0; i < items->children().size(); ++i) {
      const YamlNode& item = items->children()[i];
      if (item.is_mapping()) {
        Object(item, item_kind, item_api, list_depth + 1);
      } else if (!(item.is_null() || (item.is_scalar() && internal::ResolveScalar(item).type ==
                                                             ResolvedScalar::Type::kNull))) {
        Error(item.line, kind, "", Element("items", i), TypeMessage("an object", item));
      }
    }
  }

  SharedString file_;  // shared by the diagnostics and objects of this input
  ClusterObjects* objects_;
  std::map<std::string, int>* skipped_;
  std::vector<Diagnostic>* out_;
  std::vector<Workload>* workloads_ = nullptr;
  internal::AliasBudget* budget_;
};

// Reads a whole file (or stdin for "-") into `text`.
absl::Status ReadFile(const std::string& path, std::string* text) {
  FILE* f = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat(DisplayText(path), ": cannot open"));
  }
  // Room for the whole file at once: appending would double the buffer as it grows.
  struct stat info;
  if (fstat(fileno(f), &info) == 0 && S_ISREG(info.st_mode) &&
      static_cast<size_t>(info.st_size) <= internal::kMaxYamlTextSize) {
    text->reserve(static_cast<size_t>(info.st_size));
  }
  char buffer[1 << 16];
  size_t n;
  bool too_big = false;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) {
    if (text->size() + n > internal::kMaxYamlTextSize) {
      too_big = true;
      break;
    }
    text->append(buffer, n);
  }
  const bool failed = std::ferror(f) != 0;
  const int error = errno;
  if (f != stdin) std::fclose(f);
  if (too_big) {
    return absl::ResourceExhaustedError(
        absl::StrCat(DisplayText(path), ": larger than ", internal::kMaxYamlTextSize, " bytes"));
  }
  if (failed) return absl::ErrnoToStatus(error, absl::StrCat(DisplayText(path), ": cannot read"));
  return absl::OkStatus();
}

// The extensions kubectl reads in a directory (it compares them case-sensitively).
bool IsInputExtension(absl::string_view ext) {
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

// What a walk of one -f directory found: the files to read, in order, and the findings about
// what it skipped.
struct DirectoryWalk {
  std::vector<std::string> files;
  std::vector<Diagnostic> findings;
  std::vector<std::string> other_extensions;  // skipped silently by kubectl: only counted
};

void Skipped(DirectoryWalk* walk, const std::string& path, Diagnostic::Severity severity,
             std::string why) {
  Diagnostic d;
  d.severity = severity;
  d.location.file = path;
  d.message = std::move(why);
  AppendDiagnostic(&walk->findings, std::move(d));
}

// Walks `dir` as kubectl -R does (filepath.Walk): names sorted within each directory,
// symbolic links to directories not followed, files read by their own name's extension.
// Unlike kubectl, it says what it skips and goes on after a problem.
void Walk(const std::string& dir, int depth, DirectoryWalk* walk) {
  namespace fs = std::filesystem;
  using Severity = Diagnostic::Severity;
  std::error_code ec;
  std::vector<fs::path> entries;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    entries.push_back(it->path());
  }
  if (ec) {
    Skipped(walk, dir, Severity::kError, absl::StrCat("cannot list the directory: ", ec.message()));
    return;
  }
  std::sort(entries.begin(), entries.end());
  for (const fs::path& entry : entries) {
    const std::string path = entry.string();
    const std::string ext = entry.extension().string();
    const bool read_ext = IsInputExtension(ext);
    std::error_code entry_ec;
    const fs::file_status own = fs::symlink_status(entry, entry_ec);
    if (fs::is_directory(own)) {
      if (depth >= 64) {  // only a hostile tree is this deep; the path grows with each level
        Skipped(walk, path, Severity::kError, "directories nested more than 64 levels deep");
        continue;
      }
      Walk(path, depth + 1, walk);
      continue;
    }
    fs::file_status target = own;
    if (fs::is_symlink(own)) {
      std::error_code target_ec;
      target = fs::status(entry, target_ec);
      std::string broken;
      if (target_ec.value() == ELOOP) {
        broken = "a symbolic link loop";
      } else if (target_ec.value() == ENOENT || target_ec.value() == ENOTDIR) {
        broken = "a dangling symbolic link (its target does not exist)";
      } else if (target_ec) {
        broken = absl::StrCat("a symbolic link that cannot be followed: ", target_ec.message());
      }
      if (!broken.empty()) {
        // kubectl fails on it when the name has an extension it reads.
        Skipped(walk, path, read_ext ? Severity::kError : Severity::kWarning,
                absl::StrCat("skipped: ", broken));
        continue;
      }
      if (fs::is_directory(target)) {
        Skipped(walk, path, Severity::kWarning,
                "skipped: a symbolic link to a directory (not followed, as kubectl does not)");
        continue;
      }
    }
    if (!read_ext) {
      std::string lower = ext;
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (IsInputExtension(lower)) {
        Skipped(walk, path, Severity::kWarning,
                absl::StrCat("skipped: kubectl reads only the lowercase extensions .yaml, .yml "
                             "and .json, so it skips this file too; rename it to end in ",
                             lower));
      } else {
        walk->other_extensions.push_back(entry.filename().string());
      }
      continue;
    }
    if (!fs::is_regular_file(target)) {
      Skipped(walk, path, Severity::kWarning, "skipped: not a regular file");
      continue;
    }
    walk->files.push_back(path);
  }
}

}  // namespace

absl::Status ClusterLoader::AddPath(absl::string_view path) {
  try {
    return AddPathOrThrow(path);
  } catch (const std::bad_alloc&) {
    return OutOfMemory(path);
  }
}

absl::Status ClusterLoader::AddPathOrThrow(absl::string_view path) {
  namespace fs = std::filesystem;
  const std::string name(path);
  auto read_error = [&](const absl::Status& status) {
    Diagnostic d;
    d.message = std::string(status.message());
    d.location.file = name;
    AppendDiagnostic(&diagnostics_, std::move(d));
    return status;
  };
  if (name.empty()) return read_error(absl::InvalidArgumentError("an empty path"));

  const size_t size_before = diagnostics_.size();
  const int64_t errors_before = CountErrors(diagnostics_);
  std::vector<std::string> files;
  bool walked = false;  // files found in a directory, rather than named by the caller
  if (name == "-") {
    files.push_back(name);
  } else {
    std::error_code ec;
    const fs::file_status status = fs::status(name, ec);
    if (ec || !fs::exists(status)) {
      return read_error(absl::NotFoundError(absl::StrCat(
          DisplayText(name), ": ", ec ? ec.message() : "no such file or directory")));
    }
    if (fs::is_directory(status)) {
      walked = true;
      DirectoryWalk walk;
      Walk(name, 0, &walk);
      for (Diagnostic& d : walk.findings) AppendDiagnostic(&diagnostics_, std::move(d));
      if (!walk.other_extensions.empty()) {
        std::vector<std::string> examples;
        for (size_t i = 0; i < walk.other_extensions.size() && i < 3; ++i) {
          examples.push_back(DisplayText(walk.other_extensions[i]));
        }
        Diagnostic d;
        d.severity = Diagnostic::Severity::kWarning;
        d.location.file = name;
        const size_t n = walk.other_extensions.size();
        d.message = absl::StrCat("skipped ", n, n == 1 ? " file" : " files",
                                 " whose name does not end in .yaml, .yml or .json (",
                                 absl::StrJoin(examples, ", "), n > 3 ? ", ..." : "", ")");
        AppendDiagnostic(&diagnostics_, std::move(d));
      }
      files = std::move(walk.files);
    } else {
      files.push_back(name);
    }
  }

  absl::Status result;
  for (const std::string& file : files) {
    std::string text;
    absl::Status status = ReadFile(file, &text);
    if (!status.ok()) {
      read_error(status).IgnoreError();
      if (result.ok()) result = status;
      continue;
    }
    const size_t before = diagnostics_.size();
    const size_t objects_before = objects_.namespaces.size() + objects_.pods.size() +
                                  objects_.policies.size() + workloads_.size();
    AddTextOrThrow(text, file);
    if (walked) SkipIfNotKubernetes(before, objects_before, file);
  }
  if (!result.ok()) return result;
  if (CountErrors(diagnostics_) > errors_before) {
    return absl::InvalidArgumentError(Summary(diagnostics_, size_before, errors_before));
  }
  return absl::OkStatus();
}

// A file found in a directory whose every document failed for not being a Kubernetes object
// (a stray JSON array of test output, a values file without kind) is someone else's file, not
// a broken manifest: its errors become one warning, and the rest of the tree still loads.
void ClusterLoader::SkipIfNotKubernetes(size_t first_diagnostic, size_t objects_before,
                                        const std::string& file) {
  const size_t objects_now = objects_.namespaces.size() + objects_.pods.size() +
                             objects_.policies.size() + workloads_.size();
  if (objects_now != objects_before || diagnostics_.size() == first_diagnostic) return;
  for (size_t i = first_diagnostic; i < diagnostics_.size(); ++i) {
    const Diagnostic& d = diagnostics_[i];
    const bool not_an_object =
        d.is_error() && d.kind.empty() &&
        (absl::StartsWith(d.message, "a document must be an object") ||
         absl::StartsWith(d.message, "Object 'Kind' is missing"));
    if (!not_an_object) return;
  }
  Diagnostic warning;
  warning.severity = Diagnostic::Severity::kWarning;
  warning.message = "skipped: not a Kubernetes object (no apiVersion and kind)";
  warning.location = {file, diagnostics_[first_diagnostic].location.line};
  diagnostics_.resize(first_diagnostic);
  diagnostics_.push_back(std::move(warning));
  ++skipped_kinds_["(not Kubernetes)"];
}

absl::Status ClusterLoader::AddText(absl::string_view text, absl::string_view source_name) {
  const size_t size_before = diagnostics_.size();
  const int64_t errors_before = CountErrors(diagnostics_);
  try {
    AddTextOrThrow(text, source_name);
  } catch (const std::bad_alloc&) {
    return OutOfMemory(source_name);
  }
  if (CountErrors(diagnostics_) > errors_before) {
    return absl::InvalidArgumentError(Summary(diagnostics_, size_before, errors_before));
  }
  return absl::OkStatus();
}

void ClusterLoader::AddTextOrThrow(absl::string_view text, absl::string_view source_name) {
  // One budget for everything this loader reads: many small files must not each get one.
  internal::AliasBudget budget{alias_nodes_, alias_bytes_};
  Reader reader(std::string(source_name), &objects_, &skipped_kinds_, &diagnostics_, &budget);
  reader.CollectWorkloads(&workloads_);
  reader.Text(text);
  alias_nodes_ = budget.nodes;
  alias_bytes_ = budget.bytes;
}

absl::Status ClusterLoader::OutOfMemory(absl::string_view source_name) {
  absl::Status status = absl::ResourceExhaustedError(absl::StrCat(
      DisplayText(source_name), ": reading it needs more memory than is available"));
  Diagnostic d;
  d.location.file = std::string(source_name);
  d.message = std::string(status.message());
  AppendDiagnostic(&diagnostics_, std::move(d));
  return status;
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
void ClusterLoader::Add(k8s::Service service, ObjectSource source) {
  objects_.services.push_back({std::move(service), std::move(source)});
}

absl::Status ClusterLoader::AddNamespaceLabels(absl::string_view namespace_name,
                                               const std::map<std::string, std::string>& labels,
                                               absl::string_view origin) {
  ClusterNamespace& ns = cluster_namespaces_[std::string(namespace_name)];
  if (ns.origin.empty()) ns.origin = std::string(origin);
  for (const auto& [key, value] : labels) {
    auto [it, inserted] = ns.labels.emplace(key, value);
    if (inserted || it->second == value) continue;
    Diagnostic d;
    d.kind = "Namespace";
    d.object = std::string(namespace_name);
    d.field = absl::StrCat("metadata.labels[", key, "]");
    d.message = absl::StrCat("given twice, as \"", it->second, "\" and as \"", value, "\"");
    d.location.file = std::string(origin);
    const std::string text = d.ToString();
    AppendDiagnostic(&diagnostics_, std::move(d));
    return absl::InvalidArgumentError(text);
  }
  return absl::OkStatus();
}

absl::StatusOr<Cluster> ClusterLoader::Build(std::vector<Diagnostic>* diagnostics) const& {
  return BuildFrom(objects_, diagnostics);
}

absl::StatusOr<Cluster> ClusterLoader::Build(std::vector<Diagnostic>* diagnostics) && {
  return BuildFrom(std::move(objects_), diagnostics);
}

absl::StatusOr<Cluster> ClusterLoader::BuildFrom(ClusterObjects objects,
                                                 std::vector<Diagnostic>* diagnostics) const {
  std::vector<Diagnostic> synthesized, found;
  // Namespaces that live only in the cluster: the input must not define them as well.
  for (const auto& [name, ns] : cluster_namespaces_) {
    const Sourced<k8s::Namespace>* defined = nullptr;
    for (const auto& n : objects.namespaces) {
      if (n.object.metadata().name() == name) defined = &n;
    }
    if (defined != nullptr) {
      Diagnostic d;
      d.kind = "Namespace";
      d.object = name;
      d.location.file = ns.origin;
      const SourceLocation& where = defined->source.location;
      d.message = absl::StrCat(
          "labels given here, but the input defines this namespace too",
          where.file.empty() ? "" : absl::StrCat(" (", DisplayText(where.file),
                                                 where.line > 0 ? absl::StrCat(":", where.line)
                                                                : "",
                                                 ")"),
          ": give its labels in one place");
      synthesized.push_back(std::move(d));
      continue;
    }
    Sourced<k8s::Namespace> added;
    added.object.mutable_metadata()->set_name(name);
    for (const auto& [k, v] : ns.labels) (*added.object.mutable_metadata()->mutable_labels())[k] = v;
    added.source.location.file = ns.origin;
    objects.namespaces.push_back(std::move(added));
  }
  if (cluster_pods_.empty()) {
    (void)SynthesizeWorkloadPods(workloads_, workload_options_, &objects, &synthesized);
  } else {
    std::vector<Workload> workloads = workloads_;
    workloads.insert(workloads.end(), cluster_pods_.begin(), cluster_pods_.end());
    (void)SynthesizeWorkloadPods(workloads, workload_options_, &objects, &synthesized);
  }
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects), &found);
  if (CountErrors(synthesized) > 0 && cluster.ok()) {
    cluster = absl::InvalidArgumentError(ErrorSummary(synthesized, kMaxErrorsInStatus));
  }
  std::vector<Diagnostic> all = diagnostics_;
  for (Diagnostic& d : synthesized) AppendDiagnostic(&all, std::move(d));
  for (Diagnostic& d : found) AppendDiagnostic(&all, std::move(d));
  if (CountErrors(diagnostics_) > 0) {
    std::string summary = ErrorSummary(all, kMaxErrorsInStatus);
    if (diagnostics != nullptr) *diagnostics = std::move(all);
    return absl::InvalidArgumentError(summary);
  }
  if (diagnostics != nullptr) *diagnostics = std::move(all);
  return cluster;
}

namespace {
// The kinds a Change holds, for messages.
constexpr absl::string_view kChangeKinds =
    "Namespace, Pod, NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy, "
    "ClusterNetworkPolicy or Node";
}  // namespace

absl::StatusOr<Change> ParseChange(absl::string_view text, absl::string_view source_name) {
  return ParseChangeOfKind(text, source_name, "");
}

absl::StatusOr<Change> ParseChangeOfKind(absl::string_view text, absl::string_view source_name,
                                         absl::string_view kind) {
  ClusterObjects objects;
  std::map<std::string, int> skipped;
  std::vector<Diagnostic> diagnostics;
  internal::AliasBudget budget;
  Reader reader(std::string(source_name), &objects, &skipped, &diagnostics, &budget);
  if (!kind.empty()) {
    const KnownKind* known = nullptr;
    for (const KnownKind& k : kKnownKinds) {
      if (k.kind == kind) known = &k;
    }
    if (known == nullptr || known->kind == "Service") {
      return absl::InvalidArgumentError(
          absl::StrCat(DisplayText(source_name), ": kind \"", DisplayText(kind),
                       "\" is not one np reads as a change (", kChangeKinds, ")"));
    }
    reader.SetDefaultKind(known->kind, known->api_version);
  }
  try {
    reader.Text(text);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        DisplayText(source_name), ": reading it needs more memory than is available"));
  }
  for (const Diagnostic& d : diagnostics) {
    if (d.is_error()) return absl::InvalidArgumentError(d.ToString());
  }
  if (!objects.services.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        DisplayText(source_name), ": a Service cannot be a change (changes are to ", kChangeKinds,
        " objects; Services decide no verdict: load them with ClusterLoader)"));
  }
  const size_t count = objects.namespaces.size() + objects.pods.size() + objects.policies.size() +
                       objects.admin_network_policies.size() +
                       objects.baseline_admin_network_policies.size() +
                       objects.cluster_network_policies.size() + objects.nodes.size();
  if (count != 1) {
    std::string what = absl::StrCat(count, " of them");
    if (!skipped.empty()) {
      int objects = 0;
      for (const auto& entry : skipped) objects += entry.second;
      // One kind is named; any number of them is counted.
      absl::StrAppend(&what, " (and ", objects, " ",
                      skipped.size() == 1
                          ? DisplayText(skipped.begin()->first)
                          : absl::StrCat("objects of ", skipped.size(), " kinds"),
                      ", which np does not read)");
    }
    return absl::InvalidArgumentError(absl::StrCat(
        DisplayText(source_name), ": expected exactly one ", kChangeKinds, " object, found ",
        what));
  }
  Change change;
  change.op = Change::Op::kUpsert;
  if (!objects.namespaces.empty()) {
    change.object = std::move(objects.namespaces[0].object);
  } else if (!objects.pods.empty()) {
    change.object = std::move(objects.pods[0].object);
  } else if (!objects.policies.empty()) {
    change.object = std::move(objects.policies[0].object);
  } else if (!objects.admin_network_policies.empty()) {
    change.object = std::move(objects.admin_network_policies[0].object);
  } else if (!objects.baseline_admin_network_policies.empty()) {
    change.object = std::move(objects.baseline_admin_network_policies[0].object);
  } else if (!objects.cluster_network_policies.empty()) {
    change.object = std::move(objects.cluster_network_policies[0].object);
  } else {
    change.object = std::move(objects.nodes[0].object);
  }
  return change;
}

}  // namespace np
