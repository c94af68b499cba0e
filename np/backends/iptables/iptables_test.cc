// Render's structure, checked by properties rather than golden text: on random IRs, every
// set holds exactly its peer set's CIDRs, each isolated (table, direction) chain has one
// rule per IR rule plus a final DROP, NP-FORWARD dispatches each endpoint address once per
// isolated direction, and a small interpreter of the rendered iptables/ipset text (chains,
// jumps, RETURN, DROP, set and port matches) answers every probed flow as the IR does.
#include "np/backends/iptables/iptables.h"
#include "np/backends/iptables/test_util.h"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "np/backends/backend.h"
#include "np/backends/util.h"
#include "np/types.h"

namespace np::backends::iptables {
namespace {

using testutil::RandomIr;
using testutil::RandomChurnStep;
using testutil::RandomRelabelStep;
using testutil::WithPods;
using testutil::WithTablesFrom;

// The rendered texts, parsed back.
struct Parsed {
  std::map<std::string, std::vector<std::string>> sets;  // name -> entries
  std::map<std::string, std::string> set_family;          // name -> inet / inet6
  std::map<std::string, std::vector<std::vector<std::string>>> chains[2];  // chain -> rules
  std::vector<std::string> declared[2];
  bool hooked[2] = {false, false};
};

// A restore line split into words as iptables-restore does: "..." quotes, and inside quotes
// a backslash takes the next character literally.
std::vector<std::string> Words(absl::string_view line) {
  std::vector<std::string> out;
  std::string word;
  bool quoted = false, in_word = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '\\' && i + 1 < line.size()) {
        word += line[++i];
      } else if (c == '"') {
        quoted = false;
      } else {
        word += c;
      }
    } else if (c == '"') {
      quoted = in_word = true;
    } else if (c == ' ') {
      if (in_word) out.push_back(word);
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  EXPECT_FALSE(quoted) << "unterminated quote: " << line;
  if (in_word) out.push_back(word);
  return out;
}

Parsed Parse(const Ruleset& r) {
  Parsed p;
  for (absl::string_view line : absl::StrSplit(r.ipset, '\n', absl::SkipEmpty())) {
    std::vector<std::string> t = absl::StrSplit(line, ' ');
    if (t[0] == "create") {
      // Dispatch sets (np-g<G>-v4-t<T>) hold host addresses: hash:ip.
      const bool dispatch = absl::StrContains(t[1], "-v4-t") || absl::StrContains(t[1], "-v6-t");
      EXPECT_EQ(t[2], dispatch ? "hash:ip" : "hash:net") << line;
      EXPECT_EQ(t[3], "family");
      p.set_family[t[1]] = t[4];
      EXPECT_TRUE(p.sets.emplace(t[1], std::vector<std::string>{}).second) << "set created twice";
    } else {
      EXPECT_EQ(t[0], "add") << line;
      EXPECT_EQ(t.size(), 3u);
      EXPECT_TRUE(p.sets.count(t[1])) << "add before create: " << line;
      p.sets[t[1]].push_back(t[2]);
    }
  }
  for (int f = 0; f < 2; ++f) {
    const std::string& text = f == 0 ? r.ip4 : r.ip6;
    std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
    EXPECT_EQ(lines.front(), "*filter");
    EXPECT_EQ(lines.back(), "COMMIT");
    for (const std::string& line : lines) {
      std::vector<std::string> t = Words(line);
      if (line[0] == ':') {
        p.declared[f].push_back(t[0].substr(1));
        p.chains[f][t[0].substr(1)];
      } else if (t[0] == "-A") {
        EXPECT_TRUE(p.chains[f].count(t[1])) << "rule in undeclared chain: " << line;
        p.chains[f][t[1]].push_back(std::vector<std::string>(t.begin() + 2, t.end()));
      } else if (line == "-I FORWARD 1 -j NP-FORWARD") {
        p.hooked[f] = true;
      } else {
        EXPECT_TRUE(line == "*filter" || line == "COMMIT") << line;
      }
    }
  }
  return p;
}

// A prefix's first and last address as address bytes (network order, so that comparing
// the strings compares the addresses), parsed once per text: the interpreter below tests
// each rule's prefixes and each set entry for every probed flow, and parsing them there
// again was most of the random tests' time.
struct BytesRange {
  std::string first, last;  // empty: unreadable
};
const BytesRange& RangeOfPrefix(const std::string& cidr) {
  static auto* parsed = new absl::flat_hash_map<std::string, BytesRange>();
  auto [it, fresh] = parsed->try_emplace(cidr);
  if (!fresh) return it->second;
  absl::StatusOr<IpPrefix> prefix = IpPrefix::Parse(cidr);
  EXPECT_TRUE(prefix.ok()) << cidr;
  if (!prefix.ok()) return it->second;
  uint8_t bytes[16];
  prefix->network().ToBytes(bytes);
  const int width = prefix->family() == AddressFamily::kIPv4 ? 4 : 16;
  it->second.first.assign(reinterpret_cast<const char*>(bytes), width);
  it->second.last = it->second.first;
  for (int bit = prefix->length(); bit < width * 8; ++bit) {
    it->second.last[bit / 8] = static_cast<char>(it->second.last[bit / 8] | (0x80 >> (bit % 8)));
  }
  return it->second;
}

bool InPrefix(const std::string& bytes, const std::string& cidr) {
  const BytesRange& r = RangeOfPrefix(cidr);
  // (std::string compares through char_traits<char>, as unsigned bytes: address order.)
  return !r.first.empty() && bytes.size() == r.first.size() && r.first <= bytes &&
         bytes <= r.last;
}

// IrAllows (the oracle) for many flows of one program. IrAllows finds the endpoints of the
// two addresses by scanning every endpoint, parsing its addresses, at each call; it reads no
// other endpoint. This asks it with the program's endpoints narrowed to those that own one
// of the two addresses (found once per pair), so it answers as IrAllows(ir, ...) does at a
// fraction of the cost: the random tests below ask it millions of times.
class Oracle {
 public:
  explicit Oracle(const ir::CompiledPolicy& ir) : narrow_(ir), ir_(&ir) {
    narrow_.clear_endpoints();
    for (int e = 0; e < ir.endpoints_size(); ++e) {
      for (const std::string& ip : ir.endpoints(e).ips()) {
        absl::StatusOr<std::string> bytes = AddressBytes(ip);
        if (bytes.ok()) owners_[*bytes].push_back(e);
      }
    }
  }
  bool Allows(const std::string& src, const std::string& dst, ir::Protocol protocol,
              uint32_t port) {
    if (src != src_ || dst != dst_) {
      src_ = src;
      dst_ = dst;
      std::set<int> owners;
      for (const std::string* a : {&src, &dst}) {
        auto it = owners_.find(*a);
        if (it != owners_.end()) owners.insert(it->second.begin(), it->second.end());
      }
      narrow_.clear_endpoints();
      // In program order: IrAllows takes the first endpoint owning an address.
      for (int e : owners) *narrow_.add_endpoints() = ir_->endpoints(e);
    }
    return IrAllows(narrow_, src, dst, protocol, port);
  }

 private:
  ir::CompiledPolicy narrow_;
  const ir::CompiledPolicy* ir_;
  std::map<std::string, std::vector<int>> owners_;  // address bytes -> endpoints owning it
  std::string src_, dst_;
};

// Runs FORWARD -> NP-FORWARD for a new flow (conntrack state NEW) as the kernel would.
// Returns "DROP" or "RETURN" (off the end of NP-FORWARD).
std::string RunChain(const Parsed& p, int f, const std::string& chain, const std::string& src,
                const std::string& dst, ir::Protocol protocol, uint32_t port, int depth = 0) {
  // NP-FORWARD, a dispatch chain, a table chain, its stage chain; during an in-place switch
  // the last two may go on to their -NEW rules (a trampoline).
  EXPECT_LT(depth, 6) << "jumps too deep";
  const auto& rules = p.chains[f].at(chain);
  for (const std::vector<std::string>& t : rules) {
    bool match = true;
    std::string target;
    for (size_t i = 0; i < t.size() && match; ++i) {
      const std::string& k = t[i];
      if (k == "-m" && t[i + 1] == "conntrack") {
        EXPECT_EQ(t[i + 3], "RELATED,ESTABLISHED");
        match = false;  // a new flow
      } else if (k == "-s") {
        match = InPrefix(src, t[++i]);
      } else if (k == "-d") {
        match = InPrefix(dst, t[++i]);
      } else if (k == "-p") {
        match = t[++i] == ProtocolLower(protocol);
      } else if (k == "-m") {
        const std::string& module = t[++i];
        if (module == "comment") {
          EXPECT_EQ(t[i + 1], "--comment");
          i += 2;  // matches every packet
        } else if (module == "set") {
          EXPECT_EQ(t[i + 1], "--match-set");
          const std::string& name = t[i + 2];
          const std::string& which = t[i + 3];
          i += 3;
          EXPECT_TRUE(p.sets.count(name)) << "unknown set " << name;
          EXPECT_EQ(p.set_family.at(name), f == 0 ? "inet" : "inet6");
          const std::string& addr = which == "src" ? src : dst;
          bool in = false;
          for (const std::string& e : p.sets.at(name)) in = in || InPrefix(addr, e);
          match = in;
        } else {
          EXPECT_EQ(module, ProtocolLower(protocol)) << "port match of another protocol";
        }
      } else if (k == "--dport") {
        std::vector<std::string> ab = absl::StrSplit(t[++i], ':');
        uint32_t a = 0, b = 0;
        EXPECT_TRUE(absl::SimpleAtoi(ab[0], &a));
        b = a;
        if (ab.size() == 2) {
          EXPECT_TRUE(absl::SimpleAtoi(ab[1], &b));
        }
        match = a <= port && port <= b;
      } else if (k == "-j") {
        target = t[++i];
      } else if (k == "-g") {
        target = "goto " + t[++i];
      } else {
        ADD_FAILURE() << "unexpected token " << k;
        match = false;
      }
    }
    if (!match) continue;
    if (target == "DROP") return "DROP";
    if (target == "RETURN") return "RETURN";
    if (target == "ACCEPT") return "ACCEPT";
    // -g: the target's verdict, or its end, is this chain's (RETURN goes to our caller).
    if (absl::StartsWith(target, "goto ")) {
      return RunChain(p, f, target.substr(5), src, dst, protocol, port, depth + 1);
    }
    std::string v = RunChain(p, f, target, src, dst, protocol, port, depth + 1);
    if (v != "RETURN") return v;
  }
  return "RETURN";
}

TEST(RenderRuleset, PropertiesOnRandomIrs) {
  for (uint64_t seed = 0; seed < 400; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    // Odd seeds: identities name their pods (peer sets naming pods always get a set).
    ir::CompiledPolicy ir = seed % 2 == 1 ? WithPods(RandomIr(seed)) : RandomIr(seed);
    absl::StatusOr<Ruleset> r = RenderRuleset(ir);
    ASSERT_TRUE(r.ok()) << r.status();
    Parsed p = Parse(*r);

    // Names fit the kernel's limits (ipset 31, xtables chain 28 characters).
    for (const auto& [name, entries] : p.sets) EXPECT_LE(name.size(), 31u);
    for (int f = 0; f < 2; ++f) {
      for (const auto& [name, rules] : p.chains[f]) EXPECT_LE(name.size(), 28u);
      EXPECT_TRUE(p.hooked[f]);
      EXPECT_EQ(p.declared[f].front(), "NP-FORWARD");
      EXPECT_EQ(r->chains[f], static_cast<int>(p.chains[f].size()));
    }

    // Every used peer set that is not `all` has, per family, the addresses of its
    // identities' ranges as the fewest prefixes (neighbouring ranges merged; a /0 as two
    // /1): in a set holding exactly those when they are more than kMaxInlinePrefixes, else
    // in the rules (no set) — except that a peer set naming a pod (an identity with pods)
    // always has a set, even an empty one, so that pod churn changes set members, not rules.
    // The minimal decomposition of an interval is unique, so
    // comparing with an independent one checks coverage and minimality at once.
    std::map<uint32_t, size_t> prefixes[2];  // peer set -> its prefixes in the family
    std::set<uint32_t> with_set[2];          // peer sets that have a set in the family
    auto names_pods = [&](uint32_t s) {
      for (uint32_t i : ir.peer_sets(s).identities()) {
        if (ir.identities(i).pods_size() > 0) return true;
      }
      return false;
    };
    std::set<uint32_t> used;
    for (const ir::Table& t : ir.tables()) {
      for (const auto* d : {&t.ingress(), &t.egress()}) {
        for (const ir::PortRule& rule : d->rules()) used.insert(rule.peer_set());
        for (const ir::TierRule& rule : d->admin()) used.insert(rule.peer_set());
        // Baseline rules are never reached where NetworkPolicy isolates: not rendered.
        if (d->isolated()) continue;
        for (const ir::TierRule& rule : d->baseline()) used.insert(rule.peer_set());
      }
    }
    int64_t entries[2] = {0, 0};
    for (uint32_t s : used) {
      const ir::PeerSet& set = ir.peer_sets(s);
      for (int f = 0; f < 2; ++f) {
        std::string name = SetName(0, f, s);
        if (set.all()) {
          EXPECT_FALSE(p.sets.count(name));
          continue;
        }
        std::vector<std::pair<std::string, std::string>> merged;
        for (const ir::AddressRange& range : f == 0 ? ir.ipv4() : ir.ipv6()) {
          if (!std::binary_search(set.identities().begin(), set.identities().end(),
                                  range.identity())) {
            continue;
          }
          if (!merged.empty() && testutil::NextAddress(merged.back().second) == range.first()) {
            merged.back().second = range.last();
          } else {
            merged.emplace_back(range.first(), range.last());
          }
        }
        std::multiset<std::string> expected;
        for (const auto& [first, last] : merged) {
          for (const std::string& c : testutil::CidrsOf(first, last)) {
            if (c == "0.0.0.0/0") {
              expected.insert({"0.0.0.0/1", "128.0.0.0/1"});
            } else if (c == "::/0") {
              expected.insert({"::/1", "8000::/1"});
            } else {
              expected.insert(c);
            }
          }
        }
        prefixes[f][s] = expected.size();
        // (RandomIr has a handful of peer sets: always under kMaxPodSets.)
        if (expected.size() <= static_cast<size_t>(kMaxInlinePrefixes) && !names_pods(s)) {
          EXPECT_FALSE(p.sets.count(name)) << name << " has " << expected.size() << " prefixes";
          continue;
        }
        with_set[f].insert(s);
        ASSERT_TRUE(p.sets.count(name)) << name;
        EXPECT_EQ(std::multiset<std::string>(p.sets[name].begin(), p.sets[name].end()), expected)
            << name;
        entries[f] += static_cast<int64_t>(expected.size());
      }
    }
    // Per family: which tables are in use, and the endpoint addresses.
    std::set<uint32_t> tables_used[2];
    std::vector<std::pair<std::string, const ir::Endpoint*>> addresses[2];
    for (const ir::Endpoint& e : ir.endpoints()) {
      if (!e.selected()) continue;
      for (const std::string& ip : e.ips()) {
        int f = absl::StrContains(ip, ':') ? 1 : 0;
        tables_used[f].insert(e.table());
        addresses[f].emplace_back(ip, &e);
      }
    }
    // The dispatch sets: per table used in a family that restricts a direction, the host
    // prefixes of the table's selected endpoint addresses of the family; no other.
    int dispatch_sets = 0;
    for (int f = 0; f < 2; ++f) {
      for (uint32_t t = 0; t < static_cast<uint32_t>(ir.tables_size()); ++t) {
        const std::string name = DispatchSetName(0, f, t);
        if (tables_used[f].count(t) == 0 ||
            (!Restricted(ir.tables(t).ingress()) && !Restricted(ir.tables(t).egress()))) {
          EXPECT_FALSE(p.sets.count(name)) << name;
          continue;
        }
        std::multiset<std::string> expected;
        for (const auto& [ip, e] : addresses[f]) {
          if (e->table() == t) expected.insert(absl::StrCat(ip, f == 0 ? "/32" : "/128"));
        }
        ASSERT_TRUE(p.sets.count(name)) << name;
        EXPECT_EQ(std::multiset<std::string>(p.sets[name].begin(), p.sets[name].end()), expected)
            << name;
        entries[f] += static_cast<int64_t>(expected.size());
        ++dispatch_sets;
      }
    }
    EXPECT_EQ(r->set_entries[0], entries[0]);
    EXPECT_EQ(r->set_entries[1], entries[1]);
    EXPECT_EQ(r->sets[0] + r->sets[1], static_cast<int>(p.sets.size()));
    EXPECT_EQ(static_cast<int>(p.sets.size()),
              static_cast<int>(with_set[0].size() + with_set[1].size()) + dispatch_sets);
    for (int f = 0; f < 2; ++f) {
      int port_rules = 0;
      int tier_rules = 0;
      // Rules of one IR rule that can match in this family: one (any peer, or a set), or
      // one per prefix of inline peers.
      auto rendered = [&](uint32_t peer_set) {
        if (ir.peer_sets(peer_set).all() || with_set[f].count(peer_set) > 0) return 1;
        return static_cast<int>(prefixes[f][peer_set]);
      };
      for (uint32_t t : tables_used[f]) {
        for (int d = 0; d < 2; ++d) {
          const ir::DirectionPolicy& dp = d == 0 ? ir.tables(t).ingress() : ir.tables(t).egress();
          std::string chain = absl::StrCat("NP-T", t, d == 0 ? "-IN" : "-EG");
          if (!Restricted(dp)) {
            EXPECT_FALSE(p.chains[f].count(chain)) << chain;
            continue;
          }
          ASSERT_TRUE(p.chains[f].count(chain)) << chain;
          for (const ir::TierRule& rule : dp.admin()) tier_rules += rendered(rule.peer_set());
          if (!dp.isolated()) {
            for (const ir::TierRule& rule : dp.baseline()) tier_rules += rendered(rule.peer_set());
            continue;
          }
          // NetworkPolicy's rules in order, then DROP. With admin rules they follow those
          // (checked by the interpreter below), so the shape is checked without them.
          int expected = 0;
          for (const ir::PortRule& rule : dp.rules()) expected += rendered(rule.peer_set());
          port_rules += expected;
          if (dp.admin_size() > 0) continue;
          const auto& rules = p.chains[f][chain];
          ASSERT_EQ(static_cast<int>(rules.size()), expected + 1) << chain;
          // DROP, with the table's policies as a comment for people reading iptables-save.
          EXPECT_EQ(rules.back(),
                    (std::vector<std::string>{
                        "-m", "comment", "--comment",
                        absl::StrCat("policies: ", absl::StrJoin(ir.tables(t).policies(), ",")),
                        "-j", "DROP"}))
              << chain;
        }
      }
      EXPECT_EQ(r->port_rules[f], port_rules);
      EXPECT_EQ(r->tier_rules[f], tier_rules);
      // NP-FORWARD: the conntrack rule, then a jump to each dispatch chain NP-D<k> in order;
      // NP-D<k>: one jump per table t with t / kDispatchChainTables = k, a local address of
      // the family and a restricted direction, through its dispatch set: every egress one
      // (source address) before every ingress one (destination address).
      std::map<uint32_t, std::vector<std::vector<std::string>>> dispatch;
      for (int d : {1, 0}) {
        for (uint32_t t : tables_used[f]) {
          if (!Restricted(d == 0 ? ir.tables(t).ingress() : ir.tables(t).egress())) continue;
          dispatch[t / kDispatchChainTables].push_back(
              {"-m", "set", "--match-set", DispatchSetName(0, f, t), d == 0 ? "dst" : "src",
               "-j", absl::StrCat("NP-T", t, d == 0 ? "-IN" : "-EG")});
        }
      }
      const auto& top = p.chains[f]["NP-FORWARD"];
      ASSERT_EQ(top.size(), 1 + dispatch.size());
      size_t jump = 1;
      for (const auto& [k, rules] : dispatch) {
        const std::string chain = absl::StrCat("NP-D", k);
        EXPECT_EQ(top[jump++], (std::vector<std::string>{"-j", chain}));
        EXPECT_EQ(p.chains[f][chain], rules) << chain;
      }
      int total = 0;
      for (const auto& [name, rules] : p.chains[f]) total += static_cast<int>(rules.size());
      EXPECT_EQ(r->rules[f], total);
    }

    // The chains answer every probed flow as the IR does.
    Oracle oracle(ir);
    for (int f = 0; f < 2; ++f) {
      std::vector<std::string> probes;
      for (const ir::AddressRange& range : f == 0 ? ir.ipv4() : ir.ipv6()) {
        probes.push_back(range.first());
        if (range.last() != range.first()) probes.push_back(range.last());
      }
      std::set<uint32_t> ports = {0, 1, 80, 81, 65535};
      auto add_ports = [&](uint32_t first, uint32_t last) {
        ports.insert(first);
        ports.insert(last);
        if (last < 65535) ports.insert(last + 1);
      };
      for (const ir::Table& t : ir.tables()) {
        for (const auto* d : {&t.ingress(), &t.egress()}) {
          for (const ir::PortRule& rule : d->rules()) add_ports(rule.first_port(), rule.last_port());
          for (const auto* tier : {&d->admin(), &d->baseline()}) {
            for (const ir::TierRule& rule : *tier) add_ports(rule.first_port(), rule.last_port());
          }
        }
      }
      for (const std::string& s : probes) {
        for (const std::string& d : probes) {
          if (s == d) continue;
          // ICMP: only rules without protocol match it (and it has no port: one probe).
          const ir::Protocol icmp = static_cast<ir::Protocol>(1);
          for (ir::Protocol protocol : {ir::TCP, ir::UDP, ir::SCTP, icmp}) {
            for (uint32_t port : ports) {
              if (protocol == icmp && port != 0) continue;
              bool want = oracle.Allows(s, d, protocol, port);
              bool got = RunChain(p, f, "NP-FORWARD", s, d, protocol, port) != "DROP";
              ASSERT_EQ(got, want) << AddressText(s) << " -> " << AddressText(d) << " "
                                   << ProtocolLower(protocol) << "/" << port << "\n"
                                   << ir.DebugString() << r->ipset << r->ip4 << r->ip6;
            }
          }
        }
      }
    }
  }
}

ir::CompiledPolicy SmallIr() {
  // 10.0.0.1 = x/a (identity 1, selected: ingress TCP 80 from identity 2 only),
  // 10.0.0.2 = x/b (identity 2), everything else identity 0.
  ir::CompiledPolicy ir;
  for (int i = 0; i < 3; ++i) ir.add_identities()->set_id(i);
  auto range = [&](const char* first, const char* last, uint32_t id, const char* pod,
                   std::vector<std::string> cidrs) {
    ir::AddressRange* r = absl::StrContains(first, ':') ? ir.add_ipv6() : ir.add_ipv4();
    r->set_first(*AddressBytes(first));
    r->set_last(*AddressBytes(last));
    r->set_identity(id);
    r->set_pod(pod);
    for (auto& c : cidrs) r->add_cidrs(c);
  };
  range("0.0.0.0", "10.0.0.0", 0, "", {"0.0.0.0/5", "8.0.0.0/7", "10.0.0.0/32"});
  range("10.0.0.1", "10.0.0.1", 1, "x/a", {"10.0.0.1/32"});
  range("10.0.0.2", "10.0.0.2", 2, "x/b", {"10.0.0.2/32"});
  // (not minimal, but a partition: the rest)
  range("10.0.0.3", "255.255.255.255", 0, "", {"10.0.0.3/32", "10.0.0.4/30", "10.0.0.8/29",
        "10.0.0.16/28", "10.0.0.32/27", "10.0.0.64/26", "10.0.0.128/25", "10.0.1.0/24",
        "10.0.2.0/23", "10.0.4.0/22", "10.0.8.0/21", "10.0.16.0/20", "10.0.32.0/19",
        "10.0.64.0/18", "10.0.128.0/17", "10.1.0.0/16", "10.2.0.0/15", "10.4.0.0/14",
        "10.8.0.0/13", "10.16.0.0/12", "10.32.0.0/11", "10.64.0.0/10", "10.128.0.0/9",
        "11.0.0.0/8", "12.0.0.0/6", "16.0.0.0/4", "32.0.0.0/3", "64.0.0.0/2", "128.0.0.0/1"});
  range("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, "", {"::/0"});
  ir::PeerSet* s = ir.add_peer_sets();
  s->set_id(0);
  s->add_identities(2);
  ir::Table* t = ir.add_tables();
  t->add_policies("x/allow-b");
  t->mutable_ingress()->set_isolated(true);
  ir::PortRule* rule = t->mutable_ingress()->add_rules();
  rule->set_protocol(ir::TCP);
  rule->set_first_port(80);
  rule->set_last_port(80);
  rule->set_peer_set(0);
  ir::Endpoint* a = ir.add_endpoints();
  a->set_namespace_("x");
  a->set_name("a");
  a->add_ips("10.0.0.1");
  a->set_selected(true);
  a->set_table(0);
  ir::Endpoint* b = ir.add_endpoints();
  b->set_namespace_("x");
  b->set_name("b");
  b->add_ips("10.0.0.2");
  return ir;
}

TEST(IptablesBackend, RenderHasThreeSectionsInOrder) {
  std::unique_ptr<Backend> b = MakeIptablesBackend();
  EXPECT_EQ(b->name(), "iptables");
  absl::StatusOr<std::string> text = b->Render(SmallIr());
  ASSERT_TRUE(text.ok()) << text.status();
  size_t ipset = text->find("# ==== ipset restore");
  size_t ip4 = text->find("# ==== iptables-restore");
  size_t ip6 = text->find("# ==== ip6tables-restore");
  ASSERT_NE(ipset, std::string::npos);
  ASSERT_NE(ip4, std::string::npos);
  ASSERT_NE(ip6, std::string::npos);
  EXPECT_LT(ipset, ip4);
  EXPECT_LT(ip4, ip6);
  // One prefix of peers: written into the rule, no set.
  EXPECT_TRUE(absl::StrContains(*text, "-A NP-T0-IN -p tcp -m tcp --dport 80 -s 10.0.0.2/32 -j RETURN\n"))
      << *text;
  EXPECT_FALSE(absl::StrContains(*text, "hash:net")) << *text;
  EXPECT_TRUE(absl::StrContains(
      *text, "-A NP-T0-IN -m comment --comment \"policies: x/allow-b\" -j DROP\n"));
  // x/a (10.0.0.1) is table 0's one address, ingress only: one dispatch set and rule.
  EXPECT_TRUE(absl::StrContains(*text, "create np-g0-v4-t0 hash:ip family inet ")) << *text;
  EXPECT_TRUE(absl::StrContains(*text, "add np-g0-v4-t0 10.0.0.1/32\n")) << *text;
  EXPECT_TRUE(absl::StrContains(*text, "-A NP-FORWARD -j NP-D0\n")) << *text;
  EXPECT_TRUE(absl::StrContains(*text, "-A NP-D0 -m set --match-set np-g0-v4-t0 dst -j "
                                       "NP-T0-IN\n")) << *text;
  EXPECT_FALSE(absl::StrContains(*text, " src -j NP-T0")) << *text;
  EXPECT_FALSE(absl::StrContains(*text, "np-g0-v6")) << *text;
  // SCTP port matches use the sctp module.
  ir::CompiledPolicy ir = SmallIr();
  ir.mutable_tables(0)->mutable_ingress()->mutable_rules(0)->set_protocol(ir::SCTP);
  ir.mutable_tables(0)->mutable_ingress()->mutable_rules(0)->set_last_port(81);
  text = b->Render(ir);
  ASSERT_TRUE(text.ok());
  EXPECT_TRUE(absl::StrContains(*text, "-p sctp -m sctp --dport 80:81 -s 10.0.0.2/32 -j RETURN"));
  // Identity 0 is many IPv4 prefixes (a set) and ::/0, two IPv6 halves (two rules).
  ir = SmallIr();
  ir.mutable_peer_sets(0)->set_identities(0, 0);
  text = b->Render(ir);
  ASSERT_TRUE(text.ok());
  EXPECT_TRUE(absl::StrContains(*text, "create np-g0-v4-p0 hash:net family inet"));
  EXPECT_TRUE(absl::StrContains(*text, "add np-g0-v4-p0 128.0.0.0/1\n"));
  EXPECT_TRUE(absl::StrContains(
      *text, "-A NP-T0-IN -p tcp -m tcp --dport 80 -m set --match-set np-g0-v4-p0 src -j RETURN\n"));
  EXPECT_FALSE(absl::StrContains(*text, "np-g0-v6")) << *text;
}

TEST(IptablesBackend, ExplainNamesChainRuleAndSetMember) {
  std::unique_ptr<Backend> b = MakeIptablesBackend();
  ir::CompiledPolicy ir = SmallIr();
  absl::StatusOr<std::string> allowed = b->Explain(ir, {"10.0.0.2", "10.0.0.1", 6, 80});
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_TRUE(absl::StrContains(*allowed, "NP-T0-IN rule 1")) << *allowed;
  EXPECT_TRUE(absl::StrContains(*allowed, "the peer is in 10.0.0.2/32")) << *allowed;
  EXPECT_TRUE(absl::StrContains(*allowed, "verdict: ACCEPT")) << *allowed;
  absl::StatusOr<std::string> denied = b->Explain(ir, {"192.168.1.1", "10.0.0.1", 6, 80});
  ASSERT_TRUE(denied.ok());
  EXPECT_TRUE(absl::StrContains(
      *denied, "NP-T0-IN rule 2: -m comment --comment \"policies: x/allow-b\" -j DROP")) << *denied;
  EXPECT_TRUE(absl::StrContains(*denied, "verdict: DROP")) << *denied;
  absl::StatusOr<std::string> other_port = b->Explain(ir, {"10.0.0.2", "10.0.0.1", 17, 80});
  ASSERT_TRUE(other_port.ok());
  EXPECT_TRUE(absl::StrContains(*other_port, "verdict: DROP")) << *other_port;
  absl::StatusOr<std::string> unisolated = b->Explain(ir, {"10.0.0.1", "10.0.0.2", 6, 80});
  ASSERT_TRUE(unisolated.ok());
  EXPECT_TRUE(absl::StrContains(*unisolated, "verdict: ACCEPT")) << *unisolated;
  EXPECT_FALSE(b->Explain(ir, {"10.0.0.1", "::1", 6, 80}).ok());
  // Peers in a set: the set and the entry that holds the peer.
  ir.mutable_peer_sets(0)->set_identities(0, 0);
  absl::StatusOr<std::string> in_set = b->Explain(ir, {"192.168.1.1", "10.0.0.1", 6, 80});
  ASSERT_TRUE(in_set.ok());
  EXPECT_TRUE(absl::StrContains(*in_set, "set np-g0-v4-p0 holds 128.0.0.0/1")) << *in_set;
  EXPECT_TRUE(absl::StrContains(*in_set, "verdict: ACCEPT")) << *in_set;
  // IPv6 from identity 0: ::/0 is two rules, one per /1 half; 8000:: matches the second.
  ir.mutable_endpoints(0)->add_ips("fd00::1");
  absl::StatusOr<std::string> v6 = b->Explain(ir, {"8000::1", "fd00::1", 6, 80});
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_TRUE(absl::StrContains(*v6, "NP-T0-IN rule 2: -p tcp -m tcp --dport 80 -s 8000::/1 -j RETURN"))
      << *v6;
}

TEST(IptablesBackend, MalformedIrIsAnErrorNotACrash) {
  std::unique_ptr<Backend> b = MakeIptablesBackend();
  ir::CompiledPolicy ir = SmallIr();
  ir.mutable_tables(0)->mutable_ingress()->mutable_rules(0)->set_peer_set(7);
  EXPECT_EQ(b->Render(ir).status().code(), absl::StatusCode::kInvalidArgument);
  ir = SmallIr();
  ir.mutable_endpoints(0)->set_table(3);
  EXPECT_FALSE(b->Render(ir).ok());
  ir = SmallIr();
  ir.mutable_peer_sets(0)->add_identities(99);
  EXPECT_FALSE(b->Render(ir).ok());
  ir = SmallIr();
  ir.mutable_tables(0)->mutable_ingress()->mutable_rules(0)->set_last_port(70000);
  EXPECT_FALSE(b->Render(ir).ok());
  ir = SmallIr();
  ir.mutable_endpoints(0)->set_ips(0, "not-an-ip");
  EXPECT_FALSE(b->Render(ir).ok());
  // Ranges must partition the space (sets merge neighbouring ranges): a gap, an overlap,
  // a missing family are errors.
  ir = SmallIr();
  ir.mutable_ipv4()->erase(ir.mutable_ipv4()->begin() + 1);
  EXPECT_FALSE(b->Render(ir).ok());
  ir = SmallIr();
  ir.mutable_ipv4(1)->set_first(*AddressBytes("10.0.0.0"));
  EXPECT_FALSE(b->Render(ir).ok());
  ir = SmallIr();
  ir.clear_ipv6();
  EXPECT_FALSE(b->Render(ir).ok());
  ir = SmallIr();
  ir.mutable_ipv4(3)->set_last(*AddressBytes("255.255.255.254"));
  EXPECT_FALSE(b->Render(ir).ok());
  EXPECT_TRUE(b->Render(SmallIr()).ok());
  // Issue 8 item 3: one address in two endpoints. The first one used to win silently; now
  // it is an error, as in every backend.
  ir = SmallIr();
  ir.mutable_endpoints(1)->set_ips(0, "10.0.0.1");
  ir.mutable_endpoints(1)->set_selected(true);
  absl::StatusOr<std::string> shared = b->Render(ir);
  ASSERT_FALSE(shared.ok());
  EXPECT_TRUE(absl::StrContains(shared.status().message(),
                                "endpoints[1] (x/b): address 10.0.0.1 is also endpoints[0] (x/a)'s"))
      << shared.status();
}

// Policy names in the DROP rule's comment: escaped, within the comment match's 255 bytes,
// and quoted so that iptables-restore reads back exactly the escaped text.
ir::CompiledPolicy HostileNames() {
  ir::CompiledPolicy ir = SmallIr();
  ir.mutable_tables(0)->clear_policies();
  ir.mutable_tables(0)->add_policies("x/a\"; -j ACCEPT \\\"\n-A FORWARD -j ACCEPT");
  std::string long_name = "x/";
  for (int i = 0; i < 200; ++i) long_name += "é";
  ir.mutable_tables(0)->add_policies(long_name);
  ir.mutable_endpoints(0)->set_name("a\x1b[2J\r");
  return ir;
}

TEST(RenderRuleset, HostileNamesInCommentsAreEscapedAndCut) {
  absl::StatusOr<Ruleset> r = RenderRuleset(HostileNames());
  ASSERT_TRUE(r.ok()) << r.status();
  for (absl::string_view line : absl::StrSplit(r->ip4, '\n', absl::SkipEmpty())) {
    EXPECT_TRUE(line[0] == '*' || line[0] == ':' || absl::StartsWith(line, "-A NP-") ||
                absl::StartsWith(line, "-I FORWARD") || line == "COMMIT")
        << line;
  }
  Parsed p = Parse(*r);
  const std::vector<std::string>& drop = p.chains[0].at("NP-T0-IN").back();
  ASSERT_EQ(drop.size(), 6u);
  const std::string& comment = drop[3];
  EXPECT_LE(comment.size(), 255u);
  EXPECT_TRUE(absl::StartsWith(
      comment, "policies: x/a\\x22; -j ACCEPT \\\\\\x22\\n-A FORWARD -j ACCEPT,x/ééé"))
      << comment;
  EXPECT_TRUE(absl::EndsWith(comment, "é...")) << comment;
  for (char c : comment) EXPECT_TRUE(static_cast<uint8_t>(c) >= 0x20 && c != '"') << comment;
}

TEST(RenderRuleset, ApplyOptionsDeleteStaleChainsAndSkipTheHook) {
  RenderOptions options;
  options.generation = 7;
  options.hook = false;
  options.stale_chains[0] = {"NP-T9-IN"};
  ir::CompiledPolicy ir = SmallIr();
  ir.mutable_peer_sets(0)->set_identities(0, 0);  // many prefixes: a set
  absl::StatusOr<Ruleset> r = RenderRuleset(ir, options);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(absl::StrContains(r->ip4, "-I FORWARD"));
  EXPECT_TRUE(absl::StrContains(r->ip4, ":NP-T9-IN - [0:0]\n"));
  EXPECT_TRUE(absl::StrContains(r->ip4, "-X NP-T9-IN\n"));
  EXPECT_LT(r->ip4.find(":NP-T9-IN"), r->ip4.find("-X NP-T9-IN"));
  EXPECT_TRUE(absl::StrContains(r->ipset, "create np-g7-v4-p0 hash:net family inet"));
  EXPECT_FALSE(absl::StrContains(r->ip6, "NP-T9-IN"));
}


// The tier scenario's verdicts, written by hand from the IR's specification, through the
// rendered chains; ICMP (no rule with a protocol matches it) on top.
TEST(RenderRuleset, TierScenarioGetsTheSpecsVerdicts) {
  const ir::CompiledPolicy ir = testutil::TierScenarioIr();
  absl::StatusOr<Ruleset> r = RenderRuleset(ir);
  ASSERT_TRUE(r.ok()) << r.status();
  Parsed p = Parse(*r);
  const ir::Protocol icmp = static_cast<ir::Protocol>(1);
  for (int f = 0; f < 2; ++f) {
    auto address = [&](int pod) {
      return *AddressBytes(f == 0 ? absl::StrCat("10.0.", pod + 1, ".2")
                                  : absl::StrCat("fd00:", pod + 1, "::2"));
    };
    for (int from = 0; from < 3; ++from) {
      for (int to = 0; to < 3; ++to) {
        if (from == to) continue;
        for (ir::Protocol protocol : {ir::TCP, ir::UDP}) {
          for (int port : {80, 81}) {
            const bool got =
                RunChain(p, f, "NP-FORWARD", address(from), address(to), protocol, port) != "DROP";
            EXPECT_EQ(got, testutil::TierScenarioAllows(from, to, protocol, port))
                << "family " << f << " pod " << from << " -> pod " << to << " "
                << ProtocolLower(protocol) << "/" << port << "\n" << r->ip4;
          }
        }
      }
    }
    // ICMP: a -> c passes the admin Pass and no baseline Deny names it; b -> c meets the
    // baseline Deny of every protocol; c -> a: no admin rule, and NetworkPolicy isolates.
    EXPECT_NE(RunChain(p, f, "NP-FORWARD", address(0), address(2), icmp, 0), "DROP");
    EXPECT_EQ(RunChain(p, f, "NP-FORWARD", address(1), address(2), icmp, 0), "DROP");
    EXPECT_EQ(RunChain(p, f, "NP-FORWARD", address(2), address(0), icmp, 0), "DROP");
  }
  // The layout: admin rules first, in order, commented with their origin; Pass and the end
  // of the admin rules go to the NetworkPolicy stage chain.
  EXPECT_TRUE(absl::StrContains(
      r->ip4,
      "-A NP-T0-IN -p tcp -m tcp --dport 80 -s 10.0.2.2/32 -m comment --comment \"admin[0] ANP "
      "deny-b priority 1\" -j DROP\n"
      "-A NP-T0-IN -p tcp -m tcp --dport 81 -s 10.0.2.2/32 -m comment --comment \"admin[1] ANP "
      "pass-81 priority 2\" -g NP-T0-IN-NP\n"
      "-A NP-T0-IN -p tcp -m tcp --dport 81 -s 10.0.3.2/32 -m comment --comment \"admin[1] ANP "
      "pass-81 priority 2\" -g NP-T0-IN-NP\n"))
      << r->ip4;
  EXPECT_TRUE(absl::StrContains(r->ip4, "-A NP-T0-IN -g NP-T0-IN-NP\n-A NP-T0-IN-NP ")) << r->ip4;
  // Every protocol: no -p.
  EXPECT_TRUE(absl::StrContains(
      r->ip4, "-A NP-T2-IN -s 10.0.1.2/32 -m comment --comment \"admin[0] ANP pass-a priority 5\" "
              "-g NP-T2-IN-NP\n"))
      << r->ip4;
  // Unreachable baselines (the direction is isolated) are not rendered.
  EXPECT_FALSE(absl::StrContains(r->ip4, "unreachable")) << r->ip4;
  // One rule per peer prefix: b and c are two.
  EXPECT_EQ(r->tier_rules[0], (1 + 2 + 1) + (1 + 2) + (1 + 1 + 1));
  EXPECT_EQ(r->port_rules[0], 2 + 1 + 1);
}

TEST(IptablesBackend, ExplainNamesTheTierRuleThatDecides) {
  std::unique_ptr<Backend> b = MakeIptablesBackend();
  const ir::CompiledPolicy ir = testutil::TierScenarioIr();
  absl::StatusOr<std::string> denied = b->Explain(ir, {"10.0.2.2", "10.0.1.2", 6, 80});
  ASSERT_TRUE(denied.ok()) << denied.status();
  EXPECT_TRUE(absl::StrContains(*denied, "NP-T0-IN rule 1: ")) << *denied;
  EXPECT_TRUE(absl::StrContains(*denied, "admin[0] ANP deny-b priority 1 -> DROP (denied)"))
      << *denied;
  EXPECT_TRUE(absl::StrContains(*denied, "verdict: DROP")) << *denied;
  absl::StatusOr<std::string> passed = b->Explain(ir, {"10.0.3.2", "10.0.1.2", 6, 81});
  ASSERT_TRUE(passed.ok()) << passed.status();
  EXPECT_TRUE(absl::StrContains(*passed, "admin[1] ANP pass-81 priority 2 -> pass: on to the "
                                         "NetworkPolicy stage"))
      << *passed;
  EXPECT_TRUE(absl::StrContains(*passed, "NP-T0-IN-NP rule 3: -p tcp -m tcp --dport 81")) << *passed;
  EXPECT_TRUE(absl::StrContains(*passed, "verdict: ACCEPT")) << *passed;
  absl::StatusOr<std::string> baseline = b->Explain(ir, {"10.0.1.2", "10.0.3.2", 6, 81});
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  EXPECT_TRUE(absl::StrContains(*baseline, "baseline[1] BANP deny-tcp -> DROP (denied)"))
      << *baseline;
  absl::StatusOr<std::string> icmp = b->Explain(ir, {"10.0.1.2", "10.0.3.2", 1, 0});
  ASSERT_TRUE(icmp.ok()) << icmp.status();
  EXPECT_TRUE(absl::StrContains(*icmp, "end of NP-T2-IN-NP: no rule decides protocol 1/0"))
      << *icmp;
  EXPECT_TRUE(absl::StrContains(*icmp, "verdict: ACCEPT")) << *icmp;
}


// Peer sets naming one pod each get a set apiece (an empty one in IPv6, where the pods have
// no address) up to kMaxPodSets sets in a family; one more, and none of them gets one (each
// is one inline prefix, as before pods forced sets).
TEST(RenderRuleset, PodPeerSetsGetSetsUpToACap) {
  for (int n : {kMaxPodSets, kMaxPodSets + 1}) {
    SCOPED_TRACE(absl::StrCat(n, " peer sets"));
    std::vector<testutil::Point> points = {{"10.0.0.1", 1, "x/a"}};
    for (int i = 0; i < n; ++i) {
      points.push_back({absl::StrCat("10.3.", i / 200, ".", 1 + i % 200),
                        static_cast<uint32_t>(2 + i), absl::StrCat("y/p", i)});
    }
    ir::CompiledPolicy ir = WithPods(testutil::IrFromPoints(points));
    ir::Table* t = ir.add_tables();
    t->mutable_ingress()->set_isolated(true);
    for (int i = 0; i < n; ++i) {
      ir::PeerSet* set = ir.add_peer_sets();
      set->set_id(i);
      set->add_identities(2 + i);
      ir::PortRule* rule = t->mutable_ingress()->add_rules();
      rule->set_protocol(ir::TCP);
      rule->set_first_port(1 + i);
      rule->set_last_port(1 + i);
      rule->set_peer_set(i);
    }
    ir::Endpoint* a = ir.add_endpoints();
    a->set_namespace_("x");
    a->set_name("a");
    a->add_ips("10.0.0.1");
    a->set_selected(true);
    ASSERT_TRUE(CheckIr(ir).ok()) << CheckIr(ir);
    absl::StatusOr<Ruleset> r = RenderRuleset(ir);
    ASSERT_TRUE(r.ok()) << r.status();
    const int sets = n <= kMaxPodSets ? n : 0;
    // Plus, in IPv4 only (x/a has no IPv6 address), the dispatch set of table 0's ingress
    // holding 10.0.0.1: not a peer set, not under the cap.
    EXPECT_EQ(r->sets[0], sets + 1);
    EXPECT_EQ(r->sets[1], sets);
    EXPECT_EQ(r->set_entries[0], sets + 1);
    EXPECT_EQ(r->set_entries[1], 0);
    EXPECT_EQ(r->port_rules[0], n);  // a rule per IR rule either way
  }
}

// ---- Update: element-only plans ---------------------------------------------------------

// Node pods x/a (10.0.1.2, fd00:1::2; identity 1, selected: table 0) and x/b (10.0.2.2,
// fd00:2::2; identity 2, not selected); pods of other nodes at 10.1.0.<n> and fd00:a::<n>
// with the identities given (`remote`: n -> identity). Peer sets: p0 = {2}, p1 = {3}, p2 =
// {0} (outside the cluster), p3 = all. Table 0 ingress: TCP 80 from p0, UDP 80 from p1,
// plus `extra` rules; egress: TCP 443 to p3.
// `b_exists` false: no pod x/b (its addresses outside the cluster, no endpoint b).
ir::CompiledPolicy ChurnIr(const std::map<int, uint32_t>& remote,
                           const std::vector<std::pair<uint32_t, uint32_t>>& extra = {},
                           bool b_selected = false, uint32_t a_identity = 1,
                           bool b_exists = true) {
  std::vector<testutil::Point> points = {
      {"10.0.1.2", a_identity, "x/a"}, {"fd00:1::2", a_identity, "x/a"},
      {"10.0.3.2", 3, "x/c"}, {"fd00:3::2", 3, "x/c"}};
  if (b_exists) {
    points.push_back({"10.0.2.2", 2, "x/b"});
    points.push_back({"fd00:2::2", 2, "x/b"});
  }
  for (const auto& [n, identity] : remote) {
    points.push_back({absl::StrCat("10.1.0.", n), identity, absl::StrCat("y/r", n)});
    points.push_back({absl::StrCat("fd00:a::", n), identity, absl::StrCat("y/r", n)});
  }
  ir::CompiledPolicy ir = WithPods(testutil::IrFromPoints(points));
  for (int i = 0; i < 4; ++i) {
    ir::PeerSet* set = ir.add_peer_sets();
    set->set_id(i);
    if (i == 3) {
      set->set_all(true);
    } else {
      set->add_identities(i == 0 ? 2 : i == 1 ? 3 : 0);
    }
  }
  ir::Table* t = ir.add_tables();
  t->add_policies("x/p");
  ir::DirectionPolicy* in = t->mutable_ingress();
  in->set_isolated(true);
  auto add = [](ir::DirectionPolicy* d, ir::Protocol protocol, uint32_t port, uint32_t set) {
    AddPortRule(d, protocol, port, port, set);
  };
  add(in, ir::TCP, 80, 0);
  for (const auto& [port, set] : extra) add(in, ir::TCP, port, set);
  add(in, ir::UDP, 80, 1);
  t->mutable_egress()->set_isolated(true);
  add(t->mutable_egress(), ir::TCP, 443, 3);
  for (const char* name : {"a", "b"}) {
    if (name[0] == 'b' && !b_exists) continue;
    ir::Endpoint* e = ir.add_endpoints();
    e->set_namespace_("x");
    e->set_name(name);
    const int n = name[0] == 'a' ? 1 : 2;
    e->add_ips(absl::StrCat("10.0.", n, ".2"));
    e->add_ips(absl::StrCat("fd00:", n, "::2"));
    e->set_selected(name[0] == 'a' || b_selected);
    if (e->selected()) e->set_table(0);
  }
  EXPECT_TRUE(CheckIr(ir).ok()) << CheckIr(ir);
  return ir;
}

UpdatePlan MustPlan(const ir::CompiledPolicy& previous, const ir::CompiledPolicy& next,
                    uint32_t generation = 0) {
  absl::StatusOr<UpdatePlan> plan = PlanUpdate(previous, next, generation);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? *plan : UpdatePlan{"error", "", 0, 0};
}

TEST(PlanUpdate, PodOfAnotherNodeJoiningAClassIsOneAddPerFamily) {
  const ir::CompiledPolicy before = ChurnIr({{7, 3}});
  const ir::CompiledPolicy after = ChurnIr({{7, 3}, {5, 2}});
  UpdatePlan plan = MustPlan(before, after, 1);
  EXPECT_EQ(plan.fallback, "");
  // p0 = {2} is looked up by TCP 80's rule: 10.1.0.5 joins it, in both families.
  EXPECT_EQ(plan.ipset, "add np-g1-v4-p0 10.1.0.5/32\nadd np-g1-v6-p0 fd00:a::5/128\n");
  EXPECT_EQ(plan.adds, 2);
  EXPECT_EQ(plan.dels, 0);
  // And back: the pod leaves.
  plan = MustPlan(after, before, 1);
  EXPECT_EQ(plan.fallback, "");
  EXPECT_EQ(plan.ipset, "del np-g1-v4-p0 10.1.0.5/32\ndel np-g1-v6-p0 fd00:a::5/128\n");
  // Relabelled from p0's class into p1's: one add, one del per family in two sets, both
  // looked up by RETURN rules of one chain (the adds first: midway the address is in both,
  // which gives each flow its old or its new verdict: IptablesBackend::Update).
  plan = MustPlan(ChurnIr({{5, 2}}), ChurnIr({{5, 3}}), 1);
  EXPECT_EQ(plan.fallback, "");
  EXPECT_EQ(plan.ipset,
            "add np-g1-v4-p1 10.1.0.5/32\nadd np-g1-v6-p1 fd00:a::5/128\n"
            "del np-g1-v4-p0 10.1.0.5/32\ndel np-g1-v6-p0 fd00:a::5/128\n");
  // The same program: nothing to do.
  plan = MustPlan(after, after);
  EXPECT_EQ(plan.fallback, "");
  EXPECT_EQ(plan.ipset, "");
}

TEST(PlanUpdate, AddsComeBeforeDeletes) {
  // 10.1.0.4 and 10.1.0.5 merge into one prefix: the /31 goes in before the /32 goes out,
  // so that 10.1.0.4 stays in the set throughout.
  UpdatePlan plan = MustPlan(ChurnIr({{4, 2}}), ChurnIr({{4, 2}, {5, 2}}));
  EXPECT_EQ(plan.fallback, "");
  EXPECT_EQ(plan.ipset,
            "add np-g0-v4-p0 10.1.0.4/31\nadd np-g0-v6-p0 fd00:a::4/127\n"
            "del np-g0-v4-p0 10.1.0.4/32\ndel np-g0-v6-p0 fd00:a::4/128\n");
}

TEST(PlanUpdate, FallsBackWhenUnsafeOrRulesChange) {
  const ir::CompiledPolicy before = ChurnIr({{7, 3}});
  // A local endpoint selected into table 0, which x/a keeps: the same rules, its addresses
  // join table 0's dispatch sets (IPv4's first by name); Update leaves that order to
  // UpdateDelta and reinstalls.
  EXPECT_EQ(MustPlan(before, ChurnIr({{7, 3}}, {}, true)).fallback,
            "dispatch set np-g0-v4-t0 changes (a node endpoint)");
  // A policy change.
  EXPECT_EQ(MustPlan(before, ChurnIr({{7, 3}}, {{8080, 3}})).fallback, "IPv4 rules differ");
  // x/a (dispatched) joins p0's class: both its own chains and its peers' would see changes.
  EXPECT_EQ(MustPlan(before, ChurnIr({{7, 3}}, {}, false, 2)).fallback,
            "set np-g0-v4-p0 changes at the endpoint address 10.0.1.2 of this node");
  // A pod appearing leaves "outside the cluster" (p2) where it joins p0: two changed
  // lookups, both of RETURN rules — element-only; one of a DROP rule is not
  // (TwoChangedLookupsInOneChainCouldAllowWhatBothDeny).
  EXPECT_EQ(MustPlan(ChurnIr({{7, 3}}, {{9000, 2}}), ChurnIr({{7, 3}, {5, 2}}, {{9000, 2}}))
                .fallback,
            "");
}

// Applies an element-only plan to parsed sets one line at a time, as `ipset -exist restore`
// does, calling `check` before the first line and after each.
void Replay(const UpdatePlan& plan, Parsed& p, const std::function<void()>& check);

// Two rules of one chain that both RETURN look up sets an address joins (or leaves) — the
// agent's commonest event, a pod of another node coming or going whose class a chain allows
// on two ports — is element-only: each lookup can only turn the chain's answer from DROP to
// RETURN, so midway it is the old or the new one. Checked by replaying the edit one element
// at a time against the IR's verdicts (IrAllows), both ways, and by the delta plan agreeing.
// So is an address leaving one such set while it joins another (a relabel); a rule that
// DROPs on a changed lookup still takes the full path (next test).
TEST(PlanUpdate, ChangedLookupsOfReturnRulesAllOneWayAreElementOnly) {
  // p0 on TCP 80 and TCP 81; p1 = {2, 3} on UDP 80 (so 10.1.0.5 joins p0 and p1: three
  // changed lookups, all RETURN, all gains).
  auto make = [](const std::map<int, uint32_t>& remote) {
    ir::CompiledPolicy ir = ChurnIr(remote, {{81, 0}});
    ir.mutable_peer_sets(1)->clear_identities();
    ir.mutable_peer_sets(1)->add_identities(2);
    ir.mutable_peer_sets(1)->add_identities(3);
    return ir;
  };
  const ir::CompiledPolicy before = make({{7, 3}});
  const ir::CompiledPolicy after = make({{7, 3}, {5, 2}});
  const std::string pod = *AddressBytes("10.1.0.5");
  const std::string a = *AddressBytes("10.0.1.2");
  for (const auto* from : {&before, &after}) {
    const ir::CompiledPolicy& to = from == &before ? after : before;
    UpdatePlan plan = MustPlan(*from, to);
    ASSERT_EQ(plan.fallback, "");
    EXPECT_EQ(plan.adds + plan.dels, 4);  // 10.1.0.5 and fd00:a::5 in p0 and p1
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(*from, to);
    ASSERT_TRUE(delta.has_value());
    absl::StatusOr<UpdatePlan> by_delta = PlanUpdateDelta(*from, *delta);
    ASSERT_TRUE(by_delta.ok()) << by_delta.status();
    EXPECT_EQ(by_delta->fallback, "");
    absl::StatusOr<Ruleset> rs = RenderRuleset(*from);
    ASSERT_TRUE(rs.ok()) << rs.status();
    Parsed p = Parse(*rs);
    Replay(plan, p, [&] {
      for (ir::Protocol protocol : {ir::TCP, ir::UDP}) {
        for (uint32_t port : {80u, 81u, 82u}) {
          const bool old_verdict = IrAllows(*from, pod, a, protocol, port);
          const bool new_verdict = IrAllows(to, pod, a, protocol, port);
          const bool got = RunChain(p, 0, "NP-FORWARD", pod, a, protocol, port) != "DROP";
          EXPECT_TRUE(got == old_verdict || got == new_verdict)
              << ProtocolLower(protocol) << "/" << port;
        }
      }
    });
  }
  // A changed lookup in a rule that DROPs (an admin Deny of p0 on TCP 81) besides a RETURN
  // rule's: the full path.
  auto with_deny = [&](const std::map<int, uint32_t>& remote) {
    ir::CompiledPolicy ir = make(remote);
    AddTierRule(ir.mutable_tables(0)->mutable_ingress()->mutable_admin(), ir::TIER_DENY, ir::TCP,
                81, 81, 0);
    return ir;
  };
  EXPECT_EQ(MustPlan(with_deny({{7, 3}}), with_deny({{7, 3}, {5, 2}})).fallback,
            "two rules of NP-T0-IN look up a changed address");
}

// A node pod whose table's chains exist (x/b, selected by table 0 like x/a) added and
// removed by a delta: no rule changes (a fresh render's rules are the same), and
// PlanUpdateDelta plans its dispatch set edits beside the peer set edit; every intermediate
// state of the order UpdateDelta keeps (dispatch, then peer sets, on the way in; peer sets,
// then dispatch, on the way out), one set element at a time, gives each probed flow the old
// IR's or the new IR's verdict (IrAllows), never a third; the end state is a fresh
// render's sets. The opposite order on the way in shows a third verdict (so the check can
// fail).
TEST(PlanUpdateDelta, NodePodOfAnExistingTableIsInPlaceInTheSafeOrder) {
  const ir::CompiledPolicy without = ChurnIr({{7, 3}, {5, 2}}, {}, true, 1, /*b_exists=*/false);
  const ir::CompiledPolicy with = ChurnIr({{7, 3}, {5, 2}}, {}, true, 1, /*b_exists=*/true);
  ASSERT_TRUE(CheckIr(without).ok()) << CheckIr(without);
  bool third_verdict_seen = false;
  for (const bool adding : {true, false, true}) {
    static int pass = 0;
    const bool wrong_order = pass++ == 2;  // the last pass: rules after sets, on the way in
    SCOPED_TRACE(absl::StrCat(adding ? "added" : "removed", wrong_order ? " (wrong order)" : ""));
    const ir::CompiledPolicy& from = adding ? without : with;
    const ir::CompiledPolicy& to = adding ? with : without;
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(from, to);
    ASSERT_TRUE(delta.has_value());
    absl::StatusOr<UpdatePlan> plan = PlanUpdateDelta(from, *delta);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_EQ(plan->fallback, "");
    EXPECT_EQ(plan->dispatch_first, adding);
    // x/b's two addresses in table 0's dispatch set of their family (both directions).
    const char* op = adding ? "add " : "del ";
    for (const char* line : {"np-g0-v4-t0 10.0.2.2/32", "np-g0-v6-t0 fd00:2::2/128"}) {
      EXPECT_TRUE(absl::StrContains(plan->dispatch, absl::StrCat(op, line, "\n")))
          << plan->dispatch;
    }
    EXPECT_EQ(std::count(plan->dispatch.begin(), plan->dispatch.end(), '\n'), 2);
    EXPECT_GT(plan->adds + plan->dels, 0);
    absl::StatusOr<Ruleset> from_rs = RenderRuleset(from);
    absl::StatusOr<Ruleset> to_rs = RenderRuleset(to);
    ASSERT_TRUE(from_rs.ok() && to_rs.ok());
    EXPECT_EQ(from_rs->ip4, to_rs->ip4);
    EXPECT_EQ(from_rs->ip6, to_rs->ip6);
    Parsed p = Parse(*from_rs);
    const Parsed want = Parse(*to_rs);
    std::vector<std::string> probes[2];
    for (int f = 0; f < 2; ++f) {
      for (const ir::CompiledPolicy* ir : {&from, &to}) {
        for (const ir::AddressRange& r : f == 0 ? ir->ipv4() : ir->ipv6()) probes[f].push_back(r.first());
      }
      std::sort(probes[f].begin(), probes[f].end());
      probes[f].erase(std::unique(probes[f].begin(), probes[f].end()), probes[f].end());
    }
    int third = 0;
    auto check = [&] {
      for (int f = 0; f < 2; ++f) {
        for (const std::string& src : probes[f]) {
          for (const std::string& dst : probes[f]) {
            if (src == dst) continue;
            for (ir::Protocol protocol : {ir::TCP, ir::UDP}) {
              for (uint32_t port : {80u, 81u, 443u}) {
                const bool before = IrAllows(from, src, dst, protocol, port);
                const bool after = IrAllows(to, src, dst, protocol, port);
                const bool got = RunChain(p, f, "NP-FORWARD", src, dst, protocol, port) != "DROP";
                if (before == after && got != before) {
                  ++third;
                  if (!wrong_order) {
                    ADD_FAILURE() << AddressText(src) << " -> " << AddressText(dst) << " "
                                  << ProtocolLower(protocol) << "/" << port << " mid-update";
                  }
                }
              }
            }
          }
        }
      }
    };
    UpdatePlan dispatch;
    dispatch.ipset = plan->dispatch;
    if (plan->dispatch_first && !wrong_order) {
      Replay(dispatch, p, check);
      Replay(*plan, p, check);
    } else {
      Replay(*plan, p, check);
      Replay(dispatch, p, check);
    }
    if (wrong_order) {
      third_verdict_seen = third > 0;
    } else {
      EXPECT_EQ(third, 0);
    }
    for (int f = 0; f < 2; ++f) {
      EXPECT_EQ(p.chains[f].at("NP-FORWARD"), want.chains[f].at("NP-FORWARD"));
    }
    Parsed end = p;
    Parsed fresh = want;
    for (auto& [name, entries] : end.sets) std::sort(entries.begin(), entries.end());
    for (auto& [name, entries] : fresh.sets) std::sort(entries.begin(), entries.end());
    EXPECT_EQ(end.sets, fresh.sets);
  }
  EXPECT_TRUE(third_verdict_seen) << "sets before rules on the way in should open a flow";
}

void Replay(const UpdatePlan& plan, Parsed& p, const std::function<void()>& check) {
  check();
  for (absl::string_view line : absl::StrSplit(plan.ipset, '\n', absl::SkipEmpty())) {
    std::vector<std::string> t = absl::StrSplit(line, ' ');
    ASSERT_EQ(t.size(), 3u) << line;
    ASSERT_TRUE(p.sets.count(t[1])) << line;
    std::vector<std::string>& entries = p.sets[t[1]];
    auto at = std::find(entries.begin(), entries.end(), t[2]);
    if (t[0] == "add") {
      if (at == entries.end()) entries.push_back(t[2]);
    } else {
      ASSERT_EQ(t[0], "del") << line;
      if (at != entries.end()) entries.erase(at);
    }
    check();
  }
}

// Why two lookups of a changed address in one chain force the full path: a pod of another
// node (10.1.0.5) joins identity 2, which is in p0 (NetworkPolicy allows TCP 80 from it)
// and in p1 (an admin rule denies TCP 80 from it, first). Before, TCP 80 from it to x/a is
// denied (no rule allows it); after, too (the admin Deny). Edited in place, between the
// add to p0 and the add to p1 it is allowed: a third verdict. PlanUpdate refuses; replaying
// the in-place edit shows the allowed instant (so the replay check can fail).
TEST(PlanUpdate, TwoChangedLookupsInOneChainCouldAllowWhatBothDeny) {
  auto make = [](const std::map<int, uint32_t>& remote) {
    ir::CompiledPolicy ir = ChurnIr(remote);
    ir.mutable_peer_sets(1)->clear_identities();
    ir.mutable_peer_sets(1)->add_identities(2);
    ir.mutable_peer_sets(1)->add_identities(3);
    AddTierRule(ir.mutable_tables(0)->mutable_ingress()->mutable_admin(), ir::TIER_DENY, ir::TCP,
                80, 80, 1);
    return ir;
  };
  const ir::CompiledPolicy before = make({});
  const ir::CompiledPolicy after = make({{5, 2}});
  const std::string pod = *AddressBytes("10.1.0.5");
  const std::string a = *AddressBytes("10.0.1.2");
  ASSERT_FALSE(IrAllows(before, pod, a, ir::TCP, 80));
  ASSERT_FALSE(IrAllows(after, pod, a, ir::TCP, 80));
  EXPECT_EQ(MustPlan(before, after).fallback, "two rules of NP-T0-IN look up a changed address");

  absl::StatusOr<Ruleset> rs = RenderRuleset(before);
  ASSERT_TRUE(rs.ok()) << rs.status();
  Parsed p = Parse(*rs);
  UpdatePlan in_place;
  in_place.ipset = "add np-g0-v4-p0 10.1.0.5/32\nadd np-g0-v4-p1 10.1.0.5/32\n";
  std::vector<bool> allowed;
  Replay(in_place, p, [&] {
    allowed.push_back(RunChain(p, 0, "NP-FORWARD", pod, a, ir::TCP, 80) != "DROP");
  });
  EXPECT_EQ(allowed, (std::vector<bool>{false, true, false}));
}

// Seeded random churn on random IRs: identities of a few ranges change (pods come, go, are
// relabelled; also bigger runs of addresses). Whenever PlanUpdate finds an element-only
// way, replaying it one set element at a time must give, at every step, each probed flow
// the verdict of the old IR or of the new one (np::backends::IrAllows) — never a third —
// and end with exactly the sets a fresh render of the new IR has. Replay a failure with
// its seed.
TEST(PlanUpdate, ElementStepsGiveOldOrNewVerdictsOnRandomChurn) {
  int element_only = 0, fallbacks = 0, steps_checked = 0, relabels = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed * 7919 + 1);
    ir::CompiledPolicy current = WithPods(RandomIr(seed));
    for (int step = 0; step < 10; ++step) {
      SCOPED_TRACE(absl::StrCat("step ", step));
      // Every third step a relabel into a new class.
      const bool relabel = step % 3 == 2;
      ir::CompiledPolicy next =
          relabel ? RandomRelabelStep(current, rng) : RandomChurnStep(current, rng);
      absl::StatusOr<UpdatePlan> plan = PlanUpdate(current, next, 0);
      ASSERT_TRUE(plan.ok()) << plan.status();
      if (!plan->fallback.empty()) {
        ++fallbacks;
        current = next;
        continue;
      }
      ++element_only;
      relabels += relabel;
      absl::StatusOr<Ruleset> old_rs = RenderRuleset(current);
      absl::StatusOr<Ruleset> new_rs = RenderRuleset(next);
      ASSERT_TRUE(old_rs.ok() && new_rs.ok());
      EXPECT_EQ(old_rs->ip4, new_rs->ip4);
      EXPECT_EQ(old_rs->ip6, new_rs->ip6);
      Parsed p = Parse(*old_rs);
      std::set<uint32_t> ports = {0, 80, 81, 65535};
      for (const ir::Table& t : next.tables()) {
        for (const auto* d : {&t.ingress(), &t.egress()}) {
          for (const ir::PortRule& rule : d->rules()) ports.insert(rule.first_port());
          for (const auto* tier : {&d->admin(), &d->baseline()}) {
            for (const ir::TierRule& rule : *tier) ports.insert(rule.first_port());
          }
        }
      }
      Oracle current_oracle(current), next_oracle(next);
      Replay(*plan, p, [&] {
        ++steps_checked;
        for (int f = 0; f < 2; ++f) {
          // Every single address (the pods), the first of each other range.
          std::vector<std::string> probes;
          for (const ir::AddressRange& range : f == 0 ? next.ipv4() : next.ipv6()) {
            probes.push_back(range.first());
          }
          for (const std::string& src : probes) {
            for (const std::string& dst : probes) {
              if (src == dst) continue;
              for (ir::Protocol protocol : {ir::TCP, ir::UDP, ir::SCTP}) {
                for (uint32_t port : ports) {
                  const bool before = current_oracle.Allows(src, dst, protocol, port);
                  const bool after = next_oracle.Allows(src, dst, protocol, port);
                  const bool got = RunChain(p, f, "NP-FORWARD", src, dst, protocol, port) != "DROP";
                  if (before == after) {
                    ASSERT_EQ(got, before)
                        << AddressText(src) << " -> " << AddressText(dst) << " "
                        << ProtocolLower(protocol) << "/" << port << " mid-update\n"
                        << plan->ipset;
                  }
                }
              }
            }
          }
        }
      });
      // The end state is what a fresh render of `next` has.
      Parsed want = Parse(*new_rs);
      for (auto& [name, entries] : p.sets) std::sort(entries.begin(), entries.end());
      for (auto& [name, entries] : want.sets) std::sort(entries.begin(), entries.end());
      EXPECT_EQ(p.sets, want.sets);
      current = next;
    }
  }
  // The test must exercise both ways.
  EXPECT_GT(element_only, 20);
  EXPECT_GT(fallbacks, 20);
  EXPECT_GT(relabels, 10);
  std::cout << "element-only " << element_only << " (relabels " << relabels << "), fallbacks "
            << fallbacks << ", intermediate states checked " << steps_checked << "\n";
}

// The delta path against the slow one, on the same seeded random churn: the delta from
// DiffPrograms(current, next) planned alone (PlanUpdateDelta) must, whenever it is
// element-only, be exactly PlanUpdate's edit (same adds, same deletes); it may only be
// stricter (fall back where PlanUpdate would not), and must not be so for most steps that
// PlanUpdate does in place. Replay a failure with its seed.
TEST(PlanUpdateDelta, IsPlanUpdatesEditOnRandomChurn) {
  int both = 0, only_slow = 0, neither = 0, relabels_both = 0, relabels_only_slow = 0;
  auto lines = [](const std::string& text, absl::string_view op) {
    std::vector<std::string> out;
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      if (absl::StartsWith(line, op)) out.emplace_back(line);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  for (uint64_t seed = 0; seed < 40; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed * 7919 + 1);
    ir::CompiledPolicy current = WithPods(RandomIr(seed));
    for (int step = 0; step < 10; ++step) {
      SCOPED_TRACE(absl::StrCat("step ", step));
      // Every third step a relabel into a new class (an identity appended, peer sets
      // rewritten).
      const bool relabel = step % 3 == 2;
      ir::CompiledPolicy next =
          relabel ? RandomRelabelStep(current, rng) : RandomChurnStep(current, rng);
      std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(current, next);
      ASSERT_TRUE(delta.has_value());
      absl::StatusOr<UpdatePlan> slow = PlanUpdate(current, next, 3);
      absl::StatusOr<UpdatePlan> fast = PlanUpdateDelta(current, *delta, 3);
      ASSERT_TRUE(slow.ok()) << slow.status();
      ASSERT_TRUE(fast.ok()) << fast.status();
      if (fast->fallback.empty()) {
        ASSERT_EQ(slow->fallback, "") << "the delta path edits in place where Update would not\n"
                                      << fast->ipset;
        EXPECT_EQ(lines(fast->ipset, "add "), lines(slow->ipset, "add "));
        EXPECT_EQ(lines(fast->ipset, "del "), lines(slow->ipset, "del "));
        ++both;
        relabels_both += relabel;
      } else if (slow->fallback.empty()) {
        ++only_slow;
        relabels_only_slow += relabel;
      } else {
        ++neither;
      }
      if (HasFailure()) return;
      current = next;
    }
  }
  std::cout << "in place by delta and by Update " << both << " (relabels " << relabels_both
            << "), by Update only " << only_slow << " (relabels " << relabels_only_slow
            << "), by neither " << neither << "\n";
  EXPECT_GT(relabels_both, 20);
  EXPECT_LT(relabels_only_slow, relabels_both / 4);
  EXPECT_GT(both, 40);
  EXPECT_GT(neither, 20);
  EXPECT_LT(only_slow, both / 4);
}

// ---- Update: the in-place rules path (stable numbering) ---------------------------------

// Applies an `iptables-restore --noflush` input to the parsed chains of family f in one step,
// as the kernel commits it: a declared chain is created or flushed, -A appends, -I N inserts
// at rule N, -R N replaces rule N, -D N deletes it (rules numbered from 1, each line on the
// chain as the lines before left it), -X deletes a chain (a chain something still jumps to
// cannot be deleted: a failure).
void ApplyRestore(Parsed& p, int f, const std::string& text) {
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> t = Words(line);
    if (line[0] == ':') {
      p.chains[f][t[0].substr(1)].clear();
    } else if (t[0] == "-A") {
      ASSERT_TRUE(p.chains[f].count(t[1])) << "rule in undeclared chain: " << line;
      p.chains[f][t[1]].push_back(std::vector<std::string>(t.begin() + 2, t.end()));
    } else if (t[0] == "-D" && t.size() > 2 && ![&] { int n = 0; return absl::SimpleAtoi(t[2], &n); }()) {
      // By spec: the first rule with these words.
      ASSERT_TRUE(p.chains[f].count(t[1])) << "no such chain: " << line;
      auto& rules = p.chains[f][t[1]];
      auto it = std::find(rules.begin(), rules.end(),
                          std::vector<std::string>(t.begin() + 2, t.end()));
      ASSERT_TRUE(it != rules.end()) << "no such rule: " << line;
      rules.erase(it);
    } else if (t[0] == "-E") {
      // A rename: the jumps to the chain follow it (nf_tables jumps name the chain object).
      ASSERT_EQ(t.size(), 3u) << line;
      ASSERT_TRUE(p.chains[f].count(t[1])) << "no such chain: " << line;
      ASSERT_EQ(p.chains[f].count(t[2]), 0u) << "chain exists: " << line;
      p.chains[f][t[2]] = std::move(p.chains[f][t[1]]);
      p.chains[f].erase(t[1]);
      for (auto& [chain, rules] : p.chains[f]) {
        for (std::vector<std::string>& r : rules) std::replace(r.begin(), r.end(), t[1], t[2]);
      }
    } else if (t[0] == "-I" || t[0] == "-R" || t[0] == "-D") {
      ASSERT_TRUE(p.chains[f].count(t[1])) << "no such chain: " << line;
      auto& rules = p.chains[f][t[1]];
      size_t n = 0;
      ASSERT_TRUE(t.size() >= 3 && absl::SimpleAtoi(t[2], &n) && n >= 1) << line;
      ASSERT_LE(n, rules.size() + (t[0] == "-I" ? 1 : 0)) << "no rule " << n << ": " << line;
      const std::vector<std::string> rule(t.begin() + 3, t.end());
      if (t[0] == "-I") {
        rules.insert(rules.begin() + static_cast<long>(n - 1), rule);
      } else if (t[0] == "-R") {
        rules[n - 1] = rule;
      } else {
        ASSERT_EQ(t.size(), 3u) << line;
        rules.erase(rules.begin() + static_cast<long>(n - 1));
      }
    } else if (t[0] == "-X") {
      ASSERT_TRUE(p.chains[f].count(t[1])) << line;
      for (const auto& [chain, rules] : p.chains[f]) {
        for (const std::vector<std::string>& r : rules) {
          ASSERT_TRUE(std::find(r.begin(), r.end(), t[1]) == r.end())
              << chain << " still jumps to " << t[1];
        }
      }
      p.chains[f].erase(t[1]);
    } else {
      ASSERT_TRUE(line == "*filter" || line == "COMMIT") << line;
    }
  }
}

// Whether a rule of `p` names the set.
bool SetNamed(const Parsed& p, const std::string& name) {
  for (int f = 0; f < 2; ++f) {
    for (const auto& [chain, rules] : p.chains[f]) {
      for (const std::vector<std::string>& r : rules) {
        if (std::find(r.begin(), r.end(), name) != r.end()) return true;
      }
    }
  }
  return false;
}

// Replays a rules plan on `p` as Update runs it: every set created (empty), then every
// element added one at a time, then each family's switch (one step each), then each
// family's deferred cleanup, then each set destroyed (none may still be named by a rule);
// the chains must then be what the one-transaction `restore` leaves; `check` runs before
// the first step and
// after each — except after creating or filling a set that no rule names (no lookup can
// see it: the states before and after answer every flow alike), which is the invariant
// the order keeps and is counted in `unnamed`. `restore_early`: the restores run right
// after the sets are created, before they are filled (a wrong order, to show that the
// check can fail). `before_restores` and `after_restores` (optional) run around the restores
// (a pod delta's element edits, UpdateDelta's rules path); `switched` (optional) right after
// them, before the deferred cleanup (where UpdateDelta returns).
void ReplayRules(const RulesPlan& plan, Parsed& p, const std::function<void()>& check,
                 bool restore_early = false, int* unnamed = nullptr,
                 const std::function<void()>& before_restores = nullptr,
                 const std::function<void()>& after_restores = nullptr,
                 const std::function<void()>& switched = nullptr) {
  auto set_step = [&](const std::string& set) {
    if (SetNamed(p, set)) {
      check();
    } else if (unnamed != nullptr) {
      ++*unnamed;
    }
  };
  check();
  std::vector<std::pair<std::string, std::string>> adds;
  for (absl::string_view line : absl::StrSplit(plan.ipset, '\n', absl::SkipEmpty())) {
    std::vector<std::string> t = absl::StrSplit(line, ' ');
    if (t[0] == "create") {
      ASSERT_EQ(p.sets.count(t[1]), 0u) << "a live set's name reused: " << line;
      p.sets[t[1]];
      p.set_family[t[1]] = t[4];
      set_step(t[1]);
    } else {
      ASSERT_EQ(t[0], "add") << line;
      adds.emplace_back(t[1], t[2]);
    }
  }
  // What the one-transaction form leaves, to compare with the switch and cleanup's end.
  Parsed one = p;
  for (int f = 0; f < 2; ++f) {
    if (!plan.restore[f].empty()) ApplyRestore(one, f, plan.restore[f]);
  }
  auto restores = [&] {
    if (before_restores) before_restores();
    for (int f = 0; f < 2; ++f) {
      if (plan.switch_restore[f].empty()) continue;
      ASSERT_FALSE(absl::StrContains(plan.switch_restore[f], "\n-D ") ||
                   absl::StrContains(plan.switch_restore[f], "\n-R ") ||
                   absl::StrContains(plan.switch_restore[f], "\n-X ") ||
                   absl::StrContains(plan.switch_restore[f], "\n-F "))
          << "the switch deletes: " << plan.switch_restore[f];
      ApplyRestore(p, f, plan.switch_restore[f]);
      check();
    }
    if (after_restores) after_restores();
    if (switched) switched();  // the event's path is over: the new program must be in force
  };
  if (restore_early) restores();
  for (const auto& [set, entry] : adds) {
    p.sets[set].push_back(entry);
    set_step(set);
  }
  if (!restore_early) {
    check();  // the sets complete
    restores();
  }
  for (int f = 0; f < 2; ++f) {  // the deferred cleanup
    if (plan.cleanup[f].empty()) continue;
    ApplyRestore(p, f, plan.cleanup[f]);
    check();
  }
  for (int f = 0; f < 2; ++f) {
    ASSERT_EQ(p.chains[f], one.chains[f]) << "family " << f << ": the switch and cleanup end "
                                          << "elsewhere than the restore:\n"
                                          << plan.switch_restore[f] << plan.cleanup[f];
  }
  for (const std::string& name : plan.destroyed) {
    for (int f = 0; f < 2; ++f) {
      for (const auto& [chain, rules] : p.chains[f]) {
        for (const std::vector<std::string>& r : rules) {
          ASSERT_TRUE(std::find(r.begin(), r.end(), name) == r.end())
              << chain << " still names " << name;
        }
      }
    }
    ASSERT_EQ(p.sets.erase(name), 1u) << name;
    p.set_family.erase(name);
    check();
  }
}

// The chains of `p` with each set named by its sorted entries, and its sets' entries by
// name with the generation blanked: what must equal a fresh render's.
std::string Canonical(const Parsed& p) {
  std::string out;
  auto blank = [](const std::string& name) {
    return absl::StartsWith(name, "np-g") ? absl::StrCat("np-g*", name.substr(name.find('-', 4)))
                                          : name;
  };
  for (int f = 0; f < 2; ++f) {
    for (const auto& [chain, rules] : p.chains[f]) {
      absl::StrAppend(&out, f, " ", chain, "\n");
      for (const std::vector<std::string>& r : rules) {
        std::vector<std::string> words;
        for (const std::string& w : r) words.push_back(blank(w));
        absl::StrAppend(&out, "  ", absl::StrJoin(words, " "), "\n");
      }
    }
  }
  std::vector<std::string> sets;
  for (const auto& [name, entries] : p.sets) {
    std::vector<std::string> sorted = entries;
    std::sort(sorted.begin(), sorted.end());
    sets.push_back(absl::StrCat(blank(name), ": ", absl::StrJoin(sorted, " "), "\n"));
  }
  std::sort(sets.begin(), sets.end());
  return out + absl::StrJoin(sets, "");
}

// Every flow between the probed addresses (each endpoint address, and up to 8 more: the
// first addresses of ranges of either program), on TCP/UDP/SCTP and the ports rules start
// at, through the parsed rules: counts the flows that both programs give one verdict and
// `p` another (a third verdict), and at the end, with `exact`, those that do not get the
// new program's verdict.
struct FlowCheck {
  const ir::CompiledPolicy* before;
  const ir::CompiledPolicy* after;
  std::vector<std::string> probes[2];
  std::set<uint32_t> ports = {0, 80, 81, 7777, 65535};

  FlowCheck(const ir::CompiledPolicy& from, const ir::CompiledPolicy& to, std::mt19937_64& rng)
      : before(&from), after(&to) {
    for (const ir::CompiledPolicy* ir : {&from, &to}) {
      for (const ir::Endpoint& e : ir->endpoints()) {
        for (const std::string& ip : e.ips()) {
          absl::StatusOr<std::string> b = AddressBytes(ip);
          if (b.ok()) probes[b->size() == 4 ? 0 : 1].push_back(*b);
        }
      }
      for (const ir::Table& t : ir->tables()) {
        for (const auto* d : {&t.ingress(), &t.egress()}) {
          for (const ir::PortRule& rule : d->rules()) ports.insert(rule.first_port());
          for (const auto* tier : {&d->admin(), &d->baseline()}) {
            for (const ir::TierRule& rule : *tier) ports.insert(rule.first_port());
          }
        }
      }
    }
    for (int f = 0; f < 2; ++f) {
      const auto& ranges = f == 0 ? to.ipv4() : to.ipv6();
      for (int i = 0; i < 4 && !ranges.empty(); ++i) {
        probes[f].push_back(ranges[static_cast<int>(rng() % ranges.size())].first());
      }
      const auto& old_ranges = f == 0 ? from.ipv4() : from.ipv6();
      for (int i = 0; i < 4 && !old_ranges.empty(); ++i) {
        probes[f].push_back(old_ranges[static_cast<int>(rng() % old_ranges.size())].first());
      }
      std::sort(probes[f].begin(), probes[f].end());
      probes[f].erase(std::unique(probes[f].begin(), probes[f].end()), probes[f].end());
    }
    Expect();
  }

  // Every probed flow with both programs' verdicts (IrAllows), computed once.
  struct Flow {
    int f;
    const std::string* src;
    const std::string* dst;
    ir::Protocol protocol;
    uint32_t port;
    bool old_verdict, new_verdict;
  };
  std::vector<Flow> flows;
  void Expect() {
    Oracle old_oracle(*before), new_oracle(*after);
    for (int f = 0; f < 2; ++f) {
      for (const std::string& src : probes[f]) {
        for (const std::string& dst : probes[f]) {
          if (src == dst) continue;
          for (ir::Protocol protocol : {ir::TCP, ir::UDP, ir::SCTP}) {
            for (uint32_t port : ports) {
              flows.push_back(Flow{f, &src, &dst, protocol, port,
                                   old_oracle.Allows(src, dst, protocol, port),
                                   new_oracle.Allows(src, dst, protocol, port)});
            }
          }
        }
      }
    }
  }

  // (third verdicts, flows without the new verdict)
  std::pair<int, int> Run(const Parsed& p, std::string* example = nullptr) const {
    int third = 0, not_new = 0;
    for (const Flow& x : flows) {
      const bool got =
          RunChain(p, x.f, "NP-FORWARD", *x.src, *x.dst, x.protocol, x.port) != "DROP";
      if (got != x.new_verdict) ++not_new;
      if (x.old_verdict == x.new_verdict && got != x.old_verdict) {
        ++third;
        if (example != nullptr && example->empty()) {
          *example = absl::StrCat(AddressText(*x.src), " -> ", AddressText(*x.dst), " ",
                                  ProtocolLower(x.protocol), "/", x.port);
        }
      }
    }
    return {third, not_new};
  }
};

RulesPlan MustPlanRules(const ir::CompiledPolicy& previous, const ir::CompiledPolicy& next,
                        uint32_t generation = 0) {
  absl::StatusOr<RulesPlan> plan = PlanRulesUpdate(previous, next, generation);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? *plan : RulesPlan{"error"};
}

// A plan from the delta is the whole-model path's plan: the same new sets (names, entries),
// the same sets destroyed, the same restores, switches and cleanups, the same chain counts.
void ExpectSamePlan(const RulesPlan& got, const RulesPlan& want) {
  EXPECT_EQ(got.ipset, want.ipset);
  EXPECT_EQ(got.created, want.created);
  EXPECT_EQ(got.destroyed, want.destroyed);
  for (int f = 0; f < 2; ++f) {
    EXPECT_EQ(got.restore[f], want.restore[f]) << "family " << f;
    EXPECT_EQ(got.switch_restore[f], want.switch_restore[f]) << "family " << f;
    EXPECT_EQ(got.cleanup[f], want.cleanup[f]) << "family " << f;
    EXPECT_EQ(got.chains_written[f], want.chains_written[f]);
    EXPECT_EQ(got.chains_deleted[f], want.chains_deleted[f]);
  }
}

// Hand-written pairs on ChurnIr's node (x/a selected by table 0): a policy added as a new
// peer set and a rule of table 0, then deleted (the peer set left a tombstone); an endpoint
// moved into a new table. Only the chains that differ are written, only the sets that
// differ are made (under generation + 1) or destroyed; unchanged sets keep their names.
TEST(PlanRulesUpdate, HandWrittenPolicyAddDeleteAndEndpointMove) {
  const ir::CompiledPolicy base = ChurnIr({{7, 3}, {5, 2}});
  ir::CompiledPolicy added = base;
  const uint32_t p4 = testutil::AddPeerSet(added, false, {2, 3});
  {
    ir::PortRule* r = added.mutable_tables(0)->mutable_ingress()->add_rules();
    r->set_protocol(ir::UDP);
    r->set_first_port(7777);
    r->set_last_port(7777);
    r->set_peer_set(p4);
  }
  ASSERT_TRUE(CheckIr(added).ok()) << CheckIr(added);
  EXPECT_EQ(MustPlan(base, added, 4).fallback, "IPv4 rules differ");
  RulesPlan plan = MustPlanRules(base, added, 4);
  EXPECT_EQ(plan.fallback, "");
  EXPECT_EQ(plan.created, (std::vector<std::string>{"np-g5-v4-p4", "np-g5-v6-p4"}));
  EXPECT_TRUE(plan.destroyed.empty());
  for (int f = 0; f < 2; ++f) {
    EXPECT_EQ(plan.chains_written[f], 1);
    EXPECT_EQ(plan.chains_deleted[f], 0);
    EXPECT_TRUE(absl::StartsWith(plan.restore[f], "*filter\n:NP-T0-IN - [0:0]\n-A NP-T0-IN "))
        << plan.restore[f];
    EXPECT_FALSE(absl::StrContains(plan.restore[f], "NP-FORWARD")) << plan.restore[f];
    EXPECT_FALSE(absl::StrContains(plan.restore[f], "NP-T0-EG")) << plan.restore[f];
  }
  EXPECT_TRUE(absl::StrContains(plan.restore[0], "--match-set np-g5-v4-p4 src -j RETURN"));
  EXPECT_TRUE(absl::StrContains(plan.restore[0], "--match-set np-g4-v4-p0 src -j RETURN"));
  EXPECT_TRUE(absl::StrContains(plan.ipset, "add np-g5-v4-p4 10.1.0.5/32\n")) << plan.ipset;

  // Deleted: the rule goes, peer set 4 stays as a tombstone (no identities).
  ir::CompiledPolicy deleted = base;
  testutil::AddPeerSet(deleted, false, {});
  plan = MustPlanRules(added, deleted, 4);
  EXPECT_EQ(plan.fallback, "");
  EXPECT_TRUE(plan.created.empty());
  EXPECT_EQ(plan.destroyed, (std::vector<std::string>{"np-g4-v4-p4", "np-g4-v6-p4"}));
  EXPECT_EQ(plan.chains_written[0], 1);

  // x/b selected into a new table 1 (isolated ingress, TCP 81 from p1): its chains are new,
  // NP-FORWARD dispatches it through a new set; table 0's dispatch set stays.
  ir::CompiledPolicy moved = ChurnIr({{7, 3}, {5, 2}});
  ir::Table* t1 = moved.add_tables();
  t1->set_id(1);
  t1->add_policies("x/q");
  t1->mutable_ingress()->set_isolated(true);
  ir::PortRule* r = t1->mutable_ingress()->add_rules();
  r->set_protocol(ir::TCP);
  r->set_first_port(81);
  r->set_last_port(81);
  r->set_peer_set(1);
  for (ir::Endpoint& e : *moved.mutable_endpoints()) {
    if (e.name() == "b") {
      e.set_selected(true);
      e.set_table(1);
    }
  }
  ASSERT_TRUE(CheckIr(moved).ok()) << CheckIr(moved);
  plan = MustPlanRules(base, moved, 0);
  EXPECT_EQ(plan.created, (std::vector<std::string>{"np-g1-v4-t1", "np-g1-v6-t1"}));
  for (int f = 0; f < 2; ++f) {
    EXPECT_EQ(plan.chains_written[f], 2);  // NP-D0 and NP-T1-IN
    // NP-T1-IN declared and filled; NP-D0 (tables 0-31) not flushed: its jump to it inserted
    // after table 0's (rules 1 and 2 dispatch table 0); NP-FORWARD unchanged.
    EXPECT_TRUE(absl::StartsWith(plan.restore[f], "*filter\n:NP-T1-IN - [0:0]\n-A NP-T1-IN "))
        << plan.restore[f];
    EXPECT_TRUE(absl::StrContains(
        plan.restore[f], absl::StrCat("\n-I NP-D0 3 -m set --match-set np-g1-v", 4 + 2 * f,
                                      "-t1 dst -j NP-T1-IN\nCOMMIT\n")))
        << plan.restore[f];
    EXPECT_FALSE(absl::StrContains(plan.restore[f], "NP-FORWARD")) << plan.restore[f];
    EXPECT_FALSE(absl::StrContains(plan.restore[f], ":NP-D0")) << plan.restore[f];
    EXPECT_FALSE(absl::StrContains(plan.restore[f], ":NP-T0-IN")) << plan.restore[f];
  }
  // And back: table 1 a tombstone; its chains and dispatch sets go.
  ir::CompiledPolicy back = base;
  back.add_tables()->set_id(1);
  plan = MustPlanRules(moved, back, 0);
  EXPECT_EQ(plan.destroyed, (std::vector<std::string>{"np-g0-v4-t1", "np-g0-v6-t1"}));
  for (int f = 0; f < 2; ++f) {
    EXPECT_EQ(plan.chains_deleted[f], 1);
    EXPECT_TRUE(absl::StrContains(plan.restore[f], "\n-D NP-D0 3\n-X NP-T1-IN\nCOMMIT\n"))
        << plan.restore[f];
  }
}

// Seeded random stably numbered events (testutil::StableEvent: rules, tier rules, a peer
// set's identities, a new peer set, a relabel into a new identity, a new table, a table
// made a tombstone, an endpoint moved; tombstone ids reused) on random IRs, each step from
// the last: every intermediate state of the in-place rules plan — each set created, each
// element added, each family's restore, each set destroyed — gives every probed flow the
// old program's or the new one's verdict (IrAllows), never a third; the end state gives
// the new one's and is a fresh render of the new program up to set generations. The same
// plan with its restores run before the new sets are filled shows third verdicts (so the
// check can fail). Replay a failure with its seed.
TEST(PlanRulesUpdate, EveryStepGivesOldOrNewVerdictsOnRandomStableEvents) {
  int plans = 0, states = 0, unnamed = 0, early_thirds = 0, chains = 0, sets = 0;
  int per_kind[testutil::kStableEventKinds] = {};
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed * 104729 + 7);
    // Odd seeds: tables from id 30 on (dispatch chains NP-D0 and NP-D1, and more to come).
    ir::CompiledPolicy current = WithPods(WithTablesFrom(RandomIr(seed), seed % 2 * 30));
    uint32_t generation = static_cast<uint32_t>(seed % 3);
    for (int step = 0; step < 10; ++step) {
      const int kind = static_cast<int>(rng() % testutil::kStableEventKinds);
      SCOPED_TRACE(absl::StrCat("step ", step, " (", testutil::StableEventName(kind), ")"));
      ir::CompiledPolicy next = testutil::StableEvent(current, kind, rng);
      ASSERT_TRUE(CheckIr(next).ok()) << CheckIr(next);
      RulesPlan plan = MustPlanRules(current, next, generation);
      ASSERT_EQ(plan.fallback, "");
      ++plans;
      ++per_kind[kind];
      chains += plan.chains_written[0] + plan.chains_written[1] + plan.chains_deleted[0] +
                plan.chains_deleted[1];
      sets += static_cast<int>(plan.created.size() + plan.destroyed.size());
      absl::StatusOr<Ruleset> old_rs = RenderRuleset(current, {generation});
      absl::StatusOr<Ruleset> new_rs = RenderRuleset(next, {generation + 1});
      ASSERT_TRUE(old_rs.ok() && new_rs.ok());
      const FlowCheck flows(current, next, rng);
      Parsed p = Parse(*old_rs);
      ReplayRules(
          plan, p,
          [&] {
            ++states;
            std::string example;
            const std::pair<int, int> got = flows.Run(p, &example);
            ASSERT_EQ(got.first, 0) << example << " mid-update\n"
                                    << plan.restore[0] << plan.restore[1];
          },
          /*restore_early=*/false, &unnamed, nullptr, nullptr, [&] {
            EXPECT_EQ(flows.Run(p).second, 0) << "the switch is not the new program:\n"
                                              << plan.switch_restore[0] << plan.switch_restore[1];
          });
      if (HasFailure()) return;
      EXPECT_EQ(flows.Run(p).second, 0) << "the end state is not the new program";
      EXPECT_EQ(Canonical(p), Canonical(Parse(*new_rs)));
      // The wrong order: rules first, sets filled after.
      if (!plan.ipset.empty() && (!plan.restore[0].empty() || !plan.restore[1].empty())) {
        Parsed q = Parse(*old_rs);
        int third = 0;
        ReplayRules(
            plan, q, [&] { if (third == 0) third += flows.Run(q).first; }, /*restore_early=*/true);
        early_thirds += third > 0;
      }
      current = std::move(next);
      ++generation;
    }
  }
  for (int k = 0; k < testutil::kStableEventKinds; ++k) {
    EXPECT_GT(per_kind[k], 8) << testutil::StableEventName(k);
  }
  EXPECT_GT(chains, plans);  // events change rules...
  EXPECT_GT(sets, plans / 2);
  EXPECT_GT(early_thirds, 5) << "filling sets after the restore should show third verdicts";
  std::cout << plans << " plans, " << states << " intermediate states checked (" << unnamed
            << " more edit sets no rule names), " << chains
            << " chains written or deleted, " << sets << " sets made or destroyed; rules before "
            << "filled sets gave third verdicts in " << early_thirds << " plans\n";
}

// ---- UpdateDelta: the rules path planned from the delta -----------------------------------

// Seeded random stably numbered events (testutil::StableEvent) as DiffPrograms deltas: a delta
// that edits no pods (policy, tier, peer set, table, tombstone, endpoint-move events) planned
// from the delta alone (PlanRulesUpdateDelta) is exactly the plan of the whole-model path
// (PlanRulesUpdate of the two programs: the same chains written and deleted, the same restore
// texts, the same new sets with the same entries, the same sets destroyed) — which the
// replay test above checks step by step — and only pod deltas may fall back. Replay a failure
// with its seed (NP_TEST_SEED).
TEST(PlanRulesUpdateDelta, IsPlanRulesUpdateOnRandomStableEventDeltas) {
  uint64_t first_seed = 0, seeds = 40;
  if (const char* env = getenv("NP_TEST_SEED"); env != nullptr) {
    ASSERT_TRUE(absl::SimpleAtoi(env, &first_seed)) << env;
    seeds = 1;
  }
  int planned = 0, with_tables = 0, pod = 0, chains = 0;
  int per_kind[testutil::kStableEventKinds] = {};
  for (uint64_t seed = first_seed; seed < first_seed + seeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed, " (replay: NP_TEST_SEED=", seed, ")"));
    std::mt19937_64 rng(seed * 7919 + 3);
    // Odd seeds: tables from id 30 on (dispatch chains NP-D0 and NP-D1, and more to come).
    ir::CompiledPolicy current = WithPods(WithTablesFrom(RandomIr(seed + 500), seed % 2 * 30));
    uint32_t generation = static_cast<uint32_t>(seed % 4);
    for (int step = 0; step < 12; ++step) {
      const int kind = static_cast<int>(rng() % testutil::kStableEventKinds);
      SCOPED_TRACE(absl::StrCat("step ", step, " (", testutil::StableEventName(kind), ")"));
      ir::CompiledPolicy next = testutil::StableEvent(current, kind, rng);
      std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(current, next);
      if (!delta.has_value()) continue;
      absl::StatusOr<DeltaRulesPlan> plan = PlanRulesUpdateDelta(current, *delta, generation);
      ASSERT_TRUE(plan.ok()) << plan.status();
      if (plan->pod || !plan->fallback.empty()) {
        EXPECT_TRUE(!delta->ipv4().empty() || !delta->ipv6().empty() ||
                    !delta->identity_pods().empty())
            << "a delta without pod edits fell back: " << plan->fallback;
        ++pod;
      } else {
        const RulesPlan want = MustPlanRules(current, next, generation);
        ASSERT_EQ(want.fallback, "");
        ExpectSamePlan(plan->rules, want);
        for (int f = 0; f < 2; ++f) chains += want.chains_written[f] + want.chains_deleted[f];
        ++planned;
        ++per_kind[kind];
        with_tables += !delta->tables().empty();
      }
      if (HasFailure()) return;
      current = std::move(next);
      ++generation;
    }
  }
  for (int k = 0; k < testutil::kStableEventKinds; ++k) {
    if (k != testutil::kRelabel && seeds > 1) {
      EXPECT_GT(per_kind[k], 10) << testutil::StableEventName(k);
    }
  }
  std::cout << planned << " deltas planned from the delta as the whole-model path plans them ("
            << with_tables << " with tables, " << chains << " chains written or deleted); "
            << pod << " pod deltas left out\n";
}

// The programs of a pod of this node that brings its own table: `with` is `base` with
// endpoint e (of base) selected into a table of its own, appended with random rules
// (isolated ingress) on base's peer sets and one peer set appended; `without` has no
// endpoint e, its table and the peer sets only that table named are tombstones, and its
// address ranges carry another identity and no pod (as np/lower_delta.h lowers it).
struct PodTablePair {
  ir::CompiledPolicy with, without;
};
std::optional<PodTablePair> PodWithOwnTable(const ir::CompiledPolicy& base, std::mt19937_64& rng) {
  if (base.endpoints_size() == 0 || base.identities_size() < 2) return std::nullopt;
  PodTablePair out{base, {}};
  ir::CompiledPolicy& with = out.with;
  const int e = static_cast<int>(rng() % static_cast<uint64_t>(with.endpoints_size()));
  testutil::AddRandomPeerSets(rng, 1, 0, static_cast<uint32_t>(with.identities_size() - 1), with);
  testutil::AddRandomTables(rng, 1, with.peer_sets_size(), /*first_ingress=*/true, with);
  const uint32_t table = static_cast<uint32_t>(with.tables_size() - 1);
  with.mutable_endpoints(e)->set_selected(true);
  with.mutable_endpoints(e)->set_table(table);
  with = WithPods(with);
  auto used = [](const ir::CompiledPolicy& ir) {
    std::vector<bool> out(ir.peer_sets_size(), false);
    for (const ir::Table& t : ir.tables()) {
      for (const ir::DirectionPolicy* d : {&t.ingress(), &t.egress()}) {
        if (d->isolated()) {
          for (const ir::PortRule& r : d->rules()) out[r.peer_set()] = true;
        }
        for (const ir::TierRule& r : d->admin()) out[r.peer_set()] = true;
        if (!d->isolated()) {
          for (const ir::TierRule& r : d->baseline()) out[r.peer_set()] = true;
        }
      }
    }
    return out;
  };
  ir::CompiledPolicy without = with;
  const ir::Endpoint gone = without.endpoints(e);
  without.mutable_endpoints()->DeleteSubrange(e, 1);
  without.mutable_tables(static_cast<int>(table))->Clear();
  without.mutable_tables(static_cast<int>(table))->set_id(table);
  const std::vector<bool> was = used(with), is = used(without);
  for (int s = 0; s < without.peer_sets_size(); ++s) {
    if (was[s] && !is[s]) {
      without.mutable_peer_sets(s)->Clear();
      without.mutable_peer_sets(s)->set_id(static_cast<uint32_t>(s));
    }
  }
  const uint32_t other = static_cast<uint32_t>(1 + rng() % (without.identities_size() - 1));
  for (auto* ranges : {without.mutable_ipv4(), without.mutable_ipv6()}) {
    for (ir::AddressRange& r : *ranges) {
      for (const std::string& ip : gone.ips()) {
        absl::StatusOr<std::string> bytes = AddressBytes(ip);
        if (bytes.ok() && r.first() == *bytes && r.last() == *bytes) {
          r.set_identity((r.identity() + other) % without.identities_size());
          r.clear_pod();
        }
      }
    }
  }
  out.without = WithPods(without);
  if (!CheckIr(out.with).ok() || !CheckIr(out.without).ok()) return std::nullopt;
  return out;
}

// A pod of this node that brings its table (added) or takes it away (removed), on seeded
// random programs, as the DiffPrograms delta: PlanRulesUpdateDelta plans the table's chains
// and NP-FORWARD as one restore per family (no other live chain written), new sets for its
// dispatch and new peer sets, and the element edits of the sets that keep their names. Every
// intermediate state in UpdateDelta's order — new sets made and filled (no rule names them),
// then on the way in the dispatch set edits and restores before the member edits, on the way
// out after them, then the sets destroyed — gives every probed flow the old program's or the
// new one's verdict (IrAllows), never a third; the end state is a fresh render of the new
// program (generations aside). The member edits before the restores on the way in show
// third verdicts (so the check can fail). Replay a failure with its seed (NP_TEST_SEED).
TEST(PlanRulesUpdateDelta, PodBringingOrRetiringItsTableGivesOldOrNewVerdicts) {
  uint64_t first_seed = 0, seeds = 80;
  if (const char* env = getenv("NP_TEST_SEED"); env != nullptr) {
    ASSERT_TRUE(absl::SimpleAtoi(env, &first_seed)) << env;
    seeds = 1;
  }
  int plans = 0, states = 0, fallbacks = 0, member_edits = 0, wrong_thirds = 0, created = 0;
  std::map<std::string, int> why;
  for (uint64_t seed = first_seed; seed < first_seed + seeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed, " (replay: NP_TEST_SEED=", seed, ")"));
    std::mt19937_64 rng(seed * 31337 + 11);
    // Odd seeds: tables from id 30 on (dispatch chains NP-D0 and NP-D1).
    std::optional<PodTablePair> pair =
        PodWithOwnTable(WithPods(WithTablesFrom(RandomIr(seed + 900), seed % 2 * 30)), rng);
    if (!pair.has_value()) continue;
    for (const bool adding : {true, false}) {
      SCOPED_TRACE(adding ? "added" : "removed");
      const ir::CompiledPolicy& from = adding ? pair->without : pair->with;
      const ir::CompiledPolicy& to = adding ? pair->with : pair->without;
      std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(from, to);
      ASSERT_TRUE(delta.has_value());
      const uint32_t generation = static_cast<uint32_t>(seed % 5);
      absl::StatusOr<DeltaRulesPlan> plan = PlanRulesUpdateDelta(from, *delta, generation);
      ASSERT_TRUE(plan.ok()) << plan.status();
      if (!plan->fallback.empty()) {
        ++fallbacks;
        ++why[plan->fallback.substr(0, plan->fallback.find_first_of("0123456789"))];
        continue;
      }
      ++plans;
      EXPECT_TRUE(plan->pod);
      // (One switch: no member edit to order, checked as the ordered ones are below.)
      if (!plan->whole) EXPECT_EQ(plan->members.dispatch_first, adding);
      member_edits += plan->members.adds + plan->members.dels;
      created += static_cast<int>(plan->rules.created.size());
      absl::StatusOr<Ruleset> old_rs = RenderRuleset(from, {generation});
      absl::StatusOr<Ruleset> new_rs = RenderRuleset(to, {generation + 1});
      ASSERT_TRUE(old_rs.ok() && new_rs.ok());
      const FlowCheck flows(from, to, rng);
      UpdatePlan dispatch;
      dispatch.ipset = plan->members.dispatch;
      for (const bool wrong : {false, true}) {
        if (wrong && (!adding || plan->whole)) continue;
        Parsed p = Parse(*old_rs);
        int third = 0;
        std::string example;
        auto check = [&] {
          if (!wrong) ++states;
          const std::pair<int, int> got = flows.Run(p, third == 0 ? &example : nullptr);
          third += got.first;
        };
        auto members = [&] { Replay(plan->members, p, check); };
        auto dispatches = [&] { Replay(dispatch, p, check); };
        std::function<void()> before, after;
        if (adding != wrong) {  // the way in: dispatch with the restores, then the members
          before = dispatches;
          after = members;
        } else {
          before = [&] {
            members();
            dispatches();
          };
        }
        ReplayRules(plan->rules, p, check, /*restore_early=*/false, nullptr, before, after, [&] {
          if (!wrong) EXPECT_EQ(flows.Run(p).second, 0) << "the switch is not the new program";
        });
        if (wrong) {
          wrong_thirds += third > 0;
          continue;
        }
        ASSERT_EQ(third, 0) << example << " mid-update\n"
                            << plan->rules.restore[0] << plan->rules.restore[1]
                            << plan->members.ipset << plan->members.dispatch;
        EXPECT_EQ(flows.Run(p).second, 0) << "the end state is not the new program";
        EXPECT_EQ(Canonical(p), Canonical(Parse(*new_rs)));
      }
      if (HasFailure()) return;
    }
  }
  std::string reasons;
  for (const auto& [text, n] : why) absl::StrAppend(&reasons, "\n  ", n, " x ", text);
  std::cout << plans << " pod deltas with a table planned, " << states
            << " intermediate states checked, " << member_edits << " member edits, " << created
            << " sets made; " << fallbacks << " fell back:" << reasons << "\n"
            << "member edits before the restores on the way in gave third verdicts in "
            << wrong_thirds << " plans\n";
  if (seeds > 1) {
    EXPECT_GT(plans, static_cast<int>(seeds));  // most of the 2 x seeds
    EXPECT_GT(wrong_thirds, 0);
  }
}

// Issue 13: pod deltas the ordered way cannot order — a node pod relabelled into a new
// (appended) or reused identity, moved between tables, a relabel with a table replaced, a
// peer set gaining its first pod — are planned from the delta as one switch
// (DeltaRulesPlan::whole): seeded random pod events (RandomRelabelStep, RandomChurnStep),
// half of them combined with a table event (an endpoint moved, rules changed, a table new
// or retired), as the DiffPrograms delta. Each such plan is exactly PlanRulesUpdate's plan
// of the two programs (the same restores, new sets under the same names with the same
// entries, the same sets destroyed), and replayed step by step (sets made and filled, the
// switch per family, the cleanup, the sets destroyed) every probed flow gets the old
// program's or the new one's verdict (IrAllows), the switch is the new program, and the end
// is a fresh render of it. Replay a failure with its seed (NP_TEST_SEED).
TEST(PlanRulesUpdateDelta, PodDeltasItCannotOrderAreOneSwitchEqualToTheWholeModelPlan) {
  uint64_t first_seed = 0, seeds = 30;
  if (const char* env = getenv("NP_TEST_SEED"); env != nullptr) {
    ASSERT_TRUE(absl::SimpleAtoi(env, &first_seed)) << env;
    seeds = 1;
  }
  int whole = 0, appended = 0, with_tables = 0, moved = 0, ordered = 0, fallbacks = 0,
      states = 0;
  const int kinds[] = {testutil::kMoveEndpoint, testutil::kRules, testutil::kNewTable,
                       testutil::kTombstone};
  for (uint64_t seed = first_seed; seed < first_seed + seeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed, " (replay: NP_TEST_SEED=", seed, ")"));
    std::mt19937_64 rng(seed * 6151 + 17);
    // Odd seeds: tables from id 30 on (dispatch chains NP-D0 and NP-D1).
    ir::CompiledPolicy current = WithPods(WithTablesFrom(RandomIr(seed + 1300), seed % 2 * 30));
    uint32_t generation = static_cast<uint32_t>(seed % 3);
    for (int step = 0; step < 10; ++step) {
      SCOPED_TRACE(absl::StrCat("step ", step));
      ir::CompiledPolicy next =
          rng() % 3 != 0 ? RandomRelabelStep(current, rng) : RandomChurnStep(current, rng);
      if (rng() % 2 == 0) next = testutil::StableEvent(next, kinds[rng() % 4], rng);
      ASSERT_TRUE(CheckIr(next).ok()) << CheckIr(next);
      std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(current, next);
      if (!delta.has_value()) continue;
      absl::StatusOr<DeltaRulesPlan> plan = PlanRulesUpdateDelta(current, *delta, generation);
      ASSERT_TRUE(plan.ok()) << plan.status();
      if (!plan->fallback.empty()) {
        ++fallbacks;
      } else if (!plan->whole) {
        ++ordered;
      } else {
        ++whole;
        EXPECT_TRUE(plan->pod);
        EXPECT_EQ(plan->members.ipset, "");
        EXPECT_EQ(plan->members.dispatch, "");
        appended += !delta->identities().empty();
        with_tables += !delta->tables().empty();
        moved += !delta->endpoints().empty();
        const RulesPlan want = MustPlanRules(current, next, generation);
        ASSERT_EQ(want.fallback, "");
        ExpectSamePlan(plan->rules, want);
        absl::StatusOr<Ruleset> old_rs = RenderRuleset(current, {generation});
        absl::StatusOr<Ruleset> new_rs = RenderRuleset(next, {generation + 1});
        ASSERT_TRUE(old_rs.ok() && new_rs.ok());
        const FlowCheck flows(current, next, rng);
        Parsed p = Parse(*old_rs);
        ReplayRules(
            plan->rules, p,
            [&] {
              ++states;
              std::string example;
              ASSERT_EQ(flows.Run(p, &example).first, 0)
                  << example << " mid-update\n" << plan->rules.switch_restore[0]
                  << plan->rules.switch_restore[1];
            },
            /*restore_early=*/false, nullptr, nullptr, nullptr,
            [&] { EXPECT_EQ(flows.Run(p).second, 0) << "the switch is not the new program"; });
        EXPECT_EQ(Canonical(p), Canonical(Parse(*new_rs)));
      }
      if (HasFailure()) return;
      current = std::move(next);
      ++generation;
    }
  }
  std::cout << whole << " pod deltas planned as one switch (" << appended
            << " appending identities, " << with_tables << " with tables, " << moved
            << " editing endpoints), " << states << " intermediate states checked; " << ordered
            << " ordered, " << fallbacks << " fell back\n";
  if (seeds > 1) {
    EXPECT_GT(whole, 20);
    EXPECT_GT(appended, 5);
    EXPECT_GT(with_tables, 5);
    EXPECT_GT(moved, 2);
  }
}

// Malformed deltas are refused (InvalidArgument) like ApplyDelta refuses them.
TEST(PlanUpdateDelta, MalformedDeltasAreInvalid) {
  ir::CompiledPolicy current = WithPods(RandomIr(1));
  ir::CompiledPolicy next = current;
  next.mutable_ipv4(0)->set_identity((current.ipv4(0).identity() + 1) %
                                     static_cast<uint32_t>(current.identities_size()));
  std::optional<ir::CompiledPolicyDelta> good = DiffPrograms(current, WithPods(next));
  ASSERT_TRUE(good.has_value() && good->ipv4_size() == 1);
  ASSERT_TRUE(PlanUpdateDelta(current, *good).ok());
  std::vector<std::pair<const char*, ir::CompiledPolicyDelta>> bad;
  ir::CompiledPolicyDelta d = *good;
  d.mutable_ipv4(0)->set_end(d.ipv4(0).begin());
  bad.emplace_back("empty slice", d);
  d = *good;
  d.mutable_ipv4(0)->set_end(static_cast<uint32_t>(current.ipv4_size()) + 1);
  bad.emplace_back("past the end", d);
  d = *good;
  d.mutable_ipv4(0)->mutable_ranges(0)->set_identity(9999);
  bad.emplace_back("no such identity", d);
  d = *good;
  d.mutable_ipv4(0)->mutable_ranges(0)->set_last(d.ipv4(0).ranges(0).first());
  if (d.ipv4(0).ranges(0).first() != good->ipv4(0).ranges(0).last()) {
    bad.emplace_back("a gap", d);
  }
  d = *good;
  d.add_identity_pods()->set_identity(2);
  d.add_identity_pods()->set_identity(1);
  bad.emplace_back("identity edits out of order", d);
  for (const auto& [what, delta] : bad) {
    absl::StatusOr<UpdatePlan> plan = PlanUpdateDelta(current, delta);
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << what;
    ir::CompiledPolicy copy = current;
    EXPECT_EQ(ApplyDelta(delta, &copy).code(), absl::StatusCode::kInvalidArgument) << what;
  }
}

// ---- CommentMatch --------------------------------------------------------------------

// One piece of a comment's text: its bytes and how the escaping must write them (util.h's
// EscapeText rules, written out by hand here so that the test does not ask util.cc).
struct CommentPiece {
  std::string raw;
  std::string escaped;
};

// Pieces chosen so that any concatenation decodes piece by piece (no lone UTF-8 lead byte,
// which would swallow the next piece's continuation bytes).
const std::vector<CommentPiece>& CommentAlphabet() {
  static const auto* alphabet = new std::vector<CommentPiece>{
      {"a", "a"}, {"Z", "Z"}, {"0", "0"}, {" ", " "}, {"/", "/"}, {"-", "-"}, {"[", "["},
      {"~", "~"}, {"'", "'"}, {"\"", "\\x22"}, {"\\", "\\\\"}, {"\n", "\\n"}, {"\t", "\\t"},
      {"\r", "\\r"}, {"\a", "\\a"}, {"\x01", "\\x01"}, {"\x1f", "\\x1f"}, {"\x7f", "\\x7f"},
      {"\xc3\xa9", "\xc3\xa9"},                   // é: visible, kept as its two bytes
      {"\xe2\x82\xac", "\xe2\x82\xac"},           // €
      {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},   // U+1F600: four bytes, kept
      {"\xe2\x80\xae", "\\u202e"},                // RIGHT-TO-LEFT OVERRIDE: invisible
      {"\xc2\xa0", "\\u00a0"},                    // NO-BREAK SPACE
      {"\xc2\x85", "\\u0085"},                    // a C1 control
      {"\xff", "\\xff"}, {"\x80", "\\x80"},       // not UTF-8: one escape per byte
  };
  return *alphabet;
}

// The old CommentMatch, from pieces: the whole text if its escaped form fits in 255 bytes,
// else the longest run of whole pieces that leaves room for "..."; backslashes then doubled.
std::string ExpectedCommentMatch(const std::vector<CommentPiece>& pieces) {
  std::string all;
  for (const CommentPiece& p : pieces) all += p.escaped;
  std::string text;
  if (all.size() <= 255) {
    text = all;
  } else {
    for (const CommentPiece& p : pieces) {
      if (text.size() + p.escaped.size() + 3 > 255) break;
      text += p.escaped;
    }
    text += "...";
  }
  std::string doubled;
  for (char c : text) doubled += c == '\\' ? std::string("\\\\") : std::string(1, c);
  return "-m comment --comment \"" + doubled + "\"";
}

std::string Raw(const std::vector<CommentPiece>& pieces) {
  std::string out;
  for (const CommentPiece& p : pieces) out += p.raw;
  return out;
}

TEST(CommentMatch, PlainTextAtAndAroundTheLimit) {
  EXPECT_EQ(CommentMatch("admin[0] ns/policy"), "-m comment --comment \"admin[0] ns/policy\"");
  EXPECT_EQ(CommentMatch(""), "-m comment --comment \"\"");
  const std::string at(255, 'x');
  EXPECT_EQ(CommentMatch(at), "-m comment --comment \"" + at + "\"");
  EXPECT_EQ(CommentMatch(at + "y"),
            "-m comment --comment \"" + std::string(252, 'x') + "...\"");
  EXPECT_EQ(CommentMatch(std::string(1000, 'x')),
            "-m comment --comment \"" + std::string(252, 'x') + "...\"");
  // A quote and a backslash: escaped, then the backslashes doubled.
  EXPECT_EQ(CommentMatch("a\"b\\c"), "-m comment --comment \"a\\\\x22b\\\\\\\\c\"");
  // Past the limit the tail does not matter, plain or not.
  EXPECT_EQ(CommentMatch(std::string(252, 'x') + "\"\\\xff\n" + std::string(10, 'y')),
            "-m comment --comment \"" + std::string(252, 'x') + "...\"");
  // The same text with the quote one byte earlier: cut before it.
  EXPECT_EQ(CommentMatch(std::string(251, 'x') + "\"\\\xff\n" + std::string(10, 'y')),
            "-m comment --comment \"" + std::string(251, 'x') + "...\"");
  // An escape is never split by the cut: 251 plain bytes then a quote (4 bytes escaped).
  EXPECT_EQ(CommentMatch(std::string(251, 'x') + "\"" + "yyyy"),
            "-m comment --comment \"" + std::string(251, 'x') + "...\"");
}

// Random texts from CommentAlphabet (mostly plain, some adversarial, lengths on both sides
// of the limit) against ExpectedCommentMatch. Replay with NP_COMMENT_SEED=<seed>.
TEST(CommentMatch, RandomTextsEqualTheSpecification) {
  const char* env = std::getenv("NP_COMMENT_SEED");
  const uint64_t seed = env != nullptr ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  SCOPED_TRACE(absl::StrCat("NP_COMMENT_SEED=", seed));
  std::mt19937_64 rng(seed);
  const std::vector<CommentPiece>& alphabet = CommentAlphabet();
  const size_t plain = 9;  // alphabet[0..8]: printable ASCII written as itself
  for (int round = 0; round < 20000; ++round) {
    const int length_class = static_cast<int>(rng() % 4);
    const size_t n = length_class == 0   ? rng() % 20
                     : length_class == 1 ? 240 + rng() % 30  // around 255 plain bytes
                     : length_class == 2 ? 60 + rng() % 80   // around the limit when escaped
                                         : rng() % 400;
    // Per text: how often a piece is adversarial (0 in a third of them: plain texts).
    const uint64_t odd_in_64 = rng() % 3 == 0 ? 0 : rng() % 64;
    std::vector<CommentPiece> pieces;
    for (size_t i = 0; i < n; ++i) {
      const bool odd = rng() % 64 < odd_in_64;
      pieces.push_back(odd ? alphabet[plain + rng() % (alphabet.size() - plain)]
                           : alphabet[rng() % plain]);
    }
    const std::string raw = Raw(pieces);
    ASSERT_EQ(CommentMatch(raw), ExpectedCommentMatch(pieces))
        << "round " << round << ", text " << absl::CEscape(raw);
  }
}

}  // namespace
}  // namespace np::backends::iptables
