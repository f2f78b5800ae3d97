// The benchmarks' libfuse baseline (//benchmarks:libfuse_passthrough) mounted
// for real over a temporary source directory: what goes in through the mount
// must be in the source directory and the other way round, and its command
// line must keep the contract the benchmark driver relies on.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

using namespace fusexx::testing;

namespace {

std::string baseline_binary() { return example_binary("FUSEXX_LIBFUSE_PASSTHROUGH"); }

void write_file(const std::string& path, const std::string& content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  REQUIRE_MESSAGE(fd >= 0, path << ": " << std::strerror(errno));
  CHECK(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  ::close(fd);
}

// The baseline serving `source` on `mnt` in the foreground; stopped with
// SIGTERM (as the benchmark driver stops it), which must unmount and exit 0.
class baseline {
 public:
  baseline(const std::string& source, const std::string& mnt, const std::string& extra_options = {})
      : mnt_(mnt) {
    std::string opts = "source=" + source + (extra_options.empty() ? "" : "," + extra_options);
    child_ = spawn({baseline_binary(), "-f", "-o", opts, mnt});
    REQUIRE(child_.pid > 0);
    REQUIRE_MESSAGE(eventually([&] { return is_fuse_mounted(mnt_); }), "the baseline never mounted " << mnt_);
  }
  ~baseline() {
    if (child_.pid > 0) stop();
  }
  int stop() {
    ::kill(child_.pid, SIGTERM);
    int status = wait_exit(child_.pid);
    child_.pid = -1;
    return status;
  }
  std::string path(const std::string& relative) const { return mnt_ + "/" + relative; }

 private:
  std::string mnt_;
  child child_;
};

// A page-aligned buffer, as O_DIRECT wants.
struct aligned {
  explicit aligned(std::size_t size) {
    void* p = nullptr;
    REQUIRE(::posix_memalign(&p, 4096, size) == 0);
    data.reset(static_cast<char*>(p));
  }
  struct free_deleter {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, free_deleter> data;
};

}  // namespace

TEST_CASE("libfuse baseline: files written through the mount land in the source and back") {
  REQUIRE_MESSAGE(!baseline_binary().empty(), "FUSEXX_LIBFUSE_PASSTHROUGH is not set (run through bazel test)");
  temp_dir dir;
  const std::string source = dir.sub("source");
  baseline fs(source, dir.sub("mnt"));

  SUBCASE("create, write, read back") {
    write_file(fs.path("new.txt"), "through the mount\n");
    CHECK(slurp(source + "/new.txt") == "through the mount\n");
    CHECK(slurp(fs.path("new.txt")) == "through the mount\n");
    write_file(source + "/native.txt", "from the source side\n");
    CHECK(slurp(fs.path("native.txt")) == "from the source side\n");
    struct stat st {};
    REQUIRE(::stat(fs.path("new.txt").c_str(), &st) == 0);
    CHECK(st.st_size == 18);
    CHECK((st.st_mode & 0777) == 0644);
  }
  SUBCASE("directories: mkdir, a few hundred names, rename, unlink, rmdir") {
    REQUIRE(::mkdir(fs.path("many").c_str(), 0755) == 0);
    std::vector<std::string> expected{".", ".."};
    for (int i = 0; i < 300; ++i) {
      std::string name = "file-with-a-longish-name-" + std::to_string(i);
      write_file(fs.path("many/" + name), std::to_string(i));
      expected.push_back(name);
    }
    std::sort(expected.begin(), expected.end());
    CHECK(list_dir(fs.path("many")) == expected);
    CHECK(list_dir(source + "/many") == std::vector<std::string>(expected));
    // A second listing (readdirplus has handed out lookups by now) agrees, and
    // every name it gave stats with the content written.
    CHECK(list_dir(fs.path("many")) == expected);
    CHECK(slurp(fs.path("many/file-with-a-longish-name-299")) == "299");

    REQUIRE(::rename(fs.path("many/file-with-a-longish-name-7").c_str(), fs.path("renamed").c_str()) == 0);
    CHECK(slurp(source + "/renamed") == "7");
    CHECK(::access((source + "/many/file-with-a-longish-name-7").c_str(), F_OK) == -1);
    CHECK(slurp(fs.path("renamed")) == "7");

    REQUIRE(::unlink(fs.path("renamed").c_str()) == 0);
    CHECK(::access((source + "/renamed").c_str(), F_OK) == -1);
    errno = 0;
    CHECK(::unlink(fs.path("renamed").c_str()) == -1);
    CHECK(errno == ENOENT);

    errno = 0;
    CHECK(::rmdir(fs.path("many").c_str()) == -1);
    CHECK(errno == ENOTEMPTY);
    for (const auto& name : expected)
      if (name != "." && name != ".." && name != "file-with-a-longish-name-7")
        REQUIRE(::unlink(fs.path("many/" + name).c_str()) == 0);
    CHECK(::rmdir(fs.path("many").c_str()) == 0);
    CHECK(::access((source + "/many").c_str(), F_OK) == -1);
  }
  SUBCASE("links, symlinks and truncate") {
    write_file(fs.path("target"), "0123456789");
    REQUIRE(::link(fs.path("target").c_str(), fs.path("hard").c_str()) == 0);
    struct stat a {}, b {};
    REQUIRE(::stat(fs.path("target").c_str(), &a) == 0);
    REQUIRE(::stat(fs.path("hard").c_str(), &b) == 0);
    CHECK(a.st_ino == b.st_ino);
    CHECK(b.st_nlink == 2);
    REQUIRE(::symlink("target", fs.path("soft").c_str()) == 0);
    char buf[64] = {};
    CHECK(::readlink(fs.path("soft").c_str(), buf, sizeof buf) == 6);
    CHECK(std::string(buf) == "target");
    CHECK(slurp(fs.path("soft")) == "0123456789");
    REQUIRE(::truncate(fs.path("hard").c_str(), 4) == 0);
    CHECK(slurp(source + "/target") == "0123");
  }
}

TEST_CASE("libfuse baseline: timeout=0 makes every stat see the source as it is now") {
  temp_dir dir;
  const std::string source = dir.sub("source");
  baseline fs(source, dir.sub("mnt"), "timeout=0");
  write_file(source + "/f", "abc");
  struct stat st {};
  REQUIRE(::stat(fs.path("f").c_str(), &st) == 0);
  CHECK(st.st_size == 3);
  // Changed behind the mount's back: with no attribute caching the very next
  // stat through the mount must show it.
  write_file(source + "/f", "abcdefgh");
  REQUIRE(::chmod((source + "/f").c_str(), 0600) == 0);
  REQUIRE(::stat(fs.path("f").c_str(), &st) == 0);
  CHECK(st.st_size == 8);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::unlink((source + "/f").c_str()) == 0);
  errno = 0;
  CHECK(::stat(fs.path("f").c_str(), &st) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("libfuse baseline: O_DIRECT 4 KiB pread and pwrite") {
  // Both ways writes reach the server: spliced from /dev/fuse, and copied.
  for (const char* extra : {"", "nosplice"}) {
    CAPTURE(extra);
    temp_dir dir;
    const std::string source = dir.sub("source");
    baseline fs(source, dir.sub("mnt"), extra);

    constexpr std::size_t block = 4096;
    constexpr int blocks = 16;
    int fd = ::open(fs.path("direct.bin").c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
    REQUIRE_MESSAGE(fd >= 0, "open O_DIRECT: " << std::strerror(errno));
    aligned out(block), in(block);
    // Every block gets its own byte, written out of order.
    for (int i : {5, 0, 15, 9, 1, 14, 2, 13, 3, 12, 4, 11, 6, 10, 7, 8}) {
      std::memset(out.data.get(), 'a' + i, block);
      REQUIRE_MESSAGE(::pwrite(fd, out.data.get(), block, static_cast<off_t>(i) * block) == block,
                      "pwrite: " << std::strerror(errno));
    }
    for (int i : {3, 15, 0, 8}) {
      std::memset(in.data.get(), 0, block);
      REQUIRE_MESSAGE(::pread(fd, in.data.get(), block, static_cast<off_t>(i) * block) == block,
                      "pread: " << std::strerror(errno));
      CHECK(std::string(in.data.get(), block) == std::string(block, static_cast<char>('a' + i)));
    }
    ::close(fd);
    std::string native = slurp(source + "/direct.bin");
    REQUIRE(native.size() == block * blocks);
    for (int i = 0; i < blocks; ++i) CHECK(native[static_cast<std::size_t>(i) * block + 17] == 'a' + i);
    CHECK(fs.stop() == 0);
  }
}

TEST_CASE("libfuse baseline: command line contract") {
  const std::string bin = baseline_binary();
  REQUIRE(!bin.empty());
  temp_dir dir;
  const std::string mnt = dir.sub("mnt");

  SUBCASE("a missing or unusable source= is exit status 2 with a message, and nothing is mounted") {
    auto missing = run({bin, "-f", mnt}, /*with_stderr=*/true);
    CHECK(missing.status == 2);
    CHECK(missing.out.find("source=") != std::string::npos);
    auto nonexistent = run({bin, "-f", "-o", "source=" + dir.path() + "/nowhere", mnt}, true);
    CHECK(nonexistent.status == 2);
    CHECK(nonexistent.out.find("nowhere") != std::string::npos);
    write_file(dir.path() + "/plain-file", "x");
    auto not_a_dir = run({bin, "-f", "-o", "source=" + dir.path() + "/plain-file", mnt}, true);
    CHECK(not_a_dir.status == 2);
    CHECK(not_a_dir.out.find("plain-file") != std::string::npos);
    CHECK_FALSE(is_fuse_mounted(mnt));
  }
  SUBCASE("SIGTERM unmounts and exits 0") {
    const std::string source = dir.sub("source");
    write_file(source + "/x", "x");
    baseline fs(source, mnt, "timeout=0.5,max_threads=4");
    CHECK(slurp(fs.path("x")) == "x");
    CHECK(fs.stop() == 0);
    CHECK_FALSE(is_fuse_mounted(mnt));
    CHECK(slurp(source + "/x") == "x");  // the source is untouched
  }
  SUBCASE("without -f the command returns once mounted; an unmount ends the daemon") {
    const std::string source = dir.sub("source");
    write_file(source + "/x", "daemon");
    REQUIRE(run({bin, "-o", "source=" + source, mnt}).status == 0);
    CHECK(slurp(mnt + "/x") == "daemon");
    auto daemons = pids_mentioning("source=" + source);
    REQUIRE(daemons.size() == 1);
    REQUIRE(::umount2(mnt.c_str(), MNT_DETACH) == 0);
    CHECK(eventually([&] { return process_ended(daemons[0]); }));
  }
}
