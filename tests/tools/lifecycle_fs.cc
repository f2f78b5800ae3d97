// A test filesystem whose start-up can be told to go wrong, for the lifecycle
// tests: -o init_error=ERRNO, init_sleep_ms=N, init_throw, init_crash.
// Otherwise it serves examples/hello's tree.
#include <csignal>
#include <stdexcept>
#include <thread>

#include "examples/hello_fs.hpp"

struct lifecycle_fs : fusexx::filesystem_base<lifecycle_fs> {
  hello_fs tree;
  int init_error = 0;
  unsigned init_sleep_ms = 0;
  bool init_throw = false;
  bool init_crash = false;

  static constexpr std::string_view usage =
      "lifecycle_fs options: init_error=ERRNO, init_sleep_ms=N, init_throw, init_crash\n";

  fusexx::outcome<bool> option(std::string_view key, std::optional<std::string_view> value) {
    if (key == "init_error" && value) init_error = std::stoi(std::string(*value));
    else if (key == "init_sleep_ms" && value) init_sleep_ms = static_cast<unsigned>(std::stoul(std::string(*value)));
    else if (key == "init_throw" && !value) init_throw = true;
    else if (key == "init_crash" && !value) init_crash = true;
    else return false;
    return true;
  }

  fusexx::result<void> init(fusexx::connection&) {
    if (init_sleep_ms) std::this_thread::sleep_for(std::chrono::milliseconds(init_sleep_ms));
    if (init_crash) std::raise(SIGSEGV);
    if (init_throw) throw std::runtime_error("the backing store is unreachable");
    if (init_error) return fusexx::error(init_error);
    return {};
  }

  auto lookup(fusexx::request& r, fusexx::ino p, std::string_view n) { return tree.lookup(r, p, n); }
  auto getattr(fusexx::request& r, fusexx::ino i, std::optional<fusexx::fhandle> fh) { return tree.getattr(r, i, fh); }
  auto open(fusexx::request& r, fusexx::ino i, int f) { return tree.open(r, i, f); }
  auto read(fusexx::request& r, fusexx::ino i, fusexx::fhandle fh, off_t o, std::span<std::byte> into) {
    return tree.read(r, i, fh, o, into);
  }
  auto opendir(fusexx::request& r, fusexx::ino i, int f) { return tree.opendir(r, i, f); }
  auto readdir(fusexx::request& r, fusexx::ino i, fusexx::fhandle fh, off_t o, fusexx::dir_buffer& out) {
    return tree.readdir(r, i, fh, o, out);
  }
};
static_assert(fusexx::filesystem<lifecycle_fs>);

int main(int argc, char** argv) { return fusexx::main<lifecycle_fs>(argc, argv); }
