// Address-range helpers shared by the IR lowerings (np/lower.cc, np/lower_delta.cc), so that
// the whole and the incremental lowering write byte-identical AddressRange fields.
// Private to np. Thread safety: pure functions.
#ifndef NP_INTERNAL_IR_RANGES_H_
#define NP_INTERNAL_IR_RANGES_H_

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "np/internal/engine_state.h"
#include "np/types.h"

namespace np::internal {

// `value` as 4 (family 0) or 16 network-order bytes.
inline std::string AddressBytes(U128 value, int family) {
  int n = family == 0 ? 4 : 16;
  std::string out(n, '\0');
  for (int i = 0; i < n; ++i) {
    out[n - 1 - i] = static_cast<char>(static_cast<uint8_t>(value >> (8 * i)));
  }
  return out;
}

// The inverse of AddressBytes (4 or 16 bytes).
inline U128 BytesValue(const std::string& bytes) {
  U128 v = 0;
  for (char c : bytes) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

inline IpAddress ToAddress(U128 value, int family) {
  if (family == 0) return IpAddress::V4(static_cast<uint32_t>(value));
  return IpAddress::V6(static_cast<uint64_t>(value >> 64), static_cast<uint64_t>(value));
}

inline U128 FamilyMax(int family) { return family == 0 ? U128{0xffffffffu} : ~U128{0}; }

// Appends IpPrefix(address, length).ToString() of an IPv6 `value` without temporaries
// (IpAddress::AppendTo): a pod event's delta lowering formats the prefixes of the IPv6 gaps
// around the pod, dozens each.
inline void AppendV6Prefix(U128 value, int length, std::string* out) {
  ToAddress(value, 1).AppendTo(out);
  out->push_back('/');
  if (length >= 100) out->push_back('1');
  if (length >= 10) out->push_back(static_cast<char>('0' + (length / 10) % 10));
  out->push_back(static_cast<char>('0' + length % 10));
}

// [first, last] as the fewest prefixes.
inline std::vector<std::string> ToCidrs(U128 first, U128 last, int family) {
  int width = family == 0 ? 32 : 128;
  std::vector<std::string> out;
  while (true) {
    // The largest block starting at `first` that stays within `last`.
    int host_bits = 0;
    while (host_bits < width) {
      U128 size = U128{1} << host_bits;  // host_bits < 128 here
      if ((first & size) != 0) break;    // `first` not aligned to the next size
      U128 end = first | ((size << 1) - 1);
      if (host_bits + 1 == 128) {
        if (last != ~U128{0}) break;
      } else if (end > last) {
        break;
      }
      ++host_bits;
    }
    if (family == 0) {
      // IpPrefix::ToString's text ("%d.%d.%d.%d/len"; `first` is the block's network), built
      // without its StrFormat: one of these per range was a visible share of LowerToIr.
      const uint32_t v = static_cast<uint32_t>(first);
      out.push_back(absl::StrCat(v >> 24, ".", (v >> 16) & 0xff, ".", (v >> 8) & 0xff, ".",
                                 v & 0xff, "/", width - host_bits));
    } else {
      out.emplace_back();
      AppendV6Prefix(first, width - host_bits, &out.back());
    }
    U128 span_end = host_bits == 128 ? ~U128{0} : first | ((U128{1} << host_bits) - 1);
    if (span_end >= last) break;
    first = span_end + 1;
  }
  return out;
}

}  // namespace np::internal

#endif  // NP_INTERNAL_IR_RANGES_H_
