#include "decomp/component_model.hpp"

#include <cmath>

#include "decomp/mask_ops.hpp"

namespace decomp {

using ad::Tensor;

// ---- component model ------------------------------------------------------------------------
ComponentModel::ComponentModel(const std::vector<LayerSpec>& specs, const ComponentModelOptions& o, ad::Rng& rng)
    : opt(o) {
  if (specs.empty()) ad::fail("ComponentModel: no layers to decompose");
  if (opt.C <= 0) ad::fail("ComponentModel: C must be positive, got " + std::to_string(opt.C));
  if (opt.group < 1 || opt.C % opt.group != 0)
    ad::fail("ComponentModel: " + std::to_string(opt.C) + " columns do not split into components of " +
             std::to_string(opt.group));
  for (const LayerSpec& s : specs) {
    if (!s.weight.defined() || s.weight.dim() != 2)
      ad::fail("ComponentModel: layer '" + s.name + "' needs a 2-d weight");
    LayerComponents L;
    L.name = s.name;
    L.embedding = s.embedding;
    L.C = opt.C;
    Tensor W = ad::to_dtype(s.weight, opt.dtype);
    L.W = W;
    if (s.embedding) {
      L.d_in = W.size(0), L.d_out = W.size(1);
      L.WT = W;
    } else {
      L.d_out = W.size(0), L.d_in = W.size(1);
      L.WT = ad::empty({L.d_in, L.d_out}, opt.dtype);
      for (int64_t i = 0; i < L.d_out; ++i)
        for (int64_t j = 0; j < L.d_in; ++j) L.WT.set_item(j * L.d_out + i, W.item(i * L.d_in + j));
    }
    layers.push_back(L);
  }
  // Tied layers first resolve their source; untied layers get V, U as opt.init says.
  for (size_t l = 0; l < specs.size(); ++l) {
    LayerComponents& L = layers[l];
    if (!specs[l].tied_to.empty()) {
      const int src = index_of(specs[l].tied_to);
      if (src < 0 || !specs[src].tied_to.empty())
        ad::fail("ComponentModel: layer '" + L.name + "' is tied to '" + specs[l].tied_to +
                 "', which is not an untied decomposed layer");
      if (layers[src].d_in != L.d_out || layers[src].d_out != L.d_in)
        ad::fail("ComponentModel: tied layer '" + L.name + "' does not have the transposed shape of '" +
                 specs[l].tied_to + "'");
      L.tied_src = src;
    } else if (opt.init == ComponentInit::kaiming_uniform) {
      const double m = (double)opt.group, s = opt.init_scale;
      L.V = leaf_uniform({L.d_in, L.C}, s * std::sqrt(6.0 / ((double)L.d_in * m)), opt.dtype, rng);
      L.U = leaf_uniform({L.C, L.d_out}, s * std::sqrt(6.0 / (m * (double)L.d_out)), opt.dtype, rng);
    } else {
      L.V = leaf_normal({L.d_in, L.C}, opt.init_scale / std::sqrt((double)L.d_in), opt.dtype, rng);
      L.U = leaf_normal({L.C, L.d_out}, opt.init_scale / std::sqrt((double)L.C), opt.dtype, rng);
    }
  }
  if (!opt.ci_functions) return;
  if (opt.ci_type == CIType::transformer && !opt.global_ci)
    ad::fail("ComponentModel: the transformer CI function is global only (ci_fn.global true)");
  if (opt.global_ci) {
    std::vector<int64_t> d_in, C;
    for (auto& L : layers) d_in.push_back(L.d_in), C.push_back(L.C);
    if (opt.ci_type == CIType::transformer) {
      auto t = std::make_unique<GlobalCITransformer>();
      t->init(opt.ci_transformer, d_in, C, opt.dtype, rng);
      global_ci = std::move(t);
    } else {
      auto f = std::make_unique<GlobalCIFunction>();
      f->init(opt.ci_hidden, d_in, C, opt.dtype, rng);
      global_ci = std::move(f);
    }
  } else {
    ci.resize(layers.size());
    for (size_t l = 0; l < layers.size(); ++l)
      ci[l].init(opt.ci_type, opt.ci_hidden, layers[l].d_in, layers[l].C, opt.dtype, rng);
  }
}

int ComponentModel::index_of(const std::string& name) const {
  for (size_t l = 0; l < layers.size(); ++l)
    if (layers[l].name == name) return (int)l;
  return -1;
}

Tensor ComponentModel::h_of(int l, const Tensor& x) const {
  const LayerComponents& L = layers[l];
  auto leaf = [&](const Tensor& t) { return constant_components ? ad::detach(t) : t; };
  if (L.tied_src >= 0) return ad::matmul(x, leaf(layers[L.tied_src].U), false, true);  // x U_src^T
  return ad::matmul(x, leaf(L.V));
}
ComponentModel::StoredU ComponentModel::U_of(int l) const {
  const LayerComponents& L = layers[l];
  auto leaf = [&](const Tensor& t) { return constant_components ? ad::detach(t) : t; };
  if (L.tied_src >= 0) return {leaf(layers[L.tied_src].V), true};  // U = V_src^T
  return {leaf(L.U), false};
}
Tensor ComponentModel::out_of(int l, const Tensor& hm) const {
  const StoredU u = U_of(l);
  return ad::matmul(hm, u.t, false, u.trans);
}
Tensor ComponentModel::VU(int l) const {
  const LayerComponents& L = layers[l];
  if (L.tied_src >= 0) {
    const LayerComponents& S = layers[L.tied_src];
    return ad::matmul(S.U, S.V, true, true);  // U_src^T V_src^T = (V_src U_src)^T
  }
  return ad::matmul(L.V, L.U);
}
Tensor ComponentModel::target_out(int l, const Tensor& x, const Tensor& bias) const {
  const LayerComponents& L = layers[l];
  if (L.embedding) {
    Tensor y = ad::matmul(x, L.WT);
    return bias.defined() ? y + bias : y;
  }
  return ad::linear(x, L.W, bias);
}

std::vector<Tensor> ComponentModel::ci_pre_sigmoid(const std::vector<Tensor>& xs, std::vector<Tensor>* h_out) const {
  if (xs.size() != layers.size()) ad::fail("ci_pre_sigmoid: one input per decomposed layer expected");
  if (h_out) h_out->assign(layers.size(), Tensor());
  if (global_ci) return global_ci->forward(xs);
  std::vector<Tensor> z;
  for (size_t l = 0; l < layers.size(); ++l) {
    Tensor h = ci[l].type == CIType::mlp ? h_of((int)l, xs[l]) : Tensor();
    z.push_back(ci[l].forward(xs[l], h));
    if (h_out) (*h_out)[l] = h;
  }
  return z;
}

namespace {
// The rows of a layer input [..., d] that a per-example route [B, 1, ..., 1] sends through
// the components (route != 0): each example owns N / B consecutive rows.
struct RoutedRows {
  ad::Indices rows;  // ascending
  Tensor r;          // [R] the route value of each row
};
RoutedRows routed_rows(const Tensor& route, int64_t N, ad::DType dt) {
  const int64_t B = route.numel();
  if (B == 0 || N % B != 0)
    ad::fail("masked layer: route " + route.shape().str() + " does not split " + std::to_string(N) + " rows per example");
  const int64_t per = N / B;
  std::vector<int32_t> rows;
  std::vector<double> r;
  for (int64_t b = 0; b < B; ++b) {
    const double v = route.item(b);
    if (v == 0) continue;
    for (int64_t k = 0; k < per; ++k) rows.push_back((int32_t)(b * per + k)), r.push_back(v);
  }
  const int64_t R = (int64_t)rows.size();
  return {ad::Indices(std::move(rows), ad::Shape{R}), ad::from_vector(r, {R}, dt)};
}
// Rows `rows` of x [..., d] as [R, d] (a gather whose backward scatter-adds: the embedding op).
Tensor gather_rows(const Tensor& x, const ad::Indices& rows) {
  return ad::embedding(ad::reshape(x, {x.numel() / x.size(-1), x.size(-1)}), rows);
}
}  // namespace

Tensor ComponentModel::masked_forward(int l, const Tensor& x, const Tensor& bias, const LayerMask& mk) const {
  const bool need_xw = mk.m_delta.defined() || mk.route.defined();
  const Tensor xw = need_xw ? target_out(l, x, Tensor()) : Tensor();
  if (mk.route.defined()) {  // x V on the routed rows only
    const int64_t N = x.numel() / x.size(-1);
    return routed_output(l, [&](const ad::Indices& rows) { return h_of(l, gather_rows(x, rows)); }, N, xw, bias, mk);
  }
  return masked_output(l, h_of(l, x), xw, bias, mk);
}

Tensor ComponentModel::masked_output(int l, const Tensor& h, const Tensor& xw, const Tensor& bias,
                                     const LayerMask& mk) const {
  if (mk.route.defined()) {
    const int64_t N = h.numel() / h.size(-1);
    return routed_output(l, [&](const ad::Indices& rows) { return gather_rows(h, rows); }, N, xw, bias, mk);
  }
  // (h * (m - m_delta)) U + m_delta (x W^T) + b: the delta's -h U folded into the mask.
  const Tensor acts = masked_component_acts(h, mk.m, mk.m_delta);
  Tensor out;
  if (mk.m_delta.defined()) {
    const StoredU u = U_of(l);
    out = masked_layer_output(acts, u.t, u.trans, mk.m_delta, xw);
  } else {
    out = out_of(l, acts);
  }
  return bias.defined() ? out + bias : out;
}

Tensor ComponentModel::routed_output(int l, const std::function<Tensor(const ad::Indices&)>& h_rows, int64_t N,
                                     const Tensor& xw, const Tensor& bias, const LayerMask& mk) const {
  // route (h (m - m_delta) U + m_delta xw + b) + (1 - route) (xw + b): rows with route 0 are
  // xw + b, so h, m and m_delta are taken on the routed rows only (masked_layer_output_rows).
  const RoutedRows rr = routed_rows(mk.route, N, xw.dtype());
  Tensor out = xw;
  if (rr.rows.numel() > 0) {
    const Tensor md = mk.m_delta.defined() ? gather_rows(mk.m_delta, rr.rows) : Tensor();
    const Tensor acts = masked_component_acts(h_rows(rr.rows), gather_rows(mk.m, rr.rows), md);
    const StoredU u = U_of(l);
    out = masked_layer_output_rows(acts, u.t, u.trans, md, xw, rr.rows, rr.r);
  }
  return bias.defined() ? out + bias : out;
}

std::vector<Tensor> ComponentModel::component_params() const {
  std::vector<Tensor> p;
  for (auto& L : layers)
    if (L.tied_src < 0) p.push_back(L.V), p.push_back(L.U);
  return p;
}
std::vector<std::string> ComponentModel::component_param_names() const {
  std::vector<std::string> n;
  for (auto& L : layers)
    if (L.tied_src < 0) n.push_back(L.name + ".V"), n.push_back(L.name + ".U");
  return n;
}
std::vector<Tensor> ComponentModel::ci_params() const {
  if (global_ci) return global_ci->parameters();
  std::vector<Tensor> p;
  for (auto& f : ci) p.insert(p.end(), f.params.begin(), f.params.end());
  return p;
}
std::vector<std::string> ComponentModel::ci_param_names() const {
  std::vector<std::string> n;
  if (global_ci) {
    std::vector<std::string> layer_names;
    for (auto& L : layers) layer_names.push_back(L.name);
    return global_ci->param_names(layer_names);
  }
  for (size_t l = 0; l < ci.size(); ++l)  // no CI functions (APD): none
    for (auto& pn : ci[l].param_names) n.push_back("ci." + layers[l].name + "." + pn);
  return n;
}

// ---- hooks ---------------------------------------------------------------------------------
const TargetPassCache::Call* MaskedHooks::recorded(const std::string& name, const ad::Shape& in_shape) {
  const size_t k = call_++;
  if (!cache || !clean_ || k >= cache->calls.size()) return nullptr;
  const TargetPassCache::Call& c = cache->calls[k];
  return c.name == name && c.in_shape == in_shape ? &c : nullptr;
}

Tensor MaskedHooks::linear(const std::string& name, const Tensor& x, const Tensor&, const Tensor& bias) {
  const TargetPassCache::Call* rec = recorded(name, x.shape());
  const int l = cm->index_of(name);
  if (inputs_out && l >= 0) (*inputs_out)[(size_t)l] = x;
  if (l < 0 || !(*masks)[l].m.defined()) return rec ? rec->out : Tensor();  // target's layer
  return masked(l, rec, bias, [&] { return x; });
}

Tensor MaskedHooks::masked(int l, const TargetPassCache::Call* rec, const Tensor& bias,
                           const std::function<Tensor()>& input) {
  clean_ = false;
  if (!rec) return cm->masked_forward(l, input(), bias, (*masks)[l]);
  // the input is the recorded one: reuse x V (computing it once per step if the CI did not)
  // and x W^T
  if (!cache->h[l].defined()) cache->h[l] = cm->h_of(l, input());
  return cm->masked_output(l, cache->h[l], cache->xw[l], bias, (*masks)[l]);
}

// Token ids as one-hot rows [ids..., vocab]: an embedding is then the linear map
// onehot @ W_emb, so it shares every code path (masks, delta, CI inputs) with linear layers.
Tensor one_hot(const ad::Indices& ids, int64_t vocab, ad::DType dt) {
  std::vector<int64_t> s = ids.shape.to_vector();
  s.push_back(vocab);
  Tensor x = ad::zeros(ad::Shape::from_vector(s), dt);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (ids.v[i] < 0 || ids.v[i] >= vocab)
      ad::fail("one_hot: token id " + std::to_string(ids.v[i]) + " outside vocabulary of " + std::to_string(vocab));
    x.set_item(i * vocab + ids.v[i], 1.0);
  }
  return x;
}

Tensor MaskedHooks::embedding(const std::string& name, const ad::Indices& ids, const Tensor&) {
  const TargetPassCache::Call* rec = recorded(name, ids.shape);
  const int l = cm->index_of(name);
  if (l < 0 || !(*masks)[l].m.defined()) return rec ? rec->out : Tensor();
  return masked(l, rec, Tensor(), [&] { return one_hot(ids, cm->layers[l].d_in, cm->opt.dtype); });
}

}  // namespace decomp
