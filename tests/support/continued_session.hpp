#pragma once
// A session that continues a connection whose INIT another process answered
// (as a successor restores it): FUSE over io_uring, the kernel's largest
// requests. For tests whose processes join a live connection's rings.
#include <fusexx/fusexx.hpp>

namespace fusexx::testing {

inline void continue_uring_session(fusexx::session& s) {
  session_description d;
  d.proto_major = 7;
  d.proto_minor = 45;
  d.granted = proto::init_flag::over_io_uring | proto::init_flag::max_pages | proto::init_flag::init_ext;
  d.max_pages = connection::kernel_max_pages_limit();
  d.max_write = static_cast<std::uint32_t>(d.max_pages * connection::page_size());
  s.restore(d);
}

}  // namespace fusexx::testing
