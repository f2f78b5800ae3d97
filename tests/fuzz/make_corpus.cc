// Writes the fuzz targets' seed corpora: kernel-shaped requests made with the
// unit tests' own builders (tests/support/wire.hpp), so that fuzzing starts
// from inputs that reach deep into each decoder instead of from nothing.
//
//   bazel run //tests/fuzz:make_corpus -- "$PWD/tests/fuzz/corpus"
//
// The output is committed (tests/fuzz/corpus/TARGET/NAME); rerun after
// changing a seed here. Seeds are deterministic.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <unistd.h>

#include <fusexx/fusexx.hpp>
#include <fusexx/control.hpp>
#include <fusexx/restart/handover.hpp>
#include <fusexx/restart/session_snapshot.hpp>

#include "examples/memfs_fs.hpp"
#include "examples/passthrough_fs.hpp"
#include "tests/fuzz/formats.hpp"
#include "tests/fuzz/stream.hpp"
#include "tests/support/wire.hpp"

namespace fs = std::filesystem;
using fusexx::proto::opcode;
using fusexx::testing::make_request;
using fusexx::testing::wire;
using namespace fusexx::fuzzing;
namespace proto = fusexx::proto;

namespace {

fs::path out_root;

void write_seed(const std::string& target, const std::string& name, const std::vector<std::uint8_t>& bytes) {
  const fs::path dir = out_root / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// ---- dispatch_stream: request streams against memfs and nothing_fs ----

// What the kernel on the project's machine offers at INIT (tests/support/wire.hpp's harness::init).
constexpr std::uint32_t offered_flags = 0x73fffffb;
constexpr std::uint32_t offered_flags2 = 0x000007fd;

// Node and handle fields below are indices into what replies handed out
// (how_known_node, how_known_fh): node 0 is the root, then every entry reply
// adds one; handle 0 is 0, then every OPEN/OPENDIR/CREATE adds one. Node ids
// inside arguments (LINK, COPY_FILE_RANGE) are memfs's own: root 1, then 2, 3...
constexpr std::uint8_t steer = how_fix_len | how_known_node | how_known_fh;
constexpr std::uint8_t steer_node = how_fix_len | how_known_node;

struct stream {
  stream_writer w;
  explicit stream(std::uint8_t config = 0) {
    w.config(config);
    if (!(config & config_own_init)) w.init(0, offered_flags, offered_flags2, 131072);
  }
  // Requests whose body starts with an fh get `steer`, the rest `steer_node`.
  stream& req(opcode op, std::uint64_t node, const wire& body = {}, std::uint8_t how = steer_node) {
    w.record(make_request(op, 0, node, body), how);
    return *this;
  }
  stream& with_fh(opcode op, std::uint64_t node, const wire& body) { return req(op, node, body, steer); }
};

proto::read_in read_at(std::uint64_t fh, std::uint64_t off, std::uint32_t size) {
  proto::read_in r{};
  r.fh = fh;
  r.offset = off;
  r.size = size;
  return r;
}

void dispatch_stream() {
  const std::string t = "dispatch_stream";
  const auto mkdir = [](std::uint32_t mode = 0755) { return proto::mkdir_in{.mode = S_IFDIR | mode, .umask = 022}; };
  const auto create = [](std::uint32_t flags = O_RDWR | O_CREAT) {
    return proto::create_in{.flags = flags, .mode = S_IFREG | 0644, .umask = 022};
  };

  {  // A file's life: mkdir, create, write, read, stat, truncate, list, remove.
    stream s;
    proto::write_in wr{};
    wr.fh = 1;
    wr.size = 12;
    proto::setattr_in sa{};
    sa.valid = 1u << 3;  // FATTR_SIZE
    sa.size = 5;
    s.req(opcode::mkdir, 0, wire{}.add(mkdir()).name("d"))                       // node 1
        .req(opcode::create, 1, wire{}.add(create()).name("f"))                  // node 2, fh 1
        .with_fh(opcode::write, 2, wire{}.add(wr).raw("hello, world"))
        .with_fh(opcode::read, 2, wire{}.add(read_at(1, 0, 4096)))
        .req(opcode::getattr, 2, wire{}.add(proto::getattr_in{}))
        .req(opcode::setattr, 2, wire{}.add(sa))
        .with_fh(opcode::flush, 2, wire{}.add(proto::flush_in{.fh = 1}))
        .with_fh(opcode::release, 2, wire{}.add(proto::release_in{.fh = 1}))
        .req(opcode::opendir, 1, wire{}.add(proto::open_in{.flags = O_RDONLY}))  // fh 2
        .with_fh(opcode::readdirplus, 1, wire{}.add(read_at(2, 0, 4096)))
        .with_fh(opcode::readdir, 1, wire{}.add(read_at(2, 0, 4096)))
        .with_fh(opcode::releasedir, 1, wire{}.add(proto::release_in{.fh = 2}))
        .req(opcode::unlink, 1, wire{}.name("f"))
        .req(opcode::rmdir, 0, wire{}.name("d"))
        .req(opcode::statfs, 0)
        .req(opcode::forget, 2, wire{}.add(proto::forget_in{.nlookup = 1}));
    write_seed(t, "file-life", s.w.out);
  }
  {  // Names: lookup, symlink, readlink, link, rename, rename2, mknod.
    stream s;
    s.req(opcode::create, 0, wire{}.add(create()).name("a"))  // node 1, fh 1
        .req(opcode::lookup, 0, wire{}.name("a"))            // node 2 (the same file)
        .req(opcode::symlink, 0, wire{}.name("s").name("a"))  // node 3
        .req(opcode::readlink, 3)
        .req(opcode::link, 0, wire{}.add(proto::link_in{.oldnodeid = 2}).name("b"))  // node 4 (memfs's id 2: "a")
        .req(opcode::rename, 0, wire{}.add(proto::rename_in{.newdir = 1}).name("b").name("c"))
        .req(opcode::rename2, 0,
             wire{}.add(proto::rename2_in{.newdir = 1, .flags = 2 /* RENAME_EXCHANGE */}).name("a").name("c"))
        .req(opcode::mknod, 0, wire{}.add(proto::mknod_in{.mode = S_IFIFO | 0644, .umask = 022}).name("p"))
        .req(opcode::access, 1, wire{}.add(proto::access_in{.mask = 4}))
        .req(opcode::batch_forget, 0,
             wire{}.add(proto::batch_forget_in{.count = 2})
                 .add(proto::forget_one{.nodeid = 2, .nlookup = 1})
                 .add(proto::forget_one{.nodeid = 3, .nlookup = 1}));
    write_seed(t, "names", s.w.out);
  }
  {  // Extended attributes.
    stream s;
    s.req(opcode::create, 0, wire{}.add(create()).name("x"))  // node 1
        // (setxattr_in's first 8 bytes: memfs does not ask for FUSE_SETXATTR_EXT)
        .req(opcode::setxattr, 1, wire{}.add(std::uint32_t{3}).add(std::uint32_t{0}).name("user.a").raw("abc"))
        .req(opcode::getxattr, 1, wire{}.add(proto::getxattr_in{.size = 0}).name("user.a"))
        .req(opcode::getxattr, 1, wire{}.add(proto::getxattr_in{.size = 64}).name("user.a"))
        .req(opcode::listxattr, 1, wire{}.add(proto::getxattr_in{.size = 0}))
        .req(opcode::listxattr, 1, wire{}.add(proto::getxattr_in{.size = 64}))
        .req(opcode::removexattr, 1, wire{}.name("user.a"));
    write_seed(t, "xattrs", s.w.out);
  }
  {  // Locks: two owners, a blocked SETLKW interrupted, flock.
    stream s;
    proto::lk_in lk{};
    lk.fh = 1;
    lk.owner = 1;
    lk.lk = {.start = 0, .end = 99, .type = F_WRLCK, .pid = 10};
    proto::lk_in other = lk;
    other.owner = 2;
    other.lk.pid = 11;
    proto::lk_in unlock = lk;
    unlock.lk.type = F_UNLCK;
    proto::lk_in flock_in{};
    flock_in.fh = 1;
    flock_in.owner = 3;
    flock_in.lk.type = F_WRLCK;
    flock_in.lk_flags = 1;  // FUSE_LK_FLOCK
    s.req(opcode::create, 0, wire{}.add(create()).name("l"))  // node 1, fh 1
        .with_fh(opcode::setlk, 1, wire{}.add(lk))
        .with_fh(opcode::getlk, 1, wire{}.add(other))
        .with_fh(opcode::setlkw, 1, wire{}.add(other))
        .req(opcode::interrupt, 0, wire{}.add(proto::interrupt_in{}), how_fix_len | how_aim_interrupt)
        .with_fh(opcode::setlkw, 1, wire{}.add(other))
        .with_fh(opcode::setlk, 1, wire{}.add(unlock))
        .with_fh(opcode::setlk, 1, wire{}.add(flock_in))
        .with_fh(opcode::release, 1, wire{}.add(proto::release_in{.fh = 1, .release_flags = 2 /* FLOCK_UNLOCK */}));
    write_seed(t, "locks", s.w.out);
  }
  {  // Data ops: fallocate, lseek, copy_file_range, fsync, poll, a split write.
    stream s;
    proto::write_in wr{};
    wr.fh = 1;
    wr.offset = 8192;
    wr.size = 8;
    proto::copy_file_range_in cfr{};
    cfr.fh_in = 1;
    cfr.nodeid_out = 2;  // memfs's id of "data" (ids in arguments are not steered)
    cfr.fh_out = 1;
    cfr.off_out = 100;
    cfr.len = 50;
    s.req(opcode::create, 0, wire{}.add(create()).name("data"))  // node 1, fh 1
        .with_fh(opcode::fallocate, 1, wire{}.add(proto::fallocate_in{.fh = 1, .offset = 0, .length = 4096}))
        .w.record(make_request(opcode::write, 0, 1, wire{}.add(wr).raw("12345678")), steer | how_split, 40);
    s.with_fh(opcode::lseek, 1, wire{}.add(proto::lseek_in{.fh = 1, .offset = 0, .whence = 3 /* SEEK_DATA */}))
        .with_fh(opcode::lseek, 1, wire{}.add(proto::lseek_in{.fh = 1, .offset = 0, .whence = 4 /* SEEK_HOLE */}))
        .with_fh(opcode::copy_file_range, 1, wire{}.add(cfr))
        .with_fh(opcode::fsync, 1, wire{}.add(proto::fsync_in{.fh = 1}))
        .with_fh(opcode::poll, 1, wire{}.add(proto::poll_in{.fh = 1, .events = 1}))
        .with_fh(opcode::read, 1, wire{}.add(read_at(1, 8190, 16)));
    write_seed(t, "data", s.w.out);
  }
  {  // Malformed: a short header, a length that lies, arguments cut short, a stray NOTIFY_REPLY.
    stream s;
    auto lying = make_request(opcode::getattr, 0, 1, wire{}.add(proto::getattr_in{}));
    s.w.record(std::vector<std::byte>(20), how_fix_len);
    s.w.record(lying, 0);
    s.req(opcode::lookup, 0, wire{}.raw("no-terminator"))
        .req(opcode::write, 0, wire{}.raw("short"))
        .req(opcode::notify_reply, 0, wire{}.add(proto::notify_retrieve_in{}))
        .req(opcode::init, 0, wire{}.add(proto::init_in{.major = 7, .minor = 45}));
    write_seed(t, "malformed", s.w.out);
  }
  {  // The filesystem that implements nothing.
    stream s(config_nothing_fs);
    s.req(opcode::lookup, 0, wire{}.name("a"))
        .req(opcode::getattr, 0, wire{}.add(proto::getattr_in{}))
        .req(opcode::opendir, 0, wire{}.add(proto::open_in{}))
        .req(opcode::readdir, 0, wire{}.add(read_at(0, 0, 4096)))
        .req(opcode::statfs, 0)
        .req(opcode::destroy, 0);
    write_seed(t, "nothing", s.w.out);
  }
  {  // The stream's own INIT (an older kernel's 7.31, 64 bytes), then a lookup.
    stream s(config_own_init);
    proto::init_in in{};
    in.major = 7;
    in.minor = 31;
    in.max_readahead = 65536;
    in.flags = offered_flags;
    s.req(opcode::init, 0, wire{}.add(in)).req(opcode::lookup, 0, wire{}.name("x"));
    write_seed(t, "own-init", s.w.out);
  }
}


// ---- shared by the seeds below ----

void append(stream_writer& w, std::span<const std::byte> bytes) {
  auto p = reinterpret_cast<const std::uint8_t*>(bytes.data());
  w.out.insert(w.out.end(), p, p + bytes.size());
}
void append(stream_writer& w, std::string_view text) { append(w, std::as_bytes(std::span(text.data(), text.size()))); }

// A handover message as handover::send writes it (read back off a socket).
std::vector<std::byte> handover_bytes(const fusexx::handover::message& m) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  if (!fusexx::handover::send(sv[1], m)) std::abort();
  std::vector<std::byte> out(fusexx::handover::max_message);
  const ssize_t n = ::recv(sv[0], out.data(), out.size(), 0);
  if (n <= 0) std::abort();
  out.resize(static_cast<std::size_t>(n));
  ::close(sv[0]);
  ::close(sv[1]);
  return out;
}
std::span<const std::byte> payload_of(const std::vector<std::byte>& sealed) {
  return std::span(sealed).subspan(fusexx::detail::snapshot_header_size);
}

// A directory of its own, removed at the end.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string t = (fs::temp_directory_path() / "fusexx-make-corpus.XXXXXX").string();
    if (!::mkdtemp(t.data())) std::abort();
    path = t;
  }
  ~temp_dir() { fs::remove_all(path); }
};

// ---- notify_reply: retrieves asked for and answered ----

void notify_reply() {
  namespace f = notify_reply_format;
  const std::string t = "notify_reply";
  const auto ask_for = [](stream_writer& w, std::uint64_t node, std::uint64_t offset, std::uint32_t size) {
    w.put(std::uint8_t{f::ask}).put(node).put(offset).put(size);
  };
  // The kernel's answer (dispatch_ops_test, "retrieve: NOTIFY_REPLY resumes
  // the coroutine that asked"): notify_retrieve_in, then the data.
  const auto answer_with = [](stream_writer& w, std::uint8_t how, std::uint64_t unique, std::uint64_t offset,
                              std::string_view data, std::optional<std::uint32_t> size = {}, std::uint8_t ext = 0) {
    proto::notify_retrieve_in in{};
    in.offset = offset;
    in.size = size.value_or(static_cast<std::uint32_t>(data.size()));
    const wire body = wire{}.add(in).raw(data);
    w.put(std::uint8_t{f::answer}).put(how).put(unique);
    if (how & f::how_ext) w.put(ext);
    w.put(static_cast<std::uint16_t>(body.bytes.size()));
    append(w, body.bytes);
  };
  const auto wait_for = [](stream_writer& w, std::uint64_t node, std::uint32_t size) {
    w.put(std::uint8_t{f::wait}).put(node).put(size);
  };
  constexpr std::uint8_t aimed = f::how_fix_len | f::how_aim;
  for (std::uint8_t config : {std::uint8_t{0}, f::config_split}) {
    stream_writer w;
    w.config(config);
    ask_for(w, 6, 100, 8);
    answer_with(w, aimed, 0, 100, "bytes");
    answer_with(w, f::how_fix_len, 999, 100, "bytes");   // nobody waits for 999
    answer_with(w, f::how_fix_len, 999, 100, "by", 5);   // and cut short
    write_seed(t, config ? "retrieve-split" : "retrieve", w.out);
  }
  {  // retrieve_wait times out; its late answer is dropped; then one that is waited for.
    stream_writer w;
    w.config(0);
    wait_for(w, 6, 3);
    answer_with(w, aimed, 0, 0, "abc");
    ask_for(w, 6, 0, 3);
    answer_with(w, aimed | f::how_fix_size, 1, 0, "abc");
    write_seed(t, "wait-then-late-answer", w.out);
  }
  {  // Two waiting, a detach ends both (ENOTCONN); attached again, one more.
    stream_writer w;
    w.config(0);
    ask_for(w, 6, 0, 64);
    ask_for(w, 7, 4096, 4096);
    w.put(std::uint8_t{f::detach}).put(std::uint8_t{1});
    ask_for(w, 6, 0, 8);
    answer_with(w, aimed, 2, 0, "12345678");
    answer_with(w, aimed, 0, 0, "late");  // for one the detach ended
    write_seed(t, "detach", w.out);
  }
  {  // Detached: retrieves fail at once; attached again, they work.
    stream_writer w;
    w.config(0);
    w.put(std::uint8_t{f::detach}).put(std::uint8_t{0});
    ask_for(w, 6, 0, 8);
    wait_for(w, 6, 8);
    w.put(std::uint8_t{f::detach}).put(std::uint8_t{1});
    ask_for(w, 6, 0, 8);
    answer_with(w, aimed, 0, 0, "");
    write_seed(t, "detached", w.out);
  }
  {  // An INTERRUPT for a waiting handler, then an answer with an extension after its data.
    stream_writer w;
    w.config(f::config_split);
    ask_for(w, 9, 8192, 16);
    w.put(std::uint8_t{f::interrupt});
    answer_with(w, aimed | f::how_ext, 0, 8192, "12345678extensn!", 8, 1);
    write_seed(t, "interrupt-and-extension", w.out);
  }
}

// ---- uring_entry: requests as the kernel puts them in io_uring entries ----

void uring_entry() {
  namespace f = uring_entry_format;
  const std::string t = "uring_entry";
  constexpr std::uint8_t steer_node = f::how_fix_sizes | f::how_known_node;
  constexpr std::uint8_t steer = steer_node | f::how_known_fh;
  struct entries {
    stream_writer w;
    explicit entries(std::uint8_t config) {
      w.config(config);
      w.put(std::uint8_t{0}).put(offered_flags).put(offered_flags2);  // the made INIT: 7.45
    }
    // The request's in_header from make_request; `first` goes to op_in, `rest` to the payload.
    entries& add(opcode op, std::uint64_t node, const wire& first, const wire& rest = {}, std::uint8_t how = f::how_fix_sizes | f::how_known_node) {
      return sized(op, node, first, rest, how, 0, 0);
    }
    entries& sized(opcode op, std::uint64_t node, const wire& first, const wire& rest, std::uint8_t how,
                   std::uint32_t len, std::uint32_t payload_sz) {
      w.put(how).put(static_cast<std::uint8_t>(first.bytes.size())).put(static_cast<std::uint16_t>(rest.bytes.size()));
      if (!(how & f::how_fix_sizes)) w.put(len).put(payload_sz);
      append(w, make_request(op, 0, node));
      append(w, first.bytes);
      append(w, rest.bytes);
      return *this;
    }
  };
  const auto mkdir = [] { return proto::mkdir_in{.mode = S_IFDIR | 0755, .umask = 022}; };
  const auto create = [] { return proto::create_in{.flags = O_RDWR | O_CREAT, .mode = S_IFREG | 0644, .umask = 022}; };
  {  // A file's life (names go in the payload, with an empty first argument, as fuse_set_zero_arg0 does).
    entries e(0);
    proto::write_in wr{};
    wr.fh = 1;
    wr.size = 12;
    proto::setattr_in sa{};
    sa.valid = 1u << 3;  // FATTR_SIZE
    sa.size = 5;
    e.add(opcode::mkdir, 0, wire{}.add(mkdir()), wire{}.name("d"))                       // node 1
        .add(opcode::create, 1, wire{}.add(create()), wire{}.name("f"))                  // node 2, fh 1
        .add(opcode::write, 2, wire{}.add(wr), wire{}.raw("hello, world"), steer)
        .add(opcode::read, 2, wire{}.add(read_at(1, 0, 4096)), {}, steer)
        .add(opcode::getattr, 2, wire{}.add(proto::getattr_in{}))
        .add(opcode::setattr, 2, wire{}.add(sa))
        .add(opcode::lookup, 1, {}, wire{}.name("f"))
        .add(opcode::flush, 2, wire{}.add(proto::flush_in{.fh = 1}), {}, steer)
        .add(opcode::release, 2, wire{}.add(proto::release_in{.fh = 1}), {}, steer)
        .add(opcode::opendir, 1, wire{}.add(proto::open_in{.flags = O_RDONLY}))  // fh 2
        .add(opcode::readdirplus, 1, wire{}.add(read_at(2, 0, 4096)), {}, steer)
        .add(opcode::releasedir, 1, wire{}.add(proto::release_in{.fh = 2}), {}, steer)
        .add(opcode::unlink, 1, {}, wire{}.name("f"))
        .add(opcode::rmdir, 0, {}, wire{}.name("d"))
        .add(opcode::statfs, 0, {})
        .add(opcode::forget, 2, wire{}.add(proto::forget_in{.nlookup = 1}));
    write_seed(t, "file-life", e.w.out);
  }
  {  // Names and attributes: symlink, rename, xattrs (setxattr_in's first 8 bytes: memfs does not ask for SETXATTR_EXT).
    entries e(1 << 1);
    e.add(opcode::create, 0, wire{}.add(create()), wire{}.name("a"))  // node 1, fh 1
        .add(opcode::symlink, 0, {}, wire{}.name("s").name("a"))
        .add(opcode::readlink, 2, {})
        .add(opcode::rename, 0, wire{}.add(proto::rename_in{.newdir = 1}), wire{}.name("a").name("b"))
        .add(opcode::setxattr, 1, wire{}.add(std::uint32_t{3}).add(std::uint32_t{0}), wire{}.name("user.a").raw("abc"))
        .add(opcode::getxattr, 1, wire{}.add(proto::getxattr_in{.size = 64}), wire{}.name("user.a"))
        .add(opcode::listxattr, 1, wire{}.add(proto::getxattr_in{.size = 0}))
        .add(opcode::removexattr, 1, {}, wire{}.name("user.a"));
    write_seed(t, "names", e.w.out);
  }
  {  // A 64 KiB buffer: a large write, read back whole, through the cache and again (memfs drops the cache then).
    entries e(2 << 1);
    proto::write_in wr{};
    wr.fh = 1;
    wr.size = 40000;
    e.add(opcode::create, 0, wire{}.add(create()), wire{}.name("big"))  // node 1, fh 1
        .add(opcode::write, 1, wire{}.add(wr), wire{}.raw(std::string(40000, 'x')), steer)
        .add(opcode::read, 1, wire{}.add(read_at(1, 0, 65536)), {}, steer)
        .add(opcode::write, 1, wire{}.add(wr), wire{}.raw(std::string(40000, 'y')), steer)
        .add(opcode::read, 1, wire{}.add(read_at(1, 100, 1000)), {}, steer);
    write_seed(t, "large", e.w.out);
  }
  {  // Sizes that do not add up: a len that lies, a payload larger than the buffer, a first argument larger than op_in.
    entries e(0);
    e.sized(opcode::getattr, 0, wire{}.add(proto::getattr_in{}), {}, f::how_known_node, 40 + 16 + 1, 0)
        .sized(opcode::write, 0, wire{}.add(proto::write_in{}), wire{}.raw("data"), f::how_known_node, 40 + 40 + 4, 9000)
        .sized(opcode::lookup, 0, {}, wire{}.name("x"), f::how_known_node, 40 + 200, 2)
        .sized(opcode::lookup, 0, {}, wire{}.name("x"), f::how_known_node, 20, 2)
        .add(opcode::init, 0, wire{}.add(proto::init_in{.major = 7, .minor = 45}))  // (INIT never comes this way)
        .add(opcode::notify_reply, 0, wire{}.add(proto::notify_retrieve_in{}));
    write_seed(t, "malformed", e.w.out);
  }
  {  // The filesystem that implements nothing.
    entries e(f::config_nothing | 3 << 1);
    e.add(opcode::lookup, 0, {}, wire{}.name("a"))
        .add(opcode::getattr, 0, wire{}.add(proto::getattr_in{}))
        .add(opcode::opendir, 0, wire{}.add(proto::open_in{}))
        .add(opcode::readdir, 0, wire{}.add(read_at(0, 0, 4096)))
        .add(opcode::statfs, 0, {});
    write_seed(t, "nothing", e.w.out);
  }
}

// ---- mount_options: command lines (tests/options_test.cc's, and every option) ----

void mount_options() {
  const std::string t = "mount_options";
  enum : std::uint8_t { memfs, passthrough, plain };
  const auto seed = [&](const std::string& name, std::uint8_t fs, std::vector<std::string> args) {
    std::vector<std::uint8_t> out{fs};
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (i) out.push_back(0);
      out.insert(out.end(), args[i].begin(), args[i].end());
    }
    write_seed(t, name, out);
  };
  seed("command-line", plain, {"prog", "-f", "-s", "-o", "ro,fsname=x", "-oallow_other", "/mnt/point/"});
  seed("relative", plain, {"prog", "-d", "relative/dir"});
  seed("threads", plain, {"prog", "-o", "threads=3", "/m"});
  seed("threads-0", plain, {"prog", "-o", "threads=0", "/m"});
  seed("no-mountpoint", plain, {"prog"});
  seed("three", plain, {"prog", "/a", "/b", "/c"});
  seed("unknown-flag", plain, {"prog", "-x", "/a"});
  seed("o-alone", plain, {"prog", "-o"});
  seed("unknown-option", plain, {"prog", "-o", "frobnicate", "/a"});
  seed("help", plain, {"prog", "-h"});
  seed("source", memfs, {"memfs", "memfs", "/mnt/x/", "-o", "rw,dev,suid"});
  seed("fsname-wins", plain, {"prog", "-o", "fsname=given", "tank", "/m"});
  seed("passthrough-source", passthrough, {"passthrough", "/srv/data", "/mnt/y", "-o", "rw"});
  seed("passthrough-two-sources", passthrough, {"passthrough", "/srv/data", "/mnt/y", "-o", "source=/other"});
  seed("fstab", plain,
       {"prog", "src", "/m", "-o",
        "rw,dev,suid,exec,atime,async,_netdev,nofail,noauto,auto,user,users,nouser,defaults,"
        "user=bob,x-systemd.automount,x-systemd.requires=network-online.target,x-gvfs-show"});
  seed("mount-options", plain,
       {"prog", "-o",
        "allow_other,default_permissions,noexec,noatime,sync,dirsync,fsname=my\\,fs,subtype=demo,max_read=65536,"
        "rootmode=40000,user_id=0,group_id=0,auto_unmount",
        "/m"});
  seed("fuseblk", plain, {"prog", "-o", "blkdev,fsname=/dev/loop0,blksize=4096", "/m"});
  seed("fusexx-options", plain,
       {"prog", "-o",
        "transport=uring,queue_depth=64,init_timeout_ms=500,stats=off,pid_file=/run/x.pid,keep_stdio,keep_cwd,"
        "async_init",
        "--takeover", "/m"});
  seed("memfs-options", memfs,
       {"memfs", "-o",
        "size=64m,nr_inodes=10k,entry_timeout=1.5,attr_timeout=0,writeback_cache,atomic_o_trunc,explicit_inval_data,"
        "handle_killpriv_v2",
        "/m"});
  seed("passthrough-options", passthrough,
       {"passthrough", "-o", "source=/srv,timeout=0.5,writeback,passthrough,killpriv_v2", "/m"});
  seed("version", memfs, {"memfs", "-V", "--version", "-odebug"});
}

// ---- fd_passing: what fusermount3 and a handover send ----

void fd_passing() {
  namespace f = fd_passing_format;
  const std::string t = "fd_passing";
  struct sender {
    stream_writer w;
    sender(std::uint8_t config, std::uint16_t max_bytes, std::uint8_t receives) {
      w.config(config);
      w.put(max_bytes).put(static_cast<std::uint8_t>(receives - 1));
    }
    // One message: its data and its SCM_RIGHTS control messages (fd counts; `which`: bit i, the ith a pipe).
    sender& message(std::span<const std::byte> data, std::vector<std::uint8_t> cmsgs, std::uint8_t which = 0) {
      w.put(static_cast<std::uint8_t>(data.size()));
      append(w, data);
      w.put(static_cast<std::uint8_t>(cmsgs.size()));
      for (auto n : cmsgs) w.put(n).put(which);
      return *this;
    }
  };
  const std::byte zero[1] = {};
  {  // fusermount3: one byte and the /dev/fuse fd over a stream (mount.hpp).
    sender s(0 | f::config_receive_fd, 0, 1);
    s.message(zero, {1});
    write_seed(t, "fusermount", s.w.out);
  }
  {  // The handover's offer: the message and its fds (device, snapshot, control socket), then the fds beside.
    using fusexx::handover::kind;
    sender s(1, fusexx::handover::max_message, 3);
    s.message(handover_bytes({.what = kind::offer, .pid = 42, .count = 2}), {3}, 0b010)
        .message(handover_bytes({.what = kind::fds}), {2}, 0b11)
        .message(handover_bytes({.what = kind::ack}), {});
    write_seed(t, "handover-offer", s.w.out);
  }
  {  // A full batch of fds beside a snapshot (max_fds_per_message), then one too many.
    sender s(1, fusexx::handover::max_message, 2);
    const auto fds = handover_bytes({.what = fusexx::handover::kind::fds});
    s.message(fds, {32, 32}).message(fds, {33, 32});
    write_seed(t, "snapshot-fds", s.w.out);
  }
  {  // Datagrams: empty with fds, too long for the buffer, one that fits.
    sender s(2, 100, 3);
    s.message({}, {2}).message(std::vector<std::byte>(200), {1}).message(zero, {1, 1}, 1);
    write_seed(t, "datagrams", s.w.out);
  }
  {  // The sender is gone before the reads: the fds in flight, then EOF.
    sender s(0 | f::config_close_sender, 16, 3);
    const std::string abc = "abc";
    s.message(std::as_bytes(std::span(abc)), {2});
    write_seed(t, "sender-closed", s.w.out);
  }
}

// ---- snapshot: what servers hand over (a memfs and a passthrough that served) ----

// memfs stamps its inodes from the clock, and a directory's inode number
// differs from run to run: seeds made of such state are fixed up so that
// they are the same every time.
constexpr std::uint64_t seed_time = 1'700'000'000;

// Every timestamp of memfs's part (at `at` in `payload`: memfs_fs::save's
// layout, save_inode's fields) set to seed_time.
void fix_memfs_times(std::vector<std::byte>& payload, std::size_t at) {
  namespace d = fusexx::detail;
  constexpr std::size_t header = 4 + 5 * 8 + 1 + 4 * 8;  // version .. forget errors; then the count of inodes
  constexpr std::size_t times_at = 8 + 4 + 4 + 4 + 8 + 8;  // id, mode, uid, gid, rdev, nlink; then 4 timespecs
  const auto count = d::get_le<std::uint64_t>(payload.data() + at + header);
  std::size_t p = at + header + 8;
  for (std::uint64_t k = 0; k < count; ++k) {
    for (std::size_t t = 0; t < 4; ++t) {
      d::put_le<std::uint64_t>(payload.data() + p + times_at + 16 * t, seed_time);
      d::put_le<std::uint64_t>(payload.data() + p + times_at + 16 * t + 8, 0);
    }
    // The inode's length: what restore_inode reads of it.
    auto r = fusexx::snapshot_reader::from_bytes(sealed(std::span(payload).subspan(p)));
    memfs::inode scratch;
    if (!r || !memfs::restore_inode(*r, scratch)) std::abort();
    p = payload.size() - r->left();
  }
}

// The same for passthrough's part: the device and inode numbers of its
// source and of each inode it holds (inode_table::save's layout).
void fix_passthrough_numbers(std::vector<std::byte>& payload) {
  namespace d = fusexx::detail;
  std::size_t p = 4 + 3;  // version, writeback, killpriv, passthrough
  d::put_le<std::uint64_t>(payload.data() + p, 0);      // the root's device and inode: the target aims them
  d::put_le<std::uint64_t>(payload.data() + p + 8, 0);
  const auto count = d::get_le<std::uint64_t>(payload.data() + p + 24);
  p += 32;
  for (std::uint64_t k = 0; k < count; ++k, p += 48) {  // id, fd index, dev, ino, type, lookups, backing, users
    d::put_le<std::uint64_t>(payload.data() + p + 12, 64);
    d::put_le<std::uint64_t>(payload.data() + p + 20, 1000 + k);
  }
}

void snapshot() {
  namespace f = snapshot_format;
  using fusexx::testing::harness;
  const std::string t = "snapshot";
  const auto seed = [&](const std::string& name, std::uint8_t config, std::span<const std::byte> bytes,
                        std::uint8_t fds = 0, std::uint8_t kinds = 0) {
    stream_writer w;
    w.config(config);
    w.put(fds).put(kinds);
    append(w, bytes);
    write_seed(t, name, w.out);
  };
  const fusexx::mount_description mount{"/mnt/memfs", fusexx::mount_method::new_api, "", true};
  // An io_uring layout small enough for the target to map (2 queues of 2 entries, 8 KiB payloads).
  const fusexx::transport::entry_layout layout{.base = 0x200000000000, .stride = 4096 + 8192, .payload = 8192,
                                                .queues = 2, .depth = 2};
  {  // memfs after a few requests (its tree, data, xattrs, a lock, an open directory), in the server's order.
    harness<memfs_fs> h;
    h.init();
    const auto node_of = [](const fusexx::testing::reply& r) { return r.as<proto::entry_out>().nodeid; };
    const auto d = node_of(h.call(opcode::mkdir, 1, wire{}.add(proto::mkdir_in{.mode = S_IFDIR | 0755}).name("d")));
    auto created = h.call(opcode::create, d,
                          wire{}.add(proto::create_in{.flags = O_RDWR | O_CREAT, .mode = S_IFREG | 0644}).name("f"));
    const auto f = node_of(created);
    proto::open_out o;
    std::memcpy(&o, created.payload.data() + sizeof(proto::entry_out), sizeof o);
    proto::write_in wr{};
    wr.fh = o.fh;
    wr.size = 5;
    h.call(opcode::write, f, wire{}.add(wr).raw("hello"));
    h.call(opcode::setxattr, f, wire{}.add(std::uint32_t{3}).add(std::uint32_t{0}).name("user.a").raw("abc"));
    h.call(opcode::symlink, 1, wire{}.name("s").name("d/f"));
    proto::lk_in lk{};
    lk.fh = o.fh;
    lk.owner = 1;
    lk.lk = {.start = 0, .end = 99, .type = F_WRLCK, .pid = 10};
    h.call(opcode::setlk, f, wire{}.add(lk));
    h.call(opcode::opendir, 1, wire{}.add(proto::open_in{.flags = O_RDONLY}));
    for (bool with_layout : {false, true}) {
      fusexx::snapshot_writer w;
      w.str("memfs");
      fusexx::write_session(w, h.state.describe(), mount);
      fusexx::write_entry_layout(w, with_layout ? std::optional(layout) : std::nullopt);
      const std::size_t memfs_at = w.size();
      if (!h.fs.save(w)) std::abort();
      const auto all = w.seal_to_bytes();
      std::vector<std::byte> payload(payload_of(all).begin(), payload_of(all).end());
      fix_memfs_times(payload, memfs_at);
      if (with_layout) {
        seed("memfs-uring", f::server_order | f::config_make_header, payload);
        continue;
      }
      seed("memfs", f::server_order | f::config_make_header, payload);
      seed("memfs-whole", f::server_order, sealed(payload));
      seed("memfs-sealed-memfd", f::server_order | f::config_memfd | f::config_sealed, sealed(payload));
      seed("memfs-memfd", f::server_order | f::config_memfd | f::config_make_header, payload);
    }
    fusexx::snapshot_writer w;
    fusexx::write_session(w, h.state.describe(), mount);
    fusexx::write_entry_layout(w, layout);
    seed("session", f::session_part | f::config_make_header, payload_of(w.seal_to_bytes()));
  }
  {  // passthrough mirroring a directory: a file and a directory looked up, the file open, the directory open.
    temp_dir source;
    std::ofstream(source.path / "f") << "data";
    fs::create_directory(source.path / "sub");
    harness<passthrough_fs> h;
    if (!h.fs.use_source(source.path.string()) || !h.fs.open_source()) std::abort();
    h.init();
    const auto node_of = [](const fusexx::testing::reply& r) { return r.as<proto::entry_out>().nodeid; };
    const auto f = node_of(h.call(opcode::lookup, 1, wire{}.name("f")));
    const auto sub = node_of(h.call(opcode::lookup, 1, wire{}.name("sub")));
    h.call(opcode::open, f, wire{}.add(proto::open_in{.flags = O_RDWR}));
    h.call(opcode::opendir, sub, wire{}.add(proto::open_in{.flags = O_RDONLY}));
    fusexx::snapshot_writer w;
    if (!h.fs.save(w)) std::abort();
    std::uint8_t kinds = 0;  // which fds beside are directories
    for (std::size_t i = 0; i < w.fds().size(); ++i) {
      struct stat st {};
      if (::fstat(w.fds()[i], &st) == 0 && S_ISDIR(st.st_mode)) kinds |= 1 << i;
    }
    const auto all = w.seal_to_bytes();
    std::vector<std::byte> payload(payload_of(all).begin(), payload_of(all).end());
    fix_passthrough_numbers(payload);
    const auto count = static_cast<std::uint8_t>(w.fds().size());
    seed("passthrough", f::passthrough_part | f::config_make_header | f::config_aim_root, payload, count, kinds);
    seed("passthrough-other-source", f::passthrough_part | f::config_make_header, payload, count, kinds);
    seed("passthrough-fds-missing", f::passthrough_part | f::config_make_header | f::config_aim_root, payload, 1, kinds);
  }
  {  // Handover messages, with the fds that go with them.
    using fusexx::handover::kind;
    const auto hello = handover_bytes({.what = kind::hello, .pid = 42, .text = "memfs", .connection = 7});
    seed("handover-hello", f::handover_message | f::config_make_header, payload_of(hello));
    seed("handover-offer", f::handover_message, handover_bytes({.what = kind::offer, .pid = 42, .count = 1}), 4, 0b0100);
    seed("handover-entry", f::handover_message | f::config_make_header,
         payload_of(handover_bytes({.what = kind::entry, .queue = 1, .index = 3})));
  }
}

// ---- control_request: queries, and the JSON answers the tool reads ----

void control_request() {
  namespace f = control_request_format;
  namespace control = fusexx::control;
  const std::string t = "control_request";
  // A status and a stats answer of a server that has served a few requests.
  control::status_info status;
  status.fusexx_version = std::string(fusexx::version);
  status.mountpoint = "/mnt/memfs";
  status.filesystem = "memfs";
  status.pid = 4242;
  status.connection = 57;
  status.uptime_s = 12.345;
  status.transport = "uring";
  status.threads = 1;
  status.queues = 2;
  status.queue_depth = 8;
  status.proto_major = 7;
  status.proto_minor = 45;
  status.max_write = 1 << 20;
  status.max_readahead = 131072;
  status.max_pages = 256;
  status.flags = control::flag_names(proto::init_flag::posix_locks | proto::init_flag::over_io_uring);
  status.restartable = true;
  status.handover_requests = 3;
  status.handover_refused = 1;
  status.stats = true;
  status.supervised = true;
  status.checkpoint = 7;
  status.journal_bytes = 65536;
  control::stats_info stats;
  {
    fusexx::testing::harness<memfs_fs> h;
    h.state.stats().set_enabled(true);
    h.init();
    h.call(opcode::lookup, 1, wire{}.name("missing"));
    h.call(opcode::getattr, 1, wire{}.add(proto::getattr_in{}));
    h.call(opcode::statfs, 1);
    stats.uptime_s = 1.5;
    stats.requests = h.state.counters().requests;
    stats.errors = h.state.counters().errors_sent;
    control::fill_ops(stats, h.state.stats().snapshot());
    for (auto& o : stats.ops) {  // latencies, fixed so that the seeds are the same every time
      o.p50_ns = 1000;
      o.p99_ns = 5000;
      o.max_ns = 9000;
      o.histogram = {};
      o.histogram[5] = o.replies;
    }
  }
  const auto text_seed = [&](const std::string& name, std::string_view text) {
    stream_writer w;
    w.config(f::json_text);
    append(w, text);
    write_seed(t, name, w.out);
  };
  text_seed("status", control::to_json(status));
  text_seed("stats", control::to_json(stats));
  text_seed("json", R"({"a":[1,2.5,-3e-7,true,false,null,"x\u0001\n\"y\\"],"b":{},"c":[[[]]],"d":18446744073709551615})");

  {  // The same answers, as the values the target writes them with (its order).
    stream_writer w;
    w.config(f::answer_values);
    const auto text = [&](std::string_view s) {
      w.put(static_cast<std::uint8_t>(s.size()));
      append(w, s);
    };
    w.put(status.version);
    text(status.fusexx_version);
    text(status.mountpoint);
    text(status.filesystem);
    w.put(status.pid).put(status.connection);
    text(status.transport);
    w.put(std::uint32_t{status.threads}).put(std::uint32_t{status.queues}).put(std::uint32_t{status.queue_depth});
    w.put(status.proto_major).put(status.proto_minor).put(status.max_write).put(status.max_readahead).put(status.max_pages);
    w.put(static_cast<std::uint8_t>(status.flags.size()));
    for (const auto& f : status.flags) text(f);
    w.put(std::uint8_t{status.restartable}).put(status.handover_requests).put(status.handover_refused);
    w.put(std::uint8_t{status.stats}).put(std::uint32_t{12345});
    w.put(std::uint8_t{status.supervised}).put(status.checkpoint).put(status.journal_bytes);
    w.put(stats.version).put(std::uint8_t{1}).put(stats.requests).put(stats.in_flight).put(stats.interrupts);
    w.put(stats.forgets).put(stats.errors).put(stats.malformed).put(stats.replies_refused).put(std::uint32_t{1500});
    w.put(static_cast<std::uint8_t>(std::min<std::size_t>(stats.ops.size(), 3)));
    for (std::size_t i = 0; i < stats.ops.size() && i < 3; ++i) {
      const auto& o = stats.ops[i];
      w.put(o.opcode);
      text(o.name);
      w.put(o.count).put(o.replies).put(o.errors).put(o.bytes_in).put(o.bytes_out).put(o.p50_ns).put(o.p99_ns);
      w.put(o.max_ns).put(std::uint8_t{1}).put(std::uint8_t{5}).put(std::uint64_t{o.count});
    }
    write_seed(t, "answer-values", w.out);
  }
  {  // Requests: tools' queries and a successor's hello, whole and as payloads (the framing made by the target).
    using fusexx::handover::kind;
    const auto request_seed = [&](const std::string& name, const std::vector<std::byte>& bytes, std::uint8_t fds,
                                  bool payload_only) {
      stream_writer w;
      w.config(f::request);
      w.put(fds).put(std::uint8_t{payload_only});
      append(w, payload_only ? payload_of(bytes) : std::span<const std::byte>(bytes));
      write_seed(t, name, w.out);
    };
    const auto query = [](std::string text) {
      return handover_bytes({.what = kind::query, .version = control::protocol_version, .pid = 4242,
                             .text = std::move(text), .connection = 57});
    };
    request_seed("query-status", query("status"), 0, false);
    request_seed("query-stats", query("stats"), 0, true);
    request_seed("query-unknown", query("everything"), 1, true);
    request_seed("hello", handover_bytes({.what = kind::hello, .pid = 42, .text = "memfs", .connection = 57}), 0, true);
    request_seed("refuse-with-fds", handover_bytes({.what = kind::refuse, .text = "busy"}), 2, false);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus OUTPUT_DIR (e.g. \"$PWD/tests/fuzz/corpus\")\n");
    return 2;
  }
  out_root = argv[1];
  fusexx::log::set_level(fusexx::log::level::off);
  dispatch_stream();
  notify_reply();
  uring_entry();
  mount_options();
  fd_passing();
  snapshot();
  control_request();
  return 0;
}
