#pragma once
// I/O a coroutine handler can co_await. On an io_uring queue thread the
// operation goes to that queue's ring and the handler is resumed by its
// completion, so the thread serves other requests meanwhile. Anywhere else
// (the classic transport) it runs as the ordinary blocking syscall, so the
// same filesystem code works on both transports.
//
//   auto n = co_await fusexx::io::pread(fd, into, offset);   // result<std::size_t>
//   if (!n) co_return fusexx::error(n.error());
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <coroutine>
#include <cstring>
#include <span>
#include <thread>
#include <utility>

#include "detail/handler_scope.hpp"
#include "detail/timer_thread.hpp"
#include "result.hpp"
#include "transport/ring.hpp"

namespace fusexx::io {

namespace detail {

// Prep fills the SQE; Blocking is the syscall used off the ring; Convert
// turns a non-negative result into the value. Both report -errno.
template <class T, class Prep, class Blocking, class Convert>
class ring_operation : private transport::completion {
 public:
  ring_operation(Prep prep, Blocking blocking, Convert convert)
      : prep_(std::move(prep)), blocking_(std::move(blocking)), convert_(std::move(convert)) {}

  bool await_ready() {
    if (transport::current_ring() != nullptr) return false;
    res_ = blocking_();
    return true;
  }
  void await_suspend(std::coroutine_handle<> h) {
    waiting_ = h;
    on_complete = [](transport::completion* self, int res) {
      auto* op = static_cast<ring_operation*>(self);
      op->res_ = res;
      --transport::awaited_operations();
      op->waiting_.resume();
    };
    ++transport::awaited_operations();
    io_uring_sqe* sqe = transport::next_sqe(transport::current_ring());
    prep_(sqe);
    io_uring_sqe_set_data(sqe, static_cast<transport::completion*>(this));
    // Submitted with the queue thread's next batch.
  }
  result<T> await_resume() {
    if (res_ < 0) return error(-res_);
    return convert_(res_);
  }

 private:
  Prep prep_;
  Blocking blocking_;
  Convert convert_;
  std::coroutine_handle<> waiting_;
  long res_ = 0;
};

template <class T, class Prep, class Blocking, class Convert>
auto make(Prep p, Blocking b, Convert c) {
  return ring_operation<T, Prep, Blocking, Convert>(std::move(p), std::move(b), std::move(c));
}

inline long or_errno(long r) { return r < 0 ? -errno : r; }
inline auto to_size = [](long n) { return static_cast<std::size_t>(n); };

}  // namespace detail

inline auto pread(int fd, std::span<std::byte> into, off_t offset) {
  return detail::make<std::size_t>(
      [=](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, into.data(), static_cast<unsigned>(into.size()), offset); },
      [=] { return detail::or_errno(::pread(fd, into.data(), into.size(), offset)); }, detail::to_size);
}

inline auto pwrite(int fd, std::span<const std::byte> data, off_t offset) {
  return detail::make<std::size_t>(
      [=](io_uring_sqe* sqe) {
        io_uring_prep_write(sqe, fd, data.data(), static_cast<unsigned>(data.size()), offset);
      },
      [=] { return detail::or_errno(::pwrite(fd, data.data(), data.size(), offset)); }, detail::to_size);
}

inline auto fsync(int fd, bool datasync = false) {
  return detail::make<void>(
      [=](io_uring_sqe* sqe) { io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0); },
      [=] { return detail::or_errno(datasync ? ::fdatasync(fd) : ::fsync(fd)); },
      [](long) { return result<void>{}; });
}

// Opens `path` relative to `dir`; the result is the new fd (owned by the caller).
inline auto openat(int dir, const char* path, int flags, mode_t mode = 0) {
  // Close-on-exec on both paths, so an fd never leaks into a child whichever
  // transport served the request.
  return detail::make<int>([=](io_uring_sqe* sqe) { io_uring_prep_openat(sqe, dir, path, flags | O_CLOEXEC, mode); },
                           [=] { return detail::or_errno(::openat(dir, path, flags | O_CLOEXEC, mode)); },
                           [](long fd) { return static_cast<int>(fd); });
}

// statx into `out`, which must stay valid until the await completes.
inline auto statx(int dir, const char* path, int flags, unsigned mask, struct statx* out) {
  return detail::make<void>([=](io_uring_sqe* sqe) { io_uring_prep_statx(sqe, dir, path, flags, mask, out); },
                            [=] { return detail::or_errno(::statx(dir, path, flags, mask, out)); },
                            [](long) { return result<void>{}; });
}

// Suspends for `d` without blocking a serving thread: on an io_uring queue
// thread the ring times it; anywhere else the process's timer thread
// resumes the handler (detail/timer_thread.hpp), so a classic transport
// thread serves other requests meanwhile. Either way a handler that wakes
// while its server is parked is held back until the server resumes.
class sleep_for : private transport::completion {
 public:
  explicit sleep_for(std::chrono::nanoseconds d) : d_(std::max(d, std::chrono::nanoseconds(0))) {
    auto s = std::chrono::duration_cast<std::chrono::seconds>(d_);
    ts_.tv_sec = s.count();
    ts_.tv_nsec = (d_ - s).count();
  }
  bool await_ready() const noexcept { return d_.count() == 0; }
  void await_suspend(std::coroutine_handle<> h) {
    io_uring* ring = transport::current_ring();
    if (ring == nullptr) {
      fusexx::detail::timer_thread::instance().resume_at(std::chrono::steady_clock::now() + d_, h,
                                                         fusexx::detail::current_scope());
      return;
    }
    waiting_ = h;
    scope_ = fusexx::detail::current_scope();
    on_complete = [](transport::completion* self, int) {
      --transport::awaited_operations();
      auto* me = static_cast<sleep_for*>(self);
      // Parked: no handler runs; the server resumes it when it resumes.
      if (me->scope_ && me->scope_->hold_back(me->waiting_)) return;
      me->waiting_.resume();
    };
    ++transport::awaited_operations();
    io_uring_sqe* sqe = transport::next_sqe(ring);
    io_uring_prep_timeout(sqe, &ts_, 0, 0);
    io_uring_sqe_set_data(sqe, static_cast<transport::completion*>(this));
  }
  void await_resume() const noexcept {}

 private:
  std::chrono::nanoseconds d_;
  __kernel_timespec ts_{};
  std::coroutine_handle<> waiting_;
  fusexx::detail::handler_scope* scope_ = nullptr;
};

}  // namespace fusexx::io
