#pragma once
// Programs the benchmarks run (the example filesystems, the libfuse
// baseline), found next to the benchmark in its runfiles tree: bazel run and
// bazel test both start in the workspace's runfiles directory.
#include <unistd.h>

#include <filesystem>
#include <string>

namespace bench {

// The absolute path of `path` (e.g. "examples/memfs") in the runfiles of the
// program started as `argv0`, or "" when it is not there.
inline std::string runfile(const char* argv0, const std::string& path) {
  for (const std::string& base : {std::string(argv0) + ".runfiles/fusexx", std::string(".")}) {
    const std::string p = base + "/" + path;
    if (std::filesystem::is_regular_file(p) && ::access(p.c_str(), X_OK) == 0)
      return std::filesystem::absolute(p).lexically_normal().string();
  }
  return "";
}

}  // namespace bench
