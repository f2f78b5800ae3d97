#pragma once
// Waking a worker blocked in read(/dev/fuse): a thread-directed signal whose
// handler does nothing and is installed without SA_RESTART, so the read
// returns EINTR and the worker looks at its stop flag. Reading through
// poll() instead would cost a second syscall on every request.
#include <pthread.h>
#include <signal.h>

#include <mutex>

namespace fusexx::transport {

inline int wake_signal() { return SIGRTMIN + 3; }

inline void install_wake_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: the blocked read must return EINTR
    sigaction(wake_signal(), &sa, nullptr);
  });
}

inline void wake(pthread_t thread) { pthread_kill(thread, wake_signal()); }

// Signals the serving threads must not take (SIGINT, SIGTERM, SIGHUP, SIGPIPE):
// only the thread that waits for them should. Workers unblock the wake signal.
inline sigset_t worker_signal_mask() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGPIPE);
  return set;
}

}  // namespace fusexx::transport
