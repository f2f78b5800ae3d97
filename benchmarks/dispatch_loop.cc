// What the dispatcher costs per request, without a kernel: GETATTR requests fed
// to a dispatcher in a loop, the replies written nowhere. For callgrind's
// instruction counts (deterministic, unlike time):
//
//   bazel build -c opt //benchmarks:dispatch_loop
//   valgrind --tool=callgrind bazel-bin/benchmarks/dispatch_loop 100000 [off]
//
// Run it at two counts: the difference over the difference in requests is
// the cost of one. `off`: per-opcode statistics switched off (fusexx/stats.hpp).
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

int discard(void*, const iovec*, int) { return 0; }

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 100000;
  const bool off = argc > 2 && std::string_view(argv[2]) == "off";
  loop_fs fs;
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
  fusexx::detail::dispatcher<loop_fs> d(fs, s);
  fusexx::proto::in_header h{};
  fusexx::proto::getattr_in g{};
  h.len = sizeof h + sizeof g;
  h.opcode = static_cast<std::uint32_t>(fusexx::proto::opcode::getattr);
  h.nodeid = 1;
  std::vector<std::byte> req(h.len);
  std::vector<std::byte> scratch(8192);
  for (long i = 0; i < n; ++i) {
    h.unique = 2 * static_cast<std::uint64_t>(i) + 2;
    std::memcpy(req.data(), &h, sizeof h);
    std::memcpy(req.data() + sizeof h, &g, sizeof g);
    fusexx::detail::incoming in{.bytes = req, .scratch = scratch, .owner = nullptr,
                                .sink = fusexx::detail::reply_sink{nullptr, &discard}};
    d.handle(in);
  }
  std::printf("%ld requests, %llu counted\n", n,
              static_cast<unsigned long long>(s.counters().requests.load()));
}
