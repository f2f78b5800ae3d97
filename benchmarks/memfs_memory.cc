// What names and extended attributes cost memfs in memory: memfs served
// in-process, loaded through the mount with ordinary syscalls, and the
// process's heap in use (mallinfo2) and RSS read before and after each load.
// The figures are the server's: memfs's tree and the framework's table of
// the nodes the kernel knows (the kernel's own dentries and inodes are not in
// this process). Printed, never asserted (docs/reliability.md, "Resource
// limits", holds a run).
//
//   bazel run -c opt //benchmarks:memfs_memory
//   bazel run -c opt //benchmarks:memfs_memory -- --count 20000 --transport uring
//
// Root is needed (mounting). Each load gets a fresh mount, unmounted at its end.
#include <malloc.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include <fmt/format.h>

#include "examples/memfs_fs.hpp"

namespace {

struct usage {
  std::size_t heap = 0;  // bytes malloc has handed out and not had back
  std::size_t rss = 0;   // resident bytes
};

usage now_used() {
  usage u;
  u.heap = ::mallinfo2().uordblks;
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  u.rss = std::size_t(resident) * std::size_t(::sysconf(_SC_PAGESIZE));
  return u;
}

// How much of memfs's inode space (nr_inodes) statfs says is used: df -i's IUsed.
std::uint64_t inodes_used(const std::string& dir) {
  struct statvfs v {};
  if (::statvfs(dir.c_str(), &v) != 0) return 0;
  return v.f_files - v.f_ffree;
}

// A name of `len` bytes ending in the number k.
std::string name_of(const char* prefix, std::size_t k, std::size_t len) {
  std::string s = fmt::format("{}{:06}", prefix, k);
  if (s.size() < len) s.insert(std::size_t(1), len - s.size(), 'n');
  return s;
}

bool failed(const char* what, const std::string& path) {
  std::fprintf(stderr, "memfs_memory: %s %s: %s\n", what, path.c_str(), std::strerror(errno));
  return true;
}

// Mounts memfs, runs `setup` (not measured) and `load` (measured), and prints
// the load's cost per `units` (of what `unit` names).
// `payload`: the bytes of names and values the load stored (0: not shown).
void measure(fusexx::transport_kind transport, const char* label, std::size_t units, const char* unit,
             std::size_t payload, const std::function<bool(const std::string&)>& setup,
             const std::function<bool(const std::string&)>& load) {
  char tmpl[] = "/tmp/memfs-memory-XXXXXX";
  const std::string mp = ::mkdtemp(tmpl);
  {
    memfs_fs fs;
    fusexx::server_options o;
    o.transport = transport;
    o.mount.mountpoint = mp;
    memfs_fs::configure_mount(o.mount);
    o.mount.allow_other = false;
    fusexx::server<memfs_fs> srv(fs, o);
    if (auto started = srv.start(); !started) {
      std::fprintf(stderr, "memfs_memory: mount failed: %s\n", started.error().message.c_str());
      std::exit(1);
    }
    if (setup && setup(mp)) std::exit(1);
    ::malloc_trim(0);
    const usage before = now_used();
    const std::uint64_t iused_before = inodes_used(mp);
    if (load(mp)) std::exit(1);
    const usage after = now_used();
    const std::uint64_t iused = inodes_used(mp) - iused_before;
    const double heap = double(after.heap) - double(before.heap);
    const double rss = double(after.rss) - double(before.rss);
    std::printf("%-50s %7zu %-6s heap %9.1f B/%-6s rss %9.1f B/%-6s", label, units, unit, heap / double(units), unit,
                rss / double(units), unit);
    if (payload) std::printf(" heap/payload %.3f", heap / double(payload));
    std::printf("  df -i +%llu\n", static_cast<unsigned long long>(iused));
    std::fflush(stdout);
    srv.stop();
  }
  std::filesystem::remove(mp);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t count = 100000;
  auto transport = fusexx::transport_kind::classic;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--count" && i + 1 < argc) {
      count = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--transport" && i + 1 < argc) {
      auto t = fusexx::parse_transport(argv[++i]);
      if (!t) return 2;
      transport = *t;
    } else {
      std::fprintf(stderr, "usage: memfs_memory [--count N] [--transport classic|uring]\n");
      return 2;
    }
  }
  if (count == 0) return 2;

  auto files = [&](std::size_t len) {
    return [count, len](const std::string& mp) {
      for (std::size_t k = 0; k < count; ++k) {
        const std::string p = mp + "/d/" + name_of("f", k, len);
        if (::mknod(p.c_str(), S_IFREG | 0644, 0) != 0) return failed("mknod", p);
      }
      return false;
    };
  };
  auto make_dir = [](const std::string& mp) {
    return ::mkdir((mp + "/d").c_str(), 0755) != 0 && failed("mkdir", mp + "/d");
  };
  measure(transport, "files in one directory, 7-byte names", count, "entry", 0, make_dir, files(7));
  measure(transport, "files in one directory, 40-byte names", count, "entry", 0, make_dir, files(40));

  auto one_file = [](const std::string& mp) {
    return (::mkdir((mp + "/d").c_str(), 0755) != 0 && failed("mkdir", mp + "/d")) ||
           (::mknod((mp + "/f").c_str(), S_IFREG | 0644, 0) != 0 && failed("mknod", mp + "/f"));
  };
  auto links = [&](std::size_t len) {
    return [count, len](const std::string& mp) {
      const std::string target = mp + "/f";
      for (std::size_t k = 0; k < count; ++k) {
        const std::string p = mp + "/d/" + name_of("l", k, len);
        if (::link(target.c_str(), p.c_str()) != 0) return failed("link", p);
      }
      return false;
    };
  };
  measure(transport, "hard links to one file, 7-byte names", count, "link", 0, one_file, links(7));
  measure(transport, "hard links to one file, 40-byte names", count, "link", 0, one_file, links(40));

  // Extended attributes on one file: many small ones, then few of the
  // largest value the kernel passes (XATTR_SIZE_MAX, 64 KiB).
  auto xattrs = [](std::size_t n, std::size_t value_size) {
    return [n, value_size](const std::string& mp) {
      const std::string f = mp + "/f";
      const std::string value(value_size, 'v');
      for (std::size_t k = 0; k < n; ++k) {
        const std::string name = fmt::format("user.x{:06}", k);  // 12 bytes
        if (::setxattr(f.c_str(), name.c_str(), value.data(), value.size(), 0) != 0) return failed("setxattr", f);
      }
      return false;
    };
  };
  const std::size_t small = count / 10;
  measure(transport, "xattrs on one file, 12-byte names, 16-byte values", small, "xattr", small * (12 + 16), one_file,
          xattrs(small, 16));
  measure(transport, "xattrs on one file, 12-byte names, 64 KiB values", 1024, "xattr", 1024 * (12 + 65536), one_file,
          xattrs(1024, 65536));
  return 0;
}
