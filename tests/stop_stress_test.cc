// Stopping never hangs: the case that hung on io_uring (a lock request still
// blocked when the server stops, its application's FLUSH arriving after the
// queues stopped taking requests) over and over, with a fresh mount each
// time. FUSEXX_STOP_REPEATS sets how many (default 20, as in CI; the manual
// run is 200: bazel test //tests:stop_stress_test_uring
// --test_env=FUSEXX_STOP_REPEATS=200). Runs on both transports.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "tests/support/memfs_mount.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

int repeats() {
  const char* env = std::getenv("FUSEXX_STOP_REPEATS");
  return env && std::atoi(env) > 0 ? std::atoi(env) : 20;
}

int set_lock(int fd, int cmd, short type) {
  struct ::flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  return ::fcntl(fd, cmd, &l);
}

}  // namespace

TEST_CASE("stop with a blocked lock request, its holder's file still open: never a hang") {
  const int n = repeats();
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    memfs_mount m;
    const std::string p = m.path("held");
    int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(set_lock(fd, F_SETLK, F_WRLCK) == 0);
    forked child = fork_child([&] {
      int cfd = ::open(p.c_str(), O_RDWR);
      if (cfd < 0) return 10;
      // Ends with EINTR (stop() interrupts it) or an error once the connection
      // is gone; the test needs it to return, and the child to exit.
      return set_lock(cfd, F_SETLKW, F_WRLCK) == 0 ? 11 : 0;
    });
    REQUIRE_MESSAGE(eventually([&] { return m.fs.lock_waiters() == 1 || process_ended(child.pid()); }),
                    "child hangs");
    REQUIRE_MESSAGE(m.fs.lock_waiters() == 1, "child ended with " << child.wait());
    m.stop();
    CHECK(m.fs.lock_waiters() == 0);
    CHECK(m.srv().session().scope().size() == 0);
    CHECK(child.wait(std::chrono::seconds(10)) == 0);  // 128 + SIGKILL would mean it hung
    ::close(fd);
    CHECK_FALSE(is_fuse_mounted(m.path()));
  }
  MESSAGE(n << " stops, none hung");
}
