#pragma once
// Test support: what every differential test run needs around the tester
// (difftest.hpp): scratch tmpfs trees, the seeds and operation count (from
// the environment, so a failure replays with FUSEXX_DIFF_SEED=N), and
// whether files can be given to other users here.
#include <sys/mount.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "tests/support/difftest.hpp"
#include "tests/support/process.hpp"

namespace fusexx::testing {

// A tmpfs of our own (the test runs in a private mount namespace under
// Bazel; elsewhere it is unmounted at the end all the same). `more`: further
// mount options ("nr_inodes=64").
struct tmpfs_dir {
  temp_dir dir;
  bool mounted;
  explicit tmpfs_dir(const char* size = "256m", const std::string& more = {})
      : mounted(::mount("tmpfs", dir.path().c_str(), "tmpfs", 0,
                        (std::string("size=") + size + ",mode=0755" + (more.empty() ? "" : "," + more)).c_str()) == 0) {}
  ~tmpfs_dir() {
    if (mounted) ::umount2(dir.path().c_str(), MNT_DETACH);
  }
  const std::string& path() const { return dir.path(); }
  std::string sub(const std::string& name) const {
    const std::string p = dir.path() + "/" + name;
    ::mkdir(p.c_str(), 0755);
    return p;
  }
};

inline std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

// FUSEXX_DIFF_SEED=N replays one seed; otherwise seeds 1..FUSEXX_DIFF_SEEDS (default 20).
inline std::vector<std::uint64_t> diff_seeds() {
  if (const char* one = std::getenv("FUSEXX_DIFF_SEED")) return {std::strtoull(one, nullptr, 10)};
  std::vector<std::uint64_t> seeds;
  for (std::uint64_t s = 1; s <= env_number("FUSEXX_DIFF_SEEDS", 20); ++s) seeds.push_back(s);
  return seeds;
}

// Operations per seed: FUSEXX_DIFF_OPS (default 500).
inline int diff_ops() { return static_cast<int>(env_number("FUSEXX_DIFF_OPS", 500)); }

// True when files can be given to other users here (not in Bazel's
// sandbox, whose user namespace maps root only).
inline bool can_give_away(const std::string& dir) {
  const std::string probe = dir + "/.probe";
  const int fd = ::open(probe.c_str(), O_CREAT | O_WRONLY, 0644);
  const bool ok = fd >= 0 && ::fchown(fd, 1000, 1000) == 0;
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  return ok;
}

// Runs `ops` operations of `seed` and compares the trees; a mismatch fails
// the test with the seed to replay and the last operations. True on success.
inline bool run_seed(differential_tester& t, std::uint64_t seed, int ops) {
  auto mismatch = t.run(ops);
  if (!mismatch) mismatch = t.compare_trees();
  if (mismatch)
    FAIL_CHECK("seed " << seed << " (replay with FUSEXX_DIFF_SEED=" << seed << "): " << *mismatch
                       << "\nlast operations (reference results):\n"
                       << t.history());
  return !mismatch;
}

}  // namespace fusexx::testing
