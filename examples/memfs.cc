// memfs: an in-memory filesystem that behaves like tmpfs (examples/memfs_fs.hpp).
//
//   bazel run //examples:memfs -- -f /some/dir [-o size=64m,entry_timeout=1,attr_timeout=1]
//
// fusexx::main, plus the mount options memfs depends on (default_permissions,
// and allow_other for root), which the command line cannot switch off.
#include <cstdio>

#include "examples/memfs_fs.hpp"

int main(int argc, char** argv) {
  memfs_fs fs;
  auto cl = fusexx::parse_command_line(fs, argc, argv);
  if (!cl) {
    std::fprintf(stderr, "memfs: %s\n", cl.error().message.c_str());
    return 2;
  }
  if (cl->help || cl->show_version) {
    if (cl->help) fusexx::print_usage<memfs_fs>(argv[0]);
    else std::printf("fusexx %.*s\n", static_cast<int>(fusexx::version.size()), fusexx::version.data());
    return 0;
  }
  memfs_fs::configure_mount(cl->server.mount);
  return fusexx::run(fs, *cl);
}
