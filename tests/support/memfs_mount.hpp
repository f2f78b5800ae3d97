#pragma once
// Test support: memfs served in-process on a fresh mountpoint, with the mount
// options memfs forces on itself and its own -o options ("size=1m,...").
#include <string>

#include <doctest/doctest.h>

#include "examples/memfs_fs.hpp"
#include "tests/support/mounted.hpp"

namespace fusexx::testing {

struct memfs_mount : mounted<memfs_fs> {
  explicit memfs_mount(const std::string& extra_options = {})
      : mounted([&](memfs_fs& fs, server_options& o) {
          memfs_fs::configure_mount(o.mount);
          for (auto& [k, v] : split_options(extra_options)) REQUIRE(fs.option(k, v).value_or(false));
        }) {
    REQUIRE_MESSAGE(ok(), error());
  }
};

}  // namespace fusexx::testing
