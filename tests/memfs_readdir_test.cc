// memfs mounted for real, directory streams under renames: a listing never
// returns an entry twice or more entries than exist, whatever is renamed in
// the directory meanwhile (within it, over other names, out of it and back),
// and a position (telldir) stays where it was. Like tmpfs: an entry keeps its
// place in the directory when renamed within it, and a stream does not list
// entries that arrived after it started (rewinddir starts a new one).
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "examples/memfs_fs.hpp"
#include "tests/support/memfs_mount.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

void make_files(const std::string& dir, const std::string& prefix, int n) {
  for (int i = 0; i < n; ++i) {
    const int fd = ::open((dir + "/" + prefix + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    ::close(fd);
  }
}

struct listing {
  std::multiset<std::string> names;
  std::multiset<ino_t> inodes;
  std::size_t entries = 0;  // without "." and ".."
};

// One pass over `dir`, yielding now and then so the other thread gets going.
listing list_once(const std::string& dir) {
  listing l;
  DIR* d = ::opendir(dir.c_str());
  REQUIRE(d);
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    l.names.insert(name);
    l.inodes.insert(e->d_ino);
    if (++l.entries % 64 == 0) std::this_thread::yield();
  }
  ::closedir(d);
  return l;
}

std::size_t repeated(const std::multiset<ino_t>& s) {
  std::size_t n = 0;
  for (auto it = s.begin(); it != s.end(); it = s.upper_bound(*it)) n += s.count(*it) - 1;
  return n;
}
std::size_t repeated(const std::multiset<std::string>& s) {
  std::size_t n = 0;
  for (auto it = s.begin(); it != s.end(); it = s.upper_bound(*it)) n += s.count(*it) - 1;
  return n;
}

}  // namespace

TEST_CASE("readdir of 15 000 files while another thread renames within the directory: each entry exactly once") {
  memfs_mount m;
  const int n = 15000;
  REQUIRE(::mkdir(m.path("d").c_str(), 0755) == 0);
  const std::string dir = m.path("d");
  make_files(dir, "f", n);
  std::atomic<bool> stop{false};
  std::atomic<int> renames{0};
  std::thread renamer([&] {
    // Each file in turn gets a new name and keeps it; then all go back. An
    // entry renamed in place is still the same entry: listed once, under
    // whichever name it had when the listing passed it.
    for (int round = 0; !stop; ++round) {
      const char* from = round % 2 ? "g" : "f";
      const char* to = round % 2 ? "f" : "g";
      for (int i = 0; i < n && !stop; ++i) {
        if (::rename((dir + "/" + from + std::to_string(i)).c_str(), (dir + "/" + to + std::to_string(i)).c_str()) == 0)
          ++renames;
      }
    }
  });
  for (int pass = 0; pass < 3; ++pass) {
    CAPTURE(pass);
    const listing l = list_once(dir);
    CHECK(l.entries == std::size_t(n));
    CHECK(repeated(l.inodes) == 0);
    CHECK(repeated(l.names) == 0);
    CHECK(std::set<ino_t>(l.inodes.begin(), l.inodes.end()).size() == std::size_t(n));
  }
  stop = true;
  renamer.join();
  MESSAGE(renames.load() << " renames during the listings");
  CHECK(renames.load() > 0);
  CHECK(list_once(dir).entries == std::size_t(n));
}

TEST_CASE("readdir while entries are renamed over others, and moved out and back in: never an entry twice") {
  memfs_mount m;
  const int n = 3000;
  REQUIRE(::mkdir(m.path("a").c_str(), 0755) == 0);
  REQUIRE(::mkdir(m.path("b").c_str(), 0755) == 0);
  const std::string a = m.path("a"), b = m.path("b");
  make_files(a, "f", n);
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    for (int round = 0; !stop; ++round) {
      for (int i = 0; i < n && !stop; i += 7) {
        const std::string f = a + "/f" + std::to_string(i);
        if (round % 2) {
          // Out to b and back in: back in a, it is a new entry there.
          ::rename(f.c_str(), (b + "/f" + std::to_string(i)).c_str());
          ::rename((b + "/f" + std::to_string(i)).c_str(), f.c_str());
        } else {
          // Over another name and a fresh file in its old place.
          ::rename(f.c_str(), (a + "/f" + std::to_string((i + 1) % n)).c_str());
          const int fd = ::open(f.c_str(), O_CREAT | O_WRONLY, 0644);
          if (fd >= 0) ::close(fd);
        }
      }
    }
  });
  for (int pass = 0; pass < 4; ++pass) {
    CAPTURE(pass);
    const listing l = list_once(a);
    CHECK(l.entries <= std::size_t(n));
    CHECK(repeated(l.inodes) == 0);
  }
  stop = true;
  churn.join();
}

TEST_CASE("a stream lists what was there when it began; rewinddir begins again; telldir positions survive renames") {
  memfs_mount m;
  REQUIRE(::mkdir(m.path("d").c_str(), 0755) == 0);
  const std::string dir = m.path("d");
  const int n = 2000;  // several READDIR replies
  make_files(dir, "f", n);
  DIR* d = ::opendir(dir.c_str());
  REQUIRE(d);
  // Read a little, remember where, read some more.
  std::vector<std::string> first;
  long mark = -1;
  std::string after_mark;
  while (dirent* e = ::readdir(d)) {
    first.emplace_back(e->d_name);
    if (first.size() == 100) mark = ::telldir(d);
    if (first.size() == 101) {
      after_mark = e->d_name;
      break;
    }
  }
  REQUIRE(mark >= 0);
  // Rename everything (in place), and add files the stream did not see begin.
  for (int i = 0; i < n; ++i)
    REQUIRE(::rename((dir + "/f" + std::to_string(i)).c_str(), (dir + "/g" + std::to_string(i)).c_str()) == 0);
  make_files(dir, "new", 10);
  // Back to the mark: the same entry comes next, under its new name.
  ::seekdir(d, mark);
  dirent* e = ::readdir(d);
  REQUIRE(e);
  CHECK(std::string(e->d_name) == "g" + after_mark.substr(1));
  std::size_t rest = 1;
  std::size_t news = 0;
  while ((e = ::readdir(d))) {
    ++rest;
    news += std::string(e->d_name).starts_with("new");
  }
  // 101 entries came before the one after the mark ("." and ".." among them).
  CHECK(rest == std::size_t(n + 2 - 100));
  CHECK(news == 0);  // they came after the stream began, as on tmpfs
  ::rewinddir(d);
  std::size_t all = 0;
  news = 0;
  while ((e = ::readdir(d))) {
    ++all;
    news += std::string(e->d_name).starts_with("new");
  }
  CHECK(all == std::size_t(n + 10 + 2));
  CHECK(news == 10);
  ::closedir(d);
}

namespace {

// name -> (d_type, d_ino) of every entry but "." and "..".
std::map<std::string, std::pair<unsigned, ino_t>> listed_types(const std::string& dir) {
  std::map<std::string, std::pair<unsigned, ino_t>> out;
  DIR* d = ::opendir(dir.c_str());
  REQUIRE(d);
  while (dirent* e = ::readdir(d))
    if (std::string n = e->d_name; n != "." && n != "..") out[n] = {e->d_type, e->d_ino};
  ::closedir(d);
  return out;
}

// Every listed entry's type and inode number are lstat's.
void check_types(const std::string& dir, std::size_t expected) {
  const auto listed = listed_types(dir);
  CHECK(listed.size() == expected);
  std::size_t wrong = 0;
  for (const auto& [name, seen] : listed) {
    struct stat st {};
    REQUIRE(::lstat((dir + "/" + name).c_str(), &st) == 0);
    if (seen.first != IFTODT(st.st_mode) || seen.second != st.st_ino) {
      if (++wrong <= 5)
        MESSAGE(name << ": listed d_type " << seen.first << " ino " << seen.second << ", lstat says " << IFTODT(st.st_mode)
                     << " ino " << st.st_ino);
    }
  }
  CHECK(wrong == 0);
}

}  // namespace

// Only a stream's first READDIR is a READDIRPLUS (the kernel's choice); the
// rest are plain, and memfs answers them with the type it keeps beside each
// name, not from the node. So: enough entries for several READDIRs, every
// type, renames that swap types between names (RENAME_EXCHANGE), and the
// same in a memfs restored from a snapshot (a handover's successor), which
// takes the types from the nodes.
TEST_CASE("every listed entry's d_type and d_ino are lstat's, past the first READDIR and after a snapshot restore") {
  memfs_mount m;
  const std::string dir = m.path("d");
  REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
  REQUIRE(::mkdir(m.path("other").c_str(), 0755) == 0);
  const int n = 3000;
  for (int i = 0; i < n; ++i) {
    const std::string p = dir + "/e" + std::to_string(i);
    switch (i % 5) {
      case 0: {
        const int fd = ::open(p.c_str(), O_CREAT | O_WRONLY, 0644);
        REQUIRE(fd >= 0);
        ::close(fd);
        break;
      }
      case 1: REQUIRE(::mkdir(p.c_str(), 0755) == 0); break;
      case 2: REQUIRE(::symlink("target", p.c_str()) == 0); break;
      case 3: REQUIRE(::mkfifo(p.c_str(), 0644) == 0); break;
      default: REQUIRE(::mknod(p.c_str(), S_IFSOCK | 0644, 0) == 0); break;
    }
  }
  // A file and a directory trade names, within the directory and across two;
  // at the directory's end, which a plain READDIR lists.
  for (int i = n - 100; i < n; i += 5) {
    REQUIRE(::renameat2(AT_FDCWD, (dir + "/e" + std::to_string(i)).c_str(), AT_FDCWD,
                        (dir + "/e" + std::to_string(i + 1)).c_str(), RENAME_EXCHANGE) == 0);
  }
  REQUIRE(::mkdir(m.path("other/sub").c_str(), 0755) == 0);
  const std::string link = dir + "/e" + std::to_string(n - 98);  // a symlink
  REQUIRE(::renameat2(AT_FDCWD, link.c_str(), AT_FDCWD, m.path("other/sub").c_str(), RENAME_EXCHANGE) == 0);
  REQUIRE(::rename(m.path("other/sub").c_str(), (dir + "/moved-in").c_str()) == 0);  // the symlink comes back
  check_types(dir, n + 1);  // the symlink's old name is the directory that came in

  // A successor's memfs, restored from a snapshot of this one, served on a
  // mount of its own.
  fusexx::snapshot_writer w;
  REQUIRE(m.fs.save(w));
  auto r = fusexx::snapshot_reader::from_bytes(w.seal_to_bytes());
  REQUIRE(r);
  mounted<memfs_fs> restored([&](memfs_fs& fs, server_options& o) {
    memfs_fs::configure_mount(o.mount);
    REQUIRE(fs.restore(*r));
  });
  REQUIRE_MESSAGE(restored.ok(), restored.error());
  check_types(restored.path("d"), n + 1);
  m.stop();
  restored.stop();
}
