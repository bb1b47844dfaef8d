// Float32 vector math of the engine, in one place: exp, the erf and tanh GELUs, horizontal
// sums, and the softmax-family row loops (softmax, log_softmax, attention, cross_entropy,
// kl_divergence). Users: autodiff/ops_nn.cpp, ops_loss.cpp, ops_elementwise.cpp and the
// fused CI functions in decomp/ci_ops.cpp.
//
// One guard: AD_ROWMATH_AVX2 is defined when the compiler targets AVX2 *and* FMA (the
// Makefile's default ARCH = -mavx2 -mfma); code that uses the intrinsics below, here or in a
// caller, tests that macro. Without it every kernel is its scalar reference -- the same
// formula, one element at a time (the erf-GELU's with libm's exp) -- so `make ARCH=` builds
// and runs anywhere; tails shorter than 8 lanes always take the scalar path.
//
// Why hand-written float kernels: libm's expf / erff / tanhf are scalar and do not vectorise,
// and they dominated a softmax over attention scores or a vocabulary, a transformer MLP's
// GELU and the CI functions' GELU. float64 -- the gradient audits and the PyTorch
// cross-check, which compare to 1e-9 -- always goes through std::exp / std::erf.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define AD_ROWMATH_AVX2 1
#endif

namespace ad {
namespace rowmath {

// ---- exp, float32 ------------------------------------------------------------------------------
// exp_scalar(x), exp_avx2(x): e^x, elementwise (one float / 8 lanes).
//   Method: Cephes expf. n = round(x log2 e), r = x - n ln2 (ln2 in two parts, |r| <= 0.35),
//   e^r by a degree-6 minimax polynomial, times 2^n (as 2^(n/2) 2^(n - n/2) in the vector
//   kernel, so that n = 128 stays representable).
//   Accuracy: <= 1.3 ulp against the exact e^x wherever the result is a normal float, i.e.
//   on [-87.3365, 88.7228] (every float there checked once: 1.27 ulp vector, 1.03 scalar);
//   the two kernels agree within 1 ulp (tests/test_vecmath.cpp samples both claims).
//   Special values: NaN -> NaN; x < -87.3365 (e^x below FLT_MIN) and -inf -> 0 (no
//   subnormal results); x > 88.7228 (e^x above FLT_MAX) and +inf -> +inf; 0 and -0 -> 1.
// exp_avx2<true>: the same for a caller that guarantees x <= 0 or NaN (the GELU's exp(-x^2/2)),
//   cheaper: no upper clamp, no split of 2^n, and the flush to 0 comes from the scale 2^-127
//   having exponent field 0 instead of a compare and mask. Bit-identical to exp_avx2 on
//   [-87.3365, 0], -inf and NaN; below -87.683, 0 as well; in between (e^x < FLT_MIN) it keeps
//   the subnormal p 2^-126 where exp_avx2 gives 0.

// Cephes expf constants. kExpHi is past ln(FLT_MAX) = 88.7228 (above it the final product
// overflows to +inf by itself) and keeps n <= 128 and |r| < 0.28.
constexpr float kExpHi = 89.0f, kExpLo = -87.3365447504019f;
// exp_avx2<true>'s clamp: x log2 e rounds to n = -127 below -87.683 (and at -88)
constexpr float kExpFlush = -88.0f;
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

inline float exp_scalar(float x) {
  if (std::isnan(x)) return x;
  if (x < kExpLo) return 0.0f;
  if (x > kExpHi) return INFINITY;
  float n = std::nearbyint(x * kLog2e);
  float r = x - n * kLn2Hi - n * kLn2Lo;
  float p = kP0;
  p = p * r + kP1; p = p * r + kP2; p = p * r + kP3; p = p * r + kP4; p = p * r + kP5;
  p = p * r * r + r + 1.0f;
  return std::ldexp(p, (int)n);  // n may reach 128: ldexp handles the split exponent
}

#ifdef AD_ROWMATH_AVX2
template <bool kArgNonPositive = false>
inline __m256 exp_avx2(__m256 x) {
  // min/max return their SECOND operand when one is NaN: put x second so NaN survives.
  __m256 xc, below;
  if constexpr (kArgNonPositive) {
    xc = _mm256_max_ps(_mm256_set1_ps(kExpFlush), x);  // n = -127 below -87.68: see the scale
  } else {
    const __m256 lo = _mm256_set1_ps(kExpLo);
    below = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);  // -> 0 (false for NaN: NaN stays)
    xc = _mm256_max_ps(lo, _mm256_min_ps(_mm256_set1_ps(kExpHi), x));
  }
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i ni = _mm256_cvtps_epi32(n), bias = _mm256_set1_epi32(127);
  if constexpr (kArgNonPositive) {
    // n in [-127, 0]: 2^n from its exponent field, which is 0 for n = -127 -- the scale is
    // +0 and so is the result (no compare and mask needed)
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ni, bias), 23)));
  } else {
    // n is clamped to [-126, 128]; 2^128 overflows the exponent field, so split it as
    // 2^(n/2) * 2^(n - n/2) -- both factors are normal numbers, and p 2^(n/2) is exact, so
    // the result is rounded once, as the single product is for n <= 127.
    __m256i h1 = _mm256_srai_epi32(ni, 1), h2 = _mm256_sub_epi32(ni, h1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h2, bias), 23));
    return _mm256_andnot_ps(below, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2));
  }
}
#endif

// ---- horizontal sum ----------------------------------------------------------------------------
// hsum(v) = sum of the 8 lanes of v, always in the order of hsum_scalar below (so results do
// not depend on where a reduction was written). IEEE addition: NaN or inf lanes propagate.
inline float hsum_scalar(const float v[8]) {
  return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}
#ifdef AD_ROWMATH_AVX2
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// ---- softmax-family row loops ------------------------------------------------------------------
// Shapes: one contiguous row of n >= 0 elements. Float32 rows use the exp above and 8-lane
// partial sums (so a sum differs from the sequential loop by rounding only); float64 rows are
// the plain loops.
//
// Special values follow exp: x - shift = -inf (or anything below -87.3) gives 0, NaN stays
// NaN (so the NaN guard sees it), +inf is not reachable after subtracting the row max.

// y[j] = exp(x[j] - shift) for j < n; returns sum_j y[j]. x and y may alias.
inline float exp_shift_sum(const float* x, float* y, int64_t n, float shift) {
  int64_t j = 0;
  float total = 0;
#ifdef AD_ROWMATH_AVX2
  __m256 acc = _mm256_setzero_ps();
  const __m256 s = _mm256_set1_ps(shift);
  for (; j + 8 <= n; j += 8) {
    __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), s));
    _mm256_storeu_ps(y + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  total = hsum(acc);
#endif
  for (; j < n; ++j) {
    y[j] = exp_scalar(x[j] - shift);
    total += y[j];
  }
  return total;
}
inline double exp_shift_sum(const double* x, double* y, int64_t n, double shift) {
  double total = 0;
  for (int64_t j = 0; j < n; ++j) {
    y[j] = std::exp(x[j] - shift);
    total += y[j];
  }
  return total;
}

// sum_j exp(x[j] - shift) without storing the terms (cross_entropy / kl forward).
inline float exp_shift_sum_only(const float* x, int64_t n, float shift) {
  int64_t j = 0;
  float total = 0;
#ifdef AD_ROWMATH_AVX2
  __m256 acc = _mm256_setzero_ps();
  const __m256 s = _mm256_set1_ps(shift);
  for (; j + 8 <= n; j += 8) acc = _mm256_add_ps(acc, exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), s)));
  total = hsum(acc);
#endif
  for (; j < n; ++j) total += exp_scalar(x[j] - shift);
  return total;
}
inline double exp_shift_sum_only(const double* x, int64_t n, double shift) {
  double total = 0;
  for (int64_t j = 0; j < n; ++j) total += std::exp(x[j] - shift);
  return total;
}

// Largest entry of a row (the softmax shift). NaN entries are skipped here; they still
// propagate through exp(x - max) into the result.
inline double row_max(const double* x, int64_t n) {
  double m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}
inline float row_max(const float* x, int64_t n) {
  float m = -INFINITY;
  int64_t j = 0;
#ifdef AD_ROWMATH_AVX2
  if (n >= 8) {
    __m256 acc = _mm256_set1_ps(-INFINITY);
    for (; j + 8 <= n; j += 8) acc = _mm256_max_ps(_mm256_loadu_ps(x + j), acc);  // NaN lane -> keeps acc
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    m = _mm_cvtss_f32(h);
  }
#endif
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// The other row loops of the softmax family. GCC at -O2 only vectorises loops whose trip
// count it knows, and never reorders a float reduction, so the float32 versions are written
// with AVX2 (the double versions are the plain loops: they serve the audits).
inline double dot(const double* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += a[j] * b[j];
  return s;
}
inline float dot(const float* a, const float* b, int64_t n) {
  int64_t j = 0;
  float s = 0;
#ifdef AD_ROWMATH_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), a1);
  }
  for (; j + 8 <= n; j += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), a0);
  s = hsum(_mm256_add_ps(a0, a1));
#endif
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}
inline double sum(const double* a, int64_t n) {
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += a[j];
  return s;
}
inline float sum(const float* a, int64_t n) {
  int64_t j = 0;
  float s = 0;
#ifdef AD_ROWMATH_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(a + j));
  s = hsum(acc);
#endif
  for (; j < n; ++j) s += a[j];
  return s;
}
// y[j] *= c
inline void scale(double* y, int64_t n, double c) {
  for (int64_t j = 0; j < n; ++j) y[j] *= c;
}
inline void scale(float* y, int64_t n, float c) {
  int64_t j = 0;
#ifdef AD_ROWMATH_AVX2
  const __m256 cv = _mm256_set1_ps(c);
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_loadu_ps(y + j), cv));
#endif
  for (; j < n; ++j) y[j] *= c;
}
// d[j] += y[j] (g[j] - c)          (softmax backward, c = <g, y>)
inline void add_y_times_g_minus_c(double* d, const double* y, const double* g, int64_t n, double c) {
  for (int64_t j = 0; j < n; ++j) d[j] += y[j] * (g[j] - c);
}
inline void add_y_times_g_minus_c(float* d, const float* y, const float* g, int64_t n, float c) {
  int64_t j = 0;
#ifdef AD_ROWMATH_AVX2
  const __m256 cv = _mm256_set1_ps(c);
  for (; j + 8 <= n; j += 8) {
    __m256 t = _mm256_mul_ps(_mm256_loadu_ps(y + j), _mm256_sub_ps(_mm256_loadu_ps(g + j), cv));
    _mm256_storeu_ps(d + j, _mm256_add_ps(_mm256_loadu_ps(d + j), t));
  }
#endif
  for (; j < n; ++j) d[j] += y[j] * (g[j] - c);
}
// s[j] = p[j] (s[j] - c)            (attention's dS from dP, in place)
inline void p_times_s_minus_c(double* s, const double* p, int64_t n, double c) {
  for (int64_t j = 0; j < n; ++j) s[j] = p[j] * (s[j] - c);
}
inline void p_times_s_minus_c(float* s, const float* p, int64_t n, float c) {
  int64_t j = 0;
#ifdef AD_ROWMATH_AVX2
  const __m256 cv = _mm256_set1_ps(c);
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), _mm256_sub_ps(_mm256_loadu_ps(s + j), cv)));
#endif
  for (; j < n; ++j) s[j] = p[j] * (s[j] - c);
}
// d[j] += c (a[j] - b[j])         (cross_entropy / kl backward; b may be null = 0)
inline void add_c_times_a_minus_b(double* d, const double* a, const double* b, int64_t n, double c) {
  for (int64_t j = 0; j < n; ++j) d[j] += c * (a[j] - (b ? b[j] : 0.0));
}
inline void add_c_times_a_minus_b(float* d, const float* a, const float* b, int64_t n, float c) {
  int64_t j = 0;
#ifdef AD_ROWMATH_AVX2
  const __m256 cv = _mm256_set1_ps(c);
  for (; j + 8 <= n; j += 8) {
    __m256 t = b ? _mm256_sub_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j)) : _mm256_loadu_ps(a + j);
    _mm256_storeu_ps(d + j, _mm256_fmadd_ps(cv, t, _mm256_loadu_ps(d + j)));
  }
#endif
  for (; j < n; ++j) d[j] += c * (a[j] - (b ? b[j] : 0.0f));
}
// d[j] += a[j] - c b[j]            (log_softmax backward: a = g, b = softmax, c = sum g)
inline void add_a_minus_c_b(double* d, const double* a, const double* b, int64_t n, double c) {
  for (int64_t j = 0; j < n; ++j) d[j] += a[j] - b[j] * c;
}
inline void add_a_minus_c_b(float* d, const float* a, const float* b, int64_t n, float c) {
  int64_t j = 0;
#ifdef AD_ROWMATH_AVX2
  const __m256 cv = _mm256_set1_ps(c);
  for (; j + 8 <= n; j += 8) {
    __m256 t = _mm256_fnmadd_ps(_mm256_loadu_ps(b + j), cv, _mm256_loadu_ps(a + j));
    _mm256_storeu_ps(d + j, _mm256_add_ps(_mm256_loadu_ps(d + j), t));
  }
#endif
  for (; j < n; ++j) d[j] += a[j] - b[j] * c;
}

// The shift used for a row: its max, or 0 when the max is -inf (an all -inf row) so that
// x - shift stays -inf instead of NaN.
template <class T>
inline T safe_shift(T m) { return std::isinf(m) && m < 0 ? (T)0 : m; }

// ---- GELU (tanh form), float32 -----------------------------------------------------------------
// gelu_tanh(x) = 0.5 x (1 + tanh u), u = c (x + k x^3), c = sqrt(2/pi), k = 0.044715, computed
// as x s with s = sigmoid(2u) = 1 / (1 + exp(-2u)) (an exact identity, no cancellation);
// dy/dx = s + 2 x s (1 - s) c (1 + 3 k x^2), with 1 - s = exp(-2u) s.
//   gelu_tanh_forward(x, y, n):     y = gelu_tanh(x)          (contiguous [n]; x, y may alias)
//   gelu_tanh_backward(x, g, gx, n): gx += g gelu_tanh'(x)
//   Accuracy: relative error of y < 1e-5, absolute error of dy/dx < 1e-6 over [-12, 12]
//   (tests/test_ops_nn.cpp, test_vecmath.cpp).
//   Special values: NaN -> NaN; x < -10.07 (exp(-2u) overflows) -> y = -0, dy/dx = 0 (true
//   values below 1e-36); +inf -> y = +inf; -inf -> y = NaN (-inf * 0); dy/dx = NaN for
//   |x| > 1.8e19 (x^2 overflows) and +-inf, as the formula gives in IEEE arithmetic (float64:
//   beyond 1e154).
// Scalar reference: gelu_tanh_sig; float64 keeps the libm formula (ops_elementwise.cpp).
constexpr float kGeluC = 0.7978845608028654f, kGeluK = 0.044715f;
inline float gelu_tanh_sig(float x, float* one_minus = nullptr) {  // s = sigmoid(2u); 1 - s
  const float u = kGeluC * (x + kGeluK * x * x * x);
  const float e = exp_scalar(-2.0f * u), s = 1.0f / (1.0f + e);
  // 1 - s without the cancellation near s = 1; e = +inf (s = 0) gives 1, not inf * 0
  if (one_minus) *one_minus = std::fmin(e * s, 1.0f);
  return s;
}
#ifdef AD_ROWMATH_AVX2
inline __m256 gelu_tanh_sig_avx2(__m256 x, __m256* one_minus = nullptr) {
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 u = _mm256_mul_ps(_mm256_set1_ps(kGeluC), _mm256_fmadd_ps(_mm256_set1_ps(kGeluK), x3, x));
  const __m256 e = exp_avx2(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
  const __m256 s = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  // min returns its second operand for a NaN first one: inf * 0 -> 1
  if (one_minus) *one_minus = _mm256_min_ps(_mm256_mul_ps(e, s), _mm256_set1_ps(1.0f));
  return s;
}
#endif
// y = gelu_tanh(x)
inline void gelu_tanh_forward(const float* x, float* y, int64_t n) {
  int64_t j = 0;
#ifdef AD_ROWMATH_AVX2
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    _mm256_storeu_ps(y + j, _mm256_mul_ps(v, gelu_tanh_sig_avx2(v)));
  }
#endif
  for (; j < n; ++j) y[j] = x[j] * gelu_tanh_sig(x[j]);
}
// gx += g * gelu_tanh'(x)
inline void gelu_tanh_backward(const float* x, const float* g, float* gx, int64_t n) {
  int64_t j = 0;
#ifdef AD_ROWMATH_AVX2
  const __m256 one = _mm256_set1_ps(1.0f), c2 = _mm256_set1_ps(2.0f * kGeluC), k3 = _mm256_set1_ps(3.0f * kGeluK);
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    __m256 oms;
    const __m256 s = gelu_tanh_sig_avx2(v, &oms);
    const __m256 du = _mm256_mul_ps(c2, _mm256_fmadd_ps(k3, _mm256_mul_ps(v, v), one));  // 2 u'(x)
    const __m256 d = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(v, s), oms), du, s);
    _mm256_storeu_ps(gx + j, _mm256_fmadd_ps(_mm256_loadu_ps(g + j), d, _mm256_loadu_ps(gx + j)));
  }
#endif
  for (; j < n; ++j) {
    float oms;
    const float v = x[j], s = gelu_tanh_sig(v, &oms);
    gx[j] += g[j] * (s + v * s * oms * 2.0f * kGeluC * (1.0f + 3.0f * kGeluK * v * v));
  }
}

// ---- GELU (erf form) ---------------------------------------------------------------------------
// gelu(x) = x Phi(x),  gelu'(x) = Phi(x) + x phi(x),  Phi(x) = 0.5 (1 + erf(x / sqrt 2)) the
// standard normal CDF, phi(x) = exp(-x^2 / 2) / sqrt(2 pi) its density.
//   gelu_erf_forward(x, y, n):       y = gelu(x)                  (contiguous [n]; x, y may alias)
//   gelu_erf_backward(x, g, gx, n):  gx += g gelu'(x)
//   gelu_erf_with_grad(x, y, dy, n): y = gelu(x), dy = gelu'(x)   (x, y may alias; dy apart)
// float32 method: Abramowitz & Stegun 7.1.26 for z = |x| / sqrt 2: 1 - erf(z) = q(t) exp(-z^2),
//   t = 1 / (1 + p z), q a degree-5 polynomial, |error| <= 1.5e-7 on erf (about 2 float ulps
//   at 1). exp(-z^2) = exp(-x^2/2) (from x^2 / 2: one rounding) serves phi too (one exp per
//   element), and Phi = q e / 2 for x < 0 (no cancellation in the left tail), 1 - q e / 2 for
//   x >= 0.
// Accuracy (float32, against the exact function at the float input; tests/test_vecmath.cpp):
//   |y - gelu(x)| <= 3e-7 |x| + 1 ulp(y) (Phi within 3e-7: A&S plus the rounding of q, worst
//   near x = 0), |dy - gelu'(x)| <= 4e-7. The vector kernel and the scalar reference
//   (gelu_erf_parts: the same formula with libm's exp) agree within 4 ulps of Phi and phi while
//   exp(-x^2/2) is a normal float (|x| < 13.2); beyond, both |y| and |dy| are below 1e-36.
// Special values: NaN -> NaN; +-0 -> y = +-0, dy = 0.5; x < -13.25 -> y = -0, dy = 0 in the
//   vector kernel (exp(-x^2/2) flushed to 0), |y|, |dy| < 1e-36 from the scalar reference (libm's
//   subnormal exp; the true values are below 1e-37); x > 5.5 -> y = x, x > 6.5 -> dy = 1;
//   +inf -> y = +inf; -inf -> y = NaN; dy(+-inf) = NaN (inf * 0, as the float64 formula gives).
// float64: the exact formula with std::erf / std::exp (the reference of the gradient audits).
constexpr float kAsP = 0.3275911f, kAsA1 = 0.254829592f, kAsA2 = -0.284496736f, kAsA3 = 1.421413741f,
                kAsA4 = -1.453152027f, kAsA5 = 1.061405429f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;
constexpr float kAsPz = kAsP * 0.7071067811865476f;  // t = 1 / (1 + p z) = 1 / (1 + kAsPz |x|)

// Scalar reference of the float32 kernel (also its fallback and tails): Phi(x) and phi(x).
inline void gelu_erf_parts(float x, float& Phi, float& phi) {
  const float t = 1.0f / (1.0f + kAsPz * std::fabs(x));
  const float q = t * (kAsA1 + t * (kAsA2 + t * (kAsA3 + t * (kAsA4 + t * kAsA5))));
  const float e = std::exp(x * x * -0.5f);  // exp(-z^2); x^2 / 2 has one rounding, z^2 two
  Phi = x < 0 ? 0.5f * q * e : 1.0f - 0.5f * q * e;
  phi = kInvSqrt2Pi * e;
}
inline double gelu_erf_Phi(double x) { return 0.5 * (1 + std::erf(x * 0.7071067811865476)); }
inline double gelu_erf_phi(double x) { return 0.3989422804014327 * std::exp(-0.5 * x * x); }

#ifdef AD_ROWMATH_AVX2
inline void gelu_erf_parts_avx2(__m256 x, __m256& Phi, __m256& phi) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(kAsPz), ax, one));
  // q / 2 directly, from halved coefficients (exact: the same bits as halving q e afterwards
  // while q e / 2 is a normal float)
  __m256 q = _mm256_set1_ps(0.5f * kAsA5);
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.5f * kAsA4));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.5f * kAsA3));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.5f * kAsA2));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.5f * kAsA1));
  q = _mm256_mul_ps(q, t);
  const __m256 e = exp_avx2<true>(_mm256_mul_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(-0.5f)));  // exp(-x^2/2)
  const __m256 half_qe = _mm256_mul_ps(q, e);
  // x < 0 (sign bit set; -0 too, where q e / 2 = 1 - q e / 2 = 0.5): the left tail without
  // cancellation
  Phi = _mm256_blendv_ps(_mm256_sub_ps(one, half_qe), half_qe, x);
  phi = _mm256_mul_ps(_mm256_set1_ps(kInvSqrt2Pi), e);
}
#endif

// The float32 entry points share one loop; kOut says what it writes.
enum class GeluErfOut { kValue, kAddGrad, kValueAndGrad };
template <GeluErfOut kOut>
inline void gelu_erf_loop(const float* x, const float* g, float* y, float* dy, int64_t n) {
  int64_t i = 0;
#ifdef AD_ROWMATH_AVX2
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i), Phi, phi;
    gelu_erf_parts_avx2(v, Phi, phi);
    if constexpr (kOut == GeluErfOut::kAddGrad) {
      __m256 d = _mm256_mul_ps(_mm256_loadu_ps(g + i), _mm256_fmadd_ps(v, phi, Phi));
      _mm256_storeu_ps(dy + i, _mm256_add_ps(_mm256_loadu_ps(dy + i), d));
    } else {
      _mm256_storeu_ps(y + i, _mm256_mul_ps(v, Phi));
      if constexpr (kOut == GeluErfOut::kValueAndGrad) _mm256_storeu_ps(dy + i, _mm256_fmadd_ps(v, phi, Phi));
    }
  }
#endif
  for (; i < n; ++i) {
    float Phi, phi;
    const float v = x[i];
    gelu_erf_parts(v, Phi, phi);
    if constexpr (kOut == GeluErfOut::kAddGrad) {
      dy[i] += g[i] * (Phi + v * phi);
    } else {
      y[i] = v * Phi;
      if constexpr (kOut == GeluErfOut::kValueAndGrad) dy[i] = Phi + v * phi;
    }
  }
}

inline void gelu_erf_forward(const float* x, float* y, int64_t n) {
  gelu_erf_loop<GeluErfOut::kValue>(x, nullptr, y, nullptr, n);
}
inline void gelu_erf_backward(const float* x, const float* g, float* gx, int64_t n) {
  gelu_erf_loop<GeluErfOut::kAddGrad>(x, g, nullptr, gx, n);
}
inline void gelu_erf_with_grad(const float* x, float* y, float* dy, int64_t n) {
  gelu_erf_loop<GeluErfOut::kValueAndGrad>(x, nullptr, y, dy, n);
}

inline void gelu_erf_forward(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * gelu_erf_Phi(x[i]);
}
inline void gelu_erf_backward(const double* x, const double* g, double* gx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gx[i] += g[i] * (gelu_erf_Phi(x[i]) + x[i] * gelu_erf_phi(x[i]));
}
inline void gelu_erf_with_grad(const double* x, double* y, double* dy, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i], Phi = gelu_erf_Phi(v);
    y[i] = v * Phi;
    dy[i] = Phi + v * gelu_erf_phi(v);
  }
}
}  // namespace rowmath
}  // namespace ad
