// memfs with real users other than root (this file runs outside Bazel's
// sandbox, see NO_SANDBOX in tests/BUILD.bazel): permission refusals,
// sticky and setgid directories, suid/sgid cleared by writes and chown,
// set-group-ID without group-execute as tmpfs treats it, chown rules,
// trusted. xattrs and device nodes. Other users act through setpriv, as
// separate processes, and their errors are read from the messages of
// ordinary commands, or in forked children that drop to another identity.
// Runs on both transports.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <grp.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <fmt/format.h>

#include "examples/memfs_fs.hpp"
#include "tests/support/diff_run.hpp"
#include "tests/support/memfs_mount.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

constexpr uid_t nobody = 65534;
constexpr uid_t other_user = 65533;
constexpr gid_t shared_group = 4242;

// memfs that other users can reach.
struct shared_memfs_mount : fusexx::testing::memfs_mount {
  explicit shared_memfs_mount(const std::string& extra_options = {}) : memfs_mount(extra_options) {
    // Let everybody reach the mountpoint's parent and write into the root.
    REQUIRE(::chmod(std::filesystem::path(path()).parent_path().c_str(), 0755) == 0);
    REQUIRE(::chmod(path().c_str(), 0777) == 0);
  }
};

struct stat stat_of(const std::string& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st;
}

}  // namespace

TEST_CASE("memfs: mode bits refuse other users (EACCES), as the kernel checks them") {
  shared_memfs_mount m;
  REQUIRE(::close(::open(m.path("secret").c_str(), O_CREAT | O_WRONLY, 0600)) == 0);
  REQUIRE(::mkdir(m.path("closed").c_str(), 0700) == 0);
  REQUIRE(::mkdir(m.path("readonly").c_str(), 0755) == 0);
  auto r = as_user(nobody, nobody, "cat " + m.path("secret"));
  CHECK(r.status != 0);
  CHECK(r.out.find("Permission denied") != std::string::npos);
  r = as_user(nobody, nobody, "ls " + m.path("closed"));
  CHECK(r.out.find("Permission denied") != std::string::npos);
  r = as_user(nobody, nobody, "touch " + m.path("readonly/new"));
  CHECK(r.out.find("Permission denied") != std::string::npos);
  r = as_user(nobody, nobody, "chmod 777 " + m.path("secret"));
  CHECK(r.out.find("Operation not permitted") != std::string::npos);  // not the owner: EPERM
  // What nobody may do works.
  r = as_user(nobody, nobody, "echo mine > " + m.path("own") + " && cat " + m.path("own"));
  CHECK(r.status == 0);
  CHECK(r.out == "mine\n");
  auto st = stat_of(m.path("own"));
  CHECK(st.st_uid == nobody);
  CHECK(st.st_gid == nobody);
}

TEST_CASE("memfs: a sticky directory lets only the owner remove or rename a file") {
  shared_memfs_mount m;
  REQUIRE(::mkdir(m.path("tmp").c_str(), 01777) == 0);
  REQUIRE(::chmod(m.path("tmp").c_str(), 01777) == 0);
  REQUIRE(as_user(nobody, nobody, "echo x > " + m.path("tmp/f")).status == 0);
  auto r = as_user(other_user, other_user, "rm -f " + m.path("tmp/f"));
  CHECK(r.out.find("Operation not permitted") != std::string::npos);
  r = as_user(other_user, other_user, "mv " + m.path("tmp/f") + " " + m.path("tmp/g"));
  CHECK(r.out.find("Operation not permitted") != std::string::npos);
  CHECK(as_user(nobody, nobody, "rm " + m.path("tmp/f")).status == 0);
}

TEST_CASE("memfs: a setgid directory passes its group to new files and its setgid bit to new directories") {
  shared_memfs_mount m;
  REQUIRE(::mkdir(m.path("team").c_str(), 0777) == 0);
  REQUIRE(::chown(m.path("team").c_str(), 0, shared_group) == 0);
  REQUIRE(::chmod(m.path("team").c_str(), 02777) == 0);
  REQUIRE(as_user(nobody, nobody, "touch " + m.path("team/f") + " && mkdir " + m.path("team/d")).status == 0);
  auto f = stat_of(m.path("team/f"));
  CHECK(f.st_uid == nobody);
  CHECK(f.st_gid == shared_group);
  CHECK((f.st_mode & S_ISGID) == 0);
  auto d = stat_of(m.path("team/d"));
  CHECK(d.st_gid == shared_group);
  CHECK((d.st_mode & S_ISGID) != 0);
}

TEST_CASE("memfs: suid and sgid are cleared by a write and by chown") {
  shared_memfs_mount m;
  const std::string p = m.path("prog");
  REQUIRE(::close(::open(p.c_str(), O_CREAT | O_WRONLY, 0755)) == 0);
  REQUIRE(::chmod(p.c_str(), 06777) == 0);
  REQUIRE(as_user(nobody, nobody, "echo more >> " + p).status == 0);
  CHECK((stat_of(p).st_mode & 07777) == 0777);
  REQUIRE(::chmod(p.c_str(), 06755) == 0);
  REQUIRE(::chown(p.c_str(), nobody, nobody) == 0);  // even root's chown drops them
  CHECK((stat_of(p).st_mode & (S_ISUID | S_ISGID)) == 0);
  CHECK(stat_of(p).st_uid == nobody);
}

TEST_CASE("memfs -o handle_killpriv_v2: another user's write, truncate and truncating open arrive with the kill flag; memfs clears") {
  shared_memfs_mount m("handle_killpriv_v2,atomic_o_trunc");
  REQUIRE(m.srv().conn().has(proto::init_flag::handle_killpriv_v2));
  const std::string p = m.path("prog");
  REQUIRE(::close(::open(p.c_str(), O_CREAT | O_WRONLY, 0755)) == 0);
  REQUIRE(::chmod(p.c_str(), 06777) == 0);
  auto& counts = m.fs.counts();
  const auto modes = counts.mode_changes.load();
  REQUIRE(as_user(nobody, nobody, "echo more >> " + p).status == 0);
  CHECK(counts.writes_killing_suidgid.load() >= 1);
  CHECK(counts.mode_changes.load() == modes);  // the kernel left the clearing to memfs
  CHECK((stat_of(p).st_mode & 07777) == 0777);

  REQUIRE(::chmod(p.c_str(), 06777) == 0);
  const auto kills = counts.setattrs_killing_suidgid.load();
  const auto modes_now = counts.mode_changes.load();
  REQUIRE(as_user(nobody, nobody, "truncate -s 1 " + p).status == 0);
  CHECK(counts.setattrs_killing_suidgid.load() - kills == 1);
  CHECK(counts.mode_changes.load() == modes_now);
  CHECK((stat_of(p).st_mode & 07777) == 0777);
  CHECK(stat_of(p).st_size == 1);

  // open(O_TRUNC): with atomic_o_trunc one OPEN carries the truncation and
  // FUSE_OPEN_KILL_SUIDGID.
  REQUIRE(::chmod(p.c_str(), 06777) == 0);
  const auto open_kills = counts.opens_killing_suidgid.load();
  REQUIRE(as_user(nobody, nobody, "echo new > " + p).status == 0);
  CHECK(counts.opens_killing_suidgid.load() - open_kills == 1);
  CHECK((stat_of(p).st_mode & 07777) == 0777);

  // Root keeps them on a write (CAP_FSETID): no kill flag.
  REQUIRE(::chmod(p.c_str(), 06777) == 0);
  const auto kill_writes = counts.writes_killing_suidgid.load();
  {
    int fd = ::open(p.c_str(), O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0);
    CHECK(::write(fd, "x", 1) == 1);
    ::close(fd);
  }
  CHECK(counts.writes_killing_suidgid.load() == kill_writes);
  CHECK((stat_of(p).st_mode & 07777) == 06777);
}

namespace {

// Someone a modification is made by: ids and supplementary groups.
struct identity {
  std::string name;
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;
};

// Runs `op` on `path` in a child that has become `who` (no capabilities
// left: setresuid from root clears them); 0 or the errno.
template <class Op>
int as_identity(const identity& who, Op op) {
  forked child = fork_child([&] {
    if (::setgroups(who.groups.size(), who.groups.data()) != 0) return 100;
    if (::setresgid(who.gid, who.gid, who.gid) != 0) return 101;
    if (::setresuid(who.uid, who.uid, who.uid) != 0) return 102;
    return op();
  });
  return child.wait();
}

// The mode a root-owned file of mode `mode` (group 0) has after `who` did
// `op` to it, in directory `dir`; "op failed: errno" if it failed.
std::string mode_after(const std::string& dir, mode_t mode, const identity& who, const std::string& op) {
  const std::string p = dir + "/target", src = dir + "/source";
  ::unlink(p.c_str());
  int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0666);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "data", 4) == 4);
  REQUIRE(::fchown(fd, 0, 0) == 0);
  REQUIRE(::fchmod(fd, mode) == 0);  // root keeps the set-id bits (CAP_FSETID)
  ::close(fd);
  fd = ::open(src.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "copied", 6) == 6);
  ::close(fd);
  const int rc = as_identity(who, [&] {
    auto ok = [](long r) { return r < 0 ? errno : 0; };
    if (op == "write") {
      const int f = ::open(p.c_str(), O_WRONLY);
      return f < 0 ? errno : ok(::pwrite(f, "x", 1, 1));
    }
    if (op == "ftruncate") {
      const int f = ::open(p.c_str(), O_WRONLY);
      return f < 0 ? errno : ok(::ftruncate(f, 2));
    }
    if (op == "truncate") return ok(::truncate(p.c_str(), 3));
    if (op == "open(O_TRUNC)") return ok(::open(p.c_str(), O_WRONLY | O_TRUNC));
    if (op == "fallocate") {
      const int f = ::open(p.c_str(), O_WRONLY);
      return f < 0 ? errno : ok(::fallocate(f, 0, 0, 8192));
    }
    if (op == "copy_file_range") {
      const int in = ::open(src.c_str(), O_RDONLY), out = ::open(p.c_str(), O_WRONLY);
      loff_t a = 0, b = 0;
      return in < 0 || out < 0 ? errno : ok(::copy_file_range(in, &a, out, &b, 6, 0));
    }
    return 99;
  });
  if (rc != 0) return fmt::format("{} failed: {}", op, rc);
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return fmt::format("{:04o}", st.st_mode & 07777);
}

}  // namespace

TEST_CASE("memfs: set-id bits after writes, truncates, fallocate and copies by users in and out of the group, as on tmpfs") {
  // Set-group-ID without group-execute (2666) is cleared by a modification
  // from a user who is not in the file's group, kept for one who is (by the
  // primary or a supplementary group) and for root; with group-execute it is
  // cleared for everyone but root; set-user-ID always goes (but for root).
  const std::vector<identity> who{{"nobody", nobody, nobody, {}},
                                  {"member by a supplementary group", nobody, nobody, {0}},
                                  {"member by the primary group", nobody, 0, {}},
                                  {"root", 0, 0, {0}}};
  const std::vector<std::string> ops{"write", "ftruncate", "truncate", "open(O_TRUNC)", "fallocate", "copy_file_range"};
  tmpfs_dir reference;
  REQUIRE_MESSAGE(reference.mounted, "cannot mount a tmpfs: " << std::strerror(errno));
  REQUIRE(::chmod(reference.path().c_str(), 0777) == 0);
  for (const std::string options : {"", "handle_killpriv_v2", "handle_killpriv_v2,atomic_o_trunc", "atomic_o_trunc"}) {
    CAPTURE(options);
    shared_memfs_mount m(options);
    for (mode_t mode : {02666, 02676, 06666, 06676})
      for (const identity& w : who)
        for (const std::string& op : ops) {
          const std::string what = fmt::format("{:04o} by {}: {}", mode, w.name, op);
          CAPTURE(what);
          CHECK(mode_after(m.path(), mode, w, op) == mode_after(reference.path(), mode, w, op));
        }
    // What tmpfs does, spelled out for the case of the issue.
    CHECK(mode_after(m.path(), 02666, who[0], "fallocate") == "0666");
    CHECK(mode_after(m.path(), 02666, who[1], "fallocate") == "2666");
  }
}

TEST_CASE("memfs: only root gives files away; owners chgrp only to their own groups") {
  shared_memfs_mount m;
  REQUIRE(as_user(nobody, nobody, "touch " + m.path("mine")).status == 0);
  auto r = as_user(nobody, nobody, "chown 0 " + m.path("mine"));
  CHECK(r.out.find("Operation not permitted") != std::string::npos);
  r = as_user(nobody, nobody, "chgrp " + std::to_string(shared_group) + " " + m.path("mine"));
  CHECK(r.out.find("Operation not permitted") != std::string::npos);
  REQUIRE(::chown(m.path("mine").c_str(), other_user, shared_group) == 0);
  auto st = stat_of(m.path("mine"));
  CHECK(st.st_uid == other_user);
  CHECK(st.st_gid == shared_group);
}

TEST_CASE("memfs: trusted. xattrs are for privileged callers only") {
  shared_memfs_mount m;
  const std::string p = m.path("x");
  REQUIRE(::close(::open(p.c_str(), O_CREAT | O_WRONLY, 0666)) == 0);
  REQUIRE(::setxattr(p.c_str(), "trusted.t", "root only", 9, 0) == 0);
  REQUIRE(::setxattr(p.c_str(), "user.u", "anyone", 6, 0) == 0);
  char buf[64] = {};
  CHECK(::getxattr(p.c_str(), "trusted.t", buf, sizeof buf) == 9);
  CHECK(::listxattr(p.c_str(), buf, sizeof buf) == ssize_t(sizeof "trusted.t" + sizeof "user.u"));
  // As nobody (a child that gave up root): the trusted name is neither
  // listed nor readable.
  forked child = fork_child([&] {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(nobody, nobody, nobody) != 0 ||
        ::setresuid(nobody, nobody, nobody) != 0)
      return 50;
    char names[64] = {};
    if (::listxattr(p.c_str(), names, sizeof names) != ssize_t(sizeof "user.u")) return 51;
    if (std::string(names) != "user.u") return 52;
    char value[64];
    if (::getxattr(p.c_str(), "trusted.t", value, sizeof value) != -1 || errno != ENODATA) return 53;
    if (::setxattr(p.c_str(), "trusted.t", "x", 1, 0) != -1 || errno != EPERM) return 54;
    return 0;
  });
  CHECK(child.wait() == 0);
}

TEST_CASE("memfs: device nodes work like the devices they name") {
  shared_memfs_mount m;
  REQUIRE(::mknod(m.path("null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
  auto st = stat_of(m.path("null"));
  CHECK(S_ISCHR(st.st_mode));
  CHECK(st.st_rdev == makedev(1, 3));
  int fd = ::open(m.path("null").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  CHECK(::write(fd, "gone", 4) == 4);
  char c;
  CHECK(::read(fd, &c, 1) == 0);  // /dev/null
  ::close(fd);
  REQUIRE(::mknod(m.path("blk").c_str(), S_IFBLK | 0600, makedev(7, 0)) == 0);
  CHECK(S_ISBLK(stat_of(m.path("blk")).st_mode));
}
