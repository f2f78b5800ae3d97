// examples/hello mounted for real: every check goes through the kernel with
// ordinary syscalls, from threads other than the server's or from other
// processes, and every test ends with nothing left mounted.
#include <doctest/doctest.h>

#include <sys/statvfs.h>
#include <sys/xattr.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "examples/hello_fs.hpp"
#include "tests/support/mounted.hpp"
#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

server_options options_for(const std::string& mp) {
  server_options o;
  o.transport = transport_from_env();
  o.mount.mountpoint = mp;
  o.mount.fsname = "hello-test";
  o.mount.subtype = "hello";
  return o;
}

const std::string greeting = "Hello, world!\n";

}  // namespace

TEST_CASE("hello: stat, readdir, read and errors through the kernel") {
  temp_dir dir;
  hello_fs fs;
  // FUSE mounts this test's mount namespace holds before its own.
  const int mounts_before = detail::count_fuse_mounts();
  server<hello_fs> srv(fs, options_for(dir.path()));
  auto started = srv.start();
  REQUIRE_MESSAGE(started, (started ? "" : started.error().message));

  auto entry = find_fuse_mount(dir.path());
  REQUIRE(entry);
  CHECK(entry->fstype == "fuse.hello");
  CHECK(entry->source == "hello-test");
  CHECK(entry->options.find("nosuid") != std::string::npos);
  CHECK(entry->options.find("nodev") != std::string::npos);
  // The connection's number, which the mount reads from its own fd (not
  // from mountinfo), is the one mountinfo and fusectl give.
  REQUIRE(fuse_connection_id(*entry));
  CHECK(srv.status().connection == *fuse_connection_id(*entry));
  CHECK(::access(fmt::format("/sys/fs/fuse/connections/{}", srv.status().connection).c_str(), F_OK) == 0);
  // /proc/self/mounts counts it, as fusermount3 counts against mount_max.
  CHECK(detail::count_fuse_mounts() == mounts_before + 1);
  // A mount's root is one; a directory that is not, is certainly not.
  CHECK(detail::might_be_mount_root(dir.path()));
  temp_dir plain;
  CHECK_FALSE(detail::might_be_mount_root(plain.path()));

  // Everything below runs on another thread than the server's workers.
  std::thread([&] {
    struct stat st {};
    REQUIRE(::stat(dir.path().c_str(), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    const std::string file = dir.path() + "/hello.txt";
    REQUIRE(::stat(file.c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK((st.st_mode & 07777) == 0444);
    CHECK(st.st_size == static_cast<off_t>(greeting.size()));
    CHECK(slurp(file) == greeting);
    CHECK(slurp(dir.path() + "/docs/README").find("fusexx") != std::string::npos);

    CHECK(list_dir(dir.path()) == std::vector<std::string>{".", "..", "docs", "hello.txt"});
    CHECK(list_dir(dir.path() + "/docs") == std::vector<std::string>{".", "..", "README"});

    errno = 0;
    CHECK(::stat((dir.path() + "/missing").c_str(), &st) == -1);
    CHECK(errno == ENOENT);
    CHECK(::open(file.c_str(), O_WRONLY) == -1);
    CHECK(errno == EROFS);
    CHECK(::open((dir.path() + "/docs").c_str(), O_RDONLY | O_DIRECTORY) >= 0);

    // pread at an offset and past the end.
    int fd = ::open(file.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    char buf[64] = {};
    CHECK(::pread(fd, buf, 5, 7) == 5);
    CHECK(std::string(buf, 5) == "world");
    CHECK(::pread(fd, buf, 5, 1000) == 0);
    ::close(fd);

    struct statvfs vfs {};
    REQUIRE(::statvfs(dir.path().c_str(), &vfs) == 0);
    CHECK(vfs.f_namemax == 255);
  }).join();

  CHECK(srv.session().counters().requests.load() > 10);
  CHECK(srv.session().counters().malformed.load() == 0);
  srv.stop();
  CHECK_FALSE(is_fuse_mounted(dir.path()));
}

TEST_CASE("mountinfo and mounts lines are read as proc(5) lays them out") {
  // Optional fields (any number, up to "-"), escaped spaces and backslashes,
  // other filesystems, and two FUSE mounts stacked on one path: the topmost
  // (last) counts.
  const std::string text =
      "22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw\n"
      "61 27 0:45 / /mnt/a\\040b rw,nosuid,nodev,relatime shared:33 master:1 - fuse.memfs my\\040fs "
      "rw,user_id=0,group_id=0,allow_other\n"
      "62 61 0:46 / /mnt/a\\040b rw,relatime - fuseblk /dev/loop0 rw,user_id=0\n"
      "63 27 8:1 / /mnt/c rw,relatime - ext4 /dev/sda1 rw\n"
      "64 27 0:47 / /mnt/short rw - fuse\n";  // a truncated line: skipped
  auto a = find_fuse_mount_in(text, "/mnt/a b");
  REQUIRE(a);
  CHECK(a->fstype == "fuseblk");
  CHECK(a->device == "0:46");
  CHECK(a->source == "/dev/loop0");
  CHECK(a->options == "rw,relatime");
  CHECK(fuse_connection_id(*a) == 46u);
  auto lower = find_fuse_mount_in(text.substr(0, text.find("62 61")), "/mnt/a b");
  REQUIRE(lower);
  CHECK(lower->fstype == "fuse.memfs");
  CHECK(lower->source == "my fs");
  CHECK(lower->super_options == "rw,user_id=0,group_id=0,allow_other");
  CHECK_FALSE(find_fuse_mount_in(text, "/mnt/c"));      // not FUSE
  CHECK_FALSE(find_fuse_mount_in(text, "/mnt/short"));  // no fields after "-"
  CHECK_FALSE(find_fuse_mount_in(text, "/mnt/a"));
  CHECK_FALSE(find_fuse_mount_in("", "/"));
  // /proc/self/mounts as fusermount3 counts it against mount_max: "fuse" and
  // "fuse.*" only (not fuseblk, fusectl or a source that merely says fuse).
  const std::string mounts_text =
      "proc /proc proc rw,relatime 0 0\n"
      "hello /mnt/a fuse.hello rw,nosuid,nodev 0 0\n"
      "my\\040fs /mnt/a\\040b fuse rw,nosuid,nodev 0 0\n"
      "/dev/loop0 /mnt/c fuseblk rw 0 0\n"
      "fusectl /sys/fs/fuse/connections fusectl rw 0 0\n"
      "fuse /mnt/d ext4 rw 0 0\n";
  CHECK(detail::count_fuse_mounts_in(mounts_text) == 2);
  CHECK(detail::count_fuse_mounts_in("") == 0);
  // And the kernel's own files read whole.
  CHECK(detail::read_kernel_number("/proc/sys/kernel/pid_max").value_or(0) > 0);
  CHECK_FALSE(detail::read_kernel_number("/proc/self/comm"));  // not a number
  CHECK_FALSE(detail::read_kernel_file("/proc/no-such-file"));
  auto mounts = detail::read_kernel_file("/proc/self/mountinfo");
  REQUIRE(mounts);
  CHECK(mounts->find(" / / ") != std::string::npos);
}

TEST_CASE("hello: two threads read concurrently") {
  temp_dir dir;
  hello_fs fs;
  auto opts = options_for(dir.path());
  opts.classic.threads = 2;
  server<hello_fs> srv(fs, opts);
  REQUIRE(srv.start());
  if (transport_from_env() == transport_kind::uring) CHECK(srv.using_uring());
  else CHECK(srv.worker_count() == 2);

  const std::string file = dir.path() + "/hello.txt";
  std::atomic<int> wrong{0};
  auto reader = [&] {
    for (int i = 0; i < 300; ++i) {
      if (slurp(file) != greeting) ++wrong;
      struct stat st {};
      if (::stat((dir.path() + "/docs/README").c_str(), &st) != 0 || !S_ISREG(st.st_mode)) ++wrong;
      if (list_dir(dir.path()).size() != 4) ++wrong;
    }
  };
  std::thread a(reader), b(reader);
  a.join();
  b.join();
  CHECK(wrong.load() == 0);
  srv.stop();
  CHECK_FALSE(is_fuse_mounted(dir.path()));
}

TEST_CASE("hello: an unmount from outside ends the server") {
  temp_dir dir;
  hello_fs fs;
  server<hello_fs> srv(fs, options_for(dir.path()));
  REQUIRE(srv.start());
  REQUIRE(::umount2(dir.path().c_str(), MNT_DETACH) == 0);
  CHECK(srv.wait_for(std::chrono::seconds(10)));
  srv.stop();
  CHECK_FALSE(is_fuse_mounted(dir.path()));
}

TEST_CASE("hello: stopping with a file still open does not hang and leaves nothing mounted") {
  temp_dir dir;
  hello_fs fs;
  server<hello_fs> srv(fs, options_for(dir.path()));
  REQUIRE(srv.start());
  int fd = ::open((dir.path() + "/hello.txt").c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  srv.stop();  // the lazy unmount keeps the connection while fd is open; stop must still end
  CHECK_FALSE(is_fuse_mounted(dir.path()));
  char c;
  CHECK(::pread(fd, &c, 1, 0) == -1);  // the connection is gone
  ::close(fd);
}

TEST_CASE("mounting on a bad mountpoint fails with a clear error") {
  hello_fs fs;
  SUBCASE("missing") {
    server<hello_fs> srv(fs, options_for("/nonexistent/fusexx"));
    auto r = srv.start();
    REQUIRE_FALSE(r);
    CHECK(r.error().code.value() == ENOENT);
    CHECK(r.error().message.find("/nonexistent/fusexx") != std::string::npos);
  }
  SUBCASE("not a directory or file") {
    server<hello_fs> srv(fs, options_for("/dev/null"));
    auto r = srv.start();
    REQUIRE_FALSE(r);
    CHECK(r.error().code.value() == ENOTDIR);
  }
  SUBCASE("a kernel-rejected option reports the kernel's reason") {
    temp_dir dir;
    auto opts = options_for(dir.path());
    opts.mount.rootmode = 0755;  // no file type bits: the kernel refuses it
    server<hello_fs> srv(fs, opts);
    auto r = srv.start();
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("rootmode") != std::string::npos);
    CHECK_FALSE(is_fuse_mounted(dir.path()));
  }
}

namespace {

// A filesystem whose root is a regular file: it is mounted on a file.
struct one_file_fs : filesystem_base<one_file_fs> {
  static constexpr bool root_is_file = true;
  static constexpr std::string_view content = "a filesystem of one file\n";
  result<attr> getattr(request&, ino i, std::optional<fhandle>) {
    if (i != root_ino) return error(ENOENT);
    struct stat st {};
    st.st_ino = root_ino;
    st.st_mode = S_IFREG | 0444;
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(content.size());
    return attr{.st = st};
  }
  result<opened> open(request&, ino, int) { return opened{}; }
  result<std::size_t> read(request&, ino, fhandle, off_t off, std::span<std::byte> into) {
    if (off < 0 || static_cast<std::size_t>(off) >= content.size()) return std::size_t{0};
    const std::size_t n = std::min(into.size(), content.size() - static_cast<std::size_t>(off));
    std::memcpy(into.data(), content.data() + off, n);
    return n;
  }
};

}  // namespace

TEST_CASE("the root's type and the mountpoint's must agree: refused in one sentence, or mounted") {
  temp_dir dir;
  const std::string file = dir.path() + "/a-file";
  {
    std::ofstream(file) << "under the mount";
  }
  SUBCASE("a directory root over a regular file is refused (it would answer EIO)") {
    hello_fs fs;
    server<hello_fs> srv(fs, options_for(file));
    auto r = srv.start();
    REQUIRE_FALSE(r);
    CHECK(r.error().code.value() == ENOTDIR);
    CHECK_MESSAGE(r.error().message.find("is a regular file, and this filesystem's root is a directory") !=
                      std::string::npos, r.error().message);
    CHECK_FALSE(is_fuse_mounted(file));
    // The command a new user types: one sentence, a non-zero status.
    const auto cmd = run({example_binary("FUSEXX_HELLO"), file}, /*with_stderr=*/true);
    CHECK(cmd.status == ENOTDIR);
    CHECK_MESSAGE(cmd.out.find("mount it on a directory") != std::string::npos, cmd.out);
    CHECK_FALSE(is_fuse_mounted(file));
  }
  SUBCASE("a file root mounts on a file, and not on a directory") {
    one_file_fs fs;
    {
      server<one_file_fs> srv(fs, options_for(file));
      auto r = srv.start();
      REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
      CHECK(slurp(file) == one_file_fs::content);
      srv.stop();
    }
    CHECK(slurp(file) == "under the mount");
    server<one_file_fs> srv(fs, options_for(dir.path()));
    auto r = srv.start();
    REQUIRE_FALSE(r);
    CHECK(r.error().code.value() == EISDIR);
    CHECK_FALSE(is_fuse_mounted(dir.path()));
  }
}

namespace {

// A root directory with an extended attribute of 16 KiB, on a connection
// whose max_write is one page: the io_uring transport's payload buffers are
// sized from max_write (8 KiB here), and the kernel copies no more than that
// from an entry, so the value cannot travel through a ring; /dev/fuse takes a
// reply of any size the application asked for.
struct big_xattr_fs : filesystem_base<big_xattr_fs> {
  static constexpr std::size_t value_size = 16 * 1024;
  result<void> init(connection& c) {
    c.max_write = 4096;
    return {};
  }
  result<attr> getattr(request&, ino i, std::optional<fhandle>) {
    if (i != root_ino) return error(ENOENT);
    struct stat st {};
    st.st_ino = root_ino;
    st.st_mode = S_IFDIR | 0755;
    st.st_nlink = 2;
    return attr{.st = st};
  }
  result<std::string> getxattr(request&, ino, std::string_view) { return std::string(value_size, 'x'); }
};

}  // namespace

TEST_CASE("a reply larger than the transport can carry is answered EIO, and the server goes on") {
  mounted<big_xattr_fs> m;
  REQUIRE_MESSAGE(m.ok(), m.error());
  const std::string root = m.path();
  std::vector<char> buf(64 * 1024);
  // More times than a queue has entries: a reply that left its entry
  // uncommitted would hang the first call, and lose the entry for good.
  for (int i = 0; i < 20; ++i) {
    errno = 0;
    const ssize_t n = ::getxattr(root.c_str(), "user.big", buf.data(), buf.size());
    if (transport_from_env() == transport_kind::uring) {
      CHECK(n == -1);
      CHECK(errno == EIO);
    } else {
      CHECK(n == static_cast<ssize_t>(big_xattr_fs::value_size));
    }
  }
  // A reply that fits still goes through.
  CHECK(::getxattr(root.c_str(), "user.big", nullptr, 0) == static_cast<ssize_t>(big_xattr_fs::value_size));
  m.stop();
  CHECK_FALSE(is_fuse_mounted(root));
}

TEST_CASE("a mountpoint that is already a FUSE mount is refused, saying what is there") {
  temp_dir dir;
  hello_fs fs;
  server<hello_fs> first(fs, options_for(dir.path()));
  auto r = first.start();
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  SUBCASE("the same filesystem: --takeover is offered") {
    server<hello_fs> second(fs, options_for(dir.path()));
    auto again = second.start();
    REQUIRE_FALSE(again);
    CHECK(again.error().code.value() == EBUSY);
    CHECK_MESSAGE(again.error().message.find("already a FUSE mount (fuse.hello, source 'hello-test')") !=
                      std::string::npos, again.error().message);
    CHECK_MESSAGE(again.error().message.find("--takeover") != std::string::npos, again.error().message);
  }
  SUBCASE("another filesystem: what is there") {
    auto opts = options_for(dir.path());
    opts.mount.subtype = "other";
    server<hello_fs> second(fs, opts);
    auto again = second.start();
    REQUIRE_FALSE(again);
    CHECK(again.error().code.value() == EBUSY);
    CHECK(again.error().message.find("(fuse.hello, source 'hello-test'): unmount it first") != std::string::npos);
  }
  // The first mount is untouched, and still served.
  CHECK(slurp(dir.path() + "/hello.txt") == greeting);
  first.stop();
  CHECK_FALSE(is_fuse_mounted(dir.path()));
}

TEST_CASE("the hello binary: daemon, foreground and SIGTERM") {
  const std::string hello = example_binary("FUSEXX_HELLO");
  REQUIRE_MESSAGE(!hello.empty(), "FUSEXX_HELLO is not set (run through bazel test)");

  SUBCASE("the daemonizing command returns once the mount is usable") {
    temp_dir dir;
    REQUIRE(run({hello, dir.path()}).status == 0);
    CHECK(slurp(dir.path() + "/hello.txt") == greeting);  // no waiting: it is ready
    auto daemons = pids_mentioning(dir.path());
    REQUIRE(daemons.size() == 1);
    REQUIRE(::umount2(dir.path().c_str(), MNT_DETACH) == 0);
    CHECK(eventually([&] { return process_ended(daemons[0]); }));  // the daemon ends with its mount
  }
  SUBCASE("a daemon that cannot mount makes the command fail with the errno") {
    CHECK(run({hello, "/etc/passwd/x"}).status == ENOTDIR);
  }
  SUBCASE("bad options are refused before anything is mounted") {
    temp_dir dir;
    CHECK(run({hello, "-o", "no_such_option", dir.path()}).status == 2);
    CHECK(run({hello, "-o", "max_read=lots", dir.path()}).status == 2);
    CHECK_FALSE(is_fuse_mounted(dir.path()));
  }
  SUBCASE("SIGTERM unmounts a foreground server") {
    temp_dir dir;
    child c = spawn({hello, "-f", dir.path()});
    REQUIRE(eventually([&] { return is_fuse_mounted(dir.path()); }));
    CHECK(slurp(dir.path() + "/hello.txt") == greeting);
    ::kill(c.pid, SIGTERM);
    CHECK(wait_exit(c.pid) == 0);
    CHECK_FALSE(is_fuse_mounted(dir.path()));
  }
}

TEST_CASE("mount options reach the kernel, through either mount API") {
  for (bool legacy : {false, true}) {
    CAPTURE(legacy);
    temp_dir dir;
    hello_fs fs;
    auto opts = options_for(dir.path());
    opts.mount.legacy_mount_api = legacy;
    opts.mount.allow_other = true;
    opts.mount.default_permissions = true;
    opts.mount.read_only = true;
    opts.mount.max_read = 65536;
    server<hello_fs> srv(fs, opts);
    auto r = srv.start();
    REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
    CHECK(srv.method() == (legacy ? mount_method::legacy : mount_method::new_api));
    auto e = find_fuse_mount(dir.path());
    REQUIRE(e);
    CHECK(e->fstype == "fuse.hello");
    CHECK(e->source == "hello-test");
    CHECK(e->options.starts_with("ro,"));
    CHECK(e->super_options.find("default_permissions") != std::string::npos);
    CHECK(e->super_options.find("allow_other") != std::string::npos);
    CHECK(e->super_options.find("max_read=65536") != std::string::npos);
    CHECK(slurp(dir.path() + "/hello.txt") == greeting);
    srv.stop();
    CHECK_FALSE(is_fuse_mounted(dir.path()));
  }
}

TEST_CASE("-d logs every request") {
  const std::string hello = example_binary("FUSEXX_HELLO");
  REQUIRE(!hello.empty());
  temp_dir dir;
  child c = spawn({hello, "-d", dir.path()}, /*capture_stdout=*/true, /*with_stderr=*/true);
  REQUIRE(eventually([&] { return is_fuse_mounted(dir.path()); }));
  CHECK(slurp(dir.path() + "/hello.txt") == greeting);
  ::kill(c.pid, SIGTERM);
  std::string log = slurp_fd(c.stdout_fd);
  ::close(c.stdout_fd);
  CHECK(wait_exit(c.pid) == 0);
  CHECK(log.find("INIT: kernel 7.") != std::string::npos);
  CHECK(log.find("LOOKUP") != std::string::npos);
  CHECK(log.find("READ") != std::string::npos);
  CHECK(log.find("<- unique=") != std::string::npos);
}

TEST_CASE("a missing /dev/fuse is reported in one sentence") {
  temp_dir dir;
  // In a private mount namespace, hide /dev behind an empty tmpfs.
  int status = in_child([&] {
    if (::unshare(CLONE_NEWNS) != 0) return 10;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 11;
    if (::mount("tmpfs", "/dev", "tmpfs", 0, nullptr) != 0) return 12;
    hello_fs fs;
    server<hello_fs> srv(fs, options_for(dir.path()));
    auto r = srv.start();
    if (r) return 13;
    if (r.error().code.value() != ENOENT) return 14;
    if (r.error().message.find("/dev/fuse is missing") == std::string::npos) return 15;
    return 0;
  });
  CHECK(status == 0);
  CHECK_FALSE(is_fuse_mounted(dir.path()));
}
