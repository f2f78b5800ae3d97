#pragma once
// Test support for handovers (docs/restart.md): a filesystem binary serving
// in the foreground, as users run it (and again with --takeover, as its
// successor), and a successor served in the test's own process, so that a
// test can look at its books once it has taken the connection over.
#include <fcntl.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <fusexx/fusexx.hpp>

#include "tests/support/process.hpp"

namespace fusexx::testing {

// `binary` serving `mp` in the foreground with `options`; with takeover, as
// the successor of the server running there.
inline child start_server(const std::string& binary, const std::vector<std::string>& options, const std::string& mp,
                          bool takeover) {
  std::vector<std::string> args{binary, "-f"};
  if (takeover) args.push_back("--takeover");
  args.insert(args.end(), options.begin(), options.end());
  args.push_back(mp);
  return spawn(args, /*capture_stdout=*/true, /*with_stderr=*/true);
}

// What a child started by start_server said (it has ended).
inline std::string output_of(child& c) {
  std::string out = slurp_fd(c.stdout_fd);
  ::close(c.stdout_fd);
  c.stdout_fd = -1;
  return out;
}

// What a child started by start_server has said so far, without waiting for
// it to end (its servers share the pipe, so an end may not come): for the
// message of a check that failed while it runs.
inline std::string output_so_far(const child& c) {
  if (c.stdout_fd < 0) return "";
  const int flags = ::fcntl(c.stdout_fd, F_GETFL);
  ::fcntl(c.stdout_fd, F_SETFL, flags | O_NONBLOCK);
  std::string out = slurp_fd(c.stdout_fd);
  ::fcntl(c.stdout_fd, F_SETFL, flags);
  return out;
}

// This process as the successor of the server of `mp`: a server of Fs,
// configured by `configure` as the binary configures itself.
template <class Fs>
struct successor_here {
  Fs fs;
  std::unique_ptr<server<Fs>> srv;

  successor_here(const std::string& mp, const std::function<void(Fs&, server_options&)>& configure) {
    server_options o;
    o.mount.mountpoint = mp;
    o.transport = transport_from_env();
    configure(fs, o);
    srv = std::make_unique<server<Fs>>(fs, o);
  }
  // Takes the connection over: through the mount's control socket, or from
  // an offer already received. The outcome: served, or why not.
  outcome<void> take_over(std::optional<handover::offer> offer = std::nullopt) {
    event_loop loop;
    auto took = offer ? loop.run(srv->take_over_async(loop, std::move(*offer))) : loop.run(srv->take_over_async(loop));
    REQUIRE(took);
    return *took;
  }
};

}  // namespace fusexx::testing
