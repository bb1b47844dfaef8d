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

// CIMaskedRecon (m = g, no delta) and UnmaskedRecon (m = 1): monitors.
ad::Tensor ci_masked_recon(const SPD& spd, const Batch& b, const StepState& st);
ad::Tensor unmasked_recon(const Decomposition& d, const Batch& b, const StepState& st);

// APD (METHODS 2), one file each: minimality D(f_topk, f_target); activation reconstruction
// (mean over `layers` of the MSE between the top-k pass's and the target's layer inputs);
// Schatten-p simplicity.
ad::Tensor apd_minimality(const APD& apd, const Batch& b, const StepState& st);
ad::Tensor apd_act_recon(const APD& apd, const Batch& b, const StepState& st, const std::vector<std::string>& layers);
ad::Tensor apd_simplicity(const APD& apd, const StepState& st, double p);

}  // namespace decomp
