#pragma once
// Packs directory entries into a READDIR / READDIRPLUS reply, in place in the
// reply buffer. Each entry names the offset of the *next* one; the kernel
// passes that offset back to continue, so it must stay meaningful while
// entries are added or removed (an index into a stable list, a cookie, ...).
#include <sys/stat.h>

#include <cstring>
#include <span>
#include <string_view>

#include "codec.hpp"
#include "proto/abi.hpp"
#include "types.hpp"

namespace fusexx {

class dir_buffer {
 public:
  dir_buffer(std::span<std::byte> space, bool plus) noexcept : space_(space), plus_(plus) {}

  // True for READDIRPLUS: entries should carry attributes (the add(name, entry,
  // next) form). In plus mode every entry with a non-zero node, other than "."
  // and "..", counts as a lookup that a later FORGET will release.
  bool plus() const noexcept { return plus_; }

  // A plain entry: the inode number shown to the user and its file type
  // (S_IFDIR, S_IFREG, ... or a full st_mode). Returns false, adding nothing,
  // when the reply is full: stop and return, the kernel asks for more later.
  bool add(std::string_view name, ino_t st_ino, mode_t type, off_t next) noexcept {
    std::byte* p = claim(name);
    if (!p) return false;
    if (plus_) {
      // Without a node id the kernel uses the entry like a plain dirent and
      // takes no lookup reference.
      std::memset(p, 0, sizeof(proto::entry_out));
      p += sizeof(proto::entry_out);
    }
    put_dirent(p, name, st_ino, type, next);
    return true;
  }
  // An entry with its attributes (for READDIRPLUS; plain READDIR uses only
  // st_ino and the type of e.st).
  bool add(std::string_view name, const entry& e, off_t next) noexcept {
    if (!plus_) return add(name, e.st.st_ino, e.st.st_mode, next);
    std::byte* p = claim(name);
    if (!p) return false;
    const proto::entry_out out = e.node != 0 ? detail::encode_entry(e) : proto::entry_out{};
    std::memcpy(p, &out, sizeof out);
    put_dirent(p + sizeof out, name, e.st.st_ino, e.st.st_mode, next);
    return true;
  }

  std::size_t size() const noexcept { return used_; }
  bool empty() const noexcept { return used_ == 0; }
  std::span<const std::byte> bytes() const noexcept { return space_.first(used_); }

 private:
  // Room for one entry (a direntplus's entry_out, then the dirent and its
  // name), or nullptr when the reply is full. Its last 8 bytes are zeroed
  // first: the padding after the name goes out to the kernel, and must
  // never carry stale bytes; everything else is written by the caller.
  std::byte* claim(std::string_view name) noexcept {
    const std::size_t fixed = plus_ ? sizeof(proto::entry_out) + sizeof(proto::dirent) : sizeof(proto::dirent);
    const std::size_t total = proto::align8(fixed + name.size());
    if (name.empty() || total > space_.size() - used_) return nullptr;
    std::byte* p = space_.data() + used_;
    std::memset(p + total - 8, 0, 8);
    used_ += total;
    return p;
  }
  static void put_dirent(std::byte* p, std::string_view name, ino_t st_ino, mode_t mode, off_t next) noexcept {
    proto::dirent d{};
    d.ino = st_ino;
    d.off = static_cast<std::uint64_t>(next);
    d.namelen = static_cast<std::uint32_t>(name.size());
    d.type = (mode & S_IFMT) >> 12;
    std::memcpy(p, &d, sizeof d);
    std::memcpy(p + sizeof d, name.data(), name.size());
  }

  std::span<std::byte> space_;
  std::size_t used_ = 0;
  bool plus_ = false;
};

}  // namespace fusexx
