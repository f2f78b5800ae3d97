#pragma once
// A map split into shards, each behind its own lock, chosen by node id: the
// session's books are written by every serving thread (an entry reply, a
// FORGET, an open), and shards keep those threads from sharing one lock.
#include <array>
#include <cstdint>
#include <mutex>

#include "../types.hpp"

namespace fusexx::detail {

// Adds to a count the kernel holds (lookups, opens), stopping at the largest
// value: a restored snapshot may name one node or handle in several records,
// and counts that wrapped to 0 would drop something the kernel still uses
// (found by tests/fuzz/snapshot). The kernel's own counts are 64 bits and
// never come near it.
constexpr void add_count(std::uint64_t& total, std::uint64_t more) noexcept {
  total = more > UINT64_MAX - total ? UINT64_MAX : total + more;
}

template <class Map, std::size_t Count = 16>
class sharded {
 public:
  // Runs f(map) under the lock of the shard `node` belongs to.
  template <class F>
  decltype(auto) with(ino node, F&& f) {
    shard& s = shards_[node % Count];
    std::lock_guard lock(s.mutex);
    return std::forward<F>(f)(s.map);
  }
  template <class F>
  decltype(auto) with(ino node, F&& f) const {
    const shard& s = shards_[node % Count];
    std::lock_guard lock(s.mutex);
    return std::forward<F>(f)(s.map);
  }
  // Runs f(map) on every shard in turn, each under its lock.
  template <class F>
  void each(F&& f) {
    for (shard& s : shards_) {
      std::lock_guard lock(s.mutex);
      f(s.map);
    }
  }
  template <class F>
  void each(F&& f) const {
    for (const shard& s : shards_) {
      std::lock_guard lock(s.mutex);
      f(s.map);
    }
  }

 private:
  struct shard {
    mutable std::mutex mutex;
    Map map;
  };
  std::array<shard, Count> shards_;
};

}  // namespace fusexx::detail
