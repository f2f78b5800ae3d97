#pragma once
// The operation table: one row per opcode. A row says what the request
// carries (decoded, bounds-checked, into named fields), whether the
// filesystem implements it, which handler it calls, and — where the reply is
// not one of the common shapes — how the reply is encoded. The dispatcher
// (fusexx/dispatch.hpp) does the rest the same way for every row: ENOSYS,
// EINVAL for a short body, running the handler (plain or coroutine), the
// exception fence, the reply, and the session's bookkeeping.
//
// Adding an operation is adding its row here (and its has_<op> concept in
// filesystem.hpp). An opcode without a row is answered ENOSYS.
//
// A filesystem operation's row has:
//   using reply = T;                      what the handler's value is (void: none)
//   bool decode(body_reader&, const decode_context&);
//   template <class Fs> static constexpr bool implemented;
//   template <class Fs> auto call(Fs&, request&);
// and may have:
//   void send(responder&, const T&) const;    (or send(responder&) for void)
//                                         an encoding of its own
//   void fallback(responder&) const;      the answer without a handler, instead of ENOSYS
//   using diverted = R; bool diverts() const; R divert() const;
//                                         one opcode, two handlers: when diverts(),
//                                         row R (built by divert()) serves it instead
//   void arrived(session&, ino) const;    bookkeeping when the request arrives
//   static constexpr bool directory; int open_flags() const;   for `opened` replies
// A session-level row (INIT, DESTROY, FORGET, BATCH_FORGET, INTERRUPT,
// NOTIFY_REPLY) has `static constexpr bool session_level = true` and an
// apply(dispatcher&, header, incoming&, responder&) instead.
#include <sys/file.h>

#include <cstring>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../codec.hpp"
#include "../dir_buffer.hpp"
#include "../filesystem.hpp"
#include "../log.hpp"
#include "../proto/abi.hpp"
#include "../request.hpp"
#include "../types.hpp"
#include "incoming.hpp"
#include "responder.hpp"

namespace fusexx::detail::op {

using proto::opcode;

// What decoding may need besides the body.
struct decode_context {
  std::span<std::byte> scratch;  // room for reply data built in place (READ, READDIR)
  const connection& conn;
};

// The row of an opcode; opcodes without one are answered ENOSYS. (Also
// SETUPMAPPING/REMOVEMAPPING, virtiofs DAX only, and CUSE_INIT.)
template <opcode>
struct row;

// ---- shared pieces ----

// Rows whose request carries one fixed struct and nothing else.
template <class In>
struct with {
  In a{};
  bool decode(body_reader& b, const decode_context&) { return b.get(a); }
};

// Rows whose request carries one name.
struct with_name {
  std::string_view name;
  bool decode(body_reader& b, const decode_context&) { return b.get(name); }
};

inline set_attributes decode_setattr(const proto::setattr_in& a) {
  namespace f = proto::fattr;
  set_attributes s;
  if (a.valid & f::mode) s.mode = static_cast<mode_t>(a.mode);
  if (a.valid & f::uid) s.uid = a.uid;
  if (a.valid & f::gid) s.gid = a.gid;
  if (a.valid & f::size) s.size = static_cast<off_t>(a.size);
  if (a.valid & f::atime_now) s.atime = timespec{0, UTIME_NOW};
  else if (a.valid & f::atime) s.atime = decode_time(a.atime, a.atimensec);
  if (a.valid & f::mtime_now) s.mtime = timespec{0, UTIME_NOW};
  else if (a.valid & f::mtime) s.mtime = decode_time(a.mtime, a.mtimensec);
  if (a.valid & f::ctime) s.ctime = decode_time(a.ctime, a.ctimensec);
  if (a.valid & f::fh) s.fh = a.fh;
  if (a.valid & f::lockowner) s.lock_owner = a.lock_owner;
  s.kill_suid = (a.valid & f::kill_suidgid) != 0;
  return s;
}

// getxattr/listxattr: size 0 asks for the length only; a too-small buffer is ERANGE.
inline void send_sized(const responder& s, std::uint32_t size, const std::string& value) {
  if (size == 0) {
    proto::getxattr_out out{};
    out.size = static_cast<std::uint32_t>(value.size());
    return s.send(0, bytes_of(out));
  }
  if (value.size() > size) return s.send(ERANGE);
  s.send(0, std::as_bytes(std::span(value)));
}

// ---- session-level rows: the dispatcher itself acts on them ----

template <>
struct row<opcode::init> {
  static constexpr bool session_level = true;
  static constexpr bool replies = true;
  static constexpr bool gate_answers = true;  // the INIT gate writes the reply, not a responder
  template <class D>
  static std::optional<disposition> apply(D& d, const proto::in_header& h, body_reader& body, incoming& in, const responder&) {
    // Kernels before 7.36 send the 16-byte form; the rest of init_in stays zero.
    proto::init_in a{};
    if (!body.get(a, std::min(body.remaining(), sizeof a)) || body.remaining() > 0 || a.major == 0)
      return std::nullopt;
    d.init(a, in.sink, h.unique);
    return disposition::replied;
  }
};

template <>
struct row<opcode::destroy> {
  static constexpr bool session_level = true;
  static constexpr bool replies = true;
  template <class D>
  static std::optional<disposition> apply(D& d, const proto::in_header&, body_reader&, incoming&, const responder& resp) {
    d.end_session();
    resp.send(0);
    return disposition::replied;
  }
};

template <>
struct row<opcode::forget> {
  static constexpr bool session_level = true;
  static constexpr bool replies = false;
  template <class D>
  static std::optional<disposition> apply(D& d, const proto::in_header& h, body_reader& body, incoming&, const responder&) {
    proto::forget_in a{};
    if (!body.get(a)) return std::nullopt;
    d.forget(h.nodeid, a.nlookup);
    return disposition::no_reply;
  }
};

template <>
struct row<opcode::batch_forget> {
  static constexpr bool session_level = true;
  static constexpr bool replies = false;
  template <class D>
  static std::optional<disposition> apply(D& d, const proto::in_header&, body_reader& body, incoming&, const responder&) {
    proto::batch_forget_in a{};
    if (!body.get(a)) return std::nullopt;
    for (std::uint32_t i = 0; i < a.count; ++i) {
      proto::forget_one one{};
      if (!body.get(one)) return std::nullopt;  // a truncated batch: forget what arrived
      d.forget(one.nodeid, one.nlookup);
    }
    return disposition::no_reply;
  }
};

template <>
struct row<opcode::interrupt> {
  static constexpr bool session_level = true;
  static constexpr bool replies = false;
  template <class D>
  static std::optional<disposition> apply(D& d, const proto::in_header&, body_reader& body, incoming&, const responder&) {
    proto::interrupt_in a{};
    if (!body.get(a)) return std::nullopt;
    d.interrupt(a.unique);
    return disposition::no_reply;
  }
};

// The kernel's answer to a NOTIFY_RETRIEVE: the unique is the one the
// notifier chose, the data is what the page cache held.
template <>
struct row<opcode::notify_reply> {
  static constexpr bool session_level = true;
  static constexpr bool replies = false;
  template <class D>
  static std::optional<disposition> apply(D& d, const proto::in_header& h, body_reader& body, incoming&, const responder&) {
    proto::notify_retrieve_in a{};
    std::span<const std::byte> data;
    if (!body.get(a) || !body.get_bytes(data, a.size)) return std::nullopt;
    d.session().notify().deliver(h.unique, off_t(a.offset), data);
    return disposition::no_reply;
  }
};

// ---- names ----

template <>
struct row<opcode::lookup> : with_name {
  using reply = entry;
  template <class Fs> static constexpr bool implemented = has_lookup<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.lookup(r, r.node(), name); }
};

template <>
struct row<opcode::mknod> {
  using reply = entry;
  proto::mknod_in a{};
  std::string_view name;
  bool decode(body_reader& b, const decode_context&) { return b.get(a) && b.get(name); }
  template <class Fs> static constexpr bool implemented = has_mknod<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    return fs.mknod(r, r.node(), name, mode_t(a.mode), dev_t(a.rdev), mode_t(a.umask));
  }
};

template <>
struct row<opcode::mkdir> {
  using reply = entry;
  proto::mkdir_in a{};
  std::string_view name;
  bool decode(body_reader& b, const decode_context&) { return b.get(a) && b.get(name); }
  template <class Fs> static constexpr bool implemented = has_mkdir<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.mkdir(r, r.node(), name, mode_t(a.mode), mode_t(a.umask)); }
};

template <>
struct row<opcode::symlink> {
  using reply = entry;
  std::string_view name, target;
  bool decode(body_reader& b, const decode_context&) { return b.get(name) && b.get(target); }
  template <class Fs> static constexpr bool implemented = has_symlink<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.symlink(r, r.node(), name, target); }
};

template <>
struct row<opcode::link> {
  using reply = entry;
  proto::link_in a{};
  std::string_view name;
  bool decode(body_reader& b, const decode_context&) { return b.get(a) && b.get(name); }
  template <class Fs> static constexpr bool implemented = has_link<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.link(r, a.oldnodeid, r.node(), name); }
};

template <>
struct row<opcode::unlink> : with_name {
  using reply = void;
  template <class Fs> static constexpr bool implemented = has_unlink<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.unlink(r, r.node(), name); }
};

template <>
struct row<opcode::rmdir> : with_name {
  using reply = void;
  template <class Fs> static constexpr bool implemented = has_rmdir<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.rmdir(r, r.node(), name); }
};

// RENAME carries no flags; RENAME2 (renameat2) does.
template <class In>
struct rename_row {
  using reply = void;
  In a{};
  std::string_view from, to;
  bool decode(body_reader& b, const decode_context&) { return b.get(a) && b.get(from) && b.get(to); }
  template <class Fs> static constexpr bool implemented = has_rename<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    unsigned flags = 0;
    if constexpr (requires { a.flags; }) flags = a.flags;
    return fs.rename(r, r.node(), from, a.newdir, to, flags);
  }
};
template <> struct row<opcode::rename> : rename_row<proto::rename_in> {};
template <> struct row<opcode::rename2> : rename_row<proto::rename2_in> {};

// ---- attributes ----

template <>
struct row<opcode::getattr> : with<proto::getattr_in> {
  using reply = attr;
  template <class Fs> static constexpr bool implemented = has_getattr<Fs> || has_getattr_without_handle<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    if constexpr (has_getattr<Fs>) {
      std::optional<fhandle> fh;
      if (a.getattr_flags & proto::getattr_flag::fh) fh = a.fh;
      return fs.getattr(r, r.node(), fh);
    } else {
      return fs.getattr(r, r.node());
    }
  }
};

template <>
struct row<opcode::setattr> {
  using reply = attr;
  set_attributes s;  // lives as long as the handler: it gets a reference
  bool decode(body_reader& b, const decode_context&) {
    proto::setattr_in a{};
    if (!b.get(a)) return false;
    s = decode_setattr(a);
    return true;
  }
  template <class Fs> static constexpr bool implemented = has_setattr<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.setattr(r, r.node(), s); }
};

template <>
struct row<opcode::readlink> {
  using reply = std::string;
  bool decode(body_reader&, const decode_context&) { return true; }
  template <class Fs> static constexpr bool implemented = has_readlink<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.readlink(r, r.node()); }
  void send(const responder& s, const std::string& target) const { s.send(0, std::as_bytes(std::span(target))); }
};

template <>
struct row<opcode::statfs> {
  using reply = fs_stats;
  bool decode(body_reader&, const decode_context&) { return true; }
  template <class Fs> static constexpr bool implemented = has_statfs<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.statfs(r, r.node()); }
  // Without a handler, report an empty filesystem rather than make df fail.
  void fallback(const responder& s) const {
    fs_stats st{};
    st.f_bsize = 512;
    st.f_namemax = 255;
    send_value(s, st);
  }
};

template <>
struct row<opcode::access> : with<proto::access_in> {
  using reply = void;  // without a handler the kernel stops asking
  template <class Fs> static constexpr bool implemented = has_access<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.access(r, r.node(), int(a.mask)); }
};

template <>
struct row<opcode::statx> : with<proto::statx_in> {
  using reply = extended_attr;  // without a handler the kernel uses GETATTR
  template <class Fs> static constexpr bool implemented = has_statx<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    std::optional<fhandle> fh;
    if (a.getattr_flags & proto::getattr_flag::fh) fh = a.fh;
    return fs.statx(r, r.node(), fh, int(a.sx_flags), a.sx_mask);
  }
};

// ---- opening and closing ----

// OPEN and OPENDIR. Stateless files need no handler: they open with handle 0,
// as libfuse does.
template <bool Directory>
struct open_row : with<proto::open_in> {
  using reply = opened;
  static constexpr bool directory = Directory;
  int open_flags() const { return int(a.flags); }
  template <class Fs> static constexpr bool implemented = Directory ? has_opendir<Fs> : has_open<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    if constexpr (Directory) {
      return fs.opendir(r, r.node(), int(a.flags));
    } else {
      r.set_kill_suidgid((a.open_flags & proto::open_flag::kill_suidgid) != 0);
      return fs.open(r, r.node(), int(a.flags));
    }
  }
  void fallback(const responder& s) const { send_value(s, opened{}); }
};
template <> struct row<opcode::open> : open_row<false> {};
template <> struct row<opcode::opendir> : open_row<true> {};

// CREATE and TMPFILE: an entry and an open file in one reply. (The kernel
// names TMPFILE's unnamed file "/"; there is nothing to pass on.)
template <bool Unnamed>
struct create_row {
  using reply = created;
  static constexpr bool directory = false;
  proto::create_in a{};
  std::string_view name;
  int open_flags() const { return int(a.flags); }
  bool decode(body_reader& b, const decode_context&) { return b.get(a) && b.get(name); }
  template <class Fs> static constexpr bool implemented = Unnamed ? has_tmpfile<Fs> : has_create<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    if constexpr (Unnamed) {
      return fs.tmpfile(r, r.node(), mode_t(a.mode), int(a.flags), mode_t(a.umask));
    } else {
      r.set_kill_suidgid((a.open_flags & proto::open_flag::kill_suidgid) != 0);
      return fs.create(r, r.node(), name, mode_t(a.mode), int(a.flags), mode_t(a.umask));
    }
  }
};
// Without CREATE the kernel falls back to MKNOD + OPEN; without TMPFILE,
// open(O_TMPFILE) fails with EOPNOTSUPP.
template <> struct row<opcode::create> : create_row<false> {};
template <> struct row<opcode::tmpfile> : create_row<true> {};

// RELEASE and RELEASEDIR. The kernel has let go of the handle once it sends
// this, whatever the reply; without a handler nothing was opened, so nothing
// to release.
template <bool Directory>
struct release_row : with<proto::release_in> {
  using reply = void;
  template <class Fs> static constexpr bool implemented = Directory ? has_releasedir<Fs> : has_release<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    if constexpr (Directory) return fs.releasedir(r, r.node(), a.fh, int(a.flags));
    else return fs.release(r, r.node(), a.fh, int(a.flags));
  }
  void arrived(session& s, ino node) const { s.handles().released(node, a.fh, Directory); }
  void fallback(const responder& s) const { s.send(0); }
};
template <> struct row<opcode::release> : release_row<false> {};
template <> struct row<opcode::releasedir> : release_row<true> {};

template <>
struct row<opcode::flush> : with<proto::flush_in> {
  using reply = void;
  template <class Fs> static constexpr bool implemented = has_flush<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.flush(r, r.node(), a.fh, a.lock_owner); }
};

template <bool Directory>
struct fsync_row : with<proto::fsync_in> {
  using reply = void;
  template <class Fs> static constexpr bool implemented = Directory ? has_fsyncdir<Fs> : has_fsync<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    const bool datasync = a.fsync_flags & proto::fsync_flag::fdatasync;
    if constexpr (Directory) return fs.fsyncdir(r, r.node(), a.fh, datasync);
    else return fs.fsync(r, r.node(), a.fh, datasync);
  }
};
template <> struct row<opcode::fsync> : fsync_row<false> {};
template <> struct row<opcode::fsyncdir> : fsync_row<true> {};

// ---- data ----

// READ builds its data in place, in the request buffer after the request.
template <>
struct row<opcode::read> : with<proto::read_in> {
  using reply = std::size_t;
  std::span<std::byte> into;
  bool decode(body_reader& b, const decode_context& c) {
    if (!b.get(a)) return false;
    into = c.scratch.first(std::min<std::size_t>(a.size, c.scratch.size()));
    return true;
  }
  template <class Fs> static constexpr bool implemented = has_read<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.read(r, r.node(), a.fh, off_t(a.offset), into); }
  void send(const responder& s, std::size_t n) const {
    if (n > into.size()) {
      log::error("read() returned {} bytes for a {}-byte buffer", n, into.size());
      return s.send(EIO);
    }
    s.send(0, into.first(n));
  }
};

template <>
struct row<opcode::write> {
  using reply = std::size_t;
  proto::write_in a{};
  std::span<const std::byte> data;
  bool decode(body_reader& b, const decode_context&) { return b.get(a) && b.get_bytes(data, a.size); }
  template <class Fs> static constexpr bool implemented = has_write<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    return fs.write(r, r.node(), a.fh, off_t(a.offset), data, int(a.write_flags));
  }
  void send(const responder& s, std::size_t n) const {
    proto::write_out out{};
    out.size = static_cast<std::uint32_t>(n);
    s.send(0, bytes_of(out));
  }
};

// READDIR and READDIRPLUS: packed into a dir_buffer in the request buffer.
template <bool Plus>
struct readdir_row : with<proto::read_in> {
  using reply = void;
  static constexpr bool plus = Plus;
  dir_buffer out{{}, Plus};
  bool decode(body_reader& b, const decode_context& c) {
    if (!b.get(a)) return false;
    out = dir_buffer(c.scratch.first(std::min<std::size_t>(a.size, c.scratch.size())), Plus);
    return true;
  }
  template <class Fs> static constexpr bool implemented = Plus ? has_readdirplus<Fs> : has_readdir<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    if constexpr (Plus) return fs.readdirplus(r, r.node(), a.fh, off_t(a.offset), out);
    else return fs.readdir(r, r.node(), a.fh, off_t(a.offset), out);
  }
};
template <> struct row<opcode::readdir> : readdir_row<false> {};
template <> struct row<opcode::readdirplus> : readdir_row<true> {};

template <>
struct row<opcode::fallocate> : with<proto::fallocate_in> {
  using reply = void;  // without a handler the kernel answers EOPNOTSUPP from then on
  template <class Fs> static constexpr bool implemented = has_fallocate<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    return fs.fallocate(r, r.node(), a.fh, int(a.mode), off_t(a.offset), off_t(a.length));
  }
};

template <>
struct row<opcode::lseek> : with<proto::lseek_in> {
  using reply = off_t;  // without a handler the kernel seeks by itself from then on
  template <class Fs> static constexpr bool implemented = has_lseek<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.lseek(r, r.node(), a.fh, off_t(a.offset), int(a.whence)); }
  void send(const responder& s, off_t where) const {
    if (where < 0) return s.send(EINVAL);
    proto::lseek_out out{};
    out.offset = static_cast<std::uint64_t>(where);
    s.send(0, bytes_of(out));
  }
};

// COPY_FILE_RANGE answers with 32 bits, the 7.45 COPY_FILE_RANGE_64 with 64.
// ENOSYS makes the kernel fall back: from the 64-bit form to the old one, and
// from there to copying through the page cache.
template <bool Wide>
struct copy_file_range_row : with<proto::copy_file_range_in> {
  using reply = std::size_t;
  template <class Fs> static constexpr bool implemented = has_copy_file_range<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    return fs.copy_file_range(r, r.node(), a.fh_in, off_t(a.off_in), a.nodeid_out, a.fh_out, off_t(a.off_out),
                              std::size_t(a.len), a.flags);
  }
  void send(const responder& s, std::size_t n) const {
    if (n > a.len || (!Wide && n > UINT32_MAX)) {
      log::error("copy_file_range() copied {} bytes of {} asked for", n, a.len);
      return s.send(EIO);
    }
    if constexpr (Wide) {
      proto::copy_file_range_out out{};
      out.bytes_copied = n;
      s.send(0, bytes_of(out));
    } else {
      proto::write_out out{};
      out.size = static_cast<std::uint32_t>(n);
      s.send(0, bytes_of(out));
    }
  }
};
template <> struct row<opcode::copy_file_range> : copy_file_range_row<false> {};
template <> struct row<opcode::copy_file_range_64> : copy_file_range_row<true> {};

template <>
struct row<opcode::syncfs> : with<proto::syncfs_in> {
  using reply = void;
  template <class Fs> static constexpr bool implemented = has_syncfs<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.syncfs(r, r.node()); }
};

template <>
struct row<opcode::bmap> : with<proto::bmap_in> {
  using reply = std::uint64_t;
  template <class Fs> static constexpr bool implemented = has_bmap<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.bmap(r, r.node(), a.blocksize, a.block); }
  void send(const responder& s, std::uint64_t block) const {
    proto::bmap_out out{};
    out.block = block;
    s.send(0, bytes_of(out));
  }
};

// ---- extended attributes ----

template <>
struct row<opcode::getxattr> : with<proto::getxattr_in> {
  using reply = std::string;
  std::string_view name;
  bool decode(body_reader& b, const decode_context&) { return b.get(a) && b.get(name); }
  template <class Fs> static constexpr bool implemented = has_getxattr<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.getxattr(r, r.node(), name); }
  void send(const responder& s, const std::string& value) const { send_sized(s, a.size, value); }
};

template <>
struct row<opcode::listxattr> : with<proto::getxattr_in> {
  using reply = std::string;
  template <class Fs> static constexpr bool implemented = has_listxattr<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.listxattr(r, r.node()); }
  void send(const responder& s, const std::string& names) const { send_sized(s, a.size, names); }
};

template <>
struct row<opcode::setxattr> {
  using reply = void;
  proto::setxattr_in a{};
  std::string_view name;
  std::span<const std::byte> value;
  bool decode(body_reader& b, const decode_context& c) {
    // The 16-byte form only when FUSE_SETXATTR_EXT was granted.
    const bool ext = c.conn.has(proto::init_flag::setxattr_ext);
    return b.get(a, ext ? sizeof a : proto::setxattr_in_compat_size) && b.get(name) && b.get_bytes(value, a.size);
  }
  template <class Fs> static constexpr bool implemented = has_setxattr<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.setxattr(r, r.node(), name, value, int(a.flags)); }
};

template <>
struct row<opcode::removexattr> : with_name {
  using reply = void;
  template <class Fs> static constexpr bool implemented = has_removexattr<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.removexattr(r, r.node(), name); }
};

// ---- locks ----

template <>
struct row<opcode::getlk> : with<proto::lk_in> {
  using reply = posix_lock;
  posix_lock lock;  // lives as long as the handler: it gets a reference
  bool decode(body_reader& b, const decode_context&) {
    if (!b.get(a)) return false;
    lock = decode_lock(a.lk);
    return true;
  }
  template <class Fs> static constexpr bool implemented = has_getlk<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.getlk(r, r.node(), a.fh, a.owner, lock); }
  void send(const responder& s, const posix_lock& l) const {
    proto::lk_out out{};
    out.lk = encode_lock(l);
    s.send(0, bytes_of(out));
  }
};

// flock(2) arrives as SETLK(W) on the whole file with lk_flag::flock, and
// goes to the flock handler.
template <bool Wait>
struct flock_row {
  using reply = void;
  proto::lk_in a{};
  template <class Fs> static constexpr bool implemented = has_flock<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    int how = a.lk.type == F_RDLCK ? LOCK_SH : a.lk.type == F_WRLCK ? LOCK_EX : LOCK_UN;
    if (!Wait && how != LOCK_UN) how |= LOCK_NB;
    return fs.flock(r, r.node(), a.fh, a.owner, how);
  }
};

// SETLK and SETLKW: a POSIX record lock, or (diverted) a flock.
template <bool Wait>
struct setlk_row : with<proto::lk_in> {
  using reply = void;
  using diverted = flock_row<Wait>;
  posix_lock lock;  // lives as long as the handler: it gets a reference
  bool decode(body_reader& b, const decode_context&) {
    if (!b.get(a)) return false;
    lock = decode_lock(a.lk);
    return true;
  }
  bool diverts() const { return (a.lk_flags & proto::lk_flag::flock) != 0; }
  diverted divert() const { return diverted{a}; }
  template <class Fs> static constexpr bool implemented = has_setlk<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) { return fs.setlk(r, r.node(), a.fh, a.owner, lock, Wait); }
};
template <> struct row<opcode::setlk> : setlk_row<false> {};
template <> struct row<opcode::setlkw> : setlk_row<true> {};

// ---- the rest ----

template <>
struct row<opcode::ioctl> : with<proto::ioctl_in> {
  using reply = ioctl_reply;  // without a handler the caller gets ENOTTY
  std::span<const std::byte> data;
  bool decode(body_reader& b, const decode_context&) { return b.get(a) && b.get_bytes(data, a.in_size); }
  template <class Fs> static constexpr bool implemented = has_ioctl<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    return fs.ioctl(r, r.node(), a.fh, a.flags, a.cmd, a.arg, data, a.out_size);
  }
  void send(const responder& s, const ioctl_reply& x) const {
    proto::ioctl_out out{};
    out.result = x.result;
    if (!x.retry_in.empty() || !x.retry_out.empty()) {
      // Only an unrestricted ioctl may be retried, and within the kernel's iovec limit.
      const std::size_t n = x.retry_in.size() + x.retry_out.size();
      if (!(a.flags & proto::ioctl_flag::unrestricted) || n > proto::ioctl_flag::ioctl_max_iov) {
        log::error("ioctl() asked for a retry the kernel cannot do ({} areas, flags {:#x})", n, a.flags);
        return s.send(EIO);
      }
      out.flags = proto::ioctl_flag::retry;
      out.in_iovs = static_cast<std::uint32_t>(x.retry_in.size());
      out.out_iovs = static_cast<std::uint32_t>(x.retry_out.size());
      std::vector<std::byte> reply(sizeof out + n * sizeof(proto::ioctl_iovec));
      std::memcpy(reply.data(), &out, sizeof out);
      std::size_t at = sizeof out;
      for (const auto* list : {&x.retry_in, &x.retry_out})
        for (const ioctl_area& area : *list) {
          const proto::ioctl_iovec v{area.base, area.length};
          std::memcpy(reply.data() + at, &v, sizeof v);
          at += sizeof v;
        }
      return s.send(0, reply);
    }
    if (x.out.size() > a.out_size) {
      log::error("ioctl() returned {} bytes for a {}-byte buffer", x.out.size(), a.out_size);
      return s.send(EIO);
    }
    s.send(0, bytes_of(out), x.out);
  }
};

template <>
struct row<opcode::poll> : with<proto::poll_in> {
  using reply = unsigned;  // without a handler the kernel reports "always ready"
  template <class Fs> static constexpr bool implemented = has_poll<Fs>;
  template <class Fs> auto call(Fs& fs, request& r) {
    std::optional<std::uint64_t> kh;
    if (a.flags & proto::poll_flag::schedule_notify) kh = a.kh;
    return fs.poll(r, r.node(), a.fh, kh, a.events);
  }
  void send(const responder& s, unsigned revents) const {
    proto::poll_out out{};
    out.revents = revents;
    s.send(0, bytes_of(out));
  }
};

}  // namespace fusexx::detail::op
