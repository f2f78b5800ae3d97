#pragma once
// Open files and directories, owned by the filesystem. The file handle the
// kernel keeps is the object's address (no lookup on the I/O path); the
// registry still owns every object, so those the kernel never released (the
// server stopped while files were open: no RELEASE comes after an abort) are
// freed with the filesystem instead of leaking.
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include <fusexx/types.hpp>

namespace passthrough {

template <class T>
class handles {
 public:
  // Takes `object` over; returns its handle.
  fusexx::fhandle add(std::unique_ptr<T> object) {
    const auto fh = static_cast<fusexx::fhandle>(reinterpret_cast<std::uintptr_t>(object.get()));
    std::lock_guard g(mutex_);
    owned_.emplace(fh, std::move(object));
    return fh;
  }
  // The object behind a handle the kernel passed (valid until take()).
  static T& at(fusexx::fhandle fh) noexcept { return *reinterpret_cast<T*>(static_cast<std::uintptr_t>(fh)); }
  // Gives up ownership at release.
  std::unique_ptr<T> take(fusexx::fhandle fh) {
    std::lock_guard g(mutex_);
    auto node = owned_.extract(fh);
    return node ? std::move(node.mapped()) : nullptr;
  }
  std::size_t size() const {
    std::lock_guard g(mutex_);
    return owned_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<fusexx::fhandle, std::unique_ptr<T>> owned_;
};

}  // namespace passthrough
