#pragma once
// The one exception fence: nothing a filesystem throws crosses into the
// kernel or a serving thread. fenced() runs `f` and returns what it returns;
// if it throws, it logs "<what> threw: ..." and returns `fallback` instead
// (and the sentence, through `why`, for those that report it further).
// `what` names the call: a string, or a function returning one, called only
// when something was thrown, so the fence costs nothing otherwise.
#include <exception>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "../log.hpp"

namespace fusexx::detail {

template <class What>
[[gnu::cold, gnu::noinline]] std::string fence_caught(const What& what_, std::exception_ptr e) {
  std::string_view what;
  if constexpr (std::is_invocable_v<const What&>) what = what_();
  else what = what_;
  try {
    std::rethrow_exception(std::move(e));
  } catch (const std::exception& x) {
    return fmt::format("{} threw: {}", what, x.what());
  } catch (...) {
    return fmt::format("{} threw a non-standard exception", what);
  }
}

template <class R, class What, class F>
[[gnu::always_inline]] inline R fenced(const What& what, F&& f, R fallback, std::string* why = nullptr) noexcept {
  try {
    return std::forward<F>(f)();
  } catch (...) {
    std::string text = fence_caught(what, std::current_exception());
    log::error("{}", text);
    if (why) *why = std::move(text);
  }
  return fallback;
}

// For calls that return nothing: true if `f` returned normally.
template <class What, class F>
bool fenced(const What& what, F&& f) noexcept {
  return fenced(what, [&] { std::forward<F>(f)(); return true; }, false);
}

}  // namespace fusexx::detail
