// The loss terms of METHODS 3.4 / 4 as plain functions, in the paper's symbols; each file in
// this folder implements one of them and registers it in the loss-term table
// (decomp/loss_term.hpp) with its parameter struct.
#pragma once
#include <string>
#include <vector>

#include "autodiff/ops.hpp"
#include "decomp/masks.hpp"

namespace decomp {

class Decomposition;
class SPD;
class APD;
class ComponentModel;
struct Batch;
struct StepState;

// Faithfulness = sum_l ||W_l - (V_l U_l)^T||_F^2 / sum_l numel(W_l)  (tied layers count twice)
ad::Tensor faithfulness(const ComponentModel& cm);

// ImportanceMinimality: per layer S_c = sum_b (u_bc + 1e-12)^p, f_c = S_c / B (u: upper-leaky
// CI values [..., C]); loss = sum_l sum_c [f_c + beta f_c log2(1 + S_c)].
ad::Tensor importance_minimality(const std::vector<ad::Tensor>& g_upper, double p, double beta);
// p annealed linearly from p to p_final over the training fractions [anneal_start, anneal_end]
// (p_final < 0: no annealing).
struct PAnnealing {
  double p = 1.0, p_final = -1.0, anneal_start = 0.0, anneal_end = 1.0;
  double p_at(double frac) const;
};

// StochasticRecon: D(f(x | m), f(x)) under m = g + (1 - g) r, averaged over n_samples draws;
// layerwise routing: the mean over layers of D with only that layer masked.
ad::Tensor stochastic_recon(const SPD& spd, const Batch& b, const StepState& st, Routing routing, double route_p,
                            int n_samples, ad::Rng& rng);

// PGDRecon (METHODS 4, sign PGD): D under adversarial masks m = g + (1 - g) s; the sources s
// ascend D for `steps` sign steps of size `step_size` (clamped to [0, 1]); the loss at the
// final s (a constant) is returned. Routing is drawn once.
struct PgdParams {
  Routing routing = Routing::all;
  double route_p = 0.5;
  std::string init = "uniform";  // uniform | ones | zeros
  std::string scope = "shared";  // shared: one source per layer for the batch | per_example
  int steps = 1;
  double step_size = 1.0;
};
ad::Tensor pgd_recon(const SPD& spd, const Batch& b, const StepState& st, const PgdParams& p, ad::Rng& rng);
// The masks sign PGD ends at (pgd_recon is the distance under them): the evaluation's
// adversarial CE reads the masked output itself.
std::vector<LayerMask> pgd_masks(const SPD& spd, const Batch& b, const StepState& st, const PgdParams& p, ad::Rng& rng);

// What sign PGD and persistent PGD (decomp/vpd.hpp) share. Adversarial masks from sources:
// m_l = g_l + (1 - g_l) s_l, m_delta_l = s_delta_l (when delta), route_l when routes is not empty.
// A source may be smaller than g: s_l [n, ..., C] (example b reads row b mod n) with size 1
// or g's size on the other axes, or fewer axes (broadcast).
std::vector<LayerMask> source_masks(const std::vector<ad::Tensor>& g, const std::vector<ad::Tensor>& s,
                                    const std::vector<ad::Tensor>& s_delta, const std::vector<ad::Tensor>& routes,
                                    bool delta);
// d D(f(x | source_masks), f(x)) / d s for every s_l and s_delta_l (in that order, layer by layer),
// with g, V, U and the CI functions held constant (the inner ascent steps).
std::vector<ad::Tensor> source_gradients(const SPD& spd, const Batch& b, const StepState& st,
                                         const std::vector<ad::Tensor>& s, const std::vector<ad::Tensor>& s_delta,
                                         const std::vector<ad::Tensor>& routes);

// CIMaskedRecon (m = g, no delta) and UnmaskedRecon (m = 1): monitors.
ad::Tensor ci_masked_recon(const SPD& spd, const Batch& b, const StepState& st);
ad::Tensor unmasked_recon(const Decomposition& d, const Batch& b, const StepState& st);

// APD (METHODS 2), one file each: minimality D(f_topk, f_target); activation reconstruction
// (mean over `layers` of the MSE between the top-k pass's and the target's layer inputs);
// Schatten-p simplicity.
ad::Tensor apd_minimality(const APD& apd, const Batch& b, const StepState& st);
ad::Tensor apd_act_recon(const APD& apd, const Batch& b, const StepState& st, const std::vector<std::string>& layers);
ad::Tensor apd_simplicity(const APD& apd, const StepState& st, double p);
// Simplicity's norms of every column j: ||V[:, j]||^2 ||U[j, :]||^2 for V [d_in, J], U [J, d_out]
// -> [J], one fused op: no [d_in, J] / [J, d_out] squares (26 MB each for the residual MLP)
// or their gradients, and both passes over V and U split over the thread pool. The same
// numbers as apd_column_norms_reference, the composite of ad::square, ad::sum and ad::mul (in
// the same summation order; up to the rounding of a multiply-add the compiler fuses).
ad::Tensor apd_column_norms(const ad::Tensor& V, const ad::Tensor& U);
ad::Tensor apd_column_norms_reference(const ad::Tensor& V, const ad::Tensor& U);

}  // namespace decomp
