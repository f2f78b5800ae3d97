// The unprivileged path: a non-root user mounts through fusermount3, which
// passes the /dev/fuse fd back over _FUSE_COMMFD. Needs a real second user,
// so this file runs outside Bazel's sandbox (tests/BUILD.bazel, NO_SANDBOX).
#include <doctest/doctest.h>

#include <fstream>

#include <fusexx/fusexx.hpp>

#include "examples/hello_fs.hpp"

#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {
const std::string greeting = "Hello, world!\n";

// A test's program copied where nobody can run it (Bazel's output tree under
// /root is not reachable by nobody), a mountpoint nobody owns, and commands
// run as nobody.
struct as_nobody {
  temp_dir dir;
  std::string bin;
  std::string mp = dir.sub("mnt");
  explicit as_nobody(const char* program_env) {
    const std::string program = example_binary(program_env);
    REQUIRE_MESSAGE(!program.empty(), program_env << " is not set");
    bin = dir.path() + "/" + std::filesystem::path(program).filename().string();
    std::filesystem::copy_file(program, bin);
    ::chmod(bin.c_str(), 0755);
    REQUIRE(::chown(mp.c_str(), 65534, 65534) == 0);
  }
  std::vector<std::string> with(std::vector<std::string> tail) const {
    std::vector<std::string> v = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    v.insert(v.end(), tail.begin(), tail.end());
    return v;
  }
};
}  // namespace

TEST_CASE("unprivileged: fusermount3 mounts for a non-root user") {
  REQUIRE_MESSAGE(::access("/usr/bin/fusermount3", X_OK) == 0, "fusermount3 is missing: run tools/dev setup");
  struct stat dev {};
  REQUIRE(::stat("/dev/fuse", &dev) == 0);
  REQUIRE_MESSAGE((dev.st_mode & 0006) == 0006,
                  "/dev/fuse is not open to other users (udev makes it 0666): run tools/dev setup");

  const as_nobody user("FUSEXX_HELLO");
  const std::string& bin = user.bin;
  const std::string& mp = user.mp;
  auto with = [&](std::vector<std::string> tail) { return user.with(std::move(tail)); };

  child server_process = spawn(with({bin, "-f", mp}));
  REQUIRE(eventually([&] { return is_fuse_mounted(mp); }));
  auto entry = find_fuse_mount(mp);
  CHECK(entry->super_options.find("user_id=65534") != std::string::npos);

  CHECK(run(with({"cat", mp + "/hello.txt"})).out == greeting);
  // Without allow_other even root is kept out of a user's mount.
  struct stat st {};
  CHECK(::stat((mp + "/hello.txt").c_str(), &st) == -1);
  CHECK(errno == EACCES);

  CHECK(run(with({"fusermount3", "-u", mp})).status == 0);
  CHECK(wait_exit(server_process.pid) == 0);
  CHECK_FALSE(is_fuse_mounted(mp));
}

TEST_CASE("unprivileged allow_other: refused in one sentence unless /etc/fuse.conf has user_allow_other") {
  const as_nobody user("FUSEXX_HELLO");
  const std::string& bin = user.bin;
  const std::string& mp = user.mp;
  const temp_dir& dir = user.dir;
  auto with = [&](std::vector<std::string> tail) { return user.with(std::move(tail)); };
  auto r = run(with({bin, "-o", "allow_other", mp}), /*with_stderr=*/true);
  if (detail::read_fuse_conf().user_allow_other) {
    // This machine allows it: the mount works, and is open to root.
    CHECK_MESSAGE(r.status == 0, r.out);
    CHECK(slurp(mp + "/hello.txt") == greeting);
    CHECK(run(with({"fusermount3", "-u", mp})).status == 0);
  } else {
    CHECK(r.status == EPERM);
    CHECK_MESSAGE(r.out.find("/etc/fuse.conf has the line user_allow_other") != std::string::npos, r.out);
    CHECK_FALSE(is_fuse_mounted(mp));
  }
  CHECK(eventually([&] { return !is_fuse_mounted(mp); }));
  // The reading of fuse.conf itself, as fusermount3 reads it.
  const std::string conf = dir.path() + "/fuse.conf";
  std::ofstream(conf) << "# user_allow_other\n";
  CHECK_FALSE(detail::read_fuse_conf(conf.c_str()).user_allow_other);
  CHECK(detail::read_fuse_conf(conf.c_str()).mount_max == 1000);  // fusermount3's default
  std::ofstream(conf) << "mount_max=7\n  user_allow_other  # shared mounts\n";
  CHECK(detail::read_fuse_conf(conf.c_str()).user_allow_other);
  CHECK(detail::read_fuse_conf(conf.c_str()).mount_max == 7);
}

TEST_CASE("unprivileged past /etc/fuse.conf's mount_max: refused in one sentence") {
  temp_dir dir;
  const std::string mp = dir.sub("mnt", 0777);
  const std::string conf = dir.path() + "/fuse.conf";
  std::ofstream(conf) << "mount_max = 0\n";
  ::chmod(conf.c_str(), 0644);
  int status = in_child([&] {
    // This process's own view of /etc/fuse.conf (fusermount3 would read the same file).
    if (::unshare(CLONE_NEWNS) != 0) return 10;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 11;
    if (::mount(conf.c_str(), "/etc/fuse.conf", nullptr, MS_BIND, nullptr) != 0) return 12;
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) return 13;
    hello_fs fs;
    server_options o;
    o.mount.mountpoint = mp;
    server<hello_fs> srv(fs, o);
    auto r = srv.start();
    if (r) return 14;
    if (r.error().code.value() != EUSERS) return 15;
    if (r.error().message.find("mount_max = 0") == std::string::npos) return 16;
    return 0;
  });
  CHECK(status == 0);
  CHECK_FALSE(is_fuse_mounted(mp));
}

TEST_CASE("unprivileged without fusermount3: one clear sentence") {
  temp_dir dir;
  const std::string mp = dir.sub("mnt", 0777);
  int status = in_child([&] {
    // Hide every place fusermount3 could be found, then become nobody.
    if (::unshare(CLONE_NEWNS) != 0) return 10;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 11;
    for (const char* d : {"/usr/bin", "/usr/local/bin", "/usr/sbin", "/sbin", "/bin"})
      if (::access(d, F_OK) == 0 && ::mount("tmpfs", d, "tmpfs", 0, nullptr) != 0) return 12;
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) return 13;
    struct quiet_fs : filesystem_base<quiet_fs> {};
    quiet_fs fs;
    server_options o;
    o.mount.mountpoint = mp;
    server<quiet_fs> srv(fs, o);
    auto r = srv.start();
    if (r) return 14;
    if (r.error().message.find("fusermount3 is not installed") == std::string::npos) return 15;
    return 0;
  });
  CHECK(status == 0);
  CHECK_FALSE(is_fuse_mounted(mp));
}

TEST_CASE("unprivileged: an init() error through fusermount3 fails the command, nothing stays mounted") {
  struct stat dev {};
  REQUIRE(::stat("/dev/fuse", &dev) == 0);
  REQUIRE_MESSAGE((dev.st_mode & 0006) == 0006, "/dev/fuse is not open to other users: run tools/dev setup");
  const as_nobody user("FUSEXX_LIFECYCLE_FS");
  const std::string& bin = user.bin;
  const std::string& mp = user.mp;
  auto with = [&](std::vector<std::string> tail) { return user.with(std::move(tail)); };
  // Debian's fusermount3 has no --sync-init: INIT is asynchronous, the helper
  // has mounted already, and fusexx must take the mount away again.
  auto daemonized = run(with({bin, "-o", "init_error=112", mp}), /*with_stderr=*/true);
  CHECK_MESSAGE(daemonized.status == EHOSTDOWN, daemonized.out);
  CHECK_FALSE(is_fuse_mounted(mp));
  CHECK(run(with({bin, "-f", "-o", "init_error=112", mp})).status == EHOSTDOWN);  // foreground
  CHECK_FALSE(is_fuse_mounted(mp));
  // And a healthy start through the same path still works afterwards.
  REQUIRE(run(with({bin, mp})).status == 0);
  CHECK(run(with({"cat", mp + "/hello.txt"})).out == greeting);
  CHECK(run(with({"fusermount3", "-u", mp})).status == 0);
  CHECK(eventually([&] { return !is_fuse_mounted(mp); }));
}

// A user's server cannot end its connection when it stops (no MNT_FORCE, no
// fusectl): with a file still open the connection lives on. On io_uring the
// queues then drain — a request that still arrives is answered ENOTCONN at
// once, instead of waiting for ever in an entry nobody serves — and they end
// once the last file closes and the kernel ends the connection.
TEST_CASE("unprivileged on io_uring: stopping with a file open drains, never hangs, and ends with the connection") {
  REQUIRE_MESSAGE(transport::uring_unavailable_reason().empty(), transport::uring_unavailable_reason());
  temp_dir dir;
  const std::string mp = dir.sub("mnt", 0777);
  int status = in_child([&] {
    ::alarm(20);  // a hang ends the child with SIGALRM (128 + 14) instead of the test
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) return 10;
    const std::size_t threads_before = std::distance(std::filesystem::directory_iterator("/proc/self/task"),
                                                     std::filesystem::directory_iterator{});
    hello_fs fs;
    server_options o;
    o.mount.mountpoint = mp;
    o.transport = transport_kind::uring;
    server<hello_fs> srv(fs, o);
    if (!srv.start()) return 11;
    if (!srv.using_uring() || srv.method() != mount_method::fusermount) return 12;
    const int fd = ::open((mp + "/hello.txt").c_str(), O_RDONLY);
    if (fd < 0) return 13;
    srv.stop();
    char c;
    if (::pread(fd, &c, 1, 0) != -1 || errno != ENOTCONN) return 14;  // drained, at once
    if (srv.session().counters().via_ring.load() == 0) return 15;
    ::close(fd);  // the last file: the kernel ends the connection, and with it the queues
    if (!eventually([&] {
          return std::size_t(std::distance(std::filesystem::directory_iterator("/proc/self/task"),
                                           std::filesystem::directory_iterator{})) == threads_before;
        }))
      return 16;
    return 0;
  });
  CHECK(status == 0);
  CHECK_FALSE(is_fuse_mounted(mp));
}

// libfuse 3.19's own fusermount3 (built from libfuse e8d407ce, in the team's
// anchors folder: ../shared/anchors, passed in as FUSEXX_ANCHORS by tools/dev),
// installed the way a distribution installs it — setuid root — in a temporary
// directory that comes first in the user's PATH. Where the folder is missing
// the test says so and checks nothing.
TEST_CASE("the real libfuse 3.19 fusermount3: synchronous INIT for a user, init() errors with their errno, "
          "auto_unmount") {
  const char* anchors = std::getenv("FUSEXX_ANCHORS");
  const std::string real =
      anchors && *anchors ? std::string(anchors) + "/libfuse-3.19.0-rc0/util/fusermount3" : std::string();
  if (real.empty() || ::access(real.c_str(), X_OK) != 0) {
    const std::string why = "SKIPPED: libfuse 3.19's fusermount3 is not here (FUSEXX_ANCHORS=" +
                            std::string(anchors ? anchors : "<unset>") +
                            "; tools/dev sets it to ../shared/anchors where that exists): the real-helper "
                            "protocol was not checked";
    std::fprintf(stderr, "%s\n", why.c_str());
    MESSAGE(why);
    return;
  }
  const std::string lifecycle = example_binary("FUSEXX_LIFECYCLE_FS");
  REQUIRE(!lifecycle.empty());
  temp_dir dir;
  const std::string bin_dir = dir.sub("bin");
  const std::string helper = bin_dir + "/fusermount3";
  std::filesystem::copy_file(real, helper);
  REQUIRE(::chown(helper.c_str(), 0, 0) == 0);
  REQUIRE(::chmod(helper.c_str(), 04755) == 0);
  const std::string bin = dir.path() + "/lifecycle_fs";
  std::filesystem::copy_file(lifecycle, bin);
  ::chmod(bin.c_str(), 0755);
  auto as_nobody = [&](std::vector<std::string> tail) {
    std::vector<std::string> v = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                  "env",     "PATH=" + bin_dir + ":/usr/bin:/bin"};
    v.insert(v.end(), tail.begin(), tail.end());
    return v;
  };
  // The copy is the one found: it says its version.
  CHECK(run(as_nobody({"fusermount3", "-V"}), true).out.find("3.19") != std::string::npos);

  for (const std::string transport : {"classic", "uring"}) {
    CAPTURE(transport);
    const std::string mp = dir.sub("mnt-" + transport);
    REQUIRE(::chown(mp.c_str(), 65534, 65534) == 0);
    const std::string t = "transport=" + transport;

    {  // INIT is synchronous: served inside the helper's mount call
      child server_process = spawn(as_nobody({bin, "-d", "-o", t, mp}), /*capture_stdout=*/true, /*with_stderr=*/true);
      REQUIRE(eventually([&] { return is_fuse_mounted(mp) || process_ended(server_process.pid); }));
      REQUIRE(is_fuse_mounted(mp));
      CHECK(run(as_nobody({"cat", mp + "/hello.txt"})).out == greeting);
      // -z, as fusexx itself unmounts through the helper: a plain unmount can
      // meet EBUSY while the kernel still finishes the cat's file.
      const auto unmounted = run(as_nobody({"fusermount3", "-u", "-z", mp}), /*with_stderr=*/true);
      CHECK_MESSAGE(unmounted.status == 0, unmounted.out);
      CHECK(wait_exit(server_process.pid) == 0);
      const std::string log = slurp_fd(server_process.stdout_fd);
      ::close(server_process.stdout_fd);
      CHECK_MESSAGE(log.find("(synchronous INIT)") != std::string::npos, log);
      CHECK_MESSAGE(log.find("asynchronous INIT") == std::string::npos, log);
      CHECK_FALSE(is_fuse_mounted(mp));
    }
    {  // an init() error fails the start with its errno, and nothing stays mounted
      auto daemonized = run(as_nobody({bin, "-o", t + ",init_error=" + std::to_string(EKEYREVOKED), mp}), true);
      CHECK_MESSAGE(daemonized.status == EKEYREVOKED, daemonized.out);
      CHECK_MESSAGE(daemonized.out.find(std::strerror(EKEYREVOKED)) != std::string::npos, daemonized.out);
      CHECK_FALSE(is_fuse_mounted(mp));
    }
    {  // auto_unmount: a killed server's mount is taken away (by the helper, as the user)
      child server_process = spawn(as_nobody({bin, "-f", "-o", t + ",auto_unmount", mp}));
      REQUIRE(eventually([&] { return is_fuse_mounted(mp) || process_ended(server_process.pid); }));
      REQUIRE(is_fuse_mounted(mp));
      CHECK(run(as_nobody({"cat", mp + "/hello.txt"})).out == greeting);
      ::kill(server_process.pid, SIGKILL);
      CHECK(wait_exit(server_process.pid) == 128 + SIGKILL);
      // fusexx's watcher is there from before the mount (the helper records
      // the mount before it reports it, and the kill may land in between).
      CHECK(eventually([&] { return !is_fuse_mounted(mp); }));
    }
  }
}
