// Tests for fusexx/proto: wire sizes, offsets, numbers and flag decoding.
//
// Independent cross-check: Debian's <linux/fuse.h> (protocol 7.38) is included
// here -- and only here -- and everything it shares with our 7.45 definitions
// must agree with it. Things newer than 7.38 are checked against literal values
// taken from the 7.45 UAPI header and from measurements on this kernel.
#include <doctest/doctest.h>

#include <linux/fuse.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "fusexx/proto/abi.hpp"

namespace proto = fusexx::proto;

namespace {
constexpr std::uint32_t op(proto::opcode o) { return std::to_underlying(o); }
// Kernel macros such as (1 << 31) are ints; compare them as 32-bit words.
constexpr std::uint64_t lo(long long v) { return static_cast<std::uint32_t>(v); }
} // namespace

// ---------------------------------------------------------------------------
// Sizes against the literal 7.45 sizes.
// ---------------------------------------------------------------------------
TEST_CASE("struct sizes match protocol 7.45") {
    CHECK(sizeof(proto::attr) == 88);
    CHECK(sizeof(proto::sx_time) == 16);
    CHECK(sizeof(proto::statx) == 256);
    CHECK(sizeof(proto::kstatfs) == 80);
    CHECK(sizeof(proto::file_lock) == 24);
    CHECK(sizeof(proto::in_header) == 40);
    CHECK(sizeof(proto::out_header) == 16);
    CHECK(sizeof(proto::entry_out) == 128);
    CHECK(sizeof(proto::forget_in) == 8);
    CHECK(sizeof(proto::forget_one) == 16);
    CHECK(sizeof(proto::batch_forget_in) == 8);
    CHECK(sizeof(proto::getattr_in) == 16);
    CHECK(sizeof(proto::attr_out) == 104);
    CHECK(sizeof(proto::statx_in) == 24);
    CHECK(sizeof(proto::statx_out) == 288);
    CHECK(sizeof(proto::mknod_in) == 16);
    CHECK(sizeof(proto::mkdir_in) == 8);
    CHECK(sizeof(proto::rename_in) == 8);
    CHECK(sizeof(proto::rename2_in) == 16);
    CHECK(sizeof(proto::link_in) == 8);
    CHECK(sizeof(proto::setattr_in) == 88);
    CHECK(sizeof(proto::open_in) == 8);
    CHECK(sizeof(proto::create_in) == 16);
    CHECK(sizeof(proto::open_out) == 16);
    CHECK(sizeof(proto::release_in) == 24);
    CHECK(sizeof(proto::flush_in) == 24);
    CHECK(sizeof(proto::read_in) == 40);
    CHECK(sizeof(proto::write_in) == 40);
    CHECK(sizeof(proto::write_out) == 8);
    CHECK(sizeof(proto::statfs_out) == 80);
    CHECK(sizeof(proto::fsync_in) == 16);
    CHECK(sizeof(proto::setxattr_in) == 16);
    CHECK(sizeof(proto::getxattr_in) == 8);
    CHECK(sizeof(proto::getxattr_out) == 8);
    CHECK(sizeof(proto::lk_in) == 48);
    CHECK(sizeof(proto::lk_out) == 24);
    CHECK(sizeof(proto::access_in) == 8);
    CHECK(sizeof(proto::init_in) == 64);
    CHECK(sizeof(proto::init_out) == 64);
    CHECK(sizeof(proto::cuse_init_in) == 16);
    CHECK(sizeof(proto::cuse_init_out) == 72);
    CHECK(sizeof(proto::interrupt_in) == 8);
    CHECK(sizeof(proto::bmap_in) == 16);
    CHECK(sizeof(proto::bmap_out) == 8);
    CHECK(sizeof(proto::ioctl_in) == 32);
    CHECK(sizeof(proto::ioctl_iovec) == 16);
    CHECK(sizeof(proto::ioctl_out) == 16);
    CHECK(sizeof(proto::poll_in) == 24);
    CHECK(sizeof(proto::poll_out) == 8);
    CHECK(sizeof(proto::notify_poll_wakeup_out) == 8);
    CHECK(sizeof(proto::fallocate_in) == 32);
    CHECK(sizeof(proto::dirent) == 24);
    CHECK(sizeof(proto::direntplus) == 152);
    CHECK(sizeof(proto::notify_inval_inode_out) == 24);
    CHECK(sizeof(proto::notify_inval_entry_out) == 16);
    CHECK(sizeof(proto::notify_delete_out) == 24);
    CHECK(sizeof(proto::notify_store_out) == 24);
    CHECK(sizeof(proto::notify_retrieve_out) == 32);
    CHECK(sizeof(proto::notify_retrieve_in) == 40);
    CHECK(sizeof(proto::notify_prune_out) == 16);
    CHECK(sizeof(proto::backing_map) == 16);
    CHECK(sizeof(proto::lseek_in) == 24);
    CHECK(sizeof(proto::lseek_out) == 8);
    CHECK(sizeof(proto::copy_file_range_in) == 56);
    CHECK(sizeof(proto::copy_file_range_out) == 8);
    CHECK(sizeof(proto::setupmapping_in) == 40);
    CHECK(sizeof(proto::removemapping_in) == 4);
    CHECK(sizeof(proto::removemapping_one) == 16);
    CHECK(sizeof(proto::syncfs_in) == 8);
    CHECK(sizeof(proto::secctx) == 8);
    CHECK(sizeof(proto::secctx_header) == 8);
    CHECK(sizeof(proto::ext_header) == 8);
    CHECK(sizeof(proto::supp_groups) == 4);
    CHECK(sizeof(proto::uring_ent_in_out) == 32);
    CHECK(sizeof(proto::uring_req_header) == 288); // measured: 280 gave EINVAL
    CHECK(sizeof(proto::uring_cmd_req) == 24);
}

TEST_CASE("key offsets") {
    CHECK(offsetof(proto::in_header, opcode) == 4);
    CHECK(offsetof(proto::in_header, unique) == 8);
    CHECK(offsetof(proto::in_header, nodeid) == 16);
    CHECK(offsetof(proto::in_header, total_extlen) == 36);
    CHECK(offsetof(proto::out_header, error) == 4);
    CHECK(offsetof(proto::init_in, flags2) == 16);
    CHECK(offsetof(proto::init_out, flags2) == 32);
    CHECK(offsetof(proto::init_out, max_stack_depth) == 36);
    CHECK(offsetof(proto::init_out, request_timeout) == 40);
    CHECK(offsetof(proto::entry_out, attr) == 40);
    CHECK(offsetof(proto::attr_out, attr) == 16);
    CHECK(offsetof(proto::statx_out, stat) == 32);
    CHECK(offsetof(proto::open_out, backing_id) == 12);
    CHECK(offsetof(proto::direntplus, dirent) == 128);
    CHECK(offsetof(proto::uring_req_header, op_in) == 128);
    CHECK(offsetof(proto::uring_req_header, ring_ent_in_out) == 256);
    CHECK(offsetof(proto::uring_ent_in_out, payload_sz) == 16);
    CHECK(offsetof(proto::uring_cmd_req, qid) == 16);
}

// ---------------------------------------------------------------------------
// Cross-check with Debian's <linux/fuse.h> (7.38).
// ---------------------------------------------------------------------------
#define SAME_SIZE(ours, theirs) CHECK(sizeof(proto::ours) == sizeof(theirs))
#define SAME_OFFSET(ours, theirs, field) CHECK(offsetof(proto::ours, field) == offsetof(theirs, field))

TEST_CASE("sizes agree with the system <linux/fuse.h> (7.38)") {
    SAME_SIZE(attr, fuse_attr);
    SAME_SIZE(kstatfs, fuse_kstatfs);
    SAME_SIZE(file_lock, fuse_file_lock);
    SAME_SIZE(entry_out, fuse_entry_out);
    SAME_SIZE(forget_in, fuse_forget_in);
    SAME_SIZE(forget_one, fuse_forget_one);
    SAME_SIZE(batch_forget_in, fuse_batch_forget_in);
    SAME_SIZE(getattr_in, fuse_getattr_in);
    SAME_SIZE(attr_out, fuse_attr_out);
    SAME_SIZE(mknod_in, fuse_mknod_in);
    SAME_SIZE(mkdir_in, fuse_mkdir_in);
    SAME_SIZE(rename_in, fuse_rename_in);
    SAME_SIZE(rename2_in, fuse_rename2_in);
    SAME_SIZE(link_in, fuse_link_in);
    SAME_SIZE(setattr_in, fuse_setattr_in);
    SAME_SIZE(open_in, fuse_open_in);
    SAME_SIZE(create_in, fuse_create_in);
    SAME_SIZE(open_out, fuse_open_out); // 7.38 calls backing_id "padding"
    SAME_SIZE(release_in, fuse_release_in);
    SAME_SIZE(flush_in, fuse_flush_in);
    SAME_SIZE(read_in, fuse_read_in);
    SAME_SIZE(write_in, fuse_write_in);
    SAME_SIZE(write_out, fuse_write_out);
    SAME_SIZE(statfs_out, fuse_statfs_out);
    SAME_SIZE(fsync_in, fuse_fsync_in);
    SAME_SIZE(setxattr_in, fuse_setxattr_in);
    SAME_SIZE(getxattr_in, fuse_getxattr_in);
    SAME_SIZE(getxattr_out, fuse_getxattr_out);
    SAME_SIZE(lk_in, fuse_lk_in);
    SAME_SIZE(lk_out, fuse_lk_out);
    SAME_SIZE(access_in, fuse_access_in);
    SAME_SIZE(init_in, fuse_init_in);
    SAME_SIZE(init_out, fuse_init_out); // 7.38: unused[7] where 7.45 has max_stack_depth etc.
    SAME_SIZE(cuse_init_in, cuse_init_in);
    SAME_SIZE(cuse_init_out, cuse_init_out);
    SAME_SIZE(interrupt_in, fuse_interrupt_in);
    SAME_SIZE(bmap_in, fuse_bmap_in);
    SAME_SIZE(bmap_out, fuse_bmap_out);
    SAME_SIZE(ioctl_in, fuse_ioctl_in);
    SAME_SIZE(ioctl_iovec, fuse_ioctl_iovec);
    SAME_SIZE(ioctl_out, fuse_ioctl_out);
    SAME_SIZE(poll_in, fuse_poll_in);
    SAME_SIZE(poll_out, fuse_poll_out);
    SAME_SIZE(notify_poll_wakeup_out, fuse_notify_poll_wakeup_out);
    SAME_SIZE(fallocate_in, fuse_fallocate_in);
    SAME_SIZE(in_header, fuse_in_header);
    SAME_SIZE(out_header, fuse_out_header);
    SAME_SIZE(dirent, fuse_dirent); // flexible name[] adds nothing to sizeof
    SAME_SIZE(direntplus, fuse_direntplus);
    SAME_SIZE(notify_inval_inode_out, fuse_notify_inval_inode_out);
    SAME_SIZE(notify_inval_entry_out, fuse_notify_inval_entry_out);
    SAME_SIZE(notify_delete_out, fuse_notify_delete_out);
    SAME_SIZE(notify_store_out, fuse_notify_store_out);
    SAME_SIZE(notify_retrieve_out, fuse_notify_retrieve_out);
    SAME_SIZE(notify_retrieve_in, fuse_notify_retrieve_in);
    SAME_SIZE(lseek_in, fuse_lseek_in);
    SAME_SIZE(lseek_out, fuse_lseek_out);
    SAME_SIZE(copy_file_range_in, fuse_copy_file_range_in);
    SAME_SIZE(setupmapping_in, fuse_setupmapping_in);
    SAME_SIZE(removemapping_in, fuse_removemapping_in);
    SAME_SIZE(removemapping_one, fuse_removemapping_one);
    SAME_SIZE(syncfs_in, fuse_syncfs_in);
    SAME_SIZE(secctx, fuse_secctx);
    SAME_SIZE(secctx_header, fuse_secctx_header);
    SAME_SIZE(ext_header, fuse_ext_header);
}

TEST_CASE("offsets agree with the system <linux/fuse.h> (7.38)") {
    SAME_OFFSET(attr, fuse_attr, ino);
    SAME_OFFSET(attr, fuse_attr, atimensec);
    SAME_OFFSET(attr, fuse_attr, mode);
    SAME_OFFSET(attr, fuse_attr, rdev);
    SAME_OFFSET(attr, fuse_attr, blksize);
    SAME_OFFSET(attr, fuse_attr, flags);
    SAME_OFFSET(in_header, fuse_in_header, len);
    SAME_OFFSET(in_header, fuse_in_header, opcode);
    SAME_OFFSET(in_header, fuse_in_header, unique);
    SAME_OFFSET(in_header, fuse_in_header, nodeid);
    SAME_OFFSET(in_header, fuse_in_header, uid);
    SAME_OFFSET(in_header, fuse_in_header, gid);
    SAME_OFFSET(in_header, fuse_in_header, pid);
    SAME_OFFSET(in_header, fuse_in_header, total_extlen);
    SAME_OFFSET(out_header, fuse_out_header, error);
    SAME_OFFSET(out_header, fuse_out_header, unique);
    SAME_OFFSET(entry_out, fuse_entry_out, entry_valid);
    SAME_OFFSET(entry_out, fuse_entry_out, attr_valid_nsec);
    SAME_OFFSET(entry_out, fuse_entry_out, attr);
    SAME_OFFSET(attr_out, fuse_attr_out, attr);
    SAME_OFFSET(setattr_in, fuse_setattr_in, fh);
    SAME_OFFSET(setattr_in, fuse_setattr_in, size);
    SAME_OFFSET(setattr_in, fuse_setattr_in, lock_owner);
    SAME_OFFSET(setattr_in, fuse_setattr_in, ctime);
    SAME_OFFSET(setattr_in, fuse_setattr_in, ctimensec);
    SAME_OFFSET(setattr_in, fuse_setattr_in, mode);
    SAME_OFFSET(setattr_in, fuse_setattr_in, uid);
    SAME_OFFSET(setattr_in, fuse_setattr_in, gid);
    SAME_OFFSET(open_out, fuse_open_out, open_flags);
    SAME_OFFSET(read_in, fuse_read_in, size);
    SAME_OFFSET(read_in, fuse_read_in, lock_owner);
    SAME_OFFSET(read_in, fuse_read_in, flags);
    SAME_OFFSET(write_in, fuse_write_in, size);
    SAME_OFFSET(write_in, fuse_write_in, write_flags);
    SAME_OFFSET(write_in, fuse_write_in, flags);
    SAME_OFFSET(release_in, fuse_release_in, release_flags);
    SAME_OFFSET(release_in, fuse_release_in, lock_owner);
    SAME_OFFSET(setxattr_in, fuse_setxattr_in, setxattr_flags);
    SAME_OFFSET(lk_in, fuse_lk_in, lk);
    SAME_OFFSET(lk_in, fuse_lk_in, lk_flags);
    SAME_OFFSET(init_in, fuse_init_in, max_readahead);
    SAME_OFFSET(init_in, fuse_init_in, flags);
    SAME_OFFSET(init_in, fuse_init_in, flags2);
    SAME_OFFSET(init_out, fuse_init_out, max_background);
    SAME_OFFSET(init_out, fuse_init_out, congestion_threshold);
    SAME_OFFSET(init_out, fuse_init_out, max_write);
    SAME_OFFSET(init_out, fuse_init_out, time_gran);
    SAME_OFFSET(init_out, fuse_init_out, max_pages);
    SAME_OFFSET(init_out, fuse_init_out, map_alignment);
    SAME_OFFSET(init_out, fuse_init_out, flags2);
    SAME_OFFSET(cuse_init_out, cuse_init_out, dev_major);
    SAME_OFFSET(cuse_init_out, cuse_init_out, spare);
    SAME_OFFSET(ioctl_in, fuse_ioctl_in, arg);
    SAME_OFFSET(ioctl_in, fuse_ioctl_in, out_size);
    SAME_OFFSET(ioctl_out, fuse_ioctl_out, in_iovs);
    SAME_OFFSET(poll_in, fuse_poll_in, events);
    SAME_OFFSET(fallocate_in, fuse_fallocate_in, mode);
    SAME_OFFSET(dirent, fuse_dirent, namelen);
    SAME_OFFSET(dirent, fuse_dirent, type);
    SAME_OFFSET(direntplus, fuse_direntplus, dirent);
    SAME_OFFSET(notify_inval_inode_out, fuse_notify_inval_inode_out, len);
    SAME_OFFSET(notify_inval_entry_out, fuse_notify_inval_entry_out, flags);
    SAME_OFFSET(notify_delete_out, fuse_notify_delete_out, namelen);
    SAME_OFFSET(notify_store_out, fuse_notify_store_out, size);
    SAME_OFFSET(notify_retrieve_out, fuse_notify_retrieve_out, size);
    SAME_OFFSET(notify_retrieve_in, fuse_notify_retrieve_in, size);
    SAME_OFFSET(copy_file_range_in, fuse_copy_file_range_in, nodeid_out);
    SAME_OFFSET(copy_file_range_in, fuse_copy_file_range_in, flags);
    SAME_OFFSET(setupmapping_in, fuse_setupmapping_in, moffset);
    CHECK(proto::name_offset == FUSE_NAME_OFFSET);
    CHECK(proto::name_offset_direntplus == FUSE_NAME_OFFSET_DIRENTPLUS);
}

TEST_CASE("opcode numbers") {
    // A sample against literal numbers (the newest ones are not in 7.38).
    CHECK(op(proto::opcode::lookup) == 1);
    CHECK(op(proto::opcode::forget) == 2);
    CHECK(op(proto::opcode::mknod) == 8);
    CHECK(op(proto::opcode::release) == 18);
    CHECK(op(proto::opcode::fsync) == 20);
    CHECK(op(proto::opcode::init) == 26);
    CHECK(op(proto::opcode::interrupt) == 36);
    CHECK(op(proto::opcode::batch_forget) == 42);
    CHECK(op(proto::opcode::readdirplus) == 44);
    CHECK(op(proto::opcode::copy_file_range) == 47);
    CHECK(op(proto::opcode::syncfs) == 50);
    CHECK(op(proto::opcode::tmpfile) == 51);
    CHECK(op(proto::opcode::statx) == 52);
    CHECK(op(proto::opcode::copy_file_range_64) == 53);
    CHECK(op(proto::opcode::cuse_init) == 4096);

    // Everything that exists in 7.38 against the system header's enum.
    CHECK(op(proto::opcode::lookup) == FUSE_LOOKUP);
    CHECK(op(proto::opcode::forget) == FUSE_FORGET);
    CHECK(op(proto::opcode::getattr) == FUSE_GETATTR);
    CHECK(op(proto::opcode::setattr) == FUSE_SETATTR);
    CHECK(op(proto::opcode::readlink) == FUSE_READLINK);
    CHECK(op(proto::opcode::symlink) == FUSE_SYMLINK);
    CHECK(op(proto::opcode::mknod) == FUSE_MKNOD);
    CHECK(op(proto::opcode::mkdir) == FUSE_MKDIR);
    CHECK(op(proto::opcode::unlink) == FUSE_UNLINK);
    CHECK(op(proto::opcode::rmdir) == FUSE_RMDIR);
    CHECK(op(proto::opcode::rename) == FUSE_RENAME);
    CHECK(op(proto::opcode::link) == FUSE_LINK);
    CHECK(op(proto::opcode::open) == FUSE_OPEN);
    CHECK(op(proto::opcode::read) == FUSE_READ);
    CHECK(op(proto::opcode::write) == FUSE_WRITE);
    CHECK(op(proto::opcode::statfs) == FUSE_STATFS);
    CHECK(op(proto::opcode::release) == FUSE_RELEASE);
    CHECK(op(proto::opcode::fsync) == FUSE_FSYNC);
    CHECK(op(proto::opcode::setxattr) == FUSE_SETXATTR);
    CHECK(op(proto::opcode::getxattr) == FUSE_GETXATTR);
    CHECK(op(proto::opcode::listxattr) == FUSE_LISTXATTR);
    CHECK(op(proto::opcode::removexattr) == FUSE_REMOVEXATTR);
    CHECK(op(proto::opcode::flush) == FUSE_FLUSH);
    CHECK(op(proto::opcode::init) == FUSE_INIT);
    CHECK(op(proto::opcode::opendir) == FUSE_OPENDIR);
    CHECK(op(proto::opcode::readdir) == FUSE_READDIR);
    CHECK(op(proto::opcode::releasedir) == FUSE_RELEASEDIR);
    CHECK(op(proto::opcode::fsyncdir) == FUSE_FSYNCDIR);
    CHECK(op(proto::opcode::getlk) == FUSE_GETLK);
    CHECK(op(proto::opcode::setlk) == FUSE_SETLK);
    CHECK(op(proto::opcode::setlkw) == FUSE_SETLKW);
    CHECK(op(proto::opcode::access) == FUSE_ACCESS);
    CHECK(op(proto::opcode::create) == FUSE_CREATE);
    CHECK(op(proto::opcode::interrupt) == FUSE_INTERRUPT);
    CHECK(op(proto::opcode::bmap) == FUSE_BMAP);
    CHECK(op(proto::opcode::destroy) == FUSE_DESTROY);
    CHECK(op(proto::opcode::ioctl) == FUSE_IOCTL);
    CHECK(op(proto::opcode::poll) == FUSE_POLL);
    CHECK(op(proto::opcode::notify_reply) == FUSE_NOTIFY_REPLY);
    CHECK(op(proto::opcode::batch_forget) == FUSE_BATCH_FORGET);
    CHECK(op(proto::opcode::fallocate) == FUSE_FALLOCATE);
    CHECK(op(proto::opcode::readdirplus) == FUSE_READDIRPLUS);
    CHECK(op(proto::opcode::rename2) == FUSE_RENAME2);
    CHECK(op(proto::opcode::lseek) == FUSE_LSEEK);
    CHECK(op(proto::opcode::copy_file_range) == FUSE_COPY_FILE_RANGE);
    CHECK(op(proto::opcode::setupmapping) == FUSE_SETUPMAPPING);
    CHECK(op(proto::opcode::removemapping) == FUSE_REMOVEMAPPING);
    CHECK(op(proto::opcode::syncfs) == FUSE_SYNCFS);
    CHECK(op(proto::opcode::tmpfile) == FUSE_TMPFILE);
    CHECK(op(proto::opcode::cuse_init) == CUSE_INIT);
    CHECK(proto::cuse_init_bswap_reserved == CUSE_INIT_BSWAP_RESERVED);
    CHECK(proto::fuse_init_bswap_reserved == FUSE_INIT_BSWAP_RESERVED);
}

TEST_CASE("opcode and notify names") {
    CHECK(proto::name(proto::opcode::init) == "INIT");
    CHECK(proto::name(proto::opcode::lookup) == "LOOKUP");
    CHECK(proto::name(proto::opcode::batch_forget) == "BATCH_FORGET");
    CHECK(proto::name(proto::opcode::copy_file_range_64) == "COPY_FILE_RANGE_64");
    CHECK(proto::name(proto::opcode::cuse_init) == "CUSE_INIT");
    CHECK(proto::name(proto::opcode{7}) == "UNKNOWN");
    CHECK(proto::name(proto::opcode{19}) == "UNKNOWN");
    CHECK(proto::name(proto::opcode{54}) == "UNKNOWN");
    CHECK(proto::is_known(proto::opcode::statx));
    CHECK_FALSE(proto::is_known(proto::opcode{0}));
    static_assert(proto::name(proto::opcode::forget) == "FORGET"); // usable at compile time

    CHECK(proto::name(proto::notify_code::inval_entry) == "INVAL_ENTRY");
    CHECK(proto::name(proto::notify_code::delete_entry) == "DELETE");
    CHECK(proto::name(proto::notify_code::prune) == "PRUNE");
    CHECK(proto::name(proto::notify_code{0}) == "UNKNOWN");
}

TEST_CASE("notify codes") {
    using proto::notify_code;
    CHECK(std::to_underlying(notify_code::poll) == FUSE_NOTIFY_POLL);
    CHECK(std::to_underlying(notify_code::inval_inode) == FUSE_NOTIFY_INVAL_INODE);
    CHECK(std::to_underlying(notify_code::inval_entry) == FUSE_NOTIFY_INVAL_ENTRY);
    CHECK(std::to_underlying(notify_code::store) == FUSE_NOTIFY_STORE);
    CHECK(std::to_underlying(notify_code::retrieve) == FUSE_NOTIFY_RETRIEVE);
    CHECK(std::to_underlying(notify_code::delete_entry) == FUSE_NOTIFY_DELETE);
    // Newer than 7.38 (resend: kernel-facts Q5 wrote error=7 and it worked).
    CHECK(std::to_underlying(notify_code::resend) == 7);
    CHECK(std::to_underlying(notify_code::inc_epoch) == 8);
    CHECK(std::to_underlying(notify_code::prune) == 9);
}

TEST_CASE("init flags agree with the system header and are one 64-bit space") {
    namespace f = proto::init_flag;
    CHECK(f::async_read == lo(FUSE_ASYNC_READ));
    CHECK(f::posix_locks == lo(FUSE_POSIX_LOCKS));
    CHECK(f::file_ops == lo(FUSE_FILE_OPS));
    CHECK(f::atomic_o_trunc == lo(FUSE_ATOMIC_O_TRUNC));
    CHECK(f::export_support == lo(FUSE_EXPORT_SUPPORT));
    CHECK(f::big_writes == lo(FUSE_BIG_WRITES));
    CHECK(f::dont_mask == lo(FUSE_DONT_MASK));
    CHECK(f::splice_write == lo(FUSE_SPLICE_WRITE));
    CHECK(f::splice_move == lo(FUSE_SPLICE_MOVE));
    CHECK(f::splice_read == lo(FUSE_SPLICE_READ));
    CHECK(f::flock_locks == lo(FUSE_FLOCK_LOCKS));
    CHECK(f::has_ioctl_dir == lo(FUSE_HAS_IOCTL_DIR));
    CHECK(f::auto_inval_data == lo(FUSE_AUTO_INVAL_DATA));
    CHECK(f::do_readdirplus == lo(FUSE_DO_READDIRPLUS));
    CHECK(f::readdirplus_auto == lo(FUSE_READDIRPLUS_AUTO));
    CHECK(f::async_dio == lo(FUSE_ASYNC_DIO));
    CHECK(f::writeback_cache == lo(FUSE_WRITEBACK_CACHE));
    CHECK(f::no_open_support == lo(FUSE_NO_OPEN_SUPPORT));
    CHECK(f::parallel_dirops == lo(FUSE_PARALLEL_DIROPS));
    CHECK(f::handle_killpriv == lo(FUSE_HANDLE_KILLPRIV));
    CHECK(f::posix_acl == lo(FUSE_POSIX_ACL));
    CHECK(f::abort_error == lo(FUSE_ABORT_ERROR));
    CHECK(f::max_pages == lo(FUSE_MAX_PAGES));
    CHECK(f::cache_symlinks == lo(FUSE_CACHE_SYMLINKS));
    CHECK(f::no_opendir_support == lo(FUSE_NO_OPENDIR_SUPPORT));
    CHECK(f::explicit_inval_data == lo(FUSE_EXPLICIT_INVAL_DATA));
    CHECK(f::map_alignment == lo(FUSE_MAP_ALIGNMENT));
    CHECK(f::submounts == lo(FUSE_SUBMOUNTS));
    CHECK(f::handle_killpriv_v2 == lo(FUSE_HANDLE_KILLPRIV_V2));
    CHECK(f::setxattr_ext == lo(FUSE_SETXATTR_EXT));
    CHECK(f::init_ext == lo(FUSE_INIT_EXT));
    CHECK(f::init_reserved == lo(FUSE_INIT_RESERVED));
    CHECK(f::security_ctx == FUSE_SECURITY_CTX);
    CHECK(f::has_inode_dax == FUSE_HAS_INODE_DAX);
    CHECK(f::has_expire_only == FUSE_HAS_EXPIRE_ONLY);
    // Newer than 7.38: literal bit numbers from the 7.45 header.
    CHECK(f::create_supp_group == 1ull << 34);
    CHECK(f::direct_io_allow_mmap == 1ull << 36);
    CHECK(f::passthrough == 1ull << 37);
    CHECK(f::no_export_support == 1ull << 38);
    CHECK(f::has_resend == 1ull << 39);
    CHECK(f::allow_idmap == 1ull << 40);
    CHECK(f::over_io_uring == 1ull << 41);
    CHECK(f::request_timeout == 1ull << 42);
    // kernel-facts: "OVER_IO_URING = bit 41 -> flags2 bit 9", "PASSTHROUGH flags2 bit 5 = 0x20".
    CHECK(f::high(f::over_io_uring) == 0x200u);
    CHECK(f::high(f::passthrough) == 0x20u);

    CHECK(f::combine(0x12345678u, 0x9abcdef0u) == 0x9abcdef012345678ull);
    CHECK(f::low(0x9abcdef012345678ull) == 0x12345678u);
    CHECK(f::high(0x9abcdef012345678ull) == 0x9abcdef0u);
    CHECK(f::with_init_ext(f::passthrough) == (f::passthrough | f::init_ext));
    CHECK(f::with_init_ext(f::async_read) == f::async_read);
}

TEST_CASE("flags offered by this kernel (6.18, 7.45) decode as measured") {
    namespace f = proto::init_flag;
    std::uint64_t const offered = f::combine(0x73fffffbu, 0x000007fdu);
    CHECK((offered & f::has_resend) != 0);
    CHECK((offered & f::over_io_uring) != 0);
    CHECK((offered & f::passthrough) != 0);
    CHECK((offered & f::request_timeout) != 0);
    CHECK((offered & f::security_ctx) != 0);
    CHECK((offered & f::allow_idmap) != 0);
    CHECK((offered & f::init_ext) != 0);
    CHECK((offered & f::has_inode_dax) == 0);
    CHECK((offered & f::file_ops) == 0);     // bit 2 is the 0xb -> 0xfb hole
    CHECK((offered & f::init_reserved) == 0);
    CHECK((offered & ~f::all_known) == 0);   // nothing we cannot name

    std::string const text = proto::describe_init_flags(offered);
    CHECK(text.find("has_resend") != std::string::npos);
    CHECK(text.find("over_io_uring") != std::string::npos);
    CHECK(text.find("passthrough") != std::string::npos);
    CHECK(text.find("has_inode_dax") == std::string::npos);
    CHECK(text.rfind("async_read|posix_locks|atomic_o_trunc|", 0) == 0);
    CHECK(proto::describe_init_flags(0) == "0");
    CHECK(proto::describe_init_flags(f::init_ext | (1ull << 43)) == "init_ext|bit43");
}

TEST_CASE("other flag groups agree with the system header") {
    CHECK(proto::fattr::mode == FATTR_MODE);
    CHECK(proto::fattr::uid == FATTR_UID);
    CHECK(proto::fattr::gid == FATTR_GID);
    CHECK(proto::fattr::size == FATTR_SIZE);
    CHECK(proto::fattr::atime == FATTR_ATIME);
    CHECK(proto::fattr::mtime == FATTR_MTIME);
    CHECK(proto::fattr::fh == FATTR_FH);
    CHECK(proto::fattr::atime_now == FATTR_ATIME_NOW);
    CHECK(proto::fattr::mtime_now == FATTR_MTIME_NOW);
    CHECK(proto::fattr::lockowner == FATTR_LOCKOWNER);
    CHECK(proto::fattr::ctime == FATTR_CTIME);
    CHECK(proto::fattr::kill_suidgid == FATTR_KILL_SUIDGID);

    CHECK(proto::fopen::direct_io == FOPEN_DIRECT_IO);
    CHECK(proto::fopen::keep_cache == FOPEN_KEEP_CACHE);
    CHECK(proto::fopen::nonseekable == FOPEN_NONSEEKABLE);
    CHECK(proto::fopen::cache_dir == FOPEN_CACHE_DIR);
    CHECK(proto::fopen::stream == FOPEN_STREAM);
    CHECK(proto::fopen::noflush == FOPEN_NOFLUSH);
    CHECK(proto::fopen::parallel_direct_writes == FOPEN_PARALLEL_DIRECT_WRITES);
    CHECK(proto::fopen::passthrough == 1u << 7); // 7.40

    CHECK(proto::cuse_flag::unrestricted_ioctl == CUSE_UNRESTRICTED_IOCTL);
    CHECK(proto::getattr_flag::fh == FUSE_GETATTR_FH);
    CHECK(proto::lk_flag::flock == FUSE_LK_FLOCK);
    CHECK(proto::write_flag::cache == FUSE_WRITE_CACHE);
    CHECK(proto::write_flag::lockowner == FUSE_WRITE_LOCKOWNER);
    CHECK(proto::write_flag::kill_suidgid == FUSE_WRITE_KILL_SUIDGID);
    CHECK(proto::open_flag::kill_suidgid == FUSE_OPEN_KILL_SUIDGID);
    CHECK(proto::release_flag::flush == FUSE_RELEASE_FLUSH);
    CHECK(proto::release_flag::flock_unlock == FUSE_RELEASE_FLOCK_UNLOCK);
    CHECK(proto::fsync_flag::fdatasync == FUSE_FSYNC_FDATASYNC);
    CHECK(proto::read_flag::lockowner == FUSE_READ_LOCKOWNER);
    CHECK(proto::ioctl_flag::compat == FUSE_IOCTL_COMPAT);
    CHECK(proto::ioctl_flag::unrestricted == FUSE_IOCTL_UNRESTRICTED);
    CHECK(proto::ioctl_flag::retry == FUSE_IOCTL_RETRY);
    CHECK(proto::ioctl_flag::bit32 == FUSE_IOCTL_32BIT);
    CHECK(proto::ioctl_flag::dir == FUSE_IOCTL_DIR);
    CHECK(proto::ioctl_flag::compat_x32 == FUSE_IOCTL_COMPAT_X32);
    CHECK(proto::ioctl_flag::ioctl_max_iov == FUSE_IOCTL_MAX_IOV);
    CHECK(proto::poll_flag::schedule_notify == FUSE_POLL_SCHEDULE_NOTIFY);
    CHECK(proto::setxattr_flag::acl_kill_sgid == FUSE_SETXATTR_ACL_KILL_SGID);
    CHECK(proto::notify_inval_flag::expire_only == FUSE_EXPIRE_ONLY);
    CHECK(proto::expire_flag::expire_only == FUSE_EXPIRE_ONLY);
    CHECK(proto::attr_flag::submount == FUSE_ATTR_SUBMOUNT);
    CHECK(proto::attr_flag::dax == FUSE_ATTR_DAX);
    CHECK(proto::setupmapping_flag::write == FUSE_SETUPMAPPING_FLAG_WRITE);
    CHECK(proto::setupmapping_flag::read == FUSE_SETUPMAPPING_FLAG_READ);
}

TEST_CASE("version and compat constants") {
    CHECK(proto::kernel_major == FUSE_KERNEL_VERSION);
    CHECK(proto::kernel_minor == 45);
    CHECK(proto::kernel_minor >= FUSE_KERNEL_MINOR_VERSION);
    CHECK(proto::root_id == FUSE_ROOT_ID);
    CHECK(proto::min_read_buffer == FUSE_MIN_READ_BUFFER);
    CHECK(proto::unique_resend_bit == 0x8000000000000000ull);
    CHECK(proto::init_out_compat_size_v7_5 == FUSE_COMPAT_INIT_OUT_SIZE);
    CHECK(proto::init_out_compat_size_v7_22 == FUSE_COMPAT_22_INIT_OUT_SIZE);
    CHECK(proto::init_out_compat_size_v7_22 == offsetof(proto::init_out, time_gran));
    CHECK(proto::entry_out_compat_size == FUSE_COMPAT_ENTRY_OUT_SIZE);
    CHECK(proto::attr_out_compat_size == FUSE_COMPAT_ATTR_OUT_SIZE);
    CHECK(proto::mknod_in_compat_size == FUSE_COMPAT_MKNOD_IN_SIZE);
    CHECK(proto::write_in_compat_size == FUSE_COMPAT_WRITE_IN_SIZE);
    CHECK(proto::setxattr_in_compat_size == FUSE_COMPAT_SETXATTR_IN_SIZE);
    CHECK(proto::statfs_out_compat_size == FUSE_COMPAT_STATFS_SIZE);
    CHECK(proto::cuse_init_info_max == CUSE_INIT_INFO_MAX);
    CHECK(proto::init_in_compat_size == offsetof(proto::init_in, flags2));
    CHECK(std::to_underlying(proto::ext_type::max_nr_secctx) == FUSE_MAX_NR_SECCTX);
    CHECK(std::to_underlying(proto::ext_type::groups) == 32);
}

TEST_CASE("dirent record sizes") {
    CHECK(proto::align8(0) == 0);
    CHECK(proto::align8(1) == 8);
    CHECK(proto::align8(8) == 8);
    CHECK(proto::align8(29) == 32);
    CHECK(proto::name_offset == 24);
    CHECK(proto::name_offset_direntplus == 152);
    CHECK(proto::dirent_size(0) == 24);
    CHECK(proto::dirent_size(1) == 32);
    CHECK(proto::dirent_size(5) == 32);
    CHECK(proto::dirent_size(8) == 32);
    CHECK(proto::dirent_size(9) == 40);
    CHECK(proto::direntplus_size(5) == 160);
    CHECK(proto::direntplus_size(8) == 160);
    CHECK(proto::direntplus_size(9) == 168);
    // Same arithmetic as the kernel's FUSE_DIRENT_ALIGN.
    for (std::size_t n = 0; n < 300; ++n) {
        CHECK(proto::dirent_size(n) == FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + n));
        CHECK(proto::direntplus_size(n) == FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + n));
    }
}

TEST_CASE("ioctl numbers") {
    CHECK(proto::dev_ioc_clone == 0x8004e500ul);
    CHECK(proto::dev_ioc_clone == FUSE_DEV_IOC_CLONE);
    CHECK(proto::dev_ioc_backing_open == 0x4010e501ul);
    CHECK(proto::dev_ioc_backing_close == 0x4004e502ul);
    CHECK(proto::dev_ioc_sync_init == 0xe503ul);
}

TEST_CASE("io_uring ABI") {
    CHECK(proto::in_out_header_size == 128);
    CHECK(proto::op_in_size == 128);
    CHECK(std::to_underlying(proto::uring_cmd::invalid) == 0);
    CHECK(std::to_underlying(proto::uring_cmd::register_) == 1);
    CHECK(std::to_underlying(proto::uring_cmd::commit_and_fetch) == 2);
}

TEST_CASE("structs are standard-layout aggregates usable with designated initialisers") {
    proto::init_out out{.major = proto::kernel_major,
                        .minor = proto::kernel_minor,
                        .max_readahead = 131072,
                        .flags = proto::init_flag::low(proto::init_flag::with_init_ext(
                            proto::init_flag::async_read | proto::init_flag::passthrough)),
                        .max_write = 1u << 20,
                        .max_pages = 256,
                        .flags2 = proto::init_flag::high(proto::init_flag::passthrough),
                        .max_stack_depth = 1};
    CHECK((out.flags & proto::init_flag::low(proto::init_flag::init_ext)) != 0);
    CHECK(out.flags2 == 0x20u);
    CHECK(out.request_timeout == 0);
    static_assert(std::is_standard_layout_v<proto::in_header>);
    static_assert(std::is_trivially_copyable_v<proto::uring_req_header>);
    static_assert(std::is_aggregate_v<proto::direntplus>);
}
