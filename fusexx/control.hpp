#pragma once
// Asking a running server for its state, through its control socket
// (restart/control_socket.hpp: found from the mountpoint, same user or root).
// Every fusexx server answers; `fusexx-ctl MOUNTPOINT status|stats` is the
// command line of it (tools/fusexx_ctl.cc).
//
// The protocol rides on the handover's framing (restart/handover.hpp), one
// exchange per connection:
//   tool → server   query  {version = control::protocol_version, text = "status" | "stats",
//                           connection = the FUSE connection number meant}
//   server → tool   answer {text = JSON}  — or refuse {reason}: another user, not this
//                   connection (a stale server holding the name), an unknown query
// The JSON carries "version" (this protocol's) and "kind"; later versions only
// add fields. `status`: transport, negotiated INIT, threads or queues, uptime,
// mountpoint, pid, fusexx version, handover requests. `stats`: per opcode
// count, errors, bytes in/out, latency p50/p99/max (ns), and the connection's
// totals (requests, in flight, interrupts, forgotten nodes).
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "failure.hpp"
#include "proto/flags.hpp"
#include "proto/opcodes.hpp"
#include "restart/control_socket.hpp"
#include "restart/handover.hpp"
#include "stats.hpp"

namespace fusexx::control {

inline constexpr std::uint32_t protocol_version = 1;
inline constexpr std::size_t max_answer = 1 << 20;

// ---- a minimal JSON value: what the answers are made of ----

struct json {
  using array = std::vector<json>;
  using object = std::map<std::string, json, std::less<>>;
  // A number as a double, and exactly when it is a whole number that fits
  // 64 bits: the answers' counters are u64, which a double holds exactly only
  // up to 2^53 (found by tests/fuzz/control_request).
  struct number {
    double value = 0;
    std::optional<std::uint64_t> exact;
    bool operator==(const number&) const = default;
  };
  // null, bool, number, string, array, object
  std::variant<std::nullptr_t, bool, number, std::string, std::shared_ptr<array>, std::shared_ptr<object>> v = nullptr;

  bool is_object() const { return std::holds_alternative<std::shared_ptr<object>>(v); }
  bool is_array() const { return std::holds_alternative<std::shared_ptr<array>>(v); }
  const json& operator[](std::string_view key) const {
    static const json none;
    if (!is_object()) return none;
    const auto& o = *std::get<std::shared_ptr<object>>(v);
    auto it = o.find(key);
    return it == o.end() ? none : it->second;
  }
  const array& items() const {
    static const array none;
    return is_array() ? *std::get<std::shared_ptr<array>>(v) : none;
  }
  double num(double otherwise = 0) const { return std::holds_alternative<number>(v) ? std::get<number>(v).value : otherwise; }
  // A count: the number exactly, else clamped to 0 .. 2^64-1 (converting a
  // negative, too large or NaN double is undefined; found by
  // tests/fuzz/control_request).
  std::uint64_t u64() const {
    if (!std::holds_alternative<number>(v)) return 0;
    const number& n = std::get<number>(v);
    if (n.exact) return *n.exact;
    if (!(n.value > 0)) return 0;
    if (n.value >= 18446744073709551616.0) return UINT64_MAX;
    return static_cast<std::uint64_t>(n.value);
  }
  std::string str() const { return std::holds_alternative<std::string>(v) ? std::get<std::string>(v) : std::string(); }
  bool boolean() const { return std::holds_alternative<bool>(v) && std::get<bool>(v); }
};

namespace detail {
struct json_parser {
  std::string_view s;
  std::size_t at = 0;
  bool ok = true;

  void ws() {
    while (at < s.size() && (s[at] == ' ' || s[at] == '\n' || s[at] == '\t' || s[at] == '\r')) ++at;
  }
  bool eat(char c) {
    ws();
    if (at < s.size() && s[at] == c) return ++at, true;
    return false;
  }
  json fail() {
    ok = false;
    return {};
  }
  std::optional<std::string> string() {
    if (!eat('"')) return std::nullopt;
    std::string out;
    while (at < s.size() && s[at] != '"') {
      char c = s[at++];
      if (c == '\\') {
        if (at >= s.size()) return std::nullopt;
        const char e = s[at++];
        switch (e) {
          case 'n': c = '\n'; break;
          case 't': c = '\t'; break;
          case 'r': c = '\r'; break;
          case 'b': c = '\b'; break;
          case 'f': c = '\f'; break;
          case 'u': {
            if (at + 4 > s.size()) return std::nullopt;
            unsigned cp = 0;
            std::from_chars(s.data() + at, s.data() + at + 4, cp, 16);
            at += 4;
            c = cp < 0x80 ? static_cast<char>(cp) : '?';  // only control characters are escaped so
            break;
          }
          default: c = e;
        }
      }
      out.push_back(c);
    }
    if (at >= s.size()) return std::nullopt;
    ++at;
    return out;
  }
  json value(int depth = 0) {
    ws();
    if (at >= s.size() || depth > 32) return fail();
    const char c = s[at];
    if (c == '{') {
      ++at;
      auto o = std::make_shared<json::object>();
      if (eat('}')) return {o};
      do {
        auto k = string();
        if (!k || !eat(':')) return fail();
        (*o)[*k] = value(depth + 1);
      } while (ok && eat(','));
      return ok && eat('}') ? json{o} : fail();
    }
    if (c == '[') {
      ++at;
      auto a = std::make_shared<json::array>();
      if (eat(']')) return {a};
      do a->push_back(value(depth + 1));
      while (ok && eat(','));
      return ok && eat(']') ? json{a} : fail();
    }
    if (c == '"') {
      auto str = string();
      return str ? json{*str} : fail();
    }
    for (std::string_view word : {"true", "false", "null"})
      if (s.substr(at, word.size()) == word) {
        at += word.size();
        return word == "null" ? json{} : json{word == "true"};
      }
    json::number n;
    auto [p, ec] = std::from_chars(s.data() + at, s.data() + s.size(), n.value);
    if (ec != std::errc()) return fail();
    std::uint64_t whole = 0;
    auto [q, wec] = std::from_chars(s.data() + at, s.data() + s.size(), whole);
    if (wec == std::errc() && q == p) n.exact = whole;  // all of it: a whole number
    at = static_cast<std::size_t>(p - s.data());
    return {n};
  }
};
}  // namespace detail

inline std::optional<json> parse_json(std::string_view text) {
  detail::json_parser p{text};
  json v = p.value();
  p.ws();
  if (!p.ok || p.at != text.size()) return std::nullopt;
  return v;
}

inline std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    else out += c;
  }
  return out + '"';
}

// ---- the answers ----

struct status_info {
  std::uint32_t version = protocol_version;
  std::string fusexx_version;
  std::string mountpoint;
  std::string filesystem;      // the mount's subtype
  std::uint32_t pid = 0;
  std::uint32_t connection = 0;
  double uptime_s = 0;
  std::string transport;       // "classic" or "uring"
  unsigned threads = 0;        // /dev/fuse readers (the control channel's and the classic plane's)
  unsigned queues = 0;         // io_uring queues (one per possible CPU)
  unsigned queue_depth = 0;    // io_uring entries per queue
  std::uint32_t proto_major = 0, proto_minor = 0;
  std::uint32_t max_write = 0, max_readahead = 0, max_pages = 0;
  std::vector<std::string> flags;  // granted INIT flags, by name
  bool restartable = false;
  std::uint64_t handover_requests = 0;  // successors that asked for the connection
  std::uint64_t handover_refused = 0;   // of those, refused or not completed
  bool stats = false;                    // statistics are counted (-o stats=off: not)
  // Under a keeper (-o supervise; docs/restart.md, "Crash recovery"):
  bool supervised = false;
  std::uint64_t checkpoint = 0;     // the generation of the last checkpoint the keeper holds
  std::uint64_t journal_bytes = 0;  // what the crash journal holds since it
};

struct stats_info {
  std::uint32_t version = protocol_version;
  double uptime_s = 0;
  bool enabled = false;
  std::uint64_t requests = 0;         // every request received (session counter)
  std::uint64_t in_flight = 0;        // received, reply still to come
  std::uint64_t interrupts = 0;
  std::uint64_t forgets = 0;          // nodes forgotten (FORGET, and each node of BATCH_FORGET)
  std::uint64_t errors = 0;           // error replies
  std::uint64_t malformed = 0;
  std::uint64_t replies_refused = 0;  // replies the kernel no longer wanted (interrupted)
  struct op : opcode_stats {
    std::string name;
  };
  std::vector<op> ops;
};

inline std::vector<std::string> flag_names(std::uint64_t flags) {
  std::vector<std::string> out;
  for (const auto& [bit, name] : proto::init_flag::names)
    if (flags & bit) out.emplace_back(name);
  return out;
}

inline std::string to_json(const status_info& s) {
  std::string flags;
  for (const auto& f : s.flags) flags += (flags.empty() ? "" : ",") + json_quote(f);
  return fmt::format(
      "{{\"version\":{},\"kind\":\"status\",\"fusexx_version\":{},\"mountpoint\":{},\"filesystem\":{},\"pid\":{},"
      "\"connection\":{},\"uptime_s\":{:.3f},\"transport\":{},\"threads\":{},\"queues\":{},\"queue_depth\":{},"
      "\"init\":{{\"major\":{},\"minor\":{},\"max_write\":{},\"max_readahead\":{},\"max_pages\":{},\"flags\":[{}]}},"
      "\"restartable\":{},\"handover\":{{\"requests\":{},\"refused\":{}}},\"stats\":{},"
      "\"supervise\":{{\"enabled\":{},\"checkpoint\":{},\"journal_bytes\":{}}}}}",
      s.version, json_quote(s.fusexx_version), json_quote(s.mountpoint), json_quote(s.filesystem), s.pid, s.connection,
      s.uptime_s, json_quote(s.transport), s.threads, s.queues, s.queue_depth, s.proto_major, s.proto_minor,
      s.max_write, s.max_readahead, s.max_pages, flags, s.restartable, s.handover_requests, s.handover_refused,
      s.stats, s.supervised, s.checkpoint, s.journal_bytes);
}

inline std::string to_json(const stats_info& s) {
  std::string ops;
  for (const auto& o : s.ops) {
    std::string hist;  // sparse: [bucket, count] (stats.hpp: latency_bucket)
    for (std::size_t b = 0; b < o.histogram.size(); ++b)
      if (o.histogram[b] != 0) hist += fmt::format("{}[{},{}]", hist.empty() ? "" : ",", b, o.histogram[b]);
    ops += fmt::format("{}{{\"opcode\":{},\"name\":{},\"count\":{},\"replies\":{},\"errors\":{},\"bytes_in\":{},"
                       "\"bytes_out\":{},\"p50_ns\":{},\"p99_ns\":{},\"max_ns\":{},\"histogram\":[{}]}}",
                       ops.empty() ? "" : ",", o.opcode, json_quote(o.name), o.count, o.replies, o.errors, o.bytes_in,
                       o.bytes_out, o.p50_ns, o.p99_ns, o.max_ns, hist);
  }
  return fmt::format(
      "{{\"version\":{},\"kind\":\"stats\",\"uptime_s\":{:.3f},\"enabled\":{},\"requests\":{},\"in_flight\":{},"
      "\"interrupts\":{},\"forgets\":{},\"errors\":{},\"malformed\":{},\"replies_refused\":{},\"ops\":[{}]}}",
      s.version, s.uptime_s, s.enabled, s.requests, s.in_flight, s.interrupts, s.forgets, s.errors, s.malformed,
      s.replies_refused, ops);
}

inline outcome<status_info> parse_status(std::string_view text) {
  auto j = parse_json(text);
  if (!j || (*j)["kind"].str() != "status") return fail(EBADMSG, "the server's status answer is not valid JSON");
  const json& v = *j;
  status_info s;
  s.version = static_cast<std::uint32_t>(v["version"].u64());
  s.fusexx_version = v["fusexx_version"].str();
  s.mountpoint = v["mountpoint"].str();
  s.filesystem = v["filesystem"].str();
  s.pid = static_cast<std::uint32_t>(v["pid"].u64());
  s.connection = static_cast<std::uint32_t>(v["connection"].u64());
  s.uptime_s = v["uptime_s"].num();
  s.transport = v["transport"].str();
  s.threads = static_cast<unsigned>(v["threads"].u64());
  s.queues = static_cast<unsigned>(v["queues"].u64());
  s.queue_depth = static_cast<unsigned>(v["queue_depth"].u64());
  const json& init = v["init"];
  s.proto_major = static_cast<std::uint32_t>(init["major"].u64());
  s.proto_minor = static_cast<std::uint32_t>(init["minor"].u64());
  s.max_write = static_cast<std::uint32_t>(init["max_write"].u64());
  s.max_readahead = static_cast<std::uint32_t>(init["max_readahead"].u64());
  s.max_pages = static_cast<std::uint32_t>(init["max_pages"].u64());
  for (const auto& f : init["flags"].items()) s.flags.push_back(f.str());
  s.restartable = v["restartable"].boolean();
  s.handover_requests = v["handover"]["requests"].u64();
  s.handover_refused = v["handover"]["refused"].u64();
  s.stats = v["stats"].boolean();
  const json& supervise = v["supervise"];  // absent from older servers' answers: read as not supervised
  s.supervised = supervise["enabled"].boolean();
  s.checkpoint = supervise["checkpoint"].u64();
  s.journal_bytes = supervise["journal_bytes"].u64();
  return s;
}

inline outcome<stats_info> parse_stats(std::string_view text) {
  auto j = parse_json(text);
  if (!j || (*j)["kind"].str() != "stats") return fail(EBADMSG, "the server's stats answer is not valid JSON");
  const json& v = *j;
  stats_info s;
  s.version = static_cast<std::uint32_t>(v["version"].u64());
  s.uptime_s = v["uptime_s"].num();
  s.enabled = v["enabled"].boolean();
  s.requests = v["requests"].u64();
  s.in_flight = v["in_flight"].u64();
  s.interrupts = v["interrupts"].u64();
  s.forgets = v["forgets"].u64();
  s.errors = v["errors"].u64();
  s.malformed = v["malformed"].u64();
  s.replies_refused = v["replies_refused"].u64();
  for (const auto& o : v["ops"].items()) {
    stats_info::op op;
    op.opcode = static_cast<std::uint32_t>(o["opcode"].u64());
    op.name = o["name"].str();
    op.count = o["count"].u64();
    op.replies = o["replies"].u64();
    op.errors = o["errors"].u64();
    op.bytes_in = o["bytes_in"].u64();
    op.bytes_out = o["bytes_out"].u64();
    op.p50_ns = o["p50_ns"].u64();
    op.p99_ns = o["p99_ns"].u64();
    op.max_ns = o["max_ns"].u64();
    for (const auto& pair : o["histogram"].items()) {
      const auto& bc = pair.items();
      if (bc.size() == 2 && bc[0].u64() < op.histogram.size()) op.histogram[bc[0].u64()] = bc[1].u64();
    }
    s.ops.push_back(std::move(op));
  }
  return s;
}

// The per-opcode part of a stats answer, from a session's statistics.
inline void fill_ops(stats_info& out, const stats_snapshot& snap) {
  out.enabled = snap.enabled;
  for (const auto& o : snap.ops) {
    stats_info::op op;
    static_cast<opcode_stats&>(op) = o;
    op.name = o.opcode == 0 ? "OTHER" : std::string(proto::name(static_cast<proto::opcode>(o.opcode)));
    out.ops.push_back(std::move(op));
  }
}

// ---- the tool's side ----

// Asks the server of the mount at `mountpoint` one query ("status",
// "stats"); returns its JSON answer, or why there is none, in one sentence.
inline outcome<std::string> query(const std::string& path, std::string_view what,
                                  std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  // As mountinfo spells it: absolute, normal, no trailing '/' (not realpath(),
  // which would ask the server, and a hung one would hang the tool).
  std::error_code ec;
  std::string mountpoint = std::filesystem::absolute(path, ec).lexically_normal().string();
  if (ec || mountpoint.empty()) mountpoint = path;
  while (mountpoint.size() > 1 && mountpoint.ends_with('/')) mountpoint.pop_back();  // "///" too (main.hpp)
  auto connection = fuse_connection_of(mountpoint);
  if (!connection) return std::unexpected(connection.error());
  outcome<std::string> last = fail(ENOENT, "no fusexx server answers for the mount at {}", mountpoint);
  for (const std::string& name : control_socket_candidates(*connection)) {
    auto sock = connect_control_socket(name, mountpoint);
    if (!sock) {
      if (name == control_socket_name(*connection))
        last = fail(sock.error().code.value(), "no fusexx server answers for the mount at {} (no control socket @{})",
                    mountpoint, name);
      continue;
    }
    if (!handover::send(sock->get(), {.what = handover::kind::query, .version = protocol_version,
                                      .pid = static_cast<std::uint32_t>(::getpid()), .text = std::string(what),
                                      .connection = *connection}))
      return fail(EIO, "the server of {} went away", mountpoint);
    auto answer = handover::receive(sock->get(), std::chrono::steady_clock::now() + limit, max_answer);
    if (!answer) {
      // A server of a fusexx version without queries reads this as a bad hello and closes.
      last = fail(answer.error().value(), "the server of {} did not answer ({}): an older fusexx?", mountpoint,
                  answer.error().message());
      continue;
    }
    if (answer->what == handover::kind::refuse && answer->text.starts_with(handover::not_this_connection)) {
      last = fail(ESRCH, "the server at @{} no longer serves {}", name, mountpoint);
      continue;
    }
    if (answer->what == handover::kind::refuse)
      return fail(EACCES, "the server of {} refused: {}", mountpoint, answer->text);
    if (answer->what != handover::kind::answer) return fail(EPROTO, "the server of {} answered nonsense", mountpoint);
    return std::move(answer->text);
  }
  return last;
}

}  // namespace fusexx::control
