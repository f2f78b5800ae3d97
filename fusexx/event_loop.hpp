#pragma once
// The event loop the lifecycle runs on: one thread, epoll, and coroutines.
// A server's start and stop, and fusexx::main's whole life, are coroutines
// (task<T>) that await what the lifecycle waits for — a file descriptor
// becoming readable (a signalfd, an eventfd a session or transport sets), a
// deadline, or a blocking call that must stay blocking (an unmount that
// waits for DESTROY, joining a channel's threads) run on its own thread:
//
//   event_loop loop;
//   int code = loop.run(serve(loop, ...));               // until the coroutine ends
//   ... inside a coroutine on the loop:
//   int which = co_await loop.first_ready_until(deadline, signals, ended);   // index, or -1 at the deadline
//   co_await loop.blocking([&] { plane.stop(deadline); });
//
// Everything the loop resumes runs on the loop's thread; only blocking()'s
// function runs elsewhere.
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <coroutine>
#include <memory>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/event.hpp"
#include "fd.hpp"
#include "result.hpp"
#include "task.hpp"

namespace fusexx {

class event_loop {
 public:
  using clock = std::chrono::steady_clock;

  event_loop() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {}
  event_loop(const event_loop&) = delete;
  event_loop& operator=(const event_loop&) = delete;

  // Runs `t` on this thread until it finishes; returns what it returned.
  template <class T>
  result<T> run(task<T> t) {
    std::optional<result<T>> out;
    bool done = false;
    root(std::move(t), out, done);
    while (!done) turn();
    return std::move(*out);
  }

  // Resumes the awaiting coroutine with the index (in `fds`) of the first fd
  // that is readable, or -1 once `deadline` has passed.
  class first_ready_awaiter {
   public:
    first_ready_awaiter(event_loop& loop, std::vector<int> fds, std::optional<clock::time_point> deadline)
        : loop_(loop), fds_(std::move(fds)), deadline_(deadline) {}
    bool await_ready() {
      for (std::size_t i = 0; i < fds_.size(); ++i)
        if (readable(fds_[i])) {
          which_ = static_cast<int>(i);
          return true;
        }
      return deadline_ && clock::now() >= *deadline_;
    }
    void await_suspend(std::coroutine_handle<> h) {
      waiting_ = h;
      for (std::size_t i = 0; i < fds_.size(); ++i) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tag(i);
        ::epoll_ctl(loop_.epoll_.get(), EPOLL_CTL_ADD, fds_[i], &ev);
      }
      loop_.waiters_.push_back(this);
    }
    int await_resume() const noexcept { return which_; }

   private:
    friend class event_loop;
    std::uint64_t tag(std::size_t i) const {
      return (reinterpret_cast<std::uintptr_t>(this) << 8) | i;  // awaiters are 8-byte aligned or more; i < 256
    }
    static bool readable(int fd) {
      pollfd p{fd, POLLIN, 0};
      return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR));
    }
    // Leaves the loop's books and resumes the coroutine.
    void finish(int which) {
      which_ = which;
      for (int fd : fds_) ::epoll_ctl(loop_.epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
      std::erase(loop_.waiters_, this);
      waiting_.resume();
    }

    event_loop& loop_;
    std::vector<int> fds_;
    std::optional<clock::time_point> deadline_;
    std::coroutine_handle<> waiting_;
    int which_ = -1;
  };
  // (Variadic rather than an initializer list: GCC 12 cannot keep a braced
  // list's array in a coroutine frame.)
  template <class... Fd>
  first_ready_awaiter first_ready(Fd... fds) {
    return {*this, std::vector<int>{fds...}, std::nullopt};
  }
  template <class... Fd>
  first_ready_awaiter first_ready_until(std::optional<clock::time_point> deadline, Fd... fds) {
    return {*this, std::vector<int>{fds...}, deadline};
  }

  // A call running on a thread of its own: `fd()` is readable once it has
  // returned; get() then gives what it returned. For calls that must block
  // (an unmount, a join) while the loop goes on serving everything else.
  template <class R>
  class pending {
   public:
    template <class F>
    explicit pending(F f)
        : thread_([this, f = std::move(f)]() mutable {
            if constexpr (std::is_void_v<R>) f();
            else value_.emplace(f());
            done_.set();
          }) {}
    int fd() const noexcept { return done_.fd(); }
    bool ready() const noexcept { return done_.is_set(); }
    R get() {
      thread_.join();
      if constexpr (!std::is_void_v<R>) return std::move(*value_);
    }

   private:
    std::conditional_t<std::is_void_v<R>, bool, std::optional<R>> value_{};
    detail::event done_;
    std::jthread thread_;  // last: started once the rest exists
  };
  template <class F>
  static auto spawn(F f) {
    return std::make_unique<pending<std::invoke_result_t<F&>>>(std::move(f));
  }

  // Runs `f` on a thread of its own; the awaiting coroutine resumes, on the
  // loop, with what f returned.
  template <class F>
  class blocking_awaiter {
    using R = std::invoke_result_t<F&>;

   public:
    blocking_awaiter(event_loop& loop, F f) : loop_(loop), f_(std::move(f)) {}
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
      call_ = spawn(std::move(f_));
      done_.emplace(loop_, std::vector<int>{call_->fd()}, std::nullopt);
      if (done_->await_ready()) return false;  // already returned: go on at once
      done_->await_suspend(h);
      return true;
    }
    R await_resume() { return call_->get(); }

   private:
    event_loop& loop_;
    F f_;
    std::unique_ptr<pending<R>> call_;
    std::optional<first_ready_awaiter> done_;
  };
  template <class F>
  blocking_awaiter<F> blocking(F f) {
    return {*this, std::move(f)};
  }

 private:
  template <class T>
  struct root_task {
    struct promise_type {
      root_task get_return_object() noexcept { return {}; }
      std::suspend_never initial_suspend() noexcept { return {}; }
      std::suspend_never final_suspend() noexcept { return {}; }
      void return_void() noexcept {}
      void unhandled_exception() noexcept { std::terminate(); }
    };
  };
  template <class T>
  static root_task<T> root(task<T> t, std::optional<result<T>>& out, bool& done) {
    out.emplace(co_await std::move(t));
    done = true;
  }

  // Waits for the next event or deadline and resumes what it belongs to.
  void turn() {
    int timeout = -1;
    if (auto next = earliest_deadline()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*next - clock::now()).count();
      timeout = static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
    }
    epoll_event events[8];
    const int n = ::epoll_wait(epoll_.get(), events, 8, timeout);
    for (int i = 0; i < n; ++i) {
      const std::uint64_t tag = events[i].data.u64;
      auto* w = reinterpret_cast<first_ready_awaiter*>(static_cast<std::uintptr_t>(tag >> 8));
      // A waiter resumed by an earlier event of this batch has left already.
      if (std::ranges::find(waiters_, w) == waiters_.end()) continue;
      w->finish(static_cast<int>(tag & 0xff));
    }
    const auto now = clock::now();
    for (auto* w : std::vector<first_ready_awaiter*>(waiters_))
      if (w->deadline_ && now >= *w->deadline_ && std::ranges::find(waiters_, w) != waiters_.end()) w->finish(-1);
  }
  std::optional<clock::time_point> earliest_deadline() const {
    std::optional<clock::time_point> out;
    for (auto* w : waiters_)
      if (w->deadline_ && (!out || *w->deadline_ < *out)) out = w->deadline_;
    return out;
  }

  unique_fd epoll_;
  std::vector<first_ready_awaiter*> waiters_;
};

}  // namespace fusexx
