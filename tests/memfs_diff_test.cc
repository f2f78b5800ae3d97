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
#include "tests/support/diff_run.hpp"
#include "tests/support/difftest.hpp"
#include "tests/support/mounted.hpp"

using namespace fusexx;
using namespace fusexx::testing;

TEST_CASE("memfs and tmpfs give the same results for the same random operations") {
  const std::vector<std::uint64_t> seeds = diff_seeds();
  const int ops = diff_ops();
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
    const bool same = run_seed(t, seed, ops);
    total += t.operations();
    if (!same) ++failed;
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
