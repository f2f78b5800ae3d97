#pragma once
// The keeper of a supervised mount (-o supervise; docs/restart.md, "Crash
// recovery"): a small process that outlives its server.
//
//   keeper ── fork ──> server #0: mounts, serves, journals (restart/journaling.hpp)
//     │   <── checkpoint {generation} + sealed snapshot memfd (+ the /dev/fuse fd,
//     │       with the first, taken as INIT is answered)   ──> ack
//     │   <── serving
//     │  server #0 dies (SIGKILL, a crash, the OOM killer)
//     └── fork ──> server #1: restores the checkpoint, replays the journal,
//                  NOTIFY_RESEND, serves on the same connection
//
// The keeper holds what must survive a server: the connection's /dev/fuse
// fd (so the kernel keeps the connection, and the requests the dead server
// had read, for a resend), the crash journal (a memfd it creates before the
// first server) and the last checkpoint. A supervised server reads requests
// only from that one fd, never from clones: a clone that closes with its
// process ends the requests read through it (ECONNABORTED).
//
// It is single-threaded, and forks its servers without exec: they continue
// from the keeper's memory, the filesystem object as the command line made
// it. For a filesystem rebuilt by redo (journal_note.hpp) the fork shares
// the keeper's fd table (clone(CLONE_FILES)), so the files a server opened
// outlive it. A server that exits (status 0: unmounted or stopped), or one that was
// asked to stop (a stop signal forwarded by the keeper), ends the keeper
// with its status. One that crashes is started again, after a back-off
// (0.1 s doubling to 2 s), unless it is the `restarts`-th crash in a row
// of a server that did not answer a request within `stable`, or the
// 10 × `restarts`-th within a minute — then the keeper gives up: it ends the
// connection (applications get ENOTCONN), says why, and exits with
// keeper::gave_up_status. systemd's fd store can be the keeper instead
// (fusexx::main under a unit with a store): the same checkpoints and
// journals are stored there, and the same count decides.
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../failure.hpp"
#include "../fd.hpp"
#include "../log.hpp"
#include "handover.hpp"
#include "journal.hpp"
#include "systemd.hpp"

namespace fusexx {

// What a keeper remembers of its servers' crashes. Plain data: systemd's fd
// store as the keeper keeps it in a memfd that outlives each server.
struct restart_history {
  std::uint32_t quick = 0;           // crashes in a row of servers that got nowhere
  std::uint32_t in_window = 0;       // crashes since window_start
  std::int64_t window_start_ms = 0;  // CLOCK_MONOTONIC
  // The store's keeper only (the fusexx keeper sees its servers): the
  // server started last — when, the journals' progress then, whether it
  // came to serve, and whether it left on purpose (SIGTERM) rather than died.
  std::int64_t started_ms = 0;
  std::uint64_t mark = 0;
  std::uint32_t served = 0;
  std::uint32_t left = 0;
  std::uint64_t checkpoint = 0;  // the generation of the one in the store
};

// What a supervised server gets from its keeper.
struct supervision {
  int sock = -1;                 // to the keeper
  int journals[2] = {-1, -1};    // the crash journal's two memfds (restart/journaling.hpp: one each side of a forked checkpoint)
  int device = -1;               // a restart: the connection
  int checkpoint = -1;           // a restart: the last checkpoint (a sealed snapshot)
  std::uint64_t generation = 0;  // of that checkpoint
  unsigned incarnation = 0;      // 0: the first server, which mounts
  // Sharing the keeper's fd table (keeper_options::share_fds): the fds that
  // were open when this server started and are not the keeper's — those of
  // the servers before it. Once recovered, it closes those its filesystem
  // does not hold.
  std::vector<int> leftovers;
  // The keeper is systemd's fd store (restart/systemd.hpp): checkpoints go
  // there, not to `sock`, and `history` (a shared mapping of the store's
  // "fusexx-restarts" memfd) is where this server says it serves.
  bool fd_store = false;
  restart_history* history = nullptr;

  explicit operator bool() const noexcept { return sock >= 0 || fd_store; }
  bool recovering() const noexcept { return incarnation > 0; }
};

struct keeper_options {
  unsigned restarts = 5;                    // quick crashes in a row before giving up
  std::chrono::milliseconds stable{10000};  // a server that served this long did not crash "quickly"
  std::string mountpoint;                   // for the log
  std::uint64_t journal_capacity = journal::default_capacity;
  bool detach_stdio = false;                // a daemon: stdout and stderr to /dev/null once a server serves
  // Servers share the keeper's fd table (clone(CLONE_FILES)): what a
  // server opens stays open when it dies — the O_PATH fds and open files of
  // a filesystem recovered by redo (journal_note.hpp), with their offsets
  // and locks — and its successor finds each at the same number. Nothing
  // of the keeper's may then be closed by a server, nor a server's by the
  // keeper.
  bool share_fds = false;
  int given_to_first = -1;  // an fd the first server takes over and closes (the daemon's start-up channel)
};

namespace keeper {

// ---- when a keeper gives up ----

// The exit status of a keeper that gave up (the crash-on-every-start case):
// a unit says RestartPreventExitStatus=3, so that the service manager does
// not start the server once more on a connection that has ended.
inline constexpr int gave_up_status = 3;

inline std::int64_t monotonic_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

struct crash_verdict {
  bool give_up = false;
  std::string why;                   // the log line
  std::chrono::milliseconds pause{0};  // before the next start
};

// Counts a server's crash (`how`: "was killed by signal 9 (Killed)"). A
// `quick` one — before it served, or soon after without answering a
// request — counts towards `restarts` in a row, and is followed by a
// back-off (0.1 s doubling to 2 s). However much each server got done,
// more than 10 x `restarts` crashes within a minute is a loop (a request
// that kills every server that takes it, beside others that succeed):
// giving up then too.
inline crash_verdict count_crash(restart_history& h, bool quick, unsigned restarts, std::chrono::milliseconds stable,
                                 const std::string& mountpoint, const std::string& how) {
  const std::int64_t now_ms = monotonic_ms();
  if (h.in_window == 0 || now_ms - h.window_start_ms > 60'000) {
    h.window_start_ms = now_ms;
    h.in_window = 0;
  }
  ++h.in_window;
  h.quick = quick ? h.quick + 1 : 0;
  crash_verdict v;
  if (h.in_window > 10 * std::uint64_t{restarts}) {
    v.give_up = true;
    v.why = fmt::format("supervise: the server of {} {}: {} crashes within a minute: giving up. The connection is "
                        "ended: applications get ENOTCONN; unmount {} and start again",
                        mountpoint, how, h.in_window, mountpoint);
  } else if (h.quick > restarts) {
    v.give_up = true;
    v.why = fmt::format("supervise: the server of {} {}: {} crashes in a row, each within {} s of a start: giving up. "
                        "The connection is ended: applications get ENOTCONN; unmount {} and start again",
                        mountpoint, how, h.quick, stable.count() / 1000, mountpoint);
  } else {
    v.pause = std::min<std::chrono::milliseconds>(
        std::chrono::milliseconds(100) * (1u << std::min(h.quick > 0 ? h.quick - 1 : 0, 5u)), std::chrono::seconds(2));
    v.why = fmt::format("supervise: the server of {} {}; starting it again{}", mountpoint, how,
                        h.quick > 1 ? fmt::format(" in {} ms ({} crashes in a row)", v.pause.count(), h.quick)
                                    : std::string());
  }
  return v;
}

// ---- the server's side ----

// Tells the keeper this server serves.
inline result<void> tell_serving(const supervision& s) {
  if (s.fd_store) {
    if (s.history) s.history->served = 1;
    return {};
  }
  return handover::send(s.sock, {.what = handover::kind::serving, .pid = static_cast<std::uint32_t>(::getpid())});
}

// systemd's store as the keeper: the checkpoint (the first with the
// connection's fd) is stored under its generation, the manager has handled
// it once the barrier returns, and then the one before goes.
inline outcome<void> store_checkpoint(int memfd, std::uint64_t generation, int device, restart_history* history) {
  auto stored = device >= 0 ? systemd::store_fd(device, systemd::device_name) : outcome<bool>(true);
  if (stored && *stored) stored = systemd::store_fd(memfd, systemd::checkpoint_name(generation));
  if (stored && *stored) stored = systemd::barrier();
  if (!stored) return fail(stored.error().code.value(), "storing checkpoint {}: {}", generation, stored.error().message);
  if (!*stored) return fail(EIO, "storing checkpoint {}: no service manager ($NOTIFY_SOCKET)", generation);
  // The one before is the one stored last: generations may skip (see the
  // server's next_generation()).
  const std::uint64_t before = history ? history->checkpoint : generation - 1;
  if (history) history->checkpoint = generation;
  if (generation > 0 && before != generation) (void)systemd::remove_fd(systemd::checkpoint_name(before));
  return {};
}

// Hands the keeper a new checkpoint (the first with the connection's fd)
// and waits until it holds it: only then may the journal start over.
inline outcome<void> send_checkpoint(const supervision& s, int memfd, std::uint64_t generation, int device = -1) {
  if (s.fd_store) return store_checkpoint(memfd, generation, device, s.history);
  const int fds[] = {memfd, device};
  if (auto r = handover::send(s.sock, {.what = handover::kind::checkpoint, .count = static_cast<std::uint32_t>(generation)},
                              std::span<const int>(fds, device >= 0 ? 2 : 1));
      !r)
    return fail(r.error().value(), "sending the checkpoint to the keeper: {}", r.error().message());
  auto ack = handover::receive(s.sock, std::chrono::steady_clock::now() + std::chrono::seconds(5));
  if (!ack || ack->what != handover::kind::ack || ack->count != static_cast<std::uint32_t>(generation))
    return fail(EIO, "the keeper did not take checkpoint {}", generation);
  return {};
}

// ---- the keeper ----

namespace detail {
// The fds this process has open, in order.
inline std::vector<int> open_fds() {
  std::vector<int> fds;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return fds;
  while (dirent* e = ::readdir(d)) {
    int fd = -1;
    auto [p, ec] = std::from_chars(e->d_name, e->d_name + std::strlen(e->d_name), fd);
    if (ec == std::errc{} && *p == '\0' && fd != ::dirfd(d)) fds.push_back(fd);
  }
  ::closedir(d);
  std::sort(fds.begin(), fds.end());
  return fds;
}
// A child like fork()'s, sharing this process's fd table when `share`.
// The keeper is single-threaded, so nothing glibc's fork() would reset
// after it (locks held by other threads) needs resetting.
inline pid_t spawn(bool share) {
  if (!share) return ::fork();
  return static_cast<pid_t>(::syscall(SYS_clone, CLONE_FILES | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
}
inline std::string describe(int status) {
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  return fmt::format("exited with status {}", WEXITSTATUS(status));
}
inline int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }
}  // namespace detail

// Runs the keeper: starts `serve(supervision)` in a forked child (which
// returns the child's exit status), again after each crash. Returns the
// keeper's exit status. `first_forked` runs in the keeper once the first
// server is forked (the daemon's start-up report is that server's to make).
inline int run(const keeper_options& o, const std::function<int(const supervision&)>& serve,
               const std::function<void()>& first_forked = {}) {
  outcome<unique_fd> jfds[2] = {journal::create(o.journal_capacity), journal::create(o.journal_capacity)};
  for (auto& j : jfds)
    if (!j) {
      log::error("supervise: {}", j.error().message);
      return 1;
    }
  sigset_t handled, old;
  sigemptyset(&handled);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&handled, s);
  ::sigprocmask(SIG_BLOCK, &handled, &old);
  unique_fd signals(::signalfd(-1, &handled, SFD_CLOEXEC));
  // Whether a server got anywhere: one that answered a request before it
  // died was not crashing on start (each marks a journal's header once).
  const auto journal_mark = [&] { return journal::answered_in(jfds[0]->get()) + journal::answered_in(jfds[1]->get()); };
  unique_fd device, checkpoint;
  std::uint64_t generation = 0;
  unsigned incarnation = 0;
  restart_history history;
  using clock = std::chrono::steady_clock;
  // Sharing the fd table: the keeper's own fds, from before any server.
  std::vector<int> keepers;
  if (o.share_fds) {
    keepers = detail::open_fds();
    std::erase(keepers, o.given_to_first);
  }

  for (;;) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      log::error("supervise: socketpair: {}", std::strerror(errno));
      return 1;
    }
    unique_fd mine(sv[0]), theirs(sv[1]);
    const auto born = clock::now();
    const auto mark = journal_mark();
    const pid_t pid = detail::spawn(o.share_fds);
    if (pid < 0) {
      log::error("supervise: fork: {}", std::strerror(errno));
      return 1;
    }
    if (pid == 0) {
      supervision s{.sock = theirs.get(), .journals = {jfds[0]->get(), jfds[1]->get()}, .device = device.get(),
                    .checkpoint = checkpoint.get(), .generation = generation, .incarnation = incarnation, .leftovers = {}};
      if (o.share_fds) {
        // The keeper's fds are its own (closing one here closes it there);
        // whatever else is open was left by the servers before.
        std::vector<int> mine_too = keepers;
        for (int fd : {mine.get(), theirs.get(), device.get(), checkpoint.get()})
          if (fd >= 0) mine_too.push_back(fd);
        for (int fd : detail::open_fds())
          if (std::find(mine_too.begin(), mine_too.end(), fd) == mine_too.end()) s.leftovers.push_back(fd);
        (void)mine.release();
        (void)signals.release();
      } else {
        mine.reset();
        signals.reset();
      }
      ::sigprocmask(SIG_SETMASK, &old, nullptr);
      std::exit(serve(s));
    }
    // Shared, the server's end stays open until it has died (closing it
    // here would close it there).
    if (!o.share_fds) theirs.reset();
    if (incarnation == 0 && first_forked) first_forked();

    bool served = false, stopping = false, talking = true, alive = true;
    int status = 0;
    while (alive) {
      pollfd p[2] = {{talking ? mine.get() : -1, POLLIN, 0}, {signals.get(), POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        log::error("supervise: poll: {}", std::strerror(errno));
        return 1;
      }
      if (p[0].revents & POLLIN) {
        auto m = handover::receive(mine.get(), clock::now() + std::chrono::seconds(1));
        if (!m) {
          talking = false;  // the server is gone (or said nonsense): its exit comes as SIGCHLD
        } else if (m->what == handover::kind::serving) {
          served = true;
          // Under systemd (Type=notify) the keeper is the main process, the
          // only one the manager hears (NotifyAccess=main).
          if (incarnation == 0) (void)systemd::notify("READY=1");
          log::info("supervise: pid {} serves {}{}", pid, o.mountpoint, incarnation ? " (recovered)" : "");
          if (incarnation == 0 && o.detach_stdio) {
            unique_fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
            if (null) {
              ::dup2(null.get(), STDOUT_FILENO);
              ::dup2(null.get(), STDERR_FILENO);
            }
          }
        } else if (m->what == handover::kind::checkpoint && !m->fds.empty()) {
          if (!device && m->fds.size() > 1) device = std::move(m->fds[1]);
          checkpoint = std::move(m->fds[0]);
          generation = m->count;
          (void)handover::send(mine.get(), {.what = handover::kind::ack, .count = m->count});
        }
      } else if (p[0].revents & (POLLHUP | POLLERR)) {
        talking = false;
      }
      if (p[1].revents & POLLIN) {
        signalfd_siginfo info{};
        if (::read(signals.get(), &info, sizeof info) != sizeof info) continue;
        if (info.ssi_signo == SIGCHLD) {
          if (::waitpid(pid, &status, WNOHANG) == pid) alive = false;
        } else {
          stopping = true;  // the server unmounts; its status is the keeper's
          (void)systemd::notify("STOPPING=1");
          ::kill(pid, static_cast<int>(info.ssi_signo));
        }
      }
    }
    const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (stopping && WIFSIGNALED(status)) {
      // Asked to stop, it died on the way (the unmount's FORGETs are
      // requests too): the stop is finished here, no mount left behind.
      log::warn("supervise: the server of {} {} while stopping: the keeper unmounts it", o.mountpoint,
                detail::describe(status));
      if (::umount2(o.mountpoint.c_str(), MNT_DETACH) != 0 && errno != EINVAL)
        log::error("supervise: unmounting {}: {}", o.mountpoint, std::strerror(errno));
      return 0;
    }
    if (clean || stopping) return detail::exit_code(status);
    // The first server failed to start, and said so (exited, not killed).
    if (incarnation == 0 && !served && !WIFSIGNALED(status)) return detail::exit_code(status);
    if (!device || !checkpoint) {
      log::error("supervise: the server of {} {} before its first checkpoint: nothing to recover from; the mount is "
                 "left without a server (applications get ENOTCONN)", o.mountpoint, detail::describe(status));
      return 1;
    }
    // A crash "on start": before serving, or soon after without having
    // answered a single request. Only those count towards giving up, and
    // only those wait before the next start.
    const bool quick_crash = !served || (clock::now() - born < o.stable && journal_mark() == mark);
    const crash_verdict v = count_crash(history, quick_crash, o.restarts, o.stable, o.mountpoint, detail::describe(status));
    if (v.give_up) {
      log::error("{}", v.why);
      device.reset();  // the last holder: the kernel aborts the connection
      return gave_up_status;
    }
    log::warn("{}", v.why);
    const auto pause = v.pause;
    const unsigned quick = history.quick;
    if (quick > 1) {
      // The back-off, awake to a stop signal: then nobody will serve the
      // mount again, so the connection ends (ENOTCONN) with the keeper.
      const auto until = clock::now() + pause;
      for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now()).count();
        if (left <= 0) break;
        pollfd p{signals.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left)) > 0) {
          signalfd_siginfo info{};
          if (::read(signals.get(), &info, sizeof info) == sizeof info && info.ssi_signo != SIGCHLD) {
            log::warn("supervise: signal {} while no server runs: {} is unmounted", info.ssi_signo, o.mountpoint);
            if (::umount2(o.mountpoint.c_str(), MNT_DETACH) != 0)
              log::error("supervise: unmounting {}: {}; the mount is left without a server (ENOTCONN)", o.mountpoint,
                         std::strerror(errno));
            return 0;
          }
        }
      }
    }
    ++incarnation;
  }
}

}  // namespace keeper
}  // namespace fusexx
