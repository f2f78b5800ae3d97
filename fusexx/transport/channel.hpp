#pragma once
// The one interface every part of a transport has. A server's transport is a
// control channel (the /dev/fuse fd the session was mounted with: INIT,
// FORGET, INTERRUPT, NOTIFY_REPLY, notifications going out, and any request
// the kernel sends there) plus a data plane (classic readers on cloned fds,
// or io_uring queues). Each is a channel: threads that take requests from the
// kernel and hand them to the dispatcher, through detail::request_handler, so
// no channel knows the filesystem's type.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "../session.hpp"

namespace fusexx::transport {

using clock = std::chrono::steady_clock;

class channel {
 public:
  virtual ~channel() = default;

  // Starts taking requests.
  virtual void start() = 0;
  // Stops taking requests at a request boundary: returns true once no thread
  // of the channel is inside a handler (handlers that suspended are the
  // session scope's business), false if `deadline` came first. Requests the
  // kernel has not handed over wait in the kernel; the connection stays.
  virtual bool park(clock::time_point deadline) = 0;
  // Takes requests again after park().
  virtual void resume() = 0;
  // Ends the channel's threads; returns once they ended or `deadline` came.
  // A thread inside a handler that never returns is left behind (stuck()).
  virtual void stop(clock::time_point deadline) = 0;

  // Requests that threads of the channel are handling right now (for reports
  // of what a park or stop could not bring to an end).
  virtual std::vector<request_in_flight> busy() const = 0;
  // Threads that did not end when stop() gave up on them.
  virtual unsigned stuck() const = 0;
  virtual unsigned threads() const = 0;
};

}  // namespace fusexx::transport
