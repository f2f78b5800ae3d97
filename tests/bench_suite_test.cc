// The benchmark suite runs end to end on a tiny workload: every subject it was
// built with mounts, serves every workload and is stopped; the JSON, the text
// table and the chart are written. Figures are never checked, only that they
// exist. The report's arithmetic (ratios per pair, round by round) is checked
// on figures made up here, and the count of a server's CPU on processes that burn it.
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "benchmarks/report.hpp"
#include "benchmarks/subjects.hpp"
#include "tests/support/process.hpp"

using namespace fusexx::testing;

namespace {

const std::vector<std::string> fusexx_subjects = {"native",   "memfs-classic", "memfs-supervised", "memfs",
                                                   "classic",  "passthrough-supervised", "io_uring", "passthrough"};
// libfuse 3.19's examples, paired with fusexx's in the order above (the
// supervised subjects have no pair).
const std::vector<std::string> libfuse_subjects = {"libfuse-memfs", "libfuse-memfs-uring", "libfuse-passthrough",
                                                   "libfuse-passthrough-uring", "libfuse-kpassthrough"};
const std::vector<std::string> workloads = {"stat storm, 1 thread",
                                            "stat storm, 2 threads",
                                            "create",
                                            "unlink",
                                            "readdir of the big directory",
                                            "4 KiB random read (O_DIRECT)",
                                            "4 KiB random read, 2 jobs (O_DIRECT)",
                                            "4 KiB random write (O_DIRECT)",
                                            "4 KiB random write, 2 jobs (O_DIRECT)",
                                            "sequential read, 1 MiB (O_DIRECT)",
                                            "sequential write, 1 MiB (O_DIRECT)"};

// libfuse 3.19's build, as tools/dev passes it on (FUSEXX_ANCHORS: ../shared/anchors).
bool have_libfuse() {
  const char* a = std::getenv("FUSEXX_ANCHORS");
  return a && *a && ::access((std::string(a) + "/libfuse-3.19.0-rc0/example/memfs_ll").c_str(), X_OK) == 0;
}

// The JSON object of one result, as the suite writes it (one line each).
std::string result_line(const std::string& json, const std::string& workload, const std::string& subject) {
  const std::string key = "{\"workload\": \"" + workload + "\", \"subject\": \"" + subject + "\"";
  const auto at = json.find(key);
  if (at == std::string::npos) return "";
  return json.substr(at, json.find('\n', at) - at);
}

bool has_number(const std::string& line, const std::string& field) {
  return std::regex_search(line, std::regex("\"" + field + "\": [0-9.]+(e[-+]?[0-9]+)?[,}]"));
}

bool no_fuse_mounts_under(const std::string& prefix) {
  const std::string info = slurp("/proc/self/mountinfo");
  return info.find(" " + prefix) == std::string::npos;
}

}  // namespace

TEST_CASE("the suite measures every subject on a tiny workload and writes its report") {
  const std::string suite = example_binary("FUSEXX_SUITE");
  REQUIRE(!suite.empty());
  temp_dir dir;
  const std::string out = dir.sub("out");
  auto r = run({suite, "--tiny", "--runs", "2", "--seconds", "0.05", "--no-instructions", "--dir", dir.path(), "--out",
                out},
               true);
  INFO(r.out);
  REQUIRE(r.status == 0);

  const std::string json = slurp(out + "/results.json");
  REQUIRE(json.starts_with("{"));
  std::vector<std::string> measured = fusexx_subjects;
  if (have_libfuse()) {
    measured.insert(measured.end(), libfuse_subjects.begin(), libfuse_subjects.end());
  } else {
    MESSAGE("libfuse 3.19 is not here (FUSEXX_ANCHORS): its subjects must say why they were skipped");
    for (auto& s : libfuse_subjects) {
      CAPTURE(s);
      CHECK(std::regex_search(json, std::regex("\\{\"name\": \"" + s + "\", \"measured\": false, \"reason\": \"[^\"]*--libfuse")));
    }
  }
  for (auto& s : measured) {
    CAPTURE(s);
    CHECK(json.find("{\"name\": \"" + s + "\", \"measured\": true}") != std::string::npos);
    for (auto& w : workloads) {
      CAPTURE(w);
      const std::string line = result_line(json, w, s);
      CHECK(has_number(line, "median"));
      // Two runs each: the spread comes from real samples.
      CHECK(std::regex_search(line, std::regex(R"("runs": \[[0-9.e+-]+, [0-9.e+-]+\])")));
      if (s == "native") CHECK(line.find("\"server_cpu_ns_per_op\": null") != std::string::npos);
      else CHECK(has_number(line, "server_cpu_ns_per_op"));
      if (s != "native") CHECK(has_number(line, "vs_native"));
      // fusexx's subjects against their libfuse counterparts.
      if (have_libfuse() && s != "native" && !s.ends_with("-supervised") && !s.starts_with("libfuse")) {
        CHECK(has_number(line, "vs_libfuse"));
        CHECK(std::regex_search(line, std::regex(R"("vs_libfuse_rounds": \[[0-9.e+-]+, [0-9.e+-]+\])")));
      }
    }
    if (s != "native") CHECK(has_number(result_line(json, "mount time", s), "median"));
  }
  if (have_libfuse()) {
    CHECK(std::regex_search(json, std::regex(R"("label": "memfs io_uring", "fusexx": "memfs", "libfuse": "libfuse-memfs-uring", "geometric_mean": [0-9.]+)")));
    CHECK(slurp(out + "/results.txt").find("fusexx / libfuse, per pair") != std::string::npos);
    CHECK(std::regex_search(json, std::regex(R"("label": "kernel passthrough", [^\n]*"geometric_mean_rounds": \[[0-9.e+-]+, [0-9.e+-]+\])")));
  }
  const std::string table = slurp(out + "/results.txt");
  for (auto& w : workloads) CHECK(table.find(w) != std::string::npos);
  if (r.out.find("no chart:") == std::string::npos) CHECK(slurp(out + "/chart.png").starts_with("\x89PNG"));
  // Every server unmounted itself; the source trees are gone.
  CHECK(no_fuse_mounts_under("/tmp/fusexx-bench-mnt-"));
  CHECK(list_dir(dir.path()) == std::vector<std::string>{".", "..", "out"});
}

TEST_CASE("a --libfuse directory without libfuse's examples: its subjects say why, the rest is measured") {
  const std::string suite = example_binary("FUSEXX_SUITE");
  temp_dir dir;
  const std::string out = dir.sub("out");
  auto r = run({suite, "--tiny", "--runs", "1", "--seconds", "0.05", "--no-instructions", "--only",
                "native,memfs,libfuse-memfs-uring", "--libfuse", dir.path() + "/nowhere", "--dir", dir.path(), "--out",
                out},
               true);
  INFO(r.out);
  REQUIRE(r.status == 0);
  const std::string json = slurp(out + "/results.json");
  CHECK(json.find("{\"name\": \"libfuse-memfs-uring\", \"measured\": false, \"reason\": \"" + dir.path() +
                  "/nowhere/example/memfs_ll: No such file or directory\"}") != std::string::npos);
  CHECK(has_number(result_line(json, "create", "memfs"), "median"));
  // No pair was measured: no pair table.
  CHECK(slurp(out + "/results.txt").find("per pair") == std::string::npos);
}

TEST_CASE("--cells measures only the workloads whose names it finds") {
  const std::string suite = example_binary("FUSEXX_SUITE");
  temp_dir dir;
  const std::string out = dir.sub("out");
  auto r = run({suite, "--tiny", "--runs", "2", "--mounts", "3", "--seconds", "0.05", "--no-instructions", "--only",
                "native,memfs", "--cells", "create|readdir", "--dir", dir.path(), "--out", out},
               true);
  INFO(r.out);
  REQUIRE(r.status == 0);
  const std::string json = slurp(out + "/results.json");
  CHECK(has_number(result_line(json, "create", "memfs"), "median"));
  CHECK(has_number(result_line(json, "readdir of the big directory", "native"), "median"));
  CHECK(has_number(result_line(json, "mount time", "memfs"), "median"));  // always: it is the mount
  CHECK(json.find("stat storm") == std::string::npos);
  CHECK(json.find("4 KiB random read") == std::string::npos);
  // Two rounds of three starts each: six samples of memfs's mount time.
  CHECK(std::regex_search(result_line(json, "mount time", "memfs"),
                          std::regex(R"("runs": \[([0-9.e+-]+, ){5}[0-9.e+-]+\])")));
  CHECK(r.out.find("(the last of 3 starts;") != std::string::npos);

  r = run({suite, "--cells", "(unclosed"}, true);
  CHECK(r.status == 2);
  CHECK(r.out.find("--cells: not a regular expression") != std::string::npos);
  r = run({suite, "--cells", "no workload is called this"}, true);
  CHECK(r.status == 2);
  CHECK(r.out.find("--cells: no workload's name matches") != std::string::npos);
}

TEST_CASE("bad arguments are refused with the usage text") {
  const std::string suite = example_binary("FUSEXX_SUITE");
  auto r = run({suite, "--runs", "0"}, true);
  CHECK(r.status == 2);
  CHECK(r.out.find("usage: suite") != std::string::npos);
  r = run({suite, "--mounts", "0"}, true);
  CHECK(r.status == 2);
  CHECK(r.out.find("--mounts must be positive") != std::string::npos);
  r = run({suite, "--frobnicate"}, true);
  CHECK(r.status == 2);
}

#if !defined(__SANITIZE_ADDRESS__)
// callgrind cannot run sanitizer builds, so the instruction count is checked
// in the plain build only.
TEST_CASE("the callgrind phase counts server instructions per operation") {
  if (::access("/usr/bin/valgrind", X_OK) != 0) {
    MESSAGE("valgrind is not installed: tools/dev setup installs it");
    REQUIRE(false);
  }
  const std::string suite = example_binary("FUSEXX_SUITE");
  temp_dir dir;
  const std::string out = dir.sub("out");
  auto r = run({suite, "--tiny", "--runs", "1", "--seconds", "0.05", "--only", "classic", "--dir", dir.path(), "--out",
                out},
               true);
  INFO(r.out);
  REQUIRE(r.status == 0);
  const std::string json = slurp(out + "/results.json");
  CHECK(has_number(result_line(json, "stat storm, 1 thread", "classic"), "server_instructions_per_op"));
  CHECK(has_number(result_line(json, "4 KiB random read (O_DIRECT)", "classic"), "server_instructions_per_op"));
}
#endif

namespace {

// A report of one pair over two throughput workloads and the mount time, with
// the runs given round by round.
bench::report made_up_report(std::vector<double> fast_fx, std::vector<double> fast_lf, std::vector<double> slow_fx,
                             std::vector<double> slow_lf) {
  bench::report rep;
  rep.subjects = {"fx", "lf"};
  rep.pairs = {{"the pair", "fx", "lf"}};
  rep.workloads = {"mount time", "fast", "slow"};
  auto put = [&](const std::string& w, const std::string& s, std::vector<double> runs, bool lower = false) {
    bench::cell& c = rep.at(w, s);
    c.unit = lower ? "ms" : "ops/s";
    c.lower_is_better = lower;
    c.figure.values = std::move(runs);
  };
  put("mount time", "fx", {0.002, 0.004}, true);
  put("mount time", "lf", {0.004, 0.004}, true);
  put("fast", "fx", std::move(fast_fx));
  put("fast", "lf", std::move(fast_lf));
  put("slow", "fx", std::move(slow_fx));
  put("slow", "lf", std::move(slow_lf));
  return rep;
}

}  // namespace

TEST_CASE("the report gives each pair's ratios round by round and names the cells behind in every round") {
  // fast: fx wins 3 rounds of 4 by 2x and loses one; slow: fx loses every round.
  auto rep = made_up_report({200, 200, 50, 200}, {100, 100, 100, 100}, {40, 90, 60, 80}, {100, 100, 100, 100});
  const bench::cell* fast = rep.find("fast", "fx");
  const bench::cell* slow = rep.find("slow", "fx");
  const bench::cell* mount = rep.find("mount time", "fx");
  REQUIRE(fast);
  REQUIRE(slow);
  REQUIRE(mount);
  CHECK(rep.round_ratios(*fast, "lf") == std::vector<double>{2.0, 2.0, 0.5, 2.0});
  CHECK(rep.round_ratios(*slow, "lf") == std::vector<double>{0.4, 0.9, 0.6, 0.8});
  // Lower is better: inverted, as the ratio of the medians is.
  CHECK(rep.round_ratios(*mount, "lf") == std::vector<double>{2.0, 1.0});
  CHECK(rep.ratio(*slow, "lf") == doctest::Approx(0.7));
  // The mean of each round over the throughput cells (mount time is not one).
  const auto means = rep.round_geometric_means(rep.pairs[0]);
  REQUIRE(means.size() == 4);
  CHECK(means[0] == doctest::Approx(std::sqrt(2.0 * 0.4)));
  CHECK(means[2] == doctest::Approx(std::sqrt(0.5 * 0.6)));

  const std::string table = bench::pair_table(rep);
  INFO(table);
  CHECK(table.find("2.00x 0.50-2.00") != std::string::npos);
  CHECK(table.find("0.70x 0.40-0.90") != std::string::npos);
  CHECK(table.find("0.55-1.34") != std::string::npos);  // sqrt(0.5*0.6) .. sqrt(2*0.9)
  CHECK(table.find("below 1.00x and behind in every round:\n    the pair, slow: 0.70x (0 of 4 rounds won)") !=
        std::string::npos);
  CHECK(table.find("ahead in some rounds") == std::string::npos);

  const std::string json = bench::json(rep);
  CHECK(result_line(json, "slow", "fx").find("\"vs_libfuse_rounds\": [0.4, 0.9, 0.6, 0.8]") != std::string::npos);
  CHECK(result_line(json, "slow", "lf").find("vs_libfuse_rounds") == std::string::npos);
  CHECK(json.find("\"geometric_mean_rounds\": [") != std::string::npos);
}

TEST_CASE("the report lists a cell below 1.00x that won some rounds apart, and pairs no rounds that do not line up") {
  auto rep = made_up_report({90, 110, 95, 80}, {100, 100, 100, 100}, {100, 100}, {100, 100, 100});
  const std::string table = bench::pair_table(rep);
  INFO(table);
  CHECK(table.find("below 1.00x, but ahead in some rounds:\n    the pair, fast: 0.93x (1 of 4 rounds won)") !=
        std::string::npos);
  CHECK(table.find("behind in every round") == std::string::npos);
  // slow's runs do not line up (2 against 3): its ratio of medians stands, with no range, and the
  // pair's mean has no rounds.
  const bench::cell* slow = rep.find("slow", "fx");
  REQUIRE(slow);
  CHECK(rep.round_ratios(*slow, "lf").empty());
  CHECK(rep.round_geometric_means(rep.pairs[0]).empty());
  CHECK(table.find(" 1.00x\n") != std::string::npos);
}

TEST_CASE("the report sets the server CPU each side spent beside each pair's ratios, and beside each cell behind") {
  // slow: fx is behind in every round while its server spends less (80 against 100 us per
  // operation): the gap is not its own work. fast: fx's server spends 3x what lf's does.
  auto rep = made_up_report({200, 200, 50, 200}, {100, 100, 100, 100}, {40, 90, 60, 80}, {100, 100, 100, 100});
  rep.at("slow", "fx").cpu.values = {80e3, 80e3, 80e3, 80e3};
  rep.at("slow", "lf").cpu.values = {100e3, 100e3, 100e3, 100e3};
  rep.at("fast", "fx").cpu.values = {30, 30, 30, 30};  // ns: under 0.1 us, the server took no part
  rep.at("fast", "lf").cpu.values = {20e3, 20e3, 20e3, 20e3};
  const bench::cell* slow = rep.find("slow", "fx");
  const bench::cell* fast = rep.find("fast", "fx");
  REQUIRE(slow);
  REQUIRE(fast);
  CHECK(rep.cpu_ratio(*slow, "lf") == doctest::Approx(1.25));
  CHECK(rep.cpu_ratio(*fast, "lf") < 0);
  CHECK(rep.cpu_geometric_mean(rep.pairs[0]) == std::pair<double, unsigned>{1.25, 1});

  const std::string table = bench::pair_table(rep);
  INFO(table);
  const auto cpu = table.find("server CPU per operation, libfuse / fusexx");
  REQUIRE(cpu != std::string::npos);
  // One row per throughput workload (mount time has no CPU per operation), then the mean.
  CHECK(table.find("mount time", cpu) == std::string::npos);
  CHECK(table.find("  fast", cpu) != std::string::npos);
  CHECK(table.find("1.25x\n", cpu) != std::string::npos);
  CHECK(table.find("1.25x (1 cells)", cpu) != std::string::npos);
  CHECK(table.find("the pair, slow: 0.70x (0 of 4 rounds won); server CPU 80.0 against 100.0 us/op") !=
        std::string::npos);

  // fast gets its CPU made up to 3x lf's: now it counts, and the mean is of both.
  rep.at("fast", "fx").cpu.values = {60e3, 60e3, 60e3, 60e3};
  CHECK(rep.cpu_ratio(*fast, "lf") == doctest::Approx(1.0 / 3));
  CHECK(rep.cpu_geometric_mean(rep.pairs[0]).first == doctest::Approx(std::sqrt(1.25 / 3)));
  const std::string json = bench::json(rep);
  CHECK(result_line(json, "slow", "fx").find("\"cpu_vs_libfuse\": 1.25") != std::string::npos);
  CHECK(result_line(json, "slow", "lf").find("cpu_vs_libfuse") == std::string::npos);
  CHECK(json.find("\"cpu_geometric_mean\": 0.645") != std::string::npos);
}

namespace {
// Burns `ms` milliseconds of this process's own CPU time.
void burn_cpu(long ms) {
  timespec start{}, now{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &start);
  volatile std::uint64_t x = 0;
  do {
    for (int i = 0; i < 100000; ++i) x = x + i;
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
}
}  // namespace

TEST_CASE("a server's CPU counts its descendants: running (forked by any thread) and reaped") {
  // A process standing for a server: it forks, from a second thread, a child
  // that forks a grandchild (a supervised server and its checkpoint child).
  // The grandchild burns 150 ms and is reaped by the child, which burns 150
  // ms of its own and says so on `done`; once told on `go`, it ends, and the
  // thread reaps it, says so, and ends when told.
  int go[2], done[2];
  REQUIRE(::pipe(go) == 0);
  REQUIRE(::pipe(done) == 0);
  const pid_t server = ::fork();
  REQUIRE(server >= 0);
  if (server == 0) {
    // Only the test writes `go` and reads `done`: if it dies, the reads
    // below see end-of-file and nothing here is left waiting.
    ::close(go[1]);
    ::close(done[0]);
    std::thread([&] {
      char c = 1;
      const pid_t child = ::fork();
      if (child == 0) {
        const pid_t grandchild = ::fork();
        if (grandchild == 0) {
          burn_cpu(150);
          ::_exit(0);
        }
        ::waitpid(grandchild, nullptr, 0);
        burn_cpu(150);
        (void)::write(done[1], &c, 1);
        (void)::read(go[0], &c, 1);
        ::_exit(0);
      }
      ::waitpid(child, nullptr, 0);
      (void)::write(done[1], &c, 1);
      (void)::read(go[0], &c, 1);
    }).join();
    ::_exit(0);
  }
  char c = 1;
  // The child runs: 300 ms below `server`, none in its own threads, and
  // none in a child it has reaped. (Reaped time comes in clock ticks, 10 ms
  // here, truncated: the bounds leave room for that, and still fail if the
  // child or the grandchild were not counted.)
  REQUIRE(::read(done[0], &c, 1) == 1);
  CHECK(bench::server_process::cpu_ns_of(server) >= 250'000'000);
  CHECK(bench::server_process::reaped_children_ns(server) < 50'000'000);
  // The child has ended and been reaped: its CPU and the grandchild's are
  // now `server`'s cutime and cstime.
  REQUIRE(::write(go[1], &c, 1) == 1);
  REQUIRE(::read(done[0], &c, 1) == 1);
  CHECK(bench::server_process::reaped_children_ns(server) >= 250'000'000);
  CHECK(bench::server_process::cpu_ns_of(server) >= 250'000'000);
  REQUIRE(::write(go[1], &c, 1) == 1);
  int status = 0;
  REQUIRE(::waitpid(server, &status, 0) == server);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  for (int fd : {go[0], go[1], done[0], done[1]}) ::close(fd);
}
