// The agent without a kernel: events cut and parsed, applied to the engine, coalesced into
// backend updates (a recording backend stands in for the kernel), bad events rejected with
// the state kept, metrics counted and served over HTTP.
#include "np/agent/agent.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "np/agent/metrics.h"
#include "np/agent/watch_event.h"
#include "np/backends/backend.h"
#include "np/backends/util.h"
#include "np/engine.h"
#include "np/loader.h"
#include "np/lower.h"

namespace np::agent {
namespace {

using ::testing::HasSubstr;

// ---- EventSplitter ---------------------------------------------------------------------

TEST(EventSplitterTest, OneEventPerLineInPiecesOfAnySize) {
  const std::string stream =
      "{\"type\":\"ADDED\",\"object\":{\"a\":\"}{\"}}\n\n{\"type\":\"BOOKMARK\",\"object\":{}}\n";
  for (size_t piece = 1; piece <= stream.size(); ++piece) {
    EventSplitter splitter;
    std::vector<std::string> events;
    for (size_t i = 0; i < stream.size(); i += piece) {
      for (std::string& e : splitter.Feed(absl::string_view(stream).substr(i, piece))) {
        events.push_back(e);
      }
    }
    EXPECT_TRUE(splitter.Finish().empty());
    ASSERT_EQ(events.size(), 2u) << "piece " << piece;
    EXPECT_EQ(events[0], "{\"type\":\"ADDED\",\"object\":{\"a\":\"}{\"}}\n");
    EXPECT_EQ(events[1], "{\"type\":\"BOOKMARK\",\"object\":{}}\n");
  }
}

TEST(EventSplitterTest, IndentedEventsAsKubectlPrintsThem) {
  const std::string first =
      "{\n    \"type\": \"ADDED\",\n    \"object\": {\n        \"x\": 1\n    }\n}\n";
  const std::string second = "{\n    \"type\": \"DELETED\",\n    \"object\": {}\n}\n";
  EventSplitter splitter;
  std::vector<std::string> events = splitter.Feed(first + second);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], first);
  EXPECT_EQ(events[1], second);
}

TEST(EventSplitterTest, MalformedInputDoesNotSwallowTheNextEvent) {
  EventSplitter splitter;
  // A line that is no event; an object cut short; then a good event.
  std::vector<std::string> events = splitter.Feed(
      "not json\n{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\"\n"
      "{\"type\":\"BOOKMARK\",\"object\":{}}\n");
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0], "not json");
  EXPECT_EQ(events[1], "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\"\n");
  EXPECT_EQ(events[2], "{\"type\":\"BOOKMARK\",\"object\":{}}\n");
  EXPECT_FALSE(ParseWatchEvent(events[1], "").ok());
}

TEST(EventSplitterTest, OversizedEventIsCutAndSkippedWithBoundedMemory) {
  EventSplitter splitter(/*max_event_bytes=*/64);
  std::vector<std::string> events = splitter.Feed(
      absl::StrCat("{\"type\":\"ADDED\",\"object\":{\"x\":\"", std::string(1000, 'a')));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_LE(events[0].size(), 64u);
  events = splitter.Feed(absl::StrCat(std::string(1000, 'a'),
                                      "\"}}\n  more\n{\"type\":\"BOOKMARK\",\"object\":{}}\n"));
  ASSERT_EQ(events.size(), 1u);  // the rest of the long event is skipped, not handed out
  EXPECT_EQ(events[0], "{\"type\":\"BOOKMARK\",\"object\":{}}\n");
}

TEST(EventSplitterTest, FinishHandsOutAnEventCutShort) {
  EventSplitter splitter;
  EXPECT_TRUE(splitter.Feed("{\"type\":\"ADDED\",").empty());
  std::vector<std::string> rest = splitter.Finish();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0], "{\"type\":\"ADDED\",\n");
}

// ---- ParseWatchEvent -------------------------------------------------------------------

// A value ends at its closing bracket or quote, never at one inside a string or escaped.
TEST(JsonValueAtTest, BracketsAndQuotesInsideStringsDoNotCount) {
  const std::string text = R"(x {"a": "}\"]", "b": ["\\", "{"]} tail)";
  EXPECT_EQ(JsonValueAt(text, 2), R"({"a": "}\"]", "b": ["\\", "{"]})");
  EXPECT_EQ(JsonValueAt(R"("a\"b" c)", 0), R"("a\"b")");
  EXPECT_EQ(JsonValueAt(R"("a\")", 0), "");  // the string never ends
  EXPECT_EQ(JsonValueAt(R"({"a": "b)", 0), "");
  EXPECT_EQ(JsonValueAt("12, 3", 0), "12");
}

// The splitter scans an event as its lines come (ScanJsonValue resumed): at every cut, the
// resumed scan says what one scan of the text so far says. Random text of the characters
// that matter; NP_SEED=<n> replays one.
TEST(JsonValueAtTest, ScanResumedAcrossPiecesAsInOneGo) {
  const char* env = std::getenv("NP_SEED");
  const uint32_t first = env != nullptr ? static_cast<uint32_t>(std::atoi(env)) : 1;
  const uint32_t seeds = env != nullptr ? 1 : 2000;
  static const char kChars[] = "{}[]\"\\ ,\na";
  for (uint32_t seed = first; seed < first + seeds; ++seed) {
    std::mt19937 rng(seed);
    auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
    std::string text = "{";
    const size_t size = 1 + pick(60);
    for (size_t i = 0; i < size; ++i) text.push_back(kChars[pick(sizeof(kChars) - 1)]);
    JsonValueScan resumed;
    size_t cut = 0;
    while (cut < text.size()) {
      cut = std::min(text.size(), cut + 1 + pick(8));
      const absl::string_view prefix = absl::string_view(text).substr(0, cut);
      JsonValueScan fresh;
      const size_t expected = ScanJsonValue(prefix, 0, &fresh);
      const size_t got = ScanJsonValue(prefix, 0, &resumed);
      ASSERT_EQ(got, expected) << "replay: NP_SEED=" << seed << " cut " << cut << ": " << text;
      if (got != absl::string_view::npos) break;
    }
  }
}

TEST(ParseWatchEventTest, ObjectsWithAndWithoutKind) {
  absl::StatusOr<WatchEvent> e = ParseWatchEvent(
      R"({"type":"ADDED","object":{"metadata":{"name":"a","namespace":"x"}}})", "Pod");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->type, WatchEvent::Type::kAdded);
  EXPECT_EQ(e->what, "Pod x/a");
  EXPECT_EQ(e->change->op, Change::Op::kUpsert);
  // Its own kind wins over the default.
  e = ParseWatchEvent(
      R"({"type":"DELETED","object":{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}})",
      "Pod");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->what, "Namespace x");
  EXPECT_EQ(e->change->op, Change::Op::kDelete);
  // No kind at all: an error.
  EXPECT_FALSE(ParseWatchEvent(R"({"type":"ADDED","object":{"metadata":{"name":"a"}}})", "").ok());
}

// DescribeChange names the kind from a table in Change::object's order: each entry must be
// the message's own name (its descriptor), for every kind a Change holds.
template <size_t I = 0>
void ExpectEveryKindNamedAsItsMessage() {
  if constexpr (I < std::variant_size_v<decltype(Change::object)>) {
    Change change;
    change.object.emplace<I>();
    auto& object = std::get<I>(change.object);
    object.mutable_metadata()->set_name("a");
    EXPECT_EQ(DescribeChange(change), absl::StrCat(object.GetDescriptor()->name(), " a"));
    object.mutable_metadata()->set_namespace_("x");
    EXPECT_EQ(DescribeChange(change), absl::StrCat(object.GetDescriptor()->name(), " x/a"));
    ExpectEveryKindNamedAsItsMessage<I + 1>();
  }
}
TEST(DescribeChangeTest, EveryKindNamedAsItsMessage) { ExpectEveryKindNamedAsItsMessage(); }

// JsonLog writes its time without absl::FormatTime (for speed): the text must be what
// FormatTime("%Y-%m-%dT%H:%M:%E3SZ", now, UTC) gives. Fixed width, so it sorts as the time
// does: it lies between the texts of the moments before and after the write.
TEST(JsonLogTest, TimeIsRfc3339UtcMillisecondsAsFormatTimeWrites) {
  for (int i = 0; i < 50; ++i) {
    std::ostringstream out;
    JsonLog log(&out);
    const std::string before =
        absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
    log.Write("info", "m");
    const std::string after =
        absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
    const std::string line = out.str();
    ASSERT_TRUE(absl::StartsWith(line, "{\"time\":\"")) << line;
    const std::string time = line.substr(9, before.size());
    EXPECT_EQ(line.substr(9 + before.size(), 2), "\",") << line;
    EXPECT_LE(before, time) << line;
    EXPECT_LE(time, after) << line;
    if (i % 10 == 9) absl::SleepFor(absl::Milliseconds(3));  // other milliseconds too
  }
}

TEST(ParseWatchEventTest, EnvelopeErrors) {
  EXPECT_EQ(ParseWatchEvent(R"({"type":"BOOKMARK","object":{}})", "")->type,
            WatchEvent::Type::kBookmark);
  EXPECT_EQ(ParseWatchEvent(R"({"type":"ERROR","object":{"code":410}})", "")->type,
            WatchEvent::Type::kError);
  absl::StatusOr<WatchEvent> e = ParseWatchEvent(R"({"type":"UPSERTED","object":{}})", "Pod");
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("\"UPSERTED\""));
  e = ParseWatchEvent(R"({"object":{}})", "Pod");
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("needs \"type\" and \"object\""));
  EXPECT_FALSE(ParseWatchEvent("[1,2]", "Pod").ok());
}

// Malformed objects inside a well-formed envelope: each refused with the field's path (the
// direct JSON reader's fast paths must not lose them), whether the mistake is in a field the
// engine reads or in one it skips.
TEST(ParseWatchEventTest, MalformedObjectsNameTheField) {
  const std::string head = R"({"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod",)";
  struct Case {
    std::string object;  // after head
    std::string field;   // expected in the message
  };
  const Case cases[] = {
      {R"("metadata":{"name":"a","namespace":"x","labels":{"app":7}}}})", "metadata.labels"},
      {R"("metadata":{"name":"a","namespace":"x","labels":["app"]}}})", "metadata.labels"},
      {R"("metadata":{"name":"a","namespace":"x","name":"b"}}})", "metadata.name"},
      {R"("metadata":{"name":"a","namespace":"x","generation":"one"}}})", "metadata.generation"},
      {R"("metadata":{"name":"a","namespace":"x"},"spec":{"containers":{"name":"c"}}}})",
       "spec.containers"},
      {R"("metadata":{"name":"a","namespace":"x"},"spec":{"containers":[{"name":"c","ports":[{"containerPort":"80"}]}]}}})",
       "spec.containers[0].ports[0].containerPort"},
      {R"("metadata":{"name":"a","namespace":"x"},"status":{"podIPs":[{"ip":1}]}}})",
       "status.podIPs[0].ip"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<WatchEvent> e = ParseWatchEvent(head + c.object, "");
    ASSERT_FALSE(e.ok()) << c.object;
    EXPECT_THAT(std::string(e.status().message()), HasSubstr(c.field)) << c.object;
  }
  // Cut short, or a bad escape: refused, never a half-read object.
  for (const std::string& text : {head + R"("metadata":{"name":"a","namespace":"x")",
                                  head + R"("metadata":{"name":"a\q","namespace":"x"}}})"}) {
    EXPECT_FALSE(ParseWatchEvent(text, "").ok()) << text;
  }
}

// ---- Agent -----------------------------------------------------------------------------

// Records every program it is asked to install; fails when told to.
class RecordingBackend : public backends::Backend {
 public:
  // `calls`, when given, gets the name of each method that installs ("Apply", "Update",
  // "UpdateDelta"), so that tests see which path a sync took.
  explicit RecordingBackend(std::vector<ir::CompiledPolicy>* applied, bool* fail,
                            std::vector<std::string>* calls = nullptr)
      : applied_(applied), fail_(fail), calls_(calls) {}
  std::string name() const override { return "recording"; }
  absl::StatusOr<ir::BackendCapacity> Capacity(const ir::CompiledPolicy& ir) const override {
    ir::BackendCapacity c;
    ir::CapacityItem* item = c.add_items();
    item->set_name("endpoints");
    item->set_used(ir.endpoints_size());
    return c;
  }
  absl::StatusOr<std::string> Render(const ir::CompiledPolicy&) const override { return ""; }
  // The interfaces each UpdateDelta was given, as "pod=interface".
  std::vector<std::vector<std::string>> delta_interfaces;
  absl::Status Apply(const ir::CompiledPolicy& ir, const backends::Attachment&) override {
    if (calls_ != nullptr) calls_->push_back("Apply");
    return Install(ir);
  }
  absl::Status Update(const ir::CompiledPolicy&, const ir::CompiledPolicy& next,
                      const backends::Attachment&) override {
    if (calls_ != nullptr) calls_->push_back("Update");
    return Install(next);
  }
  absl::Status UpdateDelta(const ir::CompiledPolicy& previous,
                           const ir::CompiledPolicyDelta& delta,
                           const backends::Attachment& attachment) override {
    if (calls_ != nullptr) calls_->push_back("UpdateDelta");
    delta_interfaces.emplace_back();
    for (const backends::EndpointInterface& i : attachment.interfaces) {
      delta_interfaces.back().push_back(i.pod + "=" + i.interface);
    }
    ir::CompiledPolicy next = previous;
    if (absl::Status s = backends::ApplyDelta(delta, &next); !s.ok()) return s;
    return Install(next);
  }
  absl::Status Remove(const backends::Attachment&) override {
    applied_->clear();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Explain(const ir::CompiledPolicy&,
                                      const backends::FlowQuery&) const override {
    return "";
  }

 private:
  absl::Status Install(const ir::CompiledPolicy& ir) {
    if (*fail_) return absl::UnavailableError("the kernel said no");
    applied_->push_back(ir);
    return absl::OkStatus();
  }

  std::vector<ir::CompiledPolicy>* applied_;
  bool* fail_;
  std::vector<std::string>* calls_;
};

constexpr char kInitial[] = R"(
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}]}
)";

std::string PodEvent(const std::string& type, const std::string& name, const std::string& ip) {
  return absl::StrCat(R"({"type":")", type, R"(","object":{"metadata":{"name":")", name,
                      R"(","namespace":"x","labels":{"app":")", name,
                      R"("}},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"i"}]},)",
                      R"("status":{"podIP":")", ip, R"(","podIPs":[{"ip":")", ip, R"("}]}}})");
}

std::vector<std::string> EndpointNames(const ir::CompiledPolicy& ir) {
  std::vector<std::string> names;
  for (const ir::Endpoint& e : ir.endpoints()) names.push_back(e.namespace_() + "/" + e.name());
  return names;
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ClusterLoader loader;
    ASSERT_TRUE(loader.AddText(kInitial, "initial.yaml").ok());
    absl::StatusOr<Cluster> cluster = std::move(loader).Build();
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    EngineOptions options;
    options.node_name = "n1";
    absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    AgentOptions agent_options;
    agent_options.default_kind = "Pod";
    agent_options.min_interval = absl::Milliseconds(200);
    agent_options.capacity_interval = absl::ZeroDuration();  // gauges after every sync
    agent_ = std::make_unique<Agent>(
        *engine, std::make_unique<RecordingBackend>(&applied_, &fail_, &calls_), agent_options,
        &metrics_, &log_);
  }

  // What the kernel holds means what the whole lowering of the agent's current snapshot
  // makes (numbered onto what was installed before: np/lower_align.h).
  void ExpectKernelHoldsCurrent() {
    ASSERT_FALSE(applied_.empty());
    absl::StatusOr<ir::CompiledPolicy> expected = LowerToIr(*agent_->current());
    ASSERT_TRUE(expected.ok());
    ASSERT_TRUE(backends::CheckIr(applied_.back()).ok()) << backends::CheckIr(applied_.back());
    std::string why;
    EXPECT_TRUE(backends::EquivalentPrograms(applied_.back(), *expected, &why)) << why;
  }

  std::vector<ir::CompiledPolicy> applied_;
  std::vector<std::string> calls_;
  bool fail_ = false;
  AgentMetrics metrics_;
  std::ostringstream log_text_;
  JsonLog log_{&log_text_};
  std::unique_ptr<Agent> agent_;
};

TEST_F(AgentTest, BurstIsCoalescedIntoOneUpdateWithEveryEvent) {
  ASSERT_TRUE(agent_->Reconcile().ok());
  ASSERT_EQ(applied_.size(), 1u);
  EXPECT_EQ(EndpointNames(applied_[0]), std::vector<std::string>({"x/a"}));
  const absl::Time t0 = absl::Now();
  agent_->HandleEvent(PodEvent("ADDED", "b", "10.0.0.2"), t0);
  agent_->HandleEvent(PodEvent("ADDED", "c", "10.0.0.3"), t0);
  agent_->HandleEvent(PodEvent("DELETED", "a", "10.0.0.1"), t0);
  EXPECT_EQ(agent_->pending_events(), 3);
  EXPECT_FALSE(agent_->SyncDue(t0));  // within min_interval of the reconcile
  EXPECT_TRUE(agent_->SyncDue(t0 + absl::Milliseconds(250)));
  ASSERT_TRUE(agent_->Sync().ok());
  ASSERT_EQ(applied_.size(), 2u);  // one update for the three events
  EXPECT_EQ(EndpointNames(applied_[1]), std::vector<std::string>({"x/b", "x/c"}));
  EXPECT_EQ(agent_->pending_events(), 0);
  EXPECT_FALSE(agent_->SyncDue(t0 + absl::Hours(1)));  // nothing waits
  const std::string text = metrics_.Render();
  EXPECT_THAT(text, HasSubstr("np_agent_events_total{result=\"applied\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("np_agent_update_latency_seconds_count 3\n"));
  EXPECT_THAT(text, HasSubstr("np_agent_update_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("np_agent_program_items{item=\"endpoints\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("np_agent_syncs_total 2\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("np_agent_last_sync_timestamp_seconds 0.000")));
}

// Pod events reach the backend as a delta (no whole lowering); anything else, or a sync
// after a failure, goes whole; each time the kernel gets what the whole lowering would give.
TEST_F(AgentTest, PodEventsGoThroughTheDeltaAndTheRestWhole) {
  ASSERT_TRUE(agent_->Reconcile().ok());
  EXPECT_EQ(calls_, std::vector<std::string>({"Apply"}));
  agent_->HandleEvent(PodEvent("ADDED", "b", "10.0.0.2"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta");
  EXPECT_EQ(agent_->delta_syncs(), 1);
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
  EXPECT_EQ(EndpointNames(applied_.back()), std::vector<std::string>({"x/a", "x/b"}));
  // The gauges count the program the delta made (capacity_interval 0: every sync).
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_program_items{item=\"endpoints\"} 2\n"));
  // A delete and an IP change coalesced into one delta.
  agent_->HandleEvent(PodEvent("DELETED", "a", "10.0.0.1"), absl::Now());
  agent_->HandleEvent(PodEvent("MODIFIED", "b", "10.0.0.7"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta");
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_program_items{item=\"endpoints\"} 1\n"));
  // A NetworkPolicy: whole (Update from the installed program).
  agent_->HandleEvent(
      R"({"type":"ADDED","object":{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",)"
      R"("metadata":{"name":"p","namespace":"x"},)"
      R"("spec":{"podSelector":{},"policyTypes":["Ingress"]}}})",
      absl::Now());
  agent_->HandleEvent(PodEvent("ADDED", "c", "10.0.0.3"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "Update");
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
  // The index was rebuilt from that program: the next pod event is a delta again.
  agent_->HandleEvent(PodEvent("ADDED", "d", "10.0.0.4"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta");
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
  // A failed delta: the kernel's state is unknown, so the retry replaces it whole.
  fail_ = true;
  agent_->HandleEvent(PodEvent("DELETED", "d", "10.0.0.4"), absl::Now());
  EXPECT_FALSE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta");
  fail_ = false;
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "Apply");
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
  EXPECT_EQ(agent_->delta_syncs(), 3);
  // Only the syncs that took effect count: the failed delta is no delta sync.
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_delta_syncs_total{kind=\"pod\"} 3\n"));
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_delta_syncs_total{kind=\"policy\"} 0\n"));
}

std::string PolicyEvent(const std::string& type, const std::string& name,
                        const std::string& app) {
  return absl::StrCat(
      R"({"type":")", type,
      R"(","object":{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",)",
      R"("metadata":{"name":")", name, R"(","namespace":"x"},)",
      R"("spec":{"podSelector":{"matchLabels":{"app":")", app,
      R"("}},"policyTypes":["Ingress"]}}})");
}

uint32_t TableOf(const ir::CompiledPolicy& ir, const std::string& name) {
  for (const ir::Endpoint& e : ir.endpoints()) {
    if (e.name() == name && e.selected()) return e.table();
  }
  return UINT32_MAX;
}

// Whole syncs are numbered onto what is installed: a policy for b added after one for c
// leaves c's table its id (LowerToIr alone would number b's first), a deleted policy's table
// stays as an unused id, and the metrics count it all. Pod deltas then work on that program.
// Pod `name` of PodEvent with one more label, `rev`, that no selector reads: a pod event the
// engine takes (labels are read; an unchanged pod would be a heartbeat, which it keeps out).
std::string Relabelled(const std::string& name, int rev) {
  std::string event = PodEvent("MODIFIED", name, "10.0.0.2");
  const std::string labels = absl::StrCat(R"("labels":{"app":")", name, R"(")");
  event.replace(event.find(labels), labels.size(),
                absl::StrCat(labels, R"(,"rev":")", rev, R"(")"));
  return event;
}

// Each policy event comes with a pod event in the same sync, which makes the sync lower
// whole: policy events alone are deltas (PolicyEventsGoThroughTheDelta).
TEST_F(AgentTest, WholeSyncsKeepInstalledIds) {
  ASSERT_TRUE(agent_->Reconcile().ok());
  agent_->HandleEvent(PodEvent("ADDED", "b", "10.0.0.2"), absl::Now());
  agent_->HandleEvent(PodEvent("ADDED", "c", "10.0.0.3"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(agent_->aligned_syncs(), 0);  // Reconcile's Apply and a delta: nothing to align
  agent_->HandleEvent(Relabelled("b", 1), absl::Now());  // whole (above)
  agent_->HandleEvent(PolicyEvent("ADDED", "pc", "c"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "Update");
  const uint32_t c_table = TableOf(applied_.back(), "c");
  ASSERT_EQ(c_table, 0u);
  agent_->HandleEvent(Relabelled("b", 2), absl::Now());  // whole (above)
  agent_->HandleEvent(PolicyEvent("ADDED", "pb", "b"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "Update");
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
  ASSERT_EQ(TableOf(*LowerToIr(*agent_->current()), "b"), 0u);  // dense numbering moves c
  EXPECT_EQ(TableOf(applied_.back(), "c"), c_table);
  EXPECT_EQ(TableOf(applied_.back(), "b"), 1u);
  ASSERT_TRUE(agent_->last_alignment().has_value());
  EXPECT_EQ(agent_->last_alignment()->tables.added, 1);
  EXPECT_EQ(agent_->last_alignment()->tables.changed, 0);
  // pc deleted: c's table is unused; b's keeps its id.
  agent_->HandleEvent(PodEvent("MODIFIED", "b", "10.0.0.2"), absl::Now());  // whole (above)
  agent_->HandleEvent(PolicyEvent("DELETED", "pc", "c"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
  EXPECT_EQ(TableOf(applied_.back(), "b"), 1u);
  EXPECT_EQ(TableOf(applied_.back(), "c"), UINT32_MAX);
  EXPECT_EQ(applied_.back().tables_size(), 2);
  EXPECT_EQ(agent_->aligned_syncs(), 3);
  const std::string text = metrics_.Render();
  EXPECT_THAT(text, HasSubstr("np_agent_aligned_syncs_total{result=\"aligned\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("np_agent_aligned_syncs_total{result=\"compacted\"} 0\n"));
  EXPECT_THAT(text,
              HasSubstr("np_agent_aligned_items_total{kind=\"tables\",change=\"added\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("np_agent_unused_items{kind=\"tables\"} 1\n"));
  EXPECT_THAT(log_text_.str(), HasSubstr(R"("numbering":"aligned")"));
  EXPECT_THAT(log_text_.str(), HasSubstr(R"("tables_changed_added_unused":"0/0/1")"));
  // A pod event onto that program (an unused table in it) is a delta again.
  agent_->HandleEvent(PodEvent("ADDED", "e", "10.0.0.5"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta") << agent_->last_whole_reason();
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
  EXPECT_FALSE(agent_->last_alignment().has_value());
  // A policy for c again: the new table takes the unused id.
  agent_->HandleEvent(PodEvent("MODIFIED", "b", "10.0.0.2"), absl::Now());  // whole (above)
  agent_->HandleEvent(PolicyEvent("ADDED", "pc", "c"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
  EXPECT_EQ(TableOf(applied_.back(), "c"), c_table);
  EXPECT_EQ(TableOf(applied_.back(), "b"), 1u);
}

// Policy events alone reach the backend as deltas (LowerPolicyChange) when the address atoms
// stay, numbered as the whole path would (a table keeps its id, a deleted
// policy's table becomes a tombstone, a new one takes the lowest unused id); the kernel ends
// with what LowerToIr gives (canonically), pod deltas work on the program they leave, a
// policy whose peer splits an identity is a delta too, and one whose ipBlock cuts new
// address atoms goes whole, saying why.
TEST_F(AgentTest, PolicyEventsGoThroughTheDelta) {
  ASSERT_TRUE(agent_->Reconcile().ok());
  agent_->HandleEvent(PodEvent("ADDED", "b", "10.0.0.2"), absl::Now());
  agent_->HandleEvent(PodEvent("ADDED", "c", "10.0.0.3"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  ASSERT_EQ(agent_->delta_syncs(), 1);
  auto expect_kernel_canonical = [&] {
    ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(
        backends::CanonicalProgram(applied_.back()),
        backends::CanonicalProgram(*LowerToIr(*agent_->current()))));
  };
  agent_->HandleEvent(PolicyEvent("ADDED", "pc", "c"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta") << agent_->last_whole_reason();
  ASSERT_NO_FATAL_FAILURE(expect_kernel_canonical());
  const uint32_t c_table = TableOf(applied_.back(), "c");
  agent_->HandleEvent(PolicyEvent("ADDED", "pb", "b"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta") << agent_->last_whole_reason();
  ASSERT_NO_FATAL_FAILURE(expect_kernel_canonical());
  EXPECT_EQ(TableOf(applied_.back(), "c"), c_table);
  const uint32_t b_table = TableOf(applied_.back(), "b");
  EXPECT_EQ(b_table, c_table + 1);
  agent_->HandleEvent(PolicyEvent("DELETED", "pc", "c"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta") << agent_->last_whole_reason();
  ASSERT_NO_FATAL_FAILURE(expect_kernel_canonical());
  EXPECT_EQ(TableOf(applied_.back(), "c"), UINT32_MAX);
  EXPECT_EQ(TableOf(applied_.back(), "b"), b_table);
  EXPECT_EQ(applied_.back().tables_size(), 2);  // c's table a tombstone
  // A pod event onto the program policy deltas made.
  agent_->HandleEvent(PodEvent("ADDED", "e", "10.0.0.5"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta") << agent_->last_whole_reason();
  ASSERT_NO_FATAL_FAILURE(expect_kernel_canonical());
  // c's table again: the unused id.
  agent_->HandleEvent(PolicyEvent("ADDED", "pc", "c"), absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta") << agent_->last_whole_reason();
  ASSERT_NO_FATAL_FAILURE(expect_kernel_canonical());
  EXPECT_EQ(TableOf(applied_.back(), "c"), c_table);
  EXPECT_EQ(agent_->policy_delta_syncs(), 4);
  EXPECT_EQ(agent_->delta_syncs(), 6);
  // The two pod events' deltas and the four policy events', apart.
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_delta_syncs_total{kind=\"pod\"} 2\n"));
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_delta_syncs_total{kind=\"policy\"} 4\n"));
  EXPECT_EQ(agent_->aligned_syncs(), 0);
  EXPECT_THAT(log_text_.str(), HasSubstr(R"("update":"delta")"));
  EXPECT_THAT(log_text_.str(), HasSubstr(R"("delta_of":"policies")"));
  // A peer selecting app=b alone splits b from the others' identity: a delta too.
  agent_->HandleEvent(
      R"({"type":"ADDED","object":{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",)"
      R"("metadata":{"name":"from-b","namespace":"x"},)"
      R"("spec":{"podSelector":{},"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"b"}}}]}]}}})",
      absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta") << agent_->last_whole_reason();
  ASSERT_NO_FATAL_FAILURE(expect_kernel_canonical());
  EXPECT_EQ(agent_->policy_delta_syncs(), 5);
  // An ipBlock cuts new address atoms (new external identities): whole, and why.
  agent_->HandleEvent(
      R"({"type":"ADDED","object":{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",)"
      R"("metadata":{"name":"from-net","namespace":"x"},)"
      R"("spec":{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"192.0.2.0/24"}}]}]}}})",
      absl::Now());
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(calls_.back(), "Update");
  EXPECT_THAT(agent_->last_whole_reason(), HasSubstr("policy event: "));
  ASSERT_NO_FATAL_FAILURE(expect_kernel_canonical());
  EXPECT_EQ(agent_->policy_delta_syncs(), 5);
  // A whole sync counts as no delta of either kind.
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_delta_syncs_total{kind=\"policy\"} 5\n"));
}

// The interfaces handed to the backend follow the endpoints: a pod event that adds or removes
// an interface's pod is a delta too, given the interfaces after it (the backend attaches or
// detaches in place, or loads anew: its choice), as is one that keeps the interfaces (a pod
// without one, or an interface's pod that stays an endpoint).
TEST_F(AgentTest, PodEventsChangingTheInterfacesGoThroughTheDelta) {
  AgentOptions options;
  options.default_kind = "Pod";
  options.min_interval = absl::ZeroDuration();
  options.attachment.interfaces.push_back(backends::EndpointInterface{"x/b", "veth-b"});
  auto backend = std::make_unique<RecordingBackend>(&applied_, &fail_, &calls_);
  const RecordingBackend* recording = backend.get();
  Agent agent(agent_->current(), std::move(backend), options, &metrics_, &log_);
  ASSERT_TRUE(agent.Reconcile().ok());
  using Interfaces = std::vector<std::string>;
  agent.HandleEvent(PodEvent("ADDED", "b", "10.0.0.2"), absl::Now());
  ASSERT_TRUE(agent.Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta");  // x/b's interface now attached, in the delta
  EXPECT_EQ(agent.last_whole_reason(), "");
  ASSERT_FALSE(recording->delta_interfaces.empty());
  EXPECT_EQ(recording->delta_interfaces.back(), Interfaces{"x/b=veth-b"});
  agent.HandleEvent(PodEvent("ADDED", "c", "10.0.0.3"), absl::Now());
  ASSERT_TRUE(agent.Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta");
  EXPECT_EQ(recording->delta_interfaces.back(), Interfaces{"x/b=veth-b"});
  agent.HandleEvent(PodEvent("MODIFIED", "b", "10.0.0.8"), absl::Now());  // stays an endpoint
  ASSERT_TRUE(agent.Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta");
  EXPECT_EQ(recording->delta_interfaces.back(), Interfaces{"x/b=veth-b"});
  agent.HandleEvent(PodEvent("DELETED", "b", "10.0.0.8"), absl::Now());  // its interface goes
  ASSERT_TRUE(agent.Sync().ok());
  EXPECT_EQ(calls_.back(), "UpdateDelta");
  EXPECT_EQ(agent.last_whole_reason(), "");
  EXPECT_EQ(recording->delta_interfaces.back(), Interfaces{});
  EXPECT_EQ(agent.delta_syncs(), 4);
  absl::StatusOr<ir::CompiledPolicy> expected = LowerToIr(*agent.current());
  ASSERT_TRUE(expected.ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(applied_.back(), *expected));
  // Added again: attached again, in the delta.
  agent.HandleEvent(PodEvent("ADDED", "b", "10.0.0.2"), absl::Now());
  ASSERT_TRUE(agent.Sync().ok());
  EXPECT_EQ(recording->delta_interfaces.back(), Interfaces{"x/b=veth-b"});
}

// Several interfaces, listed in an order of their own: whatever pods come and go (each event a
// delta), the backend is given exactly the interfaces whose pods are endpoints of the program
// LowerToIr makes of the agent's engine (the oracle), in the options' order. The agent keeps
// the attachment by editing it at the changed pods' places. NP_SEED replays a sequence.
TEST_F(AgentTest, InterfacesFollowTheEndpointsInTheOptionsOrder) {
  const char* env = std::getenv("NP_SEED");
  const uint32_t seed = env != nullptr ? static_cast<uint32_t>(std::atoi(env)) : std::random_device{}();
  SCOPED_TRACE(absl::StrCat("NP_SEED=", seed));
  std::mt19937 rng(seed);
  AgentOptions options;
  options.default_kind = "Pod";
  options.min_interval = absl::ZeroDuration();
  std::vector<int> order = {0, 1, 2, 3, 4, 5, 6, 7};
  std::shuffle(order.begin(), order.end(), rng);
  for (int k : order) {
    options.attachment.interfaces.push_back(
        backends::EndpointInterface{absl::StrCat("x/p", k), absl::StrCat("veth-p", k)});
  }
  auto backend = std::make_unique<RecordingBackend>(&applied_, &fail_, &calls_);
  const RecordingBackend* recording = backend.get();
  Agent agent(agent_->current(), std::move(backend), options, &metrics_, &log_);
  ASSERT_TRUE(agent.Reconcile().ok());
  std::vector<bool> live(10, false);  // p8 and p9 have no interface
  int deltas = 0;
  for (int step = 0; step < 60; ++step) {
    // Several events per sync at times: their interfaces change together.
    const int events = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < events; ++e) {
      const int k = static_cast<int>(rng() % live.size());
      const std::string ip = absl::StrCat("10.0.1.", 10 + k);
      agent.HandleEvent(PodEvent(live[k] ? "DELETED" : "ADDED", absl::StrCat("p", k), ip),
                        absl::Now());
      live[k] = !live[k];
    }
    ASSERT_TRUE(agent.Sync().ok()) << "step " << step;
    if (calls_.back() != "UpdateDelta") continue;
    ++deltas;
    absl::StatusOr<ir::CompiledPolicy> expected = LowerToIr(*agent.current());
    ASSERT_TRUE(expected.ok());
    const std::vector<std::string> endpoints = EndpointNames(*expected);
    std::vector<std::string> want;
    for (const backends::EndpointInterface& i : options.attachment.interfaces) {
      if (std::count(endpoints.begin(), endpoints.end(), i.pod) > 0) {
        want.push_back(i.pod + "=" + i.interface);
      }
    }
    ASSERT_EQ(recording->delta_interfaces.back(), want) << "step " << step;
  }
  EXPECT_GT(deltas, 30);  // the pod events went through the delta
}

TEST_F(AgentTest, ProgramSizeIsRecountedAtMostEveryCapacityInterval) {
  // The same agent with the default interval (seconds): the sync right after the reconcile
  // keeps the reconcile's count, so that a busy agent does not count on every sync.
  AgentOptions options;
  options.default_kind = "Pod";
  options.min_interval = absl::ZeroDuration();
  AgentMetrics metrics;
  Agent agent(agent_->current(), std::make_unique<RecordingBackend>(&applied_, &fail_), options,
              &metrics, &log_);
  ASSERT_TRUE(agent.Reconcile().ok());
  EXPECT_THAT(metrics.Render(), HasSubstr("np_agent_program_items{item=\"endpoints\"} 1\n"));
  agent.HandleEvent(PodEvent("ADDED", "b", "10.0.0.2"), absl::Now());
  ASSERT_TRUE(agent.Sync().ok());
  EXPECT_EQ(EndpointNames(applied_.back()), std::vector<std::string>({"x/a", "x/b"}));
  EXPECT_THAT(metrics.Render(), HasSubstr("np_agent_program_items{item=\"endpoints\"} 1\n"));
}

TEST_F(AgentTest, InvalidEventIsRejectedWithFieldPathAndStateKept) {
  ASSERT_TRUE(agent_->Reconcile().ok());
  // A policy whose port is out of range: the API server's validation refuses it.
  agent_->HandleEvent(
      R"({"type":"ADDED","object":{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",)"
      R"("metadata":{"name":"bad","namespace":"x"},"spec":{"podSelector":{},)"
      R"("ingress":[{"ports":[{"port":70000}]}]}}})",
      absl::Now());
  agent_->HandleEvent("this is not an event", absl::Now());
  EXPECT_EQ(agent_->pending_events(), 0);
  EXPECT_EQ(agent_->current()->stats().policies, 0u);
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_events_total{result=\"rejected\"} 2\n"));
  EXPECT_EQ(metrics_.rejected_events(), 2u);  // what bench/agent_churn reads
  const std::string log = log_text_.str();
  EXPECT_THAT(log, HasSubstr("\"object\":\"NetworkPolicy x/bad\""));
  EXPECT_THAT(log, HasSubstr("spec.ingress[0].ports[0].port"));
  EXPECT_THAT(log, HasSubstr("not a JSON object"));
  // Every log line is one JSON object.
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_TRUE(line.front() == '{' && line.back() == '}') << line;
  }
}

TEST_F(AgentTest, DeleteOfWhatIsGoneIsIdempotent) {
  agent_->HandleEvent(PodEvent("DELETED", "zz", "10.0.0.9"), absl::Now());
  EXPECT_EQ(agent_->pending_events(), 0);
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_events_total{result=\"applied\"} 1\n"));
}

// Pod x/a as the kubelet reports it over and over: the same labels, node, addresses and
// container ports (`ports`: the containers' "ports" JSON), with a new resourceVersion,
// annotation and Ready condition each time (`beat`).
std::string PodAHeartbeat(int beat, const std::string& ports = "[]") {
  return absl::StrCat(
      R"({"type":"MODIFIED","object":{"metadata":{"name":"a","namespace":"x",)",
      R"("resourceVersion":")", 1000 + beat, R"(","annotations":{"beat":")", beat, R"("},)",
      R"("labels":{"app":"a"}},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"i",)",
      R"("ports":)", ports, R"(}]},"status":{"phase":"Running","podIP":"10.0.0.1",)",
      R"("podIPs":[{"ip":"10.0.0.1"}],"conditions":[{"type":"Ready","status":"True",)",
      R"("lastTransitionTime":"2026-12-01T09:4)", beat % 10, R"(:00Z"}]}}})");
}

// A status heartbeat changes nothing the engine reads: the engine keeps its snapshot (the
// same pointer), nothing waits for the kernel and the backend is not called; a change of
// what the engine does read (a named container port) is an event as any other.
TEST_F(AgentTest, HeartbeatReachesNeitherTheEngineNorTheKernel) {
  ASSERT_TRUE(agent_->Reconcile().ok());
  const size_t calls = calls_.size();
  const std::shared_ptr<const Engine> before = agent_->current();
  for (int beat = 0; beat < 3; ++beat) {
    agent_->HandleEvent(PodAHeartbeat(beat), absl::Now());
    EXPECT_EQ(agent_->current(), before) << "beat " << beat << " made a new snapshot";
    EXPECT_EQ(agent_->pending_events(), 0);
    EXPECT_FALSE(agent_->SyncDue(absl::Now() + absl::Hours(1)));
  }
  ASSERT_TRUE(agent_->Sync().ok());  // (as RunLoop never would: nothing is due)
  EXPECT_EQ(calls_.size(), calls) << "the backend was called for heartbeats";
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_events_total{result=\"applied\"} 3\n"));
  EXPECT_THAT(log_text_.str(), HasSubstr("changes nothing the engine reads"));
  // A named port is read (a policy may name it): a new snapshot, and to the kernel.
  agent_->HandleEvent(PodAHeartbeat(4, R"([{"name":"http","containerPort":80}])"), absl::Now());
  EXPECT_NE(agent_->current(), before);
  EXPECT_EQ(agent_->pending_events(), 1);
  ASSERT_TRUE(agent_->Sync().ok());
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
  // ...and its heartbeat, with the port, is a heartbeat again.
  const std::shared_ptr<const Engine> with_port = agent_->current();
  agent_->HandleEvent(PodAHeartbeat(5, R"([{"name":"http","containerPort":80}])"), absl::Now());
  EXPECT_EQ(agent_->current(), with_port);
  EXPECT_EQ(agent_->pending_events(), 0);
}

// An event the engine takes whose delta edits nothing — a NetworkPolicy of a namespace with
// no pod on this node — is synced without calling the backend.
TEST_F(AgentTest, DeltaThatEditsNothingLeavesTheKernelAlone) {
  ASSERT_TRUE(agent_->Reconcile().ok());
  const size_t calls = calls_.size();
  agent_->HandleEvent(
      R"({"type":"ADDED","object":{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",)"
      R"("metadata":{"name":"elsewhere","namespace":"y"},)"
      R"("spec":{"podSelector":{},"policyTypes":["Ingress"]}}})",
      absl::Now());
  EXPECT_EQ(agent_->pending_events(), 1);  // the engine has a new policy
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(agent_->pending_events(), 0);
  EXPECT_EQ(agent_->policy_delta_syncs(), 1);
  EXPECT_EQ(calls_.size(), calls) << "called: " << calls_.back();
  EXPECT_THAT(log_text_.str(), HasSubstr("\"update\":\"none\""));
  ASSERT_NO_FATAL_FAILURE(ExpectKernelHoldsCurrent());
}

// An AdminNetworkPolicy's watch events as kubectl prints them (kind present).
std::string AdminPolicyEvent(const std::string& type, int priority) {
  return absl::StrCat(
      R"({"type":")", type,
      R"(","object":{"apiVersion":"policy.networking.k8s.io/v1alpha1","kind":"AdminNetworkPolicy",)"
      R"("metadata":{"name":"deny-all"},"spec":{"priority":)", priority,
      R"(,"subject":{"namespaces":{}},)"
      R"("ingress":[{"name":"deny","action":"Deny","from":[{"namespaces":{}}]}]}}})");
}

// The policy tiers follow their watch events: an Admin-tier Deny added denies x/b -> x/a
// (it decides before anything else), deleted it allows again (nothing isolates x/a); an
// invalid one is refused with its field path and the state kept.
TEST_F(AgentTest, AdminNetworkPolicyEventsChangeVerdicts) {
  ASSERT_TRUE(agent_->Reconcile().ok());
  agent_->HandleEvent(PodEvent("ADDED", "b", "10.0.0.2"), absl::Now());
  auto b_to_a = [&] {
    std::shared_ptr<const Engine> engine = agent_->current();
    return engine->Allowed(*engine->FindPod("x/b"), *engine->FindPod("x/a"), Protocol::kTCP, 80);
  };
  EXPECT_TRUE(b_to_a());
  agent_->HandleEvent(AdminPolicyEvent("ADDED", 10), absl::Now());
  EXPECT_FALSE(b_to_a());
  EXPECT_EQ(agent_->pending_events(), 2);
  EXPECT_THAT(log_text_.str(), HasSubstr("\"object\":\"AdminNetworkPolicy deny-all\""));
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(agent_->pending_events(), 0);
  // Out of range: "priority ... maximum 1000".
  agent_->HandleEvent(AdminPolicyEvent("MODIFIED", 1001), absl::Now());
  EXPECT_EQ(agent_->pending_events(), 0);
  EXPECT_FALSE(b_to_a());
  EXPECT_THAT(log_text_.str(), HasSubstr("spec.priority"));
  agent_->HandleEvent(AdminPolicyEvent("DELETED", 10), absl::Now());
  EXPECT_TRUE(b_to_a());
  // A relist's second delete: nothing to do.
  agent_->HandleEvent(AdminPolicyEvent("DELETED", 10), absl::Now());
  EXPECT_EQ(agent_->pending_events(), 1);
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_events_total{result=\"applied\"} 4\n"));
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_events_total{result=\"rejected\"} 1\n"));
}

TEST_F(AgentTest, FailedUpdateKeepsEventsPendingAndRetriesLater) {
  ASSERT_TRUE(agent_->Reconcile().ok());
  agent_->HandleEvent(PodEvent("ADDED", "b", "10.0.0.2"), absl::Now());
  fail_ = true;
  EXPECT_FALSE(agent_->Sync().ok());
  EXPECT_EQ(agent_->pending_events(), 1);
  EXPECT_GE(agent_->UntilSyncDue(absl::Now()), absl::Milliseconds(900));  // backs off 1 s
  EXPECT_THAT(metrics_.Render(), HasSubstr("np_agent_sync_failures_total 1\n"));
  fail_ = false;
  ASSERT_TRUE(agent_->Sync().ok());
  EXPECT_EQ(EndpointNames(applied_.back()), std::vector<std::string>({"x/a", "x/b"}));
}

TEST_F(AgentTest, RunLoopReadsAPipeToItsEnd) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  // One write, two events: both must reach the backend.
  const std::string events =
      PodEvent("ADDED", "b", "10.0.0.2") + "\n" + PodEvent("ADDED", "c", "10.0.0.3") + "\n";
  ASSERT_EQ(write(fds[1], events.data(), events.size()), static_cast<ssize_t>(events.size()));
  close(fds[1]);
  ASSERT_TRUE(RunLoop(
                  *agent_, fds[0], [] { return false; }, /*exit_at_end=*/true)
                  .ok());
  close(fds[0]);
  ASSERT_FALSE(applied_.empty());
  EXPECT_EQ(EndpointNames(applied_.back()), std::vector<std::string>({"x/a", "x/b", "x/c"}));
}

// ---- MetricsServer ---------------------------------------------------------------------

std::string HttpGet(int port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "connect failed";
  }
  (void)write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
  close(fd);
  return response;
}

TEST(MetricsServerTest, ServesTheExpositionOverHttp) {
  AgentMetrics metrics;
  metrics.CountEvent(true);
  metrics.CountEvent(false);
  metrics.RecordSync(absl::FromUnixSeconds(1700000000),
                     {absl::Microseconds(300), absl::Milliseconds(3)}, {{"rules", 7}});
  metrics.CountDeltaSync(/*policy=*/true);
  metrics.CountDeltaSync(/*policy=*/true);
  metrics.CountDeltaSync(/*policy=*/false);
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start("127.0.0.1:0", &metrics);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string response =
      HttpGet((*server)->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(response, ::testing::StartsWith("HTTP/1.0 200 OK\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(response, HasSubstr("np_agent_events_total{result=\"applied\"} 1\n"));
  EXPECT_THAT(response, HasSubstr("np_agent_events_total{result=\"rejected\"} 1\n"));
  // 0.3 ms falls in le=0.0005, 3 ms in le=0.005; buckets are cumulative.
  EXPECT_THAT(response, HasSubstr("np_agent_update_latency_seconds_bucket{le=\"0.0005\"} 1\n"));
  EXPECT_THAT(response, HasSubstr("np_agent_update_latency_seconds_bucket{le=\"0.0025\"} 1\n"));
  EXPECT_THAT(response, HasSubstr("np_agent_update_latency_seconds_bucket{le=\"0.005\"} 2\n"));
  EXPECT_THAT(response, HasSubstr("np_agent_program_items{item=\"rules\"} 7\n"));
  EXPECT_THAT(response, HasSubstr("\nnp_agent_rules 7\n"));
  EXPECT_THAT(response, ::testing::Not(HasSubstr("np_agent_map_entries")));  // not reported
  EXPECT_THAT(response, HasSubstr("np_agent_last_sync_timestamp_seconds 1700000000.000\n"));
  // One counter family, a sample per kind, declared once (the exposition format's rule).
  EXPECT_THAT(response, HasSubstr("\n# TYPE np_agent_delta_syncs_total counter\n"
                                  "np_agent_delta_syncs_total{kind=\"pod\"} 1\n"
                                  "np_agent_delta_syncs_total{kind=\"policy\"} 2\n"));
  EXPECT_THAT(HttpGet((*server)->port(), "POST / HTTP/1.0\r\n\r\n"), HasSubstr("405"));
  EXPECT_FALSE(MetricsServer::Start("localhost", &metrics).ok());
}

}  // namespace
}  // namespace np::agent
