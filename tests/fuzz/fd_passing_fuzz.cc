// Fuzz target: receiving file descriptors over a unix socket
// (fusexx/fd_passing.hpp: receive_fd, as the fd from fusermount3 arrives;
// receive_with_fds, as the handover's messages and the fds beside a snapshot
// arrive). The other end of a socketpair sends fuzzed messages: any data, and
// any SCM_RIGHTS control messages — several per message, any number of real
// fds each (copies of /dev/null and of a pipe's end).
//
// Input: u8 config (bits 0-1: the socket type: stream, seqpacket, datagram;
// bit 2: receive_fd, else receive_with_fds; bit 3: the sender closes its end
// before the receiver reads), u16 receive_with_fds's max_bytes (mod 8192), u8
// receives, then messages: u8 data length, the data, u8 control messages
// (mod 5), each a u8 fd count (mod 40) and a u8 of which fds.
//
// Checked: no fd leaks — after the results are dropped and the sockets closed
// the process has exactly the fds it had before, however many fds arrived
// and whatever the calls returned; an fd handed out is open, close-on-exec,
// and one of those sent; receive_with_fds returns at most max_bytes, and on a
// seqpacket or datagram socket exactly the message sent, with exactly its fds.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <vector>

#include <fusexx/fd_passing.hpp>

#include "tests/fuzz/formats.hpp"
#include "tests/fuzz/fuzz.hpp"

namespace {

using namespace fusexx::fuzzing;
using namespace fusexx::fuzzing::fd_passing_format;

struct sent_message {
  std::vector<std::byte> data;
  std::size_t fds = 0;
};

// What an fd handed out must be: open, close-on-exec, and /dev/null or a pipe.
void check_fd(int fd, const char* from) {
  const int flags = ::fcntl(fd, F_GETFD);
  FUZZ_CHECK(flags >= 0, "{} handed out fd {}, which is not open", from, fd);
  FUZZ_CHECK(flags & FD_CLOEXEC, "{} handed out fd {} without close-on-exec", from, fd);
  struct stat st {};
  FUZZ_CHECK(::fstat(fd, &st) == 0 && (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)),
             "{} handed out fd {}, which is none of those sent", from, fd);
}

void run(input& in) {
  const std::uint8_t config = in.u8();
  const int type = socket_types[(config & 3) % 3];
  const std::size_t max_bytes = in.u16() % 8192;
  const unsigned receives = 1 + in.u8() % 8;

  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: {}", std::strerror(errno));
  // The receiver must not wait for what was never sent.
  ::fcntl(sv[0], F_SETFL, ::fcntl(sv[0], F_GETFL) | O_NONBLOCK);
  ::fcntl(sv[1], F_SETFL, ::fcntl(sv[1], F_GETFL) | O_NONBLOCK);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int pipe_fds[2];
  FUZZ_CHECK(null_fd >= 0 && ::pipe2(pipe_fds, O_CLOEXEC) == 0, "/dev/null or a pipe: {}", std::strerror(errno));

  std::deque<sent_message> sent;  // datagram and seqpacket messages not yet received
  while (!in.empty()) {
    sent_message m;
    auto raw = in.bytes(in.u8());
    m.data.resize(raw.size());
    if (!raw.empty()) std::memcpy(m.data.data(), raw.data(), raw.size());
    const unsigned cmsgs = in.u8() % 5;
    std::vector<std::vector<int>> groups;
    std::size_t total = 0;
    for (unsigned c = 0; c < cmsgs; ++c) {
      const unsigned count = in.u8() % 40;
      const std::uint8_t which = in.u8();
      std::vector<int> fds;
      for (unsigned i = 0; i < count; ++i)
        fds.push_back(::fcntl(((which >> (i % 8)) & 1) ? pipe_fds[0] : null_fd, F_DUPFD_CLOEXEC, 0));
      total += count;
      groups.push_back(std::move(fds));
    }
    std::vector<char> control;
    for (const auto& g : groups) control.resize(control.size() + CMSG_SPACE(sizeof(int) * g.size()));
    iovec iov{m.data.data(), m.data.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!control.empty()) {
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      for (const auto& g : groups) {
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * g.size());
        if (!g.empty()) std::memcpy(CMSG_DATA(c), g.data(), sizeof(int) * g.size());
        c = CMSG_NXTHDR(&msg, c);
      }
    }
    const ssize_t n = ::sendmsg(sv[1], &msg, MSG_NOSIGNAL);
    for (const auto& g : groups)
      for (int fd : g) ::close(fd);  // in flight, the kernel holds them now
    m.fds = total;
    if (n >= 0 && type != SOCK_STREAM) sent.push_back(std::move(m));
  }
  if (config & config_close_sender) {
    ::close(sv[1]);
    sv[1] = -1;
  }

  for (unsigned k = 0; k < receives; ++k) {
    if (config & config_receive_fd) {
      auto r = fusexx::receive_fd(sv[0]);
      if (r) check_fd(r->get(), "receive_fd");
      if (type != SOCK_STREAM && !sent.empty() && (r || r.error().value() != EAGAIN)) sent.pop_front();
    } else {
      auto r = fusexx::receive_with_fds(sv[0], max_bytes);
      if (!r) {
        if (type != SOCK_STREAM && !sent.empty() && r.error().value() != EAGAIN) sent.pop_front();
        continue;
      }
      FUZZ_CHECK(r->data.size() <= max_bytes, "receive_with_fds({}) returned {} bytes", max_bytes, r->data.size());
      for (const auto& fd : r->fds) check_fd(fd.get(), "receive_with_fds");
      if (type != SOCK_STREAM) {
        FUZZ_CHECK(!sent.empty(), "receive_with_fds returned a message that was never sent");
        const sent_message m = std::move(sent.front());
        sent.pop_front();
        FUZZ_CHECK(r->data == m.data, "receive_with_fds returned {} bytes of a {}-byte message", r->data.size(),
                   m.data.size());
        FUZZ_CHECK(r->fds.size() == m.fds, "receive_with_fds returned {} fds of a message with {}", r->fds.size(),
                   m.fds);
      }
    }
  }
  ::close(sv[0]);
  if (sv[1] >= 0) ::close(sv[1]);
  ::close(null_fd);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::size_t before = open_fds();
  {
    input in(data, size);
    run(in);
  }
  const std::size_t after = open_fds();
  FUZZ_CHECK(after == before, "{} fd(s) leaked ({} open before, {} after)", after - before, before, after);
  return 0;
}
