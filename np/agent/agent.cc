#include "np/agent/agent.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <tuple>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/types/span.h"
#include "np/agent/watch_event.h"
#include "np/backends/util.h"
#include "np/lower.h"
#include "np/lower_align.h"

namespace np::agent {

namespace {

bool SameInterfaces(const backends::Attachment& a, const backends::Attachment& b) {
  if (a.netns != b.netns || a.interfaces.size() != b.interfaces.size()) return false;
  for (size_t i = 0; i < a.interfaces.size(); ++i) {
    if (a.interfaces[i].pod != b.interfaces[i].pod ||
        a.interfaces[i].interface != b.interfaces[i].interface) {
      return false;
    }
  }
  return true;
}

// A delta that edits nothing: the kernel already has what it means.
bool EditsNothing(const ir::CompiledPolicyDelta& d) {
  return d.ipv4_size() == 0 && d.ipv6_size() == 0 && d.endpoints_size() == 0 &&
         d.identity_pods_size() == 0 && d.peer_sets_size() == 0 && d.tables_size() == 0 &&
         d.identities_size() == 0;
}

// Makes glibc fold the small chunks freed since the last large request back into its free
// lists now. A request above its small-bin range does that (malloc_consolidate) while
// fast-bin chunks are pending; volatile, so that the pair is not elided.
void ConsolidateFreedMemory() {
  void* volatile block = malloc(4096);
  free(block);
}

}  // namespace

Agent::Agent(std::shared_ptr<const Engine> initial, std::unique_ptr<backends::Backend> backend,
             AgentOptions options, AgentMetrics* metrics, JsonLog* log)
    : live_(std::move(initial)),
      backend_(std::move(backend)),
      options_(std::move(options)),
      metrics_(metrics),
      log_(log) {
  const auto& interfaces = options_.attachment.interfaces;
  attached_.assign(interfaces.size(), false);
  for (size_t i = 0; i < interfaces.size(); ++i) {
    interfaces_of_pod_[interfaces[i].pod].push_back(static_cast<uint32_t>(i));
  }
}

absl::Status Agent::Reconcile() {
  log_->Write("info", "reconciling: replacing the kernel's np program with the current state",
              {LogField::Text("backend", backend_->name()),
               LogField::Text("netns", options_.attachment.netns)});
  installed_.reset();  // whatever is there is replaced whole
  delta_index_.reset();
  return Sync();
}

void Agent::HandleEvent(absl::string_view text, absl::Time received) {
  const int64_t number = ++events_;
  absl::StatusOr<WatchEvent> event = ParseWatchEvent(text, options_.default_kind);
  if (!event.ok()) {
    metrics_->CountEvent(/*applied=*/false);
    log_->Write(
        "warn", "event rejected: kept the last good state",
        {LogField::Number("event", number), LogField::Text("error", event.status().message())});
    return;
  }
  if (event->type == WatchEvent::Type::kBookmark) {
    metrics_->CountEvent(/*applied=*/true);
    return;
  }
  if (event->type == WatchEvent::Type::kError) {
    // The watch broke (e.g. 410 Gone); whoever feeds the agent must relist. Nothing changes.
    metrics_->CountEvent(/*applied=*/false);
    log_->Write("error", "watch ERROR event: the watch must be restarted with a relist",
                {LogField::Number("event", number), LogField::Text("status", event->what)});
    return;
  }
  std::shared_ptr<const Engine> current = live_.Current();
  if (event->type == WatchEvent::Type::kDeleted && !current->Holds(*event->change)) {
    // A relist may delete what is already gone.
    metrics_->CountEvent(/*applied=*/true);
    log_->Write("info", "delete of an object not held: nothing to do",
                {LogField::Number("event", number), LogField::Text("object", event->what)});
    return;
  }
  std::vector<Diagnostic> diagnostics;
  // The event's change itself (a span of one), not a copy in an initializer list: the copy
  // was a whole pod object allocated and freed again per event.
  absl::Status applied = live_.Apply(absl::MakeConstSpan(&*event->change, 1), &diagnostics);
  if (!applied.ok()) {
    metrics_->CountEvent(/*applied=*/false);
    std::vector<std::string> errors;
    for (const Diagnostic& d : diagnostics) {
      if (d.is_error()) errors.push_back(d.ToString());
    }
    log_->Write("warn", "event rejected: kept the last good state",
                {LogField::Number("event", number), LogField::Text("object", event->what),
                 LogField::Text("error", errors.empty() ? std::string(applied.message())
                                                        : absl::StrJoin(errors, "; "))});
    return;
  }
  if (live_.Current() == current) {
    // The engine kept its snapshot: the event changes nothing it reads (a pod's status
    // heartbeat). Nothing waits for the kernel, and the next sync is no busier for it.
    metrics_->CountEvent(/*applied=*/true);
    log_->Write("info", "event changes nothing the engine reads: kernel left as it is",
                {LogField::Number("event", number), LogField::Text("object", event->what)});
    return;
  }
  if (const auto* pod = std::get_if<k8s::Pod>(&event->change->object)) {
    const std::string& ns = pod->metadata().namespace_();
    changed_pods_.push_back(absl::StrCat(ns.empty() ? "default" : ns, "/", pod->metadata().name()));
  } else {
    other_changes_ = true;
  }
  pending_.push_back(received);
  // Pending before counted: a scrape that sees every event counted and none pending knows
  // the kernel has them all.
  metrics_->SetPendingEvents(static_cast<int64_t>(pending_.size()));
  metrics_->CountEvent(/*applied=*/true);
  log_->Write("info", "event applied",
              {LogField::Number("event", number), LogField::Text("object", event->what)});
}

bool Agent::SyncDue(absl::Time now) const { return UntilSyncDue(now) <= absl::ZeroDuration(); }

absl::Duration Agent::UntilSyncDue(absl::Time now) const {
  if (pending_.empty()) return absl::InfiniteDuration();
  const absl::Time due = std::max(last_sync_start_ + options_.min_interval, retry_after_);
  return std::max(absl::ZeroDuration(), due - now);
}

absl::Status Agent::Sync() {
  // Last, after every local is destroyed (declared first), off the latency path (the kernel
  // has the events): the sync's freed temporaries consolidated while they are in cache. Left
  // to the next event, after an idle gap, its first large allocation walked them cold:
  // malloc_consolidate was 40 % of LiveEngine::Apply after the bench's 20 ms gap (perf).
  struct ConsolidateAtExit {
    ~ConsolidateAtExit() { ConsolidateFreedMemory(); }
  } consolidate_at_exit;
  const absl::Time start = absl::Now();
  last_sync_start_ = start;
  auto fail = [&](const absl::Status& s) {
    metrics_->CountSyncFailure();
    retry_after_ = start + std::max(options_.min_interval, absl::Seconds(1));
    if (std::string(s.message()) != last_sync_error_) {
      last_sync_error_ = std::string(s.message());
      log_->Write("error", "kernel update failed: the kernel keeps its last program",
                  {LogField::Text("error", s.message()),
                   LogField::Number("pending_events", static_cast<double>(pending_.size()))});
    }
    return s;
  };
  std::shared_ptr<const Engine> snapshot = live_.Current();
  // Pod events only, onto what this agent installed: the change as a delta, when it is one.
  std::optional<PodDelta> delta;
  std::string whole_why;
  if (!installed_.has_value() || !delta_index_.has_value()) {
    whole_why = "nothing installed by this agent";
  } else if (other_changes_ && !changed_pods_.empty()) {
    whole_why = "pods and other objects changed";
  } else if (other_changes_) {
    // Policies, tier policies, namespaces or nodes only: a delta when the address atoms stay
    // (pods' identities may split or merge; np/lower_delta.h, LowerPolicyChange).
    delta = delta_index_->LowerPolicyChange(snapshot, *installed_, &whole_why);
    if (!delta.has_value()) whole_why = absl::StrCat("policy event: ", whole_why);
  } else {
    delta = delta_index_->Lower(snapshot, *installed_, changed_pods_, &whole_why);
  }
  const bool policy_delta = delta.has_value() && other_changes_;
  std::optional<ir::CompiledPolicy> whole;
  std::optional<AlignStats> alignment;
  absl::Status applied;
  if (delta.has_value()) {
    // The interfaces of the pods the delta adds or deletes come and go with it: the
    // backend attaches them in place or loads anew as it must (nft and iptables work by
    // address and ignore interfaces; eBPF attaches a new pod's veth in place).
    EditAttachment(delta->delta);
    // An event the engine took whose delta edits nothing (e.g. a pod on another node whose
    // new labels give the same identity) leaves the kernel alone.
    if (!EditsNothing(delta->delta)) {
      applied = backend_->UpdateDelta(*installed_, delta->delta, installed_attachment_);
      // In place: the program the kernel now has, without a copy of the whole.
      if (applied.ok()) applied = backends::ApplyDelta(delta->delta, &*installed_);
    }
    if (applied.ok()) delta_index_->Commit(*delta);
  } else {
    absl::StatusOr<ir::CompiledPolicy> ir = LowerToIr(*snapshot);
    if (!ir.ok()) return fail(ir.status());
    // Numbered onto what is installed (np/lower_align.h): what did not change keeps its id,
    // so that a backend's Update can compare by id and change only what differs.
    if (installed_.has_value()) {
      AlignStats stats;
      absl::StatusOr<ir::CompiledPolicy> aligned =
          AlignNumbering(*installed_, *std::move(ir), &stats);
      if (aligned.ok()) {
        alignment = stats;
      } else {  // cannot happen for programs LowerToIr made; the dense program is as good
        log_->Write("warn", "could not align the lowering: installing it as numbered",
                    {LogField::Text("error", aligned.status().message())});
        aligned = LowerToIr(*snapshot);
        if (!aligned.ok()) return fail(aligned.status());
      }
      ir = std::move(aligned);
    }
    // The interfaces of pods that are endpoints now: a pod given an interface may not exist
    // yet, or any more (backends that attach per interface refuse strangers).
    backends::Attachment before = installed_attachment_;
    SetAttachment(*ir);
    // An update from what this agent installed when it knows it (the same interfaces): the
    // backend may then change only what differs. After a failure the kernel's state is not
    // known for certain, so the next sync replaces it whole.
    const bool incremental =
        installed_.has_value() && SameInterfaces(before, installed_attachment_);
    applied = incremental ? backend_->Update(*installed_, *ir, installed_attachment_)
                          : backend_->Apply(*ir, installed_attachment_);
    whole = *std::move(ir);
  }
  if (!applied.ok()) {
    installed_.reset();
    delta_index_.reset();
    return fail(applied);
  }
  if (whole.has_value()) installed_ = *std::move(whole);
  const ir::CompiledPolicy& program = *installed_;
  const absl::Time done = absl::Now();
  std::vector<absl::Duration> latencies;
  latencies.reserve(pending_.size());
  for (absl::Time received : pending_) latencies.push_back(done - received);
  // The program's size as the backend counts it (after the update: off the latency path),
  // at most every options_.capacity_interval.
  if (done - last_capacity_ >= options_.capacity_interval) {
    last_capacity_ = done;
    capacity_items_.clear();
    if (absl::StatusOr<ir::BackendCapacity> c = backend_->Capacity(program); c.ok()) {
      for (const ir::CapacityItem& item : c->items()) capacity_items_[item.name()] = item.used();
    }
  }
  metrics_->RecordSync(done, latencies, capacity_items_);
  if (alignment.has_value()) {
    metrics_->RecordAlignment(*alignment);
    ++aligned_syncs_;
  }
  last_alignment_ = alignment;
  // What a whole sync changed under installed ids ("changed/added/unused" per kind).
  auto changes = [&](const AlignItemStats AlignStats::*kind) {
    if (!alignment.has_value()) return std::string();
    const AlignItemStats& k = (*alignment).*kind;
    return absl::StrCat(k.changed, "/", k.added, "/", k.unused);
  };
  log_->Write("info", "kernel updated",
              {LogField::Number("events", static_cast<double>(pending_.size())),
               LogField::Number("seconds", absl::ToDoubleSeconds(done - start)),
               LogField::Number("endpoints", program.endpoints_size()),
               LogField::Number("identities", program.identities_size()),
               LogField::Text("update", !delta.has_value()             ? "whole"
                                        : EditsNothing(delta->delta) ? "none"
                                                                     : "delta"),
               LogField::Text("whole_because", delta.has_value() ? "" : whole_why),
               LogField::Text("delta_of", !delta.has_value() ? ""
                                          : policy_delta     ? "policies"
                                                             : "pods"),
               // What a delta replaced or appended (tables and peer sets: policy events),
               // and how many endpoint slice edits it made.
               LogField::Number("delta_tables", delta.has_value() ? delta->delta.tables_size() : 0),
               LogField::Number("delta_peer_sets",
                                delta.has_value() ? delta->delta.peer_sets_size() : 0),
               LogField::Number("delta_endpoint_edits",
                                delta.has_value() ? delta->delta.endpoints_size() : 0),
               // Identities appended (a pod relabelled into a label set no address had).
               LogField::Number("delta_identities",
                                delta.has_value() ? delta->delta.identities_size() : 0),
               LogField::Text("numbering", !alignment.has_value() ? "fresh"
                                           : alignment->compacted ? "compacted"
                                                                  : "aligned"),
               LogField::Text("identities_changed_added_unused", changes(&AlignStats::identities)),
               LogField::Text("peer_sets_changed_added_unused", changes(&AlignStats::peer_sets)),
               LogField::Text("tables_changed_added_unused", changes(&AlignStats::tables))});
  last_whole_reason_ = delta.has_value() ? "" : whole_why;
  pending_.clear();
  metrics_->SetPendingEvents(0);
  last_sync_error_.clear();
  retry_after_ = absl::InfinitePast();
  changed_pods_.clear();
  other_changes_ = false;
  if (delta.has_value()) {
    ++delta_syncs_;
    if (policy_delta) ++policy_delta_syncs_;
    metrics_->CountDeltaSync(policy_delta);
    // Its storage serves the next event's delta (np/lower_delta.h, Recycle).
    delta_index_->Recycle(*std::move(delta));
  } else {
    // Off the latency path (the events are in the kernel already): the index the next pod
    // events' deltas need, O(program size) once per whole lowering.
    delta_index_ = PodDeltaLowering::Index(snapshot, program);
  }
  return absl::OkStatus();
}

bool Agent::EndpointAfter(const std::string& key, const ir::CompiledPolicyDelta& delta) const {
  // An endpoint the delta lists, or an installed one no edit replaces.
  for (const ir::EndpointSliceEdit& edit : delta.endpoints()) {
    for (const ir::Endpoint& e : edit.endpoints()) {
      if (e.namespace_() + "/" + e.name() == key) return true;
    }
  }
  // Endpoints are sorted by (namespace, name): a binary search, not a pass.
  const size_t slash = key.find('/');
  const std::string ns = key.substr(0, slash);
  const std::string name = slash == std::string::npos ? "" : key.substr(slash + 1);
  const auto& endpoints = installed_->endpoints();
  auto it = std::lower_bound(endpoints.begin(), endpoints.end(), 0,
                             [&](const ir::Endpoint& e, int) {
                               return std::tie(e.namespace_(), e.name()) < std::tie(ns, name);
                             });
  if (it == endpoints.end() || it->namespace_() != ns || it->name() != name) return false;
  const uint32_t index = static_cast<uint32_t>(it - endpoints.begin());
  for (const ir::EndpointSliceEdit& edit : delta.endpoints()) {
    if (index >= edit.begin() && index < edit.end()) return false;
  }
  return true;
}

void Agent::EditAttachment(const ir::CompiledPolicyDelta& delta) {
  // A pod no event changed is attached as before; a changed one is if it is an endpoint
  // after the delta. installed_attachment_ lists options_.attachment's interfaces in order,
  // so an interface's place there is the count of attached ones before it.
  for (const std::string& key : changed_pods_) {
    auto found = interfaces_of_pod_.find(key);
    if (found == interfaces_of_pod_.end()) continue;
    const bool after = EndpointAfter(key, delta);
    for (uint32_t i : found->second) {
      if (attached_[i] == after) continue;
      auto at = installed_attachment_.interfaces.begin() +
                std::count(attached_.begin(), attached_.begin() + i, true);
      if (after) {
        installed_attachment_.interfaces.insert(at, options_.attachment.interfaces[i]);
      } else {
        installed_attachment_.interfaces.erase(at);
      }
      attached_[i] = after;
    }
  }
}

void Agent::SetAttachment(const ir::CompiledPolicy& program) {
  std::set<std::string> endpoints;
  for (const ir::Endpoint& e : program.endpoints()) endpoints.insert(e.namespace_() + "/" + e.name());
  installed_attachment_ = options_.attachment;
  installed_attachment_.interfaces.clear();
  const auto& interfaces = options_.attachment.interfaces;
  for (size_t i = 0; i < interfaces.size(); ++i) {
    attached_[i] = endpoints.count(interfaces[i].pod) > 0;
    if (attached_[i]) installed_attachment_.interfaces.push_back(interfaces[i]);
  }
}

absl::Status Agent::Remove() { return backend_->Remove(options_.attachment); }

absl::Status RunLoop(Agent& agent, int fd, const std::function<bool()>& stop, bool exit_at_end) {
  EventSplitter splitter;
  bool input_open = true;
  char buffer[64 << 10];
  while (!stop()) {
    const absl::Duration until = agent.UntilSyncDue(absl::Now());
    const int wait_ms = static_cast<int>(
        std::min<int64_t>(100, absl::ToInt64Milliseconds(until + absl::Microseconds(999))));
    if (input_open) {
      pollfd p{fd, POLLIN, 0};
      const int ready = poll(&p, 1, wait_ms);
      if (ready < 0 && errno != EINTR) {
        return absl::InternalError(absl::StrCat("events: poll: ", strerror(errno)));
      }
      if (ready > 0) {
        const ssize_t n = read(fd, buffer, sizeof(buffer));
        const absl::Time received = absl::Now();
        if (n < 0 && errno != EINTR && errno != EAGAIN) {
          return absl::InternalError(absl::StrCat("events: read: ", strerror(errno)));
        }
        if (n > 0) {
          for (const std::string& text : splitter.Feed(absl::string_view(buffer, n))) {
            agent.HandleEvent(text, received);
          }
        } else if (n == 0) {
          input_open = false;
          for (const std::string& text : splitter.Finish()) agent.HandleEvent(text, received);
        }
      }
    } else {
      if (agent.pending_events() == 0 && exit_at_end) return absl::OkStatus();
      usleep(static_cast<useconds_t>(std::max(1, wait_ms)) * 1000);
    }
    if (agent.SyncDue(absl::Now())) (void)agent.Sync();  // Sync logs and counts failures
  }
  return absl::OkStatus();
}

}  // namespace np::agent
