#pragma once
// The input formats of the fuzz targets besides dispatch_stream (whose is
// stream.hpp): the bits and codes each target reads (it describes its format
// in its header comment) and make_corpus writes seeds in. One namespace per
// target.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <fusexx/restart/snapshot.hpp>

namespace fusexx::fuzzing {

namespace notify_reply_format {
inline constexpr std::uint8_t config_split = 1 << 0;  // NOTIFY_REPLY's data in io_uring's payload segment
enum action : std::uint8_t { ask, answer, wait, detach, interrupt, action_count };
inline constexpr std::uint8_t how_fix_len = 1 << 0;   // in_header.len = the bytes delivered
inline constexpr std::uint8_t how_aim = 1 << 1;       // the unique names a RETRIEVE that was sent (by index)
inline constexpr std::uint8_t how_fix_size = 1 << 2;  // notify_retrieve_in.size = the data's length
inline constexpr std::uint8_t how_ext = 1 << 3;       // in_header.total_extlen from the input
}  // namespace notify_reply_format

namespace uring_entry_format {
inline constexpr std::uint8_t config_nothing = 1 << 0;  // the filesystem that implements nothing (else memfs)
// Bits 1-2 of the config: the payload buffer, as uring.hpp sizes it: max(8192, max_write, max_pages * 4096).
inline constexpr std::size_t payload_sizes[] = {8192, 16384, 65536, 135168};
inline constexpr std::uint8_t how_fix_sizes = 1 << 0;   // len and payload_sz as the kernel sets them
inline constexpr std::uint8_t how_known_node = 1 << 1;  // nodeid N: the Nth node replies handed out
inline constexpr std::uint8_t how_known_fh = 1 << 2;    // op_in's first word N: the Nth handle
}  // namespace uring_entry_format

namespace fd_passing_format {
inline constexpr int socket_types[] = {SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM};  // config bits 0-1
inline constexpr std::uint8_t config_receive_fd = 1 << 2;     // receive_fd, else receive_with_fds
inline constexpr std::uint8_t config_close_sender = 1 << 3;   // the sender's end closes before the reads
}  // namespace fd_passing_format

namespace snapshot_format {
enum mode : std::uint8_t { server_order, passthrough_part, handover_message, session_part };  // config bits 0-1
inline constexpr std::uint8_t config_make_header = 1 << 2;  // the bytes are the payload; the header is made
inline constexpr std::uint8_t config_memfd = 1 << 3;        // read through a memfd
inline constexpr std::uint8_t config_sealed = 1 << 4;       // a sealed one
inline constexpr std::uint8_t config_aim_root = 1 << 5;     // passthrough: the root is this source's
}  // namespace snapshot_format

// A whole snapshot of `payload`: the header snapshot_writer writes, then it
// (the snapshot and control_request targets make the header around fuzzed
// payloads, so that the checks behind it are reached).
inline std::vector<std::byte> sealed(std::span<const std::byte> payload) {
  namespace d = fusexx::detail;
  std::vector<std::byte> out(d::snapshot_header_size);
  std::memcpy(out.data(), d::snapshot_magic, sizeof d::snapshot_magic);
  d::put_le<std::uint32_t>(out.data() + 8, fusexx::snapshot_format_version);
  d::put_le<std::uint32_t>(out.data() + 12, d::snapshot_header_size);
  d::put_le<std::uint64_t>(out.data() + 16, payload.size());
  d::put_le<std::uint32_t>(out.data() + 24, d::crc32c(payload));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

namespace control_request_format {
enum mode : std::uint8_t { json_text, answer_values, request };
}  // namespace control_request_format

}  // namespace fusexx::fuzzing
