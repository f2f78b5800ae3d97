#pragma once
// Where the coroutine frames of requests come from. Every request a
// coroutine handler serves makes two frames: the handler's task and the
// dispatcher's driver (dispatch.hpp). With malloc() they were two
// malloc/free pairs per request, about 0.2 us of a 4 KiB read's 1.3 us of
// user space on passthrough io_uring (perf record -a, samples per read;
// docs/benchmarks.md).
//
// So freed frames are kept, per thread and by size class, for the next frame
// of that class: an allocation pops the most recently freed one (still in
// cache), a free pushes, no lock and no atomic. A frame freed on another
// thread than the one that made it (a handler resumed elsewhere) joins that
// thread's cache. Each class keeps a few frames only, so a thread that frees
// what others make does not hoard them; what is over that, and frames larger
// than the largest class, go to the global allocator. A thread's cache is
// given back when it ends.
//
// Under AddressSanitizer there is no cache: each frame is its own allocation,
// so a use after free stays visible.
#include <cstddef>
#include <cstdint>
#include <new>

namespace fusexx::detail {

class frame_cache {
 public:
  static constexpr std::size_t granule = 64;     // size classes: 64, 128, ... bytes
  static constexpr std::size_t classes = 16;     // up to 1 KiB
  static constexpr std::size_t kept_per_class = 16;

#if defined(__SANITIZE_ADDRESS__)
  static constexpr bool enabled = false;
#else
  static constexpr bool enabled = true;
#endif

  [[gnu::always_inline]] static void* allocate(std::size_t n) {
    const std::size_t c = class_of(n);
    if (!enabled || c >= classes) return ::operator new(n);
    lists& l = mine();
    if (node* f = l.head[c]) {
      l.head[c] = f->next;
      --l.count[c];
      return f;
    }
    return ::operator new(size_of(c));
  }

  // `n` is what allocate() was given (a promise's sized operator delete).
  [[gnu::always_inline]] static void deallocate(void* p, std::size_t n) noexcept {
    const std::size_t c = class_of(n);
    if (!enabled || c >= classes) return ::operator delete(p);
    lists& l = mine();
    if (l.ended || l.count[c] >= kept_per_class) return ::operator delete(p);
    if (!l.drained_at_exit) register_drain(l);
    auto* f = static_cast<node*>(p);
    f->next = l.head[c];
    l.head[c] = f;
    ++l.count[c];
  }

  // How many frames of `size`'s class this thread keeps (tests).
  static std::size_t kept(std::size_t size) noexcept {
    const std::size_t c = class_of(size);
    return c < classes ? mine().count[c] : 0;
  }

 private:
  struct node {
    node* next;
  };
  // Trivial, so reaching it costs no initialisation check, and it outlives
  // the thread's other thread_local objects (their destructors may still
  // free frames: those go to the global allocator, `ended`).
  struct lists {
    node* head[classes];
    std::uint8_t count[classes];
    bool drained_at_exit;
    bool ended;
  };
  static lists& mine() noexcept {
    static thread_local lists l{};
    return l;
  }
  static constexpr std::size_t class_of(std::size_t n) noexcept { return n == 0 ? 0 : (n - 1) / granule; }
  static constexpr std::size_t size_of(std::size_t c) noexcept { return (c + 1) * granule; }

  // Registered at a thread's first kept frame: gives its frames back when
  // the thread ends.
  static void register_drain(lists& l) noexcept {
    struct drain {
      lists* of;
      ~drain() {
        of->ended = true;
        for (auto& head : of->head)
          while (node* f = head) {
            head = f->next;
            ::operator delete(f);
          }
        for (auto& k : of->count) k = 0;
      }
    };
    static thread_local drain d{&l};
    l.drained_at_exit = true;
  }
};

// A promise type that derives from this takes its frame from the cache.
struct cached_frame {
  [[gnu::always_inline]] static void* operator new(std::size_t n) { return frame_cache::allocate(n); }
  [[gnu::always_inline]] static void operator delete(void* p, std::size_t n) noexcept { frame_cache::deallocate(p, n); }
};

}  // namespace fusexx::detail
