#pragma once
// Passing a file descriptor over a unix socket (SCM_RIGHTS), with one byte of
// ordinary data so the receiver's read has something to return. fusermount3
// hands the /dev/fuse fd over this way, and a server handing its live
// connection to a successor will too.
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <span>
#include <vector>

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

// The fd that arrived, or EIO when the peer closed or sent none. Only the
// first fd is kept: any other that came with it is closed, and so is every fd
// of a message that brought no byte. (The room for one fd holds two — the
// kernel fills what CMSG_SPACE(sizeof(int)) rounds up to — and a sender may
// send any number, or an empty datagram with fds: each fd that arrives is
// this process's until closed. Found by tests/fuzz/fd_passing.)
inline result<unique_fd> receive_fd(int sock) {
  detail::fd_message m;
  ssize_t n;
  do n = ::recvmsg(sock, &m.msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return last_error();
  unique_fd first;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m.msg); c; c = CMSG_NXTHDR(&m.msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (!first) first = unique_fd(fd);
      else ::close(fd);
    }
  }
  if (n == 0 || !first) return error(EIO);
  return first;
}

// A message and the fds that travel with it (SOCK_SEQPACKET keeps each one
// whole). At most max_fds_per_message fds.
inline constexpr std::size_t max_fds_per_message = 64;

// `to`: where an unconnected datagram socket sends (the sd_notify socket).
inline result<void> send_with_fds(int sock, std::span<const std::byte> data, std::span<const int> fds,
                                  const sockaddr* to = nullptr, socklen_t to_len = 0) {
  if (fds.size() > max_fds_per_message || data.empty()) return error(EINVAL);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds_per_message)] = {};
  iovec iov{const_cast<std::byte*>(data.data()), data.size()};
  msghdr msg{};
  msg.msg_name = const_cast<sockaddr*>(to);
  msg.msg_namelen = to_len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(data.size())) return n < 0 ? last_error() : error(EIO);
  return {};
}

struct message_with_fds {
  std::vector<std::byte> data;
  std::vector<unique_fd> fds;
};

// One message of at most `max_bytes`. EIO when the peer closed; EMSGSIZE when
// the message or its fds were cut short (the fds that did arrive are closed).
inline result<message_with_fds> receive_with_fds(int sock, std::size_t max_bytes) {
  message_with_fds out;
  out.data.resize(max_bytes);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds_per_message)] = {};
  iovec iov{out.data.data(), out.data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return last_error();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      out.fds.emplace_back(fd);
    }
  }
  if (n == 0) return error(EIO);
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return error(EMSGSIZE);
  out.data.resize(static_cast<std::size_t>(n));
  return out;
}

}  // namespace fusexx
