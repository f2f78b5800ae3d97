#pragma once
// One small logger for the whole framework: fmt to stderr, one line per call,
// written with a single write(2) so lines from worker threads never interleave.
#include <atomic>
#include <string_view>
#include <unistd.h>

#include <fmt/format.h>

namespace fusexx::log {

// `off` as the threshold silences even errors (fuzzing feeds malformed input by design).
enum class level { off = -1, error = 0, warn = 1, info = 2, debug = 3 };

inline std::atomic<level>& threshold() {
  static std::atomic<level> value{level::warn};
  return value;
}
inline void set_level(level l) { threshold().store(l, std::memory_order_relaxed); }
inline bool enabled(level l) { return l <= threshold().load(std::memory_order_relaxed); }

template <class... Args>
void write(level l, fmt::format_string<Args...> format, Args&&... args) {
  if (!enabled(l)) return;
  fmt::memory_buffer line;
  fmt::format_to(std::back_inserter(line), "fusexx: ");
  fmt::format_to(std::back_inserter(line), format, std::forward<Args>(args)...);
  line.push_back('\n');
  const char* p = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) break;  // nothing sensible to do if stderr is gone
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

template <class... Args>
void error(fmt::format_string<Args...> f, Args&&... a) { write(level::error, f, std::forward<Args>(a)...); }
template <class... Args>
void warn(fmt::format_string<Args...> f, Args&&... a) { write(level::warn, f, std::forward<Args>(a)...); }
template <class... Args>
void info(fmt::format_string<Args...> f, Args&&... a) { write(level::info, f, std::forward<Args>(a)...); }
template <class... Args>
void debug(fmt::format_string<Args...> f, Args&&... a) { write(level::debug, f, std::forward<Args>(a)...); }

}  // namespace fusexx::log
