// Kernel passthrough for real: with -o passthrough, run as root of the
// initial user namespace (so unsandboxed: NO_SANDBOX in tests/BUILD.bazel),
// reads and writes of open files go from the kernel to the source files and
// never reach the server, while the content is right; where the kernel turns
// passthrough off or refuses a backing file, one line says why and the server
// serves the I/O itself.
#include <doctest/doctest.h>

#include <filesystem>

#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "examples/passthrough_fs.hpp"
#include "tests/support/passthrough_mounts.hpp"
#include "tests/support/process.hpp"
#include "tests/support/takeover.hpp"

using namespace fusexx;
using namespace fusexx::testing;

TEST_CASE("kernel passthrough: reads and writes of an open file do not reach the server") {
  temp_dir dir;
  const std::string source = dir.sub("source");
  in_process_mirror m(source, /*kernel_passthrough=*/true);
  REQUIRE_MESSAGE(m.srv().conn().has(proto::init_flag::passthrough),
                  "the kernel did not grant FUSE_PASSTHROUGH: " << m.fs.passthrough_refusal());
  std::string data(1 << 20, '\0');
  std::mt19937 rng(3);
  for (auto& c : data) c = char(rng());
  write_file(m.path("pt"), data);
  const auto reads = received(m.srv().session(), proto::opcode::read);
  const auto writes = received(m.srv().session(), proto::opcode::write);
  CHECK(m.fs.passthrough_opens() >= 1);
  CHECK(writes == 0);  // even the first write went straight to the source
  CHECK(slurp(m.path("pt")) == data);
  {
    // Two opens of one inode share its backing file, also with other modes.
    fd_guard r{::open(m.path("pt").c_str(), O_RDONLY)};
    fd_guard w{::open(m.path("pt").c_str(), O_WRONLY)};
    REQUIRE(r.fd >= 0);
    REQUIRE(w.fd >= 0);
    REQUIRE(::pwrite(w.fd, "PASS", 4, 100) == 4);
    char back[4];
    REQUIRE(::pread(r.fd, back, 4, 100) == 4);
    CHECK(std::string(back, 4) == "PASS");
  }
  data.replace(100, 4, "PASS");
  CHECK(slurp(source + "/pt") == data);
  CHECK(received(m.srv().session(), proto::opcode::read) == reads);
  CHECK(received(m.srv().session(), proto::opcode::write) == writes);
  CHECK(received(m.srv().session(), proto::opcode::open) >= 3);  // the statistics do count: opens reach the server
  CHECK(m.fs.passthrough_refusal() == "");
  // This kernel (6.18) takes the inode's own O_PATH fd as the backing file:
  // registering opened nothing more.
  CHECK(m.fs.backing_reopens() == 0);
}

TEST_CASE("kernel passthrough across a handover: the successor keeps the backing files, and closes them on release") {
  temp_dir dir;
  const std::string source = dir.sub("source"), mp = dir.sub("mnt");
  write_file(source + "/data", "0123456789");
  struct server_process {  // the predecessor, ended whatever happens
    child c;
    ~server_process() {
      if (c.pid > 0 && !process_ended(c.pid)) {
        ::kill(c.pid, SIGTERM);
        (void)wait_exit(c.pid);
      }
      if (c.stdout_fd >= 0) ::close(c.stdout_fd);
    }
  } running{start_server(passthrough_binary(), {"-o", "source=" + source + ",passthrough,timeout=0"}, mp, false)};
  REQUIRE(eventually([&] { return is_fuse_mounted(mp) || process_ended(running.c.pid); }));
  REQUIRE(is_fuse_mounted(mp));
  fd_guard f{::open((mp + "/data").c_str(), O_RDWR)};
  REQUIRE(f.fd >= 0);
  char buf[10] = {};
  REQUIRE(::pread(f.fd, buf, 10, 0) == 10);

  successor_here<passthrough_fs> here(mp, [&](passthrough_fs& fs, server_options& o) {
    fs.source = source;
    fs.kernel_passthrough = true;
    fs.cache_timeout = timeout(0);
    if (auto r = fs.open_source(); !r) FAIL(r.error().message);
    passthrough_fs::configure_mount(o.mount);
    o.mount.subtype = "passthrough";
  });
  auto took = here.take_over();
  REQUIRE_MESSAGE(took, (took ? "" : took.error().message));
  CHECK(wait_exit(running.c.pid, std::chrono::seconds(30)) == 0);
  // The backing file the predecessor registered for the open file is the
  // successor's now, and the open file's I/O still goes from the kernel to
  // it: the server sees none of it.
  CHECK(here.srv->session().backing().registered().size() == 1);
  REQUIRE(::pwrite(f.fd, "abc", 3, 0) == 3);
  REQUIRE(::pread(f.fd, buf, 10, 0) == 10);
  CHECK(std::string(buf, 10) == "abc3456789");
  CHECK(slurp(source + "/data") == "abc3456789");
  CHECK(received(here.srv->session(), proto::opcode::read) == 0);
  CHECK(received(here.srv->session(), proto::opcode::write) == 0);
  // Its release reaches the successor, which closes the backing id.
  ::close(std::exchange(f.fd, -1));
  CHECK(eventually([&] { return here.srv->session().backing().registered().empty(); }));
  // Opens after the handover are passed through as negotiated.
  CHECK(slurp(mp + "/data") == "abc3456789");
  CHECK(here.fs.passthrough_opens() == 1);
  CHECK(received(here.srv->session(), proto::opcode::read) == 0);
  CHECK(received(here.srv->session(), proto::opcode::open) >= 1);  // counted, so the 0 above means none came
  CHECK(here.fs.forget_errors() == 0);
  here.srv->stop();
  CHECK_FALSE(is_fuse_mounted(mp));
}

TEST_CASE("kernel passthrough refused: one line says why, and I/O goes through the server") {
  SUBCASE("with -o writeback (in-process: the server counts the I/O)") {
    temp_dir dir;
    const std::string source = dir.sub("source");
    in_process_mirror m(source, /*kernel_passthrough=*/true, /*writeback=*/true);
    CHECK(m.fs.passthrough_refusal().find("writeback") != std::string::npos);
    write_file(m.path("f"), "through the server");
    fd_guard f{::open(m.path("f").c_str(), O_RDWR)};
    REQUIRE(f.fd >= 0);
    REQUIRE(::fsync(f.fd) == 0);
    CHECK(received(m.srv().session(), proto::opcode::write) > 0);
    CHECK(m.fs.passthrough_opens() == 0);
    CHECK(slurp(source + "/f") == "through the server");
  }
  SUBCASE("with -o writeback (the binary: exactly one line on stderr)") {
    mirror t("passthrough,writeback");
    write_file(t.mnt("f"), "served");
    CHECK(slurp(t.mnt("f")) == "served");
    CHECK(slurp(t.src("f")) == "served");
    CHECK_MESSAGE(t.m->stop() == 0, t.m->output());
    const std::string& out = t.m->output();
    CHECK_MESSAGE(std::count(out.begin(), out.end(), '\n') == 1, out);
    CHECK_MESSAGE(out.find("passthrough is off") != std::string::npos, out);
    CHECK_MESSAGE(out.find("writeback") != std::string::npos, out);
  }
  SUBCASE("the kernel refuses a backing file on a stacked passthrough mount (ELOOP)") {
    // The inner mirror uses passthrough, so its files are one level deep; the
    // outer one allows max_stack_depth 1, so the kernel refuses them.
    mirror inner("passthrough");
    temp_dir outer_mnt;
    spawned_mount outer(passthrough_binary(), {"-o", "source=" + inner.mnt("") + ",passthrough"}, outer_mnt.path());
    REQUIRE_MESSAGE(outer.ok(), outer.output());
    write_file(outer.path("f"), "two levels");
    write_file(outer.path("g"), "two opens");
    CHECK(slurp(outer.path("f")) == "two levels");
    CHECK(slurp(inner.src("f")) == "two levels");
    CHECK(slurp(inner.src("g")) == "two opens");
    CHECK_MESSAGE(outer.stop() == 0, outer.output());
    const std::string& out = outer.output();
    CHECK_MESSAGE(std::count(out.begin(), out.end(), '\n') == 1, out);
    CHECK_MESSAGE(out.find("passthrough is off") != std::string::npos, out);
    CHECK_MESSAGE(inner.m->stop() == 0, inner.m->output());
    CHECK(inner.m->output() == "");
  }
}

TEST_CASE("kernel passthrough refused for a non-root server: one line says why, and I/O goes through the server") {
  REQUIRE_MESSAGE(::access("/usr/bin/fusermount3", X_OK) == 0, "fusermount3 is missing: run tools/dev setup");
  temp_dir dir;
  // The binary must be reachable by nobody: Bazel's output tree under /root is not.
  const std::string bin = dir.path() + "/passthrough";
  std::filesystem::copy_file(passthrough_binary(), bin);
  ::chmod(bin.c_str(), 0755);
  const std::string source = dir.sub("source"), mnt = dir.sub("mnt");
  REQUIRE(::chown(source.c_str(), 65534, 65534) == 0);
  REQUIRE(::chown(mnt.c_str(), 65534, 65534) == 0);
  const std::vector<std::string> as_nobody = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  spawned_mount m(bin, {"-o", "source=" + source + ",passthrough"}, mnt, as_nobody);
  REQUIRE_MESSAGE(m.ok(), m.output());
  // Without allow_other only nobody may use nobody's mount.
  auto as_nobody_sh = [&](const std::string& script) {
    std::vector<std::string> v = as_nobody;
    v.insert(v.end(), {"sh", "-c", script});
    return run(v, /*with_stderr=*/true);
  };
  auto r = as_nobody_sh("for i in 1 2 3; do echo served$i > " + mnt + "/f$i; done; cat " + mnt + "/f1 " + mnt + "/f3");
  CHECK(r.status == 0);
  CHECK(r.out == "served1\nserved3\n");
  CHECK(slurp(source + "/f2") == "served2\n");
  CHECK_MESSAGE(m.stop() == 0, m.output());
  const std::string& out = m.output();
  CHECK_MESSAGE(std::count(out.begin(), out.end(), '\n') == 1, out);
  CHECK_MESSAGE(out.find("passthrough is off: the kernel refused (EPERM)") != std::string::npos, out);
}

// -o killpriv_v2 (FUSE_HANDLE_KILLPRIV_V2): the server, not the kernel, clears
// suid/sgid, so the kernel does not ask for security.capability (a GETXATTR
// round trip) before every write. Checked in both modes against what the
// kernel does natively: another user's write, truncate and truncating open
// clear the bits, root's write keeps them. Under kernel passthrough the
// writes never reach the server: set-id files are served by it instead, and
// backing files are registered without CAP_FSETID so that writes through
// them clear the bits too.
TEST_CASE("-o killpriv_v2: suid/sgid as natively, with and without kernel passthrough, and no GETXATTR per write") {
  constexpr uid_t nobody = 65534;
  for (bool kernel_passthrough : {false, true}) {
    CAPTURE(kernel_passthrough);
    temp_dir dir;
    const std::string source = dir.sub("source");
    REQUIRE(::chmod(source.c_str(), 0755) == 0);
    in_process_mirror m(source, kernel_passthrough, /*writeback=*/false, /*killpriv_v2=*/true);
    REQUIRE(m.srv().conn().has(proto::init_flag::handle_killpriv_v2));
    const std::string p = m.path("prog"), s = source + "/prog";
    write_file(s, "#!/bin/sh\n");
    auto mode_of = [&] {
      struct stat st {};
      REQUIRE(::stat(s.c_str(), &st) == 0);
      return st.st_mode & 07777;
    };

    REQUIRE(::chmod(s.c_str(), 06777) == 0);
    CHECK(as_user(nobody, nobody, "echo more >> " + p).status == 0);
    CHECK(mode_of() == 0777);
    REQUIRE(::chmod(s.c_str(), 06777) == 0);
    CHECK(as_user(nobody, nobody, "truncate -s 1 " + p).status == 0);
    CHECK(mode_of() == 0777);
    REQUIRE(::chmod(s.c_str(), 06777) == 0);
    CHECK(as_user(nobody, nobody, "echo new > " + p).status == 0);  // open(O_TRUNC): one OPEN
    CHECK(mode_of() == 0777);
    // sgid without group execute is no set-gid program: it stays.
    REQUIRE(::chmod(s.c_str(), 02767) == 0);
    CHECK(as_user(nobody, nobody, "echo more >> " + p).status == 0);
    CHECK(mode_of() == 02767);
    // Root writes with CAP_FSETID: the bits stay.
    REQUIRE(::chmod(s.c_str(), 06777) == 0);
    {
      fd_guard f{::open(p.c_str(), O_WRONLY | O_APPEND)};
      REQUIRE(f.fd >= 0);
      CHECK(::write(f.fd, "root\n", 5) == 5);
    }
    CHECK(mode_of() == 06777);
    // The documented price: chown that changes nothing reaches nobody.
    REQUIRE(::chown(p.c_str(), uid_t(-1), gid_t(-1)) == 0);
    CHECK(mode_of() == 06777);

    // A file made set-id while open (its backing file, if any, registered
    // before): another user's write still clears the bits.
    REQUIRE(::chmod(s.c_str(), 0777) == 0);
    {
      fd_guard held{::open(p.c_str(), O_WRONLY | O_APPEND)};
      REQUIRE(held.fd >= 0);
      REQUIRE(::chmod(s.c_str(), 06777) == 0);
      CHECK(as_user(nobody, nobody, "echo late >> " + p).status == 0);
      CHECK(mode_of() == 0777);
    }

    // Plain writes cost no GETXATTR round trip each.
    write_file(m.path("plain"), "");
    const auto getxattrs = m.fs.served_getxattrs();
    {
      fd_guard f{::open(m.path("plain").c_str(), O_WRONLY)};
      REQUIRE(f.fd >= 0);
      for (int i = 0; i < 50; ++i) REQUIRE(::pwrite(f.fd, "0123456789", 10, i * 10) == 10);
    }
    CHECK(m.fs.served_getxattrs() - getxattrs < 5);
  }
}

TEST_CASE("without killpriv_v2 the kernel clears suid/sgid itself, and asks for security.capability per write") {
  temp_dir dir;
  const std::string source = dir.sub("source");
  in_process_mirror m(source, /*kernel_passthrough=*/true);
  CHECK_FALSE(m.srv().conn().has(proto::init_flag::handle_killpriv_v2));
  const std::string p = m.path("f");
  write_file(source + "/f", "x");
  REQUIRE(::chmod(p.c_str(), 06777) == 0);
  REQUIRE(::chown(p.c_str(), uid_t(-1), gid_t(-1)) == 0);  // natively, this clears them
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0777);
  const auto getxattrs = m.fs.served_getxattrs();
  {
    fd_guard f{::open(p.c_str(), O_WRONLY)};
    REQUIRE(f.fd >= 0);
    for (int i = 0; i < 50; ++i) REQUIRE(::pwrite(f.fd, "0123456789", 10, i * 10) == 10);
  }
  CHECK(m.fs.served_getxattrs() - getxattrs >= 50);
}

TEST_CASE("kernel passthrough under -o supervise: an open file's I/O goes on while no server runs, and after a crash") {
  temp_dir dir;
  const std::string source = dir.sub("source"), mp = dir.sub("mnt");
  write_file(source + "/data", "0123456789");
  struct keeper_process {  // ended whatever happens
    child c;
    ~keeper_process() {
      if (c.pid > 0 && !process_ended(c.pid)) {
        ::kill(c.pid, SIGCONT);
        ::kill(c.pid, SIGTERM);
        (void)wait_exit(c.pid);
      }
      if (c.stdout_fd >= 0) ::close(c.stdout_fd);
    }
  } keeper{start_server(passthrough_binary(),
                        {"-o", "supervise,source=" + source + ",passthrough,killpriv_v2,timeout=0"}, mp, false)};
  REQUIRE(eventually([&] { return is_fuse_mounted(mp) || process_ended(keeper.c.pid); }));
  REQUIRE(is_fuse_mounted(mp));
  fd_guard f{::open((mp + "/data").c_str(), O_RDWR)};
  REQUIRE(f.fd >= 0);
  // A first write, with the server there: the kernel asks once whether the
  // file has security.capability (a GETXATTR), then marks the inode S_NOSEC.
  REQUIRE(::pwrite(f.fd, "0", 1, 0) == 1);
  // No server at all for a while: the keeper stopped, its server killed.
  const pid_t server = first_child_of(keeper.c.pid);
  REQUIRE(server > 0);
  REQUIRE(::kill(keeper.c.pid, SIGSTOP) == 0);
  REQUIRE(::kill(server, SIGKILL) == 0);
  REQUIRE(eventually([&] { return process_ended(server); }));
  // The open file's reads and writes go from the kernel to the source file:
  // they need no server (one that went through the server would wait).
  std::atomic<bool> done{false};
  std::string seen;
  std::jthread io([&] {
    char buf[10] = {};
    if (::pwrite(f.fd, "abc", 3, 0) == 3 && ::pread(f.fd, buf, 10, 0) == 10) seen.assign(buf, 10);
    done = true;
  });
  const bool without_server = eventually([&] { return done.load(); }, std::chrono::seconds(5));
  ::kill(keeper.c.pid, SIGCONT);  // (and so a blocked one ends too)
  io.join();
  CHECK_MESSAGE(without_server, "the open file's I/O waited for a server");
  CHECK(seen == "abc3456789");
  // The successor knows the open file and its backing id: the same handle
  // goes on, its release is served, and new opens work as before.
  REQUIRE(eventually([&] { const pid_t s = first_child_of(keeper.c.pid); return s > 0 && s != server; }));
  REQUIRE(::pwrite(f.fd, "XY", 2, 8) == 2);
  ::close(std::exchange(f.fd, -1));
  CHECK(slurp(mp + "/data") == "abc34567XY");
  CHECK(slurp(source + "/data") == "abc34567XY");
  write_file(mp + "/new", "fresh");
  CHECK(slurp(source + "/new") == "fresh");
  ::kill(keeper.c.pid, SIGTERM);
  CHECK(wait_exit(keeper.c.pid) == 0);
  keeper.c.pid = -1;
  const std::string said = output_of(keeper.c);
  CHECK_MESSAGE(said.find("could not be redone") == std::string::npos, said);
  CHECK_MESSAGE(said.find("passthrough is off") == std::string::npos, said);
  CHECK_FALSE(is_fuse_mounted(mp));
}
