#pragma once
// The input format of the dispatch_stream fuzz target, shared by the target
// (which reads it) and make_corpus (which writes seeds in it):
//
//   u8 config                      bit 0: the filesystem that implements nothing (else memfs)
//                                  bit 1: the stream brings its own INIT (else one is made:)
//   [u8 minor index, u32 flags, u32 flags2, u32 max_readahead]   the made INIT
//   records: u16 length, u8 how, u8 split, then `length` bytes, delivered as one read()
//
// `how` steers what a fuzzer could not guess but the kernel guarantees, or
// what only a transport varies; `split` is where an io_uring-style delivery
// cuts the request (after the in_header and `split` more bytes).
#include <cstdint>
#include <cstring>
#include <vector>

namespace fusexx::fuzzing {

inline constexpr std::uint8_t config_nothing_fs = 1 << 0;
inline constexpr std::uint8_t config_own_init = 1 << 1;

inline constexpr std::uint8_t how_fix_len = 1 << 0;        // header len = bytes delivered (the kernel's way)
inline constexpr std::uint8_t how_split = 1 << 1;          // deliver in two segments, as io_uring does
inline constexpr std::uint8_t how_aim_interrupt = 1 << 2;  // INTERRUPT names the newest request still waiting
inline constexpr std::uint8_t how_known_node = 1 << 3;     // nodeid N: the Nth node replies handed out (mod count)
inline constexpr std::uint8_t how_known_fh = 1 << 4;       // first body word N: the Nth handle handed out (mod count)
inline constexpr std::uint8_t how_refuse = 1 << 5;         // the kernel refuses the reply (-ENOENT: interrupted)

// The INIT minors the made INIT picks from (by index).
inline constexpr std::uint32_t init_minors[] = {45, 44, 40, 36, 31, 28, 23, 12, 11, 5};

// Writes a stream (make_corpus, regression inputs written by hand).
struct stream_writer {
  std::vector<std::uint8_t> out;

  template <class T>
  stream_writer& put(const T& v) {
    auto p = reinterpret_cast<const std::uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
    return *this;
  }
  stream_writer& config(std::uint8_t c) { return put(c); }
  // The made INIT: the minor's index in init_minors, and what the kernel offers.
  stream_writer& init(std::uint8_t minor_index, std::uint32_t flags, std::uint32_t flags2,
                      std::uint32_t max_readahead) {
    return put(minor_index).put(flags).put(flags2).put(max_readahead);
  }
  template <class Bytes>
  stream_writer& record(const Bytes& request, std::uint8_t how, std::uint8_t split = 0) {
    put(static_cast<std::uint16_t>(request.size())).put(how).put(split);
    auto p = reinterpret_cast<const std::uint8_t*>(request.data());
    out.insert(out.end(), p, p + request.size());
    return *this;
  }
};

}  // namespace fusexx::fuzzing
