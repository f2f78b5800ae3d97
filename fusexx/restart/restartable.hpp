#pragma once
// A filesystem a new process can take over live (docs/restart.md): it says
// so, and writes and reads its own state.
//
//   struct my_fs : fusexx::filesystem_base<my_fs> {
//     static constexpr bool restartable = true;
//     fusexx::result<void> save(fusexx::snapshot_writer& w);      // the predecessor, parked
//     fusexx::result<void> restore(fusexx::snapshot_reader& r);   // the successor, before it serves
//     ...
//   };
//
// save() runs while the server is parked: no handler runs, none will until
// the handover is over. It writes what the successor needs to answer every
// node id and file handle the kernel still holds (the session writes the
// node ids, lookup counts and handles themselves), and whatever else must
// survive (file contents, locks held). restore() reads it back, in the same
// order, into a filesystem that has not served yet; an error (or a reader
// that ran dry: r.ok() is false) refuses the handover and the predecessor
// resumes. save() may fail too (the handover is then refused).
#include <concepts>
#include <type_traits>

#include "../result.hpp"
#include "snapshot.hpp"

namespace fusexx {

template <class Fs>
concept has_save_restore = requires(Fs& fs, snapshot_writer& w, snapshot_reader& r) {
  { fs.save(w) } -> std::convertible_to<result<void>>;
  { fs.restore(r) } -> std::convertible_to<result<void>>;
};

// Fs says `static constexpr bool restartable = true`.
template <class Fs>
concept declares_restartable = requires {
  { Fs::restartable } -> std::convertible_to<bool>;
} && Fs::restartable;

// A filesystem a successor can take over.
template <class Fs>
concept restartable = declares_restartable<Fs> && has_save_restore<Fs>;

// A filesystem that says it is restartable must provide both hooks.
template <class Fs>
constexpr bool restart_hooks_complete() {
  static_assert(!declares_restartable<Fs> || has_save_restore<Fs>,
                "fusexx: a filesystem that declares `restartable = true` must have "
                "result<void> save(snapshot_writer&) and result<void> restore(snapshot_reader&)");
  return true;
}

}  // namespace fusexx
