#pragma once
// A serving mount's control socket: where a successor asks the server to hand
// its connection over (and, later, where tools ask it for its state). It is
// found from the mount itself, not from a path anyone must know: an abstract
// unix socket (no file, gone with its last fd) named after the mount's FUSE
// connection number — the minor of its device number, read from mountinfo
// (which asks the server nothing, unlike stat(2)): "fusexx-ctl/<number>".
//
// SOCK_SEQPACKET: every message arrives whole, with the fds sent beside it.
// Abstract sockets have no file permissions, so the server checks its peer's
// credentials (SO_PEERCRED): the same user, or root.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "../detail/kernel_file.hpp"
#include "../failure.hpp"
#include "../fd.hpp"
#include "../mount/mountinfo.hpp"

namespace fusexx {

inline std::string control_socket_name(unsigned connection) { return "fusexx-ctl/" + std::to_string(connection); }

// The FUSE connection number of the mount at `mountpoint`.
inline outcome<unsigned> fuse_connection_of(const std::string& mountpoint) {
  auto e = find_fuse_mount(mountpoint);
  if (!e) return fail(ENOENT, "{} is not a FUSE mount", mountpoint);
  auto id = fuse_connection_id(*e);
  if (!id) return fail(EINVAL, "the mount at {} has no FUSE connection number (device {})", mountpoint, e->device);
  return *id;
}

namespace detail {
inline socklen_t abstract_address(const std::string& name, sockaddr_un& a) {
  std::memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  const std::size_t n = std::min(name.size(), sizeof a.sun_path - 1);
  std::memcpy(a.sun_path + 1, name.data(), n);  // sun_path[0] == 0: the abstract namespace
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}
}  // namespace detail

// The server's end: listening, non-blocking (an event loop awaits it). The
// name may still be bound by a process whose connection of that number has
// ended (the kernel reuses numbers at once); then the server takes
// "fusexx-ctl/<number>.<pid>", which successors find in /proc/net/unix.
inline outcome<unique_fd> listen_control(unsigned connection) {
  const std::string usual = control_socket_name(connection);
  for (const std::string& name : {usual, usual + "." + std::to_string(::getpid())}) {
    unique_fd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s) return fail(errno, "control socket: {}", std::strerror(errno));
    sockaddr_un a;
    const socklen_t len = detail::abstract_address(name, a);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), len) != 0) {
      if (errno == EADDRINUSE) continue;
      return fail(errno, "control socket @{}: {}", name, std::strerror(errno));
    }
    if (::listen(s.get(), 4) != 0) return fail(errno, "control socket: listen: {}", std::strerror(errno));
    return s;
  }
  return fail(EADDRINUSE, "control socket @{}: in use, and so is its fallback", usual);
}

// The names a server of `connection` may listen on: the usual one first, then
// the fallbacks bound in this network namespace (/proc/net/unix lists
// abstract names with a leading '@').
inline std::vector<std::string> control_socket_candidates(unsigned connection) {
  std::vector<std::string> names{control_socket_name(connection)};
  const std::string prefix = "@" + control_socket_name(connection) + ".";
  const auto table = detail::read_kernel_file("/proc/net/unix");
  if (!table) return names;
  detail::for_each_part(*table, '\n', [&](std::string_view line) {
    const auto at = line.rfind(' ');
    if (at == std::string_view::npos) return;
    const std::string_view path = line.substr(at + 1);
    if (path.starts_with(prefix) && std::ranges::find(names, path.substr(1)) == names.end())
      names.emplace_back(path.substr(1));
  });
  return names;
}

// A client's end, connected to the control socket `name`.
inline outcome<unique_fd> connect_control_socket(const std::string& name, const std::string& mountpoint) {
  unique_fd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s) return fail(errno, "socket: {}", std::strerror(errno));
  sockaddr_un a;
  const socklen_t len = detail::abstract_address(name, a);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), len) != 0) {
    const int err = errno;
    if (err == ECONNREFUSED || err == ENOENT)
      return fail(err, "nothing answers for the mount at {}: its server is not a fusexx server, or it cannot hand "
                       "over (no control socket @{})",
                  mountpoint, name);
    return fail(err, "cannot reach the server of {}: {}", mountpoint, std::strerror(err));
  }
  return s;
}

// Whether the peer on `sock` may control this server: the same user, or root.
inline bool peer_may_control(int sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == 0 || cred.uid == ::geteuid();
}

}  // namespace fusexx
