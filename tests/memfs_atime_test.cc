// memfs mounted for real: access times as on tmpfs under the default
// relatime rule — a read (of a file, a directory, a symlink) updates atime
// when atime is not later than mtime or ctime, and then not again until the
// next change; O_NOATIME reads never do. The same steps run on memfs and on a
// fresh tmpfs and must change atime at the same steps.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <fmt/format.h>

#include "examples/memfs_fs.hpp"
#include "tests/support/diff_run.hpp"
#include "tests/support/memfs_mount.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

timespec atime_of(const std::string& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st.st_atim;
}
bool operator==(const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

void read_file(const std::string& p, int extra_flags = 0) {
  const int fd = ::open(p.c_str(), O_RDONLY | extra_flags);
  REQUIRE(fd >= 0);
  char buf[64];
  REQUIRE(::read(fd, buf, sizeof buf) >= 0);
  ::close(fd);
}

// Each step, and whether it changed the atime of what it touched.
std::vector<std::string> steps(const std::string& root) {
  std::vector<std::string> out;
  const std::string f = root + "/f", d = root + "/d", l = root + "/l";
  auto step = [&](const std::string& what, const std::string& path, auto&& action) {
    const timespec before = atime_of(path);
    action();
    out.push_back(fmt::format("{}: atime {}", what, atime_of(path) == before ? "kept" : "updated"));
  };
  {
    const int fd = ::open(f.c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "data", 4) == 4);
    ::close(fd);
  }
  // Read after the write (mtime later than atime): updated; again: kept.
  step("read after a write", f, [&] { read_file(f); });
  step("read again", f, [&] { read_file(f); });
  step("read once more", f, [&] { read_file(f); });
  // atime set two days back (which makes ctime now): updated by the next read.
  const timespec old[2] = {{::time(nullptr) - 2 * 86400, 0}, {0, UTIME_OMIT}};
  REQUIRE(::utimensat(AT_FDCWD, f.c_str(), old, 0) == 0);
  step("read after atime was set back", f, [&] { read_file(f); });
  step("read again", f, [&] { read_file(f); });
  // A write makes the next read update it, unless that read is O_NOATIME.
  {
    const int fd = ::open(f.c_str(), O_WRONLY | O_APPEND);
    REQUIRE(::write(fd, "more", 4) == 4);
    ::close(fd);
  }
  step("O_NOATIME read after a write", f, [&] { read_file(f, O_NOATIME); });
  step("read after that", f, [&] { read_file(f); });
  // A file that is only written: kept (writes do not touch atime).
  step("write", f, [&] {
    const int fd = ::open(f.c_str(), O_WRONLY | O_APPEND);
    REQUIRE(::write(fd, "x", 1) == 1);
    ::close(fd);
  });
  // Directories: listing after a change updates, listing again does not.
  REQUIRE(::mkdir(d.c_str(), 0755) == 0);
  REQUIRE(::close(::open((d + "/inside").c_str(), O_CREAT | O_WRONLY, 0644)) == 0);
  auto list = [&] {
    DIR* dir = ::opendir(d.c_str());
    REQUIRE(dir);
    while (::readdir(dir)) {
    }
    ::closedir(dir);
  };
  step("listing after a change", d, list);
  step("listing again", d, list);
  // Symlinks: reading the link is an access too.
  REQUIRE(::symlink("f", l.c_str()) == 0);
  const timespec back[2] = {{::time(nullptr) - 2 * 86400, 0}, {0, UTIME_OMIT}};
  REQUIRE(::utimensat(AT_FDCWD, l.c_str(), back, AT_SYMLINK_NOFOLLOW) == 0);
  auto readlink = [&] {
    char target[16];
    REQUIRE(::readlink(l.c_str(), target, sizeof target) == 1);
  };
  step("readlink after atime was set back", l, readlink);
  step("readlink again", l, readlink);
  return out;
}

}  // namespace

TEST_CASE("memfs: reads update atime when relatime would, as on tmpfs") {
  memfs_mount m;
  tmpfs_dir reference;
  REQUIRE_MESSAGE(reference.mounted, "cannot mount a tmpfs: " << std::strerror(errno));
  const std::vector<std::string> got = steps(m.path());
  const std::vector<std::string> want = steps(reference.path());
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == want[i]);
  // What relatime does, spelled out.
  CHECK(got[0] == "read after a write: atime updated");
  CHECK(got[1] == "read again: atime kept");
  CHECK(got[3] == "read after atime was set back: atime updated");
}

TEST_CASE("memfs: the updated atime is no earlier than the read and no later than its end") {
  memfs_mount m;
  const std::string f = m.path("f");
  {
    // Not empty: a read at the end of the file sends no READ, so memfs never
    // sees it (tmpfs updates atime then too; see docs/operations.md).
    const int fd = ::open(f.c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(::write(fd, "data", 4) == 4);
    ::close(fd);
  }
  const timespec back[2] = {{1000, 0}, {2000, 0}};  // atime before mtime
  REQUIRE(::utimensat(AT_FDCWD, f.c_str(), back, 0) == 0);
  timespec before{}, after{};
  ::clock_gettime(CLOCK_REALTIME, &before);
  read_file(f);
  ::clock_gettime(CLOCK_REALTIME, &after);
  const timespec a = atime_of(f);
  CHECK(a.tv_sec >= before.tv_sec);
  CHECK(a.tv_sec <= after.tv_sec);
  struct stat st {};
  REQUIRE(::stat(f.c_str(), &st) == 0);
  CHECK(st.st_mtim.tv_sec == 2000);  // a read changes nothing else
}
