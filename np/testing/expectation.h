// np/testing/expectation.h — reads ReachabilityExpectation documents: the expected truth tables
// and single flows that testdata/upstream and testdata/docs carry next to their cluster objects
// (format: testdata/upstream/README.md). Test-only; the conformance test and the probe harness
// compare them with np's verdicts and with real packets.
//
//   absl::StatusOr<std::vector<np::testing::Expectation>> expectations =
//       np::testing::ReadExpectations("testdata/upstream/default-deny-ingress.yaml");
//   if (!expectations.ok()) { ... expectations.status() names file:line ... }
//   for (const np::testing::ReachabilityTable& table : expectations->front().tables) {
//     for (size_t r = 0; r < table.rows.size(); ++r)
//       for (size_t c = 0; c < table.columns.size(); ++c)
//         if (table.at(r, c) == np::testing::Cell::kDenied) { ... rows[r] -> columns[c] ... }
//   }
//
// Every other document of the file (Namespace, Pod, NetworkPolicy, ...) is skipped. Pod names
// in table headers and flows are not resolved here: that needs the Cluster and is the caller's
// job. Malformed input is an error Status naming the file and line; nothing throws or aborts.
//
// Note: inside namespace np, `testing::` names this namespace; write `::testing::` for GoogleTest.
//
// Thread safety: plain values; the functions keep no state and may be called from any thread.
#ifndef NP_TESTING_EXPECTATION_H_
#define NP_TESTING_EXPECTATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "np/types.h"
#include "np/verdict.h"

namespace np::testing {

inline constexpr absl::string_view kExpectationApiVersion = "np.dev/v1alpha1";
inline constexpr absl::string_view kExpectationKind = "ReachabilityExpectation";

// One cell of a truth table: "." allowed, "X" denied, "?" not checked.
enum class Cell : uint8_t { kUnchecked, kAllowed, kDenied };
char CellSymbol(Cell cell);  // '?', '.', 'X'

// One `cases` entry: the expected verdict of every (row pod -> column pod) flow on one protocol
// and destination port.
struct ReachabilityTable {
  Protocol protocol = Protocol::kTCP;
  uint16_t port = 0;
  int line = 0;                      // line of the case entry
  std::vector<std::string> columns;  // destination pods, "namespace/name"
  std::vector<std::string> rows;     // source pods, "namespace/name"
  std::vector<int> row_lines;        // line of each row (exact for a block scalar `table: |`)
  std::vector<Cell> cells;           // rows.size() * columns.size(), row-major

  Cell at(size_t row, size_t column) const { return cells[row * columns.size() + column]; }
};

// One `flows` entry. An end is a pod ("namespace/name") or an IP address (outside the cluster,
// or any address the caller resolves itself).
struct FlowExpectation {
  std::string from;
  std::string to;
  Protocol protocol = Protocol::kTCP;
  uint16_t port = 0;
  bool allowed = false;
  int line = 0;
};

// One ReachabilityExpectation document.
struct Expectation {
  std::string name;    // metadata.name
  std::string source;  // where the expectation comes from (upstream It(), documentation prose)
  std::string file;    // the file it was read from (as given)
  int line = 0;        // line of the document's first key
  EvaluationOptions options;
  std::vector<ReachabilityTable> tables;
  std::vector<FlowExpectation> flows;
};

// Reads every ReachabilityExpectation document of a multi-document YAML file, in file order.
// NotFound when the file cannot be read; InvalidArgument, "file:line: what", on the first
// malformed expectation (unknown symbol, a row whose cell count differs from the header,
// duplicate pod in a header, unknown field, bad protocol or port, ...).
absl::StatusOr<std::vector<Expectation>> ReadExpectations(absl::string_view path);

// The same for text already in memory; `file_name` is used in messages and Expectation::file.
absl::StatusOr<std::vector<Expectation>> ParseExpectations(absl::string_view text,
                                                           absl::string_view file_name);

// True for "namespace/name"; false for anything else (e.g. an IP address).
bool IsPodName(absl::string_view endpoint);

// Renders `cells` (row-major, rows x columns of `table`) in the table's own layout, e.g.
//          x/a x/b
//     x/a   ?   X
// Each line starts with `indent`.
std::string FormatCells(const ReachabilityTable& table, absl::Span<const Cell> cells,
                        absl::string_view indent = "");
inline std::string FormatTable(const ReachabilityTable& table, absl::string_view indent = "") {
  return FormatCells(table, table.cells, indent);
}

}  // namespace np::testing

#endif  // NP_TESTING_EXPECTATION_H_
