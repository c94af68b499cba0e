// np/agent/metrics.h — what `netpol agent` tells Prometheus and its log reader: counters,
// an update-latency histogram and program sizes in the Prometheus text exposition format
// (version 0.0.4), served by a tiny HTTP/1.0 server on its own thread; and structured logs,
// one JSON object per line.
//
//   np::agent::AgentMetrics metrics;
//   metrics.CountEvent(/*applied=*/true);
//   auto server = np::agent::MetricsServer::Start("127.0.0.1:9464", &metrics);
//   // curl http://127.0.0.1:9464/metrics
//   np::agent::JsonLog log(&std::cerr);
//   log.Write("info", "event applied", {np::agent::LogField::Text("object", "Pod x/a")});
//
// Thread safety: AgentMetrics and JsonLog are thread-safe (a mutex each: the agent's loop
// writes, the server thread reads). A MetricsServer serves until it is destroyed.
#ifndef NP_AGENT_METRICS_H_
#define NP_AGENT_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "np/lower_align.h"

namespace np::agent {

// Upper bounds (seconds) of the update-latency histogram's buckets; +Inf is implied.
inline constexpr std::array<double, 14> kLatencyBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

class AgentMetrics {
 public:
  // np_agent_events_total{result="applied"|"rejected"}. A bookmark, and a delete of what is
  // already gone (a relist's), count as applied: they were read and need nothing.
  void CountEvent(bool applied);
  // How many events were rejected so far (the counter above), for tools that drive an Agent.
  uint64_t rejected_events() const;
  // One kernel update that took effect: every event it carried waited `latency` (from being
  // read to the backend's Apply returning); `items` is the program's size as the backend's
  // Capacity reports it (item name -> used).
  void RecordSync(absl::Time done, const std::vector<absl::Duration>& latencies,
                  const std::map<std::string, uint64_t>& items);
  // A whole sync whose lowering was numbered onto the installed program (np/lower_align.h):
  // np_agent_aligned_syncs_total{result="aligned"|"compacted"}, the items it changed and
  // added per kind (np_agent_aligned_items_total{kind,change}), and the unused ids the
  // program now holds (np_agent_unused_items{kind}).
  void RecordAlignment(const AlignStats& stats);
  // A sync that sent the kernel a delta (Backend::UpdateDelta) instead of a whole program:
  // np_agent_delta_syncs_total{kind="pod"|"policy"}. `policy`: policy, tier policy,
  // namespace or node events that kept every identity (np/lower_delta.h LowerPolicyChange),
  // else pod events. Syncs minus these are the whole lowerings.
  void CountDeltaSync(bool policy);
  void CountSyncFailure();                 // np_agent_sync_failures_total
  void SetPendingEvents(int64_t pending);  // applied to the engine, not yet in the kernel

  // The exposition text.
  std::string Render() const;

 private:
  mutable std::mutex mutex_;
  uint64_t applied_ = 0, rejected_ = 0, syncs_ = 0, sync_failures_ = 0;
  int64_t pending_ = 0;
  std::array<uint64_t, kLatencyBuckets.size()> bucket_counts_{};  // not cumulative
  uint64_t latency_count_ = 0;
  double latency_sum_ = 0;
  std::map<std::string, uint64_t> items_;
  double last_sync_ = 0;  // Unix seconds; 0 before the first
  uint64_t pod_delta_syncs_ = 0, policy_delta_syncs_ = 0;
  uint64_t aligned_syncs_ = 0, compacted_syncs_ = 0;
  std::array<uint64_t, 3> aligned_changed_{}, aligned_added_{};  // identities, peer sets, tables
  std::array<int64_t, 3> unused_items_{};
};

// GET (any path) answers with the metrics; anything else gets 405. One request per
// connection (HTTP/1.0), requests read with a short timeout so a stuck client cannot hold it.
class MetricsServer {
 public:
  // `address` is "HOST:PORT" with a numeric IPv4 host, e.g. 127.0.0.1:9464; port 0 picks a
  // free one (see port()).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(absl::string_view address,
                                                              const AgentMetrics* metrics);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  int port() const { return port_; }

 private:
  MetricsServer(int fd, int port, const AgentMetrics* metrics);
  void Serve();

  int fd_;
  int port_;
  const AgentMetrics* metrics_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// One field of a log line: a key and its value, already JSON.
struct LogField {
  std::string key;
  std::string json;
  static LogField Text(absl::string_view key, absl::string_view value);
  static LogField Number(absl::string_view key, double value);
};

// {"time":"2026-11-30T12:00:00.123Z","level":"info","msg":"...", fields...} per line.
class JsonLog {
 public:
  explicit JsonLog(std::ostream* out) : out_(out) {}
  void Write(absl::string_view level, absl::string_view message,
             std::initializer_list<LogField> fields = {});

 private:
  std::mutex mutex_;
  std::ostream* out_;
};

}  // namespace np::agent

#endif  // NP_AGENT_METRICS_H_
