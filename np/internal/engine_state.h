// The inside of an np::Engine snapshot, and the update machinery that produces the next
// one. Private to np: include only from np/engine*.cc.
//
// Policy tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy;
// issue 10) — how they compile into these tables.
//
// The verdict path does not change shape: pod -> HotRecord (target table, peer class), then
// per side one interval lookup and one membership test. All tier ordering is resolved at
// build time; nothing at query time looks at a policy, a priority or a rule.
//
// 1. Peers. Tier peers reuse the interned PeerSelector machinery, so that peer classes stay
//    "indistinguishable to every rule of every kind":
//    - `namespaces` = a kNamespaces selector with no pod selector; `pods` = kNamespaces with
//      both (v1alpha2 without namespaceSelector: the empty one). Same keys as the equal
//      NetworkPolicy peers, so they share ids and bitsets.
//    - `networks` = one new kind kNetwork per CIDR (no excepts). It lives in the atom table
//      like an ipBlock, but matches pod addresses whatever EvaluationOptions::ip_block_scope
//      says (README: `--ipblock-scope` does not change tier peers), so its key differs from
//      the ipBlock's ("net:" vs "ip:").
//    - `nodes` = one new kind kNodeAddresses: the addresses of the Nodes the selector matches
//      (compiled with the tiers: a Node change recompiles them, point 6), as /32 or /128 atoms. It
//      never matches a pod (a pod's ipblock part leaves these selectors out), only addresses
//      outside the cluster, as the reference's "a nodes peer never matches a pod".
//    - `domainNames` = no selector: it never matches. Explain lists it as not evaluable.
//    A shared address (kSharedPeer) is in no selector's set, as the reference's
//    "an address two live pods share matches no tier peer".
// 2. Subjects. Per identity (namespace labels + pod labels), next to `target_policies`, an
//    IdList `tier_policies`: the tier policies whose subject selects it, as ids assigned in
//    evaluation order (tier, priority, name, kind: np/tiers/model.h), so the sorted id list
//    IS the evaluation order. TargetClassKey gains that list: pods with the same NetworkPolicy
//    list, tier list and named ports share one table. A pod is a target (record.target !=
//    kNone) when either list is non-empty; node scoping and quarantine are unchanged (a
//    quarantined pod denies whatever any tier says, as DirectionVerdict::allowed()).
// 3. Tables. Per direction and protocol BuildTable collects ordered entries: (port range,
//    peer set, action) for each Admin-tier rule in order, the NetworkPolicy entries (a union,
//    as today) with the direction's `isolated` bit, then each Baseline-tier rule in order.
//    The sweep cuts 0..65535 at every entry boundary and, per piece, folds the order into one
//    allowed peer set with set algebra over peer classes:
//        undecided = ALL; allowed = {}
//        Admin rule r (covering the piece):  m = peers(r) & undecided; undecided -= m;
//            Allow: allowed |= m;  Deny: (nothing);  Pass: passed |= m
//        rest = undecided | passed
//        NetworkPolicy isolates: allowed |= rest & union(NP entries covering the piece)
//        else Baseline rules on `rest` the same way (Pass = default), then allowed |= what
//            is still undecided (the default: allow)
//    ALL is not a finite bitset (peer classes appear with later updates), so a set is a
//    bitset plus a `negated` flag, closed under |, & and - (Batch::PeerSet). The piece's
//    Interval stores the result as today (all_peers, a bitset or a sorted id list) plus a
//    `negated` bit, kept in the struct's padding: the listed classes are the denied ones. A
//    class no rule of the table names is in no list, so its verdict is `negated` — exactly
//    the verdict of a peer that matches no rule — and stays right when new classes appear. A class that does
//    match some selector is registered in that selector's bitset (RegisterNewPeerClasses),
//    which marks the tier policies holding the selector dirty, and their target classes'
//    tables are rebuilt, as for NetworkPolicy today.
//    Named ports: ingress resolves on the target's own map; egress splits a rule's entry
//    per destination named map (peers & named_map_classes[m]) at the rule's position, as
//    today. Tables that hold no tier policy are built exactly as before (never negated).
// 4. Lookup. IntervalAllows: all_peers -> true; peer >= kSharedPeer -> negated; else
//    listed XOR negated, on the hot side's 8-byte HotInterval copy (TargetTable: six
//    intervals share the header's line, one-class lists inline); AllowedBatch unchanged.
// 5. Memory. A table grows with the tier rules' port boundaries (pieces) times the encoded
//    set size; the negated form keeps "allow all but a few" small. Tier policies selecting
//    many pods add one id to their identities' lists, not one table per pod: target classes
//    multiply only by distinct (NP list, tier list, named map) combinations.
// 6. Incremental updates. Tier policy or Node change (Batch::RecompileTiers): the batch
//    edits a copy of `tier_objects`, validates it as Cluster::Create does (errors name the
//    object and field; only the changed objects' findings are reported) and, when the whole
//    batch is valid, recompiles the tier policy list from it: ids are evaluation order, so
//    one insert renumbers those after it, and `nodes` peers follow the Nodes' labels and
//    addresses. The new peers are interned before the old are released, so shared selectors
//    keep their ids and peer classes; selectors that came or went change the atoms as
//    ipBlocks do (pods holding an address of a `networks` CIDR that came or went are
//    recomputed whatever the ipBlock scope). Then every namespace is target-dirty (each
//    identity recomputes its tier list, its pods re-key when it changed) and every tier
//    id, old and new, is dirty (every table holding a tier policy is rebuilt: an id now
//    names another policy). Tables without tier policies, pod ids and NetworkPolicy state
//    are untouched. Coarser than possible (a table whose tier content did not change is
//    rebuilt too), exact: np/engine_test.cc TierUpdates checks it against the reference
//    and a fresh build on random mixed batches. Pod upsert: its identity's
//    tier_policies is computed with its NP list (namespace labels looked up). Namespace
//    label change: the namespace is label-dirty already, so its identities recompute both
//    lists and their pods re-class; new peer classes set selector bits, which dirty the NP
//    and tier policies holding those selectors. NetworkPolicy change: the target classes
//    holding it rebuild; their tier segments come along (a table is rebuilt whole).
// 7. Explain (slow path, allocates): per side, the target identity's tier list in order,
//    rule by rule, with the compiled ports and PeerClassHasSelector, reproducing the
//    reference's FirstMatch (TierRuleRef, Pass, not_evaluable in peer order, the
//    shared-address break), then the NetworkPolicy part as today.
// 8. Consumers that read Interval directly must read `negated` as IntervalAllows does:
//    np/analysis/connections.cc reads it, np/lower.cc lowers a negated interval as the
//    complement allow list. Anything new must do the same or refuse a snapshot with tier
//    policies (EngineState::RefuseTiers).
#ifndef NP_INTERNAL_ENGINE_STATE_H_
#define NP_INTERNAL_ENGINE_STATE_H_

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/internal/cow.h"
#include "np/internal/ip_index.h"
#include "np/types.h"

namespace np::internal {

// The verdict path's helpers below are `inline` in a header, but GCC at -O2 kept
// IntervalAllows and FindInterval out of line (perf record on the tiered benchmark: a call
// each, 27% of a by-pod lookup's samples in them): force them into the caller.
#define NP_ALWAYS_INLINE __attribute__((always_inline))

inline constexpr uint32_t kNone = 0xffffffffu;
// The peer class of an address two or more live pods hold (README, "Shared addresses"): it
// is in no selector's and no ipBlock's peer set, so only rules that admit every peer admit
// it. Like kNone, it is never a valid class id; unlike kNone, the pod does have an address
// of that family.
inline constexpr uint32_t kSharedPeer = 0xfffffffeu;
// The target class key of a quarantined pod (one holding a shared address): the empty
// policy list (id list 0), which no other target class has. Its table is isolated in both
// directions with no rule: every flow from or to the pod is denied.
inline constexpr uint32_t kQuarantinePolicies = 0;
using Labels = absl::flat_hash_map<std::string, std::string>;
using U128 = unsigned __int128;

// ---------------------------------------------------------------- compiled policy objects

// A LabelSelector, ready to match. An empty selector matches everything.
struct CompiledSelector {
  enum class Op : uint8_t { kIn, kNotIn, kExists, kDoesNotExist, kInvalid };
  struct Expression {
    std::string key;
    Op op = Op::kInvalid;
    std::vector<std::string> values;  // sorted
  };
  std::vector<std::pair<std::string, std::string>> match_labels;  // sorted
  std::vector<Expression> expressions;                            // sorted by key, op

  static CompiledSelector From(const k8s::LabelSelector& selector);
  bool Matches(const Labels& labels) const;
  bool empty() const { return match_labels.empty() && expressions.empty(); }
  std::string CanonicalKey() const;
};

// One element of a rule's from/to list. Interned engine-wide: equal peers in different
// policies share one id, so classes and bitsets are per distinct peer, not per rule.
// kNetwork and kNodeAddresses come from the policy tiers (see the top of this file): like
// kIpBlock they live in the address atoms; kNetwork matches pod addresses whatever the
// ipBlock scope, kNodeAddresses never matches a pod.
struct PeerSelector {
  enum class Kind : uint8_t { kPodsInNamespace, kNamespaces, kIpBlock, kNetwork, kNodeAddresses };
  Kind kind = Kind::kPodsInNamespace;
  std::string policy_namespace;                  // kPodsInNamespace
  CompiledSelector namespace_selector;           // kNamespaces
  std::optional<CompiledSelector> pod_selector;  // kPods*/kNamespaces; absent = every pod
  IpPrefix cidr;                                 // kIpBlock, kNetwork
  std::vector<IpPrefix> excepts;                 // kIpBlock
  std::vector<IpPrefix> addresses;               // kNodeAddresses: sorted, distinct, full length
  std::string key;                               // canonical text: the interning key
};

struct CompiledPort {
  enum class Kind : uint8_t { kAllPorts, kRange, kNamed };
  Protocol protocol = Protocol::kTCP;
  Kind kind = Kind::kAllPorts;
  uint16_t first = 0, last = 65535;
  std::string name;
  // A tier rule's named port: "selects a destination port on a pod based on the
  // ContainerPort name", in that container port's protocol (`protocol` is unused). A
  // NetworkPolicy's named port needs the container port's protocol to be the rule's.
  bool any_protocol = false;
};

struct CompiledRule {
  bool all_peers = false;           // no from/to: every peer, inside or outside the cluster
  std::vector<uint32_t> selectors;  // PeerSelector ids
  bool all_ports = false;           // no ports: every port of every protocol
  std::vector<CompiledPort> ports;
  bool has_named_ports = false;
};

struct CompiledPolicy {
  std::string namespace_name, name, key;
  CompiledSelector pod_selector;
  bool affects[2] = {false, false};  // indexed by Direction
  std::vector<CompiledRule> rules[2];
  bool has_egress_named_ports = false;
  std::shared_ptr<const Sourced<k8s::NetworkPolicy>> object;
};

// A policy-tier rule (np/tiers/model.h) with its peers interned. Tier policies are fixed
// for the life of a snapshot chain (Change carries none of their kinds).
struct CompiledTierPeer {
  tiers::Peer::Kind kind = tiers::Peer::Kind::kNamespaces;
  std::vector<uint32_t> selectors;  // PeerSelector ids (OR); none for domainNames or no Node
};
struct CompiledTierRule {
  std::string name;
  tiers::Action action = tiers::Action::kDeny;
  std::vector<CompiledTierPeer> peers;  // written order (explain walks them in order)
  bool all_ports = false;
  std::vector<CompiledPort> ports;
};
struct CompiledTierPolicy {
  tiers::Tier tier = tiers::Tier::kAdmin;
  int32_t priority = 0;
  std::string key;  // "ClusterNetworkPolicy name" (TierPolicy::Key)
  CompiledSelector namespace_selector;
  std::optional<CompiledSelector> pod_selector;
  std::vector<CompiledTierRule> rules[2];  // by Direction
  bool has_egress_named_ports = false;
};

// ---------------------------------------------------------------------------- objects

struct NamespaceState {
  std::string name;
  Labels labels;  // includes kubernetes.io/metadata.name
  std::shared_ptr<const Sourced<k8s::Namespace>> object;  // null: implied
};

struct PodState {
  std::string key, namespace_name, name;
  Labels labels;
  std::vector<IpAddress> ips;
  std::optional<IpAddress> ipv4, ipv6;
  uint32_t named_map = 0;  // interned NamedPortMap id
  std::string node_name;
  std::shared_ptr<const Sourced<k8s::Pod>> object;
};

// Per pod, for the hot path: the target class and one peer class per flow family.
struct PodRecord {
  uint32_t target = kNone;                  // kNone: no policy selects it (or off-node)
  // [0] IPv4, [1] IPv6, [2] no family; kNone = lacks it; kSharedPeer = a shared address.
  uint32_t peer[3] = {kNone, kNone, kNone};
};

// A target class's two sides as verdicts read them: TargetTable::side(d), indexed by
// Direction; null: that side allows everything (not isolated, or no policy selects the pod).
struct HotSides {
  const uint64_t* side[2] = {nullptr, nullptr};
};

// A pod as a verdict reads it: PodRecord with the target class's sides resolved, so that the
// side a verdict reads — its header and first intervals on one cache line — is one load
// away from the pod id. 32 bytes, aligned: a record never straddles two lines.
struct alignas(32) HotRecord {
  const uint64_t* side[2] = {nullptr, nullptr};  // as HotSides
  uint32_t peer[3] = {kNone, kNone, kNone};     // as PodRecord::peer
  // The first word of the pod's block in EngineState::bits (VerdictBits); kNone: its
  // verdicts take the exact path (no bits, its class is not in them, or its table changed).
  uint32_t bits_row = kNone;
};
static_assert(sizeof(HotRecord) == 32, "two records per line, none straddling");

// A pod's place in its target class's list of pods (doubly linked through the pods' slots),
// so that a rebuilt table is pointed at from the hot records of exactly that class's pods,
// without a pass over every pod.
struct ClassLink {
  uint32_t previous = kNone, next = kNone;  // pod ids; kNone: the list ends
};

struct PodSlot {
  std::shared_ptr<const PodState> state;  // null: deleted
  uint32_t identity = kNone;
};

// Pods that share namespace, labels and named ports are interchangeable as targets and
// (but for their addresses) as peers.
struct IdentityKey {
  std::string namespace_name;
  Labels labels;
  uint32_t named_map = 0;
};
struct IdentitySlot {
  std::shared_ptr<const IdentityKey> key;
  uint32_t target_policies = kNone;  // IdList id: policies selecting it (sorted policy ids)
  uint32_t tier_policies = kNone;    // IdList id: tier policies selecting it (evaluation order)
  uint32_t label_part = kNone;       // IdList id: non-ipBlock selectors matching it
  uint32_t pods = 0;                 // live pods with this identity
};

struct PeerClassKey {
  uint32_t label_part = 0, ipblock_part = 0, named_map = 0;
  friend bool operator==(const PeerClassKey& a, const PeerClassKey& b) {
    return a.label_part == b.label_part && a.ipblock_part == b.ipblock_part &&
           a.named_map == b.named_map;
  }
  template <typename H>
  friend H AbslHashValue(H h, const PeerClassKey& k) {
    return H::combine(std::move(h), k.label_part, k.ipblock_part, k.named_map);
  }
};

// ------------------------------------------------------------------------ lookup tables

// The peers an interval allows: all of them, none, a bitset over peer classes, or — when
// few classes are allowed out of many, the usual case in large clusters — a sorted list of
// class ids packed two to a word (memory grows with what is allowed, not with the cluster).
// With the policy tiers an interval may also list the peers it denies (`negated`): every
// other peer, including classes that appear later and peers of no class, is allowed.
struct Interval {
  uint16_t first = 0;        // the interval runs to the next one's first - 1 (or 65535)
  uint8_t all_peers = 0;     // every peer allowed
  uint8_t sparse : 1;        // `bits` holds a sorted uint32 list of `count` class ids
  uint8_t negated : 1;       // the listed classes are the denied ones (tier tables only)
  uint32_t bits = 0;         // offset into TargetTable::words
  uint32_t count = 0;        // bitset: words; sparse: ids. 0: no peer (unless all_peers)
  Interval() : sparse(0), negated(0) {}  // (no default member initializers on bit-fields in C++17)
};
static_assert(sizeof(Interval) == 12, "the tiers' flag fits in the padding");

struct DirectionTable {
  bool isolated = false;
  uint32_t begin[3] = {0, 0, 0};  // intervals of each protocol: [begin, end)
  uint32_t end[3] = {0, 0, 0};
};

// A table while it is being built (BuildTable/Sweep).
struct TableDraft {
  DirectionTable direction[2];
  std::vector<Interval> intervals;
  std::vector<uint64_t> words;
};

// One direction of a table: a 16-byte header, then the direction's intervals (TCP, then UDP,
// then SCTP). Used twice per side with two interval encodings: the hot side verdicts read
// (HotInterval) and the cold side the slow readers read (Interval, through TableView).
struct SideHeader {
  uint32_t end[3];  // the intervals of protocol index pi are [pi ? end[pi - 1] : 0, end[pi])
  uint32_t words;   // cold side: where the table's peer words start, in words from the side's start
};
static_assert(sizeof(SideHeader) == 2 * sizeof(uint64_t));

// An interval as verdicts read it: the hot side's 8-byte copy of an Interval. Why 8 bytes and
// not the Interval's 12 (issue 10, measured on the tiered benchmark's allowed flows): with 12,
// a side's line held the header and 4 intervals, so the usual egress side (3 TCP + 3 UDP
// intervals) read its UDP interval from a second line, and the tiers' 5-7 interval ingress
// sides scanned two lines; with 8, six intervals share the header's line. And a list of one
// class — most lists of the standard workload — is stored in the interval itself (kSingle),
// so such a verdict reads no peer word at all: record -> side line, nothing after.
struct HotInterval {
  enum : uint8_t {
    kAllPeers = 1,  // every peer allowed
    kSparse = 2,    // the words are a sorted uint32 id list (else a bitset)
    kNegated = 4,   // the listed classes are the denied ones
    kSingle = 8,    // `bits` IS the one listed class id (sparse list of one)
    kIndirect = 16, // count >= 255: `bits` is a word {uint32 offset, uint32 count}
  };
  uint16_t first = 0;  // as Interval::first
  uint8_t flags = 0;
  uint8_t count = 0;   // ids (sparse) or words (bitset), as Interval::count; 255: kIndirect
  uint32_t bits = 0;   // the list's words, in words from the side's start (kSingle: the id)
};
static_assert(sizeof(HotInterval) == 8, "a side's header and six intervals fill one line");

// Whether a list of peer classes holds `peer` (whatever the list means): a sorted id list of
// `count` ids (sparse) or a bitset of `count` words at `w`.
NP_ALWAYS_INLINE inline bool ListHolds(const uint64_t* w, bool sparse, uint32_t count, uint32_t peer) {
  if (sparse) {
    // The last id <= peer, by halving with a conditional move rather than a branch: the
    // outcome differs from flow to flow, so a branch here is mispredicted half the time.
    const uint32_t* ids = reinterpret_cast<const uint32_t*>(w);
    uint32_t len = count;
    if (len == 0) return false;
    while (len > 1) {
      uint32_t half = len / 2;
      ids = ids[half] <= peer ? ids + half : ids;
      len -= half;
    }
    return *ids == peer;
  }
  uint32_t word = peer >> 6;
  if (word >= count) return false;
  return (w[word] >> (peer & 63)) & 1;
}

// A packed table's buffer, read in place, 64-byte aligned: one directory line; each isolated
// direction's hot side (SideHeader, HotIntervals, then a copy of the lists they read and their
// kIndirect words; 64-byte aligned: the lines a verdict reads, see TargetTable); the peer
// words both directions' cold intervals point into; then each isolated direction's cold side
// (SideHeader and Interval, `bits` relative to the peer words), which only the slow readers
// touch.
// TableView is the slow readers' view (explain, lowering, listings); verdicts read a hot side
// directly (EngineState::FindInterval and friends).
class TableView {
 public:
  static constexpr size_t kDirectoryWords = 8;
  // Directory, as uint32: [0] ingress hot side offset, [1] egress hot side offset (in words
  // from the buffer's start; 0: that direction is not isolated), [2] words offset, [3] word
  // count, [4] ingress cold side offset, [5] egress cold side offset.

  explicit TableView(const uint64_t* buffer) : p_(buffer) {}
  // The direction's isolation and, per protocol index, its intervals' [begin, end) in
  // intervals(d).
  DirectionTable direction(int d) const {
    DirectionTable t;
    const uint64_t* side = cold_side(d);
    if (side == nullptr) return t;
    const SideHeader& h = *reinterpret_cast<const SideHeader*>(side);
    t.isolated = true;
    for (int pi = 0; pi < 3; ++pi) {
      t.begin[pi] = pi == 0 ? 0 : h.end[pi - 1];
      t.end[pi] = h.end[pi];
    }
    return t;
  }
  const Interval* intervals(int d) const {
    const uint64_t* side = cold_side(d);
    return side == nullptr ? nullptr : reinterpret_cast<const Interval*>(side + 2);
  }
  // The direction's hot side as verdicts read it; null when the direction is not isolated.
  const uint64_t* side(int d) const {
    uint32_t offset = directory()[d];
    return offset == 0 ? nullptr : p_ + offset;
  }
  const uint64_t* words() const { return p_ + directory()[2]; }

  bool Allows(const Interval& iv, uint32_t peer) const { return AllowsIn(words(), iv, peer); }
  bool Listed(const Interval& iv, uint32_t peer) const { return ListedIn(words(), iv, peer); }
  static bool AllowsIn(const uint64_t* words, const Interval& iv, uint32_t peer) {
    if (iv.all_peers) return true;
    return ListedIn(words, iv, peer) != static_cast<bool>(iv.negated);
  }
  // Whether the interval's words (in the table's `words`) hold `peer` (whatever they mean).
  static bool ListedIn(const uint64_t* words, const Interval& iv, uint32_t peer) {
    return ListHolds(words + iv.bits, iv.sparse, iv.count, peer);
  }
  // Calls f(class id) for every class the interval lists (not for all_peers): the allowed
  // ones, or with `negated` the denied ones.
  template <typename F>
  void ForEachPeer(const Interval& iv, F&& f) const {
    const uint64_t* w = words() + iv.bits;
    if (iv.sparse) {
      const uint32_t* ids = reinterpret_cast<const uint32_t*>(w);
      for (uint32_t i = 0; i < iv.count; ++i) f(ids[i]);
      return;
    }
    for (uint32_t k = 0; k < iv.count; ++k) {
      for (uint64_t word = w[k]; word != 0; word &= word - 1) {
        f(k * 64 + static_cast<uint32_t>(__builtin_ctzll(word)));
      }
    }
  }

 private:
  const uint32_t* directory() const { return reinterpret_cast<const uint32_t*>(p_); }
  const uint64_t* cold_side(int d) const {
    uint32_t offset = directory()[4 + d];
    return offset == 0 ? nullptr : p_ + offset;
  }
  const uint64_t* p_;
};

// A target class's table: owns the packed, 64-byte aligned buffer a TableView reads.
//
// Each isolated direction's hot side is [SideHeader, HotIntervals, the peer lists those
// intervals read, their kIndirect words], 64-byte aligned and rounded to whole lines: a
// private copy of the direction's lists, not offsets into the table's shared words. Why
// (issue 10, perf on the tiered benchmark): with the lists in the shared words, a verdict's
// last load (the list) was a miss that could only start once the interval's line had
// arrived; now the list usually sits in the side's first or second line, and the verdict
// asks for both lines at once (EngineState::PrefetchSide), so the side and its list arrive
// together. The shared words stay for the cold sides (TableView); the copies cost each side
// its lists' size again.
class TargetTable {
 public:
  explicit TargetTable(const TableDraft& draft) {
    constexpr size_t kLine = 8;  // words per cache line
    auto round_up = [](size_t words) { return (words + kLine - 1) / kLine * kLine; };
    // Words of the list an interval's hot copy reads from the side (0: none, kSingle or
    // all_peers keep it in the interval).
    auto list_words = [](const Interval& iv) -> size_t {
      if (iv.all_peers || (iv.sparse && iv.count == 1)) return 0;
      return iv.sparse ? (size_t{iv.count} + 1) / 2 : iv.count;
    };
    // (AppendPiece gives every interval its own words: no two intervals share a list.)
    uint32_t count[2] = {0, 0};
    size_t hot_words[2] = {0, 0};  // per direction: the lists and the indirect words
    for (int d = 0; d < 2; ++d) {
      const DirectionTable& dt = draft.direction[d];
      if (!dt.isolated) continue;
      for (int pi = 0; pi < 3; ++pi) {
        for (uint32_t i = dt.begin[pi]; i < dt.end[pi]; ++i) {
          const Interval& iv = draft.intervals[i];
          ++count[d];
          hot_words[d] += list_words(iv) + (!iv.all_peers && iv.count >= 255);
        }
      }
    }
    uint32_t hot_offset[2] = {0, 0}, cold_offset[2] = {0, 0};
    size_t size = TableView::kDirectoryWords;
    for (int d = 0; d < 2; ++d) {
      if (!draft.direction[d].isolated) continue;
      hot_offset[d] = static_cast<uint32_t>(size);
      size += round_up(2 + count[d] * sizeof(HotInterval) / sizeof(uint64_t) + hot_words[d]);
    }
    const size_t words_offset = size;
    size += draft.words.size();
    for (int d = 0; d < 2; ++d) {
      if (!draft.direction[d].isolated) continue;
      cold_offset[d] = static_cast<uint32_t>(size);
      size += 2 + (count[d] * sizeof(Interval) + 7) / 8;
    }
    words_ = round_up(size);
    buffer_.reset(static_cast<uint64_t*>(std::aligned_alloc(64, words_ * sizeof(uint64_t))));
    if (buffer_ == nullptr) throw std::bad_alloc();
    std::memset(buffer_.get(), 0, words_ * sizeof(uint64_t));
    // memcpy from an empty vector's data() (null) is undefined even for 0 bytes (UBSan).
    if (!draft.words.empty()) {
      std::memcpy(buffer_.get() + words_offset, draft.words.data(),
                  draft.words.size() * sizeof(uint64_t));
    }
    auto* directory = reinterpret_cast<uint32_t*>(buffer_.get());
    directory[0] = hot_offset[0];
    directory[1] = hot_offset[1];
    directory[2] = static_cast<uint32_t>(words_offset);
    directory[3] = static_cast<uint32_t>(draft.words.size());
    directory[4] = cold_offset[0];
    directory[5] = cold_offset[1];
    for (int d = 0; d < 2; ++d) {
      if (hot_offset[d] == 0) continue;
      const DirectionTable& dt = draft.direction[d];
      uint64_t* hot = buffer_.get() + hot_offset[d];
      uint64_t* cold = buffer_.get() + cold_offset[d];
      SideHeader header{};
      auto* hot_out = reinterpret_cast<HotInterval*>(hot + 2);
      auto* cold_out = reinterpret_cast<Interval*>(cold + 2);
      // The lists, then the indirect words, follow the intervals (offsets from `hot`).
      uint32_t next = 2 + count[d] * sizeof(HotInterval) / sizeof(uint64_t);
      uint32_t n = 0;
      for (int pi = 0; pi < 3; ++pi) {
        for (uint32_t i = dt.begin[pi]; i < dt.end[pi]; ++i) {
          const Interval& iv = draft.intervals[i];
          cold_out[n] = iv;
          HotInterval& h = hot_out[n++];
          h.first = iv.first;
          h.flags = (iv.all_peers ? HotInterval::kAllPeers : 0) |
                    (iv.sparse ? HotInterval::kSparse : 0) |
                    (iv.negated ? HotInterval::kNegated : 0);
          if (iv.all_peers) continue;
          if (iv.sparse && iv.count == 1) {
            h.flags |= HotInterval::kSingle;
            h.count = 1;
            std::memcpy(&h.bits, buffer_.get() + words_offset + iv.bits, sizeof(uint32_t));
            continue;
          }
          const size_t words = list_words(iv);
          const uint32_t at = next;
          if (words > 0) {
            std::memcpy(hot + next, draft.words.data() + iv.bits, words * sizeof(uint64_t));
            next += static_cast<uint32_t>(words);
          }
          if (iv.count < 255) {
            h.count = static_cast<uint8_t>(iv.count);
            h.bits = at;
          } else {
            h.flags |= HotInterval::kIndirect;
            h.count = 255;
            hot[next] = (uint64_t{iv.count} << 32) | at;
            h.bits = next++;
          }
        }
        header.end[pi] = n;
      }
      header.words = 0;
      std::memcpy(hot, &header, sizeof(header));
      header.words = static_cast<uint32_t>(words_offset - cold_offset[d]);
      std::memcpy(cold, &header, sizeof(header));
    }
  }
  TargetTable(const TargetTable&) = delete;
  TargetTable& operator=(const TargetTable&) = delete;
  TableView view() const { return TableView(buffer_.get()); }
  // Direction d's hot side as verdicts read it (null: not isolated).
  const uint64_t* side(int d) const { return view().side(d); }
  HotSides sides() const { return HotSides{{side(0), side(1)}}; }
  size_t Bytes() const { return sizeof(*this) + words_ * sizeof(uint64_t); }

 private:
  struct Free {
    void operator()(uint64_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint64_t[], Free> buffer_;
  size_t words_ = 0;
};

// `tier_policies` is kNone only for the quarantine class (a tier-only target has policies
// == 0, the empty NetworkPolicy list, too).
struct TargetClassKey {
  uint32_t policies = 0, named_map = 0, tier_policies = 0;
  bool quarantine() const { return policies == kQuarantinePolicies && tier_policies == kNone; }
  friend bool operator==(const TargetClassKey& a, const TargetClassKey& b) {
    return a.policies == b.policies && a.named_map == b.named_map &&
           a.tier_policies == b.tier_policies;
  }
  template <typename H>
  friend H AbslHashValue(H h, const TargetClassKey& k) {
    return H::combine(std::move(h), k.policies, k.named_map, k.tier_policies);
  }
};
struct TargetClassSlot {
  TargetClassKey key;
  std::shared_ptr<const TargetTable> table;  // null: stale, rebuilt when a pod uses it
  uint32_t pods = 0;
  uint32_t first_pod = kNone;  // head of the class's pod list (EngineState::class_links)
};

// Addresses outside the cluster: each family's address space cut at every ipBlock
// boundary into atoms; an atom's peer class follows from the ipBlocks that contain it.
struct AtomTable {
  std::vector<U128> starts;          // sorted; starts[0] == 0
  std::vector<uint32_t> ipblock_part;  // IdList id per atom
  std::vector<uint32_t> peer_class;    // per atom
  size_t Find(U128 address) const;     // index of the atom holding address
};

using Bitset = std::vector<uint64_t>;

// ------------------------------------------------------------------- the verdict bits
//
// Every side's whole answer, precomputed as bits (issue 10): for each target class of the
// bits and direction, for each port class, one row of bits over peer classes. A pod-to-pod
// verdict is then two records (read independently) and one bit read per side: a chain of
// two loads, like the floor's one, instead of record -> side line -> interval -> list. By
// packet the same, with the address index's entries for the records (PacketEntry::bits_row).
//
// Port classes: per protocol, 0..65535 cut at every interval boundary of every table the
// bits hold, so that each port class lies inside one interval of every side (a few dozen).
// Peer classes: the engine's (PodRecord::peer), the columns 0..peer_classes-1.
// Layout: block b (one target class) = [ingress rows, egress rows], each K rows of
// `row_words` words: word (b * 2 + d) * K + pc) * row_words + peer / 64. The record carries
// its block's first word (HotRecord::bits_row), so a side's address is record + port class
// + peer: no dependent load but the record itself.
//
// The rows are painted from the tables' folded intervals (BuildTable already resolved tier
// order, Pass and NetworkPolicy union into one peer set per interval, Interval::negated
// included): row = the interval's list (a bitset copy, or its sparse ids), inverted when
// negated, all ones for all_peers or a direction that is not isolated. So a bit is exactly
// what SideAllows gives on the same table and peer, at a cost of words, not side tests.
//
// Exactness across updates (LiveEngine): the bits are built by Engine::Build and shared,
// unchanged, by every snapshot Apply derives from it. A bit depends only on the table it
// was painted from and the peer id, so a record takes the bits while its target class's
// table is still the one painted (`tables`, held so that a freed table's address cannot be
// reused under it) and the flow's peer classes are < peer_classes; else bits_row is kNone
// (or the peer is new) and the verdict takes the exact path. An update pays one compare per
// record it refreshes; flows of rebuilt classes go exact until the next Engine::Build.
//
// Budget: blocks are given to target classes by descending pod count while the words fit
// EngineOptions::verdict_bits_bytes; the rest take the exact path. More than 256 port classes:
// no bits at all.
//
// The pair matrix (issue 10, h79): the whole verdict of a pod-to-pod IPv4 flow in one bit.
// The per-side bits above still cost a flow two random reads in tens of MB (the source's
// egress row and the destination's ingress row) where the floor reads one. A pod's *pair
// class* is its (target class, IPv4 peer class): two pods of one pair class are the same
// source and the same destination to every verdict. The matrix holds, per port class, one
// bit per (source pair class, destination pair class) = egress(source's table, port class,
// destination's peer) AND ingress(destination's table, port class, source's peer) — the two
// per-side bits, already ANDed. A verdict is then the two pods' pair ids (a uint16 per pod,
// EngineState::pair_of: 20 KB at 10k pods, in L1) and one bit read. Size: port classes x
// pair classes^2 bits (10k pods, tiered benchmark: 13 x 2003^2 = 6.5 MB, less than the
// per-side bits' 25 MB); it takes what the per-side bits leave of verdict_bits_bytes and is
// left out (classes = 0) when it does not fit (100k pods: 20k pair classes, 550 MB), when a
// pair class's target is not in the per-side bits it is painted from, or when painting would
// flip more than kMaxFlips bits (see PaintPairMatrix). Exactness across updates: as the
// per-side bits', a bit depends only on the two tables it was painted from and the two peer
// ids, so a pod keeps its pair id while its (target, peer) pair is one of the matrix's and
// its table is the painted one (EngineState::PairClass); else kNoPair and the per-side bits or
// the exact path answer.
// Through pod events (h83): a pod added, deleted, relabelled or moved to another address
// within the pair classes the matrix has keeps answering from it by pod and by packet: its
// pair_of entry and its direct table entries (EngineState::pair_at) are edited in place, O(1)
// per pod (EngineState::RefreshPairClass). What still falls back (per-side bits, else the
// exact path), until the next Engine::Build: a pod whose (target class, IPv4 peer class)
// pair the matrix does not have (a new label set that makes a new peer or target class, or
// an existing target with a peer class it never had at Build: the matrix is shared by every
// snapshot, and a new row and column would have to be painted for one of them only); the
// pods of a target class whose table was rebuilt (a policy change, a new peer class joining
// a selector, the class emptied then refilled); a pod with a shared address; IPv6; and by
// packet, an address outside the direct table's range fixed at Build (the pod answers from
// the matrix through the address index).
struct PairMatrix {
  static constexpr uint16_t kNoPair = 0xffff;
  // Pair ids stay below 2^15, so that a batch tells a flow with kNoPair at either end by
  // bit 15 of the two ids ORed (AllowedBatch), not by two compares. (A matrix of 2^15 pair
  // classes would be 128 MB a port class: far past any verdict_bits_bytes.)
  static constexpr uint32_t kMaxClasses = 0x8000;
  static_assert((kNoPair & kMaxClasses) != 0, "kNoPair must carry the bit no pair id has");
  uint32_t classes = 0;    // pair classes (0: no matrix)
  uint32_t row_words = 0;  // words per row: classes rounded up to 64
  size_t plane_words = 0;  // one port class: classes * row_words
  // (target class, peer class) -> pair id; target kNone: pods no policy selects.
  absl::flat_hash_map<uint64_t, uint16_t> class_of;
  std::unique_ptr<uint64_t[], void (*)(void*)> words{nullptr, std::free};
  size_t word_count = 0;
  // By packet: the pods' IPv4 addresses, direct-mapped (the pod CIDR is dense), so that a
  // packet's pair ids are two array reads instead of two hash probes of the address index
  // and a pair_of read after each (the probes were most of a by-packet verdict). The table
  // itself is per snapshot (EngineState::pair_at, kept current by every pod event); its
  // range is fixed here at Build: [v4_base, v4_base + direct_size), left empty (0) when the
  // addresses span more than kMaxDirect(pods) entries.
  uint32_t v4_base = 0;
  uint32_t direct_size = 0;
  static size_t kMaxDirect(size_t pods) { return 65536 + 16 * pods; }

  static uint64_t Key(uint32_t target, uint32_t peer) { return uint64_t{target} << 32 | peer; }
  // The word holding the bit of (source pair `a`, destination pair `b`) on `port_class`.
  NP_ALWAYS_INLINE const uint64_t* Word(uint32_t port_class, uint32_t a, uint32_t b) const {
    return &words[port_class * plane_words + size_t{a} * row_words + (b >> 6)];
  }
  size_t Bytes() const {
    return word_count * sizeof(uint64_t) + class_of.capacity() * (sizeof(uint64_t) + 8);
  }
};

struct VerdictBits {
  static constexpr uint32_t kMaxPortClasses = 256;
  uint32_t peer_classes = 0;  // columns; a larger peer id takes the exact path
  uint32_t row_words = 0;     // words per row: peer_classes rounded up to 64
  uint32_t port_classes = 0;  // K, over the three protocols
  uint32_t all_row = 0;       // the block of pods no policy selects: every bit set
  // [ProtocolIndex * 65536 + port]: the port class.
  std::vector<uint8_t> port_class;
  // Per target class: its block's first word (kNone: not in the bits), and the table its
  // rows were painted from.
  std::vector<uint32_t> row_of;
  std::vector<std::shared_ptr<const TargetTable>> tables;
  std::unique_ptr<uint64_t[], void (*)(void*)> words{nullptr, std::free};
  size_t word_count = 0;

  uint32_t PortClassOffset(Protocol protocol, uint16_t port) const {
    return port_class[ProtocolIndex(protocol) * 65536 + port] * row_words;
  }
  // Whether direction d of the block at `row` admits `peer` (< peer_classes) on the port
  // class at `port_offset` (PortClassOffset).
  NP_ALWAYS_INLINE bool Test(uint32_t row, int d, uint32_t port_offset, uint32_t peer) const {
    return (*Word(row, d, port_offset, peer) >> (peer & 63)) & 1;
  }
  // The word holding that bit (AllowedBatch asks for its line ahead).
  NP_ALWAYS_INLINE const uint64_t* Word(uint32_t row, int d, uint32_t port_offset,
                                        uint32_t peer) const {
    return &words[size_t{row} + d * port_classes * row_words + port_offset + (peer >> 6)];
  }
  // The pair matrix (above), painted from these rows.
  PairMatrix pairs;

  uint32_t PortClass(Protocol protocol, uint16_t port) const {
    return port_class[ProtocolIndex(protocol) * 65536 + port];
  }
  size_t Bytes() const {
    return sizeof(*this) + word_count * sizeof(uint64_t) + port_class.capacity() +
           row_of.capacity() * sizeof(uint32_t) + tables.capacity() * sizeof(tables[0]) +
           pairs.Bytes();
  }
};

// ------------------------------------------------------------------------- the state

struct EngineState {
  EngineOptions options;
  uint64_t generation = 0;

  // Objects.
  CowMap<std::string, std::shared_ptr<const NamespaceState>, StringHash> namespaces;
  // identities and target_classes, whose items hold shared_ptrs, have small chunks: a pod
  // event writes one item of each (an identity's and a class's pod counts), and cloning a
  // chunk takes a reference per item on cold lines — 256 of them cost more than the rest of
  // a pod add at 1,000 pods (bench/RESULTS.md, issue 13). The spines they lengthen are copied
  // only by batches that write them (np/internal/cow.h). Not `pods`: one slot per pod, its
  // spine at 100k pods would cost more to clone than the chunk saves (measured: +8 %).
  static constexpr int kSharedChunkBits = 5;
  CowVector<PodSlot> pods;
  CowVector<PodRecord> records;  // parallel to pods
  CowVector<ClassLink> class_links;  // parallel to pods: the pod's neighbours in its target class
  // One entry per pod: small shards, so that a pod update clones a few dozen keys, not
  // thousands (a shard copy rehashes its keys).
  static constexpr int kPodMapShardBits = 12;
  CowMap<std::string, uint32_t, StringHash, std::equal_to<>, kPodMapShardBits> pod_by_key;
  // Address -> owning pod. Copied (a memcpy) by a batch that changes addresses. A shared
  // address is owned by its first holder (this node's pods first, then by key).
  std::shared_ptr<const IpIndex> pod_by_ip;
  // Addresses held by two or more live pods -> every holder, in ownership order. Each
  // holder is quarantined (README, "Shared addresses").
  CowMap<IpAddress, std::vector<uint32_t>> shared_ips;
  // Pods the cluster holds that take no part in networking (finished, hostNetwork).
  CowMap<std::string, std::shared_ptr<const Sourced<k8s::Pod>>, StringHash> left_out_pods;
  CowVector<std::shared_ptr<const CompiledPolicy>> policies;  // by policy id; null = deleted
  CowMap<std::string, uint32_t, StringHash> policy_by_key;
  CowMap<std::string, std::vector<uint32_t>, StringHash> policies_by_namespace;
  // The policy tiers, by tier policy id = evaluation order (Cluster::tier_policy), and the
  // objects they came from (tier policies and Nodes, for ToCluster). Fixed for the life of
  // a snapshot chain. `has_tier_address_selectors`: some kNetwork/kNodeAddresses selector
  // exists, so a pod's ipBlock part must be filtered (RecomputePod).
  std::shared_ptr<const std::vector<CompiledTierPolicy>> tier_policies;
  std::shared_ptr<const ClusterObjects> tier_objects;
  bool has_tier_address_selectors = false;

  // Peer selectors.
  CowVector<std::shared_ptr<const PeerSelector>> selectors;  // null = dead
  CowVector<uint32_t> selector_refs;
  CowVector<std::shared_ptr<const Bitset>> selector_bits;  // peer classes holding it
  // Per selector id: the live policies with a rule naming it (ascending, each once); and the
  // live policies with egress named ports (ascending; null = none yet). A batch whose new
  // peer classes widen selectors (or named-port maps) rebuilds the tables of exactly these
  // policies: finding them by reading every policy's rules was a third of a policy event's
  // Apply at 10k pods (the policies scattered in memory; perf, bench/RESULTS.md h94).
  CowVector<std::shared_ptr<const std::vector<uint32_t>>> selector_policies;
  std::shared_ptr<const std::vector<uint32_t>> egress_named_policies;
  CowMap<std::string, uint32_t, StringHash> selector_by_key;
  CowMap<std::string, std::vector<uint32_t>, StringHash> pod_selectors_by_namespace;
  std::shared_ptr<const std::vector<uint32_t>> namespace_selectors;  // live kNamespaces ids
  std::shared_ptr<const std::vector<uint32_t>> ipblock_selectors;    // live kIpBlock ids
  // Namespace name -> the live kNamespaces selectors whose namespaceSelector matches it.
  CowMap<std::string, std::vector<uint32_t>, StringHash> namespace_matches;

  // Interned sorted id lists (signatures) and named-port maps.
  CowVector<std::shared_ptr<const std::vector<uint32_t>>> id_lists;
  CowMap<std::vector<uint32_t>, uint32_t> id_list_by_value;
  CowVector<std::shared_ptr<const std::vector<NamedPort>>> named_maps;  // 0 = empty
  CowMap<std::string, uint32_t, StringHash> named_map_by_key;
  CowVector<std::shared_ptr<const Bitset>> named_map_classes;  // peer classes per named map

  CowVector<IdentitySlot, kSharedChunkBits> identities;
  CowMap<std::string, uint32_t, StringHash, std::equal_to<>, kPodMapShardBits - 2>
      identity_by_key;  // up to one identity per pod

  CowVector<PeerClassKey> peer_classes;
  CowMap<PeerClassKey, uint32_t> peer_class_by_key;
  CowVector<TargetClassSlot, kSharedChunkBits> target_classes;
  CowMap<TargetClassKey, uint32_t> target_class_by_key;

  std::shared_ptr<const AtomTable> atoms[2];  // [0] IPv4, [1] IPv6

  size_t live_pods = 0;
  size_t live_policies = 0;

  // `records` with each pod's table resolved, and the target classes' table pointers, in
  // the form verdicts read. Chunked copy-on-write like the rest of the state, so that a
  // snapshot copies only the small chunk-pointer arrays and the chunks a batch wrote (a
  // pod update costs the same at 100k pods as at 1k); larger chunks than the other
  // vectors', so that the pointer arrays stay a few KB (in L1) even at 100k pods and a
  // verdict pays one load from them over a flat array.
  static constexpr int kHotChunkBits = 9;
  CowVector<HotRecord, kHotChunkBits> hot_records;              // parallel to pods
  CowVector<HotSides, kHotChunkBits + 1> hot_tables;            // TargetTable::sides()
  // Painted by Engine::Build (PaintVerdictBits), shared unchanged by the snapshots derived
  // from it; null: none (budget 0, or too many port classes).
  std::shared_ptr<const VerdictBits> bits;
  // HotRecord::bits_row of a pod whose target class is `target` (kNone: none).
  uint32_t BitsRow(uint32_t target) const {
    if (bits == nullptr) return kNone;
    if (target == kNone) return bits->all_row;
    if (target >= bits->row_of.size() || bits->row_of[target] == kNone) return kNone;
    return bits->tables[target] == target_classes[target].table ? bits->row_of[target] : kNone;
  }
  // Per pod (parallel to pods when bits->pairs has classes, else empty): its pair id in the
  // pair matrix, PairMatrix::kNoPair when the matrix does not answer for it (PairClass).
  // 2 bytes a pod, so that at 10k pods the array (20 KB) stays in L1 beside a batch's other
  // reads, where a verdict reads it twice (8-byte slots, 80 KB, were L2 reads that took a
  // fill buffer each: the batch's limit, h83).
  static constexpr int kPairChunkBits = 11;
  CowVector<uint16_t, kPairChunkBits> pair_of;
  // Per pod, the IPv4 address its pair id answers for by packet (its own, unshared: a shared
  // address's peer is kSharedPeer, hence no pair; 0 without a pair). Only updates read it: the
  // direct table entry to clear when the pod leaves the matrix or its address.
  CowVector<uint32_t, kHotChunkBits + 1> pair_ipv4;
  // By packet, the direct table of the matrix's IPv4 range (PairMatrix::v4_base,
  // direct_size; empty without a matrix or when the range is too wide): per address, the pair
  // id of the pod that alone holds it, kNoPair when none does or the matrix does not answer for
  // it (the address index does). `pair_owner`, the pod (kNone: none), for updates only. Kept
  // exact through every pod event by RefreshPairClass, which moves the pod's entry with its
  // pair_of slot: an address released is cleared (if it still names the pod), an address
  // taken is written. So an entry that is not kNoPair is the answer, with no check against
  // pair_of; and since a pod's entry is its one `ipv4`, two entries are two pods (a packet
  // from a pod to itself is one entry: the same offset).
  CowVector<uint16_t, kPairChunkBits> pair_at;
  CowVector<uint32_t, kHotChunkBits + 1> pair_owner;
  // The direct table's offset and pair id of a packet's IPv4 address when the pair matrix
  // answers for it by the direct table: true and *offset, *pair set; else false (the address
  // index answers).
  NP_ALWAYS_INLINE bool PairOfAddress(const PairMatrix& m, const IpAddress& a, uint32_t* offset,
                                      uint32_t* pair) const {
    if (!a.is_v4()) return false;
    const uint32_t k = a.v4() - m.v4_base;
    if (k >= pair_at.size()) return false;
    const uint16_t entry = pair_at[k];
    if (entry == PairMatrix::kNoPair) return false;
    *offset = k;
    *pair = entry;
    return true;
  }
  // The pair id a pod with record `r` has: its (target, IPv4 peer) pair's, while that pair
  // is in the matrix and its target's table is the painted one (BitsRow); else kNoPair.
  uint16_t PairClass(const PodRecord& r) const;
  // Brings pair_of[p] up to date with pod p's record (pair_of grows to hold p), and the
  // direct table's entries of its old and new address with it. Called with each refresh of a
  // hot record (Batch::PublishHotArrays) and by PaintVerdictBits; writes a chunk only when an
  // entry changes: a pod event into an existing pair class costs O(1) edits.
  void RefreshPairClass(uint32_t p, uint64_t generation);
  // Paints `bits` from the current tables within options.verdict_bits_bytes, points every
  // record and address index entry at its block. Called once per Engine::Build.
  void PaintVerdictBits();
  // Makes the address index's entries of pod p's addresses (those it owns: a shared
  // address's entry is its owner's) mirror its HotRecord as PacketEntry says. `index()`
  // gives the index to write to and is called only for an entry that differs, so that a
  // batch that changes no entry copies no shard of the index.
  template <typename WritableIndex>
  void MirrorHotRecord(uint32_t p, WritableIndex&& index) const {
    const auto& pod = pods[p].state;
    if (pod == nullptr) return;
    const HotRecord& h = hot_records[p];
    for (const IpAddress& a : pod->ips) {
      const PacketEntry* entry = pod_by_ip->Find(a);
      if (entry == nullptr || entry->pod != p) continue;
      PacketEntry mirror;
      std::copy(std::begin(h.side), std::end(h.side), std::begin(mirror.side));
      mirror.pod = p;
      mirror.bits_row = h.bits_row;
      mirror.peer = h.peer[a.is_v4() ? 0 : 1];
      if (entry->side[0] == mirror.side[0] && entry->side[1] == mirror.side[1] &&
          entry->bits_row == mirror.bits_row && entry->peer == mirror.peer) {
        continue;
      }
      index().Set(a, mirror);
    }
  }

  // --- lookups (hot path) ---
  // One side of a target class (TargetTable::side): null for kNone (no policy selects the
  // pod, or it is off this node) or a direction that is not isolated: that side allows
  // everything.
  const uint64_t* HotSide(uint32_t target, Direction direction) const {
    return target == kNone ? nullptr : hot_tables[target].side[static_cast<int>(direction)];
  }
  // Whether one side admits the flow; a null side admits everything. Inline: it is the
  // verdict's inner loop, and the caller's two calls then schedule together.
  static inline bool SideAllows(const uint64_t* side, Protocol protocol, uint16_t port,
                                uint32_t peer);
  // SideAllows in two steps: the interval of the side that decides the flow (null: the side
  // allows everything), then its peers.
  static inline const HotInterval* FindInterval(const uint64_t* side, Protocol protocol,
                                                uint16_t port);
  static inline bool IntervalAllows(const uint64_t* side, const HotInterval& interval,
                                    uint32_t peer);
  // Asks for a side's first two lines (null: nothing): its header and first intervals, and
  // the lists that follow them (TargetTable), so that the list's miss does not wait for the
  // interval's. A side of one line makes the second request read the table's next line, which
  // no verdict needs: one wasted request, cheaper than the dependent miss it saves elsewhere.
  NP_ALWAYS_INLINE static void PrefetchSide(const uint64_t* side) {
    if (side != nullptr) {
      __builtin_prefetch(side);
      __builtin_prefetch(side + 8);
    }
  }
  uint32_t ExternalPeerClass(const IpAddress& address) const;
  bool has_tier_policies() const { return tier_policies != nullptr && !tier_policies->empty(); }
  // OK without tier policies; else Unimplemented naming them, for readers of the compiled
  // tables that do not handle tier tables yet (negated intervals): `who` starts the message.
  absl::Status RefuseTiers(absl::string_view who) const;
  std::optional<uint32_t> FindPodByIp(const IpAddress& address) const;
  // The pod's addresses that other live pods hold too, sorted.
  std::vector<IpAddress> SharedAddresses(const PodState& pod) const;
  // Whether this snapshot enforces the pod's sides (every pod, or the node's pods).
  bool OnNode(const PodState& pod) const {
    return options.node_name.empty() || pod.node_name == options.node_name;
  }

  // --- updates ---
  // Applies one batch to this state (a copy of the previous snapshot's state). On error the
  // state may be half-updated: the caller discards it.
  // `validated`: the objects come from a Cluster, which validated them already.
  // `tiers_from`: on the first batch of a build, the cluster whose policy tiers and Nodes
  // this state compiles (they never change afterwards).
  absl::Status ApplyBatch(absl::Span<const Change> changes, std::vector<Diagnostic>* diagnostics,
                          bool validated = false, const Cluster* tiers_from = nullptr);
  // Whether applying `changes` would change nothing this snapshot answers: each is an upsert
  // of a pod it holds, valid, whose labels, addresses, node and named ports are the held
  // ones (a status heartbeat: conditions, resource version, annotations). Then the valid
  // objects' warnings go to `diagnostics` and the caller keeps this snapshot (Engine::Apply).
  // Costs a key lookup and a reading of each object, no copy of the state.
  bool Unchanged(absl::Span<const Change> changes, std::vector<Diagnostic>* diagnostics) const;

  // --- helpers shared by updates and explain ---
  const std::vector<uint32_t>& IdList(uint32_t id) const { return *id_lists[id]; }
  bool PeerClassHasSelector(uint32_t peer_class, uint32_t selector) const;
  // The table of a (non-quarantine) target class as if no tier policy selected it: the
  // NetworkPolicy part alone, built as BuildTable builds any tier-less table. For the IR
  // lowering, which keeps the tiers as ordered rules beside it (np/lower.cc). Allocates.
  std::shared_ptr<const TargetTable> NetworkPolicyTable(const TargetClassKey& key) const;
  Verdict Explain(const Endpoint& source, const Endpoint& destination, Protocol protocol,
                  uint16_t port, AddressFamily family) const;
  size_t IndexBytes() const;
};

NP_ALWAYS_INLINE inline const HotInterval* EngineState::FindInterval(const uint64_t* side, Protocol protocol,
                                                    uint16_t port) {
  if (side == nullptr) return nullptr;
  const SideHeader& h = *reinterpret_cast<const SideHeader*>(side);
  const int pi = ProtocolIndex(protocol);
  const uint32_t first = pi == 0 ? 0 : h.end[pi - 1];
  const HotInterval* begin = reinterpret_cast<const HotInterval*>(side + 2) + first;
  const uint32_t n = h.end[pi] - first;
  // The interval holding `port`: the last whose first port is <= port. Tables usually have
  // a handful of intervals per protocol: counting the firsts <= port reads them all with no
  // branch on the port (the first interval starts at 0); long runs (tier rules cut many) are
  // searched by halves with a conditional move, not a branch: which half holds the port
  // differs from flow to flow, so a branch there is mispredicted half the time.
  if (n <= 8) {
    uint32_t index = 0;
    for (uint32_t k = 1; k < n; ++k) index += begin[k].first <= port;
    return begin + index;
  }
  const HotInterval* base = begin;
  for (uint32_t len = n; len > 1;) {
    const uint32_t half = len / 2;
    base = base[half].first <= port ? base + half : base;
    len -= half;
  }
  return base;
}

NP_ALWAYS_INLINE inline bool EngineState::IntervalAllows(const uint64_t* side, const HotInterval& interval,
                                        uint32_t peer) {
  const uint8_t flags = interval.flags;
  if (flags & HotInterval::kAllPeers) return true;
  const bool negated = flags & HotInterval::kNegated;
  // No address of the family, or a shared one: in no list, so denied unless the interval
  // lists the denied peers.
  if (peer >= kSharedPeer) return negated;
  if (flags & HotInterval::kSingle) return (interval.bits == peer) != negated;
  uint32_t offset = interval.bits, count = interval.count;
  if (flags & HotInterval::kIndirect) {
    offset = static_cast<uint32_t>(side[interval.bits]);
    count = static_cast<uint32_t>(side[interval.bits] >> 32);
  }
  return ListHolds(side + offset, flags & HotInterval::kSparse, count, peer) != negated;
}

NP_ALWAYS_INLINE inline bool EngineState::SideAllows(const uint64_t* side, Protocol protocol, uint16_t port,
                                    uint32_t peer) {
  const HotInterval* interval = FindInterval(side, protocol, port);
  return interval == nullptr || IntervalAllows(side, *interval, peer);
}

// For code of package np that reads a snapshot's compiled form (the IR lowering).
struct EngineAccess {
  static const EngineState& State(const Engine& engine) { return *engine.state_; }
};

// U128 form of an address: IPv4 in the low 32 bits.
inline U128 ToU128(const IpAddress& a) {
  return a.is_v4() ? U128{a.v4()} : (U128{a.hi()} << 64) | a.lo();
}
inline int FamilyIndex(AddressFamily f) {
  return f == AddressFamily::kIPv4 ? 0 : f == AddressFamily::kIPv6 ? 1 : 2;
}

}  // namespace np::internal

#endif  // NP_INTERNAL_ENGINE_STATE_H_
