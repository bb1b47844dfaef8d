// Evaluation of a decomposition of a sequence model (METHODS 4 "Evaluation", 5 "LM"): the
// output distance (KL to the target) and next-token cross-entropy under each masking strategy,
// ce_unrecovered, and the adversarial evaluation. For the methods with CI functions (SPD, VPD).
//
// Strategies (every decomposed layer replaced; g the lower-leaky CI, tau = ci_threshold):
//   unmasked     m = 1, no delta            (the components' sum V U in place of W)
//   ci_masked    m = g, no delta
//   stochastic   m = g + (1 - g) r, m_delta = r_delta (the config's sampling and delta)
//   random       m = r ~ U(0, 1), no delta  (masks that ignore the CI)
//   rounded      m = 1[g > tau], no delta
//   zero         m = 0, no delta            (every component ablated)
//   adversarial  m = g + (1 - g) s, s from a fresh sign PGD on one source shared across the
//                batch (uniform init, 20 steps of size 0.1, delta as configured)
// CE is the mean over positions 0..S-2 of -log q(next token); ce_unrecovered =
// (CE - CE_target) / (CE_zero - CE_target): 0 = the target's CE, 1 = as bad as ablating all.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "decomp/decomposition.hpp"

namespace decomp {

struct MaskingEval {
  std::string strategy;
  double kl = 0, ce = 0, ce_unrecovered = 0;
};

struct LMEval {
  double ce_target = 0;
  std::vector<MaskingEval> strategies;  // in the order above
  int64_t sequences = 0, positions = 0;
  const MaskingEval* find(const std::string& strategy) const;
  nlohmann::json to_json() const;
};

inline constexpr int kAdversarialEvalSteps = 20;
inline constexpr uint64_t kLMEvalStream = 91;  // evaluate() seeds evaluate_lm with step_seed(seed, 0, this)
inline constexpr double kAdversarialEvalStepSize = 0.1;

// Over `total` sequences drawn from the target's sampler in chunks of `chunk` (means weighted
// by positions). Needs a CI method (SPD or VPD) and a token target.
LMEval evaluate_lm(const Decomposition& dec, ad::Rng& rng, int64_t total, int64_t chunk);

// Next-token cross-entropy of logits [B, S, V] on ids [B, S]: mean over positions 0..S-2.
ad::Tensor next_token_ce(const ad::Tensor& logits, const ad::Indices& ids);

}  // namespace decomp
