// memfs mounted for real, locking: POSIX record locks between processes and
// flock(2) locks between open files, that block, wake when released (by
// unlock, by close, by the holder's death), and give up on a signal. The
// blocked callers wait as suspended coroutines, so they do not tie up the
// server's threads.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "examples/memfs_fs.hpp"
#include "tests/support/mounted.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

struct memfs_mount : mounted<memfs_fs> {
  explicit memfs_mount(unsigned threads = 0)
      : mounted([threads](memfs_fs&, server_options& o) {
          memfs_fs::configure_mount(o.mount);
          o.classic.threads = threads;
        }) {
    REQUIRE_MESSAGE(ok(), error());
  }
};

struct flock_args {
  short type;
  off_t start, len;
};
int set_lock(int fd, int cmd, flock_args a) {
  struct ::flock l {};
  l.l_type = a.type;
  l.l_whence = SEEK_SET;
  l.l_start = a.start;
  l.l_len = a.len;
  return ::fcntl(fd, cmd, &l);
}

void on_signal(int) {}

}  // namespace

TEST_CASE("POSIX locks: conflicts between processes, F_GETLK, and a blocked F_SETLKW woken by unlock") {
  memfs_mount m;
  const std::string p = m.path("locked");
  int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(set_lock(fd, F_SETLK, {F_WRLCK, 0, 100}) == 0);
  // Our own lock never conflicts with ourselves (one owner per process).
  REQUIRE(set_lock(fd, F_SETLK, {F_RDLCK, 50, 10}) == 0);

  const pid_t me = ::getpid();
  forked child = fork_child([&] {
    int cfd = ::open(p.c_str(), O_RDWR);
    if (cfd < 0) return 10;
    if (set_lock(cfd, F_SETLK, {F_WRLCK, 0, 10}) != -1 || errno != EAGAIN) return 11;
    if (set_lock(cfd, F_SETLK, {F_RDLCK, 200, 10}) != 0) return 12;  // outside the range: fine
    struct ::flock q {};
    q.l_type = F_WRLCK;
    q.l_whence = SEEK_SET;
    q.l_start = 55;
    q.l_len = 1;
    if (::fcntl(cfd, F_GETLK, &q) != 0) return 13;
    if (q.l_pid != me || q.l_type != F_RDLCK || q.l_start != 50 || q.l_len != 10) return 14;  // the read part
    if (set_lock(cfd, F_SETLKW, {F_WRLCK, 0, 10}) != 0) return 15;  // blocks until the parent unlocks
    return 0;
  });
  // The child's exit status says which of its checks failed, if it ends early.
  REQUIRE_MESSAGE(eventually([&] { return m.fs.lock_waiters() == 1 || process_ended(child.pid()); }), "child hangs");
  REQUIRE_MESSAGE(m.fs.lock_waiters() == 1, "child ended with " << child.wait());
  REQUIRE(set_lock(fd, F_SETLK, {F_UNLCK, 0, 0}) == 0);
  CHECK(child.wait() == 0);
  CHECK(m.fs.lock_waiters() == 0);
  ::close(fd);
}

TEST_CASE("POSIX locks: closing any fd of the file releases the process's locks") {
  memfs_mount m;
  const std::string p = m.path("f");
  int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
  int other = ::open(p.c_str(), O_RDONLY);
  REQUIRE(set_lock(fd, F_SETLK, {F_WRLCK, 0, 0}) == 0);  // the whole file
  forked child = fork_child([&] {
    int cfd = ::open(p.c_str(), O_RDWR);
    return set_lock(cfd, F_SETLKW, {F_RDLCK, 10, 1}) == 0 ? 0 : 20;
  });
  REQUIRE(eventually([&] { return m.fs.lock_waiters() == 1; }));
  ::close(other);  // POSIX: a close of *any* fd drops the process's locks on the file
  CHECK(child.wait() == 0);
  ::close(fd);
}

TEST_CASE("POSIX locks: the holder's death releases, a signal interrupts the waiter") {
  memfs_mount m;
  const std::string p = m.path("f");
  REQUIRE(::close(::open(p.c_str(), O_CREAT | O_RDWR, 0644)) == 0);
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  forked holder = fork_child([&] {
    int cfd = ::open(p.c_str(), O_RDWR);
    if (set_lock(cfd, F_SETLK, {F_WRLCK, 0, 0}) != 0) return 30;
    char c = 'x';
    (void)!::write(ready[1], &c, 1);
    ::pause();  // until killed
    return 0;
  });
  char c;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  int fd = ::open(p.c_str(), O_RDWR);
  CHECK(err(set_lock(fd, F_SETLK, {F_RDLCK, 0, 1})) == EAGAIN);

  SUBCASE("a waiter interrupted by a signal gets EINTR and stops waiting") {
    forked waiter = fork_child([&] {
      struct sigaction sa {};
      sa.sa_handler = on_signal;  // no SA_RESTART: the call returns EINTR
      ::sigaction(SIGUSR1, &sa, nullptr);
      int cfd = ::open(p.c_str(), O_RDWR);
      return set_lock(cfd, F_SETLKW, {F_RDLCK, 0, 1}) == -1 && errno == EINTR ? 0 : 40;
    });
    REQUIRE(eventually([&] { return m.fs.lock_waiters() == 1; }));
    ::kill(waiter.pid(), SIGUSR1);
    CHECK(waiter.wait() == 0);
    CHECK(eventually([&] { return m.fs.lock_waiters() == 0; }));
  }
  SUBCASE("a killed waiter does not stay blocked") {
    forked waiter = fork_child([&] {
      int cfd = ::open(p.c_str(), O_RDWR);
      set_lock(cfd, F_SETLKW, {F_RDLCK, 0, 1});
      return 0;
    });
    REQUIRE(eventually([&] { return m.fs.lock_waiters() == 1; }));
    ::kill(waiter.pid(), SIGKILL);
    CHECK(waiter.wait() == 128 + SIGKILL);
    CHECK(eventually([&] { return m.fs.lock_waiters() == 0; }));
  }
  // The holder dies: its files close, its locks go, and we can lock.
  ::kill(holder.pid(), SIGKILL);
  CHECK(holder.wait() == 128 + SIGKILL);
  CHECK(eventually([&] { return set_lock(fd, F_SETLK, {F_WRLCK, 0, 1}) == 0; }));
  ::close(fd);
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_CASE("flock: shared and exclusive between open files, LOCK_NB, waking on unlock and on close") {
  memfs_mount m;
  const std::string p = m.path("fl");
  int a = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
  int b = ::open(p.c_str(), O_RDWR);
  int c = ::open(p.c_str(), O_RDWR);
  REQUIRE(::flock(a, LOCK_SH) == 0);
  REQUIRE(::flock(b, LOCK_SH | LOCK_NB) == 0);  // shared with shared: fine
  CHECK(err(::flock(c, LOCK_EX | LOCK_NB)) == EWOULDBLOCK);
  REQUIRE(::flock(b, LOCK_UN) == 0);
  std::atomic<bool> got{false};
  std::thread t([&] {
    CHECK(::flock(c, LOCK_EX) == 0);  // blocks: a still holds a shared lock
    got = true;
  });
  REQUIRE(eventually([&] { return m.fs.lock_waiters() == 1; }));
  CHECK_FALSE(got.load());
  ::close(a);  // closing the open file releases its flock lock
  t.join();
  CHECK(got.load());
  CHECK(err(::flock(b, LOCK_SH | LOCK_NB)) == EWOULDBLOCK);
  REQUIRE(::flock(c, LOCK_UN) == 0);
  CHECK(::flock(b, LOCK_SH | LOCK_NB) == 0);
  ::close(b);
  ::close(c);
}

TEST_CASE("blocked lock requests do not hold the server's threads") {
  memfs_mount m(/*threads=*/2);
  const std::string p = m.path("busy");
  int holder = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(::flock(holder, LOCK_EX) == 0);
  std::vector<std::thread> waiters;
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) fds.push_back(::open(p.c_str(), O_RDWR));
  for (int fd : fds) waiters.emplace_back([fd] {
      CHECK(::flock(fd, LOCK_SH) == 0);
    });
  REQUIRE(eventually([&] { return m.fs.lock_waiters() == 4; }));
  // Four callers wait, two server threads: everything else still works.
  CHECK(slurp(p) == "");
  CHECK(list_dir(m.path()).size() == 3);
  REQUIRE(::flock(holder, LOCK_UN) == 0);
  for (auto& t : waiters) t.join();
  for (int fd : fds) ::close(fd);
  ::close(holder);
}

TEST_CASE("POSIX locks: an F_SETLKW that would wait for itself fails with EDEADLK") {
  memfs_mount m;
  const std::string p = m.path("pair");
  int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(set_lock(fd, F_SETLK, {F_WRLCK, 0, 1}) == 0);  // we hold byte 0
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  forked child = fork_child([&] {
    int cfd = ::open(p.c_str(), O_RDWR);
    if (cfd < 0) return 10;
    if (set_lock(cfd, F_SETLK, {F_WRLCK, 1, 1}) != 0) return 11;  // the child holds byte 1
    if (::write(ready[1], "x", 1) != 1) return 12;
    // Waits for byte 0, until the parent's own wait is refused and it unlocks.
    if (set_lock(cfd, F_SETLKW, {F_WRLCK, 0, 1}) != 0) return 13;
    return 0;
  });
  char c;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  REQUIRE_MESSAGE(eventually([&] { return m.fs.lock_waiters() == 1 || process_ended(child.pid()); }), "child hangs");
  REQUIRE_MESSAGE(m.fs.lock_waiters() == 1, "child ended with " << child.wait());
  // The child waits for us; waiting for the child would never end.
  CHECK(set_lock(fd, F_SETLKW, {F_WRLCK, 1, 1}) == -1);
  CHECK(errno == EDEADLK);
  // A wait that closes no cycle still waits (and gets the lock once free).
  CHECK(m.fs.lock_waiters() == 1);
  REQUIRE(set_lock(fd, F_SETLK, {F_UNLCK, 0, 0}) == 0);
  CHECK(child.wait() == 0);
  ::close(ready[0]);
  ::close(ready[1]);
  ::close(fd);
}

TEST_CASE("a lock request still blocked when the server stops ends with it") {
  // stop() interrupts every handler still in flight (memfs's blocked lock
  // requests honour interrupts) before it calls destroy(). On io_uring,
  // where the connection cannot be ended (no fusectl in Bazel's sandbox, no
  // MNT_FORCE in its user namespace), the queues go on draining: the child's
  // FLUSH at exit still gets an answer.
  memfs_mount m;
  const std::string p = m.path("held");
  int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(set_lock(fd, F_SETLK, {F_WRLCK, 0, 0}) == 0);
  forked child = fork_child([&] {
    int cfd = ::open(p.c_str(), O_RDWR);
    if (cfd < 0) return 10;
    // Fails once the connection ends; the test only needs it to return.
    return set_lock(cfd, F_SETLKW, {F_WRLCK, 0, 0}) == 0 ? 11 : 0;
  });
  REQUIRE_MESSAGE(eventually([&] { return m.fs.lock_waiters() == 1 || process_ended(child.pid()); }), "child hangs");
  REQUIRE_MESSAGE(m.fs.lock_waiters() == 1, "child ended with " << child.wait());
  m.stop();  // the holder's fd is still open (closing it would release the lock)
  // The waiter was interrupted and finished instead of being abandoned
  // still suspended; no DESTROY came from the kernel, stop() called destroy().
  CHECK(m.fs.lock_waiters() == 0);
  CHECK(m.srv().session().counters().in_flight.load() == 0);
  CHECK(m.srv().session().init().current() == session_phase::ended);
  CHECK(child.wait() == 0);
  ::close(fd);
}
