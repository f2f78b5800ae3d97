// The restart benchmark: memfs (or passthrough, mirroring a fresh directory)
// serves a tree of N files while two application threads run the stat and
// the 4 KiB read workloads, and the server is upgraded (`memfs --takeover`)
// again and again — or, supervised (`-o supervise`, docs/restart.md "Crash
// recovery"), SIGKILLed again and again and recovered by its keeper. Printed
// per filesystem, transport and tree size, next to nothing asserted:
//  - takeover: how long `memfs --takeover` took to return (the successor
//    serves); for a crash, from the SIGKILL until the mount answers again;
//  - pause: for each handover, the longest single operation of each workload
//    that started around it (median, p99, max over the handovers);
//  - lost: operations the workloads did not do during the handovers, against
//    their rate before the first one.
//
//   bazel run -c opt //benchmarks:restart
//   bazel run -c opt //benchmarks:restart -- --files 10000 --handovers 20 --transports classic
//   bazel run -c opt //benchmarks:restart -- --crashes 20    (classic only: supervise serves through /dev/fuse)
//   bazel run -c opt //benchmarks:restart -- --fs memfs,passthrough --files 10000
//
// Root is needed (mounting). Each cell mounts the filesystem on a fresh
// directory (passthrough: of a fresh source directory beside it, on the
// same filesystem as /tmp) and unmounts it at the end.
#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <fusexx/mount/mountinfo.hpp>

#include "benchmarks/runfiles.hpp"

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;
constexpr std::size_t files_per_dir = 1000;
constexpr off_t data_size = 16 << 20;  // the 4 KiB read workload's file (memfs hands its contents over too)

using bench::runfile;

// Runs a command to its end; its exit status (or 128 + signal).
int run(const std::vector<std::string>& words) {
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(const_cast<char*>(w.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string file_name(const std::string& mp, std::size_t i) {
  return fmt::format("{}/d{}/f{}", mp, i / files_per_dir, i % files_per_dir);
}

bool populate(const std::string& mp, std::size_t files) {
  for (std::size_t d = 0; d * files_per_dir < files; ++d)
    if (::mkdir(fmt::format("{}/d{}", mp, d).c_str(), 0755) != 0) return false;
  std::atomic<bool> ok{true};
  std::vector<std::jthread> makers;
  const unsigned n = 2;
  for (unsigned t = 0; t < n; ++t)
    makers.emplace_back([&, t] {
      for (std::size_t i = t; i < files && ok; i += n) {
        const int fd = ::open(file_name(mp, i).c_str(), O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) ok = false;
        else ::close(fd);
      }
    });
  makers.clear();
  const int fd = ::open((mp + "/data").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  std::vector<char> chunk(1 << 20, 'x');
  for (off_t at = 0; at < data_size; at += off_t(chunk.size()))
    if (::pwrite(fd, chunk.data(), chunk.size(), at) != ssize_t(chunk.size())) ok = false;
  ::close(fd);
  return ok;
}

// One application thread's record: its operations, and the longest one that
// started in each handover window.
struct workload_thread {
  std::atomic<std::uint64_t> ops{0};
  std::atomic<std::int64_t> window_longest_us{0};
  std::atomic<bool> failed{false};
};

struct percentiles {
  double median = 0, p99 = 0, max = 0;
};
percentiles of(std::vector<double> v) {
  if (v.empty()) return {};
  std::ranges::sort(v);
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)], v.back()};
}

// A filesystem under test: memfs holds the tree itself, passthrough mirrors
// a source directory (a supervised passthrough is recovered by redo).
struct filesystem {
  std::string name, program;
  bool mirror = false;
};

struct cell {
  std::string fs;
  bool crashes = false;  // SIGKILLs of a supervised server, not handovers
  std::string transport;
  std::size_t files = 0;
  std::string error;
  percentiles takeover_ms, stat_pause_ms, read_pause_ms;
  double stat_lost = 0, read_lost = 0;  // fraction of the ops the rate before predicts
  unsigned handovers = 0;
};

// The server a keeper runs: its one child.
pid_t server_of(pid_t keeper) {
  std::FILE* f = std::fopen(fmt::format("/proc/{}/task/{}/children", keeper, keeper).c_str(), "r");
  if (!f) return -1;
  int pid = -1;
  if (std::fscanf(f, "%d", &pid) != 1) pid = -1;
  std::fclose(f);
  return pid;
}

// `handovers` upgrades, or (crashes) that many SIGKILLs of a supervised server.
cell measure(const filesystem& fs, const std::string& transport, std::size_t files, unsigned handovers,
             bool crashes) {
  cell c;
  c.fs = fs.name;
  c.crashes = crashes;
  c.transport = transport;
  c.files = files;
  ::setenv("FUSEXX_TRANSPORT", transport.c_str(), 1);
  char tmpl[] = "/tmp/fusexx-restart-XXXXXX";
  const std::string mp = ::mkdtemp(tmpl);
  const std::string pid_file = mp + ".pid", source = mp + ".source";
  auto cleanup = [&] {
    ::umount2(mp.c_str(), MNT_DETACH);
    ::rmdir(mp.c_str());
    std::error_code ec;
    if (fs.mirror) std::filesystem::remove_all(source, ec);
  };
  if (fs.mirror) ::mkdir(source.c_str(), 0755);
  const std::string base = fs.mirror ? "source=" + source + ",timeout=0" : "entry_timeout=0,attr_timeout=0";
  const std::string options = crashes ? base + ",supervise,pid_file=" + pid_file : base;
  if (run({fs.program, "-o", options, mp}) != 0) {
    c.error = fs.name + " did not start";
    cleanup();
    return c;
  }
  if (!populate(mp, files)) {
    c.error = "populating the tree failed";
    cleanup();
    return c;
  }

  std::atomic<bool> stop{false};
  std::atomic<bool> in_window{false};
  workload_thread stat_t, read_t;
  auto timed = [&](workload_thread& w, auto&& op) {
    const auto started = clock_type::now();
    const bool window = in_window.load(std::memory_order_relaxed);
    if (!op()) w.failed = true;
    if (window) {
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - started).count();
      std::int64_t seen = w.window_longest_us.load();
      while (us > seen && !w.window_longest_us.compare_exchange_weak(seen, us)) {
      }
    }
    w.ops.fetch_add(1, std::memory_order_relaxed);
  };
  std::jthread stats([&] {
    std::mt19937_64 rng(1);
    while (!stop) {
      const std::string f = file_name(mp, rng() % files);
      timed(stat_t, [&] {
        struct stat st;
        return ::stat(f.c_str(), &st) == 0;
      });
    }
  });
  std::jthread reads([&] {
    // CLOEXEC: each successor is spawned from this process; one that
    // inherited a file of its own mount would keep it busy for ever.
    const int fd = ::open((mp + "/data").c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    void* buf = nullptr;
    if (fd < 0 || ::posix_memalign(&buf, 4096, 4096) != 0) {
      read_t.failed = true;
      return;
    }
    std::mt19937_64 rng(2);
    while (!stop)
      timed(read_t, [&] { return ::pread(fd, buf, 4096, off_t(rng() % (data_size / 4096)) * 4096) == 4096; });
    std::free(buf);
    ::close(fd);
  });

  // The rate before: one second of warm-up, two measured.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto s0 = stat_t.ops.load(), r0 = read_t.ops.load();
  auto t0 = clock_type::now();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  const double stat_rate = double(stat_t.ops.load() - s0) / secs, read_rate = double(read_t.ops.load() - r0) / secs;

  std::vector<double> takeover, stat_pause, read_pause;
  s0 = stat_t.ops.load();
  r0 = read_t.ops.load();
  t0 = clock_type::now();
  for (unsigned h = 0; h < handovers; ++h) {
    stat_t.window_longest_us = 0;
    read_t.window_longest_us = 0;
    in_window = true;
    const auto started = clock_type::now();
    int rc = 0;
    if (crashes) {
      // The keeper (the daemon: its pid is in the pid file) starts the
      // server again; the mount answers once the new one serves.
      pid_t keeper = -1;
      if (std::FILE* f = std::fopen(pid_file.c_str(), "r")) {
        if (std::fscanf(f, "%d", &keeper) != 1) keeper = -1;
        std::fclose(f);
      }
      const pid_t server = keeper > 0 ? server_of(keeper) : -1;
      rc = server > 0 && ::kill(server, SIGKILL) == 0 ? 0 : 1;
      for (int i = 0; rc == 0 && server_of(keeper) == server; ++i) {
        if (i == 20000) rc = 2;  // no new server within 10 s
        std::this_thread::sleep_for(std::chrono::microseconds(500));
      }
      struct stat st;
      if (rc == 0 && ::stat(mp.c_str(), &st) != 0) rc = 3;
    } else {
      rc = run({fs.program, "--takeover", "-o", base, mp});
    }
    takeover.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - started).count());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // operations that started before it returned end
    in_window = false;
    if (rc != 0) {
      c.error = fmt::format("{} {} failed ({})", crashes ? "crash" : "handover", h + 1, rc);
      break;
    }
    stat_pause.push_back(double(stat_t.window_longest_us.load()) / 1000);
    read_pause.push_back(double(read_t.window_longest_us.load()) / 1000);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ++c.handovers;
  }
  const double phase = std::chrono::duration<double>(clock_type::now() - t0).count();
  c.stat_lost = std::max(0.0, 1.0 - double(stat_t.ops.load() - s0) / (stat_rate * phase));
  c.read_lost = std::max(0.0, 1.0 - double(read_t.ops.load() - r0) / (read_rate * phase));
  stop = true;
  stats.join();
  reads.join();
  if (c.error.empty() && (stat_t.failed || read_t.failed)) c.error = "an application operation failed";
  c.takeover_ms = of(takeover);
  c.stat_pause_ms = of(stat_pause);
  c.read_pause_ms = of(read_pause);
  ::umount2(mp.c_str(), 0);
  for (int i = 0; i < 100 && fusexx::find_fuse_mount(mp); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  cleanup();
  ::unlink(pid_file.c_str());
  return c;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at <= s.size()) {
    const std::size_t comma = std::min(s.find(',', at), s.size());
    if (comma > at) out.push_back(s.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> transports{"classic", "uring"};
  std::vector<std::size_t> sizes{10000, 1000000};
  unsigned handovers = 10, crashes = 10;
  std::vector<std::string> filesystems{"memfs"};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--transports") transports = split(v);
    else if (a == "--fs") filesystems = split(v);
    else if (a == "--files") {
      sizes.clear();
      for (auto& n : split(v)) sizes.push_back(std::stoul(n));
    } else if (a == "--handovers") handovers = static_cast<unsigned>(std::stoul(v));
    else if (a == "--crashes") crashes = static_cast<unsigned>(std::stoul(v));
    else {
      std::fprintf(stderr,
                   "usage: %s [--fs memfs,passthrough] [--files N,N] [--handovers N] [--crashes N] "
                   "[--transports classic,uring]\n",
                   argv[0]);
      return 2;
    }
  }
  std::vector<filesystem> under_test;
  for (const auto& name : filesystems) {
    if (name != "memfs" && name != "passthrough") {
      std::fprintf(stderr, "restart: --fs takes memfs and passthrough, not %s\n", name.c_str());
      return 2;
    }
    filesystem fs{name, runfile(argv[0], "examples/" + name), name == "passthrough"};
    if (fs.program.empty()) {
      std::fprintf(stderr, "restart: examples/%s not found next to %s (run it with bazel run)\n", name.c_str(), argv[0]);
      return 2;
    }
    under_test.push_back(fs);
  }
  std::vector<cell> cells;
  for (const auto& fs : under_test)
    for (std::size_t files : sizes)
      for (const auto& t : transports) {
        std::fprintf(stderr, "restart: %s, %s, %zu files ...\n", fs.name.c_str(), t.c_str(), files);
        if (handovers > 0) cells.push_back(measure(fs, t, files, handovers, false));
        // Crash recovery serves through /dev/fuse only (docs/restart.md).
        if (crashes > 0 && t == "classic") cells.push_back(measure(fs, t, files, crashes, true));
      }
  fmt::print("\nA tree of N empty files and one {} MiB file, upgraded live (handover), or SIGKILLed under its keeper "
             "(crash), while stat and 4 KiB O_DIRECT reads run (ms; lost = ops not done during them, against the rate "
             "before)\n\n", data_size >> 20);
  fmt::print("| filesystem | transport | files | what | times | back in median / max | stat pause median / p99 / max | "
             "read pause median / p99 / max | stat lost | read lost |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (auto& c : cells) {
    const char* what = c.crashes ? "crash" : "handover";
    if (!c.error.empty()) {
      fmt::print("| {} | {} | {} | {} | {} | {} | | | | |\n", c.fs, c.transport, c.files, what, c.handovers, c.error);
      continue;
    }
    fmt::print("| {} | {} | {} | {} | {} | {:.1f} / {:.1f} | {:.1f} / {:.1f} / {:.1f} | {:.1f} / {:.1f} / {:.1f} | "
               "{:.1f}% | {:.1f}% |\n",
               c.fs, c.transport, c.files, what, c.handovers, c.takeover_ms.median, c.takeover_ms.max, c.stat_pause_ms.median,
               c.stat_pause_ms.p99, c.stat_pause_ms.max, c.read_pause_ms.median, c.read_pause_ms.p99,
               c.read_pause_ms.max, 100 * c.stat_lost, 100 * c.read_lost);
  }
  return 0;
}
