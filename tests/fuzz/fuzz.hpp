#pragma once
// Support for the fuzz targets in tests/fuzz: reading structured values off
// the fuzzer's bytes, and a check that stops the run with a message.
//
// Every target defines LLVMFuzzerTestOneInput. Built with clang-19 and
// -fsanitize=fuzzer (tests/fuzz/run.sh), libFuzzer drives it; built with g++
// by Bazel (tests/fuzz/BUILD.bazel), replay_main.cc feeds it the seed corpus
// and the regression inputs, so every crash ever found stays a test.
#include <dirent.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>

#include <fmt/format.h>

namespace fusexx::fuzzing {

// The fuzzer's bytes, consumed front to back. Past the end every read gives
// zeros (or an empty span), so a target never has to check for running out.
class input {
 public:
  input(const std::uint8_t* data, std::size_t size) noexcept : data_(data), size_(size) {}

  bool empty() const noexcept { return at_ >= size_; }
  std::size_t left() const noexcept { return empty() ? 0 : size_ - at_; }

  template <class T>
  T take() noexcept {
    T v{};
    const std::size_t n = std::min(sizeof v, left());
    if (n) std::memcpy(&v, data_ + at_, n);
    at_ += n;
    return v;
  }
  std::uint8_t u8() noexcept { return take<std::uint8_t>(); }
  std::uint16_t u16() noexcept { return take<std::uint16_t>(); }
  std::uint32_t u32() noexcept { return take<std::uint32_t>(); }
  std::uint64_t u64() noexcept { return take<std::uint64_t>(); }

  // Up to `n` bytes (fewer at the end).
  std::span<const std::uint8_t> bytes(std::size_t n) noexcept {
    n = std::min(n, left());
    std::span<const std::uint8_t> s(data_ + at_, n);
    at_ += n;
    return s;
  }
  std::span<const std::uint8_t> rest() noexcept { return bytes(left()); }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

// A broken invariant: say which, then abort (libFuzzer saves the input as a
// crash; the replay test fails).
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  const std::string what = fmt::format(f, std::forward<Args>(args)...);
  std::fprintf(stderr, "fuzz check failed: %s\n", what.c_str());
  std::abort();
}

}  // namespace fusexx::fuzzing

#define FUZZ_CHECK(cond, ...)                                  \
  do {                                                         \
    if (!(cond)) ::fusexx::fuzzing::fail(__VA_ARGS__);         \
  } while (0)

namespace fusexx::fuzzing {

// How many fds this process has open: a target that hands fds around counts
// them before and after each input (a leak of one per input is invisible
// otherwise, until the process runs out).
inline std::size_t open_fds() {
  std::size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  FUZZ_CHECK(d != nullptr, "opendir /proc/self/fd: {}", std::strerror(errno));
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // not the one opendir itself held
}

}  // namespace fusexx::fuzzing
