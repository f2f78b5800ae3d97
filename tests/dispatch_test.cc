// The dispatcher, driven with byte buffers shaped exactly as the kernel sends
// them: decoding, length checks, ENOSYS, INIT negotiation, coroutine handlers.
#include <doctest/doctest.h>

#include <coroutine>
#include <stdexcept>
#include <thread>

#include <fusexx/fusexx.hpp>

#include "tests/support/wire.hpp"

using namespace fusexx;
using fusexx::testing::harness;
using fusexx::testing::wire;
using op = fusexx::proto::opcode;

namespace {

// Lets a test hold a coroutine handler suspended and resume it elsewhere.
struct gate {
  std::coroutine_handle<> waiting;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept { waiting = h; }
  void await_resume() const noexcept {}
};

// Resumes the coroutine on another thread and waits for that thread, all
// inside await_suspend: the handler has finished, on another thread, before
// the dispatcher gets its first resume back (the race the detached frame's
// atomic exchange settles). Nothing of the frame is touched after the join:
// the frame may be gone by then.
struct finish_elsewhere {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) const { std::thread([h] { h.resume(); }).join(); }
  void await_resume() const noexcept {}
};

struct test_fs : filesystem_base<test_fs> {
  int init_errno = 0;
  bool init_throws = false;
  std::uint32_t max_write = 0;
  std::vector<std::pair<ino, std::uint64_t>> forgotten;
  bool destroyed = false;
  gate write_gate;
  std::uint64_t last_uid = 0;

  result<void> init(connection& c) {
    if (init_throws) throw std::runtime_error("no backing store");
    if (init_errno) return error(init_errno);
    if (max_write) c.max_write = max_write;
    return {};
  }
  void destroy() { destroyed = true; }
  void forget(ino i, std::uint64_t n) { forgotten.emplace_back(i, n); }

  result<entry> lookup(request& r, ino parent, std::string_view name) {
    last_uid = r.uid();
    if (parent == root_ino && name == "a") {
      entry e{.node = 2, .generation = 7};
      e.st.st_ino = 2;
      e.st.st_mode = S_IFREG | 0644;
      e.st.st_size = 10;
      return e;
    }
    return error(ENOENT);
  }
  // The two-argument getattr form is accepted too.
  attr getattr(request&, ino i) {
    attr a;
    a.st.st_ino = i;
    a.st.st_mode = S_IFDIR | 0755;
    a.valid_for = std::chrono::milliseconds(1500);
    return a;
  }
  // A coroutine that finishes without suspending.
  task<opened> open(request&, ino, int flags) {
    if ((flags & O_ACCMODE) == O_WRONLY) co_return error(EACCES);
    co_return opened{.fh = 99, .direct_io = true};
  }
  result<std::size_t> read(request&, ino, fhandle fh, off_t off, std::span<std::byte> into) {
    if (fh != 99) return error(EBADF);
    for (std::size_t i = 0; i < into.size(); ++i) into[i] = std::byte('0' + (off + i) % 10);
    return into.size();
  }
  // A coroutine that suspends until the test opens the gate.
  task<std::size_t> write(request&, ino, fhandle, off_t, std::span<const std::byte> data, int) {
    co_await write_gate;
    if (data.size() == 3) throw std::runtime_error("three bytes are bad luck");
    co_return data.size();
  }
  // A coroutine that finishes on another thread before its first resume returns.
  task<void> fsync(request&, ino, fhandle fh, bool) {
    co_await finish_elsewhere{};
    if (fh != 99) co_return error(EBADF);
    co_return {};
  }
  result<void> release(request&, ino, fhandle, int) { throw std::logic_error("release exploded"); }
  result<void> readdir(request&, ino, fhandle, off_t off, dir_buffer& out) {
    const char* names[] = {".", "..", "alpha", "beta"};
    for (off_t i = off; i < 4; ++i)
      if (!out.add(names[i], static_cast<ino_t>(i + 1), i < 2 ? S_IFDIR : S_IFREG, i + 1)) break;
    return {};
  }
  result<std::string> getxattr(request&, ino, std::string_view name) {
    if (name == "user.colour") return std::string("blue");
    return error(ENODATA);
  }
};
static_assert(filesystem<test_fs>);

// Shape checking: a member named like an operation with the wrong parameters
// is not a filesystem (instead of silently answering ENOSYS).
struct wrong_shape : filesystem_base<wrong_shape> {
  result<entry> lookup(int not_a_request);
};
static_assert(!filesystem<wrong_shape>);
struct not_derived {};
static_assert(!filesystem<not_derived>);

proto::read_in read_args(std::uint64_t fh, std::uint64_t off, std::uint32_t size) {
  proto::read_in r{};
  r.fh = fh;
  r.offset = off;
  r.size = size;
  return r;
}

}  // namespace

TEST_CASE("INIT grants what the kernel offers and the filesystem wants") {
  harness<test_fs> h;
  auto r = h.init();
  REQUIRE(r.error() == 0);
  REQUIRE(r.payload.size() == sizeof(proto::init_out));
  auto out = r.as<proto::init_out>();
  CHECK(out.major == 7);
  CHECK(out.minor == 45);
  namespace f = proto::init_flag;
  const std::uint64_t granted = out.flags | (std::uint64_t{out.flags2} << 32);
  CHECK((granted & f::init_ext));          // needed for flags2 to count at all
  CHECK((granted & f::async_read));
  CHECK((granted & f::max_pages));
  CHECK_FALSE((granted & f::writeback_cache));  // never by default
  CHECK_FALSE((granted & f::do_readdirplus));   // test_fs has no readdirplus
  CHECK((granted & ~(std::uint64_t{0x73fffffb} | (std::uint64_t{0x7fd} << 32))) == 0);  // only offered bits
  CHECK(out.max_write == out.max_pages * connection::page_size());
  CHECK(out.max_readahead <= 131072);
  CHECK(out.time_gran == 1);
  CHECK(h.state.init().current() == session_phase::serving);
  CHECK(h.state.conn().request_buffer_size() >= 80 + out.max_write);
}

TEST_CASE("INIT honours a filesystem's smaller max_write") {
  harness<test_fs> h;
  h.fs.max_write = 64 * 1024;
  auto out = h.init().as<proto::init_out>();
  CHECK(out.max_write == 64 * 1024);
  CHECK(out.max_pages == 16);
}

TEST_CASE("INIT version rules") {
  SUBCASE("a newer major gets our version only, and INIT stays pending") {
    harness<test_fs> h;
    auto r = h.init(8, 1);
    CHECK(r.error() == 0);
    CHECK(r.as<proto::init_out>().major == 7);
    CHECK(r.as<proto::init_out>().max_write == 0);
    CHECK(h.state.init().current() == session_phase::waiting);
    CHECK(h.init(7, 45).error() == 0);
    CHECK(h.state.init().current() == session_phase::serving);
  }
  SUBCASE("an older major or a too-old minor is refused") {
    harness<test_fs> a;
    CHECK(a.init(6, 0).error() == EPROTO);
    harness<test_fs> b;
    CHECK(b.init(7, 11).error() == EPROTO);
    CHECK(b.state.init().current() == session_phase::failed);
  }
  SUBCASE("minor 22 gets the 24-byte reply") {
    harness<test_fs> h;
    auto r = h.init(7, 22);
    CHECK(r.error() == 0);
    CHECK(r.payload.size() == proto::init_out_compat_size_v7_22);
  }
  SUBCASE("a second INIT is refused") {
    harness<test_fs> h;
    h.init();
    CHECK(h.init().error() == EPROTO);
  }
}

TEST_CASE("init() errors become the INIT reply's error") {
  harness<test_fs> h;
  h.fs.init_errno = EHOSTDOWN;
  CHECK(h.init().error() == EHOSTDOWN);
  CHECK(h.state.init().current() == session_phase::failed);
  CHECK(h.state.init().error().value() == EHOSTDOWN);

  harness<test_fs> t;
  t.fs.init_throws = true;
  CHECK(t.init().error() == EIO);
  CHECK(t.state.init().current() == session_phase::failed);
}

TEST_CASE("requests before INIT are refused") {
  harness<test_fs> h;
  CHECK(h.call(op::getattr, 1, wire{}.add(proto::getattr_in{})).error() == EIO);
}

TEST_CASE("a request right after the INIT reply is served, even before the phase is serving") {
  // The kernel may send requests as soon as it has INIT's reply, while the
  // worker still runs after_init_reply (the io_uring transport starts its
  // queues there). Such a request was once refused with EIO.
  harness<test_fs> h;
  fusexx::testing::reply early;
  bool phase_was_serving = true;
  h.state.after_init_reply = [&](const connection&) {
    phase_was_serving = h.state.init().current() == session_phase::serving;
    buffer own(64 * 1024);
    const auto bytes = fusexx::testing::make_request(op::getattr, 40, 1, wire{}.add(proto::getattr_in{}));
    std::memcpy(own.data(), bytes.data(), bytes.size());
    detail::incoming in{.bytes = std::span<const std::byte>(own.data(), bytes.size()),
                .scratch = own.span().subspan(4096),
                .owner = &own,
                .sink = h.rec.sink()};
    h.d.handle(in);
    early = h.rec.last();
  };
  h.init();
  REQUIRE(h.rec.size() == 2);  // INIT's reply, then the early request's
  CHECK(h.rec.replies.front().error() == 0);
  CHECK_FALSE(phase_was_serving);
  CHECK(early.error() == 0);
  CHECK(h.state.init().current() == session_phase::serving);
}

TEST_CASE("lookup: found, not found, and the caller's identity") {
  harness<test_fs> h;
  h.init();
  auto r = h.call(op::lookup, 1, wire{}.name("a"));
  REQUIRE(r.error() == 0);
  REQUIRE(r.payload.size() == sizeof(proto::entry_out));
  auto e = r.as<proto::entry_out>();
  CHECK(e.nodeid == 2);
  CHECK(e.generation == 7);
  CHECK(e.attr.size == 10);
  CHECK(e.attr.mode == (S_IFREG | 0644));
  CHECK(e.entry_valid == 1);
  CHECK(h.fs.last_uid == 1000);
  CHECK(h.call(op::lookup, 1, wire{}.name("b")).error() == ENOENT);
}

TEST_CASE("malformed requests get EINVAL or EIO, never a read past the end") {
  harness<test_fs> h;
  h.init();
  SUBCASE("a name without its NUL") { CHECK(h.call(op::lookup, 1, wire{}.raw("abc")).error() == EINVAL); }
  SUBCASE("arguments cut short") {
    proto::getattr_in g{};
    auto body = wire{}.add(g);
    body.bytes.resize(7);
    CHECK(h.call(op::getattr, 1, body).error() == EINVAL);
    CHECK(h.call(op::read, 1, wire{}).error() == EINVAL);
    CHECK(h.call(op::write, 1, wire{}.add(proto::write_in{.size = 100})).error() == EINVAL);  // data missing
  }
  SUBCASE("a header that disagrees with the bytes delivered") {
    auto req = fusexx::testing::make_request(op::getattr, 50, 1, wire{}.add(proto::getattr_in{}));
    req.resize(req.size() - 4);  // header still claims the full length
    REQUIRE(h.feed(req) == 1);
    CHECK(h.rec.last().error() == EIO);
    CHECK(h.rec.last().header.unique == 50);
  }
  SUBCASE("extension length larger than the request") {
    auto req = fusexx::testing::make_request(op::lookup, 52, 1, wire{}.name("a"));
    reinterpret_cast<proto::in_header*>(req.data())->total_extlen = 200;
    REQUIRE(h.feed(req) == 1);
    CHECK(h.rec.last().error() == EIO);
  }
  SUBCASE("shorter than a header: dropped, there is nobody to answer") {
    std::vector<std::byte> stub(20, std::byte{1});
    CHECK(h.feed(stub) == 0);
    CHECK(h.state.counters().malformed.load() == 1);
  }
}

TEST_CASE("unknown opcodes and missing handlers answer ENOSYS") {
  harness<test_fs> h;
  h.init();
  CHECK(h.call(static_cast<op>(999), 1).error() == ENOSYS);
  CHECK(h.call(op::mkdir, 1, wire{}.add(proto::mkdir_in{}).name("d")).error() == ENOSYS);
  CHECK(h.call(op::readlink, 1).error() == ENOSYS);
  // opendir without a handler succeeds with handle 0, as libfuse does.
  auto r = h.call(op::opendir, 1, wire{}.add(proto::open_in{}));
  CHECK(r.error() == 0);
  CHECK(r.as<proto::open_out>().fh == 0);
  // statfs without a handler reports an empty filesystem rather than failing df.
  auto s = h.call(op::statfs, 1);
  CHECK(s.error() == 0);
  CHECK(s.as<proto::statfs_out>().st.namelen == 255);
}

TEST_CASE("getattr uses the two-argument form and encodes timeouts") {
  harness<test_fs> h;
  h.init();
  auto r = h.call(op::getattr, 5, wire{}.add(proto::getattr_in{}));
  REQUIRE(r.error() == 0);
  auto a = r.as<proto::attr_out>();
  CHECK(a.attr.ino == 5);
  CHECK(a.attr_valid == 1);
  CHECK(a.attr_valid_nsec == 500'000'000);
}

TEST_CASE("a coroutine handler that does not suspend replies at once") {
  harness<test_fs> h;
  h.init();
  auto r = h.call(op::open, 2, wire{}.add(proto::open_in{.flags = O_RDONLY}));
  REQUIRE(r.error() == 0);
  CHECK(r.as<proto::open_out>().fh == 99);
  CHECK(r.as<proto::open_out>().open_flags == proto::fopen::direct_io);
  CHECK(h.buf);  // the buffer came back to the transport
  CHECK(h.call(op::open, 2, wire{}.add(proto::open_in{.flags = O_WRONLY})).error() == EACCES);
}

TEST_CASE("a suspended coroutine handler keeps its buffer and replies when resumed on another thread") {
  harness<test_fs> h;
  h.init();
  std::size_t before = h.rec.size();
  proto::write_in w{};
  w.fh = 99;
  w.size = 5;
  REQUIRE(h.feed(fusexx::testing::make_request(op::write, 70, 2, wire{}.add(w).raw("hello"))) == 0);
  CHECK_FALSE(h.buf);  // taken over by the suspended request
  CHECK(h.state.counters().in_flight.load() == 1);

  // The transport goes on with a fresh buffer meanwhile.
  CHECK(h.call(op::lookup, 1, wire{}.name("a")).error() == 0);

  std::thread([&] { h.fs.write_gate.waiting.resume(); }).join();
  REQUIRE(h.rec.size() == before + 2);
  auto r = h.rec.last();
  CHECK(r.header.unique == 70);
  CHECK(r.error() == 0);
  CHECK(r.as<proto::write_out>().size == 5);
  CHECK(h.state.counters().in_flight.load() == 0);
}

TEST_CASE("a coroutine handler that finishes on another thread before the dispatcher looks gives its buffer back") {
  harness<test_fs> h;
  h.init();
  for (std::uint64_t fh : {99, 7}) {  // twice, and with an error: the frames come from the cache the second time
    proto::fsync_in f{};
    f.fh = fh;
    // Answered once, by the other thread, by the time handle() returns.
    REQUIRE(h.feed(fusexx::testing::make_request(op::fsync, 80 + fh, 2, wire{}.add(f))) == 1);
    CHECK(h.rec.last().header.unique == 80 + fh);
    CHECK(h.rec.last().error() == (fh == 99 ? 0 : EBADF));
    CHECK(h.buf);  // the dispatcher took it back: the frame is gone
    CHECK(h.state.counters().in_flight.load() == 0);
    CHECK(h.state.scope().size() == 0);
  }
}

TEST_CASE("coroutine frames: a freed frame serves the next of its size class, on any thread, a few per class") {
  using detail::frame_cache;
  if (!frame_cache::enabled) return;  // AddressSanitizer: every frame its own allocation
  void* a = frame_cache::allocate(200);
  const std::size_t kept = frame_cache::kept(200);
  frame_cache::deallocate(a, 200);
  CHECK(frame_cache::kept(200) == kept + 1);
  void* b = frame_cache::allocate(250);  // the same class (193..256 bytes): the same memory, warm
  CHECK(b == a);
  CHECK(frame_cache::kept(200) == kept);
  // Freed on another thread: kept there, not here, and given back when it ends.
  std::thread([&] {
    frame_cache::deallocate(b, 250);
    CHECK(frame_cache::kept(250) == 1);
  }).join();
  CHECK(frame_cache::kept(200) == kept);
  // No more than kept_per_class of a class; the rest go back to the allocator.
  std::vector<void*> many;
  for (std::size_t i = 0; i < frame_cache::kept_per_class + 8; ++i) many.push_back(frame_cache::allocate(100));
  for (void* p : many) frame_cache::deallocate(p, 100);
  CHECK(frame_cache::kept(100) == frame_cache::kept_per_class);
  // Larger than the largest class: straight to the allocator.
  const std::size_t big = frame_cache::granule * frame_cache::classes + 1;
  frame_cache::deallocate(frame_cache::allocate(big), big);
  CHECK(frame_cache::kept(big) == 0);
}

TEST_CASE("an exception escaping a handler becomes EIO") {
  harness<test_fs> h;
  h.init();
  CHECK(h.call(op::release, 2, wire{}.add(proto::release_in{})).error() == EIO);
  // ...also from a coroutine, after it suspended.
  proto::write_in w{};
  w.size = 3;
  h.feed(fusexx::testing::make_request(op::write, 80, 2, wire{}.add(w).raw("abc")));
  h.fs.write_gate.waiting.resume();
  CHECK(h.rec.last().header.unique == 80);
  CHECK(h.rec.last().error() == EIO);
}

TEST_CASE("read builds its data in place, clipped to the request") {
  harness<test_fs> h;
  h.init();
  auto r = h.call(op::read, 2, wire{}.add(read_args(99, 3, 5)));
  REQUIRE(r.error() == 0);
  CHECK(r.text() == "34567");
  CHECK(h.call(op::read, 2, wire{}.add(read_args(1, 0, 5))).error() == EBADF);
}

TEST_CASE("readdir packs aligned entries and resumes at the offset") {
  harness<test_fs> h;
  h.init();
  auto r = h.call(op::readdir, 1, wire{}.add(read_args(0, 0, 4096)));
  REQUIRE(r.error() == 0);
  std::vector<std::string> names;
  std::vector<std::uint64_t> offsets;
  std::size_t pos = 0;
  while (pos < r.payload.size()) {
    proto::dirent d;
    std::memcpy(&d, r.payload.data() + pos, sizeof d);
    names.emplace_back(reinterpret_cast<const char*>(r.payload.data() + pos + sizeof d), d.namelen);
    offsets.push_back(d.off);
    pos += proto::dirent_size(d.namelen);
  }
  CHECK(pos == r.payload.size());
  CHECK(names == std::vector<std::string>{".", "..", "alpha", "beta"});
  CHECK(offsets == std::vector<std::uint64_t>{1, 2, 3, 4});
  // A small buffer takes only what fits; the next call continues.
  auto part = h.call(op::readdir, 1, wire{}.add(read_args(0, 2, 40)));
  CHECK(part.payload.size() == proto::dirent_size(5));
}

// The reply buffer is reused from request to request: what dir_buffer does
// not write itself (the padding after a name, a plain entry's entry_out in a
// READDIRPLUS reply) must be zero, never an earlier reply's bytes.
TEST_CASE("dir_buffer: padding and entry-less direntplus records are zero, whatever the buffer held") {
  std::vector<std::byte> space(1024, std::byte{0xab});
  dir_buffer plain(space, false);
  REQUIRE(plain.add("abc", 7, S_IFREG, 1));
  REQUIRE(plain.size() == 32);  // 24 + 3, aligned to 8
  proto::dirent d;
  std::memcpy(&d, space.data(), sizeof d);
  CHECK(d.ino == 7);
  CHECK(d.off == 1);
  CHECK(d.namelen == 3);
  CHECK(d.type == (S_IFREG >> 12));
  CHECK(std::string(reinterpret_cast<const char*>(space.data()) + 24, 3) == "abc");
  for (std::size_t i = 27; i < 32; ++i) CHECK(space[i] == std::byte{0});
  CHECK(space[32] == std::byte{0xab});  // nothing written past the entry

  std::fill(space.begin(), space.end(), std::byte{0xab});
  dir_buffer plus(space, true);
  entry e;
  e.node = 42;
  e.st.st_ino = 42;
  e.st.st_mode = S_IFDIR | 0755;
  REQUIRE(plus.add("dir", e, 1));
  REQUIRE(plus.add("x", 9, S_IFREG, 2));  // no node: a plain entry, no lookup reference
  REQUIRE(plus.size() == 160 + 160);
  proto::entry_out first, second;
  std::memcpy(&first, space.data(), sizeof first);
  std::memcpy(&second, space.data() + 160, sizeof second);
  CHECK(first.nodeid == 42);
  CHECK(first.attr.mode == (S_IFDIR | 0755));
  for (std::size_t i = 0; i < sizeof second; ++i) CHECK(space[160 + i] == std::byte{0});
  std::memcpy(&d, space.data() + 160 + 128, sizeof d);
  CHECK(d.ino == 9);
  CHECK(d.off == 2);
  for (std::size_t i = 160 + 128 + 24 + 1; i < 320; ++i) CHECK(space[i] == std::byte{0});
  // Full: nothing added, nothing written.
  dir_buffer tight(std::span<std::byte>(space.data(), 40), false);
  CHECK(tight.add("0123456789abcdefg", 1, S_IFREG, 1) == false);
  CHECK(tight.size() == 0);
}

TEST_CASE("getxattr: size probing and ERANGE") {
  harness<test_fs> h;
  h.init();
  auto probe = h.call(op::getxattr, 1, wire{}.add(proto::getxattr_in{.size = 0}).name("user.colour"));
  CHECK(probe.error() == 0);
  CHECK(probe.as<proto::getxattr_out>().size == 4);
  CHECK(h.call(op::getxattr, 1, wire{}.add(proto::getxattr_in{.size = 2}).name("user.colour")).error() == ERANGE);
  CHECK(h.call(op::getxattr, 1, wire{}.add(proto::getxattr_in{.size = 64}).name("user.colour")).text() == "blue");
  CHECK(h.call(op::getxattr, 1, wire{}.add(proto::getxattr_in{.size = 64}).name("user.x")).error() == ENODATA);
}

TEST_CASE("forget, batch_forget and interrupt are not answered") {
  harness<test_fs> h;
  h.init();
  const std::size_t before = h.rec.size();
  h.feed(fusexx::testing::make_request(op::forget, 90, 2, wire{}.add(proto::forget_in{.nlookup = 3})));
  proto::batch_forget_in b{};
  b.count = 2;
  h.feed(fusexx::testing::make_request(op::batch_forget, 92, 0,
                                       wire{}.add(b).add(proto::forget_one{4, 1}).add(proto::forget_one{5, 2})));
  // A batch that claims more than it carries: forget what arrived, answer nothing.
  b.count = 9;
  h.feed(fusexx::testing::make_request(op::batch_forget, 94, 0, wire{}.add(b).add(proto::forget_one{6, 1})));
  h.feed(fusexx::testing::make_request(op::interrupt, 97, 0, wire{}.add(proto::interrupt_in{.unique = 96})));
  CHECK(h.rec.size() == before);
  CHECK(h.fs.forgotten == std::vector<std::pair<ino, std::uint64_t>>{{2, 3}, {4, 1}, {5, 2}, {6, 1}});
  CHECK(h.state.interrupts().contains(96));
}

TEST_CASE("destroy calls the filesystem and is answered") {
  harness<test_fs> h;
  h.init();
  CHECK(h.call(op::destroy, 0).error() == 0);
  CHECK(h.fs.destroyed);
  CHECK(h.state.init().current() == session_phase::ended);
}

TEST_CASE("task<T> chains: errors and values flow through co_await") {
  auto inner = [](bool fail) -> task<int> {
    if (fail) co_return error(ENOENT);
    co_return 41;
  };
  struct outer_fs : filesystem_base<outer_fs> {
    std::function<task<int>(bool)> inner;
    task<entry> lookup(request&, ino, std::string_view name) {
      auto v = co_await inner(name == "missing");
      if (!v) co_return error(v.error());
      co_return entry{.node = static_cast<ino>(*v + 1)};
    }
  };
  harness<outer_fs> h;
  h.fs.inner = inner;
  h.init();
  CHECK(h.call(op::lookup, 1, wire{}.name("x")).as<proto::entry_out>().nodeid == 42);
  CHECK(h.call(op::lookup, 1, wire{}.name("missing")).error() == ENOENT);
}

namespace {
// Lock handlers, nothing else: INIT should ask for the locks on its own.
struct posix_locks_fs : filesystem_base<posix_locks_fs> {
  result<posix_lock> getlk(request&, ino, fhandle, std::uint64_t, const posix_lock& l) { return l; }
  result<void> setlk(request&, ino, fhandle, std::uint64_t, const posix_lock&, bool) { return {}; }
};
struct flock_fs : filesystem_base<flock_fs> {
  result<void> flock(request&, ino, fhandle, std::uint64_t, int) { return {}; }
};
// Destroy is called once per successful INIT, whoever asks first.
struct destroy_counting_fs : filesystem_base<destroy_counting_fs> {
  int destroyed = 0;
  void destroy() { ++destroyed; }
};
}  // namespace

TEST_CASE("INIT asks for POSIX locks when getlk and setlk exist, for flock locks when flock does") {
  namespace f = proto::init_flag;
  harness<test_fs> none;
  none.init();
  CHECK_FALSE(none.state.conn().has(f::posix_locks));
  CHECK_FALSE(none.state.conn().has(f::flock_locks));
  harness<posix_locks_fs> posix;
  posix.init();
  CHECK(posix.state.conn().has(f::posix_locks));
  CHECK_FALSE(posix.state.conn().has(f::flock_locks));
  harness<flock_fs> bsd;
  bsd.init();
  CHECK_FALSE(bsd.state.conn().has(f::posix_locks));
  CHECK(bsd.state.conn().has(f::flock_locks));
}

TEST_CASE("destroy() runs once: on DESTROY, and not again when the server ends the session") {
  harness<destroy_counting_fs> h;
  h.d.end_session();  // before INIT: nothing to end
  CHECK(h.fs.destroyed == 0);
  h.init();
  CHECK(h.call(proto::opcode::destroy, 0, wire{}).error() == 0);
  CHECK(h.fs.destroyed == 1);
  h.d.end_session();  // what server::stop() does
  CHECK(h.fs.destroyed == 1);
  harness<destroy_counting_fs> no_destroy_request;
  no_destroy_request.init();
  no_destroy_request.d.end_session();
  CHECK(no_destroy_request.fs.destroyed == 1);
}
