// Randomness for the bounds checks: the engine's seeded generator (ad::Rng, xoshiro256** with
// its own uniform / normal / below), plus the one draw the checks need that ad::Rng lacks.
//
// Why not <random>: its distributions (normal_distribution, uniform_real_distribution) are
// implementation-defined, so the same seed would give different numbers on another libstdc++
// and the tables would not be reproducible.
#pragma once
#include <utility>
#include <vector>

#include "autodiff/random.hpp"

namespace pd::bounds {

using Rng = ad::Rng;

// k distinct indices from [0, n), in random order (partial Fisher-Yates: the first k swaps).
inline std::vector<int> sample_distinct(Rng& rng, int n, int k) {
  std::vector<int> idx((size_t)n);
  for (int i = 0; i < n; ++i) idx[(size_t)i] = i;
  for (int i = 0; i < k; ++i) std::swap(idx[(size_t)i], idx[(size_t)(i + (int)rng.below((uint64_t)(n - i)))]);
  idx.resize((size_t)k);
  return idx;
}

}  // namespace pd::bounds
