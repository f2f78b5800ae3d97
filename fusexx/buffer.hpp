#pragma once
// A request buffer: one page-aligned block that holds a request as read from
// the kernel and, for READ-like operations, the reply built in place.
#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <span>

namespace fusexx {
namespace detail {
// Frees a buffer's block: aligned operator delete, or munmap for a pinned one.
struct buffer_release {
  static constexpr std::size_t alignment = 4096;
  std::size_t length = 0;
  bool mapped = false;
  void operator()(std::byte* p) const noexcept {
    if (mapped) ::munmap(p, length);
    else ::operator delete(p, std::align_val_t{alignment});
  }
};
}  // namespace detail

class buffer {
 public:
  buffer() = default;
  explicit buffer(std::size_t size)
      : data_(static_cast<std::byte*>(::operator new(size, std::align_val_t{alignment})), release{size, false}),
        size_(size) {}

  // A buffer the kernel can always copy a request into, even while this
  // process is being killed: its own pages, every one touched now, and not
  // shared copy-on-write with a child this process forks (MADV_DONTFORK). A
  // copy that needs a page fault (a page not yet touched, or one a fork()
  // made copy-on-write) fails while SIGKILL is pending, and the kernel then
  // ends the request with EIO instead of keeping it for a resend
  // (docs/restart.md, "Crash recovery"). For supervised servers.
  static buffer pinned(std::size_t size) {
    const std::size_t length = (size + alignment - 1) & ~(alignment - 1);
    void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    (void)::madvise(p, length, MADV_DONTFORK);
    if (::madvise(p, length, 23 /* MADV_POPULATE_WRITE, Linux 5.14 */) != 0) std::memset(p, 0, length);
    buffer b;
    b.data_ = std::unique_ptr<std::byte, release>(static_cast<std::byte*>(p), release{length, true});
    b.size_ = size;
    return b;
  }

  std::byte* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  std::span<std::byte> span() const noexcept { return {data_.get(), size_}; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

 private:
  using release = detail::buffer_release;
  static constexpr std::size_t alignment = release::alignment;
  std::unique_ptr<std::byte, release> data_;
  std::size_t size_ = 0;
};

}  // namespace fusexx
