// Notifications observed through the kernel. A small filesystem whose files
// the test can change behind the kernel's back, served with hour-long cache
// timeouts: each notification must visibly change what the kernel shows
// (fresh data after inval_inode, a vanished name after inval_entry/delete,
// stored bytes read without a READ, retrieved bytes equal to the cache, a
// poll(2) woken, FORGETs after prune, LOOKUPs again after inc_epoch).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include <fusexx/fusexx.hpp>

#include "tests/support/mounted.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

constexpr timeout long_time = std::chrono::hours(1);

struct notify_fs : filesystem_base<notify_fs> {
  struct file {
    ino id;
    std::string content;
  };
  std::mutex mutex;
  std::map<std::string, file, std::less<>> names;  // the root directory
  std::atomic<int> lookups{0}, reads{0};
  std::map<ino, std::uint64_t> forgotten;
  std::atomic<bool> ready{false};
  std::atomic<std::uint64_t> poll_handle{0};

  void put(const std::string& name, ino id, std::string content) {
    std::lock_guard g(mutex);
    names[name] = file{id, std::move(content)};
  }
  void set_content(const std::string& name, std::string content) {
    std::lock_guard g(mutex);
    names.at(name).content = std::move(content);
  }
  void remove(const std::string& name) {
    std::lock_guard g(mutex);
    names.erase(name);
  }
  std::uint64_t forgets_of(ino i) {
    std::lock_guard g(mutex);
    return forgotten[i];
  }

  struct stat stat_of(const file& f) {
    struct stat st {};
    st.st_ino = f.id;
    st.st_mode = S_IFREG | 0644;
    st.st_nlink = 1;
    st.st_size = off_t(f.content.size());
    return st;
  }
  const file* by_ino(ino i) {
    for (auto& [n, f] : names)
      if (f.id == i) return &f;
    return nullptr;
  }

  result<entry> lookup(request&, ino parent, std::string_view name) {
    ++lookups;
    std::lock_guard g(mutex);
    auto it = names.find(name);
    if (parent != root_ino || it == names.end()) return error(ENOENT);
    return entry{.node = it->second.id, .st = stat_of(it->second), .entry_valid_for = long_time,
                 .attr_valid_for = long_time};
  }
  result<attr> getattr(request&, ino i) {
    std::lock_guard g(mutex);
    if (i == root_ino) {
      attr a{.valid_for = long_time};
      a.st.st_mode = S_IFDIR | 0755;
      a.st.st_nlink = 2;
      return a;
    }
    const file* f = by_ino(i);
    if (!f) return error(ENOENT);
    return attr{.st = stat_of(*f), .valid_for = long_time};
  }
  result<opened> open(request&, ino, int) { return opened{.keep_cache = true}; }
  result<std::size_t> read(request&, ino i, fhandle, off_t off, std::span<std::byte> into) {
    ++reads;
    std::lock_guard g(mutex);
    const file* f = by_ino(i);
    if (!f) return error(ENOENT);
    if (off >= off_t(f->content.size())) return 0;
    const std::size_t n = std::min(into.size(), f->content.size() - std::size_t(off));
    std::memcpy(into.data(), f->content.data() + off, n);
    return n;
  }
  void forget(ino i, std::uint64_t n) {
    std::lock_guard g(mutex);
    forgotten[i] += n;
  }
  // Not ready until the test says so; remembers the kernel's handle.
  result<unsigned> poll(request&, ino, fhandle, std::optional<std::uint64_t> kh, unsigned events) {
    if (kh) poll_handle = *kh;
    return ready ? (events & POLLIN) : 0u;
  }
  // The file's bytes as the kernel caches them, read back while handling a
  // request: a coroutine that waits for the NOTIFY_REPLY.
  task<std::string> getxattr(request& req, ino i, std::string_view) {
    auto r = co_await req.notify().retrieve(i, 0, 64);
    if (!r) co_return error(r.error());
    co_return std::string(reinterpret_cast<const char*>(r->data.data()), r->data.size());
  }
};

struct notify_mount : mounted<notify_fs> {
  notify_mount() { REQUIRE_MESSAGE(ok(), error()); }
  notifier& n() { return srv().session().notify(); }
  bool exists(const std::string& name) {
    struct stat st {};
    return ::stat(path(name).c_str(), &st) == 0;
  }
  off_t size_of(const std::string& name) {
    struct stat st {};
    return ::stat(path(name).c_str(), &st) == 0 ? st.st_size : -1;
  }
};

std::span<const std::byte> bytes(std::string_view s) { return std::as_bytes(std::span(s)); }

}  // namespace

TEST_CASE("inval_inode: cached data and attributes are replaced by the server's") {
  notify_mount m;
  m.fs.put("a", 2, "one");
  CHECK(slurp(m.path("a")) == "one");
  m.fs.set_content("a", "two");
  CHECK(slurp(m.path("a")) == "one");  // cached: the kernel did not ask again
  REQUIRE(m.n().inval_inode(2));
  CHECK(slurp(m.path("a")) == "two");
  // Attributes only (offset < 0). (A file nobody read: reading marks atime
  // stale, and the next stat would fetch all attributes anyway.)
  m.fs.put("b", 3, "one");
  CHECK(m.size_of("b") == 3);
  m.fs.set_content("b", "three!!");
  CHECK(m.size_of("b") == 3);  // cached for an hour
  REQUIRE(m.n().inval_inode(3, -1));
  CHECK(m.size_of("b") == 7);
  CHECK(slurp(m.path("b")) == "three!!");
  // A node the kernel does not know.
  CHECK(m.n().inval_inode(12345).error().value() == ENOENT);
}

TEST_CASE("inval_entry: a cached name disappears; expire_only makes it checked again") {
  notify_mount m;
  m.fs.put("old", 3, "x");
  m.fs.put("e", 4, "y");
  REQUIRE(m.exists("old"));
  REQUIRE(m.exists("e"));
  const int looked = m.fs.lookups;
  m.fs.remove("old");
  m.fs.put("new", 3, "x");
  CHECK(m.exists("old"));  // the kernel still believes its cache (an hour long)
  CHECK(m.fs.lookups == looked);
  REQUIRE(m.n().inval_entry(root_ino, "old"));
  CHECK_FALSE(m.exists("old"));
  CHECK(m.exists("new"));
  m.fs.remove("e");
  REQUIRE(m.n().inval_entry(root_ino, "e", /*expire_only=*/true));
  CHECK_FALSE(m.exists("e"));
  CHECK(m.fs.lookups > looked);
}

TEST_CASE("delete: the kernel drops the name as if it had been unlinked") {
  notify_mount m;
  m.fs.put("d", 5, "doomed");
  REQUIRE(m.exists("d"));
  m.fs.remove("d");
  REQUIRE(m.n().delete_entry(root_ino, 5, "d"));
  CHECK_FALSE(m.exists("d"));
}

TEST_CASE("store: a cached page is replaced, and read without a READ; retrieve gives the cache back") {
  notify_mount m;
  m.fs.put("s", 6, "AAAAAAAA");
  CHECK(slurp(m.path("s")) == "AAAAAAAA");  // now cached
  // The server's data changes, and it pushes the new bytes into the cache.
  m.fs.set_content("s", "BBBBBBBB");
  REQUIRE(m.n().store(6, 0, bytes("BBBBBBBB")));
  const int reads = m.fs.reads;
  CHECK(slurp(m.path("s")) == "BBBBBBBB");
  CHECK(m.fs.reads == reads);
  // Past the end: the file grows in the kernel's view.
  m.fs.set_content("s", "BBBBBBBBCC");
  REQUIRE(m.n().store(6, 8, bytes("CC")));
  CHECK(m.size_of("s") == 10);
  CHECK(slurp(m.path("s")) == "BBBBBBBBCC");
  CHECK(m.fs.reads == reads);

  // Retrieve reads the kernel's cache, not the server's data.
  m.fs.set_content("s", "ZZZZZZZZZZ");
  auto r = m.n().retrieve_wait(6, 0, 64);
  REQUIRE(r);
  CHECK(r->offset == 0);
  CHECK(std::string(reinterpret_cast<const char*>(r->data.data()), r->data.size()) == "BBBBBBBBCC");
  // The same from inside a request: a coroutine handler awaits the answer.
  char buf[64] = {};
  const ssize_t n = ::getxattr(m.path("s").c_str(), "user.cached", buf, sizeof buf);
  CHECK(std::string(buf, std::size_t(std::max<ssize_t>(n, 0))) == "BBBBBBBBCC");

  CHECK(m.n().store(4321, 0, bytes("z")).error().value() == ENOENT);
  CHECK(m.n().retrieve_wait(4321, 0, 8).error().value() == ENOENT);
}

TEST_CASE("poll: a waiting poll(2) wakes on poll_wakeup") {
  notify_mount m;
  m.fs.put("p", 7, "");
  int fd = ::open(m.path("p").c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  pollfd pfd{fd, POLLIN, 0};
  CHECK(::poll(&pfd, 1, 0) == 0);  // not ready, and no wait asked for
  int result = -1;
  short revents = 0;
  std::thread waiter([&] {
    pollfd p{fd, POLLIN, 0};
    result = ::poll(&p, 1, 20000);  // bounded only so a broken wakeup fails instead of hanging
    revents = p.revents;
  });
  REQUIRE(eventually([&] { return m.fs.poll_handle != 0; }));
  m.fs.ready = true;
  REQUIRE(m.n().poll_wakeup(m.fs.poll_handle));
  waiter.join();
  CHECK(result == 1);
  CHECK((revents & POLLIN));
  ::close(fd);
}

TEST_CASE("prune: the kernel forgets unused inodes, and looks them up again") {
  notify_mount m;
  m.fs.put("q", 8, "q");
  REQUIRE(m.exists("q"));
  CHECK(m.fs.forgets_of(8) == 0);
  const ino nodes[] = {8};
  REQUIRE(m.n().prune(nodes));
  CHECK(eventually([&] { return m.fs.forgets_of(8) == 1; }));
  const int looked = m.fs.lookups;
  REQUIRE(m.exists("q"));
  CHECK(m.fs.lookups == looked + 1);
}

TEST_CASE("inc_epoch: every cached name is checked again") {
  notify_mount m;
  m.fs.put("ep", 9, "e");
  REQUIRE(m.exists("ep"));
  const int looked = m.fs.lookups;
  REQUIRE(m.exists("ep"));
  CHECK(m.fs.lookups == looked);  // cached
  REQUIRE(m.n().inc_epoch());
  REQUIRE(m.exists("ep"));
  CHECK(m.fs.lookups == looked + 1);
}

TEST_CASE("notifications from another thread while requests are in flight") {
  notify_mount m;
  for (int i = 0; i < 8; ++i) m.fs.put("f" + std::to_string(i), ino(100 + i), "content " + std::to_string(i));
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  std::thread reader([&] {
    while (!stop)
      for (int i = 0; i < 8; ++i)
        if (slurp(m.path("f" + std::to_string(i))) != "content " + std::to_string(i)) ++wrong;
  });
  int sent = 0;
  for (int round = 0; round < 300; ++round)
    for (int i = 0; i < 8; ++i) {
      // ENOENT is fine: the kernel may have no inode for it at that moment.
      auto a = m.n().inval_inode(ino(100 + i));
      auto b = m.n().inval_entry(root_ino, "f" + std::to_string(i));
      sent += (a || a.error().value() == ENOENT) && (b || b.error().value() == ENOENT);
    }
  stop = true;
  reader.join();
  CHECK(sent == 300 * 8);
  CHECK(wrong == 0);
}
