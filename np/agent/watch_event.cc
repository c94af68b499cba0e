#include "np/agent/watch_event.h"

#include <algorithm>
#include <iterator>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "np/loader.h"

namespace np::agent {

namespace {

bool IsBracketOrQuote(char c) { return c == '"' || c == '{' || c == '[' || c == '}' || c == ']'; }

}  // namespace

size_t ScanJsonValue(absl::string_view text, size_t start, JsonValueScan* scan) {
  size_t i = scan->next;
  int depth = scan->depth;
  bool in_string = scan->in_string;
  if (scan->escaped && i < text.size()) {
    ++i;  // the byte after a backslash that ended the text scanned before
    scan->escaped = false;
  }
  for (; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      // Most of an object's text is inside strings: run to the next quote or backslash.
      while (i < text.size() && text[i] != '"' && text[i] != '\\') ++i;
      if (i >= text.size()) break;
      if (text[i] == '\\') {
        if (++i >= text.size()) scan->escaped = true;
      } else {
        in_string = false;
        if (depth == 0) return i + 1 - start;
      }
    } else if (depth > 0 && !IsBracketOrQuote(ch)) {
      // Inside a collection only brackets and quotes matter: run to the next one (an indented
      // object is mostly blanks and punctuation between its strings).
      while (i + 1 < text.size() && !IsBracketOrQuote(text[i + 1])) ++i;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '{' || ch == '[') {
      ++depth;
    } else if (ch == '}' || ch == ']') {
      if (--depth == 0) return i + 1 - start;
      if (depth < 0) return i - start;
    } else if (depth == 0 && (ch == ',' || ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r')) {
      return i - start;
    }
  }
  scan->next = text.size();
  scan->depth = depth;
  scan->in_string = in_string;
  return absl::string_view::npos;
}

absl::string_view JsonValueAt(absl::string_view text, size_t i) {
  JsonValueScan scan;
  scan.next = i;
  const size_t size = ScanJsonValue(text, i, &scan);
  if (size != absl::string_view::npos) return text.substr(i, size);
  return scan.depth == 0 && !scan.in_string ? text.substr(i) : absl::string_view();
}

absl::Status SplitWatchEvent(absl::string_view text, absl::string_view* type,
                             absl::string_view* object) {
  size_t i = text.find_first_not_of(" \t\r\n");
  if (i == absl::string_view::npos || text[i] != '{') {
    return absl::InvalidArgumentError("watch event: not a JSON object");
  }
  ++i;
  while (i < text.size()) {
    i = text.find_first_not_of(" \t\r\n,", i);
    if (i == absl::string_view::npos || text[i] == '}') break;
    absl::string_view key = JsonValueAt(text, i);
    if (key.size() < 2 || key.front() != '"') {
      return absl::InvalidArgumentError("watch event: expected a field name");
    }
    i = text.find_first_not_of(" \t\r\n", i + key.size());
    if (i == absl::string_view::npos || text[i] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("watch event: no value for ", key));
    }
    i = text.find_first_not_of(" \t\r\n", i + 1);
    if (i == absl::string_view::npos) break;
    absl::string_view value = JsonValueAt(text, i);
    if (value.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("watch event: ", key, " is cut short"));
    }
    if (key == "\"type\"") *type = value;
    if (key == "\"object\"") *object = value;
    i += value.size();
  }
  if (type->empty() || object->empty()) {
    return absl::InvalidArgumentError("watch event: needs \"type\" and \"object\"");
  }
  return absl::OkStatus();
}

std::string DescribeChange(const Change& change) {
  // The kinds in Change::object's order, as literals: GetTypeName built the full name as a
  // new string, twice, and descriptor() passes the descriptor table's once-check, per event.
  static constexpr const char* kKinds[] = {"Namespace",
                                           "Pod",
                                           "NetworkPolicy",
                                           "AdminNetworkPolicy",
                                           "BaselineAdminNetworkPolicy",
                                           "ClusterNetworkPolicy",
                                           "Node"};
  static_assert(std::size(kKinds) == std::variant_size_v<decltype(Change::object)>);
  return std::visit(
      [&](const auto& object) {
        const std::string& ns = object.metadata().namespace_();
        return absl::StrCat(kKinds[change.object.index()], " ", ns, ns.empty() ? "" : "/",
                            object.metadata().name());
      },
      change.object);
}

absl::StatusOr<WatchEvent> ParseWatchEvent(absl::string_view text, absl::string_view kind) {
  absl::string_view type, object;
  if (absl::Status s = SplitWatchEvent(text, &type, &object); !s.ok()) return s;
  WatchEvent event;
  if (type == "\"BOOKMARK\"") {
    event.type = WatchEvent::Type::kBookmark;
    return event;
  }
  if (type == "\"ERROR\"") {
    // The API server's Status (e.g. 410 Gone: the watch must be restarted with a relist).
    event.type = WatchEvent::Type::kError;
    event.what = std::string(object.substr(0, 1024));
    return event;
  }
  if (type == "\"ADDED\"") {
    event.type = WatchEvent::Type::kAdded;
  } else if (type == "\"MODIFIED\"") {
    event.type = WatchEvent::Type::kModified;
  } else if (type == "\"DELETED\"") {
    event.type = WatchEvent::Type::kDeleted;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("watch event: type ", type.substr(0, 64),
                     " is not \"ADDED\", \"MODIFIED\", \"DELETED\", \"BOOKMARK\" or \"ERROR\""));
  }
  absl::StatusOr<Change> change = ParseChangeOfKind(object, "watch event", kind);
  if (!change.ok()) return change.status();
  if (event.type == WatchEvent::Type::kDeleted) change->op = Change::Op::kDelete;
  event.what = DescribeChange(*change);
  event.change = *std::move(change);
  return event;
}

std::vector<std::string> EventSplitter::Feed(absl::string_view bytes) {
  std::vector<std::string> out;
  while (!bytes.empty()) {
    const size_t newline = bytes.find('\n');
    if (newline == absl::string_view::npos) {
      partial_line_.append(bytes.data(), bytes.size());
      if (partial_line_.size() + pending_.size() > max_event_bytes_) {
        // One line without end: hand out what fits, skip the rest of the event.
        const std::string line = std::move(partial_line_);
        partial_line_.clear();
        TakeCut(line, &out);
      }
      break;
    }
    if (partial_line_.empty()) {
      TakeLine(bytes.substr(0, newline), &out);
    } else {
      partial_line_.append(bytes.data(), newline);
      std::string line = std::move(partial_line_);
      partial_line_.clear();
      TakeLine(line, &out);
    }
    bytes.remove_prefix(newline + 1);
  }
  return out;
}

std::vector<std::string> EventSplitter::Finish() {
  std::vector<std::string> out;
  if (!partial_line_.empty()) {
    std::string line = std::move(partial_line_);
    partial_line_.clear();
    TakeLine(line, &out);
  }
  Flush(&out);
  skipping_ = false;
  return out;
}

void EventSplitter::Flush(std::vector<std::string>* out) {
  if (pending_.find_first_not_of(" \t\r\n") != std::string::npos) {
    out->push_back(std::move(pending_));
  }
  pending_.clear();
  scan_ = JsonValueScan();
  scan_start_ = std::string::npos;
  closed_ = false;
}

void EventSplitter::TakeCut(absl::string_view line, std::vector<std::string>* out) {
  const size_t room = max_event_bytes_ - std::min(max_event_bytes_, pending_.size());
  pending_.append(line.data(), std::min(line.size(), room));
  Flush(out);
  skipping_ = true;
}

void EventSplitter::TakeLine(absl::string_view line, std::vector<std::string>* out) {
  const bool starts_event = !line.empty() && line.front() == '{';
  if (skipping_) {
    if (!starts_event) return;
    skipping_ = false;
  }
  if (starts_event) Flush(out);  // whatever was pending never completed
  if (pending_.empty()) {
    const size_t text = line.find_first_not_of(" \t\r");
    if (text == absl::string_view::npos) return;  // blank lines between events
    if (line[text] != '{') {
      out->push_back(std::string(line));  // not an event: ParseWatchEvent says why
      return;
    }
  }
  if (pending_.size() + line.size() + 1 > max_event_bytes_) {
    TakeCut(line, out);
    return;
  }
  absl::StrAppend(&pending_, line, "\n");
  // The object is scanned as its lines come, each byte once (rescanning the whole event at
  // each line that ends with "}" made an indented event quadratic).
  if (!closed_) {
    if (scan_start_ == std::string::npos) {
      scan_start_ = pending_.find_first_not_of(" \t\r\n");
      scan_.next = scan_start_;
    }
    closed_ = ScanJsonValue(pending_, scan_start_, &scan_) != absl::string_view::npos;
  }
  // Complete? Only on the first line (one event per line) and on a line that closes an
  // object (an indented event ends with "}").
  const bool first_line = pending_.size() == line.size() + 1;
  const size_t last = line.find_last_not_of(" \t\r");
  if (!first_line && (last == absl::string_view::npos || line[last] != '}')) return;
  // Text after the closing brace is handed out too: SplitWatchEvent reads the first object.
  if (closed_) Flush(out);
}

}  // namespace np::agent
