#include "decomp/apd.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "autodiff/parallel.hpp"
#include "decomp/attributions.hpp"

namespace decomp {

using ad::Tensor;

int64_t batch_topk_k(double topk, int64_t rows, int64_t C) {
  if (!(topk >= 0) || !std::isfinite(topk)) ad::fail("APD: topk must be a finite number >= 0, got " + std::to_string(topk));
  const double k = std::floor(topk * (double)rows);
  const double all = (double)rows * (double)C;
  return k >= all ? rows * C : (int64_t)k;
}

APD::APD(const Target& t, const DecompConfig& c, ad::Rng& init_rng) : Decomposition(t, c, init_rng) {
  if (cfg.method != Method::apd) ad::fail("APD: the config's method is " + std::string(method_name()));
  if (cm.opt.ci_functions || cm.opt.group != cfg.apd.m)
    ad::fail("APD: the component model must have no CI functions and groups of m columns");
}

void APD::select(const Batch& batch, StepState& st, double per_row) const {
  switch (cfg.apd.attribution) {
    case Attribution::gradient: st.attributions = gradient_attributions(*this, batch, st); break;
    case Attribution::ablation: st.attributions = ablation_attributions(*this, batch, st); break;
    case Attribution::activation: st.attributions = activation_attributions(*this, st); break;
  }
  const int64_t rows = st.attributions.size(0);
  st.topk = ad::topk_mask(st.attributions, batch_topk_k(per_row, rows, C()));
  st.topk_columns = ad::reshape(ad::reshape(st.topk, {rows, C(), 1}) * ad::ones({1, 1, m()}, st.topk.dtype()),
                                {rows, C() * m()});
  st.g_lower.assign(cm.layers.size(), st.topk);
}

StepState APD::prepare(const Batch& batch, ad::Rng&) const {
  StepState st;
  record_target_pass(batch, st);
  select(batch, st, cfg.apd.topk);
  return st;
}

std::vector<Tensor> APD::onehot_on(const Batch& onehot, ad::Rng&) const {
  StepState st;
  record_target_pass(onehot, st);
  select(onehot, st, 1.0);
  return st.g_lower;
}

Tensor APD::expand_to_columns(const Tensor& s, const Tensor& like_input, int l) const {
  std::vector<int64_t> shape = like_input.shape().to_vector();
  shape.back() = cm.layers[(size_t)l].C;
  return ad::reshape(s, ad::Shape::from_vector(shape));
}

std::vector<LayerMask> APD::topk_masks(const StepState& st) const {
  std::vector<LayerMask> masks(cm.layers.size());
  for (size_t l = 0; l < masks.size(); ++l) masks[l].m = expand_to_columns(st.topk_columns, st.inputs[l], (int)l);
  return masks;
}

const StepState::TopkPass& APD::topk_forward(const Batch& batch, const StepState& st) const {
  if (!st.topk_pass.out.defined())
    st.topk_pass.out = forward_masked(batch, topk_masks(st), reuse_target_pass ? &st.cache : nullptr,
                                      &st.topk_pass.inputs);
  return st.topk_pass;
}

namespace {
// Both passes walk A row by row over one range of columns per chunk (ad::fixed_chunks: the
// same bits with any thread count); each column's sums still run over i in order, in double.
int column_chunks(int64_t rows, int64_t cols) { return ad::fixed_chunks(rows * cols, cols / 64, 16); }

// A [d_in, C m]: every column to unit norm (a zero column stays zero).
template <class T> void normalise_columns(Tensor& A) {
  const int64_t rows = A.size(0), cols = A.size(1);
  T* a = A.data<T>();
  std::vector<double> n2((size_t)cols);
  const int n = column_chunks(rows, cols);
  ad::parallel_chunks(n, [&](int c) {
    const auto [j0, j1] = ad::chunk_range(cols, n, c);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = j0; j < j1; ++j) n2[(size_t)j] += (double)a[i * cols + j] * a[i * cols + j];
    for (int64_t j = j0; j < j1; ++j) n2[(size_t)j] = n2[(size_t)j] == 0 ? 1.0 : 1.0 / std::sqrt(n2[(size_t)j]);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = j0; j < j1; ++j) a[i * cols + j] = (T)(a[i * cols + j] * n2[(size_t)j]);
  });
}
// g_j -= (g_j . a_j / |a_j|^2) a_j per column: the step then keeps |a_j| to first order.
template <class T> void remove_parallel_grad(const Tensor& A) {
  T* g = A.grad_data<T>();
  if (!g) return;
  const int64_t rows = A.size(0), cols = A.size(1);
  const T* a = A.data<T>();
  std::vector<double> dot((size_t)cols), n2((size_t)cols);
  const int n = column_chunks(rows, cols);
  ad::parallel_chunks(n, [&](int c) {
    const auto [j0, j1] = ad::chunk_range(cols, n, c);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        dot[(size_t)j] += (double)g[i * cols + j] * a[i * cols + j];
        n2[(size_t)j] += (double)a[i * cols + j] * a[i * cols + j];
      }
    for (int64_t j = j0; j < j1; ++j) dot[(size_t)j] = n2[(size_t)j] == 0 ? 0.0 : dot[(size_t)j] / n2[(size_t)j];
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = j0; j < j1; ++j) g[i * cols + j] = (T)(g[i * cols + j] - dot[(size_t)j] * a[i * cols + j]);
  });
}
}  // namespace

void APD::before_step() {
  if (!cfg.apd.unit_norm_A) return;
  for (LayerComponents& L : cm.layers) {
    if (L.tied_src >= 0) continue;
    if (L.V.dtype() == ad::DType::f64) normalise_columns<double>(L.V);
    else normalise_columns<float>(L.V);
  }
}

void APD::after_backward() {
  if (!cfg.apd.unit_norm_A) return;
  for (const LayerComponents& L : cm.layers) {
    if (L.tied_src >= 0) continue;
    if (L.V.dtype() == ad::DType::f64) remove_parallel_grad<double>(L.V);
    else remove_parallel_grad<float>(L.V);
  }
}

}  // namespace decomp
