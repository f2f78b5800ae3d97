// Fuzz target: the command line and its -o options (fusexx/main.hpp's
// parse_command_line, fusexx/mount/options.hpp's split_options and
// mount_options::apply, and the filesystems' own option() and use_source():
// memfs's, passthrough's, and none).
//
// Input: u8 config (bits 0-1: the filesystem: memfs, passthrough, or one
// with no options of its own), then argv (argv[0] first), the arguments
// separated by NUL bytes. So that the fuzzer need not guess option names, a
// byte 0x01-0x1d stands for a word of `words` below, 0x1e N for the word N of
// `more`, and 0x1f N for the byte N itself.
//
// Checked: nothing throws; a refused command line says why (an errno and a
// message); an accepted one has sane values — a mountpoint that is absolute,
// normal and without a trailing '/', a fsname and a subtype (unless argv[0]
// names no program), numbers within
// their ranges — and its options survive the way to fusermount3: the
// fusermount3 -o string, split and applied again, gives the same options
// (and mount(2)'s data string holds only the keys it may).
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fusexx/fusexx.hpp>

#include "examples/memfs_fs.hpp"
#include "examples/passthrough_fs.hpp"
#include "tests/fuzz/fuzz.hpp"

namespace {

using namespace fusexx::fuzzing;

struct plain_fs : fusexx::filesystem_base<plain_fs> {};

// One byte each (0x01-0x1d).
constexpr const char* words[] = {
    "-o",        "-f",         "-d",      "-s",          "-h",          "--takeover",    ",",
    "=",         "allow_other", "default_permissions", "ro", "rw",     "fsname=",       "subtype=",
    "max_read=", "rootmode=",  "user_id=", "group_id=",  "blkdev",      "blksize=",      "auto_unmount",
    "size=",     "entry_timeout=", "source=", "timeout=", "/mnt/point", "\\,",          "threads=",
    "x-systemd.automount",
};
static_assert(std::size(words) == 0x1d);
// 0x1e N.
constexpr const char* more[] = {
    "transport=",  "queue_depth=", "init_timeout_ms=", "stats=",       "pid_file=",   "keep_stdio",
    "keep_cwd",    "async_init",   "nr_inodes=",       "attr_timeout=", "writeback_cache", "atomic_o_trunc",
    "explicit_inval_data", "handle_killpriv_v2", "writeback", "passthrough", "killpriv_v2", "-V",
    "--help",      "--version",    "-odebug",          "suid",         "nosuid",      "dev",
    "nodev",       "exec",         "noexec",           "atime",        "noatime",     "sync",
    "async",       "dirsync",      "defaults",         "user=",        "_netdev",     "nofail",
    "40000",       "100000",       "4096",             "uring",        "classic",     "auto",
    "on",          "off",          "-1",               "0",            "1e300",       "nan",
    "inf",         "18446744073709551616", "\\",       "..",           "/",           "//",
    "",
};

std::vector<std::string> make_argv(input& in) {
  std::vector<std::string> args(1);
  while (!in.empty()) {
    const std::uint8_t b = in.u8();
    if (b == 0) args.emplace_back();
    else if (b < 0x1e) args.back() += words[b - 1];
    else if (b == 0x1e) args.back() += more[in.u8() % std::size(more)];
    else if (b == 0x1f) {
      const char c = static_cast<char>(in.u8());
      if (c != 0) args.back() += c;  // (an argument cannot hold a NUL)
    } else args.back() += static_cast<char>(b);
  }
  return args;
}

// The fields fusermount_string() carries.
bool same_for_fusermount(const fusexx::mount_options& a, const fusexx::mount_options& b) {
  return a.read_only == b.read_only && a.nosuid == b.nosuid && a.nodev == b.nodev && a.noexec == b.noexec &&
         a.noatime == b.noatime && a.sync == b.sync && a.dirsync == b.dirsync && a.allow_other == b.allow_other &&
         a.default_permissions == b.default_permissions && a.fsname == b.fsname && a.subtype == b.subtype &&
         a.max_read == b.max_read && a.blkdev == b.blkdev && a.blksize == b.blksize;
}

template <class Fs>
void check(Fs& fs, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  fusexx::outcome<fusexx::command_line> cl = fusexx::fail(EINVAL, "not parsed");
  try {
    cl = fusexx::parse_command_line(fs, static_cast<int>(args.size()), argv.data());
  } catch (const std::exception& e) {
    fail("parse_command_line threw: {}", e.what());
  } catch (...) {
    fail("parse_command_line threw something");
  }
  if (!cl) {
    FUZZ_CHECK(cl.error().code.value() > 0 && !cl.error().message.empty(), "a refusal without a reason ({}: '{}')",
               cl.error().code.value(), cl.error().message);
    return;
  }
  const fusexx::mount_options& m = cl->server.mount;
  if (!cl->help && !cl->show_version) {
    const std::string& mp = m.mountpoint;
    FUZZ_CHECK(!mp.empty() && mp.front() == '/', "accepted with mountpoint '{}': not absolute", mp);
    FUZZ_CHECK(mp == "/" || !mp.ends_with('/'), "accepted with mountpoint '{}': a trailing '/'", mp);
    FUZZ_CHECK(std::filesystem::path(mp).lexically_normal().string() == mp, "accepted with mountpoint '{}': not normal",
               mp);
  }
  // (Both default to the program's name; mount.hpp copes with empty ones.)
  const bool nameless = std::filesystem::path(args[0]).filename().empty();
  FUZZ_CHECK(nameless || (!m.fsname.empty() && !m.subtype.empty()), "accepted without a fsname ('{}') or a subtype ('{}')",
             m.fsname, m.subtype);
  FUZZ_CHECK(!m.max_read || *m.max_read >= 1, "max_read {}", *m.max_read);
  FUZZ_CHECK(!m.blksize || (*m.blksize >= 512 && (*m.blksize & (*m.blksize - 1)) == 0), "blksize {}", *m.blksize);
  FUZZ_CHECK(!m.rootmode || S_ISDIR(*m.rootmode) || S_ISREG(*m.rootmode), "rootmode {:o}", *m.rootmode);
  FUZZ_CHECK(cl->server.uring.queue_depth >= 1 && cl->server.uring.queue_depth <= 1024, "queue_depth {}",
             cl->server.uring.queue_depth);
  FUZZ_CHECK(cl->server.init_timeout.count() > 0, "init_timeout {} ms", cl->server.init_timeout.count());

  // The way to fusermount3 and back.
  const std::string helper = m.fusermount_string();
  fusexx::mount_options again;
  for (auto& [key, value] : fusexx::split_options(helper)) {
    std::optional<std::string_view> v;
    if (value) v = *value;
    auto r = again.apply(key, v);
    FUZZ_CHECK(r && *r, "fusermount3's option '{}' (of '{}') is not taken back: {}", key, helper,
               r ? "not a mount option" : r.error().message);
  }
  FUZZ_CHECK(same_for_fusermount(m, again), "the options in '{}' are not the ones given (fsname '{}', subtype '{}')",
             helper, m.fsname, m.subtype);
  const std::string data = m.legacy_data(5, S_IFDIR | 0755, 0, 0);
  for (auto& [key, value] : fusexx::split_options(data))
    FUZZ_CHECK(key == "fd" || key == "rootmode" || key == "user_id" || key == "group_id" || key == "allow_other" ||
                   key == "default_permissions" || key == "max_read" || key == "blksize",
               "mount(2) data '{}' has a key '{}'", data, key);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fusexx::log::set_level(fusexx::log::level::off);
  input in(data, size);
  const std::uint8_t config = in.u8();
  auto args = make_argv(in);
  switch (config % 3) {
    case 0: {
      memfs_fs fs;
      check(fs, std::move(args));
      break;
    }
    case 1: {
      passthrough_fs fs;
      check(fs, std::move(args));
      break;
    }
    default: {
      plain_fs fs;
      check(fs, std::move(args));
      break;
    }
  }
  return 0;
}
