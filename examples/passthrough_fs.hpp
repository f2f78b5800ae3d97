#pragma once
// passthrough: a mirror of a source directory, fast enough to benchmark the
// framework against the native filesystem underneath.
//
//   passthrough [-f] [-o timeout=SECONDS,passthrough,writeback,killpriv_v2] SOURCE MOUNTPOINT
//   passthrough [-f] -o source=SOURCE[,...] MOUNTPOINT      (the same)
//
// Every inode holds an O_PATH fd of its backing object (examples/passthrough/
// inode_table.hpp) and every operation is the matching *at syscall relative to
// those fds: fstatat(AT_EMPTY_PATH), openat of /proc/self/fd/N to re-open an
// O_PATH fd for I/O, mkdirat, unlinkat, renameat2, linkat, symlinkat, ...
// Files are opened with exactly the flags the kernel passes (O_DIRECT
// included); reads, writes and fsync of open files are awaited on the io_uring
// transport's ring (fusexx/async_io.hpp) and are plain syscalls on the classic
// transport, and also on io_uring when the source is memory-backed (tmpfs),
// where nothing waits and the ring's round trip would only cost.
//
// Permission checks are the kernel's (default_permissions, see
// configure_mount): the server runs as root in the usual set-up and creates
// objects with the caller's fsuid/fsgid, so the mirror shows the right owners.
//
// Options:
//   timeout=S     how long the kernel may cache names and attributes
//                 (default 1; 0 makes every stat a round trip to the server)
//   writeback     the kernel's writeback cache: writes are collected in the
//                 page cache and sent in large batches
//   passthrough   kernel passthrough (root only): reads and writes of open
//                 files go from the kernel straight to the backing file, the
//                 server sees only the open and the release. The kernel turns
//                 passthrough off when the writeback cache is on, so the two
//                 conflict: with both, writeback wins and one line says so.
//                 When the kernel refuses passthrough (not offered, not root,
//                 ...) one line says why and I/O goes through the server.
//   killpriv_v2   the server, not the kernel, clears suid/sgid when another
//                 user writes or truncates (FUSE_HANDLE_KILLPRIV_V2). The
//                 kernel then stops asking for security.capability (one
//                 GETXATTR round trip) before every write, which is most of
//                 the cost of a small write under kernel passthrough. The
//                 price: chown(2) that changes neither owner nor group no
//                 longer clears the bits (the kernel sends nothing for it).
//
// Locks: flock is forwarded as flock on the backing open file; POSIX locks
// (fcntl F_SETLK/F_GETLK) become open-file-description locks (F_OFD_*) on the
// backing open file, which gives the same conflicts between processes. Two
// limits of that mapping: lock owners that share one open file (a fork after
// open) do not conflict with each other, and F_GETLK reports pid 0 for the
// holder.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <fusexx/async_io.hpp>
#include <fusexx/fusexx.hpp>

#include "examples/passthrough/aligned_io.hpp"
#include "examples/passthrough/credentials.hpp"
#include "examples/passthrough/inode_table.hpp"
#include "examples/passthrough/slot_table.hpp"

namespace passthrough {

// An open regular file: the backing fd, opened with the kernel's flags.
struct open_file {
  int fd = -1;
  inode* node = nullptr;
  bool direct = false;                    // O_DIRECT: buffers must be aligned
  fusexx::backing_id backing = 0;         // kernel passthrough in use
  std::atomic<bool> posix_locked{false};  // took a POSIX lock: FLUSH releases it
  ~open_file() {
    if (fd >= 0) ::close(fd);
  }
};

// An open directory. The kernel passes back the offset to continue from
// (the d_off of the last entry it got), so the stream is repositioned only
// when that differs from where it stands.
struct open_dir {
  DIR* dir = nullptr;
  off_t offset = 0;
  // The entry that did not fit in the last reply: the next one starts with
  // it. (Seeking back to it instead would throw away the directory stream's
  // buffer and cost one more getdents of the backing directory per reply.)
  struct held_entry {
    std::string name;
    ino_t ino;
    unsigned char type;
    off_t next;
  };
  std::optional<held_entry> held;
  std::mutex mutex;
  // A successor recovering from a crash: the directory's fd, not yet a
  // stream (passthrough_fs::recovered() checks it is still this directory).
  int adopted = -1;
  dev_t dev = 0;
  ino_t ino = 0;
  ~open_dir() {
    if (dir) ::closedir(dir);
    else if (adopted >= 0) ::close(adopted);
  }
};

// "1", "0.5", "0": seconds as a timeout.
inline std::optional<fusexx::timeout> parse_seconds(std::string_view s) {
  double secs = -1;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), secs);
  if (s.empty() || ec != std::errc{} || p != s.data() + s.size() || !(secs >= 0) || secs > 1e9) return std::nullopt;
  return std::chrono::duration_cast<fusexx::timeout>(std::chrono::duration<double>(secs));
}

}  // namespace passthrough

struct passthrough_fs : fusexx::filesystem_base<passthrough_fs> {
  using ino = fusexx::ino;
  using fhandle = fusexx::fhandle;
  using request = fusexx::request;
  template <class T>
  using result = fusexx::result<T>;
  using inode = passthrough::inode;
  using open_file = passthrough::open_file;
  using open_dir = passthrough::open_dir;

  static constexpr std::string_view usage =
      "passthrough options:\n"
      "     source=DIR            the directory to mirror (or give it as SOURCE)\n"
      "     timeout=SECONDS       entry and attribute cache time (default 1; 0: none)\n"
      "     writeback             use the kernel's writeback cache\n"
      "     passthrough           kernel passthrough of reads and writes (root only;\n"
      "                           off when writeback is on)\n"
      "     killpriv_v2           the server clears suid/sgid on writes: no GETXATTR\n"
      "                           before each write (chown -1 -1 then keeps them)\n";

  // ---- configuration (before the mount) ----
  std::string source;
  fusexx::timeout cache_timeout = std::chrono::seconds(1);
  bool writeback = false;
  bool killpriv_v2 = false;  // FUSE_HANDLE_KILLPRIV_V2 (see the options above)
  bool kernel_passthrough = false;

  fusexx::outcome<bool> option(std::string_view key, std::optional<std::string_view> value) {
    if (key == "source") {
      if (!value || value->empty()) return fusexx::fail(EINVAL, "passthrough: source= needs a directory");
      source = std::string(*value);
      return true;
    }
    if (key == "timeout") {
      auto t = value ? passthrough::parse_seconds(*value) : std::nullopt;
      if (!t) return fusexx::fail(EINVAL, "passthrough: timeout= needs a number of seconds (0 or more)");
      cache_timeout = *t;
      return true;
    }
    if (key == "writeback" || key == "passthrough" || key == "killpriv_v2") {
      if (value) return fusexx::fail(EINVAL, "passthrough: option '{}' takes no value", key);
      (key == "writeback" ? writeback : key == "passthrough" ? kernel_passthrough : killpriv_v2) = true;
      return true;
    }
    return false;
  }

  // `passthrough SRC MOUNTPOINT` (what mount(8) runs for an fstab line
  // `SRC MOUNTPOINT fuse.passthrough ...`): the same as -o source=SRC; both
  // may be given only when they agree.
  fusexx::outcome<void> use_source(std::string_view dir) {
    if (!source.empty() && source != dir)
      return fusexx::fail(EINVAL, "passthrough: two source directories: -o source={} and {}", source, dir);
    source = std::string(dir);
    return {};
  }

  // Opens the source directory; the error says what is wrong with it.
  fusexx::outcome<void> open_source() {
    if (source.empty())
      return fusexx::fail(EINVAL, "passthrough: no source directory given (passthrough SOURCE MOUNTPOINT, or -o source=DIR)");
    const int fd = ::open(source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
      return fusexx::fail(errno, "passthrough: cannot use source={}: {}", source, std::strerror(errno));
    struct stat st {};
    if (::fstatat(fd, "", &st, AT_EMPTY_PATH) != 0) {
      const int e = errno;
      ::close(fd);
      return fusexx::fail(e, "passthrough: cannot stat source={}: {}", source, std::strerror(e));
    }
    table_ = std::make_unique<passthrough::inode_table>(fd, st);
    struct statfs fs {};
    memory_backed_ = ::statfs(source.c_str(), &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
    return {};
  }

  // Whether the source is on tmpfs or ramfs (known once open_source() has run).
  bool memory_backed() const noexcept { return memory_backed_; }

  // The mount options the mirror relies on: the kernel checks permissions
  // from the mirrored modes (the server itself may do anything as root),
  // everyone may use a root's mount, and device nodes work as in the source.
  static void configure_mount(fusexx::mount_options& m) {
    m.default_permissions = true;
    if (::geteuid() == 0) {
      m.allow_other = true;
      m.nodev = false;
    }
  }

  // ---- observation (tests, benchmarks) ----
  std::size_t live_inodes() const { return table_ ? table_->size() : 0; }
  std::uint64_t kernel_lookups() const { return table_ ? table_->lookups() : 0; }
  std::uint64_t forget_errors() const { return forget_errors_.load(); }
  std::uint64_t served_getxattrs() const { return getxattrs_.load(std::memory_order_relaxed); }
  std::uint64_t passthrough_opens() const { return passthrough_opens_.load(); }
  // Lookups that had to open the object (it was new to the table).
  std::uint64_t lookup_opens() const { return lookup_opens_.load(std::memory_order_relaxed); }
  // Backing files registered through a fresh open of the /proc link, since
  // the kernel would not take the inode's O_PATH fd (see take_backing).
  std::uint64_t backing_reopens() const { return backing_reopens_.load(std::memory_order_relaxed); }
  std::size_t open_files() const { return files_.size() + dirs_.size(); }
  // Why kernel passthrough is not used although asked for ("" if it is).
  std::string passthrough_refusal() const {
    std::lock_guard g(refusal_mutex_);
    return refusal_;
  }

  // ---- the connection ----
  fusexx::result<void> init(fusexx::connection& c) {
    namespace f = fusexx::proto::init_flag;
    if (!table_) return fusexx::error(EINVAL);  // open_source() was not called
    c.want(f::posix_locks);
    c.want(f::flock_locks);
    c.want(f::atomic_o_trunc);  // O_TRUNC comes with OPEN: one syscall, not OPEN + SETATTR
    c.want(f::direct_io_allow_mmap);  // O_DIRECT opens are FOPEN_DIRECT_IO (opened_file)
    killing_suidgid_ = killpriv_v2 && c.want(f::handle_killpriv_v2);
    if (writeback) c.want(f::writeback_cache);
    passthrough_on_ = false;
    if (kernel_passthrough) {
      if (writeback) {
        refuse("passthrough is off: the kernel turns FUSE passthrough off when the writeback cache is on, "
               "and -o writeback was given; reads and writes go through the server");
      } else if (!c.want(f::passthrough)) {
        c.unwant(f::passthrough);
        refuse("passthrough is off: this kernel does not offer FUSE_PASSTHROUGH; reads and writes go through "
               "the server");
      } else {
        c.max_stack_depth = 1;  // backing files on ordinary (non-stacked) filesystems
        passthrough_on_ = true;
      }
    }
    return {};
  }
  void destroy() {
    if (table_) table_->forget_all();
  }

  void forget(ino id, std::uint64_t n) {
    if (!table_->forget(id, n)) ++forget_errors_;
  }

  // ---- restart: a new passthrough process takes the mount over (docs/restart.md) ----
  static constexpr bool restartable = true;
  static constexpr std::uint32_t snapshot_version = 2;  // of what save() writes
  // Crash recovery (-o supervise): the tree is on disk and the open files
  // in the fd table the servers share with their keeper; each change of the
  // tables is noted in the crash journal, and redone by a successor.
  static constexpr bool crash_safe = true;
  static constexpr fusexx::recovery_model recovery = fusexx::recovery_model::redo;

  // What INIT settled (it does not come again), every inode the kernel
  // holds, and the open files and directories. Their fds go beside the
  // snapshot, so the successor holds the very same open files: offsets,
  // flock and OFD (POSIX) locks, directory stream positions and kernel
  // passthrough's backing files stay as they are.
  fusexx::result<void> save(fusexx::snapshot_writer& w) {
    if (!table_) return fusexx::error(EINVAL);
    w.u32(snapshot_version);
    w.boolean(writeback);
    w.boolean(killing_suidgid_);
    w.boolean(passthrough_on_.load());
    table_->save(w);
    w.u64(files_.size());
    files_.for_each([&](std::uint64_t fh, const open_file& f) {
      w.u64(fh);
      w.u64(f.node->id);
      w.fd(f.fd);
      w.boolean(f.direct);
      w.u32(static_cast<std::uint32_t>(f.backing));
      w.boolean(f.posix_locked.load());
    });
    w.u64(dirs_.size());
    dirs_.for_each([&](std::uint64_t fh, const open_dir& d) {
      w.u64(fh);
      const int fd = d.dir ? ::dirfd(d.dir) : d.adopted;
      struct stat st {};
      if (::fstat(fd, &st) != 0) st = {};
      w.fd(fd);
      w.u64(st.st_dev);
      w.u64(st.st_ino);
      w.i64(d.offset);
      w.boolean(d.held.has_value());
      if (!d.held) return;
      w.str(d.held->name);
      w.u64(d.held->ino);
      w.u8(d.held->type);
      w.i64(d.held->next);
    });
    return {};
  }

  // Reads what save() wrote, into a passthrough that has opened its source
  // and not served yet. EXDEV when the predecessor mirrored another
  // directory; EBADMSG when the snapshot does not hold together.
  fusexx::result<void> restore(fusexx::snapshot_reader& r) {
    if (!table_) return fusexx::error(EINVAL);  // open_source() was not called
    std::uint32_t version = 0;
    bool was_writeback = false, was_killing = false, was_passthrough = false;
    if (!r.u32(version)) return fusexx::error(EBADMSG);
    if (version != snapshot_version) return fusexx::error(EPROTO);
    if (!r.boolean(was_writeback) || !r.boolean(was_killing) || !r.boolean(was_passthrough))
      return fusexx::error(EBADMSG);
    // The kernel goes on as INIT settled: a successor started with other
    // options serves as negotiated, and says so.
    if (was_writeback != writeback || was_passthrough != kernel_passthrough || was_killing != killpriv_v2)
      fusexx::log::warn("passthrough: the connection was negotiated with writeback {}, passthrough {}, killpriv_v2 {}; "
                        "kept so (the options given here apply to the next mount)",
                        was_writeback ? "on" : "off", was_passthrough ? "on" : "off", was_killing ? "on" : "off");
    writeback = was_writeback;
    killing_suidgid_ = was_killing;
    passthrough_on_ = was_passthrough;
    if (auto t = table_->restore(r); !t) {
      if (t.error().value() == EXDEV)
        fusexx::log::error("passthrough: the running server mirrors another directory than source={}", source);
      return t;
    }
    std::uint64_t count = 0;
    if (!r.count(count, 26)) return fusexx::error(EBADMSG);
    for (std::uint64_t k = 0; k < count; ++k) {
      std::uint64_t fh = 0, node = 0;
      std::uint32_t backing = 0;
      bool direct = false, locked = false;
      fusexx::unique_fd fd;
      if (!r.u64(fh) || !r.u64(node) || !r.fd(fd) || !r.boolean(direct) || !r.u32(backing) || !r.boolean(locked))
        return fusexx::error(EBADMSG);
      inode* i = table_->find(node);
      if (!i) return fusexx::error(EBADMSG);
      auto f = std::make_unique<open_file>();
      f->fd = fd.release();
      f->node = i;
      f->direct = direct;
      f->backing = static_cast<fusexx::backing_id>(backing);
      f->posix_locked = locked;
      if (!files_.place(fh, std::move(f))) return fusexx::error(EBADMSG);
    }
    if (!r.count(count, 21)) return fusexx::error(EBADMSG);
    for (std::uint64_t k = 0; k < count; ++k) {
      std::uint64_t fh = 0, dev = 0, ino = 0;
      std::int64_t offset = 0;
      bool held = false;
      fusexx::unique_fd fd;
      if (!r.u64(fh) || !r.fd(fd) || !r.u64(dev) || !r.u64(ino) || !r.i64(offset) || !r.boolean(held))
        return fusexx::error(EBADMSG);
      auto d = std::make_unique<open_dir>();
      d->offset = offset;
      d->dev = static_cast<dev_t>(dev);
      d->ino = static_cast<ino_t>(ino);
      if (held) {
        open_dir::held_entry e;
        std::uint64_t ino = 0;
        std::int64_t next = 0;
        if (!r.str(e.name) || !r.u64(ino) || !r.u8(e.type) || !r.i64(next)) return fusexx::error(EBADMSG);
        e.ino = static_cast<ino_t>(ino);
        e.next = next;
        d->held = std::move(e);
      }
      if (r.fds_are_numbers()) {
        d->adopted = fd.release();  // checked, and made a stream, by recovered()
      } else {
        d->dir = ::fdopendir(fd.get());
        if (!d->dir) return fusexx::last_error();
        (void)fd.release();
        // The open file is the predecessor's, positioned past what its stream
        // had buffered: this stream goes on from where the kernel will ask.
        ::seekdir(d->dir, d->held ? d->held->next : d->offset);
      }
      if (!dirs_.place(fh, std::move(d))) return fusexx::error(EBADMSG);
    }
    return {};
  }

  // ---- crash recovery (-o supervise; fusexx/restart/journal_note.hpp) ----
  // One request's note: the changes it made to the tables, redone on the
  // checkpoint's (no fd is opened or closed: the dead server did that).
  bool redo(std::span<const std::byte> note) {
    namespace n = passthrough::notes;
    if (note.size() % sizeof(n::entry) != 0) return false;
    for (std::size_t at = 0; at < note.size(); at += sizeof(n::entry)) {
      n::entry e;
      std::memcpy(&e, note.data() + at, sizeof e);
      bool ok = true;
      switch (e.what) {
        case n::kind::ref: ok = table_->redo_reference(e.id, e.fd, e.a, e.b, static_cast<std::uint32_t>(e.c)); break;
        case n::kind::forget: ok = table_->redo_forget(e.id, e.a); break;
        case n::kind::backing: ok = table_->redo_backing(e.id, static_cast<fusexx::backing_id>(e.a), static_cast<unsigned>(e.b)); break;
        case n::kind::file: {
          inode* i = table_->find(e.a);
          if (!i || e.fd < 0) return false;
          auto f = std::make_unique<open_file>();
          f->node = i;
          f->direct = e.flag;
          f->backing = static_cast<fusexx::backing_id>(e.b);
          ok = files_.place(e.id, std::move(f));  // (fd -1 until placed: a refused one must not close it)
          if (ok) files_.at(e.id).fd = e.fd;
          break;
        }
        case n::kind::file_closed: {
          auto f = files_.take(e.id);
          ok = f != nullptr;
          if (f) f->fd = -1;  // closed by the dead server
          break;
        }
        case n::kind::dir: {
          if (e.fd < 0) return false;
          auto d = std::make_unique<open_dir>();
          d->dev = static_cast<dev_t>(e.a);
          d->ino = static_cast<ino_t>(e.b);
          ok = dirs_.place(e.id, std::move(d));
          if (ok) dirs_.at(e.id).adopted = e.fd;
          break;
        }
        case n::kind::dir_closed: {
          auto d = dirs_.take(e.id);
          ok = d != nullptr;
          if (d) d->adopted = -1, d->dir = nullptr;  // closed by the dead server (the stream's memory went with it)
          break;
        }
        default: return false;
      }
      if (!ok) return false;
    }
    return true;
  }

  // After the redo: every fd must still be the file it was (a server that
  // closed one died before noting it, and the number may be reused), the
  // directories become streams again, and every open file may hold POSIX
  // locks (so a FLUSH drops them: a dead server's flag is not known).
  std::vector<int> recovered() {
    std::vector<int> held;
    table_->check_fds(held);
    files_.for_each([&](std::uint64_t fh, open_file& f) {
      struct stat st {};
      if (f.fd >= 0 && ::fstat(f.fd, &st) == 0 && st.st_dev == f.node->dev && st.st_ino == f.node->ino) {
        held.push_back(f.fd);
      } else {
        fusexx::log::warn("passthrough: recovery: the fd of open file {} is no longer its file", fh);
        f.fd = -1;
      }
      f.posix_locked = true;
    });
    dirs_.for_each([&](std::uint64_t fh, open_dir& d) {
      if (d.dir) return held.push_back(::dirfd(d.dir));
      struct stat st {};
      if (d.adopted >= 0 && ::fstat(d.adopted, &st) == 0 && st.st_dev == d.dev && st.st_ino == d.ino &&
          (d.dir = ::fdopendir(d.adopted))) {
        held.push_back(d.adopted);
        d.adopted = -1;
        // Positioned wherever the dead server's stream left it: the next
        // READDIR seeks to the offset it asks for.
        d.offset = -1;
        d.held.reset();
      } else {
        fusexx::log::warn("passthrough: recovery: the fd of open directory {} is no longer its directory", fh);
        d.adopted = -1;
      }
    });
    return held;
  }

  // ---- names ----
  result<fusexx::entry> lookup(request&, ino parent, std::string_view name) {
    auto e = lookup_at(at(parent), std::string(name));
    if (!e && e.error().value() == ENOENT && cache_timeout.count() > 0) {
      fusexx::entry negative;  // node 0: "no such name", cached like a positive entry
      negative.entry_valid_for = cache_timeout;
      return negative;
    }
    return e;
  }

  result<fusexx::attr> getattr(request&, ino id, std::optional<fhandle> fh) {
    struct stat st {};
    const int rc = fh && at(id).type == S_IFREG ? ::fstat(file(*fh).fd, &st)
                                                 : ::fstatat(at(id).fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    if (rc != 0) return fusexx::last_error();
    return fusexx::attr{st, cache_timeout};
  }

  result<fusexx::attr> setattr(request& r, ino id, const fusexx::set_attributes& s) {
    inode& i = at(id);
    const int ofd = s.fh && i.type == S_IFREG ? file(*s.fh).fd : -1;
    if (s.mode) {
      // chmod has no AT_EMPTY_PATH form; the /proc link names the object
      // itself (a symlink answers EOPNOTSUPP, as lchmod does natively).
      const int rc = ofd >= 0 ? ::fchmod(ofd, *s.mode)
                              : ::fchmodat(AT_FDCWD, passthrough::proc_path(i.fd).c_str(), *s.mode, 0);
      if (rc != 0) return fusexx::last_error();
    }
    if (s.uid || s.gid) {
      const uid_t uid = s.uid ? *s.uid : uid_t(-1);
      const gid_t gid = s.gid ? *s.gid : gid_t(-1);
      if (::fchownat(i.fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return fusexx::last_error();
    }
    if (s.size) {
      const int rc = ofd >= 0 ? ::ftruncate(ofd, *s.size)
                              : ::truncate(passthrough::proc_path(i.fd).c_str(), *s.size);
      if (rc != 0) return fusexx::last_error();
    }
    if (s.atime || s.mtime) {
      timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
      if (s.atime) times[0] = *s.atime;
      if (s.mtime) times[1] = *s.mtime;
      int rc = ofd >= 0 ? ::futimens(ofd, times) : ::utimensat(i.fd, "", times, AT_EMPTY_PATH);
      if (rc != 0 && errno == EINVAL && ofd < 0 && i.type != S_IFLNK)  // kernels without AT_EMPTY_PATH here
        rc = ::utimensat(AT_FDCWD, passthrough::proc_path(i.fd).c_str(), times, 0);
      if (rc != 0) return fusexx::last_error();
    }
    if (s.kill_suid && !s.mode) kill_suidgid(i);
    return getattr(r, id, std::nullopt);
  }

  result<std::string> readlink(request&, ino id) {
    std::string target(PATH_MAX, '\0');
    const ssize_t n = ::readlinkat(at(id).fd, "", target.data(), target.size());
    if (n < 0) return fusexx::last_error();
    target.resize(std::size_t(n));
    return target;
  }

  result<fusexx::entry> mknod(request& r, ino parent, std::string_view name, mode_t mode, dev_t rdev, mode_t) {
    const std::string n(name);
    {
      passthrough::as_caller creds(r);
      if (::mknodat(at(parent).fd, n.c_str(), mode, rdev) != 0 && !made_before_crash(parent, n, mode & S_IFMT))
        return fusexx::last_error();
    }
    return lookup_at(at(parent), n, lookup_hint::new_object);
  }

  result<fusexx::entry> mkdir(request& r, ino parent, std::string_view name, mode_t mode, mode_t) {
    const std::string n(name);
    {
      passthrough::as_caller creds(r);
      if (::mkdirat(at(parent).fd, n.c_str(), mode) != 0 && !made_before_crash(parent, n, S_IFDIR))
        return fusexx::last_error();
    }
    return lookup_at(at(parent), n, lookup_hint::new_object);
  }

  result<fusexx::entry> symlink(request& r, ino parent, std::string_view name, std::string_view target) {
    const std::string n(name);
    {
      passthrough::as_caller creds(r);
      if (::symlinkat(std::string(target).c_str(), at(parent).fd, n.c_str()) != 0 &&
          !made_before_crash(parent, n, S_IFLNK))
        return fusexx::last_error();
    }
    return lookup_at(at(parent), n, lookup_hint::new_object);
  }

  result<fusexx::entry> link(request&, ino id, ino new_parent, std::string_view new_name) {
    const std::string n(new_name);
    inode& i = at(id);
    if (::linkat(i.fd, "", at(new_parent).fd, n.c_str(), AT_EMPTY_PATH) != 0) {
      // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc link does not.
      if (errno != ENOENT && errno != EPERM) return fusexx::last_error();
      if (::linkat(AT_FDCWD, passthrough::proc_path(i.fd).c_str(), at(new_parent).fd, n.c_str(),
                   AT_SYMLINK_FOLLOW) != 0 &&
          !made_before_crash(new_parent, n, i.type, &i))
        return fusexx::last_error();
    }
    return lookup_at(at(new_parent), n);
  }

  // (A resend after a crash that finds the name gone: the crashed server
  // removed it.)
  result<void> unlink(request&, ino parent, std::string_view name) {
    if (::unlinkat(at(parent).fd, std::string(name).c_str(), 0) != 0 && !gone_before_crash()) return fusexx::last_error();
    return {};
  }
  result<void> rmdir(request&, ino parent, std::string_view name) {
    if (::unlinkat(at(parent).fd, std::string(name).c_str(), AT_REMOVEDIR) != 0 && !gone_before_crash())
      return fusexx::last_error();
    return {};
  }

  result<void> rename(request&, ino parent, std::string_view name, ino new_parent, std::string_view new_name,
                      unsigned flags) {
    // An exchange resent after a crash cannot tell whether it was done (both
    // names exist either way): it is taken as done, never done twice.
    if ((flags & RENAME_EXCHANGE) && fusexx::maybe_applied()) return {};
    if (::renameat2(at(parent).fd, std::string(name).c_str(), at(new_parent).fd, std::string(new_name).c_str(),
                    flags) != 0 &&
        !gone_before_crash())
      return fusexx::last_error();
    return {};
  }

  // ---- files ----
  result<fusexx::opened> open(request& r, ino id, int flags) {
    inode& i = at(id);
    const int fd = ::openat(AT_FDCWD, passthrough::proc_path(i.fd).c_str(), backing_flags(flags));
    if (fd < 0) return fusexx::last_error();
    if (r.kill_suidgid()) kill_suidgid(i);
    return opened_file(r, i, fd, flags);
  }

  // The reply to CREATE and TMPFILE for the file just opened as `fd`: its
  // entry (one lookup reference) and its open-file handle.
  result<fusexx::created> created_from(request& r, int fd, int flags) {
    auto e = entry_of_open(fd);
    if (!e) {
      ::close(fd);
      return fusexx::error(e.error());
    }
    auto o = opened_file(r, at(e->node), fd, flags, e->st.st_mode);
    if (!o) return fusexx::error(o.error());  // opened_file closed fd; the lookup reference stays
    return fusexx::created{*e, *o};
  }

  result<fusexx::created> create(request& r, ino parent, std::string_view name, mode_t mode, int flags, mode_t) {
    const std::string n(name);
    int fd;
    bool existed = false;
    {
      passthrough::as_caller creds(r);
      fd = ::openat(at(parent).fd, n.c_str(), backing_flags(flags) | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
      // The kernel sends CREATE for a name it saw missing; if the file has
      // appeared since, open it as the caller asked (O_TRUNC then empties an
      // existing file, which is when suid/sgid may have to go).
      if (fd < 0 && errno == EEXIST && (!(flags & O_EXCL) || fusexx::maybe_applied())) {
        fd = ::openat(at(parent).fd, n.c_str(), backing_flags(flags) | O_NOFOLLOW);
        existed = fd >= 0;
      }
    }
    if (fd < 0) return fusexx::last_error();
    auto c = created_from(r, fd, flags);
    if (c && existed && r.kill_suidgid()) kill_suidgid(at(c->entry.node));
    return c;
  }

  result<fusexx::created> tmpfile(request& r, ino parent, mode_t mode, int flags, mode_t) {
    int access = flags & O_ACCMODE;
    if (access == O_RDONLY) access = O_RDWR;  // O_TMPFILE needs write access
    int fd;
    {
      passthrough::as_caller creds(r);
      fd = ::openat(at(parent).fd, ".", (backing_flags(flags) & ~O_ACCMODE) | access | O_TMPFILE, mode);
    }
    if (fd < 0) return fusexx::last_error();
    return created_from(r, fd, flags);
  }

  // Backing-file I/O is awaited on the io_uring transport's ring, so a read
  // that waits for a disk does not hold up the queue's other requests. A
  // memory-backed source (tmpfs, ramfs) never waits for a device, and there
  // the ring's round trip would cost more than the copy (measured: 4 KiB
  // requests at ~0.7x the IOPS of plain syscalls), so its I/O is done inline.
  fusexx::task<std::size_t> read(request&, ino, fhandle fh, off_t offset, std::span<std::byte> into) {
    open_file& f = file(fh);
    std::optional<passthrough::aligned_buffer> bounce;
    std::span<std::byte> target = into;
    if (f.direct && !passthrough::aligned_for_direct_io(into.data())) target = bounce.emplace(into.size()).span();
    fusexx::result<std::size_t> n;
    if (memory_backed_) n = transferred(::pread(f.fd, target.data(), target.size(), offset));
    else n = co_await fusexx::io::pread(f.fd, target, offset);
    if (n && bounce) std::memcpy(into.data(), target.data(), *n);
    co_return n;
  }

  fusexx::task<std::size_t> write(request&, ino, fhandle fh, off_t offset, std::span<const std::byte> data,
                                  int flags) {
    open_file& f = file(fh);
    if (flags & fusexx::proto::write_flag::kill_suidgid) kill_suidgid(*f.node);
    std::optional<passthrough::aligned_buffer> bounce;
    if (f.direct && !passthrough::aligned_for_direct_io(data.data())) {
      std::memcpy(bounce.emplace(data.size()).span().data(), data.data(), data.size());
      data = bounce->span();
    }
    // Writes are plain syscalls on every source, as libfuse's examples do
    // them. On a disk the ring's round trip did not pay for itself: in two
    // suite A/Bs on ext4 (the two binaries one after the other in each
    // round) 4 KiB O_DIRECT writes done inline were ahead in 6 of 8 and 9 of
    // 10 rounds (+14-15 % IOPS at the median) at the same server CPU per
    // write; with 2 jobs and with 1 MiB writes it was a coin toss (5 of 8,
    // 5 of 10; 4 of 8). None of the ring's writes was handed to io_uring's
    // workers (the tracepoint io_uring_queue_async_work counted only the
    // queues' 256 REGISTER commands): each waited for the device either way.
    // Reads stay on the ring, where they came out ahead (4 of 6 rounds).
    co_return transferred(::pwrite(f.fd, data.data(), data.size(), offset));
  }

  fusexx::task<void> fsync(request&, ino, fhandle fh, bool datasync) {
    co_return co_await fusexx::io::fsync(file(fh).fd, datasync);
  }

  result<void> flush(request&, ino, fhandle fh, std::uint64_t) {
    // close(2) of any descriptor of the file drops the caller's POSIX locks
    // on it; the kernel says so with FLUSH.
    open_file& f = file(fh);
    if (f.posix_locked.exchange(false)) {
      struct flock l {};
      l.l_type = F_UNLCK;
      l.l_whence = SEEK_SET;
      ::fcntl(f.fd, F_OFD_SETLK, &l);
    }
    return {};
  }

  result<void> release(request& r, ino, fhandle fh, int) {
    std::unique_ptr<open_file> f = files_.take(fh);
    passthrough::note(passthrough::notes::kind::file_closed, fh, -1, 0, 0, 0);
    if (f && f->backing) drop_backing(r.backing(), *f->node);
    return {};
  }

  result<void> fallocate(request&, ino, fhandle fh, int mode, off_t offset, off_t length) {
    // Collapsing or inserting a range twice moves the data twice: one resent
    // after a crash is taken as done (the others do the same thing again).
    if ((mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)) && fusexx::maybe_applied()) return {};
    if (::fallocate(file(fh).fd, mode, offset, length) != 0) return fusexx::last_error();
    return {};
  }

  result<off_t> lseek(request&, ino, fhandle fh, off_t offset, int whence) {
    const off_t r = ::lseek(file(fh).fd, offset, whence);
    if (r == -1) return fusexx::last_error();
    // Any other negative result is no error but a wrapped offset: tmpfs on
    // 6.18 answers SEEK_HOLE in the last page below 2^63 with -2^63
    // (mapping_seek_hole_data() rounds the page's end up to 2^63). errno is
    // not set then; answer what the kernel's vfs_setpos() says to an offset
    // it cannot take.
    if (r < 0) return fusexx::error(EINVAL);
    return r;
  }

  result<std::size_t> copy_file_range(request&, ino, fhandle fh_in, off_t off_in, ino, fhandle fh_out,
                                      off_t off_out, std::size_t len, std::uint64_t flags) {
    loff_t in = off_in, out = off_out;
    const ssize_t n = ::copy_file_range(file(fh_in).fd, &in, file(fh_out).fd, &out, len, unsigned(flags));
    if (n < 0) return fusexx::last_error();
    return std::size_t(n);
  }

  // ---- locks ----
  result<fusexx::posix_lock> getlk(request&, ino, fhandle fh, std::uint64_t, const fusexx::posix_lock& l) {
    struct flock fl = to_flock(l);
    if (::fcntl(file(fh).fd, F_OFD_GETLK, &fl) != 0) return fusexx::last_error();
    fusexx::posix_lock out;
    out.type = fl.l_type;
    if (fl.l_type != F_UNLCK) {
      out.start = fl.l_start;
      out.end = fl.l_len == 0 ? fusexx::posix_lock::lock_to_eof : fl.l_start + fl.l_len - 1;
      out.pid = 0;  // OFD locks have no owning process (l_pid is -1)
    }
    return out;
  }

  fusexx::task<void> setlk(request& r, ino, fhandle fh, std::uint64_t, fusexx::posix_lock l, bool wait) {
    open_file& f = file(fh);
    const struct flock fl = to_flock(l);
    co_return co_await retry_while_busy(r, wait, [&] {
      struct flock attempt = fl;
      if (::fcntl(f.fd, F_OFD_SETLK, &attempt) != 0) return errno;
      if (fl.l_type != F_UNLCK) f.posix_locked = true;
      return 0;
    });
  }

  fusexx::task<void> flock(request& r, ino, fhandle fh, std::uint64_t, int op) {
    open_file& f = file(fh);
    const bool wait = !(op & LOCK_NB) && !(op & LOCK_UN);
    co_return co_await retry_while_busy(r, wait, [&] {
      return ::flock(f.fd, op | LOCK_NB) == 0 ? 0 : errno;
    });
  }

  // ---- directories ----
  result<fusexx::opened> opendir(request&, ino id, int) {
    const int fd = ::openat(at(id).fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return fusexx::last_error();
    auto d = std::make_unique<open_dir>();
    d->dir = ::fdopendir(fd);
    if (!d->dir) {
      const int e = errno;
      ::close(fd);
      return fusexx::error(e);
    }
    struct stat st {};
    (void)::fstat(fd, &st);
    fusexx::opened o;
    o.fh = dirs_.add(std::move(d));
    passthrough::note(passthrough::notes::kind::dir, o.fh, fd, st.st_dev, st.st_ino, 0);
    return o;
  }

  result<void> readdir(request&, ino id, fhandle fh, off_t offset, fusexx::dir_buffer& out) {
    return fill_dir(at(id), dir(fh), offset, out);
  }
  result<void> readdirplus(request&, ino id, fhandle fh, off_t offset, fusexx::dir_buffer& out) {
    return fill_dir(at(id), dir(fh), offset, out);
  }

  result<void> releasedir(request&, ino, fhandle fh, int) {
    dirs_.take(fh);
    passthrough::note(passthrough::notes::kind::dir_closed, fh, -1, 0, 0, 0);
    return {};
  }

  result<void> fsyncdir(request&, ino, fhandle fh, bool datasync) {
    const int fd = ::dirfd(dir(fh).dir);
    if ((datasync ? ::fdatasync(fd) : ::fsync(fd)) != 0) return fusexx::last_error();
    return {};
  }

  result<fusexx::fs_stats> statfs(request&, ino id) {
    fusexx::fs_stats st{};
    if (::fstatvfs(at(id).fd, &st) != 0) return fusexx::last_error();
    return st;
  }

  // ---- extended attributes (the /proc link: the f*xattr calls refuse O_PATH fds) ----
  result<std::string> getxattr(request&, ino id, std::string_view name) {
    getxattrs_.fetch_add(1, std::memory_order_relaxed);
    const std::string path = passthrough::proc_path(at(id).fd), n(name);
    return read_sized([&](char* buf, std::size_t size) { return ::getxattr(path.c_str(), n.c_str(), buf, size); });
  }
  result<std::string> listxattr(request&, ino id) {
    const std::string path = passthrough::proc_path(at(id).fd);
    return read_sized([&](char* buf, std::size_t size) { return ::listxattr(path.c_str(), buf, size); });
  }
  result<void> setxattr(request&, ino id, std::string_view name, std::span<const std::byte> value, int flags) {
    const std::string path = passthrough::proc_path(at(id).fd);
    if (::setxattr(path.c_str(), std::string(name).c_str(), value.data(), value.size(), flags) != 0) {
      // XATTR_CREATE resent after a crash: done if the value is there.
      const int e = errno;
      if (e == EEXIST && fusexx::maybe_applied()) {
        auto now = read_sized([&](char* buf, std::size_t size) { return ::getxattr(path.c_str(), std::string(name).c_str(), buf, size); });
        if (now && now->size() == value.size() && std::memcmp(now->data(), value.data(), value.size()) == 0) return {};
      }
      return fusexx::error(e);
    }
    return {};
  }
  result<void> removexattr(request&, ino id, std::string_view name) {
    const std::string path = passthrough::proc_path(at(id).fd);
    if (::removexattr(path.c_str(), std::string(name).c_str()) != 0 && !(errno == ENODATA && fusexx::maybe_applied()))
      return fusexx::last_error();
    return {};
  }

 private:
  inode& at(ino id) { return table_->at(id); }
  open_file& file(fhandle fh) const { return files_.at(fh); }
  open_dir& dir(fhandle fh) const { return dirs_.at(fh); }

  // A request resent after a crash that may have done it (maybe_applied):
  // its name exists, as what it makes (and, for a link, as `same`) — the
  // crashed server made it. (The one case this takes wrongly: another
  // process made that very name in the source in the same moment.)
  bool made_before_crash(ino parent, const std::string& name, mode_t type, const inode* same = nullptr) {
    if (errno != EEXIST || !fusexx::maybe_applied()) return false;
    struct stat st {};
    if (::fstatat(at(parent).fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return false;
    if (same) return st.st_dev == same->dev && st.st_ino == same->ino;
    return (st.st_mode & S_IFMT) == (type ? type : S_IFREG);
  }
  // ENOENT of a removal (or rename) resent after a crash that may have done it.
  static bool gone_before_crash() { return errno == ENOENT && fusexx::maybe_applied(); }

  static fusexx::result<std::size_t> transferred(ssize_t n) {
    if (n < 0) return fusexx::last_error();
    return static_cast<std::size_t>(n);
  }

  // What a write or truncation by a caller without CAP_FSETID does natively:
  // suid goes, and sgid if the group may execute. Under handle_killpriv_v2
  // the kernel leaves this to us, and our own writes (as root) keep the bits.
  // Best effort, as natively: the write itself does not fail over it.
  static void kill_suidgid(inode& i) {
    struct stat st {};
    if (::fstatat(i.fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) return;
    const mode_t mode = st.st_mode & 07777;
    if (const mode_t killed = without_set_id(mode); killed != mode)
      (void)::fchmodat(AT_FDCWD, passthrough::proc_path(i.fd).c_str(), killed, 0);  // best effort (above)
  }
  // A set-user-id or set-group-id program: a mode such a write changes.
  static bool set_id(mode_t mode) { return without_set_id(mode) != mode; }
  static bool set_id(inode& i) {
    struct stat st {};
    if (::fstatat(i.fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return true;  // be safe
    return set_id(st.st_mode);
  }
  // suid goes; sgid only with group execute (without it, sgid is a
  // mandatory-locking mark, which writes leave alone).
  static mode_t without_set_id(mode_t mode) {
    mode &= ~S_ISUID;
    if (mode & S_IXGRP) mode &= ~S_ISGID;
    return mode;
  }

  // The flags to open the backing file with: the kernel's, except that the
  // writeback cache needs to read what it writes (no O_WRONLY) and does
  // O_APPEND itself, and that the /proc link must be followed.
  //
  // Supervised, O_APPEND goes too: a write is then at the offset the kernel
  // chose (its idea of the end of the file), so a write resent after a
  // crash that may have applied it lands where it did, not after it again.
  int backing_flags(int flags) const {
    flags &= ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY);
    if (fusexx::journal_notes_wanted()) flags &= ~O_APPEND;
    if (writeback) {
      if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
      flags &= ~O_APPEND;
    }
    return flags | O_CLOEXEC;
  }

  fusexx::entry make_entry(inode& i, const struct stat& st) const {
    fusexx::entry e;
    e.node = table_->id_of(i);
    e.st = st;
    e.entry_valid_for = cache_timeout;
    e.attr_valid_for = cache_timeout;
    return e;
  }

  // Whether lookup_at() should first ask the table (one fstatat) or open the
  // object straight away: the object was just made, or a directory entry's
  // inode number is not in the table, so it is almost surely new.
  enum class lookup_hint { maybe_known, new_object };

  // One kernel reference to `name` in `parent`.
  //
  // Most lookups are of objects the kernel has been handed before (every
  // LOOKUP that revalidates a name, at timeout 0 every path walk): their
  // inode is in the table, and one fstatat of the name says which it is.
  // Only an object new to the table is opened (O_PATH) and stat'ed through
  // what was opened, as the name may be another object's by then. So a
  // lookup of a known object is one system call where open, stat and
  // close were three (libfuse's passthrough_hp makes those three every
  // time). The object a name is answered with may be renamed or unlinked
  // right after, either way; that is what the kernel's cache timeouts bound.
  // An object new to the table pays for it with one call more (fstatat,
  // open, stat); where it is surely new, the hint skips the first fstatat.
  // (The hint only saves that call: a new object is opened either way, and
  // reference() takes one it turns out to know.)
  result<fusexx::entry> lookup_at(inode& parent, const std::string& name,
                                  lookup_hint hint = lookup_hint::maybe_known) {
    if (hint == lookup_hint::maybe_known) {
      struct stat seen {};
      if (::fstatat(parent.fd, name.c_str(), &seen, AT_SYMLINK_NOFOLLOW) != 0) return fusexx::last_error();
      if (inode* known = table_->reference_known(seen)) return make_entry(*known, seen);
    }
    lookup_opens_.fetch_add(1, std::memory_order_relaxed);
    const int fd = ::openat(parent.fd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return fusexx::last_error();
    struct stat st {};
    if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      const int e = errno;
      ::close(fd);
      return fusexx::error(e);
    }
    return make_entry(table_->reference(fd, st), st);
  }

  // One kernel reference to the file `fd` (open for I/O) refers to.
  result<fusexx::entry> entry_of_open(int fd) {
    const int path_fd = ::openat(AT_FDCWD, passthrough::proc_path(fd).c_str(), O_PATH | O_CLOEXEC);
    if (path_fd < 0) return fusexx::last_error();
    struct stat st {};
    if (::fstat(path_fd, &st) != 0) {
      const int e = errno;
      ::close(path_fd);
      return fusexx::error(e);
    }
    return make_entry(table_->reference(path_fd, st), st);
  }

  // The OPEN/CREATE reply for `fd` (taken over) on inode `i`; `mode`, when
  // given, is the file's mode as just stat'ed (spares take_backing a stat).
  result<fusexx::opened> opened_file(request& r, inode& i, int fd, int flags,
                                     std::optional<mode_t> mode = std::nullopt) {
    auto f = std::make_unique<open_file>();
    f->fd = fd;
    f->node = &i;
    f->direct = (flags & O_DIRECT) != 0;
    fusexx::opened o;
    if (i.type == S_IFREG) f->backing = take_backing(r.backing(), i, mode);
    o.backing_id = f->backing;
    // Cached pages stay valid across opens unless the attributes say the
    // file changed (auto_inval_data); with timeout=0 nothing is trusted.
    o.keep_cache = cache_timeout.count() > 0 && o.backing_id == 0;
    // O_DIRECT: FOPEN_DIRECT_IO too, or FOPEN_PARALLEL_DIRECT_WRITES does
    // nothing — the kernel runs O_DIRECT writes to one file in parallel only
    // on the direct_io path; plain O_DIRECT takes the inode lock for each.
    // Not with a backing file: FOPEN_DIRECT_IO would override passthrough.
    o.direct_io = f->direct && o.backing_id == 0;
    o.parallel_direct_writes = true;
    o.fh = files_.add(std::move(f));
    passthrough::note(passthrough::notes::kind::file, o.fh, fd, i.id, static_cast<std::uint64_t>(o.backing_id), 0,
                      (flags & O_DIRECT) != 0);
    return o;
  }

  // The inode's backing id for kernel passthrough, registering its backing
  // file on first use; 0 when passthrough is not in use. `mode`: the file's
  // mode if the caller has just stat'ed it.
  fusexx::backing_id take_backing(fusexx::backing_files& backing, inode& i, std::optional<mode_t> mode) {
    if (!passthrough_on_.load(std::memory_order_relaxed)) return 0;
    std::lock_guard g(i.backing_mutex);
    if (i.backing != 0) {
      ++i.backing_users;
      note_backing(i);
      return i.backing;
    }
    // Under killpriv_v2 a set-id file is served through the server: its
    // writes then arrive with the kernel's kill flag, and root's writes keep
    // the bits as they do natively. (Writes through a backing file clear them
    // for everyone; see without_fsetid.)
    if (killing_suidgid_ && (mode ? set_id(*mode) : set_id(i))) return 0;
    auto id = [&] {
      // Under killpriv_v2 the kernel no longer clears the bits before a
      // passthrough write: the backing file's own writes must.
      std::optional<passthrough::without_fsetid> unprivileged_writes;
      if (killing_suidgid_) unprivileged_writes.emplace();
      // The inode's own O_PATH fd serves: the kernel keeps only the
      // registered file's path and our credentials, and opens a backing file
      // of its own for each FUSE open, with that open's flags
      // (fuse_passthrough_open() in fs/fuse/passthrough.c), and takes an
      // O_PATH fd (fget_raw() in fuse_backing_open(), as on 6.18). That
      // spares each first open of a file an open(2) of its /proc link and a
      // close(2). Passthrough's first version took fget(), which answers an
      // O_PATH fd with EBADF; then the file is opened through the link (for
      // reading and writing if it may be: one backing file serves all of the
      // inode's opens).
      auto registered = backing.open(i.fd);
      if (registered || fusexx::to_errno(registered.error()) != EBADF) return registered;
      backing_reopens_.fetch_add(1, std::memory_order_relaxed);
      const std::string path = passthrough::proc_path(i.fd);
      int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return registered;
      registered = backing.open(fd);
      ::close(fd);  // the kernel holds its own reference
      return registered;
    }();
    if (!id) {
      const int e = fusexx::to_errno(id.error());
      if (e == EPERM || e == EOPNOTSUPP || e == ENOTCONN) passthrough_on_ = false;
      refuse("passthrough is off: " + fusexx::backing_files::explain(id.error()) +
             "; reads and writes go through the server");
      return 0;
    }
    i.backing = *id;
    i.backing_users = 1;
    note_backing(i);
    passthrough_opens_.fetch_add(1);
    return i.backing;
  }
  void drop_backing(fusexx::backing_files& backing, inode& i) {
    std::lock_guard g(i.backing_mutex);
    if (i.backing == 0) return;
    if (--i.backing_users == 0) {
      if (auto r = backing.close(i.backing); !r)
        fusexx::log::warn("passthrough: closing backing id {} failed: {}", i.backing, r.error().message());
      i.backing = 0;
    }
    note_backing(i);
  }
  static void note_backing(const inode& i) {
    passthrough::note(passthrough::notes::kind::backing, i.id, -1, static_cast<std::uint64_t>(i.backing), i.backing_users, 0);
  }

  // Says once why kernel passthrough is not used.
  void refuse(std::string why) {
    std::lock_guard g(refusal_mutex_);
    if (!refusal_.empty()) return;
    refusal_ = std::move(why);
    fusexx::log::warn("{}", refusal_);
  }

  static struct flock to_flock(const fusexx::posix_lock& l) {
    struct flock fl {};
    fl.l_type = l.type;
    fl.l_whence = SEEK_SET;
    fl.l_start = l.start;
    fl.l_len = l.end == fusexx::posix_lock::lock_to_eof ? 0 : l.end - l.start + 1;
    return fl;
  }

  // Runs `attempt` (0 or an errno) until it succeeds; a busy lock with `wait`
  // is retried after a short sleep that does not block an io_uring queue
  // thread (the holder's unlock may need that very queue).
  template <class Attempt>
  fusexx::task<void> retry_while_busy(request& r, bool wait, Attempt attempt) {
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
      const int e = attempt();
      if (e == 0) co_return fusexx::result<void>{};
      if ((e != EAGAIN && e != EWOULDBLOCK && e != EACCES) || !wait) co_return fusexx::error(e);
      if (r.interrupted()) co_return fusexx::error(EINTR);
      co_await fusexx::io::sleep_for(pause);
      pause = std::min<std::chrono::milliseconds>(pause * 2, std::chrono::milliseconds(50));
    }
  }

  // Calls `get(buf, size)` (an xattr call) with a buffer big enough.
  template <class Get>
  static result<std::string> read_sized(Get get) {
    std::string value(256, '\0');
    for (;;) {
      ssize_t n = get(value.data(), value.size());
      if (n >= 0) {
        value.resize(std::size_t(n));
        return value;
      }
      if (errno != ERANGE) return fusexx::last_error();
      n = get(nullptr, 0);  // the size now; it may change again before the next call
      if (n < 0) return fusexx::last_error();
      value.assign(std::size_t(n) + 1, '\0');
    }
  }

  // Fills a READDIR/READDIRPLUS reply from `offset` on. In plus mode each
  // entry is looked up (one kernel reference) and the reference is given back
  // if the entry does not fit after all.
  result<void> fill_dir(inode& parent, open_dir& d, off_t offset, fusexx::dir_buffer& out) {
    std::lock_guard g(d.mutex);
    if (!d.dir) return fusexx::error(EBADF);  // lost in a crash (recovered())
    if (offset != d.offset) {
      ::seekdir(d.dir, offset);
      d.offset = offset;
      d.held.reset();
    }
    // Adds one entry; false when the reply is full.
    auto add = [&](std::string_view name, ino_t ino, unsigned char type, off_t next) {
      if (out.plus() && name != "." && name != "..") {
        // (A listing of a directory the kernel has not seen yet is mostly
        // of new objects: the entry's inode number says which.)
        auto e = lookup_at(parent, std::string(name),
                           table_->knows(parent.dev, ino) ? lookup_hint::maybe_known : lookup_hint::new_object);
        if (!e) return true;  // gone meanwhile: skip it
        if (out.add(name, *e, next)) return true;
        forget(e->node, 1);
        return false;
      }
      return out.add(name, ino, mode_t(DTTOIF(type)), next);
    };
    if (d.held) {
      if (!add(d.held->name, d.held->ino, d.held->type, d.held->next)) return {};
      d.offset = d.held->next;
      d.held.reset();
    }
    for (;;) {
      errno = 0;
      dirent* de = ::readdir(d.dir);
      if (!de) {
        if (errno != 0 && out.empty()) return fusexx::last_error();
        // A removed directory (the source itself, rmdir'ed underneath
        // us): getdents answers ENOENT natively, but glibc's readdir turns
        // that into a quiet end (POSIX), which would list the mirror's
        // directory as empty without "." and "..". Answer as natively.
        // (tests/passthrough_faults_test.cc, "the source directory renamed,
        // then removed")
        if (out.empty()) {
          struct stat st {};
          if (::fstat(::dirfd(d.dir), &st) == 0 && st.st_nlink == 0) return fusexx::error(ENOENT);
        }
        return {};
      }
      if (!add(de->d_name, de->d_ino, de->d_type, de->d_off)) {
        d.held = open_dir::held_entry{de->d_name, de->d_ino, de->d_type, de->d_off};
        return {};
      }
      d.offset = de->d_off;
    }
  }

  std::unique_ptr<passthrough::inode_table> table_;  // declared first: open files point into it
  // Open files and directories by file handle. The table owns them, so those
  // the kernel never released (the server stopped while files were open: no
  // RELEASE comes after an abort) are freed with the filesystem.
  passthrough::slot_table<open_file> files_;
  passthrough::slot_table<open_dir> dirs_;
  std::atomic<bool> passthrough_on_{false};
  std::atomic<std::uint64_t> getxattrs_{0}, passthrough_opens_{0}, forget_errors_{0},
      lookup_opens_{0}, backing_reopens_{0};
  bool killing_suidgid_ = false;  // handle_killpriv_v2 was granted: clearing set-id bits is ours
  bool memory_backed_ = false;    // the source is on tmpfs or ramfs: its reads never wait (see read)
  mutable std::mutex refusal_mutex_;
  std::string refusal_;
};

static_assert(fusexx::filesystem<passthrough_fs>);
