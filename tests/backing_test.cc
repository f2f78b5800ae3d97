// fusexx/backing.hpp without a kernel: the refusals the registry decides
// itself, before any ioctl, each with its errno. (What the kernel answers —
// a backing id as root, EPERM without CAP_SYS_ADMIN, ELOOP on a stacked
// mount — is tested on real mounts in passthrough_test and
// passthrough_kernel_test.)
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <fusexx/backing.hpp>
#include <fusexx/connection.hpp>
#include <fusexx/proto/abi.hpp>

using namespace fusexx;

namespace {

struct open_fd {
  int fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  ~open_fd() { ::close(fd); }
};

}  // namespace

TEST_CASE("backing_files: not attached to a connection is ENOTCONN") {
  connection c;
  backing_files b(c);
  open_fd f;
  REQUIRE(f.fd >= 0);
  auto id = b.open(f.fd);
  REQUIRE_FALSE(id);
  CHECK(to_errno(id.error()) == ENOTCONN);
  auto closed = b.close(1);
  REQUIRE_FALSE(closed);
  CHECK(to_errno(closed.error()) == ENOTCONN);
}

TEST_CASE("backing_files: attached, but INIT not answered yet, is ENOTCONN") {
  connection c;
  backing_files b(c);
  open_fd device, f;
  b.attach(device.fd);
  auto id = b.open(f.fd);
  REQUIRE_FALSE(id);
  CHECK(to_errno(id.error()) == ENOTCONN);
}

TEST_CASE("backing_files: INIT without FUSE_PASSTHROUGH granted is EOPNOTSUPP, decided without the kernel") {
  connection c;
  backing_files b(c);
  c.set_offer(7, 45, proto::init_flag::passthrough | proto::init_flag::init_ext);
  c.set_outcome(proto::init_flag::init_ext, 256);  // offered, but not wanted
  // The "device" is /dev/null: an ioctl on it would fail with ENOTTY, so
  // EOPNOTSUPP proves the registry answered itself.
  open_fd device, f;
  b.attach(device.fd);
  auto id = b.open(f.fd);
  REQUIRE_FALSE(id);
  CHECK(to_errno(id.error()) == EOPNOTSUPP);
  CHECK(backing_files::explain(id.error()).find("FUSE_PASSTHROUGH") != std::string::npos);
}

TEST_CASE("backing_files: granted, the ioctl goes to the attached fd; detach stops it") {
  connection c;
  backing_files b(c);
  c.set_outcome(proto::init_flag::passthrough | proto::init_flag::init_ext, 256);
  open_fd device, f;
  b.attach(device.fd);
  auto id = b.open(f.fd);
  REQUIRE_FALSE(id);
  CHECK(to_errno(id.error()) == ENOTTY);  // /dev/null knows no FUSE ioctl: the kernel's answer, passed on
  CHECK(to_errno(b.close(1).error()) == ENOTTY);
  b.detach();
  CHECK(to_errno(b.open(f.fd).error()) == ENOTCONN);
}

TEST_CASE("backing_files: every refusal has its own explanation") {
  for (int e : {ENOTCONN, EOPNOTSUPP, EPERM, EBADF, EISDIR, ELOOP}) {
    CAPTURE(e);
    const std::string why = backing_files::explain(std::error_code(e, std::system_category()));
    CHECK_FALSE(why.empty());
    for (int other : {ENOTCONN, EOPNOTSUPP, EPERM, EBADF, EISDIR, ELOOP})
      if (other != e) CHECK(why != backing_files::explain(std::error_code(other, std::system_category())));
  }
  CHECK(backing_files::explain(std::error_code(EIO, std::system_category())).find("refused") != std::string::npos);
}
