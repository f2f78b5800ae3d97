#pragma once
// The load generator both benchmarks share: run one operation in a loop on N
// application threads for a fixed time, repeat, and keep every sample so the
// report can give a median and the spread instead of one lucky run.
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace bench {

using clock_type = std::chrono::steady_clock;

// One operation as application thread `thread`; `i` counts that thread's
// operations. Returns false on failure (the cell is then reported as failed).
using operation = std::function<bool(unsigned thread, std::uint64_t i)>;

// What one timed run did.
struct run_result {
  std::uint64_t ops = 0;
  double seconds = 0;
  bool failed = false;
  int error = 0;  // the errno of the operation that failed (in its own thread)
  double rate() const { return failed || seconds <= 0 ? -1 : static_cast<double>(ops) / seconds; }
};

// Runs `op` on `threads` threads for about `seconds`, or until each thread has
// done `max_ops` operations (0: no such bound).
inline run_result run_for(const operation& op, unsigned threads, double seconds, std::uint64_t max_ops = 0) {
  std::atomic<std::uint64_t> total{0};
  std::atomic<bool> failed{false};
  std::atomic<int> error{0};
  const auto start = clock_type::now();
  const auto deadline = start + std::chrono::duration<double>(seconds);
  {
    std::vector<std::jthread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        std::uint64_t i = 0;
        // Check the clock every few operations only: a clock read costs about
        // as much as a cached stat.
        for (; !failed.load(std::memory_order_relaxed); ++i) {
          if ((i & 7) == 0 && clock_type::now() >= deadline) break;
          if (max_ops != 0 && i >= max_ops) break;
          if (!op(t, i)) {
            error = errno;
            failed = true;
            break;
          }
        }
        total += i;
      });
  }
  return {total.load(), std::chrono::duration<double>(clock_type::now() - start).count(), failed.load(), error.load()};
}

// Several measurements of one cell.
struct samples {
  std::vector<double> values;  // per run, in run order

  bool ok() const { return !values.empty() && std::ranges::all_of(values, [](double v) { return v >= 0; }); }
  double median() const {
    if (values.empty()) return -1;
    auto v = values;
    std::ranges::sort(v);
    const auto n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }
  double min() const { return values.empty() ? -1 : *std::ranges::min_element(values); }
  double max() const { return values.empty() ? -1 : *std::ranges::max_element(values); }
  // Half the range, relative to the median: "±7%" reads at a glance.
  double spread() const {
    const double m = median();
    return m > 0 ? (max() - min()) / 2 / m : 0;
  }
};

// A pseudo-random 4 KiB-aligned offset inside a file of `size` bytes, the
// same sequence for every subject (splitmix64 of thread and index).
inline off_t random_block(unsigned thread, std::uint64_t i, off_t size, off_t block = 4096) {
  std::uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ (thread + 1ull) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<off_t>(z % static_cast<std::uint64_t>(size / block)) * block;
}

}  // namespace bench
