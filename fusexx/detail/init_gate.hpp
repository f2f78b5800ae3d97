#pragma once
// The INIT gate: the one place that answers the kernel's INIT, whoever gets
// there first — the thread that ran the filesystem's init(), or the lifecycle
// giving up on it (a deadline, a cancelled start-up, a connection that ended
// before INIT came). Exactly one reply goes out; the loser stays silent.
//
//   waiting ──answer(ok)──> serving ──end()──> ended
//      └──answer(error) / abandon()──> failed
//
// settled() is set as soon as the phase leaves `waiting`, for threads
// (wait()) and event loops (settled().fd()) alike.
#include <atomic>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <system_error>

#include "../codec.hpp"
#include "event.hpp"

namespace fusexx::detail {

class init_gate {
 public:
  enum class phase { waiting, serving, failed, ended };

  phase current() const noexcept { return phase_.load(std::memory_order_acquire); }
  // Why INIT failed (the filesystem's own errno, or the lifecycle's), once it has.
  std::error_code error() const {
    std::lock_guard lock(mutex_);
    return error_;
  }
  std::string message() const {
    std::lock_guard lock(mutex_);
    return message_;
  }

  // Set once INIT succeeded or failed.
  event& settled() noexcept { return settled_; }
  phase wait() {
    settled_.wait();
    return current();
  }

  // The mounter brackets the kernel's mount call with these, so the gate can
  // tell synchronous INIT (it arrives during the call) from asynchronous.
  void set_mount_in_progress(bool on) noexcept { mount_in_progress_.store(on, std::memory_order_release); }
  bool arrived_during_mount() const noexcept { return during_mount_.load(std::memory_order_acquire); }

  // A reader got INIT: remember where to answer it. False when the gate has
  // given up already; the gate has then answered it with the error itself.
  bool received(const reply_sink& sink, std::uint64_t unique) {
    int refuse = 0;
    {
      std::lock_guard lock(mutex_);
      if (reply_ == reply_state::not_read) {
        during_mount_.store(mount_in_progress_.load(std::memory_order_acquire), std::memory_order_release);
        sink_ = sink;
        unique_ = unique;
        reply_ = reply_state::pending;
      } else {
        refuse = reply_ == reply_state::abandoned ? error_.value() : EPROTO;  // EPROTO: a second INIT
      }
    }
    if (refuse) send_reply(sink, unique, refuse);
    return refuse == 0;
  }

  // Answers INIT: with `reply` (success) when `errnum` is 0, else with the
  // error, recording `why`. Returns false, sending nothing, when the gate gave
  // up meanwhile (a hanging init() that returned too late). On success,
  // `after_reply` runs between the reply and the phase becoming `serving`.
  bool answer(int errnum, std::span<const std::byte> reply, std::string why = {},
              const std::function<void()>& after_reply = {}) {
    reply_sink sink;
    std::uint64_t unique;
    {
      std::lock_guard lock(mutex_);
      if (reply_ != reply_state::pending) return false;
      reply_ = reply_state::answered;
      claimed_.store(true, std::memory_order_release);
      sink = sink_;
      unique = unique_;
    }
    if (errnum != 0) {
      settle(phase::failed, errnum, std::move(why));
      send_reply(sink, unique, errnum);
      return true;
    }
    send_reply(sink, unique, 0, reply);
    if (after_reply) after_reply();
    settle(phase::serving, 0, {});
    return true;
  }

  // Answers INIT with our protocol version only (the kernel offered a newer
  // major and will send INIT again); settles nothing.
  void answer_version(std::span<const std::byte> reply) {
    reply_sink sink;
    std::uint64_t unique;
    {
      std::lock_guard lock(mutex_);
      if (reply_ != reply_state::pending) return;
      reply_ = reply_state::not_read;
      sink = sink_;
      unique = unique_;
    }
    send_reply(sink, unique, 0, reply);
  }

  // Gives up on INIT: answers it with `errnum` if it was read and is still
  // unanswered (so a mount call blocked on it fails instead of waiting for
  // ever), or makes sure an INIT that comes later is refused. Returns false
  // if INIT had been answered already.
  bool abandon(int errnum, std::string why) {
    reply_sink sink;
    std::uint64_t unique = 0;
    bool send = false;
    {
      std::lock_guard lock(mutex_);
      if (reply_ == reply_state::answered || reply_ == reply_state::abandoned) return false;
      send = reply_ == reply_state::pending;
      reply_ = send ? reply_state::answered : reply_state::abandoned;
      sink = sink_;
      unique = unique_;
    }
    settle(phase::failed, errnum, std::move(why));
    if (send) send_reply(sink, unique, errnum);
    return true;
  }

  // True once INIT's reply was claimed. The kernel sends requests as soon as
  // it has that reply, which may be before the phase becomes `serving`
  // (after_reply runs in between): those are not "before INIT".
  bool reply_claimed() const noexcept { return claimed_.load(std::memory_order_acquire); }

  // INIT was negotiated by a predecessor that handed the connection over:
  // serve from now on; an INIT will not come.
  void continue_serving() {
    {
      std::lock_guard lock(mutex_);
      reply_ = reply_state::answered;
      claimed_.store(true, std::memory_order_release);
    }
    settle(phase::serving, 0, {});
  }

  // The filesystem's destroy() has run: the session is over.
  void end() { settle(phase::ended, 0, {}); }

 private:
  void settle(phase p, int errnum, std::string why) {
    {
      std::lock_guard lock(mutex_);
      if (errnum != 0) {
        error_ = std::error_code(errnum, std::system_category());
        message_ = std::move(why);
      }
      phase_.store(p, std::memory_order_release);
    }
    settled_.set();
  }

  enum class reply_state { not_read, pending, answered, abandoned };
  mutable std::mutex mutex_;
  std::atomic<phase> phase_{phase::waiting};
  std::error_code error_;
  std::string message_;
  reply_state reply_ = reply_state::not_read;
  reply_sink sink_;
  std::uint64_t unique_ = 0;
  std::atomic<bool> claimed_{false};
  std::atomic<bool> mount_in_progress_{false};
  std::atomic<bool> during_mount_{false};
  event settled_;
};

}  // namespace fusexx::detail
