#pragma once
// hello: the smallest useful fusexx filesystem. A read-only tree:
//   /hello.txt        "Hello, world!\n"
//   /docs/            a directory
//   /docs/README      a few lines about this example
// The filesystem lives in this header so tests can mount it in-process;
// hello.cc is its command line.
#include <fusexx/fusexx.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>

namespace hello {

struct node {
  fusexx::ino ino;
  fusexx::ino parent;
  std::string_view name;
  mode_t mode;
  std::string_view content;
};

constexpr std::array<node, 4> tree{{
    {1, 1, "", S_IFDIR | 0755, ""},
    {2, 1, "hello.txt", S_IFREG | 0444, "Hello, world!\n"},
    {3, 1, "docs", S_IFDIR | 0755, ""},
    {4, 3, "README", S_IFREG | 0444,
     "This file is served by examples/hello, a fusexx filesystem.\n"
     "Every read you do here is a FUSE request answered by that process.\n"},
}};

inline const node* find(fusexx::ino ino) {
  auto it = std::ranges::find(tree, ino, &node::ino);
  return it == tree.end() ? nullptr : &*it;
}

// Every file shows the time the server started.
inline const timespec started = [] {
  timespec t{};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return t;
}();

inline struct stat stat_of(const node& n) {
  struct stat st {};
  st.st_atim = st.st_mtim = st.st_ctim = started;
  st.st_ino = n.ino;
  st.st_mode = n.mode;
  st.st_nlink = S_ISDIR(n.mode) ? 2 : 1;
  st.st_size = static_cast<off_t>(n.content.size());
  st.st_blksize = 4096;
  st.st_blocks = (st.st_size + 511) / 512;
  st.st_uid = ::getuid();
  st.st_gid = ::getgid();
  return st;
}

}  // namespace hello

struct hello_fs : fusexx::filesystem_base<hello_fs> {
  using node = hello::node;
  fusexx::result<fusexx::entry> lookup(fusexx::request&, fusexx::ino parent, std::string_view name) {
    for (const node& n : hello::tree)
      if (n.parent == parent && n.name == name && n.ino != fusexx::root_ino)
        return fusexx::entry{.node = n.ino, .st = hello::stat_of(n)};
    return fusexx::error(ENOENT);
  }

  fusexx::result<fusexx::attr> getattr(fusexx::request&, fusexx::ino ino, std::optional<fusexx::fhandle>) {
    const node* n = hello::find(ino);
    if (!n) return fusexx::error(ENOENT);
    return fusexx::attr{.st = hello::stat_of(*n)};
  }

  fusexx::result<fusexx::opened> open(fusexx::request&, fusexx::ino ino, int flags) {
    const node* n = hello::find(ino);
    if (!n) return fusexx::error(ENOENT);
    if (S_ISDIR(n->mode)) return fusexx::error(EISDIR);
    if ((flags & O_ACCMODE) != O_RDONLY) return fusexx::error(EROFS);
    return fusexx::opened{.keep_cache = true};
  }

  fusexx::result<std::size_t> read(fusexx::request&, fusexx::ino ino, fusexx::fhandle, off_t off,
                                   std::span<std::byte> into) {
    const node* n = hello::find(ino);
    if (!n) return fusexx::error(ENOENT);
    if (off < 0) return fusexx::error(EINVAL);
    if (static_cast<std::size_t>(off) >= n->content.size()) return 0;
    std::size_t count = std::min(into.size(), n->content.size() - static_cast<std::size_t>(off));
    std::memcpy(into.data(), n->content.data() + off, count);
    return count;
  }

  fusexx::result<fusexx::opened> opendir(fusexx::request&, fusexx::ino ino, int) {
    const node* n = hello::find(ino);
    if (!n) return fusexx::error(ENOENT);
    if (!S_ISDIR(n->mode)) return fusexx::error(ENOTDIR);
    return fusexx::opened{};
  }

  // Offsets are positions in a fixed list: ".", "..", then the children.
  fusexx::result<void> readdir(fusexx::request&, fusexx::ino ino, fusexx::fhandle, off_t off,
                               fusexx::dir_buffer& out) {
    const node* dir = hello::find(ino);
    if (!dir) return fusexx::error(ENOENT);
    off_t index = 0;
    auto emit = [&](std::string_view name, fusexx::ino child, mode_t mode) {
      ++index;
      if (index <= off) return true;
      return out.add(name, child, mode, index);
    };
    if (!emit(".", dir->ino, S_IFDIR) || !emit("..", dir->parent, S_IFDIR)) return {};
    for (const node& n : hello::tree)
      if (n.parent == dir->ino && n.ino != fusexx::root_ino && !emit(n.name, n.ino, n.mode)) break;
    return {};
  }

  fusexx::result<fusexx::fs_stats> statfs(fusexx::request&, fusexx::ino) {
    fusexx::fs_stats s{};
    s.f_bsize = s.f_frsize = 4096;
    s.f_files = hello::tree.size();
    s.f_namemax = 255;
    return s;
  }
};

static_assert(fusexx::filesystem<hello_fs>);
