#pragma once
// fusexx's own version (-V, and the control socket's status answer).
#include <string_view>

namespace fusexx {

inline constexpr std::string_view version = "0.1.0";

}  // namespace fusexx
