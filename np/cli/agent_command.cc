// `netpol agent`: one node's policy agent (np/agent/agent.h) driven by flags: watch events
// from a file, a FIFO or stdin; the node's program installed through a backend; metrics on a
// local address; JSON log lines on stderr.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "np/agent/agent.h"
#include "np/agent/metrics.h"
#include "np/backends/backend.h"
#include "np/cli/cli.h"
#include "np/engine.h"

ABSL_DECLARE_FLAG(std::string, backend);
ABSL_DECLARE_FLAG(std::string, node);
ABSL_FLAG(std::string, events, "",
          "agent: watch events to follow: a file, a FIFO (opened read-write, so writers may come "
          "and go) or - for stdin.");
ABSL_FLAG(std::string, kind, "",
          "agent: kind of event objects that name none (Pod, Namespace, NetworkPolicy).");
ABSL_FLAG(std::string, netns, "", "agent: the network namespace (ip netns name) to program.");
ABSL_FLAG(std::string, interfaces, "",
          "agent: each pod's host-side interface, NAMESPACE/POD=IFNAME[,...] (the eBPF backend "
          "attaches there).");
ABSL_FLAG(absl::Duration, min_interval, absl::Milliseconds(20),
          "agent: at most one kernel update per this interval; events in between are coalesced.");
ABSL_FLAG(std::string, metrics_address, "",
          "agent: serve Prometheus metrics on IPV4:PORT (e.g. 127.0.0.1:9464; port 0: any).");
ABSL_FLAG(bool, remove, false, "agent: uninstall the node's program and exit.");
ABSL_FLAG(bool, exit_at_eof, false,
          "agent: exit once the events input has ended and its events are in the kernel.");

namespace np::cli {
namespace {

std::atomic<int> stop_signal{0};

void OnStopSignal(int signal) { stop_signal = signal; }

// SIGTERM and SIGINT end the loop; no SA_RESTART, so a blocking poll returns at once.
void InstallStopHandlers() {
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

int Fail(agent::JsonLog& log, const absl::Status& s) {
  log.Write("error", "netpol agent: cannot continue",
            {agent::LogField::Text("error", s.message())});
  return kExitError;
}

absl::StatusOr<backends::Attachment> AttachmentFromFlags() {
  backends::Attachment attachment;
  attachment.netns = absl::GetFlag(FLAGS_netns);
  const std::string text = absl::GetFlag(FLAGS_interfaces);
  if (text.empty()) return attachment;
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    if (kv.first.find('/') == std::string::npos || kv.second.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--interfaces: \"", entry, "\" is not NAMESPACE/POD=IFNAME"));
    }
    attachment.interfaces.push_back({kv.first, kv.second});
  }
  return attachment;
}

// The events input as a file descriptor.
absl::StatusOr<int> OpenEvents(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("--events PATH (or - for stdin) is needed");
  if (path == "-") return 0;
  struct stat st {};
  const bool fifo = stat(path.c_str(), &st) == 0 && S_ISFIFO(st.st_mode);
  // A FIFO opened read-write never reads end-of-file: the agent outlives each writer.
  const int fd = open(path.c_str(), (fifo ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("--events ", path, ": ", strerror(errno)));
  }
  return fd;
}

}  // namespace

int RunAgent(const Args& args) {
  agent::JsonLog log(&std::cerr);
  const std::string backend_name = absl::GetFlag(FLAGS_backend);
  absl::StatusOr<backends::BackendOptions> backend_options = BudgetOptions(backend_name);
  if (!backend_options.ok()) return Fail(log, backend_options.status());
  std::unique_ptr<backends::Backend> backend =
      backends::MakeBackend(backend_name, *backend_options);
  if (backend == nullptr) {
    return Fail(log, absl::InvalidArgumentError(absl::StrCat(
                         "no backend \"", backend_name, "\" in this build (nft, iptables, ebpf)")));
  }
  absl::StatusOr<backends::Attachment> attachment = AttachmentFromFlags();
  if (!attachment.ok()) return Fail(log, attachment.status());
  if (absl::GetFlag(FLAGS_remove)) {
    if (absl::Status s = backend->Remove(*attachment); !s.ok()) return Fail(log, s);
    log.Write("info", "removed the node's program",
              {agent::LogField::Text("backend", backend_name),
               agent::LogField::Text("netns", attachment->netns)});
    return kExitOk;
  }
  // Validate what can be validated before touching the kernel.
  absl::StatusOr<int> events = OpenEvents(absl::GetFlag(FLAGS_events));
  if (!events.ok()) return Fail(log, events.status());
  const std::string kind = absl::GetFlag(FLAGS_kind);
  static constexpr absl::string_view kEventKinds[] = {
      "Pod", "Namespace", "NetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy",
      "ClusterNetworkPolicy", "Node"};
  if (!kind.empty() &&
      std::find(std::begin(kEventKinds), std::end(kEventKinds), kind) == std::end(kEventKinds)) {
    return Fail(log, absl::InvalidArgumentError(absl::StrCat(
                         "--kind: \"", kind, "\" is not ", absl::StrJoin(kEventKinds, ", "))));
  }
  if (absl::GetFlag(FLAGS_min_interval) < absl::ZeroDuration()) {
    return Fail(log, absl::InvalidArgumentError("--min-interval must not be negative"));
  }
  absl::StatusOr<Cluster> cluster = LoadCluster(args, /*print_warnings=*/false,
                                                /*allow_empty=*/true);
  if (!cluster.ok()) return Fail(log, cluster.status());
  absl::StatusOr<EvaluationOptions> evaluation = OptionsFromFlags();
  if (!evaluation.ok()) return Fail(log, evaluation.status());
  EngineOptions engine_options;
  engine_options.evaluation = *evaluation;
  engine_options.node_name = absl::GetFlag(FLAGS_node);
  // The kernel answers this node's verdicts from the lowering; no lookup reads the verdict
  // bits here, so they would only cost build time and memory.
  engine_options.verdict_bits_bytes = 0;
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, engine_options);
  if (!engine.ok()) return Fail(log, engine.status());

  agent::AgentMetrics metrics;
  std::unique_ptr<agent::MetricsServer> server;
  if (const std::string address = absl::GetFlag(FLAGS_metrics_address); !address.empty()) {
    absl::StatusOr<std::unique_ptr<agent::MetricsServer>> started =
        agent::MetricsServer::Start(address, &metrics);
    if (!started.ok()) return Fail(log, started.status());
    server = *std::move(started);
    log.Write("info", "serving metrics",
              {agent::LogField::Text("address", absl::StrCat(address.substr(0, address.rfind(':')),
                                                             ":", server->port()))});
  }
  agent::AgentOptions options;
  options.default_kind = kind;
  options.min_interval = absl::GetFlag(FLAGS_min_interval);
  options.attachment = *attachment;
  agent::Agent node_agent(*engine, std::move(backend), options, &metrics, &log);
  InstallStopHandlers();
  if (absl::Status s = node_agent.Reconcile(); !s.ok()) return Fail(log, s);
  log.Write("info", "following events",
            {agent::LogField::Text("events", absl::GetFlag(FLAGS_events)),
             agent::LogField::Text("node", engine_options.node_name)});
  absl::Status ran = agent::RunLoop(
      node_agent, *events, [] { return stop_signal != 0; }, absl::GetFlag(FLAGS_exit_at_eof));
  if (*events != 0) close(*events);
  if (!ran.ok()) return Fail(log, ran);
  // Fail closed: the kernel keeps the last program; the next start reconciles.
  log.Write("info", "stopping: the kernel program stays in place",
            {agent::LogField::Number("signal", stop_signal),
             agent::LogField::Number("unsynced_events", node_agent.pending_events())});
  return kExitOk;
}

}  // namespace np::cli
