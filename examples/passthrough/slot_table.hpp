#pragma once
// Objects by id, for the ids the kernel keeps: node ids and file handles.
// An id is the object's slot, a small integer, so the hot path finds the
// object with two indexed loads and no lock; and, unlike an address, an id
// means the same in another process: a successor that takes the connection
// over (docs/restart.md) puts every object the kernel still knows back at
// its id (place()).
//
// Slots come in chunks that never move once made, so at() runs without a
// lock while add() and take() run on other threads. A freed id is used
// again (the kernel never uses an id it has forgotten or released). The
// directory of chunks is reserved zeroed and untouched (calloc of a large
// block maps zero pages), so a table costs what it holds, not its capacity:
// a few KiB for a few objects.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace passthrough {

template <class T>
class slot_table {
 public:
  static constexpr unsigned chunk_bits = 10;
  static constexpr std::uint64_t chunk_size = std::uint64_t{1} << chunk_bits;
  static constexpr std::uint64_t max_chunks = std::uint64_t{1} << 18;
  static constexpr std::uint64_t capacity = chunk_size * max_chunks;  // 2^28 objects

  // Ids below `first_id` are never handed out (reserved, e.g. the root's).
  explicit slot_table(std::uint64_t first_id = 0)
      : first_(first_id), next_(first_id), chunks_(static_cast<chunk**>(std::calloc(max_chunks, sizeof(chunk*)))) {
    if (!chunks_) throw std::bad_alloc();
  }
  slot_table(const slot_table&) = delete;
  slot_table& operator=(const slot_table&) = delete;
  ~slot_table() {
    for (std::uint64_t c = 0; c < chunks_in_use(); ++c) {
      chunk* k = chunks_[c];
      if (!k) continue;
      for (auto& slot : k->slots) delete slot.load(std::memory_order_relaxed);
      delete k;
    }
    std::free(chunks_);
  }

  // Takes `object` over; returns its id. Throws std::bad_alloc when all
  // 2^28 ids are in use.
  std::uint64_t add(std::unique_ptr<T> object) {
    std::lock_guard g(mutex_);
    std::uint64_t id;
    for (;;) {
      if (!free_.empty()) {
        id = free_.back();
        free_.pop_back();
      } else if (!skipped_.empty()) {
        auto& [first, end] = skipped_.back();
        id = first++;
        if (first == end) skipped_.pop_back();
      } else {
        if (next_ >= capacity) throw std::bad_alloc();
        id = next_++;
        break;
      }
      if (!slot(id).load(std::memory_order_relaxed)) break;  // place() may have filled it since
    }
    slot(id).store(object.release(), std::memory_order_release);
    ++size_;
    return id;
  }

  // Puts `object` at `id` (restoring what a predecessor handed over). False
  // when the id is reserved, out of range or taken. Cheapest in ascending
  // order of ids.
  bool place(std::uint64_t id, std::unique_ptr<T> object) {
    std::lock_guard g(mutex_);
    if (id < first_ || id >= capacity || slot(id).load(std::memory_order_relaxed)) return false;
    // The ids skipped are free: one range, not one entry each (a snapshot's
    // id of 2^28 - 1 made 2 GiB of them; found by tests/fuzz/snapshot).
    if (next_ < id) {
      skipped_.emplace_back(next_, id);
      next_ = id;
    }
    if (next_ == id) ++next_;
    slot(id).store(object.release(), std::memory_order_release);
    ++size_;
    return true;
  }

  // The object at an id the kernel holds (it never passes one it was not
  // given, nor one after forgetting or releasing it).
  T& at(std::uint64_t id) const noexcept {
    return *directory(id >> chunk_bits).load(std::memory_order_acquire)->slots[id & (chunk_size - 1)].load(
        std::memory_order_acquire);
  }
  // The object at `id`, or nullptr: for ids that come from elsewhere.
  T* find(std::uint64_t id) const noexcept {
    if (id >= capacity) return nullptr;
    chunk* k = directory(id >> chunk_bits).load(std::memory_order_acquire);
    return k ? k->slots[id & (chunk_size - 1)].load(std::memory_order_acquire) : nullptr;
  }

  // Gives up the object at `id` (nullptr if none); the id is free again.
  std::unique_ptr<T> take(std::uint64_t id) {
    std::lock_guard g(mutex_);
    if (id < first_ || id >= capacity) return nullptr;
    chunk* k = directory(id >> chunk_bits).load(std::memory_order_relaxed);
    if (!k) return nullptr;
    std::unique_ptr<T> object(k->slots[id & (chunk_size - 1)].exchange(nullptr, std::memory_order_acq_rel));
    if (object) {
      --size_;
      free_.push_back(id);
    }
    return object;
  }

  std::size_t size() const {
    std::lock_guard g(mutex_);
    return size_;
  }

  // Calls f(id, object) for every object, in ascending order of ids, under
  // the table's lock (add, place and take wait).
  template <class F>
  void for_each(F&& f) const {
    std::lock_guard g(mutex_);
    for (std::uint64_t c = 0; c < chunks_in_use(); ++c) {
      chunk* k = directory(c).load(std::memory_order_relaxed);
      if (!k) continue;
      for (std::uint64_t s = 0; s < chunk_size; ++s)
        if (T* object = k->slots[s].load(std::memory_order_relaxed)) f((c << chunk_bits) | s, *object);
    }
  }

 private:
  struct chunk {
    std::atomic<T*> slots[chunk_size] = {};
  };

  // Entry `c` of the chunk directory, read and written atomically (at()
  // reads it without the lock).
  std::atomic_ref<chunk*> directory(std::uint64_t c) const noexcept { return std::atomic_ref<chunk*>(chunks_[c]); }
  // Chunks below this index may exist (no id at or above next_ was handed out).
  std::uint64_t chunks_in_use() const noexcept { return (next_ + chunk_size - 1) >> chunk_bits; }

  // The slot of `id`, its chunk made if need be (under the lock).
  std::atomic<T*>& slot(std::uint64_t id) {
    auto c = directory(id >> chunk_bits);
    chunk* k = c.load(std::memory_order_relaxed);
    if (!k) {
      k = new chunk();
      c.store(k, std::memory_order_release);
    }
    return k->slots[id & (chunk_size - 1)];
  }

  const std::uint64_t first_;
  mutable std::mutex mutex_;
  std::uint64_t next_;                  // no id at or above it was ever handed out
  std::vector<std::uint64_t> free_;     // freed ids below next_ (some may be filled by place())
  std::vector<std::pair<std::uint64_t, std::uint64_t>> skipped_;  // [first, end): ids place() skipped (the same)
  std::size_t size_ = 0;
  chunk** chunks_;                      // max_chunks entries, zeroed (calloc)
};

}  // namespace passthrough
