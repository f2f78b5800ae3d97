#pragma once
// The inodes of a passthrough filesystem: one per backing object the kernel
// knows, keyed by the backing (st_dev, st_ino), each holding an O_PATH fd to
// that object. Every operation works *at* these fds, never on path names, so
// renames in the source tree cannot send an operation to the wrong file.
//
// An inode lives exactly as long as the kernel holds lookup references to it:
// every reply that hands out a node id (LOOKUP, CREATE, MKDIR, READDIRPLUS,
// ...) adds one, FORGET takes them back, and the last one closes the fd. The
// node id the kernel sees is the inode's address (the kernel never uses a node
// id after forgetting it), so the hot path needs no table lookup; the root is
// node id 1.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include <fusexx/fusexx.hpp>

namespace passthrough {

struct inode {
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
    root_.fd = root_fd;
    root_.dev = st.st_dev;
    root_.ino = st.st_ino;
    root_.type = st.st_mode & S_IFMT;
    root_.lookups = 1;  // the kernel's own reference, never forgotten
  }
  inode_table(const inode_table&) = delete;
  inode_table& operator=(const inode_table&) = delete;

  inode& root() noexcept { return root_; }
  inode& at(fusexx::ino id) noexcept {
    return id == fusexx::root_ino ? root_ : *reinterpret_cast<inode*>(static_cast<std::uintptr_t>(id));
  }
  fusexx::ino id_of(inode& i) const noexcept {
    return &i == &root_ ? fusexx::root_ino : static_cast<fusexx::ino>(reinterpret_cast<std::uintptr_t>(&i));
  }

  // One more kernel reference to the object `fd` refers to (an O_PATH fd
  // the table takes over) whose attributes are `st`. If the object already
  // has an inode, `fd` is closed and that inode is used.
  inode& reference(int fd, const struct stat& st) {
    std::lock_guard g(mutex_);
    if (st.st_dev == root_.dev && st.st_ino == root_.ino) {
      ::close(fd);
      ++root_.lookups;
      return root_;
    }
    auto& slot = inodes_[key{st.st_dev, st.st_ino}];
    if (slot) {
      ::close(fd);
    } else {
      slot = std::make_unique<inode>();
      slot->fd = fd;
      slot->dev = st.st_dev;
      slot->ino = st.st_ino;
      slot->type = st.st_mode & S_IFMT;
    }
    ++slot->lookups;
    return *slot;
  }

  // Drops `n` kernel references; the last one frees the inode and closes its
  // fd. Returns false when the kernel forgot more than it had (a bug).
  bool forget(fusexx::ino id, std::uint64_t n) {
    std::lock_guard g(mutex_);
    inode& i = at(id);
    const bool sane = i.lookups >= n;
    i.lookups = sane ? i.lookups - n : 0;
    if (i.lookups == 0 && &i != &root_) inodes_.erase(key{i.dev, i.ino});
    return sane;
  }

  // The connection ended: no FORGET will come for what the kernel held.
  void forget_all() {
    std::lock_guard g(mutex_);
    inodes_.clear();
    root_.lookups = 1;
  }

  // ---- observation (tests) ----
  std::size_t size() const {
    std::lock_guard g(mutex_);
    return inodes_.size();
  }
  std::uint64_t lookups() const {
    std::lock_guard g(mutex_);
    std::uint64_t n = 0;
    for (auto& [k, i] : inodes_) n += i->lookups;
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

  mutable std::mutex mutex_;
  inode root_;
  std::unordered_map<key, std::unique_ptr<inode>, key_hash> inodes_;
};

}  // namespace passthrough
