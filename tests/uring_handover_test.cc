// What this kernel does when a second process's io_uring queues join a live
// connection, and when a process serving through io_uring dies: the
// experiments behind docs/restart.md ("FUSE over io_uring"). Real mounts,
// real processes, SIGKILL. Runs alone (it loads every CPU) and outside the
// sandbox (it aborts wedged connections through fusectl).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "examples/hello_fs.hpp"
#include "tests/support/continued_session.hpp"
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

// A connection mounted on a fresh directory from this process's /dev/fuse
// fd, and processes to serve it (tests/tools/uring_server.cc). A request a
// dead queue holds keeps its thread in the kernel until the connection ends,
// and that thread keeps this process from exiting: so every wait here is
// bounded, and a watchdog aborts the connection (by number, mounted or not)
// should the test still run after `limit`, so that it fails, not hangs.
struct uring_mount {
  temp_dir dir;
  unique_fd device{::open("/dev/fuse", O_RDWR | O_CLOEXEC)};
  std::string file = dir.path() + "/hello.txt";
  int ready[2] = {-1, -1};
  unsigned connection = 0;
  std::atomic<bool> watchdog_fired{false};
  std::jthread watchdog;

  explicit uring_mount(const char* name, std::chrono::seconds limit = std::chrono::seconds(200)) {
    REQUIRE(device);
    const std::string data = fmt::format("fd={},rootmode=40000,user_id=0,group_id=0", device.get());
    REQUIRE(::mount(name, dir.path().c_str(), "fuse.uringtest", MS_NOSUID | MS_NODEV, data.c_str()) == 0);
    const auto entry = find_fuse_mount(dir.path());
    const auto id = entry ? fuse_connection_id(*entry) : std::nullopt;
    REQUIRE(id);
    connection = *id;
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    watchdog = std::jthread([this, limit](std::stop_token stop) {
      std::mutex m;
      std::condition_variable_any cv;
      std::unique_lock lock(m);
      cv.wait_for(lock, stop, limit, [] { return false; });
      if (stop.stop_requested()) return;
      watchdog_fired = true;
      std::fprintf(stderr, "uring_handover_test: still running after %llds; aborting connection %u\n",
                   static_cast<long long>(limit.count()), connection);
      abort_fuse_connection_mounting_fusectl(connection);
    });
  }
  ~uring_mount() {
    watchdog.request_stop();
    watchdog.join();
    abort();  // nothing may wait on it past the test
    ::umount2(dir.path().c_str(), MNT_DETACH);
    for (int fd : ready)
      if (fd >= 0) ::close(fd);
  }
  // Ends the connection: whatever waits on it fails at once.
  bool abort() { return abort_fuse_connection_mounting_fusectl(connection); }

  // A child process serving it, once its queues are registered.
  forked start_child(bool negotiate) {
    const std::string program = example_binary("FUSEXX_URING_SERVER");
    REQUIRE_MESSAGE(!program.empty(), "FUSEXX_URING_SERVER is not set");
    const std::string fd = std::to_string(device.get()), how = negotiate ? "1" : "0", to = std::to_string(ready[1]);
    const char* argv[] = {program.c_str(), fd.c_str(), how.c_str(), to.c_str(), nullptr};
    pid_t pid = ::fork();
    if (pid == 0) {  // async-signal-safe calls only until exec (uring_server.cc says why)
      ::fcntl(device.get(), F_SETFD, 0);
      ::fcntl(ready[1], F_SETFD, 0);
      ::execv(argv[0], const_cast<char* const*>(argv));
      ::_exit(127);
    }
    forked child(pid);
    pollfd p{ready[0], POLLIN, 0};
    const bool registered = ::poll(&p, 1, 30'000) == 1;
    char c;
    REQUIRE_MESSAGE((registered && ::read(ready[0], &c, 1) == 1),
                    "the serving child did not register its queues within 30 s; its exit status: "
                        << child.wait(std::chrono::seconds(1)));
    return child;
  }
};

// `ops` forced GETATTRs on m's file from one thread pinned to each CPU;
// false if any failed or they did not all finish within `limit` (a request
// held for ever: the connection is then aborted, so the threads end).
bool probe(uring_mount& m, int ops, std::chrono::seconds limit = std::chrono::seconds(10)) {
  std::atomic<int> failures{0}, done{0};
  std::vector<std::jthread> threads;
  const unsigned cpus = transport::possible_cpu_count();
  for (unsigned c = 0; c < cpus; ++c)
    threads.emplace_back([&, c] {
      pin(c);
      for (int i = 0; i < ops; ++i)
        if (forced_getattr(m.file) != 0) ++failures;
      ++done;
    });
  const bool finished = eventually([&] { return done.load() == static_cast<int>(cpus); }, limit);
  if (!finished) CHECK(m.abort());
  threads.clear();
  return finished && failures.load() == 0;
}

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
  REQUIRE(probe(m, 50));

  // This process joins with queues of its own: REGISTER on a connection whose
  // rings are already running is accepted, and the newest entries serve.
  hello_fs fs;
  fusexx::session s;
  detail::dispatcher<hello_fs> d(fs, s);
  continue_uring_session(s);
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
  CHECK(probe(m, 200));
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
  CHECK(probe(m, 500));
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
      CHECK(m.abort());
    }
    apps.clear();
    if (wedged == 0) CHECK(probe(m, 20));
  }
  MESSAGE("rounds in which a killed process's queue left a request waiting: " << wedged);

  ::umount2(dir.path().c_str(), MNT_DETACH);
  plane.stop(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  CHECK_FALSE(m.watchdog_fired.load());
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
  REQUIRE(probe(m, 20));
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
  std::atomic<bool> second_done{false};
  std::jthread second([&] {
    pin(0);
    (void)forced_getattr(file);
    second_done = true;
  });
  const bool answered = eventually([&] { return second_done.load(); }, std::chrono::seconds(10));
  const bool taken_after_commit = eventually([&] { return first_done.load(); }, std::chrono::seconds(5));
  if (!answered || !taken_after_commit) CHECK(m.abort());
  second.join();
  first.join();
  CHECK(answered);
  CHECK_MESSAGE(!taken_by_register, "this kernel hands queued requests to newly registered entries: "
                                    "docs/restart.md's account of io_uring after a crash needs updating");
  CHECK(taken_after_commit);
  CHECK_FALSE(m.watchdog_fired.load());
  ::umount2(m.dir.path().c_str(), MNT_DETACH);
  ::kill(b.pid(), SIGKILL);
  (void)b.wait();
}
