// Data parallelism for the few kernels big enough to pay for a second thread (the fused
// CI function). Work is split into a FIXED number of chunks whose boundaries depend only
// on the problem size, never on the thread count; kernels that reduce keep one partial
// result per chunk and add them in chunk order, so the numbers are bit-identical with 1
// or N threads. Chunks run on the calling thread plus persistent workers, which touch raw
// memory only: no tensors, no engine calls (the engine itself is single-threaded).
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>

namespace ad {

// Threads used by parallel_chunks: PD_NUM_THREADS if set, else the hardware's count, at
// most 8. 1 runs every chunk on the calling thread.
int num_threads();
void set_num_threads(int n);

// A borrowed callable (pointer + invoker): passing a lambda never allocates, whatever it
// captures (a std::function would, past its small buffer). Valid while the callable lives.
struct ChunkFn {
  void* obj;
  void (*call)(void*, int);
  void operator()(int c) const { call(obj, c); }
};

// Calls fn(c) for c = 0 .. n_chunks-1, spread over num_threads() threads; returns when all
// are done. fn must not throw.
void parallel_chunks(int n_chunks, ChunkFn fn);
template <class F>
void parallel_chunks(int n_chunks, F&& fn) {
  using Fn = std::remove_reference_t<F>;
  parallel_chunks(n_chunks, ChunkFn{const_cast<void*>(static_cast<const void*>(&fn)),
                                    [](void* o, int c) { (*static_cast<Fn*>(o))(c); }});
}

// [begin, end) of chunk c when n items are split into n_chunks nearly equal chunks.
inline std::pair<int64_t, int64_t> chunk_range(int64_t n, int n_chunks, int c) {
  return {n * c / n_chunks, n * (c + 1) / n_chunks};
}

// The fixed chunk count of a pass over `entries` numbers whose work splits into `items`
// independent pieces: one chunk below 2^16 entries (a pool wake-up costs more than the
// pass), else min(max_chunks, items), at least 1. It depends on the sizes only, so a
// kernel that reduces per chunk gives the same bits with any thread count.
inline int fixed_chunks(int64_t entries, int64_t items, int max_chunks) {
  if (entries < ((int64_t)1 << 16)) return 1;
  return (int)(items < 1 ? 1 : items < max_chunks ? items : max_chunks);
}

}  // namespace ad
