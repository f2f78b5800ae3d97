#pragma once
// Keeps a fork apart from the making of mappings a child must not inherit.
// A ring's mappings are marked MADV_DONTFORK right after io_uring_setup maps
// them (transport/uring.hpp: they hold the ring, whose FUSE commands hold
// /dev/fuse); a fork by another thread in between — the auto_unmount
// watcher's, which happens while INIT, and so the rings' set-up, may be under
// way — would copy them, and the watcher would keep a killed server's
// connection alive while it waits for that connection to end. Whoever maps
// such memory holds the guard shared until it is marked; a fork holds it
// exclusively. (The child never touches it: it only makes async-signal-safe
// calls before it execs or exits.)
#include <shared_mutex>

namespace fusexx::detail {

inline std::shared_mutex& fork_guard() {
  static std::shared_mutex guard;
  return guard;
}

}  // namespace fusexx::detail
