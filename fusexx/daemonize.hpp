#pragma once
// Daemonizing as an RAII guard. start() forks while the process still has one
// thread; the parent waits for the child's verdict and exits with it. The
// child does its set-up and mounts, then commit()s; a guard destroyed without
// commit() — an early return, an exception, a failed mount — reports the
// failure, so the command that started the daemon fails with the real reason.
//
// Pitfall: threads do not survive fork(). Start no thread (and no library
// that starts one) before start(); debug builds check this.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cassert>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "failure.hpp"
#include "fd.hpp"

namespace fusexx {

struct daemon_options {
  bool foreground = false;   // no fork: the guard only reports through the return path
  bool keep_cwd = false;     // do not chdir("/")
  bool keep_stdio = false;   // keep stdout/stderr (systemd's journal)
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
  daemon_guard(daemon_guard&& o) noexcept : pipe_(std::move(o.pipe_)), done_(std::exchange(o.done_, true)),
                                            options_(o.options_) {}
  daemon_guard(const daemon_guard&) = delete;
  daemon_guard& operator=(const daemon_guard&) = delete;
  ~daemon_guard() {
    if (!done_) report(failure{std::error_code(EIO, std::system_category()), "start-up ended without success"});
  }

  // In the child (or, in the foreground, the only process): returns the
  // guard. In the parent: waits for the child's verdict and exits with it.
  static outcome<daemon_guard> start(const daemon_options& options) {
    if (options.foreground) return daemon_guard(unique_fd{}, options);
    assert(thread_count() <= 1 && "daemon_guard::start() must run before any thread is created");
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail(errno, "pipe: {}", std::strerror(errno));
    unique_fd read_end(fds[0]), write_end(fds[1]);
    pid_t pid = ::fork();
    if (pid < 0) return fail(errno, "fork: {}", std::strerror(errno));
    if (pid > 0) {
      write_end.reset();
      std::exit(wait_for_child(read_end.get(), pid));
    }
    read_end.reset();
    ::setsid();
    if (!options.keep_cwd && ::chdir("/") != 0) {
      // "/" always exists; nothing useful to do if it somehow fails
    }
    unique_fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (null) ::dup2(null.get(), STDIN_FILENO);
    return daemon_guard(std::move(write_end), options);
  }

  // Start-up worked: the parent exits 0. Stdout/stderr go to /dev/null unless kept.
  void commit() {
    if (done_) return;
    done_ = true;
    send(0, "");
    pipe_.reset();
    if (!options_.foreground && !options_.keep_stdio) {
      unique_fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
      if (null) {
        ::dup2(null.get(), STDOUT_FILENO);
        ::dup2(null.get(), STDERR_FILENO);
      }
    }
  }

  // Start-up failed: the parent prints `f.message` and exits with its errno.
  void report(const failure& f) {
    if (done_) return;
    done_ = true;
    const int code = f.code.value() ? f.code.value() : EIO;
    send(code, f.message);
    pipe_.reset();
  }

  bool background() const noexcept { return !options_.foreground; }

 private:
  daemon_guard(unique_fd pipe, daemon_options options) : pipe_(std::move(pipe)), options_(options) {}

  // Message: a 4-byte errno, then the text.
  void send(std::int32_t code, const std::string& text) {
    if (!pipe_) return;
    std::string msg(reinterpret_cast<const char*>(&code), sizeof code);
    msg += text;
    [[maybe_unused]] ssize_t n = ::write(pipe_.get(), msg.data(), msg.size());
  }

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

  unique_fd pipe_;
  bool done_ = false;
  daemon_options options_;
};

}  // namespace fusexx
