#pragma once
// The io_uring plumbing shared by the FUSE-over-io_uring transport and the
// awaitables handlers use: what a completion resumes, and which ring belongs
// to the current thread.
#include <liburing.h>

#include <cstdint>

namespace fusexx::transport {

// Anything a CQE completes. Its address is the SQE's user_data; the queue
// thread calls `on_complete` with the CQE's result.
struct completion {
  void (*on_complete)(completion* self, int res) = nullptr;
};

// The ring of the io_uring queue thread running on this thread, or null on
// any other thread (classic workers, the application).
inline io_uring*& current_ring() {
  thread_local io_uring* ring = nullptr;
  return ring;
}

// Operations handlers are awaiting on this thread's ring. A queue thread
// cancels and reaps them before it ends, so every suspended handler resumes
// (with ECANCELED) and finishes instead of being abandoned.
inline std::size_t& awaited_operations() {
  thread_local std::size_t count = 0;
  return count;
}

// An SQE from `ring`, submitting what is queued when the SQ is full.
inline io_uring_sqe* next_sqe(io_uring* ring) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  while (sqe == nullptr) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  return sqe;
}

}  // namespace fusexx::transport
