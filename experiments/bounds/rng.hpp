// Small seeded random generator for the bounds checks.
//
// Why not <random>: the distributions (normal_distribution, uniform_real_distribution) are
// implementation-defined, so the same seed gives different numbers on another libstdc++ and
// the tables would not be reproducible. xoshiro256** (seeded through splitmix64) plus our own
// Box-Muller transform is fully specified here.
#pragma once
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace pd::bounds {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) {
    // splitmix64 expands one 64-bit seed into the 256-bit xoshiro state (never all zero).
    std::uint64_t z = seed;
    for (auto& word : s_) {
      z += 0x9E3779B97F4A7C15ULL;
      std::uint64_t x = z;
      x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
      x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
      word = x ^ (x >> 31);
    }
  }
  // xoshiro256** step.
  std::uint64_t next_u64() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n) (n > 0); the modulo bias is < n / 2^64, irrelevant here.
  std::uint64_t below(std::uint64_t n) { return next_u64() % n; }
  bool bernoulli(double p) { return uniform() < p; }
  // Standard normal via Box-Muller; the second value of each pair is cached.
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double angle = 2.0 * M_PI * u2;
    spare_ = r * std::sin(angle);
    has_spare_ = true;
    return r * std::cos(angle);
  }
  // k distinct indices from [0, n), in random order (partial Fisher-Yates).
  std::vector<int> sample_distinct(int n, int k) {
    std::vector<int> idx(n);
    for (int i = 0; i < n; ++i) idx[i] = i;
    for (int i = 0; i < k; ++i) std::swap(idx[i], idx[i + static_cast<int>(below(n - i))]);
    idx.resize(k);
    return idx;
  }
  // A child generator with an independent stream (for per-experiment seeding).
  Rng split(std::uint64_t salt) { return Rng(next_u64() ^ (salt * 0xD1B54A32D192ED03ULL)); }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace pd::bounds
