#pragma once
// The suite's workloads and the tree they run on. Every subject sees the same
// tree (prepared once in the native directory, or written through the mount
// for a filesystem that keeps its own contents) and the same operation
// sequences, so figures compare like with like:
//   s/f0 ...      stat targets
//   d/e0 ...      a directory to list
//   big           a file for 4 KiB random and 1 MiB sequential I/O
//   c/            where files are created and unlinked
// File I/O uses O_DIRECT, so the page cache in front of the FUSE file is not
// what is measured (each read or write is a request, except under kernel
// passthrough, where it goes to the backing file).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "benchmarks/load.hpp"

namespace bench {

struct tree_shape {
  unsigned stat_files = 1000;
  unsigned dir_entries = 10000;
  off_t big_size = off_t{256} << 20;
  unsigned unlink_pool = 5000;  // files made for each thread before each run of "unlink"

  static tree_shape tiny() { return {50, 200, off_t{4} << 20, 100}; }
};

// Creates the tree under `root`; returns an error text or "".
inline std::string prepare_tree(const std::string& root, const tree_shape& shape) {
  for (const char* d : {"s", "d", "c"})
    if (::mkdir((root + "/" + d).c_str(), 0755) != 0 && errno != EEXIST)
      return fmt::format("mkdir {}/{}: {}", root, d, std::strerror(errno));
  auto touch = [](const std::string& p) {
    const int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    ::close(fd);
    return true;
  };
  for (unsigned i = 0; i < shape.stat_files; ++i)
    if (!touch(fmt::format("{}/s/f{}", root, i))) return fmt::format("create {}/s/f{}: {}", root, i, std::strerror(errno));
  for (unsigned i = 0; i < shape.dir_entries; ++i)
    if (!touch(fmt::format("{}/d/e{}", root, i))) return fmt::format("create {}/d/e{}: {}", root, i, std::strerror(errno));
  const int fd = ::open((root + "/big").c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fmt::format("create {}/big: {}", root, std::strerror(errno));
  std::vector<char> block(1 << 20);
  for (std::size_t i = 0; i < block.size(); ++i) block[i] = static_cast<char>('a' + i % 26);
  for (off_t at = 0; at < shape.big_size; at += static_cast<off_t>(block.size()))
    if (::pwrite(fd, block.data(), block.size(), at) != static_cast<ssize_t>(block.size())) {
      const int e = errno;
      ::close(fd);
      return fmt::format("write {}/big: {}", root, std::strerror(e));
    }
  ::close(fd);
  return "";
}

// Per-thread resources of an I/O workload: the big file opened with O_DIRECT
// and an aligned buffer.
struct io_thread {
  int fd = -1;
  std::uint64_t next = 0;  // names created so far (kept across the runs of a cell)
  std::unique_ptr<std::byte, decltype(&std::free)> buffer{nullptr, &std::free};
};

struct workload {
  std::string name;
  std::string unit;         // what the figure counts per second: "ops/s", "IOPS", "MB/s", "entries/s"
  // Unit items per operation: bytes for MB/s, entries for a listing.
  std::function<double(const tree_shape&)> per_op;
  unsigned threads = 1;
  bool uses_big_file = false;
  // The operation, given the root of the tree and the thread's I/O resources.
  std::function<bool(const std::string& root, const tree_shape&, io_thread&, unsigned t, std::uint64_t i)> op;
  // It writes the big file (else it is opened read-only: a read-only mirror is measured too).
  bool writes_big_file = false;
  // Untimed, before each run (and the warm-up): what the run consumes, e.g. the
  // files "unlink" removes; an error text or "". A run then ends after
  // `ops_per_run` operations per thread if its time has not ended it first.
  std::function<std::string(const std::string& root, const tree_shape&, unsigned threads)> before_run = nullptr;
  std::function<std::uint64_t(const tree_shape&)> ops_per_run = nullptr;
  // Untimed, after each run: tidies what it left (created files).
  std::function<void(const std::string& root)> after_run = nullptr;
};

// Removes every file in `dir` (not the directory).
inline void empty_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..") names.push_back(e->d_name);
  ::closedir(d);
  for (auto& n : names) ::unlink((dir + "/" + n).c_str());
}

inline std::vector<workload> workloads() {
  std::vector<workload> w;
  auto one = [](const tree_shape&) { return 1.0; };
  auto stat_storm = [](const std::string& root, const tree_shape& shape, io_thread&, unsigned, std::uint64_t i) {
    struct stat st;
    // Stride through the names so two threads do not walk in step.
    return ::stat(fmt::format("{}/s/f{}", root, (i * 7919) % shape.stat_files).c_str(), &st) == 0;
  };
  w.push_back({"stat storm, 1 thread", "ops/s", one, 1, false, stat_storm});
  w.push_back({"stat storm, 2 threads", "ops/s", one, 2, false, stat_storm});
  // Each a file of its own (O_EXCL: a name met again would only be an open).
  w.push_back({"create", "ops/s", one, 1, false,
               [](const std::string& root, const tree_shape&, io_thread& io, unsigned t, std::uint64_t) {
                 const int fd = ::open(fmt::format("{}/c/n{}_{}", root, t, io.next++).c_str(),
                                       O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
                 if (fd < 0) return false;
                 ::close(fd);
                 return true;
               },
               false, nullptr, nullptr, [](const std::string& root) { empty_dir(root + "/c"); }});
  // The files made before each run, unlinked in the order they were made.
  workload unlink{"unlink", "ops/s", one, 1, false,
                  [](const std::string& root, const tree_shape&, io_thread&, unsigned t, std::uint64_t i) {
                    return ::unlink(fmt::format("{}/c/u{}_{}", root, t, i).c_str()) == 0;
                  }};
  unlink.before_run = [](const std::string& root, const tree_shape& shape, unsigned threads) -> std::string {
    for (unsigned t = 0; t < threads; ++t)
      for (unsigned i = 0; i < shape.unlink_pool; ++i) {
        const std::string p = fmt::format("{}/c/u{}_{}", root, t, i);
        const int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) return fmt::format("create {}: {}", p, std::strerror(errno));
        ::close(fd);
      }
    return "";
  };
  unlink.ops_per_run = [](const tree_shape& shape) { return std::uint64_t{shape.unlink_pool}; };
  unlink.after_run = [](const std::string& root) { empty_dir(root + "/c"); };
  w.push_back(std::move(unlink));
  w.push_back({"readdir of the big directory", "entries/s", [](const tree_shape& s) { return double(s.dir_entries); }, 1, false,
               [](const std::string& root, const tree_shape& shape, io_thread&, unsigned, std::uint64_t) {
                 DIR* d = ::opendir((root + "/d").c_str());
                 if (!d) return false;
                 // "." and ".." are not counted: POSIX lets a filesystem leave
                 // them out, and libfuse's memfs_ll does.
                 unsigned n = 0;
                 while (const dirent* e = ::readdir(d))
                   if (e->d_name[0] != '.') ++n;
                 ::closedir(d);
                 if (n != shape.dir_entries) errno = EIO;  // (the report names errno)
                 return n == shape.dir_entries;
               }});
  auto random_read = [](const std::string&, const tree_shape& shape, io_thread& io, unsigned t, std::uint64_t i) {
    return ::pread(io.fd, io.buffer.get(), 4096, random_block(t, i, shape.big_size)) == 4096;
  };
  w.push_back({"4 KiB random read (O_DIRECT)", "IOPS", one, 1, true, random_read});
  // Two applications on one file, each with its own open file.
  w.push_back({"4 KiB random read, 2 jobs (O_DIRECT)", "IOPS", one, 2, true, random_read});
  auto writing = [](workload x) {
    x.writes_big_file = true;
    return x;
  };
  auto random_write = [](const std::string&, const tree_shape& shape, io_thread& io, unsigned t, std::uint64_t i) {
    return ::pwrite(io.fd, io.buffer.get(), 4096, random_block(t, i, shape.big_size)) == 4096;
  };
  w.push_back(writing({"4 KiB random write (O_DIRECT)", "IOPS", one, 1, true, random_write}));
  w.push_back(writing({"4 KiB random write, 2 jobs (O_DIRECT)", "IOPS", one, 2, true, random_write}));
  w.push_back({"sequential read, 1 MiB (O_DIRECT)", "MB/s", [](const tree_shape&) { return double(1 << 20); }, 1, true,
               [](const std::string&, const tree_shape& shape, io_thread& io, unsigned, std::uint64_t i) {
                 const off_t at = static_cast<off_t>((i << 20) % static_cast<std::uint64_t>(shape.big_size));
                 return ::pread(io.fd, io.buffer.get(), 1 << 20, at) == (1 << 20);
               }});
  w.push_back(writing({"sequential write, 1 MiB (O_DIRECT)", "MB/s", [](const tree_shape&) { return double(1 << 20); }, 1, true,
               [](const std::string&, const tree_shape& shape, io_thread& io, unsigned, std::uint64_t i) {
                 const off_t at = static_cast<off_t>((i << 20) % static_cast<std::uint64_t>(shape.big_size));
                 return ::pwrite(io.fd, io.buffer.get(), 1 << 20, at) == (1 << 20);
               }}));
  return w;
}

// Opens the big file for one thread; an error text or "".
inline std::string open_io_thread(const std::string& root, io_thread& io, bool for_writing) {
  io.fd = ::open((root + "/big").c_str(), (for_writing ? O_RDWR : O_RDONLY) | O_DIRECT | O_CLOEXEC);
  if (io.fd < 0) return fmt::format("open {}/big with O_DIRECT: {}", root, std::strerror(errno));
  void* p = nullptr;
  if (::posix_memalign(&p, 4096, 1 << 20) != 0) return "out of memory";
  std::memset(p, 'x', 1 << 20);
  io.buffer.reset(static_cast<std::byte*>(p));
  return "";
}

}  // namespace bench
