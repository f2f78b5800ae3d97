#pragma once
// A failure that reaches a person: the errno and one sentence saying what
// went wrong and, where there is one, what to do about it.
#include <expected>
#include <string>
#include <system_error>

#include <fmt/format.h>

namespace fusexx {

struct failure {
  std::error_code code;
  std::string message;
};

template <class T>
using outcome = std::expected<T, failure>;

template <class... Args>
std::unexpected<failure> fail(int errnum, fmt::format_string<Args...> f, Args&&... args) {
  return std::unexpected(failure{std::error_code(errnum, std::system_category()),
                                 fmt::format(f, std::forward<Args>(args)...)});
}

}  // namespace fusexx
