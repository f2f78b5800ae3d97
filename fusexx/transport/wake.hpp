#pragma once
// Waking a reader blocked in read(/dev/fuse): a thread-directed signal whose
// handler does nothing. It is installed with SA_RESTART: the interrupted
// read() is restarted by the kernel, which looks its fd number up again —
// and device_readers has meanwhile dup2()ed an at-EOF pipe over it
// (transport/device.hpp). Other syscalls of a handler running on the thread
// are restarted too. Reading through poll() instead would cost a second
// syscall on every request.
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
    sa.sa_flags = SA_RESTART;
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
