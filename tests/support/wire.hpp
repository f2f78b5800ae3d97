#pragma once
// Test support: requests shaped exactly as the kernel sends them, a reply
// sink that records what the dispatcher answered, and a harness that feeds
// one to the other. No kernel involved.
#include <sys/uio.h>

#include <cstring>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include <fusexx/buffer.hpp>
#include <fusexx/dispatch.hpp>
#include <fusexx/proto/abi.hpp>

namespace fusexx::testing {

// The body of a request, built front to back.
struct wire {
  std::vector<std::byte> bytes;
  template <class T>
  wire& add(const T& v) {
    auto p = reinterpret_cast<const std::byte*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof v);
    return *this;
  }
  wire& name(std::string_view s) {
    auto p = reinterpret_cast<const std::byte*>(s.data());
    bytes.insert(bytes.end(), p, p + s.size());
    bytes.push_back(std::byte{0});
    return *this;
  }
  wire& raw(std::string_view s) {
    auto p = reinterpret_cast<const std::byte*>(s.data());
    bytes.insert(bytes.end(), p, p + s.size());
    return *this;
  }
};

inline std::vector<std::byte> make_request(proto::opcode op, std::uint64_t unique, std::uint64_t node,
                                           const wire& body = {}) {
  proto::in_header h{};
  h.len = static_cast<std::uint32_t>(sizeof h + body.bytes.size());
  h.opcode = static_cast<std::uint32_t>(op);
  h.unique = unique;
  h.nodeid = node;
  h.uid = 1000;
  h.gid = 1000;
  h.pid = 4242;
  std::vector<std::byte> out(sizeof h);
  std::memcpy(out.data(), &h, sizeof h);
  out.insert(out.end(), body.bytes.begin(), body.bytes.end());
  return out;
}

// INIT as the kernel on the project's machine sends it.
inline std::vector<std::byte> kernel_init(std::uint32_t major = 7, std::uint32_t minor = 45) {
  proto::init_in in{};
  in.major = major;
  in.minor = minor;
  in.max_readahead = 131072;
  in.flags = 0x73fffffb;
  in.flags2 = 0x000007fd;
  return make_request(proto::opcode::init, 2, 0, wire{}.add(in));
}

struct reply {
  proto::out_header header{};
  std::vector<std::byte> payload;

  int error() const { return -header.error; }
  template <class T>
  T as() const {
    T v{};
    std::memcpy(&v, payload.data(), std::min(sizeof v, payload.size()));
    return v;
  }
  std::string_view text() const { return {reinterpret_cast<const char*>(payload.data()), payload.size()}; }
};

// Records every reply; safe to send to from any thread.
struct recorder {
  std::mutex mutex;
  std::vector<reply> replies;

  static int send(void* self, const iovec* iov, int count) {
    std::vector<std::byte> all;
    for (int i = 0; i < count; ++i) {
      auto p = static_cast<const std::byte*>(iov[i].iov_base);
      all.insert(all.end(), p, p + iov[i].iov_len);
    }
    reply r;
    std::memcpy(&r.header, all.data(), sizeof r.header);
    r.payload.assign(all.begin() + sizeof r.header, all.end());
    auto* rec = static_cast<recorder*>(self);
    std::lock_guard lock(rec->mutex);
    rec->replies.push_back(std::move(r));
    return 0;
  }
  detail::reply_sink sink() { return detail::reply_sink{this, &recorder::send}; }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return replies.size();
  }
  reply last() {
    std::lock_guard lock(mutex);
    return replies.back();
  }
};

// A dispatcher over Fs, fed one request at a time the way a transport would.
template <class Fs>
struct harness {
  Fs fs;
  fusexx::session state;
  detail::dispatcher<Fs> d{fs, state};
  recorder rec;
  buffer buf{64 * 1024};

  // Feeds exactly `bytes` (however malformed); returns the replies it caused.
  std::size_t feed(const std::vector<std::byte>& bytes) {
    if (!buf) buf = buffer(64 * 1024);
    std::memcpy(buf.data(), bytes.data(), bytes.size());
    const std::size_t scratch_at = (bytes.size() + 63) & ~std::size_t{63};
    const std::size_t before = rec.size();
    detail::incoming in{.bytes = std::span<const std::byte>(buf.data(), bytes.size()),
                .scratch = buf.span().subspan(scratch_at),
                .owner = &buf,
                .sink = rec.sink()};
    d.handle(in);
    return rec.size() - before;
  }
  reply call(proto::opcode op, std::uint64_t node, const wire& body = {}) {
    static std::uint64_t unique = 100;
    unique += 2;
    feed(make_request(op, unique, node, body));
    return rec.last();
  }

  // Answers INIT the way the kernel on the project's machine offers it.
  reply init(std::uint32_t major = 7, std::uint32_t minor = 45) {
    feed(kernel_init(major, minor));
    return rec.last();
  }
};

}  // namespace fusexx::testing
