#pragma once
// FUSE over io_uring: one queue per possible CPU, each a ring owned by one
// long-lived thread pinned to that CPU. The kernel hands a request to the
// queue of the CPU the application runs on, in one of the queue's registered
// entries (a 288-byte header area and a payload buffer). The thread runs the
// handler, writes the reply into the same entry and commits it with
// COMMIT_AND_FETCH, which also fetches the entry's next request. Every CQE —
// a request, or an operation a handler awaits — resumes what waits for it.
//
// Lifecycle (kernel-facts Q4):
//  - before the INIT reply: the threads create their rings (a failure here
//    withdraws FUSE_OVER_IO_URING from the reply — once granted, the kernel
//    holds every request until every queue has registered);
//  - after the INIT reply: each thread registers its entries, retrying on
//    EAGAIN (the mount may not have finished processing INIT yet);
//  - at unmount every entry completes with ENOTCONN and the threads end;
//    stop() ends them earlier through an eventfd.
// INIT, FORGET, INTERRUPT and notifications stay on /dev/fuse: the classic
// transport keeps one reader on it, which also catches the kernel's silent
// fallback when a REGISTER fails.
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <string>
#include <thread>
#include <vector>

#include "../buffer.hpp"
#include "../dispatch.hpp"
#include "../fd.hpp"
#include "../log.hpp"
#include "../proto/abi.hpp"
#include "ring.hpp"

namespace fusexx::transport {

struct uring_options {
  unsigned queue_depth = 8;  // registered entries per queue: requests one CPU can have in flight
};

// The number of CPUs the kernel counts as possible (it makes one queue each
// and expects queue ids 0..n-1).
inline unsigned possible_cpu_count() {
  std::ifstream in("/sys/devices/system/cpu/possible");
  std::string ranges;
  if (!(in >> ranges)) return std::max(1u, std::thread::hardware_concurrency());
  unsigned highest = 0;
  std::size_t pos = 0;
  while (pos < ranges.size()) {
    std::size_t end = ranges.find(',', pos);
    if (end == std::string::npos) end = ranges.size();
    std::string part = ranges.substr(pos, end - pos);
    std::size_t dash = part.find('-');
    highest = std::max(highest, static_cast<unsigned>(std::stoul(dash == std::string::npos ? part : part.substr(dash + 1))));
    pos = end + 1;
  }
  return highest + 1;
}

// Why FUSE over io_uring cannot be used here, or empty if nothing is known
// against it (the kernel still has to offer it in INIT).
inline std::string uring_unavailable_reason() {
  std::ifstream param("/sys/module/fuse/parameters/enable_uring");
  char value = 0;
  if (!(param >> value)) return "this kernel has no FUSE-over-io_uring (no enable_uring parameter)";
  if (value != 'Y' && value != 'y' && value != '1')
    return "FUSE-over-io_uring is switched off (/sys/module/fuse/parameters/enable_uring is N; as root: echo Y > it)";
  return {};
}

// liburing 2.3 has no helper for FUSE's URING_CMD SQEs (128 bytes): this is
// the one place that fills them.
inline void prep_fuse_cmd(io_uring_sqe* sqe, int fuse_fd, proto::uring_cmd cmd, std::uint16_t qid,
                          std::uint64_t commit_id, const iovec* iov) {
  std::memset(static_cast<void*>(sqe), 0, 128);  // get_sqe does not clear, and the cmd area is in the second half
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fuse_fd;
  sqe->cmd_op = static_cast<std::uint32_t>(cmd);
  if (iov) {
    sqe->addr = reinterpret_cast<std::uintptr_t>(iov);
    sqe->len = 2;
  }
  proto::uring_cmd_req req{};
  req.commit_id = commit_id;
  req.qid = qid;
  std::memcpy(sqe->cmd, &req, sizeof req);
}

template <filesystem Fs>
class uring_transport {
 public:
  uring_transport(detail::dispatcher<Fs>& d, int fuse_fd, uring_options options)
      : dispatcher_(d), fuse_fd_(fuse_fd), options_(options) {}
  uring_transport(const uring_transport&) = delete;
  uring_transport& operator=(const uring_transport&) = delete;
  ~uring_transport() { stop(); }

  // Creates one ring per possible CPU, each on its own thread. Returns an
  // empty string on success, or why it failed (then nothing is left running).
  std::string prepare(const connection& conn) {
    const unsigned n = possible_cpu_count();
    const std::size_t payload =
        std::max<std::size_t>({8192, conn.max_write, std::size_t{conn.max_pages()} * connection::page_size()});
    for (unsigned q = 0; q < n; ++q) queues_.push_back(std::make_unique<queue>(*this, q, payload));
    std::string failure;
    for (auto& q : queues_) {
      std::string why = q->wait_until_ready();
      if (!why.empty() && failure.empty()) failure = why;
    }
    if (!failure.empty()) stop();
    return failure;
  }

  // After the INIT reply: the queues register their entries.
  void go() {
    for (auto& q : queues_) q->go();
  }

  // Ends the queue threads. The queues (and their entries) stay until the
  // transport goes: a handler that finishes later still hands its reply to
  // its entry, which is then simply never committed.
  void stop() {
    for (auto& q : queues_) q->stop();
  }

  unsigned queue_count() const noexcept { return static_cast<unsigned>(queues_.size()); }

 private:
  struct queue;

  // One registered slot: where the kernel puts a request and we the reply.
  struct entry : completion {
    queue* owner = nullptr;
    std::unique_ptr<proto::uring_req_header> header = std::make_unique<proto::uring_req_header>();
    buffer payload;
    iovec iov[2]{};
    std::byte head[sizeof(proto::in_header) + proto::op_in_size]{};  // in_header + op_in, contiguous
    bool alive = false;       // registered (or waiting to be) and not ended by the kernel
    bool pause_first = false; // its REGISTER got EAGAIN: wait a moment before the next try
  };

  struct queue {
    uring_transport& transport;
    const std::uint16_t qid;
    std::vector<entry> entries;
    io_uring ring{};
    unique_fd wake{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
    completion wake_completion;
    std::uint64_t wake_value = 0;
    std::mutex mutex;
    std::condition_variable cv;
    std::string setup_error;
    bool setup_done = false;
    bool started = false;
    std::atomic<bool> stopping{false};
    std::vector<entry*> foreign_commits;  // replies finished on another thread (guarded by mutex)
    std::vector<entry*> to_register;      // entries whose REGISTER must be (re)submitted
    std::jthread thread;

    queue(uring_transport& t, unsigned q, std::size_t payload_size)
        : transport(t), qid(static_cast<std::uint16_t>(q)), entries(t.options_.queue_depth) {
      for (auto& e : entries) {
        e.owner = this;
        e.payload = buffer(payload_size);
        e.iov[0] = {e.header.get(), sizeof(proto::uring_req_header)};
        e.iov[1] = {e.payload.data(), e.payload.size()};
        e.on_complete = [](completion* c, int res) {
          auto* en = static_cast<entry*>(c);
          en->owner->on_entry(*en, res);
        };
      }
      wake_completion.on_complete = [](completion*, int) {};  // handled in the loop
      thread = std::jthread([this] { run(); });
    }
    ~queue() { stop(); }

    std::string wait_until_ready() {
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return setup_done; });
      return setup_error;
    }
    void go() {
      {
        std::lock_guard lock(mutex);
        started = true;
      }
      cv.notify_all();
      poke();
    }
    void stop() {
      if (stopping.exchange(true)) return;
      {
        std::lock_guard lock(mutex);
        started = true;  // a thread still waiting for go() must not wait forever
      }
      cv.notify_all();
      poke();
      if (thread.joinable()) thread.join();
    }
    void poke() {
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(wake.get(), &one, sizeof one);
    }

    void run() {
      cpu_set_t cpus;
      CPU_ZERO(&cpus);
      CPU_SET(qid, &cpus);
      // A CPU that is possible but offline cannot be pinned to; the queue
      // still works, it just is not local.
      pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);

      io_uring_params params{};
      params.flags = IORING_SETUP_SQE128;  // FUSE's URING_CMD needs the 80-byte command area
      const unsigned depth = std::max(8u, static_cast<unsigned>(entries.size()) * 2 + 16);
      int rc = io_uring_queue_init_params(depth, &ring, &params);
      {
        std::lock_guard lock(mutex);
        setup_done = true;
        if (rc < 0) setup_error = fmt::format("io_uring_queue_init: {}", std::strerror(-rc));
      }
      cv.notify_all();
      if (rc < 0) return;
      {
        std::unique_lock lock(mutex);
        cv.wait(lock, [&] { return started; });
      }
      if (!stopping.load()) serve();
      io_uring_queue_exit(&ring);
    }

    void arm_wake() {
      io_uring_sqe* sqe = next_sqe(&ring);
      io_uring_prep_read(sqe, wake.get(), &wake_value, sizeof wake_value, 0);
      io_uring_sqe_set_data(sqe, &wake_completion);
    }

    void serve() {
      current_ring() = &ring;
      arm_wake();
      for (auto& e : entries) {
        e.alive = true;
        to_register.push_back(&e);
      }
      unsigned alive = static_cast<unsigned>(entries.size());
      while (!stopping.load(std::memory_order_acquire)) {
        if (!to_register.empty()) register_pending();
        int rc = io_uring_submit_and_wait(&ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
          log::error("io_uring queue {}: submit failed: {}", qid, std::strerror(-rc));
          break;
        }
        reap();
        alive = 0;
        for (auto& e : entries) alive += e.alive ? 1 : 0;
        if (alive == 0) break;  // the connection is gone
      }
      // Replies handed over by handlers that finished elsewhere just before
      // the stop (e.g. woken by the filesystem's destroy()): commit them, or
      // the kernel keeps waiting for those requests.
      drain_foreign_commits();
      io_uring_submit(&ring);
      finish_awaited();
      current_ring() = nullptr;
    }

    // Runs what every completed CQE resumes.
    void reap() {
      io_uring_cqe* cqe;
      while (io_uring_peek_cqe(&ring, &cqe) == 0) {
        auto* c = static_cast<completion*>(io_uring_cqe_get_data(cqe));
        const int res = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        if (c == &wake_completion) {
          drain_foreign_commits();
          if (!stopping.load()) arm_wake();
        } else if (c) {
          c->on_complete(c, res);
        }
      }
    }

    // Handlers still awaiting an operation on this ring would be abandoned
    // with it: cancel everything and reap until each has resumed (seeing
    // ECANCELED) and finished. Bounded, in case the kernel holds one back.
    void finish_awaited() {
      if (awaited_operations() == 0) return;
      io_uring_sqe* sqe = next_sqe(&ring);
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
      io_uring_sqe_set_data(sqe, nullptr);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      while (awaited_operations() > 0 && std::chrono::steady_clock::now() < deadline) {
        __kernel_timespec wait{0, 50'000'000};
        io_uring_cqe* cqe = nullptr;
        io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &wait, nullptr);
        reap();
      }
      if (awaited_operations() > 0)
        log::warn("io_uring queue {}: {} awaited operation(s) did not finish", qid, awaited_operations());
    }

    // Queues a fuse command for `e` on this queue's ring, tagged with the entry.
    void queue_cmd(entry& e, proto::uring_cmd cmd, std::uint64_t commit_id) {
      io_uring_sqe* sqe = next_sqe(&ring);
      prep_fuse_cmd(sqe, transport.fuse_fd_, cmd, qid, commit_id, cmd == proto::uring_cmd::register_ ? e.iov : nullptr);
      io_uring_sqe_set_data(sqe, static_cast<completion*>(&e));
    }

    void register_pending() {
      // EAGAIN right after a synchronous INIT: the mounting task has not yet
      // processed INIT's reply. Give it a moment rather than spin.
      bool pause = false;
      for (entry* e : to_register) pause = pause || std::exchange(e->pause_first, false);
      if (pause) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      for (entry* e : to_register) queue_cmd(*e, proto::uring_cmd::register_, 0);
      to_register.clear();
    }

    void on_entry(entry& e, int res) {
      if (res == -EAGAIN) {
        transport.dispatcher_.session().counters().register_retries.fetch_add(1, std::memory_order_relaxed);
        e.pause_first = true;
        to_register.push_back(&e);
        return;
      }
      if (res < 0) {
        if (res != -ENOTCONN && res != -ENODEV && res != -ECANCELED)
          log::error("io_uring queue {}: entry failed: {}", qid, std::strerror(-res));
        e.alive = false;
        return;
      }
      if (!e.alive) return;
      handle_request(e);
    }

    void handle_request(entry& e) {
      auto& state = transport.dispatcher_.session();
      state.counters().via_ring.fetch_add(1, std::memory_order_relaxed);
      proto::in_header h;
      std::memcpy(&h, e.header->in_out, sizeof h);
      const std::size_t payload_size = e.header->ring_ent_in_out.payload_sz;
      // The kernel puts the first argument in op_in and the rest in the
      // payload; the header's len counts all of it.
      const std::size_t total = h.len;
      if (payload_size > e.payload.size() || total < sizeof h + payload_size ||
          total - sizeof h - payload_size > proto::op_in_size) {
        state.counters().malformed.fetch_add(1, std::memory_order_relaxed);
        log::error("io_uring queue {}: request {:#x} has inconsistent sizes", qid, h.unique);
        detail::send_reply(sink_for(e), h.unique, EIO);
        return;
      }
      const std::size_t arg0 = total - sizeof h - payload_size;
      std::memcpy(e.head, &h, sizeof h);
      std::memcpy(e.head + sizeof h, e.header->op_in, arg0);
      const std::size_t scratch_at = std::min(e.payload.size(), (payload_size + 63) & ~std::size_t{63});
      detail::incoming in{.bytes = std::span<const std::byte>(e.head, sizeof h + arg0),
                  .scratch = e.payload.span().subspan(scratch_at),
                  .owner = nullptr,  // the entry's buffers stay reserved until its commit
                  .sink = sink_for(e),
                  .payload = std::span<const std::byte>(e.payload.data(), payload_size)};
      // Requests that get no reply (NOTIFY_REPLY) still have to give their
      // entry back to the kernel.
      if (transport.dispatcher_.handle(in) == detail::disposition::no_reply) commit_empty(e, h.unique);
    }

    void commit_empty(entry& e, std::uint64_t unique) {
      proto::out_header out{};
      out.len = sizeof out;
      out.unique = unique;
      std::memcpy(e.header->in_out, &out, sizeof out);
      e.header->ring_ent_in_out.payload_sz = 0;
      commit(e);
    }

    detail::reply_sink sink_for(entry& e) { return detail::reply_sink{&e, &queue::write_reply}; }

    // The reply sink: the header goes to in_out, data to the payload buffer
    // (already there when the handler built it in place), then commit.
    static int write_reply(void* context, const iovec* iov, int count) {
      auto& e = *static_cast<entry*>(context);
      std::memcpy(e.header->in_out, iov[0].iov_base, std::min(iov[0].iov_len, sizeof e.header->in_out));
      std::size_t at = 0;
      for (int i = 1; i < count; ++i) {
        if (at + iov[i].iov_len > e.payload.size()) return -EINVAL;
        if (iov[i].iov_base != e.payload.data() + at) std::memmove(e.payload.data() + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
      }
      e.header->ring_ent_in_out.payload_sz = static_cast<std::uint32_t>(at);
      e.owner->commit(e);
      return 0;
    }

    // Queues COMMIT_AND_FETCH on this queue's ring — from the queue thread
    // itself, since the kernel does the copy in the submitter's context; a
    // handler that finished elsewhere hands its entry over.
    void commit(entry& e) {
      if (current_ring() == &ring) {
        queue_cmd(e, proto::uring_cmd::commit_and_fetch, e.header->ring_ent_in_out.commit_id);
        return;
      }
      {
        std::lock_guard lock(mutex);
        foreign_commits.push_back(&e);
      }
      poke();
    }

    void drain_foreign_commits() {
      std::vector<entry*> ready;
      {
        std::lock_guard lock(mutex);
        ready.swap(foreign_commits);
      }
      for (entry* e : ready) commit(*e);
    }
  };

  detail::dispatcher<Fs>& dispatcher_;
  int fuse_fd_;
  uring_options options_;
  std::vector<std::unique_ptr<queue>> queues_;
};

}  // namespace fusexx::transport
