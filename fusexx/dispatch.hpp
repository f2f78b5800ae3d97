#pragma once
// The dispatcher (internal, fusexx::detail): one request's bytes in, one
// typed call on the filesystem, one reply's bytes out. It makes no syscalls
// itself — replies leave through the transport's reply_sink — so unit tests
// and fuzzers drive it with plain buffers.
//
// What each opcode carries and calls is its row in detail/operations.hpp;
// this file is the one engine every row runs through:
//   header checks → the row (ENOSYS without a handler, EINVAL for a short
//   body) → the handler, plain or coroutine, inside the one exception fence →
//   the reply built from what the handler returned → the session's
//   bookkeeping (lookups the kernel now holds, open handles).
// Every request is answered exactly once, whichever path it takes: a handler
// cannot forget to reply or reply twice.
#include <array>
#include <atomic>
#include <coroutine>
#include <cstdint>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>

#include "buffer.hpp"
#include "codec.hpp"
#include "detail/fence.hpp"
#include "detail/fire_and_forget.hpp"
#include "detail/frame_cache.hpp"
#include "detail/handler_scope.hpp"
#include "detail/incoming.hpp"
#include "detail/negotiate.hpp"
#include "detail/operations.hpp"
#include "detail/responder.hpp"
#include "dir_buffer.hpp"
#include "filesystem.hpp"
#include "log.hpp"
#include "proto/abi.hpp"
#include "request.hpp"
#include "session.hpp"
#include "task.hpp"

namespace fusexx::detail {

// A fire-and-forget coroutine that runs one coroutine handler and sends its
// reply. Most handlers finish before their first resume returns (nothing to
// wait for, or an io_uring operation awaited inline): the dispatcher then
// keeps the buffer and frees the frame, with no atomic operation — the frame
// knows it from `resuming()`, which only the thread that started it can
// match. A handler that finishes later, on any thread, settles who frees
// what by one atomic exchange on each side: if it finished before the
// dispatcher looked, the dispatcher gets the buffer back and frees the
// frame; otherwise the frame keeps the buffer and frees both itself when the
// reply is sent.
struct detached {
  struct promise_type;
  // The frame the dispatcher is resuming on this thread for the first time,
  // or null. Its final_awaiter clears it: "finished inside that resume".
  static promise_type*& resuming() noexcept {
    thread_local promise_type* p = nullptr;
    return p;
  }

  struct promise_type : cached_frame {
    enum : int { starting = 0, finished = 1, released = 2 };
    std::atomic<int> phase{starting};
    buffer owned;
    handler_scope* scope = nullptr;  // the session's, joined once the handler has suspended
    handler_scope::member membership;

    detached get_return_object() noexcept { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct final_awaiter {
      bool await_ready() noexcept { return false; }
      // true: stay suspended, the dispatcher is still inside serve() and will
      // destroy the frame; false: run off the end, which destroys the frame.
      bool await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        auto& p = h.promise();
        if (resuming() == &p) {  // inside the dispatcher's first resume: it frees the frame
          resuming() = nullptr;
          return true;
        }
        if (p.phase.exchange(finished, std::memory_order_acq_rel) == starting) return true;
        // Released: the dispatcher is done with it, and it is in the scope
        // (a handler that suspended joins before it is released).
        p.scope->leave(p.membership);  // its reply has been sent
        return false;
      }
      void await_resume() noexcept {}
    };
    final_awaiter final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }  // the fence catches everything first
  };
  std::coroutine_handle<promise_type> handle;
};

template <filesystem Fs>
class dispatcher {
 public:
  dispatcher(Fs& fs, fusexx::session& s) noexcept : fs_(fs), session_(s) {}

  Fs& fs() noexcept { return fs_; }
  fusexx::session& session() noexcept { return session_; }

  disposition handle(incoming& in) {
    if (in.bytes.size() < sizeof(proto::in_header)) {
      // Without a complete header there is no unique id to answer to.
      session_.counters().malformed.fetch_add(1, std::memory_order_relaxed);
      log::error("dropped a {}-byte request: shorter than its header", in.bytes.size());
      return disposition::no_reply;
    }
    // The one clock read at arrival (the other is at the reply): statistics.
    auto& stats = session_.stats();
    const std::uint64_t arrived = stats.enabled() ? request_stats::now_ns() : 0;
    proto::in_header h;
    std::memcpy(&h, in.bytes.data(), sizeof h);
    session_.counters().requests.fetch_add(1, std::memory_order_relaxed);
    const auto op = static_cast<proto::opcode>(h.opcode);
    if (log::enabled(log::level::debug))
      log::debug("-> unique={:#x} {} node={} len={} pid={}", h.unique, proto::name(op), h.nodeid, h.len, h.pid);

    const row_info info = row_of(op);
    const bool counted = info.replies && !info.gate_answers;
    if (counted) session_.counters().in_flight.fetch_add(1, std::memory_order_relaxed);
    if (arrived != 0) stats.received(h.opcode, in.bytes.size() + in.payload.size());
    const responder resp(in.sink, h.unique, session_, counted, h.opcode, arrived);
    const auto answered = [&] { return info.replies ? disposition::replied : disposition::no_reply; };

    const std::size_t ext = std::size_t{h.total_extlen} * 8;
    const std::size_t delivered = in.bytes.size() + in.payload.size();
    if (h.len != delivered || h.len < sizeof h + ext || ext > delivered - sizeof h) {
      session_.counters().malformed.fetch_add(1, std::memory_order_relaxed);
      if (h.len != delivered)
        log::error("request {:#x} ({}) says it is {} bytes but {} arrived", h.unique, proto::name(op), h.len,
                   delivered);
      else
        log::error("request {:#x} ({}) claims {} bytes of extensions in {} bytes", h.unique, proto::name(op), ext,
                   h.len);
      if (info.replies) resp.send(EIO);
      return answered();
    }
    // Extensions (security context, supplementary groups) follow the
    // arguments; fusexx does not ask for them, so they are skipped. (They are
    // last, so they come off the end of the last segment.)
    auto first = in.bytes.subspan(sizeof h);
    auto second = in.payload;
    if (second.size() >= ext) {
      second = second.first(second.size() - ext);
    } else {
      first = first.first(first.size() - (ext - second.size()));
      second = {};
    }
    body_reader body(first, second);

    auto& gate = session_.init();
    if (op != proto::opcode::init && gate.current() == init_gate::phase::waiting && !gate.reply_claimed()) {
      if (info.replies) resp.send(EIO);
      return answered();
    }
    if (!info.run) {
      resp.send(ENOSYS);
      return disposition::replied;
    }
    if (auto d = (this->*info.run)(in, h, body, resp)) return *d;
    session_.counters().malformed.fetch_add(1, std::memory_order_relaxed);
    log::error("request {:#x} ({}) is too short for its arguments", h.unique, proto::name(op));
    if (info.replies) resp.send(EINVAL);
    return answered();
  }

  // Calls the filesystem's destroy() once per successful INIT: when DESTROY
  // arrives, or when the server stops without one. The kernel sends DESTROY
  // only to fuseblk mounts; a /dev/fuse mount just ends, and with it every
  // lookup reference the kernel held.
  void end_session() {
    if (session_.init().current() != init_gate::phase::serving) return;  // no INIT, a failed one, or done already
    if constexpr (has_destroy<Fs>) fenced("destroy()", [&] { fs_.destroy(); });
    session_.nodes().clear();
    session_.handles().clear();
    session_.init().end();
  }

  // ---- session-level requests (their rows call these) ----

  void init(const proto::init_in& in, const reply_sink& sink, std::uint64_t unique) {
    // Notifications go out on the fd INIT came in on: the session's own, on
    // every transport (kernel-facts Q4: INIT always arrives through read()).
    // Only an INIT the gate takes: a second one (refused EPROTO) must not
    // move them to where it came from — an io_uring entry, say, whose
    // memory the kernel owns again once the refusal is committed (found by
    // tests/fuzz/uring_entry).
    auto& gate = session_.init();
    if (!gate.received(sink, unique)) return;  // refused by the gate itself
    session_.notify().attach(sink);
    init_reply r = negotiate_init(fs_, session_, in);
    if (r.version_only) return gate.answer_version(bytes_of(r.out, r.size));
    // A hanging init() may have been given up on meanwhile: then the gate has
    // answered INIT already, and this late answer is dropped.
    gate.answer(r.error, bytes_of(r.out, r.size), std::move(r.why), [this] {
      if (session_.after_init_reply) session_.after_init_reply(session_.conn());
    });
  }

  void forget(ino node, std::uint64_t nlookup) {
    session_.counters().forgets.fetch_add(1, std::memory_order_relaxed);
    session_.nodes().forgot(node, nlookup);
    if constexpr (has_forget<Fs>) fenced("forget()", [&] { fs_.forget(node, nlookup); });
  }

  void interrupt(std::uint64_t unique) {
    session_.counters().interrupts.fetch_add(1, std::memory_order_relaxed);
    session_.interrupts().add(unique);
    // Registered first, so a handler that checks interrupted() after queueing
    // itself cannot miss the call below.
    if constexpr (has_interrupt<Fs>) fenced("interrupt()", [&] { fs_.interrupt(unique); });
  }

 private:
  using runner = std::optional<disposition> (dispatcher::*)(incoming&, const proto::in_header&, body_reader&,
                                                            const responder&);
  struct row_info {
    runner run = nullptr;        // null: no row, ENOSYS
    bool replies = true;
    bool gate_answers = false;
  };

  template <class Row>
  static constexpr bool has_fallback = requires(const Row& r, const responder& s) { r.fallback(s); };
  template <class Row>
  static constexpr bool diverts = requires { typename Row::diverted; };

  // ---- the table: one entry per opcode that has a row ----
  static constexpr std::size_t table_size = 64;
  template <std::size_t I>
  static constexpr row_info info_for() {
    constexpr auto code = static_cast<proto::opcode>(I);
    if constexpr (requires { sizeof(op::row<code>); }) {
      using Row = op::row<code>;
      if constexpr (requires { Row::session_level; })
        return {&dispatcher::run_session<Row>, Row::replies, requires { Row::gate_answers; }};
      else
        return {&dispatcher::run<Row>, true, false};
    } else {
      return {};
    }
  }
  static constexpr std::array<row_info, table_size> table = []<std::size_t... I>(std::index_sequence<I...>) {
    return std::array<row_info, table_size>{info_for<I>()...};
  }(std::make_index_sequence<table_size>{});
  static row_info row_of(proto::opcode op) noexcept {
    const auto i = static_cast<std::uint32_t>(op);
    return i < table_size ? table[i] : row_info{};
  }

  template <class Row>
  std::optional<disposition> run_session(incoming& in, const proto::in_header& h, body_reader& body,
                                         const responder& resp) {
    return Row::apply(*this, h, body, in, resp);
  }

  template <class Row>
  std::optional<disposition> run(incoming& in, const proto::in_header& h, body_reader& body, const responder& resp) {
    if constexpr (!diverts<Row> && !Row::template implemented<Fs> && !has_fallback<Row>) {
      resp.send(ENOSYS);  // before decoding: nothing to decode for
      return disposition::replied;
    } else {
      Row row{};
      if (!row.decode(body, op::decode_context{in.scratch, session_.conn()})) return std::nullopt;
      if constexpr (requires { row.arrived(session_, h.nodeid); }) row.arrived(session_, h.nodeid);
      if constexpr (diverts<Row>)
        if (row.diverts()) return start(in, h, resp, row.divert());
      return start(in, h, resp, std::move(row));
    }
  }

  template <class Row>
  disposition start(incoming& in, const proto::in_header& h, const responder& resp, Row row) {
    if constexpr (Row::template implemented<Fs>) {
      return serve(in, h, resp, std::move(row));
    } else if constexpr (has_fallback<Row>) {
      row.fallback(resp);
      return disposition::replied;
    } else {
      resp.send(ENOSYS);
      return disposition::replied;
    }
  }

  // ---- running a handler ----

  template <class Row>
  using handler_result = decltype(std::declval<Row&>().template call<Fs>(std::declval<Fs&>(), std::declval<request&>()));

  template <class Row>
  static constexpr void check_shape() {
    using V = typename handler_return<handler_result<Row>>::value;
    using E = typename Row::reply;
    static_assert(std::is_void_v<E> ? std::is_void_v<V> : std::is_convertible_v<V, E>,
                  "fusexx: a handler returns the wrong type for its operation (see filesystem.hpp)");
  }

  template <class Row>
  disposition serve(incoming& in, const proto::in_header& h, const responder& resp, Row row) {
    check_shape<Row>();
    request req(h, &session_);
    if constexpr (handler_return<handler_result<Row>>::is_coroutine) {
      using promise_type = detached::promise_type;
      auto d = drive(std::move(row), req, resp).handle;
      auto& promise = d.promise();
      promise_type* const outer = std::exchange(detached::resuming(), &promise);  // (a handler may dispatch too)
      d.resume();
      const bool finished_inline = detached::resuming() == nullptr;
      detached::resuming() = outer;
      if (finished_inline) {  // replied; nobody else knows of the frame
        d.destroy();
        return disposition::replied;
      }
      // Suspended (and maybe finished on another thread since): the frame
      // takes the buffer its request is in — the handler's spans point into
      // its memory, which does not move with it.
      if (in.owner) promise.owned = std::move(*in.owner);
      if (promise.phase.load(std::memory_order_acquire) != promise_type::finished) {
        // Suspended: it joins the session's scope before the frame is
        // released, so the frame leaves it when it finishes (below, if it
        // finished meanwhile; in its final_awaiter otherwise).
        promise.membership.request = {h.unique, static_cast<proto::opcode>(h.opcode), h.nodeid};
        promise.scope = &session_.scope();
        promise.scope->enter(promise.membership);
      }
      if (promise.phase.exchange(promise_type::released, std::memory_order_acq_rel) == promise_type::finished) {
        // Finished: the buffer comes straight back.
        if (promise.scope) promise.scope->leave(promise.membership);
        if (in.owner) *in.owner = std::move(promise.owned);
        d.destroy();
        return disposition::replied;
      }
      // The handler is waiting on something; the frame now owns the buffer
      // (the transport reads the next request into a new one).
      return disposition::suspended;
    } else {
      using E = typename Row::reply;
      result<E> r = fenced(
          handler_name(req),
          [&]() -> result<E> {
            if constexpr (std::is_void_v<handler_result<Row>>) {
              row.call(fs_, req);
              return {};
            } else {
              return row.call(fs_, req);
            }
          },
          result<E>(error(EIO)));
      finish(row, req, resp, r);
      return disposition::replied;
    }
  }

  template <class Row>
  detached drive(Row row, request req, responder resp) {
    using E = typename Row::reply;
    using T = handler_result<Row>;
    // The one fence, twice: around starting the handler, and around what it
    // finished with (its exception is handed back, not rethrown, by catching()).
    auto started = fenced(handler_name(req), [&] { return std::optional<T>(row.call(fs_, req)); }, std::optional<T>{});
    if (!started) {
      result<E> failed = error(EIO);
      finish(row, req, resp, failed);
      co_return;
    }
    auto done = co_await std::move(*started).catching();
    result<E> r = fenced(
        handler_name(req),
        [&]() -> result<E> {
          if (done.exception) std::rethrow_exception(done.exception);
          if constexpr (std::is_void_v<E>) {
            if (!*done.value) return std::unexpected(done.value->error());
            return {};
          } else {
            return std::move(*done.value);
          }
        },
        result<E>(error(EIO)));
    finish(row, req, resp, r);
  }

  // What the fence names when a handler throws: its operation, looked up
  // only then.
  static auto handler_name(const request& req) {
    return [op = req.opcode()] { return proto::name(op); };
  }

  // ---- the reply, and what the kernel now holds ----

  template <class Row, class E>
  void finish(Row& row, request& req, const responder& resp, result<E>& r) {
    if (!r) return resp.send(to_errno(r.error()));
    // What the reply hands the kernel is booked before it is sent: once the
    // reply is written, the kernel may already send the FORGET or RELEASE for
    // it (on another thread) before this one runs again.
    if constexpr (std::is_void_v<E>) {
      if constexpr (requires { row.out; }) {  // READDIR, READDIRPLUS
        if constexpr (Row::plus) book_dir_entries(row.out.bytes());
        resp.send(0, row.out.bytes());
        if constexpr (Row::plus)
          if (resp.sent() != 0) unbook_dir_entries(row.out.bytes(), resp.sent());
      } else {
        resp.send(0);
      }
    } else {
      book(row, req, *r);
      if constexpr (requires { row.send(resp, *r); }) row.send(resp, *r);
      else send_value(resp, *r);
      if (resp.sent() != 0) unbook(row, req, resp.sent(), *r);
    }
  }

  // An entry hands the kernel a lookup reference, an open reply a handle.
  template <class Row, class V>
  void book(const Row& row, const request& req, const V& value) {
    if constexpr (std::is_same_v<V, entry>) {
      if (value.node != 0) session_.nodes().looked_up(value.node, value.generation);
    } else if constexpr (std::is_same_v<V, created>) {
      if (value.entry.node == 0) return;
      session_.nodes().looked_up(value.entry.node, value.entry.generation);
      session_.handles().opened(value.entry.node, value.file.fh, false, row.open_flags());
    } else if constexpr (std::is_same_v<V, opened>) {
      session_.handles().opened(req.node(), value.fh, Row::directory, row.open_flags());
    }
  }
  // A reply the kernel did not take hands over nothing. When it refused it
  // because the request was gone (-ENOENT: interrupted), the filesystem gets
  // back what it handed out: forget() or release(). (Other failures mean the
  // connection is gone; destroy() follows.)
  template <class Row, class V>
  void unbook(const Row& row, request& req, int sent, const V& value) {
    const bool give_back = sent == -ENOENT;
    if constexpr (std::is_same_v<V, entry>) {
      if (value.node != 0) unbook_entry(value.node, give_back);
    } else if constexpr (std::is_same_v<V, created>) {
      if (value.entry.node == 0) return;
      unbook_entry(value.entry.node, give_back);
      unbook_open(req, give_back, value.entry.node, value.file.fh, false, row.open_flags());
    } else if constexpr (std::is_same_v<V, opened>) {
      unbook_open(req, give_back, req.node(), value.fh, Row::directory, row.open_flags());
    }
  }
  void unbook_entry(ino node, bool give_back) {
    session_.nodes().forgot(node, 1);
    if (give_back) forget_refused(node);
  }
  void unbook_open(request& req, bool give_back, ino node, fhandle fh, bool directory, int flags) {
    session_.handles().released(node, fh, directory);
    if (!give_back) return;
    if (directory) {
      if constexpr (has_releasedir<Fs>)
        give_back_handle([this, node, fh, flags](request& r) { return fs_.releasedir(r, node, fh, flags); }, req);
    } else {
      if constexpr (has_release<Fs>)
        give_back_handle([this, node, fh, flags](request& r) { return fs_.release(r, node, fh, flags); }, req);
    }
  }
  // READDIRPLUS: every entry with a node id, but "." and "..", is a lookup
  // (the kernel's fuse_direntplus_link). Read back from the packed reply.
  template <class F>
  static void each_dir_entry(std::span<const std::byte> packed, F&& f) {
    std::size_t at = 0;
    while (at + sizeof(proto::entry_out) + sizeof(proto::dirent) <= packed.size()) {
      proto::entry_out e;
      proto::dirent d;
      std::memcpy(&e, packed.data() + at, sizeof e);
      std::memcpy(&d, packed.data() + at + sizeof e, sizeof d);
      const char* name = reinterpret_cast<const char*>(packed.data() + at + sizeof e + sizeof d);
      const std::string_view n(name, d.namelen);
      if (e.nodeid != 0 && n != "." && n != "..") f(e);
      at += proto::align8(sizeof e + sizeof d + d.namelen);
    }
  }
  void book_dir_entries(std::span<const std::byte> packed) {
    each_dir_entry(packed, [&](const proto::entry_out& e) { session_.nodes().looked_up(e.nodeid, e.generation); });
  }
  void unbook_dir_entries(std::span<const std::byte> packed, int sent) {
    each_dir_entry(packed, [&](const proto::entry_out& e) { unbook_entry(e.nodeid, sent == -ENOENT); });
  }
  void forget_refused(ino node) {
    if constexpr (has_forget<Fs>) fenced("forget()", [&] { fs_.forget(node, 1); });
  }
  // Runs a release the kernel will never send, plain or coroutine, and drops
  // its result.
  template <class Call>
  void give_back_handle(Call call, const request& req) {
    using R = std::invoke_result_t<Call&, request&>;
    if constexpr (handler_return<R>::is_coroutine) {
      run_dropping(std::move(call), req);
    } else {
      request r = req;
      fenced("release()", [&] { (void)call(r); });
    }
  }
  template <class Call>
  static fire_and_forget run_dropping(Call call, request r) {
    auto done = co_await call(r).catching();
    if (done.exception) fenced("release()", [&] { std::rethrow_exception(done.exception); });
  }
  Fs& fs_;
  fusexx::session& session_;
};

}  // namespace fusexx::detail
