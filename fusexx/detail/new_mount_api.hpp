#pragma once
// The new mount API's system calls (fsopen, fsconfig, fsmount, move_mount;
// Linux 5.2), which glibc 2.36 does not wrap, and their constants from
// linux/mount.h, named here so that no header depends on which of glibc's
// or the kernel's headers is present. For fusexx/mount (a FUSE mount kept
// out of sight until INIT is answered) and transport/entry_region.hpp (a
// private huge-page tmpfs that is never attached).
#include <sys/syscall.h>
#include <unistd.h>

namespace fusexx::detail {

// A kernel without them answers ENOSYS; the callers then fall back (mount(2),
// a memfd).
inline int sys_fsopen(const char* name, unsigned flags) {
  return static_cast<int>(::syscall(SYS_fsopen, name, flags));
}
inline int sys_fsconfig(int fd, unsigned cmd, const char* key, const void* value, int aux) {
  return static_cast<int>(::syscall(SYS_fsconfig, fd, cmd, key, value, aux));
}
inline int sys_fsmount(int fd, unsigned flags, unsigned attrs) {
  return static_cast<int>(::syscall(SYS_fsmount, fd, flags, attrs));
}
inline int sys_move_mount(int from_fd, const char* from, int to_fd, const char* to, unsigned flags) {
  return static_cast<int>(::syscall(SYS_move_mount, from_fd, from, to_fd, to, flags));
}

inline constexpr unsigned fsopen_cloexec = 0x1, fsmount_cloexec = 0x1;
inline constexpr unsigned fsconfig_set_flag = 0, fsconfig_set_string = 1, fsconfig_cmd_create = 6;
inline constexpr unsigned attr_rdonly = 0x1, attr_nosuid = 0x2, attr_nodev = 0x4, attr_noexec = 0x8,
                          attr_noatime = 0x10;
inline constexpr unsigned move_mount_f_empty_path = 0x4;

}  // namespace fusexx::detail
