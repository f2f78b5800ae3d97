// memfs mounted for real, at the edges of the offset range: writes, reads,
// fallocate, truncation, SEEK_DATA/SEEK_HOLE and copy_file_range near 2^63
// (the largest file offset) answer exactly as on a fresh tmpfs, and the
// server lives on; huge sparse ranges cost only what their blocks cost.
// (A write at 2^63 - 4096 used to kill the server: the end of the last
// block, 2^63, does not fit in off_t.)
#include <doctest/doctest.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>
#include <string>
#include <vector>

#include "examples/memfs_fs.hpp"
#include "tests/support/diff_run.hpp"
#include "tests/support/edges.hpp"
#include "tests/support/memfs_mount.hpp"

using namespace fusexx;
using namespace fusexx::testing;

TEST_CASE("memfs: near the largest offset every file operation answers as on tmpfs") {
  memfs_mount m;
  tmpfs_dir reference;
  REQUIRE_MESSAGE(reference.mounted, "cannot mount a tmpfs: " << std::strerror(errno));
  const edge_results got = offset_edges(m.path());
  const edge_results want = offset_edges(reference.path());
  REQUIRE(got.lines.size() == want.lines.size());
  for (std::size_t i = 0; i < got.lines.size(); ++i) CHECK(got.lines[i] == want.lines[i]);
  // The last lines are a stat and an unlink after everything else: the
  // server answered them, so it is alive.
  CHECK(got.lines.back() == "unlink(big) -> 0");
  // Seeks in the last two pages, where tmpfs's own answers are wrong (see
  // tests/support/edges.hpp): the data written there is found, and the hole
  // is the end of the file. Before the fallocates, both last pages hold data
  // and the size is 2^63 - 1; after them, only the last page (allocated
  // twice: written zeros).
  const std::string end = std::to_string(largest_offset);
  auto at = [](off_t off) { return std::to_string(off); };
  const std::vector<std::string> end_seeks{
      "lseek(@" + at(last_page - 4096) + ", DATA) -> " + at(last_page - 4096),
      "lseek(@" + at(last_page - 4096) + ", HOLE) -> " + end,
      "lseek(@" + at(last_page + 10) + ", DATA) -> " + at(last_page + 10),
      "lseek(@" + at(last_page + 10) + ", HOLE) -> " + end,
      "lseek(@" + at(largest_offset - 1) + ", DATA) -> " + at(largest_offset - 1),
      "lseek(@" + at(largest_offset - 1) + ", HOLE) -> " + end,
      "lseek(@" + at(last_page) + ", DATA) -> " + at(last_page),
      "lseek(@" + at(last_page) + ", HOLE) -> " + end,
  };
  REQUIRE(got.end_seeks.size() == end_seeks.size());
  for (std::size_t i = 0; i < end_seeks.size(); ++i) CHECK(got.end_seeks[i] == end_seeks[i]);
  CHECK(m.fs.forget_errors() == 0);
}

TEST_CASE("memfs: a huge sparse range costs what its blocks cost") {
  memfs_mount m("size=1m");
  const std::string p = m.path("sparse");
  const int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, off_t(1) << 62) == 0);
  REQUIRE(::pwrite(fd, "data", 4, off_t(1) << 61) == 4);
  const auto used = m.fs.used_blocks();
  CHECK(used == 1);
  const int out = ::open(m.path("out").c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(out >= 0);
  // The copy of 2^62 bytes is cut to what one call may move (2 GiB), which
  // does not fit in 1 MiB: ENOSPC at once, nothing allocated.
  loff_t in = 0, to = 0;
  CHECK(err(::copy_file_range(fd, &in, out, &to, std::size_t(1) << 62, 0)) == ENOSPC);
  CHECK(m.fs.used_blocks() == used);
  // A copy that fits is made, holes and all (zeros where the source has none).
  in = (off_t(1) << 61) - 10;
  to = 0;
  CHECK(::copy_file_range(fd, &in, out, &to, 100, 0) == 100);
  char back[100];
  REQUIRE(::pread(out, back, 100, 0) == 100);
  CHECK(std::string(back, 14) == std::string(10, '\0') + "data");
  // fallocate of the whole offset range: ENOSPC, without walking 2^51 blocks.
  CHECK(err(::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, largest_offset)) == ENOSPC);
  CHECK(err(::fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, largest_offset)) == ENOSPC);
  // Punching it all is fine, and frees the data block.
  CHECK(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, largest_offset) == 0);
  CHECK(m.fs.used_blocks() == 1);  // out's one block
  CHECK(::lseek(fd, 0, SEEK_HOLE) == 0);
  CHECK(err(::lseek(fd, 0, SEEK_DATA)) == ENXIO);
  ::close(fd);
  ::close(out);
}

// memfs's file bytes (examples/memfs/file_data.hpp) against the plainest
// model: a vector of bytes and a set of blocks that take space. Random
// writes (within a block, across several, whole blocks, into holes and over
// data), truncations, punched holes, reservations and zeroed ranges; after
// each, every byte read back, the size and the blocks in use must agree —
// and a write whose blocks the limit refuses changes nothing.
TEST_CASE("memfs file data: random writes, truncates, holes and reservations read back as a flat model does") {
  using memfs::file_data;
  constexpr std::size_t span = 200 * 4096;  // the model covers offsets below this (200 blocks)
  std::mt19937_64 random(20261201);
  for (int round = 0; round < 40; ++round) {
    file_data d;
    std::vector<std::byte> model;
    std::vector<bool> taken(span / 4096);  // blocks that take space
    auto count_taken = [&] { return std::uint64_t(std::count(taken.begin(), taken.end(), true)); };
    for (int op = 0; op < 200; ++op) {
      const std::size_t off = random() % span;
      std::size_t len = std::min<std::size_t>(span - off, random() % 3 == 0 ? random() % (9 * 4096) : random() % 600);
      if (random() % 4 == 0) len = std::min<std::size_t>(span - off, 4096 * (1 + random() % 5));  // whole-ish blocks
      if (random() % 10 == 0) len = std::min<std::size_t>(span - off, random() % (80 * 4096));  // long ranges
      const unsigned kind = random() % 10;
      if (kind < 5) {  // write, sometimes refused by the limit
        std::vector<std::byte> data(len);
        for (auto& b : data) b = std::byte(random() % 255 + 1);
        const bool refuse = random() % 8 == 0;
        std::uint64_t asked = ~0ull;
        const bool done = d.write(off_t(off), data, [&](std::uint64_t n) {
          asked = n;
          return !refuse;
        });
        if (len > 0) {
          std::uint64_t adds = 0;
          for (std::size_t b = off / 4096; b <= (off + len - 1) / 4096; ++b) adds += !taken[b];
          CHECK(asked == adds);
        }
        CHECK(done == (!refuse || len == 0));
        if (done) {
          if (model.size() < off + len) model.resize(off + len);
          std::copy(data.begin(), data.end(), model.begin() + std::ptrdiff_t(off));
          for (std::size_t b = off / 4096; len > 0 && b <= (off + len - 1) / 4096; ++b) taken[b] = true;
        }
      } else if (kind == 5) {  // truncate
        d.truncate(off_t(off));
        if (off < model.size())  // shrinking drops the blocks past the end (growing keeps reserved ones there)
          for (std::size_t b = (off + 4095) / 4096; b < taken.size(); ++b) taken[b] = false;
        model.resize(off);
      } else if (kind == 6) {  // punch a hole
        d.punch_hole(off_t(off), len);
        const std::size_t end = std::min(off + len, model.size());
        if (off < end) std::fill(model.begin() + std::ptrdiff_t(off), model.begin() + std::ptrdiff_t(end), std::byte{0});
        for (std::size_t b = (off + 4095) / 4096; (b + 1) * 4096 <= off + len; ++b) taken[b] = false;
      } else if (kind == 7 && len > 0) {  // reserve (fallocate), growing the size
        d.reserve(off_t(off), len, /*keep_size=*/false);
        if (model.size() < off + len) model.resize(off + len);
        for (std::size_t b = off / 4096; b <= (off + len - 1) / 4096; ++b) taken[b] = true;
      } else if (kind == 8 && len > 0) {  // zero a range, keeping its space
        d.zero_range(off_t(off), len, /*keep_size=*/true);
        const std::size_t end = std::min(off + len, model.size());
        if (off < end) std::fill(model.begin() + std::ptrdiff_t(off), model.begin() + std::ptrdiff_t(end), std::byte{0});
        for (std::size_t b = off / 4096; b <= (off + len - 1) / 4096; ++b) taken[b] = true;
      }
      REQUIRE(d.size() == off_t(model.size()));
      REQUIRE(d.allocated_blocks() == count_taken());
      // Read back from a random start with a buffer full of junk: every
      // byte must be the model's (zeros in holes), none left as it was.
      const std::size_t at = model.empty() ? 0 : random() % (model.size() + 1);
      std::vector<std::byte> back(random() % (12 * 4096) + 1, std::byte{0xEE});
      const std::size_t n = d.read(off_t(at), back);
      REQUIRE(n == std::min(back.size(), model.size() - std::min(at, model.size())));
      for (std::size_t k = 0; k < n; ++k)
        if (back[k] != model[at + k]) FAIL("byte " << at + k << " read back wrong in round " << round << ", op " << op);
      // SEEK_DATA and SEEK_HOLE from there: every byte before the answer is
      // in a hole (zeros) or in data, as asked; the hole is at a block
      // boundary or the end of the file.
      if (const auto data = d.seek_data(off_t(at))) {
        REQUIRE(*data >= off_t(at));
        REQUIRE(*data < d.size());
        for (std::size_t k = at; k < std::size_t(*data); ++k)
          if (model[k] != std::byte{0}) FAIL("SEEK_DATA skipped data at " << k << " in round " << round << ", op " << op);
      } else if (at < model.size()) {
        for (std::size_t k = at; k < model.size(); ++k)
          if (model[k] != std::byte{0}) FAIL("SEEK_DATA found no data, but " << k << " holds some, round " << round);
      }
      if (const auto hole = d.seek_hole(off_t(at))) {
        REQUIRE(*hole >= off_t(at));
        REQUIRE(*hole <= d.size());
        CHECK((*hole == d.size() || *hole % 4096 == 0 || *hole == off_t(at)));
      }
    }
    // A snapshot of the file (a handover) restores the same bytes and space.
    fusexx::snapshot_writer w;
    d.save(w);
    auto r = fusexx::snapshot_reader::from_bytes(w.seal_to_bytes());
    REQUIRE(r);
    file_data back;
    REQUIRE(back.restore(*r));
    CHECK(back.size() == d.size());
    CHECK(back.allocated_blocks() == d.allocated_blocks());
    std::vector<std::byte> all(model.size()), again(model.size());
    CHECK(d.read(0, all) == model.size());
    CHECK(back.read(0, again) == model.size());
    CHECK(all == again);
    CHECK(std::equal(all.begin(), all.end(), model.begin(), model.end()));
    for (off_t at = 0; at < d.size(); at += 4096 * 7) {
      CHECK(back.seek_data(at) == d.seek_data(at));
      CHECK(back.seek_hole(at) == d.seek_hole(at));
    }
  }
}
