#include "np/types.h"

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace np {

absl::string_view ProtocolName(Protocol protocol) {
  switch (protocol) {
    case Protocol::kTCP:
      return "TCP";
    case Protocol::kUDP:
      return "UDP";
    case Protocol::kSCTP:
      return "SCTP";
  }
  return "?";
}

absl::StatusOr<Protocol> ParseProtocol(absl::string_view text, bool case_insensitive) {
  std::string t(text);
  if (case_insensitive) absl::AsciiStrToUpper(&t);
  if (t == "TCP") return Protocol::kTCP;
  if (t == "UDP") return Protocol::kUDP;
  if (t == "SCTP") return Protocol::kSCTP;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported protocol \"", text, "\": must be one of TCP, UDP, SCTP"));
}

absl::string_view DirectionName(Direction direction) {
  return direction == Direction::kIngress ? "Ingress" : "Egress";
}

absl::string_view AddressFamilyName(AddressFamily family) {
  switch (family) {
    case AddressFamily::kNone:
      return "none";
    case AddressFamily::kIPv4:
      return "IPv4";
    case AddressFamily::kIPv6:
      return "IPv6";
  }
  return "?";
}

IpAddress IpAddress::V4(uint32_t host_order) {
  IpAddress a;
  a.lo_ = host_order;
  return a;
}

IpAddress IpAddress::V6(uint64_t hi, uint64_t lo) {
  IpAddress a;
  a.v6_ = true;
  a.hi_ = hi;
  a.lo_ = lo;
  return a;
}

IpAddress IpAddress::V6Bytes(const uint8_t bytes[16]) {
  uint64_t hi = 0, lo = 0;
  for (int i = 0; i < 8; ++i) hi = (hi << 8) | bytes[i];
  for (int i = 8; i < 16; ++i) lo = (lo << 8) | bytes[i];
  return V6(hi, lo);
}

namespace {

// Parses a dotted quad. Each octet is 1-3 decimal digits with value <= 255. With
// allow_leading_zeros, an octet may have any number of leading zeros ("0010" is 10), as Go's
// pre-1.17 net.ParseIP (Kubernetes' ParseIPSloppy) reads it.
bool ParseV4(absl::string_view text, bool allow_leading_zeros, uint32_t* out) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  if (parts.size() != 4) return false;
  uint32_t value = 0;
  for (absl::string_view part : parts) {
    if (part.empty() || (part.size() > 3 && !allow_leading_zeros)) return false;
    for (char c : part) {
      if (c < '0' || c > '9') return false;
    }
    if (part.size() > 1 && part[0] == '0' && !allow_leading_zeros) return false;
    int octet = 0;
    for (char c : part) {
      octet = octet * 10 + (c - '0');
      if (octet > 255) return false;
    }
    value = (value << 8) | static_cast<uint32_t>(octet);
  }
  *out = value;
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Parses RFC 4291 text form: up to 8 groups of 1-4 hex digits, at most one "::", and an
// optional trailing dotted quad that stands for the last two groups.
bool ParseV6(absl::string_view text, bool allow_leading_zeros, uint8_t out[16]) {
  if (text.empty()) return false;
  uint16_t groups[8] = {0};
  int count = 0;
  int gap = -1;  // index in groups where "::" stands
  size_t i = 0;
  if (text.size() >= 2 && text[0] == ':' && text[1] == ':') {
    gap = 0;
    i = 2;
    if (i == text.size()) {
      std::fill(out, out + 16, 0);
      return true;
    }
  } else if (text[0] == ':') {
    return false;
  }
  while (i < text.size()) {
    if (count == 8) return false;
    // A dotted quad may end the address.
    size_t end = text.find(':', i);
    absl::string_view piece = text.substr(i, end == absl::string_view::npos ? text.npos : end - i);
    if (piece.find('.') != absl::string_view::npos) {
      if (end != absl::string_view::npos || count > 6) return false;
      uint32_t v4;
      if (!ParseV4(piece, allow_leading_zeros, &v4)) return false;
      groups[count++] = static_cast<uint16_t>(v4 >> 16);
      groups[count++] = static_cast<uint16_t>(v4 & 0xffff);
      i = text.size();
      break;
    }
    // A group is 1-4 hex digits; the sloppy reading also takes longer groups whose value
    // fits in 16 bits ("00001"), as Go's pre-1.17 parser did.
    if (piece.empty() || (piece.size() > 4 && !allow_leading_zeros)) return false;
    uint32_t g = 0;
    for (char c : piece) {
      int h = HexValue(c);
      if (h < 0) return false;
      g = (g << 4) | static_cast<uint32_t>(h);
      if (g > 0xffff) return false;
    }
    groups[count++] = static_cast<uint16_t>(g);
    if (end == absl::string_view::npos) {
      i = text.size();
      break;
    }
    i = end + 1;
    if (i < text.size() && text[i] == ':') {
      if (gap >= 0) return false;  // a second "::"
      gap = count;
      ++i;
      if (i == text.size()) break;
    } else if (i == text.size()) {
      return false;  // trailing single ':'
    }
  }
  if (gap < 0 && count != 8) return false;
  if (gap >= 0 && count == 8) return false;  // "::" must stand for at least one group
  uint16_t full[8] = {0};
  if (gap < 0) {
    std::copy(groups, groups + 8, full);
  } else {
    int tail = count - gap;
    std::copy(groups, groups + gap, full);
    std::copy(groups + gap, groups + count, full + 8 - tail);
  }
  for (int g = 0; g < 8; ++g) {
    out[2 * g] = static_cast<uint8_t>(full[g] >> 8);
    out[2 * g + 1] = static_cast<uint8_t>(full[g] & 0xff);
  }
  return true;
}

}  // namespace

absl::StatusOr<IpAddress> IpAddress::Parse(absl::string_view text, bool allow_leading_zeros,
                                           bool* was_v4_mapped) {
  if (was_v4_mapped != nullptr) *was_v4_mapped = false;
  if (text.find(':') != absl::string_view::npos) {
    uint8_t bytes[16];
    if (ParseV6(text, allow_leading_zeros, bytes)) {
      IpAddress a = V6Bytes(bytes);
      if (!a.is_v4_mapped()) return a;
      if (was_v4_mapped != nullptr) *was_v4_mapped = true;
      return V4(static_cast<uint32_t>(a.lo()));
    }
  } else {
    uint32_t v4;
    if (ParseV4(text, allow_leading_zeros, &v4)) return V4(v4);
  }
  return absl::InvalidArgumentError(absl::StrCat("not a valid IP address: \"", text, "\""));
}

bool IpAddress::bit(int i) const {
  if (!v6_) return (static_cast<uint32_t>(lo_) >> (31 - i)) & 1;
  if (i < 64) return (hi_ >> (63 - i)) & 1;
  return (lo_ >> (127 - i)) & 1;
}

void IpAddress::ToBytes(uint8_t out[16]) const {
  if (!v6_) {
    uint32_t v = v4();
    for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
    return;
  }
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(hi_ >> (56 - 8 * i));
  for (int i = 0; i < 8; ++i) out[8 + i] = static_cast<uint8_t>(lo_ >> (56 - 8 * i));
}

std::string IpAddress::ToString() const {
  std::string out;
  AppendTo(&out);
  return out;
}

void IpAddress::AppendTo(std::string* out) const {
  if (!v6_) {
    uint32_t v = v4();
    absl::StrAppendFormat(out, "%d.%d.%d.%d", v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff,
                          v & 0xff);
    return;
  }
  uint16_t g[8];
  for (int i = 0; i < 4; ++i) g[i] = static_cast<uint16_t>(hi_ >> (48 - 16 * i));
  for (int i = 0; i < 4; ++i) g[4 + i] = static_cast<uint16_t>(lo_ >> (48 - 16 * i));
  // RFC 5952: lowercase hex groups without leading zeros; the longest run (length >= 2) of
  // zero groups, the first if tied, as "::". Written into a stack buffer, not a StrAppend
  // per group: the delta lowering formats dozens of prefixes per pod event, and the
  // per-group appends were two thirds of it (perf, bench/RESULTS.md h76).
  int best = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (g[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && g[j] == 0) ++j;
    if (j - i > best_len && j - i >= 2) {
      best = i;
      best_len = j - i;
    }
    i = j;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  char buffer[40];  // 8 groups of 4 and 7 colons: 39
  char* p = buffer;
  for (int i = 0; i < 8; ++i) {
    if (i == best) {
      *p++ = ':';
      *p++ = ':';
      i += best_len - 1;
      continue;
    }
    if (p != buffer && p[-1] != ':') *p++ = ':';
    const uint16_t v = g[i];
    int shift = v >= 0x1000 ? 12 : v >= 0x100 ? 8 : v >= 0x10 ? 4 : 0;
    for (; shift >= 0; shift -= 4) *p++ = kHex[(v >> shift) & 0xf];
  }
  out->append(buffer, p);
}

IpPrefix::IpPrefix(IpAddress address, int length) : address_(address), length_(length) {}

namespace {
IpAddress Masked(const IpAddress& a, int length) {
  if (a.is_v4()) {
    uint32_t mask = length == 0 ? 0 : ~uint32_t{0} << (32 - length);
    return IpAddress::V4(a.v4() & mask);
  }
  uint64_t hi_mask = length == 0 ? 0 : length >= 64 ? ~uint64_t{0} : ~uint64_t{0} << (64 - length);
  uint64_t lo_mask = length <= 64 ? 0 : length == 128 ? ~uint64_t{0} : ~uint64_t{0}
                                                                          << (128 - length);
  return IpAddress::V6(a.hi() & hi_mask, a.lo() & lo_mask);
}
}  // namespace

IpAddress IpPrefix::network() const { return Masked(address_, length_); }

absl::StatusOr<IpPrefix> IpPrefix::Parse(absl::string_view text, bool allow_leading_zeros,
                                         int* written_length) {
  size_t slash = text.find('/');
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat("not a valid CIDR: \"", text, "\""));
  };
  if (slash == absl::string_view::npos) return bad();
  bool mapped = false;
  absl::StatusOr<IpAddress> address =
      IpAddress::Parse(text.substr(0, slash), allow_leading_zeros, &mapped);
  if (!address.ok()) return bad();
  absl::string_view len_text = text.substr(slash + 1);
  // The sloppy reading (Go's pre-1.17 net.ParseCIDR) also takes leading zeros in the length.
  if (len_text.empty() || (len_text.size() > 3 && !allow_leading_zeros)) return bad();
  int length = 0;
  for (char c : len_text) {
    if (c < '0' || c > '9') return bad();
    length = length * 10 + (c - '0');
    if (length > 128) return bad();
  }
  if (len_text.size() > 1 && len_text[0] == '0' && !allow_leading_zeros) return bad();
  if (written_length != nullptr) *written_length = length;
  if (mapped) {
    // Written as IPv6: the length counts 128 bits. From 96 on, the network is the IPv4
    // prefix it maps; below, the network leaves ::ffff:0:0/96 and is an IPv6 prefix.
    if (length >= 96) return IpPrefix(*address, length - 96);
    uint8_t bytes[16] = {0};
    bytes[10] = bytes[11] = 0xff;
    uint32_t v4 = address->v4();
    for (int i = 0; i < 4; ++i) bytes[12 + i] = static_cast<uint8_t>(v4 >> (24 - 8 * i));
    return IpPrefix(IpAddress::V6Bytes(bytes), length);
  }
  if (length > address->bit_width()) return bad();
  return IpPrefix(*address, length);
}

bool IpPrefix::Contains(const IpAddress& a) const {
  if (a.family() != family()) return false;
  return Masked(a, length_) == network();
}

bool IpPrefix::Contains(const IpPrefix& inner) const {
  if (inner.family() != family() || inner.length_ < length_) return false;
  return Contains(inner.network());
}

std::string IpPrefix::ToString() const {
  return absl::StrCat(network().ToString(), "/", length_);
}

}  // namespace np
