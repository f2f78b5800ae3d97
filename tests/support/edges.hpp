#pragma once
// Test support: file operations at the edges of the offset range — near
// 2^63, the largest file offset (the kernel's MAX_LFS_FILESIZE on 64-bit) —
// run in one directory, each described as "call -> result". Running the
// same list on a filesystem under test and on a reference (tmpfs, or the
// directory a passthrough mount mirrors) and comparing the lines shows that
// the one answers as the other: same return values, errnos, bytes read back
// and sizes.
//
// SEEK_DATA/SEEK_HOLE inside the last two pages are listed apart: tmpfs
// gets them wrong on this kernel (6.18). Its mapping_seek_hole_data()
// computes the end of the page it looks at as round_up(pos + 1, PAGE_SIZE),
// which for the last page is 2^63 and wraps to a negative loff_t: SEEK_DATA
// at data in the last page answers ENXIO, SEEK_HOLE ENXIO or EINVAL. So a
// filesystem is compared with tmpfs on everything else, and on these with
// what the file holds.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace fusexx::testing {

inline constexpr off_t largest_offset = std::numeric_limits<off_t>::max();  // 2^63 - 1
inline constexpr off_t last_page = largest_offset - 4095;                    // 2^63 - 4096

struct edge_results {
  std::vector<std::string> lines;      // everything but...
  std::vector<std::string> end_seeks;  // ...SEEK_DATA/SEEK_HOLE in the last two pages
};

inline edge_results offset_edges(const std::string& dir) {
  edge_results results;
  std::vector<std::string>& out = results.lines;
  auto show = [](long rc) { return rc < 0 ? fmt::format("-1 {}", strerrorname_np(errno)) : std::to_string(rc); };
  const std::string big = dir + "/big", small = dir + "/small", copy = dir + "/copy";
  const int fd = ::open(big.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
  const int src = ::open(small.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
  const int dst = ::open(copy.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
  if (fd < 0 || src < 0 || dst < 0) return {{"open failed: " + std::string(std::strerror(errno))}, {}};
  if (::pwrite(src, "hello", 5, 0) != 5) return {{"pwrite of the source failed"}, {}};

  auto size_of = [](int f) {
    struct stat st {};
    return ::fstat(f, &st) == 0 ? fmt::format("size={} blocks={}", st.st_size, st.st_blocks) : "fstat failed";
  };
  auto write_at = [&](off_t off, std::string_view data) {
    const long rc = long(::pwrite(fd, data.data(), data.size(), off));
    out.push_back(fmt::format("pwrite({} bytes @{}) -> {}; {}", data.size(), off, show(rc), size_of(fd)));
  };
  auto read_at = [&](off_t off, std::size_t n) {
    std::string buf(n, '?');
    const ssize_t rc = ::pread(fd, buf.data(), n, off);
    buf.resize(rc > 0 ? std::size_t(rc) : 0);
    for (char& c : buf)
      if (c == '\0') c = '0';
    out.push_back(fmt::format("pread({} @{}) -> {} [{}]", n, off, show(rc), buf));
  };
  auto seek = [&](off_t off, int whence) {
    (off >= last_page - 4096 && off < largest_offset ? results.end_seeks : out).push_back(fmt::format("lseek(@{}, {}) -> {}", off, whence == SEEK_DATA ? "DATA" : "HOLE",
                              show(long(::lseek(fd, off, whence)))));
  };

  for (off_t off : {off_t(1) << 40, off_t(1) << 62, last_page, last_page - 1, largest_offset - 1, largest_offset})
    write_at(off, "xy");
  write_at(largest_offset - 1, "z");  // the very last byte
  write_at(largest_offset, "z");      // past it
  write_at(largest_offset, "");
  for (off_t off : {off_t(1) << 40, last_page - 1, last_page, largest_offset - 8, largest_offset - 1, largest_offset})
    read_at(off, 8);
  read_at(last_page - 4096, 3 * 4096);  // across the last two pages and past the end
  for (off_t off : {off_t(0), off_t(1) << 41, last_page - 4096, last_page + 10, largest_offset - 1, largest_offset}) {
    seek(off, SEEK_DATA);
    seek(off, SEEK_HOLE);
  }

  auto falloc = [&](int mode, off_t off, off_t len) {
    const long rc = ::fallocate(fd, mode, off, len);
    out.push_back(fmt::format("fallocate({:#x}, @{}, {}) -> {}; {}", mode, off, len, show(rc), size_of(fd)));
  };
  falloc(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, last_page, 4096);
  falloc(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, largest_offset);
  falloc(FALLOC_FL_KEEP_SIZE, last_page, 4096);
  falloc(0, last_page, 4096);
  falloc(0, last_page, 4097);                        // ends past the largest offset
  falloc(0, off_t(1) << 62, off_t(1) << 62);         // offset + length overflows
  falloc(FALLOC_FL_KEEP_SIZE, 0, largest_offset);    // far more than there is room for
  seek(last_page, SEEK_DATA);
  seek(last_page, SEEK_HOLE);

  auto trunc = [&](off_t size) {
    const long rc = ::ftruncate(fd, size);
    out.push_back(fmt::format("ftruncate({}) -> {}; {}", size, show(rc), size_of(fd)));
  };
  for (off_t size : {largest_offset, largest_offset - 1, last_page + 1, off_t(1) << 43, off_t(5)}) trunc(size);
  write_at(last_page + 4000, "tail");
  trunc(last_page + 4002);  // cuts inside the last page
  read_at(last_page + 3998, 8);

  auto copy_range = [&](off_t off_in, off_t off_out, std::size_t len) {
    loff_t in = off_in, o = off_out;
    const long rc = long(::copy_file_range(src, &in, dst, &o, len, 0));
    out.push_back(fmt::format("copy_file_range(@{} -> @{}, {}) -> {}; {}", off_in, off_out, len, show(rc),
                              size_of(dst)));
  };
  for (off_t at : {off_t(1) << 43, (off_t(1) << 43) + 4096, off_t(1) << 44, last_page, largest_offset - 3,
                   largest_offset})
    copy_range(0, at, 5);
  copy_range(0, 0, std::numeric_limits<std::size_t>::max() / 2);  // "everything": the source's 5 bytes
  {
    std::string buf(8, '?');
    const ssize_t rc = ::pread(dst, buf.data(), 8, largest_offset - 3);
    buf.resize(rc > 0 ? std::size_t(rc) : 0);
    out.push_back(fmt::format("pread(copy, 8 @{}) -> {} [{}]", largest_offset - 3, show(rc), buf));
  }
  ::close(fd);
  ::close(src);
  ::close(dst);
  // Everything still works (a server that died would answer ENOTCONN).
  struct stat st {};
  out.push_back(fmt::format("stat(big) -> {} size={}", show(::stat(big.c_str(), &st)), st.st_size));
  out.push_back(fmt::format("unlink(big) -> {}", show(::unlink(big.c_str()))));
  return results;
}

}  // namespace fusexx::testing
