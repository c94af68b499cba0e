// Address -> pod index for the packet path: open addressing with linear probing over flat
// arrays, so a lookup is one multiply and (usually) one cache line; sharded so that the next
// snapshot copies only the shards an update touches, each by memcpy, never a rehash.
#ifndef NP_INTERNAL_IP_INDEX_H_
#define NP_INTERNAL_IP_INDEX_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "np/types.h"

namespace np::internal {

// What the packet path needs about the pod owning an address, stored in the index itself so
// that a packet verdict does not chase the pod's record: the pod, its block in the verdict
// bits (as HotRecord::bits_row), the class's two sides as the exact path reads them
// (HotSides: null = that side allows everything) and its peer class for this address's
// family. With the bits row here a packet verdict between two pods is two slots -> two bit
// words, the same chain as by pod (record -> bit word); through the sides it was slot ->
// side line -> interval -> list (issue 10). Every field mirrors the owner's HotRecord: the
// batch that builds a snapshot rewrites the entries of the pods whose record it wrote
// (Batch::PublishHotArrays), Engine::Build after painting the bits
// (EngineState::MirrorHotRecord). (The target class that stood where bits_row is was read
// by nothing but the refresh that wrote it.)
// 32 bytes: an IPv4 slot is one entry (its key in `key4`), two per line.
struct PacketEntry {
  const uint64_t* side[2] = {nullptr, nullptr};  // by Direction
  uint32_t pod = 0xffffffffu;
  uint32_t bits_row = 0xffffffffu;  // 0xffffffff: the exact path (the sides)
  uint32_t peer = 0xffffffffu;
  uint32_t key4 = 0;  // IpTable's: an IPv4 slot's address (unused in IPv6 slots)
};
static_assert(sizeof(PacketEntry) == 32, "two IPv4 slots per line");

// One shard of the index: open addressing with linear probing over flat arrays.
class IpTable {
 public:
  struct alignas(32) Slot4 {  // aligned: no slot straddles two lines
    PacketEntry value;  // the key is value.key4
  };
  struct Slot6 {
    uint64_t hi = 0, lo = 0;
    PacketEntry value;
  };
  // Where the table's slots are, for IpIndex's flat directory (see there). An empty family
  // points at a one-slot empty table, so a probe needs no emptiness branch.
  struct View {
    const Slot4* v4;
    const Slot6* v6;
    uint32_t mask4 = 0, mask6 = 0;
  };
  View view() const {
    return View{v4_.empty() ? &kEmptySlot4 : v4_.data(), v6_.empty() ? &kEmptySlot6 : v6_.data(),
                v4_.empty() ? 0u : static_cast<uint32_t>(v4_.size() - 1),
                v6_.empty() ? 0u : static_cast<uint32_t>(v6_.size() - 1)};
  }
  static const PacketEntry* FindIn(const View& view, const IpAddress& a) {
    if (a.is_v4()) {
      for (size_t i = Hash4(a.v4()) & view.mask4;; i = (i + 1) & view.mask4) {
        const Slot4& s = view.v4[i];
        if (s.value.pod == kEmpty) return nullptr;
        if (s.value.key4 == a.v4()) return &s.value;
      }
    }
    for (size_t i = Hash6(a.hi(), a.lo()) & view.mask6;; i = (i + 1) & view.mask6) {
      const Slot6& s = view.v6[i];
      if (s.value.pod == kEmpty) return nullptr;
      if (s.hi == a.hi() && s.lo == a.lo()) return &s.value;
    }
  }
  const PacketEntry* Find(const IpAddress& a) const { return FindIn(view(), a); }
  // Asks for the line of the slot a probe for `a` reads first (AllowedBatch, ahead of Find).
  static void PrefetchIn(const View& view, const IpAddress& a) {
    if (a.is_v4()) {
      __builtin_prefetch(&view.v4[Hash4(a.v4()) & view.mask4]);
    } else {
      __builtin_prefetch(&view.v6[Hash6(a.hi(), a.lo()) & view.mask6]);
    }
  }

  void Set(const IpAddress& a, PacketEntry value) {
    if (a.is_v4()) {
      if ((count4_ + 1) * 2 > v4_.size()) Grow4();
      size_t mask = v4_.size() - 1;
      for (size_t i = Hash4(a.v4()) & mask;; i = (i + 1) & mask) {
        Slot4& s = v4_[i];
        if (s.value.pod == kEmpty) {
          s.value = value;
          s.value.key4 = a.v4();
          ++count4_;
          return;
        }
        if (s.value.key4 == a.v4()) {
          s.value = value;
          s.value.key4 = a.v4();
          return;
        }
      }
    }
    if ((count6_ + 1) * 2 > v6_.size()) Grow6();
    size_t mask = v6_.size() - 1;
    for (size_t i = Hash6(a.hi(), a.lo()) & mask;; i = (i + 1) & mask) {
      Slot6& s = v6_[i];
      if (s.value.pod == kEmpty) {
        s = Slot6{a.hi(), a.lo(), value};
        ++count6_;
        return;
      }
      if (s.hi == a.hi() && s.lo == a.lo()) {
        s.value = value;
        return;
      }
    }
  }

  // Linear-probing deletion by backward shift: no tombstones, lookups stay short.
  void Erase(const IpAddress& a) {
    if (a.is_v4()) {
      EraseIn(v4_, Hash4(a.v4()), [&](const Slot4& s) { return s.value.key4 == a.v4(); },
              [](const Slot4& s) { return Hash4(s.value.key4); });
      return;
    }
    EraseIn(v6_, Hash6(a.hi(), a.lo()),
            [&](const Slot6& s) { return s.hi == a.hi() && s.lo == a.lo(); },
            [](const Slot6& s) { return Hash6(s.hi, s.lo); });
  }

  size_t Bytes() const { return v4_.capacity() * sizeof(Slot4) + v6_.capacity() * sizeof(Slot6); }

 private:
  static constexpr uint32_t kEmpty = 0xffffffffu;
  static const Slot4 kEmptySlot4;
  static const Slot6 kEmptySlot6;
  static size_t Hash4(uint32_t k) { return (uint64_t{k} * 0x9E3779B97F4A7C15ull) >> 20; }
  static size_t Hash6(uint64_t hi, uint64_t lo) {
    return ((hi ^ (lo * 0xC2B2AE3D27D4EB4Full)) * 0x9E3779B97F4A7C15ull) >> 20;
  }

  template <typename Slot, typename Match, typename HashOf>
  void EraseIn(std::vector<Slot>& table, size_t hash, Match match, HashOf hash_of) {
    if (table.empty()) return;
    size_t mask = table.size() - 1;
    size_t i = hash & mask;
    while (true) {
      if (table[i].value.pod == kEmpty) return;
      if (match(table[i])) break;
      i = (i + 1) & mask;
    }
    size_t hole = i;
    for (size_t j = (hole + 1) & mask; table[j].value.pod != kEmpty; j = (j + 1) & mask) {
      size_t home = hash_of(table[j]) & mask;
      // Move j into the hole unless its home lies cyclically in (hole, j].
      bool home_after_hole = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
      if (!home_after_hole) {
        table[hole] = table[j];
        hole = j;
      }
    }
    table[hole] = Slot();
    if (&table == reinterpret_cast<void*>(&v4_)) {
      --count4_;
    } else {
      --count6_;
    }
  }

  void Grow4() {
    std::vector<Slot4> old = std::move(v4_);
    v4_.assign(old.empty() ? 16 : old.size() * 2, Slot4());
    count4_ = 0;
    for (const Slot4& s : old) {
      if (s.value.pod != kEmpty) Set(IpAddress::V4(s.value.key4), s.value);
    }
  }
  void Grow6() {
    std::vector<Slot6> old = std::move(v6_);
    v6_.assign(old.empty() ? 16 : old.size() * 2, Slot6());
    count6_ = 0;
    for (const Slot6& s : old) {
      if (s.value.pod != kEmpty) Set(IpAddress::V6(s.hi, s.lo), s.value);
    }
  }

  std::vector<Slot4> v4_;
  std::vector<Slot6> v6_;
  size_t count4_ = 0, count6_ = 0;
};
inline const IpTable::Slot4 IpTable::kEmptySlot4{};
inline const IpTable::Slot6 IpTable::kEmptySlot6{};

// The index split into shards by hash, each shared between snapshots until a batch writes
// to it: an update copies one shard (a memcpy), not the whole index.
//
// A lookup reads the shard's slots through `views_`, a flat directory of where each shard's
// arrays are, kept in this object: index -> directory entry -> slot. Through the shard's
// shared_ptr it would be index -> shard pointer -> IpTable's vector -> slot, two more
// dependent loads on the packet path's chain (issue 10: they showed as the gap between the
// by-packet and the by-pod verdict). Every writer goes through Mutable, which refreshes the
// entry after the write (a write may grow, i.e. move, the shard's arrays).
class IpIndex {
 public:
  // 128 shards: an update copies one shard per address it writes, 64 KB at 100k pods with
  // 32-byte slots (as 64 shards of 16-byte slots did before the sides moved in).
  static constexpr int kShardBits = 7;
  IpIndex() {
    for (size_t s = 0; s < kShards; ++s) {
      shards_[s] = std::make_shared<const IpTable>();
      views_[s].view = shards_[s]->view();
    }
  }
  const PacketEntry* Find(const IpAddress& a) const {
    return IpTable::FindIn(views_[ShardOf(a)].view, a);
  }
  // Asks for the directory entry a Find of `a` reads first.
  void Prefetch(const IpAddress& a) const { __builtin_prefetch(&views_[ShardOf(a)]); }
  // Asks for the slot line a Find of `a` reads first (reads the directory entry: ask for
  // that one earlier, or rely on the directory's 4 KB staying in L1).
  void PrefetchSlot(const IpAddress& a) const { IpTable::PrefetchIn(views_[ShardOf(a)].view, a); }
  // Writers: the shard is copied first unless this index already owns a private copy.
  void Set(const IpAddress& a, PacketEntry value) {
    Write(a, [&](IpTable& t) { t.Set(a, value); });
  }
  void Erase(const IpAddress& a) {
    Write(a, [&](IpTable& t) { t.Erase(a); });
  }
  // Forgets which shards this index owns: call on a copy before writing to it.
  void ReleaseOwnership() { owned_[0] = owned_[1] = 0; }
  size_t Bytes() const {
    size_t n = 0;
    for (const auto& s : shards_) n += s->Bytes();
    return n;
  }

 private:
  static constexpr size_t kShards = size_t{1} << kShardBits;
  // One line holds two entries; none straddles a line.
  struct alignas(32) Entry {
    IpTable::View view;
  };
  static size_t ShardOf(const IpAddress& a) {
    uint64_t h = a.is_v4() ? uint64_t{a.v4()} * 0xD6E8FEB86659FD93ull
                           : (a.hi() ^ a.lo()) * 0xD6E8FEB86659FD93ull;
    return static_cast<size_t>(h >> (64 - kShardBits));
  }
  template <typename F>
  void Write(const IpAddress& a, F&& write) {
    size_t s = ShardOf(a);
    const uint64_t bit = uint64_t{1} << (s & 63);
    if (!(owned_[s >> 6] & bit)) {
      shards_[s] = std::make_shared<const IpTable>(*shards_[s]);
      owned_[s >> 6] |= bit;
    }
    IpTable& table = const_cast<IpTable&>(*shards_[s]);
    write(table);
    views_[s].view = table.view();
  }
  Entry views_[kShards];  // views_[s] = shards_[s]->view(), always
  std::shared_ptr<const IpTable> shards_[kShards];
  uint64_t owned_[kShards / 64] = {0, 0};  // bit s: shards_[s] is this index's private copy
};

}  // namespace np::internal

#endif  // NP_INTERNAL_IP_INDEX_H_
