#pragma once
// Readers of /dev/fuse: threads that read requests from the connection's
// device fds and write replies back. The same channel serves as the control
// channel (one reader on the session fd itself) and as the classic data plane
// (readers on clones of it, FUSE_DEV_IOC_CLONE: each clone has its own
// processing queue, so one reader's fd can close without ending the
// connection). A reply must go to the fd its request came from, so the reply
// sink carries that fd.
//
// Parking and stopping without polling. A reader blocked in read() must be
// brought out of it, but a signal that lands just before the read() is lost.
// So each reader reads through its own dup of its fd (read_fd), and park/stop
// first dup2() an always-at-EOF pipe over that dup, then signal the thread:
//  - a reader about to read reads the pipe: read() returns 0 at once;
//  - a reader blocked in read() is interrupted; the wake signal's handler has
//    SA_RESTART, so the kernel restarts the read(), which looks the fd number
//    up again and finds the pipe;
//  - a reader inside a handler finishes it first (a syscall the handler makes
//    is restarted too, or sees EINTR where the kernel never restarts it).
// Replies go to the original fd, which stays untouched, so handlers that
// finish while their reader is parked still reply. resume() dup2()s the real
// fd back. No loop of signals and sleeps, and no poll() per request.
#include <fcntl.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "../buffer.hpp"
#include "../detail/incoming.hpp"
#include "../fd.hpp"
#include "../log.hpp"
#include "../proto/abi.hpp"
#include "../result.hpp"
#include "channel.hpp"
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
  bool clone_fds = true;    // false: all readers share the session fd
  bool pinned_buffers = false;  // read buffers of their own, faulted in, kept from forks (see device_readers::pinned_buffers)
};

class device_readers final : public channel {
 public:
  enum class fds { session, clones };

  // `count` readers on `session_fd` itself (fds::session) or each on its own
  // clone of it (fds::clones; falls back to the session fd where cloning fails).
  device_readers(detail::request_handler handler, session& s, int session_fd, unsigned count, fds which)
      : handler_(handler), session_(s), session_fd_(session_fd), count_(count), which_(which) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) == 0) {
      dead_ = unique_fd(p[0]);
      ::close(p[1]);  // no writer: reading the pipe returns 0 (EOF) at once, for ever
    }
  }
  device_readers(const device_readers&) = delete;
  device_readers& operator=(const device_readers&) = delete;
  ~device_readers() override {
    stop(clock::now() + std::chrono::seconds(2));
    // A reader still inside a handler that never returned cannot be joined;
    // it still uses this object, so the object is left to it (a leak, not a
    // use after free). fusexx::main exits the process in that case.
    if (stuck() > 0) {
      for (auto& r : readers_)
        if (r->thread.joinable()) r->thread.detach();
      log::warn("{} /dev/fuse reader(s) are stuck in a handler and were left running", stuck());
    }
  }

  void start() override {
    install_wake_handler();
    std::lock_guard lock(mutex_);
    if (!readers_.empty() || mode_ == mode::stopping) return;
    for (unsigned i = 0; i < count_; ++i) launch();
  }

  bool park(clock::time_point deadline) override {
    std::unique_lock lock(mutex_);
    if (mode_ == mode::stopping) return true;
    mode_ = mode::parked;
    interrupt_reads();
    return changed_.wait_until(lock, deadline, [&] { return all_out_of_handlers(); });
  }

  void resume() override {
    std::lock_guard lock(mutex_);
    if (mode_ != mode::parked) return;
    mode_ = mode::serving;
    for (auto& r : readers_) ::dup2(r->reply_fd, r->read_fd.get());  // the real fd again
    changed_.notify_all();
  }

  void stop(clock::time_point deadline) override {
    std::vector<std::unique_ptr<reader>> ended;
    {
      std::unique_lock lock(mutex_);
      mode_ = mode::stopping;
      interrupt_reads();
      changed_.notify_all();  // parked readers leave
      changed_.wait_until(lock, deadline, [&] {
        return std::ranges::all_of(readers_, [](const auto& r) { return r->st == state::exited; });
      });
      for (auto it = readers_.begin(); it != readers_.end();) {
        if ((*it)->st == state::exited) {
          ended.push_back(std::move(*it));
          it = readers_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& r : ended) r->thread.join();
  }

  std::vector<request_in_flight> busy() const override {
    std::lock_guard lock(mutex_);
    std::vector<request_in_flight> out;
    for (auto& r : readers_)
      if (auto u = r->unique.load(std::memory_order_acquire); u != 0)
        out.push_back({u, r->opcode.load(std::memory_order_relaxed), r->node.load(std::memory_order_relaxed)});
    return out;
  }
  unsigned stuck() const override {
    std::lock_guard lock(mutex_);
    return mode_ == mode::stopping ? static_cast<unsigned>(readers_.size()) : 0;
  }
  unsigned threads() const override {
    std::lock_guard lock(mutex_);
    return static_cast<unsigned>(readers_.size());
  }

  // Read buffers are buffer::pinned: every page touched when made, and
  // none shared copy-on-write with a forked child. For a server that may be
  // killed (-o supervise): the kernel copies a request into the reader's
  // buffer after taking it off the queue, and a copy that needs a page fault
  // while SIGKILL is pending fails — the kernel then ends the request with
  // EIO instead of keeping it for a resend (docs/restart.md, "What the
  // kernel does"). Costs the buffer's whole size in memory at once (about
  // 1 MiB per reader, and per handler that suspends holding one).
  void pinned_buffers(bool on) noexcept { pinned_ = on; }

  // Called (once, on a reader thread) when a reader has seen the connection
  // end (ENODEV or ECONNABORTED: unmounted, or aborted): nothing will come through /dev/fuse
  // any more. Set it before start().
  void on_ended(std::function<void()> f) { on_ended_ = std::move(f); }

 private:
  enum class mode { serving, parked, stopping };
  enum class state { serving, parked, exited };

  struct reader {
    unique_fd own;        // the clone, if any
    int reply_fd = -1;    // where replies go: the clone, or the session fd
    unique_fd read_fd;    // a dup of reply_fd, swapped for the dead pipe to park or stop
    std::thread thread;
    state st = state::serving;  // guarded by mutex_
    // The request being handled (unique 0: none), for busy(). Plain stores,
    // no lock: they cost nothing next to the read() before them.
    std::atomic<std::uint64_t> unique{0};
    std::atomic<proto::opcode> opcode{};
    std::atomic<ino> node{0};
  };

  void launch() {
    auto r = std::make_unique<reader>();
    r->reply_fd = session_fd_;
    if (which_ == fds::clones) {
      if (auto c = clone_device(session_fd_)) {
        r->own = std::move(*c);
        r->reply_fd = r->own.get();
      } else {
        log::info("cannot clone /dev/fuse ({}); readers share one fd", c.error().message());
      }
    }
    r->read_fd = unique_fd(::fcntl(r->reply_fd, F_DUPFD_CLOEXEC, 0));
    reader* raw = r.get();
    r->thread = std::thread([this, raw] { serve(*raw); });
    readers_.push_back(std::move(r));
  }

  // Under mutex_: makes every reader's next (or current) read() return 0.
  void interrupt_reads() {
    for (auto& r : readers_) {
      if (r->st == state::exited) continue;
      ::dup2(dead_.get(), r->read_fd.get());
      wake(r->thread.native_handle());
    }
  }
  bool all_out_of_handlers() const {
    return std::ranges::none_of(readers_, [](const auto& r) { return r->st == state::serving; });
  }

  // Called with read() == 0: the reader is at a boundary. Returns false when
  // it is to end.
  bool wait_while_parked(reader& r) {
    std::unique_lock lock(mutex_);
    if (mode_ == mode::serving) return true;  // resumed before this reader noticed
    r.st = state::parked;
    changed_.notify_all();
    changed_.wait(lock, [&] { return mode_ != mode::parked; });
    if (mode_ == mode::stopping) return false;
    r.st = state::serving;
    return true;
  }

  void serve(reader& r) {
    // A handler that sleeps off the ring (io::sleep_for) wakes on the timer
    // thread through its session's scope, which holds it back while parked.
    // Set once: every request this thread reads is of that session.
    detail::current_scope() = &session_.scope();
    sigset_t blocked = worker_signal_mask();
    pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
    sigset_t wake_set;
    sigemptyset(&wake_set);
    sigaddset(&wake_set, wake_signal());
    pthread_sigmask(SIG_UNBLOCK, &wake_set, nullptr);

    buffer buf;
    for (;;) {
      const std::size_t wanted = write_data_offset + session_.conn().request_buffer_size();
      if (!buf || buf.size() < wanted)  // first use, taken by a handler, or INIT grew it
        buf = pinned_ ? buffer::pinned(wanted) : buffer(wanted);
      const std::span<std::byte> area = buf.span().subspan(write_data_offset);
      ssize_t n = ::read(r.read_fd.get(), area.data(), area.size());
      if (n == 0) {
        if (!wait_while_parked(r)) break;
        continue;
      }
      if (n < 0) {
        const int err = errno;
        if (err == EINTR || err == EAGAIN) continue;
        if (err == ENOENT) continue;  // the request was interrupted before we could read it
        // The connection is over: unmounted (ENODEV), or aborted — which
        // reads as ECONNABORTED once FUSE_ABORT_ERROR was granted.
        if (err == ENODEV || err == ECONNABORTED) {
          if (on_ended_ && !ended_.exchange(true)) on_ended_();
          break;
        }
        if (err == EINVAL && buf.size() < write_data_offset + session_.conn().request_buffer_size()) continue;
        log::error("reading /dev/fuse failed: {}", std::strerror(err));
        break;
      }
      const std::size_t len = static_cast<std::size_t>(n);
      session_.counters().via_device.fetch_add(1, std::memory_order_relaxed);
      const std::size_t scratch_at = std::min(buf.size(), (write_data_offset + len + 63) & ~std::size_t{63});
      detail::incoming in{.bytes = std::span<const std::byte>(area.data(), len),
                          .scratch = buf.span().subspan(scratch_at),
                          .owner = &buf,
                          .sink = fd_sink(r.reply_fd)};
      if (len >= sizeof(proto::in_header)) {
        proto::in_header h;
        std::memcpy(&h, area.data(), sizeof h);
        r.opcode.store(static_cast<proto::opcode>(h.opcode), std::memory_order_relaxed);
        r.node.store(h.nodeid, std::memory_order_relaxed);
        r.unique.store(h.unique, std::memory_order_release);
      }
      handler_(in);
      r.unique.store(0, std::memory_order_release);
    }
    std::lock_guard lock(mutex_);
    r.st = state::exited;
    changed_.notify_all();
  }

  // Requests are read this far into the (page-aligned) buffer, so that a
  // WRITE's data, which follows its in_header and write_in, starts on a page
  // boundary: a filesystem can hand it to O_DIRECT I/O without copying it to
  // an aligned buffer first (io_uring entries keep the payload apart, already
  // aligned). A READ's reply area then starts on the boundary too.
  static constexpr std::size_t write_data_offset =
      connection::header_room - sizeof(proto::in_header) - sizeof(proto::write_in);

  detail::request_handler handler_;
  session& session_;
  bool pinned_ = false;
  const int session_fd_;
  const unsigned count_;
  const fds which_;
  unique_fd dead_;
  std::function<void()> on_ended_;
  std::atomic<bool> ended_{false};
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  mode mode_ = mode::serving;
  std::vector<std::unique_ptr<reader>> readers_;
};

}  // namespace fusexx::transport
