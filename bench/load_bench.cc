// Loading the standard 10k-pod cluster (bench/cluster_generator.h) from the Kubernetes
// protobuf wire form and from JSON (issue 12): each input is made once, then every iteration
// decodes it and builds a validated np::Cluster through the same ClusterLoader, so the two
// figures differ only by the decoding. Counters: bytes of the input, pods loaded.
// `bazel run -c opt //bench:load_bench`.
//
// np has no encoder of either form (it only reads them), so this file holds two small
// bench-only ones: JSON written by protobuf reflection (the k8s.proto field names are the
// JSON names; IntOrString is written as the bare number or string Kubernetes prints), and
// the protobuf List in the "k8s\0" runtime.Unknown envelope DecodeKubernetesProtobuf reads.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "bench/cluster_generator.h"
#include "benchmark/benchmark.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "np/cluster.h"
#include "np/loader.h"
#include "np/verdict.h"

namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

void AppendJson(const Message& message, std::string* out);

void AppendJsonScalar(const Message& message, const FieldDescriptor* field, int index,
                      std::string* out) {
  const Reflection& r = *message.GetReflection();
  const bool repeated = field->is_repeated();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      absl::StrAppend(out, np::JsonQuote(repeated ? r.GetRepeatedString(message, field, index)
                                                  : r.GetString(message, field)));
      return;
    case FieldDescriptor::CPPTYPE_BOOL:
      absl::StrAppend(out, (repeated ? r.GetRepeatedBool(message, field, index)
                                     : r.GetBool(message, field))
                               ? "true"
                               : "false");
      return;
    case FieldDescriptor::CPPTYPE_INT32:
      absl::StrAppend(out, repeated ? r.GetRepeatedInt32(message, field, index)
                                    : r.GetInt32(message, field));
      return;
    case FieldDescriptor::CPPTYPE_INT64:
      absl::StrAppend(out, repeated ? r.GetRepeatedInt64(message, field, index)
                                    : r.GetInt64(message, field));
      return;
    case FieldDescriptor::CPPTYPE_MESSAGE:
      AppendJson(repeated ? r.GetRepeatedMessage(message, field, index)
                          : r.GetMessage(message, field),
                 out);
      return;
    default:
      std::abort();  // the generated cluster uses no other field type
  }
}

// The fields of `message` as JSON members ("name":value,...), without braces.
void AppendJsonMembers(const Message& message, std::string* out) {
  const Reflection& r = *message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r.ListFields(message, &fields);
  for (size_t f = 0; f < fields.size(); ++f) {
    const FieldDescriptor* field = fields[f];
    absl::StrAppend(out, f ? "," : "", np::JsonQuote(field->name()), ":");
    if (field->is_map()) {
      out->push_back('{');
      for (int i = 0; i < r.FieldSize(message, field); ++i) {
        const Message& entry = r.GetRepeatedMessage(message, field, i);
        const Reflection& e = *entry.GetReflection();
        const auto& d = *entry.GetDescriptor();
        absl::StrAppend(out, i ? "," : "", np::JsonQuote(e.GetString(entry, d.map_key())), ":",
                        np::JsonQuote(e.GetString(entry, d.map_value())));
      }
      out->push_back('}');
    } else if (field->is_repeated()) {
      out->push_back('[');
      for (int i = 0; i < r.FieldSize(message, field); ++i) {
        if (i) out->push_back(',');
        AppendJsonScalar(message, field, i, out);
      }
      out->push_back(']');
    } else {
      AppendJsonScalar(message, field, 0, out);
    }
  }
}

void AppendJson(const Message& message, std::string* out) {
  const Reflection& r = *message.GetReflection();
  const auto& d = *message.GetDescriptor();
  if (d.name() == "IntOrString") {
    if (r.GetInt64(message, d.FindFieldByName("type")) == 0) {
      absl::StrAppend(out, r.GetInt32(message, d.FindFieldByName("intVal")));
    } else {
      absl::StrAppend(out, np::JsonQuote(r.GetString(message, d.FindFieldByName("strVal"))));
    }
    return;
  }
  out->push_back('{');
  AppendJsonMembers(message, out);
  out->push_back('}');
}

// Each object as a List item, with its apiVersion and kind.
template <typename T>
void AppendJsonItems(const std::vector<np::Sourced<T>>& objects, absl::string_view api_version,
                     absl::string_view kind, std::string* out) {
  for (const auto& object : objects) {
    if (out->back() != '[') out->push_back(',');
    absl::StrAppend(out, "{\"apiVersion\":\"", api_version, "\",\"kind\":\"", kind, "\",");
    AppendJsonMembers(object.object, out);
    if (out->back() == ',') out->pop_back();  // an object with no fields set
    out->push_back('}');
  }
}

// {"apiVersion":"v1","kind":"List","items":[...]}, as `kubectl get -o json` prints a List.
std::string JsonList(const np::ClusterObjects& objects) {
  std::string out = "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[";
  AppendJsonItems(objects.namespaces, "v1", "Namespace", &out);
  AppendJsonItems(objects.pods, "v1", "Pod", &out);
  AppendJsonItems(objects.policies, "networking.k8s.io/v1", "NetworkPolicy", &out);
  out += "]}";
  return out;
}

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>(value | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// A length-delimited field (wire type 2).
void AppendBytesField(int number, absl::string_view bytes, std::string* out) {
  AppendVarint(static_cast<uint64_t>(number) << 3 | 2, out);
  AppendVarint(bytes.size(), out);
  out->append(bytes.data(), bytes.size());
}

// "k8s\0" + runtime.Unknown{typeMeta{apiVersion, kind}, raw = the List (items are field 2)}.
template <typename T>
std::string ProtobufList(const std::vector<np::Sourced<T>>& objects,
                         absl::string_view api_version, absl::string_view kind) {
  std::string list;
  for (const auto& object : objects) AppendBytesField(2, object.object.SerializeAsString(), &list);
  std::string type_meta;
  AppendBytesField(1, api_version, &type_meta);
  AppendBytesField(2, absl::StrCat(kind, "List"), &type_meta);
  std::string envelope("k8s\0", 4);
  AppendBytesField(1, type_meta, &envelope);
  AppendBytesField(2, list, &envelope);
  return envelope;
}

struct Inputs {
  Inputs() {
    const np::ClusterObjects objects = np::bench::GenerateCluster(np::bench::SizeForPods(10000));
    pods = static_cast<int>(objects.pods.size());
    policies = static_cast<int>(objects.policies.size());
    json = JsonList(objects);
    protobuf = {ProtobufList(objects.namespaces, "v1", "Namespace"),
                ProtobufList(objects.pods, "v1", "Pod"),
                ProtobufList(objects.policies, "networking.k8s.io/v1", "NetworkPolicy")};
  }
  int pods = 0;
  int policies = 0;
  std::string json;
  std::vector<std::string> protobuf;  // one envelope per kind, as three List requests return
};

const Inputs& I() {
  static const Inputs* inputs = new Inputs;
  return *inputs;
}

// Aborts unless the loaded cluster has every generated pod and policy: a format that loses objects
// would load faster for the wrong reason.
void CheckLoaded(const absl::StatusOr<np::Cluster>& cluster) {
  if (!cluster.ok()) {
    std::fprintf(stderr, "%s\n", std::string(cluster.status().message()).c_str());
    std::abort();
  }
  if (cluster->pod_count() != I().pods || cluster->policy_count() != I().policies) std::abort();
}

void BM_LoadJson10k(benchmark::State& state) {
  const Inputs& in = I();
  for (auto _ : state) {
    np::ClusterLoader loader;
    if (!loader.AddText(in.json, "cluster.json").ok()) std::abort();
    absl::StatusOr<np::Cluster> cluster = std::move(loader).Build();
    CheckLoaded(cluster);
  }
  state.counters["bytes"] = static_cast<double>(in.json.size());
  state.counters["pods"] = in.pods;
}

void BM_LoadProtobuf10k(benchmark::State& state) {
  const Inputs& in = I();
  size_t bytes = 0;
  for (const std::string& p : in.protobuf) bytes += p.size();
  for (auto _ : state) {
    np::ClusterLoader loader;
    for (const std::string& envelope : in.protobuf) {
      absl::StatusOr<np::ClusterObjects> objects =
          np::DecodeKubernetesProtobuf(envelope, "cluster.pb");
      if (!objects.ok()) std::abort();
      for (auto& ns : objects->namespaces) loader.Add(std::move(ns.object));
      for (auto& pod : objects->pods) loader.Add(std::move(pod.object));
      for (auto& policy : objects->policies) loader.Add(std::move(policy.object));
    }
    absl::StatusOr<np::Cluster> cluster = std::move(loader).Build();
    CheckLoaded(cluster);
  }
  state.counters["bytes"] = static_cast<double>(bytes);
  state.counters["pods"] = in.pods;
}

BENCHMARK(BM_LoadJson10k)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LoadProtobuf10k)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
