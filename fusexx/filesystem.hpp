#pragma once
// What a filesystem is: a class deriving from filesystem_base<Self> that
// defines any subset of the operations below, by name and shape. Which ones it
// defines is decided at compile time: the dispatcher calls them directly (no
// virtual calls) and answers ENOSYS for the rest.
//
// A handler returns T, result<T> or task<T> (a coroutine). The shapes, with
// `request& r` first except for forget/init/destroy:
//   result<void>  init(connection&)                 // an error fails the mount
//   void          destroy()
//   entry         lookup(r, ino parent, std::string_view name)
//   void          forget(ino, std::uint64_t nlookup)
//   attr          getattr(r, ino, std::optional<fhandle>)   or getattr(r, ino)
//   attr          setattr(r, ino, const set_attributes&)
//   std::string   readlink(r, ino)
//   entry         mknod(r, ino parent, name, mode_t mode, dev_t rdev, mode_t umask)
//   entry         mkdir(r, ino parent, name, mode_t mode, mode_t umask)
//   void          unlink(r, ino parent, name)         rmdir: same
//   entry         symlink(r, ino parent, name, std::string_view target)
//   void          rename(r, ino parent, name, ino new_parent, new_name, unsigned flags)
//   entry         link(r, ino, ino new_parent, new_name)
//   opened        open(r, ino, int flags)              opendir: same
//   std::size_t   read(r, ino, fhandle, off_t, std::span<std::byte> into)
//   std::size_t   write(r, ino, fhandle, off_t, std::span<const std::byte> data, int flags)
//   void          flush(r, ino, fhandle, std::uint64_t lock_owner)
//   void          release(r, ino, fhandle, int flags)   releasedir: same
//   void          fsync(r, ino, fhandle, bool datasync)  fsyncdir: same
//   void          readdir(r, ino, fhandle, off_t, dir_buffer&)   readdirplus: same
//   fs_stats      statfs(r, ino)
//   void          access(r, ino, int mask)
//   created       create(r, ino parent, name, mode_t mode, int flags, mode_t umask)
//   std::string   getxattr(r, ino, std::string_view name)   (the value's bytes)
//   std::string   listxattr(r, ino)                         (names, each NUL-terminated)
//   void          setxattr(r, ino, name, std::span<const std::byte> value, int flags)
//   void          removexattr(r, ino, name)
//   created       tmpfile(r, ino parent, mode_t mode, int flags, mode_t umask)   (an unnamed file, nlink 0)
//   posix_lock    getlk(r, ino, fhandle, std::uint64_t owner, const posix_lock&)  (F_UNLCK: no conflict)
//   void          setlk(r, ino, fhandle, std::uint64_t owner, const posix_lock&, bool wait)
//   void          flock(r, ino, fhandle, std::uint64_t owner, int op)  (LOCK_SH/EX/UN, | LOCK_NB)
//   std::uint64_t bmap(r, ino, std::uint32_t blocksize, std::uint64_t block)
//   ioctl_reply   ioctl(r, ino, fhandle, unsigned flags, unsigned cmd, std::uint64_t arg,
//                       std::span<const std::byte> in, std::uint32_t out_size)
//   unsigned      poll(r, ino, fhandle, std::optional<std::uint64_t> kh, unsigned events)  (revents)
//   void          fallocate(r, ino, fhandle, int mode, off_t offset, off_t length)
//   off_t         lseek(r, ino, fhandle, off_t offset, int whence)   (SEEK_DATA / SEEK_HOLE)
//   std::size_t   copy_file_range(r, ino in, fhandle, off_t off_in, ino out, fhandle, off_t off_out,
//                                 std::size_t len, std::uint64_t flags)
//   extended_attr statx(r, ino, std::optional<fhandle>, int flags, unsigned mask)
//   void          syncfs(r, ino)
//   void          interrupt(std::uint64_t unique)   // the kernel abandoned request `unique`
// docs/operations.md says, for each, what the kernel does when it is missing.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "connection.hpp"
#include "dir_buffer.hpp"
#include "request.hpp"
#include "result.hpp"
#include "task.hpp"
#include "types.hpp"

namespace fusexx {

// Marks Self as a filesystem. It holds no state: what belongs to a
// connection (notifications, backing files, negotiated parameters) lives in
// the server's session, reached from a handler as request::session() (or
// r.notify(), r.backing()) and elsewhere as server::session(). So a
// filesystem object may be copied, and may serve several mounts at once.
template <class Self>
struct filesystem_base {};

// ---- what a handler returns, unwrapped: T from T, result<T> or task<T> ----
template <class R>
struct handler_return {
  using value = R;
  static constexpr bool is_coroutine = false;
};
template <class T>
struct handler_return<result<T>> {
  using value = T;
  static constexpr bool is_coroutine = false;
};
template <class T>
struct handler_return<task<T>> {
  using value = T;
  static constexpr bool is_coroutine = true;
};

namespace detail {
using name_t = std::string_view;
using bytes_in = std::span<const std::byte>;
using bytes_out = std::span<std::byte>;
}  // namespace detail

// A filesystem whose root is a regular file (a single-file filesystem,
// mounted on a file) says so: `static constexpr bool root_is_file = true;`.
// Otherwise its root is a directory, and a file as the mountpoint is refused.
template <class Fs>
constexpr bool root_is_file() {
  if constexpr (requires { { Fs::root_is_file } -> std::convertible_to<bool>; }) return Fs::root_is_file;
  else return false;
}

// One concept per operation: true when Fs defines it with a usable shape.
#define FUSEXX_OPERATION(op, ...)                                              \
  template <class Fs>                                                          \
  concept has_##op = requires(Fs & fs, request & r) { fs.op(__VA_ARGS__); }; \
  template <class Fs>                                                          \
  concept op##_shape_ok = has_##op<Fs> || !requires { &Fs::op; };

template <class Fs>
concept has_init = requires(Fs& fs, connection& c) { fs.init(c); };
template <class Fs>
concept has_destroy = requires(Fs& fs) { fs.destroy(); };
template <class Fs>
concept has_forget = requires(Fs& fs, ino i, std::uint64_t n) { fs.forget(i, n); };
FUSEXX_OPERATION(lookup, r, ino{}, detail::name_t{})
FUSEXX_OPERATION(getattr, r, ino{}, std::optional<fhandle>{})
// getattr may also leave out the handle: attr getattr(r, ino).
template <class Fs>
concept has_getattr_without_handle = requires(Fs& fs, request& r) { fs.getattr(r, ino{}); };
FUSEXX_OPERATION(setattr, r, ino{}, set_attributes{})
FUSEXX_OPERATION(readlink, r, ino{})
FUSEXX_OPERATION(mknod, r, ino{}, detail::name_t{}, mode_t{}, dev_t{}, mode_t{})
FUSEXX_OPERATION(mkdir, r, ino{}, detail::name_t{}, mode_t{}, mode_t{})
FUSEXX_OPERATION(unlink, r, ino{}, detail::name_t{})
FUSEXX_OPERATION(rmdir, r, ino{}, detail::name_t{})
FUSEXX_OPERATION(symlink, r, ino{}, detail::name_t{}, detail::name_t{})
FUSEXX_OPERATION(rename, r, ino{}, detail::name_t{}, ino{}, detail::name_t{}, unsigned{})
FUSEXX_OPERATION(link, r, ino{}, ino{}, detail::name_t{})
FUSEXX_OPERATION(open, r, ino{}, int{})
FUSEXX_OPERATION(read, r, ino{}, fhandle{}, off_t{}, detail::bytes_out{})
FUSEXX_OPERATION(write, r, ino{}, fhandle{}, off_t{}, detail::bytes_in{}, int{})
FUSEXX_OPERATION(flush, r, ino{}, fhandle{}, std::uint64_t{})
FUSEXX_OPERATION(release, r, ino{}, fhandle{}, int{})
FUSEXX_OPERATION(fsync, r, ino{}, fhandle{}, bool{})
FUSEXX_OPERATION(opendir, r, ino{}, int{})
FUSEXX_OPERATION(readdir, r, ino{}, fhandle{}, off_t{}, std::declval<dir_buffer&>())
FUSEXX_OPERATION(readdirplus, r, ino{}, fhandle{}, off_t{}, std::declval<dir_buffer&>())
FUSEXX_OPERATION(releasedir, r, ino{}, fhandle{}, int{})
FUSEXX_OPERATION(fsyncdir, r, ino{}, fhandle{}, bool{})
FUSEXX_OPERATION(statfs, r, ino{})
FUSEXX_OPERATION(access, r, ino{}, int{})
FUSEXX_OPERATION(create, r, ino{}, detail::name_t{}, mode_t{}, int{}, mode_t{})
FUSEXX_OPERATION(getxattr, r, ino{}, detail::name_t{})
FUSEXX_OPERATION(listxattr, r, ino{})
FUSEXX_OPERATION(setxattr, r, ino{}, detail::name_t{}, detail::bytes_in{}, int{})
FUSEXX_OPERATION(removexattr, r, ino{}, detail::name_t{})
FUSEXX_OPERATION(tmpfile, r, ino{}, mode_t{}, int{}, mode_t{})
FUSEXX_OPERATION(getlk, r, ino{}, fhandle{}, std::uint64_t{}, posix_lock{})
FUSEXX_OPERATION(setlk, r, ino{}, fhandle{}, std::uint64_t{}, posix_lock{}, bool{})
FUSEXX_OPERATION(flock, r, ino{}, fhandle{}, std::uint64_t{}, int{})
FUSEXX_OPERATION(bmap, r, ino{}, std::uint32_t{}, std::uint64_t{})
FUSEXX_OPERATION(ioctl, r, ino{}, fhandle{}, unsigned{}, unsigned{}, std::uint64_t{}, detail::bytes_in{},
                 std::uint32_t{})
FUSEXX_OPERATION(poll, r, ino{}, fhandle{}, std::optional<std::uint64_t>{}, unsigned{})
FUSEXX_OPERATION(fallocate, r, ino{}, fhandle{}, int{}, off_t{}, off_t{})
FUSEXX_OPERATION(lseek, r, ino{}, fhandle{}, off_t{}, int{})
FUSEXX_OPERATION(copy_file_range, r, ino{}, fhandle{}, off_t{}, ino{}, fhandle{}, off_t{}, std::size_t{},
                 std::uint64_t{})
FUSEXX_OPERATION(statx, r, ino{}, std::optional<fhandle>{}, int{}, unsigned{})
FUSEXX_OPERATION(syncfs, r, ino{})
#undef FUSEXX_OPERATION
template <class Fs>
concept has_interrupt = requires(Fs& fs, std::uint64_t u) { fs.interrupt(u); };

// Every operation Fs declares has a shape the dispatcher can call. A member
// named like an operation but with the wrong parameters fails here, at compile
// time, instead of silently answering ENOSYS at run time.
template <class Fs>
concept operations_well_formed =
    lookup_shape_ok<Fs> && (getattr_shape_ok<Fs> || has_getattr_without_handle<Fs>) && setattr_shape_ok<Fs> && readlink_shape_ok<Fs> &&
    mknod_shape_ok<Fs> && mkdir_shape_ok<Fs> && unlink_shape_ok<Fs> && rmdir_shape_ok<Fs> &&
    symlink_shape_ok<Fs> && rename_shape_ok<Fs> && link_shape_ok<Fs> && open_shape_ok<Fs> &&
    read_shape_ok<Fs> && write_shape_ok<Fs> && flush_shape_ok<Fs> && release_shape_ok<Fs> &&
    fsync_shape_ok<Fs> && opendir_shape_ok<Fs> && readdir_shape_ok<Fs> && readdirplus_shape_ok<Fs> &&
    releasedir_shape_ok<Fs> && fsyncdir_shape_ok<Fs> && statfs_shape_ok<Fs> && access_shape_ok<Fs> &&
    create_shape_ok<Fs> && getxattr_shape_ok<Fs> && listxattr_shape_ok<Fs> && setxattr_shape_ok<Fs> &&
    removexattr_shape_ok<Fs> && tmpfile_shape_ok<Fs> && getlk_shape_ok<Fs> && setlk_shape_ok<Fs> &&
    flock_shape_ok<Fs> && bmap_shape_ok<Fs> && ioctl_shape_ok<Fs> && poll_shape_ok<Fs> &&
    fallocate_shape_ok<Fs> && lseek_shape_ok<Fs> && copy_file_range_shape_ok<Fs> && statx_shape_ok<Fs> &&
    syncfs_shape_ok<Fs> && (has_interrupt<Fs> || !requires { &Fs::interrupt; }) &&
    (has_forget<Fs> || !requires { &Fs::forget; }) && (has_destroy<Fs> || !requires { &Fs::destroy; });

template <class Fs>
concept filesystem = std::is_class_v<Fs> && std::derived_from<Fs, filesystem_base<Fs>> &&
                     operations_well_formed<Fs> &&
                     (!has_init<Fs> || requires(Fs& fs, connection& c) {
                       { fs.init(c) } -> std::convertible_to<result<void>>;
                     });

}  // namespace fusexx
