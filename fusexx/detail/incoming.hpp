#pragma once
// What passes between a transport and the dispatcher: one request as the
// transport hands it over, and what became of it. Transports depend on this
// header only, not on the dispatcher's type (request_handler erases it).
#include <cstdint>
#include <span>
#include <type_traits>

#include "../buffer.hpp"
#include "../codec.hpp"

namespace fusexx::detail {

struct incoming {
  std::span<const std::byte> bytes = {};    // what the kernel delivered: in_header and arguments
  std::span<std::byte> scratch = {};        // room for reply data (READ, READDIR), disjoint from the input
  buffer* owner = nullptr;                  // the buffer behind them; taken over if a handler suspends
  reply_sink sink = {};
  std::span<const std::byte> payload = {};  // io_uring: the arguments after the first, in the payload buffer
};

// What the dispatcher did with a request.
enum class disposition : std::uint8_t {
  replied,    // answered (or refused) before handle() returned
  no_reply,   // the kernel expects no reply (FORGET, BATCH_FORGET, INTERRUPT, NOTIFY_REPLY, no header)
  suspended,  // a coroutine handler is waiting; its reply comes later, from whichever thread resumes it
};

// The dispatcher as a transport sees it: one call per request.
class request_handler {
 public:
  request_handler() = default;
  template <class D>
    requires(!std::is_same_v<D, request_handler>)
  explicit request_handler(D& d) noexcept
      : self_(&d), call_([](void* self, incoming& in) { return static_cast<D*>(self)->handle(in); }) {}
  disposition operator()(incoming& in) const { return call_(self_, in); }

 private:
  void* self_ = nullptr;
  disposition (*call_)(void*, incoming&) = nullptr;
};

}  // namespace fusexx::detail
