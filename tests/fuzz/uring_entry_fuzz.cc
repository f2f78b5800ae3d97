// Fuzz target: FUSE-over-io_uring entries as the transport serves them
// (fusexx/transport/uring_entry.hpp, used by transport/uring.hpp). What the
// kernel leaves in an entry — in_header in in_out, the first argument in
// op_in, payload_sz, and the payload buffer — is decoded (decode_entry) and
// handed to the dispatcher (memfs, or a filesystem that implements nothing);
// the reply is written back into the entry (encode_entry_reply) and
// committed, as the transport does.
//
// Input: u8 config (bit 0: the filesystem that implements nothing; bits 1-2:
// the payload buffer's size), the made INIT (u8 minor index, u32 flags, u32
// flags2; INIT always comes through /dev/fuse, as do the final INTERRUPTs),
// then entries:
//   u8 how, u8 first argument's length, u16 payload length,
//   [u32 in_header.len, u32 payload_sz: only without how_fix_sizes, which sets them as the kernel does]
//   in_header (40 bytes), the first argument (into op_in, at most 128 bytes), the payload.
//
// Checked: decode_entry refuses exactly the entries whose sizes do not add
// up (the transport then answers EIO); otherwise its bytes are in_header and
// the first argument, its payload is the buffer's first payload_sz bytes, and
// its scratch room lies in the buffer after the payload, 64-byte aligned.
// Every request's entry is committed exactly once — with its reply, or empty
// when it needs none — and a committed entry is well formed: out_header.len
// is 16 + payload_sz, the unique is the request's, the error is 0 or -errno
// and comes without data, the data in the payload buffer is exactly what the
// dispatcher sent, and it fits. Nothing but replies is written into an entry
// (notifications go to /dev/fuse). At the end every request still waiting
// is interrupted and must then be committed.
#include <sys/uio.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <fusexx/fusexx.hpp>
#include <fusexx/transport/uring_entry.hpp>

#include "examples/memfs_fs.hpp"
#include "tests/fuzz/formats.hpp"
#include "tests/fuzz/fuzz.hpp"
#include "tests/fuzz/kernel_side.hpp"
#include "tests/fuzz/stream.hpp"

namespace {

using fusexx::proto::opcode;
namespace proto = fusexx::proto;
namespace transport = fusexx::transport;
using namespace fusexx::fuzzing;

struct nothing_fs : fusexx::filesystem_base<nothing_fs> {};

namespace f = fusexx::fuzzing::uring_entry_format;

struct ring_side;

// One entry: its header area and payload buffer, and the request it holds.
struct ring_entry {
  ring_side* ring = nullptr;
  proto::uring_req_header header{};
  std::vector<std::byte> payload;
  transport::entry_head head{};
  std::uint64_t unique = 0;
  std::uint32_t op = 0;
  bool committed = false;
};

struct ring_side {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<std::uint64_t, ring_entry*> busy;  // by unique: entries holding a request not committed yet
  fusexx::fuzzing::known_ids ids;  // what the replies handed out
  const bool trace = std::getenv("FUZZ_TRACE") != nullptr;  // print every commit (reading a crash)

  // The entry's reply sink, as uring.hpp's write_reply: encode, then commit.
  static int write_reply(void* context, const iovec* iov, int count) {
    auto& e = *static_cast<ring_entry*>(context);
    FUZZ_CHECK(count >= 1 && iov[0].iov_len == sizeof(proto::out_header), "a reply without its out_header");
    proto::out_header sent;
    std::memcpy(&sent, iov[0].iov_base, sizeof sent);
    FUZZ_CHECK(sent.unique != 0, "a notification (code {}) written into an io_uring entry (request {:#x}, {})",
               sent.error, e.unique, proto::name(opcode(e.op)));
    std::vector<std::byte> data;  // what was sent, before the encoder moves it
    for (int i = 1; i < count; ++i) {
      auto p = static_cast<const std::byte*>(iov[i].iov_base);
      data.insert(data.end(), p, p + iov[i].iov_len);
    }
    const int rc = transport::encode_entry_reply(e.header, e.payload, iov, count);
    FUZZ_CHECK(rc == 0, "a {}-byte reply to {} does not fit the {}-byte payload buffer: the entry is never committed",
               data.size(), proto::name(opcode(e.op)), e.payload.size());
    std::memcpy(&sent, e.header.in_out, sizeof sent);
    const std::size_t size = e.header.ring_ent_in_out.payload_sz;
    FUZZ_CHECK(size == data.size() && (size == 0 || std::memcmp(e.payload.data(), data.data(), size) == 0),
               "the entry's payload ({} bytes) is not the {} bytes sent", size, data.size());
    FUZZ_CHECK(sent.len == sizeof sent + size, "out_header.len {} for {} bytes of data", sent.len, size);
    e.ring->commit(e, sent);
    return 0;
  }

  void commit(ring_entry& e, const proto::out_header& h) {
    std::lock_guard lock(mutex);
    FUZZ_CHECK(!e.committed, "request {:#x} ({}) committed twice", e.unique, proto::name(opcode(e.op)));
    FUZZ_CHECK(h.unique == e.unique, "the entry of request {:#x} committed with unique {:#x}", e.unique, h.unique);
    FUZZ_CHECK(h.error <= 0 && h.error > -4096, "reply error {} to {}", h.error, proto::name(opcode(e.op)));
    const std::size_t size = e.header.ring_ent_in_out.payload_sz;
    FUZZ_CHECK(h.error == 0 || size == 0, "an error reply ({}) to {} carries {} bytes", h.error,
               proto::name(opcode(e.op)), size);
    if (trace) std::fprintf(stderr, "commit %#lx %s: error %d, %zu bytes\n", e.unique, proto::name(opcode(e.op)).data(), h.error, size);
    e.committed = true;
    busy.erase(e.unique);
    changed.notify_all();
    if (h.error == 0) ids.learn(e.op, std::span<const std::byte>(e.payload.data(), size));
  }

  // The transport's commit without a reply (requests that need none).
  void commit_empty(ring_entry& e) {
    proto::out_header out{};
    out.len = sizeof out;
    out.unique = e.unique;
    std::memcpy(e.header.in_out, &out, sizeof out);
    e.header.ring_ent_in_out.payload_sz = 0;
    commit(e, out);
  }
};

// /dev/fuse: INIT's reply and notifications; nothing else comes this way.
struct device_side {
  std::uint64_t init_unique = 0;
  int init_replies = 0;
  static int send(void* self, const iovec* iov, int count) {
    auto& d = *static_cast<device_side*>(self);
    FUZZ_CHECK(count >= 1 && iov[0].iov_len == sizeof(proto::out_header), "a message without its out_header");
    proto::out_header h;
    std::memcpy(&h, iov[0].iov_base, sizeof h);
    std::size_t size = 0;
    for (int i = 1; i < count; ++i) size += iov[i].iov_len;
    FUZZ_CHECK(h.len == sizeof h + size, "out_header.len {} for {} bytes", h.len, size);
    if (h.unique == 0) {
      if (std::getenv("FUZZ_TRACE")) std::fprintf(stderr, "notification %d on /dev/fuse\n", h.error);
      FUZZ_CHECK(h.error >= static_cast<int>(proto::notify_code::poll) &&
                     h.error <= static_cast<int>(proto::notify_code::prune),
                 "notification with code {}", h.error);
      return 0;
    }
    FUZZ_CHECK(h.unique == d.init_unique && d.init_replies++ == 0, "a reply to {:#x} on /dev/fuse", h.unique);
    return 0;
  }
};

// A request through /dev/fuse, contiguous.
template <class D>
fusexx::detail::disposition on_device(D& d, device_side& dev, opcode op, std::uint64_t unique,
                                      std::span<const std::byte> body) {
  proto::in_header h{};
  h.len = static_cast<std::uint32_t>(sizeof h + body.size());
  h.opcode = static_cast<std::uint32_t>(op);
  h.unique = unique;
  fusexx::buffer buf{4096};
  std::memcpy(buf.data(), &h, sizeof h);
  if (!body.empty()) std::memcpy(buf.data() + sizeof h, body.data(), body.size());
  fusexx::detail::incoming in{.bytes = std::span<const std::byte>(buf.data(), h.len),
                              .scratch = buf.span().subspan(1024),
                              .owner = &buf,
                              .sink = {&dev, &device_side::send}};
  return d.handle(in);
}

template <class Fs>
void run(Fs& fs, input& in, std::size_t payload_size) {
  fusexx::session session;
  fusexx::detail::dispatcher<Fs> d{fs, session};
  device_side dev;
  ring_side ring;
  std::vector<std::unique_ptr<ring_entry>> entries;  // kept to the end: a handler may still hold its scratch room
  std::uint64_t next_unique = 2;

  {
    proto::init_in init{};
    init.major = 7;
    init.minor = init_minors[in.u8() % std::size(init_minors)];
    init.flags = in.u32();
    init.flags2 = in.u32() | static_cast<std::uint32_t>(proto::init_flag::over_io_uring >> 32);
    init.max_readahead = 131072;
    dev.init_unique = next_unique;
    on_device(d, dev, opcode::init, next_unique, fusexx::detail::bytes_of(init));
    next_unique += 2;
  }

  while (!in.empty() && entries.size() < 256) {
    const std::uint8_t how = in.u8();
    const std::size_t arg0 = std::min<std::size_t>(in.u8(), proto::op_in_size);
    const std::size_t payload_len = in.u16();
    std::uint32_t len = 0, payload_sz = 0;
    if (!(how & f::how_fix_sizes)) {
      len = in.u32();
      payload_sz = in.u32();
    }
    auto e = std::make_unique<ring_entry>();
    e->ring = &ring;
    e->payload.resize(payload_size);
    proto::in_header h{};
    {
      auto raw = in.bytes(sizeof h);
      if (!raw.empty()) std::memcpy(&h, raw.data(), raw.size());
    }
    {
      auto raw = in.bytes(arg0);
      if (!raw.empty()) std::memcpy(e->header.op_in, raw.data(), raw.size());
    }
    {
      auto raw = in.bytes(std::min(payload_len, payload_size));
      if (!raw.empty()) std::memcpy(e->payload.data(), raw.data(), raw.size());
    }
    if (how & f::how_fix_sizes) {
      payload_sz = static_cast<std::uint32_t>(std::min(payload_len, payload_size));
      len = static_cast<std::uint32_t>(sizeof h + arg0 + payload_sz);
    }
    h.len = len;
    h.unique = next_unique;
    next_unique += 2;
    {
      std::lock_guard lock(ring.mutex);
      if (how & f::how_known_node) h.nodeid = ring.ids.node(h.nodeid);
      if (how & f::how_known_fh) {
        std::uint64_t fh;
        std::memcpy(&fh, e->header.op_in, sizeof fh);
        fh = ring.ids.handle(fh);
        std::memcpy(e->header.op_in, &fh, sizeof fh);
      }
    }
    std::memcpy(e->header.in_out, &h, sizeof h);
    e->header.ring_ent_in_out.payload_sz = payload_sz;
    e->unique = h.unique;
    e->op = h.opcode;
    {
      std::lock_guard lock(ring.mutex);
      ring.busy.emplace(e->unique, e.get());
    }
    ring_entry& ent = *e;
    entries.push_back(std::move(e));
    const std::string_view name = proto::name(opcode(h.opcode));

    // The decoder, against what the sizes say.
    const std::size_t want_arg0 = std::size_t{len} - sizeof h - payload_sz;
    const bool consistent =
        payload_sz <= payload_size && len >= sizeof h + std::size_t{payload_sz} && want_arg0 <= proto::op_in_size;
    auto decoded = transport::decode_entry(ent.header, ent.payload, ent.head, {&ent, &ring_side::write_reply});
    FUZZ_CHECK(decoded.has_value() == consistent, "decode_entry {} an entry with len {}, payload_sz {} ({}-byte buffer)",
               decoded ? "took" : "refused", len, payload_sz, payload_size);
    if (!decoded) {
      // uring.hpp: inconsistent sizes are answered EIO at once.
      fusexx::detail::send_reply({&ent, &ring_side::write_reply}, h.unique, EIO);
      std::lock_guard lock(ring.mutex);
      FUZZ_CHECK(ent.committed, "the EIO answer to a malformed entry was not committed");
      continue;
    }
    const auto& m = *decoded;
    FUZZ_CHECK(m.bytes.data() == ent.head.data() && m.bytes.size() == sizeof h + want_arg0,
               "decoded bytes: {} of them, not in_header + {}", m.bytes.size(), want_arg0);
    FUZZ_CHECK(std::memcmp(m.bytes.data(), &h, sizeof h) == 0 &&
                   std::memcmp(m.bytes.data() + sizeof h, ent.header.op_in, want_arg0) == 0,
               "decoded bytes are not the entry's in_header and op_in");
    FUZZ_CHECK(m.payload.data() == ent.payload.data() && m.payload.size() == payload_sz,
               "decoded payload: {} bytes, not the buffer's first {}", m.payload.size(), payload_sz);
    const std::size_t scratch_at = static_cast<std::size_t>(m.scratch.data() - ent.payload.data());
    FUZZ_CHECK(scratch_at >= payload_sz && scratch_at - payload_sz < 64 &&
                   (scratch_at % 64 == 0 || scratch_at == payload_size) && scratch_at + m.scratch.size() == payload_size,
               "scratch room at {} ({} bytes) for a {}-byte payload in a {}-byte buffer", scratch_at,
               m.scratch.size(), payload_sz, payload_size);
    FUZZ_CHECK(m.owner == nullptr, "an entry's request handed a buffer owner");

    fusexx::detail::incoming msg = m;
    const auto what = d.handle(msg);
    {
      std::lock_guard lock(ring.mutex);
      switch (what) {
        case fusexx::detail::disposition::replied:
          FUZZ_CHECK(ent.committed, "{} said replied, but its entry was not committed", name);
          break;
        case fusexx::detail::disposition::no_reply:
          FUZZ_CHECK(!ent.committed, "{} said no reply, but its entry was committed with one", name);
          FUZZ_CHECK(needs_no_reply(h.opcode), "{} needs a reply and got none", name);
          break;
        case fusexx::detail::disposition::suspended:
          FUZZ_CHECK(!needs_no_reply(h.opcode), "{} suspended, but needs no reply", name);
          break;
      }
    }
    // uring.hpp: an entry whose request needs no reply goes back to the kernel all the same.
    if (what == fusexx::detail::disposition::no_reply) ring.commit_empty(ent);
  }

  // The end: interrupt whatever still waits (through /dev/fuse), and expect
  // every entry committed.
  std::vector<std::uint64_t> waiting;
  {
    std::lock_guard lock(ring.mutex);
    for (auto& [unique, e] : ring.busy) waiting.push_back(unique);
  }
  for (std::uint64_t unique : waiting) {
    proto::interrupt_in body{.unique = unique};
    on_device(d, dev, opcode::interrupt, next_unique, fusexx::detail::bytes_of(body));
    next_unique += 2;
  }
  {
    std::unique_lock lock(ring.mutex);
    const bool all = ring.changed.wait_for(lock, std::chrono::seconds(5), [&] { return ring.busy.empty(); });
    FUZZ_CHECK(all, "{} entr(ies) never committed, the first {} (unique {:#x}), though interrupted", ring.busy.size(),
               proto::name(opcode(ring.busy.begin()->second->op)), ring.busy.begin()->first);
  }
  d.end_session();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fusexx::log::set_level(fusexx::log::level::off);
  input in(data, size);
  const std::uint8_t config = in.u8();
  const std::size_t payload_size = f::payload_sizes[(config >> 1) & 3];
  if (config & f::config_nothing) {
    nothing_fs fs;
    run(fs, in, payload_size);
  } else {
    memfs_fs fs;
    fs.option("size", "16m");  // bounded, as in dispatch_stream
    fs.option("nr_inodes", "4096");
    run(fs, in, payload_size);
  }
  return 0;
}
