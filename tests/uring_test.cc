// FUSE over io_uring, checked through real mounts: requests really arrive
// through the rings (one queue per CPU), handlers can await I/O on the ring,
// /dev/fuse still carries FORGET, the fallback happens and says why when
// enable_uring is off, and shutdown leaves no thread or fd behind.
// Runs outside Bazel's sandbox and alone (tests/BUILD.bazel): it switches the
// enable_uring module parameter and drops the kernel's caches.
#include <doctest/doctest.h>

#include <sched.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <atomic>
#include <cstring>
#include <coroutine>
#include <mutex>
#include <vector>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fusexx/async_io.hpp>
#include <fusexx/fusexx.hpp>

#include "examples/hello_fs.hpp"
#include "tests/support/one_file_fs.hpp"
#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

const std::string enable_uring = "/sys/module/fuse/parameters/enable_uring";

// Sets enable_uring for the scope, restoring what it was.
class uring_switch {
 public:
  explicit uring_switch(bool on) : before_(slurp(enable_uring)) { set(on ? "Y" : "N"); }
  ~uring_switch() { set(before_.substr(0, 1)); }
  static void set(const std::string& v) { std::ofstream(enable_uring) << v; }

 private:
  std::string before_;
};

// Serves a real file's bytes as /data, reading it with io::pread — on the
// ring when there is one — /slow, whose reads first sleep on the ring, and
// /elsewhere, whose reads finish on a thread of their own: the reply is
// handed to the queue thread, which an eventfd read on its ring wakes.
struct backed_fs : filesystem_base<backed_fs> {
  struct on_a_thread_of_its_own {
    backed_fs& fs;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const {
      std::lock_guard lock(fs.threads_mutex);
      fs.threads.emplace_back([h] { h.resume(); });
    }
    void await_resume() const noexcept {}
  };
  std::mutex threads_mutex;
  std::vector<std::jthread> threads;  // joined with the filesystem
  std::atomic<int> finished_elsewhere{0};
  int backing = -1;
  std::atomic<int> reads_in_flight{0};
  std::atomic<int> most_in_flight{0};
  std::atomic<std::uint64_t> forgets{0};

  result<entry> lookup(request&, ino parent, std::string_view name) {
    if (parent != root_ino) return error(ENOENT);
    entry e;
    if (name == "data") e.node = 2;
    else if (name == "slow") e.node = 3;
    else if (name == "elsewhere") e.node = 4;
    else return error(ENOENT);
    e.st = stat_of(e.node);
    return e;
  }
  void forget(ino, std::uint64_t n) { forgets += n; }
  result<attr> getattr(request&, ino i, std::optional<fhandle>) {
    if (i > 4) return error(ENOENT);
    return attr{.st = stat_of(i)};
  }
  result<opened> open(request&, ino, int) { return opened{.direct_io = true}; }
  task<std::size_t> read(request&, ino i, fhandle, off_t off, std::span<std::byte> into) {
    const int now = ++reads_in_flight;
    int seen = most_in_flight.load();
    while (now > seen && !most_in_flight.compare_exchange_weak(seen, now)) {
    }
    if (i == 3) co_await io::sleep_for(std::chrono::milliseconds(100));
    if (i == 4) co_await on_a_thread_of_its_own{*this};
    auto n = co_await io::pread(backing, into, off);  // off the queue thread: the plain syscall
    --reads_in_flight;
    if (i == 4) ++finished_elsewhere;
    co_return n;
  }
  struct stat stat_of(ino i) const {
    struct stat st {};
    st.st_ino = i;
    if (i == root_ino) {
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
    } else {
      ::fstat(backing, &st);
      st.st_ino = i;
      st.st_mode = S_IFREG | 0444;
    }
    return st;
  }
};

server_options uring_options(const std::string& mp, transport_kind t = transport_kind::uring) {
  server_options o;
  o.transport = t;
  o.mount.mountpoint = mp;
  o.mount.subtype = "uringtest";
  return o;
}

std::size_t count_entries(const char* dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

void pin_to_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
}

}  // namespace

namespace {

// How many physically separate pieces [at, at + len) is in: what a disk's
// request counts against its segment limit for an O_DIRECT transfer to or
// from it (/proc/self/pagemap gives page frame numbers to root).
std::size_t physical_pieces(const std::byte* at, std::size_t len) {
  const long page = ::sysconf(_SC_PAGESIZE);
  fusexx::unique_fd map(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  REQUIRE(map);
  std::size_t pieces = 0;
  std::uint64_t last = 0;
  for (std::size_t off = 0; off < len; off += static_cast<std::size_t>(page)) {
    std::uint64_t entry = 0;
    const auto index = reinterpret_cast<std::uintptr_t>(at + off) / static_cast<std::uintptr_t>(page);
    REQUIRE(::pread(map.get(), &entry, sizeof entry, static_cast<off_t>(index * sizeof entry)) == sizeof entry);
    REQUIRE((entry >> 63) == 1);  // present
    const std::uint64_t frame = entry & ((std::uint64_t{1} << 55) - 1);
    REQUIRE(frame != 0);  // root sees frame numbers
    if (off == 0 || frame != last + 1) ++pieces;
    last = frame;
  }
  return pieces;
}

bool kernel_has_shmem_huge_pages() {
  const auto setting = detail::read_kernel_file("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  return setting && setting->find("[deny]") == std::string::npos;
}

}  // namespace

TEST_CASE("the entries' buffers are in huge pages where the server may mount a tmpfs: a 1 MiB payload is one or "
          "two physical pieces") {
  REQUIRE(::geteuid() == 0);
  if (!kernel_has_shmem_huge_pages()) {
    MESSAGE("this kernel has no transparent huge pages for tmpfs: not checked");
    return;
  }
  constexpr std::size_t mib = 1 << 20;
  auto huge = transport::entry_region::create(2, 4, mib, /*huge_pages=*/true);
  REQUIRE_MESSAGE(huge, (huge ? "" : huge.error().message));
  CHECK((*huge)->huge_pages());
  // A shared-memory file, as a successor is handed one: tmpfs, the size of the layout
  // rounded up to whole huge pages (so that the last payload is in one too).
  struct statfs fs {};
  REQUIRE(::fstatfs((*huge)->fd(), &fs) == 0);
  CHECK(fs.f_type == TMPFS_MAGIC);
  struct stat st {};
  REQUIRE(::fstat((*huge)->fd(), &st) == 0);
  CHECK(static_cast<std::uint64_t>(st.st_size) == ((*huge)->layout().size() + (2 << 20) - 1) / (2 << 20) * (2 << 20));
  // Every payload written through, as the kernel or a backing read would.
  for (unsigned q = 0; q < 2; ++q)
    for (unsigned i = 0; i < 4; ++i) std::memset((*huge)->payload(q, i), 0x5a, mib);
  for (unsigned q = 0; q < 2; ++q)
    for (unsigned i = 0; i < 4; ++i) {
      INFO("entry " << q << "." << i);
      // Two when a payload crosses a 2 MiB boundary; 4 KiB pages would make up to 256.
      CHECK(physical_pieces((*huge)->payload(q, i), mib) <= 2);
    }

  // Asked not to: a memfd, as for a process that may not mount.
  auto small = transport::entry_region::create(2, 4, mib, /*huge_pages=*/false);
  REQUIRE(small);
  CHECK_FALSE((*small)->huge_pages());
  std::string link(64, '\0');
  const ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string((*small)->fd())).c_str(), link.data(), link.size());
  REQUIRE(n > 0);
  CHECK(link.substr(0, static_cast<std::size_t>(n)).starts_with("/memfd:fusexx-uring-entries"));
}

namespace {

// What holds the io_uring entries of server `pid`, from its mappings: "huge"
// (the file on its own huge-page tmpfs), "memfd", or "" (none mapped).
std::string entry_region_kind(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  std::string line, kind;
  while (std::getline(maps, line)) {
    if (line.find("/memfd:fusexx-uring-entries") != std::string::npos) kind = "memfd";
    else if (line.find(" /fusexx-uring-entries") != std::string::npos) kind = "huge";
  }
  return kind;
}

// What holds the io_uring entries of the passthrough example serving
// `source` (with `extra` options): started, asked once mounted, stopped.
std::string passthrough_region_kind(const std::string& source, const std::string& extra = "") {
  const std::string passthrough = example_binary("FUSEXX_PASSTHROUGH");
  REQUIRE(!passthrough.empty());
  temp_dir mnt;
  child c = spawn({passthrough, "-f", "-o", "source=" + source + ",transport=uring" + extra, mnt.path()});
  forked server(c.pid);
  REQUIRE(eventually([&] { return is_fuse_mounted(mnt.path()); }));
  struct stat st {};
  CHECK(::stat(mnt.path().c_str(), &st) == 0);  // served: the queues are up
  std::string kind = entry_region_kind(c.pid);
  ::kill(c.pid, SIGTERM);
  CHECK(server.wait() == 0);
  return kind;
}

}  // namespace

TEST_CASE("the passthrough example asks for huge pages when its source is on a disk, and not on tmpfs") {
  // Its 1 MiB O_DIRECT transfers to and from a disk are one request each only
  // with the payloads in huge pages (docs/benchmarks.md: "A 1 MiB transfer to
  // or from the disk was two requests"); on tmpfs nothing reads them by DMA.
  if (!kernel_has_shmem_huge_pages()) {
    MESSAGE("this kernel has no transparent huge pages for tmpfs: not checked");
    return;
  }
  struct statfs fs {};
  REQUIRE(::statfs("/var/tmp", &fs) == 0);
  if (fs.f_type == TMPFS_MAGIC) {
    MESSAGE("/var/tmp is a tmpfs here: no disk source to check");
  } else {
    char tmpl[] = "/var/tmp/fusexx-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string disk = tmpl;
    CHECK(passthrough_region_kind(disk) == "huge");
    CHECK(passthrough_region_kind(disk, ",huge_pages=off") == "memfd");  // the user's word wins
    std::filesystem::remove_all(disk);
  }
  if (::statfs("/dev/shm", &fs) != 0 || fs.f_type != TMPFS_MAGIC) {
    MESSAGE("no tmpfs at /dev/shm: the memory-backed case is not checked");
    return;
  }
  char tmpl[] = "/dev/shm/fusexx-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string memory = tmpl;
  CHECK(passthrough_region_kind(memory) == "memfd");
  CHECK(passthrough_region_kind(memory, ",huge_pages=on") == "huge");
  std::filesystem::remove_all(memory);
}

TEST_CASE("requests arrive through one ring per CPU, and handlers await I/O on the ring") {
  REQUIRE_MESSAGE(transport::uring_unavailable_reason().empty(), transport::uring_unavailable_reason());
  temp_dir dir;
  const std::string backing_path = dir.path() + "/backing";
  std::string content;
  for (int i = 0; i < 20000; ++i) content += std::to_string(i) + ",";
  std::ofstream(backing_path) << content;
  const std::string mp = dir.sub("mnt");

  backed_fs fs;
  fs.backing = ::open(backing_path.c_str(), O_RDONLY | O_CLOEXEC);
  server<backed_fs> srv(fs, uring_options(mp));
  auto r = srv.start();
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  REQUIRE(srv.using_uring());
  CHECK(srv.uring_queue_count() == transport::possible_cpu_count());
  const auto ring_before = srv.session().counters().via_ring.load();

  // From every CPU: the kernel picks the queue of the CPU the caller runs on.
  for (unsigned cpu = 0; cpu < transport::possible_cpu_count(); ++cpu) {
    std::thread([&, cpu] {
      pin_to_cpu(static_cast<int>(cpu));
      CHECK(slurp(mp + "/data") == content);
    }).join();
  }
  CHECK(srv.session().counters().via_ring.load() > ring_before);

  // Two readers on one CPU share one queue thread; their handlers sleep on
  // the ring, so both are in flight at once instead of one after the other.
  fs.most_in_flight = 0;
  auto slow_reader = [&] {
    pin_to_cpu(0);
    CHECK(slurp(mp + "/slow") == content);
  };
  std::thread a(slow_reader), b(slow_reader);
  a.join();
  b.join();
  CHECK(fs.most_in_flight.load() >= 2);

  // Replies written on other threads are committed by the queue's own thread
  // (the kernel copies in the submitter's context), woken through its ring.
  CHECK(slurp(mp + "/elsewhere") == content);
  CHECK(fs.finished_elsewhere.load() > 0);

  // FORGET stays on /dev/fuse: drop the kernel's inodes and watch them come.
  const auto device_before = srv.session().counters().via_device.load();
  ::sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "2";
  CHECK(eventually([&] { return fs.forgets.load() > 0; }));
  CHECK(srv.session().counters().via_device.load() > device_before);

  srv.stop();
  CHECK_FALSE(is_fuse_mounted(mp));
  ::close(fs.backing);
}

namespace {

// /f, whose reads block the queue thread: the first until the second
// reader's request has had time to reach the same queue, the second for a
// while of its own, so that a reply sent early is seen early.
struct blocking_fs : one_file_fs<blocking_fs, 0444, 1> {
  using clock = std::chrono::steady_clock;
  std::atomic<int> reads{0};
  std::atomic<bool> first_started{false};
  std::atomic<clock::rep> second_called_at{0};  // set by the second reader just before its read
  std::atomic<bool> second_handled{false};

  result<std::size_t> read(request&, ino, fhandle, off_t, std::span<std::byte> into) {
    if (reads++ == 0) {
      first_started = true;
      const auto deadline = clock::now() + std::chrono::seconds(10);
      while (clock::now() < deadline) {
        const auto at = second_called_at.load();
        if (at != 0 && clock::now() - clock::time_point(clock::duration(at)) > std::chrono::milliseconds(200)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      second_handled = true;
    }
    if (into.empty()) return 0;
    into[0] = std::byte{'x'};
    return 1;
  }
};

}  // namespace

// A queue thread answers what it has, then asks the kernel for more, in one
// io_uring_enter(). A request that came in while a handler ran (its delivery
// is work the ring defers to that enter) must be handled before the replies
// queued meanwhile leave, as libfuse does: sent first, they wake their
// applications one at a time onto the queue's CPU, and two writers on one
// CPU then stayed there while the other CPU idled (docs/benchmarks.md, the
// 2-job 4 KiB writes). Both readers here run on CPU 0, so both requests go to
// queue 0; the first reply must not reach its reader before the second
// request's handler, which blocks the queue thread for 300 ms, has finished.
TEST_CASE("a request that arrived while a handler ran is handled before the replies queued meanwhile are sent") {
  REQUIRE_MESSAGE(transport::uring_unavailable_reason().empty(), transport::uring_unavailable_reason());
  temp_dir dir;
  blocking_fs fs;
  server<blocking_fs> srv(fs, uring_options(dir.path()));
  auto r = srv.start();
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  REQUIRE(srv.using_uring());
  unique_fd f1(::open((dir.path() + "/f").c_str(), O_RDONLY | O_CLOEXEC));
  unique_fd f2(::open((dir.path() + "/f").c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(f1);
  REQUIRE(f2);

  std::atomic<bool> first_done{false};
  bool second_was_handled = false;
  std::thread first([&] {
    pin_to_cpu(0);
    char c = 0;
    CHECK(::pread(f1.get(), &c, 1, 0) == 1);
    second_was_handled = fs.second_handled.load();
    first_done = true;
  });
  std::thread second([&] {
    pin_to_cpu(0);
    if (!eventually([&] { return fs.first_started.load(); })) return;  // the first read's CHECK says why
    char c = 0;
    fs.second_called_at = blocking_fs::clock::now().time_since_epoch().count();
    CHECK(::pread(f2.get(), &c, 1, 0) == 1);
  });
  first.join();
  second.join();
  CHECK(first_done.load());
  CHECK(fs.reads.load() == 2);
  CHECK(second_was_handled);

  f1.reset();
  f2.reset();
  srv.stop();
  CHECK_FALSE(is_fuse_mounted(dir.path()));
}

// Right after a synchronous INIT the kernel may answer REGISTER with EAGAIN
// (it has not processed the INIT reply yet; kernel-facts Q4). The server
// cannot be made to lose that race on purpose, so this test builds the same
// pieces itself and registers the queues *before* INIT is even read: the
// kernel then answers EAGAIN every time, and the queues must keep retrying
// until INIT is answered, then serve.
TEST_CASE("queues that register before INIT is answered get EAGAIN, retry, and then serve") {
  REQUIRE_MESSAGE(transport::uring_unavailable_reason().empty(), transport::uring_unavailable_reason());
  temp_dir dir;
  hello_fs fs;
  fusexx::session state;
  detail::dispatcher<hello_fs> d(fs, state);
  state.conn().want(proto::init_flag::over_io_uring);

  unique_fd device(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  REQUIRE(device);
  // mount(2) with fd=: INIT is sent asynchronously, after mount returns.
  const std::string data = fmt::format("fd={},rootmode=40000,user_id=0,group_id=0", device.get());
  REQUIRE(::mount("early", dir.path().c_str(), "fuse.uringtest", MS_NOSUID | MS_NODEV, data.c_str()) == 0);

  // Entries big enough for whatever max_pages INIT settles on.
  connection sized;
  sized.max_write = static_cast<std::uint32_t>(connection::kernel_max_pages_limit() * connection::page_size());
  transport::uring_plane rings(detail::request_handler(d), state, device.get(), {});
  REQUIRE(rings.prepare(sized).empty());
  rings.start();
  const std::uint64_t every_queue = rings.queue_count();
  CHECK(eventually([&] { return state.counters().register_retries.load() >= every_queue; }));

  // Now answer INIT: the control channel, alone with the io_uring plane.
  transport::device_readers control(detail::request_handler(d), state, device.get(), 1,
                                    transport::device_readers::fds::session);
  control.start();
  // Bounded: if the queues never registered, the kernel would hold this read
  // for ever; aborting the connection turns that into a failure.
  std::atomic<bool> read_done{false};
  std::string got;
  std::jthread app([&] {
    got = slurp(dir.path() + "/hello.txt");
    read_done = true;
  });
  if (!eventually([&] { return read_done.load(); })) abort_fuse_connection_at(dir.path());
  app.join();
  CHECK(got == "Hello, world!\n");
  CHECK(state.counters().via_ring.load() > 0);
  // A request was served, so every queue has registered (the kernel holds
  // requests until all have): no REGISTER is left to retry.
  const auto retries = state.counters().register_retries.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(state.counters().register_retries.load() == retries);

  REQUIRE(::umount2(dir.path().c_str(), MNT_DETACH) == 0);
  // Every entry ended with ENOTCONN, and /dev/fuse reads ENODEV, already.
  const auto soon = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  control.stop(soon);
  rings.stop(soon);
  CHECK(rings.ended());
  CHECK_FALSE(is_fuse_mounted(dir.path()));
}

TEST_CASE("the same coroutine handlers work on the classic transport (blocking fallback)") {
  temp_dir dir;
  const std::string backing_path = dir.path() + "/backing";
  std::ofstream(backing_path) << "classic bytes";
  const std::string mp = dir.sub("mnt");
  backed_fs fs;
  fs.backing = ::open(backing_path.c_str(), O_RDONLY | O_CLOEXEC);
  server<backed_fs> srv(fs, uring_options(mp, transport_kind::classic));
  REQUIRE(srv.start());
  CHECK_FALSE(srv.using_uring());
  CHECK(slurp(mp + "/slow") == "classic bytes");
  CHECK(srv.session().counters().via_ring.load() == 0);
  srv.stop();
  ::close(fs.backing);
}

TEST_CASE("with enable_uring off: automatic falls back and says why; required io_uring fails clearly") {
  uring_switch off(false);
  temp_dir dir;
  hello_fs fs;
  {
    server<hello_fs> automatic(fs, uring_options(dir.path(), transport_kind::automatic));
    REQUIRE(automatic.start());
    CHECK_FALSE(automatic.using_uring());
    CHECK(slurp(dir.path() + "/hello.txt") == "Hello, world!\n");
    CHECK(automatic.session().counters().via_ring.load() == 0);
    automatic.stop();
  }
  server<hello_fs> required(fs, uring_options(dir.path(), transport_kind::uring));
  auto r = required.start();
  REQUIRE_FALSE(r);
  CHECK(r.error().code.value() == EOPNOTSUPP);
  CHECK(r.error().message.find("enable_uring") != std::string::npos);
  CHECK_FALSE(is_fuse_mounted(dir.path()));

  // The binary's log line says why it serves through /dev/fuse.
  const std::string hello = example_binary("FUSEXX_HELLO");
  REQUIRE(!hello.empty());
  child c = spawn({hello, "-f", "-o", "transport=auto", "-d", dir.path()}, true, true);
  REQUIRE(eventually([&] { return is_fuse_mounted(dir.path()); }));
  ::kill(c.pid, SIGTERM);
  std::string log = slurp_fd(c.stdout_fd);
  ::close(c.stdout_fd);
  CHECK(wait_exit(c.pid) == 0);
  CHECK(log.find("serving through /dev/fuse: FUSE-over-io_uring is switched off") != std::string::npos);
}

TEST_CASE("shutdown with requests in flight leaves no thread and no fd behind") {
  temp_dir dir;
  const std::string backing_path = dir.path() + "/backing";
  std::ofstream(backing_path) << "in flight";
  const std::string mp = dir.sub("mnt");
  const std::size_t threads_before = count_entries("/proc/self/task");
  const std::size_t fds_before = count_entries("/proc/self/fd");
  {
    backed_fs fs;
    fs.backing = ::open(backing_path.c_str(), O_RDONLY | O_CLOEXEC);
    server<backed_fs> srv(fs, uring_options(mp));
    REQUIRE(srv.start());
    REQUIRE(srv.using_uring());
    std::thread reader([&] {
      std::string got = slurp(mp + "/slow");  // its handler sleeps 100 ms on the ring
      CHECK((got == "in flight" || got.starts_with("<error")));
    });
    REQUIRE(eventually([&] { return fs.reads_in_flight.load() > 0; }));
    srv.stop();  // unmount while the read is in flight
    reader.join();
    CHECK_FALSE(is_fuse_mounted(mp));
    ::close(fs.backing);
  }
  CHECK(count_entries("/proc/self/task") == threads_before);
  CHECK(count_entries("/proc/self/fd") == fds_before);
}

TEST_CASE("SIGTERM stops a server on the io_uring transport") {
  const std::string hello = example_binary("FUSEXX_HELLO");
  REQUIRE(!hello.empty());
  temp_dir dir;
  child c = spawn({hello, "-f", "-o", "transport=uring", dir.path()});
  REQUIRE(eventually([&] { return is_fuse_mounted(dir.path()); }));
  CHECK(slurp(dir.path() + "/hello.txt") == "Hello, world!\n");
  ::kill(c.pid, SIGTERM);
  CHECK(wait_exit(c.pid) == 0);
  CHECK_FALSE(is_fuse_mounted(dir.path()));
}
