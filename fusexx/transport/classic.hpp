#pragma once
// The classic transport: worker threads that read requests from /dev/fuse and
// write replies back. Each worker has its own fd cloned from the session's
// (FUSE_DEV_IOC_CLONE), so each has its own processing queue and one worker's
// fd can close without ending the connection. A reply must go to the fd its
// request came from, so the reply sink carries that fd.
#include <fcntl.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "../buffer.hpp"
#include "../dispatch.hpp"
#include "../fd.hpp"
#include "../log.hpp"
#include "../proto/abi.hpp"
#include "wake.hpp"

namespace fusexx::transport {

// Writes one reply with a single writev. Returns 0 or -errno.
inline int write_reply(void* context, const iovec* iov, int count) {
  const int fd = static_cast<int>(reinterpret_cast<std::intptr_t>(context));
  for (;;) {
    ssize_t n = ::writev(fd, iov, count);
    if (n >= 0) return 0;  // /dev/fuse takes a reply whole or not at all
    if (errno != EINTR) return -errno;
  }
}

inline detail::reply_sink fd_sink(int fd) {
  return detail::reply_sink{reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)), &write_reply};
}

// A second fd on the same connection, or an error (e.g. EPERM before mount).
inline result<unique_fd> clone_device(int session_fd) {
  unique_fd clone(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!clone) return last_error();
  std::uint32_t source = static_cast<std::uint32_t>(session_fd);
  if (::ioctl(clone.get(), proto::dev_ioc_clone, &source) != 0) return last_error();
  return clone;
}

struct classic_options {
  unsigned threads = 0;     // 0: one per CPU, at least 2 (handlers may block)
  bool clone_fds = true;    // false: all workers share the session fd
};

template <filesystem Fs>
class classic_transport {
 public:
  classic_transport(detail::dispatcher<Fs>& d, int session_fd, classic_options options)
      : dispatcher_(d), session_fd_(session_fd), options_(options) {}
  classic_transport(const classic_transport&) = delete;
  classic_transport& operator=(const classic_transport&) = delete;
  ~classic_transport() {
    stop();
    join();
  }

  // Starts worker 0 on the session fd itself. With synchronous INIT this runs
  // before the mount call, which blocks until this worker has answered INIT;
  // clones of a sync-init fd cannot be made until the mount has begun.
  void start_session_worker() {
    install_wake_handler();
    std::lock_guard lock(mutex_);
    if (workers_.empty()) launch(0);
  }
  // Starts the remaining workers, each on its own clone of the session fd.
  void start_clone_workers() {
    unsigned n = options_.threads;
    if (n == 0) n = std::max(2u, std::thread::hardware_concurrency());
    std::lock_guard lock(mutex_);
    for (unsigned i = static_cast<unsigned>(workers_.size()); i < n; ++i) launch(i);
  }
  void start() {
    start_session_worker();
    start_clone_workers();
  }

  // Asks every worker to stop: sets the flag and interrupts their reads.
  // Keeps interrupting until they are gone, because a signal that lands just
  // before a worker enters read() is lost — but only for `grace`: a worker
  // inside a handler that never returns (a hung init()) cannot be interrupted,
  // and stop() must not hang with it. join() is what waits for such a worker.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(2)) {
    stopping_.store(true, std::memory_order_release);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    for (int round = 0; live_.load(std::memory_order_acquire) > 0; ++round) {
      if (std::chrono::steady_clock::now() > deadline) {
        log::warn("{} worker(s) did not stop: a handler is still running", live_.load());
        return;
      }
      {
        std::lock_guard lock(mutex_);
        for (auto& w : workers_)
          if (!w->done.load(std::memory_order_acquire)) wake(w->thread.native_handle());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(round < 10 ? 2 : 20));
    }
  }

  // Waits until every worker has ended (after stop(), or when the filesystem
  // was unmounted and the kernel ended the connection). `after_workers` runs
  // once no worker thread is left, before waiting for suspended handlers.
  void join(const std::function<void()>& after_workers = {}) {
    std::vector<std::unique_ptr<worker>> done;
    {
      std::lock_guard lock(mutex_);
      done.swap(workers_);
    }
    for (auto& w : done) {
      if (!w->done.load(std::memory_order_acquire))
        log::warn("waiting for a worker whose handler has not returned");
      if (w->thread.joinable()) w->thread.join();
    }
    if (after_workers) after_workers();
    // Coroutine handlers still waiting reply through the fds and use the
    // filesystem: give them a moment before the fds close. Not forever: once
    // the connection has ended, a handler suspended on a ring that is gone
    // will never resume.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (dispatcher_.session().counters().in_flight.load() > 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        log::warn("abandoning {} unfinished request(s)", dispatcher_.session().counters().in_flight.load());
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // Calls `f` (from a worker thread) once every worker has ended.
  void on_all_stopped(std::function<void()> f) { all_stopped_ = std::move(f); }
  bool running() const noexcept { return live_.load(std::memory_order_acquire) > 0; }
  unsigned live_workers() const noexcept { return static_cast<unsigned>(live_.load(std::memory_order_acquire)); }
  unsigned worker_count() const noexcept { return static_cast<unsigned>(workers_.size()); }

 private:
  struct worker {
    std::jthread thread;
    unique_fd own_fd;  // the clone; empty for worker 0, which uses the session fd
    int fd = -1;
    std::atomic<bool> done{false};
  };

  void launch(unsigned index) {
    auto w = std::make_unique<worker>();
    w->fd = session_fd_;
    if (index > 0 && options_.clone_fds) {
      if (auto c = clone_device(session_fd_)) {
        w->own_fd = std::move(*c);
        w->fd = w->own_fd.get();
      } else {
        log::info("cannot clone /dev/fuse ({}); workers share one fd", c.error().message());
      }
    }
    live_.fetch_add(1, std::memory_order_acq_rel);
    worker* raw = w.get();
    w->thread = std::jthread([this, raw] { serve(*raw); });
    workers_.push_back(std::move(w));
  }

  void serve(worker& w) {
    sigset_t blocked = worker_signal_mask();
    pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
    sigset_t wake_set;
    sigemptyset(&wake_set);
    sigaddset(&wake_set, wake_signal());
    pthread_sigmask(SIG_UNBLOCK, &wake_set, nullptr);

    buffer buf;
    while (!stopping_.load(std::memory_order_acquire)) {
      const std::size_t wanted = write_data_offset + dispatcher_.session().conn().request_buffer_size();
      if (!buf || buf.size() < wanted) buf = buffer(wanted);  // first use, taken by a handler, or INIT grew it
      const std::span<std::byte> area = buf.span().subspan(write_data_offset);
      ssize_t n = ::read(w.fd, area.data(), area.size());
      if (n < 0) {
        const int err = errno;
        if (err == EINTR || err == EAGAIN) continue;
        if (err == ENOENT) continue;  // the request was interrupted before we could read it
        if (err == ENODEV) break;     // unmounted: the connection is over
        if (err == EINVAL && buf.size() < write_data_offset + dispatcher_.session().conn().request_buffer_size()) continue;
        log::error("reading /dev/fuse failed: {}", std::strerror(err));
        break;
      }
      const std::size_t len = static_cast<std::size_t>(n);
      dispatcher_.session().counters().via_device.fetch_add(1, std::memory_order_relaxed);
      const std::size_t scratch_at = std::min(buf.size(), (write_data_offset + len + 63) & ~std::size_t{63});
      detail::incoming in{.bytes = std::span<const std::byte>(area.data(), len),
                  .scratch = buf.span().subspan(scratch_at),
                  .owner = &buf,
                  .sink = fd_sink(w.fd)};
      dispatcher_.handle(in);
    }
    w.done.store(true, std::memory_order_release);
    if (live_.fetch_sub(1, std::memory_order_acq_rel) == 1 && all_stopped_) all_stopped_();
  }

  // Requests are read this far into the (page-aligned) buffer, so that a
  // WRITE's data, which follows its in_header and write_in, starts on a page
  // boundary: a filesystem can hand it to O_DIRECT I/O without copying it to
  // an aligned buffer first (io_uring entries keep the payload apart, already
  // aligned). A READ's reply area then starts on the boundary too.
  static constexpr std::size_t write_data_offset =
      connection::header_room - sizeof(proto::in_header) - sizeof(proto::write_in);

  detail::dispatcher<Fs>& dispatcher_;
  int session_fd_;
  classic_options options_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<worker>> workers_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> live_{0};
  std::function<void()> all_stopped_;
};

}  // namespace fusexx::transport
