// Test helpers of the iptables backend: random and hand-made IRs, and the IR's verdict
// read literally (the same reading as np/lower_test.cc's interpreter).
#ifndef NP_BACKENDS_IPTABLES_TEST_UTIL_H_
#define NP_BACKENDS_IPTABLES_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "proto/compiled.pb.h"

namespace np::backends::iptables::testutil {

// A random, well-formed IR: identities, ranges partitioning both families (some of them
// single pod addresses in 10.0.0.0/24 and fd00::/120), peer sets, tables with disjoint
// sorted rules, endpoints (some unselected, some dual-stack).
ir::CompiledPolicy RandomIr(uint64_t seed);

// An IR whose ranges are the given single addresses (each with its identity and pod), and
// identity 0 for every other address of both families. Identities 0..max are declared.
struct Point {
  std::string address;  // "10.0.1.2", "fd00:1::2"
  uint32_t identity;
  std::string pod;      // "namespace/name" or empty
};
ir::CompiledPolicy IrFromPoints(const std::vector<Point>& points);

// [first, last] (network-order bytes of one family) as the fewest prefixes, e.g.
// {"10.0.0.0/9", ...}; the whole space is "0.0.0.0/0" / "::/0".
std::vector<std::string> CidrsOf(const std::string& first, const std::string& last);
// The address after `bytes` (wraps around at the end).
std::string NextAddress(std::string bytes);

// What the IR says of a new flow between two addresses (4 or 16 network-order bytes), for a
// flow between two different pods (a pod's traffic to itself never reaches FORWARD).
bool IrAllows(const ir::CompiledPolicy& ir, const std::string& src_bytes,
              const std::string& dst_bytes, ir::Protocol protocol, uint32_t port);

}  // namespace np::backends::iptables::testutil

#endif  // NP_BACKENDS_IPTABLES_TEST_UTIL_H_
