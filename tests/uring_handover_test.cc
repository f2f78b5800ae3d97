// What this kernel does when a second process's io_uring queues join a live
// connection, and when a process serving through io_uring dies: the
// experiments behind docs/restart.md ("FUSE over io_uring"). Real mounts,
// real processes, SIGKILL. Runs alone (it loads every CPU) and outside the
// sandbox (it aborts wedged connections through fusectl).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <thread>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "examples/hello_fs.hpp"
#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

// The dispatcher, counting what this plane handled.
struct counting {
  detail::dispatcher<hello_fs>& d;
  std::atomic<std::uint64_t> handled{0};
  detail::disposition handle(detail::incoming& in) {
    handled.fetch_add(1, std::memory_order_relaxed);
    return d.handle(in);
  }
};

// A GETATTR that always reaches the server, whatever the caches hold.
int forced_getattr(const std::string& path) {
  struct statx sx {};
  return ::statx(AT_FDCWD, path.c_str(), AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &sx);
}

void pin(unsigned cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
}

// `ops` forced GETATTRs from one thread pinned to each CPU; false if any
// failed or they did not all finish within `limit` (a request held for
// ever: the connection is then aborted, so the threads end).
bool probe(const std::string& path, int ops, const std::string& mp, std::chrono::seconds limit = std::chrono::seconds(10)) {
  std::atomic<int> failures{0}, done{0};
  std::vector<std::jthread> threads;
  const unsigned cpus = transport::possible_cpu_count();
  for (unsigned c = 0; c < cpus; ++c)
    threads.emplace_back([&, c] {
      pin(c);
      for (int i = 0; i < ops; ++i)
        if (forced_getattr(path) != 0) ++failures;
      ++done;
    });
  const bool finished = eventually([&] { return done.load() == static_cast<int>(cpus); }, limit);
  if (!finished) abort_fuse_connection_at(mp);
  threads.clear();
  return finished && failures.load() == 0;
}

// A session continuing the connection's INIT (as a successor restores it).
void continue_session(fusexx::session& s) {
  session_description d;
  d.proto_major = 7;
  d.proto_minor = 45;
  d.granted = proto::init_flag::over_io_uring | proto::init_flag::max_pages | proto::init_flag::init_ext;
  d.max_pages = connection::kernel_max_pages_limit();
  d.max_write = static_cast<std::uint32_t>(d.max_pages * connection::page_size());
  s.restore(d);
}

// Serves the connection on `fd` in this (child) process through io_uring:
// INIT (when `negotiate`) on a control channel, requests on its own queues.
// Writes one byte to `ready` once its queues are registered, then serves
// until killed.
[[noreturn]] void serve_in_child(int fd, bool negotiate, int ready) {
  hello_fs fs;
  fusexx::session s;
  detail::dispatcher<hello_fs> d(fs, s);
  transport::uring_plane plane(detail::request_handler(d), s, fd, {});
  std::optional<transport::device_readers> control;
  if (negotiate) {
    s.conn().want(proto::init_flag::over_io_uring);
    s.before_init_reply = [&](const connection& c, std::uint64_t granted) {
      if (!plane.prepare(c).empty()) ::_exit(20);
      return granted;
    };
    s.after_init_reply = [&](const connection&) { plane.start(); };
    control.emplace(detail::request_handler(d), s, fd, 1, transport::device_readers::fds::session);
    control->start();
    s.init().wait();
  } else {
    continue_session(s);
    if (!plane.prepare(s.conn()).empty()) ::_exit(21);
    plane.start();
  }
  // Registered once a request could be served: the caller probes.
  const char one = 1;
  if (::write(ready, &one, 1) != 1) ::_exit(22);
  for (;;) ::pause();
}

// A connection mounted on a fresh directory from this process's /dev/fuse
// fd, and processes to serve it (serve_in_child).
struct uring_mount {
  temp_dir dir;
  unique_fd device{::open("/dev/fuse", O_RDWR | O_CLOEXEC)};
  std::string file = dir.path() + "/hello.txt";
  int ready[2] = {-1, -1};

  explicit uring_mount(const char* name) {
    REQUIRE(device);
    const std::string data = fmt::format("fd={},rootmode=40000,user_id=0,group_id=0", device.get());
    REQUIRE(::mount(name, dir.path().c_str(), "fuse.uringtest", MS_NOSUID | MS_NODEV, data.c_str()) == 0);
    REQUIRE(::pipe(ready) == 0);
  }
  ~uring_mount() {
    ::umount2(dir.path().c_str(), MNT_DETACH);
    for (int fd : ready)
      if (fd >= 0) ::close(fd);
  }
  // A child process serving it, once its queues are registered.
  forked start_child(bool negotiate) {
    pid_t pid = ::fork();
    if (pid == 0) serve_in_child(device.get(), negotiate, ready[1]);
    char c;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    return forked(pid);
  }
};

}  // namespace

TEST_CASE("io_uring: a second process's queues join a running connection; the first process dies; nothing is lost") {
  REQUIRE_MESSAGE(transport::uring_unavailable_reason().empty(), transport::uring_unavailable_reason());
  uring_mount m("handover");
  temp_dir& dir = m.dir;
  const unique_fd& device = m.device;
  const std::string& file = m.file;
  auto start_child = [&](bool negotiate) { return m.start_child(negotiate); };

  // Process A negotiates INIT with FUSE over io_uring and serves.
  forked a = start_child(true);
  REQUIRE(probe(file, 50, dir.path()));

  // This process joins with queues of its own: REGISTER on a connection whose
  // rings are already running is accepted, and the newest entries serve.
  hello_fs fs;
  fusexx::session s;
  detail::dispatcher<hello_fs> d(fs, s);
  continue_session(s);
  counting mine{d};
  transport::uring_plane plane(detail::request_handler(mine), s, device.get(), {});
  REQUIRE(plane.prepare(s.conn()).empty());
  plane.start();
  // (30 s: the kernel hands a request to an entry of the application's CPU;
  // once in a while, with the machine busy, the first several land on A's.)
  CHECK(eventually(
      [&] {
        forced_getattr(file);
        return mine.handled.load() > 0;
      },
      std::chrono::seconds(30)));
  CHECK(probe(file, 200, dir.path()));
  MESSAGE("requests served by the joining queues: " << mine.handled.load());

  // A dies (SIGKILL) with its entries idle (no request in flight: the
  // probes above have all been answered): the kernel cancels them, and the
  // requests that come next go through ours. (Killed while one of its
  // entries holds a request, that request is lost: the rounds below.)
  ::kill(a.pid(), SIGKILL);
  CHECK(a.wait() == 128 + SIGKILL);
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::jthread load([&] {
    while (!stop)
      if (forced_getattr(file) != 0) ++errors;
  });
  CHECK(probe(file, 500, dir.path()));
  stop = true;
  load.join();
  CHECK(errors.load() == 0);

  // Now the other way round, again and again: a process joins, serves, and
  // is killed under load. A request the kernel placed in one of its entries
  // as it died would wait for ever (no resend on io_uring): the probes say.
  int wedged = 0;
  for (int round = 0; round < 10 && wedged == 0; ++round) {
    forked c = start_child(false);
    std::atomic<bool> busy{true};
    std::atomic<unsigned> ended{0};
    std::vector<std::jthread> apps;
    const unsigned cpus = transport::possible_cpu_count();
    for (unsigned cpu = 0; cpu < cpus; ++cpu)
      apps.emplace_back([&, cpu] {
        pin(cpu);
        while (busy) forced_getattr(file);
        ++ended;
      });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ::kill(c.pid(), SIGKILL);
    (void)c.wait();
    busy = false;
    // Every application thread must get its last answer; one that does not
    // is held by the dead queue. Aborting the connection then ends it.
    if (!eventually([&] { return ended.load() == cpus; }, std::chrono::seconds(5))) {
      ++wedged;
      abort_fuse_connection_at(dir.path());
    }
    apps.clear();
    if (wedged == 0) CHECK(probe(file, 20, dir.path()));
  }
  MESSAGE("rounds in which a killed process's queue left a request waiting: " << wedged);

  ::umount2(dir.path().c_str(), MNT_DETACH);
  plane.stop(std::chrono::steady_clock::now() + std::chrono::seconds(2));
}

TEST_CASE("io_uring: a request that comes while no process serves waits in its queue; a queue registered later does "
          "not take it until another request on that queue is answered") {
  // Why -o supervise serves through /dev/fuse (docs/restart.md, "What the
  // kernel does"): after a server's death a successor's REGISTER makes its
  // entries available, but fuse_uring_do_register does not hand them the
  // requests already queued (only a commit fetches those).
  REQUIRE_MESSAGE(transport::uring_unavailable_reason().empty(), transport::uring_unavailable_reason());
  uring_mount m("queued");
  const std::string& file = m.file;
  forked a = m.start_child(true);
  REQUIRE(probe(file, 20, m.dir.path()));
  // A dies with its entries idle: the kernel cancels them all.
  ::kill(a.pid(), SIGKILL);
  CHECK(a.wait() == 128 + SIGKILL);
  // A request from CPU 0 finds no entry on queue 0, and waits there.
  std::atomic<bool> first_done{false};
  std::jthread first([&] {
    pin(0);
    (void)forced_getattr(file);
    first_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK_FALSE(first_done.load());
  // B registers queues of its own: the waiting request stays where it is.
  forked b = m.start_child(false);
  const bool taken_by_register = eventually([&] { return first_done.load(); }, std::chrono::seconds(3));
  // Another request on queue 0 gets one of B's entries; its commit fetches
  // the one waiting.
  std::jthread second([&] {
    pin(0);
    (void)forced_getattr(file);
  });
  second.join();
  const bool taken_after_commit = eventually([&] { return first_done.load(); }, std::chrono::seconds(5));
  if (!taken_after_commit) abort_fuse_connection_at(m.dir.path());
  first.join();
  CHECK_MESSAGE(!taken_by_register, "this kernel hands queued requests to newly registered entries: "
                                    "docs/restart.md's account of io_uring after a crash needs updating");
  CHECK(taken_after_commit);
  ::umount2(m.dir.path().c_str(), MNT_DETACH);
  ::kill(b.pid(), SIGKILL);
  (void)b.wait();
}
