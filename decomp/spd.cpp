#include "decomp/spd.hpp"

namespace decomp {

using ad::Tensor;

Distance parse_distance(const std::string& s) {
  if (s == "mse") return Distance::mse;
  if (s == "kl") return Distance::kl;
  ad::fail("unknown distance '" + s + "' (expected mse or kl)");
}

// ---- SPD ----------------------------------------------------------------------------------------
SPD::SPD(const Target& t, const SPDConfig& c, ad::Rng& init_rng)
    : target(t), cfg(c), cm(t.layers, [&] {
        ComponentModelOptions o = c.model;
        o.dtype = t.dtype;
        return o;
      }(), init_rng) {}

namespace {
// The one cached target pass: records every hooked layer call (name, input shape, output),
// the target's input x_l to each decomposed layer (detached; embeddings as one-hot rows)
// and x_l W_l^T, which it also uses as that layer's output (+ b), so masked passes that reuse
// it see bit-identical values.
struct RecordTargetPass : models::ForwardHooks {
  const ComponentModel* cm = nullptr;
  std::vector<Tensor>* xs = nullptr;
  TargetPassCache* cache = nullptr;
  Tensor linear(const std::string& name, const Tensor& x, const Tensor&, const Tensor& bias) override {
    cache->calls.push_back({name, x.shape(), Tensor()});
    const int l = cm->index_of(name);
    if (l < 0) return Tensor();
    (*xs)[l] = ad::detach(x);
    cache->xw[l] = cm->target_out(l, x, Tensor());
    return bias.defined() ? cache->xw[l] + bias : cache->xw[l];
  }
  Tensor embedding(const std::string& name, const ad::Indices& ids, const Tensor&) override {
    cache->calls.push_back({name, ids.shape, Tensor()});
    const int l = cm->index_of(name);
    if (l < 0) return Tensor();
    (*xs)[l] = one_hot(ids, cm->layers[l].d_in, cm->opt.dtype);
    cache->xw[l] = cm->target_out(l, (*xs)[l], Tensor());
    return cache->xw[l];
  }
  void output(const std::string&, const Tensor& out) override { cache->calls.back().out = ad::detach(out); }
};
}  // namespace

StepState SPD::prepare(const Batch& batch, ad::Rng& rng) const {
  StepState st;
  st.inputs.resize(cm.layers.size());
  st.cache.xw.resize(cm.layers.size());
  {
    ad::NoGradGuard ng;
    RecordTargetPass rec;
    rec.cm = &cm;
    rec.xs = &st.inputs;
    rec.cache = &st.cache;
    st.target_out = ad::detach(target.forward(batch, &rec));
  }
  for (size_t l = 0; l < st.inputs.size(); ++l)
    if (!st.inputs[l].defined())
      ad::fail("SPD: the target's forward never called layer '" + cm.layers[l].name + "'");
  st.z = cm.ci_pre_sigmoid(st.inputs, &st.cache.h);
  for (const Tensor& z : st.z) {
    Tensor zl = z;
    if (cfg.sampling == Sampling::binomial) {
      // Binomial variant: lower-leaky input 1.05 z - 0.05 u, u ~ U(0,1) (METHODS 3.2).
      zl = z * 1.05 - ad::rand_uniform(z.shape(), 0.0, 0.05, rng, z.dtype());
    }
    st.g_lower.push_back(ad::lower_leaky_hard_sigmoid(zl, cfg.leaky_alpha));
    st.g_upper.push_back(ad::upper_leaky_hard_sigmoid(z, cfg.leaky_alpha));
  }
  return st;
}

MaskSources SPD::draw_sources(const StepState& st, ad::Rng& rng) const {
  return decomp::draw_sources(st.g_lower, cfg.sampling, cfg.delta, rng);
}
std::vector<LayerMask> SPD::masks_from(const StepState& st, const MaskSources& src) const {
  return decomp::masks_from(st.g_lower, src, cfg.delta);
}
std::vector<Tensor> SPD::draw_routes(const StepState& st, Routing routing, double p, ad::Rng& rng) const {
  return decomp::draw_routes(st.g_lower, routing, p, rng);
}

Tensor SPD::distance(const Tensor& out, const Tensor& target_out) const {
  if (target.distance == Distance::mse) return ad::mse_loss(out, target_out);
  return ad::kl_divergence(target_out, out);  // KL(p_target || q), target constant
}

Tensor SPD::forward_masked(const Batch& batch, const std::vector<LayerMask>& masks, TargetPassCache* cache) const {
  MaskedHooks hooks;
  hooks.cm = &cm;
  hooks.masks = &masks;
  hooks.cache = cache;
  return target.forward(batch, &hooks);
}

Tensor SPD::term(const LossTerm& t, const Batch& b, const StepState& st, double frac, ad::Rng& rng) const {
  return t.value(TermContext{*this, b, st, frac, rng});
}

Tensor SPD::total_loss(const Batch& b, double frac, ad::Rng& rng, std::map<std::string, double>* values,
                       bool monitors) const {
  StepState st = prepare(b, rng);
  Tensor total;
  for (const auto& tp : cfg.losses) {
    const LossTerm& t = *tp;
    if (t.coeff == 0) continue;
    Tensor v = term(t, b, st, frac, rng);
    if (values) (*values)[t.label] = v.item();
    total = total.defined() ? total + v * t.coeff : v * t.coeff;
  }
  if (monitors) {
    ad::NoGradGuard ng;
    for (const auto& t : cfg.losses)
      if (t->coeff == 0 && values) (*values)[t->label] = term(*t, b, st, frac, rng).item();
  }
  if (!total.defined()) ad::fail("SPD: every loss coefficient is 0; nothing to train");
  if (values) (*values)["total"] = total.item();
  return total;
}

std::vector<Tensor> SPD::all_params() const {
  std::vector<Tensor> p = cm.component_params(), c = cm.ci_params();
  p.insert(p.end(), c.begin(), c.end());
  return p;
}
std::vector<std::string> SPD::all_param_names() const {
  std::vector<std::string> p = cm.component_param_names(), c = cm.ci_param_names();
  p.insert(p.end(), c.begin(), c.end());
  return p;
}

}  // namespace decomp
