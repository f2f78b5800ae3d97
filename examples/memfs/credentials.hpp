#pragma once
// memfs: what a request's caller may do beyond its uid and gid — its
// supplementary groups and whether it holds CAP_FSETID — read from
// /proc/<pid>/status of the task that made the request (the kernel puts that
// task's id in every request; libfuse's fuse_req_getgroups reads the same
// file). Needed only for the few decisions the kernel leaves to memfs (see
// memfs_fs::drop_set_id), so it is read only then.
#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace memfs {

struct caller_rights {
  std::vector<gid_t> groups;  // supplementary groups
  bool fsetid = false;        // CAP_FSETID in the effective set
};

// Parses the "Groups:" and "CapEff:" lines of a /proc/<pid>/status text.
inline std::optional<caller_rights> parse_status(std::string_view status) {
  caller_rights r;
  bool groups = false, caps = false;
  while (!status.empty()) {
    const std::size_t eol = status.find('\n');
    std::string_view line = status.substr(0, eol);
    status = eol == std::string_view::npos ? std::string_view{} : status.substr(eol + 1);
    auto value_of = [&](std::string_view key) -> std::optional<std::string_view> {
      if (!line.starts_with(key)) return std::nullopt;
      return line.substr(key.size());
    };
    if (auto v = value_of("Groups:")) {
      groups = true;
      std::string_view rest = *v;
      while (!rest.empty()) {
        const std::size_t start = rest.find_first_not_of(" \t");
        if (start == std::string_view::npos) break;
        rest.remove_prefix(start);
        gid_t g = 0;
        auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), g);
        if (ec != std::errc{}) return std::nullopt;
        r.groups.push_back(g);
        rest.remove_prefix(std::size_t(p - rest.data()));
      }
    } else if (auto v = value_of("CapEff:")) {
      const std::size_t start = v->find_first_not_of(" \t");
      if (start == std::string_view::npos) return std::nullopt;
      std::uint64_t mask = 0;
      auto [p, ec] = std::from_chars(v->data() + start, v->data() + v->size(), mask, 16);
      if (ec != std::errc{}) return std::nullopt;
      caps = true;
      constexpr int cap_fsetid = 4;  // <linux/capability.h>
      r.fsetid = (mask >> cap_fsetid) & 1;
    }
  }
  if (!groups || !caps) return std::nullopt;
  return r;
}

// The rights of task `pid` (a thread id is fine: /proc shows every thread),
// or nullopt when they cannot be read (no such task any more, pid 0 for the
// kernel's own requests, another pid namespace).
inline std::optional<caller_rights> rights_of(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  const std::string path = "/proc/" + std::to_string(pid) + "/status";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string text(4096, '\0');
  std::size_t have = 0;
  for (;;) {
    const ssize_t n = ::read(fd, text.data() + have, text.size() - have);
    if (n <= 0) break;
    have += std::size_t(n);
    if (have == text.size()) text.resize(text.size() * 2);
  }
  ::close(fd);
  text.resize(have);
  return parse_status(text);
}

}  // namespace memfs
