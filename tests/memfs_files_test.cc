// memfs mounted for real, file contents: every check is an ordinary syscall
// through the kernel. Reads and writes, O_APPEND, truncation both ways, holes,
// fallocate in every mode, SEEK_DATA/SEEK_HOLE, copy_file_range, O_TMPFILE,
// statx, ioctl, timestamps, statfs and the size limit, nr_inodes and the
// inode room hard links and extended attributes take (next to a tmpfs).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include "examples/memfs_fs.hpp"
#include "tests/support/diff_run.hpp"
#include "tests/support/memfs_mount.hpp"
#include "tests/support/mounted.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

std::string pread_all(int fd, std::size_t n, off_t off) {
  std::string s(n, '?');
  ssize_t got = ::pread(fd, s.data(), n, off);
  s.resize(got < 0 ? 0 : std::size_t(got));
  return s;
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
  operator int() const { return fd; }
};

// df -i's IFree: the inodes statfs says are left.
std::uint64_t inodes_free(const std::string& dir) {
  struct statvfs v {};
  REQUIRE(::statvfs(dir.c_str(), &v) == 0);
  return v.f_ffree;
}

// The room an extended attribute takes of nr_inodes (bytes; each inode is
// 1024), as tmpfs counts it (simple_xattr_space).
std::uint64_t xattr_room(const std::string& name, std::size_t size) { return 40 + name.size() + size; }

}  // namespace

TEST_CASE("memfs: write, read back, across block boundaries, and past the end") {
  memfs_mount m;
  fd_guard fd{::open(m.path("f").c_str(), O_CREAT | O_RDWR, 0644)};
  REQUIRE(fd >= 0);
  std::string big(10000, 'x');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = char('a' + i % 26);
  CHECK(::pwrite(fd, big.data(), big.size(), 4090) == ssize_t(big.size()));
  CHECK(pread_all(fd, big.size(), 4090) == big);
  CHECK(pread_all(fd, 10, 0) == std::string(10, '\0'));  // before the first write: zeros
  CHECK(pread_all(fd, 100, 4090 + 10000) == "");          // at the end: nothing
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_size == 14090);
  // The data survives closing and reopening (another open file, same inode).
  fd_guard again{::open(m.path("f").c_str(), O_RDONLY)};
  CHECK(pread_all(again, 5, 4090) == "abcde");
}

TEST_CASE("memfs: O_APPEND writes land at the end, also from two open files") {
  memfs_mount m;
  const std::string p = m.path("log");
  fd_guard a{::open(p.c_str(), O_CREAT | O_WRONLY | O_APPEND, 0644)};
  fd_guard b{::open(p.c_str(), O_WRONLY | O_APPEND)};
  for (int i = 0; i < 3; ++i) {
    CHECK(::write(a, "aa", 2) == 2);
    CHECK(::write(b, "b", 1) == 1);
  }
  CHECK(::lseek(a, 0, SEEK_SET) == 0);
  CHECK(::write(a, "Z", 1) == 1);  // lseek does not matter with O_APPEND
  CHECK(slurp(p) == "aabaabaabZ");
}

TEST_CASE("memfs: truncate down, then up: the cut part reads as zeros") {
  memfs_mount m;
  const std::string p = m.path("t");
  fd_guard fd{::open(p.c_str(), O_CREAT | O_RDWR, 0644)};
  std::string data(9000, 'q');
  REQUIRE(::write(fd, data.data(), data.size()) == ssize_t(data.size()));
  CHECK(::ftruncate(fd, 5000) == 0);
  CHECK(::truncate(p.c_str(), 12000) == 0);
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  CHECK(st.st_size == 12000);
  std::string back = pread_all(fd, 12000, 0);
  CHECK(back.substr(0, 5000) == std::string(5000, 'q'));
  CHECK(back.substr(5000) == std::string(7000, '\0'));
  CHECK(::truncate(p.c_str(), 0) == 0);
  CHECK(slurp(p) == "");
  CHECK(err(::truncate(m.path().c_str(), 0)) == EISDIR);
  CHECK(err(::ftruncate(fd, -1)) == EINVAL);
}

TEST_CASE("memfs: sparse files, SEEK_DATA and SEEK_HOLE") {
  memfs_mount m;
  fd_guard fd{::open(m.path("sparse").c_str(), O_CREAT | O_RDWR, 0644)};
  REQUIRE(::pwrite(fd, "data", 4, 1 << 20) == 4);  // one block at 1 MiB
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_size == (1 << 20) + 4);
  CHECK(st.st_blocks == 8);  // one 4 KiB block, in 512-byte units
  CHECK(::lseek(fd, 0, SEEK_DATA) == 1 << 20);
  CHECK(::lseek(fd, 0, SEEK_HOLE) == 0);
  CHECK(::lseek(fd, 1 << 20, SEEK_HOLE) == (1 << 20) + 4);  // the end of the file is a hole
  CHECK(err(::lseek(fd, (1 << 20) + 4, SEEK_DATA)) == ENXIO);
  CHECK(err(::lseek(fd, (1 << 20) + 100, SEEK_HOLE)) == ENXIO);
  CHECK(pread_all(fd, 8, 1000) == std::string(8, '\0'));
  // Data and holes are found a page at a time, as on tmpfs.
  REQUIRE(::pwrite(fd, "x", 1, 5000) == 1);  // a second block, at 4096..8191
  CHECK(::lseek(fd, 0, SEEK_DATA) == 4096);
  CHECK(::lseek(fd, 4200, SEEK_DATA) == 4200);
  CHECK(::lseek(fd, 5000, SEEK_HOLE) == 8192);
}

TEST_CASE("memfs: fallocate allocates, punches holes and zeroes ranges") {
  memfs_mount m;
  fd_guard fd{::open(m.path("fa").c_str(), O_CREAT | O_RDWR, 0644)};
  struct stat st {};
  SUBCASE("mode 0 extends the file; KEEP_SIZE does not; reserved space is a hole to SEEK_DATA") {
    CHECK(::fallocate(fd, 0, 0, 8192) == 0);
    REQUIRE(::fstat(fd, &st) == 0);
    CHECK(st.st_size == 8192);
    CHECK(st.st_blocks == 16);
    CHECK(::fallocate(fd, FALLOC_FL_KEEP_SIZE, 8192, 8192) == 0);
    REQUIRE(::fstat(fd, &st) == 0);
    CHECK(st.st_size == 8192);
    CHECK(st.st_blocks == 32);
    CHECK(pread_all(fd, 8192, 0) == std::string(8192, '\0'));
    CHECK(err(::lseek(fd, 0, SEEK_DATA)) == ENXIO);
  }
  SUBCASE("punch hole: whole blocks go, partial ones are zeroed, the size stays") {
    std::string data(3 * 4096, 'p');
    REQUIRE(::pwrite(fd, data.data(), data.size(), 0) == ssize_t(data.size()));
    CHECK(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 8092) == 0);  // to 8192
    std::string back = pread_all(fd, data.size(), 0);
    CHECK(back.substr(0, 100) == std::string(100, 'p'));
    CHECK(back.substr(100, 8092) == std::string(8092, '\0'));
    CHECK(back.substr(8192) == std::string(data.size() - 8192, 'p'));
    REQUIRE(::fstat(fd, &st) == 0);
    CHECK(st.st_size == off_t(data.size()));
    CHECK(st.st_blocks == 16);  // block 1 (4096..8191) is gone
    CHECK(::lseek(fd, 0, SEEK_HOLE) == 4096);
    CHECK(::lseek(fd, 4096, SEEK_DATA) == 8192);
    // A punch without KEEP_SIZE is refused (as by every Linux filesystem).
    CHECK(err(::fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 10)) == EOPNOTSUPP);
  }
  SUBCASE("zero range: zeros, space kept, size grows unless KEEP_SIZE") {
    REQUIRE(::pwrite(fd, "abcdefgh", 8, 0) == 8);
    CHECK(::fallocate(fd, FALLOC_FL_ZERO_RANGE, 2, 4) == 0);
    CHECK(pread_all(fd, 8, 0) == std::string("ab\0\0\0\0gh", 8));
    CHECK(::fallocate(fd, FALLOC_FL_ZERO_RANGE, 4096, 4096) == 0);
    REQUIRE(::fstat(fd, &st) == 0);
    CHECK(st.st_size == 8192);
    CHECK(::fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 8192, 4096) == 0);
    REQUIRE(::fstat(fd, &st) == 0);
    CHECK(st.st_size == 8192);
    CHECK(st.st_blocks == 24);
  }
  SUBCASE("modes memfs does not have are EOPNOTSUPP; bad ranges EINVAL") {
    REQUIRE(::pwrite(fd, "x", 1, 20000) == 1);
    CHECK(err(::fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 4096)) == EOPNOTSUPP);
    CHECK(err(::fallocate(fd, FALLOC_FL_INSERT_RANGE, 0, 4096)) == EOPNOTSUPP);
    CHECK(err(::fallocate(fd, 0, 0, 0)) == EINVAL);
  }
}

TEST_CASE("memfs: copy_file_range between files and within one") {
  memfs_mount m;
  fd_guard src{::open(m.path("src").c_str(), O_CREAT | O_RDWR, 0644)};
  fd_guard dst{::open(m.path("dst").c_str(), O_CREAT | O_RDWR, 0644)};
  std::string data(20000, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = char(i * 7);
  REQUIRE(::pwrite(src, data.data(), data.size(), 0) == ssize_t(data.size()));
  loff_t in = 100, out = 50;
  CHECK(::copy_file_range(src, &in, dst, &out, 10000, 0) == 10000);
  CHECK(in == 10100);
  CHECK(out == 10050);
  CHECK(pread_all(dst, 10000, 50) == data.substr(100, 10000));
  CHECK(pread_all(dst, 50, 0) == std::string(50, '\0'));
  // Asking for more than there is copies what there is.
  in = 19990;
  out = 0;
  CHECK(::copy_file_range(src, &in, dst, &out, 1000, 0) == 10);
  // Within one file; overlapping ranges are refused by the VFS.
  in = 0;
  out = 20000;
  CHECK(::copy_file_range(src, &in, src, &out, 10, 0) == 10);
  CHECK(pread_all(src, 10, 20000) == data.substr(0, 10));
  in = 0;
  out = 5;
  CHECK(err(::copy_file_range(src, &in, src, &out, 10, 0)) == EINVAL);
}

TEST_CASE("memfs: O_TMPFILE: an unnamed file that linkat can name, freed when closed unnamed") {
  memfs_mount m;
  const std::size_t before = m.fs.live_inodes();
  {
    fd_guard fd{::open(m.path().c_str(), O_TMPFILE | O_RDWR, 0600)};
    REQUIRE(fd >= 0);
    CHECK(::write(fd, "temp", 4) == 4);
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    CHECK(st.st_nlink == 0);
    CHECK(list_dir(m.path()) == std::vector<std::string>{".", ".."});
    CHECK(m.fs.live_inodes() == before + 1);
  }
  CHECK(eventually([&] { return m.fs.live_inodes() == before; }));
  fd_guard fd{::open(m.path().c_str(), O_TMPFILE | O_RDWR, 0600)};
  REQUIRE(::write(fd, "kept", 4) == 4);
  const std::string proc = "/proc/self/fd/" + std::to_string(fd.fd);
  REQUIRE(::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, m.path("named").c_str(), AT_SYMLINK_FOLLOW) == 0);
  CHECK(slurp(m.path("named")) == "kept");
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_nlink == 1);
}

TEST_CASE("memfs: statx reports the birth time") {
  memfs_mount m;
  timespec before = memfs::now();
  REQUIRE(::close(::open(m.path("born").c_str(), O_CREAT | O_WRONLY, 0644)) == 0);
  struct statx sx {};
  REQUIRE(::statx(AT_FDCWD, m.path("born").c_str(), AT_STATX_FORCE_SYNC, STATX_BTIME | STATX_BASIC_STATS, &sx) == 0);
  CHECK((sx.stx_mask & STATX_BTIME));
  CHECK((sx.stx_btime.tv_sec > before.tv_sec ||
         (sx.stx_btime.tv_sec == before.tv_sec && long(sx.stx_btime.tv_nsec) >= before.tv_nsec)));
  CHECK(S_ISREG(sx.stx_mode));
}

TEST_CASE("memfs: ioctl with data out, data in and out, and unknown commands") {
  memfs_mount m;
  fd_guard fd{::open(m.path("io").c_str(), O_CREAT | O_RDWR, 0644)};
  std::uint64_t lookups = 0;
  REQUIRE(::ioctl(fd, memfs::ioc_lookups, &lookups) == 0);
  CHECK(lookups >= 1);  // at least CREATE's reference
  char buf[16];
  std::memcpy(buf, "0123456789abcdef", 16);
  REQUIRE(::ioctl(fd, memfs::ioc_reverse, buf) == 0);
  CHECK(std::string(buf, 16) == "fedcba9876543210");
  CHECK(err(::ioctl(fd, _IOR('M', 99, int), buf)) == ENOTTY);
  // On a directory too (the kernel asks only with FUSE_HAS_IOCTL_DIR).
  fd_guard dir{::open(m.path().c_str(), O_RDONLY | O_DIRECTORY)};
  REQUIRE(::ioctl(dir, memfs::ioc_lookups, &lookups) == 0);
}

TEST_CASE("memfs: timestamps: utimensat with nanoseconds, UTIME_NOW and UTIME_OMIT; writes move mtime") {
  memfs_mount m;
  const std::string p = m.path("ts");
  REQUIRE(::close(::open(p.c_str(), O_CREAT | O_WRONLY, 0644)) == 0);
  timespec set[2] = {{1000, 123456789}, {2000, 987654321}};
  REQUIRE(::utimensat(AT_FDCWD, p.c_str(), set, 0) == 0);
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  CHECK(st.st_atim.tv_sec == 1000);
  CHECK(st.st_atim.tv_nsec == 123456789);
  CHECK(st.st_mtim.tv_sec == 2000);
  CHECK(st.st_mtim.tv_nsec == 987654321);
  timespec omit_now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  const timespec before = memfs::now();
  REQUIRE(::utimensat(AT_FDCWD, p.c_str(), omit_now, 0) == 0);
  REQUIRE(::stat(p.c_str(), &st) == 0);
  CHECK(st.st_atim.tv_sec == 1000);  // omitted
  CHECK(st.st_mtim.tv_sec >= before.tv_sec);
  REQUIRE(::utimensat(AT_FDCWD, p.c_str(), set, 0) == 0);
  int fd = ::open(p.c_str(), O_WRONLY);
  REQUIRE(::write(fd, "w", 1) == 1);
  ::close(fd);
  REQUIRE(::stat(p.c_str(), &st) == 0);
  CHECK(st.st_mtim.tv_sec >= before.tv_sec);
  CHECK(st.st_ctim.tv_sec >= before.tv_sec);
}

TEST_CASE("memfs: statfs reports real numbers, and size= is a hard limit") {
  memfs_mount m("size=1m");
  struct statvfs v {};
  REQUIRE(::statvfs(m.path().c_str(), &v) == 0);
  CHECK(v.f_bsize == 4096);
  CHECK(v.f_blocks == 256);
  CHECK(v.f_bfree == 256);
  CHECK(v.f_namemax == 255);
  const auto files_free = v.f_ffree;
  fd_guard fd{::open(m.path("fill").c_str(), O_CREAT | O_RDWR, 0644)};
  std::string chunk(100 * 4096, 'z');
  REQUIRE(::pwrite(fd, chunk.data(), chunk.size(), 0) == ssize_t(chunk.size()));
  REQUIRE(::statvfs(m.path().c_str(), &v) == 0);
  CHECK(v.f_bfree == 156);
  CHECK(v.f_bavail == 156);
  CHECK(v.f_ffree == files_free - 1);
  // Past the limit: ENOSPC, and nothing changes.
  std::string more(200 * 4096, 'y');
  CHECK(err(::pwrite(fd, more.data(), more.size(), off_t(chunk.size()))) == ENOSPC);
  CHECK(err(::fallocate(fd, 0, 0, 2 << 20)) == ENOSPC);
  REQUIRE(::statvfs(m.path().c_str(), &v) == 0);
  CHECK(v.f_bfree == 156);
  // Space comes back with truncation and unlinking.
  CHECK(::ftruncate(fd, 4096) == 0);
  REQUIRE(::statvfs(m.path().c_str(), &v) == 0);
  CHECK(v.f_bfree == 255);
}

TEST_CASE("memfs: nr_inodes= is a hard limit on every kind of node and on hard links, and statfs counts it (df -i)") {
  memfs_mount m("nr_inodes=8");
  struct statvfs v {};
  REQUIRE(::statvfs(m.path().c_str(), &v) == 0);
  CHECK(v.f_files == 8);
  CHECK(v.f_ffree == 7);  // the root is one
  fd_guard f{::open(m.path("f").c_str(), O_CREAT | O_RDWR, 0644)};
  REQUIRE(f.fd >= 0);
  REQUIRE(::mkdir(m.path("d").c_str(), 0755) == 0);
  REQUIRE(::symlink("f", m.path("s").c_str()) == 0);
  REQUIRE(::mknod(m.path("p").c_str(), S_IFIFO | 0644, 0) == 0);
  CHECK(inodes_free(m.path()) == 3);
  // A second name takes an inode's room too, as on tmpfs (each name pins memory).
  REQUIRE(::link(m.path("f").c_str(), m.path("hard").c_str()) == 0);
  CHECK(inodes_free(m.path()) == 2);
  for (int i = 0; i < 2; ++i) REQUIRE(::mkdir(m.path("d/" + std::to_string(i)).c_str(), 0755) == 0);
  CHECK(inodes_free(m.path()) == 0);
  // Full: every way of making a node or a name says ENOSPC, and nothing is half made.
  CHECK(err(::open(m.path("g").c_str(), O_CREAT | O_RDWR, 0644)) == ENOSPC);
  CHECK(err(::mkdir(m.path("e").c_str(), 0755)) == ENOSPC);
  CHECK(err(::symlink("f", m.path("t").c_str())) == ENOSPC);
  CHECK(err(::mknod(m.path("q").c_str(), S_IFIFO | 0644, 0)) == ENOSPC);
  CHECK(err(::open(m.path().c_str(), O_TMPFILE | O_RDWR, 0600)) == ENOSPC);
  CHECK(err(::link(m.path("f").c_str(), m.path("hard2").c_str())) == ENOSPC);
  CHECK(::access(m.path("g").c_str(), F_OK) == -1);
  CHECK(::access(m.path("hard2").c_str(), F_OK) == -1);
  struct stat st {};
  REQUIRE(::fstat(f, &st) == 0);
  CHECK(st.st_nlink == 2);
  CHECK(inodes_free(m.path()) == 0);
  // A hard link's room comes back with the name, at once (the node stays).
  REQUIRE(::unlink(m.path("hard").c_str()) == 0);
  CHECK(inodes_free(m.path()) == 1);
  CHECK(::link(m.path("f").c_str(), m.path("hard2").c_str()) == 0);
  CHECK(inodes_free(m.path()) == 0);
  // A node freed is a node to be had — once the kernel has forgotten it
  // (its FORGET follows the rmdir; until then memfs must keep the node).
  REQUIRE(::rmdir(m.path("d/0").c_str()) == 0);
  CHECK(eventually([&] { return ::mkdir(m.path("e").c_str(), 0755) == 0; }));
}

TEST_CASE("memfs: extended attributes take inode room: ENOSPC past it, nothing half set, room back when removed") {
  memfs_mount m("nr_inodes=100");  // 100 KiB of room; the root and the file take 1 KiB each
  const std::string f = m.path("f");
  REQUIRE(::mknod(f.c_str(), S_IFREG | 0644, 0) == 0);
  std::uint64_t room = 98 * 1024;
  CHECK(inodes_free(m.path()) == room / 1024);
  auto set = [&](const std::string& name, std::size_t size, char fill, int flags = 0) {
    const std::string value(size, fill);
    return err(::setxattr(f.c_str(), name.c_str(), value.data(), value.size(), flags));
  };
  // A value as "SIZE x BYTE" (all its bytes alike), "SIZE mixed", or "errno N".
  auto value_of = [&](const std::string& name) {
    std::string v(65536, '\0');
    const ssize_t n = ::getxattr(f.c_str(), name.c_str(), v.data(), v.size());
    if (n < 0) return "errno " + std::to_string(errno);
    v.resize(std::size_t(n));
    const bool alike = v.find_first_not_of(v.empty() ? '\0' : v[0]) == std::string::npos;
    return std::to_string(n) + (alike ? std::string(" x ") + (v.empty() ? '-' : v[0]) : std::string(" mixed"));
  };
  // The largest value the kernel passes (XATTR_SIZE_MAX).
  REQUIRE(set("user.a", 65536, 'a') == 0);
  room -= xattr_room("user.a", 65536);
  CHECK(inodes_free(m.path()) == room / 1024);
  // A second does not fit: ENOSPC, and no attribute is left behind.
  CHECK(set("user.b", 65536, 'b') == ENOSPC);
  CHECK(value_of("user.b") == "errno " + std::to_string(ENODATA));
  CHECK(inodes_free(m.path()) == room / 1024);
  // A replace with a smaller value gives the difference back...
  REQUIRE(set("user.a", 30000, 'A', XATTR_REPLACE) == 0);
  room += xattr_room("user.a", 65536) - xattr_room("user.a", 30000);
  CHECK(inodes_free(m.path()) == room / 1024);
  CHECK(value_of("user.a") == "30000 x A");
  REQUIRE(set("user.b", 65536, 'b') == 0);
  room -= xattr_room("user.b", 65536);
  CHECK(inodes_free(m.path()) == room / 1024);
  // ...and one with a larger value takes only the difference: here, to the last byte.
  const std::size_t brim = 30000 + room;
  CHECK(set("user.a", brim + 1, 'X', XATTR_REPLACE) == ENOSPC);
  CHECK(value_of("user.a") == "30000 x A");  // the old value stays whole
  REQUIRE(set("user.a", brim, 'B', XATTR_REPLACE) == 0);
  room = 0;
  CHECK(inodes_free(m.path()) == 0);
  // Full: a value of the same size still replaces (tmpfs would say ENOSPC:
  // it takes the new value's room before it frees the old one's), a new
  // node or name does not fit, nor does an empty attribute.
  CHECK(set("user.a", brim, 'C', XATTR_REPLACE) == 0);
  CHECK(value_of("user.a") == std::to_string(brim) + " x C");
  CHECK(err(::mkdir(m.path("d").c_str(), 0755)) == ENOSPC);
  CHECK(err(::link(f.c_str(), m.path("l").c_str())) == ENOSPC);
  CHECK(set("user.c", 0, 'c') == ENOSPC);
  // Removing an attribute gives its room back.
  REQUIRE(::removexattr(f.c_str(), "user.b") == 0);
  room += xattr_room("user.b", 65536);
  CHECK(inodes_free(m.path()) == room / 1024);
  CHECK(::mkdir(m.path("d").c_str(), 0755) == 0);
  room -= 1024;
  // So does removing the file, with its node, once the kernel has forgotten it.
  REQUIRE(::unlink(f.c_str()) == 0);
  room += 1024 + xattr_room("user.a", brim);
  CHECK(eventually([&] { return inodes_free(m.path()) == room / 1024; }));
  CHECK(inodes_free(m.path()) == 98);  // the root and d
}

TEST_CASE("memfs: hard links and extended attributes run out of nr_inodes where tmpfs's do, with the same df -i") {
  // The same operations on a tmpfs and on memfs, both nr_inodes=64: each
  // must succeed or fail alike and leave the same IFree.
  tmpfs_dir tmpfs("1m", "nr_inodes=64");
  REQUIRE(tmpfs.mounted);
  memfs_mount m("nr_inodes=64");
  const std::string dirs[2] = {m.path(), tmpfs.path()};
  // `op(dir, side)` returns the errno it got (0: success).
  auto same = [&](const std::string& what, const std::function<int(const std::string&, int)>& op) {
    int e[2];
    std::uint64_t free[2];
    for (int side = 0; side < 2; ++side) {
      e[side] = op(dirs[side], side);
      free[side] = inodes_free(dirs[side]);
    }
    INFO(what);
    CHECK(e[0] == e[1]);
    CHECK(free[0] == free[1]);
    return e[0];
  };
  CHECK(inodes_free(m.path()) == 63);
  same("creat f", [](const std::string& d, int) { return err(::mknod((d + "/f").c_str(), S_IFREG | 0644, 0)); });
  int links = 0;
  while (links < 64 && same("link " + std::to_string(links), [&](const std::string& d, int) {
           return err(::link((d + "/f").c_str(), (d + "/l" + std::to_string(links)).c_str()));
         }) == 0)
    ++links;
  CHECK(links == 62);  // 64, less the root and f
  CHECK(inodes_free(m.path()) == 0);
  for (int k = 0; k < 20; ++k)
    same("unlink l" + std::to_string(k),
         [&](const std::string& d, int) { return err(::unlink((d + "/l" + std::to_string(k)).c_str())); });
  CHECK(inodes_free(m.path()) == 20);
  // An O_TMPFILE file is a node; its first name, given by linkat, is free.
  fd_guard tmp[2] = {{-1}, {-1}};
  same("O_TMPFILE", [&](const std::string& d, int side) {
    tmp[side].fd = ::open(d.c_str(), O_TMPFILE | O_RDWR, 0600);
    return err(tmp[side].fd);
  });
  same("linkat the O_TMPFILE file", [&](const std::string& d, int side) {
    const std::string proc = "/proc/self/fd/" + std::to_string(tmp[side].fd);
    return err(::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, (d + "/t").c_str(), AT_SYMLINK_FOLLOW));
  });
  CHECK(inodes_free(m.path()) == 19);
  // Extended attributes of several sizes until they no longer fit.
  int xattrs = 0;
  while (xattrs < 64 && same("setxattr " + std::to_string(xattrs), [&](const std::string& d, int) {
           const std::string value(std::size_t(1000 + 1500 * xattrs), 'v');
           const std::string name = "user.x" + std::to_string(xattrs);
           return err(::setxattr((d + "/f").c_str(), name.c_str(), value.data(), value.size(), XATTR_CREATE));
         }) == 0)
    ++xattrs;
  CHECK(xattrs > 2);
  auto replace = [&](const std::string& name, std::size_t size) {
    return [name, size](const std::string& d, int) {
      const std::string value(size, 'r');
      return err(::setxattr((d + "/f").c_str(), name.c_str(), value.data(), value.size(), XATTR_REPLACE));
    };
  };
  same("replace user.x1 with a smaller value", replace("user.x1", 10));
  same("replace user.x0 with a larger value", replace("user.x0", 1800));
  same("removexattr user.x2", [](const std::string& d, int) { return err(::removexattr((d + "/f").c_str(), "user.x2")); });
  same("an empty one", [](const std::string& d, int) { return err(::setxattr((d + "/f").c_str(), "user.e", "", 0, 0)); });
  // Every name of f gone, and its last open file: its node and attributes
  // go with it (on memfs once the kernel has forgotten it).
  for (int k = 20; k < links; ++k)
    same("unlink l" + std::to_string(k),
         [&](const std::string& d, int) { return err(::unlink((d + "/l" + std::to_string(k)).c_str())); });
  for (int side = 0; side < 2; ++side) REQUIRE(::unlink((dirs[side] + "/f").c_str()) == 0);
  CHECK(eventually([&] { return inodes_free(m.path()) == inodes_free(tmpfs.path()); }));
  CHECK(inodes_free(tmpfs.path()) == 62);  // the root and t
}

TEST_CASE("memfs: nr_inodes=0 means no limit, and statfs then reports no inode numbers, as tmpfs does") {
  memfs_mount m("nr_inodes=0");
  struct statvfs v {};
  REQUIRE(::statvfs(m.path().c_str(), &v) == 0);
  CHECK(v.f_files == 0);
  CHECK(v.f_ffree == 0);
  for (int i = 0; i < 50; ++i) REQUIRE(::mkdir(m.path(std::to_string(i)).c_str(), 0755) == 0);
}

TEST_CASE("memfs: fsync, fdatasync and syncfs succeed") {
  memfs_mount m;
  fd_guard fd{::open(m.path("s").c_str(), O_CREAT | O_RDWR, 0644)};
  CHECK(::fsync(fd) == 0);
  CHECK(::fdatasync(fd) == 0);
  CHECK(::syncfs(fd) == 0);
  fd_guard dir{::open(m.path().c_str(), O_RDONLY | O_DIRECTORY)};
  CHECK(::fsync(dir) == 0);
}

TEST_CASE("the memfs command: its options, and the mount options it always sets") {
  const std::string memfs = example_binary("FUSEXX_MEMFS");
  REQUIRE_MESSAGE(!memfs.empty(), "FUSEXX_MEMFS is not set (run through bazel test)");
  temp_dir dir;
  REQUIRE(run({memfs, "-o", "size=2m,entry_timeout=0.5,attr_timeout=0", dir.path()}).status == 0);
  auto daemons = pids_mentioning(dir.path());
  struct statvfs v {};
  CHECK(::statvfs(dir.path().c_str(), &v) == 0);
  CHECK(v.f_blocks == 512);
  auto e = find_fuse_mount(dir.path());
  REQUIRE(e);
  CHECK(e->fstype == "fuse.memfs");
  CHECK(e->super_options.find("default_permissions") != std::string::npos);
  CHECK(e->super_options.find("allow_other") != std::string::npos);
  CHECK(::mkdir((dir.path() + "/works").c_str(), 0755) == 0);
  REQUIRE(::umount2(dir.path().c_str(), MNT_DETACH) == 0);
  REQUIRE(daemons.size() == 1);
  CHECK(eventually([&] { return process_ended(daemons[0]); }));
  // The INIT capabilities memfs can ask for (memfs_init_test observes each).
  REQUIRE(run({memfs, "-o", "writeback_cache,atomic_o_trunc,explicit_inval_data,handle_killpriv_v2", dir.path()})
              .status == 0);
  daemons = pids_mentioning(dir.path());
  {
    const std::string p = dir.path() + "/f";
    int fd = ::open(p.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    CHECK(::write(fd, "cached", 6) == 6);
    CHECK(::fsync(fd) == 0);
    CHECK(pread_all(fd, 16, 0) == "cached");
    ::close(fd);
  }
  REQUIRE(::umount2(dir.path().c_str(), MNT_DETACH) == 0);
  REQUIRE(daemons.size() == 1);
  CHECK(eventually([&] { return process_ended(daemons[0]); }));
  // Bad values are refused before anything is mounted.
  CHECK(run({memfs, "-o", "writeback_cache=yes", dir.path()}).status == 2);
  CHECK(run({memfs, "-o", "size=lots", dir.path()}).status == 2);
  CHECK(run({memfs, "-o", "nr_inodes=many", dir.path()}).status == 2);
  CHECK(run({memfs, "-o", "entry_timeout=-1", dir.path()}).status == 2);
  CHECK_FALSE(is_fuse_mounted(dir.path()));
  CHECK(run({memfs, "--help"}).out.find("size=N") != std::string::npos);
}
