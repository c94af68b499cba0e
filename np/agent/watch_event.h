// np/agent/watch_event.h — Kubernetes watch events read into engine changes: the stream that
// `kubectl get pods,namespaces,networkpolicies -A --watch --output-watch-events -o json`
// prints (each event one indented JSON object; the policy tier kinds and Nodes too) or the
// watch API streams (one per line):
// {"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": {...}}.
//
//   np::agent::EventSplitter splitter;
//   for (std::string& text : splitter.Feed(bytes_read)) {
//     absl::StatusOr<np::agent::WatchEvent> event = np::agent::ParseWatchEvent(text, "Pod");
//     if (event.ok() && event->change) live.Apply({*event->change});
//   }
//
// Objects may lack kind and apiVersion (as a client-go informer hands them out): the kind
// given to ParseWatchEvent is then theirs. Only the envelope is read here; the object is
// decoded by np::ParseChangeOfKind (np/loader.h), so its errors carry field paths.
//
// Thread safety: the functions are pure; an EventSplitter is used by one thread.
#ifndef NP_AGENT_WATCH_EVENT_H_
#define NP_AGENT_WATCH_EVENT_H_

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/cluster.h"

namespace np::agent {

// The text of the JSON value that starts at text[i] (an object, array, string or scalar),
// found by matching brackets outside strings; empty when the text ends first.
absl::string_view JsonValueAt(absl::string_view text, size_t i);

// Where JsonValueAt's scan of a value stands, so that a value arriving in pieces (an event's
// lines) is scanned once: ScanJsonValue goes on from `next` when the text has grown.
struct JsonValueScan {
  size_t next = 0;  // the first byte not scanned yet
  int depth = 0;
  bool in_string = false;
  bool escaped = false;  // the text scanned so far ended with a backslash in a string
};
// Scans `text` (the value starting at text[start]) from scan->next on: the value's size once
// it ends, else npos with `scan` ready for more text after the same bytes.
size_t ScanJsonValue(absl::string_view text, size_t start, JsonValueScan* scan);

// Splits a watch event into the raw JSON texts of its "type" (quotes included) and "object".
absl::Status SplitWatchEvent(absl::string_view text, absl::string_view* type,
                             absl::string_view* object);

struct WatchEvent {
  enum class Type { kAdded, kModified, kDeleted, kBookmark, kError };
  Type type = Type::kAdded;
  // ADDED and MODIFIED: an upsert; DELETED: a delete (only the metadata is read). Empty for
  // BOOKMARK and ERROR.
  std::optional<Change> change;
  // "Pod x/a", "Namespace x", ...: what log lines name. For ERROR, the status object's text.
  std::string what;
};

// One event. `kind` is the kind of an object that names none ("" : the object must name it).
// Errors say what is wrong with the envelope, or carry the loader's error (line, field path).
absl::StatusOr<WatchEvent> ParseWatchEvent(absl::string_view text, absl::string_view kind);

// "Pod x/a" for a change.
std::string DescribeChange(const Change& change);

// Cuts a byte stream into event texts. An event is one JSON object, on one line or on
// several (kubectl indents them); events follow each other with optional blank lines.
// Malformed input never swallows the events after it: a line that starts with '{' in the
// first column always starts a new event (inner lines of an indented event are indented),
// and what was pending is handed out as it is, for ParseWatchEvent to reject. Text that does
// not start with '{' is handed out line by line. An event longer than `max_event_bytes` is
// handed out cut (it fails to parse) and the rest of it is skipped, so memory stays bounded.
class EventSplitter {
 public:
  static constexpr size_t kDefaultMaxEventBytes = size_t{16} << 20;
  explicit EventSplitter(size_t max_event_bytes = kDefaultMaxEventBytes)
      : max_event_bytes_(max_event_bytes) {}

  // The events completed by `bytes`, in order.
  std::vector<std::string> Feed(absl::string_view bytes);
  // End of input: whatever is pending (an event cut short, a last line without newline).
  std::vector<std::string> Finish();

 private:
  void TakeLine(absl::string_view line, std::vector<std::string>* out);
  // An event past max_event_bytes_: hands out what fits of it, skips the rest.
  void TakeCut(absl::string_view line, std::vector<std::string>* out);
  void Flush(std::vector<std::string>* out);

  size_t max_event_bytes_;
  std::string partial_line_;  // bytes after the last newline
  std::string pending_;       // lines of the event being read
  JsonValueScan scan_;        // of pending_'s object, from scan_start_
  size_t scan_start_ = std::string::npos;
  bool closed_ = false;       // the object in pending_ has ended
  bool skipping_ = false;     // inside an oversized event: drop lines until the next '{'
};

}  // namespace np::agent

#endif  // NP_AGENT_WATCH_EVENT_H_
