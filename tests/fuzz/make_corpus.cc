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
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fusexx/proto/abi.hpp>

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

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus OUTPUT_DIR (e.g. \"$PWD/tests/fuzz/corpus\")\n");
    return 2;
  }
  out_root = argv[1];
  dispatch_stream();
  return 0;
}
