#include "bench/agent_workload.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <ostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "np/backends/util.h"
#include "np/engine.h"

namespace np::bench {

namespace {

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

const char* ShapeName(NodeShape shape) {
  return shape == NodeShape::kSmall ? "110/1k" : "1000/10k";
}

SyntheticOptions OptionsFor(NodeShape shape) {
  if (shape == NodeShape::kSmall) {
    SyntheticOptions o;
    o.namespaces = 55;
    o.pods_per_namespace = 20;
    o.policies = 220;
    o.nodes = 10;
    return o;
  }
  SyntheticOptions o = SizeForPods(10000);
  o.nodes = 10;
  return o;
}

// ---- TimedBackend

absl::StatusOr<ir::BackendCapacity> TimedBackend::Capacity(const ir::CompiledPolicy& ir) const {
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<ir::BackendCapacity> c = inner_->Capacity(ir);
  last_capacity_s_ = SecondsSince(t0);
  return c;
}

std::chrono::steady_clock::time_point TimedBackend::CallStart() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  call_start_cpu_s_ = static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  return std::chrono::steady_clock::now();
}

absl::Status TimedBackend::Apply(const ir::CompiledPolicy& ir, const backends::Attachment& a) {
  const auto t0 = CallStart();
  absl::Status s = inner_->Apply(ir, a);
  last_call_s_ = SecondsSince(t0);
  last_done_ = absl::Now();
  last_was_update_ = false;
  ++applies_;
  return s;
}

absl::Status TimedBackend::Update(const ir::CompiledPolicy& previous,
                                  const ir::CompiledPolicy& next, const backends::Attachment& a) {
  const auto t0 = CallStart();
  absl::Status s = inner_->Update(previous, next, a);  // the backend's own incremental path
  last_call_s_ = SecondsSince(t0);
  last_done_ = absl::Now();
  last_was_update_ = true;
  ++updates_;
  return s;
}

absl::Status TimedBackend::UpdateDelta(const ir::CompiledPolicy& previous,
                                       const ir::CompiledPolicyDelta& delta,
                                       const backends::Attachment& a) {
  const auto t0 = CallStart();
  absl::Status s = inner_->UpdateDelta(previous, delta, a);
  last_call_s_ = SecondsSince(t0);
  last_done_ = absl::Now();
  last_was_update_ = true;
  ++updates_;
  ++delta_updates_;
  return s;
}

// ---- AgentNode

absl::StatusOr<std::unique_ptr<AgentNode>> AgentNode::Create(const std::string& backend_name,
                                                             NodeShape shape,
                                                             const AgentNodeOptions& options) {
  std::unique_ptr<AgentNode> node(new AgentNode());
  std::unique_ptr<backends::Backend> inner = backends::MakeBackend(backend_name);
  if (inner == nullptr) return absl::InvalidArgumentError("unknown backend " + backend_name);
  node->objects_ = GenerateCluster(OptionsFor(shape));

  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<Cluster> cluster = Cluster::Create(node->objects_);
  if (!cluster.ok()) return cluster.status();
  EngineOptions engine_options;
  engine_options.node_name = kNode;
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, engine_options);
  if (!engine.ok()) return engine.status();
  node->build_s_ = SecondsSince(t0);

  static std::atomic<int> serial{0};
  const char* own = getenv("NP_BENCH_NETNS_PREFIX");
  node->netns_ = absl::StrCat(own != nullptr ? own : "", "npagentbench-", getpid(), "-",
                              serial++, options.netns_tag);
  if (absl::StatusOr<std::string> s = backends::RunCommand({"ip", "netns", "add", node->netns_});
      !s.ok()) {
    return s.status();
  }
  node->netns_made_ = true;

  agent::AgentOptions agent_options;
  agent_options.min_interval = options.min_interval;
  agent_options.attachment.netns = node->netns_;
  std::vector<std::string> local;
  for (const Sourced<k8s::Pod>& p : node->objects_.pods) {
    if (p.object.spec().nodename() == kNode) local.push_back(PodKey(p.object));
  }
  node->local_pods_ = static_cast<int>(local.size());
  if (backend_name == "ebpf") {
    // One veth per pod that is or may become local: eBPF attaches a filter per interface.
    local.insert(local.end(), options.extra_local_pods.begin(), options.extra_local_pods.end());
    std::string batch;
    for (size_t i = 0; i < local.size(); ++i) {
      absl::StrAppend(&batch, "link add h", i, " type veth peer name c", i, "\nlink set h", i,
                      " up\n");
      agent_options.attachment.interfaces.push_back({local[i], absl::StrCat("h", i)});
    }
    if (absl::StatusOr<std::string> s =
            backends::RunCommand({"ip", "-n", node->netns_, "-batch", "-"}, batch);
        !s.ok()) {
      return s.status();
    }
  }

  node->null_out_ = std::make_unique<std::ostream>(nullptr);  // logs go nowhere
  node->log_ = std::make_unique<agent::JsonLog>(node->null_out_.get());
  auto timed = std::make_unique<TimedBackend>(std::move(inner));
  node->backend_ = timed.get();
  node->agent_ = std::make_unique<agent::Agent>(*engine, std::move(timed), agent_options,
                                                &node->metrics_, node->log_.get());
  t0 = std::chrono::steady_clock::now();
  if (absl::Status s = node->agent_->Reconcile(); !s.ok()) return s;
  node->reconcile_s_ = SecondsSince(t0);
  return node;
}

AgentNode::~AgentNode() {
  if (agent_ != nullptr) (void)agent_->Remove();
  if (netns_made_) (void)backends::RunCommand({"ip", "netns", "del", netns_});
}

// ---- events

std::string PodKey(const k8s::Pod& pod) {
  return absl::StrCat(pod.metadata().namespace_(), "/", pod.metadata().name());
}

std::string PodJson(const k8s::Pod& pod) {
  std::vector<std::string> labels;
  for (const auto& [k, v] : pod.metadata().labels()) labels.push_back(Quote(k) + ":" + Quote(v));
  std::sort(labels.begin(), labels.end());
  std::vector<std::string> containers;
  for (const k8s::Container& c : pod.spec().containers()) {
    std::vector<std::string> ports;
    for (const k8s::ContainerPort& p : c.ports()) {
      ports.push_back(absl::StrCat(R"({"name":)", Quote(p.name()), R"(,"containerPort":)",
                                   p.containerport(), R"(,"protocol":)", Quote(p.protocol()),
                                   "}"));
    }
    containers.push_back(absl::StrCat(R"({"name":)", Quote(c.name()), R"(,"image":"i","ports":[)",
                                      absl::StrJoin(ports, ","), "]}"));
  }
  std::vector<std::string> ips;
  for (const auto& ip : pod.status().podips()) ips.push_back(R"({"ip":)" + Quote(ip.ip()) + "}");
  return absl::StrCat(R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":)",
                      Quote(pod.metadata().name()), R"(,"namespace":)",
                      Quote(pod.metadata().namespace_()), R"(,"labels":{)",
                      absl::StrJoin(labels, ","), R"(}},"spec":{"nodeName":)",
                      Quote(pod.spec().nodename()), R"(,"containers":[)",
                      absl::StrJoin(containers, ","), R"(]},"status":{"phase":"Running","podIP":)",
                      Quote(pod.status().podip()), R"(,"podIPs":[)", absl::StrJoin(ips, ","),
                      "]}}");
}

std::string PodEvent(const std::string& type, const k8s::Pod& pod) {
  return absl::StrCat(R"({"type":)", Quote(type), R"(,"object":)", PodJson(pod), "}");
}

std::string PodDeleteEvent(const std::string& ns, const std::string& name) {
  return absl::StrCat(R"({"type":"DELETED","object":{"apiVersion":"v1","kind":"Pod",)",
                      R"("metadata":{"name":)", Quote(name), R"(,"namespace":)", Quote(ns), "}}}");
}

std::string PolicyEvent(const std::string& type, const std::string& ns, const std::string& name,
                        const std::string& app, int port) {
  return absl::StrCat(
      R"({"type":)", Quote(type),
      R"(,"object":{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":)",
      Quote(name), R"(,"namespace":)", Quote(ns), R"(},"spec":{"podSelector":{"matchLabels":{"app":)",
      Quote(app),
      R"(}},"policyTypes":["Ingress"],"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"team":"monitoring"}}}],"ports":[{"protocol":"TCP","port":)",
      port, "}]}]}}}");
}

std::string PolicyDeleteEvent(const std::string& ns, const std::string& name) {
  return absl::StrCat(
      R"({"type":"DELETED","object":{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",)",
      R"("metadata":{"name":)", Quote(name), R"(,"namespace":)", Quote(ns), "}}}");
}

k8s::Pod ClonePod(const k8s::Pod& pod, const std::string& name, const std::string& node,
                  int serial) {
  k8s::Pod copy = pod;
  copy.mutable_metadata()->set_name(name);
  copy.mutable_spec()->set_nodename(node);
  const std::string v4 = absl::StrCat("10.250.", (serial >> 8) & 255, ".", serial & 255);
  copy.mutable_status()->set_podip(v4);
  copy.mutable_status()->clear_podips();
  copy.mutable_status()->add_podips()->set_ip(v4);
  copy.mutable_status()->add_podips()->set_ip(absl::StrCat("fd00:fa::", absl::Hex(serial)));
  return copy;
}

// ---- process figures

namespace {
int64_t StatusField(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return std::atoll(line.c_str() + prefix.size()) * 1024;
  }
  return -1;
}
}  // namespace

int64_t RssBytes() { return StatusField("VmRSS"); }
int64_t PeakRssBytes() { return StatusField("VmHWM"); }

double Quantile(std::vector<double> values, double q) {
  if (values.empty()) return -1;
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(q * static_cast<double>(values.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, values.size());
  return values[rank - 1];
}

}  // namespace np::bench
