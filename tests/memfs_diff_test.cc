// memfs against tmpfs: the same random sequences of file operations run on a
// memfs mount and on a fresh tmpfs, and must give the same results, errors
// and final trees (tests/support/difftest.hpp). A failure prints its seed;
// FUSEXX_DIFF_SEED=<seed> replays just that one, FUSEXX_DIFF_SEEDS and
// FUSEXX_DIFF_OPS make longer runs (e.g. bazel test --test_env=...).
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/mount.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "examples/memfs_fs.hpp"
#include "tests/support/difftest.hpp"
#include "tests/support/mounted.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

// A tmpfs of our own (the test runs in a private mount namespace under
// Bazel; elsewhere it is unmounted at the end all the same).
struct tmpfs_dir {
  temp_dir dir;
  bool mounted = ::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=256m,mode=0755") == 0;
  ~tmpfs_dir() {
    if (mounted) ::umount2(dir.path().c_str(), MNT_DETACH);
  }
};

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

// True when files can be given to other users here (not in Bazel's
// sandbox, whose user namespace maps root only).
bool can_give_away(const std::string& dir) {
  const std::string probe = dir + "/.probe";
  const int fd = ::open(probe.c_str(), O_CREAT | O_WRONLY, 0644);
  const bool ok = fd >= 0 && ::fchown(fd, 1000, 1000) == 0;
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  return ok;
}

}  // namespace

TEST_CASE("memfs and tmpfs give the same results for the same random operations") {
  std::vector<std::uint64_t> seeds;
  if (const char* one = std::getenv("FUSEXX_DIFF_SEED")) {
    seeds.push_back(std::strtoull(one, nullptr, 10));
  } else {
    for (std::uint64_t s = 1; s <= env_number("FUSEXX_DIFF_SEEDS", 20); ++s) seeds.push_back(s);
  }
  const int ops = int(env_number("FUSEXX_DIFF_OPS", 500));
  // Writing to a fifo whose reader went away must be EPIPE, not the end of the test.
  ::signal(SIGPIPE, SIG_IGN);
  int total = 0, failed = 0;
  for (std::uint64_t seed : seeds) {
    CAPTURE(seed);
    mounted<memfs_fs> m([](memfs_fs&, server_options& o) { memfs_fs::configure_mount(o.mount); });
    REQUIRE_MESSAGE(m.ok(), m.error());
    tmpfs_dir reference;
    REQUIRE_MESSAGE(reference.mounted, "cannot mount a tmpfs: " << std::strerror(errno));
    differential_tester t(m.path(), reference.dir.path(), seed, can_give_away(reference.dir.path()));
    auto mismatch = t.run(ops);
    if (!mismatch) mismatch = t.compare_trees();
    total += t.operations();
    if (mismatch) {
      ++failed;
      FAIL_CHECK("seed " << seed << " (replay with FUSEXX_DIFF_SEED=" << seed << "): " << *mismatch
                         << "\nlast operations (reference results):\n"
                         << t.history());
    }
  }
  MESSAGE(total << " operations in " << seeds.size() << " sequences");
  if (failed == 0) CHECK(total == int(seeds.size()) * ops);
}

TEST_CASE("the differential tester notices when the two trees differ") {
  tmpfs_dir a, b;
  REQUIRE(a.mounted);
  REQUIRE(b.mounted);
  SUBCASE("in a result") {
    // One extra file in the reference: some operation sees it.
    REQUIRE(::mkdir((b.dir.path() + "/a").c_str(), 0755) == 0);
    differential_tester t(a.dir.path(), b.dir.path(), 7, false);
    auto mismatch = t.run(2000);
    REQUIRE(mismatch);
    CHECK(mismatch->find("operation") != std::string::npos);
  }
  SUBCASE("in the final tree only") {
    differential_tester t(a.dir.path(), b.dir.path(), 7, false);
    REQUIRE_FALSE(t.run(50));
    REQUIRE(::mkdir((b.dir.path() + "/zz").c_str(), 0700) == 0);  // no operation ever names zz
    auto mismatch = t.compare_trees();
    REQUIRE(mismatch);
    CHECK(mismatch->find("zz") != std::string::npos);
  }
}
