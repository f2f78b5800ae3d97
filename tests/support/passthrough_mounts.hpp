#pragma once
// Test support for examples/passthrough: a source directory mirrored by the
// passthrough binary (as users run it), or by passthrough_fs served in the
// test's own process (so a test can read the server's counters).
#include <fcntl.h>
#include <unistd.h>

#include <concepts>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "examples/passthrough_fs.hpp"
#include "tests/support/mounted.hpp"
#include "tests/support/process.hpp"
#include "tests/support/spawned_mount.hpp"

namespace fusexx::testing {

inline std::string passthrough_binary() {
  std::string b = example_binary("FUSEXX_PASSTHROUGH");
  REQUIRE_MESSAGE(!b.empty(), "FUSEXX_PASSTHROUGH is not set");
  return b;
}

// A source directory and a mountpoint, with the binary serving the one on
// the other.
struct mirror {
  temp_dir dir;
  std::string source = dir.sub("source");
  std::unique_ptr<spawned_mount> m;
  explicit mirror(const std::string& extra_options = "") {
    std::string opts = "source=" + source + (extra_options.empty() ? "" : "," + extra_options);
    m = std::make_unique<spawned_mount>(passthrough_binary(), std::vector<std::string>{"-o", opts}, dir.sub("mnt"));
    REQUIRE_MESSAGE(m->ok(), "passthrough did not mount: " << m->output());
  }
  std::string mnt(const std::string& rel) const { return m->path(rel); }
  std::string src(const std::string& rel) const { return source + "/" + rel; }
};

// passthrough_fs served in this process (its source: an existing directory), so tests can read its counters.
struct in_process_mirror : mounted<passthrough_fs> {
  explicit in_process_mirror(const std::string& source, bool kernel_passthrough = false, bool writeback = false,
                             bool killpriv_v2 = false)
      : in_process_mirror(source, [=](passthrough_fs& fs, server_options&) {
          fs.kernel_passthrough = kernel_passthrough;
          fs.writeback = writeback;
          fs.killpriv_v2 = killpriv_v2;
        }) {}
  // With the filesystem and the server set up further by `configure`
  // (cache timeout, thread count, ...), before the source is opened.
  // (A template: a lambda without captures would otherwise also convert to
  // the bool above.)
  template <std::invocable<passthrough_fs&, server_options&> F>
  in_process_mirror(const std::string& source, F configure)
      : mounted([=](passthrough_fs& fs, server_options& o) {
          fs.source = source;
          configure(fs, o);
          if (auto r = fs.open_source(); !r) FAIL(r.error().message);
          passthrough_fs::configure_mount(o.mount);
        }) {
    REQUIRE_MESSAGE(ok(), error());
  }
};

inline void write_file(const std::string& path, const std::string& content) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  REQUIRE_MESSAGE(fd >= 0, path << ": " << std::strerror(errno));
  REQUIRE(::write(fd, content.data(), content.size()) == ssize_t(content.size()));
  REQUIRE(::close(fd) == 0);
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace fusexx::testing
