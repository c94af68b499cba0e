#include "np/backends/nft/netlink.h"

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "np/backends/util.h"

namespace np::backends::nft {
namespace {

// A message under construction: attributes appended, nests closed by patching their length.
class Message {
 public:
  Message(std::string* out, uint16_t type, uint16_t flags, uint32_t seq, uint8_t family,
          uint16_t res_id)
      : out_(out), start_(out->size()) {
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_flags = flags;
    h.nlmsg_seq = seq;
    Append(&h, sizeof(h));
    nfgenmsg g{};
    g.nfgen_family = family;
    g.version = NFNETLINK_V0;
    g.res_id = htons(res_id);
    Append(&g, sizeof(g));
  }
  void Attr(uint16_t type, const void* data, size_t size) {
    nlattr a{};
    a.nla_len = static_cast<uint16_t>(NLA_HDRLEN + size);
    a.nla_type = type;
    Append(&a, sizeof(a));
    Append(data, size);
    Pad();
  }
  void Be32(uint16_t type, uint32_t value) {
    const uint32_t be = htonl(value);
    Attr(type, &be, sizeof(be));
  }
  void String(uint16_t type, const std::string& s) { Attr(type, s.c_str(), s.size() + 1); }
  size_t Nest(uint16_t type) {
    const size_t at = out_->size();
    nlattr a{};
    a.nla_type = type | NLA_F_NESTED;
    Append(&a, sizeof(a));
    return at;
  }
  void End(size_t nest) { SetLength(nest, out_->size() - nest); }
  void Finish() {
    nlmsghdr h;
    std::memcpy(&h, out_->data() + start_, sizeof(h));
    h.nlmsg_len = static_cast<uint32_t>(out_->size() - start_);
    std::memcpy(out_->data() + start_, &h, sizeof(h));
  }

 private:
  void Append(const void* data, size_t size) {
    out_->append(static_cast<const char*>(data), size);
  }
  void Pad() { out_->append(NLA_ALIGN(out_->size()) - out_->size(), '\0'); }
  void SetLength(size_t at, size_t length) {
    nlattr a;
    std::memcpy(&a, out_->data() + at, sizeof(a));
    a.nla_len = static_cast<uint16_t>(length);
    std::memcpy(out_->data() + at, &a, sizeof(a));
  }
  std::string* out_;
  size_t start_;
};

constexpr uint16_t NftType(int msg) {
  return static_cast<uint16_t>((NFNL_SUBSYS_NFTABLES << 8) | msg);
}

// `bytes` + 1; false when it wraps (bytes was the family's last address).
bool Increment(std::string* bytes) {
  for (size_t i = bytes->size(); i-- > 0;) {
    if (++reinterpret_cast<unsigned char&>((*bytes)[i]) != 0) return true;
  }
  return false;
}

void Key(Message& m, const std::string& bytes) {
  const size_t key = m.Nest(NFTA_SET_ELEM_KEY);
  m.Attr(NFTA_DATA_VALUE, bytes.data(), bytes.size());
  m.End(key);
}

// nft's user data for an interval with no end element: one TLV, NFTNL_UDATA_SET_ELEM_FLAGS
// (1), 4 bytes, NFTNL_SET_ELEM_F_INTERVAL_OPEN (1) in host order (what nft 1.0.6 writes).
std::string OpenIntervalUserData() {
  std::string u = {1, 4};
  const uint32_t open = 1;
  u.append(reinterpret_cast<const char*>(&open), sizeof(open));
  return u;
}

// NEWSETELEM / DELSETELEM messages for `edit`, elements in messages of at most ~kListBytes
// each: an attribute's length is 16 bits, so one NFTA_SET_ELEM_LIST_ELEMENTS cannot hold more
// than 64 KB (the batch is still one transaction). `zero_end_first`: an interval set whose
// first element starts above zero gets an interval end at zero first, as nft writes it.
template <typename NextSeq>
absl::Status AppendElementMessages(std::string* out_bytes, const std::string& table,
                                   const SetElementEdit& edit, uint16_t flags,
                                   bool zero_end_first, NextSeq next_seq) {
  std::string& out = *out_bytes;
  constexpr size_t kListBytes = 16 * 1024;
  size_t e = 0;
  bool zero_end = zero_end_first && edit.interval && !edit.elements.empty() &&
                  edit.elements[0].first.find_first_not_of('\0') != std::string::npos;
  while (e < edit.elements.size()) {
    Message m(&out, NftType(edit.add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM), flags,
              next_seq(), NFPROTO_INET, 0);
    m.String(NFTA_SET_ELEM_LIST_TABLE, table);
    m.String(NFTA_SET_ELEM_LIST_SET, edit.set);
    const size_t list = m.Nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    if (zero_end) {
      zero_end = false;
      const size_t elem = m.Nest(NFTA_LIST_ELEM);
      Key(m, std::string(edit.elements[0].first.size(), '\0'));
      m.Be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
      m.End(elem);
    }
    for (; e < edit.elements.size() && out.size() - list < kListBytes; ++e) {
      const SetElementEdit::Element& x = edit.elements[e];
      if ((x.first.size() != 4 && x.first.size() != 16) || x.last.size() != x.first.size() ||
          x.last < x.first) {
        return absl::InvalidArgumentError(absl::StrCat("not an address interval in ", edit.set));
      }
      if (!edit.interval && x.first != x.last) {
        return absl::InvalidArgumentError(
            absl::StrCat("a range in ", edit.set, ", which has no intervals"));
      }
      if (x.jump.size() >= NFT_CHAIN_MAXNAMELEN) {
        return absl::InvalidArgumentError(absl::StrCat("a chain name too long in ", edit.set));
      }
      std::string end = x.last;
      const bool closed = edit.interval && Increment(&end);
      // The start (or only) element, with the data.
      size_t elem = m.Nest(NFTA_LIST_ELEM);
      Key(m, x.first);
      if (edit.add && !x.jump.empty()) {
        const size_t data = m.Nest(NFTA_SET_ELEM_DATA);
        const size_t verdict = m.Nest(NFTA_DATA_VERDICT);
        m.Be32(NFTA_VERDICT_CODE, static_cast<uint32_t>(NFT_JUMP));
        m.String(NFTA_VERDICT_CHAIN, x.jump);
        m.End(verdict);
        m.End(data);
      }
      if (edit.interval && !closed) {
        const std::string u = OpenIntervalUserData();
        m.Attr(NFTA_SET_ELEM_USERDATA, u.data(), u.size());
      }
      m.End(elem);
      if (closed) {
        elem = m.Nest(NFTA_LIST_ELEM);
        Key(m, end);
        m.Be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        m.End(elem);
      }
    }
    m.End(list);
    m.Finish();
  }
  return absl::OkStatus();
}

std::string ElementText(const SetElementEdit::Element& e) {
  return e.first == e.last ? AddressText(e.first)
                           : absl::StrCat(AddressText(e.first), "-", AddressText(e.last));
}

std::string EditText(const std::string& table, const SetElementEdit& edit) {
  std::vector<std::string> elements;
  for (const SetElementEdit::Element& e : edit.elements) {
    elements.push_back(e.jump.empty() ? ElementText(e)
                                      : absl::StrCat(ElementText(e), " : jump ", e.jump));
  }
  return absl::StrCat(edit.add ? "add" : "delete", " element inet ", table, " ", edit.set,
                      " { ", absl::StrJoin(elements, ", "), " }");
}

absl::Status ErrnoStatus(int error, absl::string_view what) {
  const std::string text = absl::StrCat(what, ": ", std::strerror(error));
  switch (error) {
    case ENOENT: return absl::NotFoundError(text);
    case EEXIST: return absl::AlreadyExistsError(text);
    case ERESTART: return absl::AbortedError(text);
    case EPERM: case EACCES: return absl::PermissionDeniedError(text);
    case EINVAL: case ERANGE: case E2BIG: return absl::InvalidArgumentError(text);
    case ENOMEM: case ENOSPC: case ENFILE: case ENOBUFS: return absl::ResourceExhaustedError(text);
    case EBUSY: case ENOTEMPTY: return absl::FailedPreconditionError(text);
    default: return absl::InternalError(text);
  }
}

}  // namespace

absl::StatusOr<std::string> EncodeElementBatch(const std::string& table,
                                               const std::vector<SetElementEdit>& edits,
                                               uint32_t seq, uint32_t genid,
                                               std::vector<int>* edit_of_message) {
  std::string out;
  edit_of_message->clear();
  auto next_seq = [&](int edit) {
    edit_of_message->push_back(edit);
    return seq + static_cast<uint32_t>(edit_of_message->size() - 1);
  };
  {
    Message begin(&out, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, next_seq(-1), AF_UNSPEC,
                  NFNL_SUBSYS_NFTABLES);
    if (genid != 0) begin.Be32(NFNL_BATCH_GENID, genid);
    begin.Finish();
  }
  for (size_t i = 0; i < edits.size(); ++i) {
    const SetElementEdit& edit = edits[i];
    const uint16_t flags = edit.add ? NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK
                                    : NLM_F_REQUEST | NLM_F_ACK;
    absl::Status appended = AppendElementMessages(
        &out, table, edit, flags, /*zero_end_first=*/false,
        [&] { return next_seq(static_cast<int>(i)); });
    if (!appended.ok()) return appended;
  }
  {
    Message end(&out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, next_seq(-1), AF_UNSPEC,
                NFNL_SUBSYS_NFTABLES);
    end.Finish();
  }
  return out;
}

namespace {

// ---- Rules: the forms Build writes, as nft 1.0.6 encodes them --------------------------------
constexpr uint32_t kReg1 = NFT_REG_1;

// One expression: NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { ... } }; `fill` writes
// the data's attributes.
template <typename Fill>
void Expr(Message& m, const char* name, Fill fill) {
  const size_t elem = m.Nest(NFTA_LIST_ELEM);
  m.String(NFTA_EXPR_NAME, name);
  const size_t data = m.Nest(NFTA_EXPR_DATA);
  fill();
  m.End(data);
  m.End(elem);
}

void Value(Message& m, uint16_t type, const std::string& bytes) {
  const size_t nest = m.Nest(type);
  m.Attr(NFTA_DATA_VALUE, bytes.data(), bytes.size());
  m.End(nest);
}

std::string HostU32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string BeU32(uint32_t v) { return HostU32(htonl(v)); }
std::string BeU16(uint16_t v) {
  const uint16_t be = htons(v);
  return std::string(reinterpret_cast<const char*>(&be), 2);
}

void MetaLoad(Message& m, uint32_t key) {
  Expr(m, "meta", [&] {
    m.Be32(NFTA_META_DREG, kReg1);
    m.Be32(NFTA_META_KEY, key);
  });
}
void Cmp(Message& m, uint32_t op, const std::string& bytes) {
  Expr(m, "cmp", [&] {
    m.Be32(NFTA_CMP_SREG, kReg1);
    m.Be32(NFTA_CMP_OP, op);
    Value(m, NFTA_CMP_DATA, bytes);
  });
}
void Payload(Message& m, uint32_t base, uint32_t offset, uint32_t len) {
  Expr(m, "payload", [&] {
    m.Be32(NFTA_PAYLOAD_DREG, kReg1);
    m.Be32(NFTA_PAYLOAD_BASE, base);
    m.Be32(NFTA_PAYLOAD_OFFSET, offset);
    m.Be32(NFTA_PAYLOAD_LEN, len);
  });
}
void Bitwise(Message& m, const std::string& mask, const std::string& x) {
  Expr(m, "bitwise", [&] {
    m.Be32(NFTA_BITWISE_SREG, kReg1);
    m.Be32(NFTA_BITWISE_DREG, kReg1);
    m.Be32(NFTA_BITWISE_OP, NFT_BITWISE_BOOL);
    m.Be32(NFTA_BITWISE_LEN, static_cast<uint32_t>(mask.size()));
    Value(m, NFTA_BITWISE_MASK, mask);
    Value(m, NFTA_BITWISE_XOR, x);
  });
}
// The mark in network order (how nft compares it and keys `type mark` sets).
void MarkToNetworkOrder(Message& m) {
  MetaLoad(m, NFT_META_MARK);
  Expr(m, "byteorder", [&] {
    m.Be32(NFTA_BYTEORDER_SREG, kReg1);
    m.Be32(NFTA_BYTEORDER_DREG, kReg1);
    m.Be32(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON);
    m.Be32(NFTA_BYTEORDER_LEN, 4);
    m.Be32(NFTA_BYTEORDER_SIZE, 4);
  });
}
void Lookup(Message& m, const std::string& set, uint32_t set_id, bool verdict) {
  Expr(m, "lookup", [&] {
    m.Be32(NFTA_LOOKUP_SREG, kReg1);
    m.String(NFTA_LOOKUP_SET, set);
    if (set_id != 0) m.Be32(NFTA_LOOKUP_SET_ID, set_id);
    if (verdict) m.Be32(NFTA_LOOKUP_DREG, NFT_REG_VERDICT);
  });
}
void Verdict(Message& m, int code, const std::string& chain) {
  Expr(m, "immediate", [&] {
    m.Be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
    const size_t data = m.Nest(NFTA_IMMEDIATE_DATA);
    const size_t verdict = m.Nest(NFTA_DATA_VERDICT);
    m.Be32(NFTA_VERDICT_CODE, static_cast<uint32_t>(code));
    if (!chain.empty()) m.String(NFTA_VERDICT_CHAIN, chain);
    m.End(verdict);
    m.End(data);
  });
}

bool ParseU32(absl::string_view text, uint32_t* out) {
  if (absl::ConsumePrefix(&text, "0x")) return absl::SimpleHexAtoi(text, out);
  return absl::SimpleAtoi(text, out);
}

// `a-b` (or one value `a` when `range` allows a single one).
bool ParseRange(absl::string_view text, uint32_t* a, uint32_t* b) {
  const size_t dash = text.find('-');
  if (dash == absl::string_view::npos) return ParseU32(text, a) && ParseU32(text, b);
  return ParseU32(text.substr(0, dash), a) && ParseU32(text.substr(dash + 1), b) && *a <= *b;
}

absl::Status Unknown(absl::string_view rule) {
  return absl::UnimplementedError(absl::StrCat("no netlink encoding for rule `", rule, "`"));
}

// The expressions of `rule` into the open NFTA_RULE_EXPRESSIONS nest, and its comment (the
// text between the quotes of a trailing `comment "..."`) into `comment`.
absl::Status EncodeRuleExpressions(Message& m, absl::string_view rule,
                                   const std::map<std::string, uint32_t>& set_ids,
                                   std::string* comment) {
  absl::string_view body = rule;
  if (size_t c = body.find(" comment \""); c != absl::string_view::npos || absl::StartsWith(body, "comment \"")) {
    if (c == absl::string_view::npos) c = 0;
    absl::string_view text = body.substr(c);
    absl::ConsumePrefix(&text, " ");
    absl::ConsumePrefix(&text, "comment \"");
    if (!absl::ConsumeSuffix(&text, "\"") || text.find('"') != absl::string_view::npos) {
      return Unknown(rule);
    }
    *comment = std::string(text);
    body = body.substr(0, c);
  }
  auto set_id = [&](absl::string_view name) {
    auto it = set_ids.find(std::string(name));
    return it == set_ids.end() ? 0u : it->second;
  };
  if (body == "ct state established,related accept") {
    Expr(m, "ct", [&] {
      m.Be32(NFTA_CT_DREG, kReg1);
      m.Be32(NFTA_CT_KEY, NFT_CT_STATE);
    });
    Bitwise(m, HostU32(NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)),
            HostU32(0));
    Cmp(m, NFT_CMP_NEQ, HostU32(0));
    Verdict(m, NF_ACCEPT, "");
    return absl::OkStatus();
  }
  const std::vector<absl::string_view> t = absl::StrSplit(body, ' ', absl::SkipEmpty());
  size_t i = 0;
  auto at = [&](size_t k, absl::string_view word) { return i + k < t.size() && t[i + k] == word; };
  // The mark rewrite of an identity chain (and the forward chain's "miss").
  if (t.size() == 9 && at(0, "meta") && at(1, "mark") && at(2, "set") && at(3, "meta") &&
      at(4, "mark") && at(5, "and") && at(7, "or")) {
    uint32_t mask, x;
    if (!ParseU32(t[6], &mask) || !ParseU32(t[8], &x)) return Unknown(rule);
    MetaLoad(m, NFT_META_MARK);
    Bitwise(m, HostU32(mask), HostU32(x));
    Expr(m, "meta", [&] {
      m.Be32(NFTA_META_KEY, NFT_META_MARK);
      m.Be32(NFTA_META_SREG, kReg1);
    });
    return absl::OkStatus();
  }
  // A vmap dispatch of the forward chain.
  if (t.size() == 4 && (at(0, "ip") || at(0, "ip6")) && (at(1, "saddr") || at(1, "daddr")) &&
      at(2, "vmap") && absl::StartsWith(t[3], "@")) {
    const bool v6 = t[0] == "ip6";
    const bool source = t[1] == "saddr";
    MetaLoad(m, NFT_META_NFPROTO);
    Cmp(m, NFT_CMP_EQ, std::string(1, static_cast<char>(v6 ? NFPROTO_IPV6 : NFPROTO_IPV4)));
    Payload(m, NFT_PAYLOAD_NETWORK_HEADER, v6 ? (source ? 8 : 24) : (source ? 12 : 16),
            v6 ? 16 : 4);
    Lookup(m, std::string(t[3].substr(1)), set_id(t[3].substr(1)), /*verdict=*/true);
    return absl::OkStatus();
  }
  // Table chains: matches, then one verdict.
  while (i < t.size()) {
    if (at(0, "meta") && at(1, "l4proto") && i + 2 < t.size()) {
      const absl::string_view p = t[i + 2];
      const int proto = p == "tcp" ? IPPROTO_TCP : p == "udp" ? IPPROTO_UDP
                        : p == "sctp" ? IPPROTO_SCTP : -1;
      if (proto < 0) return Unknown(rule);
      MetaLoad(m, NFT_META_L4PROTO);
      Cmp(m, NFT_CMP_EQ, std::string(1, static_cast<char>(proto)));
      i += 3;
    } else if (at(0, "th") && at(1, "dport") && i + 2 < t.size()) {
      uint32_t a, b;
      if (!ParseRange(t[i + 2], &a, &b) || b > 65535) return Unknown(rule);
      Payload(m, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
      if (a == b) {
        Cmp(m, NFT_CMP_EQ, BeU16(static_cast<uint16_t>(a)));
      } else {
        Cmp(m, NFT_CMP_GTE, BeU16(static_cast<uint16_t>(a)));
        Cmp(m, NFT_CMP_LTE, BeU16(static_cast<uint16_t>(b)));
      }
      i += 3;
    } else if (at(0, "meta") && at(1, "mark") && i + 2 < t.size()) {
      const absl::string_view v = t[i + 2];
      MarkToNetworkOrder(m);
      if (absl::StartsWith(v, "@")) {
        Lookup(m, std::string(v.substr(1)), set_id(v.substr(1)), /*verdict=*/false);
      } else {
        uint32_t a, b;
        if (v.find('-') == absl::string_view::npos || !ParseRange(v, &a, &b)) {
          return Unknown(rule);
        }
        Cmp(m, NFT_CMP_GTE, BeU32(a));
        Cmp(m, NFT_CMP_LTE, BeU32(b));
      }
      i += 3;
    } else if (i + 1 == t.size() && (at(0, "accept") || at(0, "drop") || at(0, "return"))) {
      Verdict(m, t[i] == "accept" ? NF_ACCEPT : t[i] == "drop" ? NF_DROP : NFT_RETURN, "");
      return absl::OkStatus();
    } else if (i + 2 == t.size() && (at(0, "goto") || at(0, "jump"))) {
      Verdict(m, t[i] == "goto" ? NFT_GOTO : NFT_JUMP, std::string(t[i + 1]));
      return absl::OkStatus();
    } else {
      return Unknown(rule);
    }
  }
  return Unknown(rule);  // no verdict: Build never writes one
}

// nft's user data TLV: type, length, value.
std::string Tlv(uint8_t type, const std::string& value) {
  std::string out = {static_cast<char>(type), static_cast<char>(value.size())};
  return out + value;
}

// Comments as user data: the text with its NUL (Build cuts comments to kNftCommentMax
// bytes; a TLV's length is one byte).
absl::StatusOr<std::string> CommentTlv(uint8_t type, const std::string& comment) {
  if (comment.size() + 1 > 255) return absl::UnimplementedError("comment too long");
  return Tlv(type, comment + std::string(1, '\0'));
}

// libnftnl's user data types (libnftnl/udata.h), which nft's listing reads.
constexpr uint8_t kUdataRuleComment = 0;      // NFTNL_UDATA_RULE_COMMENT
constexpr uint8_t kUdataChainComment = 0;     // NFTNL_UDATA_CHAIN_COMMENT
constexpr uint8_t kUdataSetKeyByteorder = 0;  // NFTNL_UDATA_SET_KEYBYTEORDER
constexpr uint8_t kUdataSetDataByteorder = 1; // NFTNL_UDATA_SET_DATABYTEORDER
constexpr uint8_t kUdataSetDataInterval = 6;  // NFTNL_UDATA_SET_DATA_INTERVAL
constexpr uint8_t kUdataSetComment = 7;       // NFTNL_UDATA_SET_COMMENT
// nft's datatypes (src/datatype.h) and byte orders (BYTEORDER_HOST_ENDIAN 1, BIG_ENDIAN 2).
constexpr uint32_t kTypeIpv4 = 7, kTypeIpv6 = 8, kTypeMark = 19;
constexpr uint32_t kHostEndian = 1, kBigEndian = 2;

}  // namespace

bool MarksTableForValidation(const std::vector<SetElementEdit>& edits) {
  for (const SetElementEdit& edit : edits) {
    if (!edit.add) continue;
    for (const SetElementEdit::Element& e : edit.elements) {
      if (!e.jump.empty()) return true;
    }
  }
  return false;
}

bool MarksTableForValidation(const WholeBatch& batch) {
  for (const WholeChain& c : batch.chains) {
    if (!c.rules.empty()) return true;
  }
  for (const WholeSet& s : batch.sets) {
    for (const SetElementEdit::Element& e : s.elements) {
      if (!e.jump.empty()) return true;
    }
  }
  return MarksTableForValidation(batch.last_element_adds);
}

absl::StatusOr<std::string> EncodeWholeBatch(const std::string& table, const WholeBatch& batch,
                                             uint32_t seq, uint32_t genid,
                                             std::vector<std::string>* what_of_message) {
  std::string out;
  what_of_message->clear();
  auto next_seq = [&](std::string what) {
    what_of_message->push_back(std::move(what));
    return seq + static_cast<uint32_t>(what_of_message->size() - 1);
  };
  const std::string in = absl::StrCat(" inet ", table, " ");
  constexpr uint16_t kCreate = NLM_F_REQUEST | NLM_F_CREATE;
  {
    Message begin(&out, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, next_seq(""), AF_UNSPEC,
                  NFNL_SUBSYS_NFTABLES);
    if (genid != 0) begin.Be32(NFNL_BATCH_GENID, genid);
    begin.Finish();
  }
  if (batch.add_table) {
    Message m(&out, NftType(NFT_MSG_NEWTABLE), kCreate, next_seq(absl::StrCat("add table inet ", table)),
              NFPROTO_INET, 0);
    m.String(NFTA_TABLE_NAME, table);
    m.Be32(NFTA_TABLE_FLAGS, 0);
    m.Finish();
  }
  auto by_name = [&](uint16_t type, const std::string& what, const std::string& name,
                     uint16_t table_attr, uint16_t name_attr) {
    Message m(&out, NftType(type), NLM_F_REQUEST, next_seq(absl::StrCat(what, in, name)),
              NFPROTO_INET, 0);
    m.String(table_attr, table);
    m.String(name_attr, name);
    m.Finish();
  };
  auto elements = [&](const SetElementEdit& edit) {
    return AppendElementMessages(
        &out, table, edit, edit.add ? kCreate : NLM_F_REQUEST, /*zero_end_first=*/false,
        [&] { return next_seq(EditText(table, edit)); });
  };
  for (const std::string& name : batch.first_flush) {
    by_name(NFT_MSG_DELRULE, "flush chain", name, NFTA_RULE_TABLE, NFTA_RULE_CHAIN);
  }
  for (const SetElementEdit& edit : batch.first_element_deletes) {
    if (absl::Status s = elements(edit); !s.ok()) return s;
  }
  for (const std::string& name : batch.first_delete_sets) {
    by_name(NFT_MSG_DELSET, "delete set", name, NFTA_SET_TABLE, NFTA_SET_NAME);
  }
  for (const std::string& name : batch.first_delete_chains) {
    by_name(NFT_MSG_DELCHAIN, "delete chain", name, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME);
  }
  for (const WholeChain& c : batch.chains) {
    if (c.name.size() >= NFT_CHAIN_MAXNAMELEN) return absl::UnimplementedError("chain name too long");
    Message m(&out, NftType(NFT_MSG_NEWCHAIN), c.exclusive ? kCreate | NLM_F_EXCL : kCreate,
              next_seq(absl::StrCat(c.exclusive ? "create" : "add", " chain", in, c.name)),
              NFPROTO_INET, 0);
    m.String(NFTA_CHAIN_TABLE, table);
    m.String(NFTA_CHAIN_NAME, c.name);
    if (c.forward_hook) {
      m.String(NFTA_CHAIN_TYPE, "filter");
      m.Be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
      const size_t hook = m.Nest(NFTA_CHAIN_HOOK);
      m.Be32(NFTA_HOOK_HOOKNUM, NF_INET_FORWARD);
      m.Be32(NFTA_HOOK_PRIORITY, 0);  // `priority filter`
      m.End(hook);
    }
    if (!c.comment.empty()) {
      absl::StatusOr<std::string> u = CommentTlv(kUdataChainComment, c.comment);
      if (!u.ok()) return u.status();
      m.Attr(NFTA_CHAIN_USERDATA, u->data(), u->size());
    }
    m.Finish();
  }
  std::map<std::string, uint32_t> set_ids;
  for (const WholeSet& s : batch.sets) {
    const uint32_t id = static_cast<uint32_t>(set_ids.size() + 1);
    set_ids[s.name] = id;
    const uint32_t key_len = s.key == WholeSet::kIpv6 ? 16 : 4;
    {
      Message m(&out, NftType(NFT_MSG_NEWSET), kCreate,
                next_seq(absl::StrCat("add ", s.map ? "map" : "set", in, s.name)), NFPROTO_INET,
                0);
      m.String(NFTA_SET_TABLE, table);
      m.String(NFTA_SET_NAME, s.name);
      m.Be32(NFTA_SET_FLAGS, (s.map ? NFT_SET_MAP : 0) | (s.interval ? NFT_SET_INTERVAL : 0));
      m.Be32(NFTA_SET_KEY_TYPE, s.key == WholeSet::kIpv4   ? kTypeIpv4
                                : s.key == WholeSet::kIpv6 ? kTypeIpv6
                                                           : kTypeMark);
      m.Be32(NFTA_SET_KEY_LEN, key_len);
      if (s.map) {
        m.Be32(NFTA_SET_DATA_TYPE, static_cast<uint32_t>(NFT_DATA_VERDICT));
        m.Be32(NFTA_SET_DATA_LEN, 0);
      }
      m.Be32(NFTA_SET_ID, id);
      std::string u = Tlv(kUdataSetKeyByteorder,
                          HostU32(s.key == WholeSet::kMark ? kHostEndian : kBigEndian));
      if (s.map) {
        u += Tlv(kUdataSetDataByteorder, HostU32(0));
        u += Tlv(kUdataSetDataInterval, HostU32(0));
      }
      if (!s.comment.empty()) {
        absl::StatusOr<std::string> c = CommentTlv(kUdataSetComment, s.comment);
        if (!c.ok()) return c.status();
        u += *c;
      }
      m.Attr(NFTA_SET_USERDATA, u.data(), u.size());
      m.Finish();
    }
    SetElementEdit edit;
    edit.set = s.name;
    edit.add = true;
    edit.interval = s.interval;
    edit.elements = s.elements;
    for (const SetElementEdit::Element& e : s.elements) {
      if (e.first.size() != key_len) {
        return absl::InvalidArgumentError(absl::StrCat("a key of the wrong width in ", s.name));
      }
    }
    absl::Status appended = AppendElementMessages(
        &out, table, edit, kCreate, /*zero_end_first=*/true,
        [&] { return next_seq(absl::StrCat("add element", in, s.name, " { ... }")); });
    if (!appended.ok()) return appended;
  }
  auto add_rules = [&](const WholeChain& c) -> absl::Status {
    for (const std::string& rule : c.rules) {
      Message m(&out, NftType(NFT_MSG_NEWRULE), kCreate | NLM_F_APPEND,
                next_seq(absl::StrCat("add rule", in, c.name, " ", rule)), NFPROTO_INET, 0);
      m.String(NFTA_RULE_TABLE, table);
      m.String(NFTA_RULE_CHAIN, c.name);
      const size_t exprs = m.Nest(NFTA_RULE_EXPRESSIONS);
      std::string comment;
      if (absl::Status s = EncodeRuleExpressions(m, rule, set_ids, &comment); !s.ok()) return s;
      m.End(exprs);
      if (!comment.empty()) {
        absl::StatusOr<std::string> u = CommentTlv(kUdataRuleComment, comment);
        if (!u.ok()) return u.status();
        m.Attr(NFTA_RULE_USERDATA, u->data(), u->size());
      }
      m.Finish();
    }
    return absl::OkStatus();
  };
  const std::set<std::string> flushed(batch.flush.begin(), batch.flush.end());
  for (const WholeChain& c : batch.chains) {
    if (flushed.count(c.name) > 0) continue;
    if (absl::Status s = add_rules(c); !s.ok()) return s;
  }
  for (const std::string& name : batch.flush) {
    by_name(NFT_MSG_DELRULE, "flush chain", name, NFTA_RULE_TABLE, NFTA_RULE_CHAIN);
  }
  for (const WholeChain& c : batch.chains) {
    if (flushed.count(c.name) == 0) continue;
    if (absl::Status s = add_rules(c); !s.ok()) return s;
  }
  for (const std::string& name : batch.delete_sets) {
    by_name(NFT_MSG_DELSET, "delete set", name, NFTA_SET_TABLE, NFTA_SET_NAME);
  }
  for (const std::string& name : batch.delete_chains) {
    by_name(NFT_MSG_DELCHAIN, "delete chain", name, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME);
  }
  for (const SetElementEdit& edit : batch.last_element_adds) {
    if (absl::Status s = elements(edit); !s.ok()) return s;
  }
  // The last message asks for an ack (CommitWhole waits for it).
  if (what_of_message->size() > 1) {
    size_t at = 0, last = 0;
    for (nlmsghdr h; at + sizeof(h) <= out.size(); at += NLMSG_ALIGN(h.nlmsg_len)) {
      std::memcpy(&h, out.data() + at, sizeof(h));
      last = at;
    }
    nlmsghdr h;
    std::memcpy(&h, out.data() + last, sizeof(h));
    h.nlmsg_flags |= NLM_F_ACK;
    std::memcpy(out.data() + last, &h, sizeof(h));
  }
  {
    Message end(&out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, next_seq(""), AF_UNSPEC,
                NFNL_SUBSYS_NFTABLES);
    end.Finish();
  }
  return out;
}

absl::StatusOr<std::unique_ptr<NftNetlink>> NftNetlink::Open() {
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return ErrnoStatus(errno, "socket(NETLINK_NETFILTER)");
  // Acks without a copy of the request: they stay small whatever the batch.
  const int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    const int error = errno;
    close(fd);
    return ErrnoStatus(error, "bind(NETLINK_NETFILTER)");
  }
  return std::unique_ptr<NftNetlink>(new NftNetlink(fd));
}

NftNetlink::~NftNetlink() { close(fd_); }

absl::Status NftNetlink::Exchange(const std::string& bytes, uint32_t first, uint32_t count,
                                  const std::vector<uint32_t>& acked, std::vector<int>* errors,
                                  std::string* reply) {
  // errors[i]: the answer to message first + i: 0 acked, -errno refused, 1 not answered.
  errors->assign(count, 1);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  ssize_t sent;
  do {
    sent = sendto(fd_, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
                  sizeof(kernel));
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return ErrnoStatus(errno, "sendto(NETLINK_NETFILTER)");
  if (static_cast<size_t>(sent) != bytes.size()) return absl::InternalError("netlink: short send");
  // The kernel handles a netlink request inside sendto, so the answers are queued by now;
  // the wait below is only for a kernel that would answer later.
  size_t pending = acked.size();
  bool refused = false;
  alignas(nlmsghdr) char buffer[65536];
  auto read = [&](ssize_t got) {
    for (auto* h = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(h, static_cast<size_t>(got));
         h = NLMSG_NEXT(h, got)) {
      if (h->nlmsg_seq < first || h->nlmsg_seq >= first + count) continue;  // a stale answer
      int& slot = (*errors)[h->nlmsg_seq - first];
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) continue;
        const int error = static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
        if (slot == 1 && std::find(acked.begin(), acked.end(), h->nlmsg_seq) != acked.end()) {
          --pending;
        }
        // A refusal is kept over a later ack of the same message.
        if (slot >= 0) slot = error;
        if (error != 0) refused = true;
      } else if (reply != nullptr) {
        reply->assign(static_cast<const char*>(NLMSG_DATA(h)), h->nlmsg_len - NLMSG_HDRLEN);
      }
    }
  };
  while (pending > 0 && !refused) {
    ssize_t got = recv(fd_, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLIN, 0};
      const int ready = poll(&p, 1, 1000);
      if (ready == 0) return absl::DeadlineExceededError("netlink: no answer from nf_tables");
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return ErrnoStatus(errno, "recv(NETLINK_NETFILTER)");
    read(got);
  }
  // Whatever else the kernel queued for this batch (a commit's refusal after the acks, acks
  // after a refusal) is read now: it must not be taken for the answers to the next one.
  for (ssize_t got; (got = recv(fd_, buffer, sizeof(buffer), MSG_DONTWAIT)) > 0;) read(got);
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> NftNetlink::GenerationId() {
  std::string bytes;
  const uint32_t seq = seq_++;
  Message m(&bytes, NftType(NFT_MSG_GETGEN), NLM_F_REQUEST | NLM_F_ACK, seq, AF_UNSPEC, 0);
  m.Finish();
  std::vector<int> errors;
  std::string reply;
  if (absl::Status s = Exchange(bytes, seq, 1, {seq}, &errors, &reply); !s.ok()) return s;
  if (errors[0] < 0) return ErrnoStatus(-errors[0], "NFT_MSG_GETGEN");
  // nfgenmsg, then attributes.
  size_t at = NLMSG_ALIGN(sizeof(nfgenmsg));
  while (at + NLA_HDRLEN <= reply.size()) {
    nlattr a;
    std::memcpy(&a, reply.data() + at, sizeof(a));
    if (a.nla_len < NLA_HDRLEN || at + a.nla_len > reply.size()) break;
    if ((a.nla_type & NLA_TYPE_MASK) == NFTA_GEN_ID && a.nla_len == NLA_HDRLEN + 4) {
      uint32_t be;
      std::memcpy(&be, reply.data() + at + NLA_HDRLEN, sizeof(be));
      return ntohl(be);
    }
    at += NLA_ALIGN(a.nla_len);
  }
  return absl::InternalError("NFT_MSG_GETGEN: no NFTA_GEN_ID in the answer");
}

absl::Status NftNetlink::SendBatch(const std::string& bytes, uint32_t first,
                                   const std::vector<uint32_t>& acked,
                                   const std::vector<std::string>& what_of_message,
                                   uint32_t genid) {
  const uint32_t count = static_cast<uint32_t>(what_of_message.size());
  // A whole program is larger than the default send buffer; netlink takes a message only
  // whole (EMSGSIZE past sk_sndbuf). As root, SO_SNDBUFFORCE lifts the cap, as nft does.
  if (bytes.size() + 4096 > std::max<size_t>(sndbuf_, 100 * 1024)) {
    const int size = static_cast<int>(std::min<size_t>(bytes.size() + 4096, 1u << 30));
    if (setsockopt(fd_, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) != 0 &&
        setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)) != 0) {
      return ErrnoStatus(errno, "setsockopt(SO_SNDBUF)");
    }
    sndbuf_ = static_cast<size_t>(size);
  }
  std::vector<int> errors;
  if (absl::Status s = Exchange(bytes, first, count, acked, &errors, nullptr); !s.ok()) return s;
  if (errors[0] < 0) {
    return ErrnoStatus(-errors[0], errors[0] == -ERESTART
                                       ? absl::StrCat("nf_tables: the ruleset is not at "
                                                      "generation ", genid, " (another writer)")
                                       : "nf_tables refused the batch");
  }
  for (uint32_t i = 1; i < count; ++i) {
    if (errors[i] < 0) {
      return ErrnoStatus(-errors[i],
                         absl::StrCat("nf_tables refused `", what_of_message[i], "`"));
    }
  }
  for (uint32_t seq : acked) {
    if (errors[seq - first] != 0) return absl::InternalError("netlink: a message was not answered");
  }
  return absl::OkStatus();
}

absl::Status NftNetlink::Commit(const std::string& table, const std::vector<SetElementEdit>& edits,
                                uint32_t genid) {
  const uint32_t first = seq_;
  std::vector<int> edit_of_message;
  absl::StatusOr<std::string> bytes = EncodeElementBatch(table, edits, first, genid, &edit_of_message);
  if (!bytes.ok()) return bytes.status();
  const uint32_t count = static_cast<uint32_t>(edit_of_message.size());
  seq_ += count;
  // Past what a socket's send buffer takes at once: libnftables' path.
  if (bytes->size() > 128 * 1024) return absl::ResourceExhaustedError("netlink: batch too big");
  std::vector<uint32_t> acked;
  std::vector<std::string> what(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (edit_of_message[i] < 0) continue;
    acked.push_back(first + i);
    what[i] = EditText(table, edits[edit_of_message[i]]);
  }
  return SendBatch(*bytes, first, acked, what, genid);
}

absl::Status NftNetlink::CommitWhole(const std::string& table, const WholeBatch& batch,
                                     uint32_t genid) {
  const uint32_t first = seq_;
  std::vector<std::string> what;
  absl::StatusOr<std::string> bytes = EncodeWholeBatch(table, batch, first, genid, &what);
  if (!bytes.ok()) return bytes.status();
  const uint32_t count = static_cast<uint32_t>(what.size());
  seq_ += count;
  // An ack for the last message only: thousands of acks would overflow the receive buffer;
  // a refused message is answered whatever its flags, and a failed commit refuses the first.
  std::vector<uint32_t> acked;
  if (count > 2) acked.push_back(first + count - 2);
  return SendBatch(*bytes, first, acked, what, genid);
}

}  // namespace np::backends::nft
