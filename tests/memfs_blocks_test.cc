// memfs's block store, without a mount: the radix index of a file's blocks
// (examples/memfs/block_index.hpp) against std::map, operation by operation,
// with block numbers dense, sparse and at the very top of a file's range; and
// file_data (examples/memfs/file_data.hpp) against a plain byte array under
// random writes, reads, truncates, hole punches, zeroed ranges and
// SEEK_DATA/SEEK_HOLE. The mounted tests (memfs_edges_test, memfs_files_test)
// check the same through the kernel; these reach the corners a mount takes
// too long to walk through.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <random>
#include <vector>

#include "examples/memfs/block_index.hpp"
#include "examples/memfs/file_data.hpp"

namespace {

using memfs::block_index;
using memfs::file_data;
using number = block_index::number;

// What the index holds, as a map: block number -> the first byte of a
// written block, or -1 for a reserved one.
std::map<number, int> contents(const block_index& index) {
  std::map<number, int> out;
  index.for_each(0, block_index::max_number, [&](number b, const std::byte* bytes) {
    out[b] = bytes ? int(bytes[0]) : -1;
    return true;
  });
  return out;
}

bool all_zeros(const std::byte* p) {
  for (std::size_t i = 0; i < block_index::block_bytes; ++i)
    if (p[i] != std::byte(0)) return false;
  return true;
}

}  // namespace

TEST_CASE("the block index holds what a map holds, dense, sparse and at the top of the range") {
  // Numbers drawn from three places: a dense run (a file written front to
  // back), scattered ones (a sparse file), and the last blocks of a
  // 2^63-byte file, which make the tree its full nine levels tall.
  std::mt19937_64 rng(20261204);
  const number top = (number(1) << 51) - 1;
  auto draw = [&]() -> number {
    switch (rng() % 4) {
      case 0: return top - rng() % 200;
      case 1: return rng() % top;
      default: return rng() % 300;
    }
  };
  auto range_end = [&](number b) { return rng() % 4 ? b + rng() % 100 : block_index::max_number; };
  auto model_range = [](std::map<number, int>& m, number first, number last) {
    return std::pair(m.lower_bound(first), last == block_index::max_number ? m.end() : m.upper_bound(last));
  };
  block_index index;
  std::map<number, int> model;
  for (int step = 0; step < 20000; ++step) {
    const number b = draw();
    switch (rng() % 8) {
      case 0:
      case 1: {  // write a run of blocks in one slab: a block not written before reads as zeros, even one whose bytes were given back
        const std::uint64_t asked = rng() % 2 ? 1 : 1 + rng() % 100;
        const std::span<std::byte> run = index.write(b, asked);
        const std::uint64_t n = std::min<std::uint64_t>(asked, 64 - b % 64);
        REQUIRE(run.size() == n * block_index::block_bytes);
        for (std::uint64_t k = 0; k < n; ++k) {
          std::byte* bytes = run.data() + k * block_index::block_bytes;
          const auto it = model.find(b + k);
          if (it == model.end() || it->second < 0) REQUIRE(all_zeros(bytes));
          const int value = int(rng() % 255) + 1;
          std::memset(bytes, value, block_index::block_bytes);
          model[b + k] = value;
          CHECK(index.bytes(b + k) == bytes);
        }
        break;
      }
      case 2:  // reserve
        CHECK(index.reserve(b) == !model.contains(b));
        model.try_emplace(b, -1);
        break;
      case 3: {  // look up
        const std::byte* bytes = std::as_const(index).bytes(b);
        const auto it = model.find(b);
        REQUIRE((bytes != nullptr) == (it != model.end() && it->second >= 0));
        if (bytes) CHECK(int(bytes[block_index::block_bytes - 1]) == it->second);
        break;
      }
      case 4: {  // erase one or a range
        const number last = rng() % 2 ? b : range_end(b);
        index.erase(b, last);
        auto [from, to] = model_range(model, b, last);
        model.erase(from, to);
        break;
      }
      case 5: {  // unwrite a range: written blocks become reserved
        const number last = range_end(b);
        index.unwrite(b, last);
        for (auto [from, to] = model_range(model, b, last); from != to; ++from) from->second = -1;
        break;
      }
      case 6: {  // count a range
        const number last = range_end(b);
        auto [from, to] = model_range(model, b, last);
        CHECK(index.count(b, last) == std::uint64_t(std::distance(from, to)));
        break;
      }
      case 7: {  // walk a range, stopping early now and then
        const number last = b + rng() % 500;
        const std::size_t stop_after = rng() % 2 ? 1 + rng() % 20 : SIZE_MAX;
        std::vector<std::pair<number, bool>> seen, expected;
        index.for_each(b, last, [&](number n, const std::byte* bytes) {
          seen.emplace_back(n, bytes != nullptr);
          return seen.size() < stop_after;
        });
        for (auto it = model.lower_bound(b); it != model.end() && it->first <= last && expected.size() < stop_after; ++it)
          expected.emplace_back(it->first, it->second >= 0);
        CHECK(seen == expected);
        // The written ones again, as runs of neighbours in one slab (64 blocks).
        std::vector<std::pair<number, std::uint64_t>> runs, expected_runs;
        index.written_runs(b, last, [&](number first, std::uint64_t n, const std::byte* bytes) {
          runs.emplace_back(first, n);
          CHECK(bytes == std::as_const(index).bytes(first));
        });
        for (auto it = model.lower_bound(b); it != model.end() && it->first <= last; ++it) {
          if (it->second < 0) continue;
          if (!expected_runs.empty()) {
            auto& [start, n] = expected_runs.back();
            if (start + n == it->first && it->first % 64 != 0) {
              ++n;
              continue;
            }
          }
          expected_runs.emplace_back(it->first, 1);
        }
        CHECK(runs == expected_runs);
        break;
      }
    }
    REQUIRE(index.size() == model.size());
  }
  CHECK(contents(index) == model);
  // Emptied, it gives back every node (and works again afterwards).
  index.erase_from(0);
  CHECK(index.size() == 0);
  CHECK(contents(index).empty());
  CHECK(all_zeros(index.write(top)));
  CHECK(index.bytes(top) != nullptr);
  CHECK(index.bytes(0) == nullptr);
}

TEST_CASE("file_data reads back what was written, across holes, truncates, punches and zeroed ranges") {
  std::mt19937_64 rng(4096);
  constexpr std::size_t span = 1 << 20;  // 256 blocks: random ranges meet often
  file_data data;
  std::vector<std::byte> model;  // the file's bytes; its size is the file's
  std::vector<std::byte> buf;
  for (int step = 0; step < 4000; ++step) {
    const off_t off = off_t(rng() % span);
    const std::size_t len = rng() % 3 ? rng() % 9000 : rng() % (span / 4);
    switch (rng() % 6) {
      case 0:
      case 1: {  // write: asks for exactly the blocks it adds, and when refused changes nothing
        buf.resize(len);
        for (auto& b : buf) b = std::byte(rng());
        const std::uint64_t needed = data.blocks_needed(off, len), before = data.allocated_blocks();
        const bool refuse = needed && rng() % 8 == 0;
        int asked = 0;
        const bool wrote = data.write(off, buf, [&](std::uint64_t blocks) {
          ++asked;
          CHECK(blocks == needed);
          return !refuse;
        });
        CHECK(asked == (len ? 1 : 0));
        CHECK(wrote != refuse);
        if (refuse) {
          CHECK(data.allocated_blocks() == before);
          break;  // the size and every byte are checked below against the unchanged model
        }
        CHECK(data.allocated_blocks() == before + needed);
        if (model.size() < off + len) model.resize(off + len);
        std::memcpy(model.data() + off, buf.data(), len);
        break;
      }
      case 2: {  // truncate
        const std::size_t to = rng() % span;
        data.truncate(off_t(to));
        model.resize(to);
        break;
      }
      case 3:  // punch a hole (never changes the size)
        data.punch_hole(off, len);
        if (std::size_t(off) < model.size())
          std::memset(model.data() + off, 0, std::min(len, model.size() - std::size_t(off)));
        break;
      case 4: {  // zero a range, keeping the size or growing to its end
        const bool keep_size = rng() % 2;
        data.zero_range(off, len, keep_size);
        if (std::size_t(off) < model.size())
          std::memset(model.data() + off, 0, std::min(len, model.size() - std::size_t(off)));
        if (!keep_size && len && model.size() < off + len) model.resize(off + len);
        break;
      }
      case 5: {  // SEEK_DATA/SEEK_HOLE agree with the bytes: no data is inside a hole
        if (std::size_t(off) >= model.size()) {
          CHECK(!data.seek_data(off));
          CHECK(!data.seek_hole(off));
          break;
        }
        const auto hole = data.seek_hole(off);
        REQUIRE(hole);
        CHECK(*hole >= off);
        CHECK(std::size_t(*hole) <= model.size());
        if (const auto at = data.seek_data(off)) {
          CHECK(*at >= off);
          for (off_t i = off; i < *at; ++i) REQUIRE(model[std::size_t(i)] == std::byte(0));
        } else {
          for (std::size_t i = std::size_t(off); i < model.size(); ++i) REQUIRE(model[i] == std::byte(0));
        }
        break;
      }
    }
    REQUIRE(data.size() == off_t(model.size()));
    // A read of a random range, past the end too.
    const off_t at = off_t(rng() % (span + 8192));
    buf.assign(rng() % 20000, std::byte(0xee));
    const std::size_t n = data.read(at, buf);
    const std::size_t expect = std::size_t(at) < model.size() ? std::min(buf.size(), model.size() - std::size_t(at)) : 0;
    REQUIRE(n == expect);
    if (n) REQUIRE(std::memcmp(buf.data(), model.data() + at, n) == 0);
  }
  // The blocks taken are those that hold data or were reserved: at most the
  // file's blocks, and a fully written file has all of them.
  CHECK(data.allocated_blocks() <= (model.size() + file_data::block_size - 1) / file_data::block_size);
  data.truncate(0);
  CHECK(data.allocated_blocks() == 0);
}

TEST_CASE("a write into a 2^63-byte file's last block, and the file cut back") {
  file_data data;
  const off_t last_block = file_data::max_size - (file_data::max_size % file_data::block_size);
  const std::byte byte{0x5a};
  REQUIRE(file_data::fits(file_data::max_size - 1, 1));
  data.write(file_data::max_size - 1, std::span(&byte, 1));
  CHECK(data.size() == file_data::max_size);
  CHECK(data.allocated_blocks() == 1);
  CHECK(data.seek_data(0) == last_block);
  CHECK(data.seek_hole(last_block) == file_data::max_size);
  std::byte got{};
  CHECK(data.read(file_data::max_size - 1, std::span(&got, 1)) == 1);
  CHECK(got == byte);
  CHECK(data.blocks_needed(0, 8192) == 2);
  data.truncate(4096);
  CHECK(data.allocated_blocks() == 0);
  CHECK(data.size() == 4096);
}
