// passthrough: mirrors a directory through FUSE (examples/passthrough_fs.hpp).
//
//   passthrough [-f] [-o timeout=SECONDS,passthrough,writeback] SOURCE MOUNTPOINT
//   passthrough [-f] -o source=SOURCE[,...] MOUNTPOINT            (the same)
//
// plus every option of fusexx::main (transport=classic|uring|auto, threads=N,
// ...). A missing or unusable source is an error with exit status 2; the
// server then serves until SIGTERM/SIGINT or an unmount and exits 0.
#include <sys/resource.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "examples/passthrough_fs.hpp"

// Every node the kernel holds keeps an O_PATH fd to its source file, and every
// open file one more: the usual soft limit of 1024 runs out (EMFILE to the
// application) long before the hard limit. Raised to the hard limit, as
// libfuse's passthrough_hp does.
static void raise_fd_limit() {
  rlimit l{};
  if (::getrlimit(RLIMIT_NOFILE, &l) != 0 || l.rlim_cur >= l.rlim_max) return;
  l.rlim_cur = l.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &l) != 0)
    std::fprintf(stderr, "passthrough: warning: cannot raise the open-file limit: %s\n", std::strerror(errno));
}

int main(int argc, char** argv) {
  passthrough_fs fs;
  auto cl = fusexx::parse_command_line(fs, argc, argv);
  if (!cl) {
    std::fprintf(stderr, "passthrough: %s\n", cl.error().message.c_str());
    return 2;
  }
  if (cl->help || cl->show_version) {
    if (cl->help) fusexx::print_usage<passthrough_fs>(argv[0]);
    else std::printf("fusexx %.*s\n", static_cast<int>(fusexx::version.size()), fusexx::version.data());
    return 0;
  }
  raise_fd_limit();
  if (auto r = fs.open_source(); !r) {
    std::fprintf(stderr, "%s\n", r.error().message.c_str());
    return 2;
  }
  passthrough_fs::configure_mount(cl->server.mount);
  // On a disk, reads and writes go between the backing file and the io_uring
  // entries' payloads by DMA: in 2 MiB pages a 1 MiB payload is one or two
  // pieces for the disk, in 4 KiB pages up to 256, more than a disk may take
  // in one request (docs/transports.md). On tmpfs there is no DMA to gain.
  if (!cl->huge_pages_given) cl->server.uring.huge_pages = !fs.memory_backed();
  // The kernel has already applied the caller's umask to every mode it
  // sends; the server's own umask must not take away more.
  ::umask(0);
  return fusexx::run(fs, *cl);
}
