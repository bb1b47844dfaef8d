// Matrix products through OpenBLAS. Transposed operands are passed to BLAS as flags.
#include <cblas.h>

#include <cstring>

#include "autodiff/gemm.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/parallel.hpp"

namespace ad {

// OpenBLAS runs single-threaded; gemm() splits big products itself on the engine's thread
// pool. Why: with two cores, OpenBLAS's own workers busy-wait after every call and took the
// core from the pool's CI-function chunks (that op ran 1.9x slower next to them), and one
// pool keeps thread counts and chunking in one place (parallel.hpp).
static const bool kBlasSingleThreaded = (openblas_set_num_threads(1), true);

// Fixed chunk count from the size alone (never the thread count), so results do not depend
// on PD_NUM_THREADS: 1 below 2M multiply-adds (a pool wake-up costs about as much), 2 up to
// 1G, 4 above (on 2 cores, 4 pieces of a 200M product were 3% slower than 2: each piece
// packs its operand panels again). The split runs along M or N, whichever is longer; K is
// never split (no partial sums to add), so every C entry is one single-threaded BLAS dot
// product.
int gemm_chunks(int64_t M, int64_t N, int64_t K) {
  const double macs = (double)M * (double)N * (double)K;
  const int64_t split = M >= N ? M : N;
  int chunks = macs < 2e6 ? 1 : (macs < 1e9 ? 2 : 4);
  while (chunks > 1 && split < 16 * chunks) chunks /= 2;
  return chunks;
}

template <class T, class Blas>
static void gemm_chunked(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                         const T* B, int64_t ldb, T beta, T* C, int64_t ldc, Blas blas) {
  if (M == 0 || N == 0) return;
  (void)kBlasSingleThreaded;
  const int chunks = gemm_chunks(M, N, K);
  const bool split_m = M >= N;
  auto run = [&](int c) {
    const auto r = chunk_range(split_m ? M : N, chunks, c);
    const int64_t b = r.first, n = r.second - r.first;
    if (split_m)  // rows b.. of op(A) and C; op(A) is A[b*lda] or, transposed, column b of A
      blas(ta, tb, n, N, K, alpha, ta ? A + b : A + b * lda, lda, B, ldb, beta, C + b * ldc, ldc);
    else          // columns b.. of op(B) and C; op(B) is column b of B or, transposed, row b
      blas(ta, tb, M, n, K, alpha, A, lda, tb ? B + b * ldb : B + b, ldb, beta, C + b, ldc);
  };
  // with one thread the same chunks run in order, so the numbers match any thread count
  if (chunks == 1) run(0);
  else parallel_chunks(chunks, run);
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_chunked(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
               [](bool ta, bool tb, int64_t m, int64_t n, int64_t k, float al, const float* a, int64_t la,
                  const float* b, int64_t lb, float be, float* c, int64_t lc) {
                 cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m,
                             (int)n, (int)k, al, a, (int)la, b, (int)lb, be, c, (int)lc);
               });
}
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  gemm_chunked(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
               [](bool ta, bool tb, int64_t m, int64_t n, int64_t k, double al, const double* a, int64_t la,
                  const double* b, int64_t lb, double be, double* c, int64_t lc) {
                 cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m,
                             (int)n, (int)k, al, a, (int)la, b, (int)lb, be, c, (int)lc);
               });
}

// Geometry of one matmul call, recomputed identically in forward and backward.
struct MatmulDims {
  int64_t batch = 1, M = 0, K = 0, N = 0;
  bool batched_b = false;  // b carries the same leading dims as a
  Shape out;
};

static MatmulDims matmul_dims(const Shape& a, const Shape& b, bool ta, bool tb) {
  if (a.nd < 2 || b.nd < 2) shape_error("matmul", a, b, "both operands need at least 2 dims");
  MatmulDims d;
  d.M = ta ? a[-1] : a[-2];
  int64_t Ka = ta ? a[-2] : a[-1];
  d.K = tb ? b[-1] : b[-2];
  d.N = tb ? b[-2] : b[-1];
  if (Ka != d.K) shape_error("matmul", a, b, ta || tb ? "inner dims differ (after the requested transposes)" : "inner dims differ");
  for (int i = 0; i < a.nd - 2; ++i) d.batch *= a.d[i];
  if (b.nd > 2) {
    if (b.nd != a.nd) shape_error("matmul", a, b, "batched operands need the same number of dims");
    for (int i = 0; i < a.nd - 2; ++i)
      if (a.d[i] != b.d[i]) shape_error("matmul", a, b, "batch dims differ");
    d.batched_b = true;
  }
  d.out = a;
  d.out[-2] = d.M;
  d.out[-1] = d.N;
  return d;
}

AD_REGISTER_OP("matmul");
// C = op(A) op(B);  d op(A) = dC op(B)^T,  d op(B) = op(A)^T dC  (transposed back when the
// operand was stored transposed). All gradient gemms use beta = 1: they accumulate.
static void matmul_backward(Node& o) {
  const Tensor &a = o.inputs[0], &b = o.inputs[1];
  const bool ta = o.ints[0], tb = o.ints[1];
  MatmulDims d = matmul_dims(a.shape(), b.shape(), ta, tb);
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    const T *A = a.data<T>(), *B = b.data<T>(), *G = static_cast<const T*>(o.scratch);
    T *gA = grad_of<T>(a), *gB = grad_of<T>(b);
    const int64_t lda = ta ? d.M : d.K, ldb = tb ? d.K : d.N;
    // 2-d b and untransposed a: the batch folds into M, one gemm each way.
    const bool fold = !d.batched_b && !ta;
    const int64_t steps = fold ? 1 : d.batch, Mi = fold ? d.batch * d.M : d.M;
    const int64_t sa = d.M * d.K, sb = d.batched_b ? d.K * d.N : 0, sc = d.M * d.N;
    for (int64_t s = 0; s < steps; ++s) {
      const T *As = A + s * sa, *Bs = B + s * sb, *Gs = G + s * sc;
      if (gA) {
        if (!ta) gemm(false, !tb, Mi, d.K, d.N, (T)1, Gs, d.N, Bs, ldb, (T)1, gA + s * sa, d.K);
        else     gemm(tb, true, d.K, Mi, d.N, (T)1, Bs, ldb, Gs, d.N, (T)1, gA + s * sa, d.M);
      }
      if (gB) {
        T* gBs = gB + s * sb;
        if (!tb) gemm(!ta, false, d.K, d.N, Mi, (T)1, As, lda, Gs, d.N, (T)1, gBs, d.N);
        else     gemm(true, ta, d.N, d.K, Mi, (T)1, Gs, d.N, As, lda, (T)1, gBs, d.K);
      }
    }
  });
}

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  if (a.dtype() != b.dtype()) shape_error("matmul", a.shape(), b.shape(), "dtypes differ");
  MatmulDims d = matmul_dims(a.shape(), b.shape(), ta, tb);
  Tensor out = make_result("matmul", d.out, a.dtype(), {a, b}, matmul_backward);
  out.node()->ints[0] = ta;
  out.node()->ints[1] = tb;
  dispatch(a.dtype(), [&](auto z) {
    using T = decltype(z);
    const T *A = a.data<T>(), *B = b.data<T>();
    T* C = out.data<T>();
    const int64_t lda = ta ? d.M : d.K, ldb = tb ? d.K : d.N;
    const bool fold = !d.batched_b && !ta;
    const int64_t steps = fold ? 1 : d.batch, Mi = fold ? d.batch * d.M : d.M;
    const int64_t sb = d.batched_b ? d.K * d.N : 0;
    // sparse left operand (toy-model inputs): skip its zeros
    const bool sparse = fold && !tb && d.N >= 16 && d.K > 0 && mostly_zero(A, Mi * d.K);
    for (int64_t s = 0; s < steps; ++s) {
      if (sparse) gemm_sparse_a(Mi, d.N, d.K, A, lda, B, ldb, C, d.N);
      else gemm(ta, tb, Mi, d.N, d.K, (T)1, A + s * d.M * d.K, lda, B + s * sb, ldb, (T)0, C + s * d.M * d.N, d.N);
    }
    if (d.K == 0) std::memset(C, 0, out.node()->bytes());
  });
  return finish(out);
}

AD_REGISTER_OP("linear");
// Y = X W^T + b with X flattened to [R, d_in]:
//   dX += dY W,   dW += dY^T X,   db += sum_rows dY
static void linear_backward(Node& o) {
  const Tensor &x = o.inputs[0], &W = o.inputs[1], &b = o.inputs[2];
  const int64_t d_out = W.size(0), d_in = W.size(1), R = x.numel() / d_in;
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    const T *X = x.data<T>(), *Wd = W.data<T>(), *G = static_cast<const T*>(o.scratch);
    if (T* gX = grad_of<T>(x)) gemm(false, false, R, d_in, d_out, (T)1, G, d_out, Wd, d_in, (T)1, gX, d_in);
    if (T* gW = grad_of<T>(W)) gemm(true, false, d_out, d_in, R, (T)1, G, d_out, X, d_in, (T)1, gW, d_in);
    if (T* gb = b.defined() ? grad_of<T>(b) : nullptr)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t j = 0; j < d_out; ++j) gb[j] += G[r * d_out + j];
  });
}

Tensor linear(const Tensor& x, const Tensor& W, const Tensor& b) {
  if (W.dim() != 2 || x.dim() < 1 || x.size(-1) != W.size(1))
    shape_error("linear", x.shape(), W.shape(), "need x: [..., d_in] and W: [d_out, d_in]");
  if (x.dtype() != W.dtype()) shape_error("linear", x.shape(), W.shape(), "dtypes differ");
  const int64_t d_out = W.size(0), d_in = W.size(1), R = x.numel() / (d_in ? d_in : 1);
  if (b.defined() && (b.dim() != 1 || b.size(0) != d_out || b.dtype() != x.dtype()))
    shape_error("linear", W.shape(), b.shape(), "bias must be [d_out] of the weight's dtype");
  Shape os = x.shape();
  os[-1] = d_out;
  Tensor ins[3] = {x, W, b};
  Tensor out = make_result("linear", os, x.dtype(), ins, 3, linear_backward);
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    T* Y = out.data<T>();
    if (b.defined()) {  // Y = b broadcast over rows, then Y += X W^T
      const T* pb = b.data<T>();
      for (int64_t r = 0; r < R; ++r) std::memcpy(Y + r * d_out, pb, d_out * sizeof(T));
    }
    gemm(false, true, R, d_out, d_in, (T)1, x.data<T>(), d_in, W.data<T>(), d_in, b.defined() ? (T)1 : (T)0, Y,
         d_out);
    if (d_in == 0 && !b.defined()) std::memset(Y, 0, out.node()->bytes());
  });
  return finish(out);
}

}  // namespace ad
