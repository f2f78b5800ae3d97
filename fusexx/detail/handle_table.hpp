#pragma once
// The open files and directories the kernel holds: every accepted OPEN,
// OPENDIR, CREATE or TMPFILE reply adds one, RELEASE/RELEASEDIR takes it
// away. The kernel keeps sending these handle values (READ, WRITE, FLUSH,
// RELEASE) for as long as the file is open, whoever serves the connection.
// Keyed by node and handle, because filesystems may hand out one value (often
// 0) for many opens.
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "../types.hpp"
#include "sharded.hpp"

namespace fusexx {

// One open file or directory as the kernel holds it.
struct handle_record {
  ino node = 0;
  fhandle fh = 0;
  bool directory = false;
  int flags = 0;              // the open(2) flags of the latest open
  std::uint64_t opens = 0;    // opens not yet released with this node and handle
};

namespace detail {

class handle_table {
 public:
  // `count` opens at once: a successor restores the counts a snapshot holds
  // in one step, not one by one (a corrupt count of 2^63 would never end;
  // found by tests/fuzz/snapshot).
  void opened(ino node, fhandle fh, bool directory, int flags, std::uint64_t count = 1) {
    if (count == 0) return;
    handles_.with(node, [&](auto& m) {
      auto& r = m[key{node, fh, directory}];
      r.flags = flags;
      add_count(r.opens, count);
    });
  }
  // Returns false when no such open was counted.
  bool released(ino node, fhandle fh, bool directory) {
    return handles_.with(node, [&](auto& m) {
      auto it = m.find(key{node, fh, directory});
      if (it == m.end()) return false;
      if (--it->second.opens == 0) m.erase(it);
      return true;
    });
  }
  // Opens not yet released.
  std::size_t size() const {
    std::size_t n = 0;
    handles_.each([&](const auto& m) {
      for (const auto& [k, r] : m) n += r.opens;
    });
    return n;
  }
  std::vector<handle_record> snapshot() const {
    std::vector<handle_record> out;
    handles_.each([&](const auto& m) {
      for (const auto& [k, r] : m) out.push_back({k.node, k.fh, k.directory, r.flags, r.opens});
    });
    return out;
  }
  void clear() {
    handles_.each([](auto& m) { m.clear(); });
  }

 private:
  struct key {
    ino node;
    fhandle fh;
    bool directory;
    bool operator==(const key&) const = default;
  };
  struct key_hash {
    std::size_t operator()(const key& k) const noexcept {
      return std::hash<std::uint64_t>{}(k.node * 0x9e3779b97f4a7c15ull ^ k.fh) ^ (k.directory ? 1 : 0);
    }
  };
  struct record {
    int flags = 0;
    std::uint64_t opens = 0;
  };
  sharded<std::unordered_map<key, record, key_hash>> handles_;
};

}  // namespace detail
}  // namespace fusexx
