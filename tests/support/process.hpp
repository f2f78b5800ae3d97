#pragma once
// Test support: temporary mountpoints, child processes, bounded waiting.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fusexx/mount/mountinfo.hpp>
#include <fusexx/server.hpp>

extern char** environ;

namespace fusexx::testing {

// The transport a test target runs with (tests/defs.bzl sets FUSEXX_TRANSPORT
// per target); in-process servers use it, and spawned binaries read the same
// variable themselves.
inline fusexx::transport_kind transport_from_env() {
  const char* t = std::getenv("FUSEXX_TRANSPORT");
  auto kind = t ? fusexx::parse_transport(t) : std::nullopt;
  return kind.value_or(fusexx::transport_kind::classic);
}

// Polls `done` until it holds or `limit` passes. Tests never assert on time;
// the limit only turns a hang into a failure.
inline bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

inline bool is_fuse_mounted(const std::string& path) { return find_fuse_mount(path).has_value(); }

// A fresh directory under /tmp (reachable by every user, unlike Bazel's
// TEST_TMPDIR under /root), removed afterwards — unmounted first if a test
// left a mount on it, so a failing test leaves nothing stale.
class temp_dir {
 public:
  explicit temp_dir(mode_t mode = 0755) {
    char tmpl[] = "/tmp/fusexx-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
    ::chmod(path_.c_str(), mode);
  }
  ~temp_dir() {
    for (const auto& p : mounted_candidates())
      if (is_fuse_mounted(p)) ::umount2(p.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name, mode_t mode = 0755) const {
    std::string p = path_ + "/" + name;
    ::mkdir(p.c_str(), mode);
    ::chmod(p.c_str(), mode);  // mkdir's mode is cut by the umask
    return p;
  }

 private:
  std::vector<std::string> mounted_candidates() const {
    std::vector<std::string> out{path_};
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator(path_, ec)) out.push_back(e.path().string());
    return out;
  }
  std::string path_;
};

struct child {
  pid_t pid = -1;
  int stdout_fd = -1;
};

// Starts argv[0] (searched in PATH) with stdout (and stderr, when asked)
// captured in one pipe.
inline child spawn(const std::vector<std::string>& args, bool capture_stdout = false, bool with_stderr = false) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  int pipefd[2] = {-1, -1};
  if (capture_stdout) {
    if (::pipe2(pipefd, O_CLOEXEC) != 0) return {};
    posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDOUT_FILENO);
    if (with_stderr) posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDERR_FILENO);
  }
  child c;
  if (posix_spawnp(&c.pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) c.pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  if (capture_stdout) {
    ::close(pipefd[1]);
    c.stdout_fd = pipefd[0];
  }
  return c;
}

// Exit status (or 128+signal), waiting at most `limit`; the child is killed
// and -1 returned if it does not end in time.
inline int wait_exit(pid_t pid, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  int status = 0;
  bool ended = eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, limit);
  if (!ended) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct run_result {
  int status = -1;
  std::string out;
};

inline run_result run(const std::vector<std::string>& args, bool with_stderr = false) {
  child c = spawn(args, true, with_stderr);
  run_result r;
  if (c.pid < 0) return r;
  char chunk[4096];
  ssize_t n;
  while ((n = ::read(c.stdout_fd, chunk, sizeof chunk)) > 0) r.out.append(chunk, static_cast<std::size_t>(n));
  ::close(c.stdout_fd);
  r.status = wait_exit(c.pid);
  return r;
}

// Runs a shell script as another user (setpriv from util-linux), without
// supplementary groups; stderr comes with stdout.
inline run_result as_user(uid_t uid, gid_t gid, const std::string& script) {
  return run({"setpriv", "--reuid=" + std::to_string(uid), "--regid=" + std::to_string(gid), "--clear-groups",
              "sh", "-c", script},
             /*with_stderr=*/true);
}

// A file's whole content, or "<error: ...>" naming the errno, so a failed
// comparison in a test says why the read failed.
inline std::string slurp_fd(int fd) {
  std::string out;
  char chunk[4096];
  ssize_t n;
  while ((n = ::read(fd, chunk, sizeof chunk)) > 0) out.append(chunk, static_cast<std::size_t>(n));
  return out;
}

// Runs `body` in a forked child and returns its exit status: for tests that
// change process-wide state (namespaces, credentials) the test itself must keep.
template <class F>
int in_child(F&& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    // The test runner's crash handlers would report the child's deliberate
    // crashes as the test's own: let the child die the ordinary way.
    for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) ::signal(sig, SIG_DFL);
    ::_exit(body());
  }
  return wait_exit(pid);
}

// Closes every /dev/fuse fd and every io_uring fd the process has. A forked
// child that keeps the server's device fds can keep a dead connection alive
// and hang in state D (kernel-facts Q7), so children of a process that serves
// a filesystem call this first. The io_uring transport's rings count too: a
// ring's pending FUSE commands hold the device, and a request whose entry the
// server still held when it stopped ends only when the last copy of that
// ring closes — a child blocked on such a request while holding the ring
// would wait for itself. Uses no allocation: it runs right after fork().
inline void close_device_fds() {
  for (int fd = 3; fd < 4096; ++fd) {
    char link[64], target[32];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = ::readlink(link, target, sizeof target - 1);
    if (n < 0) continue;
    target[n] = 0;
    if (std::strcmp(target, "/dev/fuse") == 0 || std::strcmp(target, "anon_inode:[io_uring]") == 0) ::close(fd);
  }
}

// A forked child that is killed and reaped if the test ends (e.g. fails)
// before waiting for it.
class forked {
 public:
  explicit forked(pid_t pid) noexcept : pid_(pid) {}
  forked(forked&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
  forked& operator=(forked&&) = delete;
  ~forked() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const noexcept { return pid_; }
  // The exit status (or 128+signal); see wait_exit.
  int wait(std::chrono::milliseconds limit = std::chrono::seconds(20)) { return wait_exit(std::exchange(pid_, -1), limit); }

 private:
  pid_t pid_;
};

// Forks a child that runs `body` (its return value is the exit status) after
// dropping the inherited /dev/fuse fds; returns at once.
template <class F>
forked fork_child(F&& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    close_device_fds();
    ::_exit(body());
  }
  return forked(pid);
}

inline std::string slurp(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("<error: open: ") + std::strerror(errno) + ">";
  std::string out;
  char chunk[4096];
  for (;;) {
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0) {
      out = std::string("<error: read: ") + std::strerror(errno) + ">";
      break;
    }
    if (n == 0) break;
    out.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

inline std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The example binary Bazel placed in the runfiles (see tests/defs.bzl), as an
// absolute path; FUSEXX_HELLO may also be set by hand outside Bazel.
inline std::string example_binary(const char* env_name) {
  const char* p = std::getenv(env_name);
  if (!p) return {};
  return std::filesystem::absolute(p).string();
}

// The first child of `parent` (a supervised mount's keeper has one: its
// server), or -1.
inline pid_t first_child_of(pid_t parent) {
  std::ifstream in("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) + "/children");
  pid_t pid = -1;
  in >> pid;
  return pid;
}

// True once `pid` has exited (gone, or a zombie nobody has reaped yet).
inline bool process_ended(pid_t pid) {
  std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  if (stat.starts_with("<error")) return true;
  auto close_paren = stat.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < stat.size() && stat[close_paren + 2] == 'Z';
}

// Processes whose command line mentions `needle` (to find a daemon we started).
inline std::vector<pid_t> pids_mentioning(const std::string& needle) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = slurp(e.path().string() + "/cmdline");
    if (cmd.find(needle) != std::string::npos) out.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return out;
}

}  // namespace fusexx::testing
