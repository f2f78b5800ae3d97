#pragma once
// The memory of the io_uring queues' entries: every entry's header area and
// payload buffer, in one memfd mapped shared.
//
// Why a memfd: the kernel keeps, per entry, the *addresses* of its two
// buffers, and copies requests into them and replies out of them in the
// context of whichever task submitted the entry's current command. A
// successor process that maps the same memfd at the same address can
// therefore read a request the kernel placed in one of its predecessor's
// entries, write the reply there, and commit it from its own ring, which
// then owns the entry (docs/restart.md, "FUSE over io_uring"). Anonymous
// memory would be gone with the predecessor.
//
// Layout: queue q's entry i is slot q * depth + i; a slot is one page for
// the header area (proto::uring_req_header, 288 bytes) and then the payload
// buffer, rounded up to whole pages, so every payload starts on a page
// boundary (O_DIRECT needs no bounce copy).
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>

#include "../failure.hpp"
#include "../fd.hpp"
#include "../proto/abi.hpp"

namespace fusexx::transport {

// Where and how the entries lie: what a successor needs, beside the memfd.
struct entry_layout {
  std::uint64_t base = 0;     // the address the region is mapped at
  std::uint64_t stride = 0;   // bytes from one slot to the next
  std::uint64_t payload = 0;  // bytes of each payload buffer
  std::uint32_t queues = 0;
  std::uint32_t depth = 0;    // entries per queue

  std::uint64_t size() const noexcept { return stride * queues * depth; }
};

class entry_region {
 public:
  static constexpr std::size_t page = 4096;

  // A new region for `queues` queues of `depth` entries with `payload`-byte
  // payload buffers, mapped where the kernel chooses.
  static outcome<std::shared_ptr<entry_region>> create(unsigned queues, unsigned depth, std::size_t payload) {
    entry_layout l;
    l.payload = payload;
    l.stride = page + (payload + page - 1) / page * page;
    l.queues = queues;
    l.depth = depth;
    unique_fd fd(::memfd_create("fusexx-uring-entries", MFD_CLOEXEC));
    if (!fd) return fail(errno, "memfd_create for the io_uring entries: {}", std::strerror(errno));
    if (::ftruncate(fd.get(), static_cast<off_t>(l.size())) != 0)
      return fail(errno, "sizing the io_uring entries' memfd ({} bytes): {}", l.size(), std::strerror(errno));
    void* at = ::mmap(nullptr, l.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (at == MAP_FAILED) return fail(errno, "mapping the io_uring entries: {}", std::strerror(errno));
    l.base = reinterpret_cast<std::uintptr_t>(at);
    return std::shared_ptr<entry_region>(new entry_region(std::move(fd), l));
  }

  // A predecessor's region, mapped at the address it has there. Fails when
  // this process already uses that address (or the memfd does not match).
  static outcome<std::shared_ptr<entry_region>> map(unique_fd fd, const entry_layout& l) {
    if (l.base == 0 || l.base % page != 0 || l.stride < page + l.payload || l.stride % page != 0 || l.queues == 0 ||
        l.depth == 0 || l.size() / l.stride / l.depth != l.queues)
      return fail(EINVAL, "the io_uring entry layout in the snapshot is not valid");
    struct stat sb {};
    if (::fstat(fd.get(), &sb) != 0 || static_cast<std::uint64_t>(sb.st_size) != l.size())
      return fail(EINVAL, "the io_uring entries' memfd is not the size its layout says ({} bytes)", l.size());
    void* want = reinterpret_cast<void*>(static_cast<std::uintptr_t>(l.base));
    void* at = ::mmap(want, l.size(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd.get(), 0);
    if (at == MAP_FAILED)
      return fail(errno, "mapping the predecessor's io_uring entries at {:#x}: {}{}", l.base, std::strerror(errno),
                  errno == EEXIST ? " (this process uses that address already; try again)" : "");
    if (at != want) {  // kernels before 4.17 ignore MAP_FIXED_NOREPLACE and place it elsewhere
      ::munmap(at, l.size());
      return fail(EEXIST, "could not map the predecessor's io_uring entries at {:#x}", l.base);
    }
    return std::shared_ptr<entry_region>(new entry_region(std::move(fd), l));
  }

  entry_region(const entry_region&) = delete;
  entry_region& operator=(const entry_region&) = delete;
  ~entry_region() { ::munmap(reinterpret_cast<void*>(static_cast<std::uintptr_t>(layout_.base)), layout_.size()); }

  proto::uring_req_header* header(unsigned q, unsigned i) const noexcept {
    return reinterpret_cast<proto::uring_req_header*>(slot(q, i));
  }
  std::byte* payload(unsigned q, unsigned i) const noexcept { return slot(q, i) + page; }
  const entry_layout& layout() const noexcept { return layout_; }
  int fd() const noexcept { return fd_.get(); }

 private:
  entry_region(unique_fd fd, entry_layout l) : fd_(std::move(fd)), layout_(l) {}
  std::byte* slot(unsigned q, unsigned i) const noexcept {
    return reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(layout_.base)) +
           (std::uint64_t{q} * layout_.depth + i) * layout_.stride;
  }

  unique_fd fd_;
  entry_layout layout_;
};

}  // namespace fusexx::transport
