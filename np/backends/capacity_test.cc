// Capacity planning before apply (issue 8 item 6): every backend reports what its program
// asks of the kernel and refuses, quickly and with the numbers, a program past the kernel's
// limits or np's budgets — in Render and in Apply — instead of emitting what the kernel
// refuses or takes forever to load.
//
// The review's case: 70,000 ipBlock peers, each on a port of its own. nft refused (identity
// limit), but iptables emitted 65,535 ipsets whose `ipset restore` had not finished after
// 900 s. The IR is built here directly, as the lowering writes it for
// bench/cluster_generator.h DistinctPeersCluster (the engine needs minutes for that cluster;
// the backends are what is under test).
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "np/backends/backend.h"
#include "np/backends/ebpf/loader.h"
#include "np/backends/ebpf/maps.h"
#include "np/backends/iptables/test_util.h"
#include "np/backends/util.h"

namespace np::backends {
namespace {

std::string V4(uint64_t a) {
  std::string b(4, '\0');
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((a >> (24 - 8 * i)) & 0xff);
  return b;
}

// One pod x/server (10.0.0.1, identity 1) isolated for ingress; peer i (identity 2 + i) is
// the block 11.0.0.0 + i * 2^(k+1) of 2^k addresses minus its second address (k prefixes),
// admitted on TCP port 1 + i mod 65535 (so ports past 65,535 peers share a rule).
ir::CompiledPolicy DistinctPeersIr(int peers, int k) {
  ir::CompiledPolicy ir;
  ir.set_node("node-0");
  for (int i = 0; i < peers + 2; ++i) {
    ir::Identity* id = ir.add_identities();
    id->set_id(i);
    id->set_external(i != 1);
  }
  ir.mutable_identities(1)->add_pods("x/server");
  auto range = [&](uint64_t first, uint64_t last, uint32_t identity) {
    if (ir.ipv4_size() > 0 && ir.ipv4(ir.ipv4_size() - 1).identity() == identity) {
      ir::AddressRange* r = ir.mutable_ipv4(ir.ipv4_size() - 1);
      first = 0;
      for (char c : r->first()) first = (first << 8) | static_cast<uint8_t>(c);
      ir.mutable_ipv4()->RemoveLast();
    }
    ir::AddressRange* r = ir.add_ipv4();
    r->set_first(V4(first));
    r->set_last(V4(last));
    r->set_identity(identity);
    for (const std::string& c : iptables::testutil::CidrsOf(V4(first), V4(last))) r->add_cidrs(c);
  };
  range(0, 0x0a000000, 0);
  range(0x0a000001, 0x0a000001, 1);
  uint64_t next = 0x0a000002;
  for (int i = 0; i < peers; ++i) {
    const uint64_t base = (uint64_t{11} << 24) + (uint64_t(i) << (k + 1));
    range(next, base - 1, 0);
    range(base, base, 2 + i);
    next = base + 1;
    if (k > 1) {
      range(base + 1, base + 1, 0);
      range(base + 2, base + (uint64_t{1} << k) - 1, 2 + i);
      next = base + (uint64_t{1} << k);
    }
  }
  range(next, 0xffffffff, 0);
  ir::AddressRange* v6 = ir.add_ipv6();
  v6->set_first(std::string(16, '\0'));
  v6->set_last(std::string(16, '\xff'));
  v6->add_cidrs("::/0");
  ir::Table* table = ir.add_tables();
  table->add_policies("x/distinct-peers");
  table->mutable_ingress()->set_isolated(true);
  const int rules = std::min(peers, 65535);
  for (int p = 0; p < rules; ++p) {
    ir::PeerSet* set = ir.add_peer_sets();
    set->set_id(p);
    for (int i = p; i < peers; i += 65535) set->add_identities(2 + i);
    ir::PortRule* rule = table->mutable_ingress()->add_rules();
    rule->set_protocol(ir::TCP);
    rule->set_first_port(1 + p);
    rule->set_last_port(1 + p);
    rule->set_peer_set(p);
  }
  ir::Endpoint* e = ir.add_endpoints();
  e->set_namespace_("x");
  e->set_name("server");
  e->add_ips("10.0.0.1");
  e->set_selected(true);
  return ir;
}

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

const ir::CapacityItem* Item(const ir::BackendCapacity& c, absl::string_view name) {
  for (const ir::CapacityItem& item : c.items()) {
    if (item.name() == name) return &item;
  }
  return nullptr;
}

bool Root() { return geteuid() == 0; }

class CapacityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    seventy_k_ = new ir::CompiledPolicy(DistinctPeersIr(70000, 5));
    // As root, everything the test loads goes into a network namespace of its own.
    if (Root()) ASSERT_EQ(unshare(CLONE_NEWNET), 0);
  }
  static void TearDownTestSuite() { delete seventy_k_; }
  static const ir::CompiledPolicy& SeventyK() { return *seventy_k_; }

 private:
  static ir::CompiledPolicy* seventy_k_;
};
ir::CompiledPolicy* CapacityTest::seventy_k_ = nullptr;

// `backend` reports `item` over its hard limit for the 70k program, and Render and Apply
// refuse it within seconds, naming the numbers. Apply refuses before touching the kernel.
void ExpectRefusedOnLimit(const char* backend_name, const ir::CompiledPolicy& ir,
                          const char* item, uint32_t used, uint32_t limit,
                          const std::string& message) {
  std::unique_ptr<Backend> backend = MakeBackend(backend_name);
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<ir::BackendCapacity> c = backend->Capacity(ir);
  const double capacity_s = SecondsSince(t0);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->fits());
  EXPECT_EQ(Item(*c, item)->used(), used);
  EXPECT_EQ(Item(*c, item)->limit(), limit);
  auto t1 = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> text = backend->Render(ir);
  std::cerr << backend_name << ": Capacity " << capacity_s << " s, Render refused in "
            << SecondsSince(t1) << " s: " << text.status().message() << "\n";
  EXPECT_EQ(text.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(text.status().message(), message)) << text.status();
  if (Root()) {
    auto t2 = std::chrono::steady_clock::now();
    absl::Status applied = backend->Apply(ir, {});
    std::cerr << backend_name << ": Apply refused in " << SecondsSince(t2) << " s\n";
    EXPECT_EQ(applied.code(), absl::StatusCode::kResourceExhausted) << applied;
    absl::StatusOr<std::string> sets = RunCommand({"ipset", "list", "-n"});
    ASSERT_TRUE(sets.ok()) << sets.status();
    EXPECT_EQ(*sets, "");
    absl::StatusOr<std::string> tables = RunCommand({"nft", "list", "tables"});
    ASSERT_TRUE(tables.ok()) << tables.status();
    EXPECT_FALSE(absl::StrContains(*tables, " np")) << *tables;
  }
  EXPECT_LT(SecondsSince(t0), 20);
}

TEST_F(CapacityTest, SeventyThousandPeersNftRefusesOnIdentities) {
  ExpectRefusedOnLimit("nft", SeventyK(), "identities", 70002, 65534,
                       "identities 70,002 > limit 65,534");
}

// Five prefixes a peer: one ipset per port rule, 65,535 of them, and x/server's dispatch
// set (table 0's ingress).
TEST_F(CapacityTest, SeventyThousandPeersIptablesRefusesOnIpsets) {
  ExpectRefusedOnLimit("iptables", SeventyK(), "ipsets", 65536, 65472,
                       "ipsets 65,536 > limit 65,472");
}

TEST_F(CapacityTest, SeventyThousandPeersFitEbpfAndItsMapsLoad) {
  std::unique_ptr<Backend> ebpf = MakeBackend("ebpf");
  absl::StatusOr<ir::BackendCapacity> c = ebpf->Capacity(SeventyK());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->fits()) << CapacityText(*c);
  ASSERT_TRUE(ebpf->Render(SeventyK()).ok());
  // What fits loads: every map filled by the loader in the kernel.
  if (Root()) {
    absl::StatusOr<ebpf::MapContents> maps = ebpf::BuildMaps(SeventyK());
    ASSERT_TRUE(maps.ok()) << maps.status();
    EXPECT_EQ(maps->TotalEntries(), Item(*c, "map_entries")->used());
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<ebpf::Generation>> loaded = ebpf::Generation::Load(*maps, {});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    std::cerr << "ebpf: " << maps->TotalEntries() << " entries loaded in " << SecondsSince(t0)
              << " s\n";
    EXPECT_LT(SecondsSince(t0), 60);
  }
  // Past a budget (lowered here), Render and Apply refuse with the numbers.
  BackendOptions small;
  small.budgets["map_entries"] = 100000;
  std::unique_ptr<Backend> tight = MakeBackend("ebpf", small);
  absl::StatusOr<std::string> text = tight->Render(SeventyK());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(text.status().message(), "map_entries ")) << text.status();
  EXPECT_TRUE(absl::StrContains(text.status().message(), "> budget 100,000")) << text.status();
  EXPECT_EQ(tight->Apply(SeventyK(), {}).code(), absl::StatusCode::kResourceExhausted);
}

// One prefix a peer: iptables writes each peer into its rule, no ipset but x/server's
// dispatch set, and the program that needed 65,535 sets loads in seconds.
TEST_F(CapacityTest, SeventyThousandSinglePrefixPeersLoadWithIptables) {
  ir::CompiledPolicy ir = DistinctPeersIr(70000, 1);
  std::unique_ptr<Backend> iptables = MakeBackend("iptables");
  absl::StatusOr<ir::BackendCapacity> c = iptables->Capacity(ir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->fits()) << CapacityText(*c);
  EXPECT_EQ(Item(*c, "ipsets")->used(), 1u);
  // Rules: 65,535 port rules, 4,465 of them with a second peer (ports are shared past
  // 65,535 peers), plus the conntrack rule, NP-FORWARD's jump to the dispatch chain NP-D0,
  // NP-D0's dispatch rule for x/server's table, and the DROP.
  EXPECT_EQ(Item(*c, "ipv4_rules")->used(), 70000u + 4u);
  if (!Root()) return;
  auto t0 = std::chrono::steady_clock::now();
  absl::Status applied = iptables->Apply(ir, {});
  ASSERT_TRUE(applied.ok()) << applied;
  std::cerr << "iptables: 70,000 single-prefix peers applied in " << SecondsSince(t0) << " s\n";
  EXPECT_LT(SecondsSince(t0), 60);
  EXPECT_TRUE(iptables->Remove({}).ok());
}

TEST_F(CapacityTest, BudgetsCanBeRaisedHardLimitsCannot) {
  ir::CompiledPolicy ir = DistinctPeersIr(300, 1);
  for (const char* name : {"nft", "iptables", "ebpf"}) {
    SCOPED_TRACE(name);
    std::unique_ptr<Backend> backend = MakeBackend(name);
    absl::StatusOr<ir::BackendCapacity> c = backend->Capacity(ir);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->fits());
    EXPECT_EQ(c->backend(), name);
    // Lower every budget below what the program uses: Render refuses, naming each.
    BackendOptions low;
    for (const ir::CapacityItem& item : c->items()) {
      if (item.budget() > 0 && item.used() > 1) low.budgets[item.name()] = item.used() - 1;
    }
    ASSERT_FALSE(low.budgets.empty());
    absl::StatusOr<std::string> refused = MakeBackend(name, low)->Render(ir);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
    for (const auto& [budget, value] : low.budgets) {
      EXPECT_TRUE(absl::StrContains(refused.status().message(), budget)) << refused.status();
    }
    // A budget no item has, or a hard limit: an error, not a silent no-op.
    BackendOptions unknown;
    unknown.budgets["no_such_thing"] = 5;
    EXPECT_EQ(MakeBackend(name, unknown)->Capacity(ir).status().code(),
              absl::StatusCode::kInvalidArgument);
    BackendOptions hard;
    hard.budgets["identities"] = 1;
    absl::StatusOr<ir::BackendCapacity> h = MakeBackend(name, hard)->Capacity(ir);
    if (Item(*c, "identities") != nullptr) {
      EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_TRUE(absl::StrContains(h.status().message(), "cannot be raised")) << h.status();
    }
  }
  // Raising a budget lets a program through that the default refuses.
  BackendOptions tiny;
  tiny.budgets["rules"] = 100;
  EXPECT_FALSE(MakeBackend("nft", tiny)->Render(ir).ok());
  tiny.budgets["rules"] = 1000;
  EXPECT_TRUE(MakeBackend("nft", tiny)->Render(ir).ok());
}

// The items match what the program really holds.
TEST_F(CapacityTest, ItemsCountTheProgram) {
  ir::CompiledPolicy ir = DistinctPeersIr(300, 5);
  absl::StatusOr<ir::BackendCapacity> nft = MakeBackend("nft")->Capacity(ir);
  ASSERT_TRUE(nft.ok());
  absl::StatusOr<std::string> text = MakeBackend("nft")->Render(ir);
  ASSERT_TRUE(text.ok());
  // Rules: one line each in the chains; count the lines that are not declarations.
  size_t chains = 0;
  for (size_t at = text->find("  chain "); at != std::string::npos; at = text->find("  chain ", at + 1)) {
    ++chains;
  }
  EXPECT_EQ(Item(*nft, "chains")->used(), chains);
  absl::StatusOr<ir::BackendCapacity> ipt = MakeBackend("iptables")->Capacity(ir);
  ASSERT_TRUE(ipt.ok());
  absl::StatusOr<std::string> rendered = MakeBackend("iptables")->Render(ir);
  ASSERT_TRUE(rendered.ok());
  size_t creates = 0, adds = 0;
  for (size_t at = rendered->find("\ncreate "); at != std::string::npos;
       at = rendered->find("\ncreate ", at + 1)) {
    ++creates;
  }
  for (size_t at = rendered->find("\nadd "); at != std::string::npos;
       at = rendered->find("\nadd ", at + 1)) {
    ++adds;
  }
  EXPECT_EQ(Item(*ipt, "ipsets")->used(), creates);
  // 300 peer sets of 5 prefixes, and x/server's dispatch set of its one address.
  EXPECT_EQ(creates, 301u);
  EXPECT_EQ(Item(*ipt, "ipset_entries")->used(), adds);
  EXPECT_EQ(adds, 1501u);
}

}  // namespace
}  // namespace np::backends
