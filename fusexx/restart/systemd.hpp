#pragma once
// The service manager's side of a restart, spoken directly (no libsystemd):
// the sd_notify datagram protocol, for the file descriptor store, and the
// socket-activation variables through which a new start gets the stored fds
// back. docs/restart.md, "The systemd way", has the whole picture.
//
// Read from systemd's own source (github.com/systemd/systemd):
//  - src/libsystemd/sd-daemon/sd-daemon.c @ b6c421a480fffd773a9e786b19678ab650999334
//    sd_pid_notify_with_fds: one AF_UNIX SOCK_DGRAM datagram to $NOTIFY_SOCKET
//    (a path, or '@' for the abstract namespace), fds beside it as SCM_RIGHTS;
//    credentials need not be sent: the manager's socket has SO_PASSCRED, so the
//    kernel attaches the sender's real ones.
//    sd_listen_fds(_with_names): $LISTEN_PID must be this process, $LISTEN_FDS
//    fds start at 3 and are made CLOEXEC, $LISTEN_FDNAMES is ':'-separated and
//    must name exactly as many; the three variables are unset after reading.
//  - src/core/manager.c @ 1b09f548c7f303b486b5b1321c06336bff72ada4
//    (manager_dispatch_notify_fd): a message without credentials, of
//    NOTIFY_BUFFER_MAX (PIPE_BUF, 4096) bytes or more, or with a NUL inside, is
//    ignored — with its fds closed.
//  - src/core/service.c @ 8017ed7e0e0ffaafcf9856f963928ca2a21340b6
//    (service_notify_message, service_add_fd_store): FDSTORE=1 adds the fds
//    under FDNAME= (an invalid name is replaced by "stored"); FDSTOREREMOVE=1
//    closes every fd of that name; only the main process may send by default
//    (NotifyAccess=main once FileDescriptorStoreMax= > 0); beyond
//    FileDescriptorStoreMax= fds are closed with a warning, nothing tells the
//    sender; a stored fd that polls POLLHUP or POLLERR is closed and dropped,
//    unless it came with FDPOLL=0. The manager sets $FDSTORE to
//    FileDescriptorStoreMax= in the service's environment (service_spawn),
//    so a service can tell whether its store is enabled.
//    A message that is just "BARRIER=1" with one fd (sd_notify_barrier) is
//    dropped before any unit sees it (manager_process_barrier_fd): closing
//    that fd is the manager's answer that everything sent before it was
//    handled.
//  - src/basic/fd-util.c @ d858a84a336af6853ba55d5754d1ddb55e5f782d
//    fdname_is_valid: printable ASCII without ':', at most 255 characters.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <charconv>
#include <chrono>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../failure.hpp"
#include "../fd.hpp"
#include "../fd_passing.hpp"

namespace fusexx::systemd {

inline constexpr int listen_fds_start = 3;         // SD_LISTEN_FDS_START
inline constexpr std::size_t notify_buffer_max = 4096;  // the manager ignores longer messages
inline constexpr std::size_t fd_name_max = 255;

// The names fusexx stores its connection and its snapshot under.
inline constexpr std::string_view device_name = "fusexx-dev";
inline constexpr std::string_view snapshot_name = "fusexx-snapshot";
// The open files beside the snapshot (snapshot.hpp), one name each: the
// manager keeps no order among fds of one name, so the index is in it.
inline constexpr std::string_view snapshot_fd_prefix = "fusexx-fd.";
inline std::string snapshot_fd_name(std::size_t index) { return std::string(snapshot_fd_prefix) + std::to_string(index); }
// Crash recovery with the store as the keeper (-o supervise under a unit
// with a store; docs/restart.md, "systemd as the keeper"): the two crash
// journals, each checkpoint under its generation (the newest wins; an
// older one is removed once the newer is stored), and the restart history.
inline constexpr std::string_view journal_prefix = "fusexx-journal.";
inline constexpr std::string_view checkpoint_prefix = "fusexx-checkpoint.";
inline constexpr std::string_view restarts_name = "fusexx-restarts";
inline std::string journal_name(unsigned index) { return std::string(journal_prefix) + std::to_string(index); }
inline std::string checkpoint_name(std::uint64_t generation) {
  return std::string(checkpoint_prefix) + std::to_string(generation);
}

// As systemd's fdname_is_valid(): printable ASCII, no ':' (the separator of
// $LISTEN_FDNAMES), at most 255 characters.
inline bool valid_fd_name(std::string_view name) {
  if (name.size() > fd_name_max) return false;
  for (char c : name)
    if (c < ' ' || c >= 127 || c == ':') return false;
  return true;
}

// $NOTIFY_SOCKET as an address: a path, or '@' for the abstract namespace.
// nullopt when it is unset; EAFNOSUPPORT for anything else (vsock: not here).
inline outcome<std::optional<std::pair<sockaddr_un, socklen_t>>> notify_address() {
  const char* e = std::getenv("NOTIFY_SOCKET");
  if (!e || !*e) return std::nullopt;
  std::string_view s = e;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (s[0] != '/' && s[0] != '@')
    return fail(EAFNOSUPPORT, "NOTIFY_SOCKET={} is neither a path nor an abstract ('@') address", s);
  if (s.size() >= sizeof a.sun_path) return fail(EINVAL, "NOTIFY_SOCKET={} is too long", s);
  std::memcpy(a.sun_path, s.data(), s.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + s.size());
  if (s[0] == '@') a.sun_path[0] = 0;  // abstract: no trailing NUL in the length
  else ++len;                          // a path: with its NUL, as sockaddr_un_set_path() does
  return std::make_pair(a, len);
}

// Sends one notification ("KEY=VALUE\n..."), with `fds` beside it. False when
// there is no service manager to tell ($NOTIFY_SOCKET unset).
inline outcome<bool> notify(std::string_view state, std::span<const int> fds = {}) {
  if (state.empty() || state.size() >= notify_buffer_max || state.find('\0') != std::string_view::npos)
    return fail(EINVAL, "a notification must be 1 to {} bytes without NUL", notify_buffer_max - 1);
  if (fds.size() > max_fds_per_message) return fail(EINVAL, "too many fds in one notification");
  auto addr = notify_address();
  if (!addr) return std::unexpected(addr.error());
  if (!*addr) return false;
  unique_fd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return fail(errno, "notify socket: {}", std::strerror(errno));
  // A manager that does not read (its queue holds net.unix.max_dgram_qlen
  // datagrams) must not hold this process for ever: at most 5 s, then the
  // send fails (EAGAIN).
  const timeval limit{5, 0};
  (void)::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  auto& [to, len] = **addr;
  if (auto sent = send_with_fds(s.get(), std::as_bytes(std::span(state.data(), state.size())), fds,
                                reinterpret_cast<const sockaddr*>(&to), len);
      !sent)
    return fail(sent.error().value(), "notifying the service manager ({}): {}", std::getenv("NOTIFY_SOCKET"),
                sent.error().message());
  return true;
}

// As sd_notify_barrier(): returns once the manager has handled every
// notification this process sent before (it closes the pipe end sent with
// "BARRIER=1"). False when there is no manager; ETIMEDOUT after `limit`.
inline outcome<bool> barrier(std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return fail(errno, "barrier: pipe: {}", std::strerror(errno));
  unique_fd read_end(p[0]), write_end(p[1]);
  const int fds[] = {write_end.get()};
  auto sent = notify("BARRIER=1", fds);
  if (!sent || !*sent) return sent;
  write_end.reset();  // the manager's copy is the last
  pollfd w{read_end.get(), 0, 0};  // POLLHUP comes unasked
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    const int r = ::poll(&w, 1, static_cast<int>(std::max<long long>(left.count(), 0)));
    if (r > 0) return true;
    if (r == 0) return fail(ETIMEDOUT, "the service manager did not answer a barrier within {} ms", limit.count());
    if (errno != EINTR) return fail(errno, "barrier: poll: {}", std::strerror(errno));
  }
}

// FileDescriptorStoreMax= as the manager told this service ($FDSTORE), 0
// when the store is off or there is no manager.
inline unsigned fd_store_max() {
  const char* s = std::getenv("NOTIFY_SOCKET");
  const char* n = std::getenv("FDSTORE");
  if (!s || !*s || !n) return 0;
  char* end = nullptr;
  const unsigned long v = std::strtoul(n, &end, 10);
  return (end && *end == 0 && v <= 1u << 20) ? static_cast<unsigned>(v) : 0;
}

// Puts `fd` (a duplicate: this process keeps its own) in the store under
// `name`. poll=false sends FDPOLL=0: the manager then keeps the fd even when
// it polls POLLHUP/POLLERR.
inline outcome<bool> store_fd(int fd, std::string_view name, bool poll = true) {
  if (!valid_fd_name(name)) return fail(EINVAL, "'{}' is not a valid fd store name", name);
  std::string m = "FDSTORE=1\nFDNAME=" + std::string(name);
  if (!poll) m += "\nFDPOLL=0";
  const int fds[] = {fd};
  return notify(m, fds);
}

// Closes every stored fd named `name` in the manager.
inline outcome<bool> remove_fd(std::string_view name) {
  if (!valid_fd_name(name)) return fail(EINVAL, "'{}' is not a valid fd store name", name);
  return notify("FDSTOREREMOVE=1\nFDNAME=" + std::string(name));
}

struct listened_fd {
  unique_fd fd;
  std::string name;
};

// The fds passed to this process ($LISTEN_FDS, from fd 3) with their names,
// as sd_listen_fds_with_names(unset_environment=1): none when $LISTEN_PID is
// unset or another process's; each made CLOEXEC; the variables unset.
inline outcome<std::vector<listened_fd>> listen_fds() {
  struct unset_all {
    ~unset_all() {
      ::unsetenv("LISTEN_PID");
      ::unsetenv("LISTEN_FDS");
      ::unsetenv("LISTEN_FDNAMES");
    }
  } unset;
  std::vector<listened_fd> out;
  const char* pid = std::getenv("LISTEN_PID");
  const char* count = std::getenv("LISTEN_FDS");
  if (!pid || !count) return out;
  char* end = nullptr;
  const long p = std::strtol(pid, &end, 10);
  if (!*pid || *end || p <= 0) return fail(EINVAL, "LISTEN_PID={} is not a pid", pid);
  if (p != ::getpid()) return out;  // meant for another process (a parent we were forked from)
  const long n = std::strtol(count, &end, 10);
  if (!*count || *end || n <= 0 || n > 65536) return fail(EINVAL, "LISTEN_FDS={} is not a positive number", count);
  std::vector<std::string> names;
  if (const char* e = std::getenv("LISTEN_FDNAMES")) {
    std::string_view all = e;
    for (std::size_t at = 0;;) {  // empty fields count: "a::b" is three names
      const std::size_t colon = all.find(':', at);
      names.emplace_back(all.substr(at, colon == std::string_view::npos ? std::string_view::npos : colon - at));
      if (colon == std::string_view::npos) break;
      at = colon + 1;
    }
    if (names.size() != static_cast<std::size_t>(n))
      return fail(EINVAL, "LISTEN_FDNAMES names {} fds, LISTEN_FDS says {}", names.size(), n);
  } else {
    names.assign(static_cast<std::size_t>(n), "unknown");
  }
  for (int i = 0; i < n; ++i) {
    const int fd = listen_fds_start + i;
    if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
      return fail(errno, "LISTEN_FDS: fd {}: {}", fd, std::strerror(errno));
  }
  // Owned only once all are known good: an error above leaves them alone.
  for (int i = 0; i < n; ++i) out.push_back({unique_fd(listen_fds_start + i), std::move(names[static_cast<std::size_t>(i)])});
  return out;
}

// Takes the fds named snapshot_fd_name(i) out of `fds`, at index i; an
// index missing in between stays empty (the snapshot's reader refuses it).
inline std::vector<unique_fd> take_snapshot_fds(std::vector<listened_fd>& fds) {
  std::vector<unique_fd> out;
  for (auto& f : fds) {
    if (!f.fd || !f.name.starts_with(snapshot_fd_prefix)) continue;
    const std::string_view digits = std::string_view(f.name).substr(snapshot_fd_prefix.size());
    std::size_t index = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (ec != std::errc{} || end != digits.data() + digits.size() || digits.empty() || index >= fds.size()) continue;
    if (out.size() <= index) out.resize(index + 1);
    if (!out[index]) out[index] = std::move(f.fd);
  }
  return out;
}
// Closes the store's fds beside a snapshot of `count` of them.
inline void remove_snapshot_fds(std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) (void)remove_fd(snapshot_fd_name(i));
}

// Takes the fd named `name` out of `fds` (the first, if several).
inline unique_fd take(std::vector<listened_fd>& fds, std::string_view name) {
  for (auto& f : fds)
    if (f.name == name && f.fd) return std::move(f.fd);
  return {};
}

}  // namespace fusexx::systemd
