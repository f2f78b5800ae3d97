#pragma once
// A snapshot: what a server hands its successor, in one checked blob.
//
//   offset  size  field
//   0       8     magic "fusexxSS"
//   8       4     format version (little-endian), currently 1
//   12      4     header size (32)
//   16      8     payload length in bytes
//   24      4     CRC-32C of the payload
//   28      4     reserved, 0
//   32      …     payload
//
// The payload is a sequence of values written by snapshot_writer and read
// back in the same order by snapshot_reader: fixed-width little-endian
// integers, and byte strings as a u64 length followed by the bytes. A reader
// never reads past the payload: every read checks, and a short or corrupt
// snapshot is an error (EBADMSG), never undefined behaviour. A snapshot of a
// newer format version is refused (EPROTO) before anything is read.
//
// Open files cannot be written into bytes: a filesystem that holds fds (a
// passthrough's O_PATH fds, its open files with their offsets and OFD locks)
// puts each with fd(), which writes its index (u32) into the payload. The
// fds themselves travel beside the snapshot (SCM_RIGHTS, handover.hpp; or
// the service manager's fd store), in index order, and the reader hands
// each out once, by that index.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <array>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../detail/memfd_buffer.hpp"
#include "../failure.hpp"
#include "../fd.hpp"
#include "../result.hpp"

namespace fusexx {

inline constexpr std::uint32_t snapshot_format_version = 1;

namespace detail {

inline constexpr char snapshot_magic[8] = {'f', 'u', 's', 'e', 'x', 'x', 'S', 'S'};
inline constexpr std::size_t snapshot_header_size = 32;

// CRC-32C (Castagnoli), the checksum of the payload. x86-64 has it as an
// instruction (SSE 4.2): a snapshot of hundreds of megabytes is checked in
// tens of milliseconds instead of seconds, twice per handover.
inline std::uint32_t crc32c_portable(std::span<const std::byte> data, std::uint32_t crc) {
  static constexpr auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::byte b : data) crc = table[(crc ^ static_cast<std::uint8_t>(b)) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_sse42(std::span<const std::byte> data,
                                                                    std::uint32_t crc) {
  const std::byte* p = data.data();
  std::size_t n = data.size();
  std::uint64_t c = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
  }
  auto c32 = static_cast<std::uint32_t>(c);
  for (; n > 0; ++p, --n) c32 = __builtin_ia32_crc32qi(c32, static_cast<unsigned char>(*p));
  return ~c32;
}
#endif

inline std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t crc = 0) {
#if defined(__x86_64__)
  // Asked with cpuid on first use: __builtin_cpu_supports would link
  // libgcc's CPU model, whose constructor runs cpuid at every program's
  // start — a trap to the hypervisor each time in a VM, ~80 us of a mount's
  // start-up on the benchmark machine (docs/benchmarks.md, mount time).
  static const bool hardware = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2) != 0;
  }();
  if (hardware) return crc32c_sse42(data, crc);
#endif
  return crc32c_portable(data, crc);
}

template <class T>
void put_le(std::byte* at, T value) {
  static_assert(std::is_unsigned_v<T>);
  for (std::size_t i = 0; i < sizeof(T); ++i) at[i] = static_cast<std::byte>(value >> (8 * i));
}
template <class T>
T get_le(const std::byte* at) {
  static_assert(std::is_unsigned_v<T>);
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(static_cast<std::uint8_t>(at[i])) << (8 * i);
  return value;
}

}  // namespace detail

// Builds a snapshot's payload; seal() turns it into a sealed memfd.
class snapshot_writer {
 public:
  snapshot_writer() = default;
  // A writer that builds the payload in the memfd seal() hands over, mapped
  // with room for `expected` bytes (a checkpoint knows the last one's size)
  // and its pages allocated as the writes come: a big snapshot is then
  // copied once, not built in the heap and copied into its memfd
  // (detail/memfd_buffer.hpp).
  static snapshot_writer in_memfd(std::size_t expected) {
    snapshot_writer w;
    w.memfd_ = detail::memfd_buffer::create("fusexx-snapshot", detail::snapshot_header_size + expected,
                                            MFD_CLOEXEC | MFD_ALLOW_SEALING);
    const std::byte header[detail::snapshot_header_size]{};  // written by seal()
    w.memfd_.append(header, sizeof header);
    w.in_memfd_ = true;
    return w;
  }

  void u8(std::uint8_t v) { put(v); }
  void u16(std::uint16_t v) { put(v); }
  void u32(std::uint32_t v) { put(v); }
  void u64(std::uint64_t v) { put(v); }
  void i64(std::int64_t v) { put(static_cast<std::uint64_t>(v)); }
  void boolean(bool v) { put(std::uint8_t{v}); }
  void bytes(std::span<const std::byte> b) {
    u64(b.size());
    append(b.data(), b.size());
  }
  void str(std::string_view s) { bytes(std::as_bytes(std::span(s.data(), s.size()))); }
  // An open file that goes beside the snapshot: its index here. `fd` is
  // borrowed: it must stay open until the snapshot has been handed over
  // (the writer is used while the server is parked, and the filesystem
  // closes nothing then).
  void fd(int fd) {
    if (by_number_) return u32(static_cast<std::uint32_t>(fd));
    u32(static_cast<std::uint32_t>(fds_.size()));
    fds_.push_back(fd);
  }
  // A checkpoint of a server that shares its fd table with its keeper
  // (restart/keeper.hpp): the fds stay where they are, and fd() writes
  // their numbers; a successor in the same table reads them back as they
  // are (snapshot_reader::fds_by_number).
  void fds_by_number() noexcept { by_number_ = true; }

  std::size_t size() const noexcept { return payload().size(); }
  // The fds put with fd(), in index order: what goes beside the snapshot.
  const std::vector<int>& fds() const noexcept { return fds_; }

  // The whole snapshot (header + payload) as bytes: for small messages.
  std::vector<std::byte> seal_to_bytes() const {
    std::vector<std::byte> out(detail::snapshot_header_size);
    write_header(out.data());
    const auto p = payload();
    out.insert(out.end(), p.begin(), p.end());
    return out;
  }

  // The whole snapshot in a memfd, sealed against any change, positioned at
  // 0: what goes to the successor (no socket buffer bounds its size). A
  // writer made in_memfd() hands over the memfd it built, once.
  outcome<unique_fd> seal() {
    if (spent_) return fail(EBADF, "the snapshot was sealed already (its memfd handed over)");
    if (in_memfd_) return seal_in_place();
    unique_fd fd(::memfd_create("fusexx-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) return fail(errno, "memfd_create: {}", std::strerror(errno));
    // Copied in through a mapping: one memcpy, no write() page by page.
    const std::size_t size = detail::snapshot_header_size + payload_.size();
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
      return fail(errno, "sizing the snapshot ({} bytes): {}", size, std::strerror(errno));
    void* at = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (at == MAP_FAILED) return fail(errno, "mapping the snapshot: {}", std::strerror(errno));
    write_header(static_cast<std::byte*>(at));
    if (!payload_.empty()) std::memcpy(static_cast<std::byte*>(at) + detail::snapshot_header_size, payload_.data(), payload_.size());
    ::munmap(at, size);  // F_SEAL_WRITE is refused while a writable shared mapping exists
    return sealed(std::move(fd));
  }

 private:
  outcome<unique_fd> seal_in_place() {
    if (!memfd_.ok())
      return fail(memfd_.error(), "building the snapshot in a memfd ({} bytes so far): {}", memfd_.size(),
                  std::strerror(memfd_.error()));
    write_header(memfd_.data());
    in_memfd_ = false;  // handed over: the writer is spent
    spent_ = true;
    unique_fd fd = memfd_.release();
    if (!fd) return fail(memfd_.error(), "sizing the snapshot: {}", std::strerror(memfd_.error()));
    return sealed(std::move(fd));
  }
  static outcome<unique_fd> sealed(unique_fd fd) {
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
      return fail(errno, "sealing the snapshot: {}", std::strerror(errno));
    ::lseek(fd.get(), 0, SEEK_SET);
    return fd;
  }
  std::span<const std::byte> payload() const noexcept {
    if (in_memfd_) return memfd_.bytes().subspan(std::min(memfd_.size(), detail::snapshot_header_size));
    return payload_;
  }
  void append(const std::byte* p, std::size_t n) {
    if (in_memfd_) memfd_.append(p, n);
    else payload_.insert(payload_.end(), p, p + n);
  }

  void write_header(std::byte* header) const {
    std::memcpy(header, detail::snapshot_magic, sizeof detail::snapshot_magic);
    detail::put_le<std::uint32_t>(header + 8, snapshot_format_version);
    detail::put_le<std::uint32_t>(header + 12, detail::snapshot_header_size);
    detail::put_le<std::uint64_t>(header + 16, payload().size());
    detail::put_le<std::uint32_t>(header + 24, detail::crc32c(payload()));
  }
  template <class T>
  void put(T v) {
    std::byte b[sizeof(T)];
    detail::put_le<T>(b, v);
    append(b, sizeof(T));
  }

  std::vector<std::byte> payload_;  // unless in_memfd_
  detail::memfd_buffer memfd_;      // in_memfd_: the header's room, then the payload
  bool in_memfd_ = false;
  bool spent_ = false;              // in_memfd_'s memfd was sealed and handed over
  std::vector<int> fds_;
  bool by_number_ = false;
};

// Reads a snapshot back. open() checks the header and the checksum; every
// read after that is bounds-checked: a failed read returns false (or an
// error) and leaves the reader failed, so a restore can read on and check
// once at the end (ok()).
class snapshot_reader {
 public:
  // Maps and checks a snapshot memfd. A sealed one (it cannot shrink or
  // change) is read where it lies; any other is copied first, so nobody can
  // change it under the reader.
  static outcome<snapshot_reader> open(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return fusexx::fail(errno, "snapshot: fstat: {}", std::strerror(errno));
    const std::size_t size = static_cast<std::size_t>(st.st_size);
    const int seals = ::fcntl(fd, F_GET_SEALS);
    if (size > 0 && seals >= 0 && (seals & (F_SEAL_SHRINK | F_SEAL_WRITE)) == (F_SEAL_SHRINK | F_SEAL_WRITE)) {
      void* at = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (at != MAP_FAILED)
        return checked(std::shared_ptr<const std::byte>(static_cast<const std::byte*>(at),
                                                        [size](const std::byte* p) { ::munmap(const_cast<std::byte*>(p), size); }),
                       size);
    }
    std::vector<std::byte> all(size);
    std::size_t at = 0;
    while (at < all.size()) {
      ssize_t n = ::pread(fd, all.data() + at, all.size() - at, static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      at += static_cast<std::size_t>(n);
    }
    all.resize(at);
    return from_bytes(std::move(all));
  }
  static outcome<snapshot_reader> from_bytes(std::vector<std::byte> all) {
    auto owned = std::make_shared<std::vector<std::byte>>(std::move(all));
    const std::size_t size = owned->size();
    return checked(std::shared_ptr<const std::byte>(owned, owned->data()), size);
  }

 private:
  // Checks the header and the checksum of `size` bytes at `bytes`.
  static outcome<snapshot_reader> checked(std::shared_ptr<const std::byte> bytes, std::size_t size) {
    const std::byte* base = bytes.get();
    if (size < detail::snapshot_header_size || std::memcmp(base, detail::snapshot_magic, 8) != 0)
      return fusexx::fail(EBADMSG, "not a fusexx snapshot (bad magic)");
    const auto version = detail::get_le<std::uint32_t>(base + 8);
    if (version > snapshot_format_version)
      return fusexx::fail(EPROTO, "the snapshot is of format {}, newer than this fusexx reads ({})", version,
                  snapshot_format_version);
    const auto header = detail::get_le<std::uint32_t>(base + 12);
    const auto length = detail::get_le<std::uint64_t>(base + 16);
    const auto crc = detail::get_le<std::uint32_t>(base + 24);
    if (header < detail::snapshot_header_size || header > size || length != size - header)
      return fusexx::fail(EBADMSG, "the snapshot is truncated or its length is corrupt ({} payload bytes announced, {} present)",
                  length, size < header ? 0 : size - header);
    std::span<const std::byte> payload(base + header, static_cast<std::size_t>(length));
    if (detail::crc32c(payload) != crc) return fusexx::fail(EBADMSG, "the snapshot's checksum does not match (corrupt)");
    snapshot_reader r;
    r.owner_ = std::move(bytes);
    r.all_ = {base, size};
    r.at_ = header;
    return r;
  }

 public:
  bool u8(std::uint8_t& v) { return get(v); }
  bool u16(std::uint16_t& v) { return get(v); }
  bool u32(std::uint32_t& v) { return get(v); }
  bool u64(std::uint64_t& v) { return get(v); }
  bool i64(std::int64_t& v) {
    std::uint64_t u;
    if (!get(u)) return false;
    v = static_cast<std::int64_t>(u);
    return true;
  }
  bool boolean(bool& v) {
    std::uint8_t b;
    if (!get(b) || b > 1) return fail();
    v = b != 0;
    return true;
  }
  // A view of the next byte string, valid as long as the reader.
  bool bytes(std::span<const std::byte>& out) {
    std::uint64_t n;
    if (!get(n) || n > left()) return fail();
    out = {all_.data() + at_, static_cast<std::size_t>(n)};
    at_ += static_cast<std::size_t>(n);
    return true;
  }
  bool str(std::string& out) {
    std::span<const std::byte> b;
    if (!bytes(b)) return false;
    out.assign(reinterpret_cast<const char*>(b.data()), b.size());
    return true;
  }
  // A count of things each at least `min_each` bytes long: refused when the
  // rest of the snapshot could not hold that many (a corrupt count must not
  // make a restore allocate without bound).
  bool count(std::uint64_t& n, std::size_t min_each = 1) {
    if (!get(n) || (min_each > 0 && n > left() / min_each)) return fail();
    return true;
  }

  // The fd written with snapshot_writer::fd, now owned by the caller. Each
  // is handed out once; an index that was not sent, or asked for twice,
  // fails the reader (a corrupt snapshot, or fds lost on the way).
  bool fd(unique_fd& out) {
    std::uint32_t index = 0;
    if (by_number_) {
      // A number in the fd table this process shares with its keeper:
      // nothing checks here that it is still the file it was (the
      // filesystem does, after the redo: docs/restart.md).
      if (!get(index) || index > static_cast<std::uint32_t>(INT32_MAX)) return fail();
      out.reset(static_cast<int>(index));
      return true;
    }
    if (!get(index) || index >= fds_.size() || !fds_[index]) return fail();
    out = std::move(fds_[index]);
    return true;
  }
  // fd() reads numbers (snapshot_writer::fds_by_number).
  void fds_by_number() noexcept { by_number_ = true; }
  bool fds_are_numbers() const noexcept { return by_number_; }
  // The fds that came beside the snapshot, in index order.
  void attach_fds(std::vector<unique_fd> fds) { fds_ = std::move(fds); }
  // Fds that came and nobody took (closed with the reader).
  std::size_t fds_left() const noexcept {
    std::size_t n = 0;
    for (const auto& f : fds_) n += f ? 1 : 0;
    return n;
  }

  bool ok() const noexcept { return ok_; }
  std::size_t left() const noexcept { return all_.size() - at_; }

 private:
  template <class T>
  bool get(T& v) {
    if (!ok_ || left() < sizeof(T)) return fail();
    v = detail::get_le<T>(all_.data() + at_);
    at_ += sizeof(T);
    return true;
  }
  bool fail() noexcept {
    ok_ = false;
    return false;
  }

  std::shared_ptr<const std::byte> owner_;  // the mapping or the bytes all_ views
  std::span<const std::byte> all_;
  std::size_t at_ = 0;
  bool ok_ = true;
  bool by_number_ = false;
  std::vector<unique_fd> fds_;
};

}  // namespace fusexx
