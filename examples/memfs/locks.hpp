#pragma once
// memfs: one inode's locks. Record locks belong to a lock owner and cover
// byte ranges: for POSIX locks (F_SETLK) the owner is the kernel's id for a
// process's file table, for open file description locks (F_OFD_SETLK) the
// id of the open file itself — the two kinds reach the filesystem alike, as
// SETLK with an owner. flock(2) locks belong to an open file (its handle)
// and cover the whole file. Each record lock also remembers the open file
// (handle) it was taken through, so that what is left at that file's
// RELEASE can go (see memfs_fs::release). Only the bookkeeping lives here;
// waiting for a lock is the filesystem's job.
#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include <fusexx/restart/snapshot.hpp>
#include <fusexx/types.hpp>

namespace memfs {

class lock_table {
 public:
  using posix_lock = fusexx::posix_lock;

  // The lock of another owner that stands in the way of `want`, if any
  // (what F_GETLK reports and what makes F_SETLK fail).
  std::optional<posix_lock> conflict(std::uint64_t owner, const posix_lock& want) const {
    for (const held& h : posix_)
      if (h.owner != owner && overlap(h.range, want) && (h.range.type == F_WRLCK || want.type == F_WRLCK))
        return h.range;
    return std::nullopt;
  }

  // The owner of such a lock (to follow who waits for whom).
  std::optional<std::uint64_t> conflicting_owner(std::uint64_t owner, const posix_lock& want) const {
    for (const held& h : posix_)
      if (h.owner != owner && overlap(h.range, want) && (h.range.type == F_WRLCK || want.type == F_WRLCK))
        return h.owner;
    return std::nullopt;
  }

  // Sets (or, with F_UNLCK, clears) `l` for `owner`, taken through open file
  // `fh`, replacing what the owner held in that range; adjacent ranges of one
  // type merge, as the kernel's own lock code does. Returns true if some
  // range was released or weakened.
  bool apply(std::uint64_t owner, const posix_lock& l, fusexx::fhandle fh = 0) {
    bool released = false;
    std::vector<held> kept;
    for (held& h : posix_) {
      if (h.owner != owner || !overlap(h.range, l)) {
        kept.push_back(h);
        continue;
      }
      released |= l.type == F_UNLCK || (h.range.type == F_WRLCK && l.type == F_RDLCK);
      if (h.range.start < l.start) kept.push_back({owner, cut(h.range, h.range.start, l.start - 1), h.fh});
      if (l.end < h.range.end) kept.push_back({owner, cut(h.range, l.end + 1, h.range.end), h.fh});
    }
    if (l.type != F_UNLCK) {
      posix_lock merged = l;
      std::erase_if(kept, [&](const held& h) {
        if (h.owner != owner || h.range.type != l.type || !touch(h.range, merged)) return false;
        merged.start = std::min(merged.start, h.range.start);
        merged.end = std::max(merged.end, h.range.end);
        return true;
      });
      kept.push_back({owner, merged, fh});
    }
    posix_ = std::move(kept);
    return released;
  }

  // Everything `owner` held goes (a process closed a file: FLUSH).
  bool release_owner(std::uint64_t owner) { return std::erase_if(posix_, [&](const held& h) { return h.owner == owner; }) > 0; }
  // The record locks taken through open file `fh` go (its last close).
  bool release_file(fusexx::fhandle fh) { return std::erase_if(posix_, [&](const held& h) { return h.fh == fh; }) > 0; }

  // flock(2): true when `fh` may take `how` (LOCK_SH or LOCK_EX).
  bool flock_free(fusexx::fhandle fh, int how) const {
    return std::ranges::none_of(flocks_, [&](const flock_held& f) { return f.fh != fh && (how == LOCK_EX || f.how == LOCK_EX); });
  }
  // Takes or converts fh's flock lock.
  void flock_set(fusexx::fhandle fh, int how) {
    flock_release(fh);
    flocks_.push_back({fh, how});
  }
  bool flock_release(fusexx::fhandle fh) { return std::erase_if(flocks_, [&](const flock_held& f) { return f.fh == fh; }) > 0; }

  bool empty() const noexcept { return posix_.empty() && flocks_.empty(); }

  // The locks held, in a snapshot (a handover to a new memfs process): the
  // applications that hold them keep them.
  void save(fusexx::snapshot_writer& w) const {
    w.u64(posix_.size());
    for (const held& h : posix_) {
      w.u64(h.owner);
      w.u16(static_cast<std::uint16_t>(h.range.type));
      w.i64(h.range.start);
      w.i64(h.range.end);
      w.u32(static_cast<std::uint32_t>(h.range.pid));
      w.u64(h.fh);
    }
    w.u64(flocks_.size());
    for (const flock_held& f : flocks_) {
      w.u64(f.fh);
      w.u32(static_cast<std::uint32_t>(f.how));
    }
  }
  bool restore(fusexx::snapshot_reader& r) {
    std::uint64_t n = 0;
    if (!r.count(n, 38)) return false;
    posix_.clear();
    for (std::uint64_t i = 0; i < n; ++i) {
      held h{};
      std::uint16_t type = 0;
      std::int64_t start = 0, end = 0;
      std::uint32_t pid = 0;
      if (!r.u64(h.owner) || !r.u16(type) || !r.i64(start) || !r.i64(end) || !r.u32(pid) || !r.u64(h.fh)) return false;
      if ((type != F_RDLCK && type != F_WRLCK) || start < 0 || end < start) return false;
      h.range.type = static_cast<short>(type);
      h.range.start = start;
      h.range.end = end;
      h.range.pid = static_cast<pid_t>(pid);
      posix_.push_back(h);
    }
    if (!r.count(n, 12)) return false;
    flocks_.clear();
    for (std::uint64_t i = 0; i < n; ++i) {
      flock_held f{};
      std::uint32_t how = 0;
      if (!r.u64(f.fh) || !r.u32(how) || (how != LOCK_SH && how != LOCK_EX)) return false;
      f.how = static_cast<int>(how);
      flocks_.push_back(f);
    }
    return true;
  }

 private:
  struct held {
    std::uint64_t owner;
    posix_lock range;
    fusexx::fhandle fh;  // the open file it was taken through
  };
  struct flock_held {
    fusexx::fhandle fh;
    int how;
  };

  static bool overlap(const posix_lock& a, const posix_lock& b) { return a.start <= b.end && b.start <= a.end; }
  // Overlapping or adjacent (careful at the end of the offset range).
  static bool touch(const posix_lock& a, const posix_lock& b) {
    return overlap(a, b) || (a.end != posix_lock::lock_to_eof && a.end + 1 == b.start) ||
           (b.end != posix_lock::lock_to_eof && b.end + 1 == a.start);
  }
  static posix_lock cut(posix_lock l, off_t start, off_t end) {
    l.start = start;
    l.end = end;
    return l;
  }

  std::vector<held> posix_;
  std::vector<flock_held> flocks_;
};

}  // namespace memfs
