#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/spd.hpp"

namespace decomp {

using ad::Tensor;

Tensor stochastic_recon(const SPD& spd, const Batch& b, const StepState& st, Routing routing, double route_p,
                        int n_samples, ad::Rng& rng) {
  const size_t M = spd.cm.layers.size();
  TargetPassCache* cache = spd.reuse_target_pass ? &st.cache : nullptr;
  Tensor total;
  for (int s = 0; s < n_samples; ++s) {
    Tensor loss;
    if (routing == Routing::layerwise) {
      // one forward per layer with only that layer masked; mean over layers
      for (size_t l = 0; l < M; ++l) {
        MaskSources src = spd.draw_sources(st, rng);
        for (size_t k = 0; k < M; ++k)
          if (k != l) src.r[k] = Tensor();
        Tensor d = spd.distance(spd.forward_masked(b, spd.masks_from(st, src), cache), st.target_out);
        loss = loss.defined() ? loss + d : d;
      }
      loss = loss / (double)M;
    } else {
      std::vector<LayerMask> masks = spd.masks_from(st, spd.draw_sources(st, rng));
      if (routing != Routing::all) {
        std::vector<Tensor> routes = spd.draw_routes(st, routing, route_p, rng);
        for (size_t l = 0; l < M; ++l) masks[l].route = routes[l];
      }
      loss = spd.distance(spd.forward_masked(b, masks, cache), st.target_out);
    }
    total = total.defined() ? total + loss : loss;
  }
  return n_samples == 1 ? total : total / (double)n_samples;
}

namespace {
// stochastic_recon (routing configurable: all, uniform_k, static_p), stochastic_recon_subset
// (uniform_k by default) and stochastic_recon_layerwise (always layerwise).
struct StochasticReconTerm : LossTerm {
  Routing routing;
  bool routing_fixed;  // layerwise: the kind is the routing
  double route_p = 0.5;
  int n_mask_samples = 1;
  StochasticReconTerm(Routing r, bool fixed) : routing(r), routing_fixed(fixed) {}
  void read(models::ConfigSection& s) override {
    if (!routing_fixed) {
      routing = read_routing(s, routing);
      route_p = s.get_double("route_p", route_p);
      if (!(route_p >= 0 && route_p <= 1)) s.error("route_p", "must be in [0, 1]");
    }
    n_mask_samples = (int)s.get_int("n_mask_samples", n_mask_samples);
    if (n_mask_samples < 1) s.error("n_mask_samples", "must be >= 1");
  }
  nlohmann::json params() const override {
    return {{"routing", routing_name(routing)}, {"route_p", route_p}, {"n_mask_samples", n_mask_samples}};
  }
  Tensor value(const TermContext& c) const override {
    return stochastic_recon(c.spd(), c.batch, c.st, routing, route_p, n_mask_samples, c.rng);
  }
};
}  // namespace

PD_LOSS_TERM(stochastic_recon, kCI, true, [] { return std::make_unique<StochasticReconTerm>(Routing::all, false); });
PD_LOSS_TERM(stochastic_recon_subset, kCI, false,
             [] { return std::make_unique<StochasticReconTerm>(Routing::uniform_k, false); });
PD_LOSS_TERM(stochastic_recon_layerwise, kCI, false,
             [] { return std::make_unique<StochasticReconTerm>(Routing::layerwise, true); });

}  // namespace decomp
