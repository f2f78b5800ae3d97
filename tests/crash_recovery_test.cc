// Crash recovery (docs/restart.md, "Crash recovery"): memfs (rebuilt by
// replay) and passthrough (rebuilt by redo, its open files kept in the fd
// table its servers share with the keeper) served under a keeper
// (-o supervise) are SIGKILLed again and again — at random moments,
// and at the three moments a crash can fall between reading a request and
// answering it — while an application process keeps files and a directory
// open and works on them: reads with a content check, writes read back,
// appends, create/rename/unlink, mkdir/rmdir, readdir, held locks. It must
// see no error, and afterwards every operation is there exactly once. A
// server that dies on every start ends with ENOTCONN and a clear line.
// Real mounts, real processes, really killed.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "tests/support/busy_application.hpp"
#include "tests/support/fake_systemd.hpp"
#include "tests/support/process.hpp"
#include "tests/support/takeover.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

// The keeper's server: its one child (the keeper forks nothing else).
pid_t server_of(pid_t keeper) { return first_child_of(keeper); }

// An environment variable for the servers a test starts, unset again after.
struct scoped_env {
  std::string name;
  scoped_env(std::string n, const std::string& value) : name(std::move(n)) { ::setenv(name.c_str(), value.c_str(), 1); }
  ~scoped_env() { ::unsetenv(name.c_str()); }
};

// The filesystems under test.
enum class subject { memfs, passthrough };
constexpr subject subjects[] = {subject::memfs, subject::passthrough};
std::string name_of(subject s) { return s == subject::memfs ? "memfs" : "passthrough"; }

// A supervised filesystem on a fresh directory (passthrough: of a fresh
// source directory), with the application's files.
struct supervised_mount {
  temp_dir dir;
  temp_dir source;
  std::string mp = dir.path();
  child keeper;

  explicit supervised_mount(subject fs, const std::string& more_options = "") {
    const bool memfs = fs == subject::memfs;
    keeper = start_server(example_binary(memfs ? "FUSEXX_MEMFS" : "FUSEXX_PASSTHROUGH"),
                          {"-o", "supervise,supervise_restarts=1000,checkpoint_kb=64," +
                                     (memfs ? std::string("entry_timeout=0,attr_timeout=0")
                                            : "timeout=0,source=" + source.path()) +
                                     more_options},
                          mp, false);
    REQUIRE(eventually([&] { return is_fuse_mounted(mp) || process_ended(keeper.pid); }));
    REQUIRE_MESSAGE(is_fuse_mounted(mp), output_of(keeper));
    make_application_files(mp);
  }
  ~supervised_mount() {
    if (keeper.pid > 0 && !process_ended(keeper.pid)) {
      ::kill(keeper.pid, SIGTERM);
      (void)wait_exit(keeper.pid);
    }
    if (keeper.stdout_fd >= 0) ::close(keeper.stdout_fd);
    if (is_fuse_mounted(mp)) (void)::umount2(mp.c_str(), MNT_DETACH);
  }
  // Waits until the keeper runs a server other than `old`, and returns it.
  pid_t next_server(pid_t old) {
    pid_t now = -1;
    REQUIRE(eventually([&] {
      now = server_of(keeper.pid);
      return (now > 0 && now != old) || process_ended(keeper.pid);
    }));
    REQUIRE_FALSE(process_ended(keeper.pid));
    return now;
  }
  // The keeper stops its server on SIGTERM, which unmounts; what it said.
  std::string stop() {
    ::kill(keeper.pid, SIGTERM);
    const int status = wait_exit(keeper.pid);
    std::string said = output_of(keeper);
    CHECK_MESSAGE(status == 0, said);
    keeper.pid = -1;
    CHECK_FALSE(is_fuse_mounted(mp));
    return said;
  }
};

// The tree the application leaves: its log holds every line it appended,
// once each and in order; its scratch names are gone; the rest as made.
void check_tree(const std::string& mp, std::uint64_t rounds) {
  std::ostringstream want;
  for (std::uint64_t i = 0; i < rounds; ++i) want << i << "\n";
  const std::string log = slurp(mp + "/log");
  CHECK_MESSAGE(log == want.str(), "the log has " << log.size() << " bytes, " << want.str().size() << " expected");
  CHECK(slurp(mp + "/fixed") == pattern(8192));
  std::set<std::string> names;
  DIR* d = ::opendir((mp + "/d").c_str());
  REQUIRE(d);
  while (dirent* e = ::readdir(d)) names.insert(e->d_name);
  ::closedir(d);
  CHECK(names == std::set<std::string>{".", "..", "keep0", "keep1", "keep2", "keep3", "keep4"});
}

// A second application beside the busy one, in a process of its own: mkdir
// and rmdir, and a file created in the new directory, each checked, until
// told to stop.
class directories {
 public:
  explicit directories(const std::string& mp) {
    void* p = ::mmap(nullptr, sizeof(std::atomic<bool>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    stop_ = new (p) std::atomic<bool>(false);
    proc_.emplace(fork_child([this, mp] { return loop(mp); }));
  }
  ~directories() {
    proc_.reset();
    ::munmap(stop_, sizeof(std::atomic<bool>));
  }
  bool running() const { return !process_ended(proc_->pid()); }
  // Stops it; 0 when it never saw anything wrong.
  int finish() {
    stop_->store(true);
    return proc_->wait();
  }

 private:
  int loop(const std::string& mp) {
    for (std::uint64_t i = 0; !stop_->load(); ++i) {
      const std::string dir = mp + "/sub" + std::to_string(i % 3), file = dir + "/f";
      struct stat sb {};
      const auto failed = [](int step) {
        std::fprintf(stderr, "directories: step %d failed: %s\n", step, std::strerror(errno));
        return step;
      };
      if (::mkdir(dir.c_str(), 0755) != 0) return failed(1);
      if (::stat(dir.c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode)) return failed(2);
      const int fd = ::open(file.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
      if (fd < 0) return failed(3);
      if (::write(fd, "y", 1) != 1) return failed(4);
      if (::close(fd) != 0) return failed(5);
      if (::unlink(file.c_str()) != 0) return failed(6);
      if (::rmdir(dir.c_str()) != 0) return failed(7);
      if (::stat(dir.c_str(), &sb) == 0 || errno != ENOENT) return failed(8);
    }
    return 0;
  }
  std::atomic<bool>* stop_ = nullptr;
  std::optional<forked> proc_;
};

// The application, a mkdir/rmdir loop and a lock waiter on `fs` while its
// server is killed 50 times at random moments.
void random_kills(subject fs) {
  supervised_mount m(fs);
  busy_application app(m.mp);
  shared_state& st = app.state();
  directories dirs(m.mp);
  // A process waiting all along for the application's POSIX lock: its
  // request is waiting in the server at every crash, resent to each new one.
  forked waiter = wait_for_application_lock(m.mp);
  REQUIRE(app.progresses());

  std::mt19937 random(std::random_device{}());
  pid_t server = server_of(m.keeper.pid);
  REQUIRE(server > 0);
  for (int kill = 1; kill <= 50; ++kill) {
    CAPTURE(kill);
    std::this_thread::sleep_for(std::chrono::milliseconds(random() % 120));
    REQUIRE(::kill(server, SIGKILL) == 0);
    server = m.next_server(server);
    REQUIRE_MESSAGE(app.progresses(), "the application made no progress after crash " << kill);
    REQUIRE(dirs.running());
  }
  check_locks_held(m.mp, fs == subject::memfs ? app.pid() : 0);  // passthrough: OFD locks have no pid
  CHECK_FALSE(process_ended(waiter.pid()));  // still waiting: the application holds the lock
  CHECK_MESSAGE(dirs.finish() == 0, "the mkdir/rmdir loop saw an error");
  app.check_unharmed();
  CHECK_MESSAGE(waiter.wait() == 0, "the lock waiter did not get the lock once the application let go");
  check_tree(m.mp, st.ops.load());
  const std::string said = m.stop();
  CHECK_MESSAGE(said.find("answered differently") == std::string::npos, said);
  MESSAGE(name_of(fs) << ", 50 crashes: " << st.ops.load() << " application rounds, the longest operation "
                       << st.longest_us[0].load() / 1000 << " ms");
}

}  // namespace

TEST_CASE("50 SIGKILLs at random moments: the application sees no error, and nothing is lost or done twice") {
  for (const subject fs : subjects) {
    const std::string fs_name = name_of(fs);
    CAPTURE(fs_name);
    random_kills(fs);
  }
}

TEST_CASE("a crash at each moment between reading a request and answering it") {
  // Every server dies at its 37th journaled request: read but not applied,
  // applied but not journaled, or journaled but not answered. The next one
  // must apply the first kind once, rebuild the second from the journal
  // (it is lost with the process) and apply it once, and answer the third
  // from the journal without applying it again.
  // (passthrough: the second is in doubt — on disk, not in the journal —
  // and its resend must find out from the disk that it was done.)
  for (const subject fs : subjects)
  for (const std::string point : {"before_journal", "before_apply", "before_reply"}) {
    const std::string fs_name = name_of(fs);
    CAPTURE(fs_name);
    CAPTURE(point);
    scoped_env where("FUSEXX_CRASH_POINT", point);
    scoped_env when("FUSEXX_CRASH_AFTER", "37");
    supervised_mount m(fs);
    std::uint64_t rounds = 0;
    {
      busy_application app(m.mp);
      shared_state& st = app.state();
      directories dirs(m.mp);
      pid_t server = server_of(m.keeper.pid);
      for (int crash = 1; crash <= 20; ++crash) {
        CAPTURE(crash);
        server = m.next_server(server);
      }
      REQUIRE(app.progresses());
      check_locks_held(m.mp, fs == subject::memfs ? app.pid() : 0);
      CHECK_MESSAGE(dirs.finish() == 0, "the mkdir/rmdir loop saw an error");
      app.check_unharmed();
      rounds = st.ops.load();
    }
    check_tree(m.mp, rounds);  // (its servers go on dying at their 37th request meanwhile)
    const std::string said = m.stop();
    CHECK_MESSAGE(said.find("dying at '" + point) != std::string::npos, said);
    CHECK_MESSAGE(said.find("answered differently") == std::string::npos, said);
  }
}

TEST_CASE("a checkpoint cut short by a crash, then one the keeper got just before the next crash: nothing replayed twice") {
  // The first server dies right after forking a checkpoint's child (which
  // gives up too): its successor replays both journals on the keeper's
  // older checkpoint, and takes its own first checkpoint in process; it
  // dies once the keeper has acknowledged that one, before the journals
  // start over. The third restores it and must not replay the records it
  // already holds (the server's next_generation()). What shows it: memfs's
  // replayed requests answer differently (other node ids, ENOENT), and
  // passthrough finds its snapshot's fds gone and makes no progress. (The
  // log's lines do not double: a replayed append is a WRITE at the same
  // offset, which leaves the same bytes.)
  for (const subject fs : subjects) {
    const std::string fs_name = name_of(fs);
    CAPTURE(fs_name);
    scoped_env where("FUSEXX_CRASH_CHECKPOINT", "0:forked,1:acked");
    supervised_mount m(fs);
    std::uint64_t rounds = 0;
    {
      busy_application app(m.mp);
      directories dirs(m.mp);
      pid_t server = server_of(m.keeper.pid);
      server = m.next_server(server);  // the first died at its forked checkpoint
      server = m.next_server(server);  // the second, once the keeper had its checkpoint
      REQUIRE(app.progresses(20));
      CHECK_MESSAGE(dirs.finish() == 0, "the mkdir/rmdir loop saw an error");
      app.check_unharmed();
      rounds = app.state().ops.load();
    }
    check_tree(m.mp, rounds);
    const std::string said = m.stop();
    CHECK_MESSAGE(said.find("dying at 'forked'") != std::string::npos, said);
    CHECK_MESSAGE(said.find("dying at 'acked'") != std::string::npos, said);
    CHECK_MESSAGE(said.find("answered differently") == std::string::npos, said);
    CHECK_MESSAGE(said.find("could not be redone") == std::string::npos, said);
  }
}

namespace {

// A one-way word between processes: a pipe the test and a child share.
struct word {
  int fds[2] = {-1, -1};
  word() { REQUIRE(::pipe2(fds, O_CLOEXEC) == 0); }
  ~word() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
  bool say() const { return ::write(fds[1], "!", 1) == 1; }
  // Waits for the word, `limit_ms` at most (-1: for as long as it takes;
  // false: not said). The test holds the write end too, so a sayer that
  // dies without a word ends no read: the test's limit turns that into a
  // failure rather than a hang.
  bool heard(int limit_ms = 30'000) const {
    pollfd p{fds[0], POLLIN, 0};
    char c = 0;
    return ::poll(&p, 1, limit_ms) == 1 && ::read(fds[0], &c, 1) == 1;
  }
};

// The server's status, as fusexx-ctl reads it.
control::status_info status_of(const std::string& mp) {
  auto answer = control::query(mp, "status");
  REQUIRE_MESSAGE(answer, (answer ? "" : answer.error().message));
  auto s = control::parse_status(*answer);
  REQUIRE_MESSAGE(s, (s ? "" : s.error().message));
  return *s;
}
std::uint64_t setlkw_seen(const std::string& mp) {
  auto answer = control::query(mp, "stats");
  if (!answer) return 0;
  auto s = control::parse_stats(*answer);
  if (!s) return 0;
  for (const auto& o : s->ops)
    if (o.name == "SETLKW") return o.count;
  return 0;
}

// How a process of its own takes the POSIX write lock on rw's first byte.
enum class taking {
  hold,                  // F_SETLK: it is free
  wait,                  // F_SETLKW, until granted
  wait_until_signalled,  // F_SETLKW, until SIGUSR1 ends it with EINTR
};
// The process: takes the lock as told, says so (granted, or EINTR), and
// keeps the file open until told to let go (it exits: the close releases
// what it holds).
forked lock_taker(const std::string& mp, taking how, const word& done, const word& let_go) {
  return fork_child([&] {
    if (how == taking::wait_until_signalled) {
      struct sigaction sa {};
      sa.sa_handler = [](int) {};  // no SA_RESTART: F_SETLKW returns EINTR
      if (::sigaction(SIGUSR1, &sa, nullptr) != 0) return 1;
    }
    const int fd = ::open((mp + "/rw").c_str(), O_RDWR);
    if (fd < 0) return 2;
    struct ::flock l = first_byte();
    const int got = ::fcntl(fd, how == taking::hold ? F_SETLK : F_SETLKW, &l);
    if (how == taking::wait_until_signalled ? got == 0 || errno != EINTR : got != 0) return 3;
    if (!done.say()) return 4;
    (void)let_go.heard(-1);  // (the test kills it if it never says)
    return 0;
  });
}

// A holds the lock; B asks for it (as `b_takes`) and waits in the server.
struct contended_lock {
  word a_holds, a_go, b_done, b_go;
  forked a;
  forked b;
  contended_lock(const std::string& mp, taking b_takes)
      : a(lock_taker(mp, taking::hold, a_holds, a_go)), b(start_b(mp, b_takes)) {}
  // A lets go (it exits).
  void release_a() {
    REQUIRE(a_go.say());
    REQUIRE(a.wait() == 0);
  }

 private:
  forked start_b(const std::string& mp, taking how) {
    REQUIRE(a_holds.heard());
    const std::uint64_t seen = setlkw_seen(mp);
    forked taker = lock_taker(mp, how, b_done, b_go);
    REQUIRE_MESSAGE(eventually([&] { return setlkw_seen(mp) > seen || process_ended(taker.pid()); }),
                    "B's lock request did not reach the server");
    REQUIRE_FALSE(process_ended(taker.pid()));
    return taker;
  }
};

// C's view of rw's first byte: who holds it for writing (F_GETLK), and
// whether C may take it (F_SETLK, released at once).
struct lock_view {
  short type;
  pid_t pid;
  bool c_took;
};
lock_view c_sees(const std::string& mp) {
  const int fd = ::open((mp + "/rw").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  struct ::flock l = first_byte();
  REQUIRE(::fcntl(fd, F_GETLK, &l) == 0);
  lock_view v{l.l_type, l.l_pid, false};
  struct ::flock take = first_byte();
  v.c_took = ::fcntl(fd, F_SETLK, &take) == 0;
  if (!v.c_took) CHECK((errno == EAGAIN || errno == EACCES));
  ::close(fd);
  return v;
}

}  // namespace

TEST_CASE("a lock granted after a checkpoint, then a crash: its owner still holds it, nobody else gets it") {
  // B waits for the lock A holds while a checkpoint is taken — a waiting
  // request is not in the checkpoint — then A lets go, B is granted, and the
  // server is killed. The successor rebuilds from that checkpoint and the
  // journal after it, and must still hold the lock for B: C's F_GETLK names
  // B, C's F_SETLK is refused. (memfs: locks in the server, rebuilt by
  // replay; passthrough: OFD locks on the files its fds keep.)
  for (const subject fs : subjects) {
    const std::string fs_name = name_of(fs);
    CAPTURE(fs_name);
    supervised_mount m(fs);
    contended_lock lock(m.mp, taking::wait);
    // Two checkpoints from now: the later began after B's request was
    // journaled (a checkpoint under way may have begun before).
    const std::uint64_t first = status_of(m.mp).checkpoint;
    REQUIRE(status_of(m.mp).supervised);
    const std::string filler = m.mp + "/filler";
    const std::string block(64 * 1024, 'f');
    REQUIRE_MESSAGE(eventually(
                        [&] {
                          write_file(filler, block);  // journaled: memfs keeps the data, passthrough the intent
                          for (int i = 0; i < 50; ++i) {
                            const std::string name = m.mp + "/scratch" + std::to_string(i);
                            write_file(name, "s");
                            REQUIRE(::unlink(name.c_str()) == 0);
                          }
                          return status_of(m.mp).checkpoint >= first + 2;
                        },
                        std::chrono::seconds(30)),
                    "no checkpoint was taken");
    REQUIRE_FALSE(process_ended(lock.b.pid()));  // still waiting through them
    lock.release_a();
    REQUIRE_MESSAGE(lock.b_done.heard(), "B did not get the lock once A let go");

    const pid_t server = server_of(m.keeper.pid);
    REQUIRE(::kill(server, SIGKILL) == 0);
    (void)m.next_server(server);

    const lock_view seen = c_sees(m.mp);
    CHECK(seen.type == F_WRLCK);
    if (fs == subject::memfs) CHECK(seen.pid == lock.b.pid());
    CHECK_FALSE(seen.c_took);
    REQUIRE(lock.b_go.say());
    CHECK(lock.b.wait() == 0);
    const std::string said = m.stop();
    CHECK_MESSAGE(said.find("answered differently") == std::string::npos, said);
  }
}

TEST_CASE("a lock waiter interrupted after a crash does not get the lock later") {
  // B waits for A's lock when the server is killed. The successor replays
  // B's request from the journal (it waits again, in the rebuilt state) and
  // the kernel resends it (waiting beside it). Then B gives up (a signal:
  // the kernel interrupts the resent request, F_SETLKW fails with EINTR) and
  // A lets go. Nobody may hold the lock now: C's F_GETLK finds it free and
  // C's F_SETLK gets it. (Before, the replay's copy of B's request went on
  // waiting and took the lock for B, which had been told EINTR.)
  for (const subject fs : subjects) {
    const std::string fs_name = name_of(fs);
    CAPTURE(fs_name);
    supervised_mount m(fs);
    contended_lock lock(m.mp, taking::wait_until_signalled);

    const pid_t server = server_of(m.keeper.pid);
    REQUIRE(::kill(server, SIGKILL) == 0);
    (void)m.next_server(server);
    REQUIRE_MESSAGE(eventually([&] { return setlkw_seen(m.mp) >= 1 || process_ended(lock.b.pid()); }),
                    "B's lock request was not resent to the successor");
    REQUIRE_FALSE(process_ended(lock.b.pid()));
    REQUIRE(::kill(lock.b.pid(), SIGUSR1) == 0);
    REQUIRE_MESSAGE(lock.b_done.heard(), "B's F_SETLKW did not end with EINTR: " << lock.b.wait());
    lock.release_a();

    const lock_view seen = c_sees(m.mp);
    CHECK_MESSAGE(seen.type == F_UNLCK, "held by pid " << seen.pid << " (B is " << lock.b.pid() << ")");
    CHECK(seen.c_took);
    REQUIRE(lock.b_go.say());
    CHECK(lock.b.wait() == 0);
    const std::string said = m.stop();
    CHECK_MESSAGE(said.find("answered differently") == std::string::npos, said);
  }
}

TEST_CASE("a server that dies on every start: the keeper gives up, applications get ENOTCONN, the log says why") {
  temp_dir dir;
  const std::string mp = dir.path();
  scoped_env where("FUSEXX_CRASH_POINT", "before_apply");
  scoped_env when("FUSEXX_CRASH_AFTER", "1");
  child keeper = start_server(example_binary("FUSEXX_MEMFS"), {"-o", "supervise"}, mp, false);
  REQUIRE(eventually([&] { return is_fuse_mounted(mp) || process_ended(keeper.pid); }));
  REQUIRE(is_fuse_mounted(mp));
  // The first request that changes anything kills every server.
  const auto started = std::chrono::steady_clock::now();
  const int fd = ::open((mp + "/x").c_str(), O_CREAT | O_WRONLY, 0644);
  const int err = errno;
  CHECK(fd < 0);
  CHECK_MESSAGE((err == ECONNABORTED || err == ENOTCONN), "open: " << std::strerror(err));
  const int status = wait_exit(keeper.pid, std::chrono::seconds(30));
  const auto took = std::chrono::steady_clock::now() - started;
  const std::string said = output_of(keeper);
  CHECK(status == keeper::gave_up_status);
  CHECK_MESSAGE(said.find("6 crashes in a row") != std::string::npos, said);
  CHECK_MESSAGE(said.find("applications get ENOTCONN") != std::string::npos, said);
  struct stat sb {};
  CHECK(::stat(mp.c_str(), &sb) != 0);
  CHECK(errno == ENOTCONN);
  MESSAGE("gave up after " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
  (void)::umount2(mp.c_str(), MNT_DETACH);
}

TEST_CASE("-o supervise refuses what it cannot keep: io_uring asked for, a takeover, a filesystem that is not crash-safe") {
  temp_dir dir;
  const auto uring = run({example_binary("FUSEXX_MEMFS"), "-f", "-o", "supervise,transport=uring", dir.path()}, true);
  CHECK(uring.status == 2);
  CHECK_MESSAGE(uring.out.find("cannot resend the requests an io_uring entry holds") != std::string::npos, uring.out);
  const auto takeover = run({example_binary("FUSEXX_MEMFS"), "-f", "--takeover", "-o", "supervise", dir.path()}, true);
  CHECK(takeover.status == 2);
  CHECK_MESSAGE(takeover.out.find("do not go together") != std::string::npos, takeover.out);
  const auto hello = run({example_binary("FUSEXX_HELLO"), "-f", "-o", "supervise", dir.path()}, true);
  CHECK(hello.status == 2);
  CHECK_MESSAGE(hello.out.find("does not support crash recovery") != std::string::npos, hello.out);
  CHECK_FALSE(is_fuse_mounted(dir.path()));
}

// The journals keep their pages across checkpoints, so a writer that goes
// on overwrites them instead of faulting fresh ones in; once no checkpoint
// has come for journal_idle_s, what the records do not use goes back.
TEST_CASE("a supervised server's journals keep their memory across checkpoints, and give it back once idle") {
  supervised_mount m(subject::memfs, ",journal_idle_s=2");
  // Bytes of the keeper's two journal memfds (its servers map them) that
  // hold memory past their records and the checkpoint_kb=64 they keep.
  auto spare = [&] {
    std::uint64_t total = 0;
    int seen = 0;
    const std::string fds = "/proc/" + std::to_string(m.keeper.pid) + "/fd/";
    for (const auto& e : std::filesystem::directory_iterator(fds)) {
      std::error_code ec;
      if (std::filesystem::read_symlink(e.path(), ec).string().find("fusexx-journal") == std::string::npos) continue;
      unique_fd fd(::open(e.path().c_str(), O_RDONLY | O_CLOEXEC));
      struct stat st {};
      std::uint64_t used = 0;
      REQUIRE(fd);
      REQUIRE(::fstat(fd.get(), &st) == 0);
      REQUIRE(::pread(fd.get(), &used, sizeof used, 32) == sizeof used);  // journal::header::used
      const std::uint64_t in_use = (64 + std::max<std::uint64_t>(used, 64 << 10) + 4095) / 4096 * 4096;
      const std::uint64_t held = std::uint64_t(st.st_blocks) * 512;
      total += held > in_use ? held - in_use : 0;
      ++seen;
    }
    if (seen != 2) FAIL("the keeper holds " << seen << " journals, not 2");
    return total;
  };
  // 32 overwrites of one 1 MiB range: each is journaled, and checkpoints
  // (each about the size of the files) come every few of them.
  const std::string data(1u << 20, 'w');
  unique_fd f(::open((m.mp + "/big").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  REQUIRE(f);
  for (int i = 0; i < 32; ++i) REQUIRE(::pwrite(f.get(), data.data(), data.size(), 0) == ssize_t(data.size()));
  // Kept: far more than the records since the last checkpoint use.
  const std::uint64_t kept = spare();
  CHECK_MESSAGE(kept >= (1u << 20), kept << " bytes kept past the records");
  // Given back once idle (2 s here).
  std::uint64_t left = kept;
  CHECK(eventually([&] { return (left = spare()) < 2 * 4096; }));
  CHECK_MESSAGE(left < 2 * 4096, left << " bytes still held past the records");
  // And the writes were kept: the server still serves them.
  CHECK(slurp(m.mp + "/big") == data);
  CHECK(m.stop().find("error") == std::string::npos);
}

TEST_CASE("a supervised mount serves through /dev/fuse even where io_uring is the default, and stops cleanly") {
  scoped_env transport("FUSEXX_TRANSPORT", "uring");
  supervised_mount m(subject::memfs);
  CHECK(slurp(m.mp + "/fixed") == pattern(8192));
  const std::string said = m.stop();
  CHECK_MESSAGE(said.find("supervise") == std::string::npos, said);  // nothing to report: no crash
}

TEST_CASE("a supervised passthrough as a daemon: started, recovered after a crash, stopped by SIGTERM to its keeper") {
  // Without -f the keeper is the daemon; its servers share its fd table,
  // the start-up channel included (the first server reports on it).
  temp_dir dir, source;
  const std::string mp = dir.sub("mnt"), pid_file = dir.path() + "/keeper.pid";
  const auto started =
      run({example_binary("FUSEXX_PASSTHROUGH"), "-o", "supervise,timeout=0,source=" + source.path() + ",pid_file=" + pid_file, mp},
          true);
  REQUIRE_MESSAGE(started.status == 0, started.out);
  REQUIRE(is_fuse_mounted(mp));
  const std::string pid_text = slurp(pid_file);
  REQUIRE(!pid_text.starts_with("<error"));
  const pid_t keeper = std::stoi(pid_text);
  const pid_t server = server_of(keeper);
  REQUIRE(server > 0);
  // A file open across the crash: written before, read and written after.
  const int fd = ::open((mp + "/f").c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "before ", 7) == 7);
  REQUIRE(::kill(server, SIGKILL) == 0);
  REQUIRE(eventually([&] { return server_of(keeper) > 0 && server_of(keeper) != server; }));
  REQUIRE(::write(fd, "after", 5) == 5);
  char back[12] = {};
  CHECK(::pread(fd, back, sizeof back, 0) == 12);
  CHECK(std::string(back, 12) == "before after");
  ::close(fd);
  CHECK(slurp(source.path() + "/f") == "before after");
  REQUIRE(::kill(keeper, SIGTERM) == 0);
  CHECK(eventually([&] { return process_ended(keeper); }));
  CHECK_FALSE(is_fuse_mounted(mp));
  CHECK(eventually([&] { return ::access(pid_file.c_str(), F_OK) != 0; }));
}

// ---- systemd's fd store as the keeper ----

namespace {

// memfs -o supervise as a unit with a store (Type=notify, Restart=on-failure,
// RestartPreventExitStatus=3, FileDescriptorStoreMax=8), run by the test
// double of the service manager.
struct stored_mount {
  temp_dir dir;
  std::string mp = dir.path();
  fake_systemd svc;

  explicit stored_mount(const std::string& options = "", unsigned store = 8)
      : svc({example_binary("FUSEXX_MEMFS"), "-f", "-o",
             "supervise,checkpoint_kb=64,entry_timeout=0,attr_timeout=0" + options, dir.path()},
            {.fd_store_max = store}) {
    REQUIRE(svc.ok());
    svc.keep_reading();
    REQUIRE(svc.start());
  }
  ~stored_mount() {
    if (is_fuse_mounted(mp)) (void)::umount2(mp.c_str(), MNT_DETACH);
  }
  void started() {
    REQUIRE_MESSAGE(eventually([&] { return svc.ready() || process_ended(svc.main_pid()); }), svc.output());
    REQUIRE_MESSAGE(svc.ready(), svc.output());
    REQUIRE(is_fuse_mounted(mp));
  }
  // What the store holds, by kind: the connection, journals, checkpoints, history.
  std::string store_kinds() {
    std::set<std::string> kinds;
    for (const auto& n : svc.names()) kinds.insert(n.substr(0, n.find('.')));
    std::string out;
    for (const auto& k : kinds) out += k + " ";
    return out;
  }
};

}  // namespace

TEST_CASE("systemd's fd store as the keeper: 20 SIGKILLs and a restart while an application works; nothing lost or done twice") {
  stored_mount m(",supervise_restarts=1000");
  m.started();
  // Everything a successor needs is in the store, nothing more: the
  // connection, both journals, one checkpoint, the restart history.
  CHECK(eventually([&] { return m.svc.count("fusexx-dev") == 1 && m.svc.names().size() == 5; }));
  CHECK(m.store_kinds() == "fusexx-checkpoint fusexx-dev fusexx-journal fusexx-restarts ");
  make_application_files(m.mp);
  std::uint64_t rounds = 0;
  {
    busy_application app(m.mp);
    shared_state& st = app.state();
    directories dirs(m.mp);
    REQUIRE(app.progresses());
    std::mt19937 random(std::random_device{}());
    for (int kill = 1; kill <= 20; ++kill) {
      CAPTURE(kill);
      std::this_thread::sleep_for(std::chrono::milliseconds(random() % 120));
      REQUIRE(::kill(m.svc.main_pid(), SIGKILL) == 0);
      const int status = m.svc.wait_main();
      REQUIRE(status == 128 + SIGKILL);
      REQUIRE(m.svc.restart_on_failure(status, {keeper::gave_up_status}));  // a crash: started again, with the store
      REQUIRE_MESSAGE(app.progresses(), "no progress after crash " << kill << "\n" << m.svc.output());
      REQUIRE(dirs.running());
    }
    // `systemctl restart` (an upgrade): SIGTERM, the server leaves, the next
    // start continues from the same checkpoint and journal.
    CHECK(m.svc.restart() == 0);
    REQUIRE(app.progresses());
    check_locks_held(m.mp, app.pid());
    CHECK_MESSAGE(dirs.finish() == 0, "the mkdir/rmdir loop saw an error");
    app.check_unharmed();
    rounds = st.ops.load();
  }
  check_tree(m.mp, rounds);
  // Unmounted: the server ends (status 0: no restart) and empties the store.
  REQUIRE(::umount2(m.mp.c_str(), 0) == 0);
  CHECK(m.svc.wait_main() == 0);
  CHECK_MESSAGE(m.svc.names().empty(), m.store_kinds());  // by the server, before the manager closes it
  CHECK_FALSE(m.svc.restart_on_failure(0));
  const std::string said = m.svc.output();
  // 20 crashes counted; the restart was not one (its server left on SIGTERM).
  std::size_t died = 0;
  for (std::size_t at = 0; (at = said.find("died (killed or crashed)", at)) != std::string::npos; ++at) ++died;
  CHECK_MESSAGE(died == 20, said);
  CHECK_MESSAGE(said.find("answered differently") == std::string::npos, said);
  CHECK_MESSAGE(m.svc.ignored().empty(), m.svc.ignored().front());
  MESSAGE("the store as keeper, 20 crashes: " << rounds << " application rounds, " << m.svc.barriers() << " barriers");
}

TEST_CASE("systemd's fd store as the keeper: a server that dies on every start gives up, status 3, ENOTCONN") {
  scoped_env where("FUSEXX_CRASH_POINT", "before_apply");
  scoped_env when("FUSEXX_CRASH_AFTER", "1");
  stored_mount m;
  m.started();
  // The first request that changes anything kills every server; the
  // application waits meanwhile, on a thread of its own.
  auto opened = std::async(std::launch::async, [&] {
    const int fd = ::open((m.mp + "/x").c_str(), O_CREAT | O_WRONLY, 0644);
    return fd >= 0 ? 0 : errno;
  });
  int status = 0, starts = 1;
  std::vector<std::string> left;  // in the store once the last server ended
  for (;;) {
    status = m.svc.wait_main();
    left = m.svc.names();
    if (!m.svc.restart_on_failure(status, {keeper::gave_up_status})) break;
    REQUIRE(++starts < 20);
  }
  const std::string said = m.svc.output();
  CHECK_MESSAGE(status == keeper::gave_up_status, said);
  CHECK_MESSAGE(said.find("6 crashes in a row") != std::string::npos, said);
  CHECK_MESSAGE(said.find("applications get ENOTCONN") != std::string::npos, said);
  REQUIRE(opened.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  const int err = opened.get();
  CHECK_MESSAGE((err == ECONNABORTED || err == ENOTCONN), "open: " << std::strerror(err));
  struct stat sb {};
  CHECK(::stat(m.mp.c_str(), &sb) != 0);
  CHECK(errno == ENOTCONN);
  CHECK(left.empty());  // the server emptied it before it exited
}

TEST_CASE("systemd's fd store as the keeper: a corrupt checkpoint in the store is refused with the reason, status 3, the store emptied") {
  stored_mount m;
  m.started();
  {
    std::ofstream(m.mp + "/f") << "data";
  }
  std::string checkpoint;
  for (const auto& n : m.svc.names())
    if (n.starts_with("fusexx-checkpoint.")) checkpoint = n;
  REQUIRE(!checkpoint.empty());
  // What was stored under that name is replaced by a memfd of nonsense.
  unique_fd junk(::memfd_create("junk", MFD_CLOEXEC));
  REQUIRE(::write(junk.get(), "not a snapshot", 14) == 14);
  m.svc.replace(checkpoint, std::move(junk));
  REQUIRE(::kill(m.svc.main_pid(), SIGKILL) == 0);
  REQUIRE(m.svc.restart_on_failure(m.svc.wait_main(), {keeper::gave_up_status}));
  const int status = m.svc.wait_main();
  CHECK(m.svc.names().empty());  // emptied by the server itself, before the manager closes it
  const std::string said = m.svc.output();
  CHECK_MESSAGE(status == keeper::gave_up_status, said);
  CHECK_MESSAGE(said.find("recovery: the checkpoint") != std::string::npos, said);
  CHECK_MESSAGE(said.find("could not be recovered: applications get ENOTCONN") != std::string::npos, said);
  CHECK_FALSE(m.svc.restart_on_failure(status, {keeper::gave_up_status}));
  struct stat sb {};
  CHECK(eventually([&] { return ::stat(m.mp.c_str(), &sb) != 0 && errno == ENOTCONN; }));
}

TEST_CASE("systemd's fd store as the keeper refuses a store too small and a filesystem rebuilt by redo") {
  {
    stored_mount m("", 4);
    CHECK(m.svc.wait_main() == 2);
    CHECK_MESSAGE(m.svc.output().find("FileDescriptorStoreMax=6 or more") != std::string::npos, m.svc.output());
    CHECK_FALSE(is_fuse_mounted(m.mp));
  }
  temp_dir dir, source;
  fake_systemd svc({example_binary("FUSEXX_PASSTHROUGH"), "-f", "-o", "supervise,source=" + source.path(), dir.path()},
                   {.fd_store_max = 8});
  REQUIRE(svc.start());
  CHECK(svc.wait_main() == 2);
  CHECK_MESSAGE(svc.output().find("FileDescriptorStoreMax=0") != std::string::npos, svc.output());
  CHECK_FALSE(is_fuse_mounted(dir.path()));
}

TEST_CASE("under systemd without a store the fusexx keeper is the main process: it says READY=1, a crash of passthrough is recovered, SIGTERM unmounts") {
  temp_dir dir, source;
  const std::string mp = dir.path();
  fake_systemd svc({example_binary("FUSEXX_PASSTHROUGH"), "-f", "-o", "supervise,timeout=0,source=" + source.path(), mp},
                   {.fd_store_max = 0});
  REQUIRE(svc.ok());
  svc.keep_reading();
  REQUIRE(svc.start());
  REQUIRE_MESSAGE(eventually([&] { return svc.ready() || process_ended(svc.main_pid()); }), svc.output());
  REQUIRE_MESSAGE(svc.ready(), svc.output());  // from the keeper: the manager hears only the main process
  REQUIRE(is_fuse_mounted(mp));
  const pid_t server = first_child_of(svc.main_pid());
  REQUIRE(server > 0);
  const int fd = ::open((mp + "/f").c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "before ", 7) == 7);
  REQUIRE(::kill(server, SIGKILL) == 0);
  REQUIRE(eventually([&] { return first_child_of(svc.main_pid()) > 0 && first_child_of(svc.main_pid()) != server; }));
  REQUIRE(::write(fd, "after", 5) == 5);
  char back[12] = {};
  CHECK(::pread(fd, back, sizeof back, 0) == 12);
  CHECK(std::string(back, 12) == "before after");
  ::close(fd);
  CHECK(svc.terminate() == 0);  // systemctl stop: the keeper passes SIGTERM on, the server unmounts
  CHECK_FALSE(is_fuse_mounted(mp));
  CHECK(slurp(source.path() + "/f") == "before after");
  CHECK(svc.stopping());
  // Its servers said nothing to the manager (it would have ignored them).
  CHECK_MESSAGE(svc.ignored().empty(), svc.ignored().front());
}

TEST_CASE("-o supervise,auto_unmount: a crash is recovered, not unmounted; once keeper and server are gone the mount goes") {
  temp_dir dir;
  const std::string mp = dir.path();
  child keeper = start_server(example_binary("FUSEXX_MEMFS"), {"-o", "supervise,auto_unmount"}, mp, false);
  REQUIRE(eventually([&] { return is_fuse_mounted(mp) || process_ended(keeper.pid); }));
  REQUIRE_MESSAGE(is_fuse_mounted(mp), output_of(keeper));
  {
    std::ofstream(mp + "/f") << "kept";
  }
  const pid_t first = server_of(keeper.pid);
  REQUIRE(first > 0);
  REQUIRE(::kill(first, SIGKILL) == 0);
  pid_t second = -1;
  // (Once, no second server came within 10 s: what the keeper said is the lead.)
  REQUIRE_MESSAGE(eventually([&] {
                    second = server_of(keeper.pid);
                    return second > 0 && second != first;
                  }),
                  output_so_far(keeper));
  // The watcher of the first server saw it die, and found the connection
  // served again (statfs answered by the successor): nothing unmounted.
  CHECK(slurp(mp + "/f") == "kept");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(is_fuse_mounted(mp));
  CHECK(slurp(mp + "/f") == "kept");
  // The keeper killed (its server serves on, unsupervised), then the server:
  // nobody holds the connection, the kernel ends it, the successor's watcher
  // unmounts.
  REQUIRE(::kill(keeper.pid, SIGKILL) == 0);
  (void)wait_exit(keeper.pid);
  CHECK(slurp(mp + "/f") == "kept");
  REQUIRE(::kill(second, SIGKILL) == 0);
  CHECK(eventually([&] { return !is_fuse_mounted(mp); }, std::chrono::seconds(10)));
  if (keeper.stdout_fd >= 0) ::close(keeper.stdout_fd);
  if (is_fuse_mounted(mp)) (void)::umount2(mp.c_str(), MNT_DETACH);
}
