#include "np/types.h"

#include "gtest/gtest.h"

namespace np {
namespace {

TEST(IpAddress, ParsesAndPrintsIPv4) {
  absl::StatusOr<IpAddress> a = IpAddress::Parse("10.1.2.3");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->is_v4());
  EXPECT_EQ(a->v4(), (10u << 24) | (1u << 16) | (2u << 8) | 3u);
  EXPECT_EQ(a->ToString(), "10.1.2.3");
}

TEST(IpAddress, RejectsMalformedIPv4) {
  for (const char* text : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1..2.3", "a.b.c.d", "1.2.3.4 ",
                           "-1.2.3.4", "1.2.3.1234"}) {
    EXPECT_FALSE(IpAddress::Parse(text).ok()) << text;
  }
}

TEST(IpAddress, LeadingZerosOnlyWhenAllowed) {
  EXPECT_FALSE(IpAddress::Parse("010.0.0.1").ok());
  absl::StatusOr<IpAddress> a = IpAddress::Parse("010.0.0.1", /*allow_leading_zeros=*/true);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->ToString(), "10.0.0.1");  // decimal, not octal
}

TEST(IpAddress, ParsesAndPrintsIPv6) {
  struct Case {
    const char* in;
    const char* out;
  };
  for (const Case& c : {Case{"::", "::"}, Case{"::1", "::1"}, Case{"fd00::1", "fd00::1"},
                        Case{"2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
                        Case{"2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"},
                        Case{"1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"}}) {
    absl::StatusOr<IpAddress> a = IpAddress::Parse(c.in);
    ASSERT_TRUE(a.ok()) << c.in;
    EXPECT_TRUE(a->is_v6());
    EXPECT_EQ(a->ToString(), c.out) << c.in;
  }
}

// Go's net.ParseIP reads IPv4-mapped IPv6 text as the IPv4 address (To4() succeeds and
// String() prints it dotted), and so does every Go component of a cluster: np too.
TEST(IpAddress, IPv4MappedTextIsTheIPv4Address) {
  for (const char* text : {"::ffff:1.2.3.4", "::FFFF:102:304", "0:0:0:0:0:ffff:1.2.3.4"}) {
    bool mapped = false;
    absl::StatusOr<IpAddress> a = IpAddress::Parse(text, false, &mapped);
    ASSERT_TRUE(a.ok()) << text;
    EXPECT_TRUE(a->is_v4()) << text;
    EXPECT_TRUE(mapped) << text;
    EXPECT_EQ(a->ToString(), "1.2.3.4");
    EXPECT_EQ(*a, *IpAddress::Parse("1.2.3.4"));
  }
  // Neighbours of ::ffff:0:0/96 stay IPv6: IPv4-compatible (deprecated) and ::fffe:...
  for (const char* text : {"::1.2.3.4", "::fffe:1.2.3.4", "1::ffff:1.2.3.4"}) {
    bool mapped = true;
    absl::StatusOr<IpAddress> a = IpAddress::Parse(text, false, &mapped);
    ASSERT_TRUE(a.ok()) << text;
    EXPECT_TRUE(a->is_v6()) << text;
    EXPECT_FALSE(mapped) << text;
  }
  // Built from bytes, a mapped address is what the bytes say (an IPv6 packet's address).
  uint8_t bytes[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4};
  EXPECT_TRUE(IpAddress::V6Bytes(bytes).is_v6());
  EXPECT_TRUE(IpAddress::V6Bytes(bytes).is_v4_mapped());
}

// Go's IPNet matches an IPv4-mapped network of length >= 96 as the IPv4 prefix of length
// L - 96; shorter masks clear the mapping and leave an IPv6 prefix.
TEST(IpPrefix, IPv4MappedTextIsTheIPv4Prefix) {
  int written = 0;
  absl::StatusOr<IpPrefix> p = IpPrefix::Parse("::ffff:192.168.66.0/120", false, &written);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->family(), AddressFamily::kIPv4);
  EXPECT_EQ(p->ToString(), "192.168.66.0/24");
  EXPECT_EQ(written, 120);
  EXPECT_TRUE(p->Contains(*IpAddress::Parse("192.168.66.7")));
  EXPECT_TRUE(p->Contains(*IpAddress::Parse("::ffff:192.168.66.7")));
  EXPECT_FALSE(p->Contains(*IpAddress::Parse("192.168.67.7")));
  EXPECT_EQ(IpPrefix::Parse("::ffff:0.0.0.0/96")->ToString(), "0.0.0.0/0");
  absl::StatusOr<IpPrefix> host_bits = IpPrefix::Parse("::ffff:10.0.0.1/104");
  ASSERT_TRUE(host_bits.ok());
  EXPECT_EQ(host_bits->ToString(), "10.0.0.0/8");
  EXPECT_TRUE(host_bits->has_host_bits());
  absl::StatusOr<IpPrefix> short_mask = IpPrefix::Parse("::ffff:10.0.0.0/80");
  ASSERT_TRUE(short_mask.ok());
  EXPECT_EQ(short_mask->family(), AddressFamily::kIPv6);
  EXPECT_EQ(short_mask->ToString(), "::/80");
  EXPECT_FALSE(short_mask->Contains(*IpAddress::Parse("10.0.0.1")));
  EXPECT_FALSE(IpPrefix::Parse("::ffff:10.0.0.0/129").ok());
}

TEST(IpAddress, RejectsMalformedIPv6) {
  for (const char* text : {":", ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", "g::1", "1:",
                           ":1", "1:2:3:4:5:6:7:8::", "::1.2.3"}) {
    EXPECT_FALSE(IpAddress::Parse(text).ok()) << text;
  }
}

TEST(IpPrefix, ContainsAndHostBits) {
  absl::StatusOr<IpPrefix> p = IpPrefix::Parse("10.0.0.1/8");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->has_host_bits());
  EXPECT_EQ(p->ToString(), "10.0.0.0/8");
  EXPECT_TRUE(p->Contains(*IpAddress::Parse("10.255.0.1")));
  EXPECT_FALSE(p->Contains(*IpAddress::Parse("11.0.0.1")));
  EXPECT_FALSE(p->Contains(*IpAddress::Parse("::1")));
  EXPECT_TRUE(p->Contains(*IpPrefix::Parse("10.1.0.0/16")));
  EXPECT_FALSE(p->Contains(*IpPrefix::Parse("10.0.0.0/7")));
  absl::StatusOr<IpPrefix> all = IpPrefix::Parse("0.0.0.0/0");
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->Contains(*IpAddress::Parse("255.255.255.255")));
  absl::StatusOr<IpPrefix> v6 = IpPrefix::Parse("fd00:10::/64");
  ASSERT_TRUE(v6.ok());
  EXPECT_TRUE(v6->Contains(*IpAddress::Parse("fd00:10::5")));
  EXPECT_FALSE(v6->Contains(*IpAddress::Parse("fd00:11::5")));
  EXPECT_TRUE(IpPrefix::Parse("::/0")->Contains(*IpAddress::Parse("fd00::1")));
  EXPECT_TRUE(IpPrefix::Parse("fd00::1/128")->Contains(*IpAddress::Parse("fd00::1")));
  EXPECT_FALSE(IpPrefix::Parse("fd00::1/128")->Contains(*IpAddress::Parse("fd00::2")));
}

TEST(IpPrefix, RejectsMalformed) {
  for (const char* text : {"10.0.0.0", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "::/129",
                           "10.0.0.0/8/8", "/8", "10.0.0.0/08", "10.0.0.0/ 8"}) {
    EXPECT_FALSE(IpPrefix::Parse(text).ok()) << text;
  }
}

TEST(Protocol, ParsesApiSpellingOnly) {
  EXPECT_EQ(*ParseProtocol("TCP"), Protocol::kTCP);
  EXPECT_EQ(*ParseProtocol("UDP"), Protocol::kUDP);
  EXPECT_EQ(*ParseProtocol("SCTP"), Protocol::kSCTP);
  EXPECT_FALSE(ParseProtocol("tcp").ok());
  EXPECT_EQ(*ParseProtocol("tcp", true), Protocol::kTCP);
  EXPECT_FALSE(ParseProtocol("ICMP").ok());
}

}  // namespace
}  // namespace np
