#pragma once
// The time a request's changes are stamped with (mtime, ctime, atime).
//
// A filesystem that stamps times with request_time() rather than reading the
// clock itself gets the same stamps when a crash-recovering successor replays
// its journal (docs/restart.md, "Crash recovery"): while a journaled request
// is handled, the time it was applied at is pinned for its thread, and the
// replay pins the same time again. Elsewhere it is simply the wall clock.
#include <time.h>

namespace fusexx {
namespace detail {
inline thread_local timespec pinned_time{};  // {0, 0}: none pinned

// Pins `t` for this thread while it lives.
class time_pin {
 public:
  explicit time_pin(timespec t) noexcept : saved_(pinned_time) { pinned_time = t; }
  ~time_pin() { pinned_time = saved_; }
  time_pin(const time_pin&) = delete;
  time_pin& operator=(const time_pin&) = delete;

 private:
  timespec saved_;
};
}  // namespace detail

inline timespec request_time() noexcept {
  if (detail::pinned_time.tv_sec != 0 || detail::pinned_time.tv_nsec != 0) return detail::pinned_time;
  timespec t{};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return t;
}

}  // namespace fusexx
