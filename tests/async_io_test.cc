// fusexx::io::openat and fusexx::io::statx awaited from coroutine handlers of
// a filesystem served in-process, on the transport the target names
// (tests/BUILD.bazel runs this once per transport): on the io_uring queue
// thread they go through the ring, on the classic transport they are the
// blocking syscalls. Either way the results must be the syscalls' results.
// Also: on either transport a WRITE's data and a READ's reply area reach the
// handler page-aligned, so O_DIRECT I/O on them needs no bounce copy.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include <fusexx/async_io.hpp>
#include <fusexx/fusexx.hpp>

#include "tests/support/mounted.hpp"
#include "tests/support/one_file_fs.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

constexpr timeout cache_long = std::chrono::hours(1);

struct stat stat_from(const struct statx& x) {
  struct stat st {};
  st.st_ino = x.stx_ino;
  st.st_mode = x.stx_mode;
  st.st_nlink = x.stx_nlink;
  st.st_uid = x.stx_uid;
  st.st_gid = x.stx_gid;
  st.st_size = static_cast<off_t>(x.stx_size);
  st.st_blocks = static_cast<blkcnt_t>(x.stx_blocks);
  st.st_blksize = static_cast<blksize_t>(x.stx_blksize);
  st.st_atim = {x.stx_atime.tv_sec, x.stx_atime.tv_nsec};
  st.st_mtim = {x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec};
  st.st_ctim = {x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec};
  return st;
}

// Mirrors the files of one backing directory, flat and read-only: lookup and
// getattr answer from io::statx on the backing file, open from io::openat,
// read with io::pread on the fd openat returned.
struct mirror_fs : filesystem_base<mirror_fs> {
  int backing_dir = -1;
  std::mutex names_mutex;
  std::vector<std::string> names;  // node id = index + 2

  std::atomic<int> awaited_on_ring{0};   // awaits made on a queue thread's ring
  std::atomic<int> awaited_blocking{0};  // awaits made as blocking syscalls
  std::atomic<int> openat_failures{0};
  std::atomic<int> statx_failures{0};

  void count_await() { (transport::current_ring() ? awaited_on_ring : awaited_blocking)++; }

  ino node_for(const std::string& name) {
    std::lock_guard lock(names_mutex);
    for (std::size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) return i + 2;
    names.push_back(name);
    return names.size() + 1;
  }
  std::string name_of(ino i) {
    std::lock_guard lock(names_mutex);
    return i >= 2 && i - 2 < names.size() ? names[i - 2] : std::string();
  }

  task<struct stat> backing_stat(std::string name) {
    struct statx x {};
    count_await();
    auto r = co_await io::statx(backing_dir, name.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &x);
    if (!r) {
      ++statx_failures;
      co_return error(r.error());
    }
    co_return stat_from(x);
  }

  task<entry> lookup(request&, ino parent, std::string_view name) {
    if (parent != root_ino) co_return error(ENOENT);
    std::string own(name);  // the request's bytes are not ours across a suspension
    auto st = co_await backing_stat(own);
    if (!st) co_return error(st.error());
    co_return entry{.node = node_for(own), .st = *st, .entry_valid_for = cache_long, .attr_valid_for = cache_long};
  }

  task<attr> getattr(request&, ino i, std::optional<fhandle>) {
    if (i == root_ino) {
      struct stat st {};
      st.st_ino = root_ino;
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
      co_return attr{.st = st};
    }
    auto st = co_await backing_stat(name_of(i));
    if (!st) co_return error(st.error());
    co_return attr{.st = *st, .valid_for = cache_long};
  }

  task<opened> open(request&, ino i, int) {
    std::string name = name_of(i);
    count_await();
    auto fd = co_await io::openat(backing_dir, name.c_str(), O_RDONLY | O_CLOEXEC);
    if (!fd) {
      ++openat_failures;
      co_return error(fd.error());
    }
    co_return opened{.fh = static_cast<fhandle>(*fd)};
  }

  task<std::size_t> read(request&, ino, fhandle fh, off_t off, std::span<std::byte> into) {
    count_await();
    co_return co_await io::pread(static_cast<int>(fh), into, off);
  }

  void release(request&, ino, fhandle fh, int) { ::close(static_cast<int>(fh)); }
};

// One file, /f, opened for direct I/O; it notes whether each WRITE's data
// and each READ's reply area were page-aligned.
struct alignment_fs : one_file_fs<alignment_fs, 0666, 1 << 20> {
  std::atomic<int> aligned_writes{0}, unaligned_writes{0}, aligned_reads{0}, unaligned_reads{0};
  static bool page_aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 4096 == 0; }

  result<std::size_t> write(request&, ino, fhandle, off_t, std::span<const std::byte> data, int) {
    (page_aligned(data.data()) ? aligned_writes : unaligned_writes)++;
    return data.size();
  }
  result<std::size_t> read(request&, ino, fhandle, off_t, std::span<std::byte> into) {
    (page_aligned(into.data()) ? aligned_reads : unaligned_reads)++;
    std::memset(into.data(), 'r', into.size());
    return into.size();
  }
};

}  // namespace

TEST_CASE("a WRITE's data and a READ's reply area reach the handler page-aligned") {
  mounted<alignment_fs> m;
  REQUIRE_MESSAGE(m.ok(), m.error());
  const int fd = ::open(m.path("f").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  std::vector<char> block(8192, 'w');
  for (std::size_t size : {std::size_t{1}, std::size_t{4096}, std::size_t{8192}}) {
    CHECK(::pwrite(fd, block.data(), size, 4096) == ssize_t(size));
    CHECK(::pread(fd, block.data(), size, 0) == ssize_t(size));
  }
  ::close(fd);
  CHECK(m.fs.aligned_writes.load() == 3);
  CHECK(m.fs.unaligned_writes.load() == 0);
  CHECK(m.fs.aligned_reads.load() == 3);
  CHECK(m.fs.unaligned_reads.load() == 0);
}

TEST_CASE("io::statx and io::openat from coroutine handlers give the syscalls' results") {
  const transport_kind transport = transport_from_env();
  temp_dir backing;
  const std::string content = "bytes the fd from io::openat must read\n";
  std::ofstream(backing.path() + "/file") << content;
  REQUIRE(::chmod((backing.path() + "/file").c_str(), 0640) == 0);
  int dir_fd = ::open(backing.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(dir_fd >= 0);

  {
    mounted<mirror_fs> m([&](mirror_fs& fs, server_options&) { fs.backing_dir = dir_fd; });
    REQUIRE_MESSAGE(m.ok(), m.error());
    CHECK(m.srv().using_uring() == (transport == transport_kind::uring));

    SUBCASE("statx fields match stat(2) of the backing file") {
      struct stat native {}, through {};
      REQUIRE(::stat((backing.path() + "/file").c_str(), &native) == 0);
      REQUIRE(::stat(m.path("file").c_str(), &through) == 0);
      CHECK(through.st_ino == native.st_ino);
      CHECK(through.st_mode == native.st_mode);
      CHECK((through.st_mode & 07777) == 0640);
      CHECK(through.st_nlink == native.st_nlink);
      CHECK(through.st_uid == native.st_uid);
      CHECK(through.st_gid == native.st_gid);
      CHECK(through.st_size == native.st_size);
      CHECK(through.st_size == static_cast<off_t>(content.size()));
      CHECK(through.st_mtim.tv_sec == native.st_mtim.tv_sec);
      CHECK(through.st_mtim.tv_nsec == native.st_mtim.tv_nsec);
      CHECK(through.st_ctim.tv_sec == native.st_ctim.tv_sec);
      CHECK(through.st_ctim.tv_nsec == native.st_ctim.tv_nsec);
    }
    SUBCASE("statx of a missing name is ENOENT") {
      struct stat st {};
      errno = 0;
      CHECK(::stat(m.path("missing").c_str(), &st) == -1);
      CHECK(errno == ENOENT);
      CHECK(m.fs.statx_failures.load() == 1);
    }
    SUBCASE("the fd from openat reads the backing file") {
      CHECK(slurp(m.path("file")) == content);
      CHECK(m.fs.openat_failures.load() == 0);
    }
    SUBCASE("openat of a name removed behind the kernel's back is ENOENT") {
      std::ofstream(backing.path() + "/doomed") << "x";
      struct stat st {};
      REQUIRE(::stat(m.path("doomed").c_str(), &st) == 0);  // cached for an hour
      REQUIRE(::unlink((backing.path() + "/doomed").c_str()) == 0);
      errno = 0;
      CHECK(::open(m.path("doomed").c_str(), O_RDONLY) == -1);
      CHECK(errno == ENOENT);
      CHECK(m.fs.openat_failures.load() == 1);  // the kernel trusted its cache: OPEN, not LOOKUP, failed
    }

    // Every await took the path this transport promises.
    if (transport == transport_kind::uring) {
      CHECK(m.fs.awaited_on_ring.load() > 0);
      CHECK(m.fs.awaited_blocking.load() == 0);
    } else {
      CHECK(m.fs.awaited_on_ring.load() == 0);
      CHECK(m.fs.awaited_blocking.load() > 0);
    }
    m.stop();
    CHECK_FALSE(is_fuse_mounted(m.path()));
  }
  ::close(dir_fd);
}
