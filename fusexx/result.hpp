#pragma once
// Errors in fusexx are errno values carried in std::error_code, and fallible
// results are std::expected. Nothing throws across the kernel boundary: the
// dispatcher turns every failure into an errno reply.
#include <cerrno>
#include <expected>
#include <system_error>

namespace fusexx {

template <class T>
using result = std::expected<T, std::error_code>;

// `return fusexx::error(ENOENT);` from any handler, whatever its result type.
inline std::unexpected<std::error_code> error(int errnum) {
  return std::unexpected(std::error_code(errnum, std::system_category()));
}
inline std::unexpected<std::error_code> error(std::error_code ec) { return std::unexpected(ec); }

// The errno of the calling thread as an error, for wrapping failed syscalls.
inline std::unexpected<std::error_code> last_error() { return error(errno); }

// The errno a reply carries for an error. Codes from other categories
// (e.g. a library's own enum) have no errno meaning, so they become EIO.
inline int to_errno(const std::error_code& ec) {
  if (!ec) return 0;
  if (ec.category() == std::system_category() || ec.category() == std::generic_category())
    return ec.value() > 0 ? ec.value() : EIO;
  return EIO;
}

}  // namespace fusexx
