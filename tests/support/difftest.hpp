#pragma once
// Test support: a differential tester. The same seeded random sequence of
// file operations runs on two directory trees (a filesystem under test and a
// reference such as tmpfs); every result must be the same: return value,
// errno, bytes read, and the stat fields that do not depend on the
// implementation (type, mode, size except of directories, nlink, uid, gid).
// At the end the two trees must be equal: names, types, modes, sizes,
// contents, symlink targets and user. xattrs.
//
// A seed replays exactly: the generator is our own (splitmix64), and every
// choice comes from it in a fixed order.
#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace fusexx::testing {

class random_source {
 public:
  explicit random_source(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }
  bool percent(int p) { return below(100) < std::uint64_t(p); }
  template <class T, std::size_t N>
  const T& pick(const std::array<T, N>& a) {
    return a[below(N)];
  }

 private:
  std::uint64_t state_;
};

class differential_tester {
 public:
  // `a` is the filesystem under test, `b` the reference; both empty directories.
  differential_tester(std::string a, std::string b, std::uint64_t seed, bool other_owners)
      : roots_{std::move(a), std::move(b)}, rng_(seed), other_owners_(other_owners) {}
  ~differential_tester() {
    for (auto& s : slots_)
      for (int fd : s.fd)
        if (fd >= 0) ::close(fd);
  }

  // Runs `count` operations; returns a description of the first mismatch.
  std::optional<std::string> run(int count) {
    for (int i = 0; i < count; ++i) {
      ++done_;
      if (auto bad = step()) return bad;
    }
    return std::nullopt;
  }

  // Closes every open file, then compares the whole trees.
  std::optional<std::string> compare_trees() {
    for (auto& s : slots_) close_slot(s);
    std::string a = describe_tree(roots_[0], ""), b = describe_tree(roots_[1], "");
    if (a == b) return std::nullopt;
    return fmt::format("final trees differ:\n--- under test\n{}\n--- reference\n{}", a, b);
  }

  // The last operations, for a failure message.
  std::string history() const {
    std::string out;
    for (auto& h : history_) out += "  " + h + "\n";
    return out;
  }
  int operations() const { return done_; }

 private:
  // One call's observable result.
  struct result {
    long ret = 0;
    int err = 0;
    std::string data;  // bytes read, names listed, a stat summary...
    bool operator==(const result&) const = default;
  };
  static std::string show(const result& r) {
    std::string s = r.ret < 0 ? fmt::format("-1 {}", strerrorname_np(r.err) ? strerrorname_np(r.err) : "?")
                              : std::to_string(r.ret);
    if (!r.data.empty()) s += " [" + (r.data.size() > 120 ? r.data.substr(0, 120) + "..." : r.data) + "]";
    return s;
  }
  static result syscall(long rc) { return rc < 0 ? result{-1, errno, {}} : result{rc, 0, {}}; }

  struct slot {
    std::array<int, 2> fd{-1, -1};
    std::string path;
  };

  // ---- choosing ----
  std::string name() {
    static constexpr std::array<const char*, 6> names{"a", "b", "c", "d", "e", "f"};
    return rng_.pick(names);
  }
  std::string path() {
    std::string p = name();
    for (int depth = int(rng_.below(3)); depth > 0; --depth) p += "/" + name();
    return p;
  }
  std::string full(int side, const std::string& rel) const { return roots_[side] + "/" + rel; }
  mode_t mode() {
    static constexpr std::array<mode_t, 8> modes{0644, 0600, 0755, 0444, 0777, 0700, 01777, 02755};
    return rng_.pick(modes);
  }
  off_t offset() {
    switch (rng_.below(4)) {
      case 0: return 0;
      case 1: return off_t(rng_.below(100));
      case 2: return off_t(4096 * rng_.below(6) + rng_.below(3)) - 1 + (rng_.percent(50) ? 1 : 0);
      default: return off_t(rng_.below(40000));
    }
  }
  std::size_t length() { return rng_.percent(70) ? rng_.below(5000) : rng_.below(20000); }
  std::string bytes(std::size_t n) {
    std::string s(n, '\0');
    const char base = char('A' + rng_.below(26));
    for (std::size_t i = 0; i < n; ++i) s[i] = char(base + i % 7);
    return s;
  }
  slot* any_open_slot() {
    std::vector<slot*> open;
    for (auto& s : slots_)
      if (s.fd[0] >= 0 || s.fd[1] >= 0) open.push_back(&s);
    return open.empty() ? nullptr : open[rng_.below(open.size())];
  }

  // ---- running ----
  template <class F>
  std::optional<std::string> both(const std::string& what, F&& call) {
    result r[2];
    for (int side = 0; side < 2; ++side) {
      errno = 0;
      r[side] = call(side);
    }
    record(what + " -> " + show(r[1]));
    if (r[0] == r[1]) return std::nullopt;
    return fmt::format("operation {}: {}\n  under test: {}\n  reference:  {}", done_, what, show(r[0]), show(r[1]));
  }
  void record(std::string line) {
    history_.push_back(std::move(line));
    if (history_.size() > 40) history_.pop_front();
  }

  std::optional<std::string> step() {
    const std::uint64_t kind = rng_.below(100);
    if (kind < 10) return op_open();
    if (kind < 14) return op_close();
    if (kind < 24) return op_pwrite();
    if (kind < 28) return op_write();
    if (kind < 34) return op_pread();
    if (kind < 37) return op_lseek();
    if (kind < 41) return op_truncate();
    if (kind < 45) return op_fallocate();
    if (kind < 50) return op_mkdir();
    if (kind < 53) return op_rmdir();
    if (kind < 57) return op_unlink();
    if (kind < 63) return op_rename();
    if (kind < 66) return op_link();
    if (kind < 69) return op_symlink();
    if (kind < 75) return op_stat();
    if (kind < 78) return op_chmod();
    if (kind < 80) return op_chown();
    if (kind < 83) return op_utimens();
    if (kind < 90) return op_xattr();
    if (kind < 94) return op_readdir();
    if (kind < 96) return op_mkfifo();
    if (kind < 98) return op_copy_range();
    return op_fstat();
  }

  std::optional<std::string> op_open() {
    const std::string p = path();
    static constexpr std::array<int, 4> access{O_RDONLY, O_WRONLY, O_RDWR, O_RDWR};
    int flags = rng_.pick(access);
    if (rng_.percent(50)) flags |= O_CREAT;
    if (rng_.percent(15)) flags |= O_EXCL;
    if (rng_.percent(15)) flags |= O_TRUNC;
    if (rng_.percent(15)) flags |= O_APPEND;
    if (rng_.percent(5)) flags |= O_DIRECTORY;
    if (rng_.percent(5)) flags |= O_NOFOLLOW;
    // Always O_NONBLOCK: opening a fifo must not wait for its other end.
    const mode_t m = mode();
    slot& s = slots_[rng_.below(slots_.size())];
    close_slot(s);
    s.path = p;
    return both(fmt::format("open({}, {:#o}, {:o})", p, flags, m), [&](int side) {
      s.fd[side] = ::open(full(side, p).c_str(), flags | O_CLOEXEC | O_NONBLOCK, m);
      return syscall(s.fd[side] < 0 ? -1 : 0);
    });
  }
  void close_slot(slot& s) {
    for (int& fd : s.fd)
      if (fd >= 0) {
        ::close(fd);
        fd = -1;
      }
  }
  std::optional<std::string> op_close() {
    if (slot* s = any_open_slot()) close_slot(*s);
    return std::nullopt;
  }
  std::optional<std::string> op_pwrite() {
    slot* s = any_open_slot();
    if (!s) return op_open();
    const off_t off = offset();
    const std::string data = bytes(length());
    return both(fmt::format("pwrite({}, {} bytes @{})", s->path, data.size(), off),
                [&](int side) { return syscall(::pwrite(s->fd[side], data.data(), data.size(), off)); });
  }
  std::optional<std::string> op_write() {
    slot* s = any_open_slot();
    if (!s) return op_open();
    const std::string data = bytes(length());
    return both(fmt::format("write({}, {} bytes)", s->path, data.size()),
                [&](int side) { return syscall(::write(s->fd[side], data.data(), data.size())); });
  }
  std::optional<std::string> op_pread() {
    slot* s = any_open_slot();
    if (!s) return op_open();
    const off_t off = offset();
    const std::size_t n = length();
    const bool positional = rng_.percent(70);
    return both(fmt::format("{}({}, {} @{})", positional ? "pread" : "read", s->path, n, off), [&](int side) {
      std::string buf(n, '\0');
      const ssize_t got = positional ? ::pread(s->fd[side], buf.data(), n, off) : ::read(s->fd[side], buf.data(), n);
      result r = syscall(got);
      if (got > 0) r.data = buf.substr(0, std::size_t(got));
      return r;
    });
  }
  std::optional<std::string> op_lseek() {
    slot* s = any_open_slot();
    if (!s) return op_open();
    static constexpr std::array<int, 5> whences{SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE};
    int whence = rng_.pick(whences);
    // A known difference the filesystem cannot change: the kernel seeks in
    // FUSE directories with generic_file_llseek (SEEK_END/DATA/HOLE work by
    // the size), tmpfs allows only SEEK_SET and SEEK_CUR there.
    struct stat st {};
    if (whence != SEEK_SET && whence != SEEK_CUR && ::fstat(s->fd[1], &st) == 0 && S_ISDIR(st.st_mode))
      whence = SEEK_SET;
    const off_t off = whence == SEEK_CUR || whence == SEEK_END ? offset() - 50 : offset();
    return both(fmt::format("lseek({}, {}, {})", s->path, off, whence),
                [&](int side) { return syscall(::lseek(s->fd[side], off, whence)); });
  }
  std::optional<std::string> op_truncate() {
    const off_t len = rng_.percent(10) ? -1 : offset();
    if (slot* s = any_open_slot(); s && rng_.percent(50))
      return both(fmt::format("ftruncate({}, {})", s->path, len),
                  [&](int side) { return syscall(::ftruncate(s->fd[side], len)); });
    const std::string p = path();
    return both(fmt::format("truncate({}, {})", p, len),
                [&](int side) { return syscall(::truncate(full(side, p).c_str(), len)); });
  }
  std::optional<std::string> op_fallocate() {
    slot* s = any_open_slot();
    if (!s) return op_open();
    // ZERO_RANGE is left out: tmpfs has none (EOPNOTSUPP); memfs's is tested on its own.
    static constexpr std::array<int, 3> modes{0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE};
    const int m = rng_.pick(modes);
    const off_t off = offset(), len = off_t(length());
    return both(fmt::format("fallocate({}, {}, {}, {})", s->path, m, off, len),
                [&](int side) { return syscall(::fallocate(s->fd[side], m, off, len)); });
  }
  std::optional<std::string> op_mkdir() {
    const std::string p = path();
    const mode_t m = mode();
    return both(fmt::format("mkdir({}, {:o})", p, m),
                [&](int side) { return syscall(::mkdir(full(side, p).c_str(), m)); });
  }
  std::optional<std::string> op_rmdir() {
    const std::string p = path();
    return both(fmt::format("rmdir({})", p), [&](int side) { return syscall(::rmdir(full(side, p).c_str())); });
  }
  std::optional<std::string> op_unlink() {
    const std::string p = path();
    return both(fmt::format("unlink({})", p), [&](int side) { return syscall(::unlink(full(side, p).c_str())); });
  }
  std::optional<std::string> op_rename() {
    const std::string from = path(), to = path();
    static constexpr std::array<unsigned, 4> flags{0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE};
    const unsigned f = rng_.pick(flags);
    return both(fmt::format("rename({}, {}, {})", from, to, f), [&](int side) {
      return syscall(::renameat2(AT_FDCWD, full(side, from).c_str(), AT_FDCWD, full(side, to).c_str(), f));
    });
  }
  std::optional<std::string> op_link() {
    const std::string from = path(), to = path();
    return both(fmt::format("link({}, {})", from, to),
                [&](int side) { return syscall(::link(full(side, from).c_str(), full(side, to).c_str())); });
  }
  std::optional<std::string> op_symlink() {
    const std::string p = path();
    if (rng_.percent(40)) {
      return both(fmt::format("readlink({})", p), [&](int side) {
        char buf[256];
        const ssize_t n = ::readlink(full(side, p).c_str(), buf, sizeof buf);
        result r = syscall(n);
        if (n > 0) r.data.assign(buf, std::size_t(n));
        return r;
      });
    }
    // Relative targets only, so both trees resolve them within themselves.
    const std::string target = rng_.percent(20) ? name() : path();
    return both(fmt::format("symlink({}, {})", target, p),
                [&](int side) { return syscall(::symlink(target.c_str(), full(side, p).c_str())); });
  }
  // What must match between two stat results.
  static std::string summary(const struct stat& st) {
    return fmt::format("type={:o} mode={:o} size={} nlink={} uid={} gid={}", st.st_mode & S_IFMT,
                       st.st_mode & 07777, S_ISDIR(st.st_mode) ? 0 : st.st_size, st.st_nlink, st.st_uid, st.st_gid);
  }
  std::optional<std::string> op_stat() {
    const std::string p = path();
    const bool follow = rng_.percent(50);
    return both(fmt::format("{}({})", follow ? "stat" : "lstat", p), [&](int side) {
      struct stat st {};
      const int rc = follow ? ::stat(full(side, p).c_str(), &st) : ::lstat(full(side, p).c_str(), &st);
      result r = syscall(rc);
      if (rc == 0) r.data = summary(st);
      return r;
    });
  }
  std::optional<std::string> op_fstat() {
    slot* s = any_open_slot();
    if (!s) return op_open();
    return both(fmt::format("fstat({})", s->path), [&](int side) {
      struct stat st {};
      const int rc = ::fstat(s->fd[side], &st);
      result r = syscall(rc);
      if (rc == 0) r.data = summary(st);
      return r;
    });
  }
  std::optional<std::string> op_chmod() {
    const mode_t m = rng_.percent(20) ? mode() | S_ISUID : mode();
    if (slot* s = any_open_slot(); s && rng_.percent(30))
      return both(fmt::format("fchmod({}, {:o})", s->path, m),
                  [&](int side) { return syscall(::fchmod(s->fd[side], m)); });
    const std::string p = path();
    return both(fmt::format("chmod({}, {:o})", p, m),
                [&](int side) { return syscall(::chmod(full(side, p).c_str(), m)); });
  }
  std::optional<std::string> op_chown() {
    static constexpr std::array<int, 4> ids{-1, 0, 1000, 65534};
    const int uid = other_owners_ ? rng_.pick(ids) : -int(rng_.below(2));
    const int gid = other_owners_ ? rng_.pick(ids) : -int(rng_.below(2));
    const std::string p = path();
    return both(fmt::format("lchown({}, {}, {})", p, uid, gid), [&](int side) {
      return syscall(::lchown(full(side, p).c_str(), uid_t(uid), gid_t(gid)));
    });
  }
  std::optional<std::string> op_utimens() {
    const std::string p = path();
    timespec t[2];
    for (auto& one : t) {
      const auto which = rng_.below(4);
      one = which == 0 ? timespec{0, UTIME_NOW}
            : which == 1 ? timespec{0, UTIME_OMIT}
                         : timespec{time_t(1000000 + rng_.below(1000000)), long(rng_.below(1000000000))};
    }
    // Explicit times must come back exactly; "now" cannot be compared.
    return both(fmt::format("utimensat({}, {}.{}, {}.{})", p, t[0].tv_sec, t[0].tv_nsec, t[1].tv_sec, t[1].tv_nsec),
                [&](int side) {
                  const int rc = ::utimensat(AT_FDCWD, full(side, p).c_str(), t, AT_SYMLINK_NOFOLLOW);
                  result r = syscall(rc);
                  struct stat st {};
                  if (rc == 0 && ::lstat(full(side, p).c_str(), &st) == 0 && t[1].tv_nsec != UTIME_NOW &&
                      t[1].tv_nsec != UTIME_OMIT)
                    r.data = fmt::format("mtime={}.{}", st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
                  return r;
                });
  }
  std::optional<std::string> op_xattr() {
    static constexpr std::array<const char*, 3> names{"user.x", "user.y", "user.long.name"};
    const std::string p = path();
    const std::string n = rng_.pick(names);
    switch (rng_.below(4)) {
      case 0: {
        const std::string v = bytes(rng_.below(200));
        static constexpr std::array<int, 3> flags{0, XATTR_CREATE, XATTR_REPLACE};
        const int f = rng_.pick(flags);
        return both(fmt::format("lsetxattr({}, {}, {} bytes, {})", p, n, v.size(), f), [&](int side) {
          return syscall(::lsetxattr(full(side, p).c_str(), n.c_str(), v.data(), v.size(), f));
        });
      }
      case 1: {
        const std::size_t size = rng_.percent(20) ? 0 : rng_.percent(20) ? 3 : 512;
        return both(fmt::format("lgetxattr({}, {}, {})", p, n, size), [&](int side) {
          std::string buf(size, '\0');
          const ssize_t got = ::lgetxattr(full(side, p).c_str(), n.c_str(), size ? buf.data() : nullptr, size);
          result r = syscall(got);
          if (got > 0 && size) r.data = buf.substr(0, std::size_t(got));
          return r;
        });
      }
      case 2:
        return both(fmt::format("llistxattr({})", p), [&](int side) {
          char buf[1024];
          const ssize_t got = ::llistxattr(full(side, p).c_str(), buf, sizeof buf);
          result r = syscall(got);
          if (got > 0) r.data = sorted_names(std::string(buf, std::size_t(got)));
          return r;
        });
      default:
        return both(fmt::format("lremovexattr({}, {})", p, n),
                    [&](int side) { return syscall(::lremovexattr(full(side, p).c_str(), n.c_str())); });
    }
  }
  static std::string sorted_names(const std::string& nul_separated) {
    std::vector<std::string> names;
    for (std::size_t at = 0; at < nul_separated.size();) {
      const std::size_t end = nul_separated.find('\0', at);
      names.push_back(nul_separated.substr(at, end - at));
      at = end == std::string::npos ? nul_separated.size() : end + 1;
    }
    std::sort(names.begin(), names.end());
    std::string out;
    for (auto& n : names) out += n + ",";
    return out;
  }
  std::optional<std::string> op_readdir() {
    const std::string p = rng_.percent(20) ? std::string(".") : path();
    return both(fmt::format("readdir({})", p), [&](int side) {
      DIR* d = ::opendir(full(side, p).c_str());
      if (!d) return syscall(-1);
      std::vector<std::string> names;
      while (dirent* e = ::readdir(d)) names.push_back(std::string(e->d_name) + ":" + std::to_string(int(e->d_type)));
      ::closedir(d);
      std::sort(names.begin(), names.end());
      result r;
      for (auto& n : names) r.data += n + " ";
      return r;
    });
  }
  std::optional<std::string> op_mkfifo() {
    const std::string p = path();
    return both(fmt::format("mkfifo({})", p), [&](int side) { return syscall(::mkfifo(full(side, p).c_str(), 0644)); });
  }
  std::optional<std::string> op_copy_range() {
    slot* in = any_open_slot();
    slot* out = any_open_slot();
    if (!in || !out) return op_open();
    const off_t off_in = offset(), off_out = offset();
    const std::size_t len = length();
    return both(fmt::format("copy_file_range({}@{}, {}@{}, {})", in->path, off_in, out->path, off_out, len),
                [&](int side) {
                  loff_t a = off_in, b = off_out;
                  return syscall(::copy_file_range(in->fd[side], &a, out->fd[side], &b, len, 0));
                });
  }

  // One line per object: path, stat summary, content or target, xattrs.
  std::string describe_tree(const std::string& root, const std::string& rel) {
    std::string out;
    const std::string dir = rel.empty() ? root : root + "/" + rel;
    std::vector<std::string> names;
    if (DIR* d = ::opendir(dir.c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.emplace_back(e->d_name);
      ::closedir(d);
    }
    std::sort(names.begin(), names.end());
    for (auto& n : names) {
      const std::string r = rel.empty() ? n : rel + "/" + n;
      const std::string p = root + "/" + r;
      struct stat st {};
      if (::lstat(p.c_str(), &st) != 0) {
        out += r + " (lstat failed)\n";
        continue;
      }
      out += r + " " + summary(st);
      if (S_ISREG(st.st_mode)) {
        std::string content;
        int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
        char buf[65536];
        ssize_t got;
        while (fd >= 0 && (got = ::read(fd, buf, sizeof buf)) > 0) content.append(buf, std::size_t(got));
        if (fd >= 0) ::close(fd);
        out += fmt::format(" content#{:x}", std::hash<std::string>{}(content));
      } else if (S_ISLNK(st.st_mode)) {
        char buf[256];
        const ssize_t got = ::readlink(p.c_str(), buf, sizeof buf);
        out += " -> " + std::string(buf, std::size_t(std::max<ssize_t>(got, 0)));
      }
      char names_buf[1024];
      const ssize_t xl = ::llistxattr(p.c_str(), names_buf, sizeof names_buf);
      if (xl > 0) {
        const std::string xs = sorted_names(std::string(names_buf, std::size_t(xl)));
        out += " xattrs=" + xs;
        for (std::size_t at = 0; at < xs.size();) {
          const std::size_t comma = xs.find(',', at);
          const std::string x = xs.substr(at, comma - at);
          char v[512];
          const ssize_t vl = ::lgetxattr(p.c_str(), x.c_str(), v, sizeof v);
          out += fmt::format(" {}#{:x}", x, std::hash<std::string>{}(std::string(v, std::size_t(std::max<ssize_t>(vl, 0)))));
          at = comma + 1;
        }
      }
      out += "\n";
      if (S_ISDIR(st.st_mode)) out += describe_tree(root, r);
    }
    return out;
  }

  std::array<std::string, 2> roots_;
  random_source rng_;
  bool other_owners_;
  std::array<slot, 6> slots_;
  std::deque<std::string> history_;
  int done_ = 0;
};

}  // namespace fusexx::testing
