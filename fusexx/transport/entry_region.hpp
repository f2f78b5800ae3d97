#pragma once
// The memory of the io_uring queues' entries: every entry's header area and
// payload buffer, in one shared-memory file mapped shared.
//
// Why shared memory: the kernel keeps, per entry, the *addresses* of its two
// buffers, and copies requests into them and replies out of them in the
// context of whichever task submitted the entry's current command. A
// successor process that maps the same file at the same address can
// therefore read a request the kernel placed in one of its predecessor's
// entries, write the reply there, and commit it from its own ring, which
// then owns the entry (docs/restart.md, "FUSE over io_uring"). Anonymous
// memory would be gone with the predecessor.
//
// Why huge pages: a payload is the memory a backing file's O_DIRECT read or
// write goes to or from, and the kernel pins it page by page for the copy
// between it and the application. A 1 MiB payload in 4 KiB pages is up to
// 256 physically separate pieces; a disk takes a limited number in one
// request (254 for this machine's virtio disk: `max_segments`), so each
// 1 MiB read was split in two requests, one of 8 KiB, and libfuse's buffers,
// populated in one go, mostly happened to fit. In 2 MiB pages a payload is
// one or two pieces (docs/benchmarks.md: passthrough io_uring's 1 MiB reads
// and writes on ext4). A memfd cannot have them unless the administrator
// allows it (`shmem_enabled`), so when asked (uring_options::huge_pages) and
// where it may (CAP_SYS_ADMIN, as a server mounting FUSE itself has) the
// region is a file on a tmpfs instance of its own, mounted with
// `huge=always` and never attached to any directory (fsopen/fsmount: the
// mount lives as long as the file does). Otherwise, or where that fails, it
// is a memfd with 4 KiB pages. Not by default: a huge page is zeroed whole
// when first touched, and the first requests after the mount wait for it.
//
// Layout: queue q's entry i is slot q * depth + i; a slot is one page for
// the header area (proto::uring_req_header, 288 bytes) and then the payload
// buffer, rounded up to whole pages, so every payload starts on a page
// boundary (O_DIRECT needs no bounce copy).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>

#include "../detail/new_mount_api.hpp"
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
  static constexpr std::size_t huge_page = std::size_t{2} << 20;

  // A new region for `queues` queues of `depth` entries with `payload`-byte
  // payload buffers, mapped where the kernel chooses; in huge pages if
  // `huge_pages` and this process may mount a tmpfs (above).
  static outcome<std::shared_ptr<entry_region>> create(unsigned queues, unsigned depth, std::size_t payload,
                                                      bool huge_pages) {
    entry_layout l;
    l.payload = payload;
    l.stride = page + (payload + page - 1) / page * page;
    l.queues = queues;
    l.depth = depth;
    unique_fd fd = huge_pages ? huge_page_file() : unique_fd();
    const bool huge = static_cast<bool>(fd);
    if (!fd) fd = unique_fd(::memfd_create("fusexx-uring-entries", MFD_CLOEXEC));
    if (!fd) return fail(errno, "memfd_create for the io_uring entries: {}", std::strerror(errno));
    // In huge pages the file and its mapping end on a 2 MiB boundary: the
    // kernel gives a huge page only to a 2 MiB range that both cover whole,
    // and the last entry's payload would be left in 4 KiB pages past the last
    // boundary.
    const std::uint64_t bytes = huge ? round_up(l.size(), huge_page) : l.size();
    if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0)
      return fail(errno, "sizing the io_uring entries' file ({} bytes): {}", bytes, std::strerror(errno));
    void* at = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (at == MAP_FAILED) return fail(errno, "mapping the io_uring entries: {}", std::strerror(errno));
    l.base = reinterpret_cast<std::uintptr_t>(at);
    return std::shared_ptr<entry_region>(new entry_region(std::move(fd), l, bytes, huge));
  }

  // A predecessor's region, mapped at the address it has there. Fails when
  // this process already uses that address (or the file does not match).
  static outcome<std::shared_ptr<entry_region>> map(unique_fd fd, const entry_layout& l) {
    if (l.base == 0 || l.base % page != 0 || l.stride < page + l.payload || l.stride % page != 0 || l.queues == 0 ||
        l.depth == 0 || l.size() / l.stride / l.depth != l.queues)
      return fail(EINVAL, "the io_uring entry layout in the snapshot is not valid");
    // Its size is the layout's, or that rounded up to 2 MiB (in huge pages).
    struct stat sb {};
    if (::fstat(fd.get(), &sb) != 0) return fail(errno, "the io_uring entries' file: {}", std::strerror(errno));
    const auto bytes = static_cast<std::uint64_t>(sb.st_size);
    if (bytes != l.size() && bytes != round_up(l.size(), huge_page))
      return fail(EINVAL, "the io_uring entries' file is not the size its layout says ({} bytes)", l.size());
    void* want = reinterpret_cast<void*>(static_cast<std::uintptr_t>(l.base));
    void* at = ::mmap(want, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd.get(), 0);
    if (at == MAP_FAILED)
      return fail(errno, "mapping the predecessor's io_uring entries at {:#x}: {}{}", l.base, std::strerror(errno),
                  errno == EEXIST ? " (this process uses that address already; try again)" : "");
    if (at != want) {  // kernels before 4.17 ignore MAP_FIXED_NOREPLACE and place it elsewhere
      ::munmap(at, bytes);
      return fail(EEXIST, "could not map the predecessor's io_uring entries at {:#x}", l.base);
    }
    return std::shared_ptr<entry_region>(new entry_region(std::move(fd), l, bytes, false));
  }

  entry_region(const entry_region&) = delete;
  entry_region& operator=(const entry_region&) = delete;
  ~entry_region() { ::munmap(reinterpret_cast<void*>(static_cast<std::uintptr_t>(layout_.base)), mapped_); }

  proto::uring_req_header* header(unsigned q, unsigned i) const noexcept {
    return reinterpret_cast<proto::uring_req_header*>(slot(q, i));
  }
  std::byte* payload(unsigned q, unsigned i) const noexcept { return slot(q, i) + page; }
  const entry_layout& layout() const noexcept { return layout_; }
  int fd() const noexcept { return fd_.get(); }
  // Whether this region was made on a huge-page tmpfs (a predecessor's, mapped
  // here, says false: this process did not choose its memory).
  bool huge_pages() const noexcept { return huge_pages_; }

 private:
  // A file on a tmpfs of this process's own with huge=always, or no fd (no
  // CAP_SYS_ADMIN, no new mount API, no transparent huge pages in this kernel:
  // fsconfig refuses `huge`).
  static unique_fd huge_page_file() {
    using namespace detail;
    unique_fd context(sys_fsopen("tmpfs", fsopen_cloexec));
    if (!context) return {};
    if (sys_fsconfig(context.get(), fsconfig_set_string, "huge", "always", 0) != 0 ||
        sys_fsconfig(context.get(), fsconfig_cmd_create, nullptr, nullptr, 0) != 0)
      return {};
    unique_fd mount(sys_fsmount(context.get(), fsmount_cloexec, 0));
    if (!mount) return {};
    static constexpr const char* name = "fusexx-uring-entries";
    unique_fd file(::openat(mount.get(), name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (file) (void)::unlinkat(mount.get(), name, 0);  // nothing to find by name; it lives by its fd
    return file;
  }

  entry_region(unique_fd fd, entry_layout l, std::uint64_t mapped, bool huge)
      : fd_(std::move(fd)), layout_(l), mapped_(mapped), huge_pages_(huge) {}
  std::byte* slot(unsigned q, unsigned i) const noexcept {
    return reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(layout_.base)) +
           (std::uint64_t{q} * layout_.depth + i) * layout_.stride;
  }

  static std::uint64_t round_up(std::uint64_t n, std::uint64_t to) { return (n + to - 1) / to * to; }

  unique_fd fd_;
  entry_layout layout_;
  std::uint64_t mapped_;  // bytes mapped from base: the file's size
  bool huge_pages_;
};

}  // namespace fusexx::transport
