// Stochastic masks and routing (METHODS 3.3). From the lower-leaky CI values g_l [..., C] of
// each decomposed layer:
//   sources   r_l ~ U(0, 1) (continuous) or Bernoulli(0.5) (binomial), [..., C]; delta
//             sources r_delta_l ~ U(0, 1), [..., 1]
//   masks     m_l = g_l + (1 - g_l) r_l,  m_delta_l = r_delta_l
//   routing   per example, which layers are masked: all, one at a time (layerwise), a uniformly
//             random k-subset with k ~ U{1..M} (uniform_k) or each layer with probability p
//             (static_p); route_l [B, 1, ..., 1] is 1 where layer l is masked.
// Sources are plain tensors, so adversarial methods can make them leaves and differentiate
// with respect to them.
#pragma once
#include <string>
#include <vector>

#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"
#include "decomp/component_model.hpp"

namespace decomp {

enum class Routing : int { all, layerwise, uniform_k, static_p };
Routing parse_routing(const std::string& s);
const char* routing_name(Routing r);
enum class Sampling { continuous, binomial };

struct MaskSources {
  std::vector<ad::Tensor> r, r_delta;  // r_delta empty when the delta component is off
};
MaskSources draw_sources(const std::vector<ad::Tensor>& g, Sampling sampling, bool delta, ad::Rng& rng);
// m = g + (1 - g) r per layer with a defined r (others stay unmasked), m_delta = r_delta.
std::vector<LayerMask> masks_from(const std::vector<ad::Tensor>& g, const MaskSources& src, bool delta);
// route_l [B, 1, ..., 1] per layer for uniform_k / static_p (p: static_p's probability).
std::vector<ad::Tensor> draw_routes(const std::vector<ad::Tensor>& g, Routing routing, double p, ad::Rng& rng);

}  // namespace decomp
