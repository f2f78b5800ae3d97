#pragma once
// The one exception fence: nothing a filesystem throws crosses into the
// kernel or a serving thread. fenced() runs `f` and returns what it returns;
// if it throws, it logs "<what> threw: ..." and returns `fallback` instead
// (and the sentence, through `why`, for those that report it further).
#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include "../log.hpp"

namespace fusexx::detail {

template <class R, class F>
R fenced(std::string_view what, F&& f, R fallback, std::string* why = nullptr) noexcept {
  std::string text;
  try {
    return std::forward<F>(f)();
  } catch (const std::exception& e) {
    text = fmt::format("{} threw: {}", what, e.what());
  } catch (...) {
    text = fmt::format("{} threw a non-standard exception", what);
  }
  log::error("{}", text);
  if (why) *why = std::move(text);
  return fallback;
}

// For calls that return nothing: true if `f` returned normally.
template <class F>
bool fenced(std::string_view what, F&& f) noexcept {
  return fenced(what, [&] { std::forward<F>(f)(); return true; }, false);
}

}  // namespace fusexx::detail
