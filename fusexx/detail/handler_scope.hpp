#pragma once
// The handlers of a session that are in flight as coroutines: an async scope
// (as in cppcoro's async_scope). A coroutine handler joins it before it first
// runs and leaves it once its reply is sent, so the server can
//   - join it: wait, without polling, until every handler has replied
//     (park, stop);
//   - say which requests it could not bring to an end when a wait is bounded;
//   - interrupt every handler still waiting (stop), so that handlers that
//     honour interrupts (a blocked lock request) end now;
//   - hold back, while the server is parked, the handlers its timers would
//     resume (timer_thread.hpp): none runs during a handover.
// Members are intrusive (they live in the handler's frame): joining and
// leaving take one lock and allocate nothing.
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "../proto/abi.hpp"
#include "../types.hpp"
#include "event.hpp"

namespace fusexx {

// A request that is still being handled.
struct request_in_flight {
  std::uint64_t unique = 0;
  proto::opcode opcode{};
  ino node = 0;
};

namespace detail {

class handler_scope {
 public:
  using clock = std::chrono::steady_clock;

  struct member {
    request_in_flight request;
    member* prev = nullptr;
    member* next = nullptr;
  };

  handler_scope() = default;
  handler_scope(const handler_scope&) = delete;
  handler_scope& operator=(const handler_scope&) = delete;

  void enter(member& m) {
    std::lock_guard lock(mutex_);
    m.prev = nullptr;
    m.next = head_;
    if (head_) head_->prev = &m;
    head_ = &m;
    ++size_;
  }
  void leave(member& m) {
    std::lock_guard lock(mutex_);
    if (m.prev) m.prev->next = m.next;
    else head_ = m.next;
    if (m.next) m.next->prev = m.prev;
    if (--size_ == 0 && joining_) {
      joining_ = false;
      drained_.set();
    }
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return size_;
  }
  std::vector<request_in_flight> members() const {
    std::lock_guard lock(mutex_);
    std::vector<request_in_flight> out;
    for (member* m = head_; m; m = m->next) out.push_back(m->request);
    return out;
  }

  // An event that is set once the scope is empty — now, or when its last
  // member leaves. Await its fd on an event loop, or join() a thread on it.
  // One joiner at a time (the server's lifecycle).
  event& drained() {
    std::lock_guard lock(mutex_);
    drained_.reset();
    joining_ = size_ > 0;
    if (!joining_) drained_.set();
    return drained_;
  }
  // Blocks until every member has left, or `deadline`; true if none is left.
  bool join(clock::time_point deadline) { return drained().wait_until(deadline); }

  // While held, hold_back() keeps the coroutines a timer would resume;
  // release() ends the hold and gives them back, to be resumed.
  void hold() {
    std::lock_guard lock(mutex_);
    held_ = true;
  }
  std::vector<std::coroutine_handle<>> release() {
    std::lock_guard lock(mutex_);
    held_ = false;
    return std::exchange(held_back_, {});
  }
  // True when `h` is kept (the scope is held); false: resume it now.
  bool hold_back(std::coroutine_handle<> h) {
    std::lock_guard lock(mutex_);
    if (held_) held_back_.push_back(h);
    return held_;
  }

 private:
  mutable std::mutex mutex_;
  event drained_;
  bool joining_ = false;
  member* head_ = nullptr;
  std::size_t size_ = 0;
  bool held_ = false;
  std::vector<std::coroutine_handle<>> held_back_;
};

// The scope of the handlers this thread runs (set once by a /dev/fuse
// reader or an io_uring queue thread for its session, and by the timer
// thread for each it resumes), or null.
inline handler_scope*& current_scope() {
  thread_local handler_scope* scope = nullptr;
  return scope;
}

}  // namespace detail
}  // namespace fusexx
