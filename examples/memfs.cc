// memfs: an in-memory filesystem that behaves like tmpfs (examples/memfs_fs.hpp).
//
//   bazel run //examples:memfs -- -f /some/dir [-o size=64m,entry_timeout=1,attr_timeout=1]
//   mount -t fuse.memfs memfs /some/dir, or in /etc/fstab (memfs installed in /usr/local/bin):
//   memfs /some/dir fuse.memfs defaults,size=64m 0 0                      (docs/fstab.md)
//
// The mount options memfs depends on (default_permissions, and allow_other
// for root) come from memfs_fs::configure_mount, which fusexx::main applies.
#include "examples/memfs_fs.hpp"

int main(int argc, char** argv) { return fusexx::main<memfs_fs>(argc, argv); }
