// Stochastic Parameter Decomposition (METHODS section 3): rank-1 subcomponents per layer whose
// causal-importance functions g = sigma(Gamma(x V)) decide, per example, how far each may be
// ablated; stochastic masks m = g + (1 - g) r and routing (decomp/masks.hpp). What SPD shares
// with the other methods (target pass, masked forwards, loss terms) is decomp/decomposition.hpp.
#pragma once
#include <vector>

#include "decomp/decomposition.hpp"

namespace decomp {

class SPD : public Decomposition {
 public:
  SPD(const Target& target, const DecompConfig& cfg, ad::Rng& init_rng);

  // One cached target pass + CI functions. `rng` is used only for the binomial variant.
  StepState prepare(const Batch& batch, ad::Rng& rng) const override;

  // Masks and routing with this config's sampling and delta (decomp/masks.hpp).
  MaskSources draw_sources(const StepState& st, ad::Rng& rng) const;
  std::vector<LayerMask> masks_from(const StepState& st, const MaskSources& src) const;
  std::vector<ad::Tensor> draw_routes(const StepState& st, Routing routing, double p, ad::Rng& rng) const;
};

}  // namespace decomp
