// Lookup counts are exact: every reply that hands the kernel a node
// reference (LOOKUP, CREATE, MKDIR, MKNOD, SYMLINK, LINK, TMPFILE, each
// READDIRPLUS entry) is counted, and every FORGET gives exactly that many
// back. An inode is freed the moment nothing refers to it, so creating and
// deleting many files leaves memfs where it started. Any miscount shows: too
// few and a FORGET asks for more than memfs had (forget_errors); too many and
// deleted inodes never go away (live_inodes).
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <string>

#include "examples/memfs_fs.hpp"
#include "tests/support/mounted.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

struct memfs_mount : mounted<memfs_fs> {
  explicit memfs_mount(const char* entry_timeout = "1")
      : mounted([entry_timeout](memfs_fs& fs, server_options& o) {
          memfs_fs::configure_mount(o.mount);
          REQUIRE(fs.option("entry_timeout", entry_timeout).value_or(false));
          REQUIRE(fs.option("attr_timeout", entry_timeout).value_or(false));
        }) {
    REQUIRE_MESSAGE(ok(), error());
  }
};

// Files created and deleted by the leak test; FUSEXX_LEAK_FILES=1000000 runs
// the full million (minutes, so not in CI).
int leak_files() {
  const char* env = std::getenv("FUSEXX_LEAK_FILES");
  return env ? std::atoi(env) : 20000;
}

}  // namespace

TEST_CASE("every kind of reference is given back when the files are deleted") {
  // entry_timeout=0: every path walk is a fresh LOOKUP, so references pile up.
  memfs_mount m("0");
  const std::size_t base_inodes = m.fs.live_inodes();
  const std::uint64_t base_lookups = m.fs.kernel_lookups();
  {
    REQUIRE(::mkdir(m.path("d").c_str(), 0755) == 0);
    for (int i = 0; i < 50; ++i) {
      const std::string f = m.path("d/f" + std::to_string(i));
      int fd = ::open(f.c_str(), O_CREAT | O_RDWR, 0644);  // CREATE
      REQUIRE(fd >= 0);
      REQUIRE(::write(fd, "x", 1) == 1);
      ::close(fd);
      struct stat st {};
      for (int k = 0; k < 3; ++k) REQUIRE(::stat(f.c_str(), &st) == 0);  // LOOKUPs
      REQUIRE(::link(f.c_str(), (f + ".link").c_str()) == 0);             // LINK
    }
    REQUIRE(::symlink("f0", m.path("d/sym").c_str()) == 0);  // SYMLINK
    REQUIRE(::mkfifo(m.path("d/fifo").c_str(), 0644) == 0);  // MKNOD
    REQUIRE(::mkdir(m.path("d/sub").c_str(), 0755) == 0);    // MKDIR
    int tmp = ::open(m.path("d").c_str(), O_TMPFILE | O_RDWR, 0600);  // TMPFILE
    REQUIRE(tmp >= 0);
    ::close(tmp);
    // READDIRPLUS, twice: each listed entry is one more reference.
    for (int k = 0; k < 2; ++k) CHECK(list_dir(m.path("d")).size() == 2 + 100 + 3);
  }
  CHECK(m.fs.kernel_lookups() > base_lookups + 300);
  for (int i = 0; i < 50; ++i) {
    REQUIRE(::unlink(m.path("d/f" + std::to_string(i)).c_str()) == 0);
    REQUIRE(::unlink(m.path("d/f" + std::to_string(i) + ".link").c_str()) == 0);
  }
  REQUIRE(::unlink(m.path("d/sym").c_str()) == 0);
  REQUIRE(::unlink(m.path("d/fifo").c_str()) == 0);
  REQUIRE(::rmdir(m.path("d/sub").c_str()) == 0);
  REQUIRE(::rmdir(m.path("d").c_str()) == 0);
  // The kernel forgets deleted inodes as soon as nothing uses them.
  CHECK(eventually([&] { return m.fs.live_inodes() == base_inodes; }));
  CHECK(m.fs.kernel_lookups() == base_lookups);
  CHECK(m.fs.forget_errors() == 0);
  CHECK(m.srv().session().counters().forgets.load() > 0);
}

TEST_CASE("creating and deleting many files leaves memory where it started") {
  memfs_mount m;
  const int n = leak_files();
  const std::size_t base_inodes = m.fs.live_inodes();
  const std::uint64_t base_blocks = m.fs.used_blocks();
  const std::string dir = m.path();
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < n; ++i) {
      const std::string f = dir + "/file" + std::to_string(i);
      int fd = ::open(f.c_str(), O_CREAT | O_WRONLY, 0644);
      REQUIRE(fd >= 0);
      REQUIRE(::write(fd, "some data", 9) == 9);
      ::close(fd);
    }
    CHECK(m.fs.live_inodes() == base_inodes + std::size_t(n));
    for (int i = 0; i < n; ++i) REQUIRE(::unlink((dir + "/file" + std::to_string(i)).c_str()) == 0);
    CHECK(eventually([&] { return m.fs.live_inodes() == base_inodes; }));
    CHECK(m.fs.used_blocks() == base_blocks);
    CHECK(m.fs.forget_errors() == 0);
  }
}

TEST_CASE("an open file outlives its name and is freed on the last close") {
  memfs_mount m;
  const std::size_t base = m.fs.live_inodes();
  int fd = ::open(m.path("held").c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::unlink(m.path("held").c_str()) == 0);
  CHECK(m.fs.live_inodes() == base + 1);  // still open
  REQUIRE(::write(fd, "still here", 10) == 10);
  ::close(fd);
  CHECK(eventually([&] { return m.fs.live_inodes() == base; }));
  CHECK(m.fs.forget_errors() == 0);
}

TEST_CASE("a directory removed while a process is inside it lives until it is left") {
  memfs_mount m;
  const std::size_t base = m.fs.live_inodes();
  REQUIRE(::mkdir(m.path("room").c_str(), 0755) == 0);
  int dfd = ::open(m.path("room").c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dfd >= 0);
  REQUIRE(::rmdir(m.path("room").c_str()) == 0);
  // Nothing can be created in it any more.
  CHECK(err(::openat(dfd, "x", O_CREAT | O_WRONLY, 0644)) == ENOENT);
  CHECK(m.fs.live_inodes() == base + 1);
  ::close(dfd);
  CHECK(eventually([&] { return m.fs.live_inodes() == base; }));
}

TEST_CASE("lookup counts drain to zero when the kernel is told to prune what it holds") {
  // The kernel sends no FORGET when it unmounts (kernel-facts: only while the
  // superblock is active), so the drain is asked for: PRUNE every node memfs
  // counts references for, deepest first, until the kernel holds nothing.
  memfs_mount m;
  REQUIRE(::mkdir(m.path("a").c_str(), 0755) == 0);
  REQUIRE(::mkdir(m.path("a/b").c_str(), 0755) == 0);
  for (int i = 0; i < 200; ++i) {
    const std::string f = m.path("a/b/f" + std::to_string(i));
    REQUIRE(::close(::open(f.c_str(), O_CREAT | O_WRONLY, 0644)) == 0);
    REQUIRE(::link(f.c_str(), m.path("a/l" + std::to_string(i)).c_str()) == 0);
  }
  list_dir(m.path("a"));
  list_dir(m.path("a/b"));
  REQUIRE(m.fs.kernel_lookups() >= 400);
  CHECK(eventually([&] {
    auto nodes = m.fs.referenced_nodes();
    std::ranges::sort(nodes, std::greater{});  // younger (here: deeper) nodes first; parents then follow
    return m.srv().session().notify().prune(nodes) && m.fs.kernel_lookups() == 0;
  }));
  CHECK(m.fs.forget_errors() == 0);
  CHECK(m.fs.live_inodes() == 1 + 2 + 200);  // nothing was deleted: all still there
  CHECK(list_dir(m.path("a/b")).size() == 202);
}

TEST_CASE("stopping the server gives back every reference the kernel held (destroy() at stop)") {
  memfs_mount m;
  for (int i = 0; i < 50; ++i) REQUIRE(::mkdir(m.path("d" + std::to_string(i)).c_str(), 0755) == 0);
  REQUIRE(list_dir(m.path()).size() == 2 + 50);  // with . and ..
  const std::size_t named = m.fs.live_inodes();
  REQUIRE(m.fs.kernel_lookups() >= 50);
  // The kernel sends neither FORGET nor DESTROY when a /dev/fuse mount ends.
  m.stop();
  CHECK(m.fs.kernel_lookups() == 0);
  CHECK(m.fs.live_inodes() == named);  // everything still has a name
  CHECK(m.fs.forget_errors() == 0);
}
