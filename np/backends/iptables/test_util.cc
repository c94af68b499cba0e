#include "np/backends/iptables/test_util.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "np/backends/util.h"

namespace np::backends::iptables::testutil {
namespace {

using U128 = unsigned __int128;

std::string ToBytes(U128 v, int f) {
  int n = f == 0 ? 4 : 16;
  std::string out(n, '\0');
  for (int i = 0; i < n; ++i) out[n - 1 - i] = static_cast<char>(static_cast<uint8_t>(v >> (8 * i)));
  return out;
}

U128 Max(int f) { return f == 0 ? U128{0xffffffffu} : ~U128{0}; }

// [first, last] as the fewest prefixes (an independent reimplementation of the lowering's).
std::vector<std::string> Cidrs(U128 first, U128 last, int f) {
  const int width = f == 0 ? 32 : 128;
  std::vector<std::string> out;
  while (true) {
    int host = 0;
    while (host < width) {
      U128 size_mask = (host + 1 == 128) ? ~U128{0} : ((U128{1} << (host + 1)) - 1);
      if ((first & size_mask) != 0) break;
      if ((first | size_mask) > last) break;
      ++host;
    }
    out.push_back(absl::StrCat(AddressText(ToBytes(first, f)), "/", width - host));
    U128 end = host == 128 ? ~U128{0} : first | ((U128{1} << host) - 1);
    if (end >= last) break;
    first = end + 1;
  }
  return out;
}

}  // namespace

ir::CompiledPolicy RandomIr(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  ir::CompiledPolicy ir;
  const int identities = 2 + uniform(6);
  for (int i = 0; i < identities; ++i) ir.add_identities()->set_id(i);
  struct PodAddr {
    std::string pod;
    std::string text;
  };
  std::vector<PodAddr> pods;
  for (int f = 0; f < 2; ++f) {
    // Cut points: a few random ones plus pod addresses inside 10.0.0.0/24 or fd00::/120.
    std::set<U128> cuts;
    const U128 base = f == 0 ? U128{0x0a000000u} : (U128{0xfd00} << 112);
    const int n_cuts = uniform(5);
    for (int i = 0; i < n_cuts; ++i) {
      U128 c = f == 0 ? U128{static_cast<uint32_t>(rng())} : (U128{rng()} << 64 | rng());
      if (uniform(2) == 0) c = base + uniform(256);
      if (c != 0) cuts.insert(c);
    }
    std::set<U128> pod_addresses;
    const int n_pods = f == 1 && uniform(3) == 0 ? 0 : 1 + uniform(5);
    for (int i = 0; i < n_pods; ++i) pod_addresses.insert(base + 1 + uniform(250));
    for (U128 a : pod_addresses) {
      cuts.insert(a);
      if (a + 1 <= Max(f)) cuts.insert(a + 1);
    }
    U128 start = 0;
    std::vector<U128> starts = {0};
    for (U128 c : cuts) starts.push_back(c);
    for (size_t i = 0; i < starts.size(); ++i) {
      start = starts[i];
      U128 last = i + 1 < starts.size() ? starts[i + 1] - 1 : Max(f);
      ir::AddressRange* r = f == 0 ? ir.add_ipv4() : ir.add_ipv6();
      r->set_first(ToBytes(start, f));
      r->set_last(ToBytes(last, f));
      r->set_identity(uniform(identities));
      if (start == last && pod_addresses.count(start) > 0) {
        std::string pod = absl::StrCat("ns/p", f, "-", static_cast<int>(start & 0xff));
        r->set_pod(pod);
        pods.push_back(PodAddr{pod, AddressText(ToBytes(start, f))});
      }
      for (const std::string& c : Cidrs(start, last, f)) r->add_cidrs(c);
    }
  }
  const int peer_sets = 1 + uniform(5);
  for (int s = 0; s < peer_sets; ++s) {
    ir::PeerSet* set = ir.add_peer_sets();
    set->set_id(s);
    if (uniform(5) == 0) {
      set->set_all(true);
      continue;
    }
    for (int i = 0; i < identities; ++i) {
      if (uniform(2) == 0) set->add_identities(i);
    }
  }
  const int tables = 1 + uniform(3);
  const ir::Protocol protocols[] = {ir::TCP, ir::UDP, ir::SCTP};
  for (int t = 0; t < tables; ++t) {
    ir::Table* table = ir.add_tables();
    table->set_id(t);
    table->add_policies(absl::StrCat("ns/policy-", t));
    for (ir::DirectionPolicy* d : {table->mutable_ingress(), table->mutable_egress()}) {
      d->set_isolated(uniform(3) != 0);
      if (!d->isolated()) continue;
      for (ir::Protocol p : protocols) {
        uint32_t port = 0;
        while (port <= 65535 && uniform(3) != 0) {
          uint32_t first = port + (uniform(2) == 0 ? 0 : uniform(100));
          uint32_t last = std::min<uint32_t>(65535, first + (uniform(4) == 0 ? 65535 : uniform(3)));
          if (first > 65535) break;
          ir::PortRule* rule = d->add_rules();
          rule->set_protocol(p);
          rule->set_first_port(first);
          rule->set_last_port(last);
          rule->set_peer_set(uniform(peer_sets));
          port = last + 1 + uniform(3);
        }
      }
    }
  }
  // Endpoints: pods of the node (some unselected), dual-stack when names pair up.
  std::map<std::string, std::vector<std::string>> ips;
  for (const PodAddr& p : pods) {
    std::string name = p.pod.substr(5);  // "ns/p0-17" -> "17": pods with the same last byte pair up
    ips["ns/p" + name].push_back(p.text);
  }
  for (const auto& [name, addrs] : ips) {
    if (uniform(4) == 0) continue;  // a pod of another node
    ir::Endpoint* e = ir.add_endpoints();
    e->set_namespace_("ns");
    e->set_name(name.substr(3));
    for (const std::string& a : addrs) e->add_ips(a);
    e->set_selected(uniform(4) != 0);
    if (e->selected()) e->set_table(uniform(tables));
  }
  return ir;
}

// The IR read literally (as np/lower_test.cc's interpreter, minus self traffic: a pod's
// traffic to itself never reaches FORWARD).

bool IrAllows(const ir::CompiledPolicy& ir, const std::string& src, const std::string& dst,
              ir::Protocol protocol, uint32_t port) {
  auto endpoint_of = [&](const std::string& bytes) -> const ir::Endpoint* {
    for (const ir::Endpoint& e : ir.endpoints()) {
      for (const std::string& ip : e.ips()) {
        if (*AddressBytes(ip) == bytes) return &e;
      }
    }
    return nullptr;
  };
  auto allows = [&](const ir::DirectionPolicy& d, const std::string& peer) {
    if (!d.isolated()) return true;
    uint32_t id = *IdentityOf(ir, peer);
    for (const ir::PortRule& r : d.rules()) {
      if (r.protocol() != protocol || port < r.first_port() || port > r.last_port()) continue;
      const ir::PeerSet& set = ir.peer_sets(r.peer_set());
      if (set.all()) return true;
      if (std::binary_search(set.identities().begin(), set.identities().end(), id)) return true;
    }
    return false;
  };
  const ir::Endpoint* s = endpoint_of(src);
  const ir::Endpoint* d = endpoint_of(dst);
  if (s != nullptr && s->selected() && !allows(ir.tables(s->table()).egress(), dst)) return false;
  if (d != nullptr && d->selected() && !allows(ir.tables(d->table()).ingress(), src)) return false;
  return true;
}

std::vector<std::string> CidrsOf(const std::string& first, const std::string& last) {
  auto value = [](const std::string& b) {
    U128 v = 0;
    for (char c : b) v = (v << 8) | static_cast<uint8_t>(c);
    return v;
  };
  return Cidrs(value(first), value(last), first.size() == 4 ? 0 : 1);
}

std::string NextAddress(std::string bytes) {
  for (int i = static_cast<int>(bytes.size()) - 1; i >= 0; --i) {
    if (static_cast<uint8_t>(bytes[i]) != 0xff) {
      bytes[i] = static_cast<char>(static_cast<uint8_t>(bytes[i]) + 1);
      return bytes;
    }
    bytes[i] = 0;
  }
  return bytes;
}

ir::CompiledPolicy IrFromPoints(const std::vector<Point>& points) {
  ir::CompiledPolicy ir;
  uint32_t max_identity = 0;
  struct P {
    U128 address;
    uint32_t identity;
    std::string pod;
  };
  std::vector<P> by_family[2];
  for (const Point& p : points) {
    std::string bytes = *AddressBytes(p.address);
    U128 v = 0;
    for (char c : bytes) v = (v << 8) | static_cast<uint8_t>(c);
    by_family[bytes.size() == 4 ? 0 : 1].push_back(P{v, p.identity, p.pod});
    max_identity = std::max(max_identity, p.identity);
  }
  for (uint32_t i = 0; i <= max_identity; ++i) ir.add_identities()->set_id(i);
  for (int f = 0; f < 2; ++f) {
    auto& ps = by_family[f];
    std::sort(ps.begin(), ps.end(), [](const P& a, const P& b) { return a.address < b.address; });
    U128 cursor = 0;
    bool done = false;
    auto add = [&](U128 first, U128 last, uint32_t identity, const std::string& pod) {
      ir::AddressRange* r = f == 0 ? ir.add_ipv4() : ir.add_ipv6();
      r->set_first(ToBytes(first, f));
      r->set_last(ToBytes(last, f));
      r->set_identity(identity);
      r->set_pod(pod);
      for (const std::string& c : Cidrs(first, last, f)) r->add_cidrs(c);
    };
    for (const P& p : ps) {
      if (p.address > cursor) add(cursor, p.address - 1, 0, "");
      add(p.address, p.address, p.identity, p.pod);
      if (p.address == Max(f)) {
        done = true;
        break;
      }
      cursor = p.address + 1;
    }
    if (!done) add(cursor, Max(f), 0, "");
  }
  return ir;
}

}  // namespace np::backends::iptables::testutil
