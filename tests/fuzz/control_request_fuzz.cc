// Fuzz target: the control socket (fusexx/control.hpp): the requests a server
// reads from it (restart/handover.hpp's framing: a query or a hello, as one
// SOCK_SEQPACKET message, fds beside), and the JSON of its answers as the
// tool reads them (parse_json, parse_status, parse_stats).
//
// Input: u8 config (bits 0-1: the mode), then
//   0  JSON text: parse_json, parse_status, parse_stats
//   1  an answer's values (status_info and stats_info, field by field, strings
//      as u8 length + bytes) that the server writes (to_json) and the tool reads
//   2  a request: u8 fds beside (mod 5), u8 bit 0: the framing is made here
//      (the bytes are the snapshot payload), then the bytes, sent as one message
//
// Checked: nothing is undefined or throws; JSON the parser takes prints and
// parses back the same (numbers, strings with any bytes and escapes, nesting);
// an answer the tool parses writes back the same; every value an answer is
// written with is read back exactly (integers to the last bit, strings byte
// for byte); a request is either refused (EBADMSG, EMSGSIZE) or read whole
// and, sent again, reads back the same; no fd leaks.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <fusexx/control.hpp>

#include "tests/fuzz/formats.hpp"
#include "tests/fuzz/fuzz.hpp"

namespace {

using namespace fusexx::fuzzing;
namespace control = fusexx::control;
using control::json;

// JSON text of a value, as any writer would print it.
std::string print(const json& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::nullptr_t>) return "null";
        else if constexpr (std::is_same_v<T, bool>) return x ? "true" : "false";
        else if constexpr (std::is_same_v<T, json::number>) {
          if (x.exact) return fmt::format("{}", *x.exact);
          std::string t = fmt::format("{}", x.value);  // shortest text that reads back the same double
          if (t.find_first_of(".eEn") == std::string::npos) t += ".0";  // not a whole number ("5.0" stays one)
          return t;
        }
        else if constexpr (std::is_same_v<T, std::string>) return control::json_quote(x);
        else if constexpr (std::is_same_v<T, std::shared_ptr<json::array>>) {
          std::string out = "[";
          for (const auto& e : *x) out += (out.size() > 1 ? "," : "") + print(e);
          return out + "]";
        } else {
          std::string out = "{";
          for (const auto& [k, e] : *x) out += (out.size() > 1 ? "," : "") + control::json_quote(k) + ":" + print(e);
          return out + "}";
        }
      },
      v.v);
}

bool same(const json& a, const json& b) {
  if (a.v.index() != b.v.index()) return false;
  if (auto* x = std::get_if<json::number>(&a.v)) {
    const auto& y = std::get<json::number>(b.v);
    return x->exact == y.exact && ((std::isnan(x->value) && std::isnan(y.value)) || x->value == y.value);
  }
  if (a.is_array()) {
    const auto &x = a.items(), &y = b.items();
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i)
      if (!same(x[i], y[i])) return false;
    return true;
  }
  if (a.is_object()) {
    const auto& x = *std::get<std::shared_ptr<json::object>>(a.v);
    const auto& y = *std::get<std::shared_ptr<json::object>>(b.v);
    if (x.size() != y.size()) return false;
    for (auto i = x.begin(), j = y.begin(); i != x.end(); ++i, ++j)
      if (i->first != j->first || !same(i->second, j->second)) return false;
    return true;
  }
  return a.v == b.v;
}

void json_mode(std::string_view text) {
  if (auto v = control::parse_json(text)) {
    const std::string printed = print(*v);
    auto again = control::parse_json(printed);
    FUZZ_CHECK(again && same(*v, *again), "JSON printed as {} does not parse back the same", printed);
  }
  if (auto s = control::parse_status(text)) {
    const std::string written = control::to_json(*s);
    auto again = control::parse_status(written);
    FUZZ_CHECK(again && control::to_json(*again) == written, "a status answer, written again ({}), reads back different",
               written);
  } else {
    FUZZ_CHECK(s.error().code.value() == EBADMSG, "parse_status refused with {}", s.error().message);
  }
  if (auto s = control::parse_stats(text)) {
    const std::string written = control::to_json(*s);
    auto again = control::parse_stats(written);
    FUZZ_CHECK(again && control::to_json(*again) == written, "a stats answer, written again ({}), reads back different",
               written);
  } else {
    FUZZ_CHECK(s.error().code.value() == EBADMSG, "parse_stats refused with {}", s.error().message);
  }
}

std::string text(input& in) {
  auto b = in.bytes(in.u8());
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

void answer_mode(input& in) {
  control::status_info s;
  s.version = in.u32();
  s.fusexx_version = text(in);
  s.mountpoint = text(in);
  s.filesystem = text(in);
  s.pid = in.u32();
  s.connection = in.u32();
  s.transport = text(in);
  s.threads = in.u32();
  s.queues = in.u32();
  s.queue_depth = in.u32();
  s.proto_major = in.u32();
  s.proto_minor = in.u32();
  s.max_write = in.u32();
  s.max_readahead = in.u32();
  s.max_pages = in.u32();
  for (unsigned n = in.u8() % 4; n > 0; --n) s.flags.push_back(text(in));
  s.restartable = in.u8() & 1;
  s.handover_requests = in.u64();
  s.handover_refused = in.u64();
  s.stats = in.u8() & 1;
  s.uptime_s = static_cast<double>(in.u32()) / 1000;  // as the server measures it: whole milliseconds
  s.supervised = in.u8() & 1;
  s.checkpoint = in.u64();
  s.journal_bytes = in.u64();
  const std::string status = control::to_json(s);
  auto back = control::parse_status(status);
  FUZZ_CHECK(back.has_value(), "the tool cannot read the server's status answer {}", status);
  FUZZ_CHECK(back->version == s.version && back->fusexx_version == s.fusexx_version && back->mountpoint == s.mountpoint &&
                 back->filesystem == s.filesystem && back->pid == s.pid && back->connection == s.connection &&
                 back->transport == s.transport && back->threads == s.threads && back->queues == s.queues &&
                 back->queue_depth == s.queue_depth && back->proto_major == s.proto_major &&
                 back->proto_minor == s.proto_minor && back->max_write == s.max_write &&
                 back->max_readahead == s.max_readahead && back->max_pages == s.max_pages && back->flags == s.flags &&
                 back->restartable == s.restartable && back->handover_requests == s.handover_requests &&
                 back->handover_refused == s.handover_refused && back->stats == s.stats &&
                 back->supervised == s.supervised && back->checkpoint == s.checkpoint &&
                 back->journal_bytes == s.journal_bytes &&
                 control::to_json(*back) == status,
             "the status answer {} reads back different (handover requests {} as {})", status, s.handover_requests,
             back->handover_requests);

  control::stats_info t;
  t.version = in.u32();
  t.enabled = in.u8() & 1;
  t.requests = in.u64();
  t.in_flight = in.u64();
  t.interrupts = in.u64();
  t.forgets = in.u64();
  t.errors = in.u64();
  t.malformed = in.u64();
  t.replies_refused = in.u64();
  t.uptime_s = static_cast<double>(in.u32()) / 1000;
  for (unsigned n = in.u8() % 4; n > 0; --n) {
    control::stats_info::op o;
    o.opcode = in.u32();
    o.name = text(in);
    o.count = in.u64();
    o.replies = in.u64();
    o.errors = in.u64();
    o.bytes_in = in.u64();
    o.bytes_out = in.u64();
    o.p50_ns = in.u64();
    o.p99_ns = in.u64();
    o.max_ns = in.u64();
    for (unsigned k = in.u8() % 4; k > 0; --k) o.histogram[in.u8() % o.histogram.size()] = in.u64();
    t.ops.push_back(std::move(o));
  }
  const std::string stats = control::to_json(t);
  auto back_stats = control::parse_stats(stats);
  FUZZ_CHECK(back_stats.has_value(), "the tool cannot read the server's stats answer {}", stats);
  const std::string again = control::to_json(*back_stats);
  FUZZ_CHECK(again == stats, "the stats answer {} reads back as {}", stats, again);
}

void request_mode(input& in) {
  const unsigned fd_count = in.u8() % 5;
  const bool make_framing = in.u8() & 1;
  auto raw = in.rest();
  std::vector<std::byte> bytes(raw.size());
  if (!raw.empty()) std::memcpy(bytes.data(), raw.data(), raw.size());
  if (make_framing) {
    bytes = sealed(bytes);
  }
  if (bytes.empty()) return;
  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
  fusexx::unique_fd server(sv[0]), client(sv[1]);
  std::vector<fusexx::unique_fd> fds;
  std::vector<int> raw_fds;
  for (unsigned i = 0; i < fd_count; ++i) {
    fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    raw_fds.push_back(fds.back().get());
  }
  if (!fusexx::send_with_fds(client.get(), bytes, raw_fds)) return;  // (too long for the socket)
  fds.clear();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  auto m = fusexx::handover::receive(server.get(), deadline);
  if (!m) {
    FUZZ_CHECK(m.error().value() == EBADMSG || m.error().value() == EMSGSIZE, "a request refused with {}",
               m.error().message());
    return;
  }
  FUZZ_CHECK(m->fds.size() == fd_count, "a request's {} fds arrived as {}", fd_count, m->fds.size());
  // What the server does with a query: answers status or stats, refuses
  // anything else (server.hpp answer_query); the tool reads either answer.
  if (m->what == fusexx::handover::kind::query) {
    if (m->text == "status") FUZZ_CHECK(control::parse_status(control::to_json(control::status_info{})), "status");
    if (m->text == "stats") FUZZ_CHECK(control::parse_stats(control::to_json(control::stats_info{})), "stats");
  }
  std::vector<int> again;
  for (auto& f : m->fds) again.push_back(f.get());
  FUZZ_CHECK(fusexx::handover::send(server.get(), *m, again).has_value(), "a request read cannot be sent again");
  auto m2 = fusexx::handover::receive(client.get(), deadline);
  FUZZ_CHECK(m2 && m2->what == m->what && m2->version == m->version && m2->pid == m->pid && m2->text == m->text &&
                 m2->queue == m->queue && m2->index == m->index && m2->connection == m->connection &&
                 m2->count == m->count && m2->fds.size() == m->fds.size(),
             "a request sent again reads back different");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::size_t before = open_fds();
  {
    input in(data, size);
    switch (in.u8() % 3) {
      case control_request_format::json_text: {
        auto rest = in.rest();
        json_mode({reinterpret_cast<const char*>(rest.data()), rest.size()});
        break;
      }
      case control_request_format::answer_values: answer_mode(in); break;
      default: request_mode(in); break;
    }
  }
  const std::size_t after = open_fds();
  FUZZ_CHECK(after == before, "{} fd(s) leaked ({} open before, {} after)", after - before, before, after);
  return 0;
}
