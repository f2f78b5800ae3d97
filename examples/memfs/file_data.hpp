#pragma once
// memfs: a regular file's bytes, sparse. The file is cut into 4 KiB blocks;
// a block is absent (a hole: reads as zeros, takes no space), unwritten
// (reserved by fallocate: reads as zeros, takes space, and is still a hole to
// SEEK_DATA — as tmpfs and ext4 treat preallocated space), or written.
// Page-sized blocks make SEEK_DATA/SEEK_HOLE answer exactly as tmpfs does.
//
// Offsets run up to max_size (2^63 - 1, the kernel's MAX_LFS_FILESIZE on
// 64-bit, which is tmpfs's limit too): the last block starts at 2^63 - 4096,
// so its end (2^63) does not fit in off_t. Inside, positions are therefore
// unsigned 64-bit (`pos`), where every block end fits; callers check with
// fits() that a range ends within max_size before they ask for anything.
// Work is proportional to the blocks that exist or are created, never to the
// length of a range, so a request for a huge sparse range is cheap.
#include <sys/types.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>

#include <fusexx/restart/snapshot.hpp>

#include "examples/memfs/block_index.hpp"

namespace memfs {

class file_data {
 public:
  static constexpr off_t block_size = 4096;
  static constexpr off_t max_size = std::numeric_limits<off_t>::max();

  // True when [off, off + len) is a range of a file (off >= 0) that ends at
  // or before max_size; else the operation is EINVAL (off < 0) or EFBIG.
  static bool fits(off_t off, std::uint64_t len) noexcept {
    return off >= 0 && len <= std::uint64_t(max_size - off);
  }

  off_t size() const noexcept { return size_; }
  // Blocks that take space (written or reserved).
  std::uint64_t allocated_blocks() const noexcept { return blocks_.size(); }

  // Blocks a write (or an allocation) of [off, off+len) would add, for the
  // space limit. The range must fit().
  std::uint64_t blocks_needed(off_t off, std::uint64_t len) const {
    if (len == 0) return 0;
    const pos first = pos(off) / bs, last = (pos(off) + len - 1) / bs;
    return (last - first + 1) - blocks_.count(first, last);
  }

  std::size_t read(off_t off, std::span<std::byte> into) const {
    if (off < 0 || off >= size_) return 0;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(into.size(), pos(size_ - off)));
    if (n == 0) return 0;
    // The written blocks in range are copied, a run of neighbours at a time;
    // what lies between them (holes, reserved blocks) is zeroed: each byte is
    // written once.
    const pos from = pos(off), to = from + n;
    pos filled = from;
    blocks_.written_runs(from / bs, (to - 1) / bs, [&](pos b, std::uint64_t blocks, const std::byte* data) {
      const pos start = b * bs, a = std::max(from, start), z = std::min(to, start + blocks * bs);
      if (a > filled) std::memset(into.data() + (filled - from), 0, std::size_t(a - filled));
      std::memcpy(into.data() + (a - from), data + (a - start), std::size_t(z - a));
      filled = z;
    });
    if (to > filled) std::memset(into.data() + (filled - from), 0, std::size_t(to - filled));
    return n;
  }

  // Writes `data` at `off` (the range must fit()). `take(n)` is asked first
  // for the n blocks the write adds (the space limit) and may refuse: then
  // nothing changes, and the answer is false.
  template <class Take>
  bool write(off_t off, std::span<const std::byte> data, Take&& take) {
    const pos from = pos(off), end = from + data.size();
    if (data.empty()) {
      grow_to(end);
      return true;
    }
    const pos first = from / bs, last = (end - 1) / bs;
    // Within one slab (every 4 KiB write), the walk that writes also counts
    // the new blocks for take(); a write over several counts them all first.
    const bool one_slab = block_index::same_slab(first, last);
    if (!one_slab && !take(blocks_needed(off, data.size()))) return false;
    for (pos b = first; b <= last;) {  // a run of blocks side by side at a time; new ones read as zeros
      const std::span<std::byte> run =
          blocks_.write_if(b, last - b + 1, [&](std::uint64_t added) { return !one_slab || take(added); });
      if (run.empty()) return false;  // refused (one_slab: nothing written)
      const pos start = b * bs, a = std::max(from, start), z = std::min(end, start + run.size());
      std::memcpy(run.data() + (a - start), data.data() + (a - from), std::size_t(z - a));
      b += run.size() / bs;
    }
    grow_to(end);
    return true;
  }
  void write(off_t off, std::span<const std::byte> data) {
    (void)write(off, data, [](std::uint64_t) { return true; });
  }

  void truncate(off_t size) {
    if (size < size_) {
      // Drop whole blocks past the end and zero the tail of the last one, so
      // growing the file again shows zeros there.
      blocks_.erase_from(ceil_blocks(pos(size)));
      zero(pos(size), pos(size_), /*keep_reserved=*/true);
    }
    size_ = size;
  }

  // fallocate(mode 0 or FALLOC_FL_KEEP_SIZE): reserve the blocks not yet
  // there. A block reserved before becomes written zeros, as on tmpfs (a
  // second fallocate initialises the pages of the first). The range must
  // fit(); its missing blocks must have been checked against the space
  // limit (the loop runs over them).
  void reserve(off_t off, std::uint64_t len, bool keep_size) {
    if (len == 0) return;
    for (pos b = pos(off) / bs; b <= (pos(off) + len - 1) / bs; ++b)
      if (!blocks_.reserve(b) && !blocks_.bytes(b)) blocks_.write(b);
    if (!keep_size) grow_to(pos(off) + len);
  }
  // FALLOC_FL_PUNCH_HOLE: whole blocks go, partial ones are zeroed.
  void punch_hole(off_t off, std::uint64_t len) { zero(pos(off), pos(off) + len, /*keep_reserved=*/false); }
  // FALLOC_FL_ZERO_RANGE: zeros that take space (whole blocks become
  // reserved). Same preconditions as reserve().
  void zero_range(off_t off, std::uint64_t len, bool keep_size) {
    if (len == 0) return;
    zero(pos(off), pos(off) + len, /*keep_reserved=*/true);
    for (pos b = pos(off) / bs; b <= (pos(off) + len - 1) / bs; ++b) blocks_.reserve(b);
    if (!keep_size) grow_to(pos(off) + len);
  }

  // copy_file_range: [off_in, off_in+len) of `src` to off_out, byte for byte
  // (holes in the source become written zeros, as the kernel's own copy
  // through the page cache writes them on tmpfs). `src` may be this file
  // when the ranges do not overlap (the kernel refuses overlapping ones).
  // The source range must lie within src.size(), the target range fit(), and
  // blocks_needed(off_out, len) must have been checked against the limit.
  void copy_from(const file_data& src, off_t off_in, off_t off_out, std::uint64_t len) {
    std::array<std::byte, std::size_t(bs)> bounce;  // a block of this file may also be read from
    for (std::uint64_t done = 0; done < len;) {
      // Up to the end of the current source block or target block.
      const pos in = pos(off_in) + done, out = pos(off_out) + done;
      const std::uint64_t n = std::min({len - done, bs - in % bs, bs - out % bs});
      src.read(off_t(in), std::span(bounce).first(std::size_t(n)));
      std::memcpy(blocks_.write(out / bs) + out % bs, bounce.data(), std::size_t(n));
      done += n;
    }
    grow_to(pos(off_out) + len);
  }

  // SEEK_DATA / SEEK_HOLE; nullopt is ENXIO.
  std::optional<off_t> seek_data(off_t off) const {
    if (off < 0 || off >= size_) return std::nullopt;
    std::optional<off_t> found;
    blocks_.for_each(pos(off) / bs, last_block, [&](pos b, const std::byte* data) {
      if (!data) return true;  // reserved space is a hole to SEEK_DATA
      if (const off_t at = std::max(off, off_t(b * bs)); at < size_) found = at;
      return false;
    });
    return found;
  }
  std::optional<off_t> seek_hole(off_t off) const {
    if (off < 0 || off >= size_) return std::nullopt;
    pos b = pos(off) / bs;  // the first block not written from off's on
    blocks_.for_each(b, last_block, [&](pos n, const std::byte* data) {
      if (n != b || !data) return false;
      ++b;
      return true;
    });
    // The end of the file is a hole too; b * bs may be 2^63 (past every off_t).
    return off_t(std::min(pos(size_), std::max(pos(off), b * bs)));
  }

  // The data in a snapshot (a handover to a new memfs process): the size,
  // then each block — its number, whether it is written, and its bytes.
  void save(fusexx::snapshot_writer& w) const {
    w.i64(size_);
    w.u64(blocks_.size());
    blocks_.for_each(0, last_block, [&](pos b, const std::byte* data) {
      w.i64(off_t(b));
      w.boolean(data != nullptr);
      if (data) w.bytes(std::span(data, std::size_t(bs)));
      return true;
    });
  }
  bool restore(fusexx::snapshot_reader& r) {
    std::uint64_t n = 0;
    std::int64_t size = 0;
    if (!r.i64(size) || size < 0 || !r.count(n, 9)) return false;
    blocks_.clear();
    for (std::uint64_t i = 0; i < n; ++i) {
      std::int64_t b = 0;
      bool written = false;
      if (!r.i64(b) || b < 0 || pos(b) > last_block || !r.boolean(written)) return false;
      if (!written) {
        blocks_.reserve(pos(b));
        continue;
      }
      std::span<const std::byte> bytes;
      if (!r.bytes(bytes) || bytes.size() != std::size_t(bs)) return false;
      std::memcpy(blocks_.write(pos(b)), bytes.data(), bytes.size());
    }
    size_ = off_t(size);
    return true;
  }

 private:
  using pos = std::uint64_t;                // a byte position, 0 .. 2^63
  static constexpr pos bs = pos(block_size);
  static constexpr pos last_block = pos(max_size) / bs;  // 2^51 - 1
  static_assert(last_block <= block_index::max_number && bs == block_index::block_bytes);
  static pos ceil_blocks(pos p) noexcept { return p / bs + (p % bs != 0); }

  void grow_to(pos end) noexcept { size_ = std::max(size_, off_t(end)); }

  // Zeros [from, to): blocks inside it entirely are dropped (or, with
  // keep_reserved, kept as reserved space); the partial ones at either end
  // are cleared in place.
  void zero(pos from, pos to, bool keep_reserved) {
    if (to <= from) return;
    if (const pos whole_first = ceil_blocks(from), whole_end = to / bs; whole_first < whole_end) {
      if (keep_reserved)
        blocks_.unwrite(whole_first, whole_end - 1);
      else
        blocks_.erase(whole_first, whole_end - 1);
    }
    if (from % bs) clear(from, std::min(to, (from / bs + 1) * bs));
    if (to % bs && (from % bs == 0 || to / bs != from / bs)) clear(std::max(from, to / bs * bs), to);
  }
  // Zeros [from, to), which lies within one block, if that block is written.
  void clear(pos from, pos to) {
    if (std::byte* data = blocks_.bytes(from / bs)) std::memset(data + from % bs, 0, std::size_t(to - from));
  }

  // By block number, in page-aligned slabs (block_index.hpp): a 4 KiB write
  // is a shift and an index a level, and one page of data.
  block_index blocks_;
  off_t size_ = 0;
};

}  // namespace memfs
