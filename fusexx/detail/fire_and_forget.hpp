#pragma once
// A coroutine that starts at once and frees itself when it ends: for loops
// and clean-ups nobody awaits (an io_uring entry's serving loop, a release
// the kernel will never send). It must catch what it throws itself.
#include <coroutine>
#include <exception>

namespace fusexx::detail {

struct fire_and_forget {
  struct promise_type {
    fire_and_forget get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

}  // namespace fusexx::detail
