#pragma once
// The values handlers return: what a lookup found, an inode's attributes, an
// opened file. They speak `struct stat` so a filesystem that mirrors another
// one can fill them straight from stat(2).
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <chrono>
#include <cstdint>
#include <optional>

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
  bool kill_suid = false;          // clear suid/sgid as a write by a non-owner would
};

// Reply to statfs.
using fs_stats = struct statvfs;

}  // namespace fusexx
