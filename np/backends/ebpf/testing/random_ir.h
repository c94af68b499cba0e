// Test support for the eBPF backend: random compiled IRs (proto/compiled.proto), a literal
// interpreter of the IR (the same reading as np/lower_test.cc's), and crafted packets.
// The backend package may not depend on the engine, so its tests generate IRs directly.
//
// Thread safety: RandomIr and IrInterpreter are thread-compatible.
#ifndef NP_BACKENDS_EBPF_TESTING_RANDOM_IR_H_
#define NP_BACKENDS_EBPF_TESTING_RANDOM_IR_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "np/types.h"
#include "proto/compiled.pb.h"

namespace np::backends::ebpf::testing {

// A well-formed IR: a few pods of one node (IPv4, most also IPv6), ipBlock-like ranges,
// peer sets (some `all`), tables with disjoint port ranges of TCP/UDP/SCTP, and in many
// directions ordered Admin/Baseline tier rules (Allow, Deny, Pass; TCP/UDP/SCTP port ranges
// or every protocol) that overlap the NetworkPolicy rules and each other.
ir::CompiledPolicy RandomIr(uint64_t seed);
// A policy event on `ir` with its ids kept (as np::AlignNumbering leaves a new lowering:
// identities, peer sets and tables keep their numbers): 1..3 of — a table's port rules or tier rules changed,
// a direction's isolation flipped, a peer set's identities changed, a peer set appended and
// a rule pointed at it, a peer set made a tombstone (no rule names it, no identities), a
// table no endpoint names made a tombstone, a table appended that no endpoint names.
// Endpoints and address ranges stay: what Update may edit in place. `what` says which.
// The result passes CheckIr.
ir::CompiledPolicy PolicyEvent(const ir::CompiledPolicy& ir, uint64_t seed, std::string* what);

// The first seed the random tests use: $NP_TEST_SEED when set (to replay or widen a run,
// e.g. NP_TEST_SEED=5000 bazel test --test_env=NP_TEST_SEED ...), else 0. Failures name
// their seed.
uint64_t FirstSeed();

// x/a (10.0.0.1, fd00::1) is selected: its ingress allows TCP 80 and UDP 53 from x/b
// (10.0.0.2, fd00::2) only (no rule at all without `ingress_rules`); its egress is isolated
// with no rule unless `egress_open`. x/b is selected by nothing. Endpoint ids: a 0, b 1.
ir::CompiledPolicy TwoPods(bool egress_open = false, bool ingress_rules = true);

// Small IRs with policy-tier rules and flows whose verdicts are written by hand from
// proto/compiled.proto's "Policy tiers" (not computed by any code under test). Each starts
// from TwoPods (a = 10.0.0.1 selected, b = 10.0.0.2 not; peer set 0 = {b}, peer set 1 =
// every address); an outside address is 10.0.0.99.
struct TierFlow {
  const char* source;
  const char* destination;
  uint8_t protocol;  // 6, 17, 132, or 1 (ICMP echo)
  uint16_t port;
  bool allowed;
};
struct TierScenario {
  std::string name;
  ir::CompiledPolicy ir;
  std::vector<TierFlow> flows;
};
std::vector<TierScenario> TierScenarios();

// Addresses worth probing: pod IPs, the first and last address of each range, some others.
std::vector<IpAddress> ProbeAddresses(const ir::CompiledPolicy& ir, uint64_t seed);
// Ports worth probing: each rule's edges and their neighbours, 0, 65535.
std::vector<uint16_t> ProbePorts(const ir::CompiledPolicy& ir);

// The fewest prefixes covering [first, last] of one family, as "a.b.c.d/n" text.
std::vector<std::string> RangeCidrs(const IpAddress& first, const IpAddress& last);
// Appends the address range [first, last] (one family) with its identity and prefixes to
// the IR's ipv4 or ipv6 list.
ir::AddressRange* AddRange(ir::CompiledPolicy& ir, const IpAddress& first, const IpAddress& last,
                           uint32_t identity);

// The IR read literally: a side's decision is np::backends::SideAllows (tiers in order,
// NetworkPolicy, other protocols decided by the every-protocol tier rules only).
class IrInterpreter {
 public:
  explicit IrInterpreter(const ir::CompiledPolicy& ir);
  uint32_t IdentityOf(const IpAddress& a) const;
  const ir::Endpoint* EndpointOf(const IpAddress& a) const;
  int EndpointIndex(const IpAddress& a) const;  // -1: not a pod of the node
  bool DirectionAllows(const ir::DirectionPolicy& d, uint8_t protocol, uint16_t port,
                       uint32_t peer) const;
  bool Allowed(const IpAddress& src, const IpAddress& dst, uint8_t protocol,
               uint16_t port) const;

 private:
  const ir::CompiledPolicy& ir_;
  std::vector<std::pair<IpAddress, int>> endpoint_addresses_;  // parsed once
};

// Ethernet frames as the program sees them on a veth.
struct FrameSpec {
  IpAddress src, dst;
  uint8_t protocol = 6;
  uint16_t sport = 40000, dport = 80;  // host order
  uint8_t tcp_flags = 0x02;            // SYN
  uint8_t icmp_type = 8;               // when protocol is ICMP/ICMPv6
  uint16_t icmp_id = 1;
  // IPv4: fragment offset in 8-byte units and more-fragments; IPv6 adds a fragment header
  // when `fragment` is set.
  bool fragment = false;
  uint16_t frag_offset = 0;
  bool more_fragments = false;
  uint32_t frag_id = 7;
  // IPv6 extension headers before the transport header (or the fragment header), e.g.
  // {0, 60} = hop-by-hop then destination options.
  std::vector<uint8_t> ipv6_ext;
  std::string payload = "np";
  std::string inner;  // ICMP errors: the embedded IP packet (from Frame(...).substr(14))
};
std::string Frame(const FrameSpec& spec);
std::string ArpFrame();

}  // namespace np::backends::ebpf::testing

#endif  // NP_BACKENDS_EBPF_TESTING_RANDOM_IR_H_
