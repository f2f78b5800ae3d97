// Backing-store faults under examples/passthrough (issue 15, point 3): a
// source on a tiny tmpfs filled to the brim, a read-only source, the source
// directory renamed or removed underneath the running server, files changed
// in the source behind the mirror's back, names at NAME_MAX and paths at
// PATH_MAX. Each operation is done on a native directory set up the same way
// (the oracle) and through the mirror, and the errnos compared; the obvious
// errno is asserted too, so no case passes vacuously.
//
// Leaks: the mirror is served in this process (in_process_mirror), so its
// open fds are this process's (/proc/self/fd) and its nodes are
// live_inodes(). Each case takes both right after the mount (the root only),
// and at its end removes through the mount every name it made or looked up:
// the kernel keeps no FUSE inode without a dentry (fuse drops inodes on their
// last reference), and a dentry removed through the mount goes at once, so
// the FORGETs follow and both counts must come back to where they were
// (`eventually`: FORGETs arrive asynchronously, later on io_uring). A node the
// server kept without the kernel holding it (an error path that took a
// reference and did not hand it out) would stay, and so would its O_PATH fd.
// Dropping the kernel's caches instead (/proc/sys/vm/drop_caches) is not
// allowed in the sandbox and is machine-wide; counting after the unmount
// proves nothing about nodes, since destroy() forgets them all.
//
// Mounts (tmpfs, bind) are made in the sandbox's own mount namespace, and
// undone by guards even when a check fails.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "examples/passthrough_fs.hpp"
#include "tests/support/passthrough_mounts.hpp"
#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

// A mount (tmpfs, or a bind mount) undone when the guard goes.
struct mount_guard {
  std::string path;
  bool ok = false;
  mount_guard(const std::string& src, const std::string& target, const char* type, unsigned long flags,
              const std::string& data = "")
      : path(target) {
    ok = ::mount(src.c_str(), target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) == 0;
    REQUIRE_MESSAGE(ok, "mount " << target << ": " << std::strerror(errno));
  }
  ~mount_guard() {
    if (ok) ::umount2(path.c_str(), MNT_DETACH);
  }
  mount_guard(const mount_guard&) = delete;
  mount_guard& operator=(const mount_guard&) = delete;
};

// What each open fd is (for the message when a count does not come back).
std::string fd_list() {
  std::string out;
  for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    out += e.path().filename().string() + "=" + std::filesystem::read_symlink(e.path(), ec).string() + " ";
  }
  return out;
}

std::size_t open_fds() {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != decltype(it)(); it.increment(ec))
    ++n;
  return n;
}

// The server's nodes and fds (see the top of the file for why this works).
struct leak_check {
  in_process_mirror& m;
  std::size_t inodes = m.fs.live_inodes();
  std::size_t fds = open_fds();
  void settled() {
    const bool back = eventually([&] { return m.fs.live_inodes() == inodes && open_fds() == fds; });
    CHECK_MESSAGE(back, "nodes " << m.fs.live_inodes() << " (were " << inodes << "), fds " << open_fds() << " (were "
                                 << fds << "): " << fd_list());
  }
};

// Removes everything below the directory `dirfd` (by fds, so depth past
// PATH_MAX is no obstacle).
void empty_dir_at(int dirfd) {
  const int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  DIR* d = ::fdopendir(fd);
  REQUIRE(d != nullptr);
  std::vector<std::pair<std::string, bool>> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n, e->d_type == DT_DIR);
  }
  ::closedir(d);
  for (auto& [n, dir] : names) {
    if (dir) {
      fd_guard sub{::openat(dirfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
      REQUIRE(sub.fd >= 0);
      empty_dir_at(sub.fd);
    }
    CHECK_MESSAGE(::unlinkat(dirfd, n.c_str(), dir ? AT_REMOVEDIR : 0) == 0, n << ": " << std::strerror(errno));
  }
}
void empty_dir(const std::string& path) {
  fd_guard d{::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  REQUIRE(d.fd >= 0);
  empty_dir_at(d.fd);
}

in_process_mirror uncached_mirror(const std::string& source) {
  return in_process_mirror(source, [](passthrough_fs& fs, server_options&) { fs.cache_timeout = {}; });
}

// Writes `chunk`-sized pieces to `path` until a write fails; its errno (0 if
// `limit` bytes went in first) and how much was written.
std::pair<int, std::size_t> fill(const std::string& path, std::size_t limit = 16 << 20) {
  fd_guard f{::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644)};
  if (f.fd < 0) return {errno, 0};
  const std::string chunk(64 << 10, 'z');
  std::size_t total = 0;
  while (total < limit) {
    const ssize_t n = ::write(f.fd, chunk.data(), chunk.size());
    if (n < 0) return {errno, total};
    total += std::size_t(n);
  }
  return {0, total};
}

// The whole file open as `fd`, read from its start.
std::string slurp_fd_at(int fd) {
  std::string out;
  char buf[4096];
  for (off_t at = 0;;) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, at);
    if (n <= 0) break;
    out.append(buf, std::size_t(n));
    at += n;
  }
  return out;
}

// Writes `content` as the file `path` (created or emptied); 0 or the errno.
int write_err(const std::string& path, const std::string& content) {
  fd_guard f{::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644)};
  if (f.fd < 0) return errno;
  for (std::size_t at = 0; at < content.size();) {
    const ssize_t n = ::write(f.fd, content.data() + at, content.size() - at);
    if (n < 0) return errno;
    at += std::size_t(n);
  }
  return 0;
}

int create_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

}  // namespace

TEST_CASE("a tiny tmpfs source filled to the brim: ENOSPC as natively, nothing lost, and room again after deleting") {
  temp_dir dirs;
  const std::string opts = "size=1m,nr_inodes=12,mode=0755";
  mount_guard native("tmpfs", dirs.sub("native"), "tmpfs", 0, opts);
  mount_guard source("tmpfs", dirs.sub("source"), "tmpfs", 0, opts);
  in_process_mirror m = uncached_mirror(source.path);
  leak_check leaks{m};
  const std::string nat = native.path + "/", mir = m.path() + "/";

  for (const std::string& base : {nat, mir}) write_file(base + "keep", "written before the source filled up\n");

  // Space: writes stop with ENOSPC at the same byte count.
  auto [native_errno, native_bytes] = fill(nat + "big");
  auto [mirror_errno, mirror_bytes] = fill(mir + "big");
  CHECK(native_errno == ENOSPC);
  CHECK(mirror_errno == native_errno);
  CHECK(mirror_bytes == native_bytes);
  CHECK(native_bytes > 0);
  CHECK(native_bytes <= (1u << 20));
  CHECK(slurp(mir + "keep") == "written before the source filled up\n");
  struct stat st {};
  REQUIRE(::stat((mir + "big").c_str(), &st) == 0);
  CHECK(std::size_t(st.st_size) == mirror_bytes);

  // Inodes: empty files, directories and symlinks need no data pages on
  // tmpfs, so they run out at nr_inodes, after the same count.
  int native_made = 0, mirror_made = 0, native_stop = 0, mirror_stop = 0;
  for (int i = 0; i < 64 && !(native_stop = create_file(nat + "f" + std::to_string(i))); ++i) ++native_made;
  for (int i = 0; i < 64 && !(mirror_stop = create_file(mir + "f" + std::to_string(i))); ++i) ++mirror_made;
  CHECK(native_stop == ENOSPC);
  CHECK(mirror_stop == native_stop);
  CHECK(mirror_made == native_made);
  CHECK(native_made > 0);
  for (const char* what : {"mkdir", "symlink", "mknod"}) {
    auto op = [&](const std::string& base) {
      const std::string p = base + "x-" + what;
      const std::string_view w = what;
      const int rc = w == "mkdir"     ? ::mkdir(p.c_str(), 0755)
                     : w == "symlink" ? ::symlink("keep", p.c_str())
                                      : ::mknod(p.c_str(), S_IFIFO | 0644, 0);
      return err(rc);
    };
    const int n = op(nat), v = op(mir);
    CHECK_MESSAGE(n == ENOSPC, std::string(what));
    CHECK_MESSAGE(v == n, std::string(what) << ": mirror " << std::string(std::strerror(v)) << ", native " << std::string(std::strerror(n)));
  }
  CHECK(slurp(mir + "keep") == "written before the source filled up\n");

  // Deleting gives room again. Natively at once; through the mirror once
  // the kernel has FORGOTTEN the removed files: until then the server holds
  // their O_PATH fds (the kernel may still ask about the node: an open file,
  // fstat), and tmpfs frees an unlinked file's pages and inode with its last
  // fd. The FORGET follows the unlink shortly (later on io_uring), so a
  // create or write right after the unlink may still see ENOSPC.
  const std::string again(512 << 10, 'a');
  for (int i = 0; i < native_made; ++i) REQUIRE(::unlink((nat + "f" + std::to_string(i)).c_str()) == 0);
  REQUIRE(::unlink((nat + "big").c_str()) == 0);
  CHECK(write_err(nat + "again", again) == 0);
  for (int i = 0; i < mirror_made; ++i) REQUIRE(::unlink((mir + "f" + std::to_string(i)).c_str()) == 0);
  REQUIRE(::unlink((mir + "big").c_str()) == 0);
  int first_try = -1;
  CHECK(eventually([&] {
    const int e = write_err(mir + "again", again);
    if (first_try < 0) first_try = e;
    CHECK_MESSAGE((e == 0 || e == ENOSPC), std::string(std::strerror(e)));
    return e == 0;
  }));
  MESSAGE("writing right after the unlinks through the mirror: " << std::string(first_try ? std::strerror(first_try) : "worked"));
  CHECK(slurp(mir + "again") == again);
  CHECK(slurp(source.path + "/again").size() == std::size_t(512 << 10));
  REQUIRE(::mkdir((mir + "dir").c_str(), 0755) == 0);

  empty_dir(m.path());
  leaks.settled();
  m.stop();
  CHECK(!is_fuse_mounted(m.path()));
}

TEST_CASE("a read-only source: every change is EROFS as natively, reads still work") {
  temp_dir dirs;
  const std::string src = dirs.sub("src");
  write_file(src + "/f", "content\n");
  REQUIRE(::mkdir((src + "/d").c_str(), 0755) == 0);
  write_file(src + "/d/g", "inner\n");
  REQUIRE(::setxattr((src + "/f").c_str(), "user.k", "v", 1, 0) == 0);
  // The read-only view: a bind mount remounted read-only (the oracle too).
  const std::string ro = dirs.sub("ro");
  mount_guard bind(src, ro, nullptr, MS_BIND);
  REQUIRE(::mount(nullptr, ro.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) == 0);
  in_process_mirror m = uncached_mirror(ro);
  leak_check leaks{m};
  const std::string nat = ro + "/", mir = m.path() + "/";

  struct op {
    const char* what;
    std::function<int(const std::string&)> run;
  };
  auto open_err = [](const std::string& p, int flags) {
    const int fd = ::open(p.c_str(), flags | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    ::close(fd);
    return 0;
  };
  const std::vector<op> ops = {
      {"create", [&](const std::string& b) { return open_err(b + "new", O_CREAT | O_WRONLY); }},
      {"create O_EXCL", [&](const std::string& b) { return open_err(b + "new", O_CREAT | O_EXCL | O_RDWR); }},
      {"open for writing", [&](const std::string& b) { return open_err(b + "f", O_WRONLY); }},
      {"open read-write", [&](const std::string& b) { return open_err(b + "f", O_RDWR); }},
      {"open O_TRUNC", [&](const std::string& b) { return open_err(b + "f", O_WRONLY | O_TRUNC); }},
      {"mkdir", [](const std::string& b) { return err(::mkdir((b + "nd").c_str(), 0755)); }},
      {"mknod", [](const std::string& b) { return err(::mknod((b + "fifo").c_str(), S_IFIFO | 0644, 0)); }},
      {"unlink", [](const std::string& b) { return err(::unlink((b + "f").c_str())); }},
      {"unlink inner", [](const std::string& b) { return err(::unlink((b + "d/g").c_str())); }},
      {"rmdir", [](const std::string& b) { return err(::rmdir((b + "d").c_str())); }},
      {"rename", [](const std::string& b) { return err(::rename((b + "f").c_str(), (b + "h").c_str())); }},
      {"chmod", [](const std::string& b) { return err(::chmod((b + "f").c_str(), 0600)); }},
      {"chown", [](const std::string& b) { return err(::chown((b + "f").c_str(), 0, 0)); }},
      {"truncate", [](const std::string& b) { return err(::truncate((b + "f").c_str(), 1)); }},
      {"utimes", [](const std::string& b) { return err(::utimensat(AT_FDCWD, (b + "f").c_str(), nullptr, 0)); }},
      {"symlink", [](const std::string& b) { return err(::symlink("f", (b + "s").c_str())); }},
      {"link", [](const std::string& b) { return err(::link((b + "f").c_str(), (b + "l").c_str())); }},
      {"setxattr", [](const std::string& b) { return err(::setxattr((b + "f").c_str(), "user.x", "1", 1, 0)); }},
      {"removexattr", [](const std::string& b) { return err(::removexattr((b + "f").c_str(), "user.k")); }},
  };
  for (const op& o : ops) {
    const int n = o.run(nat), v = o.run(mir);
    CHECK_MESSAGE(n == EROFS, std::string(o.what) << ": native " << std::string(std::strerror(n)));
    CHECK_MESSAGE(v == n, std::string(o.what) << ": mirror " << std::string(std::strerror(v)) << ", native " << std::string(std::strerror(n)));
  }
  // Reads, listings, xattrs and attributes still work.
  CHECK(slurp(mir + "f") == "content\n");
  CHECK(slurp(mir + "d/g") == "inner\n");
  CHECK(list_dir(mir + "d") == std::vector<std::string>{".", "..", "g"});
  char v[4] = {};
  CHECK(::getxattr((mir + "f").c_str(), "user.k", v, sizeof v) == 1);
  struct stat st {};
  CHECK(::stat((mir + "d").c_str(), &st) == 0);
  fd_guard reader{::open((mir + "f").c_str(), O_RDONLY | O_CLOEXEC)};
  CHECK(reader.fd >= 0);
  ::close(reader.fd);
  reader.fd = -1;

  // Writable again (the same bind, remounted): the mirror goes on as it was
  // and removes what it looked up, for the leak count.
  REQUIRE(::mount(nullptr, ro.c_str(), nullptr, MS_REMOUNT | MS_BIND, nullptr) == 0);
  write_file(mir + "now", "writable\n");
  CHECK(slurp(src + "/now") == "writable\n");
  empty_dir(m.path());
  leaks.settled();
  m.stop();
  CHECK(!is_fuse_mounted(m.path()));
}

TEST_CASE("the source directory renamed, then removed, underneath the running server") {
  temp_dir dirs;
  const std::string src = dirs.sub("src"), moved = dirs.path() + "/moved";
  write_file(src + "/a", "A\n");
  REQUIRE(::mkdir((src + "/sub").c_str(), 0755) == 0);
  // The oracle: an fd on the source directory, as the mirror's root holds
  // (opened before the leak count starts).
  fd_guard native{::open(src.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)};
  REQUIRE(native.fd >= 0);
  in_process_mirror m = uncached_mirror(src);
  leak_check leaks{m};
  const std::string mir = m.path() + "/";

  // Renamed: the mirror follows the directory (an open directory fd does),
  // not the path; the old path's new occupant is not what it serves.
  REQUIRE(::rename(src.c_str(), moved.c_str()) == 0);
  REQUIRE(::mkdir(src.c_str(), 0755) == 0);  // a new, empty directory at the old path
  CHECK(slurp(mir + "a") == "A\n");
  write_file(mir + "b", "B\n");
  CHECK(slurp(moved + "/b") == "B\n");
  CHECK(::access((src + "/b").c_str(), F_OK) != 0);
  fd_guard via_native{::openat(native.fd, "b", O_RDONLY | O_CLOEXEC)};
  CHECK(via_native.fd >= 0);  // natively the same
  ::close(via_native.fd);
  via_native.fd = -1;
  REQUIRE(::rmdir(src.c_str()) == 0);

  // Removed (emptied first; rmdir needs that): the root is a deleted
  // directory, as a deleted cwd is. Its attributes still answer (nlink 0);
  // names in it do not exist and cannot be made (ENOENT), nor listed.
  empty_dir(m.path());
  REQUIRE(::rmdir(moved.c_str()) == 0);
  struct stat st {}, nst {};
  REQUIRE(::stat(m.path().c_str(), &st) == 0);
  REQUIRE(::fstatat(native.fd, "", &nst, AT_EMPTY_PATH) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK(st.st_nlink == nst.st_nlink);
  CHECK(nst.st_nlink == 0);
  auto native_at = [&](auto&& f) {
    fd_guard d{::openat(AT_FDCWD, ("/proc/self/fd/" + std::to_string(native.fd)).c_str(), O_RDONLY | O_DIRECTORY)};
    REQUIRE(d.fd >= 0);
    return f(d.fd);
  };
  struct op {
    const char* what;
    std::function<int(int)> run;  // relative to a directory fd
  };
  const std::vector<op> ops = {
      {"lookup", [](int d) { struct stat s {}; return err(::fstatat(d, "a", &s, 0)); }},
      {"create", [](int d) { const int fd = ::openat(d, "c", O_CREAT | O_WRONLY | O_CLOEXEC, 0644); if (fd >= 0) ::close(fd); return fd < 0 ? errno : 0; }},
      {"mkdir", [](int d) { return err(::mkdirat(d, "nd", 0755)); }},
      {"symlink", [](int d) { return err(::symlinkat("a", d, "s")); }},
      {"mknod", [](int d) { return err(::mknodat(d, "p", S_IFIFO | 0644, 0)); }},
      {"list", [](int d) {
         const int fd = ::openat(d, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
         if (fd < 0) return errno;
         char buf[4096];
         const long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
         const int e = n < 0 ? errno : 0;
         ::close(fd);
         return e;
       }},
  };
  for (const op& o : ops) {
    const int n = native_at(o.run);
    fd_guard root{::open(m.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    REQUIRE(root.fd >= 0);
    const int v = o.run(root.fd);
    CHECK_MESSAGE(n == ENOENT, std::string(o.what) << ": native " << std::string(std::strerror(n)));
    CHECK_MESSAGE(v == n, std::string(o.what) << ": mirror " << std::string(std::strerror(v)) << ", native " << std::string(std::strerror(n)));
  }
  // A new directory at the old path is not served (the mirror stays with the
  // deleted one), and nothing hangs: the server answers and unmounts cleanly.
  REQUIRE(::mkdir(src.c_str(), 0755) == 0);
  write_file(src + "/fresh", "F\n");
  CHECK(err(::access((mir + "fresh").c_str(), F_OK)) == ENOENT);
  REQUIRE(::stat(m.path().c_str(), &st) == 0);
  leaks.settled();
  m.stop();
  CHECK(!is_fuse_mounted(m.path()));
}

TEST_CASE("files changed behind the mirror's back are seen through it (timeout 0)") {
  temp_dir dirs;
  const std::string src = dirs.sub("src");
  write_file(src + "/f", "one\n");
  in_process_mirror m = uncached_mirror(src);
  leak_check leaks{m};
  const std::string mir = m.path() + "/";
  {
    fd_guard open_through{::open((mir + "f").c_str(), O_RDONLY | O_CLOEXEC)};
    REQUIRE(open_through.fd >= 0);
    CHECK(slurp_fd_at(open_through.fd) == "one\n");
    CHECK(m.fs.live_inodes() == leaks.inodes + 1);  // the count sees nodes (the root is not in it)

    // Written in the source: the size and the content are the new ones, on
    // a new open and on the one already open.
    write_file(src + "/f", "two, longer\n");
    struct stat st {};
    REQUIRE(::stat((mir + "f").c_str(), &st) == 0);
    CHECK(st.st_size == 12);
    CHECK(slurp(mir + "f") == "two, longer\n");
    CHECK(slurp_fd_at(open_through.fd) == "two, longer\n");

    // Truncated in the source.
    REQUIRE(::truncate((src + "/f").c_str(), 3) == 0);
    REQUIRE(::stat((mir + "f").c_str(), &st) == 0);
    CHECK(st.st_size == 3);
    CHECK(slurp(mir + "f") == "two");
    CHECK(slurp_fd_at(open_through.fd) == "two");

    // Replaced (renamed over): the name is the new file, with its inode
    // number; the open file stays the old one, as natively.
    struct stat old_st {};
    REQUIRE(::stat((src + "/f").c_str(), &old_st) == 0);
    write_file(src + "/f.new", "replacement\n");
    REQUIRE(::rename((src + "/f.new").c_str(), (src + "/f").c_str()) == 0);
    struct stat nst {};
    REQUIRE(::stat((src + "/f").c_str(), &nst) == 0);
    REQUIRE(::stat((mir + "f").c_str(), &st) == 0);
    CHECK(st.st_ino == nst.st_ino);
    CHECK(st.st_ino != old_st.st_ino);
    CHECK(slurp(mir + "f") == "replacement\n");
    CHECK(slurp_fd_at(open_through.fd) == "two");

    // Renamed away in the source: the old name is gone, the new one there.
    REQUIRE(::rename((src + "/f").c_str(), (src + "/g").c_str()) == 0);
    CHECK(err(::stat((mir + "f").c_str(), &st)) == ENOENT);
    CHECK(slurp(mir + "g") == "replacement\n");

    // Deleted in the source: ENOENT by name (lookup, open, unlink), while
    // what is open stays readable.
    REQUIRE(::unlink((src + "/g").c_str()) == 0);
    CHECK(err(::stat((mir + "g").c_str(), &st)) == ENOENT);
    CHECK(err(::open((mir + "g").c_str(), O_RDONLY | O_CLOEXEC)) == ENOENT);
    CHECK(err(::unlink((mir + "g").c_str())) == ENOENT);
    CHECK(slurp_fd_at(open_through.fd) == "two");

    // A directory removed in the source with the mirror's listing open.
    REQUIRE(::mkdir((src + "/d").c_str(), 0755) == 0);
    write_file(src + "/d/x", "x");
    CHECK(list_dir(mir + "d") == std::vector<std::string>{".", "..", "x"});
    REQUIRE(::unlink((src + "/d/x").c_str()) == 0);
    REQUIRE(::rmdir((src + "/d").c_str()) == 0);
    CHECK(err(::stat((mir + "d/x").c_str(), &st)) == ENOENT);
    CHECK(err(::stat((mir + "d").c_str(), &st)) == ENOENT);
  }
  // Every node the kernel held went with its name (lookups that failed
  // dropped the dentries); the open file is closed.
  empty_dir(m.path());
  leaks.settled();
  m.stop();
  CHECK(!is_fuse_mounted(m.path()));
}

TEST_CASE("names at NAME_MAX and paths at PATH_MAX: what works natively works, the rest is ENAMETOOLONG") {
  // The native directory and the mountpoint have paths of the same length
  // (both /tmp/fusexx-test-XXXXXX), so absolute paths hit PATH_MAX alike.
  temp_dir native, source;
  in_process_mirror m = uncached_mirror(source.path());
  REQUIRE(m.path().size() == native.path().size());
  leak_check leaks{m};
  const std::string nat = native.path() + "/", mir = m.path() + "/";

  const std::string longest(NAME_MAX, 'n'), too_long(NAME_MAX + 1, 'n');
  for (const std::string& b : {nat, mir}) {
    CHECK(create_file(b + longest) == 0);
    CHECK(err(::mkdir((b + longest).c_str(), 0755)) == EEXIST);
    CHECK(create_file(b + too_long) == ENAMETOOLONG);
    CHECK(err(::mkdir((b + too_long).c_str(), 0755)) == ENAMETOOLONG);
    CHECK(err(::symlink("t", (b + too_long).c_str())) == ENAMETOOLONG);
    CHECK(err(::rename((b + longest).c_str(), (b + too_long).c_str())) == ENAMETOOLONG);
    CHECK(err(::link((b + longest).c_str(), (b + too_long).c_str())) == ENAMETOOLONG);
    struct stat st {};
    CHECK(err(::stat((b + too_long).c_str(), &st)) == ENAMETOOLONG);
    CHECK(::stat((b + longest).c_str(), &st) == 0);
  }
  CHECK(list_dir(m.path()) == std::vector<std::string>{".", "..", longest});

  // A symlink target of PATH_MAX - 1 bytes is the longest (the kernel copies
  // it in as a path), and reads back whole.
  const std::string target(PATH_MAX - 1, 't');
  for (const std::string& b : {nat, mir}) {
    CHECK(err(::symlink(target.c_str(), (b + "s").c_str())) == 0);
    std::string back(PATH_MAX + 8, '\0');
    CHECK(::readlink((b + "s").c_str(), back.data(), back.size()) == ssize_t(target.size()));
    CHECK(back.substr(0, target.size()) == target);
    CHECK(err(::symlink((target + "t").c_str(), (b + "s2").c_str())) == ENAMETOOLONG);
  }

  // Deep: directories of 200-byte names made by absolute path until the path
  // is too long (the same depth natively), then deeper by directory fd — the
  // server walks by fds, so it has no PATH_MAX of its own.
  const std::string part(200, 'p');
  auto deepen = [&](const std::string& base, std::vector<int>& results) {
    std::string p = base;
    for (int depth = 0; depth < 40; ++depth) {
      p += "/" + part;
      const int e = err(::mkdir(p.c_str(), 0755));
      results.push_back(e);
      if (e) break;
    }
    return p.substr(0, p.size() - part.size() - 1);  // the deepest made
  };
  std::vector<int> nr, mr;
  const std::string ndeep = deepen(native.path(), nr), mdeep = deepen(m.path(), mr);
  CHECK(mr == nr);
  REQUIRE(!nr.empty());
  CHECK(nr.back() == ENAMETOOLONG);
  CHECK(mdeep.size() < PATH_MAX);
  for (const std::string& deep : {ndeep, mdeep}) {
    fd_guard d{::open(deep.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    REQUIRE(d.fd >= 0);
    int cur = ::dup(d.fd);
    for (int k = 0; k < 4; ++k) {
      REQUIRE(::mkdirat(cur, part.c_str(), 0755) == 0);
      const int next = ::openat(cur, part.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      REQUIRE(next >= 0);
      ::close(cur);
      cur = next;
    }
    const int f = ::openat(cur, "leaf", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    CHECK(f >= 0);
    CHECK(::write(f, "deep", 4) == 4);
    ::close(f);
    ::close(cur);
    // By absolute path it is out of reach, natively and through the mirror.
    std::string abs = deep;
    for (int k = 0; k < 4; ++k) abs += "/" + part;
    struct stat st {};
    CHECK(err(::stat((abs + "/leaf").c_str(), &st)) == ENAMETOOLONG);
  }
  empty_dir(m.path());
  empty_dir(native.path());
  leaks.settled();
  m.stop();
  CHECK(!is_fuse_mounted(m.path()));
}
