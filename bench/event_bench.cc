// The engine's part of a pod watch event (issue 13), as `netpol agent` does it: the event's
// text read into a Change (np::agent::ParseWatchEvent → np::ParseChangeOfKind → the YAML/JSON
// tree, np/internal/yaml_tree.h) and LiveEngine::Apply of that change, apart and together, on
// node-0's engine of the synthetic 1k- and 10k-pod clusters (bench/cluster_generator.h).
//
// The event is what `kubectl get pods -A --watch --output-watch-events -o json` prints for a
// running pod: indented JSON of about 6 KB (managedFields, annotations, ownerReferences, containers
// with resources and mounts, tolerations, conditions and container statuses), of
// which the engine reads namespace, name, labels, nodeName, container ports and podIPs.
//
//   BM_EventSplit/<pods>       the event's lines through an EventSplitter (how `netpol agent`
//                              reads kubectl's output, before ParseWatchEvent)
//   BM_EventParse/<pods>       ParseWatchEvent of an ADDED event (parse + decode + validate
//                              the envelope; no engine)
//   BM_EventApply/<pods>       LiveEngine::Apply of the parsed change: a new replica of an
//                              existing deployment added, then deleted (each iteration does
//                              both, so the state stays the same)
//   BM_EventParseApply/<pods>  both, from the texts (ADDED then DELETED, as the agent gets them)
//   BM_EventModifiedApply/<pods>  a MODIFIED event that changes nothing the engine reads (a
//                              status heartbeat: resourceVersion and a condition's time), parse
//                              and Apply (which keeps the snapshot: Engine::Apply recognises it)
//
//   BM_LowerPodEvent/<shape>/<kind>  the lowering part of the agent's pod rows
//                              (bench/agent_latency_bench.cc): PodDeltaLowering::Lower of the
//                              event and of its reverse on node-0's program of the agent
//                              shapes (bench/agent_workload.h), each delta applied and
//                              committed untimed; `kind` RelabelRemote / RelabelLocal (labels
//                              of another app of the namespace: a class and identity of its
//                              own), MoveRemote (labels and containers: an existing class),
//                              LocalTable (a replica added on node-0, its table there).
//                              p50/p99 of Lower alone as counters, `expressed` the fraction
//                              of events that came out as deltas (1: none lowered whole);
//                              /cold: 8 MiB written before each Lower (the caches an idle gap
//                              and the backend leave).
//
//   BM_PolicyEvent/<shape>[/Split]  the agent's policy rows: Engine::Apply of a policy
//                              selecting a node-0 app (added, deleted) and LowerPolicyChange,
//                              p50/p99 of each; /Split: its peer splits a pod's identity.
//
//   bazel build //bench:event_bench
//   bazel-bin/bench/event_bench [--benchmark_filter=...]
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "bench/agent_workload.h"
#include "bench/cluster_generator.h"
#include "benchmark/benchmark.h"
#include "np/agent/watch_event.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/backends/util.h"
#include "np/lower.h"
#include "np/lower_delta.h"

namespace np::bench {
namespace {

[[noreturn]] void Fail(const std::string& what) {
  fprintf(stderr, "event_bench: %s\n", what.c_str());
  std::exit(1);
}

// A running pod as the API server returns it (kubectl 1.28, containerd), indented as kubectl
// prints it. $-placeholders are filled from the generated pod.
constexpr char kPodTemplate[] = R"({
    "type": "$TYPE",
    "object": {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-11-30T08:12:44Z",
                "prometheus.io/port": "9090",
                "prometheus.io/scrape": "true"
            },
            "creationTimestamp": "2026-12-01T09:41:02Z",
            "generateName": "$APP-7d9c5b8f6d-",
            "labels": {
$LABELS
            },
            "managedFields": [
                {
                    "apiVersion": "v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:annotations": {".": {}, "f:kubectl.kubernetes.io/restartedAt": {}, "f:prometheus.io/port": {}, "f:prometheus.io/scrape": {}},
                            "f:generateName": {},
                            "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                            "f:ownerReferences": {".": {}, "k:{\"uid\":\"5b0c2a51-1f7e-4d1c-9a57-3e2f0d1b6c44\"}": {}}
                        },
                        "f:spec": {
                            "f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {}, "f:resources": {}}},
                            "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {},
                            "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}
                        }
                    },
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "time": "2026-12-01T09:41:02Z"
                }
            ],
            "name": "$NAME",
            "namespace": "$NAMESPACE",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "blockOwnerDeletion": true,
                    "controller": true,
                    "kind": "ReplicaSet",
                    "name": "$APP-7d9c5b8f6d",
                    "uid": "5b0c2a51-1f7e-4d1c-9a57-3e2f0d1b6c44"
                }
            ],
            "resourceVersion": "$RV",
            "uid": "8f14e45f-ceea-467a-9af0-2c1c3b1f9a7e"
        },
        "spec": {
            "containers": [
$CONTAINERS
            ],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": true,
            "nodeName": "$NODE",
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "serviceAccount": "default",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}
            ]
        },
        "status": {
            "conditions": [
                {"lastProbeTime": null, "lastTransitionTime": "2026-12-01T09:41:02Z", "status": "True", "type": "Initialized"},
                {"lastProbeTime": null, "lastTransitionTime": "$READY_TIME", "status": "True", "type": "Ready"},
                {"lastProbeTime": null, "lastTransitionTime": "2026-12-01T09:41:05Z", "status": "True", "type": "ContainersReady"},
                {"lastProbeTime": null, "lastTransitionTime": "2026-12-01T09:41:02Z", "status": "True", "type": "PodScheduled"}
            ],
            "containerStatuses": [
                {
                    "containerID": "containerd://4b1f0c6e2d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c",
                    "image": "registry.example.com/shop/$APP:1.24.3",
                    "imageID": "registry.example.com/shop/$APP@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "lastState": {},
                    "name": "app",
                    "ready": true,
                    "restartCount": 0,
                    "started": true,
                    "state": {"running": {"startedAt": "2026-12-01T09:41:04Z"}}
                }
            ],
            "hostIP": "192.168.10.7",
            "phase": "Running",
            "podIP": "$IP",
            "podIPs": [
$IPS
            ],
            "qosClass": "Burstable",
            "startTime": "2026-12-01T09:41:02Z"
        }
    }
}
)";

// One container of the pod, with the generated pod's ports.
std::string ContainerJson(const k8s::Container& c, const std::string& app) {
  std::vector<std::string> ports;
  for (const k8s::ContainerPort& p : c.ports()) {
    ports.push_back(absl::StrCat("                        {\"containerPort\": ", p.containerport(),
                                 ", \"name\": ", Quote(p.name()),
                                 ", \"protocol\": ", Quote(p.protocol()), "}"));
  }
  return absl::StrCat(R"(                {
                    "image": "registry.example.com/shop/)",
                      app, R"(:1.24.3",
                    "imagePullPolicy": "IfNotPresent",
                    "name": )",
                      Quote(c.name()), R"(,
                    "ports": [
)",
                      absl::StrJoin(ports, ",\n"), R"(
                    ],
                    "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "volumeMounts": [{"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": "kube-api-access-x7k2p", "readOnly": true}]
                })");
}

std::string PodEventText(const std::string& type, const k8s::Pod& pod, int resource_version,
                         const std::string& ready_time) {
  std::vector<std::string> labels;
  for (const auto& [k, v] : pod.metadata().labels()) {
    labels.push_back(absl::StrCat("                ", Quote(k), ": ", Quote(v)));
  }
  std::sort(labels.begin(), labels.end());
  std::string app = "app";
  if (auto it = pod.metadata().labels().find("app"); it != pod.metadata().labels().end()) {
    app = it->second;
  }
  std::vector<std::string> containers;
  for (const k8s::Container& c : pod.spec().containers())
    containers.push_back(ContainerJson(c, app));
  std::vector<std::string> ips;
  for (const auto& ip : pod.status().podips()) {
    ips.push_back(absl::StrCat("                {\"ip\": ", Quote(ip.ip()), "}"));
  }
  return absl::StrReplaceAll(kPodTemplate, {{"$TYPE", type},
                                            {"$LABELS", absl::StrJoin(labels, ",\n")},
                                            {"$APP", app},
                                            {"$NAME", pod.metadata().name()},
                                            {"$NAMESPACE", pod.metadata().namespace_()},
                                            {"$RV", absl::StrCat(resource_version)},
                                            {"$CONTAINERS", absl::StrJoin(containers, ",\n")},
                                            {"$NODE", pod.spec().nodename()},
                                            {"$READY_TIME", ready_time},
                                            {"$IP", pod.status().podip()},
                                            {"$IPS", absl::StrJoin(ips, ",\n")}});
}

// Node-0's engine of the generated cluster of `pods` pods, and the events of one pod: a new
// replica (ADDED, DELETED) of a deployment with pods on node-0, and a heartbeat MODIFIED of
// an existing pod of node-0.
struct Fixture {
  std::unique_ptr<LiveEngine> live;
  std::string added, deleted, modified_a, modified_b;
};

Fixture& Get(int pods) {
  static auto* fixtures = new std::map<int, Fixture>();
  auto it = fixtures->find(pods);
  if (it != fixtures->end()) return it->second;
  absl::StatusOr<Cluster> cluster = Cluster::Create(GenerateCluster(SizeForPods(pods)));
  if (!cluster.ok()) Fail(std::string(cluster.status().message()));
  EngineOptions options;
  options.node_name = "node-0";
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, options);
  if (!engine.ok()) Fail(std::string(engine.status().message()));
  // The first pod of node-0 that has container ports: its replica joins an existing class.
  int index = -1;
  for (int i = 0; i < cluster->pod_count() && index < 0; ++i) {
    const k8s::Pod& p = cluster->pod_object(i);
    if (p.spec().nodename() == "node-0" && !p.spec().containers().empty() &&
        !p.spec().containers(0).ports().empty()) {
      index = i;
    }
  }
  if (index < 0) Fail("no pod with ports on node-0");
  Fixture& f = (*fixtures)[pods];
  f.live = std::make_unique<LiveEngine>(*engine);
  const k8s::Pod& existing = cluster->pod_object(index);
  k8s::Pod replica = existing;
  replica.mutable_metadata()->set_name(existing.metadata().name() + "-x4k2p");
  replica.mutable_status()->clear_podips();
  replica.mutable_status()->set_podip("10.250.3.7");
  replica.mutable_status()->add_podips()->set_ip("10.250.3.7");
  replica.mutable_status()->add_podips()->set_ip("fd00:fa::3:7");
  f.added = PodEventText("ADDED", replica, 48213, "2026-12-01T09:41:05Z");
  f.deleted = PodEventText("DELETED", replica, 48219, "2026-12-01T09:41:05Z");
  f.modified_a = PodEventText("MODIFIED", existing, 48230, "2026-12-01T09:41:05Z");
  f.modified_b = PodEventText("MODIFIED", existing, 48231, "2026-12-01T09:42:11Z");
  return f;
}

Change Parse(const std::string& text) {
  absl::StatusOr<agent::WatchEvent> event = agent::ParseWatchEvent(text, "Pod");
  if (!event.ok() || !event->change.has_value()) {
    Fail(absl::StrCat("event rejected: ", event.status().message()));
  }
  return *std::move(event->change);
}

void ApplyOrFail(LiveEngine& live, const Change& change) {
  if (absl::Status s = live.Apply({change}); !s.ok()) {
    Fail(absl::StrCat("apply: ", s.message()));
  }
}

void BM_EventParse(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    absl::StatusOr<agent::WatchEvent> event = agent::ParseWatchEvent(f.added, "Pod");
    benchmark::DoNotOptimize(event);
  }
  state.counters["event_bytes"] = static_cast<double>(f.added.size());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.added.size()));
}

void BM_EventApply(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  const Change added = Parse(f.added);
  const Change deleted = Parse(f.deleted);
  for (auto _ : state) {
    ApplyOrFail(*f.live, added);
    ApplyOrFail(*f.live, deleted);
  }
  state.counters["events"] =
      benchmark::Counter(2.0 * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_EventParseApply(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    ApplyOrFail(*f.live, Parse(f.added));
    ApplyOrFail(*f.live, Parse(f.deleted));
  }
  state.counters["events"] =
      benchmark::Counter(2.0 * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_EventModifiedApply(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  const std::shared_ptr<const Engine> before = f.live->Current();
  for (auto _ : state) {
    ApplyOrFail(*f.live, Parse(f.modified_a));
    ApplyOrFail(*f.live, Parse(f.modified_b));
  }
  // The row times the heartbeat's path: it must have kept the snapshot.
  if (f.live->Current() != before) Fail("a heartbeat made a new snapshot");
  state.counters["events"] =
      benchmark::Counter(2.0 * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// What `netpol agent` does before ParseWatchEvent when it reads kubectl's output: the event's
// lines through an EventSplitter.
void BM_EventSplit(benchmark::State& state) {
  Fixture& f = Get(static_cast<int>(state.range(0)));
  agent::EventSplitter splitter;
  for (auto _ : state) {
    std::vector<std::string> events = splitter.Feed(f.added);
    if (events.size() != 1) Fail("the splitter did not hand out one event");
    benchmark::DoNotOptimize(events);
  }
}


// ---- the lowering of the agent's pod rows

enum class PodEventKind { kRelabelRemote, kRelabelLocal, kMoveRemote, kLocalTable };

// Node-0's engine and installed program of an agent shape, and the pods the rows change.
struct LowerFixture {
  std::shared_ptr<const Engine> engine;
  ir::CompiledPolicy installed;
  // a on `node` with an "app" label, b another app of a's namespace (any node).
  k8s::Pod remote_a, remote_b, local_a, local_b;
};

bool PickAppPair(const ClusterObjects& objects, const std::string& node, k8s::Pod* a,
                 k8s::Pod* b) {
  std::map<std::string, const k8s::Pod*> first_app_of_namespace;
  for (const Sourced<k8s::Pod>& p : objects.pods) {
    const auto& labels = p.object.metadata().labels();
    if (labels.count("app") == 0) continue;
    first_app_of_namespace.emplace(p.object.metadata().namespace_(), &p.object);
  }
  for (const Sourced<k8s::Pod>& p : objects.pods) {
    const auto& labels = p.object.metadata().labels();
    if (p.object.spec().nodename() != node || labels.count("app") == 0) continue;
    for (const Sourced<k8s::Pod>& q : objects.pods) {
      const auto& other = q.object.metadata().labels();
      if (q.object.metadata().namespace_() == p.object.metadata().namespace_() &&
          other.count("app") > 0 && other.at("app") != labels.at("app")) {
        *a = p.object;
        *b = q.object;
        return true;
      }
    }
  }
  return false;
}

LowerFixture& GetLower(NodeShape shape) {
  static auto* fixtures = new std::map<NodeShape, LowerFixture>();
  auto it = fixtures->find(shape);
  if (it != fixtures->end()) return it->second;
  ClusterObjects objects = GenerateCluster(OptionsFor(shape));
  LowerFixture f;
  if (!PickAppPair(objects, "node-1", &f.remote_a, &f.remote_b) ||
      !PickAppPair(objects, kNode, &f.local_a, &f.local_b)) {
    Fail("no pods to relabel");
  }
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  if (!cluster.ok()) Fail(std::string(cluster.status().message()));
  EngineOptions options;
  options.node_name = kNode;
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, options);
  if (!engine.ok()) Fail(std::string(engine.status().message()));
  absl::StatusOr<ir::CompiledPolicy> installed = LowerToIr(**engine);
  if (!installed.ok()) Fail(std::string(installed.status().message()));
  f.engine = *engine;
  f.installed = *std::move(installed);
  return (*fixtures)[shape] = std::move(f);
}

// The row's event and its reverse, as the pods the engine gets.
std::pair<Change, Change> EventsOf(PodEventKind kind, const LowerFixture& f) {
  auto relabelled = [](const k8s::Pod& a, const k8s::Pod& b, bool containers) {
    k8s::Pod moved = a;
    *moved.mutable_metadata()->mutable_labels() = b.metadata().labels();
    if (containers) *moved.mutable_spec()->mutable_containers() = b.spec().containers();
    return Change{Change::Op::kUpsert, moved};
  };
  switch (kind) {
    case PodEventKind::kRelabelRemote:
      return {relabelled(f.remote_a, f.remote_b, false), {Change::Op::kUpsert, f.remote_a}};
    case PodEventKind::kRelabelLocal:
      return {relabelled(f.local_a, f.local_b, false), {Change::Op::kUpsert, f.local_a}};
    case PodEventKind::kMoveRemote:
      return {relabelled(f.remote_a, f.remote_b, true), {Change::Op::kUpsert, f.remote_a}};
    case PodEventKind::kLocalTable: {
      const k8s::Pod pod = ClonePod(f.local_a, "bench-local-add2", kNode, 5);
      return {{Change::Op::kUpsert, pod}, {Change::Op::kDelete, pod}};
    }
  }
  Fail("unknown event kind");
}

// Writes a buffer of 4 × L2 (2 MiB a core here) before a timed call: what a 20 ms idle gap
// on a shared machine and the backend's own work leave of the caches, roughly (the agent
// rows' lowering ran ~5× its back-to-back time).
void EvictCaches() {
  static auto* buffer = new std::vector<char>(8 << 20);
  static char round = 0;
  ++round;
  for (size_t i = 0; i < buffer->size(); i += 64) (*buffer)[i] = round;
  benchmark::ClobberMemory();
}

void BM_LowerPodEvent(benchmark::State& state, NodeShape shape, PodEventKind kind, bool cold) {
  LowerFixture& f = GetLower(shape);
  ir::CompiledPolicy installed = f.installed;
  PodDeltaLowering index = PodDeltaLowering::Index(f.engine, installed);
  std::shared_ptr<const Engine> current = f.engine;
  const auto [there, back] = EventsOf(kind, f);
  std::vector<double> lower_s;
  int events = 0, expressed = 0;
  int64_t identity_pods = 0;  // names added and removed by the deltas' identity edits
  for (auto _ : state) {
    for (const Change* change : {&there, &back}) {
      absl::StatusOr<std::shared_ptr<const Engine>> next = current->Apply({*change});
      if (!next.ok()) Fail(std::string(next.status().message()));
      if (cold) EvictCaches();
      const auto t0 = std::chrono::steady_clock::now();
      std::optional<PodDelta> delta = index.Lower(*next, installed, {PodKey(std::get<k8s::Pod>(change->object))});
      lower_s.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      ++events;
      if (delta.has_value()) {
        ++expressed;
        for (const ir::IdentityPodsEdit& e : delta->delta.identity_pods()) {
          identity_pods += e.added_size() + e.removed_size();
        }
        if (!backends::ApplyDelta(delta->delta, &installed).ok()) Fail("ApplyDelta refused");
        index.Commit(*delta);
      } else {
        absl::StatusOr<ir::CompiledPolicy> whole = LowerToIr(**next);
        if (!whole.ok()) Fail(std::string(whole.status().message()));
        installed = *std::move(whole);
        index = PodDeltaLowering::Index(*next, installed);
      }
      current = *next;
    }
  }
  state.counters["lower_p50_ms"] = Quantile(lower_s, 0.5) * 1e3;
  state.counters["lower_p99_ms"] = Quantile(lower_s, 0.99) * 1e3;
  state.counters["expressed"] = static_cast<double>(expressed) / std::max(1, events);
  state.counters["identity_pods"] = static_cast<double>(identity_pods) / std::max(1, events);
}


// The agent's policy rows (bench/agent_latency_bench.cc): a policy selecting local_a's app
// admitting a namespace on TCP 7777 added then deleted, or (`split`) admitting canary=true
// pods with local_a labelled canary=true beforehand (its class splits from its replicas',
// and merges back at the delete). Engine::Apply and PodDeltaLowering::LowerPolicyChange
// apart, p50/p99 each; the delta applied and committed untimed.
void BM_PolicyEvent(benchmark::State& state, NodeShape shape, bool split) {
  LowerFixture& f = GetLower(shape);
  k8s::NetworkPolicy policy;
  policy.mutable_metadata()->set_namespace_(f.local_a.metadata().namespace_());
  policy.mutable_metadata()->set_name("bench-policy");
  auto* spec = policy.mutable_spec();
  (*spec->mutable_podselector()->mutable_matchlabels())["app"] =
      f.local_a.metadata().labels().at("app");
  spec->add_policytypes("Ingress");
  auto* rule = spec->add_ingress();
  auto* peer = rule->add_from();
  if (split) {
    (*peer->mutable_podselector()->mutable_matchlabels())["canary"] = "true";
  } else {
    (*peer->mutable_namespaceselector()->mutable_matchlabels())["team"] = "monitoring";
  }
  auto* port = rule->add_ports();
  port->set_protocol("TCP");
  port->mutable_port()->set_intval(7777);
  std::shared_ptr<const Engine> current = f.engine;
  if (split) {
    k8s::Pod canary = f.local_a;
    (*canary.mutable_metadata()->mutable_labels())["canary"] = "true";
    absl::StatusOr<std::shared_ptr<const Engine>> next =
        current->Apply({Change{Change::Op::kUpsert, canary}});
    if (!next.ok()) Fail(std::string(next.status().message()));
    current = *next;
  }
  absl::StatusOr<ir::CompiledPolicy> installed = LowerToIr(*current);
  if (!installed.ok()) Fail(std::string(installed.status().message()));
  PodDeltaLowering index = PodDeltaLowering::Index(current, *installed);
  const Change changes[2] = {{Change::Op::kUpsert, policy}, {Change::Op::kDelete, policy}};
  std::vector<double> engine_s, lower_s;
  int events = 0, expressed = 0;
  for (auto _ : state) {
    for (const Change& change : changes) {
      const auto t0 = std::chrono::steady_clock::now();
      absl::StatusOr<std::shared_ptr<const Engine>> next = current->Apply({change});
      const auto t1 = std::chrono::steady_clock::now();
      if (!next.ok()) Fail(std::string(next.status().message()));
      std::optional<PodDelta> delta = index.LowerPolicyChange(*next, *installed);
      const auto t2 = std::chrono::steady_clock::now();
      engine_s.push_back(std::chrono::duration<double>(t1 - t0).count());
      lower_s.push_back(std::chrono::duration<double>(t2 - t1).count());
      ++events;
      if (delta.has_value()) {
        ++expressed;
        if (!backends::ApplyDelta(delta->delta, &*installed).ok()) Fail("ApplyDelta refused");
        index.Commit(*delta);
      } else {
        installed = LowerToIr(**next);
        if (!installed.ok()) Fail(std::string(installed.status().message()));
        index = PodDeltaLowering::Index(*next, *installed);
      }
      current = *next;
    }
  }
  state.counters["engine_p50_ms"] = Quantile(engine_s, 0.5) * 1e3;
  state.counters["engine_p99_ms"] = Quantile(engine_s, 0.99) * 1e3;
  state.counters["lower_p50_ms"] = Quantile(lower_s, 0.5) * 1e3;
  state.counters["lower_p99_ms"] = Quantile(lower_s, 0.99) * 1e3;
  state.counters["expressed"] = static_cast<double>(expressed) / std::max(1, events);
}

void RegisterLowerPodEvents() {
  const std::pair<PodEventKind, const char*> kinds[] = {
      {PodEventKind::kRelabelRemote, "RelabelRemote"},
      {PodEventKind::kRelabelLocal, "RelabelLocal"},
      {PodEventKind::kMoveRemote, "MoveRemote"},
      {PodEventKind::kLocalTable, "LocalTable"}};
  for (NodeShape shape : {NodeShape::kSmall, NodeShape::kLarge}) {
    for (const auto& [kind, name] : kinds) {
      for (bool cold : {false, true}) {
        benchmark::RegisterBenchmark(absl::StrCat("BM_LowerPodEvent/", ShapeName(shape), "/",
                                                  name, cold ? "/cold" : "")
                                         .c_str(),
                                     BM_LowerPodEvent, shape, kind, cold)
            ->Unit(benchmark::kMillisecond)
            ->Iterations(shape == NodeShape::kSmall ? 500 : 200);
      }
    }
    for (bool split : {false, true}) {
      benchmark::RegisterBenchmark(
          absl::StrCat("BM_PolicyEvent/", ShapeName(shape), split ? "/Split" : "").c_str(),
          BM_PolicyEvent, shape, split)
          ->Unit(benchmark::kMillisecond)
          ->Iterations(shape == NodeShape::kSmall ? 200 : 100);
    }
  }
}
const bool lower_pod_events_registered = (RegisterLowerPodEvents(), true);

BENCHMARK(BM_EventSplit)->Arg(1000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EventParse)->Arg(1000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EventApply)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EventParseApply)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EventModifiedApply)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace np::bench

BENCHMARK_MAIN();
