// np/internal/yaml_tree.h — YAML (and JSON) text to a plain tree of nodes with line numbers,
// for the loader (np/loader.cc). Internal to np.
//
//   np::internal::AliasBudget budget;  // one per load
//   np::internal::YamlError error;
//   bool ok = np::internal::ParseYamlDocuments(text, [&](np::internal::YamlDocument&& doc) {
//     ...  // doc.error set: this document is malformed; else doc.root is its content
//   }, &budget, &error);
//
// This layer knows YAML, not Kubernetes. It wraps yaml-cpp's event parser and adds what
// yaml-cpp 0.7 lacks or does differently from the YAML reader Kubernetes uses (go-yaml v2):
// - the text must be UTF-8 without control characters (yaml-cpp silently replaces bad bytes);
// - a quoted scalar left open at the end of the input is an error (yaml-cpp accepts it);
// - a merge key (<<) whose value is not a mapping or a list of mappings is an error anywhere
//   in the document, as go-yaml fails the whole document ("map merge requires map or
//   sequence of maps as the value");
// - a text whose first non-blank character is `{` is JSON, as kubectl decides (its
//   YAMLOrJSONDecoder): plain scalars are then JSON literals (numbers, true, false, null),
//   other plain or single-quoted text, tags, anchors and aliases are errors, `null` is the
//   null node, and numbers follow Go's JSON decoding (1e400 does not fit a float64: an
//   error, not a string). Plain JSON (a watch event, kubectl's -o json) is read by a direct
//   reader into the same tree, yaml-cpp only seeing what that reader declines (JsonPath);
// - an alias is the node it names, shared rather than copied, so the tree costs no memory
//   per alias; what aliases add (nodes and scalar bytes, as the loader will walk them) is
//   charged to an AliasBudget that callers share across documents and files, so that no
//   input can make the reader do more than a fixed amount of work beyond its own size ("billion laughs");
//   an alias to its own enclosing node is an error (yaml-cpp would build a cycle);
// - nesting is bounded by kMaxYamlDepth, below yaml-cpp's own guard (500 nested nodes,
//   which bounds its recursive descent) and counting levels that aliases add, so every
//   recursive walk over the tree is bounded too;
// - yaml-cpp's exceptions are caught here and become errors with a 1-based line.
// Tags on mappings and sequences are ignored, as go-yaml v2 ignores them (its parser keeps no
// tag on a collection node): `!!null {a: 1}` is a mapping. Scalars keep their raw text and
// style; resolving them (int, bool, null, ...) is left to ResolveScalar(), because
// Kubernetes resolves plain scalars by YAML 1.1 rules.
//
// Memory: a node is 32 bytes; nodes and scalar text live in one arena per document, freed
// with it.
//
// Thread safety: the functions are reentrant; a document is a plain value (move-only).
#ifndef NP_INTERNAL_YAML_TREE_H_
#define NP_INTERNAL_YAML_TREE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace np::internal {

// Limits. A Kubernetes object is about 10 levels deep; CRDs with big schemas perhaps 60.
// Nesting: collections within collections, the document's root being level 1. yaml-cpp
// parses by recursive descent: at this depth it needs about 100 KB of stack.
inline constexpr int kMaxYamlDepth = 128;
// What anchors and aliases may add, in nodes and in scalar bytes, for one AliasBudget.
inline constexpr int64_t kMaxAliasNodes = 200000;
inline constexpr int64_t kMaxAliasBytes = int64_t{16} << 20;
// yaml-cpp counts positions in `int`.
inline constexpr size_t kMaxYamlTextSize = size_t{1} << 30;

// What aliases have added so far; share one across the texts of one load.
struct AliasBudget {
  int64_t nodes = 0;
  int64_t bytes = 0;
};

class YamlArena;

struct YamlNode {
  enum class Type : uint8_t { kNull, kScalar, kSequence, kMapping };
  // How a scalar was written; decides how it resolves.
  enum class Style : uint8_t {
    kPlain,   // unquoted YAML: may be an int, bool, null, float or string (YAML 1.1 rules)
    kQuoted,  // single- or double-quoted, or a block scalar (| or >): always a string
    kTagged,  // with an explicit tag (see tag())
    kJson,    // unquoted in a JSON text: a JSON number, true, false or null
  };

  Type type = Type::kNull;
  Style style = Style::kPlain;
  int line = 0;  // 1-based line where the node starts

  absl::string_view value() const { return {value_, value_size_}; }  // kScalar only
  // kTagged only, e.g. "tag:yaml.org,2002:int" or "!foo".
  absl::string_view tag() const {
    return is_scalar() && tag_ != nullptr ? absl::string_view(tag_) : absl::string_view();
  }
  // kSequence: the items. kMapping: keys and values alternating (key, value, key, value...),
  // in input order, duplicates kept.
  absl::Span<const YamlNode> children() const {
    return is_scalar() ? absl::Span<const YamlNode>() : absl::Span<const YamlNode>(children_, child_count_);
  }

  bool is_null() const { return type == Type::kNull; }
  bool is_scalar() const { return type == Type::kScalar; }
  bool is_sequence() const { return type == Type::kSequence; }
  bool is_mapping() const { return type == Type::kMapping; }
  size_t mapping_size() const { return child_count_ / 2; }
  const YamlNode& map_key(size_t i) const { return children_[2 * i]; }
  const YamlNode& map_value(size_t i) const { return children_[2 * i + 1]; }

 private:
  friend class TreeBuilder;
  friend class JsonReader;
  // Owned by the document's arena. 32 bytes in all: a scalar has no children and a
  // collection no tag, so they share a slot.
  const char* value_ = "";
  union {
    const YamlNode* children_ = nullptr;  // collections
    const char* tag_;                     // scalars; NUL-terminated
  };
  uint32_t value_size_ = 0;
  uint32_t child_count_ = 0;
};

// A YAML merge key: `<<` unquoted, or tagged !!merge (go-yaml v2's isMerge).
bool IsMergeKey(const YamlNode& key);

// "a list", "an object", "a string", ... for messages.
const char* DescribeYamlType(const YamlNode& node);

// A scalar resolved the way Kubernetes reads YAML: go-yaml v2 (YAML 1.1 plain scalars) and
// then JSON. Quoted scalars are strings. Plain ones: null (~, null, Null, NULL, empty), bool
// (true/false, yes/no, on/off, y/n in the usual capitalizations), int (decimal, 0x, 0o, 0b,
// leading-0 octal, _ separators), float, timestamp-looking text stays a string, else string.
// Tagged ones as go-yaml v2 resolves an explicit tag: !!str, !!int, !!float, !!bool, !!null
// force the type (an error when the text is not of it); !!binary is base64 and decodes to
// its bytes; other tags (!!map on a scalar, !local) leave the text a string. kJson scalars
// are JSON literals as Go's JSON decoding reads them into Kubernetes objects.
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
// The nodes live in `arena`: keep the document while using them.
struct YamlDocument {
  YamlNode root;
  int line = 0;  // 1-based line where the document's content starts
  std::string error;
  int error_line = 0;
  std::shared_ptr<const YamlArena> arena;
};

struct YamlError {
  std::string message;
  int line = 0;  // 1-based; 0 when unknown
};

// How a text that starts with `{` is read. kDirect: by a JSON reader of its own (about 20
// times faster than yaml-cpp's event parser: a watch event is read on the agent's latency
// path), which takes only JSON it reads exactly as the yaml-cpp path does — one object and
// whitespace (spaces and line feeds), strings without tabs, raw line breaks or escaped
// surrogates — and hands anything else, every malformed text included, to the yaml-cpp path,
// so that errors and their lines are that path's. kYamlCpp: always yaml-cpp (the reference
// the direct reader is tested against, np/internal/yaml_tree_test.cc).
enum class JsonPath { kDirect, kYamlCpp };

// The direct JSON reader alone, on a text that starts with `{` (after blanks) and passed
// ParseYamlDocuments' encoding check (UTF-8, no byte-order mark): true with the document when
// it takes the text, false when it leaves it to yaml-cpp. For tests.
bool ReadJsonDirectly(absl::string_view text, YamlDocument* doc);

// Parses every document of `text` in order and hands each to `on_document` (empty and null
// documents included, as a kNull root). Returns false with `error` set when the stream
// itself is malformed (bad encoding, syntax error); documents before the error were handed
// over already. Never throws.
// Aliases are charged to `budget`.
bool ParseYamlDocuments(absl::string_view text,
                        const std::function<void(YamlDocument&&)>& on_document,
                        AliasBudget* budget, YamlError* error,
                        JsonPath json_path = JsonPath::kDirect);

}  // namespace np::internal

#endif  // NP_INTERNAL_YAML_TREE_H_
