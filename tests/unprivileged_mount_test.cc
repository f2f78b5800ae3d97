// The unprivileged path: a non-root user mounts through fusermount3, which
// passes the /dev/fuse fd back over _FUSE_COMMFD. Needs a real second user,
// so this file runs outside Bazel's sandbox (tests/BUILD.bazel, NO_SANDBOX).
#include <doctest/doctest.h>

#include <fusexx/fusexx.hpp>

#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {
const std::string greeting = "Hello, world!\n";
}

TEST_CASE("unprivileged: fusermount3 mounts for a non-root user") {
  const std::string hello = example_binary("FUSEXX_HELLO");
  REQUIRE(!hello.empty());
  REQUIRE_MESSAGE(::access("/usr/bin/fusermount3", X_OK) == 0, "fusermount3 is missing: run tools/dev setup");
  struct stat dev {};
  REQUIRE(::stat("/dev/fuse", &dev) == 0);
  REQUIRE_MESSAGE((dev.st_mode & 0006) == 0006,
                  "/dev/fuse is not open to other users (udev makes it 0666): run tools/dev setup");

  temp_dir dir;
  // The binary must be reachable by nobody: Bazel's output tree under /root is not.
  const std::string bin = dir.path() + "/hello";
  std::filesystem::copy_file(hello, bin);
  ::chmod(bin.c_str(), 0755);
  const std::string mp = dir.sub("mnt");
  REQUIRE(::chown(mp.c_str(), 65534, 65534) == 0);
  const std::vector<std::string> as_nobody = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  auto with = [&](std::vector<std::string> tail) {
    auto v = as_nobody;
    v.insert(v.end(), tail.begin(), tail.end());
    return v;
  };

  child server_process = spawn(with({bin, "-f", mp}));
  REQUIRE(eventually([&] { return is_fuse_mounted(mp); }));
  auto entry = find_fuse_mount(mp);
  CHECK(entry->super_options.find("user_id=65534") != std::string::npos);

  CHECK(run(with({"cat", mp + "/hello.txt"})).out == greeting);
  // Without allow_other even root is kept out of a user's mount.
  struct stat st {};
  CHECK(::stat((mp + "/hello.txt").c_str(), &st) == -1);
  CHECK(errno == EACCES);

  CHECK(run(with({"fusermount3", "-u", mp})).status == 0);
  CHECK(wait_exit(server_process.pid) == 0);
  CHECK_FALSE(is_fuse_mounted(mp));
}
