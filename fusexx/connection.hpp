#pragma once
// The connection's negotiated parameters. The kernel offers capabilities in
// FUSE_INIT; the filesystem's init() says what it wants (and may tune sizes);
// the session grants offered ∩ wanted and records what the kernel accepted.
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "detail/kernel_file.hpp"
#include "proto/abi.hpp"

namespace fusexx {

class connection {
 public:
  // ---- what the kernel offered (valid from init() on) ----
  std::uint32_t proto_major() const noexcept { return major_; }
  std::uint32_t proto_minor() const noexcept { return minor_; }
  std::uint64_t offered() const noexcept { return offered_; }
  bool offers(std::uint64_t flag) const noexcept { return (offered_ & flag) == flag; }

  // ---- what the filesystem asks for (init() may change all of these) ----
  // Ask for a capability; returns whether the kernel offers it.
  bool want(std::uint64_t flag) noexcept {
    wanted_ |= flag;
    return offers(flag);
  }
  void unwant(std::uint64_t flag) noexcept { wanted_ &= ~flag; }
  std::uint64_t wanted() const noexcept { return wanted_; }

  // Largest WRITE payload. Kept equal to max_pages * page size by default,
  // which is what the kernel really sends (kernel-facts Q8).
  std::uint32_t max_write = 0;
  std::uint32_t max_readahead = UINT32_MAX;  // clamped to the kernel's offer
  std::uint16_t max_background = 0;          // 0: the kernel's default
  std::uint16_t congestion_threshold = 0;
  std::uint32_t time_gran = 1;               // timestamps are exact to the nanosecond
  std::uint32_t max_stack_depth = 0;         // passthrough: backing fs stacking depth (1..2)
  std::uint16_t request_timeout = 0;         // seconds; 0 = none

  // ---- the outcome (valid once INIT is answered) ----
  std::uint64_t granted() const noexcept { return granted_; }
  bool has(std::uint64_t flag) const noexcept { return (granted_ & flag) == flag; }
  std::uint32_t max_pages() const noexcept { return max_pages_; }
  bool initialized() const noexcept { return initialized_; }

  // Bytes a request buffer needs: the kernel refuses reads smaller than
  // max(8192, 80 + max_write), and READ replies are built in the same buffer
  // after the request, so leave room for max_pages of data beyond a header area.
  std::size_t request_buffer_size() const noexcept {
    std::size_t payload = std::max<std::size_t>({max_write, std::size_t{max_pages_} * page_size(), 8192});
    return header_room + payload;
  }
  static constexpr std::size_t header_room = 4096;

  static std::size_t page_size() noexcept {
    static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return size;
  }

  // The kernel clamps max_pages to this; asking for more only wastes buffer space.
  static std::uint32_t kernel_max_pages_limit() {
    const auto limit = detail::read_kernel_number("/proc/sys/fs/fuse/max_pages_limit");
    if (limit && *limit > 0 && *limit <= UINT32_MAX) return static_cast<std::uint32_t>(*limit);
    return 256;  // FUSE_MAX_MAX_PAGES, the limit before the sysctl existed
  }

  // ---- used by the session ----
  void set_offer(std::uint32_t major, std::uint32_t minor, std::uint64_t offered) noexcept {
    major_ = major;
    minor_ = minor;
    offered_ = offered;
  }
  void set_outcome(std::uint64_t granted, std::uint32_t max_pages) noexcept {
    granted_ = granted;
    max_pages_ = max_pages;
    initialized_ = true;
  }

 private:
  std::uint32_t major_ = 0, minor_ = 0;
  std::uint64_t offered_ = 0;
  std::uint64_t wanted_ = 0;
  std::uint64_t granted_ = 0;
  std::uint32_t max_pages_ = 32;  // the kernel's default without FUSE_MAX_PAGES
  bool initialized_ = false;
};

}  // namespace fusexx
