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

#include "tests/support/difftest.hpp"
#include "tests/support/process.hpp"
#include "tests/support/spawned_mount.hpp"

using namespace fusexx::testing;

namespace {

// A tmpfs of our own (the test runs in a private mount namespace under
// Bazel; elsewhere it is unmounted at the end all the same).
struct tmpfs_dir {
  temp_dir dir;
  bool mounted = ::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=512m,mode=0755") == 0;
  ~tmpfs_dir() {
    if (mounted) ::umount2(dir.path().c_str(), MNT_DETACH);
  }
  std::string sub(const std::string& name) const {
    const std::string p = dir.path() + "/" + name;
    ::mkdir(p.c_str(), 0755);
    return p;
  }
};

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

bool can_give_away(const std::string& dir) {
  const std::string probe = dir + "/.probe";
  const int fd = ::open(probe.c_str(), O_CREAT | O_WRONLY, 0644);
  const bool ok = fd >= 0 && ::fchown(fd, 1000, 1000) == 0;
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  return ok;
}

}  // namespace

TEST_CASE("passthrough and the native filesystem give the same results for the same random operations") {
  const std::string binary = example_binary("FUSEXX_PASSTHROUGH");
  REQUIRE_MESSAGE(!binary.empty(), "FUSEXX_PASSTHROUGH is not set");
  std::vector<std::uint64_t> seeds;
  if (const char* one = std::getenv("FUSEXX_DIFF_SEED")) {
    seeds.push_back(std::strtoull(one, nullptr, 10));
  } else {
    for (std::uint64_t s = 1; s <= env_number("FUSEXX_DIFF_SEEDS", 20); ++s) seeds.push_back(s);
  }
  const int ops = int(env_number("FUSEXX_DIFF_OPS", 500));
  ::signal(SIGPIPE, SIG_IGN);
  int total = 0, failed = 0;
  for (std::uint64_t seed : seeds) {
    CAPTURE(seed);
    tmpfs_dir native;
    REQUIRE_MESSAGE(native.mounted, "cannot mount a tmpfs: " << std::strerror(errno));
    temp_dir dir;
    const std::string source = native.sub("source"), reference = native.sub("reference"), mnt = dir.sub("mnt");
    // Odd seeds run with timeout=0 (every lookup and stat is a round trip to
    // the server), even seeds with the default one second of caching.
    spawned_mount m(binary, {"-o", "source=" + source + (seed % 2 ? ",timeout=0" : "")}, mnt);
    REQUIRE_MESSAGE(m.ok(), "passthrough did not mount: " << m.output());
    differential_tester t(mnt, reference, seed, can_give_away(reference));
    auto mismatch = t.run(ops);
    if (!mismatch) mismatch = t.compare_trees();
    total += t.operations();
    if (mismatch) {
      ++failed;
      FAIL_CHECK("seed " << seed << " (replay with FUSEXX_DIFF_SEED=" << seed << "): " << *mismatch
                         << "\nlast operations (reference results):\n"
                         << t.history());
    }
    // What went through the mount is really in the source directory.
    if (!mismatch) {
      differential_tester source_check(source, reference, seed, false);
      auto differs = source_check.compare_trees();
      CHECK_MESSAGE(!differs, "the source directory differs from the reference: " << differs.value_or(""));
    }
    CHECK_MESSAGE(m.stop() == 0, m.output());
    // The server's own account of a mismatch (it logs handler failures).
    if (mismatch && !m.output().empty()) MESSAGE("server output for seed " << seed << ":\n" << m.output());
  }
  MESSAGE(total << " operations in " << seeds.size() << " sequences");
  if (failed == 0) CHECK(total == int(seeds.size()) * ops);
}
