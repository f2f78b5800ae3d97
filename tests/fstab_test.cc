// Mounting the way administrators do (issue 14): `mount -t fuse.memfs memfs
// DIR`, `mount -t fuse.passthrough SRC DIR`, an fstab line through
// `mount -T FSTAB DIR`, a user's `mount DIR` for an fstab line with `user`,
// and `umount DIR` — real mount(8), real mount.fuse3, real fusermount3. Runs
// outside Bazel's sandbox (tests/BUILD.bazel, NO_SANDBOX): it needs the
// setuid mount(8) and a real second user.
//
// What runs (verified on this Debian 12: util-linux 2.38.1, fuse3 3.14; the
// helper's source is libfuse util/mount.fuse.c, commit e8d407ce; docs/fstab.md):
//   mount(8) execs /sbin/mount.fuse (-> mount.fuse3) as `SOURCE DIR -o OPTS
//   -t fuse.NAME`, with PATH, HOME and SHELL removed from the environment —
//   for root too; mount.fuse3 then runs /bin/sh -c "'NAME' 'SOURCE' 'DIR'
//   '-o' 'OPTS'", so NAME is found in dash's default PATH
//   (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin).
// So the binaries cannot be handed over through PATH. The test runs in a
// private mount namespace (unshared once, at its start) where a temporary
// directory holding copies of memfs and passthrough (copies: Bazel's output
// tree under /root is closed to other users) is bind-mounted over
// /usr/local/sbin, a temporary directory over /run/mount (mount(8)'s utab),
// and, for the user case, a temporary fstab over /etc/fstab (a user's
// `mount DIR` reads /etc/fstab only; `mount -T` by a user makes mount(8) drop
// its privileges first). Nobody outside sees any of it, nor the mounts.
//
// The filesystems daemonize (no -f, as under mount(8)); this process is their
// subreaper, so each daemon becomes its child once its parent returns: the
// guards below unmount and then reap exactly those processes. `keep_stdio`
// in the options keeps the daemons' stderr on the mount's log file, which
// every failure message prints.
#include <sys/prctl.h>

#include <doctest/doctest.h>

#include <fusexx/fusexx.hpp>

#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

constexpr uid_t nobody = 65534;
constexpr gid_t nogroup = 65534;

// The private mount namespace with the binaries on dash's default PATH.
struct private_world {
  temp_dir dir;
  std::string error;  // empty when set up
  private_world() {
    auto bind = [&](const std::string& from, const char* onto) {
      if (::mount(from.c_str(), onto, nullptr, MS_BIND, nullptr) != 0)
        error = std::string("bind mount over ") + onto + ": " + std::strerror(errno);
    };
    // unshare(CLONE_NEWNS) needs a process of one thread: the first test case
    // runs this before anything started a thread.
    if (::unshare(CLONE_NEWNS) != 0) {
      error = std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
      return;
    }
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      error = std::string("making / private: ") + std::strerror(errno);
      return;
    }
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
      error = std::string("PR_SET_CHILD_SUBREAPER: ") + std::strerror(errno);
      return;
    }
    const std::string bin = dir.sub("bin");
    for (auto [env, name] : {std::pair{"FUSEXX_MEMFS", "memfs"}, std::pair{"FUSEXX_PASSTHROUGH", "passthrough"}}) {
      const std::string from = example_binary(env);
      std::error_code ec;
      std::filesystem::copy_file(from, bin + "/" + name, ec);
      if (ec) {
        error = "copying " + from + ": " + ec.message();
        return;
      }
      ::chmod((bin + "/" + name).c_str(), 0755);
    }
    bind(bin, "/usr/local/sbin");
    if (error.empty() && ::access("/run/mount", F_OK) == 0) bind(dir.sub("run-mount"), "/run/mount");
  }
};

private_world& world() {
  static private_world w;
  return w;
}

// The processes this one adopted as subreaper (the daemons) and its own
// children: everything in /proc whose parent is this process.
std::vector<pid_t> children() {
  std::vector<pid_t> out;
  const std::string me = std::to_string(::getpid());
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = slurp(e.path().string() + "/stat");
    auto paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream fields(stat.substr(paren + 2));
    std::string state, ppid;
    fields >> state >> ppid;
    if (ppid == me) out.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return out;
}

// Runs ARGV (as `launcher`, e.g. setpriv, if given) with stdout and stderr
// appended to `log`, which the daemon it may start keeps (keep_stdio).
int run_logged(const std::vector<std::string>& argv, const std::string& log, std::vector<std::string> launcher = {}) {
  std::vector<std::string> cmd = std::move(launcher);
  for (std::string a : {"sh", "-c", "exec \"$@\" >>\"$0\" 2>&1"}) cmd.push_back(a);
  cmd.push_back(log);
  cmd.insert(cmd.end(), argv.begin(), argv.end());
  return run(cmd).status;
}

std::vector<std::string> as_nobody() {
  return {"setpriv", "--reuid=" + std::to_string(nobody), "--regid=" + std::to_string(nogroup), "--clear-groups"};
}

// One mount made through mount(8). The destructor leaves nothing behind:
// it unmounts (lazily) whatever is still mounted and reaps the daemons
// (SIGKILL for one that has not ended 10 s later).
class helper_mount {
 public:
  helper_mount(std::string mountpoint, std::string log) : mountpoint_(std::move(mountpoint)), log_(std::move(log)) {
    int fd = ::open(log_.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    if (fd >= 0) ::close(fd);
    ::chmod(log_.c_str(), 0666);  // a user's mount(8) appends to it
  }
  ~helper_mount() { release(); }
  helper_mount(const helper_mount&) = delete;
  helper_mount& operator=(const helper_mount&) = delete;

  const std::string& path() const { return mountpoint_; }
  std::string path(const std::string& name) const { return mountpoint_ + "/" + name; }
  const std::string& log_file() const { return log_; }
  // What mount(8), mount.fuse3, fusermount3 and the daemon printed.
  std::string log() const { return "--- log of the mount at " + mountpoint_ + ":\n" + slurp(log_); }

  // After `umount`: every daemon ends by itself, with status 0.
  bool daemons_ended_cleanly() {
    bool clean = true;
    for (pid_t pid : children()) clean = wait_exit(pid, std::chrono::seconds(10)) == 0 && clean;
    return clean;
  }
  void release() {
    if (is_fuse_mounted(mountpoint_)) ::umount2(mountpoint_.c_str(), MNT_DETACH);
    for (pid_t pid : children()) wait_exit(pid, std::chrono::seconds(10));
  }

 private:
  std::string mountpoint_;
  std::string log_;
};

void write_file(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  REQUIRE_MESSAGE(fd >= 0, "open(" << path << "): " << std::strerror(errno));
  CHECK(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  CHECK(::close(fd) == 0);
}

// A file that replaces `target` in this namespace for the guard's lifetime.
class bound_file {
 public:
  bound_file(const std::string& content, const std::string& target, const temp_dir& dir) : target_(target) {
    const std::string file = dir.path() + "/bound-" + std::filesystem::path(target).filename().string();
    std::ofstream(file) << content;
    ::chmod(file.c_str(), 0644);
    ok_ = ::mount(file.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) == 0;
  }
  ~bound_file() {
    if (ok_) ::umount2(target_.c_str(), MNT_DETACH);
  }
  bool ok() const { return ok_; }

 private:
  std::string target_;
  bool ok_ = false;
};

void require_world() {
  REQUIRE_MESSAGE(world().error.empty(), world().error);
  REQUIRE_MESSAGE(::access("/sbin/mount.fuse3", X_OK) == 0, "mount.fuse3 is missing (Debian package fuse3)");
}

}  // namespace

TEST_CASE("mount -t fuse.memfs memfs DIR, then umount DIR") {
  require_world();
  temp_dir t;
  helper_mount m(t.sub("mnt"), t.path() + "/log");
  REQUIRE_MESSAGE(run_logged({"mount", "-t", "fuse.memfs", "-o", "keep_stdio", "memfs", m.path()}, m.log_file()) == 0,
                  m.log());
  REQUIRE_MESSAGE(is_fuse_mounted(m.path()), m.log());
  auto entry = find_fuse_mount(m.path());
  CHECK(entry->fstype == "fuse.memfs");
  CHECK(entry->source == "memfs");  // the source names the mount
  // mount.fuse3 adds dev and suid for root (libfuse does the same): they apply.
  CHECK_MESSAGE(entry->options.find("nosuid") == std::string::npos, entry->options);
  CHECK_MESSAGE(entry->super_options.find("allow_other") != std::string::npos, entry->super_options);

  write_file(m.path("greeting"), "hello through mount(8)\n");
  CHECK(slurp(m.path("greeting")) == "hello through mount(8)\n");
  CHECK(list_dir(m.path()) == std::vector<std::string>{".", "..", "greeting"});

  CHECK_MESSAGE(run_logged({"umount", m.path()}, m.log_file()) == 0, m.log());
  CHECK_FALSE(is_fuse_mounted(m.path()));
  CHECK_MESSAGE(m.daemons_ended_cleanly(), m.log());
}

TEST_CASE("mount -t fuse.passthrough SRC DIR mirrors SRC, then umount DIR") {
  require_world();
  temp_dir t;
  const std::string src = t.sub("src");
  write_file(src + "/before", "in the source\n");
  helper_mount m(t.sub("mnt"), t.path() + "/log");
  REQUIRE_MESSAGE(
      run_logged({"mount", "-t", "fuse.passthrough", "-o", "keep_stdio,timeout=0", src, m.path()}, m.log_file()) == 0,
      m.log());
  REQUIRE_MESSAGE(is_fuse_mounted(m.path()), m.log());
  auto entry = find_fuse_mount(m.path());
  CHECK(entry->fstype == "fuse.passthrough");
  CHECK(entry->source == src);

  CHECK(slurp(m.path("before")) == "in the source\n");
  write_file(m.path("after"), "through the mirror\n");
  CHECK(slurp(m.path("after")) == "through the mirror\n");
  CHECK(slurp(src + "/after") == "through the mirror\n");  // it landed in SRC

  CHECK_MESSAGE(run_logged({"umount", m.path()}, m.log_file()) == 0, m.log());
  CHECK_FALSE(is_fuse_mounted(m.path()));
  CHECK_MESSAGE(m.daemons_ended_cleanly(), m.log());
  CHECK(list_dir(src) == std::vector<std::string>{".", "..", "after", "before"});
}

TEST_CASE("mount -T FSTAB DIR: fstab lines with the options administrators and systemd use") {
  require_world();
  temp_dir t;
  const std::string src = t.sub("src");
  helper_mount memfs(t.sub("memfs"), t.path() + "/memfs.log");
  helper_mount mirror(t.sub("mirror"), t.path() + "/mirror.log");
  const std::string opts = "defaults,allow_other,_netdev,nofail,noauto,x-systemd.automount,"
                           "x-systemd.requires=network-online.target,keep_stdio";
  const std::string fstab = t.path() + "/fstab";
  std::ofstream(fstab) << "# a temporary fstab (mount -T)\n"
                       << "memfs " << memfs.path() << " fuse.memfs " << opts << " 0 0\n"
                       << src << " " << mirror.path() << " fuse.passthrough " << opts << ",timeout=0 0 0\n";

  REQUIRE_MESSAGE(run_logged({"mount", "-T", fstab, memfs.path()}, memfs.log_file()) == 0, memfs.log());
  REQUIRE_MESSAGE(run_logged({"mount", "-T", fstab, mirror.path()}, mirror.log_file()) == 0, mirror.log());
  REQUIRE_MESSAGE(is_fuse_mounted(memfs.path()), memfs.log());
  REQUIRE_MESSAGE(is_fuse_mounted(mirror.path()), mirror.log());
  CHECK(find_fuse_mount(memfs.path())->source == "memfs");
  CHECK(find_fuse_mount(mirror.path())->source == src);
  CHECK(find_fuse_mount(mirror.path())->super_options.find("allow_other") != std::string::npos);

  write_file(memfs.path("a"), "memfs from fstab\n");
  CHECK(slurp(memfs.path("a")) == "memfs from fstab\n");
  write_file(mirror.path("b"), "mirror from fstab\n");
  CHECK(slurp(src + "/b") == "mirror from fstab\n");
  // allow_other: another user reads them too.
  CHECK(as_user(nobody, nogroup, "cat " + memfs.path("a") + " " + mirror.path("b")).out ==
        "memfs from fstab\nmirror from fstab\n");

  CHECK_MESSAGE(run_logged({"umount", memfs.path()}, memfs.log_file()) == 0, memfs.log());
  CHECK_MESSAGE(run_logged({"umount", mirror.path()}, mirror.log_file()) == 0, mirror.log());
  CHECK_FALSE(is_fuse_mounted(memfs.path()));
  CHECK_FALSE(is_fuse_mounted(mirror.path()));
  CHECK_MESSAGE(memfs.daemons_ended_cleanly(), memfs.log() << mirror.log());
}

// A user's `mount DIR` for an /etc/fstab line with `user`: mount(8) runs
// mount.fuse3 as the user (with noexec,nosuid,nodev, which `user` implies),
// the filesystem mounts through fusermount3, and the user's `umount DIR`
// ends it.
TEST_CASE("a user mounts and unmounts /etc/fstab lines marked user") {
  require_world();
  REQUIRE_MESSAGE(::access("/usr/bin/fusermount3", X_OK) == 0, "fusermount3 is missing: run tools/dev setup");
  struct stat dev {};
  REQUIRE(::stat("/dev/fuse", &dev) == 0);
  REQUIRE_MESSAGE((dev.st_mode & 0006) == 0006, "/dev/fuse is not open to other users: run tools/dev setup");
  temp_dir t;
  const std::string src = t.sub("src");
  helper_mount memfs(t.sub("memfs"), t.path() + "/memfs.log");
  helper_mount mirror(t.sub("mirror"), t.path() + "/mirror.log");
  for (const std::string& p : {src, memfs.path(), mirror.path()}) REQUIRE(::chown(p.c_str(), nobody, nogroup) == 0);
  // No allow_other: for a user that needs user_allow_other in /etc/fuse.conf.
  bound_file fstab("memfs " + memfs.path() + " fuse.memfs noauto,user,keep_stdio 0 0\n" + src + " " + mirror.path() +
                       " fuse.passthrough noauto,user,_netdev,x-systemd.automount,keep_stdio 0 0\n",
                   "/etc/fstab", t);
  REQUIRE(fstab.ok());

  REQUIRE_MESSAGE(run_logged({"mount", memfs.path()}, memfs.log_file(), as_nobody()) == 0, memfs.log());
  REQUIRE_MESSAGE(run_logged({"mount", mirror.path()}, mirror.log_file(), as_nobody()) == 0, mirror.log());
  REQUIRE_MESSAGE(is_fuse_mounted(memfs.path()), memfs.log());
  REQUIRE_MESSAGE(is_fuse_mounted(mirror.path()), mirror.log());
  auto entry = find_fuse_mount(memfs.path());
  CHECK_MESSAGE(entry->super_options.find("user_id=65534") != std::string::npos, entry->super_options);
  CHECK_MESSAGE(entry->options.find("noexec") != std::string::npos, entry->options);  // `user` implies it
  CHECK(find_fuse_mount(mirror.path())->source == src);

  auto out = as_user(nobody, nogroup,
                     "echo mine > " + memfs.path("f") + " && cat " + memfs.path("f") + " && echo theirs > " +
                         mirror.path("g") + " && cat " + mirror.path("g"));
  CHECK_MESSAGE(out.out == "mine\ntheirs\n", out.out << memfs.log() << mirror.log());
  CHECK(slurp(src + "/g") == "theirs\n");
  struct stat st {};
  CHECK(::stat((src + "/g").c_str(), &st) == 0);
  CHECK(st.st_uid == nobody);

  CHECK_MESSAGE(run_logged({"umount", memfs.path()}, memfs.log_file(), as_nobody()) == 0, memfs.log());
  CHECK_MESSAGE(run_logged({"umount", mirror.path()}, mirror.log_file(), as_nobody()) == 0, mirror.log());
  CHECK_FALSE(is_fuse_mounted(memfs.path()));
  CHECK_FALSE(is_fuse_mounted(mirror.path()));
  CHECK_MESSAGE(memfs.daemons_ended_cleanly(), memfs.log() << mirror.log());
}
