// Row kernels shared by the fused softmax-family ops (softmax, log_softmax, attention,
// cross_entropy, kl_divergence): y_j = exp(x_j - shift) over a contiguous row, returning
// sum_j y_j.
//
// Why a hand-written exp for float32: a softmax over T x T attention scores or a vocabulary
// is dominated by exp, and libm's scalar expf does not vectorise. The float kernel below is
// the Cephes range reduction + degree-6 polynomial (|rel err| ~ 1-2 ulp), 8 lanes at a time
// with AVX2/FMA, scalar otherwise (same formula). float64 -- used by the gradient audits and
// the PyTorch cross-check, which compare to 1e-9 -- always goes through std::exp.
//
// Special values follow exp: x - shift = -inf (or anything below -87.3) gives 0, NaN stays
// NaN (so the NaN guard sees it), +inf is not reachable after subtracting the row max.
// Elsewhere (gelu_tanh's exp(-2u)) x above ln(FLT_MAX) = 88.72 and +inf give +inf, in both
// kernels.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define AD_ROWMATH_AVX2 1
#endif

namespace ad {
namespace rowmath {

// Cephes expf constants. kExpHi is past ln(FLT_MAX) = 88.7228 (above it the final product
// overflows to +inf by itself) and keeps n <= 128 and |r| < 0.28.
constexpr float kExpHi = 89.0f, kExpLo = -87.3365447504019f;
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
inline __m256 exp_avx2(__m256 x) {
  const __m256 lo = _mm256_set1_ps(kExpLo);
  __m256 below = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);  // -> 0 (false for NaN: NaN stays)
  // min/max return their SECOND operand when one is NaN: put x second so NaN survives.
  __m256 xc = _mm256_max_ps(lo, _mm256_min_ps(_mm256_set1_ps(kExpHi), x));
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
  // n is clamped to [-126, 128]; 2^128 overflows the exponent field, so split it as
  // 2^(n/2) * 2^(n - n/2) -- both factors are normal numbers.
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i h1 = _mm256_srai_epi32(ni, 1), h2 = _mm256_sub_epi32(ni, h1);
  const __m256i bias = _mm256_set1_epi32(127);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h1, bias), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h2, bias), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  return _mm256_andnot_ps(below, y);
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

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

// ---- GELU (tanh form), float32 ----------------------------------------------------------------
// libm's tanhf is scalar and slow (~100 ns per element here), which made GELU the most
// expensive op of a transformer MLP. The float32 kernels below, 8 lanes at a time:
//  gelu_tanh: 0.5 x (1 + tanh u) = x s, s = sigmoid(2u) = 1 / (1 + exp(-2u)), u = c (x + k x^3)
//             (an exact identity, no cancellation);  dy/dx = s + 2 x s (1 - s) c (1 + 3 k x^2)
// float64 keeps the libm formula (ops_elementwise.cpp); gelu_erf's float32 kernel lives there too.
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
}  // namespace rowmath
}  // namespace ad
