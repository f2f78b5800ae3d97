#pragma once
// What the fuzz targets that play the kernel share: reading back a message
// the server wrote (one writev's iovecs, out_header first), and remembering
// the node ids and file handles its replies hand out, so that later requests
// can name real ones instead of ids a fuzzer would almost never guess.
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <fusexx/proto/abi.hpp>
#include <fusexx/types.hpp>

#include "tests/fuzz/fuzz.hpp"

namespace fusexx::fuzzing {

// The requests the kernel expects no reply to.
inline bool needs_no_reply(std::uint32_t op) {
  using proto::opcode;
  switch (static_cast<opcode>(op)) {
    case opcode::forget:
    case opcode::batch_forget:
    case opcode::interrupt:
    case opcode::notify_reply: return true;
    default: return false;
  }
}

// One message as the kernel reads it: the iovecs back to back, checked to
// start with an out_header whose len is the message's.
struct message {
  proto::out_header header{};
  std::vector<std::byte> bytes;  // all of it, header included

  std::span<const std::byte> payload() const { return std::span(bytes).subspan(sizeof header); }
};

inline message read_message(const iovec* iov, int count) {
  message m;
  for (int i = 0; i < count; ++i) {
    auto p = static_cast<const std::byte*>(iov[i].iov_base);
    m.bytes.insert(m.bytes.end(), p, p + iov[i].iov_len);
  }
  FUZZ_CHECK(m.bytes.size() >= sizeof m.header, "a {}-byte message, shorter than out_header", m.bytes.size());
  std::memcpy(&m.header, m.bytes.data(), sizeof m.header);
  FUZZ_CHECK(m.header.len == m.bytes.size(), "out_header.len {} for a {}-byte message (unique {:#x})",
             m.header.len, m.bytes.size(), m.header.unique);
  return m;
}

// Node ids and handles seen in successful replies (at most 64 of each).
struct known_ids {
  std::vector<std::uint64_t> nodes{fusexx::root_ino};
  std::vector<std::uint64_t> handles{0};

  void learn(std::uint32_t op, std::span<const std::byte> payload) {
    using proto::opcode;
    const auto o = opcode(op);
    if (payload.size() >= sizeof(proto::entry_out) &&
        (o == opcode::lookup || o == opcode::mknod || o == opcode::mkdir || o == opcode::symlink ||
         o == opcode::link || o == opcode::create)) {
      proto::entry_out e;
      std::memcpy(&e, payload.data(), sizeof e);
      if (e.nodeid != 0) add(nodes, e.nodeid);
      if (o == opcode::create && payload.size() >= sizeof e + sizeof(proto::open_out)) {
        proto::open_out f;
        std::memcpy(&f, payload.data() + sizeof e, sizeof f);
        add(handles, f.fh);
      }
    } else if ((o == opcode::open || o == opcode::opendir) && payload.size() >= sizeof(proto::open_out)) {
      proto::open_out f;
      std::memcpy(&f, payload.data(), sizeof f);
      add(handles, f.fh);
    }
  }

  // The one of those `pick` chooses.
  std::uint64_t node(std::uint64_t pick) const { return nodes[pick % nodes.size()]; }
  std::uint64_t handle(std::uint64_t pick) const { return handles[pick % handles.size()]; }

 private:
  static void add(std::vector<std::uint64_t>& to, std::uint64_t id) {
    if (to.size() < 64) to.push_back(id);
  }
};

}  // namespace fusexx::fuzzing
