// Zero-downtime upgrade: a new memfs or passthrough process takes a live mount
// over from the running one (--takeover), again and again, while an application process
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
#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "examples/memfs_fs.hpp"
#include "examples/passthrough_fs.hpp"
#include "tests/support/busy_application.hpp"
#include "tests/support/process.hpp"
#include "tests/support/takeover.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

constexpr int handovers = 20;
static_assert(handovers <= max_rounds);

// The filesystems handed over, run as users run them. memfs carries its
// whole tree in the snapshot; passthrough its inodes and open files as fds
// beside it (the same open files: offsets and locks stay).
struct memfs_subject {
  using fs_type = memfs_fs;
  static constexpr const char* type = "memfs";
  static constexpr std::size_t inodes_when_empty = 1;  // the root
  static constexpr bool lock_owner_known = true;       // F_GETLK names the holder's pid
  std::string binary = example_binary("FUSEXX_MEMFS");
  std::vector<std::string> options() const { return {"-o", "entry_timeout=0,attr_timeout=0"}; }
  // The successor in this process, configured as the binary configures itself.
  void configure(fs_type&, server_options& o) const { memfs_fs::configure_mount(o.mount); }
};
struct passthrough_subject {
  using fs_type = passthrough_fs;
  static constexpr const char* type = "passthrough";
  static constexpr std::size_t inodes_when_empty = 0;  // the root is not counted
  static constexpr bool lock_owner_known = false;      // OFD locks: F_GETLK reports pid 0
  std::string binary = example_binary("FUSEXX_PASSTHROUGH");
  temp_dir source_dir;
  std::string source = source_dir.path();
  std::vector<std::string> options() const { return {"-o", "source=" + source + ",timeout=0"}; }
  void configure(fs_type& fs, server_options& o) const {
    fs.source = source;
    fs.cache_timeout = timeout(0);
    auto opened = fs.open_source();
    REQUIRE_MESSAGE(opened, opened.error().message);
    passthrough_fs::configure_mount(o.mount);
    o.mount.subtype = type;
  }
};

// A mount of S with files an application keeps open, the application
// running, and S served by a process of its own (`running`).
template <class S>
struct live_mount {
  S subject;
  temp_dir dir;
  std::string mp = dir.path();
  child running;
  std::optional<busy_application> app;
  shared_state* st = nullptr;

  live_mount() {
    REQUIRE(!subject.binary.empty());
    running = start(false);
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

  child start(bool takeover) { return start_server(subject.binary, subject.options(), mp, takeover); }
  // A successor process replaces the running one; false (with what the
  // predecessor said) when the predecessor did not end well.
  void replace() {
    child successor = start(true);
    const int predecessor = wait_exit(running.pid, std::chrono::seconds(30));
    const std::string said = output_of(running);
    REQUIRE_MESSAGE(predecessor == 0, "the predecessor ended with " << predecessor << ": " << said);
    running = successor;
  }
  // This process as the successor (so that a test can look at its books).
  std::unique_ptr<successor_here<typename S::fs_type>> successor() {
    return std::make_unique<successor_here<typename S::fs_type>>(
        mp, [this](typename S::fs_type& fs, server_options& o) { subject.configure(fs, o); });
  }
  // The running process has handed over to this one and ended.
  void predecessor_left() {
    CHECK(wait_exit(running.pid, std::chrono::seconds(30)) == 0);
    (void)output_of(running);
    running.pid = -1;
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

}  // namespace

TEST_CASE_TEMPLATE("20 handovers in a row: the application sees no error, keeps its files and locks, and nothing leaks",
                   S, memfs_subject, passthrough_subject) {
  live_mount<S> m;
  const std::string& mp = m.mp;
  shared_state* st = m.st;

  // A process waiting for the application's POSIX lock all along: its
  // request is waiting in the server at every handover (a suspended
  // handler), goes to each successor (resent, or handed over with its
  // io_uring entry), and is granted in the end, once the application lets go.
  forked waiter = wait_for_application_lock(mp);
  REQUIRE(m.progresses());

  std::vector<double> pause_ms;
  for (int round = 1; round <= handovers; ++round) {
    CAPTURE(round);
    REQUIRE(m.progresses());  // the application is busy
    st->round = round;
    m.replace();
    st->round = handovers + 1;  // operations after the handover count elsewhere
    REQUIRE_MESSAGE(m.progresses(), "the application made no progress after handover " << round);
    REQUIRE_FALSE(process_ended(m.running.pid));
    pause_ms.push_back(double(st->longest_us[round].load()) / 1000.0);
  }
  // The locks the application took before the first handover are still its.
  check_locks_held(mp, S::lock_owner_known ? m.app->pid() : 0);

  // The last successor is this test process itself, so the books can be
  // looked at: the filesystem's own lookup counts against the session's.
  auto here = m.successor();
  auto took = here->take_over();
  REQUIRE_MESSAGE(took, (took ? "" : took.error().message));
  m.predecessor_left();
  auto& fs = here->fs;
  auto& srv = *here->srv;
  const auto ops = st->ops.load();
  REQUIRE(eventually([&] { return st->ops.load() > ops + 3; }));

  CHECK_FALSE(process_ended(waiter.pid()));  // still waiting: the application holds the lock
  m.check_application_unharmed();
  CHECK_MESSAGE(waiter.wait() == 0, "the lock waiter did not get the lock once the application let go");
  CHECK(st->ops.load() > 100);
  std::ranges::sort(pause_ms);
  MESSAGE(std::string(S::type) << ": " << handovers << " handovers under load; the longest application operation of each (ms): median "
                  << pause_ms[pause_ms.size() / 2] << ", p99 " << pause_ms[pause_ms.size() * 99 / 100] << ", max "
                  << pause_ms.back() << "; " << st->ops.load() << " application rounds in all");

  // Lookup counts still balance: the session's books agree with the
  // filesystem's, and once everything is deleted every inode goes — none
  // leaked, none forgotten twice. Every open file was released.
  CHECK(srv.session().nodes().mismatches() == 0);
  CHECK(fs.forget_errors() == 0);
  for (const char* f : {"fixed", "rw", "log"}) REQUIRE(::unlink((mp + "/" + f).c_str()) == 0);
  for (int i = 0; i < 5; ++i) REQUIRE(::unlink((mp + "/d/keep" + std::to_string(i)).c_str()) == 0);
  REQUIRE(::rmdir((mp + "/d").c_str()) == 0);
  CHECK(eventually([&] { return fs.live_inodes() == S::inodes_when_empty; }));
  CHECK(fs.forget_errors() == 0);
  CHECK(srv.session().nodes().mismatches() == 0);
  CHECK(eventually([&] { return srv.session().handles().size() == 0; }));
  if constexpr (requires { fs.open_files(); }) CHECK(fs.open_files() == 0);
  srv.stop();
  CHECK_FALSE(is_fuse_mounted(mp));
}

TEST_CASE("every failed handover leaves the running server serving, and the application sees nothing") {
  live_mount<memfs_subject> m;
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
    auto took = m.successor()->take_over(std::move(*offer));
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
    auto took = m.successor()->take_over(std::move(*offer));
    REQUIRE_FALSE(took);
    CHECK_MESSAGE(took.error().message.find("checksum does not match") != std::string::npos, took.error().message);
  }
  SUBCASE("a snapshot of a newer format") {
    auto offer = handover::ask(mp, "memfs");
    REQUIRE_MESSAGE(offer, offer.error().message);
    offer->snapshot = edited_snapshot(offer->snapshot.get(), [](std::vector<std::byte>& b) {
      b[8] = static_cast<std::byte>(snapshot_format_version + 1);  // the format version, little-endian
    });
    auto took = m.successor()->take_over(std::move(*offer));
    REQUIRE_FALSE(took);
    CHECK_MESSAGE(took.error().message.find("newer than this fusexx reads") != std::string::npos, took.error().message);
  }
  // The predecessor resumed: it serves, the application never noticed, and
  // a handover after all that still works.
  REQUIRE_FALSE(process_ended(m.running.pid));
  REQUIRE(m.progresses());
  m.replace();
  m.check_application_unharmed();
}

TEST_CASE("passthrough: a successor for another source, or without the open files beside the snapshot, is refused") {
  live_mount<passthrough_subject> m;
  const std::string& mp = m.mp;
  SUBCASE("a successor mirroring another directory") {
    temp_dir elsewhere;
    successor_here<passthrough_fs> other(mp, [&](passthrough_fs& fs, server_options& o) {
      m.subject.configure(fs, o);
      fs.source = elsewhere.path();
      REQUIRE(fs.open_source());
    });
    auto took = other.take_over();
    REQUIRE_FALSE(took);
    CHECK_MESSAGE(took.error().message.find("restore() failed") != std::string::npos, took.error().message);
  }
  SUBCASE("a successor that lost an fd beside the snapshot") {
    auto offer = handover::ask(mp, "passthrough");
    REQUIRE_MESSAGE(offer, offer.error().message);
    // The inodes, the application's three files and its directory at least.
    REQUIRE(offer->snapshot_fds.size() >= 5);
    offer->snapshot_fds[offer->snapshot_fds.size() / 2].reset();
    auto took = m.successor()->take_over(std::move(*offer));
    REQUIRE_FALSE(took);
    CHECK_MESSAGE(took.error().message.find("fd beside it is missing") != std::string::npos, took.error().message);
  }
  REQUIRE_FALSE(process_ended(m.running.pid));
  REQUIRE(m.progresses());
  m.replace();
  check_locks_held(mp, 0);
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

TEST_CASE("auto_unmount across a handover: the predecessor's leaving unmounts nothing, the successor is watched") {
  temp_dir dir;
  const std::string mp = dir.sub("mnt");
  const std::string memfs = example_binary("FUSEXX_MEMFS");
  child first = start_server(memfs, {"-o", "auto_unmount"}, mp, false);
  REQUIRE(eventually([&] { return is_fuse_mounted(mp) || process_ended(first.pid); }));
  REQUIRE(is_fuse_mounted(mp));
  {
    std::ofstream(mp + "/kept") << "still here";
  }
  child second = start_server(memfs, {"-o", "auto_unmount"}, mp, true);
  const int first_status = wait_exit(first.pid);
  CHECK_MESSAGE(first_status == 0, output_of(first));
  // The predecessor's watcher found the mount served: it is still there.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  REQUIRE(is_fuse_mounted(mp));
  CHECK(slurp(mp + "/kept") == "still here");
  // The successor's own watcher takes the mount away once it is killed.
  ::kill(second.pid, SIGKILL);
  CHECK(wait_exit(second.pid) == 128 + SIGKILL);
  CHECK_MESSAGE(eventually([&] { return !is_fuse_mounted(mp); }), output_of(second));
}
