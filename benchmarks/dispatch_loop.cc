// What the dispatcher costs per request, without a kernel: GETATTR requests fed
// to a dispatcher in a loop, the replies written nowhere. For callgrind's
// instruction counts (deterministic, unlike time):
//
//   bazel build -c opt //benchmarks:dispatch_loop
//   valgrind --tool=callgrind bazel-bin/benchmarks/dispatch_loop 100000 [off] [task]
//
// Run it at two counts: the difference over the difference in requests is
// the cost of one. `off`: per-opcode statistics switched off (fusexx/stats.hpp).
// `task`: the handler is a coroutine (fusexx::task), as passthrough's READ is.
// It also prints the wall-clock time per request, for a rough look without
// valgrind.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include <fusexx/dispatch.hpp>

namespace {

struct loop_fs : fusexx::filesystem_base<loop_fs> {
  fusexx::result<fusexx::attr> getattr(fusexx::request&, fusexx::ino node) {
    fusexx::attr a{};
    a.st.st_ino = node;
    a.st.st_mode = 0100644;
    a.st.st_nlink = 1;
    return a;
  }
};

struct loop_task_fs : fusexx::filesystem_base<loop_task_fs> {
  fusexx::task<fusexx::attr> getattr(fusexx::request& r, fusexx::ino node) { co_return loop_fs{}.getattr(r, node); }
};

int discard(void*, const iovec*, int) { return 0; }

template <class Fs>
void run(long n, bool off) {
  Fs fs;
  fusexx::session s;
#if __has_include(<fusexx/stats.hpp>)
  s.stats().set_enabled(!off);
#else
  (void)off;
#endif
  fusexx::session_description serving;  // as after INIT
  serving.proto_major = 7;
  serving.proto_minor = 45;
  s.restore(serving);
  fusexx::detail::dispatcher<Fs> d(fs, s);
  fusexx::proto::in_header h{};
  fusexx::proto::getattr_in g{};
  h.len = sizeof h + sizeof g;
  h.opcode = static_cast<std::uint32_t>(fusexx::proto::opcode::getattr);
  h.nodeid = 1;
  std::vector<std::byte> req(h.len);
  std::vector<std::byte> scratch(8192);
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < n; ++i) {
    h.unique = 2 * static_cast<std::uint64_t>(i) + 2;
    std::memcpy(req.data(), &h, sizeof h);
    std::memcpy(req.data() + sizeof h, &g, sizeof g);
    fusexx::detail::incoming in{.bytes = req, .scratch = scratch, .owner = nullptr,
                                .sink = fusexx::detail::reply_sink{nullptr, &discard}};
    d.handle(in);
  }
  const std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
  std::printf("%ld requests, %llu counted, %.1f ns each\n", n,
              static_cast<unsigned long long>(s.counters().requests.load()), took.count() / static_cast<double>(n));
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 100000;
  bool off = false, coroutine = false;
  for (int i = 2; i < argc; ++i) {
    off = off || std::string_view(argv[i]) == "off";
    coroutine = coroutine || std::string_view(argv[i]) == "task";
  }
  if (coroutine) run<loop_task_fs>(n, off);
  else run<loop_fs>(n, off);
}
