// Zero-downtime upgrade: a new memfs process takes a live mount over from the
// running one (--takeover), again and again, while an application process
// keeps files and a directory open and works on them. It must see no error
// and no wrong byte, keep its locks, and the node lookup counts must still
// balance in the end. And every way a handover can fail leaves the running
// server serving. Real mounts, real processes.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <functional>
#include <optional>
#include <stdexcept>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "examples/memfs_fs.hpp"
#include "tests/support/process.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

using clock_type = std::chrono::steady_clock;
constexpr int handovers = 20;

// What the application process and the test share (an anonymous shared
// mapping made before the fork).
struct shared_state {
  std::atomic<int> round{0};                        // set by the test before each handover
  std::atomic<bool> stop{false};
  std::atomic<bool> ready{false};                   // files open, locks taken
  std::atomic<std::uint64_t> ops{0};
  std::atomic<std::uint64_t> errors{0};
  std::array<std::atomic<std::int64_t>, handovers + 2> longest_us{};  // the longest operation in each round
  char first_error[256]{};
};

std::string pattern(std::size_t n) {
  std::string s(n, 0);
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i % 26);
  return s;
}

// The application: files and a directory kept open, worked on in a loop
// until told to stop. Returns its exit status (0 = never saw anything wrong).
int application(const std::string& mp, shared_state& st) {
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
  struct ::flock l {};
  l.l_type = F_WRLCK;
  l.l_whence = SEEK_SET;
  l.l_len = 1;
  if (::fcntl(fd_rw, F_SETLK, &l) != 0 || ::flock(fd_fixed, LOCK_EX | LOCK_NB) != 0) return 11;
  st.ready = true;
  const std::string expected = pattern(8192);
  off_t log_size = 0;
  for (std::uint64_t i = 0; !st.stop; ++i) {
    const auto started = clock_type::now();
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
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - started).count();
    auto& longest = st.longest_us[std::min<std::size_t>(st.round.load(), handovers + 1)];
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

void write_file(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, data.data(), data.size()) == ssize_t(data.size()));
  ::close(fd);
}

// A memfs process serving `mp` in the foreground.
child start_memfs(const std::string& bin, const std::string& mp, bool takeover) {
  std::vector<std::string> args{bin, "-f"};
  if (takeover) args.push_back("--takeover");
  args.insert(args.end(), {"-o", "entry_timeout=0,attr_timeout=0", mp});
  return spawn(args, /*capture_stdout=*/true, /*with_stderr=*/true);
}

std::string output_of(child& c) {
  std::string out = slurp_fd(c.stdout_fd);
  ::close(c.stdout_fd);
  c.stdout_fd = -1;
  return out;
}

// A memfs mount with files an application keeps open, the application
// running, and memfs served by a process of its own (`running`).
struct live_mount {
  std::string memfs = example_binary("FUSEXX_MEMFS");
  temp_dir dir;
  std::string mp = dir.path();
  shared_state* st = nullptr;
  child running;
  std::optional<forked> app;

  live_mount() {
    REQUIRE(!memfs.empty());
    st = static_cast<shared_state*>(
        ::mmap(nullptr, sizeof(shared_state), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    REQUIRE(st != MAP_FAILED);
    new (st) shared_state();
    running = start_memfs(memfs, mp, false);
    REQUIRE(eventually([&] { return is_fuse_mounted(mp); }));
    write_file(mp + "/fixed", pattern(8192));
    write_file(mp + "/rw", std::string(4096, '-'));
    write_file(mp + "/log", "");
    REQUIRE(::mkdir((mp + "/d").c_str(), 0755) == 0);
    for (int i = 0; i < 5; ++i) write_file(mp + "/d/keep" + std::to_string(i), "k");
    app.emplace(fork_child([this] { return application(mp, *st); }));
    REQUIRE(eventually([&] { return st->ready.load() || process_ended(app->pid()); }));
    REQUIRE(st->ready.load());
  }
  ~live_mount() {
    if (app && !process_ended(app->pid())) {
      st->stop = true;
      (void)app->wait();
    }
    if (running.pid > 0 && !process_ended(running.pid)) {
      ::kill(running.pid, SIGTERM);
      (void)wait_exit(running.pid);
    }
    if (running.stdout_fd >= 0) ::close(running.stdout_fd);
    if (is_fuse_mounted(mp)) (void)::umount2(mp.c_str(), MNT_DETACH);
    ::munmap(st, sizeof(shared_state));
  }

  // The application got on with its work: `n` more rounds.
  bool progresses(std::uint64_t n = 3) {
    const auto before = st->ops.load();
    return eventually([&] { return st->ops.load() > before + n || process_ended(app->pid()); }) &&
           !process_ended(app->pid());
  }
  void check_application_unharmed() {
    REQUIRE(progresses());
    st->stop = true;
    CHECK(app->wait() == 0);
    app.reset();
    CHECK_MESSAGE(st->errors.load() == 0, st->first_error);
  }
};

// A copy of a sealed snapshot memfd, changed by `edit`, as a new memfd.
unique_fd edited_snapshot(int fd, const std::function<void(std::vector<std::byte>&)>& edit) {
  struct stat sb {};
  REQUIRE(::fstat(fd, &sb) == 0);
  std::vector<std::byte> bytes(static_cast<std::size_t>(sb.st_size));
  REQUIRE(::pread(fd, bytes.data(), bytes.size(), 0) == ssize_t(bytes.size()));
  edit(bytes);
  unique_fd out(::memfd_create("edited-snapshot", MFD_CLOEXEC));
  REQUIRE(::write(out.get(), bytes.data(), bytes.size()) == ssize_t(bytes.size()));
  return out;
}

// This process as a successor of memfs type Fs for `offer`: the outcome.
template <class Fs>
outcome<void> take_over_here(const std::string& mp, handover::offer offer) {
  Fs fs;
  server_options o;
  o.mount.mountpoint = mp;
  memfs_fs::configure_mount(o.mount);
  o.transport = transport_from_env();
  server<Fs> srv(fs, o);
  event_loop loop;
  auto took = loop.run(srv.take_over_async(loop, std::move(offer)));
  REQUIRE(took);
  return *took;
}

}  // namespace

TEST_CASE("20 handovers in a row: the application sees no error, keeps its files and locks, and nothing leaks") {
  live_mount m;
  const std::string& mp = m.mp;
  shared_state* st = m.st;

  // A process waiting for the application's POSIX lock all along: its
  // request is waiting in the server at every handover (a suspended
  // handler), goes to each successor (resent, or handed over with its
  // io_uring entry), and is granted in the end, once the application lets go.
  forked waiter = fork_child([&] {
    const int fd = ::open((mp + "/rw").c_str(), O_RDWR);
    struct ::flock l {};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    l.l_len = 1;
    return fd >= 0 && ::fcntl(fd, F_SETLKW, &l) == 0 ? 0 : 1;
  });
  REQUIRE(m.progresses());

  std::vector<double> pause_ms;
  for (int round = 1; round <= handovers; ++round) {
    CAPTURE(round);
    REQUIRE(m.progresses());  // the application is busy
    st->round = round;
    child successor = start_memfs(m.memfs, mp, true);
    const int predecessor = wait_exit(m.running.pid, std::chrono::seconds(30));
    const std::string said = output_of(m.running);
    REQUIRE_MESSAGE(predecessor == 0, "the predecessor ended with " << predecessor << ": " << said);
    m.running = successor;
    st->round = handovers + 1;  // operations after the handover count elsewhere
    REQUIRE_MESSAGE(m.progresses(), "the application made no progress after handover " << round);
    REQUIRE_FALSE(process_ended(m.running.pid));
    pause_ms.push_back(double(st->longest_us[round].load()) / 1000.0);
  }
  // The locks the application took before the first handover are still its.
  {
    const int fd = ::open((mp + "/rw").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    struct ::flock l {};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    l.l_len = 1;
    REQUIRE(::fcntl(fd, F_GETLK, &l) == 0);
    CHECK(l.l_type == F_WRLCK);
    CHECK(l.l_pid == m.app->pid());
    const int fd2 = ::open((mp + "/fixed").c_str(), O_RDONLY);
    REQUIRE(fd2 >= 0);
    CHECK(::flock(fd2, LOCK_EX | LOCK_NB) == -1);
    CHECK(errno == EWOULDBLOCK);
    ::close(fd2);
    ::close(fd);
  }

  // The last successor is this test process itself, so the books can be
  // looked at: memfs's own lookup counts against the session's.
  memfs_fs fs;
  server_options o;
  o.mount.mountpoint = mp;
  memfs_fs::configure_mount(o.mount);
  o.transport = transport_from_env();
  server<memfs_fs> srv(fs, o);
  {
    event_loop loop;
    auto took = loop.run(srv.take_over_async(loop));
    REQUIRE(took);
    REQUIRE_MESSAGE(*took, (*took ? "" : took->error().message));
  }
  CHECK(wait_exit(m.running.pid, std::chrono::seconds(30)) == 0);
  (void)output_of(m.running);
  m.running.pid = -1;
  const auto ops = st->ops.load();
  REQUIRE(eventually([&] { return st->ops.load() > ops + 3; }));

  CHECK_FALSE(process_ended(waiter.pid()));  // still waiting: the application holds the lock
  m.check_application_unharmed();
  CHECK_MESSAGE(waiter.wait() == 0, "the lock waiter did not get the lock once the application let go");
  CHECK(st->ops.load() > 100);
  std::ranges::sort(pause_ms);
  MESSAGE(handovers << " handovers under load; the longest application operation of each (ms): median "
                    << pause_ms[pause_ms.size() / 2] << ", p99 " << pause_ms[pause_ms.size() * 99 / 100] << ", max "
                    << pause_ms.back() << "; " << st->ops.load() << " application rounds in all");

  // Lookup counts still balance: the session's books agree with memfs's, and
  // once everything is deleted every inode goes — none leaked, none
  // forgotten twice.
  CHECK(srv.session().nodes().mismatches() == 0);
  CHECK(fs.forget_errors() == 0);
  for (const char* f : {"fixed", "rw", "log"}) REQUIRE(::unlink((mp + "/" + f).c_str()) == 0);
  for (int i = 0; i < 5; ++i) REQUIRE(::unlink((mp + "/d/keep" + std::to_string(i)).c_str()) == 0);
  REQUIRE(::rmdir((mp + "/d").c_str()) == 0);
  CHECK(eventually([&] { return fs.live_inodes() == 1; }));
  CHECK(fs.forget_errors() == 0);
  CHECK(srv.session().nodes().mismatches() == 0);
  srv.stop();
  CHECK_FALSE(is_fuse_mounted(mp));
}

TEST_CASE("every failed handover leaves the running server serving, and the application sees nothing") {
  live_mount m;
  const std::string& mp = m.mp;

  SUBCASE("a successor of another filesystem type is refused") {
    auto offer = handover::ask(mp, "passthrough");
    REQUIRE_FALSE(offer);
    CHECK_MESSAGE(offer.error().message.find("serves 'passthrough', this mount is 'memfs'") != std::string::npos,
                  offer.error().message);
  }
  SUBCASE("a successor whose restore() fails half-way (the snapshot ends in the middle of memfs's tree)") {
    auto offer = handover::ask(mp, "memfs");
    REQUIRE_MESSAGE(offer, offer.error().message);
    offer->snapshot = edited_snapshot(offer->snapshot.get(), [](std::vector<std::byte>& b) {
      // Cut the payload to three quarters, with a header that agrees (length,
      // checksum): the session part reads, memfs's restore() runs out.
      const std::size_t header = 32, payload = (b.size() - header) * 3 / 4;
      b.resize(header + payload);
      detail::put_le<std::uint64_t>(b.data() + 16, payload);
      detail::put_le<std::uint32_t>(b.data() + 24, detail::crc32c(std::span(b).subspan(header)));
    });
    auto took = take_over_here<memfs_fs>(mp, std::move(*offer));
    REQUIRE_FALSE(took);
    CHECK_MESSAGE(took.error().message.find("restore()") != std::string::npos, took.error().message);
  }
  SUBCASE("a successor killed before it acknowledges") {
    forked successor = fork_child([&] {
      auto offer = handover::ask(mp, "memfs");
      if (!offer) return 1;
      ::raise(SIGKILL);  // holding the connection's fds and the parked predecessor's socket
      return 2;
    });
    CHECK(successor.wait() == 128 + SIGKILL);
  }
  SUBCASE("a corrupted snapshot") {
    auto offer = handover::ask(mp, "memfs");
    REQUIRE_MESSAGE(offer, offer.error().message);
    offer->snapshot = edited_snapshot(offer->snapshot.get(), [](std::vector<std::byte>& b) { b[b.size() / 2] ^= std::byte{0x20}; });
    auto took = take_over_here<memfs_fs>(mp, std::move(*offer));
    REQUIRE_FALSE(took);
    CHECK_MESSAGE(took.error().message.find("checksum does not match") != std::string::npos, took.error().message);
  }
  SUBCASE("a snapshot of a newer format") {
    auto offer = handover::ask(mp, "memfs");
    REQUIRE_MESSAGE(offer, offer.error().message);
    offer->snapshot = edited_snapshot(offer->snapshot.get(), [](std::vector<std::byte>& b) {
      b[8] = static_cast<std::byte>(snapshot_format_version + 1);  // the format version, little-endian
    });
    auto took = take_over_here<memfs_fs>(mp, std::move(*offer));
    REQUIRE_FALSE(took);
    CHECK_MESSAGE(took.error().message.find("newer than this fusexx reads") != std::string::npos, took.error().message);
  }
  // The predecessor resumed: it serves, the application never noticed, and
  // a handover after all that still works.
  REQUIRE_FALSE(process_ended(m.running.pid));
  REQUIRE(m.progresses());
  child successor = start_memfs(m.memfs, mp, true);
  CHECK(wait_exit(m.running.pid, std::chrono::seconds(30)) == 0);
  (void)output_of(m.running);
  m.running = successor;
  m.check_application_unharmed();
}

TEST_CASE("--takeover says in one sentence why it cannot: not restartable, or not a FUSE mount") {
  temp_dir dir;
  const auto hello = run({example_binary("FUSEXX_HELLO"), "--takeover", dir.path()}, /*with_stderr=*/true);
  CHECK(hello.status == 2);
  CHECK_MESSAGE(hello.out.find("this filesystem is not restartable") != std::string::npos, hello.out);
  const auto memfs = run({example_binary("FUSEXX_MEMFS"), "--takeover", dir.path()}, /*with_stderr=*/true);
  CHECK(memfs.status != 0);
  CHECK_MESSAGE(memfs.out.find("is not a FUSE mount") != std::string::npos, memfs.out);
}

TEST_CASE("a control socket name still held elsewhere: the server takes a fallback, and successors find it") {
  const unsigned connection = 900000 + static_cast<unsigned>(::getpid() % 1000);  // no FUSE connection has it
  auto first = listen_control(connection);
  REQUIRE_MESSAGE(first, first.error().message);
  auto second = listen_control(connection);  // as a new server would, while a stale one holds the name
  REQUIRE_MESSAGE(second, second.error().message);
  const auto names = control_socket_candidates(connection);
  REQUIRE(names.size() == 2);
  CHECK(names[0] == control_socket_name(connection));
  CHECK(names[1] == control_socket_name(connection) + "." + std::to_string(::getpid()));
  for (const auto& name : names) CHECK(connect_control_socket(name, "/test"));
}
