// fusexx-ctl: asks the fusexx server of a mount for its state, through the
// mount's control socket (fusexx/control.hpp).
//
//   fusexx-ctl MOUNTPOINT status            transport, negotiated INIT, threads/queues, uptime, ...
//   fusexx-ctl MOUNTPOINT stats             per opcode: count, errors, p50/p99/max, bytes in/out
//   fusexx-ctl MOUNTPOINT stats --watch [S] redrawn every S seconds (default 1), like top: rates
//                                           since the last refresh, one line per busy opcode
//   --json                                  the server's answer as it is
//
// Errors (not a FUSE mount, no fusexx server there, another user's server)
// are one line on stderr and exit status 1; a wrong command line is 2.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <thread>

#include <fmt/format.h>

#include <fusexx/control.hpp>

namespace {

using namespace fusexx;

std::string duration(std::uint64_t ns) {
  if (ns < 1000) return fmt::format("{}ns", ns);
  if (ns < 1'000'000) return fmt::format("{:.1f}us", ns / 1e3);
  if (ns < 1'000'000'000) return fmt::format("{:.1f}ms", ns / 1e6);
  return fmt::format("{:.2f}s", ns / 1e9);
}
std::string amount(double n) {
  const char* units[] = {"", "K", "M", "G", "T", "P"};
  int u = 0;
  while (n >= 1024 && u < 5) n /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f}", n) : fmt::format("{:.1f}{}", n, units[u]);
}

int usage(FILE* to) {
  std::fprintf(to,
               "usage: fusexx-ctl MOUNTPOINT status [--json]\n"
               "       fusexx-ctl MOUNTPOINT stats [--json] [--watch [SECONDS]]\n"
               "Asks the fusexx server of MOUNTPOINT (same user, or root) for its state.\n");
  return to == stdout ? 0 : 2;
}

int failed(const failure& f) {
  std::fprintf(stderr, "fusexx-ctl: %s\n", f.message.c_str());
  return 1;
}

void print_status(const control::status_info& s) {
  fmt::print("mountpoint   {}\n", s.mountpoint);
  fmt::print("filesystem   {} (pid {}, fusexx {}, connection {})\n", s.filesystem, s.pid, s.fusexx_version,
             s.connection);
  fmt::print("uptime       {:.1f} s\n", s.uptime_s);
  if (s.transport == "uring")
    fmt::print("transport    uring: {} queues x {} entries (and {} /dev/fuse reader)\n", s.queues, s.queue_depth,
               s.threads);
  else
    fmt::print("transport    classic: {} threads\n", s.threads);
  fmt::print("init         {}.{}, max_write {}, max_readahead {}, max_pages {}\n", s.proto_major, s.proto_minor,
             s.max_write, s.max_readahead, s.max_pages);
  fmt::print("flags        {}\n", fmt::join(s.flags, " "));
  fmt::print("statistics   {}\n", s.stats ? "on" : "off (-o stats=off)");
  if (s.restartable)
    fmt::print("handover     restartable: {} request(s), {} refused\n", s.handover_requests, s.handover_refused);
  else
    fmt::print("handover     not restartable: {} request(s) refused\n", s.handover_requests);
  if (s.supervised)
    fmt::print("supervised   checkpoint {} held by the keeper, {} bytes of journal since\n", s.checkpoint,
               s.journal_bytes);
}

void print_stats(const control::stats_info& s) {
  fmt::print("{:<16} {:>10} {:>8} {:>9} {:>9} {:>9} {:>10} {:>10}\n", "OPCODE", "COUNT", "ERRORS", "P50", "P99",
             "MAX", "BYTES_IN", "BYTES_OUT");
  // (INIT is answered by the INIT gate, not timed: no latency.)
  const auto latency = [](const control::stats_info::op& o, std::uint64_t ns) {
    return o.replies == 0 ? std::string("-") : duration(ns);
  };
  for (const auto& o : s.ops)
    fmt::print("{:<16} {:>10} {:>8} {:>9} {:>9} {:>9} {:>10} {:>10}\n", o.name, o.count, o.errors,
               latency(o, o.p50_ns), latency(o, o.p99_ns), latency(o, o.max_ns), amount(double(o.bytes_in)),
               amount(double(o.bytes_out)));
  fmt::print("requests {}  in_flight {}  errors {}  interrupts {}  forgets {}  malformed {}  uptime {:.1f} s{}\n",
             s.requests, s.in_flight, s.errors, s.interrupts, s.forgets, s.malformed, s.uptime_s,
             s.enabled ? "" : "  (per-opcode statistics are off: -o stats=off)");
}

// One screen of --watch: what happened since `before`.
void print_rates(const std::string& mountpoint, const control::stats_info& now, const control::stats_info& before,
                 unsigned refresh) {
  const double dt = std::max(1e-3, now.uptime_s - before.uptime_s);
  std::map<std::uint32_t, const control::stats_info::op*> old;
  for (const auto& o : before.ops) old[o.opcode] = &o;
  struct line {
    const control::stats_info::op* op;
    std::uint64_t count, errors, in, out;
    latency_histogram recent;  // the replies since `before`
  };
  std::vector<line> busy;
  for (const auto& o : now.ops) {
    const auto* b = old.contains(o.opcode) ? old[o.opcode] : nullptr;
    line l{&o, o.count - (b ? b->count : 0), o.errors - (b ? b->errors : 0), o.bytes_in - (b ? b->bytes_in : 0),
           o.bytes_out - (b ? b->bytes_out : 0), o.histogram};
    if (b)
      for (std::size_t i = 0; i < l.recent.size(); ++i) l.recent[i] -= std::min(l.recent[i], b->histogram[i]);
    if (l.count > 0) busy.push_back(l);
  }
  const auto latency = [](const line& l, unsigned p) {
    const std::uint64_t ns = latency_percentile(l.recent, p, l.op->max_ns);
    return ns == 0 ? std::string("-") : duration(ns);
  };
  std::ranges::sort(busy, [](const line& a, const line& b) { return a.count > b.count; });
  fmt::print("\x1b[H\x1b[2J");
  fmt::print("fusexx-ctl {}  refresh #{} every {:.1f} s  requests {:.0f}/s  in_flight {}  interrupts {}  forgets {}\n",
             mountpoint, refresh, dt, (now.requests - before.requests) / dt, now.in_flight, now.interrupts,
             now.forgets);
  fmt::print("{:<16} {:>10} {:>8} {:>9} {:>9} {:>9} {:>10} {:>10}\n", "OPCODE", "REQ/S", "ERR/S", "P50", "P99",
             "MAX*", "IN/S", "OUT/S");
  for (const auto& l : busy)
    fmt::print("{:<16} {:>10.1f} {:>8.1f} {:>9} {:>9} {:>9} {:>10} {:>10}\n", l.op->name, l.count / dt,
               l.errors / dt, latency(l, 50), latency(l, 99), l.op->replies ? duration(l.op->max_ns) : "-",
               amount(l.in / dt), amount(l.out / dt));
  if (busy.empty()) fmt::print("(idle)\n");
  fmt::print("* since the server started; the rest since the last refresh\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (std::ranges::find(args, "-h") != args.end() || std::ranges::find(args, "--help") != args.end())
    return usage(stdout);
  if (args.size() < 2) return usage(stderr);
  const std::string mountpoint(args[0]);
  const std::string_view what = args[1];
  if (what != "status" && what != "stats") return usage(stderr);
  bool json = false;
  std::optional<double> watch;
  for (std::size_t i = 2; i < args.size(); ++i) {
    if (args[i] == "--json") {
      json = true;
    } else if (args[i] == "--watch" && what == "stats") {
      watch = 1.0;
      if (i + 1 < args.size() && !args[i + 1].starts_with("-")) {
        try {
          watch = std::stod(std::string(args[++i]));
        } catch (...) {
          watch = 0;
        }
        if (*watch < 0.05) return usage(stderr);
      }
    } else {
      return usage(stderr);
    }
  }

  auto answer = control::query(mountpoint, what);
  if (!answer) return failed(answer.error());
  if (json && !watch) {
    fmt::print("{}\n", *answer);
    return 0;
  }
  if (what == "status") {
    auto s = control::parse_status(*answer);
    if (!s) return failed(s.error());
    print_status(*s);
    return 0;
  }
  auto s = control::parse_stats(*answer);
  if (!s) return failed(s.error());
  if (!watch) {
    print_stats(*s);
    return 0;
  }
  for (unsigned refresh = 1;; ++refresh) {
    std::this_thread::sleep_for(std::chrono::duration<double>(*watch));
    auto next_answer = control::query(mountpoint, what);
    if (!next_answer) return failed(next_answer.error());
    auto next = control::parse_stats(*next_answer);
    if (!next) return failed(next.error());
    if (json) fmt::print("{}\n", *next_answer), std::fflush(stdout);
    else print_rates(mountpoint, *next, *s, refresh);
    s = std::move(next);
  }
}
