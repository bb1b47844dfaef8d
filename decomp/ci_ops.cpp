#include "decomp/ci_ops.hpp"

#include "autodiff/parallel.hpp"
#include "autodiff/rowmath.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

namespace decomp {

using ad::Tensor;

AD_REGISTER_OP("ci_scalar_mlp");

// One (n, c) row of the backward below: gz, h, s = gelu(a), s' = gelu'(a) -> gradients.
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
// AVX2 + FMA row kernels below: the guard of autodiff/rowmath.hpp (scalar templates otherwise).
#ifdef AD_ROWMATH_AVX2
using ad::rowmath::hsum;
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
#ifdef AD_ROWMATH_AVX2
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

// Per-example pass shared by forward and backward: s[c, :] = gelu(h[n, c] W1[c, :] + b1[c, :])
// and, when ds is given, ds = gelu' of the same, for all C components of example n (the
// gelu_erf op's kernels, rowmath.hpp).
template <class T>
static void hidden_of_example(int64_t n, int64_t C, int64_t H, const T* ph, const T* w1, const T* pb1, T* s, T* ds) {
  for (int64_t c = 0; c < C; ++c) axpb_row(H, ph[n * C + c], w1 + c * H, pb1 + c * H, s + c * H);
  if (ds) ad::rowmath::gelu_erf_with_grad(s, s, ds, C * H);  // in place: s <- gelu(a), ds <- gelu'(a)
  else ad::rowmath::gelu_erf_forward(s, s, C * H);
}

// Toy inputs are sparse: most examples have h[n, :] = x_n V = 0 exactly (TMS 5-2: 77% of
// them). Then a = 0 W1 + b1 = b1 for every component, so all such rows share one block
// s0 = gelu(b1), s0' = gelu'(b1), z0 = b2 + sum_k W2 s0 (computed once per call), and their
// backward collapses: with G0[c] = sum over zero rows of gz[n, c] and K0[c] = sum_k W2 s0' W1,
//   dW2 += G0 s0,  db1 += G0 W2 s0',  dW1 += 0 (h = 0),  dh[n, c] += gz[n, c] K0[c].
// Exact in exact arithmetic (float rounding of these sums differs from the per-row loop).
template <class T>
static inline bool zero_row(const T* h, int64_t C) {
  for (int64_t c = 0; c < C; ++c)
    if (h[c] != 0) return false;
  return true;
}
// s0, ds0 [C, H] from b1; z0 [C] (forward) and K0 [C] (backward) when non-null
template <class T>
static void zero_row_block(int64_t C, int64_t H, const T* w1, const T* pb1, const T* w2, const T* pb2, T* s0, T* ds0,
                           T* z0, T* k0) {
  for (int64_t i = 0; i < C * H; ++i) s0[i] = pb1[i];
  ad::rowmath::gelu_erf_with_grad(s0, s0, ds0, C * H);
  for (int64_t c = 0; c < C; ++c) {
    if (z0) z0[c] = pb2[c] + dot_row(H, w2 + c * H, s0 + c * H);
    if (k0) {
      T acc = 0;
      for (int64_t k = 0; k < H; ++k) acc += w2[c * H + k] * ds0[c * H + k] * w1[c * H + k];
      k0[c] = acc;
    }
  }
}

// s and s' are kept for backward (saved[0], saved[1], [N, C, H] each) when they take at most
// this many bytes together; above it backward recomputes them one example at a time (the
// GELU evaluation costs about as much as the rest of forward and backward together, so
// keeping is faster, but 2 N C H floats can be gigabytes for wide layers).
// PD_CI_KEEP_MB overrides the default (e.g. for measuring the trade-off).
static size_t initial_keep_hidden_bytes() {
  const char* e = std::getenv("PD_CI_KEEP_MB");
  return (e && *e ? (size_t)std::strtoull(e, nullptr, 10) : size_t(512)) << 20;
}
static size_t g_keep_hidden_bytes = initial_keep_hidden_bytes();
size_t ci_keep_hidden_bytes() { return g_keep_hidden_bytes; }
void set_ci_keep_hidden_bytes(size_t b) { g_keep_hidden_bytes = b; }

// Examples are split into this many chunks (fewer for small inputs); chunks run in
// parallel and the parameter gradients are summed per chunk, then in chunk order, so the
// result does not depend on the thread count.
static int n_chunks_for(int64_t N, int64_t C, int64_t H) { return ad::fixed_chunks(N * C * H, N, 8); }

// Backward: with a = h W1 + b1, s = gelu(a) and s' = gelu'(a):
//   dz/dW2 = s,  dz/db2 = 1,  da = gz W2 s',  dh = sum_k da W1,  dW1 = da h,  db1 = da.
static void ci_scalar_mlp_backward(ad::Node& o) {
  const Tensor &h = o.inputs[0], &W1 = o.inputs[1], &b1 = o.inputs[2], &W2 = o.inputs[3];
  const int64_t C = W1.size(0), H = W1.size(1), N = h.numel() / C;
  const bool kept = o.saved[0].defined();
  const int n_chunks = n_chunks_for(N, C, H);
  // per chunk: s and s' of one example (recompute path), then partial gradients of W1, b1,
  // W2 (C H each) and b2 (C), then G0 (C, the zero rows' summed gz); after the chunks: the
  // zero-row block s0, s0' (C H each) and K0 (C)
  const int64_t per_chunk = 2 * C * H + 3 * C * H + 2 * C;
  Tensor scratch = ad::zeros({n_chunks * per_chunk + 2 * C * H + C}, o.dtype);
  ad::dispatch(o.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* gz = static_cast<const T*>(o.scratch);
    const T *ph = h.data<T>(), *w1 = W1.data<T>(), *pb1 = b1.data<T>(), *w2 = W2.data<T>();
    const T *saved_s = kept ? o.saved[0].data<T>() : nullptr, *saved_ds = kept ? o.saved[1].data<T>() : nullptr;
    T* gh = ad::grad_of<T>(o.inputs[0]);
    T* base = scratch.data<T>();
    T *s0 = base + n_chunks * per_chunk, *ds0 = s0 + C * H, *k0 = ds0 + C * H;
    zero_row_block(C, H, w1, pb1, w2, (const T*)nullptr, s0, ds0, (T*)nullptr, k0);
    ad::parallel_chunks(n_chunks, [&](int chunk) {
      T *s_ex = base + chunk * per_chunk, *ds_ex = s_ex + C * H;
      T *pw1 = ds_ex + C * H, *pb1g = pw1 + C * H, *pw2 = pb1g + C * H, *pb2 = pw2 + C * H, *g0 = pb2 + C;
      const auto range = ad::chunk_range(N, n_chunks, chunk);
      for (int64_t n = range.first; n < range.second; ++n) {
        if (zero_row(ph + n * C, C)) {
          for (int64_t c = 0; c < C; ++c) {
            const int64_t i = n * C + c;
            g0[c] += gz[i];
            pb2[c] += gz[i];
            if (gh) gh[i] += gz[i] * k0[c];
          }
          continue;
        }
        const T *s = s_ex, *ds = ds_ex;
        if (kept) {
          s = saved_s + n * C * H, ds = saved_ds + n * C * H;
        } else {
          hidden_of_example(n, C, H, ph, w1, pb1, s_ex, ds_ex);
        }
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = n * C + c;
          T gh_i = 0;
          backward_row(H, gz[i], ph[i], s + c * H, ds + c * H, w1 + c * H, w2 + c * H, pw1 + c * H, pb1g + c * H,
                       pw2 + c * H, gh_i);
          pb2[c] += gz[i];
          if (gh) gh[i] += gh_i;
        }
      }
    });
    // partial sums in chunk order into the gradients of the parameters that need one
    T* grads[4] = {ad::grad_of<T>(o.inputs[1]), ad::grad_of<T>(o.inputs[2]), ad::grad_of<T>(o.inputs[3]),
                   ad::grad_of<T>(o.inputs[4])};
    const int64_t offset[4] = {2 * C * H, 3 * C * H, 4 * C * H, 5 * C * H}, size[4] = {C * H, C * H, C * H, C};
    for (int chunk = 0; chunk < n_chunks; ++chunk) {  // the zero rows' share: db1 += G0 W2 s0', dW2 += G0 s0
      T* part = base + chunk * per_chunk;
      const T* g0 = part + 5 * C * H + C;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < H; ++k) {
          const int64_t j = c * H + k;
          part[3 * C * H + j] += g0[c] * w2[j] * ds0[j];
          part[4 * C * H + j] += g0[c] * s0[j];
        }
    }
    for (int p = 0; p < 4; ++p) {
      if (!grads[p]) continue;
      for (int chunk = 0; chunk < n_chunks; ++chunk) {
        const T* part = base + chunk * per_chunk + offset[p];
        for (int64_t k = 0; k < size[p]; ++k) grads[p][k] += part[k];
      }
    }
  });
}

Tensor ci_scalar_mlp(const Tensor& h, const Tensor& W1, const Tensor& b1, const Tensor& W2, const Tensor& b2) {
  if (W1.dim() != 2 || b1.shape() != W1.shape() || W2.shape() != W1.shape() || b2.dim() != 1 ||
      b2.size(0) != W1.size(0) || h.size(-1) != W1.size(0))
    ad::fail("ci_scalar_mlp: expected h [..., C], W1/b1/W2 [C, H], b2 [C]; got h " + h.shape().str() + ", W1 " +
             W1.shape().str() + ", b1 " + b1.shape().str() + ", W2 " + W2.shape().str() + ", b2 " + b2.shape().str());
  for (const Tensor* t : {&W1, &b1, &W2, &b2})
    if (t->dtype() != h.dtype()) ad::fail("ci_scalar_mlp: all inputs need the same dtype");
  const int64_t C = W1.size(0), H = W1.size(1), N = h.numel() / C;
  Tensor out = ad::make_result("ci_scalar_mlp", h.shape(), h.dtype(), {h, W1, b1, W2, b2}, ci_scalar_mlp_backward);
  const bool keep = out.requires_grad() && 2 * (size_t)(N * C * H) * ad::dtype_size(h.dtype()) <= ci_keep_hidden_bytes();
  const int n_chunks = n_chunks_for(N, C, H);
  // s, ds: [N, C, H] when kept for backward, else one [C, H] scratch per chunk
  // (rows of zero-input examples are left unwritten; backward does not read them), plus the
  // shared zero-row block s0, s0' and z0
  const int64_t rows = keep ? N : n_chunks;
  Tensor s = ad::empty({rows, C, H}, h.dtype()), ds = ad::empty({rows, C, H}, h.dtype());
  Tensor zero_block = ad::empty({2 * C * H + C}, h.dtype());
  ad::dispatch(h.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *ph = h.data<T>(), *w1 = W1.data<T>(), *pb1 = b1.data<T>(), *w2 = W2.data<T>(), *pb2 = b2.data<T>();
    T* z = out.data<T>();
    T *s0 = s.data<T>(), *ds0 = ds.data<T>();
    T* z0 = zero_block.data<T>() + 2 * C * H;
    zero_row_block(C, H, w1, pb1, w2, pb2, zero_block.data<T>(), zero_block.data<T>() + C * H, z0, (T*)nullptr);
    ad::parallel_chunks(n_chunks, [&](int chunk) {
      const auto range = ad::chunk_range(N, n_chunks, chunk);
      for (int64_t n = range.first; n < range.second; ++n) {
        if (zero_row(ph + n * C, C)) {
          for (int64_t c = 0; c < C; ++c) z[n * C + c] = z0[c];
          continue;
        }
        const int64_t row = keep ? n : chunk;
        T *ps = s0 + row * C * H, *pds = ds0 + row * C * H;
        hidden_of_example(n, C, H, ph, w1, pb1, ps, keep ? pds : nullptr);  // s' only to keep
        for (int64_t c = 0; c < C; ++c) z[n * C + c] = pb2[c] + dot_row(H, w2 + c * H, ps + c * H);
      }
    });
  });
  if (keep) out.node()->saved[0] = s, out.node()->saved[1] = ds;
  return ad::finish(out);
}

// ---- vector_mlp: GELU + output layer over the first matmul's result ----------------------------

AD_REGISTER_OP("ci_vector_mlp_head");

// One (n, c) row of ci_vector_mlp_head's backward: gz, s = gelu(a), s' = gelu'(a) ->
//   dxW1[k] += gz W2[k] s'[k],  db1[k] += gz W2[k] s'[k],  dW2[k] += gz s[k]
template <class T>
static inline void head_backward_row(int64_t H, T g, const T* s, const T* ds, const T* w2, T* gpre, T* gb1, T* gw2) {
  for (int64_t k = 0; k < H; ++k) {
    const T da = g * w2[k] * ds[k];
    gpre[k] += da;
    gb1[k] += da;
    gw2[k] += g * s[k];
  }
}
#ifdef AD_ROWMATH_AVX2
static inline void head_backward_row(int64_t H, float g, const float* s, const float* ds, const float* w2, float* gpre,
                                     float* gb1, float* gw2) {
  if (H % 8 != 0) return head_backward_row<float>(H, g, s, ds, w2, gpre, gb1, gw2);
  const __m256 vg = _mm256_set1_ps(g);
  for (int64_t k = 0; k < H; k += 8) {
    const __m256 da = _mm256_mul_ps(_mm256_mul_ps(vg, _mm256_loadu_ps(w2 + k)), _mm256_loadu_ps(ds + k));
    _mm256_storeu_ps(gpre + k, _mm256_add_ps(da, _mm256_loadu_ps(gpre + k)));
    _mm256_storeu_ps(gb1 + k, _mm256_add_ps(da, _mm256_loadu_ps(gb1 + k)));
    _mm256_storeu_ps(gw2 + k, _mm256_fmadd_ps(vg, _mm256_loadu_ps(s + k), _mm256_loadu_ps(gw2 + k)));
  }
}
#endif

// s[i] = xW1[n, i] + b1[i] over the C*H entries of example n, then s <- gelu and, when ds is
// given (backward), ds <- gelu'
template <class T>
static void head_hidden_of_example(int64_t n, int64_t CH, const T* pre, const T* pb1, T* s, T* ds) {
  const T* row = pre + n * CH;
  for (int64_t i = 0; i < CH; ++i) s[i] = row[i] + pb1[i];
  if (ds) ad::rowmath::gelu_erf_with_grad(s, s, ds, CH);
  else ad::rowmath::gelu_erf_forward(s, s, CH);
}

static void ci_vector_mlp_head_backward(ad::Node& o) {
  const Tensor &pre = o.inputs[0], &W2 = o.inputs[2];
  const int64_t C = W2.size(0), H = W2.size(1), CH = C * H, N = pre.numel() / CH;
  const int n_chunks = n_chunks_for(N, C, H);
  // per chunk: s, s' of one example; a sink for dxW1 when xW1 needs no gradient; partial
  // gradients of b1, W2 (C H each) and b2 (C), summed in chunk order afterwards
  const int64_t per_chunk = 5 * CH + C;
  Tensor scratch = ad::zeros({n_chunks * per_chunk}, o.dtype);
  ad::dispatch(o.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* gz = static_cast<const T*>(o.scratch);
    const T *ppre = pre.data<T>(), *pb1 = o.inputs[1].data<T>(), *w2 = W2.data<T>();
    T* gpre = ad::grad_of<T>(o.inputs[0]);
    T* base = scratch.data<T>();
    ad::parallel_chunks(n_chunks, [&](int chunk) {
      T *s = base + chunk * per_chunk, *ds = s + CH, *sink = ds + CH, *pb1g = sink + CH, *pw2 = pb1g + CH,
        *pb2 = pw2 + CH;
      const auto range = ad::chunk_range(N, n_chunks, chunk);
      for (int64_t n = range.first; n < range.second; ++n) {
        head_hidden_of_example(n, CH, ppre, pb1, s, ds);
        T* gp = gpre ? gpre + n * CH : sink;
        for (int64_t c = 0; c < C; ++c) {
          const T g = gz[n * C + c];
          head_backward_row(H, g, s + c * H, ds + c * H, w2 + c * H, gp + c * H, pb1g + c * H, pw2 + c * H);
          pb2[c] += g;
        }
      }
    });
    T* grads[3] = {ad::grad_of<T>(o.inputs[1]), ad::grad_of<T>(o.inputs[2]), ad::grad_of<T>(o.inputs[3])};
    const int64_t offset[3] = {3 * CH, 4 * CH, 5 * CH}, size[3] = {CH, CH, C};
    for (int p = 0; p < 3; ++p) {
      if (!grads[p]) continue;
      for (int chunk = 0; chunk < n_chunks; ++chunk) {
        const T* part = base + chunk * per_chunk + offset[p];
        for (int64_t k = 0; k < size[p]; ++k) grads[p][k] += part[k];
      }
    }
  });
}

Tensor ci_vector_mlp_head(const Tensor& xW1, const Tensor& b1, const Tensor& W2, const Tensor& b2) {
  if (W2.dim() != 2 || b1.shape() != W2.shape() || b2.dim() != 1 || b2.size(0) != W2.size(0) || xW1.dim() < 1 ||
      xW1.size(-1) != W2.size(0) * W2.size(1))
    ad::fail("ci_vector_mlp_head: expected xW1 [..., C*H], b1/W2 [C, H], b2 [C]; got xW1 " + xW1.shape().str() +
             ", b1 " + b1.shape().str() + ", W2 " + W2.shape().str() + ", b2 " + b2.shape().str());
  for (const Tensor* t : {&b1, &W2, &b2})
    if (t->dtype() != xW1.dtype()) ad::fail("ci_vector_mlp_head: all inputs need the same dtype");
  const int64_t C = W2.size(0), H = W2.size(1), CH = C * H, N = xW1.numel() / CH;
  ad::Shape zs = xW1.shape();
  zs.d[zs.nd - 1] = C;
  Tensor out = ad::make_result("ci_vector_mlp_head", zs, xW1.dtype(), {xW1, b1, W2, b2}, ci_vector_mlp_head_backward);
  const int n_chunks = n_chunks_for(N, C, H);
  Tensor scratch = ad::empty({n_chunks, CH}, xW1.dtype());  // s of one example per chunk
  ad::dispatch(xW1.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *ppre = xW1.data<T>(), *pb1 = b1.data<T>(), *w2 = W2.data<T>(), *pb2 = b2.data<T>();
    T* z = out.data<T>();
    ad::parallel_chunks(n_chunks, [&](int chunk) {
      T* s = scratch.data<T>() + chunk * CH;
      const auto range = ad::chunk_range(N, n_chunks, chunk);
      for (int64_t n = range.first; n < range.second; ++n) {
        head_hidden_of_example(n, CH, ppre, pb1, s, (T*)nullptr);  // forward needs no gelu'
        for (int64_t c = 0; c < C; ++c) z[n * C + c] = pb2[c] + dot_row(H, w2 + c * H, s + c * H);
      }
    });
  });
  return ad::finish(out);
}

}  // namespace decomp
