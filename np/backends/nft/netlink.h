// np/backends/nft/netlink.h — map element edits sent to nf_tables as one raw netlink batch,
// without libnftables. Why: libnftables fetches its whole cache (every chain, set and the
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

 private:
  explicit NftNetlink(int fd) : fd_(fd) {}
  // Sends `bytes` and reads the answers to the messages numbered [first, first + count)
  // into `errors` (0 acked, -errno refused, 1 no answer); the ones with NLM_F_ACK are
  // `acked`. `reply` gets the payload of the last answer that is not an ack.
  absl::Status Exchange(const std::string& bytes, uint32_t first, uint32_t count,
                        const std::vector<uint32_t>& acked, std::vector<int>* errors,
                        std::string* reply);
  int fd_;
  uint32_t seq_ = 1;
};

}  // namespace np::backends::nft

#endif  // NP_BACKENDS_NFT_NETLINK_H_
