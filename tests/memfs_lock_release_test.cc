// memfs mounted for real: every kind of lock goes when its owner lets go —
// POSIX record locks (owned by a process) when the process closes any fd of
// the file, open-file-description (OFD) locks and flock(2) locks (owned by
// an open file) with the last close of that open file — whether the holder
// closes, exits or is killed with SIGKILL. A process blocked waiting for
// the lock is woken each time. (memfs kept OFD locks after their open file
// was gone: the kernel sends no unlock for them, only RELEASE.)
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <string>

#include "examples/memfs_fs.hpp"
#include "tests/support/memfs_mount.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

enum class kind { posix, ofd, flock };
enum class release { close, exit, sigkill };

std::string name(kind k) { return k == kind::posix ? "POSIX" : k == kind::ofd ? "OFD" : "flock"; }
std::string name(release r) { return r == release::close ? "close" : r == release::exit ? "exit" : "SIGKILL"; }

// Takes (or, with `wait`, waits for) an exclusive lock on the whole file:
// 0, or the errno.
int lock(kind k, int fd, bool wait) {
  if (k == kind::flock) return ::flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) == 0 ? 0 : errno;
  struct ::flock l {};
  l.l_type = F_WRLCK;
  l.l_whence = SEEK_SET;
  l.l_start = 0;
  l.l_len = 0;
  l.l_pid = 0;  // must be 0 for OFD locks
  const int cmd = k == kind::posix ? (wait ? F_SETLKW : F_SETLK) : (wait ? F_OFD_SETLKW : F_OFD_SETLK);
  return ::fcntl(fd, cmd, &l) == 0 ? 0 : errno;
}
bool busy(int e) { return e == EAGAIN || e == EWOULDBLOCK || e == EACCES; }

struct pipe_pair {
  int fd[2] = {-1, -1};
  pipe_pair() { REQUIRE(::pipe(fd) == 0); }
  ~pipe_pair() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
  bool send(char c) const { return ::write(fd[1], &c, 1) == 1; }
  char receive() const {
    char c = 0;
    return ::read(fd[0], &c, 1) == 1 ? c : 0;
  }
};

void create(const std::string& p) {
  const int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  ::close(fd);
}

// A holder process takes the lock; a second process waits for it; the holder
// lets go `how`; the waiter must get the lock (and, exiting, give it back).
void holder_lets_go(kind k, release how) {
  const std::string lock_kind = name(k), let_go = name(how);
  CAPTURE(lock_kind);
  CAPTURE(let_go);
  memfs_mount m;
  const std::string p = m.path("locked");
  create(p);
  pipe_pair command, report;
  forked holder = fork_child([&] {
    const int fd = ::open(p.c_str(), O_RDWR);
    if (fd < 0) return 10;
    if (lock(k, fd, false) != 0) return 11;
    report.send('l');
    switch (command.receive()) {
      case 'c':
        ::close(fd);
        report.send('c');
        ::pause();  // alive: only the close may have released the lock
        return 0;
      case 'x':
        return 0;  // exits with the file open
      default:
        return 12;
    }
  });
  REQUIRE_MESSAGE(report.receive() == 'l', "holder ended with " << holder.wait());
  const int fd = ::open(p.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  CHECK(busy(lock(k, fd, false)));
  forked waiter = fork_child([&] {
    const int w = ::open(p.c_str(), O_RDWR);
    return w >= 0 && lock(k, w, true) == 0 ? 0 : 20;
  });
  REQUIRE_MESSAGE(eventually([&] { return m.fs.lock_waiters() == 1 || process_ended(waiter.pid()); }), "waiter hangs");
  REQUIRE_MESSAGE(m.fs.lock_waiters() == 1, "waiter ended with " << waiter.wait());
  switch (how) {
    case release::close:
      REQUIRE(command.send('c'));
      CHECK(report.receive() == 'c');
      break;
    case release::exit:
      REQUIRE(command.send('x'));
      CHECK(holder.wait() == 0);
      break;
    case release::sigkill:
      ::kill(holder.pid(), SIGKILL);
      CHECK(holder.wait() == 128 + SIGKILL);
      break;
  }
  CHECK(waiter.wait() == 0);  // woken with the lock; its exit gives it back
  CHECK(eventually([&] { return lock(k, fd, false) == 0; }));
  CHECK(m.fs.lock_waiters() == 0);
  ::close(fd);
}

}  // namespace

TEST_CASE("locks go when the holder closes the file, exits, or is killed; a blocked waiter gets them") {
  for (kind k : {kind::posix, kind::ofd, kind::flock})
    for (release how : {release::close, release::exit, release::sigkill}) holder_lets_go(k, how);
}

TEST_CASE("an OFD lock goes with the close of its fd: the file opened again can be locked") {
  memfs_mount m;
  const std::string p = m.path("f");
  create(p);
  const int fd = ::open(p.c_str(), O_RDWR);
  REQUIRE(lock(kind::ofd, fd, false) == 0);
  // Opened while the first is still open, so the two open files are apart in
  // memory: the kernel's OFD lock owner is the open file's address, and an
  // open file made after the first is freed may get its address, and with it
  // the owner of a lock left behind.
  const int again = ::open(p.c_str(), O_RDWR);
  const int other = ::open(p.c_str(), O_RDWR);
  CHECK(busy(lock(kind::ofd, again, false)));
  ::close(fd);
  // RELEASE reaches memfs after close() returns (the kernel sends it in the
  // background), so the lock is free soon after, not necessarily at once.
  CHECK(eventually([&] { return lock(kind::ofd, again, false) == 0; }));
  CHECK(busy(lock(kind::ofd, other, false)));  // the new one is held
  ::close(again);
  ::close(other);
}

TEST_CASE("OFD and flock locks stay while a copy of their open file is open (dup, fork) and go with the last") {
  for (kind k : {kind::ofd, kind::flock}) {
    const std::string lock_kind = name(k);
    CAPTURE(lock_kind);
    memfs_mount m;
    const std::string p = m.path("f");
    create(p);
    const int probe = ::open(p.c_str(), O_RDWR);
    int fd = ::open(p.c_str(), O_RDWR);
    REQUIRE(lock(k, fd, false) == 0);
    // A dup shares the open file: closing the original keeps the lock. The
    // close sends FLUSH (synchronously) with this process's owner, which must
    // not touch an OFD lock, and no RELEASE.
    const int copy = ::dup(fd);
    ::close(fd);
    CHECK(busy(lock(k, probe, false)));
    // A child shares it too: the parent's last copy goes, the child's keeps it.
    pipe_pair go;
    forked child = fork_child([&] {
      go.receive();
      return 0;  // exits: the open file's last copy closes
    });
    ::close(copy);
    CHECK(busy(lock(k, probe, false)));
    REQUIRE(go.send('x'));
    CHECK(child.wait() == 0);
    CHECK(eventually([&] { return lock(k, probe, false) == 0; }));
    ::close(probe);
  }
}

TEST_CASE("POSIX locks still go with any close by their process, not with another process's close") {
  memfs_mount m;
  const std::string p = m.path("f");
  create(p);
  const int fd = ::open(p.c_str(), O_RDWR);
  REQUIRE(lock(kind::posix, fd, false) == 0);
  // A child that shares the fd closes it: the parent's lock stays.
  forked child = fork_child([&] {
    ::close(fd);
    return 0;
  });
  CHECK(child.wait() == 0);
  forked probe = fork_child([&] {
    const int f = ::open(p.c_str(), O_RDWR);
    return busy(lock(kind::posix, f, false)) ? 0 : 30;
  });
  CHECK(probe.wait() == 0);
  // An OFD lock belongs to its open file, not to the process: it conflicts
  // with the process's own POSIX lock.
  const int other = ::open(p.c_str(), O_RDWR);
  CHECK(busy(lock(kind::ofd, other, false)));
  ::close(other);  // closes "any fd of the file": the POSIX lock goes
  forked after = fork_child([&] {
    const int f = ::open(p.c_str(), O_RDWR);
    return lock(kind::posix, f, false) == 0 ? 0 : 31;
  });
  CHECK(after.wait() == 0);
  ::close(fd);
}
