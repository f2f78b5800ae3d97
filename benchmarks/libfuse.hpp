#pragma once
// libfuse 3.19's own examples as benchmark subjects: memfs_ll and
// passthrough_hp from a libfuse build directory (meson's layout: example/,
// lib/), the reference a user would pick instead of fusexx.
//
// The examples find libfuse3.so.4 through their RUNPATH ($ORIGIN/../lib). A
// copy of a build directory that lost its symlinks (the project's anchors
// hold `lib/libfuse3.so.4` as a text file naming libfuse3.so.3.19.0) no
// longer loads, so the suite runs them with LD_LIBRARY_PATH set to a
// directory of its own whose links point at the real files.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace bench {

class libfuse_build {
 public:
  // Where the suite looks when --libfuse is not given: the project's anchors
  // (libfuse-3.19.0-rc0 in $FUSEXX_ANCHORS, which tools/dev sets, else in
  // ../shared/anchors beside the workspace `bazel run` was called in), else "".
  static std::string default_dir() {
    std::vector<std::filesystem::path> places;
    if (const char* a = std::getenv("FUSEXX_ANCHORS"); a && *a) places.emplace_back(a);
    if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"); ws && *ws)
      places.push_back(std::filesystem::path(ws) / ".." / "shared" / "anchors");
    for (const auto& p : places) {
      std::error_code ec;
      const auto d = p / "libfuse-3.19.0-rc0";
      if (std::filesystem::is_directory(d, ec)) return std::filesystem::weakly_canonical(d, ec).string();
    }
    return "";
  }

  // Checks `dir` and makes the library directory in `scratch_parent`; an
  // error text (why the libfuse subjects are not measured) or "".
  std::string open(const std::string& dir, const std::string& scratch_parent) {
    if (dir.empty())
      return "no libfuse 3.19 build directory: give --libfuse DIR (a meson build of libfuse with "
             "-Dexamples=true)";
    dir_ = std::filesystem::absolute(dir).lexically_normal().string();
    for (const char* p : {"example/memfs_ll", "example/passthrough_hp"})
      if (::access((dir_ + "/" + p).c_str(), X_OK) != 0)
        return fmt::format("{}/{}: {}", dir_, p, std::strerror(errno));
    std::string tmpl = scratch_parent + "/fusexx-bench-libfuse-XXXXXX";
    if (!::mkdtemp(tmpl.data())) return fmt::format("mkdtemp in {}: {}", scratch_parent, std::strerror(errno));
    libs_ = tmpl;
    std::error_code listing;
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/lib", listing)) {
      std::error_code kind;  // an entry that cannot be looked at is skipped, not linked
      if (!e.is_regular_file(kind) && !e.is_symlink(kind)) continue;
      std::filesystem::path target = e.path();
      if (const std::string named = flattened_link(e.path()); !named.empty()) target = e.path().parent_path() / named;
      std::error_code linked;  // each link's own outcome: a later success must not hide it
      std::filesystem::create_symlink(target, std::filesystem::path(libs_) / e.path().filename(), linked);
      if (linked) return fmt::format("linking {} in {}: {}", e.path().string(), libs_, linked.message());
    }
    if (listing) return fmt::format("{}/lib: {}", dir_, listing.message());
    return "";
  }
  ~libfuse_build() {
    std::error_code ec;
    if (!libs_.empty()) std::filesystem::remove_all(libs_, ec);
  }

  std::string program(const char* name) const { return dir_ + "/example/" + name; }
  std::string library_path() const { return "LD_LIBRARY_PATH=" + libs_; }
  const std::string& dir() const { return dir_; }

 private:
  // A symlink that a copy made into a small file holding the target's name
  // (a sibling in the same directory): that name, else "".
  static std::string flattened_link(const std::filesystem::path& p) {
    std::error_code ec;
    if (std::filesystem::is_symlink(p, ec) || std::filesystem::file_size(p, ec) > 255 || ec) return "";
    std::ifstream in(p);
    std::string name;
    std::getline(in, name);
    if (name.empty() || name.find('/') != std::string::npos || name.find('\0') != std::string::npos) return "";
    return std::filesystem::is_regular_file(p.parent_path() / name, ec) ? name : "";
  }

  std::string dir_;
  std::string libs_;
};

}  // namespace bench
