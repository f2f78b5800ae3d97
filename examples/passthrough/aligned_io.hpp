#pragma once
// O_DIRECT I/O from and into the framework's buffers. A file opened with
// O_DIRECT needs its memory aligned to the device's block size. Both fusexx
// transports hand a WRITE's data and a READ's reply area to the handler
// page-aligned, so normally nothing is copied; the bounce buffer below is for
// memory that is not (a handler called from elsewhere, or a future transport
// that cannot align). The buffer
// belongs to the one operation (a coroutine may be suspended on the ring while
// the same thread serves other requests, so nothing is shared per thread).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>

namespace passthrough {

// 4096 covers every logical block size in practice (512 and 4096).
inline constexpr std::size_t direct_io_alignment = 4096;

inline bool aligned_for_direct_io(const void* p) noexcept {
  return reinterpret_cast<std::uintptr_t>(p) % direct_io_alignment == 0;
}

class aligned_buffer {
 public:
  explicit aligned_buffer(std::size_t size)
      : data_(static_cast<std::byte*>(::operator new(round_up(size), std::align_val_t{direct_io_alignment}))),
        size_(size) {}
  std::span<std::byte> span() const noexcept { return {data_.get(), size_}; }

 private:
  static std::size_t round_up(std::size_t n) {
    return (n + direct_io_alignment - 1) / direct_io_alignment * direct_io_alignment + (n == 0 ? direct_io_alignment : 0);
  }
  struct release {
    void operator()(std::byte* p) const noexcept { ::operator delete(p, std::align_val_t{direct_io_alignment}); }
  };
  std::unique_ptr<std::byte, release> data_;
  std::size_t size_;
};

}  // namespace passthrough
