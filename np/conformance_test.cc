// Checks np's reference evaluator and the indexed engine against the upstream e2e NetworkPolicy scenarios
// (testdata/upstream) and the documentation examples (testdata/docs): every cell of every
// expected truth table and every expected flow. One test per file; a failure prints the scenario,
// its source, expected and computed tables, and the reference's explanation of each wrong cell.
//
// The expectations were transcribed from upstream's Expect* calls and the documentation's prose,
// never computed by np (see testdata/upstream/README.md).

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/loader.h"
#include "np/reference.h"
#include "np/testing/expectation.h"
#include "np/types.h"
#include "np/verdict.h"

namespace np {
namespace {

namespace fs = std::filesystem;
using ::np::testing::Cell;
using ::np::testing::Expectation;
using ::np::testing::FlowExpectation;
using ::np::testing::ReachabilityTable;

// How many wrong cells of one table get a full explanation (the table shows all of them).
constexpr int kExplainedPerTable = 6;

// The runfiles root of workspace `np` (where testdata/ lives), or "" for the working directory.
std::string RunfilesRoot() {
  if (const char* srcdir = std::getenv("TEST_SRCDIR"); srcdir != nullptr) {
    const fs::path root = fs::path(srcdir) / "np";
    std::error_code ec;
    if (fs::is_directory(root / "testdata", ec)) return root.string();
  }
  return "";
}

fs::path Resolve(const std::string& relative) {
  const std::string root = RunfilesRoot();
  return root.empty() ? fs::path(relative) : fs::path(root) / relative;
}

// "testdata/<dir>/<file>.yaml" for every YAML file of the directory, sorted.
std::vector<std::string> TestFiles(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (fs::directory_iterator it(Resolve("testdata/" + dir), ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->path().extension() == ".yaml") {
      files.push_back("testdata/" + dir + "/" + it->path().filename().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = fs::path(info.param).stem().string();
  for (char& c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) c = '_';
  }
  return name;
}

Cell CellOf(const Verdict& verdict) { return verdict.allowed ? Cell::kAllowed : Cell::kDenied; }

const char* Word(Cell cell) {
  return cell == Cell::kAllowed ? "allowed" : cell == Cell::kDenied ? "denied" : "unchecked";
}

std::string Header(const Expectation& e) {
  return absl::StrCat("scenario ", e.name, "\n  source: ", e.source, "\n");
}

// An end of a flow: a pod of the cluster by name, or an address — a pod's address is that
// pod (the first holder of a shared one), as `netpol check` reads it (np::ParseEndpoint).
std::optional<Endpoint> ResolveEndpoint(const Cluster& cluster, const std::string& name,
                                        std::string* error) {
  if (::np::testing::IsPodName(name)) {
    std::optional<int> pod = cluster.FindPod(name);
    if (!pod.has_value()) {
      *error = absl::StrCat("unknown pod ", name);
      return std::nullopt;
    }
    return Endpoint::Pod(*pod);
  }
  absl::StatusOr<IpAddress> address = IpAddress::Parse(name);
  if (!address.ok()) {
    *error = absl::StrCat("bad address ", name, ": ", address.status().message());
    return std::nullopt;
  }
  std::optional<int> pod = cluster.PodByIp(*address);
  return pod ? Endpoint::Pod(*pod) : Endpoint::External(*address);
}

class ConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  int checked_ = 0;
  // The evaluator under test: np::reference::Evaluate, or the engine (same content).
  std::string evaluator_name_ = "np::reference::Evaluate";
  std::function<Verdict(const Cluster&, const Flow&, const EvaluationOptions&)> evaluate_ =
      [](const Cluster& c, const Flow& f, const EvaluationOptions& o) {
        return reference::Evaluate(c, f, o);
      };

  // Switches to the engine built for `cluster` with each expectation's options.
  void UseEngine() {
    evaluator_name_ = "np::Engine::Explain";
    evaluate_ = [this](const Cluster& c, const Flow& f, const EvaluationOptions& o) {
      EngineOptions options;
      options.evaluation = o;
      auto key = std::make_pair(o.always_allow_self, static_cast<int>(o.ip_block_scope));
      auto it = engines_.find(key);
      if (it == engines_.end()) {
        absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(c, options);
        EXPECT_TRUE(engine.ok()) << engine.status();
        it = engines_.emplace(key, *engine).first;
      }
      const Engine& engine = *it->second;
      auto translate = [&](const Endpoint& e) {
        return e.is_pod ? Endpoint::Pod(static_cast<int>(*engine.FindPod(c.pod(e.pod_index).Key())))
                        : e;
      };
      Verdict v = engine.Explain(translate(f.source), translate(f.destination), f.protocol, f.port);
      // The fast path must agree with the explanation.
      EXPECT_EQ(v.allowed, engine.Allowed(translate(f.source), translate(f.destination),
                                          f.protocol, f.port));
      return v;
    };
  }
  std::map<std::pair<bool, int>, std::shared_ptr<const Engine>> engines_;

  void CheckTable(const Cluster& cluster, const Expectation& e, const ReachabilityTable& t) {
    const std::string where = absl::StrCat(e.file, ":", t.line, ": ", ProtocolName(t.protocol),
                                           "/", t.port);
    std::vector<int> rows, columns;
    for (const std::vector<std::string>* names : {&t.rows, &t.columns}) {
      std::vector<int>& out = names == &t.rows ? rows : columns;
      for (const std::string& name : *names) {
        std::optional<int> pod = cluster.FindPod(name);
        if (!pod.has_value()) {
          ADD_FAILURE() << Header(e) << where << ": the table names pod " << name
                        << ", which the file's cluster does not have";
          return;
        }
        out.push_back(*pod);
      }
    }
    std::vector<Cell> got(t.cells.size(), Cell::kUnchecked);
    std::vector<std::string> wrong;
    int explained = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      for (size_t c = 0; c < columns.size(); ++c) {
        const Flow flow{Endpoint::Pod(rows[r]), Endpoint::Pod(columns[c]), t.protocol, t.port};
        const Verdict verdict = evaluate_(cluster, flow, e.options);
        got[r * columns.size() + c] = CellOf(verdict);
        const Cell want = t.at(r, c);
        if (want == Cell::kUnchecked) continue;
        ++checked_;
        if (want == CellOf(verdict)) continue;
        std::string line = absl::StrCat("  ", e.file, ":", t.row_lines[r], ": ", t.rows[r], " -> ",
                                        t.columns[c], " ", ProtocolName(t.protocol), "/", t.port,
                                        ": expected ", Word(want), ", got ",
                                        Word(CellOf(verdict)));
        if (explained++ < kExplainedPerTable) {
          absl::StrAppend(&line, "\n", FormatVerdict(cluster, flow, verdict));
        }
        wrong.push_back(std::move(line));
      }
    }
    if (wrong.empty()) return;
    // Unchecked cells show the reference's verdict in the "got" table, for context.
    ADD_FAILURE() << evaluator_name_ << ": " << Header(e) << where << ": " << wrong.size()
                  << " cell(s) differ\n"
                  << "  expected (rows: from, columns: to; . allowed, X denied, ? unchecked):\n"
                  << ::np::testing::FormatTable(t, "    ")
                  << "  got (" << evaluator_name_ << "):\n"
                  << ::np::testing::FormatCells(t, got, "    ") << absl::StrJoin(wrong, "\n");
  }

  void CheckFlow(const Cluster& cluster, const Expectation& e, const FlowExpectation& f) {
    const std::string where = absl::StrCat(e.file, ":", f.line, ": ", f.from, " -> ", f.to, " ",
                                           ProtocolName(f.protocol), "/", f.port);
    std::string error;
    std::optional<Endpoint> from = ResolveEndpoint(cluster, f.from, &error);
    std::optional<Endpoint> to = from ? ResolveEndpoint(cluster, f.to, &error) : std::nullopt;
    if (!from || !to) {
      ADD_FAILURE() << Header(e) << where << ": " << error;
      return;
    }
    const Flow flow{*from, *to, f.protocol, f.port};
    const Verdict verdict = evaluate_(cluster, flow, e.options);
    ++checked_;
    if (verdict.allowed != f.allowed) {
      ADD_FAILURE() << evaluator_name_ << ": " << Header(e) << where << ": expected "
                    << (f.allowed ? "allowed" : "denied")
                    << ", got " << (verdict.allowed ? "allowed" : "denied") << "\n"
                    << FormatVerdict(cluster, flow, verdict);
    }
  }
};

TEST_P(ConformanceTest, ReferenceAndEngineMatchExpectations) {
  const std::string path = Resolve(GetParam()).string();

  ClusterLoader loader;
  absl::Status added = loader.AddPath(path);
  ASSERT_TRUE(added.ok()) << added;
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
  std::string notes;
  for (const Diagnostic& d : diagnostics) absl::StrAppend(&notes, "\n  ", d.ToString());
  ASSERT_TRUE(cluster.ok()) << path << ": the cluster does not load: " << cluster.status()
                            << notes;

  absl::StatusOr<std::vector<Expectation>> expectations =
      ::np::testing::ReadExpectations(path);
  ASSERT_TRUE(expectations.ok()) << expectations.status();
  ASSERT_FALSE(expectations->empty()) << path << ": no ReachabilityExpectation document";

  for (bool engine : {false, true}) {
    if (engine) UseEngine();
    for (const Expectation& e : *expectations) {
      for (const ReachabilityTable& t : e.tables) CheckTable(*cluster, e, t);
      for (const FlowExpectation& f : e.flows) CheckFlow(*cluster, e, f);
    }
  }
  EXPECT_GT(checked_, 0) << path << ": every cell is unchecked";
  RecordProperty("checked", checked_);
}

INSTANTIATE_TEST_SUITE_P(Upstream, ConformanceTest, ::testing::ValuesIn(TestFiles("upstream")),
                         TestName);
INSTANTIATE_TEST_SUITE_P(Docs, ConformanceTest, ::testing::ValuesIn(TestFiles("docs")), TestName);
// network-policy-api's conformance suite: AdminNetworkPolicy, BaselineAdminNetworkPolicy
// (v1alpha1) and ClusterNetworkPolicy (v1alpha2), through the reference and the engine.
INSTANTIATE_TEST_SUITE_P(TiersV1Alpha1, ConformanceTest,
                         ::testing::ValuesIn(TestFiles("tiers/v1alpha1")), TestName);
INSTANTIATE_TEST_SUITE_P(TiersV1Alpha2, ConformanceTest,
                         ::testing::ValuesIn(TestFiles("tiers/v1alpha2")), TestName);
INSTANTIATE_TEST_SUITE_P(Addresses, ConformanceTest, ::testing::ValuesIn(TestFiles("addresses")),
                         TestName);

// Guards against a runfiles layout that finds no files (which would make the suite vacuous).
TEST(ConformanceFiles, AreFound) {
  EXPECT_GE(TestFiles("upstream").size(), 50u) << "looked in " << Resolve("testdata/upstream");
  EXPECT_GE(TestFiles("docs").size(), 10u) << "looked in " << Resolve("testdata/docs");
  EXPECT_GE(TestFiles("addresses").size(), 3u) << "looked in " << Resolve("testdata/addresses");
  EXPECT_EQ(TestFiles("tiers/v1alpha1").size(), 63u) << "looked in " << Resolve("testdata/tiers");
  EXPECT_EQ(TestFiles("tiers/v1alpha2").size(), 70u) << "looked in " << Resolve("testdata/tiers");
}

}  // namespace
}  // namespace np
