#pragma once
// Test support: the skeleton of a filesystem with one regular file, /f (node
// 2), opened for direct I/O, so that every read and write reaches the
// server. A test derives from it and adds the read or write it is about:
//
//   struct counting_fs : one_file_fs<counting_fs, 0444, 1> {
//     result<std::size_t> read(request&, ino, fhandle, off_t, std::span<std::byte>);
//   };
#include <sys/stat.h>

#include <optional>
#include <string_view>

#include <fusexx/fusexx.hpp>

namespace fusexx::testing {

template <class Derived, mode_t FileMode, off_t FileSize>
struct one_file_fs : filesystem_base<Derived> {
  static constexpr ino file_ino = 2;

  result<entry> lookup(request&, ino parent, std::string_view name) {
    if (parent != root_ino || name != "f") return error(ENOENT);
    return entry{.node = file_ino, .st = stat_of(file_ino)};
  }
  result<attr> getattr(request&, ino i, std::optional<fhandle>) {
    if (i != root_ino && i != file_ino) return error(ENOENT);
    return attr{.st = stat_of(i)};
  }
  result<opened> open(request&, ino, int) { return opened{.direct_io = true}; }

  static struct stat stat_of(ino i) {
    struct stat st {};
    st.st_ino = i;
    st.st_mode = i == root_ino ? S_IFDIR | 0755 : S_IFREG | FileMode;
    st.st_nlink = i == root_ino ? 2 : 1;
    st.st_size = i == root_ino ? 0 : FileSize;
    return st;
  }
};

}  // namespace fusexx::testing
