#pragma once
// A one-shot signal from any thread to whoever waits for it: an eventfd plus a
// flag. A thread blocks in wait(); an event loop watches fd(), which becomes
// readable once the event is set. Waiting is one blocking poll(2), never a
// loop of sleeps.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>

#include "../fd.hpp"

namespace fusexx::detail {

class event {
 public:
  using clock = std::chrono::steady_clock;

  event() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  event(const event&) = delete;
  event& operator=(const event&) = delete;

  // Sets the event (once; later calls do nothing). Safe from any thread.
  void set() noexcept {
    if (set_.exchange(true, std::memory_order_acq_rel)) return;
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(fd_.get(), &one, sizeof one);
  }
  bool is_set() const noexcept { return set_.load(std::memory_order_acquire); }

  // Readable once set (until reset()).
  int fd() const noexcept { return fd_.get(); }

  // Blocks until set.
  void wait() const {
    while (!is_set()) block(-1);
  }
  // Blocks until set or `deadline`; true if set.
  bool wait_until(clock::time_point deadline) const {
    while (!is_set()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
      if (left <= 0) return is_set();
      block(static_cast<int>(std::min<long long>(left, 1 << 30)));
    }
    return true;
  }

  // Makes the event unset again (for a signal used more than once, e.g. a
  // park that ends with resume()). Not concurrent with set().
  void reset() noexcept {
    std::uint64_t value;
    [[maybe_unused]] ssize_t n = ::read(fd_.get(), &value, sizeof value);
    set_.store(false, std::memory_order_release);
  }

 private:
  void block(int timeout_ms) const {
    pollfd p{fd_.get(), POLLIN, 0};
    ::poll(&p, 1, timeout_ms);  // EINTR or a timeout: the caller looks again
  }

  unique_fd fd_;
  std::atomic<bool> set_{false};
};

}  // namespace fusexx::detail
