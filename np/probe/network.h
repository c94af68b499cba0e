// np/probe/network.h — the probe harness's test network: a Kubernetes node's pod networking
// rebuilt from network namespaces, with one probe agent (np/probe/agent.h) per pod.
//
//   absl::StatusOr<np::probe::NetworkSpec> spec = np::probe::NetworkSpecOf(cluster);
//   auto net = np::probe::TestNetwork::Create(*spec, {"/path/to/probe_agent"});
//   (*net)->EnsureListening({{np::Protocol::kTCP, 80}});
//   auto outcomes = (*net)->Run({{/*source_pod=*/0, dst_ip, np::Protocol::kTCP, 80, 500}});
//   // ~TestNetwork removes every namespace it made (also after errors).
//
// Topology (routed, as Calico does it; nothing is bridged):
//   * one namespace per node ("<prefix>n<k>") with IPv4 and IPv6 forwarding on;
//   * one namespace per pod ("<prefix>p<i>"): `eth0`, the pod's addresses as /32 and /128,
//     default routes via 169.254.1.1 and fe80::1, both static neighbours that resolve to the
//     host side of the pod's veth;
//   * in the node namespace, the host side of each pod's veth is `p<i>`, with a /32 (/128)
//     route per pod address and a static neighbour entry: no ARP, no NDP, no bridge, so pod to
//     pod traffic crosses the node's netfilter *forward* hook (and tc on `p<i>`);
//   * with more than one node, a "fabric" namespace ("<prefix>fab") joins them: each node has
//     an uplink `fab0` (default routes to the fabric), and the fabric routes every pod address
//     to its node;
//   * addresses outside the cluster, when asked for (SetExternalAddresses), live in one more
//     namespace ("<prefix>ext", with its own agent) behind the first node's `ext0`, routed
//     like a pod's: traffic between them and the pods crosses the nodes' forward hooks.
// Namespace names start with "npprobe-<pid>-<n>-": unique per harness, and leftovers of a dead
// harness are recognisable (CleanupLeftovers). Nothing is configured in the caller's own
// namespace: every `ip` command runs with `-n` in a namespace this class created.
//
// Thread safety: a TestNetwork is used by one thread at a time, except that a backend may be
// applied to a node namespace from another thread while Run() probes.
#ifndef NP_PROBE_NETWORK_H_
#define NP_PROBE_NETWORK_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "np/backends/backend.h"
#include "np/cluster.h"
#include "np/types.h"

namespace np::probe {

// A pod of the test network.
struct PodSpec {
  std::string key;              // "namespace/name"
  std::vector<IpAddress> ips;   // status.podIPs
  std::string node;             // spec.nodeName; "" only when no pod has one
  friend bool operator==(const PodSpec& a, const PodSpec& b) {
    return a.key == b.key && a.ips == b.ips && a.node == b.node;
  }
};

struct NetworkSpec {
  std::vector<PodSpec> pods;  // in the Cluster's order (namespace, name)
  friend bool operator==(const NetworkSpec& a, const NetworkSpec& b) { return a.pods == b.pods; }
  friend bool operator!=(const NetworkSpec& a, const NetworkSpec& b) { return !(a == b); }
  std::vector<std::string> Nodes() const;  // distinct node names, sorted
};

// The network a cluster's pods need. Pods without an address cannot take part: they are
// left out with a note. Errors: two pods with one address; some pods scheduled on a node and
// others not (the harness cannot tell where the unscheduled ones run).
absl::StatusOr<NetworkSpec> NetworkSpecOf(const Cluster& cluster,
                                          std::vector<std::string>* notes = nullptr);

struct ProbeRequest {
  int source_pod = 0;   // index into NetworkSpec::pods, or TestNetwork::external_agent()
  std::optional<IpAddress> source;  // the address to send from (for the external agent)
  IpAddress destination;
  Protocol protocol = Protocol::kTCP;
  uint16_t port = 0;
  int timeout_ms = 500;
  // One packet only (np/probe/agent.h, `once`): a failure then means that packet was
  // dropped or answered after timeout_ms, never that a re-send hid a drop.
  bool once = false;
  // With `once`: how long past timeout_ms to keep watching for the one packet's answer
  // (agent.h `once:WATCH_MS`): an answer then reads "late" (not dropped, only slow).
  int watch_ms = 0;
};

struct ProbeOutcome {
  // What the agent saw (np/probe/agent.h): ok, timeout, refused, unreachable, error; and
  // for `once` probes with a watch, late (answered after timeout_ms) or resent (TCP).
  std::string status;
  int millis = 0;
  std::string detail;
  bool connected() const { return status == "ok"; }
};

class TestNetwork {
 public:
  // Creates the namespaces, links, addresses, routes and neighbours, and starts one agent per
  // pod with `agent_command` (argv of the agent; "serve --control" is appended). On error,
  // everything made so far is removed.
  static absl::StatusOr<std::unique_ptr<TestNetwork>> Create(
      const NetworkSpec& spec, std::vector<std::string> agent_command);
  ~TestNetwork();
  TestNetwork(const TestNetwork&) = delete;
  TestNetwork& operator=(const TestNetwork&) = delete;

  // Stops the agents and deletes every namespace (their links go with them). Idempotent.
  absl::Status Destroy();

  const NetworkSpec& spec() const { return spec_; }
  std::vector<std::string> nodes() const { return nodes_; }
  // The `ip netns` name of a node's namespace; where its backend is applied.
  std::string NodeNetns(absl::string_view node) const;
  std::string PodNetns(int pod) const;
  // What a backend needs to attach on `node`: its namespace and each pod's host interface.
  backends::Attachment AttachmentFor(absl::string_view node) const;

  // Makes every agent serve these (protocol, port) pairs (in addition to what it serves).
  absl::Status EnsureListening(const std::vector<std::pair<Protocol, uint16_t>>& ports);

  // Makes exactly these addresses (outside the cluster: no pod may have one) reachable, on the
  // external agent; creates its namespace the first time. Cheap to call per scenario.
  absl::Status SetExternalAddresses(const std::vector<IpAddress>& addresses);
  const std::vector<IpAddress>& external_addresses() const { return externals_; }
  // The agent index that probes from external addresses (ProbeRequest::source_pod).
  int external_agent() const { return static_cast<int>(spec_.pods.size()); }

  // Forgets every conntrack entry of the node (and fabric) namespaces, so that a new
  // ruleset is judged on new connections only.
  absl::Status FlushConntrack();

  // Runs the probes concurrently (each agent probes its own requests in parallel) and waits
  // for every answer, at most the longest timeout plus `slack`. Outcomes in request order.
  absl::StatusOr<std::vector<ProbeOutcome>> Run(const std::vector<ProbeRequest>& requests,
                                                absl::Duration slack = absl::Seconds(5));

 private:
  struct Agent {
    pid_t pid = -1;
    int in_fd = -1;   // its stdin
    int out_fd = -1;  // its stdout
    std::string buffer;
    std::set<std::pair<int, uint16_t>> listening;
  };
  TestNetwork(NetworkSpec spec, std::string prefix);
  absl::Status Build(const std::vector<std::string>& agent_command);
  absl::Status StartAgent(int index, const std::string& netns);
  std::string AgentName(size_t index) const;
  // Sends `outgoing[i]` to agent i and feeds every line it prints to `on_line(i, line)`,
  // which returns true once agent i has said all it will; until all have, or `deadline`.
  absl::Status Exchange(const std::vector<std::string>& outgoing,
                        const std::function<bool(int, const std::string&)>& on_line,
                        absl::Time deadline);
  void StopAgents();

  NetworkSpec spec_;
  std::string prefix_;
  std::vector<std::string> nodes_;
  std::vector<int> pod_node_;            // node index of each pod
  std::vector<std::string> namespaces_;  // every namespace created, in creation order
  std::vector<Agent> agents_;            // one per pod, then the external one (if any)
  std::vector<std::string> agent_command_;
  std::vector<IpAddress> externals_;
  bool external_ = false;                // the external namespace exists
  bool destroyed_ = false;
};

// Removes the namespaces of harnesses that are no longer running (name prefix npprobe-<pid>-
// with no such process), killing whatever still runs in them. Returns the names removed.
absl::StatusOr<std::vector<std::string>> CleanupLeftovers();

// SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process, so that the harness
// can remove its namespaces; long waits poll Interrupted() and return CancelledError.
void InstallSignalHandlers();
bool Interrupted();
int InterruptSignal();  // the signal received, 0 if none

// Runs `fn` in a child process inside namespace `netns` (fork, setns); its return value is
// the child's exit status. For small kernel pokes (sysctls, netlink) without `ip netns exec`.
absl::Status RunInNetns(absl::string_view netns, int (*fn)(void*), void* arg,
                        absl::string_view what);

// Whether this kernel can open SCTP sockets (it cannot here: EPROTONOSUPPORT).
bool KernelHasSctp();

}  // namespace np::probe

#endif  // NP_PROBE_NETWORK_H_
