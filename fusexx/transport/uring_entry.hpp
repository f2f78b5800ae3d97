#pragma once
// One FUSE-over-io_uring entry as bytes (proto/uring.hpp): the request the
// kernel left in an entry's header area and payload buffer, decoded into what
// the dispatcher takes (detail::incoming); and a reply written back into the
// same two buffers, as the kernel reads it at COMMIT_AND_FETCH. Pure
// functions of the buffers, so the transport (transport/uring.hpp) is their
// only user at run time, and tests and the fuzz target
// (tests/fuzz/uring_entry_fuzz.cc) can drive them without a ring.
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>

#include "../detail/incoming.hpp"
#include "../proto/abi.hpp"

namespace fusexx::transport {

// The request's in_header and first argument, contiguous (the dispatcher
// reads them as one span; in the entry they lie in in_out and op_in, apart).
using entry_head = std::array<std::byte, sizeof(proto::in_header) + proto::op_in_size>;

// The request in an entry: the kernel puts in_header in in_out, the first
// argument in op_in and everything else (names, write data) at the start of
// the payload buffer (ring_ent_in_out.payload_sz bytes); in_header.len counts
// all of it. nullopt when those sizes do not add up (a payload larger than
// the buffer, a first argument larger than op_in, a len too short). Fills
// `head`, which the result's bytes point into; the payload and the scratch
// room for reply data (disjoint from the payload, 64-byte aligned) point into
// `payload`. `owner` is null: the entry's buffers stay reserved until its
// commit, so a handler that suspends takes nothing over.
inline std::optional<detail::incoming> decode_entry(const proto::uring_req_header& header,
                                                    std::span<std::byte> payload, entry_head& head,
                                                    detail::reply_sink sink) {
  proto::in_header h;
  std::memcpy(&h, header.in_out, sizeof h);
  const std::size_t payload_size = header.ring_ent_in_out.payload_sz;
  const std::size_t total = h.len;
  if (payload_size > payload.size() || total < sizeof h + payload_size ||
      total - sizeof h - payload_size > proto::op_in_size)
    return std::nullopt;
  const std::size_t arg0 = total - sizeof h - payload_size;
  std::memcpy(head.data(), &h, sizeof h);
  std::memcpy(head.data() + sizeof h, header.op_in, arg0);
  const std::size_t scratch_at = std::min(payload.size(), (payload_size + 63) & ~std::size_t{63});
  return detail::incoming{.bytes = std::span<const std::byte>(head.data(), sizeof h + arg0),
                          .scratch = payload.subspan(scratch_at),
                          .owner = nullptr,
                          .sink = sink,
                          .payload = std::span<const std::byte>(payload.data(), payload_size)};
}

// Writes a reply into the entry: iov[0] (the out_header) into in_out, the
// rest back to back at the start of the payload buffer (a handler that built
// its data in place, in the scratch room, has it moved down), and payload_sz
// to the data's length. With the entry unchanged: -EMSGSIZE when the data
// does not fit the payload buffer, -EINVAL when there is no out_header.
inline int encode_entry_reply(proto::uring_req_header& header, std::span<std::byte> payload, const iovec* iov,
                              int count) {
  if (count < 1 || iov[0].iov_len < sizeof(proto::out_header)) return -EINVAL;
  std::size_t total = 0;
  for (int i = 1; i < count; ++i) {
    if (iov[i].iov_len > payload.size() - total) return -EMSGSIZE;
    total += iov[i].iov_len;
  }
  std::memcpy(header.in_out, iov[0].iov_base, std::min(iov[0].iov_len, sizeof header.in_out));
  std::size_t at = 0;
  for (int i = 1; i < count; ++i) {
    // memmove: data built in the scratch room may overlap where it goes.
    if (iov[i].iov_base != payload.data() + at) std::memmove(payload.data() + at, iov[i].iov_base, iov[i].iov_len);
    at += iov[i].iov_len;
  }
  header.ring_ent_in_out.payload_sz = static_cast<std::uint32_t>(at);
  return 0;
}

}  // namespace fusexx::transport
