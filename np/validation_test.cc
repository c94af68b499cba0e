// Tests of np/validation.h against the case files in testdata/validation/ (the format is
// described at the top of networkpolicy.cases), plus how Cluster::Create passes findings on.
#include "np/validation.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "np/cluster.h"
#include "proto/k8s.pb.h"

namespace np {
namespace {

using Severity = Diagnostic::Severity;

struct Expectation {
  Severity severity = Severity::kError;
  std::string field;
  std::string text;  // a substring of the message
  std::string ToString() const {
    return absl::StrCat(severity == Severity::kError ? "error " : "warning ", field, ": ", text);
  }
};

struct Case {
  std::string name;
  int line = 0;
  bool expect_ok = false;
  std::vector<Expectation> expectations;
  std::string body;  // protobuf text format
};

std::string RunfilePath(absl::string_view relative) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && workspace != nullptr) {
    return absl::StrCat(srcdir, "/", workspace, "/", relative);
  }
  return std::string(relative);
}

// "{{A<n>}}" stands for n letters 'a'.
std::string ExpandPlaceholders(absl::string_view text) {
  std::string out;
  while (true) {
    size_t open = text.find("{{A");
    if (open == absl::string_view::npos) break;
    size_t close = text.find("}}", open);
    int n = 0;
    if (close == absl::string_view::npos ||
        !absl::SimpleAtoi(text.substr(open + 3, close - open - 3), &n) || n < 0) {
      ADD_FAILURE() << "bad placeholder in: " << text;
      break;
    }
    absl::StrAppend(&out, text.substr(0, open), std::string(n, 'a'));
    text.remove_prefix(close + 2);
  }
  absl::StrAppend(&out, text);
  return out;
}

// Reads a case file; any malformed line is a test failure.
std::vector<Case> ReadCases(absl::string_view file) {
  std::string path = RunfilePath(absl::StrCat("testdata/validation/", file));
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::vector<Case> cases;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    absl::string_view l = absl::StripTrailingAsciiWhitespace(line);
    if (absl::ConsumePrefix(&l, "### ")) {
      cases.push_back({std::string(l), number, false, {}, ""});
      continue;
    }
    if (absl::StartsWith(l, "#") || absl::StripAsciiWhitespace(l).empty()) continue;
    if (cases.empty()) {
      ADD_FAILURE() << file << ":" << number << ": text before the first case";
      continue;
    }
    Case& c = cases.back();
    if (absl::ConsumePrefix(&l, "expect ")) {
      if (l == "ok") {
        c.expect_ok = true;
        continue;
      }
      Expectation e;
      if (absl::ConsumePrefix(&l, "error ")) {
        e.severity = Severity::kError;
      } else if (absl::ConsumePrefix(&l, "warning ")) {
        e.severity = Severity::kWarning;
      } else {
        ADD_FAILURE() << file << ":" << number << ": expect ok|error|warning";
        continue;
      }
      size_t colon = l.find(": ");
      if (colon == absl::string_view::npos) {
        ADD_FAILURE() << file << ":" << number << ": expect <severity> <field>: <text>";
        continue;
      }
      e.field = std::string(l.substr(0, colon));
      e.text = ExpandPlaceholders(l.substr(colon + 2));
      c.expectations.push_back(std::move(e));
      continue;
    }
    absl::StrAppend(&c.body, ExpandPlaceholders(l), "\n");
  }
  for (const Case& c : cases) {
    EXPECT_NE(c.expect_ok, !c.expectations.empty())
        << file << ":" << c.line << ": a case says either \"expect ok\" or what it expects";
  }
  return cases;
}

std::string Describe(const std::vector<Diagnostic>& found) {
  std::vector<std::string> lines;
  for (const Diagnostic& d : found) lines.push_back(absl::StrCat("  ", d.ToString()));
  return lines.empty() ? "  (nothing)" : absl::StrJoin(lines, "\n");
}

template <typename Object>
std::string ExpectedObjectKey(const Object& o) {
  return absl::StrCat(o.metadata().namespace_(), "/", o.metadata().name());
}
std::string ExpectedObjectKey(const k8s::Namespace& ns) { return ns.metadata().name(); }

// Parses each case, validates it and matches findings to expectations one to one.
template <typename Object>
void RunCases(absl::string_view file, absl::string_view kind,
              std::vector<Diagnostic> (*validate)(const Object&), int* ok_count,
              int* rejected_count, int* warned_count) {
  std::vector<Case> cases = ReadCases(file);
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(file, ":", c.line, ": ", c.name));
    Object object;
    if (!google::protobuf::TextFormat::ParseFromString(c.body, &object)) {
      ADD_FAILURE() << "the object does not parse:\n" << c.body;
      continue;
    }
    std::vector<Diagnostic> found = validate(object);
    bool has_error = false, has_warning = false;
    for (const Diagnostic& d : found) {
      EXPECT_EQ(d.kind, kind);
      EXPECT_EQ(d.object, ExpectedObjectKey(object));
      EXPECT_TRUE(d.location.file.empty() && d.location.line == 0) << "location is the caller's";
      EXPECT_FALSE(d.field.empty()) << d.ToString();
      (d.is_error() ? has_error : has_warning) = true;
    }
    *ok_count += !has_error;
    *rejected_count += has_error;
    *warned_count += has_warning;

    std::vector<bool> used(found.size(), false);
    for (const Expectation& e : c.expectations) {
      bool matched = false;
      for (size_t i = 0; i < found.size() && !matched; ++i) {
        if (used[i] || found[i].severity != e.severity || found[i].field != e.field ||
            !absl::StrContains(found[i].message, e.text)) {
          continue;
        }
        used[i] = matched = true;
      }
      EXPECT_TRUE(matched) << "expected " << e.ToString() << "\nfound:\n" << Describe(found);
    }
    for (size_t i = 0; i < found.size(); ++i) {
      EXPECT_TRUE(used[i]) << "unexpected finding: " << found[i].ToString() << "\nall found:\n"
                           << Describe(found);
    }
  }
}

TEST(ValidationCases, NetworkPolicy) {
  int ok = 0, rejected = 0, warned = 0;
  RunCases<k8s::NetworkPolicy>("networkpolicy.cases", "NetworkPolicy", &ValidateNetworkPolicy, &ok,
                               &rejected, &warned);
  // Guards against a file that silently stopped being read.
  EXPECT_GE(ok, 25);
  EXPECT_GE(rejected, 50);
  EXPECT_GE(warned, 12);
}

TEST(ValidationCases, Pod) {
  int ok = 0, rejected = 0, warned = 0;
  RunCases<k8s::Pod>("pod.cases", "Pod", &ValidatePod, &ok, &rejected, &warned);
  EXPECT_GE(ok, 8);
  EXPECT_GE(rejected, 18);
  EXPECT_GE(warned, 4);
}

TEST(ValidationCases, Namespace) {
  int ok = 0, rejected = 0, warned = 0;
  RunCases<k8s::Namespace>("namespace.cases", "Namespace", &ValidateNamespace, &ok, &rejected,
                           &warned);
  EXPECT_GE(ok, 6);
  EXPECT_GE(rejected, 8);
  EXPECT_GE(warned, 1);
}

// The full rendering of one finding, as a user reads it.
TEST(Validation, MessageAsTheApiServerWritesIt) {
  k8s::NetworkPolicy policy;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"pb(metadata { name: "allow-db" namespace: "default" }
           spec {
             ingress {
               ports {
                 port { intVal: 80 }
                 endPort: 79
               }
             }
           })pb",
      &policy));
  std::vector<Diagnostic> found = ValidateNetworkPolicy(policy);
  ASSERT_EQ(found.size(), 1u) << Describe(found);
  EXPECT_EQ(found[0].ToString(),
            "NetworkPolicy default/allow-db: spec.ingress[0].ports[0].endPort: Invalid value: 79: "
            "must be greater than or equal to `port`");
}

k8s::NetworkPolicy Policy(absl::string_view text) {
  k8s::NetworkPolicy p;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(std::string(text), &p)) << text;
  return p;
}

// Cluster::Create refuses a cluster with an error, keeps one with only warnings, and gives
// each finding the source location of its field.
TEST(Validation, ClusterCreatePassesFindingsOn) {
  ClusterObjects objects;
  Sourced<k8s::NetworkPolicy> bad{Policy(R"pb(metadata { name: "p" }
                                              spec {
                                                egress {
                                                  ports {
                                                    port { type: 1 strVal: "http" }
                                                    endPort: 90
                                                  }
                                                }
                                              })pb"),
                                  {}};
  bad.source.location = {"policies.yaml", 1};
  bad.source.field_lines["spec.egress[0].ports[0].endPort"] = 7;
  objects.policies.push_back(bad);
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = Cluster::Create(objects, &diagnostics);
  ASSERT_FALSE(cluster.ok());
  EXPECT_EQ(cluster.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(cluster.status().message(), "spec.egress[0].ports[0].endPort"))
      << cluster.status();
  ASSERT_EQ(diagnostics.size(), 1u) << Describe(diagnostics);
  EXPECT_EQ(diagnostics[0].object, "default/p");  // namespace defaulted by Create
  EXPECT_EQ(diagnostics[0].location.file, "policies.yaml");
  EXPECT_EQ(diagnostics[0].location.line, 7);

  ClusterObjects warned;
  warned.policies.push_back(
      {Policy(R"pb(metadata { name: "p" namespace: "x" }
                   spec { ingress { from { ipBlock { cidr: "10.0.0.1/8" } } } })pb"),
       {}});
  diagnostics.clear();
  cluster = Cluster::Create(warned, &diagnostics);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_EQ(diagnostics.size(), 1u) << Describe(diagnostics);
  EXPECT_FALSE(diagnostics[0].is_error());
  EXPECT_EQ(diagnostics[0].field, "spec.ingress[0].from[0].ipBlock.cidr");
}

// Inputs no API server would send must not crash or throw: odd IntOrString types, bytes that
// are not UTF-8, very long strings, extreme numbers.
TEST(Validation, OddInputsAreReportedNotFatal) {
  k8s::NetworkPolicy p = Policy(R"pb(metadata { name: "p" namespace: "n" }
                                     spec {
                                       ingress {
                                         ports { port { type: 7 strVal: "http" } }
                                         ports {
                                           port { intVal: 2147483647 }
                                           endPort: -2147483648
                                         }
                                       }
                                     })pb");
  p.mutable_metadata()->set_name(std::string("\xff\x00\n\"", 4));
  p.mutable_spec()->mutable_egress()->Add()->add_to()->mutable_ipblock()->set_cidr(
      std::string(100000, '1'));
  std::vector<Diagnostic> found = ValidateNetworkPolicy(p);
  // The name, the port and endPort of ports[1] (below port, out of range), the CIDR.
  EXPECT_EQ(found.size(), 5u) << Describe(found);
  EXPECT_TRUE(absl::StrContains(found[0].message, R"(Invalid value: "\xff\x00\n\"")"))
      << found[0].message;
}

// The functions are pure and may run on many threads at once (the regexes are compiled once).
TEST(Validation, ConcurrentCalls) {
  k8s::NetworkPolicy p =
      Policy(R"pb(metadata {
                    name: "Bad"
                    namespace: "n"
                    labels { key: "a b" value: "c" }
                  }
                  spec {
                    podSelector { matchExpressions { key: "k" operator: "In" values: "x y" } }
                  })pb");
  const size_t expected = ValidateNetworkPolicy(p).size();
  ASSERT_EQ(expected, 3u);
  std::vector<std::thread> threads;
  std::vector<size_t> sizes(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) sizes[t] += ValidateNetworkPolicy(p).size();
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t s : sizes) EXPECT_EQ(s, 200 * expected);
}

}  // namespace
}  // namespace np
