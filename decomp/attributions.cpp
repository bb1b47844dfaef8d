#include "decomp/attributions.hpp"

#include <algorithm>
#include <vector>

#include "autodiff/gemm.hpp"

namespace decomp {

using ad::Tensor;

Tensor component_outputs(const APD& apd, int l, const Tensor& a) {
  ad::NoGradGuard ng;
  const ComponentModel& cm = apd.cm;
  const LayerComponents& L = cm.layers[(size_t)l];
  const int64_t C = apd.C(), m = apd.m(), cols = C * m, d_out = L.d_out;
  const Tensor h = cm.h_of(l, ad::reshape(a, {-1, L.d_in}));  // [rows, C m]
  const int64_t rows = h.size(0);
  Tensor P = ad::empty({rows, C, d_out}, h.dtype());
  // P[:, c, :] = h[:, c m : (c + 1) m] U[c m : (c + 1) m, :]; a tied layer's U is V_src^T.
  const Tensor U = L.tied_src >= 0 ? ad::transpose(cm.layers[(size_t)L.tied_src].V, 0, 1) : L.U;  // [C m, d_out]
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const T *ph = h.data<T>(), *pu = U.data<T>();
    T* pp = P.data<T>();
    if (m * d_out >= 64) {  // one GEMM per component on strided views of h and P
      for (int64_t c = 0; c < C; ++c)
        ad::gemm(false, false, rows, d_out, m, (T)1, ph + c * m, cols, pu + c * m * d_out, d_out, (T)0,
                 pp + c * d_out, C * d_out);
      return;
    }
    // toy sizes: a GEMM call per component costs more than its arithmetic
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c) {
        T* out = pp + (r * C + c) * d_out;
        for (int64_t o = 0; o < d_out; ++o) out[o] = 0;
        for (int64_t k = c * m; k < (c + 1) * m; ++k) {
          const T hv = ph[r * cols + k];
          for (int64_t o = 0; o < d_out; ++o) out[o] += hv * pu[k * d_out + o];
        }
      }
  };
  if (h.dtype() == ad::DType::f64) run(0.0);
  else run(0.0f);
  return P;
}

namespace {

// The target's forward with every decomposed layer's output h_l = a_l W_l^T + b + z_l, z_l a
// zero leaf: d y / d z_l is d y / d h_l, through every later layer. With apd_weights, W_l is
// the APD model's sum_c P_{c,l} (constant) and a_l (this pass's input) goes to `inputs`.
struct OutputLeafHooks : models::ForwardHooks {
  const ComponentModel* cm = nullptr;
  std::vector<Tensor>* z = nullptr;
  bool apd_weights = false;
  std::vector<Tensor>* inputs = nullptr;
  Tensor with_leaf(int l, const Tensor& out) {
    Tensor zl = ad::zeros(out.shape(), out.dtype());
    zl.requires_grad_(true);
    (*z)[(size_t)l] = zl;
    return out + zl;
  }
  Tensor linear(const std::string& name, const Tensor& x, const Tensor& weight, const Tensor& bias) override {
    const int l = cm->index_of(name);
    if (l < 0) return Tensor();
    if (!apd_weights) return with_leaf(l, ad::linear(x, weight, bias));
    (*inputs)[(size_t)l] = ad::detach(x);
    const Tensor xw = ad::matmul(x, ad::detach(cm->VU(l)));  // x sum_c P_{c,l}
    return with_leaf(l, bias.defined() ? xw + bias : xw);
  }
  Tensor embedding(const std::string& name, const ad::Indices& ids, const Tensor& weight) override {
    const int l = cm->index_of(name);
    if (l >= 0 && apd_weights) ad::fail("APD gradient attributions of the APD model: embedding layers are not supported");
    return l < 0 ? Tensor() : with_leaf(l, ad::embedding(weight, ids));
  }
};

}  // namespace

// dots [rows, C, O] += P [rows, C, d] G_r row by row, G_r [d, O] the output gradients of row r
// read from G [O, *, d] (the layout ad::grad returns them in, one output at a time): entry
// (k, o) of row r is G[o * og + r * d + k], og the stride between outputs. The GEMM reads G_r
// transposed in place; the loop first gathers it into a [d, O] tile so its inner loop runs over
// contiguous outputs.
template <class T>
static void accumulate_dots_typed(const T* P, const T* G, int64_t og, T* dots, int64_t rows, int64_t C, int64_t O,
                                  int64_t d, bool use_gemm) {
  std::vector<T> tile(use_gemm ? 0 : (size_t)(d * O));
  for (int64_t r = 0; r < rows; ++r) {
    const T *p = P + r * C * d, *g = G + r * d;
    T* out = dots + r * C * O;
    if (use_gemm) {
      ad::gemm(false, true, C, O, d, (T)1, p, d, g, og, (T)1, out, O);
      continue;
    }
    for (int64_t o = 0; o < O; ++o)
      for (int64_t k = 0; k < d; ++k) tile[(size_t)(k * O + o)] = g[o * og + k];
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < d; ++k) {
        const T pv = p[c * d + k];
        const T* tk = tile.data() + k * O;
        for (int64_t o = 0; o < O; ++o) out[c * O + o] += pv * tk[o];
      }
  }
}

void accumulate_attribution_dots(const Tensor& P, const Tensor& G, Tensor& dots, int mode) {
  const int64_t rows = P.size(0), C = P.size(1), d = P.size(2), O = G.size(0);
  if (G.size(1) != rows || G.size(2) != d || dots.size(0) != rows || dots.size(1) != C || dots.size(2) != O ||
      P.dtype() != G.dtype() || P.dtype() != dots.dtype())
    ad::fail("accumulate_attribution_dots: expected P [rows, C, d], G [O, rows, d], dots [rows, C, O]; got " +
             P.shape().str() + ", " + G.shape().str() + ", " + dots.shape().str());
  // A GEMM call per row pays off only for large rows (the residual MLP's C 130 x O 100 x d 1000);
  // for the toy TMS sizes its call overhead dominates the few hundred multiply-adds.
  const bool use_gemm = mode == 1 || (mode < 0 && C * O * d >= 32768);
  if (P.dtype() == ad::DType::f64)
    accumulate_dots_typed(P.data<double>(), G.data<double>(), rows * d, dots.data<double>(), rows, C, O, d, use_gemm);
  else
    accumulate_dots_typed(P.data<float>(), G.data<float>(), rows * d, dots.data<float>(), rows, C, O, d, use_gemm);
}

namespace {

// The rows-innermost kernel for small layers (TMS): for each component c and output dim k
//   p[r]            = sum_{j in c's columns} h^T[j, r] U[j, k]        (= (a_l P_{c,l})[r, k])
//   dots^T[c, o, r] += p[r] G^T[k, o, r]
// with every inner loop running over the rows (contiguous, vectorisable). h^T [C m, rows];
// U [C m, d] or, tied, V_src [d, C m] read transposed; G^T [d, O, rows]; dots^T [C, O, rows].
template <class T>
void dots_rows_inner(const T* hT, const T* U, bool tied, const T* GT, T* dotsT, int64_t rows, int64_t C, int64_t m,
                     int64_t d, int64_t O) {
  std::vector<T> p((size_t)rows);
  const int64_t cols = C * m;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < d; ++k) {
      std::fill(p.begin(), p.end(), (T)0);
      for (int64_t j = c * m; j < (c + 1) * m; ++j) {
        const T u = tied ? U[k * cols + j] : U[j * d + k];
        const T* h = hT + j * rows;
        for (int64_t r = 0; r < rows; ++r) p[(size_t)r] += h[r] * u;
      }
      for (int64_t o = 0; o < O; ++o) {
        T* out = dotsT + (c * O + o) * rows;
        const T* g = GT + (k * O + o) * rows;
        for (int64_t r = 0; r < rows; ++r) out[r] += p[(size_t)r] * g[r];
      }
    }
}

// d y_o / d h_l of every row for every output o of one layer: [O, rows, d] (per-row path:
// each output's gradient is one contiguous copy) or [d, O, rows] (rows-inner path); every
// entry is written by store().
struct OutputGradients {
  int64_t rows = 0, d = 0, O = 0;
  bool rows_inner = false;
  Tensor buf;
  OutputGradients(int64_t r, int64_t d_, int64_t o, bool inner, ad::DType dt)
      : rows(r), d(d_), O(o), rows_inner(inner), buf(ad::empty({r * d_ * o}, dt)) {}
  template <class T> T* data() { return buf.data<T>(); }
  // g [rows, d] of output o
  void store(const Tensor& g, int64_t o) {
    auto run = [&](auto zero) {
      using T = decltype(zero);
      const T* in = g.data<T>();
      T* out = data<T>();
      if (rows_inner) {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t k = 0; k < d; ++k) out[(k * O + o) * rows + r] = in[r * d + k];
      } else {
        std::copy(in, in + rows * d, out + o * rows * d);
      }
    };
    if (g.dtype() == ad::DType::f64) run(0.0);
    else run(0.0f);
  }
};

}  // namespace

Tensor gradient_attributions(const APD& apd, const Batch& batch, const StepState& st, int path) {
  const ComponentModel& cm = apd.cm;
  const size_t nl = cm.layers.size();
  std::vector<Tensor> z(nl), apd_inputs(nl);
  Tensor y;
  {
    ad::EnableGradGuard eg;
    OutputLeafHooks hooks;
    hooks.cm = &cm;
    hooks.z = &z;
    hooks.apd_weights = apd.cfg.apd.attribute_apd_model;
    hooks.inputs = &apd_inputs;
    y = apd.target.forward(batch, &hooks);
  }
  const std::vector<Tensor>& a = apd.cfg.apd.attribute_apd_model ? apd_inputs : st.inputs;
  for (size_t l = 0; l < nl; ++l)
    if (!z[l].defined()) ad::fail("APD gradient attributions: the target never called layer '" + cm.layers[l].name + "'");
  const int64_t O = y.size(-1), rows = y.numel() / O, C = apd.C();
  int64_t widest = 0;  // the largest C d_out O over the layers
  for (const LayerComponents& L : cm.layers) widest = std::max(widest, C * L.d_out * O);
  const bool rows_inner = path == 0 || (path < 0 && widest <= 4096);  // measured: TMS 5-2 (125) gains 1.6x, 40-10 (80000) loses
  // g_{l,o} for every o
  std::vector<OutputGradients> G;
  for (size_t l = 0; l < nl; ++l) G.emplace_back(rows, cm.layers[l].d_out, O, rows_inner, y.dtype());
  for (int64_t o = 0; o < O; ++o) {
    Tensor sel = ad::zeros(y.shape(), y.dtype());  // selects output o of every row
    for (int64_t r = 0; r < rows; ++r) sel.set_item(r * O + o, 1.0);
    const std::vector<Tensor> g = ad::grad(y, z, sel, /*retain_graph=*/true);
    for (size_t l = 0; l < nl; ++l) {
      const Tensor gl = g[l].defined() ? ad::reshape(g[l], {rows, cm.layers[l].d_out})
                                       : ad::zeros({rows, cm.layers[l].d_out}, y.dtype());  // y does not depend on h_l
      G[l].store(gl, o);
    }
  }
  ad::NoGradGuard ng;
  if (!rows_inner) {
    // a_l P_{c,l} [chunk, C, d_out] for 32 rows at a time: the residual MLP's mlp_out would
    // need [rows, C, d_out] = 133 MB at once
    Tensor dots = ad::zeros({rows, C, O}, y.dtype());  // sum_l g_{l,o} . (a_l P_{c,l})
    const int64_t chunk = 32;
    for (size_t l = 0; l < nl; ++l) {
      const int64_t d = cm.layers[l].d_out;
      const Tensor a2 = ad::reshape(a[l], {rows, cm.layers[l].d_in});
      for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t n = std::min(chunk, rows - r0);
        const Tensor P = component_outputs(apd, (int)l, ad::slice(a2, 0, r0, r0 + n));
        const bool gemm = C * O * d >= 32768;
        if (y.dtype() == ad::DType::f64)
          accumulate_dots_typed(P.data<double>(), G[l].template data<double>() + r0 * d, rows * d,
                                dots.data<double>() + r0 * C * O, n, C, O, d, gemm);
        else
          accumulate_dots_typed(P.data<float>(), G[l].template data<float>() + r0 * d, rows * d,
                                dots.data<float>() + r0 * C * O, n, C, O, d, gemm);
      }
    }
    return ad::sum(ad::square(dots), {2});
  }
  Tensor dotsT = ad::zeros({C, O, rows}, y.dtype());
  for (size_t l = 0; l < nl; ++l) {
    const LayerComponents& L = cm.layers[l];
    const Tensor hT = ad::transpose(cm.h_of((int)l, ad::reshape(a[l], {-1, L.d_in})), 0, 1);  // [C m, rows]
    const bool tied = L.tied_src >= 0;
    const Tensor& U = tied ? cm.layers[(size_t)L.tied_src].V : L.U;
    if (y.dtype() == ad::DType::f64)
      dots_rows_inner(hT.data<double>(), U.data<double>(), tied, G[l].template data<double>(), dotsT.data<double>(), rows, C,
                      apd.m(), L.d_out, O);
    else
      dots_rows_inner(hT.data<float>(), U.data<float>(), tied, G[l].template data<float>(), dotsT.data<float>(), rows, C,
                      apd.m(), L.d_out, O);
  }
  return ad::transpose(ad::sum(ad::square(dotsT), {1}), 0, 1);  // [rows, C]
}

Tensor ablation_attributions(const APD& apd, const Batch& batch, const StepState& st) {
  ad::NoGradGuard ng;
  const ComponentModel& cm = apd.cm;
  const int64_t C = apd.C(), m = apd.m(), cols = C * m;
  const ad::DType dt = st.target_out.dtype();
  const int64_t rows = st.inputs[0].numel() / st.inputs[0].size(-1);
  // masks [..., C m] per layer from one column pattern [C m]
  auto masks_with = [&](const Tensor& pattern) {
    std::vector<LayerMask> masks(cm.layers.size());
    const Tensor full = ad::ones({rows, cols}, dt) * pattern;
    for (size_t l = 0; l < masks.size(); ++l) masks[l].m = apd.expand_to_columns(full, st.inputs[l], (int)l);
    return masks;
  };
  const Tensor all_on = apd.forward_masked(batch, masks_with(ad::ones({cols}, dt)));
  if (all_on.numel() / all_on.size(-1) != rows)
    ad::fail("APD ablation attributions: the output has " + std::to_string(all_on.numel() / all_on.size(-1)) +
             " rows, the layer inputs " + std::to_string(rows));
  Tensor attr = ad::zeros({rows, C}, dt);
  for (int64_t c = 0; c < C; ++c) {
    Tensor drop = ad::ones({cols}, dt);
    for (int64_t k = 0; k < m; ++k) drop.set_item(c * m + k, 0.0);
    const Tensor change = ad::reshape(ad::sum(ad::square(all_on - apd.forward_masked(batch, masks_with(drop))), {-1}), {rows});
    for (int64_t r = 0; r < rows; ++r) attr.set_item(r * C + c, change.item(r));
  }
  return attr;
}

Tensor activation_attributions(const APD& apd, const StepState& st) {
  ad::NoGradGuard ng;
  Tensor attr;
  for (size_t l = 0; l < apd.cm.layers.size(); ++l) {
    Tensor a = ad::sum(ad::square(component_outputs(apd, (int)l, st.inputs[l])), {2});
    attr = attr.defined() ? attr + a : a;
  }
  return attr;
}

}  // namespace decomp
