// Event -> kernel latency of `netpol agent` (issue 13): one np::agent::Agent per backend (nft,
// iptables, ebpf) and node shape (110 pods on a node of a 1k-pod cluster; 1,000 pods on a
// node of the 10k-pod cluster; bench/agent_workload.h), fed single watch events as the agent
// reads them: HandleEvent(JSON line) then Sync(). Each event is timed from HandleEvent's
// start to the backend's Apply/Update returning ("event -> kernel", what the agent's own
// latency histogram counts) and split into
//   engine  — HandleEvent: parse the event, LiveEngine::Apply;
//   lower   — Sync up to the backend: LowerToIr of the new snapshot for node-0, numbered onto
//             the installed program (AlignNumbering), + attachment;
//   backend — Backend::Update(previous, next) (or Apply when the agent falls back to it:
//             first sync, or the eBPF attachment changed because a local pod came or went);
// and `capacity`, the Capacity report the agent makes after the kernel is updated (off the
// latency path, but on the agent's thread before it reads the next event).
//
// Event pairs, each iteration timing both (the second restores the state, so iterations are
// alike): a pod added then deleted on another node (only the identity of its addresses
// changes), the same on node-0 (a new endpoint), a pod relabelled into another deployment's
// identity and back (on another node, and on node-0: labels only, so the pod keeps its own
// named ports and lands in a peer class of its own, a new identity: lowered whole), a pod
// moved into another pod's class exactly (labels and containers) and back (other node;
// node-0 with both pods there), an allow policy added to node-0's pods then deleted, and
// (SplitPolicy) one whose peer splits a node-0 pod off its replicas' identity, then deleted
// (the pod labelled canary=true before the pair's iterations, untimed, and back after).
// A second table says, per row, why the agent lowered whole (Agent::last_whole_reason) and,
// for iptables, how the backend updated (IptablesLastUpdate: in place, or full and why), for
// nft whether UpdateDelta edited in place (DeltaStats) or took the full path and why. Every event is checked to be applied (not rejected) and every sync to
// succeed; a failure stops the benchmark with an error.
//
// Needs root: each (backend, shape) works in a network namespace of its own
// ("npagentbench-<pid>-<n>", deleted afterwards; eBPF gets one veth per local pod there).
// Timings come as counters (p50/p99/max ms per event kind) and, at the end, as one markdown
// table for bench/RESULTS.md. BM_LowerToIr times LowerToIr alone for both shapes (no root);
// BM_LowerDelta a pod event's delta lowering against LowerToIr (no root); BM_AlignNumbering
// the whole syncs' LowerToIr and AlignNumbering (np/lower_align.h) apart (no root). "lower"
// in the agent rows includes the alignment. "via delta": syncs
// the agent sent as a pod delta (np/lower_delta.h, Backend::UpdateDelta) instead of lowering,
// or as a policy delta (LowerPolicyChange; "policy delta" in the second table).
// BM_PolicyDelta: the policy pair's LowerPolicyChange against LowerToIr + AlignNumbering of
// the same snapshot (no root); BM_PolicyDelta/<shape>/Split the same for a policy whose peer
// splits an identity (SplitPolicy).
//
//   bazel build -c opt //bench:agent_latency_bench
//   sudo bazel-bin/bench/agent_latency_bench [--iterations_small=N] [--iterations_large=N] [--gap_ms=N]
//        [--gap_spin] [--probe] [--samples] [--benchmark_filter=nft]
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/agent_workload.h"
#include "bench/cluster_generator.h"
#include "benchmark/benchmark.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/backends/iptables/iptables.h"
#include "np/backends/nft/nft.h"
#include "np/backends/util.h"
#include "np/lower.h"
#include "np/lower_align.h"
#include "np/lower_delta.h"

namespace np::bench {
namespace {

const char* const kBackends[] = {"nft", "iptables", "ebpf"};
const NodeShape kShapes[] = {NodeShape::kSmall, NodeShape::kLarge};
int iterations_small = 40;
int iterations_large = 12;
// --gap_ms=N: an untimed pause before each measured event. 0 (default): back to back, faster
// than the agent itself ever syncs (AgentOptions::min_interval, 20 ms, between two kernel
// updates), so work a backend leaves to a grace period after one update (nft's deferred
// retirement, eBPF's old slots) is still pending when the next one starts. --gap_ms=20 is the
// pace the agent's own loop keeps.
int gap_ms = 0;
// --gap_spin: the gap busy-waits instead of sleeping, so the vCPU never halts in it (h89: is
// the hidden wall time after a gap the vCPU's idle exit or our memory?).
bool gap_spin = false;
// --probe: per event, the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), its page faults and
// context switches (getrusage RUSAGE_THREAD), the machine's steal time (/proc/stat) and the
// free-page-reporting counter (guest pages handed back to the host, which must fault them in
// again) around HandleEvent and Sync, as counters: says whether a phase's wall time is this
// thread's CPU (h89: it is; the time perf "missed" was malloc's, unwound without frame
// pointers — profile with `perf record --call-graph dwarf`).
bool probe = false;
// --samples: every event's figures on stderr, one line each ("sample <backend> <node> <event>
// kernel_ms= ..."), with --probe's too: which phase an outlier (p99 against p50) spent its
// time in, and whether that was this thread's CPU.
bool samples = false;

// One event's figures, seconds.
struct Sample {
  double kernel = 0;    // HandleEvent start -> backend returned
  double total = 0;     // HandleEvent start -> Sync returned
  double engine = 0, lower = 0, backend = 0, capacity = 0;
  bool update = false;  // the agent called Update (else Apply)
  bool delta = false;   // the sync went through the pod delta (UpdateDelta, no LowerToIr)
  // Why the agent lowered whole, and how the backend updated (IptablesLastUpdate, nft's
  // DeltaStats).
  std::string how;
  // --probe only: CPU seconds of this thread in HandleEvent (engine_cpu), in Sync before the
  // backend's call (lower_cpu: meaningful when the sync called the backend) and in the whole
  // Sync (sync_cpu: lower + backend + capacity + Commit); minor faults in HandleEvent and in
  // Sync; major faults and context switches (voluntary + involuntary) over the event; steal
  // seconds of all CPUs and KiB reported to the host over the event and over the gap before.
  double engine_cpu = 0, lower_cpu = 0, sync_cpu = 0, steal = 0;
  int64_t engine_minflt = 0, sync_minflt = 0, csw = 0, majflt = 0;
  int64_t reported_kib = 0, gap_reported_kib = 0;
};

// Pods and names the events use, picked from the generated cluster.
struct Templates {
  k8s::Pod remote;        // an application pod on node-1: cloned for the remote add
  k8s::Pod local;         // one on node-0: cloned for the local add
  k8s::Pod remote_a;      // relabelled (node-1) into remote_b's labels and back
  k8s::Pod remote_b;
  k8s::Pod local_a;       // relabelled (node-0) into local_b's labels and back
  k8s::Pod local_b;
  k8s::Pod move_a;        // moved (node-0) into move_b's class and back: both on node-0,
  k8s::Pod move_b;        // so that the class has a table in node-0's program
  std::string local_add_key;  // "ns/bench-local-add"
};

// Pod `a` on `node` and a pod of another app in its namespace (on `b_node` too, if given).
bool PickPair(const ClusterObjects& objects, const std::string& node, k8s::Pod* a, k8s::Pod* b,
              const std::string& b_node = "") {
  for (const Sourced<k8s::Pod>& p : objects.pods) {
    if (p.object.spec().nodename() != node || p.object.metadata().labels().count("tier") == 0) {
      continue;
    }
    for (const Sourced<k8s::Pod>& q : objects.pods) {
      if (q.object.metadata().namespace_() == p.object.metadata().namespace_() &&
          (b_node.empty() || q.object.spec().nodename() == b_node) &&
          q.object.metadata().labels().count("app") > 0 &&
          q.object.metadata().labels().at("app") != p.object.metadata().labels().at("app")) {
        *a = p.object;
        *b = q.object;
        return true;
      }
    }
  }
  return false;
}

// Pods a and b of two apps in one namespace on `node`, a's app with another pod there (so
// that a leaving its class leaves its table an endpoint); false when there are none.
bool PickMove(const ClusterObjects& objects, const std::string& node, k8s::Pod* a, k8s::Pod* b) {
  std::map<std::pair<std::string, std::string>, std::vector<const k8s::Pod*>> by_app;
  for (const Sourced<k8s::Pod>& p : objects.pods) {
    const auto& labels = p.object.metadata().labels();
    if (p.object.spec().nodename() != node || labels.count("app") == 0) continue;
    by_app[{p.object.metadata().namespace_(), labels.at("app")}].push_back(&p.object);
  }
  for (const auto& [key, pods] : by_app) {
    if (pods.size() < 2) continue;
    for (const auto& [other, others] : by_app) {
      if (other.first != key.first || other.second == key.second) continue;
      *a = *pods.back();  // not the first by name: the table keeps its first endpoint
      *b = *others.front();
      return true;
    }
  }
  return false;
}

absl::StatusOr<Templates> PickTemplates(const ClusterObjects& objects) {
  Templates t;
  if (!PickPair(objects, "node-1", &t.remote_a, &t.remote_b) ||
      !PickPair(objects, kNode, &t.local_a, &t.local_b) ||
      (!PickMove(objects, kNode, &t.move_a, &t.move_b) &&
       !PickPair(objects, kNode, &t.move_a, &t.move_b, kNode))) {
    return absl::InternalError("the cluster has no pods to relabel");
  }
  t.remote = t.remote_b;
  t.local = t.local_b;
  t.local_add_key = absl::StrCat(t.local.metadata().namespace_(), "/bench-local-add");
  return t;
}

// The (backend, shape) being measured: building one costs seconds (the 10k-pod cluster, the
// first install, veths), so consecutive benchmarks of the same pair share it.
struct Current {
  std::string key;
  std::unique_ptr<AgentNode> node;
  Templates templates;
};
Current& current() {
  static auto* c = new Current();
  return *c;
}

absl::StatusOr<Current*> NodeFor(const std::string& backend, NodeShape shape) {
  Current& c = current();
  const std::string key = absl::StrCat(backend, " ", ShapeName(shape));
  if (c.key == key && c.node != nullptr) return &c;
  c.node.reset();  // deletes the previous namespace first
  c.key.clear();
  absl::StatusOr<Templates> t = PickTemplates(GenerateCluster(OptionsFor(shape)));
  if (!t.ok()) return t.status();
  AgentNodeOptions options;
  options.extra_local_pods = {t->local_add_key};
  absl::StatusOr<std::unique_ptr<AgentNode>> node = AgentNode::Create(backend, shape, options);
  if (!node.ok()) return node.status();
  c.node = *std::move(node);
  c.templates = *std::move(t);
  c.key = key;
  fprintf(stderr, "%s: engine build %.0f ms, first install %.0f ms, %d local pods\n",
          key.c_str(), c.node->build_s() * 1e3, c.node->reconcile_s() * 1e3,
          c.node->local_pods());
  return &c;
}

// What --probe reads at each point of an event.
struct ProbePoint {
  double cpu = 0;  // this thread's CPU seconds
  int64_t minflt = 0, majflt = 0, csw = 0;
};

ProbePoint ReadProbePoint() {
  ProbePoint p;
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  p.cpu = static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  rusage u;
  getrusage(RUSAGE_THREAD, &u);
  p.minflt = u.ru_minflt;
  p.majflt = u.ru_majflt;
  p.csw = u.ru_nvcsw + u.ru_nivcsw;
  return p;
}

// Steal seconds of all CPUs so far (/proc/stat "cpu" line, 8th field, USER_HZ ticks).
double StealSeconds() {
  FILE* f = fopen("/proc/stat", "r");
  if (f == nullptr) return 0;
  unsigned long long v[8] = {};
  const int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                       &v[3], &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  return n == 8 ? static_cast<double>(v[7]) / static_cast<double>(sysconf(_SC_CLK_TCK)) : 0;
}

// KiB of free guest memory reported to the host so far (virtio-balloon free page reporting):
// the host drops those pages, so the guest's next use of them faults on the host, unseen here.
int64_t ReportedKib() {
  FILE* f = fopen("/sys/module/page_reporting/parameters/reported_kib", "r");
  if (f == nullptr) return 0;
  long long v = 0;
  if (fscanf(f, "%lld", &v) != 1) v = 0;
  fclose(f);
  return v;
}

absl::StatusOr<Sample> Measure(AgentNode& node, const std::string& event,
                               int64_t gap_start_reported_kib = -1) {
  agent::Agent& agent = node.agent();
  const backends::nft::DeltaStats nft_before = backends::nft::DeltaStatsOf(node.backend().inner());
  const double steal0 = probe ? StealSeconds() : 0;
  const int64_t reported0 = probe ? ReportedKib() : 0;
  const ProbePoint p0 = probe ? ReadProbePoint() : ProbePoint{};
  const absl::Time start = absl::Now();
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t deltas_before = agent.delta_syncs();
  const int64_t policy_deltas_before = agent.policy_delta_syncs();
  agent.HandleEvent(event, start);
  const auto t1 = std::chrono::steady_clock::now();
  const ProbePoint p1 = probe ? ReadProbePoint() : ProbePoint{};
  if (agent.pending_events() != 1) {
    return absl::InternalError(absl::StrCat("event not applied: ", event.substr(0, 200)));
  }
  absl::Status s = agent.Sync();
  const auto t2 = std::chrono::steady_clock::now();
  if (!s.ok()) return s;
  Sample sample;
  if (probe) {
    const ProbePoint p2 = ReadProbePoint();
    sample.engine_cpu = p1.cpu - p0.cpu;
    sample.sync_cpu = p2.cpu - p1.cpu;
    sample.lower_cpu = node.backend().call_start_cpu_s() - p1.cpu;
    sample.engine_minflt = p1.minflt - p0.minflt;
    sample.sync_minflt = p2.minflt - p1.minflt;
    sample.majflt = p2.majflt - p0.majflt;
    sample.csw = p2.csw - p0.csw;
    sample.steal = StealSeconds() - steal0;
    sample.reported_kib = ReportedKib() - reported0;
    if (gap_start_reported_kib >= 0) sample.gap_reported_kib = reported0 - gap_start_reported_kib;
  }
  sample.engine = std::chrono::duration<double>(t1 - t0).count();
  sample.total = std::chrono::duration<double>(t2 - t0).count();
  sample.kernel = absl::ToDoubleSeconds(node.backend().last_done() - start);
  sample.backend = node.backend().last_call_s();
  sample.capacity = node.backend().last_capacity_s();
  sample.lower = sample.kernel - sample.engine - sample.backend;
  sample.update = node.backend().last_was_update();
  sample.delta = agent.delta_syncs() > deltas_before;
  sample.how = !sample.delta ? "lowered whole: " + agent.last_whole_reason()
               : agent.policy_delta_syncs() > policy_deltas_before ? "policy delta"
                                                                   : "";
  if (std::string ipt = backends::IptablesLastUpdate(node.backend().inner()); !ipt.empty()) {
    absl::StrAppend(&sample.how, sample.how.empty() ? "" : "; ", ipt);
  }
  // nft: whether UpdateDelta edited in place (and which planner) or took the full path, why.
  const backends::nft::DeltaStats nft_after = backends::nft::DeltaStatsOf(node.backend().inner());
  if (nft_after.in_place + nft_after.full_path > nft_before.in_place + nft_before.full_path) {
    std::string nft = nft_after.full_path > nft_before.full_path
                          ? "nft full path: " + nft_after.last_fallback
                      : nft_after.move_in_place > nft_before.move_in_place
                          ? (nft_after.move_tables_in_place > nft_before.move_tables_in_place
                                 ? "nft in place: move with a table coming or going"
                                 : "nft in place: move")
                          : "nft in place";
    absl::StrAppend(&sample.how, sample.how.empty() ? "" : "; ", nft);
  }
  return sample;
}

enum class Pair {
  kPodRemote,
  kPodLocal,
  kPodLocalTable,
  kRelabelRemote,
  kRelabelLocal,
  kMoveRemote,
  kMoveLocal,
  kMoveLocalKept,
  kPolicy,
  kSplitPolicy
};
const char* PairName(Pair p) {
  switch (p) {
    case Pair::kPodRemote: return "PodRemote";
    case Pair::kPodLocal: return "PodLocal";
    case Pair::kPodLocalTable: return "PodLocalTable";
    case Pair::kRelabelRemote: return "RelabelRemote";
    case Pair::kRelabelLocal: return "RelabelLocal";
    case Pair::kMoveRemote: return "MoveRemote";
    case Pair::kMoveLocal: return "MoveLocal";
    case Pair::kMoveLocalKept: return "MoveLocalKept";
    case Pair::kPolicy: return "Policy";
    case Pair::kSplitPolicy: return "SplitPolicy";
  }
  return "";
}

// Pod `a` with `b`'s labels only (its own named ports: a peer class of its own).
k8s::Pod Relabelled(const k8s::Pod& a, const k8s::Pod& b) {
  k8s::Pod moved = a;
  *moved.mutable_metadata()->mutable_labels() = b.metadata().labels();
  return moved;
}

// The two events of a pair and the row each is reported under; `setup` (untimed, before the
// pair's iterations) and `teardown` (after them), when the pair needs the cluster changed.
struct EventPair {
  std::string first, second;
  std::string first_name, second_name;
  std::string setup, teardown;
};
EventPair EventsOf(Pair p, const Templates& t) {
  auto relabel = [](const k8s::Pod& a, const k8s::Pod& b) {
    return PodEvent("MODIFIED", Relabelled(a, b));
  };
  // Into b's class exactly: b's labels and b's named ports (a peer class is labels and
  // named ports: with a's ports, a's labels-only relabel above makes a class of its own).
  auto move = [](const k8s::Pod& a, const k8s::Pod& b) {
    k8s::Pod moved = a;
    *moved.mutable_metadata()->mutable_labels() = b.metadata().labels();
    *moved.mutable_spec()->mutable_containers() = b.spec().containers();
    return PodEvent("MODIFIED", moved);
  };
  switch (p) {
    case Pair::kPodRemote: {
      k8s::Pod pod = ClonePod(t.remote, "bench-remote-add", "node-1", 1);
      return {PodEvent("ADDED", pod), PodDeleteEvent(pod.metadata().namespace_(), "bench-remote-add"),
              "pod add (other node)", "pod delete (other node)"};
    }
    case Pair::kPodLocal: {
      k8s::Pod pod = ClonePod(t.local, "bench-local-add", kNode, 2);
      return {PodEvent("ADDED", pod), PodDeleteEvent(pod.metadata().namespace_(), "bench-local-add"),
              "pod add (node-0)", "pod delete (node-0)"};
    }
    case Pair::kPodLocalTable: {
      // A node-0 pod like local_a, whose table the program has (kPodLocal's pod, like
      // local_b, may be the first of its target class on node-0: a new table).
      k8s::Pod pod = ClonePod(t.local_a, "bench-local-add2", kNode, 5);
      return {PodEvent("ADDED", pod),
              PodDeleteEvent(pod.metadata().namespace_(), "bench-local-add2"),
              "pod add (node-0, table there)", "pod delete (node-0, table there)"};
    }
    case Pair::kRelabelRemote:
      return {relabel(t.remote_a, t.remote_b), PodEvent("MODIFIED", t.remote_a),
              "pod relabel (other node)", "pod relabel (other node)"};
    case Pair::kRelabelLocal:
      return {relabel(t.local_a, t.local_b), PodEvent("MODIFIED", t.local_a),
              "pod relabel (node-0)", "pod relabel (node-0)"};
    case Pair::kMoveRemote:
      return {move(t.remote_a, t.remote_b), PodEvent("MODIFIED", t.remote_a),
              "pod into an existing class and back (other node)",
              "pod into an existing class and back (other node)"};
    case Pair::kMoveLocal:
      return {move(t.move_a, t.move_b), PodEvent("MODIFIED", t.move_a),
              "pod into an existing class and back (node-0)",
              "pod into an existing class and back (node-0)"};
    case Pair::kMoveLocalKept: {
      // MoveLocal's move with a copy of move_a on node-0 first (setup; deleted after), so that
      // move_a's table keeps an endpoint: both tables stay (the generator spreads a
      // deployment's replicas over consecutive nodes, so no app has two pods on node-0 and
      // PickMove finds none; MoveLocal's pod is its table's last endpoint there).
      k8s::Pod keep = ClonePod(t.move_a, "bench-move-keep", kNode, 7);
      return {move(t.move_a, t.move_b), PodEvent("MODIFIED", t.move_a),
              "pod into an existing class and back (node-0, both tables stay)",
              "pod into an existing class and back (node-0, both tables stay)",
              PodEvent("ADDED", keep),
              PodDeleteEvent(keep.metadata().namespace_(), "bench-move-keep")};
    }
    case Pair::kPolicy: {
      const std::string& ns = t.local_a.metadata().namespace_();
      const std::string& app = t.local_a.metadata().labels().at("app");
      return {PolicyEvent("ADDED", ns, "bench-policy", app, 7777),
              PolicyDeleteEvent(ns, "bench-policy"), "policy add (node-0 pods)",
              "policy delete (node-0 pods)"};
    }
    case Pair::kSplitPolicy: {
      // local_a labelled canary=true first (no selector tells it from its replicas yet); a
      // policy admitting canary=true pods splits it off their identity (a delta that appends
      // an identity), its delete merges them back (the identity a tombstone).
      const std::string& ns = t.local_a.metadata().namespace_();
      const std::string& app = t.local_a.metadata().labels().at("app");
      k8s::Pod canary = t.local_a;
      (*canary.mutable_metadata()->mutable_labels())["canary"] = "true";
      const std::string policy = absl::StrCat(
          R"({"type":"ADDED","object":{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",)",
          R"("metadata":{"name":"bench-split-policy","namespace":")", ns,
          R"("},"spec":{"podSelector":{"matchLabels":{"app":")", app,
          R"("}},"policyTypes":["Ingress"],"ingress":[{"from":[{"podSelector":{"matchLabels":)",
          R"({"canary":"true"}}}],"ports":[{"protocol":"TCP","port":7777}]}]}}})");
      return {policy, PolicyDeleteEvent(ns, "bench-split-policy"),
              "policy splitting an identity (node-0 pods)", "its delete, merging it back",
              PodEvent("MODIFIED", canary), PodEvent("MODIFIED", t.local_a)};
    }
  }
  return {};
}

// Every sample, by (backend, shape, event row), for the closing table.
std::map<std::tuple<std::string, std::string, std::string>, std::vector<Sample>>& Results() {
  static auto* r = new std::map<std::tuple<std::string, std::string, std::string>,
                                std::vector<Sample>>();
  return *r;
}
std::vector<std::tuple<std::string, std::string, std::string>>& ResultOrder() {
  static auto* r = new std::vector<std::tuple<std::string, std::string, std::string>>();
  return *r;
}
void Record(const std::string& backend, NodeShape shape, const std::string& row, const Sample& s) {
  auto key = std::make_tuple(backend, std::string(ShapeName(shape)), row);
  if (Results().count(key) == 0) ResultOrder().push_back(key);
  Results()[key].push_back(s);
}

double Ms(double s) { return s * 1e3; }

void SetCounters(benchmark::State& state, const std::string& prefix,
                 const std::vector<Sample>& samples) {
  std::vector<double> kernel, engine, lower, backend;
  for (const Sample& s : samples) {
    kernel.push_back(s.kernel);
    engine.push_back(s.engine);
    lower.push_back(s.lower);
    backend.push_back(s.backend);
  }
  state.counters[prefix + "_p50_ms"] = Ms(Quantile(kernel, 0.5));
  state.counters[prefix + "_p99_ms"] = Ms(Quantile(kernel, 0.99));
  state.counters[prefix + "_max_ms"] = Ms(Quantile(kernel, 1));
  state.counters[prefix + "_engine_ms"] = Ms(Quantile(engine, 0.5));
  state.counters[prefix + "_lower_ms"] = Ms(Quantile(lower, 0.5));
  state.counters[prefix + "_backend_ms"] = Ms(Quantile(backend, 0.5));
  if (!probe) return;
  std::vector<double> engine_cpu, lower_cpu, sync_wall, sync_cpu;
  double n = static_cast<double>(std::max<size_t>(1, samples.size()));
  double engine_minflt = 0, sync_minflt = 0, majflt = 0, csw = 0, steal = 0, reported = 0,
         gap_reported = 0;
  for (const Sample& s : samples) {
    engine_cpu.push_back(s.engine_cpu);
    lower_cpu.push_back(s.lower_cpu);
    sync_wall.push_back(s.kernel - s.engine);
    sync_cpu.push_back(s.sync_cpu);
    engine_minflt += s.engine_minflt / n;
    sync_minflt += s.sync_minflt / n;
    majflt += s.majflt / n;
    csw += s.csw / n;
    steal += s.steal / n;
    reported += s.reported_kib / n;
    gap_reported += s.gap_reported_kib / n;
  }
  // p50s, then means per event.
  state.counters[prefix + "_engine_cpu_ms"] = Ms(Quantile(engine_cpu, 0.5));
  state.counters[prefix + "_lower_cpu_ms"] = Ms(Quantile(lower_cpu, 0.5));
  state.counters[prefix + "_sync_wall_ms"] = Ms(Quantile(sync_wall, 0.5));
  state.counters[prefix + "_sync_cpu_ms"] = Ms(Quantile(sync_cpu, 0.5));
  state.counters[prefix + "_engine_minflt"] = engine_minflt;
  state.counters[prefix + "_sync_minflt"] = sync_minflt;
  state.counters[prefix + "_majflt"] = majflt;
  state.counters[prefix + "_csw"] = csw;
  state.counters[prefix + "_steal_ms"] = Ms(steal);
  state.counters[prefix + "_reported_kib"] = reported;
  state.counters[prefix + "_gap_reported_kib"] = gap_reported;
}

void BM_Event(benchmark::State& state, std::string backend, NodeShape shape, Pair pair) {
  if (geteuid() != 0) {
    state.SkipWithError("needs root (network namespaces, kernel programs)");
    return;
  }
  absl::StatusOr<Current*> c = NodeFor(backend, shape);
  if (!c.ok()) {
    state.SkipWithError(std::string(c.status().message()).substr(0, 300).c_str());
    return;
  }
  AgentNode& node = *(*c)->node;
  const EventPair events = EventsOf(pair, (*c)->templates);
  std::vector<Sample> first, second;
  int64_t gap_start_reported_kib = -1;
  auto pause = [&] {
    if (probe) gap_start_reported_kib = ReportedKib();
    if (gap_ms <= 0) return;
    if (!gap_spin) {
      absl::SleepFor(absl::Milliseconds(gap_ms));
      return;
    }
    const absl::Time until = absl::Now() + absl::Milliseconds(gap_ms);
    while (absl::Now() < until) {
    }
  };
  if (!events.setup.empty()) {
    absl::StatusOr<Sample> s = Measure(node, events.setup);
    if (!s.ok()) {
      state.SkipWithError(std::string(s.status().message()).substr(0, 300).c_str());
      current().node.reset();
      current().key.clear();
      return;
    }
  }
  for (auto _ : state) {
    pause();
    absl::StatusOr<Sample> a = Measure(node, events.first, gap_start_reported_kib);
    pause();
    absl::StatusOr<Sample> b =
        a.ok() ? Measure(node, events.second, gap_start_reported_kib) : a;
    if (!a.ok() || !b.ok()) {
      const absl::Status& s = a.ok() ? b.status() : a.status();
      state.SkipWithError(std::string(s.message()).substr(0, 300).c_str());
      // The state may be half changed: build the node again for the next benchmark.
      current().node.reset();
      current().key.clear();
      return;
    }
    state.SetIterationTime(a->kernel + b->kernel);
    first.push_back(*a);
    second.push_back(*b);
    Record(backend, shape, events.first_name, *a);
    Record(backend, shape, events.second_name, *b);
    if (samples) {
      for (const auto& [name, x] : {std::pair<const std::string&, const Sample&>{
                                        events.first_name, *a},
                                    {events.second_name, *b}}) {
        std::fprintf(stderr,
                     "sample %s %s %s kernel_ms=%.3f engine_ms=%.3f lower_ms=%.3f "
                     "backend_ms=%.3f engine_cpu_ms=%.3f lower_cpu_ms=%.3f sync_cpu_ms=%.3f "
                     "capacity_ms=%.3f csw=%lld minflt=%lld steal_ms=%.3f\n",
                     backend.c_str(), ShapeName(shape), name.c_str(), x.kernel * 1e3, x.engine * 1e3,
                     x.lower * 1e3, x.backend * 1e3, x.engine_cpu * 1e3, x.lower_cpu * 1e3,
                     x.sync_cpu * 1e3, x.capacity * 1e3, static_cast<long long>(x.csw),
                     static_cast<long long>(x.engine_minflt + x.sync_minflt), x.steal * 1e3);
      }
    }
  }
  if (!events.teardown.empty() && !Measure(node, events.teardown).ok()) {
    current().node.reset();  // the next benchmark builds the node again
    current().key.clear();
  }
  SetCounters(state, "first", first);
  SetCounters(state, "second", second);
  int updates = 0;
  for (const auto* v : {&first, &second}) {
    for (const Sample& s : *v) updates += s.update ? 1 : 0;
  }
  state.counters["update_fraction"] =
      static_cast<double>(updates) / static_cast<double>(std::max<size_t>(1, 2 * first.size()));
  state.SetLabel(absl::StrCat(events.first_name, " / ", events.second_name));
}

// LowerToIr alone on node-0's snapshot: what every sync pays before the backend.
void BM_LowerToIr(benchmark::State& state, NodeShape shape) {
  absl::StatusOr<Cluster> cluster = Cluster::Create(GenerateCluster(OptionsFor(shape)));
  EngineOptions options;
  options.node_name = kNode;
  absl::StatusOr<std::shared_ptr<const Engine>> engine =
      cluster.ok() ? Engine::Build(*cluster, options)
                   : absl::StatusOr<std::shared_ptr<const Engine>>(cluster.status());
  if (!engine.ok()) {
    state.SkipWithError(std::string(engine.status().message()).c_str());
    return;
  }
  std::vector<double> times;
  int endpoints = 0, identities = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<ir::CompiledPolicy> ir = LowerToIr(**engine);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!ir.ok()) {
      state.SkipWithError(std::string(ir.status().message()).c_str());
      return;
    }
    endpoints = ir->endpoints_size();
    identities = ir->identities_size();
    benchmark::DoNotOptimize(ir);
  }
  state.counters["p50_ms"] = Ms(Quantile(times, 0.5));
  state.counters["p99_ms"] = Ms(Quantile(times, 0.99));
  state.counters["endpoints"] = endpoints;
  state.counters["identities"] = identities;
}

// Node-0's engine of a generated cluster, the event templates, and its whole lowering: where
// the no-root lowering benchmarks start.
struct Node0 {
  Templates templates;
  std::shared_ptr<const Engine> engine;
  ir::CompiledPolicy installed;
};
absl::StatusOr<Node0> BuildNode0(NodeShape shape) {
  ClusterObjects objects = GenerateCluster(OptionsFor(shape));
  absl::StatusOr<Templates> t = PickTemplates(objects);
  if (!t.ok()) return t.status();
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  if (!cluster.ok()) return cluster.status();
  EngineOptions options;
  options.node_name = kNode;
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, options);
  if (!engine.ok()) return engine.status();
  absl::StatusOr<ir::CompiledPolicy> installed = LowerToIr(**engine);
  if (!installed.ok()) return installed.status();
  return Node0{*std::move(t), *std::move(engine), *std::move(installed)};
}
// The same, or nullopt with the benchmark skipped and why.
std::optional<Node0> Node0For(benchmark::State& state, NodeShape shape) {
  absl::StatusOr<Node0> node = BuildNode0(shape);
  if (node.ok()) return *std::move(node);
  state.SkipWithError(std::string(node.status().message()).c_str());
  return std::nullopt;
}

// The lowering a pod event costs: PodDeltaLowering::Lower (np/lower_delta.h) against
// LowerToIr of the same next snapshot, on node-0's snapshot, for a pod added on another node
// and on node-0 and deleted again (each delta applied and committed, as the agent does).
// No root. `expressed` is the fraction of events that came out as deltas.
void BM_LowerDelta(benchmark::State& state, NodeShape shape) {
  std::optional<Node0> start = Node0For(state, shape);
  if (!start) return;
  const Templates& t = start->templates;
  ir::CompiledPolicy& installed = start->installed;
  // The index a whole lowering is followed by (off the latency path, on the agent's thread).
  const auto i0 = std::chrono::steady_clock::now();
  PodDeltaLowering index = PodDeltaLowering::Index(start->engine, installed);
  state.counters["index_ms"] =
      Ms(std::chrono::duration<double>(std::chrono::steady_clock::now() - i0).count());
  std::shared_ptr<const Engine> current = start->engine;
  // As the agent rows': another node's pod, and a node-0 pod whose table is in the program
  // (the "pod add (node-0)" row's pod has a table of its own: a whole lowering).
  const k8s::Pod pods[2] = {ClonePod(t.remote, "bench-remote-add", "node-1", 1),
                            ClonePod(t.local_a, "bench-local-add2", kNode, 5)};
  std::vector<double> delta_s, whole_s;
  int events = 0, expressed = 0;
  for (auto _ : state) {
    for (const k8s::Pod& pod : pods) {
      for (bool add : {true, false}) {
        Change change{add ? Change::Op::kUpsert : Change::Op::kDelete, pod};
        absl::StatusOr<std::shared_ptr<const Engine>> next = current->Apply({change});
        if (!next.ok()) {
          state.SkipWithError(std::string(next.status().message()).c_str());
          return;
        }
        const auto t0 = std::chrono::steady_clock::now();
        std::optional<PodDelta> delta = index.Lower(*next, installed, {PodKey(pod)});
        const auto t1 = std::chrono::steady_clock::now();
        absl::StatusOr<ir::CompiledPolicy> whole = LowerToIr(**next);
        const auto t2 = std::chrono::steady_clock::now();
        if (!whole.ok()) {
          state.SkipWithError(std::string(whole.status().message()).c_str());
          return;
        }
        ++events;
        if (delta.has_value()) {
          ++expressed;
          delta_s.push_back(std::chrono::duration<double>(t1 - t0).count());
          if (!backends::ApplyDelta(delta->delta, &installed).ok()) {
            state.SkipWithError("ApplyDelta refused the delta");
            return;
          }
          index.Commit(*delta);
        } else {
          installed = *std::move(whole);
          index = PodDeltaLowering::Index(*next, installed);
        }
        whole_s.push_back(std::chrono::duration<double>(t2 - t1).count());
        current = *next;
      }
    }
  }
  state.counters["delta_p50_ms"] = Ms(Quantile(delta_s, 0.5));
  state.counters["delta_p99_ms"] = Ms(Quantile(delta_s, 0.99));
  state.counters["whole_p50_ms"] = Ms(Quantile(whole_s, 0.5));
  state.counters["expressed"] = static_cast<double>(expressed) / std::max(1, events);
}

// The bench's policy pair as the engine's change (the same object PolicyEvent writes).
k8s::NetworkPolicy BenchPolicy(const Templates& t) {
  k8s::NetworkPolicy p;
  p.mutable_metadata()->set_namespace_(t.local_a.metadata().namespace_());
  p.mutable_metadata()->set_name("bench-policy");
  auto* spec = p.mutable_spec();
  (*spec->mutable_podselector()->mutable_matchlabels())["app"] =
      t.local_a.metadata().labels().at("app");
  spec->add_policytypes("Ingress");
  auto* rule = spec->add_ingress();
  (*rule->add_from()->mutable_namespaceselector()->mutable_matchlabels())["team"] = "monitoring";
  auto* port = rule->add_ports();
  port->set_protocol("TCP");
  port->mutable_port()->set_intval(7777);
  return p;
}

// The split pair: local_a labelled canary=true beforehand (one replica of its deployment),
// a policy of its namespace selecting its app, admitting canary=true pods: the peer splits
// local_a's class from its replicas' (a new identity), deleting it merges them back.
k8s::NetworkPolicy SplitPolicy(const Templates& t) {
  k8s::NetworkPolicy p = BenchPolicy(t);
  p.mutable_metadata()->set_name("bench-split-policy");
  k8s::NetworkPolicyPeer* peer = p.mutable_spec()->mutable_ingress(0)->mutable_from(0);
  peer->Clear();
  (*peer->mutable_podselector()->mutable_matchlabels())["canary"] = "true";
  return p;
}

// The lowering a policy event costs on the agent's delta path: PodDeltaLowering::
// LowerPolicyChange (np/lower_delta.h) against the whole path it replaces, LowerToIr then
// AlignNumbering onto the installed program, for the bench's policy pair (added to node-0's
// pods, deleted), or with `split` the split pair (SplitPolicy: an identity appended, then
// retired). Each delta applied and committed, as the agent does. No root.
// `expressed`: the fraction of events that came out as deltas; `tables`/`peer_sets`: items
// per delta.
void BM_PolicyDelta(benchmark::State& state, NodeShape shape, bool split) {
  std::optional<Node0> start = Node0For(state, shape);
  if (!start) return;
  ir::CompiledPolicy& installed = start->installed;
  const k8s::NetworkPolicy policy =
      split ? SplitPolicy(start->templates) : BenchPolicy(start->templates);
  std::shared_ptr<const Engine> current = start->engine;
  if (split) {
    k8s::Pod canary = start->templates.local_a;
    (*canary.mutable_metadata()->mutable_labels())["canary"] = "true";
    absl::StatusOr<std::shared_ptr<const Engine>> labelled =
        current->Apply({Change{Change::Op::kUpsert, canary}});
    absl::StatusOr<ir::CompiledPolicy> lowered =
        labelled.ok() ? LowerToIr(**labelled) : absl::StatusOr<ir::CompiledPolicy>(labelled.status());
    if (!lowered.ok()) {
      state.SkipWithError(std::string(lowered.status().message()).c_str());
      return;
    }
    current = *labelled;
    installed = *std::move(lowered);
  }
  PodDeltaLowering index = PodDeltaLowering::Index(current, installed);
  std::vector<double> delta_s, whole_s, tables, peer_sets, identities;
  int events = 0, expressed = 0;
  std::string why;
  for (auto _ : state) {
    for (Change::Op op : {Change::Op::kUpsert, Change::Op::kDelete}) {
      absl::StatusOr<std::shared_ptr<const Engine>> next = current->Apply({Change{op, policy}});
      if (!next.ok()) {
        state.SkipWithError(std::string(next.status().message()).c_str());
        return;
      }
      const auto t0 = std::chrono::steady_clock::now();
      std::optional<PodDelta> delta = index.LowerPolicyChange(*next, installed, &why);
      const auto t1 = std::chrono::steady_clock::now();
      absl::StatusOr<ir::CompiledPolicy> whole = LowerToIr(**next);
      if (!whole.ok()) {
        state.SkipWithError(std::string(whole.status().message()).c_str());
        return;
      }
      absl::StatusOr<ir::CompiledPolicy> aligned = AlignNumbering(installed, *std::move(whole));
      const auto t2 = std::chrono::steady_clock::now();
      if (!aligned.ok()) {
        state.SkipWithError(std::string(aligned.status().message()).c_str());
        return;
      }
      ++events;
      whole_s.push_back(std::chrono::duration<double>(t2 - t1).count());
      if (delta.has_value()) {
        ++expressed;
        delta_s.push_back(std::chrono::duration<double>(t1 - t0).count());
        tables.push_back(delta->delta.tables_size());
        peer_sets.push_back(delta->delta.peer_sets_size());
        identities.push_back(delta->delta.identities_size() + delta->delta.identity_pods_size());
        if (!backends::ApplyDelta(delta->delta, &installed).ok()) {
          state.SkipWithError("ApplyDelta refused the delta");
          return;
        }
        index.Commit(*delta);
      } else {
        installed = *std::move(aligned);
        index = PodDeltaLowering::Index(*next, installed);
      }
      current = *next;
    }
  }
  if (expressed < events) state.SetLabel("whole: " + why);
  state.counters["delta_p50_ms"] = Ms(Quantile(delta_s, 0.5));
  state.counters["delta_p99_ms"] = Ms(Quantile(delta_s, 0.99));
  state.counters["whole_p50_ms"] = Ms(Quantile(whole_s, 0.5));
  state.counters["whole_p99_ms"] = Ms(Quantile(whole_s, 0.99));
  state.counters["expressed"] = static_cast<double>(expressed) / std::max(1, events);
  state.counters["tables"] = Quantile(tables, 1);
  state.counters["peer_sets"] = Quantile(peer_sets, 1);
  state.counters["identities"] = Quantile(identities, 1);
}

// Identities, peer sets and tables of `next` whose serialized content differs from
// `installed`'s under the same id, or that `installed` lacks.
double ChangedById(const ir::CompiledPolicy& installed, const ir::CompiledPolicy& next) {
  int changed = 0;
  auto count = [&](const auto& a, const auto& b) {
    for (int i = 0; i < b.size(); ++i) {
      if (i >= a.size() || a[i].SerializeAsString() != b[i].SerializeAsString()) ++changed;
    }
  };
  count(installed.identities(), next.identities());
  count(installed.peer_sets(), next.peer_sets());
  count(installed.tables(), next.tables());
  return changed;
}

// What a whole sync pays before the backend since the agent aligns (np/lower_align.h):
// LowerToIr of the next snapshot, then AlignNumbering onto the installed (aligned) program,
// for the events the agent lowers whole: the policy pair, and the labels-only relabels (a
// class of its own) on another node and on node-0. No root. `changed`: items per alignment
// that kept an installed id with other content, or were added (identities, peer sets,
// tables together): what an in-place backend update would touch; `dense_changed` the same
// count had the lowering been handed over as numbered.
void BM_AlignNumbering(benchmark::State& state, NodeShape shape) {
  std::optional<Node0> start = Node0For(state, shape);
  if (!start) return;
  const Templates& t = start->templates;
  ir::CompiledPolicy& installed = start->installed;
  const k8s::NetworkPolicy policy = BenchPolicy(t);
  const std::vector<Change> changes = {
      {Change::Op::kUpsert, policy},
      {Change::Op::kDelete, policy},
      {Change::Op::kUpsert, Relabelled(t.remote_a, t.remote_b)},
      {Change::Op::kUpsert, t.remote_a},
      {Change::Op::kUpsert, Relabelled(t.local_a, t.local_b)},
      {Change::Op::kUpsert, t.local_a}};
  std::shared_ptr<const Engine> current = start->engine;
  std::vector<double> lower_s, align_s, changed, dense_changed;
  int compacted = 0;
  for (auto _ : state) {
    for (const Change& change : changes) {
      absl::StatusOr<std::shared_ptr<const Engine>> next = current->Apply({change});
      if (!next.ok()) {
        state.SkipWithError(std::string(next.status().message()).c_str());
        return;
      }
      const auto t0 = std::chrono::steady_clock::now();
      absl::StatusOr<ir::CompiledPolicy> whole = LowerToIr(**next);
      const auto t1 = std::chrono::steady_clock::now();
      if (!whole.ok()) {
        state.SkipWithError(std::string(whole.status().message()).c_str());
        return;
      }
      // Without alignment: the items whose content under an id differs from the installed
      // program's (or that are new), as a by-id update would see them (not timed).
      dense_changed.push_back(ChangedById(installed, *whole));
      AlignStats stats;
      absl::StatusOr<ir::CompiledPolicy> aligned =
          AlignNumbering(installed, *std::move(whole), &stats);
      const auto t2 = std::chrono::steady_clock::now();
      if (!aligned.ok()) {
        state.SkipWithError(std::string(aligned.status().message()).c_str());
        return;
      }
      lower_s.push_back(std::chrono::duration<double>(t1 - t0).count());
      align_s.push_back(std::chrono::duration<double>(t2 - t1).count());
      compacted += stats.compacted ? 1 : 0;
      changed.push_back(stats.identities.changed + stats.identities.added +
                        stats.peer_sets.changed + stats.peer_sets.added + stats.tables.changed +
                        stats.tables.added);
      installed = *std::move(aligned);
      current = *next;
    }
  }
  state.counters["lower_p50_ms"] = Ms(Quantile(lower_s, 0.5));
  state.counters["align_p50_ms"] = Ms(Quantile(align_s, 0.5));
  state.counters["align_p99_ms"] = Ms(Quantile(align_s, 0.99));
  state.counters["changed_p50"] = Quantile(changed, 0.5);
  state.counters["changed_max"] = Quantile(changed, 1);
  state.counters["dense_changed_p50"] = Quantile(dense_changed, 0.5);
  state.counters["dense_changed_max"] = Quantile(dense_changed, 1);
  state.counters["compacted"] = compacted;
  state.counters["identities"] = installed.identities_size();
  state.counters["peer_sets"] = installed.peer_sets_size();
  state.counters["tables"] = installed.tables_size();
}

void PrintTable() {
  if (Results().empty()) return;
  printf("\n| backend | node (pods/cluster) | event | n | event->kernel p50 ms | p99 ms | max ms |"
         " engine p50 ms | lower p50 ms | backend p50 ms | capacity p50 ms | via Update |"
         " via delta |\n");
  printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& key : ResultOrder()) {
    const std::vector<Sample>& samples = Results()[key];
    std::vector<double> kernel, engine, lower, backend, capacity;
    int updates = 0, deltas = 0;
    for (const Sample& s : samples) {
      deltas += s.delta ? 1 : 0;
      kernel.push_back(s.kernel);
      engine.push_back(s.engine);
      lower.push_back(s.lower);
      backend.push_back(s.backend);
      capacity.push_back(s.capacity);
      updates += s.update ? 1 : 0;
    }
    printf("| %s | %s | %s | %zu | %.2f | %.2f | %.2f | %.3f | %.2f | %.2f | %.2f | %d/%zu |"
           " %d/%zu |\n",
           std::get<0>(key).c_str(), std::get<1>(key).c_str(), std::get<2>(key).c_str(),
           samples.size(), Ms(Quantile(kernel, 0.5)), Ms(Quantile(kernel, 0.99)),
           Ms(Quantile(kernel, 1)), Ms(Quantile(engine, 0.5)), Ms(Quantile(lower, 0.5)),
           Ms(Quantile(backend, 0.5)), Ms(Quantile(capacity, 0.5)), updates, samples.size(),
           deltas, samples.size());
  }
  // Why the backend took the path it took (iptables reports it: "in place ...", "full: why").
  bool header = false;
  for (const auto& key : ResultOrder()) {
    std::map<std::string, int> hows;
    for (const Sample& s : Results()[key]) {
      // Grouped by path, without the per-event step times ("; ms: ...", "; waited ... for
      // the last cleanup"), which made every event a row of its own; --samples prints them.
      std::string how = s.how;
      for (const char* timing : {"; ms: ", "; waited "}) {
        if (size_t at = how.find(timing); at != std::string::npos) how.resize(at);
      }
      if (!how.empty()) hows[how.substr(0, 200)]++;
    }
    for (const auto& [how, n] : hows) {
      if (!header) printf("\n| backend | node | event | n | how the backend updated |\n|---|---|---|---|---|\n");
      header = true;
      printf("| %s | %s | %s | %d | %s |\n", std::get<0>(key).c_str(), std::get<1>(key).c_str(),
             std::get<2>(key).c_str(), n, how.c_str());
    }
  }
  fflush(stdout);
}

// Our own flags, taken out of argv before Google Benchmark reads it.
void ParseOwnFlags(int* argc, char** argv) {
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    int n;
    if (absl::StartsWith(argv[i], "--iterations_small=") &&
        absl::SimpleAtoi(argv[i] + strlen("--iterations_small="), &n) && n > 0) {
      iterations_small = n;
    } else if (absl::StartsWith(argv[i], "--iterations_large=") &&
               absl::SimpleAtoi(argv[i] + strlen("--iterations_large="), &n) && n > 0) {
      iterations_large = n;
    } else if (absl::StartsWith(argv[i], "--gap_ms=") &&
               absl::SimpleAtoi(argv[i] + strlen("--gap_ms="), &n) && n >= 0) {
      gap_ms = n;
    } else if (strcmp(argv[i], "--gap_spin") == 0) {
      gap_spin = true;
    } else if (strcmp(argv[i], "--samples") == 0) {
      samples = true;
    } else if (strcmp(argv[i], "--probe") == 0) {
      probe = true;
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
}

}  // namespace
}  // namespace np::bench

int main(int argc, char** argv) {
  using namespace np::bench;
  ParseOwnFlags(&argc, argv);
  for (NodeShape shape : kShapes) {
    benchmark::RegisterBenchmark(absl::StrCat("BM_LowerToIr/", ShapeName(shape)).c_str(),
                                 BM_LowerToIr, shape)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(shape == NodeShape::kSmall ? 50 : 20);
  }
  for (NodeShape shape : kShapes) {
    benchmark::RegisterBenchmark(absl::StrCat("BM_LowerDelta/", ShapeName(shape)).c_str(),
                                 BM_LowerDelta, shape)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(shape == NodeShape::kSmall ? 50 : 20);
  }
  for (bool split : {false, true}) {
    for (NodeShape shape : kShapes) {
      benchmark::RegisterBenchmark(
          absl::StrCat("BM_PolicyDelta/", ShapeName(shape), split ? "/Split" : "").c_str(),
          BM_PolicyDelta, shape, split)
          ->Unit(benchmark::kMillisecond)
          ->Iterations(shape == NodeShape::kSmall ? 30 : 10);
    }
  }
  for (NodeShape shape : kShapes) {
    benchmark::RegisterBenchmark(absl::StrCat("BM_AlignNumbering/", ShapeName(shape)).c_str(),
                                 BM_AlignNumbering, shape)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(shape == NodeShape::kSmall ? 30 : 10);
  }
  // Grouped by (backend, shape) so that consecutive benchmarks share the node.
  for (const char* backend : kBackends) {
    for (NodeShape shape : kShapes) {
      for (Pair pair : {Pair::kPodRemote, Pair::kPodLocal, Pair::kPodLocalTable,
                        Pair::kRelabelRemote, Pair::kRelabelLocal, Pair::kMoveRemote,
                        Pair::kMoveLocal, Pair::kMoveLocalKept, Pair::kPolicy,
                        Pair::kSplitPolicy}) {
        benchmark::RegisterBenchmark(
            absl::StrCat("BM_Agent/", backend, "/", ShapeName(shape), "/", PairName(pair)).c_str(),
            BM_Event, std::string(backend), shape, pair)
            ->Unit(benchmark::kMillisecond)
            ->UseManualTime()
            ->Iterations(shape == NodeShape::kSmall ? iterations_small : iterations_large);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  current().node.reset();  // removes the last namespace
  PrintTable();
  benchmark::Shutdown();
  return 0;
}
