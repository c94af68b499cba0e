// The C ABI (np.h) over np's C++ API. Every entry point catches nothing because nothing
// below throws (the library returns absl::Status); what it must do is check every handle and
// argument before touching it, turn each Status into an np_code + message, and keep the
// verdict functions free of allocation (they only read the snapshot).
#include "bindings/c/np.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "np/agent/watch_event.h"
#include "np/backends/backend.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/loader.h"
#include "np/lower.h"
#include "np/verdict.h"

namespace {

// Distinct per handle type, so that passing an engine where a cluster is expected is caught.
constexpr uint64_t kClusterMagic = 0x6e70436c75737472;  // "npClustr"
constexpr uint64_t kEngineMagic = 0x6e70456e67696e65;   // "npEngine"
constexpr uint64_t kLiveMagic = 0x6e704c6976654567;     // "npLiveEg"
constexpr uint64_t kReaderMagic = 0x6e70526561646572;   // "npReader"
constexpr uint64_t kErrorMagic = 0x6e704572726f7221;    // "npError!"

}  // namespace

struct np_error {
  uint64_t magic = kErrorMagic;
  np_code code = NP_OK;
  std::string message;
};
struct np_cluster {
  uint64_t magic = kClusterMagic;
  np::Cluster cluster;
};
struct np_engine {
  uint64_t magic = kEngineMagic;
  std::shared_ptr<const np::Engine> engine;
};
struct np_live {
  uint64_t magic = kLiveMagic;
  explicit np_live(std::shared_ptr<const np::Engine> initial) : live(std::move(initial)) {}
  np::LiveEngine live;
  // Makes "is it held? then apply" one step for NP_APPLY_IGNORE_MISSING.
  std::mutex apply_mutex;
};
struct np_reader {
  uint64_t magic = kReaderMagic;
  explicit np_reader(np_live& l) : reader(l.live) {}
  np::LiveEngine::Reader reader;
};

namespace {

template <typename T>
bool Valid(const T* handle, uint64_t magic) {
  return handle != nullptr && handle->magic == magic;
}
template <typename T>
void Destroy(T* handle, uint64_t magic) {
  if (!Valid(handle, magic)) return;
  handle->magic = 0;  // a second free, or a use after free, then sees a bad handle
  delete handle;
}

np_code CodeOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return NP_OK;
    case absl::StatusCode::kInvalidArgument:
      return NP_INVALID_ARGUMENT;
    case absl::StatusCode::kNotFound:
      return NP_NOT_FOUND;
    case absl::StatusCode::kFailedPrecondition:
      return NP_FAILED_PRECONDITION;
    case absl::StatusCode::kOutOfRange:
      return NP_OUT_OF_RANGE;
    case absl::StatusCode::kUnimplemented:
      return NP_UNIMPLEMENTED;
    case absl::StatusCode::kResourceExhausted:
      return NP_RESOURCE_EXHAUSTED;
    default:
      return NP_INTERNAL;
  }
}

np_code Fail(np_error** error, np_code code, absl::string_view message) {
  if (error != nullptr) {
    np_error* e = new (std::nothrow) np_error;
    if (e != nullptr) {
      e->code = code;
      e->message = std::string(message);
    }
    *error = e;
  }
  return code;
}
np_code Fail(np_error** error, const absl::Status& status) {
  return Fail(error, CodeOf(status), status.message());
}
np_code BadHandle(np_error** error, absl::string_view what) {
  return Fail(error, NP_INVALID_HANDLE, absl::StrCat(what, ": NULL, freed or not a ", what));
}

bool ToProtocol(uint8_t number, np::Protocol* protocol) {
  switch (number) {
    case NP_TCP:
    case NP_UDP:
    case NP_SCTP:
      *protocol = static_cast<np::Protocol>(number);
      return true;
    default:
      return false;
  }
}

bool ToAddress(const np_address* a, np::IpAddress* out) {
  if (a == nullptr) return false;
  if (a->family == 4) {
    *out = np::IpAddress::V4(uint32_t{a->bytes[0]} << 24 | uint32_t{a->bytes[1]} << 16 |
                             uint32_t{a->bytes[2]} << 8 | a->bytes[3]);
    return true;
  }
  if (a->family == 6) {
    *out = np::IpAddress::V6Bytes(a->bytes);
    return true;
  }
  return false;
}

// Copies `text` into malloc'd memory the caller frees with np_free.
np_code Output(const std::string& text, char** data, size_t* size, np_error** error) {
  if (data == nullptr) return Fail(error, NP_INVALID_ARGUMENT, "output pointer is NULL");
  char* copy = static_cast<char*>(std::malloc(text.size() + 1));
  if (copy == nullptr) return Fail(error, NP_RESOURCE_EXHAUSTED, "out of memory");
  std::memcpy(copy, text.data(), text.size());
  copy[text.size()] = '\0';
  *data = copy;
  if (size != nullptr) *size = text.size();
  return NP_OK;
}

// The verdict functions, shared by snapshots and readers. Checks are branches on values
// already in cache; nothing allocates.
int PodVerdict(const np::Engine& engine, uint32_t source, uint32_t destination,
               uint8_t protocol, uint16_t port) {
  np::Protocol p;
  if (!ToProtocol(protocol, &p)) return -NP_INVALID_ARGUMENT;
  if (!engine.IsLivePod(source) || !engine.IsLivePod(destination)) return -NP_OUT_OF_RANGE;
  return engine.Allowed(source, destination, p, port) ? 1 : 0;
}

int PacketVerdict(const np::Engine& engine, const np_address* source,
                  const np_address* destination, uint8_t protocol, uint16_t port) {
  np::Protocol p;
  np::IpAddress s, d;
  if (!ToProtocol(protocol, &p) || !ToAddress(source, &s) || !ToAddress(destination, &d)) {
    return -NP_INVALID_ARGUMENT;
  }
  return engine.AllowedPacket(s, d, p, port) ? 1 : 0;
}

template <typename Query, typename Verdict>
np_code Batch(const Query* queries, size_t count, uint8_t* out, size_t* bad_index,
              Verdict verdict) {
  if (count == 0) return NP_OK;
  if (queries == nullptr || out == nullptr) return NP_INVALID_ARGUMENT;
  // Checked first, so that a bad query leaves `out` untouched as documented.
  for (size_t i = 0; i < count; ++i) {
    int v = verdict(queries[i]);
    if (v < 0) {
      if (bad_index != nullptr) *bad_index = i;
      return static_cast<np_code>(-v);
    }
  }
  for (size_t i = 0; i < count; ++i) out[i] = static_cast<uint8_t>(verdict(queries[i]));
  return NP_OK;
}

// Pod batches go to Engine::AllowedBatch, whose group prefetching needs the whole batch in
// its own PodQuery layout. A first pass only checks (protocol, two live-pod bounds checks) so
// that a bad query still leaves `out` untouched as np.h promises; the second converts a
// stack-sized chunk at a time (no allocation) and lets the engine answer it.
np_code PodBatch(const np::Engine& engine, const np_pod_query* queries, size_t count,
                 uint8_t* out, size_t* bad_index) {
  if (count == 0) return NP_OK;
  if (queries == nullptr || out == nullptr) return NP_INVALID_ARGUMENT;
  for (size_t i = 0; i < count; ++i) {
    const np_pod_query& q = queries[i];
    np::Protocol unused;
    np_code code = NP_OK;
    if (!ToProtocol(q.protocol, &unused)) {
      code = NP_INVALID_ARGUMENT;
    } else if (!engine.IsLivePod(q.source) || !engine.IsLivePod(q.destination)) {
      code = NP_OUT_OF_RANGE;
    }
    if (code != NP_OK) {
      if (bad_index != nullptr) *bad_index = i;
      return code;
    }
  }
  constexpr size_t kChunk = 256;  // 3 KiB of stack; many engine prefetch groups per chunk
  np::PodQuery chunk[kChunk];
  for (size_t base = 0; base < count; base += kChunk) {
    const size_t n = std::min(kChunk, count - base);
    for (size_t k = 0; k < n; ++k) {
      const np_pod_query& q = queries[base + k];
      chunk[k] = np::PodQuery{q.source, q.destination, static_cast<np::Protocol>(q.protocol),
                              q.port};
    }
    engine.AllowedBatch(absl::MakeConstSpan(chunk, n), absl::MakeSpan(out + base, n));
  }
  return NP_OK;
}

np_code FindPod(const np::Engine& engine, const char* key, uint32_t* id, np_error** error) {
  if (key == nullptr || id == nullptr) {
    return Fail(error, NP_INVALID_ARGUMENT, "pod key or id pointer is NULL");
  }
  std::optional<np::PodId> pod = engine.FindPod(key);
  if (!pod) return Fail(error, NP_NOT_FOUND, absl::StrCat("no live pod \"", key, "\""));
  *id = *pod;
  return NP_OK;
}

// "namespace/name" (or "name": namespace default), else an address: its pod, or external.
absl::StatusOr<np::Endpoint> ResolveEndpoint(const np::Engine& engine, const char* text,
                                             absl::string_view role) {
  if (text == nullptr) return absl::InvalidArgumentError(absl::StrCat(role, " is NULL"));
  absl::string_view view(text);
  if (absl::StatusOr<np::IpAddress> address = np::IpAddress::Parse(view); address.ok()) {
    std::optional<np::PodId> pod = engine.PodByIp(*address);
    return pod ? np::Endpoint::Pod(static_cast<int>(*pod)) : np::Endpoint::External(*address);
  }
  std::string key = absl::StrContains(view, '/') ? std::string(view)
                                                  : absl::StrCat("default/", view);
  std::optional<np::PodId> pod = engine.FindPod(key);
  if (!pod) {
    return absl::NotFoundError(
        absl::StrCat(role, ": \"", view, "\" is neither a live pod nor an IP address"));
  }
  return np::Endpoint::Pod(static_cast<int>(*pod));
}

void AppendStrings(std::string* json, const std::vector<std::string>& items) {
  json->push_back('[');
  for (size_t i = 0; i < items.size(); ++i) {
    absl::StrAppend(json, i ? "," : "", np::JsonQuote(items[i]));
  }
  json->push_back(']');
}

void AppendSide(std::string* json, const np::DirectionVerdict& side) {
  absl::StrAppend(json, "{\"applies\":", side.applies ? "true" : "false",
                  ",\"isolated\":", side.isolated ? "true" : "false",
                  ",\"allowed\":", side.allowed() ? "true" : "false",
                  ",\"isolating_policies\":");
  AppendStrings(json, side.isolating_policies);
  json->append(",\"allowing_rules\":[");
  for (size_t i = 0; i < side.allowing_rules.size(); ++i) {
    const np::RuleRef& r = side.allowing_rules[i];
    absl::StrAppend(json, i ? "," : "", "{\"policy\":", np::JsonQuote(r.policy),
                    ",\"direction\":", np::JsonQuote(np::DirectionName(r.direction)),
                    ",\"rule\":", r.rule, "}");
  }
  json->append("],\"shared_addresses\":");
  AppendStrings(json, side.shared_addresses);
  json->push_back('}');
}

std::string VerdictJson(const np::Verdict& v) {
  std::string json = absl::StrCat("{\"allowed\":", v.allowed ? "true" : "false",
                                  ",\"allowed_as_self\":", v.allowed_as_self ? "true" : "false",
                                  ",\"family\":", np::JsonQuote(np::AddressFamilyName(v.family)),
                                  ",\"egress\":");
  AppendSide(&json, v.egress);
  json.append(",\"ingress\":");
  AppendSide(&json, v.ingress);
  json.push_back('}');
  return json;
}

// Reads one np_change into a np::Change.
absl::StatusOr<np::Change> ToChange(const np_change& c, size_t index) {
  const std::string where = absl::StrCat("change[", index, "]");
  const absl::string_view kind = c.kind != nullptr ? c.kind : "";
  if (c.op == NP_CHANGE_UPSERT) {
    if (c.data == nullptr && c.size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": data is NULL"));
    }
    absl::string_view text(static_cast<const char*>(c.data), c.size);
    return np::ParseChangeOfKind(text, where, kind);
  }
  if (c.op != NP_CHANGE_DELETE) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": op ", c.op, " is neither NP_CHANGE_UPSERT nor NP_CHANGE_DELETE"));
  }
  if (c.name == nullptr || c.name[0] == '\0') {
    return absl::InvalidArgumentError(absl::StrCat(where, ": a delete needs a name"));
  }
  const std::string ns =
      c.namespace_name != nullptr && c.namespace_name[0] != '\0' ? c.namespace_name : "default";
  np::Change change;
  change.op = np::Change::Op::kDelete;
  // Namespaces, the policy tiers and Nodes are cluster-scoped: no namespace.
  auto fill = [&](auto object, bool namespaced) {
    object.mutable_metadata()->set_name(c.name);
    if (namespaced) object.mutable_metadata()->set_namespace_(ns);
    change.object = std::move(object);
  };
  if (kind == "Namespace") {
    fill(np::k8s::Namespace(), false);
  } else if (kind == "Pod") {
    fill(np::k8s::Pod(), true);
  } else if (kind == "NetworkPolicy") {
    fill(np::k8s::NetworkPolicy(), true);
  } else if (kind == "AdminNetworkPolicy") {
    fill(np::policy_networking::AdminNetworkPolicy(), false);
  } else if (kind == "BaselineAdminNetworkPolicy") {
    fill(np::policy_networking::BaselineAdminNetworkPolicy(), false);
  } else if (kind == "ClusterNetworkPolicy") {
    fill(np::policy_networking::ClusterNetworkPolicy(), false);
  } else if (kind == "Node") {
    fill(np::k8s::Node(), false);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": kind \"", kind,
        "\" is not Namespace, Pod, NetworkPolicy, AdminNetworkPolicy, "
        "BaselineAdminNetworkPolicy, ClusterNetworkPolicy or Node"));
  }
  return change;
}

// The batch without deletes of objects that are absent when the delete comes: absent from
// `current` and not upserted earlier in the batch, or deleted earlier in it.
std::vector<np::Change> DropMissingDeletes(const np::Engine& current,
                                           std::vector<np::Change>& batch) {
  auto key = [](const np::Change& change) {
    return std::visit(
        [](const auto& object) {
          return absl::StrCat(object.GetTypeName(), " ", object.metadata().namespace_().empty()
                                                             ? "default"
                                                             : object.metadata().namespace_(),
                              "/", object.metadata().name());
        },
        change.object);
  };
  absl::flat_hash_map<std::string, bool> held;  // key -> held at this point of the batch
  std::vector<np::Change> kept;
  kept.reserve(batch.size());
  for (np::Change& change : batch) {
    const std::string k = key(change);
    auto [it, inserted] = held.try_emplace(k, false);
    if (inserted) it->second = current.Holds(change);
    if (change.op == np::Change::Op::kDelete) {
      if (!it->second) continue;
      it->second = false;
    } else {
      it->second = true;
    }
    kept.push_back(std::move(change));
  }
  return kept;
}

np_code CheckFlags(uint32_t flags, np_error** error) {
  if ((flags & ~uint32_t{NP_APPLY_IGNORE_MISSING}) == 0) return NP_OK;
  return Fail(error, NP_INVALID_ARGUMENT, absl::StrCat("unknown flags ", flags));
}

np_code ApplyBatch(np_live& live, std::vector<np::Change> batch, uint32_t flags,
                   np_error** error) {
  std::lock_guard<std::mutex> lock(live.apply_mutex);
  if (flags & NP_APPLY_IGNORE_MISSING) batch = DropMissingDeletes(*live.live.Current(), batch);
  absl::Status status = live.live.Apply(batch);
  return status.ok() ? NP_OK : Fail(error, status);
}

}  // namespace

extern "C" {

uint32_t np_abi_version(void) { return NP_ABI_VERSION; }

np_code np_error_code(const np_error* error) {
  return Valid(error, kErrorMagic) ? error->code : NP_INVALID_HANDLE;
}
const char* np_error_message(const np_error* error) {
  return Valid(error, kErrorMagic) ? error->message.c_str() : "";
}
void np_error_free(np_error* error) { Destroy(error, kErrorMagic); }
void np_free(void* data) { std::free(data); }

np_code np_cluster_load(const void* data, size_t size, const char* source_name,
                        np_cluster** out, np_error** error) {
  return np_cluster_load_format(data, size, NP_FORMAT_TEXT, source_name, out, error);
}

np_code np_cluster_load_format(const void* data, size_t size, np_format format,
                               const char* source_name, np_cluster** out, np_error** error) {
  if (out == nullptr) return Fail(error, NP_INVALID_ARGUMENT, "output pointer is NULL");
  *out = nullptr;
  if (data == nullptr && size != 0) return Fail(error, NP_INVALID_ARGUMENT, "data is NULL");
  const absl::string_view name = source_name != nullptr ? source_name : "input";
  const absl::string_view bytes(static_cast<const char*>(data), size);
  np::ClusterLoader loader;
  switch (format) {
    case NP_FORMAT_TEXT:
      if (absl::Status s = loader.AddText(bytes, name); !s.ok()) return Fail(error, s);
      break;
    case NP_FORMAT_PROTOBUF: {
      absl::StatusOr<np::ClusterObjects> objects = np::DecodeKubernetesProtobuf(bytes, name);
      if (!objects.ok()) return Fail(error, objects.status());
      for (auto& ns : objects->namespaces) loader.Add(std::move(ns.object));
      for (auto& pod : objects->pods) loader.Add(std::move(pod.object));
      for (auto& policy : objects->policies) loader.Add(std::move(policy.object));
      break;
    }
    default:
      return Fail(error, NP_INVALID_ARGUMENT, absl::StrCat("unknown format ", format));
  }
  absl::StatusOr<np::Cluster> cluster = loader.Build();
  if (!cluster.ok()) return Fail(error, cluster.status());
  np_cluster* handle = new (std::nothrow) np_cluster{kClusterMagic, *std::move(cluster)};
  if (handle == nullptr) return Fail(error, NP_RESOURCE_EXHAUSTED, "out of memory");
  *out = handle;
  return NP_OK;
}

int64_t np_cluster_pod_count(const np_cluster* cluster) {
  return Valid(cluster, kClusterMagic) ? cluster->cluster.pod_count() : -NP_INVALID_HANDLE;
}
int64_t np_cluster_policy_count(const np_cluster* cluster) {
  return Valid(cluster, kClusterMagic) ? cluster->cluster.policy_count() : -NP_INVALID_HANDLE;
}
void np_cluster_free(np_cluster* cluster) { Destroy(cluster, kClusterMagic); }

np_code np_engine_build(const np_cluster* cluster, const np_engine_options* options,
                        np_engine** out, np_error** error) {
  if (out == nullptr) return Fail(error, NP_INVALID_ARGUMENT, "output pointer is NULL");
  *out = nullptr;
  if (!Valid(cluster, kClusterMagic)) return BadHandle(error, "np_cluster");
  np::EngineOptions engine_options;
  if (options != nullptr) {
    // Fields are read only as far as the caller's struct reaches (older callers pass less).
    if (options->struct_size < offsetof(np_engine_options, always_allow_self) + sizeof(int)) {
      return Fail(error, NP_INVALID_ARGUMENT,
                  "np_engine_options.struct_size: set it to sizeof(np_engine_options)");
    }
    if (options->node_name != nullptr) engine_options.node_name = options->node_name;
    if (options->ipblock_external_only) {
      engine_options.evaluation.ip_block_scope = np::EvaluationOptions::IpBlockScope::kExternalOnly;
    }
    engine_options.evaluation.always_allow_self = options->always_allow_self != 0;
  }
  absl::StatusOr<std::shared_ptr<const np::Engine>> engine =
      np::Engine::Build(cluster->cluster, engine_options);
  if (!engine.ok()) return Fail(error, engine.status());
  np_engine* handle = new (std::nothrow) np_engine{kEngineMagic, *std::move(engine)};
  if (handle == nullptr) return Fail(error, NP_RESOURCE_EXHAUSTED, "out of memory");
  *out = handle;
  return NP_OK;
}

void np_engine_free(np_engine* engine) { Destroy(engine, kEngineMagic); }

np_code np_engine_find_pod(const np_engine* engine, const char* key, uint32_t* id,
                           np_error** error) {
  if (!Valid(engine, kEngineMagic)) return BadHandle(error, "np_engine");
  return FindPod(*engine->engine, key, id, error);
}

np_code np_address_parse(const char* text, np_address* out, np_error** error) {
  if (text == nullptr || out == nullptr) {
    return Fail(error, NP_INVALID_ARGUMENT, "address text or output is NULL");
  }
  absl::StatusOr<np::IpAddress> address = np::IpAddress::Parse(text);
  if (!address.ok()) return Fail(error, address.status());
  std::memset(out, 0, sizeof(*out));
  out->family = address->is_v4() ? 4 : 6;
  address->ToBytes(out->bytes);
  return NP_OK;
}

int np_engine_allowed(const np_engine* engine, uint32_t source, uint32_t destination,
                      uint8_t protocol, uint16_t port) {
  if (!Valid(engine, kEngineMagic)) return -NP_INVALID_HANDLE;
  return PodVerdict(*engine->engine, source, destination, protocol, port);
}

int np_engine_allowed_packet(const np_engine* engine, const np_address* source,
                             const np_address* destination, uint8_t protocol, uint16_t port) {
  if (!Valid(engine, kEngineMagic)) return -NP_INVALID_HANDLE;
  return PacketVerdict(*engine->engine, source, destination, protocol, port);
}

int np_engine_allowed_keys(const np_engine* engine, const char* source,
                           const char* destination, uint8_t protocol, uint16_t port) {
  if (!Valid(engine, kEngineMagic)) return -NP_INVALID_HANDLE;
  if (source == nullptr || destination == nullptr) return -NP_INVALID_ARGUMENT;
  std::optional<np::PodId> s = engine->engine->FindPod(source);
  std::optional<np::PodId> d = engine->engine->FindPod(destination);
  if (!s || !d) return -NP_NOT_FOUND;
  return PodVerdict(*engine->engine, *s, *d, protocol, port);
}

np_code np_engine_allowed_batch(const np_engine* engine, const np_pod_query* queries,
                                size_t count, uint8_t* out, size_t* bad_index) {
  if (!Valid(engine, kEngineMagic)) return NP_INVALID_HANDLE;
  return PodBatch(*engine->engine, queries, count, out, bad_index);
}

np_code np_engine_allowed_packet_batch(const np_engine* engine,
                                       const np_packet_query* queries, size_t count,
                                       uint8_t* out, size_t* bad_index) {
  if (!Valid(engine, kEngineMagic)) return NP_INVALID_HANDLE;
  const np::Engine& e = *engine->engine;
  return Batch(queries, count, out, bad_index, [&](const np_packet_query& q) {
    return PacketVerdict(e, &q.source, &q.destination, q.protocol, q.port);
  });
}

np_code np_engine_explain(const np_engine* engine, const char* source,
                          const char* destination, uint8_t protocol, uint16_t port,
                          char** json, size_t* size, np_error** error) {
  if (!Valid(engine, kEngineMagic)) return BadHandle(error, "np_engine");
  np::Protocol p;
  if (!ToProtocol(protocol, &p)) {
    return Fail(error, NP_INVALID_ARGUMENT,
                absl::StrCat("protocol ", protocol, " is not TCP (6), UDP (17) or SCTP (132)"));
  }
  const np::Engine& e = *engine->engine;
  absl::StatusOr<np::Endpoint> s = ResolveEndpoint(e, source, "source");
  if (!s.ok()) return Fail(error, s.status());
  absl::StatusOr<np::Endpoint> d = ResolveEndpoint(e, destination, "destination");
  if (!d.ok()) return Fail(error, d.status());
  return Output(VerdictJson(e.Explain(*s, *d, p, port)), json, size, error);
}

np_code np_engine_lower(const np_engine* engine, void** bytes, size_t* size,
                        np_error** error) {
  if (!Valid(engine, kEngineMagic)) return BadHandle(error, "np_engine");
  absl::StatusOr<np::ir::CompiledPolicy> ir = np::LowerToIr(*engine->engine);
  if (!ir.ok()) return Fail(error, ir.status());
  std::string serialized;
  if (!ir->SerializeToString(&serialized)) {
    return Fail(error, NP_INTERNAL, "the IR could not be serialized");
  }
  char* text = nullptr;
  np_code code = Output(serialized, &text, size, error);
  if (code == NP_OK) *bytes = text;
  return code;
}

np_code np_render(const void* ir, size_t ir_size, const char* backend, char** text,
                  size_t* size, np_error** error) {
  if (backend == nullptr) return Fail(error, NP_INVALID_ARGUMENT, "backend name is NULL");
  if (ir == nullptr && ir_size != 0) return Fail(error, NP_INVALID_ARGUMENT, "IR is NULL");
  std::unique_ptr<np::backends::Backend> b = np::backends::MakeBackend(backend);
  if (b == nullptr) {
    return Fail(error, NP_NOT_FOUND,
                absl::StrCat("no backend \"", backend, "\" (nft, iptables, ebpf)"));
  }
  np::ir::CompiledPolicy policy;
  if (ir_size > static_cast<size_t>(INT32_MAX) ||
      !policy.ParseFromArray(ir, static_cast<int>(ir_size))) {
    return Fail(error, NP_INVALID_ARGUMENT, "IR bytes are not a serialized np.ir.CompiledPolicy");
  }
  absl::StatusOr<std::string> rendered = b->Render(policy);
  if (!rendered.ok()) return Fail(error, rendered.status());
  return Output(*rendered, text, size, error);
}

np_code np_live_new(const np_engine* initial, np_live** out, np_error** error) {
  if (out == nullptr) return Fail(error, NP_INVALID_ARGUMENT, "output pointer is NULL");
  *out = nullptr;
  if (!Valid(initial, kEngineMagic)) return BadHandle(error, "np_engine");
  np_live* live = new (std::nothrow) np_live(initial->engine);
  if (live == nullptr) return Fail(error, NP_RESOURCE_EXHAUSTED, "out of memory");
  *out = live;
  return NP_OK;
}

void np_live_free(np_live* live) { Destroy(live, kLiveMagic); }

np_code np_live_apply(np_live* live, const np_change* changes, size_t count, uint32_t flags,
                      np_error** error) {
  if (!Valid(live, kLiveMagic)) return BadHandle(error, "np_live");
  if (changes == nullptr && count != 0) return Fail(error, NP_INVALID_ARGUMENT, "changes is NULL");
  if (np_code code = CheckFlags(flags, error); code != NP_OK) return code;
  std::vector<np::Change> batch;
  batch.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    absl::StatusOr<np::Change> change = ToChange(changes[i], i);
    if (!change.ok()) return Fail(error, change.status());
    batch.push_back(*std::move(change));
  }
  return ApplyBatch(*live, std::move(batch), flags, error);
}

np_code np_live_apply_event(np_live* live, const void* data, size_t size, const char* kind,
                            uint32_t flags, np_error** error) {
  if (!Valid(live, kLiveMagic)) return BadHandle(error, "np_live");
  if (data == nullptr) return Fail(error, NP_INVALID_ARGUMENT, "event is NULL");
  if (np_code code = CheckFlags(flags, error); code != NP_OK) return code;
  absl::string_view type, object;
  absl::Status s = np::agent::SplitWatchEvent(
      absl::string_view(static_cast<const char*>(data), size), &type, &object);
  if (!s.ok()) return Fail(error, s);
  if (type == "\"BOOKMARK\"") return NP_OK;
  if (type == "\"ERROR\"") {
    return Fail(error, NP_FAILED_PRECONDITION,
                absl::StrCat("watch event ERROR (the watch must be restarted): ", object));
  }
  const bool deleted = type == "\"DELETED\"";
  if (!deleted && type != "\"ADDED\"" && type != "\"MODIFIED\"") {
    return Fail(error, NP_INVALID_ARGUMENT, absl::StrCat("watch event: unknown type ", type));
  }
  absl::StatusOr<np::Change> change =
      np::ParseChangeOfKind(object, "watch event", kind != nullptr ? kind : "");
  if (!change.ok()) return Fail(error, change.status());
  if (deleted) change->op = np::Change::Op::kDelete;  // a delete reads only the metadata
  std::vector<np::Change> batch;
  batch.push_back(*std::move(change));
  return ApplyBatch(*live, std::move(batch), flags, error);
}

np_code np_live_snapshot(const np_live* live, np_engine** out, np_error** error) {
  if (out == nullptr) return Fail(error, NP_INVALID_ARGUMENT, "output pointer is NULL");
  *out = nullptr;
  if (!Valid(live, kLiveMagic)) return BadHandle(error, "np_live");
  np_engine* handle = new (std::nothrow) np_engine{kEngineMagic, live->live.Current()};
  if (handle == nullptr) return Fail(error, NP_RESOURCE_EXHAUSTED, "out of memory");
  *out = handle;
  return NP_OK;
}

np_code np_reader_new(np_live* live, np_reader** out, np_error** error) {
  if (out == nullptr) return Fail(error, NP_INVALID_ARGUMENT, "output pointer is NULL");
  *out = nullptr;
  if (!Valid(live, kLiveMagic)) return BadHandle(error, "np_live");
  np_reader* reader = new (std::nothrow) np_reader(*live);
  if (reader == nullptr) return Fail(error, NP_RESOURCE_EXHAUSTED, "out of memory");
  *out = reader;
  return NP_OK;
}

void np_reader_free(np_reader* reader) { Destroy(reader, kReaderMagic); }

np_code np_reader_find_pod(np_reader* reader, const char* key, uint32_t* id,
                           np_error** error) {
  if (!Valid(reader, kReaderMagic)) return BadHandle(error, "np_reader");
  return FindPod(reader->reader.Pin(), key, id, error);
}

int np_reader_allowed(np_reader* reader, uint32_t source, uint32_t destination,
                      uint8_t protocol, uint16_t port) {
  if (!Valid(reader, kReaderMagic)) return -NP_INVALID_HANDLE;
  return PodVerdict(reader->reader.Pin(), source, destination, protocol, port);
}

int np_reader_allowed_packet(np_reader* reader, const np_address* source,
                             const np_address* destination, uint8_t protocol, uint16_t port) {
  if (!Valid(reader, kReaderMagic)) return -NP_INVALID_HANDLE;
  return PacketVerdict(reader->reader.Pin(), source, destination, protocol, port);
}

np_code np_reader_allowed_batch(np_reader* reader, const np_pod_query* queries, size_t count,
                                uint8_t* out, size_t* bad_index) {
  if (!Valid(reader, kReaderMagic)) return NP_INVALID_HANDLE;
  return PodBatch(reader->reader.Pin(), queries, count, out, bad_index);
}

}  // extern "C"
