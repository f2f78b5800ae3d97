#pragma once
// Calls a function once, on a thread of its own, when a deadline passes or a
// stop token is asked to stop, unless disarmed before. For a call that has to
// block the thread that makes it, and that something else can end: the mount
// call waits in the kernel until synchronous INIT is answered, and is not
// interrupted by signals; a watchdog that fires answers INIT with an error,
// and the call returns.
//
// (The mount call used to run on a thread of its own while the lifecycle
// awaited it with a deadline: the call then waited for that thread to be
// scheduled first, ~0.25 ms of a 2.5 ms mount on the benchmark machine. The
// watchdog's thread starts beside the call instead of in front of it.)
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stop_token>
#include <thread>

namespace fusexx::detail {

class watchdog {
 public:
  using clock = std::chrono::steady_clock;
  enum class reason { deadline, cancelled };

  // `fire` runs on the watchdog's thread, at most once.
  watchdog(clock::time_point deadline, std::stop_token cancel, std::function<void(reason)> fire)
      : fire_(std::move(fire)),
        on_cancel_(std::move(cancel), [this] {
          {
            std::lock_guard lock(mutex_);
            cancelled_ = true;
          }
          wake_.notify_all();
        }),
        thread_([this, deadline](std::stop_token disarmed) {
          std::unique_lock lock(mutex_);
          wake_.wait_until(lock, disarmed, deadline, [this] { return cancelled_; });
          if (disarmed.stop_requested()) return;
          const reason why = cancelled_ ? reason::cancelled : reason::deadline;
          lock.unlock();
          fire_(why);
        }) {}
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;
  ~watchdog() { disarm(); }

  // Once this returns, `fire` has either run to its end or will never run.
  void disarm() {
    if (!thread_.joinable()) return;
    thread_.request_stop();
    thread_.join();
  }

 private:
  std::function<void(reason)> fire_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  bool cancelled_ = false;
  std::stop_callback<std::function<void()>> on_cancel_;
  std::jthread thread_;  // last: starts once the rest exists
};

}  // namespace fusexx::detail
