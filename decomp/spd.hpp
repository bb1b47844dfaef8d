// Stochastic Parameter Decomposition (METHODS section 3): the component model of a target,
// the step's cached target pass and CI values, masked forward passes and the total loss over
// the configured loss terms (decomp/loss_term.hpp, decomp/losses/). Training lives in
// decomp/trainer.hpp, evaluation in decomp/evaluate.hpp.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "decomp/component_model.hpp"
#include "decomp/config.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/masks.hpp"
#include "decomp/target.hpp"

namespace decomp {

// The target pass and CI values one step needs.
struct StepState {
  ad::Tensor target_out;              // f_target(x), constant
  std::vector<ad::Tensor> inputs;     // target's input to each decomposed layer, constant
  std::vector<ad::Tensor> z;          // CI pre-sigmoid [..., C]
  std::vector<ad::Tensor> g_lower;    // lower-leaky CI (masks, CI-masked recon)
  std::vector<ad::Tensor> g_upper;    // upper-leaky CI (importance minimality)
  // Reused by the masked passes of this step (filled by prepare; h lazily by masked passes).
  mutable TargetPassCache cache;
};

class SPD {
 public:
  SPD(const Target& target, const SPDConfig& cfg, ad::Rng& init_rng);

  const Target& target;
  SPDConfig cfg;
  ComponentModel cm;
  // Masked passes reuse the step's cached target pass (TargetPassCache). Same values and
  // gradients either way (tests compare); off only to check that or to measure the saving.
  bool reuse_target_pass = true;

  // One cached target pass + CI functions. `rng` is used only for the binomial variant.
  StepState prepare(const Batch& batch, ad::Rng& rng) const;

  // Masks and routing with this config's sampling and delta (decomp/masks.hpp).
  MaskSources draw_sources(const StepState& st, ad::Rng& rng) const;
  std::vector<LayerMask> masks_from(const StepState& st, const MaskSources& src) const;
  std::vector<ad::Tensor> draw_routes(const StepState& st, Routing routing, double p, ad::Rng& rng) const;

  ad::Tensor distance(const ad::Tensor& out, const ad::Tensor& target_out) const;
  // The target's forward with masked layers replaced. With `cache` (from prepare() on this
  // same batch), the pass reuses the cached target pass where its values are identical.
  ad::Tensor forward_masked(const Batch& batch, const std::vector<LayerMask>& masks,
                            TargetPassCache* cache = nullptr) const;

  // One configured term's value at this step (draws its masks from rng).
  ad::Tensor term(const LossTerm& t, const Batch& b, const StepState& st, double frac, ad::Rng& rng) const;

  // Total training loss (sum of coeff * term over terms with coeff != 0); per-term values
  // (unweighted, by label) in `values`. With monitors = true, coeff-0 terms are evaluated too.
  ad::Tensor total_loss(const Batch& b, double frac, ad::Rng& rng, std::map<std::string, double>* values,
                        bool monitors) const;

  std::vector<ad::Tensor> all_params() const;
  std::vector<std::string> all_param_names() const;
};

}  // namespace decomp
