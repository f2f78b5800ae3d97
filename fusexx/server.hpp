#pragma once
// A mounted, serving filesystem: a session (fusexx/session.hpp), a mount, and
// a transport — the control channel on the session's /dev/fuse fd plus a data
// plane (classic readers on cloned fds, or io_uring queues).
//
// Its lifecycle is two coroutines on an event loop (fusexx/event_loop.hpp):
//   start_async: mount (the mount call blocks for synchronous INIT; a
//     watchdog answers INIT with an error at the deadline or on cancellation,
//     and the call returns); with asynchronous INIT, then INIT answered |
//     deadline | cancelled; then the data plane.
//   stop_async:  unmount and end the connection where possible; the channels
//     stop taking requests; every handler still in flight is interrupted and
//     awaited; destroy(); close.
// start() and stop() run them to completion on a loop of their own, for
// programs without one. park()/resume() hold the server at a request
// boundary with the connection intact (docs/lifecycle.md, "Parking").
//
// docs/lifecycle.md has the timeline and every failure case.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/time.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "detail/event.hpp"
#include "detail/timer_thread.hpp"
#include "detail/watchdog.hpp"
#include "dispatch.hpp"
#include "event_loop.hpp"
#include "failure.hpp"
#include "fd.hpp"
#include "filesystem.hpp"
#include "log.hpp"
#include "mount/mount.hpp"
#include "mount/mountinfo.hpp"
#include "mount/options.hpp"
#include "control.hpp"
#include "restart/control_socket.hpp"
#include "restart/handover.hpp"
#include "restart/journaling.hpp"
#include "restart/keeper.hpp"
#include "restart/restartable.hpp"
#include "restart/session_snapshot.hpp"
#include "restart/snapshot.hpp"
#include "restart/systemd.hpp"
#include "session.hpp"
#include "task.hpp"
#include "transport/device.hpp"
#include "transport/uring.hpp"
#include "version.hpp"

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
  bool stats = true;  // per-opcode statistics for the control socket (fusexx/stats.hpp); -o stats=off
  std::uint64_t checkpoint_bytes = std::uint64_t{1} << 20;  // supervised: a checkpoint once the journal holds this much (at least)
  // Supervised: the journals keep their pages across checkpoints, for the
  // records that follow; after this long without a checkpoint, what their
  // records do not use goes back (but for checkpoint_bytes each).
  std::chrono::seconds journal_idle{10};
};

// What park() did: whether every request in flight came to an end, and which
// did not when it gave up.
struct park_report {
  bool complete = true;                       // no handler is running or suspended
  std::vector<request_in_flight> unfinished;  // handlers still running or suspended at the deadline
  std::size_t running = 0;                    // of those, on a serving thread (the rest are suspended coroutines)
  std::size_t held = 0;                       // io_uring: requests placed in entries since, held until resume
};

template <filesystem Fs>
class server {
 public:
  using clock = std::chrono::steady_clock;

  server(Fs& fs, server_options options) : fs_(fs), options_(std::move(options)), dispatcher_(fs_, session_) {
    options_.mount.root_is_file = fusexx::root_is_file<Fs>();
    session_.stats().set_enabled(options_.stats);
  }
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  ~server() {
    stop();
    if (stuck_ > 0) {
      // A thread is inside a handler that never returned, using the channels
      // (and, through them, this server): leave them to it rather than free
      // them under it. (fusexx::main exits the process instead.)
      log::warn("{} thread(s) stuck in a handler were left running", stuck_);
      (void)control_.release();
      (void)plane_.release();
    }
  }

  // Mounts and serves; returns once the mount is usable, or fails with the
  // reason and nothing mounted. A stop request on `cancel` (e.g. the
  // daemon's parent died) abandons the start-up: INIT is refused and the
  // mount fails.
  outcome<void> start(std::stop_token cancel = {}) {
    event_loop loop;
    return flatten(loop.run(start_async(loop, cancel)));
  }
  // Unmounts, stops serving, calls destroy(). Safe to call more than once and
  // from any thread but a serving one.
  void stop() {
    event_loop loop;
    loop.run(stop_async(loop));
  }

  // (Coroutines here take what they keep by reference, and their callers pass
  // named objects: GCC 12 mishandles temporaries that live across a co_await.)
  task<outcome<void>> start_async(event_loop& loop, const std::stop_token& cancel) {
    auto& gate = session_.init();
    std::stop_source abandon_mount;
    if (auto r = plan_transport(); !r) co_return failed(r.error());
    mount_hooks hooks{.serve_init = [this](int fd) { start_control(fd); },
                      .await_init = [this] { return session_.init().wait() == session_phase::serving; },
                      .in_mount_call = [this](bool inside) { session_.init().set_mount_in_progress(inside); },
                      // A successor or a tool that finds the mount finds the
                      // control socket too: it listens before the tree is
                      // attached, and is answered once the server serves.
                      .before_visible = [this](unsigned connection) { open_control_socket(connection); }};
    // Until INIT is answered, a watchdog gives up at the deadline or when
    // start-up is cancelled: it refuses INIT (answering it now if it is
    // waiting, so a mount call that blocks on it fails) and makes a mount
    // that waits on the helper give up.
    detail::watchdog give_up(clock::now() + options_.init_timeout, cancel, [&](detail::watchdog::reason why) {
      if (why == detail::watchdog::reason::deadline)
        gate.abandon(ETIMEDOUT, fmt::format("INIT was not answered within {} ms (a hanging init()?)",
                                            options_.init_timeout.count()));
      else
        gate.abandon(ECANCELED, "start-up was cancelled");
      abandon_mount.request_stop();
    });
    // The mount call blocks (fsconfig's CMD_CREATE until synchronous INIT is
    // answered, the helper until it is done). It is made right here, on the
    // loop's thread: nothing else waits on the loop before the server serves,
    // and the watchdog makes the call return.
    outcome<mount> mounted = mount::create(options_.mount, device_, hooks, abandon_mount.get_token());
    gate.set_mount_in_progress(false);
    if (!mounted) {
      give_up.disarm();
      const failure why = mounted.error();
      co_return co_await abort_start(loop, why);
    }
    mount_ = std::move(*mounted);

    // With asynchronous INIT (mount(2), the classic helper) INIT comes now.
    if (gate.current() == session_phase::waiting) co_await loop.first_ready(gate.settled().fd());
    give_up.disarm();
    if (gate.wait() != session_phase::serving) {
      const failure why{std::error_code(ENOTCONN, std::system_category()),
                        "the connection ended before INIT was answered"};
      co_return co_await abort_start(loop, why);
    }
    if (uring_) {
      log::debug("serving {} through io_uring ({} queues; /dev/fuse keeps one reader)", mountpoint(),
                 uring_->queue_count());
    } else {
      if (options_.transport == transport_kind::uring) {
        const failure why{std::error_code(EOPNOTSUPP, std::system_category()),
                          fmt::format("the io_uring transport was required, but {}", uring_unusable_)};
        co_return co_await abort_start(loop, why);
      }
      if (!uring_unusable_.empty()) log::info("serving through /dev/fuse: {}", uring_unusable_);
      start_classic_plane();
    }
    log::debug("serving {} ({} INIT)", mountpoint(), mount_.sync_init() ? "synchronous" : "asynchronous");
    if (!control_listener_) open_control_socket();  // mount(2), the helper: the mount was visible first
    co_return outcome<void>{};
  }

  task<void> stop_async(event_loop& loop) {
    {
      std::lock_guard lock(stop_mutex_);
      if (stopping_) co_return {};
      stopping_ = true;
    }
    // 1. Unmount; where files are still open, end the connection, so no
    //    application waits on a server that is going away. Both may block (a
    //    fuseblk unmount waits for DESTROY): on a thread.
    co_await loop.blocking([this] { end_connection(); });
    const bool alive = connection_alive();
    const auto soon = clock::now() + std::chrono::seconds(2);
    // 2. Take no more requests. io_uring queues drain: a request still
    //    arriving is answered ENOTCONN; where the connection could not be
    //    ended they go on draining after this returns, until it is.
    co_await loop.blocking([&] {
      if (control_) control_->stop(soon);
      if (plane_) plane_->stop(clock::now());  // the queues end only once their handlers have replied (step 6)
    });
    // 3. No more notifications; a retrieve still waiting ends with ENOTCONN.
    session_.notify().detach();
    // 4. Every handler still in flight is interrupted — handlers that honour
    //    interrupts (a blocked lock request) end now — and awaited.
    interrupt_in_flight();
    co_await loop.first_ready_until(soon, session_.scope().drained().fd());
    // 5. destroy(): the kernel sends DESTROY only to fuseblk mounts, so this
    //    is where a filesystem learns the connection is over. Handlers it
    //    wakes still reply (their channels' fds live until step 6).
    dispatcher_.end_session();
    if (co_await loop.first_ready_until(clock::now() + std::chrono::seconds(1), session_.scope().drained().fd()) != 0)
      for (auto& r : session_.scope().members())
        log::warn("stop: request {:#x} ({}) is still being handled; abandoned", r.unique, proto::name(r.opcode));
    // 6. Close.
    end_handover_receiver();
    control_listener_.reset();
    session_.backing().detach();
    co_await loop.blocking([this, alive] {
      // Once the connection has ended the kernel ends every io_uring entry,
      // so the queue threads end too; where it could not be ended, they
      // drain on by themselves (transport/uring.hpp).
      if (plane_ && !alive) plane_->stop(clock::now() + std::chrono::seconds(2));
      stuck_ = (control_ ? control_->stuck() : 0) + (plane_ ? plane_->stuck() : 0);
      if (stuck_ == 0) {
        control_.reset();
        plane_.reset();
        uring_ = nullptr;
        device_.reset();
      }
      // Otherwise a thread is inside a handler that never returned: the
      // channels and the fd stay (it uses them); has_stuck_workers() says so.
    });
    ended_.set();
    co_return {};
  }

  // Holds the server at a request boundary: the channels take no new
  // requests, and every handler in flight is awaited until `limit` — a
  // suspended coroutine handler only until `suspended_limit`, when given
  // (a lock request may wait for as long as its lock is held). The
  // connection stays; applications simply wait. What could not be brought to
  // an end by then is reported; it goes on running.
  park_report park(std::chrono::milliseconds limit, std::optional<std::chrono::milliseconds> suspended_limit = {}) {
    const auto deadline = clock::now() + limit;
    park_report report;
    report.complete = true;
    // A handler sleeping on the timer thread (a lock request retrying) is
    // not woken while parked: it stays suspended, as a blocked lock waiter.
    session_.scope().hold();
    if (control_) report.complete &= control_->park(deadline);
    if (plane_) report.complete &= plane_->park(deadline);
    report.complete &= session_.scope().join(suspended_limit ? std::min(deadline, clock::now() + *suspended_limit) : deadline);
    if (!report.complete) {
      report.unfinished = session_.scope().members();
      const transport::channel* channels[] = {control_.get(), plane_.get()};
      for (const auto* c : channels)
        if (c)
          for (auto& r : c->busy()) {
            report.unfinished.push_back(r);
            ++report.running;
          }
    }
    if (uring_) report.held = uring_->held();
    return report;
  }
  void resume() {
    if (plane_) plane_->resume();
    if (control_) control_->resume();
    for (auto h : session_.scope().release())
      detail::timer_thread::instance().resume_at(clock::now(), h, &session_.scope());
  }

  // ---- crash recovery under a keeper (restart/keeper.hpp, docs/restart.md) ----

  // Serves under a keeper (before start_async or recover_async): every
  // request that changes state is journaled, requests are read from the
  // connection's own fd only (the keeper holds it; a clone would close with
  // this process and end what was read through it), through /dev/fuse (the
  // kernel cannot resend what an io_uring entry holds).
  outcome<void> supervise(const supervision& s) {
    if constexpr (!crash_safe<Fs>) {
      return fail(EOPNOTSUPP, "this filesystem does not support crash recovery (it is not crash_safe)");
    } else {
      for (int i = 0; i < 2; ++i) {
        auto j = journal::map(s.journals[i]);
        if (!j) return std::unexpected(j.error());
        journals_[i] = std::move(*j);
      }
      supervision_ = s;
      generation_ = s.generation;
      checkpoint_crash_ = detail::checkpoint_crash_of(std::getenv("FUSEXX_CRASH_CHECKPOINT"), s.incarnation);
      options_.transport = transport_kind::classic;
      options_.classic.clone_fds = false;
      options_.classic.pinned_buffers = true;
      journaling_ = std::make_unique<detail::journaling<detail::dispatcher<Fs>>>(dispatcher_, journals_[active_],
                                                                                  options_.checkpoint_bytes,
                                                                                  recovery_of<Fs>());
      // The journal's first checkpoint_kb stay allocated: a small workload
      // never faults its pages in again.
      journaling_->keep(options_.checkpoint_bytes);
      journal_quiet_ = unique_fd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
      // The first checkpoint is taken right after INIT is answered, on the
      // thread that answered it, before it reads anything else: from then on
      // the kernel sends requests, and each is journaled after it.
      if (!s.recovering()) session_.after_init_reply = [this](const connection&) { first_checkpoint(); };
      return {};
    }
  }
  bool supervised() const noexcept { return static_cast<bool>(supervision_); }
  // The keeper is systemd's fd store (fusexx::main under a unit with one).
  bool kept_by_fd_store() const noexcept { return supervision_.fd_store; }
  // A checkpoint of a redo filesystem names its fds by number: its servers
  // share the keeper's fd table (restart/keeper.hpp).
  bool fds_by_number() const noexcept { return supervised() && recovery_of<Fs>() == recovery_model::redo; }

  // The first supervised server, once started: a checkpoint that knows how
  // the mount was made, then the keeper is told that it serves.
  task<outcome<void>> begin_supervised_async(event_loop& loop) {
    if (!co_await checkpoint_async(loop, /*in_process=*/true))
      co_return outcome<void>(fail(EIO, "supervise: the first checkpoint of {} could not be taken", mountpoint()));
    if (auto r = keeper::tell_serving(supervision_); !r)
      co_return outcome<void>(fail(EIO, "supervise: the keeper could not be told: {}", r.error().message()));
    co_return outcome<void>{};
  }

  // A successor after a crash (instead of start_async): restores the
  // keeper's last checkpoint, replays the journal on it, and continues the
  // connection; requests the dead server had read come again (NOTIFY_RESEND),
  // and those it had applied are answered from the journal.
  task<outcome<void>> recover_async([[maybe_unused]] event_loop& loop) {
    if constexpr (!crash_safe<Fs>) {
      co_return outcome<void>(fail(EOPNOTSUPP, "this filesystem does not support crash recovery"));
    } else {
      const auto started = clock::now();
      std::optional<transport::entry_layout> entries;
      if (auto restored = restore_from(supervision_.checkpoint, {}, entries); !restored)
        co_return failed(failure{restored.error().code,
                                 fmt::format("recovery: the checkpoint: {}", restored.error().message)});
      if (entries) co_return outcome<void>(fail(EPROTO, "recovery: the checkpoint is of an io_uring server"));
      // The records that follow the keeper's checkpoint G: the journal of
      // generation G, then the one of G+1 if a forked checkpoint was under
      // way (its child had not handed G+1 over). One of an older generation
      // is covered by the checkpoint.
      journal* after[2] = {nullptr, nullptr};
      for (int i = 0; i < 2; ++i) {
        const std::uint64_t g = journals_[i].generation();
        if (g > generation_ + 1)
          co_return outcome<void>(
              fail(EIO, "recovery: a journal follows checkpoint {}, the keeper has {}", g, generation_.load()));
        if (g >= generation_) after[g - generation_] = &journals_[i];
        if (g >= generation_ && journals_[i].overflowed())
          co_return outcome<void>(fail(EIO, "recovery: the crash journal overflowed (no checkpoint could be taken): "
                                       "the state cannot be rebuilt"));
      }
      if (after[1] && !after[0])
        co_return outcome<void>(fail(EIO, "recovery: the journal of checkpoint {} is missing", generation_.load()));
      std::vector<journal*> logs;
      for (journal* j : after)
        if (j) logs.push_back(j);
      if (logs.empty()) {  // nothing after the checkpoint: start the first journal over
        journals_[0].reset(generation_);
        logs.push_back(&journals_[0]);
      }
      active_ = static_cast<unsigned>(logs.back() - journals_);
      inactive_live_ = logs.size() == 2;  // the next checkpoint must cover both: not a forked one
      if (!inactive_live_) journals_[1 - active_].reset(0);
      journaling_->switch_to(journals_[active_], std::nullopt);
      detail::replay_report replayed;
      if constexpr (recovery_of<Fs>() == recovery_model::redo) {
        static_assert(redo_recoverable<Fs>, "fusexx: a filesystem recovered by redo needs bool redo(std::span<const "
                                            "std::byte>) and std::vector<int> recovered() (journal_note.hpp)");
        std::vector<std::vector<std::byte>> rerun;
        replayed = journaling_->redo(logs, [this](std::span<const std::byte> note) { return fs_.redo(note); }, rerun);
        // What the filesystem holds now is what the notes said; it checks
        // each fd is still the file it was, and whatever else the servers
        // before left open goes.
        std::vector<int> held = fs_.recovered();
        std::sort(held.begin(), held.end());
        std::size_t closed = 0;
        for (int fd : supervision_.leftovers)
          if (!std::binary_search(held.begin(), held.end(), fd)) closed += ::close(fd) == 0;
        if (closed) log::debug("recovery: {} fd(s) the servers before left open were closed", closed);
        for (const auto& request : rerun) journaling_->run_again(request, session_.conn().request_buffer_size() + 4096);
      } else {
        replayed = journaling_->replay(logs, session_.conn().request_buffer_size() + 4096);
      }
      device_ = unique_fd(::fcntl(supervision_.device, F_DUPFD_CLOEXEC, 0));
      if (!device_) co_return outcome<void>(fail(errno, "recovery: dup: {}", std::strerror(errno)));
      open_control_socket();
      session_.notify().attach(transport::fd_sink(device_.get()));
      // Requests the dead server read and did not answer come again.
      if (auto r = session_.notify().resend(); !r) log::warn("NOTIFY_RESEND failed: {}", r.error().message());
      start_control(device_.get());
      start_classic_plane();
      constexpr bool redone = recovery_of<Fs>() == recovery_model::redo;
      log::info("recovered {} in {} ms: checkpoint {} and {} journaled request(s) {}{}{}", mountpoint(),
                std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started).count(), generation_.load(),
                replayed.records, redone ? "redone" : "replayed",
                !replayed.differing && !replayed.unfinished ? std::string()
                : redone ? fmt::format(" ({} note(s) could not be redone)", replayed.differing)
                         : fmt::format(" ({} answered differently, {} did not finish)", replayed.differing,
                                       replayed.unfinished),
                replayed.ended ? fmt::format("; {} still waiting ended (their resends wait)", replayed.ended)
                               : std::string());
      if (auto r = keeper::tell_serving(supervision_); !r)
        log::warn("supervise: the keeper could not be told: {}", r.error().message());
      watch_adopted_mount();
      co_return outcome<void>{};
    }
  }

  // The checkpoint at INIT (see supervise()): nothing else has been read
  // yet, so nothing needs parking. The mount call is still under way: the
  // mount is described as asked for (the next checkpoint, once started,
  // says how it was made). With it the keeper gets the connection's fd.
  void first_checkpoint() {
    if constexpr (crash_safe<Fs>) {
      auto sealed = write_snapshot(mount_description{options_.mount.mountpoint, mount_method::new_api, {},
                                                     options_.mount.sync_init});
      if (!sealed) return log::error("supervise: the checkpoint at INIT: {}", sealed.error().message);
      const std::uint64_t next = next_generation();
      if (auto sent = keeper::send_checkpoint(supervision_, sealed->memfd.get(), next, control_fd_); !sent)
        return log::error("supervise: the checkpoint at INIT: {}", sent.error().message);
      journaling_->checkpointed(generation_ = next);
      journals_[1 - active_].reset(0);
    }
  }

  // A checkpoint taken by a forked child (checkpoint_async) has ended:
  // readable pidfd; -1 when none runs.
  int checkpoint_child_fd() const noexcept { return checkpoint_pidfd_ ? checkpoint_pidfd_.get() : -1; }
  void checkpoint_child_ended() {
    int status = 0;
    if (::waitpid(checkpoint_child_pid_, &status, 0) != checkpoint_child_pid_) status = 1 << 8;
    std::uint64_t size = 0;
    auto said = receive_with_fds(checkpoint_size_.get(), sizeof size);
    bool told = said && said->data.size() == sizeof size;
    if (told) std::memcpy(&size, said->data.data(), sizeof size);
    // systemd's store as the keeper hears only this process (NotifyAccess=
    // main): the child handed the checkpoint here, to be stored from here.
    if (told && supervision_.fd_store && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      outcome<void> stored = said->fds.size() == 1
                                 ? keeper::send_checkpoint(supervision_, said->fds[0].get(), checkpoint_generation_)
                                 : outcome<void>(fail(EPROTO, "the child sent no checkpoint"));
      if (!stored) {
        log::error("checkpoint {}: {}", checkpoint_generation_, stored.error().message);
        told = false;
      }
    }
    checkpoint_pidfd_.reset();
    checkpoint_size_.reset();
    checkpoint_child_pid_ = -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && told) {
      // The keeper holds it: the journal before it is covered.
      generation_ = checkpoint_generation_;
      journals_[1 - active_].reset(0);
      inactive_live_ = false;
      next_checkpoint_after(size);
      log::debug("checkpoint {} of {} (forked) in {} us", generation_.load(), mountpoint(),
                 std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - checkpoint_started_).count());
    } else {
      // Both journals stay: the next checkpoint is taken in this process.
      log::error("checkpoint {} of {}: its child {}", checkpoint_generation_, mountpoint(),
                 WIFSIGNALED(status) ? fmt::format("was killed by signal {}", WTERMSIG(status))
                                     : fmt::format("failed (status {})", WEXITSTATUS(status)));
      journaling_->checkpointed_failed();
    }
  }

  // Readable when the journal has grown enough for a checkpoint; -1 when
  // not supervised.
  int checkpoint_fd() const noexcept { return journaling_ ? journaling_->checkpoint_wanted_fd() : -1; }

  // A checkpoint. Parked only for a moment: records go to the other
  // journal from then on, and a forked child — the memory as it was, copied
  // on write — writes the snapshot and hands it to the keeper while this
  // process serves on (checkpoint_child_ended() settles it). `in_process`,
  // or while the other journal still holds records no checkpoint covers
  // (the last child failed; just recovered from a crash amid one): parked
  // for the whole snapshot, and both journals start over. False when it
  // could not be taken (a handler still running, save() failed, the keeper
  // did not answer, one still under way): the journal goes on growing, and
  // asks again a second later at the earliest.
  task<bool> checkpoint_async(event_loop& loop, bool in_process = false) {
    if constexpr (!crash_safe<Fs>) {
      co_return false;
    } else {
      if (checkpoint_pidfd_) {
        journaling_->checkpointed_failed();
        co_return false;
      }
      const auto started = clock::now();
      park_report parked = co_await loop.blocking(
          [this] { return park(std::chrono::milliseconds(500), std::chrono::milliseconds(20)); });
      if (parked.running == 0 && !in_process && !inactive_live_) co_return fork_checkpoint(started);
      bool done = false;
      outcome<sealed_snapshot> sealed = fail(EAGAIN, "not taken");
      if (parked.running == 0) sealed = write_snapshot();
      if (parked.running > 0) {
        log::info("checkpoint postponed: {} request(s) still being handled", parked.running);
      } else if (!sealed) {
        log::error("checkpoint: {}", sealed.error().message);
      } else if (!sealed->fds.empty()) {
        log::error("checkpoint: the snapshot names {} open file(s), which the keeper cannot hold", sealed->fds.size());
      } else {
        const std::uint64_t next = next_generation();
        const int memfd = sealed->memfd.get();
        const supervision* keeper_of = &supervision_;
        outcome<void> sent = co_await loop.blocking(
            [keeper_of, memfd, next] { return keeper::send_checkpoint(*keeper_of, memfd, next); });
        if (!sent) {
          log::error("checkpoint: {}", sent.error().message);
        } else {
          if (checkpoint_crash_ == detail::checkpoint_crash::acked) detail::die_at_checkpoint("acked", next);
          journaling_->checkpointed(next);
          journals_[1 - active_].reset(0);
          inactive_live_ = false;
          generation_ = next;
          done = true;
          struct stat st {};
          next_checkpoint_after(::fstat(memfd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0);
          log::debug("checkpoint {} of {} in {} us", next, mountpoint(),
                     std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - started).count());
        }
      }
      if (!done) journaling_->checkpointed_failed();
      resume();
      co_return done;
    }
  }

  // (Parked.) Switches the records to the other journal, forks the child
  // that writes the checkpoint, resumes.
  bool fork_checkpoint(clock::time_point started) {
    const std::uint64_t next = next_generation();
    const unsigned other = 1 - active_;
    journaling_->switch_to(journals_[other], next);
    int size_pipe[2] = {-1, -1};  // the child's word: the snapshot's size (and the store's keeper: the snapshot)
    const pid_t pid = ::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, size_pipe) == 0 ? ::fork() : -1;
    if (pid == 0) {
      ::close(size_pipe[0]);
      if (checkpoint_crash_ == detail::checkpoint_crash::forked) ::_exit(9);  // (its parent dies below)
      checkpoint_in_child(size_pipe[1], next);
    }
    if (pid > 0 && checkpoint_crash_ == detail::checkpoint_crash::forked) detail::die_at_checkpoint("forked", next);
    if (pid < 0) {
      log::error("checkpoint: fork: {}", std::strerror(errno));
      for (int fd : size_pipe)
        if (fd >= 0) ::close(fd);
      journaling_->switch_to(journals_[active_], std::nullopt);  // nothing was recorded meanwhile: parked
      journals_[other].reset(0);
      journaling_->checkpointed_failed();
      resume();
      return false;
    }
    ::close(size_pipe[1]);
    checkpoint_size_ = unique_fd(size_pipe[0]);
    checkpoint_pidfd_ = unique_fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    checkpoint_child_pid_ = pid;
    checkpoint_generation_ = next;
    checkpoint_started_ = started;
    active_ = other;
    inactive_live_ = true;  // until the child has handed the checkpoint over
    resume();
    if (!checkpoint_pidfd_) checkpoint_child_ended();  // no pidfd (before Linux 5.3): wait for it here
    return true;
  }

  // The forked child of a checkpoint: only this thread, and the memory as it
  // was parked. Writes the snapshot, hands it to the keeper, tells the
  // parent its size, and leaves without running anything of the parent's.
  [[noreturn]] void checkpoint_in_child(int size_fd, std::uint64_t generation) {
    if (device_) ::close(device_.get());  // it must not keep the connection alive
    auto sealed = write_snapshot();
    if (!sealed || !sealed->fds.empty()) ::_exit(1);
    // The store's keeper hears only the main process: the parent stores it.
    const bool by_parent = supervision_.fd_store;
    if (!by_parent && !keeper::send_checkpoint(supervision_, sealed->memfd.get(), generation)) ::_exit(2);
    const std::uint64_t size = last_snapshot_size_;
    const int memfd[] = {sealed->memfd.get()};
    if (!send_with_fds(size_fd, std::as_bytes(std::span(&size, 1)), by_parent ? memfd : std::span<const int>{}))
      ::_exit(3);
    ::_exit(0);
  }

  // The generation of the next checkpoint: above the keeper's and above
  // every journal's. A forked checkpoint cut short by a crash leaves a
  // journal labelled with the generation its child was to hand over; the
  // successor replays that journal on the keeper's older checkpoint and
  // takes its first checkpoint in process. Were that one numbered like the
  // lost one, a crash between the keeper's ack and the journals starting
  // over would leave the keeper a checkpoint that includes the journal's
  // records, with the journal still labelled as following it: replayed
  // twice. Numbered above it, the journal reads as covered.
  std::uint64_t next_generation() const noexcept {
    return std::max({generation_.load(), journals_[0].generation(), journals_[1].generation()}) + 1;
  }

  // Readable once no checkpoint has been taken for a while after the last
  // one (give_back_journal_memory()); -1 when not supervised.
  int journal_quiet_fd() const noexcept { return journal_quiet_ ? journal_quiet_.get() : -1; }
  // The journals keep their pages across checkpoints (journal::reset), for
  // the records that follow to overwrite: a writer that goes on faults
  // nothing in. Once it has stopped, their memory past the records goes
  // back, but for checkpoint_kb each.
  void give_back_journal_memory() {
    std::uint64_t expirations = 0;
    [[maybe_unused]] ssize_t n = ::read(journal_quiet_.get(), &expirations, sizeof expirations);
    for (auto& j : journals_) journaling_->give_back(j);
  }

  // A checkpoint costs about the snapshot's size, so the next waits until
  // the journal holds twice as much (at least checkpoint_kb, at most half
  // the journal): the copies per byte written stay bounded however big the
  // filesystem is.
  void next_checkpoint_after(std::uint64_t snapshot_size) {
    last_snapshot_size_ = snapshot_size;
    // The journals' memory goes back if this stays the last checkpoint for a while.
    const itimerspec quiet{.it_interval = {}, .it_value = {.tv_sec = options_.journal_idle.count(), .tv_nsec = 0}};
    if (journal_quiet_) ::timerfd_settime(journal_quiet_.get(), 0, &quiet, nullptr);
    journaling_->checkpoint_at(std::clamp(2 * snapshot_size, options_.checkpoint_bytes,
                                          std::max(options_.checkpoint_bytes, journals_[0].capacity() / 2)));
  }

  // ---- handing the connection over (docs/restart.md) ----

  // Readable when a client connects to the control socket (fusexx::main
  // awaits it beside its signals); -1 when there is none.
  int control_fd() const noexcept { return control_listener_ ? control_listener_.get() : -1; }

  // Answers a client of the control socket: a tool asking for the server's
  // state (fusexx/control.hpp), or a successor asking to take the
  // connection over. Returns true once it has: this server has then left
  // (no unmount, no destroy()) and only the successor serves. False when the
  // handover did not happen (a query, refused, failed, or the peer went
  // away): this server serves on as before.
  task<bool> serve_control_async(event_loop& loop) {
    unique_fd peer(::accept4(control_listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!peer) co_return false;
    const int sock = peer.get();
    // A successor that stops reading must not hold this server: a send
    // waits at most a second at a time (send_snapshot_fds retries until
    // its own deadline).
    const timeval send_limit{1, 0};
    (void)::setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &send_limit, sizeof send_limit);
    // The socket is abstract, so anyone may connect, but only the same user
    // or root is answered. Another user's message is waited for only a
    // moment (enough for its send to land before the refusal): a client that
    // connects and says nothing must not hold this loop — signals, the
    // unmount, a real successor — for long. (The loop checks signals first
    // between clients.) A permitted client, a successor, may be slow.
    const auto hello_limit = peer_may_control(sock) ? std::chrono::milliseconds(5000) : std::chrono::milliseconds(250);
    auto hello = co_await loop.blocking([sock, hello_limit] { return handover::receive(sock, clock::now() + hello_limit); });
    if (hello && hello->what == handover::kind::query) {
      answer_query(sock, *hello);
      co_return false;
    }
    if (!hello || hello->what != handover::kind::hello) co_return false;
    ++handover_requests_;
    const auto refuse = [this, sock](const std::string& why) {
      ++handover_refused_;
      (void)handover::send(sock, {.what = handover::kind::refuse, .text = why});
      log::info("handover refused: {}", why);
    };
    if (!peer_may_control(sock)) {
      refuse("the successor runs as another user");
      co_return false;
    }
    if constexpr (!restartable<Fs>) {
      refuse("this filesystem is not restartable (it has no save()/restore())");
      co_return false;
    } else {
      if (supervised()) {
        refuse("this server is supervised (-o supervise): its keeper holds the connection and restarts it; a "
               "successor cannot take it over");
        co_return false;
      }
      if (hello->version != handover::protocol_version) {
        refuse(fmt::format("the successor speaks handover protocol {}, this server {}", hello->version,
                           handover::protocol_version));
        co_return false;
      }
      if (!mount_.connection_id() || hello->connection != *mount_.connection_id() || !connection_alive()) {
        refuse(fmt::format("{} this server's connection {} has ended", handover::not_this_connection,
                           mount_.connection_id().value_or(0)));
        co_return false;
      }
      if (hello->text != restart_type()) {
        refuse(fmt::format("the successor serves '{}', this mount is '{}'", hello->text, restart_type()));
        co_return false;
      }
      const auto started = clock::now();
      // Handlers on threads get half a second to finish; a suspended one 20
      // ms (a short await ends by then; a lock wait need not be waited for).
      park_report parked = co_await loop.blocking(
          [this] { return park(std::chrono::milliseconds(500), std::chrono::milliseconds(20)); });
      // A handler still running on a serving thread may be half-way through
      // a change: not a state to hand over. One that is suspended (a lock
      // request waiting) is left behind: it will never answer, and its
      // request goes to the successor (NOTIFY_RESEND on /dev/fuse; handed
      // over with its entry on io_uring).
      if (parked.running > 0) {
        resume();
        refuse(fmt::format("{} request(s) were still being handled (e.g. {:#x} {}); try again", parked.running,
                           parked.unfinished.back().unique, proto::name(parked.unfinished.back().opcode)));
        co_return false;
      }
      if (!parked.complete)
        log::info("handover: {} suspended request(s) will be resent to the successor", parked.unfinished.size());
      auto sealed = write_snapshot();
      if (!sealed) {
        resume();
        refuse(sealed.error().message);
        co_return false;
      }
      const int fds[] = {device_.get(), sealed->memfd.get(), control_listener_.get(),
                         uring_ ? uring_->region().fd() : -1};
      if (!handover::send(sock,
                          {.what = handover::kind::offer,
                           .pid = static_cast<std::uint32_t>(::getpid()),
                           .count = static_cast<std::uint32_t>(sealed->fds.size())},
                          std::span(fds, uring_ ? 4 : 3)) ||
          !handover::send_snapshot_fds(sock, sealed->fds, clock::now() + std::chrono::seconds(30))) {
        resume();
        log::info("handover: the successor went away before it had the offer; serving on");
        co_return false;
      }
      auto answer =
          co_await loop.blocking([sock] { return handover::receive(sock, clock::now() + std::chrono::seconds(60)); });
      if (!answer || answer->what != handover::kind::ack) {
        resume();
        log::info("handover not taken ({}); serving on",
                  answer ? answer->text : std::string(answer.error().message()));
        co_return false;
      }
      log::info("handed {} over to pid {} after {} ms parked", mountpoint(), hello->pid,
                std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started).count());
      if (uring_) {
        // Every ring entry goes to the successor, each with the request it
        // holds or gets next (the successor makes sure every one gets one);
        // only then may the rings close: an entry left available could be
        // given a request nobody would answer (docs/restart.md).
        uring_->hand_over([sock](unsigned q, unsigned i) {
          (void)handover::send(sock, {.what = handover::kind::entry, .queue = q, .index = i});
        });
        const bool all = co_await loop.blocking(
            [this] { return uring_->wait_ended(clock::now() + std::chrono::seconds(10)); });
        if (!all) log::warn("handover: not every io_uring entry was handed over within 10 s; leaving anyway");
      }
      co_await leave_async(loop);
      co_return true;
    }
  }

  // Continues the connection of the server at options.mount.mountpoint,
  // which hands it over (instead of start_async). Returns once this server
  // serves, or fails with the reason — the predecessor then serves on.
  task<outcome<void>> take_over_async(event_loop& loop) {
    static_assert(restartable<Fs>, "fusexx: only a restartable filesystem can take a mount over");
    auto offered = co_await loop.blocking([this] { return handover::ask(options_.mount.mountpoint, restart_type()); });
    if (!offered) co_return failed(offered.error());
    auto took = co_await take_over_async(loop, std::move(*offered));
    if (!took) co_return failed(failure{took.error(), took.error().message()});
    co_return std::move(*took);
  }

  // The same from an offer already received (handover::ask): restores its
  // snapshot and serves, acknowledging; or refuses, and the predecessor
  // resumes. An offer from the service manager's fd store (restart/systemd.hpp)
  // has no predecessor: no socket to answer on, no control socket (the
  // predecessor's went with it: this server opens its own).
  task<outcome<void>> take_over_async(event_loop& loop, handover::offer offer) {
    static_assert(restartable<Fs>, "fusexx: only a restartable filesystem can take a mount over");
    const int fd = offer.sock.get();
    auto refuse = [fd](const failure& f) {
      if (fd >= 0) (void)handover::send(fd, {.what = handover::kind::refuse, .text = f.message});
      return failed(f);
    };
    std::optional<transport::entry_layout> entries;
    if (auto restored = restore_from(offer.snapshot.get(), std::move(offer.snapshot_fds), entries); !restored)
      co_return refuse(restored.error());
    if (entries) {
      // Served through rings: continue on the predecessor's entries, mapped
      // where they are in its memory (transport/entry_region.hpp). Only from
      // a live predecessor, which hands each entry over (not the fd store).
      if (!offer.entries || fd < 0)
        co_return refuse(failure{std::error_code(EPROTO, std::system_category()),
                                 "the offer of an io_uring connection came without its entries"});
      auto region = transport::entry_region::map(std::move(offer.entries), *entries);
      if (!region) co_return refuse(region.error());
      auto plane = std::make_unique<transport::uring_plane>(detail::request_handler(dispatcher_), session_,
                                                            offer.device.get(), options_.uring, std::move(*region));
      if (std::string why = plane->prepare(session_.conn()); !why.empty())
        co_return refuse(failure{std::error_code(EIO, std::system_category()), "io_uring set-up: " + why});
      uring_ = plane.get();
      plane_ = std::move(plane);
    }
    device_ = std::move(offer.device);
    control_listener_ = std::move(offer.listener);
    if (!control_listener_) open_control_socket();
    session_.notify().attach(transport::fd_sink(device_.get()));
    // Requests the predecessor read and left unanswered (lock requests still
    // waiting) come again, to this server — while the predecessor still holds
    // the fds they were read on (closing one would abort its requests). Before
    // this server reads anything: RESEND requeues every request read and not
    // yet answered on the connection, so a request this server were already
    // handling would come a second time and be done twice.
    if (auto r = session_.notify().resend(); !r) log::warn("NOTIFY_RESEND failed: {}", r.error().message());
    start_control(device_.get());
    if (uring_) uring_->start();
    else start_classic_plane();
    if (fd < 0) {
      log::info("took over {} from the service manager's fd store", mountpoint());
      watch_adopted_mount();
      co_return outcome<void>{};
    }
    if (!handover::send(fd, {.what = handover::kind::ack}))
      log::warn("the predecessor of {} went away before the handover was acknowledged", mountpoint());
    if (uring_) {
      // The predecessor now hands its ring entries over, one message each,
      // until it has none and leaves (EOF). Plugs make every entry it still
      // has available get a request, so that it can.
      handover_sock_ = std::move(offer.sock);
      handover_receiver_ = std::jthread([this, sock = handover_sock_.get()] {
        while (auto m = handover::receive(sock, clock::now() + std::chrono::seconds(60)))
          if (m->what == handover::kind::entry) uring_->adopt(m->queue, m->index);
      });
      const bool all = co_await loop.blocking(
          [this] { return uring_->plug(mountpoint(), clock::now() + std::chrono::seconds(5)); });
      if (!all) log::warn("takeover: not every io_uring entry of the predecessor was handed over within 5 s");
    }
    log::info("took over {} from pid {}", mountpoint(), offer.pid);
    watch_adopted_mount();
    co_return outcome<void>{};
  }

  // -o auto_unmount on a mount taken over: the predecessor's watcher leaves
  // with the predecessor (finding the mount served), so this server gets one
  // of its own — after the handover, which must not wait for it.
  void watch_adopted_mount() {
    if (!options_.mount.auto_unmount) return;
    if (auto w = mount_.watch(); !w)
      log::warn("auto_unmount: {}; the mount at {} is not unmounted should this server die", w.error().message,
                mountpoint());
  }

  // ---- the state tools ask for (fusexx/control.hpp, fusexx-ctl) ----

  control::status_info status() const {
    control::status_info s;
    s.fusexx_version = std::string(version);
    s.mountpoint = mountpoint();
    s.filesystem = restart_type();
    s.pid = static_cast<std::uint32_t>(::getpid());
    s.connection = mount_.connection_id().value_or(0);
    s.uptime_s = std::chrono::duration<double>(clock::now() - started_).count();
    s.transport = using_uring() ? "uring" : "classic";
    s.threads = worker_count();
    s.queues = uring_queue_count();
    s.queue_depth = using_uring() ? options_.uring.queue_depth : 0;
    const connection& c = conn();
    s.proto_major = c.proto_major();
    s.proto_minor = c.proto_minor();
    s.max_write = c.max_write;
    s.max_readahead = c.max_readahead;
    s.max_pages = c.max_pages();
    s.flags = control::flag_names(c.granted());
    s.restartable = restartable<Fs>;
    s.handover_requests = handover_requests_;
    s.handover_refused = handover_refused_;
    s.stats = session_.stats().enabled();
    if constexpr (crash_safe<Fs>) {
      if (journaling_) {
        s.supervised = true;
        s.checkpoint = generation_.load();
        s.journal_bytes = journaling_->journal_ref().used();
      }
    }
    return s;
  }
  control::stats_info statistics() const {
    control::stats_info s;
    s.uptime_s = std::chrono::duration<double>(clock::now() - started_).count();
    const auto& k = session_.counters();
    s.requests = k.requests.load(std::memory_order_relaxed);
    s.in_flight = k.in_flight.load(std::memory_order_relaxed);
    s.interrupts = k.interrupts.load(std::memory_order_relaxed);
    s.forgets = k.forgets.load(std::memory_order_relaxed);
    s.errors = k.errors_sent.load(std::memory_order_relaxed);
    s.malformed = k.malformed.load(std::memory_order_relaxed);
    s.replies_refused = k.replies_refused.load(std::memory_order_relaxed);
    control::fill_ops(s, session_.stats().snapshot());
    return s;
  }

  // ---- the service manager's fd store (restart/systemd.hpp, docs/restart.md) ----

  // Puts the connection in the store of the service manager that runs this
  // process, so that the mount outlives it: a restart of the service then
  // continues it (take_over_async with the stored fds). Only a restartable
  // filesystem on the classic transport, and only when the unit has a store
  // for both fds ($FDSTORE >= 2); false when it did nothing. The default
  // FDPOLL stays: /dev/fuse polls POLLERR only once the connection is gone
  // (fs/fuse/dev.c, fuse_dev_poll), and then the store should drop it.
  outcome<bool> push_to_fd_store() {
    if constexpr (!restartable<Fs>) {
      return false;
    } else {
      if (uring_ || !device_ || supervised() || systemd::fd_store_max() < 2) return false;
      auto sent = systemd::store_fd(device_.get(), systemd::device_name);
      if (!sent) return std::unexpected(sent.error());
      in_fd_store_ = *sent;
      return *sent;
    }
  }
  // After a start from the store: the connection is in it already (pushing
  // again would store it twice: the manager tells device fds apart by fd, not
  // by what they open).
  void mark_in_fd_store() noexcept { in_fd_store_ = true; }
  bool in_fd_store() const noexcept { return in_fd_store_; }

  // The end of this process when its connection is in the store (on SIGTERM:
  // the manager stops or restarts the service): parks, puts the snapshot in
  // the store beside the connection, and leaves without unmounting. Returns
  // false when it could not (a handler would not come to an end, save()
  // failed, or the manager could not be told): this server still serves, and
  // the caller stops it as usual.
  task<bool> leave_to_fd_store_async(event_loop& loop) {
    const auto started = clock::now();
    park_report parked = co_await loop.blocking([this] { return park(std::chrono::seconds(2)); });
    if (parked.running > 0) {
      resume();
      log::warn("cannot leave {} to the fd store: {} request(s) still being handled", mountpoint(), parked.running);
      co_return false;
    }
    auto sealed = write_snapshot();
    if (sealed && systemd::fd_store_max() < 2 + sealed->fds.size())
      sealed = fail(ENOSPC, "the unit's store (FileDescriptorStoreMax={}) cannot hold the connection, the snapshot "
                    "and the {} open file(s) beside it", systemd::fd_store_max(), sealed->fds.size());
    // An older snapshot must never be restored in place of this one; the
    // new one goes last, once the fds it refers to are in the store. Those
    // are kept however they poll (FDPOLL=0): an O_PATH fd cannot be polled
    // at all, and the manager would refuse it.
    auto sent = sealed ? systemd::remove_fd(systemd::snapshot_name) : outcome<bool>(false);
    for (std::size_t i = 0; sent && *sent && i < sealed->fds.size(); ++i)
      sent = systemd::store_fd(sealed->fds[i], systemd::snapshot_fd_name(i), /*poll=*/false);
    if (sent && *sent) sent = systemd::store_fd(sealed->memfd.get(), systemd::snapshot_name);
    if (!sealed || !sent || !*sent) {
      if (sealed) systemd::remove_snapshot_fds(sealed->fds.size());
      resume();
      log::warn("cannot leave {} to the fd store: {}", mountpoint(),
                !sealed ? sealed.error().message : !sent ? sent.error().message : "no service manager");
      co_return false;
    }
    log::info("left {} to the service manager's fd store after {} ms parked", mountpoint(),
              std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started).count());
    co_await leave_async(loop);
    co_return true;
  }

  // The end of a server whose keeper is systemd's fd store, on SIGTERM (a
  // stop or restart of the service): it leaves, neither unmounting nor
  // writing a snapshot — the store holds the connection, the checkpoint and
  // the journal, from which the next start recovers as after a crash. It
  // waits a moment for the handlers under way (so that the next start has
  // fewer requests to take again), and says it left on purpose (not a crash
  // towards giving up).
  task<void> leave_supervised_async(event_loop& loop) {
    park_report parked = co_await loop.blocking([this] { return park(std::chrono::seconds(2)); });
    if (parked.running > 0)
      log::info("leaving {} with {} request(s) under way: the next start takes them again", mountpoint(),
                parked.running);
    if (supervision_.history) supervision_.history->left = 1;
    log::info("left {} to the service manager's fd store (its checkpoint and journal)", mountpoint());
    co_await leave_async(loop);
  }

  // Blocks until the server has ended (unmounted from outside, or stop()).
  void wait() { ended_.wait(); }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) {
    return ended_.wait_until(clock::now() + d);
  }
  // Readable once the connection ended (unmounted from outside) or stop()
  // ran: for event loops.
  int ended_fd() const noexcept { return ended_.fd(); }

  // True when a thread is still inside a handler that did not return when
  // asked to stop (typically a hung init()); its process should exit.
  bool has_stuck_workers() const noexcept { return stuck_ > 0; }
  // True once this server has left its connection to a successor (or to a
  // service manager's fd store) instead of ending it.
  bool handed_over() const noexcept { return handed_over_; }

  // The connection this server serves (fusexx/session.hpp).
  fusexx::session& session() noexcept { return session_; }
  const connection& conn() const noexcept { return session_.conn(); }
  const std::string& mountpoint() const noexcept { return options_.mount.mountpoint; }
  mount_method method() const noexcept { return mount_.method(); }
  bool sync_init() const noexcept { return mount_.sync_init(); }
  // Threads reading /dev/fuse (the control channel's and the classic plane's).
  unsigned worker_count() const noexcept {
    return (control_ ? control_->threads() : 0) + (plane_ && !uring_ ? plane_->threads() : 0);
  }
  // True when requests come through io_uring queues (one per possible CPU).
  bool using_uring() const noexcept { return uring_ != nullptr; }
  unsigned uring_queue_count() const noexcept { return uring_ ? uring_->queue_count() : 0; }

 private:
  static outcome<void> failed(failure f) { return std::unexpected(std::move(f)); }
  static outcome<void> flatten(result<outcome<void>> r) {
    if (!r) return fail(EIO, "start-up failed: {}", r.error().message());
    return std::move(*r);
  }

  // Decides, before mounting, whether to ask for FUSE over io_uring, and
  // hooks the io_uring plane in around the INIT reply.
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
      auto plane = std::make_unique<transport::uring_plane>(detail::request_handler(dispatcher_), session_,
                                                            device_.get(), options_.uring);
      if (std::string why = plane->prepare(c); !why.empty()) {
        uring_unusable_ = "setting up the rings failed: " + why;
        return granted & ~proto::init_flag::over_io_uring;
      }
      uring_ = plane.get();
      plane_ = std::move(plane);
      return granted;
    };
    session_.after_init_reply = [this](const connection&) {
      if (uring_) uring_->start();
    };
    return {};
  }

  // What a successor must serve to take this mount over: the mount's subtype
  // ("memfs", "passthrough", ...).
  std::string restart_type() const { return options_.mount.subtype.empty() ? "fuse" : options_.mount.subtype; }

  // A tool's query on the control socket: answered here, on the event loop,
  // from counters read without stopping anyone.
  void answer_query(int sock, const handover::message& q) {
    const auto refuse = [sock](const std::string& why) {
      (void)handover::send(sock, {.what = handover::kind::refuse, .text = why});
    };
    if (!peer_may_control(sock))
      return refuse(fmt::format("permission denied: this server runs as uid {}; ask as that user or as root",
                                ::geteuid()));
    if (!mount_.connection_id() || q.connection != *mount_.connection_id())
      return refuse(fmt::format("{} this server's connection is {}", handover::not_this_connection,
                                mount_.connection_id().value_or(0)));
    std::string text;
    if (q.text == "status") text = control::to_json(status());
    else if (q.text == "stats") text = control::to_json(statistics());
    else return refuse(fmt::format("unknown query '{}' (status, stats)", q.text));
    if (auto sent = handover::send(sock, {.what = handover::kind::answer, .text = std::move(text)}); !sent)
      log::debug("control socket: the answer was not sent: {}", sent.error().message());
  }

  // The control socket, named after the connection (restart/control_socket.hpp).
  void open_control_socket() {
    if (mount_.connection_id()) open_control_socket(*mount_.connection_id());
  }
  void open_control_socket(unsigned connection) {
    if (auto l = listen_control(connection)) control_listener_ = std::move(*l);
    else log::warn("no control socket: {}", l.error().message);
  }

  // What the transports hand requests to: the dispatcher, or, supervised,
  // the journal in front of it.
  detail::request_handler handler() {
    if (journaling_) return detail::request_handler(*journaling_);
    return detail::request_handler(dispatcher_);
  }

  // The classic data plane: readers on clones of the session fd.
  void start_classic_plane() {
    const unsigned threads =
        options_.classic.threads ? options_.classic.threads : std::max(2u, std::thread::hardware_concurrency());
    if (threads <= 1) return;
    auto plane = std::make_unique<transport::device_readers>(
        handler(), session_, device_.get(), threads - 1,
        options_.classic.clone_fds ? transport::device_readers::fds::clones : transport::device_readers::fds::session);
    plane->pinned_buffers(options_.classic.pinned_buffers);
    plane_ = std::move(plane);
    plane_->start();
  }

  // The snapshot a successor restores (parked: no handler runs): the session
  // as the kernel sees it, then the filesystem, sealed in a memfd; and the
  // filesystem's open files that go beside it (borrowed: they stay open
  // while the server is parked).
  struct sealed_snapshot {
    unique_fd memfd;
    std::vector<int> fds;
  };
  outcome<sealed_snapshot> write_snapshot(std::optional<mount_description> mounting = std::nullopt) {
    if constexpr (!restartable<Fs>) {
      return fail(EOPNOTSUPP, "this filesystem is not restartable");
    } else {
      // Built in the memfd it is sealed in, with room for a little more than the last one.
      snapshot_writer w = snapshot_writer::in_memfd(last_snapshot_size_ + last_snapshot_size_ / 8);
      if (fds_by_number()) w.fds_by_number();
      w.str(restart_type());
      write_session(w, session_.describe(),
                    mounting ? *mounting
                             : mount_description{mount_.mountpoint(), mount_.method(), mount_.helper(), mount_.sync_init()});
      write_entry_layout(w, uring_ ? std::optional(uring_->region().layout()) : std::nullopt);
      std::string why;
      auto saved = detail::fenced("save()", [&] { return result<void>(fs_.save(w)); }, result<void>(error(EIO)), &why);
      if (!saved) return fail(EIO, "save() failed: {}", why.empty() ? saved.error().message() : why);
      last_snapshot_size_ = w.size();
      auto memfd = w.seal();
      if (!memfd) return std::unexpected(memfd.error());
      return sealed_snapshot{std::move(*memfd), w.fds()};
    }
  }

  // Reads a predecessor's snapshot into this server's session, mount and
  // filesystem.
  outcome<void> restore_from(int snapshot_fd, std::vector<unique_fd> snapshot_fds,
                             std::optional<transport::entry_layout>& entries) {
    auto r = snapshot_reader::open(snapshot_fd);
    if (!r) return std::unexpected(r.error());
    if (fds_by_number()) r->fds_by_number();
    r->attach_fds(std::move(snapshot_fds));
    std::string type;
    session_description d;
    mount_description m;
    if (!r->str(type) || !read_session(*r, d, m) || !read_entry_layout(*r, entries))
      return fail(EBADMSG, "the snapshot is corrupt (session part)");
    if (type != restart_type())
      return fail(EINVAL, "the snapshot is of a '{}' filesystem, this is '{}'", type, restart_type());
    if (m.mountpoint != options_.mount.mountpoint)
      return fail(EINVAL, "the snapshot is of the mount at {}, not {}", m.mountpoint, options_.mount.mountpoint);
    std::string why;
    auto restored = detail::fenced("restore()", [&] { return result<void>(fs_.restore(*r)); }, result<void>(error(EIO)), &why);
    // A reader that failed says more than the errno restore() made of it.
    if (!r->ok())
      return fail(EBADMSG, "the snapshot is corrupt: restore() read past its end, or an fd beside it is missing");
    if (!restored)
      return fail(to_errno(restored.error()), "restore() failed: {}", why.empty() ? restored.error().message() : why);
    if (r->fds_left() > 0) log::warn("takeover: {} fd(s) beside the snapshot were not taken by restore()", r->fds_left());
    session_.restore(d);
    mount_ = mount::adopt(m.mountpoint, m.method, m.sync_init, m.helper);
    return {};
  }

  // After a handover: leave the connection to the successor. The channels
  // stop taking requests (there are none in flight: the handover was made
  // parked); nothing is unmounted, the connection is not ended, destroy() is
  // not called, backing ids are not closed — they are the successor's now.
  task<void> leave_async(event_loop& loop) {
    {
      std::lock_guard lock(stop_mutex_);
      stopping_ = true;
    }
    mount_.release();
    handed_over_ = true;
    const auto soon = clock::now() + std::chrono::seconds(2);
    co_await loop.blocking([&] {
      if (control_) control_->stop(soon);
      if (plane_) plane_->stop(soon);
    });
    session_.notify().detach();
    session_.backing().detach();
    end_handover_receiver();
    control_.reset();
    plane_.reset();
    uring_ = nullptr;
    device_.reset();
    control_listener_.reset();
    ended_.set();
    co_return {};
  }

  // The thread taking a predecessor's io_uring entries over, if it still
  // waits for some.
  void end_handover_receiver() {
    if (handover_receiver_.joinable()) {
      ::shutdown(handover_sock_.get(), SHUT_RDWR);
      handover_receiver_.join();
    }
    handover_sock_.reset();
  }

  // The control channel: one reader on the session's fd, started before the
  // mount call with synchronous INIT (that call blocks until INIT is answered).
  void start_control(int fd) {
    control_fd_ = fd;
    // Backing-file ioctls may go to any fd of the connection; this one lives
    // until stop().
    session_.backing().attach(fd);
    control_ = std::make_unique<transport::device_readers>(handler(), session_, fd, 1,
                                                           transport::device_readers::fds::session);
    control_->pinned_buffers(options_.classic.pinned_buffers);
    control_->on_ended([this] {
      // The connection ended (unmounted from outside, or the helper went
      // away): an INIT not yet answered never will be.
      session_.init().abandon(ENOTCONN, "the connection ended before INIT was answered");
      ended_.set();
    });
    control_->start();
  }

  // Unmounts; a mount still in use has its connection ended (MNT_FORCE, or
  // fusectl's abort), so requests already taken cannot wait for ever.
  void end_connection() {
    const auto connection = mount_.connection_id();
    if (mount_.active())
      if (auto r = mount_.unmount_and_end(); !r) log::error("{}", r.error().message);
    if (connection_alive() && connection && abort_fuse_connection(*connection))
      log::debug("ended connection {} (files were still open)", *connection);
  }
  // False once the kernel has ended the connection (unmounted and unused,
  // or aborted): /dev/fuse then polls as an error.
  bool connection_alive() const {
    // Only a mounted connection: poll(2) on a synchronous-INIT fd that was
    // never attached to one blocks, even with a zero timeout (kernel-facts).
    if (!device_ || mount_.mountpoint().empty()) return false;
    pollfd p{device_.get(), POLLIN, 0};
    return !(::poll(&p, 1, 0) == 1 && (p.revents & POLLERR));
  }

  std::vector<request_in_flight> in_flight() const {
    auto all = session_.scope().members();
    const transport::channel* channels[] = {control_.get(), plane_.get()};
    for (const auto* c : channels)
      if (c)
        for (auto& r : c->busy()) all.push_back(r);
    return all;
  }
  void interrupt_in_flight() {
    for (auto& r : in_flight()) dispatcher_.interrupt(r.unique);
  }

  // Cleans up a failed start-up and says why it failed. When INIT failed, the
  // filesystem's own error wins over what the mount call saw (the kernel
  // reports every INIT failure as ENOTCONN).
  task<outcome<void>> abort_start(event_loop& loop, const failure& mount_failure) {
    // Read before stopping: the channels' end settles a pending INIT too.
    const bool init_failed = session_.init().current() == session_phase::failed;
    co_await stop_async(loop);
    if (init_failed && session_.init().error())
      co_return failed(failure{session_.init().error(),
                               fmt::format("mounting {} failed: {}", mountpoint(), session_.init().message())});
    co_return failed(mount_failure);
  }

  Fs& fs_;
  server_options options_;
  fusexx::session session_;
  detail::dispatcher<Fs> dispatcher_;
  unique_fd device_;
  mount mount_;
  std::unique_ptr<transport::device_readers> control_;
  std::unique_ptr<transport::channel> plane_;      // classic readers on clones, or the io_uring queues
  transport::uring_plane* uring_ = nullptr;        // plane_, when it is the io_uring one
  std::string uring_unusable_;                     // why io_uring is not used, when it is not
  unique_fd control_listener_;                     // the control socket (restart/control_socket.hpp)
  unique_fd handover_sock_;                        // io_uring takeover: the predecessor hands entries over on it
  std::jthread handover_receiver_;
  std::mutex stop_mutex_;
  bool stopping_ = false;
  bool in_fd_store_ = false;
  bool handed_over_ = false;                       // the connection is in the service manager's fd store
  unsigned stuck_ = 0;
  detail::event ended_;
  clock::time_point started_ = clock::now();
  std::uint64_t handover_requests_ = 0;            // successors that asked (the event loop's thread only)
  std::uint64_t handover_refused_ = 0;
  // Supervised (-o supervise): the keeper, the crash journal, and the
  // handler that journals every request that changes state.
  supervision supervision_{};
  journal journals_[2];             // records go to journals_[active_]
  unsigned active_ = 0;
  bool inactive_live_ = false;      // the other journal holds records the keeper's checkpoint does not cover
  unique_fd journal_quiet_;         // a timer: no checkpoint since the last for options_.journal_idle
  unique_fd checkpoint_pidfd_;      // a forked checkpoint under way: its child,
  unique_fd checkpoint_size_;       // and where it says the snapshot's size
  pid_t checkpoint_child_pid_ = -1;
  std::uint64_t checkpoint_generation_ = 0;
  clock::time_point checkpoint_started_{};
  std::unique_ptr<detail::journaling<detail::dispatcher<Fs>>> journaling_;
  std::atomic<std::uint64_t> generation_{0};  // of the last checkpoint the keeper holds (status() reads it too)
  detail::checkpoint_crash checkpoint_crash_ = detail::checkpoint_crash::none;  // (tests)
  int control_fd_ = -1;           // the fd INIT came on (the connection's own)
  std::size_t last_snapshot_size_ = 0;
};

}  // namespace fusexx
