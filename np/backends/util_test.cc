// The helpers every backend shares: CheckIr (the IR invariants the backends rely on, each
// violation an error naming the IR element) and EscapeText / CommentText (user bytes made
// safe for rule comments: hostile names, cuts at the comment limits), and StartProcess.
#include "np/backends/util.h"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace np::backends {
namespace {

// ---- StartProcess -------------------------------------------------------------------

// A started process reads what is written to `in` and its stderr comes back on `err`; it runs
// until its stdin closes, and the caller reaps it with its exit status.
TEST(StartProcess, FeedsStdinAndReturnsStderr) {
  absl::StatusOr<RunningProcess> p = StartProcess({"sh", "-c", "cat >&2; echo out; exit 3"});
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string text = "line one\nline two\n";
  ASSERT_EQ(write(p->in, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(p->in);
  std::string err;
  char buffer[256];
  while (true) {
    pollfd fd{p->err, POLLIN, 0};
    ASSERT_GE(poll(&fd, 1, 5000), 1) << "no end of stderr";
    const ssize_t n = read(p->err, buffer, sizeof(buffer));
    if (n == 0) break;
    if (n > 0) err.append(buffer, static_cast<size_t>(n));
  }
  close(p->err);
  int status = 0;
  ASSERT_EQ(waitpid(p->pid, &status, 0), p->pid);
  EXPECT_EQ(err, text);  // stdout ("out") went to /dev/null
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
}

TEST(StartProcess, ErrorsAreValues) {
  EXPECT_EQ(StartProcess({"np-no-such-tool-h96"}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(StartProcess({"sh"}, "np-no-such-netns-h96").status().code(),
            absl::StatusCode::kNotFound);
}

// ---- EscapeText / CommentText --------------------------------------------------------

TEST(EscapeText, LeavesOrdinaryNamesAlone) {
  EXPECT_EQ(EscapeText("default/allow-db.v2_x"), "default/allow-db.v2_x");
  EXPECT_EQ(EscapeText("policies: a/b,c/d"), "policies: a/b,c/d");
  EXPECT_EQ(EscapeText("café/名前-😀"), "café/名前-😀");  // printable UTF-8 stays
  EXPECT_EQ(EscapeText(""), "");
}

TEST(EscapeText, HostileBytesBecomeEscapes) {
  const struct {
    std::string in, out;
  } cases[] = {
      // ESC, CR, LF, NUL: what the review found reaching comments raw.
      {"a\x1b[31mb", "a\\x1b[31mb"},
      {"x\r\ny", "x\\r\\ny"},
      {std::string("n\0ul", 4), "n\\x00ul"},
      {"\a\b\t\v\f\x7f", "\\a\\b\\t\\v\\f\\x7f"},
      // A quote could end an nft comment; a backslash could start an escape.
      {"say \"hi\"", "say \\x22hi\\x22"},
      {"back\\slash", "back\\\\slash"},
      // Bytes that are not UTF-8: a stray continuation, an overlong '/', a surrogate, past
      // U+10FFFF, a truncated sequence at the end.
      {"\xff", "\\xff"},
      {"\x80z", "\\x80z"},
      {"\xc0\xaf", "\\xc0\\xaf"},
      {"\xed\xa0\x80", "\\xed\\xa0\\x80"},
      {"\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"},
      {"ok\xe2\x82", "ok\\xe2\\x82"},
      // Valid UTF-8 that prints nothing or reorders the line: C1 NEL, RIGHT-TO-LEFT
      // OVERRIDE, ZERO WIDTH SPACE, LINE SEPARATOR, NO-BREAK SPACE, BOM, a tag character,
      // private use.
      {"\xc2\x85", "\\u0085"},
      {"a\xe2\x80\xae" "b", "a\\u202eb"},
      {"\xe2\x80\x8b", "\\u200b"},
      {"\xe2\x80\xa8", "\\u2028"},
      {"\xc2\xa0", "\\u00a0"},
      {"\xef\xbb\xbf", "\\ufeff"},
      {"\xf3\xa0\x81\x81", "\\U000e0041"},
      {"\xee\x80\x80", "\\ue000"},
  };
  for (const auto& c : cases) EXPECT_EQ(EscapeText(c.in), c.out) << absl::CEscape(c.in);
}

// A checker written apart from the code under test: valid UTF-8, no byte below 0x20, no
// DEL, no `"`.
bool SafeForAComment(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const uint8_t b = static_cast<uint8_t>(s[i]);
    if (b < 0x20 || b == 0x7f || b == '"') return false;
    size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<uint8_t>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

TEST(CommentText, CutsNeverSplitACharacterOrAnEscape) {
  // 200 two-byte characters, cut at nft's 128 bytes: 62 whole characters and "...".
  std::string accents;
  for (int i = 0; i < 200; ++i) accents += "é";
  std::string cut = CommentText(accents, kNftCommentMax);
  EXPECT_EQ(cut.size(), 127u);
  EXPECT_TRUE(absl::EndsWith(cut, "é..."));
  EXPECT_TRUE(SafeForAComment(cut));
  // Four-byte characters at a limit that falls inside one.
  std::string faces;
  for (int i = 0; i < 50; ++i) faces += "😀";
  cut = CommentText(faces, 10);
  EXPECT_EQ(cut, "😀...");
  // Escapes are never cut in half: ESC is four bytes "\x1b".
  cut = CommentText(std::string(100, '\x1b'), 10);
  EXPECT_EQ(cut, "\\x1b...");
  // Short enough: unchanged (escaped).
  EXPECT_EQ(CommentText("x/a\n", kNftCommentMax), "x/a\\n");
  std::string exactly(kNftCommentMax, 'a');
  EXPECT_EQ(CommentText(exactly, kNftCommentMax), exactly);
  EXPECT_EQ(CommentText(exactly + "a", kNftCommentMax).size(), kNftCommentMax);
}

TEST(CommentText, RandomBytesComeOutSafeAndWithinTheLimit) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 5000; ++round) {
    std::string bytes(rng() % 400, '\0');
    for (char& c : bytes) {
      // Mostly bytes that make UTF-8 sequences, so that valid and broken ones both occur.
      const uint64_t r = rng();
      c = static_cast<char>(r % 3 == 0 ? 0x80 + r % 0x80 : r % 5 == 0 ? 0xe0 + r % 0x20 : r % 256);
    }
    for (size_t limit : {size_t{3}, size_t{17}, kNftCommentMax, kIptablesCommentMax}) {
      std::string out = CommentText(bytes, limit);
      ASSERT_LE(out.size(), limit);
      ASSERT_TRUE(SafeForAComment(out)) << absl::CEscape(out);
    }
    ASSERT_TRUE(SafeForAComment(EscapeText(bytes)));
  }
}

// ---- CheckIr --------------------------------------------------------------------------

std::string V4(uint32_t a) {
  std::string b(4, '\0');
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((a >> (24 - 8 * i)) & 0xff);
  return b;
}

// Identity 0 everywhere but 10.0.0.1 (identity 1, pod x/a) and 10.0.0.2 (identity 2, x/b);
// one table admitting identity 2 on TCP 80; endpoints x/a (selected) and x/b.
ir::CompiledPolicy GoodIr() {
  ir::CompiledPolicy ir;
  for (int i = 0; i < 3; ++i) ir.add_identities()->set_id(i);
  auto range = [&](uint32_t first, uint32_t last, uint32_t identity) {
    ir::AddressRange* r = ir.add_ipv4();
    r->set_first(V4(first));
    r->set_last(V4(last));
    r->set_identity(identity);
  };
  range(0, 0x0a000000, 0);
  range(0x0a000001, 0x0a000001, 1);
  range(0x0a000002, 0x0a000002, 2);
  range(0x0a000003, 0xffffffff, 0);
  ir::AddressRange* v6 = ir.add_ipv6();
  v6->set_first(std::string(16, '\0'));
  v6->set_last(std::string(16, '\xff'));
  ir::PeerSet* s = ir.add_peer_sets();
  s->add_identities(2);
  ir::PortRule* rule = ir.add_tables()->mutable_ingress()->add_rules();
  rule->set_protocol(ir::TCP);
  rule->set_first_port(80);
  rule->set_last_port(80);
  for (const char* name : {"a", "b"}) {
    ir::Endpoint* e = ir.add_endpoints();
    e->set_namespace_("x");
    e->set_name(name);
    e->add_ips(name[0] == 'a' ? "10.0.0.1" : "10.0.0.2");
  }
  ir.mutable_endpoints(0)->set_selected(true);
  return ir;
}

void ExpectMalformed(const ir::CompiledPolicy& ir, absl::string_view message) {
  absl::Status s = CheckIr(ir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << message;
  EXPECT_TRUE(absl::StrContains(s.message(), message)) << s;
}

TEST(CheckIr, AcceptsAWellFormedIr) { EXPECT_TRUE(CheckIr(GoodIr()).ok()) << CheckIr(GoodIr()); }

TEST(CheckIr, OneAddressInTwoEndpoints) {
  // Issue 8 item 3: two live pods sharing one IP made nft write a duplicate map element.
  ir::CompiledPolicy ir = GoodIr();
  ir.mutable_endpoints(1)->set_ips(0, "10.0.0.1");
  ExpectMalformed(ir, "endpoints[1] (x/b): address 10.0.0.1 is also endpoints[0] (x/a)'s");
  ir = GoodIr();
  ir.mutable_endpoints(0)->add_ips("10.0.0.1");
  ExpectMalformed(ir, "endpoints[0] (x/a): address 10.0.0.1 is listed twice");
  // The same address spelled differently is the same address.
  ir = GoodIr();
  ir.mutable_endpoints(0)->add_ips("fd00::1");
  ir.mutable_endpoints(1)->add_ips("fd00:0::0:1");
  ExpectMalformed(ir, "address fd00::1 is also endpoints[0] (x/a)'s");
}

TEST(CheckIr, EndpointErrors) {
  ir::CompiledPolicy ir = GoodIr();
  ir.mutable_endpoints(0)->set_table(5);
  ExpectMalformed(ir, "endpoints[0] (x/a): table 5 does not exist");
  ir = GoodIr();
  ir.mutable_endpoints(1)->set_name("a");
  ExpectMalformed(ir, "endpoints[1] (x/a): the same pod as endpoints[0] (x/a)");
  ir = GoodIr();
  ir.mutable_endpoints(1)->set_ips(0, "10.0.0.300");
  ExpectMalformed(ir, "endpoints[1] (x/b): \"10.0.0.300\" is not an IP address");
  // Names in messages are escaped: a name cannot forge a line of the error.
  ir = GoodIr();
  ir.mutable_endpoints(1)->set_name("b\nvalid: 0 errors\x1b[0m");
  ir.mutable_endpoints(1)->set_ips(0, "10.0.0.1");
  absl::Status s = CheckIr(ir);
  EXPECT_TRUE(absl::StrContains(s.message(), "(x/b\\nvalid: 0 errors\\x1b[0m)")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "\n")) << s;
}

TEST(CheckIr, RangesMustPartitionEachFamily) {
  ir::CompiledPolicy ir = GoodIr();
  ir.mutable_ipv4()->DeleteSubrange(1, 1);  // a gap at 10.0.0.1
  ExpectMalformed(ir, "ipv4[1]: 10.0.0.2-10.0.0.2 does not start where the ranges before it end");
  ir = GoodIr();
  ir.mutable_ipv4(2)->set_first(V4(0x0a000001));  // overlaps ipv4[1]
  ExpectMalformed(ir, "ipv4[2]");
  ir = GoodIr();
  ir.mutable_ipv4()->RemoveLast();
  ExpectMalformed(ir, "ipv4: the ranges stop at 10.0.0.2, short of the family's last address");
  ir = GoodIr();
  ir.clear_ipv6();
  ExpectMalformed(ir, "ipv6: empty");
  ir = GoodIr();
  ir.mutable_ipv6(0)->set_last(std::string(4, '\xff'));
  ExpectMalformed(ir, "ipv6[0]: addresses of 16 and 4 bytes in a family of 16");
  ir = GoodIr();
  ir.mutable_ipv4(3)->set_identity(3);
  ExpectMalformed(ir, "ipv4[3]: identity 3 does not exist");
  ir = GoodIr();
  *ir.add_ipv4() = ir.ipv4(3);  // past the family's last address
  ExpectMalformed(ir, "ipv4[4]");
}

TEST(CheckIr, IdsPeerSetsAndRules) {
  ir::CompiledPolicy ir = GoodIr();
  ir.mutable_identities(2)->set_id(7);
  ExpectMalformed(ir, "identities[2]: id 7");
  ir = GoodIr();
  ir.mutable_peer_sets(0)->set_id(1);
  ExpectMalformed(ir, "peer_sets[0]: id 1");
  ir = GoodIr();
  ir.mutable_peer_sets(0)->add_identities(1);
  ExpectMalformed(ir, "peer_sets[0]: identities not sorted or repeated at 1");
  ir = GoodIr();
  ir.mutable_peer_sets(0)->add_identities(9);
  ExpectMalformed(ir, "peer_sets[0]: identity 9 does not exist");
  ir = GoodIr();
  ir.mutable_tables(0)->set_id(1);
  ExpectMalformed(ir, "tables[0]: id 1");
  auto rule = [](ir::CompiledPolicy& ir) {
    return ir.mutable_tables(0)->mutable_ingress()->mutable_rules(0);
  };
  ir = GoodIr();
  rule(ir)->set_protocol(static_cast<ir::Protocol>(1));
  ExpectMalformed(ir, "tables[0].ingress.rules[0]: protocol 1 is not TCP, UDP or SCTP");
  ir = GoodIr();
  rule(ir)->set_last_port(65536);
  ExpectMalformed(ir, "tables[0].ingress.rules[0]: port range 80-65536");
  ir = GoodIr();
  rule(ir)->set_first_port(81);
  ExpectMalformed(ir, "port range 81-80");
  ir = GoodIr();
  rule(ir)->set_peer_set(1);
  ExpectMalformed(ir, "tables[0].ingress.rules[0]: peer set 1 does not exist");
  ir = GoodIr();
  *ir.mutable_tables(0)->mutable_ingress()->add_rules() = *rule(ir);  // the same port again
  ExpectMalformed(ir, "tables[0].ingress.rules[1]: TCP 80-80 overlaps or precedes");
  // The same ports under another protocol are no overlap.
  ir = GoodIr();
  *ir.mutable_tables(0)->mutable_egress()->add_rules() = *rule(ir);
  ir.mutable_tables(0)->mutable_egress()->mutable_rules(0)->set_protocol(ir::UDP);
  *ir.mutable_tables(0)->mutable_egress()->add_rules() = *rule(ir);
  EXPECT_TRUE(CheckIr(ir).ok()) << CheckIr(ir);
}

TEST(CheckIr, TierRules) {
  auto tier_rule = [](ir::CompiledPolicy& ir, ir::TierAction action) {
    ir::TierRule* r = ir.mutable_tables(0)->mutable_egress()->add_baseline();
    r->set_action(action);
    r->set_protocol(ir::UDP);
    r->set_first_port(53);
    r->set_last_port(53);
    return r;
  };
  ir::CompiledPolicy ir = GoodIr();
  tier_rule(ir, ir::TIER_DENY);
  EXPECT_TRUE(CheckIr(ir).ok()) << CheckIr(ir);
  ir = GoodIr();
  tier_rule(ir, ir::TIER_ACTION_UNSPECIFIED);
  ExpectMalformed(ir, "tables[0].egress.baseline[0]: action 0 is not allow, deny or pass");
  ir = GoodIr();
  tier_rule(ir, ir::TIER_PASS)->set_peer_set(4);
  ExpectMalformed(ir, "tables[0].egress.baseline[0]: peer set 4 does not exist");
  ir = GoodIr();
  tier_rule(ir, ir::TIER_ALLOW)->set_protocol(ir::PROTOCOL_UNSPECIFIED);
  ExpectMalformed(ir, "port range 53-53 (every protocol needs 0-65535)");
  ir = GoodIr();
  tier_rule(ir, ir::TIER_ALLOW)->set_protocol(static_cast<ir::Protocol>(1));
  ExpectMalformed(ir, "protocol 1 is not TCP, UDP, SCTP or unspecified");
}

// ---- The IR's meaning: the order proto/compiled.proto states for policy tiers ----------

// Peer set 0 = {identity 1}, 1 = {identity 2}, 2 = all.
class SideAllowsTest : public ::testing::Test {
 protected:
  SideAllowsTest() {
    for (int i = 0; i < 3; ++i) ir_.add_identities()->set_id(i);
    ir_.add_peer_sets()->add_identities(1);
    ir_.mutable_peer_sets(0)->set_id(0);
    ir_.add_peer_sets()->add_identities(2);
    ir_.mutable_peer_sets(1)->set_id(1);
    ir_.add_peer_sets()->set_all(true);
    ir_.mutable_peer_sets(2)->set_id(2);
  }
  static void AddTier(google::protobuf::RepeatedPtrField<ir::TierRule>* rules,
                      ir::TierAction action, ir::Protocol protocol, uint32_t peer_set) {
    ir::TierRule* r = rules->Add();
    r->set_action(action);
    r->set_protocol(protocol);
    r->set_first_port(protocol == ir::PROTOCOL_UNSPECIFIED ? 0 : 80);
    r->set_last_port(protocol == ir::PROTOCOL_UNSPECIFIED ? 65535 : 80);
    r->set_peer_set(peer_set);
  }
  bool Allows(int protocol, uint32_t port, uint32_t peer) const {
    return SideAllows(ir_, d_, protocol, port, peer);
  }
  ir::CompiledPolicy ir_;
  ir::DirectionPolicy d_;
};

TEST_F(SideAllowsTest, NothingRestrictsAnUnisolatedDirectionWithoutTierRules) {
  EXPECT_FALSE(Restricted(d_));
  EXPECT_TRUE(Allows(6, 80, 1));
  d_.set_isolated(true);
  EXPECT_TRUE(Restricted(d_));
  EXPECT_FALSE(Allows(6, 80, 1));  // isolated, no rule: denied
}

TEST_F(SideAllowsTest, AdminDenyComesBeforeANetworkPolicyAllow) {
  // "Deny: ... the traffic is denied, and no lower-priority policy (AdminNetworkPolicy,
  // NetworkPolicy or Baseline) is evaluated" (network-policy-api, AdminNetworkPolicyRuleAction).
  d_.set_isolated(true);
  ir::PortRule* allow = d_.add_rules();
  allow->set_protocol(ir::TCP);
  allow->set_first_port(0);
  allow->set_last_port(65535);
  allow->set_peer_set(2);
  AddTier(d_.mutable_admin(), ir::TIER_DENY, ir::TCP, 0);
  EXPECT_TRUE(Restricted(d_));
  EXPECT_FALSE(Allows(6, 80, 1));
  EXPECT_TRUE(Allows(6, 81, 1));  // the Deny covers port 80 only
  EXPECT_TRUE(Allows(6, 80, 2));  // and peer 1 only
}

TEST_F(SideAllowsTest, FirstMatchingAdminRuleDecidesAndPassGoesOnToNetworkPolicy) {
  AddTier(d_.mutable_admin(), ir::TIER_PASS, ir::TCP, 0);
  AddTier(d_.mutable_admin(), ir::TIER_DENY, ir::PROTOCOL_UNSPECIFIED, 2);
  // Peer 1 on TCP 80 passes: no NetworkPolicy isolates and no baseline rule -> allowed.
  EXPECT_TRUE(Allows(6, 80, 1));
  // Everything else meets the Deny, whatever protocol (ICMP = 1 included).
  EXPECT_FALSE(Allows(6, 81, 1));
  EXPECT_FALSE(Allows(1, 0, 2));
  // A passed flow meets NetworkPolicy: isolated without a rule for it -> denied.
  d_.set_isolated(true);
  EXPECT_FALSE(Allows(6, 80, 1));
}

TEST_F(SideAllowsTest, BaselineOnlyWhenNetworkPolicyDoesNotIsolate) {
  AddTier(d_.mutable_baseline(), ir::TIER_DENY, ir::TCP, 1);
  AddTier(d_.mutable_baseline(), ir::TIER_ALLOW, ir::TCP, 2);
  EXPECT_TRUE(Restricted(d_));
  EXPECT_FALSE(Allows(6, 80, 2));  // the first matching baseline rule decides
  EXPECT_TRUE(Allows(6, 80, 1));   // no baseline rule for peer 1: the default allows
  ir::DirectionPolicy passing;
  AddTier(passing.mutable_baseline(), ir::TIER_PASS, ir::TCP, 1);
  AddTier(passing.mutable_baseline(), ir::TIER_DENY, ir::TCP, 2);
  EXPECT_TRUE(SideAllows(ir_, passing, 6, 80, 2));  // a baseline Pass goes to the default
  d_.set_isolated(true);
  ir::PortRule* allow = d_.add_rules();
  allow->set_protocol(ir::TCP);
  allow->set_first_port(80);
  allow->set_last_port(80);
  allow->set_peer_set(1);
  EXPECT_TRUE(Allows(6, 80, 2));   // NetworkPolicy decides; the baseline Deny is not reached
  EXPECT_FALSE(Allows(6, 80, 0));  // isolated, no rule: denied, the baseline Allow not reached
}

TEST(IrAllows, BothSidesOfAPacket) {
  ir::CompiledPolicy ir = GoodIr();  // x/a selected: ingress admits x/b on TCP 80
  ir.mutable_tables(0)->mutable_ingress()->set_isolated(true);
  EXPECT_TRUE(IrAllows(ir, V4(0x0a000002), V4(0x0a000001), 6, 80));
  EXPECT_FALSE(IrAllows(ir, V4(0x0a000002), V4(0x0a000001), 6, 81));
  EXPECT_FALSE(IrAllows(ir, V4(0x0b000000), V4(0x0a000001), 6, 80));
  EXPECT_TRUE(IrAllows(ir, V4(0x0a000001), V4(0x0b000000), 6, 81));  // egress not restricted
  ir::TierRule* deny = ir.mutable_tables(0)->mutable_egress()->add_admin();
  deny->set_action(ir::TIER_DENY);
  deny->set_protocol(ir::PROTOCOL_UNSPECIFIED);
  deny->set_last_port(65535);
  ir.mutable_peer_sets(0)->set_all(true);
  deny->set_peer_set(0);
  EXPECT_FALSE(IrAllows(ir, V4(0x0a000001), V4(0x0b000000), 17, 53));
  EXPECT_TRUE(IrAllows(ir, V4(0x0a000002), V4(0x0b000000), 17, 53));  // x/b is not selected
}

}  // namespace
}  // namespace np::backends
