#pragma once
// Reading the small text files the kernel makes (/proc, /sys) whole, with
// plain read(2)s. They are read on the way to a mount — mountinfo before and
// after it, fuse's limits while INIT waits — where a std::ifstream's stream
// and locale machinery cost more than the read (docs/benchmarks.md, mount
// time); the kernel builds such a file anew for each read, so its size is
// only known once read.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>

#include "../fd.hpp"

namespace fusexx::detail {

// The file's text, or nullopt if it cannot be opened or read.
inline std::optional<std::string> read_kernel_file(const char* path) {
  unique_fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string text(4096, '\0');
  std::size_t used = 0;
  for (;;) {
    if (used == text.size()) text.resize(text.size() * 2);
    const ssize_t n = ::read(fd.get(), text.data() + used, text.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  text.resize(used);
  return text;
}

// The unsigned number a file such as /proc/sys/fs/fuse/max_pages_limit holds
// (leading blanks allowed, anything after the digits ignored).
inline std::optional<unsigned long> read_kernel_number(const char* path) {
  auto text = read_kernel_file(path);
  if (!text) return std::nullopt;
  std::string_view s(*text);
  s.remove_prefix(std::min(s.find_first_not_of(" \t\n"), s.size()));
  unsigned long value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end == s.data()) return std::nullopt;
  return value;
}

// Splits `text` at `separator` and calls f(part) for each piece (empty ones
// included): lines of a file, fields of a line.
template <class F>
void for_each_part(std::string_view text, char separator, F&& f) {
  while (!text.empty()) {
    const auto at = text.find(separator);
    f(text.substr(0, at));
    if (at == std::string_view::npos) break;
    text.remove_prefix(at + 1);
  }
}

}  // namespace fusexx::detail
