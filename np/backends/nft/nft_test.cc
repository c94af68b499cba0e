// The nft backend's program, checked without golden files: its structure on hand-made IRs
// (element and rule counts grow with identities and rules, not with address pairs), Explain
// against a literal reading of the IR on random IRs, and — as root, in a network namespace
// of the test's own — that `nft -c -f` accepts the text, that Apply replaces and Remove
// removes. Real packets: np/probe (netpol probe --backend nft) on the upstream scenarios.
#include "np/backends/nft/nft.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "np/backends/iptables/test_util.h"
#include "np/backends/util.h"

namespace np::backends::nft {
namespace {

// A randomized test's seed: the environment's `variable` when set (to replay a failure it
// printed), else `fallback`.
uint64_t SeedFromEnv(const char* variable, uint64_t fallback) {
  const char* text = getenv(variable);
  return text != nullptr ? std::strtoull(text, nullptr, 10) : fallback;
}

std::string V4(uint32_t a) {
  std::string b(4, '\0');
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((a >> (24 - 8 * i)) & 0xff);
  return b;
}

std::string V6(uint64_t hi, uint64_t lo) {
  std::string b(16, '\0');
  for (int i = 0; i < 8; ++i) {
    b[i] = static_cast<char>((hi >> (56 - 8 * i)) & 0xff);
    b[8 + i] = static_cast<char>((lo >> (56 - 8 * i)) & 0xff);
  }
  return b;
}

// An IR whose IPv4 pods are 10.0.0.1..n (identity of pod i given), IPv6 pods fd00::1..n,
// everything else identity 0 (external).
struct Pod {
  std::string name;
  uint32_t identity;
};
ir::CompiledPolicy PodsIr(const std::vector<Pod>& pods, uint32_t identities) {
  ir::CompiledPolicy ir;
  for (uint32_t i = 0; i < identities; ++i) {
    ir::Identity* id = ir.add_identities();
    id->set_id(i);
    if (i == 0) id->set_external(true);
  }
  for (const Pod& p : pods) ir.mutable_identities(p.identity)->add_pods(p.name);
  for (int f = 0; f < 2; ++f) {
    auto addr = [&](uint64_t k) { return f == 0 ? V4(0x0a000000u + k) : V6(0xfd00ull << 48, k); };
    auto* ranges = f == 0 ? ir.mutable_ipv4() : ir.mutable_ipv6();
    std::string zero(f == 0 ? 4 : 16, '\0'), ones(f == 0 ? 4 : 16, '\xff');
    auto add = [&](const std::string& first, const std::string& last, uint32_t id,
                   const std::string& pod) {
      ir::AddressRange* r = ranges->Add();
      r->set_first(first);
      r->set_last(last);
      r->set_identity(id);
      r->set_pod(pod);
      r->add_cidrs("unused");
    };
    add(zero, addr(0), 0, "");
    for (size_t i = 0; i < pods.size(); ++i) add(addr(i + 1), addr(i + 1), pods[i].identity, pods[i].name);
    add(addr(pods.size() + 1), ones, 0, "");
  }
  for (size_t i = 0; i < pods.size(); ++i) {
    ir::Endpoint* e = ir.add_endpoints();
    std::vector<std::string> parts = absl::StrSplit(pods[i].name, '/');
    e->set_namespace_(parts[0]);
    e->set_name(parts[1]);
    e->add_ips(AddressText(V4(0x0a000000u + i + 1)));
    e->add_ips(AddressText(V6(0xfd00ull << 48, i + 1)));
  }
  return ir;
}

ir::PeerSet* AddPeerSet(ir::CompiledPolicy& ir, std::vector<uint32_t> ids, bool all = false) {
  ir::PeerSet* s = ir.add_peer_sets();
  s->set_id(ir.peer_sets_size() - 1);
  s->set_all(all);
  std::sort(ids.begin(), ids.end());
  for (uint32_t id : ids) s->add_identities(id);
  return s;
}

ir::PortRule* AddRule(ir::DirectionPolicy* d, ir::Protocol p, uint32_t first, uint32_t last,
                      uint32_t peer_set) {
  d->set_isolated(true);
  return AddPortRule(d, p, first, last, peer_set);
}

const Set* FindSet(const Program& p, const std::string& name) {
  for (const Set& s : p.sets) {
    if (s.name == name) return &s;
  }
  return nullptr;
}
const Chain* FindChain(const Program& p, const std::string& name) {
  for (const Chain& c : p.chains) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

// 100 pods in 4 identities; one table isolating every pod for ingress with one rule from
// identities 1 and 2 on TCP 80-81.
ir::CompiledPolicy HundredPods() {
  std::vector<Pod> pods;
  for (int i = 0; i < 100; ++i) pods.push_back({absl::StrCat("ns/p", i), 1u + (i % 4 == 3 ? 2u : i % 3)});
  ir::CompiledPolicy ir = PodsIr(pods, 5);
  AddPeerSet(ir, {1, 2});
  ir::Table* t = ir.add_tables();
  t->add_policies("ns/allow-web");
  AddRule(t->mutable_ingress(), ir::TCP, 80, 81, 0);
  for (ir::Endpoint& e : *ir.mutable_endpoints()) {
    e.set_selected(true);
    e.set_table(0);
  }
  return ir;
}

TEST(NftBuild, SizesGrowWithIdentitiesAndRulesNotPairs) {
  ir::CompiledPolicy ir = HundredPods();
  absl::StatusOr<Program> p = Build(ir);
  ASSERT_TRUE(p.ok()) << p.status();
  // Each isolated endpoint address once in the dispatch maps.
  EXPECT_EQ(FindSet(*p, "ingress4")->elements.size(), 100u);
  EXPECT_EQ(FindSet(*p, "ingress6")->elements.size(), 100u);
  EXPECT_TRUE(FindSet(*p, "egress4")->elements.empty());
  // One peer set, identities 1 and 2 as one merged mark interval: written into the rule,
  // no named set.
  EXPECT_EQ(FindSet(*p, "peers_0"), nullptr);
  // Identity chains only for the identities rules name, plus id_other.
  EXPECT_NE(FindChain(*p, "id_1"), nullptr);
  EXPECT_NE(FindChain(*p, "id_2"), nullptr);
  EXPECT_EQ(FindChain(*p, "id_3"), nullptr);
  EXPECT_NE(FindChain(*p, "id_other"), nullptr);
  // The table chain: 1 rule, drop (the forward chain looked the peer up).
  const Chain* t = FindChain(*p, "t0_ingress");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->rules, (std::vector<std::string>{"meta l4proto tcp th dport 80-81 meta mark "
                                                "0x00010000-0x0002ffff return",
                                                "drop"}));
  EXPECT_EQ(FindChain(*p, "t0_egress"), nullptr);
  // The forward chain: identity reset to "miss" (fail closed) and 2 lookups per side,
  // around the dispatch.
  const Chain* forward = FindChain(*p, "forward");
  ASSERT_NE(forward, nullptr);
  EXPECT_EQ(forward->rules,
            (std::vector<std::string>{
                "ct state established,related accept",
                "meta mark set meta mark and 0x0000ffff or 0xffff0000",
                "ip daddr vmap @identity4", "ip6 daddr vmap @identity6",
                "ip saddr vmap @egress4", "ip6 saddr vmap @egress6",
                "meta mark set meta mark and 0x0000ffff or 0xffff0000",
                "ip saddr vmap @identity4", "ip6 saddr vmap @identity6",
                "ip daddr vmap @ingress4", "ip6 daddr vmap @ingress6"}));
  // Total rules: forward 11 + id_other + id_1 + id_2 + table 2. No pod-pair term.
  EXPECT_EQ(p->rule_count(), 11u + 3u + 2u);
  // Identity maps: adjacent addresses of one target merge; at most one element per pod and
  // one per gap.
  EXPECT_LE(FindSet(*p, "identity4")->elements.size(), 2u * 100 + 1);

  // Doubling the pods adds elements (addresses), never rules.
  std::vector<Pod> more;
  for (int i = 0; i < 200; ++i) more.push_back({absl::StrCat("ns/p", i), 1u + (i % 4 == 3 ? 2u : i % 3)});
  ir::CompiledPolicy ir2 = PodsIr(more, 5);
  *ir2.mutable_peer_sets() = ir.peer_sets();
  *ir2.mutable_tables() = ir.tables();
  for (ir::Endpoint& e : *ir2.mutable_endpoints()) {
    e.set_selected(true);
    e.set_table(0);
  }
  absl::StatusOr<Program> p2 = Build(ir2);
  ASSERT_TRUE(p2.ok());
  EXPECT_EQ(p2->rule_count(), p->rule_count());
  EXPECT_EQ(FindSet(*p2, "ingress4")->elements.size(), 200u);
}

TEST(NftBuild, RuleForms) {
  ir::CompiledPolicy ir = PodsIr({{"x/a", 1}, {"x/b", 2}}, 3);
  AddPeerSet(ir, {}, /*all=*/true);   // 0: everything
  AddPeerSet(ir, {2});                // 1
  AddPeerSet(ir, {});                 // 2: nothing
  ir::Table* t = ir.add_tables();
  AddRule(t->mutable_egress(), ir::TCP, 0, 65535, 0);
  AddRule(t->mutable_egress(), ir::UDP, 53, 53, 1);
  AddRule(t->mutable_egress(), ir::SCTP, 100, 200, 2);
  t->mutable_ingress()->set_isolated(true);  // deny all
  ir.mutable_endpoints(0)->set_selected(true);
  ir.mutable_endpoints(0)->set_table(0);
  absl::StatusOr<Program> p = Build(ir);
  ASSERT_TRUE(p.ok()) << p.status();
  const Chain* eg = FindChain(*p, "t0_egress");
  ASSERT_NE(eg, nullptr);
  EXPECT_EQ(eg->rules, (std::vector<std::string>{
                           "meta l4proto tcp return",
                           "meta l4proto udp th dport 53 meta mark 0x00020000-0x0002ffff return",
                           "drop"}));
  // Deny-all ingress: no lookup needed.
  EXPECT_EQ(FindChain(*p, "t0_ingress")->rules, std::vector<std::string>{"drop"});
  EXPECT_EQ(FindSet(*p, "peers_2"), nullptr);
  EXPECT_EQ(FindSet(*p, "peers_0"), nullptr);
  // x/b is not selected: in no dispatch map.
  EXPECT_EQ(FindSet(*p, "egress4")->elements, std::vector<std::string>{"10.0.0.1 : jump t0_egress"});
  EXPECT_EQ(FindSet(*p, "ingress6")->elements, std::vector<std::string>{"fd00::1 : jump t0_ingress"});
  // Identity map: x/b's address is its own element; the rest (identities nobody names)
  // merges into id_other runs.
  EXPECT_EQ(FindSet(*p, "identity4")->elements,
            (std::vector<std::string>{"0.0.0.0-10.0.0.1 : jump id_other", "10.0.0.2 : jump id_2",
                                      "10.0.0.3-255.255.255.255 : jump id_other"}));
  std::string text = Text(*p);
  EXPECT_TRUE(absl::StartsWith(text, "# NetworkPolicy"));
  EXPECT_NE(text.find("table inet np {}\ndelete table inet np\ntable inet np {\n"),
            std::string::npos);
}

// Peer sets of up to kMaxInlineMarkRuns mark intervals are rules; more are a named set (the
// kernel looks sets up by name in a linear walk: many sets load in quadratic time).
TEST(NftBuild, FewMarkIntervalsInlineManyInANamedSet) {
  std::vector<Pod> pods;
  for (uint32_t i = 1; i <= 10; ++i) pods.push_back({absl::StrCat("ns/p", i), i});
  ir::CompiledPolicy ir = PodsIr(pods, 11);
  AddPeerSet(ir, {1, 3, 5, 7});     // 0: four intervals
  AddPeerSet(ir, {1, 3, 5, 7, 9});  // 1: five
  ir::Table* t = ir.add_tables();
  AddRule(t->mutable_ingress(), ir::TCP, 80, 80, 0);
  AddRule(t->mutable_ingress(), ir::TCP, 81, 81, 1);
  ir.mutable_endpoints(0)->set_selected(true);
  absl::StatusOr<Program> p = Build(ir);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(FindSet(*p, "peers_0"), nullptr);
  ASSERT_NE(FindSet(*p, "peers_1"), nullptr);
  EXPECT_EQ(FindSet(*p, "peers_1")->elements,
            (std::vector<std::string>{"0x00010000-0x0001ffff", "0x00030000-0x0003ffff",
                                      "0x00050000-0x0005ffff", "0x00070000-0x0007ffff",
                                      "0x00090000-0x0009ffff"}));
  const Chain* c = FindChain(*p, "t0_ingress");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->rules,
            (std::vector<std::string>{
                "meta l4proto tcp th dport 80 meta mark 0x00010000-0x0001ffff return",
                "meta l4proto tcp th dport 80 meta mark 0x00030000-0x0003ffff return",
                "meta l4proto tcp th dport 80 meta mark 0x00050000-0x0005ffff return",
                "meta l4proto tcp th dport 80 meta mark 0x00070000-0x0007ffff return",
                "meta l4proto tcp th dport 81 meta mark @peers_1 return", "drop"}));
  // Explain names the rule of the interval that matches, and the set element.
  std::unique_ptr<Backend> nft = MakeNftBackend();
  absl::StatusOr<std::string> why = nft->Explain(ir, {"10.0.0.5", "10.0.0.1", 6, 80});
  ASSERT_TRUE(why.ok()) << why.status();
  EXPECT_TRUE(absl::StrContains(*why, "chain t0_ingress rule 3 \"meta l4proto tcp th dport 80 "
                                      "meta mark 0x00050000-0x0005ffff return\""))
      << *why;
  why = nft->Explain(ir, {"10.0.0.9", "10.0.0.1", 6, 81});
  ASSERT_TRUE(why.ok()) << why.status();
  EXPECT_TRUE(absl::StrContains(*why, "chain t0_ingress rule 5 \"meta l4proto tcp th dport 81 "
                                      "meta mark @peers_1 return\" with @peers_1 element "
                                      "\"0x00090000-0x0009ffff\""))
      << *why;
  why = nft->Explain(ir, {"10.0.0.9", "10.0.0.1", 6, 80});
  ASSERT_TRUE(why.ok()) << why.status();
  EXPECT_TRUE(absl::StrContains(*why, "verdict: DROP (ingress)")) << *why;
}

TEST(NftBuild, PrefixesWhereRangesArePrefixes) {
  ir::CompiledPolicy ir;
  for (int i = 0; i < 2; ++i) ir.add_identities()->set_id(i);
  auto add = [](auto* ranges, std::string first, std::string last, uint32_t id) {
    ir::AddressRange* r = ranges->Add();
    r->set_first(first);
    r->set_last(last);
    r->set_identity(id);
  };
  add(ir.mutable_ipv4(), V4(0), V4(0x09ffffff), 0);
  add(ir.mutable_ipv4(), V4(0x0a000000), V4(0x0affffff), 1);
  add(ir.mutable_ipv4(), V4(0x0b000000), V4(0xffffffff), 0);
  add(ir.mutable_ipv6(), V6(0, 0), V6(~0ull, ~0ull), 0);
  AddPeerSet(ir, {1});
  ir::Table* t = ir.add_tables();
  AddRule(t->mutable_ingress(), ir::TCP, 80, 80, 0);
  ir::Endpoint* e = ir.add_endpoints();
  e->set_namespace_("x");
  e->set_name("a");
  e->add_ips("10.0.0.1");
  e->set_selected(true);
  absl::StatusOr<Program> p = Build(ir);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(FindSet(*p, "identity4")->elements,
            (std::vector<std::string>{"0.0.0.0-9.255.255.255 : jump id_other",
                                      "10.0.0.0/8 : jump id_1",
                                      "11.0.0.0-255.255.255.255 : jump id_other"}));
  EXPECT_EQ(FindSet(*p, "identity6")->elements,
            std::vector<std::string>{"::/0 : jump id_other"});
}

TEST(NftBuild, RejectsMalformedIr) {
  ir::CompiledPolicy ir = PodsIr({{"x/a", 1}}, 2);
  ir.mutable_ipv4()->RemoveLast();  // a gap at the end
  EXPECT_FALSE(Build(ir).ok());
  ir = PodsIr({{"x/a", 1}}, 2);
  ir.mutable_endpoints(0)->set_selected(true);
  ir.mutable_endpoints(0)->set_table(7);
  EXPECT_FALSE(Build(ir).ok());
  ir = PodsIr({{"x/a", 1}}, 2);
  ir.add_tables();
  AddRule(ir.mutable_tables(0)->mutable_ingress(), ir::TCP, 80, 80, 3);  // no peer set 3
  ir.mutable_endpoints(0)->set_selected(true);
  EXPECT_FALSE(Build(ir).ok());
  ir = PodsIr({{"x/a", 1}}, 2);
  ir.mutable_ipv6(1)->set_identity(99);
  EXPECT_FALSE(Build(ir).ok());
  // Issue 8 item 3: two isolated endpoints with one address made a duplicate element in
  // the dispatch map, which `nft -f` refuses ("File exists") after `compile` exited 0.
  ir = PodsIr({{"x/a", 1}, {"x/b", 1}}, 2);
  ir.add_tables()->mutable_ingress()->set_isolated(true);
  for (ir::Endpoint& e : *ir.mutable_endpoints()) e.set_selected(true);
  ir.mutable_endpoints(1)->set_ips(0, ir.endpoints(0).ips(0));
  absl::StatusOr<Program> shared = Build(ir);
  ASSERT_FALSE(shared.ok());
  EXPECT_TRUE(absl::StrContains(shared.status().message(),
                                "endpoints[1] (x/b): address 10.0.0.1 is also endpoints[0] (x/a)'s"))
      << shared.status();
}

// Object names reach comments escaped and cut to nft's 128 bytes on a character boundary.
ir::CompiledPolicy HostileNames() {
  ir::CompiledPolicy ir = PodsIr({{"x/a\r\nforged", 1}, {"y/\x1b[2J\"q\"\\", 1}}, 2);
  std::string long_name = "z/";
  for (int i = 0; i < 100; ++i) long_name += "é";
  ir.mutable_identities(1)->add_pods(long_name);
  AddPeerSet(ir, {1});
  ir::Table* t = ir.add_tables();
  t->add_policies(std::string("x/p\0nul\n}\n", 10));
  t->add_policies("x/\xff\xfe\xe2\x80\xae-rtl");
  t->add_policies(long_name);
  AddRule(t->mutable_ingress(), ir::TCP, 80, 80, 0);
  ir.mutable_endpoints(0)->set_selected(true);
  ir.set_node("node\n\"1");
  return ir;
}

TEST(NftBuild, HostileNamesInCommentsAreEscapedAndCut) {
  absl::StatusOr<Program> p = Build(HostileNames());
  ASSERT_TRUE(p.ok()) << p.status();
  std::string text = Text(*p);
  int comments = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    // Every line is one of ours: a name cannot start a line of its own.
    EXPECT_TRUE(line.empty() || line[0] == ' ' || line[0] == '#' || absl::StartsWith(line, "table") ||
                absl::StartsWith(line, "delete") || line == "}")
        << line;
    absl::string_view rest = absl::StripLeadingAsciiWhitespace(line);
    if (!absl::ConsumePrefix(&rest, "comment \"")) continue;
    ++comments;
    ASSERT_TRUE(absl::ConsumeSuffix(&rest, "\"")) << line;
    EXPECT_LE(rest.size(), 128u) << line;
    for (size_t i = 0; i < rest.size(); ++i) {
      const uint8_t c = static_cast<uint8_t>(rest[i]);
      EXPECT_TRUE(c >= 0x20 && c != 0x7f && c != '"') << line;
    }
  }
  EXPECT_GE(comments, 3);
  EXPECT_TRUE(absl::StrContains(text, "comment \"policies: x/p\\x00nul\\n}\\n,x/\\xff\\xfe\\u202e-rtl,z/"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "comment \"NetworkPolicy, node node\\n\\x221\""));
  // The long name is cut after a whole "é".
  EXPECT_TRUE(absl::StrContains(text, "é...\"")) << text;
}

ir::CompiledPolicy RandomIr(std::mt19937& rng) {
  const int identities = 2 + rng() % 5;
  const int pods = 1 + rng() % 6;
  std::vector<Pod> spec;
  for (int i = 0; i < pods; ++i) spec.push_back({absl::StrCat("ns/p", i), static_cast<uint32_t>(1 + rng() % (identities - 1))});
  ir::CompiledPolicy ir = PodsIr(spec, identities);
  // Split the external IPv4 range above the pods into a few more identities.
  const int peer_sets = 1 + rng() % 4;
  for (int s = 0; s < peer_sets; ++s) {
    std::vector<uint32_t> ids;
    for (int i = 0; i < identities; ++i) {
      if (rng() % 2) ids.push_back(i);
    }
    AddPeerSet(ir, ids, rng() % 6 == 0);
  }
  const int tables = 1 + rng() % 3;
  for (int t = 0; t < tables; ++t) {
    ir::Table* table = ir.add_tables();
    table->set_id(t);
    for (ir::DirectionPolicy* d : {table->mutable_ingress(), table->mutable_egress()}) {
      if (rng() % 3 == 0) continue;
      d->set_isolated(true);
      uint32_t port = 0;
      for (ir::Protocol p : {ir::TCP, ir::UDP, ir::SCTP}) {
        port = rng() % 50;
        const int rules = rng() % 3;
        for (int r = 0; r < rules && port < 65535; ++r) {
          uint32_t first = port + rng() % 40;
          uint32_t last = rng() % 5 == 0 ? 65535 : std::min<uint32_t>(65535, first + rng() % 3);
          if (first > 65535) break;
          AddRule(d, p, first, last, rng() % peer_sets);
          port = last + 1;
        }
      }
    }
    for (ir::DirectionPolicy* d : {table->mutable_ingress(), table->mutable_egress()}) {
      std::mt19937_64 tier_rng(rng());
      iptables::testutil::AddRandomTierRules(tier_rng, peer_sets, d);
    }
  }
  for (ir::Endpoint& e : *ir.mutable_endpoints()) {
    e.set_selected(rng() % 4 != 0);
    e.set_table(rng() % tables);
  }
  return ir;
}

TEST(NftExplain, VerdictEqualsTheIrOnRandomIrs) {
  std::unique_ptr<Backend> nft = MakeNftBackend();
  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    ir::CompiledPolicy ir = RandomIr(rng);
    ASSERT_TRUE(Build(ir).ok()) << Build(ir).status() << ir.DebugString();
    int pods = ir.endpoints_size();
    std::vector<std::string> addresses;
    for (int i = 0; i <= pods + 1; ++i) addresses.push_back(AddressText(V4(0x0a000000u + i)));
    addresses.push_back("192.168.0.1");
    for (const std::string& s : addresses) {
      for (const std::string& d : addresses) {
        if (s == d) continue;
        for (int protocol : {6, 17, 132, 1}) {
          for (uint16_t port : {0, 1, 20, 41, 79, 80, 81, 82, 65535}) {
            FlowQuery q{s, d, static_cast<uint8_t>(protocol), port};
            absl::StatusOr<std::string> why = nft->Explain(ir, q);
            ASSERT_TRUE(why.ok()) << why.status();
            bool accept = absl::StrContains(*why, "verdict: ACCEPT");
            ASSERT_EQ(accept, IrAllows(ir, *AddressBytes(s), *AddressBytes(d), protocol, port))
                << s << " -> " << d << " " << protocol << "/" << port << "\n"
                << *why << "\n" << ir.DebugString();
          }
        }
      }
    }
  }
}

TEST(NftExplain, NamesRuleAndElements) {
  ir::CompiledPolicy ir = HundredPods();
  std::unique_ptr<Backend> nft = MakeNftBackend();
  // p1 (identity 2) -> p0 (identity 1) on TCP 80: allowed by peers_0.
  absl::StatusOr<std::string> why = nft->Explain(ir, {"10.0.0.2", "10.0.0.1", 6, 80});
  ASSERT_TRUE(why.ok());
  EXPECT_TRUE(absl::StrContains(*why, "@ingress4 element \"10.0.0.1 : jump t0_ingress\"")) << *why;
  EXPECT_TRUE(absl::StrContains(*why, "\"10.0.0.2 : jump id_2\"")) << *why;
  EXPECT_TRUE(absl::StrContains(*why, "chain t0_ingress rule 1 \"meta l4proto tcp th dport 80-81 "
                                      "meta mark 0x00010000-0x0002ffff return\" (peer set 0)"))
      << *why;
  EXPECT_TRUE(absl::StrContains(*why, "verdict: ACCEPT")) << *why;
  // On UDP: dropped at ingress.
  why = nft->Explain(ir, {"10.0.0.2", "10.0.0.1", 17, 80});
  ASSERT_TRUE(why.ok());
  EXPECT_TRUE(absl::StrContains(*why, "verdict: DROP (ingress)")) << *why;
  EXPECT_FALSE(nft->Explain(ir, {"10.0.0.2", "fd00::1", 6, 80}).ok());
  EXPECT_FALSE(nft->Explain(ir, {"nonsense", "10.0.0.1", 6, 80}).ok());
}

// The tier scenario (np/backends/iptables/test_util.h): the chains' order, and Explain's
// verdicts against the hand-written ones.
TEST(NftBuild, TierChainsInTheSpecsOrder) {
  absl::StatusOr<Program> p = Build(iptables::testutil::TierScenarioIr());
  ASSERT_TRUE(p.ok()) << p.status();
  const Chain* a_in = FindChain(*p, "t0_ingress");
  ASSERT_NE(a_in, nullptr);
  EXPECT_EQ(a_in->rules,
            (std::vector<std::string>{
                // A miss is dropped before any tier rule can be skipped.
                "meta mark 0xffff0000-0xffffffff drop",
                "meta l4proto tcp th dport 80 meta mark 0x00020000-0x0002ffff drop comment "
                "\"admin[0] ANP deny-b priority 1\"",
                "meta l4proto tcp th dport 81 meta mark 0x00020000-0x0003ffff goto t0_ingress_np "
                "comment \"admin[1] ANP pass-81 priority 2\"",
                "meta l4proto udp th dport 80-81 meta mark 0x00030000-0x0003ffff return comment "
                "\"admin[2] ANP allow-c-udp priority 3\"",
                "goto t0_ingress_np"}));
  const Chain* a_np = FindChain(*p, "t0_ingress_np");
  ASSERT_NE(a_np, nullptr);
  EXPECT_EQ(a_np->rules,
            (std::vector<std::string>{
                "meta l4proto tcp th dport 80 meta mark 0x00020000-0x0003ffff return",
                "meta l4proto tcp th dport 81 meta mark 0x00030000-0x0003ffff return",
                "meta l4proto udp th dport 80 meta mark 0x00020000-0x0002ffff return", "drop"}));
  // Not isolated: the baseline rules, then the chain's end (allowed).
  const Chain* a_eg = FindChain(*p, "t0_egress");
  ASSERT_NE(a_eg, nullptr);
  EXPECT_EQ(a_eg->rules,
            (std::vector<std::string>{
                "meta mark 0xffff0000-0xffffffff drop",
                "meta l4proto tcp th dport 80 meta mark 0x00030000-0x0003ffff return comment "
                "\"baseline[0] BANP allow-c-80\"",
                "meta l4proto tcp meta mark 0x00020000-0x0003ffff drop comment \"baseline[1] "
                "BANP deny-tcp\""}));
  // Isolated with nothing allowed: its baseline is never reached and not rendered.
  EXPECT_EQ(FindChain(*p, "t1_ingress")->rules, std::vector<std::string>{"drop"});
  EXPECT_EQ(FindChain(*p, "t1_ingress_np"), nullptr);
  // Every protocol: no l4proto match.
  ASSERT_GE(FindChain(*p, "t2_ingress")->rules.size(), 2u);
  EXPECT_EQ(FindChain(*p, "t2_ingress")->rules[1],
            "meta mark 0x00010000-0x0001ffff goto t2_ingress_np comment \"admin[0] ANP pass-a "
            "priority 5\"");
  // Restricted directions only are dispatched: b and c have no egress chain.
  EXPECT_EQ(FindSet(*p, "egress4")->elements, std::vector<std::string>{"10.0.1.2 : jump t0_egress"});
  EXPECT_EQ(FindSet(*p, "ingress4")->elements.size(), 3u);
}

TEST(NftExplain, TierScenarioGetsTheSpecsVerdicts) {
  std::unique_ptr<Backend> nft = MakeNftBackend();
  const ir::CompiledPolicy ir = iptables::testutil::TierScenarioIr();
  for (bool v6 : {false, true}) {
    auto address = [&](int pod) {
      return v6 ? absl::StrCat("fd00:", pod + 1, "::2") : absl::StrCat("10.0.", pod + 1, ".2");
    };
    for (int from = 0; from < 3; ++from) {
      for (int to = 0; to < 3; ++to) {
        if (from == to) continue;
        for (int protocol : {6, 17}) {
          for (uint16_t port : {80, 81}) {
            absl::StatusOr<std::string> why =
                nft->Explain(ir, {address(from), address(to), static_cast<uint8_t>(protocol), port});
            ASSERT_TRUE(why.ok()) << why.status();
            EXPECT_EQ(absl::StrContains(*why, "verdict: ACCEPT"),
                      iptables::testutil::TierScenarioAllows(from, to, protocol, port))
                << *why;
          }
        }
      }
    }
  }
  // The deciding tier rule is named, with its origin.
  absl::StatusOr<std::string> why = nft->Explain(ir, {"10.0.2.2", "10.0.1.2", 6, 80});
  ASSERT_TRUE(why.ok());
  EXPECT_TRUE(absl::StrContains(*why, "chain t0_ingress rule 2 \"meta l4proto tcp th dport 80 "
                                      "meta mark 0x00020000-0x0002ffff drop comment"))
      << *why;
  EXPECT_TRUE(absl::StrContains(*why, "(admin[0] ANP deny-b priority 1; peer set 1) -> denied"))
      << *why;
  EXPECT_TRUE(absl::StrContains(*why, "verdict: DROP (ingress)")) << *why;
  why = nft->Explain(ir, {"10.0.2.2", "10.0.1.2", 6, 81});
  ASSERT_TRUE(why.ok());
  EXPECT_TRUE(absl::StrContains(*why, "-> pass: on to the NetworkPolicy stage")) << *why;
  EXPECT_TRUE(absl::StrContains(*why, "no rule of chain t0_ingress_np matches tcp port 81")) << *why;
  // ICMP: a -> c passes the admin Pass, no baseline rule names it: the default allows.
  why = nft->Explain(ir, {"10.0.1.2", "10.0.3.2", 1, 0});
  ASSERT_TRUE(why.ok());
  EXPECT_TRUE(absl::StrContains(*why, "no rule of chain t2_ingress_np decides this protocol"))
      << *why;
  EXPECT_TRUE(absl::StrContains(*why, "verdict: ACCEPT")) << *why;
  why = nft->Explain(ir, {"10.0.2.2", "10.0.3.2", 1, 0});
  ASSERT_TRUE(why.ok());
  EXPECT_TRUE(absl::StrContains(*why, "(baseline[1] BANP deny-b; peer set 1) -> denied")) << *why;
}

// Apply's generation switch, on text: every set and regular chain gets the suffix, and so does
// every reference to one; base chains and names that merely contain a set's name do not.
TEST(NftGeneration, RenamesObjectsAndEveryReference) {
  // HundredPods, and the tier scenario, whose admin Pass rules `goto` a stage chain.
  for (const ir::CompiledPolicy& ir : {HundredPods(), iptables::testutil::TierScenarioIr()}) {
  absl::StatusOr<Program> program = Build(ir);
  ASSERT_TRUE(program.ok());
  Program next = WithGeneration(*program, 7);
  ASSERT_EQ(next.sets.size(), program->sets.size());
  ASSERT_EQ(next.chains.size(), program->chains.size());
  std::set<std::string> names;
  for (const Set& s : next.sets) {
    EXPECT_TRUE(absl::EndsWith(s.name, "_g7")) << s.name;
    names.insert(s.name);
  }
  for (const Chain& c : next.chains) {
    if (c.hook.empty()) {
      EXPECT_TRUE(absl::EndsWith(c.name, "_g7")) << c.name;
      names.insert(c.name);
    } else {
      EXPECT_EQ(c.name, "forward");
    }
  }
  // Every reference in the renamed program names an object of the renamed program.
  auto check_references = [&](const std::string& text) {
    for (absl::string_view word : absl::StrSplit(text, absl::ByAnyChar(" ,{}"))) {
      if (absl::ConsumePrefix(&word, "@")) {
        EXPECT_TRUE(names.count(std::string(word)) > 0) << word << " in " << text;
      }
    }
    for (const char* marker : {"jump ", "goto "}) {
      size_t at = text.find(marker);
      if (at == std::string::npos) continue;
      std::string target = text.substr(at + 5);
      target = target.substr(0, target.find_first_of(" ,}"));
      EXPECT_TRUE(names.count(target) > 0) << target << " in " << text;
    }
  };
  int references = 0;
  for (const Set& s : next.sets) {
    for (const std::string& e : s.elements) check_references(e), references += absl::StrContains(e, "jump ");
  }
  for (const Chain& c : next.chains) {
    for (const std::string& r : c.rules) check_references(r), references += absl::StrContains(r, "@");
  }
  EXPECT_GT(references, 4);  // the dispatch maps and the forward chain's vmaps at least
  }
}

TEST(NftGeneration, ParsesATerseListing) {
  // The shape `nft -t list table inet np` prints (nftables 1.0.6).
  Installed installed = ParseInstalled(
      "table inet np {\n"
      "\tmap identity4_g3 {\n\t\ttype ipv4_addr : verdict\n\t\tflags interval\n\t}\n\n"
      "\tset peers_12_g3 {\n\t\ttype mark\n\t}\n\n"
      "\tchain id_other_g3 {\n\t\tmeta mark set meta mark & 0x0000ffff | 0xffff0000\n\t}\n\n"
      "\tchain forward {\n\t\tcomment \"NetworkPolicy\"\n"
      "\t\ttype filter hook forward priority filter; policy accept;\n"
      "\t\tct state established,related accept\n\t}\n"
      "\tchain t0_ingress_g12 {\n\t\tdrop\n\t}\n"
      "}\n");
  ASSERT_EQ(installed.objects.size(), 5u);
  EXPECT_EQ(installed.last_generation, 12u);
  EXPECT_EQ(installed.objects[0].kind, "map");
  EXPECT_EQ(installed.objects[0].name, "identity4_g3");
  EXPECT_EQ(installed.objects[1].kind, "set");
  EXPECT_EQ(installed.objects[3].name, "forward");
  EXPECT_EQ(installed.objects[3].hook, "type filter hook forward priority filter; policy accept;");
  EXPECT_EQ(installed.objects[2].hook, "");
  EXPECT_EQ(ParseInstalled("").objects.size(), 0u);
}

TEST(NftGeneration, SwitchesInPlaceOnlyOverTheSameHooks) {
  absl::StatusOr<Program> program = Build(HundredPods());
  ASSERT_TRUE(program.ok());
  Program next = WithGeneration(*program, 2);
  Installed same;
  same.objects = {{"chain", "forward", "type filter hook forward priority filter; policy accept;"}};
  EXPECT_TRUE(CanSwitch(same, next));
  EXPECT_TRUE(CanSwitch(Installed{}, next));
  Installed other_priority;
  other_priority.objects = {{"chain", "forward", "type filter hook forward priority 10; policy accept;"}};
  EXPECT_FALSE(CanSwitch(other_priority, next));
  Installed regular;
  regular.objects = {{"chain", "forward", ""}};
  EXPECT_FALSE(CanSwitch(regular, next));
  // The switch never deletes the table; it flushes and refills the base chain — in a commit
  // after the one that declares the sets and chains its rules reach (nft.h: a set declared
  // in the commit that makes its lookups live misses until that commit ends).
  const std::string objects = SwitchText(next, SwitchPart::kObjects);
  const std::string base = SwitchText(next, SwitchPart::kBaseChains);
  for (const std::string* text : {&objects, &base}) {
    EXPECT_FALSE(absl::StrContains(*text, "delete")) << *text;
  }
  EXPECT_TRUE(absl::StrContains(objects, "chain t0_ingress_g2 {")) << objects;
  EXPECT_TRUE(absl::StrContains(objects, "map ingress4_g2 {")) << objects;
  EXPECT_FALSE(absl::StrContains(objects, "hook forward")) << objects;
  EXPECT_FALSE(absl::StrContains(objects, "flush")) << objects;
  EXPECT_FALSE(absl::StrContains(base, "map ingress4_g2 {")) << base;
  EXPECT_FALSE(absl::StrContains(base, "t0_ingress_g2 {")) << base;
  EXPECT_LT(base.find("hook forward"), base.find("flush chain inet np forward"));
  EXPECT_LT(base.find("flush chain inet np forward"), base.find("ip daddr vmap @ingress4_g2"));
  // The netlink batches carry the same split.
  absl::StatusOr<WholeBatch> first = SwitchBatch(next, SwitchPart::kObjects);
  absl::StatusOr<WholeBatch> second = SwitchBatch(next, SwitchPart::kBaseChains);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_FALSE(first->sets.empty());
  EXPECT_TRUE(first->flush.empty());
  for (const WholeChain& c : first->chains) EXPECT_FALSE(c.forward_hook) << c.name;
  EXPECT_TRUE(second->sets.empty());
  ASSERT_EQ(second->chains.size(), 1u);
  EXPECT_TRUE(second->chains[0].forward_hook);
  EXPECT_EQ(second->flush, std::vector<std::string>{"forward"});
}

TEST(NftGeneration, RetiresWhatTheNextGenerationLacksChainsFlushedFirst) {
  absl::StatusOr<Program> program = Build(HundredPods());
  ASSERT_TRUE(program.ok());
  Program next = WithGeneration(*program, 2);
  Installed installed;
  installed.objects = {{"map", "ingress4_g1", ""},
                       {"chain", "t0_ingress_g1", ""},
                       {"chain", "forward", "type filter hook forward priority filter; policy accept;"},
                       {"set", "peers_0_g1", ""},
                       {"map", "ingress4_g2", ""}};
  std::string text = RetireText(installed, next);
  EXPECT_EQ(text,
            "flush chain inet np t0_ingress_g1\n"
            "delete map inet np ingress4_g1\n"
            "delete set inet np peers_0_g1\n"
            "delete chain inet np t0_ingress_g1\n");
  Installed current;
  for (const Set& s : next.sets) current.objects.push_back({s.map ? "map" : "set", s.name, ""});
  for (const Chain& c : next.chains) current.objects.push_back({"chain", c.name, c.hook});
  EXPECT_EQ(RetireText(current, next), "");
}

// As root: in a network namespace of the test's own, the kernel accepts the program, Apply
// replaces it, Remove removes it.
class NftKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    if (!RunCommand({"nft", "--version"}).ok()) GTEST_SKIP() << "no nft binary";
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET)";
  }
};

TEST_F(NftKernelTest, KernelAcceptsAndReplaces) {
  std::unique_ptr<Backend> nft = MakeNftBackend();
  std::mt19937 rng(11);
  std::vector<ir::CompiledPolicy> irs = {HundredPods(), HostileNames()};
  for (int i = 0; i < 20; ++i) irs.push_back(RandomIr(rng));
  for (const ir::CompiledPolicy& ir : irs) {
    absl::StatusOr<std::string> text = nft->Render(ir);
    ASSERT_TRUE(text.ok());
    absl::StatusOr<std::string> check = RunCommand({"nft", "-c", "-f", "-"}, *text);
    ASSERT_TRUE(check.ok()) << check.status() << "\n" << *text;
    ASSERT_TRUE(nft->Apply(ir, {}).ok());
  }
  // The last Apply replaced everything before it: one table, whose dispatch map has the
  // last IR's endpoints.
  absl::StatusOr<std::string> tables = RunCommand({"nft", "list", "tables"});
  ASSERT_TRUE(tables.ok());
  EXPECT_EQ(*tables, "table inet np\n");
  ASSERT_TRUE(nft->Remove({}).ok());
  tables = RunCommand({"nft", "list", "tables"});
  ASSERT_TRUE(tables.ok());
  EXPECT_EQ(*tables, "");
  // Remove with nothing installed is fine too.
  EXPECT_TRUE(nft->Remove({}).ok());
}

TEST_F(NftKernelTest, FailedApplyKeepsTheOldProgram) {
  std::unique_ptr<Backend> nft = MakeNftBackend();
  ASSERT_TRUE(nft->Apply(HundredPods(), {}).ok());
  // A syntax error in the second half of a file: nft commits nothing.
  absl::StatusOr<std::string> text = nft->Render(HundredPods());
  ASSERT_TRUE(text.ok());
  std::string broken = *text;
  broken.insert(broken.rfind("drop"), "this is not nft\n    ");
  broken.replace(broken.find("ns/allow-web"), 12, "ns/broken-web");
  EXPECT_FALSE(RunCommand({"nft", "-f", "-"}, broken).ok());
  absl::StatusOr<std::string> listing = RunCommand({"nft", "list", "chain", "inet", "np", "t0_ingress_g1"});
  ASSERT_TRUE(listing.ok());
  EXPECT_TRUE(absl::StrContains(*listing, "ns/allow-web")) << *listing;
  ASSERT_TRUE(nft->Remove({}).ok());
}

// Apply over Apply: the base chain stays (its handle does not change: the hook is never
// re-registered), each Apply leaves exactly one generation, and the dispatch follows the IR.
TEST_F(NftKernelTest, ApplySwitchesGenerationsUnderOneBaseChain) {
  std::unique_ptr<Backend> nft = MakeNftBackend();
  std::mt19937 rng(23);
  // The table's handle and the forward chain's: a whole replace would make a new table
  // (chain handles count from 1 again in it, so the table's is what tells).
  auto handle_of_forward = []() -> std::string {
    absl::StatusOr<std::string> table = RunCommand({"nft", "-a", "-t", "list", "table", "inet", "np"});
    absl::StatusOr<std::string> chain =
        RunCommand({"nft", "-a", "-t", "list", "chain", "inet", "np", "forward"});
    if (!table.ok() || !chain.ok()) return "none";
    std::vector<std::string> lines = absl::StrSplit(*table, '\n');
    size_t at = chain->find("chain forward { # handle ");
    return at == std::string::npos ? "none" : absl::StrCat(lines[0], " / ", chain->substr(at, chain->find('\n', at) - at));
  };
  std::string first_handle;
  for (int i = 1; i <= 6; ++i) {
    // Apply 3 brings tier chains (a stage chain reached by `goto`) into the switch.
    ir::CompiledPolicy ir = i % 2 == 0 ? HundredPods()
                            : i == 3   ? iptables::testutil::TierScenarioIr()
                                       : RandomIr(rng);
    ASSERT_TRUE(nft->Apply(ir, {}).ok()) << i;
    absl::StatusOr<std::string> listing = RunCommand({"nft", "-t", "list", "table", "inet", "np"});
    ASSERT_TRUE(listing.ok());
    Installed installed = ParseInstalled(*listing);
    EXPECT_EQ(installed.last_generation, static_cast<uint64_t>(i));
    for (const Installed::Object& o : installed.objects) {
      if (o.hook.empty()) {
        EXPECT_TRUE(absl::EndsWith(o.name, absl::StrCat("_g", i))) << o.name << " after Apply " << i;
      }
    }
    if (i == 1) first_handle = handle_of_forward();
    EXPECT_EQ(handle_of_forward(), first_handle) << "after Apply " << i;
  }
  absl::StatusOr<std::string> forward = RunCommand({"nft", "list", "chain", "inet", "np", "forward"});
  ASSERT_TRUE(forward.ok());
  EXPECT_TRUE(absl::StrContains(*forward, "@ingress4_g6")) << *forward;
  absl::StatusOr<std::string> map = RunCommand({"nft", "list", "map", "inet", "np", "ingress4_g6"});
  ASSERT_TRUE(map.ok());
  EXPECT_TRUE(absl::StrContains(*map, "10.0.0.1 : jump t0_ingress_g6")) << *map;
  ASSERT_TRUE(nft->Remove({}).ok());
}

// A table another program shape left (here: a forward chain at another priority) is replaced
// whole rather than left half-switched.
TEST_F(NftKernelTest, ApplyReplacesATableItCannotSwitch) {
  ASSERT_TRUE(RunCommand({"nft", "-f", "-"},
                         "table inet np {\n chain forward {\n type filter hook forward priority 10; "
                         "policy accept;\n drop\n }\n}\n")
                  .ok());
  std::unique_ptr<Backend> nft = MakeNftBackend();
  ASSERT_TRUE(nft->Apply(HundredPods(), {}).ok());
  absl::StatusOr<std::string> forward = RunCommand({"nft", "list", "chain", "inet", "np", "forward"});
  ASSERT_TRUE(forward.ok());
  EXPECT_TRUE(absl::StrContains(*forward, "priority filter")) << *forward;
  EXPECT_FALSE(absl::StrContains(*forward, "\t\tdrop")) << *forward;
  ASSERT_TRUE(nft->Remove({}).ok());
}

// ---- Incremental updates ----------------------------------------------------------------
// A node's pods for the churn tests: address index k (1..60) is 10.1.0.k and fd00:1::k; a
// local pod is an endpoint (selected with a table, or not selected). Identities 0..10 are
// fixed (0: external), so pods can come, go and move without renumbering; rule_port edits
// the rules (a policy event).
struct ChurnPod {
  std::string name;  // "ns/name"
  uint32_t identity;
  uint32_t address;
  bool local = false;
  bool selected = false;
  uint32_t table = 0;
};
constexpr uint32_t kChurnIdentities = 11;

std::string ChurnAddress(int f, uint64_t k) { return f == 0 ? V4(0x0a010000u + k) : V6(0xfd00000100000000ull, k); }

ir::CompiledPolicy ChurnIr(std::vector<ChurnPod> pods, uint32_t rule_port = 80) {
  std::sort(pods.begin(), pods.end(), [](const ChurnPod& a, const ChurnPod& b) { return a.name < b.name; });
  ir::CompiledPolicy ir;
  for (uint32_t i = 0; i < kChurnIdentities; ++i) {
    ir::Identity* id = ir.add_identities();
    id->set_id(i);
    id->set_external(i == 0);
  }
  for (const ChurnPod& p : pods) ir.mutable_identities(p.identity)->add_pods(p.name);
  std::vector<const ChurnPod*> by_address;
  for (const ChurnPod& p : pods) by_address.push_back(&p);
  std::sort(by_address.begin(), by_address.end(),
            [](const ChurnPod* a, const ChurnPod* b) { return a->address < b->address; });
  for (int f = 0; f < 2; ++f) {
    auto* ranges = f == 0 ? ir.mutable_ipv4() : ir.mutable_ipv6();
    auto add = [&](const std::string& first, const std::string& last, uint32_t id,
                   const std::string& pod) {
      ir::AddressRange* r = ranges->Add();
      r->set_first(first);
      r->set_last(last);
      r->set_identity(id);
      r->set_pod(pod);
    };
    std::string cursor(f == 0 ? 4 : 16, '\0');
    for (const ChurnPod* p : by_address) {
      const std::string a = ChurnAddress(f, p->address);
      if (cursor < a) add(cursor, ChurnAddress(f, p->address - 1), 0, "");
      add(a, a, p->identity, p->name);
      cursor = ChurnAddress(f, p->address + 1);
    }
    add(cursor, std::string(f == 0 ? 4 : 16, '\xff'), 0, "");
  }
  AddPeerSet(ir, {1, 2});               // inline mark runs
  AddPeerSet(ir, {1, 3, 5, 7, 9, 10});  // a named set (five runs)
  AddPeerSet(ir, {0, 4});
  for (uint32_t t = 0; t < 2; ++t) {
    ir::Table* table = ir.add_tables();
    table->set_id(t);
    table->add_policies(absl::StrCat("ns/policy-", t));
    AddRule(table->mutable_ingress(), ir::TCP, rule_port, rule_port, 0);
    AddRule(table->mutable_ingress(), ir::UDP, 53, 53, 1);
    if (t == 0) AddRule(table->mutable_egress(), ir::TCP, 443, 443, 2);
  }
  for (const ChurnPod& p : pods) {
    if (!p.local) continue;
    ir::Endpoint* e = ir.add_endpoints();
    std::vector<std::string> parts = absl::StrSplit(p.name, '/');
    e->set_namespace_(parts[0]);
    e->set_name(parts[1]);
    e->add_ips(AddressText(ChurnAddress(0, p.address)));
    e->add_ips(AddressText(ChurnAddress(1, p.address)));
    e->set_selected(p.selected);
    e->set_table(p.table);
  }
  return ir;
}

std::vector<ChurnPod> ChurnBase() {
  return {{"a/web-1", 1, 3, true, true, 0},  {"a/web-2", 1, 4, true, true, 0},
          {"a/db", 3, 5, true, true, 1},     {"b/api", 2, 6, false},
          {"b/api-2", 2, 7, false},          {"b/job", 5, 9, true, false},
          {"c/x", 7, 20, false},             {"c/y", 4, 21, false}};
}

Program Generation(const ir::CompiledPolicy& ir, uint64_t generation) {
  absl::StatusOr<Program> p = Build(ir);
  EXPECT_TRUE(p.ok()) << p.status();
  return WithGeneration(*p, generation);
}

// nft.h's rule for every commit: a set np declares is looked up only by rules of a later
// commit (a new interval set misses until the commit that declares it ends) — an in-place
// plan declares its new peer sets alone, ahead of its transaction, and edits a live set's
// elements rather than declaring it again.
void ExpectSetsAheadOfTheirLookups(const InPlacePlan& plan) {
  EXPECT_TRUE(plan.batch.sets.empty()) << "a set declared in the commit of its rules";
  EXPECT_TRUE(plan.sets_first.chains.empty() && plan.sets_first.flush.empty() &&
              plan.sets_first.last_element_adds.empty())
      << "the sets' own commit does more";
  for (const WholeSet& s : plan.sets_first.sets) {
    const auto& gone = plan.batch.first_delete_sets;
    EXPECT_EQ(std::find(gone.begin(), gone.end(), s.name), gone.end())
        << s.name << " declared again under its name";
  }
  EXPECT_EQ(plan.sets_first.sets.empty(), plan.sets_first_text.empty());
}

// `installed` after the plan's `add element` / `delete element` lines, read literally: what
// the kernel holds after the plan.
Program Edited(Program installed, const ElementPlan& plan) {
  for (const std::string& transaction : plan.transactions) {
    for (absl::string_view line : absl::StrSplit(transaction, '\n', absl::SkipEmpty())) {
      std::vector<std::string> words = absl::StrSplit(line, ' ');
      EXPECT_GE(words.size(), 6u) << line;
      if (words.size() < 6) continue;
      const std::string& set_name = words[4];
      const size_t open = line.find("{ "), close = line.rfind(" }");
      std::vector<std::string> items =
          absl::StrSplit(line.substr(open + 2, close - open - 2), ", ");
      Set* set = nullptr;
      for (Set& s : installed.sets) {
        if (s.name == set_name) set = &s;
      }
      EXPECT_NE(set, nullptr) << line;
      if (set == nullptr) continue;
      for (const std::string& item : items) {
        if (words[0] == "delete") {
          auto it = std::find_if(set->elements.begin(), set->elements.end(), [&](const std::string& e) {
            return e.substr(0, e.find(" : ")) == item;
          });
          EXPECT_NE(it, set->elements.end()) << "deleting an absent element: " << line;
          if (it != set->elements.end()) set->elements.erase(it);
        } else {
          EXPECT_EQ(words[0], "add") << line;
          set->elements.push_back(item);
        }
      }
    }
  }
  return installed;
}

std::multiset<std::string> ElementsOf(const Program& p, const std::string& set) {
  const Set* s = FindSet(p, set);
  if (s == nullptr) return {};
  return std::multiset<std::string>(s->elements.begin(), s->elements.end());
}

// The plan's edits turn the installed maps into the next program's, and touch only the maps
// the case says.
void ExpectPlanReaches(const Program& installed, const Program& next, const ElementPlan& plan) {
  Program edited = Edited(installed, plan);
  for (const Set& s : next.sets) {
    EXPECT_EQ(ElementsOf(edited, s.name), ElementsOf(next, s.name)) << s.name;
  }
}

TEST(NftUpdatePlan, NothingChangedNothingToDo) {
  Program a = Generation(ChurnIr(ChurnBase()), 3);
  ElementPlan plan = PlanElementUpdate(a, a);
  EXPECT_EQ(plan.fallback, "");
  EXPECT_TRUE(plan.transactions.empty());
}

TEST(NftUpdatePlan, RemotePodEventsEditTheIdentityMapsInOneTransaction) {
  const std::vector<ChurnPod> base = ChurnBase();
  std::vector<std::vector<ChurnPod>> afters;
  // Added next to a pod of its identity (its range merges), added alone, deleted from the
  // middle of a merged run, relabelled into another existing identity.
  afters.push_back(base);
  afters.back().push_back({"b/api-3", 2, 8, false});
  afters.push_back(base);
  afters.back().push_back({"c/z", 6, 40, false});
  afters.push_back(base);
  afters.back().erase(afters.back().begin() + 3);  // b/api
  afters.push_back(base);
  afters.back()[6].identity = 9;                    // c/x
  for (size_t i = 0; i < afters.size(); ++i) {
    Program installed = Generation(ChurnIr(base), 2);
    Program next = Generation(ChurnIr(afters[i]), 2);
    for (const ElementPlan& plan : {PlanElementUpdate(installed, next), PlanElementUpdate(next, installed)}) {
      EXPECT_EQ(plan.fallback, "") << i;
      ASSERT_EQ(plan.transactions.size(), 1u) << i;
      EXPECT_FALSE(plan.grace_period);
      EXPECT_FALSE(absl::StrContains(plan.transactions[0], "gress")) << plan.transactions[0];
      EXPECT_TRUE(absl::StrContains(plan.transactions[0], "identity4_g2 {")) << plan.transactions[0];
      EXPECT_TRUE(absl::StrContains(plan.transactions[0], "identity6_g2 {")) << plan.transactions[0];
    }
    ExpectPlanReaches(installed, next, PlanElementUpdate(installed, next));
    ExpectPlanReaches(next, installed, PlanElementUpdate(next, installed));
  }
  // The added pod's neighbour pieces are re-added with their own answer, in the same text.
  Program installed = Generation(ChurnIr(base), 2);
  Program next = Generation(ChurnIr(afters[1]), 2);
  ElementPlan plan = PlanElementUpdate(installed, next);
  EXPECT_TRUE(absl::StrContains(plan.transactions[0], "10.1.0.40 : jump id_other_g2"))
      << plan.transactions[0];  // identity 6: no peer set names it
}

TEST(NftUpdatePlan, LocalPodAddedDispatchFirstDeletedIdentityFirst) {
  std::vector<ChurnPod> base = ChurnBase();
  std::vector<ChurnPod> after = base;
  after.push_back({"a/web-3", 1, 30, true, true, 0});
  Program installed = Generation(ChurnIr(base), 1);
  Program next = Generation(ChurnIr(after), 1);
  ElementPlan added = PlanElementUpdate(installed, next);
  EXPECT_EQ(added.fallback, "");
  ASSERT_EQ(added.transactions.size(), 2u);
  EXPECT_TRUE(added.grace_period);
  EXPECT_EQ(added.transactions[0],
            "add element inet np egress4_g1 { 10.1.0.30 : jump t0_egress_g1 }\n"
            "add element inet np egress6_g1 { fd00:1::1e : jump t0_egress_g1 }\n"
            "add element inet np ingress4_g1 { 10.1.0.30 : jump t0_ingress_g1 }\n"
            "add element inet np ingress6_g1 { fd00:1::1e : jump t0_ingress_g1 }\n");
  EXPECT_TRUE(absl::StartsWith(added.transactions[1], "delete element inet np identity4_g1"))
      << added.transactions[1];
  ExpectPlanReaches(installed, next, added);
  ElementPlan deleted = PlanElementUpdate(next, installed);
  EXPECT_EQ(deleted.fallback, "");
  ASSERT_EQ(deleted.transactions.size(), 2u);
  EXPECT_TRUE(deleted.grace_period);
  EXPECT_TRUE(absl::StartsWith(deleted.transactions[0], "delete element inet np identity4_g1"));
  EXPECT_EQ(deleted.transactions[1],
            "delete element inet np egress4_g1 { 10.1.0.30 }\n"
            "delete element inet np egress6_g1 { fd00:1::1e }\n"
            "delete element inet np ingress4_g1 { 10.1.0.30 }\n"
            "delete element inet np ingress6_g1 { fd00:1::1e }\n");
  ExpectPlanReaches(next, installed, deleted);
  // A local pod that no policy selects: only its identity, one transaction.
  after = base;
  after.push_back({"a/idle", 1, 31, true, false, 0});
  ElementPlan idle = PlanElementUpdate(installed, Generation(ChurnIr(after), 1));
  EXPECT_EQ(idle.fallback, "");
  EXPECT_EQ(idle.transactions.size(), 1u);
  // A local pod moved to another table, its identity kept: only dispatch, one transaction.
  after = base;
  after[1].table = 1;  // a/web-2
  ElementPlan moved = PlanElementUpdate(installed, Generation(ChurnIr(after), 1));
  EXPECT_EQ(moved.fallback, "");
  ASSERT_EQ(moved.transactions.size(), 1u);
  EXPECT_FALSE(absl::StrContains(moved.transactions[0], "identity"));
}

TEST(NftUpdatePlan, FallsBackToTheSwitchWhenAnEditIsNotSafe) {
  const std::vector<ChurnPod> base = ChurnBase();
  Program installed = Generation(ChurnIr(base), 1);
  struct Case {
    const char* what;
    ir::CompiledPolicy next;
  };
  std::vector<Case> cases;
  cases.push_back({"a rule's port", ChurnIr(base, 8080)});
  {
    std::vector<ChurnPod> two = base;
    two.push_back({"c/z1", 2, 40, false});
    two.push_back({"c/z2", 2, 42, false});
    cases.push_back({"two pods", ChurnIr(two)});
  }
  {
    std::vector<ChurnPod> relabelled = base;
    relabelled[1].identity = 2;  // a/web-2, local: its identity and its table change
    relabelled[1].table = 1;
    cases.push_back({"a local pod relabelled into another table", ChurnIr(relabelled)});
  }
  {
    std::vector<ChurnPod> one = base;
    one.push_back({"c/z", 2, 40, false});
    ir::CompiledPolicy ir = ChurnIr(one);
    ir.mutable_peer_sets(1)->add_identities(6);  // peers_1 gains identity 6
    std::sort(ir.mutable_peer_sets(1)->mutable_identities()->begin(),
              ir.mutable_peer_sets(1)->mutable_identities()->end());
    cases.push_back({"a peer set's contents", ir});
  }
  {
    ir::CompiledPolicy ir = ChurnIr(base);
    ir.mutable_tables(1)->set_policies(0, "ns/renamed");
    cases.push_back({"a table's policies (its chain's comment)", ir});
  }
  {
    // The same pods, identities renumbered: 1 <-> 2.
    std::vector<ChurnPod> swapped = base;
    for (ChurnPod& p : swapped) {
      if (p.identity == 1 || p.identity == 2) p.identity = 3 - p.identity;
    }
    cases.push_back({"identities renumbered", ChurnIr(swapped)});
  }
  {
    // Local pod deleted while another is added: dispatch added and deleted with identities.
    std::vector<ChurnPod> both = base;
    both.erase(both.begin());  // a/web-1 at 3
    both.push_back({"a/web-9", 2, 3, true, true, 1});
    cases.push_back({"a local address reused by a pod of another table", ChurnIr(both)});
  }
  for (const Case& c : cases) {
    Program next = Generation(c.next, 1);
    ElementPlan plan = PlanElementUpdate(installed, next);
    EXPECT_NE(plan.fallback, "") << c.what;
    EXPECT_TRUE(plan.transactions.empty()) << c.what;
  }
}

// One random churn event on `pods` (seeded by the caller's rng): a pod added (local or
// not), deleted, relabelled (remote), its address reused by a new pod, or a policy event
// (the rule port). `skip` when the draw had nothing to act on.
struct ChurnEvent {
  bool skip = true;
  std::vector<ChurnPod> after;
  uint32_t port = 80;
  bool pod_event = true;
  std::string what;
};
ChurnEvent RandomChurnEvent(std::mt19937_64& rng, const std::vector<ChurnPod>& pods,
                            uint32_t port, int step, int* next_name) {
  std::vector<ChurnPod> after = pods;
  uint32_t after_port = port;
  bool pod_event = true;
  std::string what;
  std::set<uint32_t> used;
  for (const ChurnPod& p : pods) used.insert(p.address);
  switch (rng() % 6) {
    case 0:
    case 1: {  // a pod starts, local or not, in an existing identity
      uint32_t address = 1 + rng() % 60;
      if (used.count(address) > 0) address = 61 + step;  // never reused here: below
      ChurnPod p{absl::StrCat("n/p", (*next_name)++), static_cast<uint32_t>(1 + rng() % 10), address};
      p.local = rng() % 2 == 0;
      p.selected = p.local && rng() % 3 != 0;
      p.table = rng() % 2;
      after.push_back(p);
      what = absl::StrCat("add ", p.name, p.local ? " (local)" : "");
      break;
    }
    case 2: {  // a pod stops
      if (after.empty()) return {};
      size_t i = rng() % after.size();
      what = absl::StrCat("delete ", after[i].name);
      after.erase(after.begin() + i);
      break;
    }
    case 3: {  // a remote pod is relabelled into another identity
      std::vector<size_t> remote;
      for (size_t i = 0; i < after.size(); ++i) {
        if (!after[i].local) remote.push_back(i);
      }
      if (remote.empty()) return {};
      ChurnPod& p = after[remote[rng() % remote.size()]];
      p.identity = 1 + (p.identity + rng() % 9) % 10;
      what = absl::StrCat("relabel ", p.name);
      break;
    }
    case 4: {  // a deleted pod's address taken by a new pod (address reuse)
      if (after.empty()) return {};
      size_t i = rng() % after.size();
      ChurnPod p = after[i];
      after.erase(after.begin() + i);
      what = absl::StrCat("reuse ", p.name, "'s address");
      p.name = absl::StrCat("n/p", (*next_name)++);
      p.identity = 1 + rng() % 10;
      after.push_back(p);
      break;
    }
    default:  // a policy event
      after_port = port == 80 ? 8080 : 80;
      pod_event = false;
      what = "rule port";
  }
  return {false, std::move(after), after_port, pod_event, std::move(what)};
}

// A listing up to generation numbers, identity chains' comments (nft.h: an element edit
// cannot change them) and object order.
std::string Normalized(const std::string& listing) {
  std::string out;
  bool identity_chain = false;
  for (absl::string_view line : absl::StrSplit(listing, '\n')) {
    absl::string_view t = absl::StripAsciiWhitespace(line);
    if (absl::StartsWith(t, "chain ")) identity_chain = absl::StartsWith(t, "chain id_");
    if (identity_chain && absl::StartsWith(t, "comment ")) continue;
    if (line == "}" || absl::StartsWith(line, "table ")) continue;  // the table's braces
    std::string l(line);
    // name_g<N> -> name_g
    std::string cleaned;
    for (size_t i = 0; i < l.size(); ++i) {
      cleaned.push_back(l[i]);
      if (l[i] == 'g' && i > 0 && l[i - 1] == '_') {
        while (i + 1 < l.size() && std::isdigit(static_cast<unsigned char>(l[i + 1]))) ++i;
      }
    }
    absl::StrAppend(&out, cleaned, "\n");
  }
  // The objects in name order: a listing follows creation order, which differs between a
  // table that switched generations N times and one that did not.
  std::vector<std::string> blocks = absl::StrSplit(out, "\n\n");
  std::sort(blocks.begin(), blocks.end());
  return absl::StrJoin(blocks, "\n\n");
}

// As root: random pod churn (seeded; NP_NFT_CHURN_SEED replays one) through Update in a
// named network namespace (the in-process session's setns path), checked after every step
// against a fresh Apply of the same IR in the test's own namespace: the two listings are
// equal up to generation numbers and identity chains' comments (nft.h: an element edit
// cannot change them). Pod events must leave the generation in place; a policy event
// (rule port) must switch it. `through_delta`: pod events go through UpdateDelta with the
// delta of DiffPrograms (one in four through Update, so that Update plans from maps that
// delta edits changed), and most of them must stay in place on UpdateDelta's own path.
void ExpectChurnEqualsFreshApply(bool through_delta) {
  const std::string netns = absl::StrCat("np-nft-churn-", through_delta ? "d-" : "", getpid());
  ASSERT_TRUE(RunCommand({"ip", "netns", "add", netns}).ok());
  struct Cleanup {
    std::string netns;
    ~Cleanup() { (void)RunCommand({"ip", "netns", "del", netns}); }
  } cleanup{netns};
  const uint64_t seed = SeedFromEnv("NP_NFT_CHURN_SEED", 20261130);
  SCOPED_TRACE(absl::StrCat("NP_NFT_CHURN_SEED=", seed));
  std::mt19937_64 rng(seed);
  auto generation = [&](const std::string& ns) -> uint64_t {
    absl::StatusOr<std::string> l = RunCommand({"nft", "-t", "list", "table", "inet", kTableName}, "", ns);
    return l.ok() ? ParseInstalled(*l).last_generation : 0;
  };
  std::unique_ptr<Backend> incremental = MakeNftBackend();
  std::unique_ptr<Backend> fresh = MakeNftBackend();
  const Attachment there{{}, netns};
  std::vector<ChurnPod> pods = ChurnBase();
  uint32_t port = 80;
  ir::CompiledPolicy current = ChurnIr(pods, port);
  ASSERT_TRUE(incremental->Apply(current, there).ok());
  int in_place = 0, switched = 0, next_name = 0, delta_steps = 0, delta_in_place = 0;
  uint64_t expected_batches = 0;  // the in-place steps' transactions
  for (int step = 0; step < 60; ++step) {
    ChurnEvent event = RandomChurnEvent(rng, pods, port, step, &next_name);
    if (event.skip) continue;
    std::vector<ChurnPod> after = std::move(event.after);
    const uint32_t after_port = event.port;
    const bool pod_event = event.pod_event;
    const std::string what = event.what;
    ir::CompiledPolicy next = ChurnIr(after, after_port);
    SCOPED_TRACE(absl::StrCat("step ", step, ": ", what));
    const uint64_t before = generation(netns);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(current, next);
    if (!pod_event) {
      // A rule change is a delta of tables or peer sets only (stable ids: none appended).
      ASSERT_TRUE(delta.has_value()) << "a rule change keeps every id";
      EXPECT_GT(delta->tables_size() + delta->peer_sets_size(), 0) << "a rule change";
      EXPECT_EQ(delta->ipv4_size() + delta->ipv6_size() + delta->endpoints_size(), 0);
    }
    const bool use_delta = through_delta && delta.has_value() && step % 4 != 3;
    const DeltaStats stats_before = DeltaStatsOf(*incremental);
    if (use_delta) {
      ASSERT_TRUE(incremental->UpdateDelta(current, *delta, there).ok());
    } else {
      ASSERT_TRUE(incremental->Update(current, next, there).ok());
    }
    const DeltaStats stats_after = DeltaStatsOf(*incremental);
    ASSERT_TRUE(fresh->Apply(next, {}).ok());
    absl::StatusOr<std::string> got = RunCommand({"nft", "list", "table", "inet", kTableName}, "", netns);
    absl::StatusOr<std::string> want = RunCommand({"nft", "list", "table", "inet", kTableName});
    ASSERT_TRUE(got.ok() && want.ok());
    ASSERT_EQ(Normalized(*got), Normalized(*want));
    const bool stayed = generation(netns) == before;
    // What must be in place: one pod's addresses and no dispatch entry replaced while the
    // identity changes (PlanElementUpdate's rule, read off the event).
    Program a = Generation(current, 1), b = Generation(next, 1);
    ElementPlan plan = PlanElementUpdate(a, b);
    // What else goes in place: one transaction of PlanInPlaceUpdate (a policy event on
    // stably numbered programs — here every rule change, which keeps all ids).
    const InPlacePlan in_place_plan = PlanInPlaceUpdate(a, b);
    ExpectSetsAheadOfTheirLookups(in_place_plan);
    if (!pod_event) {
      EXPECT_TRUE(stayed) << "a rule change goes in place: " << in_place_plan.fallback;
    }
    // One pod added, deleted or relabelled (remote) is always safe in place, unless it is
    // the first or last endpoint of a table (its chains come or go); an address reused by
    // a pod of another table may not be.
    auto tables_in_use = [](const std::vector<ChurnPod>& ps) {
      std::set<uint32_t> out;
      for (const ChurnPod& p : ps) {
        if (p.local && p.selected) out.insert(p.table);
      }
      return out;
    };
    if (!absl::StartsWith(what, "reuse") && pod_event && tables_in_use(pods) == tables_in_use(after)) {
      EXPECT_TRUE(stayed) << plan.fallback;
    }
    EXPECT_EQ(stayed, plan.fallback.empty() || in_place_plan.fallback.empty())
        << plan.fallback << "; " << in_place_plan.fallback;
    if (use_delta && pod_event) {
      // UpdateDelta edits in place itself exactly when the whole-program plan does (a rule
      // change's delta goes on to Update, whose in-place path `stayed` checks above).
      ++delta_steps;
      const bool own = stats_after.in_place == stats_before.in_place + 1;
      EXPECT_EQ(own, plan.fallback.empty()) << "UpdateDelta: " << stats_after.last_fallback
                                            << "; whole-program plan: " << plan.fallback;
      delta_in_place += own ? 1 : 0;
    }
    (stayed ? in_place : switched)++;
    if (stayed && plan.fallback.empty()) expected_batches += plan.transactions.size();
    pods = std::move(after);
    port = after_port;
    current = std::move(next);
  }
  // The churn exercised both paths.
  EXPECT_GT(in_place, 20);
  EXPECT_GT(switched, 3);
  std::cerr << "churn: " << in_place << " in place, " << switched << " switched; through "
            << "UpdateDelta " << delta_steps << ", in place there " << delta_in_place << "\n";
  if (through_delta) {
    EXPECT_GT(delta_steps, 20);
    EXPECT_GT(2 * delta_in_place, delta_steps) << "most delta steps stay in place";
  }
  // Every in-place transaction went to the kernel as a raw netlink batch (netlink.h): none
  // fell back to libnftables, none was refused as another writer's (there is none here).
  const DeltaStats stats = DeltaStatsOf(*incremental);
  std::cerr << "netlink batches " << stats.netlink_batches << ", fallbacks "
            << stats.netlink_fallbacks << ", aborts " << stats.netlink_aborts << " "
            << stats.last_netlink_error << "\n";
  EXPECT_EQ(stats.netlink_batches, expected_batches);
  EXPECT_GT(expected_batches, 20u);
  EXPECT_EQ(stats.netlink_fallbacks, 0u) << stats.last_netlink_error;
  EXPECT_EQ(stats.netlink_aborts, 0u) << stats.last_netlink_error;
  ASSERT_TRUE(incremental->Remove(there).ok());
  ASSERT_TRUE(fresh->Remove({}).ok());
}

TEST_F(NftKernelTest, UpdateInPlaceEqualsAFreshApplyOnRandomChurn) {
  ExpectChurnEqualsFreshApply(/*through_delta=*/false);
}

TEST_F(NftKernelTest, UpdateDeltaEqualsAFreshApplyOnRandomChurn) {
  ExpectChurnEqualsFreshApply(/*through_delta=*/true);
}

// ---- Policy events in place (PlanInPlaceUpdate) ------------------------------------------
// Pairs (previous, next) with stable ids, derived by hand as a policy event would change a
// program (briefs' stable numbering). Expected results come from the kernel: Update in one
// namespace must list as a fresh Apply(next) in another (up to generation numbers, object
// order and chain comments — nft.h: the kernel keeps a chain's comment), and the path taken
// is read off DeltaStats.

// Normalized, and without the comments of regular chains.
std::string NormalizedNoChainComments(const std::string& listing) {
  std::string out;
  bool regular_chain = false;
  for (absl::string_view line : absl::StrSplit(listing, '\n')) {
    absl::string_view t = absl::StripAsciiWhitespace(line);
    if (absl::StartsWith(t, "chain ")) regular_chain = !absl::StartsWith(t, "chain forward ");
    if (absl::StartsWith(t, "set ") || absl::StartsWith(t, "map ")) regular_chain = false;
    if (regular_chain && absl::StartsWith(t, "comment ")) continue;
    absl::StrAppend(&out, line, "\n");
  }
  return Normalized(out);
}

// A network namespace of the test's own, deleted when the object goes.
struct ScratchNetns {
  explicit ScratchNetns(std::string n) : name(std::move(n)) {
    ok = RunCommand({"ip", "netns", "add", name}).ok();
  }
  ~ScratchNetns() { (void)RunCommand({"ip", "netns", "del", name}); }
  std::string name;
  bool ok = false;
};

// The table in `netns` lists as the one in the test's own namespace (a fresh Apply), up to
// generation numbers, object order and chain comments.
void ExpectListsAsFresh(const std::string& netns, const std::string& what) {
  absl::StatusOr<std::string> got = RunCommand({"nft", "list", "table", "inet", kTableName}, "", netns);
  absl::StatusOr<std::string> want = RunCommand({"nft", "list", "table", "inet", kTableName});
  ASSERT_TRUE(got.ok() && want.ok());
  ASSERT_EQ(NormalizedNoChainComments(*got), NormalizedNoChainComments(*want)) << what;
}

// ChurnIr's pods and one more remote pod, d/z, of identity 6, which no peer set names.
ir::CompiledPolicy PolicyBase() {
  std::vector<ChurnPod> pods = ChurnBase();
  pods.push_back({"d/z", 6, 30, false});
  return ChurnIr(pods);
}

ir::Table* AppendTable(ir::CompiledPolicy& ir) {
  ir::Table* t = ir.add_tables();
  t->set_id(ir.tables_size() - 1);
  return t;
}

// The endpoint named `name` ("ns/pod").
ir::Endpoint* EndpointOf(ir::CompiledPolicy& ir, const std::string& name) {
  for (ir::Endpoint& e : *ir.mutable_endpoints()) {
    if (absl::StrCat(e.namespace_(), "/", e.name()) == name) return &e;
  }
  ADD_FAILURE() << "no endpoint " << name;
  return ir.mutable_endpoints(0);
}

void SetIdentities(ir::PeerSet* s, std::vector<uint32_t> ids) {
  std::sort(ids.begin(), ids.end());
  s->clear_identities();
  for (uint32_t id : ids) s->add_identities(id);
}

// Appends an identity and moves `pod`'s ranges (and name) to it: a relabelled pod under a
// new id. Returns the id.
uint32_t MovePodToNewIdentity(ir::CompiledPolicy& ir, const std::string& pod) {
  const uint32_t id = static_cast<uint32_t>(ir.identities_size());
  ir::Identity* identity = ir.add_identities();
  identity->set_id(id);
  identity->add_pods(pod);
  for (ir::Identity& other : *ir.mutable_identities()) {
    if (other.id() == id) continue;
    auto* pods = other.mutable_pods();
    for (int i = 0; i < pods->size(); ++i) {
      if (pods->Get(i) == pod) {
        pods->erase(pods->begin() + i);
        break;
      }
    }
  }
  for (auto* ranges : {ir.mutable_ipv4(), ir.mutable_ipv6()}) {
    for (ir::AddressRange& r : *ranges) {
      if (r.pod() == pod) r.set_identity(id);
    }
  }
  return id;
}

// A table with no endpoint, rules, tier rules or policies (stable numbering's tombstone).
void MakeTombstone(ir::Table* t) {
  const uint32_t id = t->id();
  t->Clear();
  t->set_id(id);
}

struct PolicyPair {
  std::string name;
  ir::CompiledPolicy previous, next;
  bool in_place;  // what PlanInPlaceUpdate must do (nft.h's rules)
};

std::vector<PolicyPair> PolicyPairs() {
  std::vector<PolicyPair> out;
  const ir::CompiledPolicy base = PolicyBase();
  auto pair = [&](std::string name, bool in_place, auto edit) {
    ir::CompiledPolicy next = base;
    edit(next);
    out.push_back({std::move(name), base, std::move(next), in_place});
  };
  pair("a table's rule changed", true, [](ir::CompiledPolicy& ir) {
    ir.mutable_tables(0)->mutable_ingress()->mutable_rules(0)->set_first_port(8080);
    ir.mutable_tables(0)->mutable_ingress()->mutable_rules(0)->set_last_port(8080);
    ir.mutable_tables(0)->add_policies("ns/new-policy");
  });
  pair("a policy's rule deleted from one table", true, [](ir::CompiledPolicy& ir) {
    auto* rules = ir.mutable_tables(0)->mutable_ingress()->mutable_rules();
    rules->erase(rules->begin() + 1);
  });
  pair("tier rules added (a Pass: a stage chain comes)", true, [](ir::CompiledPolicy& ir) {
    ir::DirectionPolicy* d = ir.mutable_tables(1)->mutable_ingress();
    ir::TierRule* deny = d->add_admin();
    deny->set_action(ir::TIER_DENY);
    deny->set_protocol(ir::TCP);
    deny->set_first_port(22);
    deny->set_last_port(22);
    deny->set_peer_set(0);
    deny->set_origin("anp/deny-ssh");
    ir::TierRule* pass = d->add_admin();
    pass->set_action(ir::TIER_PASS);
    pass->set_last_port(65535);
    pass->set_peer_set(2);
    pass->set_origin("anp/pass");
  });
  pair("inline peer set changed", true, [](ir::CompiledPolicy& ir) {
    SetIdentities(ir.mutable_peer_sets(0), {1, 2, 3});
  });
  pair("inline peer set becomes named; identities named anew", true, [](ir::CompiledPolicy& ir) {
    SetIdentities(ir.mutable_peer_sets(2), {0, 2, 4, 6, 8});
  });
  pair("named peer set becomes inline", true, [](ir::CompiledPolicy& ir) {
    SetIdentities(ir.mutable_peer_sets(1), {1, 2, 3, 5, 7, 9, 10});
  });
  pair("named peer set edited; an identity chain nothing reaches goes", true,
       [](ir::CompiledPolicy& ir) { SetIdentities(ir.mutable_peer_sets(1), {1, 3, 5, 7, 9}); });
  pair("peer set appended and a rule pointed at it", true, [](ir::CompiledPolicy& ir) {
    AddPeerSet(ir, {2, 3, 5, 7, 9});
    ir.mutable_tables(1)->mutable_ingress()->mutable_rules(1)->set_peer_set(3);
  });
  pair("identity appended, a pod's ranges moved to it, named by a peer set", true,
       [](ir::CompiledPolicy& ir) {
         const uint32_t id = MovePodToNewIdentity(ir, "d/z");
         std::vector<uint32_t> ids(ir.peer_sets(0).identities().begin(),
                                   ir.peer_sets(0).identities().end());
         ids.push_back(id);
         SetIdentities(ir.mutable_peer_sets(0), ids);
       });
  pair("table appended, an unselected endpoint selected into it", true,
       [](ir::CompiledPolicy& ir) {
         ir::Table* t = AppendTable(ir);
         t->add_policies("b/new");
         AddRule(t->mutable_ingress(), ir::TCP, 8080, 8080, 0);
         AddRule(t->mutable_egress(), ir::UDP, 53, 53, 2);
         EndpointOf(ir, "b/job")->set_selected(true);
         EndpointOf(ir, "b/job")->set_table(t->id());
       });
  pair("table appended, a selected endpoint moved to it (refused)", false,
       [](ir::CompiledPolicy& ir) {
         ir::Table* t = AppendTable(ir);
         AddRule(t->mutable_ingress(), ir::TCP, 8080, 8080, 0);
         EndpointOf(ir, "a/web-2")->set_table(t->id());
       });
  pair("table emptied into a tombstone (refused: its endpoint moves)", false,
       [](ir::CompiledPolicy& ir) {
         EndpointOf(ir, "a/db")->set_table(0);
         MakeTombstone(ir.mutable_tables(1));
       });
  pair("a table's only endpoint deselected, the table a tombstone (only deletes)", true,
       [](ir::CompiledPolicy& ir) {
         EndpointOf(ir, "a/db")->set_selected(false);
         MakeTombstone(ir.mutable_tables(1));
       });
  pair("an endpoint deselected while another table's rules change (refused)", false,
       [](ir::CompiledPolicy& ir) {
         EndpointOf(ir, "a/db")->set_selected(false);
         MakeTombstone(ir.mutable_tables(1));
         ir.mutable_tables(0)->mutable_ingress()->mutable_rules(0)->set_first_port(8080);
         ir.mutable_tables(0)->mutable_ingress()->mutable_rules(0)->set_last_port(8080);
       });
  pair("a named identity no longer named (its chain goes in the cleanup)", true,
       [](ir::CompiledPolicy& ir) { SetIdentities(ir.mutable_peer_sets(2), {0}); });
  pair("two pods moved between named identities (refused)", false, [](ir::CompiledPolicy& ir) {
    for (auto [pod, from] : {std::pair<std::string, int>{"c/y", 4}, {"c/x", 7}}) {
      for (auto* ranges : {ir.mutable_ipv4(), ir.mutable_ipv6()}) {
        for (ir::AddressRange& r : *ranges) {
          if (r.pod() == pod) r.set_identity(1);
        }
      }
      auto* pods = ir.mutable_identities(from)->mutable_pods();
      pods->erase(std::find(pods->begin(), pods->end(), pod));
      ir.mutable_identities(1)->add_pods(pod);
    }
  });
  pair("a table gains egress: its endpoint gets an egress dispatch entry", true,
       [](ir::CompiledPolicy& ir) {
         AddRule(ir.mutable_tables(1)->mutable_egress(), ir::TCP, 5432, 5432, 1);
         ir.mutable_tables(1)->mutable_egress()->set_isolated(true);
       });
  {
    // A tombstone table's id reused by a new table.
    ir::CompiledPolicy previous = base;
    MakeTombstone(AppendTable(previous));
    ir::CompiledPolicy next = previous;
    AddRule(next.mutable_tables(2)->mutable_ingress(), ir::UDP, 5353, 5353, 1);
    EndpointOf(next, "b/job")->set_selected(true);
    EndpointOf(next, "b/job")->set_table(2);
    out.push_back({"a tombstone table reused", previous, next, true});
  }
  {
    // With a tier chain's miss drop installed, naming an identity anew is refused.
    ir::CompiledPolicy previous = out[2].next;
    ir::CompiledPolicy next = previous;
    SetIdentities(next.mutable_peer_sets(2), {0, 4, 6});
    out.push_back({"an identity named anew under a miss drop (refused)", previous, next, false});
    // The reverse: the stage chain and the tier rules go.
    out.push_back({"tier rules deleted (the stage chain goes)", out[2].next, base, true});
  }
  return out;
}

void ExpectPairsInPlace(bool text) {
  ScratchNetns scratch(absl::StrCat("np-nft-inpl-", text ? "t-" : "", getpid()));
  ASSERT_TRUE(scratch.ok);
  const std::string& netns = scratch.name;
  struct Unset {
    ~Unset() { unsetenv("NP_NFT_NO_NETLINK"); }
  } unset;
  if (text) setenv("NP_NFT_NO_NETLINK", "1", 1);
  std::unique_ptr<Backend> incremental = MakeNftBackend();
  std::unique_ptr<Backend> fresh = MakeNftBackend();
  const Attachment there{{}, netns};
  int in_place = 0, sets_ahead = 0, live_set_edits = 0;
  for (const PolicyPair& p : PolicyPairs()) {
    SCOPED_TRACE(p.name);
    ASSERT_TRUE(CheckIr(p.previous).ok()) << CheckIr(p.previous);
    ASSERT_TRUE(CheckIr(p.next).ok()) << CheckIr(p.next);
    for (const InPlacePlan& plan : {PlanInPlaceUpdate(Generation(p.previous, 1), Generation(p.next, 1)),
                                    PlanInPlaceUpdate(Generation(p.next, 1), Generation(p.previous, 1))}) {
      ExpectSetsAheadOfTheirLookups(plan);
      sets_ahead += plan.sets_first.sets.empty() ? 0 : 1;
      for (const SetElementEdit& e : plan.batch.first_element_deletes) {
        live_set_edits += absl::StartsWith(e.set, "peers_") ? 1 : 0;
      }
    }
    ASSERT_TRUE(incremental->Apply(p.previous, there).ok());
    const DeltaStats before = DeltaStatsOf(*incremental);
    ASSERT_TRUE(incremental->Update(p.previous, p.next, there).ok());
    const DeltaStats after = DeltaStatsOf(*incremental);
    EXPECT_EQ(after.update_in_place, before.update_in_place + (p.in_place ? 1 : 0))
        << after.last_update;
    EXPECT_EQ(after.update_switch, before.update_switch + (p.in_place ? 0 : 1))
        << after.last_update;
    if (p.in_place) {
      // Through libnftables: each transaction (one, or two with a cleanup).
      EXPECT_EQ(after.update_in_place_text > before.update_in_place_text, text)
          << after.last_netlink_error;
      in_place += 1;
    }
    ASSERT_TRUE(fresh->Apply(p.next, {}).ok());
    ASSERT_TRUE(SettleCleanups(*incremental).ok());
    ASSERT_NO_FATAL_FAILURE(ExpectListsAsFresh(netns, after.last_update));
    // And back: the reverse edit (in place or not) reaches `previous` again.
    ASSERT_TRUE(incremental->Update(p.next, p.previous, there).ok());
    ASSERT_TRUE(fresh->Apply(p.previous, {}).ok());
    ASSERT_TRUE(SettleCleanups(*incremental).ok());
    ASSERT_NO_FATAL_FAILURE(ExpectListsAsFresh(
        netns, "back from next: " + DeltaStatsOf(*incremental).last_update));
  }
  EXPECT_GE(in_place, 10);
  // The pairs exercise both halves of the rule: new named peer sets, live ones edited.
  EXPECT_GE(sets_ahead, 2);
  EXPECT_GE(live_set_edits, 1);
  ASSERT_TRUE(incremental->Remove(there).ok());
  ASSERT_TRUE(fresh->Remove({}).ok());
}

TEST_F(NftKernelTest, PolicyEventsInPlaceEqualAFreshApply) { ExpectPairsInPlace(false); }

TEST_F(NftKernelTest, PolicyEventsInPlaceThroughLibnftablesEqualAFreshApply) {
  ExpectPairsInPlace(true);
}

// One random policy event on `ir` that keeps every id (briefs' stable numbering): a table's
// rules or tier rules changed, a peer set's identities changed, a peer set appended and a
// rule pointed at it, an identity appended with a pod's ranges moved to it, a table
// appended with an endpoint moved into it, a table made a tombstone, a tombstone reused.
std::string RandomPolicyEvent(std::mt19937_64& rng, ir::CompiledPolicy& ir) {
  auto uniform = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  auto random_ids = [&] {
    std::vector<uint32_t> ids;
    for (int i = 0; i < ir.identities_size(); ++i) {
      if (uniform(2) == 0) ids.push_back(static_cast<uint32_t>(i));
    }
    return ids;
  };
  auto random_direction = [&](ir::Table* t) {
    return uniform(2) == 0 ? t->mutable_ingress() : t->mutable_egress();
  };
  auto random_rules = [&](ir::DirectionPolicy* d) {
    d->clear_rules();
    int n = 0;
    for (ir::Protocol p : {ir::TCP, ir::UDP}) {
      uint32_t port = static_cast<uint32_t>(uniform(50));
      for (int r = uniform(3); r > 0; --r, ++n) {
        const uint32_t first = port + static_cast<uint32_t>(uniform(20));
        const uint32_t last = first + static_cast<uint32_t>(uniform(3));
        AddRule(d, p, first, last, static_cast<uint32_t>(uniform(ir.peer_sets_size())));
        port = last + 1;
      }
    }
    d->set_isolated(n > 0 || uniform(2) == 0);
  };
  switch (uniform(8)) {
    case 0: {
      random_rules(random_direction(ir.mutable_tables(uniform(ir.tables_size()))));
      return "a table's rules";
    }
    case 1: {
      ir::DirectionPolicy* d = random_direction(ir.mutable_tables(uniform(ir.tables_size())));
      d->clear_admin();
      d->clear_baseline();
      std::mt19937_64 tier_rng(rng());
      iptables::testutil::AddRandomTierRules(tier_rng, ir.peer_sets_size(), d);
      return "a table's tier rules";
    }
    case 2: {
      ir::PeerSet* s = ir.mutable_peer_sets(uniform(ir.peer_sets_size()));
      if (!s->all()) SetIdentities(s, random_ids());
      return "a peer set's identities";
    }
    case 3: {
      AddPeerSet(ir, random_ids());
      ir::DirectionPolicy* d = random_direction(ir.mutable_tables(uniform(ir.tables_size())));
      const uint32_t added = static_cast<uint32_t>(ir.peer_sets_size() - 1);
      if (d->rules_size() > 0) {
        d->mutable_rules(uniform(d->rules_size()))->set_peer_set(added);
      } else {
        AddRule(d, ir::TCP, 80, 81, added);
      }
      return "a peer set appended, a rule naming it";
    }
    case 4: {
      std::vector<std::string> pods;
      for (const ir::Identity& i : ir.identities()) pods.insert(pods.end(), i.pods().begin(), i.pods().end());
      if (pods.empty()) return "nothing";
      const uint32_t id = MovePodToNewIdentity(ir, pods[uniform(static_cast<int>(pods.size()))]);
      for (ir::PeerSet& s : *ir.mutable_peer_sets()) {
        if (s.all() || uniform(2) == 0) continue;
        std::vector<uint32_t> ids(s.identities().begin(), s.identities().end());
        ids.push_back(id);
        SetIdentities(&s, ids);
      }
      return "an identity appended, a pod moved to it";
    }
    case 5: {
      ir::Table* t = AppendTable(ir);
      random_rules(t->mutable_ingress());
      random_rules(t->mutable_egress());
      if (ir.endpoints_size() > 0) {
        ir::Endpoint* e = ir.mutable_endpoints(uniform(ir.endpoints_size()));
        e->set_table(t->id());
        e->set_selected(true);
      }
      return "a table appended, an endpoint moved to it";
    }
    case 6: {
      if (ir.tables_size() < 2) return "nothing";
      const uint32_t gone = static_cast<uint32_t>(uniform(ir.tables_size()));
      const uint32_t to = (gone + 1) % static_cast<uint32_t>(ir.tables_size());
      for (ir::Endpoint& e : *ir.mutable_endpoints()) {
        if (e.table() == gone) e.set_table(to);
      }
      MakeTombstone(ir.mutable_tables(gone));
      return "a table made a tombstone";
    }
    default: {
      for (ir::Table& t : *ir.mutable_tables()) {
        if (t.ingress().isolated() || t.egress().isolated() || t.policies_size() > 0) continue;
        random_rules(t.mutable_ingress());
        for (ir::Endpoint& e : *ir.mutable_endpoints()) {
          if (!e.selected()) {
            e.set_selected(true);
            e.set_table(t.id());
            break;
          }
        }
        return "a tombstone reused";
      }
      return "nothing";
    }
  }
}

// Seeded random sequences of policy events (NP_NFT_POLICY_SEED replays one): after every
// Update, the namespace lists as a fresh Apply of the same IR, whichever path Update took;
// a good share went in place.
TEST_F(NftKernelTest, RandomPolicyEventsEqualAFreshApply) {
  ScratchNetns scratch(absl::StrCat("np-nft-rpol-", getpid()));
  ASSERT_TRUE(scratch.ok);
  const std::string& netns = scratch.name;
  const uint64_t seed = SeedFromEnv("NP_NFT_POLICY_SEED", 20261201);
  SCOPED_TRACE(absl::StrCat("NP_NFT_POLICY_SEED=", seed));
  std::mt19937_64 rng(seed);
  std::mt19937 ir_rng(static_cast<uint32_t>(seed));
  std::unique_ptr<Backend> incremental = MakeNftBackend();
  std::unique_ptr<Backend> fresh = MakeNftBackend();
  const Attachment there{{}, netns};
  int steps = 0, in_place = 0;
  std::map<std::string, int> fallbacks;
  for (int run = 0; run < 12; ++run) {
    ir::CompiledPolicy current = RandomIr(ir_rng);
    ASSERT_TRUE(incremental->Apply(current, there).ok());
    for (int step = 0; step < 8; ++step) {
      ir::CompiledPolicy next = current;
      const std::string what = RandomPolicyEvent(rng, next);
      SCOPED_TRACE(absl::StrCat("run ", run, " step ", step, ": ", what));
      ASSERT_TRUE(CheckIr(next).ok()) << CheckIr(next);
      const DeltaStats before = DeltaStatsOf(*incremental);
      ASSERT_TRUE(incremental->Update(current, next, there).ok());
      const DeltaStats after = DeltaStatsOf(*incremental);
      ASSERT_TRUE(fresh->Apply(next, {}).ok());
      ASSERT_TRUE(SettleCleanups(*incremental).ok());
      ASSERT_NO_FATAL_FAILURE(ExpectListsAsFresh(netns, after.last_update));
      ++steps;
      if (after.update_in_place > before.update_in_place) ++in_place;
      if (after.update_switch > before.update_switch) {
        // The in-place reason, without names and numbers.
        std::string why = after.last_update.substr(after.last_update.rfind("; ") + 2);
        why.erase(std::remove_if(why.begin(), why.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }), why.end());
        ++fallbacks[why.substr(why.find(": ") == std::string::npos ? 0 : why.find(": ") + 2, 40)];
      }
      current = std::move(next);
    }
  }
  std::cerr << "random policy events: " << steps << " steps, " << in_place << " in place\n";
  for (const auto& [why, n] : fallbacks) std::cerr << "  " << n << "x " << why << "\n";
  EXPECT_GT(3 * in_place, steps) << "a third or more in place";
  EXPECT_EQ(DeltaStatsOf(*incremental).update_in_place_text, 0u)
      << DeltaStatsOf(*incremental).last_netlink_error;
  ASSERT_TRUE(incremental->Remove(there).ok());
  ASSERT_TRUE(fresh->Remove({}).ok());
}

// ---- Policy events as deltas (UpdateDelta with tables and peer sets: PlanPolicyDelta) ----

bool HasPodParts(const ir::CompiledPolicyDelta& delta) {
  return !delta.ipv4().empty() || !delta.ipv6().empty() || !delta.identity_pods().empty();
}

// Each hand-made policy event as DiffPrograms' delta through UpdateDelta: in place exactly
// when the whole-program planner is (PolicyPairs' `in_place`) and the delta has no pod
// parts; the namespace then lists as a fresh Apply of ApplyDelta(previous, delta). And back,
// when the reverse is a delta (it is not when `next` appended items).
TEST_F(NftKernelTest, PolicyDeltasInPlaceEqualAFreshApply) {
  ScratchNetns scratch(absl::StrCat("h50-pdelta-", getpid()));
  ASSERT_TRUE(scratch.ok);
  const std::string& netns = scratch.name;
  std::unique_ptr<Backend> incremental = MakeNftBackend();
  std::unique_ptr<Backend> fresh = MakeNftBackend();
  const Attachment there{{}, netns};
  int in_place = 0, back_in_place = 0;
  for (const PolicyPair& p : PolicyPairs()) {
    SCOPED_TRACE(p.name);
    for (bool back : {false, true}) {
      const ir::CompiledPolicy& from = back ? p.next : p.previous;
      const ir::CompiledPolicy& to = back ? p.previous : p.next;
      std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(from, to);
      // None when `to` has more identities (a pod event's part) or fewer items.
      if (!delta.has_value()) continue;
      ir::CompiledPolicy applied = from;
      ASSERT_TRUE(ApplyDelta(*delta, &applied).ok());
      ASSERT_TRUE(incremental->Apply(from, there).ok());
      const DeltaStats before = DeltaStatsOf(*incremental);
      ASSERT_TRUE(incremental->UpdateDelta(from, *delta, there).ok());
      const DeltaStats after = DeltaStatsOf(*incremental);
      const bool went = after.policy_in_place > before.policy_in_place;
      if (!back) {
        EXPECT_EQ(went, p.in_place && !HasPodParts(*delta)) << after.last_fallback;
        in_place += went ? 1 : 0;
      } else {
        back_in_place += went ? 1 : 0;
      }
      // In place (here, or as a pod delta's identities) means no whole-program Update underneath.
      EXPECT_EQ(after.update_in_place + after.update_switch + after.update_elements,
                before.update_in_place + before.update_switch + before.update_elements +
                    (after.in_place > before.in_place ? 0 : 1));
      ASSERT_TRUE(fresh->Apply(applied, {}).ok());
      ASSERT_TRUE(SettleCleanups(*incremental).ok());
      ASSERT_NO_FATAL_FAILURE(ExpectListsAsFresh(
          netns, absl::StrCat(back ? "back: " : "", went ? "in place" : after.last_fallback)));
    }
  }
  std::cerr << "policy deltas: " << in_place << " in place, " << back_in_place
            << " of the reverse ones\n";
  EXPECT_GE(in_place, 10);
  EXPECT_GE(back_in_place, 5);
  ASSERT_TRUE(incremental->Remove(there).ok());
  ASSERT_TRUE(fresh->Remove({}).ok());
}

// An identity retired by one delta is named again by the next before anything settles: the
// deferred retirement commits first (at the start of the second call), and the second plan
// creates the chain again — never a retirement deleting a chain that rules name.
TEST_F(NftKernelTest, DeferredRetirementThenNamedAgain) {
  ScratchNetns scratch(absl::StrCat("h50-retire-", getpid()));
  ASSERT_TRUE(scratch.ok);
  const std::string& netns = scratch.name;
  const ir::CompiledPolicy a = PolicyBase();
  ir::CompiledPolicy b = a;
  SetIdentities(b.mutable_peer_sets(2), {0});  // identities named only there go
  std::optional<ir::CompiledPolicyDelta> there_delta = DiffPrograms(a, b);
  std::optional<ir::CompiledPolicyDelta> back_delta = DiffPrograms(b, a);
  ASSERT_TRUE(there_delta.has_value() && back_delta.has_value());
  std::unique_ptr<Backend> incremental = MakeNftBackend();
  std::unique_ptr<Backend> fresh = MakeNftBackend();
  const Attachment there{{}, netns};
  ASSERT_TRUE(incremental->Apply(a, there).ok());
  ASSERT_TRUE(incremental->UpdateDelta(a, *there_delta, there).ok());
  DeltaStats stats = DeltaStatsOf(*incremental);
  EXPECT_EQ(stats.policy_in_place, 1u) << stats.last_fallback;
  EXPECT_EQ(stats.cleanups_deferred, 1u);
  EXPECT_EQ(stats.cleanups_committed, 0u);
  // Not settled: the retired chains are still listed (a fresh Apply of b lacks them).
  ASSERT_TRUE(fresh->Apply(b, {}).ok());
  {
    absl::StatusOr<std::string> got = RunCommand({"nft", "list", "table", "inet", kTableName}, "", netns);
    absl::StatusOr<std::string> want = RunCommand({"nft", "list", "table", "inet", kTableName});
    ASSERT_TRUE(got.ok() && want.ok());
    EXPECT_NE(NormalizedNoChainComments(*got), NormalizedNoChainComments(*want));
  }
  ASSERT_TRUE(incremental->UpdateDelta(b, *back_delta, there).ok());
  stats = DeltaStatsOf(*incremental);
  EXPECT_EQ(stats.policy_in_place, 2u) << stats.last_fallback;
  EXPECT_EQ(stats.cleanups_committed, 1u);
  EXPECT_EQ(stats.full_path, 0u) << stats.last_fallback;
  ASSERT_TRUE(fresh->Apply(a, {}).ok());
  ASSERT_NO_FATAL_FAILURE(ExpectListsAsFresh(netns, "named again"));
  // And an Update (whole programs) after policy deltas starts from `previous`'s program.
  ASSERT_TRUE(incremental->Update(a, b, there).ok());
  ASSERT_TRUE(SettleCleanups(*incremental).ok());
  ASSERT_TRUE(fresh->Apply(b, {}).ok());
  ASSERT_NO_FATAL_FAILURE(ExpectListsAsFresh(netns, DeltaStatsOf(*incremental).last_update));
  EXPECT_EQ(DeltaStatsOf(*incremental).update_in_place, 1u) << DeltaStatsOf(*incremental).last_update;
  // Remove leaves nothing, pending retirement or not.
  ASSERT_TRUE(incremental->Remove(there).ok());
  EXPECT_FALSE(RunCommand({"nft", "list", "table", "inet", kTableName}, "", netns).ok());
  ASSERT_TRUE(fresh->Remove({}).ok());
}

// Seeded random sequences of policy events as deltas (NP_NFT_POLICY_DELTA_SEED replays
// one), several deltas in a row on the index (every fourth step an Update of whole programs,
// which must start from `previous`'s program): after each, the namespace lists as a fresh
// Apply of the same IR; a floor of them went in place.
TEST_F(NftKernelTest, RandomPolicyDeltasEqualAFreshApply) {
  ScratchNetns scratch(absl::StrCat("h50-rdelta-", getpid()));
  ASSERT_TRUE(scratch.ok);
  const std::string& netns = scratch.name;
  const uint64_t seed = SeedFromEnv("NP_NFT_POLICY_DELTA_SEED", 20261202);
  SCOPED_TRACE(absl::StrCat("NP_NFT_POLICY_DELTA_SEED=", seed));
  std::mt19937_64 rng(seed);
  std::mt19937 ir_rng(static_cast<uint32_t>(seed));
  std::unique_ptr<Backend> incremental = MakeNftBackend();
  std::unique_ptr<Backend> fresh = MakeNftBackend();
  const Attachment there{{}, netns};
  int deltas = 0, in_place = 0;
  std::map<std::string, int> fallbacks;
  for (int run = 0; run < 10; ++run) {
    ir::CompiledPolicy current = RandomIr(ir_rng);
    ASSERT_TRUE(incremental->Apply(current, there).ok());
    for (int step = 0; step < 10; ++step) {
      ir::CompiledPolicy next = current;
      const std::string what = RandomPolicyEvent(rng, next);
      SCOPED_TRACE(absl::StrCat("run ", run, " step ", step, ": ", what));
      ASSERT_TRUE(CheckIr(next).ok()) << CheckIr(next);
      // No delta when an identity was appended: then an Update too.
      std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(current, next);
      const DeltaStats before = DeltaStatsOf(*incremental);
      if (step % 4 == 3 || !delta.has_value()) {
        ASSERT_TRUE(incremental->Update(current, next, there).ok());
      } else {
        ASSERT_TRUE(incremental->UpdateDelta(current, *delta, there).ok());
        const DeltaStats after = DeltaStatsOf(*incremental);
        ++deltas;
        if (after.policy_in_place > before.policy_in_place) {
          ++in_place;
        } else if (after.in_place == before.in_place) {
          std::string why = after.last_fallback;
          why.erase(std::remove_if(why.begin(), why.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }), why.end());
          ++fallbacks[why.substr(0, 50)];
        }
      }
      ASSERT_TRUE(fresh->Apply(next, {}).ok());
      ASSERT_TRUE(SettleCleanups(*incremental).ok());
      ASSERT_NO_FATAL_FAILURE(ExpectListsAsFresh(netns, DeltaStatsOf(*incremental).last_fallback));
      current = std::move(next);
    }
  }
  std::cerr << "random policy deltas: " << deltas << " deltas, " << in_place << " in place\n";
  for (const auto& [why, n] : fallbacks) std::cerr << "  " << n << "x " << why << "\n";
  EXPECT_GE(3 * in_place, deltas) << "a third or more in place";
  ASSERT_TRUE(incremental->Remove(there).ok());
  ASSERT_TRUE(fresh->Remove({}).ok());
}

// ---- Pod deltas that bring or retire a table (UpdateDelta: PlanPodTableDelta) -----------

// ChurnIr's program with `slots` more tables (ids 2, 3, ...) for local pods of classes new to
// the node, numbered as a pod delta numbers them (np/lower_delta.h, np/lower_align.h): a slot
// no selected endpoint names is a tombstone, and so is the peer set (id 1 + table) its rules
// would name. A slot's rules: ingress TCP 8080 from its own set, and egress UDP 53 to set 2
// for even slots. The first slot's set names identities no other rule names (6, 8): the
// first pod of that class brings identity chains (its own identity's among them, when the
// pod is of identity 6), the last one leaving retires them.
ir::CompiledPolicy PodTableIr(const std::vector<ChurnPod>& pods, uint32_t slots) {
  ir::CompiledPolicy ir = ChurnIr(pods);
  const std::vector<std::vector<uint32_t>> sets = {{6, 8}, {2, 4, 6, 8, 10}, {1, 8}};
  for (uint32_t s = 0; s < slots; ++s) {
    const uint32_t table = 2 + s;
    const bool used = std::any_of(pods.begin(), pods.end(), [&](const ChurnPod& p) {
      return p.local && p.selected && p.table == table;
    });
    const ir::PeerSet* set = AddPeerSet(ir, used ? sets[s % sets.size()] : std::vector<uint32_t>{});
    ir::Table* t = AppendTable(ir);
    if (!used) continue;
    t->add_policies(absl::StrCat("ns/class-", table));
    AddRule(t->mutable_ingress(), ir::TCP, 8080, 8080, set->id());
    if (s % 2 == 0) AddRule(t->mutable_egress(), ir::UDP, 53, 53, 2);
  }
  return ir;
}

// The tables PodTableIr needs for `pods`, at least `slots` (tables are never dropped: they
// become tombstones).
uint32_t SlotsFor(const std::vector<ChurnPod>& pods, uint32_t slots) {
  for (const ChurnPod& p : pods) {
    if (p.local && p.selected && p.table >= 2) slots = std::max(slots, p.table - 1);
  }
  return slots;
}

// One random pod event on PodTableIr's pods: a pod starts (at a free address, of identity
// 1-10; local, in one of five tables, with probability `local` in 4) or a pod stops.
// Returns what happened.
std::string RandomPodTableEvent(std::mt19937_64& rng, int local, std::vector<ChurnPod>* pods,
                                int* name) {
  if (rng() % 5 < 3 || pods->empty()) {
    std::set<uint32_t> used;
    for (const ChurnPod& p : *pods) used.insert(p.address);
    uint32_t address = 1 + rng() % 60;
    while (used.count(address) > 0) address = 1 + address % 60;
    ChurnPod p{absl::StrCat("e/p", (*name)++), static_cast<uint32_t>(1 + rng() % 10), address};
    p.local = static_cast<int>(rng() % 4) < local;
    p.selected = p.local;
    p.table = static_cast<uint32_t>(rng() % 5);
    pods->push_back(p);
    return absl::StrCat("add ", p.name, p.local ? absl::StrCat(" in table ", p.table) : "", "; ");
  }
  const size_t i = rng() % pods->size();
  const std::string what = absl::StrCat("delete ", (*pods)[i].name, "; ");
  pods->erase(pods->begin() + static_cast<long>(i));
  return what;
}

// One pod event (or a batch) from `from` to `to` as DiffPrograms' delta through UpdateDelta
// on `incremental` (installed: `from`): the namespace then lists as a fresh Apply of
// ApplyDelta(from, delta). Returns the backend's stats before and after the call.
std::pair<DeltaStats, DeltaStats> ExpectDeltaListsAsFresh(Backend& incremental, Backend& fresh,
                                                          const std::string& netns,
                                                          const ir::CompiledPolicy& from,
                                                          const ir::CompiledPolicy& to) {
  EXPECT_TRUE(CheckIr(to).ok()) << CheckIr(to);
  std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(from, to);
  EXPECT_TRUE(delta.has_value());
  const DeltaStats before = DeltaStatsOf(incremental);
  if (!delta.has_value()) return {before, before};
  ir::CompiledPolicy applied = from;
  EXPECT_TRUE(ApplyDelta(*delta, &applied).ok());
  EXPECT_TRUE(incremental.UpdateDelta(from, *delta, {{}, netns}).ok());
  const DeltaStats after = DeltaStatsOf(incremental);
  // In place means no whole-program Update underneath.
  EXPECT_EQ(after.update_in_place + after.update_switch + after.update_elements,
            before.update_in_place + before.update_switch + before.update_elements +
                (after.in_place > before.in_place ? 0 : 1));
  EXPECT_TRUE(fresh.Apply(applied, {}).ok());
  EXPECT_TRUE(SettleCleanups(incremental).ok());
  ExpectListsAsFresh(netns, after.in_place > before.in_place ? "in place" : after.last_fallback);
  return {before, after};
}

// The same; returns whether it went in place as a pod delta with tables.
bool ExpectPodTableDelta(Backend& incremental, Backend& fresh, const std::string& netns,
                         const ir::CompiledPolicy& from, const ir::CompiledPolicy& to) {
  const auto [before, after] = ExpectDeltaListsAsFresh(incremental, fresh, netns, from, to);
  return after.pod_table_in_place > before.pod_table_in_place;
}

// The frame of the hand-written kernel sequences below: a scratch namespace (`netns_prefix`
// and the pid) with `start` applied, then step i's program (`program(i)`, i < `steps`,
// traced as `what(i)`) through UpdateDelta from the one before (ExpectDeltaListsAsFresh: it
// lists as a fresh Apply); `check(i, stats before, stats after, incremental)` asserts what
// the step's path was. One frame so that each test states only its steps and expectations.
void RunDeltaSteps(
    const std::string& netns_prefix, ir::CompiledPolicy start, size_t steps,
    const std::function<std::string(size_t)>& what,
    const std::function<ir::CompiledPolicy(size_t)>& program,
    const std::function<void(size_t, const DeltaStats&, const DeltaStats&, Backend&)>& check) {
  ScratchNetns scratch(absl::StrCat(netns_prefix, getpid()));
  ASSERT_TRUE(scratch.ok);
  const std::string& netns = scratch.name;
  std::unique_ptr<Backend> incremental = MakeNftBackend();
  std::unique_ptr<Backend> fresh = MakeNftBackend();
  ir::CompiledPolicy current = std::move(start);
  ASSERT_TRUE(incremental->Apply(current, {{}, netns}).ok());
  for (size_t i = 0; i < steps; ++i) {
    SCOPED_TRACE(what(i));
    ir::CompiledPolicy next = program(i);
    const auto [before, after] = ExpectDeltaListsAsFresh(*incremental, *fresh, netns, current, next);
    if (::testing::Test::HasFatalFailure()) return;
    check(i, before, after, *incremental);
    current = std::move(next);
  }
  ASSERT_TRUE(incremental->Remove({{}, netns}).ok());
  ASSERT_TRUE(fresh->Remove({}).ok());
}

// `pods` with `add` appended and the pods named in `remove` taken out (a step's pod edits).
void EditPods(std::vector<ChurnPod>* pods, const std::vector<ChurnPod>& add,
              const std::vector<std::string>& remove) {
  for (const ChurnPod& p : add) pods->push_back(p);
  for (const std::string& name : remove) {
    pods->erase(std::remove_if(pods->begin(), pods->end(),
                               [&](const ChurnPod& p) { return p.name == name; }),
                pods->end());
  }
}

// The issue's events by hand: the first pod of a class new to the node (its table appended,
// then a tombstone reused), the last one leaving, and back; a second class; a pod of a class
// whose table is there (a plain pod delta); a new class's pod with a pod delete in one batch.
TEST_F(NftKernelTest, PodDeltasWithTablesInPlaceEqualAFreshApply) {
  const ChurnPod first{"d/new", 6, 30, true, true, 2};
  const ChurnPod second{"d/new-2", 9, 31, true, true, 3};
  const ChurnPod same_class{"d/new-3", 8, 32, true, true, 2};
  const ChurnPod batch_new{"d/new-4", 2, 33, true, true, 4};
  struct Step {
    std::string what;
    std::vector<ChurnPod> add;
    std::vector<std::string> remove;
    bool pod_table_in_place;
  };
  const std::vector<Step> steps = {
      {"first pod of a new class: its table appended", {first}, {}, true},
      {"its last pod leaves: table and peer set become tombstones", {}, {"d/new"}, true},
      {"and back: the tombstones reused", {first}, {}, true},
      {"a second new class (a named peer set)", {second}, {}, true},
      {"a pod of a class whose table is there (no table in the delta)", {same_class}, {}, false},
      {"a new class's pod and a pod delete in one batch (two addresses)", {batch_new},
       {"a/web-1"}, false},
      {"a class's only pod leaves (table 4 retired)", {}, {"d/new-4"}, true},
      {"the second class's pod leaves", {}, {"d/new-2"}, true},
      {"a pod of table 2 leaves, one stays", {}, {"d/new-3"}, false},
      {"table 2's last pod leaves: identities 6, 8 retire", {}, {"d/new"}, true},
  };
  std::vector<ChurnPod> pods = ChurnBase();
  uint32_t slots = 0;
  RunDeltaSteps(
      "h56-ptab-", PodTableIr(pods, slots), steps.size(), [&](size_t i) { return steps[i].what; },
      [&](size_t i) {
        EditPods(&pods, steps[i].add, steps[i].remove);
        slots = SlotsFor(pods, slots);
        return PodTableIr(pods, slots);
      },
      [&](size_t i, const DeltaStats& before, const DeltaStats& after, Backend&) {
        const Step& step = steps[i];
        EXPECT_EQ(after.pod_table_in_place > before.pod_table_in_place, step.pod_table_in_place)
            << after.last_fallback;
        if (!step.pod_table_in_place && step.add.size() + step.remove.size() == 1) {
          // One pod of a table that stays: PlanDeltaUpdate's element edits.
          EXPECT_EQ(after.in_place, before.in_place + 1);
        }
      });
}

// Which pod events' commits make the kernel validate the whole table (netlink.h
// MarksTableForValidation: an added jump element or rule), counted on the batches UpdateDelta
// sends: the census behind issue 13's nft pod-event cost at 1,000 endpoints. With today's
// program every pod event adds a jump element to identity4/6 (an address's new identity, or
// id_other for one that goes: the neighbouring pieces merge back under a jump) and a local
// endpoint's also to a dispatch map; only dispatch deletions and deferred chain deletions
// commit without one. A ruleset shape that takes pod events off the validation (nft.h: why
// nft 1.0.6 leaves none) must turn the `validating` column below to 0.
TEST_F(NftKernelTest, PodEventCommitsThatMarkTheTableForValidation) {
  struct Step {
    std::string what;
    std::vector<ChurnPod> add;
    std::vector<std::string> remove;
    uint64_t commits, validating;  // the event's in-place commits, deferred ones included
  };
  const std::vector<Step> steps = {
      {"another node's pod comes", {{"c/z", 7, 22, false}}, {}, 1, 1},
      {"it goes", {}, {"c/z"}, 1, 1},
      {"a pod of this node comes (its table is there)", {{"a/web-3", 1, 8, true, true, 0}}, {}, 2, 2},
      {"it goes", {}, {"a/web-3"}, 2, 1},
  };
  std::vector<ChurnPod> pods = ChurnBase();
  RunDeltaSteps(
      "h75-val-", ChurnIr(pods), steps.size(), [&](size_t i) { return steps[i].what; },
      [&](size_t i) {
        EditPods(&pods, steps[i].add, steps[i].remove);
        return ChurnIr(pods);
      },
      [&](size_t i, const DeltaStats& before, const DeltaStats& after, Backend& incremental) {
        EXPECT_GT(after.in_place, before.in_place) << after.last_fallback;
        // After the listing's SettleCleanups: the deferred commits count too.
        const DeltaStats settled = DeltaStatsOf(incremental);
        const uint64_t commits = settled.in_place_commits - before.in_place_commits;
        const uint64_t validating = settled.validating_commits - before.validating_commits;
        std::cerr << steps[i].what << ": " << commits << " in-place commits, " << validating
                  << " marking the table for validation\n";
        EXPECT_EQ(commits, steps[i].commits);
        EXPECT_EQ(validating, steps[i].validating);
      });
}

// The frame of the seeded random kernel sequences below: `runs` runs of `steps` steps on a
// scratch namespace, each run from a fresh Apply of start(); a step takes `event` (which
// changes the caller's state and says what it did) and the state's program(); every fifth
// step is an Update of whole programs, which must start from what the deltas left (the
// namespace then lists as a fresh Apply), the others go to `delta` (an UpdateDelta, checked
// by the caller). `seed_env` replays a sequence (the seed is printed on failure).
struct RandomKernelSequence {
  std::string netns;
  const char* seed_env;
  int runs = 0, steps = 0;
  std::function<ir::CompiledPolicy()> start;  // a run's first program (the state reset)
  std::function<std::string(std::mt19937_64&)> event;
  std::function<ir::CompiledPolicy()> program;
  std::function<void(Backend& incremental, Backend& fresh, const std::string& netns,
                     const ir::CompiledPolicy& from, const ir::CompiledPolicy& to)>
      delta;
};
void RunRandomKernelSequence(const RandomKernelSequence& r) {
  ScratchNetns scratch(absl::StrCat(r.netns, getpid()));
  ASSERT_TRUE(scratch.ok);
  const std::string& netns = scratch.name;
  const uint64_t seed = SeedFromEnv(r.seed_env, 20261201);
  SCOPED_TRACE(absl::StrCat(r.seed_env, "=", seed));
  std::mt19937_64 rng(seed);
  std::unique_ptr<Backend> incremental = MakeNftBackend();
  std::unique_ptr<Backend> fresh = MakeNftBackend();
  for (int run = 0; run < r.runs; ++run) {
    ir::CompiledPolicy current = r.start();
    ASSERT_TRUE(incremental->Apply(current, {{}, netns}).ok());
    for (int step = 0; step < r.steps; ++step) {
      const std::string what = r.event(rng);
      SCOPED_TRACE(absl::StrCat("run ", run, " step ", step, ": ", what));
      ir::CompiledPolicy next = r.program();
      if (step % 5 == 4) {
        ASSERT_TRUE(incremental->Update(current, next, {{}, netns}).ok());
        ASSERT_TRUE(fresh->Apply(next, {}).ok());
        ASSERT_TRUE(SettleCleanups(*incremental).ok());
        ASSERT_NO_FATAL_FAILURE(ExpectListsAsFresh(netns, DeltaStatsOf(*incremental).last_update));
      } else {
        r.delta(*incremental, *fresh, netns, current, next);
        if (::testing::Test::HasFatalFailure()) return;
      }
      current = std::move(next);
    }
  }
  ASSERT_TRUE(incremental->Remove({{}, netns}).ok());
  ASSERT_TRUE(fresh->Remove({}).ok());
}

// Seeded random sequences of pod events on PodTableIr programs (NP_NFT_POD_TABLE_SEED replays
// one): local pods of five classes (tables 0 and 1 are always there; 2-4 come with their
// first pod and go with their last), remote pods, deletes, and batches of two. After each
// delta the namespace lists as a fresh Apply of ApplyDelta(previous, delta), and each one
// that brings or retires a table with one pod went in place (in one commit unless the plan
// says why not: nft.h PlanPodTableDelta); every fifth step is an Update of whole programs.
TEST_F(NftKernelTest, RandomPodDeltasWithTablesEqualAFreshApply) {
  int with_tables = 0, in_place = 0, single = 0, one_commit = 0, name = 0, events = 1;
  std::map<std::string, int> fallbacks, two_commits;
  std::vector<ChurnPod> pods;
  uint32_t slots = 0;
  // Every other run, no rule names identity 0 (the world, which free addresses are): an
  // endpoint coming then takes one commit (its address was id_other's), else two.
  bool world_named = false;
  auto program = [&] {
    ir::CompiledPolicy ir = PodTableIr(pods, slots);
    if (!world_named) SetIdentities(ir.mutable_peer_sets(2), {4});
    return ir;
  };
  RandomKernelSequence r;
  r.netns = "h56-rptab-";
  r.seed_env = "NP_NFT_POD_TABLE_SEED";
  r.runs = 10;
  r.steps = 20;
  r.start = [&] {
    pods = ChurnBase();
    slots = 0;
    world_named = !world_named;
    return program();
  };
  r.event = [&](std::mt19937_64& rng) {
    std::string what;
    events = rng() % 4 == 0 ? 2 : 1;
    for (int e = 0; e < events; ++e) what += RandomPodTableEvent(rng, 3, &pods, &name);
    slots = SlotsFor(pods, slots);
    return what;
  };
  r.program = program;
  r.delta = [&](Backend& incremental, Backend& fresh, const std::string& netns,
                const ir::CompiledPolicy& current, const ir::CompiledPolicy& next) {
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(current, next);
    ASSERT_TRUE(delta.has_value());
    const bool tables = !delta->tables().empty();
    const uint64_t one_before = DeltaStatsOf(incremental).pod_table_one_commit;
    const bool went = ExpectPodTableDelta(incremental, fresh, netns, current, next);
    if (::testing::Test::HasFatalFailure()) return;
    const DeltaStats stats = DeltaStatsOf(incremental);
    with_tables += tables ? 1 : 0;
    in_place += went ? 1 : 0;
    if (tables && !went) ++fallbacks[stats.last_fallback.substr(0, 60)];
    if (went && stats.pod_table_one_commit > one_before) ++one_commit;
    if (went && stats.pod_table_one_commit == one_before) ++two_commits[stats.last_two_commits.substr(0, 60)];
    EXPECT_TRUE(!went || tables);
    // One pod that brings or retires a table: in place (a batch of two changes two
    // addresses of a family, which the pod part refuses as PlanDeltaUpdate does).
    if (tables && events == 1) {
      ++single;
      EXPECT_TRUE(went) << stats.last_fallback;
    }
  };
  RunRandomKernelSequence(r);
  if (HasFatalFailure()) return;
  std::cerr << "random pod deltas: " << with_tables << " with tables (" << single
            << " of one pod), " << in_place << " in place, " << one_commit << " in one commit\n";
  for (const auto& [why, n] : fallbacks) std::cerr << "  " << n << "x " << why << "\n";
  for (const auto& [why, n] : two_commits) std::cerr << "  two commits " << n << "x: " << why << "\n";
  EXPECT_GE(single, 5);
  EXPECT_GE(one_commit, 3);
}

// The index fields UpdateDelta plans from, side by side (for EXPECT_EQ).
std::string IndexText(const DeltaIndex& x) {
  std::string out = absl::StrCat("elements ", x.elements, " rules ", x.rules, " miss_drops ",
                                 x.miss_drops, "\nreferenced");
  for (uint32_t i : x.referenced) absl::StrAppend(&out, " ", i);
  absl::StrAppend(&out, "\nchains");
  for (const auto& [t, d] : x.chains) absl::StrAppend(&out, " ", t, "/", d);
  absl::StrAppend(&out, "\nselected ", absl::StrJoin(x.selected, " "), "\nidentity refs");
  for (const auto& [i, n] : x.identity_refs) absl::StrAppend(&out, " ", i, ":", n);
  absl::StrAppend(&out, "\nusers");
  for (const auto& [p, users] : x.users) {
    absl::StrAppend(&out, " ", p, ":");
    for (const auto& [t, d] : users) absl::StrAppend(&out, t, "/", d, ",");
  }
  for (int f = 0; f < 2; ++f) {
    absl::StrAppend(&out, "\nidentity", f);
    for (const auto& [first, piece] : x.identity[f]) {
      absl::StrAppend(&out, " ", AddressText(first), "-", AddressText(piece.last), ":",
                      piece.target);
    }
    for (int d = 0; d < 2; ++d) {
      absl::StrAppend(&out, "\ndispatch", d, f);
      for (const auto& [a, t] : x.dispatch[d][f]) {
        absl::StrAppend(&out, " ", AddressText(a), ":", t);
      }
    }
  }
  return out + "\n";
}

// PlanPodTableDelta on seeded random pod events (NP_NFT_POD_TABLE_SEED, as the kernel test
// above): planning leaves the index as it was (its undo), and the plan's two edits applied
// make it the index a full install of ApplyDelta(previous, delta) would build (MakeDeltaIndex:
// the oracle), so the next delta plans from the truth.
TEST(NftDeltaPlan, PodTableEditsReachTheIndexOfTheNextProgram) {
  const uint64_t seed = SeedFromEnv("NP_NFT_POD_TABLE_SEED", 20261201);
  SCOPED_TRACE(absl::StrCat("NP_NFT_POD_TABLE_SEED=", seed));
  std::mt19937_64 rng(seed);
  int planned = 0, name = 0;
  for (int run = 0; run < 20; ++run) {
    std::vector<ChurnPod> pods = ChurnBase();
    uint32_t slots = 0;
    ir::CompiledPolicy current = PodTableIr(pods, slots);
    absl::StatusOr<DeltaIndex> index = MakeDeltaIndex(current, 1);
    ASSERT_TRUE(index.ok()) << index.status();
    for (int step = 0; step < 16; ++step) {
      const std::string what = RandomPodTableEvent(rng, 4, &pods, &name);
      SCOPED_TRACE(absl::StrCat("run ", run, " step ", step, ": ", what));
      slots = SlotsFor(pods, slots);
      ir::CompiledPolicy next = PodTableIr(pods, slots);
      std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(current, next);
      ASSERT_TRUE(delta.has_value());
      ir::CompiledPolicy applied = current;
      ASSERT_TRUE(ApplyDelta(*delta, &applied).ok());
      absl::StatusOr<DeltaIndex> truth = MakeDeltaIndex(applied, 1);
      ASSERT_TRUE(truth.ok()) << truth.status();
      const std::string before = IndexText(*index);
      if (!delta->tables().empty()) {
        const PodTablePlan plan = PlanPodTableDelta(&*index, current, *delta);
        ASSERT_EQ(IndexText(*index), before) << "planning changed the index";
        if (plan.fallback.empty()) {
          ++planned;
          ApplyIndexEdit(plan.tables_first ? plan.tables_edit : plan.pods_edit, &*index);
          ApplyIndexEdit(plan.tables_first ? plan.pods_edit : plan.tables_edit, &*index);
          ASSERT_EQ(IndexText(*index), IndexText(*truth));
        } else {
          *index = *std::move(truth);  // the full path installs `applied`
        }
      } else {
        *index = *std::move(truth);
      }
      current = std::move(applied);
    }
  }
  std::cerr << "pod-table plans checked against MakeDeltaIndex: " << planned << "\n";
  EXPECT_GE(planned, 40);
}

// Policies that split an identity (a delta appending an identity for some pods and naming it
// in a new rule), through UpdateDelta: PlanSplitDelta's one transaction when the split pod's
// old identity is id_other (d/z, identity 6, which no peer set names), else the default path
// (a/web-1 leaves identity 1, which peer sets name: both rule sets tell the two apart). Each
// plan's index edits make the index of a fresh install (MakeDeltaIndex: the oracle), and the
// namespace lists as a fresh Apply.
TEST_F(NftKernelTest, SplittingPoliciesInPlaceEqualAFreshApply) {
  ScratchNetns scratch(absl::StrCat("h69-split-", getpid()));
  ASSERT_TRUE(scratch.ok);
  const std::string& netns = scratch.name;
  std::unique_ptr<Backend> incremental = MakeNftBackend();
  std::unique_ptr<Backend> fresh = MakeNftBackend();
  const Attachment there{{}, netns};
  struct Case {
    std::string pod;
    bool in_place;
  };
  for (const Case& c : {Case{"d/z", true}, Case{"a/web-1", false}}) {
    SCOPED_TRACE(c.pod);
    const ir::CompiledPolicy from = PolicyBase();
    ir::CompiledPolicy to = from;
    const uint32_t id = MovePodToNewIdentity(to, c.pod);
    const ir::PeerSet* set = AddPeerSet(to, {id});
    AddRule(to.mutable_tables(1)->mutable_ingress(), ir::TCP, 7777, 7777, set->id());
    ASSERT_TRUE(CheckIr(to).ok()) << CheckIr(to);
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(from, to);
    ASSERT_TRUE(delta.has_value());
    ASSERT_EQ(delta->identities_size(), 1);
    ASSERT_FALSE(delta->tables().empty());
    ir::CompiledPolicy applied = from;
    ASSERT_TRUE(ApplyDelta(*delta, &applied).ok());
    // The planner alone: the index as a fresh install of `applied` has it.
    absl::StatusOr<DeltaIndex> index = MakeDeltaIndex(from, 1), truth = MakeDeltaIndex(applied, 1);
    ASSERT_TRUE(index.ok() && truth.ok());
    const std::string before = IndexText(*index);
    const PodTablePlan plan = PlanSplitDelta(&*index, from, *delta);
    ASSERT_EQ(IndexText(*index), before) << "planning changed the index";
    EXPECT_EQ(plan.fallback.empty(), c.in_place) << plan.fallback;
    if (plan.fallback.empty()) {
      ApplyIndexEdit(plan.tables_edit, &*index);
      ApplyIndexEdit(plan.pods_edit, &*index);
      EXPECT_EQ(IndexText(*index), IndexText(*truth));
    }
    // The kernel.
    ASSERT_TRUE(incremental->Apply(from, there).ok());
    const DeltaStats stats_before = DeltaStatsOf(*incremental);
    ASSERT_TRUE(incremental->UpdateDelta(from, *delta, there).ok());
    const DeltaStats after = DeltaStatsOf(*incremental);
    EXPECT_EQ(after.split_in_place - stats_before.split_in_place, c.in_place ? 1u : 0u)
        << after.last_fallback;
    EXPECT_EQ(after.update_in_place + after.update_switch + after.update_elements ==
                  stats_before.update_in_place + stats_before.update_switch +
                      stats_before.update_elements,
              c.in_place);
    ASSERT_TRUE(fresh->Apply(applied, {}).ok());
    ASSERT_TRUE(SettleCleanups(*incremental).ok());
    ASSERT_NO_FATAL_FAILURE(ExpectListsAsFresh(netns, c.in_place ? "split in place" : after.last_fallback));
  }
  ASSERT_TRUE(incremental->Remove(there).ok());
  ASSERT_TRUE(fresh->Remove({}).ok());
}

// ---- Relabels: identities appended, reused, retired (PlanIdentityDelta) ------------------
// ChurnIr's program where a pod may be of an identity past ChurnIr's eleven: a class of its
// own, as a relabel into a label set no address had makes one (np/lower_delta.h). Those
// identities are appended in id order, `extra` of them; one whose pods are all gone stays as
// an unused identity (no pods, in no range or peer set: np/lower_align.h). While it has
// pods, identity i is in ChurnIr's named peer set 1 when i % 3 == 0, in the inline set 0
// when i % 3 == 1, in none when i % 3 == 2.
ir::CompiledPolicy RelabelIr(std::vector<ChurnPod> pods, uint32_t extra) {
  std::map<std::string, uint32_t> own;  // pod -> its identity past ChurnIr's
  for (ChurnPod& p : pods) {
    if (p.identity < kChurnIdentities) continue;
    own[p.name] = p.identity;
    p.identity = 0;
  }
  ir::CompiledPolicy ir = ChurnIr(pods);
  auto* zero = ir.mutable_identities(0)->mutable_pods();
  zero->erase(std::remove_if(zero->begin(), zero->end(),
                             [&](const std::string& pod) { return own.count(pod) > 0; }),
              zero->end());
  for (uint32_t i = 0; i < extra; ++i) {
    ir::Identity* id = ir.add_identities();
    id->set_id(kChurnIdentities + i);
  }
  for (const auto& [pod, id] : own) ir.mutable_identities(static_cast<int>(id))->add_pods(pod);
  for (auto* ranges : {ir.mutable_ipv4(), ir.mutable_ipv6()}) {
    for (ir::AddressRange& r : *ranges) {
      auto it = own.find(r.pod());
      if (it != own.end()) r.set_identity(it->second);
    }
  }
  for (uint32_t i = kChurnIdentities; i < kChurnIdentities + extra; ++i) {
    if (ir.identities(static_cast<int>(i)).pods_size() == 0 || i % 3 == 2) continue;
    ir::PeerSet* set = ir.mutable_peer_sets(i % 3 == 0 ? 1 : 0);
    std::vector<uint32_t> ids(set->identities().begin(), set->identities().end());
    ids.push_back(i);
    SetIdentities(set, ids);
  }
  return ir;
}

// One random event on RelabelIr's pods: a pod relabelled into a class of its own (the lowest
// unused identity past ChurnIr's, else a new one appended: `*extra` grows), into one of
// ChurnIr's classes, or a remote pod added or deleted. Returns what happened.
std::string RandomRelabelEvent(std::mt19937_64& rng, std::vector<ChurnPod>* pods,
                               uint32_t* extra, int* name) {
  const int kind = static_cast<int>(rng() % 6);
  if (kind == 5 || pods->empty()) {
    std::set<uint32_t> used;
    for (const ChurnPod& p : *pods) used.insert(p.address);
    uint32_t address = 1 + rng() % 60;
    while (used.count(address) > 0) address = 1 + address % 60;
    ChurnPod p{absl::StrCat("e/r", (*name)++), static_cast<uint32_t>(1 + rng() % 10), address};
    pods->push_back(p);
    return absl::StrCat("add ", p.name, "; ");
  }
  ChurnPod& p = (*pods)[rng() % pods->size()];
  if (kind == 4) {
    const std::string what = absl::StrCat("delete ", p.name, "; ");
    pods->erase(pods->begin() + (&p - pods->data()));
    return what;
  }
  if (kind == 3) {
    p.identity = static_cast<uint32_t>(1 + rng() % 10);
    return absl::StrCat("relabel ", p.name, " into class ", p.identity, "; ");
  }
  std::set<uint32_t> taken;
  for (const ChurnPod& q : *pods) taken.insert(q.identity);
  uint32_t id = kChurnIdentities;
  while (id < kChurnIdentities + *extra && (taken.count(id) > 0 || id == p.identity)) ++id;
  if (id == kChurnIdentities + *extra) ++*extra;
  p.identity = id;
  return absl::StrCat("relabel ", p.name, " into a class of its own, identity ", id, "; ");
}

// PlanIdentityDelta on seeded random relabels (NP_NFT_RELABEL_SEED replays one): planning
// leaves the index as it was, and the plan's three edits applied make it the index a full
// install of ApplyDelta(previous, delta) builds (MakeDeltaIndex: the oracle). Every delta of
// one relabel into a class of its own (an identity appended or reused) is planned.
TEST(NftDeltaPlan, IdentityEditsReachTheIndexOfTheNextProgram) {
  const uint64_t seed = SeedFromEnv("NP_NFT_RELABEL_SEED", 20261201);
  SCOPED_TRACE(absl::StrCat("NP_NFT_RELABEL_SEED=", seed));
  std::mt19937_64 rng(seed);
  int planned = 0, appended = 0, name = 0;
  for (int run = 0; run < 20; ++run) {
    std::vector<ChurnPod> pods = ChurnBase();
    uint32_t extra = 0;
    ir::CompiledPolicy current = RelabelIr(pods, extra);
    absl::StatusOr<DeltaIndex> index = MakeDeltaIndex(current, 1);
    ASSERT_TRUE(index.ok()) << index.status();
    for (int step = 0; step < 16; ++step) {
      const std::string what = RandomRelabelEvent(rng, &pods, &extra, &name);
      SCOPED_TRACE(absl::StrCat("run ", run, " step ", step, ": ", what));
      ir::CompiledPolicy next = RelabelIr(pods, extra);
      ASSERT_TRUE(CheckIr(next).ok()) << CheckIr(next);
      std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(current, next);
      ASSERT_TRUE(delta.has_value());
      ir::CompiledPolicy applied = current;
      ASSERT_TRUE(ApplyDelta(*delta, &applied).ok());
      absl::StatusOr<DeltaIndex> truth = MakeDeltaIndex(applied, 1);
      ASSERT_TRUE(truth.ok()) << truth.status();
      const std::string before = IndexText(*index);
      if (!delta->identities().empty() || !delta->peer_sets().empty()) {
        const IdentityPlan plan = PlanIdentityDelta(&*index, current, *delta);
        ASSERT_EQ(IndexText(*index), before) << "planning changed the index";
        // A local pod coming or going (an endpoint in the delta) is not this planner's.
        ASSERT_EQ(plan.fallback.empty(), delta->endpoints().empty()) << plan.fallback;
        if (!plan.fallback.empty()) {
          *index = *std::move(truth);
          current = std::move(applied);
          continue;
        }
        ++planned;
        appended += delta->identities_size() > 0 ? 1 : 0;
        // The states between the commits, built from the delta here (nft.h): after the gains,
        // `current` with the appended identities and each peer set old ∪ new; after the
        // addresses, `applied` with those sets. Each is what its edit leaves the index at,
        // and gives every flow both programs agree on that verdict.
        ir::CompiledPolicy gained = current, moved = applied;
        for (const ir::Identity& i : delta->identities()) gained.add_identities()->set_id(i.id());
        for (const ir::PeerSet& next_set : delta->peer_sets()) {
          std::vector<uint32_t> both(next_set.identities().begin(), next_set.identities().end());
          if (next_set.id() < static_cast<uint32_t>(current.peer_sets_size())) {
            const ir::PeerSet& old = current.peer_sets(static_cast<int>(next_set.id()));
            both.insert(both.end(), old.identities().begin(), old.identities().end());
          } else {
            *gained.add_peer_sets() = next_set;
          }
          both.erase(std::unique((std::sort(both.begin(), both.end()), both.begin()), both.end()),
                     both.end());
          SetIdentities(gained.mutable_peer_sets(static_cast<int>(next_set.id())), both);
          SetIdentities(moved.mutable_peer_sets(static_cast<int>(next_set.id())), both);
        }
        const std::vector<const DeltaIndexEdit*> edits = {&plan.gains_edit, &plan.pods_edit,
                                                          &plan.losses_edit};
        const std::vector<const ir::CompiledPolicy*> states = {&gained, &moved, &applied};
        for (size_t k = 0; k < edits.size(); ++k) {
          SCOPED_TRACE(absl::StrCat("after edit ", k));
          ApplyIndexEdit(*edits[k], &*index);
          absl::StatusOr<DeltaIndex> want = MakeDeltaIndex(*states[k], 1);
          ASSERT_TRUE(want.ok()) << want.status();
          ASSERT_EQ(IndexText(*index), IndexText(*want));
        }
        std::vector<std::string> ends;
        for (const ChurnPod& p : pods) ends.push_back(ChurnAddress(0, p.address));
        ends.push_back(ChurnAddress(0, 59));  // an external address (identity 0)
        for (const std::string& from : ends) {
          for (const std::string& to : ends) {
            for (const auto& [protocol, port] : {std::pair{6, 80u}, {17, 53u}, {6, 443u}}) {
              const bool old_verdict = IrAllows(current, from, to, protocol, port);
              if (old_verdict != IrAllows(applied, from, to, protocol, port)) continue;
              ASSERT_EQ(IrAllows(gained, from, to, protocol, port), old_verdict)
                  << "after the gains: " << AddressText(from) << " -> " << AddressText(to) << " " << port;
              ASSERT_EQ(IrAllows(moved, from, to, protocol, port), old_verdict)
                  << "after the addresses: " << AddressText(from) << " -> " << AddressText(to) << " " << port;
            }
          }
        }
      } else {
        *index = *std::move(truth);
      }
      current = std::move(applied);
    }
  }
  std::cerr << "identity plans checked against MakeDeltaIndex: " << planned << " ("
            << appended << " appending)\n";
  EXPECT_GE(planned, 60);
  EXPECT_GE(appended, 10);
}

// The issue's relabels by hand, through UpdateDelta in a namespace of the test's own: each
// lists as a fresh Apply of the next program, and goes in place by PlanIdentityDelta
// (`identity`) or by PlanDeltaUpdate's element edits (a pod into a class whose identity has
// addresses: no peer set changes).
TEST_F(NftKernelTest, RelabelsInPlaceEqualAFreshApply) {
  struct Step {
    std::string what;
    std::string pod;
    uint32_t identity;  // its identity after
    uint32_t extra;     // identities past ChurnIr's after
    bool identity_plan;
  };
  // RelabelIr: identity 11 and 14 are in no peer set, 12 and 15 in the named set 1, 13 in
  // the inline set 0 (while they have pods).
  const std::vector<Step> steps = {
      {"a remote pod into a class of its own: 11 appended, named by no peer set", "b/api", 11, 1, true},
      {"into another: 12 appended, the named set gains it; 11 unused", "b/api", 12, 2, true},
      {"and back: 12 retired, out of the named set (no gains: one commit)", "b/api", 2, 2, true},
      {"again: 12 reused", "b/api", 12, 2, true},
      {"into 13, appended: the inline set gains it, the named set loses 12", "b/api", 13, 3, true},
      {"a local pod into a class of its own: 14 and 15 appended, 15 named", "a/web-2", 15, 5, true},
      {"a remote pod into 15 too (15 has addresses: element edits only)", "c/y", 15, 5, false},
      {"the local pod back: 15 keeps c/y", "a/web-2", 1, 5, false},
      {"c/y back: 15 retires", "c/y", 4, 5, true},
      {"b/api from 13 into 11: 13 retires from the inline set", "b/api", 11, 5, true},
  };
  std::vector<ChurnPod> pods = ChurnBase();
  RunDeltaSteps(
      "h64-relab-", RelabelIr(pods, 0), steps.size(), [&](size_t i) { return steps[i].what; },
      [&](size_t i) {
        for (ChurnPod& p : pods) {
          if (p.name == steps[i].pod) p.identity = steps[i].identity;
        }
        return RelabelIr(pods, steps[i].extra);
      },
      [&](size_t i, const DeltaStats& before, const DeltaStats& after, Backend&) {
        EXPECT_EQ(after.identity_in_place - before.identity_in_place,
                  steps[i].identity_plan ? 1u : 0u)
            << after.last_fallback;
        EXPECT_EQ(after.in_place - before.in_place, 1u) << after.last_fallback;
      });
}

// Seeded random relabels (NP_NFT_RELABEL_SEED replays one) into classes of their own
// (identities appended or reused), into ChurnIr's classes, and remote pods coming and going,
// through UpdateDelta: after each the namespace lists as a fresh Apply of the next program;
// each delta with peer sets or appended identities and no endpoint goes in place by
// PlanIdentityDelta; every fifth step is an Update of whole programs, which must start from
// what the deltas left.
TEST_F(NftKernelTest, RandomRelabelsEqualAFreshApply) {
  int planned = 0, appended = 0, name = 0;
  std::vector<ChurnPod> pods;
  uint32_t extra = 0;
  RandomKernelSequence r;
  r.netns = "h64-rrelab-";
  r.seed_env = "NP_NFT_RELABEL_SEED";
  r.runs = 4;
  r.steps = 20;
  r.start = [&] {
    pods = ChurnBase();
    extra = 0;
    return RelabelIr(pods, extra);
  };
  r.event = [&](std::mt19937_64& rng) { return RandomRelabelEvent(rng, &pods, &extra, &name); };
  r.program = [&] { return RelabelIr(pods, extra); };
  r.delta = [&](Backend& incremental, Backend& fresh, const std::string& netns,
                const ir::CompiledPolicy& current, const ir::CompiledPolicy& next) {
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(current, next);
    ASSERT_TRUE(delta.has_value());
    const bool ours = (!delta->identities().empty() || !delta->peer_sets().empty()) &&
                      delta->endpoints().empty();
    const auto [before, after] = ExpectDeltaListsAsFresh(incremental, fresh, netns, current, next);
    if (::testing::Test::HasFatalFailure()) return;
    EXPECT_EQ(after.identity_in_place - before.identity_in_place, ours ? 1u : 0u)
        << after.last_fallback;
    planned += ours ? 1 : 0;
    appended += ours && delta->identities_size() > 0 ? 1 : 0;
  };
  RunRandomKernelSequence(r);
  if (HasFatalFailure()) return;
  std::cerr << "random relabels: " << planned << " through PlanIdentityDelta (" << appended
            << " appending)\n";
  EXPECT_GE(planned, 20);
  EXPECT_GE(appended, 5);
}

// A named namespace deleted and created again under the same name is a new one: the backend
// must install there (not through a session or a memory of the old one), with a full install.
TEST_F(NftKernelTest, ANamespaceCreatedAgainUnderTheSameNameGetsTheProgram) {
  const std::string netns = absl::StrCat("np-nft-again-", getpid());
  std::unique_ptr<Backend> nft = MakeNftBackend();
  const Attachment there{{}, netns};
  const ir::CompiledPolicy a = ChurnIr(ChurnBase());
  std::vector<ChurnPod> more = ChurnBase();
  more.push_back({"c/z", 2, 40, false});
  const ir::CompiledPolicy b = ChurnIr(more);
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(RunCommand({"ip", "netns", "add", netns}).ok());
    ASSERT_TRUE(nft->Update(a, b, there).ok()) << round;  // unknown here: a full install
    absl::StatusOr<std::string> map =
        RunCommand({"nft", "list", "map", "inet", kTableName, "identity4_g1"}, "", netns);
    EXPECT_TRUE(map.ok() && absl::StrContains(*map, "10.1.0.40 : jump id_2_g1"))
        << round << ": " << (map.ok() ? *map : map.status().ToString());
    ASSERT_TRUE(RunCommand({"ip", "netns", "del", netns}).ok());
  }
}


// Failure injection on the netlink path (netlink.h), in the test's own namespace against a
// fresh Apply in a named one: (1) another writer empties identity4 behind the backend's
// back, so the batch deleting its pieces is refused (ENOENT; the kernel changes nothing),
// libnftables is tried and refused too, and the full path lists the kernel and installs the
// program; (2) another writer commits to a table of its own between two pod events: the
// batch naming the generation np last saw is refused (ERESTART) and sent again at the
// kernel's, in place; (3) another writer empties np's identity4 after np's last commit:
// refused for the generation, then for the elements, then the full path; the next event is
// back on netlink.
TEST_F(NftKernelTest, RefusedNetlinkBatchesRecoverThroughTheFullPath) {
  const std::string netns = absl::StrCat("np-nft-nlfail-", getpid());
  ASSERT_TRUE(RunCommand({"ip", "netns", "add", netns}).ok());
  struct Cleanup {
    std::string netns;
    ~Cleanup() { (void)RunCommand({"ip", "netns", "del", netns}); }
  } cleanup{netns};
  std::vector<ChurnPod> pods = ChurnBase();
  const ir::CompiledPolicy a = ChurnIr(pods);
  pods.push_back({"c/z", 2, 40, false});
  const ir::CompiledPolicy b = ChurnIr(pods);
  pods.push_back({"c/w", 4, 41, false});
  const ir::CompiledPolicy c = ChurnIr(pods);
  const std::optional<ir::CompiledPolicyDelta> ab = DiffPrograms(a, b), bc = DiffPrograms(b, c),
                                               cb = DiffPrograms(c, b);
  ASSERT_TRUE(ab.has_value() && bc.has_value() && cb.has_value());
  std::unique_ptr<Backend> fresh = MakeNftBackend();
  auto expect_equals_fresh = [&](const ir::CompiledPolicy& ir) {
    ASSERT_TRUE(fresh->Apply(ir, {{}, netns}).ok());
    absl::StatusOr<std::string> got = RunCommand({"nft", "list", "table", "inet", kTableName});
    absl::StatusOr<std::string> want =
        RunCommand({"nft", "list", "table", "inet", kTableName}, "", netns);
    ASSERT_TRUE(got.ok() && want.ok());
    EXPECT_EQ(Normalized(*got), Normalized(*want));
  };
  {
    std::unique_ptr<Backend> nft = MakeNftBackend();
    ASSERT_TRUE(nft->Apply(a, {}).ok());
    ASSERT_TRUE(RunCommand({"nft", "flush", "map", "inet", kTableName, "identity4_g1"}).ok());
    ASSERT_TRUE(nft->UpdateDelta(a, *ab, {}).ok());
    const DeltaStats s = DeltaStatsOf(*nft);
    EXPECT_EQ(s.netlink_fallbacks, 1u) << s.last_netlink_error;
    EXPECT_TRUE(absl::StrContains(s.last_netlink_error, "identity4_g1")) << s.last_netlink_error;
    EXPECT_EQ(s.netlink_batches, 0u);
    EXPECT_EQ(s.in_place, 0u);
    EXPECT_EQ(s.full_path, 1u);
    expect_equals_fresh(b);
    ASSERT_TRUE(nft->Remove({}).ok());
  }
  {
    std::unique_ptr<Backend> nft = MakeNftBackend();
    ASSERT_TRUE(nft->Apply(a, {}).ok());
    ASSERT_TRUE(nft->UpdateDelta(a, *ab, {}).ok());
    EXPECT_EQ(DeltaStatsOf(*nft).netlink_batches, 1u) << DeltaStatsOf(*nft).last_netlink_error;
    ASSERT_TRUE(RunCommand({"nft", "add", "table", "inet", "someone_else"}).ok());
    ASSERT_TRUE(nft->UpdateDelta(b, *bc, {}).ok());
    DeltaStats s = DeltaStatsOf(*nft);
    EXPECT_EQ(s.netlink_aborts, 1u) << s.last_netlink_error;
    EXPECT_EQ(s.netlink_fallbacks, 0u) << s.last_netlink_error;
    EXPECT_EQ(s.netlink_batches, 2u) << s.last_netlink_error;
    EXPECT_EQ(s.in_place, 2u);
    EXPECT_EQ(s.full_path, 0u);
    expect_equals_fresh(c);
    // Now another writer changes np's own elements after np's last commit: the batch is
    // refused for its generation, then for the elements, libnftables refuses the same edit,
    // and the full path installs the program.
    ASSERT_TRUE(RunCommand({"nft", "flush", "map", "inet", kTableName, "identity4_g1"}).ok());
    ASSERT_TRUE(nft->UpdateDelta(c, *cb, {}).ok());
    s = DeltaStatsOf(*nft);
    EXPECT_EQ(s.netlink_aborts, 2u) << s.last_netlink_error;
    EXPECT_EQ(s.netlink_fallbacks, 1u) << s.last_netlink_error;
    EXPECT_EQ(s.full_path, 1u);
    expect_equals_fresh(b);
    // And back on netlink from the next event.
    ASSERT_TRUE(nft->UpdateDelta(b, *bc, {}).ok());
    s = DeltaStatsOf(*nft);
    EXPECT_EQ(s.netlink_batches, 3u) << s.last_netlink_error;
    EXPECT_EQ(s.in_place, 3u);
    expect_equals_fresh(c);
    ASSERT_TRUE(nft->Remove({}).ok());
    ASSERT_TRUE(RunCommand({"nft", "delete", "table", "inet", "someone_else"}).ok());
  }
}

// ---- Updates from a delta (PlanDeltaUpdate) ----------------------------------------------
// The maps of `p` as multisets, for comparing element lists whose order may differ.
std::map<std::string, std::multiset<std::string>> MapsOf(const Program& p) {
  std::map<std::string, std::multiset<std::string>> out;
  for (const Set& s : p.sets) out[s.name] = ElementsOf(p, s.name);
  return out;
}

// The plan from the index and the delta alone against the whole-program plan (the slow path,
// PlanElementUpdate) on random churn, seeded (NP_NFT_DELTA_SEED replays one): the same
// decision, the same grace period and, after each transaction, the same map contents; the
// index kept in step with ApplyIndexEdit materializes to the next program's maps.
TEST(NftDeltaPlan, MatchesTheWholeProgramPlanOnRandomChurn) {
  const uint64_t seed = SeedFromEnv("NP_NFT_DELTA_SEED", 20261201);
  SCOPED_TRACE(absl::StrCat("NP_NFT_DELTA_SEED=", seed));
  std::mt19937_64 rng(seed);
  std::vector<ChurnPod> pods = ChurnBase();
  uint32_t port = 80;
  ir::CompiledPolicy current = ChurnIr(pods, port);
  absl::StatusOr<DeltaIndex> index = MakeDeltaIndex(current, 1);
  ASSERT_TRUE(index.ok()) << index.status();
  int next_name = 0, in_place = 0, fell_back = 0, two_commits = 0;
  for (int step = 0; step < 400; ++step) {
    ChurnEvent event = RandomChurnEvent(rng, pods, port, step, &next_name);
    if (event.skip) continue;
    if (step % 5 == 0) {  // two events at once: mostly past what an in-place edit may do
      ChurnEvent second = RandomChurnEvent(rng, event.after, event.port, 1000 + step, &next_name);
      if (!second.skip) {
        event.after = std::move(second.after);
        event.port = second.port;
        event.what = absl::StrCat(event.what, " + ", second.what);
      }
    }
    ir::CompiledPolicy next = ChurnIr(event.after, event.port);
    SCOPED_TRACE(absl::StrCat("step ", step, ": ", event.what));
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(current, next);
    const Program installed = Generation(current, 1), wanted = Generation(next, 1);
    bool kept_in_step = false;
    if (delta.has_value()) {
      DeltaIndexEdit edit;
      const ElementPlan got = PlanDeltaUpdate(*index, current, *delta, &edit);
      const ElementPlan want = PlanElementUpdate(installed, wanted);
      ASSERT_EQ(got.fallback.empty(), want.fallback.empty())
          << "delta plan: '" << got.fallback << "', whole-program plan: '" << want.fallback << "'";
      if (got.fallback.empty()) {
        ++in_place;
        two_commits += got.grace_period ? 1 : 0;
        EXPECT_EQ(got.grace_period, want.grace_period);
        ASSERT_EQ(got.transactions.size(), want.transactions.size());
        for (size_t i = 0; i < got.transactions.size(); ++i) {
          ElementPlan got_prefix, want_prefix;
          got_prefix.transactions.assign(got.transactions.begin(), got.transactions.begin() + i + 1);
          want_prefix.transactions.assign(want.transactions.begin(), want.transactions.begin() + i + 1);
          EXPECT_EQ(MapsOf(Edited(installed, got_prefix)), MapsOf(Edited(installed, want_prefix)))
              << "after transaction " << i << ":\n" << got.transactions[i];
        }
        ApplyIndexEdit(edit, &*index);
        kept_in_step = true;
        Program materialized = installed;
        MaterializeElements(*index, &materialized);
        EXPECT_EQ(MapsOf(materialized), MapsOf(wanted));
        EXPECT_EQ(index->elements, wanted.element_count());
      } else {
        ++fell_back;
      }
    }
    // After a full path the backend indexes the program it installed (here also now and
    // then after an in-place step, as after an Update).
    if (!kept_in_step || step % 7 == 0) {
      index = MakeDeltaIndex(next, 1);
      ASSERT_TRUE(index.ok());
    }
    pods = std::move(event.after);
    port = event.port;
    current = std::move(next);
  }
  std::cerr << "delta plans: " << in_place << " in place (" << two_commits
            << " with two commits), " << fell_back << " fell back\n";
  EXPECT_GT(in_place, 150);
  EXPECT_GT(two_commits, 10);
  EXPECT_GT(fell_back, 5);
}

// The delta between two churn programs (DiffPrograms must find one).
ir::CompiledPolicyDelta DeltaOf(const ir::CompiledPolicy& a, const ir::CompiledPolicy& b) {
  std::optional<ir::CompiledPolicyDelta> d = DiffPrograms(a, b);
  EXPECT_TRUE(d.has_value());
  return d.value_or(ir::CompiledPolicyDelta());
}

std::string DeltaFallback(const ir::CompiledPolicy& previous, const ir::CompiledPolicyDelta& delta,
                          const DeltaIndex* index = nullptr) {
  absl::StatusOr<DeltaIndex> own = MakeDeltaIndex(previous, 1);
  EXPECT_TRUE(own.ok());
  DeltaIndexEdit edit;
  ElementPlan plan = PlanDeltaUpdate(index != nullptr ? *index : *own, previous, delta, &edit);
  if (!plan.fallback.empty()) {
    EXPECT_TRUE(plan.transactions.empty());
    EXPECT_TRUE(edit.selected.empty() && edit.elements == 0 && edit.identity_insert[0].empty());
  }
  return plan.fallback;
}

TEST(NftDeltaPlan, EachFallback) {
  const std::vector<ChurnPod> base = ChurnBase();
  const ir::CompiledPolicy a = ChurnIr(base);
  {
    std::vector<ChurnPod> two = base;
    two.push_back({"c/z1", 2, 40, false});
    two.push_back({"c/z2", 2, 42, false});
    EXPECT_EQ(DeltaFallback(a, DeltaOf(a, ChurnIr(two))), "more than one address of a family changes");
  }
  {
    std::vector<ChurnPod> relabelled = base;
    relabelled[1].identity = 2;  // a/web-2, local: its identity and its table change
    relabelled[1].table = 1;
    EXPECT_EQ(DeltaFallback(a, DeltaOf(a, ChurnIr(relabelled))),
              "dispatch entries both added and deleted while identities change");
  }
  {
    std::vector<ChurnPod> swapped = base;  // identities 1 <-> 2: four addresses per family
    for (ChurnPod& p : swapped) {
      if (p.identity == 1 || p.identity == 2) p.identity = 3 - p.identity;
    }
    EXPECT_EQ(DeltaFallback(a, DeltaOf(a, ChurnIr(swapped))), "more than one address of a family changes");
  }
  {
    std::vector<ChurnPod> both = base;
    both.erase(both.begin());  // a/web-1 at 3
    both.push_back({"a/web-9", 2, 3, true, true, 1});
    EXPECT_EQ(DeltaFallback(a, DeltaOf(a, ChurnIr(both))),
              "dispatch entries both added and deleted while identities change");
  }
  {
    // a/db is table 1's only selected endpoint: its chains go with it, and come back.
    std::vector<ChurnPod> gone = base;
    gone.erase(gone.begin() + 2);
    const ir::CompiledPolicy b = ChurnIr(gone);
    EXPECT_TRUE(absl::StrContains(DeltaFallback(a, DeltaOf(a, b)), "last selected endpoint of table 1"));
    EXPECT_TRUE(absl::StrContains(DeltaFallback(b, DeltaOf(b, a)), "last selected endpoint of table 1"));
  }
  {
    // A range of addresses changing identity: the gap 10.1.0.10-19 given to identity 2.
    ir::CompiledPolicy b = a;
    for (ir::AddressRange& r : *b.mutable_ipv4()) {
      if (r.first() == ChurnAddress(0, 10)) r.set_identity(2);
    }
    EXPECT_EQ(DeltaFallback(a, DeltaOf(a, b)), "identity4: a range of addresses changes identity");
  }
  std::vector<ChurnPod> one = base;
  one.push_back({"c/z", 2, 40, false});
  const ir::CompiledPolicy b = ChurnIr(one);
  const ir::CompiledPolicyDelta good = DeltaOf(a, b);
  ASSERT_EQ(DeltaFallback(a, good), "");
  {
    ir::CompiledPolicyDelta bad = good;
    bad.mutable_ipv4(0)->set_end(static_cast<uint32_t>(a.ipv4_size()) + 1);
    EXPECT_EQ(DeltaFallback(a, bad), "an invalid delta: a range slice");
    bad = good;
    bad.mutable_ipv4(0)->mutable_ranges()->RemoveLast();
    EXPECT_TRUE(absl::StartsWith(DeltaFallback(a, bad), "an invalid delta: its ranges"));
    bad = good;
    bad.mutable_ipv4(0)->mutable_ranges(0)->set_identity(999);
    EXPECT_TRUE(absl::StartsWith(DeltaFallback(a, bad), "an invalid delta: its ranges"));
    bad = good;
    bad.add_identity_pods()->set_identity(999);
    EXPECT_EQ(DeltaFallback(a, bad), "an invalid delta: identity_pods");
    bad = good;
    ir::EndpointSliceEdit* e = bad.add_endpoints();
    e->set_begin(static_cast<uint32_t>(a.endpoints_size()) + 1);
    e->set_end(e->begin());
    EXPECT_EQ(DeltaFallback(a, bad), "an invalid delta: an endpoint slice");
    bad = good;
    e = bad.add_endpoints();
    e->set_begin(0);
    e->set_end(0);
    *e->add_endpoints() = a.endpoints(0);  // its address is endpoints(0)'s already
    EXPECT_EQ(DeltaFallback(a, bad), "an address that another endpoint has");
  }
  {
    // The set element budget: the pod's one element more per family is past it.
    absl::StatusOr<DeltaIndex> full = MakeDeltaIndex(a, 1);
    ASSERT_TRUE(full.ok());
    full->element_budget = full->elements;
    std::vector<ChurnPod> alone = base;
    alone.push_back({"c/z", 6, 40, false});  // splits a gap: more elements
    EXPECT_EQ(DeltaFallback(a, DeltaOf(a, ChurnIr(alone)), &*full), "past the set element budget");
  }
  {
    // An index of another program than `previous`: a local pod the index never saw deleted.
    std::vector<ChurnPod> more = base;
    more.push_back({"a/web-3", 1, 30, true, true, 0});
    const ir::CompiledPolicy c = ChurnIr(more);
    absl::StatusOr<DeltaIndex> stale = MakeDeltaIndex(a, 1);
    ASSERT_TRUE(stale.ok());
    EXPECT_EQ(DeltaFallback(c, DeltaOf(c, a), &*stale),
              "the remembered dispatch map differs from the delta's endpoints");
  }
}

// Real packets through the nft program (as root, in network namespaces of the test's own):
// the tier scenario's hand-written verdicts, random tier IRs against the IR's literal
// reading, and a lookup miss, which must be dropped rather than skip a rule.
TEST(NftPackets, TiersGetTheSpecsVerdicts) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!RunCommand({"nft", "--version"}).ok()) GTEST_SKIP() << "no nft binary";
  using namespace iptables::testutil;  // NOLINT: the topology helpers
  ThreePodLab lab("npnft", 120);
  const Topology& t = lab.t;
  const Attachment& where = lab.where;
  std::unique_ptr<Backend> nft = MakeNftBackend();
  ExpectTierVerdictsOnPackets(*nft, where, t);
  // A lookup miss: a's addresses taken out of the identity maps. c's ingress would then see
  // a peer in no peer set: past the admin Pass (which names a) and the baseline Deny of
  // a's UDP to the default allow — unless the miss is dropped first.
  ASSERT_TRUE(nft->Apply(TierScenarioIr(), where).ok());
  absl::StatusOr<std::string> listing =
      RunCommand({"nft", "-t", "list", "table", "inet", kTableName}, "", t.node);
  ASSERT_TRUE(listing.ok()) << listing.status();
  const std::string suffix = absl::StrCat("_g", ParseInstalled(*listing).last_generation);
  Must({"nft", "delete", "element", "inet", kTableName, "identity4" + suffix, "{ 10.0.1.2 }"},
       t.node);
  Must({"nft", "delete", "element", "inet", kTableName, "identity6" + suffix, "{ fd00:1::2 }"},
       t.node);
  std::vector<Probe> from_a;
  for (const Probe& p : AllProbes(t)) {
    if (p.from == 0 && p.to == 2) from_a.push_back(p);
  }
  std::vector<bool> got = RunProbes(t, from_a, 700);
  for (size_t i = 0; i < from_a.size(); ++i) {
    EXPECT_FALSE(got[i]) << "a lookup miss got through: " << ProbeText(t, from_a[i]);
  }
  ASSERT_TRUE(nft->Remove(where).ok());
}


// A policy event in place while real packets flow (the strict update probe), on x/a, x/b,
// x/c (identities 1-3): x/c's ingress allows TCP and UDP 80 from x/a in one program and from
// x/b in the other; x/a's egress is restricted to ports 80-81 of anyone in both. Each swap
// names one identity anew (the main commit) and drops the other (the cleanup, after a grace
// period). Update swaps back and forth, in place each time, while every flow both programs
// deny (none may connect) and every flow both allow (one packet each, 700 ms: none may be
// dropped) is probed round after round.
// Policy events swapped back and forth in place (Update's PlanInPlaceUpdate, or with
// `through_delta` UpdateDelta's PlanPolicyDelta on DiffPrograms' deltas) under a prober: no
// flow both programs deny passes, none both allow is dropped.
// How ExpectSwapsUnderProbes goes between its two programs: whole programs (Update), a
// policy delta (UpdateDelta: PlanPolicyDelta), or a pod delta that brings pod x/c with its
// table and takes it away again (PlanPodTableDelta).
enum class Swap { kUpdate, kPolicyDelta, kPodTableDelta, kRelabel, kMove, kMoveTable };

// The probe lab's three tables, one per pod x/a, x/b, x/c (10.0.<i+1>.2, fd00:<i+1>::2, all
// selected), table i the endpoint's; tables from `endpoints` on are appended without
// policies or endpoint (tombstones: their pod is not there).
void AddThreeTables(ir::CompiledPolicy& ir, int endpoints = 3) {
  for (int i = 0; i < 3; ++i) {
    ir::Table* table = AppendTable(ir);
    if (i >= endpoints) continue;
    table->add_policies(absl::StrCat("x/policy-", i));
    ir::Endpoint* e = ir.add_endpoints();
    e->set_namespace_("x");
    e->set_name(std::string(1, static_cast<char>('a' + i)));
    e->add_ips(absl::StrCat("10.0.", i + 1, ".2"));
    e->add_ips(absl::StrCat("fd00:", i + 1, "::2"));
    e->set_selected(true);
    e->set_table(static_cast<uint32_t>(i));
  }
}

// The pod-table swap's programs: x/a (table 0: egress TCP/UDP 80-81 to all), x/b (table 1:
// ingress TCP 80 from x/a's identity, UDP 80 and TCP 81 from identity 3's), and x/c when
// `c_there`: a pod of identity 3 with table 2 (ingress TCP/UDP 80 from peer set 3, {1, 3};
// egress TCP 80-81 only). Without x/c its address is identity 0's and table 2 and peer set 3 are
// tombstones.
// x/c -> x/b UDP 80 is denied by both: by x/b's ingress (not identity 3) without x/c, by x/c's
// egress with it; a state with x/c's address already identity 3 but no egress dispatch yet
// would let it through (what PlanPodTableDelta's forms keep out). x/c -> x/b TCP 81 is
// allowed only with x/c there, as identity 3 (x/b's ingress), so a probe right after x/c
// comes sees whether its address reads as identity 3.
ir::CompiledPolicy ThreePodsCOrNot(bool c_there) {
  using namespace iptables::testutil;  // NOLINT: the topology helpers
  std::vector<Point> points;
  for (const Point& p : ThreePods()) {
    if (p.identity == 3 && !c_there) continue;
    points.push_back(p);
  }
  ir::CompiledPolicy ir = WithPods(IrFromPoints(points));
  if (!c_there) ir.add_identities()->set_id(3);
  AddPeerSet(ir, {1});
  AddPeerSet(ir, {2});
  AddPeerSet(ir, {}, /*all=*/true);
  AddPeerSet(ir, c_there ? std::vector<uint32_t>{1, 3} : std::vector<uint32_t>{});
  AddPeerSet(ir, {3});
  AddThreeTables(ir, c_there ? 3 : 2);
  AddRule(ir.mutable_tables(0)->mutable_egress(), ir::TCP, 80, 81, 2);
  AddRule(ir.mutable_tables(0)->mutable_egress(), ir::UDP, 80, 81, 2);
  AddRule(ir.mutable_tables(1)->mutable_ingress(), ir::TCP, 80, 80, 0);
  AddRule(ir.mutable_tables(1)->mutable_ingress(), ir::UDP, 80, 80, 4);
  AddRule(ir.mutable_tables(1)->mutable_ingress(), ir::TCP, 81, 81, 4);
  if (c_there) {
    AddRule(ir.mutable_tables(2)->mutable_ingress(), ir::TCP, 80, 80, 3);
    AddRule(ir.mutable_tables(2)->mutable_ingress(), ir::UDP, 80, 80, 3);
    AddRule(ir.mutable_tables(2)->mutable_egress(), ir::TCP, 80, 81, 2);
  }
  return ir;
}

// The relabel swap's programs: x/a of identity 1, or (`relabelled`) of identity 4, the
// other one unused (no pods, in no peer set); x/c (table 2) takes TCP/UDP 80 from x/a's
// identity (peer set 3), x/b (table 1) TCP 80 from identity 1 only (peer set 4): x/a -> x/c
// port 80 is allowed by both programs, x/a -> x/b TCP 80 only before the relabel, x/b ->
// x/c denied by both. Each swap is a pod delta that moves x/a's addresses between identities
// named by peer sets, gaining one and losing the other (PlanIdentityDelta: the gains, the
// addresses, and the losses after a grace period); a state that had x/a's addresses on the
// new identity before peer set 3 gained it, or on the old one after it lost it, would drop
// x/a -> x/c.
ir::CompiledPolicy ThreePodsRelabelled(bool relabelled) {
  using namespace iptables::testutil;  // NOLINT: the topology helpers
  std::vector<Point> points = ThreePods();
  for (Point& p : points) {
    if (p.identity == 1 && relabelled) p.identity = 4;
  }
  ir::CompiledPolicy ir = WithPods(IrFromPoints(points));
  if (!relabelled) ir.add_identities()->set_id(4);
  const uint32_t a = relabelled ? 4 : 1;
  AddPeerSet(ir, {1});
  AddPeerSet(ir, {2});
  AddPeerSet(ir, {}, /*all=*/true);
  AddPeerSet(ir, {a});
  AddPeerSet(ir, relabelled ? std::vector<uint32_t>{} : std::vector<uint32_t>{1});
  AddThreeTables(ir);
  AddRule(ir.mutable_tables(0)->mutable_egress(), ir::TCP, 80, 81, 2);
  AddRule(ir.mutable_tables(0)->mutable_egress(), ir::UDP, 80, 81, 2);
  AddRule(ir.mutable_tables(1)->mutable_ingress(), ir::TCP, 80, 80, 4);
  AddRule(ir.mutable_tables(2)->mutable_ingress(), ir::TCP, 80, 80, 3);
  AddRule(ir.mutable_tables(2)->mutable_ingress(), ir::UDP, 80, 80, 3);
  return ir;
}

// The move swap's programs: x/a of identity 1 with table 0 (x/c's table too, so that its
// chains stay), or (`moved`) of identity 2 with table 1, x/b's class — both existing, so the
// delta moves x/a's addresses and endpoint and nothing else (nft.h PlanMoveDelta). Peer sets:
// 0 {1}, 1 {2}, 2 all, 3 {3}, 4 {1, 2}. Table 0: egress TCP 80 and UDP 80-81 to all, TCP 81
// to {2}; ingress TCP 80-81 from all, UDP 80 from {1, 2}. Table 1: egress TCP 80-81 to all,
// UDP 80 to {3}, UDP 81 to {1}; ingress TCP 80 from all, TCP 81 and UDP 80-81 from {2}.
// Flows both programs deny that a mix of the two would pass (reckoned by hand from the
// rules, checked by Expected below):
//  x/a -> x/b UDP 80: old denies at x/b's ingress (source 1), new at x/a's egress (table 1:
//    UDP 80 to {3} only); x/a's old side (table 0) with its new identity (2) allows it;
//  x/c -> x/a TCP 81: old denies at x/c's egress (TCP 81 to {2}, x/a is 1), new at x/a's
//    ingress (table 1: TCP 81 from {2}); x/a's new identity at x/c's egress with x/a's old
//    ingress (table 0) allows it;
//  x/b -> x/a UDP 81: old denies at x/a's ingress (table 0 has no UDP 81), new at x/b's
//    egress (UDP 81 to {1}, x/a is 2); x/a's old identity with its new ingress allows it.
// And x/a -> x/c UDP 80, allowed by both, is dropped if x/a's identity reads "miss".
ir::CompiledPolicy ThreePodsMoved(bool moved) {
  using namespace iptables::testutil;  // NOLINT: the topology helpers
  std::vector<Point> points = ThreePods();
  for (Point& p : points) {
    if (p.identity == 1 && moved) p.identity = 2;
  }
  ir::CompiledPolicy ir = WithPods(IrFromPoints(points));
  AddPeerSet(ir, {1});
  AddPeerSet(ir, {2});
  AddPeerSet(ir, {}, /*all=*/true);
  AddPeerSet(ir, {3});
  AddPeerSet(ir, {1, 2});
  AddThreeTables(ir);
  EndpointOf(ir, "x/c")->set_table(0);
  EndpointOf(ir, "x/a")->set_table(moved ? 1 : 0);
  ir::DirectionPolicy* t0_egress = ir.mutable_tables(0)->mutable_egress();
  AddRule(t0_egress, ir::TCP, 80, 80, 2);
  AddRule(t0_egress, ir::TCP, 81, 81, 1);
  AddRule(t0_egress, ir::UDP, 80, 81, 2);
  ir::DirectionPolicy* t0_ingress = ir.mutable_tables(0)->mutable_ingress();
  AddRule(t0_ingress, ir::TCP, 80, 81, 2);
  AddRule(t0_ingress, ir::UDP, 80, 80, 4);
  ir::DirectionPolicy* t1_egress = ir.mutable_tables(1)->mutable_egress();
  AddRule(t1_egress, ir::TCP, 80, 81, 2);
  AddRule(t1_egress, ir::UDP, 80, 80, 3);
  AddRule(t1_egress, ir::UDP, 81, 81, 0);
  ir::DirectionPolicy* t1_ingress = ir.mutable_tables(1)->mutable_ingress();
  AddRule(t1_ingress, ir::TCP, 80, 80, 2);
  AddRule(t1_ingress, ir::TCP, 81, 81, 1);
  AddRule(t1_ingress, ir::UDP, 80, 81, 1);
  return ir;
}

// ThreePodsMoved with x/c in table 2 (AddThreeTables' own): x/a is table 0's only endpoint,
// so the move retires table 0 — `moved` leaves it emptied, as the lowering leaves a table no
// endpoint selects any more (np/lower_delta.h) — and the move back brings it (nft.h
// PlanMoveDelta, "A table that comes or goes"). Flows both programs deny that a mix passes:
// x/a -> x/b UDP 80 (x/a's table 0 side with identity 2, or, coming back, table 0's chains
// met empty: both allow it at x/a's egress and x/b's ingress admits 2) and x/b -> x/a UDP 81
// (x/a's identity 1 at x/b's egress with table 1's ingress), as ThreePodsMoved says.
ir::CompiledPolicy ThreePodsMovedAlone(bool moved) {
  ir::CompiledPolicy ir = ThreePodsMoved(moved);
  EndpointOf(ir, "x/c")->set_table(2);
  if (moved) {
    ir::Table* t0 = ir.mutable_tables(0);
    t0->clear_ingress();
    t0->clear_egress();
    t0->clear_policies();
  }
  return ir;
}

// Each edit's elements as "set first-last:jump", sorted.
std::vector<std::string> ElementsText(const std::vector<SetElementEdit>& edits) {
  std::vector<std::string> out;
  for (const SetElementEdit& e : edits) {
    for (const SetElementEdit::Element& x : e.elements) {
      out.push_back(absl::StrCat(e.set, " ", AddressText(x.first), "-", AddressText(x.last),
                                 x.jump.empty() ? "" : ":", x.jump));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}
std::map<std::string, std::string> ChainRules(const WholeBatch& batch) {
  std::map<std::string, std::string> out;
  for (const WholeChain& c : batch.chains) out[c.name] = absl::StrJoin(c.rules, "; ");
  return out;
}

// PlanMoveDelta on the move swap's delta, both ways (the expected commits written by hand
// from nft.h's form): (1) creates the indirection with the old answers and adds no element;
// (2) points x/a's identity and dispatch elements, both families, at it and gives it the new
// answers; (3) points them at the new targets and deletes it; the index edit reaches the
// index of a fresh install of the next program (MakeDeltaIndex: the oracle).
TEST(NftDeltaPlan, AMoveGoesThroughIndirectionChains) {
  const ir::CompiledPolicy a = ThreePodsMoved(false), b = ThreePodsMoved(true);
  ASSERT_TRUE(CheckIr(a).ok()) << CheckIr(a);
  ASSERT_TRUE(CheckIr(b).ok()) << CheckIr(b);
  for (bool there : {true, false}) {
    SCOPED_TRACE(there ? "there" : "back");
    const ir::CompiledPolicy& from = there ? a : b;
    const ir::CompiledPolicy& to = there ? b : a;
    const std::string old_table = there ? "0" : "1", new_table = there ? "1" : "0";
    const std::string old_id = there ? "1" : "2", new_id = there ? "2" : "1";
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(from, to);
    ASSERT_TRUE(delta.has_value());
    absl::StatusOr<DeltaIndex> index = MakeDeltaIndex(from, 3);
    absl::StatusOr<DeltaIndex> truth = MakeDeltaIndex(to, 3);
    ASSERT_TRUE(index.ok() && truth.ok());
    DeltaIndexEdit unused;
    EXPECT_FALSE(PlanDeltaUpdate(*index, from, *delta, &unused).fallback.empty())
        << "element edits alone have a safe order for a move";
    const MovePlan plan = PlanMoveDelta(&*index, from, *delta);
    ASSERT_TRUE(plan.fallback.empty()) << plan.fallback;
    auto mark = [](const std::string& id) {
      return absl::StrCat("meta mark set meta mark and 0x0000ffff or 0x000", id, "0000");
    };
    const std::vector<std::string> names = {"mv_ingress_g3", "mv_egress_g3", "mv_identity_g3"};
    // (1)
    EXPECT_EQ(ChainRules(plan.create.batch),
              (std::map<std::string, std::string>{
                  {"mv_egress_g3", absl::StrCat("jump t", old_table, "_egress_g3")},
                  {"mv_ingress_g3", absl::StrCat("jump t", old_table, "_ingress_g3")},
                  {"mv_identity_g3", mark(old_id)}}));
    for (const WholeChain& c : plan.create.batch.chains) EXPECT_TRUE(c.exclusive) << c.name;
    EXPECT_TRUE(plan.create.batch.last_element_adds.empty());
    EXPECT_TRUE(plan.create.batch.first_element_deletes.empty());
    EXPECT_TRUE(plan.create.batch.first_flush.empty());
    // (2)
    EXPECT_EQ(plan.commit.batch.first_flush, names);
    EXPECT_EQ(ChainRules(plan.commit.batch),
              (std::map<std::string, std::string>{
                  {"mv_egress_g3", absl::StrCat("jump t", new_table, "_egress_g3")},
                  {"mv_ingress_g3", absl::StrCat("jump t", new_table, "_ingress_g3")},
                  {"mv_identity_g3", mark(new_id)}}));
    EXPECT_EQ(ElementsText(plan.commit.batch.first_element_deletes),
              (std::vector<std::string>{"egress4_g3 10.0.1.2-10.0.1.2", "egress6_g3 fd00:1::2-fd00:1::2",
                                        "identity4_g3 10.0.1.2-10.0.1.2",
                                        "identity6_g3 fd00:1::2-fd00:1::2",
                                        "ingress4_g3 10.0.1.2-10.0.1.2",
                                        "ingress6_g3 fd00:1::2-fd00:1::2"}));
    EXPECT_EQ(ElementsText(plan.commit.batch.last_element_adds),
              (std::vector<std::string>{"egress4_g3 10.0.1.2-10.0.1.2:mv_egress_g3",
                                        "egress6_g3 fd00:1::2-fd00:1::2:mv_egress_g3",
                                        "identity4_g3 10.0.1.2-10.0.1.2:mv_identity_g3",
                                        "identity6_g3 fd00:1::2-fd00:1::2:mv_identity_g3",
                                        "ingress4_g3 10.0.1.2-10.0.1.2:mv_ingress_g3",
                                        "ingress6_g3 fd00:1::2-fd00:1::2:mv_ingress_g3"}));
    // (3)
    EXPECT_EQ(plan.retire.batch.first_flush, names);
    EXPECT_EQ(plan.retire.batch.first_delete_chains, names);
    EXPECT_TRUE(plan.retire.batch.chains.empty());
    EXPECT_EQ(ElementsText(plan.retire.batch.first_element_deletes),
              ElementsText(plan.commit.batch.first_element_deletes));
    const std::string t = absl::StrCat("t", new_table), id = absl::StrCat("id_", new_id);
    EXPECT_EQ(ElementsText(plan.retire.batch.last_element_adds),
              (std::vector<std::string>{
                  absl::StrCat("egress4_g3 10.0.1.2-10.0.1.2:", t, "_egress_g3"),
                  absl::StrCat("egress6_g3 fd00:1::2-fd00:1::2:", t, "_egress_g3"),
                  absl::StrCat("identity4_g3 10.0.1.2-10.0.1.2:", id, "_g3"),
                  absl::StrCat("identity6_g3 fd00:1::2-fd00:1::2:", id, "_g3"),
                  absl::StrCat("ingress4_g3 10.0.1.2-10.0.1.2:", t, "_ingress_g3"),
                  absl::StrCat("ingress6_g3 fd00:1::2-fd00:1::2:", t, "_ingress_g3")}));
    // The text says what the batches say, in the same order (libnftables' fallback).
    EXPECT_NE(plan.create.text.find("create chain inet np mv_identity_g3\n"), std::string::npos);
    EXPECT_NE(plan.commit.text.find("add element inet np identity4_g3 { 10.0.1.2 : jump mv_identity_g3 }"),
              std::string::npos) << plan.commit.text;
    EXPECT_LT(plan.retire.text.find("delete element inet np egress4_g3 { 10.0.1.2 }"),
              plan.retire.text.find("delete chain inet np mv_egress_g3"))
        << plan.retire.text;
    ApplyIndexEdit(plan.edit, &*index);
    EXPECT_EQ(IndexText(*index), IndexText(*truth));
  }
  // Refused: a move whose side stays (x/a into x/b's identity, its table kept: PlanDeltaUpdate
  // does that in one transaction), one whose identity stays (its table changes only), and a
  // pod of another node (no endpoint: its identity edits are PlanDeltaUpdate's).
  absl::StatusOr<DeltaIndex> index = MakeDeltaIndex(a, 3);
  ASSERT_TRUE(index.ok());
  ir::CompiledPolicy side_stays = b;
  EndpointOf(side_stays, "x/a")->set_table(0);
  ir::CompiledPolicy identity_stays = a;
  EndpointOf(identity_stays, "x/a")->set_table(1);
  ir::CompiledPolicy remote = a;
  for (ir::Endpoint& e : *remote.mutable_endpoints()) e.set_selected(e.name() != "a");
  ir::CompiledPolicy remote_moved = b;
  for (ir::Endpoint& e : *remote_moved.mutable_endpoints()) e.set_selected(e.name() != "a");
  for (const auto& [from, to, why] :
       std::vector<std::tuple<const ir::CompiledPolicy*, const ir::CompiledPolicy*, std::string>>{
           {&a, &side_stays, "not a move"},
           {&a, &identity_stays, "not a move"},
           {&remote, &remote_moved, "not a move"}}) {
    SCOPED_TRACE(why);
    absl::StatusOr<DeltaIndex> x = MakeDeltaIndex(*from, 3);
    ASSERT_TRUE(x.ok());
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(*from, *to);
    ASSERT_TRUE(delta.has_value());
    const MovePlan plan = PlanMoveDelta(&*x, *from, *delta);
    EXPECT_NE(plan.fallback.find(why), std::string::npos) << plan.fallback;
    EXPECT_TRUE(plan.create.text.empty() && plan.commit.text.empty() && plan.retire.text.empty());
  }
}

// PlanMoveDelta on a move whose old table goes (there) or whose new table comes (back): the
// expected commits written by hand from nft.h's form — the coming table's chains in (1)
// beside the indirection (reached by nothing: the indirection's first rules jump the old
// table), the going table's chains flushed and deleted in a commit after (3), (2) and (3) as
// for any move; planning leaves the index alone; the index edits, in their order, reach the
// index of a fresh install of the next program (the oracle).
TEST(NftDeltaPlan, AMoveBringsOrRetiresItsTableAroundTheIndirection) {
  const ir::CompiledPolicy a = ThreePodsMovedAlone(false), b = ThreePodsMovedAlone(true);
  ASSERT_TRUE(CheckIr(a).ok()) << CheckIr(a);
  ASSERT_TRUE(CheckIr(b).ok()) << CheckIr(b);
  for (bool there : {true, false}) {
    SCOPED_TRACE(there ? "there (table 0 goes)" : "back (table 0 comes)");
    const ir::CompiledPolicy& from = there ? a : b;
    const ir::CompiledPolicy& to = there ? b : a;
    const std::string old_table = there ? "0" : "1", new_table = there ? "1" : "0";
    std::optional<ir::CompiledPolicyDelta> delta = DiffPrograms(from, to);
    ASSERT_TRUE(delta.has_value());
    ASSERT_FALSE(delta->tables().empty()) << "the delta must retire or bring table 0";
    absl::StatusOr<DeltaIndex> index = MakeDeltaIndex(from, 3);
    absl::StatusOr<DeltaIndex> truth = MakeDeltaIndex(to, 3);
    ASSERT_TRUE(index.ok() && truth.ok());
    // What refused it before (the bench's MoveLocal): the table part with x/a's entries.
    EXPECT_FALSE(PlanPodTableDelta(&*index, from, *delta).fallback.empty());
    const std::string before = IndexText(*index);
    const MovePlan plan = PlanMoveDelta(&*index, from, *delta);
    ASSERT_TRUE(plan.fallback.empty()) << plan.fallback;
    EXPECT_EQ(IndexText(*index), before) << "planning changed the index";
    EXPECT_EQ(plan.tables_first, !there);
    // (1): the indirection with the old answers; coming, table 0's chains with their rules.
    std::map<std::string, std::string> created = ChainRules(plan.create.batch);
    EXPECT_EQ(created["mv_egress_g3"], absl::StrCat("jump t", old_table, "_egress_g3"));
    EXPECT_EQ(created["mv_ingress_g3"], absl::StrCat("jump t", old_table, "_ingress_g3"));
    EXPECT_EQ(created.count("t0_egress_g3"), there ? 0u : 1u);
    EXPECT_EQ(created.count("t0_ingress_g3"), there ? 0u : 1u);
    if (!there) {
      EXPECT_NE(created["t0_egress_g3"].find("meta l4proto udp th dport 80-81 return"), std::string::npos)
          << created["t0_egress_g3"];
    }
    EXPECT_EQ(created.size(), there ? 3u : 5u);
    EXPECT_TRUE(plan.create.batch.last_element_adds.empty());
    EXPECT_TRUE(plan.create.batch.first_element_deletes.empty());
    EXPECT_TRUE(plan.create.batch.first_flush.empty());
    EXPECT_TRUE(plan.create.batch.first_delete_chains.empty());
    EXPECT_NE(plan.create.text.find("create chain inet np mv_identity_g3\n"), std::string::npos);
    // (2): x/a's elements at the indirection, which gets the new answers; no table chain
    // created, flushed or deleted there.
    const std::map<std::string, std::string> rewritten = ChainRules(plan.commit.batch);
    EXPECT_EQ(rewritten.size(), 3u);
    EXPECT_EQ(rewritten.at("mv_egress_g3"), absl::StrCat("jump t", new_table, "_egress_g3"));
    EXPECT_EQ(plan.commit.batch.first_flush,
              (std::vector<std::string>{"mv_ingress_g3", "mv_egress_g3", "mv_identity_g3"}));
    EXPECT_TRUE(plan.commit.batch.first_delete_chains.empty());
    // (3) as for any move; going, table 0's chains flushed and deleted in the same commit.
    std::vector<std::string> deleted = plan.retire.batch.first_delete_chains;
    std::sort(deleted.begin(), deleted.end());
    std::vector<std::string> want = {"mv_egress_g3", "mv_identity_g3", "mv_ingress_g3"};
    if (there) want = {"mv_egress_g3", "mv_identity_g3", "mv_ingress_g3", "t0_egress_g3", "t0_ingress_g3"};
    EXPECT_EQ(deleted, want);
    std::vector<std::string> flushed = plan.retire.batch.first_flush;
    std::sort(flushed.begin(), flushed.end());
    EXPECT_EQ(flushed, want);
    EXPECT_TRUE(plan.retire.batch.chains.empty());
    EXPECT_TRUE(plan.later.empty());
    if (there) {
      EXPECT_LT(plan.retire.text.find("add element inet np egress4_g3 { 10.0.1.2 : jump t1_egress_g3 }"),
                plan.retire.text.find("delete chain inet np t0_egress_g3"))
          << plan.retire.text;
    }
    if (plan.tables_first) ApplyIndexEdit(plan.tables_edit, &*index);
    ApplyIndexEdit(plan.edit, &*index);
    if (!plan.tables_first) ApplyIndexEdit(plan.tables_edit, &*index);
    EXPECT_EQ(IndexText(*index), IndexText(*truth));
  }
}

void ExpectSwapsUnderProbes(Swap how) {
  using namespace iptables::testutil;  // NOLINT: the topology helpers
  const bool through_delta = how != Swap::kUpdate;
  ThreePodLab lab(how == Swap::kMoveTable ? "h98pk" : how == Swap::kMove ? "h90pk" : how == Swap::kRelabel ? "h64pk"
                  : how == Swap::kPodTableDelta ? "h56pk" : through_delta ? "h50pk" : "npnfti", 120);
  const Topology& t = lab.t;
  const Attachment& where = lab.where;
  auto program = [](uint32_t peer) {
    ir::CompiledPolicy ir = IrFromPoints(ThreePods());
    AddPeerSet(ir, {1});
    AddPeerSet(ir, {2});
    AddPeerSet(ir, {}, /*all=*/true);
    AddThreeTables(ir);
    AddRule(ir.mutable_tables(2)->mutable_ingress(), ir::TCP, 80, 80, peer);
    AddRule(ir.mutable_tables(2)->mutable_ingress(), ir::UDP, 80, 80, peer);
    AddRule(ir.mutable_tables(0)->mutable_egress(), ir::TCP, 80, 81, 2);
    AddRule(ir.mutable_tables(0)->mutable_egress(), ir::UDP, 80, 81, 2);
    return ir;
  };
  const bool pods = how == Swap::kPodTableDelta, relabel = how == Swap::kRelabel;
  const bool move_table = how == Swap::kMoveTable;
  const bool move = how == Swap::kMove || move_table;
  const ir::CompiledPolicy a = move_table ? ThreePodsMovedAlone(false) : move ? ThreePodsMoved(false) : relabel ? ThreePodsRelabelled(false)
                               : pods ? ThreePodsCOrNot(false) : program(0);
  const ir::CompiledPolicy b = move_table ? ThreePodsMovedAlone(true) : move ? ThreePodsMoved(true) : relabel ? ThreePodsRelabelled(true)
                               : pods ? ThreePodsCOrNot(true) : program(1);
  ASSERT_TRUE(CheckIr(a).ok()) << CheckIr(a);
  ASSERT_TRUE(CheckIr(b).ok()) << CheckIr(b);
  if (!pods && !relabel && !move) {
    const InPlacePlan there = PlanInPlaceUpdate(Generation(a, 1), Generation(b, 1));
    const InPlacePlan back = PlanInPlaceUpdate(Generation(b, 1), Generation(a, 1));
    ASSERT_TRUE(there.fallback.empty() && back.fallback.empty())
        << there.fallback << "; " << back.fallback;
    ASSERT_FALSE(there.cleanup_text.empty() || back.cleanup_text.empty());
  }
  std::vector<Probe> watched;
  std::vector<bool> allowed;
  int differ = 0;
  for (const Probe& p : AllProbes(t)) {
    const bool in_a = Expected(a, t, p), in_b = Expected(b, t, p);
    if (in_a != in_b) {
      ++differ;
      continue;
    }
    watched.push_back(p);
    allowed.push_back(in_a);
  }
  const int both_allowed = static_cast<int>(std::count(allowed.begin(), allowed.end(), true));
  ASSERT_GT(differ, 0);
  ASSERT_GT(both_allowed, 0);
  ASSERT_LT(both_allowed, static_cast<int>(watched.size()));
  const std::optional<ir::CompiledPolicyDelta> a_to_b = DiffPrograms(a, b), b_to_a = DiffPrograms(b, a);
  ASSERT_TRUE(a_to_b.has_value() && b_to_a.has_value());
  std::unique_ptr<Backend> nft = MakeNftBackend();
  ASSERT_TRUE(nft->Apply(a, where).ok());
  // One round before the swaps, not counted: the lab's first packets between two pods can
  // miss the 700 ms (the move swap's x/a -> x/c IPv6 flows did in round 0 with the
  // generation switch as with PlanMoveDelta, and never after); what it saw is printed.
  {
    std::vector<bool> got = RunProbes(t, watched, 700);
    for (size_t i = 0; i < watched.size(); ++i) {
      if (got[i] != allowed[i]) std::cerr << "warm-up: " << ProbeText(t, watched[i]) << " " << got[i] << "\n";
    }
  }
  auto swap = [&](const ir::CompiledPolicy& from, const ir::CompiledPolicy& to) {
    if (!through_delta) return nft->Update(from, to, where);
    return nft->UpdateDelta(from, &from == &a ? *a_to_b : *b_to_a, where);
  };
  std::atomic<bool> stop{false};
  std::atomic<int> swaps{0};
  absl::Status swap_status;
  std::thread swapper([&] {
    const ir::CompiledPolicy* from = &a;
    const ir::CompiledPolicy* to = &b;
    while (!stop.load()) {
      swap_status = swap(*from, *to);
      if (!swap_status.ok()) return;
      std::swap(from, to);
      swaps.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (from != &a) swap_status = swap(*from, a);  // end on `a`
  });
  int rounds = 0, passed_denied = 0, dropped_allowed = 0;
  for (; rounds < 4; ++rounds) {
    std::vector<bool> got = RunProbes(t, watched, 700);
    for (size_t i = 0; i < watched.size(); ++i) {
      if (got[i] == allowed[i]) continue;
      (allowed[i] ? dropped_allowed : passed_denied)++;
      ADD_FAILURE() << (allowed[i] ? "dropped, both allow: " : "passed, both deny: ")
                    << ProbeText(t, watched[i]) << " in round " << rounds;
    }
  }
  stop.store(true);
  swapper.join();
  ASSERT_TRUE(swap_status.ok()) << swap_status;
  const DeltaStats stats = DeltaStatsOf(*nft);
  std::cerr << "in-place probe: " << watched.size() << " flows watched over " << rounds
            << " rounds, " << swaps.load() << " swaps (" << stats.update_in_place
            << " in place, " << stats.update_switch << " switched)\n";
  EXPECT_GT(swaps.load(), 20);
  EXPECT_EQ(stats.update_switch, 0u) << stats.last_update;
  if (through_delta) {
    std::cerr << "  through UpdateDelta: " << stats.policy_in_place << " policy deltas, "
              << stats.pod_table_in_place << " pod deltas with tables and "
              << stats.identity_in_place << " with identities and " << stats.move_in_place
              << " moves in place, "
              << stats.full_path << " on the default path, " << stats.cleanups_committed
              << " deferred retirements committed\n";
    EXPECT_EQ(stats.full_path, 0u) << stats.last_fallback;
    if (move_table) EXPECT_GE(stats.move_tables_in_place, static_cast<uint64_t>(swaps.load()));
    EXPECT_GE(move ? stats.move_in_place : relabel ? stats.identity_in_place
              : pods ? stats.pod_table_in_place : stats.policy_in_place,
              static_cast<uint64_t>(swaps.load()));
    // A policy swap retires an identity chain after a grace period; x/c leaving takes its
    // address out of identity 3 first, so that chain goes at once (nothing jumps to it).
    if (!pods && !relabel && !move) EXPECT_GE(stats.cleanups_committed + 1, static_cast<uint64_t>(swaps.load()));
  } else {
    EXPECT_GE(stats.update_in_place, static_cast<uint64_t>(swaps.load()));
  }
  EXPECT_EQ(passed_denied, 0);
  EXPECT_EQ(dropped_allowed, 0);
  if (pods) {
    // One commit per event, what is left deferred (nft.h PlanPodTableDelta).
    EXPECT_GE(stats.pod_table_one_commit, static_cast<uint64_t>(swaps.load())) << stats.last_two_commits;
  }
  // And after the swaps the program is `a`'s, verdict for verdict (a swap's deferred commits
  // still wait for the next call: the event is done when UpdateDelta returns).
  std::vector<Probe> all = AllProbes(t);
  auto expect_all = [&](const ir::CompiledPolicy& program, const char* what) {
    std::vector<bool> got = RunProbes(t, all, 700);
    for (size_t i = 0; i < all.size(); ++i) {
      EXPECT_EQ(got[i], Expected(program, t, all[i])) << what << ": " << ProbeText(t, all[i]);
    }
  };
  expect_all(a, "after the swaps");
  if (move) {
    // x/a moves there and back, each probed before any other call (the retirement waits).
    ASSERT_TRUE(swap(a, b).ok());
    expect_all(b, "x/a moved");
    ASSERT_TRUE(swap(b, a).ok());
    expect_all(a, "x/a moved back");
  }
  if (pods) {
    // x/c comes back, then goes, each probed before any other call.
    ASSERT_TRUE(swap(a, b).ok());
    expect_all(b, "x/c came");
    ASSERT_TRUE(swap(b, a).ok());
    expect_all(a, "x/c went");
  }
  ASSERT_TRUE(nft->Remove(where).ok());
}

TEST(NftPackets, PolicyEventsInPlaceNeverPassADeniedFlowNorDropAnAllowedOne) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!RunCommand({"nft", "--version"}).ok()) GTEST_SKIP() << "no nft binary";
  ExpectSwapsUnderProbes(Swap::kUpdate);
}

TEST(NftPackets, PolicyDeltasInPlaceNeverPassADeniedFlowNorDropAnAllowedOne) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!RunCommand({"nft", "--version"}).ok()) GTEST_SKIP() << "no nft binary";
  ExpectSwapsUnderProbes(Swap::kPolicyDelta);
}

// A pod of this node coming with its table and leaving with it, over and over, as pod deltas
// in place (two commits each: nft.h PlanPodTableDelta) while every flow whose verdict both
// programs agree on is probed: none passes denied or is dropped allowed in between.
TEST(NftPackets, PodDeltasWithTablesNeverPassADeniedFlowNorDropAnAllowedOne) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!RunCommand({"nft", "--version"}).ok()) GTEST_SKIP() << "no nft binary";
  ExpectSwapsUnderProbes(Swap::kPodTableDelta);
}

// A pod relabelled between two identities that peer sets name, over and over, as pod deltas
// in place (nft.h PlanIdentityDelta: the gains, the addresses, the losses deferred past a
// grace period) while every flow both programs agree on is probed.
TEST(NftPackets, RelabelsInPlaceNeverPassADeniedFlowNorDropAnAllowedOne) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!RunCommand({"nft", "--version"}).ok()) GTEST_SKIP() << "no nft binary";
  ExpectSwapsUnderProbes(Swap::kRelabel);
}

// A pod of this node moved into another existing class and back, over and over, as pod
// deltas in place (nft.h PlanMoveDelta: the indirection created, a grace period, the
// elements pointed at it with its new rules, its retirement deferred) while every flow both
// programs agree on is probed: ThreePodsMoved's flows that either mix of the two programs
// passes must stay denied.
TEST(NftPackets, MovesInPlaceNeverPassADeniedFlowNorDropAnAllowedOne) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!RunCommand({"nft", "--version"}).ok()) GTEST_SKIP() << "no nft binary";
  ExpectSwapsUnderProbes(Swap::kMove);
}

// The same with x/a its table's only endpoint (ThreePodsMovedAlone): each move there retires
// table 0's chains after the indirection's retirement, each move back brings them with the
// indirection (nft.h PlanMoveDelta, "A table that comes or goes"); a mix of the two sides
// passes x/a -> x/b UDP 80 or x/b -> x/a UDP 81, and table 0 met empty passes the first.
TEST(NftPackets, MovesWithTablesInPlaceNeverPassADeniedFlowNorDropAnAllowedOne) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!RunCommand({"nft", "--version"}).ok()) GTEST_SKIP() << "no nft binary";
  ExpectSwapsUnderProbes(Swap::kMoveTable);
}

// ---- The whole path as netlink batches (netlink.h WholeBatch) against nft's own parser ----
// The kernel's JSON listing of the table (`nft -j list table inet np`) with every `handle`
// dropped (they count per table and differ by history), one object per line: the listing is
// nft reading the kernel back, so equal listings mean equal chains, rules (expression by
// expression), sets with flags, key types and comments, and elements.
std::vector<std::string> JsonObjects(const std::string& netns) {
  absl::StatusOr<std::string> json =
      RunCommand({"nft", "-j", "list", "table", "inet", kTableName}, "", netns);
  if (!json.ok()) return {absl::StrCat("no listing: ", json.status().ToString())};
  std::string s = *json;
  for (size_t at; (at = s.find("\"handle\": ")) != std::string::npos;) {
    size_t end = at + 10;
    while (end < s.size() && std::isdigit(static_cast<unsigned char>(s[end]))) ++end;
    if (absl::StartsWith(absl::string_view(s).substr(end), ", ")) {
      end += 2;
    } else if (at >= 2 && s.compare(at - 2, 2, ", ") == 0) {
      at -= 2;
    }
    s.erase(at, end - at);
  }
  return absl::StrSplit(s, "}}, {\"");
}

void ExpectSameListing(const std::string& text_ns, const std::string& netlink_ns,
                       const std::string& what) {
  const std::vector<std::string> want = JsonObjects(text_ns), got = JsonObjects(netlink_ns);
  ASSERT_GT(want.size(), 5u) << what << ": " << want[0];
  for (size_t i = 0; i < std::max(want.size(), got.size()); ++i) {
    ASSERT_EQ(i < got.size() ? got[i] : "(none)", i < want.size() ? want[i] : "(none)")
        << what << ": object " << i << " of the listing differs (left: netlink, right: nft -f)";
  }
}

// Seeded programs — hand-written (100 pods, hostile names, the tier scenario), this file's
// random IRs, test_util's random IRs (dual-stack endpoints, tier rules with quotes in their
// origins) — applied one after another in two namespaces: by libnftables from the text
// (NP_NFT_TEXT_WHOLE) in one, by the netlink batches in the other. After each Apply (the
// first install, then switches that retire the previous generation) the kernel's listings
// are equal, and the netlink path was taken for every commit.
TEST_F(NftKernelTest, WholePathNetlinkListsAsNftsOwnText) {
  const std::string text_ns = absl::StrCat("np-nft-wtext-", getpid());
  const std::string nl_ns = absl::StrCat("np-nft-wnl-", getpid());
  ASSERT_TRUE(RunCommand({"ip", "netns", "add", text_ns}).ok());
  ASSERT_TRUE(RunCommand({"ip", "netns", "add", nl_ns}).ok());
  struct Cleanup {
    std::vector<std::string> netns;
    ~Cleanup() {
      unsetenv("NP_NFT_TEXT_WHOLE");
      for (const std::string& n : netns) (void)RunCommand({"ip", "netns", "del", n});
    }
  } cleanup{{text_ns, nl_ns}};
  std::unique_ptr<Backend> by_text = MakeNftBackend();
  std::unique_ptr<Backend> by_netlink = MakeNftBackend();
  const uint64_t seed = 20261201;
  std::mt19937 rng(seed);
  // A program whose batch is far past the socket's default send buffer (and one netlink
  // message's 64 KB): 4,000 dual-stack pods of 40 interleaved identities (no merging), every
  // pod selected for both directions, peer sets of many mark intervals (named sets).
  ir::CompiledPolicy big;
  {
    std::vector<Pod> pods;
    for (uint32_t i = 0; i < 4000; ++i) pods.push_back({absl::StrCat("ns/big", i), 1 + (i * 7) % 39});
    big = PodsIr(pods, 40);
    std::vector<uint32_t> odd, some;
    for (uint32_t id = 1; id < 40; id += 2) odd.push_back(id);
    for (uint32_t id = 0; id < 40; id += 3) some.push_back(id);
    AddPeerSet(big, odd);
    AddPeerSet(big, some);
    for (uint32_t t = 0; t < 4; ++t) {
      ir::Table* table = big.add_tables();
      table->set_id(t);
      table->add_policies(absl::StrCat("ns/big-", t));
      AddRule(table->mutable_ingress(), ir::TCP, 80 + t, 81 + t, t % 2);
      AddRule(table->mutable_egress(), ir::UDP, 53, 53, 1 - t % 2);
    }
    for (int i = 0; i < big.endpoints_size(); ++i) {
      big.mutable_endpoints(i)->set_selected(true);
      big.mutable_endpoints(i)->set_table(static_cast<uint32_t>(i % 4));
    }
  }
  std::vector<std::pair<std::string, ir::CompiledPolicy>> irs = {
      {"HundredPods", HundredPods()},
      {"4,000 pods", big},
      {"HostileNames", HostileNames()},
      {"TierScenarioIr", iptables::testutil::TierScenarioIr()}};
  for (int i = 0; i < 12; ++i) {
    irs.push_back({absl::StrCat("RandomIr #", i, " of seed ", seed), RandomIr(rng)});
    const uint64_t s = seed + static_cast<uint64_t>(i);
    irs.push_back({absl::StrCat("testutil::RandomIr(", s, ")"),
                   iptables::testutil::WithPods(iptables::testutil::RandomIr(s))});
  }
  uint64_t commits = 0;
  for (size_t i = 0; i < irs.size(); ++i) {
    const auto& [name, ir] = irs[i];
    setenv("NP_NFT_TEXT_WHOLE", "1", 1);
    ASSERT_TRUE(by_text->Apply(ir, {{}, text_ns}).ok()) << name;
    unsetenv("NP_NFT_TEXT_WHOLE");
    ASSERT_TRUE(by_netlink->Apply(ir, {{}, nl_ns}).ok()) << name;
    commits += i == 0 ? 2 : 3;  // objects, base chains, retirement (none at the first install)
    ExpectSameListing(text_ns, nl_ns, name);
    const DeltaStats stats = DeltaStatsOf(*by_netlink);
    ASSERT_EQ(stats.whole_netlink, commits) << name << ": " << stats.last_netlink_error;
    ASSERT_EQ(stats.whole_text, 0u) << name << ": " << stats.last_netlink_error;
  }
  EXPECT_EQ(DeltaStatsOf(*by_text).whole_netlink, 0u);
  EXPECT_GT(DeltaStatsOf(*by_text).whole_text, 0u);
}


// A whole-path batch the kernel refuses changes nothing and goes to libnftables (refused
// too here), and the switch recovers from a listing, by netlink again: another writer made
// the next generation's first chain, so the exclusive create (the guard) fails.
TEST_F(NftKernelTest, ARefusedWholeBatchFallsBackAndRecovers) {
  std::unique_ptr<Backend> nft = MakeNftBackend();
  ASSERT_TRUE(nft->Apply(HundredPods(), {}).ok());
  ASSERT_TRUE(RunCommand({"nft", "add", "chain", "inet", kTableName, "id_other_g2"}).ok());
  const DeltaStats before = DeltaStatsOf(*nft);
  ASSERT_TRUE(nft->Apply(iptables::testutil::TierScenarioIr(), {}).ok());
  const DeltaStats after = DeltaStatsOf(*nft);
  EXPECT_EQ(after.whole_netlink_fallbacks, before.whole_netlink_fallbacks + 1);
  EXPECT_TRUE(absl::StrContains(after.last_netlink_error, "create chain inet np id_other_g2"))
      << after.last_netlink_error;
  EXPECT_EQ(after.whole_text, before.whole_text + 1);  // the refused text of the same switch
  EXPECT_EQ(after.whole_netlink, before.whole_netlink + 3);  // then g3's two commits, retire
  absl::StatusOr<std::string> listing = RunCommand({"nft", "-t", "list", "table", "inet", kTableName});
  ASSERT_TRUE(listing.ok());
  EXPECT_TRUE(absl::StrContains(*listing, "chain id_other_g3")) << *listing;
  EXPECT_FALSE(absl::StrContains(*listing, "_g2")) << *listing;
  EXPECT_FALSE(absl::StrContains(*listing, "_g1 ")) << *listing;
  ASSERT_TRUE(nft->Remove({}).ok());
}

}  // namespace
}  // namespace np::backends::nft
