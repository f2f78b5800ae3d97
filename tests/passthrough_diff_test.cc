// passthrough against the native filesystem: the same random sequences of
// file operations run on a passthrough mount (of an empty native directory)
// and on another native directory of the same filesystem, and must give the
// same results, errors and final trees (tests/support/difftest.hpp). A failure
// prints its seed; FUSEXX_DIFF_SEED=<seed> replays just that one,
// FUSEXX_DIFF_SEEDS and FUSEXX_DIFF_OPS make longer runs.
//
// Both directories are on one tmpfs the test mounts itself. Not on ext4:
// there, SEEK_HOLE/SEEK_DATA over a fallocated (unwritten) range answer from
// which of its pages happen to be in the page cache, and the server reads the
// backing file in the kernel's readahead-sized chunks, so a mirror and the
// reference legitimately disagree (seen with longer runs: FUSEXX_DIFF_OPS=1000).
// tmpfs answers from the pages the file really has.
//
// The server is the examples/passthrough binary, as users run it. Ownership:
// the test runs as root and the mirror creates objects with the caller's
// fsuid/fsgid, so owners are real on both sides. Giving files to other users
// (lchown to other ids) is part of the run only where the reference directory
// allows it (not in Bazel's sandbox, whose user namespace maps root only);
// the tester is told so, exactly as memfs_diff_test does.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/mount.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tests/support/diff_run.hpp"
#include "tests/support/difftest.hpp"
#include "tests/support/process.hpp"
#include "tests/support/spawned_mount.hpp"

using namespace fusexx::testing;

TEST_CASE("passthrough and the native filesystem give the same results for the same random operations") {
  const std::string binary = example_binary("FUSEXX_PASSTHROUGH");
  REQUIRE_MESSAGE(!binary.empty(), "FUSEXX_PASSTHROUGH is not set");
  const std::vector<std::uint64_t> seeds = diff_seeds();
  const int ops = diff_ops();
  ::signal(SIGPIPE, SIG_IGN);
  int total = 0, failed = 0;
  for (std::uint64_t seed : seeds) {
    CAPTURE(seed);
    tmpfs_dir native("512m");
    REQUIRE_MESSAGE(native.mounted, "cannot mount a tmpfs: " << std::strerror(errno));
    temp_dir dir;
    const std::string source = native.sub("source"), reference = native.sub("reference"), mnt = dir.sub("mnt");
    // Odd seeds run with timeout=0 (every lookup and stat is a round trip to
    // the server), even seeds with the default one second of caching.
    spawned_mount m(binary, {"-o", "source=" + source + (seed % 2 ? ",timeout=0" : "")}, mnt);
    REQUIRE_MESSAGE(m.ok(), "passthrough did not mount: " << m.output());
    differential_tester t(mnt, reference, seed, can_give_away(reference));
    const bool same = run_seed(t, seed, ops);
    total += t.operations();
    if (!same) ++failed;
    // What went through the mount is really in the source directory.
    if (same) {
      differential_tester source_check(source, reference, seed, false);
      auto differs = source_check.compare_trees();
      CHECK_MESSAGE(!differs, "the source directory differs from the reference: " << differs.value_or(""));
    }
    CHECK_MESSAGE(m.stop() == 0, m.output());
    // The server's own account of a mismatch (it logs handler failures).
    if (!same && !m.output().empty()) MESSAGE("server output for seed " << seed << ":\n" << m.output());
  }
  MESSAGE(total << " operations in " << seeds.size() << " sequences");
  if (failed == 0) CHECK(total == int(seeds.size()) * ops);
}
