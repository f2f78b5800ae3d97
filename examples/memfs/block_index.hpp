#pragma once
// memfs: where a file's 4 KiB blocks live. A radix tree by block number, 64
// slots a node and as tall as the highest block number needs (the shape of
// the kernel's page-cache index, the xarray); each leaf covers 64 blocks and
// keeps their bytes in one slab of its own, 256 KiB of anonymous memory
// mapped when the first of them is written.
//
// Why this shape: a 4 KiB write into a 256 MiB file looked its block up in
// an absl::btree_map of 65 536 blocks allocated one by one: 4-5 node levels
// searched key by key, and a block on two pages (malloc's header puts 4 KiB
// allocations 16 bytes off the page). Under random writes each level and
// page is a TLB and cache miss, dear in a VM (perf of memfs io_uring: 83 % of
// file_data::write's samples on B-tree node loads; a radix tree of per-block
// pointers, 512 KiB of leaves, still missed on every leaf). Here the whole
// index of a 256 MiB file is ~40 KiB that stays cached, and a block is the
// page at slab + 4096 * slot: a write touches one page of data, as
// memfs_ll's single vector does, and a run of neighbours is one copy. A sparse
// file still costs only the pages it has written (an unwritten page of a slab
// is never touched, so the kernel never backs it) and the nodes on the paths
// to its blocks; a small file reserves 256 KiB of address space, not memory.
//
// A block is absent, reserved (present, reads as zeros: fallocate) or
// written. The one invariant the rest leans on: the page of a block that is
// not written holds zeros — never touched, or given back (MADV_DONTNEED
// makes a private anonymous page read as zeros again) — so a block newly
// written needs no clearing first.
#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <utility>

namespace memfs {

class block_index {
 public:
  using number = std::uint64_t;  // a block number; file_data's are below 2^51
  static constexpr std::size_t block_bytes = 4096;
  // Block numbers up to 2^54 - 1 (nine levels of 6 bits).
  static constexpr number max_number = (number(1) << 54) - 1;

  block_index() = default;
  block_index(const block_index&) = delete;
  block_index& operator=(const block_index&) = delete;

  // Present blocks (reserved or written).
  std::uint64_t size() const noexcept { return count_; }
  // Present blocks numbered first..last.
  std::uint64_t count(number first, number last) const {
    std::uint64_t n = 0;
    leaves(*this, first, last, [&](const leaf& l, number, std::uint64_t in) {
      n += std::uint64_t(std::popcount(l.used & in));
      return true;
    });
    return n;
  }

  // The bytes of block b when it is written, else null.
  const std::byte* bytes(number b) const noexcept {
    const leaf* l = find_leaf(b);
    return l && (l->written & bit(slot_of(b, 0))) ? l->bytes(slot_of(b, 0)) : nullptr;
  }
  std::byte* bytes(number b) noexcept { return const_cast<std::byte*>(std::as_const(*this).bytes(b)); }

  // Makes blocks b .. b+n-1 written (adding those absent), n the most of
  // `blocks` that share b's slab, and returns their bytes, which lie side by
  // side: zeros but for blocks written before. b must be at most max_number.
  // Throws std::bad_alloc when memory cannot be had (the blocks' states
  // unchanged then).
  std::span<std::byte> write(number b, std::uint64_t blocks) {
    return write_if(b, blocks, [](std::uint64_t) { return true; });
  }
  // write(b, blocks), but admit(k) is asked first for the k blocks it would
  // add (memfs's space limit); when it says no, nothing changes and the
  // answer is empty. The count comes from the walk that writes: a count of
  // its own first was a second walk down the index for every 4 KiB write
  // (9.5 % of memfs's user time under random io_uring writes).
  template <class Admit>
  std::span<std::byte> write_if(number b, std::uint64_t blocks, Admit&& admit) {
    const unsigned i = slot_of(b, 0), n = unsigned(std::min<std::uint64_t>(blocks, fanout - i));
    const std::uint64_t run = slots(i, i + n - 1);
    leaf* l = find_leaf(b);
    const std::uint64_t added = std::uint64_t(std::popcount(run & ~(l ? l->used : 0)));
    if (!admit(added)) return {};
    if (!l) l = &leaf_for(b);  // a new slab's leaf: made only once admitted
    if (!l->slab) l->map();
    count_ += added;
    l->used |= run;
    l->written |= run;
    return {l->bytes(i), std::size_t(n) * block_bytes};
  }
  // True when blocks first..last share a slab (write() gives them in one run).
  static constexpr bool same_slab(number first, number last) noexcept {
    return first >> bits_per_level == last >> bits_per_level;
  }
  std::byte* write(number b) { return write(b, 1).data(); }

  // Makes block b present (reserved, zeros) when absent; true if it was.
  bool reserve(number b) {
    leaf& l = leaf_for(b);
    const unsigned i = slot_of(b, 0);
    if (l.used & bit(i)) return false;
    l.used |= bit(i);
    ++count_;
    return true;
  }

  // The written blocks of first..last become reserved: their bytes go.
  void unwrite(number first, number last) {
    leaves(*this, first, last, [](leaf& l, number, std::uint64_t in) {
      l.drop(l.written & in);
      return true;
    });
  }

  // Removes the present blocks numbered first..last.
  void erase(number first, number last) {
    if (!root_ || first > last || first >= capacity()) return;
    count_ -= cut(*root_, height_ - 1, 0, first, last);
    if (!root_->used) clear();
  }
  void erase_from(number b) { erase(b, max_number); }

  void clear() noexcept {
    root_.reset();
    height_ = 0;
    count_ = 0;
  }

  // Calls f(number, bytes) for each present block numbered first..last, in
  // order, until f returns false; bytes is null for a reserved block. Work:
  // the leaves met, and the nodes on their paths.
  template <class F>
  void for_each(number first, number last, F&& f) const {
    leaves(*this, first, last, [&](const leaf& l, number base, std::uint64_t in) {
      for (std::uint64_t m = l.used & in; m; m &= m - 1) {
        const unsigned i = unsigned(std::countr_zero(m));
        if (!f(base + i, (l.written & bit(i)) ? l.bytes(i) : nullptr)) return false;
      }
      return true;
    });
  }

  // Calls f(b, n, bytes) for each run of written blocks b .. b+n-1 of
  // first..last that lie side by side in one slab (bytes: theirs, n *
  // block_bytes of them), in order. A 1 MiB read is then a few copies, not 256.
  template <class F>
  void written_runs(number first, number last, F&& f) const {
    leaves(*this, first, last, [&](const leaf& l, number base, std::uint64_t in) {
      runs(l.written & in, [&](unsigned i, unsigned n) { f(base + i, std::uint64_t(n), l.bytes(i)); });
      return true;
    });
  }

 private:
  static constexpr unsigned bits_per_level = 6, fanout = 1u << bits_per_level;

  template <class Like, class T>
  using const_like = std::conditional_t<std::is_const_v<Like>, const T, T>;

  struct node {
    virtual ~node() = default;
    std::uint64_t used = 0;  // bit i: slot i is present (a child, or a block)
  };
  struct inner final : node {
    std::unique_ptr<node> child[fanout];  // leaves when this node is at level 1
  };
  struct leaf final : node {
    static constexpr std::size_t slab_bytes = fanout * block_bytes;
    std::uint64_t written = 0;  // bit i: block i has bytes (a subset of used)
    std::byte* slab = nullptr;  // fanout pages, mapped at the first write

    leaf() = default;
    leaf(const leaf&) = delete;
    leaf& operator=(const leaf&) = delete;
    ~leaf() override {
      if (slab) ::munmap(slab, slab_bytes);
    }
    std::byte* bytes(unsigned i) noexcept { return slab + std::size_t(i) * block_bytes; }
    const std::byte* bytes(unsigned i) const noexcept { return slab + std::size_t(i) * block_bytes; }
    void map() {
      // MAP_NORESERVE: only the pages written take memory; memfs counts
      // blocks against its own limit.
      void* p = ::mmap(nullptr, slab_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      slab = static_cast<std::byte*>(p);
    }
    // Gives back the pages of the blocks in `which` (zeros again), a run of
    // neighbours at a time, and marks them unwritten.
    void drop(std::uint64_t which) noexcept {
      written &= ~which;
      runs(which, [&](unsigned i, unsigned n) { ::madvise(bytes(i), std::size_t(n) * block_bytes, MADV_DONTNEED); });
    }
  };

  static constexpr std::uint64_t bit(unsigned i) noexcept { return std::uint64_t(1) << i; }
  // Calls f(i, n) for each run of set bits i .. i+n-1 of mask, low to high.
  template <class F>
  static void runs(std::uint64_t mask, F&& f) {
    while (mask) {
      const unsigned i = unsigned(std::countr_zero(mask)), n = unsigned(std::countr_one(mask >> i));
      f(i, n);
      mask = i + n >= fanout ? 0 : mask & (~std::uint64_t(0) << (i + n));
    }
  }
  static constexpr unsigned slot_of(number b, unsigned level) noexcept {
    return unsigned(b >> (bits_per_level * level)) & (fanout - 1);
  }
  // Blocks under one node at `level` (0: a leaf).
  static constexpr number span(unsigned level) noexcept { return number(1) << (bits_per_level * (level + 1)); }
  number capacity() const noexcept { return height_ ? span(height_ - 1) : 0; }
  // The slots lo..hi of a node's mask.
  static constexpr std::uint64_t slots(unsigned lo, unsigned hi) noexcept {
    return (hi == fanout - 1 ? ~std::uint64_t(0) : bit(hi + 1) - 1) & (~std::uint64_t(0) << lo);
  }
  // The slots of a node at `level` starting at block `base` that hold blocks
  // of first..last (a range the node's own meets).
  static std::uint64_t slots_for(unsigned level, number base, number first, number last) noexcept {
    const unsigned shift = bits_per_level * level;
    const unsigned lo = first <= base ? 0 : unsigned((first - base) >> shift);
    const unsigned hi = last - base >= span(level) - 1 ? fanout - 1 : unsigned((last - base) >> shift);
    return slots(lo, hi);
  }

  const leaf* find_leaf(number b) const noexcept {
    if (b >= capacity()) return nullptr;
    const node* n = root_.get();
    for (unsigned level = height_ - 1; level > 0 && n; --level)
      n = static_cast<const inner&>(*n).child[slot_of(b, level)].get();
    return static_cast<const leaf*>(n);
  }
  leaf* find_leaf(number b) noexcept { return const_cast<leaf*>(std::as_const(*this).find_leaf(b)); }

  // The leaf of block b, made (with the nodes above it) when missing.
  leaf& leaf_for(number b) {
    grow_for(b);
    node* n = root_.get();
    for (unsigned level = height_ - 1; level > 0; --level) {
      auto& in = static_cast<inner&>(*n);
      const unsigned i = slot_of(b, level);
      if (!in.child[i]) {
        in.child[i] = level == 1 ? std::unique_ptr<node>(new leaf) : std::unique_ptr<node>(new inner);
        in.used |= bit(i);
      }
      n = in.child[i].get();
    }
    return static_cast<leaf&>(*n);
  }

  // Makes the tree tall enough for block b: the old root becomes the first
  // child of a new one, as often as needed.
  void grow_for(number b) {
    if (!root_) {
      root_ = std::make_unique<leaf>();
      height_ = 1;
    }
    while (b >= capacity()) {
      auto up = std::make_unique<inner>();
      if (root_->used) {
        up->child[0] = std::move(root_);
        up->used = bit(0);
      }
      root_ = std::move(up);
      ++height_;
    }
  }

  // Calls f(leaf, base, slots) for each leaf holding present blocks of
  // first..last, in order (base: its first block's number; slots: the mask
  // of its slots in that range), until f returns false.
  template <class Self, class F>
  static void leaves(Self& self, number first, number last, F&& f) {
    if (!self.root_ || first > last || first >= self.capacity()) return;
    const_like<Self, node>& root = *self.root_;
    walk(root, self.height_ - 1, 0, first, last, f);
  }
  template <class Node, class F>
  static bool walk(Node& n, unsigned level, number base, number first, number last, F& f) {
    const std::uint64_t in = slots_for(level, base, first, last);
    if (level == 0) return f(static_cast<const_like<Node, leaf>&>(n), base, in);
    for (std::uint64_t m = n.used & in; m; m &= m - 1) {
      const unsigned i = unsigned(std::countr_zero(m));
      Node& child = *static_cast<const_like<Node, inner>&>(n).child[i];
      if (!walk(child, level - 1, base + (number(i) << (bits_per_level * level)), first, last, f)) return false;
    }
    return true;
  }

  // Removes the present blocks of first..last under n; frees the children
  // left empty. Returns how many blocks went.
  static std::uint64_t cut(node& n, unsigned level, number base, number first, number last) {
    const std::uint64_t in = n.used & slots_for(level, base, first, last);
    if (level == 0) {
      auto& l = static_cast<leaf&>(n);
      if (l.used & ~in)
        l.drop(l.written & in);
      else
        l.written = 0;  // the leaf goes, and its slab with it: nothing to give back page by page
      l.used &= ~in;
      return std::uint64_t(std::popcount(in));
    }
    auto& parent = static_cast<inner&>(n);
    std::uint64_t gone = 0;
    for (std::uint64_t m = in; m; m &= m - 1) {
      const unsigned i = unsigned(std::countr_zero(m));
      gone += cut(*parent.child[i], level - 1, base + (number(i) << (bits_per_level * level)), first, last);
      if (!parent.child[i]->used) {
        parent.child[i].reset();
        n.used &= ~bit(i);
      }
    }
    return gone;
  }

  std::unique_ptr<node> root_;
  unsigned height_ = 0;  // levels; 0: empty
  std::uint64_t count_ = 0;
};

}  // namespace memfs
