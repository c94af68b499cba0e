#include "np/backends/nft/netlink.h"

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
    // Elements in messages of at most ~kListBytes each: an attribute's length is 16 bits,
    // so one NFTA_SET_ELEM_LIST_ELEMENTS cannot hold more than 64 KB. The batch is still one
    // transaction.
    constexpr size_t kListBytes = 16 * 1024;
    size_t e = 0;
    while (e < edit.elements.size()) {
      Message m(&out, NftType(edit.add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM), flags,
                next_seq(static_cast<int>(i)), NFPROTO_INET, 0);
      m.String(NFTA_SET_ELEM_LIST_TABLE, table);
      m.String(NFTA_SET_ELEM_LIST_SET, edit.set);
      const size_t list = m.Nest(NFTA_SET_ELEM_LIST_ELEMENTS);
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
  }
  {
    Message end(&out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, next_seq(-1), AF_UNSPEC,
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
  for (uint32_t i = 0; i < count; ++i) {
    if (edit_of_message[i] >= 0) acked.push_back(first + i);
  }
  std::vector<int> errors;
  if (absl::Status s = Exchange(*bytes, first, count, acked, &errors, nullptr); !s.ok()) return s;
  if (errors[0] < 0) {
    return ErrnoStatus(-errors[0], errors[0] == -ERESTART
                                       ? absl::StrCat("nf_tables: the ruleset is not at "
                                                      "generation ", genid, " (another writer)")
                                       : "nf_tables refused the batch");
  }
  for (uint32_t i = 0; i < count; ++i) {
    if (edit_of_message[i] >= 0 && errors[i] < 0) {
      return ErrnoStatus(-errors[i], absl::StrCat("nf_tables refused `",
                                                  EditText(table, edits[edit_of_message[i]]), "`"));
    }
  }
  for (uint32_t i = 0; i < count; ++i) {
    if (edit_of_message[i] >= 0 && errors[i] != 0) {
      return absl::InternalError("netlink: a message was not answered");
    }
  }
  return absl::OkStatus();
}

}  // namespace np::backends::nft
