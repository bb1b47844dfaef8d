// APD simplicity (METHODS 2, Schatten-p):
//   L_S = sum_{b,l,c,k} ( s_{b,c} ||A_{c,l,:,k}||^2 ||B_{c,l,k,:}||^2 + 1e-16 )^{p/2} / (N B)
// with s the batch top-k mask, N the decomposed parameter count (a tied layer counts again,
// as in faithfulness) and B the rows of the batch. In the column layout, column j = c m + k
// of layer l has ||A_{c,l,:,k}|| = ||V_l[:, j]|| and ||B_{c,l,k,:}|| = ||U_l[j, :]||; a tied
// layer's A and B are its source's B^T and A^T, so it repeats its source's sum.
#include <algorithm>
#include <cmath>

#include "autodiff/parallel.hpp"
#include "decomp/apd.hpp"
#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"

namespace decomp {

using ad::Tensor;

namespace {

// Fixed chunk counts (ad::fixed_chunks): the same bits with any thread count.
int chunks_for(int64_t n, int64_t total) { return ad::fixed_chunks(total, n, 16); }

// a[j] = sum_i V[i, j]^2 for V [R, J], summed over i in order (as ad::sum over axis 0);
// chunks own disjoint column ranges.
template <class T> void col_sumsq(const T* V, int64_t R, int64_t J, T* a) {
  const int n = chunks_for(J, R * J);
  ad::parallel_chunks(n, [&](int c) {
    const auto [j0, j1] = ad::chunk_range(J, n, c);
    for (int64_t j = j0; j < j1; ++j) a[j] = 0;
    for (int64_t i = 0; i < R; ++i) {
      const T* v = V + i * J;
      for (int64_t j = j0; j < j1; ++j) a[j] += v[j] * v[j];
    }
  });
}

// b[j] = sum_k U[j, k]^2 for U [J, K], each row in 8 interleaved lanes combined in a fixed
// order (as ad::sum over the last axis).
template <class T> void row_sumsq(const T* U, int64_t J, int64_t K, T* b) {
  const int n = chunks_for(J, J * K);
  ad::parallel_chunks(n, [&](int c) {
    const auto [j0, j1] = ad::chunk_range(J, n, c);
    for (int64_t j = j0; j < j1; ++j) {
      const T* u = U + j * K;
      T lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t k = 0;
      for (; k + 8 <= K; k += 8)
        for (int q = 0; q < 8; ++q) lane[q] += u[k + q] * u[k + q];
      for (; k < K; ++k) lane[k & 7] += u[k] * u[k];
      b[j] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
  });
}

// g[r, j] += (2 x[r, j]) s[j] for x [R, J] (s per column) or, by_row, g[j, k] += (2 x[j, k]) s[j].
template <class T> void add_scaled_twice(const T* x, const T* s, int64_t R, int64_t J, bool by_row, T* g) {
  const int n = chunks_for(R, R * J);
  ad::parallel_chunks(n, [&](int c) {
    const auto [r0, r1] = ad::chunk_range(R, n, c);
    for (int64_t r = r0; r < r1; ++r) {
      const T *xr = x + r * J;
      T* gr = g + r * J;
      if (by_row) {
        const T sr = s[r];
        for (int64_t j = 0; j < J; ++j) gr[j] += 2 * xr[j] * sr;
      } else {
        for (int64_t j = 0; j < J; ++j) gr[j] += 2 * xr[j] * s[j];
      }
    }
  });
}

}  // namespace

AD_REGISTER_OP("apd_column_norms");
Tensor apd_column_norms(const Tensor& V, const Tensor& U) {
  if (V.dim() != 2 || U.dim() != 2 || V.size(1) != U.size(0) || V.dtype() != U.dtype())
    ad::fail("apd_column_norms: expected V [d_in, J] and U [J, d_out] of one dtype; got " + V.shape().str() + ", " +
             U.shape().str());
  const int64_t J = V.size(1);
  Tensor a = ad::empty({J}, V.dtype()), b = ad::empty({J}, V.dtype());
  Tensor out = ad::make_result("apd_column_norms", {J}, V.dtype(), {V, U}, [](ad::Node& o) {
    // d V[i, j] += 2 V[i, j] (g_j b_j),  d U[j, k] += 2 U[j, k] (g_j a_j)
    const Tensor &V = o.inputs[0], &U = o.inputs[1], &a = o.saved[0], &b = o.saved[1];
    const int64_t J = V.size(1);
    ad::dispatch(o.dtype, [&](auto zero) {
      using T = decltype(zero);
      const T* g = static_cast<const T*>(o.scratch);
      std::vector<T> s((size_t)J);
      if (T* gV = ad::grad_of<T>(V)) {
        for (int64_t j = 0; j < J; ++j) s[(size_t)j] = g[j] * b.data<T>()[j];
        add_scaled_twice(V.data<T>(), s.data(), V.size(0), J, false, gV);
      }
      if (T* gU = ad::grad_of<T>(U)) {
        for (int64_t j = 0; j < J; ++j) s[(size_t)j] = g[j] * a.data<T>()[j];
        add_scaled_twice(U.data<T>(), s.data(), J, U.size(1), true, gU);
      }
    });
  });
  ad::dispatch(V.dtype(), [&](auto zero) {
    using T = decltype(zero);
    col_sumsq(V.data<T>(), V.size(0), J, a.data<T>());
    row_sumsq(U.data<T>(), J, U.size(1), b.data<T>());
    T* y = out.data<T>();
    for (int64_t j = 0; j < J; ++j) y[j] = a.data<T>()[j] * b.data<T>()[j];
  });
  if (out.requires_grad()) out.node()->saved[0] = a, out.node()->saved[1] = b;
  return ad::finish(out);
}

Tensor apd_column_norms_reference(const Tensor& V, const Tensor& U) {
  return ad::sum(ad::square(V), {0}) * ad::sum(ad::square(U), {1});
}

Tensor apd_simplicity(const APD& apd, const StepState& st, double p) {
  // s is 0/1, so each (b, j) term is (n_j + 1e-16)^{p/2} where s_{b,j} = 1 and the constant
  // (1e-16)^{p/2} elsewhere: the sum is sum_j count_j (n_j + 1e-16)^{p/2} + (B C m - sum_j count_j)
  // (1e-16)^{p/2} with count_j = sum_b s_{b,j}. The same number as the formula above, with the
  // power taken over C m column norms instead of B C m entries.
  const ComponentModel& cm = apd.cm;
  const int64_t rows = st.topk_columns.size(0), cols = st.topk_columns.size(1);
  const Tensor count = ad::sum(st.topk_columns, {0});  // [C m], constant
  const double kept = ad::sum(count).item();
  const double floor_term = ((double)rows * (double)cols - kept) * std::pow(1e-16, p / 2.0);
  Tensor total;
  int64_t N = 0;
  for (size_t l = 0; l < cm.layers.size(); ++l) {
    const LayerComponents& L = cm.layers[l];
    N += L.d_in * L.d_out;
    const LayerComponents& own = L.tied_src >= 0 ? cm.layers[(size_t)L.tied_src] : L;
    const Tensor norms = apd_column_norms(own.V, own.U);  // [C m]: ||A column||^2 ||B row||^2
    const Tensor t = ad::sum(count * ad::pow(norms + 1e-16, p / 2.0)) + floor_term;
    total = total.defined() ? total + t : t;
  }
  return total / ((double)N * (double)rows);
}

namespace {
struct SimplicityTerm : LossTerm {
  double p = 1.0;
  void read(models::ConfigSection& s) override {
    p = s.get_double("p", p);
    if (!(p > 0) || !std::isfinite(p)) s.error("p", "must be a finite number > 0");
  }
  nlohmann::json params() const override { return {{"p", p}}; }
  Tensor value(const TermContext& c) const override { return apd_simplicity(c.apd(), c.st, p); }
};
}  // namespace

PD_LOSS_TERM(simplicity, kAPD, false, [] { return std::make_unique<SimplicityTerm>(); });

}  // namespace decomp
