#pragma once
// A request buffer: one page-aligned block that holds a request as read from
// the kernel and, for READ-like operations, the reply built in place.
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>

namespace fusexx {

class buffer {
 public:
  buffer() = default;
  explicit buffer(std::size_t size)
      : data_(static_cast<std::byte*>(::operator new(size, std::align_val_t{alignment}))), size_(size) {}

  std::byte* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  std::span<std::byte> span() const noexcept { return {data_.get(), size_}; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

 private:
  static constexpr std::size_t alignment = 4096;
  struct aligned_delete {
    void operator()(std::byte* p) const noexcept { ::operator delete(p, std::align_val_t{alignment}); }
  };
  std::unique_ptr<std::byte, aligned_delete> data_;
  std::size_t size_ = 0;
};

}  // namespace fusexx
