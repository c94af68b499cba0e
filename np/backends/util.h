// Small helpers shared by the backends: running the kernel tools and reading IR fields.
#ifndef NP_BACKENDS_UTIL_H_
#define NP_BACKENDS_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/backends/backend.h"
#include "proto/compiled.pb.h"

namespace np::backends {

// Runs argv (no shell), feeding `input` on stdin; returns stdout. Fails with stderr and the
// exit status in the message when the command fails. When `netns` is not empty the command
// runs inside that network namespace (`ip netns exec`).
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                       absl::string_view input = "",
                                       absl::string_view netns = "");

// 4 or 16 network-order bytes -> "10.0.0.1" / "fd00::1".
std::string AddressText(absl::string_view bytes);
// "10.0.0.1" / "fd00::1" -> 4 or 16 bytes; error if not an address.
absl::StatusOr<std::string> AddressBytes(absl::string_view text);

// A FlowQuery's two addresses as network-order bytes (4 or 16 each). Fails on text that is
// not an address, or on ends of different families (a packet has one family).
struct FlowAddresses {
  std::string source;
  std::string destination;
};
absl::StatusOr<FlowAddresses> ParseFlowAddresses(const FlowQuery& flow);

// The identity of an address per the IR's ranges (binary search); error if the IR has no
// range for that family (a malformed IR).
absl::StatusOr<uint32_t> IdentityOf(const ir::CompiledPolicy& ir, absl::string_view address_bytes);

// "TCP", "UDP", "SCTP" and the nft/iptables spelling "tcp", "udp", "sctp".
std::string ProtocolUpper(ir::Protocol protocol);
std::string ProtocolLower(ir::Protocol protocol);

}  // namespace np::backends

#endif  // NP_BACKENDS_UTIL_H_
