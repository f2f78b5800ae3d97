#pragma once
// How a crash-safe filesystem is rebuilt after a crash, and what a
// filesystem rebuilt by redo tells the crash journal (docs/restart.md,
// "Crash recovery").
//
// Two models:
//  - replay (memfs): the state lives in the server's memory. A successor
//    re-runs the journaled requests on the last checkpoint.
//  - redo (passthrough): the state lives outside the server — a disk, and
//    open files whose fds the keeper's fd table keeps. Running a request
//    again would do it twice (a second mkdir fails with EEXIST), so it is
//    not: the filesystem notes each change of its own in-memory tables
//    while it handles a request (journal_note), a successor redoes the
//    notes on the checkpoint (Fs::redo), and a request that was under way
//    at the crash, whose outcome nobody knows, comes again (the kernel
//    resends it) with maybe_applied() true: its handler finds out from the
//    disk whether it was done (an EEXIST of a mkdir it made itself is a
//    success).
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace fusexx {

enum class recovery_model : std::uint8_t { replay, redo };

// A filesystem says `static constexpr fusexx::recovery_model recovery =
// fusexx::recovery_model::redo;`; replay is the default.
template <class Fs>
constexpr recovery_model recovery_of() noexcept {
  if constexpr (requires { { Fs::recovery } -> std::convertible_to<recovery_model>; })
    return Fs::recovery;
  else
    return recovery_model::replay;
}

// What a filesystem recovered by redo provides besides save()/restore():
//   bool redo(std::span<const std::byte> note)   applies one request's note
//                                                (false: it makes no sense)
//   std::vector<int> recovered()                 after the last note: checks
//       that each fd it holds is still the file it was (a server may have
//       closed one and died before its note was journaled), drops those
//       that are not, and returns the fds it holds; the framework closes
//       every other fd the dead servers left open.
template <class Fs>
concept redo_recoverable = requires(Fs& fs, std::span<const std::byte> note) {
  { fs.redo(note) } -> std::convertible_to<bool>;
  { fs.recovered() } -> std::convertible_to<std::vector<int>>;
};

namespace detail {
// Set by the journaling handler (journaling.hpp) around a journaled request
// of a redo filesystem, for the thread that runs its handler.
struct journal_context {
  std::vector<std::byte>* note = nullptr;
  bool maybe_applied = false;
};
inline thread_local journal_context* journal_now = nullptr;
}  // namespace detail

// True while a journaled request of a redo filesystem is handled on this
// thread: its changes are to be noted.
inline bool journal_notes_wanted() noexcept { return detail::journal_now && detail::journal_now->note; }

// Adds `bytes` to the note of the request being handled (nothing when none
// is: not supervised, or outside a journaled request). The note is
// journaled with the request's reply, and handed to Fs::redo(note) by a
// successor, in the order the requests were answered. Only the handler's
// synchronous part can note: a coroutine that resumes after suspending runs
// outside its request's context (passthrough's lock retries change no
// table).
inline void journal_note(std::span<const std::byte> bytes) {
  if (!journal_notes_wanted()) return;
  detail::journal_now->note->insert(detail::journal_now->note->end(), bytes.begin(), bytes.end());
}

// The request being handled was under way when a server crashed: it may
// have been applied (its change on disk) or not. Its handler must not do it
// twice, and must answer as if done once.
inline bool maybe_applied() noexcept { return detail::journal_now && detail::journal_now->maybe_applied; }

}  // namespace fusexx
