#pragma once
// The values handlers return: what a lookup found, an inode's attributes, an
// opened file. They speak `struct stat` so a filesystem that mirrors another
// one can fill them straight from stat(2).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace fusexx {

using ino = std::uint64_t;       // the kernel's node id for an inode
using fhandle = std::uint64_t;  // what open/opendir returned, echoed back later
inline constexpr ino root_ino = 1;

using timeout = std::chrono::nanoseconds;
inline constexpr timeout default_timeout = std::chrono::seconds(1);

// Reply to getattr/setattr.
struct attr {
  struct stat st {};
  timeout valid_for = default_timeout;  // how long the kernel may cache st
};

// Reply to lookup, mkdir, mknod, symlink, link, create.
// node == 0 is a negative entry: "no such name", cached for entry_valid_for.
struct entry {
  ino node = 0;
  std::uint64_t generation = 0;
  struct stat st {};
  timeout entry_valid_for = default_timeout;
  timeout attr_valid_for = default_timeout;
};

// Reply to open/opendir: the handle and how the kernel should treat the file.
struct opened {
  fhandle fh = 0;
  bool direct_io = false;               // bypass the page cache
  bool keep_cache = false;              // do not drop cached pages on open
  bool nonseekable = false;
  bool cache_dir = false;               // opendir: allow caching of readdir results
  bool stream = false;                  // no file position at all
  bool noflush = false;                 // do not send FLUSH on close
  bool parallel_direct_writes = false;
  std::int32_t backing_id = 0;          // >0: kernel passthrough to this backing file
};

// Reply to create: the new entry and the open file.
struct created {
  struct entry entry;
  struct opened file;
};

// setattr's request: only the fields named by the `has_*` members are to change.
struct set_attributes {
  std::optional<mode_t> mode;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::optional<off_t> size;
  std::optional<timespec> atime;   // tv_nsec == UTIME_NOW means "now"
  std::optional<timespec> mtime;
  std::optional<timespec> ctime;
  std::optional<fhandle> fh;   // set when the change comes through an open file (ftruncate)
  std::optional<std::uint64_t> lock_owner;  // the caller's POSIX lock owner, when the kernel sends it
  bool kill_suid = false;          // clear suid/sgid as a write by a non-owner would
};

// A POSIX byte-range lock, as getlk/setlk see it. `end` is inclusive; a lock
// to the end of the file (l_len == 0 in fcntl(2)) has end == lock_to_eof.
struct posix_lock {
  static constexpr off_t lock_to_eof = std::numeric_limits<off_t>::max();
  short type = F_UNLCK;  // F_RDLCK, F_WRLCK or F_UNLCK
  off_t start = 0;
  off_t end = lock_to_eof;
  pid_t pid = 0;         // the owning process (reported by getlk)
};

// Reply to statx: the attributes of statx(2) (only the fields named in
// stx_mask need be valid) and how long the kernel may cache them.
struct extended_attr {
  struct statx stx {};
  timeout valid_for = default_timeout;
};

// A user memory area for an unrestricted ioctl's retry (CUSE only).
struct ioctl_area {
  std::uint64_t base = 0;
  std::uint64_t length = 0;
};

// Reply to ioctl: ioctl(2)'s return value and the bytes for the caller's
// buffer (at most the out_size the request allowed). An unrestricted ioctl may
// instead ask the kernel to retry with the named areas copied in and out.
struct ioctl_reply {
  std::int32_t result = 0;
  std::vector<std::byte> out;
  std::vector<ioctl_area> retry_in, retry_out;
};

// Reply to statfs.
using fs_stats = struct statvfs;

}  // namespace fusexx
