#pragma once
// A count that every serving thread adds to on every request (the session's
// books: requests, in flight, via which transport). Plain atomics in one
// struct are one cache line that each CPU takes from the other at a
// request's first add: with a queue thread per CPU (io_uring), a 2-thread
// stat storm on memfs spent 0.34 us per stat (5 requests) in that miss
// alone (perf, the samples after the add); striped, 0.13 us. So each thread
// adds to a stripe of its own, a cache line apart from the others, and a
// read sums the stripes. A stripe has one writer, so an add is a plain load
// and store, not a `lock add` (a full barrier, three or four per request).
// Reads are for statistics and tests: a sum taken while others add is not a
// snapshot.
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace fusexx::detail {

class striped_count {
 public:
  [[gnu::always_inline]] void fetch_add(std::uint64_t n, std::memory_order = std::memory_order_relaxed) noexcept {
    add(n);
  }
  // A thread may take away what another added: its stripe wraps below zero,
  // and the sum is still right (unsigned arithmetic is modulo 2^64).
  [[gnu::always_inline]] void fetch_sub(std::uint64_t n, std::memory_order = std::memory_order_relaxed) noexcept {
    add(0 - n);
  }
  // The sum. For a count that also goes down (in flight), a reader racing an
  // add on one stripe and its subtraction on another can see the subtraction
  // alone: a "negative" sum, which reads as 0.
  std::uint64_t load(std::memory_order = std::memory_order_relaxed) const noexcept {
    std::uint64_t sum = 0;
    for (const stripe& s : stripes_) sum += s.n.load(std::memory_order_relaxed);
    return static_cast<std::int64_t>(sum) < 0 ? 0 : sum;
  }
  operator std::uint64_t() const noexcept { return load(); }

 private:
  static constexpr std::size_t owned_stripes = 16;
  static constexpr std::size_t shared_stripe = owned_stripes;  // for threads beyond those
  struct alignas(64) stripe {
    std::atomic<std::uint64_t> n{0};
  };

  // A thread that owns its stripe is its one writer: a load and a store, no
  // locked instruction (a `lock add` is a full barrier, which waits for the
  // stores before it). The others share the last stripe and add atomically.
  [[gnu::always_inline]] void add(std::uint64_t n) noexcept {
    const std::size_t i = stripe_of_this_thread();
    if (i < owned_stripes) [[likely]] {
      auto& a = stripes_[i].n;
      a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    } else {
      add_elsewhere(n);
    }
  }
  // Not yet claimed, or sharing.
  [[gnu::noinline]] void add_elsewhere(std::uint64_t n) noexcept {
    const std::size_t i = my_stripe();
    auto& a = stripes_[i].n;
    if (i != shared_stripe) a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    else a.fetch_add(n, std::memory_order_relaxed);
  }

  // Each thread claims a stripe of its own (the same index in every
  // striped_count) at its first add, and gives it back when it ends. The
  // claim's acquire sees the last owner's stores, whose release ended them.
  class claims {
   public:
    static std::size_t claim() noexcept {
      std::uint32_t taken = free_mask().load(std::memory_order_relaxed);
      for (;;) {
        if (taken == all_taken) return shared_stripe;
        const auto i = static_cast<std::size_t>(std::countr_one(taken));
        if (free_mask().compare_exchange_weak(taken, taken | (1u << i), std::memory_order_acquire,
                                              std::memory_order_relaxed))
          return i;
      }
    }
    static void give_back(std::size_t i) noexcept {
      if (i != shared_stripe) free_mask().fetch_and(~(1u << i), std::memory_order_release);
    }

   private:
    static constexpr std::uint32_t all_taken = (1u << owned_stripes) - 1;
    static std::atomic<std::uint32_t>& free_mask() noexcept {  // bit i set: stripe i is owned
      static std::atomic<std::uint32_t> mask{0};
      return mask;
    }
  };
  static constexpr std::size_t unclaimed = ~std::size_t{0};
  // Trivial, so reading it costs no initialisation check; it outlives the
  // thread's other thread_local objects, whose destructors may still add
  // (to the shared stripe by then).
  static std::size_t& stripe_of_this_thread() noexcept {
    static thread_local std::size_t mine = unclaimed;
    return mine;
  }
  static std::size_t my_stripe() noexcept {
    std::size_t& mine = stripe_of_this_thread();
    if (mine == unclaimed) [[unlikely]] {
      struct owner {
        std::size_t index = claims::claim();
        ~owner() {
          stripe_of_this_thread() = shared_stripe;
          claims::give_back(index);
        }
      };
      static thread_local owner o;
      mine = o.index;
    }
    return mine;
  }

  std::array<stripe, owned_stripes + 1> stripes_{};
};

}  // namespace fusexx::detail
