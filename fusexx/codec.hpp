#pragma once
// Bytes <-> values (internal, fusexx::detail): a bounds-checked reader for request bodies and the
// encoders for attributes, entries and replies. Pure functions, no syscalls.
#include <sys/uio.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>

#include "proto/abi.hpp"
#include "types.hpp"

namespace fusexx::detail {

// Reads a request body front to back. Every take is checked against the bytes
// the kernel actually sent; a short body yields nullopt, never an
// out-of-bounds read. Structs are copied out, because names before them can
// leave them unaligned.
//
// The body may come in two segments: over io_uring the kernel puts an
// operation's first argument in the entry's header area and the rest in its
// payload buffer. Reading moves on to the second segment when the first is
// used up; a value that would straddle the two is treated as missing.
class body_reader {
 public:
  explicit body_reader(std::span<const std::byte> body, std::span<const std::byte> more = {}) noexcept
      : rest_(body), more_(more) {
    advance();
  }

  template <class T>
  std::optional<T> take(std::size_t size = sizeof(T)) noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    if (rest_.size() < size || size > sizeof(T)) return std::nullopt;
    T value{};  // a shorter (compat) struct leaves the newer fields zero
    std::memcpy(&value, rest_.data(), size);
    consume(size);
    return value;
  }
  // A NUL-terminated name; nullopt when the NUL is missing.
  std::optional<std::string_view> name() noexcept {
    const char* p = reinterpret_cast<const char*>(rest_.data());
    const void* nul = std::memchr(p, 0, rest_.size());
    if (nul == nullptr) return std::nullopt;
    std::size_t len = static_cast<std::size_t>(static_cast<const char*>(nul) - p);
    consume(len + 1);
    return std::string_view(p, len);
  }
  std::optional<std::span<const std::byte>> bytes(std::size_t n) noexcept {
    if (n == 0) return std::span<const std::byte>{};
    if (rest_.size() < n) return std::nullopt;
    auto out = rest_.first(n);
    consume(n);
    return out;
  }
  // The same, into named fields: false when the body is too short.
  template <class T>
  bool get(T& out, std::size_t size = sizeof(T)) noexcept {
    auto v = take<T>(size);
    if (v) out = *v;
    return v.has_value();
  }
  bool get(std::string_view& out) noexcept {
    auto v = name();
    if (v) out = *v;
    return v.has_value();
  }
  bool get_bytes(std::span<const std::byte>& out, std::size_t n) noexcept {
    auto v = bytes(n);
    if (v) out = *v;
    return v.has_value();
  }

  // Bytes not yet read, in both segments.
  std::size_t remaining() const noexcept { return rest_.size() + more_.size(); }

 private:
  void consume(std::size_t n) noexcept {
    rest_ = rest_.subspan(n);
    advance();
  }
  void advance() noexcept {
    if (rest_.empty() && !more_.empty()) {
      rest_ = more_;
      more_ = {};
    }
  }

  std::span<const std::byte> rest_;
  std::span<const std::byte> more_;
};

// ---- value -> wire ----

inline void split_timeout(timeout t, std::uint64_t& sec, std::uint32_t& nsec) noexcept {
  if (t.count() <= 0) {
    sec = 0;
    nsec = 0;
    return;
  }
  auto s = std::chrono::duration_cast<std::chrono::seconds>(t);
  sec = static_cast<std::uint64_t>(s.count());
  nsec = static_cast<std::uint32_t>((t - s).count());
}

inline proto::attr encode_attr(const struct stat& st) noexcept {
  proto::attr a{};
  a.ino = st.st_ino;
  a.size = static_cast<std::uint64_t>(st.st_size);
  a.blocks = static_cast<std::uint64_t>(st.st_blocks);
  a.atime = static_cast<std::uint64_t>(st.st_atim.tv_sec);
  a.mtime = static_cast<std::uint64_t>(st.st_mtim.tv_sec);
  a.ctime = static_cast<std::uint64_t>(st.st_ctim.tv_sec);
  a.atimensec = static_cast<std::uint32_t>(st.st_atim.tv_nsec);
  a.mtimensec = static_cast<std::uint32_t>(st.st_mtim.tv_nsec);
  a.ctimensec = static_cast<std::uint32_t>(st.st_ctim.tv_nsec);
  a.mode = st.st_mode;
  a.nlink = static_cast<std::uint32_t>(st.st_nlink);
  a.uid = st.st_uid;
  a.gid = st.st_gid;
  a.rdev = static_cast<std::uint32_t>(st.st_rdev);
  a.blksize = static_cast<std::uint32_t>(st.st_blksize);
  return a;
}

inline proto::entry_out encode_entry(const entry& e) noexcept {
  proto::entry_out out{};
  out.nodeid = e.node;
  out.generation = e.generation;
  split_timeout(e.entry_valid_for, out.entry_valid, out.entry_valid_nsec);
  split_timeout(e.attr_valid_for, out.attr_valid, out.attr_valid_nsec);
  // A negative entry (node 0) carries no attributes; the kernel ignores them.
  if (e.node != 0) out.attr = encode_attr(e.st);
  return out;
}

inline proto::attr_out encode_attr_out(const attr& a) noexcept {
  proto::attr_out out{};
  split_timeout(a.valid_for, out.attr_valid, out.attr_valid_nsec);
  out.attr = encode_attr(a.st);
  return out;
}

inline proto::open_out encode_open(const opened& o) noexcept {
  proto::open_out out{};
  out.fh = o.fh;
  std::uint32_t f = 0;
  if (o.direct_io) f |= proto::fopen::direct_io;
  if (o.keep_cache) f |= proto::fopen::keep_cache;
  if (o.nonseekable) f |= proto::fopen::nonseekable;
  if (o.cache_dir) f |= proto::fopen::cache_dir;
  if (o.stream) f |= proto::fopen::stream;
  if (o.noflush) f |= proto::fopen::noflush;
  if (o.parallel_direct_writes) f |= proto::fopen::parallel_direct_writes;
  if (o.backing_id > 0) f |= proto::fopen::passthrough;
  out.open_flags = f;
  out.backing_id = o.backing_id;
  return out;
}

inline proto::kstatfs encode_statfs(const fs_stats& s) noexcept {
  proto::kstatfs k{};
  k.blocks = s.f_blocks;
  k.bfree = s.f_bfree;
  k.bavail = s.f_bavail;
  k.files = s.f_files;
  k.ffree = s.f_ffree;
  k.bsize = static_cast<std::uint32_t>(s.f_bsize);
  k.namelen = static_cast<std::uint32_t>(s.f_namemax);
  k.frsize = static_cast<std::uint32_t>(s.f_frsize);
  return k;
}

inline proto::statx_out encode_statx_out(const extended_attr& x) noexcept {
  static_assert(sizeof(struct statx) == sizeof(proto::statx), "glibc's struct statx is statx(2)'s");
  proto::statx_out out{};
  split_timeout(x.valid_for, out.attr_valid, out.attr_valid_nsec);
  out.stat = std::bit_cast<proto::statx>(x.stx);
  return out;
}

// The kernel's lock ranges are inclusive and end at OFFSET_MAX for "to EOF",
// which is exactly posix_lock's convention.
inline posix_lock decode_lock(const proto::file_lock& l) noexcept {
  posix_lock out;
  out.type = static_cast<short>(l.type);
  out.start = static_cast<off_t>(std::min<std::uint64_t>(l.start, posix_lock::lock_to_eof));
  out.end = static_cast<off_t>(std::min<std::uint64_t>(l.end, posix_lock::lock_to_eof));
  out.pid = static_cast<pid_t>(l.pid);
  return out;
}
inline proto::file_lock encode_lock(const posix_lock& l) noexcept {
  proto::file_lock out{};
  out.type = static_cast<std::uint32_t>(l.type);
  out.start = static_cast<std::uint64_t>(l.start);
  out.end = static_cast<std::uint64_t>(l.end);
  out.pid = static_cast<std::uint32_t>(l.pid);
  return out;
}

inline timespec decode_time(std::uint64_t sec, std::uint32_t nsec) noexcept {
  return timespec{static_cast<time_t>(sec), static_cast<long>(nsec)};
}

// ---- replies ----

// Where replies go. The transport provides it: a /dev/fuse fd (the clone the
// request came from) or an io_uring entry. `send` gets the out_header as the
// first iovec and returns 0 or a negative errno.
struct reply_sink {
  void* context = nullptr;
  int (*send)(void* context, const iovec* iov, int count) = nullptr;
};

// One message: the out_header, then `first` and `second` back to back (either
// may be empty). Replies put the errno in `error` (as a positive number);
// notifications put their code in `error` with unique == 0.
inline int send_message(const reply_sink& sink, std::uint64_t unique, std::int32_t error,
                        std::span<const std::byte> first = {}, std::span<const std::byte> second = {}) {
  proto::out_header h{};
  h.len = static_cast<std::uint32_t>(sizeof h + first.size() + second.size());
  h.error = error;
  h.unique = unique;
  iovec iov[3] = {{&h, sizeof h}};
  int count = 1;
  for (auto part : {first, second})
    if (!part.empty()) iov[count++] = {const_cast<std::byte*>(part.data()), part.size()};
  return sink.send(sink.context, iov, count);
}

inline int send_reply(const reply_sink& sink, std::uint64_t unique, int error,
                      std::span<const std::byte> payload = {}, std::span<const std::byte> more = {}) {
  return send_message(sink, unique, -error, payload, more);
}

template <class T>
std::span<const std::byte> bytes_of(const T& value, std::size_t size = sizeof(T)) noexcept {
  static_assert(std::is_trivially_copyable_v<T>);
  return {reinterpret_cast<const std::byte*>(&value), std::min(size, sizeof(T))};
}

}  // namespace fusexx::detail
