#pragma once
// fusexx::main<Fs>(argc, argv): the command line every FUSE server has.
//   PROG [-f] [-d] [-s] [-o opt[,opt...]] [SOURCE] MOUNTPOINT
// SOURCE is what mount(8) and /etc/fstab put first: `mount -t fuse.NAME SOURCE
// MOUNTPOINT` runs mount.fuse3, which runs `NAME SOURCE MOUNTPOINT -o OPTS`
// (libfuse util/mount.fuse.c, commit e8d407ce; docs/fstab.md). A filesystem
// that wants a source takes it through a `use_source(std::string_view)`
// member (passthrough: the directory to mirror); for every filesystem the
// source is also the mount's fsname, unless -o fsname= names another.
// Mount options (fsname=, subtype=, allow_other, default_permissions, ro,
// max_read=, rootmode=, user_id=, group_id=, ...), threads=N, and whatever the
// filesystem itself accepts through an `option(key, value)` member; a static
// `configure_mount(mount_options&)` member then has the last word on the
// mount options (memfs insists on default_permissions that way).
// Without -f it daemonizes, and returns only when the filesystem is mounted
// and ready, or fails with the reason. SIGINT, SIGTERM and SIGHUP unmount —
// except SIGTERM to a server whose connection is in a service manager's fd
// store: it leaves the mount to the store (docs/restart.md, "The systemd way").
#include <signal.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "daemonize.hpp"
#include "event_loop.hpp"
#include "failure.hpp"
#include "filesystem.hpp"
#include "log.hpp"
#include "server.hpp"
#include "version.hpp"

namespace fusexx {

struct command_line {
  server_options server;
  daemon_options daemon;
  bool debug = false;
  bool help = false;
  bool show_version = false;
  bool takeover = false;  // --takeover: continue the mount's running server instead of mounting
  bool transport_given = false;  // -o transport= (not only $FUSEXX_TRANSPORT)
  bool huge_pages_given = false;  // -o huge_pages=: the user's choice, which a filesystem's own default leaves alone
  bool supervise = false; // -o supervise: a keeper restarts the server after a crash (restart/keeper.hpp)
  keeper_options keeper;
};

// Filesystems may take their own -o options: `outcome<bool> option(key, value)`
// returns true when it used the option, false when it is not one of its own.
template <class Fs>
concept has_options = requires(Fs& fs, std::string_view k, std::optional<std::string_view> v) {
  { fs.option(k, v) } -> std::same_as<outcome<bool>>;
};
// Filesystems may also have their say over the mount options: a static
// `configure_mount(mount_options&)` runs after the command line was read
// (so it can insist on an option, or fill in a default only where the
// command line left one empty).
template <class Fs>
concept has_mount_configuration = requires(mount_options& m) { Fs::configure_mount(m); };
// Filesystems may take the SOURCE argument (`PROG SOURCE MOUNTPOINT`, what
// mount(8) and /etc/fstab pass): `outcome<void> use_source(std::string_view)`
// is called once the whole command line was read (so after the filesystem's
// own -o options), and may refuse it. Without the member the source only
// names the mount (fsname).
template <class Fs>
concept takes_source = requires(Fs& fs, std::string_view source) {
  { fs.use_source(source) } -> std::same_as<outcome<void>>;
};
template <class Fs>
concept has_usage = requires { { Fs::usage } -> std::convertible_to<std::string_view>; };

template <class Fs>
outcome<command_line> parse_command_line(Fs& fs, int argc, char** argv) {
  command_line cl;
  const std::string prog = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : "fusexx";
  auto apply = [&](std::string_view list) -> outcome<void> {
    for (auto& [key, value] : split_options(list)) {
      std::optional<std::string_view> v;
      if (value) v = *value;
      auto known = cl.server.mount.apply(key, v);
      if (!known) return std::unexpected(known.error());
      if (*known) continue;
      if (key == "pid_file") {
        if (!v || v->empty()) return fail(EINVAL, "option pid_file= needs a path");
        cl.daemon.pid_file = std::filesystem::absolute(std::string(*v)).string();
        continue;
      }
      if (key == "keep_stdio" || key == "keep_cwd") {
        if (v) return fail(EINVAL, "option '{}' takes no value", key);
        (key == "keep_stdio" ? cl.daemon.keep_stdio : cl.daemon.keep_cwd) = true;
        continue;
      }
      if (key == "init_timeout_ms") {
        auto n = v ? detail::parse_number<unsigned>(*v) : std::nullopt;
        if (!n || *n == 0) return fail(EINVAL, "option init_timeout_ms= needs a positive number");
        cl.server.init_timeout = std::chrono::milliseconds(*n);
        continue;
      }
      if (key == "transport") {
        auto t = v ? parse_transport(*v) : std::nullopt;
        if (!t) return fail(EINVAL, "option transport= takes auto, classic or uring");
        cl.server.transport = *t;
        cl.transport_given = true;
        continue;
      }
      if (key == "queue_depth") {
        auto n = v ? detail::parse_number<unsigned>(*v) : std::nullopt;
        if (!n || *n == 0 || *n > 1024) return fail(EINVAL, "option queue_depth= takes 1 to 1024");
        cl.server.uring.queue_depth = *n;
        continue;
      }
      if (key == "huge_pages") {
        if (v && *v != "on" && *v != "off") return fail(EINVAL, "option huge_pages= takes on or off");
        cl.server.uring.huge_pages = !v || *v == "on";
        cl.huge_pages_given = true;
        continue;
      }
      if (key == "async_init") {
        if (v) return fail(EINVAL, "option 'async_init' takes no value");
        cl.server.mount.sync_init = false;
        continue;
      }
      if (key == "stats") {
        if (v && *v != "on" && *v != "off") return fail(EINVAL, "option stats= takes on or off");
        cl.server.stats = !v || *v == "on";
        continue;
      }
      if (key == "supervise") {
        if (v) return fail(EINVAL, "option 'supervise' takes no value");
        cl.supervise = true;
        continue;
      }
      if (key == "supervise_restarts") {
        auto n = v ? detail::parse_number<unsigned>(*v) : std::nullopt;
        if (!n || *n == 0 || *n > 1000000) return fail(EINVAL, "option supervise_restarts= takes 1 to 1000000");
        cl.keeper.restarts = *n;
        continue;
      }
      if (key == "checkpoint_kb") {
        auto n = v ? detail::parse_number<unsigned>(*v) : std::nullopt;
        if (!n || *n < 64 || *n > (1u << 20)) return fail(EINVAL, "option checkpoint_kb= takes 64 to 1048576");
        cl.server.checkpoint_bytes = std::uint64_t{*n} << 10;
        continue;
      }
      if (key == "journal_idle_s") {
        auto n = v ? detail::parse_number<unsigned>(*v) : std::nullopt;
        if (!n || *n == 0 || *n > 86400) return fail(EINVAL, "option journal_idle_s= takes 1 to 86400");
        cl.server.journal_idle = std::chrono::seconds(*n);
        continue;
      }
      if (key == "threads") {
        auto n = v ? detail::parse_number<unsigned>(*v) : std::nullopt;
        if (!n || *n == 0) return fail(EINVAL, "option threads= needs a positive number");
        cl.server.classic.threads = *n;
        continue;
      }
      if constexpr (has_options<Fs>) {
        auto mine = fs.option(key, v);
        if (!mine) return std::unexpected(mine.error());
        if (*mine) continue;
      }
      return fail(EINVAL, "unknown option '{}' (see {} -h)", key, prog);
    }
    return {};
  };
  // The default transport may come from the environment (for service
  // managers and tests); -o transport= still wins.
  if (const char* env = std::getenv("FUSEXX_TRANSPORT"); env && *env) {
    auto t = parse_transport(env);
    if (!t) return fail(EINVAL, "FUSEXX_TRANSPORT={} is not auto, classic or uring", env);
    cl.server.transport = *t;
  }
  std::vector<std::string> positional;  // [SOURCE] MOUNTPOINT
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") cl.help = true;
    else if (a == "-V" || a == "--version") cl.show_version = true;
    else if (a == "-f") cl.daemon.foreground = true;
    else if (a == "-d" || a == "-odebug") cl.debug = cl.daemon.foreground = true;
    else if (a == "-s") cl.server.classic.threads = 1;
    else if (a == "--takeover") cl.takeover = true;
    else if (a == "-o") {
      if (++i >= argc) return fail(EINVAL, "-o needs a list of options");
      if (auto r = apply(argv[i]); !r) return std::unexpected(r.error());
    } else if (a.starts_with("-o")) {
      if (auto r = apply(a.substr(2)); !r) return std::unexpected(r.error());
    } else if (a.starts_with("-") && a.size() > 1) {
      return fail(EINVAL, "unknown argument '{}' (see {} -h)", a, prog);
    } else if (positional.size() < 2) {
      positional.emplace_back(a);
    } else {
      return fail(EINVAL, "too many arguments: '{}' (at most SOURCE and MOUNTPOINT; see {} -h)", a, prog);
    }
  }
  if (!cl.help && !cl.show_version && positional.empty()) return fail(EINVAL, "no mountpoint given (see {} -h)", prog);
  std::optional<std::string> source, mountpoint;
  if (!positional.empty()) mountpoint = positional.back();
  // An empty argument is no mountpoint: std::filesystem::absolute refuses
  // it, and the mount would then be tried at "" (found by
  // tests/fuzz/mount_options).
  if (mountpoint && mountpoint->empty()) return fail(EINVAL, "the mountpoint is empty (see {} -h)", prog);
  if (positional.size() == 2) source = positional.front();
  if (source) {
    if (source->empty()) return fail(EINVAL, "the source is empty (see {} -h)", prog);
    if constexpr (takes_source<Fs>) {
      if (auto r = fs.use_source(*source); !r) return std::unexpected(r.error());
    }
    // The source names the mount (df, /proc/self/mountinfo), as with any
    // filesystem mount(8) mounts; -o fsname= still wins.
    if (cl.server.mount.fsname.empty()) cl.server.mount.fsname = *source;
  }
  if (mountpoint) {
    std::error_code ec;
    auto abs = std::filesystem::absolute(*mountpoint, ec);  // a daemon chdirs to /
    cl.server.mount.mountpoint = ec ? *mountpoint : abs.lexically_normal().string();
    // Every trailing '/': lexically_normal leaves "///" as it is (libstdc++
    // 12), and mountinfo spells that mountpoint "/" (found by
    // tests/fuzz/mount_options).
    while (cl.server.mount.mountpoint.size() > 1 && cl.server.mount.mountpoint.ends_with('/'))
      cl.server.mount.mountpoint.pop_back();
  }
  if constexpr (has_mount_configuration<Fs>) Fs::configure_mount(cl.server.mount);
  if (cl.server.mount.subtype.empty()) cl.server.mount.subtype = prog;
  if (cl.server.mount.fsname.empty()) cl.server.mount.fsname = prog;
  return cl;
}

template <class Fs>
void print_usage(const char* argv0) {
  std::printf(
      "usage: %s [options] [SOURCE] MOUNTPOINT\n\n"
      "  SOURCE                what mount(8) and /etc/fstab pass first: the mount's name\n"
      "                        (fsname), or what the filesystem mounts (see below)\n"
      "  -h, --help            this text\n"
      "  -V, --version         print the fusexx version\n"
      "  -f                    stay in the foreground\n"
      "  -d                    log every request (implies -f)\n"
      "  -s                    serve with one thread\n"
      "  --takeover            take MOUNTPOINT over from the server running it, live (a\n"
      "                        restartable filesystem: docs/restart.md); returns once this\n"
      "                        process serves, or fails and the running server serves on\n"
      "  -o opt[,opt...]       options:\n"
      "     allow_other, default_permissions, ro, rw, nosuid/suid, nodev/dev, noexec/exec,\n"
      "     noatime, sync, dirsync, fsname=NAME, subtype=NAME, max_read=N, rootmode=M,\n"
      "     user_id=N, group_id=N, blkdev (type fuseblk on the block device fsname= names;\n"
      "     root only), blksize=N (fuseblk's block size), auto_unmount (unmount should\n"
      "     this server die without unmounting: docs/lifecycle.md)\n"
      "     accepted and ignored, as mount(8), mount.fuse3 and systemd pass them: defaults,\n"
      "     auto, noauto, user, nouser, users, user=NAME, nofail, _netdev, x-* (x-systemd.*)\n"
      "  fusexx's own -o options:\n"
      "     transport=T        auto (io_uring where available), classic or uring;\n"
      "                        the default comes from $FUSEXX_TRANSPORT, else auto\n"
      "     queue_depth=N      io_uring: requests in flight per CPU (default 8)\n"
      "     huge_pages=on|off  io_uring: the entries' buffers in 2 MiB pages, where this\n"
      "                        process may mount a tmpfs (root): for O_DIRECT to a disk\n"
      "                        (default off; passthrough: on when its source is on a disk)\n"
      "     threads=N          classic: worker threads (default: one per CPU, at least 2)\n"
      "     init_timeout_ms=N  fail the mount if init() takes longer (default 30000)\n"
      "     stats=on|off       count requests per opcode for fusexx-ctl (default on)\n"
      "     async_init         do not use synchronous INIT\n"
      "     pid_file=PATH      write the daemon's pid here once it serves\n"
      "     keep_stdio         keep stdout/stderr open in the background (systemd)\n"
      "     keep_cwd           do not change to / in the background\n"
      "     supervise          a keeper process restarts the server should it crash; applications\n"
      "                        with open files carry on (a crash_safe filesystem; /dev/fuse\n"
      "                        transport; docs/restart.md, \"Crash recovery\")\n"
      "     supervise_restarts=N  give up after N crashes in a row within 10 s of a start (5)\n"
      "     checkpoint_kb=N    supervised: checkpoint once the crash journal holds N KiB (1024;\n"
      "                        more for a big tree: twice its snapshot)\n"
      "     journal_idle_s=N   supervised: the crash journal keeps its memory across checkpoints,\n"
      "                        and gives what its records do not use back after N s without one (10)\n",
      argv0);
  if constexpr (has_usage<Fs>) std::printf("\n%s", std::string(Fs::usage).c_str());
}

// A start by the service manager with the connection in its fd store
// (docs/restart.md, "The systemd way"): the offer the stored fds make,
// nullopt when there are none, or why they cannot be used. Entries fusexx
// does not know are closed and removed from the store (FILE_DESCRIPTOR_STORE.md
// recommends it: an fd an older version left must not pile up).
inline outcome<std::optional<handover::offer>> offer_from_fd_store() {
  auto fds = systemd::listen_fds();
  if (!fds) return std::unexpected(fds.error());
  unique_fd device = systemd::take(*fds, systemd::device_name);
  unique_fd snapshot = systemd::take(*fds, systemd::snapshot_name);
  std::vector<unique_fd> beside = systemd::take_snapshot_fds(*fds);
  for (auto& f : *fds)
    if (f.fd) {
      log::warn("the fd store holds '{}', which fusexx does not know: removed", f.name);
      if (systemd::valid_fd_name(f.name)) (void)systemd::remove_fd(f.name);
    }
  if (!device && !snapshot) {
    systemd::remove_snapshot_fds(beside.size());  // left from a leave that did not finish
    return std::nullopt;
  }
  if (!device) return fail(EBADMSG, "the fd store holds a snapshot but no connection ('{}')", systemd::device_name);
  if (!snapshot)
    return fail(EBADMSG, "the fd store holds the connection but no snapshot ('{}'): the previous process did not "
                "end through SIGTERM (it crashed or was killed), or FileDescriptorStoreMax= is below 2",
                systemd::snapshot_name);
  return handover::offer{.sock = {}, .pid = 0, .device = std::move(device), .snapshot = std::move(snapshot),
                         .listener = {}, .entries = {}, .snapshot_fds = std::move(beside)};
}

// After the stored connection could not be continued: the store must not
// keep a connection nobody serves (applications would wait on it for ever),
// nor a snapshot that would be tried again. Once this process exits the
// connection is aborted: its mount is left dead (ENOTCONN) until unmounted.
inline void forget_fd_store(const std::string& mountpoint, std::size_t snapshot_fds) {
  (void)systemd::remove_fd(systemd::device_name);
  (void)systemd::remove_fd(systemd::snapshot_name);
  systemd::remove_snapshot_fds(snapshot_fds);
  log::error("the mount at {} is left without a server: applications get ENOTCONN; unmount it (umount {}) and "
             "start the service again", mountpoint, mountpoint);
}

// The whole life of a server, as one coroutine on the main thread's event
// loop: start (mount, INIT answered | deadline | cancelled), tell the daemon's
// parent, then serve until a stop signal | the filesystem unmounted from
// outside, then stop (in-flight handlers awaited, destroy()). Returns the
// exit status.
template <filesystem Fs>
task<int> serve(event_loop& loop, server<Fs>& srv, daemon_guard& guard, int signals, bool takeover,
                bool recovering = false) {
  const std::stop_token parent_gone = guard.stopped();
  result<outcome<void>> started = outcome<void>{};
  bool from_store = false;
  std::size_t stored_fds = 0;  // beside the stored snapshot
  if (srv.supervised()) {
    if (recovering) {
      started = co_await srv.recover_async(loop);
    } else {
      started = co_await srv.start_async(loop, parent_gone);
      if (started && *started) {
        // The first checkpoint and the keeper told: only then is a crash
        // recoverable, so only then does start-up count as done.
        result<outcome<void>> begun = co_await srv.begin_supervised_async(loop);
        if (!begun || !*begun) {
          co_await srv.stop_async(loop);
          started = std::move(begun);
        }
      }
    }
  } else if constexpr (restartable<Fs>) {
    auto stored = offer_from_fd_store();
    if (!stored) {
      started = outcome<void>(std::unexpected(stored.error()));
      if (stored.error().code.value() == EBADMSG) forget_fd_store(srv.mountpoint(), 0);
    } else if (*stored) {
      from_store = true;
      stored_fds = (*stored)->snapshot_fds.size();
      started = co_await srv.take_over_async(loop, std::move(**stored));
      if (!started || !*started) forget_fd_store(srv.mountpoint(), stored_fds);
    } else if (takeover) {
      started = co_await srv.take_over_async(loop);
    } else {
      started = co_await srv.start_async(loop, parent_gone);
    }
  } else {
    started = co_await srv.start_async(loop, parent_gone);
  }
  if (!started || !*started) {
    const failure f = started ? started->error() : failure{started.error(), started.error().message()};
    if (guard.background()) guard.report(f);
    else std::fprintf(stderr, "fusexx: %s\n", f.message.c_str());
    co_return f.code.value() > 0 && f.code.value() < 256 ? f.code.value() : 1;
  }
  guard.commit();
  log::info("serving {}", srv.mountpoint());
  if (from_store) {
    // The connection is in the store already; the snapshot just restored
    // must never be restored again (after a crash, say).
    srv.mark_in_fd_store();
    (void)systemd::remove_fd(systemd::snapshot_name);
    systemd::remove_snapshot_fds(stored_fds);
  } else if (srv.supervised() && srv.kept_by_fd_store()) {
    srv.mark_in_fd_store();  // its first checkpoint stored the connection
  } else if (auto pushed = srv.push_to_fd_store(); !pushed) {
    log::warn("the connection was not put in the fd store: {}", pushed.error().message);
  }
  // Type=notify: serving. A fusexx keeper's server is not the main process,
  // which alone the manager hears: its keeper says it instead.
  if (!srv.supervised() || srv.kept_by_fd_store()) (void)systemd::notify("READY=1");

  // Serve until a stop signal, an unmount from outside, or a successor that
  // takes the connection over (the control socket).
  for (;;) {
    // (An fd of -1, where there is no control socket or no journal, is never ready.)
    const int which = co_await loop.first_ready(signals, srv.ended_fd(), srv.control_fd(), srv.checkpoint_fd(),
                                                srv.checkpoint_child_fd(), srv.journal_quiet_fd());
    if (which == 5) {
      srv.give_back_journal_memory();
      continue;
    }
    if (which == 3) {
      co_await srv.checkpoint_async(loop);
      continue;
    }
    if (which == 4) {
      srv.checkpoint_child_ended();
      continue;
    }
    if (which == 2) {
      // handed over: leave, the mount lives on
      if (auto handed = co_await srv.serve_control_async(loop); handed && *handed) co_return 0;
      continue;
    }
    if (which == 0) {
      signalfd_siginfo info{};
      if (::read(signals, &info, sizeof info) == sizeof info) {
        // The service manager stops or restarts the service: the mount lives
        // on in its fd store, for the next start (or ends with the store).
        if (info.ssi_signo == SIGTERM && srv.in_fd_store()) {
          (void)systemd::notify("STOPPING=1");
          if (srv.supervised()) {  // the store is the keeper: the next start recovers
            co_await srv.leave_supervised_async(loop);
            co_return 0;
          }
          if (auto left = co_await srv.leave_to_fd_store_async(loop); left && *left) co_return 0;
        }
        log::info("signal {}: unmounting {}", info.ssi_signo, srv.mountpoint());
      }
    }
    break;
  }
  co_await srv.stop_async(loop);
  // The mount is gone: the store must not keep its dead connection.
  if (srv.in_fd_store() && !srv.supervised()) (void)systemd::remove_fd(systemd::device_name);
  co_return 0;
}

// One server process: serves until unmounted, signalled or handed over;
// supervised (`sup`), as one of its keeper's servers.
template <filesystem Fs>
int serve_process(Fs& fs, const command_line& cl, daemon_guard& guard, const supervision* sup) {
  // Block the stop signals before any thread exists, so every thread inherits
  // the mask and only the signalfd below sees them.
  sigset_t stop_signals = transport::worker_signal_mask();
  sigdelset(&stop_signals, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  unique_fd signals(::signalfd(-1, &stop_signals, SFD_CLOEXEC));

  server<Fs> srv(fs, cl.server);
  if (sup)
    if (auto r = srv.supervise(*sup); !r) {
      if (guard.background()) guard.report(r.error());
      else std::fprintf(stderr, "fusexx: %s\n", r.error().message.c_str());
      return 1;
    }
  event_loop loop;
  const int code =
      loop.run(serve(loop, srv, guard, signals.get(), cl.takeover, sup && sup->recovering())).value_or(1);
  // A handler that never returned (a hung init()) cannot be joined; nothing
  // is mounted any more, so leave without waiting for it.
  if (srv.has_stuck_workers()) std::_Exit(code);
  // Handed over (to a successor, or to the fd store): handlers that were
  // suspended (a lock request waiting) were left behind on purpose — their
  // requests went to the successor — and must not run now, not even their
  // destructors. Leave at once.
  if (srv.handed_over()) std::_Exit(code);
  return code;
}

// Serves `fs` under a keeper (-o supervise): the keeper is this process (the
// daemon, without -f); each server is a child it forks, again after a crash.
template <filesystem Fs>
int run_supervised(Fs& fs, const command_line& cl) {
  // Forks (when not in the foreground) before any thread exists, and starts
  // none: the keeper forks its servers.
  auto guard = daemon_guard::start(cl.daemon, /*watch=*/false);
  if (!guard) {
    std::fprintf(stderr, "fusexx: %s\n", guard.error().message.c_str());
    return 1;
  }
  keeper_options o = cl.keeper;
  o.mountpoint = cl.server.mount.mountpoint;
  o.detach_stdio = !cl.daemon.foreground && !cl.daemon.keep_stdio;
  // A filesystem rebuilt by redo keeps its open files in the fd table its
  // servers share with the keeper (journal_note.hpp).
  o.share_fds = recovery_of<Fs>() == recovery_model::redo;
  if (o.share_fds) o.given_to_first = guard->channel_fd();
  const int status = keeper::run(
      o,
      [&](const supervision& s) {
        if (s.incarnation == 0) {
          // The first server makes the start-up report, and names the keeper
          // in the pid file: the process that lives as long as the mount.
          guard->watch_parent();
          guard->report_pid(::getppid());
          return serve_process(fs, cl, *guard, &s);
        }
        daemon_options in_foreground;
        in_foreground.foreground = true;  // the keeper reported start-up long ago
        auto quiet = daemon_guard::start(in_foreground);
        return serve_process(fs, cl, *quiet, &s);
      },
      [&] { guard->detach(o.share_fds); });
  // The pid file names the keeper (its first server wrote it): gone with
  // the keeper, whichever server was the last.
  if (!cl.daemon.pid_file.empty()) {
    std::ifstream in(cl.daemon.pid_file);
    pid_t named = -1;
    std::error_code ignored;
    if (in >> named && named == ::getpid()) std::filesystem::remove(cl.daemon.pid_file, ignored);
  }
  return status;
}

// -o supervise with systemd's fd store as the keeper (docs/restart.md,
// "systemd as the keeper"): this process is the server, and the unit's store
// holds what must outlive it — the connection, the two crash journals, the
// last checkpoint and the restart history. After a crash the service manager
// (Restart=on-failure) starts this program again with them, and it recovers
// as a fusexx keeper's successor does. A start with nothing stored mounts.
namespace detail {
// Everything the store holds for a supervised mount, named.
struct stored_supervision {
  unique_fd device, journals[2], restarts, checkpoint;
  std::uint64_t generation = 0;
  std::vector<std::string> stale;  // older checkpoints, and entries fusexx does not know
};
inline outcome<stored_supervision> take_stored_supervision() {
  auto fds = systemd::listen_fds();
  if (!fds) return std::unexpected(fds.error());
  stored_supervision out;
  out.device = systemd::take(*fds, systemd::device_name);
  for (unsigned i = 0; i < 2; ++i) out.journals[i] = systemd::take(*fds, systemd::journal_name(i));
  out.restarts = systemd::take(*fds, systemd::restarts_name);
  for (auto& f : *fds) {
    if (!f.fd) continue;
    std::uint64_t g = 0;
    const std::string_view digits = std::string_view(f.name).substr(
        f.name.starts_with(systemd::checkpoint_prefix) ? systemd::checkpoint_prefix.size() : f.name.size());
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), g);
    if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size()) {
      log::warn("the fd store holds '{}', which a supervised fusexx server does not use: removed", f.name);
      out.stale.push_back(f.name);
    } else if (!out.checkpoint || g > out.generation) {
      if (out.checkpoint) out.stale.push_back(systemd::checkpoint_name(out.generation));
      out.checkpoint = std::move(f.fd);
      out.generation = g;
    } else {
      out.stale.push_back(f.name);
    }
  }
  for (const auto& name : out.stale)
    if (systemd::valid_fd_name(name)) (void)systemd::remove_fd(name);
  return out;
}
// The store keeps nothing of a supervised mount any more: once this process
// exits, the connection (if any is left) is aborted.
inline void forget_stored_supervision(const restart_history* h) {
  (void)systemd::remove_fd(systemd::device_name);
  for (unsigned i = 0; i < 2; ++i) (void)systemd::remove_fd(systemd::journal_name(i));
  if (h) {
    (void)systemd::remove_fd(systemd::checkpoint_name(h->checkpoint));
    if (h->checkpoint > 0) (void)systemd::remove_fd(systemd::checkpoint_name(h->checkpoint - 1));
  }
  (void)systemd::remove_fd(systemd::restarts_name);
}
}  // namespace detail

inline constexpr unsigned min_store_for_supervise = 6;

template <filesystem Fs>
int run_supervised_by_store(Fs& fs, const command_line& cl) {
  const std::string& mp = cl.server.mount.mountpoint;
  const auto refuse = [&](int code, const std::string& why) {
    std::fprintf(stderr, "fusexx: %s\n", why.c_str());
    return code;
  };
  auto stored = detail::take_stored_supervision();
  if (!stored) return refuse(1, stored.error().message);
  const bool recovering = static_cast<bool>(stored->device);
  if (recovering && (!stored->journals[0] || !stored->journals[1] || !stored->checkpoint || !stored->restarts)) {
    detail::forget_stored_supervision(nullptr);
    if (stored->checkpoint) (void)systemd::remove_fd(systemd::checkpoint_name(stored->generation));
    return refuse(keeper::gave_up_status,
                  fmt::format("the fd store holds the connection of {} but not {}: it was not served with -o supervise "
                              "(or FileDescriptorStoreMax= was lowered), and cannot be recovered. Applications get "
                              "ENOTCONN; unmount {} and start again",
                              mp, !stored->checkpoint ? "a checkpoint" : !stored->restarts ? "the restart history"
                                                                                         : "both crash journals",
                              mp));
  }
  if (!recovering) {
    // A fresh mount: whatever a supervised mount before left goes.
    if (stored->checkpoint) (void)systemd::remove_fd(systemd::checkpoint_name(stored->generation));
    detail::forget_stored_supervision(nullptr);
    for (unsigned i = 0; i < 2; ++i) {
      auto j = journal::create(cl.keeper.journal_capacity);
      if (!j) return refuse(1, "supervise: " + j.error().message);
      stored->journals[i] = std::move(*j);
    }
    stored->restarts = unique_fd(::memfd_create("fusexx-restarts", MFD_CLOEXEC));
    if (!stored->restarts || ::ftruncate(stored->restarts.get(), sizeof(restart_history)) != 0)
      return refuse(1, fmt::format("supervise: the restart history: {}", std::strerror(errno)));
    auto kept = systemd::store_fd(stored->journals[0].get(), systemd::journal_name(0));
    if (kept && *kept) kept = systemd::store_fd(stored->journals[1].get(), systemd::journal_name(1));
    if (kept && *kept) kept = systemd::store_fd(stored->restarts.get(), systemd::restarts_name);
    if (kept && *kept) kept = systemd::barrier();
    if (!kept || !*kept) {
      detail::forget_stored_supervision(nullptr);
      return refuse(1, "supervise: the fd store did not take the crash journals: " +
                           (kept ? std::string("no service manager") : kept.error().message));
    }
  }
  void* mapped = ::mmap(nullptr, sizeof(restart_history), PROT_READ | PROT_WRITE, MAP_SHARED, stored->restarts.get(), 0);
  struct stat st {};
  if (mapped == MAP_FAILED || ::fstat(stored->restarts.get(), &st) != 0 ||
      static_cast<std::size_t>(st.st_size) < sizeof(restart_history)) {
    detail::forget_stored_supervision(nullptr);
    return refuse(keeper::gave_up_status, fmt::format("supervise: the stored restart history of {} is unusable", mp));
  }
  restart_history& history = *static_cast<restart_history*>(mapped);
  const auto journal_mark = [&] {
    return journal::answered_in(stored->journals[0].get()) + journal::answered_in(stored->journals[1].get());
  };
  keeper_options o = cl.keeper;
  if (recovering) history.checkpoint = stored->generation;  // the one recovered from: removed should it give up
  if (recovering && history.left) {
    log::info("supervise: continuing {} (its server before left on SIGTERM)", mp);
  } else if (recovering) {
    // The server before died: counted as the fusexx keeper counts it.
    const bool quick = !history.served ||
                       (keeper::monotonic_ms() - history.started_ms < o.stable.count() && journal_mark() == history.mark);
    const keeper::crash_verdict v = keeper::count_crash(history, quick, o.restarts, o.stable, mp, "died (killed or crashed)");
    if (v.give_up) {
      log::error("{}", v.why);
      detail::forget_stored_supervision(&history);
      return keeper::gave_up_status;
    }
    log::warn("{}", v.why);
    if (history.quick > 1) std::this_thread::sleep_for(v.pause);
  }
  history.started_ms = keeper::monotonic_ms();
  history.mark = journal_mark();
  history.served = 0;
  history.left = 0;

  supervision s{.sock = -1, .journals = {stored->journals[0].get(), stored->journals[1].get()},
                .device = stored->device.get(), .checkpoint = stored->checkpoint.get(),
                .generation = stored->generation, .incarnation = recovering ? 1u : 0u, .leftovers = {},
                .fd_store = true, .history = &history};
  auto guard = daemon_guard::start(cl.daemon);
  if (!guard) return refuse(1, guard.error().message);
  const int code = serve_process(fs, cl, *guard, &s);
  // Here only when it did not leave to the store: unmounted, stopped, or a
  // start that failed. The store must not keep a connection nobody will
  // serve; a recovery that failed must not be tried again.
  detail::forget_stored_supervision(&history);
  if (recovering && code != 0) {
    log::error("supervise: {} could not be recovered: applications get ENOTCONN; unmount {} and start again", mp, mp);
    return keeper::gave_up_status;
  }
  return code;
}

// Serves `fs` at the command line's mountpoint until unmounted or signalled.
template <filesystem Fs>
int run(Fs& fs, const command_line& given) {
  if (given.debug) log::set_level(log::level::debug);
  if (given.supervise) {
    const char* why = nullptr;
    if constexpr (!crash_safe<Fs>)
      why = "this filesystem does not support crash recovery (it does not declare crash_safe; docs/restart.md)";
    if (given.takeover) why = "--takeover and -o supervise do not go together: a supervised mount's keeper restarts it";
    if (given.transport_given && given.server.transport == transport_kind::uring)
      why = "-o supervise serves through /dev/fuse: this kernel cannot resend the requests an io_uring entry holds "
            "when its server dies (docs/restart.md, \"Crash recovery\"); leave transport= out or say classic";
    if (why) {
      std::fprintf(stderr, "fusexx: %s\n", why);
      return 2;
    }
    if constexpr (crash_safe<Fs>) {
      command_line cl = given;
      cl.server.transport = transport_kind::classic;
      // Under a service manager with a store, the store is the keeper.
      if (const unsigned store = systemd::fd_store_max(); store > 0) {
        if constexpr (recovery_of<Fs>() == recovery_model::redo) {
          std::fprintf(stderr, "fusexx: -o supervise: this filesystem is rebuilt by redo: its open files live in the fd "
                       "table its servers share with the fusexx keeper, which systemd's fd store cannot be (it would "
                       "need every file it opens). Set FileDescriptorStoreMax=0, and the keeper runs as the "
                       "service's main process (docs/restart.md, \"systemd as the keeper\")\n");
          return 2;
        }
        if (store < min_store_for_supervise) {
          std::fprintf(stderr, "fusexx: -o supervise under systemd needs FileDescriptorStoreMax=%u or more (the "
                       "connection, two crash journals, two checkpoints while one replaces the other, the restart "
                       "history); the unit says %u\n", min_store_for_supervise, store);
          return 2;
        }
        return run_supervised_by_store(fs, cl);
      }
      return run_supervised(fs, cl);
    }
  }
  const command_line& cl = given;
  // Forks (when not in the foreground) before any thread exists.
  auto guard = daemon_guard::start(cl.daemon);
  if (!guard) {
    std::fprintf(stderr, "fusexx: %s\n", guard.error().message.c_str());
    return 1;
  }
  return serve_process(fs, cl, *guard, nullptr);
}

template <filesystem Fs>
int main(int argc, char** argv) {
  static_assert(restart_hooks_complete<Fs>());
  Fs fs;
  auto cl = parse_command_line(fs, argc, argv);
  if (!cl) {
    std::fprintf(stderr, "fusexx: %s\n", cl.error().message.c_str());
    return 2;
  }
  if constexpr (!restartable<Fs>) {
    if (cl->takeover) {
      std::fprintf(stderr, "fusexx: %s cannot take a mount over: this filesystem is not restartable (it has no "
                   "save()/restore(); docs/restart.md)\n", argv[0]);
      return 2;
    }
  }
  if (cl->help) {
    print_usage<Fs>(argv[0]);
    return 0;
  }
  if (cl->show_version) {
    std::printf("fusexx %.*s\n", static_cast<int>(version.size()), version.data());
    return 0;
  }
  return run(fs, *cl);
}

}  // namespace fusexx
