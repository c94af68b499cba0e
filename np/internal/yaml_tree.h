// np/internal/yaml_tree.h — YAML (and JSON) text to a plain tree of nodes with line numbers,
// for the loader (np/loader.cc). Internal to np.
//
//   np::internal::YamlError error;
//   bool ok = np::internal::ParseYamlDocuments(text, [&](np::internal::YamlDocument doc) {
//     ...  // doc.error set: this document is malformed; else doc.root is its content
//   }, &error);
//
// This layer knows YAML, not Kubernetes. It wraps yaml-cpp's event parser and adds what
// yaml-cpp 0.7 lacks or does differently from the YAML reader Kubernetes uses (go-yaml v2):
// - the text must be UTF-8 without control characters (yaml-cpp silently replaces bad bytes);
// - a quoted scalar left open at the end of the input is an error (yaml-cpp accepts it);
// - aliases are expanded into copies, with a budget (no "billion laughs"), and an alias to
//   its own enclosing node is an error (yaml-cpp would build a cycle);
// - nesting is bounded by kMaxYamlDepth, below yaml-cpp's own guard (500 nested nodes,
//   which bounds its recursive descent) and counting levels that aliases add, so every
//   recursive walk over the tree (copy, destruction) is bounded too;
// - yaml-cpp's exceptions are caught here and become errors with a 1-based line.
// Scalars keep their raw text and style; resolving them (int, bool, null, ...) is left to
// ResolveScalar(), because Kubernetes resolves plain scalars by YAML 1.1 rules.
//
// Thread safety: the functions are reentrant; the tree is a plain value.
#ifndef NP_INTERNAL_YAML_TREE_H_
#define NP_INTERNAL_YAML_TREE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace np::internal {

// Limits. A Kubernetes object is about 10 levels deep; CRDs with big schemas perhaps 60.
// Nesting: collections within collections, the document's root being level 1. yaml-cpp
// parses by recursive descent: at this depth it needs about 100 KB of stack.
inline constexpr int kMaxYamlDepth = 128;
// Nodes that anchors (kept as copies) and aliases (expanded into copies) may add to one
// document.
inline constexpr int64_t kMaxAliasNodes = 200000;
// yaml-cpp counts positions in `int`.
inline constexpr size_t kMaxYamlTextSize = size_t{1} << 30;

struct YamlNode {
  enum class Type : uint8_t { kNull, kScalar, kSequence, kMapping };
  // How a scalar was written; decides how it resolves.
  enum class Style : uint8_t {
    kPlain,   // unquoted: may be an int, bool, null, float or string (YAML 1.1 rules)
    kQuoted,  // single- or double-quoted, or a block scalar (| or >): always a string
    kTagged,  // with an explicit tag (see `tag`)
  };

  Type type = Type::kNull;
  Style style = Style::kPlain;
  int line = 0;       // 1-based line where the node starts
  std::string tag;    // kTagged only, e.g. "tag:yaml.org,2002:int" or "!foo"
  std::string value;  // kScalar only
  // kSequence: the items. kMapping: keys and values alternating (key, value, key, value...),
  // in input order, duplicates kept.
  std::vector<YamlNode> children;

  bool is_null() const { return type == Type::kNull; }
  bool is_scalar() const { return type == Type::kScalar; }
  bool is_sequence() const { return type == Type::kSequence; }
  bool is_mapping() const { return type == Type::kMapping; }
  size_t mapping_size() const { return children.size() / 2; }
  const YamlNode& map_key(size_t i) const { return children[2 * i]; }
  const YamlNode& map_value(size_t i) const { return children[2 * i + 1]; }
};

// "a list", "an object", "a string", ... for messages.
const char* DescribeYamlType(const YamlNode& node);

// A scalar resolved the way Kubernetes reads YAML: go-yaml v2 (YAML 1.1 plain scalars) and
// then JSON. Quoted scalars are strings. Plain ones: null (~, null, Null, NULL, empty), bool
// (true/false, yes/no, on/off, y/n in the usual capitalizations), int (decimal, 0x, 0o, 0b,
// leading-0 octal, _ separators), float, timestamp-looking text stays a string, else string.
struct ResolvedScalar {
  enum class Type : uint8_t { kNull, kBool, kInt, kFloat, kString, kError };
  Type type = Type::kNull;
  bool bool_value = false;
  // kInt: the value when it fits int64 (`int_fits`); integers up to uint64 are kInt with
  // int_fits false. Floats with an integral value below 1e21 behave as integers in JSON,
  // so they are kFloat with `integral` set and int_value filled when it fits.
  int64_t int_value = 0;
  bool int_fits = false;
  bool integral = false;
  // An integer literal too big for 64 bits: go-yaml reads it as a float (kFloat).
  bool int_overflow = false;
  double float_value = 0;
  std::string string_value;  // kString; kError: the message
};
ResolvedScalar ResolveScalar(const YamlNode& node);

// One document of the stream. `error` empty: `root` holds it. Otherwise the document is
// malformed, `error` says why and `error_line` where; parsing goes on with the next document.
struct YamlDocument {
  YamlNode root;
  int line = 0;  // 1-based line where the document's content starts
  std::string error;
  int error_line = 0;
};

struct YamlError {
  std::string message;
  int line = 0;  // 1-based; 0 when unknown
};

// Parses every document of `text` in order and hands each to `on_document` (empty and null
// documents included, as a kNull root). Returns false with `error` set when the stream
// itself is malformed (bad encoding, syntax error); documents before the error were handed
// over already. Never throws.
bool ParseYamlDocuments(absl::string_view text,
                        const std::function<void(YamlDocument&&)>& on_document,
                        YamlError* error);

}  // namespace np::internal

#endif  // NP_INTERNAL_YAML_TREE_H_
