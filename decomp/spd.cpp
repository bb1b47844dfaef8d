#include "decomp/spd.hpp"

#include <chrono>
#include <cmath>
#include <set>

#include "autodiff/optim.hpp"
#include "decomp/mask_ops.hpp"

namespace decomp {

using ad::Tensor;
using nlohmann::json;

Distance parse_distance(const std::string& s) {
  if (s == "mse") return Distance::mse;
  if (s == "kl") return Distance::kl;
  ad::fail("unknown distance '" + s + "' (expected mse or kl)");
}
Routing parse_routing(const std::string& s) {
  if (s == "all") return Routing::all;
  if (s == "layerwise") return Routing::layerwise;
  if (s == "uniform_k") return Routing::uniform_k;
  if (s == "static_p") return Routing::static_p;
  ad::fail("unknown routing '" + s + "' (expected all, layerwise, uniform_k or static_p)");
}

double LossTermConfig::p_at(double frac) const {
  if (p_final < 0) return p;
  if (frac <= anneal_start) return p;
  if (frac >= anneal_end) return p_final;
  return p + (p_final - p) * (frac - anneal_start) / (anneal_end - anneal_start);
}

// ---- config parsing ----------------------------------------------------------------------------
static void check_keys(const json& j, const std::set<std::string>& allowed, const std::string& where) {
  if (!j.is_object()) ad::fail(where + ": expected a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!allowed.count(it.key())) ad::fail(where + ": unknown key '" + it.key() + "'");
}
template <class T>
static void get_opt(const json& j, const char* key, T& out, const std::string& where) {
  if (!j.contains(key)) return;
  try {
    out = j.at(key).get<T>();
  } catch (const std::exception& e) {
    ad::fail(where + ": field '" + key + "' has the wrong type (" + e.what() + ")");
  }
}

SPDConfig parse_spd_config(const json& j, const std::string& where) {
  SPDConfig c;
  check_keys(j, {"name", "target", "layers", "seed", "C", "ci_fn", "sampling", "delta", "leaky_alpha", "losses",
                 "train", "ci_threshold", "eval_batch", "dense_k", "dense_k_groups", "comment"},
             where);
  get_opt(j, "seed", c.seed, where);
  get_opt(j, "C", c.model.C, where);
  if (j.contains("ci_fn")) {
    const json& f = j["ci_fn"];
    const std::string w = where + ": ci_fn";
    check_keys(f, {"type", "hidden", "global"}, w);
    std::string type = "mlp";
    get_opt(f, "type", type, w);
    c.model.ci_type = parse_ci_type(type);
    get_opt(f, "hidden", c.model.ci_hidden, w);
    get_opt(f, "global", c.model.global_ci, w);
  }
  std::string sampling = "continuous";
  get_opt(j, "sampling", sampling, where);
  if (sampling == "continuous") c.sampling = Sampling::continuous;
  else if (sampling == "binomial") c.sampling = Sampling::binomial;
  else ad::fail(where + ": sampling must be continuous or binomial, got '" + sampling + "'");
  get_opt(j, "delta", c.delta, where);
  get_opt(j, "leaky_alpha", c.leaky_alpha, where);
  get_opt(j, "ci_threshold", c.ci_threshold, where);
  get_opt(j, "eval_batch", c.eval_batch, where);
  get_opt(j, "dense_k", c.dense_k, where);
  if (j.contains("dense_k_groups")) {
    if (!j["dense_k_groups"].is_array()) ad::fail(where + ": 'dense_k_groups' must be a list of {name, layers, k}");
    for (size_t i = 0; i < j["dense_k_groups"].size(); ++i) {
      const json& g = j["dense_k_groups"][i];
      const std::string w = where + ": dense_k_groups[" + std::to_string(i) + "]";
      check_keys(g, {"name", "layers", "k"}, w);
      DenseKGroup dg;
      get_opt(g, "name", dg.name, w);
      get_opt(g, "layers", dg.layers, w);
      get_opt(g, "k", dg.k, w);
      if (dg.name.empty() || dg.layers.empty() || dg.k < 1) ad::fail(w + ": needs a name, a non-empty 'layers' and k >= 1");
      c.dense_k_groups.push_back(dg);
    }
  }
  if (!j.contains("losses") || !j["losses"].is_array() || j["losses"].empty())
    ad::fail(where + ": 'losses' must be a non-empty list of {name, coeff, ...}");
  static const std::set<std::string> names = {"faithfulness", "stochastic_recon", "stochastic_recon_layerwise",
                                              "stochastic_recon_subset", "pgd_recon", "pgd_recon_subset",
                                              "ci_masked_recon", "unmasked_recon", "importance_minimality"};
  for (size_t i = 0; i < j["losses"].size(); ++i) {
    const json& t = j["losses"][i];
    const std::string w = where + ": losses[" + std::to_string(i) + "]";
    check_keys(t, {"name", "coeff", "routing", "route_p", "n_mask_samples", "p", "p_final", "anneal_start",
                   "anneal_end", "beta", "pgd_init", "pgd_scope", "pgd_steps", "pgd_step_size"},
               w);
    LossTermConfig lt;
    get_opt(t, "name", lt.name, w);
    if (!names.count(lt.name)) ad::fail(w + ": unknown loss term '" + lt.name + "'");
    if (lt.name == "stochastic_recon_layerwise") lt.routing = Routing::layerwise;
    if (lt.name == "stochastic_recon_subset" || lt.name == "pgd_recon_subset") lt.routing = Routing::uniform_k;
    get_opt(t, "coeff", lt.coeff, w);
    if (t.contains("routing")) lt.routing = parse_routing(t["routing"].get<std::string>());
    get_opt(t, "route_p", lt.route_p, w);
    get_opt(t, "n_mask_samples", lt.n_mask_samples, w);
    get_opt(t, "p", lt.p, w);
    get_opt(t, "p_final", lt.p_final, w);
    get_opt(t, "anneal_start", lt.anneal_start, w);
    get_opt(t, "anneal_end", lt.anneal_end, w);
    get_opt(t, "beta", lt.beta, w);
    const bool pgd = lt.name == "pgd_recon" || lt.name == "pgd_recon_subset";
    // A field that the term would ignore is an error, not a silent no-op.
    const bool sampled = lt.name.rfind("stochastic_recon", 0) == 0;  // draws n_mask_samples masks
    const bool routed = pgd || lt.name == "stochastic_recon" || lt.name == "stochastic_recon_subset";
    const bool imp_min = lt.name == "importance_minimality";
    struct FieldRule {
      std::vector<const char*> keys;
      bool applies;        // does this term read these keys?
      const char* owners;  // the terms that do, for the message
    };
    const FieldRule rules[] = {
        {{"pgd_init", "pgd_scope", "pgd_steps", "pgd_step_size"}, pgd, "pgd_recon terms"},
        {{"n_mask_samples"}, sampled, "stochastic_recon terms"},
        {{"routing", "route_p"}, routed, "stochastic_recon, stochastic_recon_subset and pgd_recon terms"},
        {{"p", "p_final", "anneal_start", "anneal_end", "beta"}, imp_min, "importance_minimality"}};
    for (const FieldRule& rule : rules)
      for (const char* k : rule.keys)
        if (t.contains(k) && !rule.applies)
          ad::fail(w + ": '" + k + "' applies only to " + rule.owners + ", not '" + lt.name + "'");
    get_opt(t, "pgd_init", lt.pgd_init, w);
    get_opt(t, "pgd_scope", lt.pgd_scope, w);
    get_opt(t, "pgd_steps", lt.pgd_steps, w);
    get_opt(t, "pgd_step_size", lt.pgd_step_size, w);
    if (pgd) {
      if (lt.pgd_init != "uniform" && lt.pgd_init != "ones" && lt.pgd_init != "zeros")
        ad::fail(w + ": pgd_init must be uniform, ones or zeros, got '" + lt.pgd_init + "'");
      if (lt.pgd_scope != "shared" && lt.pgd_scope != "per_example")
        ad::fail(w + ": pgd_scope must be shared or per_example, got '" + lt.pgd_scope + "'");
      if (lt.pgd_steps < 0 || !(lt.pgd_step_size > 0)) ad::fail(w + ": pgd_steps >= 0 and pgd_step_size > 0 required");
      if (lt.routing == Routing::layerwise) ad::fail(w + ": pgd_recon terms take routing all, uniform_k or static_p");
    }
    if (lt.n_mask_samples < 1) ad::fail(w + ": n_mask_samples must be >= 1");
    if (lt.p <= 0) ad::fail(w + ": p must be > 0");
    if (lt.anneal_end < lt.anneal_start) ad::fail(w + ": anneal_end < anneal_start");
    c.losses.push_back(lt);
  }
  if (j.contains("train")) {
    const json& t = j["train"];
    const std::string w = where + ": train";
    check_keys(t, {"steps", "batch_size", "lr", "schedule", "warmup_frac", "final_frac", "clip_components",
                   "clip_ci", "faith_warmup_steps", "faith_warmup_lr", "faith_warmup_wd", "log_every",
                   "checkpoint_every"},
               w);
    TrainConfig& tc = c.train;
    get_opt(t, "steps", tc.steps, w);
    get_opt(t, "batch_size", tc.batch_size, w);
    get_opt(t, "lr", tc.lr, w);
    get_opt(t, "schedule", tc.schedule, w);
    get_opt(t, "warmup_frac", tc.warmup_frac, w);
    get_opt(t, "final_frac", tc.final_frac, w);
    get_opt(t, "clip_components", tc.clip_components, w);
    get_opt(t, "clip_ci", tc.clip_ci, w);
    get_opt(t, "faith_warmup_steps", tc.faith_warmup_steps, w);
    get_opt(t, "faith_warmup_lr", tc.faith_warmup_lr, w);
    get_opt(t, "faith_warmup_wd", tc.faith_warmup_wd, w);
    get_opt(t, "log_every", tc.log_every, w);
    get_opt(t, "checkpoint_every", tc.checkpoint_every, w);
    if (tc.schedule != "cosine" && tc.schedule != "linear" && tc.schedule != "constant")
      ad::fail(w + ": schedule must be cosine, linear or constant, got '" + tc.schedule + "'");
    if (tc.steps < 0 || tc.batch_size <= 0 || tc.log_every <= 0 || tc.checkpoint_every < 0)
      ad::fail(w + ": steps >= 0, batch_size > 0, log_every > 0 and checkpoint_every >= 0 required");
  }
  return c;
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

SPD::Sources SPD::draw_sources(const StepState& st, ad::Rng& rng) const {
  Sources s;
  for (const Tensor& g : st.g_lower) {
    s.r.push_back(cfg.sampling == Sampling::binomial ? ad::rand_bernoulli(g.shape(), 0.5, rng, g.dtype())
                                                    : ad::rand_uniform(g.shape(), 0.0, 1.0, rng, g.dtype()));
    if (cfg.delta) {
      ad::Shape ds = g.shape();
      ds[-1] = 1;
      s.r_delta.push_back(ad::rand_uniform(ds, 0.0, 1.0, rng, g.dtype()));
    }
  }
  return s;
}

std::vector<LayerMask> SPD::masks_from(const StepState& st, const Sources& src) const {
  std::vector<LayerMask> masks(st.g_lower.size());
  for (size_t l = 0; l < masks.size(); ++l) {
    if (!src.r[l].defined()) continue;
    const Tensor& g = st.g_lower[l];
    masks[l].m = stochastic_mask(g, src.r[l]);  // m = g + (1 - g) r
    if (cfg.delta) masks[l].m_delta = src.r_delta[l];
  }
  return masks;
}

std::vector<Tensor> SPD::draw_routes(const StepState& st, Routing routing, double p, ad::Rng& rng) const {
  const size_t M = st.g_lower.size();
  const Tensor& g0 = st.g_lower[0];
  const int64_t B = g0.size(0);
  ad::Shape rs = g0.shape();  // [B, 1, ..., 1]
  for (int i = 1; i < rs.nd; ++i) rs.d[i] = 1;
  std::vector<Tensor> routes;
  for (size_t l = 0; l < M; ++l) routes.push_back(ad::zeros(rs, g0.dtype()));
  for (int64_t b = 0; b < B; ++b) {
    if (routing == Routing::uniform_k) {
      // k ~ U{1..M}, then a uniformly random k-subset of the M layers.
      const int64_t k = 1 + (int64_t)rng.below(M);
      std::vector<int64_t> perm = rng.permutation((int64_t)M);
      for (int64_t i = 0; i < k; ++i) routes[perm[i]].set_item(b, 1.0);
    } else {
      for (size_t l = 0; l < M; ++l)
        if (rng.bernoulli(p)) routes[l].set_item(b, 1.0);
    }
  }
  return routes;
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

Tensor SPD::faithfulness() const {
  // sum_l ||W_l - (V_l U_l)^T||_F^2 / sum_l numel(W_l)   (tied layers count separately)
  Tensor total;
  int64_t n = 0;
  for (size_t l = 0; l < cm.layers.size(); ++l) {
    Tensor s = ad::sum(ad::square(cm.VU((int)l) - cm.layers[l].WT));
    total = total.defined() ? total + s : s;
    n += cm.layers[l].WT.numel();
  }
  return total / (double)n;
}

Tensor SPD::importance_minimality(const StepState& st, double p, double beta) const {
  // per layer: S_c = sum_b (u_bc + 1e-12)^p, f_c = S_c / B;  sum_l sum_c [f_c + beta f_c log2(1 + S_c)]
  Tensor total;
  for (const Tensor& u : st.g_upper) {
    const int64_t C = u.size(-1), N = u.numel() / C;
    Tensor flat = ad::reshape(u, {N, C});
    // p = 1 and p = 2 skip the generic pow (same values, cheaper)
    Tensor shifted = flat + 1e-12;
    Tensor up = p == 1.0 ? shifted : (p == 2.0 ? ad::square(shifted) : ad::pow(shifted, p));
    Tensor S = ad::sum(up, {0});  // [C]
    Tensor f = S / (double)N;
    Tensor t = ad::sum(f);
    if (beta != 0) t = t + ad::sum(f * ad::log(S + 1.0)) * (beta / std::log(2.0));
    total = total.defined() ? total + t : t;
  }
  return total;
}

Tensor SPD::stochastic_recon(const Batch& b, const StepState& st, Routing routing, double route_p, int n_samples,
                             ad::Rng& rng) const {
  const size_t M = cm.layers.size();
  Tensor total;
  for (int s = 0; s < n_samples; ++s) {
    Tensor loss;
    if (routing == Routing::layerwise) {
      // one forward per layer with only that layer masked; mean over layers
      for (size_t l = 0; l < M; ++l) {
        Sources src = draw_sources(st, rng);
        for (size_t k = 0; k < M; ++k)
          if (k != l) src.r[k] = Tensor();
        Tensor d = distance(forward_masked(b, masks_from(st, src), reuse_target_pass ? &st.cache : nullptr), st.target_out);
        loss = loss.defined() ? loss + d : d;
      }
      loss = loss / (double)M;
    } else {
      std::vector<LayerMask> masks = masks_from(st, draw_sources(st, rng));
      if (routing != Routing::all) {
        std::vector<Tensor> routes = draw_routes(st, routing, route_p, rng);
        for (size_t l = 0; l < M; ++l) masks[l].route = routes[l];
      }
      loss = distance(forward_masked(b, masks, reuse_target_pass ? &st.cache : nullptr), st.target_out);
    }
    total = total.defined() ? total + loss : loss;
  }
  return n_samples == 1 ? total : total / (double)n_samples;
}

namespace {
// s <- clamp(s + eta sign(ds), 0, 1), in place (sign(0) = 0: a source the loss ignores stays)
void sign_ascent_step(Tensor& s, const Tensor& ds, double eta) {
  ad::dispatch(s.dtype(), [&](auto zero) {
    using T = decltype(zero);
    T* ps = s.data<T>();
    const T* pg = ds.data<T>();
    for (int64_t i = 0, n = s.numel(); i < n; ++i) {
      const T step = pg[i] > 0 ? (T)eta : (pg[i] < 0 ? (T)-eta : (T)0);
      ps[i] = std::min<T>(1, std::max<T>(0, ps[i] + step));
    }
  });
}
}  // namespace

Tensor SPD::pgd_recon(const Batch& b, const StepState& st, const LossTermConfig& t, ad::Rng& rng) const {
  const size_t M = cm.layers.size();
  std::vector<Tensor> routes;
  if (t.routing != Routing::all) routes = draw_routes(st, t.routing, t.route_p, rng);
  // s_l: [1, ..., 1, C] (shared) or g's shape (per example); delta source with last dim 1
  auto init = [&](ad::Shape shape) {
    if (t.pgd_scope == "shared")
      for (int i = 0; i + 1 < shape.nd; ++i) shape.d[i] = 1;
    const ad::DType dt = st.g_lower[0].dtype();
    if (t.pgd_init == "ones") return ad::ones(shape, dt);
    if (t.pgd_init == "zeros") return ad::zeros(shape, dt);
    return ad::rand_uniform(shape, 0.0, 1.0, rng, dt);
  };
  std::vector<Tensor> s(M), s_delta(M);
  for (size_t l = 0; l < M; ++l) {
    ad::Shape gs = st.g_lower[l].shape();
    s[l] = init(gs);
    if (cfg.delta) {
      gs[-1] = 1;
      s_delta[l] = init(gs);
    }
  }
  // The masked loss at sources s, with the CI values g taken from `g` (per layer).
  auto loss_at = [&](const std::vector<Tensor>& g, const std::vector<Tensor>& src, const std::vector<Tensor>& src_d,
                     TargetPassCache* cache) {
    std::vector<LayerMask> masks(M);
    for (size_t l = 0; l < M; ++l) {
      const Tensor r = src[l].shape() == g[l].shape() ? src[l] : src[l] + ad::zeros(g[l].shape(), g[l].dtype());
      masks[l].m = stochastic_mask(g[l], r);  // m = g + (1 - g) s
      if (cfg.delta) {
        ad::Shape ds = g[l].shape();
        ds[-1] = 1;
        masks[l].m_delta = src_d[l].shape() == ds ? src_d[l] : src_d[l] + ad::zeros(ds, g[l].dtype());
      }
      if (!routes.empty()) masks[l].route = routes[l];
    }
    return distance(forward_masked(b, masks, cache), st.target_out);
  };
  if (t.pgd_steps > 0) {
    // Ascent on s alone: g, V, U and the cached h = x V are constants here, so the inner
    // backward computes only dL/ds (no dV, dU, nor the CI functions' backward).
    std::vector<Tensor> g_const;
    for (const Tensor& g : st.g_lower) g_const.push_back(ad::detach(g));
    TargetPassCache adv_cache = st.cache;  // shares the constant target pass; own h
    for (Tensor& h : adv_cache.h)
      if (h.defined()) h = ad::detach(h);
    ConstantComponentsScope constant(cm);
    ad::EnableGradGuard eg;  // also inside evaluation's NoGradGuard (monitors)
    for (int k = 0; k < t.pgd_steps; ++k) {
      std::vector<Tensor> leaves;
      for (size_t l = 0; l < M; ++l) {
        s[l] = ad::detach(s[l]).requires_grad_();
        leaves.push_back(s[l]);
        if (cfg.delta) {
          s_delta[l] = ad::detach(s_delta[l]).requires_grad_();
          leaves.push_back(s_delta[l]);
        }
      }
      const std::vector<Tensor> ds = ad::grad(loss_at(g_const, s, s_delta, reuse_target_pass ? &adv_cache : nullptr), leaves);
      for (size_t l = 0, i = 0; l < M; ++l) {
        s[l] = ad::clone(s[l]);
        sign_ascent_step(s[l], ds[i++], t.pgd_step_size);
        if (cfg.delta) {
          s_delta[l] = ad::clone(s_delta[l]);
          sign_ascent_step(s_delta[l], ds[i++], t.pgd_step_size);
        }
      }
    }
  }
  return loss_at(st.g_lower, s, s_delta, reuse_target_pass ? &st.cache : nullptr);
}

Tensor SPD::ci_masked_recon(const Batch& b, const StepState& st) const {
  std::vector<LayerMask> masks(cm.layers.size());
  for (size_t l = 0; l < masks.size(); ++l) masks[l].m = st.g_lower[l];  // m = g, no delta
  return distance(forward_masked(b, masks, reuse_target_pass ? &st.cache : nullptr), st.target_out);
}

Tensor SPD::unmasked_recon(const Batch& b, const StepState& st) const {
  std::vector<LayerMask> masks(cm.layers.size());
  for (size_t l = 0; l < masks.size(); ++l) masks[l].m = ad::ones(st.g_lower[l].shape(), st.g_lower[l].dtype());
  return distance(forward_masked(b, masks, reuse_target_pass ? &st.cache : nullptr), st.target_out);
}

Tensor SPD::term(const LossTermConfig& t, const Batch& b, const StepState& st, double frac, ad::Rng& rng) const {
  if (t.name == "faithfulness") return faithfulness();
  if (t.name == "importance_minimality") return importance_minimality(st, t.p_at(frac), t.beta);
  if (t.name == "ci_masked_recon") return ci_masked_recon(b, st);
  if (t.name == "unmasked_recon") return unmasked_recon(b, st);
  if (t.name == "pgd_recon" || t.name == "pgd_recon_subset") return pgd_recon(b, st, t, rng);
  return stochastic_recon(b, st, t.routing, t.route_p, t.n_mask_samples, rng);
}

Tensor SPD::total_loss(const Batch& b, double frac, ad::Rng& rng, std::map<std::string, double>* values,
                       bool monitors) const {
  StepState st = prepare(b, rng);
  Tensor total;
  for (const LossTermConfig& t : cfg.losses) {
    if (t.coeff == 0) continue;
    Tensor v = term(t, b, st, frac, rng);
    if (values) (*values)[t.name] = v.item();
    total = total.defined() ? total + v * t.coeff : v * t.coeff;
  }
  if (monitors) {
    ad::NoGradGuard ng;
    for (const LossTermConfig& t : cfg.losses)
      if (t.coeff == 0 && values) (*values)[t.name] = term(t, b, st, frac, rng).item();
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

// ---- training ------------------------------------------------------------------------------------
ad::LrSchedule lr_schedule(const TrainConfig& t) {
  ad::LrSchedule s;
  s.kind = ad::LrSchedule::parse_kind(t.schedule);
  s.final_frac = t.final_frac;
  s.warmup_frac = t.warmup_frac;
  return s;
}

// A non-finite training loss: the message names the step and every term's value, then
// replays the step's loss with the engine's NaN guard on, which names the first op whose
// output was not finite (with its shapes). Nothing is written: the caller stops.
[[noreturn]] static void fail_non_finite(const SPD& spd, const Batch& b, double frac, ad::Rng rng, int64_t step,
                                         const std::map<std::string, double>& vals) {
  std::string msg = "SPD training: the loss is not finite at step " + std::to_string(step) + " (";
  bool first = true;
  for (const auto& kv : vals) {
    msg += (first ? "" : ", ") + kv.first + " = " + std::to_string(kv.second);
    first = false;
  }
  msg += ")";
  try {
    ad::NanGuardScope guard;
    spd.total_loss(b, frac, rng, nullptr, false);
  } catch (const ad::Error& e) {
    ad::fail(msg + "; first non-finite op: " + e.what());
  }
  ad::fail(msg);
}

int64_t train_spd(SPD& spd, ad::Rng& rng, TrainLog* log,
                  const std::function<void(int64_t, const std::map<std::string, double>&)>& progress,
                  const TrainHooks* hooks) {
  const TrainConfig& tc = spd.cfg.train;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<Tensor> comp = spd.cm.component_params(), cip = spd.cm.ci_params();
  const int64_t start = hooks ? hooks->start_step : 0;
  const int64_t end = hooks && hooks->stop_after >= 0 ? std::min(hooks->stop_after, tc.steps) : tc.steps;
  if (start < 0 || start > tc.steps)
    ad::fail("train_spd: resume step " + std::to_string(start) + " outside [0, " + std::to_string(tc.steps) + "]");
  if (tc.faith_warmup_steps > 0 && start == 0) {
    // AdamW on U, V alone towards W (METHODS 3.4, faithfulness warmup).
    ad::AdamW warm({ad::ParamGroup("components", comp)},
                   ad::AdamConfig{tc.faith_warmup_lr, {0.9, 0.999}, 1e-8, tc.faith_warmup_wd});
    for (int64_t s = 0; s < tc.faith_warmup_steps; ++s) {
      warm.zero_grad();
      ad::backward(spd.faithfulness());
      warm.step(tc.faith_warmup_lr);
    }
  }
  // Adam (no weight decay) with separate gradient-norm clipping for components and CI fns.
  ad::Adam opt({ad::ParamGroup("components", comp, tc.clip_components), ad::ParamGroup("ci_fns", cip, tc.clip_ci)},
               ad::AdamConfig{tc.lr, {0.9, 0.999}, 1e-8, 0.0});
  if (hooks && hooks->restore_optimizer) hooks->restore_optimizer(opt);
  const ad::LrSchedule sched = lr_schedule(tc);
  TrainLog no_log;
  if (!log) log = &no_log;
  const double seconds_before = log->seconds;  // time of the steps before a resume
  auto seconds_now = [&] {
    return seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  int64_t step = start;
  for (; step < end; ++step) {
    const double frac = (double)step / (double)std::max<int64_t>(1, tc.steps);
    const bool log_now = step % tc.log_every == 0 || step + 1 == tc.steps;
    Batch b = spd.target.sample(tc.batch_size, rng);
    opt.zero_grad();
    std::map<std::string, double> vals;
    const ad::Rng rng_at_step = rng;  // to replay this step if its loss is not finite
    Tensor loss = spd.total_loss(b, frac, rng, &vals, log_now);
    if (!std::isfinite(vals["total"])) fail_non_finite(spd, b, frac, rng_at_step, step, vals);
    ad::backward(loss);
    const double lr = sched.lr_at(tc.lr, step, tc.steps);
    opt.step(lr);
    if (log_now) {
      vals["lr"] = lr;
      vals["grad_norm_components"] = opt.last_grad_norm(0);
      vals["grad_norm_ci"] = opt.last_grad_norm(1);
      log->steps.push_back(step);
      for (auto& kv : vals) log->values[kv.first].push_back(kv.second);
      if (progress) progress(step, vals);
    }
    const bool stopping = step + 1 == end && end < tc.steps;
    if (hooks && hooks->checkpoint &&
        (stopping || (tc.checkpoint_every > 0 && (step + 1) % tc.checkpoint_every == 0 && step + 1 < tc.steps))) {
      log->seconds = seconds_now();
      hooks->checkpoint(step + 1, opt, rng, *log);
    }
  }
  log->seconds = seconds_now();
  return step;
}

}  // namespace decomp
