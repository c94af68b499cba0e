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
  const T& operator[](size_t i) const { return chunks_[i >> kChunkBits]->items[i & (kChunkSize - 1)]; }

  // Writable access for the writer of `generation`.
  T& Mutable(size_t i, uint64_t generation) {
    std::shared_ptr<Chunk>& chunk = chunks_[i >> kChunkBits];
    if (chunk->generation != generation) {
      auto copy = std::make_shared<Chunk>(*chunk);
      copy->generation = generation;
      chunk = std::move(copy);
    }
    return chunk->items[i & (kChunkSize - 1)];
  }

  void PushBack(T value, uint64_t generation) {
    if ((size_ & (kChunkSize - 1)) == 0) {
      auto chunk = std::make_shared<Chunk>();
      chunk->generation = generation;
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
  size_t size_ = 0;
};

// A hash map split into shards, each copied on write.
template <typename K, typename V, typename Hash = absl::Hash<K>, typename Eq = std::equal_to<>,
          int kShardBits = 6>
class CowMap {
 public:
  using Map = absl::flat_hash_map<K, V, Hash, Eq>;
  static constexpr size_t kShards = size_t{1} << kShardBits;

  CowMap() {
    for (auto& s : shards_) s = std::make_shared<Shard>();
  }

  template <typename Key>
  const V* Find(const Key& key) const {
    const Map& map = shards_[ShardOf(key)]->map;
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
    if (shards_[s]->map.find(key) == shards_[s]->map.end()) return false;
    MutableShard(s, generation).erase(key);
    return true;
  }

  size_t size() const {
    size_t n = 0;
    for (const auto& s : shards_) n += s->map.size();
    return n;
  }

  template <typename F>
  void ForEach(F&& f) const {
    for (const auto& s : shards_) {
      for (const auto& [k, v] : s->map) f(k, v);
    }
  }

  size_t ApproximateBytes() const {
    size_t n = 0;
    for (const auto& s : shards_) n += s->map.capacity() * (sizeof(K) + sizeof(V) + 1);
    return n;
  }

 private:
  struct Shard {
    uint64_t generation = 0;
    Map map;
  };
  template <typename Key>
  static size_t ShardOf(const Key& key) {
    // The high bits: flat_hash_map uses the low ones inside each shard.
    return static_cast<size_t>(Hash{}(key) >> (64 - kShardBits));
  }
  Map& MutableShard(size_t s, uint64_t generation) {
    if (shards_[s]->generation != generation) {
      auto copy = std::make_shared<Shard>(*shards_[s]);
      copy->generation = generation;
      shards_[s] = std::move(copy);
    }
    return shards_[s]->map;
  }
  std::array<std::shared_ptr<Shard>, kShards> shards_;
};

// Transparent hashing for std::string keys looked up by absl::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(absl::string_view s) const { return absl::Hash<absl::string_view>{}(s); }
};

}  // namespace np::internal

#endif  // NP_INTERNAL_COW_H_
