#include "np/backends/ebpf/maps.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "np/backends/util.h"
#include "np/types.h"

namespace np::backends::ebpf {
namespace {

// Whether an IR peer set is every address (ir::PeerSet::all), by number.
using PeerSetAll = absl::FunctionRef<bool(uint32_t)>;

std::string Bytes(const void* p, size_t n) {
  return std::string(static_cast<const char*>(p), n);
}

std::string AddrText(uint8_t family, const uint8_t* addr) {
  if (family == NP_FAMILY_V4) {
    return IpAddress::V4((uint32_t{addr[0]} << 24) | (uint32_t{addr[1]} << 16) |
                         (uint32_t{addr[2]} << 8) | addr[3])
        .ToString();
  }
  return IpAddress::V6Bytes(addr).ToString();
}

// Keeps the first `bits` bits of `bytes`.
std::string Masked(std::string bytes, int bits) {
  for (size_t i = 0; i < bytes.size(); ++i) {
    int keep = bits - static_cast<int>(i) * 8;
    if (keep >= 8) continue;
    uint8_t mask = keep <= 0 ? 0 : static_cast<uint8_t>(0xff << (8 - keep));
    bytes[i] = static_cast<char>(static_cast<uint8_t>(bytes[i]) & mask);
  }
  return bytes;
}

std::string IdentityLabel(const ir::CompiledPolicy& ir, uint32_t identity) {
  if (identity >= static_cast<uint32_t>(ir.identities_size())) return absl::StrCat(identity);
  const ir::Identity& id = ir.identities(identity);
  std::string label;
  if (id.pods_size() > 0) {
    label = EscapeText(id.pods(0));
    if (id.pods_size() > 1) absl::StrAppend(&label, " +", id.pods_size() - 1);
  }
  if (id.external()) absl::StrAppend(&label, label.empty() ? "" : ", ", "external");
  return label.empty() ? absl::StrCat(identity) : absl::StrCat(identity, " (", label, ")");
}

uint16_t PortOf(__be16 port) {
  const auto* b = reinterpret_cast<const uint8_t*>(&port);
  return static_cast<uint16_t>((b[0] << 8) | b[1]);
}

__be16 NetworkPort(uint16_t port) {
  __be16 out;
  const uint8_t be[2] = {static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port)};
  std::memcpy(&out, be, 2);
  return out;
}

// "1024/6 (1024-2047)" for `bits` prefix bits of a port.
std::string PortPrefixText(uint16_t port, int bits) {
  if (bits == 0) return "*";
  if (bits == 16) return absl::StrCat(port);
  return absl::StrCat(port, "/", bits, " (", port, "-", port + (uint32_t{1} << (16 - bits)) - 1,
                      ")");
}

std::string PortKeyText(const np_port_key& k) {
  return absl::StrCat("table ", k.table, " ", DirectionName(k.direction), " ",
                      ProtocolName(k.protocol), " ",
                      PortPrefixText(PortOf(k.port),
                                     static_cast<int>(k.prefixlen) - NP_PORT_KEY_FIXED_PREFIX));
}

std::string TierName(uint8_t tier) { return tier == NP_TIER_ADMIN ? "admin" : "baseline"; }

std::string ActionName(uint8_t action) {
  switch (action) {
    case NP_TIER_ALLOW:
      return "Allow";
    case NP_TIER_DENY:
      return "Deny";
    case NP_TIER_PASS:
      return "Pass";
    default:
      return absl::StrCat("action ", action);
  }
}

std::string TierKeyText(const np_tier_key& k) {
  const std::string ports =
      k.protocol == NP_TIER_PROTO_OTHER
          ? "other protocols"
          : absl::StrCat(ProtocolName(k.protocol), " ",
                         PortPrefixText(PortOf(k.port), static_cast<int>(k.prefixlen) -
                                                            NP_TIER_KEY_FIXED_PREFIX));
  return absl::StrCat("table ", k.table, " ", DirectionName(k.direction), " ",
                      TierName(k.tier), " ", ports);
}

np_tier_key TierKey(uint32_t table, uint8_t direction, uint8_t tier, uint8_t protocol,
                    uint16_t port, int port_bits) {
  np_tier_key k{};
  k.prefixlen = static_cast<uint32_t>(NP_TIER_KEY_FIXED_PREFIX + port_bits);
  k.table = table;
  k.direction = direction;
  k.tier = tier;
  k.protocol = protocol;
  k.port = NetworkPort(port);
  return k;
}

bool SameRules(const std::vector<np_tier_rule>& a, const std::vector<np_tier_rule>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(np_tier_rule)) == 0);
}

// The rules of one tier that match `protocol` (NP_TIER_PROTO_OTHER: a protocol without
// ports) at destination `port`, as the program's ordered list. A rule whose peer set an
// earlier entry already has can never decide (the earlier one matches the same packets
// first), nor can anything after a rule for every peer: both are left out.
std::vector<np_tier_rule> TierList(PeerSetAll all_peers,
                                   const google::protobuf::RepeatedPtrField<ir::TierRule>& rules,
                                   uint8_t protocol, uint32_t port) {
  std::vector<np_tier_rule> out;
  std::set<uint32_t> seen;
  for (const ir::TierRule& rule : rules) {
    if (rule.protocol() != ir::PROTOCOL_UNSPECIFIED) {
      if (static_cast<int>(rule.protocol()) != protocol) continue;
      if (port < rule.first_port() || port > rule.last_port()) continue;
    }
    if (!seen.insert(rule.peer_set()).second) continue;
    const bool all = all_peers(rule.peer_set());
    np_tier_rule entry{};
    entry.peer_set = rule.peer_set();
    entry.action = static_cast<uint8_t>(rule.action());
    entry.flags = all ? NP_PEERS_ALL : 0;
    out.push_back(entry);
    if (all) break;
  }
  return out;
}

// np_tiers entries of one (table, direction, tier): every protocol and port covered (see
// np_abi.h), adjacent port pieces with the same list merged before they become prefixes.
void AddTierEntries(PeerSetAll all_peers, uint32_t table, uint8_t direction,
                    uint8_t tier, const google::protobuf::RepeatedPtrField<ir::TierRule>& rules,
                    MapContents& m, std::set<uint32_t>& member_sets,
                    std::map<std::string, uint32_t>& list_ids) {
  auto add = [&](const np_tier_key& k, const std::vector<np_tier_rule>& list) {
    std::string bytes(reinterpret_cast<const char*>(list.data()),
                      list.size() * sizeof(np_tier_rule));
    auto [it, fresh] = list_ids.emplace(std::move(bytes), m.tier_lists.size());
    if (fresh) {
      np_tier_value& v = m.tier_lists.emplace_back();
      v.count = static_cast<uint32_t>(list.size());
      std::memcpy(v.rules, list.data(),
                  std::min<size_t>(list.size(), NP_TIER_MAX_RULES) * sizeof(np_tier_rule));
      for (const np_tier_rule& r : list) {
        if (!(r.flags & NP_PEERS_ALL)) member_sets.insert(r.peer_set);
      }
      m.longest_tier_list = std::max(m.longest_tier_list, list.size());
    }
    m.tiers.emplace_back(k, np_tier_ref{it->second});
  };
  add(TierKey(table, direction, tier, NP_TIER_PROTO_OTHER, 0, 0),
      TierList(all_peers, rules, NP_TIER_PROTO_OTHER, 0));
  for (uint8_t protocol : {uint8_t{6}, uint8_t{17}, uint8_t{132}}) {
    std::set<uint32_t> cuts = {0, 65536};
    for (const ir::TierRule& rule : rules) {
      if (static_cast<int>(rule.protocol()) != protocol) continue;
      cuts.insert(rule.first_port());
      cuts.insert(rule.last_port() + 1);
    }
    std::vector<uint32_t> starts(cuts.begin(), cuts.end());  // ends with 65536
    size_t piece = 0;
    while (piece + 1 < starts.size()) {
      std::vector<np_tier_rule> list = TierList(all_peers, rules, protocol, starts[piece]);
      size_t end = piece + 1;
      while (end + 1 < starts.size() &&
             SameRules(TierList(all_peers, rules, protocol, starts[end]), list)) {
        ++end;
      }
      for (auto [port, bits] : PortPrefixes(starts[piece], starts[end] - 1)) {
        add(TierKey(table, direction, tier, protocol, port, bits), list);
      }
      piece = end;
    }
  }
}

// Table `index`'s entries (np_tables value, np_tiers, np_ports, new tier lists) appended to
// `m`: the peer sets named without NP_PEERS_ALL go to `member_sets`, `list_ids` shares
// equal tier lists between tables. `table` must be well formed (CheckTable).
void AppendTable(const ir::Table& table, uint32_t index, PeerSetAll all_peers, MapContents& m,
                 std::set<uint32_t>& member_sets, std::map<std::string, uint32_t>& list_ids) {
  np_table value{};
  value.isolated[NP_DIR_INGRESS] = table.ingress().isolated() ? 1 : 0;
  value.isolated[NP_DIR_EGRESS] = table.egress().isolated() ? 1 : 0;
  for (uint8_t dir : {uint8_t{NP_DIR_INGRESS}, uint8_t{NP_DIR_EGRESS}}) {
    const ir::DirectionPolicy& d = dir == NP_DIR_INGRESS ? table.ingress() : table.egress();
    if (d.admin_size() > 0) {
      value.tiers[dir] |= NP_TABLE_HAS_ADMIN;
      AddTierEntries(all_peers, index, dir, NP_TIER_ADMIN, d.admin(), m, member_sets, list_ids);
    }
    if (d.baseline_size() > 0) {
      value.tiers[dir] |= NP_TABLE_HAS_BASELINE;
      AddTierEntries(all_peers, index, dir, NP_TIER_BASELINE, d.baseline(), m, member_sets,
                     list_ids);
    }
  }
  if (m.tables.size() <= index) m.tables.resize(index + 1);
  m.tables[index] = value;
  for (uint8_t dir : {uint8_t{NP_DIR_INGRESS}, uint8_t{NP_DIR_EGRESS}}) {
    const ir::DirectionPolicy& d = dir == NP_DIR_INGRESS ? table.ingress() : table.egress();
    for (const ir::PortRule& rule : d.rules()) {
      const bool all = all_peers(rule.peer_set());
      np_port_value v{rule.peer_set(), all ? uint32_t{NP_PEERS_ALL} : 0u};
      if (!all) member_sets.insert(rule.peer_set());
      for (auto [port, len] : PortPrefixes(rule.first_port(), rule.last_port())) {
        np_port_key k{};
        k.prefixlen = static_cast<uint32_t>(NP_PORT_KEY_FIXED_PREFIX + len);
        k.table = index;
        k.direction = dir;
        k.protocol = static_cast<uint8_t>(rule.protocol());
        k.port = NetworkPort(port);
        m.ports.emplace_back(k, v);
      }
    }
  }
}

}  // namespace

std::string DirectionName(uint8_t direction) {
  return direction == NP_DIR_INGRESS ? "ingress" : "egress";
}

std::string ProtocolName(uint8_t protocol) {
  switch (protocol) {
    case 6:
      return "TCP";
    case 17:
      return "UDP";
    case 132:
      return "SCTP";
    default:
      return absl::StrCat("proto ", protocol);
  }
}

std::vector<std::pair<uint16_t, int>> PortPrefixes(uint32_t first, uint32_t last) {
  std::vector<std::pair<uint16_t, int>> out;
  while (first <= last) {
    int k = 0;  // block of 2^k ports starting at `first`
    while (k < 16 && (first & ((uint32_t{2} << k) - 1)) == 0 &&
           first + (uint32_t{2} << k) - 1 <= last) {
      ++k;
    }
    out.emplace_back(static_cast<uint16_t>(first), 16 - k);
    first += uint32_t{1} << k;
  }
  return out;
}

namespace {

using Address = unsigned __int128;

Address AddressOf(const uint8_t* bytes, int n) {
  Address a = 0;
  for (int i = 0; i < n; ++i) a = (a << 8) | bytes[i];
  return a;
}
Address AddressOf(const std::string& bytes) {
  return AddressOf(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size()));
}

// Whether a range of the IR holds one address: its identity is a host key's
// (np_ident_hosts, np_ident_hosts6), which the program looks up before the LPM trie.
bool IsHost(const ir::AddressRange& r) { return r.first() == r.last(); }

// The host key of a range of a family (0: IPv4, 1: IPv6) appended to `m` when it holds one
// address (the ranges of a program that was installed need no other check).
void AppendHostEntry(const ir::AddressRange& r, int family, MapContents& m) {
  if (!IsHost(r)) return;
  np_endpoint_addr_key k{};
  k.family = family == 0 ? NP_FAMILY_V4 : NP_FAMILY_V6;
  std::memcpy(k.addr, r.first().data(), std::min(r.first().size(), sizeof(k.addr)));
  m.ident_hosts.emplace_back(k, np_identity_value{r.identity()});
}

// ranges[i] of a family (0: IPv4, 1: IPv6) checked (its CIDRs tile it), and its host key
// appended to `m` when it holds one address. The LPM keys are the segments' (AppendSegments).
absl::Status AppendRangeEntries(const ir::AddressRange& r, int family, int i, MapContents& m) {
  const size_t n = family == 0 ? 4 : 16;
  // Only an error names the range: a pod event encodes a few ranges per family, and
  // formatting two addresses each time was a third of the encoding's time.
  auto where = [&] {
    return absl::StrCat("malformed IR: ", family == 0 ? "ipv4" : "ipv6", "[", i, "] ",
                        AddressText(r.first()), "-", AddressText(r.last()));
  };
  // The maps hold the range as its CIDRs, which must tile it exactly, in order: a gap
  // would leave addresses without an identity, an overlap would be a duplicate key.
  if (r.cidrs().empty() || r.first().size() != n || r.last().size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat(where(), ": no CIDR decomposition, or not addresses of the family"));
  }
  // Compared as bytes in place: strings for each CIDR's bounds were a fifth of a node-0 pod
  // add's planning at 1,000 pods (IPv6 ranges hold up to ~250 CIDRs).
  const auto* last = reinterpret_cast<const uint8_t*>(r.last().data());
  uint8_t next[16];  // where the next CIDR must start
  std::memcpy(next, r.first().data(), n);
  for (int c = 0; c < r.cidrs_size(); ++c) {
    const std::string& text = r.cidrs(c);
    absl::StatusOr<IpPrefix> prefix = IpPrefix::Parse(text);
    if (!prefix.ok() || (prefix->family() == AddressFamily::kIPv4) != (family == 0)) {
      return absl::InvalidArgumentError(absl::StrCat(where(), ": bad CIDR \"", EscapeText(text), "\""));
    }
    uint8_t low[16], high[16];
    prefix->network().ToBytes(low);
    std::memcpy(high, low, n);
    for (size_t b = 0; b < n; ++b) {
      int keep = prefix->length() - static_cast<int>(b) * 8;
      if (keep >= 8) continue;
      high[b] |= keep <= 0 ? 0xff : static_cast<uint8_t>(0xff >> keep);
    }
    const bool last_piece = c + 1 == r.cidrs_size();
    if (std::memcmp(low, next, n) != 0 || std::memcmp(high, last, n) > 0 ||
        (last_piece && std::memcmp(high, last, n) != 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), ": its CIDRs do not tile it in order (at ", text, ")"));
    }
    std::memcpy(next, high, n);
    for (int b = static_cast<int>(n) - 1; b >= 0; --b) {  // the address after `high`
      if (++next[b] != 0) break;
    }
  }
  AppendHostEntry(r, family, m);
  return absl::OkStatus();
}

// One family's ranges as the segment functions below read them: `base` with the slice
// [begin, end) replaced by `with` (nothing replaced: begin == end, `with` empty).
struct RangeView {
  const google::protobuf::RepeatedPtrField<ir::AddressRange>* base = nullptr;
  int begin = 0, end = 0;
  std::vector<const ir::AddressRange*> with;

  int size() const { return base->size() - (end - begin) + static_cast<int>(with.size()); }
  const ir::AddressRange& operator[](int i) const {
    if (i < begin) return (*base)[i];
    const int w = static_cast<int>(with.size());
    if (i < begin + w) return *with[static_cast<size_t>(i - begin)];
    return (*base)[i - w + (end - begin)];
  }
};

// The fewest CIDRs of [lo, hi] (addresses of `width_bits`), as LPM keys of `identity`.
void AppendCover(Address lo, Address hi, int width_bits, uint32_t identity, MapContents& m) {
  auto mask = [](int bits) { return bits >= 128 ? ~Address{0} : (Address{1} << bits) - 1; };
  for (;;) {
    int bits = 0;  // the largest block aligned at lo that ends by hi
    while (bits < width_bits && ((lo >> bits) & 1) == 0 && mask(bits + 1) <= hi - lo) ++bits;
    uint8_t bytes[16] = {};
    Address rest = lo;
    for (int i = width_bits / 8 - 1; i >= 0; --i) {
      bytes[i] = static_cast<uint8_t>(rest & 0xff);
      rest >>= 8;
    }
    const uint32_t prefixlen = static_cast<uint32_t>(width_bits - bits);
    if (width_bits == 32) {
      np_lpm4_key k{};
      k.prefixlen = prefixlen;
      std::memcpy(k.addr, bytes, 4);
      m.ident4.emplace_back(k, np_identity_value{identity});
    } else {
      np_lpm6_key k{};
      k.prefixlen = prefixlen;
      std::memcpy(k.addr, bytes, 16);
      m.ident6.emplace_back(k, np_identity_value{identity});
    }
    if (hi - lo == mask(bits)) return;
    lo += mask(bits) + 1;
  }
}

// The LPM tries hold SEGMENTS, not ranges: a pod added into a range (or deleted from it)
// splits it in three (merges three) in the IR, and re-covering the two pieces with CIDRs
// rewrote ~2 x width keys per family (~130 per pod event at 1,000 pods), where the pod's
// own host key, looked up first, is all that changes for a packet. A segment is a maximal
// run of ranges whose multi-address ranges all have one identity (single-address ranges,
// the host keys, are transparent: each one's identity is its host key's); it spans from
// the address after the previous segment's last multi-address range to its own last one's
// end (the single-address ranges between two segments belong to the later one; the last
// segment runs to the end of the family). So the segments tile the address space, as the
// ranges do, each address's LPM answer is the identity of the nearest multi-address ranges
// around it, and a pod that comes or goes inside a segment writes its host key alone.
// Appends the LPM keys of the segments of v[lo, hi), which must begin and end at segment
// boundaries (SegmentWindow).
void AppendSegments(const RangeView& v, int lo, int hi, int family, MapContents& m) {
  const int width_bits = family == 0 ? 32 : 128;
  bool open = false;
  uint32_t identity = 0;
  Address start = 0, last_end = 0;
  for (int i = lo; i < hi; ++i) {
    const ir::AddressRange& r = v[i];
    if (IsHost(r)) continue;
    if (!open) {
      start = AddressOf(v[lo].first());
    } else if (r.identity() != identity) {
      AppendCover(start, last_end, width_bits, identity, m);
      start = last_end + 1;
    }
    open = true;
    identity = r.identity();
    last_end = AddressOf(r.last());
  }
  if (open) AppendCover(start, AddressOf(v[hi - 1].last()), width_bits, identity, m);
}

// The run of segments around `base`[begin, end) (replaced in another view by other ranges
// over the same addresses): [*lo, *hi) of `base`, widened to the nearest segment boundaries
// that stay boundaries whatever the slice holds. Left: past the single-address ranges and
// the multi-address ranges of the nearest one's identity to one of another identity (the
// boundary after it does not depend on the slice), else the start. Right: past the
// single-address ranges to the next multi-address range N, then on while ranges are
// single-address or of N's identity: the boundary after the last of those is the slice's
// no more (the range after it has another identity), else the end. Walks the ranges next to
// the slice: O(the segments' ranges around it).
void SegmentWindow(const google::protobuf::RepeatedPtrField<ir::AddressRange>& base, int begin,
                   int end, int* lo, int* hi) {
  const int n = base.size();
  int i = begin - 1;
  while (i >= 0 && IsHost(base[i])) --i;
  if (i >= 0) {
    const uint32_t identity = base[i].identity();
    while (i >= 0 && (IsHost(base[i]) || base[i].identity() == identity)) --i;
  }
  *lo = i + 1;
  int j = end;
  while (j < n && IsHost(base[j])) ++j;
  if (j < n) {
    const uint32_t identity = base[j].identity();
    int last = j;
    while (j < n && (IsHost(base[j]) || base[j].identity() == identity)) {
      if (!IsHost(base[j])) last = j;
      ++j;
    }
    *hi = j < n ? last + 1 : n;
  } else {
    *hi = n;
  }
}

// The LPM keys of the segments that replacing `base`[begin, end) by `with` (ranges over the
// same addresses) can change: before, appended to `old_window`, and after, to `new_window`.
void AppendChangedSegments(const google::protobuf::RepeatedPtrField<ir::AddressRange>& base,
                           int begin, int end, std::vector<const ir::AddressRange*> with,
                           int family, MapContents& old_window, MapContents& new_window) {
  // Most events leave every segment as it was (a pod inside one). Runs of one identity
  // among the multi-address ranges (single-address ones skipped) say so: segment
  // boundaries are where one run ends and the next begins, and the segment of a
  // single-address range is the run it is in or before.
  struct Run {
    uint32_t identity;
    const std::string* last;
  };
  auto add = [](std::vector<Run>& runs, const ir::AddressRange& r) {
    if (IsHost(r)) return;
    if (!runs.empty() && runs.back().identity == r.identity()) {
      runs.back().last = &r.last();
    } else {
      runs.push_back(Run{r.identity(), &r.last()});
    }
  };
  // The same identities, and the same ends but for the last run when `open_end` (it goes
  // on past the ranges compared, the same on both sides).
  auto same_runs = [](const std::vector<Run>& a, const std::vector<Run>& b, bool open_end) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i].identity != b[i].identity) return false;
      if ((i + 1 < a.size() || !open_end) && *a[i].last != *b[i].last) return false;
    }
    return true;
  };
  const int n = base.size();
  // The nearest multi-address ranges before and after the slice (past single-address
  // ranges only: the pods around it), found when needed: a walk of those pods.
  auto before_slice = [&] {
    int p = begin - 1;
    while (p >= 0 && IsHost(base[p])) --p;
    return p;
  };
  auto after_slice = [&] {
    int q = end;
    while (q < n && IsHost(base[q])) ++q;
    return q;
  };
  // What the trie answers at the slices' single addresses, which gain or lose a host key
  // (DiffIdentityEntries compares identities) when the segments stay (`runs`: from the
  // first that can hold one to the last): full-length keys, the same on both sides, so the
  // plan writes none of them.
  auto answers = [&](const std::vector<Run>& runs) {
    if (runs.empty()) return;  // no multi-address range: nothing gains or loses a host key
    auto answer = [&](const ir::AddressRange& r) {
      if (!IsHost(r)) return;
      size_t i = 0;
      while (i + 1 < runs.size() && *runs[i].last < r.first()) ++i;
      const Address a = AddressOf(r.first());
      for (MapContents* w : {&old_window, &new_window}) {
        AppendCover(a, a, family == 0 ? 32 : 128, runs[i].identity, *w);
      }
    };
    for (int i = begin; i < end; ++i) answer(base[i]);
    for (const ir::AddressRange* r : with) answer(*r);
  };
  std::vector<Run> old_runs, new_runs;
  for (int i = begin; i < end; ++i) add(old_runs, base[i]);
  for (const ir::AddressRange* r : with) add(new_runs, *r);
  // The slices' own runs alike: whatever P and N are, they merge alike on both sides. An
  // address that gains or loses a host key is in a multi-address range on the other side,
  // so within the span of the slice's runs: no walk.
  if (same_runs(old_runs, new_runs, /*open_end=*/false)) {
    answers(old_runs);
    return;
  }
  // Else with P and N: the same runs from P to N (N's run goes on past N on both sides),
  // the same boundaries there, and outside they are the ranges' outside the slice.
  {
    const int p = before_slice(), q = after_slice();
    std::vector<Run> old_pn, new_pn;
    for (std::vector<Run>* runs : {&old_pn, &new_pn}) {
      if (p >= 0) add(*runs, base[p]);
      for (const Run& r : runs == &old_pn ? old_runs : new_runs) {
        if (!runs->empty() && runs->back().identity == r.identity) {
          runs->back().last = r.last;
        } else {
          runs->push_back(r);
        }
      }
      if (q < n) add(*runs, base[q]);
    }
    if (same_runs(old_pn, new_pn, /*open_end=*/true)) {
      answers(old_pn);
      return;
    }
  }
  int lo = 0, hi = 0;
  SegmentWindow(base, begin, end, &lo, &hi);
  RangeView before, after;
  before.base = after.base = &base;
  after.begin = begin;
  after.end = end;
  after.with = std::move(with);
  const int shift = static_cast<int>(after.with.size()) - (end - begin);
  MapContents old_keys, new_keys;
  AppendSegments(before, lo, hi, family, old_keys);
  AppendSegments(after, lo, hi + shift, family, new_keys);
  auto same_keys = [](const auto& a, const auto& b) {
    return a.size() == b.size() &&
           (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
  };
  const bool same = family == 0 ? same_keys(old_keys.ident4, new_keys.ident4)
                                : same_keys(old_keys.ident6, new_keys.ident6);
  for (MapContents* w : {&old_window, &new_window}) {
    const MapContents& keys = w == &old_window ? old_keys : new_keys;
    w->ident4.insert(w->ident4.end(), keys.ident4.begin(), keys.ident4.end());
    w->ident6.insert(w->ident6.end(), keys.ident6.begin(), keys.ident6.end());
    if (same) continue;
    // The trie changes: the host keys of the window outside the slice (the same on both
    // sides) go along, so that the plan sees which addresses they keep answering for
    // (DiffIdentityEntries).
    for (int i = lo; i < hi; ++i) {
      if (i == begin) i = end;
      if (i >= hi) break;
      if (IsHost(base[i])) {
        np_endpoint_addr_key k{};
        k.family = family == 0 ? NP_FAMILY_V4 : NP_FAMILY_V6;
        std::memcpy(k.addr, base[i].first().data(), base[i].first().size());
        w->ident_hosts.emplace_back(k, np_identity_value{base[i].identity()});
      }
    }
  }
}

}  // namespace

uint32_t RangeIdentity(const google::protobuf::RepeatedPtrField<ir::AddressRange>& ranges,
                       const IpAddress& address) {
  uint8_t bytes[16] = {};
  address.ToBytes(bytes);
  const std::string key(reinterpret_cast<const char*>(bytes), address.is_v4() ? 4 : 16);
  // The last range that starts at or before the address.
  auto it = std::upper_bound(ranges.begin(), ranges.end(), key,
                             [](const std::string& k, const ir::AddressRange& r) {
                               return k < r.first();
                             });
  if (it == ranges.begin()) return NP_IDENTITY_NONE;
  --it;
  return key <= it->last() ? it->identity() : NP_IDENTITY_NONE;
}

namespace {
// An endpoint's state from its selection and table (`value`: NP_ENDPOINT_SELECTED, table) and
// its addresses.
np_endpoint_state StateOf(const np_endpoint& value, const std::vector<IpAddress>& addresses,
                          const std::function<uint32_t(const IpAddress&)>& identity_of) {
  np_endpoint_state st{};
  if (value.flags & NP_ENDPOINT_SELECTED) {
    st.table = value.table;
    st.flags = NP_ENDPOINT_SELECTED;
  }
  st.identity[0] = st.identity[1] = NP_IDENTITY_NONE;
  bool seen[2] = {false, false};
  for (const IpAddress& a : addresses) {
    const int f = a.is_v4() ? 0 : 1;
    const uint32_t identity = identity_of(a);
    st.identity[f] = seen[f] && st.identity[f] != identity ? NP_IDENTITY_BY_ADDRESS : identity;
    seen[f] = true;
  }
  return st;
}

IpAddress AddressOfKey(const np_endpoint_addr_key& k) {
  if (k.family == NP_FAMILY_V6) return IpAddress::V6Bytes(k.addr);
  return IpAddress::V4((uint32_t{k.addr[0]} << 24) | (uint32_t{k.addr[1]} << 16) |
                       (uint32_t{k.addr[2]} << 8) | k.addr[3]);
}
}  // namespace

np_endpoint_state EndpointState(const ir::Endpoint& e,
                                const std::function<uint32_t(const IpAddress&)>& identity_of) {
  np_endpoint value{};
  if (e.selected()) {
    value.table = e.table();
    value.flags = NP_ENDPOINT_SELECTED;
  }
  std::vector<IpAddress> addresses;
  for (const std::string& ip : e.ips()) {
    if (absl::StatusOr<IpAddress> a = IpAddress::Parse(ip); a.ok()) addresses.push_back(*a);
  }
  return StateOf(value, addresses, identity_of);
}

np_endpoint_states BothBanks(const np_endpoint_state& state) {
  np_endpoint_states v{};
  v.bank[0] = v.bank[1] = state;
  return v;
}

absl::StatusOr<MapContents> BuildMaps(const ir::CompiledPolicy& ir, uint32_t generation) {
  if (absl::Status s = CheckIr(ir); !s.ok()) return s;
  MapContents m;
  m.config.generation = generation;
  m.config.flags = ir.always_allow_self() ? NP_CONFIG_ALLOW_SELF : 0;
  for (int family = 0; family < 2; ++family) {
    const auto& ranges = family == 0 ? ir.ipv4() : ir.ipv6();
    for (int i = 0; i < ranges.size(); ++i) {
      if (absl::Status s = AppendRangeEntries(ranges[i], family, i, m); !s.ok()) return s;
    }
    RangeView all;
    all.base = &ranges;
    AppendSegments(all, 0, ranges.size(), family, m);
  }

  std::set<uint32_t> member_sets;
  std::map<std::string, uint32_t> list_ids;  // a list's bytes -> its id in tier_lists
  auto all_peers = [&](uint32_t p) { return ir.peer_sets(static_cast<int>(p)).all(); };
  for (int i = 0; i < ir.tables_size(); ++i) {  // CheckIr: well formed, disjoint
    AppendTable(ir.tables(i), static_cast<uint32_t>(i), all_peers, m, member_sets, list_ids);
  }
  for (uint32_t s : member_sets) {
    const ir::PeerSet& set = ir.peer_sets(static_cast<int>(s));
    for (uint32_t identity : set.identities()) m.members.push_back(np_member_key{s, identity});
  }

  for (int i = 0; i < ir.endpoints_size(); ++i) {  // CheckIr: tables exist, addresses unique
    const ir::Endpoint& e = ir.endpoints(i);
    m.endpoint_states.push_back(BothBanks(EndpointState(e, [&](const IpAddress& a) {
      return RangeIdentity(a.is_v4() ? ir.ipv4() : ir.ipv6(), a);
    })));
    np_endpoint v{};
    v.id = static_cast<uint32_t>(i);
    if (e.selected()) {
      v.table = e.table();
      v.flags = NP_ENDPOINT_SELECTED;
    }
    m.endpoints.push_back(v);
    m.endpoint_names.push_back(absl::StrCat(e.namespace_(), "/", e.name()));
    for (const std::string& ip : e.ips()) {
      absl::StatusOr<IpAddress> a = IpAddress::Parse(ip);
      np_endpoint_addr_key k{};
      k.family = a->is_v4() ? NP_FAMILY_V4 : NP_FAMILY_V6;
      a->ToBytes(k.addr);
      m.endpoints_addr.emplace_back(k, v);
    }
  }
  return m;
}

absl::StatusOr<MapContents> BuildPolicyMaps(const ir::CompiledPolicy& ir) {
  // The ranges stand in as one per family, of identity 0: CheckIr and BuildMaps then check
  // and encode everything else as they would, in time independent of the cluster's pods.
  ir::CompiledPolicy stripped;
  stripped.set_always_allow_self(ir.always_allow_self());
  for (const ir::Identity& i : ir.identities()) stripped.add_identities()->set_id(i.id());
  *stripped.mutable_peer_sets() = ir.peer_sets();
  *stripped.mutable_tables() = ir.tables();
  *stripped.mutable_endpoints() = ir.endpoints();
  for (size_t width : {size_t{4}, size_t{16}}) {
    ir::AddressRange* r = width == 4 ? stripped.add_ipv4() : stripped.add_ipv6();
    r->set_first(std::string(width, '\0'));
    r->set_last(std::string(width, '\xff'));
    r->add_cidrs(width == 4 ? "0.0.0.0/0" : "::/0");
  }
  absl::StatusOr<MapContents> maps = BuildMaps(stripped);
  if (!maps.ok()) return maps.status();
  maps->ident_hosts.clear();
  maps->ident4.clear();
  maps->ident6.clear();
  return maps;
}

namespace {

// A map key's bytes as a hash key of fixed size: a pod event diffs up to a few hundred LPM
// keys, and a std::string of an IPv6 key (20 bytes, past the short-string buffer) was an
// allocation each, four times.
template <typename K>
std::array<char, sizeof(K)> KeyBytes(const K& k) {
  std::array<char, sizeof(K)> a;
  std::memcpy(a.data(), &k, sizeof(K));
  return a;
}

template <typename T>
bool SameBytes(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}
template <typename T>
bool SameList(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!SameBytes(a[i], b[i])) return false;
  }
  return true;
}
template <typename K, typename V>
bool SamePairs(const std::vector<std::pair<K, V>>& a, const std::vector<std::pair<K, V>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!SameBytes(a[i].first, b[i].first) || !SameBytes(a[i].second, b[i].second)) return false;
  }
  return true;
}

// An address range [lo, hi] of one family that a key of the identity maps covers.
struct Cover {
  Address lo = 0, hi = 0;
  uint32_t identity = 0;
  bool host = false;  // a host key's (answers before the trie), else an LPM key's
};

Cover CoverOf(const uint8_t* bytes, int width_bits, int prefixlen, uint32_t identity) {
  Cover c;
  c.lo = AddressOf(bytes, width_bits / 8);
  const int host_bits = width_bits - prefixlen;
  const Address host_mask =
      host_bits >= 128 ? ~Address{0} : ((Address{1} << host_bits) - 1);
  c.lo &= ~host_mask;
  c.hi = c.lo | host_mask;
  c.identity = identity;
  return c;
}

std::string WideAddressText(Address a, int width_bits) {
  uint8_t bytes[16] = {};
  const int n = width_bits / 8;
  for (int i = n - 1; i >= 0; --i) {
    bytes[i] = static_cast<uint8_t>(a & 0xff);
    a >>= 8;
  }
  return AddrText(width_bits == 32 ? NP_FAMILY_V4 : NP_FAMILY_V6, bytes);
}

// The addresses of one family whose identity differs between `from` and `to`, given the
// keys of each side that the other lacks or maps elsewhere (`gone`: `from`'s, `come`:
// `to`'s). Outside these keys both sides have the same key, so the same identity. Inside,
// each side's identity is its own covering key's (keys of one side do not overlap), or
// none. Returns at most `limit` + 1 addresses (enough to refuse).
absl::StatusOr<std::vector<Address>> ChangedAddresses(const std::vector<Cover>& gone,
                                                      const std::vector<Cover>& come,
                                                      int width_bits, size_t limit) {
  const Address max = width_bits == 128 ? ~Address{0} : ((Address{1} << width_bits) - 1);
  std::vector<Address> starts;
  for (const std::vector<Cover>* side : {&gone, &come}) {
    for (const Cover& c : *side) {
      starts.push_back(c.lo);
      if (c.hi != max) starts.push_back(c.hi + 1);
    }
  }
  std::sort(starts.begin(), starts.end());
  starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
  // Each side's covers in order of their first address, swept along the starts (which
  // ascend): the covers that hold a start are those begun and not yet ended, one at most
  // unless keys overlap. A pass over every cover per start was quadratic: an IPv6 pod's
  // event has some hundred covers.
  struct Sweep {
    std::vector<const Cover*> by_lo;
    size_t next = 0;                 // by_lo[next] begins after the last start seen
    std::vector<const Cover*> open;  // begun, and not ended before the last start seen
  };
  auto sweep_of = [](const std::vector<Cover>& side) {
    Sweep s;
    for (const Cover& c : side) s.by_lo.push_back(&c);
    std::stable_sort(s.by_lo.begin(), s.by_lo.end(),
                     [](const Cover* a, const Cover* b) { return a->lo < b->lo; });
    return s;
  };
  Sweep gone_sweep = sweep_of(gone), come_sweep = sweep_of(come);
  auto identity = [](Sweep& side, Address a, bool* covered) -> absl::StatusOr<uint32_t> {
    while (side.next < side.by_lo.size() && side.by_lo[side.next]->lo <= a) {
      side.open.push_back(side.by_lo[side.next++]);
    }
    side.open.erase(std::remove_if(side.open.begin(), side.open.end(),
                                   [a](const Cover* c) { return c->hi < a; }),
                    side.open.end());
    // A host key over an LPM key answers first (np_policy.c identity_of); LPM keys of one
    // side tile, and host keys are one per address.
    const Cover* answer = nullptr;
    int hosts = 0;
    for (const Cover* c : side.open) {
      if (c->host) ++hosts;
      if (answer == nullptr || (c->host && !answer->host)) answer = c;
    }
    if (hosts > 1 || side.open.size() - static_cast<size_t>(hosts) > 1) {
      return absl::FailedPreconditionError("overlapping identity keys");
    }
    *covered = *covered || answer != nullptr;
    return answer == nullptr ? NP_IDENTITY_NONE : answer->identity;
  };
  std::vector<Address> changed;
  for (size_t i = 0; i < starts.size(); ++i) {
    const Address lo = starts[i];
    const Address hi = i + 1 < starts.size() ? starts[i + 1] - 1 : max;
    bool covered = false;
    absl::StatusOr<uint32_t> before = identity(gone_sweep, lo, &covered);
    if (!before.ok()) return before.status();
    absl::StatusOr<uint32_t> after = identity(come_sweep, lo, &covered);
    if (!after.ok()) return after.status();
    if (!covered || *before == *after) continue;
    for (Address a = lo; changed.size() <= limit; ++a) {
      changed.push_back(a);
      if (a == hi) break;
    }
    if (changed.size() > limit) break;
  }
  return changed;
}

// The identity an LPM trie of `entries` answers for `addr` (NP_IDENTITY_NONE: no key covers
// it): what an address without a host key reads. Up to width + 1 hash lookups.
template <typename Key>
class LpmIndex {
 public:
  explicit LpmIndex(const std::vector<std::pair<Key, np_identity_value>>& entries) {
    entries_.reserve(entries.size());
    for (const auto& [k, v] : entries) entries_[KeyBytes(k)] = v.identity;
  }
  uint32_t Identity(const uint8_t* addr) const {
    constexpr int kBytes = static_cast<int>(sizeof(Key{}.addr));
    for (int len = kBytes * 8; len >= 0; --len) {
      Key k{};
      k.prefixlen = static_cast<uint32_t>(len);
      for (int b = 0; b < kBytes; ++b) {
        const int keep = len - 8 * b;
        k.addr[b] = keep >= 8  ? addr[b]
                    : keep <= 0 ? 0
                                : static_cast<uint8_t>(addr[b] & (0xff << (8 - keep)));
      }
      auto it = entries_.find(KeyBytes(k));
      if (it != entries_.end()) return it->second;
    }
    return NP_IDENTITY_NONE;
  }

 private:
  absl::flat_hash_map<std::array<char, sizeof(Key)>, uint32_t> entries_;
};

// The LPM part of the plan for one family (np_lpm4_key or np_lpm6_key).
template <typename Key>
void DiffLpm(const std::vector<std::pair<Key, np_identity_value>>& from,
             const std::vector<std::pair<Key, np_identity_value>>& to, int width_bits,
             std::vector<std::pair<Key, np_identity_value>>& puts, std::vector<Key>& deletes,
             size_t& new_keys, std::vector<Cover>& gone, std::vector<Cover>& come) {
  absl::flat_hash_map<std::array<char, sizeof(Key)>, uint32_t> old_entries, new_entries;
  old_entries.reserve(from.size());
  new_entries.reserve(to.size());
  for (const auto& [k, v] : from) old_entries[KeyBytes(k)] = v.identity;
  for (const auto& [k, v] : to) new_entries[KeyBytes(k)] = v.identity;
  for (const auto& [k, v] : to) {
    auto it = old_entries.find(KeyBytes(k));
    if (it != old_entries.end() && it->second == v.identity) continue;
    if (it == old_entries.end()) {
      ++new_keys;
    } else {
      gone.push_back(CoverOf(k.addr, width_bits, static_cast<int>(k.prefixlen), it->second));
    }
    puts.emplace_back(k, v);
    come.push_back(CoverOf(k.addr, width_bits, static_cast<int>(k.prefixlen), v.identity));
  }
  for (const auto& [k, v] : from) {
    if (new_entries.contains(KeyBytes(k))) continue;
    deletes.push_back(k);
    gone.push_back(CoverOf(k.addr, width_bits, static_cast<int>(k.prefixlen), v.identity));
  }
  std::stable_sort(puts.begin(), puts.end(),
                   [](const auto& a, const auto& b) { return a.first.prefixlen > b.first.prefixlen; });
}

absl::Status Refuse(absl::string_view why) {
  return absl::FailedPreconditionError(absl::StrCat("not an identity-only change: ", why));
}

// The identity entries' part of the plan: `from` and `to` hold (at least) every identity
// entry that differs; `local` is the addresses of the node's endpoints.
absl::StatusOr<IdentityEdit> DiffIdentityEntries(
    const MapContents& from, const MapContents& to,
    const std::vector<std::pair<np_endpoint_addr_key, np_endpoint>>& local) {
  auto refuse = Refuse;
  IdentityEdit edit;
  // Covers of the changed keys, per family: v4 [0], v6 [1].
  std::vector<Cover> gone[2], come[2];
  DiffLpm(from.ident4, to.ident4, 32, edit.lpm4_puts, edit.lpm4_deletes, edit.new_lpm4_keys,
          gone[0], come[0]);
  DiffLpm(from.ident6, to.ident6, 128, edit.lpm6_puts, edit.lpm6_deletes, edit.new_lpm6_keys,
          gone[1], come[1]);
  const bool trie_changes[2] = {!gone[0].empty() || !come[0].empty(),
                                !gone[1].empty() || !come[1].empty()};
  size_t shadows[2] = {0, 0};  // covers of host keys that stay (not keys that change)
  {
    absl::flat_hash_map<std::array<char, sizeof(np_endpoint_addr_key)>, uint32_t> old_hosts,
        new_hosts;
    old_hosts.reserve(from.ident_hosts.size());
    new_hosts.reserve(to.ident_hosts.size());
    for (const auto& [k, v] : from.ident_hosts) old_hosts[KeyBytes(k)] = v.identity;
    for (const auto& [k, v] : to.ident_hosts) new_hosts[KeyBytes(k)] = v.identity;
    auto family_of = [](const np_endpoint_addr_key& k) { return k.family == NP_FAMILY_V4 ? 0 : 1; };
    auto cover = [&](const np_endpoint_addr_key& k, uint32_t identity) {
      const int width = k.family == NP_FAMILY_V4 ? 32 : 128;
      Cover c = CoverOf(k.addr, width, width, identity);
      c.host = true;
      return c;
    };
    for (const auto& [k, v] : to.ident_hosts) {
      auto it = old_hosts.find(KeyBytes(k));
      if (it != old_hosts.end() && it->second == v.identity) {
        // A host key that stays answers for its address over any trie key that changes
        // around it: on both sides, so that the address reads no change.
        if (trie_changes[family_of(k)]) {
          gone[family_of(k)].push_back(cover(k, v.identity));
          come[family_of(k)].push_back(cover(k, v.identity));
          shadows[family_of(k)] += 2;
        }
        continue;
      }
      if (it == old_hosts.end()) {
        edit.host_adds.emplace_back(k, v);
      } else {
        edit.host_changes.emplace_back(k, v);
        gone[family_of(k)].push_back(cover(k, it->second));
      }
      come[family_of(k)].push_back(cover(k, v.identity));
    }
    for (const auto& [k, v] : from.ident_hosts) {
      if (new_hosts.contains(KeyBytes(k))) continue;
      edit.host_deletes.push_back(k);
      gone[family_of(k)].push_back(cover(k, v.identity));
    }
    // An address that gains (loses) its host key had (gets) the LPM trie's answer: the
    // other side's cover of it, so that ChangedAddresses compares identities, not keys (a
    // host key added with the identity the trie gave is no change). Each is width + 1
    // lookups: a plan with more than a pod's few is refused below anyway.
    const size_t host_keys = edit.host_adds.size() + edit.host_deletes.size();
    if (host_keys > 64) {
      return refuse(absl::StrCat(host_keys, " host keys come or go (at most 64)"));
    }
    if (host_keys > 0) {
      const LpmIndex<np_lpm4_key> from4(from.ident4), to4(to.ident4);
      const LpmIndex<np_lpm6_key> from6(from.ident6), to6(to.ident6);
      auto lpm = [&](const np_endpoint_addr_key& k, bool after) {
        return k.family == NP_FAMILY_V4 ? (after ? to4 : from4).Identity(k.addr)
                                        : (after ? to6 : from6).Identity(k.addr);
      };
      for (const auto& [k, v] : edit.host_adds) {
        const uint32_t before = lpm(k, false);
        if (before != NP_IDENTITY_NONE) gone[family_of(k)].push_back(cover(k, before));
        // A run that misses the host key (read before its add) and reads the trie after
        // the puts meets the new segment's answer: safe only when it is the address's old
        // or new identity (IdentityEdit::barrier_after_host_adds).
        const uint32_t trie_after = lpm(k, true);
        if (trie_after != NP_IDENTITY_NONE && trie_after != before && trie_after != v.identity) {
          edit.barrier_after_host_adds = true;
        }
      }
      for (const np_endpoint_addr_key& k : edit.host_deletes) {
        if (uint32_t after = lpm(k, true); after != NP_IDENTITY_NONE) {
          come[family_of(k)].push_back(cover(k, after));
        }
      }
    }
  }
  // One pod's event changes the keys of a few ranges: each range is at most 2 CIDRs per
  // prefix length, and an address put into a range (or taken out) splits it in three (or
  // merges three), so about 6 x width keys go or come; more is many pods (or a
  // renumbering). IPv6 pods in wide ranges do come near that: 105 keys for one pod added
  // in bench/agent_latency_bench's cluster.
  for (int f = 0; f < 2; ++f) {
    const size_t max_keys = f == 0 ? 8 * 32 : 8 * 128;
    if (gone[f].size() + come[f].size() - shadows[f] > max_keys) {
      return refuse(absl::StrCat(gone[f].size() + come[f].size() - shadows[f], " identity keys of ",
                                 f == 0 ? "IPv4" : "IPv6", " change (at most ", max_keys, ")"));
    }
  }

  // (b) and (c): at most one address per family changes identity, not a local pod's.
  for (int f = 0; f < 2; ++f) {
    const int width = f == 0 ? 32 : 128;
    absl::StatusOr<std::vector<Address>> changed = ChangedAddresses(gone[f], come[f], width, 1);
    if (!changed.ok()) return refuse(changed.status().message());
    if (changed->size() > 1) {
      return refuse(absl::StrCat("more than one ", f == 0 ? "IPv4" : "IPv6",
                                 " address changes identity (", WideAddressText((*changed)[0], width),
                                 ", ", WideAddressText((*changed)[1], width), ", ...)"));
    }
    for (Address a : *changed) {
      uint8_t bytes[16] = {};
      Address rest = a;
      for (int i = width / 8 - 1; i >= 0; --i) {
        bytes[i] = static_cast<uint8_t>(rest & 0xff);
        rest >>= 8;
      }
      std::string text = WideAddressText(a, width);
      // A pod of this node may change identity too: np_policy.c reads an address's
      // identity once per run, so its packets still meet one changed lookup (maps.h (c)).
      for (const auto& [k, v] : local) {
        if (k.family == (f == 0 ? NP_FAMILY_V4 : NP_FAMILY_V6) &&
            std::memcmp(k.addr, bytes, static_cast<size_t>(width / 8)) == 0) {
          absl::StrAppend(&text, " (a pod of this node)");
        }
      }
      if (!absl::EndsWith(text, " (a pod of this node)")) ++edit.remote_changes;
      edit.changed_addresses.push_back(text);
    }
  }
  edit.barrier_before_deletes = !edit.host_adds.empty() &&
                                (!edit.lpm4_deletes.empty() || !edit.lpm6_deletes.empty());
  return edit;
}

}  // namespace

absl::StatusOr<IdentityEdit> PlanIdentityEdit(const MapContents& from, const MapContents& to) {
  auto refuse = Refuse;
  // (a) Everything but the identity maps unchanged.
  if (from.config.flags != to.config.flags) return refuse("np_config flags differ");
  if (!SameList(from.endpoints, to.endpoints) || from.endpoint_names != to.endpoint_names) {
    return refuse("the node's endpoints differ");
  }
  if (!SamePairs(from.endpoints_addr, to.endpoints_addr)) {
    return refuse("the endpoints' addresses differ");
  }
  if (!SameList(from.tables, to.tables)) return refuse("np_tables differs");
  if (!SamePairs(from.ports, to.ports)) return refuse("np_ports differs");
  if (!SamePairs(from.tiers, to.tiers)) return refuse("np_tiers differs");
  if (!SameList(from.tier_lists, to.tier_lists)) return refuse("np_tier_lists differs");
  if (!SameList(from.members, to.members)) return refuse("np_members differs");

  absl::StatusOr<IdentityEdit> edit = DiffIdentityEntries(from, to, to.endpoints_addr);
  if (!edit.ok()) return edit;
  // A pod of this node changing identity: its state (the endpoints are the same, so only
  // the identities in it differ).
  for (size_t id = 0; id < from.endpoint_states.size() && id < to.endpoint_states.size(); ++id) {
    const np_endpoint_state& before = from.endpoint_states[id].bank[0];
    const np_endpoint_state& after = to.endpoint_states[id].bank[0];
    if (!SameBytes(before, after)) {
      edit->state_changes.push_back({static_cast<uint32_t>(id), before, after});
    }
  }
  return edit;
}

namespace {

bool SameRange(const ir::AddressRange& a, const ir::AddressRange& b) {
  if (a.identity() != b.identity() || a.first() != b.first() || a.last() != b.last() ||
      a.cidrs_size() != b.cidrs_size()) {
    return false;
  }
  for (int i = 0; i < a.cidrs_size(); ++i) {
    if (a.cidrs(i) != b.cidrs(i)) return false;
  }
  return true;
}

std::string After(std::string address) {
  for (int b = static_cast<int>(address.size()) - 1; b >= 0; --b) {
    address[b] = static_cast<char>(static_cast<uint8_t>(address[b]) + 1);
    if (address[b] != '\0') break;
  }
  return address;
}

// Whether np_config's flags and the endpoint maps (np_endpoints_addr, np_endpoints_if on
// one attachment) of `from` and `to` are the same.
bool SameNode(const ir::CompiledPolicy& from, const ir::CompiledPolicy& to, std::string* why) {
  if (from.always_allow_self() != to.always_allow_self()) {
    *why = "np_config flags differ";
    return false;
  }
  bool same = from.endpoints_size() == to.endpoints_size();
  for (int i = 0; same && i < from.endpoints_size(); ++i) {
    const ir::Endpoint& a = from.endpoints(i);
    const ir::Endpoint& b = to.endpoints(i);
    same = a.namespace_() == b.namespace_() && a.name() == b.name() &&
           a.selected() == b.selected() && a.table() == b.table() &&
           a.ips_size() == b.ips_size() &&
           std::equal(a.ips().begin(), a.ips().end(), b.ips().begin()) &&
           a.shared_ips_size() == b.shared_ips_size() &&
           std::equal(a.shared_ips().begin(), a.shared_ips().end(), b.shared_ips().begin());
  }
  if (!same) *why = "the node's endpoints differ";
  return same;
}

}  // namespace

absl::Status PolicyOnlyChange(const ir::CompiledPolicy& from, const ir::CompiledPolicy& to) {
  std::string why;
  if (!SameNode(from, to, &why)) {
    return absl::FailedPreconditionError(absl::StrCat("not a policy-only change: ", why));
  }
  for (int family = 0; family < 2; ++family) {
    const auto& a = family == 0 ? from.ipv4() : from.ipv6();
    const auto& b = family == 0 ? to.ipv4() : to.ipv6();
    if (a.size() != b.size() || !std::equal(a.begin(), a.end(), b.begin(), SameRange)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "not a policy-only change: the ", family == 0 ? "IPv4" : "IPv6",
          " address ranges or their identities differ"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<IdentityEdit> PlanIdentityEditFromIr(const ir::CompiledPolicy& from,
                                                    const ir::CompiledPolicy& to) {
  // (a) on the IR: what the other maps are made of.
  if (std::string why; !SameNode(from, to, &why)) return Refuse(why);
  if (from.tables_size() != to.tables_size()) return Refuse("np_tables differs");
  for (int i = 0; i < from.tables_size(); ++i) {
    if (from.tables(i).SerializeAsString() != to.tables(i).SerializeAsString()) {
      return Refuse("the tables differ (np_tables, np_ports, np_tiers)");
    }
  }
  if (from.peer_sets_size() != to.peer_sets_size()) return Refuse("np_members differs");
  for (int i = 0; i < from.peer_sets_size(); ++i) {
    const ir::PeerSet& a = from.peer_sets(i);
    const ir::PeerSet& b = to.peer_sets(i);
    if (a.id() != b.id() || a.all() != b.all() || a.identities_size() != b.identities_size() ||
        !std::equal(a.identities().begin(), a.identities().end(), b.identities().begin())) {
      return Refuse("np_members differs");
    }
    for (uint32_t id : b.identities()) {
      if (id >= static_cast<uint32_t>(to.identities_size())) return Refuse("a peer set's identity is gone");
    }
  }
  // The ranges: the run of each family that differs (before and after it they are the same,
  // and were checked when `from` was installed), checked as CheckIr checks them, encoded.
  MapContents old_window, new_window;
  const uint32_t identities = static_cast<uint32_t>(to.identities_size());
  for (int family = 0; family < 2; ++family) {
    const auto& a = family == 0 ? from.ipv4() : from.ipv6();
    const auto& b = family == 0 ? to.ipv4() : to.ipv6();
    const size_t width = family == 0 ? 4 : 16;
    const int na = a.size(), nb = b.size();
    int head = 0;
    while (head < na && head < nb && SameRange(a[head], b[head])) ++head;
    int tail = 0;
    while (tail < na - head && tail < nb - head && SameRange(a[na - 1 - tail], b[nb - 1 - tail])) {
      ++tail;
    }
    if (identities < static_cast<uint32_t>(from.identities_size())) {
      for (const ir::AddressRange& r : b) {
        if (r.identity() >= identities) return Refuse("a range's identity is gone");
      }
    }
    std::string expected = head == 0 ? std::string(width, '\0') : After(b[head - 1].last());
    for (int i = head; i < nb - tail; ++i) {
      const ir::AddressRange& r = b[i];
      if (r.first().size() != width || r.last().size() != width || r.identity() >= identities ||
          r.first() != expected || r.last() < r.first()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "malformed IR: ", family == 0 ? "ipv4" : "ipv6", "[", i,
            "]: not a range of the family, of an identity, where the ranges before end"));
      }
      expected = After(r.last());
      if (absl::Status s = AppendRangeEntries(r, family, i, new_window); !s.ok()) return s;
    }
    const bool to_end = tail == 0;
    if (to_end ? (nb == 0 || b[nb - 1].last() != std::string(width, '\xff'))
               : b[nb - tail].first() != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "malformed IR: ", family == 0 ? "ipv4" : "ipv6",
          ": the changed ranges do not partition what the others leave"));
    }
    for (int i = head; i < na - tail; ++i) {
      if (absl::Status s = AppendRangeEntries(a[i], family, i, old_window); !s.ok()) return s;
    }
    if (head < na - tail || head < nb - tail) {
      std::vector<const ir::AddressRange*> with;
      for (int i = head; i < nb - tail; ++i) with.push_back(&b[i]);
      AppendChangedSegments(a, head, na - tail, std::move(with), family, old_window, new_window);
    }
  }
  std::vector<std::pair<np_endpoint_addr_key, np_endpoint>> local;
  for (const ir::Endpoint& e : to.endpoints()) {
    for (const std::string& ip : e.ips()) {
      absl::StatusOr<IpAddress> address = IpAddress::Parse(ip);
      if (!address.ok()) return address.status();
      np_endpoint_addr_key k{};
      k.family = address->is_v4() ? NP_FAMILY_V4 : NP_FAMILY_V6;
      address->ToBytes(k.addr);
      local.emplace_back(k, np_endpoint{});
    }
  }
  absl::StatusOr<IdentityEdit> edit = DiffIdentityEntries(old_window, new_window, local);
  if (!edit.ok()) return edit;
  // Pods of this node changing identity: their states, by endpoint id (the IR index: the
  // caller plans this only while ids are indexes, ebpf_backend.cc).
  for (int i = 0; i < to.endpoints_size(); ++i) {
    auto in = [](const ir::CompiledPolicy& p) {
      return [&p](const IpAddress& a) { return RangeIdentity(a.is_v4() ? p.ipv4() : p.ipv6(), a); };
    };
    IdentityEdit::StateChange c{static_cast<uint32_t>(i), EndpointState(to.endpoints(i), in(from)),
                                EndpointState(to.endpoints(i), in(to))};
    if (!SameBytes(c.before, c.after)) edit->state_changes.push_back(c);
  }
  return edit;
}

namespace {

// The identity count once `delta` is applied, its appended identities checked as ApplyDelta
// checks them (ids from `from`'s count on, in order, not external, pods sorted).
absl::StatusOr<uint32_t> IdentitiesAfter(const ir::CompiledPolicy& from,
                                         const ir::CompiledPolicyDelta& delta) {
  for (int e = 0; e < delta.identities_size(); ++e) {
    const ir::Identity& identity = delta.identities(e);
    if (identity.id() != static_cast<uint32_t>(from.identities_size() + e) ||
        identity.external() || !std::is_sorted(identity.pods().begin(), identity.pods().end())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "IR delta: identities[", e, "]: id ", identity.id(), " is not the next one (",
          from.identities_size() + e, "), is external or its pods are not sorted"));
    }
  }
  return static_cast<uint32_t>(from.identities_size() + delta.identities_size());
}

// The range edit of `delta` whose slice of `from`'s ranges holds the address of family
// `v4` whose bytes are `key` (its range edits checked), or null: the address keeps its
// range. Compared as bytes: PlanStateWrites asks this of each of the node's addresses.
const ir::RangeSliceEdit* EditHolding(const ir::CompiledPolicy& from,
                                      const ir::CompiledPolicyDelta& delta, bool v4,
                                      absl::string_view key) {
  const auto& ranges = v4 ? from.ipv4() : from.ipv6();
  for (const ir::RangeSliceEdit& e : v4 ? delta.ipv4() : delta.ipv6()) {
    if (key >= absl::string_view(ranges[static_cast<int>(e.begin())].first()) &&
        key <= absl::string_view(ranges[static_cast<int>(e.end()) - 1].last())) {
      return &e;
    }
  }
  return nullptr;
}
const ir::RangeSliceEdit* EditHolding(const ir::CompiledPolicy& from,
                                      const ir::CompiledPolicyDelta& delta,
                                      const IpAddress& address) {
  uint8_t bytes[16] = {};
  address.ToBytes(bytes);
  return EditHolding(from, delta, address.is_v4(),
                     absl::string_view(reinterpret_cast<const char*>(bytes),
                                       address.is_v4() ? 4 : 16));
}

// The identity of `address` once `delta` is applied to `from`: the new ranges of the edit
// whose slice holds it, else `from`'s.
uint32_t IdentityAfter(const ir::CompiledPolicy& from, const ir::CompiledPolicyDelta& delta,
                       const IpAddress& address) {
  const ir::RangeSliceEdit* edit = EditHolding(from, delta, address);
  if (edit != nullptr) return RangeIdentity(edit->ranges(), address);
  return RangeIdentity(address.is_v4() ? from.ipv4() : from.ipv6(), address);
}

// IdentityEdit's state writes for a delta: the added endpoints' states (`added`: value and
// addresses of each, in the order of edit.added_values), and a state change for each
// endpoint of `local` (np_endpoints_addr's entries: C++ values, table and selection
// included) whose addresses' identity changes or that moves (`moved`: id -> its new value).
void PlanStateWrites(const ir::CompiledPolicy& from, const ir::CompiledPolicyDelta& delta,
                     const std::vector<std::pair<np_endpoint_addr_key, np_endpoint>>& local,
                     const std::vector<std::pair<np_endpoint, std::vector<IpAddress>>>& added,
                     const std::map<uint32_t, np_endpoint>& moved, IdentityEdit& edit) {
  auto before = [&](const IpAddress& a) {
    return RangeIdentity(a.is_v4() ? from.ipv4() : from.ipv6(), a);
  };
  auto after = [&](const IpAddress& a) { return IdentityAfter(from, delta, a); };
  for (const auto& [value, addresses] : added) {
    edit.state_adds.emplace_back(value.id, BothBanks(StateOf(value, addresses, after)));
  }
  // The endpoints of the node that may change: an address in an edited slice, or moved.
  std::set<uint32_t> ids;
  for (const auto& [id, v] : moved) ids.insert(id);
  if (!delta.ipv4().empty() || !delta.ipv6().empty()) {
    // Only which slice holds each address: the node's other endpoints keep their ranges,
    // and looking their identity up in the program's ranges (a binary search over 10k
    // heap strings at 1,000 pods) was most of a plain pod event's backend time.
    for (const auto& [k, v] : local) {
      const bool v4 = k.family != NP_FAMILY_V6;
      const absl::string_view key(reinterpret_cast<const char*>(k.addr), v4 ? 4 : 16);
      if (EditHolding(from, delta, v4, key) != nullptr) ids.insert(v.id);
    }
  }
  for (const np_endpoint_addr_key& k : edit.endpoint_deletes) {  // deleted: no state read
    for (const auto& [l, v] : local) {
      if (SameBytes(l, k)) ids.erase(v.id);
    }
  }
  for (uint32_t id : ids) {
    np_endpoint value{};
    std::vector<IpAddress> addresses;
    for (const auto& [k, v] : local) {
      if (v.id != id) continue;
      value = v;
      addresses.push_back(AddressOfKey(k));
    }
    auto it = moved.find(id);
    const np_endpoint next_value = it == moved.end() ? value : it->second;
    IdentityEdit::StateChange c{id, StateOf(value, addresses, before),
                                StateOf(next_value, addresses, after)};
    if (!SameBytes(c.before, c.after)) edit.state_changes.push_back(c);
  }
}

// PlanIdentityEditFromDelta's plan, the delta's peer sets and tables aside (the caller
// plans them, or refuses them): an added endpoint may name any table below `tables_after`,
// the program's count once the delta is applied.
absl::StatusOr<IdentityEdit> PlanIdentityPart(
    const ir::CompiledPolicy& from, const ir::CompiledPolicyDelta& delta,
    const std::vector<std::pair<np_endpoint_addr_key, np_endpoint>>& local,
    uint32_t next_endpoint_id, uint32_t tables_after,
    const std::vector<uint32_t>& reusable_ids) {
  auto invalid = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("IR delta: ", what));
  };
  // Ranges and identity_pods may name the delta's appended identities: they are in no map
  // but through the ranges and peer sets that name them.
  const absl::StatusOr<uint32_t> identities_after = IdentitiesAfter(from, delta);
  if (!identities_after.ok()) return identities_after.status();
  const uint32_t identities = *identities_after;
  // The ranges first: each edit checked as ApplyDelta checks it (in bounds, in order, the
  // new ranges covering the replaced ones' addresses one after the other, identities that
  // exist) and as BuildMaps would check the new ranges (CIDRs tiling each), then the
  // replaced and the new ranges encoded: only they can hold differing keys.
  MapContents old_window, new_window;
  for (int family = 0; family < 2; ++family) {
    const auto& edits = family == 0 ? delta.ipv4() : delta.ipv6();
    const auto& ranges = family == 0 ? from.ipv4() : from.ipv6();
    const char* name = family == 0 ? "ipv4" : "ipv6";
    const size_t width = family == 0 ? 4 : 16;
    uint32_t previous_end = 0;
    for (int e = 0; e < edits.size(); ++e) {
      const ir::RangeSliceEdit& edit = edits[e];
      const std::string where = absl::StrCat(name, "[", e, "]");
      if (edit.begin() >= edit.end() || edit.end() > static_cast<uint32_t>(ranges.size()) ||
          (e > 0 && edit.begin() < previous_end) || edit.ranges().empty()) {
        return invalid(absl::StrCat(where, ": slice [", edit.begin(), ", ", edit.end(),
                                    ") empty, outside the program's ", ranges.size(),
                                    " ranges, not after the edit before it, or without ranges"));
      }
      previous_end = edit.end();
      std::string expected = ranges[static_cast<int>(edit.begin())].first();
      for (int r = 0; r < edit.ranges_size(); ++r) {
        const ir::AddressRange& range = edit.ranges(r);
        if (range.first().size() != width || range.last().size() != width ||
            range.first() != expected || range.last() < range.first() ||
            range.identity() >= identities ||
            (r > 0 && edit.ranges(r - 1).last() == std::string(width, '\xff'))) {
          return invalid(absl::StrCat(where, ".ranges[", r,
                                      "]: not a range of the family, of an identity, where the "
                                      "ranges before it end"));
        }
        expected = After(range.last());
        if (absl::Status s = AppendRangeEntries(range, family, static_cast<int>(edit.begin()) + r,
                                                new_window);
            !s.ok()) {
          return s;
        }
      }
      if (edit.ranges(edit.ranges_size() - 1).last() !=
          ranges[static_cast<int>(edit.end()) - 1].last()) {
        return invalid(absl::StrCat(where, ": covers other addresses than the ranges it replaces"));
      }
      for (uint32_t i = edit.begin(); i < edit.end(); ++i) {
        // `from` was accepted by BuildMaps when it was installed: its CIDRs tile it.
        AppendHostEntry(ranges[static_cast<int>(i)], family, old_window);
      }
    }
    if (!edits.empty()) {
      // The edits as one slice, with the (unchanged) ranges between them.
      std::vector<const ir::AddressRange*> with;
      for (int e = 0; e < edits.size(); ++e) {
        for (const ir::AddressRange& r : edits[e].ranges()) with.push_back(&r);
        if (e + 1 < edits.size()) {
          for (uint32_t i = edits[e].end(); i < edits[e + 1].begin(); ++i) {
            with.push_back(&ranges[static_cast<int>(i)]);
          }
        }
      }
      AppendChangedSegments(ranges, static_cast<int>(edits[0].begin()),
                            static_cast<int>(edits[edits.size() - 1].end()), std::move(with),
                            family, old_window, new_window);
    }
  }
  // Checked whole (names too): ComesIntoUse and GoesOutOfUse count an edit's pods.
  if (absl::Status s = CheckIdentityPodsEdits(from, delta); !s.ok()) return invalid(s.message());
  // (a): a delta changes no table, peer set, identity number or flag; of the maps only the
  // endpoints' could still differ. An endpoint edit that rewrites endpoints as they are is
  // nothing; the others add or delete endpoints (matched by name), or change one.
  uint32_t previous_end = 0;
  bool endpoints_change = false;
  std::map<std::string, const ir::Endpoint*> replaced;  // "namespace/name" of edited slices
  std::vector<const ir::Endpoint*> incoming;            // their new endpoints
  auto name_of = [](const ir::Endpoint& e) { return absl::StrCat(e.namespace_(), "/", e.name()); };
  for (int e = 0; e < delta.endpoints_size(); ++e) {
    const ir::EndpointSliceEdit& edit = delta.endpoints(e);
    if (edit.begin() > edit.end() || edit.end() > static_cast<uint32_t>(from.endpoints_size()) ||
        (e > 0 && edit.begin() < previous_end)) {
      return invalid(absl::StrCat("endpoints[", e, "]: slice [", edit.begin(), ", ", edit.end(),
                                  ") is outside the program's ", from.endpoints_size(),
                                  " endpoints or not after the edit before it"));
    }
    previous_end = edit.end();
    bool same = edit.end() - edit.begin() == static_cast<uint32_t>(edit.endpoints_size());
    for (int i = 0; same && i < edit.endpoints_size(); ++i) {
      same = edit.endpoints(i).SerializeAsString() ==
             from.endpoints(static_cast<int>(edit.begin()) + i).SerializeAsString();
    }
    if (same) continue;
    endpoints_change = true;
    for (uint32_t i = edit.begin(); i < edit.end(); ++i) {
      const ir::Endpoint& old = from.endpoints(static_cast<int>(i));
      replaced[name_of(old)] = &old;
    }
    for (const ir::Endpoint& n : edit.endpoints()) incoming.push_back(&n);
  }
  // Identity pod lists are in no map (Render's labels only).
  if (!endpoints_change) {
    absl::StatusOr<IdentityEdit> edit = DiffIdentityEntries(old_window, new_window, local);
    if (edit.ok()) PlanStateWrites(from, delta, local, {}, {}, *edit);
    return edit;
  }
  if (next_endpoint_id == kNoEndpointEdits) return Refuse("the node's endpoints differ");
  auto local_id = [&](const ir::Endpoint& e) -> std::optional<uint32_t> {
    for (const std::string& ip : e.ips()) {
      absl::StatusOr<IpAddress> a = IpAddress::Parse(ip);
      if (!a.ok()) continue;
      np_endpoint_addr_key k{};
      k.family = a->is_v4() ? NP_FAMILY_V4 : NP_FAMILY_V6;
      a->ToBytes(k.addr);
      for (const auto& [l, v] : local) {
        if (SameBytes(l, k)) return v.id;
      }
    }
    return std::nullopt;
  };

  // Endpoints added and deleted; one that stays keeps its addresses, and may move between
  // tables or be selected or not (its state changes: IdentityEdit::state_changes).
  std::map<uint32_t, np_endpoint> moved;
  std::vector<const ir::Endpoint*> added;
  std::set<std::string> incoming_names;
  for (const ir::Endpoint* e : incoming) {
    const std::string name = name_of(*e);
    if (!incoming_names.insert(name).second) {
      return invalid(absl::StrCat("endpoint ", EscapeText(name), " listed twice"));
    }
    auto it = replaced.find(name);
    if (it == replaced.end()) {
      added.push_back(e);
    } else if (it->second->SerializeAsString() != e->SerializeAsString()) {
      const ir::Endpoint& old = *it->second;
      const bool same_addresses =
          old.ips_size() == e->ips_size() &&
          std::equal(old.ips().begin(), old.ips().end(), e->ips().begin()) &&
          old.shared_ips_size() == e->shared_ips_size() &&
          std::equal(old.shared_ips().begin(), old.shared_ips().end(), e->shared_ips().begin());
      const std::optional<uint32_t> id = same_addresses ? local_id(old) : std::nullopt;
      if (!id.has_value()) {
        return Refuse(absl::StrCat("endpoint ", EscapeText(name),
                                   " changes its addresses (or has none in np_endpoints_addr)"));
      }
      if (e->selected() && e->table() >= tables_after) {
        return invalid(absl::StrCat("endpoint ", EscapeText(name), ": table ", e->table(),
                                    " does not exist"));
      }
      np_endpoint v{};
      v.id = *id;
      if (e->selected()) {
        v.table = e->table();
        v.flags = NP_ENDPOINT_SELECTED;
      }
      moved[*id] = v;
      replaced.erase(it);
    } else {
      replaced.erase(it);
    }
  }
  auto keys_of = [&](const ir::Endpoint& e,
                     std::vector<np_endpoint_addr_key>& keys) -> absl::Status {
    for (const std::string& ip : e.ips()) {
      absl::StatusOr<IpAddress> a = IpAddress::Parse(ip);
      if (!a.ok()) {
        return invalid(absl::StrCat("endpoint ", EscapeText(name_of(e)), ": bad address \"",
                                    EscapeText(ip), "\""));
      }
      np_endpoint_addr_key k{};
      k.family = a->is_v4() ? NP_FAMILY_V4 : NP_FAMILY_V6;
      a->ToBytes(k.addr);
      keys.push_back(k);
    }
    return absl::OkStatus();
  };
  auto is_local = [&](const np_endpoint_addr_key& k) {
    for (const auto& [l, v] : local) {
      if (SameBytes(l, k)) return true;
    }
    return false;
  };
  std::vector<np_endpoint_addr_key> deletes;
  std::vector<std::string> deleted_names;
  for (const auto& [name, e] : replaced) {  // left over: deleted
    if (e->shared_ips_size() > 0) {
      return Refuse(absl::StrCat("endpoint ", EscapeText(name), " has shared addresses"));
    }
    if (absl::Status s = keys_of(*e, deletes); !s.ok()) return s;
    deleted_names.push_back(name);
  }
  for (const np_endpoint_addr_key& k : deletes) {
    if (!is_local(k)) {
      return Refuse(absl::StrCat("a deleted endpoint's address ", AddrText(k.family, k.addr),
                                 " is not in np_endpoints_addr"));
    }
  }
  // Deleted endpoints' ids first (maps.h IdentityEdit::endpoint_adds), then new ones.
  const size_t reused = std::min(added.size(), reusable_ids.size());
  if (added.size() - reused > NP_IDENTITY_NONE - 1 - next_endpoint_id) {
    return Refuse("the generation's endpoint ids are used up");
  }
  std::vector<std::pair<np_endpoint_addr_key, np_endpoint>> adds;
  std::vector<std::string> added_names;
  std::vector<np_endpoint> added_values;
  std::vector<std::pair<np_endpoint, std::vector<IpAddress>>> added_states;
  for (size_t i = 0; i < added.size(); ++i) {
    const ir::Endpoint& e = *added[i];
    const std::string name = name_of(e);
    if (e.shared_ips_size() > 0) {
      return Refuse(absl::StrCat("endpoint ", EscapeText(name), " has shared addresses"));
    }
    if (e.selected() && e.table() >= tables_after) {
      return invalid(absl::StrCat("endpoint ", EscapeText(name), ": table ", e.table(),
                                  " does not exist"));
    }
    np_endpoint v{};
    v.id = i < reused ? reusable_ids[reusable_ids.size() - 1 - i]
                      : next_endpoint_id + static_cast<uint32_t>(i - reused);
    if (e.selected()) {
      v.table = e.table();
      v.flags = NP_ENDPOINT_SELECTED;
    }
    std::vector<np_endpoint_addr_key> keys;
    if (absl::Status s = keys_of(e, keys); !s.ok()) return s;
    for (const np_endpoint_addr_key& k : keys) {
      // One lookup of an address meets at most one change (np_policy.c policy_allows).
      const bool reused = std::any_of(deletes.begin(), deletes.end(),
                                      [&](const auto& d) { return SameBytes(d, k); });
      const bool twice = std::any_of(adds.begin(), adds.end(),
                                     [&](const auto& a) { return SameBytes(a.first, k); });
      if (reused || twice || is_local(k)) {
        return Refuse(absl::StrCat("address ", AddrText(k.family, k.addr), " of endpoint ",
                                   EscapeText(name), reused ? " is left by another endpoint"
                                                            : " is another endpoint's too"));
      }
      adds.emplace_back(k, v);
    }
    added_names.push_back(name);
    added_values.push_back(v);
    std::vector<IpAddress> addresses;
    for (const np_endpoint_addr_key& k : keys) addresses.push_back(AddressOfKey(k));
    added_states.emplace_back(v, std::move(addresses));
  }
  absl::StatusOr<IdentityEdit> edit = DiffIdentityEntries(old_window, new_window, local);
  if (!edit.ok()) return edit;
  edit->endpoint_adds = std::move(adds);
  edit->endpoint_deletes = std::move(deletes);
  edit->added_endpoints = std::move(added_names);
  edit->added_values = std::move(added_values);
  edit->reused_endpoint_ids = reused;
  edit->deleted_endpoints = std::move(deleted_names);
  PlanStateWrites(from, delta, local, added_states, moved, *edit);
  return edit;
}

}  // namespace

absl::StatusOr<IdentityEdit> PlanIdentityEditFromDelta(
    const ir::CompiledPolicy& from, const ir::CompiledPolicyDelta& delta,
    const std::vector<std::pair<np_endpoint_addr_key, np_endpoint>>& local,
    uint32_t next_endpoint_id, const std::vector<uint32_t>& reusable_endpoint_ids) {
  if (!delta.peer_sets().empty() || !delta.tables().empty()) {
    return absl::FailedPreconditionError(
        "the delta edits peer sets or tables: not an identity edit");
  }
  return PlanIdentityPart(from, delta, local, next_endpoint_id,
                          static_cast<uint32_t>(from.tables_size()), reusable_endpoint_ids);
}

std::string RenderMaps(const ir::CompiledPolicy& ir, const MapContents& m) {
  std::string out;
  absl::StrAppend(&out, "# np eBPF datapath: the maps of one generation of np_policy.o\n",
                  "# (np/backends/ebpf/bpf/np_abi.h has the layouts). np_from_ep on tc ingress\n",
                  "# of a pod's host-side veth decides what the pod sends, np_to_ep on tc egress\n",
                  "# what it receives; both tail call np_gen_progs[0], the live generation.\n");
  absl::StrAppend(&out, "np_config[0] = { generation ", m.config.generation, ", flags ",
                  (m.config.flags & NP_CONFIG_ALLOW_SELF) ? "ALLOW_SELF" : "0", " }\n");
  absl::StrAppend(&out, "np_ident_hosts (hash, ", m.ident_hosts.size(), " entries)\n");
  for (const auto& [k, v] : m.ident_hosts) {
    absl::StrAppend(&out, "  ", AddrText(k.family, k.addr),
                    k.family == NP_FAMILY_V4 ? "/32" : "/128", " -> identity ",
                    IdentityLabel(ir, v.identity), "\n");
  }
  absl::StrAppend(&out, "np_ident4 (lpm_trie, ", m.ident4.size(), " entries)\n");
  for (const auto& [k, v] : m.ident4) {
    absl::StrAppend(&out, "  ", AddrText(NP_FAMILY_V4, k.addr), "/", k.prefixlen,
                    " -> identity ", IdentityLabel(ir, v.identity), "\n");
  }
  absl::StrAppend(&out, "np_ident6 (lpm_trie, ", m.ident6.size(), " entries)\n");
  for (const auto& [k, v] : m.ident6) {
    absl::StrAppend(&out, "  ", AddrText(NP_FAMILY_V6, k.addr), "/", k.prefixlen,
                    " -> identity ", IdentityLabel(ir, v.identity), "\n");
  }
  auto endpoint_text = [&](const np_endpoint& e) {
    std::string s = absl::StrCat("endpoint ", e.id, " ", EscapeText(m.endpoint_names[e.id]));
    if (e.flags & NP_ENDPOINT_SELECTED) {
      absl::StrAppend(&s, ", table ", e.table);
    } else {
      absl::StrAppend(&s, ", not selected");
    }
    return s;
  };
  absl::StrAppend(&out, "np_endpoints_addr (hash, ", m.endpoints_addr.size(), " entries)\n");
  for (const auto& [k, v] : m.endpoints_addr) {
    absl::StrAppend(&out, "  ", AddrText(k.family, k.addr), " -> ", endpoint_text(v), "\n");
  }
  absl::StrAppend(&out, "np_endpoints_if (hash): host-side interface ifindex -> endpoint, "
                        "filled by Apply for each attached interface:\n");
  for (const np_endpoint& e : m.endpoints) {
    absl::StrAppend(&out, "  <ifindex of ", EscapeText(m.endpoint_names[e.id]), "> -> ", endpoint_text(e),
                    "\n");
  }
  absl::StrAppend(&out, "np_tables (array, ", m.tables.size(), " entries)\n");
  for (size_t i = 0; i < m.tables.size(); ++i) {
    auto direction_text = [&](uint8_t dir) {
      std::string text = m.tables[i].isolated[dir] ? "isolated" : "open";
      if (m.tables[i].tiers[dir] & NP_TABLE_HAS_ADMIN) text += " +admin";
      if (m.tables[i].tiers[dir] & NP_TABLE_HAS_BASELINE) text += " +baseline";
      return text;
    };
    absl::StrAppend(&out, "  [", i, "] ingress ", direction_text(NP_DIR_INGRESS), ", egress ",
                    direction_text(NP_DIR_EGRESS));
    if (i < static_cast<size_t>(ir.tables_size()) && ir.tables(i).policies_size() > 0) {
      absl::StrAppend(&out, "  # ", EscapeText(absl::StrJoin(ir.tables(i).policies(), " ")));
    }
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out, "np_ports (lpm_trie, ", m.ports.size(), " entries)\n");
  for (const auto& [k, v] : m.ports) {
    absl::StrAppend(&out, "  ", PortKeyText(k), " -> peer set ", v.peer_set,
                    (v.flags & NP_PEERS_ALL) ? " (all addresses)" : "", "\n");
  }
  absl::StrAppend(&out, "np_tiers (lpm_trie, ", m.tiers.size(), " entries)\n");
  for (const auto& [k, v] : m.tiers) {
    absl::StrAppend(&out, "  ", TierKeyText(k), " -> list ", v.list, "\n");
  }
  absl::StrAppend(&out, "np_tier_lists (array, ", m.tier_lists.size(),
                  " entries; the first matching rule decides)\n");
  for (size_t list = 0; list < m.tier_lists.size(); ++list) {
    const np_tier_value& v = m.tier_lists[list];
    std::vector<std::string> rules;
    for (uint32_t r = 0; r < std::min<uint32_t>(v.count, NP_TIER_MAX_RULES); ++r) {
      rules.push_back(absl::StrCat(ActionName(v.rules[r].action), " peer set ",
                                   v.rules[r].peer_set,
                                   (v.rules[r].flags & NP_PEERS_ALL) ? " (all)" : ""));
    }
    if (v.count > NP_TIER_MAX_RULES) rules.push_back(absl::StrCat("... ", v.count, " rules"));
    absl::StrAppend(&out, "  [", list, "] ",
                    rules.empty() ? "no rule" : absl::StrJoin(rules, ", "), "\n");
  }
  absl::StrAppend(&out, "np_members (hash, ", m.members.size(), " entries)\n");
  for (size_t i = 0; i < m.members.size();) {
    size_t j = i;
    std::vector<std::string> ids;
    while (j < m.members.size() && m.members[j].peer_set == m.members[i].peer_set) {
      ids.push_back(IdentityLabel(ir, m.members[j].identity));
      ++j;
    }
    absl::StrAppend(&out, "  peer set ", m.members[i].peer_set, ": ", absl::StrJoin(ids, ", "),
                    "\n");
    i = j;
  }
  absl::StrAppend(&out, "np_ct (lru_hash, 131072), np_frag (lru_hash, 8192): written by the "
                        "datapath, shared by all generations\n");
  return out;
}

MapModel::MapModel(const MapContents& maps) : maps_(maps) {
  for (const auto& [k, v] : maps.ident_hosts) {
    hosts_[std::string(1, static_cast<char>(k.family)) + Bytes(k.addr, 16)] = v.identity;
  }
  for (const auto& [k, v] : maps.ident4) {
    ident_[{4000 + static_cast<int>(k.prefixlen), Masked(Bytes(k.addr, 4), k.prefixlen)}] =
        v.identity;
  }
  for (const auto& [k, v] : maps.ident6) {
    ident_[{6000 + static_cast<int>(k.prefixlen), Masked(Bytes(k.addr, 16), k.prefixlen)}] =
        v.identity;
  }
  for (const auto& [k, v] : maps.endpoints_addr) {
    endpoints_[std::string(1, static_cast<char>(k.family)) + Bytes(k.addr, 16)] = &v;
  }
  for (const auto& [k, v] : maps.ports) {
    ports_[{static_cast<int>(k.prefixlen), Masked(Bytes(&k.table, 8), k.prefixlen)}] = &v;
  }
  for (const auto& [k, v] : maps.tiers) {
    tiers_[{static_cast<int>(k.prefixlen), Masked(Bytes(&k.table, 12), k.prefixlen)}] = &v;
  }
  for (const np_member_key& k : maps.members) members_[{k.peer_set, k.identity}] = true;
}

uint32_t MapModel::Identity(uint8_t family, const uint8_t* addr, std::string* prefix) const {
  int bits = family == NP_FAMILY_V4 ? 32 : 128;
  std::string a = Bytes(addr, static_cast<size_t>(bits / 8));
  auto host = hosts_.find(std::string(1, static_cast<char>(family)) + a +
                          std::string(static_cast<size_t>(16 - bits / 8), '\0'));
  if (host != hosts_.end()) {
    if (prefix != nullptr) {
      *prefix = absl::StrCat("np_ident_hosts[", AddrText(family, addr), "]");
    }
    return host->second;
  }
  for (int len = bits; len >= 0; --len) {
    auto it = ident_.find({family * 1000 + len, Masked(a, len)});
    if (it != ident_.end()) {
      if (prefix != nullptr) {
        std::string masked = Masked(a, len);
        *prefix = absl::StrCat(
            family == NP_FAMILY_V4 ? "np_ident4[" : "np_ident6[",
            AddrText(family, reinterpret_cast<const uint8_t*>(masked.data())), "/", len, "]");
      }
      return it->second;
    }
  }
  return NP_IDENTITY_NONE;
}

const np_endpoint* MapModel::EndpointByAddress(uint8_t family, const uint8_t* addr) const {
  uint8_t full[16] = {};
  std::memcpy(full, addr, family == NP_FAMILY_V4 ? 4 : 16);
  auto it = endpoints_.find(std::string(1, static_cast<char>(family)) + Bytes(full, 16));
  return it == endpoints_.end() ? nullptr : it->second;
}

const np_port_value* MapModel::Port(uint32_t table, uint8_t direction, uint8_t protocol,
                                    uint16_t port, std::string* prefix) const {
  np_port_key k{};
  k.table = table;
  k.direction = direction;
  k.protocol = protocol;
  uint8_t be[2] = {static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port)};
  std::memcpy(&k.port, be, 2);
  std::string data = Bytes(&k.table, 8);
  // Every entry's prefix holds the fixed part (np_abi.h): shorter ones need no look.
  for (int len = NP_PORT_KEY_FULL_PREFIX; len >= NP_PORT_KEY_FIXED_PREFIX; --len) {
    auto it = ports_.find({len, Masked(data, len)});
    if (it != ports_.end()) {
      if (prefix != nullptr) {
        np_port_key shown = k;
        shown.prefixlen = static_cast<uint32_t>(len);
        std::string masked = Masked(data, len);
        std::memcpy(&shown.table, masked.data(), 8);
        *prefix = PortKeyText(shown);
      }
      return it->second;
    }
  }
  return nullptr;
}

const np_tier_value* MapModel::Tier(uint32_t table, uint8_t direction, uint8_t tier,
                                    uint8_t protocol, uint16_t port, std::string* prefix) const {
  np_tier_key k = TierKey(table, direction, tier, protocol, port, 16);
  std::string data = Bytes(&k.table, 12);
  for (int len = NP_TIER_KEY_FULL_PREFIX; len >= NP_TIER_KEY_FIXED_PREFIX; --len) {
    auto it = tiers_.find({len, Masked(data, len)});
    if (it == tiers_.end()) continue;
    if (prefix != nullptr) {
      np_tier_key shown = k;
      shown.prefixlen = static_cast<uint32_t>(len);
      std::memcpy(&shown.table, Masked(data, len).data(), 12);
      *prefix = TierKeyText(shown);
    }
    const uint32_t list = it->second->list;
    return list < maps_.tier_lists.size() ? &maps_.tier_lists[list] : nullptr;
  }
  return nullptr;
}

bool MapModel::Member(uint32_t peer_set, uint32_t identity) const {
  return members_.count({peer_set, identity}) > 0;
}

int MapModel::TierVerdict(uint32_t table, uint8_t direction, uint8_t tier, uint8_t protocol,
                          uint16_t port, const std::function<uint32_t()>& identity,
                          const std::string& who, std::vector<std::string>& steps) const {
  std::string prefix;
  const np_tier_value* v = Tier(table, direction, tier, protocol, port, &prefix);
  if (v == nullptr) {
    steps.push_back(absl::StrCat(who, ": np_tiers[table ", table, " ", DirectionName(direction),
                                 " ", TierName(tier), "] no entry or no list -> denied (fail "
                                 "closed)"));
    return NP_TIER_DENY;
  }
  const std::string entry = absl::StrCat(who, ": np_tiers[", prefix, "]");
  if (v->count > NP_TIER_MAX_RULES) {
    steps.push_back(absl::StrCat(entry, " holds ", v->count, " rules, more than ",
                                 NP_TIER_MAX_RULES, " -> denied (fail closed)"));
    return NP_TIER_DENY;
  }
  for (uint32_t i = 0; i < v->count; ++i) {
    const np_tier_rule& r = v->rules[i];
    const std::string rule = absl::StrCat(entry, " rule ", i, " ", ActionName(r.action),
                                          " peer set ", r.peer_set);
    if (!(r.flags & NP_PEERS_ALL)) {
      if (identity() == NP_IDENTITY_NONE) {
        steps.push_back(absl::StrCat(rule, ": the peer has no identity -> denied (fail closed)"));
        return NP_TIER_DENY;
      }
      if (!Member(r.peer_set, identity())) continue;
    }
    if (r.action == NP_TIER_PASS) {
      steps.push_back(absl::StrCat(rule, " matches -> on to the next stage"));
      return 0;
    }
    const bool allow = r.action == NP_TIER_ALLOW;
    steps.push_back(absl::StrCat(rule, " matches -> ", allow ? "allowed" : "denied"));
    return allow ? NP_TIER_ALLOW : NP_TIER_DENY;
  }
  steps.push_back(absl::StrCat(entry, ": no rule matches -> on to the next stage"));
  return 0;
}

SideTrace MapModel::Side(uint32_t endpoint, uint8_t direction, const PacketView& p,
                         const uint8_t* peer) const {
  SideTrace s;
  s.endpoint = endpoint;
  s.direction = direction;
  const np_endpoint_state e = State(endpoint);
  std::string who =
      absl::StrCat(EscapeText(maps_.endpoint_names[endpoint]), " ", DirectionName(direction));
  if (!(e.flags & NP_ENDPOINT_SELECTED)) {
    s.steps.push_back(absl::StrCat(who, ": endpoint ", endpoint,
                                   " is not selected by any policy -> allowed"));
    s.allowed = true;
    return s;
  }
  if (e.table >= maps_.tables.size()) {
    s.steps.push_back(absl::StrCat(who, ": np_tables[", e.table, "] missing -> denied"));
    return s;
  }
  const np_table& table = maps_.tables[e.table];
  const std::string flags = absl::StrCat(
      "np_tables[", e.table, "].isolated[", DirectionName(direction), "] = ",
      table.isolated[direction], ", .tiers[", DirectionName(direction), "] = ",
      table.tiers[direction]);
  if (!table.isolated[direction] && !table.tiers[direction]) {
    s.steps.push_back(absl::StrCat(who, ": ", flags, " -> allowed"));
    s.allowed = true;
    return s;
  }
  s.steps.push_back(absl::StrCat(who, ": ", flags));
  const bool port_protocol = p.protocol == 6 || p.protocol == 17 || p.protocol == 132;
  if (port_protocol && !p.has_ports) {
    s.steps.push_back(absl::StrCat(who, ": ", ProtocolName(p.protocol),
                                   " ports unknown -> denied"));
    return s;
  }
  // Looked up once, when a peer set that is not every address is met (as the program reads
  // it: once per side; the trace shows it where it is first needed).
  std::optional<uint32_t> known_identity;
  auto identity = [&]() -> uint32_t {
    if (!known_identity) {
      std::string id_prefix;
      known_identity = AddressIdentity(p.family, peer, &id_prefix);
      s.steps.push_back(
          *known_identity == NP_IDENTITY_NONE
              ? absl::StrCat(who, ": peer ", AddrText(p.family, peer), " has no identity")
              : absl::StrCat(who, ": peer ", AddrText(p.family, peer), " ", id_prefix,
                             " = identity ", *known_identity));
    }
    return *known_identity;
  };
  const uint8_t tier_protocol = port_protocol ? p.protocol : uint8_t{NP_TIER_PROTO_OTHER};
  const uint16_t tier_port = port_protocol ? p.dport : 0;
  if (table.tiers[direction] & NP_TABLE_HAS_ADMIN) {
    int v = TierVerdict(e.table, direction, NP_TIER_ADMIN, tier_protocol, tier_port, identity,
                        who, s.steps);
    if (v != 0) {
      s.allowed = v == NP_TIER_ALLOW;
      return s;
    }
  }
  if (table.isolated[direction]) {
    if (!port_protocol) {
      s.steps.push_back(absl::StrCat(who, ": ", ProtocolName(p.protocol),
                                     " has no ports a NetworkPolicy rule could allow -> denied"));
      return s;
    }
    std::string prefix;
    const np_port_value* v = Port(e.table, direction, p.protocol, p.dport, &prefix);
    if (v == nullptr) {
      s.steps.push_back(absl::StrCat(who, ": np_ports[table ", e.table, " ",
                                     DirectionName(direction), " ", ProtocolName(p.protocol),
                                     " ", p.dport, "] no entry -> denied"));
      return s;
    }
    if (v->flags & NP_PEERS_ALL) {
      s.steps.push_back(absl::StrCat(who, ": np_ports[", prefix, "] = peer set ", v->peer_set,
                                     " (all addresses) -> allowed"));
      s.allowed = true;
      return s;
    }
    const uint32_t peer_identity = identity();
    s.allowed = Member(v->peer_set, peer_identity);
    s.steps.push_back(absl::StrCat(who, ": np_ports[", prefix, "] = peer set ", v->peer_set,
                                   "; np_members[peer set ", v->peer_set, ", identity ",
                                   peer_identity, "] ",
                                   s.allowed ? "present -> allowed" : "absent -> denied"));
    return s;
  }
  if (table.tiers[direction] & NP_TABLE_HAS_BASELINE) {
    s.allowed = TierVerdict(e.table, direction, NP_TIER_BASELINE, tier_protocol, tier_port,
                            identity, who, s.steps) != NP_TIER_DENY;
    if (!s.allowed) return s;
  }
  s.steps.push_back(absl::StrCat(who, ": no tier decides and NetworkPolicy does not isolate "
                                      "-> allowed"));
  s.allowed = true;
  return s;
}

np_endpoint_state MapModel::State(uint32_t endpoint) const {
  if (endpoint < maps_.endpoint_states.size()) {
    return maps_.endpoint_states[endpoint].bank[maps_.config.generation & 1u];
  }
  np_endpoint_state st{};
  if (endpoint < maps_.endpoints.size()) {
    st.table = maps_.endpoints[endpoint].table;
    st.flags = maps_.endpoints[endpoint].flags & NP_ENDPOINT_SELECTED;
  }
  st.identity[0] = st.identity[1] = NP_IDENTITY_BY_ADDRESS;
  return st;
}

uint32_t MapModel::AddressIdentity(uint8_t family, const uint8_t* addr, std::string* prefix) const {
  if (const np_endpoint* ep = EndpointByAddress(family, addr); ep != nullptr) {
    const uint32_t identity = State(ep->id).identity[family == NP_FAMILY_V4 ? 0 : 1];
    if (identity != NP_IDENTITY_BY_ADDRESS) {
      if (prefix != nullptr) *prefix = absl::StrCat("np_endpoint_states[", ep->id, "]");
      return identity;
    }
  }
  return Identity(family, addr, prefix);
}

Decision MapModel::Decide(uint32_t hook, uint32_t self, const PacketView& p) const {
  Decision d;
  const bool from = hook == NP_HOOK_FROM_ENDPOINT;
  const uint8_t* self_peer = from ? p.daddr : p.saddr;
  const uint8_t* other_peer = from ? p.saddr : p.daddr;
  const np_endpoint* other = EndpointByAddress(p.family, self_peer);
  if (other != nullptr && other->id == self && (maps_.config.flags & NP_CONFIG_ALLOW_SELF)) {
    d.allowed = true;
    d.self_traffic = true;
    return d;
  }
  d.sides.push_back(Side(self, from ? NP_DIR_EGRESS : NP_DIR_INGRESS, p, self_peer));
  d.allowed = d.sides.back().allowed;
  if (d.allowed && other != nullptr) {
    d.sides.push_back(Side(other->id, from ? NP_DIR_INGRESS : NP_DIR_EGRESS, p, other_peer));
    d.allowed = d.sides.back().allowed;
  }
  return d;
}

// ---------------------------------------------------------------------------------------
// In-place policy edits

namespace {

template <typename K, typename V>
void SortByKeyBytes(std::vector<std::pair<K, V>>& v) {
  std::sort(v.begin(), v.end(), [](const auto& x, const auto& y) {
    return std::memcmp(&x.first, &y.first, sizeof(K)) < 0;
  });
}

bool SameTableEntries(const TableEntries& a, const TableEntries& b) {
  if (!SameBytes(a.value, b.value) || !SamePairs(a.ports, b.ports) ||
      a.tiers.size() != b.tiers.size() || a.lists.size() != b.lists.size()) {
    return false;
  }
  for (size_t i = 0; i < a.tiers.size(); ++i) {
    if (!SameBytes(a.tiers[i].first, b.tiers[i].first) ||
        !SameBytes(a.lists[a.tiers[i].second], b.lists[b.tiers[i].second])) {
      return false;
    }
  }
  return true;
}

// Each IR table's entries of `maps` (which BuildMaps made: IR numbers), and with them the
// physical tier list each of a table's lists is (the IR's list numbers).
struct Grouped {
  std::vector<TableEntries> tables;
  std::vector<std::vector<uint32_t>> table_lists;
  std::vector<std::vector<uint32_t>> peer_sets;
};
// The tables' part of Group; returns one past the highest peer set named.
uint32_t GroupTables(const MapContents& maps, Grouped& g) {
  g.tables.resize(maps.tables.size());
  g.table_lists.resize(maps.tables.size());
  for (size_t t = 0; t < maps.tables.size(); ++t) g.tables[t].value = maps.tables[t];
  uint32_t peer_sets = 0;
  auto name = [&](TableEntries& e, uint32_t peer_set, bool all) {
    if (!all) e.peer_sets.push_back(peer_set);
    e.named.push_back(peer_set);
    peer_sets = std::max(peer_sets, peer_set + 1);
  };
  for (const auto& [k, v] : maps.ports) {
    if (k.table >= g.tables.size()) continue;  // BuildMaps makes none
    TableEntries& e = g.tables[k.table];
    np_port_key key = k;
    key.table = 0;
    e.ports.emplace_back(key, v);
    name(e, v.peer_set, (v.flags & NP_PEERS_ALL) != 0);
  }
  for (const auto& [k, ref] : maps.tiers) {
    if (k.table >= g.tables.size() || ref.list >= maps.tier_lists.size()) continue;
    TableEntries& e = g.tables[k.table];
    std::vector<uint32_t>& lists = g.table_lists[k.table];
    auto it = std::find(lists.begin(), lists.end(), ref.list);
    if (it == lists.end()) {
      lists.push_back(ref.list);
      e.lists.push_back(maps.tier_lists[ref.list]);
      const np_tier_value& l = maps.tier_lists[ref.list];
      for (uint32_t i = 0; i < std::min<uint32_t>(l.count, NP_TIER_MAX_RULES); ++i) {
        name(e, l.rules[i].peer_set, (l.rules[i].flags & NP_PEERS_ALL) != 0);
      }
      it = lists.end() - 1;
    }
    np_tier_key key = k;
    key.table = 0;
    e.tiers.emplace_back(key, static_cast<uint32_t>(it - lists.begin()));
  }
  for (TableEntries& e : g.tables) {
    SortByKeyBytes(e.ports);
    SortByKeyBytes(e.tiers);
    for (std::vector<uint32_t>* v : {&e.peer_sets, &e.named}) {
      std::sort(v->begin(), v->end());
      v->erase(std::unique(v->begin(), v->end()), v->end());
    }
  }
  return peer_sets;
}
Grouped Group(const MapContents& maps) {
  Grouped g;
  uint32_t peer_sets = GroupTables(maps, g);
  for (const np_member_key& k : maps.members) peer_sets = std::max(peer_sets, k.peer_set + 1);
  g.peer_sets.resize(peer_sets);
  for (const np_member_key& k : maps.members) g.peer_sets[k.peer_set].push_back(k.identity);
  for (auto& ids : g.peer_sets) std::sort(ids.begin(), ids.end());
  return g;
}

// One IR table's entries as Group would find them in BuildMaps' output, encoded alone;
// `longest` receives its longest tier list.
TableEntries EncodeTable(const ir::Table& table, PeerSetAll all_peers, size_t* longest) {
  MapContents m;
  std::set<uint32_t> member_sets;
  std::map<std::string, uint32_t> list_ids;
  AppendTable(table, 0, all_peers, m, member_sets, list_ids);
  *longest = m.longest_tier_list;
  Grouped g;
  GroupTables(m, g);
  return std::move(g.tables[0]);
}

bool Installed(const PolicyLayout& l, uint32_t peer_set) {
  return peer_set < l.peer_set_slot.size() && l.peer_set_slot[peer_set] != NP_IDENTITY_NONE;
}
// Whether IR table `t` has entries in the maps (a table appended by a delta has none until
// an edit writes it: CommitPolicyEdit).
bool TableInstalled(const PolicyLayout& l, uint32_t t) {
  return t < l.table_slot.size() && l.table_slot[t] != NP_IDENTITY_NONE;
}

// The writes that turn `live` into a layout where `sets` have the given members (each under
// a peer set number never used before) and `tables` the given entries (each under a
// physical table no bank names, its lists in list slots no live table names), the bank of
// `next_generation` pointing at them; the cleanup deletes what they replace. `tables` must
// hold every installed table that names a peer set of `sets` (its entries name the set's
// new number). The one planner of both PlanPolicyEdit and PlanPolicyEditFromDelta.
absl::StatusOr<PolicyEdit> PlanChanges(const PolicyLayout& live,
                                       std::vector<PolicyEdit::PeerSetChange> sets,
                                       std::vector<PolicyEdit::TableChange> tables,
                                       uint32_t next_generation) {
  PolicyEdit edit;
  // Numbers freed by earlier edits first (maps.h PolicyLayout: reused after the grace
  // period), from the back of the list; then numbers never used.
  const size_t reused = std::min(sets.size(), live.free_peer_set_slots.size());
  if (sets.size() - reused > NP_IDENTITY_NONE - live.next_peer_set_slot) {
    return absl::FailedPreconditionError("peer set numbers are used up");
  }
  edit.next_peer_set_slot = live.next_peer_set_slot;
  edit.free_peer_set_slots_taken = reused;
  absl::flat_hash_map<uint32_t, uint32_t> new_slot;  // IR peer set -> its new number
  for (size_t i = 0; i < sets.size(); ++i) {
    PolicyEdit::PeerSetChange& c = sets[i];
    c.slot = i < reused ? live.free_peer_set_slots[live.free_peer_set_slots.size() - 1 - i]
                        : edit.next_peer_set_slot++;
    new_slot[c.peer_set] = c.slot;
    edit.changed_peer_sets.push_back(c.peer_set);
    if (c.peer_set < live.peer_sets.size()) {
      for (uint32_t id : live.peer_sets[c.peer_set]) {
        edit.cleanup.member_deletes.push_back({live.peer_set_slot[c.peer_set], id});
      }
    }
    for (uint32_t id : c.members) edit.member_adds.push_back({c.slot, id});
  }
  // A peer set's physical number once the edit is written (past the layout: unchanged, as
  // ALL ones).
  auto physical_set = [&](uint32_t p) {
    auto it = new_slot.find(p);
    if (it != new_slot.end()) return it->second;
    return p < live.peer_set_slot.size() ? live.peer_set_slot[p] : p;
  };
  // Free numbers are taken in increasing order and each is marked taken as it is, so a
  // number taken here is never one that `live` names: old slots of changed tables stay
  // named by the live bank until the cleanup, and are reused only by a later edit.
  uint32_t free_table = 0, free_list = 0;
  std::map<uint32_t, uint32_t> list_unrefs;  // physical list -> references dropped
  for (PolicyEdit::TableChange& c : tables) {
    const uint32_t t = c.table;
    const TableEntries& e = c.entries;
    edit.changed_tables.push_back(t);
    while (free_table < live.capacity.tables && live.table_used[free_table]) ++free_table;
    if (free_table >= live.capacity.tables) {
      return absl::FailedPreconditionError("np_tables has no room for the edit");
    }
    // A table new to the maps (appended by a delta) has no old entries to delete, and its
    // slots must fit the array (PolicyRoom leaves room for a few).
    const bool installed = TableInstalled(live, t);
    if (std::max(NP_TABLE_SLOT(t, next_generation), NP_TABLE_SLOT(t, next_generation + 1)) >=
        live.capacity.table_slots) {
      return absl::FailedPreconditionError(
          absl::StrCat("np_table_slots has no room for table ", t));
    }
    const uint32_t old_slot = installed ? live.table_slot[t] : NP_IDENTITY_NONE;
    c.slot = free_table++;
    edit.table_writes.emplace_back(c.slot, e.value);
    // Its lists, each in a list slot that no live table names (and none earlier in this edit).
    for (np_tier_value physical : e.lists) {
      for (uint32_t i = 0; i < std::min<uint32_t>(physical.count, NP_TIER_MAX_RULES); ++i) {
        physical.rules[i].peer_set = physical_set(physical.rules[i].peer_set);
      }
      uint32_t at = NP_IDENTITY_NONE;
      for (const auto& [written, value] : edit.list_writes) {
        if (SameBytes(value, physical)) at = written;
      }
      if (at == NP_IDENTITY_NONE) {
        while (free_list < live.capacity.tier_lists && live.list_refs[free_list] != 0) {
          ++free_list;
        }
        if (free_list >= live.capacity.tier_lists) {
          return absl::FailedPreconditionError("np_tier_lists has no room for the edit");
        }
        at = free_list++;
        edit.list_writes.emplace_back(at, physical);
      }
      c.lists.push_back(at);
    }
    if (installed) {
      for (uint32_t list : live.table_lists[t]) ++list_unrefs[list];
    }
    for (auto [k, v] : e.ports) {
      k.table = c.slot;
      v.peer_set = physical_set(v.peer_set);
      edit.port_adds.emplace_back(k, v);
    }
    for (const auto& [k, index] : e.tiers) {
      np_tier_key key = k;
      key.table = c.slot;
      edit.tier_adds.emplace_back(key, np_tier_ref{c.lists[index]});
    }
    if (installed) {
      for (const auto& [k, v] : live.tables[t].ports) {
        np_port_key key = k;
        key.table = old_slot;
        edit.cleanup.port_deletes.push_back(key);
      }
      for (const auto& [k, index] : live.tables[t].tiers) {
        np_tier_key key = k;
        key.table = old_slot;
        edit.cleanup.tier_deletes.push_back(key);
      }
    }
    edit.slot_writes.emplace_back(NP_TABLE_SLOT(t, next_generation), c.slot);
    edit.cleanup.slot_writes.emplace_back(NP_TABLE_SLOT(t, next_generation + 1), c.slot);
  }
  for (const auto& [list, dropped] : list_unrefs) {
    if (live.list_refs[list] == dropped) edit.cleanup.lists_freed.push_back(list);
  }
  // Room: the new entries are written while the old ones are still there.
  const size_t ports = live.ports_entries + edit.port_adds.size();
  const size_t tiers = live.tiers_entries + edit.tier_adds.size();
  const size_t members = live.members_entries + edit.member_adds.size();
  if (ports > live.capacity.ports || tiers > live.capacity.tiers ||
      members > live.capacity.members) {
    return absl::FailedPreconditionError(
        absl::StrCat("the policy maps have no room for the edit (np_ports ", ports, "/",
                     live.capacity.ports, ", np_tiers ", tiers, "/", live.capacity.tiers,
                     ", np_members ", members, "/", live.capacity.members, ")"));
  }
  edit.ports_entries = ports - edit.cleanup.port_deletes.size();
  edit.tiers_entries = tiers - edit.cleanup.tier_deletes.size();
  edit.members_entries = members - edit.cleanup.member_deletes.size();
  edit.lists_delta = static_cast<long>(edit.list_writes.size()) -
                     static_cast<long>(edit.cleanup.lists_freed.size());
  edit.new_tables = std::move(tables);
  edit.new_peer_sets = std::move(sets);
  return edit;
}

}  // namespace

PolicyCapacity PolicyRoom(const MapContents& maps) {
  auto room = [](size_t n, size_t extra) {
    return static_cast<uint32_t>(std::min<size_t>(n + extra, (size_t{1} << 27)));
  };
  PolicyCapacity c;
  // Two slots a table, and room for 16 tables that deltas append (a pod bringing its table).
  c.table_slots = room(2 * (maps.tables.size() + 16), 0);
  c.tables = room(2 * maps.tables.size(), 16);
  c.ports = room(2 * maps.ports.size(), 256);
  c.tiers = room(2 * maps.tiers.size(), 256);
  c.tier_lists = room(maps.tier_lists.size() + maps.tier_lists.size() / 2, 16);
  c.members = room(maps.members.size() + maps.members.size() / 2, 256);
  return c;
}

PolicyLayout InitialLayout(const MapContents& maps) {
  Grouped g = Group(maps);
  PolicyLayout l;
  l.capacity = PolicyRoom(maps);
  l.tables = std::move(g.tables);
  l.table_lists = std::move(g.table_lists);
  l.peer_sets = std::move(g.peer_sets);
  for (uint32_t t = 0; t < l.tables.size(); ++t) l.table_slot.push_back(t);
  for (uint32_t p = 0; p < l.peer_sets.size(); ++p) l.peer_set_slot.push_back(p);
  l.next_peer_set_slot = static_cast<uint32_t>(l.peer_sets.size());
  l.list_refs.assign(l.capacity.tier_lists, 0);
  for (const auto& lists : l.table_lists) {
    for (uint32_t list : lists) ++l.list_refs[list];
  }
  l.table_used.assign(l.capacity.tables, false);
  for (uint32_t t = 0; t < l.tables.size(); ++t) l.table_used[t] = true;
  l.peer_set_tables.resize(l.peer_sets.size());  // Group: past every peer set named
  for (uint32_t t = 0; t < l.tables.size(); ++t) {
    for (uint32_t p : l.tables[t].named) l.peer_set_tables[p].push_back(t);
  }
  l.ports_entries = maps.ports.size();
  l.tiers_entries = maps.tiers.size();
  l.members_entries = maps.members.size();
  return l;
}

absl::StatusOr<PolicyEdit> PlanPolicyEdit(const PolicyLayout& live, const MapContents& next,
                                          uint32_t next_generation) {
  Grouped g = Group(next);
  // Peer sets: every one whose members differ gets a number never used, its members.
  std::vector<PolicyEdit::PeerSetChange> sets;
  std::vector<bool> set_changed(std::max(g.peer_sets.size(), live.peer_sets.size()), false);
  for (uint32_t p = 0; p < g.peer_sets.size(); ++p) {
    if (p < live.peer_sets.size() && Installed(live, p) && live.peer_sets[p] == g.peer_sets[p]) {
      continue;
    }
    set_changed[p] = true;
    sets.push_back({p, g.peer_sets[p]});
  }
  // A peer set that `next` no longer has members for (a tombstone past its peer sets).
  for (uint32_t p = static_cast<uint32_t>(g.peer_sets.size()); p < live.peer_sets.size(); ++p) {
    if (live.peer_sets[p].empty()) continue;
    set_changed[p] = true;
    sets.push_back({p, {}});
  }
  // Tables: the installed ones whose entries, or a peer set they name, changed.
  std::vector<PolicyEdit::TableChange> tables;
  for (uint32_t t = 0; t < std::min(live.tables.size(), g.tables.size()); ++t) {
    const TableEntries& e = g.tables[t];
    bool changed = !SameTableEntries(live.tables[t], e);
    for (uint32_t p : e.peer_sets) changed = changed || (p < set_changed.size() && set_changed[p]);
    if (changed) tables.push_back({t, std::move(g.tables[t])});
  }
  return PlanChanges(live, std::move(sets), std::move(tables), next_generation);
}

namespace {

// PlanPolicyEditFromDelta's plan. `pod_tables` null: a policy delta (anything but peer sets
// and tables refused; tables the maps do not hold yet are named by no endpoint and are not
// written). Otherwise a pod delta's policy part: its endpoint and range edits are the
// caller's (PlanIdentityPart), and the delta's tables the maps do not hold yet are written
// too, as are the tables of `pod_tables` they lack (tables added endpoints name).
// `members_now` (may be null): installed peer sets whose members a membership edit written
// before this one makes these (MembersInPlace), taken for their live members.
absl::StatusOr<PolicyEdit> PlanPolicyPart(
    const PolicyLayout& live, const ir::CompiledPolicy& from, const ir::CompiledPolicyDelta& delta,
    uint32_t next_generation, const std::set<uint32_t>* pod_tables,
    const std::map<uint32_t, std::vector<uint32_t>>* members_now = nullptr) {
  // Malformed, as ApplyDelta checks it (before anything is planned).
  const absl::StatusOr<uint32_t> identities = IdentitiesAfter(from, delta);
  if (!identities.ok()) return identities.status();
  if (pod_tables == nullptr && !delta.identities().empty()) {
    return absl::FailedPreconditionError("the delta appends identities: a pod delta's form");
  }
  auto live_members = [&](uint32_t p) -> const std::vector<uint32_t>& {
    if (members_now != nullptr) {
      auto it = members_now->find(p);
      if (it != members_now->end()) return it->second;
    }
    return live.peer_sets[p];
  };
  const uint32_t peer_sets = static_cast<uint32_t>(from.peer_sets_size());
  uint32_t peer_sets_after = peer_sets;
  for (int e = 0; e < delta.peer_sets_size(); ++e) {
    const ir::PeerSet& set = delta.peer_sets(e);
    if ((e > 0 && set.id() <= delta.peer_sets(e - 1).id()) || set.id() > peer_sets_after) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer_sets[", e, "]: id ", set.id(), " is not after the edit before it, ",
                       "or leaves a gap past the program's ", peer_sets_after, " items"));
    }
    if (set.id() == peer_sets_after) ++peer_sets_after;
    if (absl::Status s = CheckPeerSet(set, set.id(), *identities);
        !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("peer_sets[", e, "]: ", s.message()));
    }
  }
  uint32_t tables_after = static_cast<uint32_t>(from.tables_size());
  for (int e = 0; e < delta.tables_size(); ++e) {
    const ir::Table& table = delta.tables(e);
    if ((e > 0 && table.id() <= delta.tables(e - 1).id()) || table.id() > tables_after) {
      return absl::InvalidArgumentError(
          absl::StrCat("tables[", e, "]: id ", table.id(), " is not after the edit before it, ",
                       "or leaves a gap past the program's ", tables_after, " items"));
    }
    if (table.id() == tables_after) ++tables_after;
    if (absl::Status s = CheckTable(table, table.id(), peer_sets_after); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("tables[", e, "]: ", s.message()));
    }
  }
  if (pod_tables == nullptr && (!delta.ipv4().empty() || !delta.ipv6().empty() ||
                                !delta.endpoints().empty() || !delta.identity_pods().empty())) {
    return absl::FailedPreconditionError(
        "the delta changes address ranges, endpoints or identities' pods too");
  }
  // The next program's peer sets and tables: the delta's, else `from`'s.
  auto delta_set = [&](uint32_t p) -> const ir::PeerSet* {
    auto it = std::lower_bound(delta.peer_sets().begin(), delta.peer_sets().end(), p,
                               [](const ir::PeerSet& s, uint32_t id) { return s.id() < id; });
    return it != delta.peer_sets().end() && it->id() == p ? &*it : nullptr;
  };
  auto set_of = [&](uint32_t p) -> const ir::PeerSet& {
    const ir::PeerSet* s = delta_set(p);
    return s != nullptr ? *s : from.peer_sets(static_cast<int>(p));
  };
  auto table_of = [&](uint32_t t) -> const ir::Table& {
    auto it = std::lower_bound(delta.tables().begin(), delta.tables().end(), t,
                               [](const ir::Table& s, uint32_t id) { return s.id() < id; });
    return it != delta.tables().end() && it->id() == t ? *it : from.tables(static_cast<int>(t));
  };
  auto all_peers = [&](uint32_t p) { return set_of(p).all(); };
  auto members_of = [&](const ir::PeerSet& s) {
    return s.all() ? std::vector<uint32_t>()
                   : std::vector<uint32_t>(s.identities().begin(), s.identities().end());
  };
  // Peer sets whose installed members change (new members by IR number), and the tables
  // to encode: the delta's installed ones, and every installed one naming a peer set whose
  // members or `all` change (its entries name the set's new number, or flags change).
  std::map<uint32_t, std::vector<uint32_t>> set_changes;
  std::set<uint32_t> to_encode;
  auto names_changed = [&](uint32_t p) {
    if (p >= live.peer_set_tables.size()) return;
    for (uint32_t t : live.peer_set_tables[p]) to_encode.insert(t);
  };
  for (const ir::PeerSet& set : delta.peer_sets()) {
    std::vector<uint32_t> members = members_of(set);
    const bool installed = Installed(live, set.id());
    const bool flag_changed = set.id() < peer_sets &&
                              from.peer_sets(static_cast<int>(set.id())).all() != set.all();
    if (installed ? live_members(set.id()) != members : !members.empty()) {
      set_changes[set.id()] = std::move(members);
      names_changed(set.id());
    } else if (flag_changed) {
      names_changed(set.id());
    }
  }
  for (const ir::Table& table : delta.tables()) {
    if (TableInstalled(live, table.id()) || pod_tables != nullptr) to_encode.insert(table.id());
  }
  if (pod_tables != nullptr) {
    for (uint32_t t : *pod_tables) {
      if (!TableInstalled(live, t)) to_encode.insert(t);
    }
  }
  // Encode until no table names a peer set whose members are not installed: a set that a
  // rewritten table now names, not installed before (no installed table named it), gets
  // its members, and the tables naming it are rewritten too.
  std::map<uint32_t, TableEntries> encoded;
  while (!to_encode.empty()) {
    const uint32_t t = *to_encode.begin();
    to_encode.erase(to_encode.begin());
    if (encoded.count(t) != 0) continue;
    size_t longest = 0;
    TableEntries e = EncodeTable(table_of(t), all_peers, &longest);
    if (longest > NP_TIER_MAX_RULES) {
      return absl::FailedPreconditionError(
          absl::StrCat("table ", t, ": a tier list of ", longest, " rules, past np_abi.h "
                       "NP_TIER_MAX_RULES (", NP_TIER_MAX_RULES, ")"));
    }
    for (uint32_t q : e.peer_sets) {
      if (set_changes.count(q) != 0) continue;
      const ir::PeerSet& set = set_of(q);
      if (Installed(live, q) &&
          std::equal(live_members(q).begin(), live_members(q).end(), set.identities().begin(),
                     set.identities().end())) {
        continue;
      }
      set_changes[q] = members_of(set);
      names_changed(q);
    }
    encoded.emplace(t, std::move(e));
  }
  std::vector<PolicyEdit::PeerSetChange> sets;
  for (auto& [p, members] : set_changes) sets.push_back({p, std::move(members)});
  std::vector<PolicyEdit::TableChange> tables;
  for (auto& [t, e] : encoded) {
    bool changed = !TableInstalled(live, t) || !SameTableEntries(live.tables[t], e);
    for (uint32_t p : e.peer_sets) changed = changed || set_changes.count(p) != 0;
    if (changed) tables.push_back({t, std::move(e)});
  }
  return PlanChanges(live, std::move(sets), std::move(tables), next_generation);
}

// The delta's identity_pods edit of identity `id`, or null.
const ir::IdentityPodsEdit* PodsEdit(const ir::CompiledPolicyDelta& delta, uint32_t id) {
  auto it = std::lower_bound(
      delta.identity_pods().begin(), delta.identity_pods().end(), id,
      [](const ir::IdentityPodsEdit& edit, uint32_t v) { return edit.identity() < v; });
  return it != delta.identity_pods().end() && it->identity() == id ? &*it : nullptr;
}
// Whether `delta` makes identity `id` one that addresses carry from one that none does:
// appended, or an unused one of `from` (np/lower_align.h: no pods, not external, in no
// range) given pods. Read from the identities' pods and `external`, what the IR says of
// the addresses that carry them (proto/compiled.proto Identity), so only identities whose
// pods the delta edits qualify.
bool ComesIntoUse(const ir::CompiledPolicy& from, const ir::CompiledPolicyDelta& delta,
                  uint32_t id) {
  if (id >= static_cast<uint32_t>(from.identities_size())) return true;  // appended
  const ir::Identity& i = from.identities(static_cast<int>(id));
  const ir::IdentityPodsEdit* edit = PodsEdit(delta, id);
  return edit != nullptr && i.pods_size() == 0 && !i.external();
}
// The reverse: an identity of `from` whose pods the delta empties, not external (retired).
bool GoesOutOfUse(const ir::CompiledPolicy& from, const ir::CompiledPolicyDelta& delta,
                  uint32_t id) {
  if (id >= static_cast<uint32_t>(from.identities_size())) return false;
  const ir::IdentityPodsEdit* edit = PodsEdit(delta, id);
  return edit != nullptr && PodsAfterEdit(from, delta, *edit) == 0 &&
         !from.identities(static_cast<int>(id)).external();
}

// PodPolicyEdit::members: the delta's installed peer sets whose members change only by
// identities coming into use (added) or going out of use (removed), keeping `all`.
// `members_now` receives their members once it is written.
absl::StatusOr<PolicyEdit> PlanMembersInPlace(
    const PolicyLayout& live, const ir::CompiledPolicy& from, const ir::CompiledPolicyDelta& delta,
    std::map<uint32_t, std::vector<uint32_t>>& members_now) {
  PolicyEdit edit;
  size_t adds = 0, deletes = 0;
  for (const ir::PeerSet& set : delta.peer_sets()) {
    const uint32_t q = set.id();
    if (q >= static_cast<uint32_t>(from.peer_sets_size()) || !Installed(live, q) || set.all() ||
        from.peer_sets(static_cast<int>(q)).all() ||
        !std::is_sorted(set.identities().begin(), set.identities().end())) {
      continue;  // PlanPolicyPart's (a new number, tables naming it rewritten) or malformed
    }
    const std::vector<uint32_t>& now = live.peer_sets[q];
    std::vector<uint32_t> added, removed;
    std::set_difference(set.identities().begin(), set.identities().end(), now.begin(), now.end(),
                        std::back_inserter(added));
    std::set_difference(now.begin(), now.end(), set.identities().begin(), set.identities().end(),
                        std::back_inserter(removed));
    if (!std::all_of(added.begin(), added.end(),
                     [&](uint32_t id) { return ComesIntoUse(from, delta, id); }) ||
        !std::all_of(removed.begin(), removed.end(),
                     [&](uint32_t id) { return GoesOutOfUse(from, delta, id); })) {
      continue;
    }
    const uint32_t slot = live.peer_set_slot[q];
    for (uint32_t id : added) edit.member_adds.push_back({slot, id});
    for (uint32_t id : removed) edit.cleanup.member_deletes.push_back({slot, id});
    adds += added.size();
    deletes += removed.size();
    std::vector<uint32_t> members(set.identities().begin(), set.identities().end());
    members_now[q] = members;
    if (added.empty() && removed.empty()) continue;
    edit.changed_peer_sets.push_back(q);
    edit.new_peer_sets.push_back({q, std::move(members), slot});
  }
  if (live.members_entries + adds > live.capacity.members) {
    return absl::FailedPreconditionError(
        absl::StrCat("np_members has no room for the edit (", live.members_entries + adds, "/",
                     live.capacity.members, ")"));
  }
  edit.next_peer_set_slot = live.next_peer_set_slot;
  edit.ports_entries = live.ports_entries;
  edit.tiers_entries = live.tiers_entries;
  edit.members_entries = live.members_entries + adds - deletes;
  return edit;
}

// `members` (PlanMembersInPlace's, planned from the same layout) written with `policy`'s step
// 1, its deletes with the cleanup. FailedPrecondition when np_members lacks the room for both.
absl::Status MergeMembers(const PolicyLayout& live, PolicyEdit&& members, PolicyEdit& policy) {
  if (live.members_entries + policy.member_adds.size() + members.member_adds.size() >
      live.capacity.members) {
    return absl::FailedPreconditionError("np_members has no room for the edit");
  }
  policy.members_entries += members.member_adds.size();
  policy.members_entries -= members.cleanup.member_deletes.size();
  policy.member_adds.insert(policy.member_adds.end(), members.member_adds.begin(),
                            members.member_adds.end());
  policy.cleanup.member_deletes.insert(policy.cleanup.member_deletes.end(),
                                       members.cleanup.member_deletes.begin(),
                                       members.cleanup.member_deletes.end());
  policy.changed_peer_sets.insert(policy.changed_peer_sets.end(),
                                  members.changed_peer_sets.begin(), members.changed_peer_sets.end());
  for (PolicyEdit::PeerSetChange& c : members.new_peer_sets) {
    policy.new_peer_sets.push_back(std::move(c));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PolicyEdit> PlanPolicyEditFromDelta(const PolicyLayout& live,
                                                   const ir::CompiledPolicy& from,
                                                   const ir::CompiledPolicyDelta& delta,
                                                   uint32_t next_generation) {
  return PlanPolicyPart(live, from, delta, next_generation, /*pod_tables=*/nullptr);
}

absl::StatusOr<PodPolicyEdit> PlanPodPolicyEditFromDelta(
    const PolicyLayout& live, const ir::CompiledPolicy& from,
    const ir::CompiledPolicyDelta& delta,
    const std::vector<std::pair<np_endpoint_addr_key, np_endpoint>>& local,
    uint32_t next_endpoint_id, uint32_t next_generation,
    const std::vector<uint32_t>& reusable_endpoint_ids) {
  // Table ids are checked by PlanPolicyPart; the count here only bounds added endpoints'.
  uint32_t tables_after = static_cast<uint32_t>(from.tables_size());
  for (const ir::Table& t : delta.tables()) tables_after = std::max(tables_after, t.id() + 1);
  PodPolicyEdit out;
  absl::StatusOr<IdentityEdit> identities =
      PlanIdentityPart(from, delta, local, next_endpoint_id, tables_after, reusable_endpoint_ids);
  if (!identities.ok()) return identities.status();
  out.identities = std::move(*identities);
  // How many of the node's endpoints name each table before and after the delta (the
  // node's endpoints: a walk of them, not of the cluster).
  // Counts by table id (a vector: this walk of 1,000 endpoints through a std::map was a
  // tenth of a table-bringing pod add's backend time). Ids past `tables_after` are
  // malformed and refused by PlanPolicyPart; they are not counted.
  std::vector<int> named_before(tables_after), named_after;
  for (const ir::Endpoint& e : from.endpoints()) {
    if (e.selected() && e.table() < tables_after) ++named_before[e.table()];
  }
  named_after = named_before;
  for (const ir::EndpointSliceEdit& edit : delta.endpoints()) {
    for (uint32_t i = edit.begin(); i < edit.end(); ++i) {
      const ir::Endpoint& e = from.endpoints(static_cast<int>(i));
      if (e.selected() && e.table() < tables_after) --named_after[e.table()];
    }
    for (const ir::Endpoint& e : edit.endpoints()) {
      if (e.selected() && e.table() < tables_after) ++named_after[e.table()];
    }
  }
  std::set<uint32_t> pod_tables;
  for (const np_endpoint& v : out.identities.added_values) {
    if (v.flags & NP_ENDPOINT_SELECTED) pod_tables.insert(v.table);
  }
  for (const IdentityEdit::StateChange& c : out.identities.state_changes) {  // moved pods
    if (c.after.flags & NP_ENDPOINT_SELECTED) pod_tables.insert(c.after.table);
  }
  auto named = [](const std::vector<int>& counts, const PolicyEdit& edit) {
    for (uint32_t t : edit.changed_tables) {
      if (t < counts.size() && counts[t] > 0) return std::optional<uint32_t>(t);
    }
    return std::optional<uint32_t>();
  };
  std::map<uint32_t, std::vector<uint32_t>> members_now;
  absl::StatusOr<PolicyEdit> members = PlanMembersInPlace(live, from, delta, members_now);
  if (!members.ok()) return members.status();
  absl::StatusOr<PolicyEdit> policy =
      PlanPolicyPart(live, from, delta, next_generation, &pod_tables, &members_now);
  if (!policy.ok()) return policy.status();
  const std::optional<uint32_t> before = named(named_before, *policy);
  if (!before.has_value()) {
    if (absl::Status s = MergeMembers(live, std::move(*members), *policy); !s.ok()) return s;
    // No endpoint of `from` names a changed table (a table brought for an added pod, peer
    // sets only such tables name): no run reads them before the endpoint writes, so both
    // banks may point at them at once and one bump ends the edit.
    for (const PolicyEdit::TableChange& c : policy->new_tables) {
      policy->slot_writes.emplace_back(NP_TABLE_SLOT(c.table, next_generation + 1), c.slot);
    }
    out.policy = std::move(*policy);
    out.policy_first = true;
    return out;
  }
  if (const std::optional<uint32_t> after = named(named_after, *policy); after.has_value()) {
    // Tables in use change: in place only as a banked edit (maps.h PodPolicyEdit::banked).
    const IdentityEdit& ids = out.identities;
    if (!ids.EndpointsChange() && ids.remote_changes == 0) {
      absl::StatusOr<PolicyEdit> banked =
          PlanPolicyPart(live, from, delta, next_generation, &pod_tables, nullptr);
      if (!banked.ok()) return banked.status();
      if (live.members_entries + banked->member_adds.size() > live.capacity.members) {
        return absl::FailedPreconditionError("np_members has no room for the edit");
      }
      out.policy = std::move(*banked);
      out.policy_first = true;
      out.banked = true;
      return out;
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "table ", *before, " changes while an endpoint names it before the delta, and table ",
        *after, " while one names it after, with ",
        ids.EndpointsChange() ? "endpoints added or deleted"
                              : "addresses of other nodes changing identity"));
  }
  // Endpoints of `from` name a changed table but none of `next` does (a table retired with
  // its last endpoint): the policy edit is left unwritten (maps.h PodPolicyEdit), the
  // membership edit is written first.
  out.policy = std::move(*policy);
  out.policy_first = false;
  out.members = std::move(*members);
  return out;
}

void CommitPolicyEdit(PolicyLayout& l, PolicyEdit&& edit) {
  l.free_peer_set_slots.resize(l.free_peer_set_slots.size() - edit.free_peer_set_slots_taken);
  for (PolicyEdit::PeerSetChange& c : edit.new_peer_sets) {
    if (c.peer_set >= l.peer_sets.size()) {
      l.peer_sets.resize(c.peer_set + 1);
      l.peer_set_slot.resize(c.peer_set + 1, NP_IDENTITY_NONE);
    }
    // The old number, renumbered away (not a membership edit in place, which keeps it), is
    // read by no run once this edit's cleanup is written: a later edit may take it.
    const uint32_t old_slot = l.peer_set_slot[c.peer_set];
    if (old_slot != NP_IDENTITY_NONE && old_slot != c.slot) {
      l.free_peer_set_slots.push_back(old_slot);
    }
    l.peer_sets[c.peer_set] = std::move(c.members);
    l.peer_set_slot[c.peer_set] = c.slot;
  }
  for (PolicyEdit::TableChange& c : edit.new_tables) {
    const uint32_t t = c.table;
    if (t >= l.tables.size()) {  // appended (tables between: not installed)
      l.tables.resize(t + 1);
      l.table_slot.resize(t + 1, NP_IDENTITY_NONE);
      l.table_lists.resize(t + 1);
    }
    for (uint32_t p : l.tables[t].named) {
      std::vector<uint32_t>& v = l.peer_set_tables[p];
      if (auto it = std::find(v.begin(), v.end(), t); it != v.end()) v.erase(it);
    }
    for (uint32_t p : c.entries.named) {
      if (p >= l.peer_set_tables.size()) l.peer_set_tables.resize(p + 1);
      l.peer_set_tables[p].push_back(t);
    }
    for (uint32_t list : l.table_lists[t]) --l.list_refs[list];
    for (uint32_t list : c.lists) ++l.list_refs[list];
    if (l.table_slot[t] != NP_IDENTITY_NONE) {
      l.table_used[l.table_slot[t]] = false;  // free once the cleanup is written
    }
    l.table_used[c.slot] = true;
    l.tables[t] = std::move(c.entries);
    l.table_slot[t] = c.slot;
    l.table_lists[t] = std::move(c.lists);
  }
  l.next_peer_set_slot = edit.next_peer_set_slot;
  l.ports_entries = edit.ports_entries;
  l.tiers_entries = edit.tiers_entries;
  l.members_entries = edit.members_entries;
}

}  // namespace np::backends::ebpf
