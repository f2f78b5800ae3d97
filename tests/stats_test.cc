// The control socket's status and stats queries (fusexx/control.hpp) and the
// fusexx-ctl tool, against memfs served by its binary (which serves its
// control socket on its event loop): known operations from this process,
// then the counts the server reports must be what was done — exactly where
// the kernel's traffic is known (CREATE, WRITE's payload, LOOKUP errors at
// least), sane elsewhere (p50 <= p99 <= max). Another user is refused; the
// tool prints, --watch refreshes, errors are one line and exit status 1.
// Run per transport; outside the sandbox (another uid must connect).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fusexx/control.hpp>
#include <fusexx/version.hpp>

#include "tests/support/process.hpp"
#include "tests/support/spawned_mount.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

std::string ctl_binary() { return example_binary("FUSEXX_FUSEXX_CTL"); }

std::string expected_transport() { return transport_from_env() == transport_kind::uring ? "uring" : "classic"; }

control::stats_info stats_of(const std::string& mp) {
  auto answer = control::query(mp, "stats");
  REQUIRE_MESSAGE(answer, (answer ? "" : answer.error().message));
  auto s = control::parse_stats(*answer);
  REQUIRE_MESSAGE(s, (s ? "" : s.error().message));
  return *s;
}

const control::stats_info::op* find_op(const control::stats_info& s, std::string_view name) {
  for (const auto& o : s.ops)
    if (o.name == name) return &o;
  return nullptr;
}
// What `name` did between two answers.
struct delta {
  std::uint64_t count = 0, errors = 0, bytes_in = 0, bytes_out = 0, replies = 0;
};
delta diff(const control::stats_info& before, const control::stats_info& after, std::string_view name) {
  const auto* a = find_op(after, name);
  const auto* b = find_op(before, name);
  if (!a) return {};
  return {a->count - (b ? b->count : 0), a->errors - (b ? b->errors : 0), a->bytes_in - (b ? b->bytes_in : 0),
          a->bytes_out - (b ? b->bytes_out : 0), a->replies - (b ? b->replies : 0)};
}

void check_sane(const control::stats_info& s) {
  for (const auto& o : s.ops) {
    CAPTURE(o.name);
    CHECK(o.replies <= o.count);
    CHECK(o.errors <= o.replies);
    if (o.replies == 0) continue;
    CHECK(o.p50_ns <= o.p99_ns);
    CHECK(o.p99_ns <= o.max_ns);
    CHECK(o.max_ns > 0);
  }
}

struct memfs_served {
  temp_dir dir;
  spawned_mount m;
  explicit memfs_served(std::vector<std::string> args = {})
      : m(example_binary("FUSEXX_MEMFS"), std::move(args), dir.path()) {
    REQUIRE_MESSAGE(m.ok(), "memfs did not mount: " << m.output());
    // No waiting: the control socket listens before the mount is attached.
    auto status = control::query(m.path(), "status");
    REQUIRE_MESSAGE(status, (status ? "" : status.error().message));
  }
  std::string path(const std::string& relative) const { return m.path(relative); }
};

}  // namespace

TEST_CASE("stats: the counts are what the application did") {
  memfs_served fs;
  const std::string mp = fs.m.path();
  const auto before = stats_of(mp);
  CHECK(before.version == control::protocol_version);
  CHECK(before.enabled);

  constexpr int files = 10;
  constexpr std::size_t size = 1000;
  const std::string data(size, 'x');
  for (int i = 0; i < files; ++i) {
    const std::string p = fs.path("f" + std::to_string(i));
    const int fd = ::open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    CHECK(::write(fd, data.data(), size) == static_cast<ssize_t>(size));
    ::close(fd);
  }
  struct stat st;
  CHECK(::stat(fs.path("missing").c_str(), &st) == -1);
  CHECK(errno == ENOENT);
  for (int i = 0; i < files; ++i) {
    CHECK(::stat(fs.path("f" + std::to_string(i)).c_str(), &st) == 0);
    const int fd = ::open(fs.path("f" + std::to_string(i)).c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    char buf[2048];
    CHECK(::read(fd, buf, sizeof buf) == static_cast<ssize_t>(size));
    ::close(fd);
  }

  control::stats_info after;
  REQUIRE(eventually([&] {
    after = stats_of(mp);
    return after.in_flight == 0;
  }));
  check_sane(after);

  const delta create = diff(before, after, "CREATE");
  CHECK(create.count == files);
  CHECK(create.replies == files);
  CHECK(create.errors == 0);
  // Each name was looked up (and not found) before its CREATE; "missing" too.
  const delta lookup = diff(before, after, "LOOKUP");
  CHECK(lookup.errors >= files + 1);
  CHECK(lookup.count >= lookup.errors);
  // WRITE: its headers (in_header + write_in, 80 bytes) and the data.
  const delta write = diff(before, after, "WRITE");
  CHECK(write.count >= files);
  CHECK(write.errors == 0);
  CHECK(write.bytes_in == write.count * 80 + files * size);
  CHECK(write.bytes_out == write.count * (16 + 8));  // out_header + write_out
  const delta read = diff(before, after, "READ");
  CHECK(read.errors == 0);
  CHECK(read.bytes_out <= read.count * 16 + files * size);  // (a read may come from the page cache)
  CHECK(after.requests > before.requests);
  CHECK(after.errors >= before.errors + lookup.errors);

  // Forgotten nodes: unlinked files leave the kernel's cache.
  for (int i = 0; i < files; ++i) CHECK(::unlink(fs.path("f" + std::to_string(i)).c_str()) == 0);
  CHECK(eventually([&] { return stats_of(mp).forgets >= before.forgets + files; }));
}

TEST_CASE("the control socket answers from the moment the mount is visible") {
  // A successor or fusexx-ctl started right after the server finds the mount
  // and asks at once. Woken by the mount itself (/proc/self/mountinfo is
  // POLLPRI on every change), this process asks within microseconds of the
  // attach, before the server has started its transport.
  temp_dir dir;
  const std::string mp = dir.path();
  // poll() itself reports each change once (fs/proc_namespace.c, mounts_poll).
  unique_fd table(::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC));
  REQUIRE(table);
  REQUIRE_FALSE(is_fuse_mounted(mp));
  child server = spawn({example_binary("FUSEXX_MEMFS"), "-f", mp}, /*capture_stdout=*/true, /*with_stderr=*/true);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!is_fuse_mounted(mp) && !process_ended(server.pid) && std::chrono::steady_clock::now() < give_up) {
    pollfd p{table.get(), POLLPRI, 0};
    (void)::poll(&p, 1, 100);
  }
  auto status = control::query(mp, "status");
  ::kill(server.pid, SIGTERM);
  const int exit_status = wait_exit(server.pid);
  const std::string said = slurp_fd(server.stdout_fd);
  ::close(server.stdout_fd);
  REQUIRE_MESSAGE(status, status.error().message << "; the server said: " << said);
  auto parsed = control::parse_status(*status);
  REQUIRE_MESSAGE(parsed, (parsed ? "" : parsed.error().message));
  CHECK(parsed->transport == expected_transport());  // answered once it served: its transport was set up
  CHECK(exit_status == 0);
  CHECK_FALSE(is_fuse_mounted(mp));
}

TEST_CASE("status: transport, INIT, threads or queues, the server's identity") {
  memfs_served fs;
  auto answer = control::query(fs.m.path(), "status");
  REQUIRE_MESSAGE(answer, (answer ? "" : answer.error().message));
  auto s = control::parse_status(*answer);
  REQUIRE_MESSAGE(s, (s ? "" : s.error().message));
  CHECK(s->version == control::protocol_version);
  CHECK(s->fusexx_version == fusexx::version);
  CHECK(s->mountpoint == fs.m.path());
  CHECK(s->filesystem == "memfs");
  CHECK_FALSE(s->supervised);  // (under a keeper: crash_recovery_test reads its checkpoints)
  CHECK(s->pid == static_cast<std::uint32_t>(fs.m.pid()));
  CHECK(s->connection == fuse_connection_of(fs.m.path()).value_or(0));
  CHECK(s->transport == expected_transport());
  CHECK(s->threads >= 1);
  if (s->transport == "uring") {
    CHECK(s->queues >= 1);
    CHECK(s->queue_depth == 8);
    CHECK(std::ranges::find(s->flags, "over_io_uring") != s->flags.end());
  } else {
    CHECK(s->queues == 0);
  }
  CHECK(s->proto_major == 7);
  CHECK(s->proto_minor >= 31);
  CHECK(s->max_write > 0);
  CHECK(std::ranges::find(s->flags, "async_read") != s->flags.end());
  CHECK(s->uptime_s >= 0);
  CHECK(s->restartable);
  CHECK(s->stats);
  CHECK(s->handover_requests == 0);

  // An unknown query is refused, in words.
  auto unknown = control::query(fs.m.path(), "frobnicate");
  REQUIRE(!unknown);
  CHECK(unknown.error().message.find("unknown query") != std::string::npos);

  // A successor of the wrong type asks for the connection: refused, and counted.
  auto offer = handover::ask(fs.m.path(), "not-memfs", std::chrono::seconds(5));
  REQUIRE(!offer);
  CHECK(offer.error().message.find("refused") != std::string::npos);
  auto after = control::parse_status(control::query(fs.m.path(), "status").value_or(""));
  REQUIRE(after);
  CHECK(after->handover_requests == 1);
  CHECK(after->handover_refused == 1);
}

TEST_CASE("stats=off: nothing is counted per opcode, and status says so") {
  memfs_served fs({"-o", "stats=off"});
  struct stat st;
  CHECK(::stat(fs.path("missing").c_str(), &st) == -1);
  const auto s = stats_of(fs.m.path());
  CHECK(!s.enabled);
  CHECK(s.ops.empty());
  CHECK(s.requests > 0);  // the connection's own counters still count
  auto status = control::parse_status(control::query(fs.m.path(), "status").value_or(""));
  REQUIRE(status);
  CHECK(!status->stats);
}

TEST_CASE("another user is refused") {
  memfs_served fs;
  const std::string mp = fs.m.path();
  const int code = in_child([&] {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) return 10;
    auto answer = control::query(mp, "stats");
    if (answer) return 11;
    if (answer.error().message.find("permission denied") == std::string::npos) return 12;
    return 0;
  });
  CHECK_MESSAGE(code == 0, "the child ended with " << code << " (10: no uid 65534 here; 11: it was answered; 12: "
                                                       "refused for another reason)");
  CHECK(control::query(mp, "stats"));  // root still is answered
}

TEST_CASE("clients of another user that connect and say nothing do not hold the server") {
  // Anyone may connect to the abstract control socket. The server answers
  // one client at a time and used to wait 5 s for each one's first message:
  // 8 silent connections held it (its stop signals, its queries, a
  // successor) for 40 s. Now another user gets a moment, so root's query,
  // queued behind all 8, is answered well within its 15 s.
  memfs_served fs;
  const std::string mp = fs.m.path();
  int ready[2];
  int hold[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(hold) == 0);
  auto connection = fuse_connection_of(mp);
  REQUIRE(connection);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(hold[1]);
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(10);
    std::vector<unique_fd> silent;
    for (int i = 0; i < 8; ++i) {
      auto s = connect_control_socket(control_socket_name(*connection), mp);
      if (!s) ::_exit(11);
      silent.push_back(std::move(*s));
    }
    (void)!::write(ready[1], "x", 1);
    char c;
    (void)!::read(hold[0], &c, 1);  // until the parent is done
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(hold[0]);
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  auto answer = control::query(mp, "status", std::chrono::seconds(15));
  CHECK_MESSAGE(answer.has_value(), (answer ? "" : answer.error().message));
  ::close(hold[1]);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  ::close(ready[0]);
}

TEST_CASE("fusexx-ctl: status, stats, --json, --watch, and errors in one line") {
  REQUIRE_MESSAGE(!ctl_binary().empty(), "FUSEXX_FUSEXX_CTL is not set (run through bazel test)");
  memfs_served fs;
  const std::string mp = fs.m.path();
  for (int i = 0; i < 3; ++i) {
    const int fd = ::open(fs.path("g" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    ::close(fd);
  }

  const auto status = run({ctl_binary(), mp, "status"}, true);
  CHECK(status.status == 0);
  CHECK(status.out.find("transport    " + expected_transport()) != std::string::npos);
  CHECK(status.out.find("filesystem   memfs") != std::string::npos);

  // The table: a header, one line per opcode, the totals.
  const auto table = run({ctl_binary(), mp, "stats"}, true);
  REQUIRE(table.status == 0);
  std::istringstream lines(table.out);
  std::string line;
  REQUIRE(std::getline(lines, line));
  CHECK(line.starts_with("OPCODE"));
  std::uint64_t creates = 0;
  bool totals = false;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string name;
    std::uint64_t count = 0, errors = 0;
    words >> name;
    if (name == "requests") {
      totals = true;
      continue;
    }
    CHECK_MESSAGE((words >> count >> errors), line);
    if (name == "CREATE") creates = count;
  }
  CHECK(totals);
  CHECK(creates == 3);

  const auto json = run({ctl_binary(), mp, "stats", "--json"}, true);
  CHECK(json.status == 0);
  auto parsed = control::parse_stats(json.out);
  REQUIRE(parsed);
  CHECK(find_op(*parsed, "CREATE") != nullptr);

  // --watch redraws until stopped.
  child watch = spawn({ctl_binary(), mp, "stats", "--watch", "1"}, /*capture_stdout=*/true, true);
  REQUIRE(watch.pid > 0);
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  while (std::chrono::steady_clock::now() < until) {
    struct stat st;
    (void)::stat(fs.path("g0").c_str(), &st);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(watch.pid, SIGINT);
  (void)wait_exit(watch.pid);
  const std::string screens = slurp_fd(watch.stdout_fd);
  ::close(watch.stdout_fd);
  CHECK(screens.find("refresh #1") != std::string::npos);
  CHECK(screens.find("refresh #2") != std::string::npos);
  CHECK(screens.find("\x1b[2J") != std::string::npos);

  // Errors: one line, exit status 1.
  temp_dir plain;
  const auto not_fuse = run({ctl_binary(), plain.path(), "stats"}, true);
  CHECK(not_fuse.status == 1);
  CHECK(not_fuse.out.find("is not a FUSE mount") != std::string::npos);
  CHECK(std::count(not_fuse.out.begin(), not_fuse.out.end(), '\n') == 1);
  const auto bad = run({ctl_binary(), mp, "nonsense"}, true);
  CHECK(bad.status == 2);
}

TEST_CASE("fusexx-ctl: a FUSE mount no fusexx server serves") {
  const std::string libfuse = example_binary("FUSEXX_LIBFUSE_PASSTHROUGH");
  REQUIRE(!libfuse.empty());
  temp_dir dir;
  const std::string source = dir.sub("source"), mnt = dir.sub("mnt");
  child server = spawn({libfuse, "-f", "-o", "source=" + source, mnt});
  REQUIRE(server.pid > 0);
  REQUIRE(eventually([&] { return is_fuse_mounted(mnt); }));
  const auto r = run({ctl_binary(), mnt, "status"}, true);
  ::kill(server.pid, SIGTERM);
  (void)wait_exit(server.pid);
  if (is_fuse_mounted(mnt)) (void)::umount2(mnt.c_str(), MNT_DETACH);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.out.find("no fusexx server answers") != std::string::npos, r.out);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
}
