#include "np/agent/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "np/verdict.h"

namespace np::agent {

void AgentMetrics::CountEvent(bool applied) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++(applied ? applied_ : rejected_);
}

uint64_t AgentMetrics::rejected_events() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rejected_;
}

void AgentMetrics::RecordSync(absl::Time done, const std::vector<absl::Duration>& latencies,
                              const std::map<std::string, uint64_t>& items) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++syncs_;
  for (absl::Duration latency : latencies) {
    const double seconds = absl::ToDoubleSeconds(latency);
    size_t b = 0;
    while (b < kLatencyBuckets.size() && seconds > kLatencyBuckets[b]) ++b;
    if (b < kLatencyBuckets.size()) ++bucket_counts_[b];
    ++latency_count_;
    latency_sum_ += seconds;
  }
  items_ = items;
  last_sync_ = absl::ToDoubleSeconds(done - absl::UnixEpoch());
}

void AgentMetrics::RecordAlignment(const AlignStats& stats) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++(stats.compacted ? compacted_syncs_ : aligned_syncs_);
  const AlignItemStats* kinds[] = {&stats.identities, &stats.peer_sets, &stats.tables};
  for (size_t k = 0; k < 3; ++k) {
    aligned_changed_[k] += static_cast<uint64_t>(kinds[k]->changed);
    aligned_added_[k] += static_cast<uint64_t>(kinds[k]->added);
    unused_items_[k] = kinds[k]->unused;
  }
}

void AgentMetrics::CountDeltaSync(bool policy) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++(policy ? policy_delta_syncs_ : pod_delta_syncs_);
}

void AgentMetrics::CountSyncFailure() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++sync_failures_;
}

void AgentMetrics::SetPendingEvents(int64_t pending) {
  std::lock_guard<std::mutex> lock(mutex_);
  pending_ = pending;
}

std::string AgentMetrics::Render() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  absl::StrAppend(&out,
                  "# HELP np_agent_events_total Watch events read, by whether the engine took "
                  "them.\n# TYPE np_agent_events_total counter\n",
                  "np_agent_events_total{result=\"applied\"} ", applied_, "\n",
                  "np_agent_events_total{result=\"rejected\"} ", rejected_, "\n");
  absl::StrAppend(&out,
                  "# HELP np_agent_syncs_total Kernel updates that took effect.\n"
                  "# TYPE np_agent_syncs_total counter\nnp_agent_syncs_total ",
                  syncs_, "\n",
                  "# HELP np_agent_delta_syncs_total Kernel updates sent as a delta of the "
                  "installed program, by the events they carried (pod; policy: policies, "
                  "namespaces, tiers or nodes that kept every identity).\n"
                  "# TYPE np_agent_delta_syncs_total counter\n"
                  "np_agent_delta_syncs_total{kind=\"pod\"} ", pod_delta_syncs_, "\n",
                  "np_agent_delta_syncs_total{kind=\"policy\"} ", policy_delta_syncs_, "\n",
                  "# HELP np_agent_sync_failures_total Kernel updates the backend refused.\n"
                  "# TYPE np_agent_sync_failures_total counter\nnp_agent_sync_failures_total ",
                  sync_failures_, "\n",
                  "# HELP np_agent_pending_events Events in the engine, not yet in the kernel.\n"
                  "# TYPE np_agent_pending_events gauge\nnp_agent_pending_events ",
                  pending_, "\n");
  absl::StrAppend(&out,
                  "# HELP np_agent_update_latency_seconds From reading an event to the kernel "
                  "running a program that includes it.\n"
                  "# TYPE np_agent_update_latency_seconds histogram\n");
  uint64_t cumulative = 0;
  for (size_t b = 0; b < kLatencyBuckets.size(); ++b) {
    cumulative += bucket_counts_[b];
    absl::StrAppend(&out, "np_agent_update_latency_seconds_bucket{le=\"", kLatencyBuckets[b],
                    "\"} ", cumulative, "\n");
  }
  absl::StrAppend(&out, "np_agent_update_latency_seconds_bucket{le=\"+Inf\"} ", latency_count_,
                  "\n", "np_agent_update_latency_seconds_sum ",
                  absl::StrFormat("%.9g", latency_sum_), "\n",
                  "np_agent_update_latency_seconds_count ", latency_count_, "\n");
  absl::StrAppend(&out,
                  "# HELP np_agent_program_items What the kernel program uses, as the backend "
                  "counts it (rules, sets, set elements, map entries, ...).\n"
                  "# TYPE np_agent_program_items gauge\n");
  for (const auto& [name, used] : items_) {
    absl::StrAppend(&out, "np_agent_program_items{item=", JsonQuote(name), "} ", used, "\n");
  }
  // The three sizes every dashboard wants, under names of their own, when the backend counts
  // them (nft: rules, set_elements; iptables: ipv4_rules + ipv6_rules, ipset_entries; eBPF:
  // map_entries).
  const std::pair<absl::string_view, std::vector<std::string>> kNamed[] = {
      {"rules", {"rules", "ipv4_rules", "ipv6_rules"}},
      {"set_elements", {"set_elements", "ipset_entries"}},
      {"map_entries", {"map_entries"}}};
  for (const auto& [metric, names] : kNamed) {
    bool counted = false;
    uint64_t total = 0;
    for (const std::string& name : names) {
      auto it = items_.find(name);
      if (it == items_.end()) continue;
      counted = true;
      total += it->second;
    }
    if (!counted) continue;
    absl::StrAppend(&out, "# HELP np_agent_", metric, " The program's ", metric,
                    ", as the backend counts them.\n# TYPE np_agent_", metric, " gauge\nnp_agent_",
                    metric, " ", total, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP np_agent_aligned_syncs_total Whole lowerings numbered onto the "
                  "installed program (compacted: too many unused ids, numbered afresh).\n"
                  "# TYPE np_agent_aligned_syncs_total counter\n"
                  "np_agent_aligned_syncs_total{result=\"aligned\"} ", aligned_syncs_, "\n",
                  "np_agent_aligned_syncs_total{result=\"compacted\"} ", compacted_syncs_, "\n");
  const char* kKinds[] = {"identities", "peer_sets", "tables"};
  absl::StrAppend(&out,
                  "# HELP np_agent_aligned_items_total Items whole lowerings changed under an "
                  "installed id, or added.\n# TYPE np_agent_aligned_items_total counter\n");
  for (size_t k = 0; k < 3; ++k) {
    absl::StrAppend(&out, "np_agent_aligned_items_total{kind=\"", kKinds[k],
                    "\",change=\"changed\"} ", aligned_changed_[k], "\n",
                    "np_agent_aligned_items_total{kind=\"", kKinds[k], "\",change=\"added\"} ",
                    aligned_added_[k], "\n");
  }
  absl::StrAppend(&out,
                  "# HELP np_agent_unused_items Unused ids the installed program keeps so that "
                  "the rest keep theirs.\n# TYPE np_agent_unused_items gauge\n");
  for (size_t k = 0; k < 3; ++k) {
    absl::StrAppend(&out, "np_agent_unused_items{kind=\"", kKinds[k], "\"} ", unused_items_[k],
                    "\n");
  }
  absl::StrAppend(&out,
                  "# HELP np_agent_last_sync_timestamp_seconds When the kernel was last "
                  "updated (0: never).\n"
                  "# TYPE np_agent_last_sync_timestamp_seconds gauge\n"
                  "np_agent_last_sync_timestamp_seconds ",
                  absl::StrFormat("%.3f", last_sync_), "\n");
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(absl::string_view address,
                                                                    const AgentMetrics* metrics) {
  const size_t colon = address.rfind(':');
  int port = -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535 ||
      inet_pton(AF_INET, std::string(address.substr(0, colon)).c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-address: ", JsonQuote(address),
                                                   " is not IPV4:PORT (e.g. 127.0.0.1:9464)"));
  }
  addr.sin_port = htons(static_cast<uint16_t>(port));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("metrics socket: ", strerror(errno)));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 16) != 0) {
    const int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("--metrics-address ", address, ": cannot listen: ", strerror(err)));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return std::unique_ptr<MetricsServer>(new MetricsServer(fd, ntohs(addr.sin_port), metrics));
}

MetricsServer::MetricsServer(int fd, int port, const AgentMetrics* metrics)
    : fd_(fd), port_(port), metrics_(metrics), thread_([this] { Serve(); }) {}

MetricsServer::~MetricsServer() {
  stop_ = true;
  thread_.join();
  close(fd_);
}

namespace {

void WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Reads the request head (up to a blank line, 8 KiB or 2 s) and answers it.
void Answer(int client, const AgentMetrics& metrics) {
  std::string request;
  char buffer[1024];
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  while (request.find("\r\n\r\n") == std::string::npos &&
         request.find("\n\n") == std::string::npos && request.size() < 8192) {
    const int wait = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd p{client, POLLIN, 0};
    if (wait <= 0 || poll(&p, 1, wait) <= 0) break;
    ssize_t n = recv(client, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    request.append(buffer, static_cast<size_t>(n));
  }
  if (request.rfind("GET ", 0) != 0) {
    WriteAll(client,
             "HTTP/1.0 405 Method Not Allowed\r\nContent-Type: text/plain\r\n"
             "Connection: close\r\n\r\nGET only\n");
    return;
  }
  const std::string body = metrics.Render();
  WriteAll(client, absl::StrCat("HTTP/1.0 200 OK\r\n"
                                "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                                "Content-Length: ",
                                body.size(), "\r\nConnection: close\r\n\r\n", body));
}

}  // namespace

void MetricsServer::Serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    // Wakes up now and then to notice stop_.
    if (poll(&p, 1, 100) <= 0) continue;
    int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    Answer(client, *metrics_);
    close(client);
  }
}

LogField LogField::Text(absl::string_view key, absl::string_view value) {
  return LogField{std::string(key), JsonQuote(value)};
}

LogField LogField::Number(absl::string_view key, double value) {
  return LogField{std::string(key), absl::StrFormat("%.9g", value)};
}

namespace {
// absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, UTC) without cctz's general formatter, which
// was most of a log line's cost; the agent logs a line per watch event, on the event path.
std::string UtcMillis(absl::Time t) {
  const absl::TimeZone::CivilInfo c = absl::UTCTimeZone().At(t);
  char text[48];
  snprintf(text, sizeof(text), "%04lld-%02d-%02dT%02d:%02d:%02d.%03lldZ",
           static_cast<long long>(c.cs.year()), c.cs.month(), c.cs.day(), c.cs.hour(),
           c.cs.minute(), c.cs.second(),
           static_cast<long long>(absl::ToInt64Milliseconds(c.subsecond)));
  return text;
}
}  // namespace

void JsonLog::Write(absl::string_view level, absl::string_view message,
                    std::initializer_list<LogField> fields) {
  std::string line = absl::StrCat(
      "{\"time\":\"", UtcMillis(absl::Now()),
      "\",\"level\":", JsonQuote(level), ",\"msg\":", JsonQuote(message));
  for (const LogField& f : fields) absl::StrAppend(&line, ",", JsonQuote(f.key), ":", f.json);
  line += "}\n";
  std::lock_guard<std::mutex> lock(mutex_);
  *out_ << line << std::flush;
}

}  // namespace np::agent
