// Copy-on-write containers for engine snapshots. Copying one (a snapshot copies them all) is
// one reference count: the container's spine — its array of chunk or shard-group pointers —
// is shared, like the chunks, until a writer changes it. The writer building the next
// snapshot clones the spine of each container it writes (once per batch), then only the
// chunk or shard it modifies. Each spine, chunk, group and shard remembers the generation
// (update batch) that created it: one of an older generation may be shared with a published
// snapshot and is never written, only cloned.
//
// Why spines (issue 13): a pod event writes a handful of the state's ~40 containers, but a
// state copy that copied every container's chunk pointers took a reference on each of some
// hundreds of chunks (and the old snapshot's release gave them back): cold cache lines, about
// half of a pod event's LiveEngine::Apply at 1,000 pods (bench/RESULTS.md). Now a state copy
// is ~40 reference counts and a batch pays for the spines of what it writes.
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

// Chunks are owned in groups of kGroupSize, so that cloning a spine takes a reference per
// group, not per chunk (a 100k-pod state's pod vectors have ~400 chunks each: their
// reference counts were a tenth of a pod update, BM_UpdatePodNewLabel); the first write to a
// group clones it. Reads never see the groups: `items` is still one flat array.
template <typename T, int kChunkBits = 8>
class CowVector {
 public:
  static constexpr size_t kChunkSize = size_t{1} << kChunkBits;
  static constexpr int kGroupBits = 5;
  static constexpr size_t kGroupSize = size_t{1} << kGroupBits;

  size_t size() const { return size_; }
  const T& operator[](size_t i) const { return items_[i >> kChunkBits][i & (kChunkSize - 1)]; }

  // Writable access for the writer of `generation`.
  T& Mutable(size_t i, uint64_t generation) {
    Spine& spine = MutableSpine(generation);
    const size_t c = i >> kChunkBits;
    std::shared_ptr<Chunk>& chunk = MutableGroup(spine, c >> kGroupBits, generation)
                                        .chunks[c & (kGroupSize - 1)];
    if (chunk->generation != generation) {
      auto copy = std::make_shared<Chunk>(*chunk);
      copy->generation = generation;
      chunk = std::move(copy);
      spine.items[c] = chunk->items.data();
    }
    return chunk->items[i & (kChunkSize - 1)];
  }

  void PushBack(T value, uint64_t generation) {
    if ((size_ & (kChunkSize - 1)) == 0) {
      Spine& spine = MutableSpine(generation);
      const size_t c = size_ >> kChunkBits;
      if ((c & (kGroupSize - 1)) == 0) {
        auto group = std::make_shared<Group>();
        group->generation = generation;
        spine.groups.push_back(std::move(group));
      }
      auto chunk = std::make_shared<Chunk>();
      chunk->generation = generation;
      spine.items.push_back(chunk->items.data());
      MutableGroup(spine, c >> kGroupBits, generation).chunks[c & (kGroupSize - 1)] =
          std::move(chunk);
      items_ = spine.items.data();  // (push_back may have moved the array)
    }
    size_t i = size_++;
    Mutable(i, generation) = std::move(value);
  }

  size_t chunk_count() const { return spine_ == nullptr ? 0 : spine_->items.size(); }
  static constexpr size_t chunk_bytes() { return sizeof(T) * kChunkSize; }

 private:
  struct Chunk {
    uint64_t generation = 0;
    std::array<T, kChunkSize> items{};
  };
  struct Group {
    uint64_t generation = 0;
    std::array<std::shared_ptr<Chunk>, kGroupSize> chunks;  // null past the last chunk
  };
  struct Spine {
    uint64_t generation = 0;
    std::vector<std::shared_ptr<Group>> groups;
    // The chunks' items.data(), so that a read is two loads (this array, the item), with the
    // pointer array half the size of shared_ptrs (it stays in L1 on verdict paths).
    std::vector<T*> items;
  };
  // This writer's spine: the shared one cloned at the batch's first write.
  Spine& MutableSpine(uint64_t generation) {
    if (spine_ == nullptr) {
      spine_ = std::make_shared<Spine>();
      spine_->generation = generation;
    } else if (spine_->generation != generation) {
      auto copy = std::make_shared<Spine>(*spine_);
      copy->generation = generation;
      spine_ = std::move(copy);
      items_ = spine_->items.data();
    }
    return *spine_;
  }
  // Group `g` of this writer's spine, cloned at its first write in the batch.
  static Group& MutableGroup(Spine& spine, size_t g, uint64_t generation) {
    std::shared_ptr<Group>& group = spine.groups[g];
    if (group->generation != generation) {
      auto copy = std::make_shared<Group>(*group);
      copy->generation = generation;
      group = std::move(copy);
    }
    return *group;
  }
  std::shared_ptr<Spine> spine_;
  T* const* items_ = nullptr;  // spine_->items.data(): a read does not go through spine_
  size_t size_ = 0;
};

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
    spine_ = std::make_shared<Spine>();
    for (auto& g : spine_->groups) g = group;
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
  // The generation of the shared empty shards, groups and spine a map starts with: no
  // writer's, so the first write to each clones it.
  static constexpr uint64_t kNoWriter = ~uint64_t{0};
  struct Shard {
    uint64_t generation = kNoWriter;
    Map map;
  };
  struct Group {
    uint64_t generation = kNoWriter;
    std::array<std::shared_ptr<Shard>, kShardsPerGroup> shards;
  };
  struct Spine {
    uint64_t generation = kNoWriter;
    std::array<std::shared_ptr<Group>, kGroups> groups;
  };
  template <typename Key>
  static size_t ShardOf(const Key& key) {
    // The high bits: flat_hash_map uses the low ones inside each shard.
    return static_cast<size_t>(Hash{}(key) >> (64 - kShardBits));
  }
  const Shard& ShardAt(size_t s) const {
    return *spine_->groups[s / kShardsPerGroup]->shards[s % kShardsPerGroup];
  }
  template <typename F>
  void ForEachShard(F&& f) const {
    for (const auto& g : spine_->groups) {
      for (const auto& s : g->shards) f(s->map);
    }
  }
  // Clones, where this writer does not own them yet, the spine, the shard's group and the
  // shard.
  Map& MutableShard(size_t s, uint64_t generation) {
    if (spine_->generation != generation) {
      auto copy = std::make_shared<Spine>(*spine_);
      copy->generation = generation;
      spine_ = std::move(copy);
    }
    std::shared_ptr<Group>& group = spine_->groups[s / kShardsPerGroup];
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
  std::shared_ptr<Spine> spine_;
};

// Transparent hashing for std::string keys looked up by absl::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(absl::string_view s) const { return absl::Hash<absl::string_view>{}(s); }
};

}  // namespace np::internal

#endif  // NP_INTERNAL_COW_H_
