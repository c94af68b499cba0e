// `netpol connections` (who can reach what, on which ports) and `netpol diff` (what a change
// opens and closes), over np/analysis/connections.h.
#include <cstdio>
#include <iostream>
#include <map>
#include <set>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "np/analysis/connections.h"
#include "np/cli/cli.h"
#include "np/engine.h"

ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(std::string, from);
ABSL_DECLARE_FLAG(std::string, to);
ABSL_DECLARE_FLAG(std::string, port);
ABSL_DECLARE_FLAG(std::string, protocol);
ABSL_DECLARE_FLAG(bool, explain);
ABSL_FLAG(bool, pods_only, false,
          "connections, diff: leave out the address ranges outside the cluster.");

namespace np::cli {
namespace {

using analysis::Connection;
using analysis::ConnectionOptions;

int Fail(absl::string_view command, const absl::Status& s) {
  std::cerr << "netpol " << command << ": " << s.message() << "\n";
  return kExitError;
}

bool Given(const Args& args, absl::string_view flag) {
  for (const std::string& name : args.given_flags) {
    if (name == flag) return true;
  }
  return false;
}

// --port for the analyses: numbers, ranges ("8000-8090"), names ("http") or "all", comma
// separated; --protocol: names or "all". Unset: everything.
absl::StatusOr<ConnectionOptions> ConnectionOptionsFromFlags(const Args& args) {
  ConnectionOptions options;
  options.from = absl::GetFlag(FLAGS_from);
  options.to = absl::GetFlag(FLAGS_to);
  options.external = !absl::GetFlag(FLAGS_pods_only);
  options.explain = absl::GetFlag(FLAGS_explain);
  if (Given(args, "port")) {
    for (absl::string_view part :
         absl::StrSplit(absl::GetFlag(FLAGS_port), ',', absl::SkipWhitespace())) {
      if (part == "all") {
        options.ports.clear();
        options.port_names.clear();
        break;
      }
      std::vector<absl::string_view> ends = absl::StrSplit(part, absl::MaxSplits('-', 1));
      int first = 0, last = 0;
      if (absl::SimpleAtoi(ends[0], &first)) {
        last = first;
        if (ends.size() == 2 && !absl::SimpleAtoi(ends[1], &last)) last = -1;
        if (first < 1 || last > 65535 || last < first) {
          return absl::InvalidArgumentError(absl::StrCat(
              "bad port \"", part, "\": a number or range within 1-65535, a name, or all"));
        }
        options.ports.push_back(PortRange{static_cast<uint16_t>(first), static_cast<uint16_t>(last)});
      } else {
        options.port_names.push_back(std::string(part));
      }
    }
  }
  if (Given(args, "protocol") && absl::GetFlag(FLAGS_protocol) != "all") {
    absl::StatusOr<std::vector<Protocol>> protocols =
        ParseProtocolList(absl::GetFlag(FLAGS_protocol));
    if (!protocols.ok()) return protocols.status();
    options.protocols = *protocols;
  }
  return options;
}

absl::StatusOr<std::shared_ptr<const Engine>> BuildFor(const Cluster& cluster) {
  absl::StatusOr<EvaluationOptions> evaluation = np::cli::OptionsFromFlags();
  if (!evaluation.ok()) return evaluation.status();
  EngineOptions options;
  options.evaluation = *evaluation;
  return Engine::Build(cluster, options);
}

// A CSV field: quoted when it holds a comma, a quote or a line break (RFC 4180).
std::string CsvField(absl::string_view text) {
  if (text.find_first_of(",\"\n") == absl::string_view::npos) return std::string(text);
  return absl::StrCat("\"", absl::StrReplaceAll(text, {{"\"", "\"\""}}), "\"");
}

// The CSV columns of explanations: each side's deciders joined by " | ".
std::string CsvReasons(const analysis::Reasons& reasons) {
  return absl::StrCat(",", CsvField(absl::StrJoin(reasons.egress, " | ")), ",",
                      CsvField(absl::StrJoin(reasons.ingress, " | ")));
}

// One row per pair and protocol; `why` and (diffs) `why_not` columns when `explain`.
std::string Csv(const std::vector<Connection>& list, absl::string_view change, bool explain) {
  std::string out;
  for (const Connection& c : list) {
    for (Protocol p : kAllProtocols) {
      const auto& ranges = c.ports.by_protocol[ProtocolIndex(p)];
      if (ranges.empty()) continue;
      std::vector<std::string> items;
      for (const PortRange& r : ranges) {
        items.push_back(r.first == r.last ? absl::StrCat(r.first) : absl::StrCat(r.first, "-", r.last));
      }
      absl::StrAppend(&out, change.empty() ? "" : absl::StrCat(change, ","), c.from.name, ",",
                      c.to.name, ",", ProtocolName(p), ",", absl::StrJoin(items, " "));
      if (explain) {
        absl::StrAppend(&out, CsvReasons(c.why), change.empty() ? "" : CsvReasons(c.why_not));
      }
      absl::StrAppend(&out, "\n");
    }
  }
  return out;
}

// A Markdown cell of explanations: "egress: ... <br> ingress: ...", pipes escaped.
std::string MarkdownReasons(const analysis::Reasons& reasons) {
  std::vector<std::string> parts;
  if (!reasons.egress.empty()) parts.push_back("egress: " + absl::StrJoin(reasons.egress, "; "));
  if (!reasons.ingress.empty()) parts.push_back("ingress: " + absl::StrJoin(reasons.ingress, "; "));
  return absl::StrReplaceAll(absl::StrJoin(parts, "<br>"), {{"|", "\\|"}});
}

std::string MarkdownRows(const std::vector<Connection>& list, absl::string_view change,
                         bool explain) {
  std::string out;
  for (const Connection& c : list) {
    absl::StrAppend(&out, "| ", change.empty() ? "" : absl::StrCat(change, " | "), "`",
                    c.from.name, "` | `", c.to.name, "` | ", c.ports.ToString(), " |");
    if (explain) {
      absl::StrAppend(&out, " ", MarkdownReasons(c.why), " |",
                      change.empty() ? "" : absl::StrCat(" ", MarkdownReasons(c.why_not), " |"));
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

// A Graphviz digraph: pods as boxes (clustered by namespace), ranges as ellipses, one edge per
// pair labelled with its ports.
std::string Dot(const analysis::Connections& c) {
  // newrank=true: Graphviz 2.42 (Debian 12) fails on namespace clusters joined by many
  // labelled edges with its default ranking ("trouble in init_rank", lost edges).
  std::string out =
      "digraph connections {\n  rankdir=LR;\n  newrank=true;\n  node [fontname=\"Helvetica\"];\n";
  std::map<std::string, std::vector<std::string>> by_namespace;
  std::vector<std::string> ranges;
  std::set<std::string> used;
  for (const Connection& k : c.connections) {
    used.insert(k.from.name);
    used.insert(k.to.name);
  }
  for (const analysis::ConnectionEnd& e : c.ends) {
    if (!used.count(e.name)) continue;
    if (e.is_pod) {
      by_namespace[e.name.substr(0, e.name.find('/'))].push_back(e.name);
    } else {
      ranges.push_back(e.name);
    }
  }
  int cluster = 0;
  for (const auto& [ns, pods] : by_namespace) {
    absl::StrAppend(&out, "  subgraph cluster_", cluster++, " {\n    label=", JsonQuote(ns),
                    ";\n");
    for (const std::string& pod : pods) {
      absl::StrAppend(&out, "    ", JsonQuote(pod), " [shape=box];\n");
    }
    absl::StrAppend(&out, "  }\n");
  }
  for (const std::string& r : ranges) absl::StrAppend(&out, "  ", JsonQuote(r), " [shape=ellipse];\n");
  for (const Connection& k : c.connections) {
    absl::StrAppend(&out, "  ", JsonQuote(k.from.name), " -> ", JsonQuote(k.to.name),
                    " [label=", JsonQuote(k.ports.ToString()), "];\n");
  }
  absl::StrAppend(&out, "}\n");
  return out;
}

// Renders DOT with Graphviz's `dot` to stdout (svg, png).
absl::Status RenderWithDot(const std::string& dot, absl::string_view format) {
  std::string command = absl::StrCat("dot -T", format);
  FILE* pipe = popen(command.c_str(), "w");
  if (pipe == nullptr) return absl::UnavailableError("cannot run Graphviz's dot");
  size_t written = fwrite(dot.data(), 1, dot.size(), pipe);
  int status = pclose(pipe);
  if (written != dot.size() || status != 0) {
    return absl::UnavailableError(absl::StrCat(
        "Graphviz's `dot -T", format, "` failed (exit status ", status,
        "); install the Debian package graphviz, or use -o dot"));
  }
  return absl::OkStatus();
}

absl::Status Print(const std::string& text) {
  std::cout << text;
  std::cout.flush();
  if (!std::cout) return absl::DataLossError("cannot write the output");
  return absl::OkStatus();
}

}  // namespace

int RunConnections(const Args& args) {
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output != "text" && output != "json" && output != "csv" && output != "md" &&
      output != "dot" && output != "svg" && output != "png") {
    return Fail("connections", absl::InvalidArgumentError(
                                   "-o must be text, json, csv, md, dot, svg or png"));
  }
  absl::StatusOr<ConnectionOptions> options = ConnectionOptionsFromFlags(args);
  if (!options.ok()) return Fail("connections", options.status());
  if (options->explain && (output == "dot" || output == "svg" || output == "png")) {
    return Fail("connections", absl::InvalidArgumentError(
                                   "--explain goes with -o text, json, csv or md, not a graph"));
  }
  absl::StatusOr<Cluster> cluster = LoadCluster(args, /*print_warnings=*/false);
  if (!cluster.ok()) return Fail("connections", cluster.status());
  if (cluster->pod_count() == 0) {
    return Fail("connections", absl::InvalidArgumentError(
                                   "no pod in the input: there is nothing to list connections of"));
  }
  // An empty listing must mean "nothing is allowed", never "the filter matched nothing".
  if (absl::Status s = analysis::CheckFiltersMatch({&*cluster}, *options); !s.ok()) {
    return Fail("connections", s);
  }
  absl::StatusOr<std::shared_ptr<const Engine>> engine = BuildFor(*cluster);
  if (!engine.ok()) return Fail("connections", engine.status());
  absl::StatusOr<analysis::Connections> c = analysis::ListConnections(**engine, *options);
  if (!c.ok()) return Fail("connections", c.status());
  const bool explain = options->explain;
  std::string text;
  if (output == "json") {
    text = analysis::ConnectionsJson(*c);
  } else if (output == "csv") {
    text = absl::StrCat("from,to,protocol,ports", explain ? ",egress_why,ingress_why" : "", "\n",
                        Csv(c->connections, "", explain));
  } else if (output == "md") {
    text = absl::StrCat(explain ? "| From | To | Allowed | Why |\n|---|---|---|---|\n"
                                : "| From | To | Allowed |\n|---|---|---|\n",
                        MarkdownRows(c->connections, "", explain));
  } else if (output == "dot" || output == "svg" || output == "png") {
    text = Dot(*c);
    if (output != "dot") {
      absl::Status s = RenderWithDot(text, output);
      return s.ok() ? kExitOk : Fail("connections", s);
    }
  } else {
    text = c->connections.empty() ? "no connections are allowed between the selected ends\n"
                                   : analysis::FormatConnections(*c);
  }
  absl::Status s = Print(text);
  return s.ok() ? kExitOk : Fail("connections", s);
}

int RunDiff(const Args& args) {
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output != "text" && output != "json" && output != "csv" && output != "md") {
    return Fail("diff", absl::InvalidArgumentError("-o must be text, json, csv or md"));
  }
  if (args.before.empty() || args.after.empty()) {
    return Fail("diff", absl::InvalidArgumentError(
                            "give the two states: --before PATH ... --after PATH ..."));
  }
  if (!args.files.empty()) {
    return Fail("diff", absl::InvalidArgumentError("diff reads --before and --after, not -f"));
  }
  absl::StatusOr<ConnectionOptions> options = ConnectionOptionsFromFlags(args);
  if (!options.ok()) return Fail("diff", options.status());
  Args before = args, after = args;
  before.files = args.before;
  after.files = args.after;
  absl::StatusOr<Cluster> a = LoadCluster(before, /*print_warnings=*/false);
  if (!a.ok()) return Fail("diff", a.status());
  absl::StatusOr<Cluster> b = LoadCluster(after, /*print_warnings=*/false);
  if (!b.ok()) return Fail("diff", b.status());
  if (a->pod_count() == 0 && b->pod_count() == 0) {
    return Fail("diff", absl::InvalidArgumentError(
                            "no pod in either input: there are no connections to compare"));
  }
  if (absl::Status s = analysis::CheckFiltersMatch({&*a, &*b}, *options); !s.ok()) {
    return Fail("diff", s);
  }
  absl::StatusOr<std::shared_ptr<const Engine>> ea = BuildFor(*a);
  if (!ea.ok()) return Fail("diff", ea.status());
  // The after state as an update of the before state: the diff then visits only the pairs
  // the changed objects touch, whatever their kind.
  absl::StatusOr<analysis::ConnectionDiff> d =
      analysis::DiffChanges(**ea, analysis::ChangesBetween(*a, *b), *options);
  if (!d.ok()) return Fail("diff", d.status());
  const bool explain = options->explain;
  std::string text;
  if (output == "json") {
    text = analysis::DiffJson(*d);
  } else if (output == "csv") {
    text = absl::StrCat("change,from,to,protocol,ports",
                        explain ? ",egress_why,ingress_why,egress_why_not,ingress_why_not" : "",
                        "\n", Csv(d->added, "added", explain),
                        Csv(d->removed, "removed", explain));
  } else if (output == "md") {
    text = d->empty() ? "No change in connectivity.\n"
                      : absl::StrCat(explain ? "| Change | From | To | Ports | Why | Why not |\n"
                                               "|---|---|---|---|---|---|\n"
                                             : "| Change | From | To | Ports |\n|---|---|---|---|\n",
                                     MarkdownRows(d->added, "added", explain),
                                     MarkdownRows(d->removed, "removed", explain));
  } else {
    text = d->empty() ? "no change in connectivity\n" : analysis::FormatDiff(*d);
  }
  absl::Status s = Print(text);
  if (!s.ok()) return Fail("diff", s);
  return d->empty() ? kExitOk : kExitNo;
}

}  // namespace np::cli
