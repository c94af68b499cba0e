#include "np/backends/ebpf/testing/random_ir.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "np/backends/util.h"

namespace np::backends::ebpf::testing {
namespace {

using u128 = unsigned __int128;

u128 ToU128(const IpAddress& a) {
  if (a.is_v4()) return a.v4();
  return (u128{a.hi()} << 64) | a.lo();
}

IpAddress FromU128(u128 v, bool v6) {
  if (!v6) return IpAddress::V4(static_cast<uint32_t>(v));
  return IpAddress::V6(static_cast<uint64_t>(v >> 64), static_cast<uint64_t>(v));
}

std::string Bytes(const IpAddress& a) {
  uint8_t b[16];
  a.ToBytes(b);
  return std::string(reinterpret_cast<char*>(b), a.is_v4() ? 4 : 16);
}

// Ranges over the whole space of one family from sorted breakpoints; each elementary
// interval gets an identity from `pick`.
template <typename Pick>
void AddRanges(ir::CompiledPolicy& ir, bool v6, std::set<u128> cuts, Pick pick) {
  const int bits = v6 ? 128 : 32;
  const u128 max = v6 ? ~u128{0} : u128{0xffffffffu};
  cuts.insert(0);
  std::vector<u128> starts(cuts.begin(), cuts.end());
  for (size_t i = 0; i < starts.size(); ++i) {
    if (starts[i] > max) break;
    u128 first = starts[i];
    u128 last = (i + 1 < starts.size() && starts[i + 1] <= max) ? starts[i + 1] - 1 : max;
    ir::AddressRange* r = v6 ? ir.add_ipv6() : ir.add_ipv4();
    IpAddress f = FromU128(first, v6), l = FromU128(last, v6);
    r->set_first(Bytes(f));
    r->set_last(Bytes(l));
    std::string pod;
    r->set_identity(pick(first, last, &pod));
    r->set_pod(pod);
    for (const std::string& c : RangeCidrs(f, l)) r->add_cidrs(c);
    (void)bits;
  }
}

}  // namespace

ir::AddressRange* AddRange(ir::CompiledPolicy& ir, const IpAddress& first, const IpAddress& last,
                           uint32_t identity) {
  ir::AddressRange* r = first.is_v6() ? ir.add_ipv6() : ir.add_ipv4();
  r->set_first(Bytes(first));
  r->set_last(Bytes(last));
  r->set_identity(identity);
  for (const std::string& c : RangeCidrs(first, last)) r->add_cidrs(c);
  return r;
}

std::vector<std::string> RangeCidrs(const IpAddress& first, const IpAddress& last) {
  const bool v6 = first.is_v6();
  const int bits = v6 ? 128 : 32;
  u128 lo = ToU128(first), hi = ToU128(last);
  std::vector<std::string> out;
  for (int guard = 0; guard < 512; ++guard) {
    int k = 0;  // block of 2^k addresses at lo
    while (k < bits) {
      u128 size = u128{1} << (k + 1);  // k + 1 <= bits - 1 < 128 unless k + 1 == 128
      if (k + 1 == 128) {
        if (lo == 0 && hi == ~u128{0}) k = 128;
        break;
      }
      if ((lo & (size - 1)) != 0 || lo + size - 1 > hi) break;
      ++k;
    }
    out.push_back(absl::StrCat(FromU128(lo, v6).ToString(), "/", bits - k));
    if (k == bits) break;
    u128 next = lo + (u128{1} << k);
    if (next - 1 >= hi) break;
    lo = next;
  }
  return out;
}

uint64_t FirstSeed() {
  const char* text = std::getenv("NP_TEST_SEED");
  uint64_t seed = 0;
  if (text != nullptr && !absl::SimpleAtoi(text, &seed)) seed = 0;
  return seed;
}

ir::CompiledPolicy RandomIr(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
  auto below = [&](uint64_t n) { return static_cast<uint32_t>(rng() % n); };
  ir::CompiledPolicy ir;
  ir.set_node("node-1");
  ir.set_always_allow_self(chance(30));

  const int externals = 1 + static_cast<int>(below(3));
  const int pods = 1 + static_cast<int>(below(6));
  std::vector<uint32_t> pod_identity;
  int identities = externals;
  for (int i = 0; i < pods; ++i) {
    if (i > 0 && chance(25)) {
      pod_identity.push_back(pod_identity.back());
    } else {
      pod_identity.push_back(static_cast<uint32_t>(identities++));
    }
  }
  for (int i = 0; i < identities; ++i) {
    ir::Identity* id = ir.add_identities();
    id->set_id(static_cast<uint32_t>(i));
    id->set_external(i < externals);
  }
  std::set<uint32_t> v4_used;
  std::vector<IpAddress> v4, v6;
  for (int i = 0; i < pods; ++i) {
    uint32_t host;
    do {
      host = 1 + below(250);
    } while (!v4_used.insert(host).second);
    v4.push_back(IpAddress::V4((10u << 24) | host));
    v6.push_back(IpAddress::V6(0xfd00000000000000ull, host));
    ir.mutable_identities(static_cast<int>(pod_identity[i]))
        ->add_pods(absl::StrCat("ns/p", i));
  }
  std::vector<bool> has_v6(pods);
  for (int i = 0; i < pods; ++i) has_v6[i] = chance(70);

  for (int family = 0; family < 2; ++family) {
    bool is6 = family == 1;
    std::set<u128> cuts;
    std::map<u128, int> pod_at;
    for (int i = 0; i < pods; ++i) {
      if (is6 && !has_v6[i]) continue;
      u128 a = ToU128(is6 ? v6[i] : v4[i]);
      cuts.insert(a);
      cuts.insert(a + 1);
      pod_at[a] = i;
    }
    int blocks = static_cast<int>(below(4));
    for (int b = 0; b < blocks; ++b) {
      int len;
      u128 base;
      if (!is6) {
        static const int kLens[] = {1, 8, 16, 24, 25, 26, 28, 30};
        len = kLens[below(8)];
        base = (u128{10u << 24} | below(256)) & ~((u128{1} << (32 - len)) - 1);
      } else {
        static const int kLens[] = {1, 8, 64, 120, 124, 126};
        len = kLens[below(6)];
        base = ((u128{0xfd00000000000000ull} << 64) | below(256)) &
               ~((u128{1} << (128 - len)) - 1);
      }
      cuts.insert(base);
      cuts.insert(base + (u128{1} << ((is6 ? 128 : 32) - len)));
    }
    if (!is6) cuts.erase(u128{1} << 32);
    AddRanges(ir, is6, cuts, [&](u128 first, u128 last, std::string* pod) -> uint32_t {
      auto it = pod_at.find(first);
      if (it != pod_at.end() && first == last) {
        *pod = absl::StrCat("ns/p", it->second);
        return pod_identity[it->second];
      }
      return below(static_cast<uint64_t>(externals));
    });
  }

  const int sets = 1 + static_cast<int>(below(5));
  for (int s = 0; s < sets; ++s) {
    ir::PeerSet* set = ir.add_peer_sets();
    set->set_id(static_cast<uint32_t>(s));
    if (chance(20)) {
      set->set_all(true);
      continue;
    }
    for (int i = 0; i < identities; ++i) {
      if (chance(40)) set->add_identities(static_cast<uint32_t>(i));
    }
  }
  static const uint32_t kPorts[] = {0, 1, 53, 79, 80, 81, 82, 100, 443, 1000,
                                    1024, 5000, 8080, 65534, 65535};
  const int tables = 1 + static_cast<int>(below(3));
  for (int t = 0; t < tables; ++t) {
    ir::Table* table = ir.add_tables();
    table->set_id(static_cast<uint32_t>(t));
    table->add_policies(absl::StrCat("ns/policy-", t));
    for (ir::DirectionPolicy* d : {table->mutable_ingress(), table->mutable_egress()}) {
      // Tier rules: every action, every protocol (unspecified too), ports that overlap the
      // NetworkPolicy rules' and each other's, so that order decides.
      for (auto [tier, percent] : {std::pair<int, int>{0, 50}, {1, 40}}) {
        if (!chance(percent)) continue;
        const int n = 1 + static_cast<int>(below(6));
        for (int i = 0; i < n; ++i) {
          ir::TierRule* rule = tier == 0 ? d->add_admin() : d->add_baseline();
          static const ir::TierAction kActions[] = {ir::TIER_ALLOW, ir::TIER_DENY, ir::TIER_PASS};
          rule->set_action(kActions[below(3)]);
          static const ir::Protocol kProtocols[] = {ir::PROTOCOL_UNSPECIFIED, ir::TCP, ir::UDP,
                                                    ir::SCTP};
          rule->set_protocol(kProtocols[below(4)]);
          uint32_t a = kPorts[below(15)], b = kPorts[below(15)];
          if (chance(30)) b = a;  // a single port
          if (rule->protocol() == ir::PROTOCOL_UNSPECIFIED) a = 0, b = 65535;
          rule->set_first_port(std::min(a, b));
          rule->set_last_port(std::max(a, b));
          rule->set_peer_set(below(static_cast<uint64_t>(sets)));
          rule->set_origin(absl::StrCat(tier == 0 ? "admin" : "baseline", " rule ", i));
        }
      }
      d->set_isolated(chance(70));
      if (!d->isolated()) continue;
      for (ir::Protocol protocol : {ir::TCP, ir::UDP, ir::SCTP}) {
        if (!chance(60)) continue;
        std::set<uint32_t> picks;
        int n = 1 + static_cast<int>(below(4));
        for (int i = 0; i < 2 * n; ++i) picks.insert(kPorts[below(15)]);
        std::vector<uint32_t> sorted(picks.begin(), picks.end());
        if (chance(15)) sorted = {0, 65535};
        for (size_t i = 0; i < sorted.size(); i += 2) {
          ir::PortRule* rule = d->add_rules();
          rule->set_protocol(protocol);
          rule->set_first_port(sorted[i]);
          rule->set_last_port(i + 1 < sorted.size() && !chance(30) ? sorted[i + 1] : sorted[i]);
          rule->set_peer_set(below(static_cast<uint64_t>(sets)));
        }
      }
    }
  }
  for (int i = 0; i < pods; ++i) {
    ir::Endpoint* e = ir.add_endpoints();
    e->set_namespace_("ns");
    e->set_name(absl::StrCat("p", i));
    e->add_ips(v4[i].ToString());
    if (has_v6[i]) e->add_ips(v6[i].ToString());
    e->set_selected(chance(75));
    if (e->selected()) e->set_table(below(static_cast<uint64_t>(tables)));
  }
  return ir;
}

ir::CompiledPolicy PolicyEvent(const ir::CompiledPolicy& from, uint64_t seed, std::string* what) {
  std::mt19937_64 rng(seed * 7919 + 13);
  ir::CompiledPolicy ir = from;
  auto pick = [&](size_t n) { return static_cast<int>(rng() % n); };
  auto directions = [&]() {
    std::vector<ir::DirectionPolicy*> out;
    for (ir::Table& t : *ir.mutable_tables()) {
      out.push_back(t.mutable_ingress());
      out.push_back(t.mutable_egress());
    }
    return out;
  };
  auto named_by_endpoint = [&](uint32_t table) {
    for (const ir::Endpoint& e : ir.endpoints()) {
      if (e.selected() && e.table() == table) return true;
    }
    return false;
  };
  const int events = 1 + pick(3);
  for (int n = 0; n < events; ++n) {
    std::vector<ir::DirectionPolicy*> dirs = directions();
    switch (pick(8)) {
      case 0: {  // a port rule dropped
        ir::DirectionPolicy* d = dirs[pick(dirs.size())];
        if (d->rules_size() == 0) break;
        d->mutable_rules()->DeleteSubrange(pick(d->rules_size()), 1);
        absl::StrAppend(what, "port rule dropped; ");
        break;
      }
      case 1: {  // a tier rule's action changed, or one dropped
        ir::DirectionPolicy* d = dirs[pick(dirs.size())];
        auto* tier = pick(2) == 0 ? d->mutable_admin() : d->mutable_baseline();
        if (tier->empty()) break;
        const int i = pick(tier->size());
        if (pick(2) == 0) {
          tier->Mutable(i)->set_action(static_cast<ir::TierAction>(1 + pick(3)));
          absl::StrAppend(what, "tier action changed; ");
        } else {
          tier->DeleteSubrange(i, 1);
          absl::StrAppend(what, "tier rule dropped; ");
        }
        break;
      }
      case 2: {  // isolation flipped
        ir::DirectionPolicy* d = dirs[pick(dirs.size())];
        d->set_isolated(!d->isolated());
        absl::StrAppend(what, "isolation flipped; ");
        break;
      }
      case 3: {  // a peer set's identities changed
        ir::PeerSet* p = ir.mutable_peer_sets(pick(ir.peer_sets_size()));
        if (p->all() || ir.identities_size() == 0) break;
        std::set<uint32_t> ids(p->identities().begin(), p->identities().end());
        const uint32_t id = static_cast<uint32_t>(pick(ir.identities_size()));
        if (!ids.erase(id)) ids.insert(id);
        p->clear_identities();
        for (uint32_t i : ids) p->add_identities(i);
        absl::StrAppend(what, "peer set ", p->id(), " changed; ");
        break;
      }
      case 4: {  // a peer set appended, a rule pointed at it
        ir::PeerSet* p = ir.add_peer_sets();
        p->set_id(static_cast<uint32_t>(ir.peer_sets_size() - 1));
        for (int i = 0; i < ir.identities_size(); ++i) {
          if (pick(2) == 0) p->add_identities(static_cast<uint32_t>(i));
        }
        ir::DirectionPolicy* d = dirs[pick(dirs.size())];
        if (d->rules_size() > 0) {
          d->mutable_rules(pick(d->rules_size()))->set_peer_set(p->id());
        } else if (d->admin_size() > 0) {
          d->mutable_admin(pick(d->admin_size()))->set_peer_set(p->id());
        }
        absl::StrAppend(what, "peer set ", p->id(), " appended; ");
        break;
      }
      case 5: {  // a peer set made a tombstone: its rules point at another one
        if (ir.peer_sets_size() < 2) break;
        const uint32_t gone = static_cast<uint32_t>(pick(ir.peer_sets_size()));
        const uint32_t other = (gone + 1) % static_cast<uint32_t>(ir.peer_sets_size());
        for (ir::DirectionPolicy* d : dirs) {
          for (ir::PortRule& r : *d->mutable_rules()) {
            if (r.peer_set() == gone) r.set_peer_set(other);
          }
          for (auto* tier : {d->mutable_admin(), d->mutable_baseline()}) {
            for (ir::TierRule& r : *tier) {
              if (r.peer_set() == gone) r.set_peer_set(other);
            }
          }
        }
        ir.mutable_peer_sets(static_cast<int>(gone))->set_all(false);
        ir.mutable_peer_sets(static_cast<int>(gone))->clear_identities();
        absl::StrAppend(what, "peer set ", gone, " tombstoned; ");
        break;
      }
      case 6: {  // a table no endpoint names made a tombstone
        const uint32_t t = static_cast<uint32_t>(pick(ir.tables_size()));
        if (named_by_endpoint(t)) break;
        ir::Table* table = ir.mutable_tables(static_cast<int>(t));
        table->Clear();
        table->set_id(t);
        absl::StrAppend(what, "table ", t, " tombstoned; ");
        break;
      }
      default: {  // a table appended, named by no endpoint
        ir::Table* table = ir.add_tables();
        *table = ir.tables(pick(ir.tables_size() - 1));
        table->set_id(static_cast<uint32_t>(ir.tables_size() - 1));
        absl::StrAppend(what, "table ", table->id(), " appended; ");
        break;
      }
    }
  }
  return ir;
}

std::vector<IpAddress> ProbeAddresses(const ir::CompiledPolicy& ir, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::set<IpAddress> out;
  for (const auto* ranges : {&ir.ipv4(), &ir.ipv6()}) {
    for (const ir::AddressRange& r : *ranges) {
      for (const std::string* b : {&r.first(), &r.last()}) {
        const auto* p = reinterpret_cast<const uint8_t*>(b->data());
        if (b->size() == 4) {
          out.insert(IpAddress::V4((uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
                                   (uint32_t{p[2]} << 8) | p[3]));
        } else {
          out.insert(IpAddress::V6Bytes(p));
        }
      }
    }
  }
  for (int i = 0; i < 4; ++i) {
    out.insert(IpAddress::V4(static_cast<uint32_t>(rng())));
    out.insert(IpAddress::V6(rng(), rng()));
  }
  return std::vector<IpAddress>(out.begin(), out.end());
}

std::vector<uint16_t> ProbePorts(const ir::CompiledPolicy& ir) {
  std::set<uint16_t> out = {0, 1, 80, 65535};
  for (const ir::Table& t : ir.tables()) {
    for (const ir::DirectionPolicy* d : {&t.ingress(), &t.egress()}) {
      auto add_edges = [&](int64_t first, int64_t last) {
        for (int64_t p : {first - 1, first, last, last + 1, (first + last) / 2}) {
          if (p >= 0 && p <= 65535) out.insert(static_cast<uint16_t>(p));
        }
      };
      for (const ir::PortRule& r : d->rules()) add_edges(r.first_port(), r.last_port());
      for (const auto* tier : {&d->admin(), &d->baseline()}) {
        for (const ir::TierRule& r : *tier) add_edges(r.first_port(), r.last_port());
      }
    }
  }
  return std::vector<uint16_t>(out.begin(), out.end());
}

uint32_t IrInterpreter::IdentityOf(const IpAddress& a) const {
  const auto& ranges = a.is_v4() ? ir_.ipv4() : ir_.ipv6();
  std::string key = Bytes(a);
  for (const ir::AddressRange& r : ranges) {
    if (r.first() <= key && key <= r.last()) return r.identity();
  }
  return 0xffffffffu;
}

IrInterpreter::IrInterpreter(const ir::CompiledPolicy& ir) : ir_(ir) {
  for (int i = 0; i < ir_.endpoints_size(); ++i) {
    for (const std::string& ip : ir_.endpoints(i).ips()) {
      endpoint_addresses_.emplace_back(*IpAddress::Parse(ip), i);
    }
  }
}

int IrInterpreter::EndpointIndex(const IpAddress& a) const {
  for (const auto& [address, index] : endpoint_addresses_) {
    if (address == a) return index;
  }
  return -1;
}

const ir::Endpoint* IrInterpreter::EndpointOf(const IpAddress& a) const {
  int i = EndpointIndex(a);
  return i < 0 ? nullptr : &ir_.endpoints(i);
}

bool IrInterpreter::DirectionAllows(const ir::DirectionPolicy& d, uint8_t protocol,
                                    uint16_t port, uint32_t peer) const {
  return np::backends::SideAllows(ir_, d, protocol, port, peer);
}

bool IrInterpreter::Allowed(const IpAddress& src, const IpAddress& dst, uint8_t protocol,
                            uint16_t port) const {
  const ir::Endpoint* s = EndpointOf(src);
  const ir::Endpoint* d = EndpointOf(dst);
  if (s != nullptr && s == d && ir_.always_allow_self()) return true;
  if (s != nullptr && s->selected() &&
      !DirectionAllows(ir_.tables(static_cast<int>(s->table())).egress(), protocol, port,
                       IdentityOf(dst))) {
    return false;
  }
  if (d != nullptr && d->selected() &&
      !DirectionAllows(ir_.tables(static_cast<int>(d->table())).ingress(), protocol, port,
                       IdentityOf(src))) {
    return false;
  }
  return true;
}

// x/a (10.0.0.1, fd00::1) is selected: ingress allows TCP 80 and UDP 53 from x/b (10.0.0.2,
// fd00::2) only; egress is isolated with no rule (unless `egress_open`). x/b is selected by
// nothing.
ir::CompiledPolicy TwoPods(bool egress_open, bool ingress_rules) {
  ir::CompiledPolicy ir;
  for (int i = 0; i < 3; ++i) ir.add_identities()->set_id(i);
  ir.mutable_identities(0)->set_external(true);
  ir.mutable_identities(1)->add_pods("x/a");
  ir.mutable_identities(2)->add_pods("x/b");
  auto add = [&](bool v6, const char* first, const char* last, uint32_t id) {
    ir::AddressRange* r = v6 ? ir.add_ipv6() : ir.add_ipv4();
    IpAddress f = *IpAddress::Parse(first), l = *IpAddress::Parse(last);
    uint8_t b[16];
    f.ToBytes(b);
    r->set_first(std::string(reinterpret_cast<char*>(b), v6 ? 16 : 4));
    l.ToBytes(b);
    r->set_last(std::string(reinterpret_cast<char*>(b), v6 ? 16 : 4));
    r->set_identity(id);
    for (const std::string& c : RangeCidrs(f, l)) r->add_cidrs(c);
  };
  add(false, "0.0.0.0", "10.0.0.0", 0);
  add(false, "10.0.0.1", "10.0.0.1", 1);
  add(false, "10.0.0.2", "10.0.0.2", 2);
  add(false, "10.0.0.3", "255.255.255.255", 0);
  add(true, "::", "fd00::", 0);
  add(true, "fd00::1", "fd00::1", 1);
  add(true, "fd00::2", "fd00::2", 2);
  add(true, "fd00::3", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0);
  ir::PeerSet* b = ir.add_peer_sets();
  b->set_id(0);
  b->add_identities(2);
  ir::Table* t = ir.add_tables();
  t->mutable_ingress()->set_isolated(true);
  if (ingress_rules) {
    for (auto [proto, port] : {std::pair<ir::Protocol, uint32_t>{ir::TCP, 80}, {ir::UDP, 53}}) {
      ir::PortRule* r = t->mutable_ingress()->add_rules();
      r->set_protocol(proto);
      r->set_first_port(port);
      r->set_last_port(port);
      r->set_peer_set(0);
    }
  }
  t->mutable_egress()->set_isolated(!egress_open);
  for (auto [name, v4, v6, selected] :
       {std::tuple<const char*, const char*, const char*, bool>{"a", "10.0.0.1", "fd00::1", true},
        {"b", "10.0.0.2", "fd00::2", false}}) {
    ir::Endpoint* e = ir.add_endpoints();
    e->set_namespace_("x");
    e->set_name(name);
    e->add_ips(v4);
    e->add_ips(v6);
    e->set_selected(selected);
  }
  return ir;
}

std::vector<TierScenario> TierScenarios() {
  constexpr uint32_t kB = 0, kAll = 1;
  constexpr const char *a = "10.0.0.1", *b = "10.0.0.2", *out = "10.0.0.99";
  auto base = [&](bool egress_open) {
    ir::CompiledPolicy ir = TwoPods(egress_open);
    ir::PeerSet* all = ir.add_peer_sets();
    all->set_id(kAll);
    all->set_all(true);
    return ir;
  };
  std::vector<TierScenario> out_scenarios;
  {
    // a's ingress: NetworkPolicy allows TCP 80 and UDP 53 from b; an admin Deny of TCP 79-80
    // from b comes first and wins; UDP 53 is not the Deny's and NetworkPolicy allows it.
    TierScenario s{"admin Deny before a NetworkPolicy allow", base(true), {}};
    AddTierRule(s.ir.mutable_tables(0)->mutable_ingress()->mutable_admin(), ir::TIER_DENY,
                ir::TCP, 79, 80, kB);
    s.flows = {{b, a, 6, 80, false}, {b, a, 6, 79, false}, {b, a, 17, 53, true},
               {b, a, 6, 81, false}, {out, a, 6, 80, false}};
    out_scenarios.push_back(std::move(s));
  }
  {
    // Admin: Pass everything from b, then Allow everything. From b NetworkPolicy decides
    // (isolated: TCP 80 yes, TCP 81 and ICMP no); from elsewhere the Allow does.
    TierScenario s{"Pass then NetworkPolicy isolation", base(true), {}};
    auto* admin = s.ir.mutable_tables(0)->mutable_ingress()->mutable_admin();
    AddTierRule(admin, ir::TIER_PASS, ir::PROTOCOL_UNSPECIFIED, 0, 0, kB);
    AddTierRule(admin, ir::TIER_ALLOW, ir::PROTOCOL_UNSPECIFIED, 0, 0, kAll);
    s.flows = {{b, a, 6, 80, true},    {b, a, 6, 81, false}, {b, a, 1, 0, false},
               {out, a, 6, 81, true},  {out, a, 1, 0, true}, {out, a, 132, 9, true}};
    out_scenarios.push_back(std::move(s));
  }
  {
    // Baseline Deny of TCP 80 for everyone, on both directions of a. Ingress is isolated
    // by NetworkPolicy, which decides alone: TCP 80 from b passes. Egress is not isolated:
    // the baseline decides TCP 80, the rest is allowed by default.
    TierScenario s{"baseline only when not isolated", base(true), {}};
    for (auto* d : {s.ir.mutable_tables(0)->mutable_ingress(),
                    s.ir.mutable_tables(0)->mutable_egress()}) {
      AddTierRule(d->mutable_baseline(), ir::TIER_DENY, ir::TCP, 80, 80, kAll);
    }
    s.flows = {{b, a, 6, 80, true},  {out, a, 6, 80, false}, {a, b, 6, 80, false},
               {a, b, 6, 81, true},  {a, out, 6, 80, false}, {a, out, 17, 80, true},
               {a, out, 1, 0, true}};
    out_scenarios.push_back(std::move(s));
  }
  {
    // An every-protocol admin Deny on a's egress (not isolated) stops ICMP as well as TCP;
    // a baseline Allow after it changes nothing. On ingress (isolated, no ICMP rule) an
    // every-protocol admin Allow from b lets ICMP in, which NetworkPolicy alone would not.
    TierScenario s{"ICMP under an every-protocol Deny", base(true), {}};
    ir::DirectionPolicy* egress = s.ir.mutable_tables(0)->mutable_egress();
    AddTierRule(egress->mutable_admin(), ir::TIER_DENY, ir::PROTOCOL_UNSPECIFIED, 0, 0, kAll);
    AddTierRule(egress->mutable_baseline(), ir::TIER_ALLOW, ir::PROTOCOL_UNSPECIFIED, 0, 0, kAll);
    AddTierRule(s.ir.mutable_tables(0)->mutable_ingress()->mutable_admin(), ir::TIER_ALLOW,
                ir::PROTOCOL_UNSPECIFIED, 0, 0, kB);
    s.flows = {{a, b, 1, 0, false}, {a, out, 1, 0, false}, {a, b, 6, 80, false},
               {a, b, 17, 53, false}, {b, a, 1, 0, true},  {out, a, 1, 0, false},
               {b, a, 6, 81, true}};
    out_scenarios.push_back(std::move(s));
  }
  {
    // Overlapping admin rules in order: Allow TCP 80 from b, then Deny TCP 0-1000 from
    // everyone, then Allow TCP 0-65535 from everyone. On a's open egress.
    TierScenario s{"first matching rule decides", base(true), {}};
    auto* admin = s.ir.mutable_tables(0)->mutable_egress()->mutable_admin();
    AddTierRule(admin, ir::TIER_ALLOW, ir::TCP, 80, 80, kB);
    AddTierRule(admin, ir::TIER_DENY, ir::TCP, 0, 1000, kAll);
    AddTierRule(admin, ir::TIER_ALLOW, ir::TCP, 0, 65535, kAll);
    s.flows = {{a, b, 6, 80, true},    {a, out, 6, 80, false}, {a, b, 6, 1000, false},
               {a, b, 6, 1001, true},  {a, b, 6, 0, false},    {a, b, 17, 80, true}};
    out_scenarios.push_back(std::move(s));
  }
  return out_scenarios;
}

namespace {

void Put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}
void Put32(std::string& s, uint32_t v) {
  Put16(s, static_cast<uint16_t>(v >> 16));
  Put16(s, static_cast<uint16_t>(v));
}

std::string Ethernet(uint16_t ethertype) {
  std::string s = std::string("\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01", 12);
  Put16(s, ethertype);
  return s;
}

}  // namespace

std::string ArpFrame() {
  std::string s = Ethernet(0x0806);
  s.append(28, '\0');
  return s;
}

std::string Frame(const FrameSpec& f) {
  const bool v6 = f.src.is_v6();
  const bool later = f.fragment && f.frag_offset != 0;
  std::string l4;
  if (!later) {
    switch (f.protocol) {
      case 6:
        Put16(l4, f.sport);
        Put16(l4, f.dport);
        Put32(l4, 1);
        Put32(l4, 0);
        l4.push_back(0x50);
        l4.push_back(static_cast<char>(f.tcp_flags));
        Put16(l4, 65535);
        Put32(l4, 0);
        break;
      case 17:
        Put16(l4, f.sport);
        Put16(l4, f.dport);
        Put16(l4, static_cast<uint16_t>(8 + f.payload.size()));
        Put16(l4, 0);
        break;
      case 132:
        Put16(l4, f.sport);
        Put16(l4, f.dport);
        Put32(l4, 0);
        Put32(l4, 0);
        break;
      case 1:
      case 58:
        l4.push_back(static_cast<char>(f.icmp_type));
        l4.push_back(0);
        Put16(l4, 0);
        Put16(l4, f.icmp_id);
        Put16(l4, 1);
        l4 += f.inner;
        break;
      default:
        break;
    }
  }
  l4 += f.payload;
  uint8_t sa[16], da[16];
  f.src.ToBytes(sa);
  f.dst.ToBytes(da);
  if (!v6) {
    std::string s = Ethernet(0x0800);
    s.push_back(0x45);
    s.push_back(0);
    Put16(s, static_cast<uint16_t>(20 + l4.size()));
    Put16(s, static_cast<uint16_t>(f.frag_id));
    Put16(s, static_cast<uint16_t>((f.more_fragments ? 0x2000 : 0) | (f.frag_offset & 0x1fff)));
    s.push_back(64);
    s.push_back(static_cast<char>(f.protocol));
    Put16(s, 0);
    s.append(reinterpret_cast<char*>(sa), 4);
    s.append(reinterpret_cast<char*>(da), 4);
    return s + l4;
  }
  std::vector<uint8_t> chain = f.ipv6_ext;
  if (f.fragment) chain.push_back(44);
  std::string ext;
  for (size_t i = 0; i < chain.size(); ++i) {
    uint8_t next = i + 1 < chain.size() ? chain[i + 1] : f.protocol;
    if (chain[i] == 44) {
      ext.push_back(static_cast<char>(next));
      ext.push_back(0);
      Put16(ext, static_cast<uint16_t>((f.frag_offset << 3) | (f.more_fragments ? 1 : 0)));
      Put32(ext, f.frag_id);
    } else {
      ext.push_back(static_cast<char>(next));
      ext.push_back(0);  // 8 bytes (AH: (0 + 2) * 4 = 8 too)
      ext.append(6, '\0');
    }
  }
  std::string s = Ethernet(0x86dd);
  Put32(s, 0x60000000u);
  Put16(s, static_cast<uint16_t>(ext.size() + l4.size()));
  s.push_back(static_cast<char>(chain.empty() ? f.protocol : chain[0]));
  s.push_back(64);
  s.append(reinterpret_cast<char*>(sa), 16);
  s.append(reinterpret_cast<char*>(da), 16);
  return s + ext + l4;
}

}  // namespace np::backends::ebpf::testing
