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

outcome<command_line> parse(opts_fs& fs, std::vector<std::string> args) {
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
  CHECK_FALSE(parse(fs, {"prog", "-o", "threads=0", "/m"}));
  CHECK_FALSE(parse(fs, {"prog"}));                       // no mountpoint
  CHECK_FALSE(parse(fs, {"prog", "/a", "/b"}));           // two
  CHECK_FALSE(parse(fs, {"prog", "-x", "/a"}));           // unknown flag
  CHECK_FALSE(parse(fs, {"prog", "-o"}));                 // -o without a list
  auto unknown = parse(fs, {"prog", "-o", "frobnicate", "/a"});
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message.find("frobnicate") != std::string::npos);
  CHECK(parse(fs, {"prog", "-h"})->help);
}
