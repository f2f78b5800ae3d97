// The systemd way (docs/restart.md): memfs and passthrough run as a service by a test double
// of systemd (tests/support/fake_systemd.hpp) keeps its /dev/fuse fd in the
// service's file descriptor store, and on SIGTERM its snapshot beside it; a
// new start of the service gets both back through LISTEN_FDS and continues
// the mount. `systemctl restart` is then an upgrade an application notices
// only as a pause. Real mounts, real processes, really terminated.
//
// Classic transport only: a connection served through io_uring cannot be
// handed over yet, so there the server keeps out of the store (tested last).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <fusexx/fusexx.hpp>
#include <fusexx/restart/systemd.hpp>

#include "tests/support/busy_application.hpp"
#include "tests/support/fake_systemd.hpp"
#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

constexpr int restarts = 10;
static_assert(restarts <= max_rounds);

const std::string dev{systemd::device_name};
const std::string snap{systemd::snapshot_name};

// memfs as a service: in the foreground (the main process is the server).
std::vector<std::string> memfs_service(const std::string& mp, const std::string& transport = "classic") {
  const std::string memfs = example_binary("FUSEXX_MEMFS");
  REQUIRE(!memfs.empty());
  return {memfs, "-f", "-o", "entry_timeout=0,attr_timeout=0,transport=" + transport, mp};
}

// How many fds beside the snapshot the store holds (passthrough's open files).
std::size_t beside(const fake_systemd& sd) {
  return static_cast<std::size_t>(std::ranges::count_if(
      sd.names(), [](const std::string& n) { return n.starts_with(systemd::snapshot_fd_prefix); }));
}

// The services restarted: memfs (its tree in the snapshot) and passthrough
// (its inodes and open files in the store beside the snapshot, one fd each).
struct memfs_service_subject {
  static constexpr const char* type = "memfs";
  static constexpr unsigned store_max = 4;
  static constexpr bool lock_owner_known = true;
  std::vector<std::string> argv(const std::string& mp) const { return memfs_service(mp); }
};
struct passthrough_service_subject {
  static constexpr const char* type = "passthrough";
  static constexpr unsigned store_max = 512;  // the connection, the snapshot and every fd beside it
  static constexpr bool lock_owner_known = false;  // OFD locks: F_GETLK reports pid 0
  temp_dir source;
  std::vector<std::string> argv(const std::string& mp) const {
    const std::string passthrough = example_binary("FUSEXX_PASSTHROUGH");
    REQUIRE(!passthrough.empty());
    return {passthrough, "-f", "-o", "source=" + source.path() + ",timeout=0,transport=classic", mp};
  }
};

// Started, mounted, and READY=1 said.
void start_service(fake_systemd& sd, const std::string& mp) {
  REQUIRE(sd.start());
  const bool up = eventually([&] {
    sd.receive();
    return (sd.ready() && is_fuse_mounted(mp)) || process_ended(sd.main_pid());
  });
  REQUIRE_MESSAGE(up, sd.output());
  REQUIRE_MESSAGE(!process_ended(sd.main_pid()), sd.output());
}

// Once a started service serves, the store holds its connection once and
// no snapshot (the one it was started from is removed).
void check_store_settled(fake_systemd& sd) {
  CHECK(eventually([&] {
    sd.receive();
    return sd.count(snap) == 0 && beside(sd) == 0;
  }));
  CHECK(sd.count(dev) == 1);
}

bool dead_mount(const std::string& path) {
  struct stat sb {};
  return ::stat(path.c_str(), &sb) == -1 && errno == ENOTCONN;
}

// The stored snapshot, with one byte of its payload flipped.
unique_fd corrupted(int fd) {
  struct stat sb {};
  REQUIRE(::fstat(fd, &sb) == 0);
  std::string bytes(static_cast<std::size_t>(sb.st_size), 0);
  REQUIRE(::pread(fd, bytes.data(), bytes.size(), 0) == ssize_t(bytes.size()));
  bytes[bytes.size() / 2] ^= 0x20;
  unique_fd out(::memfd_create("corrupted-snapshot", MFD_CLOEXEC));
  REQUIRE(::write(out.get(), bytes.data(), bytes.size()) == ssize_t(bytes.size()));
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("systemctl restart, again and again: the mount is continued from the fd store and the application "
                   "sees no error", S, memfs_service_subject, passthrough_service_subject) {
  S subject;
  temp_dir dir;
  const std::string mp = dir.path();
  // Declared before the service: should the test fail, the service and its
  // store go first, the connection is aborted, and the application ends.
  std::optional<busy_application> app;
  fake_systemd sd(subject.argv(mp), {.fd_store_max = S::store_max});
  REQUIRE(sd.ok());
  start_service(sd, mp);
  CHECK(sd.count(dev) == 1);
  // Polled by the manager (no FDPOLL=0): /dev/fuse polls POLLERR only once
  // the connection is gone.
  REQUIRE(sd.find(dev) != nullptr);
  CHECK(sd.find(dev)->poll);
  make_application_files(mp);
  app.emplace(mp);

  for (int round = 1; round <= restarts; ++round) {
    CAPTURE(round);
    REQUIRE(app->progresses());
    app->state().round = round;
    const pid_t before = sd.main_pid();
    const int status = sd.terminate();  // what systemctl restart does first
    REQUIRE_MESSAGE(status == 0, sd.output());
    CHECK(sd.stopping());  // STOPPING=1
    // Between the two processes the store holds the connection and the
    // snapshot; the mount is alive, nobody serves it: applications wait.
    CHECK(sd.count(dev) == 1);
    CHECK(sd.count(snap) == 1);
    if (!S::lock_owner_known) {  // passthrough: its open files wait beside the snapshot, polled by nobody
      CHECK(beside(sd) >= 4);
      CHECK_FALSE(sd.find(systemd::snapshot_fd_name(0))->poll);
    }
    CHECK(is_fuse_mounted(mp));
    start_service(sd, mp);
    CHECK(sd.main_pid() != before);
    check_store_settled(sd);
    app->state().round = max_rounds + 1;
    REQUIRE_MESSAGE(app->progresses(), "no progress after restart " << round << ": " << sd.output());
  }
  check_locks_held(mp, S::lock_owner_known ? app->pid() : 0);
  app->check_unharmed();
  CHECK(app->state().ops.load() > 50);
  CHECK(slurp(mp + "/fixed") == pattern(8192));
  CHECK(list_dir(mp + "/d").size() == 2 + 5);  // ".", "..", keep0..keep4: the creates were all undone
  CHECK(sd.ignored().empty());

  // `systemctl stop` (FileDescriptorStorePreserve=no): the server left the
  // mount to the store, and the manager closes the store once the unit is
  // dead. The last fd of the connection closed: the kernel aborts it, and
  // the mount is left dead until it is unmounted.
  CHECK(sd.stop() == 0);
  CHECK(sd.names().empty());
  CHECK(is_fuse_mounted(mp));
  CHECK(dead_mount(mp + "/fixed"));
  REQUIRE(::umount2(mp.c_str(), 0) == 0);
}

TEST_CASE("FileDescriptorStorePreserve=yes: a stop keeps the mount for the next start; an unmount ends it and the store lets go") {
  temp_dir dir;
  const std::string mp = dir.path();
  fake_systemd sd(memfs_service(mp), {.fd_store_max = 4, .fd_store_preserve = true});
  REQUIRE(sd.ok());
  start_service(sd, mp);
  write_file(mp + "/kept", "what a stop must not lose");
  // (The test holds no file of the mount across the stop: forking the next
  // service process would copy it, and closing it there sends a FLUSH nobody
  // answers. tests/handover_test.cc and the restart case above keep files
  // open in an application process instead.)
  REQUIRE(sd.stop() == 0);
  CHECK(sd.count(dev) == 1);
  CHECK(sd.count(snap) == 1);
  start_service(sd, mp);
  check_store_settled(sd);
  CHECK(slurp(mp + "/kept") == "what a stop must not lose");

  SUBCASE("unmounted while serving: the server ends and takes its connection out of the store") {
    REQUIRE(::umount2(mp.c_str(), 0) == 0);
    CHECK_MESSAGE(sd.wait_main() == 0, sd.output());
    CHECK(sd.names().empty());
  }
  SUBCASE("unmounted while stopped: the store drops the dead connection by itself (POLLERR), and the snapshot left "
          "alone is refused at the next start") {
    REQUIRE(sd.stop() == 0);
    REQUIRE(sd.count(dev) == 1);
    REQUIRE(::umount2(mp.c_str(), 0) == 0);
    CHECK(eventually([&] {
      sd.sweep();
      return sd.count(dev) == 0;
    }));
    CHECK(sd.count(snap) == 1);
    REQUIRE(sd.start());
    const int status = sd.wait_main();
    CHECK(status != 0);
    const std::string said = sd.output();
    CHECK_MESSAGE(said.find("holds a snapshot but no connection") != std::string::npos, said);
    CHECK(sd.names().empty());  // removed: not tried again
    CHECK_FALSE(is_fuse_mounted(mp));
  }
}

TEST_CASE("a store too small for the open files beside the snapshot: SIGTERM says so and unmounts cleanly") {
  passthrough_service_subject subject;
  temp_dir dir;
  const std::string mp = dir.path();
  fake_systemd sd(subject.argv(mp), {.fd_store_max = 4});
  REQUIRE(sd.ok());
  start_service(sd, mp);
  for (int i = 0; i < 8; ++i) write_file(mp + "/f" + std::to_string(i), "x");  // 8 inodes the kernel holds
  REQUIRE(sd.terminate() == 0);
  const std::string said = sd.output();
  CHECK_MESSAGE(said.find("(FileDescriptorStoreMax=4) cannot hold the connection, the snapshot and the") != std::string::npos,
                said);
  // Stopped as without a store: unmounted, nothing left behind to restore.
  CHECK(sd.names().empty());
  CHECK_FALSE(is_fuse_mounted(mp));
}

TEST_CASE("a corrupt or missing snapshot in the store is refused with the reason; the new process fails and the mount is left dead") {
  temp_dir dir;
  const std::string mp = dir.path();
  fake_systemd sd(memfs_service(mp));
  REQUIRE(sd.ok());
  start_service(sd, mp);
  write_file(mp + "/f", "x");
  REQUIRE(sd.terminate() == 0);
  REQUIRE(sd.count(snap) == 1);

  std::string expected;
  SUBCASE("corrupt") {
    sd.replace(snap, corrupted(sd.find(snap)->fd.get()));
    expected = "checksum does not match";
  }
  SUBCASE("missing (the previous process was killed, or the store is too small)") {
    sd.forget(snap);
    expected = "holds the connection but no snapshot";
  }
  REQUIRE(sd.start());
  const int status = sd.wait_main();
  const std::string said = sd.output();
  CHECK(status != 0);
  CHECK_MESSAGE(said.find(expected) != std::string::npos, said);
  CHECK_MESSAGE(said.find("left without a server") != std::string::npos, said);
  // Taken out of the store (a restart would only fail again, and
  // applications would wait on a connection nobody serves): with the last fd
  // closed the kernel aborted the connection, and applications get ENOTCONN.
  CHECK(sd.names().empty());
  CHECK(is_fuse_mounted(mp));
  CHECK(dead_mount(mp + "/f"));
  REQUIRE(::umount2(mp.c_str(), 0) == 0);
}

TEST_CASE("the notify protocol: what systemd accepts, and LISTEN_FDS as sd_listen_fds_with_names reads it") {
  SUBCASE("fd names") {
    CHECK(systemd::valid_fd_name("fusexx-dev"));
    CHECK(systemd::valid_fd_name(""));
    CHECK_FALSE(systemd::valid_fd_name("a:b"));
    CHECK_FALSE(systemd::valid_fd_name("tab\there"));
    CHECK(systemd::valid_fd_name(std::string(255, 'n')));
    CHECK_FALSE(systemd::valid_fd_name(std::string(256, 'n')));
    auto bad = systemd::store_fd(0, "a:b");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().message.find("not a valid fd store name") != std::string::npos);
  }
  SUBCASE("no NOTIFY_SOCKET: nothing to tell") {
    ::unsetenv("NOTIFY_SOCKET");
    auto r = systemd::notify("READY=1");
    REQUIRE(r);
    CHECK_FALSE(*r);
    CHECK(systemd::fd_store_max() == 0);
  }
  SUBCASE("LISTEN_FDS") {
    // fds 3 and 4 of a forked child, as a service would get them.
    const int status = in_child([] {
      int p[2];
      if (::pipe(p) != 0 || ::dup2(p[0], 3) != 3 || ::dup2(p[1], 4) != 4) return 10;
      ::setenv("LISTEN_FDS", "2", 1);
      ::setenv("LISTEN_FDNAMES", "one:two", 1);
      ::setenv("LISTEN_PID", std::to_string(::getpid() + 1).c_str(), 1);
      auto other = systemd::listen_fds();  // for another process: none, and unset
      if (!other || !other->empty() || std::getenv("LISTEN_FDS")) return 11;
      ::setenv("LISTEN_FDS", "2", 1);
      ::setenv("LISTEN_FDNAMES", "one", 1);
      ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
      if (systemd::listen_fds()) return 12;  // one name for two fds
      ::setenv("LISTEN_FDS", "2", 1);
      ::setenv("LISTEN_FDNAMES", "one:two", 1);
      ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
      auto fds = systemd::listen_fds();
      if (!fds || fds->size() != 2 || (*fds)[0].name != "one" || (*fds)[1].name != "two") return 13;
      if ((*fds)[0].fd.get() != 3 || !(::fcntl(3, F_GETFD) & FD_CLOEXEC)) return 14;
      if (std::getenv("LISTEN_PID") || std::getenv("LISTEN_FDS") || std::getenv("LISTEN_FDNAMES")) return 15;
      if (systemd::take(*fds, "two").get() != 4) return 16;
      return 0;
    });
    CHECK(status == 0);
  }
}

TEST_CASE("on io_uring the server keeps out of the store (no handover there yet): SIGTERM unmounts as before") {
  if (const std::string why = transport::uring_unavailable_reason(); !why.empty()) {
    MESSAGE("skipped: io_uring is not available here: " << why);
    return;
  }
  temp_dir dir;
  const std::string mp = dir.path();
  fake_systemd sd(memfs_service(mp, "uring"));
  REQUIRE(sd.ok());
  start_service(sd, mp);
  sd.receive();
  CHECK(sd.names().empty());
  CHECK(sd.stop() == 0);
  CHECK_FALSE(is_fuse_mounted(mp));
}
