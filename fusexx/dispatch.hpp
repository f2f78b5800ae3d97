#pragma once
// The dispatcher: one request's bytes in, one typed call on the filesystem,
// one reply's bytes out. It makes no syscalls itself — replies leave through
// the transport's reply_sink — so unit tests drive it with plain buffers.
//
// Every request is answered exactly once, whichever path it takes: the reply
// is built from what the handler returns, so a handler cannot forget to reply
// or reply twice. Short or inconsistent requests are answered EINVAL/EIO before
// any field past their end is touched. A handler that throws is answered EIO.
#include <sys/file.h>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <cstring>
#include <exception>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "buffer.hpp"
#include "codec.hpp"
#include "dir_buffer.hpp"
#include "filesystem.hpp"
#include "log.hpp"
#include "proto/abi.hpp"
#include "request.hpp"
#include "session.hpp"
#include "task.hpp"

namespace fusexx {

// One request as the transport hands it over.
struct incoming {
  std::span<const std::byte> bytes = {};    // what the kernel delivered: in_header and arguments
  std::span<std::byte> scratch = {};        // room for reply data (READ, READDIR), disjoint from the input
  buffer* owner = nullptr;                  // the buffer behind them; taken over if a handler suspends
  reply_sink sink = {};
  std::span<const std::byte> payload = {};  // io_uring: the arguments after the first, in the payload buffer
};

namespace detail {

// A fire-and-forget coroutine that runs one coroutine handler and sends its
// reply. Ownership of the request buffer is settled by one atomic exchange on
// each side: if the handler finished before the dispatcher looked, the
// dispatcher gets the buffer back and frees the frame; otherwise the frame
// keeps the buffer and frees both itself when the reply is sent.
struct detached {
  struct promise_type {
    enum : int { starting = 0, finished = 1, released = 2 };
    std::atomic<int> phase{starting};
    buffer owned;

    detached get_return_object() noexcept { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct final_awaiter {
      bool await_ready() noexcept { return false; }
      // true: stay suspended, the dispatcher is still inside start() and will
      // destroy the frame; false: run off the end, which destroys the frame.
      bool await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        return h.promise().phase.exchange(finished, std::memory_order_acq_rel) == starting;
      }
      void await_resume() noexcept {}
    };
    final_awaiter final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }  // drive() catches everything itself
  };
  std::coroutine_handle<promise_type> handle;
};

// Pairs an operation's call with what to send when it succeeds; `state`
// carries what both need (e.g. the dir_buffer a readdir fills).
template <class Expected, class State, class Call, class Done>
struct operation {
  using expected = Expected;
  State state;
  Call call;
  Done done;
};

}  // namespace detail

template <class Expected, class State, class Call, class Done>
detail::operation<Expected, State, Call, Done> make_operation(State s, Call c, Done d) {
  return {std::move(s), std::move(c), std::move(d)};
}

// Sends the one reply of a request and does the bookkeeping that goes with it.
class responder {
 public:
  responder(const reply_sink& sink, std::uint64_t unique, session_state& state) noexcept
      : sink_(sink), unique_(unique), state_(&state) {}

  void send(int error, std::span<const std::byte> payload = {}) const { send(error, payload, {}); }
  // A reply in two parts (CREATE's entry_out + open_out, IOCTL's ioctl_out +
  // data): written as one message, without joining them first.
  void send(int error, std::span<const std::byte> a, std::span<const std::byte> b) const {
    if (error != 0) state_->counters.errors_sent.fetch_add(1, std::memory_order_relaxed);
    int rc = send_reply(sink_, unique_, error, a, b);
    // ENOENT: the request was interrupted and the kernel no longer waits for
    // it. ENODEV: the connection is gone. Neither is the server's fault.
    if (rc < 0 && rc != -ENOENT && rc != -ENODEV)
      log::error("reply to request {:#x} was refused: {}", unique_, std::strerror(-rc));
    if (log::enabled(log::level::debug))
      log::debug("<- unique={:#x} error={} len={}", unique_, error, a.size() + b.size());
    state_->interrupts.finished(unique_);
    state_->counters.in_flight.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  reply_sink sink_;
  std::uint64_t unique_;
  session_state* state_;
};

template <filesystem Fs>
class dispatcher {
 public:
  dispatcher(Fs& fs, session_state& state) noexcept : fs_(fs), state_(state) {}

  Fs& fs() noexcept { return fs_; }
  session_state& state() noexcept { return state_; }

  // Calls the filesystem's destroy() once per successful INIT: when DESTROY
  // arrives, or when the server stops without one. The kernel sends DESTROY
  // only to fuseblk mounts; a /dev/fuse mount just ends. DESTROY is the
  // kernel's last request; the server calls this once its /dev/fuse workers
  // have ended (docs/lifecycle.md, "Stopping").
  void end_session() {
    if (state_.current() != session_state::phase::serving) return;  // no INIT, a failed one, or done already
    if constexpr (has_destroy<Fs>) call_noexcept([&] { fs_.destroy(); }, "destroy");
    state_.set_phase(session_state::phase::destroyed);
  }

  void handle(incoming& in) {
    if (in.bytes.size() < sizeof(proto::in_header)) {
      // Without a complete header there is no unique id to answer to.
      state_.counters.malformed.fetch_add(1, std::memory_order_relaxed);
      log::error("dropped a {}-byte request: shorter than its header", in.bytes.size());
      return;
    }
    proto::in_header h;
    std::memcpy(&h, in.bytes.data(), sizeof h);
    state_.counters.requests.fetch_add(1, std::memory_order_relaxed);
    const auto op = static_cast<proto::opcode>(h.opcode);
    if (log::enabled(log::level::debug))
      log::debug("-> unique={:#x} {} node={} len={} pid={}", h.unique, proto::name(op), h.nodeid, h.len, h.pid);

    const bool expects_reply = op != proto::opcode::forget && op != proto::opcode::batch_forget &&
                               op != proto::opcode::interrupt && op != proto::opcode::notify_reply;
    if (expects_reply) state_.counters.in_flight.fetch_add(1, std::memory_order_relaxed);
    responder resp(in.sink, h.unique, state_);

    const std::size_t ext = std::size_t{h.total_extlen} * 8;
    const std::size_t delivered = in.bytes.size() + in.payload.size();
    if (h.len != delivered || h.len < sizeof h + ext || ext > in.payload.size() + in.bytes.size() - sizeof h) {
      state_.counters.malformed.fetch_add(1, std::memory_order_relaxed);
      if (h.len != delivered)
        log::error("request {:#x} ({}) says it is {} bytes but {} arrived", h.unique, proto::name(op), h.len,
                   delivered);
      else
        log::error("request {:#x} ({}) claims {} bytes of extensions in {} bytes", h.unique, proto::name(op), ext,
                   h.len);
      if (expects_reply) resp.send(EIO);
      return;
    }
    // Extensions (security context, supplementary groups) follow the
    // arguments; fusexx does not ask for them, so they are skipped.
    // (They are last, so they come off the end of the last segment.)
    auto first = in.bytes.subspan(sizeof h);
    auto second = in.payload;
    if (second.size() >= ext) {
      second = second.first(second.size() - ext);
    } else {
      first = first.first(first.size() - (ext - second.size()));
      second = {};
    }
    body_reader body(first, second);

    // Notifications go out on the fd INIT came in on: the session's own, on
    // every transport (kernel-facts Q4: INIT always arrives through read()).
    if (op == proto::opcode::init) notifier_of().attach(in.sink);
    if (op != proto::opcode::init && state_.current() == session_state::phase::waiting_for_init &&
        !state_.init_reply_claimed()) {
      if (expects_reply) resp.send(EIO);
      return;
    }
    if (!decode_and_call(in, h, op, body, resp) && expects_reply) {
      state_.counters.malformed.fetch_add(1, std::memory_order_relaxed);
      log::error("request {:#x} ({}) is too short for its arguments", h.unique, proto::name(op));
      resp.send(EINVAL);
    }
  }

 private:
  template <class Op>
  using expected_t = typename std::remove_cvref_t<Op>::expected;

  notifier& notifier_of() noexcept { return static_cast<filesystem_base<Fs>&>(fs_).notify(); }

  // Answers ENOSYS; for convenience in `return nosys(resp);`.
  static bool nosys(const responder& resp) {
    resp.send(ENOSYS);
    return true;
  }
  static bool ok(const responder& resp) {
    resp.send(0);
    return true;
  }

  // Returns false when the body is too short for the opcode's arguments.
  bool decode_and_call(incoming& in, const proto::in_header& h, proto::opcode op, body_reader& body,
                       const responder& resp) {
    using proto::opcode;
    const ino node = h.nodeid;
    switch (op) {
      case opcode::init: return handle_init(body, resp, in.sink, h.unique);
      case opcode::destroy:
        end_session();
        return ok(resp);
      case opcode::forget: {
        auto a = body.take<proto::forget_in>();
        if (!a) return false;
        forget(node, a->nlookup);
        return true;
      }
      case opcode::batch_forget: {
        auto a = body.take<proto::batch_forget_in>();
        if (!a) return false;
        for (std::uint32_t i = 0; i < a->count; ++i) {
          auto one = body.take<proto::forget_one>();
          if (!one) return false;  // a truncated batch: forget what arrived
          forget(one->nodeid, one->nlookup);
        }
        return true;
      }
      case opcode::interrupt: {
        auto a = body.take<proto::interrupt_in>();
        if (!a) return false;
        state_.counters.interrupts.fetch_add(1, std::memory_order_relaxed);
        state_.interrupts.add(a->unique);
        // Registered first, so a handler that checks interrupted() after
        // queueing itself cannot miss the call below.
        if constexpr (has_interrupt<Fs>) call_noexcept([&] { fs_.interrupt(a->unique); }, "interrupt");
        return true;
      }
      case opcode::notify_reply: {
        // The kernel's answer to a NOTIFY_RETRIEVE: the unique is the one
        // the notifier chose, the data is what the page cache held.
        auto a = body.take<proto::notify_retrieve_in>();
        auto data = a ? body.bytes(a->size) : std::nullopt;
        if (!data) return false;
        notifier_of().deliver(h.unique, off_t(a->offset), *data);
        return true;
      }

      case opcode::lookup: {
        if constexpr (!has_lookup<Fs>) return nosys(resp);
        else {
          auto name = body.name();
          if (!name) return false;
          serve(in, h, resp, make_operation<entry>(0, [this, node, n = *name](int, request& r) {
            return fs_.lookup(r, node, n); }, send_entry));
          return true;
        }
      }
      case opcode::getattr: {
        auto a = body.take<proto::getattr_in>();
        if (!a) return false;
        std::optional<fhandle> fh;
        if (a->getattr_flags & proto::getattr_flag::fh) fh = a->fh;
        if constexpr (has_getattr<Fs>) {
          serve(in, h, resp, make_operation<attr>(0, [this, node, fh](int, request& r) {
            return fs_.getattr(r, node, fh); }, send_attr));
        } else if constexpr (has_getattr_without_handle<Fs>) {
          serve(in, h, resp, make_operation<attr>(0, [this, node](int, request& r) {
            return fs_.getattr(r, node); }, send_attr));
        } else {
          return nosys(resp);
        }
        return true;
      }
      case opcode::setattr: {
        if constexpr (!has_setattr<Fs>) return nosys(resp);
        else {
          auto a = body.take<proto::setattr_in>();
          if (!a) return false;
          serve(in, h, resp, make_operation<attr>(decode_setattr(*a), [this, node](const set_attributes& s,
              request& r) { return fs_.setattr(r, node, s); },
              [](const set_attributes&, const responder& s, const attr& a) { send_attr(0, s, a); }));
          return true;
        }
      }
      case opcode::readlink: {
        if constexpr (!has_readlink<Fs>) return nosys(resp);
        else {
          serve(in, h, resp, make_operation<std::string>(0, [this, node](int, request& r) {
            return fs_.readlink(r, node); }, [](int, const responder& s, const std::string& target) {
              s.send(0, std::as_bytes(std::span(target))); }));
          return true;
        }
      }
      case opcode::mknod: {
        if constexpr (!has_mknod<Fs>) return nosys(resp);
        else {
          auto a = body.take<proto::mknod_in>();
          auto name = a ? body.name() : std::nullopt;
          if (!name) return false;
          serve(in, h, resp, make_operation<entry>(0, [this, node, n = *name, a = *a](int, request& r) {
            return fs_.mknod(r, node, n, mode_t(a.mode), dev_t(a.rdev), mode_t(a.umask)); }, send_entry));
          return true;
        }
      }
      case opcode::mkdir: {
        if constexpr (!has_mkdir<Fs>) return nosys(resp);
        else {
          auto a = body.take<proto::mkdir_in>();
          auto name = a ? body.name() : std::nullopt;
          if (!name) return false;
          serve(in, h, resp, make_operation<entry>(0, [this, node, n = *name, a = *a](int, request& r) {
            return fs_.mkdir(r, node, n, mode_t(a.mode), mode_t(a.umask)); }, send_entry));
          return true;
        }
      }
      case opcode::unlink: {
        if constexpr (!has_unlink<Fs>) return nosys(resp);
        else {
          auto name = body.name();
          if (!name) return false;
          serve(in, h, resp, make_operation<void>(0, [this, node, n = *name](int, request& r) {
            return fs_.unlink(r, node, n); }, send_ok));
          return true;
        }
      }
      case opcode::rmdir: {
        if constexpr (!has_rmdir<Fs>) return nosys(resp);
        else {
          auto name = body.name();
          if (!name) return false;
          serve(in, h, resp, make_operation<void>(0, [this, node, n = *name](int, request& r) {
            return fs_.rmdir(r, node, n); }, send_ok));
          return true;
        }
      }
      case opcode::symlink: {
        if constexpr (!has_symlink<Fs>) return nosys(resp);
        else {
          auto name = body.name();
          auto target = name ? body.name() : std::nullopt;
          if (!target) return false;
          serve(in, h, resp, make_operation<entry>(0, [this, node, n = *name, t = *target](int, request& r) {
            return fs_.symlink(r, node, n, t); }, send_entry));
          return true;
        }
      }
      case opcode::rename:
      case opcode::rename2: {
        if constexpr (!has_rename<Fs>) return nosys(resp);
        else {
          std::uint64_t new_dir = 0;
          unsigned flags = 0;
          if (op == opcode::rename) {
            auto a = body.take<proto::rename_in>();
            if (!a) return false;
            new_dir = a->newdir;
          } else {
            auto a = body.take<proto::rename2_in>();
            if (!a) return false;
            new_dir = a->newdir;
            flags = a->flags;
          }
          auto from = body.name();
          auto to = from ? body.name() : std::nullopt;
          if (!to) return false;
          serve(in, h, resp, make_operation<void>(0, [this, node, f = *from, new_dir, t = *to, flags](int,
              request& r) { return fs_.rename(r, node, f, new_dir, t, flags); }, send_ok));
          return true;
        }
      }
      case opcode::link: {
        if constexpr (!has_link<Fs>) return nosys(resp);
        else {
          auto a = body.take<proto::link_in>();
          auto name = a ? body.name() : std::nullopt;
          if (!name) return false;
          serve(in, h, resp, make_operation<entry>(0, [this, node, n = *name, old = a->oldnodeid](int,
              request& r) { return fs_.link(r, old, node, n); }, send_entry));
          return true;
        }
      }
      case opcode::open:
      case opcode::opendir: {
        auto a = body.take<proto::open_in>();
        if (!a) return false;
        const int flags = static_cast<int>(a->flags);
        const bool kill = (a->open_flags & proto::open_flag::kill_suidgid) != 0;
        if (op == opcode::open) {
          if constexpr (has_open<Fs>) {
            serve(in, h, resp, make_operation<opened>(0, [this, node, flags, kill](int, request& r) {
              r.set_kill_suidgid(kill);
              return fs_.open(r, node, flags); }, send_open));
            return true;
          }
        } else {
          if constexpr (has_opendir<Fs>) {
            serve(in, h, resp, make_operation<opened>(0, [this, node, flags](int, request& r) {
              return fs_.opendir(r, node, flags); }, send_open));
            return true;
          }
        }
        // Stateless files need no open handler: succeed with handle 0, as libfuse does.
        send_open(0, resp, opened{});
        return true;
      }
      case opcode::read: {
        if constexpr (!has_read<Fs>) return nosys(resp);
        else {
          auto a = body.take<proto::read_in>();
          if (!a) return false;
          auto into = in.scratch.first(std::min<std::size_t>(a->size, in.scratch.size()));
          serve(in, h, resp, make_operation<std::size_t>(into, [this, node, a = *a](std::span<std::byte> dst,
              request& r) { return fs_.read(r, node, a.fh, off_t(a.offset), dst); },
              [](std::span<std::byte> dst, const responder& s, std::size_t n) {
                if (n > dst.size()) {
                  log::error("read() returned {} bytes for a {}-byte buffer", n, dst.size());
                  return s.send(EIO);
                }
                s.send(0, dst.first(n));
              }));
          return true;
        }
      }
      case opcode::write: {
        if constexpr (!has_write<Fs>) return nosys(resp);
        else {
          auto a = body.take<proto::write_in>();
          auto data = a ? body.bytes(a->size) : std::nullopt;
          if (!data) return false;
          serve(in, h, resp, make_operation<std::size_t>(0, [this, node, a = *a, d = *data](int, request& r) {
            return fs_.write(r, node, a.fh, off_t(a.offset), d, int(a.write_flags)); },
            [](int, const responder& s, std::size_t n) {
              proto::write_out out{};
              out.size = static_cast<std::uint32_t>(n);
              s.send(0, bytes_of(out));
            }));
          return true;
        }
      }
      case opcode::statfs: {
        if constexpr (has_statfs<Fs>) {
          serve(in, h, resp, make_operation<fs_stats>(0, [this, node](int, request& r) {
            return fs_.statfs(r, node); }, send_statfs));
        } else {
          // Without a handler, report an empty filesystem rather than make df fail.
          fs_stats s{};
          s.f_bsize = 512;
          s.f_namemax = 255;
          send_statfs(0, resp, s);
        }
        return true;
      }
      case opcode::release:
      case opcode::releasedir: {
        auto a = body.take<proto::release_in>();
        if (!a) return false;
        const int flags = static_cast<int>(a->flags);
        if (op == opcode::release) {
          if constexpr (has_release<Fs>) {
            serve(in, h, resp, make_operation<void>(0, [this, node, fh = a->fh, flags](int, request& r) {
              return fs_.release(r, node, fh, flags); }, send_ok));
            return true;
          }
        } else {
          if constexpr (has_releasedir<Fs>) {
            serve(in, h, resp, make_operation<void>(0, [this, node, fh = a->fh, flags](int, request& r) {
              return fs_.releasedir(r, node, fh, flags); }, send_ok));
            return true;
          }
        }
        return ok(resp);  // nothing was opened, so nothing to release
      }
      case opcode::fsync:
      case opcode::fsyncdir: {
        auto a = body.take<proto::fsync_in>();
        if (!a) return false;
        const bool datasync = a->fsync_flags & proto::fsync_flag::fdatasync;
        if (op == opcode::fsync) {
          if constexpr (has_fsync<Fs>) {
            serve(in, h, resp, make_operation<void>(0, [this, node, fh = a->fh, datasync](int, request& r) {
              return fs_.fsync(r, node, fh, datasync); }, send_ok));
            return true;
          }
        } else {
          if constexpr (has_fsyncdir<Fs>) {
            serve(in, h, resp, make_operation<void>(0, [this, node, fh = a->fh, datasync](int, request& r) {
              return fs_.fsyncdir(r, node, fh, datasync); }, send_ok));
            return true;
          }
        }
        return nosys(resp);
      }
      case opcode::flush: {
        if constexpr (!has_flush<Fs>) return nosys(resp);
        else {
          auto a = body.take<proto::flush_in>();
          if (!a) return false;
          serve(in, h, resp, make_operation<void>(0, [this, node, a = *a](int, request& r) {
            return fs_.flush(r, node, a.fh, a.lock_owner); }, send_ok));
          return true;
        }
      }
      case opcode::readdir:
      case opcode::readdirplus: {
        auto a = body.take<proto::read_in>();
        if (!a) return false;
        const bool plus = op == opcode::readdirplus;
        dir_buffer out(in.scratch.first(std::min<std::size_t>(a->size, in.scratch.size())), plus);
        auto done = [](const dir_buffer& d, const responder& s) { s.send(0, d.bytes()); };
        if (plus) {
          if constexpr (has_readdirplus<Fs>) {
            serve(in, h, resp, make_operation<void>(out, [this, node, a = *a](dir_buffer& d, request& r) {
              return fs_.readdirplus(r, node, a.fh, off_t(a.offset), d); }, done));
            return true;
          }
        } else {
          if constexpr (has_readdir<Fs>) {
            serve(in, h, resp, make_operation<void>(out, [this, node, a = *a](dir_buffer& d, request& r) {
              return fs_.readdir(r, node, a.fh, off_t(a.offset), d); }, done));
            return true;
          }
        }
        return nosys(resp);
      }
      case opcode::access: {
        if constexpr (!has_access<Fs>) return nosys(resp);  // the kernel then stops asking
        else {
          auto a = body.take<proto::access_in>();
          if (!a) return false;
          serve(in, h, resp, make_operation<void>(0, [this, node, mask = int(a->mask)](int, request& r) {
            return fs_.access(r, node, mask); }, send_ok));
          return true;
        }
      }
      case opcode::create: {
        if constexpr (!has_create<Fs>) return nosys(resp);  // the kernel falls back to mknod + open
        else {
          auto a = body.take<proto::create_in>();
          auto name = a ? body.name() : std::nullopt;
          if (!name) return false;
          serve(in, h, resp, make_operation<created>(0, [this, node, n = *name, a = *a](int, request& r) {
            r.set_kill_suidgid((a.open_flags & proto::open_flag::kill_suidgid) != 0);
            return fs_.create(r, node, n, mode_t(a.mode), int(a.flags), mode_t(a.umask)); },
            send_created));
          return true;
        }
      }
      case opcode::getxattr:
      case opcode::listxattr: {
        auto a = body.take<proto::getxattr_in>();
        if (!a) return false;
        const std::uint32_t size = a->size;
        auto sized = [size](int, const responder& s, const std::string& value) { send_sized(s, size, value); };
        if (op == opcode::getxattr) {
          if constexpr (!has_getxattr<Fs>) return nosys(resp);
          else {
            auto name = body.name();
            if (!name) return false;
            serve(in, h, resp, make_operation<std::string>(0, [this, node, n = *name](int, request& r) {
              return fs_.getxattr(r, node, n); }, sized));
          }
        } else {
          if constexpr (!has_listxattr<Fs>) return nosys(resp);
          else serve(in, h, resp, make_operation<std::string>(0, [this, node](int, request& r) {
            return fs_.listxattr(r, node); }, sized));
        }
        return true;
      }
      case opcode::setxattr: {
        if constexpr (!has_setxattr<Fs>) return nosys(resp);
        else {
          // The 16-byte form only when FUSE_SETXATTR_EXT was granted.
          const bool ext = state_.conn.has(proto::init_flag::setxattr_ext);
          auto a = body.take<proto::setxattr_in>(ext ? sizeof(proto::setxattr_in) : proto::setxattr_in_compat_size);
          auto name = a ? body.name() : std::nullopt;
          auto value = name ? body.bytes(a->size) : std::nullopt;
          if (!value) return false;
          serve(in, h, resp, make_operation<void>(0, [this, node, n = *name, v = *value, f = int(a->flags)](int,
              request& r) { return fs_.setxattr(r, node, n, v, f); }, send_ok));
          return true;
        }
      }
      case opcode::removexattr: {
        if constexpr (!has_removexattr<Fs>) return nosys(resp);
        else {
          auto name = body.name();
          if (!name) return false;
          serve(in, h, resp, make_operation<void>(0, [this, node, n = *name](int, request& r) {
            return fs_.removexattr(r, node, n); }, send_ok));
          return true;
        }
      }
      case opcode::tmpfile: {
        if constexpr (!has_tmpfile<Fs>) return nosys(resp);  // open(O_TMPFILE) then fails with EOPNOTSUPP
        else {
          // The kernel names the unnamed file "/"; nothing to pass on.
          auto a = body.take<proto::create_in>();
          if (!a || !body.name()) return false;
          serve(in, h, resp, make_operation<created>(0, [this, node, a = *a](int, request& r) {
            return fs_.tmpfile(r, node, mode_t(a.mode), int(a.flags), mode_t(a.umask)); }, send_created));
          return true;
        }
      }
      case opcode::getlk: {
        if constexpr (!has_getlk<Fs>) return nosys(resp);
        else {
          auto a = body.take<proto::lk_in>();
          if (!a) return false;
          // The decoded lock lives in the operation's state, which outlives a
          // coroutine handler that keeps a reference to it.
          serve(in, h, resp, make_operation<posix_lock>(decode_lock(a->lk), [this, node, a = *a](
              const posix_lock& l, request& r) { return fs_.getlk(r, node, a.fh, a.owner, l); },
            [](const posix_lock&, const responder& s, const posix_lock& l) {
              proto::lk_out out{};
              out.lk = encode_lock(l);
              s.send(0, bytes_of(out));
            }));
          return true;
        }
      }
      case opcode::setlk:
      case opcode::setlkw: {
        auto a = body.take<proto::lk_in>();
        if (!a) return false;
        const bool wait = op == opcode::setlkw;
        if (a->lk_flags & proto::lk_flag::flock) {
          // flock(2): the kernel sends it as SETLK(W) on the whole file.
          if constexpr (!has_flock<Fs>) return nosys(resp);
          else {
            int how = a->lk.type == F_RDLCK ? LOCK_SH : a->lk.type == F_WRLCK ? LOCK_EX : LOCK_UN;
            if (!wait && how != LOCK_UN) how |= LOCK_NB;
            serve(in, h, resp, make_operation<void>(0, [this, node, a = *a, how](int, request& r) {
              return fs_.flock(r, node, a.fh, a.owner, how); }, send_ok));
            return true;
          }
        }
        if constexpr (!has_setlk<Fs>) return nosys(resp);
        else {
          serve(in, h, resp, make_operation<void>(decode_lock(a->lk), [this, node, a = *a, wait](
              const posix_lock& l, request& r) { return fs_.setlk(r, node, a.fh, a.owner, l, wait); },
              [](const posix_lock&, const responder& s) { s.send(0); }));
          return true;
        }
      }
      case opcode::bmap: {
        if constexpr (!has_bmap<Fs>) return nosys(resp);
        else {
          auto a = body.take<proto::bmap_in>();
          if (!a) return false;
          serve(in, h, resp, make_operation<std::uint64_t>(0, [this, node, a = *a](int, request& r) {
            return fs_.bmap(r, node, a.blocksize, a.block); }, [](int, const responder& s, std::uint64_t b) {
              proto::bmap_out out{};
              out.block = b;
              s.send(0, bytes_of(out));
            }));
          return true;
        }
      }
      case opcode::ioctl: {
        if constexpr (!has_ioctl<Fs>) return nosys(resp);  // the caller gets ENOTTY
        else {
          auto a = body.take<proto::ioctl_in>();
          auto data = a ? body.bytes(a->in_size) : std::nullopt;
          if (!data) return false;
          serve(in, h, resp, make_operation<ioctl_reply>(*a, [this, node, d = *data](const proto::ioctl_in& a,
              request& r) { return fs_.ioctl(r, node, a.fh, a.flags, a.cmd, a.arg, d, a.out_size); }, send_ioctl));
          return true;
        }
      }
      case opcode::poll: {
        if constexpr (!has_poll<Fs>) return nosys(resp);  // the kernel then reports "always ready"
        else {
          auto a = body.take<proto::poll_in>();
          if (!a) return false;
          std::optional<std::uint64_t> kh;
          if (a->flags & proto::poll_flag::schedule_notify) kh = a->kh;
          serve(in, h, resp, make_operation<unsigned>(0, [this, node, a = *a, kh](int, request& r) {
            return fs_.poll(r, node, a.fh, kh, a.events); }, [](int, const responder& s, unsigned revents) {
              proto::poll_out out{};
              out.revents = revents;
              s.send(0, bytes_of(out));
            }));
          return true;
        }
      }
      case opcode::fallocate: {
        if constexpr (!has_fallocate<Fs>) return nosys(resp);  // the kernel answers EOPNOTSUPP from then on
        else {
          auto a = body.take<proto::fallocate_in>();
          if (!a) return false;
          serve(in, h, resp, make_operation<void>(0, [this, node, a = *a](int, request& r) {
            return fs_.fallocate(r, node, a.fh, int(a.mode), off_t(a.offset), off_t(a.length)); }, send_ok));
          return true;
        }
      }
      case opcode::lseek: {
        if constexpr (!has_lseek<Fs>) return nosys(resp);  // the kernel seeks by itself from then on
        else {
          auto a = body.take<proto::lseek_in>();
          if (!a) return false;
          serve(in, h, resp, make_operation<off_t>(0, [this, node, a = *a](int, request& r) {
            return fs_.lseek(r, node, a.fh, off_t(a.offset), int(a.whence)); },
            [](int, const responder& s, off_t where) {
              if (where < 0) return s.send(EINVAL);
              proto::lseek_out out{};
              out.offset = static_cast<std::uint64_t>(where);
              s.send(0, bytes_of(out));
            }));
          return true;
        }
      }
      case opcode::copy_file_range:
      case opcode::copy_file_range_64: {
        // ENOSYS makes the kernel fall back: from the 64-bit form to the old
        // one, and from there to copying through the page cache.
        if constexpr (!has_copy_file_range<Fs>) return nosys(resp);
        else {
          auto a = body.take<proto::copy_file_range_in>();
          if (!a) return false;
          const bool wide = op == opcode::copy_file_range_64;
          serve(in, h, resp, make_operation<std::size_t>(*a, [this, node](const proto::copy_file_range_in& a,
              request& r) { return fs_.copy_file_range(r, node, a.fh_in, off_t(a.off_in), a.nodeid_out, a.fh_out,
                                                       off_t(a.off_out), std::size_t(a.len), a.flags); },
              [wide](const proto::copy_file_range_in& a, const responder& s, std::size_t n) {
                if (n > a.len || (!wide && n > UINT32_MAX)) {
                  log::error("copy_file_range() copied {} bytes of {} asked for", n, a.len);
                  return s.send(EIO);
                }
                if (wide) {
                  proto::copy_file_range_out out{};
                  out.bytes_copied = n;
                  return s.send(0, bytes_of(out));
                }
                proto::write_out out{};
                out.size = static_cast<std::uint32_t>(n);
                s.send(0, bytes_of(out));
              }));
          return true;
        }
      }
      case opcode::statx: {
        if constexpr (!has_statx<Fs>) return nosys(resp);  // the kernel uses GETATTR instead
        else {
          auto a = body.take<proto::statx_in>();
          if (!a) return false;
          std::optional<fhandle> fh;
          if (a->getattr_flags & proto::getattr_flag::fh) fh = a->fh;
          serve(in, h, resp, make_operation<extended_attr>(0, [this, node, a = *a, fh](int, request& r) {
            return fs_.statx(r, node, fh, int(a.sx_flags), a.sx_mask); },
            [](int, const responder& s, const extended_attr& x) { s.send(0, bytes_of(encode_statx_out(x))); }));
          return true;
        }
      }
      case opcode::syncfs: {
        if constexpr (!has_syncfs<Fs>) return nosys(resp);
        else {
          if (!body.take<proto::syncfs_in>()) return false;
          serve(in, h, resp, make_operation<void>(0, [this, node](int, request& r) {
            return fs_.syncfs(r, node); }, send_ok));
          return true;
        }
      }
      default:
        // Also SETUPMAPPING/REMOVEMAPPING (virtiofs DAX only) and CUSE_INIT.
        return nosys(resp);
    }
  }

  bool handle_init(body_reader& body, const responder& resp, const reply_sink& sink, std::uint64_t unique) {
    // Kernels before 7.36 send the 16-byte form; the rest of init_in stays zero.
    auto a = body.take<proto::init_in>(std::min(body.remaining(), sizeof(proto::init_in)));
    if (!a || body.remaining() > 0 || a->major == 0) return false;
    if (state_.current() != session_state::phase::waiting_for_init) {
      log::error("a second INIT arrived; refusing it");
      resp.send(EPROTO);
      return true;
    }
    if (!state_.init_received(sink, unique)) {
      resp.send(state_.init_error().value());  // the watchdog gave up before INIT came
      return true;
    }
    init_reply r = negotiate_init(fs_, state_, *a);
    // A hanging init() may have been given up on meanwhile: then the watchdog
    // has answered INIT already, and this late reply must not be sent.
    const bool newer_major = a->major > proto::kernel_major;
    if (!newer_major && !state_.claim_init_reply()) {
      state_.counters.in_flight.fetch_sub(1, std::memory_order_relaxed);
      return true;
    }
    if (r.error) {
      resp.send(r.error);
      return true;
    }
    resp.send(0, bytes_of(r.out, r.size));
    if (!newer_major) {
      if (state_.after_init_reply) state_.after_init_reply(state_.conn);
      state_.set_phase(session_state::phase::serving);
    }
    return true;
  }

  void forget(ino node, std::uint64_t nlookup) {
    state_.counters.forgets.fetch_add(1, std::memory_order_relaxed);
    if constexpr (has_forget<Fs>) call_noexcept([&] { fs_.forget(node, nlookup); }, "forget");
  }

  template <class F>
  static void call_noexcept(F&& f, const char* what) {
    try {
      f();
    } catch (const std::exception& e) {
      log::error("{}() threw: {}", what, e.what());
    } catch (...) {
      log::error("{}() threw a non-standard exception", what);
    }
  }

  // ---- success encoders ----
  static void send_entry(int, const responder& s, const entry& e) { s.send(0, bytes_of(encode_entry(e))); }
  static void send_attr(int, const responder& s, const attr& a) { s.send(0, bytes_of(encode_attr_out(a))); }
  static void send_open(int, const responder& s, const opened& o) { s.send(0, bytes_of(encode_open(o))); }
  static void send_ok(int, const responder& s) { s.send(0); }
  static void send_created(int, const responder& s, const created& c) {
    auto e = encode_entry(c.entry);
    auto o = encode_open(c.file);
    s.send(0, bytes_of(e), bytes_of(o));
  }
  static void send_ioctl(const proto::ioctl_in& a, const responder& s, const ioctl_reply& x) {
    proto::ioctl_out out{};
    out.result = x.result;
    if (!x.retry_in.empty() || !x.retry_out.empty()) {
      // Only an unrestricted ioctl may be retried, and within the kernel's iovec limit.
      const std::size_t n = x.retry_in.size() + x.retry_out.size();
      if (!(a.flags & proto::ioctl_flag::unrestricted) || n > proto::ioctl_flag::ioctl_max_iov) {
        log::error("ioctl() asked for a retry the kernel cannot do ({} areas, flags {:#x})", n, a.flags);
        return s.send(EIO);
      }
      out.flags = proto::ioctl_flag::retry;
      out.in_iovs = static_cast<std::uint32_t>(x.retry_in.size());
      out.out_iovs = static_cast<std::uint32_t>(x.retry_out.size());
      std::vector<std::byte> reply(sizeof out + n * sizeof(proto::ioctl_iovec));
      std::memcpy(reply.data(), &out, sizeof out);
      std::size_t at = sizeof out;
      for (const auto* list : {&x.retry_in, &x.retry_out})
        for (const ioctl_area& area : *list) {
          const proto::ioctl_iovec v{area.base, area.length};
          std::memcpy(reply.data() + at, &v, sizeof v);
          at += sizeof v;
        }
      return s.send(0, reply);
    }
    if (x.out.size() > a.out_size) {
      log::error("ioctl() returned {} bytes for a {}-byte buffer", x.out.size(), a.out_size);
      return s.send(EIO);
    }
    s.send(0, bytes_of(out), x.out);
  }
  static void send_statfs(int, const responder& s, const fs_stats& st) {
    proto::statfs_out out{};
    out.st = encode_statfs(st);
    s.send(0, bytes_of(out));
  }
  // getxattr/listxattr: size 0 asks for the length only; a too-small buffer is ERANGE.
  static void send_sized(const responder& s, std::uint32_t size, const std::string& value) {
    if (size == 0) {
      proto::getxattr_out out{};
      out.size = static_cast<std::uint32_t>(value.size());
      return s.send(0, bytes_of(out));
    }
    if (value.size() > size) return s.send(ERANGE);
    s.send(0, std::as_bytes(std::span(value)));
  }

  static set_attributes decode_setattr(const proto::setattr_in& a) {
    namespace f = proto::fattr;
    set_attributes s;
    if (a.valid & f::mode) s.mode = static_cast<mode_t>(a.mode);
    if (a.valid & f::uid) s.uid = a.uid;
    if (a.valid & f::gid) s.gid = a.gid;
    if (a.valid & f::size) s.size = static_cast<off_t>(a.size);
    if (a.valid & f::atime_now) s.atime = timespec{0, UTIME_NOW};
    else if (a.valid & f::atime) s.atime = decode_time(a.atime, a.atimensec);
    if (a.valid & f::mtime_now) s.mtime = timespec{0, UTIME_NOW};
    else if (a.valid & f::mtime) s.mtime = decode_time(a.mtime, a.mtimensec);
    if (a.valid & f::ctime) s.ctime = decode_time(a.ctime, a.ctimensec);
    if (a.valid & f::fh) s.fh = a.fh;
    if (a.valid & f::lockowner) s.lock_owner = a.lock_owner;
    s.kill_suid = (a.valid & f::kill_suidgid) != 0;
    return s;
  }

  // ---- running a handler ----

  template <class T, class Op>
  static void finish(Op& op, const responder& resp, result<T>& r) {
    if (!r) return resp.send(to_errno(r.error()));
    if constexpr (std::is_void_v<T>) op.done(op.state, resp);
    else op.done(op.state, resp, *r);
  }

  template <class Op>
  static auto invoke(Op& op, request& req) {
    using R = decltype(op.call(op.state, req));
    using V = typename handler_return<R>::value;
    using E = expected_t<Op>;
    static_assert(std::is_void_v<E> ? std::is_void_v<V> : std::is_convertible_v<V, E>,
                  "fusexx: a handler returns the wrong type for its operation (see filesystem.hpp)");
    result<E> r = error(EIO);
    try {
      if constexpr (std::is_void_v<R>) {
        op.call(op.state, req);
        r = result<E>{};
      } else {
        r = op.call(op.state, req);
      }
    } catch (const std::exception& e) {
      log::error("handler for {} threw: {}", proto::name(req.opcode()), e.what());
    } catch (...) {
      log::error("handler for {} threw a non-standard exception", proto::name(req.opcode()));
    }
    return r;
  }

  template <class Op>
  detail::detached drive(Op op, request req, responder resp) {
    using E = expected_t<Op>;
    result<E> r = error(EIO);
    try {
      r = co_await op.call(op.state, req);
    } catch (const std::exception& e) {
      log::error("handler for {} threw: {}", proto::name(req.opcode()), e.what());
    } catch (...) {
      log::error("handler for {} threw a non-standard exception", proto::name(req.opcode()));
    }
    finish<E>(op, resp, r);
  }

  template <class Op>
  void serve(incoming& in, const proto::in_header& h, const responder& resp, Op op) {
    using R = decltype(op.call(op.state, std::declval<request&>()));
    request req(h, &state_.interrupts);
    if constexpr (handler_return<R>::is_coroutine) {
      using V = typename handler_return<R>::value;
      using E = expected_t<Op>;
      static_assert(std::is_void_v<E> ? std::is_void_v<V> : std::is_convertible_v<V, E>,
                    "fusexx: a coroutine handler returns the wrong type for its operation (see filesystem.hpp)");
      auto d = drive(std::move(op), req, resp).handle;
      auto& promise = d.promise();
      if (in.owner) promise.owned = std::move(*in.owner);
      d.resume();
      if (promise.phase.exchange(detail::detached::promise_type::released, std::memory_order_acq_rel) ==
          detail::detached::promise_type::finished) {
        // Finished without suspending: the buffer comes straight back.
        if (in.owner) *in.owner = std::move(promise.owned);
        d.destroy();
      }
      // Otherwise the handler is waiting on something; the frame now owns the
      // buffer (the transport reads the next request into a new one).
    } else {
      auto r = invoke(op, req);
      finish<expected_t<Op>>(op, resp, r);
    }
  }

  Fs& fs_;
  session_state& state_;
};

}  // namespace fusexx
