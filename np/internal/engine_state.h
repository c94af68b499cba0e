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
//    listed XOR negated. Same reads as before; AllowedBatch's prefetching unchanged.
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
#include <cstring>
#include <memory>
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

// A pod as a verdict reads it: PodRecord with the target class's table resolved, so that the
// table is one load away from the pod id instead of two (record, then table array).
struct HotRecord {
  const uint64_t* table = nullptr;  // TargetTable::data(); null: not a target (kNone)
  uint32_t peer[3] = {kNone, kNone, kNone};  // as PodRecord::peer
  uint32_t target = kNone;                   // as PodRecord::target
};

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

// A packed table's buffer, read in place: a 64-byte header (the two DirectionTables and the
// counts), the intervals, then the bitset / id-list words. Verdicts hold only the buffer's
// address, so reading a table is one run of memory with no pointer to chase first.
class TableView {
 public:
  static constexpr size_t kHeaderWords = 8;  // 2 x 28-byte DirectionTable + 2 counts
  static_assert(2 * sizeof(DirectionTable) + 2 * sizeof(uint32_t) <= kHeaderWords * 8);

  explicit TableView(const uint64_t* buffer) : p_(buffer) {}
  const DirectionTable& direction(int d) const {
    return reinterpret_cast<const DirectionTable*>(p_)[d];
  }
  const Interval* intervals() const {
    return reinterpret_cast<const Interval*>(p_ + kHeaderWords);
  }
  uint32_t interval_count() const { return counts()[0]; }
  const uint64_t* words() const { return p_ + kHeaderWords + counts()[1]; }

  bool Allows(const Interval& iv, uint32_t peer) const {
    if (iv.all_peers) return true;
    return Listed(iv, peer) != static_cast<bool>(iv.negated);
  }
  // Whether the interval's words hold `peer` (whatever they mean).
  bool Listed(const Interval& iv, uint32_t peer) const {
    const uint64_t* w = words() + iv.bits;
    if (iv.sparse) {
      // The last id <= peer, by halving with a conditional move rather than a branch: the
      // outcome differs from flow to flow, so a branch here is mispredicted half the time.
      const uint32_t* ids = reinterpret_cast<const uint32_t*>(w);
      uint32_t len = iv.count;
      if (len == 0) return false;
      while (len > 1) {
        uint32_t half = len / 2;
        ids = ids[half] <= peer ? ids + half : ids;
        len -= half;
      }
      return *ids == peer;
    }
    uint32_t word = peer >> 6;
    if (word >= iv.count) return false;
    return (w[word] >> (peer & 63)) & 1;
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
  const uint32_t* counts() const {
    return reinterpret_cast<const uint32_t*>(p_ + kHeaderWords) - 2;
  }
  const uint64_t* p_;
};

// A target class's table: owns the packed buffer a TableView reads.
class TargetTable {
 public:
  explicit TargetTable(const TableDraft& draft) {
    constexpr size_t kHeader = TableView::kHeaderWords;
    size_t interval_words = (draft.intervals.size() * sizeof(Interval) + 7) / 8;
    buffer_.assign(kHeader + interval_words + draft.words.size(), 0);
    std::memcpy(buffer_.data(), draft.direction, sizeof(draft.direction));
    auto* counts = reinterpret_cast<uint32_t*>(buffer_.data() + kHeader) - 2;
    counts[0] = static_cast<uint32_t>(draft.intervals.size());
    counts[1] = static_cast<uint32_t>(interval_words);
    // memcpy from an empty vector's data() (null) is undefined even for 0 bytes (UBSan).
    if (!draft.intervals.empty()) {
      std::memcpy(buffer_.data() + kHeader, draft.intervals.data(),
                  draft.intervals.size() * sizeof(Interval));
    }
    if (!draft.words.empty()) {
      std::memcpy(buffer_.data() + kHeader + interval_words, draft.words.data(),
                  draft.words.size() * sizeof(uint64_t));
    }
  }
  TableView view() const { return TableView(buffer_.data()); }
  const uint64_t* data() const { return buffer_.data(); }
  size_t Bytes() const { return sizeof(*this) + buffer_.capacity() * sizeof(uint64_t); }

 private:
  std::vector<uint64_t> buffer_;
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

// ------------------------------------------------------------------------- the state

struct EngineState {
  EngineOptions options;
  uint64_t generation = 0;

  // Objects.
  CowMap<std::string, std::shared_ptr<const NamespaceState>, StringHash> namespaces;
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

  CowVector<IdentitySlot> identities;
  CowMap<std::string, uint32_t, StringHash, std::equal_to<>, kPodMapShardBits - 2>
      identity_by_key;  // up to one identity per pod

  CowVector<PeerClassKey> peer_classes;
  CowMap<PeerClassKey, uint32_t> peer_class_by_key;
  CowVector<TargetClassSlot> target_classes;
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
  CowVector<const uint64_t*, kHotChunkBits + 1> hot_tables;     // TargetTable::data()

  // --- lookups (hot path) ---
  // The packed table (TargetTable::data()) of a target class; null for kNone (no policy
  // selects the pod, or it is off this node): that side allows everything.
  const uint64_t* HotTable(uint32_t target) const {
    return target == kNone ? nullptr : hot_tables[target];
  }
  // Whether one side's table admits the flow; a null table admits everything. Inline: it is
  // the verdict's inner loop, and the caller's two calls then schedule together.
  static inline bool SideAllows(const uint64_t* table, Direction direction, Protocol protocol,
                                uint16_t port, uint32_t peer);
  // SideAllows in two steps, for AllowedBatch to interleave over many flows: the interval of
  // the table that decides the flow (null: the side allows everything), then its peers.
  static inline const Interval* FindInterval(const uint64_t* table, Direction direction,
                                             Protocol protocol, uint16_t port);
  static inline bool IntervalAllows(const uint64_t* table, const Interval& interval,
                                    uint32_t peer);
  // Asks for the line of the interval's peer words that the test of `peer` reads first: the
  // peer's own word of a bitset, the middle id of a sparse list (null interval, all_peers or
  // no class: nothing).
  static inline void PrefetchPeers(const uint64_t* table, const Interval* interval,
                                   uint32_t peer);
  // Asks for the first line of the intervals FindInterval will read (the table's header
  // must be at hand: it says where they are).
  static inline void PrefetchIntervals(const uint64_t* table, Direction direction,
                                       Protocol protocol);
  // Asks for a table's header line (null: nothing): it says where each protocol's
  // intervals are (PrefetchIntervals, then FindInterval, read them).
  static void PrefetchTable(const uint64_t* table) {
    if (table != nullptr) __builtin_prefetch(table);
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

inline const Interval* EngineState::FindInterval(const uint64_t* data, Direction direction,
                                                 Protocol protocol, uint16_t port) {
  if (data == nullptr) return nullptr;
  const TableView table(data);
  const DirectionTable& d = table.direction(static_cast<int>(direction));
  if (!d.isolated) return nullptr;
  int pi = ProtocolIndex(protocol);
  const Interval* begin = table.intervals() + d.begin[pi];
  const uint32_t n = d.end[pi] - d.begin[pi];
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
  const Interval* base = begin;
  for (uint32_t len = n; len > 1;) {
    const uint32_t half = len / 2;
    base = base[half].first <= port ? base + half : base;
    len -= half;
  }
  return base;
}

inline bool EngineState::IntervalAllows(const uint64_t* data, const Interval& interval,
                                        uint32_t peer) {
  if (interval.all_peers) return true;
  // No address of the family, or a shared one: in no list, so denied unless the interval
  // lists the denied peers.
  if (peer >= kSharedPeer) return interval.negated;
  return TableView(data).Allows(interval, peer);
}

inline void EngineState::PrefetchPeers(const uint64_t* data, const Interval* interval,
                                       uint32_t peer) {
  if (interval == nullptr || interval->all_peers || peer >= kSharedPeer) return;
  const uint64_t* words = TableView(data).words() + interval->bits;
  if (interval->sparse) {
    __builtin_prefetch(reinterpret_cast<const uint32_t*>(words) + interval->count / 2);
  } else if ((peer >> 6) < interval->count) {
    __builtin_prefetch(words + (peer >> 6));
  }
}

inline void EngineState::PrefetchIntervals(const uint64_t* data, Direction direction,
                                           Protocol protocol) {
  if (data == nullptr) return;
  const TableView table(data);
  __builtin_prefetch(table.intervals() +
                     table.direction(static_cast<int>(direction)).begin[ProtocolIndex(protocol)]);
}

inline bool EngineState::SideAllows(const uint64_t* data, Direction direction,
                                    Protocol protocol, uint16_t port, uint32_t peer) {
  const Interval* interval = FindInterval(data, direction, protocol, port);
  return interval == nullptr || IntervalAllows(data, *interval, peer);
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
