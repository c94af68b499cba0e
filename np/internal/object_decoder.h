// np/internal/object_decoder.h — decoding one Kubernetes object from a YAML tree, the way
// strict JSON decoding into the Go types does it: field paths in upstream's spelling, lines
// recorded per field, unknown and duplicate fields reported. Shared by the loader's kinds
// (np/loader.cc) and the policy tiers' kinds (np/tiers/decode.cc).
//
//   internal::ObjectDecoder d(file, "Pod", "ns/name", &diagnostics);
//   d.Fields(node, "", /*strict=*/true, [&](const std::string& name, const YamlNode& v,
//                                            const std::string& field, int line) { ... });
//
// Thread safety: an ObjectDecoder is used by one thread; the free functions are pure.
#ifndef NP_INTERNAL_OBJECT_DECODER_H_
#define NP_INTERNAL_OBJECT_DECODER_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "np/cluster.h"
#include "np/internal/text.h"
#include "np/internal/yaml_tree.h"
#include "proto/k8s.pb.h"

namespace np::internal {

// ObjectMeta fields a NetworkPolicy may carry. np reads name, generateName, namespace, uid,
// resourceVersion, generation and labels; the others are accepted and ignored.
inline constexpr absl::string_view kMetadataFields[] = {
    "name",          "generateName",      "namespace",
    "selfLink",      "uid",               "resourceVersion",
    "generation",    "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds",         "labels",
    "annotations",   "ownerReferences",   "finalizers",
    "managedFields",
};

inline std::string Child(const std::string& path, absl::string_view name) {
  return path.empty() ? std::string(name) : absl::StrCat(path, ".", name);
}
inline std::string Element(const std::string& path, size_t index) {
  return absl::StrCat(path, "[", index, "]");
}

// The errors reported since the list held `errors_before` of them (and `size_before`

// A mapping key as JSON sees it after go-yaml: strings stay, integers and booleans print as
// text ("80", "true"); null and collections are not valid keys.
inline bool KeyText(const YamlNode& key, std::string* out, std::string* error) {
  if (!key.is_scalar()) {
    *error = absl::StrCat("a key must be a string, got ", internal::DescribeYamlType(key));
    return false;
  }
  ResolvedScalar r = internal::ResolveScalar(key);
  switch (r.type) {
    case ResolvedScalar::Type::kString:
      *out = std::move(r.string_value);
      return true;
    case ResolvedScalar::Type::kBool:
      *out = r.bool_value ? "true" : "false";
      return true;
    case ResolvedScalar::Type::kInt:
      *out = r.int_fits ? absl::StrCat(r.int_value) : r.string_value;
      return true;
    case ResolvedScalar::Type::kFloat:
      *out = absl::StrCat(r.float_value);
      return true;
    case ResolvedScalar::Type::kNull:
      *error = "a key must be a string, got null";
      return false;
    case ResolvedScalar::Type::kError:
      *error = r.string_value;
      return false;
  }
  return false;
}

// The top-level entry `name` of a mapping, without merge keys or error reporting: used to
// find kind, apiVersion and the object's name before the object is decoded. `count` receives
// how many entries have that key, `duplicate_line` the line of the second one.
inline const YamlNode* Find(const YamlNode& mapping, absl::string_view name, int* count = nullptr,
                     int* duplicate_line = nullptr) {
  const YamlNode* found = nullptr;
  int n = 0;
  if (mapping.is_mapping()) {
    for (size_t i = 0; i < mapping.mapping_size(); ++i) {
      const YamlNode& key = mapping.map_key(i);
      if (!key.is_scalar() || key.value() != name) continue;
      std::string text, error;
      if (!KeyText(key, &text, &error) || text != name) continue;
      if (found == nullptr) found = &mapping.map_value(i);
      if (++n == 2 && duplicate_line != nullptr) *duplicate_line = key.line;
    }
  }
  if (count != nullptr) *count = n;
  return found;
}

// A string scalar, or empty when the node is anything else.
inline std::string StringOrEmpty(const YamlNode* node) {
  if (node == nullptr) return "";
  ResolvedScalar r = internal::ResolveScalar(*node);
  return r.type == ResolvedScalar::Type::kString ? r.string_value : "";
}

// "must be a string, got an integer (quote it: "2")".
inline std::string TypeMessage(absl::string_view want, const YamlNode& node) {
  std::string message = absl::StrCat("must be ", want, ", got ", internal::DescribeYamlType(node));
  if (want == "a string" && node.is_scalar() && node.style == YamlNode::Style::kPlain) {
    absl::StrAppend(&message, " (quote it: ", internal::GoQuote(node.value()), ")");
  }
  return message;
}


// Decodes one object, collecting its errors. Field paths are upstream's: "spec.ingress[0]
// .from[1].ipBlock.cidr". Every field read gets its line recorded in `source.field_lines`.
class ObjectDecoder {
 public:
  ObjectDecoder(SharedString file, SharedString kind, SharedString object,
                std::vector<Diagnostic>* out)
      : file_(std::move(file)), kind_(std::move(kind)), object_(std::move(object)), out_(out) {
    source.location.file = file_;
  }

  ObjectSource source;
  bool ok() const { return ok_; }

  void Error(int line, std::string field, std::string message) {
    ok_ = false;
    Diagnostic d;
    d.kind = kind_;
    d.object = object_;
    d.field = std::move(field);
    d.message = std::move(message);
    d.location = {file_, line};
    AppendDiagnostic(out_, std::move(d));
  }

  // Calls `visit(name, value, path, line)` for each entry of `mapping`, merge keys (<<)
  // expanded; `visit` returns whether it knows the field. Duplicate keys are errors; unknown
  // fields are errors when `strict`, else ignored.
  template <typename F>
  void Fields(const YamlNode& mapping, const std::string& path, bool strict, F&& visit) {
    std::vector<Entry> entries;
    Entries(mapping, path, &entries);
    for (const Entry& e : entries) {
      const std::string field = Child(path, e.name);
      // Before the visit, so that the fields inside see this one's line as theirs.
      const bool recorded = RecordLine(field, e.line);
      if (!visit(e.name, *e.value, field, e.line)) {
        if (recorded) source.field_lines.erase(field);  // unknown fields have no line
        if (strict) Error(e.line, field, absl::StrCat("unknown field ", internal::GoQuote(field)));
      }
    }
  }

  // Calls `visit(item, path, line)` for each item of `sequence`.
  template <typename F>
  void Items(const YamlNode& sequence, const std::string& path, F&& visit) {
    for (size_t i = 0; i < sequence.children().size(); ++i) {
      const YamlNode& item = sequence.children()[i];
      const std::string field = Element(path, i);
      RecordLine(field, item.line);
      visit(item, field, item.line);
    }
  }

  // Type checks. Null means absent: they return false without an error.
  bool IsMapping(const YamlNode& node, const std::string& path, int line) {
    if (node.is_mapping()) return true;
    if (!node.is_null() && !IsNullScalar(node)) Error(line, path, TypeMessage("an object", node));
    return false;
  }
  bool IsSequence(const YamlNode& node, const std::string& path, int line) {
    if (node.is_sequence()) return true;
    if (!node.is_null() && !IsNullScalar(node)) Error(line, path, TypeMessage("a list", node));
    return false;
  }

  bool String(const YamlNode& node, const std::string& path, int line, std::string* out) {
    ResolvedScalar r = internal::ResolveScalar(node);
    switch (r.type) {
      case ResolvedScalar::Type::kNull:
        return false;
      case ResolvedScalar::Type::kString:
        *out = std::move(r.string_value);
        return true;
      case ResolvedScalar::Type::kError:
        if (node.is_scalar()) {
          Error(line, path, r.string_value);
          return false;
        }
        break;
      default:
        break;
    }
    Error(line, path, TypeMessage("a string", node));
    return false;
  }

  bool Int64(const YamlNode& node, const std::string& path, int line, int64_t min, int64_t max,
             int64_t* out) {
    ResolvedScalar r = internal::ResolveScalar(node);
    if (r.type == ResolvedScalar::Type::kNull) return false;
    if (r.type == ResolvedScalar::Type::kError && node.is_scalar()) {
      Error(line, path, r.string_value);
      return false;
    }
    const bool integer = r.type == ResolvedScalar::Type::kInt ||
                         (r.type == ResolvedScalar::Type::kFloat && r.integral);
    if (!integer && !r.int_overflow) {
      Error(line, path, TypeMessage("an integer", node));
      return false;
    }
    if (!r.int_fits || r.int_value < min || r.int_value > max) {
      Error(line, path,
            absl::StrCat("must be an integer from ", min, " to ", max, ", got ", node.value()));
      return false;
    }
    *out = r.int_value;
    return true;
  }

  bool Int32(const YamlNode& node, const std::string& path, int line, int32_t* out) {
    int64_t v = 0;
    if (!Int64(node, path, line, INT32_MIN, INT32_MAX, &v)) return false;
    *out = static_cast<int32_t>(v);
    return true;
  }

  bool Bool(const YamlNode& node, const std::string& path, int line, bool* out) {
    ResolvedScalar r = internal::ResolveScalar(node);
    if (r.type == ResolvedScalar::Type::kNull) return false;
    if (r.type == ResolvedScalar::Type::kBool) {
      *out = r.bool_value;
      return true;
    }
    Error(line, path, TypeMessage("a boolean (true or false)", node));
    return false;
  }

  // IntOrString: a plain integer is an int; a string (quoted, or plain text) is a string.
  bool IntOrString(const YamlNode& node, const std::string& path, int line,
                   k8s::IntOrString* out) {
    ResolvedScalar r = internal::ResolveScalar(node);
    switch (r.type) {
      case ResolvedScalar::Type::kNull:
        return false;
      case ResolvedScalar::Type::kString:
        out->set_type(1);
        out->set_strval(r.string_value);
        return true;
      case ResolvedScalar::Type::kInt:
      case ResolvedScalar::Type::kFloat:
        if (r.type == ResolvedScalar::Type::kInt || r.integral || r.int_overflow) {
          if (r.int_fits && r.int_value >= INT32_MIN && r.int_value <= INT32_MAX) {
            out->set_type(0);
            out->set_intval(static_cast<int32_t>(r.int_value));
            return true;
          }
          Error(line, path,
                absl::StrCat("must be an integer or a string, got ", node.value(),
                             " (out of the 32-bit integer range)"));
          return false;
        }
        break;
      case ResolvedScalar::Type::kError:
        if (node.is_scalar()) {
          Error(line, path, r.string_value);
          return false;
        }
        break;
      case ResolvedScalar::Type::kBool:
        break;
    }
    Error(line, path, TypeMessage("an integer or a string", node));
    return false;
  }

  // map<string, string>: labels, matchLabels. A null value is the empty string (as in Go).
  void StringMap(const YamlNode& node, const std::string& path, int line,
                 google::protobuf::Map<std::string, std::string>* out) {
    if (!IsMapping(node, path, line)) return;
    std::vector<Entry> entries;
    Entries(node, path, &entries);
    for (const Entry& e : entries) {
      ResolvedScalar r = internal::ResolveScalar(*e.value);
      if (r.type == ResolvedScalar::Type::kString) {
        (*out)[e.name] = std::move(r.string_value);
      } else if (r.type == ResolvedScalar::Type::kNull) {
        (*out)[e.name] = "";
      } else {
        Error(e.line, path,
              absl::StrCat("the value of ", internal::GoQuote(e.name), " ",
                           TypeMessage("a string", *e.value)));
      }
    }
  }

  void StringList(const YamlNode& node, const std::string& path, int line,
                  google::protobuf::RepeatedPtrField<std::string>* out) {
    if (!IsSequence(node, path, line)) return;
    Items(node, path, [&](const YamlNode& item, const std::string& item_path, int item_line) {
      std::string value;
      String(item, item_path, item_line, &value);  // null: "", as in Go
      *out->Add() = std::move(value);
    });
  }

 private:
  struct Entry {
    std::string name;
    const YamlNode* value;
    int line;  // of the key
  };

  static bool IsNullScalar(const YamlNode& node) {
    return node.is_scalar() &&
           internal::ResolveScalar(node).type == ResolvedScalar::Type::kNull;
  }

  // Records the line of `field` unless LineOf() already finds that line through the field's
  // enclosing fields (items of a one-line list, say), which keeps the map small for long
  // lists written on one line. Returns whether it recorded one.
  bool RecordLine(const std::string& field, int line) {
    // Nothing recorded yet and the object's own line: LineOf finds it without a lookup per
    // enclosing field (a watch event is one line: every field of it takes this path).
    if (line == source.location.line && source.field_lines.empty()) return false;
    if (source.LineOf(field) == line) return false;
    source.field_lines[field] = line;
    return true;
  }

  // The entries of `mapping` in order, first occurrence of each name; merge keys expanded
  // (explicit keys win over merged ones; earlier merged mappings win over later ones).
  void Entries(const YamlNode& mapping, const std::string& path, std::vector<Entry>* out) {
    absl::flat_hash_set<std::string> seen;  // filled only for long mappings (see Seen)
    Entries(mapping, path, /*report=*/true, 0, &seen, out);
  }

  // Whether `name` is among the entries taken already (their names are unique): a scan while
  // there are few (most objects' mappings: no hashing, no copy), `index` past that.
  static bool Seen(const std::vector<Entry>& out, const std::string& name,
                   absl::flat_hash_set<std::string>* index) {
    constexpr size_t kScanned = 16;
    if (out.size() <= kScanned) {
      for (const Entry& e : out) {
        if (e.name == name) return true;
      }
      return false;
    }
    for (size_t i = index->size(); i < out.size(); ++i) index->insert(out[i].name);
    return index->contains(name);
  }
  void Entries(const YamlNode& mapping, const std::string& path, bool report, int depth,
               absl::flat_hash_set<std::string>* seen, std::vector<Entry>* out) {
    std::vector<const YamlNode*> merges;
    for (size_t i = 0; i < mapping.mapping_size(); ++i) {
      const YamlNode& key = mapping.map_key(i);
      if (IsMergeKey(key)) {
        merges.push_back(&mapping.map_value(i));
        continue;
      }
      std::string name, error;
      if (!KeyText(key, &name, &error)) {
        if (report) Error(key.line, path, error);
        continue;
      }
      if (Seen(*out, name, seen)) {
        if (report) {
          const std::string field = Child(path, name);
          Error(key.line, field, absl::StrCat("duplicate field ", internal::GoQuote(field)));
        }
        continue;
      }
      out->push_back(Entry{std::move(name), &mapping.map_value(i), key.line});
    }
    // Merged entries come after the explicit ones; names already present are skipped.
    for (const YamlNode* merge : merges) {
      std::vector<const YamlNode*> sources;
      if (merge->is_mapping()) {
        sources.push_back(merge);
      } else if (merge->is_sequence()) {
        for (const YamlNode& item : merge->children()) sources.push_back(&item);
      }
      for (const YamlNode* source : sources) {
        if (!source->is_mapping() || depth >= internal::kMaxYamlDepth) {
          Error(source->line, path, "a merge key (<<) needs an object or a list of objects");
          continue;
        }
        Entries(*source, path, /*report=*/false, depth + 1, seen, out);
      }
    }
  }

  // Shared by every diagnostic about this object, however long the name.
  SharedString file_, kind_, object_;
  std::vector<Diagnostic>* out_;
  bool ok_ = true;
};


// metadata.ownerReferences: who controls a Pod or workload (np/workloads.h reads them).
inline void DecodeOwnerReferences(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                           int line, k8s::ObjectMeta* meta) {
  if (!d.IsSequence(node, path, line)) return;
  d.Items(node, path, [&](const YamlNode& item, const std::string& item_path, int item_line) {
    if (!d.IsMapping(item, item_path, item_line)) return;
    k8s::OwnerReference* ref = meta->add_ownerreferences();
    d.Fields(item, item_path, /*strict=*/false,
             [&](const std::string& n, const YamlNode& v, const std::string& f, int l) {
               std::string s;
               bool b = false;
               if (n == "kind") {
                 if (d.String(v, f, l, &s)) ref->set_kind(s);
               } else if (n == "name") {
                 if (d.String(v, f, l, &s)) ref->set_name(s);
               } else if (n == "apiVersion") {
                 if (d.String(v, f, l, &s)) ref->set_apiversion(s);
               } else if (n == "uid") {
                 if (d.String(v, f, l, &s)) ref->set_uid(s);
               } else if (n == "controller") {
                 if (d.Bool(v, f, l, &b)) ref->set_controller(b);
               } else {
                 return false;
               }
               return true;
             });
  });
}

inline void DecodeMetadata(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                    bool strict, k8s::ObjectMeta* meta) {
  d.Fields(node, path, strict, [&](const std::string& name, const YamlNode& v,
                                   const std::string& field, int line) {
    std::string s;
    int64_t n = 0;
    if (name == "name") {
      if (d.String(v, field, line, &s)) meta->set_name(s);
    } else if (name == "generateName") {
      if (d.String(v, field, line, &s)) meta->set_generatename(s);
    } else if (name == "namespace") {
      if (d.String(v, field, line, &s)) meta->set_namespace_(s);
    } else if (name == "uid") {
      if (d.String(v, field, line, &s)) meta->set_uid(s);
    } else if (name == "resourceVersion") {
      if (d.String(v, field, line, &s)) meta->set_resourceversion(s);
    } else if (name == "generation") {
      if (d.Int64(v, field, line, INT64_MIN, INT64_MAX, &n)) meta->set_generation(n);
    } else if (name == "labels") {
      d.StringMap(v, field, line, meta->mutable_labels());
    } else if (name == "ownerReferences") {
      DecodeOwnerReferences(d, v, field, line, meta);
    } else {
      return std::find(std::begin(kMetadataFields), std::end(kMetadataFields), name) !=
             std::end(kMetadataFields);
    }
    return true;
  });
}

inline void DecodeLabelSelector(ObjectDecoder& d, const YamlNode& node, const std::string& path,
                         k8s::LabelSelector* selector) {
  d.Fields(node, path, /*strict=*/true, [&](const std::string& name, const YamlNode& v,
                                            const std::string& field, int line) {
    if (name == "matchLabels") {
      d.StringMap(v, field, line, selector->mutable_matchlabels());
    } else if (name == "matchExpressions") {
      if (!d.IsSequence(v, field, line)) return true;
      d.Items(v, field, [&](const YamlNode& item, const std::string& item_path, int item_line) {
        k8s::LabelSelectorRequirement* r = selector->add_matchexpressions();
        if (!d.IsMapping(item, item_path, item_line)) return;
        d.Fields(item, item_path, /*strict=*/true,
                 [&](const std::string& n, const YamlNode& iv, const std::string& f, int l) {
                   std::string s;
                   if (n == "key") {
                     if (d.String(iv, f, l, &s)) r->set_key(s);
                   } else if (n == "operator") {
                     if (d.String(iv, f, l, &s)) r->set_operator_(s);
                   } else if (n == "values") {
                     d.StringList(iv, f, l, r->mutable_values());
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

}  // namespace np::internal

#endif  // NP_INTERNAL_OBJECT_DECODER_H_
