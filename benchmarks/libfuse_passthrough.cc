// The libfuse baseline for the benchmarks: a passthrough filesystem over a
// native directory, written against Debian's libfuse3 (3.14) low-level API the
// way a libfuse user who cares about speed writes one (the shape of libfuse's
// passthrough_ll / passthrough_hp examples). It does not use fusexx at all: it
// is "what a user would pick instead".
//
//   libfuse_passthrough [-f] [-d] [-s] -o source=DIR[,timeout=SECONDS] MOUNTPOINT
//
// timeout= sets the entry and attribute timeouts (default 1.0 s; 0 makes every
// stat a round trip). Other -o options go to libfuse (max_threads=N,
// allow_other, ...). Our own extras: -o writeback (the kernel's writeback
// cache; off by default) and -o nosplice (no splice(2) on /dev/fuse).
// Exit status: 0 after SIGTERM/SIGINT/SIGHUP or an unmount, 2 for a bad
// command line (missing or unusable source=), 1 when mounting fails.
//
// Design, as in passthrough_hp:
// - Every inode the kernel knows is an O_PATH fd on the backing object, found
//   by (st_dev, st_ino) so that hard links and repeated lookups share one
//   entry; the fuse_ino_t is the entry's address. Lookup counts follow the
//   protocol: +1 per entry reply, -n per FORGET; the entry and its fd go at 0.
// - Everything else is *at(2) calls relative to those fds, or
//   /proc/self/fd/N where a syscall has no *at form usable on an O_PATH fd.
// - Reads answer with fuse_reply_data() and an fd buffer, so libfuse splices
//   file -> pipe -> /dev/fuse when splice is on (and otherwise reads into a
//   page-aligned buffer). Writes come through write_buf, spliced from the
//   device into the file when possible.
// - O_DIRECT: files are opened with the flags the kernel passes, O_DIRECT
//   included. An O_DIRECT write needs an aligned user buffer, which neither
//   the request buffer (data starts 80 bytes into it) nor a pipe gives, so such
//   writes go through a page-aligned per-thread bounce buffer.
#define FUSE_USE_VERSION 314

#include <fuse_lowlevel.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>

namespace {

constexpr unsigned max_write_bytes = 1u << 20;  // 256 pages: the kernel's max_pages_limit here

// ---------------------------------------------------------------------------
// Inodes

struct inode {
  int fd = -1;  // O_PATH
  dev_t dev = 0;
  ino_t ino = 0;
  uint64_t nlookup = 0;  // guarded by inode_table::mutex
};

struct inode_table {
  std::mutex mutex;
  std::map<std::pair<dev_t, ino_t>, std::unique_ptr<inode>> by_id;
};

struct passthrough {
  inode root;
  inode_table inodes;
  double timeout = 1.0;
  bool writeback = false;
  bool nosplice = false;
};

passthrough& fs_of(fuse_req_t req) { return *static_cast<passthrough*>(fuse_req_userdata(req)); }

inode& inode_of(fuse_req_t req, fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID) return fs_of(req).root;
  return *reinterpret_cast<inode*>(ino);
}

int fd_of(fuse_req_t req, fuse_ino_t ino) { return inode_of(req, ino).fd; }

// The path through which syscalls without a usable *at form reach an O_PATH fd.
struct proc_path {
  char text[40];
  explicit proc_path(int fd) { std::snprintf(text, sizeof text, "/proc/self/fd/%d", fd); }
};

void forget_one(passthrough& fs, inode* in, uint64_t n) {
  if (in == &fs.root) return;  // the root lives as long as the mount
  std::lock_guard lock(fs.inodes.mutex);
  in->nlookup -= n;
  if (in->nlookup == 0) {
    ::close(in->fd);
    fs.inodes.by_id.erase({in->dev, in->ino});  // frees *in
  }
}

// Finds or creates the inode for parent/name and counts one lookup. Fills `e`
// for an entry reply; returns 0 or an errno.
int do_lookup(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_entry_param& e) {
  passthrough& fs = fs_of(req);
  std::memset(&e, 0, sizeof e);
  e.attr_timeout = fs.timeout;
  e.entry_timeout = fs.timeout;

  int fd = ::openat(fd_of(req, parent), name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  if (::fstatat(fd, "", &e.attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
    int err = errno;
    ::close(fd);
    return err;
  }

  std::lock_guard lock(fs.inodes.mutex);
  auto& slot = fs.inodes.by_id[{e.attr.st_dev, e.attr.st_ino}];
  if (slot) {
    ::close(fd);  // already known: keep the first fd
  } else {
    slot = std::make_unique<inode>();
    slot->fd = fd;
    slot->dev = e.attr.st_dev;
    slot->ino = e.attr.st_ino;
  }
  ++slot->nlookup;
  e.ino = reinterpret_cast<fuse_ino_t>(slot.get());
  return 0;
}

void reply_entry_or_error(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_entry_param e;
  if (int err = do_lookup(req, parent, name, e)) fuse_reply_err(req, err);
  else fuse_reply_entry(req, &e);
}

// ---------------------------------------------------------------------------
// Session set-up

void pt_init(void* userdata, fuse_conn_info* conn) {
  auto& fs = *static_cast<passthrough*>(userdata);
  // READDIRPLUS(_AUTO), FLOCK_LOCKS, SPLICE_READ (because write_buf exists),
  // ASYNC_READ, PARALLEL_DIROPS ... are libfuse 3.14's defaults already.
  if (fs.nosplice) {
    conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  } else {
    if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
    if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
    if (conn->capable & FUSE_CAP_SPLICE_READ) conn->want |= FUSE_CAP_SPLICE_READ;
  }
  if (fs.writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) conn->want |= FUSE_CAP_WRITEBACK_CACHE;
  else conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // libfuse 3.14 derives max_pages from max_write and clamps max_write to its
  // own buffer (256 pages), so asking for 1 MiB gives 1 MiB requests.
  conn->max_write = max_write_bytes;
}

// ---------------------------------------------------------------------------
// Names and attributes

void pt_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) { reply_entry_or_error(req, parent, name); }

void pt_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  forget_one(fs_of(req), &inode_of(req, ino), nlookup);
  fuse_reply_none(req);
}

void pt_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) forget_one(fs_of(req), &inode_of(req, forgets[i].ino), forgets[i].nlookup);
  fuse_reply_none(req);
}

void reply_attr_of_fd(fuse_req_t req, int fd) {
  struct stat st;
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) fuse_reply_err(req, errno);
  else fuse_reply_attr(req, &st, fs_of(req).timeout);
}

void pt_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) { reply_attr_of_fd(req, fd_of(req, ino)); }

// An open file handle: the backing fd and the flags it was opened with.
struct open_file {
  int fd;
  int flags;
};
open_file& file_of(fuse_file_info* fi) { return *reinterpret_cast<open_file*>(fi->fh); }

// Handles the kernel has not released. A connection that ends (unmount,
// SIGTERM) releases nothing, so destroy() frees what is left here.
template <class Handle>
struct live_handles {
  std::mutex mutex;
  std::set<Handle*> live;
  Handle* add(std::unique_ptr<Handle> h) {
    std::lock_guard lock(mutex);
    return *live.insert(h.release()).first;
  }
  std::unique_ptr<Handle> take(Handle* h) {
    std::lock_guard lock(mutex);
    live.erase(h);
    return std::unique_ptr<Handle>(h);
  }
  template <class Close>
  void close_all(Close close) {
    std::lock_guard lock(mutex);
    for (Handle* h : live) {
      close(*h);
      delete h;
    }
    live.clear();
  }
};
live_handles<open_file> open_files;

int set_attributes(int fd, const struct stat& attr, int to_set, fuse_file_info* fi) {
  proc_path path(fd);
  if (to_set & FUSE_SET_ATTR_MODE) {
    int rc = fi ? ::fchmod(file_of(fi).fd, attr.st_mode) : ::chmod(path.text, attr.st_mode);
    if (rc < 0) return errno;
  }
  if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr.st_uid : static_cast<uid_t>(-1);
    gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr.st_gid : static_cast<gid_t>(-1);
    if (::fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return errno;
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    int rc = fi ? ::ftruncate(file_of(fi).fd, attr.st_size) : ::truncate(path.text, attr.st_size);
    if (rc < 0) return errno;
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    struct timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) times[0].tv_nsec = UTIME_NOW;
    else if (to_set & FUSE_SET_ATTR_ATIME) times[0] = attr.st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) times[1].tv_nsec = UTIME_NOW;
    else if (to_set & FUSE_SET_ATTR_MTIME) times[1] = attr.st_mtim;
    int rc = fi ? ::futimens(file_of(fi).fd, times) : ::utimensat(AT_FDCWD, path.text, times, 0);
    if (rc < 0) return errno;
  }
  return 0;
}

void pt_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  int fd = fd_of(req, ino);
  if (int err = set_attributes(fd, *attr, to_set, fi)) fuse_reply_err(req, err);
  else reply_attr_of_fd(req, fd);
}

void pt_readlink(fuse_req_t req, fuse_ino_t ino) {
  char target[PATH_MAX + 1];
  ssize_t n = ::readlinkat(fd_of(req, ino), "", target, sizeof target);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  if (n == static_cast<ssize_t>(sizeof target)) return (void)fuse_reply_err(req, ENAMETOOLONG);
  target[n] = '\0';
  fuse_reply_readlink(req, target);
}

void pt_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  if (::mknodat(fd_of(req, parent), name, mode, rdev) < 0) return (void)fuse_reply_err(req, errno);
  reply_entry_or_error(req, parent, name);
}

void pt_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  if (::mkdirat(fd_of(req, parent), name, mode) < 0) return (void)fuse_reply_err(req, errno);
  reply_entry_or_error(req, parent, name);
}

void pt_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  if (::symlinkat(target, fd_of(req, parent), name) < 0) return (void)fuse_reply_err(req, errno);
  reply_entry_or_error(req, parent, name);
}

void pt_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  proc_path source(fd_of(req, ino));
  if (::linkat(AT_FDCWD, source.text, fd_of(req, newparent), newname, AT_SYMLINK_FOLLOW) < 0)
    return (void)fuse_reply_err(req, errno);
  reply_entry_or_error(req, newparent, newname);
}

void pt_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, ::unlinkat(fd_of(req, parent), name, 0) < 0 ? errno : 0);
}

void pt_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, ::unlinkat(fd_of(req, parent), name, AT_REMOVEDIR) < 0 ? errno : 0);
}

void pt_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned flags) {
  int rc = ::renameat2(fd_of(req, parent), name, fd_of(req, newparent), newname, flags);
  fuse_reply_err(req, rc < 0 ? errno : 0);
}

void pt_statfs(fuse_req_t req, fuse_ino_t ino) {
  struct statvfs st;
  if (::fstatvfs(fd_of(req, ino), &st) < 0) fuse_reply_err(req, errno);
  else fuse_reply_statfs(req, &st);
}

// ---------------------------------------------------------------------------
// Directories

struct dir_handle {
  std::mutex mutex;
  DIR* dir = nullptr;
  off_t offset = 0;             // where `dir` stands, as the kernel counts
  dirent* pending = nullptr;    // read from `dir` but not yet sent
};
dir_handle& dir_of(fuse_file_info* fi) { return *reinterpret_cast<dir_handle*>(fi->fh); }
live_handles<dir_handle> open_dirs;

void pt_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  int fd = ::openat(fd_of(req, ino), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return (void)fuse_reply_err(req, errno);
  auto d = std::make_unique<dir_handle>();
  d->dir = ::fdopendir(fd);
  if (!d->dir) {
    int err = errno;
    ::close(fd);
    return (void)fuse_reply_err(req, err);
  }
  DIR* dir = d->dir;
  dir_handle* h = open_dirs.add(std::move(d));
  fi->fh = reinterpret_cast<uint64_t>(h);
  fi->cache_readdir = fs_of(req).timeout != 0;
  fi->keep_cache = fs_of(req).timeout != 0;
  if (fuse_reply_open(req, fi) != 0) {
    open_dirs.take(h);
    ::closedir(dir);
  }
}

void read_directory(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi, bool plus) {
  dir_handle& d = dir_of(fi);
  // The reply goes out only after the lock is released: once the kernel has
  // it, a RELEASEDIR on another thread may free `d`, mutex included.
  std::unique_lock lock(d.mutex);
  if (offset != d.offset) {
    ::seekdir(d.dir, offset);
    d.offset = offset;
    d.pending = nullptr;
  }
  auto buf = std::make_unique<char[]>(size);
  size_t used = 0;
  int err = 0;
  for (;;) {
    dirent* entry = d.pending;
    if (!entry) {
      errno = 0;
      entry = ::readdir(d.dir);
      if (!entry) {
        err = errno;
        break;
      }
    }
    size_t room = size - used;
    size_t need;
    if (plus) {
      fuse_entry_param e;
      bool dot = std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0;
      if (dot) {
        // The kernel makes no dentry for . and ..: no lookup, no count.
        std::memset(&e, 0, sizeof e);
        e.attr.st_ino = entry->d_ino;
        e.attr.st_mode = DTTOIF(entry->d_type);
      } else if (int lerr = do_lookup(req, ino, entry->d_name, e)) {
        if (lerr == ENOENT) {  // removed since readdir saw it
          d.pending = nullptr;
          d.offset = entry->d_off;
          continue;
        }
        err = lerr;
        break;
      }
      need = fuse_add_direntry_plus(req, buf.get() + used, room, entry->d_name, &e, entry->d_off);
      if (need > room) {
        if (!dot) forget_one(fs_of(req), reinterpret_cast<inode*>(e.ino), 1);  // not sent: not counted
        d.pending = entry;
        break;
      }
    } else {
      struct stat st {};
      st.st_ino = entry->d_ino;
      st.st_mode = DTTOIF(entry->d_type);
      need = fuse_add_direntry(req, buf.get() + used, room, entry->d_name, &st, entry->d_off);
      if (need > room) {
        d.pending = entry;
        break;
      }
    }
    used += need;
    d.pending = nullptr;
    d.offset = entry->d_off;
  }
  lock.unlock();
  // An error after some entries were filled is reported by the next call.
  if (err && used == 0) fuse_reply_err(req, err);
  else fuse_reply_buf(req, buf.get(), used);
}

void pt_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  read_directory(req, ino, size, off, fi, false);
}

void pt_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  read_directory(req, ino, size, off, fi, true);
}

void pt_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  std::unique_ptr<dir_handle> d = open_dirs.take(&dir_of(fi));
  ::closedir(d->dir);
  fuse_reply_err(req, 0);
}

void pt_fsyncdir(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  int fd = ::dirfd(dir_of(fi).dir);
  int rc = datasync ? ::fdatasync(fd) : ::fsync(fd);
  fuse_reply_err(req, rc < 0 ? errno : 0);
}

// ---------------------------------------------------------------------------
// Files

// The flags to open the backing file with: what the kernel passed, minus what
// only makes sense for the kernel's own view.
int backing_flags(const passthrough& fs, int flags) {
  flags &= ~O_NOFOLLOW;
  if (fs.writeback) {
    // With the writeback cache the kernel reads pages of files opened for
    // writing, and it keeps the file size itself, so O_APPEND would be wrong.
    if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    flags &= ~O_APPEND;
  }
  return flags | O_CLOEXEC;
}

void fill_open_reply(const passthrough& fs, fuse_file_info* fi, int fd, int flags) {
  fi->fh = reinterpret_cast<uint64_t>(open_files.add(std::make_unique<open_file>(open_file{fd, flags})));
  fi->keep_cache = fs.timeout != 0;
  // With no caching, a read-only file has nothing to flush.
  fi->noflush = fs.timeout == 0 && (flags & O_ACCMODE) == O_RDONLY;
}

void pt_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  passthrough& fs = fs_of(req);
  int flags = backing_flags(fs, fi->flags);
  proc_path path(fd_of(req, ino));
  int fd = ::open(path.text, flags);
  if (fd < 0) return (void)fuse_reply_err(req, errno);
  fill_open_reply(fs, fi, fd, flags);
  if (fuse_reply_open(req, fi) != 0) {
    open_files.take(&file_of(fi));
    ::close(fd);
  }
}

void pt_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  passthrough& fs = fs_of(req);
  int flags = backing_flags(fs, fi->flags) | O_CREAT;
  int fd = ::openat(fd_of(req, parent), name, flags, mode);
  if (fd < 0) return (void)fuse_reply_err(req, errno);
  fuse_entry_param e;
  if (int err = do_lookup(req, parent, name, e)) {
    ::close(fd);
    return (void)fuse_reply_err(req, err);
  }
  fill_open_reply(fs, fi, fd, flags);
  if (fuse_reply_create(req, &e, fi) != 0) {
    open_files.take(&file_of(fi));
    ::close(fd);
  }
}

void pt_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  std::unique_ptr<open_file> f = open_files.take(&file_of(fi));
  ::close(f->fd);
  fuse_reply_err(req, 0);
}

// libfuse calls destroy() when the session ends, DESTROY or not.
void pt_destroy(void*) {
  open_files.close_all([](open_file& f) { ::close(f.fd); });
  open_dirs.close_all([](dir_handle& d) { ::closedir(d.dir); });
}

void pt_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  // close() of a duplicate does what close(2) of the user's fd would do to
  // the backing file (e.g. NFS's flush on close), without closing ours.
  int dup = ::dup(file_of(fi).fd);
  int rc = dup < 0 ? -1 : ::close(dup);
  fuse_reply_err(req, rc < 0 ? errno : 0);
}

void pt_fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  int fd = file_of(fi).fd;
  int rc = datasync ? ::fdatasync(fd) : ::fsync(fd);
  fuse_reply_err(req, rc < 0 ? errno : 0);
}

void pt_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = file_of(fi).fd;
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

// A page-aligned buffer per worker thread for O_DIRECT writes (see the top).
struct aligned_buffer {
  void* data = nullptr;
  ~aligned_buffer() { std::free(data); }
};

void* bounce_buffer() {
  thread_local aligned_buffer buffer;
  if (!buffer.data && ::posix_memalign(&buffer.data, 4096, max_write_bytes) != 0) buffer.data = nullptr;
  return buffer.data;
}

ssize_t write_direct(const open_file& f, fuse_bufvec* in, off_t off) {
  size_t size = fuse_buf_size(in);
  void* data = size <= max_write_bytes ? bounce_buffer() : nullptr;
  if (!data) return -ENOMEM;
  fuse_bufvec staged = FUSE_BUFVEC_INIT(size);
  staged.buf[0].mem = data;
  ssize_t got = fuse_buf_copy(&staged, in, FUSE_BUF_NO_SPLICE);
  if (got < 0) return got;
  ssize_t n = ::pwrite(f.fd, data, static_cast<size_t>(got), off);
  return n < 0 ? -errno : n;
}

void pt_write_buf(fuse_req_t req, fuse_ino_t, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  const open_file& f = file_of(fi);
  ssize_t n;
  if (f.flags & O_DIRECT) {
    n = write_direct(f, in, off);
  } else {
    fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
    out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    out.buf[0].fd = f.fd;
    out.buf[0].pos = off;
    n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
  }
  if (n < 0) fuse_reply_err(req, static_cast<int>(-n));
  else fuse_reply_write(req, static_cast<size_t>(n));
}

void pt_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info* fi) {
  fuse_reply_err(req, ::fallocate(file_of(fi).fd, mode, off, len) < 0 ? errno : 0);
}

void pt_copy_file_range(fuse_req_t req, fuse_ino_t, off_t off_in, fuse_file_info* fi_in, fuse_ino_t,
                        off_t off_out, fuse_file_info* fi_out, size_t len, int flags) {
  ssize_t n = ::copy_file_range(file_of(fi_in).fd, &off_in, file_of(fi_out).fd, &off_out, len,
                                static_cast<unsigned>(flags));
  if (n < 0) fuse_reply_err(req, errno);
  else fuse_reply_write(req, static_cast<size_t>(n));
}

void pt_lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) {
  off_t pos = ::lseek(file_of(fi).fd, off, whence);
  if (pos < 0) fuse_reply_err(req, errno);
  else fuse_reply_lseek(req, pos);
}

void pt_flock(fuse_req_t req, fuse_ino_t, fuse_file_info* fi, int op) {
  fuse_reply_err(req, ::flock(file_of(fi).fd, op) < 0 ? errno : 0);
}

// ---------------------------------------------------------------------------
// Extended attributes (the f*xattr calls refuse O_PATH fds: use /proc paths)

void pt_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  proc_path path(fd_of(req, ino));
  fuse_reply_err(req, ::setxattr(path.text, name, value, size, flags) < 0 ? errno : 0);
}

// getxattr and listxattr share their protocol: size 0 asks for the length.
template <class Call>
void reply_xattr_data(fuse_req_t req, size_t size, Call call) {
  if (size == 0) {
    ssize_t n = call(nullptr, 0);
    if (n < 0) fuse_reply_err(req, errno);
    else fuse_reply_xattr(req, static_cast<size_t>(n));
    return;
  }
  auto buf = std::make_unique<char[]>(size);
  ssize_t n = call(buf.get(), size);
  if (n < 0) fuse_reply_err(req, errno);
  else fuse_reply_buf(req, buf.get(), static_cast<size_t>(n));
}

void pt_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  proc_path path(fd_of(req, ino));
  reply_xattr_data(req, size, [&](char* buf, size_t n) { return ::getxattr(path.text, name, buf, n); });
}

void pt_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  proc_path path(fd_of(req, ino));
  reply_xattr_data(req, size, [&](char* buf, size_t n) { return ::listxattr(path.text, buf, n); });
}

void pt_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  proc_path path(fd_of(req, ino));
  fuse_reply_err(req, ::removexattr(path.text, name) < 0 ? errno : 0);
}

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops ops{};
  ops.init = pt_init;
  ops.destroy = pt_destroy;
  ops.lookup = pt_lookup;
  ops.forget = pt_forget;
  ops.forget_multi = pt_forget_multi;
  ops.getattr = pt_getattr;
  ops.setattr = pt_setattr;
  ops.readlink = pt_readlink;
  ops.mknod = pt_mknod;
  ops.mkdir = pt_mkdir;
  ops.symlink = pt_symlink;
  ops.link = pt_link;
  ops.unlink = pt_unlink;
  ops.rmdir = pt_rmdir;
  ops.rename = pt_rename;
  ops.statfs = pt_statfs;
  ops.opendir = pt_opendir;
  ops.readdir = pt_readdir;
  ops.readdirplus = pt_readdirplus;
  ops.releasedir = pt_releasedir;
  ops.fsyncdir = pt_fsyncdir;
  ops.open = pt_open;
  ops.create = pt_create;
  ops.release = pt_release;
  ops.flush = pt_flush;
  ops.fsync = pt_fsync;
  ops.read = pt_read;
  ops.write_buf = pt_write_buf;
  ops.fallocate = pt_fallocate;
  ops.copy_file_range = pt_copy_file_range;
  ops.lseek = pt_lseek;
  ops.flock = pt_flock;
  ops.setxattr = pt_setxattr;
  ops.getxattr = pt_getxattr;
  ops.listxattr = pt_listxattr;
  ops.removexattr = pt_removexattr;
  return ops;
}

// ---------------------------------------------------------------------------
// Command line

struct options {
  char* source = nullptr;
  double timeout = 1.0;
  int writeback = 0;
  int nosplice = 0;
};

const fuse_opt option_spec[] = {
    {"source=%s", offsetof(options, source), 0},
    {"timeout=%lf", offsetof(options, timeout), 0},
    {"writeback", offsetof(options, writeback), 1},
    {"nosplice", offsetof(options, nosplice), 1},
    FUSE_OPT_END,
};

void print_usage(const char* prog) {
  std::printf(
      "usage: %s [-f] [-d] [-s] -o source=DIR[,timeout=SECONDS] MOUNTPOINT\n"
      "\n"
      "    -o source=DIR          the directory to pass through (required)\n"
      "    -o timeout=SECONDS     entry and attribute timeout (default 1.0; 0 = no caching)\n"
      "    -o writeback           use the kernel's writeback cache\n"
      "    -o nosplice            never splice(2) to or from /dev/fuse\n",
      prog);
}

constexpr int exit_usage = 2;

}  // namespace

int main(int argc, char* argv[]) {
  fuse_args args = FUSE_ARGS_INIT(argc, argv);
  options opts;
  if (fuse_opt_parse(&args, &opts, option_spec, nullptr) != 0) return exit_usage;

  fuse_cmdline_opts cmd{};
  if (fuse_parse_cmdline(&args, &cmd) != 0) return exit_usage;
  if (cmd.show_help) {
    print_usage(argv[0]);
    fuse_cmdline_help();
    fuse_lowlevel_help();
    return 0;
  }
  if (cmd.show_version) {
    std::printf("libfuse %s\n", fuse_pkgversion());
    fuse_lowlevel_version();
    return 0;
  }

  auto fail_usage = [&](const std::string& why) {
    std::fprintf(stderr, "%s: %s\n", argv[0], why.c_str());
    std::free(opts.source);
    std::free(cmd.mountpoint);
    fuse_opt_free_args(&args);
    return exit_usage;
  };
  if (!cmd.mountpoint) return fail_usage("no mountpoint given (usage: -o source=DIR MOUNTPOINT)");
  if (!opts.source) return fail_usage("no source directory given: use -o source=DIR");
  if (opts.timeout < 0) return fail_usage("timeout= must be 0 or more seconds");

  passthrough fs;
  fs.timeout = opts.timeout;
  fs.writeback = opts.writeback != 0;
  fs.nosplice = opts.nosplice != 0;
  fs.root.fd = ::open(opts.source, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fs.root.fd < 0)
    return fail_usage(std::string("source=") + opts.source + " is not a usable directory: " + std::strerror(errno));
  std::free(opts.source);
  fs.root.nlookup = 2;  // never forgotten

  fuse_lowlevel_ops ops = make_ops();
  int status = 1;
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &fs);
  if (se) {
    if (fuse_set_signal_handlers(se) == 0) {
      if (fuse_session_mount(se, cmd.mountpoint) == 0) {
        if (fuse_daemonize(cmd.foreground) == 0) {
          int rc;
          if (cmd.singlethread) {
            rc = fuse_session_loop(se);
          } else {
            fuse_loop_config* loop = fuse_loop_cfg_create();
            fuse_loop_cfg_set_clone_fd(loop, 1);
            fuse_loop_cfg_set_max_threads(loop, cmd.max_threads);
            if (cmd.max_idle_threads != UINT_MAX) fuse_loop_cfg_set_idle_threads(loop, cmd.max_idle_threads);
            rc = fuse_session_loop_mt(se, loop);
            fuse_loop_cfg_destroy(loop);
          }
          // The loop returns 0 after an unmount and the signal's number after
          // SIGTERM/SIGINT/SIGHUP: both are an orderly end.
          status = rc < 0 ? 1 : 0;
        }
        fuse_session_unmount(se);
      }
      fuse_remove_signal_handlers(se);
    }
    fuse_session_destroy(se);
  }

  // Whatever the kernel still holds a lookup on.
  for (auto& [id, in] : fs.inodes.by_id) ::close(in->fd);
  ::close(fs.root.fd);
  std::free(cmd.mountpoint);
  fuse_opt_free_args(&args);
  return status;
}
