// park() and resume() through a real mount: a parked server takes no request
// (its applications simply wait, and see nothing wrong afterwards), and a
// park that cannot bring every request to an end says which, within its
// bound. Runs on both transports.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/memfs_mount.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

// What the application saw: operations done, and the first thing that went wrong.
struct app_result {
  std::atomic<std::uint64_t> ops{0};
  std::atomic<std::uint64_t> errors{0};
  std::string first_error;
};

// Loops stat, read (checked), write then read back (checked) and readdir
// (checked) on files it keeps open, until told to stop.
void application(const memfs_mount& m, std::atomic<bool>& stop, app_result& out, int id) {
  auto fail = [&](const std::string& what) {
    if (out.errors.fetch_add(1) == 0) out.first_error = what + ": " + std::strerror(errno);
  };
  const std::string fixed = m.path("fixed");
  const std::string mine = m.path("app" + std::to_string(id));
  const int ro = ::open(fixed.c_str(), O_RDONLY);
  const int rw = ::open(mine.c_str(), O_CREAT | O_RDWR, 0644);
  if (ro < 0 || rw < 0) return fail("open");
  std::string expected(4096, 0);
  for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = static_cast<char>('a' + i % 26);
  for (std::uint64_t round = 0; !stop.load(); ++round) {
    struct stat st {};
    if (::stat(fixed.c_str(), &st) != 0 || st.st_size != 4096) fail("stat");
    std::string got(4096, 0);
    if (::pread(ro, got.data(), got.size(), 0) != 4096 || got != expected) fail("read");
    const std::string stamp = std::to_string(id) + ":" + std::to_string(round);
    std::string back(stamp.size(), 0);
    if (::pwrite(rw, stamp.data(), stamp.size(), 100) != ssize_t(stamp.size()) ||
        ::pread(rw, back.data(), back.size(), 100) != ssize_t(back.size()) || back != stamp)
      fail("write/read back");
    DIR* d = ::opendir(m.path().c_str());
    if (!d) {
      fail("opendir");
    } else {
      int names = 0;
      while (::readdir(d) != nullptr) ++names;
      ::closedir(d);
      if (names < 4) fail("readdir");  // ".", "..", "fixed" and at least this app's file
    }
    out.ops.fetch_add(1);
  }
  ::close(ro);
  ::close(rw);
}

}  // namespace

TEST_CASE("50 park/resume cycles: parked means no request is taken; the application sees no error, no wrong byte") {
  memfs_mount m;
  {
    std::string data(4096, 0);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + i % 26);
    int fd = ::open(m.path("fixed").c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, data.data(), data.size()) == 4096);
    ::close(fd);
  }
  auto& counters = m.srv().session().counters();
  std::atomic<bool> stop{false};
  app_result results[2];
  std::vector<std::jthread> apps;
  for (int i = 0; i < 2; ++i) apps.emplace_back([&, i] { application(m, stop, results[i], i); });
  auto ops = [&] { return results[0].ops.load() + results[1].ops.load(); };

  int quiet_parks = 0;
  for (int cycle = 0; cycle < 50; ++cycle) {
    const auto before = ops();
    REQUIRE_MESSAGE(eventually([&] { return ops() > before; }), "the application made no progress while serving");
    const park_report r = m.srv().park(std::chrono::seconds(5));
    REQUIRE_MESSAGE(r.complete, "park did not reach a boundary: " << r.unfinished.size() << " request(s) unfinished");
    // Parked: nothing is taken from the kernel; the applications wait.
    const auto taken = counters.requests.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (counters.requests.load() == taken) ++quiet_parks;
    CHECK(counters.requests.load() == taken);
    m.srv().resume();
  }
  stop = true;
  apps.clear();
  for (auto& r : results) {
    CHECK_MESSAGE(r.errors.load() == 0, r.first_error);
    CHECK(r.ops.load() > 50);
  }
  CHECK(quiet_parks == 50);
  MESSAGE("application rounds over 50 park/resume cycles: " << ops());
}

TEST_CASE("a park that cannot end a request in time says which, and the request completes after resume") {
  memfs_mount m;
  const std::string p = m.path("locked");
  // Two open file descriptions: their OFD locks conflict even in one process.
  int holder = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
  int waiter_fd = ::open(p.c_str(), O_RDWR);
  REQUIRE(holder >= 0);
  REQUIRE(waiter_fd >= 0);
  struct ::flock l {};
  l.l_type = F_WRLCK;
  l.l_whence = SEEK_SET;
  REQUIRE(::fcntl(holder, F_OFD_SETLK, &l) == 0);
  std::atomic<int> waited{-2};
  std::jthread waiter([&] {
    struct ::flock w {};
    w.l_type = F_WRLCK;
    w.l_whence = SEEK_SET;
    waited = ::fcntl(waiter_fd, F_OFD_SETLKW, &w);
  });
  REQUIRE(eventually([&] { return m.fs.lock_waiters() == 1; }));

  // The blocked SETLKW is a suspended handler: park waits for it until its
  // bound, then reports it, unfinished, and leaves it running.
  const auto started = std::chrono::steady_clock::now();
  const park_report r = m.srv().park(std::chrono::milliseconds(300));
  CHECK(std::chrono::steady_clock::now() - started >= std::chrono::milliseconds(300));
  CHECK_FALSE(r.complete);
  REQUIRE(r.unfinished.size() == 1);
  CHECK(r.unfinished[0].opcode == proto::opcode::setlkw);
  CHECK(waited.load() == -2);
  m.srv().resume();

  l.l_type = F_UNLCK;
  REQUIRE(::fcntl(holder, F_OFD_SETLK, &l) == 0);
  waiter.join();
  CHECK(waited.load() == 0);
  ::close(waiter_fd);
  ::close(holder);
}
