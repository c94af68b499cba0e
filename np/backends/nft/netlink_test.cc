// The raw netlink element edits (netlink.h) against nft itself: as root, in a network
// namespace of the test's own, each element kind np edits (one address in a verdict map,
// ipv4 and ipv6; intervals, one ending at the family's last address, in an interval verdict
// map) is written by NftNetlink into one map and by `nft -f` (the oracle: libnftables'
// encoding) into a twin map; the kernel's listings of the two must be equal, and equal to
// the elements the edit means. A batch the kernel refuses, or one naming a generation that
// is not the kernel's, changes nothing.
#include "np/backends/nft/netlink.h"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "np/backends/nft/nft.h"
#include "np/backends/util.h"

namespace np::backends::nft {
namespace {

std::string Bytes(const std::string& address) {
  absl::StatusOr<std::string> b = AddressBytes(address);
  EXPECT_TRUE(b.ok()) << address;
  return b.ok() ? *b : std::string();
}

SetElementEdit::Element E(const std::string& first, const std::string& last,
                          const std::string& jump = "") {
  return {Bytes(first), Bytes(last), jump};
}

// The maps np edits in place, each twice: `n_*` written by netlink, `t_*` by nft.
constexpr char kTable[] = "nltest";
std::string Declarations() {
  std::string maps;
  for (const char* who : {"n", "t"}) {
    absl::StrAppend(&maps, "  map ", who, "_i4 { type ipv4_addr : verdict; flags interval; ",
                    "elements = { 0.0.0.0-255.255.255.255 : jump c } }\n",
                    "  map ", who, "_i6 { type ipv6_addr : verdict; flags interval; ",
                    "elements = { ::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff : jump c } }\n",
                    "  map ", who, "_d4 { type ipv4_addr : verdict; }\n",
                    "  map ", who, "_d6 { type ipv6_addr : verdict; }\n");
  }
  return absl::StrCat("table inet ", kTable, " {\n  chain c {}\n  chain d {}\n", maps, "}\n");
}

class NetlinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    if (!RunCommand({"nft", "--version"}).ok()) GTEST_SKIP() << "no nft binary";
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET)";
    ASSERT_TRUE(RunCommand({"nft", "-f", "-"}, Declarations()).ok());
    absl::StatusOr<std::unique_ptr<NftNetlink>> nl = NftNetlink::Open();
    ASSERT_TRUE(nl.ok()) << nl.status();
    nl_ = *std::move(nl);
  }

  // The map's listing, its name replaced by "M" so that twins compare.
  std::string List(const std::string& map) {
    absl::StatusOr<std::string> l = RunCommand({"nft", "list", "map", "inet", kTable, map});
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? absl::StrReplaceAll(*l, {{" " + map + " ", " M "}}) : "";
  }

  // The same edits through netlink (on n_<name>) and through nft (on t_<name>).
  void Both(const std::string& name, std::vector<SetElementEdit> edits) {
    std::string text;
    for (SetElementEdit& e : edits) {
      std::vector<std::string> elements;
      for (const SetElementEdit::Element& x : e.elements) {
        std::string key = x.first == x.last
                              ? AddressText(x.first)
                              : absl::StrCat(AddressText(x.first), "-", AddressText(x.last));
        elements.push_back(x.jump.empty() ? key : absl::StrCat(key, " : jump ", x.jump));
      }
      absl::StrAppend(&text, e.add ? "add" : "delete", " element inet ", kTable, " t_", name,
                      " { ", absl::StrJoin(elements, ", "), " }\n");
      e.set = "n_" + name;
    }
    ASSERT_TRUE(RunCommand({"nft", "-f", "-"}, text).ok()) << text;
    absl::StatusOr<uint32_t> gen = nl_->GenerationId();
    ASSERT_TRUE(gen.ok()) << gen.status();
    ASSERT_TRUE(nl_->Commit(kTable, edits, *gen).ok()) << text;
    EXPECT_EQ(List("n_" + name), List("t_" + name)) << text;
  }

  std::unique_ptr<NftNetlink> nl_;
};

TEST_F(NetlinkTest, OneAddressInAVerdictMapIpv4AndIpv6) {
  Both("d4", {{"", true, false, {E("10.1.2.3", "10.1.2.3", "c"), E("10.1.2.4", "10.1.2.4", "d")}}});
  EXPECT_NE(List("n_d4").find("10.1.2.3 : jump c, 10.1.2.4 : jump d"), std::string::npos)
      << List("n_d4");
  Both("d4", {{"", false, false, {E("10.1.2.3", "10.1.2.3")}}});
  EXPECT_EQ(List("n_d4").find("10.1.2.3"), std::string::npos) << List("n_d4");
  Both("d6", {{"", true, false, {E("fd00::1", "fd00::1", "d")}}});
  EXPECT_NE(List("n_d6").find("fd00::1 : jump d"), std::string::npos) << List("n_d6");
  // A key replaced by another target in one batch: delete then add.
  Both("d6", {{"", false, false, {E("fd00::1", "fd00::1")}},
              {"", true, false, {E("fd00::1", "fd00::1", "c")}}});
  EXPECT_NE(List("n_d6").find("fd00::1 : jump c"), std::string::npos) << List("n_d6");
}

TEST_F(NetlinkTest, IntervalsIncludingOneEndingAtTheLastAddress) {
  // The whole space split around one address, as a pod event does to identity4; the last
  // piece ends at 255.255.255.255 (no end element), the first starts at 0.0.0.0.
  Both("i4", {{"", false, true, {E("0.0.0.0", "255.255.255.255")}},
              {"", true, true,
               {E("0.0.0.0", "10.0.0.4", "c"), E("10.0.0.5", "10.0.0.5", "d"),
                E("10.0.0.6", "255.255.255.255", "c")}}});
  EXPECT_NE(List("n_i4").find("0.0.0.0-10.0.0.4 : jump c, 10.0.0.5 : jump d"),
            std::string::npos)
      << List("n_i4");
  // A prefix-shaped interval and a neighbour, then merged back.
  Both("i4", {{"", false, true, {E("10.0.0.6", "255.255.255.255")}},
              {"", true, true,
               {E("10.0.0.6", "10.0.0.255", "c"), E("10.0.1.0", "10.0.1.255", "d"),
                E("10.0.2.0", "255.255.255.255", "c")}}});
  EXPECT_NE(List("n_i4").find("10.0.1.0/24 : jump d"), std::string::npos) << List("n_i4");
  Both("i4", {{"", false, true,
               {E("0.0.0.0", "10.0.0.4"), E("10.0.0.5", "10.0.0.5"), E("10.0.0.6", "10.0.0.255"),
                E("10.0.1.0", "10.0.1.255"), E("10.0.2.0", "255.255.255.255")}},
              {"", true, true, {E("0.0.0.0", "255.255.255.255", "c")}}});
  EXPECT_NE(List("n_i4").find("0.0.0.0/0 : jump c"), std::string::npos) << List("n_i4");
  Both("i6", {{"", false, true, {E("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}},
              {"", true, true,
               {E("::", "fd00::ff", "c"), E("fd00::100", "fd00::100", "d"),
                E("fd00::101", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "c")}}});
  EXPECT_NE(List("n_i6").find("fd00::100 : jump d"), std::string::npos) << List("n_i6");
}

// An edit of more elements than one netlink attribute can hold (its length is 16 bits) is
// split over several messages of the same batch, and is still all or nothing.
TEST_F(NetlinkTest, AnEditOfManyElementsIsSplitAndStillOneTransaction) {
  SetElementEdit many{"n_d4", true, false, {}};
  std::string text;
  for (int i = 0; i < 1500; ++i) {
    const std::string a = absl::StrCat("10.2.", i / 250, ".", i % 250);
    many.elements.push_back(E(a, a, "c"));
    absl::StrAppend(&text, i ? ", " : "", a, " : jump c");
  }
  std::vector<int> messages;
  ASSERT_TRUE(EncodeElementBatch(kTable, {many}, 1, 0, &messages).ok());
  EXPECT_GT(messages.size(), 4u);
  // With a refused edit after it, none of it lands.
  absl::StatusOr<uint32_t> gen = nl_->GenerationId();
  ASSERT_TRUE(gen.ok());
  const std::string before = List("n_d4");
  EXPECT_TRUE(absl::IsNotFound(
      nl_->Commit(kTable, {many, {"n_d4", false, false, {E("10.3.0.1", "10.3.0.1")}}}, *gen)));
  EXPECT_EQ(List("n_d4"), before);
  ASSERT_TRUE(RunCommand({"nft", "add", "element", "inet", kTable, "t_d4", "{ " + text + " }"}).ok());
  gen = nl_->GenerationId();
  ASSERT_TRUE(gen.ok());
  ASSERT_TRUE(nl_->Commit(kTable, {many}, *gen).ok());
  EXPECT_EQ(List("n_d4"), List("t_d4"));
}

TEST_F(NetlinkTest, ARefusedBatchChangesNothing) {
  const std::string before4 = List("n_d4"), before_i4 = List("n_i4");
  absl::StatusOr<uint32_t> gen = nl_->GenerationId();
  ASSERT_TRUE(gen.ok());
  // An add, then the delete of an element that is not there: all or nothing.
  absl::Status s = nl_->Commit(
      kTable,
      {{"n_d4", true, false, {E("10.9.9.9", "10.9.9.9", "c")}},
       {"n_i4", false, true, {E("0.0.0.0", "10.0.0.0")}}},
      *gen);
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_NE(s.message().find("n_i4"), absl::string_view::npos) << s;
  EXPECT_EQ(List("n_d4"), before4);
  EXPECT_EQ(List("n_i4"), before_i4);
  // A refused batch does not commit: the generation is where it was, and the socket is
  // still in step (the next batch is answered as itself).
  absl::StatusOr<uint32_t> after = nl_->GenerationId();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *gen);
  EXPECT_TRUE(nl_->Commit(kTable, {{"n_d4", true, false, {E("10.9.9.9", "10.9.9.9", "c")}}}, *gen).ok());
  EXPECT_EQ(*nl_->GenerationId(), NftNetlink::NextGeneration(*gen));
}

TEST_F(NetlinkTest, AnotherWritersCommitFailsTheBatch) {
  absl::StatusOr<uint32_t> gen = nl_->GenerationId();
  ASSERT_TRUE(gen.ok());
  ASSERT_TRUE(RunCommand({"nft", "add", "element", "inet", kTable, "t_d4", "{ 1.1.1.1 : jump c }"}).ok());
  const std::string before = List("n_d4");
  absl::Status s = nl_->Commit(kTable, {{"n_d4", true, false, {E("10.9.9.9", "10.9.9.9", "c")}}}, *gen);
  EXPECT_TRUE(absl::IsAborted(s)) << s;
  EXPECT_EQ(List("n_d4"), before);
  // With the kernel's generation it goes through; the generation then steps by one.
  absl::StatusOr<uint32_t> now = nl_->GenerationId();
  ASSERT_TRUE(now.ok());
  EXPECT_NE(*now, *gen);
  EXPECT_TRUE(nl_->Commit(kTable, {{"n_d4", true, false, {E("10.9.9.9", "10.9.9.9", "c")}}}, *now).ok());
  EXPECT_EQ(*nl_->GenerationId(), NftNetlink::NextGeneration(*now));
}

// Random re-partitions of the interval maps and random dispatch edits (seeded;
// NP_NFT_NETLINK_SEED replays one), each step written by netlink and by nft: the two maps
// list alike after every step.
TEST_F(NetlinkTest, RandomEditsListAsNftsOwn) {
  uint64_t seed = 20261201;
  if (const char* s = getenv("NP_NFT_NETLINK_SEED"); s != nullptr) seed = std::strtoull(s, nullptr, 10);
  SCOPED_TRACE(absl::StrCat("NP_NFT_NETLINK_SEED=", seed));
  std::mt19937_64 rng(seed);
  struct Piece {
    std::string first, last, target;
  };
  for (int f = 0; f < 2; ++f) {
    const std::string lo = Bytes(f == 0 ? "0.0.0.0" : "::");
    const std::string hi = Bytes(f == 0 ? "255.255.255.255" : "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    // Boundaries near a base address (so that pieces are small, adjacent, prefix-shaped or
    // not), and the family's ends.
    auto near = [&](uint32_t k) {
      std::string b = Bytes(f == 0 ? "10.0.0.0" : "fd00::");
      b[b.size() - 2] = static_cast<char>(k >> 8);
      b[b.size() - 1] = static_cast<char>(k & 0xff);
      return b;
    };
    auto before = [](std::string b) {  // b - 1 (b is never the family's first address)
      for (size_t i = b.size(); i-- > 0;) {
        if (reinterpret_cast<unsigned char&>(b[i])-- != 0) break;
      }
      return b;
    };
    std::vector<Piece> pieces = {{lo, hi, "c"}};
    const std::string map = f == 0 ? "i4" : "i6";
    for (int step = 0; step < 25; ++step) {
      SCOPED_TRACE(absl::StrCat(map, " step ", step));
      // Replace 1-3 consecutive pieces by a random partition of what they cover.
      const size_t at = rng() % pieces.size();
      const size_t count = std::min(pieces.size() - at, static_cast<size_t>(1 + rng() % 3));
      const std::string first = pieces[at].first, last = pieces[at + count - 1].last;
      std::set<std::string> cuts;  // first addresses of the new pieces after the first
      for (int c = static_cast<int>(rng() % 3); c > 0; --c) {
        const std::string cut = near(static_cast<uint32_t>(rng() % 512));
        if (cut > first && cut <= last) cuts.insert(cut);
      }
      std::vector<Piece> fresh;
      std::string start = first;
      for (const std::string& cut : cuts) {
        fresh.push_back({start, before(cut), rng() % 2 ? "c" : "d"});
        start = cut;
      }
      fresh.push_back({start, last, rng() % 2 ? "c" : "d"});
      SetElementEdit del{"", false, true, {}}, add{"", true, true, {}};
      for (size_t i = at; i < at + count; ++i) del.elements.push_back({pieces[i].first, pieces[i].last, ""});
      for (const Piece& p : fresh) add.elements.push_back({p.first, p.last, p.target});
      Both(map, {del, add});
      pieces.erase(pieces.begin() + static_cast<long>(at), pieces.begin() + static_cast<long>(at + count));
      pieces.insert(pieces.begin() + static_cast<long>(at), fresh.begin(), fresh.end());
      if (HasFatalFailure()) return;
    }
    // Dispatch: random adds and deletes of single addresses.
    std::map<std::string, std::string> entries;
    const std::string dmap = f == 0 ? "d4" : "d6";
    for (int step = 0; step < 15; ++step) {
      SCOPED_TRACE(absl::StrCat(dmap, " step ", step));
      std::vector<SetElementEdit> edits;
      SetElementEdit del{"", false, false, {}}, add{"", true, false, {}};
      std::set<std::string> touched;
      for (int k = static_cast<int>(1 + rng() % 3); k > 0; --k) {
        const std::string a = near(static_cast<uint32_t>(rng() % 64));
        if (!touched.insert(a).second) continue;
        if (entries.count(a) > 0) {
          del.elements.push_back({a, a, ""});
          entries.erase(a);
        } else {
          entries[a] = rng() % 2 ? "c" : "d";
          add.elements.push_back({a, a, entries[a]});
        }
      }
      if (!del.elements.empty()) edits.push_back(del);
      if (!add.elements.empty()) edits.push_back(add);
      Both(dmap, edits);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(NetlinkEncoding, RefusesWhatItCannotEncode) {
  std::vector<int> m;
  EXPECT_FALSE(EncodeElementBatch("t", {{"m", true, false, {E("10.0.0.1", "10.0.0.2", "c")}}}, 1, 0, &m).ok());
  EXPECT_FALSE(EncodeElementBatch("t", {{"m", true, true, {E("10.0.0.2", "10.0.0.1", "c")}}}, 1, 0, &m).ok());
  SetElementEdit mixed{"m", true, true, {{Bytes("10.0.0.1"), Bytes("fd00::1"), "c"}}};
  EXPECT_FALSE(EncodeElementBatch("t", {mixed}, 1, 0, &m).ok());
  ASSERT_TRUE(EncodeElementBatch("t", {{"m", true, true, {E("10.0.0.1", "10.0.0.2", "c")}}}, 7, 0, &m).ok());
  EXPECT_EQ(m, (std::vector<int>{-1, 0, -1}));  // begin, the edit, end
}

// The whole-path encoder knows Build's rule forms only: anything else is Unimplemented (the
// backend then runs the text through libnftables), never a guess.
TEST(NetlinkEncoding, WholeBatchEncodesBuildsFormsAndRefusesOthers) {
  auto encode = [](const std::string& rule) {
    WholeBatch b;
    b.add_table = true;
    b.chains.push_back({"c", false, false, "", {rule}});
    b.chains.push_back({"d", false, false, "", {}});
    b.sets.push_back({"s", WholeSet::kMark, false, true, "a set", {}});
    b.sets.push_back({"m", WholeSet::kIpv4, true, false, "", {E("10.0.0.1", "10.0.0.1", "d")}});
    std::vector<std::string> what;
    return EncodeWholeBatch("t", b, 1, 0, &what).status();
  };
  for (const char* rule :
       {"ct state established,related accept",
        "meta mark set meta mark and 0x0000ffff or 0xffff0000", "ip daddr vmap @m",
        "ip6 saddr vmap @m", "meta l4proto tcp th dport 80 meta mark @s return",
        "meta l4proto udp th dport 80-90 meta mark 0x00010000-0x0001ffff return comment \"x y\"",
        "meta l4proto sctp drop", "goto d", "jump d", "drop", "return",
        "meta mark 0xffff0000-0xffffffff drop"}) {
    EXPECT_TRUE(encode(rule).ok()) << rule << ": " << encode(rule);
  }
  for (const char* rule :
       {"tcp flags syn drop", "meta l4proto icmp return", "th dport 90-80 return",
        "th dport 70000 return", "meta mark 0x00010000 return", "ip daddr 10.0.0.1 drop",
        "meta l4proto tcp", "counter drop", "drop comment \"a\"b\"", "reject"}) {
    EXPECT_TRUE(absl::IsUnimplemented(encode(rule))) << rule << ": " << encode(rule);
  }
}

// What marks a table for the commit's whole-table validation (netlink.h): an added element
// that jumps, or an added rule; never a deletion, a flush or a set declared without jumps.
TEST(NetlinkEncoding, OnlyJumpElementsAndRulesMarkTheTableForValidation) {
  const SetElementEdit add_jump{"identity4", true, true, {E("10.0.0.1", "10.0.0.1", "id_2")}};
  const SetElementEdit delete_one{"identity4", false, true, {E("10.0.0.1", "10.0.0.1", "")}};
  const SetElementEdit add_plain{"s", true, false, {E("10.0.0.1", "10.0.0.1", "")}};
  EXPECT_TRUE(MarksTableForValidation({add_jump}));
  EXPECT_TRUE(MarksTableForValidation({delete_one, add_jump}));
  EXPECT_FALSE(MarksTableForValidation({delete_one}));
  EXPECT_FALSE(MarksTableForValidation({add_plain, delete_one}));
  EXPECT_FALSE(MarksTableForValidation(std::vector<SetElementEdit>{}));
  // A delete that still names the chain it jumped to (the encoder sends no data) marks nothing.
  EXPECT_FALSE(MarksTableForValidation({SetElementEdit{"egress4", false, false, {E("10.0.0.1", "10.0.0.1", "t0")}}}));

  WholeBatch deletes;
  deletes.first_flush = {"t0_egress"};
  deletes.first_element_deletes = {delete_one};
  deletes.first_delete_sets = {"peers_3"};
  deletes.first_delete_chains = {"t0_egress"};
  deletes.chains.push_back({"t1_egress", false, false, "", {}});  // declared, no rules
  deletes.sets.push_back({"peers_4", WholeSet::kMark, false, true, "", {E("0.1.0.0", "0.1.255.255", "")}});
  EXPECT_FALSE(MarksTableForValidation(deletes));
  WholeBatch rule = deletes;
  rule.chains.back().rules = {"drop"};
  EXPECT_TRUE(MarksTableForValidation(rule));
  WholeBatch element = deletes;
  element.last_element_adds = {add_jump};
  EXPECT_TRUE(MarksTableForValidation(element));
  WholeBatch declared = deletes;
  declared.sets.push_back({"egress4", WholeSet::kIpv4, true, false, "", {E("10.0.0.1", "10.0.0.1", "t1_egress")}});
  EXPECT_TRUE(MarksTableForValidation(declared));
}

TEST(NetlinkEncoding, ParsesThePlansTransactions) {
  absl::StatusOr<std::vector<SetElementEdit>> edits = ParseElementTransaction(
      "delete element inet np identity4_g3 { 10.0.0.0-10.0.0.4, 10.0.0.5 }\n"
      "add element inet np identity4_g3 { 10.0.0.0/29 : jump id_2_g3 }\n"
      "add element inet np egress6_g3 { fd00::1 : jump t0_egress_g3 }\n");
  ASSERT_TRUE(edits.ok()) << edits.status();
  ASSERT_EQ(edits->size(), 3u);
  EXPECT_EQ((*edits)[0].set, "identity4_g3");
  EXPECT_FALSE((*edits)[0].add);
  EXPECT_TRUE((*edits)[0].interval);
  ASSERT_EQ((*edits)[0].elements.size(), 2u);
  EXPECT_EQ((*edits)[0].elements[0].first, Bytes("10.0.0.0"));
  EXPECT_EQ((*edits)[0].elements[0].last, Bytes("10.0.0.4"));
  EXPECT_EQ((*edits)[0].elements[1].last, Bytes("10.0.0.5"));
  EXPECT_TRUE((*edits)[1].add);
  EXPECT_EQ((*edits)[1].elements[0].first, Bytes("10.0.0.0"));
  EXPECT_EQ((*edits)[1].elements[0].last, Bytes("10.0.0.7"));
  EXPECT_EQ((*edits)[1].elements[0].jump, "id_2_g3");
  EXPECT_FALSE((*edits)[2].interval);
  EXPECT_EQ((*edits)[2].elements[0].jump, "t0_egress_g3");
  EXPECT_FALSE(ParseElementTransaction("flush set inet np x\n").ok());
  EXPECT_FALSE(ParseElementTransaction("add element inet np m { 10.0.0.1 : drop }\n").ok());
}

}  // namespace
}  // namespace np::backends::nft
