// memfs mounted for real: after an O_DIRECT write has completed, a buffered
// read of the range returns the new bytes, also while other threads keep
// reading the file through the page cache and when the write was
// asynchronous (io_uring), for which the kernel itself drops no cached pages
// after the write (fuse_aio_complete). And a file used only with O_DIRECT
// pays nothing for that.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "examples/memfs_fs.hpp"
#include "tests/support/memfs_mount.hpp"
#include "tests/support/wire.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

constexpr std::size_t file_size = 1 << 20;
constexpr std::size_t chunk = 16384;

struct aligned {
  std::unique_ptr<char, decltype(&std::free)> p{nullptr, &std::free};
  explicit aligned(std::size_t n) {
    void* m = nullptr;
    REQUIRE(::posix_memalign(&m, 4096, n) == 0);
    p.reset(static_cast<char*>(m));
  }
  char* get() const { return p.get(); }
};

enum class how { io_uring, pwrite };

// `rounds` direct writes of a new pattern at random places, each checked
// with a buffered read of the range once the write completed, while two
// threads keep reading the whole file through the page cache. Returns how
// many checks saw old bytes.
int stale_reads(const std::string& p, how way, int rounds) {
  {
    aligned init(file_size);
    std::memset(init.get(), 'A', file_size);
    const int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, init.get(), file_size) == ssize_t(file_size));
    ::close(fd);
  }
  const int buffered = ::open(p.c_str(), O_RDONLY);
  const int direct = ::open(p.c_str(), O_WRONLY | O_DIRECT);
  REQUIRE(buffered >= 0);
  REQUIRE(direct >= 0);
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&] {
      const int fd = ::open(p.c_str(), O_RDONLY);
      std::vector<char> buf(4096);
      while (!stop)
        for (off_t o = 0; o < off_t(file_size) && !stop; o += 4096) (void)!::pread(fd, buf.data(), buf.size(), o);
      ::close(fd);
    });
  io_uring ring{};
  REQUIRE(::io_uring_queue_init(4, &ring, 0) == 0);
  aligned data(chunk);
  std::vector<char> back(chunk);
  int stale = 0;
  unsigned seed = 17;
  for (int round = 0; round < rounds; ++round) {
    const char c = char('B' + round % 20);
    const off_t off = off_t(::rand_r(&seed) % ((file_size - chunk) / 4096)) * 4096;
    (void)!::pread(buffered, back.data(), chunk, off);  // the old bytes, in the cache
    std::memset(data.get(), c, chunk);
    if (way == how::io_uring) {
      io_uring_sqe* sqe = ::io_uring_get_sqe(&ring);
      ::io_uring_prep_write(sqe, direct, data.get(), chunk, off);
      REQUIRE(::io_uring_submit(&ring) == 1);
      io_uring_cqe* cqe = nullptr;
      REQUIRE(::io_uring_wait_cqe(&ring, &cqe) == 0);
      REQUIRE(cqe->res == int(chunk));
      ::io_uring_cqe_seen(&ring, cqe);
    } else {
      REQUIRE(::pwrite(direct, data.get(), chunk, off) == ssize_t(chunk));
    }
    REQUIRE(::pread(buffered, back.data(), chunk, off) == ssize_t(chunk));
    if (std::memcmp(back.data(), data.get(), chunk) != 0) ++stale;
  }
  stop = true;
  for (auto& t : readers) t.join();
  ::io_uring_queue_exit(&ring);
  ::close(buffered);
  ::close(direct);
  return stale;
}

}  // namespace

TEST_CASE("a buffered read after a completed O_DIRECT write sees the new bytes, while others read through the cache") {
  memfs_mount m;
  SUBCASE("asynchronous writes (io_uring)") { CHECK(stale_reads(m.path("f"), how::io_uring, 2000) == 0); }
  SUBCASE("synchronous writes (pwrite)") { CHECK(stale_reads(m.path("f"), how::pwrite, 1000) == 0); }
  CHECK(m.fs.counts().cache_drops.load() > 0);
}

TEST_CASE("a file written only with O_DIRECT has no cache to drop: at most one drop") {
  memfs_mount m;
  const std::string p = m.path("direct-only");
  const int fd = ::open(p.c_str(), O_CREAT | O_RDWR | O_DIRECT, 0644);
  REQUIRE(fd >= 0);
  aligned data(4096);
  std::memset(data.get(), 'd', 4096);
  for (int i = 0; i < 200; ++i) REQUIRE(::pwrite(fd, data.get(), 4096, off_t(i % 50) * 4096) == 4096);
  for (int i = 0; i < 200; ++i) REQUIRE(::pread(fd, data.get(), 4096, off_t(i % 50) * 4096) == 4096);
  for (int i = 0; i < 200; ++i) REQUIRE(::pwrite(fd, data.get(), 4096, off_t(i % 50) * 4096) == 4096);
  CHECK(m.fs.counts().cache_drops.load() == 0);
  // One buffered read, then direct writes: one drop, then none.
  const int b = ::open(p.c_str(), O_RDONLY);
  REQUIRE(::posix_fadvise(b, 0, 0, POSIX_FADV_RANDOM) == 0);  // one page, no readahead still in flight
  char c;
  REQUIRE(::pread(b, &c, 1, 0) == 1);
  ::close(b);
  for (int i = 0; i < 50; ++i) REQUIRE(::pwrite(fd, data.get(), 4096, off_t(i) * 4096) == 4096);
  CHECK(m.fs.counts().cache_drops.load() == 1);
  ::close(fd);
}

// Two O_DIRECT writers of one file run in parallel only if the open is
// FOPEN_DIRECT_IO as well as FOPEN_PARALLEL_DIRECT_WRITES: the kernel's plain
// O_DIRECT path takes the inode lock for each write (fuse_cache_write_iter),
// only the direct_io path may share it (fuse_direct_write_iter).
TEST_CASE("an O_DIRECT open is direct_io with parallel direct writes; a buffered one is neither") {
  harness<memfs_fs> h;
  REQUIRE(h.init().error() == 0);
  auto open_flags = [&](const char* name, int flags) {
    auto r = h.call(proto::opcode::create, 1,
                    wire{}.add(proto::create_in{.flags = std::uint32_t(flags), .mode = S_IFREG | 0644, .umask = 022}).name(name));
    REQUIRE(r.error() == 0);
    REQUIRE(r.payload.size() == sizeof(proto::entry_out) + sizeof(proto::open_out));
    proto::open_out o;
    std::memcpy(&o, r.payload.data() + sizeof(proto::entry_out), sizeof o);
    return o.open_flags;
  };
  const auto direct = open_flags("d", O_RDWR | O_DIRECT);
  CHECK((direct & proto::fopen::direct_io) != 0);
  CHECK((direct & proto::fopen::parallel_direct_writes) != 0);
  const auto buffered = open_flags("b", O_RDWR);
  CHECK((buffered & proto::fopen::direct_io) == 0);
  CHECK((buffered & proto::fopen::parallel_direct_writes) == 0);
}

// What FOPEN_DIRECT_IO would take away without direct_io_allow_mmap: a shared
// writable mapping of a file opened O_DIRECT (the kernel refuses it, ENODEV).
TEST_CASE("a file opened O_DIRECT can still be mapped shared and written through the mapping") {
  memfs_mount m;
  const int fd = ::open(m.path("mapped").c_str(), O_CREAT | O_RDWR | O_DIRECT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 4096) == 0);
  void* map = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE_MESSAGE(map != MAP_FAILED, std::strerror(errno));
  std::memset(map, 'm', 4096);
  REQUIRE(::msync(map, 4096, MS_SYNC) == 0);
  ::munmap(map, 4096);
  aligned back(4096);
  REQUIRE(::pread(fd, back.get(), 4096, 0) == 4096);
  CHECK(std::string(back.get(), 4096) == std::string(4096, 'm'));
  ::close(fd);
}
