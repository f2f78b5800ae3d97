// memfs mounted for real: file handles (name_to_handle_at/open_by_handle_at,
// what NFS export uses) resolve whenever the object exists — also after the
// kernel forgot it (pruned), after it got another name and lost the first,
// for directories below directories — and give ESTALE once it is gone. The
// kernel resolves a handle it has no inode for with LOOKUP "." in the
// handle's node id, and reconnects a directory with LOOKUP "..": memfs asks
// for FUSE_EXPORT_SUPPORT and answers both. Runs outside Bazel's sandbox
// (tests/BUILD.bazel): open_by_handle_at needs CAP_DAC_READ_SEARCH, which
// root of the sandbox's user namespace does not have for this mount (EPERM).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "examples/memfs_fs.hpp"
#include "tests/support/memfs_mount.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

struct handle {
  std::vector<unsigned char> bytes;
  file_handle* get() { return reinterpret_cast<file_handle*>(bytes.data()); }
};

handle handle_of(const std::string& path) {
  handle h;
  h.bytes.resize(sizeof(file_handle) + MAX_HANDLE_SZ);
  h.get()->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  REQUIRE_MESSAGE(::name_to_handle_at(AT_FDCWD, path.c_str(), h.get(), &mount_id, 0) == 0,
                  path << ": " << std::strerror(errno));
  return h;
}

// The mount's notifier.
template <class Mount>
fusexx::notifier& notifier_of(Mount& m) {
  return m.srv().session().notify();
}

// The kernel drops every inode it holds of this mount (PRUNE), so a handle
// can no longer be served from its cache. (A name removed through the mount
// leaves a negative dentry, which pins its directory: forget_name first.)
void forget_everything(memfs_mount& m) {
  const bool forgotten = eventually([&] {
    auto nodes = m.fs.referenced_nodes();
    std::ranges::sort(nodes, std::greater{});  // deeper (younger) first
    // (The root is not counted: LOOKUP ".." of its children gives the kernel
    // references to it, which it never gives back while mounted.)
    return nodes.empty() || (notifier_of(m).prune(nodes) && m.fs.referenced_nodes().empty());
  });
  std::string held;
  for (ino n : m.fs.referenced_nodes()) held += std::to_string(n) + " ";
  REQUIRE_MESSAGE(forgotten, "the kernel still holds references to nodes " << held);
}

// Drops the kernel's (negative) dentry of a removed name in `dir`.
void forget_name(memfs_mount& m, const std::string& dir, const std::string& name) {
  struct stat st {};
  REQUIRE(::stat(m.path(dir).c_str(), &st) == 0);
  (void)notifier_of(m).inval_entry(st.st_ino, name);
}

}  // namespace

TEST_CASE("file handles resolve while the object exists, and give ESTALE once it is gone") {
  memfs_mount m;
  REQUIRE(m.srv().conn().has(proto::init_flag::export_support));
  REQUIRE(::mkdir(m.path("d").c_str(), 0755) == 0);
  REQUIRE(::mkdir(m.path("d/e").c_str(), 0755) == 0);
  {
    const int fd = ::open(m.path("d/e/f").c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "content", 7) == 7);
    ::close(fd);
  }
  handle file = handle_of(m.path("d/e/f"));
  handle dir = handle_of(m.path("d/e"));
  const int mnt = ::open(m.path().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(mnt >= 0);
  auto read_through = [&](handle& h) {
    const int fd = ::open_by_handle_at(mnt, h.get(), O_RDONLY);
    if (fd < 0) return std::string("<") + strerrorname_np(errno) + ">";
    std::string s = slurp_fd(fd);
    ::close(fd);
    return s;
  };
  auto entries_through = [&](handle& h) {
    const int fd = ::open_by_handle_at(mnt, h.get(), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return std::string("<") + strerrorname_np(errno) + ">";
    std::string names;
    for (auto& n : list_dir("/proc/self/fd/" + std::to_string(fd))) names += n + " ";
    ::close(fd);
    return names;
  };

  // While the kernel has the inodes (no LOOKUP needed).
  CHECK(read_through(file) == "content");
  // After it forgot them: resolved by LOOKUP "." (and, for the directory,
  // reconnected up to the root by LOOKUP "..").
  forget_everything(m);
  CHECK(read_through(file) == "content");
  forget_everything(m);
  CHECK(entries_through(dir) == ". .. f ");

  // Another name, then the first one goes: still the same object.
  REQUIRE(::link(m.path("d/e/f").c_str(), m.path("g").c_str()) == 0);
  REQUIRE(::unlink(m.path("d/e/f").c_str()) == 0);
  forget_name(m, "d/e", "f");
  forget_everything(m);
  CHECK(read_through(file) == "content");
  // Renamed elsewhere: the directory's handle follows it.
  REQUIRE(::rename(m.path("d/e").c_str(), m.path("e2").c_str()) == 0);
  forget_name(m, "d", "e");
  forget_everything(m);
  CHECK(entries_through(dir) == ". .. ");

  // Gone: the last name removed, nothing open, the kernel let go.
  REQUIRE(::unlink(m.path("g").c_str()) == 0);
  REQUIRE(::rmdir(m.path("e2").c_str()) == 0);
  forget_name(m, "", "g");
  forget_name(m, "", "e2");
  forget_everything(m);
  CHECK(read_through(file) == "<ESTALE>");
  CHECK(entries_through(dir) == "<ESTALE>");
  CHECK(m.fs.forget_errors() == 0);
  ::close(mnt);
}
