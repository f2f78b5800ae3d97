// A server whose connection is aborted from outside (fusectl's abort, what an
// administrator does to a hung mount) ends, instead of living on with no
// connection. Since fusexx grants FUSE_ABORT_ERROR, reads then fail with
// ECONNABORTED rather than ENODEV. Outside the sandbox: fusectl is mounted
// (if needed) on the host.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <string>

#include <fusexx/fusexx.hpp>

#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

TEST_CASE("a server whose connection is aborted through fusectl ends") {
  temp_dir dir;
  const std::string mp = dir.path();
  child server = spawn({example_binary("FUSEXX_MEMFS"), "-f", mp}, /*capture_stdout=*/true, /*with_stderr=*/true);
  REQUIRE(eventually([&] { return is_fuse_mounted(mp); }));
  const int fd = ::open((mp + "/held").c_str(), O_CREAT | O_RDWR, 0644);  // keeps the mount busy
  REQUIRE(fd >= 0);
  REQUIRE(abort_fuse_connection_at(mp));
  const int status = wait_exit(server.pid, std::chrono::seconds(10));
  const std::string said = slurp_fd(server.stdout_fd);
  ::close(server.stdout_fd);
  CHECK_MESSAGE(status == 0, "the server did not end after the abort (" << status << "): " << said);
  ::close(fd);
  (void)::umount2(mp.c_str(), MNT_DETACH);
}
