#pragma once
// The credentials a passthrough server acts with. It runs as root, but what it
// does on a caller's behalf should look as if the caller had done it.
#include <linux/capability.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fusexx/request.hpp>

namespace passthrough {

// Creates objects with the caller's fsuid/fsgid when the server runs as
// root, so they get the caller's owner (and a setgid directory's group).
// setfsuid is per thread; creating handlers never suspend while it is set.
class as_caller {
 public:
  explicit as_caller(const fusexx::request& r) {
    if ((r.uid() == 0 && r.gid() == 0) || ::geteuid() != 0) return;
    old_gid_ = ::setfsgid(r.gid());
    old_uid_ = ::setfsuid(r.uid());
    active_ = true;
  }
  ~as_caller() {
    if (!active_) return;
    ::setfsuid(old_uid_);
    ::setfsgid(old_gid_);
  }
  as_caller(const as_caller&) = delete;
  as_caller& operator=(const as_caller&) = delete;

 private:
  bool active_ = false;
  int old_uid_ = 0, old_gid_ = 0;
};

// Takes CAP_FSETID out of the calling thread's effective set for the scope
// (capabilities are per thread; it stays permitted, so it comes back).
// A backing file registered for kernel passthrough keeps the credentials of
// the thread that registered it, and the kernel writes through it with them:
// without CAP_FSETID those writes clear suid/sgid as an unprivileged writer's
// would, instead of keeping them as root's do.
class without_fsetid {
 public:
  without_fsetid() {
    header_.version = _LINUX_CAPABILITY_VERSION_3;
    header_.pid = 0;
    if (::syscall(SYS_capget, &header_, saved_) != 0 || !(saved_[0].effective & (1u << CAP_FSETID))) return;
    __user_cap_data_struct lowered[2] = {saved_[0], saved_[1]};
    lowered[0].effective &= ~(1u << CAP_FSETID);
    active_ = ::syscall(SYS_capset, &header_, lowered) == 0;
  }
  ~without_fsetid() {
    if (active_) ::syscall(SYS_capset, &header_, saved_);
  }
  without_fsetid(const without_fsetid&) = delete;
  without_fsetid& operator=(const without_fsetid&) = delete;

 private:
  __user_cap_header_struct header_{};
  __user_cap_data_struct saved_[2]{};
  bool active_ = false;
};

}  // namespace passthrough
