#pragma once
// Reading /proc/self/mountinfo: whether a path is (still) a FUSE mount.
// Used to skip unmounting what someone already unmounted, and by tests to
// check that nothing stale is left behind.
#include <sys/mount.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>
#include <string_view>

#include "../detail/kernel_file.hpp"

namespace fusexx {

struct mount_entry {
  std::string mountpoint;
  std::string device;   // "major:minor" of the superblock; FUSE's are 0:N
  std::string fstype;   // "fuse", "fuse.hello", ...
  std::string source;   // the fsname
  std::string options;  // per-mount options (rw,nosuid,...)
  std::string super_options;  // the superblock's (user_id=...,allow_other,...)
};

// mountinfo escapes space, tab, newline and backslash as \ooo.
inline std::string unescape_mount_field(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool octal = true;
      for (std::size_t k = 1; k <= 3; ++k) {
        if (i + k >= s.size() || s[i + k] < '0' || s[i + k] > '7') {
          octal = false;
          break;
        }
        v = v * 8 + (s[i + k] - '0');
      }
      if (octal) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// The last (topmost) FUSE mount at `path` that `mountinfo` (the text of a
// /proc/PID/mountinfo) lists, if any.
inline std::optional<mount_entry> find_fuse_mount_in(std::string_view mountinfo, const std::string& path) {
  std::optional<mount_entry> found;
  // A line: ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS
  // (proc(5)); fields are separated by one space, and spaces within them escaped.
  detail::for_each_part(mountinfo, '\n', [&](std::string_view line) {
    std::string_view field[9];
    int n = 0;
    bool past_dash = false;
    detail::for_each_part(line, ' ', [&](std::string_view f) {
      if (n < 6) field[n++] = f;
      else if (!past_dash) past_dash = f == "-";
      else if (n < 9) field[n++] = f;
    });
    if (n < 9) return;
    const std::string_view type = field[6];
    if (type != "fuse" && !type.starts_with("fuse.") && type != "fuseblk" && !type.starts_with("fuseblk.")) return;
    std::string mountpoint = unescape_mount_field(std::string(field[4]));
    if (mountpoint != path) return;
    found = mount_entry{.mountpoint = std::move(mountpoint),
                        .device = std::string(field[2]),
                        .fstype = std::string(type),
                        .source = unescape_mount_field(std::string(field[7])),
                        .options = std::string(field[5]),
                        .super_options = std::string(field[8])};
  });
  return found;
}

// The last (topmost) FUSE mount at `path`, if any.
inline std::optional<mount_entry> find_fuse_mount(const std::string& path) {
  auto text = detail::read_kernel_file("/proc/self/mountinfo");
  return text ? find_fuse_mount_in(*text, path) : std::nullopt;
}

// The FUSE connection's number: its directory in /sys/fs/fuse/connections.
// FUSE superblocks are anonymous devices (major 0), and the kernel names the
// directory after the device number, which is then just the minor.
inline std::optional<unsigned> fuse_connection_id(const mount_entry& e) {
  auto colon = e.device.find(':');
  if (colon == std::string::npos || e.device.substr(0, colon) != "0") return std::nullopt;
  try {
    return static_cast<unsigned>(std::stoul(e.device.substr(colon + 1)));
  } catch (...) {
    return std::nullopt;
  }
}

// Ends a FUSE connection from outside (fusectl's abort): every waiting
// request fails at once. False if fusectl is not mounted or the connection
// is already gone.
inline bool abort_fuse_connection(unsigned id) {
  std::ofstream abort("/sys/fs/fuse/connections/" + std::to_string(id) + "/abort");
  if (!abort) return false;
  abort << 1;
  return static_cast<bool>(abort.flush());
}

// abort_fuse_connection, mounting fusectl first if nobody has (root only).
// By number, so that it still works once the mount is detached.
inline bool abort_fuse_connection_mounting_fusectl(unsigned id) {
  const std::string connections = "/sys/fs/fuse/connections";
  if (::access(connections.c_str(), F_OK) == 0 &&
      ::access((connections + "/" + std::to_string(id)).c_str(), F_OK) != 0)
    ::mount("fusectl", connections.c_str(), "fusectl", 0, nullptr);
  return abort_fuse_connection(id);
}

// Ends the connection mounted at `mountpoint` from outside, mounting fusectl
// first if nobody has (root only). For watchdogs in tests and benchmarks:
// whatever waits on a wedged server then fails instead of hanging for ever.
inline bool abort_fuse_connection_at(const std::string& mountpoint) {
  auto m = find_fuse_mount(mountpoint);
  auto id = m ? fuse_connection_id(*m) : std::nullopt;
  return id && abort_fuse_connection_mounting_fusectl(*id);
}

}  // namespace fusexx
