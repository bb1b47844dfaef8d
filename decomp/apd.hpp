// Attribution-based Parameter Decomposition (METHODS section 2, Braun et al. 2025).
//
// C parameter components P_c span every decomposed layer; in layer l, P_{c,l} = A_{c,l} B_{c,l}
// with A_{c,l} [d_in, m], B_{c,l} [m, d_out]. They live in the shared ComponentModel as
// columns: V_l = [A_{1,l} | ... | A_{C,l}] [d_in, C m], U_l = [B_{1,l}; ...; B_{C,l}] [C m, d_out],
// so component c is columns [c m, (c + 1) m) (ComponentModelOptions::group = m); the tied TMS
// layer reuses the first layer's factors transposed, biases stay the target's (frozen).
//
// Per step: attributions A_c(x) [B, C] of the target (decomp/attributions.hpp), batch top-k
// s = topk_mask(A, K) with K = floor(topk * B), and the top-k forward
//   out_l = sum_c s_c (x A_{c,l}) B_{c,l}   (the same s_c in every layer)
// which the minimality and activation-reconstruction terms read.
#pragma once
#include <vector>

#include "decomp/decomposition.hpp"

namespace decomp {

// K = floor(topk * rows), clamped to [0, rows * C] (K >= rows C keeps every component).
int64_t batch_topk_k(double topk, int64_t rows, int64_t C);

class APD : public Decomposition {
 public:
  APD(const Target& target, const DecompConfig& cfg, ad::Rng& init_rng);

  int64_t C() const { return cm.components(); }
  int64_t m() const { return cfg.apd.m; }

  // Target pass, attributions (st.attributions), top-k s (st.topk, st.topk_columns, and as
  // st.g_lower for every layer). `rng` is not used (APD's step is deterministic in the batch).
  StepState prepare(const Batch& batch, ad::Rng& rng) const override;
  // One-hot rows: each has exactly one active feature, so the budget is one component per
  // row, K = n (training's topk is calibrated to the expected number of active features).
  std::vector<ad::Tensor> onehot_on(const Batch& onehot, ad::Rng& rng) const override;
  void before_step() override;    // unit_norm_A: A columns to unit norm
  void after_backward() override; // unit_norm_A: remove each column's gradient along it

  // Attributions and the top-k mask keeping K = batch_topk_k(per_row, rows, C) (the shared
  // part of prepare and onehot_on); st must hold the target pass.
  void select(const Batch& batch, StepState& st, double per_row) const;
  // Masks of the top-k forward: every layer's columns masked by s.
  std::vector<LayerMask> topk_masks(const StepState& st) const;
  // The top-k forward and its layer inputs, computed on first use in a step and then reused
  // (minimality and activation reconstruction read the same pass).
  const StepState::TopkPass& topk_forward(const Batch& batch, const StepState& st) const;
  // s [rows, C] -> its columns [..., C m] shaped like layer l's component activations.
  ad::Tensor expand_to_columns(const ad::Tensor& s, const ad::Tensor& like_input, int l) const;
};

}  // namespace decomp
