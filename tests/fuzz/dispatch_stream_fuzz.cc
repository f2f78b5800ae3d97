// Fuzz target: the dispatcher on a whole request stream, as a transport feeds
// it — INIT, then any sequence of requests of any opcode, length and content —
// against memfs and against a filesystem that implements nothing.
//
// Input: as tests/fuzz/stream.hpp describes (a config byte, an INIT, then
// records of one read() each, with bits that steer what a fuzzer could not
// guess). Every request gets a fresh even unique, as from the kernel.
//
// Checked on every message the dispatcher writes: the out_header's length is
// the message's; a reply's error is 0 or -errno and carries nothing else; a
// notification's code is a real one; each reply answers a request that is
// waiting for one, exactly once; requests that need no reply (FORGET,
// BATCH_FORGET, INTERRUPT, NOTIFY_REPLY) get none; a successful reply of a
// fixed shape has that shape's size. At the end every request still waiting
// is interrupted, as the kernel would on a signal, and must then be answered.
#include <sys/uio.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "examples/memfs_fs.hpp"
#include "tests/fuzz/fuzz.hpp"
#include "tests/fuzz/kernel_side.hpp"
#include "tests/fuzz/stream.hpp"

namespace {

using fusexx::proto::opcode;
namespace proto = fusexx::proto;

// A filesystem with no operations: everything but the session's own
// requests must come back ENOSYS.
struct nothing_fs : fusexx::filesystem_base<nothing_fs> {};

using namespace fusexx::fuzzing;

// The size a successful reply to `op` has (INIT's depends on the minor;
// READ, READDIR, READLINK, GETXATTR and the like vary): nullopt if it varies.
std::optional<std::size_t> fixed_reply_size(std::uint32_t op) {
  switch (static_cast<opcode>(op)) {
    case opcode::lookup:
    case opcode::mknod:
    case opcode::mkdir:
    case opcode::symlink:
    case opcode::link: return sizeof(proto::entry_out);
    case opcode::create: return sizeof(proto::entry_out) + sizeof(proto::open_out);
    case opcode::getattr:
    case opcode::setattr: return sizeof(proto::attr_out);
    case opcode::open:
    case opcode::opendir: return sizeof(proto::open_out);
    case opcode::statfs: return sizeof(proto::statfs_out);
    case opcode::write: return sizeof(proto::write_out);
    case opcode::getlk: return sizeof(proto::lk_out);
    case opcode::lseek: return sizeof(proto::lseek_out);
    case opcode::bmap: return sizeof(proto::bmap_out);
    case opcode::copy_file_range: return sizeof(proto::write_out);
    case opcode::release:
    case opcode::releasedir:
    case opcode::unlink:
    case opcode::rmdir:
    case opcode::rename:
    case opcode::rename2:
    case opcode::flush:
    case opcode::fsync:
    case opcode::fsyncdir:
    case opcode::setxattr:
    case opcode::removexattr:
    case opcode::access:
    case opcode::setlk:
    case opcode::setlkw:
    case opcode::fallocate: return 0;
    default: return std::nullopt;
  }
}

// What the "kernel" side knows: the requests waiting for a reply, and what
// replies handed out. Replies may come from other threads (memfs resumes
// suspended writes on its invalidation thread), hence the mutex.
struct kernel_side {
  std::mutex mutex;
  std::condition_variable answered;
  struct waiting {
    std::uint32_t op;
    bool refuse;
  };
  std::map<std::uint64_t, waiting> outstanding;
  fusexx::fuzzing::known_ids ids;  // what the replies handed out
  std::uint64_t replies = 0;
  const bool trace = std::getenv("FUZZ_TRACE") != nullptr;  // print every reply (reading a crash)

  static int send(void* self, const iovec* iov, int count) {
    return static_cast<kernel_side*>(self)->receive(iov, count);
  }

  int receive(const iovec* iov, int count) {
    const auto m = fusexx::fuzzing::read_message(iov, count);
    const proto::out_header& h = m.header;
    const auto payload = m.payload();

    std::lock_guard lock(mutex);
    if (h.unique == 0) {  // a notification
      FUZZ_CHECK(h.error >= static_cast<int>(proto::notify_code::poll) &&
                     h.error <= static_cast<int>(proto::notify_code::prune),
                 "notification with code {}", h.error);
      return 0;
    }
    auto it = outstanding.find(h.unique);
    FUZZ_CHECK(it != outstanding.end(), "reply to unique {:#x}, which is not waiting for one (answered twice?)",
               h.unique);
    const waiting w = it->second;
    outstanding.erase(it);
    if (trace) std::fprintf(stderr, "reply %#lx %s: error %d, %zu bytes\n", h.unique, proto::name(opcode(w.op)).data(), h.error, payload.size());
    ++replies;
    answered.notify_all();
    FUZZ_CHECK(h.error <= 0 && h.error > -4096, "reply error {} to {}", h.error, proto::name(opcode(w.op)));
    if (h.error != 0) {
      FUZZ_CHECK(payload.empty(), "an error reply ({}) to {} carries {} bytes", h.error,
                 proto::name(opcode(w.op)), payload.size());
    } else if (auto size = fixed_reply_size(w.op)) {
      FUZZ_CHECK(payload.size() == *size, "{} answered with {} bytes, not {}", proto::name(opcode(w.op)),
                 payload.size(), *size);
    }
    if (h.error == 0) ids.learn(w.op, payload);
    return w.refuse ? -ENOENT : 0;
  }
};

// A request of ours (INIT, the closing INTERRUPTs): header and body; deliver
// sets its unique.
template <class Body>
std::vector<std::byte> request_bytes(opcode op, const Body& body) {
  proto::in_header h{};
  h.len = sizeof h + sizeof body;
  h.opcode = static_cast<std::uint32_t>(op);
  std::vector<std::byte> bytes(h.len);
  std::memcpy(bytes.data(), &h, sizeof h);
  std::memcpy(bytes.data() + sizeof h, &body, sizeof body);
  return bytes;
}

// A buffer as a transport's: the request, then room for reply data.
constexpr std::size_t buffer_size = 128 * 1024 + 4096;

template <class Fs>
void run_stream(Fs& fs, fusexx::fuzzing::input& in, bool stream_has_init) {
  fusexx::session session;
  fusexx::detail::dispatcher<Fs> d{fs, session};
  kernel_side kernel;
  const fusexx::detail::reply_sink sink{&kernel, &kernel_side::send};
  fusexx::buffer buf{buffer_size};
  std::uint64_t next_unique = 2;

  const auto deliver = [&](std::vector<std::byte> bytes, std::uint8_t how, std::uint8_t split_at) {
    proto::in_header h{};
    const bool whole = bytes.size() >= sizeof h;
    if (whole) {
      std::memcpy(&h, bytes.data(), sizeof h);
      if (how & how_fix_len) h.len = static_cast<std::uint32_t>(bytes.size());
      h.unique = next_unique;
      next_unique += 2;
      {
        std::lock_guard lock(kernel.mutex);
        if (how & how_known_node) h.nodeid = kernel.ids.node(h.nodeid);
        const std::size_t body = bytes.size() - sizeof h;
        if ((how & how_known_fh) && body >= sizeof(std::uint64_t)) {
          std::uint64_t fh;  // the word says which of the handles seen so far
          std::memcpy(&fh, bytes.data() + sizeof h, sizeof fh);
          fh = kernel.ids.handle(fh);
          std::memcpy(bytes.data() + sizeof h, &fh, sizeof fh);
        }
        if ((how & how_aim_interrupt) && h.opcode == static_cast<std::uint32_t>(opcode::interrupt) &&
            body >= sizeof(proto::interrupt_in) && !kernel.outstanding.empty()) {
          const std::uint64_t target = kernel.outstanding.rbegin()->first;
          std::memcpy(bytes.data() + sizeof h, &target, sizeof target);
        }
        if (!needs_no_reply(h.opcode))
          kernel.outstanding.emplace(h.unique, kernel_side::waiting{h.opcode, (how & how_refuse) != 0});
      }
      std::memcpy(bytes.data(), &h, sizeof h);
    }
    if (!buf) buf = fusexx::buffer(buffer_size);  // the last one went with a suspended handler
    if (!bytes.empty()) std::memcpy(buf.data(), bytes.data(), bytes.size());
    std::size_t first = bytes.size();
    if ((how & how_split) && whole) first = std::min(bytes.size(), sizeof h + split_at);
    const std::size_t scratch_at = (bytes.size() + 63) & ~std::size_t{63};
    fusexx::detail::incoming msg{.bytes = std::span<const std::byte>(buf.data(), first),
                                 .scratch = buf.span().subspan(scratch_at),
                                 .owner = &buf,
                                 .sink = sink,
                                 .payload = std::span<const std::byte>(buf.data() + first, bytes.size() - first)};
    const auto what = d.handle(msg);
    std::lock_guard lock(kernel.mutex);
    const bool still_waiting = whole && kernel.outstanding.contains(h.unique);
    const std::string_view name = whole ? proto::name(opcode(h.opcode)) : "(no header)";
    switch (what) {
      case fusexx::detail::disposition::replied:
        FUZZ_CHECK(whole && !still_waiting, "{} said replied, but no reply came", name);
        break;
      case fusexx::detail::disposition::no_reply:
        // (It may have caused another request's reply: an INTERRUPT ends a waiting lock.)
        FUZZ_CHECK(!whole || needs_no_reply(h.opcode), "{} needs a reply and got none", name);
        break;
      case fusexx::detail::disposition::suspended:
        FUZZ_CHECK(whole && !needs_no_reply(h.opcode), "{} suspended, but needs no reply", name);
        break;
    }
  };

  if (!stream_has_init) {
    proto::init_in init{};
    init.major = 7;
    init.minor = init_minors[in.u8() % std::size(init_minors)];
    init.flags = in.u32();
    init.flags2 = in.u32();
    init.max_readahead = in.u32();
    deliver(request_bytes(opcode::init, init), how_fix_len, 0);
  }
  while (!in.empty()) {
    const std::size_t length = in.u16();
    const std::uint8_t how = in.u8();
    const std::uint8_t split_at = in.u8();
    auto raw = in.bytes(length);
    std::vector<std::byte> bytes(raw.size());
    if (!raw.empty()) std::memcpy(bytes.data(), raw.data(), raw.size());
    deliver(std::move(bytes), how, split_at);
  }

  // The end: interrupt whatever still waits, as a signal would, and expect
  // every one answered (a waiter that ignores its interrupt would hang its
  // application). Answers may come from memfs's own thread.
  std::vector<std::uint64_t> waiting;
  {
    std::lock_guard lock(kernel.mutex);
    for (auto& [unique, w] : kernel.outstanding) waiting.push_back(unique);
  }
  for (std::uint64_t unique : waiting) {
    deliver(request_bytes(opcode::interrupt, proto::interrupt_in{.unique = unique}), how_fix_len, 0);
  }
  {
    std::unique_lock lock(kernel.mutex);
    const bool all = kernel.answered.wait_for(lock, std::chrono::seconds(5), [&] { return kernel.outstanding.empty(); });
    FUZZ_CHECK(all, "{} request(s) never answered, the first {} (unique {:#x}), though interrupted",
               kernel.outstanding.size(), proto::name(opcode(kernel.outstanding.begin()->second.op)),
               kernel.outstanding.begin()->first);
  }
  // A handler resumed on another thread sends its reply and only then
  // leaves the session's scope (its bookkeeping after the reply touches the
  // session): wait for every one to leave, as the server does before it
  // ends a session. (Found by this target: without it the session went
  // out of scope under memfs's invalidation thread.) size() takes the
  // scope's lock, so the last one to leave has let go of it too.
  FUZZ_CHECK(session.scope().join(std::chrono::steady_clock::now() + std::chrono::seconds(5)),
             "{} handler(s) still running 5 s after their replies", session.scope().size());
  (void)session.scope().size();
  d.end_session();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fusexx::log::set_level(fusexx::log::level::off);
  fusexx::fuzzing::input in(data, size);
  const std::uint8_t config = in.u8();
  const bool stream_has_init = config & config_own_init;
  if (config & config_nothing_fs) {
    nothing_fs fs;
    run_stream(fs, in, stream_has_init);
  } else {
    memfs_fs fs;
    // Bounded, so that writes at any offset stay within the fuzzer's memory.
    fs.option("size", "16m");
    fs.option("nr_inodes", "4096");
    run_stream(fs, in, stream_has_init);
  }
  return 0;
}
