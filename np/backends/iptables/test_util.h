// Test helpers of the iptables and nft backends: random and hand-made IRs (what they mean is
// np::backends::IrAllows), and a small routed topology of pod network namespaces with
// servers and probes for real-packet tests.
#ifndef NP_BACKENDS_IPTABLES_TEST_UTIL_H_
#define NP_BACKENDS_IPTABLES_TEST_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "np/backends/backend.h"
#include "proto/compiled.pb.h"

namespace np::backends::iptables::testutil {

// A random, well-formed IR: identities, ranges partitioning both families (some of them
// single pod addresses in 10.0.0.0/24 and fd00::/120), peer sets, tables with disjoint
// sorted rules and, in about half the directions of each tier, admin and baseline rules
// (see AddRandomTierRules), endpoints (some unselected, some dual-stack).
ir::CompiledPolicy RandomIr(uint64_t seed);

// Appends random admin and/or baseline rules (each tier in half the calls, 1-4 rules):
// Allow, Deny and Pass; every protocol (PROTOCOL_UNSPECIFIED) or TCP/UDP/SCTP on ranges
// that often cover ports 80 and 81 (where NetworkPolicy's rules are probed); peer sets
// 0..peer_sets-1; origins sometimes with quotes and backslashes.
void AddRandomTierRules(std::mt19937_64& rng, int peer_sets, ir::DirectionPolicy* direction);

// Appends a peer set (id = its index) of `identities`, or of everything when `all`.
uint32_t AddPeerSet(ir::CompiledPolicy& ir, bool all, std::vector<uint32_t> identities);

// Appends `count` random peer sets: each identity in [first, last] in it one time in two,
// `all` one time in six (the random programs' seeds depend on this order of draws).
void AddRandomPeerSets(std::mt19937_64& rng, int count, uint32_t first, uint32_t last,
                       ir::CompiledPolicy& ir);

// Appends `tables` tables: each direction isolated one time in two (always, for the first
// table's ingress when `first_ingress`), with NetworkPolicy rules on TCP/UDP 80-81 where
// isolated and random tier rules (AddRandomTierRules), all of peer sets 0..peer_sets-1.
void AddRandomTables(std::mt19937_64& rng, int tables, int peer_sets, bool first_ingress,
                     ir::CompiledPolicy& ir);

// Events of a stably numbered program (the form np::AlignNumbering hands a backend: ids of
// identities, peer sets and tables carried over; unused items left as tombstones; a new item
// takes the lowest tombstone id first, else is appended). StableEvent derives `next` from
// `previous` (well-formed, pods filled as WithPods does) as one such event, by hand:
//   kRules       a table's NetworkPolicy rules change (a rule dropped, or TCP 7777 from a
//                random peer set appended, which isolates the direction);
//   kTierRules   a direction's admin and baseline rules drawn anew (AddRandomTierRules);
//   kPeerSet     a peer set's identities change (one identity in or out);
//   kNewPeerSet  a peer set appended (or a tombstone reused) and a rule pointed at it;
//   kRelabel     an identity appended (or a tombstone reused) and a pod's range moved to it,
//                the identity added to some peer sets;
//   kNewTable    a table appended (or a tombstone reused) with random rules, an endpoint
//                moved to it (or an unselected one selected into it);
//   kTombstone   a table emptied into a tombstone, its endpoints moved to another table (or
//                unselected);
//   kMoveEndpoint an endpoint moved to another existing table.
// The result passes CheckIr; what it means is np::backends::IrAllows of it.
enum StableEventKind {
  kRules, kTierRules, kPeerSet, kNewPeerSet, kRelabel, kNewTable, kTombstone, kMoveEndpoint,
  kStableEventKinds
};
ir::CompiledPolicy StableEvent(const ir::CompiledPolicy& previous, int kind,
                               std::mt19937_64& rng);
const char* StableEventName(int kind);

// An IR whose ranges are the given single addresses (each with its identity and pod), and
// identity 0 for every other address of both families. Identities 0..max are declared.
struct Point {
  std::string address;  // "10.0.1.2", "fd00:1::2"
  uint32_t identity;
  std::string pod;      // "namespace/name" or empty
};
ir::CompiledPolicy IrFromPoints(const std::vector<Point>& points);

// `ir` with each identity's pods filled from the ranges that are a pod's address (as
// np::LowerToIr fills Identity.pods; RandomIr and IrFromPoints leave them empty).
ir::CompiledPolicy WithPods(ir::CompiledPolicy ir);

// `ir` with `unused` unused tables (tombstones) ahead of its own, which are renumbered from
// id `unused` (endpoints follow): a program whose tables spread over several dispatch chains
// (iptables.h kDispatchChainTables), and whose next new table (StableEvent: the lowest
// tombstone) lands in another one.
ir::CompiledPolicy WithTablesFrom(const ir::CompiledPolicy& ir, uint32_t unused);

// Seeded random pod events on a program with pods (WithPods), for update tests: one address
// range (two, one time in four) gets a random identity — mostly single addresses (pods); and
// a relabel into a class of its own: one pod's address gets a new identity, appended, which
// about half of the peer sets holding its old identity (one in four of the others) hold too.
ir::CompiledPolicy RandomChurnStep(const ir::CompiledPolicy& current, std::mt19937_64& rng);
ir::CompiledPolicy RandomRelabelStep(const ir::CompiledPolicy& current, std::mt19937_64& rng);

// [first, last] (network-order bytes of one family) as the fewest prefixes, e.g.
// {"10.0.0.0/9", ...}; the whole space is "0.0.0.0/0" / "::/0".
std::vector<std::string> CidrsOf(const std::string& first, const std::string& last);
// The address after `bytes` (wraps around at the end).
std::string NextAddress(std::string bytes);

// Pods x/a, x/b, x/c with identities 1, 2, 3 at the addresses BuildTopology gives them
// (10.0.<i+1>.2 and fd00:<i+1>::2); identity 0 is every other address.
std::vector<Point> ThreePods();
// A random IR over ThreePods: 4 random peer sets of identities 0-3, one table per pod with
// NetworkPolicy rules on TCP/UDP 80-81 where isolated, random tier rules
// (AddRandomTierRules), each pod selected 3 times in 4.
ir::CompiledPolicy RandomThreePodIr(uint64_t seed);

// The targeted tier scenario: pods x/a, x/b, x/c (indexes 0-2; 10.0.<i+1>.2 and
// fd00:<i+1>::2, identities 1-3, as BuildTopology makes them), each selected:
//   a ingress: admin Deny TCP 80 from b, Pass TCP 81 from b and c, Allow UDP 80-81 from c;
//     isolated, NetworkPolicy allows TCP 80 from b and c, TCP 81 from c, UDP 80 from b;
//     a baseline Deny (unreachable: isolated).
//   a egress: not isolated; baseline Allow TCP 80 to c, Deny TCP to b and c.
//   b ingress: isolated, nothing allowed; a baseline Allow-all (unreachable).
//   c ingress: not isolated; admin Pass of every protocol from a; baseline Deny UDP from a,
//     Deny every protocol from b.
ir::CompiledPolicy TierScenarioIr();
// Its verdicts for pod `from` -> pod `to`, written by hand from proto/compiled.proto's
// "Policy tiers" (not computed by np), for TCP and UDP on ports 80 and 81.
bool TierScenarioAllows(int from, int to, int protocol, int port);

// ---- Real packets (as root) -----------------------------------------------------------

// Runs argv (in `netns` when not empty); a gtest failure when it fails.
void Must(const std::vector<std::string>& argv, absl::string_view netns = "");

// Network namespaces named <prefix><pid>-<suffix>, deleted when the object goes. The
// environment's NP_TEST_NETNS_PREFIX, when set, replaces `prefix` (so that an engineer's
// runs carry their own letters).
class Namespaces {
 public:
  explicit Namespaces(absl::string_view prefix);
  ~Namespaces();
  std::string Add(absl::string_view suffix);

 private:
  std::string prefix_;
  std::vector<std::string> names_;
};

// Child processes started by the test, killed (by pid) and reaped when the object goes.
class Children {
 public:
  ~Children();
  void Add(pid_t p) { pids_.push_back(p); }

 private:
  std::vector<pid_t> pids_;
};

bool EnterNetns(const std::string& name);

// A pod: its namespace and addresses (pod i: 10.0.i.2 and fd00:i::2, routed via the node).
struct Pod {
  std::string name;  // "x/a"
  std::string netns;
  std::string v4, v6;
};

// The node namespace with forwarding on and one routed veth per pod.
struct Topology {
  std::string node;
  std::vector<Pod> pods;
};
void BuildTopology(Namespaces& ns, const std::vector<std::string>& pod_names, Topology& t);

// In each pod: TCP listeners and UDP echo on ports 80 and 81 (dual-stack sockets), for at
// most `seconds`.
void StartServers(const Topology& t, Children& children, int seconds);

struct Probe {
  int from, to;  // pod indexes
  bool v6;
  ir::Protocol protocol;
  int port;
};
// One probe in a child process inside the source pod: TCP connects, UDP gets its echo,
// within timeout_ms. Returns the child's pid; exit status 0 = connected.
pid_t StartProbe(const Topology& t, const Probe& p, int timeout_ms);
// Runs the probes in parallel; true = got through.
std::vector<bool> RunProbes(const Topology& t, const std::vector<Probe>& probes, int timeout_ms);
// Every ordered pair of different pods x IPv4/IPv6 x TCP/UDP x ports 80/81.
std::vector<Probe> AllProbes(const Topology& t);
// What the IR says of the probe (np::backends::IrAllows).
bool Expected(const ir::CompiledPolicy& ir, const Topology& t, const Probe& p);
// "x/a -> x/b IPv4 tcp/80".
std::string ProbeText(const Topology& t, const Probe& p);

// Pods x/a, x/b, x/c routed through a node namespace, with servers for `seconds`: all
// torn down (servers killed, namespaces deleted) when the object goes. `where` attaches a
// backend to the node.
struct ThreePodLab {
  ThreePodLab(absl::string_view netns_prefix, int seconds);
  Namespaces ns;
  Topology t;
  Children children;
  Attachment where;
};

// Explain's text for a probe (or its error), for failure messages.
std::string ExplainProbe(const Backend& backend, const ir::CompiledPolicy& ir, const Topology& t,
                         const Probe& p);
// The policy-tier checks on real packets, for any backend, on a BuildTopology of x/a, x/b,
// x/c with servers running: with nothing applied every probe gets through; the tier
// scenario gets TierScenarioAllows' verdicts; RandomThreePodIr(0..11) get IrAllows'. Leaves
// the last ruleset applied.
void ExpectTierVerdictsOnPackets(Backend& backend, const Attachment& where, const Topology& t);

}  // namespace np::backends::iptables::testutil

#endif  // NP_BACKENDS_IPTABLES_TEST_UTIL_H_
