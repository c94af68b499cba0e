#include "np/backends/iptables/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
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

void AddRandomTierRules(std::mt19937_64& rng, int peer_sets, ir::DirectionPolicy* direction) {
  auto uniform = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  const ir::TierAction actions[] = {ir::TIER_ALLOW, ir::TIER_DENY, ir::TIER_PASS};
  const ir::Protocol protocols[] = {ir::PROTOCOL_UNSPECIFIED, ir::TCP, ir::UDP, ir::SCTP};
  for (const char* tier : {"admin", "baseline"}) {
    if (uniform(2) == 0) continue;
    const int n = 1 + uniform(4);
    for (int i = 0; i < n; ++i) {
      ir::TierRule* rule =
          tier[0] == 'a' ? direction->add_admin() : direction->add_baseline();
      rule->set_action(actions[uniform(3)]);
      rule->set_protocol(protocols[uniform(4)]);
      if (rule->protocol() == ir::PROTOCOL_UNSPECIFIED) {
        rule->set_first_port(0);
        rule->set_last_port(65535);
      } else {
        // Often the probed ports 80/81 (overlapping NetworkPolicy's rules), sometimes all.
        const uint32_t starts[] = {0, 79, 80, 81, static_cast<uint32_t>(uniform(100))};
        const uint32_t first = starts[uniform(5)];
        rule->set_first_port(first);
        rule->set_last_port(uniform(4) == 0 ? 65535 : first + uniform(3));
      }
      rule->set_peer_set(uniform(peer_sets));
      rule->set_origin(absl::StrCat(tier[0] == 'a' ? "AdminNetworkPolicy" : "BaselineAdminNetworkPolicy",
                                    " p", uniform(3), uniform(8) == 0 ? " \"q\\\" -j ACCEPT" : "",
                                    " ingress[", i, "]"));
    }
  }
}

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
      AddRandomTierRules(rng, peer_sets, d);
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

ir::CompiledPolicy WithTablesFrom(const ir::CompiledPolicy& ir, uint32_t unused) {
  ir::CompiledPolicy out = ir;
  out.clear_tables();
  for (uint32_t t = 0; t < unused; ++t) out.add_tables()->set_id(t);
  for (const ir::Table& table : ir.tables()) {
    ir::Table* moved = out.add_tables();
    *moved = table;
    moved->set_id(table.id() + unused);
  }
  for (ir::Endpoint& e : *out.mutable_endpoints()) {
    if (e.selected()) e.set_table(e.table() + unused);
  }
  return out;
}

ir::CompiledPolicy WithPods(ir::CompiledPolicy ir) {
  std::vector<std::set<std::string>> pods(ir.identities_size());
  for (const auto* ranges : {&ir.ipv4(), &ir.ipv6()}) {
    for (const ir::AddressRange& r : *ranges) {
      if (!r.pod().empty()) pods[r.identity()].insert(r.pod());
    }
  }
  for (int i = 0; i < ir.identities_size(); ++i) {
    ir.mutable_identities(i)->clear_pods();
    for (const std::string& p : pods[i]) ir.mutable_identities(i)->add_pods(p);
  }
  return ir;
}

// One step of random pod churn: one address range (two, one time in four) gets a
// random identity — mostly single addresses (pods), sometimes any range — and the pods'
// lists follow (WithPods).
ir::CompiledPolicy RandomChurnStep(const ir::CompiledPolicy& current, std::mt19937_64& rng) {
  ir::CompiledPolicy next = current;
  const int changes = rng() % 4 == 0 ? 2 : 1;
  for (int c = 0; c < changes; ++c) {
    auto* ranges = rng() % 2 == 0 ? next.mutable_ipv4() : next.mutable_ipv6();
    std::vector<int> singles;
    for (int r = 0; r < ranges->size(); ++r) {
      if ((*ranges)[r].first() == (*ranges)[r].last()) singles.push_back(r);
    }
    const int r = !singles.empty() && rng() % 4 != 0
                      ? singles[rng() % singles.size()]
                      : static_cast<int>(rng() % ranges->size());
    (*ranges)[r].set_identity(static_cast<uint32_t>(rng() % next.identities_size()));
  }
  return WithPods(next);
}

// A relabel into a class of its own (np/lower_delta.h): one pod's address (a single-address
// range with a pod) gets a new identity, appended, which about half of the peer sets holding
// its old identity (and one in four of the others) now hold too; the pods' lists follow.
// Without such a pod in the family drawn, a RandomChurnStep.
ir::CompiledPolicy RandomRelabelStep(const ir::CompiledPolicy& current, std::mt19937_64& rng) {
  ir::CompiledPolicy next = current;
  auto* ranges = rng() % 2 == 0 ? next.mutable_ipv4() : next.mutable_ipv6();
  std::vector<int> pods;
  for (int r = 0; r < ranges->size(); ++r) {
    if ((*ranges)[r].first() == (*ranges)[r].last() && !(*ranges)[r].pod().empty()) {
      pods.push_back(r);
    }
  }
  if (pods.empty()) return RandomChurnStep(current, rng);
  ir::AddressRange& range = (*ranges)[pods[rng() % pods.size()]];
  const uint32_t old_identity = range.identity();
  const uint32_t id = static_cast<uint32_t>(next.identities_size());
  next.add_identities()->set_id(id);
  range.set_identity(id);
  for (ir::PeerSet& set : *next.mutable_peer_sets()) {
    const bool held = std::binary_search(set.identities().begin(), set.identities().end(),
                                         old_identity);
    if (rng() % (held ? 2 : 4) == 0) set.add_identities(id);  // the largest id: still sorted
  }
  return WithPods(next);
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


// ---- The tier scenario --------------------------------------------------------------

const char* StableEventName(int kind) {
  static const char* const kNames[] = {"rules", "tier rules", "peer set", "new peer set",
                                       "relabel", "new table", "tombstone", "move endpoint"};
  return kind >= 0 && kind < kStableEventKinds ? kNames[kind] : "?";
}

ir::CompiledPolicy StableEvent(const ir::CompiledPolicy& previous, int kind,
                               std::mt19937_64& rng) {
  auto uniform = [&](size_t n) { return static_cast<size_t>(rng() % std::max<size_t>(n, 1)); };
  ir::CompiledPolicy next = previous;
  const int tables = next.tables_size();
  // Which items something names (a tombstone is named by nothing).
  std::vector<bool> set_used(next.peer_sets_size(), false), table_used(tables, false),
      identity_used(next.identities_size(), false);
  for (const ir::Table& t : next.tables()) {
    for (const ir::DirectionPolicy* d : {&t.ingress(), &t.egress()}) {
      for (const ir::PortRule& r : d->rules()) set_used[r.peer_set()] = true;
      for (const auto* tier : {&d->admin(), &d->baseline()}) {
        for (const ir::TierRule& r : *tier) set_used[r.peer_set()] = true;
      }
    }
    if (t.ingress().isolated() || t.egress().isolated() || !t.policies().empty()) {
      table_used[t.id()] = true;
    }
  }
  for (const ir::Endpoint& e : next.endpoints()) {
    if (e.selected()) table_used[e.table()] = true;
  }
  for (const auto* ranges : {&next.ipv4(), &next.ipv6()}) {
    for (const ir::AddressRange& r : *ranges) identity_used[r.identity()] = true;
  }
  for (const ir::PeerSet& s : next.peer_sets()) {
    for (uint32_t i : s.identities()) identity_used[i] = true;
  }
  auto tombstone = [](const std::vector<bool>& used) -> int {
    for (size_t i = 0; i < used.size(); ++i) {
      if (!used[i]) return static_cast<int>(i);
    }
    return -1;
  };
  // A direction of a random table (or of `table`), and its TCP 7777 rule appended when the
  // TCP rules allow it (they are sorted and disjoint per protocol).
  auto append_rule = [&](ir::DirectionPolicy* d, uint32_t peer_set) {
    uint32_t next_port = 0;
    for (const ir::PortRule& r : d->rules()) {
      if (r.protocol() == ir::TCP) next_port = r.last_port() + 1;
    }
    if (next_port > 7777) return;
    d->set_isolated(true);
    AddPortRule(d, ir::TCP, 7777, 7777, peer_set);
  };
  auto direction = [&](ir::Table* t) {
    return uniform(2) == 0 ? t->mutable_ingress() : t->mutable_egress();
  };
  auto fill_table = [&](ir::Table* t) {
    t->add_policies(absl::StrCat("ns/event-", uniform(1000)));
    for (ir::DirectionPolicy* d : {t->mutable_ingress(), t->mutable_egress()}) {
      if (uniform(2) == 0) append_rule(d, static_cast<uint32_t>(uniform(next.peer_sets_size())));
      AddRandomTierRules(rng, next.peer_sets_size(), d);
    }
  };
  // The endpoints with addresses, and the selected ones of a table.
  std::vector<int> endpoints;
  for (int e = 0; e < next.endpoints_size(); ++e) endpoints.push_back(e);
  switch (kind) {
    case kRules: {
      if (tables == 0) break;
      ir::DirectionPolicy* d = direction(next.mutable_tables(static_cast<int>(uniform(tables))));
      if (d->rules_size() > 0 && uniform(2) == 0) {
        d->mutable_rules()->erase(d->mutable_rules()->begin() +
                                  static_cast<long>(uniform(d->rules_size())));
      } else if (next.peer_sets_size() > 0) {
        append_rule(d, static_cast<uint32_t>(uniform(next.peer_sets_size())));
      }
      break;
    }
    case kTierRules: {
      if (tables == 0 || next.peer_sets_size() == 0) break;
      ir::DirectionPolicy* d = direction(next.mutable_tables(static_cast<int>(uniform(tables))));
      d->clear_admin();
      d->clear_baseline();
      AddRandomTierRules(rng, next.peer_sets_size(), d);
      break;
    }
    case kPeerSet: {
      if (next.peer_sets_size() == 0) break;
      ir::PeerSet* s = next.mutable_peer_sets(static_cast<int>(uniform(next.peer_sets_size())));
      if (s->all()) break;
      const uint32_t id = static_cast<uint32_t>(uniform(next.identities_size()));
      std::set<uint32_t> members(s->identities().begin(), s->identities().end());
      if (!members.insert(id).second) members.erase(id);
      s->clear_identities();
      for (uint32_t i : members) s->add_identities(i);
      break;
    }
    case kNewPeerSet: {
      int id = tombstone(set_used);
      if (id >= 0 && (next.peer_sets(id).all() || next.peer_sets(id).identities_size() > 0)) {
        id = -1;  // named by nothing, but not empty: not a tombstone
      }
      if (id < 0) {
        id = next.peer_sets_size();
        next.add_peer_sets()->set_id(static_cast<uint32_t>(id));
      }
      ir::PeerSet* s = next.mutable_peer_sets(id);
      s->clear_identities();
      for (int i = 0; i < next.identities_size(); ++i) {
        if (uniform(2) == 0) s->add_identities(static_cast<uint32_t>(i));
      }
      if (tables > 0) {
        append_rule(direction(next.mutable_tables(static_cast<int>(uniform(tables)))),
                    static_cast<uint32_t>(id));
      }
      break;
    }
    case kRelabel: {
      std::vector<ir::AddressRange*> pods;
      for (auto* ranges : {next.mutable_ipv4(), next.mutable_ipv6()}) {
        for (ir::AddressRange& r : *ranges) {
          if (!r.pod().empty()) pods.push_back(&r);
        }
      }
      if (pods.empty()) break;
      int id = tombstone(identity_used);
      if (id < 0) {
        id = next.identities_size();
        next.add_identities()->set_id(static_cast<uint32_t>(id));
      }
      next.mutable_identities(id)->set_external(false);  // a new meaning: pods only
      // The pod's ranges in both families move (a dual-stack pod is one identity).
      const std::string pod = pods[uniform(pods.size())]->pod();
      const std::string suffix = pod.substr(pod.find('-') == std::string::npos ? 0 : pod.find('-'));
      for (ir::AddressRange* r : pods) {
        if (r->pod() == pod || (suffix != pod && absl::EndsWith(r->pod(), suffix))) {
          r->set_identity(static_cast<uint32_t>(id));
        }
      }
      for (ir::PeerSet& s : *next.mutable_peer_sets()) {
        if (s.all() || uniform(2) == 0) continue;
        s.add_identities(static_cast<uint32_t>(id));  // the largest id, or a tombstone's:
        std::vector<uint32_t> sorted(s.identities().begin(), s.identities().end());
        std::sort(sorted.begin(), sorted.end());
        sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
        s.clear_identities();
        for (uint32_t i : sorted) s.add_identities(i);
      }
      break;
    }
    case kNewTable: {
      int id = tombstone(table_used);
      if (id < 0) {
        id = tables;
        next.add_tables()->set_id(static_cast<uint32_t>(id));
      }
      ir::Table* t = next.mutable_tables(id);
      t->Clear();
      t->set_id(static_cast<uint32_t>(id));
      fill_table(t);
      if (!endpoints.empty()) {
        ir::Endpoint* e = next.mutable_endpoints(endpoints[uniform(endpoints.size())]);
        e->set_selected(true);
        e->set_table(static_cast<uint32_t>(id));
      }
      break;
    }
    case kTombstone: {
      if (tables == 0) break;
      const uint32_t id = static_cast<uint32_t>(uniform(tables));
      ir::Table* t = next.mutable_tables(static_cast<int>(id));
      t->Clear();
      t->set_id(id);
      for (ir::Endpoint& e : *next.mutable_endpoints()) {
        if (!e.selected() || e.table() != id) continue;
        if (tables > 1 && uniform(2) == 0) {
          e.set_table((id + 1 + static_cast<uint32_t>(uniform(tables - 1))) % tables);
        } else {
          e.set_selected(false);
          e.clear_table();
        }
      }
      break;
    }
    case kMoveEndpoint: {
      if (tables < 2 || endpoints.empty()) break;
      ir::Endpoint* e = next.mutable_endpoints(endpoints[uniform(endpoints.size())]);
      const uint32_t from = e->selected() ? e->table() : 0;
      e->set_selected(true);
      e->set_table((from + 1 + static_cast<uint32_t>(uniform(tables - 1))) % tables);
      break;
    }
    default:
      break;
  }
  return WithPods(next);
}

uint32_t AddPeerSet(ir::CompiledPolicy& ir, bool all, std::vector<uint32_t> identities) {
  ir::PeerSet* set = ir.add_peer_sets();
  set->set_id(static_cast<uint32_t>(ir.peer_sets_size() - 1));
  set->set_all(all);
  for (uint32_t identity : identities) set->add_identities(identity);
  return set->id();
}

void AddRandomPeerSets(std::mt19937_64& rng, int count, uint32_t first, uint32_t last,
                       ir::CompiledPolicy& ir) {
  auto uniform = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  for (int s = 0; s < count; ++s) {
    std::vector<uint32_t> identities;
    for (uint32_t i = first; i <= last; ++i) {
      if (uniform(2) == 0) identities.push_back(i);
    }
    AddPeerSet(ir, uniform(6) == 0, identities);
  }
}

namespace {

void AddTier(google::protobuf::RepeatedPtrField<ir::TierRule>* rules, ir::TierAction action,
             ir::Protocol protocol, uint32_t first, uint32_t last, uint32_t peer_set,
             const std::string& origin) {
  AddTierRule(rules, action, protocol, first, last, peer_set)->set_origin(origin);
}

void AddPolicyRule(ir::DirectionPolicy* d, ir::Protocol protocol, uint32_t first, uint32_t last,
                   uint32_t peer_set) {
  ir::PortRule* rule = d->add_rules();
  rule->set_protocol(protocol);
  rule->set_first_port(first);
  rule->set_last_port(last);
  rule->set_peer_set(peer_set);
}

// Endpoints x/a, x/b, x/c of ThreePods; pod i, when selected, has table i.
void AddThreePodEndpoints(ir::CompiledPolicy& ir, std::array<bool, 3> selected) {
  for (int i = 0; i < 3; ++i) {
    ir::Endpoint* e = ir.add_endpoints();
    e->set_namespace_("x");
    e->set_name(std::string(1, static_cast<char>('a' + i)));
    e->add_ips(absl::StrCat("10.0.", i + 1, ".2"));
    e->add_ips(absl::StrCat("fd00:", i + 1, "::2"));
    e->set_selected(selected[i]);
    if (selected[i]) e->set_table(i);
  }
}

}  // namespace

ir::CompiledPolicy TierScenarioIr() {
  ir::CompiledPolicy ir = IrFromPoints(ThreePods());
  const uint32_t a = AddPeerSet(ir, false, {1});
  const uint32_t b = AddPeerSet(ir, false, {2});
  const uint32_t c = AddPeerSet(ir, false, {3});
  const uint32_t b_c = AddPeerSet(ir, false, {2, 3});
  const uint32_t everyone = AddPeerSet(ir, true, {});
  // a: ingress isolated by NetworkPolicy, below three admin rules.
  ir::Table* ta = ir.add_tables();
  ta->set_id(0);
  ta->add_policies("x/np-a");
  ir::DirectionPolicy* in = ta->mutable_ingress();
  AddTier(in->mutable_admin(), ir::TIER_DENY, ir::TCP, 80, 80, b, "ANP deny-b priority 1");
  AddTier(in->mutable_admin(), ir::TIER_PASS, ir::TCP, 81, 81, b_c, "ANP pass-81 priority 2");
  AddTier(in->mutable_admin(), ir::TIER_ALLOW, ir::UDP, 80, 81, c, "ANP allow-c-udp priority 3");
  in->set_isolated(true);
  AddPolicyRule(in, ir::TCP, 80, 80, b_c);
  AddPolicyRule(in, ir::TCP, 81, 81, c);
  AddPolicyRule(in, ir::UDP, 80, 80, b);
  AddTier(in->mutable_baseline(), ir::TIER_DENY, ir::PROTOCOL_UNSPECIFIED, 0, 65535, everyone,
          "BANP unreachable (a is isolated)");
  // a: egress not isolated, baseline only.
  ir::DirectionPolicy* out = ta->mutable_egress();
  AddTier(out->mutable_baseline(), ir::TIER_ALLOW, ir::TCP, 80, 80, c, "BANP allow-c-80");
  AddTier(out->mutable_baseline(), ir::TIER_DENY, ir::TCP, 0, 65535, b_c, "BANP deny-tcp");
  // b: ingress isolated, NetworkPolicy allows nothing; its baseline Allow is never reached.
  ir::Table* tb = ir.add_tables();
  tb->set_id(1);
  tb->add_policies("x/deny-b");
  tb->mutable_ingress()->set_isolated(true);
  AddTier(tb->mutable_ingress()->mutable_baseline(), ir::TIER_ALLOW, ir::PROTOCOL_UNSPECIFIED, 0,
          65535, everyone, "BANP allow-all (unreachable)");
  // c: ingress not isolated; an admin Pass of every protocol from a, then the baseline.
  ir::Table* tc = ir.add_tables();
  tc->set_id(2);
  ir::DirectionPolicy* cin = tc->mutable_ingress();
  AddTier(cin->mutable_admin(), ir::TIER_PASS, ir::PROTOCOL_UNSPECIFIED, 0, 65535, a,
          "ANP pass-a priority 5");
  AddTier(cin->mutable_baseline(), ir::TIER_DENY, ir::UDP, 0, 65535, a, "BANP deny-a-udp");
  AddTier(cin->mutable_baseline(), ir::TIER_DENY, ir::PROTOCOL_UNSPECIFIED, 0, 65535, b,
          "BANP deny-b");
  AddThreePodEndpoints(ir, {true, true, true});
  return ir;
}

bool TierScenarioAllows(int from, int to, int protocol, int port) {
  const bool tcp = protocol == ir::TCP;
  const bool udp = protocol == ir::UDP;
  if (to == 1) return false;  // b: isolated, nothing allowed (the baseline Allow comes after)
  if (to == 0) {              // a's ingress
    // c: TCP 80 by NetworkPolicy, TCP 81 Pass then NetworkPolicy, UDP by the admin Allow.
    if (from == 2) return tcp || udp;
    // b: TCP 80 admin Deny before NetworkPolicy's allow; TCP 81 Pass, and NetworkPolicy
    // allows 81 only from c; UDP 80 by NetworkPolicy.
    return udp && port == 80;
  }
  // c's ingress: from b the baseline Deny of every protocol; from a the admin Pass, then the
  // baseline Deny of UDP; and a's egress baseline: TCP 80 to c allowed, other TCP denied.
  if (from == 1) return false;
  return tcp && port == 80;
}


std::vector<Point> ThreePods() {
  return {{"10.0.1.2", 1, "x/a"}, {"fd00:1::2", 1, "x/a"}, {"10.0.2.2", 2, "x/b"},
          {"fd00:2::2", 2, "x/b"}, {"10.0.3.2", 3, "x/c"}, {"fd00:3::2", 3, "x/c"}};
}

void AddRandomTables(std::mt19937_64& rng, int tables, int peer_sets, bool first_ingress,
                     ir::CompiledPolicy& ir) {
  auto uniform = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  // Per protocol, NetworkPolicy's port rules on 80/81: sorted and disjoint.
  const std::vector<std::vector<std::pair<uint32_t, uint32_t>>> shapes = {
      {}, {{80, 80}}, {{81, 81}}, {{80, 81}}, {{80, 80}, {81, 81}}, {{0, 65535}}};
  for (int t = 0; t < tables; ++t) {
    ir::Table* table = ir.add_tables();
    table->set_id(ir.tables_size() - 1);
    table->add_policies(absl::StrCat("x/policy-", t));
    for (ir::DirectionPolicy* d : {table->mutable_ingress(), table->mutable_egress()}) {
      const bool forced = first_ingress && t == 0 && d == table->mutable_ingress();
      d->set_isolated(uniform(2) == 0 || forced);
      if (d->isolated()) {
        for (ir::Protocol protocol : {ir::TCP, ir::UDP}) {
          for (const auto& [first, last] : shapes[uniform(static_cast<int>(shapes.size()))]) {
            AddPolicyRule(d, protocol, first, last, uniform(peer_sets));
          }
        }
      }
      AddRandomTierRules(rng, peer_sets, d);
    }
  }
}

ir::CompiledPolicy RandomThreePodIr(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  ir::CompiledPolicy ir = IrFromPoints(ThreePods());
  const int peer_sets = 4;
  AddRandomPeerSets(rng, peer_sets, 0, 3, ir);
  AddRandomTables(rng, 3, peer_sets, false, ir);
  const bool a = uniform(4) != 0, b = uniform(4) != 0, c = uniform(4) != 0;
  AddThreePodEndpoints(ir, {a, b, c});
  return ir;
}

// ---- Real packets ------------------------------------------------------------------

void Must(const std::vector<std::string>& argv, absl::string_view netns) {
  absl::StatusOr<std::string> r = RunCommand(argv, "", netns);
  ASSERT_TRUE(r.ok()) << r.status();
}

Namespaces::Namespaces(absl::string_view prefix) {
  const char* from_environment = getenv("NP_TEST_NETNS_PREFIX");
  prefix_ = from_environment != nullptr && *from_environment != '\0' ? from_environment
                                                                      : std::string(prefix);
}

Namespaces::~Namespaces() {
  for (const std::string& n : names_) (void)RunCommand({"ip", "netns", "del", n});
}

std::string Namespaces::Add(absl::string_view suffix) {
  std::string name = absl::StrCat(prefix_, getpid(), "-", suffix);
  absl::StatusOr<std::string> r = RunCommand({"ip", "netns", "add", name});
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) names_.push_back(name);
  return name;
}

Children::~Children() {
  for (pid_t p : pids_) {
    kill(p, SIGKILL);
    waitpid(p, nullptr, 0);
  }
}

bool EnterNetns(const std::string& name) {
  int fd = open(absl::StrCat("/run/netns/", name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = setns(fd, CLONE_NEWNET) == 0;
  close(fd);
  return ok;
}



void BuildTopology(Namespaces& ns, const std::vector<std::string>& pod_names, Topology& t) {
  t.node = ns.Add("node");
  Must({"sysctl", "-q", "-w", "net.ipv4.ip_forward=1"}, t.node);
  Must({"sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"}, t.node);
  for (size_t i = 0; i < pod_names.size(); ++i) {
    const int n = static_cast<int>(i) + 1;
    Pod p{pod_names[i], ns.Add(absl::StrCat("p", n)), absl::StrCat("10.0.", n, ".2"),
          absl::StrCat("fd00:", n, "::2")};
    const std::string host = absl::StrCat("h", n);
    Must({"ip", "-n", t.node, "link", "add", host, "type", "veth", "peer", "name", "eth0",
          "netns", p.netns});
    Must({"ip", "-n", t.node, "addr", "add", absl::StrCat("10.0.", n, ".1/24"), "dev", host});
    Must({"ip", "-n", t.node, "addr", "add", absl::StrCat("fd00:", n, "::1/64"), "dev", host,
          "nodad"});
    Must({"ip", "-n", t.node, "link", "set", host, "up"});
    Must({"ip", "-n", p.netns, "addr", "add", p.v4 + "/24", "dev", "eth0"});
    Must({"ip", "-n", p.netns, "addr", "add", p.v6 + "/64", "dev", "eth0", "nodad"});
    Must({"ip", "-n", p.netns, "link", "set", "eth0", "up"});
    Must({"ip", "-n", p.netns, "link", "set", "lo", "up"});
    Must({"ip", "-n", p.netns, "route", "add", "default", "via", absl::StrCat("10.0.", n, ".1")});
    Must({"ip", "-n", p.netns, "-6", "route", "add", "default", "via",
          absl::StrCat("fd00:", n, "::1")});
    t.pods.push_back(p);
  }
}

// In each pod: TCP listeners and UDP echo on ports 80 and 81 (dual-stack sockets), for at
// most `seconds`.
void StartServers(const Topology& t, Children& children, int seconds) {
  for (const Pod& p : t.pods) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      if (!EnterNetns(p.netns)) _exit(2);
      std::vector<pollfd> fds;
      std::set<int> tcp;
      for (int type : {SOCK_STREAM, SOCK_DGRAM}) {
        for (int port : {80, 81}) {
          int s = socket(AF_INET6, type, 0);
          int zero = 0, one = 1;
          setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
          setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
          sockaddr_in6 a{};
          a.sin6_family = AF_INET6;
          a.sin6_port = htons(port);
          a.sin6_addr = in6addr_any;
          if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) _exit(3);
          if (type == SOCK_STREAM) {
            listen(s, 128);
            tcp.insert(s);
          }
          fds.push_back({s, POLLIN, 0});
        }
      }
      auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
      while (std::chrono::steady_clock::now() < end) {
        if (poll(fds.data(), fds.size(), 200) <= 0) continue;
        for (pollfd& f : fds) {
          if (!(f.revents & POLLIN)) continue;
          if (tcp.count(f.fd)) {
            int c = accept(f.fd, nullptr, nullptr);
            if (c >= 0) close(c);
          } else {
            char buf[64];
            sockaddr_in6 from{};
            socklen_t len = sizeof(from);
            ssize_t n = recvfrom(f.fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from),
                                 &len);
            if (n > 0) sendto(f.fd, buf, n, 0, reinterpret_cast<sockaddr*>(&from), len);
          }
        }
      }
      _exit(0);
    }
    children.Add(pid);
  }
  usleep(300 * 1000);  // listeners up
}


// One probe in a child process inside the source pod: TCP connects, UDP gets its echo,
// within timeout_ms. Returns the child's pid; exit status 0 = connected.
// Every probe of a process gets its own source port (10000-29999, below the ephemeral
// range): with a kernel-chosen port a UDP probe now and then reused the 5-tuple of an earlier
// probe that was allowed, whose conntrack entry then let it through as ESTABLISHED although
// the rules now deny it (a probe miscounted as a verdict; iptables_kernel_test, 2026-12-01).
pid_t StartProbe(const Topology& t, const Probe& p, int timeout_ms) {
  static uint32_t next_probe = 0;
  const uint16_t source_port = static_cast<uint16_t>(10000 + next_probe++ % 20000);
  pid_t pid = fork();
  if (pid != 0) return pid;
  if (!EnterNetns(t.pods[p.from].netns)) _exit(2);
  const Pod& dst = t.pods[p.to];
  sockaddr_storage ss{};
  socklen_t len;
  if (p.v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(p.port);
    inet_pton(AF_INET6, dst.v6.c_str(), &a->sin6_addr);
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(p.port);
    inet_pton(AF_INET, dst.v4.c_str(), &a->sin_addr);
    len = sizeof(*a);
  }
  const bool tcp = p.protocol == ir::TCP;
  int s = socket(p.v6 ? AF_INET6 : AF_INET, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK, 0);
  if (s < 0) _exit(4);
  sockaddr_storage source{};
  if (p.v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&source);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(source_port);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&source);
    a->sin_family = AF_INET;
    a->sin_port = htons(source_port);
  }
  if (bind(s, reinterpret_cast<sockaddr*>(&source), len) != 0) _exit(5);
  if (tcp) {
    int r = connect(s, reinterpret_cast<sockaddr*>(&ss), len);
    if (r != 0 && errno != EINPROGRESS) _exit(1);
    pollfd f{s, POLLOUT, 0};
    if (poll(&f, 1, timeout_ms) != 1) _exit(1);
    int err = 0;
    socklen_t el = sizeof(err);
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el);
    _exit(err == 0 ? 0 : 1);
  }
  if (connect(s, reinterpret_cast<sockaddr*>(&ss), len) != 0) _exit(1);
  if (send(s, "x", 1, 0) != 1) _exit(1);
  pollfd f{s, POLLIN, 0};
  if (poll(&f, 1, timeout_ms) != 1) _exit(1);
  char buf[8];
  _exit(recv(s, buf, sizeof(buf), 0) == 1 ? 0 : 1);
}

// Runs the probes in parallel; true = got through.
std::vector<bool> RunProbes(const Topology& t, const std::vector<Probe>& probes, int timeout_ms) {
  std::vector<pid_t> pids;
  for (const Probe& p : probes) pids.push_back(StartProbe(t, p, timeout_ms));
  std::vector<bool> out;
  for (pid_t pid : pids) {
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
      out.push_back(false);
      continue;
    }
    out.push_back(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  return out;
}

std::vector<Probe> AllProbes(const Topology& t) {
  std::vector<Probe> out;
  for (int s = 0; s < static_cast<int>(t.pods.size()); ++s) {
    for (int d = 0; d < static_cast<int>(t.pods.size()); ++d) {
      if (s == d) continue;
      for (bool v6 : {false, true}) {
        for (ir::Protocol pr : {ir::TCP, ir::UDP}) {
          for (int port : {80, 81}) out.push_back(Probe{s, d, v6, pr, port});
        }
      }
    }
  }
  return out;
}

bool Expected(const ir::CompiledPolicy& ir, const Topology& t, const Probe& p) {
  const Pod& s = t.pods[p.from];
  const Pod& d = t.pods[p.to];
  return backends::IrAllows(ir, *AddressBytes(p.v6 ? s.v6 : s.v4),
                            *AddressBytes(p.v6 ? d.v6 : d.v4), p.protocol, p.port);
}

std::string ProbeText(const Topology& t, const Probe& p) {
  return absl::StrCat(t.pods[p.from].name, " -> ", t.pods[p.to].name, " ",
                      p.v6 ? "IPv6 " : "IPv4 ", ProtocolLower(p.protocol), "/", p.port);
}



ThreePodLab::ThreePodLab(absl::string_view netns_prefix, int seconds) : ns(netns_prefix) {
  BuildTopology(ns, {"x/a", "x/b", "x/c"}, t);
  StartServers(t, children, seconds);
  where.netns = t.node;
}

std::string ExplainProbe(const Backend& backend, const ir::CompiledPolicy& ir, const Topology& t,
                         const Probe& p) {
  const Pod& from = t.pods[p.from];
  const Pod& to = t.pods[p.to];
  absl::StatusOr<std::string> why =
      backend.Explain(ir, {p.v6 ? from.v6 : from.v4, p.v6 ? to.v6 : to.v4,
                           static_cast<uint8_t>(p.protocol), static_cast<uint16_t>(p.port)});
  return why.ok() ? *why : std::string(why.status().message());
}

void ExpectTierVerdictsOnPackets(Backend& backend, const Attachment& where, const Topology& t) {
  const std::vector<Probe> probes = AllProbes(t);
  // Without a ruleset everything gets through (the topology works; neighbours resolved).
  std::vector<bool> open = RunProbes(t, probes, 1000);
  for (size_t i = 0; i < probes.size(); ++i) {
    ASSERT_TRUE(open[i]) << "no policy, yet blocked: " << ProbeText(t, probes[i]);
  }
  const ir::CompiledPolicy scenario = TierScenarioIr();
  ASSERT_TRUE(backend.Apply(scenario, where).ok());
  std::vector<bool> got = RunProbes(t, probes, 700);
  for (size_t i = 0; i < probes.size(); ++i) {
    const Probe& p = probes[i];
    EXPECT_EQ(got[i], TierScenarioAllows(p.from, p.to, p.protocol, p.port))
        << ProbeText(t, p) << "\n" << ExplainProbe(backend, scenario, t, p);
  }
  int compared = 0;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    const ir::CompiledPolicy ir = RandomThreePodIr(seed);
    absl::Status s = backend.Apply(ir, where);
    ASSERT_TRUE(s.ok()) << s;
    got = RunProbes(t, probes, 700);
    for (size_t i = 0; i < probes.size(); ++i) {
      EXPECT_EQ(got[i], Expected(ir, t, probes[i]))
          << "seed " << seed << ": " << ProbeText(t, probes[i]) << "\n"
          << ExplainProbe(backend, ir, t, probes[i]) << ir.DebugString();
      ++compared;
    }
  }
  std::cerr << backend.name() << ": " << compared << " random-IR probes compared\n";
}

}  // namespace np::backends::iptables::testutil
