// A stand-in for libfuse 3.19's fusermount3, for tests that run as root (the
// real helper, setuid, is tested as a user where the anchors folder has it:
// tests/real_fusermount_test.cc). It behaves as util/fusermount.c at libfuse
// e8d407ce does, in what the library can see:
//
//   HELPER [--sync-init] [-o OPTS] [--] MNT      (with _FUSE_COMMFD=N)
//   --sync-init: open /dev/fuse, check MNT (failing here: exit 1, no fd
//       sent), send the fd (one byte + SCM_RIGHTS), wait for one byte (EOF:
//       exit 1, nothing mounted), mount with the new mount API (blocks until
//       INIT is answered), send an int32_t: 0 or -errno; exit 0, or 1 when the
//       mount failed (mount_fuse_sync_init, main)
//   classic: mount, then send the fd; exit 0
//   -u [-q] [-z] MNT: unmount
// (The real helper's auto_unmount watcher is not here: fusexx uses its own,
// fusexx/mount/auto_unmount.hpp says why.)
//
// Failure modes, for the library's side of them:
//   FAKE_FUSERMOUNT_NO_SYNC=1     a helper from before 3.19 (Debian 12 has
//       3.14): getopt refuses --sync-init, exit 1, as such a helper does
//       ("unrecognized option")
//   FAKE_FUSERMOUNT_ERRNO=N       the mount call fails with errno N
//   FAKE_FUSERMOUNT_MTAB_MS=N     N ms pass between the mount being attached
//       and the library hearing of it, as with the real helper, which
//       records the mount (fuse_mnt_add_mount_helper: it runs mount -f, some
//       30 ms here) after move_mount and before it sends the fd or the status
//       (lib/mount_fsmount.c fuse_kern_fsmount, util/fusermount.c
//       mount_fuse_sync_init): a server killed then has a live-looking mount
//       it never heard of
#include <fcntl.h>
#include <getopt.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <fusexx/fd_passing.hpp>
#include <fusexx/mount/mount.hpp>

namespace {

const char* progname = "fake_fusermount";

// The mount, or an injected failure (errno set either way).
bool do_mount(const fusexx::mount_options& o, int dev, mode_t root_mode) {
  if (const char* e = std::getenv("FAKE_FUSERMOUNT_ERRNO"); e && *e) {
    errno = std::atoi(e);
    std::fprintf(stderr, "%s: mount failed: %s\n", progname, std::strerror(errno));
    return false;
  }
  auto r = fusexx::detail::mount_new_api(o, dev, root_mode);
  if (!r) {
    std::fprintf(stderr, "%s: %s\n", progname, r.error().message.c_str());
    errno = r.error().code.value();
    return false;
  }
  if (const char* ms = std::getenv("FAKE_FUSERMOUNT_MTAB_MS"); ms && *ms)
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(ms)));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const bool old_helper = std::getenv("FAKE_FUSERMOUNT_NO_SYNC") != nullptr;
  bool sync = false, unmount = false;
  std::string options;
  static const option modern[] = {{"sync-init", no_argument, nullptr, 'S'},
                                  {"unmount", no_argument, nullptr, 'u'},
                                  {"options", required_argument, nullptr, 'o'},
                                  {nullptr, 0, nullptr, 0}};
  static const option old[] = {{"unmount", no_argument, nullptr, 'u'},
                               {"options", required_argument, nullptr, 'o'},
                               {nullptr, 0, nullptr, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "hVo:uzq", old_helper ? old : modern, nullptr)) != -1) {
    switch (ch) {
      case 'S': sync = true; break;
      case 'u': unmount = true; break;
      case 'o': options = optarg; break;
      case 'z': case 'q': break;
      case 'h': case 'V': return 0;
      default: return 1;  // getopt said why ("unrecognized option '--sync-init'")
    }
  }
  if (optind != argc - 1) {
    std::fprintf(stderr, "%s: one mountpoint expected\n", progname);
    return 1;
  }
  const std::string mountpoint = argv[optind];
  if (unmount) return ::umount2(mountpoint.c_str(), MNT_DETACH) == 0 ? 0 : 1;

  const char* comm_env = std::getenv("_FUSE_COMMFD");
  if (!comm_env) {
    std::fprintf(stderr, "%s: old style mounting not supported\n", progname);
    return 1;
  }
  const int comm = std::atoi(comm_env);
  struct stat st {};
  if (::fstat(comm, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    std::fprintf(stderr, "%s: file descriptor %d is not a socket, can't send fuse fd\n", progname, comm);
    return 1;
  }
  fusexx::mount_options o;
  o.mountpoint = mountpoint;
  for (auto& [k, v] : fusexx::split_options(options)) {
    std::optional<std::string_view> value;
    if (v) value = *v;
    (void)o.apply(k, value);  // the library only sends options it knows
  }
  auto root_mode = fusexx::detail::check_mountpoint(mountpoint);
  fusexx::unique_fd dev(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!root_mode || !dev) {
    std::fprintf(stderr, "%s: cannot prepare the mount\n", progname);
    return 1;
  }
  if (!sync) {
    if (!do_mount(o, dev.get(), *root_mode)) return 1;
    if (!fusexx::send_fd(comm, dev.get())) {
      ::umount2(mountpoint.c_str(), MNT_DETACH);
      return 1;
    }
  } else {
    if (!fusexx::send_fd(comm, dev.get())) return 1;
    char proceed = 0;
    if (::recv(comm, &proceed, 1, 0) != 1) {
      std::fprintf(stderr, "%s: the library closed the socket before proceed\n", progname);
      return 1;  // nothing was mounted
    }
    const bool ok = do_mount(o, dev.get(), *root_mode);
    const std::int32_t status = ok ? 0 : -errno;
    if (::send(comm, &status, sizeof status, MSG_NOSIGNAL) != sizeof status)
      std::fprintf(stderr, "%s: failed to send mount status\n", progname);
    if (!ok) return 1;
  }
  return 0;
}
