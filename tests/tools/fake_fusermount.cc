// A stand-in for a fusermount3 that speaks the two-way --sync-init protocol
// (libfuse 3.19's doc/README.sync-init; Debian's 3.14 has no such option), so
// the library's side can be tested against the helper's side as documented:
//
//   helper: open /dev/fuse, send the fd over _FUSE_COMMFD (SCM_RIGHTS)
//   helper: wait for one "proceed" byte (EOF: the library gave up -> exit 1)
//   helper: mount with the new mount API (blocks until INIT is answered)
//   helper: send one status byte, 0 for success, and exit
//
// Without --sync-init it behaves like a classic fusermount3 (mount, then send
// the fd). `-u` unmounts. FAKE_FUSERMOUNT_NO_SYNC=1 hides --sync-init from
// --help, to test the library's detection. Runs as root (tests only).
#include <sys/mount.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fusexx/fd_passing.hpp>
#include <fusexx/mount/mount.hpp>

namespace {


int usage() {
  std::printf("fake_fusermount: [options] mountpoint\n -h print help\n -o opt[,opt...] mount options\n"
              " -u unmount\n -q quiet\n -z lazy unmount\n");
  if (!std::getenv("FAKE_FUSERMOUNT_NO_SYNC")) std::printf(" --sync-init  wait for the server before mounting\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool sync = false, unmount = false;
  std::string options, mountpoint;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") return usage();
    if (a == "--sync-init") sync = true;
    else if (a == "-u") unmount = true;
    else if (a == "-q" || a == "-z") {
    } else if (a == "-o" && i + 1 < argc) options = argv[++i];
    else if (a == "--" && i + 1 < argc) mountpoint = argv[++i];
    else mountpoint = a;
  }
  if (unmount) return ::umount2(mountpoint.c_str(), MNT_DETACH) == 0 ? 0 : 1;

  fusexx::mount_options o;
  o.mountpoint = mountpoint;
  for (auto& [k, v] : fusexx::split_options(options)) {
    std::optional<std::string_view> value;
    if (v) value = *v;
    (void)o.apply(k, value);  // the library only sends options it knows
  }
  const char* comm_env = std::getenv("_FUSE_COMMFD");
  if (!comm_env) {
    std::fprintf(stderr, "fake_fusermount: no _FUSE_COMMFD\n");
    return 1;
  }
  const int comm = std::atoi(comm_env);
  auto root_mode = fusexx::detail::check_mountpoint(mountpoint);
  fusexx::unique_fd dev(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!root_mode || !dev) {
    std::fprintf(stderr, "fake_fusermount: cannot prepare the mount\n");
    return 1;
  }
  if (!sync) {
    if (auto r = fusexx::detail::mount_new_api(o, dev.get(), *root_mode); !r) {
      std::fprintf(stderr, "fake_fusermount: %s\n", r.error().message.c_str());
      return 1;
    }
    return fusexx::send_fd(comm, dev.get()) ? 0 : 1;
  }

  if (!fusexx::send_fd(comm, dev.get())) return 1;
  char proceed = 0;
  if (::recv(comm, &proceed, 1, 0) != 1) {
    std::fprintf(stderr, "fake_fusermount: the library closed the socket before proceed\n");
    return 1;  // nothing was mounted
  }
  auto r = fusexx::detail::mount_new_api(o, dev.get(), *root_mode);
  if (!r) std::fprintf(stderr, "fake_fusermount: %s\n", r.error().message.c_str());
  const char status = r ? 0 : 1;
  ::send(comm, &status, 1, MSG_NOSIGNAL);
  return r ? 0 : 1;
}
