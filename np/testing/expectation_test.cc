#include "np/testing/expectation.h"

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace np::testing {
namespace {

using ::testing::HasSubstr;

// A cluster object before the expectation, as the test files have them: it must be skipped.
constexpr char kGood[] = R"yaml(apiVersion: v1
kind: Namespace
metadata:
  name: x
---
apiVersion: np.dev/v1alpha1
kind: ReachabilityExpectation
metadata:
  name: sample
source: "upstream It(\"sample\")"
options:
  ipBlockScope: ExternalOnly
  alwaysAllowSelf: true
cases:
- protocol: UDP
  port: 81
  # rows: source pod; columns: destination pod
  table: |2
          x/a x/b y/a
      x/a  ?   X   .
      x/b  .   ?   X
- protocol: SCTP
  port: 80
  table: |
    - x/a y/a
    x/a ? X
flows:
- {from: x/a, to: 172.17.1.5, protocol: TCP, port: 6379, allowed: false}
- {from: "fd00::1", to: y/a, protocol: TCP, port: 80, allowed: true}
)yaml";

TEST(ParseExpectations, ReadsAGoodDocumentCellByCell) {
  absl::StatusOr<std::vector<Expectation>> got = ParseExpectations(kGood, "good.yaml");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 1u);
  const Expectation& e = got->front();
  EXPECT_EQ(e.name, "sample");
  EXPECT_EQ(e.source, "upstream It(\"sample\")");
  EXPECT_EQ(e.file, "good.yaml");
  EXPECT_EQ(e.line, 6);
  EXPECT_EQ(e.options.ip_block_scope, EvaluationOptions::IpBlockScope::kExternalOnly);
  EXPECT_TRUE(e.options.always_allow_self);

  ASSERT_EQ(e.tables.size(), 2u);
  const ReachabilityTable& t = e.tables[0];
  EXPECT_EQ(t.protocol, Protocol::kUDP);
  EXPECT_EQ(t.port, 81);
  EXPECT_EQ(t.line, 15);
  EXPECT_EQ(t.columns, (std::vector<std::string>{"x/a", "x/b", "y/a"}));
  EXPECT_EQ(t.rows, (std::vector<std::string>{"x/a", "x/b"}));
  EXPECT_EQ(t.row_lines, (std::vector<int>{20, 21}));
  const Cell want[2][3] = {{Cell::kUnchecked, Cell::kDenied, Cell::kAllowed},
                           {Cell::kAllowed, Cell::kUnchecked, Cell::kDenied}};
  for (size_t r = 0; r < 2; ++r) {
    for (size_t c = 0; c < 3; ++c) {
      EXPECT_EQ(t.at(r, c), want[r][c]) << t.rows[r] << " -> " << t.columns[c];
    }
  }

  // A header with upstream's "-" corner, in a block scalar without an indentation indicator.
  const ReachabilityTable& u = e.tables[1];
  EXPECT_EQ(u.protocol, Protocol::kSCTP);
  EXPECT_EQ(u.port, 80);
  EXPECT_EQ(u.columns, (std::vector<std::string>{"x/a", "y/a"}));
  EXPECT_EQ(u.rows, (std::vector<std::string>{"x/a"}));
  EXPECT_EQ(u.row_lines, (std::vector<int>{26}));
  EXPECT_EQ(u.at(0, 0), Cell::kUnchecked);
  EXPECT_EQ(u.at(0, 1), Cell::kDenied);

  ASSERT_EQ(e.flows.size(), 2u);
  EXPECT_EQ(e.flows[0].from, "x/a");
  EXPECT_EQ(e.flows[0].to, "172.17.1.5");
  EXPECT_EQ(e.flows[0].protocol, Protocol::kTCP);
  EXPECT_EQ(e.flows[0].port, 6379);
  EXPECT_FALSE(e.flows[0].allowed);
  EXPECT_EQ(e.flows[0].line, 28);
  EXPECT_EQ(e.flows[1].from, "fd00::1");
  EXPECT_TRUE(e.flows[1].allowed);
  EXPECT_EQ(e.flows[1].line, 29);
}

TEST(ParseExpectations, DefaultsAndSkippedDocuments) {
  constexpr char kText[] = R"yaml(---
---
kind: Pod
apiVersion: v1
metadata: {name: a, namespace: x}
---
apiVersion: np.dev/v1alpha1
kind: ReachabilityExpectation
metadata: {name: only-flows}
source: docs
flows:
- {from: 192.0.2.1, to: x/a, protocol: TCP, port: 80, allowed: true}
)yaml";
  absl::StatusOr<std::vector<Expectation>> got = ParseExpectations(kText, "f.yaml");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ(got->front().options.ip_block_scope,
            EvaluationOptions::IpBlockScope::kAllAddresses);
  EXPECT_FALSE(got->front().options.always_allow_self);
  EXPECT_TRUE(got->front().tables.empty());
  EXPECT_EQ(got->front().flows.size(), 1u);
}

// Each malformed input: a replacement applied to kGood, and what the error must say.
struct Malformed {
  const char* what;
  const char* from;
  const char* to;
  const char* message;  // substring of the error, which starts with "bad.yaml:<line>: "
  int line;
};

TEST(ParseExpectations, RejectsMalformedInputWithFileAndLine) {
  const Malformed cases[] = {
      {"bad symbol", "x/a  ?   X   .", "x/a  ?   Y   .", "x/a -> x/b: unknown symbol \"Y\"", 20},
      {"lower-case x", "x/b  .   ?   X", "x/b  .   ?   x", "unknown symbol \"x\"", 21},
      {"row too short", "x/b  .   ?   X", "x/b  .   ?", "row x/b has 2 cells but the header has 3",
       21},
      {"row too long", "x/a  ?   X   .", "x/a  ?   X   .   .",
       "row x/a has 4 cells but the header has 3", 20},
      {"duplicate column", "  x/a x/b y/a", "  x/a x/b x/a", "column \"x/a\" appears twice", 19},
      {"duplicate row", "x/b  .   ?   X", "x/a  .   ?   X", "row \"x/a\" appears twice", 21},
      {"column not a pod", "  x/a x/b y/a", "  x/a x/b 10.0.0.1",
       "column \"10.0.0.1\" is not a pod name", 19},
      {"unknown protocol", "protocol: UDP", "protocol: ICMP", "unknown protocol \"ICMP\"", 15},
      {"lower-case protocol", "protocol: UDP", "protocol: udp", "unknown protocol \"udp\"", 15},
      {"port zero", "port: 81", "port: 0", "port must be a number from 1 to 65535", 16},
      {"port too large", "port: 81", "port: 65536", "port must be a number from 1 to 65535",
       16},
      {"named port", "port: 81", "port: serve-81-tcp", "port must be a number", 16},
      {"unknown case field", "port: 81", "port: 81\n  endPort: 90",
       "cases[]: unknown field \"endPort\"", 17},
      {"missing table", "  table: |2\n          x/a x/b y/a\n      x/a  ?   X   .\n"
                        "      x/b  .   ?   X\n",
       "", "cases[]: missing field \"table\"", 15},
      {"unknown top-level field", "source:", "description: x\nsource:",
       "unknown field \"description\"", 10},
      {"wrong apiVersion", "apiVersion: np.dev/v1alpha1", "apiVersion: np.dev/v2",
       "apiVersion: \"np.dev/v2\", expected \"np.dev/v1alpha1\"", 6},
      {"no name", "  name: sample", "  nickname: sample", "unknown field \"nickname\"", 9},
      {"bad scope", "ipBlockScope: ExternalOnly", "ipBlockScope: PodsToo",
       "\"PodsToo\" is not AllAddresses or ExternalOnly", 12},
      {"bad bool", "alwaysAllowSelf: true", "alwaysAllowSelf: yes", "must be true or false", 13},
      {"flow to a CIDR", "to: 172.17.1.5,", "to: 172.17.1.0/24,",
       "\"172.17.1.0/24\" is neither a pod (namespace/name) nor an IP address", 28},
      {"flow without verdict", ", allowed: false}", "}", "missing field \"allowed\"", 28},
      {"flow with bad verdict", "allowed: false}", "allowed: maybe}", "must be true or false",
       28},
      {"YAML syntax", "cases:\n", "cases: [\n", "", 0},
  };
  for (const Malformed& m : cases) {
    SCOPED_TRACE(m.what);
    const std::string text = absl::StrReplaceAll(kGood, {{m.from, m.to}});
    ASSERT_NE(text, kGood) << "replacement did not apply";
    absl::StatusOr<std::vector<Expectation>> got = ParseExpectations(text, "bad.yaml");
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(m.message));
    if (m.line > 0) {
      EXPECT_THAT(std::string(got.status().message()),
                  ::testing::StartsWith(absl::StrCat("bad.yaml:", m.line, ": ")));
    } else {
      EXPECT_TRUE(absl::StartsWith(got.status().message(), "bad.yaml:"))
          << got.status().message();
    }
  }
}

TEST(ParseExpectations, RejectsExpectationsThatCheckNothingOrRepeatANames) {
  constexpr char kEmpty[] = R"yaml(apiVersion: np.dev/v1alpha1
kind: ReachabilityExpectation
metadata: {name: nothing}
source: s
cases: []
)yaml";
  absl::StatusOr<std::vector<Expectation>> got = ParseExpectations(kEmpty, "e.yaml");
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("no cases and no flows"));

  const std::string twice =
      std::string(kGood) + "---\n" + std::string(kGood).substr(std::string(kGood).find("apiVersion: np.dev"));
  got = ParseExpectations(twice, "t.yaml");
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("sample: name already used"));
}

TEST(ParseExpectations, NeverThrowsOnGarbage) {
  for (const char* text : {"", "---\n", "[", "{a: b", "kind: ReachabilityExpectation\n",
                           "kind: ReachabilityExpectation\ncases: 3\n", "\t\x01\xff", "- - -",
                           "kind: [ReachabilityExpectation]\n", "? a\n: b\n"}) {
    absl::StatusOr<std::vector<Expectation>> got = ParseExpectations(text, "g.yaml");
    if (got.ok()) {
      EXPECT_TRUE(got->empty()) << text;
    }
  }
}

TEST(ReadExpectations, MissingFileIsNotFound) {
  absl::StatusOr<std::vector<Expectation>> got = ReadExpectations("/nonexistent/x.yaml");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
}

TEST(IsPodName, PodsAndAddresses) {
  EXPECT_TRUE(IsPodName("x/a"));
  EXPECT_TRUE(IsPodName("default/busybox-access"));
  EXPECT_FALSE(IsPodName("10.0.0.1"));
  EXPECT_FALSE(IsPodName("fd00::1"));
  EXPECT_FALSE(IsPodName("10.0.0.0/24"));
  EXPECT_FALSE(IsPodName("fd00::/64"));
  EXPECT_FALSE(IsPodName("/a"));
  EXPECT_FALSE(IsPodName("x/"));
  EXPECT_FALSE(IsPodName("x/a/b"));
}

TEST(FormatCells, LaysOutLikeTheFiles) {
  absl::StatusOr<std::vector<Expectation>> got = ParseExpectations(kGood, "good.yaml");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(FormatTable(got->front().tables[0], "  "),
            "      x/a x/b y/a\n"
            "  x/a  ?   X   .\n"
            "  x/b  .   ?   X\n");
}

// Every file of testdata/upstream and testdata/docs parses, and every table is complete.
TEST(TestData, AllFilesParse) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  int files = 0;
  for (const char* dir : {"testdata/upstream", "testdata/docs"}) {
    std::filesystem::path path = dir;
    if (srcdir != nullptr && std::filesystem::exists(std::filesystem::path(srcdir) / "np" / dir)) {
      path = std::filesystem::path(srcdir) / "np" / dir;
    }
    int in_dir = 0;
    for (const auto& entry : std::filesystem::directory_iterator(path)) {
      if (entry.path().extension() != ".yaml") continue;
      ++files;
      ++in_dir;
      SCOPED_TRACE(entry.path().string());
      absl::StatusOr<std::vector<Expectation>> got = ReadExpectations(entry.path().string());
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_FALSE(got->empty());
      for (const Expectation& e : *got) {
        for (const ReachabilityTable& t : e.tables) {
          EXPECT_EQ(t.cells.size(), t.rows.size() * t.columns.size());
          EXPECT_EQ(t.rows, t.columns) << "upstream's tables are square, same pods both ways";
        }
      }
    }
    EXPECT_GT(in_dir, 10) << dir;
  }
  EXPECT_GT(files, 50);
}

}  // namespace
}  // namespace np::testing
