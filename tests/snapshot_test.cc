// The snapshot format (fusexx/restart/snapshot.hpp): what a writer seals a
// reader reads back, value for value; and every way a snapshot can be wrong
// is an error with a reason, never a wrong value or a read out of bounds.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <fusexx/fusexx.hpp>

using namespace fusexx;

namespace {

snapshot_writer sample() {
  snapshot_writer w;
  w.u8(0xab);
  w.u16(0xbeef);
  w.u32(0xdeadbeef);
  w.u64(0x0123456789abcdefull);
  w.i64(-42);
  w.boolean(true);
  w.str("hello");
  w.str(std::string(100000, 'x'));  // larger than a socket buffer
  return w;
}

std::vector<std::byte> bytes_of(int fd) {
  std::vector<std::byte> out(static_cast<std::size_t>(::lseek(fd, 0, SEEK_END)));
  REQUIRE(::pread(fd, out.data(), out.size(), 0) == ssize_t(out.size()));
  return out;
}

std::string refusal(std::vector<std::byte> b) {
  auto r = snapshot_reader::from_bytes(std::move(b));
  REQUIRE_FALSE(r);
  return r.error().message;
}

void reseal_checksum(std::vector<std::byte>& b) {
  detail::put_le<std::uint32_t>(b.data() + 24, detail::crc32c(std::span(b).subspan(32)));
}

}  // namespace

TEST_CASE("the checksum is CRC-32C, the same with and without the CPU's instruction") {
  const std::string check = "123456789";  // the standard check value of CRC-32C is 0xE3069283
  CHECK(detail::crc32c(std::as_bytes(std::span(check))) == 0xE3069283u);
  CHECK(detail::crc32c_portable(std::as_bytes(std::span(check)), 0) == 0xE3069283u);
  std::vector<std::byte> odd(1000 + 5);
  for (std::size_t i = 0; i < odd.size(); ++i) odd[i] = static_cast<std::byte>(i * 7 + 3);
  CHECK(detail::crc32c(odd) == detail::crc32c_portable(odd, 0));
  CHECK(detail::crc32c(std::span(odd).subspan(3)) == detail::crc32c_portable(std::span(odd).subspan(3), 0));
}

TEST_CASE("a sealed snapshot reads back value for value, and cannot be changed") {
  auto fd = sample().seal();
  REQUIRE_MESSAGE(fd, fd.error().message);
  const int seals = ::fcntl(fd->get(), F_GET_SEALS);
  CHECK((seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) ==
        (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
  CHECK(::pwrite(fd->get(), "x", 1, 40) == -1);
  CHECK(errno == EPERM);

  auto r = snapshot_reader::open(fd->get());
  REQUIRE_MESSAGE(r, r.error().message);
  std::uint8_t a = 0;
  std::uint16_t b = 0;
  std::uint32_t c = 0;
  std::uint64_t d = 0;
  std::int64_t e = 0;
  bool f = false;
  std::string g, h;
  REQUIRE((r->u8(a) && r->u16(b) && r->u32(c) && r->u64(d) && r->i64(e) && r->boolean(f) && r->str(g) && r->str(h)));
  CHECK(a == 0xab);
  CHECK(b == 0xbeef);
  CHECK(c == 0xdeadbeef);
  CHECK(d == 0x0123456789abcdefull);
  CHECK(e == -42);
  CHECK(f);
  CHECK(g == "hello");
  CHECK(h == std::string(100000, 'x'));
  CHECK(r->left() == 0);
  CHECK(r->ok());
  // Reading on past the end fails, and the reader stays failed.
  CHECK_FALSE(r->u8(a));
  CHECK_FALSE(r->ok());
}

TEST_CASE("a wrong snapshot is refused with its reason") {
  const auto good = sample().seal_to_bytes();
  REQUIRE(snapshot_reader::from_bytes(good));

  SUBCASE("not a snapshot") {
    auto b = good;
    b[0] = std::byte{'F'};
    CHECK(refusal(b).find("bad magic") != std::string::npos);
    CHECK(refusal({}).find("bad magic") != std::string::npos);
  }
  SUBCASE("one byte of the payload changed") {
    auto b = good;
    b[1000] ^= std::byte{1};
    CHECK(refusal(b).find("checksum does not match") != std::string::npos);
  }
  SUBCASE("cut short") {
    auto b = good;
    b.resize(b.size() - 1);
    CHECK(refusal(b).find("truncated") != std::string::npos);
  }
  SUBCASE("a newer format, checked before anything else") {
    auto b = good;
    detail::put_le<std::uint32_t>(b.data() + 8, snapshot_format_version + 1);
    b[1000] ^= std::byte{1};
    const std::string why = refusal(b);
    CHECK(why.find("newer than this fusexx reads") != std::string::npos);
    auto r = snapshot_reader::from_bytes(b);
    CHECK(r.error().code.value() == EPROTO);
  }
  SUBCASE("a string longer than what is left") {
    snapshot_writer w;
    w.u64(1u << 30);  // read as a string's length
    auto r = snapshot_reader::from_bytes(w.seal_to_bytes());
    REQUIRE(r);
    std::string s;
    CHECK_FALSE(r->str(s));
    CHECK_FALSE(r->ok());
  }
  SUBCASE("a count the rest could not hold") {
    snapshot_writer w;
    w.u64(1000);
    w.u64(7);
    auto r = snapshot_reader::from_bytes(w.seal_to_bytes());
    REQUIRE(r);
    std::uint64_t n = 0;
    CHECK_FALSE(r->count(n, 8));
  }
  SUBCASE("a boolean that is neither 0 nor 1") {
    snapshot_writer w;
    w.u8(2);
    auto b = w.seal_to_bytes();
    auto r = snapshot_reader::from_bytes(b);
    REQUIRE(r);
    bool v = false;
    CHECK_FALSE(r->boolean(v));
  }
  SUBCASE("a corrupt length with a matching checksum") {
    auto b = good;
    detail::put_le<std::uint64_t>(b.data() + 16, b.size());  // more than is there
    reseal_checksum(b);
    CHECK(refusal(b).find("truncated") != std::string::npos);
  }
}

TEST_CASE("a snapshot in a memfd is not bounded by a socket buffer") {
  snapshot_writer w;
  std::string big(8u << 20, 'z');
  w.str(big);
  auto fd = w.seal();
  REQUIRE(fd);
  CHECK(bytes_of(fd->get()).size() == 32 + 8 + big.size());
  auto r = snapshot_reader::open(fd->get());
  REQUIRE(r);
  std::string back;
  REQUIRE(r->str(back));
  CHECK(back == big);
}

TEST_CASE("a snapshot built in its memfd is the one built in memory, past its first guess of the size, and seals once") {
  // Room for 4 KiB at first; 3 MiB are written, so the memfd and its
  // mapping grow several times over, and pages are allocated a stretch at a time.
  snapshot_writer in_memory;
  snapshot_writer in_memfd = snapshot_writer::in_memfd(4096);
  std::string block(4096, 'a');
  for (int i = 0; i < 768; ++i) {
    block[static_cast<std::size_t>(i) % block.size()] = static_cast<char>('a' + i % 26);
    for (snapshot_writer* w : {&in_memory, &in_memfd}) {
      w->u32(static_cast<std::uint32_t>(i));
      w->str(block);
    }
  }
  CHECK(in_memfd.size() == in_memory.size());
  const auto expected = in_memory.seal_to_bytes();
  CHECK(in_memfd.seal_to_bytes() == expected);
  auto fd = in_memfd.seal();
  REQUIRE_MESSAGE(fd, fd.error().message);
  CHECK(bytes_of(fd->get()) == expected);
  CHECK((::fcntl(fd->get(), F_GET_SEALS) & F_SEAL_WRITE) != 0);
  auto r = snapshot_reader::open(fd->get());
  REQUIRE_MESSAGE(r, r.error().message);
  std::uint32_t first = 1;
  CHECK(r->u32(first));
  CHECK(first == 0);
  auto again = in_memfd.seal();
  REQUIRE_FALSE(again);
  CHECK(again.error().message.find("sealed already") != std::string::npos);
}

TEST_CASE("open files go beside a snapshot: each by its index, handed out once, a missing one fails the reader") {
  int p[2];
  REQUIRE(::pipe(p) == 0);
  const int extra = ::dup(p[0]);
  REQUIRE(extra >= 0);
  snapshot_writer w;
  w.str("before");
  w.fd(p[0]);
  w.fd(p[1]);
  w.u32(7);
  w.fd(extra);
  REQUIRE(w.fds() == std::vector<int>{p[0], p[1], extra});
  auto memfd = w.seal();
  REQUIRE(memfd);
  // What arrives beside it: fresh descriptions of the same files, as SCM_RIGHTS gives.
  auto arrived = [&] {
    std::vector<unique_fd> fds;
    for (int fd : w.fds()) fds.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    return fds;
  };
  SUBCASE("all there") {
    auto r = snapshot_reader::open(memfd->get());
    REQUIRE(r);
    r->attach_fds(arrived());
    std::string s;
    unique_fd read_end, write_end, third;
    std::uint32_t v = 0;
    REQUIRE((r->str(s) && r->fd(read_end) && r->fd(write_end) && r->u32(v) && r->fd(third)));
    CHECK(r->ok());
    CHECK(r->fds_left() == 0);
    CHECK(v == 7);
    // They are the same pipe: what goes in one end comes out of the other.
    REQUIRE(::write(write_end.get(), "x", 1) == 1);
    char c = 0;
    CHECK(::read(read_end.get(), &c, 1) == 1);
    CHECK(c == 'x');
  }
  SUBCASE("one lost on the way") {
    auto r = snapshot_reader::open(memfd->get());
    REQUIRE(r);
    auto fds = arrived();
    fds[1].reset();
    r->attach_fds(std::move(fds));
    std::string s;
    unique_fd a, b;
    CHECK(r->str(s));
    CHECK(r->fd(a));
    CHECK_FALSE(r->fd(b));
    CHECK_FALSE(r->ok());
  }
  SUBCASE("fewer arrived than the snapshot names") {
    auto r = snapshot_reader::open(memfd->get());
    REQUIRE(r);
    auto fds = arrived();
    fds.pop_back();
    r->attach_fds(std::move(fds));
    std::string s;
    unique_fd a, b, c;
    std::uint32_t v = 0;
    CHECK((r->str(s) && r->fd(a) && r->fd(b) && r->u32(v)));
    CHECK_FALSE(r->fd(c));
    CHECK_FALSE(r->ok());
  }
  ::close(p[0]);
  ::close(p[1]);
  ::close(extra);
}
