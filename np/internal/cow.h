// Copy-on-write containers for engine snapshots. A snapshot copies them in time
// proportional to the number of chunks/shards (not elements); the writer building the next
// snapshot clones only the chunk or shard it modifies. Each chunk remembers the generation
// (update batch) that created it: a chunk of an older generation may be shared with a
// published snapshot and is never written, only cloned.
//
// Thread safety: const access is safe from any thread; mutation only by the single writer
// that owns the snapshot under construction (before it is published).
#ifndef NP_INTERNAL_COW_H_
#define NP_INTERNAL_COW_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"

namespace np::internal {

template <typename T, int kChunkBits = 8>
class CowVector {
 public:
  static constexpr size_t kChunkSize = size_t{1} << kChunkBits;

  size_t size() const { return size_; }
  const T& operator[](size_t i) const { return items_[i >> kChunkBits][i & (kChunkSize - 1)]; }

  // Writable access for the writer of `generation`.
  T& Mutable(size_t i, uint64_t generation) {
    std::shared_ptr<Chunk>& chunk = chunks_[i >> kChunkBits];
    if (chunk->generation != generation) {
      auto copy = std::make_shared<Chunk>(*chunk);
      copy->generation = generation;
      chunk = std::move(copy);
      items_[i >> kChunkBits] = chunk->items.data();
    }
    return chunk->items[i & (kChunkSize - 1)];
  }

  void PushBack(T value, uint64_t generation) {
    if ((size_ & (kChunkSize - 1)) == 0) {
      auto chunk = std::make_shared<Chunk>();
      chunk->generation = generation;
      items_.push_back(chunk->items.data());
      chunks_.push_back(std::move(chunk));
    }
    size_t i = size_++;
    Mutable(i, generation) = std::move(value);
  }

  size_t chunk_count() const { return chunks_.size(); }
  static constexpr size_t chunk_bytes() { return sizeof(T) * kChunkSize; }

 private:
  struct Chunk {
    uint64_t generation = 0;
    std::array<T, kChunkSize> items{};
  };
  std::vector<std::shared_ptr<Chunk>> chunks_;
  // chunks_[c]->items.data(), so that a read is two loads (this array, the item), with the
  // pointer array half the size of chunks_ (it stays in L1 on verdict paths).
  std::vector<T*> items_;
  size_t size_ = 0;
};

// A hash map split into shards, each copied on write. The shards sit in groups, each group
// shared between snapshots like a shard: a snapshot copies the group pointers (a few), a
// write clones one group's shard pointers and the one shard. Many small shards keep that
// clone small in big maps (a flat_hash_map copy rehashes every key) while the snapshot copy
// stays a handful of pointers; size the shards to the map (kShardBits).
template <typename K, typename V, typename Hash = absl::Hash<K>, typename Eq = std::equal_to<>,
          int kShardBits = 6>
class CowMap {
 public:
  using Map = absl::flat_hash_map<K, V, Hash, Eq>;
  static constexpr int kGroupBits = kShardBits / 2;  // the rest index a shard in its group
  static constexpr size_t kGroups = size_t{1} << kGroupBits;
  static constexpr size_t kShardsPerGroup = size_t{1} << (kShardBits - kGroupBits);

  CowMap() {
    // Every shard starts as one shared empty map, every group as one shared group of them.
    auto empty = std::make_shared<Shard>();
    auto group = std::make_shared<Group>();
    for (auto& s : group->shards) s = empty;
    for (auto& g : groups_) g = group;
  }

  template <typename Key>
  const V* Find(const Key& key) const {
    const Map& map = ShardAt(ShardOf(key)).map;
    auto it = map.find(key);
    return it == map.end() ? nullptr : &it->second;
  }

  void Set(K key, V value, uint64_t generation) {
    size_t s = ShardOf(key);
    MutableShard(s, generation)[std::move(key)] = std::move(value);
  }

  template <typename Key>
  bool Erase(const Key& key, uint64_t generation) {
    size_t s = ShardOf(key);
    const Map& map = ShardAt(s).map;
    if (map.find(key) == map.end()) return false;
    MutableShard(s, generation).erase(key);
    return true;
  }

  size_t size() const {
    size_t n = 0;
    ForEachShard([&](const Map& map) { n += map.size(); });
    return n;
  }

  template <typename F>
  void ForEach(F&& f) const {
    ForEachShard([&](const Map& map) {
      for (const auto& [k, v] : map) f(k, v);
    });
  }

  size_t ApproximateBytes() const {
    size_t n = 0;
    ForEachShard([&](const Map& map) { n += map.capacity() * (sizeof(K) + sizeof(V) + 1); });
    return n;
  }

 private:
  // The generation of the shared empty shards and groups a map starts with: no writer's,
  // so the first write to each clones it.
  static constexpr uint64_t kNoWriter = ~uint64_t{0};
  struct Shard {
    uint64_t generation = kNoWriter;
    Map map;
  };
  struct Group {
    uint64_t generation = kNoWriter;
    std::array<std::shared_ptr<Shard>, kShardsPerGroup> shards;
  };
  template <typename Key>
  static size_t ShardOf(const Key& key) {
    // The high bits: flat_hash_map uses the low ones inside each shard.
    return static_cast<size_t>(Hash{}(key) >> (64 - kShardBits));
  }
  const Shard& ShardAt(size_t s) const {
    return *groups_[s / kShardsPerGroup]->shards[s % kShardsPerGroup];
  }
  template <typename F>
  void ForEachShard(F&& f) const {
    for (const auto& g : groups_) {
      for (const auto& s : g->shards) f(s->map);
    }
  }
  Map& MutableShard(size_t s, uint64_t generation) {
    std::shared_ptr<Group>& group = groups_[s / kShardsPerGroup];
    if (group->generation != generation) {
      auto copy = std::make_shared<Group>(*group);
      copy->generation = generation;
      group = std::move(copy);
    }
    std::shared_ptr<Shard>& shard = group->shards[s % kShardsPerGroup];
    if (shard->generation != generation) {
      auto copy = std::make_shared<Shard>(*shard);
      copy->generation = generation;
      shard = std::move(copy);
    }
    return shard->map;
  }
  std::array<std::shared_ptr<Group>, kGroups> groups_;
};

// Transparent hashing for std::string keys looked up by absl::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(absl::string_view s) const { return absl::Hash<absl::string_view>{}(s); }
};

}  // namespace np::internal

#endif  // NP_INTERNAL_COW_H_
