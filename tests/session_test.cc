// The session: what the kernel holds (node lookups, open handles) is kept by
// the dispatcher as replies are accepted, given back to the filesystem when
// the kernel refuses a reply, and described as plain data. First with kernel-
// shaped bytes, then through a real memfs mount, where the session's books
// must agree with memfs's own exact lookup counts.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <latch>
#include <map>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "tests/support/memfs_mount.hpp"
#include "tests/support/wire.hpp"

using namespace fusexx;
using namespace fusexx::testing;
using op = proto::opcode;

namespace {

// Hands out one node per name and counts what comes back.
struct books_fs : filesystem_base<books_fs> {
  std::map<ino, std::uint64_t> forgotten;
  std::vector<fhandle> released, released_dirs;

  result<entry> lookup(request&, ino, std::string_view name) {
    if (name.empty() || name[0] != 'n') return error(ENOENT);
    entry e{.node = 10 + static_cast<ino>(name.size()), .generation = 3};
    e.st.st_ino = e.node;
    e.st.st_mode = S_IFREG | 0644;
    return e;
  }
  void forget(ino i, std::uint64_t n) { forgotten[i] += n; }
  result<opened> open(request& r, ino, int) { return opened{.fh = 500 + r.node()}; }
  result<opened> opendir(request& r, ino, int) { return opened{.fh = 900 + r.node()}; }
  result<void> release(request&, ino, fhandle fh, int) {
    released.push_back(fh);
    return {};
  }
  result<void> releasedir(request&, ino, fhandle fh, int) {
    released_dirs.push_back(fh);
    return {};
  }
  result<created> create(request&, ino, std::string_view, mode_t, int, mode_t) {
    created c;
    c.entry.node = 77;
    c.entry.st.st_ino = 77;
    c.entry.st.st_mode = S_IFREG | 0600;
    c.file.fh = 7700;
    return c;
  }
  result<void> readdirplus(request&, ino, fhandle, off_t off, dir_buffer& out) {
    const char* names[] = {".", "..", "x", "y"};
    for (off_t i = off; i < 4; ++i) {
      entry e{.node = i < 2 ? root_ino : static_cast<ino>(20 + i)};
      e.st.st_ino = e.node;
      e.st.st_mode = i < 2 ? S_IFDIR : S_IFREG;
      if (!out.add(names[i], e, i + 1)) break;
    }
    return {};
  }
};
static_assert(filesystem<books_fs>);

// A harness whose replies the "kernel" refuses with ENOENT while `refuse` is
// set: the request was interrupted and is no longer waited for.
struct refusing : harness<books_fs> {
  bool refuse = false;
  static int send(void* self, const iovec* iov, int count) {
    auto* h = static_cast<refusing*>(self);
    recorder::send(&h->rec, iov, count);
    return h->refuse ? -ENOENT : 0;
  }
  std::size_t feed_refusable(const std::vector<std::byte>& bytes) {
    std::memcpy(buf.data(), bytes.data(), bytes.size());
    detail::incoming in{.bytes = std::span<const std::byte>(buf.data(), bytes.size()),
                        .scratch = buf.span().subspan((bytes.size() + 63) & ~std::size_t{63}),
                        .owner = &buf,
                        .sink = detail::reply_sink{this, &refusing::send}};
    const std::size_t before = rec.size();
    d.handle(in);
    return rec.size() - before;
  }
  reply call(op o, std::uint64_t node, const wire& body = {}) {
    static std::uint64_t unique = 1000;
    unique += 2;
    feed_refusable(make_request(o, unique, node, body));
    return rec.last();
  }
};

proto::read_in dir_read(std::uint64_t fh) {
  proto::read_in r{};
  r.fh = fh;
  r.size = 4096;
  return r;
}

std::uint64_t total_lookups(const session_description& d) {
  return std::accumulate(d.nodes.begin(), d.nodes.end(), std::uint64_t{0},
                         [](std::uint64_t n, const node_record& r) { return n + r.lookups; });
}

}  // namespace

TEST_CASE("session counters: threads add on stripes of their own, and the sum is exact") {
  session_counters c;
  constexpr int threads = 24, adds = 20000;  // more threads than stripes: some share one
  {
    std::latch all_alive(threads);  // all at once, so the ones beyond the 16 stripes do share
    std::vector<std::jthread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&] {
        all_alive.arrive_and_wait();
        for (int i = 0; i < adds; ++i) {
          c.requests.fetch_add(1, std::memory_order_relaxed);
          c.in_flight.fetch_add(1, std::memory_order_relaxed);
          c.in_flight.fetch_sub(1, std::memory_order_relaxed);
        }
      });
  }
  CHECK(c.requests.load() == std::uint64_t{threads} * adds);
  CHECK(c.in_flight.load() == 0);
  // Threads that end give their stripe to later ones, which go on from its
  // count (a stripe has one writer at a time).
  for (int t = 0; t < 40; ++t) std::jthread([&] { c.requests.fetch_add(1); }).join();
  CHECK(c.requests.load() == std::uint64_t{threads} * adds + 40);

  // A request counted in flight on one thread and finished on another: the
  // second thread's stripe goes below zero, the sum stays right.
  std::jthread([&] { c.in_flight.fetch_add(2); }).join();
  std::jthread([&] { c.in_flight.fetch_sub(1); }).join();
  CHECK(c.in_flight.load() == 1);
  // Seen before its addition, a subtraction alone reads as 0, not 2^64 - 1.
  detail::striped_count alone;
  std::jthread([&] { alone.fetch_sub(1); }).join();
  CHECK(alone.load() == 0);
  const std::uint64_t as_number = c.requests;  // reads like the atomic it replaced
  CHECK(as_number == std::uint64_t{threads} * adds + 40);
}

TEST_CASE("accepted entries and opens are what the kernel holds; FORGET and RELEASE give them back") {
  refusing h;
  h.init();
  REQUIRE(h.call(op::lookup, root_ino, wire{}.name("n1")).error() == 0);
  REQUIRE(h.call(op::lookup, root_ino, wire{}.name("n1")).error() == 0);
  REQUIRE(h.call(op::lookup, root_ino, wire{}.name("n22")).error() == 0);
  CHECK(h.state.nodes().lookups(12) == 2);  // "n1": node 10 + 2
  CHECK(h.state.nodes().lookups(13) == 1);
  CHECK(h.call(op::lookup, root_ino, wire{}.name("missing")).error() == ENOENT);
  CHECK(h.state.nodes().size() == 2);

  proto::open_in o{};
  o.flags = O_RDWR;
  REQUIRE(h.call(op::open, 11, wire{}.add(o)).error() == 0);
  REQUIRE(h.call(op::opendir, root_ino, wire{}.add(o)).error() == 0);
  auto d = h.state.describe();
  REQUIRE(d.handles.size() == 2);
  auto file = std::ranges::find_if(d.handles, [](const handle_record& r) { return !r.directory; });
  REQUIRE(file != d.handles.end());
  CHECK(file->node == 11);
  CHECK(file->fh == 511);
  CHECK(file->flags == O_RDWR);

  // READDIRPLUS: every entry but "." and ".." is a lookup.
  REQUIRE(h.call(op::readdirplus, root_ino, wire{}.add(dir_read(901))).error() == 0);
  CHECK(h.state.nodes().lookups(22) == 1);
  CHECK(h.state.nodes().lookups(23) == 1);
  CHECK(h.state.nodes().lookups(root_ino) == 0);

  proto::release_in rel{};
  rel.fh = 511;
  h.feed_refusable(make_request(op::release, 2000, 11, wire{}.add(rel)));
  rel.fh = 901;
  h.feed_refusable(make_request(op::releasedir, 2002, root_ino, wire{}.add(rel)));
  CHECK(h.state.handles().size() == 0);

  proto::forget_in f{};
  f.nlookup = 2;
  h.feed_refusable(make_request(op::forget, 2004, 12, wire{}.add(f)));
  CHECK(h.state.nodes().lookups(12) == 0);
  CHECK(h.state.nodes().mismatches() == 0);
  // A FORGET for more than was handed out is a mismatch, counted.
  f.nlookup = 5;
  h.feed_refusable(make_request(op::forget, 2006, 13, wire{}.add(f)));
  CHECK(h.state.nodes().mismatches() == 1);
  CHECK(h.fs.forgotten[13] == 5);  // the filesystem still hears what the kernel said
}

TEST_CASE("a reply the kernel refuses hands over nothing: the filesystem gets it back") {
  refusing h;
  h.init();
  h.refuse = true;
  // LOOKUP: the node reference never reached the kernel.
  h.call(op::lookup, root_ino, wire{}.name("n1"));
  CHECK(h.state.nodes().lookups(12) == 0);
  CHECK(h.fs.forgotten[12] == 1);
  // OPEN: the handle goes back through release().
  proto::open_in o{};
  h.call(op::open, 11, wire{}.add(o));
  CHECK(h.state.handles().size() == 0);
  CHECK(h.fs.released == std::vector<fhandle>{511});
  h.call(op::opendir, 5, wire{}.add(o));
  CHECK(h.fs.released_dirs == std::vector<fhandle>{905});
  // CREATE: both.
  proto::create_in c{};
  h.call(op::create, root_ino, wire{}.add(c).name("new"));
  CHECK(h.fs.forgotten[77] == 1);
  CHECK(h.fs.released == std::vector<fhandle>{511, 7700});
  // READDIRPLUS: each entry's reference, but not "." and "..".
  h.call(op::readdirplus, root_ino, wire{}.add(dir_read(1)));
  CHECK(h.fs.forgotten[22] == 1);
  CHECK(h.fs.forgotten[23] == 1);
  CHECK(h.fs.forgotten.count(root_ino) == 0);
  CHECK(h.state.nodes().size() == 0);
  CHECK(h.state.counters().replies_refused.load() == 5);
}

TEST_CASE("describe(): the negotiated INIT as plain data") {
  harness<books_fs> h;
  h.init();
  const auto d = h.state.describe();
  CHECK(d.proto_major == 7);
  CHECK(d.proto_minor == 45);
  CHECK(d.granted == h.state.conn().granted());
  CHECK(d.max_write == h.state.conn().max_write);
  CHECK(d.max_pages == h.state.conn().max_pages());
  CHECK(d.max_readahead == 131072);
  CHECK_FALSE(d.over_io_uring);
  CHECK(d.nodes.empty());
  CHECK(d.handles.empty());
  CHECK(d.backing_ids.empty());
}

TEST_CASE("through a real mount, the session's books agree with memfs's exact lookup counts") {
  memfs_mount m("entry_timeout=0,attr_timeout=0");
  auto& s = m.srv().session();
  auto agree = [&] {
    const auto d = s.describe();
    std::set<ino> held;
    for (const auto& r : d.nodes) held.insert(r.node);
    held.erase(root_ino);
    const auto mem = m.fs.referenced_nodes();
    return held == std::set<ino>(mem.begin(), mem.end()) && total_lookups(d) == m.fs.kernel_lookups() &&
           s.nodes().mismatches() == 0;
  };
  REQUIRE(::mkdir(m.path("d").c_str(), 0755) == 0);
  for (int i = 0; i < 20; ++i) {
    int fd = ::open(m.path("d/f" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    ::close(fd);
  }
  struct stat st {};
  for (int i = 0; i < 20; ++i) REQUIRE(::stat(m.path("d/f" + std::to_string(i)).c_str(), &st) == 0);
  // readdir (plus, where memfs offers it) of the directory.
  if (DIR* dir = ::opendir(m.path("d").c_str())) {
    while (::readdir(dir) != nullptr) {
    }
    ::closedir(dir);
  }
  CHECK(eventually(agree));
  CHECK(s.describe().over_io_uring == m.srv().using_uring());

  // An open file and an open directory are held while open, and given back
  // (RELEASE arrives asynchronously) once closed.
  int fd = ::open(m.path("d/f3").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(::fstat(fd, &st) == 0);
  DIR* dir = ::opendir(m.path("d").c_str());
  REQUIRE(dir != nullptr);
  const auto d = s.describe();
  CHECK(std::ranges::any_of(d.handles, [&](const handle_record& r) {
    return !r.directory && r.node == st.st_ino && (r.flags & O_ACCMODE) == O_RDWR;
  }));
  CHECK(std::ranges::any_of(d.handles, [](const handle_record& r) { return r.directory; }));
  ::close(fd);
  ::closedir(dir);
  CHECK(eventually([&] { return s.handles().size() == 0; }));
  for (const auto& r : s.describe().handles)
    MESSAGE("still held: node " << r.node << " fh " << r.fh << (r.directory ? " (directory)" : "") << " x" << r.opens);

  // Deleting everything gives every reference back, in memfs and the books.
  for (int i = 0; i < 20; ++i) REQUIRE(::unlink(m.path("d/f" + std::to_string(i)).c_str()) == 0);
  REQUIRE(::rmdir(m.path("d").c_str()) == 0);
  CHECK(eventually([&] { return agree(); }));

  // At stop the connection is over: the kernel holds nothing any more.
  m.stop();
  CHECK(s.nodes().size() == 0);
  CHECK(s.handles().size() == 0);
}
