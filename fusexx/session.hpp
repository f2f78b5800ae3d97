#pragma once
// A session: everything one FUSE connection is, owned by the server that
// serves it. The negotiated parameters, the INIT gate, the interrupts, the
// counters, the notifier, the backing-file registry, and the bookkeeping a
// successor needs to continue the connection: the nodes and open handles the
// kernel holds. The filesystem object holds none of this, so one filesystem
// can serve several mounts, and a connection can describe itself in one piece
// (describe()).
//
// Handlers reach their session through request::session() (or the shortcuts
// request::notify(), request::backing()); other code through
// server::session().
#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "backing.hpp"
#include "connection.hpp"
#include "detail/handle_table.hpp"
#include "detail/handler_scope.hpp"
#include "detail/init_gate.hpp"
#include "detail/node_table.hpp"
#include "detail/striped_count.hpp"
#include "interrupts.hpp"
#include "notify.hpp"
#include "proto/abi.hpp"
#include "stats.hpp"

namespace fusexx {

// Where a session is: waiting for INIT, serving, failed (INIT was refused or
// given up on), or ended (destroy() ran).
using session_phase = detail::init_gate::phase;

// What the session counts; readable from any thread (tests, benchmarks, -d).
// Every serving thread adds to these on each request: striped, not shared.
struct session_counters {
  detail::striped_count requests{};
  detail::striped_count errors_sent{};
  detail::striped_count malformed{};
  detail::striped_count interrupts{};
  detail::striped_count forgets{};
  detail::striped_count in_flight{};  // requests whose handler is still running
  detail::striped_count via_device{};  // requests read from /dev/fuse
  detail::striped_count via_ring{};    // requests that arrived through io_uring
  // io_uring REGISTERs the kernel answered EAGAIN (INIT not processed yet) and
  // that were submitted again.
  detail::striped_count register_retries{};
  // Replies the kernel refused because the request was gone (interrupted, or
  // the connection ended); a refused entry or open was given back to the
  // filesystem (forget, release).
  detail::striped_count replies_refused{};
};

// A connection as plain data: what the kernel negotiated and what it holds.
struct session_description {
  // ---- INIT, as the kernel accepted it ----
  std::uint32_t proto_major = 0, proto_minor = 0;
  std::uint64_t offered = 0;  // init_flag::* the kernel offered
  std::uint64_t granted = 0;  // init_flag::* (flags | flags2 << 32)
  std::uint32_t max_write = 0;
  std::uint32_t max_readahead = 0;
  std::uint32_t max_pages = 0;
  std::uint32_t time_gran = 0;
  std::uint32_t max_stack_depth = 0;
  std::uint16_t max_background = 0;
  std::uint16_t congestion_threshold = 0;
  std::uint16_t request_timeout = 0;
  bool over_io_uring = false;  // FUSE_OVER_IO_URING was granted
  // ---- what the kernel holds ----
  std::vector<node_record> nodes;      // node ids with their lookup counts
  std::vector<handle_record> handles;  // open files and directories
  std::vector<backing_id> backing_ids; // registered passthrough backing files
};

class session {
 public:
  session() : backing_(conn_) {}
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  connection& conn() noexcept { return conn_; }
  const connection& conn() const noexcept { return conn_; }
  session_counters& counters() noexcept { return counters_; }
  const session_counters& counters() const noexcept { return counters_; }
  // Per-opcode counts, errors, bytes and latencies (fusexx/stats.hpp).
  detail::request_stats& stats() noexcept { return stats_; }
  const detail::request_stats& stats() const noexcept { return stats_; }
  // Notifications to the kernel (fusexx/notify.hpp).
  notifier& notify() noexcept { return notifier_; }
  // Kernel passthrough's backing files (fusexx/backing.hpp).
  backing_files& backing() noexcept { return backing_; }
  const backing_files& backing() const noexcept { return backing_; }

  // Bookkeeping of what the kernel holds (kept by the dispatcher).
  detail::node_table& nodes() noexcept { return nodes_; }
  const detail::node_table& nodes() const noexcept { return nodes_; }
  detail::handle_table& handles() noexcept { return handles_; }
  const detail::handle_table& handles() const noexcept { return handles_; }
  interrupt_registry& interrupts() noexcept { return interrupts_; }
  const interrupt_registry& interrupts() const noexcept { return interrupts_; }
  detail::init_gate& init() noexcept { return gate_; }
  const detail::init_gate& init() const noexcept { return gate_; }
  // The coroutine handlers in flight (joined by park and stop).
  detail::handler_scope& scope() noexcept { return scope_; }
  const detail::handler_scope& scope() const noexcept { return scope_; }

  // ---- transport hooks around INIT (set before the mount) ----
  // Called with the negotiated outcome just before INIT is answered; returns
  // the capabilities to grant in the end. The io_uring transport sets up its
  // rings here and withdraws FUSE_OVER_IO_URING if it cannot: once granted,
  // the kernel holds every request until all queues have registered.
  std::function<std::uint64_t(const connection&, std::uint64_t granted)> before_init_reply;
  // Called once INIT has been answered successfully, before serving begins.
  std::function<void(const connection&)> after_init_reply;

  // Continues a connection another process negotiated and served: takes
  // over its INIT outcome and its books, and serves from now on without
  // INIT (the kernel never sends it again).
  void restore(const session_description& d) {
    conn_.set_offer(d.proto_major, d.proto_minor, d.offered);
    conn_.max_write = d.max_write;
    conn_.max_readahead = d.max_readahead;
    conn_.time_gran = d.time_gran;
    conn_.max_stack_depth = d.max_stack_depth;
    conn_.max_background = d.max_background;
    conn_.congestion_threshold = d.congestion_threshold;
    conn_.request_timeout = d.request_timeout;
    conn_.set_outcome(d.granted, d.max_pages);
    for (const auto& n : d.nodes) nodes_.looked_up(n.node, n.generation, n.lookups);
    for (const auto& h : d.handles) handles_.opened(h.node, h.fh, h.directory, h.flags, h.opens);
    backing_.adopt(d.backing_ids);
    gate_.continue_serving();
  }

  session_description describe() const {
    session_description d;
    d.proto_major = conn_.proto_major();
    d.proto_minor = conn_.proto_minor();
    d.offered = conn_.offered();
    d.granted = conn_.granted();
    d.max_write = conn_.max_write;
    d.max_readahead = conn_.max_readahead;
    d.max_pages = conn_.max_pages();
    d.time_gran = conn_.time_gran;
    d.max_stack_depth = conn_.max_stack_depth;
    d.max_background = conn_.max_background;
    d.congestion_threshold = conn_.congestion_threshold;
    d.request_timeout = conn_.request_timeout;
    d.over_io_uring = conn_.has(proto::init_flag::over_io_uring);
    d.nodes = nodes_.snapshot();
    d.handles = handles_.snapshot();
    d.backing_ids = backing_.registered();
    return d;
  }

 private:
  connection conn_;
  session_counters counters_;
  detail::request_stats stats_;
  interrupt_registry interrupts_;
  notifier notifier_;
  backing_files backing_;
  detail::node_table nodes_;
  detail::handle_table handles_;
  detail::init_gate gate_;
  detail::handler_scope scope_;
};

}  // namespace fusexx
