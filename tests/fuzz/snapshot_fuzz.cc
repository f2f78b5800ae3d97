// Fuzz target: reading snapshots (fusexx/restart/snapshot.hpp's reader, on
// any bytes, from memory or from a memfd) and what reads them: the
// framework's part (restart/session_snapshot.hpp: the session and the io_uring
// entry layout, then session::restore and entry_region::map), memfs's and
// passthrough's restore(), and the handover's messages (restart/handover.hpp,
// over a socket, with fds beside).
//
// Input: u8 config:
//   bits 0-1  what reads it: 0 the server's order (restart type, session,
//             entry layout, memfs's part; server.hpp restore_from), 1
//             passthrough's part (its root, inodes, open files and
//             directories, whose fds come beside), 2 a handover message, 3
//             the session and entry layout alone, restored into a session
//   bit 2     the header is made here (magic, version, length, CRC-32C), so
//             the bytes are the payload; else they are the whole snapshot
//   bit 3     through a memfd (snapshot_reader::open), bit 4: a sealed one
//   bit 5     passthrough: its root's device and inode are this one's
//             (payload bytes 7-22), so a restore gets past the EXDEV check
// u8 fds beside (mod 9), u8 of which kinds (/dev/null, the source
// directory), then the bytes.
//
// Checked: a refusal has a reason (EBADMSG, EPROTO, EINVAL, ...), never a
// crash, a hang or an allocation without bound; what is accepted is
// consistent: the session restored describes itself as the snapshot said
// (lookup counts and opens summed per node and handle), and writes and reads
// back the same; memfs and passthrough save what they restored, and that
// restores to the same again; an entry layout that maps covers its entries;
// a handover message sent again reads back the same; and no fd leaks (every
// fd beside a snapshot is closed with it or with the filesystem that took it).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <fusexx/fusexx.hpp>
#include <fusexx/restart/handover.hpp>
#include <fusexx/restart/session_snapshot.hpp>

#include "examples/memfs_fs.hpp"
#include "examples/passthrough_fs.hpp"
#include "tests/fuzz/formats.hpp"
#include "tests/fuzz/fuzz.hpp"

namespace {

using namespace fusexx::fuzzing;
using namespace fusexx::fuzzing::snapshot_format;

// FUZZ_TRACE=1: say how far each input got (reading a crash, checking seeds).
void trace(std::string_view what) {
  static const bool on = std::getenv("FUZZ_TRACE") != nullptr;
  if (on) std::fprintf(stderr, "snapshot: %.*s\n", static_cast<int>(what.size()), what.data());
}

// The directory passthrough mirrors (empty; made once, removed at exit).
const std::string& source_dir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string t = std::string(base && *base ? base : "/tmp") + "/fusexx-fuzz-snapshot.XXXXXX";
    FUZZ_CHECK(::mkdtemp(t.data()) != nullptr, "mkdtemp: {}", std::strerror(errno));
    static std::string remove;
    remove = t;
    std::atexit([] { ::rmdir(remove.c_str()); });
    return t;
  }();
  return dir;
}

std::vector<fusexx::unique_fd> fds_beside(unsigned count, std::uint8_t kinds) {
  std::vector<fusexx::unique_fd> fds;
  for (unsigned i = 0; i < count; ++i) {
    const int fd = ((kinds >> i) & 1) ? ::open(source_dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                                      : ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0, "open: {}", std::strerror(errno));
    fds.emplace_back(fd);
  }
  return fds;
}

void check_refusal(const fusexx::failure& f, std::string_view what) {
  FUZZ_CHECK(f.code.value() > 0 && !f.message.empty(), "{} refused without a reason ({}: '{}')", what, f.code.value(),
             f.message);
}

// The reader, from the bytes or through a memfd.
fusexx::outcome<fusexx::snapshot_reader> open_reader(std::uint8_t config, std::vector<std::byte> bytes) {
  if (!(config & config_memfd)) return fusexx::snapshot_reader::from_bytes(std::move(bytes));
  fusexx::unique_fd fd(::memfd_create("fuzz-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  FUZZ_CHECK(fd.get() >= 0, "memfd_create: {}", std::strerror(errno));
  if (!bytes.empty()) FUZZ_CHECK(::write(fd.get(), bytes.data(), bytes.size()) == ssize_t(bytes.size()), "write");
  if (config & config_sealed)
    FUZZ_CHECK(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) == 0, "seal");
  return fusexx::snapshot_reader::open(fd.get());
}

// ---- the session ----

using node_books = std::map<fusexx::ino, std::pair<std::uint64_t, std::uint64_t>>;  // generation, lookups
using handle_books = std::map<std::tuple<fusexx::ino, fusexx::fhandle, bool>, std::pair<int, std::uint64_t>>;

// What session::restore must make of a description: counts summed per node
// and per handle (what the kernel holds of each; a sum stops at 2^64-1),
// nothing for a count of 0.
void expected_books(const fusexx::session_description& d, node_books& nodes, handle_books& handles) {
  for (const auto& n : d.nodes) {
    if (n.node == 0 || n.lookups == 0) continue;
    auto& [gen, lookups] = nodes[n.node];
    gen = n.generation;
    fusexx::detail::add_count(lookups, n.lookups);
  }
  for (const auto& h : d.handles) {
    if (h.opens == 0) continue;
    auto& [flags, opens] = handles[{h.node, h.fh, h.directory}];
    flags = h.flags;
    fusexx::detail::add_count(opens, h.opens);
  }
}

void check_session(const fusexx::session_description& d, const fusexx::mount_description& m) {
  fusexx::session s;
  s.restore(d);
  const auto back = s.describe();
  FUZZ_CHECK(back.proto_major == d.proto_major && back.proto_minor == d.proto_minor && back.max_write == d.max_write &&
                 back.max_readahead == d.max_readahead && back.time_gran == d.time_gran &&
                 back.max_background == d.max_background,
             "the session does not describe the INIT it was restored with");
  node_books want_nodes, got_nodes;
  handle_books want_handles, got_handles;
  expected_books(d, want_nodes, want_handles);
  fusexx::session_description again;
  again.nodes = back.nodes;
  again.handles = back.handles;
  expected_books(again, got_nodes, got_handles);
  FUZZ_CHECK(got_nodes == want_nodes, "the session holds {} node(s), the snapshot said {}", got_nodes.size(),
             want_nodes.size());
  FUZZ_CHECK(got_handles == want_handles, "the session holds {} open handle(s), the snapshot said {}",
             got_handles.size(), want_handles.size());
  FUZZ_CHECK(back.backing_ids == d.backing_ids, "the session holds {} backing id(s), the snapshot said {}",
             back.backing_ids.size(), d.backing_ids.size());
  // Written and read back: the same.
  fusexx::snapshot_writer w;
  fusexx::write_session(w, back, m);
  auto r = fusexx::snapshot_reader::from_bytes(w.seal_to_bytes());
  FUZZ_CHECK(r.has_value(), "a written session does not read back");
  fusexx::session_description d2;
  fusexx::mount_description m2;
  FUZZ_CHECK(fusexx::read_session(*r, d2, m2), "a written session does not read back");
  FUZZ_CHECK(d2.nodes.size() == back.nodes.size() && d2.handles.size() == back.handles.size() &&
                 m2.mountpoint == m.mountpoint && m2.helper == m.helper && m2.method == m.method &&
                 d2.granted == back.granted && d2.max_pages == back.max_pages,
             "a written session reads back different");
}

// An io_uring entry layout that maps must cover every entry (tried when the
// region would be small).
void check_layout(const fusexx::transport::entry_layout& l) {
  if (l.stride == 0 || l.queues == 0 || l.depth == 0 || l.stride > (1u << 20) || l.queues > 64 || l.depth > 64 ||
      l.size() > (4u << 20))
    return;
  fusexx::unique_fd fd(::memfd_create("fuzz-entries", MFD_CLOEXEC));
  FUZZ_CHECK(fd.get() >= 0 && ::ftruncate(fd.get(), static_cast<off_t>(l.size())) == 0, "memfd");
  auto region = fusexx::transport::entry_region::map(std::move(fd), l);
  if (!region) {
    check_refusal(region.error(), "entry_region::map");
    return trace(region.error().message);
  }
  trace("entry layout mapped");
  const auto* begin = reinterpret_cast<const std::byte*>(static_cast<std::uintptr_t>(l.base));
  const auto* end = begin + l.size();
  for (unsigned q = 0; q < l.queues; ++q)
    for (unsigned i = 0; i < l.depth; ++i) {
      const auto* h = reinterpret_cast<const std::byte*>((*region)->header(q, i));
      const auto* p = (*region)->payload(q, i);
      FUZZ_CHECK(h >= begin && h + sizeof(fusexx::proto::uring_req_header) <= p && p + l.payload <= end,
                 "entry {}/{} of a mapped layout (stride {}, payload {}) lies outside it", q, i, l.stride, l.payload);
    }
}

// ---- the filesystems ----

// memfs's part of a snapshot with its inodes and directory streams in one
// order: memfs keeps both in unordered maps, so two saves of one state may
// list them in different orders.
std::vector<std::byte> canonical_memfs(const fusexx::snapshot_writer& w) {
  const auto all = w.seal_to_bytes();
  auto r = fusexx::snapshot_reader::from_bytes(all);
  FUZZ_CHECK(r.has_value(), "memfs's own snapshot is refused");
  const auto at = [&] { return all.size() - r->left(); };
  const auto piece = [&](std::size_t from) { return std::vector<std::byte>(all.begin() + from, all.begin() + at()); };
  std::uint32_t u32 = 0;
  std::uint64_t u64 = 0, count = 0;
  bool b = false;
  const std::size_t start = at();
  bool ok = r->u32(u32);
  for (int i = 0; i < 5; ++i) ok = ok && r->u64(u64);  // limits, timeouts, wanted INIT flags
  ok = ok && r->boolean(b);
  for (int i = 0; i < 4; ++i) ok = ok && r->u64(u64);  // next ino and fh, lock generation, forget errors
  ok = ok && r->count(count, 1);
  auto out = piece(start);
  std::vector<std::vector<std::byte>> items;
  for (std::uint64_t k = 0; ok && k < count; ++k) {
    const std::size_t from = at();
    memfs::inode scratch;
    ok = memfs::restore_inode(*r, scratch);
    items.push_back(piece(from));
  }
  std::sort(items.begin(), items.end());
  for (const auto& i : items) out.insert(out.end(), i.begin(), i.end());
  items.clear();
  const std::size_t streams = at();
  ok = ok && r->count(count, 1);
  out.insert(out.end(), all.begin() + streams, all.begin() + at());
  for (std::uint64_t k = 0; ok && k < count; ++k) {
    const std::size_t from = at();
    ok = r->u64(u64) && r->u64(u64);
    items.push_back(piece(from));
  }
  std::sort(items.begin(), items.end());
  for (const auto& i : items) out.insert(out.end(), i.begin(), i.end());
  FUZZ_CHECK(ok && r->left() == 0, "memfs's own snapshot does not read as memfs writes it");
  return out;
}

void check_memfs_round_trip(memfs_fs& fs) {
  fusexx::snapshot_writer w1;
  FUZZ_CHECK(fs.save(w1).has_value(), "memfs cannot save what it restored");
  auto r = fusexx::snapshot_reader::from_bytes(w1.seal_to_bytes());
  FUZZ_CHECK(r.has_value(), "memfs's own snapshot is refused");
  memfs_fs again;
  auto restored = again.restore(*r);
  FUZZ_CHECK(restored && r->ok() && r->left() == 0, "memfs does not restore what it saved: {}",
             restored ? "reader failed or bytes left" : restored.error().message());
  fusexx::snapshot_writer w2;
  FUZZ_CHECK(again.save(w2).has_value(), "memfs cannot save what it restored");
  FUZZ_CHECK(canonical_memfs(w1) == canonical_memfs(w2),
             "memfs saves, restores and saves something else ({} bytes, then {})", w1.size(), w2.size());
}

bool open_source(passthrough_fs& fs) {
  auto src = fs.use_source(source_dir());
  auto opened = fs.open_source();
  FUZZ_CHECK(src && opened, "passthrough cannot open {}", source_dir());
  return true;
}

void check_passthrough_round_trip(passthrough_fs& fs) {
  fusexx::snapshot_writer w1;
  FUZZ_CHECK(fs.save(w1).has_value(), "passthrough cannot save what it restored");
  std::vector<fusexx::unique_fd> fds;
  for (int fd : w1.fds()) {
    FUZZ_CHECK(::fcntl(fd, F_GETFD) >= 0, "passthrough saved fd {}, which is not open", fd);
    fds.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  }
  auto r = fusexx::snapshot_reader::from_bytes(w1.seal_to_bytes());
  FUZZ_CHECK(r.has_value(), "passthrough's own snapshot is refused");
  r->attach_fds(std::move(fds));
  passthrough_fs again;
  open_source(again);
  auto restored = again.restore(*r);
  FUZZ_CHECK(restored && r->ok() && r->left() == 0 && r->fds_left() == 0,
             "passthrough does not restore what it saved: {}",
             restored ? "reader failed, or bytes or fds left" : restored.error().message());
  fusexx::snapshot_writer w2;
  FUZZ_CHECK(again.save(w2).has_value(), "passthrough cannot save what it restored");
  FUZZ_CHECK(w1.seal_to_bytes() == w2.seal_to_bytes(),
             "passthrough saves, restores and saves something else ({} bytes, then {})", w1.size(), w2.size());
}

// ---- the modes ----

void server_order_mode(fusexx::snapshot_reader& r) {
  std::string type;
  fusexx::session_description d;
  fusexx::mount_description m;
  std::optional<fusexx::transport::entry_layout> entries;
  if (!r.str(type) || !fusexx::read_session(r, d, m) || !fusexx::read_entry_layout(r, entries)) return;
  if (entries) check_layout(*entries);
  trace("session read");
  if (type != "memfs") return;
  memfs_fs fs;
  auto restored = fs.restore(r);
  if (!restored || !r.ok()) return;
  trace("memfs restored");
  check_session(d, m);
  check_memfs_round_trip(fs);
}

void session_mode(fusexx::snapshot_reader& r) {
  fusexx::session_description d;
  fusexx::mount_description m;
  std::optional<fusexx::transport::entry_layout> entries;
  if (!fusexx::read_session(r, d, m) || !fusexx::read_entry_layout(r, entries)) return;
  trace("session read");
  if (entries) check_layout(*entries);
  check_session(d, m);
}

void passthrough_mode(fusexx::snapshot_reader& r) {
  passthrough_fs fs;
  open_source(fs);
  auto restored = fs.restore(r);
  if (!restored || !r.ok()) return trace(restored ? "passthrough: the reader failed" : restored.error().message());
  trace("passthrough restored");
  check_passthrough_round_trip(fs);
}

void handover_mode(std::vector<std::byte> bytes, std::vector<fusexx::unique_fd> fds) {
  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
  fusexx::unique_fd a(sv[0]), b(sv[1]);
  std::vector<int> raw;
  for (auto& f : fds) raw.push_back(f.get());
  if (bytes.empty() || !fusexx::send_with_fds(b.get(), bytes, raw)) return;
  fds.clear();  // in flight now
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  auto m = fusexx::handover::receive(a.get(), deadline);
  if (!m) {
    FUZZ_CHECK(m.error().value() == EBADMSG || m.error().value() == EMSGSIZE,
               "handover::receive refused a message with {}", m.error().message());
    return;
  }
  trace("handover message read");
  FUZZ_CHECK(m->fds.size() == raw.size(), "handover::receive gave {} fds of {}", m->fds.size(), raw.size());
  std::vector<int> again;
  for (auto& f : m->fds) again.push_back(f.get());
  const bool sent = fusexx::handover::send(b.get(), *m, again).has_value();
  FUZZ_CHECK(sent, "a message handover::receive took cannot be sent again");
  auto m2 = fusexx::handover::receive(a.get(), deadline);
  FUZZ_CHECK(m2 && m2->what == m->what && m2->version == m->version && m2->pid == m->pid && m2->text == m->text &&
                 m2->queue == m->queue && m2->index == m->index && m2->connection == m->connection &&
                 m2->count == m->count && m2->fds.size() == m->fds.size(),
             "a handover message sent again reads back different");
}

void run(input& in) {
  const std::uint8_t config = in.u8();
  const unsigned fd_count = in.u8() % 9;
  const std::uint8_t fd_kinds = in.u8();
  auto raw = in.rest();
  std::vector<std::byte> bytes(raw.size());
  if (!raw.empty()) std::memcpy(bytes.data(), raw.data(), raw.size());
  const auto m = static_cast<mode>(config & 3);
  if (m == passthrough_part && (config & config_aim_root) && bytes.size() >= 23) {
    struct stat st {};
    FUZZ_CHECK(::stat(source_dir().c_str(), &st) == 0, "stat {}", source_dir());
    const std::uint64_t dev = st.st_dev, ino = st.st_ino;
    std::memcpy(bytes.data() + 7, &dev, 8);
    std::memcpy(bytes.data() + 15, &ino, 8);
  }
  if (config & config_make_header) {
    bytes = sealed(bytes);
  }
  auto fds = fds_beside(fd_count, fd_kinds);
  if (m == handover_message) return handover_mode(std::move(bytes), std::move(fds));

  auto r = open_reader(config, std::move(bytes));
  if (!r) {
    trace(r.error().message);
    return check_refusal(r.error(), "snapshot_reader");
  }
  r->attach_fds(std::move(fds));
  switch (m) {
    case server_order: server_order_mode(*r); break;
    case passthrough_part: passthrough_mode(*r); break;
    case session_part: session_mode(*r); break;
    default: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fusexx::log::set_level(fusexx::log::level::off);
  source_dir();  // (its fds are not counted)
  const std::size_t before = open_fds();
  {
    input in(data, size);
    run(in);
  }
  const std::size_t after = open_fds();
  FUZZ_CHECK(after == before, "{} fd(s) leaked ({} open before, {} after)", after - before, before, after);
  return 0;
}
