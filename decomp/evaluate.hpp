// Evaluation of a trained decomposition (METHODS section 5): per-layer CI_L0, alive components,
// identity-CI and dense-k pattern errors on one-hot inputs, TMS MMCS/ML2R, and every loss term
// on a fresh evaluation batch. "CI" is what the method's StepState::g_lower holds: SPD's causal
// importance; for APD the batch top-k mask (a component is on for an input when top-k keeps
// it; on one-hot inputs with one component per row, APD::onehot_on), so CI_L0 is the mean
// number of kept components per example.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "decomp/metrics.hpp"
#include "decomp/decomposition.hpp"
#include "decomp/evaluate_lm.hpp"
#include "decomp/failure_modes.hpp"

namespace decomp {

struct LayerEval {
  std::string name;
  double ci_l0 = 0;             // on the evaluation batch (threshold cfg.ci_threshold)
  int64_t alive = 0;            // components with CI > threshold on any evaluation example
  int64_t large_norm = 0;       // subcomponents with ||u_c v_c^T|| > 0.1 max_c' (large_norm_components)
  std::vector<double> norm;     // per component: ||P_c||_F (component_norms)
  std::vector<double> ci_freq;  // per component: fraction of evaluation examples with CI > threshold
  std::vector<double> ci_mean;  // per component: mean CI over the evaluation batch
  int64_t identity_error = -1;  // on one-hot inputs scaled by 0.75 (-1: not applicable)
  int64_t dense_k = -1, dense_k_error = -1;  // when the config names k for this layer
  BlockCoverage block_coverage;               // of that dense-k block (dense_k >= 0 only)
  bool has_mmcs = false;
  MMCSResult mm;                // TMS only: layers whose d_in is the number of features
  MMCSResult mm_large_norm;     // the same over the large-norm subcomponents only (rel 0.1)
  Mat ci_onehot;                // [n_features, C] CI on one-hot inputs (for heatmaps)
  std::vector<int64_t> order;   // permuted column order used for the pattern check
};

// A cross-layer dense-k group (DecompConfig::dense_k_groups) on one-hot inputs.
struct GroupEval {
  DenseKGroup group;
  int64_t dense_k_error = 0;
  int64_t onehot_active = 0;  // columns of the joined matrix with an entry > ci_threshold
  BlockCoverage block_coverage;  // of the joined k-column block
  Mat ci_onehot;              // the joined matrix [n_features, sum C] (for the heatmap)
  std::vector<int64_t> order;  // its columns by mass (the dense-k order)
};

struct EvalResult {
  std::vector<LayerEval> layers;
  std::vector<GroupEval> groups;
  std::map<std::string, double> losses;  // evaluated_terms() by label, on the eval batch
  // D(f(x | every component of every layer ablated), f(x)) on the eval batch: the scale the
  // CI-masked reconstruction is judged against (failure modes).
  double recon_zero = 0;
  bool has_lm = false;  // sequence targets of the CI methods: KL / CE per masking strategy
  LMEval lm;
  std::vector<FailureMode> failure_modes;  // filled by detect_failure_modes (needs the training log)
};

// What evaluation reports: every configured term (its own parameters, by label), then each
// monitor kind of the loss-term table that no configured term is labelled as, with default
// parameters.
std::vector<std::shared_ptr<const LossTerm>> evaluated_terms(const DecompConfig& cfg);

// Throws when dense_k or a dense_k_groups entry names a layer `target` does not decompose,
// or when either is given for a target without one-hot features (evaluation would skip them
// silently). The error names `source` (the config file; may be empty) and the key. Run it
// before training (on untrained_target) so a typo does not cost a long run.
void check_dense_k(const Target& target, const std::map<std::string, int64_t>& dense_k,
                   const std::vector<DenseKGroup>& groups, const std::string& source);

// dense_k: layer name -> k of the expected dense-k pattern (others use the identity order);
// groups: cross-layer dense-k patterns (needs one-hot inputs, i.e. a target with features).
EvalResult evaluate(const Decomposition& spd, ad::Rng& rng, const std::map<std::string, int64_t>& dense_k = {},
                    const std::vector<DenseKGroup>& groups = {});

// Per layer (cm.layers' order) and component: how much the output distance to the target (the
// unmasked_recon distance, on a batch of n fresh examples) grows when that component alone is
// masked out and every other component of every layer stays on. Measured for each layer's
// max_per_layer largest-norm components with norm above rel_floor of the layer's largest
// (`layers` gives the norms); NaN for the others. One masked forward pass per measured component.
std::vector<std::vector<double>> ablation_effects(const Decomposition& spd, const std::vector<LayerEval>& layers,
                                                  ad::Rng& rng, int64_t n, double rel_floor = 0.01,
                                                  int64_t max_per_layer = 200);

// The one-hot CI matrices of several layers side by side: [n, C_1 + C_2 + ...].
Mat join_columns(const std::vector<const Mat*>& parts);

// Row-major copy of a 2-d tensor, or of a [..., C] tensor flattened to [N, C].
Mat to_mat(const ad::Tensor& t);

}  // namespace decomp
