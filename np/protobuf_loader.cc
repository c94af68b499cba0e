// Reads the Kubernetes protobuf wire form (np/loader.h, DecodeKubernetesProtobuf): the
// envelope client-go sends and receives with application/vnd.kubernetes.protobuf — the magic
// "k8s\0", then a runtime.Unknown message {typeMeta: {apiVersion, kind} = 1, raw = 2,
// contentEncoding = 3, contentType = 4} whose `raw` is the object encoded with the field
// numbers of Kubernetes' generated.proto, which proto/k8s.proto keeps (so np's messages parse
// it directly). Lists (PodList, ...) hold their objects as repeated field 2.
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "np/loader.h"

namespace np {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

constexpr absl::string_view kMagic("k8s\0", 4);

// Calls `field(number, bytes)` for every length-delimited field of a message; skips the
// rest. False when the bytes are not a well-formed message.
template <typename F>
bool ForEachBytesField(absl::string_view message, F field) {
  CodedInputStream in(reinterpret_cast<const uint8_t*>(message.data()),
                      static_cast<int>(message.size()));
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return in.CurrentPosition() == static_cast<int>(message.size());
    if (WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t size = 0;
      std::string bytes;
      if (!in.ReadVarint32(&size) || !in.ReadString(&bytes, static_cast<int>(size))) return false;
      field(WireFormatLite::GetTagFieldNumber(tag), bytes);
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return false;
    }
  }
}

struct WireKind {
  absl::string_view kind;
  absl::string_view api_version;
};
constexpr WireKind kWireKinds[] = {{"Namespace", "v1"}, {"Pod", "v1"},
                                   {"NetworkPolicy", "networking.k8s.io/v1"},
                                   {"Service", "v1"}};

// Parses one object of `kind` from `raw` into `objects`.
absl::Status AddObject(absl::string_view kind, const std::string& raw, const std::string& where,
                       ClusterObjects* objects) {
  auto parse = [&](auto message, auto* list) -> absl::Status {
    if (!message.ParseFromString(raw)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": not a valid ", kind));
    }
    list->push_back({std::move(message), {}});
    return absl::OkStatus();
  };
  if (kind == "Namespace") return parse(k8s::Namespace(), &objects->namespaces);
  if (kind == "Pod") return parse(k8s::Pod(), &objects->pods);
  if (kind == "Service") return parse(k8s::Service(), &objects->services);
  return parse(k8s::NetworkPolicy(), &objects->policies);
}

}  // namespace

absl::StatusOr<ClusterObjects> DecodeKubernetesProtobuf(absl::string_view bytes,
                                                        absl::string_view source_name) {
  const std::string name(source_name);
  if (bytes.size() < kMagic.size() || bytes.substr(0, kMagic.size()) != kMagic) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": not the Kubernetes protobuf form (it starts with the 4 bytes \"k8s\\0\")"));
  }
  if (bytes.size() > (1u << 30)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": larger than 1 GiB"));
  }
  std::string type_meta, raw, encoding;
  bool ok = ForEachBytesField(bytes.substr(kMagic.size()), [&](int field, std::string& value) {
    if (field == 1) type_meta = std::move(value);
    if (field == 2) raw = std::move(value);
    if (field == 3) encoding = std::move(value);
  });
  std::string api_version, kind;
  ok = ok && ForEachBytesField(type_meta, [&](int field, std::string& value) {
         if (field == 1) api_version = std::move(value);
         if (field == 2) kind = std::move(value);
       });
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": the runtime.Unknown envelope is not well-formed protobuf"));
  }
  if (!encoding.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": contentEncoding \"", encoding, "\" is not supported"));
  }
  if (kind.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": typeMeta.kind: Required value"));
  }
  const bool list = absl::EndsWith(kind, "List");
  const absl::string_view item_kind =
      list ? absl::string_view(kind).substr(0, kind.size() - 4) : absl::string_view(kind);
  const WireKind* known = nullptr;
  for (const WireKind& k : kWireKinds) {
    if (k.kind == item_kind) known = &k;
  }
  if (known == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": typeMeta.kind: \"", kind,
        "\" is not read (Namespace, Pod, NetworkPolicy, Service and their Lists are)"));
  }
  if (api_version != known->api_version) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": typeMeta.apiVersion: \"", api_version,
                                                   "\" is not supported for ", kind, "; use ",
                                                   known->api_version));
  }
  ClusterObjects objects;
  if (!list) {
    absl::Status s = AddObject(item_kind, raw, absl::StrCat(name, ": ", kind), &objects);
    if (!s.ok()) return s;
    return objects;
  }
  absl::Status status;
  int index = 0;
  ok = ForEachBytesField(raw, [&](int field, std::string& item) {
    if (field != 2 || !status.ok()) return;  // 1 is the ListMeta
    status = AddObject(item_kind, item, absl::StrCat(name, ": ", kind, ".items[", index++, "]"),
                       &objects);
  });
  if (!ok) return absl::InvalidArgumentError(absl::StrCat(name, ": ", kind, " is not well-formed"));
  if (!status.ok()) return status;
  return objects;
}

}  // namespace np
