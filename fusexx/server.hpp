#pragma once
// A mounted, serving filesystem. start() mounts and returns once the kernel's
// INIT has been answered, so the mount is usable — or fails with the reason
// and leaves nothing mounted. stop() unmounts and ends the workers; the
// destructor stops too. wait() returns when the filesystem was unmounted
// from outside or stop() was called.
//
// Start-up, in order (docs/lifecycle.md has the timeline):
//  1. open /dev/fuse and switch it to synchronous INIT where possible;
//  2. start the worker that will read INIT (before the mount call when INIT is
//     synchronous, since that call blocks until INIT is answered);
//  3. mount; with synchronous INIT a failing init() makes the mount call fail;
//  4. start the other workers on cloned fds;
//  5. with asynchronous INIT, wait for INIT; if init() failed, unmount again.
// A watchdog bounds all of it: if INIT is not answered within init_timeout
// (a hanging init()), it answers INIT with ETIMEDOUT itself, which fails the
// mount instead of leaving it blocked forever.
#include <sys/eventfd.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>

#include "dispatch.hpp"
#include "failure.hpp"
#include "fd.hpp"
#include "filesystem.hpp"
#include "log.hpp"
#include "mount/mount.hpp"
#include "mount/options.hpp"
#include "session.hpp"
#include "transport/classic.hpp"
#include "transport/uring.hpp"

namespace fusexx {

// How requests reach the server. `automatic` uses FUSE over io_uring where
// the kernel offers it and falls back to /dev/fuse, saying why, otherwise;
// asking for `uring` where it is unavailable is an error.
enum class transport_kind { automatic, classic, uring };

inline std::optional<transport_kind> parse_transport(std::string_view s) {
  if (s == "auto" || s == "automatic") return transport_kind::automatic;
  if (s == "classic" || s == "dev") return transport_kind::classic;
  if (s == "uring" || s == "io_uring") return transport_kind::uring;
  return std::nullopt;
}

struct server_options {
  mount_options mount;
  transport_kind transport = transport_kind::automatic;
  transport::classic_options classic;
  transport::uring_options uring;
  std::chrono::milliseconds init_timeout{30000};  // the longest INIT (and init()) may take
};

template <filesystem Fs>
class server {
 public:
  server(Fs& fs, server_options options) : fs_(fs), options_(std::move(options)), dispatcher_(fs_, session_) {}
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  ~server() { stop(); }

  // Mounts and serves. A stop request on `cancel` (e.g. the daemon's parent
  // died) abandons the start-up: INIT is refused and the mount fails.
  outcome<void> start(std::stop_token cancel = {}) {
    std::stop_source abandon_mount;
    auto give_up = [&](int errnum, std::string why) {
      session_.init().abandon(errnum, std::move(why));
      abandon_mount.request_stop();
    };
    std::stop_callback on_cancel(cancel, [&] { give_up(ECANCELED, "start-up was cancelled"); });
    std::jthread watchdog([&, deadline = std::chrono::steady_clock::now() + options_.init_timeout](
                              std::stop_token done) {
      // Wakes when start() is done with it, or at the deadline.
      std::mutex m;
      std::condition_variable_any cv;
      std::unique_lock lock(m);
      cv.wait_until(lock, done, deadline, [] { return false; });
      if (!done.stop_requested() && session_.init().current() == detail::init_gate::phase::waiting)
        give_up(ETIMEDOUT, fmt::format("INIT was not answered within {} ms (a hanging init()?)",
                                       options_.init_timeout.count()));
    });


    if (auto r = plan_transport(); !r) return std::unexpected(r.error());
    mount_hooks hooks{.serve_init = [this](int fd) { start_session_worker(fd); },
                      .await_init = [this] { return await_init() == detail::init_gate::phase::serving; },
                      .in_mount_call = [this](bool inside) { session_.init().set_mount_in_progress(inside); }};
    auto m = mount::create(options_.mount, device_, hooks, abandon_mount.get_token());
    session_.init().set_mount_in_progress(false);
    if (!m) return abort_start(m.error());
    mount_ = std::move(*m);

    auto phase = await_init();
    watchdog.request_stop();
    if (phase == detail::init_gate::phase::serving) {
      if (uring_) {
        log::debug("serving {} through io_uring ({} queues; /dev/fuse keeps one reader)", mountpoint(),
                   uring_->queue_count());
      } else {
        if (options_.transport == transport_kind::uring)
          return abort_start(failure{std::error_code(EOPNOTSUPP, std::system_category()),
                                     fmt::format("the io_uring transport was required, but {}", uring_unusable_)});
        if (!uring_unusable_.empty()) log::info("serving through /dev/fuse: {}", uring_unusable_);
        transport_->start_clone_workers();
      }
      log::debug("serving {} ({} INIT)", mountpoint(), mount_.sync_init() ? "synchronous" : "asynchronous");
      return {};
    }
    // With asynchronous INIT the mount already exists and would refuse every
    // access (ECONNREFUSED): abort_start() takes it away before reporting.
    return abort_start(failure{std::error_code(ENOTCONN, std::system_category()),
                               "the connection ended before INIT was answered"});
  }

  // Unmounts (lazily) and ends the workers. Safe to call more than once and
  // from any thread but a worker. Waits for handlers still running. Calls the
  // filesystem's destroy() if INIT succeeded and no DESTROY arrived (the
  // kernel sends none when a /dev/fuse mount ends), as libfuse does.
  void stop() {
    std::lock_guard stop_lock(stop_mutex_);
    stop_serving(/*stop_rings=*/false);
    // The connection is over: notifications fail from now on, and a retrieve
    // still waiting for its NOTIFY_REPLY ends with ENOTCONN at once instead
    // of holding its handler (and so the join below) until the bounded wait.
    session_.notify().detach();
    // destroy() runs once the /dev/fuse workers have ended, and before the
    // fds and ring entries go: handlers it resumes (memfs's blocked lock
    // requests) can still hand in their replies and finish instead of being
    // abandoned. The io_uring queue threads stop only after it, so that such
    // replies are committed: where the connection could not be ended (no
    // fusectl access, e.g. in a user namespace), a request whose entry we
    // hold ends only with that commit.
    auto end_session = [this] {
      dispatcher_.end_session();
      if (uring_) uring_->stop();
    };
    if (transport_) transport_->join(end_session);
    else end_session();
    uring_.reset();
    transport_.reset();
    // Backing files are registered through the device fd that closes now;
    // handlers that ran above (release) could still close theirs.
    session_.backing().detach();
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

  // True when a worker is still inside a handler that did not return when
  // asked to stop (typically a hung init()); joining it would block.
  bool has_stuck_workers() const noexcept { return transport_ && transport_->live_workers() > 0; }

  // The connection this server serves (fusexx/session.hpp).
  fusexx::session& session() noexcept { return session_; }
  const connection& conn() const noexcept { return session_.conn(); }
  const std::string& mountpoint() const noexcept { return options_.mount.mountpoint; }
  mount_method method() const noexcept { return mount_.method(); }
  bool sync_init() const noexcept { return mount_.sync_init(); }
  unsigned worker_count() const noexcept { return transport_ ? transport_->worker_count() : 0; }
  // True when requests come through io_uring queues (one per possible CPU).
  bool using_uring() const noexcept { return uring_ != nullptr; }
  unsigned uring_queue_count() const noexcept { return uring_ ? uring_->queue_count() : 0; }

 private:
  // Until INIT is answered either way (the watchdog bounds it) or the
  // connection ends.
  detail::init_gate::phase await_init() { return session_.init().wait(); }

  // Decides, before mounting, whether to ask for FUSE over io_uring, and
  // hooks the io_uring transport in around the INIT reply.
  outcome<void> plan_transport() {
    if (options_.transport == transport_kind::classic) return {};
    uring_unusable_ = transport::uring_unavailable_reason();
    if (!uring_unusable_.empty()) {
      if (options_.transport == transport_kind::uring)
        return fail(EOPNOTSUPP, "the io_uring transport was required, but {}", uring_unusable_);
      return {};
    }
    session_.conn().want(proto::init_flag::over_io_uring);
    session_.before_init_reply = [this](const connection& c, std::uint64_t granted) {
      if (!(granted & proto::init_flag::over_io_uring)) {
        uring_unusable_ = "the kernel did not offer FUSE_OVER_IO_URING in INIT";
        return granted;
      }
      auto t = std::make_unique<transport::uring_transport<Fs>>(dispatcher_, device_.get(), options_.uring);
      if (std::string why = t->prepare(c); !why.empty()) {
        uring_unusable_ = "setting up the rings failed: " + why;
        return granted & ~proto::init_flag::over_io_uring;
      }
      uring_ = std::move(t);
      return granted;
    };
    session_.after_init_reply = [this](const connection&) {
      if (uring_) uring_->go();
    };
    return {};
  }

  void start_session_worker(int fd) {
    // Backing-file ioctls may go to any fd of the connection; this one lives
    // until stop().
    session_.backing().attach(fd);
    transport_ = std::make_unique<transport::classic_transport<Fs>>(dispatcher_, fd, options_.classic);
    transport_->on_all_stopped([this] {
      // The connection ended (unmounted, or the helper went away) before INIT
      // was answered: nothing will answer it any more.
      session_.init().abandon(ENOTCONN, "the connection ended before INIT was answered");
      mark_ended();
    });
    transport_->start_session_worker();
  }

  // Unmounts and asks the workers to stop, without waiting for a handler that
  // does not return. `stop_rings`: also end the io_uring queue threads.
  void stop_serving(bool stop_rings = true) {
    const auto connection = mount_.connection_id();
    if (mount_.active()) {
      if (auto r = mount_.unmount(); !r) log::error("{}", r.error().message);
    }
    // The lazy unmount leaves the connection alive while files are open. A
    // server that stops cannot answer them any more, and requests it already
    // took (an io_uring entry whose handler is suspended) would wait forever,
    // their applications unkillable: end the connection so they all fail now.
    if (connection && abort_fuse_connection(*connection))
      log::debug("ended connection {} (files were still open)", *connection);
    if (uring_ && stop_rings) uring_->stop();  // ends the queue threads; their entries stay until uring_ goes
    if (transport_) transport_->stop();
  }

  // Cleans up a failed start-up and says why it failed. When INIT failed, the
  // filesystem's own error wins over what the mount call saw (the kernel
  // reports every INIT failure as ENOTCONN).
  std::unexpected<failure> abort_start(failure mount_failure) {
    // Read before stopping: the workers' end settles a pending INIT too.
    const bool init_failed = session_.init().current() == detail::init_gate::phase::failed;
    stop_serving();
    if (init_failed && session_.init().error())
      return std::unexpected(failure{session_.init().error(),
                                     fmt::format("mounting {} failed: {}", mountpoint(), session_.init().message())});
    return std::unexpected(std::move(mount_failure));
  }

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
  fusexx::session session_;
  detail::dispatcher<Fs> dispatcher_;
  unique_fd device_;
  mount mount_;
  std::unique_ptr<transport::classic_transport<Fs>> transport_;
  std::unique_ptr<transport::uring_transport<Fs>> uring_;
  std::string uring_unusable_;  // why io_uring is not used, when it is not
  std::mutex stop_mutex_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool ended_ = false;
  unique_fd ended_event_{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
};

}  // namespace fusexx
