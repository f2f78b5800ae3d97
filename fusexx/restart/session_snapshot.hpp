#pragma once
// The framework's part of a snapshot: the session (fusexx/session.hpp) as
// the kernel sees it — negotiated INIT, the nodes it holds with their lookup
// counts, open handles, backing ids — and how the mount was made, so the
// successor can also unmount it one day. The filesystem's own part follows
// (restartable.hpp). Field by field, in this order; docs/restart.md has the
// layout.
#include <cstdint>
#include <string>
#include <optional>

#include "../mount/mount.hpp"
#include "../session.hpp"
#include "../transport/entry_region.hpp"
#include "snapshot.hpp"

namespace fusexx {

// What a successor needs to know about the mount it continues.
struct mount_description {
  std::string mountpoint;
  mount_method method = mount_method::new_api;
  std::string helper;  // the fusermount3 that mounted (it must unmount too)
  bool sync_init = false;
};

inline void write_session(snapshot_writer& w, const session_description& d, const mount_description& m) {
  w.u32(d.proto_major);
  w.u32(d.proto_minor);
  w.u64(d.offered);
  w.u64(d.granted);
  w.u32(d.max_write);
  w.u32(d.max_readahead);
  w.u32(d.max_pages);
  w.u32(d.time_gran);
  w.u32(d.max_stack_depth);
  w.u16(d.max_background);
  w.u16(d.congestion_threshold);
  w.u16(d.request_timeout);
  w.boolean(d.over_io_uring);
  w.u64(d.nodes.size());
  for (const auto& n : d.nodes) {
    w.u64(n.node);
    w.u64(n.generation);
    w.u64(n.lookups);
  }
  w.u64(d.handles.size());
  for (const auto& h : d.handles) {
    w.u64(h.node);
    w.u64(h.fh);
    w.boolean(h.directory);
    w.u32(static_cast<std::uint32_t>(h.flags));
    w.u64(h.opens);
  }
  w.u64(d.backing_ids.size());
  for (backing_id id : d.backing_ids) w.u32(static_cast<std::uint32_t>(id));
  w.str(m.mountpoint);
  w.u8(static_cast<std::uint8_t>(m.method));
  w.str(m.helper);
  w.boolean(m.sync_init);
}

// False when the snapshot is short or a value is out of range.
inline bool read_session(snapshot_reader& r, session_description& d, mount_description& m) {
  std::uint64_t n = 0;
  std::uint8_t method = 0;
  bool ok = r.u32(d.proto_major) && r.u32(d.proto_minor) && r.u64(d.offered) && r.u64(d.granted) &&
            r.u32(d.max_write) && r.u32(d.max_readahead) && r.u32(d.max_pages) && r.u32(d.time_gran) &&
            r.u32(d.max_stack_depth) && r.u16(d.max_background) && r.u16(d.congestion_threshold) &&
            r.u16(d.request_timeout) && r.boolean(d.over_io_uring) && r.count(n, 24);
  for (std::uint64_t i = 0; ok && i < n; ++i) {
    node_record rec;
    ok = r.u64(rec.node) && r.u64(rec.generation) && r.u64(rec.lookups);
    d.nodes.push_back(rec);
  }
  ok = ok && r.count(n, 29);
  for (std::uint64_t i = 0; ok && i < n; ++i) {
    handle_record h;
    std::uint32_t flags = 0;
    ok = r.u64(h.node) && r.u64(h.fh) && r.boolean(h.directory) && r.u32(flags) && r.u64(h.opens);
    h.flags = static_cast<int>(flags);
    d.handles.push_back(h);
  }
  ok = ok && r.count(n, 4);
  for (std::uint64_t i = 0; ok && i < n; ++i) {
    std::uint32_t id = 0;
    ok = r.u32(id);
    d.backing_ids.push_back(static_cast<backing_id>(id));
  }
  ok = ok && r.str(m.mountpoint) && r.u8(method) && method <= static_cast<std::uint8_t>(mount_method::fusermount) &&
       r.str(m.helper) && r.boolean(m.sync_init);
  m.method = static_cast<mount_method>(method);
  return ok && d.proto_major != 0 && d.max_pages != 0;
}

// The io_uring entries' layout, when the connection is served through
// rings (the memfd itself goes beside the snapshot).
inline void write_entry_layout(snapshot_writer& w, const std::optional<transport::entry_layout>& l) {
  w.boolean(l.has_value());
  if (!l) return;
  w.u64(l->base);
  w.u64(l->stride);
  w.u64(l->payload);
  w.u32(l->queues);
  w.u32(l->depth);
}
inline bool read_entry_layout(snapshot_reader& r, std::optional<transport::entry_layout>& l) {
  bool present = false;
  if (!r.boolean(present)) return false;
  if (!present) {
    l.reset();
    return true;
  }
  transport::entry_layout v;
  if (!r.u64(v.base) || !r.u64(v.stride) || !r.u64(v.payload) || !r.u32(v.queues) || !r.u32(v.depth)) return false;
  l = v;
  return true;
}

}  // namespace fusexx
