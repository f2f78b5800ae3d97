#pragma once
// memfs: a complete in-memory filesystem that applications should not be able
// to tell apart from tmpfs. Files (sparse), directories, symlinks, hard links,
// fifos, sockets and device nodes, xattrs (user., trusted., security.),
// POSIX and flock locks that block and wake, fallocate, SEEK_DATA/SEEK_HOLE,
// rename with RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT,
// directory streams that list each entry once however the directory changes
// meanwhile, a size limit, real statfs numbers.
//
// Permission checks are the kernel's: memfs is always mounted with
// default_permissions (see configure_mount), so mode bits, sticky directories,
// chown rules and suid/sgid clearing on write and chown are enforced by the
// VFS from the attributes memfs reports. memfs itself implements what only
// the filesystem can: setgid directories passing on their group, and the
// object model (nlink, lookup counts, open files).
//
// Inodes live exactly as long as something refers to them: a name (nlink), a
// kernel lookup reference (LOOKUP and friends add one, FORGET takes them
// back), or an open file. live_inodes() and kernel_lookups() expose this, so
// tests can check that nothing leaks.
//
// One mutex guards everything; handlers are short, and blocking lock requests
// wait as suspended coroutines, not on a thread.
#include <fusexx/fusexx.hpp>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <coroutine>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <absl/container/btree_map.h>

#include "examples/memfs/credentials.hpp"
#include "examples/memfs/file_data.hpp"
#include "examples/memfs/invalidator.hpp"
#include "examples/memfs/locks.hpp"

namespace memfs {

using fusexx::ino;

// memfs's own ioctls (also a test hook): the kernel's lookup count of the
// file, and a 16-byte buffer reversed in place (data in and out).
inline constexpr unsigned ioc_lookups = _IOR('M', 1, std::uint64_t);
inline constexpr unsigned ioc_reverse = _IOWR('M', 2, char[16]);

inline constexpr std::size_t name_max = 255;
// The most one copy_file_range moves (the kernel's MAX_RW_COUNT, INT_MAX
// rounded down to a page): the rest is the caller's next call.
inline constexpr std::uint64_t max_copy = 0x7ffff000;

// Stamps come from the request's time, not the clock: a crash-recovering
// successor replays the journal at the times it was applied at.
inline timespec now() { return fusexx::request_time(); }

struct child_ref {
  ino node;
  std::uint64_t cookie;  // the readdir offset just after this entry
  // The node's file type (S_IFMT bits, which never change): a READDIR entry
  // names it, so a plain listing reads only the directory, never the nodes.
  // Not in snapshots: a restore takes it from the node.
  mode_t type = 0;
};

struct inode {
  ino id = 0;
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  dev_t rdev = 0;
  nlink_t nlink = 0;
  timespec atime{}, mtime{}, ctime{}, btime{};
  std::uint64_t lookups = 0;  // references the kernel holds (released by FORGET)
  std::uint32_t opens = 0;    // open files and directories
  file_data data;             // regular files
  // Whether the kernel may hold pages of the file in its page cache: set by
  // reads and writes through it, cleared when memfs has dropped them.
  bool maybe_cached = false;
  std::string target;         // symlinks
  // Directories: names, and the same entries in readdir order. An entry's
  // cookie is given when it is added to the directory and kept when it is
  // renamed within it; new cookies only grow. So an offset the kernel kept
  // still means "after that entry" however many were added, removed or
  // renamed since.
  ino parent = 0;
  using entry_map = std::map<std::string, child_ref, std::less<>>;
  entry_map children;
  // The entries themselves, not their names: a listing then finds each
  // entry's node without a search by name (that search was half of a
  // 10 000-entry READDIR's time). A map's elements keep their address until
  // erased, and after extract() and insert() (rename_entry). A B-tree, so a
  // listing walks a few hundred entries per node instead of chasing a pointer
  // per entry (std::map's increments were a fifth of a READDIR's time).
  absl::btree_map<std::uint64_t, const entry_map::value_type*> order;
  std::uint64_t next_cookie = 3;  // 1 and 2 are "." and ".."
  std::map<std::string, std::string, std::less<>> xattrs;
  lock_table locks;

  bool is_dir() const { return S_ISDIR(mode); }

  inode() = default;
  // Not copied: `order` points into this inode's own `children`.
  inode(const inode&) = delete;
  inode& operator=(const inode&) = delete;
  inode(inode&&) = default;
  inode& operator=(inode&&) = default;
};

// Parses "123", "64k", "10M", "2g" (powers of 1024).
inline std::optional<std::uint64_t> parse_size(std::string_view s) {
  std::uint64_t v = 0, unit = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k': case 'K': unit = 1ull << 10; break;
      case 'm': case 'M': unit = 1ull << 20; break;
      case 'g': case 'G': unit = 1ull << 30; break;
      default: break;
    }
    if (unit != 1) s.remove_suffix(1);
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || p != s.data() + s.size() || v > UINT64_MAX / unit) return std::nullopt;
  return v * unit;
}

inline void save_time(fusexx::snapshot_writer& w, const timespec& t) {
  w.i64(t.tv_sec);
  w.i64(t.tv_nsec);
}
inline bool restore_time(fusexx::snapshot_reader& r, timespec& t) {
  std::int64_t sec = 0, nsec = 0;
  if (!r.i64(sec) || !r.i64(nsec) || nsec < 0 || nsec >= 1'000'000'000) return false;
  t.tv_sec = static_cast<time_t>(sec);
  t.tv_nsec = static_cast<long>(nsec);
  return true;
}

// One inode, field by field (memfs_fs::save).
inline void save_inode(fusexx::snapshot_writer& w, const inode& i) {
  w.u64(i.id);
  w.u32(i.mode);
  w.u32(i.uid);
  w.u32(i.gid);
  w.u64(i.rdev);
  w.u64(i.nlink);
  for (const timespec* t : {&i.atime, &i.mtime, &i.ctime, &i.btime}) save_time(w, *t);
  w.u64(i.lookups);
  w.u32(i.opens);
  i.data.save(w);
  w.boolean(i.maybe_cached);
  w.str(i.target);
  w.u64(i.parent);
  w.u64(i.next_cookie);
  w.u64(i.children.size());
  for (const auto& [name, child] : i.children) {
    w.str(name);
    w.u64(child.node);
    w.u64(child.cookie);
  }
  w.u64(i.xattrs.size());
  for (const auto& [name, value] : i.xattrs) {
    w.str(name);
    w.str(value);
  }
  i.locks.save(w);
}
inline bool restore_inode(fusexx::snapshot_reader& r, inode& i) {
  std::uint32_t mode = 0, uid = 0, gid = 0;
  std::uint64_t rdev = 0, nlink = 0, count = 0;
  if (!r.u64(i.id) || !r.u32(mode) || !r.u32(uid) || !r.u32(gid) || !r.u64(rdev) || !r.u64(nlink)) return false;
  i.mode = mode;
  i.uid = uid;
  i.gid = gid;
  i.rdev = rdev;
  i.nlink = nlink;
  for (timespec* t : {&i.atime, &i.mtime, &i.ctime, &i.btime})
    if (!restore_time(r, *t)) return false;
  if (!r.u64(i.lookups) || !r.u32(i.opens) || !i.data.restore(r) || !r.boolean(i.maybe_cached) || !r.str(i.target) ||
      !r.u64(i.parent) || !r.u64(i.next_cookie) || !r.count(count, 24))
    return false;
  for (std::uint64_t k = 0; k < count; ++k) {
    std::string name;
    child_ref child{};
    if (!r.str(name) || name.empty() || name.size() > name_max || !r.u64(child.node) || !r.u64(child.cookie) ||
        child.cookie >= i.next_cookie || i.order.contains(child.cookie))
      return false;
    const auto [entry, added] = i.children.emplace(std::move(name), child);
    if (!added) return false;  // one name twice
    i.order.emplace(child.cookie, &*entry);
  }
  if (!r.count(count, 16)) return false;
  for (std::uint64_t k = 0; k < count; ++k) {
    std::string name, value;
    if (!r.str(name) || !r.str(value)) return false;
    i.xattrs.emplace(std::move(name), std::move(value));
  }
  return i.locks.restore(r);
}

}  // namespace memfs

struct memfs_fs : fusexx::filesystem_base<memfs_fs> {
  using ino = fusexx::ino;
  using request = fusexx::request;
  template <class T>
  using result = fusexx::result<T>;
  using inode = memfs::inode;

  static constexpr std::string_view usage =
      "memfs options:\n"
      "     size=N[kmg]           most bytes of file data (default: half of the RAM, like tmpfs)\n"
      "     nr_inodes=N[kmg]      most files, directories, symlinks, nodes and hard links\n"
      "                           (default: half of the RAM's pages, like tmpfs; 0: no limit);\n"
      "                           extended attributes use up this room too, as on tmpfs (one\n"
      "                           inode is 1 KiB, an xattr 40 bytes + name + value); ENOSPC\n"
      "                           past it\n"
      "     entry_timeout=SECS    how long the kernel may cache names (default 1)\n"
      "     attr_timeout=SECS     how long the kernel may cache attributes (default 1)\n"
      "     writeback_cache       let the kernel cache writes and send them later, coalesced\n"
      "     atomic_o_trunc        take open(O_TRUNC) as one OPEN instead of OPEN + SETATTR\n"
      "     explicit_inval_data   keep cached pages when size or mtime change (memfs is the\n"
      "                           only writer, so only its notifications invalidate them)\n"
      "     handle_killpriv_v2    memfs, not the kernel, clears suid/sgid on write, chown\n"
      "                           and truncate\n"
      "     local_locks           the kernel keeps POSIX and flock locks, not memfs: the\n"
      "                           same for this machine's processes, and no FLUSH per close\n";

  memfs_fs() {
    const std::uint64_t half_ram = std::uint64_t(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE) / 2;
    limit_blocks_ = half_ram / memfs::file_data::block_size;
    inode_limit_ = limit_blocks_;
    inode& root = make_inode(S_IFDIR | 0755, ::getuid(), ::getgid());
    root.parent = root.id;
    root.nlink = 2;
  }

  // The mount options memfs relies on: the kernel checks permissions, and
  // (for root) everyone may use the mount, as with tmpfs. fusexx::main
  // applies them after the command line, so they cannot be switched off.
  static void configure_mount(fusexx::mount_options& m) {
    m.default_permissions = true;
    if (::geteuid() == 0) m.allow_other = true;
    m.nodev = false;  // device nodes behave as on tmpfs
    if (m.fsname.empty()) m.fsname = "memfs";
    if (m.subtype.empty()) m.subtype = "memfs";
  }

  // ---- observation (tests, statistics) ----
  std::size_t live_inodes() const {
    std::lock_guard g(mutex_);
    return inodes_.size();
  }
  std::uint64_t kernel_lookups() const {
    std::lock_guard g(mutex_);
    std::uint64_t n = 0;
    for (auto& [id, i] : inodes_) n += i->lookups;
    return n;
  }
  // Node ids the kernel currently holds references to (for a PRUNE notification).
  std::vector<ino> referenced_nodes() const {
    std::lock_guard g(mutex_);
    std::vector<ino> out;
    for (auto& [id, i] : inodes_)
      if (i->lookups > 0 && id != fusexx::root_ino) out.push_back(id);
    return out;
  }
  // FORGETs for more references than the kernel had: must stay 0.
  std::uint64_t forget_errors() const {
    std::lock_guard g(mutex_);
    return forget_errors_;
  }
  // Lock requests waiting for a lock (suspended SETLKW / blocking flock).
  std::size_t lock_waiters() const {
    std::lock_guard g(mutex_);
    return waiters_.size();
  }
  std::uint64_t used_blocks() const {
    std::lock_guard g(mutex_);
    return used_blocks_;
  }
  // How many requests of some kinds arrived: what tests count to see which
  // requests the kernel sends under each INIT capability.
  struct request_counts {
    std::atomic<std::uint64_t> writes{0};
    std::atomic<std::uint64_t> bytes_written{0};
    std::atomic<std::uint64_t> writes_killing_suidgid{0};    // WRITE with FUSE_WRITE_KILL_SUIDGID
    std::atomic<std::uint64_t> opens_with_trunc{0};          // OPEN carrying O_TRUNC
    std::atomic<std::uint64_t> size_changes{0};              // SETATTR with a size
    std::atomic<std::uint64_t> mode_changes{0};              // SETATTR with a mode
    std::atomic<std::uint64_t> setattrs_killing_suidgid{0};  // SETATTR with FATTR_KILL_SUIDGID
    std::atomic<std::uint64_t> opens_killing_suidgid{0};     // OPEN (O_TRUNC) with FUSE_OPEN_KILL_SUIDGID
    std::atomic<std::uint64_t> bmaps{0};                     // BMAP (fuseblk mounts only)
    std::atomic<std::uint64_t> cache_drops{0};               // page caches dropped after an O_DIRECT write
  };
  const request_counts& counts() const noexcept { return counts_; }
  // A file's data and attributes as memfs holds them, whatever the kernel
  // has cached (node ids are the st_ino the kernel reports).
  std::optional<std::string> contents(ino id) const {
    std::lock_guard g(mutex_);
    auto it = inodes_.find(id);
    if (it == inodes_.end()) return std::nullopt;
    std::string s(std::size_t(it->second->data.size()), '\0');
    it->second->data.read(0, std::as_writable_bytes(std::span(s)));
    return s;
  }
  std::optional<struct stat> attributes(ino id) const {
    std::lock_guard g(mutex_);
    auto it = inodes_.find(id);
    if (it == inodes_.end()) return std::nullopt;
    return stat_of(*it->second);
  }
  // Overwrites data without the kernel knowing, as another client of a
  // shared filesystem would; mtime moves, the size stays.
  bool change_behind_kernel(ino id, off_t off, std::string_view bytes) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i || !S_ISREG(i->mode) || !memfs::file_data::fits(off, bytes.size()) ||
        off + off_t(bytes.size()) > i->data.size())
      return false;
    i->data.write(off, std::as_bytes(std::span(bytes)));
    timespec t = memfs::now();
    if (t.tv_sec == i->mtime.tv_sec && t.tv_nsec == i->mtime.tv_nsec) ++t.tv_nsec;
    i->mtime = i->ctime = t;
    return true;
  }

  // ---- options ----
  fusexx::outcome<bool> option(std::string_view key, std::optional<std::string_view> value) {
    if (key == "size") {
      auto bytes = value ? memfs::parse_size(*value) : std::nullopt;
      if (!bytes || *bytes < std::uint64_t(memfs::file_data::block_size))
        return fusexx::fail(EINVAL, "memfs: size= needs a size of at least 4k (e.g. size=64m)");
      limit_blocks_ = *bytes / memfs::file_data::block_size;
      return true;
    }
    if (key == "nr_inodes") {
      // As tmpfs: a count with an optional k, m or g; 0 takes the limit away.
      auto n = value ? memfs::parse_size(*value) : std::nullopt;
      if (!n || *n > max_inode_limit)
        return fusexx::fail(EINVAL, "memfs: nr_inodes= needs a count up to {} (e.g. nr_inodes=10k; 0: no limit)",
                            max_inode_limit);
      inode_limit_ = *n == 0 ? no_inode_limit : *n;
      return true;
    }
    if (key == "entry_timeout" || key == "attr_timeout") {
      double secs = -1;
      if (value) {
        auto [p, ec] = std::from_chars(value->data(), value->data() + value->size(), secs);
        if (ec != std::errc{} || p != value->data() + value->size()) secs = -1;
      }
      // NaN, infinity and more seconds than a timeout holds are refused too:
      // converting them is undefined (found by tests/fuzz/mount_options).
      if (!(secs >= 0) || secs > 1e9)
        return fusexx::fail(EINVAL, "memfs: {}= needs a number of seconds (0 to 1e9)", key);
      auto t = std::chrono::duration_cast<fusexx::timeout>(std::chrono::duration<double>(secs));
      (key == "entry_timeout" ? entry_timeout : attr_timeout) = t;
      return true;
    }
    if (key == "local_locks") {
      if (value) return fusexx::fail(EINVAL, "memfs: option '{}' takes no value", key);
      local_locks_ = true;
      return true;
    }
    namespace f = fusexx::proto::init_flag;
    for (auto [name, flag] : {std::pair{"writeback_cache", f::writeback_cache}, {"atomic_o_trunc", f::atomic_o_trunc},
                              {"explicit_inval_data", f::explicit_inval_data},
                              {"handle_killpriv_v2", f::handle_killpriv_v2}}) {
      if (key != name) continue;
      if (value) return fusexx::fail(EINVAL, "memfs: option '{}' takes no value", key);
      init_wants_ |= flag;
      return true;
    }
    return false;
  }
  fusexx::timeout entry_timeout = std::chrono::seconds(1);
  fusexx::timeout attr_timeout = std::chrono::seconds(1);

  // ---- lifecycle ----
  fusexx::result<void> init(fusexx::connection& c) {
    // POSIX and flock locks are asked for by default, since memfs has
    // getlk/setlk and flock: the locks are memfs's. With -o local_locks the
    // kernel keeps them, as it does for a filesystem that implements none:
    // they work the same for the processes of this machine (the only ones a
    // memfs has), outlive a handover or a crash in the kernel, and spare every
    // close(2) its FLUSH round trip (flush below).
    if (local_locks_) {
      c.unwant(fusexx::proto::init_flag::posix_locks);
      c.unwant(fusexx::proto::init_flag::flock_locks);
    }
    // The -o options above: memfs handles each of them however it is asked.
    c.want(init_wants_);
    namespace f = fusexx::proto::init_flag;
    atime_from_cache_ = !(init_wants_ & (f::writeback_cache | f::explicit_inval_data));
    // File handles that resolve whenever the object exists, not only while
    // the kernel has it cached: the kernel then asks LOOKUP "." / ".." (see
    // lookup). Node ids are never reused, so generation 0 suffices.
    c.want(fusexx::proto::init_flag::export_support);
    c.want(fusexx::proto::init_flag::direct_io_allow_mmap);  // O_DIRECT opens are FOPEN_DIRECT_IO (open_file)
    if (init_wants_ & fusexx::proto::init_flag::explicit_inval_data)
      c.unwant(fusexx::proto::init_flag::auto_inval_data);
    return {};
  }
  void destroy() {
    // The connection is over: no FORGET will come for what the kernel held,
    // nobody waits for a lock any more, and no cache is left to drop.
    invalidator_.stop();
    wakeups w;
    std::lock_guard g(mutex_);
    std::vector<inode*> gone;
    for (auto& [id, i] : inodes_) {
      i->lookups = 0;
      if (unused(*i)) gone.push_back(i.get());
    }
    for (inode* i : gone) release_if_unused(*i);
    for (lock_wait* waiter : std::exchange(waiters_, {})) {
      waiter->interrupted = true;
      w.handles.push_back(waiter->handle);
    }
  }

  // ---- restart: a new memfs process takes the mount over (docs/restart.md) ----
  static constexpr bool restartable = true;
  static constexpr std::uint32_t snapshot_version = 1;  // of what save() writes
  // Crash recovery under a keeper (-o supervise; docs/restart.md): memfs's
  // state changes only through requests, under one mutex, stamped with
  // fusexx::request_time() (memfs::now()), with node ids and handles from
  // counters: a replay of the journal on a checkpoint rebuilds it exactly.
  static constexpr bool crash_safe = true;

  // Everything: the settings the connection was negotiated with, the whole
  // tree with every file's contents and extended attributes, the lookup and
  // open counts, the locks held, and the open directory streams. Lock
  // requests still waiting are not state: the kernel resends them to the
  // successor, which waits on them again.
  fusexx::result<void> save(fusexx::snapshot_writer& w) {
    std::lock_guard g(mutex_);
    w.u32(snapshot_version);
    w.u64(limit_blocks_);
    w.u64(inode_limit_);
    w.i64(entry_timeout.count());
    w.i64(attr_timeout.count());
    w.u64(init_wants_);
    w.boolean(atime_from_cache_);
    w.u64(next_ino_);
    w.u64(next_fh_);
    w.u64(lock_generation_);
    w.u64(forget_errors_);
    w.u64(inodes_.size());
    for (const auto& [id, i] : inodes_) memfs::save_inode(w, *i);
    w.u64(dir_streams_.size());
    for (const auto& [fh, end] : dir_streams_) {
      w.u64(fh);
      w.u64(end);
    }
    return {};
  }

  // Reads what save() wrote, into a memfs that has not served yet.
  fusexx::result<void> restore(fusexx::snapshot_reader& r) {
    std::lock_guard g(mutex_);
    std::uint32_t version = 0;
    if (!r.u32(version)) return fusexx::error(EBADMSG);
    if (version != snapshot_version) return fusexx::error(EPROTO);
    std::int64_t entry = 0, attr = 0;
    std::uint64_t count = 0;
    if (!r.u64(limit_blocks_) || !r.u64(inode_limit_) || !r.i64(entry) || !r.i64(attr) || !r.u64(init_wants_) ||
        !r.boolean(atime_from_cache_) || !r.u64(next_ino_) || !r.u64(next_fh_) || !r.u64(lock_generation_) ||
        !r.u64(forget_errors_) || !r.count(count, 64) ||
        (inode_limit_ != no_inode_limit && inode_limit_ > max_inode_limit))
      return fusexx::error(EBADMSG);
    entry_timeout = fusexx::timeout(entry);
    attr_timeout = fusexx::timeout(attr);
    inodes_.clear();
    used_blocks_ = 0;
    used_ispace_ = 0;
    for (std::uint64_t k = 0; k < count; ++k) {
      auto i = std::make_unique<inode>();
      if (!memfs::restore_inode(r, *i) || i->id == 0 || i->id >= next_ino_ || inodes_.contains(i->id))
        return fusexx::error(EBADMSG);
      used_blocks_ += i->data.allocated_blocks();
      used_ispace_ += ispace_of(*i);
      inodes_.emplace(i->id, std::move(i));
    }
    if (!inodes_.contains(fusexx::root_ino)) return fusexx::error(EBADMSG);
    // Every name must lead to a node that is there, whose type it takes.
    for (auto& [id, i] : inodes_)
      for (auto& [name, child] : i->children) {
        const inode* node = find(child.node);
        if (!node) return fusexx::error(EBADMSG);
        child.type = node->mode & S_IFMT;
      }
    if (!r.count(count, 16)) return fusexx::error(EBADMSG);
    dir_streams_.clear();
    for (std::uint64_t k = 0; k < count; ++k) {
      std::uint64_t fh = 0, end = 0;
      if (!r.u64(fh) || !r.u64(end)) return fusexx::error(EBADMSG);
      dir_streams_.emplace(fh, end);
    }
    return {};
  }

  void forget(ino id, std::uint64_t n) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i || i->lookups < n) {
      ++forget_errors_;
      if (!i) return;
      n = i->lookups;
    }
    i->lookups -= n;
    release_if_unused(*i);
  }

  // ---- names ----
  // "." and ".." never come from a path walk (the VFS resolves them): the
  // kernel asks for them to turn a file handle back into an object
  // (open_by_handle_at, NFS export; FUSE_EXPORT_SUPPORT, see init):
  // fuse_get_dentry() looks up "." in the handle's node, of any type, and
  // reconnecting a directory walks up with "..". A node that has lost its
  // last name is gone for a handle (ESTALE, as tmpfs says once it is evicted).
  result<fusexx::entry> lookup(request&, ino parent, std::string_view name) {
    std::lock_guard g(mutex_);
    if (name == ".") {
      inode* i = find(parent);
      if (!i || (i->nlink == 0 && i->id != fusexx::root_ino)) return fusexx::error(ENOENT);
      return reference(*i);
    }
    auto d = directory(parent);
    if (!d) return fusexx::error(d.error());
    if (name.size() > memfs::name_max) return fusexx::error(ENAMETOOLONG);
    inode* found = nullptr;
    if (name == "..") found = (*d)->nlink == 0 ? nullptr : find((*d)->parent);
    else if (auto it = (*d)->children.find(name); it != (*d)->children.end()) found = find(it->second.node);
    if (!found) return fusexx::error(ENOENT);
    return reference(*found);
  }

  result<fusexx::attr> getattr(request&, ino id, std::optional<fusexx::fhandle>) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    return fusexx::attr{.st = stat_of(*i), .valid_for = attr_timeout};
  }

  result<fusexx::attr> setattr(request& r, ino id, const fusexx::set_attributes& s) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    const timespec t = memfs::now();
    if (s.size) ++counts_.size_changes;
    if (s.mode) ++counts_.mode_changes;
    if (s.kill_suid) ++counts_.setattrs_killing_suidgid;
    if (s.size) {
      if (i->is_dir()) return fusexx::error(EISDIR);
      if (!S_ISREG(i->mode)) return fusexx::error(EINVAL);
      if (*s.size < 0) return fusexx::error(EINVAL);
      resize(*i, *s.size);
      i->mtime = t;
    }
    if (s.mode) i->mode = (i->mode & S_IFMT) | (*s.mode & 07777);
    if (s.size) drop_set_id(*i, r, s.kill_suid);  // a truncation, by this caller
    else if (s.kill_suid) kill_suid(*i);           // chown (handle_killpriv_v2)
    if (s.uid) i->uid = *s.uid;
    if (s.gid) i->gid = *s.gid;
    if (s.atime) i->atime = s.atime->tv_nsec == UTIME_NOW ? t : *s.atime;
    if (s.mtime) i->mtime = s.mtime->tv_nsec == UTIME_NOW ? t : *s.mtime;
    i->ctime = s.ctime ? *s.ctime : t;
    return fusexx::attr{.st = stat_of(*i), .valid_for = attr_timeout};
  }

  result<std::string> readlink(request&, ino id) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    if (!S_ISLNK(i->mode)) return fusexx::error(EINVAL);
    touch_atime(*i);  // as the VFS does when it reads a link (readlink, following one)
    return i->target;
  }

  result<fusexx::entry> mknod(request& r, ino parent, std::string_view name, mode_t mode, dev_t rdev, mode_t umask) {
    std::lock_guard g(mutex_);
    if (!S_ISREG(mode) && !S_ISCHR(mode) && !S_ISBLK(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode))
      return fusexx::error(EINVAL);
    auto i = create_node(r, parent, name, mode & ~umask);
    if (!i) return fusexx::error(i.error());
    (*i)->rdev = rdev;
    return reference(**i);
  }

  result<fusexx::entry> mkdir(request& r, ino parent, std::string_view name, mode_t mode, mode_t umask) {
    std::lock_guard g(mutex_);
    auto i = create_node(r, parent, name, S_IFDIR | (mode & ~umask & 07777));
    if (!i) return fusexx::error(i.error());
    return reference(**i);
  }

  result<fusexx::entry> symlink(request& r, ino parent, std::string_view name, std::string_view target) {
    std::lock_guard g(mutex_);
    if (target.size() >= PATH_MAX) return fusexx::error(ENAMETOOLONG);
    auto i = create_node(r, parent, name, S_IFLNK | 0777);
    if (!i) return fusexx::error(i.error());
    (*i)->target = target;
    return reference(**i);
  }

  result<fusexx::entry> link(request&, ino id, ino new_parent, std::string_view name) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    if (i->is_dir()) return fusexx::error(EPERM);
    auto d = insertable(new_parent, name);
    if (!d) return fusexx::error(d.error());
    // Every name but a node's first takes an inode's room, as on tmpfs
    // (shmem_link); the first name of an O_TMPFILE file is its node's.
    const std::uint64_t room = i->nlink > 0 ? bogo_inode_size : 0;
    if (!ispace_fits(room)) return fusexx::error(ENOSPC);
    used_ispace_ += room;
    add_entry(**d, name, *i);
    ++i->nlink;
    i->ctime = memfs::now();
    return reference(*i);
  }

  result<void> unlink(request&, ino parent, std::string_view name) {
    std::lock_guard g(mutex_);
    auto d = directory(parent);
    if (!d) return fusexx::error(d.error());
    auto it = (*d)->children.find(name);
    if (it == (*d)->children.end()) return fusexx::error(ENOENT);
    inode* victim = find(it->second.node);
    if (victim->is_dir()) return fusexx::error(EISDIR);
    remove_entry(**d, name);
    drop_name(**d, *victim);
    return {};
  }

  result<void> rmdir(request&, ino parent, std::string_view name) {
    std::lock_guard g(mutex_);
    auto d = directory(parent);
    if (!d) return fusexx::error(d.error());
    if (name == ".") return fusexx::error(EINVAL);
    auto it = (*d)->children.find(name);
    if (it == (*d)->children.end()) return fusexx::error(ENOENT);
    inode* victim = find(it->second.node);
    if (!victim->is_dir()) return fusexx::error(ENOTDIR);
    if (!victim->children.empty()) return fusexx::error(ENOTEMPTY);
    remove_entry(**d, name);
    drop_name(**d, *victim);
    return {};
  }

  // RENAME_WHITEOUT leaves a whiteout where the source was: a character
  // device 0/0 with mode 0, owned by the caller, with the group a new file
  // there would get (as tmpfs's shmem_whiteout; overlayfs uses it). Since
  // Linux 5.8 it needs no CAP_MKNOD.
  result<void> rename(request& r, ino from_dir, std::string_view from, ino to_dir, std::string_view to,
                      unsigned flags) {
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) return fusexx::error(EINVAL);
    if ((flags & RENAME_EXCHANGE) && (flags & (RENAME_NOREPLACE | RENAME_WHITEOUT))) return fusexx::error(EINVAL);
    if (to.size() > memfs::name_max) return fusexx::error(ENAMETOOLONG);
    std::lock_guard g(mutex_);
    auto src_dir = directory(from_dir);
    if (!src_dir) return fusexx::error(src_dir.error());
    auto dst_dir = directory(to_dir);
    if (!dst_dir) return fusexx::error(dst_dir.error());
    inode& sd = **src_dir;
    inode& dd = **dst_dir;
    auto src = sd.children.find(from);
    if (src == sd.children.end()) return fusexx::error(ENOENT);
    inode& moving = *find(src->second.node);
    auto dst = dd.children.find(to);
    inode* victim = dst == dd.children.end() ? nullptr : find(dst->second.node);
    const bool exchange = flags & RENAME_EXCHANGE;
    if (exchange && !victim) return fusexx::error(ENOENT);
    if (victim && (flags & RENAME_NOREPLACE)) return fusexx::error(EEXIST);
    // A directory cannot move below itself.
    if (moving.is_dir() && within(dd, moving)) return fusexx::error(EINVAL);
    if (exchange && victim->is_dir() && within(sd, *victim)) return fusexx::error(EINVAL);
    if (victim == &moving) return {};  // two names of one file: nothing happens
    const bool whiteout = flags & RENAME_WHITEOUT;
    if (whiteout && !ispace_fits(bogo_inode_size)) return fusexx::error(ENOSPC);
    const timespec t = memfs::now();
    if (exchange) {
      src->second.node = victim->id;
      src->second.type = victim->mode & S_IFMT;
      dst->second.node = moving.id;
      dst->second.type = moving.mode & S_IFMT;
      reparent(moving, sd, dd);
      reparent(*victim, dd, sd);
      victim->ctime = t;
    } else {
      if (victim) {
        if (moving.is_dir() && !victim->is_dir()) return fusexx::error(ENOTDIR);
        if (!moving.is_dir() && victim->is_dir()) return fusexx::error(EISDIR);
        if (!victim->children.empty()) return fusexx::error(ENOTEMPTY);
        remove_entry(dd, to);
        drop_name(dd, *victim);
      }
      if (&sd == &dd) {
        rename_entry(sd, from, to);  // keeps its place in a listing
      } else {
        remove_entry(sd, from);
        add_entry(dd, to, moving);
      }
      reparent(moving, sd, dd);
      if (whiteout) add_entry(sd, from, make_inode(S_IFCHR, r.uid(), group_for(r, sd)));  // rdev 0
    }
    moving.ctime = t;
    sd.mtime = sd.ctime = dd.mtime = dd.ctime = t;
    return {};
  }

  // ---- files ----
  result<fusexx::opened> open(request& r, ino id, int flags) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    if (i->is_dir()) return fusexx::error(EISDIR);
    if (flags & O_TRUNC) ++counts_.opens_with_trunc;
    if (r.kill_suidgid()) ++counts_.opens_killing_suidgid;  // only with handle_killpriv_v2
    if ((flags & O_TRUNC) && S_ISREG(i->mode)) {  // only with atomic_o_trunc
      resize(*i, 0);
      i->mtime = i->ctime = memfs::now();
      drop_set_id(*i, r, r.kill_suidgid());
    }
    return open_file(*i, flags);
  }

  result<fusexx::created> create(request& r, ino parent, std::string_view name, mode_t mode, int flags,
                                 mode_t umask) {
    std::lock_guard g(mutex_);
    auto i = create_node(r, parent, name, S_IFREG | (mode & ~umask & 07777));
    if (!i) return fusexx::error(i.error());
    return fusexx::created{reference(**i), open_file(**i, flags)};
  }

  result<fusexx::created> tmpfile(request& r, ino parent, mode_t mode, int flags, mode_t umask) {
    std::lock_guard g(mutex_);
    auto d = directory(parent);
    if (!d) return fusexx::error(d.error());
    if (!ispace_fits(bogo_inode_size)) return fusexx::error(ENOSPC);
    inode& i = make_inode(S_IFREG | (mode & ~umask & 07777), r.uid(), group_for(r, **d));
    i.nlink = 0;  // no name until linkat(AT_EMPTY_PATH)
    return fusexx::created{reference(i), open_file(i, flags)};
  }

  result<std::size_t> read(request&, ino id, fusexx::fhandle fh, off_t off, std::span<std::byte> into) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    if (off < 0) return fusexx::error(EINVAL);
    if (!(fh & fh_noatime)) touch_atime(*i);
    if (!(fh & fh_direct)) i->maybe_cached = true;
    return i->data.read(off, into);
  }

  // A write through a file opened O_DIRECT does not pass the page cache, and
  // the kernel drops the range's cached pages before it sends the WRITE
  // (kiocb_invalidate_pages) and, for a synchronous write, after the reply
  // (generic_file_direct_write). An asynchronous one (io_uring, aio) is
  // completed by fuse_aio_complete(), which drops nothing: a buffered read
  // running meanwhile can cache the old bytes after the first drop, and a
  // read after the write's completion is then served those (seen: ~1 in 80
  // async 16 KiB writes with two buffered readers busy on the file). So
  // after such a write memfs drops the file's cached pages itself, and
  // answers only then: every page cached from then on was read after the
  // write was applied. Only when the kernel may have cached pages of the file
  // (it read or wrote through the cache since the last drop), so a file used
  // only through O_DIRECT pays nothing. The drop runs on memfs's invalidator
  // thread (examples/memfs/invalidator.hpp), hence a coroutine.
  fusexx::task<std::size_t> write(request& r, ino id, fusexx::fhandle fh, off_t off,
                                  std::span<const std::byte> data, int flags) {
    std::size_t written = 0;
    bool drop_cache = false;
    {
      std::lock_guard g(mutex_);
      auto w = write_locked(r, id, fh, off, data, flags, drop_cache);
      if (!w) co_return fusexx::error(w.error());
      written = *w;
    }
    if (drop_cache) {
      ++counts_.cache_drops;
      co_await invalidator_.invalidate(r.notify(), id);
    }
    co_return written;
  }

  result<void> flush(request& r, ino id, fusexx::fhandle, std::uint64_t owner) {
    // Where the kernel keeps the POSIX locks (-o local_locks, or a kernel that
    // did not grant them), a FLUSH has nothing to do: ENOSYS, and the kernel
    // sends no more (fuse_flush sets fc->no_flush). The connection's grant
    // decides, not the option: a successor started without the option still
    // serves a connection whose locks are the kernel's.
    if (!r.session().conn().has(fusexx::proto::init_flag::posix_locks)) return fusexx::error(ENOSYS);
    // A process closed a file: its POSIX locks on it go (fcntl(2)).
    wakeups w;
    std::lock_guard g(mutex_);
    if (inode* i = find(id); i && i->locks.release_owner(owner)) wake_lock_waiters(w);
    return {};
  }

  // The last close of an open file (all its fds, in every process). Its
  // flock locks go, and so do the record locks taken through it that are
  // still held: those can only be OFD locks. The kernel never tells a FUSE
  // filesystem about an OFD lock's end: at the last close, locks.c's
  // locks_remove_file() calls locks_remove_posix(filp, filp), which returns
  // at once when the inode's own lock list holds no POSIX lock (with
  // FUSE_POSIX_LOCKS granted, fuse_setlk() keeps none there: the server has
  // them), and fuse_setlk() drops an unlock flagged FL_CLOSE_POSIX anyway
  // ("unlock on close is handled by the flush method"); fuse_release_common()
  // fills RELEASE's lock_owner only for flock (FUSE_RELEASE_FLOCK_UNLOCK).
  // A POSIX lock taken through this file is gone already: every close(2) of
  // it sent FLUSH with the closing process's owner (fuse_flush, sent even
  // with a fatal signal pending), and FLUSH drops all that owner's locks;
  // fcntl_setlk() undoes a lock that raced with a close. An OFD lock's owner
  // is the open file, which no FLUSH carries.
  result<void> release(request&, ino id, fusexx::fhandle fh, int) {
    wakeups w;
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return {};
    const bool flocks = i->locks.flock_release(fh);  // flock locks belong to the open file
    if (i->locks.release_file(fh) || flocks) wake_lock_waiters(w);
    --i->opens;
    release_if_unused(*i);
    return {};
  }

  result<void> fsync(request&, ino, fusexx::fhandle, bool) { return {}; }  // memory is as durable as it gets

  result<void> fallocate(request& r, ino id, fusexx::fhandle, int mode, off_t off, off_t len) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    if (!S_ISREG(i->mode)) return fusexx::error(ENODEV);
    if (off < 0 || len <= 0) return fusexx::error(EINVAL);
    if (!memfs::file_data::fits(off, std::uint64_t(len))) return fusexx::error(EFBIG);  // as vfs_fallocate
    const bool keep_size = mode & FALLOC_FL_KEEP_SIZE;
    auto& data = i->data;
    switch (mode & ~FALLOC_FL_KEEP_SIZE) {
      case 0:
        if (!reserve_space(data.blocks_needed(off, len))) return fusexx::error(ENOSPC);
        data.reserve(off, len, keep_size);
        break;
      case FALLOC_FL_PUNCH_HOLE: {
        if (!keep_size) return fusexx::error(EOPNOTSUPP);
        const auto before = data.allocated_blocks();
        data.punch_hole(off, len);
        used_blocks_ -= before - data.allocated_blocks();
        break;
      }
      case FALLOC_FL_ZERO_RANGE:
        if (!reserve_space(data.blocks_needed(off, len))) return fusexx::error(ENOSPC);
        data.zero_range(off, len, keep_size);
        break;
      default:
        return fusexx::error(EOPNOTSUPP);  // collapse/insert range, unshare
    }
    i->ctime = memfs::now();
    if (mode != FALLOC_FL_KEEP_SIZE) i->mtime = i->ctime;
    drop_set_id(*i, r);  // the kernel's file_modified() (fuse_file_fallocate) left sgid to us
    return {};
  }

  result<off_t> lseek(request&, ino id, fusexx::fhandle, off_t off, int whence) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    if (off < 0) return fusexx::error(ENXIO);
    std::optional<off_t> at;
    if (whence == SEEK_DATA) at = i->data.seek_data(off);
    else if (whence == SEEK_HOLE) at = i->data.seek_hole(off);
    else return fusexx::error(EINVAL);
    if (!at) return fusexx::error(ENXIO);
    return *at;
  }

  result<std::size_t> copy_file_range(request& r, ino in, fusexx::fhandle, off_t off_in, ino out, fusexx::fhandle,
                                      off_t off_out, std::size_t len, std::uint64_t flags) {
    if (flags != 0) return fusexx::error(EINVAL);
    std::lock_guard g(mutex_);
    inode* src = find(in);
    inode* dst = find(out);
    if (!src || !dst) return fusexx::error(ENOENT);
    if (!S_ISREG(src->mode) || !S_ISREG(dst->mode)) return fusexx::error(EINVAL);
    if (off_in < 0 || off_out < 0) return fusexx::error(EINVAL);
    // The kernel's own rules (generic_copy_file_checks): up to the source's
    // end, nothing past the largest file, no overlap within one file; and,
    // as its copy through the page cache does, at most MAX_RW_COUNT per call
    // (a short copy, which the caller continues). So a huge sparse range
    // costs what its blocks cost, and the reply fits COPY_FILE_RANGE's
    // 32-bit count.
    using memfs::file_data;
    const off_t size_in = src->data.size();
    std::uint64_t n = off_in >= size_in ? 0 : std::min<std::uint64_t>(len, std::uint64_t(size_in - off_in));
    n = std::min<std::uint64_t>(n, memfs::max_copy);
    if (n == 0) return std::size_t{0};
    if (off_out == file_data::max_size) return fusexx::error(EFBIG);
    n = std::min<std::uint64_t>(n, std::uint64_t(file_data::max_size - off_out));
    if (src == dst && std::uint64_t(off_out) < std::uint64_t(off_in) + n && std::uint64_t(off_in) < std::uint64_t(off_out) + n)
      return fusexx::error(EINVAL);
    if (!reserve_space(dst->data.blocks_needed(off_out, n))) return fusexx::error(ENOSPC);
    dst->data.copy_from(src->data, off_in, off_out, n);
    dst->mtime = dst->ctime = memfs::now();
    drop_set_id(*dst, r);
    return std::size_t(n);
  }

  result<fusexx::extended_attr> statx(request&, ino id, std::optional<fusexx::fhandle>, int, unsigned) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    const struct stat st = stat_of(*i);
    fusexx::extended_attr x;
    x.valid_for = attr_timeout;
    auto& s = x.stx;
    s.stx_mask = STATX_BASIC_STATS | STATX_BTIME;
    s.stx_blksize = static_cast<std::uint32_t>(st.st_blksize);
    s.stx_nlink = static_cast<std::uint32_t>(st.st_nlink);
    s.stx_uid = st.st_uid;
    s.stx_gid = st.st_gid;
    s.stx_mode = static_cast<std::uint16_t>(st.st_mode);
    s.stx_ino = st.st_ino;
    s.stx_size = static_cast<std::uint64_t>(st.st_size);
    s.stx_blocks = static_cast<std::uint64_t>(st.st_blocks);
    auto ts = [](const timespec& t) { return statx_timestamp{t.tv_sec, static_cast<std::uint32_t>(t.tv_nsec), 0}; };
    s.stx_atime = ts(i->atime);
    s.stx_mtime = ts(i->mtime);
    s.stx_ctime = ts(i->ctime);
    s.stx_btime = ts(i->btime);
    s.stx_rdev_major = major(i->rdev);
    s.stx_rdev_minor = minor(i->rdev);
    return x;
  }

  result<fusexx::ioctl_reply> ioctl(request&, ino id, fusexx::fhandle, unsigned, unsigned cmd, std::uint64_t,
                                    std::span<const std::byte> in, std::uint32_t out_size) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    fusexx::ioctl_reply r;
    if (cmd == memfs::ioc_lookups && out_size >= sizeof(std::uint64_t)) {
      r.out.resize(sizeof(std::uint64_t));
      std::memcpy(r.out.data(), &i->lookups, sizeof(std::uint64_t));
      return r;
    }
    if (cmd == memfs::ioc_reverse && in.size() == 16 && out_size == 16) {
      r.out.assign(in.rbegin(), in.rend());
      return r;
    }
    return fusexx::error(ENOTTY);
  }

  // FIBMAP on a fuseblk mount. memfs keeps no data on the device, so there
  // are no real device blocks to name: it answers 0 for a hole (as FIBMAP
  // does) and, for a block holding data, the block's own number plus one —
  // enough to tell data from holes, and stable while the file is unchanged.
  result<std::uint64_t> bmap(request&, ino id, std::uint32_t blocksize, std::uint64_t block) {
    ++counts_.bmaps;
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    if (!S_ISREG(i->mode) || blocksize == 0) return fusexx::error(EINVAL);
    // A block past the largest offset is a hole: no file reaches it. (The
    // product overflowed off_t before: found by tests/fuzz/dispatch_stream.)
    off_t at = 0;
    off_t end = 0;
    if (block > std::uint64_t(std::numeric_limits<off_t>::max()) ||
        __builtin_mul_overflow(off_t(block), off_t(blocksize), &at) ||
        __builtin_add_overflow(at, off_t(blocksize), &end))
      return std::uint64_t{0};
    auto data = i->data.seek_data(at);
    if (!data || *data >= end) return std::uint64_t{0};
    return block + 1;
  }

  // ---- locks ----
  result<fusexx::posix_lock> getlk(request&, ino id, fusexx::fhandle, std::uint64_t owner,
                                   const fusexx::posix_lock& want) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    if (auto c = i->locks.conflict(owner, want)) return *c;
    fusexx::posix_lock none = want;
    none.type = F_UNLCK;
    return none;
  }

  // Coroutines take their arguments by value: they run on after the call.
  fusexx::task<void> setlk(request& r, ino id, fusexx::fhandle fh, std::uint64_t owner, fusexx::posix_lock l,
                           bool wait) {
    const posix_wait waits_for{id, owner, l};
    co_return co_await take_lock(r, id, wait, [owner, l, wait, fh](inode& i, wakeups& w, memfs_fs& fs) {
      if (l.type != F_UNLCK) {
        if (auto holder = i.locks.conflicting_owner(owner, l))
          return wait && fs.would_deadlock(owner, *holder) ? EDEADLK : EAGAIN;
      }
      if (i.locks.apply(owner, l, fh)) fs.wake_lock_waiters(w);
      return 0;
    }, &waits_for);
  }

  fusexx::task<void> flock(request& r, ino id, fusexx::fhandle fh, std::uint64_t, int op) {
    const int how = op & ~LOCK_NB;
    co_return co_await take_lock(r, id, !(op & LOCK_NB), [fh, how](inode& i, wakeups& w, memfs_fs& fs) {
      if (how == LOCK_UN) {
        if (i.locks.flock_release(fh)) fs.wake_lock_waiters(w);
        return 0;
      }
      // Linux drops a held lock before converting it; waiters may get in between.
      if (i.locks.flock_release(fh)) fs.wake_lock_waiters(w);
      if (!i.locks.flock_free(fh, how)) return EAGAIN;
      i.locks.flock_set(fh, how);
      return 0;
    });
  }

  // A blocked lock request the kernel gave up on (the caller got a signal).
  void interrupt(std::uint64_t unique) {
    wakeups w;
    std::lock_guard g(mutex_);
    std::erase_if(waiters_, [&](lock_wait* waiter) {
      if (waiter->unique != unique) return false;
      waiter->interrupted = true;
      w.handles.push_back(waiter->handle);
      return true;
    });
  }

  // ---- directories ----
  result<fusexx::opened> opendir(request&, ino id, int flags) {
    std::lock_guard g(mutex_);
    auto d = directory(id);
    if (!d) return fusexx::error(d.error());
    ++(*d)->opens;
    const fusexx::fhandle fh = new_handle(flags);
    dir_streams_.emplace(fh, UINT64_MAX);
    return fusexx::opened{.fh = fh};
  }
  result<void> readdir(request&, ino id, fusexx::fhandle fh, off_t off, fusexx::dir_buffer& out) {
    return list(id, fh, off, out);
  }
  result<void> readdirplus(request&, ino id, fusexx::fhandle fh, off_t off, fusexx::dir_buffer& out) {
    return list(id, fh, off, out);
  }
  result<void> releasedir(request&, ino id, fusexx::fhandle fh, int) {
    std::lock_guard g(mutex_);
    dir_streams_.erase(fh);
    if (inode* i = find(id)) {
      --i->opens;
      release_if_unused(*i);
    }
    return {};
  }
  result<void> fsyncdir(request&, ino, fusexx::fhandle, bool) { return {}; }

  result<fusexx::fs_stats> statfs(request&, ino) {
    std::lock_guard g(mutex_);
    fusexx::fs_stats s{};
    s.f_bsize = s.f_frsize = memfs::file_data::block_size;
    s.f_blocks = limit_blocks_;
    s.f_bfree = s.f_bavail = limit_blocks_ - std::min(used_blocks_, limit_blocks_);
    // tmpfs reports no inode numbers without a limit (df -i shows 0), and
    // counts free inodes in whole inodes' room (shmem_statfs).
    if (inode_limit_ != no_inode_limit) {
      const std::uint64_t room = inode_limit_ * bogo_inode_size;
      s.f_files = inode_limit_;
      s.f_ffree = (room - std::min(used_ispace_, room)) / bogo_inode_size;
    }
    s.f_namemax = memfs::name_max;
    return s;
  }

  // ---- xattrs ----
  result<void> setxattr(request&, ino id, std::string_view name, std::span<const std::byte> value, int flags) {
    if (!xattr_namespace_ok(name)) return fusexx::error(EOPNOTSUPP);
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    auto it = i->xattrs.find(name);
    if ((flags & XATTR_CREATE) && it != i->xattrs.end()) return fusexx::error(EEXIST);
    if ((flags & XATTR_REPLACE) && it == i->xattrs.end()) return fusexx::error(ENODATA);
    // A new value takes its room; one it replaces gives its own back. (tmpfs
    // takes the new value's whole room before it frees the old one's, so
    // there a replace with a value no larger can fail when full; here it
    // succeeds.)
    const std::uint64_t added = xattr_space(name, value.size());
    const std::uint64_t freed = it == i->xattrs.end() ? 0 : xattr_space(name, it->second.size());
    if (added > freed && !ispace_fits(added - freed)) return fusexx::error(ENOSPC);
    used_ispace_ = used_ispace_ + added - freed;
    i->xattrs[std::string(name)] = std::string(reinterpret_cast<const char*>(value.data()), value.size());
    i->ctime = memfs::now();
    return {};
  }
  result<std::string> getxattr(request&, ino id, std::string_view name) {
    std::lock_guard g(mutex_);
    auto x = existing_xattr(id, name);
    if (!x) return fusexx::error(x.error());
    return x->second->second;
  }
  result<std::string> listxattr(request& r, ino id) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    std::string names;
    for (auto& [name, value] : i->xattrs) {
      if (name.starts_with("trusted.") && r.uid() != 0) continue;  // as tmpfs: only privileged callers see them
      names += name;
      names += '\0';
    }
    return names;
  }
  result<void> removexattr(request&, ino id, std::string_view name) {
    std::lock_guard g(mutex_);
    auto x = existing_xattr(id, name);
    if (!x) return fusexx::error(x.error());
    auto [i, it] = *x;
    used_ispace_ -= xattr_space(it->first, it->second.size());
    i->xattrs.erase(it);
    i->ctime = memfs::now();
    return {};
  }

 private:
  // write() under the mutex; `drop_cache`: drop the kernel's cached pages before answering.
  result<std::size_t> write_locked(request& r, ino id, fusexx::fhandle fh, off_t off, std::span<const std::byte> data,
                                   int flags, bool& drop_cache) {
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    if (off < 0) return fusexx::error(EINVAL);
    // Past the largest file: what the kernel itself answers a write that
    // starts at its limit (generic_write_check_limits).
    if (!memfs::file_data::fits(off, data.size())) return fusexx::error(EFBIG);
    if (!i->data.write(off, data, [this](std::uint64_t blocks) { return reserve_space(blocks); }))
      return fusexx::error(ENOSPC);
    if ((fh & fh_direct) && !(flags & fusexx::proto::write_flag::cache)) {
      drop_cache = std::exchange(i->maybe_cached, false);
    } else {
      i->maybe_cached = true;  // written through the page cache
    }
    ++counts_.writes;
    counts_.bytes_written += data.size();
    const bool kill = flags & fusexx::proto::write_flag::kill_suidgid;
    if (kill) ++counts_.writes_killing_suidgid;
    // A write from the page cache (writeback_cache) carries no writer's
    // credentials: the kernel cleared the bits when the data was written.
    if (!(flags & fusexx::proto::write_flag::cache)) drop_set_id(*i, r, kill);
    i->mtime = i->ctime = memfs::now();
    return data.size();
  }
  // Coroutines to resume once the mutex is released (declare before the lock).
  struct wakeups {
    std::vector<std::coroutine_handle<>> handles;
    ~wakeups() {
      for (auto h : handles) h.resume();
    }
  };

  // What a blocked F_SETLKW wants: who asks, for which range of which file.
  struct posix_wait {
    ino node;
    std::uint64_t owner;
    fusexx::posix_lock lock;
  };

  // A lock request waiting for some lock to be released.
  struct lock_wait {
    memfs_fs& fs;
    request& req;
    std::uint64_t seen;  // lock_generation_ when the attempt failed
    const posix_wait* posix = nullptr;  // set for F_SETLKW (deadlock detection)
    std::uint64_t unique = req.unique();
    std::coroutine_handle<> handle{};
    bool interrupted = false;

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
      std::lock_guard g(fs.mutex_);
      if (fs.lock_generation_ != seen) return false;  // a lock went meanwhile: try again now
      // Checked under the mutex: interrupt() takes it too, after the
      // registry knows, so one of the two sees the other.
      if (req.interrupted()) {
        interrupted = true;
        return false;
      }
      handle = h;
      fs.waiters_.push_back(this);
      return true;
    }
    bool await_resume() const noexcept { return !interrupted; }
  };

  // Tries `attempt` (0, EAGAIN for "busy", or an errno) until it succeeds;
  // waits between tries when `wait`, else answers EAGAIN.
  template <class Attempt>
  fusexx::task<void> take_lock(request& r, ino id, bool wait, Attempt attempt, const posix_wait* posix = nullptr) {
    for (;;) {
      std::uint64_t seen = 0;
      {
        wakeups w;
        std::lock_guard g(mutex_);
        inode* i = find(id);
        if (!i) co_return fusexx::error(ENOENT);
        const int e = attempt(*i, w, *this);
        if (e == 0) co_return fusexx::result<void>{};
        if (e != EAGAIN || !wait) co_return fusexx::error(e);
        seen = lock_generation_;
      }
      if (!co_await lock_wait{*this, r, seen, posix}) co_return fusexx::error(EINTR);
    }
  }

  // True when `owner` waiting for a lock `holder` holds would close a
  // cycle: `holder` itself waits (F_SETLKW) for a lock held by someone who
  // waits ... for a lock `owner` holds. That wait would never end: F_SETLKW
  // fails with EDEADLK instead, as the kernel's own lock code does. Like the
  // kernel, this follows one holder per waiter.
  bool would_deadlock(std::uint64_t owner, std::uint64_t holder) {
    for (std::size_t steps = 0; steps <= waiters_.size(); ++steps) {
      if (holder == owner) return true;
      auto it = std::ranges::find_if(waiters_, [&](const lock_wait* w) { return w->posix && w->posix->owner == holder; });
      if (it == waiters_.end()) return false;
      const posix_wait& next = *(*it)->posix;
      inode* i = find(next.node);
      auto blocker = i ? i->locks.conflicting_owner(next.owner, next.lock) : std::nullopt;
      if (!blocker) return false;  // it will get its lock once it runs again
      holder = *blocker;
    }
    return false;
  }

  void wake_lock_waiters(wakeups& w) {
    ++lock_generation_;
    for (lock_wait* waiter : std::exchange(waiters_, {})) w.handles.push_back(waiter->handle);
  }

  inode* find(ino id) {
    auto it = inodes_.find(id);
    return it == inodes_.end() ? nullptr : it->second.get();
  }

  result<inode*> directory(ino id) {
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    if (!i->is_dir()) return fusexx::error(ENOTDIR);
    return i;
  }

  // The directory a new `name` may go into.
  result<inode*> insertable(ino parent, std::string_view name) {
    auto d = directory(parent);
    if (!d) return d;
    if (name.size() > memfs::name_max) return fusexx::error(ENAMETOOLONG);
    if ((*d)->nlink == 0) return fusexx::error(ENOENT);  // removed while someone was inside
    if ((*d)->children.contains(name) || name == "." || name == "..") return fusexx::error(EEXIST);
    return d;
  }

  inode& make_inode(mode_t mode, uid_t uid, gid_t gid) {
    auto owned = std::make_unique<inode>();
    inode& i = *owned;
    i.id = next_ino_++;
    i.mode = mode;
    i.uid = uid;
    i.gid = gid;
    i.nlink = 1;
    i.atime = i.mtime = i.ctime = i.btime = memfs::now();
    used_ispace_ += bogo_inode_size;  // the caller made sure of the room (ispace_fits)
    inodes_.emplace(i.id, std::move(owned));
    return i;
  }

  // In a setgid directory, new files take the directory's group, and new
  // directories are setgid too (the kernel already stripped S_ISGID from
  // `mode` where the caller may not have it).
  static gid_t group_for(const request& r, const inode& dir) { return (dir.mode & S_ISGID) ? dir.gid : r.gid(); }

  result<inode*> create_node(request& r, ino parent, std::string_view name, mode_t mode) {
    auto d = insertable(parent, name);
    if (!d) return d;
    inode& dir = **d;
    if (!ispace_fits(bogo_inode_size)) return fusexx::error(ENOSPC);
    if (S_ISDIR(mode) && (dir.mode & S_ISGID)) mode |= S_ISGID;
    inode& i = make_inode(mode, r.uid(), group_for(r, dir));
    if (i.is_dir()) {
      i.nlink = 2;
      i.parent = dir.id;
      ++dir.nlink;
    }
    add_entry(dir, name, i);
    return &i;
  }

  void add_entry(inode& dir, std::string_view name, const inode& i) {
    const std::uint64_t cookie = dir.next_cookie++;
    const auto entry = dir.children.emplace(std::string(name), memfs::child_ref{i.id, cookie, i.mode & S_IFMT}).first;
    dir.order.emplace(cookie, &*entry);
    dir.mtime = dir.ctime = memfs::now();
  }
  // A new name for an entry, in the same place of the directory's order.
  void rename_entry(inode& dir, std::string_view from, std::string_view to) {
    auto node = dir.children.extract(dir.children.find(from));
    node.key() = std::string(to);
    const auto entry = dir.children.insert(std::move(node)).position;
    dir.order[entry->second.cookie] = &*entry;
    dir.mtime = dir.ctime = memfs::now();
  }
  void remove_entry(inode& dir, std::string_view name) {
    auto it = dir.children.find(name);
    dir.order.erase(it->second.cookie);
    dir.children.erase(it);
    dir.mtime = dir.ctime = memfs::now();
  }

  // `i` lost a name in `dir` (unlink, rmdir, replaced by rename).
  void drop_name(inode& dir, inode& i) {
    if (i.is_dir()) {
      i.nlink = 0;  // its "." goes with it
      --dir.nlink;  // and its ".." no longer points at dir
    } else {
      if (i.nlink > 1) used_ispace_ -= bogo_inode_size;  // a hard link's room (shmem_unlink)
      --i.nlink;
    }
    i.ctime = memfs::now();
    release_if_unused(i);
  }

  // A directory that changed parents takes its ".." link along.
  static void reparent(inode& i, inode& from, inode& to) {
    if (!i.is_dir() || &from == &to) return;
    i.parent = to.id;
    --from.nlink;
    ++to.nlink;
  }

  // True when `dir` is `ancestor` or lies below it.
  bool within(const inode& dir, const inode& ancestor) {
    for (const inode* d = &dir;; d = find(d->parent)) {
      if (d == &ancestor) return true;
      if (!d || d->id == fusexx::root_ino || d->parent == d->id) return false;
    }
  }

  static bool unused(const inode& i) { return i.id != fusexx::root_ino && i.nlink == 0 && i.lookups == 0 && i.opens == 0; }
  void release_if_unused(inode& i) {
    if (!unused(i)) return;
    used_blocks_ -= i.data.allocated_blocks();
    used_ispace_ -= ispace_of(i);
    inodes_.erase(i.id);
  }

  fusexx::entry reference(inode& i) {
    ++i.lookups;
    return fusexx::entry{.node = i.id, .st = stat_of(i), .entry_valid_for = entry_timeout,
                         .attr_valid_for = attr_timeout};
  }

  // A handle's low bits keep what memfs must know of the open's flags later
  // (READ carries the open file's flags, but the handler is not given them).
  static constexpr fusexx::fhandle fh_noatime = 1;  // O_NOATIME: reads leave atime alone
  static constexpr fusexx::fhandle fh_direct = 2;   // O_DIRECT: I/O bypasses the page cache (see write)
  static constexpr int fh_bits = 2;
  fusexx::fhandle new_handle(int flags) {
    return (next_fh_++ << fh_bits) | ((flags & O_NOATIME) ? fh_noatime : 0) | ((flags & O_DIRECT) ? fh_direct : 0);
  }

  fusexx::opened open_file(inode& i, int flags) {
    ++i.opens;
    // Data only changes through this kernel's page cache (or by our own
    // notifications), so cached pages stay valid across opens — except when
    // the next read must update atime (touch_atime): a read served from the
    // cache never reaches memfs, so the cache is dropped at this open and
    // the reads come here. (Not when the kernel owns the cached data:
    // writeback_cache, or explicit_inval_data, where only memfs's
    // notifications drop it.)
    const bool drop = atime_from_cache_ && (flags & O_ACCMODE) != O_WRONLY && !(flags & O_NOATIME) &&
                      atime_due(i, memfs::now());
    // O_DIRECT: FOPEN_DIRECT_IO too, for the kernel lets O_DIRECT writes to
    // one file run in parallel (FOPEN_PARALLEL_DIRECT_WRITES) only on that
    // path; plain O_DIRECT takes the inode lock for each write, so two
    // writers went one round trip at a time. (An extending write is still
    // exclusive; writable shared mmap of such a file needs
    // direct_io_allow_mmap, asked for in init.)
    const bool direct = (flags & O_DIRECT) != 0;
    return fusexx::opened{
        .fh = new_handle(flags), .direct_io = direct, .keep_cache = !drop, .parallel_direct_writes = direct};
  }

  // Access times as tmpfs keeps them under the default relatime mount option
  // (relatime_need_update, fs/inode.c): a read updates atime when atime is
  // not later than mtime or ctime, or is a day old. FUSE leaves atime to the
  // filesystem entirely (the kernel marks its inodes S_NOATIME), and memfs
  // sees only what reaches it: READ (not reads served from the page cache,
  // hence open_file), READDIR and READLINK. Other atime mount options
  // (noatime, strictatime) are the mount's, which the kernel does not tell a
  // FUSE filesystem: memfs always follows relatime.
  static bool atime_due(const inode& i, const timespec& now) {
    auto not_after = [](const timespec& a, const timespec& b) {
      return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec <= b.tv_nsec);
    };
    return not_after(i.atime, i.mtime) || not_after(i.atime, i.ctime) || now.tv_sec - i.atime.tv_sec >= 24 * 60 * 60;
  }
  static void touch_atime(inode& i) {
    const timespec t = memfs::now();
    if (atime_due(i, t)) i.atime = t;
  }

  // Inode space, as tmpfs keeps it since Linux 6.6 (mm/shmem.c, "tmpfs:
  // track free_ispace instead of free_inodes" and "tmpfs,xattr: enable
  // limited user extended attributes"): nr_inodes=N gives N * 1 KiB of room
  // (BOGO_INODE_SIZE), which every node takes 1 KiB of, every hard link past
  // a node's first name 1 KiB more (shmem_link), and every extended
  // attribute 40 bytes + its name + its value (simple_xattr_space). statfs
  // counts free inodes as whole KiB left. So names and xattrs, which cost
  // memory but no data blocks, are bounded as nodes are; with nr_inodes=0
  // nothing is (as on tmpfs). What these cost memfs in fact:
  // docs/reliability.md, "Resource limits".
  static constexpr std::uint64_t bogo_inode_size = 1024;
  static constexpr std::uint64_t max_inode_limit = UINT64_MAX / bogo_inode_size;
  static std::uint64_t xattr_space(std::string_view name, std::size_t size) { return 40 + name.size() + size; }
  // The room `i` takes: its node, its names past the first, its xattrs.
  static std::uint64_t ispace_of(const inode& i) {
    std::uint64_t room = bogo_inode_size * (i.is_dir() ? 1 : std::max<nlink_t>(i.nlink, 1));
    for (const auto& [name, value] : i.xattrs) room += xattr_space(name, value.size());
    return room;
  }
  bool ispace_fits(std::uint64_t bytes) const {
    return inode_limit_ == no_inode_limit || used_ispace_ + bytes <= inode_limit_ * bogo_inode_size;
  }

  bool reserve_space(std::uint64_t blocks) {
    if (used_blocks_ + blocks > limit_blocks_) return false;
    used_blocks_ += blocks;
    return true;
  }
  void resize(inode& i, off_t size) {
    const auto before = i.data.allocated_blocks();
    i.data.truncate(size);
    used_blocks_ -= before - i.data.allocated_blocks();
  }
  // What a chown does to a set-id file (handle_killpriv_v2 leaves it to us).
  static void kill_suid(inode& i) {
    i.mode &= ~S_ISUID;
    if (i.mode & S_IXGRP) i.mode &= ~S_ISGID;
  }

  // The set-id bits a change of a regular file's data (write, truncate,
  // fallocate, a copy into it) by the caller of `r` clears, by the kernel's
  // rule for every filesystem (setattr_should_drop_suidgid, fs/attr.c):
  // set-user-ID always; set-group-ID when the group may execute, or when the
  // caller is not in the file's group; nothing for a caller with CAP_FSETID.
  // The kernel applies that rule before it sends the request, except that
  // fuse_setattr() keeps only the group-execute half of the sgid case (the
  // other half needs the caller's groups, which it leaves to the
  // filesystem): a 2666 file written, truncated or fallocated by a user
  // outside its group kept its sgid bit. With handle_killpriv_v2 the kernel
  // clears nothing and says so with a kill flag (`no_fsetid`: the caller
  // lacks CAP_FSETID). The caller's supplementary groups and capabilities
  // come from /proc (examples/memfs/credentials.hpp), read only when the
  // file has a set-id bit; if they cannot be read, root counts as capable.
  void drop_set_id(inode& i, const request& r, bool no_fsetid = false) {
    if (!S_ISREG(i.mode) || !(i.mode & (S_ISUID | S_ISGID))) return;
    const auto rights = memfs::rights_of(r.pid());
    const bool fsetid = !no_fsetid && (rights ? rights->fsetid : r.uid() == 0);
    if (fsetid) return;
    mode_t clear = i.mode & S_ISUID;
    if (i.mode & S_ISGID) {
      const bool member = r.gid() == i.gid || (rights && std::ranges::find(rights->groups, i.gid) != rights->groups.end());
      if ((i.mode & S_IXGRP) || !member) clear |= S_ISGID;
    }
    i.mode &= ~clear;
  }

  // The inode and its xattr `name`, which must exist.
  using xattr_map = decltype(inode::xattrs);
  result<std::pair<inode*, xattr_map::iterator>> existing_xattr(ino id, std::string_view name) {
    if (!xattr_namespace_ok(name)) return fusexx::error(EOPNOTSUPP);
    inode* i = find(id);
    if (!i) return fusexx::error(ENOENT);
    auto it = i->xattrs.find(name);
    if (it == i->xattrs.end()) return fusexx::error(ENODATA);
    return std::pair{i, it};
  }
  static bool xattr_namespace_ok(std::string_view name) {
    return name.starts_with("user.") || name.starts_with("trusted.") || name.starts_with("security.");
  }

  struct stat stat_of(const inode& i) const {
    struct stat st {};
    st.st_ino = i.id;
    st.st_mode = i.mode;
    st.st_nlink = i.nlink;
    st.st_uid = i.uid;
    st.st_gid = i.gid;
    st.st_rdev = i.rdev;
    st.st_size = S_ISREG(i.mode)   ? i.data.size()
                 : S_ISLNK(i.mode) ? off_t(i.target.size())
                 : i.is_dir()      ? off_t(memfs::file_data::block_size)
                                   : 0;
    st.st_blksize = memfs::file_data::block_size;
    st.st_blocks = off_t(i.data.allocated_blocks() * (memfs::file_data::block_size / 512));
    st.st_atim = i.atime;
    st.st_mtim = i.mtime;
    st.st_ctim = i.ctime;
    return st;
  }

  // A directory stream lists the entries that were there when it began (its
  // READDIR at offset 0: opendir, or rewinddir), each once, in cookie order:
  // an entry renamed within the directory keeps its cookie, so it is neither
  // skipped nor seen again; one that arrives later (created, or moved in,
  // also moved out and back) has a cookie past the stream's end. tmpfs does
  // the same (libfs's offset directories stop at the directory's next offset
  // as it was at open).
  result<void> list(ino id, fusexx::fhandle fh, off_t off, fusexx::dir_buffer& out) {
    std::lock_guard g(mutex_);
    auto d = directory(id);
    if (!d) return fusexx::error(d.error());
    inode& dir = **d;
    std::uint64_t end = UINT64_MAX;  // a stream we did not open (none such today) sees everything
    if (auto s = dir_streams_.find(fh); s != dir_streams_.end()) {
      if (off == 0) s->second = dir.next_cookie;
      end = s->second;
    }
    if (!(fh & fh_noatime)) touch_atime(dir);  // each getdents is an access (iterate_dir's file_accessed)
    // "." and ".." never carry a node: the kernel takes no reference for them.
    if (off < 1 && !out.add(".", dir.id, S_IFDIR, 1)) return {};
    if (off < 2 && !out.add("..", dir.parent, S_IFDIR, 2)) return {};
    for (auto it = dir.order.upper_bound(std::uint64_t(std::max<off_t>(off, 2))); it != dir.order.end() && it->first < end;
         ++it) {
      const auto& [name, ref] = *it->second;
      if (!out.plus()) {
        if (!out.add(name, ref.node, ref.type, off_t(it->first))) break;
        continue;
      }
      inode& child = *find(ref.node);
      // Every entry the kernel receives in READDIRPLUS is a lookup reference.
      fusexx::entry e{.node = child.id, .st = stat_of(child), .entry_valid_for = entry_timeout,
                      .attr_valid_for = attr_timeout};
      if (!out.add(name, e, off_t(it->first))) break;
      ++child.lookups;
    }
    return {};
  }

  mutable std::mutex mutex_;
  std::unordered_map<ino, std::unique_ptr<inode>> inodes_;
  ino next_ino_ = fusexx::root_ino;
  fusexx::fhandle next_fh_ = 1;
  std::uint64_t used_blocks_ = 0;
  std::uint64_t limit_blocks_ = 0;
  std::uint64_t inode_limit_ = 0;
  static constexpr std::uint64_t no_inode_limit = ~std::uint64_t{0};
  std::uint64_t used_ispace_ = 0;  // bytes of inode space taken (ispace_fits)
  std::uint64_t forget_errors_ = 0;
  std::uint64_t lock_generation_ = 0;
  std::vector<lock_wait*> waiters_;
  // Open directory streams: the cookie each one's listing ends before.
  std::unordered_map<fusexx::fhandle, std::uint64_t> dir_streams_;
  std::uint64_t init_wants_ = 0;  // INIT capabilities asked for with -o
  bool local_locks_ = false;      // -o local_locks: the kernel keeps POSIX and flock locks
  bool atime_from_cache_ = true;  // open_file may drop the cache for an atime update
  // Last: its thread may resume handlers that use everything above.
  memfs::invalidator invalidator_{[](fusexx::notifier& n, ino id) { (void)n.inval_inode(id, 0, 0); }};
  request_counts counts_;
};

static_assert(fusexx::filesystem<memfs_fs>);
