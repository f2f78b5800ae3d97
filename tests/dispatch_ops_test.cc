// Every request of protocol 7.45 through the dispatcher, as byte buffers: the
// arguments a handler receives, the reply's bytes, ENOSYS when the handler is
// missing, and EINVAL for every truncation of every request's arguments.
#include <doctest/doctest.h>

#include <dirent.h>
#include <poll.h>
#include <sys/file.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "tests/support/process.hpp"
#include "tests/support/wire.hpp"

using namespace fusexx;
using fusexx::testing::harness;
using fusexx::testing::make_request;
using fusexx::testing::wire;
using op = fusexx::proto::opcode;

namespace {

// Records what each handler was called with, as text, so a test can compare
// the whole decoded call at once.
struct all_ops_fs : filesystem_base<all_ops_fs> {
  std::vector<std::string> calls;
  std::vector<std::uint64_t> interrupted;
  std::uint64_t granted_seen = 0;

  void log(std::string s) { calls.push_back(std::move(s)); }
  std::string last() const { return calls.empty() ? "" : calls.back(); }

  result<void> init(connection& c) {
    namespace f = proto::init_flag;
    for (auto flag : {f::writeback_cache, f::posix_locks, f::flock_locks, f::atomic_o_trunc,
                      f::explicit_inval_data, f::handle_killpriv_v2, f::do_readdirplus, f::readdirplus_auto,
                      f::setxattr_ext})
      c.want(flag);
    c.unwant(f::auto_inval_data);  // explicit_inval_data instead
    return {};
  }
  void interrupt(std::uint64_t unique) { interrupted.push_back(unique); }

  result<attr> setattr(request&, ino i, const set_attributes& s) {
    std::string t = "setattr " + std::to_string(i);
    if (s.mode) t += " mode=" + std::to_string(*s.mode);
    if (s.uid) t += " uid=" + std::to_string(*s.uid);
    if (s.gid) t += " gid=" + std::to_string(*s.gid);
    if (s.size) t += " size=" + std::to_string(*s.size);
    if (s.atime) t += " atime=" + (s.atime->tv_nsec == UTIME_NOW ? std::string("now") : std::to_string(s.atime->tv_sec));
    if (s.mtime) t += " mtime=" + (s.mtime->tv_nsec == UTIME_NOW ? std::string("now") : std::to_string(s.mtime->tv_sec));
    if (s.ctime) t += " ctime=" + std::to_string(s.ctime->tv_sec);
    if (s.fh) t += " fh=" + std::to_string(*s.fh);
    if (s.lock_owner) t += " owner=" + std::to_string(*s.lock_owner);
    if (s.kill_suid) t += " kill_suid";
    log(t);
    return attr{};
  }
  result<void> rename(request&, ino from, std::string_view a, ino to, std::string_view b, unsigned flags) {
    log("rename " + std::to_string(from) + "/" + std::string(a) + " " + std::to_string(to) + "/" + std::string(b) +
        " flags=" + std::to_string(flags));
    return {};
  }
  result<created> tmpfile(request&, ino parent, mode_t mode, int flags, mode_t umask) {
    log("tmpfile " + std::to_string(parent) + " mode=" + std::to_string(mode) + " flags=" + std::to_string(flags) +
        " umask=" + std::to_string(umask));
    created c;
    c.entry.node = 77;
    c.entry.st.st_mode = S_IFREG | 0600;
    c.file.fh = 5;
    c.file.keep_cache = true;
    return c;
  }
  result<posix_lock> getlk(request&, ino i, fhandle fh, std::uint64_t owner, const posix_lock& l) {
    log("getlk " + std::to_string(i) + " fh=" + std::to_string(fh) + " owner=" + std::to_string(owner) +
        " type=" + std::to_string(l.type) + " " + std::to_string(l.start) + ".." + std::to_string(l.end));
    return posix_lock{.type = F_WRLCK, .start = 10, .end = posix_lock::lock_to_eof, .pid = 4321};
  }
  result<void> setlk(request&, ino, fhandle fh, std::uint64_t owner, const posix_lock& l, bool wait) {
    log("setlk fh=" + std::to_string(fh) + " owner=" + std::to_string(owner) + " type=" + std::to_string(l.type) +
        " " + std::to_string(l.start) + ".." + std::to_string(l.end) + " pid=" + std::to_string(l.pid) +
        (wait ? " wait" : ""));
    return {};
  }
  result<void> flock(request&, ino, fhandle fh, std::uint64_t owner, int how) {
    log("flock fh=" + std::to_string(fh) + " owner=" + std::to_string(owner) + " op=" + std::to_string(how));
    return {};
  }
  result<std::uint64_t> bmap(request&, ino, std::uint32_t blocksize, std::uint64_t block) {
    log("bmap bs=" + std::to_string(blocksize) + " block=" + std::to_string(block));
    return block * 2;
  }
  result<ioctl_reply> ioctl(request&, ino, fhandle fh, unsigned flags, unsigned cmd, std::uint64_t arg,
                            std::span<const std::byte> in, std::uint32_t out_size) {
    log("ioctl fh=" + std::to_string(fh) + " flags=" + std::to_string(flags) + " cmd=" + std::to_string(cmd) +
        " arg=" + std::to_string(arg) + " in=" + std::string(reinterpret_cast<const char*>(in.data()), in.size()) +
        " out=" + std::to_string(out_size));
    ioctl_reply r;
    if (cmd == 1) {
      r.result = 3;
      for (char c : std::string_view("answer")) r.out.push_back(std::byte(c));
    } else if (cmd == 2) {
      r.retry_in.push_back({0x1000, 8});
      r.retry_out.push_back({0x2000, 16});
    } else if (cmd == 3) {
      r.out.resize(out_size + 1);  // more than the caller's buffer
    }
    return r;
  }
  result<unsigned> poll(request&, ino, fhandle fh, std::optional<std::uint64_t> kh, unsigned events) {
    log("poll fh=" + std::to_string(fh) + " kh=" + (kh ? std::to_string(*kh) : std::string("none")) +
        " events=" + std::to_string(events));
    return events & POLLIN;
  }
  result<void> fallocate(request&, ino, fhandle fh, int mode, off_t off, off_t len) {
    log("fallocate fh=" + std::to_string(fh) + " mode=" + std::to_string(mode) + " " + std::to_string(off) + "+" +
        std::to_string(len));
    return {};
  }
  result<off_t> lseek(request&, ino, fhandle, off_t off, int whence) {
    log("lseek " + std::to_string(off) + " whence=" + std::to_string(whence));
    if (whence == SEEK_HOLE) return off_t(-1);  // a negative result is refused
    return off + 4096;
  }
  result<std::size_t> copy_file_range(request&, ino in, fhandle fh_in, off_t off_in, ino out, fhandle fh_out,
                                      off_t off_out, std::size_t len, std::uint64_t flags) {
    log("copy " + std::to_string(in) + ":" + std::to_string(fh_in) + "@" + std::to_string(off_in) + " -> " +
        std::to_string(out) + ":" + std::to_string(fh_out) + "@" + std::to_string(off_out) + " len=" +
        std::to_string(len) + " flags=" + std::to_string(flags));
    return len == 999 ? len + 1 : len / 2;
  }
  result<extended_attr> statx(request&, ino i, std::optional<fhandle> fh, int flags, unsigned mask) {
    log("statx " + std::to_string(i) + " fh=" + (fh ? std::to_string(*fh) : std::string("none")) + " flags=" +
        std::to_string(flags) + " mask=" + std::to_string(mask));
    extended_attr x;
    x.stx.stx_mask = STATX_BASIC_STATS | STATX_BTIME;
    x.stx.stx_ino = i;
    x.stx.stx_btime.tv_sec = 12345;
    x.stx.stx_mode = S_IFREG | 0640;
    x.valid_for = std::chrono::seconds(3);
    return x;
  }
  result<void> syncfs(request&, ino i) {
    log("syncfs " + std::to_string(i));
    return {};
  }
};
static_assert(filesystem<all_ops_fs>);

// Defines nothing beyond what hello-like filesystems have.
struct bare_fs : filesystem_base<bare_fs> {
  attr getattr(request&, ino) { return {}; }
};
static_assert(filesystem<bare_fs>);

// Shape checks for the new operations: a near miss is not a filesystem.
struct bad_lseek : filesystem_base<bad_lseek> {
  result<off_t> lseek(request&, ino, off_t, int);  // fhandle missing
};
static_assert(!filesystem<bad_lseek>);
struct bad_interrupt : filesystem_base<bad_interrupt> {
  void interrupt(request&);
};
static_assert(!filesystem<bad_interrupt>);

proto::lk_in lk(std::uint64_t fh, std::uint64_t owner, std::uint32_t type, std::uint64_t start, std::uint64_t end,
                std::uint32_t flags = 0) {
  proto::lk_in a{};
  a.fh = fh;
  a.owner = owner;
  a.lk.type = type;
  a.lk.start = start;
  a.lk.end = end;
  a.lk.pid = 99;
  a.lk_flags = flags;
  return a;
}

// One well-formed body per opcode that has arguments, for the truncation sweep.
std::map<op, wire> well_formed_bodies() {
  std::map<op, wire> m;
  proto::create_in c{};
  m[op::tmpfile] = wire{}.add(c).name("/");
  m[op::getlk] = wire{}.add(lk(1, 2, F_RDLCK, 0, 10));
  m[op::setlk] = wire{}.add(lk(1, 2, F_RDLCK, 0, 10));
  m[op::setlkw] = wire{}.add(lk(1, 2, F_RDLCK, 0, 10));
  m[op::bmap] = wire{}.add(proto::bmap_in{.block = 3, .blocksize = 512});
  proto::ioctl_in io{};
  io.in_size = 4;
  m[op::ioctl] = wire{}.add(io).raw("abcd");
  m[op::poll] = wire{}.add(proto::poll_in{});
  m[op::fallocate] = wire{}.add(proto::fallocate_in{});
  m[op::lseek] = wire{}.add(proto::lseek_in{});
  m[op::copy_file_range] = wire{}.add(proto::copy_file_range_in{});
  m[op::copy_file_range_64] = wire{}.add(proto::copy_file_range_in{});
  m[op::statx] = wire{}.add(proto::statx_in{});
  m[op::syncfs] = wire{}.add(proto::syncfs_in{});
  m[op::rename2] = wire{}.add(proto::rename2_in{}).name("a").name("b");
  m[op::setattr] = wire{}.add(proto::setattr_in{});
  return m;
}

}  // namespace

TEST_CASE("every truncation of every request's arguments is EINVAL, never a read past the end") {
  harness<all_ops_fs> h;
  h.init();
  for (auto& [code, body] : well_formed_bodies()) {
    CAPTURE(proto::name(code));
    CHECK(h.call(code, 2, body).error() != EINVAL);  // the whole body is fine...
    for (std::size_t cut = 0; cut < body.bytes.size(); ++cut) {
      CAPTURE(cut);
      wire shorter;
      shorter.bytes.assign(body.bytes.begin(), body.bytes.begin() + static_cast<std::ptrdiff_t>(cut));
      CHECK(h.call(code, 2, shorter).error() == EINVAL);  // ...and every prefix of it is not
    }
  }
  CHECK(h.state.counters().malformed.load() > 100);
}

TEST_CASE("a filesystem without the handlers answers ENOSYS to each new request") {
  harness<bare_fs> h;
  h.init();
  for (auto& [code, body] : well_formed_bodies()) {
    if (code == op::setattr || code == op::rename2) continue;
    CAPTURE(proto::name(code));
    CHECK(h.call(code, 2, body).error() == ENOSYS);
  }
  // flock requests also need their own handler.
  CHECK(h.call(op::setlk, 2, wire{}.add(lk(1, 2, F_WRLCK, 0, INT64_MAX, proto::lk_flag::flock))).error() == ENOSYS);
  // Requests the kernel only sends to virtiofs or CUSE servers.
  CHECK(h.call(op::setupmapping, 2, wire{}.add(proto::setupmapping_in{})).error() == ENOSYS);
  CHECK(h.call(op::removemapping, 2, wire{}.add(proto::removemapping_in{})).error() == ENOSYS);
}

TEST_CASE("INIT asks for what init() wants and reports what was granted") {
  harness<all_ops_fs> h;
  auto out = h.init().as<proto::init_out>();
  namespace f = proto::init_flag;
  const std::uint64_t granted = f::combine(out.flags, out.flags2);
  for (auto flag : {f::writeback_cache, f::posix_locks, f::flock_locks, f::atomic_o_trunc, f::explicit_inval_data,
                    f::handle_killpriv_v2, f::do_readdirplus, f::readdirplus_auto, f::setxattr_ext}) {
    CAPTURE(proto::describe_init_flags(flag));
    CHECK((granted & flag) == flag);
    CHECK(h.state.conn().has(flag));
  }
  CHECK_FALSE((granted & f::auto_inval_data));
  CHECK(h.state.conn().granted() == granted);
  // Offered but not wanted stays off: passthrough was offered, nobody asked.
  CHECK(h.state.conn().offers(f::passthrough));
  CHECK_FALSE(h.state.conn().has(f::passthrough));
}

TEST_CASE("setattr decodes every FATTR bit") {
  harness<all_ops_fs> h;
  h.init();
  namespace fa = proto::fattr;
  proto::setattr_in a{};
  a.valid = fa::mode | fa::uid | fa::gid | fa::size | fa::atime | fa::mtime | fa::ctime | fa::fh | fa::lockowner |
            fa::kill_suidgid;
  a.mode = 0640;
  a.uid = 7;
  a.gid = 8;
  a.size = 100;
  a.atime = 11;
  a.mtime = 12;
  a.ctime = 13;
  a.fh = 4;
  a.lock_owner = 55;
  CHECK(h.call(op::setattr, 3, wire{}.add(a)).error() == 0);
  CHECK(h.fs.last() ==
        "setattr 3 mode=416 uid=7 gid=8 size=100 atime=11 mtime=12 ctime=13 fh=4 owner=55 kill_suid");
  a.valid = fa::atime | fa::atime_now | fa::mtime | fa::mtime_now;
  h.call(op::setattr, 3, wire{}.add(a));
  CHECK(h.fs.last() == "setattr 3 atime=now mtime=now");
  a.valid = 0;
  h.call(op::setattr, 3, wire{}.add(a));
  CHECK(h.fs.last() == "setattr 3");
}

TEST_CASE("rename2 passes its flags; plain rename has none") {
  harness<all_ops_fs> h;
  h.init();
  CHECK(h.call(op::rename2, 1, wire{}.add(proto::rename2_in{.newdir = 5, .flags = RENAME_EXCHANGE}).name("x").name("y"))
            .error() == 0);
  CHECK(h.fs.last() == "rename 1/x 5/y flags=" + std::to_string(RENAME_EXCHANGE));
  h.call(op::rename, 1, wire{}.add(proto::rename_in{.newdir = 6}).name("p").name("q"));
  CHECK(h.fs.last() == "rename 1/p 6/q flags=0");
  // Names that run out: the second name without its NUL.
  CHECK(h.call(op::rename2, 1, wire{}.add(proto::rename2_in{}).name("x").raw("y")).error() == EINVAL);
}

TEST_CASE("tmpfile replies like create: entry then open") {
  harness<all_ops_fs> h;
  h.init();
  proto::create_in c{};
  c.mode = S_IFREG | 0600;
  c.flags = O_RDWR | O_TMPFILE;
  c.umask = 022;
  auto r = h.call(op::tmpfile, 1, wire{}.add(c).name("/"));
  REQUIRE(r.error() == 0);
  REQUIRE(r.payload.size() == sizeof(proto::entry_out) + sizeof(proto::open_out));
  CHECK(r.as<proto::entry_out>().nodeid == 77);
  proto::open_out o;
  std::memcpy(&o, r.payload.data() + sizeof(proto::entry_out), sizeof o);
  CHECK(o.fh == 5);
  CHECK(o.open_flags == proto::fopen::keep_cache);
  CHECK(h.fs.last() == "tmpfile 1 mode=" + std::to_string(S_IFREG | 0600) + " flags=" +
                           std::to_string(O_RDWR | O_TMPFILE) + " umask=18");
}

TEST_CASE("locks: getlk, setlk, setlkw and flock") {
  harness<all_ops_fs> h;
  h.init();
  auto r = h.call(op::getlk, 2, wire{}.add(lk(3, 44, F_WRLCK, 5, INT64_MAX)));
  REQUIRE(r.error() == 0);
  CHECK(h.fs.last() == "getlk 2 fh=3 owner=44 type=" + std::to_string(F_WRLCK) + " 5.." + std::to_string(INT64_MAX));
  auto l = r.as<proto::lk_out>().lk;
  CHECK(l.type == F_WRLCK);
  CHECK(l.start == 10);
  CHECK(l.end == std::uint64_t(INT64_MAX));
  CHECK(l.pid == 4321);

  h.call(op::setlk, 2, wire{}.add(lk(3, 44, F_RDLCK, 0, 9)));
  CHECK(h.fs.last() == "setlk fh=3 owner=44 type=" + std::to_string(F_RDLCK) + " 0..9 pid=99");
  h.call(op::setlkw, 2, wire{}.add(lk(3, 44, F_UNLCK, 0, 9)));
  CHECK(h.fs.last() == "setlk fh=3 owner=44 type=" + std::to_string(F_UNLCK) + " 0..9 pid=99 wait");

  // flock(2) arrives as SETLK(W) with the FLOCK flag and becomes flock().
  auto flock_req = [&](op code, std::uint32_t type) {
    return h.call(code, 2, wire{}.add(lk(3, 44, type, 0, INT64_MAX, proto::lk_flag::flock))).error();
  };
  CHECK(flock_req(op::setlk, F_RDLCK) == 0);
  CHECK(h.fs.last() == "flock fh=3 owner=44 op=" + std::to_string(LOCK_SH | LOCK_NB));
  CHECK(flock_req(op::setlkw, F_WRLCK) == 0);
  CHECK(h.fs.last() == "flock fh=3 owner=44 op=" + std::to_string(LOCK_EX));
  CHECK(flock_req(op::setlk, F_UNLCK) == 0);
  CHECK(h.fs.last() == "flock fh=3 owner=44 op=" + std::to_string(LOCK_UN));
}

TEST_CASE("bmap, poll, fallocate, lseek, syncfs") {
  harness<all_ops_fs> h;
  h.init();
  auto b = h.call(op::bmap, 2, wire{}.add(proto::bmap_in{.block = 21, .blocksize = 4096}));
  CHECK(b.as<proto::bmap_out>().block == 42);
  CHECK(h.fs.last() == "bmap bs=4096 block=21");

  proto::poll_in p{};
  p.fh = 8;
  p.kh = 1234;
  p.events = POLLIN | POLLOUT;
  auto pr = h.call(op::poll, 2, wire{}.add(p));
  CHECK(pr.as<proto::poll_out>().revents == POLLIN);
  CHECK(h.fs.last() == "poll fh=8 kh=none events=" + std::to_string(POLLIN | POLLOUT));
  p.flags = proto::poll_flag::schedule_notify;  // only then is the kernel's handle meaningful
  h.call(op::poll, 2, wire{}.add(p));
  CHECK(h.fs.last() == "poll fh=8 kh=1234 events=" + std::to_string(POLLIN | POLLOUT));

  proto::fallocate_in f{};
  f.fh = 9;
  f.offset = 4096;
  f.length = 8192;
  f.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  CHECK(h.call(op::fallocate, 2, wire{}.add(f)).error() == 0);
  CHECK(h.fs.last() == "fallocate fh=9 mode=" + std::to_string(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) +
                           " 4096+8192");

  auto s = h.call(op::lseek, 2, wire{}.add(proto::lseek_in{.fh = 1, .offset = 100, .whence = SEEK_DATA}));
  CHECK(s.as<proto::lseek_out>().offset == 4196);
  CHECK(h.call(op::lseek, 2, wire{}.add(proto::lseek_in{.fh = 1, .offset = 100, .whence = SEEK_HOLE})).error() ==
        EINVAL);

  CHECK(h.call(op::syncfs, 1, wire{}.add(proto::syncfs_in{})).error() == 0);
  CHECK(h.fs.last() == "syncfs 1");
}

TEST_CASE("ioctl: data in and out, retry only when unrestricted, output bounded") {
  harness<all_ops_fs> h;
  h.init();
  proto::ioctl_in a{};
  a.fh = 6;
  a.cmd = 1;
  a.arg = 0xdead;
  a.in_size = 3;
  a.out_size = 16;
  auto r = h.call(op::ioctl, 2, wire{}.add(a).raw("xyz"));
  REQUIRE(r.error() == 0);
  CHECK(h.fs.last() == "ioctl fh=6 flags=0 cmd=1 arg=57005 in=xyz out=16");
  REQUIRE(r.payload.size() == sizeof(proto::ioctl_out) + 6);
  CHECK(r.as<proto::ioctl_out>().result == 3);
  CHECK(r.as<proto::ioctl_out>().flags == 0);
  CHECK(std::string(reinterpret_cast<const char*>(r.payload.data()) + sizeof(proto::ioctl_out), 6) == "answer");

  a.in_size = 0;
  a.cmd = 2;
  CHECK(h.call(op::ioctl, 2, wire{}.add(a)).error() == EIO);  // a restricted ioctl cannot retry
  a.flags = proto::ioctl_flag::unrestricted;
  auto retry = h.call(op::ioctl, 2, wire{}.add(a));
  REQUIRE(retry.error() == 0);
  auto out = retry.as<proto::ioctl_out>();
  CHECK(out.flags == proto::ioctl_flag::retry);
  CHECK(out.in_iovs == 1);
  CHECK(out.out_iovs == 1);
  REQUIRE(retry.payload.size() == sizeof out + 2 * sizeof(proto::ioctl_iovec));
  proto::ioctl_iovec v[2];
  std::memcpy(v, retry.payload.data() + sizeof out, sizeof v);
  CHECK(v[0].base == 0x1000);
  CHECK(v[0].len == 8);
  CHECK(v[1].base == 0x2000);
  CHECK(v[1].len == 16);

  a.cmd = 3;
  CHECK(h.call(op::ioctl, 2, wire{}.add(a)).error() == EIO);  // more than out_size
}

TEST_CASE("copy_file_range: the old reply is 32 bits, the 7.45 one 64") {
  harness<all_ops_fs> h;
  h.init();
  proto::copy_file_range_in a{};
  a.fh_in = 1;
  a.off_in = 10;
  a.nodeid_out = 9;
  a.fh_out = 2;
  a.off_out = 20;
  a.len = 6000000000;
  a.flags = 0;
  auto wide = h.call(op::copy_file_range_64, 3, wire{}.add(a));
  REQUIRE(wide.error() == 0);
  CHECK(wide.payload.size() == sizeof(proto::copy_file_range_out));
  CHECK(wide.as<proto::copy_file_range_out>().bytes_copied == 3000000000);
  CHECK(h.fs.last() == "copy 3:1@10 -> 9:2@20 len=6000000000 flags=0");
  // 3e9 does not fit the old reply's 32 bits... it does; 6e9/2 = 3e9 < 2^32.
  auto narrow = h.call(op::copy_file_range, 3, wire{}.add(a));
  REQUIRE(narrow.error() == 0);
  CHECK(narrow.payload.size() == sizeof(proto::write_out));
  CHECK(narrow.as<proto::write_out>().size == 3000000000u);
  a.len = 10000000000;  // half of it, 5e9, does not
  CHECK(h.call(op::copy_file_range, 3, wire{}.add(a)).error() == EIO);
  a.len = 999;  // a handler claiming more than asked for
  CHECK(h.call(op::copy_file_range_64, 3, wire{}.add(a)).error() == EIO);
}

TEST_CASE("statx: flags, mask and the statx reply") {
  harness<all_ops_fs> h;
  h.init();
  proto::statx_in a{};
  a.getattr_flags = proto::getattr_flag::fh;
  a.fh = 12;
  a.sx_flags = AT_STATX_FORCE_SYNC;
  a.sx_mask = STATX_BTIME;
  auto r = h.call(op::statx, 4, wire{}.add(a));
  REQUIRE(r.error() == 0);
  CHECK(h.fs.last() == "statx 4 fh=12 flags=" + std::to_string(AT_STATX_FORCE_SYNC) + " mask=" +
                           std::to_string(STATX_BTIME));
  auto out = r.as<proto::statx_out>();
  CHECK(out.attr_valid == 3);
  CHECK(out.stat.mask == (STATX_BASIC_STATS | STATX_BTIME));
  CHECK(out.stat.ino == 4);
  CHECK(out.stat.btime.tv_sec == 12345);
  CHECK(out.stat.mode == (S_IFREG | 0640));
  a.getattr_flags = 0;
  h.call(op::statx, 4, wire{}.add(a));
  CHECK(h.fs.last().starts_with("statx 4 fh=none"));
}

TEST_CASE("interrupt: registered, then the filesystem is told") {
  harness<all_ops_fs> h;
  h.init();
  const auto before = h.rec.size();
  h.feed(make_request(op::interrupt, 201, 0, wire{}.add(proto::interrupt_in{.unique = 200})));
  CHECK(h.rec.size() == before);  // never answered
  CHECK(h.fs.interrupted == std::vector<std::uint64_t>{200});
  CHECK(h.state.interrupts().contains(200));
}

TEST_CASE("open reply flags and entry/attr timeouts are encoded") {
  opened o{.fh = 3, .direct_io = true, .keep_cache = true, .nonseekable = true, .cache_dir = true, .stream = true,
           .noflush = true, .parallel_direct_writes = true};
  auto out = detail::encode_open(o);
  namespace fo = proto::fopen;
  CHECK(out.open_flags == (fo::direct_io | fo::keep_cache | fo::nonseekable | fo::cache_dir | fo::stream |
                           fo::noflush | fo::parallel_direct_writes));
  CHECK(detail::encode_open(opened{}).open_flags == 0);
  entry e{.node = 4, .entry_valid_for = std::chrono::milliseconds(2500), .attr_valid_for = std::chrono::hours(1)};
  auto eo = detail::encode_entry(e);
  CHECK(eo.entry_valid == 2);
  CHECK(eo.entry_valid_nsec == 500'000'000);
  CHECK(eo.attr_valid == 3600);
  CHECK(eo.attr_valid_nsec == 0);
  e.entry_valid_for = timeout::zero();
  CHECK(detail::encode_entry(e).entry_valid == 0);
}

TEST_CASE("readdirplus packs entries with attributes; . and .. carry no node") {
  std::vector<std::byte> space(1024);
  dir_buffer d(space, /*plus=*/true);
  CHECK(d.plus());
  CHECK(d.add(".", 1, S_IFDIR, 1));
  entry child{.node = 9};
  child.st.st_ino = 9;
  child.st.st_mode = S_IFREG | 0644;
  child.st.st_size = 77;
  CHECK(d.add("file", child, 2));
  REQUIRE(d.size() == proto::direntplus_size(1) + proto::direntplus_size(4));
  proto::direntplus first, second;
  std::memcpy(&first, d.bytes().data(), sizeof first);
  std::memcpy(&second, d.bytes().data() + proto::direntplus_size(1), sizeof second);
  CHECK(first.entry_out.nodeid == 0);  // no lookup reference taken
  CHECK(first.dirent.ino == 1);
  CHECK(first.dirent.off == 1);
  CHECK(second.entry_out.nodeid == 9);
  CHECK(second.entry_out.attr.size == 77);
  CHECK(second.dirent.type == DT_REG);
  CHECK(second.dirent.off == 2);
  CHECK(second.dirent.namelen == 4);
  // Full: nothing is added, and the bytes already packed stay intact.
  std::vector<std::byte> small(proto::direntplus_size(4) + 8);
  dir_buffer s(small, true);
  CHECK(s.add("file", child, 1));
  CHECK_FALSE(s.add("more", child, 2));
  CHECK(s.size() == proto::direntplus_size(4));
}

namespace {

// A coroutine handler that reads the kernel's page cache back through the
// notifier while it runs.
struct retrieving_fs : filesystem_base<retrieving_fs> {
  task<std::string> getxattr(request& req, ino node, std::string_view) {
    auto r = co_await req.notify().retrieve(node, 100, 8);
    if (!r) co_return error(r.error());
    co_return std::to_string(r->offset) + ":" + std::string(reinterpret_cast<const char*>(r->data.data()), r->data.size());
  }
};

template <class T>
T payload_as(const fusexx::testing::reply& r) {
  return r.as<T>();
}

}  // namespace

TEST_CASE("notifications: each is one message with unique 0 and its code, attached at INIT") {
  harness<all_ops_fs> h;
  CHECK(h.state.notify().inval_inode(5).error().value() == ENOTCONN);  // nothing attached before INIT
  h.init();
  auto& n = h.state.notify();
  auto sent = [&] { return h.rec.last(); };
  REQUIRE(n.inval_inode(5, -1, 0));
  CHECK(sent().header.unique == 0);
  CHECK(sent().header.error == int(proto::notify_code::inval_inode));
  CHECK(sent().header.len == sizeof(proto::out_header) + sizeof(proto::notify_inval_inode_out));
  CHECK(payload_as<proto::notify_inval_inode_out>(sent()).ino == 5);
  CHECK(payload_as<proto::notify_inval_inode_out>(sent()).off == -1);

  REQUIRE(n.inval_entry(1, "name", /*expire_only=*/true));
  auto e = payload_as<proto::notify_inval_entry_out>(sent());
  CHECK(sent().header.error == int(proto::notify_code::inval_entry));
  CHECK(e.parent == 1);
  CHECK(e.namelen == 4);
  CHECK(e.flags == proto::notify_inval_flag::expire_only);
  CHECK(sent().payload.size() == sizeof e + 5);  // the name and its NUL
  CHECK(sent().text().substr(sizeof e) == std::string_view("name\0", 5));

  REQUIRE(n.delete_entry(1, 9, "gone"));
  CHECK(sent().header.error == int(proto::notify_code::delete_entry));
  CHECK(payload_as<proto::notify_delete_out>(sent()).child == 9);

  const std::string data = "cached bytes";
  REQUIRE(n.store(9, 4096, std::as_bytes(std::span(data))));
  CHECK(sent().header.error == int(proto::notify_code::store));
  CHECK(payload_as<proto::notify_store_out>(sent()).size == data.size());
  CHECK(payload_as<proto::notify_store_out>(sent()).offset == 4096);
  CHECK(sent().text().substr(sizeof(proto::notify_store_out)) == data);

  REQUIRE(n.poll_wakeup(77));
  CHECK(sent().header.error == int(proto::notify_code::poll));
  CHECK(payload_as<proto::notify_poll_wakeup_out>(sent()).kh == 77);

  const ino nodes[] = {3, 4, 5};
  REQUIRE(n.prune(nodes));
  CHECK(sent().header.error == int(proto::notify_code::prune));
  CHECK(payload_as<proto::notify_prune_out>(sent()).count == 3);
  CHECK(sent().payload.size() == sizeof(proto::notify_prune_out) + 3 * 8);

  REQUIRE(n.inc_epoch());
  CHECK(sent().header.error == int(proto::notify_code::inc_epoch));
  CHECK(sent().header.len == sizeof(proto::out_header));
  REQUIRE(n.resend());
  CHECK(sent().header.error == int(proto::notify_code::resend));

  n.detach();
  CHECK(n.poll_wakeup(1).error().value() == ENOTCONN);
}

TEST_CASE("retrieve: NOTIFY_REPLY resumes the coroutine that asked, on the thread that read it") {
  harness<retrieving_fs> h;
  h.init();
  const auto before = h.rec.size();
  REQUIRE(h.feed(make_request(op::getxattr, 300, 6, wire{}.add(proto::getxattr_in{.size = 64}).name("user.c"))) ==
          1);  // only the RETRIEVE went out: the handler waits
  auto ask = h.rec.last();
  CHECK(ask.header.error == int(proto::notify_code::retrieve));
  auto out = ask.as<proto::notify_retrieve_out>();
  CHECK(out.nodeid == 6);
  CHECK(out.offset == 100);
  CHECK(out.size == 8);
  CHECK(h.state.counters().in_flight.load() == 1);

  // The kernel's answer arrives as a request, read by another worker.
  proto::notify_retrieve_in in{};
  in.offset = 100;
  in.size = 5;
  std::thread([&] {
    CHECK(h.feed(make_request(op::notify_reply, out.notify_unique, 6, wire{}.add(in).raw("bytes"))) == 1);
  }).join();
  REQUIRE(h.rec.size() == before + 2);
  CHECK(h.rec.last().header.unique == 300);
  CHECK(h.rec.last().text() == "100:bytes");
  CHECK(h.state.counters().in_flight.load() == 0);

  // A reply nobody waits for (or one cut short) is dropped without an answer.
  CHECK(h.feed(make_request(op::notify_reply, 999, 6, wire{}.add(in).raw("bytes"))) == 0);
  CHECK(h.feed(make_request(op::notify_reply, 999, 6, wire{}.add(in).raw("by"))) == 0);
}

TEST_CASE("retrieve: a waiting retrieve ends with ENOTCONN when the notifier is detached") {
  harness<retrieving_fs> h;
  h.init();
  REQUIRE(h.feed(make_request(op::getxattr, 310, 6, wire{}.add(proto::getxattr_in{.size = 64}).name("user.c"))) == 1);
  h.state.notify().detach();
  CHECK(h.rec.last().header.unique == 310);
  CHECK(h.rec.last().error() == ENOTCONN);
  CHECK(h.state.counters().in_flight.load() == 0);
}

TEST_CASE("retrieve_wait: the blocking form, with a time limit") {
  harness<retrieving_fs> h;
  h.init();
  std::thread kernel([&] {
    // Plays the kernel: answers the first RETRIEVE it sees.
    REQUIRE(fusexx::testing::eventually([&] { return h.rec.size() > 1; }));
    auto out = h.rec.last().as<proto::notify_retrieve_out>();
    proto::notify_retrieve_in in{};
    in.offset = out.offset;
    in.size = 3;
    h.feed(make_request(op::notify_reply, out.notify_unique, out.nodeid, wire{}.add(in).raw("abc")));
  });
  auto r = h.state.notify().retrieve_wait(6, 0, 3);
  kernel.join();
  REQUIRE(r);
  CHECK(r->data.size() == 3);
  CHECK(h.state.notify().retrieve_wait(6, 0, 3, std::chrono::milliseconds(1)).error().value() == ETIMEDOUT);
}
