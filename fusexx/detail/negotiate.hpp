#pragma once
// INIT negotiation: what the kernel offers, what the filesystem wants, what is
// granted. Pure: it computes the reply; the INIT gate sends it.
#include <algorithm>
#include <cstdint>
#include <exception>
#include <string>

#include "../filesystem.hpp"
#include "../log.hpp"
#include "../proto/abi.hpp"
#include "../session.hpp"

namespace fusexx {

// The oldest protocol this framework can serve (init_out's 24-byte form and
// the 16-byte mknod_in are handled; older layouts are not).
inline constexpr std::uint32_t oldest_supported_minor = 12;

// The capabilities asked for unless the filesystem's init() says otherwise:
// the ones that only make a correct server faster, plus those that follow
// from which operations Fs implements.
template <class Fs>
constexpr std::uint64_t default_wants() {
  namespace f = proto::init_flag;
  std::uint64_t w = f::async_read | f::parallel_dirops | f::auto_inval_data | f::big_writes | f::max_pages |
                    f::async_dio | f::has_ioctl_dir | f::init_ext | f::abort_error;
  if constexpr (has_readdirplus<Fs>) w |= f::do_readdirplus | f::readdirplus_auto;
  // Locks the filesystem implements are its own: without these the kernel
  // keeps POSIX (or flock) locks locally and never sends the requests.
  if constexpr (has_getlk<Fs> && has_setlk<Fs>) w |= f::posix_locks;
  if constexpr (has_flock<Fs>) w |= f::flock_locks;
  return w;
}

namespace detail {

struct init_reply {
  int error = 0;            // errno to answer INIT with, 0 on success
  std::string why;          // with an error: the sentence a person reads
  bool version_only = false;  // a newer kernel major: our version only, INIT comes again
  proto::init_out out{};
  std::size_t size = 0;     // bytes of `out` to send (older minors take less)
};

// Negotiates INIT. Calls fs.init(conn) in between, so the filesystem sees what
// the kernel offers and says what it wants; an error from init() becomes the
// INIT reply's error, which fails the mount (or refuses every access, with
// asynchronous INIT).
template <class Fs>
init_reply negotiate_init(Fs& fs, session& s, const proto::init_in& in) {
  namespace f = proto::init_flag;
  connection& conn = s.conn();
  init_reply reply;

  if (in.major > proto::kernel_major) {
    // A newer major: answer with ours only; the kernel retries INIT with it.
    reply.version_only = true;
    reply.out.major = proto::kernel_major;
    reply.out.minor = proto::kernel_minor;
    reply.size = sizeof reply.out;
    return reply;
  }
  if (in.major < proto::kernel_major || in.minor < oldest_supported_minor) {
    reply.error = EPROTO;
    reply.why = fmt::format("the kernel speaks FUSE {}.{}, fusexx needs 7.{} or newer", in.major, in.minor,
                            oldest_supported_minor);
    log::error("{}", reply.why);
    return reply;
  }

  std::uint64_t offered = in.flags;
  if (in.flags & f::init_ext) offered |= std::uint64_t{in.flags2} << 32;
  conn.set_offer(in.major, in.minor, offered);
  conn.want(default_wants<Fs>());
  const std::uint32_t page = static_cast<std::uint32_t>(connection::page_size());
  const std::uint32_t pages_limit = connection::kernel_max_pages_limit();
  if (conn.max_write == 0) conn.max_write = pages_limit * page;

  if constexpr (has_init<Fs>) {
    result<void> r;
    try {
      if constexpr (std::is_void_v<decltype(fs.init(conn))>) fs.init(conn);
      else r = fs.init(conn);
      if (!r) reply.why = fmt::format("init() failed: {}", r.error().message());
    } catch (const std::exception& e) {
      r = error(EIO);
      reply.why = fmt::format("init() threw: {}", e.what());
    } catch (...) {
      r = error(EIO);
      reply.why = "init() threw a non-standard exception";
    }
    if (!r) {
      log::debug("{}", reply.why);
      reply.error = to_errno(r.error());
      return reply;
    }
  }

  const std::uint64_t granted = offered & conn.wanted();
  conn.max_write = std::max<std::uint32_t>(conn.max_write, 4096);
  std::uint32_t max_pages = 32;  // the kernel's default when FUSE_MAX_PAGES is not granted
  if (granted & f::max_pages)
    max_pages = std::clamp<std::uint32_t>((conn.max_write + page - 1) / page, 1, pages_limit);

  proto::init_out& out = reply.out;
  out.major = proto::kernel_major;
  out.minor = proto::kernel_minor;
  out.max_readahead = std::min(conn.max_readahead, in.max_readahead);
  out.flags = static_cast<std::uint32_t>(granted);
  out.flags2 = static_cast<std::uint32_t>(granted >> 32);
  out.max_background = conn.max_background;
  out.congestion_threshold = conn.congestion_threshold;
  out.max_write = conn.max_write;
  out.time_gran = conn.time_gran;
  out.max_pages = static_cast<std::uint16_t>(max_pages);
  out.max_stack_depth = conn.max_stack_depth;
  out.request_timeout = conn.request_timeout;
  conn.max_readahead = out.max_readahead;
  conn.set_outcome(granted, max_pages);
  if (s.before_init_reply) {
    const std::uint64_t final_grant = s.before_init_reply(conn, granted) & granted;
    out.flags = static_cast<std::uint32_t>(final_grant);
    out.flags2 = static_cast<std::uint32_t>(final_grant >> 32);
    conn.set_outcome(final_grant, max_pages);
  }

  const std::uint32_t minor = std::min(in.minor, proto::kernel_minor);
  reply.size = minor < 5 ? proto::init_out_compat_size_v7_5
               : minor < 23 ? proto::init_out_compat_size_v7_22
                            : sizeof(proto::init_out);
  log::debug("INIT: kernel {}.{} offered {}; granted {}; max_write={} max_pages={} max_readahead={}", in.major,
             in.minor, proto::describe_init_flags(offered), proto::describe_init_flags(conn.granted()), out.max_write,
             max_pages, out.max_readahead);
  return reply;
}

}  // namespace detail
}  // namespace fusexx
