#pragma once
// Which in-flight requests the kernel has interrupted. FUSE_INTERRUPT names a
// request by its unique id; a handler asks request::interrupted(). The common
// case (no interrupts pending) costs one relaxed atomic load, no lock.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_set>

namespace fusexx {

class interrupt_registry {
 public:
  void add(std::uint64_t unique) {
    std::lock_guard lock(mutex_);
    // An INTERRUPT can race with its request's reply and arrive after it; its
    // entry would then stay forever. The kernel's ids only grow, so entries far
    // older than the newest cannot belong to a live request.
    if (uniques_.size() >= stale_limit) {
      std::erase_if(uniques_, [&](std::uint64_t u) { return u + stale_window < unique; });
      count_.store(uniques_.size(), std::memory_order_release);
    }
    if (uniques_.insert(unique).second) count_.fetch_add(1, std::memory_order_release);
  }
  // Called when a request is answered, so its id can be reused by the kernel.
  void finished(std::uint64_t unique) {
    if (count_.load(std::memory_order_acquire) == 0) return;
    std::lock_guard lock(mutex_);
    if (uniques_.erase(unique)) count_.fetch_sub(1, std::memory_order_release);
  }
  bool contains(std::uint64_t unique) const {
    if (count_.load(std::memory_order_acquire) == 0) return false;
    std::lock_guard lock(mutex_);
    return uniques_.contains(unique);
  }
  std::size_t size() const { return count_.load(std::memory_order_acquire); }

 private:
  static constexpr std::size_t stale_limit = 4096;
  static constexpr std::uint64_t stale_window = 1u << 22;
  mutable std::mutex mutex_;
  std::unordered_set<std::uint64_t> uniques_;
  std::atomic<std::size_t> count_{0};
};

}  // namespace fusexx
