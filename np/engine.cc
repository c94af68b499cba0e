#include "np/engine.h"

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "np/internal/engine_state.h"
#include "np/tiers/validation.h"

namespace np {

using internal::EngineState;
using internal::kNone;
using internal::HotRecord;
using internal::PodRecord;

namespace internal {

uint32_t EngineState::ExternalPeerClass(const IpAddress& address) const {
  const AtomTable& atoms = *this->atoms[address.is_v4() ? 0 : 1];
  return atoms.peer_class[atoms.Find(ToU128(address))];
}

absl::Status EngineState::RefuseTiers(absl::string_view who) const {
  std::vector<std::string> keys;
  if (tier_policies != nullptr) {
    for (const CompiledTierPolicy& policy : *tier_policies) keys.push_back(policy.key);
  }
  return tiers::RefuseTierPolicies(keys, who);
}

std::optional<uint32_t> EngineState::FindPodByIp(const IpAddress& address) const {
  const PacketEntry* entry = pod_by_ip->Find(address);
  if (entry == nullptr) return std::nullopt;
  return entry->pod;
}

std::vector<IpAddress> EngineState::SharedAddresses(const PodState& pod) const {
  std::vector<IpAddress> out;
  for (const IpAddress& a : pod.ips) {
    if (shared_ips.Find(a) != nullptr) out.push_back(a);
  }
  std::sort(out.begin(), out.end());
  return out;
}

size_t EngineState::IndexBytes() const {
  size_t bytes = records.chunk_count() * records.chunk_bytes();
  bytes += pod_by_ip->Bytes();
  for (uint32_t t = 0; t < target_classes.size(); ++t) {
    if (target_classes[t].table != nullptr) bytes += target_classes[t].table->Bytes();
  }
  bytes += target_classes.chunk_count() * target_classes.chunk_bytes();
  for (int f = 0; f < 2; ++f) {
    bytes += atoms[f]->starts.capacity() * sizeof(U128) +
             atoms[f]->peer_class.capacity() * sizeof(uint32_t) * 2;
  }
  for (uint32_t s = 0; s < selector_bits.size(); ++s) {
    bytes += selector_bits[s]->capacity() * sizeof(uint64_t);
  }
  bytes += peer_classes.chunk_count() * peer_classes.chunk_bytes();
  if (bits != nullptr) bytes += bits->Bytes();
  bytes += pair_of.chunk_count() * pair_of.chunk_bytes();
  bytes += pair_ipv4.chunk_count() * pair_ipv4.chunk_bytes();
  bytes += pair_at.chunk_count() * pair_at.chunk_bytes();
  bytes += pair_owner.chunk_count() * pair_owner.chunk_bytes();
  return bytes;
}

namespace {

// The verdict bits' words, on huge pages where the kernel gives them (transparent huge pages
// in "madvise" mode, as on the benchmark VM). Why: a verdict reads two words at random in
// tens of MB (25 MB at 10k pods), so on 4 KB pages nearly every read also misses the TLB and
// walks the page tables — more than the data miss itself on a machine whose L3 holds the
// bits. 2 MB pages put the whole block array within the TLB's reach. Best effort: without
// them (THP "never", no memory to compact) the words are the same, on small pages.
uint64_t* AllocateBitWords(size_t words) {
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t bytes = words * sizeof(uint64_t);
  if (bytes < kHugePage) {
    return static_cast<uint64_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  }
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  if (p != nullptr) madvise(p, rounded, MADV_HUGEPAGE);  // (untouched yet: faults take 2 MB)
  return static_cast<uint64_t*>(p);
}

// The port classes of `tables` (VerdictBits::port_class): per protocol, a class starts at
// every interval's first port of every isolated side. Returns the class count.
uint32_t PortClasses(const std::vector<const TargetTable*>& tables, std::vector<uint8_t>* out) {
  std::vector<uint8_t> starts(3 * 65536, 0);
  for (int pi = 0; pi < 3; ++pi) starts[pi * 65536] = 1;
  for (const TargetTable* table : tables) {
    const TableView view = table->view();
    for (int d = 0; d < 2; ++d) {
      const DirectionTable dt = view.direction(d);
      if (!dt.isolated) continue;
      const Interval* intervals = view.intervals(d);
      for (int pi = 0; pi < 3; ++pi) {
        for (uint32_t i = dt.begin[pi]; i < dt.end[pi]; ++i) {
          starts[pi * 65536 + intervals[i].first] = 1;
        }
      }
    }
  }
  out->resize(3 * 65536);
  uint32_t classes = 0;
  for (size_t k = 0; k < starts.size(); ++k) {
    classes += starts[k];
    // (More than kMaxPortClasses: the caller gives up; the wrapped ids are never read.)
    (*out)[k] = static_cast<uint8_t>(classes - 1);
  }
  return classes;
}

// Paints one direction of a table into its K rows (`rows`, K * row_words words): each
// interval's folded peer set into the rows of the port classes it covers. Rows of ports no
// interval covers stay zero (denied), as a side with no interval for them denies.
void PaintDirection(const TableView& view, int d, const VerdictBits& bits, uint64_t* rows) {
  const uint32_t w = bits.row_words;
  const DirectionTable dt = view.direction(d);
  if (!dt.isolated) {
    std::fill(rows, rows + size_t{bits.port_classes} * w, ~uint64_t{0});
    return;
  }
  const Interval* intervals = view.intervals(d);
  for (int pi = 0; pi < 3; ++pi) {
    for (uint32_t i = dt.begin[pi]; i < dt.end[pi]; ++i) {
      const Interval& iv = intervals[i];
      const uint32_t last = i + 1 < dt.end[pi] ? intervals[i + 1].first - 1u : 65535u;
      const uint32_t first_class = bits.port_class[pi * 65536 + iv.first];
      const uint32_t last_class = bits.port_class[pi * 65536 + last];
      uint64_t* row = rows + size_t{first_class} * w;
      if (iv.all_peers) {
        std::fill(row, row + w, ~uint64_t{0});
      } else {
        if (!iv.sparse) {
          std::copy_n(view.words() + iv.bits, std::min(iv.count, w), row);
        } else {
          view.ForEachPeer(iv, [&](uint32_t peer) {
            if (peer < bits.peer_classes) row[peer >> 6] |= uint64_t{1} << (peer & 63);
          });
        }
        if (iv.negated) {
          for (uint32_t k = 0; k < w; ++k) row[k] = ~row[k];
        }
      }
      for (uint32_t c = first_class + 1; c <= last_class; ++c) {
        std::copy_n(row, w, rows + size_t{c} * w);
      }
    }
  }
}
// Paints `bits.pairs` (engine_state.h, PairMatrix) within `budget` bytes from the per-side
// rows of `bits` for the pairs (target, IPv4 peer) of `records`' live pods, when each pair's
// target has rows; returns false (and leaves no matrix) when it does not fit. Word-parallel
// by port class: with Q the distinct peers of the pairs,
//   E[s] (over destination pairs d) = egress row of s's target, read at d's peer,
//   X[q] (over destination pairs d) = ingress row of d's target, read at peer q,
//   row (port class, s) = E[s] & X[peer of s],
// and each E[s], X[q] is built as a constant (all zeros or all ones, whichever the row is
// mostly, over the peers in Q) plus a flip per exception: the bits of the pairs whose peer
// the row lists against its majority. On the benchmark's clusters the rows are nearly all
// constant (10k pods, tiered: 14k exceptions over 52k rows), so painting costs about the
// matrix's words; a cluster of mixed rows could cost classes x |Q| flips per port class,
// hence the cap: past kMaxFlips the matrix is left out and the per-side bits answer.
bool PaintPairMatrix(const CowVector<PodSlot>& pods, const CowVector<PodRecord>& records,
                     size_t budget, VerdictBits& bits) {
  constexpr size_t kMaxFlips = size_t{8} << 20;
  constexpr int kIngressIndex = static_cast<int>(Direction::kIngress);
  constexpr int kEgressIndex = static_cast<int>(Direction::kEgress);
  PairMatrix& m = bits.pairs;
  std::vector<uint32_t> pair_target, pair_peer;
  for (uint32_t p = 0; p < records.size(); ++p) {
    const PodRecord& r = records[p];
    if (pods[p].state == nullptr || r.peer[0] >= kSharedPeer || r.peer[0] >= bits.peer_classes ||
        (r.target != kNone && (r.target >= bits.row_of.size() || bits.row_of[r.target] == kNone))) {
      continue;
    }
    auto [it, added] = m.class_of.try_emplace(PairMatrix::Key(r.target, r.peer[0]),
                                              static_cast<uint16_t>(pair_target.size()));
    if (!added) continue;
    if (pair_target.size() >= PairMatrix::kMaxClasses) return false;  // ids < 2^15
    pair_target.push_back(r.target);
    pair_peer.push_back(r.peer[0]);
  }
  const uint32_t n = static_cast<uint32_t>(pair_target.size());
  const uint32_t w = (n + 63) / 64;
  const size_t word_count = size_t{bits.port_classes} * n * w;
  if (n == 0 || word_count * sizeof(uint64_t) > budget) return false;
  // The distinct peers (q = their rank) and, per peer, its pairs; `mask`: those peers among
  // the per-side rows' columns.
  std::vector<uint32_t> q_of(bits.peer_classes, kNone);
  std::vector<uint32_t> peers;
  for (uint32_t peer : pair_peer) {
    if (q_of[peer] == kNone) {
      q_of[peer] = static_cast<uint32_t>(peers.size());
      peers.push_back(peer);
    }
  }
  const uint32_t nq = static_cast<uint32_t>(peers.size());
  std::vector<uint32_t> pairs_start(nq + 1, 0), pairs_of_peer(n);
  for (uint32_t a = 0; a < n; ++a) ++pairs_start[q_of[pair_peer[a]] + 1];
  for (uint32_t q = 0; q < nq; ++q) pairs_start[q + 1] += pairs_start[q];
  {
    std::vector<uint32_t> next(pairs_start.begin(), pairs_start.end() - 1);
    for (uint32_t a = 0; a < n; ++a) pairs_of_peer[next[q_of[pair_peer[a]]]++] = a;
  }
  std::vector<uint64_t> mask(bits.row_words, 0);
  for (uint32_t peer : peers) mask[peer >> 6] |= uint64_t{1} << (peer & 63);
  // One pair's row of direction d at port class pc, over the peers; pods no policy selects
  // read the all-ones block.
  auto side_row = [&](uint32_t a, int d, uint32_t pc) {
    const uint32_t t = pair_target[a];
    return bits.Word(t == kNone ? bits.all_row : bits.row_of[t], d, pc * bits.row_words, 0);
  };
  // Sets `out` (w words; null: nothing) to the row's majority value over the masked peers,
  // calls flip(q) for each masked peer q the row holds against that majority, and returns
  // the majority.
  size_t flips = 0;
  auto paint = [&](const uint64_t* row, uint64_t* out, auto&& flip) {
    uint32_t ones = 0;
    for (uint32_t k = 0; k < bits.row_words; ++k) ones += __builtin_popcountll(row[k] & mask[k]);
    const bool majority = ones * 2 > nq;
    if (out != nullptr) std::fill(out, out + w, majority ? ~uint64_t{0} : 0);
    for (uint32_t k = 0; k < bits.row_words; ++k) {
      for (uint64_t x = (majority ? ~row[k] : row[k]) & mask[k]; x != 0; x &= x - 1) {
        const uint32_t q = q_of[k * 64 + static_cast<uint32_t>(__builtin_ctzll(x))];
        flip(q);
      }
    }
    return majority;
  };
  m.words.reset(AllocateBitWords(word_count));
  if (m.words == nullptr) return false;
  m.word_count = word_count;
  m.classes = n;
  m.row_words = w;
  m.plane_words = size_t{n} * w;
  // Pair by pair, all port classes at once: a pair's rows of one direction are consecutive
  // in its bits block, so the per-side bits are read in their own order, once per direction
  // (port class by port class, every row was a fresh miss in tens of MB, three times over:
  // 100+ ms at 10k tiered). Egress: E straight into the matrix's planes. Ingress: each
  // destination's majority into `majority` (per port class, over destination pairs) and its
  // exceptions into `x` (per port class and peer q) as flips of that majority, so one pass.
  const uint32_t k_classes = bits.port_classes;
  for (uint32_t a = 0; a < n && flips <= kMaxFlips; ++a) {
    for (uint32_t pc = 0; pc < k_classes; ++pc) {
      uint64_t* row = m.words.get() + pc * m.plane_words + size_t{a} * w;
      paint(side_row(a, kEgressIndex, pc), row, [&](uint32_t q) {
        for (uint32_t i = pairs_start[q]; i < pairs_start[q + 1]; ++i) {
          const uint32_t b = pairs_of_peer[i];
          row[b >> 6] ^= uint64_t{1} << (b & 63);
        }
        flips += pairs_start[q + 1] - pairs_start[q];
      });
    }
  }
  std::vector<uint64_t> majority(size_t{k_classes} * w, 0), x(size_t{k_classes} * nq * w, 0);
  for (uint32_t b = 0; b < n && flips <= kMaxFlips; ++b) {
    const uint64_t bit = uint64_t{1} << (b & 63);
    for (uint32_t pc = 0; pc < k_classes; ++pc) {
      uint64_t* x_pc = &x[size_t{pc} * nq * w];
      if (paint(side_row(b, kIngressIndex, pc), nullptr, [&](uint32_t q) {
            x_pc[size_t{q} * w + (b >> 6)] ^= bit;
            ++flips;
          })) {
        majority[size_t{pc} * w + (b >> 6)] |= bit;
      }
    }
  }
  if (flips <= kMaxFlips) {
    for (uint32_t pc = 0; pc < k_classes; ++pc) {
      const uint64_t* all = &majority[size_t{pc} * w];
      uint64_t* plane = m.words.get() + pc * m.plane_words;
      for (uint32_t a = 0; a < n; ++a) {
        const uint64_t* xa = &x[(size_t{pc} * nq + q_of[pair_peer[a]]) * w];
        uint64_t* out = plane + size_t{a} * w;
        for (uint32_t k = 0; k < w; ++k) out[k] &= all[k] ^ xa[k];
      }
    }
  }
  if (flips > kMaxFlips) {
    m = PairMatrix();
    return false;
  }
  return true;
}
}  // namespace

uint16_t EngineState::PairClass(const PodRecord& r) const {
  if (bits == nullptr || bits->pairs.classes == 0 || r.peer[0] >= kSharedPeer) {
    return PairMatrix::kNoPair;
  }
  // The painted table still stands (as the per-side bits' row requires).
  if (r.target != kNone && BitsRow(r.target) == kNone) return PairMatrix::kNoPair;
  auto it = bits->pairs.class_of.find(PairMatrix::Key(r.target, r.peer[0]));
  return it == bits->pairs.class_of.end() ? PairMatrix::kNoPair : it->second;
}

void EngineState::RefreshPairClass(uint32_t p, uint64_t generation) {
  if (bits == nullptr || bits->pairs.classes == 0) return;
  while (pair_of.size() <= p) {
    pair_of.PushBack(PairMatrix::kNoPair, generation);
    pair_ipv4.PushBack(0, generation);
  }
  const PodState* pod = pods[p].state.get();
  const uint16_t pair = pod != nullptr ? PairClass(records[p]) : PairMatrix::kNoPair;
  const uint32_t ipv4 = pair != PairMatrix::kNoPair && pod->ipv4 ? pod->ipv4->v4() : 0;
  const uint16_t old_pair = pair_of[p];
  const uint32_t old_ipv4 = pair_ipv4[p];
  if (old_pair == pair && old_ipv4 == ipv4) return;
  if (old_pair != pair) pair_of.Mutable(p, generation) = pair;
  if (old_ipv4 != ipv4) pair_ipv4.Mutable(p, generation) = ipv4;
  // The direct table follows the slot. Clear before write: the pod may keep its address.
  // An entry naming another pod is left alone: that pod took the address in this batch
  // (refreshed before this one), and a shared address names no pod with a pair.
  const uint32_t base = bits->pairs.v4_base;
  if (old_pair != PairMatrix::kNoPair && old_ipv4 - base < pair_at.size() &&
      pair_owner[old_ipv4 - base] == p) {
    pair_at.Mutable(old_ipv4 - base, generation) = PairMatrix::kNoPair;
    pair_owner.Mutable(old_ipv4 - base, generation) = kNone;
  }
  if (pair != PairMatrix::kNoPair && ipv4 - base < pair_at.size()) {
    pair_at.Mutable(ipv4 - base, generation) = pair;
    if (pair_owner[ipv4 - base] != p) pair_owner.Mutable(ipv4 - base, generation) = p;
  }
}

// The direct table of the pods' IPv4 addresses (EngineState::pair_at) for the pods with a
// pair id, when their addresses are dense enough: its range into the matrix, its entries
// into the state's (empty) direct table.
static void PaintPairAddresses(size_t live_pods, uint64_t generation, PairMatrix& m,
                               EngineState& s) {
  uint32_t low = ~uint32_t{0}, high = 0;
  for (uint32_t p = 0; p < s.pair_of.size(); ++p) {
    if (s.pair_of[p] == PairMatrix::kNoPair) continue;
    low = std::min(low, s.pair_ipv4[p]);
    high = std::max(high, s.pair_ipv4[p]);
  }
  if (low > high || size_t{high - low} + 1 > PairMatrix::kMaxDirect(live_pods)) return;
  m.v4_base = low;
  m.direct_size = high - low + 1;
  for (uint32_t k = 0; k < m.direct_size; ++k) {
    s.pair_at.PushBack(PairMatrix::kNoPair, generation);
    s.pair_owner.PushBack(kNone, generation);
  }
  for (uint32_t p = 0; p < s.pair_of.size(); ++p) {
    if (s.pair_of[p] == PairMatrix::kNoPair) continue;
    s.pair_at.Mutable(s.pair_ipv4[p] - low, generation) = s.pair_of[p];
    s.pair_owner.Mutable(s.pair_ipv4[p] - low, generation) = p;
  }
}

void EngineState::PaintVerdictBits() {
  bits = nullptr;
  const size_t budget = options.verdict_bits_bytes;
  // The classes that have pods, most pods first: with a budget too small for all, the
  // blocks go where the most flows are.
  std::vector<uint32_t> order;
  std::vector<const TargetTable*> tables;
  for (uint32_t t = 0; t < target_classes.size(); ++t) {
    const TargetClassSlot& slot = target_classes[t];
    if (slot.pods == 0 || slot.table == nullptr) continue;
    order.push_back(t);
    tables.push_back(slot.table.get());
  }
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return target_classes[a].pods > target_classes[b].pods;
  });
  auto out = std::make_shared<VerdictBits>();
  VerdictBits* painted = nullptr;
  VerdictBits& b = *out;
  b.port_classes = PortClasses(tables, &b.port_class);
  b.peer_classes = static_cast<uint32_t>(peer_classes.size());
  b.row_words = std::max<uint32_t>(1, (b.peer_classes + 63) / 64);
  const size_t block_words = size_t{2} * b.port_classes * b.row_words;
  // One block for the pods no policy selects, then as many classes as the budget holds.
  const size_t blocks = budget / (block_words * sizeof(uint64_t));
  if (b.port_classes <= VerdictBits::kMaxPortClasses && blocks >= 1 &&
      std::min(blocks, order.size() + 1) * block_words < kNone) {
    order.resize(std::min(order.size(), blocks - 1));
    b.word_count = (order.size() + 1) * block_words;
    b.words.reset(AllocateBitWords(b.word_count));
    std::fill(b.words.get(), b.words.get() + b.word_count, 0);
    b.row_of.assign(target_classes.size(), kNone);
    b.tables.resize(target_classes.size());
    for (size_t k = 0; k < order.size(); ++k) {
      const uint32_t t = order[k];
      const size_t row = k * block_words;
      b.row_of[t] = static_cast<uint32_t>(row);
      b.tables[t] = target_classes[t].table;
      const TableView view = b.tables[t]->view();
      for (int d = 0; d < 2; ++d) {
        PaintDirection(view, d, b, b.words.get() + row + static_cast<size_t>(d) * b.port_classes * b.row_words);
      }
    }
    b.all_row = static_cast<uint32_t>(order.size() * block_words);
    std::fill(b.words.get() + b.all_row, b.words.get() + b.word_count, ~uint64_t{0});
    PaintPairMatrix(pods, records, budget - b.word_count * sizeof(uint64_t), b);
    painted = &b;  // (still ours to write: its direct table needs the pods' pair ids below)
    bits = std::move(out);
  }
  // The records and the address index's copies of them (the packet path's bits rows). A
  // Build's index is its own, but write a copy if it were shared.
  IpIndex* index = nullptr;
  auto writable_index = [&]() -> IpIndex& {
    if (index == nullptr) {
      if (pod_by_ip.use_count() != 1) {
        auto copy = std::make_shared<IpIndex>(*pod_by_ip);
        copy->ReleaseOwnership();
        pod_by_ip = std::move(copy);
      }
      index = const_cast<IpIndex*>(pod_by_ip.get());
    }
    return *index;
  };
  for (uint32_t p = 0; p < hot_records.size(); ++p) {
    if (pods[p].state == nullptr) continue;
    hot_records.Mutable(p, generation).bits_row = BitsRow(records[p].target);
    RefreshPairClass(p, generation);
    MirrorHotRecord(p, writable_index);
  }
  // (Deleted pods at the end: pair_of stays parallel to pods.)
  if (painted != nullptr && painted->pairs.classes > 0) {
    while (pair_of.size() < hot_records.size()) {
      pair_of.PushBack(PairMatrix::kNoPair, generation);
      pair_ipv4.PushBack(0, generation);
    }
    PaintPairAddresses(live_pods, generation, painted->pairs, *this);
  }
}

}  // namespace internal

Engine::Engine(std::unique_ptr<EngineState> state) : state_(std::move(state)) {}
Engine::~Engine() = default;

absl::StatusOr<std::shared_ptr<const Engine>> Engine::Build(const Cluster& cluster,
                                                            const EngineOptions& options) {
  auto state = std::make_unique<EngineState>();
  state->options = options;
  ClusterObjects objects = cluster.ToObjects();
  std::vector<Change> changes;
  changes.reserve(objects.namespaces.size() + objects.pods.size() + objects.policies.size());
  for (auto& ns : objects.namespaces) {
    changes.push_back(Change{Change::Op::kUpsert, std::move(ns.object)});
  }
  for (auto& policy : objects.policies) {
    changes.push_back(Change{Change::Op::kUpsert, std::move(policy.object)});
  }
  for (auto& pod : objects.pods) {
    changes.push_back(Change{Change::Op::kUpsert, std::move(pod.object)});
  }
  // What `objects` still holds, the tier policies and Nodes, is kept as objects (ToCluster,
  // Holds, a later tier change) while the batch compiles them from the cluster (tiers_from).
  // (The batch copying the cluster again for them copied every pod too.)
  if (cluster.tier_policy_count() > 0 || cluster.node_count() > 0) {
    objects.namespaces.clear();  // (moved from)
    objects.pods.clear();
    objects.policies.clear();
    objects.services.clear();
    state->tier_objects = std::make_shared<const ClusterObjects>(std::move(objects));
  }
  absl::Status status =
      state->ApplyBatch(changes, nullptr, /*validated=*/true, /*tiers_from=*/&cluster);
  if (!status.ok()) return status;
  state->PaintVerdictBits();
  return std::shared_ptr<const Engine>(new Engine(std::move(state)));
}

absl::StatusOr<std::shared_ptr<const Engine>> Engine::Apply(
    absl::Span<const Change> changes, std::vector<Diagnostic>* diagnostics) const {
  // A status heartbeat changes no answer: no copy, no batch, this very snapshot (so that a
  // LiveEngine publishes nothing and an agent has nothing to send to the kernel).
  if (state_->Unchanged(changes, diagnostics)) return shared_from_this();
  // Copying the state copies chunk and shard pointers only; the batch clones what it edits.
  auto state = std::make_unique<EngineState>(*state_);
  absl::Status status = state->ApplyBatch(changes, diagnostics);
  if (!status.ok()) return status;
  return std::shared_ptr<const Engine>(new Engine(std::move(state)));
}

absl::StatusOr<std::shared_ptr<const Engine>> Engine::Compact() const {
  absl::StatusOr<Cluster> cluster = ToCluster();
  if (!cluster.ok()) return cluster.status();
  return Build(*cluster, state_->options);
}

std::optional<PodId> Engine::FindPod(absl::string_view key) const {
  const uint32_t* id = state_->pod_by_key.Find(key);
  if (id == nullptr) return std::nullopt;
  return *id;
}

std::optional<PodId> Engine::PodByIp(const IpAddress& address) const {
  return state_->FindPodByIp(address);
}

bool Engine::Holds(const Change& change) const {
  // An object without a namespace is in "default", as Apply reads it.
  auto key = [](const auto& object) {
    const std::string& ns = object.metadata().namespace_();
    return absl::StrCat(ns.empty() ? "default" : ns, "/", object.metadata().name());
  };
  if (const auto* ns = std::get_if<k8s::Namespace>(&change.object)) {
    const auto* found = state_->namespaces.Find(ns->metadata().name());
    return found != nullptr && (*found)->object != nullptr;  // implied namespaces are not held
  }
  if (const auto* pod = std::get_if<k8s::Pod>(&change.object)) {
    const std::string k = key(*pod);
    return state_->pod_by_key.Find(k) != nullptr || state_->left_out_pods.Find(k) != nullptr;
  }
  if (const auto* policy = std::get_if<k8s::NetworkPolicy>(&change.object)) {
    return state_->policy_by_key.Find(key(*policy)) != nullptr;
  }
  // A tier policy or Node: cluster-scoped, held when the snapshot has one of that kind and
  // name (a handful of objects: a scan).
  if (state_->tier_objects == nullptr) return false;
  const ClusterObjects& tiers = *state_->tier_objects;
  auto held = [&](const auto& list, const auto& object) {
    return std::any_of(list.begin(), list.end(), [&](const auto& existing) {
      return existing.object.metadata().name() == object.metadata().name();
    });
  };
  if (const auto* p = std::get_if<policy_networking::AdminNetworkPolicy>(&change.object)) {
    return held(tiers.admin_network_policies, *p);
  }
  if (const auto* p = std::get_if<policy_networking::BaselineAdminNetworkPolicy>(&change.object)) {
    return held(tiers.baseline_admin_network_policies, *p);
  }
  if (const auto* p = std::get_if<policy_networking::ClusterNetworkPolicy>(&change.object)) {
    return held(tiers.cluster_network_policies, *p);
  }
  return held(tiers.nodes, std::get<k8s::Node>(change.object));
}

bool Engine::IsLivePod(PodId pod) const {
  return pod < state_->pods.size() && state_->pods[pod].state != nullptr;
}

std::string Engine::PodKey(PodId pod) const {
  if (!IsLivePod(pod)) return "";
  return state_->pods[pod].state->key;
}

std::vector<PodId> Engine::Pods() const {
  std::vector<std::pair<std::string, PodId>> pods;
  for (uint32_t p = 0; p < state_->pods.size(); ++p) {
    const auto& s = state_->pods[p].state;
    if (s == nullptr) continue;
    pods.emplace_back(s->namespace_name + '\0' + s->name, p);
  }
  std::sort(pods.begin(), pods.end());
  std::vector<PodId> out;
  out.reserve(pods.size());
  for (const auto& [key, id] : pods) out.push_back(id);
  return out;
}

namespace {

// HotRecord::side indexes.
constexpr int kIngress = static_cast<int>(Direction::kIngress);
constexpr int kEgress = static_cast<int>(Direction::kEgress);

// A pod-to-pod flow's family, as an index into HotRecord::peer: IPv4 when both pods have an
// IPv4 address, else IPv6 when both have one, else none (2).
inline int FlowFamilyIndex(const HotRecord& src, const HotRecord& dst) {
  return (src.peer[0] != kNone && dst.peer[0] != kNone)   ? 0
         : (src.peer[1] != kNone && dst.peer[1] != kNone) ? 1
                                                          : 2;
}

// The verdict of a pod-to-pod flow from the two pods' records (both sides' lines asked for
// by the caller): the by-pod lookup and each flow of a batch.
NP_ALWAYS_INLINE inline bool RecordsAllow(const HotRecord& src, const HotRecord& dst,
                                          Protocol protocol, uint16_t port) {
  const int f = FlowFamilyIndex(src, dst);
  return EngineState::SideAllows(src.side[kEgress], protocol, port, dst.peer[f]) &&
         EngineState::SideAllows(dst.side[kIngress], protocol, port, src.peer[f]);
}

// The two bit words that decide a flow whose source's block is `src_row` with peer class
// `src_peer` and whose destination's is `dst_row` / `dst_peer` ([0] the source's egress row,
// [1] the destination's ingress row), on the port class at `port_offset`; false when the bits
// do not decide it: an end outside the bits (kNone: a class not painted, or rebuilt since
// Engine::Build) or a peer class that is not a column of them (newer than the bits, kNone, a
// shared address). The by-pod, the by-packet and both batches' test: one definition of when
// the bits may answer.
NP_ALWAYS_INLINE inline bool BitWords(const internal::VerdictBits& bits, uint32_t src_row,
                                      uint32_t src_peer, uint32_t dst_row, uint32_t dst_peer,
                                      uint32_t port_offset, const uint64_t* words[2]) {
  if (src_row == kNone || dst_row == kNone || src_peer >= bits.peer_classes ||
      dst_peer >= bits.peer_classes) {
    return false;
  }
  words[0] = bits.Word(src_row, kEgress, port_offset, dst_peer);
  words[1] = bits.Word(dst_row, kIngress, port_offset, src_peer);
  return true;
}
// The verdict from BitWords' words. `&`, not `&&`: both bits are read, independently,
// whatever the first says.
NP_ALWAYS_INLINE inline bool WordsAllow(const uint64_t* const words[2], uint32_t src_peer,
                                        uint32_t dst_peer) {
  return ((*words[0] >> (dst_peer & 63)) & (*words[1] >> (src_peer & 63)) & 1) != 0;
}

// Whether the verdict bits decide a pod-to-pod flow (BitWords on the two records, in the
// flow's family); then `*allowed` is the verdict.
NP_ALWAYS_INLINE inline bool BitsDecide(const internal::VerdictBits* bits, const HotRecord& src,
                                        const HotRecord& dst, uint32_t port_offset,
                                        bool* allowed) {
  const int f = FlowFamilyIndex(src, dst);
  const uint64_t* words[2];
  if (!BitWords(*bits, src.bits_row, src.peer[f], dst.bits_row, dst.peer[f], port_offset,
                words)) {
    return false;
  }
  *allowed = WordsAllow(words, src.peer[f], dst.peer[f]);
  return true;
}

// The pair matrix's word and bit for a pod-to-pod flow (engine_state.h, PairMatrix): when
// both pods have a pair id. Their ids come from pair_of (L2-resident: 8 bytes a pod), so
// the flow's one likely miss is the word. The by-pod, the by-packet (from the index entries'
// pods, IPv4) and both batches' test.
NP_ALWAYS_INLINE inline bool PairWord(const EngineState& s, const internal::VerdictBits& bits,
                                      uint32_t source, uint32_t destination, Protocol protocol,
                                      uint16_t port, const uint64_t** word, uint32_t* shift) {
  const internal::PairMatrix& m = bits.pairs;
  if (m.classes == 0) return false;
  const uint32_t a = s.pair_of[source], b = s.pair_of[destination];
  if (a == internal::PairMatrix::kNoPair || b == internal::PairMatrix::kNoPair) return false;
  *word = m.Word(bits.PortClass(protocol, port), a, b);
  *shift = b & 63;
  return true;
}

// The exact path: the records' sides, their intervals and lists.
NP_ALWAYS_INLINE inline bool ExactAllow(const HotRecord& src, const HotRecord& dst,
                                        Protocol protocol, uint16_t port) {
  // Both sides' lines at once, before the egress side's test decides whether the ingress
  // side is read at all (on the allowed mix it always is).
  EngineState::PrefetchSide(src.side[kEgress]);
  EngineState::PrefetchSide(dst.side[kIngress]);
  return RecordsAllow(src, dst, protocol, port);
}

// A packet's verdict from its two address index entries (null: not a pod's address). Pod to
// pod within the bits: the two entries' bit words (BitWords), the chain slot -> bit word;
// else the exact path on the entries' sides, an address outside the cluster by its CIDR
// class (asked for only when the other end is isolated).
// A packet between two pods' IPv4 addresses that the pair matrix answers by its direct
// table (EngineState::PairOfAddress): the word and bit, or *known when the verdict needs no
// read (one pod to itself with always_allow_self). False: ask the address index.
NP_ALWAYS_INLINE inline bool DirectPairWord(const EngineState& s, const internal::VerdictBits& bits,
                                            const IpAddress& source, const IpAddress& destination,
                                            Protocol protocol, uint16_t port,
                                            const uint64_t** word, uint32_t* shift) {
  const internal::PairMatrix& m = bits.pairs;
  uint32_t src_offset, dst_offset, a, b;
  // (One offset is one pod: EngineState::pair_at.)
  if (!s.PairOfAddress(m, source, &src_offset, &a) ||
      !s.PairOfAddress(m, destination, &dst_offset, &b) ||
      (src_offset == dst_offset && s.options.evaluation.always_allow_self)) {
    return false;
  }
  *word = m.Word(bits.PortClass(protocol, port), a, b);
  *shift = b & 63;
  return true;
}

NP_ALWAYS_INLINE inline bool PacketAllowed(const EngineState& s, const internal::PacketEntry* src,
                                           const internal::PacketEntry* dst,
                                           const IpAddress& source, const IpAddress& destination,
                                           Protocol protocol, uint16_t port) {
  if (src != nullptr && dst != nullptr) {
    if (src->pod == dst->pod && s.options.evaluation.always_allow_self) return true;
    const uint64_t* words[2];
    uint32_t shift;
    // (The pair ids are of the pods' IPv4 peers: an IPv4 packet's.)
    if (const internal::VerdictBits* bits = s.bits.get();
        bits != nullptr && source.is_v4() && destination.is_v4() &&
        PairWord(s, *bits, src->pod, dst->pod, protocol, port, &words[0], &shift)) {
      return (*words[0] >> shift) & 1;
    }
    if (const internal::VerdictBits* bits = s.bits.get();
        bits != nullptr && BitWords(*bits, src->bits_row, src->peer, dst->bits_row, dst->peer,
                                    bits->PortClassOffset(protocol, port), words)) {
      return WordsAllow(words, src->peer, dst->peer);
    }
  }
  const uint64_t* egress = src != nullptr ? src->side[kEgress] : nullptr;
  const uint64_t* ingress = dst != nullptr ? dst->side[kIngress] : nullptr;
  EngineState::PrefetchSide(egress);
  EngineState::PrefetchSide(ingress);
  const uint32_t src_peer = src != nullptr       ? src->peer
                            : ingress != nullptr ? s.ExternalPeerClass(source)
                                                 : kNone;
  const uint32_t dst_peer = dst != nullptr      ? dst->peer
                            : egress != nullptr ? s.ExternalPeerClass(destination)
                                                : kNone;
  return EngineState::SideAllows(egress, protocol, port, dst_peer) &&
         EngineState::SideAllows(ingress, protocol, port, src_peer);
}

// A batch of flows answered through the bits in blocks: the first pass works out each flow
// of the block (`plan`: its two bit words and the bits' positions in them) and asks for the
// words; the second reads them and answers. Why blocks and not the rolling pipeline the
// exact path uses: with the bits a verdict is one miss (the bit words: the records and the
// index slots stay in L2 at 10k pods), so there is one stage to hide, and a flow's words are
// worked out once, where the rolling form worked them out twice (once to ask, once to
// answer) and was slower than one call per flow (bench/RESULTS.md, 2026-12-01 19:42). A flow
// the bits do not decide is answered by `plan` at once, by the exact path, and stands in
// the second pass as a word of ones or zeros. 16 flows: 32 lines asked for at once, about
// what the cores' fill buffers take in, and the block's plan stays in L1.
struct PlannedFlow {
  const uint64_t* words[2];
  uint32_t shift[2];
  // A verdict known without the bits: the second pass reads it from a constant word.
  void Known(bool allowed) {
    static constexpr uint64_t kConstant[2] = {0, ~uint64_t{0}};
    words[0] = words[1] = &kConstant[allowed ? 1 : 0];
    shift[0] = shift[1] = 0;
  }
  // A verdict in one bit (the pair matrix's, in words[0] and shift[0]): the second pass
  // reads it twice, from the line asked for once.
  void Once() {
    words[1] = words[0];
    shift[1] = shift[0];
  }
};
template <typename Plan>
NP_ALWAYS_INLINE inline void AnswerInBlocks(size_t n, uint8_t* out, Plan&& plan) {
  constexpr size_t kBlock = 16;
  PlannedFlow planned[kBlock];
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t m = std::min(kBlock, n - start);
    for (size_t k = 0; k < m; ++k) {
      plan(start + k, planned[k]);
      __builtin_prefetch(planned[k].words[0]);
      if (planned[k].words[1] != planned[k].words[0]) __builtin_prefetch(planned[k].words[1]);
    }
    for (size_t k = 0; k < m; ++k) {
      const PlannedFlow& f = planned[k];
      out[start + k] = static_cast<uint8_t>((*f.words[0] >> f.shift[0]) &
                                            (*f.words[1] >> f.shift[1]) & 1);
    }
  }
}

// A batch answered from the pair matrix in one pass with a software pipeline (issue 10,
// h83). Why not AnswerInBlocks' two passes over 16 flows: with one miss per flow (the matrix
// word; the pair ids sit in L1) a single call already overlaps its miss with the next flows',
// and the blocks' per-flow plan (calls, branches on every rare path, a 32-byte plan written
// then read) cost more than the overlap they bought (2.5x the floor, whose loop is a dozen
// instructions and one load per flow). Here `locate` works out flow j's bit in the matrix
// (its position in bits: port class plane, source row, destination column) kWordAhead
// flows before its answer and asks for its word; the answer reads the word. A flow the matrix does not answer (no pair id, an
// address off the direct table, one pod to itself with always_allow_self) is not branched
// on: `locate` gives it bit 0 (read for nothing) and rare = 1; the loop only ORs the rare
// flags together, and after it, only when some flow was rare, a second pass asks `locate`
// again which flows were and `slow` answers each of them in full. (h88: marking each rare
// flow in its answer byte, as h83 did, cost every flow's answer two more instructions, for
// flows that on the benchmark's mixes never occur; the second pass costs a batch that has
// one about a locate per flow, a fraction of the batch.) The answers are gathered eight to a
// word and stored once: a byte store may alias anything, and after each the compiler
// reloaded the state's pointers (the direct table's, the matrix's). The steady state takes
// kWordAhead flows a round, so that each flow's ring slot is a constant offset (with eight,
// every flow paid for its slot's index).
// (Asking for the pair slots ahead too, a third stage, was slower: they are in L1, and the
// extra requests took fill buffers from the matrix words.)
struct Located {
  uint64_t bit;   // the flow's bit in the matrix; 0 when rare
  uint64_t rare;  // 1: the matrix does not answer this flow
};
template <typename Locate, typename Slow>
NP_ALWAYS_INLINE inline void PipelineThroughMatrix(const internal::PairMatrix& m, size_t n,
                                                   uint8_t* out, Locate&& locate,
                                                   Slow&& slow) {
  constexpr size_t kWordAhead = 16;
  const uint64_t* const words = m.words.get();
  uint64_t ring[kWordAhead];
  uint64_t rare = 0;
  auto ask = [&](size_t j, uint64_t& slot) NP_ALWAYS_INLINE {
    const Located l = locate(j);
    slot = l.bit;
    rare |= l.rare;
    __builtin_prefetch(words + (l.bit >> 6));
  };
  auto answer = [&](uint64_t bit) NP_ALWAYS_INLINE { return (words[bit >> 6] >> (bit & 63)) & 1; };
  for (size_t j = 0; j < std::min(n, kWordAhead); ++j) ask(j, ring[j]);
  size_t i = 0;
  // The steady state, kWordAhead flows a round without bounds tests: flow i + k's slot is
  // ring[k] (i is a multiple of kWordAhead); then the tail.
  static_assert(kWordAhead == 16, "two words of eight answers a round");
  for (; i + 2 * kWordAhead <= n; i += kWordAhead) {
    uint64_t eight[2] = {0, 0};
#pragma GCC unroll 16
    for (size_t k = 0; k < kWordAhead; ++k) {
      eight[k / 8] |= answer(ring[k]) << (8 * (k % 8));
      ask(i + k + kWordAhead, ring[k]);
    }
    std::memcpy(out + i, eight, sizeof(eight));
  }
  for (; i < n; ++i) {
    out[i] = static_cast<uint8_t>(answer(ring[i % kWordAhead]));
    if (i + kWordAhead < n) ask(i + kWordAhead, ring[i % kWordAhead]);
  }
  if (rare == 0) return;
  for (size_t k = 0; k < n; ++k) {
    if (locate(k).rare) out[k] = slow(k) ? 1 : 0;
  }
}
// The protocol's first entry in VerdictBits::port_class (ProtocolIndex * 65536), by the
// protocol's byte: one load from a 1 KB table in L1, where comparing against TCP and UDP
// took the batch loop a branch and five instructions a flow. Any other byte reads SCTP's
// entry, as ProtocolIndex does.
constexpr std::array<uint32_t, 256> kPortClassBase = [] {
  std::array<uint32_t, 256> base{};
  for (uint32_t p = 0; p < 256; ++p) {
    base[p] = p == static_cast<uint8_t>(Protocol::kTCP)   ? 0u
              : p == static_cast<uint8_t>(Protocol::kUDP) ? 65536u
                                                          : 131072u;
  }
  return base;
}();
NP_ALWAYS_INLINE inline uint32_t PortClassBase(Protocol protocol) {
  return kPortClassBase[static_cast<uint8_t>(protocol)];
}

}  // namespace

bool Engine::Allowed(PodId source, PodId destination, Protocol protocol, uint16_t port) const {
  const EngineState& s = *state_;
  if (s.options.evaluation.always_allow_self && source == destination) return true;
  const internal::VerdictBits* bits = s.bits.get();
  const uint64_t* word;
  uint32_t shift;
  if (bits != nullptr && PairWord(s, *bits, source, destination, protocol, port, &word, &shift)) {
    return (*word >> shift) & 1;
  }
  const HotRecord& src = s.hot_records[source];
  const HotRecord& dst = s.hot_records[destination];
  bool allowed;
  if (bits != nullptr &&
      BitsDecide(bits, src, dst, bits->PortClassOffset(protocol, port), &allowed)) {
    return allowed;
  }
  return ExactAllow(src, dst, protocol, port);
}

bool Engine::Allowed(const Endpoint& source, const Endpoint& destination, Protocol protocol,
                     uint16_t port) const {
  const EngineState& s = *state_;
  if (source.is_pod && destination.is_pod) {
    return Allowed(source.pod_index, destination.pod_index, protocol, port);
  }
  if (source.is_pod) {
    const HotRecord& src = s.hot_records[source.pod_index];
    return src.side[kEgress] == nullptr ||
           EngineState::SideAllows(src.side[kEgress], protocol, port,
                                   s.ExternalPeerClass(destination.address));
  }
  if (destination.is_pod) {
    const HotRecord& dst = s.hot_records[destination.pod_index];
    return dst.side[kIngress] == nullptr ||
           EngineState::SideAllows(dst.side[kIngress], protocol, port,
                                   s.ExternalPeerClass(source.address));
  }
  return true;
}

bool Engine::AllowedPacket(const IpAddress& source, const IpAddress& destination,
                           Protocol protocol, uint16_t port) const {
  const EngineState& s = *state_;
  const uint64_t* word;
  uint32_t shift;
  if (const internal::VerdictBits* bits = s.bits.get();
      bits != nullptr &&
      DirectPairWord(s, *bits, source, destination, protocol, port, &word, &shift)) {
    return (*word >> shift) & 1;
  }
  // The address index carries each pod address's bits row, sides and peer class (for the
  // address's family, which is the packet's): no record or target class lookup on this path.
  return PacketAllowed(s, s.pod_by_ip->Find(source), s.pod_by_ip->Find(destination), source,
                       destination, protocol, port);
}

void Engine::AllowedBatch(absl::Span<const PodQuery> queries, absl::Span<uint8_t> out) const {
  const EngineState& s = *state_;
  const size_t n = std::min(queries.size(), out.size());
  const auto& records = s.hot_records;
  const bool allow_self = s.options.evaluation.always_allow_self;
  if (const internal::VerdictBits* bits = s.bits.get();
      bits != nullptr && bits->pairs.classes > 0) {
    const internal::PairMatrix& m = bits->pairs;
    const auto& pair_of = s.pair_of;
    // (Locals, not members: the output bytes may alias anything, and each write would make
    // the compiler load the members again. The queries' raw pointer: Span's operator[] is
    // bounds-checked in this build, a compare and a branch a flow.)
    const uint64_t plane_bits = uint64_t{m.plane_words} * 64, row_bits = uint64_t{m.row_words} * 64;
    const uint8_t* const port_class = bits->port_class.data();
    const PodQuery* const qs = queries.data();
    // One instance per always_allow_self value: the self test only where it can answer.
    auto run = [&](auto self_allowed) NP_ALWAYS_INLINE {
    PipelineThroughMatrix(
        m, n, out.data(),
        [&](size_t j) NP_ALWAYS_INLINE {
          const PodQuery& q = qs[j];
          const uint32_t a = pair_of[q.source], b = pair_of[q.destination];
          // Bit 15: kNoPair's, no pair id's (PairMatrix::kMaxClasses).
          uint64_t rare = (a | b) >> 15;
          if constexpr (decltype(self_allowed)::value) rare |= q.source == q.destination;
          const uint64_t bit = port_class[PortClassBase(q.protocol) + q.port] * plane_bits +
                               uint64_t{a} * row_bits + b;
          return Located{bit & (rare - 1), rare};
        },
        [&](size_t k) {
          const PodQuery& q = qs[k];
          return Allowed(q.source, q.destination, q.protocol, q.port);
        });
    };
    allow_self ? run(std::true_type()) : run(std::false_type());
    return;
  }
  if (const internal::VerdictBits* bits = s.bits.get(); bits != nullptr) {
    AnswerInBlocks(n, out.data(), [&](size_t i, PlannedFlow& planned) {
      const PodQuery& q = queries[i];
      if (allow_self && q.source == q.destination) {
        planned.Known(true);
        return;
      }
      if (PairWord(s, *bits, q.source, q.destination, q.protocol, q.port, &planned.words[0],
                   &planned.shift[0])) {
        planned.Once();
        return;
      }
      const HotRecord& src = records[q.source];
      const HotRecord& dst = records[q.destination];
      const int f = FlowFamilyIndex(src, dst);
      if (BitWords(*bits, src.bits_row, src.peer[f], dst.bits_row, dst.peer[f],
                          bits->PortClassOffset(q.protocol, q.port), planned.words)) {
        planned.shift[0] = dst.peer[f] & 63;
        planned.shift[1] = src.peer[f] & 63;
      } else {
        planned.Known(ExactAllow(src, dst, q.protocol, q.port));
      }
    });
    return;
  }
  // Without the bits (budget 0): a software pipeline over the flows, for the exact path's
  // chain of dependent reads (record, then the side's lines): while flow i is answered, flow
  // i + kSideAhead's records (asked for kRecordAhead - kSideAhead flows ago) give its sides'
  // addresses to ask for, and flow i + kRecordAhead's records are asked for. Each flow is
  // then answered by the by-pod code with its lines in cache. Why one rolling loop and not
  // passes over groups of flows (the form before it: records, then intervals and peer words,
  // then the answers, each in its own pass over 16 flows): on a machine whose L2 holds the
  // tables (bench/RESULTS.md, issue 10, 2026-12-01 15:00) the passes' bookkeeping and their
  // branches cost more than the misses they hid — a chain of three or four reads per flow,
  // where the bits' is one.
  constexpr size_t kSideAhead = 8, kRecordAhead = 16;
  for (size_t i = 0; i < n; ++i) {
    if (i + kRecordAhead < n) {
      __builtin_prefetch(&records[queries[i + kRecordAhead].source]);
      __builtin_prefetch(&records[queries[i + kRecordAhead].destination]);
    }
    if (i + kSideAhead < n) {
      EngineState::PrefetchSide(records[queries[i + kSideAhead].source].side[kEgress]);
      EngineState::PrefetchSide(records[queries[i + kSideAhead].destination].side[kIngress]);
    }
    const PodQuery& q = queries[i];
    out[i] = ((allow_self && q.source == q.destination) ||
              RecordsAllow(records[q.source], records[q.destination], q.protocol, q.port))
                 ? 1
                 : 0;
  }
}

void Engine::AllowedBatch(absl::Span<const PacketQuery> queries, absl::Span<uint8_t> out) const {
  const EngineState& s = *state_;
  const internal::IpIndex& index = *s.pod_by_ip;
  const size_t n = std::min(queries.size(), out.size());
  const internal::VerdictBits* bits = s.bits.get();
  const bool allow_self = s.options.evaluation.always_allow_self;
  if (bits == nullptr) {
    for (size_t i = 0; i < n; ++i) {
      const PacketQuery& q = queries[i];
      out[i] = PacketAllowed(s, index.Find(q.source), index.Find(q.destination), q.source,
                             q.destination, q.protocol, q.port);
    }
    return;
  }
  if (const internal::PairMatrix& m = bits->pairs; m.classes > 0 && s.pair_at.size() > 0) {
    // As the by-pod pipeline, with the direct table's entries for the pair slots. An
    // address off the table (IPv6, outside its range) reads entry 0 and is rare.
    const auto& pair_at = s.pair_at;
    const uint64_t plane_bits = uint64_t{m.plane_words} * 64, row_bits = uint64_t{m.row_words} * 64;
    const uint8_t* const port_class = bits->port_class.data();
    const uint32_t base = m.v4_base, size = static_cast<uint32_t>(pair_at.size());
    const PacketQuery* const qs = queries.data();
    auto run = [&](auto self_allowed) NP_ALWAYS_INLINE {
    PipelineThroughMatrix(
        m, n, out.data(),
        [&](size_t j) NP_ALWAYS_INLINE {
          const PacketQuery& q = qs[j];
          const uint32_t oa = q.source.v4() - base, ob = q.destination.v4() - base;
          const uint32_t on_table =
              q.source.is_v4() & q.destination.is_v4() & (oa < size) & (ob < size);
          // Entry 0 for a flow off the table: a mask, not a select (GCC made it a branch).
          const uint32_t keep = 0u - on_table;
          const uint32_t a = pair_at[oa & keep], b = pair_at[ob & keep];
          uint64_t rare = ((a | b) >> 15) | (on_table ^ 1);
          if constexpr (decltype(self_allowed)::value) rare |= oa == ob;
          const uint64_t bit = port_class[PortClassBase(q.protocol) + q.port] * plane_bits +
                               uint64_t{a} * row_bits + b;
          return Located{bit & (rare - 1), rare};
        },
        [&](size_t k) {
          const PacketQuery& q = qs[k];
          return AllowedPacket(q.source, q.destination, q.protocol, q.port);
        });
    };
    allow_self ? run(std::true_type()) : run(std::false_type());
    return;
  }
  // As the by-pod batch, with the two index entries for the records.
  AnswerInBlocks(n, out.data(), [&](size_t i, PlannedFlow& planned) {
    const PacketQuery& q = queries[i];
    if (DirectPairWord(s, *bits, q.source, q.destination, q.protocol, q.port, &planned.words[0],
                       &planned.shift[0])) {
      planned.Once();
      return;
    }
    const internal::PacketEntry* src = index.Find(q.source);
    const internal::PacketEntry* dst = index.Find(q.destination);
    if (src != nullptr && dst != nullptr && src->pod != dst->pod && q.source.is_v4() &&
        q.destination.is_v4() &&
        PairWord(s, *bits, src->pod, dst->pod, q.protocol, q.port, &planned.words[0],
                 &planned.shift[0])) {
      planned.Once();
      return;
    }
    if (src != nullptr && dst != nullptr && src->pod != dst->pod &&
        BitWords(*bits, src->bits_row, src->peer, dst->bits_row, dst->peer,
                 bits->PortClassOffset(q.protocol, q.port), planned.words)) {
      planned.shift[0] = dst->peer & 63;
      planned.shift[1] = src->peer & 63;
      return;
    }
    planned.Known(PacketAllowed(s, src, dst, q.source, q.destination, q.protocol, q.port));
  });
}

Verdict Engine::Explain(const Endpoint& source, const Endpoint& destination, Protocol protocol,
                        uint16_t port) const {
  AddressFamily family;
  if (!source.is_pod) {
    family = source.address.family();
  } else if (!destination.is_pod) {
    family = destination.address.family();
  } else {
    const PodRecord& a = state_->records[source.pod_index];
    const PodRecord& b = state_->records[destination.pod_index];
    family = (a.peer[0] != kNone && b.peer[0] != kNone)   ? AddressFamily::kIPv4
             : (a.peer[1] != kNone && b.peer[1] != kNone) ? AddressFamily::kIPv6
                                                          : AddressFamily::kNone;
  }
  return state_->Explain(source, destination, protocol, port, family);
}

Verdict Engine::ExplainPacket(const IpAddress& source, const IpAddress& destination,
                              Protocol protocol, uint16_t port) const {
  auto resolve = [&](const IpAddress& a) {
    std::optional<uint32_t> pod = state_->FindPodByIp(a);
    return pod ? Endpoint::Pod(static_cast<int>(*pod)) : Endpoint::External(a);
  };
  return state_->Explain(resolve(source), resolve(destination), protocol, port,
                         source.family());
}

Engine::Stats Engine::stats() const {
  const EngineState& s = *state_;
  Stats stats;
  stats.pods = s.live_pods;
  stats.policies = s.live_policies;
  stats.namespaces = s.namespaces.size();
  for (uint32_t t = 0; t < s.target_classes.size(); ++t) {
    if (s.target_classes[t].pods > 0) stats.target_classes++;
  }
  stats.peer_classes = s.peer_classes.size();
  stats.peer_selectors = s.selector_by_key.size();
  stats.index_bytes = s.IndexBytes();
  if (s.bits != nullptr) {
    stats.verdict_bits_bytes = (s.bits->word_count + s.bits->pairs.word_count) * sizeof(uint64_t);
    for (uint32_t t = 0; t < s.target_classes.size(); ++t) {
      if (s.target_classes[t].pods > 0 && s.BitsRow(t) != kNone) stats.verdict_bits_classes++;
    }
  }
  return stats;
}

const EngineOptions& Engine::options() const { return state_->options; }

absl::StatusOr<Cluster> Engine::ToCluster() const {
  const EngineState& s = *state_;
  ClusterObjects objects;
  s.namespaces.ForEach([&](const std::string&, const auto& ns) {
    if (ns->object != nullptr) objects.namespaces.push_back(*ns->object);
  });
  for (uint32_t p = 0; p < s.pods.size(); ++p) {
    if (s.pods[p].state != nullptr) objects.pods.push_back(*s.pods[p].state->object);
  }
  s.left_out_pods.ForEach([&](const std::string&, const auto& pod) {
    objects.pods.push_back(*pod);
  });
  for (uint32_t p = 0; p < s.policies.size(); ++p) {
    if (s.policies[p] != nullptr) objects.policies.push_back(*s.policies[p]->object);
  }
  if (s.tier_objects != nullptr) {
    objects.admin_network_policies = s.tier_objects->admin_network_policies;
    objects.baseline_admin_network_policies = s.tier_objects->baseline_admin_network_policies;
    objects.cluster_network_policies = s.tier_objects->cluster_network_policies;
    objects.nodes = s.tier_objects->nodes;
  }
  return Cluster::Create(std::move(objects));
}

// ----------------------------------------------------------------------- LiveEngine

LiveEngine::LiveEngine(std::shared_ptr<const Engine> initial)
    : current_(initial.get()), current_owner_(std::move(initial)) {
  for (int i = 0; i < kMaxReaders; ++i) {
    hazards_[i].store(nullptr);
    slot_used_[i].store(false);
  }
}

LiveEngine::~LiveEngine() = default;

void LiveEngine::Publish(std::shared_ptr<const Engine> next) {
  std::lock_guard<std::mutex> lock(writer_mutex_);
  current_.store(next.get(), std::memory_order_seq_cst);
  retired_.push_back(std::move(current_owner_));
  current_owner_ = std::move(next);
  ReclaimLocked();
}

absl::Status LiveEngine::Apply(absl::Span<const Change> changes,
                               std::vector<Diagnostic>* diagnostics) {
  std::shared_ptr<const Engine> base = Current();
  absl::StatusOr<std::shared_ptr<const Engine>> next = base->Apply(changes, diagnostics);
  if (!next.ok()) return next.status();
  // Writers serialize on the mutex; a writer that raced with another rebuilds on top of it.
  std::lock_guard<std::mutex> lock(writer_mutex_);
  if (current_owner_ != base) {
    next = current_owner_->Apply(changes, diagnostics);
    if (!next.ok()) return next.status();
  }
  // Nothing changed (Engine::Apply gave its own snapshot back): nothing to publish.
  if (*next == current_owner_) return absl::OkStatus();
  current_.store(next->get(), std::memory_order_seq_cst);
  retired_.push_back(std::move(current_owner_));
  current_owner_ = *std::move(next);
  ReclaimLocked();
  return absl::OkStatus();
}

std::shared_ptr<const Engine> LiveEngine::Current() const {
  std::lock_guard<std::mutex> lock(writer_mutex_);
  return current_owner_;
}

void LiveEngine::ReclaimLocked() {
  // A retired snapshot is freed once no Reader's hazard slot points at it. Readers that
  // pinned it keep it alive until their next Pin(); it is reclaimed at a later publish.
  std::vector<std::shared_ptr<const Engine>> keep;
  for (auto& engine : retired_) {
    bool in_use = false;
    for (int i = 0; i < kMaxReaders && !in_use; ++i) {
      in_use = hazards_[i].load(std::memory_order_seq_cst) == engine.get();
    }
    if (in_use) keep.push_back(std::move(engine));
  }
  retired_ = std::move(keep);
}

LiveEngine::Reader::Reader(LiveEngine& live) : live_(live), slot_(-1) {
  for (int i = 0; i < kMaxReaders; ++i) {
    bool expected = false;
    if (live_.slot_used_[i].compare_exchange_strong(expected, true)) {
      slot_ = i;
      return;
    }
  }
  // More than kMaxReaders readers at once is a programming error; fail loudly but safely:
  // this reader then always takes the slow, locked path in Pin().
}

LiveEngine::Reader::~Reader() {
  if (slot_ >= 0) {
    live_.hazards_[slot_].store(nullptr, std::memory_order_seq_cst);
    live_.slot_used_[slot_].store(false, std::memory_order_seq_cst);
  }
}

const Engine& LiveEngine::Reader::Pin() {
  if (slot_ < 0) {
    // No hazard slot: hold the snapshot through a shared_ptr kept in a thread_local.
    thread_local std::shared_ptr<const Engine> held;
    held = live_.Current();
    return *held;
  }
  const Engine* p = live_.current_.load(std::memory_order_seq_cst);
  while (true) {
    live_.hazards_[slot_].store(p, std::memory_order_seq_cst);
    // Re-check: if the writer swapped in between, it may not have seen our hazard.
    const Engine* q = live_.current_.load(std::memory_order_seq_cst);
    if (q == p) return *p;
    p = q;
  }
}

}  // namespace np
