// np/probe/harness.h — proves a datapath backend on real packets: builds the cluster's pod
// networking in network namespaces (np/probe/network.h), compiles the cluster per node with
// the engine, lowers it to the IR and applies the backend in each node's namespace, probes
// every ordered pod pair on each port, protocol and address family, and compares what got
// through with the engine's verdicts.
//
//   np::probe::HarnessOptions options;
//   options.backend = "nft";
//   options.agent_command = {"bazel-bin/np/probe/probe_agent"};
//   np::probe::Harness harness(options);
//   absl::StatusOr<np::probe::ScenarioReport> report = harness.Probe(cluster);
//   std::cout << np::probe::FormatText(*report);         // mismatches == 0: backend == engine
//   harness.Close();                                       // also done by the destructor
//
// What is compared. A pod pair on one family is probed from the source pod's agent to the
// destination's address of that family (IPv4, IPv6 where both pods have one). The engine's
// verdict for the same packet (Engine::AllowedPacket, cluster-wide) is the expectation, with
// one exception: a pod's traffic to itself never leaves its namespace, so no datapath can see
// it; self pairs are probed (they connect) and compared as always-allow-self.
// A probe that the engine allows but that got no answer within `timeout_ms` is retried once
// with `retry_timeout_ms` before it counts as a mismatch (a slow machine must not read as
// "denied"); a connection that succeeds is never retried.
// SCTP is probed only where the kernel has SCTP sockets (not on this project's CI kernel);
// otherwise it is skipped with a note, while the backend still gets (and the engine still
// decides) the SCTP rules.
//
// Reuse: consecutive Probe() calls on clusters with the same pods (names, addresses, nodes)
// keep the namespaces and agents; the backend's program is atomically replaced and the
// nodes' conntrack tables are flushed, so each scenario is judged on new connections only.
//
// Thread safety: not thread-safe; one Harness per thread.
#ifndef NP_PROBE_HARNESS_H_
#define NP_PROBE_HARNESS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "np/backends/backend.h"
#include "np/cluster.h"
#include "np/probe/network.h"
#include "np/types.h"
#include "np/verdict.h"

namespace np::probe {

struct HarnessOptions {
  std::string backend = "nft";  // by name (np::backends::MakeBackend) ...
  // ... unless this is set: one instance per node (a backend of one's own, or a test double).
  std::function<std::unique_ptr<backends::Backend>()> backend_factory;
  std::vector<Protocol> protocols = {Protocol::kTCP, Protocol::kUDP};
  // Empty: every containerPort of the cluster's pods (the agents serve each probed port on
  // every pod, declared or not, so that only policy decides).
  std::vector<uint16_t> ports;
  // Probed too when `ports` is empty, e.g. the ports of a file's expectation flows (a node's
  // server port that no pod declares).
  std::vector<uint16_t> extra_ports;
  std::vector<AddressFamily> families = {AddressFamily::kIPv4, AddressFamily::kIPv6};
  EvaluationOptions evaluation;
  // Peers outside the cluster, probed to and from every pod of their family (one more
  // namespace). sample_external adds one address of every address range of the IR that is
  // not a pod's (every CIDR class the policies' ipBlocks and excepts make; at most 16 per
  // family), so that ipBlocks are checked on addresses outside the cluster too.
  std::vector<IpAddress> external_addresses;
  bool sample_external = true;
  int timeout_ms = 250;
  int retry_timeout_ms = 3000;
  // argv prefix that runs np/probe/agent.h's AgentMain (e.g. the probe_agent binary).
  std::vector<std::string> agent_command;
};

struct ProbeCell {
  bool probed = false;    // false: no address of this family at one end
  bool observed = false;  // the connection (or UDP echo) succeeded
  bool expected = false;  // the engine's verdict (true on the diagonal: see above)
  std::string status;     // the agent's status of the last attempt (np/probe/agent.h)
  bool mismatch() const { return probed && observed != expected; }
};

struct ProbeMatrix {
  AddressFamily family = AddressFamily::kIPv4;
  Protocol protocol = Protocol::kTCP;
  uint16_t port = 0;
  std::vector<ProbeCell> cells;  // pods.size() squared, row-major: row source, column dest
};

// Flows between the pods and addresses outside the cluster, for one protocol and port.
struct ExternalMatrix {
  Protocol protocol = Protocol::kTCP;
  uint16_t port = 0;
  // [e * pods + p]: inbound is external e -> pod p (ingress only), outbound pod p ->
  // external e (egress only); not probed when p has no address of e's family.
  std::vector<ProbeCell> inbound, outbound;
};

struct ScenarioReport {
  std::string name;                 // the input file, when known
  std::string backend;
  std::vector<std::string> nodes;
  std::vector<std::string> pods;    // every pod of the cluster, "namespace/name", its order
  std::vector<std::vector<IpAddress>> pod_ips;
  std::vector<ProbeMatrix> matrices;  // protocols outer, ports, then families inner
  std::vector<IpAddress> externals;   // the external addresses probed
  std::vector<ExternalMatrix> external_matrices;  // per protocol and port
  std::vector<std::string> notes;
  int probes = 0;
  int retried = 0;
  int mismatches = 0;
  absl::Duration elapsed;
};

struct UpdateReport {
  std::string backend;
  int swaps = 0;            // rulesets applied while probing
  int rounds = 0;           // probe rounds over the watched flows
  int64_t probes = 0;
  int denied_flows = 0;     // flows both policy sets deny: watched, must never connect
  int allowed_flows = 0;    // flows both allow: must never be dropped
  int64_t allowed_failures = 0;  // probes of them (one packet, 900 ms) that got no answer
  // The first ten, with the agent's status, when, and how the same flow fared when probed
  // again after the swaps.
  std::vector<std::string> allowed_failure_examples;
  // Probes of both-allowed flows whose one packet was answered after the 900 ms, within the
  // watch that follows (HarnessOptions::retry_timeout_ms; agent.h `late`): nothing was
  // dropped, an agent or the machine was slow. Not failures; reported beside them.
  int64_t allowed_late = 0;
  int max_late_ms = 0;
  std::vector<std::string> allowed_late_examples;  // the first five
  std::vector<std::string> violations;  // a both-denied flow that connected, with when
  std::vector<std::string> notes;
  absl::Duration elapsed;
  bool passed() const { return violations.empty() && allowed_failures == 0; }
};

// The network of an update test between two sets: `a`'s pods, and `b`'s pods that hold
// addresses no pod of `a` does. Pods of the two sets with the same addresses share one
// namespace (key "a-key|b-key" when the names differ: an address reused). Errors: a pod's
// addresses partly shared with another's, a pod moved to other addresses or another node.
absl::StatusOr<NetworkSpec> ChurnNetworkSpec(const NetworkSpec& a, const NetworkSpec& b,
                                             std::vector<std::string>* notes);

class Harness {
 public:
  explicit Harness(HarnessOptions options);
  ~Harness();
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  // Probes one cluster (see above). Errors: the network could not be built, the backend is
  // unknown or failed to apply, an agent stopped answering, or the harness was interrupted.
  absl::StatusOr<ScenarioReport> Probe(const Cluster& cluster, absl::string_view name = "");

  // Issue 5's update test. Applies `a`, then swaps the program between `b` and `a` `swaps`
  // times (within `max_time`) while probing, round after round, every flow that both deny
  // (none may ever connect) and every flow that both allow (none may ever be dropped: each
  // probe is one packet with 900 ms to answer, so a slow machine is not a drop and a
  // re-send cannot hide one; an answer to that packet after the 900 ms, within
  // `retry_timeout_ms` more, is counted as late, not dropped). All pods on a single node. Pods may differ between `a` and
  // `b` (pod churn): added or deleted (in the set that lacks it, its address is outside the
  // cluster), relabelled, or an address reused by another pod (ChurnNetworkSpec).
  absl::StatusOr<UpdateReport> UpdateTest(const Cluster& a, const Cluster& b, int swaps,
                                          absl::Duration max_time = absl::Seconds(60));

  // Replaces HarnessOptions::external_addresses for the next Probe().
  void set_external_addresses(std::vector<IpAddress> addresses) {
    options_.external_addresses = std::move(addresses);
  }
  // Replaces HarnessOptions::extra_ports for the next Probe().
  void set_extra_ports(std::vector<uint16_t> ports) { options_.extra_ports = std::move(ports); }

  // Removes the backend's programs and the namespaces. Idempotent.
  absl::Status Close();

 private:
  absl::Status PrepareNetwork(const Cluster& cluster, std::vector<std::string>* notes);
  absl::Status PrepareNetwork(const NetworkSpec& spec);
  // Applies each node's program; `ranges` (if given) receives every IR's address ranges.
  absl::Status Install(const Cluster& cluster, std::vector<ir::AddressRange>* ranges = nullptr);
  std::vector<IpAddress> Externals(const std::vector<ir::AddressRange>& ranges,
                                   const Cluster& cluster) const;
  std::vector<Protocol> ProbedProtocols(std::vector<std::string>* notes) const;
  std::vector<uint16_t> ProbedPorts(const Cluster& cluster) const;

  HarnessOptions options_;
  std::unique_ptr<TestNetwork> network_;
  std::map<std::string, std::unique_ptr<backends::Backend>> backends_;  // by node
};

// The observed truth table in exactly the shape of `netpol matrix -o json`:
// {"pods": [...], "matrices": [{"protocol": "TCP", "port": 80, "allowed": [[...], ...]}]}.
// A pair's cell is the probe on the pair's flow family (IPv4 when both pods have IPv4, else
// IPv6; np::FlowFamily); a pair that was not probed is false.
std::string FormatJson(const ScenarioReport& report);
// Tables per family, protocol and port ("." connected, "X" not, "!" marks a mismatch), the
// notes, and every mismatch with the agent's status.
std::string FormatText(const ScenarioReport& report, bool tables = true);
std::string FormatUpdateReport(const UpdateReport& report);

}  // namespace np::probe

#endif  // NP_PROBE_HARNESS_H_
