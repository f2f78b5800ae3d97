// fusexx/proto/uring.hpp - FUSE-over-io_uring ABI (protocol 7.42+, as of 7.45).
//
// Flow: after INIT negotiated init_flag::over_io_uring, every queue (one per
// *possible* CPU, qid = cpu) gets entries registered with an
// IORING_OP_URING_CMD SQE on a ring created with IORING_SETUP_SQE128:
//   sqe->fd = /dev/fuse fd, sqe->cmd_op = uring_cmd::register_,
//   sqe->cmd (80-byte area at offset 48) = uring_cmd_req{.qid = q},
//   sqe->addr = iovec[2] {header buffer >= sizeof(uring_req_header),
//                         payload buffer >= max(8192, max_write, max_pages*4096)},
//   sqe->len = 2.
// A request completes the CQE with the header buffer holding in_header in
// in_out, the op's first argument struct in op_in, and everything else
// (names, write data) in the payload. The server answers in the same
// buffers (out_header in in_out, data in the payload, payload_sz = data
// length) and submits uring_cmd::commit_and_fetch with
// uring_cmd_req{.commit_id = ring_ent_in_out.commit_id, .qid = q}.
// INIT, FORGET/BATCH_FORGET, INTERRUPT and all notifications stay on the
// /dev/fuse fd.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fusexx/proto/structs.hpp"

namespace fusexx::proto {

// Size of uring_req_header::in_out (room for in_header / out_header).
inline constexpr std::size_t in_out_header_size = 128;
// Size of uring_req_header::op_in (room for the op's first argument struct).
inline constexpr std::size_t op_in_size = 128;

// Per-entry bookkeeping, last part of uring_req_header.
struct uring_ent_in_out {
    std::uint64_t flags{};
    std::uint64_t commit_id{};  // quote in uring_cmd_req::commit_id when replying
    std::uint32_t payload_sz{}; // request: bytes in the payload; reply: bytes written there
    std::uint32_t padding{};    // (7.46 reuses this as a bufpool offset; unused in 7.45)
    std::uint64_t reserved{};
};
static_assert(sizeof(uring_ent_in_out) == 32);
static_assert(offsetof(uring_ent_in_out, payload_sz) == 16);

// The header buffer of a ring entry (iovec[0] of REGISTER). The kernel rejects
// a smaller header buffer with EINVAL ("Invalid header len").
struct uring_req_header {
    std::uint8_t in_out[in_out_header_size]{}; // in_header (request) / out_header (reply)
    std::uint8_t op_in[op_in_size]{};          // per-opcode argument struct
    uring_ent_in_out ring_ent_in_out{};
};
static_assert(sizeof(uring_req_header) == 288); // measured on 6.18
static_assert(offsetof(uring_req_header, op_in) == 128);
static_assert(offsetof(uring_req_header, ring_ent_in_out) == 256);
static_assert(sizeof(in_header) <= in_out_header_size && sizeof(out_header) <= in_out_header_size);
static_assert(sizeof(setattr_in) <= op_in_size && sizeof(copy_file_range_in) <= op_in_size);

// sqe->cmd_op of the io_uring command.
enum class uring_cmd : std::uint32_t {
    invalid = 0,
    register_ = 1,        // FUSE_IO_URING_CMD_REGISTER: register an entry and wait for a request
    commit_and_fetch = 2, // FUSE_IO_URING_CMD_COMMIT_AND_FETCH: reply, then wait for the next
};

// Lives in the SQE's 80-byte command area (sqe->cmd, needs IORING_SETUP_SQE128).
struct uring_cmd_req {
    std::uint64_t flags{};     // 0 in 7.45
    std::uint64_t commit_id{}; // commit_and_fetch: the entry's ring_ent_in_out.commit_id
    std::uint16_t qid{};       // queue index = CPU number
    std::uint8_t padding[6]{};
};
static_assert(sizeof(uring_cmd_req) == 24);
static_assert(offsetof(uring_cmd_req, qid) == 16);
static_assert(sizeof(uring_cmd_req) <= 80);

static_assert(wire_layout_v<uring_ent_in_out, uring_req_header, uring_cmd_req>);

} // namespace fusexx::proto
