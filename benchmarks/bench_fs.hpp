#pragma once
// The filesystem the transport benchmark mounts. It does as little as a
// filesystem can, so what is measured is the framework and the kernel path:
//  - /big: a 1 GiB file of synthetic bytes (reads fill the buffer, writes are
//    accepted and dropped), opened with direct I/O so every read and write is
//    a request;
//  - /f0 ... /f999: stat targets;
//  - files created in / (create + unlink).
// Entry and attribute timeouts are 0: every stat is a LOOKUP and a GETATTR.
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include <fusexx/fusexx.hpp>

struct bench_fs : fusexx::filesystem_base<bench_fs> {
  static constexpr fusexx::ino big = 2;
  static constexpr fusexx::ino first_stat_target = 100;
  static constexpr unsigned stat_targets = 1000;
  static constexpr off_t big_size = off_t{1} << 30;

  std::mutex mutex;
  std::unordered_map<std::string, fusexx::ino> created;
  std::unordered_map<fusexx::ino, std::string> created_names;
  fusexx::ino next_created = 1'000'000;

  static struct stat stat_of(fusexx::ino i) {
    struct stat st {};
    st.st_ino = i;
    st.st_nlink = 1;
    if (i == fusexx::root_ino) {
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
    } else {
      st.st_mode = S_IFREG | 0644;
      st.st_size = i == big ? big_size : 0;
    }
    return st;
  }
  static fusexx::entry entry_of(fusexx::ino i) {
    return fusexx::entry{.node = i, .st = stat_of(i), .entry_valid_for = {}, .attr_valid_for = {}};
  }

  fusexx::result<fusexx::entry> lookup(fusexx::request&, fusexx::ino parent, std::string_view name) {
    if (parent != fusexx::root_ino) return fusexx::error(ENOENT);
    if (name == "big") return entry_of(big);
    if (name.size() > 1 && name[0] == 'f') {
      unsigned n = 0;
      for (char c : name.substr(1)) {
        if (c < '0' || c > '9') return fusexx::error(ENOENT);
        n = n * 10 + static_cast<unsigned>(c - '0');
      }
      if (n < stat_targets) return entry_of(first_stat_target + n);
    }
    std::lock_guard lock(mutex);
    auto it = created.find(std::string(name));
    if (it == created.end()) return fusexx::error(ENOENT);
    return entry_of(it->second);
  }
  fusexx::result<fusexx::attr> getattr(fusexx::request&, fusexx::ino i, std::optional<fusexx::fhandle>) {
    return fusexx::attr{.st = stat_of(i), .valid_for = {}};
  }
  fusexx::result<fusexx::opened> open(fusexx::request&, fusexx::ino, int) { return fusexx::opened{.direct_io = true}; }
  fusexx::result<fusexx::created> create(fusexx::request&, fusexx::ino parent, std::string_view name, mode_t, int,
                                         mode_t) {
    if (parent != fusexx::root_ino) return fusexx::error(ENOENT);
    std::lock_guard lock(mutex);
    auto [it, fresh] = created.try_emplace(std::string(name), next_created);
    if (fresh) created_names[next_created++] = it->first;
    return fusexx::created{.entry = entry_of(it->second), .file = fusexx::opened{.direct_io = true}};
  }
  fusexx::result<void> unlink(fusexx::request&, fusexx::ino parent, std::string_view name) {
    if (parent != fusexx::root_ino) return fusexx::error(EPERM);
    std::lock_guard lock(mutex);
    auto it = created.find(std::string(name));
    if (it == created.end()) return fusexx::error(ENOENT);
    created_names.erase(it->second);
    created.erase(it);
    return {};
  }
  fusexx::result<std::size_t> read(fusexx::request&, fusexx::ino i, fusexx::fhandle, off_t off,
                                   std::span<std::byte> into) {
    if (i != big || off >= big_size) return 0;
    const std::size_t n = std::min<std::size_t>(into.size(), static_cast<std::size_t>(big_size - off));
    std::memset(into.data(), 'x', n);
    return n;
  }
  fusexx::result<std::size_t> write(fusexx::request&, fusexx::ino, fusexx::fhandle, off_t,
                                    std::span<const std::byte> data, int) {
    return data.size();
  }
};
static_assert(fusexx::filesystem<bench_fs>);
