#pragma once
// A byte buffer that lives in a memfd, mapped, and grows as it is written:
// for data that ends up in a memfd anyway (a snapshot that is sealed and
// handed on), so it is built where it stays — one copy, into pages
// allocated a stretch ahead of the writes — instead of in the heap and then
// copied over.
//
// On this project's VM a fresh page costs far more than the copy into it
// (writing 1 MiB into pages never touched: 2.7 ms faulted in one by one,
// 1.4 ms allocated ahead with MADV_POPULATE_WRITE, 0.04 ms to overwrite),
// so building a checkpoint in the heap and copying it into its memfd paid
// for fresh pages twice.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <span>
#include <utility>

#include "../fd.hpp"

namespace fusexx::detail {

class memfd_buffer {
 public:
  memfd_buffer() = default;
  memfd_buffer(memfd_buffer&& o) noexcept { *this = std::move(o); }
  memfd_buffer& operator=(memfd_buffer&& o) noexcept {
    if (this != &o) {
      unmap();
      fd_ = std::move(o.fd_);
      base_ = std::exchange(o.base_, nullptr);
      mapped_ = std::exchange(o.mapped_, 0);
      populated_ = std::exchange(o.populated_, 0);
      size_ = std::exchange(o.size_, 0);
      error_ = std::exchange(o.error_, 0);
    }
    return *this;
  }
  memfd_buffer(const memfd_buffer&) = delete;
  memfd_buffer& operator=(const memfd_buffer&) = delete;
  ~memfd_buffer() { unmap(); }

  // A memfd named `name`, mapped with room for `capacity` bytes (its pages
  // are allocated as the writes come near them). Check ok(): false with
  // error() when the memfd could not be made.
  static memfd_buffer create(const char* name, std::size_t capacity, unsigned flags) {
    memfd_buffer b;
    b.fd_ = unique_fd(::memfd_create(name, flags));
    if (!b.fd_) b.error_ = errno;
    else b.reserve(std::max<std::size_t>(capacity, minimum));
    return b;
  }

  bool ok() const noexcept { return base_ != nullptr && error_ == 0; }
  int error() const noexcept { return error_ != 0 ? error_ : EBADF; }
  std::size_t size() const noexcept { return size_; }
  std::byte* data() noexcept { return base_; }
  std::span<const std::byte> bytes() const noexcept { return {base_, size_}; }

  // Appends `n` bytes (growing the memfd if needed). After a failure to
  // grow nothing more is appended and ok() is false.
  void append(const void* p, std::size_t n) {
    if (n == 0) return;
    if (size_ + n > populated_ && !populate_to(size_ + n)) return;
    std::memcpy(base_ + size_, p, n);
    size_ += n;
  }

  // The memfd, its size cut to what was written, the mapping gone (sealing
  // against writes needs every writable mapping gone). The buffer is empty
  // afterwards.
  unique_fd release() {
    unmap();
    if (fd_ && ::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) {
      error_ = errno;
      return {};
    }
    size_ = 0;
    return std::move(fd_);
  }

 private:
  static constexpr std::size_t minimum = 64 * 1024;
  // How far ahead of the writes pages are allocated, in one madvise each.
  static constexpr std::size_t stretch = 2 * 1024 * 1024;

  static std::size_t page_up(std::size_t n) noexcept {
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return (n + page - 1) / page * page;
  }

  // Makes the memfd and its mapping at least `capacity` bytes long.
  bool reserve(std::size_t capacity) {
    if (error_ != 0) return false;
    capacity = page_up(capacity);
    if (capacity <= mapped_) return true;
    if (::ftruncate(fd_.get(), static_cast<off_t>(capacity)) != 0) return fail();
    void* p = base_ ? ::mremap(base_, mapped_, capacity, MREMAP_MAYMOVE)
                    : ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (p == MAP_FAILED) return fail();
    base_ = static_cast<std::byte*>(p);
    mapped_ = capacity;
    return true;
  }

  // Allocates the pages up to `end` and a stretch past it (within the
  // mapping, which grows to hold `end`), in one madvise: page by page each
  // would cost a fault. Where MADV_POPULATE_WRITE is missing (before Linux
  // 5.14) the copies fault them in.
  bool populate_to(std::size_t end) {
    if (end > mapped_ && !reserve(std::max(end, mapped_ * 2))) return false;
    const std::size_t to = std::min(mapped_, page_up(std::max(end, populated_ + stretch)));
    (void)::madvise(base_ + populated_, to - populated_, MADV_POPULATE_WRITE);
    populated_ = to;
    return true;
  }
  bool fail() {
    error_ = errno;
    return false;
  }
  void unmap() noexcept {
    if (base_) ::munmap(base_, mapped_);
    base_ = nullptr;
    mapped_ = 0;
    populated_ = 0;
  }

  unique_fd fd_;
  std::byte* base_ = nullptr;
  std::size_t mapped_ = 0;     // bytes mapped (and the memfd's size while building)
  std::size_t populated_ = 0;  // bytes from the start allocated (page-aligned)
  std::size_t size_ = 0;
  int error_ = 0;
};

}  // namespace fusexx::detail
