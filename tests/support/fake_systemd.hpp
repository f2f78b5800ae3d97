#pragma once
// A test double of the service manager's side of one service with a file
// descriptor store: it plays what systemd does, as systemd's source does it
// (github.com/systemd/systemd):
//  - src/core/manager.c @ 1b09f548c7f303b486b5b1321c06336bff72ada4,
//    manager_dispatch_notify_fd: one AF_UNIX SOCK_DGRAM socket with
//    SO_PASSCRED; a message without SCM_CREDENTIALS, of NOTIFY_BUFFER_MAX
//    (4096) bytes or more, or with a NUL before its last byte is ignored, and
//    the fds beside an ignored message are closed. manager_process_barrier_fd:
//    a message with BARRIER=1 is dropped (its fds closed: the sender's
//    sd_notify_barrier() sees its pipe hang up) before any unit sees it, so
//    from any process of the service.
//  - src/core/service.c @ 8017ed7e0e0ffaafcf9856f963928ca2a21340b6:
//    service_notify_message_authorized (NotifyAccess=main, the default once
//    FileDescriptorStoreMax= > 0: only the main process is heard);
//    service_notify_message: tags split at '\n' and '\r'; FDSTOREREMOVE=1
//    with a valid FDNAME= closes every fd of that name (else ignored);
//    FDSTORE=1 stores the fds under FDNAME= (an invalid or missing name
//    becomes "stored"), polled unless FDPOLL=0; fds sent without FDSTORE=1 are
//    closed. service_add_fd_store: beyond FileDescriptorStoreMax= an fd is
//    closed (EXFULL); an fd the store already has (same_fd, below) is not
//    stored twice; new entries go first
//    (LIST_PREPEND). on_fd_store_io: the store's epoll asks for no events
//    (0), so only EPOLLHUP/EPOLLERR wake it, and the fd is dropped.
//    service_spawn: NOTIFY_SOCKET and FDSTORE=<max> in the environment; the
//    stored fds go to the new process as socket-activation fds (from fd 3,
//    LISTEN_FDS, ':'-separated LISTEN_FDNAMES, and LISTEN_PID set in the child
//    after fork, before exec). service_release_resources: once the service
//    is dead with no job left (a stop, not a restart) the store is closed,
//    unless FileDescriptorStorePreserve=yes.
//    service_shall_restart: RestartPreventExitStatus= first, then Restart=
//    (on-failure: any end but exit status 0). service_release_resources with
//    FileDescriptorStorePreserve=restart (the default): the store is kept
//    while a restart is to come, closed once the unit is inactive or failed.
//  - A stop or restart sends SIGTERM (KillSignal=) to the main process and
//    waits for it to exit; notifications it sent before exiting are still
//    read (the manager dispatches the notify socket before SIGCHLD).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fusexx/fd.hpp>
#include <fusexx/restart/systemd.hpp>

#include "tests/support/process.hpp"

namespace fusexx::testing {

// What the unit says about its store.
struct service_options {
  unsigned fd_store_max = 4;       // FileDescriptorStoreMax=
  bool fd_store_preserve = false;  // FileDescriptorStorePreserve=yes
};

class fake_systemd {
 public:
  struct stored {
    unique_fd fd;
    std::string name;
    bool poll = true;
  };
  using options = service_options;

  explicit fake_systemd(std::vector<std::string> argv, options o = {}) : argv_(std::move(argv)), options_(o) {
    // Abstract names are per network namespace, which Bazel's sandbox
    // shares between tests, while each test's pid namespace is its own: two
    // tests at once may both be pid 2. A random part keeps them apart.
    static std::atomic<int> counter{0};
    static const unsigned long long salt = std::random_device{}() * 4294967296ull + std::random_device{}();
    address_ = "@fusexx-test-notify/" + std::to_string(::getpid()) + "." + std::to_string(salt) + "/" +
               std::to_string(counter++);
    sock_ = unique_fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    const int on = 1;
    ::setsockopt(sock_.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path + 1, address_.data() + 1, address_.size() - 1);
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
    if (::bind(sock_.get(), reinterpret_cast<sockaddr*>(&a), len) != 0) sock_.reset();
    output_ = out_dir_.path() + "/output";
  }
  // Kills the service's process, then closes the store: a connection only
  // the store held is aborted (so nothing waits on it for ever).
  ~fake_systemd() {
    reader_ = {};  // stopped and joined
    if (main_pid_ > 0) {
      ::kill(main_pid_, SIGKILL);
      ::waitpid(main_pid_, nullptr, 0);
    }
  }
  fake_systemd(const fake_systemd&) = delete;
  fake_systemd& operator=(const fake_systemd&) = delete;

  bool ok() const { return static_cast<bool>(sock_); }
  pid_t main_pid() const { return main_pid_; }
  const std::string& notify_socket() const { return address_; }

  // From now on notifications are read as they come, on a thread of the
  // manager's own (as its event loop does): a service that waits for the
  // manager (a barrier) needs it.
  void keep_reading() {
    reader_ = std::jthread([this](std::stop_token stop) {
      while (!stop.stop_requested()) {
        pollfd p{sock_.get(), POLLIN, 0};
        if (::poll(&p, 1, 20) > 0) receive();
      }
    });
  }

  // `systemctl start`: the service's process, with the store passed in.
  bool start() {
    std::lock_guard lock(mutex_);
    if (main_pid_ > 0) return false;
    sweep();
    // Everything the child needs is built here: after fork() it only calls
    // async-signal-safe functions (the test process has threads).
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) {
      std::string_view v = *e;
      if (!v.starts_with("LISTEN_") && !v.starts_with("NOTIFY_SOCKET=") && !v.starts_with("FDSTORE="))
        env_strings.emplace_back(v);
    }
    env_strings.push_back("NOTIFY_SOCKET=" + address_);
    if (options_.fd_store_max > 0) env_strings.push_back("FDSTORE=" + std::to_string(options_.fd_store_max));
    std::vector<int> fds;
    std::string names;
    for (auto& s : store_) {
      fds.push_back(s.fd.get());
      names += (fds.size() == 1 ? "" : ":") + s.name;
    }
    std::size_t pid_slot = 0;
    if (!fds.empty()) {
      env_strings.push_back("LISTEN_FDS=" + std::to_string(fds.size()));
      env_strings.push_back("LISTEN_FDNAMES=" + names);
      env_strings.push_back("LISTEN_PID=" + std::string(20, '\0'));
      pid_slot = env_strings.size();  // 1 + its index
    }
    std::vector<char*> envp, argv;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    for (auto& s : argv_) argv.push_back(s.data());
    argv.push_back(nullptr);
    const int out = ::open(output_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const pid_t pid = ::fork();
    if (pid < 0) return false;
    if (pid == 0) {
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
      // The stored fds to 3, 4, ...: first above every target, so that
      // none is overwritten before it is moved.
      const int n = static_cast<int>(fds.size());
      std::vector<int>& moved = fds;  // reused in place: no allocation after fork
      for (int i = 0; i < n; ++i) moved[i] = ::fcntl(moved[i], F_DUPFD, 3 + n);
      for (int i = 0; i < n; ++i) {
        ::dup2(moved[i], 3 + i);  // dup2's copy is not CLOEXEC
        ::close(moved[i]);
      }
      // Nothing else of the test's: as the manager (close_all_fds), so that
      // the service holds no file of its own mount (closing one at exit
      // would wait on a FLUSH nobody answers).
      ::syscall(SYS_close_range, 3 + n, ~0u, 0);
      if (pid_slot) {  // LISTEN_PID: this process, known only now
        char* p = envp[pid_slot - 1] + std::strlen("LISTEN_PID=");
        char digits[20];
        int k = 0;
        for (pid_t v = ::getpid(); v > 0; v /= 10) digits[k++] = static_cast<char>('0' + v % 10);
        while (k > 0) *p++ = digits[--k];
        *p = 0;
      }
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(out);
    main_pid_ = pid;
    ready_ = stopping_ = false;
    return true;
  }

  // After the main process ended (wait_main's status), as Restart=on-failure
  // with RestartPreventExitStatus=`prevent`: started again with the store,
  // unless it exited 0 or with a prevented status — then the unit is
  // inactive or failed and its store closed (unless preserved). True when
  // started again.
  bool restart_on_failure(int status, std::initializer_list<int> prevent = {}) {
    const bool again = status != 0 && std::ranges::find(prevent, status) == prevent.end();
    if (again) return start();
    std::lock_guard lock(mutex_);
    if (!options_.fd_store_preserve) store_.clear();
    return false;
  }

  // SIGTERM to the main process, waiting until it exited; its exit status.
  int terminate() {
    if (main_pid_ <= 0) return -1;
    ::kill(main_pid_, SIGTERM);
    return wait_main();
  }
  // `systemctl restart`: the store is kept across.
  int restart() {
    const int status = terminate();
    start();
    return status;
  }
  // `systemctl stop`: the store is closed afterwards unless preserved.
  int stop() {
    const int status = terminate();
    std::lock_guard lock(mutex_);
    if (!options_.fd_store_preserve) store_.clear();
    return status;
  }
  // The main process ended by itself (or was killed): its exit status.
  // Notifications are read meanwhile, as the manager's event loop does: the
  // socket queues only net.unix.max_dgram_qlen datagrams (10 by default),
  // and a process that sends more (an fd each) would block. Killed, and -1,
  // when it does not end within `limit` (as wait_exit).
  int wait_main(std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    int status = 0;
    const bool ended = eventually([&] {
      receive();
      return ::waitpid(main_pid_, &status, WNOHANG) == main_pid_;
    }, limit);
    if (!ended) {
      ::kill(main_pid_, SIGKILL);
      ::waitpid(main_pid_, &status, 0);
    }
    receive();  // what it sent before exiting (still from the main pid)
    std::lock_guard lock(mutex_);
    main_pid_ = -1;
    return !ended ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // Reads every notification waiting, as the manager does.
  void receive() {
    std::lock_guard lock(mutex_);
    for (;;) {
      char buf[systemd::notify_buffer_max + 1];
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 768)];
      iovec iov{buf, sizeof buf};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      const ssize_t n = ::recvmsg(sock_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
      if (n < 0) return;
      std::vector<unique_fd> fds;
      const ucred* cred = nullptr;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          for (std::size_t i = 0; i < count; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            fds.emplace_back(fd);
          }
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
                   c->cmsg_len == CMSG_LEN(sizeof(ucred))) {
          cred = reinterpret_cast<const ucred*>(CMSG_DATA(c));
        }
      }
      if (!cred || cred->pid <= 0) {
        ignored_.push_back("without credentials");
        continue;
      }
      if (static_cast<std::size_t>(n) >= systemd::notify_buffer_max || (msg.msg_flags & MSG_TRUNC)) {
        ignored_.push_back("too long");
        continue;
      }
      if (n > 1 && std::memchr(buf, 0, static_cast<std::size_t>(n) - 1)) {
        ignored_.push_back("embedded NUL");
        continue;
      }
      const std::string text(buf, static_cast<std::size_t>(n));
      if (contains(split(text), "BARRIER=1")) {  // from anyone; its fds close here
        ++barriers_;
        continue;
      }
      if (cred->pid != main_pid_) {  // NotifyAccess=main
        ignored_.push_back("from pid " + std::to_string(cred->pid) + ", not the main pid");
        continue;
      }
      messages_.push_back(text);
      handle(split(text), std::move(fds));
    }
  }

  // Drops stored fds that poll POLLHUP or POLLERR (on_fd_store_io).
  void sweep() {
    std::lock_guard lock(mutex_);
    std::erase_if(store_, [](const stored& s) {
      if (!s.poll) return false;
      pollfd p{s.fd.get(), 0, 0};
      return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
    });
  }

  std::vector<std::string> names() const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (auto& s : store_) out.push_back(s.name);
    return out;
  }
  std::size_t count(std::string_view name) const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(std::ranges::count_if(store_, [&](const stored& s) { return s.name == name; }));
  }
  const stored* find(std::string_view name) const {
    for (auto& s : store_)
      if (s.name == name) return &s;
    return nullptr;
  }
  // Replaces the stored fd named `name` (a test corrupting the store).
  void replace(std::string_view name, unique_fd fd) {
    std::lock_guard lock(mutex_);
    for (auto& s : store_)
      if (s.name == name) s.fd = std::move(fd);
  }
  void forget(std::string_view name) {
    std::lock_guard lock(mutex_);
    std::erase_if(store_, [&](const stored& s) { return s.name == name; });
  }
  void clear_store() {
    std::lock_guard lock(mutex_);
    store_.clear();
  }  // systemctl clean --what=fdstore

  std::size_t barriers() const { return barriers_; }
  bool ready() const { return ready_; }
  bool stopping() const { return stopping_; }
  const std::vector<std::string>& messages() const { return messages_; }
  const std::vector<std::string>& ignored() const { return ignored_; }
  std::string output() const { return slurp(output_); }

 private:
  static std::vector<std::string> split(const std::string& text) {  // strv_split(buf, "\n\r")
    std::vector<std::string> tags;
    std::size_t at = 0;
    while (at <= text.size()) {
      const std::size_t end = text.find_first_of("\n\r", at);
      std::string tag = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
      if (!tag.empty() && tag.back() == '\0') tag.pop_back();
      if (!tag.empty()) tags.push_back(std::move(tag));
      if (end == std::string::npos) break;
      at = end + 1;
    }
    return tags;
  }
  static const std::string* find_prefix(const std::vector<std::string>& tags, std::string_view key) {
    for (auto& t : tags)
      if (t.starts_with(key)) return &t;
    return nullptr;
  }
  static bool contains(const std::vector<std::string>& tags, std::string_view tag) {
    return std::ranges::find(tags, tag) != tags.end();
  }
  // same_fd() (src/basic/fd-util.c @ 00ae16cb4a2f0333920a03c904e5043214fdae16):
  // F_DUPFD_QUERY first (Linux >= 6.10), then kcmp(KCMP_FILE): the same
  // only when both are one open file description (a dup). Without either,
  // device fds are never the same, other fds when of one inode with the
  // same flags.
  static bool same_fd(int a, int b) {
    constexpr int dupfd_query = 1024 + 3;  // F_DUPFD_QUERY (F_LINUX_SPECIFIC_BASE + 3)
    if (const int r = ::fcntl(a, dupfd_query, b); r >= 0) return r > 0;
    if (const long r = ::syscall(SYS_kcmp, ::getpid(), ::getpid(), 0 /* KCMP_FILE */, a, b); r >= 0) return r == 0;
    struct stat sa {}, sb {};
    if (::fstat(a, &sa) != 0 || ::fstat(b, &sb) != 0) return false;
    if (sa.st_dev != sb.st_dev || sa.st_ino != sb.st_ino) return false;
    if (S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) return false;
    return ::fcntl(a, F_GETFL) == ::fcntl(b, F_GETFL);
  }

  void handle(const std::vector<std::string>& tags, std::vector<unique_fd> fds) {
    if (contains(tags, "STOPPING=1")) stopping_ = true;
    else if (contains(tags, "READY=1")) ready_ = true;
    const std::string* name = find_prefix(tags, "FDNAME=");
    const std::string value = name ? name->substr(7) : std::string();
    if (contains(tags, "FDSTOREREMOVE=1")) {
      if (!name || !systemd::valid_fd_name(value)) ignored_.push_back("FDSTOREREMOVE=1 without a valid name");
      else forget(value);
    } else if (contains(tags, "FDSTORE=1")) {
      const std::string stored_name = (name && systemd::valid_fd_name(value)) ? value : "stored";
      const bool poll = !contains(tags, "FDPOLL=0");
      for (auto& fd : fds) {
        if (store_.size() >= options_.fd_store_max) {
          ignored_.push_back("store full (FileDescriptorStoreMax=" + std::to_string(options_.fd_store_max) + ")");
          break;  // the rest are closed
        }
        if (std::ranges::any_of(store_, [&](const stored& s) { return same_fd(s.fd.get(), fd.get()); })) continue;
        store_.insert(store_.begin(), stored{std::move(fd), stored_name, poll});
      }
    }
    // fds not stored close here, as the manager's fdset does.
  }

  std::vector<std::string> argv_;
  options options_;
  temp_dir out_dir_;
  std::string output_;
  std::string address_;
  unique_fd sock_;
  pid_t main_pid_ = -1;
  std::vector<stored> store_;
  std::vector<std::string> messages_, ignored_;
  std::atomic<bool> ready_ = false, stopping_ = false;
  std::atomic<std::size_t> barriers_ = 0;
  mutable std::recursive_mutex mutex_;  // the reading thread (keep_reading) and the test's
  std::jthread reader_;                 // last: stopped before the rest goes
};

}  // namespace fusexx::testing
