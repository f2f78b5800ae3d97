#pragma once
// Kernel passthrough (FUSE 7.40): a filesystem registers a file it opened
// itself as the backing file of an open FUSE file, and the kernel then does
// that file's reads, writes and mmap on the backing file directly, without
// asking the server. Every connection (session) has one registry, reached from
// a handler as `r.backing()`:
//
//   // init():  c.want(proto::init_flag::passthrough); c.max_stack_depth = 1;
//   auto id = r.backing().open(fd);           // result<backing_id>
//   if (id) return opened{.fh = ..., .backing_id = *id};
//   ...                                       // on error: serve I/O as usual
//   r.backing().close(id);                    // at release (or when unused)
//
// open() is one ioctl (FUSE_DEV_IOC_BACKING_OPEN) on the connection's
// /dev/fuse fd; close() is FUSE_DEV_IOC_BACKING_CLOSE. A FUSE file opened with
// a backing id keeps its own reference to the backing file, so closing the id
// right after the OPEN reply is allowed; files opened later must not use it.
//
// The kernel lets one inode have only one backing file at a time: every open
// of the same inode that asks for passthrough must use the same backing id
// (otherwise open() fails), and an inode cannot be open with and without
// passthrough at once. Register one backing file per inode, shared by its
// opens.
//
// Why open() fails, errno by errno:
//   ENOTCONN   the registry is not attached to a connection: not mounted yet,
//              INIT not answered yet, or the server has stopped.
//   EOPNOTSUPP INIT did not grant FUSE_PASSTHROUGH: the kernel did not offer
//              it (older than 6.9 or CONFIG_FUSE_PASSTHROUGH off), or init()
//              did not want() it. Checked here, without asking the kernel.
//   EPERM      the kernel refused: the server lacks CAP_SYS_ADMIN (in the
//              initial user namespace), or passthrough was granted but is off
//              because max_stack_depth was not 1 or 2, or because the writeback
//              cache was granted too (the kernel turns passthrough off then,
//              without saying so in INIT).
//   EBADF      `fd` is not an open file descriptor (an O_PATH fd counts as not
//              open for I/O: open the file for reading and/or writing).
//   EISDIR     `fd` is a directory.
//   ELOOP      the backing file lives on a stack of filesystems deeper than
//              max_stack_depth allows (e.g. on another FUSE passthrough mount).
//   other      passed on from the kernel unchanged.
// close() fails with ENOTCONN (as above) or with the kernel's EINVAL/ENOENT
// for an id that is not registered.
#include <sys/ioctl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "connection.hpp"
#include "proto/abi.hpp"
#include "proto/ioctl.hpp"
#include "result.hpp"

namespace fusexx {

using backing_id = std::int32_t;  // > 0; goes into opened::backing_id

class backing_files {
 public:
  explicit backing_files(const connection& conn) noexcept : conn_(conn) {}
  backing_files(const backing_files&) = delete;
  backing_files& operator=(const backing_files&) = delete;

  // Registers `fd` (open for I/O, owned by the caller, who may close it
  // afterwards: the kernel holds its own reference) as a backing file.
  result<backing_id> open(int fd) const {
    const int device = device_.load(std::memory_order_acquire);
    if (device < 0 || !conn_.initialized()) return error(ENOTCONN);
    if (!conn_.has(proto::init_flag::passthrough)) return error(EOPNOTSUPP);
    proto::backing_map map{};
    map.fd = fd;
    map.flags = 0;
    const int id = ::ioctl(device, proto::dev_ioc_backing_open, &map);
    if (id < 0) return last_error();
    std::lock_guard lock(mutex_);
    ids_.push_back(id);
    return backing_id{id};
  }

  // Unregisters `id`. Files already opened with it keep working.
  result<void> close(backing_id id) const {
    const int device = device_.load(std::memory_order_acquire);
    if (device < 0) return error(ENOTCONN);
    std::uint32_t arg = static_cast<std::uint32_t>(id);
    if (::ioctl(device, proto::dev_ioc_backing_close, &arg) < 0) return last_error();
    std::lock_guard lock(mutex_);
    if (auto it = std::find(ids_.begin(), ids_.end(), id); it != ids_.end()) ids_.erase(it);
    return {};
  }

  // Ids a predecessor registered on this connection and did not close: they
  // stay valid in the kernel, and close() must know them.
  void adopt(const std::vector<backing_id>& ids) {
    std::lock_guard lock(mutex_);
    ids_.insert(ids_.end(), ids.begin(), ids.end());
  }

  // The ids registered and not yet closed (the kernel keeps them for the
  // connection's lifetime: a successor must know them to close them).
  std::vector<backing_id> registered() const {
    std::lock_guard lock(mutex_);
    return ids_;
  }

  // One sentence for a log line: why open() failed with `ec`, and what it
  // means for the filesystem (I/O goes through the server instead).
  static std::string explain(const std::error_code& ec) {
    switch (to_errno(ec)) {
      case ENOTCONN: return "the filesystem is not connected to a mounted, initialised FUSE connection";
      case EOPNOTSUPP:
        return "the kernel did not grant FUSE_PASSTHROUGH in INIT (not offered by this kernel, or not asked for)";
      case EPERM:
        return "the kernel refused (EPERM): passthrough needs CAP_SYS_ADMIN, max_stack_depth 1 or 2, "
               "and no writeback cache";
      case EBADF: return "the backing fd is not open for I/O (EBADF)";
      case EISDIR: return "the backing fd is a directory (EISDIR)";
      case ELOOP: return "the backing file is on too deep a stack of filesystems for max_stack_depth (ELOOP)";
      default: return "the kernel refused: " + ec.message();
    }
  }

  // ---- used by the server ----
  // Where the ioctls go: a /dev/fuse fd of the connection.
  void attach(int device_fd) noexcept { device_.store(device_fd, std::memory_order_release); }
  // Before that fd closes.
  void detach() noexcept { device_.store(-1, std::memory_order_release); }

 private:
  const connection& conn_;  // consulted for the EOPNOTSUPP check
  std::atomic<int> device_{-1};
  mutable std::mutex mutex_;
  mutable std::vector<backing_id> ids_;
};

}  // namespace fusexx
