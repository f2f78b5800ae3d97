#pragma once
// -o auto_unmount: a process outside the server unmounts the filesystem when
// the server dies without unmounting it, so a crashed server leaves no dead
// mount behind. The server holds the write end of a pipe; its death, however
// it happens, closes it, and the watcher then decides.
//
// libfuse has fusermount3 stay as the watcher (the helper that mounted, or
// `fusermount3 --auto-unmount` for root; libfuse e8d407ce, lib/mount.c
// setup_auto_unmount, util/fusermount.c should_auto_unmount). fusexx forks
// a watcher of its own on every path instead, for two reasons found on
// 6.18: the helper unmounts only a mount that answers ENOTCONN, but a server
// on io_uring that is killed leaves the connection up until its rings are
// torn down, after its other files are closed — the helper's look is queued
// and then ended with ECONNABORTED (or not sent at all: a filesystem without
// opendir is not asked), and the dead mount stays; and Debian 12's
// fusermount3 (3.14) has no --auto-unmount for a successor to ask for.
//
// The decision is the helper's, but waits out that teardown: a mount still
// there that answers statfs with ENOTCONN or ECONNABORTED is unmounted — by
// umount2 as root, else by `fusermount3 -u -z`, which lets a user unmount
// their own mount. A clean stop unmounted it already; a successor that took
// the connection over serves it; a connection a keeper or a service
// manager's fd store still holds has no error to give (statfs waits until
// a server answers — or the keeper gives up and aborts the connection, and
// the watcher then unmounts).
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "../detail/fork_guard.hpp"
#include "../failure.hpp"
#include "../fd.hpp"

namespace fusexx {

class unmount_watcher {
 public:
  unmount_watcher() = default;
  // `link`: this process's end of the watcher's pipe; `pid`: the watcher, to
  // be reaped once it is told the server is done.
  unmount_watcher(unique_fd link, pid_t pid) noexcept : link_(std::move(link)), pid_(pid) {}
  unmount_watcher(unmount_watcher&& o) noexcept : link_(std::move(o.link_)), pid_(std::exchange(o.pid_, -1)) {}
  unmount_watcher& operator=(unmount_watcher&& o) noexcept {
    if (this != &o) {
      stop();
      link_ = std::move(o.link_);
      pid_ = std::exchange(o.pid_, -1);
    }
    return *this;
  }
  unmount_watcher(const unmount_watcher&) = delete;
  unmount_watcher& operator=(const unmount_watcher&) = delete;
  ~unmount_watcher() { stop(); }

  bool active() const noexcept { return static_cast<bool>(link_); }
  pid_t pid() const noexcept { return pid_; }

  // Forks the watcher. It keeps nothing of this process but the read end of
  // a pipe (above all not the /dev/fuse fd or an io_uring, which would keep a
  // dead connection alive and its mount answering nothing at all). `helper`:
  // the fusermount3 that unmounts for a user; empty for root.
  static outcome<unmount_watcher> fork_for(const std::string& mountpoint, const std::string& helper);

  // The server is done with the mount (unmounted it, or handed it on): the
  // watcher looks once more, finds nothing to do, and exits. Reaped here,
  // waiting at most a second (its last look opens the mountpoint, which a
  // successor answers).
  void stop() noexcept {
    if (!link_) return;
    link_.reset();
    if (pid_ <= 0) return;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    for (;;) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || (r < 0 && errno != EINTR)) break;
      if (std::chrono::steady_clock::now() >= until) break;  // left to exit on its own
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    pid_ = -1;
  }

 private:
  unique_fd link_;
  pid_t pid_ = -1;
};

namespace detail {

// The forked watcher's whole life. Runs in the child of a process that may
// have many threads: only async-signal-safe calls, no allocation (`unmount`
// is the helper's argv, made before the fork; null for root).
[[noreturn]] inline void watch_and_unmount(int link, const char* mountpoint, char* const* unmount) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, nullptr);  // a terminal's ^C is for the server
  ::setsid();
  if (::dup2(link, 3) != 3) ::_exit(1);
  const int null = ::open("/dev/null", O_RDWR);
  if (null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(null, 2);  // a test harness reading the server's output must see EOF
  }
  ::syscall(SYS_close_range, 4u, UINT_MAX, 0u);
  if (::chdir("/") != 0) {
  }
  char buf[16];
  for (;;) {
    const ssize_t n = ::read(3, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EINTR)) break;
  }
  // statfs always asks the server (an open may not: a filesystem without
  // opendir is not asked), and waits for an answer — from a successor, or
  // the end of a connection still being torn down. While io_uring queues are
  // torn down a request can end ECANCELED first: look again (6.18: ECANCELED,
  // then ECONNABORTED, then ENOTCONN, within some 50 ms).
  for (int tries = 0;; ++tries) {
    struct statfs st;
    if (::statfs(mountpoint, &st) == 0) ::_exit(0);
    if (errno == ENOTCONN || errno == ECONNABORTED) break;
    if ((errno != ECANCELED && errno != EINTR) || tries == 500) ::_exit(0);
    const timespec pause{0, 10'000'000};
    ::nanosleep(&pause, nullptr);
  }
  if (!unmount) ::_exit(::umount2(mountpoint, MNT_DETACH) == 0 ? 0 : 1);
  sigprocmask(SIG_UNBLOCK, &all, nullptr);
  ::execve(unmount[0], unmount, environ);
  ::_exit(127);
}

}  // namespace detail

inline outcome<unmount_watcher> unmount_watcher::fork_for(const std::string& mountpoint, const std::string& helper) {
  // The helper's command line, ready before the fork.
  std::string args[] = {helper, "-u", "-q", "-z", "--", mountpoint};
  char* argv[] = {args[0].data(), args[1].data(), args[2].data(), args[3].data(), args[4].data(), args[5].data(),
                  nullptr};
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return fail(errno, "auto_unmount: pipe: {}", std::strerror(errno));
  unique_fd read_end(p[0]), write_end(p[1]);
  pid_t pid;
  {
    std::unique_lock no_rings_half_made(detail::fork_guard());
    pid = ::fork();
    if (pid == 0) detail::watch_and_unmount(read_end.get(), mountpoint.c_str(), helper.empty() ? nullptr : argv);
  }
  if (pid < 0) return fail(errno, "auto_unmount: cannot start the watcher: {}", std::strerror(errno));
  return unmount_watcher(std::move(write_end), pid);
}

}  // namespace fusexx
