#pragma once
// Per-connection state shared by every worker: the negotiated parameters, the
// interrupt registry, request counters, and the INIT negotiation itself.
#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <system_error>

#include "codec.hpp"
#include "connection.hpp"
#include "filesystem.hpp"
#include "interrupts.hpp"
#include "log.hpp"
#include "proto/abi.hpp"

namespace fusexx {

// The oldest protocol this framework can serve (init_out's 24-byte form and
// the 16-byte mknod_in are handled; older layouts are not).
inline constexpr std::uint32_t oldest_supported_minor = 12;

// What the session counts; readable from any thread (tests, benchmarks, -d).
struct session_counters {
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> errors_sent{0};
  std::atomic<std::uint64_t> malformed{0};
  std::atomic<std::uint64_t> interrupts{0};
  std::atomic<std::uint64_t> forgets{0};
  std::atomic<std::uint64_t> in_flight{0};  // requests whose handler is still running
  std::atomic<std::uint64_t> via_device{0};  // requests read from /dev/fuse
  std::atomic<std::uint64_t> via_ring{0};    // requests that arrived through io_uring
  // io_uring REGISTERs the kernel answered EAGAIN (INIT not processed yet) and
  // that were submitted again.
  std::atomic<std::uint64_t> register_retries{0};
};

class session_state {
 public:
  connection conn;
  interrupt_registry interrupts;
  session_counters counters;

  enum class phase { waiting_for_init, serving, init_failed, destroyed };

  phase current() const noexcept { return phase_.load(std::memory_order_acquire); }
  // The error the filesystem's init() returned, or the protocol error, once
  // INIT has failed. Mounters use it to report the real cause.
  std::error_code init_error() const {
    std::lock_guard lock(mutex_);
    return init_error_;
  }
  std::string init_message() const {
    std::lock_guard lock(mutex_);
    return init_message_;
  }

  // Blocks until INIT was answered (either way) or `give_up` says stop.
  template <class Pred>
  phase wait_for_init(Pred give_up) {
    std::unique_lock lock(mutex_);
    while (current() == phase::waiting_for_init && !give_up()) cv_.wait_for(lock, std::chrono::milliseconds(50));
    return current();
  }

  // ---- transport hooks around INIT (set before the mount) ----
  // Called with the negotiated outcome just before INIT is answered; returns
  // the capabilities to grant in the end. The io_uring transport sets up its
  // rings here and withdraws FUSE_OVER_IO_URING if it cannot: once granted,
  // the kernel holds every request until all queues have registered.
  std::function<std::uint64_t(const connection&, std::uint64_t granted)> before_init_reply;
  // Called once INIT has been answered successfully.
  std::function<void(const connection&)> after_init_reply;

  // ---- INIT bookkeeping ----
  // INIT is answered exactly once, by whoever gets there first: the worker
  // that ran init(), or the watchdog that gives up on a hanging init().

  // The mounter sets this around the kernel's mount call, so the session can
  // tell synchronous INIT (it arrives during the call) from asynchronous.
  void set_mount_in_progress(bool on) noexcept { mount_in_progress_.store(on, std::memory_order_release); }
  // True when INIT arrived while the mount call was still running: proof that
  // synchronous INIT was in effect.
  bool init_arrived_during_mount() const noexcept { return init_during_mount_.load(std::memory_order_acquire); }

  // The worker read INIT: remember where to answer it. Returns false when the
  // watchdog already gave up, in which case the caller answers with the error.
  bool init_received(const reply_sink& sink, std::uint64_t unique) {
    std::lock_guard lock(mutex_);
    init_during_mount_.store(mount_in_progress_.load(std::memory_order_acquire), std::memory_order_release);
    init_sink_ = sink;
    init_unique_ = unique;
    if (init_reply_ == init_reply::abandoned) return false;
    init_reply_ = init_reply::pending;
    return true;
  }
  // The worker is about to answer INIT. False if the watchdog answered first.
  bool claim_init_reply() {
    std::lock_guard lock(mutex_);
    if (init_reply_ != init_reply::pending) return false;
    init_reply_ = init_reply::answered;
    init_claimed_.store(true, std::memory_order_release);
    return true;
  }
  // True once the worker has claimed INIT's reply. The kernel sends other
  // requests as soon as it has that reply, which can be before the phase
  // becomes `serving` (after_init_reply, e.g. starting the io_uring queues,
  // runs in between), so such requests are not "before INIT".
  bool init_reply_claimed() const noexcept { return init_claimed_.load(std::memory_order_acquire); }
  // Gives up on INIT: answers it with `errnum` if it is pending (so the mount
  // call fails instead of waiting forever), or makes sure it will be refused
  // when it arrives. Records the failure either way. Returns false if INIT had
  // already been answered.
  bool abandon_init(int errnum, std::string message) {
    bool send = false;
    reply_sink sink;
    std::uint64_t unique = 0;
    {
      std::lock_guard lock(mutex_);
      if (init_reply_ == init_reply::answered) return false;
      send = init_reply_ == init_reply::pending;
      init_reply_ = send ? init_reply::answered : init_reply::abandoned;
      sink = init_sink_;
      unique = init_unique_;
    }
    set_phase(phase::init_failed, std::error_code(errnum, std::system_category()), std::move(message));
    if (send) send_reply(sink, unique, errnum);
    return true;
  }

  void set_phase(phase p, std::error_code ec = {}, std::string message = {}) {
    {
      std::lock_guard lock(mutex_);
      if (ec) {
        init_error_ = ec;
        init_message_ = std::move(message);
      }
      phase_.store(p, std::memory_order_release);
    }
    cv_.notify_all();
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::atomic<phase> phase_{phase::waiting_for_init};
  std::error_code init_error_;
  std::string init_message_;
  enum class init_reply { not_read, pending, answered, abandoned };
  init_reply init_reply_ = init_reply::not_read;
  reply_sink init_sink_;
  std::uint64_t init_unique_ = 0;
  std::atomic<bool> init_claimed_{false};
  std::atomic<bool> mount_in_progress_{false};
  std::atomic<bool> init_during_mount_{false};
};

// The capabilities asked for unless the filesystem's init() says otherwise:
// the ones that only make a correct server faster, plus those that follow
// from which operations Fs implements.
template <class Fs>
constexpr std::uint64_t default_wants() {
  namespace f = proto::init_flag;
  std::uint64_t w = f::async_read | f::parallel_dirops | f::auto_inval_data | f::big_writes | f::max_pages |
                    f::async_dio | f::has_ioctl_dir | f::init_ext | f::abort_error;
  if constexpr (has_readdirplus<Fs>) w |= f::do_readdirplus | f::readdirplus_auto;
  // Locks the filesystem implements are its own: without these the kernel
  // keeps POSIX (or flock) locks locally and never sends the requests.
  if constexpr (has_getlk<Fs> && has_setlk<Fs>) w |= f::posix_locks;
  if constexpr (has_flock<Fs>) w |= f::flock_locks;
  return w;
}

struct init_reply {
  int error = 0;            // errno to answer INIT with, 0 on success
  proto::init_out out{};
  std::size_t size = 0;     // bytes of `out` to send (older minors take less)
};

// Negotiates INIT. Calls fs.init(conn) in between, so the filesystem sees what
// the kernel offers and says what it wants; an error from init() becomes the
// INIT reply's error, which fails the mount (or refuses every access, with
// asynchronous INIT).
template <class Fs>
init_reply negotiate_init(Fs& fs, session_state& state, const proto::init_in& in) {
  namespace f = proto::init_flag;
  connection& conn = state.conn;
  init_reply reply;

  if (in.major > proto::kernel_major) {
    // A newer major: answer with ours only; the kernel retries INIT with it.
    reply.out.major = proto::kernel_major;
    reply.out.minor = proto::kernel_minor;
    reply.size = sizeof reply.out;
    return reply;
  }
  if (in.major < proto::kernel_major || in.minor < oldest_supported_minor) {
    log::error("kernel speaks FUSE {}.{}, fusexx needs 7.{} or newer", in.major, in.minor, oldest_supported_minor);
    reply.error = EPROTO;
    state.set_phase(session_state::phase::init_failed, std::error_code(EPROTO, std::system_category()),
                    fmt::format("the kernel speaks FUSE {}.{}, fusexx needs 7.{} or newer", in.major, in.minor,
                                oldest_supported_minor));
    return reply;
  }

  std::uint64_t offered = in.flags;
  if (in.flags & f::init_ext) offered |= std::uint64_t{in.flags2} << 32;
  conn.set_offer(in.major, in.minor, offered);
  conn.want(default_wants<Fs>());
  const std::uint32_t page = static_cast<std::uint32_t>(connection::page_size());
  const std::uint32_t pages_limit = connection::kernel_max_pages_limit();
  if (conn.max_write == 0) conn.max_write = pages_limit * page;

  if constexpr (has_init<Fs>) {
    result<void> r;
    std::string why;
    try {
      if constexpr (std::is_void_v<decltype(fs.init(conn))>) fs.init(conn);
      else r = fs.init(conn);
      if (!r) why = fmt::format("init() failed: {}", r.error().message());
    } catch (const std::exception& e) {
      r = error(EIO);
      why = fmt::format("init() threw: {}", e.what());
    } catch (...) {
      r = error(EIO);
      why = "init() threw a non-standard exception";
    }
    if (!r) {
      log::debug("{}", why);
      reply.error = to_errno(r.error());
      state.set_phase(session_state::phase::init_failed, r.error(), std::move(why));
      return reply;
    }
  }

  const std::uint64_t granted = offered & conn.wanted();
  conn.max_write = std::max<std::uint32_t>(conn.max_write, 4096);
  std::uint32_t max_pages = 32;  // the kernel's default when FUSE_MAX_PAGES is not granted
  if (granted & f::max_pages)
    max_pages = std::clamp<std::uint32_t>((conn.max_write + page - 1) / page, 1, pages_limit);

  proto::init_out& out = reply.out;
  out.major = proto::kernel_major;
  out.minor = proto::kernel_minor;
  out.max_readahead = std::min(conn.max_readahead, in.max_readahead);
  out.flags = static_cast<std::uint32_t>(granted);
  out.flags2 = static_cast<std::uint32_t>(granted >> 32);
  out.max_background = conn.max_background;
  out.congestion_threshold = conn.congestion_threshold;
  out.max_write = conn.max_write;
  out.time_gran = conn.time_gran;
  out.max_pages = static_cast<std::uint16_t>(max_pages);
  out.max_stack_depth = conn.max_stack_depth;
  out.request_timeout = conn.request_timeout;
  conn.max_readahead = out.max_readahead;
  conn.set_outcome(granted, max_pages);
  if (state.before_init_reply) {
    const std::uint64_t final_grant = state.before_init_reply(conn, granted) & granted;
    out.flags = static_cast<std::uint32_t>(final_grant);
    out.flags2 = static_cast<std::uint32_t>(final_grant >> 32);
    conn.set_outcome(final_grant, max_pages);
  }

  const std::uint32_t minor = std::min(in.minor, proto::kernel_minor);
  reply.size = minor < 5 ? proto::init_out_compat_size_v7_5
               : minor < 23 ? proto::init_out_compat_size_v7_22
                            : sizeof(proto::init_out);
  log::debug("INIT: kernel {}.{} offered {}; granted {}; max_write={} max_pages={} max_readahead={}", in.major,
             in.minor, proto::describe_init_flags(offered), proto::describe_init_flags(conn.granted()), out.max_write,
             max_pages, out.max_readahead);
  return reply;
}

}  // namespace fusexx
