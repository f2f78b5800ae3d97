// memfs mounted for real, the namespace: directories, hard links, symlinks,
// fifos, rename in all its forms, the errno of each refusal, readdir while
// entries come and go, and xattrs. Checked with ordinary syscalls.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "examples/memfs_fs.hpp"
#include "tests/support/mounted.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

struct memfs_mount : mounted<memfs_fs> {
  memfs_mount() : mounted([](memfs_fs&, server_options& o) { memfs_fs::configure_mount(o.mount); }) {
    REQUIRE_MESSAGE(ok(), error());
  }
  // Creates a file with `content`.
  void file(const std::string& rel, std::string_view content = {}) {
    int fd = ::open(path(rel).c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, content.data(), content.size()) == ssize_t(content.size()));
    ::close(fd);
  }
  nlink_t nlink(const std::string& rel) {
    struct stat st {};
    return ::lstat(path(rel).c_str(), &st) == 0 ? st.st_nlink : 0;
  }
  bool exists(const std::string& rel) {
    struct stat st {};
    return ::lstat(path(rel).c_str(), &st) == 0;
  }
};

int rename2(const std::string& a, const std::string& b, unsigned flags) {
  return ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), flags);
}

}  // namespace

TEST_CASE("memfs: directories count their subdirectories in nlink, and rmdir wants them empty") {
  memfs_mount m;
  const nlink_t root = m.nlink("");
  REQUIRE(::mkdir(m.path("d").c_str(), 0755) == 0);
  REQUIRE(::mkdir(m.path("d/sub").c_str(), 0700) == 0);
  m.file("d/f");
  CHECK(m.nlink("") == root + 1);
  CHECK(m.nlink("d") == 3);
  CHECK(m.nlink("d/sub") == 2);
  struct stat st {};
  REQUIRE(::stat(m.path("d/sub").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  CHECK(err(::rmdir(m.path("d").c_str())) == ENOTEMPTY);
  CHECK(err(::rmdir(m.path("d/f").c_str())) == ENOTDIR);
  CHECK(err(::unlink(m.path("d/sub").c_str())) == EISDIR);
  CHECK(err(::mkdir(m.path("d/sub").c_str(), 0755)) == EEXIST);
  CHECK(err(::mkdir(m.path("d/f/x").c_str(), 0755)) == ENOTDIR);
  CHECK(err(::mkdir(m.path("nope/x").c_str(), 0755)) == ENOENT);
  CHECK(err(::rmdir(m.path("d/sub/.").c_str())) == EINVAL);
  REQUIRE(::rmdir(m.path("d/sub").c_str()) == 0);
  REQUIRE(::unlink(m.path("d/f").c_str()) == 0);
  REQUIRE(::rmdir(m.path("d").c_str()) == 0);
  CHECK(m.nlink("") == root);
  CHECK(list_dir(m.path()) == std::vector<std::string>{".", ".."});
}

TEST_CASE("memfs: names longer than 255 bytes are ENAMETOOLONG") {
  memfs_mount m;
  const std::string longest(255, 'n'), too_long(256, 'n');
  m.file(longest, "ok");
  CHECK(slurp(m.path(longest)) == "ok");
  CHECK(err(::open(m.path(too_long).c_str(), O_CREAT | O_WRONLY, 0644)) == ENAMETOOLONG);
  CHECK(err(::mkdir(m.path(too_long).c_str(), 0755)) == ENAMETOOLONG);
  struct stat st {};
  CHECK(err(::stat(m.path(too_long).c_str(), &st)) == ENAMETOOLONG);
  CHECK(err(::rename(m.path(longest).c_str(), m.path(too_long).c_str())) == ENAMETOOLONG);
  CHECK(err(::symlink("x", m.path(too_long).c_str())) == ENAMETOOLONG);
}

TEST_CASE("memfs: hard links share one inode; the data lives until the last name and open file go") {
  memfs_mount m;
  m.file("a", "shared");
  REQUIRE(::link(m.path("a").c_str(), m.path("b").c_str()) == 0);
  CHECK(m.nlink("a") == 2);
  struct stat sa {}, sb {};
  REQUIRE(::stat(m.path("a").c_str(), &sa) == 0);
  REQUIRE(::stat(m.path("b").c_str(), &sb) == 0);
  CHECK(sa.st_ino == sb.st_ino);
  CHECK(err(::link(m.path("a").c_str(), m.path("b").c_str())) == EEXIST);
  REQUIRE(::mkdir(m.path("dir").c_str(), 0755) == 0);
  CHECK(err(::link(m.path("dir").c_str(), m.path("dir2").c_str())) == EPERM);
  int fd = ::open(m.path("b").c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::unlink(m.path("a").c_str()) == 0);
  CHECK(m.nlink("b") == 1);
  REQUIRE(::unlink(m.path("b").c_str()) == 0);
  char buf[16] = {};
  CHECK(::pread(fd, buf, sizeof buf, 0) == 6);  // still readable through the open file
  CHECK(std::string(buf, 6) == "shared");
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_nlink == 0);
  ::close(fd);
}

TEST_CASE("memfs: symlinks: readlink, following, ELOOP, and lstat") {
  memfs_mount m;
  m.file("target", "via link");
  REQUIRE(::symlink("target", m.path("ln").c_str()) == 0);
  char buf[64] = {};
  CHECK(::readlink(m.path("ln").c_str(), buf, sizeof buf) == 6);
  CHECK(std::string(buf) == "target");
  CHECK(slurp(m.path("ln")) == "via link");
  struct stat st {};
  REQUIRE(::lstat(m.path("ln").c_str(), &st) == 0);
  CHECK(S_ISLNK(st.st_mode));
  CHECK(st.st_size == 6);
  CHECK(err(::readlink(m.path("target").c_str(), buf, sizeof buf)) == EINVAL);
  REQUIRE(::symlink("loop2", m.path("loop1").c_str()) == 0);
  REQUIRE(::symlink("loop1", m.path("loop2").c_str()) == 0);
  CHECK(err(::open(m.path("loop1").c_str(), O_RDONLY)) == ELOOP);
  CHECK(err(::open(m.path("ln").c_str(), O_RDONLY | O_NOFOLLOW)) == ELOOP);
  REQUIRE(::symlink("/nowhere/at/all", m.path("dangling").c_str()) == 0);
  CHECK(err(::stat(m.path("dangling").c_str(), &st)) == ENOENT);
  CHECK(err(::symlink("x", m.path("ln").c_str())) == EEXIST);
  // A long target (up to PATH_MAX - 1) is kept whole.
  const std::string long_target(4000, 'x');
  REQUIRE(::symlink(long_target.c_str(), m.path("long").c_str()) == 0);
  std::string back(5000, '\0');
  CHECK(::readlink(m.path("long").c_str(), back.data(), back.size()) == 4000);
}

TEST_CASE("memfs: fifos and sockets are created; the kernel runs the fifo") {
  memfs_mount m;
  REQUIRE(::mkfifo(m.path("fifo").c_str(), 0644) == 0);
  REQUIRE(::mknod(m.path("sock").c_str(), S_IFSOCK | 0644, 0) == 0);
  struct stat st {};
  REQUIRE(::stat(m.path("fifo").c_str(), &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
  REQUIRE(::stat(m.path("sock").c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  std::thread writer([&] {
    int w = ::open(m.path("fifo").c_str(), O_WRONLY);
    REQUIRE(w >= 0);
    CHECK(::write(w, "through", 7) == 7);
    ::close(w);
  });
  CHECK(slurp(m.path("fifo")) == "through");
  writer.join();
}

TEST_CASE("memfs: rename within and across directories, replacing files and empty directories") {
  memfs_mount m;
  REQUIRE(::mkdir(m.path("a").c_str(), 0755) == 0);
  REQUIRE(::mkdir(m.path("b").c_str(), 0755) == 0);
  m.file("a/f", "moved");
  SUBCASE("a file to another directory, then over an existing file") {
    REQUIRE(::rename(m.path("a/f").c_str(), m.path("b/g").c_str()) == 0);
    CHECK_FALSE(m.exists("a/f"));
    CHECK(slurp(m.path("b/g")) == "moved");
    m.file("b/h", "old");
    REQUIRE(::rename(m.path("b/g").c_str(), m.path("b/h").c_str()) == 0);
    CHECK(slurp(m.path("b/h")) == "moved");
    CHECK(list_dir(m.path("b")) == std::vector<std::string>{".", "..", "h"});
  }
  SUBCASE("a directory moves with its contents and its .. link") {
    REQUIRE(::mkdir(m.path("a/sub").c_str(), 0755) == 0);
    m.file("a/sub/x", "deep");
    REQUIRE(::rename(m.path("a/sub").c_str(), m.path("b/sub").c_str()) == 0);
    CHECK(m.nlink("a") == 2);
    CHECK(m.nlink("b") == 3);
    CHECK(slurp(m.path("b/sub/x")) == "deep");
    struct stat parent {}, dotdot {};
    REQUIRE(::stat(m.path("b").c_str(), &parent) == 0);
    REQUIRE(::stat(m.path("b/sub/..").c_str(), &dotdot) == 0);
    CHECK(parent.st_ino == dotdot.st_ino);
  }
  SUBCASE("a directory replaces an empty directory, not a full one, not a file") {
    REQUIRE(::mkdir(m.path("b/empty").c_str(), 0755) == 0);
    REQUIRE(::rename(m.path("a").c_str(), m.path("b/empty").c_str()) == 0);
    CHECK(slurp(m.path("b/empty/f")) == "moved");
    CHECK(m.nlink("b") == 3);
    REQUIRE(::mkdir(m.path("c").c_str(), 0755) == 0);
    CHECK(err(::rename(m.path("c").c_str(), m.path("b/empty").c_str())) == ENOTEMPTY);
    CHECK(err(::rename(m.path("c").c_str(), m.path("b/empty/f").c_str())) == ENOTDIR);
    CHECK(err(::rename(m.path("b/empty/f").c_str(), m.path("c").c_str())) == EISDIR);
  }
  SUBCASE("refusals: into itself, missing source, missing target directory") {
    REQUIRE(::mkdir(m.path("a/inner").c_str(), 0755) == 0);
    CHECK(err(::rename(m.path("a").c_str(), m.path("a/inner/a").c_str())) == EINVAL);
    CHECK(err(::rename(m.path("a/none").c_str(), m.path("b/x").c_str())) == ENOENT);
    CHECK(err(::rename(m.path("a/f").c_str(), m.path("nodir/x").c_str())) == ENOENT);
  }
  SUBCASE("two names of one file: rename does nothing and succeeds") {
    REQUIRE(::link(m.path("a/f").c_str(), m.path("a/f2").c_str()) == 0);
    REQUIRE(::rename(m.path("a/f").c_str(), m.path("a/f2").c_str()) == 0);
    CHECK(m.exists("a/f"));
    CHECK(m.exists("a/f2"));
  }
}

TEST_CASE("memfs: renameat2 with RENAME_NOREPLACE, RENAME_EXCHANGE and RENAME_WHITEOUT") {
  memfs_mount m;
  REQUIRE(::mkdir(m.path("d").c_str(), 0755) == 0);
  m.file("d/inside", "in d");
  m.file("f", "a file");
  m.file("g", "another");
  CHECK(err(rename2(m.path("f"), m.path("g"), RENAME_NOREPLACE)) == EEXIST);
  REQUIRE(rename2(m.path("f"), m.path("h"), RENAME_NOREPLACE) == 0);
  // Exchange a file and a directory: both names stay, the objects swap.
  REQUIRE(::mkdir(m.path("other").c_str(), 0755) == 0);
  REQUIRE(rename2(m.path("h"), m.path("d"), RENAME_EXCHANGE) == 0);
  CHECK(slurp(m.path("h/inside")) == "in d");
  CHECK(slurp(m.path("d")) == "a file");
  // Exchange across directories: nlink of both parents follows the directory.
  const nlink_t root = m.nlink("");
  REQUIRE(rename2(m.path("h"), m.path("other/x"), 0) == 0);
  CHECK(m.nlink("") == root - 1);
  m.file("y", "file y");
  REQUIRE(rename2(m.path("other/x"), m.path("y"), RENAME_EXCHANGE) == 0);
  CHECK(slurp(m.path("y/inside")) == "in d");
  CHECK(slurp(m.path("other/x")) == "file y");
  CHECK(m.nlink("") == root);
  CHECK(m.nlink("other") == 2);
  CHECK(err(rename2(m.path("g"), m.path("missing"), RENAME_EXCHANGE)) == ENOENT);
  CHECK(err(rename2(m.path("g"), m.path("z"), RENAME_EXCHANGE | RENAME_NOREPLACE)) == EINVAL);
  // A whiteout (a 0/0 character device) is left where g was
  // (memfs_rename_test compares all of this with tmpfs).
  REQUIRE(rename2(m.path("g"), m.path("w"), RENAME_WHITEOUT) == 0);
  CHECK(slurp(m.path("w")) == "another");
  struct stat st {};
  REQUIRE(::lstat(m.path("g").c_str(), &st) == 0);
  CHECK(S_ISCHR(st.st_mode));
  CHECK(st.st_rdev == 0);
}

TEST_CASE("memfs: readdir lists every entry exactly once, also while others are unlinked and added") {
  memfs_mount m;
  const int n = 600;  // several READDIR requests' worth
  for (int i = 0; i < n; ++i) m.file("keep" + std::to_string(i));
  for (int i = 0; i < n; ++i) m.file("gone" + std::to_string(i));
  std::atomic<bool> done{false};
  std::thread churn([&] {
    for (int i = 0; i < n; ++i) {
      ::unlink(m.path("gone" + std::to_string(i)).c_str());
      int fd = ::open(m.path("new" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644);
      if (fd >= 0) ::close(fd);
    }
    done = true;
  });
  std::multiset<std::string> seen;
  DIR* d = ::opendir(m.path().c_str());
  REQUIRE(d);
  while (dirent* e = ::readdir(d)) {
    seen.insert(e->d_name);
    if (seen.size() % 50 == 0) std::this_thread::yield();
  }
  ::closedir(d);
  churn.join();
  for (int i = 0; i < n; ++i) CHECK(seen.count("keep" + std::to_string(i)) == 1);  // never skipped
  for (const auto& name : seen) CHECK(seen.count(name) == 1);                       // never repeated
  // And after the churn a fresh listing is exact.
  auto names = list_dir(m.path());
  CHECK(names.size() == std::size_t(2 + 2 * n));
  CHECK(std::count_if(names.begin(), names.end(), [](auto& s) { return s.starts_with("gone"); }) == 0);
}

TEST_CASE("memfs: user. and security. xattrs: set, get, list, replace, remove, size probing") {
  memfs_mount m;
  m.file("x");
  const std::string p = m.path("x");
  REQUIRE(::setxattr(p.c_str(), "user.colour", "blue", 4, 0) == 0);
  REQUIRE(::setxattr(p.c_str(), "security.label", "top", 3, 0) == 0);
  CHECK(::getxattr(p.c_str(), "user.colour", nullptr, 0) == 4);  // size probe
  char buf[64] = {};
  CHECK(err(::getxattr(p.c_str(), "user.colour", buf, 2)) == ERANGE);
  CHECK(::getxattr(p.c_str(), "user.colour", buf, sizeof buf) == 4);
  CHECK(std::string(buf, 4) == "blue");
  CHECK(err(::setxattr(p.c_str(), "user.colour", "red", 3, XATTR_CREATE)) == EEXIST);
  CHECK(err(::setxattr(p.c_str(), "user.size", "1", 1, XATTR_REPLACE)) == ENODATA);
  REQUIRE(::setxattr(p.c_str(), "user.colour", "red", 3, XATTR_REPLACE) == 0);
  const ssize_t list_len = ::listxattr(p.c_str(), nullptr, 0);
  CHECK(list_len == ssize_t(sizeof "security.label" + sizeof "user.colour"));
  std::string names(std::size_t(list_len), '\0');
  CHECK(::listxattr(p.c_str(), names.data(), names.size()) == list_len);
  CHECK(names == std::string("security.label\0user.colour\0", std::size_t(list_len)));
  CHECK(err(::listxattr(p.c_str(), buf, 3)) == ERANGE);
  REQUIRE(::setxattr(p.c_str(), "user.empty", "", 0, 0) == 0);
  CHECK(::getxattr(p.c_str(), "user.empty", buf, sizeof buf) == 0);
  REQUIRE(::removexattr(p.c_str(), "user.colour") == 0);
  CHECK(err(::removexattr(p.c_str(), "user.colour")) == ENODATA);
  CHECK(err(::getxattr(p.c_str(), "user.colour", buf, sizeof buf)) == ENODATA);
  CHECK(err(::setxattr(p.c_str(), "other.ns", "v", 1, 0)) == EOPNOTSUPP);
  // Directories have them too; symlinks do not take user. ones (the VFS says so).
  REQUIRE(::setxattr(m.path().c_str(), "user.dir", "d", 1, 0) == 0);
  REQUIRE(::symlink("x", m.path("ln").c_str()) == 0);
  CHECK(err(::lsetxattr(m.path("ln").c_str(), "user.a", "v", 1, 0)) == EPERM);
  // A 64 KiB value round-trips.
  std::string big(65536, 'v');
  REQUIRE(::setxattr(p.c_str(), "user.big", big.data(), big.size(), 0) == 0);
  std::string back(big.size(), '\0');
  CHECK(::getxattr(p.c_str(), "user.big", back.data(), back.size()) == ssize_t(big.size()));
  CHECK(back == big);
}

TEST_CASE("memfs: chmod keeps the file type and changes ctime; mknod of a regular file works") {
  memfs_mount m;
  REQUIRE(::mknod(m.path("plain").c_str(), S_IFREG | 0600, 0) == 0);
  struct stat st {};
  REQUIRE(::stat(m.path("plain").c_str(), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(::chmod(m.path("plain").c_str(), 04751) == 0);
  REQUIRE(::stat(m.path("plain").c_str(), &st) == 0);
  CHECK(st.st_mode == (S_IFREG | 04751));
  REQUIRE(::chown(m.path("plain").c_str(), 0, 0) == 0);
}
