#include "decomp/masks.hpp"

#include "decomp/mask_ops.hpp"

namespace decomp {

using ad::Tensor;

Routing parse_routing(const std::string& s) {
  if (s == "all") return Routing::all;
  if (s == "layerwise") return Routing::layerwise;
  if (s == "uniform_k") return Routing::uniform_k;
  if (s == "static_p") return Routing::static_p;
  ad::fail("unknown routing '" + s + "' (expected all, layerwise, uniform_k or static_p)");
}

const char* routing_name(Routing r) {
  switch (r) {
    case Routing::all: return "all";
    case Routing::layerwise: return "layerwise";
    case Routing::uniform_k: return "uniform_k";
    case Routing::static_p: return "static_p";
  }
  return "?";
}

MaskSources draw_sources(const std::vector<Tensor>& gs, Sampling sampling, bool delta, ad::Rng& rng) {
  MaskSources s;
  for (const Tensor& g : gs) {
    s.r.push_back(sampling == Sampling::binomial ? ad::rand_bernoulli(g.shape(), 0.5, rng, g.dtype())
                                                 : ad::rand_uniform(g.shape(), 0.0, 1.0, rng, g.dtype()));
    if (delta) {
      ad::Shape ds = g.shape();
      ds[-1] = 1;
      s.r_delta.push_back(ad::rand_uniform(ds, 0.0, 1.0, rng, g.dtype()));
    }
  }
  return s;
}

std::vector<LayerMask> masks_from(const std::vector<Tensor>& gs, const MaskSources& src, bool delta) {
  std::vector<LayerMask> masks(gs.size());
  for (size_t l = 0; l < masks.size(); ++l) {
    if (!src.r[l].defined()) continue;
    masks[l].m = stochastic_mask(gs[l], src.r[l]);  // m = g + (1 - g) r
    if (delta) masks[l].m_delta = src.r_delta[l];
  }
  return masks;
}

std::vector<Tensor> draw_routes(const std::vector<Tensor>& gs, Routing routing, double p, ad::Rng& rng) {
  const size_t M = gs.size();
  const Tensor& g0 = gs[0];
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

}  // namespace decomp
