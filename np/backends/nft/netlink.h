// np/backends/nft/netlink.h — map element edits, and the whole program's generation switch
// (WholeBatch below), sent to nf_tables as one raw netlink batch each, without libnftables. Why: libnftables fetches its whole cache (every chain, set and the
// interval maps' elements: ~500 KB at 1,000 pods) before every command and has no flag to
// skip it, so a pod event's three-element edit cost 1–20 ms; the commit itself is ~0.1 ms.
//
//   absl::StatusOr<std::unique_ptr<NftNetlink>> nl = NftNetlink::Open();  // caller's netns
//   absl::StatusOr<uint32_t> gen = (*nl)->GenerationId();
//   std::vector<SetElementEdit> edits = ...;  // ParseElementTransaction(plan.transactions[0])
//   absl::Status s = (*nl)->Commit("np", edits, *gen);  // one transaction; gen + 1 after it
//
// The encoding is the one nft 1.0.6 sends (checked with `nft --debug=netlink`):
//  - a batch: NFNL_MSG_BATCH_BEGIN (res_id NFNL_SUBSYS_NFTABLES, attribute NFNL_BATCH_GENID:
//    the kernel refuses the whole batch with ERESTART when the ruleset's generation is not
//    that one, i.e. when anyone committed since np last did), one NFT_MSG_NEWSETELEM or
//    NFT_MSG_DELSETELEM per edit (family inet, NLM_F_ACK), NFNL_MSG_BATCH_END. The kernel
//    applies all or nothing;
//  - a key is NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE: the address in network order };
//  - a jump is NFTA_SET_ELEM_DATA { NFTA_DATA_VERDICT { NFTA_VERDICT_CODE: NFT_JUMP as a
//    big-endian 32-bit word, NFTA_VERDICT_CHAIN: the name, NUL-terminated } };
//  - an interval set (rbtree) holds [a, b] as two elements: key a (with the data) and key
//    b + 1 flagged NFT_SET_ELEM_INTERVAL_END (no data). When b is the family's last address
//    there is no end element; nft then marks the start element "open" in its user data
//    (NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN), which only its listing
//    reads — np writes it too so that `nft list` shows what an nft-made element shows.
//    Deletion sends the same elements without data.
//
// Thread safety: an NftNetlink is used by one thread at a time; the socket stays in the
// network namespace it was opened in whichever thread uses it.
#ifndef NP_BACKENDS_NFT_NETLINK_H_
#define NP_BACKENDS_NFT_NETLINK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace np::backends::nft {

// One `add element` / `delete element` of one set of the table.
struct SetElementEdit {
  struct Element {
    std::string first, last;  // network-order bytes (4 or 16); first == last: one address
    std::string jump;         // the verdict's chain (add to a verdict map); empty: no data
  };
  std::string set;
  bool add = false;
  bool interval = false;  // `flags interval`: elements become start/end pairs
  std::vector<Element> elements;
};

// The batch's bytes (netlink messages back to back, sequence numbers seq, seq + 1, ...);
// `edit_of_message` gets, per message, the index of the edit it carries (-1: the batch's
// begin and end); an edit of many elements takes several messages. genid 0: no generation
// check. InvalidArgument for an element it cannot encode (a range in a set without
// intervals, keys of different widths, a range that ends before it begins).
absl::StatusOr<std::string> EncodeElementBatch(const std::string& table,
                                               const std::vector<SetElementEdit>& edits,
                                               uint32_t seq, uint32_t genid,
                                               std::vector<int>* edit_of_message);

// ---- The whole path (a generation switch) as one batch -----------------------------------
// libnftables spends nearly all of a generation switch in userspace (parsing the text,
// fetching its cache, building every element: bench/RESULTS.md "nft whole path split"), so
// np sends the same objects itself. The text (nft.h SwitchText / RetireText) stays the
// source of truth: the batch carries the very rule strings Build writes, and EncodeRule
// knows only the forms Build emits, each as the expressions nft 1.0.6 makes of it (checked
// with `nft --debug=netlink,mnl`):
//   ct state established,related accept         ct state; bitwise & 6; cmp neq 0; accept
//   meta mark set meta mark and M or X          meta mark; bitwise (& M) ^ X; meta set mark
//   ip|ip6 saddr|daddr vmap @S                  meta nfproto; cmp; payload; lookup S dreg 0
//   meta l4proto tcp|udp|sctp                   meta l4proto; cmp eq (1 byte)
//   th dport P | th dport A-B                   payload th +2 (2 bytes); cmp eq | gte, lte
//   meta mark @S                                meta mark; byteorder hton; lookup S
//   meta mark A-B                               meta mark; byteorder hton; cmp gte, lte
//   accept | drop | return | goto C | jump C    immediate verdict
//   comment "TEXT"                              rule user data (NFTNL_UDATA_RULE_COMMENT)
// Anything else is Unimplemented: the caller then takes libnftables.
struct WholeSet {
  std::string name;
  enum Key { kIpv4, kIpv6, kMark } key = kIpv4;
  bool map = false;  // a verdict map (`type ... : verdict`)
  bool interval = false;
  std::string comment;
  std::vector<SetElementEdit::Element> elements;  // mark keys: 4 bytes, network order
};
struct WholeChain {
  std::string name;
  bool forward_hook = false;  // `type filter hook forward priority filter; policy accept;`
  bool exclusive = false;     // NLM_F_EXCL: refused when it exists (the switch's guard)
  std::string comment;
  std::vector<std::string> rules;  // as Build writes them
};
struct WholeBatch {
  bool add_table = false;              // NEWTABLE (no error when it exists)
  std::vector<WholeChain> chains;      // declared first, so rules and elements can name them
  std::vector<WholeSet> sets;          // declared with their elements
  std::vector<std::string> flush;      // chains whose rules go before the rules below are added
  // Rules: chains[i].rules, regular chains first, then the flushed (base) chains'.
  std::vector<std::string> delete_sets;    // after the rules
  std::vector<std::string> delete_chains;  // after the sets
  // An in-place edit of the live generation (nft.h PlanInPlaceUpdate) uses these too. First,
  // before everything above: chains flushed, map elements deleted, then sets and chains
  // deleted — so that whatever jumped to a deleted chain or looked up a deleted set is gone
  // earlier in the batch (the kernel refuses the delete otherwise), and a set can be
  // declared again under its name below.
  std::vector<std::string> first_flush;
  std::vector<SetElementEdit> first_element_deletes;
  std::vector<std::string> first_delete_sets;
  std::vector<std::string> first_delete_chains;
  // Last: map elements added, once the chains they jump to exist.
  std::vector<SetElementEdit> last_element_adds;
};
// The batch's bytes; `what_of_message` gets, per message, what it does in nft's words
// ("add rule inet np t0_ingress_g2 drop"; empty for the batch's begin and end) to name a
// refused one. Unimplemented for a rule form, hook or key it does not know.
absl::StatusOr<std::string> EncodeWholeBatch(const std::string& table, const WholeBatch& batch,
                                             uint32_t seq, uint32_t genid,
                                             std::vector<std::string>* what_of_message);

// ---- Which commits make the kernel validate the whole table -------------------------------
// nf_tables checks a table for loops and hook restrictions at commit (nf_tables_validate ->
// nft_table_validate: from every base chain, every rule's expressions, every element of every
// verdict map a rule applies, recursively into each chain a jump or goto reaches), but only
// when the transaction marked the table (NFT_VALIDATE_NEED): nf_tables_newrule marks it for
// a rule with an expression that has a validate callback (immediate verdicts, lookups, meta
// set: every rule np writes has one), nft_add_set_elem for an element whose data is a jump
// or goto verdict. Deleting elements, rules, sets or chains, flushing a chain, declaring
// sets, and adding elements without data or with another verdict do not mark it (checked
// on 6.18 with perf: np/backends/nft/validation_cost.sh). The walk is O(ruleset) — at 1,000
// endpoints of a 10k-pod cluster it is most of a pod event's commit (bench/RESULTS.md).
// Whether committing `edits` (one transaction) marks the table: an added element jumps.
bool MarksTableForValidation(const std::vector<SetElementEdit>& edits);
// The same for a whole-path or in-place batch: a rule added (chains[i].rules), or an element
// that jumps added (declared sets' elements, last_element_adds).
bool MarksTableForValidation(const WholeBatch& batch);

// A NETLINK_NETFILTER socket in the network namespace of the thread that opened it.
class NftNetlink {
 public:
  static absl::StatusOr<std::unique_ptr<NftNetlink>> Open();
  ~NftNetlink();
  NftNetlink(const NftNetlink&) = delete;
  NftNetlink& operator=(const NftNetlink&) = delete;

  // The ruleset's generation (NFT_MSG_GETGEN): what the next commit must name.
  absl::StatusOr<uint32_t> GenerationId();
  // One transaction. Errors (the kernel then changed nothing): Aborted when the generation
  // is not `genid` (someone else committed), the errno mapped to a code with the refused
  // message's set and elements named otherwise. On success the generation is genid + 1
  // (NextGeneration).
  absl::Status Commit(const std::string& table, const std::vector<SetElementEdit>& edits,
                      uint32_t genid);
  static uint32_t NextGeneration(uint32_t genid) { return genid + 1 == 0 ? 1 : genid + 1; }
  // One whole-path transaction (EncodeWholeBatch); genid 0: no generation check. Errors as
  // Commit's, naming the refused message; the kernel then changed nothing.
  absl::Status CommitWhole(const std::string& table, const WholeBatch& batch, uint32_t genid);

 private:
  explicit NftNetlink(int fd) : fd_(fd) {}
  // Sends `bytes` and reads the answers to the messages numbered [first, first + count)
  // into `errors` (0 acked, -errno refused, 1 no answer); the ones with NLM_F_ACK are
  // `acked`. `reply` gets the payload of the last answer that is not an ack.
  // Sends an encoded batch (acks requested on `acked` only) and maps the answers to a status.
  absl::Status SendBatch(const std::string& bytes, uint32_t first,
                         const std::vector<uint32_t>& acked,
                         const std::vector<std::string>& what_of_message, uint32_t genid);
  absl::Status Exchange(const std::string& bytes, uint32_t first, uint32_t count,
                        const std::vector<uint32_t>& acked, std::vector<int>* errors,
                        std::string* reply);
  int fd_;
  uint32_t seq_ = 1;
  size_t sndbuf_ = 0;  // what SendBatch set SO_SNDBUF(FORCE) to; 0: the default
};

}  // namespace np::backends::nft

#endif  // NP_BACKENDS_NFT_NETLINK_H_
