#pragma once
// Daemonizing as an RAII guard.
//
//   auto guard = daemon_guard::start(options);   // forks; the parent waits
//   ... set up, mount (server::start(guard->stopped())) ...
//   guard->commit();                             // the parent exits 0
//
// The parent waits for the child's verdict and exits with it: 0 after
// commit(), or the errno of report(failure) with its message printed. A guard
// destroyed without either — an early return, an exception — reports a
// failure, and a child that dies is seen too (EOF), so the command that
// started the daemon never claims success for a daemon that is not serving.
// If the parent dies first, stopped() is raised: start-up is abandoned and the
// child exits instead of mounting for nobody.
//
// Pitfall: threads do not survive fork(). Start no thread (and no library that
// starts one) before start(); debug builds assert this.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cassert>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>

#include "failure.hpp"
#include "fd.hpp"

namespace fusexx {

struct daemon_options {
  bool foreground = false;   // no fork: commit()/report() only tell the caller
  bool keep_cwd = false;     // do not chdir("/")
  bool keep_stdio = false;   // keep stdout/stderr after commit (systemd's journal)
  std::string pid_file;      // written with the daemon's pid on commit, removed on exit
};

inline std::size_t thread_count() {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec); !ec && it != decltype(it){};
       it.increment(ec))
    ++n;
  return n;
}

class daemon_guard {
 public:
  daemon_guard(daemon_guard&&) noexcept = default;
  daemon_guard& operator=(daemon_guard&&) = delete;
  daemon_guard(const daemon_guard&) = delete;
  ~daemon_guard() {
    if (state_ && !state_->done)
      report(failure{std::error_code(EIO, std::system_category()), "start-up ended without success"});
    if (state_ && !state_->options.pid_file.empty() && state_->wrote_pid_file)
      std::filesystem::remove(state_->options.pid_file);
  }

  // In the child (or, in the foreground, the only process): returns the
  // guard. In the parent: waits for the child's verdict and exits with it.
  // `watch`: false for a process that must stay single-threaded (a keeper
  // that forks its servers: restart/keeper.hpp); the forked server then
  // calls watch_parent() itself.
  static outcome<daemon_guard> start(const daemon_options& options, bool watch = true) {
    auto state = std::make_unique<shared>();
    state->options = options;
    if (options.foreground) return daemon_guard(std::move(state));
    assert(thread_count() <= 1 && "daemon_guard::start() must run before any thread is created");
    int sv[2];
    // A socket, not a pipe: the child can report to a parent that died
    // without SIGPIPE (MSG_NOSIGNAL), and sees the parent's death as a hang-up.
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      return fail(errno, "socketpair: {}", std::strerror(errno));
    unique_fd parent_end(sv[0]), child_end(sv[1]);
    pid_t pid = ::fork();
    if (pid < 0) return fail(errno, "fork: {}", std::strerror(errno));
    if (pid > 0) {
      child_end.reset();
      std::exit(wait_for_child(parent_end.get(), pid));
    }
    parent_end.reset();
    ::setsid();
    if (!options.keep_cwd && ::chdir("/") != 0) {
      // "/" always exists; nothing useful to do if it somehow fails
    }
    unique_fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (null) ::dup2(null.get(), STDIN_FILENO);
    state->channel = std::move(child_end);
    if (watch) state->watch_parent();
    return daemon_guard(std::move(state));
  }

  // Starts watching for the parent's death (after start(options, false)).
  void watch_parent() {
    if (state_->channel && !state_->watcher.joinable()) state_->watch_parent();
  }
  // A keeper, once its first server has the report to make: lets go of the
  // channel without reporting, so the parent hears that server alone.
  // `shared`: the first server shares this process's fd table (closing
  // the channel here would close it there), so it is only let go of.
  void detach(bool shared = false) {
    state_->done = true;
    if (shared) (void)state_->channel.release();
    else state_->channel.reset();
  }
  // The channel to the parent (-1: none).
  int channel_fd() const noexcept { return state_->channel ? state_->channel.get() : -1; }
  // The pid the pid file gets (the keeper's, for a supervised server).
  void report_pid(pid_t pid) noexcept { state_->pid = pid; }

  // Raised when the parent died before commit(): give up starting.
  std::stop_token stopped() const noexcept { return state_->parent_gone.get_token(); }

  // Start-up worked: the parent exits 0. Stdout/stderr go to /dev/null unless kept.
  void commit() {
    if (state_->done) return;
    if (!state_->options.pid_file.empty()) {
      std::string tmp = state_->options.pid_file + ".tmp";
      {
        std::ofstream out(tmp, std::ios::trunc);
        out << (state_->pid > 0 ? state_->pid : ::getpid()) << '\n';
      }
      std::filesystem::rename(tmp, state_->options.pid_file);
      state_->wrote_pid_file = true;
    }
    state_->finish(0, "");
    if (!state_->options.foreground && !state_->options.keep_stdio) {
      unique_fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
      if (null) {
        ::dup2(null.get(), STDOUT_FILENO);
        ::dup2(null.get(), STDERR_FILENO);
      }
    }
  }

  // Start-up failed: the parent prints `f.message` and exits with its errno.
  void report(const failure& f) {
    if (state_->done) return;
    state_->finish(f.code.value() ? f.code.value() : EIO, f.message);
  }

  bool background() const noexcept { return !state_->options.foreground; }

 private:
  // Lives on the heap so the watcher thread's pointer survives moves.
  struct shared {
    daemon_options options;
    unique_fd channel;
    unique_fd wake{::eventfd(0, EFD_CLOEXEC)};
    std::stop_source parent_gone;
    std::jthread watcher;
    bool done = false;
    bool wrote_pid_file = false;
    pid_t pid = 0;  // for the pid file, when not this process's

    // Waits for the parent's end of the channel to close (it only does when
    // the parent dies: a live parent is blocked reading it) or for finish().
    void watch_parent() {
      watcher = std::jthread([this] {
        pollfd fds[2] = {{channel.get(), POLLRDHUP, 0}, {wake.get(), POLLIN, 0}};
        while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
        }
        if (fds[0].revents & (POLLRDHUP | POLLHUP | POLLERR)) parent_gone.request_stop();
      });
    }

    // Message: a 4-byte errno, then the text.
    void finish(std::int32_t code, const std::string& text) {
      done = true;
      if (channel) {
        std::string msg(reinterpret_cast<const char*>(&code), sizeof code);
        msg += text;
        [[maybe_unused]] ssize_t n = ::send(channel.get(), msg.data(), msg.size(), MSG_NOSIGNAL);
      }
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(wake.get(), &one, sizeof one);
      if (watcher.joinable()) watcher.join();
      channel.reset();
    }
  };

  explicit daemon_guard(std::unique_ptr<shared> s) : state_(std::move(s)) {}

  static int wait_for_child(int fd, pid_t pid) {
    std::string msg;
    char chunk[512];
    for (;;) {
      ssize_t n = ::read(fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      msg.append(chunk, static_cast<std::size_t>(n));
    }
    if (msg.size() < sizeof(std::int32_t)) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (WIFSIGNALED(status))
        std::fprintf(stderr, "fusexx: the daemon was killed by signal %d during start-up\n", WTERMSIG(status));
      else
        std::fprintf(stderr, "fusexx: the daemon exited during start-up without reporting (status %d)\n",
                     WEXITSTATUS(status));
      return 1;
    }
    std::int32_t code;
    std::memcpy(&code, msg.data(), sizeof code);
    if (code == 0) return 0;
    std::fprintf(stderr, "fusexx: %s\n", msg.c_str() + sizeof code);
    return code > 0 && code < 256 ? code : 1;
  }

  std::unique_ptr<shared> state_;
};

}  // namespace fusexx
