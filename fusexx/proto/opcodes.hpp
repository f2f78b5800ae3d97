// fusexx/proto/opcodes.hpp - request opcodes and notification codes (protocol 7.45).
#pragma once

#include <cstdint>
#include <string_view>

namespace fusexx::proto {

// in_header::opcode. Values are fixed by the kernel ABI; 7 and 19 were never
// used. Requests the server does not know must be answered with -ENOSYS
// (except FORGET/BATCH_FORGET, which take no reply).
enum class opcode : std::uint32_t {
    lookup = 1,
    forget = 2, // no reply
    getattr = 3,
    setattr = 4,
    readlink = 5,
    symlink = 6,
    mknod = 8,
    mkdir = 9,
    unlink = 10,
    rmdir = 11,
    rename = 12,
    link = 13,
    open = 14,
    read = 15,
    write = 16,
    statfs = 17,
    release = 18,
    fsync = 20,
    setxattr = 21,
    getxattr = 22,
    listxattr = 23,
    removexattr = 24,
    flush = 25,
    init = 26,
    opendir = 27,
    readdir = 28,
    releasedir = 29,
    fsyncdir = 30,
    getlk = 31,
    setlk = 32,
    setlkw = 33,
    access = 34,
    create = 35,
    interrupt = 36,
    bmap = 37,
    destroy = 38,
    ioctl = 39,
    poll = 40,
    notify_reply = 41, // answer to notify_code::retrieve, carries notify_retrieve_in
    batch_forget = 42, // no reply
    fallocate = 43,
    readdirplus = 44,
    rename2 = 45,
    lseek = 46,
    copy_file_range = 47,
    setupmapping = 48, // virtiofs DAX only
    removemapping = 49, // virtiofs DAX only
    syncfs = 50,
    tmpfile = 51,
    statx = 52,
    copy_file_range_64 = 53, // 7.45: like copy_file_range, reply is copy_file_range_out

    cuse_init = 4096,
};

// Byte-swapped INIT/CUSE_INIT opcodes. The kernel reserves these so that a
// peer of the other endianness can be recognised from the first request.
inline constexpr std::uint32_t cuse_init_bswap_reserved = 4096u << 8;   // 1048576
inline constexpr std::uint32_t fuse_init_bswap_reserved = 26u << 24;    // 436207616

// Upper-case kernel name without the FUSE_ prefix, e.g. "LOOKUP";
// "UNKNOWN" for values the enum does not name.
constexpr std::string_view name(opcode op) noexcept {
    switch (op) {
    case opcode::lookup: return "LOOKUP";
    case opcode::forget: return "FORGET";
    case opcode::getattr: return "GETATTR";
    case opcode::setattr: return "SETATTR";
    case opcode::readlink: return "READLINK";
    case opcode::symlink: return "SYMLINK";
    case opcode::mknod: return "MKNOD";
    case opcode::mkdir: return "MKDIR";
    case opcode::unlink: return "UNLINK";
    case opcode::rmdir: return "RMDIR";
    case opcode::rename: return "RENAME";
    case opcode::link: return "LINK";
    case opcode::open: return "OPEN";
    case opcode::read: return "READ";
    case opcode::write: return "WRITE";
    case opcode::statfs: return "STATFS";
    case opcode::release: return "RELEASE";
    case opcode::fsync: return "FSYNC";
    case opcode::setxattr: return "SETXATTR";
    case opcode::getxattr: return "GETXATTR";
    case opcode::listxattr: return "LISTXATTR";
    case opcode::removexattr: return "REMOVEXATTR";
    case opcode::flush: return "FLUSH";
    case opcode::init: return "INIT";
    case opcode::opendir: return "OPENDIR";
    case opcode::readdir: return "READDIR";
    case opcode::releasedir: return "RELEASEDIR";
    case opcode::fsyncdir: return "FSYNCDIR";
    case opcode::getlk: return "GETLK";
    case opcode::setlk: return "SETLK";
    case opcode::setlkw: return "SETLKW";
    case opcode::access: return "ACCESS";
    case opcode::create: return "CREATE";
    case opcode::interrupt: return "INTERRUPT";
    case opcode::bmap: return "BMAP";
    case opcode::destroy: return "DESTROY";
    case opcode::ioctl: return "IOCTL";
    case opcode::poll: return "POLL";
    case opcode::notify_reply: return "NOTIFY_REPLY";
    case opcode::batch_forget: return "BATCH_FORGET";
    case opcode::fallocate: return "FALLOCATE";
    case opcode::readdirplus: return "READDIRPLUS";
    case opcode::rename2: return "RENAME2";
    case opcode::lseek: return "LSEEK";
    case opcode::copy_file_range: return "COPY_FILE_RANGE";
    case opcode::setupmapping: return "SETUPMAPPING";
    case opcode::removemapping: return "REMOVEMAPPING";
    case opcode::syncfs: return "SYNCFS";
    case opcode::tmpfile: return "TMPFILE";
    case opcode::statx: return "STATX";
    case opcode::copy_file_range_64: return "COPY_FILE_RANGE_64";
    case opcode::cuse_init: return "CUSE_INIT";
    }
    return "UNKNOWN";
}

// True if `op` is one of the values named above (a raw in_header::opcode
// can be anything the kernel sends, including values from newer protocols).
constexpr bool is_known(opcode op) noexcept { return name(op) != "UNKNOWN"; }

// Notifications are written by the server to /dev/fuse (never over io_uring)
// as out_header{len, error = code, unique = 0} followed by the payload struct.
enum class notify_code : std::int32_t {
    poll = 1,         // notify_poll_wakeup_out
    inval_inode = 2,  // notify_inval_inode_out
    inval_entry = 3,  // notify_inval_entry_out + name + '\0'
    store = 4,        // notify_store_out + data
    retrieve = 5,     // notify_retrieve_out; kernel answers with opcode::notify_reply
    delete_entry = 6, // notify_delete_out + name + '\0'  (kernel: FUSE_NOTIFY_DELETE)
    resend = 7,       // 7.40: header only, no payload
    inc_epoch = 8,    // 7.44: header only, no payload
    prune = 9,        // 7.45: notify_prune_out + count * u64 nodeid
};

constexpr std::string_view name(notify_code c) noexcept {
    switch (c) {
    case notify_code::poll: return "POLL";
    case notify_code::inval_inode: return "INVAL_INODE";
    case notify_code::inval_entry: return "INVAL_ENTRY";
    case notify_code::store: return "STORE";
    case notify_code::retrieve: return "RETRIEVE";
    case notify_code::delete_entry: return "DELETE";
    case notify_code::resend: return "RESEND";
    case notify_code::inc_epoch: return "INC_EPOCH";
    case notify_code::prune: return "PRUNE";
    }
    return "UNKNOWN";
}

} // namespace fusexx::proto
