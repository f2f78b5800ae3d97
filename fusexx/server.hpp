#pragma once
// A mounted, serving filesystem. start() mounts and returns once the kernel's
// INIT has been answered, so the mount is usable (or it fails with the reason
// and leaves nothing mounted). stop() unmounts and ends the workers; the
// destructor stops too. wait() returns when the filesystem was unmounted
// from outside or stop() was called.
#include <sys/eventfd.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>

#include "dispatch.hpp"
#include "failure.hpp"
#include "fd.hpp"
#include "filesystem.hpp"
#include "log.hpp"
#include "mount/mount.hpp"
#include "mount/options.hpp"
#include "session.hpp"
#include "transport/classic.hpp"

namespace fusexx {

struct server_options {
  mount_options mount;
  transport::classic_options classic;
  std::chrono::milliseconds init_timeout{30000};  // how long start() waits for the kernel's INIT
};

template <filesystem Fs>
class server {
 public:
  server(Fs& fs, server_options options) : fs_(fs), options_(std::move(options)), dispatcher_(fs_, state_) {}
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  ~server() { stop(); }

  outcome<void> start() {
    auto m = mount::create(options_.mount, device_);
    if (!m) return std::unexpected(m.error());
    mount_ = std::move(*m);
    transport_ = std::make_unique<transport::classic_transport<Fs>>(dispatcher_, device_.get(), options_.classic);
    transport_->on_all_stopped([this] { mark_ended(); });
    transport_->start();

    const auto deadline = std::chrono::steady_clock::now() + options_.init_timeout;
    auto phase = state_.wait_for_init([&] {
      return std::chrono::steady_clock::now() > deadline || !transport_->running();
    });
    if (phase == session_state::phase::serving) return {};

    failure f;
    if (phase == session_state::phase::init_failed) {
      // With asynchronous INIT the mount already exists and would answer
      // ECONNREFUSED to everyone: take it away before reporting.
      f = failure{state_.init_error(), fmt::format("mounting {} failed: {}: {}", options_.mount.mountpoint,
                                                   state_.init_message(), state_.init_error().message())};
    } else if (!transport_->running()) {
      f = failure{std::error_code(ENOTCONN, std::system_category()),
                  fmt::format("mounting {} failed: the connection ended before INIT", options_.mount.mountpoint)};
    } else {
      f = failure{std::error_code(ETIMEDOUT, std::system_category()),
                  fmt::format("mounting {} failed: the kernel sent no INIT within {} ms", options_.mount.mountpoint,
                              options_.init_timeout.count())};
    }
    stop();
    return std::unexpected(f);
  }

  // Unmounts (lazily) and ends the workers. Safe to call more than once and
  // from any thread but a worker.
  void stop() {
    std::lock_guard stop_lock(stop_mutex_);
    if (mount_.active()) {
      if (auto r = mount_.unmount(); !r) log::error("{}", r.error().message);
    }
    if (transport_) {
      transport_->stop();
      transport_->join();
      transport_.reset();
    }
    device_.reset();
    mark_ended();
  }

  // Blocks until the workers have ended (unmounted from outside, or stop()).
  void wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return ended_; });
  }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, d, [&] { return ended_; });
  }

  // Readable (poll) once the workers have ended, for event loops.
  int ended_fd() const noexcept { return ended_event_.get(); }

  session_state& state() noexcept { return state_; }
  const connection& conn() const noexcept { return state_.conn; }
  const std::string& mountpoint() const noexcept { return options_.mount.mountpoint; }
  mount_method method() const noexcept { return mount_.method(); }
  unsigned worker_count() const noexcept { return transport_ ? transport_->worker_count() : 0; }

 private:
  void mark_ended() {
    {
      std::lock_guard lock(mutex_);
      ended_ = true;
    }
    cv_.notify_all();
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(ended_event_.get(), &one, sizeof one);
  }

  Fs& fs_;
  server_options options_;
  session_state state_;
  dispatcher<Fs> dispatcher_;
  unique_fd device_;
  mount mount_;
  std::unique_ptr<transport::classic_transport<Fs>> transport_;
  std::mutex stop_mutex_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool ended_ = false;
  unique_fd ended_event_{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
};

}  // namespace fusexx
