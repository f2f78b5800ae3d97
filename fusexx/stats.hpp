#pragma once
// Live statistics of one connection, per opcode: requests, error replies,
// bytes in and out, and the latency from a request's arrival at the
// dispatcher to its reply (a log-scale histogram, for p50/p99, and the
// maximum). Read by the control socket (fusexx/control.hpp, `fusexx-ctl`).
//
// Off the hot path's cost: every thread that receives or replies writes only
// its own shard (found through one thread_local, registered once per thread
// and session), with plain loads and stores of relaxed atomics — no locked
// instruction, no cache line another serving thread writes. A reader sums the
// shards without stopping anyone; a reply recorded on another thread than its
// request (a coroutine handler resumed elsewhere) lands in that thread's
// shard, so only the sums are exact. Two clock reads per request
// (CLOCK_MONOTONIC, vDSO). `-o stats=off` (server_options::stats) skips it
// all: docs/architecture.md has the measured cost.
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace fusexx {

// Latencies: below 128 ns, then two buckets per power of two up to ~275 s.
inline constexpr std::size_t latency_buckets = 64;
using latency_histogram = std::array<std::uint64_t, latency_buckets>;

inline std::size_t latency_bucket(std::uint64_t ns) noexcept {
  if (ns < 128) return 0;
  const int msb = std::bit_width(ns) - 1;  // >= 7
  const std::size_t half = (ns >> (msb - 1)) & 1;
  return std::min<std::size_t>(latency_buckets - 1, static_cast<std::size_t>(msb - 7) * 2 + half + 1);
}
// The largest latency a bucket holds (what a percentile in it reports).
inline std::uint64_t latency_bucket_limit(std::size_t b) noexcept {
  if (b == 0) return 127;
  if (b >= latency_buckets - 1) return UINT64_MAX;
  const std::size_t octave = (b - 1) / 2 + 7, half = (b - 1) % 2;
  return (std::uint64_t{1} << octave) + (half + 1) * (std::uint64_t{1} << (octave - 1)) - 1;
}
// The p-th percentile of a histogram (the limit of the bucket it falls in,
// no more than `max`); 0 for an empty one.
inline std::uint64_t latency_percentile(const latency_histogram& h, unsigned p, std::uint64_t max = UINT64_MAX) noexcept {
  std::uint64_t total = 0;
  for (auto n : h) total += n;
  if (total == 0) return 0;
  const std::uint64_t rank = std::max<std::uint64_t>(1, (total * p + 99) / 100);  // the smallest count reaching p %
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < latency_buckets; ++b) {
    seen += h[b];
    if (seen >= rank) return std::min(latency_bucket_limit(b), max);
  }
  return max;
}

// The statistics of one opcode, summed over the shards.
struct opcode_stats {
  std::uint32_t opcode = 0;     // 0: opcodes fusexx has no slot for (>= 64)
  std::uint64_t count = 0;      // requests received
  std::uint64_t replies = 0;    // replies sent (what the latencies are of)
  std::uint64_t errors = 0;     // replies with an error
  std::uint64_t bytes_in = 0;   // request bytes (header, arguments, write data)
  std::uint64_t bytes_out = 0;  // reply bytes (header and data)
  std::uint64_t p50_ns = 0, p99_ns = 0, max_ns = 0;
  latency_histogram histogram{};  // the replies' latencies (latency_bucket)
};

struct stats_snapshot {
  bool enabled = false;
  std::vector<opcode_stats> ops;  // opcodes with at least one request, by opcode
};

namespace detail {

class alignas(64) request_stats {  // its own cache line: read by every request, beside counters every request writes
 public:
  static constexpr std::size_t slots = 64;    // per opcode; opcodes >= 64 share slot 0
  static constexpr std::size_t buckets = latency_buckets;  // below 128 ns, then two per power of two up to ~275 s

  request_stats() = default;
  request_stats(const request_stats&) = delete;
  request_stats& operator=(const request_stats&) = delete;

  // Set before serving (server_options::stats).
  void set_enabled(bool on) noexcept { enabled_.store(on, std::memory_order_relaxed); }
  bool enabled() const noexcept { return enabled_.load(std::memory_order_relaxed); }

  static std::uint64_t now_ns() noexcept {
    timespec t;
    ::clock_gettime(CLOCK_MONOTONIC, &t);
    return static_cast<std::uint64_t>(t.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(t.tv_nsec);
  }

  static std::size_t slot_of(std::uint32_t opcode) noexcept { return opcode < slots ? opcode : 0; }

  // A request arrived. (Requests in flight are the session's counter.)
  void received(std::uint32_t opcode, std::uint64_t bytes) noexcept {
    op& o = mine().ops[slot_of(opcode)];
    bump(o.count, 1);
    bump(o.bytes_in, bytes);
  }
  // Its reply went out, `ns` after it arrived.
  void replied(std::uint32_t opcode, int error, std::uint64_t bytes, std::uint64_t ns) noexcept {
    op& o = mine().ops[slot_of(opcode)];
    if (error != 0) bump(o.errors, 1);
    bump(o.bytes_out, bytes);
    bump(o.histogram[latency_bucket(ns)], 1);
    if (ns > o.max_ns.load(std::memory_order_relaxed)) o.max_ns.store(ns, std::memory_order_relaxed);
  }

  // The sums, read without stopping the writers.
  stats_snapshot snapshot() const {
    stats_snapshot out;
    out.enabled = enabled();
    std::array<opcode_stats, slots> sum{};
    {
      std::lock_guard lock(mutex_);
      for (const auto& s : shards_) {
        for (std::size_t i = 0; i < slots; ++i) {
          const op& o = s->ops[i];
          sum[i].count += o.count.load(std::memory_order_relaxed);
          sum[i].errors += o.errors.load(std::memory_order_relaxed);
          sum[i].bytes_in += o.bytes_in.load(std::memory_order_relaxed);
          sum[i].bytes_out += o.bytes_out.load(std::memory_order_relaxed);
          sum[i].max_ns = std::max(sum[i].max_ns, o.max_ns.load(std::memory_order_relaxed));
          for (std::size_t b = 0; b < buckets; ++b) sum[i].histogram[b] += o.histogram[b].load(std::memory_order_relaxed);
        }
      }
    }
    for (std::size_t i = 0; i < slots; ++i) {
      opcode_stats& o = sum[i];
      if (o.count == 0) continue;
      o.opcode = static_cast<std::uint32_t>(i);
      for (auto n : o.histogram) o.replies += n;
      o.p50_ns = latency_percentile(o.histogram, 50, o.max_ns);
      o.p99_ns = latency_percentile(o.histogram, 99, o.max_ns);
      out.ops.push_back(o);
    }
    return out;
  }

 private:
  struct op {
    std::atomic<std::uint64_t> count{0}, errors{0}, bytes_in{0}, bytes_out{0}, max_ns{0};
    std::array<std::atomic<std::uint64_t>, buckets> histogram{};
  };
  struct alignas(64) shard {
    std::array<op, slots> ops{};
    const void* thread = nullptr;  // the writer (its thread_local cache's address)
  };

  // One writer per shard: a load and a store, no locked instruction.
  static void bump(std::atomic<std::uint64_t>& a, std::uint64_t n) noexcept {
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  // This thread's shard of this object; registered at the thread's first
  // request (and again when it last served another session).
  shard& mine() noexcept {
    struct cached {
      std::uint64_t owner = 0;
      shard* s = nullptr;
    };
    thread_local cached c;
    if (c.owner == id_) [[likely]]
      return *c.s;
    c.s = &shard_of(&c);
    c.owner = id_;
    return *c.s;
  }
  // A thread that serves several sessions in turn (the timer thread) keeps
  // one shard in each. (A thread that reuses a dead one's address takes its
  // shard over: still one writer.)
  shard& shard_of(const void* thread) {
    std::lock_guard lock(mutex_);
    for (auto& s : shards_)
      if (s->thread == thread) return *s;
    shards_.push_back(std::make_unique<shard>());
    shards_.back()->thread = thread;
    return *shards_.back();
  }

  static std::uint64_t next_id() noexcept {
    static std::atomic<std::uint64_t> n{0};
    return n.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  const std::uint64_t id_ = next_id();  // tells this object's shards from an earlier one's at the same address
  std::atomic<bool> enabled_{true};
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<shard>> shards_;
};

}  // namespace detail
}  // namespace fusexx
