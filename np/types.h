// np/types.h — small value types shared by every part of np: protocols, directions,
// IP addresses and prefixes, port ranges.
//
//   absl::StatusOr<np::IpAddress> a = np::IpAddress::Parse("10.0.0.7");
//   absl::StatusOr<np::IpPrefix> p = np::IpPrefix::Parse("10.0.0.0/8");
//   bool in = p->Contains(*a);                      // true
//   absl::StatusOr<np::Protocol> tcp = np::ParseProtocol("TCP");
//
// Thread safety: plain values; const methods may be called from any thread.
#ifndef NP_TYPES_H_
#define NP_TYPES_H_

#include <array>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace np {

// The transport protocols NetworkPolicy can name. The numeric values are the IANA protocol
// numbers, so that backends can use them directly.
enum class Protocol : uint8_t { kTCP = 6, kUDP = 17, kSCTP = 132 };
inline constexpr std::array<Protocol, 3> kAllProtocols = {Protocol::kTCP, Protocol::kUDP,
                                                          Protocol::kSCTP};
// "TCP", "UDP", "SCTP".
absl::string_view ProtocolName(Protocol protocol);
// Accepts exactly the API's spelling ("TCP", "UDP", "SCTP"); with case_insensitive, also "tcp".
absl::StatusOr<Protocol> ParseProtocol(absl::string_view text, bool case_insensitive = false);
// 0, 1, 2 for TCP, UDP, SCTP: for arrays indexed by protocol.
inline int ProtocolIndex(Protocol p) {
  return p == Protocol::kTCP ? 0 : p == Protocol::kUDP ? 1 : 2;
}

// Ingress: traffic arriving at a pod. Egress: traffic leaving a pod.
enum class Direction : uint8_t { kIngress = 0, kEgress = 1 };
absl::string_view DirectionName(Direction direction);  // "Ingress", "Egress"

enum class AddressFamily : uint8_t { kNone = 0, kIPv4 = 4, kIPv6 = 6 };
absl::string_view AddressFamilyName(AddressFamily family);  // "none", "IPv4", "IPv6"

// An IPv4 or IPv6 address. IPv4 is stored in the low 32 bits of `lo`; IPv6 as two 64-bit
// halves in network order (hi holds the first 8 bytes). Ordered first by family.
class IpAddress {
 public:
  IpAddress() = default;  // IPv4 0.0.0.0
  static IpAddress V4(uint32_t host_order);
  static IpAddress V6(uint64_t hi, uint64_t lo);
  static IpAddress V6Bytes(const uint8_t bytes[16]);
  // Dotted quad or RFC 4291 text. IPv4-mapped IPv6 text ("::ffff:1.2.3.4") denotes the IPv4
  // address (1.2.3.4), as Go's net package — which the API server, kubelet and Go CNIs use —
  // reads it: every part of np that parses an address text goes through here, so one text has
  // one meaning everywhere (`was_v4_mapped`, when given, tells the caller it was written so).
  // Leading zeros in IPv4 octets ("010.0.0.1") are rejected unless `allow_leading_zeros`, in
  // which case they are read as decimal — the legacy ("sloppy") reading the API server still
  // tolerates in objects it stored before it became strict.
  static absl::StatusOr<IpAddress> Parse(absl::string_view text,
                                         bool allow_leading_zeros = false,
                                         bool* was_v4_mapped = nullptr);
  // True for an IPv6 address in ::ffff:0:0/96 (only built from bytes: Parse unmaps text).
  bool is_v4_mapped() const { return v6_ && hi_ == 0 && (lo_ >> 32) == 0xffff; }

  AddressFamily family() const { return v6_ ? AddressFamily::kIPv6 : AddressFamily::kIPv4; }
  bool is_v4() const { return !v6_; }
  bool is_v6() const { return v6_; }
  uint32_t v4() const { return static_cast<uint32_t>(lo_); }
  uint64_t hi() const { return hi_; }
  uint64_t lo() const { return lo_; }
  int bit_width() const { return v6_ ? 128 : 32; }
  // Bit i counted from the most significant (i < bit_width()).
  bool bit(int i) const;
  void ToBytes(uint8_t out[16]) const;  // IPv4: first 4 bytes
  std::string ToString() const;         // canonical text (RFC 5952 for IPv6)
  // Appends ToString()'s text to *out without a temporary string (the delta lowering
  // formats dozens of IPv6 prefixes per pod event).
  void AppendTo(std::string* out) const;

  friend bool operator==(const IpAddress& a, const IpAddress& b) {
    return a.v6_ == b.v6_ && a.hi_ == b.hi_ && a.lo_ == b.lo_;
  }
  friend bool operator!=(const IpAddress& a, const IpAddress& b) { return !(a == b); }
  friend bool operator<(const IpAddress& a, const IpAddress& b) {
    if (a.v6_ != b.v6_) return !a.v6_;
    if (a.hi_ != b.hi_) return a.hi_ < b.hi_;
    return a.lo_ < b.lo_;
  }
  template <typename H>
  friend H AbslHashValue(H h, const IpAddress& a) {
    return H::combine(std::move(h), a.v6_, a.hi_, a.lo_);
  }

 private:
  uint64_t hi_ = 0;
  uint64_t lo_ = 0;
  bool v6_ = false;
};

// An address prefix ("CIDR"). `Parse` keeps whatever host bits the text had in `address()`
// (the API server accepts "10.0.0.1/4" in existing objects); `network()` has them cleared,
// and matching always uses the cleared form. An IPv4-mapped prefix of length >= 96
// ("::ffff:10.0.0.0/104") is the IPv4 prefix it maps (10.0.0.0/8), as Go's net.IPNet
// matches it; a shorter one stays IPv6 (its network is no longer IPv4-mapped).
class IpPrefix {
 public:
  IpPrefix() = default;
  IpPrefix(IpAddress address, int length);
  // `written_length`, when given, receives the length as the text wrote it (128-based for
  // IPv6 text, even when the prefix is read as IPv4), which validation compares as Go does.
  static absl::StatusOr<IpPrefix> Parse(absl::string_view text, bool allow_leading_zeros = false,
                                        int* written_length = nullptr);

  const IpAddress& address() const { return address_; }  // as written
  IpAddress network() const;                             // host bits cleared
  int length() const { return length_; }
  AddressFamily family() const { return address_.family(); }
  bool has_host_bits() const { return !(address_ == network()); }
  bool Contains(const IpAddress& a) const;
  // True when every address of `inner` is in this prefix (same family).
  bool Contains(const IpPrefix& inner) const;
  std::string ToString() const;  // "network/length"

  friend bool operator==(const IpPrefix& a, const IpPrefix& b) {
    return a.length_ == b.length_ && a.network() == b.network();
  }

 private:
  IpAddress address_;
  int length_ = 0;
};

// An inclusive port range [first, last] within 0..65535.
struct PortRange {
  uint16_t first = 0;
  uint16_t last = 65535;
  bool Contains(uint16_t port) const { return first <= port && port <= last; }
  friend bool operator==(const PortRange& a, const PortRange& b) {
    return a.first == b.first && a.last == b.last;
  }
};

}  // namespace np

#endif  // NP_TYPES_H_
