// Command-line and -o option parsing: what users type.
#include <doctest/doctest.h>

#include <fusexx/fusexx.hpp>

using namespace fusexx;

namespace {

struct opts_fs : filesystem_base<opts_fs> {
  std::size_t size_limit = 0;
  outcome<bool> option(std::string_view key, std::optional<std::string_view> value) {
    if (key != "size") return false;
    if (!value) return fail(EINVAL, "size needs a value");
    size_limit = std::stoul(std::string(*value));
    return true;
  }
};

// A filesystem that mounts something (as passthrough mounts a directory).
struct source_fs : filesystem_base<source_fs> {
  std::string source;
  outcome<void> use_source(std::string_view s) {
    if (s == "refused") return fail(ENOENT, "source_fs: no such source '{}'", s);
    source = std::string(s);
    return {};
  }
};
static_assert(takes_source<source_fs>);
static_assert(!takes_source<opts_fs>);

template <class Fs>
outcome<command_line> parse(Fs& fs, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_command_line(fs, static_cast<int>(argv.size()), argv.data());
}

}  // namespace

TEST_CASE("split_options handles values and escaped commas") {
  auto v = split_options("allow_other,fsname=a\\,b,max_read=4096,,ro");
  REQUIRE(v.size() == 4);
  CHECK(v[0].first == "allow_other");
  CHECK_FALSE(v[0].second);
  CHECK(v[1].first == "fsname");
  CHECK(*v[1].second == "a,b");
  CHECK(*v[2].second == "4096");
  CHECK(v[3].first == "ro");
}

TEST_CASE("mount options: accepted values and precise errors") {
  mount_options m;
  CHECK(*m.apply("allow_other", std::nullopt));
  CHECK(m.allow_other);
  CHECK(*m.apply("rootmode", "40000"));
  CHECK(*m.rootmode == S_IFDIR);
  CHECK_FALSE(*m.apply("size", "1G"));  // not a mount option: left to the filesystem

  auto bad = m.apply("max_read", "lots");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code.value() == EINVAL);
  CHECK(bad.error().message.find("max_read") != std::string::npos);
  CHECK_FALSE(m.apply("max_read", "0"));
  CHECK_FALSE(m.apply("fsname", std::nullopt));
  CHECK_FALSE(m.apply("allow_other", "yes"));
  CHECK_FALSE(m.apply("rootmode", "20000"));  // a character device cannot be the root
  CHECK_FALSE(m.apply("user_id", "-1"));
}

TEST_CASE("fusermount3 and mount(2) option strings") {
  mount_options m;
  m.fsname = "my,fs";
  m.subtype = "demo";
  m.allow_other = true;
  m.max_read = 65536;
  // auto_unmount is fusexx's own watcher's, never the helper's (mount/auto_unmount.hpp)
  REQUIRE(*m.apply("auto_unmount", std::nullopt));
  CHECK(m.auto_unmount);
  CHECK_FALSE(m.apply("auto_unmount", "1"));
  CHECK(m.fusermount_string() == "rw,nosuid,nodev,allow_other,fsname=my\\,fs,subtype=demo,max_read=65536");
  CHECK(m.legacy_data(5, S_IFDIR, 0, 0) == "fd=5,rootmode=40000,user_id=0,group_id=0,allow_other,max_read=65536");
}

TEST_CASE("the command line") {
  opts_fs fs;
  auto cl = parse(fs, {"prog", "-f", "-s", "-o", "ro,size=42,fsname=x", "-oallow_other", "/mnt/point/"});
  REQUIRE(cl);
  CHECK(cl->daemon.foreground);
  CHECK(cl->server.classic.threads == 1);
  CHECK(cl->server.mount.read_only);
  CHECK(cl->server.mount.allow_other);
  CHECK(cl->server.mount.fsname == "x");
  CHECK(cl->server.mount.subtype == "prog");  // defaults to the program's name
  CHECK(cl->server.mount.mountpoint == "/mnt/point");
  CHECK(fs.size_limit == 42);

  auto rel = parse(fs, {"prog", "-d", "relative/dir"});
  REQUIRE(rel);
  CHECK(rel->debug);
  CHECK(rel->daemon.foreground);  // -d implies -f
  CHECK(rel->server.mount.mountpoint.starts_with("/"));  // made absolute: a daemon chdirs to /

  CHECK(parse(fs, {"prog", "-o", "threads=3", "/m"})->server.classic.threads == 3);
  CHECK_FALSE(parse(fs, {"prog", "/m"})->server.uring.huge_pages);
  CHECK_FALSE(parse(fs, {"prog", "/m"})->huge_pages_given);
  CHECK_FALSE(parse(fs, {"prog", "-o", "huge_pages=off", "/m"})->server.uring.huge_pages);
  CHECK(parse(fs, {"prog", "-o", "huge_pages=off", "/m"})->huge_pages_given);
  CHECK(parse(fs, {"prog", "-o", "huge_pages=on", "/m"})->server.uring.huge_pages);
  CHECK_FALSE(parse(fs, {"prog", "-o", "huge_pages=2", "/m"}));
  CHECK_FALSE(parse(fs, {"prog", "-o", "threads=0", "/m"}));
  CHECK(parse(fs, {"prog", "/m"})->server.journal_idle == std::chrono::seconds(10));
  CHECK(parse(fs, {"prog", "-o", "journal_idle_s=3", "/m"})->server.journal_idle == std::chrono::seconds(3));
  auto idle = parse(fs, {"prog", "-o", "journal_idle_s=0", "/m"});
  REQUIRE_FALSE(idle);
  CHECK(idle.error().message == "option journal_idle_s= takes 1 to 86400");
  CHECK_FALSE(parse(fs, {"prog"}));                       // no mountpoint
  CHECK_FALSE(parse(fs, {"prog", "/a", "/b", "/c"}));     // three positionals
  CHECK_FALSE(parse(fs, {"prog", "-x", "/a"}));           // unknown flag
  CHECK_FALSE(parse(fs, {"prog", "-o"}));                 // -o without a list
  auto unknown = parse(fs, {"prog", "-o", "frobnicate", "/a"});
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message.find("frobnicate") != std::string::npos);
  CHECK(parse(fs, {"prog", "-h"})->help);
}

// What mount.fuse3 runs for `mount -t fuse.prog SOURCE DIR` (libfuse
// util/mount.fuse.c, commit e8d407ce): `prog SOURCE DIR -o OPTS`.
TEST_CASE("SOURCE MOUNTPOINT: the source names the mount, or goes to a filesystem that takes one") {
  opts_fs fs;
  auto cl = parse(fs, {"memfs", "memfs", "/mnt/x/", "-o", "rw,dev,suid"});
  REQUIRE(cl);
  CHECK(cl->server.mount.mountpoint == "/mnt/x");
  CHECK(cl->server.mount.fsname == "memfs");
  CHECK(cl->server.mount.subtype == "memfs");
  CHECK_FALSE(cl->server.mount.nodev);
  CHECK_FALSE(cl->server.mount.nosuid);

  auto named = parse(fs, {"prog", "-o", "fsname=given", "tank", "/m"});
  REQUIRE(named);
  CHECK(named->server.mount.fsname == "given");  // -o fsname= wins over the source
  CHECK(named->server.mount.mountpoint == "/m");
  CHECK(parse(fs, {"prog", "/m"})->server.mount.fsname == "prog");  // no source: the program's name

  source_fs sfs;
  auto taken = parse(sfs, {"passthrough", "/srv/data", "/mnt/y", "-o", "rw"});
  REQUIRE(taken);
  CHECK(sfs.source == "/srv/data");
  CHECK(taken->server.mount.fsname == "/srv/data");
  CHECK(taken->server.mount.mountpoint == "/mnt/y");
  source_fs untouched;
  REQUIRE(parse(untouched, {"passthrough", "/mnt/y"}));
  CHECK(untouched.source.empty());  // no source: use_source is not called

  auto refused = parse(sfs, {"prog", "refused", "/m"});
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code.value() == ENOENT);
  CHECK(refused.error().message.find("refused") != std::string::npos);

  auto three = parse(fs, {"prog", "src", "/a", "/b"});
  REQUIRE_FALSE(three);
  CHECK(three.error().code.value() == EINVAL);
  CHECK(three.error().message.find("too many arguments: '/b'") != std::string::npos);
  CHECK(three.error().message.find("SOURCE and MOUNTPOINT") != std::string::npos);
  CHECK_FALSE(parse(fs, {"prog", "", "/a"}));  // an empty source
}

TEST_CASE("options mount(8), mount.fuse3 and systemd pass are accepted or ignored, never an error") {
  opts_fs fs;
  // As mount(8) and mount.fuse3 hand them over for fstab lines (verified with
  // util-linux 2.38.1 and Debian's mount.fuse3 3.14), plus what mount.fuse3
  // strips itself and so reaches a program only when run by hand.
  auto cl = parse(fs, {"prog", "src", "/m", "-o",
                       "rw,dev,suid,exec,atime,async,_netdev,nofail,noauto,auto,user,users,nouser,defaults,"
                       "user=bob,x-systemd.automount,x-systemd.requires=network-online.target,x-gvfs-show"});
  REQUIRE_MESSAGE(cl, cl.error().message);
  const mount_options& m = cl->server.mount;
  CHECK_FALSE(m.read_only);
  CHECK_FALSE(m.nodev);
  CHECK_FALSE(m.nosuid);
  CHECK_FALSE(m.noexec);
  CHECK_FALSE(m.noatime);
  CHECK_FALSE(m.sync);
  CHECK_FALSE(m.allow_other);
  // Ignored means ignored: none of them reaches fusermount3 or the kernel.
  CHECK(m.fusermount_string() == "rw,suid,dev,fsname=src,subtype=prog");

  auto user = parse(fs, {"prog", "-o", "rw,noexec,nosuid,nodev,user", "/m"});  // an fstab line with `user`
  REQUIRE(user);
  CHECK(user->server.mount.noexec);
  CHECK(user->server.mount.nosuid);
  CHECK(user->server.mount.nodev);

  mount_options o;
  CHECK(*o.apply("_netdev", std::nullopt));
  CHECK(*o.apply("x-systemd.device-timeout", "5s"));
  CHECK(*o.apply("user", "bob"));
  CHECK_FALSE(*o.apply("nofail", "yes"));  // with a value it is not one of them: not a mount option
  // The filesystem's own options are still asked for: an unknown one stays an error.
  CHECK_FALSE(parse(fs, {"prog", "-o", "_netdev,frobnicate", "/m"}));
}
