// np/analysis/connections.h — who can reach what, on which ports: every ordered pair of
// endpoints (pods, and the address ranges outside the cluster that policies tell apart) that
// can connect, with exactly the ports per protocol, over every port and protocol — read from
// the engine's compiled tables, never by looping over ports; and the difference between two
// clusters' listings (what a change opens and closes).
//
//   absl::StatusOr<std::shared_ptr<const np::Engine>> engine = np::Engine::Build(cluster);
//   np::analysis::ConnectionOptions options;
//   options.to = "shop/postgres";                 // "what can reach the database?"
//   absl::StatusOr<np::analysis::Connections> c = np::analysis::ListConnections(**engine, options);
//   std::cout << np::analysis::FormatConnections(*c);   // "shop/api => shop/postgres : TCP 5432"
//   std::cout << np::analysis::ConnectionsJson(*c);
//
//   absl::StatusOr<np::analysis::ConnectionDiff> d =
//       np::analysis::DiffConnections(**before, **after, options);   // d->added, d->removed
//
// What an entry means. `from => to : ports` says that a connection from `from` to `to` on
// each listed (protocol, destination port) is allowed — egress at the source and ingress at
// the destination — and on every other one is denied. Pod to pod uses the pair's flow family
// (np::FlowFamily); a pod is listed against external ranges of the families it has an
// address of. External ranges are the runs of addresses that no ipBlock boundary cuts (the
// engine's CIDR classes, neighbours with the same class merged); a pod's own address inside
// a range is that pod, not the range. Ports run from 1 to 65535 (port 0 carries no
// connection). A pod's traffic to itself is not listed (it never reaches a datapath).
// Pairs with nothing allowed are absent.
//
// Thread safety: pure functions of immutable engine snapshots.
#ifndef NP_ANALYSIS_CONNECTIONS_H_
#define NP_ANALYSIS_CONNECTIONS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "np/engine.h"
#include "np/types.h"
#include "np/verdict.h"

namespace np::analysis {

// Sorted, merged, inclusive port intervals per protocol (index: np::ProtocolIndex).
struct PortSet {
  std::array<std::vector<PortRange>, 3> by_protocol;

  bool empty() const;
  bool all() const;  // 1-65535 on TCP, UDP and SCTP
  bool Contains(Protocol protocol, uint16_t port) const;
  // "TCP 1-79,81-65535; UDP 53", or "All connections".
  std::string ToString() const;
  friend bool operator==(const PortSet& a, const PortSet& b) { return a.by_protocol == b.by_protocol; }
};
PortSet Intersect(const PortSet& a, const PortSet& b);
PortSet Subtract(const PortSet& a, const PortSet& b);  // ports in a and not in b

struct ConnectionEnd {
  bool is_pod = false;
  std::string name;        // "namespace/name", or "first-last" for an external range
  PodId pod = 0;           // is_pod
  IpAddress first, last;   // !is_pod: the range, one family
};

// What decided a connection's ports, per side: egress at the source, ingress at the
// destination (empty for a side outside the cluster). Each entry names one decider, sorted:
//   "x/allow-db spec.ingress[0]"                          a NetworkPolicy rule admits
//   "Admin tier, ClusterNetworkPolicy x (priority 5) spec.ingress[0] \"n\": Allow"
//                                                         a tier rule decided (Allow or Deny)
//   "not isolated"                                        nothing isolates that side
//   "isolated by x/p, x/q; no rule admits"                NetworkPolicy isolation denies
//   "shared address 10.0.0.5"                             the pod is quarantined (denies)
//   "x/a is not in this state"                            (diffs) the pod exists in one state only
// A side lists the deciders of every port of the connection (a set of ports may be decided
// by several rules).
struct Reasons {
  std::vector<std::string> egress;
  std::vector<std::string> ingress;
  bool empty() const { return egress.empty() && ingress.empty(); }
  friend bool operator==(const Reasons& a, const Reasons& b) {
    return a.egress == b.egress && a.ingress == b.ingress;
  }
};

// The deciders (as Reasons spells them) of one side's verdict on one flow, whichever the
// verdict; empty for a side outside the cluster.
std::vector<std::string> Deciders(const DirectionVerdict& side);

struct Connection {
  ConnectionEnd from, to;
  PortSet ports;
  // With ConnectionOptions::explain. `why`: what allows the ports (in a diff: in the state
  // that allows them — after for added, before for removed). `why_not` (diffs only): what
  // denies them in the other state; per side only the deciders of ports that side denies.
  Reasons why;
  Reasons why_not;
};

struct Connections {
  std::vector<Connection> connections;  // sorted by (from, to): pods first, then ranges
  std::vector<ConnectionEnd> ends;      // every end the filters kept, in the same order
};

struct ConnectionOptions {
  // Filters on the ends: "namespace/name" of a pod (`*` globs allowed, e.g. "shop/*" or
  // "*/api-*"), an IP address, or a CIDR (the pods with an address in it and the external
  // ranges that overlap it). Empty: every end.
  std::string from;
  std::string to;
  // Only these protocols (empty: all) and these ports (empty: all). A port name stands for
  // the port each destination pod gives that name (per protocol); ranges outside the
  // cluster have no named ports.
  std::vector<Protocol> protocols;
  std::vector<PortRange> ports;
  std::vector<std::string> port_names;
  // Whether external ranges are listed at all.
  bool external = true;
  // Fill Connection::why (and why_not in diffs): the engine's explanation of each listed
  // port, read once per run of ports that no rule boundary cuts. Costs an explanation per
  // run and line: for reading a filtered listing, not for a full one of a large cluster.
  bool explain = false;
};

absl::StatusOr<Connections> ListConnections(const Engine& engine,
                                            const ConnectionOptions& options = {});

// What changed between two snapshots: for each pair, the ports allowed after and not before
// (`added`) and allowed before and not after (`removed`). External ranges are cut at the
// boundaries of both snapshots, so the two listings line up.
struct ConnectionDiff {
  std::vector<Connection> added;
  std::vector<Connection> removed;
  bool empty() const { return added.empty() && removed.empty(); }
};
absl::StatusOr<ConnectionDiff> DiffConnections(const Engine& before, const Engine& after,
                                               const ConnectionOptions& options = {});

// The same diff for `after` = before.Apply(changes), computed only over the pairs the change
// can touch — ends whose table decides some class of `before` differently, or whose peer
// class changed (then only against the ends whose tables name a selector it joined or left,
// unless it gained or lost an address, a shared address or named ports) — so its cost
// follows the change, not the cluster (one pass over the pods' classes aside). `after`,
// when given, receives the new snapshot.
absl::StatusOr<ConnectionDiff> DiffChanges(const Engine& before, absl::Span<const Change> changes,
                                           const ConnectionOptions& options = {},
                                           std::shared_ptr<const Engine>* after = nullptr);

// Whether each filter of `options` names something of `clusters` (any of them, e.g. both
// states of a diff), so that an empty listing means "nothing is allowed" and never "the
// filter matched nothing": `from`/`to` a pod glob that matches no pod, or (with external
// ranges left out) an address or CIDR that holds no pod's address; a port name that no
// container port has. InvalidArgument naming the filter and its text; OK otherwise.
absl::Status CheckFiltersMatch(const std::vector<const Cluster*>& clusters,
                               const ConnectionOptions& options);

// The changes that turn cluster `a`'s objects into `b`'s: upserts of new and changed
// objects, deletes of missing ones, of every kind a Change carries (Nodes, Namespaces,
// NetworkPolicies, the policy tiers, Pods), so DiffChanges(engine of a, ChangesBetween(a, b))
// diffs any two inputs.
std::vector<Change> ChangesBetween(const Cluster& a, const Cluster& b);

// {"connections": [{"from": "ns/name", "to": "10.0.0.0-10.255.255.255",
//   "ports": {"TCP": [[1, 79], [81, 65535]], "UDP": [[53, 53]]}}]}
// With explanations an entry also has "why": {"egress": [...], "ingress": [...]}.
std::string ConnectionsJson(const Connections& connections);
// {"added": [...], "removed": [...]} with entries shaped as above; explained entries have
// "why" and "why_not".
std::string DiffJson(const ConnectionDiff& diff);
// One line per pair, aligned: "x/a => x/b : TCP 80,443"; explained entries are followed by
// indented "egress: ..." / "ingress: ..." lines (and "was denied by" / "now denied by" in
// a diff).
std::string FormatConnections(const Connections& connections);
// "+ x/a => x/b : TCP 80" and "- ..." lines.
std::string FormatDiff(const ConnectionDiff& diff);

}  // namespace np::analysis

#endif  // NP_ANALYSIS_CONNECTIONS_H_
