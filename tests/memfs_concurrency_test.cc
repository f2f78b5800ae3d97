// memfs under concurrent processes: several processes create, rename, link,
// delete and list in one directory at once, for a bounded time, served by
// several threads. Only the errors that such races explain may occur, the
// tree stays consistent, and once everything is deleted memfs is back where
// it started, with every lookup reference given back.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "examples/memfs_fs.hpp"
#include "tests/support/difftest.hpp"
#include "tests/support/mounted.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

// Exit codes: 0, or 100 + the errno of the first error no race explains.
int churn(const std::string& dir, std::uint64_t seed, std::chrono::milliseconds how_long) {
  random_source rng(seed);
  auto name = [&] { return dir + "/n" + std::to_string(rng.below(24)); };
  auto expected = [](int e) {
    return e == ENOENT || e == EEXIST || e == ENOTEMPTY || e == ENOTDIR || e == EISDIR;
  };
  const auto end = std::chrono::steady_clock::now() + how_long;
  while (std::chrono::steady_clock::now() < end) {
    int rc = 0;
    switch (rng.below(9)) {
      case 0: {
        rc = ::open(name().c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (rc >= 0) {
          rc = int(::write(rc, "data", 4)) < 0 ? -1 : ::close(rc);
        }
        break;
      }
      case 1: rc = ::rename(name().c_str(), name().c_str()); break;
      case 2: rc = ::unlink(name().c_str()); break;
      case 3: rc = ::mkdir(name().c_str(), 0755); break;
      case 4: rc = ::rmdir(name().c_str()); break;
      case 5:
        rc = ::link(name().c_str(), name().c_str());
        if (rc < 0 && errno == EPERM) rc = 0;  // the name was a directory
        break;
      case 6: {
        struct stat st {};
        rc = ::stat(name().c_str(), &st);
        break;
      }
      case 7: {
        DIR* d = ::opendir(dir.c_str());
        if (!d) return 100 + errno;
        errno = 0;
        while (::readdir(d)) {
        }
        rc = errno ? -1 : 0;
        ::closedir(d);
        break;
      }
      default:
        rc = ::renameat2(AT_FDCWD, name().c_str(), AT_FDCWD, name().c_str(), RENAME_EXCHANGE);
        break;
    }
    if (rc < 0 && !expected(errno)) return 100 + errno;
  }
  return 0;
}

}  // namespace

TEST_CASE("several processes churning one directory: only race errors, a consistent tree, nothing leaked") {
  // The workers are forked before the server starts and wait for the
  // directory's path on a pipe each: a child forked while server threads run
  // may inherit a lock one of them held (the allocator's, under ASan) and
  // block on it for ever.
  constexpr int worker_count = 4;
  std::vector<forked> workers;
  std::vector<int> go;
  for (int i = 0; i < worker_count; ++i) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    workers.push_back(fork_child([&, i, read_end = p[0], write_end = p[1]] {
      ::close(write_end);  // so that the read sees EOF if the test ends first
      for (int fd : go) ::close(fd);
      char path[4096];
      const ssize_t n = ::read(read_end, path, sizeof path - 1);
      if (n <= 0) return 99;  // the test ended before the mount was ready
      path[n] = 0;
      return churn(path, 1000 + std::uint64_t(i), std::chrono::milliseconds(1500));
    }));
    ::close(p[0]);
    go.push_back(p[1]);
  }

  mounted<memfs_fs> m([](memfs_fs&, server_options& o) {
    memfs_fs::configure_mount(o.mount);
    o.classic.threads = 4;
  });
  REQUIRE_MESSAGE(m.ok(), m.error());
  const std::size_t base_inodes = m.fs.live_inodes();
  const std::string dir = m.path("shared");
  REQUIRE(::mkdir(dir.c_str(), 0777) == 0);

  for (int fd : go) {
    CHECK(::write(fd, dir.data(), dir.size()) == ssize_t(dir.size()));
    ::close(fd);
  }
  for (auto& w : workers) CHECK(w.wait(std::chrono::seconds(60)) == 0);

  // Every listed name exists, and the directory's nlink counts its subdirectories.
  nlink_t subdirs = 0;
  std::vector<std::string> names;
  for (auto& n : list_dir(dir)) {
    if (n == "." || n == "..") continue;
    names.push_back(n);
    struct stat st {};
    REQUIRE(::lstat((dir + "/" + n).c_str(), &st) == 0);
    subdirs += S_ISDIR(st.st_mode);
  }
  struct stat d {};
  REQUIRE(::stat(dir.c_str(), &d) == 0);
  CHECK(d.st_nlink == 2 + subdirs);

  // Remove it all (subdirectories may hold renamed entries: depth first).
  std::function<void(const std::string&)> remove_tree = [&](const std::string& p) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
      for (auto& n : list_dir(p))
        if (n != "." && n != "..") remove_tree(p + "/" + n);
      CHECK(::rmdir(p.c_str()) == 0);
    } else {
      CHECK(::unlink(p.c_str()) == 0);
    }
  };
  remove_tree(dir);
  CHECK(eventually([&] { return m.fs.live_inodes() == base_inodes; }));
  CHECK(m.fs.kernel_lookups() == 0);
  CHECK(m.fs.forget_errors() == 0);
  CHECK(m.fs.lock_waiters() == 0);
}
