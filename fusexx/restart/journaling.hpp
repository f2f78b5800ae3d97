#pragma once
// Crash-safe serving (docs/restart.md, "Crash recovery"): the request
// handler a supervised server gives its transport instead of the bare
// dispatcher, and the replay a successor runs after a crash.
//
// Every request that changes state (journaled(): all but a few that only
// read) is handled under one lock and recorded in the crash journal before
// its reply leaves: the request's bytes, the time it was applied at (pinned
// for the handler: request_time.hpp) and, for the requests that must not be
// applied twice (keeps_reply()), the reply itself. So the journal's order is
// the order the changes were applied in, and whatever the kernel was told is
// in the journal. A successor restores the last checkpoint, replays the
// records in order (the same requests at the same times give the same
// state, and the same replies: replay() compares them), and answers a
// resent request that was applied already from its record instead of
// applying it again.
//
// A filesystem that opts in (`static constexpr bool crash_safe = true`)
// promises what that needs: its state changes only through requests, the
// same requests in the same order at the same request_time() give the same
// state, and save()/restore() write and read all of it.
#include <signal.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "../buffer.hpp"
#include "../codec.hpp"
#include "../detail/event.hpp"
#include "../detail/incoming.hpp"
#include "../log.hpp"
#include "../proto/opcodes.hpp"
#include "../proto/version.hpp"
#include "../request_time.hpp"
#include "journal.hpp"
#include "journal_note.hpp"

namespace fusexx {

// A filesystem that declares `static constexpr bool crash_safe = true` can
// be served under a keeper (-o supervise).
template <class Fs>
concept crash_safe = requires {
  { Fs::crash_safe } -> std::convertible_to<bool>;
} && Fs::crash_safe;

namespace detail {

// Requests that change nothing a successor must know: not journaled (they
// run concurrently, and are simply handled again when resent).
// Under redo (journal_note.hpp) the requests that only read are not
// journaled either: the disk keeps their access times.
constexpr bool journaled(proto::opcode op, recovery_model model = recovery_model::replay) noexcept {
  using enum proto::opcode;
  switch (op) {
    case getattr: case statfs: case getxattr: case listxattr: case access: case lseek: case poll: case bmap:
    case getlk: case statx: case interrupt: case init: case destroy: case notify_reply: case fsync: case fsyncdir:
      return false;
    case read: case readdir: case readlink:
      return model == recovery_model::replay;
    default:
      return true;
  }
}
// Journaled requests whose reply is kept, so that a resent one is answered
// from it: all but those that only read (their effect is an access time;
// applying them twice is harmless, and their replies are large).
constexpr bool keeps_reply(proto::opcode op) noexcept {
  using enum proto::opcode;
  return op != read && op != readdir && op != readlink;
}

// Where a test asks a supervised server to die (FUSEXX_CRASH_POINT, at the
// FUSEXX_CRASH_AFTER'th journaled request): to check each window a real
// crash can fall in.
enum class crash_point : std::uint8_t {
  none,
  before_apply,    // a request read, nothing applied
  before_journal,  // applied in memory, not yet journaled
  before_reply,    // journaled, the reply not yet sent
};

// Where a test asks a supervised server to die during a checkpoint
// (FUSEXX_CRASH_CHECKPOINT="INCARNATION:POINT,...", each server reading the
// entry of its own incarnation): right after forking the child that would
// take it (the child gives up too), or right after the keeper acknowledged
// one taken in process, before the journals start over.
enum class checkpoint_crash : std::uint8_t { none, forked, acked };

inline checkpoint_crash checkpoint_crash_of(const char* spec, unsigned incarnation) {
  if (!spec) return checkpoint_crash::none;
  const std::string mine = std::to_string(incarnation) + ":";
  for (std::string_view rest = spec; !rest.empty();) {
    const std::size_t comma = rest.find(',');
    const std::string_view entry = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (!entry.starts_with(mine)) continue;
    const std::string_view point = entry.substr(mine.size());
    if (point == "forked") return checkpoint_crash::forked;
    if (point == "acked") return checkpoint_crash::acked;
    log::warn("FUSEXX_CRASH_CHECKPOINT: '{}' is not a checkpoint crash point; ignored", point);
  }
  return checkpoint_crash::none;
}

// A crash test's death, where it asked for one: the line the test reads,
// then SIGKILL (nothing runs after it, as in a real crash).
[[noreturn]] inline void die_for_crash_test(const std::string& where) {
  log::warn("crash test: dying at {}", where);
  ::kill(::getpid(), SIGKILL);
  std::abort();
}
[[noreturn]] inline void die_at_checkpoint(std::string_view where, std::uint64_t generation) {
  die_for_crash_test(fmt::format("'{}' of checkpoint {}", where, generation));
}

// A replay names this many of the requests that came out differently (or
// notes that could not be redone), then counts the rest: one line each for
// thousands would fill a pipe that nobody reads until the server stops.
inline constexpr std::uint64_t named_differences = 8;

// Why a reply of the replay differs from what was recorded, or nothing.
struct replay_report {
  std::uint64_t records = 0;
  std::uint64_t differing = 0;
  std::uint64_t unfinished = 0;  // a handler that suspended during the replay
  std::uint64_t ended = 0;       // of the requests still waiting at its end, those ended (end_unanswered)
};

template <class Dispatcher>
class journaling {
 public:
  // `checkpoint_at`: ask for a checkpoint once the journal holds this much.
  journaling(Dispatcher& d, journal& j, std::uint64_t checkpoint_at, recovery_model model = recovery_model::replay)
      : dispatcher_(d), journal_(&j), checkpoint_at_(checkpoint_at), model_(model) {
    if (const char* p = std::getenv("FUSEXX_CRASH_POINT"); p && *p) {
      const std::string_view s = p;
      crash_ = s == "before_apply" ? crash_point::before_apply
               : s == "before_journal" ? crash_point::before_journal
               : s == "before_reply" ? crash_point::before_reply
                                     : crash_point::none;
      if (const char* n = std::getenv("FUSEXX_CRASH_AFTER")) crash_after_ = std::strtoull(n, nullptr, 10);
      if (crash_ == crash_point::none) log::warn("FUSEXX_CRASH_POINT={} is not a crash point; ignored", s);
      else log::info("crash test: this server dies at '{}' of its journaled request #{}", s, crash_after_);
    }
  }

  disposition handle(incoming& in) {
    if (in.bytes.size() < sizeof(proto::in_header)) return dispatcher_.handle(in);
    proto::in_header h;
    std::memcpy(&h, in.bytes.data(), sizeof h);
    bool maybe_applied = false;
    if (!applied_.empty() || !in_doubt_.empty()) {
      if (h.unique & proto::unique_resend_bit) {
        if (auto it = applied_.find(h.unique & ~proto::unique_resend_bit); it != applied_.end()) {
          answer_again(in.sink, h.unique, it->second);
          return disposition::replied;
        }
        maybe_applied = in_doubt_.contains(h.unique & ~proto::unique_resend_bit);
        if (maybe_applied) log::debug("-> unique={:#x} was under way at the crash: handled as maybe applied", h.unique);
      } else if (!fresh_seen_.load(std::memory_order_relaxed)) {
        // The kernel queues resent requests ahead of every newer one: once
        // a new one has been read, every resent one has been too.
        fresh_seen_.store(true, std::memory_order_relaxed);
      }
    }
    const auto op = static_cast<proto::opcode>(h.opcode);
    if (!journaled(op, model_)) {
      const disposition d = dispatcher_.handle(in);
      note_progress();
      return d;
    }

    const bool crash_here = crash_ != crash_point::none && ++seen_ == crash_after_;
    if (crash_here && crash_ == crash_point::before_apply) die("before_apply", h);
    auto* p = new pending(*this, in, h, crash_here ? crash_ : crash_point::none);
    std::unique_lock lock(mutex_);
    timespec t{};
    ::clock_gettime(CLOCK_REALTIME, &t);
    p->time = t;
    p->wrapper_holds_lock = true;
    current() = p;
    journal_context context;
    if (model_ == recovery_model::redo) {
      // Redo: the intent first. A crash from here until the outcome is
      // recorded leaves the request in doubt (its change may be on disk);
      // its resend is handled with maybe_applied(). The data of a write
      // stays out: the resend brings it again.
      p->record = append_request(*p, *journal_);
      p->appended = true;
      after_append();
      context = {.note = &p->note, .maybe_applied = maybe_applied};
    }
    disposition d;
    {
      time_pin pin(t);
      in.sink = reply_sink{p, &pending::send};
      journal_context* outer = std::exchange(journal_now, model_ == recovery_model::redo ? &context : nullptr);
      d = dispatcher_.handle(in);
      journal_now = outer;
    }
    current() = nullptr;
    if (model_ == recovery_model::redo && d == disposition::no_reply) {
      // FORGET and the like: no reply, but an outcome (the note).
      if (p->crash == crash_point::before_journal) die("before_journal", h);
      p->record = journal_->append(h.unique, t, {}, {}, {}, p->note);
      after_append();
      if (p->crash == crash_point::before_reply) die("before_reply", h);  // (no reply: right after the outcome)
    } else if (!p->appended) {
      // Not answered yet: FORGET and the like never will be; a handler that
      // suspended will be, later. The request is recorded now, where its
      // changes fall in the order (a write that waits for the kernel's
      // cached pages to go has applied its data already; a lock request
      // waits, and its replay will wait for the same release); the reply
      // follows as a record of its own.
      if (p->crash == crash_point::before_journal) die("before_journal", h);
      p->record = append_request(*p, *journal_);
      p->appended = true;
      after_append();
      if (d == disposition::no_reply && p->crash == crash_point::before_reply) die("before_reply", h);
    }
    if (d == disposition::suspended && p->wrapper_holds_lock) {
      // Its reply has not come (it would have taken the lock from here):
      // a checkpoint from now until it does carries its request over.
      p->waiting = true;
      waiting_.push_back(p);
    }
    if (p->wrapper_holds_lock) lock.unlock();
    else (void)lock.release();  // the reply (below dispatcher_.handle) unlocked it already
    if (d == disposition::no_reply) p->drop();  // no reply will come to drop its share
    p->drop();
    note_progress();
    return d;
  }

  // The successor's side, before it serves: replays every record of `j` on
  // the restored state through `d`, remembers the replies kept for resent
  // requests, and continues the journal after its last whole record.
  //
  // A record may wait during the replay: a lock request that waited is
  // journaled when its handler suspended, and its grant as a reply of its
  // own, which can be inside the handler that released the lock (memfs
  // wakes waiters there), so before that handler's own record. Its replay
  // waits until the release's replay wakes it, as it did then; the replies
  // are compared once every record has run. One still waiting at the end
  // is ended (end_unanswered).
  //
  // `logs`: the journals to replay, in order (a checkpoint taken by a
  // forked child leaves records in two: those before it, those after).
  replay_report replay(std::span<journal* const> logs, std::size_t scratch_size) {
    replay_report report;
    buffer buf(scratch_size);
    // Requests that were interrupted (a lock request that stopped waiting),
    // or whose replay a successor ended (end_unanswered), are interrupted
    // again, or their replay would wait — and could take the lock later,
    // for an owner that was told EINTR.
    // (An end covers the records of its unique before it only: a request
    // resent once more, after the replay that ended it, has the same unique
    // and is a request of its own.)
    std::unordered_set<std::uint64_t> interrupted;
    std::unordered_map<std::uint64_t, std::uint64_t> ended_at;  // unique → the position of its last end
    std::unordered_set<std::uint64_t> answered;                // a reply to the kernel is on record
    std::uint64_t position = 0;
    for (journal* log : logs)
      log->for_each([&](const journal::record& r) {
        ++position;
        if (r.flags & journal::ended) ended_at[r.unique] = position;
        if (r.reply.size() < sizeof(proto::out_header) || (r.flags & journal::ended)) return;
        answered.insert(r.unique);
        proto::out_header oh;
        std::memcpy(&oh, r.reply.data(), sizeof oh);
        if (oh.error == -EINTR) interrupted.insert(r.unique);
      });
    std::vector<std::pair<journal::record, captured*>> kept;
    std::unordered_map<std::uint64_t, captured*> replayed;  // unique → what its replay answered
    std::vector<captured*> in_order;
    bool first_log = true;
    position = 0;
    const auto each = [&](const journal::record& r) {
      ++position;
      if (!r.request.empty() && (first_log || !(r.flags & journal::carried))) {
        ++report.records;
        // Lives as long as this object: a replayed handler that waits may
        // reply to it after the replay.
        captured* got = &replies_.emplace_back();
        got->sent = r.sent;
        got->unique = r.unique;
        got->time = r.time;
        got->op = r.request.size() >= sizeof(proto::in_header) ? opcode_of(r.request) : proto::opcode{};
        replayed[r.unique] = got;
        in_order.push_back(got);
        if (!buf) buf = buffer(scratch_size);
        incoming in{.bytes = r.request, .scratch = buf.span(), .owner = &buf, .sink = reply_sink{got, &captured::send}};
        const auto end = ended_at.find(r.unique);
        if (interrupted.contains(r.unique) || (end != ended_at.end() && end->second > position))
          dispatcher_.interrupt(r.unique);
        time_pin pin(r.time);
        (void)dispatcher_.handle(in);
      }
      if (!r.reply.empty() && !(r.flags & journal::ended)) {
        // With its request, or alone: the reply of one that had suspended.
        if (auto it = replayed.find(r.unique); it != replayed.end()) {
          if (r.request.empty()) it->second->sent = r.sent;
          kept.emplace_back(r, it->second);
        }
        applied_[r.unique & ~proto::unique_resend_bit].assign(r.reply.begin(), r.reply.end());
      }
    };
    // A request carried over a checkpoint (carry_waiting) runs from the
    // journal before it when that one is replayed too (the checkpoint's
    // child failed): its copy is skipped.
    for (journal* log : logs) {
      log->truncate(log->for_each(each));
      first_log = false;
    }
    for (auto& [r, got] : kept) {
      if (!got->done) {
        ++report.unfinished;
        continue;
      }
      if (got->bytes.size() == r.reply.size() && std::memcmp(got->bytes.data(), r.reply.data(), r.reply.size()) == 0)
        continue;
      if (++report.differing > named_differences) continue;
      log::warn("recovery: the replay of request {:#x} ({}) answered differently than before the crash", r.unique,
                proto::name(got->op));
    }
    if (report.differing > named_differences)
      log::warn("recovery: {} more replayed requests answered differently", report.differing - named_differences);
    report.ended = end_unanswered(in_order, answered);
    return report;
  }

  // The successor's side for a redo filesystem (journal_note.hpp), before
  // it serves: hands each outcome's note to `redo(note)` (false: it could
  // not be redone) in the order they were recorded, remembers the replies
  // kept for resent requests, and continues the journal after its last
  // whole record. A request whose intent has no outcome was under way at
  // the crash: its resend will be handled with maybe_applied(); those that
  // get no reply and are not resent (FORGET) are returned, to be run again
  // (run_again) once the filesystem has checked what it holds.
  template <class Redo>
  replay_report redo(std::span<journal* const> logs, Redo&& redo, std::vector<std::vector<std::byte>>& rerun) {
    replay_report report;
    // unique (without the resend bit: a resend's outcome settles the
    // original's intent too) → the intent's request
    std::unordered_map<std::uint64_t, std::vector<std::byte>> under_way;
    bool first_log = true;
    const auto each = [&](const journal::record& r) {
      const std::uint64_t unique = r.unique & ~proto::unique_resend_bit;
      if (!r.request.empty()) {
        if (!first_log && (r.flags & journal::carried)) return;  // (as in replay())
        ++report.records;
        under_way[unique].assign(r.request.begin(), r.request.end());
        return;
      }
      under_way.erase(unique);
      if (!r.note.empty() && !redo(r.note) && ++report.differing <= named_differences)
        log::warn("recovery: the note of request {:#x} could not be redone", r.unique);
      if (!r.reply.empty()) applied_[unique].assign(r.reply.begin(), r.reply.end());
    };
    for (journal* log : logs) {
      log->truncate(log->for_each(each));
      first_log = false;
    }
    if (report.differing > named_differences)
      log::warn("recovery: {} more notes could not be redone", report.differing - named_differences);
    for (auto& [unique, request] : under_way) {
      if (request.size() < sizeof(proto::in_header)) continue;
      proto::in_header h;
      std::memcpy(&h, request.data(), sizeof h);
      const auto op = static_cast<proto::opcode>(h.opcode);
      if (op == proto::opcode::forget || op == proto::opcode::batch_forget) rerun.push_back(std::move(request));
      else in_doubt_.insert(unique);
    }
    return report;
  }
  // Runs a request again that was under way at the crash and gets no reply
  // (redo()'s `rerun`), journaled like any other.
  void run_again(std::span<const std::byte> request, std::size_t scratch_size) {
    buffer buf(scratch_size);
    captured ignored;
    incoming in{.bytes = request, .scratch = buf.span(), .owner = &buf, .sink = reply_sink{&ignored, &captured::send}};
    (void)handle(in);
  }

  // A checkpoint holds everything the journal said (the server is parked),
  // but for the requests still waiting (a lock request): those are not
  // state, so their records start the journal that follows, or a grant
  // after the checkpoint would be journaled as a reply whose request no
  // replay runs. The replies kept for resent requests go once every resent
  // request has been read (parked, every one read has been answered); until
  // then they stay, though their records are gone.
  void checkpointed(std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    journal_->reset(generation);
    carry_waiting(*journal_);
    if (fresh_seen_.load(std::memory_order_relaxed)) forget_resent();
    wanted_.reset();
  }
  // Records go to `next` from now on (the server is parked): emptied first
  // for the checkpoint of `generation` that a forked child is about to
  // take, or, undoing that switch, as they are.
  void switch_to(journal& next, std::optional<std::uint64_t> generation) {
    std::lock_guard lock(mutex_);
    if (generation) {
      next.reset(*generation);
      carry_waiting(next);
    }
    journal_ = &next;
    if (generation && fresh_seen_.load(std::memory_order_relaxed)) forget_resent();
    wanted_.reset();
  }
  // A checkpoint could not be taken: ask again in a second at the earliest.
  void checkpointed_failed() {
    not_before_.store(std::chrono::steady_clock::now().time_since_epoch().count() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::seconds(1)).count(),
                      std::memory_order_relaxed);
    wanted_.reset();
  }
  // The next checkpoint once the journal holds this much.
  void checkpoint_at(std::uint64_t bytes) noexcept { checkpoint_at_.store(bytes, std::memory_order_relaxed); }
  // How much of a journal's memory give_back() leaves allocated.
  void keep(std::uint64_t bytes) noexcept { keep_ = bytes; }
  // Gives the memory of `j` past its records back (journal::give_back),
  // with no record being appended meanwhile.
  void give_back(journal& j) {
    std::lock_guard lock(mutex_);
    j.give_back(keep_);
  }
  // Readable when the journal has grown enough for a checkpoint.
  int checkpoint_wanted_fd() const noexcept { return wanted_.fd(); }
  journal& journal_ref() noexcept { return *journal_; }

 private:
  // One journaled request on its way: shared by the handler's call and its
  // reply, which may come later from another thread (a suspended handler).
  struct pending {
    pending(journaling& j, const incoming& in, const proto::in_header& h, crash_point c)
        : owner(j), request(in.bytes), request_more(in.payload), real(in.sink), unique(h.unique),
          op(static_cast<proto::opcode>(h.opcode)), crash(c) {}
    journaling& owner;
    std::span<const std::byte> request, request_more;  // alive until the reply: the frame owns the buffer
    reply_sink real;
    std::uint64_t unique;
    proto::opcode op;
    crash_point crash;
    timespec time{};
    journal::record_head* record = nullptr;
    bool appended = false;
    bool wrapper_holds_lock = false;  // only the handling thread reads and writes it
    std::vector<std::byte> note;      // redo: what the filesystem noted (journal_note)
    bool waiting = false;             // suspended, the reply still to come: in waiting_ (under the lock)
    std::atomic<int> refs{2};         // the call and the reply

    void drop() {
      if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }
    // The reply: recorded, then sent. Inside the call (this thread holds the
    // lock), or later from wherever the handler resumed (takes it).
    static int send(void* self, const iovec* iov, int count) {
      auto* p = static_cast<pending*>(self);
      journaling& j = p->owner;
      const bool inside = current() == p && p->wrapper_holds_lock;
      // Not inside: resumed later elsewhere, or woken inside another
      // journaled request's handler on this thread (memfs wakes lock
      // waiters there: the mutex is recursive for that).
      std::unique_lock lock(j.mutex_, std::defer_lock);
      if (!inside) lock.lock();
      if (p->waiting) {
        std::erase(j.waiting_, p);
        p->waiting = false;
      }
      const bool keep = keeps_reply(p->op);
      const auto reply = keep ? std::span<const iovec>(iov, static_cast<std::size_t>(count)) : std::span<const iovec>{};
      if (j.model_ == recovery_model::redo) {
        // The outcome: the reply, and what the filesystem noted.
        if (p->crash == crash_point::before_journal) j.die("before_journal", p->unique, p->op);
        p->record = j.journal_->append(p->unique, p->time, {}, {}, reply, p->note);
        j.after_append();
      } else if (!p->appended) {
        // Answered before its handler returned: request and reply, one record.
        if (p->crash == crash_point::before_journal) j.die("before_journal", p->unique, p->op);
        p->record = j.journal_->append(p->unique, p->time, p->request, p->request_more, reply);
        p->appended = true;
        j.after_append();
      } else if (keep) {
        // After it suspended: the request is journaled; its reply, alone.
        p->record = j.journal_->append(p->unique, p->time, {}, {}, reply);
        j.after_append();
      } else {
        p->record = nullptr;
      }
      if (inside) {
        j.mutex_.unlock();
        p->wrapper_holds_lock = false;
      } else {
        lock.unlock();
      }
      if (p->crash == crash_point::before_reply) j.die("before_reply", p->unique, p->op);
      const int sent = p->real.send(p->real.context, iov, count);
      if (sent != 0) journal::set_sent(p->record, sent);
      p->drop();
      return sent;
    }
  };

  // The replay's sink: keeps the reply, and answers as the kernel did then.
  struct captured {
    std::uint64_t unique = 0;
    timespec time{};
    proto::opcode op{};
    std::int32_t sent = 0;
    bool done = false;
    std::vector<std::byte> bytes;
    static int send(void* self, const iovec* iov, int count) {
      auto* c = static_cast<captured*>(self);
      for (int i = 0; i < count; ++i) {
        auto* b = static_cast<const std::byte*>(iov[i].iov_base);
        c->bytes.insert(c->bytes.end(), b, b + iov[i].iov_len);
      }
      c->done = true;
      return c->sent;
    }
  };

  // A request's own record, without its reply. Under redo the intent:
  // the data of a write stays out (the resend brings it again).
  journal::record_head* append_request(const pending& p, journal& to, std::uint32_t flags = 0) {
    if (model_ == recovery_model::redo && p.op == proto::opcode::write)
      return to.append(p.unique, p.time,
                       p.request.first(std::min(p.request.size(), sizeof(proto::in_header) + sizeof(proto::write_in))),
                       {}, {}, {}, flags);
    return to.append(p.unique, p.time, p.request, p.request_more, {}, {}, flags);
  }

  // (Under the lock, `to` just emptied for a checkpoint.) The requests still
  // waiting, recorded again in the order they came: a replay on that
  // checkpoint waits on them again, and the release that grants them
  // grants them again. Where the journal before is replayed too (the
  // checkpoint's child failed), replay() skips these copies.
  void carry_waiting(journal& to) {
    for (pending* p : waiting_) (void)append_request(*p, to, journal::carried);
  }

  static proto::opcode opcode_of(std::span<const std::byte> request) noexcept {
    proto::in_header h;
    std::memcpy(&h, request.data(), sizeof h);
    return static_cast<proto::opcode>(h.opcode);
  }

  // (After a replay.) Replayed requests still waiting whose caller was never
  // answered — a lock request whose lock is still held — are ones the kernel
  // resends, and the resend waits in its own right. The replay's copy is
  // ended as though its caller had given up: left waiting beside the
  // resend, it could take the lock later for a caller the kernel has told
  // EINTR meanwhile (the resend interrupted). The end is journaled, flagged
  // `ended`, so that a later replay interrupts that request before it
  // waits. A handler that does not end on an interrupt goes on waiting, as
  // before. Returns how many were ended.
  std::uint64_t end_unanswered(const std::vector<captured*>& replayed,
                               const std::unordered_set<std::uint64_t>& answered) {
    std::uint64_t ended = 0;
    for (captured* got : replayed) {
      if (got->done || answered.contains(got->unique)) continue;
      dispatcher_.interrupt(got->unique);
      if (!got->done) {
        // It goes on waiting; the resend must not read as interrupted.
        dispatcher_.session().interrupts().finished(got->unique);
        continue;
      }
      std::lock_guard lock(mutex_);
      const iovec reply{got->bytes.data(), got->bytes.size()};
      (void)journal_->append(got->unique, got->time, {}, {}, std::span(&reply, 1), {}, journal::ended);
      ++ended;
      log::debug("recovery: the replay of request {:#x} ({}) waited; ended, the kernel resends it", got->unique,
                 proto::name(got->op));
    }
    return ended;
  }

  static pending*& current() noexcept {
    static thread_local pending* p = nullptr;
    return p;
  }

  // Every resent request has been read: what was kept for them can go.
  void forget_resent() {
    applied_.clear();
    in_doubt_.clear();
  }

  // The keeper tells a server that crashes on start from one that served:
  // the first request this one got through marks the journal.
  void note_progress() {
    if (noted_.load(std::memory_order_relaxed)) return;
    if (!noted_.exchange(true)) {
      std::lock_guard lock(mutex_);
      journal_->note_answered();
    }
  }

  void after_append() {
    if (journal_->overflowed() && !overflow_logged_.exchange(true))
      log::error("the crash journal is full (no checkpoint could be taken): a crash now cannot be recovered from");
    if (journal_->used() >= checkpoint_at_.load(std::memory_order_relaxed) &&
        std::chrono::steady_clock::now().time_since_epoch().count() >= not_before_.load(std::memory_order_relaxed))
      wanted_.set();
  }

  // A resent request that was applied before the crash: its recorded reply,
  // echoing the unique as the kernel sent it now (with the resend bit).
  static void answer_again(const reply_sink& sink, std::uint64_t unique, std::span<const std::byte> reply) {
    proto::out_header oh;
    std::memcpy(&oh, reply.data(), sizeof oh);
    oh.unique = unique;
    iovec iov[2] = {{&oh, sizeof oh},
                    {const_cast<std::byte*>(reply.data() + sizeof oh), reply.size() - sizeof oh}};
    (void)sink.send(sink.context, iov, iov[1].iov_len ? 2 : 1);
    log::debug("<- unique={:#x} answered from the journal (applied before the crash)", unique);
  }

  [[noreturn]] void die(std::string_view where, const proto::in_header& h) {
    die(where, h.unique, static_cast<proto::opcode>(h.opcode));
  }
  [[noreturn]] void die(std::string_view where, std::uint64_t unique, proto::opcode op) {
    die_for_crash_test(fmt::format("'{}' of request {:#x} ({})", where, unique, proto::name(op)));
  }

  Dispatcher& dispatcher_;
  journal* journal_;  // where records go: changed only with every reader parked
  std::atomic<std::uint64_t> checkpoint_at_;
  std::uint64_t keep_ = 0;
  // One journaled request at a time: the journal's order is the order of
  // the changes.
  std::recursive_mutex mutex_;
  std::deque<captured> replies_;  // the replay's, kept for handlers that reply late
  // Journaled requests whose handler suspended and has not replied, in the
  // order they were journaled (a lock request waiting): under the lock.
  std::vector<pending*> waiting_;
  // unique → the reply kept for it, from the replay: read concurrently
  // (handle), changed only before serving and while parked.
  std::unordered_map<std::uint64_t, std::vector<std::byte>> applied_;
  // Redo: uniques of requests under way at the crash (maybe applied).
  std::unordered_set<std::uint64_t> in_doubt_;
  const recovery_model model_;
  std::atomic<bool> fresh_seen_{false};
  std::atomic<bool> noted_{false};  // note_progress() was done  // a request that was not resent has come since the replay
  event wanted_;
  std::atomic<bool> overflow_logged_{false};
  std::atomic<std::chrono::steady_clock::rep> not_before_{0};  // no checkpoint asked for before (checkpointed_failed)
  crash_point crash_ = crash_point::none;
  std::uint64_t crash_after_ = 0;
  std::atomic<std::uint64_t> seen_{0};
};

}  // namespace detail
}  // namespace fusexx
