// Fuzz target: NOTIFY_REPLY and the retrieve path (fusexx/notify.hpp, the
// dispatcher's NOTIFY_REPLY row in detail/operations.hpp). A filesystem whose
// GETXATTR handler is a coroutine that reads the kernel's page cache back
// (co_await notify().retrieve(...)) is driven by a sequence of actions: ask
// (a GETXATTR, whose handler sends a RETRIEVE and waits), answer (a
// NOTIFY_REPLY of any shape, aimed at a retrieve still waiting, one that
// timed out or was answered already, or at any id), retrieve_wait with no
// time to wait (it times out and its id must be forgotten), detach and
// re-attach the notifier, and INTERRUPT a waiting handler.
//
// Input: u8 config (bit 0: NOTIFY_REPLYs come io_uring-style, the data in the
// payload segment), then actions: u8 action, then
//   ask:       u64 node, u64 offset, u32 size
//   answer:    u8 how, u64 unique (how_aim: an index into every id a RETRIEVE
//              ever carried), [u8 total_extlen with how_ext], u16 length, that
//              many bytes of body (notify_retrieve_in, then data; how_fix_size
//              sets its size to the data's length)
//   wait:      u64 node, u32 size (retrieve_wait, 0 ms)
//   detach, interrupt: nothing
//
// Checked: each RETRIEVE is one well-formed notification carrying what the
// handler asked for and an id never used before; a NOTIFY_REPLY never gets a
// reply; a handler is answered only after a NOTIFY_REPLY with its id (then
// with exactly the offset and the data that reply carried) or a detach (then
// ENOTCONN), exactly once; a well-formed NOTIFY_REPLY for a retrieve still
// waiting answers it; retrieve_wait gives ETIMEDOUT (ENOTCONN when detached)
// and a late reply to it is dropped; at the end (a detach) every handler has
// been answered.
#include <sys/uio.h>

#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <fusexx/fusexx.hpp>
#include <fusexx/restart/snapshot.hpp>

#include "tests/fuzz/formats.hpp"
#include "tests/fuzz/fuzz.hpp"
#include "tests/fuzz/kernel_side.hpp"

namespace {

using fusexx::proto::opcode;
namespace proto = fusexx::proto;
using namespace fusexx::fuzzing;
namespace f = fusexx::fuzzing::notify_reply_format;

// What the handler shows of what it got back: offset, length, checksum.
std::string digest(off_t offset, std::span<const std::byte> data) {
  return fmt::format("{}:{}:{:08x}", offset, data.size(), fusexx::detail::crc32c(data));
}

// Reads the page cache back in GETXATTR (the parameters are set just before
// each request: the handler reads them before it first suspends).
struct retrieving_fs : fusexx::filesystem_base<retrieving_fs> {
  std::uint64_t node = 0;
  off_t offset = 0;
  std::size_t size = 0;
  fusexx::task<std::string> getxattr(fusexx::request& req, fusexx::ino, std::string_view) {
    const std::uint64_t n = node;
    const off_t o = offset;
    const std::size_t s = size;
    auto r = co_await req.notify().retrieve(n, o, s);
    if (!r) co_return fusexx::error(r.error());
    co_return digest(r->offset, r->data);
  }
};

struct kernel_side {
  // Handlers waiting, by request unique: the RETRIEVE id they wait on (0:
  // none was sent: the answer is ENOTCONN at once).
  std::map<std::uint64_t, std::uint64_t> asking;
  // The answer each handler must get, once it is decided.
  std::map<std::uint64_t, std::string> expected;  // unique -> digest, or "error N"
  std::set<std::uint64_t> ids;                    // every id a RETRIEVE carried
  std::vector<std::uint64_t> id_list;             // the same, in order (how_aim)
  std::map<std::uint64_t, std::uint64_t> live;    // id -> the request waiting on it
  // What the next RETRIEVE must carry.
  std::uint64_t want_node = 0, want_offset = 0, want_size = 0;
  std::optional<std::uint64_t> last_id;           // the id of the latest RETRIEVE
  std::uint64_t init_unique = 0;                  // INIT's reply (its shape is dispatch_stream's to check)
  std::size_t notifications = 0;

  static int send(void* self, const iovec* iov, int count) {
    return static_cast<kernel_side*>(self)->receive(iov, count);
  }
  int receive(const iovec* iov, int count) {
    const auto m = read_message(iov, count);
    const proto::out_header& h = m.header;
    const auto payload = m.payload();
    if (h.unique == 0) {
      FUZZ_CHECK(h.error == static_cast<int>(proto::notify_code::retrieve), "an unexpected notification, code {}",
                 h.error);
      FUZZ_CHECK(payload.size() == sizeof(proto::notify_retrieve_out), "a RETRIEVE of {} bytes", payload.size());
      proto::notify_retrieve_out out;
      std::memcpy(&out, payload.data(), sizeof out);
      FUZZ_CHECK(out.nodeid == want_node && out.offset == want_offset && out.size == want_size,
                 "RETRIEVE of node {} at {} for {} bytes, asked: node {} at {} for {}", out.nodeid, out.offset,
                 out.size, want_node, want_offset, want_size);
      FUZZ_CHECK(out.notify_unique != 0 && !ids.contains(out.notify_unique), "RETRIEVE id {} used before",
                 out.notify_unique);
      ids.insert(out.notify_unique);
      id_list.push_back(out.notify_unique);
      last_id = out.notify_unique;
      ++notifications;
      return 0;
    }
    if (h.unique == init_unique) {
      init_unique = 0;
      return 0;
    }
    FUZZ_CHECK(h.unique % 2 == 0, "a reply to {:#x}, which no request had", h.unique);
    auto it = expected.find(h.unique);
    FUZZ_CHECK(it != expected.end(), "request {:#x} answered before a NOTIFY_REPLY or a detach decided its answer (or twice)",
               h.unique);
    const std::string got = h.error != 0 ? fmt::format("error {}", -h.error)
                                         : std::string(reinterpret_cast<const char*>(payload.data()), payload.size());
    FUZZ_CHECK(got == it->second, "request {:#x} answered '{}', expected '{}'", h.unique, got, it->second);
    expected.erase(it);
    asking.erase(h.unique);
    return 0;
  }
};

void run(input& in, bool split) {
  retrieving_fs fs;
  fusexx::session session;
  fusexx::detail::dispatcher<retrieving_fs> d{fs, session};
  kernel_side kernel;
  const fusexx::detail::reply_sink sink{&kernel, &kernel_side::send};
  std::uint64_t next_unique = 2;
  bool attached = true;

  // One request; `first` bytes of it in the first segment (the rest as io_uring's payload).
  const auto feed = [&](const std::vector<std::byte>& bytes, std::size_t first) {
    fusexx::buffer buf(bytes.size() + 4096);
    std::memcpy(buf.data(), bytes.data(), bytes.size());
    const std::size_t scratch_at = (bytes.size() + 63) & ~std::size_t{63};
    fusexx::detail::incoming msg{.bytes = std::span<const std::byte>(buf.data(), first),
                                 .scratch = buf.span().subspan(scratch_at),
                                 .owner = &buf,
                                 .sink = sink,
                                 .payload = std::span<const std::byte>(buf.data() + first, bytes.size() - first)};
    return d.handle(msg);
  };
  const auto request = [&](opcode op, std::uint64_t unique, std::uint64_t node, std::span<const std::byte> body) {
    proto::in_header h{};
    h.len = static_cast<std::uint32_t>(sizeof h + body.size());
    h.opcode = static_cast<std::uint32_t>(op);
    h.unique = unique;
    h.nodeid = node;
    std::vector<std::byte> bytes(sizeof h);
    std::memcpy(bytes.data(), &h, sizeof h);
    bytes.insert(bytes.end(), body.begin(), body.end());
    return bytes;
  };

  {
    proto::init_in init{};
    init.major = 7;
    init.minor = 45;
    init.max_readahead = 131072;
    kernel.init_unique = next_unique;
    const auto bytes = request(opcode::init, next_unique, 0, fusexx::detail::bytes_of(init));
    feed(bytes, bytes.size());
    FUZZ_CHECK(kernel.init_unique == 0, "INIT was not answered");
    next_unique += 2;
  }

  std::uint64_t newest_asking = 0;
  while (!in.empty()) {
    switch (in.u8() % f::action_count) {
      case f::ask: {
        fs.node = in.u64();
        fs.offset = static_cast<off_t>(in.u64());
        fs.size = in.u32();
        kernel.want_node = fs.node;
        kernel.want_offset = static_cast<std::uint64_t>(fs.offset);
        kernel.want_size = fs.size;
        const std::uint64_t unique = next_unique;
        next_unique += 2;
        kernel.last_id.reset();
        if (!attached) kernel.expected[unique] = fmt::format("error {}", ENOTCONN);  // answered at once
        std::vector<std::byte> body(sizeof(proto::getxattr_in));
        const proto::getxattr_in g{.size = 64};
        std::memcpy(body.data(), &g, sizeof g);
        for (char c : std::string_view("user.r\0", 7)) body.push_back(std::byte(c));
        const auto bytes = request(opcode::getxattr, unique, 1, body);
        const auto what = feed(bytes, bytes.size());
        if (!attached) {
          FUZZ_CHECK(!kernel.last_id && what == fusexx::detail::disposition::replied,
                     "a retrieve while detached did not fail at once");
          break;
        }
        FUZZ_CHECK(kernel.last_id && what == fusexx::detail::disposition::suspended,
                   "a retrieve did not send its RETRIEVE and wait");
        kernel.asking[unique] = *kernel.last_id;
        kernel.live[*kernel.last_id] = unique;
        newest_asking = unique;
        break;
      }
      case f::answer: {
        const std::uint8_t how = in.u8();
        std::uint64_t unique = in.u64();
        const std::uint16_t ext = (how & f::how_ext) ? in.u8() : 0;
        auto raw = in.bytes(in.u16());
        std::vector<std::byte> body(raw.size());
        if (!raw.empty()) std::memcpy(body.data(), raw.data(), raw.size());
        if ((how & f::how_aim) && !kernel.id_list.empty()) unique = kernel.id_list[unique % kernel.id_list.size()];
        proto::notify_retrieve_in a{};
        const bool has_struct = body.size() >= sizeof a;
        if (has_struct) {
          std::memcpy(&a, body.data(), sizeof a);
          if (how & f::how_fix_size) {
            a.size = static_cast<std::uint32_t>(body.size() - sizeof a);
            std::memcpy(body.data(), &a, sizeof a);
          }
        }
        auto bytes = request(opcode::notify_reply, unique, 0, body);
        proto::in_header h;
        std::memcpy(&h, bytes.data(), sizeof h);
        if (!(how & f::how_fix_len)) h.len = static_cast<std::uint32_t>(h.len + (unique & 0x3)) - 1;  // near, may be right
        h.total_extlen = ext;
        std::memcpy(bytes.data(), &h, sizeof h);
        const std::size_t data_at = sizeof h + sizeof a;
        const std::size_t first = split ? std::min(bytes.size(), data_at) : bytes.size();
        // A reply it may cause: the waiting handler's, with the data the
        // reply carries (extensions come off the end).
        const std::size_t after_struct = has_struct ? body.size() - sizeof a : 0;
        const bool clean = h.len == bytes.size() && ext == 0 && has_struct && a.size <= after_struct;
        std::uint64_t waiter = 0;
        if (auto it = kernel.live.find(unique); it != kernel.live.end()) {
          waiter = it->second;
          if (has_struct && a.size <= after_struct)
            kernel.expected[waiter] =
                digest(off_t(a.offset), std::span<const std::byte>(body).subspan(sizeof a, a.size));
        }
        const std::size_t replies_before = kernel.asking.size();
        const auto what = feed(bytes, first);
        FUZZ_CHECK(what == fusexx::detail::disposition::no_reply, "NOTIFY_REPLY answered");
        if (waiter != 0) {
          const bool answered = !kernel.asking.contains(waiter);
          FUZZ_CHECK(answered || !clean, "a well-formed NOTIFY_REPLY (id {}, {} bytes) left its retrieve waiting",
                     unique, a.size);
          if (answered) kernel.live.erase(unique);
          else kernel.expected.erase(waiter);  // still undecided
        } else {
          FUZZ_CHECK(kernel.asking.size() == replies_before, "a NOTIFY_REPLY for id {}, which nobody waits for, "
                     "answered a request", unique);
        }
        break;
      }
      case f::wait: {
        kernel.want_node = in.u64();
        kernel.want_offset = 0;
        kernel.want_size = in.u32();
        kernel.last_id.reset();
        auto r = session.notify().retrieve_wait(kernel.want_node, 0, kernel.want_size, std::chrono::milliseconds(0));
        FUZZ_CHECK(!r, "retrieve_wait with no time to wait got an answer");
        const int want = attached ? ETIMEDOUT : ENOTCONN;
        FUZZ_CHECK(r.error().value() == want, "retrieve_wait: {}, expected {}", r.error().message(),
                   std::strerror(want));
        FUZZ_CHECK(kernel.last_id.has_value() == attached, "retrieve_wait {} a RETRIEVE",
                   attached ? "sent no" : "sent, detached,");
        break;
      }
      case f::detach: {
        for (auto& [unique, id] : kernel.asking) kernel.expected[unique] = fmt::format("error {}", ENOTCONN);
        session.notify().detach();
        FUZZ_CHECK(kernel.asking.empty(), "{} handler(s) still waiting after detach", kernel.asking.size());
        kernel.live.clear();
        attached = in.u8() & 1;  // attached again, or stays detached for a while
        if (attached) session.notify().attach(sink);
        break;
      }
      case f::interrupt: {
        if (newest_asking == 0) break;
        proto::interrupt_in body{.unique = newest_asking};
        const auto bytes = request(opcode::interrupt, next_unique, 0, fusexx::detail::bytes_of(body));
        next_unique += 2;
        FUZZ_CHECK(feed(bytes, bytes.size()) == fusexx::detail::disposition::no_reply, "INTERRUPT answered");
        break;
      }
    }
  }
  // The end, as a server's stop: detach; every handler still waiting ends.
  for (auto& [unique, id] : kernel.asking) kernel.expected[unique] = fmt::format("error {}", ENOTCONN);
  session.notify().detach();
  FUZZ_CHECK(kernel.asking.empty() && kernel.expected.empty(), "{} handler(s) never answered", kernel.asking.size());
  d.end_session();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fusexx::log::set_level(fusexx::log::level::off);
  input in(data, size);
  const std::uint8_t config = in.u8();
  run(in, config & f::config_split);
  return 0;
}
