#pragma once
// The nodes the kernel holds, each with the number of lookups it was given
// (every accepted entry reply counts one) less those it gave back (FORGET).
// This is the part of a connection a successor must know to continue it: the
// kernel keeps using these node ids, and their FORGETs count lookups the
// predecessor answered.
#include <atomic>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "../types.hpp"
#include "sharded.hpp"

namespace fusexx {

// One node as the kernel holds it.
struct node_record {
  ino node = 0;
  std::uint64_t generation = 0;
  std::uint64_t lookups = 0;
};

namespace detail {

class node_table {
 public:
  void looked_up(ino node, std::uint64_t generation, std::uint64_t count = 1) {
    if (node == 0 || count == 0) return;
    nodes_.with(node, [&](auto& m) {
      auto& r = m[node];
      r.generation = generation;
      add_count(r.lookups, count);
    });
  }

  // The kernel gave back `count` lookups. Returns false, and counts a
  // mismatch, when it gave back more than it was given here.
  bool forgot(ino node, std::uint64_t count) {
    const bool ok = nodes_.with(node, [&](auto& m) {
      auto it = m.find(node);
      if (it == m.end()) return false;
      if (it->second.lookups < count) {
        m.erase(it);
        return false;
      }
      if ((it->second.lookups -= count) == 0) m.erase(it);
      return true;
    });
    if (!ok) mismatches_.fetch_add(1, std::memory_order_relaxed);
    return ok;
  }

  std::uint64_t lookups(ino node) const {
    return nodes_.with(node, [&](const auto& m) {
      auto it = m.find(node);
      return it == m.end() ? std::uint64_t{0} : it->second.lookups;
    });
  }
  // Nodes the kernel holds.
  std::size_t size() const {
    std::size_t n = 0;
    nodes_.each([&](const auto& m) { n += m.size(); });
    return n;
  }
  // FORGETs for more lookups than were counted (a filesystem answered
  // entries some other way, or the kernel and we disagree).
  std::uint64_t mismatches() const { return mismatches_.load(std::memory_order_relaxed); }
  std::vector<node_record> snapshot() const {
    std::vector<node_record> out;
    nodes_.each([&](const auto& m) {
      for (const auto& [node, r] : m) out.push_back({node, r.generation, r.lookups});
    });
    return out;
  }
  // The connection is over: the kernel holds nothing any more.
  void clear() {
    nodes_.each([](auto& m) { m.clear(); });
  }

 private:
  struct record {
    std::uint64_t generation = 0;
    std::uint64_t lookups = 0;
  };
  sharded<std::unordered_map<ino, record>> nodes_;
  std::atomic<std::uint64_t> mismatches_{0};
};

}  // namespace detail
}  // namespace fusexx
