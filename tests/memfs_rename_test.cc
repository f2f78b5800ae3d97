// memfs mounted for real: renameat2 with RENAME_NOREPLACE, RENAME_EXCHANGE
// and RENAME_WHITEOUT (and the combinations the kernel refuses) gives the
// same results and leaves the same trees as on a fresh tmpfs. A whiteout is a
// character device 0/0 with mode 0 where the source was.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "examples/memfs_fs.hpp"
#include "tests/support/diff_run.hpp"
#include "tests/support/memfs_mount.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

std::string errno_of(long rc) { return rc < 0 ? std::string(strerrorname_np(errno)) : std::to_string(rc); }

void put(const std::string& p, const std::string& content) {
  const int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, content.data(), content.size()) == ssize_t(content.size()));
  ::close(fd);
}

// Every object below `dir`: name, type, mode, device numbers, links, content.
std::string tree(const std::string& root, const std::string& rel = "") {
  std::vector<std::string> names;
  const std::string dir = rel.empty() ? root : root + "/" + rel;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string n = e->d_name; n != "." && n != "..") names.push_back(n + ":" + std::to_string(int(e->d_type)));
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  std::string out;
  for (const std::string& entry : names) {
    const std::string n = entry.substr(0, entry.find(':'));
    const std::string r = rel.empty() ? n : rel + "/" + n;
    struct stat st {};
    if (::lstat((root + "/" + r).c_str(), &st) != 0) {
      out += r + " (lstat failed)\n";
      continue;
    }
    out += fmt::format("{} d_type={} mode={:o} rdev={}:{} nlink={} uid={}", r, entry.substr(entry.find(':') + 1),
                       st.st_mode, major(st.st_rdev), minor(st.st_rdev), S_ISDIR(st.st_mode) ? 0 : st.st_nlink,
                       st.st_uid);
    if (S_ISREG(st.st_mode)) out += " content=" + slurp(root + "/" + r);
    out += "\n";
    if (S_ISDIR(st.st_mode)) out += tree(root, r);
  }
  return out;
}

// The same renames in `root`, each described with its result.
std::vector<std::string> renames(const std::string& root) {
  put(root + "/a", "A");
  put(root + "/b", "B");
  REQUIRE(::mkdir((root + "/d").c_str(), 0755) == 0);
  put(root + "/d/x", "X");
  REQUIRE(::mkdir((root + "/e").c_str(), 0755) == 0);
  std::vector<std::string> out;
  auto rn = [&](const std::string& from, const std::string& to, unsigned flags) {
    const long rc = ::renameat2(AT_FDCWD, (root + "/" + from).c_str(), AT_FDCWD, (root + "/" + to).c_str(), flags);
    out.push_back(fmt::format("renameat2({}, {}, {:#x}) -> {}", from, to, flags, errno_of(rc)));
  };
  rn("a", "b", RENAME_NOREPLACE);                      // EEXIST
  rn("a", "c", RENAME_NOREPLACE);                      // c is A now
  rn("c", "d", RENAME_EXCHANGE);                       // a file and a directory swap
  rn("c", "missing", RENAME_EXCHANGE);                 // ENOENT
  rn("c", "d", RENAME_EXCHANGE | RENAME_NOREPLACE);    // EINVAL
  rn("c", "d", RENAME_EXCHANGE | RENAME_WHITEOUT);     // EINVAL
  rn("b", "w", RENAME_WHITEOUT);                       // w is B, b a whiteout
  rn("c", "moved", RENAME_WHITEOUT);                   // a directory: c a whiteout, moved holds x
  rn("w", "b", RENAME_WHITEOUT);                       // over the whiteout b; w a whiteout
  rn("b", "w", RENAME_WHITEOUT | RENAME_NOREPLACE);    // EEXIST: the whiteout w is a name
  rn("b", "e/b2", RENAME_WHITEOUT | RENAME_NOREPLACE);  // across directories
  rn("d", "e", RENAME_NOREPLACE);                      // EEXIST
  rn("e/b2", "moved/x", RENAME_EXCHANGE);              // across directories
  out.push_back("open(w) -> " + errno_of(::open((root + "/w").c_str(), O_RDONLY)));  // device 0/0: ENXIO
  out.push_back(tree(root));
  return out;
}

}  // namespace

TEST_CASE("renameat2: NOREPLACE, EXCHANGE and WHITEOUT as on tmpfs") {
  memfs_mount m;
  tmpfs_dir reference;
  REQUIRE_MESSAGE(reference.mounted, "cannot mount a tmpfs: " << std::strerror(errno));
  const std::vector<std::string> got = renames(m.path());
  const std::vector<std::string> want = renames(reference.path());
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == want[i]);
  // And it happened (a refusal on both sides would also be "the same").
  CHECK(got[6] == "renameat2(b, w, 0x4) -> 0");
  struct stat st {};
  REQUIRE(::lstat(m.path("c").c_str(), &st) == 0);
  CHECK(S_ISCHR(st.st_mode));
  CHECK((st.st_mode & 07777) == 0);
  CHECK(st.st_rdev == makedev(0, 0));
  CHECK(st.st_uid == ::getuid());
}
