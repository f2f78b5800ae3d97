#pragma once
// The context every handler receives: who asked (uid, gid, pid), which request
// it is, whether the kernel has since interrupted it, and the session (the
// connection) it came through.
#include <sys/types.h>

#include <cstdint>

#include "proto/abi.hpp"
#include "session.hpp"

namespace fusexx {

class request {
 public:
  request() = default;
  request(const proto::in_header& h, fusexx::session* s) noexcept
      : unique_(h.unique), node_(h.nodeid), uid_(h.uid), gid_(h.gid), pid_(h.pid),
        opcode_(static_cast<proto::opcode>(h.opcode)), session_(s) {}

  std::uint64_t unique() const noexcept { return unique_; }
  std::uint64_t node() const noexcept { return node_; }
  uid_t uid() const noexcept { return uid_; }
  gid_t gid() const noexcept { return gid_; }
  pid_t pid() const noexcept { return pid_; }
  proto::opcode opcode() const noexcept { return opcode_; }
  // True when the kernel asked to abandon this request (the caller got a
  // signal), or the server is stopping. A long handler may check this and
  // answer EINTR early.
  bool interrupted() const noexcept { return session_ && session_->interrupts().contains(unique_); }
  // True when the kernel resent this request to a new server after a restart.
  bool resent() const noexcept { return (unique_ & proto::unique_resend_bit) != 0; }
  // OPEN and CREATE with O_TRUNC under handle_killpriv_v2: the caller lacks
  // CAP_FSETID, so the filesystem must clear suid (and sgid, if the group may
  // execute) as the truncation would natively. WRITE and SETATTR carry the
  // same request in their own flags (write_flag::kill_suidgid, kill_suid).
  bool kill_suidgid() const noexcept { return kill_suidgid_; }
  void set_kill_suidgid(bool kill) noexcept { kill_suidgid_ = kill; }

  // The connection this request came through. Every request a server hands
  // to a handler has one.
  fusexx::session& session() const noexcept { return *session_; }
  // Its notifications and backing files (fusexx/notify.hpp, backing.hpp).
  notifier& notify() const noexcept { return session_->notify(); }
  backing_files& backing() const noexcept { return session_->backing(); }

 private:
  std::uint64_t unique_ = 0;
  std::uint64_t node_ = 0;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  pid_t pid_ = 0;
  proto::opcode opcode_{};
  fusexx::session* session_ = nullptr;
  bool kill_suidgid_ = false;
};

}  // namespace fusexx
