#pragma once
// Notifications: messages a filesystem sends the kernel unasked, to drop or
// fill its caches when the data changed behind the kernel's back, to wake a
// poll(2), or to let it forget inodes. Every connection (session) has one
// notifier: `r.notify()` in a handler, `srv.session().notify()` elsewhere.
//
//   r.notify().inval_entry(parent, "name");         // a cached name is stale
//   r.notify().store(node, 0, bytes);               // put data in the page cache
//   auto got = co_await r.notify().retrieve(node, 0, 4096);   // read it back
//
// A notification is one write(2) of an out_header with unique 0 and the
// notify code in `error`, on any /dev/fuse fd of the connection (never over
// io_uring). The dispatcher attaches the notifier to the fd INIT arrived on;
// the server must detach() it before that fd closes. Safe from any thread,
// also while requests are in flight, with two limits the kernel sets:
//   * inval_inode/inval_entry/delete lock the inode or directory they name,
//     so sending them from a handler of a request on that same directory or
//     inode (LOOKUP, CREATE, ...) deadlocks; send them from elsewhere.
//   * ENOENT from inval_inode/store/retrieve/prune means the kernel has
//     nothing cached for that node: usually nothing to do.
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "codec.hpp"
#include "proto/abi.hpp"
#include "result.hpp"
#include "types.hpp"

namespace fusexx {

// What NOTIFY_RETRIEVE brought back: the kernel's cached bytes from `offset`
// on, as far as they are cached contiguously (possibly fewer than asked for,
// or none).
struct retrieved {
  off_t offset = 0;
  std::vector<std::byte> data;
};

class notifier {
  // One retrieve waiting for its NOTIFY_REPLY.
  struct pending {
    result<retrieved> value = error(EIO);
    std::coroutine_handle<> resume;  // a coroutine waiting, or null for retrieve_wait
    std::uint64_t unique = 0;
    bool done = false;
  };

 public:
  notifier() = default;
  notifier(const notifier&) = delete;
  notifier& operator=(const notifier&) = delete;
  ~notifier() { detach(); }

  // Where notifications go: a sink writing to one of the connection's
  // /dev/fuse fds. Replaces an earlier one.
  void attach(detail::reply_sink sink) {
    std::unique_lock lock(sink_mutex_);
    sink_ = sink;
  }
  // No more notifications (they fail with ENOTCONN); retrieves still waiting
  // end with ENOTCONN. Call before the fd closes. Waits for notifications
  // being written right now.
  void detach() {
    {
      std::unique_lock lock(sink_mutex_);
      sink_ = {};
    }
    fail_pending(ENOTCONN);
  }
  bool attached() const {
    std::shared_lock lock(sink_mutex_);
    return sink_.send != nullptr;
  }

  // Drops cached data of [offset, offset+length) (length <= 0: to the end)
  // and the cached attributes; offset < 0 drops only the attributes.
  result<void> inval_inode(ino node, off_t offset = 0, off_t length = 0) {
    proto::notify_inval_inode_out out{};
    out.ino = node;
    out.off = offset;
    out.len = length;
    return send(proto::notify_code::inval_inode, detail::bytes_of(out));
  }
  // Drops the cached name `name` in `parent` (and the parent's attributes).
  // expire_only (7.38) merely marks it stale, so it is checked on next use
  // instead of being dropped while in use.
  result<void> inval_entry(ino parent, std::string_view name, bool expire_only = false) {
    proto::notify_inval_entry_out out{};
    out.parent = parent;
    out.namelen = static_cast<std::uint32_t>(name.size());
    out.flags = expire_only ? proto::notify_inval_flag::expire_only : 0;
    return send_named(proto::notify_code::inval_entry, detail::bytes_of(out), name);
  }
  // Like inval_entry, and if the name still leads to `child`, the kernel
  // deletes it as an unlink would (inotify sees IN_DELETE).
  result<void> delete_entry(ino parent, ino child, std::string_view name) {
    proto::notify_delete_out out{};
    out.parent = parent;
    out.child = child;
    out.namelen = static_cast<std::uint32_t>(name.size());
    return send_named(proto::notify_code::delete_entry, detail::bytes_of(out), name);
  }
  // Puts `data` into the page cache at `offset` (a regular file the kernel
  // knows); the file grows if the data reaches past its end. A page that is
  // only partly covered is used only when the data runs to the file's end.
  result<void> store(ino node, off_t offset, std::span<const std::byte> data) {
    proto::notify_store_out out{};
    out.nodeid = node;
    out.offset = static_cast<std::uint64_t>(offset);
    out.size = static_cast<std::uint32_t>(data.size());
    return send(proto::notify_code::store, detail::bytes_of(out), data);
  }
  // Wakes poll(2)ers of the file whose POLL request carried `kh`.
  result<void> poll_wakeup(std::uint64_t kh) {
    proto::notify_poll_wakeup_out out{};
    out.kh = kh;
    return send(proto::notify_code::poll, detail::bytes_of(out));
  }
  // 7.45: asks the kernel to drop these inodes if nothing uses them (they
  // come back as FORGETs).
  result<void> prune(std::span<const ino> nodes) {
    proto::notify_prune_out out{};
    out.count = static_cast<std::uint32_t>(nodes.size());
    return send(proto::notify_code::prune, detail::bytes_of(out), std::as_bytes(nodes));
  }
  // 7.44: every cached name becomes stale at once (checked again on next use).
  result<void> inc_epoch() { return send(proto::notify_code::inc_epoch, {}); }
  // 7.40: the kernel sends again every request this connection read but has
  // not answered (after a server restart); they carry the resend bit.
  result<void> resend() { return send(proto::notify_code::resend, {}); }

  // Reads up to `size` cached bytes of a file back from the kernel. The
  // answer comes as a request (NOTIFY_REPLY), so this waits for a worker to
  // read it: from a coroutine handler, co_await it; elsewhere use
  // retrieve_wait. The node must be a regular file the kernel knows (else
  // ENOENT at once).
  class retrieve_awaiter {
   public:
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
      slot_.resume = h;
      // After a successful start the reply may resume us on another thread
      // at any moment: nothing here may touch the frame afterwards.
      return n_.start(slot_, out_);
    }
    result<retrieved> await_resume() { return std::move(slot_.value); }

   private:
    friend class notifier;
    retrieve_awaiter(notifier& n, proto::notify_retrieve_out out) : n_(n), out_(out) {}
    notifier& n_;
    proto::notify_retrieve_out out_;
    pending slot_;
  };
  retrieve_awaiter retrieve(ino node, off_t offset, std::size_t size) { return {*this, retrieve_request(node, offset, size)}; }

  // The blocking form, for threads that are not request handlers (with a
  // single worker thread, a handler blocking here would wait forever).
  result<retrieved> retrieve_wait(ino node, off_t offset, std::size_t size,
                                  std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    pending slot;
    if (!start(slot, retrieve_request(node, offset, size))) return std::move(slot.value);
    std::unique_lock lock(pending_mutex_);
    if (!done_.wait_for(lock, limit, [&] { return slot.done; })) {
      pending_.erase(slot.unique);
      return error(ETIMEDOUT);
    }
    return std::move(slot.value);
  }

  // The dispatcher hands over each NOTIFY_REPLY. Unknown ids (a retrieve
  // that timed out) are dropped.
  void deliver(std::uint64_t unique, off_t offset, std::span<const std::byte> data) {
    std::coroutine_handle<> resume;
    {
      std::lock_guard lock(pending_mutex_);
      auto it = pending_.find(unique);
      if (it == pending_.end()) return;
      pending& slot = *it->second;
      pending_.erase(it);
      slot.value = retrieved{offset, std::vector<std::byte>(data.begin(), data.end())};
      slot.done = true;
      resume = slot.resume;
    }
    done_.notify_all();
    if (resume) resume.resume();
  }

 private:
  proto::notify_retrieve_out retrieve_request(ino node, off_t offset, std::size_t size) {
    proto::notify_retrieve_out out{};
    out.nodeid = node;
    out.offset = static_cast<std::uint64_t>(offset);
    out.size = static_cast<std::uint32_t>(std::min<std::size_t>(size, UINT32_MAX));
    return out;
  }

  // Registers `slot` and sends the RETRIEVE. false: it failed, slot.value
  // holds why, and no reply will come.
  bool start(pending& slot, proto::notify_retrieve_out out) {
    {
      std::lock_guard lock(pending_mutex_);
      slot.unique = out.notify_unique = ++last_unique_;
      pending_.emplace(slot.unique, &slot);  // before the write: the reply may beat it
    }
    const std::uint64_t unique = slot.unique;
    if (auto r = send(proto::notify_code::retrieve, detail::bytes_of(out)); r) return true;
    else {
      std::lock_guard lock(pending_mutex_);
      pending_.erase(unique);
      slot.value = std::unexpected(r.error());
      return false;
    }
  }

  void fail_pending(int errnum) {
    std::vector<std::coroutine_handle<>> resume;
    {
      std::lock_guard lock(pending_mutex_);
      for (auto& [unique, slot] : pending_) {
        slot->value = error(errnum);
        slot->done = true;
        if (slot->resume) resume.push_back(slot->resume);
      }
      pending_.clear();
    }
    done_.notify_all();
    for (auto h : resume) h.resume();
  }

  result<void> send(proto::notify_code code, std::span<const std::byte> first, std::span<const std::byte> second = {}) {
    std::shared_lock lock(sink_mutex_);
    if (!sink_.send) return error(ENOTCONN);
    const int rc = detail::send_message(sink_, 0, static_cast<std::int32_t>(code), first, second);
    if (rc < 0) return error(-rc);
    return {};
  }
  // A name goes with its terminating NUL (not counted in namelen).
  result<void> send_named(proto::notify_code code, std::span<const std::byte> head, std::string_view name) {
    std::vector<std::byte> tail(name.size() + 1);
    std::memcpy(tail.data(), name.data(), name.size());
    return send(code, head, tail);
  }

  mutable std::shared_mutex sink_mutex_;
  detail::reply_sink sink_;
  std::mutex pending_mutex_;
  std::condition_variable done_;
  std::map<std::uint64_t, pending*> pending_;
  std::uint64_t last_unique_ = 0;
};

}  // namespace fusexx
