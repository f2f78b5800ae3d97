// Serves a connection through io_uring for uring_handover_test, in a process
// of its own: uring_server DEVICE_FD NEGOTIATE READY_FD.
//   DEVICE_FD  the connection's /dev/fuse fd (inherited);
//   NEGOTIATE  1: answer INIT (with FUSE over io_uring) on a control channel
//              first; 0: continue a connection another process set up;
//   READY_FD   one byte is written to it once the queues are registered.
// Then serves examples/hello's tree until killed. The test forks and execs
// it: a child of a multithreaded process may only make async-signal-safe
// calls before exec, and under ASan one that allocated would wait for ever
// on an allocator lock another thread of the parent held at the fork.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>

#include "examples/hello_fs.hpp"
#include "tests/support/continued_session.hpp"

using namespace fusexx;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: uring_server DEVICE_FD NEGOTIATE READY_FD\n");
    return 2;
  }
  const int fd = std::atoi(argv[1]);
  const bool negotiate = std::atoi(argv[2]) != 0;
  const int ready = std::atoi(argv[3]);
  hello_fs fs;
  fusexx::session s;
  detail::dispatcher<hello_fs> d(fs, s);
  transport::uring_plane plane(detail::request_handler(d), s, fd, {});
  std::optional<transport::device_readers> control;
  if (negotiate) {
    s.conn().want(proto::init_flag::over_io_uring);
    s.before_init_reply = [&](const connection& c, std::uint64_t granted) {
      if (!plane.prepare(c).empty()) ::_exit(20);
      return granted;
    };
    s.after_init_reply = [&](const connection&) { plane.start(); };
    control.emplace(detail::request_handler(d), s, fd, 1, transport::device_readers::fds::session);
    control->start();
    s.init().wait();
  } else {
    testing::continue_uring_session(s);
    if (!plane.prepare(s.conn()).empty()) return 21;
    plane.start();
  }
  // Registered once a request could be served: the test probes.
  const char one = 1;
  if (::write(ready, &one, 1) != 1) return 22;
  for (;;) ::pause();
}
