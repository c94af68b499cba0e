#include "np/testing/expectation.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <exception>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace np::testing {
namespace {

#define NP_RETURN_IF_ERROR(expr)         \
  do {                                   \
    absl::Status np_status_ = (expr);    \
    if (!np_status_.ok()) return np_status_; \
  } while (0)

// What every message needs: the file name, and the text to look at a node's first character.
struct Context {
  std::string file;
  absl::string_view text;
};

int LineOf(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  return mark.is_null() ? 0 : mark.line + 1;
}

absl::Status Error(const Context& ctx, int line, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(ctx.file, ":", line, ": ", message));
}

absl::Status Error(const Context& ctx, const YAML::Node& node, absl::string_view message) {
  return Error(ctx, LineOf(node), message);
}

// Every key of `map` must be one of `allowed`.
absl::Status CheckKeys(const Context& ctx, const YAML::Node& map, absl::string_view what,
                       std::initializer_list<absl::string_view> allowed) {
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it->first.IsScalar()) return Error(ctx, it->first, absl::StrCat(what, ": non-string key"));
    const std::string& key = it->first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return Error(ctx, it->first,
                   absl::StrCat(what, ": unknown field \"", key, "\" (expected one of: ",
                                absl::StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Required(const Context& ctx, const YAML::Node& map, absl::string_view what,
                      const char* field, YAML::Node* out) {
  YAML::Node value = map[field];
  if (!value.IsDefined() || value.IsNull()) {
    return Error(ctx, map, absl::StrCat(what, ": missing field \"", field, "\""));
  }
  *out = value;
  return absl::OkStatus();
}

absl::Status GetString(const Context& ctx, const YAML::Node& node, absl::string_view what,
                       std::string* out) {
  if (!node.IsScalar()) return Error(ctx, node, absl::StrCat(what, ": must be a string"));
  *out = node.Scalar();
  return absl::OkStatus();
}

absl::Status GetProtocol(const Context& ctx, const YAML::Node& node, absl::string_view what,
                         Protocol* out) {
  std::string text;
  NP_RETURN_IF_ERROR(GetString(ctx, node, what, &text));
  absl::StatusOr<Protocol> protocol = ParseProtocol(text);
  if (!protocol.ok()) {
    return Error(ctx, node,
                 absl::StrCat(what, ": unknown protocol \"", text, "\" (TCP, UDP or SCTP)"));
  }
  *out = *protocol;
  return absl::OkStatus();
}

absl::Status GetPort(const Context& ctx, const YAML::Node& node, absl::string_view what,
                     uint16_t* out) {
  long long value = 0;
  if (!node.IsScalar() || !YAML::convert<long long>::decode(node, value) || value < 1 ||
      value > 65535) {
    return Error(ctx, node,
                 absl::StrCat(what, ": port must be a number from 1 to 65535, not \"",
                              node.IsScalar() ? node.Scalar() : std::string("<non-scalar>"),
                              "\""));
  }
  *out = static_cast<uint16_t>(value);
  return absl::OkStatus();
}

absl::Status GetBool(const Context& ctx, const YAML::Node& node, absl::string_view what,
                     bool* out) {
  if (!node.IsScalar() || (node.Scalar() != "true" && node.Scalar() != "false")) {
    return Error(ctx, node, absl::StrCat(what, ": must be true or false"));
  }
  *out = node.Scalar() == "true";
  return absl::OkStatus();
}

absl::Status CheckEndpoint(const Context& ctx, const YAML::Node& node, absl::string_view what,
                           const std::string& endpoint) {
  if (IsPodName(endpoint) || IpAddress::Parse(endpoint).ok()) return absl::OkStatus();
  return Error(ctx, node,
               absl::StrCat(what, ": \"", endpoint,
                            "\" is neither a pod (namespace/name) nor an IP address"));
}

// The table of a case: a header of column pods, then one line per row pod with one symbol per
// column. An optional "-" in the header's first position marks the corner (upstream's
// TruthTable.PrettyPrint writes one).
absl::Status ParseTable(const Context& ctx, const YAML::Node& node, ReachabilityTable* table) {
  if (!node.IsScalar()) return Error(ctx, node, "table: must be a (block) string");
  // For a block scalar (`table: |`) the node starts at the indicator and its content begins on
  // the next line; line k of the content is then exactly line first_line + k.
  int first_line = LineOf(node);
  const YAML::Mark mark = node.Mark();
  if (!mark.is_null() && mark.pos >= 0 && static_cast<size_t>(mark.pos) < ctx.text.size() &&
      (ctx.text[mark.pos] == '|' || ctx.text[mark.pos] == '>')) {
    ++first_line;
  }
  const std::vector<std::string> lines = absl::StrSplit(node.Scalar(), '\n');
  bool have_header = false;
  absl::flat_hash_set<std::string> seen_columns, seen_rows;
  for (size_t k = 0; k < lines.size(); ++k) {
    const int line = first_line + static_cast<int>(k);
    std::vector<std::string> tokens = absl::StrSplit(lines[k], absl::ByAnyChar(" \t\r"),
                                                     absl::SkipEmpty());
    if (tokens.empty()) continue;
    if (!have_header) {
      have_header = true;
      if (tokens.front() == "-") tokens.erase(tokens.begin());
      if (tokens.empty()) return Error(ctx, line, "table: the header names no columns");
      for (const std::string& column : tokens) {
        if (!IsPodName(column)) {
          return Error(ctx, line, absl::StrCat("table: column \"", column,
                                               "\" is not a pod name (namespace/name)"));
        }
        if (!seen_columns.insert(column).second) {
          return Error(ctx, line, absl::StrCat("table: column \"", column, "\" appears twice"));
        }
      }
      table->columns = std::move(tokens);
      continue;
    }
    const std::string& row = tokens.front();
    if (!IsPodName(row)) {
      return Error(ctx, line,
                   absl::StrCat("table: row \"", row, "\" is not a pod name (namespace/name)"));
    }
    if (!seen_rows.insert(row).second) {
      return Error(ctx, line, absl::StrCat("table: row \"", row, "\" appears twice"));
    }
    if (tokens.size() - 1 != table->columns.size()) {
      return Error(ctx, line,
                   absl::StrCat("table: row ", row, " has ", tokens.size() - 1,
                                " cells but the header has ", table->columns.size(), " columns"));
    }
    for (size_t c = 1; c < tokens.size(); ++c) {
      Cell cell;
      if (tokens[c] == ".") {
        cell = Cell::kAllowed;
      } else if (tokens[c] == "X") {
        cell = Cell::kDenied;
      } else if (tokens[c] == "?") {
        cell = Cell::kUnchecked;
      } else {
        return Error(ctx, line,
                     absl::StrCat("table: ", row, " -> ", table->columns[c - 1],
                                  ": unknown symbol \"", tokens[c],
                                  "\" (\".\" allowed, \"X\" denied, \"?\" not checked)"));
      }
      table->cells.push_back(cell);
    }
    table->rows.push_back(row);
    table->row_lines.push_back(line);
  }
  if (!have_header) return Error(ctx, node, "table: empty");
  if (table->rows.empty()) return Error(ctx, node, "table: no rows under the header");
  return absl::OkStatus();
}

absl::Status ParseCase(const Context& ctx, const YAML::Node& node, ReachabilityTable* table) {
  if (!node.IsMap()) return Error(ctx, node, "cases[]: must be a mapping");
  NP_RETURN_IF_ERROR(CheckKeys(ctx, node, "cases[]", {"protocol", "port", "table"}));
  table->line = LineOf(node);
  YAML::Node value;
  NP_RETURN_IF_ERROR(Required(ctx, node, "cases[]", "protocol", &value));
  NP_RETURN_IF_ERROR(GetProtocol(ctx, value, "cases[].protocol", &table->protocol));
  NP_RETURN_IF_ERROR(Required(ctx, node, "cases[]", "port", &value));
  NP_RETURN_IF_ERROR(GetPort(ctx, value, "cases[].port", &table->port));
  NP_RETURN_IF_ERROR(Required(ctx, node, "cases[]", "table", &value));
  return ParseTable(ctx, value, table);
}

absl::Status ParseFlow(const Context& ctx, const YAML::Node& node, FlowExpectation* flow) {
  if (!node.IsMap()) return Error(ctx, node, "flows[]: must be a mapping");
  NP_RETURN_IF_ERROR(
      CheckKeys(ctx, node, "flows[]", {"from", "to", "protocol", "port", "allowed"}));
  flow->line = LineOf(node);
  YAML::Node value;
  NP_RETURN_IF_ERROR(Required(ctx, node, "flows[]", "from", &value));
  NP_RETURN_IF_ERROR(GetString(ctx, value, "flows[].from", &flow->from));
  NP_RETURN_IF_ERROR(CheckEndpoint(ctx, value, "flows[].from", flow->from));
  NP_RETURN_IF_ERROR(Required(ctx, node, "flows[]", "to", &value));
  NP_RETURN_IF_ERROR(GetString(ctx, value, "flows[].to", &flow->to));
  NP_RETURN_IF_ERROR(CheckEndpoint(ctx, value, "flows[].to", flow->to));
  NP_RETURN_IF_ERROR(Required(ctx, node, "flows[]", "protocol", &value));
  NP_RETURN_IF_ERROR(GetProtocol(ctx, value, "flows[].protocol", &flow->protocol));
  NP_RETURN_IF_ERROR(Required(ctx, node, "flows[]", "port", &value));
  NP_RETURN_IF_ERROR(GetPort(ctx, value, "flows[].port", &flow->port));
  NP_RETURN_IF_ERROR(Required(ctx, node, "flows[]", "allowed", &value));
  return GetBool(ctx, value, "flows[].allowed", &flow->allowed);
}

absl::Status ParseOptions(const Context& ctx, const YAML::Node& node,
                          EvaluationOptions* options) {
  if (node.IsNull()) return absl::OkStatus();
  if (!node.IsMap()) return Error(ctx, node, "options: must be a mapping");
  NP_RETURN_IF_ERROR(CheckKeys(ctx, node, "options", {"ipBlockScope", "alwaysAllowSelf"}));
  if (YAML::Node scope = node["ipBlockScope"]; scope.IsDefined()) {
    std::string text;
    NP_RETURN_IF_ERROR(GetString(ctx, scope, "options.ipBlockScope", &text));
    if (text == "AllAddresses") {
      options->ip_block_scope = EvaluationOptions::IpBlockScope::kAllAddresses;
    } else if (text == "ExternalOnly") {
      options->ip_block_scope = EvaluationOptions::IpBlockScope::kExternalOnly;
    } else {
      return Error(ctx, scope,
                   absl::StrCat("options.ipBlockScope: \"", text,
                                "\" is not AllAddresses or ExternalOnly"));
    }
  }
  if (YAML::Node self = node["alwaysAllowSelf"]; self.IsDefined()) {
    NP_RETURN_IF_ERROR(
        GetBool(ctx, self, "options.alwaysAllowSelf", &options->always_allow_self));
  }
  return absl::OkStatus();
}

// One document; appends to `out` when it is a ReachabilityExpectation.
absl::Status ParseDocument(const Context& ctx, const YAML::Node& doc,
                           std::vector<Expectation>* out) {
  if (!doc.IsMap()) return absl::OkStatus();  // empty document, or not an object at all
  const YAML::Node kind = doc["kind"];
  if (!kind.IsScalar() || kind.Scalar() != kExpectationKind) return absl::OkStatus();

  const std::string what(kExpectationKind);
  NP_RETURN_IF_ERROR(CheckKeys(
      ctx, doc, what, {"apiVersion", "kind", "metadata", "source", "options", "cases", "flows"}));
  Expectation e;
  e.file = ctx.file;
  e.line = LineOf(doc);
  YAML::Node value;
  std::string api_version;
  NP_RETURN_IF_ERROR(Required(ctx, doc, what, "apiVersion", &value));
  NP_RETURN_IF_ERROR(GetString(ctx, value, "apiVersion", &api_version));
  if (api_version != kExpectationApiVersion) {
    return Error(ctx, value, absl::StrCat("apiVersion: \"", api_version, "\", expected \"",
                                          kExpectationApiVersion, "\""));
  }
  NP_RETURN_IF_ERROR(Required(ctx, doc, what, "metadata", &value));
  if (!value.IsMap()) return Error(ctx, value, "metadata: must be a mapping");
  NP_RETURN_IF_ERROR(CheckKeys(ctx, value, "metadata", {"name"}));
  YAML::Node name;
  NP_RETURN_IF_ERROR(Required(ctx, value, "metadata", "name", &name));
  NP_RETURN_IF_ERROR(GetString(ctx, name, "metadata.name", &e.name));
  if (e.name.empty()) return Error(ctx, name, "metadata.name: empty");
  NP_RETURN_IF_ERROR(Required(ctx, doc, what, "source", &value));
  NP_RETURN_IF_ERROR(GetString(ctx, value, "source", &e.source));
  if (e.source.empty()) return Error(ctx, value, "source: empty");
  if (YAML::Node options = doc["options"]; options.IsDefined()) {
    NP_RETURN_IF_ERROR(ParseOptions(ctx, options, &e.options));
  }
  if (YAML::Node cases = doc["cases"]; cases.IsDefined() && !cases.IsNull()) {
    if (!cases.IsSequence()) return Error(ctx, cases, "cases: must be a list");
    for (const YAML::Node& item : cases) {
      ReachabilityTable table;
      NP_RETURN_IF_ERROR(ParseCase(ctx, item, &table));
      e.tables.push_back(std::move(table));
    }
  }
  if (YAML::Node flows = doc["flows"]; flows.IsDefined() && !flows.IsNull()) {
    if (!flows.IsSequence()) return Error(ctx, flows, "flows: must be a list");
    for (const YAML::Node& item : flows) {
      FlowExpectation flow;
      NP_RETURN_IF_ERROR(ParseFlow(ctx, item, &flow));
      e.flows.push_back(std::move(flow));
    }
  }
  if (e.tables.empty() && e.flows.empty()) {
    return Error(ctx, doc, absl::StrCat(what, " ", e.name, ": no cases and no flows"));
  }
  for (const Expectation& other : *out) {
    if (other.name == e.name) {
      return Error(ctx, doc, absl::StrCat(what, " ", e.name, ": name already used at line ",
                                          other.line));
    }
  }
  out->push_back(std::move(e));
  return absl::OkStatus();
}

}  // namespace

char CellSymbol(Cell cell) {
  switch (cell) {
    case Cell::kAllowed:
      return '.';
    case Cell::kDenied:
      return 'X';
    case Cell::kUnchecked:
      return '?';
  }
  return '?';
}

bool IsPodName(absl::string_view endpoint) {
  const size_t slash = endpoint.find('/');
  if (slash == absl::string_view::npos || slash == 0 || slash + 1 == endpoint.size()) return false;
  // The namespace is a DNS label (lower-case letters, digits, '-'), which no address or CIDR
  // prefix is; the pod name is a DNS subdomain (also '.').
  for (char c : endpoint.substr(0, slash)) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  for (char c : endpoint.substr(slash + 1)) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  }
  return true;
}

absl::StatusOr<std::vector<Expectation>> ParseExpectations(absl::string_view text,
                                                           absl::string_view file_name) {
  Context ctx{std::string(file_name), text};
  std::vector<Expectation> out;
  try {
    const std::vector<YAML::Node> docs = YAML::LoadAll(std::string(text));
    for (const YAML::Node& doc : docs) {
      NP_RETURN_IF_ERROR(ParseDocument(ctx, doc, &out));
    }
  } catch (const YAML::Exception& e) {
    return Error(ctx, e.mark.is_null() ? 0 : e.mark.line + 1, e.msg);
  } catch (const std::exception& e) {
    return Error(ctx, 0, e.what());
  }
  return out;
}

absl::StatusOr<std::vector<Expectation>> ReadExpectations(absl::string_view path) {
  std::ifstream in{std::string(path), std::ios::binary};
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  return ParseExpectations(text.str(), path);
}

std::string FormatCells(const ReachabilityTable& table, absl::Span<const Cell> cells,
                        absl::string_view indent) {
  size_t row_width = 0;
  for (const std::string& row : table.rows) row_width = std::max(row_width, row.size());
  std::string out(indent);
  out.append(row_width, ' ');
  for (const std::string& column : table.columns) absl::StrAppend(&out, " ", column);
  out.push_back('\n');
  for (size_t r = 0; r < table.rows.size(); ++r) {
    std::string line(indent);
    absl::StrAppend(&line, table.rows[r]);
    line.append(row_width - table.rows[r].size(), ' ');
    for (size_t c = 0; c < table.columns.size(); ++c) {
      const size_t width = std::max<size_t>(table.columns[c].size(), 1);
      const size_t index = r * table.columns.size() + c;
      const char symbol = index < cells.size() ? CellSymbol(cells[index]) : ' ';
      line.push_back(' ');
      line.append((width - 1) / 2, ' ');
      line.push_back(symbol);
      line.append(width - 1 - (width - 1) / 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

}  // namespace np::testing
