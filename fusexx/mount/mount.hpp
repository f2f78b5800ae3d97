#pragma once
// Mounting and unmounting. A `mount` object is the mounted filesystem: its
// destructor unmounts, so no error path leaves a stale mount behind.
//
// How, in order of preference:
//  * root (CAP_SYS_ADMIN): the new mount API — fsopen, fsconfig, fsmount,
//    move_mount — whose errors come back as readable messages; legacy
//    mount(2) where the kernel lacks it.
//  * anyone else: fusermount3, the setuid helper, which passes the /dev/fuse
//    fd back over a socket (_FUSE_COMMFD, SCM_RIGHTS) — before it mounts
//    (--sync-init, libfuse 3.19), or after (any older helper).
// With -o auto_unmount a watcher unmounts when the server dies (auto_unmount.hpp).
#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poll.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <fstream>
#include <functional>
#include <optional>
#include <stop_token>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../detail/kernel_file.hpp"
#include "../detail/new_mount_api.hpp"
#include "../fd.hpp"
#include "../fd_passing.hpp"
#include "../log.hpp"
#include "../proto/abi.hpp"
#include "auto_unmount.hpp"
#include "mountinfo.hpp"
#include "options.hpp"

extern char** environ;

namespace fusexx {

enum class mount_method { new_api, legacy, fusermount };

// What the mounter calls back into while mounting.
struct mount_hooks {
  // Start the worker that reads INIT from `fd`. Called before the mount call
  // with synchronous INIT (that call blocks until INIT is answered), after
  // the connection exists otherwise.
  std::function<void(int fd)> serve_init;
  // Asynchronous INIT with the new mount API: wait until INIT is answered.
  // false: it failed, and the still-detached mount is dropped instead of
  // attached. The tree is never visible before INIT succeeded.
  std::function<bool()> await_init;
  // Brackets the kernel's mount call (fsconfig's CMD_CREATE, mount(2), or the
  // helper's mount): INIT served inside it was synchronous.
  std::function<void(bool inside)> in_mount_call;
  // The new mount API: the mount of connection `connection` exists and INIT
  // succeeded, and it is about to be attached. What must answer as soon as
  // the tree is visible (the control socket) starts here. Not called where
  // the mount is visible at once (mount(2), the helper).
  std::function<void(unsigned connection)> before_visible;
};

// Calls hooks.in_mount_call(true) now and (false) when it goes out of scope.
class mount_call_scope {
 public:
  explicit mount_call_scope(const mount_hooks* hooks) : hooks_(hooks) { note(true); }
  ~mount_call_scope() { note(false); }
  mount_call_scope(const mount_call_scope&) = delete;
  mount_call_scope& operator=(const mount_call_scope&) = delete;

 private:
  void note(bool inside) const {
    if (hooks_ && hooks_->in_mount_call) hooks_->in_mount_call(inside);
  }
  const mount_hooks* hooks_;
};

class mount {
 public:
  mount() = default;
  mount(mount&& o) noexcept
      : connection_id_(o.connection_id_), mountpoint_(std::move(o.mountpoint_)), helper_(std::move(o.helper_)),
        watcher_(std::move(o.watcher_)), method_(o.method_), sync_init_(o.sync_init_),
        active_(std::exchange(o.active_, false)) {}
  mount& operator=(mount&& o) noexcept {
    if (this != &o) {
      unmount();
      connection_id_ = o.connection_id_;
      mountpoint_ = std::move(o.mountpoint_);
      helper_ = std::move(o.helper_);
      watcher_ = std::move(o.watcher_);
      method_ = o.method_;
      sync_init_ = o.sync_init_;
      active_ = std::exchange(o.active_, false);
    }
    return *this;
  }
  ~mount() { unmount(); }

  // Opens /dev/fuse and mounts it at opts.mountpoint. `device` receives the
  // connection's fd as soon as it exists (so the caller owns it even when the
  // mount then fails); `hooks` start and await INIT at the right moments. A
  // stop request on `cancel` abandons a mount that waits on the helper.
  static outcome<mount> create(const mount_options& opts, unique_fd& device, const mount_hooks& hooks,
                               std::stop_token cancel = {});

  // A mount another process made and handed over with its connection: this
  // object unmounts it as that process would have.
  static mount adopt(std::string mountpoint, mount_method method, bool sync_init, std::string helper) {
    return mount(std::move(mountpoint), method, sync_init, std::move(helper));
  }
  // Forgets the mount without unmounting it: it lives on, served by a
  // successor this process handed it to. An auto_unmount watcher is let go
  // (it finds the successor serving, and leaves the mount alone).
  void release() noexcept {
    active_ = false;
    watcher_.stop();
  }

  // Gives a mount this process took over an auto_unmount watcher
  // (mount/auto_unmount.hpp); create() starts one before it mounts.
  outcome<void> watch();
  // Detaches the mount (lazily: open files keep working until closed, and the
  // kernel ends the connection when the last one goes). Idempotent.
  outcome<void> unmount();
  // Unmounts for a server that stops serving: an idle mount is unmounted
  // outright (a fuseblk mount gets its DESTROY); one still in use is
  // detached and its connection ended at once (MNT_FORCE aborts a FUSE
  // connection), so no application waits on a server that is gone. Where
  // that is not allowed (MNT_FORCE needs CAP_SYS_ADMIN in the initial user
  // namespace; the fusermount3 helper cannot), it falls back to unmount().
  outcome<void> unmount_and_end();

  const std::string& mountpoint() const noexcept { return mountpoint_; }
  mount_method method() const noexcept { return method_; }
  // The fusermount3 that mounted (empty unless method() is fusermount).
  const std::string& helper() const noexcept { return helper_; }
  // The connection's fusectl number, read from mountinfo right after mounting.
  std::optional<unsigned> connection_id() const noexcept { return connection_id_; }
  bool active() const noexcept { return active_; }
  // Whether INIT was synchronous (served during the mount call).
  bool sync_init() const noexcept { return sync_init_; }

 private:
  // create() without the auto_unmount watcher.
  static outcome<mount> mount_only(const mount_options& opts, unique_fd& device, const mount_hooks& hooks,
                                   std::stop_token cancel);
  // Forks an auto_unmount watcher for `mountpoint`, which unmounts through
  // `helper` (or fusermount3 from PATH) unless this process may unmount.
  static outcome<unmount_watcher> start_watcher(const std::string& mountpoint, const std::string& helper);
  // `connection`: the connection's number where the mounter knows it, else
  // it is looked up in mountinfo.
  mount(std::string mp, mount_method m, bool sync, std::string helper, std::optional<unsigned> connection = {})
      : connection_id_(connection), mountpoint_(std::move(mp)), helper_(std::move(helper)), method_(m),
        sync_init_(sync), active_(true) {
    if (connection_id_) return;
    if (auto e = find_fuse_mount(mountpoint_)) connection_id_ = fuse_connection_id(*e);
  }

  std::optional<unsigned> connection_id_;
  std::string mountpoint_;
  std::string helper_;  // the helper that mounted, which must also unmount
  unmount_watcher watcher_;  // -o auto_unmount
  mount_method method_ = mount_method::new_api;
  bool sync_init_ = false;
  bool active_ = false;
};

namespace detail {

inline outcome<unique_fd> open_fuse_device() {
  unique_fd fd(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (fd) return fd;
  const int err = errno;
  if (err == ENOENT || err == ENODEV || err == ENXIO)
    return fail(err, "/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, pass the "
                     "device in");
  if (err == EACCES || err == EPERM)
    return fail(err, "cannot open /dev/fuse: permission denied (it should be mode 0666)");
  return fail(err, "cannot open /dev/fuse: {}", std::strerror(err));
}

// The mountpoint must exist and be a directory or a regular file; its type is
// the root's type (rootmode).
inline outcome<mode_t> check_mountpoint(const std::string& path) {
  if (path.empty()) return fail(EINVAL, "no mountpoint given");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOTCONN || err == ECONNABORTED)  // ECONNABORTED: ended while its rings were torn down
      return fail(err, "mountpoint {} is a dead FUSE mount: unmount it first (fusermount3 -u {})", path, path);
    return fail(err, "cannot use mountpoint {}: {}", path, std::strerror(err));
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
    return fail(ENOTDIR, "cannot use mountpoint {}: not a directory or regular file", path);
  return st.st_mode & S_IFMT;
}

// False only when `path` is certainly not the root of a mount (statx says
// so): mountinfo then need not be read, which costs the kernel ~50 us to
// write out on every mount (docs/benchmarks.md, mount time).
inline bool might_be_mount_root(const std::string& path) {
  struct statx x {};
  if (::statx(AT_FDCWD, path.c_str(), 0, STATX_TYPE, &x) != 0) return true;
  if (!(x.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) return true;  // before Linux 5.8
  return (x.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
}

// What /etc/fuse.conf allows a user, read as fusermount3 reads it (libfuse
// e8d407ce, util/fuser_conf.c read_conf: '#' comments and blanks stripped;
// a line "user_allow_other", or "mount_max = N" as sscanf matches it).
struct fuse_conf {
  bool user_allow_other = false;  // a user may mount with allow_other
  int mount_max = 1000;           // FUSE mounts (of anyone) beyond which a user may not mount; -1: no limit
};
inline fuse_conf read_fuse_conf(const char* path = "/etc/fuse.conf") {
  fuse_conf c;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    const auto b = line.find_first_not_of(" \t\r\n\v\f"), e = line.find_last_not_of(" \t\r\n\v\f");
    if (b == std::string::npos) continue;
    line = line.substr(b, e - b + 1);
    int n = 0;
    if (line == "user_allow_other") c.user_allow_other = true;
    else if (std::sscanf(line.c_str(), "mount_max = %i", &n) == 1 && n >= -1) c.mount_max = n;
  }
  return c;
}

// FUSE mounts in a mount table (the text of /proc/self/mounts), counted as
// fusermount3 counts them against mount_max: types "fuse" and "fuse.*",
// whoever mounted them (fuseblk and fusectl are not counted).
inline int count_fuse_mounts_in(std::string_view table) {
  // A line: SOURCE TARGET TYPE OPTIONS 0 0 (fstab(5); spaces within fields escaped).
  int n = 0;
  for_each_part(table, '\n', [&](std::string_view line) {
    int field = 0;
    for_each_part(line, ' ', [&](std::string_view f) {
      if (field++ == 2 && (f == "fuse" || f.starts_with("fuse."))) ++n;
    });
  });
  return n;
}

// The same, in this mount namespace.
inline int count_fuse_mounts() {
  const auto table = read_kernel_file("/proc/self/mounts");
  return table ? count_fuse_mounts_in(*table) : 0;
}

// fusermount3 refuses a user what fuse.conf does not allow, in words that
// name neither option's consequence: say it here first, in one sentence.
inline outcome<void> check_fuse_conf(const mount_options& o, const fuse_conf& conf) {
  if (o.allow_other && !conf.user_allow_other)
    return fail(EPERM, "cannot mount {} with allow_other: only root may, unless /etc/fuse.conf has the line "
                       "user_allow_other (root can add it)", o.mountpoint);
  if (conf.mount_max != -1) {
    const int mounted = count_fuse_mounts();
    if (mounted >= conf.mount_max)
      return fail(EUSERS, "cannot mount {}: {} FUSE filesystems are mounted, the most /etc/fuse.conf allows a "
                          "user to add to (mount_max = {}; root can raise it)", o.mountpoint, mounted, conf.mount_max);
  }
  return {};
}

// The root's type (the filesystem's, or rootmode=) against the mountpoint's:
// the kernel attaches a directory only on a directory and a file only on a
// file, and fusermount3 types the root after the mountpoint — a directory
// root over a file would mount, then answer every access with EIO.
inline outcome<mode_t> check_root_type(const mount_options& o) {
  auto at = check_mountpoint(o.mountpoint);
  if (!at) return at;
  // A live FUSE mount there already (a dead one fails the stat above): say
  // what it is, rather than hide it under a second one.
  if (auto there = might_be_mount_root(o.mountpoint) ? find_fuse_mount(o.mountpoint) : std::nullopt) {
    const std::string same = o.subtype.empty() ? "" : "fuse." + o.subtype;
    return fail(EBUSY, "cannot mount on {}: it is already a FUSE mount ({}, source '{}'){}", o.mountpoint,
                there->fstype, there->source,
                there->fstype == same ? ": unmount it first, or take it over (--takeover) if the filesystem is "
                                        "restartable (docs/restart.md)"
                                      : ": unmount it first");
  }
  const mode_t root = o.rootmode ? (*o.rootmode & S_IFMT) : (o.root_is_file ? S_IFREG : S_IFDIR);
  if (root == 0 || *at == root) return *at;
  if (S_ISREG(*at))
    return fail(ENOTDIR, "cannot mount on {}: it is a regular file, and this filesystem's root is a directory "
                         "(mount it on a directory)", o.mountpoint);
  return fail(EISDIR, "cannot mount on {}: it is a directory, and this filesystem's root is a regular file "
                      "(mount it on a file)", o.mountpoint);
}

inline bool have_mount_privilege() { return ::geteuid() == 0; }

// fsconfig's own messages ("e fuse: Unknown parameter 'x'") are read from the
// fs_context fd; they say exactly what the kernel disliked.
inline std::string fs_context_log(int fsfd) {
  std::string all;
  char line[512];
  for (;;) {
    ssize_t n = ::read(fsfd, line, sizeof line - 1);
    if (n <= 0) break;
    if (!all.empty()) all += "; ";
    all.append(line, static_cast<std::size_t>(n));
  }
  return all;
}

// ENOSYS: no new mount API here; the caller falls back to mount(2).
// `before_attach`, if given, runs between fsmount and move_mount (the mount
// exists but is not yet visible); returning false drops it.
// The connection's number (its directory in /sys/fs/fuse/connections),
// read from a mount of it: FUSE superblocks are anonymous devices (major 0)
// and the kernel names the connection after the minor. AT_STATX_DONT_SYNC:
// from the root's cached attributes, without a request to the server.
inline std::optional<unsigned> connection_of_mount(int mount_fd) {
  struct statx x {};
  if (::statx(mount_fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, 0, &x) != 0 || x.stx_dev_major != 0)
    return std::nullopt;
  return x.stx_dev_minor;
}

// Mounts with fsopen/fsconfig/fsmount/move_mount; returns the connection's
// number (as connection_of_mount), where it could be read.
inline outcome<std::optional<unsigned>> mount_new_api(const mount_options& o, int dev, mode_t root_mode,
                                                      const std::function<bool()>& before_attach = {},
                                                      const mount_hooks* hooks = nullptr) {
  const char* type = o.blkdev ? "fuseblk" : "fuse";
  if (o.blkdev && o.fsname.empty()) return fail(EINVAL, "blkdev needs the block device as fsname=");
  unique_fd fs(sys_fsopen(type, fsopen_cloexec));
  if (!fs) return fail(errno, "fsopen({}): {}", type, std::strerror(errno));
  auto set = [&](const char* key, const std::string& value) -> outcome<void> {
    if (sys_fsconfig(fs.get(), fsconfig_set_string, key, value.c_str(), 0) == 0) return {};
    const int err = errno;
    std::string why = fs_context_log(fs.get());
    return fail(err, "cannot mount {}: option {}={}: {}", o.mountpoint, key, value,
                why.empty() ? std::strerror(err) : why);
  };
  auto set_flag = [&](const char* key) -> outcome<void> {
    if (sys_fsconfig(fs.get(), fsconfig_set_flag, key, nullptr, 0) == 0) return {};
    const int err = errno;
    return fail(err, "cannot mount {}: option {}: {}", o.mountpoint, key, std::strerror(err));
  };
  outcome<void> r = set("fd", std::to_string(dev));
  if (r) r = set("rootmode", fmt::format("{:o}", o.rootmode.value_or(root_mode)));
  if (r) r = set("user_id", std::to_string(o.user_id.value_or(::getuid())));
  if (r) r = set("group_id", std::to_string(o.group_id.value_or(::getgid())));
  // The kernel has no fsname parameter: the name is the mount's source.
  if (r && !o.fsname.empty()) r = set("source", o.fsname);
  if (r && !o.subtype.empty()) r = set("subtype", o.subtype);
  if (r && o.allow_other) r = set_flag("allow_other");
  if (r && o.default_permissions) r = set_flag("default_permissions");
  if (r && o.max_read) r = set("max_read", std::to_string(*o.max_read));
  if (r && o.blksize) r = set("blksize", std::to_string(*o.blksize));
  if (!r) return std::unexpected(r.error());
  int created;
  {
    mount_call_scope inside(hooks);
    created = sys_fsconfig(fs.get(), fsconfig_cmd_create, nullptr, nullptr, 0);
  }
  if (created != 0) {
    const int err = errno;
    std::string why = fs_context_log(fs.get());
    return fail(err, "cannot mount {}: {}", o.mountpoint, why.empty() ? std::strerror(err) : why);
  }
  unsigned attrs = 0;
  if (o.read_only) attrs |= attr_rdonly;
  if (o.nosuid) attrs |= attr_nosuid;
  if (o.nodev) attrs |= attr_nodev;
  if (o.noexec) attrs |= attr_noexec;
  if (o.noatime) attrs |= attr_noatime;
  unique_fd mnt(sys_fsmount(fs.get(), fsmount_cloexec, attrs));
  if (!mnt) return fail(errno, "cannot mount {}: fsmount: {}", o.mountpoint, std::strerror(errno));
  // The fs_context pins the superblock: close it now, or a later unmount
  // leaves the connection alive (kernel-facts Q1).
  fs.reset();
  if (before_attach && !before_attach())
    return fail(ENOTCONN, "cannot mount {}: INIT failed before the mount was attached", o.mountpoint);
  const std::optional<unsigned> connection = connection_of_mount(mnt.get());
  if (connection && hooks && hooks->before_visible) hooks->before_visible(*connection);
  if (sys_move_mount(mnt.get(), "", AT_FDCWD, o.mountpoint.c_str(), move_mount_f_empty_path) != 0)
    return fail(errno, "cannot mount on {}: {}", o.mountpoint, std::strerror(errno));
  return connection;
}

inline outcome<void> mount_legacy(const mount_options& o, int dev, mode_t root_mode,
                                  const mount_hooks* hooks = nullptr) {
  unsigned long flags = 0;
  if (o.read_only) flags |= MS_RDONLY;
  if (o.nosuid) flags |= MS_NOSUID;
  if (o.nodev) flags |= MS_NODEV;
  if (o.noexec) flags |= MS_NOEXEC;
  if (o.noatime) flags |= MS_NOATIME;
  if (o.sync) flags |= MS_SYNCHRONOUS;
  if (o.dirsync) flags |= MS_DIRSYNC;
  if (o.blkdev && o.fsname.empty()) return fail(EINVAL, "blkdev needs the block device as fsname=");
  const std::string base = o.blkdev ? "fuseblk" : "fuse";
  const std::string type = o.subtype.empty() ? base : base + "." + o.subtype;
  const std::string data = o.legacy_data(dev, o.rootmode.value_or(root_mode), o.user_id.value_or(::getuid()),
                                         o.group_id.value_or(::getgid()));
  const char* source = o.fsname.empty() ? "fuse" : o.fsname.c_str();
  mount_call_scope inside(hooks);
  if (::mount(source, o.mountpoint.c_str(), type.c_str(), flags, data.c_str()) != 0)
    return fail(errno, "cannot mount {}: {}", o.mountpoint, std::strerror(errno));
  return {};
}

inline std::string find_in_path(const char* program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  dirs += ":/usr/bin:/bin";  // fusermount3 lives here even when PATH is odd
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(start, end - start) + "/" + program;
    if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return {};
}

// Starts the helper with `args`; when `comm` is given, passes it as the
// _FUSE_COMMFD socket, and names `library_end` (this process's end, which
// the child does not get: it is close-on-exec) in _FUSE_COMMFD2, as libfuse
// does. `capture`, if given, receives the helper's stdout and stderr.
// Returns its pid, or -1 if it could not run.
inline pid_t spawn_helper(const std::string& helper, const std::vector<std::string>& args, int comm,
                          int capture = -1, int library_end = -1) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "_FUSE_COMMFD=", 13) != 0 && std::strncmp(*e, "_FUSE_COMMFD2=", 14) != 0)
      env_strings.emplace_back(*e);
  constexpr int child_comm_fd = 3;
  if (comm >= 0) env_strings.push_back("_FUSE_COMMFD=" + std::to_string(child_comm_fd));
  if (comm >= 0 && library_end >= 0) env_strings.push_back("_FUSE_COMMFD2=" + std::to_string(library_end));
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings{helper};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 onto a fixed number gives the child a copy without FD_CLOEXEC.
  if (comm >= 0) posix_spawn_file_actions_adddup2(&actions, comm, child_comm_fd);
  if (capture >= 0) {
    posix_spawn_file_actions_adddup2(&actions, capture, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, capture, STDERR_FILENO);
  }
  pid_t pid = -1;
  int rc = posix_spawn(&pid, helper.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    errno = rc;
    return -1;
  }
  return pid;
}

// The helper's exit status, or 128 + signal.
inline int wait_helper(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

inline int run_fusermount(const std::string& helper, const std::vector<std::string>& args, int comm) {
  pid_t pid = spawn_helper(helper, args, comm);
  return pid < 0 ? -1 : wait_helper(pid);
}

// Turns the device fd to synchronous INIT. ENOTTY (kernels before 6.18)
// means no such mode: INIT then arrives after the mount call.
inline bool enable_sync_init(int fd) {
  if (::ioctl(fd, proto::dev_ioc_sync_init) == 0) return true;
  log::debug("synchronous INIT unavailable ({}); INIT will be asynchronous", std::strerror(errno));
  return false;
}

// The device fd the helper passed back.
inline outcome<unique_fd> receive_device(int sock) {
  auto fd = fusexx::receive_fd(sock);
  if (!fd) return fail(EIO, "fusermount3 sent no file descriptor");
  return std::move(*fd);
}

// The helper opens /dev/fuse with the caller's own rights: udev normally
// makes it 0666, but containers often leave it 0600.
inline outcome<void> check_device_for_helper(const mount_options& o) {
  if (::access("/dev/fuse", R_OK | W_OK) == 0) return {};
  const int err = errno;
  if (err == ENOENT)
    return fail(err, "/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, pass the "
                     "device in");
  return fail(err, "cannot mount {}: /dev/fuse is not accessible to uid {} (udev normally makes it mode 0666: "
                   "chmod 0666 /dev/fuse as root)", o.mountpoint, ::getuid());
}

inline std::string helper_for(const mount_options& o) {
  return o.helper.empty() ? find_in_path("fusermount3") : o.helper;
}

// What a helper printed (its stdout and stderr, captured in a pipe): all of
// it once the helper is gone, else what is there now. Trimmed.
inline std::string helper_output(int fd) {
  std::string text;
  char chunk[1024];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) != 1) break;
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) break;
    text.append(chunk, static_cast<std::size_t>(n));
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// The two-way protocol of fusermount3 --sync-init, exactly as libfuse 3.19
// speaks it (libfuse e8d407ce: util/fusermount.c mount_fuse_sync_init,
// lib/mount.c mount_fusermount_obtain_fd and fuse_fusermount_proceed_mnt,
// lib/fuse_lowlevel.c new_api_fusermount):
//   library: socketpair(SOCK_STREAM); HELPER --sync-init -o OPTS -- MNT, with
//            _FUSE_COMMFD = the helper's end, _FUSE_COMMFD2 = its own end
//   helper:  opens /dev/fuse, checks the mountpoint, sends the fd
//            (one byte + SCM_RIGHTS), waits for one byte (5 minutes at most)
//   library: switches the fd to synchronous INIT (FUSE_DEV_IOC_SYNC_INIT: the
//            library does this, not the helper), starts its worker, sends one
//            "proceed" byte
//   helper:  mounts with the new mount API (the mount call blocks until the
//            worker has answered INIT), sends an int32_t: 0, or -errno; exits
// The helper's --help does not list --sync-init, so there is nothing to probe:
// a helper that sends no fd (an older one, whose getopt refuses the option)
// gets the classic protocol instead. Returns nullopt then, else whether INIT
// is synchronous (the kernel may not have it). `device` receives
// the connection as soon as it arrives (the caller owns it even when the
// mount then fails: its worker reads INIT from it).
// Its output is captured: an older helper's complaint about the option is
// not the user's business; a real failure's message goes into the error.
inline outcome<std::optional<bool>> mount_helper_sync(const mount_options& o, const std::string& helper,
                                                              unique_fd& device, const mount_hooks& hooks,
                                                              std::stop_token cancel) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return fail(errno, "socketpair: {}", std::strerror(errno));
  unique_fd ours(sv[0]), theirs(sv[1]);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return fail(errno, "pipe: {}", std::strerror(errno));
  unique_fd output(p[0]), output_w(p[1]);
  const pid_t pid = spawn_helper(helper, {"--sync-init", "-o", o.fusermount_string(), "--", o.mountpoint},
                                 theirs.get(), output_w.get(), ours.get());
  if (pid < 0) return fail(errno, "cannot run {}: {}", helper, std::strerror(errno));
  theirs.reset();
  output_w.reset();
  // A watchdog that gives up stops waiting for the helper by shutting the
  // socket down: our recv() returns and the helper sees EOF.
  std::stop_callback on_cancel(cancel, [fd = ours.get()] { ::shutdown(fd, SHUT_RDWR); });
  auto said = [&] {
    std::string text = helper_output(output.get());
    return text.empty() ? std::string() : fmt::format(" ({} said: {})", helper, text);
  };

  auto fd = receive_device(ours.get());
  if (!fd) {
    ours.reset();
    const int status = wait_helper(pid);
    log::debug("{} sent no fd for --sync-init (exit status {}){}; using the classic protocol", helper, status, said());
    return std::nullopt;
  }
  device = std::move(*fd);
  const bool sync = enable_sync_init(device.get());
  hooks.serve_init(device.get());
  std::int32_t status = -EIO;
  bool reported = false;
  {
    mount_call_scope inside(&hooks);  // from "proceed" until the helper's status
    const char proceed = 0;
    if (::send(ours.get(), &proceed, 1, MSG_NOSIGNAL) == 1) {
      std::size_t got = 0;
      auto* bytes = reinterpret_cast<char*>(&status);
      while (got < sizeof status) {
        const ssize_t n = ::recv(ours.get(), bytes + got, sizeof status - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
      }
      reported = got == sizeof status;
    }
  }
  ours.reset();
  const int exit_status = wait_helper(pid);
  const std::string text = said();
  if (!reported)
    return fail(EIO, "cannot mount {}: {} ended without reporting the mount (exit status {}){}", o.mountpoint, helper,
                exit_status, text);
  if (status != 0) {
    const int err = status < 0 && status > -4096 ? -status : EIO;
    return fail(err, "cannot mount {}: {} could not mount it: {}{}", o.mountpoint, helper, std::strerror(err), text);
  }
  if (!text.empty()) log::warn("{}:{}", helper, text);
  return std::optional<bool>(sync);
}

// The classic protocol (every fusermount3): the helper mounts, then sends
// the fd; INIT comes after.
inline outcome<void> mount_fusermount(const mount_options& o, const std::string& helper, unique_fd& device) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return fail(errno, "socketpair: {}", std::strerror(errno));
  unique_fd ours(sv[0]), theirs(sv[1]);
  const pid_t pid =
      spawn_helper(helper, {"-o", o.fusermount_string(), "--", o.mountpoint}, theirs.get(), -1, ours.get());
  if (pid < 0) return fail(errno, "cannot run {}: {}", helper, std::strerror(errno));
  theirs.reset();  // so the read below sees EOF if the helper sent nothing
  auto fd = receive_device(ours.get());
  ours.reset();
  const int status = wait_helper(pid);
  if (!fd || status != 0)
    return fail(EPERM, "cannot mount {}: {} failed (exit status {}); its message is above", o.mountpoint, helper,
                status);
  device = std::move(*fd);
  return {};
}

}  // namespace detail

inline outcome<mount> mount::create(const mount_options& opts, unique_fd& device, const mount_hooks& hooks,
                                   std::stop_token cancel) {
  if (!opts.auto_unmount) return mount_only(opts, device, hooks, std::move(cancel));
  // The watcher starts before the mount, not after it: the mount is there
  // before this process hears of it (fusermount3 records it in the mount
  // table first, libfuse e8d407ce lib/mount_fsmount.c fuse_kern_fsmount),
  // and a server killed in between would leave it dead with no watcher.
  // A dead mount already there is refused first (check_mountpoint): the
  // watcher must not take away what it did not see made.
  if (auto ok = detail::check_root_type(opts); !ok) return std::unexpected(ok.error());
  auto watcher = start_watcher(opts.mountpoint, opts.helper);
  if (!watcher) return std::unexpected(watcher.error());
  auto made = mount_only(opts, device, hooks, std::move(cancel));
  // On failure `watcher` goes: it finds nothing mounted, and exits.
  if (made) made->watcher_ = std::move(*watcher);
  return made;
}

inline outcome<mount> mount::mount_only(const mount_options& opts, unique_fd& device, const mount_hooks& hooks,
                                        std::stop_token cancel) {
  auto root_mode = detail::check_root_type(opts);
  if (!root_mode) return std::unexpected(root_mode.error());

  if (!opts.helper.empty() || !detail::have_mount_privilege()) {
    if (auto ok = detail::check_device_for_helper(opts); !ok) return std::unexpected(ok.error());
    if (!detail::have_mount_privilege())
      if (auto ok = detail::check_fuse_conf(opts, detail::read_fuse_conf()); !ok) return std::unexpected(ok.error());
    const std::string helper = detail::helper_for(opts);
    if (helper.empty())
      return fail(EPERM, "cannot mount {}: not running as root, and fusermount3 is not installed (apt-get install "
                         "fuse3)", opts.mountpoint);
    if (opts.sync_init) {
      auto sync = detail::mount_helper_sync(opts, helper, device, hooks, cancel);
      if (!sync) return std::unexpected(sync.error());
      if (*sync) return mount(opts.mountpoint, mount_method::fusermount, **sync, helper);
    }
    if (auto r = detail::mount_fusermount(opts, helper, device); !r) return std::unexpected(r.error());
    hooks.serve_init(device.get());
    return mount(opts.mountpoint, mount_method::fusermount, false, helper);
  }

  auto dev = detail::open_fuse_device();
  if (!dev) return std::unexpected(dev.error());
  device = std::move(*dev);
  const bool sync = opts.sync_init && detail::enable_sync_init(device.get());
  // Synchronous: the worker must be reading before the mount call, which
  // blocks until INIT is answered. Asynchronous, new API: the connection
  // exists after fsconfig; serve INIT then, and attach the mount only once
  // INIT succeeded, so a failing or crashing init() never leaves a dead mount.
  // Asynchronous mount(2): reading before the mount fails (EPERM), so the
  // worker starts after it.
  if (sync) hooks.serve_init(device.get());
  std::function<bool()> before_attach;
  if (!sync)
    before_attach = [&] {
      hooks.serve_init(device.get());
      return !hooks.await_init || hooks.await_init();
    };
  mount_method method = opts.legacy_mount_api ? mount_method::legacy : mount_method::new_api;
  std::optional<unsigned> connection;
  outcome<void> r;
  if (opts.legacy_mount_api) {
    r = detail::mount_legacy(opts, device.get(), *root_mode, &hooks);
  } else if (auto made = detail::mount_new_api(opts, device.get(), *root_mode, before_attach, &hooks)) {
    connection = *made;
  } else {
    r = std::unexpected(made.error());
  }
  if (!r && method == mount_method::new_api && r.error().code.value() == ENOSYS) {
    log::debug("no new mount API ({}); using mount(2)", r.error().message);
    r = detail::mount_legacy(opts, device.get(), *root_mode, &hooks);
    method = mount_method::legacy;
  }
  if (!r) return std::unexpected(r.error());
  if (!sync && method == mount_method::legacy) hooks.serve_init(device.get());
  log::debug("mounted {} ({}, {} INIT)", opts.mountpoint, method == mount_method::new_api ? "new mount API" : "mount(2)",
             sync ? "synchronous" : "asynchronous");
  return mount(opts.mountpoint, method, sync, {}, connection);
}

inline outcome<unmount_watcher> mount::start_watcher(const std::string& mountpoint, const std::string& helper) {
  // A user's mount is unmounted through the helper (root needs none).
  std::string unmounter;
  if (!detail::have_mount_privilege()) {
    unmounter = helper.empty() ? detail::find_in_path("fusermount3") : helper;
    if (unmounter.empty()) return fail(ENOENT, "auto_unmount: fusermount3 is not installed, and only it can unmount "
                                               "a user's mount");
  }
  return unmount_watcher::fork_for(mountpoint, unmounter);
}

inline outcome<void> mount::watch() {
  if (watcher_.active() || !active_) return {};
  auto w = start_watcher(mountpoint_, helper_);
  if (!w) return std::unexpected(w.error());
  watcher_ = std::move(*w);
  return {};
}

inline outcome<void> mount::unmount_and_end() {
  if (!active_ || method_ == mount_method::fusermount || !find_fuse_mount(mountpoint_)) return unmount();
  if (::umount2(mountpoint_.c_str(), 0) == 0 || ::umount2(mountpoint_.c_str(), MNT_FORCE | MNT_DETACH) == 0) {
    active_ = false;
    watcher_.stop();
    return {};
  }
  return unmount();
}

inline outcome<void> mount::unmount() {
  if (!active_) return {};
  active_ = false;
  // The watcher is let go once the mount is gone, not before: its last look
  // must find a plain directory, not a server that is stopping.
  struct let_go {
    unmount_watcher& w;
    ~let_go() { w.stop(); }
  } after{watcher_};
  // Already unmounted from outside (fusermount3 -u, umount): nothing to do.
  if (!find_fuse_mount(mountpoint_)) return {};
  if (method_ == mount_method::fusermount) {
    int status = helper_.empty() ? -1 : detail::run_fusermount(helper_, {"-u", "-q", "-z", "--", mountpoint_}, -1);
    if (status != 0) return fail(EIO, "{} -u {} failed (exit status {})", helper_, mountpoint_, status);
    return {};
  }
  if (::umount2(mountpoint_.c_str(), MNT_DETACH) != 0) {
    const int err = errno;
    // EINVAL: no longer a mount point (already unmounted from outside).
    if (err == EINVAL || err == ENOENT) return {};
    return fail(err, "cannot unmount {}: {}", mountpoint_, std::strerror(err));
  }
  return {};
}

}  // namespace fusexx
