#include "decomp/decomposition.hpp"

#include "decomp/apd.hpp"
#include "decomp/spd.hpp"
#include "decomp/vpd.hpp"

namespace decomp {

using ad::Tensor;

Distance parse_distance(const std::string& s) {
  if (s == "mse") return Distance::mse;
  if (s == "kl") return Distance::kl;
  ad::fail("unknown distance '" + s + "' (expected mse or kl)");
}

// ---- SPD ----------------------------------------------------------------------------------------
Decomposition::Decomposition(const Target& t, const DecompConfig& c, ad::Rng& init_rng)
    : target(t), cfg(c), cm(t.layers, [&] {
        ComponentModelOptions o = c.model;
        o.dtype = t.dtype;
        return o;
      }(), init_rng) {
  if (cm.global_ci && cm.global_ci->needs_sequence()) check_sequence_inputs();
}

// One target pass on a one-example batch (its own generator: the run's randomness is
// untouched) shows each decomposed layer's input shape; a CI function that needs sequences
// then refuses a toy target here rather than at the first training step.
std::vector<ad::Shape> Decomposition::layer_input_shapes() const {
  ad::Rng probe(0);  // its own generator: the run's draws stay as they were
  StepState st;
  {
    ad::NoGradGuard ng;
    record_target_pass(target.sample(1, probe), st);
  }
  std::vector<ad::Shape> s;
  for (const Tensor& x : st.inputs) s.push_back(x.shape());
  return s;
}

void Decomposition::check_sequence_inputs() const {
  if (!target.sample || !target.forward) return;
  const std::vector<ad::Shape> in = layer_input_shapes();
  for (size_t l = 0; l < in.size(); ++l)
    if (in[l].nd != 3)
      ad::fail("ci_fn.type: the transformer CI function needs sequence inputs [B, S, d] to every decomposed layer, "
               "but layer '" + cm.layers[l].name + "' of target '" + target.name + "' gets " +
               in[l].str() + " (no sequence axis); use {\"type\": \"shared_mlp\", \"global\": true} for this target");
}

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

void Decomposition::record_target_pass(const Batch& batch, StepState& st) const {
  st.inputs.resize(cm.layers.size());
  st.cache.xw.resize(cm.layers.size());
  st.cache.h.resize(cm.layers.size());
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
      ad::fail(std::string(method_name()) + ": the target's forward never called layer '" + cm.layers[l].name + "'");
}

std::vector<Tensor> Decomposition::onehot_on(const Batch& onehot, ad::Rng& rng) const {
  return prepare(onehot, rng).g_lower;
}

Tensor Decomposition::distance(const Tensor& out, const Tensor& target_out) const {
  if (target.distance == Distance::mse) return ad::mse_loss(out, target_out);
  return ad::kl_divergence(target_out, out);  // KL(p_target || q), target constant
}

Tensor Decomposition::forward_masked(const Batch& batch, const std::vector<LayerMask>& masks, TargetPassCache* cache,
                                     std::vector<Tensor>* inputs_out) const {
  MaskedHooks hooks;
  if (inputs_out) inputs_out->assign(cm.layers.size(), Tensor());
  hooks.inputs_out = inputs_out;
  hooks.cm = &cm;
  hooks.masks = &masks;
  hooks.cache = cache;
  return target.forward(batch, &hooks);
}

Tensor Decomposition::term(const LossTerm& t, const Batch& b, const StepState& st, double frac, ad::Rng& rng) const {
  return t.value(TermContext{*this, b, st, frac, rng});
}

Tensor Decomposition::total_loss(const Batch& b, double frac, ad::Rng& rng, std::map<std::string, double>* values,
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
  if (!total.defined()) ad::fail(std::string(method_name()) + ": every loss coefficient is 0; nothing to train");
  if (values) (*values)["total"] = total.item();
  return total;
}

std::vector<Tensor> Decomposition::all_params() const {
  std::vector<Tensor> p = cm.component_params(), c = cm.ci_params();
  p.insert(p.end(), c.begin(), c.end());
  return p;
}
std::vector<std::string> Decomposition::all_param_names() const {
  std::vector<std::string> p = cm.component_param_names(), c = cm.ci_param_names();
  p.insert(p.end(), c.begin(), c.end());
  return p;
}

std::unique_ptr<Decomposition> make_decomposition(const Target& target, const DecompConfig& cfg, ad::Rng& init_rng) {
  try {
    if (cfg.method == Method::apd) return std::make_unique<APD>(target, cfg, init_rng);
    if (cfg.method == Method::vpd) return std::make_unique<VPD>(target, cfg, init_rng);
    return std::make_unique<SPD>(target, cfg, init_rng);
  } catch (const models::ConfigError&) {
    throw;
  } catch (const ad::Error& e) {  // sizes too large for one tensor, CI function shapes
    if (cfg.source.empty()) throw;
    throw models::ConfigError(cfg.source + ": building the " + method_name(cfg.method) + " decomposition (C " +
                              std::to_string(cfg.model.C) + "): " + e.what());
  }
}

}  // namespace decomp
