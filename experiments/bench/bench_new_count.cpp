// Counting global operator new, so `pd bench` can report heap allocations per training step
// beyond the engine's own pools (std::vector growth, strings, shared state in ops).
//
// Only the two basic replaceable functions are defined; libstdc++'s other forms (new[],
// nothrow, sized delete) forward to them, and its aligned forms use their own allocator
// and deallocator consistently. Under AddressSanitizer nothing is replaced: ASan defines
// every form itself and would report a malloc / operator-delete mismatch otherwise.
// Linked into both build/pd and build/pd_tests; the only effect is one relaxed atomic
// increment per allocation.
#include <atomic>
#include <cstdlib>
#include <new>

#include "experiments/bench/bench.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define PD_COUNT_NEW 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PD_COUNT_NEW 0
#endif
#endif
#ifndef PD_COUNT_NEW
#define PD_COUNT_NEW 1
#endif

namespace {
std::atomic<uint64_t> g_new_calls{0};
}

namespace pd {
uint64_t new_calls() { return g_new_calls.load(std::memory_order_relaxed); }
bool new_calls_counted() { return PD_COUNT_NEW; }
}  // namespace pd

#if PD_COUNT_NEW
void* operator new(std::size_t n) {
  g_new_calls.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) n = 1;
  for (;;) {
    if (void* p = std::malloc(n)) return p;
    std::new_handler h = std::get_new_handler();
    if (!h) throw std::bad_alloc();
    h();
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif
