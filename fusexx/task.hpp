#pragma once
// task<T>: the coroutine type of fusexx handlers.
//
// A task is lazy (it starts when awaited) and yields a result<T> when awaited,
// so a coroutine handler returns values and errors the same way a plain one
// does:   co_return entry;   co_return fusexx::error(ENOENT);
// Completion hands control straight to the awaiting coroutine (symmetric
// transfer), so long await chains do not grow the stack. An exception that
// escapes the body is stored and rethrown to whoever awaits the task; the
// dispatcher catches it at the top and answers EIO.
#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

#include "detail/frame_cache.hpp"
#include "result.hpp"

namespace fusexx {

template <class T = void>
class [[nodiscard]] task {
 public:
  using value_type = T;

  struct promise_type : detail::cached_frame {  // frames are reused: detail/frame_cache.hpp
    std::optional<result<T>> value;
    std::exception_ptr exception;
    std::coroutine_handle<> continuation;

    task get_return_object() noexcept { return task(std::coroutine_handle<promise_type>::from_promise(*this)); }
    std::suspend_always initial_suspend() noexcept { return {}; }

    struct final_awaiter {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        auto next = h.promise().continuation;
        return next ? next : std::noop_coroutine();
      }
      void await_resume() noexcept {}
    };
    final_awaiter final_suspend() noexcept { return {}; }

    // result<void> is constructible from `{}`, so `co_return {};` ends a task<void>.
    void return_value(result<T> r) { value.emplace(std::move(r)); }
    void unhandled_exception() noexcept { exception = std::current_exception(); }
  };
  using handle = std::coroutine_handle<promise_type>;

  task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() {
    if (h_) h_.destroy();
  }

  struct awaiter {
    handle h;
    bool await_ready() noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
      h.promise().continuation = awaiting;
      return h;  // start the task now
    }
    result<T> await_resume() {
      auto& p = h.promise();
      if (p.exception) std::rethrow_exception(p.exception);
      return std::move(*p.value);
    }
  };
  awaiter operator co_await() && noexcept { return awaiter{h_}; }

  // What a finished task produced: its value, or the exception that escaped
  // it. co_await std::move(t).catching() hands it back without rethrowing,
  // so the dispatcher's one exception fence decides what it becomes.
  struct finished {
    std::optional<result<T>> value;
    std::exception_ptr exception;
  };
  struct catching_awaiter : awaiter {
    finished await_resume() noexcept {
      auto& p = this->h.promise();
      return finished{std::move(p.value), p.exception};
    }
  };
  catching_awaiter catching() && noexcept { return catching_awaiter{{h_}}; }

 private:
  explicit task(handle h) noexcept : h_(h) {}
  handle h_;
};

// Recognises task<T> so the dispatcher can tell coroutine handlers from plain ones.
template <class>
inline constexpr bool is_task_v = false;
template <class T>
inline constexpr bool is_task_v<task<T>> = true;

}  // namespace fusexx
