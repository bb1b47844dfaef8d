// C = alpha op(A) op(B) + beta C, row-major, op(X) = X or X^T.
//   op(A): [M, K]  (A stored [M, K] with lda, or [K, M] when trans_a)
//   op(B): [K, N]  (B stored [K, N] with ldb, or [N, K] when trans_b)
//   C:     [M, N]  with ldc
// gemm() goes to (single-threaded) OpenBLAS, big products cut into gemm_chunks() pieces along
// M or N on the engine's thread pool; gemm_reference() is the plain triple loop it is tested
// against.
#pragma once
#include <cstdint>

namespace ad {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);
// How many pieces gemm() cuts an [M, K] x [K, N] product into for the thread pool (a
// function of the sizes only, so results never depend on the thread count). 1 = one call.
int gemm_chunks(int64_t M, int64_t N, int64_t K);

// C = A B skipping the zero entries of A: for each A[i, k] != 0, C[i, :] += A[i, k] B[k, :].
//   A: [M, K] (lda), B: [K, N] (ldb), C: [M, N] (ldc), overwritten. Costs nnz(A) N
//   multiply-adds instead of M N K: the toy models' inputs are sparse by design (a feature
//   is active with probability 0.01-0.05), so their first matmul is mostly zeros.
template <class T>
void gemm_sparse_a(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                   int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) c[j] = 0;
    for (int64_t k = 0; k < K; ++k) {
      const T a = A[i * lda + k];
      if (a == 0) continue;
      const T* b = B + k * ldb;
      for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
    }
  }
}
// True when at most 1/8 of A's M K entries are non-zero (then gemm_sparse_a is the faster
// choice, counting the nnz scan, for N >= 16 columns). The scan goes in blocks and stops as
// soon as the count passes n/8, so a dense A costs a few blocks, not a pass over all of it.
template <class T>
bool mostly_zero(const T* A, int64_t n) {
  const int64_t limit = n / 8;
  int64_t nnz = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 1024) {
    const int64_t i1 = i0 + 1024 < n ? i0 + 1024 : n;
    for (int64_t i = i0; i < i1; ++i) nnz += A[i] != 0;
    if (nnz > limit) return false;
  }
  return true;
}

template <class T>
void gemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                    int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      T acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc += (trans_a ? A[k * lda + i] : A[i * lda + k]) * (trans_b ? B[j * ldb + k] : B[k * ldb + j]);
      C[i * ldc + j] = alpha * acc + (beta == 0 ? 0 : beta * C[i * ldc + j]);
    }
}

}  // namespace ad
