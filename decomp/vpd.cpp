#include "decomp/vpd.hpp"

#include <algorithm>
#include <cmath>

#include "decomp/losses/losses.hpp"

namespace decomp {

using ad::Tensor;

double PersistentSources::lr_at(double frac, int64_t total_steps) const {
  // step t = frac T; warmup over the first `warmup` T steps (at least one step)
  const double T = (double)std::max<int64_t>(1, total_steps), warm = std::max(1.0, p.warmup * T);
  return p.lr * std::min(1.0, (frac * T + 1.0) / warm);
}

std::vector<Tensor> PersistentSources::leaves() const {
  std::vector<Tensor> v;
  for (size_t l = 0; l < s.size(); ++l) {
    v.push_back(s[l]);
    if (!s_delta.empty()) v.push_back(s_delta[l]);
  }
  return v;
}

void PersistentSources::ascend(const std::vector<Tensor>& grads, double lr) {
  double* tp = t.data<double>();
  const double k = ++tp[0];
  const double c1 = 1.0 - std::pow(p.beta1, k), c2 = 1.0 - std::pow(p.beta2, k);
  const std::vector<Tensor> src = leaves();
  if (grads.size() != src.size()) ad::fail("persistent PGD: gradient count does not match the sources");
  for (size_t i = 0; i < src.size(); ++i) {
    Tensor x = src[i];
    ad::dispatch(x.dtype(), [&](auto zero) {
      using T = decltype(zero);
      T* px = x.data<T>();
      T* pm = m1[i].data<T>();
      T* pv = m2[i].data<T>();
      const T* pg = grads[i].data<T>();
      const double b1 = p.beta1, b2 = p.beta2, eps = p.eps;  // locals: no reload after each store
      for (int64_t j = 0, n = x.numel(); j < n; ++j) {
        pm[j] = (T)(b1 * pm[j] + (1 - b1) * pg[j]);
        pv[j] = (T)(b2 * pv[j] + (1 - b2) * pg[j] * pg[j]);
        const double step = lr * (pm[j] / c1) / (std::sqrt(pv[j] / c2) + eps);
        px[j] = (T)std::min(1.0, std::max(0.0, px[j] + step));  // ascent, then clamp to [0, 1]
      }
    });
  }
}

VPD::VPD(const Target& t, const DecompConfig& c, ad::Rng& init_rng) : SPD(t, c, init_rng) {
  // Source shapes need each layer's input shape (one target pass on a single example); the
  // sources draw from their own generator, so initialisation draws are those of SPD.
  std::vector<ad::Shape> g_shape;
  ad::Rng src_rng(ad::step_seed(c.seed, 0, 77));
  for (const auto& term : c.losses) {
    const auto* pt = dynamic_cast<const PersistentPgdReconTerm*>(term.get());
    if (!pt) continue;
    if (g_shape.empty()) {
      g_shape = layer_input_shapes();
      for (size_t l = 0; l < cm.layers.size(); ++l) g_shape[l][-1] = cm.layers[l].C;
    }
    PersistentSources ps;
    ps.p = pt->p;
    ps.coeff = pt->coeff;
    for (size_t l = 0; l < cm.layers.size(); ++l) {
      ad::Shape shape = g_shape[l];
      const bool seq = shape.nd >= 3;
      if (ps.p.scope == "shared") {
        for (int i = 0; i + 1 < shape.nd; ++i) shape.d[i] = 1;
      } else if (ps.p.scope == "per_position") {
        shape.d[0] = 1;
        if (!seq) shape = {1, shape[-1]};
      } else {
        shape.d[0] = ps.p.scope == "repeat" ? ps.p.n_sources : cfg.train.batch_size;
      }
      ad::Shape dshape = shape;
      dshape[-1] = 1;
      const ad::DType dt = cm.opt.dtype;
      auto init = [&](const ad::Shape& sh) {
        if (ps.p.init == "ones") return ad::ones(sh, dt);
        if (ps.p.init == "zeros") return ad::zeros(sh, dt);
        return ad::rand_uniform(sh, 0.0, 1.0, src_rng, dt);
      };
      ps.s.push_back(init(shape));
      if (cfg.delta) ps.s_delta.push_back(init(dshape));
    }
    for (const Tensor& x : ps.leaves()) {  // Adam moments in leaves() order
      ps.m1.push_back(ad::zeros(x.shape(), x.dtype()));
      ps.m2.push_back(ad::zeros(x.shape(), x.dtype()));
    }
    ps.t = ad::zeros({1}, ad::DType::f64);
    adversaries[pt->label] = ps;
  }
}

void VPD::before_step() {
  SPD::before_step();
  for (auto& kv : adversaries) kv.second.armed = true, kv.second.pending = false;
}

void VPD::after_step() {
  SPD::after_step();
  for (auto& kv : adversaries) {
    PersistentSources& ps = kv.second;
    ps.armed = false;
    if (!ps.pending) continue;
    ps.pending = false;
    // .grad holds d(total)/ds = coeff dD/ds (only this term reads its sources); the ascent takes
    // dD/ds, as the inner steps do
    std::vector<Tensor> grads;
    for (Tensor x : ps.leaves()) {
      grads.push_back(x.grad().defined() ? x.grad() / ps.coeff : ad::zeros(x.shape(), x.dtype()));
      x.clear_grad(), x.requires_grad_(false);  // plain tensors again, same data
    }
    ps.ascend(grads, ps.last_lr);
  }
}

std::vector<Decomposition::StateTensor> VPD::persistent_state() const {
  std::vector<StateTensor> v;
  for (const auto& kv : adversaries) {
    const PersistentSources& ps = kv.second;
    const std::string pre = "adversary." + kv.first + ".";
    for (size_t l = 0; l < ps.s.size(); ++l) {
      v.push_back({pre + "s." + cm.layers[l].name, ps.s[l], true});
      if (!ps.s_delta.empty()) v.push_back({pre + "s_delta." + cm.layers[l].name, ps.s_delta[l], true});
    }
    for (size_t i = 0; i < ps.m1.size(); ++i) {
      v.push_back({pre + "adam_m." + std::to_string(i), ps.m1[i], false});
      v.push_back({pre + "adam_v." + std::to_string(i), ps.m2[i], false});
    }
    v.push_back({pre + "adam_t", ps.t, false});
  }
  return v;
}

Tensor VPD::persistent_pgd_recon(const std::string& label, const Batch& b, const StepState& st, double frac,
                                 ad::Rng& rng) const {
  auto it = adversaries.find(label);
  if (it == adversaries.end()) ad::fail("vpd: no persistent sources for loss term '" + label + "'");
  PersistentSources& ps = it->second;
  const PersistentPgdParams& p = ps.p;
  if (frac < p.start_frac) return ad::zeros({}, st.g_lower[0].dtype());
  std::vector<Tensor> routes;
  if (p.routing != Routing::all) routes = draw_routes(st, p.routing, p.route_p, rng);
  const bool train = ps.armed;
  if (train) {
    ps.armed = false;  // one update cycle per training step (a NaN replay re-evaluates only)
    ps.last_lr = ps.lr_at(frac, cfg.train.steps);
    for (int k = 0; k < p.inner_steps; ++k) ps.ascend(source_gradients(*this, b, st, ps.s, ps.s_delta, routes), ps.last_lr);
    // The training loss reads the sources as leaves: the step's backward fills their .grad.
    for (Tensor& x : ps.s) x.requires_grad_(true);
    for (Tensor& x : ps.s_delta) x.requires_grad_(true);
    ps.pending = true;
  }
  const std::vector<LayerMask> masks = source_masks(st.g_lower, ps.s, ps.s_delta, routes, cfg.delta);
  return distance(forward_masked(b, masks, reuse_target_pass ? &st.cache : nullptr), st.target_out);
}

}  // namespace decomp
