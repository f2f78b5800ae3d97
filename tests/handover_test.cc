// Zero-downtime upgrade: a new memfs process takes a live mount over from the
// running one (--takeover), again and again, while an application process
// keeps files and a directory open and works on them. It must see no error
// and no wrong byte, keep its locks, and the node lookup counts must still
// balance in the end. And every way a handover can fail leaves the running
// server serving. Real mounts, real processes.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <functional>
#include <optional>
#include <stdexcept>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "examples/memfs_fs.hpp"
#include "tests/support/busy_application.hpp"
#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

constexpr int handovers = 20;
static_assert(handovers <= max_rounds);

// A memfs process serving `mp` in the foreground.
child start_memfs(const std::string& bin, const std::string& mp, bool takeover) {
  std::vector<std::string> args{bin, "-f"};
  if (takeover) args.push_back("--takeover");
  args.insert(args.end(), {"-o", "entry_timeout=0,attr_timeout=0", mp});
  return spawn(args, /*capture_stdout=*/true, /*with_stderr=*/true);
}

std::string output_of(child& c) {
  std::string out = slurp_fd(c.stdout_fd);
  ::close(c.stdout_fd);
  c.stdout_fd = -1;
  return out;
}

// A memfs mount with files an application keeps open, the application
// running, and memfs served by a process of its own (`running`).
struct live_mount {
  std::string memfs = example_binary("FUSEXX_MEMFS");
  temp_dir dir;
  std::string mp = dir.path();
  child running;
  std::optional<busy_application> app;
  shared_state* st = nullptr;

  live_mount() {
    REQUIRE(!memfs.empty());
    running = start_memfs(memfs, mp, false);
    REQUIRE(eventually([&] { return is_fuse_mounted(mp); }));
    make_application_files(mp);
    app.emplace(mp);
    st = &app->state();
  }
  ~live_mount() {
    app.reset();
    if (running.pid > 0 && !process_ended(running.pid)) {
      ::kill(running.pid, SIGTERM);
      (void)wait_exit(running.pid);
    }
    if (running.stdout_fd >= 0) ::close(running.stdout_fd);
    if (is_fuse_mounted(mp)) (void)::umount2(mp.c_str(), MNT_DETACH);
  }

  bool progresses(std::uint64_t n = 3) { return app->progresses(n); }
  void check_application_unharmed() { app->check_unharmed(); }
};

// A copy of a sealed snapshot memfd, changed by `edit`, as a new memfd.
unique_fd edited_snapshot(int fd, const std::function<void(std::vector<std::byte>&)>& edit) {
  struct stat sb {};
  REQUIRE(::fstat(fd, &sb) == 0);
  std::vector<std::byte> bytes(static_cast<std::size_t>(sb.st_size));
  REQUIRE(::pread(fd, bytes.data(), bytes.size(), 0) == ssize_t(bytes.size()));
  edit(bytes);
  unique_fd out(::memfd_create("edited-snapshot", MFD_CLOEXEC));
  REQUIRE(::write(out.get(), bytes.data(), bytes.size()) == ssize_t(bytes.size()));
  return out;
}

// This process as a successor of memfs type Fs for `offer`: the outcome.
template <class Fs>
outcome<void> take_over_here(const std::string& mp, handover::offer offer) {
  Fs fs;
  server_options o;
  o.mount.mountpoint = mp;
  memfs_fs::configure_mount(o.mount);
  o.transport = transport_from_env();
  server<Fs> srv(fs, o);
  event_loop loop;
  auto took = loop.run(srv.take_over_async(loop, std::move(offer)));
  REQUIRE(took);
  return *took;
}

}  // namespace

TEST_CASE("20 handovers in a row: the application sees no error, keeps its files and locks, and nothing leaks") {
  live_mount m;
  const std::string& mp = m.mp;
  shared_state* st = m.st;

  // A process waiting for the application's POSIX lock all along: its
  // request is waiting in the server at every handover (a suspended
  // handler), goes to each successor (resent, or handed over with its
  // io_uring entry), and is granted in the end, once the application lets go.
  forked waiter = fork_child([&] {
    const int fd = ::open((mp + "/rw").c_str(), O_RDWR);
    struct ::flock l {};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    l.l_len = 1;
    return fd >= 0 && ::fcntl(fd, F_SETLKW, &l) == 0 ? 0 : 1;
  });
  REQUIRE(m.progresses());

  std::vector<double> pause_ms;
  for (int round = 1; round <= handovers; ++round) {
    CAPTURE(round);
    REQUIRE(m.progresses());  // the application is busy
    st->round = round;
    child successor = start_memfs(m.memfs, mp, true);
    const int predecessor = wait_exit(m.running.pid, std::chrono::seconds(30));
    const std::string said = output_of(m.running);
    REQUIRE_MESSAGE(predecessor == 0, "the predecessor ended with " << predecessor << ": " << said);
    m.running = successor;
    st->round = handovers + 1;  // operations after the handover count elsewhere
    REQUIRE_MESSAGE(m.progresses(), "the application made no progress after handover " << round);
    REQUIRE_FALSE(process_ended(m.running.pid));
    pause_ms.push_back(double(st->longest_us[round].load()) / 1000.0);
  }
  // The locks the application took before the first handover are still its.
  check_locks_held(mp, m.app->pid());

  // The last successor is this test process itself, so the books can be
  // looked at: memfs's own lookup counts against the session's.
  memfs_fs fs;
  server_options o;
  o.mount.mountpoint = mp;
  memfs_fs::configure_mount(o.mount);
  o.transport = transport_from_env();
  server<memfs_fs> srv(fs, o);
  {
    event_loop loop;
    auto took = loop.run(srv.take_over_async(loop));
    REQUIRE(took);
    REQUIRE_MESSAGE(*took, (*took ? "" : took->error().message));
  }
  CHECK(wait_exit(m.running.pid, std::chrono::seconds(30)) == 0);
  (void)output_of(m.running);
  m.running.pid = -1;
  const auto ops = st->ops.load();
  REQUIRE(eventually([&] { return st->ops.load() > ops + 3; }));

  CHECK_FALSE(process_ended(waiter.pid()));  // still waiting: the application holds the lock
  m.check_application_unharmed();
  CHECK_MESSAGE(waiter.wait() == 0, "the lock waiter did not get the lock once the application let go");
  CHECK(st->ops.load() > 100);
  std::ranges::sort(pause_ms);
  MESSAGE(handovers << " handovers under load; the longest application operation of each (ms): median "
                    << pause_ms[pause_ms.size() / 2] << ", p99 " << pause_ms[pause_ms.size() * 99 / 100] << ", max "
                    << pause_ms.back() << "; " << st->ops.load() << " application rounds in all");

  // Lookup counts still balance: the session's books agree with memfs's, and
  // once everything is deleted every inode goes — none leaked, none
  // forgotten twice.
  CHECK(srv.session().nodes().mismatches() == 0);
  CHECK(fs.forget_errors() == 0);
  for (const char* f : {"fixed", "rw", "log"}) REQUIRE(::unlink((mp + "/" + f).c_str()) == 0);
  for (int i = 0; i < 5; ++i) REQUIRE(::unlink((mp + "/d/keep" + std::to_string(i)).c_str()) == 0);
  REQUIRE(::rmdir((mp + "/d").c_str()) == 0);
  CHECK(eventually([&] { return fs.live_inodes() == 1; }));
  CHECK(fs.forget_errors() == 0);
  CHECK(srv.session().nodes().mismatches() == 0);
  srv.stop();
  CHECK_FALSE(is_fuse_mounted(mp));
}

TEST_CASE("every failed handover leaves the running server serving, and the application sees nothing") {
  live_mount m;
  const std::string& mp = m.mp;

  SUBCASE("a successor of another filesystem type is refused") {
    auto offer = handover::ask(mp, "passthrough");
    REQUIRE_FALSE(offer);
    CHECK_MESSAGE(offer.error().message.find("serves 'passthrough', this mount is 'memfs'") != std::string::npos,
                  offer.error().message);
  }
  SUBCASE("a successor whose restore() fails half-way (the snapshot ends in the middle of memfs's tree)") {
    auto offer = handover::ask(mp, "memfs");
    REQUIRE_MESSAGE(offer, offer.error().message);
    offer->snapshot = edited_snapshot(offer->snapshot.get(), [](std::vector<std::byte>& b) {
      // Cut the payload to three quarters, with a header that agrees (length,
      // checksum): the session part reads, memfs's restore() runs out.
      const std::size_t header = 32, payload = (b.size() - header) * 3 / 4;
      b.resize(header + payload);
      detail::put_le<std::uint64_t>(b.data() + 16, payload);
      detail::put_le<std::uint32_t>(b.data() + 24, detail::crc32c(std::span(b).subspan(header)));
    });
    auto took = take_over_here<memfs_fs>(mp, std::move(*offer));
    REQUIRE_FALSE(took);
    CHECK_MESSAGE(took.error().message.find("restore()") != std::string::npos, took.error().message);
  }
  SUBCASE("a successor killed before it acknowledges") {
    forked successor = fork_child([&] {
      auto offer = handover::ask(mp, "memfs");
      if (!offer) return 1;
      ::raise(SIGKILL);  // holding the connection's fds and the parked predecessor's socket
      return 2;
    });
    CHECK(successor.wait() == 128 + SIGKILL);
  }
  SUBCASE("a corrupted snapshot") {
    auto offer = handover::ask(mp, "memfs");
    REQUIRE_MESSAGE(offer, offer.error().message);
    offer->snapshot = edited_snapshot(offer->snapshot.get(), [](std::vector<std::byte>& b) { b[b.size() / 2] ^= std::byte{0x20}; });
    auto took = take_over_here<memfs_fs>(mp, std::move(*offer));
    REQUIRE_FALSE(took);
    CHECK_MESSAGE(took.error().message.find("checksum does not match") != std::string::npos, took.error().message);
  }
  SUBCASE("a snapshot of a newer format") {
    auto offer = handover::ask(mp, "memfs");
    REQUIRE_MESSAGE(offer, offer.error().message);
    offer->snapshot = edited_snapshot(offer->snapshot.get(), [](std::vector<std::byte>& b) {
      b[8] = static_cast<std::byte>(snapshot_format_version + 1);  // the format version, little-endian
    });
    auto took = take_over_here<memfs_fs>(mp, std::move(*offer));
    REQUIRE_FALSE(took);
    CHECK_MESSAGE(took.error().message.find("newer than this fusexx reads") != std::string::npos, took.error().message);
  }
  // The predecessor resumed: it serves, the application never noticed, and
  // a handover after all that still works.
  REQUIRE_FALSE(process_ended(m.running.pid));
  REQUIRE(m.progresses());
  child successor = start_memfs(m.memfs, mp, true);
  CHECK(wait_exit(m.running.pid, std::chrono::seconds(30)) == 0);
  (void)output_of(m.running);
  m.running = successor;
  m.check_application_unharmed();
}

TEST_CASE("--takeover says in one sentence why it cannot: not restartable, or not a FUSE mount") {
  temp_dir dir;
  const auto hello = run({example_binary("FUSEXX_HELLO"), "--takeover", dir.path()}, /*with_stderr=*/true);
  CHECK(hello.status == 2);
  CHECK_MESSAGE(hello.out.find("this filesystem is not restartable") != std::string::npos, hello.out);
  const auto memfs = run({example_binary("FUSEXX_MEMFS"), "--takeover", dir.path()}, /*with_stderr=*/true);
  CHECK(memfs.status != 0);
  CHECK_MESSAGE(memfs.out.find("is not a FUSE mount") != std::string::npos, memfs.out);
}

TEST_CASE("a control socket name still held elsewhere: the server takes a fallback, and successors find it") {
  const unsigned connection = 900000 + static_cast<unsigned>(::getpid() % 1000);  // no FUSE connection has it
  auto first = listen_control(connection);
  REQUIRE_MESSAGE(first, first.error().message);
  auto second = listen_control(connection);  // as a new server would, while a stale one holds the name
  REQUIRE_MESSAGE(second, second.error().message);
  const auto names = control_socket_candidates(connection);
  REQUIRE(names.size() == 2);
  CHECK(names[0] == control_socket_name(connection));
  CHECK(names[1] == control_socket_name(connection) + "." + std::to_string(::getpid()));
  for (const auto& name : names) CHECK(connect_control_socket(name, "/test"));
}
