#pragma once
// The subjects the benchmark suite compares: a native directory and FUSE
// servers that run as separate processes (the way users run them), each
// mounted in turn over the same native directory.
//
// A server is started in the foreground, counted as mounted when the
// mountpoint has a device of its own and a probe path under it stats
// successfully, and stopped with SIGTERM (a lazy unmount follows only if it
// did not unmount itself, so a crashed subject never leaves a mount behind).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fusexx/mount/mountinfo.hpp>

#include "benchmarks/load.hpp"

extern char** environ;

namespace bench {

struct subject {
  std::string name;               // column name in the report
  std::string program;            // empty: the native directory itself
  std::vector<std::string> args;  // after the program; "{source}" and "{mnt}" are replaced
  bool in_memory = false;         // serves its own contents (memfs): the suite fills it first
  std::string unavailable;        // why it is not measured, if it is not
  std::vector<std::string> env{};  // NAME=VALUE added to the suite's environment
  std::string versus{};           // the libfuse subject this one is compared with, if any
  std::string pair{};             // that pair's name in the report ("memfs classic"); with `versus`
};

// A running FUSE server process.
class server_process {
 public:
  server_process() = default;
  server_process(const server_process&) = delete;
  server_process& operator=(const server_process&) = delete;
  ~server_process() { stop(); }

  // Until disarmed, the connection is aborted if `limit` passes first: a
  // wedged server then fails the suite's operations instead of hanging them.
  void arm(std::chrono::duration<double> limit) {
    std::lock_guard lock(watch_->mutex);
    watch_->deadline = clock_type::now() + std::chrono::duration_cast<clock_type::duration>(limit);
    watch_->changed.notify_all();
  }
  void disarm() { arm(std::chrono::hours(24 * 365)); }

  // Starts `s` on `mnt` over `source` and waits until `probe` (relative to the
  // mountpoint, "" for the mountpoint itself) stats through the mount.
  // Returns the time from spawn to that first successful stat, or an error text.
  static std::unique_ptr<server_process> start(const subject& s, const std::string& source, const std::string& mnt,
                                             const std::string& probe, std::chrono::duration<double>& mount_time,
                                             std::string& error,
                                             std::chrono::seconds patience = std::chrono::seconds(20)) {
    std::vector<std::string> words{s.program};
    for (auto a : s.args) {
      for (auto [key, value] : {std::pair{std::string("{source}"), source}, std::pair{std::string("{mnt}"), mnt}})
        if (auto at = a.find(key); at != std::string::npos) a.replace(at, key.size(), value);
      words.push_back(a);
    }
    std::vector<char*> argv;
    for (auto& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);

    struct stat parent_st {};
    ::stat((mnt + "/..").c_str(), &parent_st);
    const auto started = clock_type::now();
    auto p = std::make_unique<server_process>();
    p->mnt_ = mnt;
    p->arm(patience);
    p->watchdog_ = std::jthread([w = p->watch_, mnt](std::stop_token stop) {
      std::unique_lock lock(w->mutex);
      while (!stop.stop_requested()) {
        if (clock_type::now() >= w->deadline) {
          fusexx::abort_fuse_connection_at(mnt);
          w->deadline = clock_type::time_point::max();
        }
        w->changed.wait_until(lock, std::min(w->deadline, clock_type::now() + std::chrono::milliseconds(100)));
      }
    });
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    // The servers' own log lines would interleave with the progress display.
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    // The subject's own variables replace the suite's of the same name (the
    // dynamic loader takes the last LD_LIBRARY_PATH, getenv the first).
    std::vector<char*> envp;
    std::vector<std::string> extra = s.env;
    for (auto& e : extra) envp.push_back(e.data());
    for (char** e = environ; *e; ++e) {
      const std::string_view name(*e, std::strcspn(*e, "="));
      const bool replaced = std::ranges::any_of(extra, [&](auto& x) { return x.starts_with(name) && x[name.size()] == '='; });
      if (!replaced) envp.push_back(*e);
    }
    envp.push_back(nullptr);
    const int rc = ::posix_spawn(&p->pid_, s.program.c_str(), &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      p->pid_ = -1;
      error = "cannot start " + s.program + ": " + std::strerror(rc);
      return nullptr;
    }
    const std::string probe_path = probe.empty() ? mnt : mnt + "/" + probe;
    const auto give_up = started + patience;
    for (;;) {
      struct stat mst {}, pst {};
      if (::stat(mnt.c_str(), &mst) == 0 && mst.st_dev != parent_st.st_dev && ::stat(probe_path.c_str(), &pst) == 0) {
        mount_time = clock_type::now() - started;
        p->disarm();
        return p;
      }
      int status = 0;
      if (::waitpid(p->pid_, &status, WNOHANG) == p->pid_) {
        p->pid_ = -1;
        error = s.name + " exited before serving (" +
                (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                   : "signal " + std::to_string(WTERMSIG(status))) +
                "); its message is above";
        return nullptr;
      }
      if (clock_type::now() > give_up) {
        error = s.name + " did not mount within " + std::to_string(patience.count()) + " s";
        return nullptr;  // the destructor stops it
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  pid_t pid() const { return pid_; }

  // CPU time the server has used so far, in nanoseconds (user and kernel):
  // its threads' (the scheduler's own account, /proc/PID/task/*/schedstat)
  // and its descendants'. A supervised server (-o supervise) is the keeper's
  // child, and it forks a child of its own for each checkpoint (the snapshot
  // is written there, from the parked memory); those children's CPU is
  // counted while they run (/proc/PID/task/TID/children, a list per forking
  // thread) and, once reaped, through the parent's cutime and cstime.
  std::uint64_t cpu_ns() const { return cpu_ns_of(pid_); }

  static std::uint64_t cpu_ns_of(pid_t pid) {
    std::uint64_t total = reaped_children_ns(pid);
    const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
    std::vector<pid_t> children;
    if (DIR* d = ::opendir(tasks.c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        const std::string task = tasks + "/" + e->d_name;
        std::ifstream in(task + "/schedstat");
        std::uint64_t ns = 0;
        if (in >> ns) total += ns;
        std::ifstream kids(task + "/children");
        for (pid_t child = 0; kids >> child;) children.push_back(child);
      }
      ::closedir(d);
    }
    for (pid_t child : children) total += cpu_ns_of(child);
    return total;
  }

  // The CPU time of `pid`'s children that have ended and been waited for
  // (and of theirs): fields 16 and 17 of /proc/PID/stat, in clock ticks.
  static std::uint64_t reaped_children_ns(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(in, line)) return 0;
    // The command name (field 2) is in parentheses and may hold spaces.
    const auto close = line.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(line.substr(close + 1));
    std::string field;
    std::uint64_t cutime = 0, cstime = 0;
    for (int i = 3; i <= 17 && rest >> field; ++i) {
      if (i == 16) cutime = std::strtoull(field.c_str(), nullptr, 10);
      if (i == 17) cstime = std::strtoull(field.c_str(), nullptr, 10);
    }
    static const long ticks = ::sysconf(_SC_CLK_TCK);
    return ticks > 0 ? (cutime + cstime) * (std::uint64_t{1000000000} / static_cast<std::uint64_t>(ticks)) : 0;
  }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      const auto give_up = clock_type::now() + std::chrono::seconds(10);
      int status = 0;
      while (::waitpid(pid_, &status, WNOHANG) == 0) {
        if (clock_type::now() > give_up) {
          fusexx::abort_fuse_connection_at(mnt_);
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, &status, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      pid_ = -1;
    }
    watchdog_ = {};
    if (!mnt_.empty() && fusexx::find_fuse_mount(mnt_)) ::umount2(mnt_.c_str(), MNT_DETACH);
    mnt_.clear();
  }

 private:
  struct watch {
    std::mutex mutex;
    std::condition_variable changed;
    clock_type::time_point deadline = clock_type::time_point::max();
  };
  pid_t pid_ = -1;
  std::string mnt_;
  std::shared_ptr<watch> watch_ = std::make_shared<watch>();
  std::jthread watchdog_;
};

}  // namespace bench
