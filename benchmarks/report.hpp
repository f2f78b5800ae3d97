#pragma once
// The suite's report: a table per workload (median, spread, ratio to native
// and to the libfuse baseline, server CPU per operation), the same figures as
// JSON, and a chart drawn by gnuplot when it is installed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "benchmarks/load.hpp"

namespace bench {

struct cell {
  std::string workload;
  std::string unit;
  bool lower_is_better = false;  // mount time
  std::string subject;
  samples figure;                // in `unit`, per run
  samples cpu;                   // server CPU per operation (ns), per run; none for native
  double instructions_per_op = -1;  // from callgrind on a fixed count; <0: not measured
  std::string error;             // why there is no figure
};

// A fusexx subject and the libfuse 3.19 subject it is measured against.
struct pairing {
  std::string label;    // "memfs io_uring"
  std::string fusexx;   // subject names
  std::string libfuse;
};

struct report {
  std::vector<std::string> subjects;   // in column order; "native" is the reference for all
  std::vector<pairing> pairs;          // in column order of the pair table
  std::vector<std::string> workloads;  // in row order
  std::vector<cell> cells;
  std::map<std::string, std::string> unavailable;  // subject -> reason
  std::map<std::string, std::string> facts;        // machine and settings, for the JSON

  cell& at(const std::string& workload, const std::string& subject) {
    for (auto& c : cells)
      if (c.workload == workload && c.subject == subject) return c;
    cell c;
    c.workload = workload;
    c.subject = subject;
    return cells.emplace_back(std::move(c));
  }
  const cell* find(const std::string& workload, const std::string& subject) const {
    for (auto& c : cells)
      if (c.workload == workload && c.subject == subject && c.figure.ok()) return &c;
    return nullptr;
  }
  // The libfuse subject `subject` is compared with, or "".
  std::string versus(const std::string& subject) const {
    for (auto& p : pairs)
      if (p.fusexx == subject) return p.libfuse;
    return "";
  }
  // How many times better `c` is than its libfuse counterpart, or <0.
  double ratio_to_libfuse(const cell& c) const {
    const std::string v = versus(c.subject);
    return v.empty() ? -1 : ratio(c, v);
  }
  // The geometric mean of a pair's ratios over the throughput workloads both
  // measured (mount time is not one of them), and how many there were.
  std::pair<double, unsigned> geometric_mean(const pairing& p) const {
    return mean_over_throughput(p, [&](const cell& c) { return ratio(c, p.libfuse); });
  }
  // The ratio round by round (>1: c wins): the i-th run of each side comes
  // from the same round, where the two subjects of a pair run one right after
  // the other, so a drift of this VM that a round saw falls on both sides.
  // Empty when either side has no figure or their runs do not line up.
  std::vector<double> round_ratios(const cell& c, const std::string& reference) const {
    const cell* r = find(c.workload, reference);
    if (!r || !c.figure.ok() || r->figure.values.size() != c.figure.values.size()) return {};
    std::vector<double> out;
    for (std::size_t i = 0; i < c.figure.values.size(); ++i) {
      const double mine = c.figure.values[i], theirs = r->figure.values[i];
      if (mine <= 0 || theirs <= 0) return {};
      out.push_back(c.lower_is_better ? theirs / mine : mine / theirs);
    }
    return out;
  }
  // A pair's geometric mean over its throughput cells, round by round: the
  // range of these says how far the mean itself moves with this VM's noise.
  // Empty unless every cell of the mean has the same rounds.
  std::vector<double> round_geometric_means(const pairing& p) const {
    std::vector<double> log_sums;
    unsigned cells = 0;
    for (auto& w : workloads) {
      const cell* c = find(w, p.fusexx);
      if (!c || c->lower_is_better || ratio(*c, p.libfuse) <= 0) continue;
      const auto rounds = round_ratios(*c, p.libfuse);
      if (rounds.empty() || (cells > 0 && rounds.size() != log_sums.size())) return {};
      if (cells++ == 0) log_sums.assign(rounds.size(), 0.0);
      for (std::size_t i = 0; i < rounds.size(); ++i) log_sums[i] += std::log(rounds[i]);
    }
    for (auto& l : log_sums) l = std::exp(l / cells);
    return log_sums;
  }
  // How many times less server CPU `c`'s subject spent per operation than
  // `reference`'s (>1: c's server spent less), or <0. A side that spent under
  // 0.1 us per operation took no part in it (kernel passthrough's reads and
  // writes go straight to the backing file): there is nothing to compare.
  // This is what tells a cell that a server's own work decides from one the
  // kernel, the disk or the scheduler does.
  double cpu_ratio(const cell& c, const std::string& reference) const {
    static constexpr double no_part_ns = 100;
    const cell* r = find(c.workload, reference);
    if (!r || !c.cpu.ok() || !r->cpu.ok() || c.cpu.median() < no_part_ns || r->cpu.median() < no_part_ns) return -1;
    return r->cpu.median() / c.cpu.median();
  }
  // The geometric mean of a pair's CPU ratios over the throughput workloads
  // both sides have one for, and how many there were.
  std::pair<double, unsigned> cpu_geometric_mean(const pairing& p) const {
    return mean_over_throughput(p, [&](const cell& c) { return cpu_ratio(c, p.libfuse); });
  }
  // The geometric mean of `ratio_of` over the fusexx side's throughput cells
  // of `p` where it is defined (>0), and how many there were.
  template <class Ratio>
  std::pair<double, unsigned> mean_over_throughput(const pairing& p, Ratio ratio_of) const {
    double log_sum = 0;
    unsigned n = 0;
    for (auto& w : workloads) {
      const cell* c = find(w, p.fusexx);
      if (!c || c->lower_is_better) continue;
      if (const double r = ratio_of(*c); r > 0) {
        log_sum += std::log(r);
        ++n;
      }
    }
    return {n ? std::exp(log_sum / n) : -1.0, n};
  }
  // How many times better `c` is than `reference` (>1: c wins), or <0.
  double ratio(const cell& c, const std::string& reference) const {
    const cell* r = find(c.workload, reference);
    if (!r || !c.figure.ok() || r->figure.median() <= 0 || c.figure.median() <= 0) return -1;
    return c.lower_is_better ? r->figure.median() / c.figure.median() : c.figure.median() / r->figure.median();
  }
};

inline std::string human(double v, const std::string& unit) {
  if (v < 0) return "-";
  if (unit == "MB/s") return fmt::format("{:.0f} MB/s", v / 1e6);
  if (unit == "ms") return fmt::format("{:.1f} ms", v * 1e3);
  if (v >= 1e6) return fmt::format("{:.2f}M {}", v / 1e6, unit);
  if (v >= 1e4) return fmt::format("{:.1f}k {}", v / 1e3, unit);
  return fmt::format("{:.0f} {}", v, unit);
}

inline std::string ratio_text(double r) { return r < 0 ? "-" : fmt::format("{:.2f}x", r); }

// "0.93x 0.71-1.12": the ratio of the medians and the range of the rounds'.
inline std::string ratio_with_rounds(double r, const std::vector<double>& rounds) {
  if (r < 0) return "-";
  if (rounds.size() < 2) return ratio_text(r);
  const auto [lo, hi] = std::ranges::minmax(rounds);
  return fmt::format("{:.2f}x {:.2f}-{:.2f}", r, lo, hi);
}

// "; server CPU 28.0 against 26.1 us/op", or "" when either side has none.
inline std::string cpu_against(const report& rep, const cell& c, const std::string& reference) {
  const cell* r = rep.find(c.workload, reference);
  if (!r || !c.cpu.ok() || !r->cpu.ok()) return "";
  return fmt::format("; server CPU {:.1f} against {:.1f} us/op", c.cpu.median() / 1e3, r->cpu.median() / 1e3);
}

// The header row of a per-pair table: one column per pair.
inline std::string pair_columns(const std::vector<const pairing*>& measured) {
  std::string out = fmt::format("  {:<40}", "workload");
  for (auto* p : measured) out += fmt::format(" {:>22}", p->label);
  return out + "\n";
}

// "1.18x (11 cells)", or "-" for no mean.
inline std::string mean_text(std::pair<double, unsigned> mean) {
  return mean.first < 0 ? "-" : fmt::format("{:.2f}x ({} cells)", mean.first, mean.second);
}

// libfuse / fusexx server CPU per operation, per pair and throughput
// workload (>1: fusexx's server spent less), and each pair's geometric mean.
inline std::string cpu_table(const report& rep, const std::vector<const pairing*>& measured) {
  std::string out =
      "\nserver CPU per operation, libfuse / fusexx, per pair (>1: fusexx's server spent less; -: a side spent\n"
      "under 0.1 us, as under kernel passthrough where reads and writes bypass the server)\n";
  out += pair_columns(measured);
  for (auto& w : rep.workloads) {
    std::string row;
    bool any = false;
    for (auto* p : measured) {
      const cell* c = rep.find(w, p->fusexx);
      const double r = c && !c->lower_is_better ? rep.cpu_ratio(*c, p->libfuse) : -1;
      any = any || (c && !c->lower_is_better);
      row += fmt::format(" {:>22}", ratio_text(r));
    }
    if (any) out += fmt::format("  {:<40}{}\n", w, row);
  }
  out += fmt::format("  {:<40}", "geometric mean");
  for (auto* p : measured) out += fmt::format(" {:>22}", mean_text(rep.cpu_geometric_mean(*p)));
  return out + "\n";
}

// fusexx / libfuse per pair and workload (>1: fusexx better), as
// docs/benchmarks.md shows it, then the same for the server CPU each spent;
// "" when no pair was measured.
inline std::string pair_table(const report& rep) {
  std::vector<const pairing*> measured;
  for (auto& p : rep.pairs)
    if (!rep.unavailable.contains(p.fusexx) && !rep.unavailable.contains(p.libfuse)) measured.push_back(&p);
  if (measured.empty()) return "";
  std::string out =
      "\nfusexx / libfuse, per pair (>1: fusexx better): the vs libfuse column above, then the lowest and highest\n"
      "of the same ratio taken round by round (each round runs the two sides of a pair one after the other)\n";
  out += pair_columns(measured);
  for (auto& w : rep.workloads) {
    out += fmt::format("  {:<40}", w);
    for (auto* p : measured) {
      const cell* c = rep.find(w, p->fusexx);
      out += fmt::format(" {:>22}", c ? ratio_with_rounds(rep.ratio(*c, p->libfuse), rep.round_ratios(*c, p->libfuse))
                                      : "-");
    }
    out += "\n";
  }
  out += fmt::format("  {:<40}", "geometric mean (throughput cells)");
  for (auto* p : measured) out += fmt::format(" {:>22}", mean_text(rep.geometric_mean(*p)));
  out += fmt::format("\n  {:<40}", "  the same, round by round");
  for (auto* p : measured) {
    const auto rounds = rep.round_geometric_means(*p);
    std::string text = "-";
    if (rounds.size() >= 2) {
      const auto [lo, hi] = std::ranges::minmax(rounds);
      text = fmt::format("{:.2f}-{:.2f}", lo, hi);
    }
    out += fmt::format(" {:>22}", text);
  }
  out += "\n";
  out += cpu_table(rep, measured);
  // The cells below 1.00x, told apart by their rounds: with this VM's noise a
  // ratio under 1 that some rounds contradict is a lead, a loss in every
  // round is a finding. Each says what the two servers spent per operation.
  std::string behind, mixed;
  for (auto* p : measured)
    for (auto& w : rep.workloads) {
      const cell* c = rep.find(w, p->fusexx);
      if (!c) continue;
      const double r = rep.ratio(*c, p->libfuse);
      const auto rounds = rep.round_ratios(*c, p->libfuse);
      if (r < 0 || r >= 1 || rounds.size() < 2) continue;
      const auto won = std::ranges::count_if(rounds, [](double x) { return x >= 1; });
      (won == 0 ? behind : mixed) += fmt::format("\n    {}, {}: {} ({} of {} rounds won){}", p->label, w, ratio_text(r),
                                                 won, rounds.size(), cpu_against(rep, *c, p->libfuse));
    }
  if (!behind.empty()) out += "\nbelow 1.00x and behind in every round:" + behind + "\n";
  if (!mixed.empty()) out += "\nbelow 1.00x, but ahead in some rounds:" + mixed + "\n";
  return out;
}

inline std::string table(const report& rep) {
  std::string out;
  for (auto& w : rep.workloads) {
    const cell* any = nullptr;
    for (auto& c : rep.cells)
      if (c.workload == w) any = &c;
    if (!any) continue;
    out += fmt::format("\n{} ({}, {} is better)\n", w, any->unit == "ms" ? "time" : any->unit,
                       any->lower_is_better ? "lower" : "higher");
    out += fmt::format("  {:<26} {:>16} {:>8} {:>10} {:>11} {:>13} {:>13}\n", "subject", "median", "spread",
                       "vs native", "vs libfuse", "server CPU/op", "instr./op");
    for (auto& s : rep.subjects) {
      const cell* c = nullptr;
      for (auto& x : rep.cells)
        if (x.workload == w && x.subject == s) c = &x;
      if (!c) continue;
      if (!c->figure.ok()) {
        out += fmt::format("  {:<26} {}\n", s, c->error.empty() ? "failed" : c->error);
        continue;
      }
      const std::string cpu = c->cpu.ok() ? fmt::format("{:.1f} us", c->cpu.median() / 1e3) : "-";
      const std::string instr =
          c->instructions_per_op < 0 ? "-" : fmt::format("{:.1f}k", c->instructions_per_op / 1e3);
      out += fmt::format("  {:<26} {:>16} {:>7.0f}% {:>10} {:>11} {:>13} {:>13}\n", s, human(c->figure.median(), c->unit),
                         c->figure.spread() * 100, ratio_text(rep.ratio(*c, "native")),
                         ratio_text(rep.ratio_to_libfuse(*c)), cpu, instr);
    }
  }
  out += pair_table(rep);
  for (auto& [s, why] : rep.unavailable) out += fmt::format("\nnot measured: {}: {}\n", s, why);
  return out;
}

inline std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) {
      o += fmt::format("\\u{:04x}", static_cast<unsigned char>(ch));
      continue;
    }
    o += ch;
  }
  return o + "\"";
}

inline std::string json_number(double v) { return v < 0 ? "null" : fmt::format("{:.6g}", v); }
inline std::string json_numbers(const std::vector<double>& vs) {
  std::string o;
  for (double v : vs) o += (o.empty() ? "" : ", ") + json_number(v);
  return o;
}

inline std::string json(const report& rep) {
  std::string o = "{\n  \"facts\": {";
  bool first = true;
  for (auto& [k, v] : rep.facts) {
    o += fmt::format("{}\n    {}: {}", first ? "" : ",", json_string(k), json_string(v));
    first = false;
  }
  o += "\n  },\n  \"subjects\": [";
  first = true;
  for (auto& s : rep.subjects) {
    auto why = rep.unavailable.find(s);
    o += fmt::format("{}\n    {{\"name\": {}, \"measured\": {}{}}}", first ? "" : ",", json_string(s),
                     why == rep.unavailable.end() ? "true" : "false",
                     why == rep.unavailable.end() ? "" : ", \"reason\": " + json_string(why->second));
    first = false;
  }
  o += "\n  ],\n  \"pairs\": [";
  first = true;
  for (auto& p : rep.pairs) {
    o += fmt::format(
        "{}\n    {{\"label\": {}, \"fusexx\": {}, \"libfuse\": {}, \"geometric_mean\": {}, \"geometric_mean_rounds\": [{}], "
        "\"cpu_geometric_mean\": {}}}",
        first ? "" : ",", json_string(p.label), json_string(p.fusexx), json_string(p.libfuse),
        json_number(rep.geometric_mean(p).first), json_numbers(rep.round_geometric_means(p)),
        json_number(rep.cpu_geometric_mean(p).first));
    first = false;
  }
  o += "\n  ],\n  \"results\": [";
  first = true;
  for (auto& c : rep.cells) {
    const std::string versus = rep.versus(c.subject);
    const std::string rounds =
        versus.empty() ? ""
                       : ", \"vs_libfuse_rounds\": [" + json_numbers(rep.round_ratios(c, versus)) +
                             "], \"cpu_vs_libfuse\": " + json_number(rep.cpu_ratio(c, versus));
    o += fmt::format(
        "{}\n    {{\"workload\": {}, \"subject\": {}, \"unit\": {}, \"lower_is_better\": {}, \"median\": {}, "
        "\"min\": {}, \"max\": {}, \"runs\": [{}], \"vs_native\": {}, \"vs_libfuse\": {}, \"server_cpu_ns_per_op\": {}, "
        "\"server_instructions_per_op\": {}{}{}}}",
        first ? "" : ",", json_string(c.workload), json_string(c.subject), json_string(c.unit),
        c.lower_is_better ? "true" : "false", json_number(c.figure.ok() ? c.figure.median() : -1),
        json_number(c.figure.ok() ? c.figure.min() : -1), json_number(c.figure.ok() ? c.figure.max() : -1),
        json_numbers(c.figure.values),
        json_number(rep.ratio(c, "native")), json_number(rep.ratio_to_libfuse(c)), json_number(c.cpu.ok() ? c.cpu.median() : -1),
        json_number(c.instructions_per_op), rounds, c.error.empty() ? "" : ", \"error\": " + json_string(c.error));
    first = false;
  }
  return o + "\n  ]\n}\n";
}

// Draws `png` with gnuplot: one group of bars per throughput workload, one bar
// per FUSE subject, height = throughput relative to native (log scale; native
// is the 100% line). Returns an error text or "".
inline std::string chart(const report& rep, const std::string& dir, const std::string& png) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    return "gnuplot is not installed (Debian: gnuplot-nox); no chart drawn";
  std::vector<std::string> bars;
  for (auto& s : rep.subjects)
    if (s != "native" && !rep.unavailable.contains(s)) bars.push_back(s);
  const std::string data = dir + "/chart.dat", script = dir + "/chart.gp";
  {
    std::ofstream d(data);
    d << "workload";
    for (auto& s : bars) d << '\t' << json_string(s);
    d << '\n';
    for (auto& w : rep.workloads) {
      const cell* any = nullptr;
      for (auto& c : rep.cells)
        if (c.workload == w) any = &c;
      if (!any || any->lower_is_better) continue;
      d << json_string(w);
      for (auto& s : bars) {
        const cell* c = rep.find(w, s);
        const double r = c ? rep.ratio(*c, "native") : -1;
        d << '\t' << (r > 0 ? fmt::format("{:.4f}", r * 100) : "NaN");
      }
      d << '\n';
    }
  }
  {
    std::ofstream g(script);
    g << "set terminal pngcairo noenhanced size 1400,700 font 'sans,10'\n"
      << "set output " << json_string(png) << "\n"
      << "set title 'fusexx benchmark: throughput relative to the native directory (native = 100%)'\n"
      << "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.85 border -1\n"
      << "set boxwidth 0.9\nset logscale y\nset yrange [0.5:200]\nset ylabel '% of native (log scale)'\n"
      << "set grid ytics\nset key outside right top\nset xtics rotate by -20 scale 0\n"
      << "set datafile separator '\\t'\nset datafile missing 'NaN'\n"
      << "plot for [i=2:" << bars.size() + 1 << "] " << json_string(data)
      << " using i:xtic(1) title columnheader(i), 100 with lines lw 2 lc rgb 'black' title 'native'\n";
  }
  if (std::system(fmt::format("gnuplot {} 2>{}/chart.err", script, dir).c_str()) != 0)
    return fmt::format("gnuplot failed: see {}/chart.err", dir);
  return "";
}

}  // namespace bench
