#pragma once
// memfs: a regular file's bytes, sparse. The file is cut into 4 KiB blocks;
// a block is absent (a hole: reads as zeros, takes no space), unwritten
// (reserved by fallocate: reads as zeros, takes space, and is still a hole to
// SEEK_DATA — as tmpfs and ext4 treat preallocated space), or written.
// Page-sized blocks make SEEK_DATA/SEEK_HOLE answer exactly as tmpfs does.
#include <sys/types.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>

namespace memfs {

class file_data {
 public:
  static constexpr off_t block_size = 4096;

  off_t size() const noexcept { return size_; }
  // Blocks that take space (written or reserved).
  std::uint64_t allocated_blocks() const noexcept { return blocks_.size(); }

  // Blocks a write of [off, off+len) would add (for the space limit).
  std::uint64_t blocks_needed(off_t off, off_t len) const {
    if (len <= 0) return 0;
    std::uint64_t missing = 0;
    for (off_t b = off / block_size; b <= (off + len - 1) / block_size; ++b) missing += !blocks_.contains(b);
    return missing;
  }

  std::size_t read(off_t off, std::span<std::byte> into) const {
    if (off >= size_) return 0;
    const std::size_t n = static_cast<std::size_t>(std::min<off_t>(static_cast<off_t>(into.size()), size_ - off));
    std::memset(into.data(), 0, n);
    // Copy only the written blocks in range; holes and reserved blocks stay zero.
    for (auto it = blocks_.lower_bound(off / block_size); it != blocks_.end(); ++it) {
      const off_t start = it->first * block_size;
      if (start >= off + static_cast<off_t>(n)) break;
      if (!it->second) continue;
      const off_t from = std::max(off, start), to = std::min(off + static_cast<off_t>(n), start + block_size);
      std::memcpy(into.data() + (from - off), it->second.get() + (from - start), static_cast<std::size_t>(to - from));
    }
    return n;
  }

  void write(off_t off, std::span<const std::byte> data) {
    const off_t end = off + static_cast<off_t>(data.size());
    for (off_t pos = off; pos < end;) {
      const off_t b = pos / block_size, start = b * block_size;
      const off_t to = std::min(end, start + block_size);
      std::memcpy(written(b) + (pos - start), data.data() + (pos - off), static_cast<std::size_t>(to - pos));
      pos = to;
    }
    size_ = std::max(size_, end);
  }

  void truncate(off_t size) {
    if (size < size_) {
      // Drop whole blocks past the end and zero the tail of the last one, so
      // growing the file again shows zeros there.
      blocks_.erase(blocks_.lower_bound((size + block_size - 1) / block_size), blocks_.end());
      zero(size, size_, /*keep_reserved=*/true);
    }
    size_ = size;
  }

  // fallocate(mode 0 or FALLOC_FL_KEEP_SIZE): reserve the blocks not yet
  // there. A block reserved before becomes written zeros, as on tmpfs (a
  // second fallocate initialises the pages of the first).
  void reserve(off_t off, off_t len, bool keep_size) {
    for (off_t b = off / block_size; b <= (off + len - 1) / block_size; ++b)
      if (auto [it, added] = blocks_.try_emplace(b); !added && !it->second) written(b);
    if (!keep_size) size_ = std::max(size_, off + len);
  }
  // FALLOC_FL_PUNCH_HOLE: whole blocks go, partial ones are zeroed.
  void punch_hole(off_t off, off_t len) { zero(off, off + len, /*keep_reserved=*/false); }
  // FALLOC_FL_ZERO_RANGE: zeros that take space (whole blocks become reserved).
  void zero_range(off_t off, off_t len, bool keep_size) {
    zero(off, off + len, /*keep_reserved=*/true);
    for (off_t b = off / block_size; b <= (off + len - 1) / block_size; ++b) blocks_.try_emplace(b);
    if (!keep_size) size_ = std::max(size_, off + len);
  }

  // SEEK_DATA / SEEK_HOLE; nullopt is ENXIO.
  std::optional<off_t> seek_data(off_t off) const {
    if (off >= size_) return std::nullopt;
    for (auto it = blocks_.lower_bound(off / block_size); it != blocks_.end(); ++it)
      if (it->second) {
        const off_t at = std::max(off, it->first * block_size);
        return at < size_ ? std::optional(at) : std::nullopt;
      }
    return std::nullopt;
  }
  std::optional<off_t> seek_hole(off_t off) const {
    if (off >= size_) return std::nullopt;
    off_t b = off / block_size;
    for (auto it = blocks_.lower_bound(b); it != blocks_.end() && it->first == b && it->second; ++it) ++b;
    return std::min(size_, std::max(off, b * block_size));  // the end of the file is a hole too
  }

 private:
  using block = std::unique_ptr<std::byte[]>;  // null: reserved, reads as zeros

  std::byte* written(off_t b) {
    block& blk = blocks_[b];
    if (!blk) blk = std::make_unique<std::byte[]>(block_size);  // value-initialised: zeros
    return blk.get();
  }

  // Zeros [from, to): blocks inside it entirely are dropped (or, with
  // keep_reserved, kept as reserved space); the partial ones at either end
  // are cleared in place.
  void zero(off_t from, off_t to, bool keep_reserved) {
    if (to <= from) return;
    for (auto it = blocks_.lower_bound(from / block_size); it != blocks_.end();) {
      const off_t start = it->first * block_size;
      if (start >= to) break;
      const off_t a = std::max(from, start), z = std::min(to, start + block_size);
      if (a == start && z == start + block_size) {
        if (keep_reserved) {
          it->second.reset();
          ++it;
        } else {
          it = blocks_.erase(it);
        }
        continue;
      }
      if (it->second) std::memset(it->second.get() + (a - start), 0, static_cast<std::size_t>(z - a));
      ++it;
    }
  }

  std::map<off_t, block> blocks_;
  off_t size_ = 0;
};

}  // namespace memfs
