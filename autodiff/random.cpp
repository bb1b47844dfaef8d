#include "autodiff/random.hpp"

#include <cmath>

namespace ad {

static uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void Rng::reseed(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
  has_spare_ = false;
}

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = uniform(), u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;  // log(0) guard
  double r = std::sqrt(-2.0 * std::log(u1)), th = 6.283185307179586 * u2;
  spare_ = r * std::sin(th);
  has_spare_ = true;
  return r * std::cos(th);
}

uint64_t Rng::below(uint64_t n) {
  if (n == 0) fail("Rng::below: n must be positive");
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // reject the biased tail
  uint64_t x;
  do x = next_u64();
  while (x >= limit);
  return x % n;
}

std::vector<int64_t> Rng::permutation(int64_t n) {
  std::vector<int64_t> p((size_t)n);
  for (int64_t i = 0; i < n; ++i) p[(size_t)i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[(size_t)i], p[(size_t)below((uint64_t)i + 1)]);
  return p;
}

void fill_uniform(Tensor& x, double lo, double hi, Rng& rng) {
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    T* p = x.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) p[i] = (T)rng.uniform(lo, hi);
  });
}
void fill_normal(Tensor& x, double mean, double std, Rng& rng) {
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    T* p = x.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) p[i] = (T)(mean + std * rng.normal());
  });
}
Tensor rand_uniform(const Shape& s, double lo, double hi, Rng& rng, DType t) {
  Tensor x = empty(s, t);
  fill_uniform(x, lo, hi, rng);
  return x;
}
Tensor rand_normal(const Shape& s, double mean, double std, Rng& rng, DType t) {
  Tensor x = empty(s, t);
  fill_normal(x, mean, std, rng);
  return x;
}
Tensor rand_bernoulli(const Shape& s, double p, Rng& rng, DType t) {
  Tensor x = empty(s, t);
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    T* d = x.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) d[i] = rng.bernoulli(p) ? (T)1 : (T)0;
  });
  return x;
}

}  // namespace ad
