// The INIT capabilities memfs can ask for (-o writeback_cache, atomic_o_trunc,
// explicit_inval_data, handle_killpriv_v2), each observed through a real
// mount: memfs counts the requests that arrive, so a test sees what the
// kernel sent under each capability, and compares with a mount without it.
// (A non-root write or truncate needs another user: memfs_users_test.)
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "examples/memfs_fs.hpp"
#include "tests/support/memfs_mount.hpp"
#include "tests/support/mounted.hpp"

using namespace fusexx;
using namespace fusexx::testing;
namespace f = fusexx::proto::init_flag;

namespace {

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
  operator int() const { return fd; }
};

ino inode_of(int fd) {
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  return st.st_ino;
}

std::string pread_all(int fd, std::size_t n, off_t off = 0) {
  std::string s(n, '?');
  ssize_t got = ::pread(fd, s.data(), n, off);
  s.resize(got < 0 ? 0 : std::size_t(got));
  return s;
}

bool same_time(const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

// 256 small writes, each a different 16-byte record.
constexpr int small_writes = 256;
std::string record(int i) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "record %08d\n", i);
  return std::string(buf, 16);
}

}  // namespace

TEST_CASE("writeback_cache: small writes are cached and reach memfs later, coalesced; size and mtime stay right") {
  SUBCASE("without it every write() is a WRITE request at once") {
    memfs_mount m;
    CHECK_FALSE(m.srv().conn().has(f::writeback_cache));
    fd_guard fd{::open(m.path("f").c_str(), O_CREAT | O_RDWR, 0644)};
    REQUIRE(fd >= 0);
    for (int i = 0; i < small_writes; ++i) REQUIRE(::write(fd, record(i).data(), 16) == 16);
    CHECK(m.fs.counts().writes.load() == small_writes);
  }
  SUBCASE("with it") {
    memfs_mount m("writeback_cache");
    REQUIRE(m.srv().conn().has(f::writeback_cache));
    fd_guard fd{::open(m.path("f").c_str(), O_CREAT | O_RDWR, 0644)};
    REQUIRE(fd >= 0);
    const ino id = inode_of(fd);
    std::string expected;
    for (int i = 0; i < small_writes; ++i) {
      REQUIRE(::write(fd, record(i).data(), 16) == 16);
      expected += record(i);
    }
    // The kernel holds them: far fewer WRITEs than write() calls so far
    // (normally none; the flusher may already have sent some).
    CHECK(m.fs.counts().writes.load() < small_writes);
    // Read-after-write and the size come from the kernel's cache meanwhile.
    CHECK(pread_all(fd, expected.size() + 10) == expected);
    struct stat kernel {};
    REQUIRE(::fstat(fd, &kernel) == 0);
    CHECK(kernel.st_size == off_t(expected.size()));

    REQUIRE(::fsync(fd) == 0);
    CHECK(m.fs.contents(id) == expected);
    const auto writes = m.fs.counts().writes.load();
    CHECK(writes >= 1);
    CHECK(writes < small_writes);  // coalesced into page-sized (or larger) WRITEs
    CHECK(m.fs.counts().bytes_written.load() >= expected.size());
    // The kernel kept size and mtime while it cached; after fsync memfs has
    // the same ones (mtime arrives as a SETATTR).
    auto held = m.fs.attributes(id);
    REQUIRE(held);
    CHECK(held->st_size == kernel.st_size);
    REQUIRE(::fstat(fd, &kernel) == 0);
    CHECK(same_time(held->st_mtim, kernel.st_mtim));

    // Shared mmap: stores reach memfs with msync.
    const off_t len = 3 * 4096;
    REQUIRE(::ftruncate(fd, len) == 0);
    void* map = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(map != MAP_FAILED);
    const std::string marker = "written through mmap";
    std::memcpy(static_cast<char*>(map) + 4096 + 100, marker.data(), marker.size());
    const auto before = m.fs.counts().writes.load();
    REQUIRE(::msync(map, len, MS_SYNC) == 0);
    CHECK(m.fs.counts().writes.load() > before);
    auto data = m.fs.contents(id);
    REQUIRE(data);
    CHECK(data->size() == std::size_t(len));
    CHECK(data->substr(4096 + 100, marker.size()) == marker);
    CHECK(data->substr(0, expected.size()) == expected);
    ::munmap(map, len);
    CHECK(pread_all(fd, marker.size(), 4096 + 100) == marker);
  }
}

TEST_CASE("atomic_o_trunc: open(O_TRUNC) arrives as one OPEN with O_TRUNC, no separate SETATTR") {
  for (bool atomic : {false, true}) {
    CAPTURE(atomic);
    memfs_mount m(atomic ? "atomic_o_trunc" : "");
    CHECK(m.srv().conn().has(f::atomic_o_trunc) == atomic);
    const std::string p = m.path("f");
    {
      fd_guard fd{::open(p.c_str(), O_CREAT | O_WRONLY, 0644)};
      REQUIRE(::write(fd, "some data", 9) == 9);
    }
    const auto opens = m.fs.counts().opens_with_trunc.load();
    const auto truncations = m.fs.counts().size_changes.load();
    fd_guard fd{::open(p.c_str(), O_WRONLY | O_TRUNC)};
    REQUIRE(fd >= 0);
    CHECK(m.fs.counts().opens_with_trunc.load() - opens == (atomic ? 1u : 0u));
    CHECK(m.fs.counts().size_changes.load() - truncations == (atomic ? 0u : 1u));
    CHECK(m.fs.contents(inode_of(fd)) == "");
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    CHECK(st.st_size == 0);
  }
}

TEST_CASE("explicit_inval_data: cached pages survive a changed mtime until memfs invalidates them") {
  for (bool explicit_inval : {false, true}) {
    CAPTURE(explicit_inval);
    // attr_timeout=0: every stat asks memfs, so the kernel sees the new mtime.
    memfs_mount m(explicit_inval ? "explicit_inval_data,attr_timeout=0" : "attr_timeout=0");
    CHECK(m.srv().conn().has(f::explicit_inval_data) == explicit_inval);
    CHECK(m.srv().conn().has(f::auto_inval_data) == !explicit_inval);
    const std::string p = m.path("f");
    const std::string old_data(8192, 'A');
    {
      fd_guard fd{::open(p.c_str(), O_CREAT | O_WRONLY, 0644)};
      REQUIRE(::write(fd, old_data.data(), old_data.size()) == ssize_t(old_data.size()));
    }
    fd_guard fd{::open(p.c_str(), O_RDONLY)};
    REQUIRE(pread_all(fd, 8192) == old_data);  // now in the page cache
    const ino id = inode_of(fd);
    REQUIRE(m.fs.change_behind_kernel(id, 0, std::string(8192, 'B')));
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);  // the kernel learns the new mtime
    CHECK(same_time(st.st_mtim, m.fs.attributes(id)->st_mtim));
    if (!explicit_inval) {
      CHECK(pread_all(fd, 8192) == std::string(8192, 'B'));  // auto_inval_data dropped the pages
      continue;
    }
    CHECK(pread_all(fd, 8192) == old_data);  // still the cached pages
    REQUIRE(m.srv().session().notify().inval_inode(id, 0, 0).has_value());
    CHECK(pread_all(fd, 8192) == std::string(8192, 'B'));
  }
}

TEST_CASE("handle_killpriv_v2: chown arrives with FATTR_KILL_SUIDGID and memfs clears the bits") {
  for (bool v2 : {false, true}) {
    CAPTURE(v2);
    memfs_mount m(v2 ? "handle_killpriv_v2" : "");
    CHECK(m.srv().conn().has(f::handle_killpriv_v2) == v2);
    const std::string p = m.path("prog");
    REQUIRE(::close(::open(p.c_str(), O_CREAT | O_WRONLY, 0755)) == 0);
    REQUIRE(::chmod(p.c_str(), 06755) == 0);
    const auto kills = m.fs.counts().setattrs_killing_suidgid.load();
    const auto modes = m.fs.counts().mode_changes.load();
    REQUIRE(::chown(p.c_str(), 0, 0) == 0);
    // Without v2 the kernel clears the bits itself, with a SETATTR of the mode.
    CHECK(m.fs.counts().setattrs_killing_suidgid.load() - kills == (v2 ? 1u : 0u));
    CHECK(m.fs.counts().mode_changes.load() - modes == (v2 ? 0u : 1u));
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0755);
  }
}

TEST_CASE("local_locks: the kernel keeps POSIX and flock locks; memfs gets no lock request and no FLUSH per close") {
  SUBCASE("without it: memfs's locks, a FLUSH for every close") {
    memfs_mount m;
    CHECK(m.srv().conn().has(f::posix_locks));
    for (int i = 0; i < 5; ++i) ::close(::open(m.path("f").c_str(), O_CREAT | O_RDWR, 0644));
    CHECK(received(m.srv().session(), proto::opcode::flush) >= 5);
  }
  SUBCASE("with it") {
    memfs_mount m("local_locks");
    CHECK_FALSE(m.srv().conn().has(f::posix_locks));
    CHECK_FALSE(m.srv().conn().has(f::flock_locks));
    const std::string p = m.path("f");
    for (int i = 0; i < 5; ++i) ::close(::open(p.c_str(), O_CREAT | O_RDWR, 0644));
    // The first close's FLUSH is answered ENOSYS, and the kernel sends no more.
    CHECK(received(m.srv().session(), proto::opcode::flush) <= 1);
    const auto flushes = received(m.srv().session(), proto::opcode::flush);

    // The locks still hold between processes, with POSIX's close rule.
    fd_guard fd{::open(p.c_str(), O_RDWR)};
    fd_guard other{::open(p.c_str(), O_RDONLY)};
    REQUIRE(fd >= 0);
    REQUIRE(other >= 0);
    struct ::flock l {};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    l.l_len = 10;
    REQUIRE(::fcntl(fd, F_SETLK, &l) == 0);
    REQUIRE(::flock(other, LOCK_EX) == 0);
    const pid_t me = ::getpid();
    auto conflicts = [&] {
      return fork_child([&] {
        const int cfd = ::open(p.c_str(), O_RDWR);
        if (cfd < 0) return 10;
        struct ::flock w {};
        w.l_type = F_WRLCK;
        w.l_whence = SEEK_SET;
        w.l_len = 10;
        struct ::flock q = w;
        if (::fcntl(cfd, F_GETLK, &q) != 0) return 11;
        const bool posix_held = q.l_type == F_WRLCK && q.l_pid == me;
        const bool posix_free = ::fcntl(cfd, F_SETLK, &w) == 0;
        const bool flock_free = ::flock(cfd, LOCK_EX | LOCK_NB) == 0;
        ::close(cfd);
        return (posix_held ? 1 : 0) | (posix_free ? 2 : 0) | (flock_free ? 4 : 0);
      }).wait();
    };
    CHECK(conflicts() == 1);  // both held by this process
    // Closing any of this process's fds of the file drops its POSIX locks
    // (not the flock, which belongs to the open file `other` keeps).
    fd_guard third{::open(p.c_str(), O_RDONLY)};
    ::close(third.fd);
    third.fd = -1;
    CHECK(conflicts() == 2);
    ::close(other.fd);
    other.fd = -1;
    CHECK(conflicts() == (2 | 4));
    for (auto op : {proto::opcode::getlk, proto::opcode::setlk, proto::opcode::setlkw})
      CHECK(received(m.srv().session(), op) == 0);
    CHECK(received(m.srv().session(), proto::opcode::flush) == flushes);
  }
}
