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
