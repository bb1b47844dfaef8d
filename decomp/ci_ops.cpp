#include "decomp/ci_ops.hpp"

#include <cmath>
#include <string>
#include <vector>
#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace decomp {

using ad::Tensor;

AD_REGISTER_OP("ci_scalar_mlp");

// Backward: with a = h W1 + b1, s = gelu(a) (saved[0]) and s' = gelu'(a) (saved[1]):
//   dz/dW2 = s,  dz/db2 = 1,  da = gz W2 s',  dh = sum_k da W1,  dW1 = da h,  db1 = da.
// Per (n, c) row of H hidden units; all pointers valid (callers pass scratch for inputs
// that need no gradient), so the loops are branch-free.
template <class T>
static inline void backward_row(int64_t H, T g, T hv, const T* s, const T* ds, const T* w1, const T* w2, T* gw1,
                                T* gb1, T* gw2, T& gh) {
  T acc = 0;
  for (int64_t k = 0; k < H; ++k) {
    const T da = g * w2[k] * ds[k];
    acc += da * w1[k];
    gw1[k] += da * hv;
    gb1[k] += da;
    gw2[k] += g * s[k];
  }
  gh += acc;
}
#ifdef __AVX2__
static inline float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
static inline void backward_row(int64_t H, float g, float hv, const float* s, const float* ds, const float* w1,
                                const float* w2, float* gw1, float* gb1, float* gw2, float& gh) {
  if (H % 8 != 0) return backward_row<float>(H, g, hv, s, ds, w1, w2, gw1, gb1, gw2, gh);
  const __m256 vg = _mm256_set1_ps(g), vh = _mm256_set1_ps(hv);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t k = 0; k < H; k += 8) {
    const __m256 da = _mm256_mul_ps(_mm256_mul_ps(vg, _mm256_loadu_ps(w2 + k)), _mm256_loadu_ps(ds + k));
    acc = _mm256_fmadd_ps(da, _mm256_loadu_ps(w1 + k), acc);
    _mm256_storeu_ps(gw1 + k, _mm256_fmadd_ps(da, vh, _mm256_loadu_ps(gw1 + k)));
    _mm256_storeu_ps(gb1 + k, _mm256_add_ps(da, _mm256_loadu_ps(gb1 + k)));
    _mm256_storeu_ps(gw2 + k, _mm256_fmadd_ps(vg, _mm256_loadu_ps(s + k), _mm256_loadu_ps(gw2 + k)));
  }
  gh += hsum(acc);
}
#endif

// Backward: with a = h W1 + b1, s = gelu(a) (saved[0]) and s' = gelu'(a) (saved[1]):
//   dz/dW2 = s,  dz/db2 = 1,  da = gz W2 s',  dh = sum_k da W1,  dW1 = da h,  db1 = da.
static void ci_scalar_mlp_backward(ad::Node& o) {
  const Tensor &h = o.inputs[0], &W1 = o.inputs[1], &W2 = o.inputs[3];
  const int64_t C = W1.size(0), H = W1.size(1), N = h.numel() / C;
  ad::dispatch(o.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* gz = static_cast<const T*>(o.scratch);
    const T *ph = h.data<T>(), *w1 = W1.data<T>(), *w2 = W2.data<T>();
    const T *s = o.saved[0].data<T>(), *ds = o.saved[1].data<T>();
    T *gh = ad::grad_of<T>(o.inputs[0]), *gw1 = ad::grad_of<T>(o.inputs[1]), *gb1 = ad::grad_of<T>(o.inputs[2]),
      *gw2 = ad::grad_of<T>(o.inputs[3]), *gb2 = ad::grad_of<T>(o.inputs[4]);
    // Inputs without a gradient write into a discarded scratch buffer instead.
    std::vector<T> junk((size_t)(3 * C * H + C), T(0));
    T *jw1 = junk.data(), *jb1 = jw1 + C * H, *jw2 = jb1 + C * H, *jb2 = jw2 + C * H;
    if (!gw1) gw1 = jw1;
    if (!gb1) gb1 = jb1;
    if (!gw2) gw2 = jw2;
    if (!gb2) gb2 = jb2;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = n * C + c;
        T gh_i = 0;
        backward_row(H, gz[i], ph[i], s + i * H, ds + i * H, w1 + c * H, w2 + c * H, gw1 + c * H, gb1 + c * H,
                     gw2 + c * H, gh_i);
        gb2[c] += gz[i];
        if (gh) gh[i] += gh_i;
      }
  });
}

// In place over n pre-activations: s[i] <- gelu(a_i) = a Phi(a), ds[i] <- gelu'(a_i) =
// Phi(a) + a phi(a), where s holds a on entry. Float uses an AVX2 kernel: Phi from the
// Abramowitz-Stegun 7.1.26 erf approximation (|error| < 1.5e-7, float rounding is 6e-8) and
// exp(-a^2/2) by Cody-Waite range reduction + a degree-6 polynomial; one exp per element
// serves both Phi and phi. Double (audits) uses std::erf / std::exp.
static void gelu_with_grad(double* s, double* ds, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double a = s[i];
    const double Phi = 0.5 * (1 + std::erf(a * 0.70710678118654752440));
    s[i] = a * Phi;
    ds[i] = Phi + a * 0.39894228040143267794 * std::exp(-0.5 * a * a);
  }
}
static inline void gelu_scalar_f(float a, float& s, float& ds) {
  const float Phi = 0.5f * (1 + std::erf(a * 0.70710678f));
  s = a * Phi;
  ds = Phi + a * 0.39894228f * std::exp(-0.5f * a * a);
}
static void gelu_with_grad(float* s, float* ds, int64_t n) {
  int64_t i = 0;
#ifdef __AVX2__
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 p = _mm256_set1_ps(0.3275911f), r2 = _mm256_set1_ps(0.70710678f);
  const __m256 a1 = _mm256_set1_ps(0.254829592f), a2 = _mm256_set1_ps(-0.284496736f),
               a3 = _mm256_set1_ps(1.421413741f), a4 = _mm256_set1_ps(-1.453152027f),
               a5 = _mm256_set1_ps(1.061405429f);
  const __m256 log2e = _mm256_set1_ps(1.44269504f), ln2_hi = _mm256_set1_ps(0.693359375f),
               ln2_lo = _mm256_set1_ps(-2.12194440e-4f), min_x = _mm256_set1_ps(-87.0f);
  const __m256 c2 = _mm256_set1_ps(1.0f / 2), c3 = _mm256_set1_ps(1.0f / 6), c4 = _mm256_set1_ps(1.0f / 24),
               c5 = _mm256_set1_ps(1.0f / 120), c6 = _mm256_set1_ps(1.0f / 720);
  const __m256 inv_sqrt2pi = _mm256_set1_ps(0.39894228f);
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_loadu_ps(s + i);
    // e = exp(-a^2 / 2)
    __m256 x = _mm256_max_ps(_mm256_mul_ps(_mm256_mul_ps(a, a), _mm256_set1_ps(-0.5f)), min_x);
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, ln2_hi, x);
    r = _mm256_fnmadd_ps(k, ln2_lo, r);
    __m256 poly = _mm256_fmadd_ps(c6, r, c5);
    poly = _mm256_fmadd_ps(poly, r, c4);
    poly = _mm256_fmadd_ps(poly, r, c3);
    poly = _mm256_fmadd_ps(poly, r, c2);
    poly = _mm256_fmadd_ps(poly, r, one);
    poly = _mm256_fmadd_ps(poly, r, one);
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    const __m256 e = _mm256_mul_ps(poly, _mm256_castsi256_ps(bits));
    // erf(|a|/sqrt2) = 1 - t (a1 + t (a2 + ...)) e, t = 1 / (1 + p |a|/sqrt2)
    const __m256 ax = _mm256_mul_ps(_mm256_andnot_ps(sign_mask, a), r2);
    const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(p, ax, one));
    __m256 q = _mm256_fmadd_ps(a5, t, a4);
    q = _mm256_fmadd_ps(q, t, a3);
    q = _mm256_fmadd_ps(q, t, a2);
    q = _mm256_fmadd_ps(q, t, a1);
    q = _mm256_mul_ps(q, t);
    const __m256 erf_abs = _mm256_fnmadd_ps(q, e, one);
    const __m256 erf_signed = _mm256_or_ps(erf_abs, _mm256_and_ps(a, sign_mask));
    const __m256 Phi = _mm256_mul_ps(half, _mm256_add_ps(one, erf_signed));
    _mm256_storeu_ps(s + i, _mm256_mul_ps(a, Phi));
    _mm256_storeu_ps(ds + i, _mm256_fmadd_ps(_mm256_mul_ps(a, inv_sqrt2pi), e, Phi));
  }
#endif
  for (; i < n; ++i) gelu_scalar_f(s[i], s[i], ds[i]);
}

// row[k] = a x[k] + b[k]  and  sum_k x[k] y[k]  (AVX2 for float rows with H % 8 == 0)
template <class T>
static inline void axpb_row(int64_t H, T a, const T* x, const T* b, T* row) {
  for (int64_t k = 0; k < H; ++k) row[k] = a * x[k] + b[k];
}
template <class T>
static inline T dot_row(int64_t H, const T* x, const T* y) {
  T acc = 0;
  for (int64_t k = 0; k < H; ++k) acc += x[k] * y[k];
  return acc;
}
#ifdef __AVX2__
static inline void axpb_row(int64_t H, float a, const float* x, const float* b, float* row) {
  if (H % 8 != 0) return axpb_row<float>(H, a, x, b, row);
  const __m256 va = _mm256_set1_ps(a);
  for (int64_t k = 0; k < H; k += 8)
    _mm256_storeu_ps(row + k, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + k), _mm256_loadu_ps(b + k)));
}
static inline float dot_row(int64_t H, const float* x, const float* y) {
  if (H % 8 != 0) return dot_row<float>(H, x, y);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t k = 0; k < H; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(y + k), acc);
  return hsum(acc);
}
#endif

Tensor ci_scalar_mlp(const Tensor& h, const Tensor& W1, const Tensor& b1, const Tensor& W2, const Tensor& b2) {
  if (W1.dim() != 2 || b1.shape() != W1.shape() || W2.shape() != W1.shape() || b2.dim() != 1 ||
      b2.size(0) != W1.size(0) || h.size(-1) != W1.size(0))
    ad::fail("ci_scalar_mlp: expected h [..., C], W1/b1/W2 [C, H], b2 [C]; got h " + h.shape().str() + ", W1 " +
             W1.shape().str() + ", b1 " + b1.shape().str() + ", W2 " + W2.shape().str() + ", b2 " + b2.shape().str());
  for (const Tensor* t : {&W1, &b1, &W2, &b2})
    if (t->dtype() != h.dtype()) ad::fail("ci_scalar_mlp: all inputs need the same dtype");
  const int64_t C = W1.size(0), H = W1.size(1), N = h.numel() / C;
  Tensor out = ad::make_result("ci_scalar_mlp", h.shape(), h.dtype(), {h, W1, b1, W2, b2}, ci_scalar_mlp_backward);
  const bool keep = out.requires_grad();
  // s: pre-activations a, then gelu(a); ds: gelu'(a). Kept for backward when recording.
  Tensor s = ad::empty({N, C, H}, h.dtype()), ds = ad::empty({N, C, H}, h.dtype());
  ad::dispatch(h.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *ph = h.data<T>(), *w1 = W1.data<T>(), *pb1 = b1.data<T>(), *w2 = W2.data<T>(), *pb2 = b2.data<T>();
    T* z = out.data<T>();
    T* ps = s.data<T>();
    T* pds = ds.data<T>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const T hv = ph[n * C + c];
        T* row = ps + (n * C + c) * H;
        axpb_row(H, hv, w1 + c * H, pb1 + c * H, row);
      }
    gelu_with_grad(ps, pds, N * C * H);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) z[n * C + c] = pb2[c] + dot_row(H, w2 + c * H, ps + (n * C + c) * H);
  });
  if (keep) out.node()->saved[0] = s, out.node()->saved[1] = ds;
  return ad::finish(out);
}

}  // namespace decomp
