#pragma once
// Sends the one reply of a request and does the bookkeeping that goes with
// it, and the encoders of the common reply shapes.
#include <cstring>
#include <span>

#include "../codec.hpp"
#include "../log.hpp"
#include "../session.hpp"
#include "../types.hpp"
#include "incoming.hpp"

namespace fusexx::detail {

class responder {
 public:
  // `counted`: the request was counted in flight (every request that expects
  // a reply, except INIT, which the INIT gate answers). `received_ns`: when
  // it arrived (request_stats::now_ns()), 0 when statistics are off.
  responder(const reply_sink& sink, std::uint64_t unique, session& s, bool counted, std::uint32_t opcode = 0,
            std::uint64_t received_ns = 0) noexcept
      : sink_(sink), unique_(unique), session_(&s), received_ns_(received_ns), opcode_(opcode), counted_(counted) {}

  void send(int error, std::span<const std::byte> payload = {}) const { send(error, payload, {}); }
  // A reply in two parts (CREATE's entry_out + open_out, IOCTL's ioctl_out +
  // data): written as one message, without joining them first.
  void send(int error, std::span<const std::byte> a, std::span<const std::byte> b) const {
    auto& counters = session_->counters();
    if (error != 0) counters.errors_sent.fetch_add(1, std::memory_order_relaxed);
    sent_ = send_reply(sink_, unique_, error, a, b);
    // ENOENT: the request was interrupted and the kernel no longer waits for
    // it. ENODEV: the connection is gone. Neither is the server's fault.
    if (sent_ == -ENOENT || sent_ == -ENODEV) counters.replies_refused.fetch_add(1, std::memory_order_relaxed);
    else if (sent_ < 0) log::error("reply to request {:#x} was refused: {}", unique_, std::strerror(-sent_));
    if (log::enabled(log::level::debug))
      log::debug("<- unique={:#x} error={} len={}", unique_, error, a.size() + b.size());
    if (counted_ && received_ns_ != 0)
      session_->stats().replied(opcode_, error, sizeof(proto::out_header) + a.size() + b.size(),
                                request_stats::now_ns() - received_ns_);
    session_->interrupts().finished(unique_);
    if (counted_) counters.in_flight.fetch_sub(1, std::memory_order_relaxed);
  }
  // What the kernel said to the reply: 0, or -errno (-ENOENT: it no longer
  // waited for it, so whatever the reply handed over was not taken).
  int sent() const noexcept { return sent_; }
  std::uint64_t unique() const noexcept { return unique_; }

 private:
  reply_sink sink_;
  std::uint64_t unique_;
  session* session_;
  std::uint64_t received_ns_;
  std::uint32_t opcode_;
  bool counted_;
  mutable int sent_ = 0;
};

// ---- the common reply shapes ----
inline void send_value(const responder& s, const entry& e) { s.send(0, bytes_of(encode_entry(e))); }
inline void send_value(const responder& s, const attr& a) { s.send(0, bytes_of(encode_attr_out(a))); }
inline void send_value(const responder& s, const opened& o) { s.send(0, bytes_of(encode_open(o))); }
inline void send_value(const responder& s, const created& c) {
  auto e = encode_entry(c.entry);
  auto o = encode_open(c.file);
  s.send(0, bytes_of(e), bytes_of(o));
}
inline void send_value(const responder& s, const fs_stats& st) {
  proto::statfs_out out{};
  out.st = encode_statfs(st);
  s.send(0, bytes_of(out));
}
inline void send_value(const responder& s, const extended_attr& x) { s.send(0, bytes_of(encode_statx_out(x))); }

}  // namespace fusexx::detail
