#include <algorithm>

#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/mask_ops.hpp"
#include "decomp/spd.hpp"

namespace decomp {

using ad::Tensor;

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

namespace {
// s broadcast / tiled to g's shape [B, ..., C] (see source_masks).
Tensor tile_source(const Tensor& s, const ad::Shape& gs) {
  if (s.shape() == gs) return s;
  bool rows_only = s.dim() == gs.nd && s.dim() >= 1;  // s [n, rest] with g's rest: a row gather
  for (int i = 1; rows_only && i < gs.nd; ++i) rows_only = s.shape()[i] == gs[i];
  if (!rows_only) return s + ad::zeros(gs, s.dtype());  // broadcast along size-1 axes
  // example b reads row b mod n (an evaluation chunk need not be a multiple of n): one gather
  // (the embedding op), whose backward adds each row's copies into it
  const int64_t n = s.size(0), B = gs[0], rest = s.numel() / std::max<int64_t>(n, 1);
  std::vector<int32_t> ids((size_t)B);
  for (int64_t b = 0; b < B; ++b) ids[(size_t)b] = (int32_t)(b % n);
  return ad::reshape(ad::embedding(ad::reshape(s, {n, rest}), ad::Indices(std::move(ids), ad::Shape{B})), gs);
}
}  // namespace

std::vector<LayerMask> source_masks(const std::vector<Tensor>& g, const std::vector<Tensor>& s,
                                    const std::vector<Tensor>& s_delta, const std::vector<Tensor>& routes, bool delta) {
  std::vector<LayerMask> masks(g.size());
  for (size_t l = 0; l < g.size(); ++l) {
    masks[l].m = stochastic_mask(g[l], tile_source(s[l], g[l].shape()));  // m = g + (1 - g) s
    if (delta) {
      ad::Shape ds = g[l].shape();
      ds[-1] = 1;
      masks[l].m_delta = tile_source(s_delta[l], ds);
    }
    if (!routes.empty()) masks[l].route = routes[l];
  }
  return masks;
}

std::vector<Tensor> source_gradients(const SPD& spd, const Batch& b, const StepState& st, const std::vector<Tensor>& s,
                                     const std::vector<Tensor>& s_delta, const std::vector<Tensor>& routes) {
  // Ascent on s alone: g, V, U and the cached h = x V are constants here, so the backward
  // computes only dD/ds (no dV, dU, nor the CI functions' backward).
  const bool delta = spd.cfg.delta;
  std::vector<Tensor> g_const;
  for (const Tensor& g : st.g_lower) g_const.push_back(ad::detach(g));
  TargetPassCache adv_cache = st.cache;  // shares the constant target pass; own h
  for (Tensor& h : adv_cache.h)
    if (h.defined()) h = ad::detach(h);
  ConstantComponentsScope constant(spd.cm);
  ad::EnableGradGuard eg;  // also inside evaluation's NoGradGuard (monitors)
  std::vector<Tensor> leaves, src(s.size()), src_d(s.size());
  for (size_t l = 0; l < s.size(); ++l) {
    src[l] = ad::detach(s[l]).requires_grad_();
    leaves.push_back(src[l]);
    if (delta) {
      src_d[l] = ad::detach(s_delta[l]).requires_grad_();
      leaves.push_back(src_d[l]);
    }
  }
  const Tensor out = spd.forward_masked(b, source_masks(g_const, src, src_d, routes, delta),
                                        spd.reuse_target_pass ? &adv_cache : nullptr);
  return ad::grad(spd.distance(out, st.target_out), leaves);
}

std::vector<LayerMask> pgd_masks(const SPD& spd, const Batch& b, const StepState& st, const PgdParams& t, ad::Rng& rng) {
  const size_t M = spd.cm.layers.size();
  const bool delta = spd.cfg.delta;
  std::vector<Tensor> routes;
  if (t.routing != Routing::all) routes = spd.draw_routes(st, t.routing, t.route_p, rng);
  // s_l: [1, ..., 1, C] (shared) or g's shape (per example); delta source with last dim 1
  auto init = [&](ad::Shape shape) {
    if (t.scope == "shared")
      for (int i = 0; i + 1 < shape.nd; ++i) shape.d[i] = 1;
    const ad::DType dt = st.g_lower[0].dtype();
    if (t.init == "ones") return ad::ones(shape, dt);
    if (t.init == "zeros") return ad::zeros(shape, dt);
    return ad::rand_uniform(shape, 0.0, 1.0, rng, dt);
  };
  std::vector<Tensor> s(M), s_delta(M);
  for (size_t l = 0; l < M; ++l) {
    ad::Shape gs = st.g_lower[l].shape();
    s[l] = init(gs);
    if (delta) {
      gs[-1] = 1;
      s_delta[l] = init(gs);
    }
  }
  for (int k = 0; k < t.steps; ++k) {
    const std::vector<Tensor> ds = source_gradients(spd, b, st, s, s_delta, routes);
    for (size_t l = 0, i = 0; l < M; ++l) {
      s[l] = ad::clone(s[l]);
      sign_ascent_step(s[l], ds[i++], t.step_size);
      if (delta) {
        s_delta[l] = ad::clone(s_delta[l]);
        sign_ascent_step(s_delta[l], ds[i++], t.step_size);
      }
    }
  }
  return source_masks(st.g_lower, s, s_delta, routes, delta);
}

Tensor pgd_recon(const SPD& spd, const Batch& b, const StepState& st, const PgdParams& t, ad::Rng& rng) {
  const std::vector<LayerMask> masks = pgd_masks(spd, b, st, t, rng);
  return spd.distance(spd.forward_masked(b, masks, spd.reuse_target_pass ? &st.cache : nullptr), st.target_out);
}

namespace {
// pgd_recon (routing all by default) and pgd_recon_subset (uniform_k by default).
struct PgdReconTerm : LossTerm {
  PgdParams p;
  explicit PgdReconTerm(Routing r) { p.routing = r; }
  void read(models::ConfigSection& s) override {
    p.routing = read_routing(s, p.routing);
    if (p.routing == Routing::layerwise) s.error("routing", "pgd_recon terms take routing all, uniform_k or static_p");
    p.route_p = s.get_double("route_p", p.route_p);
    if (!(p.route_p >= 0 && p.route_p <= 1)) s.error("route_p", "must be in [0, 1]");
    p.init = s.get_string("pgd_init", p.init);
    if (p.init != "uniform" && p.init != "ones" && p.init != "zeros")
      s.error("pgd_init", "must be uniform, ones or zeros, got '" + p.init + "'");
    p.scope = s.get_string("pgd_scope", p.scope);
    if (p.scope != "shared" && p.scope != "per_example")
      s.error("pgd_scope", "must be shared or per_example, got '" + p.scope + "'");
    p.steps = (int)s.get_int("pgd_steps", p.steps);
    if (p.steps < 0) s.error("pgd_steps", "must be >= 0");
    p.step_size = s.get_double("pgd_step_size", p.step_size);
    if (!(p.step_size > 0)) s.error("pgd_step_size", "must be > 0");
  }
  nlohmann::json params() const override {
    return {{"routing", routing_name(p.routing)}, {"route_p", p.route_p}, {"pgd_init", p.init},
            {"pgd_scope", p.scope},         {"pgd_steps", p.steps},   {"pgd_step_size", p.step_size}};
  }
  Tensor value(const TermContext& c) const override { return pgd_recon(c.spd(), c.batch, c.st, p, c.rng); }
};
}  // namespace

PD_LOSS_TERM(pgd_recon, kCI, false, [] { return std::make_unique<PgdReconTerm>(Routing::all); });
PD_LOSS_TERM(pgd_recon_subset, kCI, false, [] { return std::make_unique<PgdReconTerm>(Routing::uniform_k); });

}  // namespace decomp
