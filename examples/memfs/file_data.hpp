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
#include <memory>
#include <optional>
#include <span>

#include <absl/container/btree_map.h>

#include <fusexx/restart/snapshot.hpp>

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
    return (last - first + 1) - present(first, last);
  }

  std::size_t read(off_t off, std::span<std::byte> into) const {
    if (off < 0 || off >= size_) return 0;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(into.size(), pos(size_ - off)));
    // The written blocks in range are copied; what lies between them (holes,
    // reserved blocks) is zeroed: each byte is written once.
    const pos from = pos(off), to = from + n;
    pos filled = from;
    for (auto it = blocks_.lower_bound(key(from / bs)); it != blocks_.end(); ++it) {
      const pos start = pos(it->first) * bs;
      if (start >= to) break;
      if (!it->second) continue;
      const pos a = std::max(from, start), z = std::min(to, start + bs);
      if (a > filled) std::memset(into.data() + (filled - from), 0, std::size_t(a - filled));
      std::memcpy(into.data() + (a - from), it->second.get() + (a - start), std::size_t(z - a));
      filled = z;
    }
    if (to > filled) std::memset(into.data() + (filled - from), 0, std::size_t(to - filled));
    return n;
  }

  // Writes `data` at `off` (the range must fit()). `take(n)` is asked first
  // for the n blocks the write adds (the space limit) and may refuse: then
  // nothing changes, and the answer is false. One search of the block tree,
  // then a walk along it: a 1 MiB write is one lookup, not 256.
  template <class Take>
  bool write(off_t off, std::span<const std::byte> data, Take&& take) {
    const pos from = pos(off), end = from + data.size();
    if (data.empty()) {
      grow_to(end);
      return true;
    }
    const pos first = from / bs, last = (end - 1) / bs;
    const auto start = blocks_.lower_bound(key(first));
    std::uint64_t there = 0;
    for (auto it = start; it != blocks_.end() && pos(it->first) <= last; ++it) ++there;
    if (!take((last - first + 1) - there)) return false;
    auto it = start;
    for (pos b = first; b <= last; ++b, ++it) {
      if (it == blocks_.end() || pos(it->first) != b) it = blocks_.emplace_hint(it, key(b), block{});
      const pos bstart = b * bs, a = std::max(from, bstart), z = std::min(end, bstart + bs);
      if (!it->second)  // a block written whole needs no zeros first
        it->second = (a == bstart && z == bstart + bs) ? std::make_unique_for_overwrite<std::byte[]>(std::size_t(bs))
                                                       : std::make_unique<std::byte[]>(std::size_t(bs));
      std::memcpy(it->second.get() + (a - bstart), data.data() + (a - from), std::size_t(z - a));
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
      blocks_.erase(blocks_.lower_bound(key(ceil_blocks(pos(size)))), blocks_.end());
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
      if (auto [it, added] = blocks_.try_emplace(key(b)); !added && !it->second) written(key(b));
    if (!keep_size) grow_to(pos(off) + len);
  }
  // FALLOC_FL_PUNCH_HOLE: whole blocks go, partial ones are zeroed.
  void punch_hole(off_t off, std::uint64_t len) { zero(pos(off), pos(off) + len, /*keep_reserved=*/false); }
  // FALLOC_FL_ZERO_RANGE: zeros that take space (whole blocks become
  // reserved). Same preconditions as reserve().
  void zero_range(off_t off, std::uint64_t len, bool keep_size) {
    if (len == 0) return;
    zero(pos(off), pos(off) + len, /*keep_reserved=*/true);
    for (pos b = pos(off) / bs; b <= (pos(off) + len - 1) / bs; ++b) blocks_.try_emplace(key(b));
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
      std::memcpy(written(key(out / bs)) + out % bs, bounce.data(), std::size_t(n));
      done += n;
    }
    grow_to(pos(off_out) + len);
  }

  // SEEK_DATA / SEEK_HOLE; nullopt is ENXIO.
  std::optional<off_t> seek_data(off_t off) const {
    if (off < 0 || off >= size_) return std::nullopt;
    for (auto it = blocks_.lower_bound(key(pos(off) / bs)); it != blocks_.end(); ++it)
      if (it->second) {
        const off_t at = std::max(off, off_t(pos(it->first) * bs));
        return at < size_ ? std::optional(at) : std::nullopt;
      }
    return std::nullopt;
  }
  std::optional<off_t> seek_hole(off_t off) const {
    if (off < 0 || off >= size_) return std::nullopt;
    pos b = pos(off) / bs;
    for (auto it = blocks_.lower_bound(key(b)); it != blocks_.end() && pos(it->first) == b && it->second; ++it) ++b;
    // The end of the file is a hole too; b * bs may be 2^63 (past every off_t).
    return off_t(std::min(pos(size_), std::max(pos(off), b * bs)));
  }

  // The data in a snapshot (a handover to a new memfs process): the size,
  // then each block — its number, whether it is written, and its bytes.
  void save(fusexx::snapshot_writer& w) const {
    w.i64(size_);
    w.u64(blocks_.size());
    for (const auto& [b, data] : blocks_) {
      w.i64(b);
      w.boolean(data != nullptr);
      if (data) w.bytes(std::span<const std::byte>(data.get(), std::size_t(bs)));
    }
  }
  bool restore(fusexx::snapshot_reader& r) {
    std::uint64_t n = 0;
    std::int64_t size = 0;
    if (!r.i64(size) || size < 0 || !r.count(n, 9)) return false;
    blocks_.clear();
    for (std::uint64_t i = 0; i < n; ++i) {
      std::int64_t b = 0;
      bool written = false;
      if (!r.i64(b) || b < 0 || pos(b) > pos(max_size) / bs || !r.boolean(written)) return false;
      block& blk = blocks_[off_t(b)];
      if (!written) continue;
      std::span<const std::byte> bytes;
      if (!r.bytes(bytes) || bytes.size() != std::size_t(bs)) return false;
      blk = std::make_unique<std::byte[]>(std::size_t(bs));
      std::memcpy(blk.get(), bytes.data(), bytes.size());
    }
    size_ = off_t(size);
    return true;
  }

 private:
  using pos = std::uint64_t;                // a byte position, 0 .. 2^63
  using block = std::unique_ptr<std::byte[]>;  // null: reserved, reads as zeros
  static constexpr pos bs = pos(block_size);

  static off_t key(pos b) noexcept { return off_t(b); }  // block numbers are below 2^51
  static pos ceil_blocks(pos p) noexcept { return p / bs + (p % bs != 0); }

  void grow_to(pos end) noexcept { size_ = std::max(size_, off_t(end)); }

  // How many of the blocks first..last (inclusive) exist.
  std::uint64_t present(pos first, pos last) const {
    std::uint64_t n = 0;
    for (auto it = blocks_.lower_bound(key(first)); it != blocks_.end() && pos(it->first) <= last; ++it) ++n;
    return n;
  }

  std::byte* written(off_t b) {
    block& blk = blocks_[b];
    if (!blk) blk = std::make_unique<std::byte[]>(std::size_t(bs));  // value-initialised: zeros
    return blk.get();
  }

  // Zeros [from, to): blocks inside it entirely are dropped (or, with
  // keep_reserved, kept as reserved space); the partial ones at either end
  // are cleared in place.
  void zero(pos from, pos to, bool keep_reserved) {
    if (to <= from) return;
    for (auto it = blocks_.lower_bound(key(from / bs)); it != blocks_.end();) {
      const pos start = pos(it->first) * bs;
      if (start >= to) break;
      const pos a = std::max(from, start), z = std::min(to, start + bs);
      if (a == start && z == start + bs) {
        if (keep_reserved) {
          it->second.reset();
          ++it;
        } else {
          it = blocks_.erase(it);
        }
        continue;
      }
      if (it->second) std::memset(it->second.get() + (a - start), 0, std::size_t(z - a));
      ++it;
    }
  }

  // A B-tree, not std::map: a 1 MiB write walks 256 blocks, and a red-black
  // tree's nodes lie between the 4 KiB blocks in the heap, a page apart, so
  // each step of the walk missed (perf of memfs io_uring after the benchmark's
  // preparation: 67 us per MiB written in _Rb_tree_increment, about all the
  // server CPU a MiB cost above memfs_ll's). A B-tree keeps the keys and
  // pointers of up to ~15 blocks side by side in a node.
  absl::btree_map<off_t, block> blocks_;
  off_t size_ = 0;
};

}  // namespace memfs
