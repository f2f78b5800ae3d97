// The benchmark suite runs end to end on a tiny workload: every subject it was
// built with mounts, serves every workload and is stopped; the JSON, the text
// table and the chart are written. Figures are never checked, only that they
// exist.
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "tests/support/process.hpp"

using namespace fusexx::testing;

namespace {

const std::vector<std::string> subjects = {"native", "libfuse", "classic", "io_uring", "passthrough", "memfs"};
const std::vector<std::string> workloads = {
    "stat storm, 1 thread",         "stat storm, 2 threads",          "create + unlink",
    "readdir of the big directory", "4 KiB random read (O_DIRECT)",   "4 KiB random write (O_DIRECT)",
    "sequential read, 1 MiB (O_DIRECT)", "sequential write, 1 MiB (O_DIRECT)"};

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
  for (auto& s : subjects) {
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
    }
    if (s != "native") CHECK(has_number(result_line(json, "mount time", s), "median"));
  }
  const std::string table = slurp(out + "/results.txt");
  for (auto& w : workloads) CHECK(table.find(w) != std::string::npos);
  if (r.out.find("no chart:") == std::string::npos) CHECK(slurp(out + "/chart.png").starts_with("\x89PNG"));
  // Every server unmounted itself; the source trees are gone.
  CHECK(no_fuse_mounts_under("/tmp/fusexx-bench-mnt-"));
  CHECK(list_dir(dir.path()) == std::vector<std::string>{".", "..", "out"});
}

TEST_CASE("bad arguments are refused with the usage text") {
  const std::string suite = example_binary("FUSEXX_SUITE");
  auto r = run({suite, "--runs", "0"}, true);
  CHECK(r.status == 2);
  CHECK(r.out.find("usage: suite") != std::string::npos);
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
