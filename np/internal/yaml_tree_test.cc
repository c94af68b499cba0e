// The YAML/JSON tree (np/internal/yaml_tree.h) where the loader's tests do not reach it
// directly: JSON's null, and the direct JSON reader against the yaml-cpp path (the oracle):
// the same documents, trees (types, styles, lines, values) and errors, on every file of
// testdata/loader (the loader's fuzz seeds among them), on generated JSON as kubectl and the
// API server write it, and on mutations of it. NP_SEED=<n> replays one random case set.
#include "np/internal/yaml_tree.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "np/loader.h"

namespace np::internal {
namespace {

using ::testing::HasSubstr;

// The documents of `text`, or the stream's error as the only document's error.
std::vector<YamlDocument> Parse(absl::string_view text, JsonPath path = JsonPath::kDirect) {
  std::vector<YamlDocument> docs;
  AliasBudget budget;
  YamlError error;
  if (!ParseYamlDocuments(
          text, [&](YamlDocument&& doc) { docs.push_back(std::move(doc)); }, &budget, &error,
          path)) {
    YamlDocument failed;
    failed.error = error.message;
    failed.error_line = error.line;
    docs.push_back(std::move(failed));
  }
  return docs;
}

// kubectl prints `null` in JSON (a pod condition's lastProbeTime, an object's
// creationTimestamp): a null node, as YAML's null, not a missing value.
TEST(YamlTreeTest, JsonNullIsANullNode) {
  for (JsonPath path : {JsonPath::kDirect, JsonPath::kYamlCpp}) {
    std::vector<YamlDocument> docs = Parse("{\"a\": null,\n \"b\": [null, 1]}", path);
    ASSERT_EQ(docs.size(), 1u);
    ASSERT_EQ(docs[0].error, "");
    const YamlNode& root = docs[0].root;
    ASSERT_TRUE(root.is_mapping());
    ASSERT_EQ(root.mapping_size(), 2u);
    EXPECT_TRUE(root.map_value(0).is_null());
    EXPECT_EQ(root.map_value(0).line, 1);
    ASSERT_TRUE(root.map_value(1).is_sequence());
    EXPECT_TRUE(root.map_value(1).children()[0].is_null());
    EXPECT_EQ(root.map_value(1).children()[0].line, 2);
  }
  // A value left out, and YAML's other spellings of null, stay errors in JSON.
  for (absl::string_view text : {"{\"a\": }", "{\"a\": ~}", "{\"a\": Null}", "{\"a\": [,]}"}) {
    std::vector<YamlDocument> docs = Parse(text);
    ASSERT_EQ(docs.size(), 1u) << text;
    EXPECT_THAT(docs[0].error, HasSubstr("invalid JSON")) << text;
  }
}

// The same through the loader: a pod as kubectl prints it, nulls and all.
TEST(YamlTreeTest, PodWithJsonNulls) {
  absl::StatusOr<Change> change = ParseChangeOfKind(
      R"({"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "a", "namespace": "x", "creationTimestamp": null, "labels": {"app": "w"}},
 "spec": {"nodeName": null, "containers": [{"name": "c", "ports": null}]},
 "status": {"conditions": [{"lastProbeTime": null, "type": "Ready"}], "podIP": "10.0.0.1"}})",
      "pod.json", "");
  ASSERT_TRUE(change.ok()) << change.status();
  const k8s::Pod& pod = std::get<k8s::Pod>(change->object);
  EXPECT_EQ(pod.metadata().name(), "a");
  EXPECT_EQ(pod.status().podip(), "10.0.0.1");
  EXPECT_EQ(pod.spec().nodename(), "");
}

// The first difference between two trees, or "" when they are the same.
std::string Diff(const YamlNode& a, const YamlNode& b, const std::string& path) {
  if (a.type != b.type || a.style != b.style || a.line != b.line) {
    return absl::StrCat(path, ": type/style/line ", static_cast<int>(a.type), "/",
                        static_cast<int>(a.style), "/", a.line, " vs ", static_cast<int>(b.type),
                        "/", static_cast<int>(b.style), "/", b.line);
  }
  if (a.is_scalar()) {
    if (a.value() != b.value() || a.tag() != b.tag()) {
      return absl::StrCat(path, ": value `", a.value(), "` vs `", b.value(), "`");
    }
    return "";
  }
  if (a.children().size() != b.children().size()) {
    return absl::StrCat(path, ": ", a.children().size(), " vs ", b.children().size(), " children");
  }
  for (size_t i = 0; i < a.children().size(); ++i) {
    std::string d = Diff(a.children()[i], b.children()[i], absl::StrCat(path, "/", i));
    if (!d.empty()) return d;
  }
  return "";
}

// ParseYamlDocuments with the direct reader against yaml-cpp alone: "" when they agree.
std::string Differential(absl::string_view text) {
  std::vector<YamlDocument> direct = Parse(text, JsonPath::kDirect);
  std::vector<YamlDocument> oracle = Parse(text, JsonPath::kYamlCpp);
  if (direct.size() != oracle.size()) {
    return absl::StrCat(direct.size(), " vs ", oracle.size(), " documents");
  }
  for (size_t i = 0; i < direct.size(); ++i) {
    if (direct[i].error != oracle[i].error || direct[i].error_line != oracle[i].error_line ||
        direct[i].line != oracle[i].line) {
      return absl::StrCat("document ", i, ": error `", direct[i].error, "` line ",
                          direct[i].error_line, " (doc line ", direct[i].line, ") vs `",
                          oracle[i].error, "` line ", oracle[i].error_line, " (doc line ",
                          oracle[i].line, ")");
    }
    std::string d = Diff(direct[i].root, oracle[i].root, absl::StrCat("document ", i));
    if (!d.empty()) return d;
  }
  return "";
}

// Whether the direct reader took `text` (and the yaml-cpp path read it without error).
bool TakenDirectly(absl::string_view text) {
  YamlDocument doc;
  std::vector<YamlDocument> oracle = Parse(text, JsonPath::kYamlCpp);
  return oracle.size() == 1 && oracle[0].error.empty() && ReadJsonDirectly(text, &doc);
}

std::string TestdataDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && workspace != nullptr) {
    return absl::StrCat(srcdir, "/", workspace, "/testdata/loader");
  }
  return "testdata/loader";
}

TEST(JsonReaderTest, SameAsYamlCppOnTestdata) {
  int files = 0, json_taken = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(TestdataDir())) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    const std::string text = buffer.str();
    ++files;
    EXPECT_EQ(Differential(text), "") << entry.path();
    if (TakenDirectly(text)) ++json_taken;
  }
  EXPECT_GT(files, 30);
  // policy.json, list.json, dir/a-b/y.json: the valid JSON there is read directly.
  EXPECT_GE(json_taken, 3);
}

// Random JSON as kubectl, the API server and people write it, with whitespace in every place
// JSON allows it.
class JsonGenerator {
 public:
  explicit JsonGenerator(uint32_t seed) : rng_(seed) {}

  std::string Document() {
    std::string out;
    Blank(&out);
    Object(0, &out);
    Blank(&out);
    return out;
  }

  std::mt19937& rng() { return rng_; }

 private:
  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  void Blank(std::string* out) {
    static const char* const kBlanks[] = {"",       "",   "",     " ",  "\n",
                                          "\n    ", "  ", "\r\n", "\t", "\n\n"};
    out->append(kBlanks[Pick(10)]);
  }

  void String(std::string* out, bool key) {
    static const char* const kPieces[] = {
        "app",
        "kubernetes.io/name",
        "a b",
        "10.0.0.1",
        "\\\"",
        "\\n",
        "\\/",
        "\\u00e9",
        "\\u20AC",
        "\\u0000",
        "\\ud83d\\ude00",
        "é",
        "€",
        "😀",
        "#",
        ": ",
        "- ",
        "'",
        "\\t",
        "\\b\\f\\r",
        "null",
        "true",
        "123",
        "&a",
        "*a",
        "!t",
        "%",
        "@",
        "`",
        "{}",
        "[,]",
        "---",
        "...",
        "\\x41",
        "\\N",
        " ",
        "\t",
        "\u0085",
        "\u2028",
        "~",
    };
    out->push_back('"');
    const int pieces = key ? 1 + Pick(2) : Pick(4);
    for (int i = 0; i < pieces; ++i) out->append(kPieces[Pick(sizeof(kPieces) / sizeof(*kPieces))]);
    if (key && Pick(50) == 0) out->append(std::string(1000 + Pick(60), 'k'));
    out->push_back('"');
  }

  void Scalar(std::string* out) {
    static const char* const kLiterals[] = {"0",
                                            "1",
                                            "-1",
                                            "80",
                                            "65535",
                                            "2147483648",
                                            "9223372036854775807",
                                            "9223372036854775808",
                                            "-0",
                                            "1.5",
                                            "1e3",
                                            "1E+3",
                                            "2.5e-3",
                                            "80.0",
                                            "1e400",
                                            "true",
                                            "false",
                                            "null",
                                            "-0.0",
                                            "123456789012345678901234567890"};
    if (Pick(3) == 0) {
      String(out, false);
    } else {
      out->append(kLiterals[Pick(sizeof(kLiterals) / sizeof(*kLiterals))]);
    }
  }

  void Value(int depth, std::string* out) {
    const int what = depth > 6 ? 2 : Pick(5);
    if (what == 0) return Object(depth + 1, out);
    if (what == 1) return Array(depth + 1, out);
    Scalar(out);
  }

  void Object(int depth, std::string* out) {
    out->push_back('{');
    const int n = Pick(5);
    for (int i = 0; i < n; ++i) {
      if (i > 0) out->push_back(',');
      Blank(out);
      String(out, true);
      if (Pick(8) == 0) Blank(out);
      out->push_back(':');
      Blank(out);
      Value(depth, out);
      Blank(out);
    }
    out->push_back('}');
  }

  void Array(int depth, std::string* out) {
    out->push_back('[');
    const int n = Pick(4);
    for (int i = 0; i < n; ++i) {
      if (i > 0) out->push_back(',');
      Blank(out);
      Value(depth, out);
      Blank(out);
    }
    out->push_back(']');
  }

  std::mt19937 rng_;
};

// One mutation of `text`: a character deleted, replaced or inserted, from those that matter
// to JSON and YAML.
std::string Mutate(std::string text, std::mt19937& rng) {
  static const char kChars[] = "{}[],:\"\\ \n\t\r#&*!-0e.tfnu'";
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  if (text.empty()) return text;
  const size_t at = pick(text.size());
  const char c = kChars[pick(sizeof(kChars) - 1)];
  switch (pick(3)) {
    case 0:
      text.erase(at, 1);
      break;
    case 1:
      text[at] = c;
      break;
    default:
      text.insert(at, 1, c);
      break;
  }
  return text;
}

// yaml-cpp ends a simple key at 1024 characters: around that length, with one- and
// multi-byte characters and escapes, both paths agree (the direct reader declines past it).
TEST(JsonReaderTest, SameAsYamlCppAroundTheSimpleKeyLimit) {
  for (const char* piece : {"k", "é", "\\n", "😀"}) {
    for (int n = 1000; n <= 1030; ++n) {
      std::string key;
      while (static_cast<int>(key.size()) < n) key += piece;
      for (const std::string& text :
           {absl::StrCat("{\"", key, "\": 1}"), absl::StrCat("{\"a\": {\"", key, "\": [1]}}")}) {
        EXPECT_EQ(Differential(text), "") << piece << " " << n;
      }
    }
  }
}

TEST(JsonReaderTest, SameAsYamlCppOnRandomJson) {
  const char* env = std::getenv("NP_SEED");
  const uint32_t first = env != nullptr ? static_cast<uint32_t>(std::atoi(env)) : 1;
  const uint32_t seeds = env != nullptr ? 1 : 40;
  int taken = 0, cases = 0;
  for (uint32_t seed = first; seed < first + seeds; ++seed) {
    JsonGenerator gen(seed);
    for (int i = 0; i < 100; ++i) {
      const std::string text = gen.Document();
      ++cases;
      if (TakenDirectly(text)) ++taken;
      ASSERT_EQ(Differential(text), "") << "replay: NP_SEED=" << seed << " case " << i << "\n"
                                        << text;
      std::string mutated = text;
      for (int m = 0; m < 3; ++m) {
        mutated = Mutate(mutated, gen.rng());
        ASSERT_EQ(Differential(mutated), "")
            << "replay: NP_SEED=" << seed << " case " << i << " mutation " << m << "\n"
            << mutated;
      }
    }
  }
  // Most generated JSON is plain enough for the direct reader (the rest has tabs, escaped
  // surrogates, keys past 1024 bytes, ...): the comparison is not vacuous.
  EXPECT_GT(taken, cases / 4) << taken << " of " << cases;
}

// Duplicate keys are errors in short mappings (scanned) and long ones (hashed) alike, and a
// long mapping keeps every distinct key.
TEST(YamlTreeTest, DuplicateKeysInShortAndLongMappings) {
  for (int keys : {3, 16, 17, 40}) {
    for (int duplicate : {0, keys / 2, keys - 1}) {
      std::string labels;
      for (int k = 0; k < keys; ++k) absl::StrAppend(&labels, "\"k", k, "\": \"v\", ");
      const std::string text = absl::StrCat(
          R"({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "labels": {)",
          labels, "\"k", duplicate, "\": \"w\"}}}");
      absl::StatusOr<Change> change = ParseChangeOfKind(text, "ns.json", "");
      ASSERT_FALSE(change.ok()) << keys << " " << duplicate;
      EXPECT_THAT(change.status().message(),
                  HasSubstr(absl::StrCat("duplicate field \"metadata.labels.k", duplicate, "\"")));
      const std::string unique = absl::StrCat(
          R"({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "labels": {)",
          labels.substr(0, labels.size() - 2), "}}}");
      change = ParseChangeOfKind(unique, "ns.json", "");
      ASSERT_TRUE(change.ok()) << change.status();
      EXPECT_EQ(std::get<k8s::Namespace>(change->object).metadata().labels().size(), keys);
    }
  }
}

// The encoding check finds the first bad byte wherever it is (it skips printable ASCII eight
// bytes at a time): a byte YAML forbids, put at a random character boundary of a good text,
// is reported at its offset and line.
TEST(YamlTreeTest, EncodingErrorsAtTheirOffset) {
  const char* env = std::getenv("NP_SEED");
  const uint32_t seed = env != nullptr ? static_cast<uint32_t>(std::atoi(env)) : 7;
  std::mt19937 rng(seed);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  static const char* const kPieces[] = {"a",          "b: c",           " ", "  ", "\n",
                                        "\t",         "\r\n",           "é", "€",  "😀",
                                        "0123456789", "{\"k\": \"v\"}", "~"};
  for (int round = 0; round < 2000; ++round) {
    std::vector<std::string> pieces;
    const size_t count = 1 + pick(40);
    for (size_t i = 0; i < count; ++i) pieces.push_back(kPieces[pick(std::size(kPieces))]);
    const size_t at = pick(count + 1);  // the bad character goes before pieces[at]
    std::string text;
    for (size_t i = 0; i < at; ++i) text += pieces[i];
    const size_t offset = text.size();
    const int line = 1 + static_cast<int>(std::count(text.begin(), text.end(), '\n'));
    std::string bad, expected;
    switch (pick(3)) {
      case 0: {
        static const unsigned char kControls[] = {0x00, 0x01, 0x08, 0x0B, 0x0C,
                                                  0x0E, 0x1B, 0x1F, 0x7F};
        const unsigned char c = kControls[pick(std::size(kControls))];
        bad = std::string(1, static_cast<char>(c));
        expected = absl::StrFormat("control character 0x%02X is not allowed (byte %d;", c, offset);
        break;
      }
      case 1: {
        const unsigned char c = static_cast<unsigned char>(0x80 + pick(0x80));
        bad = std::string(1, static_cast<char>(c));
        expected = absl::StrFormat("invalid UTF-8 (byte 0x%02X at offset %d)", c, offset);
        break;
      }
      default:
        bad = "\xEF\xBF\xBE";  // U+FFFE
        expected = "character U+FFFE is not allowed";
        break;
    }
    text += bad;
    for (size_t i = at; i < count; ++i) text += pieces[i];
    if (offset < 2 && (static_cast<unsigned char>(text[0]) == 0xFF ||
                       static_cast<unsigned char>(text[0]) == 0xFE)) {
      continue;  // might read as a UTF-16 byte-order mark
    }
    std::vector<YamlDocument> docs = Parse(text);
    ASSERT_FALSE(docs.empty());
    ASSERT_THAT(docs.back().error, HasSubstr(expected))
        << "replay: NP_SEED=" << seed << " round " << round;
    ASSERT_EQ(docs.back().error_line, line) << "replay: NP_SEED=" << seed << " round " << round;
  }
}

}  // namespace
}  // namespace np::internal
