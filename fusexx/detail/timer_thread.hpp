#pragma once
// Resumes coroutines at a point in time, on one thread of its own: how a
// handler sleeps (io::sleep_for) where no io_uring ring times it — on the
// classic transport — without holding one of the serving threads. (A
// passthrough lock request retries until the lock is free: with blocking
// sleeps, as many waiters as threads would stop the server.)
//
// A coroutine that belongs to a session's handler scope is resumed through
// the scope: while the server is parked the scope holds it back, so no
// handler runs during a handover (handler_scope::hold).
//
// The thread starts with the first timer and ends with the process. A
// forked child has no such thread: its timers would never fire.
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <mutex>
#include <queue>
#include <stop_token>
#include <thread>
#include <vector>

#include "handler_scope.hpp"

namespace fusexx::detail {

class timer_thread {
 public:
  using clock = std::chrono::steady_clock;

  static timer_thread& instance() {
    static timer_thread t;
    return t;
  }

  // Resumes `h` at `when` (through `scope`, when it has one).
  void resume_at(clock::time_point when, std::coroutine_handle<> h, handler_scope* scope) {
    {
      std::lock_guard lock(mutex_);
      timers_.push({when, order_++, h, scope});
      changed_ = true;
    }
    wake_.notify_one();
  }

 private:
  struct timer {
    clock::time_point when;
    std::uint64_t order;  // equal times fire in the order they were set
    std::coroutine_handle<> h;
    handler_scope* scope;
    bool operator>(const timer& o) const { return when != o.when ? when > o.when : order > o.order; }
  };

  timer_thread() : thread_([this](std::stop_token stop) { run(stop); }) {}

  void run(std::stop_token stop) {
    std::unique_lock lock(mutex_);
    while (!stop.stop_requested()) {
      changed_ = false;
      if (timers_.empty()) {
        wake_.wait(lock, stop, [&] { return changed_; });
        continue;
      }
      if (const auto when = timers_.top().when; clock::now() < when) {
        wake_.wait_until(lock, stop, when, [&] { return changed_; });
        continue;
      }
      const timer t = timers_.top();
      timers_.pop();
      lock.unlock();
      if (!t.scope || !t.scope->hold_back(t.h)) {
        current_scope() = t.scope;
        t.h.resume();
        current_scope() = nullptr;
      }
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable_any wake_;
  bool changed_ = false;
  std::uint64_t order_ = 0;
  std::priority_queue<timer, std::vector<timer>, std::greater<>> timers_;
  std::jthread thread_;  // last: it starts once the rest is there
};

}  // namespace fusexx::detail
