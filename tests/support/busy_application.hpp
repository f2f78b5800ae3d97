#pragma once
// An application that works on a mount while its server is replaced under it
// (tests/handover_test.cc, tests/fdstore_test.cc): files and a directory kept
// open, a flock and a POSIX lock held, and a loop of reads with a content
// check, writes read back, appends, create/rename/unlink, readdir and stat.
// It runs in a forked child and reports through a shared mapping.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <new>
#include <optional>
#include <string>

#include <doctest/doctest.h>

#include "tests/support/process.hpp"

namespace fusexx::testing {

// Rounds the application keeps its longest operation of (one per
// replacement; later rounds count in the last).
inline constexpr int max_rounds = 62;

// What the application process and the test share (an anonymous shared
// mapping made before the fork).
struct shared_state {
  std::atomic<int> round{0};                        // set by the test before each handover
  std::atomic<bool> stop{false};
  std::atomic<bool> ready{false};                   // files open, locks taken
  std::atomic<std::uint64_t> ops{0};
  std::atomic<std::uint64_t> errors{0};
  std::array<std::atomic<std::int64_t>, max_rounds + 2> longest_us{};  // the longest operation in each round
  char first_error[256]{};
};

inline std::string pattern(std::size_t n) {
  std::string s(n, 0);
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i % 26);
  return s;
}

// A POSIX lock of `type` on a file's first byte: the one the application
// holds on rw, and the one the tests' other processes ask for.
inline struct ::flock first_byte(short type = F_WRLCK) {
  struct ::flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_len = 1;
  return l;
}

// The application: files and a directory kept open, worked on in a loop
// until told to stop. Returns its exit status (0 = never saw anything wrong).
inline int application(const std::string& mp, shared_state& st) {
  auto fail = [&](const std::string& what) {
    if (st.errors.fetch_add(1) == 0)
      std::snprintf(st.first_error, sizeof st.first_error, "%s: %s", what.c_str(), std::strerror(errno));
  };
  const std::string fixed = mp + "/fixed", rw = mp + "/rw", log = mp + "/log", dir = mp + "/d";
  const int fd_fixed = ::open(fixed.c_str(), O_RDONLY);
  const int fd_rw = ::open(rw.c_str(), O_RDWR);
  const int fd_log = ::open(log.c_str(), O_WRONLY | O_APPEND);
  DIR* d = ::opendir(dir.c_str());
  if (fd_fixed < 0 || fd_rw < 0 || fd_log < 0 || !d) return 10;
  // A POSIX lock on rw's first byte and a flock on fixed, held throughout.
  struct ::flock l = first_byte();
  if (::fcntl(fd_rw, F_SETLK, &l) != 0 || ::flock(fd_fixed, LOCK_EX | LOCK_NB) != 0) return 11;
  st.ready = true;
  const std::string expected = pattern(8192);
  off_t log_size = 0;
  for (std::uint64_t i = 0; !st.stop; ++i) {
    const auto started = std::chrono::steady_clock::now();
    std::string got(expected.size(), 0);
    if (::pread(fd_fixed, got.data(), got.size(), 0) != ssize_t(got.size()) || got != expected) fail("read");
    const std::string stamp = "stamp " + std::to_string(i);
    std::string back(stamp.size(), 0);
    if (::pwrite(fd_rw, stamp.data(), stamp.size(), 100) != ssize_t(stamp.size()) ||
        ::pread(fd_rw, back.data(), back.size(), 100) != ssize_t(back.size()) || back != stamp)
      fail("write, then read back");
    const std::string line = std::to_string(i) + "\n";
    struct stat sb {};
    if (::write(fd_log, line.data(), line.size()) != ssize_t(line.size()) || ::fstat(fd_log, &sb) != 0 ||
        sb.st_size != log_size + off_t(line.size()))
      fail("append");
    log_size += off_t(line.size());
    const std::string a = dir + "/new" + std::to_string(i % 7), b = dir + "/renamed" + std::to_string(i % 7);
    const int fd = ::open(a.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0 || ::write(fd, "x", 1) != 1 || ::close(fd) != 0 || ::rename(a.c_str(), b.c_str()) != 0 ||
        ::stat(b.c_str(), &sb) != 0 || sb.st_size != 1 || ::unlink(b.c_str()) != 0)
      fail("create, rename, unlink");
    ::rewinddir(d);
    int names = 0;
    while (::readdir(d) != nullptr) ++names;
    if (names < 2 + 5) fail("readdir");  // ".", "..", keep0..keep4
    if (::stat(fixed.c_str(), &sb) != 0 || sb.st_size != off_t(expected.size())) fail("stat");
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started).count();
    auto& longest = st.longest_us[std::min<std::size_t>(st.round.load(), max_rounds + 1)];
    std::int64_t seen = longest.load();
    while (took > seen && !longest.compare_exchange_weak(seen, took)) {
    }
    st.ops.fetch_add(1);
  }
  // Still held after every handover: a lock anyone else asks for conflicts.
  ::closedir(d);
  ::close(fd_log);
  ::close(fd_rw);
  ::close(fd_fixed);
  return 0;
}

inline void write_file(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, data.data(), data.size()) == ssize_t(data.size()));
  ::close(fd);
}

// The application's locks, taken before the first replacement, are still
// its own: a conflicting lock is refused, and F_GETLK names its pid (`app`;
// 0 where the filesystem reports no owner, as passthrough's OFD locks).
inline void check_locks_held(const std::string& mp, pid_t app) {
  const int fd = ::open((mp + "/rw").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  struct ::flock l = first_byte();
  REQUIRE(::fcntl(fd, F_GETLK, &l) == 0);
  CHECK(l.l_type == F_WRLCK);
  if (app != 0) CHECK(l.l_pid == app);
  const int fd2 = ::open((mp + "/fixed").c_str(), O_RDONLY);
  REQUIRE(fd2 >= 0);
  CHECK(::flock(fd2, LOCK_EX | LOCK_NB) == -1);
  CHECK(errno == EWOULDBLOCK);
  ::close(fd2);
  ::close(fd);
}

// A process that waits (F_SETLKW) for the POSIX lock the application holds
// on rw's first byte; it exits 0 once it got it.
inline forked wait_for_application_lock(const std::string& mp) {
  return fork_child([mp] {
    const int fd = ::open((mp + "/rw").c_str(), O_RDWR);
    struct ::flock l = first_byte();
    return fd >= 0 && ::fcntl(fd, F_SETLKW, &l) == 0 ? 0 : 1;
  });
}

// The files and directory the application works on, in a fresh mount.
inline void make_application_files(const std::string& mp) {
  write_file(mp + "/fixed", pattern(8192));
  write_file(mp + "/rw", std::string(4096, '-'));
  write_file(mp + "/log", "");
  REQUIRE(::mkdir((mp + "/d").c_str(), 0755) == 0);
  for (int i = 0; i < 5; ++i) write_file(mp + "/d/keep" + std::to_string(i), "k");
}

// The application running on `mp` (whose files make_application_files
// made), in a forked child, stopped and reaped at the end.
class busy_application {
 public:
  explicit busy_application(const std::string& mp) {
    void* m = ::mmap(nullptr, sizeof(shared_state), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    st_ = new (m) shared_state();
    app_.emplace(fork_child([this, mp] { return application(mp, *st_); }));
    REQUIRE(eventually([&] { return st_->ready.load() || process_ended(app_->pid()); }));
    REQUIRE(st_->ready.load());
  }
  ~busy_application() {
    if (app_ && !process_ended(app_->pid())) {
      st_->stop = true;
      (void)app_->wait();
    }
    app_.reset();
    ::munmap(st_, sizeof(shared_state));
  }
  busy_application(const busy_application&) = delete;
  busy_application& operator=(const busy_application&) = delete;

  shared_state& state() { return *st_; }
  pid_t pid() const { return app_ ? app_->pid() : -1; }
  // The application got on with its work: `n` more rounds.
  bool progresses(std::uint64_t n = 3) {
    const auto before = st_->ops.load();
    return eventually([&] { return st_->ops.load() > before + n || process_ended(app_->pid()); }) &&
           !process_ended(app_->pid());
  }
  // It still works, then stops: it never saw an error.
  void check_unharmed() {
    REQUIRE(progresses());
    st_->stop = true;
    CHECK(app_->wait() == 0);
    app_.reset();
    CHECK_MESSAGE(st_->errors.load() == 0, st_->first_error);
  }

 private:
  shared_state* st_ = nullptr;
  std::optional<forked> app_;
};

}  // namespace fusexx::testing
