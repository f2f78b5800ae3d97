#pragma once
// The handover protocol, over a mount's control socket (control_socket.hpp).
// A successor (S) takes a live connection over from the running server (P):
//
//   S → P   hello   {protocol version, S's pid, filesystem type}
//   P → S   refuse  {reason}                      (not restartable, wrong type, busy)
//   P → S   offer   {count} + fds [device, snapshot, control listener(, io_uring entries)]
//                    P is parked: it takes no request and has none in flight.
//   P → S   fds     {} + up to 64 fds, until `count` have come: the open
//                    files the snapshot refers to by index (snapshot.hpp)
//   S → P   ack     {}  S restored the snapshot and serves: P leaves, without
//                       unmounting, and exits
//   P → S   entry   {queue, index}  (io_uring, after the ack) one of P's ring
//                       entries holds a request: S answers it, and owns the
//                       entry from then on; P leaves once all are handed over
//   S → P   refuse  {reason}                      (S could not restore): P resumes
//
// Every wait is bounded; a peer that goes away (EOF), says something else,
// or is late counts as a refusal, and P resumes serving. Either way nothing
// is lost: until the ack only P serves, after it only S.
#include <poll.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "../failure.hpp"
#include "../fd.hpp"
#include "../fd_passing.hpp"
#include "control_socket.hpp"
#include "snapshot.hpp"

namespace fusexx::handover {

// 2: the offer says how many fds follow it beside the snapshot.
inline constexpr std::uint32_t protocol_version = 2;
inline constexpr std::size_t max_message = 4096;
// How a server whose connection is not (or no longer) the one asked for
// begins its refusal: the successor then tries the next candidate socket.
inline constexpr std::string_view not_this_connection = "not this connection:";

enum class kind : std::uint32_t {
  hello = 0x4f4c4548,
  offer = 0x5246464f,
  ack = 0x4b4341,
  refuse = 0x55464552,
  entry = 0x52544e45,  // P → S after the ack, io_uring: {queue, index} holds a request; S answers it from now on
  fds = 0x53444650,    // P → S after the offer: fds beside the snapshot, in index order
  // Not a handover: a tool asks the server for its state (fusexx/control.hpp).
  query = 0x59525551,   // tool → server: text = "status" | "stats", version = control protocol
  answer = 0x57534e41,  // server → tool: text = the answer, JSON
  // Not a handover either: a supervised server and its keeper (restart/keeper.hpp).
  serving = 0x56524553,     // server → keeper: it serves (+ the connection's fd, from the first server)
  checkpoint = 0x504b4843,  // server → keeper: count = generation, + the sealed snapshot; answered by ack
};

struct message {
  kind what{};
  std::uint32_t version = protocol_version;
  std::uint32_t pid = 0;
  std::string text{};  // hello: the filesystem type; refuse: the reason
  std::uint32_t queue = 0, index = 0;  // entry: which io_uring entry
  std::uint32_t connection = 0;        // hello: the FUSE connection number the successor means
  std::uint32_t count = 0;             // offer: how many fds follow beside the snapshot
  std::vector<unique_fd> fds{};
};

inline result<void> send(int sock, const message& m, std::span<const int> fds = {}) {
  snapshot_writer w;
  w.u32(static_cast<std::uint32_t>(m.what));
  w.u32(m.version);
  w.u32(m.pid);
  w.str(m.text);
  w.u32(m.queue);
  w.u32(m.index);
  w.u32(m.connection);
  w.u32(m.count);
  auto sealed = w.seal_to_bytes();
  return send_with_fds(sock, sealed, fds);
}

// The next message, or the reason there is none: EIO when the peer went
// away, ETIMEDOUT at the deadline, EBADMSG for anything malformed.
inline result<message> receive(int sock, std::chrono::steady_clock::time_point deadline,
                               std::size_t max_bytes = max_message) {
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return error(ETIMEDOUT);
    pollfd p{sock, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return last_error();
    if (n > 0) break;
  }
  auto raw = receive_with_fds(sock, max_bytes);
  if (!raw) return error(raw.error());
  auto r = snapshot_reader::from_bytes(std::move(raw->data));
  if (!r) return error(EBADMSG);
  message m;
  std::uint32_t what = 0;
  if (!r->u32(what) || !r->u32(m.version) || !r->u32(m.pid) || !r->str(m.text) || !r->u32(m.queue) || !r->u32(m.index) ||
      !r->u32(m.connection) || (r->left() > 0 && !r->u32(m.count)))  // protocol 1 had no count: its hello is
    return error(EBADMSG);                                          // read, and refused for its version
  m.what = static_cast<kind>(what);
  m.fds = std::move(raw->fds);
  return m;
}

// What the running server hands its successor (after hello, before ack):
// the connection, its snapshot, and the socket to answer on.
struct offer {
  unique_fd sock;         // to the predecessor: ack or refuse goes here
  std::uint32_t pid = 0;  // the predecessor's
  unique_fd device;       // the /dev/fuse connection
  unique_fd snapshot;     // a sealed memfd (snapshot.hpp)
  unique_fd listener;     // the control socket, which stays with the connection
  unique_fd entries;      // io_uring: the memfd of P's ring entries (transport/entry_region.hpp)
  std::vector<unique_fd> snapshot_fds;  // the open files the snapshot refers to, in index order
};

// The fds beside a snapshot, after the offer, in messages of up to
// max_fds_per_message. A sender that is not root may have only as many fds
// in flight on unix sockets as its RLIMIT_NOFILE (the kernel answers
// ETOOMANYREFS beyond): it waits for the successor to take some.
inline result<void> send_snapshot_fds(int sock, std::span<const int> fds,
                                      std::chrono::steady_clock::time_point deadline) {
  while (!fds.empty()) {
    const auto batch = fds.first(std::min(fds.size(), max_fds_per_message));
    auto sent = send(sock, {.what = kind::fds}, batch);
    if (!sent && (sent.error().value() == ETOOMANYREFS || sent.error().value() == EAGAIN) &&
        std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    if (!sent) return sent;
    fds = fds.subspan(batch.size());
  }
  return {};
}

// The successor's side up to the offer: asks the server of the mount at
// `mountpoint` to hand its connection over to this process, which serves
// `type`. The predecessor is parked once this returns an offer; answer with
// ack (serving) or refuse (it resumes) — or let the socket close (the same
// as refuse).
inline outcome<offer> ask(const std::string& mountpoint, std::string_view type,
                          std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  auto connection = fuse_connection_of(mountpoint);
  if (!connection) return std::unexpected(connection.error());
  // The usual name first; a fallback name where a process whose connection
  // of this number has ended still holds it (it then says so: next one).
  outcome<offer> last = fail(ENOENT, "no control socket for the mount at {}", mountpoint);
  for (const std::string& name : control_socket_candidates(*connection)) {
    auto sock = connect_control_socket(name, mountpoint);
    if (!sock) {
      if (name == control_socket_name(*connection)) last = std::unexpected(sock.error());
      continue;
    }
    if (!send(sock->get(), {.what = kind::hello, .pid = static_cast<std::uint32_t>(::getpid()),
                            .text = std::string(type), .connection = *connection}))
      return fail(EIO, "the server of {} went away", mountpoint);
    auto answer = receive(sock->get(), std::chrono::steady_clock::now() + limit);
    if (!answer) {  // a process of another fusexx version may hold the name: try the next one
      last = fail(answer.error().value(), "the server of {} did not hand over: {}", mountpoint, answer.error().message());
      continue;
    }
    if (answer->what == kind::refuse && answer->text.starts_with(not_this_connection)) {
      last = fail(ESRCH, "the server at @{} no longer serves {}", name, mountpoint);
      continue;
    }
    if (answer->what == kind::refuse)
      return fail(EBUSY, "the server of {} refused to hand over: {}", mountpoint, answer->text);
    if (answer->what != kind::offer || answer->fds.size() < 3 || answer->fds.size() > 4)
      return fail(EPROTO, "the server of {} answered with no offer", mountpoint);
    offer o{.sock = std::move(*sock), .pid = answer->pid, .device = std::move(answer->fds[0]),
            .snapshot = std::move(answer->fds[1]), .listener = std::move(answer->fds[2]),
            .entries = answer->fds.size() > 3 ? std::move(answer->fds[3]) : unique_fd(), .snapshot_fds = {}};
    // The open files beside the snapshot. Going wrong here, this process
    // refuses (or just goes: the predecessor counts that as a refusal).
    o.snapshot_fds.reserve(answer->count);
    while (o.snapshot_fds.size() < answer->count) {
      auto more = receive(o.sock.get(), std::chrono::steady_clock::now() + limit);
      if (!more || more->what != kind::fds || more->fds.empty() ||
          more->fds.size() > answer->count - o.snapshot_fds.size()) {
        const std::string why = more && more->what == kind::fds ? "more fds than announced"
                                : more ? "a message that is not the snapshot's fds"
                                       : more.error().message();
        (void)send(o.sock.get(), {.what = kind::refuse, .text = "the snapshot's fds did not all come: " + why});
        // EMSGSIZE: the kernel could not install them all here (RLIMIT_NOFILE).
        const bool no_room = !more && more.error().value() == EMSGSIZE;
        return fail(more ? EPROTO : more.error().value(), "{} of the {} open files beside the snapshot of {} came ({}){}",
                    o.snapshot_fds.size(), answer->count, mountpoint, why,
                    no_room ? "; this process may hold no more fds: raise its RLIMIT_NOFILE" : "");
      }
      for (auto& f : more->fds) o.snapshot_fds.push_back(std::move(f));
    }
    return o;
  }
  return last;
}

}  // namespace fusexx::handover
