#pragma once
// FUSE over io_uring, the data plane: one queue per possible CPU, each a ring
// owned by one long-lived thread pinned to that CPU. The kernel hands a
// request to the queue of the CPU the application runs on, in one of the
// queue's registered entries (a 288-byte header area and a payload buffer).
//
// Each entry is served by a loop that awaits its next request:
//
//   co_await e.command(REGISTER)       (retried while the kernel says EAGAIN)
//   while the entry holds a request:
//     handle it (the reply lands in the same entry and is committed with
//     COMMIT_AND_FETCH, which also fetches the entry's next request)
//     co_await e.next()
//
// so the queue thread does nothing but submit, wait, and resume what each
// completion belongs to: an entry's loop, or a handler awaiting I/O on the ring
// (fusexx/async_io.hpp).
//
// Lifecycle (kernel-facts Q4):
//  - before the INIT reply: the threads create their rings (a failure here
//    withdraws FUSE_OVER_IO_URING from the reply — once granted, the kernel
//    holds every request until every queue has registered);
//  - after the INIT reply: each entry registers, retrying on EAGAIN (the
//    mount may not have finished processing INIT yet);
//  - park: a request the kernel places in an entry is held, unhandled, until
//    resume (FUSE over io_uring has no commit without fetch: an entry whose
//    reply is committed takes the next request at once);
//  - stop: the queues drain: a request that still arrives is answered
//    ENOTCONN at once. Once the connection has ended the kernel completes
//    every entry (ENOTCONN) and the threads end. Where it cannot be ended
//    (files still open and no way to abort it), the threads keep draining on
//    their own until it does — an io_uring request nobody commits would hold
//    its application for ever, since the kernel resends none of them.
// INIT, FORGET, INTERRUPT and notifications stay on /dev/fuse: the control
// channel serves those, and catches the kernel's silent fallback to /dev/fuse
// when a REGISTER fails.
#include <fcntl.h>
#include <sys/mman.h>

#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <coroutine>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../async_io.hpp"
#include "../buffer.hpp"
#include "../detail/fire_and_forget.hpp"
#include "../detail/fork_guard.hpp"
#include "../detail/incoming.hpp"
#include "../detail/kernel_file.hpp"
#include "../fd.hpp"
#include "../log.hpp"
#include "../proto/abi.hpp"
#include "channel.hpp"
#include "entry_region.hpp"
#include "ring.hpp"
#include "uring_entry.hpp"

namespace fusexx::transport {

struct uring_options {
  unsigned queue_depth = 8;  // registered entries per queue: requests one CPU can have in flight
  // The entries' buffers in 2 MiB pages where this process may (entry_region.hpp):
  // for a filesystem whose payloads go to or come from a disk with O_DIRECT
  // (passthrough on a disk asks for it). Not by default: a huge page is
  // zeroed whole at first use, which the first requests after the mount
  // wait for (~4 ms a page on this project's VM, where the host faults in
  // each 4 KiB; 30 us for the two small pages a first request touches).
  bool huge_pages = false;
};

// The number of CPUs the kernel counts as possible (it makes one queue each
// and expects queue ids 0..n-1).
inline unsigned possible_cpu_count() {
  const auto text = detail::read_kernel_file("/sys/devices/system/cpu/possible");
  const std::string ranges = text ? text->substr(0, text->find_first_of(" \n")) : std::string();
  if (ranges.empty()) return std::max(1u, std::thread::hardware_concurrency());
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
  const auto param = detail::read_kernel_file("/sys/module/fuse/parameters/enable_uring");
  const char value = param && !param->empty() ? param->front() : 0;
  if (!param) return "this kernel has no FUSE-over-io_uring (no enable_uring parameter)";
  if (value != 'Y' && value != 'y' && value != '1')
    return "FUSE-over-io_uring is switched off (/sys/module/fuse/parameters/enable_uring is N; as root: echo Y > it)";
  return {};
}

// liburing 2.3 has no helper for FUSE's URING_CMD SQEs (128 bytes): this is
// the one place that fills them. The /dev/fuse fd is the ring's registered
// file 0, so the ring keeps its own reference and no fd number is needed.
inline void prep_fuse_cmd(io_uring_sqe* sqe, proto::uring_cmd cmd, std::uint16_t qid, std::uint64_t commit_id,
                          const iovec* iov) {
  std::memset(static_cast<void*>(sqe), 0, 128);  // get_sqe does not clear, and the cmd area is in the second half
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = 0;
  sqe->flags = IOSQE_FIXED_FILE;
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

class uring_plane final : public channel {
 public:
  // `adopted`: a predecessor's entries (restart): this plane registers none
  // of its own, and serves those the predecessor gives it (adopt()).
  uring_plane(detail::request_handler handler, session& s, int fuse_fd, uring_options options,
              std::shared_ptr<entry_region> adopted = nullptr)
      : handler_(handler), session_(s), fuse_fd_(fuse_fd), options_(options), hub_(std::make_shared<hub>()),
        region_(std::move(adopted)), adopting_(region_ != nullptr) {}
  uring_plane(const uring_plane&) = delete;
  uring_plane& operator=(const uring_plane&) = delete;
  ~uring_plane() override {
    stop(clock::now());  // drained and acknowledged; not waiting for the connection to end
    // Queues still draining (the connection lives on) own themselves.
    for (auto& q : queues_)
      if (q->thread.joinable()) q->thread.detach();
  }

  // Creates one ring per possible CPU, each on its own thread. Returns an
  // empty string on success, or why it failed (then nothing is left running).
  std::string prepare(const connection& conn) {
    const unsigned n = possible_cpu_count();
    if (adopting_) {
      if (region_->layout().queues != n)
        return fmt::format("the predecessor's io_uring entries are for {} queues, this machine has {} CPUs",
                           region_->layout().queues, n);
    } else {
      const std::size_t payload =
          std::max<std::size_t>({8192, conn.max_write, std::size_t{conn.max_pages()} * connection::page_size()});
      auto region = entry_region::create(n, options_.queue_depth, payload, options_.huge_pages);
      if (!region) return region.error().message;
      region_ = std::move(*region);
    }
    for (unsigned q = 0; q < n; ++q) {
      auto shared = std::make_shared<queue>(*this, q, hub_);
      shared->thread = std::thread([shared] { shared->run(); });  // the thread keeps its queue alive
      queues_.push_back(std::move(shared));
    }
    std::string failure;
    for (auto& q : queues_) {
      std::string why = q->wait_until_ready();
      if (!why.empty() && failure.empty()) failure = why;
    }
    if (!failure.empty()) stop(clock::now() + std::chrono::seconds(2));
    return failure;
  }

  // After the INIT reply: the entries register and serve.
  void start() override {
    for (auto& q : queues_) q->command(mode::serving);
  }

  // Every queue thread acknowledges the park between two completions, so no
  // handler runs on it then; requests arriving afterwards are held.
  bool park(clock::time_point deadline) override {
    for (auto& q : queues_) q->command(mode::parked);
    return all(deadline, [](const queue& q) { return q.acknowledged(mode::parked); });
  }
  void resume() override {
    for (auto& q : queues_) q->command(mode::serving);
  }
  // Drains: every queue stops handling requests (those that still come are
  // answered ENOTCONN). Returns once every queue has acknowledged that — from
  // then on no queue thread calls the dispatcher — and then, until
  // `deadline`, waits for the threads to end, which they do once the
  // connection has ended. Threads that outlive it drain on their own.
  void stop(clock::time_point deadline) override {
    for (auto& q : queues_) q->command(mode::draining);
    all(std::max(deadline, clock::now() + std::chrono::seconds(2)),
        [](const queue& q) { return q.acknowledged(mode::draining); });
    all(deadline, [](const queue& q) { return q.exited(); });
    for (auto& q : queues_)
      if (q->exited() && q->thread.joinable()) q->thread.join();
  }

  std::vector<request_in_flight> busy() const override {
    std::vector<request_in_flight> out;
    for (auto& q : queues_)
      if (auto u = q->current.load(std::memory_order_acquire); u != 0)
        out.push_back({u, q->current_opcode.load(std::memory_order_relaxed), q->current_node.load(std::memory_order_relaxed)});
    return out;
  }
  // Queues whose thread did not acknowledge the drain (a handler on it never
  // returned). A draining queue is not stuck: it ends with the connection.
  unsigned stuck() const override {
    return static_cast<unsigned>(std::ranges::count_if(queues_, [](const auto& q) {
      return q->wanted.load() == mode::draining && !q->acknowledged(mode::draining);
    }));
  }
  unsigned threads() const override { return static_cast<unsigned>(queues_.size()); }
  unsigned queue_count() const noexcept { return threads(); }
  // Requests the kernel placed in entries while parked, waiting for resume().
  std::size_t held() const {
    std::size_t n = 0;
    for (auto& q : queues_) n += q->held_count.load(std::memory_order_acquire);
    return n;
  }
  // ---- handing the connection over (docs/restart.md) ----

  // The entries' memory: what a successor maps (entry_region.hpp).
  const entry_region& region() const { return *region_; }

  // The predecessor's side, once the successor serves: from now on no
  // request is handled here; every entry that holds one (held while parked,
  // or a suspended handler's) or gets one is handed to `to` (queue, entry)
  // and never touched again. ended() becomes true once every entry has been
  // handed over and the rings are gone — without an entry left available,
  // so the kernel cannot place a request where nobody would answer it.
  void hand_over(std::function<void(unsigned, unsigned)> to) {
    auto shared = std::make_shared<std::function<void(unsigned, unsigned)>>(std::move(to));
    for (auto& q : queues_) {
      {
        std::lock_guard lock(q->mutex);
        q->hand_to = shared;
      }
      q->command(mode::forwarding);
    }
  }

  // The successor's side: queue q's entry i holds a request the predecessor
  // handed over; serve it, and the entry from now on. Any thread.
  void adopt(unsigned q, unsigned i) {
    if (q >= queues_.size() || i >= queues_[q]->entries.size()) return;
    {
      std::lock_guard lock(queues_[q]->mutex);
      queues_[q]->adoptions.push_back(i);
    }
    queues_[q]->poke();
  }

  // The successor's side: makes every entry the predecessor still has
  // available get a request, so that all are handed over and the predecessor
  // can leave without one the kernel could still fill. Threads pinned to
  // each CPU ask GETATTR of the root (statx with AT_STATX_FORCE_SYNC, so the
  // kernel asks every time); their requests are held unanswered — each
  // keeps an entry busy, so the next one reaches an entry still the
  // predecessor's — until every entry of that queue has been adopted, then
  // answered. Returns whether all were, by `deadline` (after it the plugs are
  // answered anyway).
  bool plug(const std::string& mountpoint, clock::time_point deadline) {
    std::vector<std::jthread> plugs;
    for (auto& qp : queues_) {
      queue* q = qp.get();
      if (q->complete.load()) continue;
      q->plugging.store(true, std::memory_order_release);
      for (std::size_t k = 0; k < q->entries.size(); ++k)
        plugs.emplace_back([q, &mountpoint, deadline] {
          cpu_set_t cpus;
          CPU_ZERO(&cpus);
          CPU_SET(q->qid, &cpus);
          if (pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus) != 0) return;  // an offline CPU
          {
            std::lock_guard lock(q->mutex);
            q->plug_tids.push_back(static_cast<std::uint32_t>(::gettid()));
          }
          while (!q->complete.load(std::memory_order_acquire) && clock::now() < deadline) {
            struct statx sx {};
            ::statx(AT_FDCWD, mountpoint.c_str(), AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &sx);
          }
        });
    }
    const bool all_adopted = all(deadline, [](const queue& q) { return q.complete.load() || q.exited(); });
    for (auto& q : queues_) {
      q->plugging.store(false, std::memory_order_release);
      q->poke();  // answers the plugs still held
    }
    plugs.clear();
    return all_adopted;
  }

  // Waits until every queue thread has ended (after hand_over(): every
  // entry handed over), or the deadline. Whether they did.
  bool wait_ended(clock::time_point deadline) {
    return all(deadline, [](const queue& q) { return q.exited(); });
  }
  // True once every queue thread has ended (the connection is over).
  bool ended() const {
    return std::ranges::all_of(queues_, [](const auto& q) { return q->exited(); });
  }

 private:
  enum class mode { preparing, serving, parked, forwarding, draining };
  struct queue;

  // Where queue threads tell the plane that something changed. Shared, so a
  // queue that drains on after the plane is gone still has it.
  struct hub {
    std::mutex mutex;
    std::condition_variable changed;
    void notify() {
      { std::lock_guard lock(mutex); }
      changed.notify_all();
    }
  };

  template <class Pred>
  bool all(clock::time_point deadline, Pred pred) {
    std::unique_lock lock(hub_->mutex);
    return hub_->changed.wait_until(lock, deadline, [&] {
      return std::ranges::all_of(queues_, [&](const auto& q) { return pred(*q); });
    });
  }

  // One registered slot: where the kernel puts a request and we the reply.
  struct entry : completion {
    queue* owner = nullptr;
    unsigned index = 0;                       // in its queue
    proto::uring_req_header* header = nullptr;  // in the entry region
    std::span<std::byte> payload;               // in the entry region
    iovec iov[2]{};
    bool busy = false;       // holds a request whose reply is not committed yet
    bool handed = false;     // given to a successor: never touched again
    bool unadopted = false;  // (successor) waiting for the predecessor to hand it over
    entry_head head{};  // in_header + op_in, contiguous (decode_entry)
    std::coroutine_handle<> waiting;  // the entry's loop, waiting for its next completion
    int result = 0;
    bool completed = false;

    // Suspends the entry's loop until the completion of the command it has
    // outstanding (REGISTER, or the COMMIT_AND_FETCH its reply submitted):
    // the next request in the entry (>= 0) or the entry's end (< 0).
    struct next_awaiter {
      entry& e;
      bool await_ready() const noexcept { return e.completed; }
      void await_suspend(std::coroutine_handle<> h) noexcept { e.waiting = h; }
      int await_resume() noexcept {
        e.completed = false;
        return e.result;
      }
    };
    next_awaiter next() noexcept { return {*this}; }
    next_awaiter command(proto::uring_cmd cmd, std::uint64_t commit_id) {
      owner->queue_cmd(*this, cmd, commit_id);
      return {*this};
    }
  };

  // What a queue keeps of the plane: copies and shared parts only, since a
  // draining queue outlives it. The dispatcher and the session are used only
  // before the drain is acknowledged; the server keeps both until then.
  struct queue {
    const detail::request_handler handler;
    session* const sess;
    const int fuse_fd;
    const std::shared_ptr<hub> plane;
    const std::uint16_t qid;
    std::vector<entry> entries;
    io_uring ring{};
    unique_fd wake{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
    completion wake_completion;
    std::uint64_t wake_value = 0;
    std::thread thread;

    std::mutex mutex;  // guards foreign_commits, setup_*
    std::condition_variable setup_cv;
    std::string setup_error;
    bool setup_done = false;
    std::vector<entry*> foreign_commits;  // replies finished on another thread
    std::shared_ptr<std::function<void(unsigned, unsigned)>> hand_to;  // forwarding: where entries go
    std::vector<unsigned> adoptions;       // entries the predecessor handed over, not yet taken up
    std::vector<std::uint32_t> plug_tids;  // the plug threads of plug()
    const std::shared_ptr<entry_region> region;
    const bool adopting;
    std::atomic<bool> complete{false};     // (successor) every entry adopted
    std::atomic<bool> plugging{false};     // plug() runs: hold its requests
    std::vector<entry*> plugs;             // plug requests held (queue thread only)
    unsigned adopted = 0;                  // (queue thread only)

    std::atomic<mode> wanted{mode::preparing};   // set by the plane
    std::atomic<mode> seen{mode::preparing};     // acknowledged by the queue thread
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> current{0};       // the request a handler runs for on this thread now
    std::atomic<proto::opcode> current_opcode{};
    std::atomic<ino> current_node{0};
    std::atomic<std::size_t> held_count{0};
    std::vector<std::coroutine_handle<>> held;   // entry loops holding a request while parked (queue thread only)
    unsigned live = 0;                           // entry loops still running (queue thread only)

    queue(uring_plane& p, unsigned q, std::shared_ptr<hub> h)
        : handler(p.handler_), sess(&p.session_), fuse_fd(p.fuse_fd_), plane(std::move(h)),
          qid(static_cast<std::uint16_t>(q)), entries(p.region_->layout().depth), region(p.region_),
          adopting(p.adopting_) {
      for (unsigned i = 0; i < entries.size(); ++i) {
        entry& e = entries[i];
        e.owner = this;
        e.index = i;
        e.header = region->header(q, i);
        e.payload = {region->payload(q, i), static_cast<std::size_t>(region->layout().payload)};
        e.iov[0] = {e.header, sizeof(proto::uring_req_header)};
        e.iov[1] = {e.payload.data(), e.payload.size()};
        e.on_complete = [](completion* c, int res) {
          auto* en = static_cast<entry*>(c);
          en->result = res;
          en->completed = true;
          if (en->waiting) std::exchange(en->waiting, {}).resume();
        };
      }
      wake_completion.on_complete = [](completion*, int) {};  // handled in reap()
    }

    bool acknowledged(mode m) const { return exited() || seen.load(std::memory_order_acquire) == m; }
    bool exited() const { return done.load(std::memory_order_acquire); }

    std::string wait_until_ready() {
      std::unique_lock lock(mutex);
      setup_cv.wait(lock, [&] { return setup_done; });
      return setup_error;
    }
    void command(mode m) {
      wanted.store(m, std::memory_order_release);
      {
        std::lock_guard lock(mutex);
        setup_cv.notify_all();  // a thread waiting to start
      }
      poke();
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
      sigset_t blocked = worker_signal_mask();
      pthread_sigmask(SIG_BLOCK, &blocked, nullptr);

      // SQE128: FUSE's URING_CMD needs the 80-byte command area.
      // SINGLE_ISSUER: only this thread submits to and enters this ring
      // (replies finished elsewhere are handed to it, commit()); DEFER_TASKRUN,
      // which needs it, makes the kernel's completion work — copying a FUSE
      // request into an entry — wait for this thread's next io_uring_enter()
      // instead of being task_work that interrupts it, and wakes the thread
      // only when that work is there. A 2-thread stat storm on passthrough
      // io_uring spent ~6 % less server CPU per stat (docs/benchmarks.md).
      // TASKRUN_FLAG: the kernel flags the ring when such work is waiting,
      // so reap()'s io_uring_peek_cqe() runs it (an enter that submits
      // nothing) and handles the requests that came in while a handler ran
      // before the replies queued meanwhile are submitted. Without it those
      // requests surface only in the next submit_and_wait(), which sends the
      // replies first: two writers on one CPU were then answered one at a
      // time, each woken onto the queue's CPU while the other CPU idled, and
      // stayed there (2-job 4 KiB O_DIRECT writes on a disk source: 0.84x
      // libfuse, whose plain rings run such work on any return to user space,
      // so its replies are batched the same way; docs/benchmarks.md).
      // Kernels before 6.1 refuse these flags; the ring is then made without.
      const unsigned depth = std::max(8u, static_cast<unsigned>(entries.size()) * 2 + 16);
      int rc;
      {
        std::shared_lock no_fork(detail::fork_guard());  // until the mappings are marked
        io_uring_params params{};
        params.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                       IORING_SETUP_TASKRUN_FLAG;
        rc = io_uring_queue_init_params(depth, &ring, &params);
        if (rc == -EINVAL) {
          params = {};
          params.flags = IORING_SETUP_SQE128;
          rc = io_uring_queue_init_params(depth, &ring, &params);
        }
        if (rc == 0) keep_from_children(ring);
      }
      if (rc == 0) {
        rc = io_uring_register_files(&ring, &fuse_fd, 1);
        if (rc < 0) io_uring_queue_exit(&ring);
      }
      // Entering the ring by its registered index spares each
      // io_uring_enter() the fget()/fput() of the ring's fd, which a
      // multi-threaded process pays (its fd table is shared). Only this
      // thread enters this ring (commits from elsewhere are handed to it),
      // and a registration holds for the registering thread alone, as it
      // must. Without it (an older kernel) the plain fd serves.
      if (rc == 0) (void)io_uring_register_ring_fd(&ring);
      {
        std::lock_guard lock(mutex);
        setup_done = true;
        if (rc < 0) setup_error = fmt::format("io_uring set-up: {}", std::strerror(-rc));
      }
      setup_cv.notify_all();
      if (rc == 0) {
        {
          std::unique_lock lock(mutex);
          setup_cv.wait(lock, [&] { return wanted.load() != mode::preparing; });
        }
        if (wanted.load() != mode::draining) serve();
        io_uring_queue_exit(&ring);
      }
      done.store(true, std::memory_order_release);
      plane->notify();
    }

    // A forked child (the auto_unmount watcher, a daemon's helper, a test's
    // child) must not inherit the ring's mappings: they hold the ring, whose
    // FUSE commands hold /dev/fuse, so a killed server's connection would
    // live as long as that child — and the watcher, which waits for it to
    // end, would wait for itself. Closing the ring's fd does not drop them.
    static void keep_from_children(io_uring& r) {
      ::madvise(r.sq.ring_ptr, r.sq.ring_sz, MADV_DONTFORK);
      if (r.cq.ring_ptr != r.sq.ring_ptr) ::madvise(r.cq.ring_ptr, r.cq.ring_sz, MADV_DONTFORK);
      ::madvise(r.sq.sqes, r.sq.ring_entries * sizeof(io_uring_sqe) * 2, MADV_DONTFORK);  // SQE128: two each
    }

    void arm_wake() {
      io_uring_sqe* sqe = next_sqe(&ring);
      io_uring_prep_read(sqe, wake.get(), &wake_value, sizeof wake_value, 0);
      io_uring_sqe_set_data(sqe, &wake_completion);
    }

    void serve() {
      current_ring() = &ring;
      detail::current_scope() = &sess->scope();  // a sleep's wake-up is held back while parked (async_io.hpp)
      arm_wake();
      for (auto& e : entries) serve_entry(e);
      while (live > 0) {
        int rc = io_uring_submit_and_wait(&ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
          log::error("io_uring queue {}: submit failed: {}", qid, std::strerror(-rc));
          break;
        }
        reap();
      }
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
          woken();
          arm_wake();
        } else if (c) {
          c->on_complete(c, res);
        }
      }
    }

    // The plane asked for something (a mode) or a handler elsewhere finished.
    // This runs between two completions: no handler runs on this thread now.
    void woken() {
      drain_foreign_commits();
      take_adoptions();
      const mode m = wanted.load(std::memory_order_acquire);
      if (m != mode::parked && !held.empty()) {
        auto waiting = std::exchange(held, {});
        for (auto h : waiting) h.resume();
      }
      if (m == mode::forwarding)  // suspended handlers' requests go too; their replies never will
        for (auto& e : entries)
          if (e.busy && !e.handed) {
            hand_over(e);
            finish_wait(e, -ECANCELED);
          }
      if (m == mode::draining)  // entries the predecessor never handed over are not ours
        for (auto& e : entries)
          if (e.unadopted) finish_wait(e, -ECANCELED);
      if (!plugging.load(std::memory_order_acquire) || complete.load()) release_plugs();
      seen.store(m, std::memory_order_release);
      plane->notify();
    }

    // Holds the entry's loop while parked.
    struct held_awaiter {
      queue& q;
      bool await_ready() const noexcept { return q.wanted.load(std::memory_order_acquire) != mode::parked; }
      void await_suspend(std::coroutine_handle<> h) {
        q.held.push_back(h);
        q.held_count.fetch_add(1, std::memory_order_release);
      }
      void await_resume() noexcept {}
    };

    detail::fire_and_forget serve_entry(entry& e) {
      ++live;
      int res = 0;
      if (adopting) {
        // A predecessor's entry: it comes with a request, when handed over.
        e.unadopted = true;
        res = co_await e.next();
        e.unadopted = false;
      } else {
        res = co_await e.command(proto::uring_cmd::register_, 0);
        while (res == -EAGAIN && wanted.load() != mode::draining) {
          // EAGAIN right after a synchronous INIT: the mounting task has not
          // yet processed INIT's reply. Give it a moment rather than spin.
          sess->counters().register_retries.fetch_add(1, std::memory_order_relaxed);
          co_await io::sleep_for(std::chrono::milliseconds(1));
          res = co_await e.command(proto::uring_cmd::register_, 0);
        }
      }
      while (res >= 0) {
        if (wanted.load(std::memory_order_acquire) == mode::parked) {
          held_awaiter hold{*this};
          if (!hold.await_ready()) {
            co_await hold;
            held_count.fetch_sub(1, std::memory_order_release);
          }
        }
        const mode m = wanted.load(std::memory_order_acquire);
        if (m == mode::forwarding) {
          hand_over(e);
          break;
        }
        if (m == mode::draining) refuse(e);
        else handle(e);
        res = co_await e.next();
      }
      if (res < 0 && res != -ENOTCONN && res != -ENODEV && res != -ECANCELED && res != -EAGAIN)
        log::error("io_uring queue {}: entry ended: {}", qid, std::strerror(-res));
      --live;
    }

    // Handlers still awaiting an operation on this ring would be abandoned
    // with it: cancel everything and reap until each has resumed (seeing
    // ECANCELED) and finished. Bounded, in case the kernel holds one back.
    void finish_awaited() {
      if (awaited_operations() == 0) return;
      io_uring_sqe* sqe = next_sqe(&ring);
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
      io_uring_sqe_set_data(sqe, nullptr);
      const auto deadline = clock::now() + std::chrono::seconds(2);
      while (awaited_operations() > 0) {
        const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - clock::now()).count();
        if (left <= 0) break;
        __kernel_timespec wait{left / 1'000'000'000, left % 1'000'000'000};
        io_uring_cqe* cqe = nullptr;
        io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &wait, nullptr);  // returns with the next completion
        reap();
      }
      if (awaited_operations() > 0)
        log::warn("io_uring queue {}: {} awaited operation(s) did not finish", qid, awaited_operations());
    }

    // Queues a fuse command for `e` on this queue's ring, tagged with the entry.
    void queue_cmd(entry& e, proto::uring_cmd cmd, std::uint64_t commit_id) {
      io_uring_sqe* sqe = next_sqe(&ring);
      prep_fuse_cmd(sqe, cmd, qid, commit_id, cmd == proto::uring_cmd::register_ ? e.iov : nullptr);
      io_uring_sqe_set_data(sqe, static_cast<completion*>(&e));
    }

    // A request in `e`: a plug of plug() is held while the queue still has
    // entries to adopt; anything else is handled.
    void handle(entry& e) {
      e.busy = true;
      if (plugging.load(std::memory_order_acquire) && !complete.load(std::memory_order_acquire)) {
        proto::in_header h;
        std::memcpy(&h, e.header->in_out, sizeof h);
        std::lock_guard lock(mutex);
        if (std::ranges::find(plug_tids, h.pid) != plug_tids.end()) {
          plugs.push_back(&e);
          return;
        }
      }
      dispatch(e);
    }
    void release_plugs() {
      for (entry* e : std::exchange(plugs, {})) dispatch(*e);
    }

    void dispatch(entry& e) {
      auto& counters = sess->counters();
      counters.via_ring.fetch_add(1, std::memory_order_relaxed);
      proto::in_header h;
      std::memcpy(&h, e.header->in_out, sizeof h);
      auto decoded = decode_entry(*e.header, e.payload, e.head, sink_for(e));
      if (!decoded) {
        counters.malformed.fetch_add(1, std::memory_order_relaxed);
        log::error("io_uring queue {}: request {:#x} has inconsistent sizes", qid, h.unique);
        detail::send_reply(sink_for(e), h.unique, EIO);
        return;
      }
      detail::incoming& in = *decoded;
      current_opcode.store(static_cast<proto::opcode>(h.opcode), std::memory_order_relaxed);
      current_node.store(h.nodeid, std::memory_order_relaxed);
      current.store(h.unique, std::memory_order_release);
      // Requests that get no reply (NOTIFY_REPLY) still have to give their
      // entry back to the kernel.
      if (handler(in) == detail::disposition::no_reply) commit_empty(e, h.unique, 0);
      current.store(0, std::memory_order_release);
    }

    // Draining: the server has stopped; the request is answered at once.
    void refuse(entry& e) {
      proto::in_header h;
      std::memcpy(&h, e.header->in_out, sizeof h);
      commit_empty(e, h.unique, -ENOTCONN);
    }

    void commit_empty(entry& e, std::uint64_t unique, std::int32_t error) {
      proto::out_header out{};
      out.len = sizeof out;
      out.error = error;
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
      // A handler that finishes after its entry went to a successor: the
      // entry's memory is the successor's now.
      if (e.handed) return 0;
      if (const int rc = encode_entry_reply(*e.header, e.payload, iov, count); rc < 0) {
        // More data than the entry's payload buffer holds — and the kernel
        // copies no more than that (ring->max_payload_sz) — e.g. a
        // getxattr value larger than the buffer sized from max_write. EIO in
        // its place, as the kernel answers a reply it cannot copy on
        // /dev/fuse: uncommitted, the entry would be lost and the
        // application would wait for ever. The caller logs `rc`.
        proto::in_header h;
        std::memcpy(&h, e.header->in_out, sizeof h);  // untouched: the encoder refused before writing
        e.owner->commit_empty(e, h.unique, -EIO);
        return rc;
      }
      e.owner->commit(e);
      return 0;
    }

    // Queues COMMIT_AND_FETCH on this queue's ring — from the queue thread
    // itself, since the kernel does the copy in the submitter's context; a
    // handler that finished elsewhere hands its entry over.
    void commit(entry& e) {
      if (e.handed) return;
      if (current_ring() == &ring) {
        e.busy = false;
        queue_cmd(e, proto::uring_cmd::commit_and_fetch, e.header->ring_ent_in_out.commit_id);
        return;
      }
      {
        std::lock_guard lock(mutex);
        foreign_commits.push_back(&e);
      }
      poke();
    }

    // Forwarding: `e` and its request go to the successor.
    void hand_over(entry& e) {
      e.handed = true;
      e.busy = false;
      std::shared_ptr<std::function<void(unsigned, unsigned)>> to;
      {
        std::lock_guard lock(mutex);
        to = hand_to;
      }
      if (to) (*to)(qid, e.index);
    }
    // Resumes an entry's loop waiting with no command outstanding.
    static void finish_wait(entry& e, int result) {
      e.result = result;
      e.completed = true;
      if (e.waiting) std::exchange(e.waiting, {}).resume();
    }
    // Successor: entries the predecessor handed over, each with a request.
    void take_adoptions() {
      std::vector<unsigned> taken;
      {
        std::lock_guard lock(mutex);
        taken.swap(adoptions);
      }
      for (unsigned i : taken) {
        entry& e = entries[i];
        if (!e.unadopted) continue;  // given twice, or the queue drains
        if (++adopted == entries.size()) complete.store(true, std::memory_order_release);
        finish_wait(e, 0);
      }
      if (complete.load()) plane->notify();
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

  detail::request_handler handler_;
  session& session_;
  int fuse_fd_;
  uring_options options_;
  std::shared_ptr<hub> hub_;
  std::shared_ptr<entry_region> region_;
  const bool adopting_;
  std::vector<std::shared_ptr<queue>> queues_;
};

}  // namespace fusexx::transport
