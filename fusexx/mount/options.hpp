#pragma once
// Mount options, as users type them after -o (fusermount style).
#include <sys/types.h>

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../failure.hpp"

namespace fusexx {

struct mount_options {
  std::string mountpoint;
  std::string fsname;    // the mount's source, shown by mount(8) and df
  std::string subtype;   // type "fuse.<subtype>" in /proc/mounts
  bool allow_other = false;
  bool default_permissions = false;  // let the kernel check permissions from st_mode
  bool read_only = false;
  bool nosuid = true, nodev = true, noexec = false, noatime = false, dirsync = false, sync = false;
  std::optional<std::uint32_t> max_read;
  std::optional<mode_t> rootmode;    // the root's type for the kernel; normally the filesystem's (root_is_file)
  // The filesystem's root is a regular file, not a directory (server<Fs> sets
  // it from Fs::root_is_file). The kernel mounts a directory only on a
  // directory and a file only on a file, and takes the root's type from the
  // mount: a root typed after the wrong kind of mountpoint answers EIO.
  bool root_is_file = false;
  std::optional<uid_t> user_id;      // the mount's owner; defaults to the caller
  std::optional<gid_t> group_id;
  // Type fuseblk: a filesystem "on" a block device, which fsname names
  // (e.g. fsname=/dev/loop0). Root only. The kernel sends BMAP and, at
  // unmount, DESTROY only to such mounts. blksize: the superblock's block
  // size (the kernel's default is 512).
  bool blkdev = false;
  std::optional<std::uint32_t> blksize;
  // Root only: use mount(2) even where the new mount API exists (it is the
  // fallback anyway when fsopen is missing).
  bool legacy_mount_api = false;
  // Synchronous INIT (FUSE_DEV_IOC_SYNC_INIT): the mount call itself fails
  // when init() does. Falls back to asynchronous INIT where the kernel or the
  // helper cannot do it; false forces asynchronous INIT.
  bool sync_init = true;
  // Unmount when the server dies without unmounting (libfuse's auto_unmount):
  // a watcher process does it (mount/auto_unmount.hpp). Not passed to
  // fusermount3, whose own watcher fusexx does not use.
  bool auto_unmount = false;
  // The unprivileged mount helper. Empty: fusermount3 from PATH, used only
  // when not root. Set: always mount through this helper.
  std::string helper;

  // Applies one "key" or "key=value" option. Returns false when the key is
  // not a mount option (it may be the filesystem's own); a known key with a
  // bad value is an error.
  outcome<bool> apply(std::string_view key, std::optional<std::string_view> value);

  // fusermount3's -o string for these options.
  std::string fusermount_string() const;
  // mount(2)'s data string, given the device fd.
  std::string legacy_data(int fd, mode_t root_mode, uid_t uid, gid_t gid) const;
};

// Splits "a,b=c,d" into (key, value) pairs. A backslash escapes a comma.
inline std::vector<std::pair<std::string, std::optional<std::string>>> split_options(std::string_view s) {
  std::vector<std::pair<std::string, std::optional<std::string>>> out;
  std::string item;
  auto flush = [&] {
    if (item.empty()) return;
    auto eq = item.find('=');
    if (eq == std::string::npos) out.emplace_back(item, std::nullopt);
    else out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    item.clear();
  };
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) item.push_back(s[++i]);
    else if (s[i] == ',') flush();
    else item.push_back(s[i]);
  }
  flush();
  return out;
}

namespace detail {
template <class T>
std::optional<T> parse_number(std::string_view s, int base = 10) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc{} || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}
}  // namespace detail

// Options that belong to mount(8), mount.fuse3 and systemd, not to the
// filesystem: accepted and ignored, never an error, so an fstab line's
// options work however they reach the program. What libfuse does (libfuse
// commit e8d407ce, 3.19.0-rc0):
// - util/mount.fuse.c drops "", user, nofail, nouser, users, auto, noauto and
//   _netdev itself before it runs `TYPE SOURCE MOUNTPOINT -o OPTS` (they only
//   reach a program run by hand, or through another helper);
// - lib/mount.c keeps "x-*" options (x-systemd.automount, x-gvfs-show) and
//   user=NAME for the mount table only: never the kernel's. mount(8) itself
//   does not pass x-* to helpers, but user=NAME it does.
// - "defaults" is mount(8)'s (it passes rw instead); it means nothing here.
// The flags libfuse sets (rw, ro, suid, nosuid, dev, nodev, exec, noexec,
// sync, async, dirsync, noatime) are real options above; as with fusermount3,
// suid and dev need root (fusermount3 ignores them for users, with a warning).
inline bool is_helper_option(std::string_view key, std::optional<std::string_view> value) {
  if (key.starts_with("x-")) return true;
  if (key == "user" && value) return true;  // user=NAME: mount(8)'s record of who mounted
  if (value) return false;
  for (std::string_view k : {"defaults", "auto", "noauto", "user", "nouser", "users", "nofail", "_netdev"})
    if (key == k) return true;
  return false;
}

inline outcome<bool> mount_options::apply(std::string_view key, std::optional<std::string_view> value) {
  auto flag = [&](bool& field, bool on) -> outcome<bool> {
    if (value) return fail(EINVAL, "mount option '{}' takes no value", key);
    field = on;
    return true;
  };
  auto text = [&](std::string& field) -> outcome<bool> {
    if (!value || value->empty()) return fail(EINVAL, "mount option '{}' needs a value ({}=...)", key, key);
    field = std::string(*value);
    return true;
  };
  auto number = [&]<class T>(std::optional<T>& field, int base) -> outcome<bool> {
    if (!value) return fail(EINVAL, "mount option '{}' needs a value ({}=N)", key, key);
    auto n = detail::parse_number<T>(*value, base);
    if (!n) return fail(EINVAL, "mount option '{}={}' is not a valid number", key, *value);
    field = *n;
    return true;
  };
  if (key == "allow_other") return flag(allow_other, true);
  if (key == "default_permissions") return flag(default_permissions, true);
  if (key == "ro") return flag(read_only, true);
  if (key == "rw") return flag(read_only, false);
  if (key == "suid") return flag(nosuid, false);
  if (key == "nosuid") return flag(nosuid, true);
  if (key == "dev") return flag(nodev, false);
  if (key == "nodev") return flag(nodev, true);
  if (key == "exec") return flag(noexec, false);
  if (key == "noexec") return flag(noexec, true);
  if (key == "atime") return flag(noatime, false);
  if (key == "noatime") return flag(noatime, true);
  if (key == "sync") return flag(sync, true);
  if (key == "async") return flag(sync, false);
  if (key == "dirsync") return flag(dirsync, true);
  if (key == "fsname") return text(fsname);
  if (key == "subtype") return text(subtype);
  if (key == "max_read") {
    auto r = number(max_read, 10);
    if (r && *max_read == 0) return fail(EINVAL, "mount option 'max_read' must be at least 1");
    return r;
  }
  if (key == "rootmode") {
    auto r = number(rootmode, 8);
    if (r && !S_ISDIR(*rootmode) && !S_ISREG(*rootmode))
      return fail(EINVAL, "mount option 'rootmode={}' must be a directory (40000) or a file (100000)", *value);
    return r;
  }
  if (key == "blkdev") return flag(blkdev, true);
  if (key == "auto_unmount") return flag(auto_unmount, true);
  if (key == "blksize") {
    auto r = number(blksize, 10);
    if (r && (*blksize < 512 || (*blksize & (*blksize - 1))))
      return fail(EINVAL, "mount option 'blksize={}' must be a power of two of at least 512", *value);
    return r;
  }
  if (key == "user_id") return number(user_id, 10);
  if (key == "group_id") return number(group_id, 10);
  if (is_helper_option(key, value)) return true;
  return false;
}

inline std::string mount_options::fusermount_string() const {
  std::string s = read_only ? "ro" : "rw";
  auto add = [&](std::string_view o) {
    s += ',';
    s += o;
  };
  auto escaped = [](std::string_view v) {
    std::string out;
    for (char c : v) {
      if (c == ',' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    return out;
  };
  add(nosuid ? "nosuid" : "suid");
  add(nodev ? "nodev" : "dev");
  if (noexec) add("noexec");
  if (noatime) add("noatime");
  if (sync) add("sync");
  if (dirsync) add("dirsync");
  if (allow_other) add("allow_other");
  if (default_permissions) add("default_permissions");
  if (!fsname.empty()) add("fsname=" + escaped(fsname));
  if (!subtype.empty()) add("subtype=" + escaped(subtype));
  if (max_read) add("max_read=" + std::to_string(*max_read));
  if (blkdev) add("blkdev");
  if (blksize) add("blksize=" + std::to_string(*blksize));
  return s;
}

inline std::string mount_options::legacy_data(int fd, mode_t root_mode, uid_t uid, gid_t gid) const {
  std::string s = fmt::format("fd={},rootmode={:o},user_id={},group_id={}", fd, root_mode, uid, gid);
  if (allow_other) s += ",allow_other";
  if (default_permissions) s += ",default_permissions";
  if (max_read) s += fmt::format(",max_read={}", *max_read);
  if (blksize) s += fmt::format(",blksize={}", *blksize);
  return s;
}

}  // namespace fusexx
