#pragma once
// memfs: drops the kernel's cached pages of a file on a thread of its own,
// for a handler that must not answer before they are gone (see
// memfs_fs::write). A handler cannot send the notification itself: it waits
// for the page locks of reads in flight (invalidate_inode_pages2_range),
// and those reads' READ requests may be queued behind the very handler — on
// the io_uring transport a queue has one thread. So the handler awaits
// invalidate(id) as a suspended coroutine, which frees its thread, and this
// thread sends the notification and then resumes the handler (whose reply
// then leaves from here, as any suspended handler's may).
#include <condition_variable>
#include <coroutine>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <fusexx/notify.hpp>
#include <fusexx/types.hpp>

namespace memfs {

class invalidator {
 public:
  // `work(notifier, id)` drops what the kernel caches of node `id`.
  using work_fn = std::function<void(fusexx::notifier&, fusexx::ino)>;
  explicit invalidator(work_fn work) : work_(std::move(work)) {}
  ~invalidator() { stop(); }
  invalidator(const invalidator&) = delete;
  invalidator& operator=(const invalidator&) = delete;

  struct awaiter {
    invalidator& self;
    fusexx::notifier& notify;
    fusexx::ino id;
    std::coroutine_handle<> handle{};
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
      handle = h;
      return self.enqueue(this);  // false (stopped): go on at once
    }
    void await_resume() const noexcept {}
  };
  // co_await invalidate(n, id): returns once the work for `id` is done,
  // through notifier `n` (or at once, without it, after stop()).
  awaiter invalidate(fusexx::notifier& n, fusexx::ino id) { return awaiter{*this, n, id}; }

  // No more work: waiting handlers resume without it, the one in progress is
  // finished (its handler resumed) before this returns. The work in progress
  // can only wait for reads the server answers, so this needs the server's
  // connection alive or ended, not stopped in between (memfs calls it from
  // destroy(), after the transport stopped and the connection was aborted).
  void stop() {
    std::vector<awaiter*> pending;
    {
      std::unique_lock l(mutex_);
      stopping_ = true;
      pending.assign(queue_.begin(), queue_.end());
      queue_.clear();
      cv_.notify_all();
      cv_.wait(l, [&] { return !busy_; });
    }
    for (awaiter* a : pending) a->handle.resume();
    if (thread_.joinable()) thread_.join();
  }

 private:
  bool enqueue(awaiter* a) {
    std::lock_guard l(mutex_);
    if (stopping_) return false;
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });  // on first use
    queue_.push_back(a);
    cv_.notify_one();
    return true;
  }

  void run() {
    std::unique_lock l(mutex_);
    for (;;) {
      cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping
      awaiter* a = queue_.front();
      queue_.pop_front();
      busy_ = true;
      l.unlock();
      work_(a->notify, a->id);
      a->handle.resume();
      l.lock();
      busy_ = false;
      cv_.notify_all();
    }
  }

  work_fn work_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<awaiter*> queue_;
  bool stopping_ = false;
  bool busy_ = false;
  std::thread thread_;
};

}  // namespace memfs
