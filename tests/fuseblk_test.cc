// memfs mounted as type fuseblk, on a loop device (-o blkdev,fsname=/dev/loopN,
// root only, as fusermount3 does it): the kernel sends BMAP (FIBMAP) and, at
// unmount, DESTROY only to such mounts. Runs outside the sandbox: it needs
// the host's loop devices. Every loop device it sets up is detached again.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <string>

#include "examples/memfs_fs.hpp"
#include "tests/support/mounted.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

// losetup lives in sbin, which Bazel's test PATH leaves out.
std::string losetup() {
  for (const char* p : {"/usr/sbin/losetup", "/sbin/losetup"})
    if (::access(p, X_OK) == 0) return p;
  return "losetup";
}

// A loop device on a fresh 4 MiB file; detached (and the file removed) when
// it goes out of scope, however the test ends.
class loop_device {
 public:
  loop_device() {
    char tmpl[] = "/tmp/fusexx-blk-XXXXXX";
    int fd = ::mkstemp(tmpl);
    if (fd < 0) return;
    backing_ = tmpl;
    const bool sized = ::ftruncate(fd, 4 << 20) == 0;
    ::close(fd);
    if (!sized) return;
    auto r = run({losetup(), "-f", "--show", backing_}, /*with_stderr=*/true);
    if (r.status != 0 || !r.out.starts_with("/dev/loop")) {
      error_ = "exit status " + std::to_string(r.status) + ": " + r.out;
      return;
    }
    path_ = r.out.substr(0, r.out.find('\n'));
  }
  ~loop_device() {
    if (!path_.empty()) run({losetup(), "-d", path_});
    if (!backing_.empty()) ::unlink(backing_.c_str());
  }
  loop_device(const loop_device&) = delete;
  loop_device& operator=(const loop_device&) = delete;

  const std::string& path() const { return path_; }
  const std::string& error() const { return error_; }

 private:
  std::string backing_, path_, error_;
};

}  // namespace

TEST_CASE("fuseblk: FIBMAP reaches bmap, and unmounting sends DESTROY") {
  REQUIRE_MESSAGE(::geteuid() == 0, "fuseblk mounts need root");
  bool legacy = false;
  SUBCASE("new mount API") { legacy = false; }
  SUBCASE("mount(2)") { legacy = true; }
  loop_device loop;  // first: it outlives the mount
  REQUIRE_MESSAGE(!loop.path().empty(), "losetup failed: " << loop.error());
  mounted<memfs_fs> m([&](memfs_fs&, server_options& o) {
    memfs_fs::configure_mount(o.mount);
    o.mount.legacy_mount_api = legacy;
    o.mount.blkdev = true;
    o.mount.fsname = loop.path();
    o.mount.blksize = 4096;  // memfs's block size, so BMAP's blocks are memfs's
  });
  REQUIRE_MESSAGE(m.ok(), m.error());
  auto e = find_fuse_mount(m.path());
  REQUIRE(e);
  CHECK(e->fstype.starts_with("fuseblk"));
  CHECK(e->source == loop.path());

  // Block 0 is a hole, block 2 holds data.
  const std::string p = m.path("sparse");
  int fd = ::open(p.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  const std::string data(4096, 'd');
  REQUIRE(::pwrite(fd, data.data(), data.size(), 2 * 4096) == ssize_t(data.size()));
  REQUIRE(::fsync(fd) == 0);
  const auto before = m.fs.counts().bmaps.load();
  int hole = 0, block = 2;
  REQUIRE(::ioctl(fd, FIBMAP, &hole) == 0);
  REQUIRE(::ioctl(fd, FIBMAP, &block) == 0);
  CHECK(m.fs.counts().bmaps.load() - before == 2);
  CHECK(hole == 0);
  CHECK(block == 2 + 1);  // memfs's answer for a block with data (see memfs_fs::bmap)
  ::close(fd);

  // Unmount from outside: the kernel sends DESTROY (and waits for its reply)
  // before umount returns; stop() has not run, so destroy() came from it.
  REQUIRE(m.srv().session().init().current() == session_phase::serving);
  REQUIRE(::umount2(m.path().c_str(), 0) == 0);
  CHECK(m.srv().session().init().current() == session_phase::ended);
  CHECK(m.fs.kernel_lookups() == 0);
  m.stop();
}
