#include "np/internal/yaml_tree.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <exception>
#include <new>
#include <istream>
#include <streambuf>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "yaml-cpp/depthguard.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/exceptions.h"
#include "yaml-cpp/mark.h"
#include "yaml-cpp/parser.h"

namespace np::internal {
namespace {

constexpr absl::string_view kTagPrefix = "tag:yaml.org,2002:";

// 1-based line of byte `offset` in `text`.
int LineAt(absl::string_view text, size_t offset) {
  int line = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') ++line;
  }
  return line;
}

// Checks that `text` is UTF-8 made of characters YAML allows (go-yaml's is_printable: tab,
// line breaks, printable ASCII, NEL, and the rest of Unicode minus surrogates, U+FFFE/U+FFFF
// and the byte-order mark). On failure sets `error` and returns false.
bool CheckEncoding(absl::string_view text, YamlError* error) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  if (n >= 2 && ((p[0] == 0xFF && p[1] == 0xFE) || (p[0] == 0xFE && p[1] == 0xFF))) {
    error->line = 1;
    error->message = "the input is UTF-16 (it starts with a UTF-16 byte-order mark); np reads UTF-8";
    return false;
  }
  for (size_t i = 0; i < n;) {
    // Eight bytes of printable ASCII (0x20..0x7E) at a time, most of any text: no byte with
    // the high bit, none below 0x20, none equal to 0x7F (each test exact when it says
    // "none", which is all that is used). Anything else goes byte by byte below.
    constexpr uint64_t kOnes = 0x0101010101010101, kHigh = 0x8080808080808080;
    while (i + 8 <= n) {
      uint64_t x;
      std::memcpy(&x, p + i, 8);
      const uint64_t del = x ^ (0x7F * kOnes);
      if (((x | ((x - 0x20 * kOnes) & ~x) | ((del - kOnes) & ~del)) & kHigh) != 0) break;
      i += 8;
    }
    if (i >= n) break;
    unsigned char c = p[i];
    if (c < 0x80) {
      if (c == '\t' || c == '\n' || c == '\r' || (c >= 0x20 && c < 0x7F)) {
        ++i;
        continue;
      }
      error->line = LineAt(text, i);
      error->message = absl::StrFormat(
          "control character 0x%02X is not allowed (byte %d; is this a binary file?)", c, i);
      return false;
    }
    int len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    }
    bool valid = len > 0 && i + len <= n;
    for (int k = 1; valid && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) valid = false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (valid) {
      // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
      if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
          (cp >= 0xD800 && cp <= 0xDFFF)) {
        valid = false;
      }
    }
    if (!valid) {
      error->line = LineAt(text, i);
      error->message = absl::StrFormat("invalid UTF-8 (byte 0x%02X at offset %d)", c, i);
      return false;
    }
    bool printable = cp == 0x85 || (cp >= 0xA0 && cp <= 0xD7FF) ||
                     (cp >= 0xE000 && cp <= 0xFFFD && cp != 0xFEFF) || cp >= 0x10000;
    if (!printable) {
      error->line = LineAt(text, i);
      error->message = absl::StrFormat("character U+%04X is not allowed in YAML", cp);
      return false;
    }
    i += len;
  }
  return true;
}

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// yaml-cpp 0.7 accepts a quoted scalar that is still open at the end of the input (it ends it
// there). `pos` is where yaml-cpp says the scalar starts (at its tag or anchor, if any).
// Returns false when the scalar is quoted and its closing quote is missing.
bool QuoteIsClosed(absl::string_view text, size_t pos) {
  // Skip node properties: "!tag" and "&anchor", each followed by separation.
  while (pos < text.size() && (text[pos] == '!' || text[pos] == '&')) {
    while (pos < text.size() && !IsBlank(text[pos])) ++pos;
    while (pos < text.size() && IsBlank(text[pos])) ++pos;
  }
  if (pos >= text.size()) return true;
  const char quote = text[pos];
  if (quote != '"' && quote != '\'') return true;  // a block scalar
  for (size_t i = pos + 1; i < text.size(); ++i) {
    if (quote == '"' && text[i] == '\\') {
      ++i;  // an escaped character, whatever it is
      continue;
    }
    if (text[i] != quote) continue;
    if (quote == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
      ++i;  // '' is an escaped single quote
      continue;
    }
    return true;
  }
  return false;
}

// Thrown by the builder to stop yaml-cpp: when the nesting passes kMaxYamlDepth (to stop its
// recursive descent early; yaml-cpp itself would go on to 500 levels, which needs twice the
// stack), and at the first problem of a JSON text (kubectl's JSON decoder stops there too).
// The builder's pending error says what and where.
struct StopParsing {};

bool IsJsonNumber(absl::string_view s, bool* integer);

// true, false, null or a number: what JSON writes without quotes.
bool IsJsonLiteral(absl::string_view s) {
  bool integer = false;
  return s == "true" || s == "false" || s == "null" || IsJsonNumber(s, &integer);
}

// An istream's buffer over `text` as it is, so that yaml-cpp reads it without a copy.
class TextBuffer : public std::streambuf {
 public:
  explicit TextBuffer(absl::string_view text) {
    char* p = const_cast<char*>(text.data());  // only ever read
    setg(p, p, p + text.size());
  }
};

// Why a JSON text is not JSON, in kubectl's terms.
std::string NotJson(absl::string_view what) {
  return absl::StrCat("invalid JSON: ", what,
                      " (the text starts with `{`, so it is read as JSON, as kubectl reads it)");
}

// One YamlArena::kBlockSize block kept per thread between documents (see ~YamlArena). A
// variable of this file, not a static member: as a thread_local static member it was
// exported from libnp.so despite the version script (bindings/c/check_install.sh saw it).
thread_local std::unique_ptr<char[]> spare_block;

}  // namespace

// Nodes and scalar text of one document, in blocks that never move.
class YamlArena {
 public:
  YamlArena() = default;
  YamlArena(const YamlArena&) = delete;
  YamlArena& operator=(const YamlArena&) = delete;
  // The first full-size block goes back to this thread's spare for the next document: an
  // agent parses one small watch event at a time, and a fresh 64 KiB block per event was a
  // large malloc and free each time, each making glibc consolidate every small chunk freed
  // since (malloc_consolidate walks them all, cold: ~40 % of a pod event's parse), besides
  // faulting the block's pages in again.
  ~YamlArena() {
    for (std::unique_ptr<char[]>& block : blocks_) {
      if (block != nullptr && spare_block == nullptr) spare_block = std::move(block);
    }
  }

  // A NUL-terminated copy of `s`.
  const char* CopyText(absl::string_view s) {
    char* p = static_cast<char*>(Allocate(s.size() + 1, 1));
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    p[s.size()] = '\0';
    return p;
  }
  YamlNode* AllocateNodes(size_t n) {
    static_assert(std::is_trivially_destructible_v<YamlNode>);
    static_assert(sizeof(YamlNode) <= 32, "a node per input byte must stay cheap");
    return static_cast<YamlNode*>(Allocate(n * sizeof(YamlNode), alignof(YamlNode)));
  }

 private:
  static constexpr size_t kBlockSize = 64 << 10;

  void* Allocate(size_t bytes, size_t align) {
    size_t pad = (align - reinterpret_cast<uintptr_t>(next_) % align) % align;
    if (bytes + pad > left_) {
      if (bytes > kBlockSize / 4) {  // big: a block of its own, the current one stays open
        big_blocks_.push_back(std::unique_ptr<char[]>(new char[bytes]));
        return big_blocks_.back().get();
      }
      // Uninitialized (every byte handed out is written before it is read): zeroing 64 KiB
      // touched 16 pages an event's few hundred bytes of nodes never need.
      blocks_.push_back(spare_block != nullptr ? std::move(spare_block)
                                               : std::unique_ptr<char[]>(new char[kBlockSize]));
      next_ = blocks_.back().get();
      left_ = kBlockSize;
      pad = 0;
    }
    void* p = next_ + pad;
    next_ += pad + bytes;
    left_ -= pad + bytes;
    return p;
  }

  std::vector<std::unique_ptr<char[]>> blocks_;      // kBlockSize each
  std::vector<std::unique_ptr<char[]>> big_blocks_;  // one allocation each, of its own size
  char* next_ = nullptr;
  size_t left_ = 0;
};

bool IsMergeKey(const YamlNode& key) {
  return key.is_scalar() && key.value() == "<<" &&
         (key.style == YamlNode::Style::kPlain ||
          (key.style == YamlNode::Style::kTagged && key.tag() == "tag:yaml.org,2002:merge"));
}

// Builds YamlNodes from yaml-cpp's events. A problem marks the document as failed and the
// rest of its events are ignored; only nesting past kMaxYamlDepth and problems of a JSON text throw (StopParsing), to stop
// yaml-cpp's recursion early.
//
// The children of the collections still open wait in `pending_`, one after the other; when a
// collection closes, its children move to the arena in one array. Anchored nodes are kept
// (shallow: their children are in the arena already), and an alias is a copy of the anchored
// node, which shares its children.
class TreeBuilder : public YAML::EventHandler {
 public:
  TreeBuilder(absl::string_view text, bool json,
              const std::function<void(YamlDocument&&)>& on_document, AliasBudget* budget)
      : text_(text), json_(json), on_document_(on_document), budget_(budget) {}

  int last_line() const { return last_line_; }
  // yaml-cpp 0.7 can loop forever on some malformed input, returning empty documents that
  // all start at the same place. Two documents starting at one position means no progress.
  bool stuck() const { return documents_ >= 2 && start_ == previous_start_; }
  int64_t documents() const { return documents_; }
  // The line of the innermost collection still open, or 0.
  int open_line() const { return stack_.empty() ? 0 : stack_.back().node.line; }
  // The problem that stopped the current document, if any (empty otherwise).
  const std::string& pending_error() const { return doc_.error; }
  int pending_error_line() const { return doc_.error_line; }

  void OnDocumentStart(const YAML::Mark& mark) override {
    ++documents_;
    previous_start_ = start_;
    start_ = mark.pos;
    doc_ = YamlDocument();
    doc_.line = Line(mark);
    arena_ = std::make_shared<YamlArena>();
    Reset();
    have_root_ = false;
  }

  void OnDocumentEnd() override {
    if (block_line_ > 0) Fail(block_line_, NotJson("indented (block) YAML follows the JSON"));
    block_line_ = 0;
    if (doc_.error.empty() && !have_root_) doc_.root.line = doc_.line;
    if (doc_.error.empty()) doc_.line = doc_.root.line;
    Reset();
    doc_.arena = std::move(arena_);
    on_document_(std::move(doc_));
    doc_ = YamlDocument();
  }

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (failed()) return;
    YamlNode node;
    node.line = Line(mark);
    // yaml-cpp reports the plain scalar `null` here too (not through OnScalar), the same event
    // as a value left out (`{"a": }`); only the text tells them apart. JSON's null is the
    // null node YAML's `null` is. yaml-cpp also reports empty documents around stray
    // characters: leave those to it.
    if (json_ && !stack_.empty() && !IsJsonNullAt(mark)) {
      return FailJson(node.line, "a value is missing");
    }
    Add(node, anchor, 0);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (failed()) return;
    const int line = Line(mark);
    if (json_) return FailJson(line, "aliases (*) are YAML, not JSON");
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) {
      Fail(line, "an alias refers to the node that contains it (a cycle)");
      return;
    }
    const Anchored& target = it->second;
    if (static_cast<int>(stack_.size()) + target.height >= kMaxYamlDepth) {
      Fail(line, absl::StrCat("nested more than ", kMaxYamlDepth, " levels deep (with aliases)"));
      return;
    }
    // The tree shares the node; whoever walks it walks every copy.
    budget_->nodes += target.size;
    budget_->bytes += target.bytes;
    if (budget_->nodes > kMaxAliasNodes || budget_->bytes > kMaxAliasBytes) {
      Fail(line, absl::StrCat("aliases repeat more than ", kMaxAliasNodes, " nodes or ",
                              kMaxAliasBytes >> 20, " MiB of text in this input"));
      return;
    }
    Add(target.node, 0, target.height, target.size, target.bytes);
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    if (failed()) return;
    YamlNode node;
    node.type = YamlNode::Type::kScalar;
    node.line = Line(mark);
    if (tag == "?") {
      node.style = json_ ? YamlNode::Style::kJson : YamlNode::Style::kPlain;
    } else if (tag == "!") {
      node.style = YamlNode::Style::kQuoted;
    } else {
      node.style = YamlNode::Style::kTagged;
      node.tag_ = arena_->CopyText(tag);
    }
    if (json_) {
      if (anchor != 0) return FailJson(node.line, "anchors (&) are YAML, not JSON");
      if (node.style == YamlNode::Style::kTagged) {
        return FailJson(node.line, "tags (!) are YAML, not JSON");
      }
      if (node.style == YamlNode::Style::kQuoted && mark.pos >= 0 &&
          static_cast<size_t>(mark.pos) < text_.size() && text_[mark.pos] != '"') {
        return FailJson(node.line, "a string must be in double quotes");
      }
      if (node.style == YamlNode::Style::kJson && !IsJsonLiteral(value)) {
        return FailJson(node.line, absl::StrCat("`", value,
                                                "` is not a JSON value (a string must be in "
                                                "double quotes)"));
      }
    }
    if (node.style != YamlNode::Style::kPlain && node.style != YamlNode::Style::kJson &&
        mark.pos >= 0 && !QuoteIsClosed(text_, static_cast<size_t>(mark.pos))) {
      Fail(node.line, "a quoted string is not closed: the closing quote is missing");
      return;
    }
    node.value_ = arena_->CopyText(value);
    node.value_size_ = static_cast<uint32_t>(value.size());
    Add(node, anchor, 0, 1, static_cast<int64_t>(value.size() + node.tag().size()));
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value style) override {
    Open(mark, YamlNode::Type::kSequence, tag, anchor, style);
  }
  void OnSequenceEnd() override { Close(); }

  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value style) override {
    Open(mark, YamlNode::Type::kMapping, tag, anchor, style);
  }
  void OnMapEnd() override { Close(); }

 private:
  struct Frame {
    YamlNode node;
    YAML::anchor_t anchor = 0;
    size_t first_child = 0;  // index in pending_
    int height = 0;          // levels below this node
    int64_t size = 1;        // nodes in this subtree, as walked (aliases counted in full)
    int64_t bytes = 0;       // scalar text in this subtree, as walked
  };
  struct Anchored {
    YamlNode node;
    int height = 0;
    int64_t size = 1;
    int64_t bytes = 0;
  };

  bool failed() const { return !doc_.error.empty(); }

  // The literal `null` at `mark` (yaml-cpp's null event for a plain scalar: `null`, `Null`,
  // `NULL`, `~` or nothing; only the first is JSON).
  bool IsJsonNullAt(const YAML::Mark& mark) const {
    return mark.pos >= 0 && text_.substr(static_cast<size_t>(mark.pos), 4) == "null";
  }

  void Reset() {
    stack_.clear();
    pending_.clear();
    anchors_.clear();
  }

  int Line(const YAML::Mark& mark) {
    if (!mark.is_null() && mark.line >= 0) last_line_ = mark.line + 1;
    return last_line_;
  }

  void Fail(int line, std::string message) {
    if (failed()) return;
    doc_.error = std::move(message);
    doc_.error_line = line;
    Reset();
  }

  // A JSON text ends at its first problem.
  void FailJson(int line, absl::string_view what) {
    Fail(line, NotJson(what));
    throw StopParsing();
  }

  void Open(const YAML::Mark& mark, YamlNode::Type type, const std::string& tag,
            YAML::anchor_t anchor, YAML::EmitterStyle::value style) {
    if (failed()) return;
    const int line = Line(mark);
    if (static_cast<int>(stack_.size()) + 1 >= kMaxYamlDepth) {
      Fail(line, absl::StrCat("nested more than ", kMaxYamlDepth, " levels deep"));
      throw StopParsing();  // caught in ParseYamlDocuments; yaml-cpp unwinds cleanly (RAII)
    }
    if (json_) {
      if (anchor != 0) return FailJson(line, "anchors (&) are YAML, not JSON");
      if (tag != "?" && !tag.empty()) return FailJson(line, "tags (!) are YAML, not JSON");
      // A document of indented YAML after the JSON. (Inside a flow collection yaml-cpp can
      // report block style while it recovers from an error it then reports itself.)
      // Reported when the document ends: when the text is broken JSON rather than YAML,
      // yaml-cpp's own error, which comes first, says more.
      if (style == YAML::EmitterStyle::Block && stack_.empty()) block_line_ = line;
    }
    // A tag on a collection is ignored: go-yaml v2's parser keeps none on collection nodes.
    Frame frame;
    frame.node.type = type;
    frame.node.line = line;
    frame.anchor = anchor;
    frame.first_child = pending_.size();
    stack_.push_back(frame);
  }

  void Close() {
    if (failed() || stack_.empty()) return;
    Frame frame = stack_.back();
    stack_.pop_back();
    const size_t count = pending_.size() - frame.first_child;
    YamlNode* children = arena_->AllocateNodes(count);
    std::copy(pending_.begin() + frame.first_child, pending_.end(), children);
    pending_.resize(frame.first_child);
    frame.node.children_ = children;
    frame.node.child_count_ = static_cast<uint32_t>(count);
    if (frame.node.is_mapping()) {
      for (size_t i = 0; i < frame.node.mapping_size(); ++i) {
        if (!IsMergeKey(frame.node.map_key(i))) continue;
        const YamlNode& merged = frame.node.map_value(i);
        bool ok = merged.is_mapping() || merged.is_sequence();
        for (const YamlNode& item : merged.is_sequence() ? merged.children()
                                                         : absl::Span<const YamlNode>()) {
          ok = ok && item.is_mapping();
        }
        if (!ok) {
          // go-yaml fails the whole document, wherever the mapping is.
          Fail(merged.line, "map merge requires map or sequence of maps as the value");
          return;
        }
      }
    }
    Add(frame.node, frame.anchor, frame.height, frame.size, frame.bytes);
  }

  void Add(const YamlNode& node, YAML::anchor_t anchor, int height, int64_t size = 1,
           int64_t bytes = 0) {
    if (anchor != 0) anchors_[anchor] = Anchored{node, height, size, bytes};
    if (stack_.empty()) {
      doc_.root = node;
      have_root_ = true;
      return;
    }
    Frame& parent = stack_.back();
    if (json_ && parent.node.is_mapping() && (pending_.size() - parent.first_child) % 2 == 0 &&
        node.style != YamlNode::Style::kQuoted) {
      return FailJson(node.line, "an object key must be a string in double quotes");
    }
    if (pending_.size() - parent.first_child >= UINT32_MAX) {
      Fail(node.line, "a collection with more than 4294967294 entries");
      return;
    }
    pending_.push_back(node);
    parent.height = std::max(parent.height, height + 1);
    parent.size += size;
    parent.bytes += bytes;
  }

  absl::string_view text_;
  const bool json_;
  const std::function<void(YamlDocument&&)>& on_document_;
  AliasBudget* budget_;
  YamlDocument doc_;
  std::shared_ptr<YamlArena> arena_ = std::make_shared<YamlArena>();
  std::vector<Frame> stack_;
  // A deque grows without moving what it holds: no peak of twice the list while it grows.
  std::deque<YamlNode> pending_;
  absl::flat_hash_map<YAML::anchor_t, Anchored> anchors_;
  bool have_root_ = false;
  int block_line_ = 0;  // JSON text: where a document of block YAML starts
  int64_t documents_ = 0;
  int start_ = -1, previous_start_ = -1;
  int last_line_ = 1;
};

// Reads a JSON text straight into the tree, the tree the yaml-cpp path builds for it (see
// JsonPath in the header): strings are kQuoted scalars, numbers, true and false kJson
// scalars with their text, null a kNull node, each node on the line of its first character.
// It takes only what it is sure yaml-cpp reads that way and declines everything else (Read
// returns false, having handed nothing over), so the yaml-cpp path sees every text that is
// not plain JSON and reports its errors as it always did. Declined although JSON: tabs and
// carriage returns outside strings (but CR LF), a line break between a key and its colon,
// keys longer than yaml-cpp's 1024-character simple keys, \u escapes of surrogates (yaml-cpp
// refuses them) and nesting at kMaxYamlDepth.
class JsonReader {
 public:
  explicit JsonReader(absl::string_view text) : text_(text) {}

  bool Read(YamlDocument* doc) {
    arena_ = std::make_shared<YamlArena>();
    SkipBlank();
    YamlNode root;
    if (!Value(0, &root)) return false;
    SkipBlank();
    if (pos_ != text_.size()) return false;  // more after the object: yaml-cpp's business
    doc->root = root;
    doc->line = root.line;
    doc->arena = std::move(arena_);
    return true;
  }

 private:
  static constexpr size_t kMaxKeySize = 1024;  // yaml-cpp's simple keys end there

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return text_[pos_]; }

  // Spaces and line breaks between tokens; a tab or a lone CR stops it (and the reader).
  void SkipBlank() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == ' ') {
        ++pos_;
      } else if (c == '\n') {
        ++pos_;
        ++line_;
      } else if (c == '\r' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '\n') {
        pos_ += 2;
        ++line_;
      } else {
        return;
      }
    }
  }

  // Spaces only (a key and its colon stay on one line, as YAML's simple keys must).
  void SkipSpaces() {
    while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
  }

  // One value at `depth` collections deep, into `node`.
  bool Value(int depth, YamlNode* node) {
    if (AtEnd()) return false;
    *node = YamlNode();
    node->line = line_;
    const char c = Peek();
    if (c == '{' || c == '[') return Collection(depth, node);
    if (c == '"') {
      node->type = YamlNode::Type::kScalar;
      node->style = YamlNode::Style::kQuoted;
      return String(node);
    }
    const size_t start = pos_;
    while (pos_ < text_.size() && (absl::ascii_isalnum(text_[pos_]) || text_[pos_] == '-' ||
                                   text_[pos_] == '+' || text_[pos_] == '.')) {
      ++pos_;
    }
    const absl::string_view literal = text_.substr(start, pos_ - start);
    if (literal == "null") return true;  // the kNull node yaml-cpp's null event makes
    if (!IsJsonLiteral(literal)) return false;
    node->type = YamlNode::Type::kScalar;
    node->style = YamlNode::Style::kJson;
    node->value_ = arena_->CopyText(literal);
    node->value_size_ = static_cast<uint32_t>(literal.size());
    return true;
  }

  bool Collection(int depth, YamlNode* node) {
    // The yaml-cpp path refuses a collection with kMaxYamlDepth - 1 open around it.
    if (depth + 1 >= kMaxYamlDepth) return false;
    const bool mapping = Peek() == '{';
    const char close = mapping ? '}' : ']';
    node->type = mapping ? YamlNode::Type::kMapping : YamlNode::Type::kSequence;
    ++pos_;
    const size_t first = pending_.size();
    SkipBlank();
    if (!AtEnd() && Peek() == close) {
      ++pos_;
    } else {
      while (true) {
        YamlNode item;
        if (mapping) {
          if (AtEnd() || Peek() != '"') return false;
          const size_t key_start = pos_;
          item.type = YamlNode::Type::kScalar;
          item.style = YamlNode::Style::kQuoted;
          item.line = line_;
          if (!String(&item) || pos_ - key_start > kMaxKeySize) return false;
          pending_.push_back(item);
          SkipSpaces();
          if (AtEnd() || Peek() != ':') return false;
          ++pos_;
          SkipBlank();
        }
        if (!Value(depth + 1, &item)) return false;
        pending_.push_back(item);
        SkipBlank();
        if (AtEnd()) return false;
        if (Peek() == close) {
          ++pos_;
          break;
        }
        if (Peek() != ',') return false;
        ++pos_;
        SkipBlank();
      }
    }
    const size_t count = pending_.size() - first;
    YamlNode* children = arena_->AllocateNodes(count);
    std::copy(pending_.begin() + first, pending_.end(), children);
    pending_.resize(first);
    node->children_ = children;
    node->child_count_ = static_cast<uint32_t>(count);
    return true;
  }

  // A string at pos_ (its opening quote), unescaped into the arena.
  bool String(YamlNode* node) {
    ++pos_;
    const size_t start = pos_;
    // Most strings have no escape: copied as they are.
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '"' || c == '\\' || c == '\t' || c == '\n' || c == '\r') break;
      ++pos_;
    }
    if (AtEnd()) return false;
    if (Peek() == '"') {
      const absl::string_view value = text_.substr(start, pos_ - start);
      ++pos_;
      node->value_ = arena_->CopyText(value);
      node->value_size_ = static_cast<uint32_t>(value.size());
      return true;
    }
    std::string value(text_.substr(start, pos_ - start));
    while (true) {
      if (AtEnd()) return false;
      const char c = text_[pos_];
      if (c == '"') break;
      if (c == '\t' || c == '\n' || c == '\r') return false;  // yaml-cpp folds these
      if (c != '\\') {
        value.push_back(c);
        ++pos_;
        continue;
      }
      if (pos_ + 1 >= text_.size()) return false;
      const char e = text_[pos_ + 1];
      pos_ += 2;
      switch (e) {
        case '"':
          value.push_back('"');
          break;
        case '\\':
          value.push_back('\\');
          break;
        case '/':
          value.push_back('/');
          break;
        case 'b':
          value.push_back('\b');
          break;
        case 'f':
          value.push_back('\f');
          break;
        case 'n':
          value.push_back('\n');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          for (int k = 0; k < 4; ++k) {
            if (AtEnd()) return false;
            const char h = absl::ascii_tolower(Peek());
            if (h >= '0' && h <= '9') {
              cp = cp * 16 + static_cast<uint32_t>(h - '0');
            } else if (h >= 'a' && h <= 'f') {
              cp = cp * 16 + static_cast<uint32_t>(h - 'a' + 10);
            } else {
              return false;
            }
            ++pos_;
          }
          if (cp >= 0xD800 && cp <= 0xDFFF) return false;
          AppendUtf8(cp, &value);
          break;
        }
        default:
          return false;  // YAML's own escapes (\x41, \N, ...) are not JSON
      }
    }
    ++pos_;
    node->value_ = arena_->CopyText(value);
    node->value_size_ = static_cast<uint32_t>(value.size());
    return true;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  absl::string_view text_;
  size_t pos_ = 0;
  int line_ = 1;
  std::shared_ptr<YamlArena> arena_;
  // Children of the collections still open, one after the other (as TreeBuilder keeps them).
  std::vector<YamlNode> pending_;
};

namespace {

// True when line `line` (1-based) of `text` has a tab in its leading whitespace.
bool TabInIndentation(absl::string_view text, int line) {
  int current = 1;
  size_t i = 0;
  while (i < text.size() && current < line) {
    if (text[i++] == '\n') ++current;
  }
  for (; i < text.size() && (text[i] == ' ' || text[i] == '\t'); ++i) {
    if (text[i] == '\t') return true;
  }
  return false;
}

// Go's strconv.ParseInt(s, 0, 64) / ParseUint(s, 0, 64) on text without underscores.
// Returns false when `s` is not an integer in that syntax or does not fit 64 bits (then
// `overflow` tells which).
bool ParseGoInteger(absl::string_view s, bool* negative, uint64_t* magnitude, bool* overflow) {
  *negative = false;
  *overflow = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    *negative = s[0] == '-';
    s.remove_prefix(1);
  }
  int base = 10;
  if (s.size() >= 2 && s[0] == '0') {
    char p = absl::ascii_tolower(s[1]);
    if (p == 'x') base = 16, s.remove_prefix(2);
    else if (p == 'o') base = 8, s.remove_prefix(2);
    else if (p == 'b') base = 2, s.remove_prefix(2);
    else base = 8, s.remove_prefix(1);
  }
  if (s.empty()) return false;
  uint64_t value = 0;
  for (char c : s) {
    int digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else return false;
    if (digit >= base) return false;
    if (value > (UINT64_MAX - digit) / base) *overflow = true;
    if (*overflow) continue;  // keep checking the syntax
    value = value * base + digit;
  }
  *magnitude = value;
  return !*overflow;
}

// go-yaml v2's yamlStyleFloat: ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$
bool IsYamlStyleFloat(absl::string_view s) {
  size_t i = 0;
  auto digits = [&] {
    size_t start = i;
    while (i < s.size() && absl::ascii_isdigit(s[i])) ++i;
    return i > start;
  };
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  } else {
    if (!digits()) return false;
    if (i < s.size() && s[i] == '.') {
      ++i;
      digits();
    }
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

void SetFloat(double f, ResolvedScalar* r) {
  r->type = ResolvedScalar::Type::kFloat;
  r->float_value = f;
  // Go prints such a float without exponent or fraction in JSON, so it decodes as an integer.
  if (std::isfinite(f) && f == std::trunc(f) && std::fabs(f) < 1e21) {
    r->integral = true;
    if (std::fabs(f) < 9.2e18) {
      r->int_fits = true;
      r->int_value = static_cast<int64_t>(f);
    }
  }
}

ResolvedScalar ResolvePlain(absl::string_view s) {
  ResolvedScalar r;
  static const auto* const kTrue =
      new std::vector<std::string>{"y", "Y", "yes", "Yes", "YES", "on", "On", "ON",
                                   "true", "True", "TRUE"};
  static const auto* const kFalse =
      new std::vector<std::string>{"n", "N", "no", "No", "NO", "off", "Off", "OFF",
                                   "false", "False", "FALSE"};
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") {
    r.type = ResolvedScalar::Type::kNull;
    return r;
  }
  for (const auto& t : *kTrue) {
    if (s == t) {
      r.type = ResolvedScalar::Type::kBool;
      r.bool_value = true;
      return r;
    }
  }
  for (const auto& t : *kFalse) {
    if (s == t) {
      r.type = ResolvedScalar::Type::kBool;
      return r;
    }
  }
  if (s == ".inf" || s == ".Inf" || s == ".INF" || s == "+.inf" || s == "+.Inf" ||
      s == "+.INF") {
    SetFloat(HUGE_VAL, &r);
    return r;
  }
  if (s == "-.inf" || s == "-.Inf" || s == "-.INF") {
    SetFloat(-HUGE_VAL, &r);
    return r;
  }
  if (s == ".nan" || s == ".NaN" || s == ".NAN") {
    SetFloat(std::nan(""), &r);
    return r;
  }
  const char first = s[0];
  if (first == '+' || first == '-' || first == '.' || absl::ascii_isdigit(first)) {
    const std::string plain = absl::StrReplaceAll(s, {{"_", ""}});
    bool negative = false, overflow = false;
    uint64_t magnitude = 0;
    if (ParseGoInteger(plain, &negative, &magnitude, &overflow)) {
      const uint64_t kInt64Max = static_cast<uint64_t>(INT64_MAX);
      if (!negative && magnitude <= kInt64Max) {
        r.type = ResolvedScalar::Type::kInt;
        r.int_fits = true;
        r.int_value = static_cast<int64_t>(magnitude);
        return r;
      }
      if (negative && magnitude <= kInt64Max + 1) {
        r.type = ResolvedScalar::Type::kInt;
        r.int_fits = true;
        r.int_value = magnitude == kInt64Max + 1 ? INT64_MIN : -static_cast<int64_t>(magnitude);
        return r;
      }
      if (!negative && plain[0] != '+') {  // ParseUint takes no sign
        r.type = ResolvedScalar::Type::kInt;
        r.int_fits = false;
        r.string_value = plain;
        return r;
      }
    }
    if (IsYamlStyleFloat(plain)) {
      double f = 0;
      // Go's ParseFloat fails on overflow, and go-yaml then keeps the text as a string.
      if (absl::SimpleAtod(plain, &f) && std::isfinite(f)) {
        SetFloat(f, &r);
        r.int_overflow = overflow;
        return r;
      }
    }
  }
  r.type = ResolvedScalar::Type::kString;
  r.string_value = std::string(s);
  return r;
}

// JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
bool IsJsonNumber(absl::string_view s, bool* integer) {
  size_t i = 0;
  auto digits = [&] {
    const size_t start = i;
    while (i < s.size() && absl::ascii_isdigit(s[i])) ++i;
    return i - start;
  };
  if (i < s.size() && s[i] == '-') ++i;
  if (i < s.size() && s[i] == '0') {
    ++i;
  } else if (digits() == 0) {
    return false;
  }
  *integer = true;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (digits() == 0) return false;
    *integer = false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (digits() == 0) return false;
    *integer = false;
  }
  return i == s.size();
}

// An unquoted JSON value as Kubernetes decodes JSON into its objects (apimachinery's JSON
// reading: an integer that fits int64 stays one, any other number is a float64, and a number
// a float64 cannot hold fails the decoding).
ResolvedScalar ResolveJson(absl::string_view s) {
  ResolvedScalar r;
  if (s == "null") return r;
  if (s == "true" || s == "false") {
    r.type = ResolvedScalar::Type::kBool;
    r.bool_value = s == "true";
    return r;
  }
  bool integer = false;
  if (!IsJsonNumber(s, &integer)) {  // the tree builder refuses these already
    r.type = ResolvedScalar::Type::kError;
    r.string_value = NotJson(absl::StrCat("`", s, "` is not a JSON value"));
    return r;
  }
  int64_t n = 0;
  if (integer && absl::SimpleAtoi(s, &n)) {
    r.type = ResolvedScalar::Type::kInt;
    r.int_fits = true;
    r.int_value = n;
    return r;
  }
  double f = 0;
  if (!absl::SimpleAtod(s, &f) || !std::isfinite(f)) {
    r.type = ResolvedScalar::Type::kError;
    r.string_value = absl::StrCat("the number ", s,
                                  " is out of range: Go's JSON decoding cannot hold it in a "
                                  "float64 (strconv.ParseFloat: value out of range)");
    return r;
  }
  SetFloat(f, &r);
  return r;
}

// For each kind of scalar: go-yaml v2's shortTag (its messages' name for it) and ours.
struct ScalarTypeNames {
  const char* short_tag;
  const char* described;
};
ScalarTypeNames NamesOf(ResolvedScalar::Type type) {
  switch (type) {
    case ResolvedScalar::Type::kNull:
      return {"!!null", "null"};
    case ResolvedScalar::Type::kBool:
      return {"!!bool", "a boolean"};
    case ResolvedScalar::Type::kInt:
      return {"!!int", "an integer"};
    case ResolvedScalar::Type::kFloat:
      return {"!!float", "a number"};
    case ResolvedScalar::Type::kString:
      return {"!!str", "a string"};
    case ResolvedScalar::Type::kError:
      return {"!!str", "an invalid value"};
  }
  return {"!!str", "a value"};
}

}  // namespace

const char* DescribeYamlType(const YamlNode& node) {
  switch (node.type) {
    case YamlNode::Type::kNull:
      return "null";
    case YamlNode::Type::kSequence:
      return "a list";
    case YamlNode::Type::kMapping:
      return "an object";
    case YamlNode::Type::kScalar:
      break;
  }
  return NamesOf(ResolveScalar(node).type).described;
}

ResolvedScalar ResolveScalar(const YamlNode& node) {
  ResolvedScalar r;
  if (node.is_null()) return r;
  if (!node.is_scalar()) {
    r.type = ResolvedScalar::Type::kError;
    r.string_value = absl::StrCat("expected a scalar, got ", DescribeYamlType(node));
    return r;
  }
  switch (node.style) {
    case YamlNode::Style::kPlain:
      return ResolvePlain(node.value());
    case YamlNode::Style::kJson:
      return ResolveJson(node.value());
    case YamlNode::Style::kQuoted:
      r.type = ResolvedScalar::Type::kString;
      r.string_value = std::string(node.value());
      return r;
    case YamlNode::Style::kTagged:
      break;
  }
  // Explicit tags, as go-yaml v2's resolve() reads them: the tags it resolves (str, int,
  // float, bool, null, timestamp) force the type or fail; !!binary decodes base64; any other
  // tag leaves the text as it is, a string.
  const absl::string_view tag = node.tag();
  const absl::string_view name =
      absl::StartsWith(tag, kTagPrefix) ? tag.substr(kTagPrefix.size()) : absl::string_view();
  if (name == "binary") {
    std::string bytes;
    if (!absl::Base64Unescape(node.value(), &bytes)) {
      r.type = ResolvedScalar::Type::kError;
      r.string_value = "!!binary value contains invalid base64 data";
      return r;
    }
    r.type = ResolvedScalar::Type::kString;
    r.string_value = std::move(bytes);
    return r;
  }
  if (name != "int" && name != "float" && name != "bool" && name != "null") {
    // !!str, !!timestamp (kept as text), !!map or !!seq on a scalar, local tags.
    r.type = ResolvedScalar::Type::kString;
    r.string_value = std::string(node.value());
    return r;
  }
  ResolvedScalar plain = ResolvePlain(node.value());
  auto mismatch = [&] {
    ResolvedScalar e;
    e.type = ResolvedScalar::Type::kError;
    e.string_value =
        absl::StrCat("cannot decode ", NamesOf(plain.type).short_tag, " `", node.value(),
                     "` as a !!", name);
    return e;
  };
  if (name == "int") {
    return plain.type == ResolvedScalar::Type::kInt ? plain : mismatch();
  }
  if (name == "float") {
    if (plain.type == ResolvedScalar::Type::kFloat) return plain;
    if (plain.type == ResolvedScalar::Type::kInt && plain.int_fits) {
      ResolvedScalar f;
      SetFloat(static_cast<double>(plain.int_value), &f);
      return f;
    }
    return mismatch();
  }
  if (name == "bool") {
    return plain.type == ResolvedScalar::Type::kBool ? plain : mismatch();
  }
  return plain.type == ResolvedScalar::Type::kNull ? plain : mismatch();
}

bool ReadJsonDirectly(absl::string_view text, YamlDocument* doc) {
  return JsonReader(text).Read(doc);
}

bool ParseYamlDocuments(absl::string_view text,
                        const std::function<void(YamlDocument&&)>& on_document, AliasBudget* budget,
                        YamlError* error, JsonPath json_path) {
  *error = YamlError();
  if (text.size() > kMaxYamlTextSize) {
    error->message = absl::StrCat("the input is larger than ", kMaxYamlTextSize, " bytes");
    return false;
  }
  // A UTF-8 byte-order mark is allowed at the start; yaml-cpp's positions count from after it.
  if (absl::StartsWith(text, "\xEF\xBB\xBF")) text.remove_prefix(3);
  if (!CheckEncoding(text, error)) return false;

  // kubectl's YAMLOrJSONDecoder reads the stream as JSON when it starts with `{`.
  const absl::string_view start = absl::StripLeadingAsciiWhitespace(text);
  const bool json = !start.empty() && start[0] == '{';
  if (json && json_path == JsonPath::kDirect) {
    YamlDocument doc;
    if (ReadJsonDirectly(text, &doc)) {
      on_document(std::move(doc));
      return true;
    }
  }
  TreeBuilder builder(text, json, on_document, budget);
  try {
    TextBuffer buffer(text);
    std::istream stream(&buffer);
    YAML::Parser parser(stream);
    while (parser.HandleNextDocument(builder)) {
      // Each document consumes input, so there cannot be more of them than bytes.
      if (builder.stuck() || builder.documents() > static_cast<int64_t>(text.size()) + 1) {
        error->line = builder.last_line();
        error->message =
            "malformed YAML: the parser cannot go on from here (stray characters after the end "
            "of a document?)";
        return false;
      }
    }
    return true;
  } catch (const StopParsing&) {
    // The builder's pending error says what and where; see below.
  } catch (const YAML::DeepRecursion& e) {
    error->line = builder.last_line();
    error->message = "nested too deeply (the YAML parser stops at 500 levels)";
  } catch (const YAML::Exception& e) {
    error->line = e.mark.is_null() || e.mark.line < 0 ? builder.last_line() : e.mark.line + 1;
    error->message = e.msg.empty() ? std::string("malformed YAML") : e.msg;
    if (absl::StrContains(e.msg, "flow not found") && builder.open_line() > 0) {
      // "end of map flow not found" is noticed at the end of the input; the useful line is
      // the one with the unclosed bracket.
      error->line = builder.open_line();
      absl::StrAppend(&error->message, " (a { or [ opened here is never closed)");
    }
    if (TabInIndentation(text, error->line)) {
      absl::StrAppend(&error->message, " (tabs are not allowed for indentation in YAML)");
    }
  } catch (const std::bad_alloc&) {
    throw;  // out of memory is not a syntax error; the loader's entry points report it
  } catch (const std::exception& e) {
    error->line = builder.last_line();
    error->message = absl::StrCat("cannot parse: ", e.what());
  } catch (...) {
    error->line = builder.last_line();
    error->message = "cannot parse";
  }
  // A problem the builder found first (an unclosed quote, our depth bound below yaml-cpp's)
  // is the precise one.
  if (!builder.pending_error().empty()) {
    error->message = builder.pending_error();
    error->line = builder.pending_error_line();
  }
  return false;
}

}  // namespace np::internal
