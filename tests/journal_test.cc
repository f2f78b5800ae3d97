// The crash journal (fusexx/restart/journal.hpp) and the journaling handler
// (fusexx/restart/journaling.hpp), without a kernel: records written and
// read back, a torn last record, overflow; and memfs driven with
// kernel-shaped requests through the journal, then a second memfs rebuilt by
// replaying it — the same nodes, the same times, the same replies — which
// answers a resent request from the journal instead of applying it again.
#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <fusexx/fusexx.hpp>
#include <fusexx/restart/journaling.hpp>

#include "examples/memfs_fs.hpp"
#include "examples/passthrough_fs.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wire.hpp"

using namespace fusexx;
using namespace fusexx::testing;

namespace {

std::span<const std::byte> bytes(const std::string& s) { return {reinterpret_cast<const std::byte*>(s.data()), s.size()}; }

journal mapped(std::uint64_t capacity) {
  auto fd = journal::create(capacity);
  REQUIRE_MESSAGE(fd, fd.error().message);
  auto j = journal::map(fd->get());
  REQUIRE_MESSAGE(j, j.error().message);
  return std::move(*j);
}

std::vector<journal::record> records(const journal& j, std::uint64_t* end = nullptr) {
  std::vector<journal::record> out;
  const auto used = j.for_each([&](const journal::record& r) { out.push_back(r); });
  if (end) *end = used;
  return out;
}

// A filesystem behind a dispatcher and, when given a journal, the
// journaling handler (replay or redo, as the filesystem says), fed requests
// the way the classic transport feeds them.
template <class Fs>
struct journaled {
  Fs fs;
  fusexx::session state;
  detail::dispatcher<Fs> d{fs, state};
  std::optional<detail::journaling<detail::dispatcher<Fs>>> j;
  recorder rec;
  buffer buf{2 << 20};

  explicit journaled(journal* log, const std::function<void(Fs&)>& setup = {}) {
    if (setup) setup(fs);
    if (log) j.emplace(d, *log, std::uint64_t{1} << 30, recovery_of<Fs>());
    REQUIRE(feed(kernel_init()).error() == 0);
  }
  // The connection's end, as DESTROY brings it: a lock request still
  // waiting (a server that "crashed" in a test) is answered and ends.
  ~journaled() { fs.destroy(); }
  // Feeds one request; `replies`: how many replies it causes (a release
  // answers the waiter it wakes too). Returns the last.
  reply feed(const std::vector<std::byte>& bytes, std::size_t replies = 1) {
    if (!buf) buf = buffer(2 << 20);
    std::memcpy(buf.data(), bytes.data(), bytes.size());
    detail::incoming in{.bytes = std::span<const std::byte>(buf.data(), bytes.size()),
                        .scratch = buf.span().subspan((bytes.size() + 63) & ~std::size_t{63}),
                        .owner = &buf,
                        .sink = rec.sink()};
    const std::size_t before = rec.size();
    if (j) j->handle(in);
    else d.handle(in);
    REQUIRE(rec.size() == before + replies);
    return rec.last();
  }
};
using journaled_memfs = journaled<memfs_fs>;

// The open handle in a CREATE reply (after its entry).
proto::open_out opened_of(const reply& created) {
  proto::open_out o{};
  REQUIRE(created.payload.size() >= sizeof(proto::entry_out) + sizeof o);
  std::memcpy(&o, created.payload.data() + sizeof(proto::entry_out), sizeof o);
  return o;
}

std::vector<std::byte> mkdir_request(std::uint64_t unique, std::uint64_t parent, const char* name) {
  return make_request(proto::opcode::mkdir, unique, parent, wire{}.add(proto::mkdir_in{0755, 022}).name(name));
}
std::vector<std::byte> create_request(std::uint64_t unique, std::uint64_t parent, const char* name) {
  return make_request(proto::opcode::create, unique, parent,
                      wire{}.add(proto::create_in{O_WRONLY | O_CREAT | O_EXCL, S_IFREG | 0644, 022, 0}).name(name));
}
std::vector<std::byte> write_request(std::uint64_t unique, std::uint64_t node, std::uint64_t fh, const std::string& data) {
  proto::write_in w{};
  w.fh = fh;
  w.size = static_cast<std::uint32_t>(data.size());
  return make_request(proto::opcode::write, unique, node, wire{}.add(w).raw(data));
}
std::vector<std::byte> getattr_request(std::uint64_t unique, std::uint64_t node) {
  return make_request(proto::opcode::getattr, unique, node, wire{}.add(proto::getattr_in{}));
}

}  // namespace

TEST_CASE("journal: records read back in order, with their replies; a torn last record is not read") {
  journal j = mapped(4096);
  CHECK(j.generation() == 0);
  CHECK(j.used() == 0);
  const std::string reply_head = "0123456789abcdef", reply_body = "payload";
  iovec reply[] = {{const_cast<char*>(reply_head.data()), reply_head.size()},
                   {const_cast<char*>(reply_body.data()), reply_body.size()}};
  REQUIRE(j.append(10, timespec{100, 5}, bytes("first"), bytes("+more"), reply));
  auto* second = j.append(12, timespec{101, 6}, bytes("second"), {}, {});
  REQUIRE(second);
  journal::set_sent(second, -ENOENT);
  std::uint64_t end = 0;
  auto rs = records(j, &end);
  REQUIRE(rs.size() == 2);
  CHECK(end == j.used());
  CHECK(rs[0].unique == 10);
  CHECK(rs[0].time.tv_sec == 100);
  CHECK(rs[0].time.tv_nsec == 5);
  CHECK(std::string(reinterpret_cast<const char*>(rs[0].request.data()), rs[0].request.size()) == "first+more");
  CHECK(std::string(reinterpret_cast<const char*>(rs[0].reply.data()), rs[0].reply.size()) == reply_head + reply_body);
  CHECK(rs[0].sent == 0);
  CHECK(rs[1].reply.empty());
  CHECK(rs[1].sent == -ENOENT);

  // A record the writer died in the middle of: counted in `used`, never
  // committed. Readers stop before it; appends continue after the last whole one.
  auto* torn = j.append(14, timespec{102, 0}, bytes("torn"), {}, {});
  REQUIRE(torn);
  torn->state.store(0);
  std::uint64_t sound = 0;
  CHECK(records(j, &sound).size() == 2);
  CHECK(sound == end);
  j.truncate(sound);
  REQUIRE(j.append(16, timespec{103, 0}, bytes("after"), {}, {}));
  rs = records(j);
  REQUIRE(rs.size() == 3);
  CHECK(rs[2].unique == 16);
}

namespace {
// Bytes of the journal's memfd that hold memory (allocated pages).
std::uint64_t allocated(int fd) {
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  return std::uint64_t(st.st_blocks) * 512;
}
}  // namespace

TEST_CASE("journal: a reset keeps the pages for the records that follow; give_back returns what the records do not use") {
  auto fd = journal::create(64u << 20);
  REQUIRE(fd);
  auto j = journal::map(fd->get());
  REQUIRE(j);
  const std::string chunk(256u << 10, 'r');
  for (std::uint64_t u = 1; u <= 24; ++u) REQUIRE(j->append(u, timespec{}, bytes(chunk), {}, {}));  // 6 MiB
  const std::uint64_t full = allocated(fd->get());
  CHECK(full >= (6u << 20));
  j->reset(3);
  CHECK(allocated(fd->get()) == full);  // a checkpoint gives nothing back
  REQUIRE(j->append(100, timespec{}, bytes("after"), {}, {}));
  // Only the record since the reset is read: the stale ones past `used` are not.
  auto rs = records(*j);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].unique == 100);
  CHECK(allocated(fd->get()) == full);
  j->give_back(1u << 20);  // keeps 1 MiB
  const std::uint64_t kept = allocated(fd->get());
  CHECK(kept <= (1u << 20) + 8192);
  CHECK(kept >= (1u << 20));
  // Records still there, and appends go on (their pages come back).
  rs = records(*j);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].unique == 100);
  for (std::uint64_t u = 200; u < 212; ++u) REQUIRE(j->append(u, timespec{}, bytes(chunk), {}, {}));
  CHECK(records(*j).size() == 13);
  CHECK(allocated(fd->get()) >= (3u << 20));
  // The records in use are never given back.
  j->give_back(0);
  CHECK(records(*j).size() == 13);
  CHECK(records(*j).back().request.size() == chunk.size());
  CHECK(allocated(fd->get()) >= j->used());
}

TEST_CASE("journal: a record that does not fit marks it overflowed; a reset empties it for the next checkpoint") {
  journal j = mapped(256);
  const std::string big(300, 'x');
  CHECK(j.append(2, timespec{}, bytes(big), {}, {}) == nullptr);
  CHECK(j.overflowed());
  CHECK(records(j).empty());
  j.reset(7);
  CHECK_FALSE(j.overflowed());
  CHECK(j.generation() == 7);
  CHECK(j.used() == 0);
  REQUIRE(j.append(4, timespec{}, bytes("small"), {}, {}));
  CHECK(records(j).size() == 1);
}

TEST_CASE("journal: a mapping of something else is refused") {
  unique_fd junk(::memfd_create("junk", MFD_CLOEXEC));
  REQUIRE(::write(junk.get(), "not a journal at all, no: not one bit of it, really no", 54) == 54);
  REQUIRE(::ftruncate(junk.get(), 4096) == 0);
  auto j = journal::map(junk.get());
  REQUIRE_FALSE(j);
  CHECK(j.error().code.value() == EBADMSG);
}

TEST_CASE("journaling: a replay rebuilds memfs exactly, and a resent request is answered from the journal") {
  journal log = mapped(std::uint64_t{16} << 20);
  journaled_memfs first(&log);
  // Changes, each journaled with the reply that answered it.
  const reply dir = first.feed(mkdir_request(10, 1, "dir"));
  REQUIRE(dir.error() == 0);
  const auto dir_node = dir.as<proto::entry_out>().nodeid;
  const reply file = first.feed(create_request(12, dir_node, "file"));
  REQUIRE(file.error() == 0);
  const auto file_node = file.as<proto::entry_out>().nodeid;
  const proto::open_out opened = opened_of(file);
  REQUIRE(first.feed(write_request(14, file_node, opened.fh, "hello, journal")).error() == 0);
  // Not journaled: only reads.
  const reply attrs = first.feed(getattr_request(16, file_node));
  CHECK(records(log).size() == 3);

  // A successor: the same starting point (here: a fresh memfs after the
  // same INIT, as the last checkpoint), then the journal replayed on it.
  journaled_memfs second(&log);
  journal* logs[] = {&log};
  const auto report = second.j->replay(logs, 2 << 20);
  CHECK(report.records == 3);
  CHECK(report.differing == 0);
  CHECK(report.unfinished == 0);
  // The same node, with the same attributes to the nanosecond: the times
  // were pinned at the replay to those of the first run.
  const reply again = second.feed(getattr_request(18, file_node));
  REQUIRE(again.error() == 0);
  CHECK(std::memcmp(again.payload.data(), attrs.payload.data(), attrs.payload.size()) == 0);
  CHECK(again.as<proto::attr_out>().attr.size == std::string("hello, journal").size());

  // The CREATE is resent (its reply never reached the kernel, say): it is
  // answered from the journal — the same node and handle, the unique echoed
  // with its resend bit — and no second file comes of it.
  const std::uint64_t resent = 12 | proto::unique_resend_bit;
  auto request = create_request(resent, dir_node, "file");
  const reply answer = second.feed(request);
  CHECK(answer.header.unique == resent);
  CHECK(answer.error() == 0);
  CHECK(answer.payload == file.payload);
  CHECK(records(log).size() == 3);  // answered, not applied: nothing new to journal
  // Whereas a resent request the dead server never applied is applied now.
  const reply other = second.feed(create_request(20 | proto::unique_resend_bit, dir_node, "other"));
  CHECK(other.error() == 0);
  CHECK(other.as<proto::entry_out>().nodeid == file_node + 1);
  CHECK(records(log).size() == 4);
}

namespace {
std::vector<std::byte> lock_request(proto::opcode op, std::uint64_t unique, std::uint64_t node, std::uint64_t fh,
                                    std::uint64_t owner, std::uint32_t type, std::uint32_t pid) {
  proto::lk_in in{};
  in.fh = fh;
  in.owner = owner;
  in.lk = proto::file_lock{0, 0, type, pid};
  return make_request(op, unique, node, wire{}.add(in));
}
// memfs as a checkpoint holds it.
std::vector<std::byte> checkpoint_of(memfs_fs& fs) {
  snapshot_writer w;
  REQUIRE(fs.save(w));
  return w.seal_to_bytes();
}
// A successor's memfs: restored from `checkpoint` (none: a fresh one, the
// checkpoint at INIT), then journaled into `log`.
std::function<void(memfs_fs&)> restored_from(const std::vector<std::byte>& checkpoint) {
  return [&checkpoint](memfs_fs& fs) {
    if (checkpoint.empty()) return;
    auto r = snapshot_reader::from_bytes(checkpoint);
    REQUIRE_MESSAGE(r, r.error().message);
    REQUIRE(fs.restore(*r));
  };
}
// B's lock request, fed so that its handler suspends (no reply yet).
void feed_waiting(journaled_memfs& m, const std::vector<std::byte>& request) {
  const std::size_t before = m.rec.size();
  std::memcpy(m.buf.data(), request.data(), request.size());
  detail::incoming in{.bytes = std::span<const std::byte>(m.buf.data(), request.size()),
                      .scratch = m.buf.span().subspan(256),
                      .owner = &m.buf,
                      .sink = m.rec.sink()};
  REQUIRE(m.j->handle(in) == detail::disposition::suspended);
  REQUIRE(m.rec.size() == before);
}
// In `m`: a file in which A (owner 0xa, pid 100) holds a write lock on the
// first byte and B (owner 0xb, pid 200) waits for it, its request 14
// suspended (requests 10 to 14 used).
struct contended {
  std::uint64_t node = 0, fh = 0;
  std::vector<std::byte> a(std::uint64_t unique, std::uint32_t type) const {
    return lock_request(proto::opcode::setlk, unique, node, fh, 0xa, type, 100);
  }
  std::vector<std::byte> b(std::uint64_t unique) const {
    return lock_request(proto::opcode::setlkw, unique, node, fh, 0xb, F_WRLCK, 200);
  }
};
contended contend(journaled_memfs& m) {
  const reply file = m.feed(create_request(10, 1, "locked"));
  REQUIRE(file.error() == 0);
  const contended c{file.as<proto::entry_out>().nodeid, opened_of(file).fh};
  REQUIRE(m.feed(c.a(12, F_WRLCK)).error() == 0);
  feed_waiting(m, c.b(14));
  return c;
}
// Who holds the write lock on A's and B's byte, as C's F_GETLK sees it:
// the pid, or 0 when nobody does.
std::uint32_t holder_of(journaled_memfs& m, std::uint64_t unique, const contended& lock) {
  const reply probe = m.feed(lock_request(proto::opcode::getlk, unique, lock.node, lock.fh, 0xc, F_WRLCK, 300));
  REQUIRE(probe.error() == 0);
  return probe.as<proto::lk_out>().lk.type == F_UNLCK ? 0 : probe.as<proto::lk_out>().lk.pid;
}
}  // namespace

TEST_CASE("journaling: a lock request that waited is replayed waiting, and granted by the same release") {
  journal log = mapped(std::uint64_t{16} << 20);
  journaled_memfs first(&log);
  // A holds the lock; B waits: its handler suspends, no reply yet; its
  // request is journaled now.
  const contended lock = contend(first);
  const std::size_t before = first.rec.size();
  CHECK(records(log).size() == 3);
  // A lets go: B is granted inside A's handler, and answered.
  CHECK(first.feed(lock.a(16, F_UNLCK), 2).error() == 0);
  CHECK(first.rec.replies[before].header.unique == 14);
  CHECK(first.rec.replies[before].error() == 0);
  // Records: CREATE, SETLK, SETLKW (request), SETLKW (its reply, alone), SETLK unlock.
  const auto rs = records(log);
  REQUIRE(rs.size() == 5);
  CHECK(rs[3].request.empty());
  CHECK(rs[3].unique == 14);

  journaled_memfs second(&log);
  journal* logs[] = {&log};
  const auto report = second.j->replay(logs, 2 << 20);
  CHECK(report.records == 4);
  CHECK(report.differing == 0);
  CHECK(report.unfinished == 0);
  // B holds the lock in the rebuilt state: C's test names B's pid.
  CHECK(holder_of(second, 18, lock) == 200);
  // B's request resent: answered from its reply record, not waited on again.
  const reply again = second.feed(lock.b(14 | proto::unique_resend_bit));
  CHECK(again.header.unique == (14 | proto::unique_resend_bit));
  CHECK(again.error() == 0);
}


TEST_CASE("journaling: a lock request still waiting at a checkpoint starts the journal after it, so its grant replays") {
  // A holds the lock, B waits for it; a checkpoint is taken (B's wait is not
  // state: the checkpoint holds A's lock only); then A lets go and B is
  // granted, and the kernel is told. A successor restores the checkpoint
  // and replays the journal after it: B must hold the lock again. (Before
  // B's request was carried over, the grant was a reply without a request
  // in that journal: nobody held the lock, and a third owner could take it.)
  journal log = mapped(std::uint64_t{16} << 20);
  journaled_memfs first(&log);
  const contended lock = contend(first);

  const std::vector<std::byte> checkpoint = checkpoint_of(first.fs);
  first.j->checkpointed(1);
  auto rs = records(log);
  REQUIRE(rs.size() == 1);  // B's request, carried
  CHECK(rs[0].unique == 14);
  CHECK((rs[0].flags & journal::carried) != 0);
  CHECK(log.generation() == 1);

  CHECK(first.feed(lock.a(16, F_UNLCK), 2).error() == 0);
  CHECK(holder_of(first, 18, lock) == 200);
  rs = records(log);
  REQUIRE(rs.size() == 3);  // B's request, B's grant (alone), A's unlock
  CHECK(rs[1].request.empty());
  CHECK(rs[1].unique == 14);

  journaled_memfs second(&log, restored_from(checkpoint));
  journal* logs[] = {&log};
  const auto report = second.j->replay(logs, 2 << 20);
  CHECK(report.records == 2);
  CHECK(report.differing == 0);
  CHECK(report.unfinished == 0);
  CHECK(holder_of(second, 20, lock) == 200);
  // A third owner is refused, as it was before the crash.
  CHECK(second.feed(lock_request(proto::opcode::setlk, 22, lock.node, lock.fh, 0xd, F_WRLCK, 400)).error() == EAGAIN);

  // A request granted before the next checkpoint is not carried by it.
  first.j->checkpointed(2);
  CHECK(records(log).empty());
}

TEST_CASE("journaling: a lock request waiting across a forked checkpoint replays once, whichever journals are replayed") {
  // The forked checkpoint: records go to a second journal from the switch
  // on, which B's waiting request starts. If the child hands the
  // checkpoint over, a successor replays only the second journal on it; if
  // the child fails, both on the checkpoint before, and B's copy is skipped
  // (run twice, B would wait twice and be answered twice).
  journal one = mapped(std::uint64_t{16} << 20), two = mapped(std::uint64_t{16} << 20);
  journaled_memfs first(&one);
  const std::vector<std::byte> at_init;  // the checkpoint before: a fresh memfs
  const contended lock = contend(first);

  const std::vector<std::byte> forked = checkpoint_of(first.fs);  // what the child writes
  first.j->switch_to(two, 1);
  CHECK(records(two).size() == 1);
  CHECK(first.feed(lock.a(16, F_UNLCK), 2).error() == 0);
  CHECK(holder_of(first, 18, lock) == 200);

  SUBCASE("the child handed the checkpoint over: the second journal alone") {
    journal scratch = mapped(std::uint64_t{1} << 20);
    journaled_memfs second(&scratch, restored_from(forked));
    journal* logs[] = {&two};
    const auto report = second.j->replay(logs, 2 << 20);
    CHECK(report.records == 2);
    CHECK(report.differing == 0);
    CHECK(report.unfinished == 0);
    CHECK(holder_of(second, 20, lock) == 200);
  }
  SUBCASE("the child failed: both journals, on the checkpoint before") {
    journal scratch = mapped(std::uint64_t{1} << 20);
    journaled_memfs second(&scratch, restored_from(at_init));
    journal* logs[] = {&one, &two};
    const auto report = second.j->replay(logs, 2 << 20);
    CHECK(report.records == 4);  // CREATE, SETLK, SETLKW (once), the unlock
    CHECK(report.differing == 0);
    CHECK(report.unfinished == 0);
    CHECK(holder_of(second, 20, lock) == 200);
  }
}

TEST_CASE("journaling: a replayed request still waiting at the end is ended, journaled as such; its resend waits in its own right") {
  // B waits for A's lock at the crash. The successor's replay of B's
  // request waits again; the kernel resends it too. The replay's copy is
  // ended (or, when B gives up — its resend interrupted — and A lets go, it
  // would take the lock for B), and the end is journaled so that a later
  // replay ends it before it waits.
  journal log = mapped(std::uint64_t{16} << 20);
  journaled_memfs first(&log);
  const contended lock = contend(first);

  journaled_memfs second(&log);
  journal* logs[] = {&log};
  const auto report = second.j->replay(logs, 2 << 20);
  CHECK(report.records == 3);
  CHECK(report.ended == 1);
  CHECK(report.unfinished == 0);
  CHECK(second.fs.lock_waiters() == 0);
  auto rs = records(log);
  REQUIRE(rs.size() == 4);
  CHECK(rs[3].unique == 14);
  CHECK(rs[3].request.empty());
  CHECK((rs[3].flags & journal::ended) != 0);
  // The resend is not answered from that record: it waits.
  const std::uint64_t resent = 14 | proto::unique_resend_bit;
  feed_waiting(second, lock.b(resent));
  CHECK(second.fs.lock_waiters() == 1);
  // B gives up: the kernel interrupts the resent request.
  const std::size_t before = second.rec.size();
  (void)second.feed(make_request(proto::opcode::interrupt, 16, 0, wire{}.add(proto::interrupt_in{.unique = resent})));
  REQUIRE(second.rec.size() == before + 1);
  CHECK(second.rec.replies[before].header.unique == resent);
  CHECK(second.rec.replies[before].error() == EINTR);
  // A lets go: nobody is waiting, nobody holds it.
  CHECK(second.feed(lock.a(18, F_UNLCK)).error() == 0);
  CHECK(holder_of(second, 20, lock) == 0);

  // Another crash: the next replay comes to the same state.
  journaled_memfs third(&log);
  const auto again = third.j->replay(logs, 2 << 20);
  CHECK(again.differing == 0);
  CHECK(again.unfinished == 0);
  CHECK(again.ended == 0);
  CHECK(third.fs.lock_waiters() == 0);
  CHECK(holder_of(third, 22, lock) == 0);
}

TEST_CASE("journaling: a request resent again after the replay that ended its copy is its own: granted later, it replays granted") {
  // The same unique comes back: after a second crash the kernel resends the
  // resent request again (bit 63 already set). An end covers the copies
  // before it only.
  journal log = mapped(std::uint64_t{16} << 20);
  journaled_memfs first(&log);
  const contended lock = contend(first);
  journal* logs[] = {&log};
  const std::uint64_t resent = 14 | proto::unique_resend_bit;

  journaled_memfs second(&log);  // the first crash
  CHECK(second.j->replay(logs, 2 << 20).ended == 1);
  feed_waiting(second, lock.b(resent));

  journaled_memfs third(&log);  // the second: the resend's copy is ended, and it comes again
  const auto report = third.j->replay(logs, 2 << 20);
  CHECK(report.ended == 1);
  CHECK(report.differing == 0);
  CHECK(third.fs.lock_waiters() == 0);
  feed_waiting(third, lock.b(resent));
  const reply released = third.feed(lock.a(16, F_UNLCK), 2);
  CHECK(released.error() == 0);
  CHECK(third.rec.replies[third.rec.size() - 2].header.unique == resent);  // B granted, and told
  CHECK(holder_of(third, 18, lock) == 200);

  journaled_memfs fourth(&log);  // the third: B holds the lock again
  const auto last = fourth.j->replay(logs, 2 << 20);
  CHECK(last.differing == 0);
  CHECK(last.unfinished == 0);
  CHECK(last.ended == 0);
  CHECK(holder_of(fourth, 20, lock) == 200);
}

TEST_CASE("journaling (redo): passthrough's notes rebuild its tables in a successor sharing the fd table, and a "
          "change under way at the crash is found done on disk") {
  temp_dir source;
  journal log = mapped(std::uint64_t{16} << 20);
  const auto setup = [&](passthrough_fs& fs) {
    fs.source = source.path();
    REQUIRE(fs.open_source());
  };
  auto first = std::make_unique<journaled<passthrough_fs>>(&log, setup);
  const reply dir = first->feed(mkdir_request(10, 1, "dir"));
  REQUIRE(dir.error() == 0);
  const auto dir_node = dir.as<proto::entry_out>().nodeid;
  const reply file = first->feed(create_request(12, dir_node, "file"));
  REQUIRE(file.error() == 0);
  const auto file_node = file.as<proto::entry_out>().nodeid;
  const proto::open_out opened = opened_of(file);
  REQUIRE(first->feed(write_request(14, file_node, opened.fh, "hello, redo")).error() == 0);
  // Each: its intent (the request, before it is applied), then its outcome
  // (the reply, and the note of what changed in the tables).
  const auto written = records(log);
  REQUIRE(written.size() == 6);
  CHECK(written[0].request.size() > 0);
  CHECK(written[1].request.empty());
  CHECK(written[1].note.size() > 0);    // MKDIR: a new node
  CHECK(written[5].note.empty());       // WRITE: nothing in the tables
  CHECK(written[4].request.size() == sizeof(proto::in_header) + sizeof(proto::write_in));  // its data stays out
  // The server dies with a MKDIR under way: its intent journaled and the
  // directory made on disk, no outcome.
  const auto doubt = mkdir_request(16, 1, "made");
  REQUIRE(log.append(16, timespec{}, doubt, {}, {}));
  REQUIRE(::mkdir((source.path() + "/made").c_str(), 0755) == 0);

  // The successor: a fresh passthrough of the same source (the checkpoint
  // at INIT held nothing more), in this process, so in the same fd table —
  // as the keeper's servers share its table.
  journaled<passthrough_fs> second(&log, setup);
  journal* logs[] = {&log};
  std::vector<std::vector<std::byte>> rerun;
  const auto report = second.j->redo(logs, [&](std::span<const std::byte> note) { return second.fs.redo(note); }, rerun);
  CHECK(report.records == 4);
  CHECK(report.differing == 0);
  CHECK(rerun.empty());
  const std::vector<int> held = second.fs.recovered();
  CHECK(second.fs.live_inodes() == 2);  // dir and file
  CHECK(second.fs.open_files() == 1);
  // The first server's end, without closing what the second now holds
  // (here one process plays both, and the first would close its fds).
  std::vector<std::pair<int, int>> saved;
  for (int fd : held) saved.emplace_back(fd, ::dup(fd));
  first.reset();
  for (auto [fd, copy] : saved) {
    REQUIRE(::dup2(copy, fd) == fd);
    ::close(copy);
  }

  // The resent CREATE: answered from the journal, nothing applied again.
  const reply again = second.feed(create_request(12 | proto::unique_resend_bit, dir_node, "file"));
  CHECK(again.header.unique == (12 | proto::unique_resend_bit));
  CHECK(again.payload == file.payload);
  // The resent MKDIR that was under way: done on disk, so answered as done
  // (the entry of the directory the crashed server made), not EEXIST.
  const reply made = second.feed(mkdir_request(16 | proto::unique_resend_bit, 1, "made"));
  CHECK(made.error() == 0);
  CHECK(made.as<proto::entry_out>().nodeid != 0);
  // A new MKDIR of that name is what it always is.
  CHECK(second.feed(mkdir_request(18, 1, "made")).error() == EEXIST);
  // The handle the kernel holds is the first server's open file, still.
  REQUIRE(second.feed(write_request(20, file_node, opened.fh, "HELLO")).error() == 0);
  CHECK(slurp(source.path() + "/dir/file") == "HELLO, redo");
}
