#pragma once
// The inodes of a passthrough filesystem: one per backing object the kernel
// knows, keyed by the backing (st_dev, st_ino), each holding an O_PATH fd to
// that object. Every operation works *at* these fds, never on path names, so
// renames in the source tree cannot send an operation to the wrong file.
//
// An inode lives exactly as long as the kernel holds lookup references to it:
// every reply that hands out a node id (LOOKUP, CREATE, MKDIR, READDIRPLUS,
// ...) adds one, FORGET takes them back, and the last one closes the fd. The
// node id the kernel sees is the inode's slot (slot_table.hpp): found with
// no lock on the hot path, and the same in a successor process that takes
// the connection over (save/restore below); the root is node id 1.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "examples/passthrough/slot_table.hpp"

namespace passthrough {

// What a supervised passthrough notes in the crash journal for each change
// of its tables (fusexx/restart/journal_note.hpp): fixed-size entries,
// redone in order by a successor (passthrough_fs::redo).
namespace notes {
enum class kind : std::uint8_t { ref = 1, forget, file, file_closed, dir, dir_closed, backing };
struct entry {
  kind what;
  std::uint8_t flag;
  std::uint16_t unused;
  std::int32_t fd;
  std::uint64_t id, a, b, c;
};
static_assert(sizeof(entry) == 40);
}  // namespace notes

// Notes one change, when a supervised server handles a journaled request.
inline void note(notes::kind what, std::uint64_t id, int fd, std::uint64_t a, std::uint64_t b, std::uint64_t c,
                 bool flag = false) {
  if (!fusexx::journal_notes_wanted()) return;
  const notes::entry e{what, flag, 0, fd, id, a, b, c};
  fusexx::journal_note(std::as_bytes(std::span(&e, 1)));
}

struct inode {
  fusexx::ino id = 0;  // the node id the kernel knows it by
  int fd = -1;         // O_PATH|O_NOFOLLOW to the backing object
  dev_t dev = 0;
  ino_t ino = 0;
  mode_t type = 0;     // S_IFMT bits
  std::uint64_t lookups = 0;  // the kernel's references; guarded by the table

  // Kernel passthrough: one backing file per inode, shared by its opens (the
  // kernel allows only one). Guarded by backing_mutex.
  std::mutex backing_mutex;
  fusexx::backing_id backing = 0;
  unsigned backing_users = 0;

  ~inode() {
    if (fd >= 0) ::close(fd);
  }
};

// /proc/self/fd/N: re-opens an O_PATH fd for I/O, or names it for calls that
// have no *at form that accepts an empty path (xattrs, chmod).
inline std::string proc_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

class inode_table {
 public:
  // The root: `fd` is an O_PATH fd of the source directory.
  explicit inode_table(int root_fd, const struct stat& st) {
    root_.id = fusexx::root_ino;
    root_.fd = root_fd;
    root_.dev = st.st_dev;
    root_.ino = st.st_ino;
    root_.type = st.st_mode & S_IFMT;
    root_.lookups = 1;  // the kernel's own reference, never forgotten
  }
  inode_table(const inode_table&) = delete;
  inode_table& operator=(const inode_table&) = delete;

  inode& root() noexcept { return root_; }
  inode& at(fusexx::ino id) noexcept { return id == fusexx::root_ino ? root_ : inodes_.at(id); }
  static fusexx::ino id_of(const inode& i) noexcept { return i.id; }

  // Whether the object (dev, ino) has an inode now.
  bool knows(dev_t dev, ino_t ino) const {
    std::lock_guard g(mutex_);
    return (dev == root_.dev && ino == root_.ino) || by_key_.contains(key{dev, ino});
  }

  // One more kernel reference to the object whose attributes are `st`, if
  // it has an inode already; nullptr if not (then open it, and reference()).
  // The inode's O_PATH fd keeps that object alive, so no other object can
  // have its (st_dev, st_ino) meanwhile: a match is the same object.
  inode* reference_known(const struct stat& st) {
    std::lock_guard g(mutex_);
    return count_known(st);
  }

  // One more kernel reference to the object `fd` refers to (an O_PATH fd
  // the table takes over) whose attributes are `st`. If the object already
  // has an inode, `fd` is closed and that inode is used.
  inode& reference(int fd, const struct stat& st) {
    // The fd of an object the table already has is closed after the lock:
    // every LOOKUP takes this lock, and a close(2) under it would make the
    // other serving threads wait for a system call.
    fusexx::unique_fd surplus;
    std::lock_guard g(mutex_);
    if (inode* known = count_known(st)) {
      surplus = fusexx::unique_fd(fd);
      return *known;
    }
    auto it = by_key_.try_emplace(key{st.st_dev, st.st_ino}, 0).first;
    auto made = std::make_unique<inode>();
    inode& i = *made;
    i.fd = fd;
    i.dev = st.st_dev;
    i.ino = st.st_ino;
    i.type = st.st_mode & S_IFMT;
    i.lookups = 1;
    try {
      i.id = it->second = inodes_.add(std::move(made));
    } catch (...) {
      by_key_.erase(it);
      throw;
    }
    note(notes::kind::ref, i.id, fd, i.dev, i.ino, i.type);
    return i;
  }

  // Drops `n` kernel references; the last one frees the inode and closes its
  // fd. Returns false when the kernel forgot more than it had (a bug).
  bool forget(fusexx::ino id, std::uint64_t n) {
    std::lock_guard g(mutex_);
    inode& i = at(id);
    const bool sane = i.lookups >= n;
    i.lookups = sane ? i.lookups - n : 0;
    note(notes::kind::forget, id, -1, n, 0, 0);
    if (i.lookups == 0 && &i != &root_) {
      by_key_.erase(key{i.dev, i.ino});
      inodes_.take(id);
    }
    return sane;
  }

  // ---- crash recovery (redo: fusexx/restart/journal_note.hpp) ----
  // The notes of reference() and forget(), redone on a restored table. No
  // fd is opened or closed here: the dead server did that, in the fd table
  // its successor shares; a closed one's entry simply goes.
  bool redo_reference(fusexx::ino id, int fd, std::uint64_t dev, std::uint64_t ino, std::uint32_t type) {
    std::lock_guard g(mutex_);
    if (inode* i = find(id)) {
      ++i->lookups;
      return fd < 0;
    }
    if (fd < 0) return false;
    auto made = std::make_unique<inode>();
    made->id = id;
    made->dev = static_cast<dev_t>(dev);
    made->ino = static_cast<ino_t>(ino);
    made->type = static_cast<mode_t>(type) & S_IFMT;
    made->lookups = 1;
    const key k{made->dev, made->ino};
    if (!by_key_.try_emplace(k, id).second) return false;
    if (!inodes_.place(id, std::move(made))) {  // (no fd yet: a refused one must not close it)
      by_key_.erase(k);
      return false;
    }
    inodes_.at(id).fd = fd;
    return true;
  }
  bool redo_forget(fusexx::ino id, std::uint64_t n) {
    std::lock_guard g(mutex_);
    inode* i = find(id);
    if (!i) return false;
    i->lookups = i->lookups >= n ? i->lookups - n : 0;
    if (i->lookups == 0 && i != &root_) {
      by_key_.erase(key{i->dev, i->ino});
      i->fd = -1;  // closed by the server that forgot it
      inodes_.take(id);
    }
    return true;
  }
  bool redo_backing(fusexx::ino id, fusexx::backing_id backing, unsigned users) {
    inode* i = find(id);
    if (!i) return false;
    std::lock_guard g(i->backing_mutex);
    i->backing = backing;
    i->backing_users = users;
    return true;
  }
  // After the redo: each inode's fd must still be its object (a server that
  // closed one died before noting it, and the number may be another file's
  // now); one that is not keeps no fd. Adds the fds held to `held`.
  void check_fds(std::vector<int>& held) {
    std::lock_guard g(mutex_);
    const auto check = [&](inode& i) {
      struct stat st {};
      if (i.fd >= 0 && ::fstat(i.fd, &st) == 0 && st.st_dev == i.dev && st.st_ino == i.ino) {
        held.push_back(i.fd);
      } else {
        fusexx::log::warn("passthrough: recovery: the fd of node {} is no longer its file", i.id);
        i.fd = -1;
      }
    };
    check(root_);
    inodes_.for_each([&](std::uint64_t, inode& i) { check(i); });
  }

  // The connection ended: no FORGET will come for what the kernel held.
  void forget_all() {
    std::lock_guard g(mutex_);
    std::vector<fusexx::ino> ids;
    inodes_.for_each([&](std::uint64_t id, inode&) { ids.push_back(id); });
    for (auto id : ids) inodes_.take(id);
    by_key_.clear();
    root_.lookups = 1;
  }

  // ---- a successor takes over (docs/restart.md) ----
  // Every inode the kernel holds: its node id, its O_PATH fd (beside the
  // snapshot), what it is and how many references the kernel has; and the
  // root's, so that a successor mirroring another directory refuses.
  void save(fusexx::snapshot_writer& w) const {
    std::lock_guard g(mutex_);
    w.u64(root_.dev);
    w.u64(root_.ino);
    w.u64(root_.lookups);
    w.u64(inodes_.size());
    inodes_.for_each([&](std::uint64_t id, const inode& i) {
      w.u64(id);
      w.fd(i.fd);
      w.u64(i.dev);
      w.u64(i.ino);
      w.u32(i.type);
      w.u64(i.lookups);
      w.u32(static_cast<std::uint32_t>(i.backing));
      w.u32(i.backing_users);
    });
  }
  // Reads what save() wrote into a table that has handed out nothing yet:
  // EXDEV when it mirrors another source directory, EBADMSG when corrupt.
  fusexx::result<void> restore(fusexx::snapshot_reader& r) {
    std::lock_guard g(mutex_);
    std::uint64_t dev = 0, ino = 0, count = 0;
    if (!r.u64(dev) || !r.u64(ino) || !r.u64(root_.lookups) || !r.count(count, 48)) return fusexx::error(EBADMSG);
    if (dev != root_.dev || ino != root_.ino) return fusexx::error(EXDEV);
    for (std::uint64_t k = 0; k < count; ++k) {
      auto i = std::make_unique<inode>();
      std::uint64_t id = 0, idev = 0, iino = 0;
      std::uint32_t type = 0, backing = 0;
      fusexx::unique_fd fd;
      if (!r.u64(id) || !r.fd(fd) || !r.u64(idev) || !r.u64(iino) || !r.u32(type) || !r.u64(i->lookups) ||
          !r.u32(backing) || !r.u32(i->backing_users) || i->lookups == 0)
        return fusexx::error(EBADMSG);
      i->id = id;
      i->fd = fd.release();
      i->dev = static_cast<dev_t>(idev);
      i->ino = static_cast<ino_t>(iino);
      i->type = static_cast<mode_t>(type) & S_IFMT;
      i->backing = static_cast<fusexx::backing_id>(backing);
      if (!by_key_.try_emplace(key{i->dev, i->ino}, id).second) return fusexx::error(EBADMSG);
      if (!inodes_.place(id, std::move(i))) return fusexx::error(EBADMSG);
    }
    return {};
  }
  // The inode of a node id that came from elsewhere (a snapshot), or nullptr.
  inode* find(fusexx::ino id) noexcept { return id == fusexx::root_ino ? &root_ : inodes_.find(id); }

  // ---- observation (tests) ----
  std::size_t size() const { return inodes_.size(); }
  std::uint64_t lookups() const {
    std::lock_guard g(mutex_);
    std::uint64_t n = 0;
    inodes_.for_each([&](std::uint64_t, const inode& i) { n += i.lookups; });
    return n;
  }

 private:
  struct key {
    dev_t dev;
    ino_t ino;
    bool operator==(const key&) const = default;
  };
  struct key_hash {
    std::size_t operator()(const key& k) const noexcept {
      return std::hash<std::uint64_t>{}(std::uint64_t(k.ino) * 0x9e3779b97f4a7c15ull ^ std::uint64_t(k.dev));
    }
  };

  // The inode of the object `st` describes, with one more kernel reference,
  // or nullptr if the table has none. Under mutex_.
  inode* count_known(const struct stat& st) {
    inode* i = nullptr;
    if (st.st_dev == root_.dev && st.st_ino == root_.ino) {
      i = &root_;
    } else {
      auto it = by_key_.find(key{st.st_dev, st.st_ino});
      if (it == by_key_.end()) return nullptr;
      i = &inodes_.at(it->second);
    }
    ++i->lookups;
    note(notes::kind::ref, i->id, -1, 0, 0, 0);
    return i;
  }

  mutable std::mutex mutex_;
  inode root_;
  slot_table<inode> inodes_{fusexx::root_ino + 1};  // ids 0 and 1 (the root) are never handed out
  std::unordered_map<key, fusexx::ino, key_hash> by_key_;
};

}  // namespace passthrough
