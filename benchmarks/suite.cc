// The benchmark suite: every subject mounted in turn over the same native
// directory, the same bounded workloads, figures side by side.
//
//   bazel run -c opt //benchmarks:suite                  # a few minutes; or: tools/dev bench
//   bazel run -c opt //benchmarks:suite -- --seconds 0.3 --runs 5 --only io_uring,libfuse-passthrough-uring
//   bazel run -c opt //benchmarks:suite -- --libfuse ~/libfuse/build     # libfuse 3.19 from elsewhere
//   bazel run -c opt //benchmarks:suite -- --program /path/to/myfs --only native,memfs,myfs
//   bazel run -c opt //benchmarks:suite -- --mirror /path/to/mymirror --only native,io_uring,mymirror
//
// Subjects: the native directory (the limit), and five pairs of a fusexx
// example and the libfuse 3.19 example a user would pick instead
// (benchmarks/libfuse.hpp): memfs vs memfs_ll on the classic transport and on
// io_uring, passthrough vs passthrough_hp on both, and both with kernel
// passthrough. Mount options are the same on both sides; entry and attribute
// timeouts are 0 everywhere, so every stat is a real round trip; file I/O is
// O_DIRECT. The suite goes round --runs times, starting every subject afresh
// each round (--mounts times: each a sample of its mount time) for one run of
// each cell (median and spread over the rounds),
// server CPU per operation comes from the scheduler's account of the server's
// threads, and instructions per operation from callgrind on a fixed count.
// Output: the table on stdout, and results.json, results.txt and chart.png
// in --out (default ./bench-results in the directory bazel run was called from).
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "benchmarks/libfuse.hpp"
#include "benchmarks/load.hpp"
#include "benchmarks/report.hpp"
#include "benchmarks/runfiles.hpp"
#include "benchmarks/subjects.hpp"
#include "benchmarks/workloads.hpp"

namespace {

using namespace bench;

struct settings {
  double seconds = 0.5;
  unsigned runs = 4;  // even: each side of a pair goes first in half the rounds
  // Starts per subject and round, each a sample of its mount time: one start
  // is over in a few ms, and four samples could not tell 10 % from noise.
  // Default 5; 2 with --tiny.
  std::optional<unsigned> mounts;
  bool tiny = false;
  bool instructions = true;
  unsigned instruction_ops = 2000;
  // Where the native tree (passthrough's source) is made: a disk, as users'
  // sources are; --dir /dev/shm measures over tmpfs.
  std::string dir_parent = "/var/tmp";
  std::string libfuse = libfuse_build::default_dir();  // --libfuse
  std::string out;
  std::set<std::string> only;  // subject names; empty: all
  std::optional<std::regex> cells;  // --cells: the workloads whose names it finds; none: all
  std::vector<std::string> programs;  // --program: more subjects, each filled through its mount
  std::vector<std::string> mirrors;   // --mirror: more subjects, each serving the native tree
};

const char* usage =
    "usage: suite [--seconds S] [--runs N] [--mounts M] [--tiny] [--no-instructions] [--dir PARENT] [--out DIR]\n"
    "             [--libfuse DIR] [--only SUBJECT[,SUBJECT...]] [--cells REGEX] [--program PATH]... [--mirror PATH]...\n"
    "  --seconds S        length of one timed run (default 0.5)\n"
    "  --runs N           rounds: each mounts every subject afresh for one timed run of each cell; the\n"
    "                     median and spread over them are reported (default 4; odd rounds go in reverse,\n"
    "                     so with an even N each side of a pair goes first as often as the other)\n"
    "  --mounts M         starts of each subject per round, each a sample of its mount time; the last one\n"
    "                     serves the round's cells (default 5; with --tiny 2)\n"
    "  --cells REGEX      only the workloads whose names REGEX finds, e.g. 'stat storm|create' (mount time\n"
    "                     is always measured)\n"
    "  --tiny             a small tree and short runs (a smoke test, not a measurement)\n"
    "  --no-instructions  skip the callgrind phase (instructions per operation)\n"
    "  --dir PARENT       where the native directory is made (default /var/tmp, a disk here; /dev/shm: tmpfs)\n"
    "  --libfuse DIR      a libfuse 3.19 build directory (example/memfs_ll, example/passthrough_hp, lib/):\n"
    "                     the libfuse subjects (default: libfuse-3.19.0-rc0 in $FUSEXX_ANCHORS, else in\n"
    "                     ../shared/anchors beside the workspace, if there)\n"
    "  --out DIR          where results.json, results.txt and chart.png go\n"
    "  --only LIST        native; fusexx's memfs-classic, memfs-supervised (classic, -o supervise: crash\n"
    "                     recovery), memfs (io_uring), classic, passthrough-supervised, io_uring (passthrough),\n"
    "                     passthrough (kernel passthrough); libfuse 3.19's libfuse-memfs, libfuse-memfs-uring,\n"
    "                     libfuse-passthrough, libfuse-passthrough-uring, libfuse-kpassthrough; a --program's\n"
    "                     name; also (only when named) classic-nostats, io_uring-nostats (-o stats=off) and\n"
    "                     libfuse-3.14 (a passthrough on Debian's libfuse 3.14)\n"
    "  --program PATH     also measure the filesystem PATH serves, named after its file name (NAME-2\n"
    "                     if taken): run as `PATH -f MOUNTPOINT` (its own cache timeouts apply), the\n"
    "                     suite writes its tree through the mount, as for memfs (so it must hold files)\n"
    "  --mirror PATH      also measure PATH as a mirror of the native tree, as passthrough is: run as\n"
    "                     `PATH -f SOURCE MOUNTPOINT`; a read-only mirror gets the reading workloads'\n"
    "                     figures, and the writing ones say why they were not measured\n";

using bench::runfile;

// The workloads --cells chose (all without it).
std::vector<workload> chosen_workloads(const settings& cfg) {
  auto all = workloads();
  if (cfg.cells) std::erase_if(all, [&](const workload& w) { return !std::regex_search(w.name, *cfg.cells); });
  return all;
}

// Subjects measured only when --only names them.
bool opt_in(const std::string& name) { return name.ends_with("-nostats") || name == "libfuse-3.14"; }
bool selected(const settings& cfg, const std::string& name) {
  return cfg.only.empty() ? !opt_in(name) : cfg.only.contains(name);
}

std::vector<subject> subjects(const char* argv0, const std::vector<std::string>& programs,
                              const std::vector<std::string>& mirrors, const libfuse_build& libfuse,
                              const std::string& libfuse_error) {
  const std::string pt = runfile(argv0, "examples/passthrough");
  const std::string lf = runfile(argv0, "benchmarks/libfuse_passthrough");
  const std::string mf = runfile(argv0, "examples/memfs");
  // `versus`: the libfuse subject it is paired with, and `pair` the pair's name.
  auto fusexx_pt = [&](std::string name, std::string extra, std::string versus = "", std::string pair = "") {
    subject x{std::move(name), pt, {"-f", "-o", "source={source},timeout=0," + extra, "{mnt}"}, false, ""};
    x.versus = std::move(versus);
    x.pair = std::move(pair);
    return x;
  };
  auto fusexx_memfs = [&](std::string name, std::string transport, std::string versus = "", std::string pair = "",
                          std::string extra = "") {
    // local_locks: the kernel keeps the locks, as for memfs_ll, which
    // implements none (so neither side gets a FLUSH per close).
    subject x{std::move(name), mf,
              {"-f", "-o", "entry_timeout=0,attr_timeout=0,local_locks,transport=" + transport + extra, "{mnt}"},
              true, ""};
    x.versus = std::move(versus);
    x.pair = std::move(pair);
    return x;
  };
  // libfuse 3.19's examples, mounted as fusexx's examples mount themselves:
  // default_permissions (the kernel checks permissions, so it revalidates
  // each directory of a path: a GETATTR per component at timeout 0) and
  // allow_other; entry and attribute timeouts 0 (memfs_ll's default,
  // passthrough_hp's --nocache).
  const std::string same = "default_permissions,allow_other";
  auto libfuse_subject = [&](std::string name, const char* program, std::vector<std::string> args, bool in_memory) {
    subject x{std::move(name), libfuse.program(program), std::move(args), in_memory, libfuse_error};
    x.env = {libfuse.library_path()};
    return x;
  };
  const std::vector<std::string> hp{"--foreground", "--nocache"};
  auto with = [](std::vector<std::string> a, std::vector<std::string> more) {
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  std::vector<subject> s{
      {"native", "", {}, false, ""},
      fusexx_memfs("memfs-classic", "classic", "libfuse-memfs", "memfs classic"),
      libfuse_subject("libfuse-memfs", "memfs_ll", {"-f", "-o", same, "{mnt}"}, true),
      // Crash-tolerant memfs (-o supervise: a keeper, every change journaled;
      // docs/restart.md): what crash recovery costs, beside memfs-classic.
      fusexx_memfs("memfs-supervised", "classic", "", "", ",supervise"),
      fusexx_memfs("memfs", "uring", "libfuse-memfs-uring", "memfs io_uring"),
      libfuse_subject("libfuse-memfs-uring", "memfs_ll", {"-f", "-o", "io_uring," + same, "{mnt}"}, true),
      fusexx_pt("classic", "transport=classic", "libfuse-passthrough", "passthrough classic"),
      // Crash-tolerant passthrough (-o supervise: a keeper sharing its fd
      // table, an intent and an outcome journaled per change): its cost
      // beside classic.
      fusexx_pt("passthrough-supervised", "transport=classic,supervise"),
      libfuse_subject("libfuse-passthrough", "passthrough_hp",
                      with(hp, {"--nopassthrough", "-o", same, "{source}", "{mnt}"}), false),
      fusexx_pt("io_uring", "transport=uring", "libfuse-passthrough-uring", "passthrough io_uring"),
      libfuse_subject("libfuse-passthrough-uring", "passthrough_hp",
                      with(hp, {"--nopassthrough", "-o", "io_uring," + same, "{source}", "{mnt}"}), false),
      // Kernel passthrough (reads and writes go to the backing file). fusexx
      // asks for killpriv_v2, which spares each write the kernel's
      // security.capability GETXATTR (docs/passthrough.md); libfuse does not
      // ask for it by default and passthrough_hp does not either.
      fusexx_pt("passthrough", "transport=uring,passthrough,killpriv_v2", "libfuse-kpassthrough", "kernel passthrough"),
      libfuse_subject("libfuse-kpassthrough", "passthrough_hp", with(hp, {"-o", "io_uring," + same, "{source}", "{mnt}"}),
                      false),
      // Only when named in --only: the transports without per-opcode
      // statistics (fusexx/stats.hpp), to see what counting costs in one run.
      fusexx_pt("classic-nostats", "transport=classic,stats=off"),
      fusexx_pt("io_uring-nostats", "transport=uring,stats=off"),
      // Only when named in --only: a passthrough written here against
      // Debian's libfuse 3.14 (benchmarks/libfuse_passthrough.cc), the
      // baseline before libfuse 3.19's own examples were at hand; it still
      // tells what the distribution's libfuse does where no 3.19 build is.
      {"libfuse-3.14", lf, {"-f", "-o", "source={source},timeout=0," + same, "{mnt}"}, false, ""},
  };
  for (auto& x : s)
    if (x.name != "native" && x.program.empty()) x.unavailable = "its program was not built next to the suite";
  // Filesystems of one's own: served like memfs, from their own contents
  // (--program), or mirroring the native tree like passthrough (--mirror).
  auto own = [&](const std::string& p, std::vector<std::string> args, bool in_memory) {
    const std::string path = std::filesystem::absolute(p).lexically_normal().string();
    std::string name = std::filesystem::path(path).filename().string();
    auto taken = [&](const std::string& n) { return std::ranges::any_of(s, [&](auto& y) { return y.name == n; }); };
    for (int k = 2; taken(name); ++k) name = std::filesystem::path(path).filename().string() + "-" + std::to_string(k);
    subject x{name, path, std::move(args), in_memory, ""};
    if (::access(path.c_str(), X_OK) != 0) x.unavailable = fmt::format("{}: {}", path, std::strerror(errno));
    s.push_back(std::move(x));
  };
  for (const auto& p : programs) own(p, {"-f", "{mnt}"}, true);
  for (const auto& p : mirrors) own(p, {"-f", "{source}", "{mnt}"}, false);
  return s;
}

void progress(const std::string& line) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

// A passthrough server holds an fd per node the kernel knows (libfuse's and
// fusexx's alike), and "unlink" has 5 000 files made before each run: the
// servers inherit this limit, raised as far as the suite may (root: up to
// fs.nr_open, at most 2^20; others: the soft limit to the hard one).
void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = rlim_t{1} << 20;
  if (std::ifstream in("/proc/sys/fs/nr_open"); in) {
    rlim_t most = 0;
    if (in >> most && most < want) want = most;
  }
  if (rl.rlim_max < want) {
    rlimit more{want, want};
    if (::setrlimit(RLIMIT_NOFILE, &more) == 0) return;
  }
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
}

// One run of one workload on `root`, after a short warm-up, added to its cell.
void measure_run(report& rep, const settings& cfg, const tree_shape& shape, const workload& w, const subject& s,
                 const std::string& root, server_process* server) {
  cell& c = rep.at(w.name, s.name);
  c.unit = w.unit;
  if (!c.error.empty()) return;  // it failed in an earlier round
  auto fail = [&](std::string why) {
    c.error = std::move(why);
    c.figure.values.clear();
    c.cpu.values.clear();
  };
  std::vector<io_thread> io(w.threads);
  if (w.uses_big_file)
    for (auto& t : io)
      if (auto e = open_io_thread(root, t, w.writes_big_file); !e.empty()) fail(e);
  operation op = [&](unsigned t, std::uint64_t i) { return w.op(root, shape, io[t], t, i); };
  const std::uint64_t max_ops = w.ops_per_run ? w.ops_per_run(shape) : 0;
  auto prepare = [&] {
    if (!c.error.empty()) return false;
    if (!w.before_run) return true;
    if (auto e = w.before_run(root, shape, w.threads); !e.empty()) fail(e);
    return c.error.empty();
  };
  // The warm-up and the run must end within this, or the connection is aborted.
  if (server) server->arm(std::chrono::duration<double>((cfg.seconds + 1) * 2 + 30 + (max_ops ? 300 : 0)));
  if (prepare()) run_for(op, w.threads, std::min(cfg.seconds, 0.2), max_ops);  // warm caches and server threads
  if (prepare()) {
    const std::uint64_t cpu_before = server ? server->cpu_ns() : 0;
    const run_result run = run_for(op, w.threads, cfg.seconds, max_ops);
    const std::uint64_t cpu_after = server ? server->cpu_ns() : 0;
    if (run.failed) {
      fail(fmt::format("an operation failed: {}", std::strerror(run.error)));
    } else {
      c.figure.values.push_back(run.rate() * w.per_op(shape));
      if (server && run.ops > 0)
        c.cpu.values.push_back(static_cast<double>(cpu_after - cpu_before) / static_cast<double>(run.ops));
    }
  }
  if (w.after_run) w.after_run(root);
  for (auto& t : io)
    if (t.fd >= 0) ::close(t.fd);
  if (server) server->disarm();
  progress(fmt::format("  {:<36} {:>16}", w.name, c.error.empty() ? human(c.figure.values.back(), w.unit) : c.error));
}

std::string make_dir(const std::string& parent, const std::string& prefix) {
  std::string tmpl = parent + "/" + prefix + "XXXXXX";
  if (!::mkdtemp(tmpl.data())) return "";
  return tmpl;
}

std::string probe_of(const subject& s) { return s.in_memory ? "" : "s/f0"; }

// One round of one subject: --mounts fresh starts (each a sample of its mount
// time; all but the last stopped again at once), the tree written through the
// last if it keeps its own contents, then one run of every workload, and the
// unmount.
void measure_round(report& rep, const settings& cfg, const tree_shape& shape, const subject& s,
                   const std::string& source, unsigned round) {
  const auto all = chosen_workloads(cfg);
  const std::string of = fmt::format("round {}/{}", round + 1, cfg.runs);
  if (s.program.empty()) {
    progress(fmt::format("[{}] {}: the native directory {}", s.name, of, source));
    for (auto& w : all) measure_run(rep, cfg, shape, w, s, source, nullptr);
    return;
  }
  const std::string mnt = make_dir("/tmp", "fusexx-bench-mnt-");
  cell& mount = rep.at("mount time", s.name);
  mount.unit = "ms";
  mount.lower_is_better = true;
  std::chrono::duration<double> took{};
  std::string error;
  std::unique_ptr<server_process> server;
  for (unsigned i = 0; i < *cfg.mounts; ++i) {
    server.reset();  // the start before stops (and unmounts) first
    server = server_process::start(s, source, mnt, probe_of(s), took, error);
    if (!server) break;
    mount.figure.values.push_back(took.count());
  }
  if (!server) {
    mount.error = error;
    mount.figure.values.clear();
    rep.unavailable[s.name] = error;
    progress(fmt::format("[{}] not measured: {}", s.name, error));
  } else {
    progress(fmt::format("[{}] {}: mounted in {:.1f} ms (the last of {} starts; pid {})", s.name, of,
                         took.count() * 1e3, *cfg.mounts, server->pid()));
    server->arm(std::chrono::minutes(5));
    std::string fill_error = s.in_memory ? prepare_tree(mnt, shape) : "";
    server->disarm();
    if (!fill_error.empty()) {
      rep.unavailable[s.name] = "filling it failed: " + fill_error;
    } else {
      for (auto& w : all) measure_run(rep, cfg, shape, w, s, mnt, server.get());
    }
  }
  ::rmdir(mnt.c_str());
}

// Instructions the server executes per operation, from callgrind: the same
// subject run twice under valgrind, once with no operations and once with
// `n`, so start-up and shutdown cancel out.
std::optional<std::uint64_t> callgrind_total(const subject& s, const std::string& source, const std::string& out,
                                             const std::function<bool(const std::string&)>& load, std::string& error) {
  const std::string log = out + "/callgrind-" + s.name + ".log";
  subject under{s.name, "/usr/bin/valgrind",
                {"--tool=callgrind", "--callgrind-out-file=/dev/null", "--log-file=" + log, s.program}, false, ""};
  under.args.insert(under.args.end(), s.args.begin(), s.args.end());
  under.env = s.env;  // libfuse's examples find their library through it
  // fusexx's automatic choice would pick io_uring, which valgrind cannot run;
  // the kernel-passthrough subject asks for it, and gets /dev/fuse here.
  if (s.program.ends_with("examples/passthrough"))
    for (auto& a : under.args)
      if (a.starts_with("source=")) {
        if (!a.contains("transport=")) a += ",transport=classic";
        else if (auto at = a.find("transport=uring"); at != std::string::npos) a.replace(at, 15, "transport=classic");
      }
  const std::string mnt = make_dir("/tmp", "fusexx-bench-mnt-");
  std::chrono::duration<double> took{};
  bool ok = false;
  {
    auto server = server_process::start(under, source, mnt, probe_of(s), took, error, std::chrono::seconds(90));
    if (server) {
      server->arm(std::chrono::minutes(2));
      ok = load(mnt);
      if (!ok) error = fmt::format("an operation failed: {}", std::strerror(errno));
    }
  }  // stopped: valgrind writes its summary at exit
  ::rmdir(mnt.c_str());
  if (!ok) return std::nullopt;
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  std::smatch m;
  const std::string t = text.str();
  if (!std::regex_search(t, m, std::regex(R"(Collected\s*:\s*([0-9]+))"))) {
    error = "no instruction count in " + log;
    return std::nullopt;
  }
  std::filesystem::remove(log);
  return std::stoull(m[1]);
}

void measure_instructions(report& rep, const settings& cfg, const tree_shape& shape, const subject& s,
                          const std::string& source) {
  if (s.program.empty() || s.in_memory || rep.unavailable.contains(s.name)) return;
  const bool ring = s.name.starts_with("io_uring") ||
                    std::ranges::any_of(s.args, [](const std::string& a) { return a.starts_with("io_uring"); });
  if (ring) {
    // Valgrind 3.19 does not model FUSE's io_uring commands (unhandled
    // ioctls, ring memory it does not know the kernel writes), so a server
    // under it never answers on the ring.
    progress(fmt::format("  {:<12} instructions/op: not measured (valgrind cannot run FUSE over io_uring)", s.name));
    return;
  }
  const unsigned n = cfg.instruction_ops;
  std::string error;
  auto idle = callgrind_total(s, source, cfg.out, [](const std::string&) { return true; }, error);
  std::optional<std::uint64_t> stats, reads;
  if (idle) {
    stats = callgrind_total(s, source, cfg.out,
                            [&](const std::string& mnt) {
                              for (unsigned i = 0; i < n; ++i) {
                                struct stat st;
                                if (::stat(fmt::format("{}/s/f{}", mnt, i % shape.stat_files).c_str(), &st))
                                  return false;
                              }
                              return true;
                            },
                            error);
    reads = callgrind_total(s, source, cfg.out,
                            [&](const std::string& mnt) {
                              io_thread io;
                              if (!open_io_thread(mnt, io, false).empty()) return false;
                              bool ok = true;
                              for (unsigned i = 0; i < n && ok; ++i)
                                ok = ::pread(io.fd, io.buffer.get(), 4096, random_block(0, i, shape.big_size)) == 4096;
                              ::close(io.fd);
                              return ok;
                            },
                            error);
  }
  auto per_op = [&](const std::optional<std::uint64_t>& busy) {
    return idle && busy && *busy > *idle ? static_cast<double>(*busy - *idle) / n : -1.0;
  };
  if (idle) {
    rep.at("stat storm, 1 thread", s.name).instructions_per_op = per_op(stats);
    rep.at("4 KiB random read (O_DIRECT)", s.name).instructions_per_op = per_op(reads);
  }
  progress(fmt::format("  {:<12} instructions/op: stat {}, 4 KiB read {}{}", s.name,
                       idle && stats ? fmt::format("{:.0f}", per_op(stats)) : "-",
                       idle && reads ? fmt::format("{:.0f}", per_op(reads)) : "-", error.empty() ? "" : "  (" + error + ")"));
}

}  // namespace

int main(int argc, char** argv) {
  settings cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n%s", a.c_str(), usage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seconds") cfg.seconds = std::atof(value().c_str());
    else if (a == "--runs") cfg.runs = static_cast<unsigned>(std::atoi(value().c_str()));
    else if (a == "--mounts") cfg.mounts = static_cast<unsigned>(std::atoi(value().c_str()));
    else if (a == "--tiny") cfg.tiny = true;
    else if (a == "--no-instructions") cfg.instructions = false;
    else if (a == "--dir") cfg.dir_parent = value();
    else if (a == "--libfuse") {
      std::string d = value();
      const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
      if (!d.starts_with('/') && cwd) d = std::string(cwd) + "/" + d;
      cfg.libfuse = d;
    }
    else if (a == "--out") cfg.out = value();
    else if (a == "--program" || a == "--mirror") {
      // Relative to where `bazel run` was called from, not to the runfiles tree.
      std::string p = value();
      const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
      if (!p.starts_with('/') && cwd) p = std::string(cwd) + "/" + p;
      (a == "--program" ? cfg.programs : cfg.mirrors).push_back(p);
    }
    else if (a == "--cells") {
      try {
        cfg.cells.emplace(value());
      } catch (const std::regex_error& e) {
        std::fprintf(stderr, "--cells: not a regular expression: %s\n", e.what());
        return 2;
      }
    }
    else if (a == "--only") {
      std::stringstream list(value());
      for (std::string s; std::getline(list, s, ',');) cfg.only.insert(s);
    } else {
      std::fprintf(stderr, "%s", usage);
      return a == "-h" || a == "--help" ? 0 : 2;
    }
  }
  if (chosen_workloads(cfg).empty()) {
    std::fprintf(stderr, "--cells: no workload's name matches\n");
    return 2;
  }
  if (!cfg.mounts) cfg.mounts = cfg.tiny ? 2 : 5;
  if (cfg.seconds <= 0 || cfg.runs == 0 || cfg.mounts == 0) {
    std::fprintf(stderr, "--seconds, --runs and --mounts must be positive\n%s", usage);
    return 2;
  }
  if (cfg.tiny) cfg.instruction_ops = 100;
  if (cfg.out.empty()) {
    const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
    cfg.out = std::string(cwd ? cwd : ".") + "/bench-results";
  }
  std::filesystem::create_directories(cfg.out);
  cfg.out = std::filesystem::absolute(cfg.out).lexically_normal().string();
  const tree_shape shape = cfg.tiny ? tree_shape::tiny() : tree_shape{};

  raise_fd_limit();
  report rep;
  libfuse_build libfuse;
  const std::string libfuse_error = libfuse.open(cfg.libfuse, "/tmp");
  std::vector<subject> all = subjects(argv[0], cfg.programs, cfg.mirrors, libfuse, libfuse_error);
  for (auto& s : all) {
    if (!selected(cfg, s.name)) continue;
    rep.subjects.push_back(s.name);
    if (!s.unavailable.empty()) rep.unavailable[s.name] = s.unavailable;
  }
  // fusexx / libfuse per pair, when both are measured.
  for (auto& s : all)
    if (!s.versus.empty() && selected(cfg, s.name) && selected(cfg, s.versus))
      rep.pairs.push_back({s.pair, s.name, s.versus});
  rep.workloads.push_back("mount time");
  for (auto& w : chosen_workloads(cfg)) rep.workloads.push_back(w.name);
  utsname u{};
  ::uname(&u);
  rep.facts = {{"kernel", u.release},
               {"cpus", std::to_string(std::thread::hardware_concurrency())},
               {"seconds_per_run", fmt::format("{}", cfg.seconds)},
               {"runs_per_cell", std::to_string(cfg.runs)},
               {"mounts_per_round", std::to_string(*cfg.mounts)},
               {"native_parent", cfg.dir_parent},
               {"libfuse", libfuse_error.empty() ? libfuse.dir() : "not measured: " + libfuse_error},
               {"mount_semantics",
                "every FUSE subject default_permissions,allow_other, entry and attribute timeouts 0; locks kept "
                "by the kernel on both memfs sides (fusexx's memfs -o local_locks; memfs_ll implements none); "
                "fusexx's kernel passthrough adds killpriv_v2, libfuse's does not"},
               {"stat_files", std::to_string(shape.stat_files)},
               {"dir_entries", std::to_string(shape.dir_entries)},
               {"big_file_bytes", std::to_string(shape.big_size)}};

  const std::string source = make_dir(cfg.dir_parent, "fusexx-bench-src-");
  const std::string empty = make_dir(cfg.dir_parent, "fusexx-bench-empty-");
  if (source.empty() || empty.empty()) {
    std::fprintf(stderr, "suite: cannot make a directory in %s: %s\n", cfg.dir_parent.c_str(), std::strerror(errno));
    return 1;
  }
  progress(fmt::format("preparing {} ({} stat targets, {} directory entries, {} MiB file)", source, shape.stat_files,
                       shape.dir_entries, shape.big_size >> 20));
  int status = 0;
  if (auto e = prepare_tree(source, shape); !e.empty()) {
    std::fprintf(stderr, "suite: %s\n", e.c_str());
    status = 1;
  } else {
    std::vector<const subject*> order;
    for (auto& s : all) {
      if (!selected(cfg, s.name)) continue;
      if (!s.unavailable.empty()) progress(fmt::format("[{}] not measured: {}", s.name, s.unavailable));
      else order.push_back(&s);
    }
    // Rounds: each subject is mounted afresh once per round and gets one run
    // of every cell, so a cell's runs are spread over the whole suite, and a
    // drift of the machine (its other guests) falls on both sides of a pair
    // alike. Odd rounds go in reverse, so each side of a pair goes first in
    // half of them: on a disk, the second of two subjects reading the same
    // blocks finds them in the host's cache (fio, passthrough io_uring, 4 KiB
    // writes: whichever of fusexx and libfuse went last was 10-30 % faster).
    for (unsigned round = 0; round < cfg.runs; ++round) {
      for (const subject* s : order)
        if (!rep.unavailable.contains(s->name)) measure_round(rep, cfg, shape, *s, s->in_memory ? empty : source, round);
      std::ranges::reverse(order);
    }
    if (cfg.instructions) {
      if (::access("/usr/bin/valgrind", X_OK) != 0) {
        rep.facts["instructions"] = "not measured: valgrind is not installed";
      } else {
        progress(fmt::format("server instructions per operation (callgrind, {} operations) ...", cfg.instruction_ops));
        for (auto& s : all)
          if (selected(cfg, s.name)) measure_instructions(rep, cfg, shape, s, source);
      }
    }
  }
  std::filesystem::remove_all(source);
  std::filesystem::remove_all(empty);

  const std::string text = table(rep);
  std::printf("%s", text.c_str());
  std::ofstream(cfg.out + "/results.txt") << text;
  std::ofstream(cfg.out + "/results.json") << json(rep);
  const std::string chart_error = chart(rep, cfg.out, cfg.out + "/chart.png");
  std::printf("\nwritten: %s/results.json, %s/results.txt%s\n", cfg.out.c_str(), cfg.out.c_str(),
              chart_error.empty() ? (", " + cfg.out + "/chart.png").c_str() : "");
  if (!chart_error.empty()) std::printf("no chart: %s\n", chart_error.c_str());
  return status;
}
