// fusexx/proto/flags.hpp - flag bits carried in FUSE requests and replies (protocol 7.45).
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace fusexx::proto {

// ---------------------------------------------------------------------------
// INIT capability flags (init_in::flags/flags2, init_out::flags/flags2).
//
// The wire splits the capabilities into two 32-bit words. We keep them as ONE
// 64-bit space: bit N >= 32 here is bit N-32 of flags2 (the kernel does the
// same). Use combine()/low()/high() to convert.
//
// Pitfall (measured, see kernel-facts.md): the kernel ignores the reply's
// flags2 unless init_ext is set in the reply's *flags*. So every capability at
// bit >= 32 (passthrough, over_io_uring, request_timeout, ...) silently stays
// off without init_ext. with_init_ext() sets it whenever a high bit is present.
// ---------------------------------------------------------------------------
namespace init_flag {
inline constexpr std::uint64_t async_read = 1ull << 0;
inline constexpr std::uint64_t posix_locks = 1ull << 1;
inline constexpr std::uint64_t file_ops = 1ull << 2;
inline constexpr std::uint64_t atomic_o_trunc = 1ull << 3;
inline constexpr std::uint64_t export_support = 1ull << 4;
inline constexpr std::uint64_t big_writes = 1ull << 5;
inline constexpr std::uint64_t dont_mask = 1ull << 6;
inline constexpr std::uint64_t splice_write = 1ull << 7;
inline constexpr std::uint64_t splice_move = 1ull << 8;
inline constexpr std::uint64_t splice_read = 1ull << 9;
inline constexpr std::uint64_t flock_locks = 1ull << 10;
inline constexpr std::uint64_t has_ioctl_dir = 1ull << 11;
inline constexpr std::uint64_t auto_inval_data = 1ull << 12;
inline constexpr std::uint64_t do_readdirplus = 1ull << 13;
inline constexpr std::uint64_t readdirplus_auto = 1ull << 14;
inline constexpr std::uint64_t async_dio = 1ull << 15;
inline constexpr std::uint64_t writeback_cache = 1ull << 16;
inline constexpr std::uint64_t no_open_support = 1ull << 17;
inline constexpr std::uint64_t parallel_dirops = 1ull << 18;
inline constexpr std::uint64_t handle_killpriv = 1ull << 19;
inline constexpr std::uint64_t posix_acl = 1ull << 20;
inline constexpr std::uint64_t abort_error = 1ull << 21;
inline constexpr std::uint64_t max_pages = 1ull << 22;       // init_out::max_pages is valid
inline constexpr std::uint64_t cache_symlinks = 1ull << 23;
inline constexpr std::uint64_t no_opendir_support = 1ull << 24;
inline constexpr std::uint64_t explicit_inval_data = 1ull << 25;
inline constexpr std::uint64_t map_alignment = 1ull << 26;   // init_out::map_alignment is valid
inline constexpr std::uint64_t submounts = 1ull << 27;
inline constexpr std::uint64_t handle_killpriv_v2 = 1ull << 28;
inline constexpr std::uint64_t setxattr_ext = 1ull << 29;    // setxattr_in is the 16-byte form
inline constexpr std::uint64_t init_ext = 1ull << 30;        // flags2 is meaningful
inline constexpr std::uint64_t init_reserved = 1ull << 31;   // reserved, never set
// ---- bits 32..63 travel in flags2 ----
inline constexpr std::uint64_t security_ctx = 1ull << 32;
inline constexpr std::uint64_t has_inode_dax = 1ull << 33;
inline constexpr std::uint64_t create_supp_group = 1ull << 34;
inline constexpr std::uint64_t has_expire_only = 1ull << 35;
inline constexpr std::uint64_t direct_io_allow_mmap = 1ull << 36;
inline constexpr std::uint64_t passthrough = 1ull << 37;     // also needs init_out::max_stack_depth 1..2
inline constexpr std::uint64_t no_export_support = 1ull << 38;
inline constexpr std::uint64_t has_resend = 1ull << 39;
inline constexpr std::uint64_t allow_idmap = 1ull << 40;
inline constexpr std::uint64_t over_io_uring = 1ull << 41;
inline constexpr std::uint64_t request_timeout = 1ull << 42; // init_out::request_timeout (seconds) is valid

// Obsolete kernel alias of direct_io_allow_mmap (FUSE_DIRECT_IO_RELAX).
inline constexpr std::uint64_t direct_io_relax = direct_io_allow_mmap;

// Every bit named by protocol 7.45.
inline constexpr std::uint64_t all_known = (request_timeout << 1) - 1;

// flags | flags2 << 32.
constexpr std::uint64_t combine(std::uint32_t flags, std::uint32_t flags2) noexcept {
    return std::uint64_t{flags} | (std::uint64_t{flags2} << 32);
}
// The init_*::flags word.
constexpr std::uint32_t low(std::uint64_t f) noexcept { return static_cast<std::uint32_t>(f); }
// The init_*::flags2 word.
constexpr std::uint32_t high(std::uint64_t f) noexcept { return static_cast<std::uint32_t>(f >> 32); }
// Adds init_ext if any bit >= 32 is set, because the kernel would ignore flags2 otherwise.
constexpr std::uint64_t with_init_ext(std::uint64_t f) noexcept {
    return high(f) != 0 ? (f | init_ext) : f;
}

// (bit, snake_case name) for every known bit, in bit order.
inline constexpr std::array<std::pair<std::uint64_t, std::string_view>, 43> names{{
    {async_read, "async_read"},
    {posix_locks, "posix_locks"},
    {file_ops, "file_ops"},
    {atomic_o_trunc, "atomic_o_trunc"},
    {export_support, "export_support"},
    {big_writes, "big_writes"},
    {dont_mask, "dont_mask"},
    {splice_write, "splice_write"},
    {splice_move, "splice_move"},
    {splice_read, "splice_read"},
    {flock_locks, "flock_locks"},
    {has_ioctl_dir, "has_ioctl_dir"},
    {auto_inval_data, "auto_inval_data"},
    {do_readdirplus, "do_readdirplus"},
    {readdirplus_auto, "readdirplus_auto"},
    {async_dio, "async_dio"},
    {writeback_cache, "writeback_cache"},
    {no_open_support, "no_open_support"},
    {parallel_dirops, "parallel_dirops"},
    {handle_killpriv, "handle_killpriv"},
    {posix_acl, "posix_acl"},
    {abort_error, "abort_error"},
    {max_pages, "max_pages"},
    {cache_symlinks, "cache_symlinks"},
    {no_opendir_support, "no_opendir_support"},
    {explicit_inval_data, "explicit_inval_data"},
    {map_alignment, "map_alignment"},
    {submounts, "submounts"},
    {handle_killpriv_v2, "handle_killpriv_v2"},
    {setxattr_ext, "setxattr_ext"},
    {init_ext, "init_ext"},
    {init_reserved, "init_reserved"},
    {security_ctx, "security_ctx"},
    {has_inode_dax, "has_inode_dax"},
    {create_supp_group, "create_supp_group"},
    {has_expire_only, "has_expire_only"},
    {direct_io_allow_mmap, "direct_io_allow_mmap"},
    {passthrough, "passthrough"},
    {no_export_support, "no_export_support"},
    {has_resend, "has_resend"},
    {allow_idmap, "allow_idmap"},
    {over_io_uring, "over_io_uring"},
    {request_timeout, "request_timeout"},
}};

// names[i] describes bit i; describe_init_flags() relies on that.
consteval bool names_in_bit_order() {
    for (std::size_t i = 0; i < names.size(); ++i)
        if (names[i].first != (1ull << i)) return false;
    return names.size() == std::size_t(std::bit_width(all_known));
}
static_assert(names_in_bit_order());
} // namespace init_flag

// Names of the set bits joined by '|', e.g. "async_read|posix_locks|init_ext".
// Bits unknown to 7.45 appear as "bit43". Empty set gives "0". For debug logs.
inline std::string describe_init_flags(std::uint64_t flags) {
    std::string out;
    for (int bit = 0; bit < 64; ++bit) {
        std::uint64_t const mask = 1ull << bit;
        if ((flags & mask) == 0) continue;
        if (!out.empty()) out += '|';
        if (std::size_t(bit) < init_flag::names.size()) {
            out += init_flag::names[std::size_t(bit)].second;
        } else {
            out += "bit";
            out += std::to_string(bit);
        }
    }
    return out.empty() ? std::string("0") : out;
}

// CUSE_INIT flags (cuse_init_in/out::flags).
namespace cuse_flag {
inline constexpr std::uint32_t unrestricted_ioctl = 1u << 0;
}

// setattr_in::valid - which fields of the SETATTR request are meaningful.
namespace fattr {
inline constexpr std::uint32_t mode = 1u << 0;
inline constexpr std::uint32_t uid = 1u << 1;
inline constexpr std::uint32_t gid = 1u << 2;
inline constexpr std::uint32_t size = 1u << 3;
inline constexpr std::uint32_t atime = 1u << 4;
inline constexpr std::uint32_t mtime = 1u << 5;
inline constexpr std::uint32_t fh = 1u << 6;
inline constexpr std::uint32_t atime_now = 1u << 7;
inline constexpr std::uint32_t mtime_now = 1u << 8;
inline constexpr std::uint32_t lockowner = 1u << 9;
inline constexpr std::uint32_t ctime = 1u << 10;
inline constexpr std::uint32_t kill_suidgid = 1u << 11; // 7.33, with handle_killpriv_v2
} // namespace fattr

// open_out::open_flags - per-open-file behaviour chosen by the server.
namespace fopen {
inline constexpr std::uint32_t direct_io = 1u << 0;     // bypass the page cache
inline constexpr std::uint32_t keep_cache = 1u << 1;    // don't invalidate cached data on open
inline constexpr std::uint32_t nonseekable = 1u << 2;
inline constexpr std::uint32_t cache_dir = 1u << 3;     // allow caching this directory's entries
inline constexpr std::uint32_t stream = 1u << 4;        // no file position at all
inline constexpr std::uint32_t noflush = 1u << 5;       // no FLUSH on close (unless writeback cache)
inline constexpr std::uint32_t parallel_direct_writes = 1u << 6;
inline constexpr std::uint32_t passthrough = 1u << 7;   // 7.40: use open_out::backing_id
} // namespace fopen

// getattr_in::getattr_flags.
namespace getattr_flag {
inline constexpr std::uint32_t fh = 1u << 0; // getattr_in::fh is valid
}

// lk_in::lk_flags.
namespace lk_flag {
inline constexpr std::uint32_t flock = 1u << 0; // BSD flock() rather than POSIX lock
}

// write_in::write_flags.
namespace write_flag {
inline constexpr std::uint32_t cache = 1u << 0;        // delayed write from page cache, fh is guessed
inline constexpr std::uint32_t lockowner = 1u << 1;    // write_in::lock_owner is valid
inline constexpr std::uint32_t kill_suidgid = 1u << 2; // kill suid/sgid bits
inline constexpr std::uint32_t kill_priv = kill_suidgid; // obsolete kernel alias
} // namespace write_flag

// open_in::open_flags / create_in::open_flags.
namespace open_flag {
inline constexpr std::uint32_t kill_suidgid = 1u << 0; // kill suid/sgid if executable (O_TRUNC)
}

// release_in::release_flags.
namespace release_flag {
inline constexpr std::uint32_t flush = 1u << 0;
inline constexpr std::uint32_t flock_unlock = 1u << 1;
} // namespace release_flag

// fsync_in::fsync_flags.
namespace fsync_flag {
inline constexpr std::uint32_t fdatasync = 1u << 0; // sync data only, not metadata
}

// read_in::read_flags.
namespace read_flag {
inline constexpr std::uint32_t lockowner = 1u << 1; // read_in::lock_owner is valid (bit 0 unused)
}

// ioctl_in::flags / ioctl_out::flags.
namespace ioctl_flag {
inline constexpr std::uint32_t compat = 1u << 0;       // 32-bit compat ioctl on a 64-bit kernel
inline constexpr std::uint32_t unrestricted = 1u << 1; // not restricted to well-formed ioctls; retry allowed
inline constexpr std::uint32_t retry = 1u << 2;        // reply: retry with the returned iovecs
inline constexpr std::uint32_t bit32 = 1u << 3;        // FUSE_IOCTL_32BIT: 32-bit ioctl
inline constexpr std::uint32_t dir = 1u << 4;          // issued on a directory
inline constexpr std::uint32_t compat_x32 = 1u << 5;   // x32 compat ioctl (64-bit time_t)
// Upper bound for ioctl_out::in_iovs + out_iovs on a retry reply.
inline constexpr std::uint32_t ioctl_max_iov = 256;
} // namespace ioctl_flag

// poll_in::flags.
namespace poll_flag {
inline constexpr std::uint32_t schedule_notify = 1u << 0; // server should send notify_code::poll later
}

// setxattr_in::setxattr_flags (only with init_flag::setxattr_ext).
namespace setxattr_flag {
inline constexpr std::uint32_t acl_kill_sgid = 1u << 0; // clear SGID when system.posix_acl_access is set
}

// notify_inval_entry_out::flags.
namespace notify_inval_flag {
inline constexpr std::uint32_t expire_only = 1u << 0; // 7.38: only expire the dentry, don't drop it
}
namespace expire_flag = notify_inval_flag;

// attr::flags.
namespace attr_flag {
inline constexpr std::uint32_t submount = 1u << 0; // object is a submount root
inline constexpr std::uint32_t dax = 1u << 1;      // enable DAX for this file (per-inode DAX mode)
} // namespace attr_flag

// setupmapping_in::flags (virtiofs DAX).
namespace setupmapping_flag {
inline constexpr std::uint64_t write = 1ull << 0;
inline constexpr std::uint64_t read = 1ull << 1;
} // namespace setupmapping_flag

// Note: 7.45 defines no FUSE-specific flags for STATX. statx_in::sx_flags and
// sx_mask carry the statx(2) AT_* flags and STATX_* mask unchanged, and
// statx_out::flags has no defined bits.

} // namespace fusexx::proto
