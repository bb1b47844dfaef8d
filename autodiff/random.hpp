// Seeded, reproducible randomness: xoshiro256** seeded through splitmix64, with our own
// uniform / normal / Bernoulli / permutation so results do not depend on the C++ library's
// distribution implementations. Same seed -> bit-identical streams on every platform.
#pragma once
#include <cstdint>
#include <vector>

#include "autodiff/tensor.hpp"

namespace ad {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next_u64() {  // xoshiro256** (inline: fill loops draw one per element)
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform() { return (double)(next_u64() >> 11) * 0x1.0p-53; }  // [0, 1), 53 random bits
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal();                        // standard normal (Box-Muller, both values used)
  bool bernoulli(double p) { return uniform() < p; }
  uint64_t below(uint64_t n);             // uniform integer in [0, n), unbiased
  std::vector<int64_t> permutation(int64_t n);  // Fisher-Yates
  // An independent stream derived from this one (for per-component or per-run streams).
  Rng split() { return Rng(next_u64()); }
  // The whole generator state (xoshiro words + Box-Muller spare), for checkpoints: a
  // restored generator continues the stream exactly.
  struct State {
    uint64_t s[4];
    bool has_spare;
    double spare;
  };
  State state() const { return {{s_[0], s_[1], s_[2], s_[3]}, has_spare_, spare_}; }
  void set_state(const State& st) {
    for (int i = 0; i < 4; ++i) s_[i] = st.s[i];
    has_spare_ = st.has_spare;
    spare_ = st.spare;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0;
};

Tensor rand_uniform(const Shape& s, double lo, double hi, Rng& rng, DType t = DType::f32);
Tensor rand_normal(const Shape& s, double mean, double std, Rng& rng, DType t = DType::f32);
Tensor rand_bernoulli(const Shape& s, double p, Rng& rng, DType t = DType::f32);  // 0/1
void fill_uniform(Tensor& x, double lo, double hi, Rng& rng);  // in place, no grad
void fill_normal(Tensor& x, double mean, double std, Rng& rng);

}  // namespace ad
