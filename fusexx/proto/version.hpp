// fusexx/proto/version.hpp - protocol version and size constants of the FUSE wire ABI.
//
// The numbers in fusexx/proto/* follow the kernel's UAPI (include/uapi/linux/fuse.h)
// at protocol 7.45 (Linux 6.18). They are written out here because the system
// <linux/fuse.h> on Debian 12 is 7.38 and lacks everything newer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fusexx::proto {

// The protocol version we speak. The kernel and the server both announce a
// version in INIT; if the majors match, both use the smaller minor.
inline constexpr std::uint32_t kernel_major = 7, kernel_minor = 45;

// Node id of the filesystem root. It is never LOOKUPed and never FORGotten.
inline constexpr std::uint64_t root_id = 1;

// A read() on /dev/fuse with a smaller buffer fails with EINVAL (and does not
// consume the request). After INIT the real minimum is
// max(min_read_buffer, sizeof(in_header) + sizeof(write_in) + max_write).
inline constexpr std::size_t min_read_buffer = 8192;

// Set in in_header::unique of a request that the kernel re-queues after the
// server sent notify_code::resend. The reply must echo the unique *with* this
// bit set, otherwise the kernel does not find the request (ENOENT on write).
inline constexpr std::uint64_t unique_resend_bit = 1ull << 63;

// Not part of the UAPI header (it is FUSE_INT_REQ_BIT in fs/fuse/fuse_i.h) but
// visible on the wire: request uniques are even, and an INTERRUPT request
// carries unique = interrupted_unique | 1. Measured on this kernel.
inline constexpr std::uint64_t unique_interrupt_bit = 1ull << 0;

// ---------------------------------------------------------------------------
// Compat sizes. Reply and request structs grew over time; a peer speaking an
// older minor sends/expects only the leading part of a struct. The server must
// size replies by the *negotiated* minor, and accept short requests.
// ---------------------------------------------------------------------------

// init_out as understood by minor < 5 (only major/minor).
inline constexpr std::size_t init_out_compat_size_v7_5 = 8;
// init_out as understood by minor < 23 (ends after max_write; no time_gran,
// max_pages, flags2, ...).
inline constexpr std::size_t init_out_compat_size_v7_22 = 24;
// init_in sent by kernels older than 7.36 (no flags2, no reserved space).
// Not a kernel constant: the kernel just sent the smaller struct.
inline constexpr std::size_t init_in_compat_size = 16;

// Before 7.9 attr had no blksize/flags, so entry_out and attr_out were
// 8 bytes shorter.
inline constexpr std::size_t entry_out_compat_size = 120;
inline constexpr std::size_t attr_out_compat_size = 96;

// Before 7.12 mknod_in had no umask/padding.
inline constexpr std::size_t mknod_in_compat_size = 8;

// Before 7.9 write_in had no lock_owner/flags/padding.
inline constexpr std::size_t write_in_compat_size = 24;

// Before 7.33 (or when the server did not set init_flag::setxattr_ext)
// setxattr_in is only {size, flags}; setxattr_flags is absent.
inline constexpr std::size_t setxattr_in_compat_size = 8;

// Before 7.4 kstatfs had no frsize/padding/spare.
inline constexpr std::size_t statfs_out_compat_size = 48;

// Maximum size of the CUSE_INIT reply's trailing device-info strings.
inline constexpr std::size_t cuse_init_info_max = 4096;

} // namespace fusexx::proto
