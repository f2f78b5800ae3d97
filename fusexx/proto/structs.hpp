// fusexx/proto/structs.hpp - request and reply structs of the FUSE wire protocol (7.45).
//
// Each kernel `struct fuse_xxx` is `proto::xxx` here, with the kernel's field
// names and fixed-width types, so that the layout is byte-for-byte the ABI.
// All structs are standard-layout, trivially copyable aggregates. Every field
// has a `{}` default member initialiser, so `proto::x v{.field = ...}` leaves
// all other fields -- including padding/unused ones the kernel wants zero --
// at 0, and g++ 12 does not warn (-Wmissing-field-initializers) about the
// fields left out. Send them with memcpy/iovec; read requests by memcpy out of
// the receive buffer (it need not be aligned for a reinterpret_cast).
//
// Deviations from the kernel spelling: C++ reserves identifiers starting with
// "__", so statx's __spare0/__spare2 and sx_time's __reserved are named
// spare0/spare2/reserved. Flexible array members (dirent::name,
// supp_groups::groups) are not declared; only the fixed part is, and the
// variable part follows it on the wire.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace fusexx::proto {

// Variable-length records (dirents, extensions) are padded to 8 bytes.
constexpr std::size_t align8(std::size_t n) noexcept { return (n + 7) & ~std::size_t{7}; }

// ===========================================================================
// Common attribute structs
// ===========================================================================

struct attr {
    std::uint64_t ino{};
    std::uint64_t size{};
    std::uint64_t blocks{};
    std::uint64_t atime{};
    std::uint64_t mtime{};
    std::uint64_t ctime{};
    std::uint32_t atimensec{};
    std::uint32_t mtimensec{};
    std::uint32_t ctimensec{};
    std::uint32_t mode{};
    std::uint32_t nlink{};
    std::uint32_t uid{};
    std::uint32_t gid{};
    std::uint32_t rdev{};
    std::uint32_t blksize{}; // 7.9
    std::uint32_t flags{};   // 7.32, attr_flag::*
};
static_assert(sizeof(attr) == 88);
static_assert(offsetof(attr, mode) == 60);
static_assert(offsetof(attr, blksize) == 80);

// statx(2) timestamp, bit-compatible with struct statx_timestamp.
struct sx_time {
    std::int64_t tv_sec{};
    std::uint32_t tv_nsec{};
    std::int32_t reserved{}; // kernel: __reserved
};
static_assert(sizeof(sx_time) == 16);

// Bit-compatible with struct statx of statx(2). 7.39.
struct statx {
    std::uint32_t mask{};
    std::uint32_t blksize{};
    std::uint64_t attributes{};
    std::uint32_t nlink{};
    std::uint32_t uid{};
    std::uint32_t gid{};
    std::uint16_t mode{};
    std::uint16_t spare0[1]{}; // kernel: __spare0
    std::uint64_t ino{};
    std::uint64_t size{};
    std::uint64_t blocks{};
    std::uint64_t attributes_mask{};
    sx_time atime{};
    sx_time btime{};
    sx_time ctime{};
    sx_time mtime{};
    std::uint32_t rdev_major{};
    std::uint32_t rdev_minor{};
    std::uint32_t dev_major{};
    std::uint32_t dev_minor{};
    std::uint64_t spare2[14]{}; // kernel: __spare2
};
static_assert(sizeof(statx) == 256);
static_assert(offsetof(statx, ino) == 32);
static_assert(offsetof(statx, atime) == 64);
static_assert(offsetof(statx, rdev_major) == 128);

struct kstatfs {
    std::uint64_t blocks{};
    std::uint64_t bfree{};
    std::uint64_t bavail{};
    std::uint64_t files{};
    std::uint64_t ffree{};
    std::uint32_t bsize{};
    std::uint32_t namelen{};
    std::uint32_t frsize{}; // 7.4
    std::uint32_t padding{};
    std::uint32_t spare[6]{};
};
static_assert(sizeof(kstatfs) == 80);

struct file_lock {
    std::uint64_t start{};
    std::uint64_t end{};
    std::uint32_t type{};
    std::uint32_t pid{}; // tgid
};
static_assert(sizeof(file_lock) == 24);

// ===========================================================================
// Headers
// ===========================================================================

// Value the kernel puts in in_header::uid/gid when init_flag::allow_idmap is
// on and the caller's ids cannot be mapped (never for creating operations).
inline constexpr std::uint32_t invalid_uidgid = 0xffffffffu;

// Starts every request. `len` counts the whole request: this header, the
// op's argument struct(s), names, data, and trailing extensions.
struct in_header {
    std::uint32_t len{};
    std::uint32_t opcode{}; // proto::opcode
    std::uint64_t unique{}; // echo in out_header::unique, incl. unique_resend_bit
    std::uint64_t nodeid{};
    std::uint32_t uid{};
    std::uint32_t gid{};
    std::uint32_t pid{};
    std::uint16_t total_extlen{}; // 7.38: length of trailing extensions in 8-byte units
    std::uint16_t padding{};
};
static_assert(sizeof(in_header) == 40);
static_assert(offsetof(in_header, opcode) == 4);
static_assert(offsetof(in_header, unique) == 8);
static_assert(offsetof(in_header, nodeid) == 16);
static_assert(offsetof(in_header, uid) == 24);
static_assert(offsetof(in_header, pid) == 32);
static_assert(offsetof(in_header, total_extlen) == 36);

// Starts every reply and notification. `error` is 0 or a negative errno for a
// reply, a notify_code for a notification (then unique == 0).
struct out_header {
    std::uint32_t len{};
    std::int32_t error{};
    std::uint64_t unique{};
};
static_assert(sizeof(out_header) == 16);
static_assert(offsetof(out_header, error) == 4);
static_assert(offsetof(out_header, unique) == 8);

// ===========================================================================
// Requests and replies, roughly in opcode order
// ===========================================================================

// Reply to LOOKUP, MKNOD, MKDIR, SYMLINK, LINK; first part of CREATE's reply.
struct entry_out {
    std::uint64_t nodeid{};      // 0 = negative entry, cached for entry_valid
    std::uint64_t generation{};  // nodeid:generation must be unique for the fs lifetime
    std::uint64_t entry_valid{}; // name cache timeout, seconds
    std::uint64_t attr_valid{};  // attribute cache timeout, seconds
    std::uint32_t entry_valid_nsec{};
    std::uint32_t attr_valid_nsec{};
    proto::attr attr{};
};
static_assert(sizeof(entry_out) == 128);
static_assert(offsetof(entry_out, attr) == 40);

struct forget_in {
    std::uint64_t nlookup{};
};
static_assert(sizeof(forget_in) == 8);

struct forget_one {
    std::uint64_t nodeid{};
    std::uint64_t nlookup{};
};
static_assert(sizeof(forget_one) == 16);

// Followed by `count` forget_one.
struct batch_forget_in {
    std::uint32_t count{};
    std::uint32_t dummy{};
};
static_assert(sizeof(batch_forget_in) == 8);

struct getattr_in {
    std::uint32_t getattr_flags{}; // getattr_flag::*
    std::uint32_t dummy{};
    std::uint64_t fh{};
};
static_assert(sizeof(getattr_in) == 16);

// Reply to GETATTR and SETATTR.
struct attr_out {
    std::uint64_t attr_valid{};
    std::uint32_t attr_valid_nsec{};
    std::uint32_t dummy{};
    proto::attr attr{};
};
static_assert(sizeof(attr_out) == 104);
static_assert(offsetof(attr_out, attr) == 16);

struct statx_in {
    std::uint32_t getattr_flags{}; // getattr_flag::*
    std::uint32_t reserved{};
    std::uint64_t fh{};
    std::uint32_t sx_flags{}; // AT_* flags of statx(2)
    std::uint32_t sx_mask{};  // STATX_* mask
};
static_assert(sizeof(statx_in) == 24);

struct statx_out {
    std::uint64_t attr_valid{};
    std::uint32_t attr_valid_nsec{};
    std::uint32_t flags{};
    std::uint64_t spare[2]{};
    proto::statx stat{};
};
static_assert(sizeof(statx_out) == 288);
static_assert(offsetof(statx_out, stat) == 32);

// Followed by the name. Minor < 12: only mode, rdev (mknod_in_compat_size).
struct mknod_in {
    std::uint32_t mode{};
    std::uint32_t rdev{};
    std::uint32_t umask{};
    std::uint32_t padding{};
};
static_assert(sizeof(mknod_in) == 16);

// Followed by the name.
struct mkdir_in {
    std::uint32_t mode{};
    std::uint32_t umask{};
};
static_assert(sizeof(mkdir_in) == 8);

// Followed by oldname '\0' newname '\0'.
struct rename_in {
    std::uint64_t newdir{};
};
static_assert(sizeof(rename_in) == 8);

// Followed by oldname '\0' newname '\0'. flags are RENAME_* of renameat2(2).
struct rename2_in {
    std::uint64_t newdir{};
    std::uint32_t flags{};
    std::uint32_t padding{};
};
static_assert(sizeof(rename2_in) == 16);

// Followed by the new name.
struct link_in {
    std::uint64_t oldnodeid{};
};
static_assert(sizeof(link_in) == 8);

struct setattr_in {
    std::uint32_t valid{}; // fattr::*
    std::uint32_t padding{};
    std::uint64_t fh{};
    std::uint64_t size{};
    std::uint64_t lock_owner{};
    std::uint64_t atime{};
    std::uint64_t mtime{};
    std::uint64_t ctime{};
    std::uint32_t atimensec{};
    std::uint32_t mtimensec{};
    std::uint32_t ctimensec{};
    std::uint32_t mode{};
    std::uint32_t unused4{};
    std::uint32_t uid{};
    std::uint32_t gid{};
    std::uint32_t unused5{};
};
static_assert(sizeof(setattr_in) == 88);
static_assert(offsetof(setattr_in, fh) == 8);
static_assert(offsetof(setattr_in, size) == 16);
static_assert(offsetof(setattr_in, atimensec) == 56);
static_assert(offsetof(setattr_in, mode) == 68);
static_assert(offsetof(setattr_in, uid) == 76);

// OPEN and OPENDIR.
struct open_in {
    std::uint32_t flags{};      // open(2) flags
    std::uint32_t open_flags{}; // open_flag::*
};
static_assert(sizeof(open_in) == 8);

// Followed by the name. Reply: entry_out then open_out.
struct create_in {
    std::uint32_t flags{};
    std::uint32_t mode{};
    std::uint32_t umask{};
    std::uint32_t open_flags{}; // open_flag::*
};
static_assert(sizeof(create_in) == 16);

struct open_out {
    std::uint64_t fh{};
    std::uint32_t open_flags{}; // fopen::*
    std::int32_t backing_id{};  // 7.40, with fopen::passthrough (id from dev_ioc_backing_open)
};
static_assert(sizeof(open_out) == 16);
static_assert(offsetof(open_out, backing_id) == 12);

// RELEASE and RELEASEDIR.
struct release_in {
    std::uint64_t fh{};
    std::uint32_t flags{};
    std::uint32_t release_flags{}; // release_flag::*
    std::uint64_t lock_owner{};
};
static_assert(sizeof(release_in) == 24);

struct flush_in {
    std::uint64_t fh{};
    std::uint32_t unused{};
    std::uint32_t padding{};
    std::uint64_t lock_owner{};
};
static_assert(sizeof(flush_in) == 24);

// READ, READDIR, READDIRPLUS.
struct read_in {
    std::uint64_t fh{};
    std::uint64_t offset{};
    std::uint32_t size{};
    std::uint32_t read_flags{}; // read_flag::*
    std::uint64_t lock_owner{};
    std::uint32_t flags{};
    std::uint32_t padding{};
};
static_assert(sizeof(read_in) == 40);
static_assert(offsetof(read_in, size) == 16);

// Followed by `size` bytes of data. Minor < 9: first write_in_compat_size bytes.
struct write_in {
    std::uint64_t fh{};
    std::uint64_t offset{};
    std::uint32_t size{};
    std::uint32_t write_flags{}; // write_flag::*
    std::uint64_t lock_owner{};
    std::uint32_t flags{};
    std::uint32_t padding{};
};
static_assert(sizeof(write_in) == 40);
static_assert(offsetof(write_in, size) == 16);

// Reply to WRITE and (32-bit count) COPY_FILE_RANGE.
struct write_out {
    std::uint32_t size{};
    std::uint32_t padding{};
};
static_assert(sizeof(write_out) == 8);

struct statfs_out {
    kstatfs st{};
};
static_assert(sizeof(statfs_out) == 80);

// FSYNC and FSYNCDIR.
struct fsync_in {
    std::uint64_t fh{};
    std::uint32_t fsync_flags{}; // fsync_flag::*
    std::uint32_t padding{};
};
static_assert(sizeof(fsync_in) == 16);

// Followed by name '\0' value. Only the first setxattr_in_compat_size bytes
// are sent unless the server negotiated init_flag::setxattr_ext.
struct setxattr_in {
    std::uint32_t size{};
    std::uint32_t flags{};          // XATTR_CREATE / XATTR_REPLACE
    std::uint32_t setxattr_flags{}; // setxattr_flag::*, 7.33
    std::uint32_t padding{};
};
static_assert(sizeof(setxattr_in) == 16);

// GETXATTR (followed by the name) and LISTXATTR.
struct getxattr_in {
    std::uint32_t size{};
    std::uint32_t padding{};
};
static_assert(sizeof(getxattr_in) == 8);

// Reply when getxattr_in::size == 0 (size probe).
struct getxattr_out {
    std::uint32_t size{};
    std::uint32_t padding{};
};
static_assert(sizeof(getxattr_out) == 8);

// GETLK, SETLK, SETLKW.
struct lk_in {
    std::uint64_t fh{};
    std::uint64_t owner{};
    file_lock lk{};
    std::uint32_t lk_flags{}; // lk_flag::*
    std::uint32_t padding{};
};
static_assert(sizeof(lk_in) == 48);
static_assert(offsetof(lk_in, lk) == 16);

struct lk_out {
    file_lock lk{};
};
static_assert(sizeof(lk_out) == 24);

struct access_in {
    std::uint32_t mask{};
    std::uint32_t padding{};
};
static_assert(sizeof(access_in) == 8);

// INIT request. Since 7.36 the kernel sends all 64 bytes; older kernels send
// init_in_compat_size (16) bytes and have no flags2.
struct init_in {
    std::uint32_t major{};
    std::uint32_t minor{};
    std::uint32_t max_readahead{};
    std::uint32_t flags{};  // init_flag bits 0..31
    std::uint32_t flags2{}; // init_flag bits 32..63, 7.36
    std::uint32_t unused[11]{};
};
static_assert(sizeof(init_in) == 64);
static_assert(offsetof(init_in, flags) == 12);
static_assert(offsetof(init_in, flags2) == 16);

// INIT reply. Send only the prefix the negotiated minor knows:
// init_out_compat_size_v7_5 for minor < 5, init_out_compat_size_v7_22 for
// minor < 23, the full 64 bytes otherwise.
struct init_out {
    std::uint32_t major{};
    std::uint32_t minor{};
    std::uint32_t max_readahead{};
    std::uint32_t flags{}; // init_flag bits 0..31; must contain init_ext for flags2 to count
    std::uint16_t max_background{};
    std::uint16_t congestion_threshold{};
    std::uint32_t max_write{};
    std::uint32_t time_gran{};       // 7.23, ns; 0 or 1 = full precision
    std::uint16_t max_pages{};       // 7.28, with init_flag::max_pages
    std::uint16_t map_alignment{};   // 7.31, with init_flag::map_alignment
    std::uint32_t flags2{};          // 7.36, init_flag bits 32..63
    std::uint32_t max_stack_depth{}; // 7.40, with init_flag::passthrough (1 or 2)
    std::uint16_t request_timeout{}; // 7.43, seconds, with init_flag::request_timeout
    std::uint16_t unused[11]{};
};
static_assert(sizeof(init_out) == 64);
static_assert(offsetof(init_out, max_background) == 16);
static_assert(offsetof(init_out, max_write) == 20);
static_assert(offsetof(init_out, time_gran) == 24);
static_assert(offsetof(init_out, max_pages) == 28);
static_assert(offsetof(init_out, flags2) == 32);
static_assert(offsetof(init_out, max_stack_depth) == 36);
static_assert(offsetof(init_out, request_timeout) == 40);

struct cuse_init_in {
    std::uint32_t major{};
    std::uint32_t minor{};
    std::uint32_t unused{};
    std::uint32_t flags{}; // cuse_flag::*
};
static_assert(sizeof(cuse_init_in) == 16);

// Followed by up to cuse_init_info_max bytes of "KEY=VALUE\0" device info.
struct cuse_init_out {
    std::uint32_t major{};
    std::uint32_t minor{};
    std::uint32_t unused{};
    std::uint32_t flags{};
    std::uint32_t max_read{};
    std::uint32_t max_write{};
    std::uint32_t dev_major{}; // chardev major
    std::uint32_t dev_minor{}; // chardev minor
    std::uint32_t spare[10]{};
};
static_assert(sizeof(cuse_init_out) == 72);

// INTERRUPT: `unique` of the request to interrupt. The INTERRUPT request
// itself arrives with in_header::unique = unique | unique_interrupt_bit.
struct interrupt_in {
    std::uint64_t unique{};
};
static_assert(sizeof(interrupt_in) == 8);

struct bmap_in {
    std::uint64_t block{};
    std::uint32_t blocksize{};
    std::uint32_t padding{};
};
static_assert(sizeof(bmap_in) == 16);

struct bmap_out {
    std::uint64_t block{};
};
static_assert(sizeof(bmap_out) == 8);

// Followed by in_size bytes of input data.
struct ioctl_in {
    std::uint64_t fh{};
    std::uint32_t flags{}; // ioctl_flag::*
    std::uint32_t cmd{};
    std::uint64_t arg{};
    std::uint32_t in_size{};
    std::uint32_t out_size{};
};
static_assert(sizeof(ioctl_in) == 32);

// Used in an ioctl_flag::retry reply (7.16+: always this form, not struct iovec).
struct ioctl_iovec {
    std::uint64_t base{};
    std::uint64_t len{};
};
static_assert(sizeof(ioctl_iovec) == 16);

// Followed by output data, or by (in_iovs + out_iovs) ioctl_iovec on retry.
struct ioctl_out {
    std::int32_t result{};
    std::uint32_t flags{}; // ioctl_flag::*
    std::uint32_t in_iovs{};
    std::uint32_t out_iovs{};
};
static_assert(sizeof(ioctl_out) == 16);

struct poll_in {
    std::uint64_t fh{};
    std::uint64_t kh{}; // handle to quote in notify_poll_wakeup_out
    std::uint32_t flags{}; // poll_flag::*
    std::uint32_t events{}; // 7.21
};
static_assert(sizeof(poll_in) == 24);

struct poll_out {
    std::uint32_t revents{};
    std::uint32_t padding{};
};
static_assert(sizeof(poll_out) == 8);

struct fallocate_in {
    std::uint64_t fh{};
    std::uint64_t offset{};
    std::uint64_t length{};
    std::uint32_t mode{}; // FALLOC_FL_*
    std::uint32_t padding{};
};
static_assert(sizeof(fallocate_in) == 32);

struct lseek_in {
    std::uint64_t fh{};
    std::uint64_t offset{};
    std::uint32_t whence{};
    std::uint32_t padding{};
};
static_assert(sizeof(lseek_in) == 24);

struct lseek_out {
    std::uint64_t offset{};
};
static_assert(sizeof(lseek_out) == 8);

// COPY_FILE_RANGE (reply write_out, 32-bit count) and COPY_FILE_RANGE_64
// (7.45, reply copy_file_range_out). Per the 7.45 patch the kernel tries the
// 64-bit opcode first and falls back to the old one after ENOSYS (not verified
// on this machine).
struct copy_file_range_in {
    std::uint64_t fh_in{};
    std::uint64_t off_in{};
    std::uint64_t nodeid_out{};
    std::uint64_t fh_out{};
    std::uint64_t off_out{};
    std::uint64_t len{};
    std::uint64_t flags{};
};
static_assert(sizeof(copy_file_range_in) == 56);

// 7.45, reply to COPY_FILE_RANGE_64.
struct copy_file_range_out {
    std::uint64_t bytes_copied{};
};
static_assert(sizeof(copy_file_range_out) == 8);

// virtiofs DAX window mapping.
struct setupmapping_in {
    std::uint64_t fh{};      // an already open handle
    std::uint64_t foffset{}; // offset into the file
    std::uint64_t len{};
    std::uint64_t flags{};   // setupmapping_flag::*
    std::uint64_t moffset{}; // offset in the memory window
};
static_assert(sizeof(setupmapping_in) == 40);

// Followed by `count` removemapping_one. Note: 4 bytes, not padded to 8.
struct removemapping_in {
    std::uint32_t count{};
};
static_assert(sizeof(removemapping_in) == 4);

struct removemapping_one {
    std::uint64_t moffset{};
    std::uint64_t len{};
};
static_assert(sizeof(removemapping_one) == 16);

struct syncfs_in {
    std::uint64_t padding{};
};
static_assert(sizeof(syncfs_in) == 8);

// ===========================================================================
// Directory entries (READDIR / READDIRPLUS reply payload)
// ===========================================================================

// Fixed part of struct fuse_dirent. On the wire it is followed by `namelen`
// bytes of name (no '\0') and zero padding to the next 8-byte boundary;
// dirent_size() gives the full record length. `off` is the cookie the kernel
// passes back in read_in::offset to continue after this entry. `type` is the
// DT_* value (mode >> 12).
struct dirent {
    std::uint64_t ino{};
    std::uint64_t off{};
    std::uint32_t namelen{};
    std::uint32_t type{};
};
static_assert(sizeof(dirent) == 24);

// Fixed part of struct fuse_direntplus; the name follows as for dirent.
// Every entry except "." and ".." counts as a LOOKUP (nlookup += 1) when
// entry_out.nodeid != 0.
struct direntplus {
    proto::entry_out entry_out{};
    proto::dirent dirent{};
};
static_assert(sizeof(direntplus) == 152);
static_assert(offsetof(direntplus, dirent) == 128);

// Offset of the name within a dirent / direntplus record.
inline constexpr std::size_t name_offset = sizeof(dirent);                       // 24
inline constexpr std::size_t name_offset_direntplus = sizeof(direntplus);        // 152

constexpr std::size_t dirent_size(std::size_t namelen) noexcept { return align8(name_offset + namelen); }
constexpr std::size_t direntplus_size(std::size_t namelen) noexcept {
    return align8(name_offset_direntplus + namelen);
}

// ===========================================================================
// Notifications (server -> kernel; see notify_code)
// ===========================================================================

struct notify_poll_wakeup_out {
    std::uint64_t kh{};
};
static_assert(sizeof(notify_poll_wakeup_out) == 8);

// off < 0: invalidate attributes only; len <= 0: to the end of file.
struct notify_inval_inode_out {
    std::uint64_t ino{};
    std::int64_t off{};
    std::int64_t len{};
};
static_assert(sizeof(notify_inval_inode_out) == 24);

// Followed by the name and a '\0' (not counted in namelen).
struct notify_inval_entry_out {
    std::uint64_t parent{};
    std::uint32_t namelen{};
    std::uint32_t flags{}; // notify_inval_flag::*, 7.38
};
static_assert(sizeof(notify_inval_entry_out) == 16);

// Followed by the name and a '\0' (not counted in namelen).
struct notify_delete_out {
    std::uint64_t parent{};
    std::uint64_t child{};
    std::uint32_t namelen{};
    std::uint32_t padding{};
};
static_assert(sizeof(notify_delete_out) == 24);

// Followed by `size` bytes of data to put in the page cache.
struct notify_store_out {
    std::uint64_t nodeid{};
    std::uint64_t offset{};
    std::uint32_t size{};
    std::uint32_t padding{};
};
static_assert(sizeof(notify_store_out) == 24);

// The kernel answers with an opcode::notify_reply request whose unique is
// notify_unique, carrying notify_retrieve_in + the data.
struct notify_retrieve_out {
    std::uint64_t notify_unique{};
    std::uint64_t nodeid{};
    std::uint64_t offset{};
    std::uint32_t size{};
    std::uint32_t padding{};
};
static_assert(sizeof(notify_retrieve_out) == 32);

// Argument of the NOTIFY_REPLY request. Same size as write_in on purpose, so
// the kernel can reuse the write path.
struct notify_retrieve_in {
    std::uint64_t dummy1{};
    std::uint64_t offset{};
    std::uint32_t size{};
    std::uint32_t dummy2{};
    std::uint64_t dummy3{};
    std::uint64_t dummy4{};
};
static_assert(sizeof(notify_retrieve_in) == 40);
static_assert(sizeof(notify_retrieve_in) == sizeof(write_in));

// 7.45: followed by `count` std::uint64_t node ids whose unused inodes the
// kernel should evict.
struct notify_prune_out {
    std::uint32_t count{};
    std::uint32_t padding{};
    std::uint64_t spare{};
};
static_assert(sizeof(notify_prune_out) == 16);

// notify_code::resend (7.40) and notify_code::inc_epoch (7.44) have no payload
// struct: the notification is the bare 16-byte out_header.

// ===========================================================================
// Passthrough (7.40): argument of dev_ioc_backing_open (see ioctl.hpp)
// ===========================================================================

struct backing_map {
    std::int32_t fd{};
    std::uint32_t flags{}; // must be 0
    std::uint64_t padding{};
};
static_assert(sizeof(backing_map) == 16);

// ===========================================================================
// Request extensions (7.38). When in_header::total_extlen != 0, the last
// total_extlen * 8 bytes of the request are a sequence of extensions, each
// starting with ext_header and padded to 8 bytes.
// ===========================================================================

// ext_header::type. Types 0..max_nr_secctx are reserved for the security
// context extension, whose header (secctx_header) overlays ext_header with
// `type` read as nr_secctx.
enum class ext_type : std::uint32_t {
    max_nr_secctx = 31, // kernel FUSE_MAX_NR_SECCTX
    groups = 32,        // supp_groups (with init_flag::create_supp_group)
};

struct ext_header {
    std::uint32_t size{}; // whole extension including this header
    std::uint32_t type{}; // ext_type, or nr_secctx (0..31) for a security context
};
static_assert(sizeof(ext_header) == 8);

// With init_flag::security_ctx, CREATE/MKDIR/SYMLINK/MKNOD/TMPFILE carry
// secctx_header followed by nr_secctx records of
// {secctx, name '\0', context (secctx::size bytes)}.
struct secctx_header {
    std::uint32_t size{}; // total size including this header
    std::uint32_t nr_secctx{};
};
static_assert(sizeof(secctx_header) == 8);

struct secctx {
    std::uint32_t size{}; // size of the context value
    std::uint32_t padding{};
};
static_assert(sizeof(secctx) == 8);

// Fixed part of struct fuse_supp_groups; followed by nr_groups std::uint32_t gids.
struct supp_groups {
    std::uint32_t nr_groups{};
};
static_assert(sizeof(supp_groups) == 4);

// Every wire struct must be copyable as raw bytes with a fixed layout.
template <class... T>
inline constexpr bool wire_layout_v =
    ((std::is_standard_layout_v<T> && std::is_trivially_copyable_v<T> && std::is_aggregate_v<T>) && ...);
static_assert(wire_layout_v<attr, sx_time, statx, kstatfs, file_lock, in_header, out_header, entry_out,
                            forget_in, forget_one, batch_forget_in, getattr_in, attr_out, statx_in, statx_out,
                            mknod_in, mkdir_in, rename_in, rename2_in, link_in, setattr_in, open_in, create_in,
                            open_out, release_in, flush_in, read_in, write_in, write_out, statfs_out, fsync_in,
                            setxattr_in, getxattr_in, getxattr_out, lk_in, lk_out, access_in, init_in, init_out,
                            cuse_init_in, cuse_init_out, interrupt_in, bmap_in, bmap_out, ioctl_in, ioctl_iovec,
                            ioctl_out, poll_in, poll_out, fallocate_in, lseek_in, lseek_out, copy_file_range_in,
                            copy_file_range_out, setupmapping_in, removemapping_in, removemapping_one, syncfs_in,
                            dirent, direntplus, notify_poll_wakeup_out, notify_inval_inode_out,
                            notify_inval_entry_out, notify_delete_out, notify_store_out, notify_retrieve_out,
                            notify_retrieve_in, notify_prune_out, backing_map, ext_header, secctx_header, secctx,
                            supp_groups>);

} // namespace fusexx::proto
