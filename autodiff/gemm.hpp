// C = alpha op(A) op(B) + beta C, row-major, op(X) = X or X^T.
//   op(A): [M, K]  (A stored [M, K] with lda, or [K, M] when trans_a)
//   op(B): [K, N]  (B stored [K, N] with ldb, or [N, K] when trans_b)
//   C:     [M, N]  with ldc
// gemm() goes to OpenBLAS; gemm_reference() is the plain triple loop it is tested against.
#pragma once
#include <cstdint>

namespace ad {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

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
// choice, counting the nnz scan, for N >= 16 columns).
template <class T>
bool mostly_zero(const T* A, int64_t n) {
  int64_t nnz = 0;
  for (int64_t i = 0; i < n; ++i) nnz += A[i] != 0;
  return 8 * nnz <= n;
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
