#pragma once
// Test support: a filesystem served in-process on a fresh temporary
// directory, unmounted and removed when the test ends, and small helpers for
// checking syscalls.
#include <cerrno>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <fusexx/server.hpp>

#include "tests/support/process.hpp"

namespace fusexx::testing {

// How many requests of `op` a session has received, from its statistics
// (on unless server_options::stats is off). Each serving thread writes its
// own shard, so the handlers count nothing themselves.
inline std::uint64_t received(const session& s, proto::opcode op) {
  for (const auto& o : s.stats().snapshot().ops)
    if (o.opcode == static_cast<std::uint32_t>(op)) return o.count;
  return 0;
}

template <filesystem Fs>
class mounted {
 public:
  using configure_fn = std::function<void(Fs&, server_options&)>;

  // `configure` may set the filesystem's own options and the server's
  // before the mount happens.
  explicit mounted(const configure_fn& configure = {}) {
    server_options o;
    o.transport = transport_from_env();
    o.mount.mountpoint = dir_.path();
    o.mount.fsname = "fusexx-test";
    o.mount.subtype = "test";
    if (configure) configure(fs, o);
    server_.emplace(fs, o);
    if (auto r = server_->start(); !r) error_ = r.error().message;
  }
  ~mounted() { stop(); }
  mounted(const mounted&) = delete;
  mounted& operator=(const mounted&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  // The mountpoint, or a path below it.
  std::string path(std::string_view relative = {}) const {
    return relative.empty() ? dir_.path() : dir_.path() + "/" + std::string(relative);
  }
  server<Fs>& srv() { return *server_; }
  void stop() {
    if (server_) server_->stop();
  }

 private:
  temp_dir dir_;  // first: it outlives the server that mounts on it

 public:
  Fs fs;

 private:
  std::optional<server<Fs>> server_;
  std::string error_;
};

// 0 when a syscall succeeded (returned >= 0), else the errno it set.
inline int err(long rc) { return rc < 0 ? errno : 0; }

}  // namespace fusexx::testing
