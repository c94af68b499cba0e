#include "np/internal/yaml_tree.h"

#include <cmath>
#include <exception>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
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

// Thrown by the builder to stop yaml-cpp's recursive descent as soon as the nesting passes
// kMaxYamlDepth (yaml-cpp itself would go on to 500 levels, which needs twice the stack).
struct TooDeep {};

// Builds YamlNodes from yaml-cpp's events. A problem marks the document as failed and the
// rest of its events are ignored; only nesting past kMaxYamlDepth throws (TooDeep), to stop
// yaml-cpp's recursion early.
class TreeBuilder : public YAML::EventHandler {
 public:
  TreeBuilder(absl::string_view text, const std::function<void(YamlDocument&&)>& on_document)
      : text_(text), on_document_(on_document) {}

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
    stack_.clear();
    anchors_.clear();
    alias_nodes_ = 0;
    have_root_ = false;
  }

  void OnDocumentEnd() override {
    if (doc_.error.empty() && !have_root_) doc_.root.line = doc_.line;
    if (doc_.error.empty()) doc_.line = doc_.root.line;
    stack_.clear();
    anchors_.clear();
    on_document_(std::move(doc_));
    doc_ = YamlDocument();
  }

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (failed()) return;
    YamlNode node;
    node.line = Line(mark);
    Add(std::move(node), anchor, 0);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (failed()) return;
    const int line = Line(mark);
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
    alias_nodes_ += target.size;
    if (alias_nodes_ > kMaxAliasNodes) {
      Fail(line, absl::StrCat("anchors and aliases copy more than ", kMaxAliasNodes,
                              " nodes in one document"));
      return;
    }
    YamlNode copy = target.node;  // recursion bounded by kMaxYamlDepth
    Add(std::move(copy), 0, target.height, target.size);
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    if (failed()) return;
    YamlNode node;
    node.type = YamlNode::Type::kScalar;
    node.line = Line(mark);
    if (tag == "?") {
      node.style = YamlNode::Style::kPlain;
    } else if (tag == "!") {
      node.style = YamlNode::Style::kQuoted;
    } else {
      node.style = YamlNode::Style::kTagged;
      node.tag = tag;
    }
    if (node.style != YamlNode::Style::kPlain && mark.pos >= 0 &&
        !QuoteIsClosed(text_, static_cast<size_t>(mark.pos))) {
      Fail(node.line, "a quoted string is not closed: the closing quote is missing");
      return;
    }
    node.value = value;
    Add(std::move(node), anchor, 0);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string& /*tag*/,
                       YAML::anchor_t anchor, YAML::EmitterStyle::value /*style*/) override {
    Open(mark, YamlNode::Type::kSequence, anchor);
  }
  void OnSequenceEnd() override { Close(); }

  void OnMapStart(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value /*style*/) override {
    Open(mark, YamlNode::Type::kMapping, anchor);
  }
  void OnMapEnd() override { Close(); }

 private:
  struct Frame {
    YamlNode node;
    YAML::anchor_t anchor = 0;
    int height = 0;    // levels below this node
    int64_t size = 1;  // nodes in this subtree
  };
  struct Anchored {
    YamlNode node;
    int height = 0;
    int64_t size = 1;
  };

  bool failed() const { return !doc_.error.empty(); }

  int Line(const YAML::Mark& mark) {
    if (!mark.is_null() && mark.line >= 0) last_line_ = mark.line + 1;
    return last_line_;
  }

  void Fail(int line, std::string message) {
    if (failed()) return;
    doc_.error = std::move(message);
    doc_.error_line = line;
    stack_.clear();
    anchors_.clear();
  }

  void Open(const YAML::Mark& mark, YamlNode::Type type, YAML::anchor_t anchor) {
    if (failed()) return;
    const int line = Line(mark);
    if (static_cast<int>(stack_.size()) + 1 >= kMaxYamlDepth) {
      Fail(line, absl::StrCat("nested more than ", kMaxYamlDepth, " levels deep"));
      throw TooDeep();  // caught in ParseYamlDocuments; yaml-cpp unwinds cleanly (RAII)
    }
    Frame frame;
    frame.node.type = type;
    frame.node.line = line;
    frame.anchor = anchor;
    stack_.push_back(std::move(frame));
  }

  void Close() {
    if (failed() || stack_.empty()) return;
    Frame frame = std::move(stack_.back());
    stack_.pop_back();
    Add(std::move(frame.node), frame.anchor, frame.height, frame.size);
  }

  void Add(YamlNode&& node, YAML::anchor_t anchor, int height, int64_t size = 1) {
    if (anchor != 0) {
      // Anchored nodes are kept as copies for their aliases; the copies count too.
      alias_nodes_ += size;
      if (alias_nodes_ > kMaxAliasNodes) {
        Fail(node.line, absl::StrCat("anchors and aliases copy more than ", kMaxAliasNodes,
                                     " nodes in one document"));
        return;
      }
      anchors_[anchor] = Anchored{node, height, size};
    }
    if (stack_.empty()) {
      doc_.root = std::move(node);
      have_root_ = true;
      return;
    }
    Frame& parent = stack_.back();
    parent.node.children.push_back(std::move(node));
    parent.height = std::max(parent.height, height + 1);
    parent.size += size;
  }

  absl::string_view text_;
  const std::function<void(YamlDocument&&)>& on_document_;
  YamlDocument doc_;
  std::vector<Frame> stack_;
  std::map<YAML::anchor_t, Anchored> anchors_;
  int64_t alias_nodes_ = 0;
  bool have_root_ = false;
  int64_t documents_ = 0;
  int start_ = -1, previous_start_ = -1;
  int last_line_ = 1;
};

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

ResolvedScalar ResolvePlain(const std::string& s) {
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
  r.string_value = s;
  return r;
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
  ResolvedScalar r = ResolveScalar(node);
  switch (r.type) {
    case ResolvedScalar::Type::kNull:
      return "null";
    case ResolvedScalar::Type::kBool:
      return "a boolean";
    case ResolvedScalar::Type::kInt:
      return "an integer";
    case ResolvedScalar::Type::kFloat:
      return "a number";
    case ResolvedScalar::Type::kString:
      return "a string";
    case ResolvedScalar::Type::kError:
      return "an invalid value";
  }
  return "a value";
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
      return ResolvePlain(node.value);
    case YamlNode::Style::kQuoted:
      r.type = ResolvedScalar::Type::kString;
      r.string_value = node.value;
      return r;
    case YamlNode::Style::kTagged:
      break;
  }
  // Explicit tags, as go-yaml v2 reads them: a standard tag forces the type; other tags leave
  // the text a string.
  const absl::string_view tag = node.tag;
  if (!absl::StartsWith(tag, kTagPrefix)) {
    r.type = ResolvedScalar::Type::kString;
    r.string_value = node.value;
    return r;
  }
  const absl::string_view name = tag.substr(kTagPrefix.size());
  if (name == "str" || name == "timestamp") {
    r.type = ResolvedScalar::Type::kString;
    r.string_value = node.value;
    return r;
  }
  ResolvedScalar plain = ResolvePlain(node.value);
  auto mismatch = [&] {
    ResolvedScalar e;
    e.type = ResolvedScalar::Type::kError;
    e.string_value = absl::StrCat("cannot decode `", node.value, "` as !!", name);
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
  if (name == "null") {
    return plain.type == ResolvedScalar::Type::kNull ? plain : mismatch();
  }
  r.type = ResolvedScalar::Type::kError;
  r.string_value = absl::StrCat("the tag !!", name, " is not supported here");
  return r;
}

bool ParseYamlDocuments(absl::string_view text,
                        const std::function<void(YamlDocument&&)>& on_document,
                        YamlError* error) {
  *error = YamlError();
  if (text.size() > kMaxYamlTextSize) {
    error->message = absl::StrCat("the input is larger than ", kMaxYamlTextSize, " bytes");
    return false;
  }
  // A UTF-8 byte-order mark is allowed at the start; yaml-cpp's positions count from after it.
  if (absl::StartsWith(text, "\xEF\xBB\xBF")) text.remove_prefix(3);
  if (!CheckEncoding(text, error)) return false;

  TreeBuilder builder(text, on_document);
  try {
    std::istringstream stream{std::string(text)};
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
  } catch (const TooDeep&) {
    // The builder's pending error says where; see below.
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
  } catch (const std::exception& e) {
    error->line = builder.last_line();
    error->message = absl::StrCat("cannot parse: ", e.what());
  } catch (...) {
    error->line = builder.last_line();
    error->message = "cannot parse";
  }
  // A problem the builder found first (our depth bound is below yaml-cpp's) is the precise one.
  if (!builder.pending_error().empty()) {
    error->message = builder.pending_error();
    error->line = builder.pending_error_line();
  }
  return false;
}

}  // namespace np::internal
