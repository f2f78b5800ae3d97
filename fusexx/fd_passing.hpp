#pragma once
// Passing a file descriptor over a unix socket (SCM_RIGHTS), with one byte of
// ordinary data so the receiver's read has something to return. fusermount3
// hands the /dev/fuse fd over this way, and a server handing its live
// connection to a successor will too.
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "fd.hpp"
#include "result.hpp"

namespace fusexx {

namespace detail {
// One message header with room for a single fd.
struct fd_message {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  fd_message() {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
};
}  // namespace detail

inline result<void> send_fd(int sock, int fd) {
  detail::fd_message m;
  cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do n = ::sendmsg(sock, &m.msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n != 1) return n < 0 ? last_error() : error(EIO);
  return {};
}

// The fd that arrived, or EIO when the peer closed or sent none.
inline result<unique_fd> receive_fd(int sock) {
  detail::fd_message m;
  ssize_t n;
  do n = ::recvmsg(sock, &m.msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return error(n < 0 ? errno : EIO);
  for (cmsghdr* c = CMSG_FIRSTHDR(&m.msg); c; c = CMSG_NXTHDR(&m.msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
      return unique_fd(fd);
    }
  }
  return error(EIO);
}

}  // namespace fusexx
