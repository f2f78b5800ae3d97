#pragma once
// Test support: an example filesystem binary serving in a child process, in
// the foreground (-f), with its stdout and stderr captured. The constructor
// returns once the mount is there (or the binary has ended); the destructor,
// or stop(), sends SIGTERM and collects the exit status and the output, so a
// failing test leaves neither a process nor a mount behind.
#include <signal.h>
#include <sys/mount.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace fusexx::testing {

class spawned_mount {
 public:
  // Runs `LAUNCHER... binary -f ARGS... MOUNTPOINT` (a launcher such as
  // setpriv runs it as another user; it must exec the binary in place, so
  // the signal reaches the server).
  spawned_mount(const std::string& binary, std::vector<std::string> args, std::string mountpoint,
                std::vector<std::string> launcher = {})
      : mountpoint_(std::move(mountpoint)) {
    std::vector<std::string> argv = std::move(launcher);
    argv.push_back(binary);
    argv.push_back("-f");
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(mountpoint_);
    child_ = spawn(argv, /*capture_stdout=*/true, /*with_stderr=*/true);
    if (child_.pid < 0) return;
    ready_ = eventually([&] { return is_fuse_mounted(mountpoint_) || process_ended(child_.pid); }) &&
             is_fuse_mounted(mountpoint_);
    if (!ready_) stop();
  }
  ~spawned_mount() { stop(); }
  spawned_mount(const spawned_mount&) = delete;
  spawned_mount& operator=(const spawned_mount&) = delete;

  bool ok() const { return ready_; }
  pid_t pid() const { return child_.pid; }
  const std::string& path() const { return mountpoint_; }
  std::string path(const std::string& relative) const { return mountpoint_ + "/" + relative; }

  // SIGTERM, then the exit status (128+signal if it died of one, -1 if it
  // had to be killed). Idempotent.
  int stop() {
    if (child_.pid > 0) {
      ::kill(child_.pid, SIGTERM);
      status_ = wait_exit(child_.pid);
      child_.pid = -1;
      output_ = slurp_fd(child_.stdout_fd);
      ::close(child_.stdout_fd);
      if (is_fuse_mounted(mountpoint_)) ::umount2(mountpoint_.c_str(), MNT_DETACH);
    }
    return status_;
  }
  // What the binary printed (stdout and stderr); complete after stop().
  const std::string& output() const { return output_; }

 private:
  std::string mountpoint_;
  child child_;
  bool ready_ = false;
  int status_ = -1;
  std::string output_;
};

}  // namespace fusexx::testing
