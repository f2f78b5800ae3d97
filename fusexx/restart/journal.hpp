#pragma once
// The crash journal: what a supervised server did since its last checkpoint,
// in memory that outlives it (docs/restart.md, "Crash recovery").
//
// A memfd that the keeper (restart/keeper.hpp) creates and holds, mapped
// shared by each server it starts. One header, then records appended one
// after another, each one request that changed state — its bytes as the
// kernel sent them, the time it was applied at, and (for requests that must
// not be applied twice) the reply that answered it:
//
//   offset 0    header (64 bytes): magic "fusexxJL", version, capacity,
//               generation (the checkpoint the records follow), used, overflowed
//   offset 64   record, record, ...   each 8-byte aligned:
//               u32 state (committed once whole), u32 size, u64 unique,
//               i64 sec, u32 nsec, i32 sent (what the kernel said to the reply),
//               u32 request length, u32 reply length (0: not kept),
//               u32 note length, u32 flags, then the request's bytes, the
//               reply's (out_header and payload) and the note's. Flags:
//               1 = carried, a request recorded again after a checkpoint
//               because it was still waiting for its reply then; 2 = ended,
//               the reply a successor's replay of a waiting request got when
//               it ended that replay (journaling.hpp).
//               A record without a request is the outcome of one recorded
//               earlier: its reply, and the filesystem's note of what it
//               changed (a handler that had suspended; or, for a filesystem
//               recovered by redo, every request: journaling.hpp).
//
// Appends are made by one writer at a time (the journaling handler's lock),
// so only the last record can be incomplete: a crash half-way through one
// leaves it uncommitted, and a reader stops there. A successor reads the
// records in order, replays them on the checkpoint, and continues appending
// after the last whole one (recover()).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <span>

#include "../failure.hpp"
#include "../fd.hpp"

namespace fusexx {

class journal {
 public:
  static constexpr std::uint64_t default_capacity = std::uint64_t{16} << 30;  // sparse: pages as written
  static constexpr std::uint32_t committed_mark = 0x4d4d4f43;                // "COMM"
  static constexpr std::uint32_t format_version = 2;

  struct header {
    char magic[8];
    std::uint32_t version;
    std::uint32_t header_size;
    std::uint64_t capacity;                // bytes of records the memfd holds
    std::atomic<std::uint64_t> generation; // the checkpoint the records follow
    std::atomic<std::uint64_t> used;       // bytes of records appended (the last may be incomplete)
    std::atomic<std::uint32_t> overflowed; // a record did not fit: the journal no longer tells the whole story
    std::atomic<std::uint32_t> answered;   // servers that answered a request (the keeper's sign of progress)
    std::uint32_t reserved[4];
  };
  static_assert(sizeof(header) == 64);

  struct record_head {
    std::atomic<std::uint32_t> state;  // committed_mark once the whole record is written
    std::uint32_t size;                // of the whole record, 8-aligned
    std::uint64_t unique;
    std::int64_t sec;
    std::uint32_t nsec;
    std::int32_t sent;                 // 0, or -errno the kernel answered the reply with
    std::uint32_t request_len;
    std::uint32_t reply_len;           // out_header + payload; 0 when the reply is not kept
    std::uint32_t note_len;            // the filesystem's note (journaling.hpp: journal_note)
    std::uint32_t flags;               // record_flag
  };
  static_assert(sizeof(record_head) == 48);
  // A record's flags.
  enum record_flag : std::uint32_t {
    carried = 1,  // a copy of a request recorded before the checkpoint this journal follows
    ended = 2,    // a reply the kernel never saw: a successor ended its replay of a request still waiting
  };

  // One record as read back.
  struct record {
    std::uint64_t unique;
    timespec time;
    std::int32_t sent;
    std::span<const std::byte> request;
    std::span<const std::byte> reply;  // empty when not kept
    std::span<const std::byte> note;   // empty when none
    std::uint32_t flags = 0;
  };

  journal() = default;
  journal(journal&& o) noexcept { *this = std::move(o); }
  journal& operator=(journal&& o) noexcept {
    if (this != &o) {
      unmap();
      fd_ = std::move(o.fd_);
      base_ = std::exchange(o.base_, nullptr);
      size_ = std::exchange(o.size_, 0);
      populated_ = std::exchange(o.populated_, 0);
    }
    return *this;
  }
  journal(const journal&) = delete;
  ~journal() { unmap(); }

  // A new, empty journal memfd of `capacity` bytes of records (the keeper
  // makes it once, before the first server starts).
  static outcome<unique_fd> create(std::uint64_t capacity = default_capacity) {
    unique_fd fd(::memfd_create("fusexx-journal", MFD_CLOEXEC));
    if (!fd) return fail(errno, "memfd_create (crash journal): {}", std::strerror(errno));
    if (::ftruncate(fd.get(), static_cast<off_t>(sizeof(header) + capacity)) != 0)
      return fail(errno, "sizing the crash journal to {} bytes: {}", capacity, std::strerror(errno));
    header h{};
    std::memcpy(h.magic, "fusexxJL", 8);
    h.version = format_version;
    h.header_size = sizeof(header);
    h.capacity = capacity;
    if (::pwrite(fd.get(), &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h))
      return fail(errno, "writing the crash journal's header: {}", std::strerror(errno));
    return fd;
  }

  // Maps a journal made by create() (dup'ing the fd: the caller keeps its own).
  static outcome<journal> map(int fd) {
    header h{};
    if (::pread(fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h) || std::memcmp(h.magic, "fusexxJL", 8) != 0 ||
        h.version != format_version || h.header_size != sizeof(header))
      return fail(EBADMSG, "the crash journal is not one (bad header)");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < sizeof(header) + h.capacity)
      return fail(EBADMSG, "the crash journal is shorter than its header says");
    journal j;
    j.fd_ = unique_fd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!j.fd_) return fail(errno, "dup (crash journal): {}", std::strerror(errno));
    j.size_ = sizeof(header) + h.capacity;
    void* p = ::mmap(nullptr, j.size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) return fail(errno, "mapping the crash journal: {}", std::strerror(errno));
    // A server's children (auto_unmount's watcher) must not keep it.
    (void)::madvise(p, j.size_, MADV_DONTFORK);
    j.base_ = static_cast<std::byte*>(p);
    return j;
  }

  explicit operator bool() const noexcept { return base_ != nullptr; }
  std::uint64_t generation() const noexcept { return head().generation.load(std::memory_order_acquire); }
  std::uint64_t used() const noexcept { return head().used.load(std::memory_order_acquire); }
  std::uint64_t capacity() const noexcept { return head().capacity; }
  bool overflowed() const noexcept { return head().overflowed.load(std::memory_order_acquire) != 0; }
  // A server answered its first request (once per server).
  void note_answered() noexcept { head().answered.fetch_add(1, std::memory_order_release); }
  // How many servers marked it (note_answered), read from the memfd
  // without mapping it (the keeper).
  static std::uint32_t answered_in(int fd) noexcept {
    std::uint32_t n = 0;
    return ::pread(fd, &n, sizeof n, offsetof(header, answered)) == sizeof n ? n : 0;
  }

  // Appends one record (the caller holds the writers' lock). Returns where
  // it is, for set_sent(); nullptr when it did not fit: the journal is then
  // marked overflowed, and a successor will refuse to recover from it.
  record_head* append(std::uint64_t unique, timespec t, std::span<const std::byte> request,
                      std::span<const std::byte> request_more, std::span<const iovec> reply,
                      std::span<const std::byte> note = {}, std::uint32_t flags = 0) {
    std::size_t reply_len = 0;
    for (const auto& v : reply) reply_len += v.iov_len;
    const std::size_t request_len = request.size() + request_more.size();
    const std::size_t size = (sizeof(record_head) + request_len + reply_len + note.size() + 7) & ~std::size_t{7};
    header& h = head();
    const std::uint64_t at = h.used.load(std::memory_order_relaxed);
    if (at + size > h.capacity || request_len > UINT32_MAX || reply_len > UINT32_MAX || note.size() > UINT32_MAX) {
      h.overflowed.store(1, std::memory_order_release);
      return nullptr;
    }
    populate_to(sizeof(header) + at + size);
    std::byte* p = records() + at;
    auto* r = new (p) record_head{};
    r->size = static_cast<std::uint32_t>(size);
    r->unique = unique;
    r->sec = t.tv_sec;
    r->nsec = static_cast<std::uint32_t>(t.tv_nsec);
    r->request_len = static_cast<std::uint32_t>(request_len);
    r->reply_len = static_cast<std::uint32_t>(reply_len);
    r->note_len = static_cast<std::uint32_t>(note.size());
    r->flags = flags;
    std::byte* q = p + sizeof(record_head);
    if (!request.empty()) std::memcpy(q, request.data(), request.size());
    q += request.size();
    if (!request_more.empty()) std::memcpy(q, request_more.data(), request_more.size());
    q += request_more.size();
    for (const auto& v : reply) {
      std::memcpy(q, v.iov_base, v.iov_len);
      q += v.iov_len;
    }
    if (!note.empty()) std::memcpy(q, note.data(), note.size());
    h.used.store(at + size, std::memory_order_release);
    r->state.store(committed_mark, std::memory_order_release);
    return r;
  }
  // What the kernel said to the reply, once it was sent.
  static void set_sent(record_head* r, int sent) noexcept {
    if (r) std::atomic_ref<std::int32_t>(r->sent).store(sent, std::memory_order_release);
  }

  // Calls f(record) for each whole record, in order. Returns the number of
  // bytes they take (where the next append belongs).
  template <class F>
  std::uint64_t for_each(F&& f) const {
    const header& h = head();
    const std::uint64_t used = std::min(h.used.load(std::memory_order_acquire), h.capacity);
    std::uint64_t at = 0;
    while (at + sizeof(record_head) <= used) {
      auto* r = reinterpret_cast<const record_head*>(records() + at);
      if (r->state.load(std::memory_order_acquire) != committed_mark) break;
      if (r->size < sizeof(record_head) || at + r->size > used ||
          sizeof(record_head) + std::uint64_t{r->request_len} + r->reply_len + r->note_len > r->size)
        break;  // not a record this code wrote: stop at the last sound one
      const std::byte* q = records() + at + sizeof(record_head);
      f(record{.unique = r->unique,
               .time = timespec{static_cast<time_t>(r->sec), static_cast<long>(r->nsec)},
               .sent = std::atomic_ref<const std::int32_t>(r->sent).load(std::memory_order_acquire),
               .request = {q, r->request_len},
               .reply = {q + r->request_len, r->reply_len},
               .note = {q + r->request_len + r->reply_len, r->note_len},
               .flags = r->flags});
      at += r->size;
    }
    return at;
  }

  // After a successor read the records: appends continue after the last
  // whole one (an incomplete one at the tail is dropped).
  void truncate(std::uint64_t used) noexcept { head().used.store(used, std::memory_order_release); }

  // A checkpoint of `generation` holds everything the records said: start
  // over empty. The old records' memory stays allocated, for the next
  // records to fill again: a page given back has to be faulted in and
  // zeroed when it is next written, which on this project's VM costs 2.7 ms
  // per MiB against 0.04 ms to overwrite one (a supervised memfs writing a
  // big file journaled at ~125 MB/s that way: docs/benchmarks.md).
  // give_back() returns it once the journal has gone quiet. (Stale bytes
  // past `used` are never read: a record's head is zeroed before `used`
  // covers it, and readers stop at `used`.)
  void reset(std::uint64_t generation) noexcept {
    header& h = head();
    h.used.store(0, std::memory_order_release);
    h.overflowed.store(0, std::memory_order_release);
    h.generation.store(generation, std::memory_order_release);
  }

  // Gives the memory past the records back, but for the first `keep` bytes
  // of records (which even a small workload soon fills again). Not while
  // another thread appends.
  void give_back(std::uint64_t keep) noexcept {
    const std::uint64_t from = page_up(sizeof(header) + std::max(used(), keep));
    if (from < size_)
      (void)::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(from),
                        static_cast<off_t>(size_ - from));
    populated_ = std::min(populated_, from);
  }

 private:
  static constexpr std::uint64_t page = 4096;
  // How far ahead of the records populate_to() allocates.
  static constexpr std::uint64_t populate_stretch = std::uint64_t{1} << 20;
  static std::uint64_t page_up(std::uint64_t n) noexcept { return (n + page - 1) & ~(page - 1); }

  // Allocates the pages up to `end` (and a stretch past it) in one madvise
  // before records are copied there: page by page, each would cost a fault
  // of its own (1.4 against 2.7 ms per MiB on this project's VM). Where the
  // kernel lacks MADV_POPULATE_WRITE (before 5.14) the copies fault them in.
  void populate_to(std::uint64_t end) noexcept {
    if (end <= populated_) return;
    const std::uint64_t to = std::min<std::uint64_t>(size_, page_up(std::max(end, populated_ + populate_stretch)));
    (void)::madvise(base_ + populated_, to - populated_, MADV_POPULATE_WRITE);
    populated_ = to;
  }

  header& head() const noexcept { return *reinterpret_cast<header*>(base_); }
  std::byte* records() const noexcept { return base_ + sizeof(header); }
  void unmap() noexcept {
    if (base_) ::munmap(base_, size_);
    base_ = nullptr;
  }

  unique_fd fd_;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t populated_ = 0;  // bytes from the start known to be allocated and mapped here (page-aligned)
};

}  // namespace fusexx
