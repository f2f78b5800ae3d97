#pragma once
// A map split into shards, each behind its own lock, chosen by node id: the
// session's books are written by every serving thread (an entry reply, a
// FORGET, an open), and shards keep those threads from sharing one lock.
#include <array>
#include <cstdint>
#include <mutex>

#include "../types.hpp"

namespace fusexx::detail {

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
