// The transport comparison: one filesystem (bench_fs.hpp), the same workloads,
// served once through /dev/fuse (classic) and once through FUSE over io_uring,
// printed side by side with the ratio.
//
//   bazel run //benchmarks:transports                 # ~1 s per cell
//   bazel run //benchmarks:transports -- --seconds 0.2
//
// Application threads and the server share the machine's cores, as they do in
// real use. Figures are throughput over a fixed time; nothing here is asserted.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "benchmarks/bench_fs.hpp"
#include "benchmarks/load.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

struct workload {
  std::string name;
  std::string unit;           // what one op counts as in the table
  double bytes_per_op = 0;    // for MB/s
  // Runs one operation as application thread `t`; `i` counts that thread's ops.
  std::function<bool(const std::string& mp, unsigned t, std::uint64_t i, std::vector<std::byte>& buf, int fd)> op;
  bool needs_big_fd = false;
};

std::vector<workload> workloads() {
  std::vector<workload> w;
  w.push_back({"stat storm (timeouts 0)", "ops/s", 0,
               [](const std::string& mp, unsigned, std::uint64_t i, std::vector<std::byte>&, int) {
                 struct stat st;
                 return ::stat((mp + "/f" + std::to_string(i % bench_fs::stat_targets)).c_str(), &st) == 0;
               }});
  w.push_back({"create + unlink", "ops/s", 0,
               [](const std::string& mp, unsigned t, std::uint64_t i, std::vector<std::byte>&, int) {
                 const std::string p = mp + "/n" + std::to_string(t) + "_" + std::to_string(i);
                 int fd = ::open(p.c_str(), O_CREAT | O_WRONLY, 0644);
                 if (fd < 0) return false;
                 ::close(fd);
                 return ::unlink(p.c_str()) == 0;
               }});
  w.push_back({"4 KiB random read (direct)", "IOPS", 4096,
               [](const std::string&, unsigned t, std::uint64_t i, std::vector<std::byte>& buf, int fd) {
                 return ::pread(fd, buf.data(), 4096, bench::random_block(t, i, bench_fs::big_size)) == 4096;
               },
               true});
  w.push_back({"sequential read, 1 MiB blocks", "MB/s", 1 << 20,
               [](const std::string&, unsigned, std::uint64_t i, std::vector<std::byte>& buf, int fd) {
                 const off_t off = static_cast<off_t>((i % 1024) << 20);
                 return ::pread(fd, buf.data(), 1 << 20, off) == (1 << 20);
               },
               true});
  w.push_back({"sequential write, 1 MiB blocks", "MB/s", 1 << 20,
               [](const std::string&, unsigned, std::uint64_t i, std::vector<std::byte>& buf, int fd) {
                 const off_t off = static_cast<off_t>((i % 1024) << 20);
                 return ::pwrite(fd, buf.data(), 1 << 20, off) == (1 << 20);
               },
               true});
  return w;
}

// Operations per second of `w` with `threads` application threads, `runs` times.
bench::samples measure(const workload& w, const std::string& mp, unsigned threads, double seconds, unsigned runs) {
  std::vector<std::vector<std::byte>> bufs(threads, std::vector<std::byte>(1 << 20));
  std::vector<int> fds(threads, -1);
  if (w.needs_big_fd)
    for (auto& fd : fds) fd = ::open((mp + "/big").c_str(), O_RDWR);
  bench::operation op = [&](unsigned t, std::uint64_t i) { return w.op(mp, t, i, bufs[t], fds[t]); };
  bench::samples s;
  for (unsigned r = 0; r < runs; ++r) {
    const auto run = bench::run_for(op, threads, seconds);
    if (run.failed) {
      s.values = {-1};
      break;
    }
    s.values.push_back(run.rate());
  }
  for (int fd : fds)
    if (fd >= 0) ::close(fd);
  return s;
}

std::string figure(const workload& w, double ops) {
  if (ops < 0) return "failed";
  if (w.bytes_per_op > 0 && w.unit == "MB/s") return fmt::format("{:.0f} MB/s", ops * w.bytes_per_op / 1e6);
  return ops >= 1e4 ? fmt::format("{:.1f}k {}", ops / 1e3, w.unit) : fmt::format("{:.0f} {}", ops, w.unit);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 1.0;
  unsigned runs = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) seconds = std::atof(argv[++i]);
    else if (a == "--runs" && i + 1 < argc) runs = static_cast<unsigned>(std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: transports [--seconds S] [--runs N]\n");
      return 2;
    }
  }
  if (seconds <= 0 || runs == 0) {
    std::fprintf(stderr, "transports: --seconds and --runs must be positive\n");
    return 2;
  }
  const std::vector<fusexx::transport_kind> kinds = {fusexx::transport_kind::classic, fusexx::transport_kind::uring};
  const auto w = workloads();
  // results[workload][threads-1][transport]
  // An unmeasured transport keeps an empty cell.
  std::vector<std::vector<std::vector<bench::samples>>> results(w.size(), std::vector<std::vector<bench::samples>>(2));
  std::vector<std::string> notes;

  for (auto kind : kinds) {
    const char* label = kind == fusexx::transport_kind::classic ? "classic" : "io_uring";
    char tmpl[] = "/tmp/fusexx-bench-XXXXXX";
    const std::string mp = ::mkdtemp(tmpl);
    bench_fs fs;
    fusexx::server_options o;
    o.transport = kind;
    o.mount.mountpoint = mp;
    o.mount.subtype = "bench";
    fusexx::server<bench_fs> srv(fs, o);
    auto started = srv.start();
    if (!started) {
      notes.push_back(fmt::format("{}: not measured: {}", label, started.error().message));
      for (auto& per_threads : results)
        for (auto& cell : per_threads) cell.emplace_back();
      std::filesystem::remove(mp);
      continue;
    }
    std::fprintf(stderr, "measuring %s ...\n", label);
    for (std::size_t i = 0; i < w.size(); ++i)
      for (unsigned threads = 1; threads <= 2; ++threads) {
        std::fprintf(stderr, "  %-32s %u thread(s)\n", w[i].name.c_str(), threads);
        results[i][threads - 1].push_back(measure(w[i], mp, threads, seconds, runs));
      }
    srv.stop();
    std::filesystem::remove(mp);
  }

  // Medians of `runs` runs, each with its spread (half the range).
  auto shown = [&](const workload& wl, const bench::samples& s) {
    if (s.values.empty()) return std::string("n/a");
    if (!s.ok()) return std::string("failed");
    return fmt::format("{} ±{:.0f}%", figure(wl, s.median()), s.spread() * 100);
  };
  std::printf("median of %u runs of %.1f s\n", runs, seconds);
  std::printf("%-32s %-8s %22s %22s %9s\n", "workload", "threads", "classic", "io_uring", "uring/cl");
  for (std::size_t i = 0; i < w.size(); ++i)
    for (unsigned threads = 1; threads <= 2; ++threads) {
      const auto& cell = results[i][threads - 1];
      const bench::samples &c = cell[0], &u = cell[1];
      const std::string ratio = (c.ok() && u.ok()) ? fmt::format("{:.2f}x", u.median() / c.median()) : "-";
      std::printf("%-32s %-8u %22s %22s %9s\n", w[i].name.c_str(), threads, shown(w[i], c).c_str(),
                  shown(w[i], u).c_str(), ratio.c_str());
    }
  for (auto& n : notes) std::printf("note: %s\n", n.c_str());
  return 0;
}
