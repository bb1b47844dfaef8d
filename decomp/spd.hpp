// Stochastic Parameter Decomposition (METHODS section 3): masks, routing, every loss term and
// the training loop. Loss terms are configured by name and coefficient; mask sources (the
// random r of m = g + (1 - g) r) are ordinary tensors, so adversarial methods (VPD) can make
// them leaves and differentiate with respect to them.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodiff/optim.hpp"
#include "decomp/component_model.hpp"

namespace decomp {

// ---- the model being decomposed -------------------------------------------------------------
struct Batch {
  ad::Tensor x;       // [B, n_in] float inputs (toy models), or undefined
  ad::Indices ids;    // token ids (sequence models)
  int64_t size = 0;   // number of examples
};

enum class Distance { mse, kl };
Distance parse_distance(const std::string& s);

struct Target {
  std::string name;
  std::vector<LayerSpec> layers;  // the layers to decompose, in forward order
  // The target's forward; every decomposed layer goes through apply_linear/apply_embedding.
  std::function<ad::Tensor(const Batch&, models::ForwardHooks*)> forward;
  std::function<Batch(int64_t batch_size, ad::Rng&)> sample;
  Distance distance = Distance::mse;
  int64_t n_features = 0;  // > 0: inputs are feature vectors; one-hot identity-CI checks apply
  ad::DType dtype = ad::DType::f32;
};

// ---- configuration --------------------------------------------------------------------------
enum class Routing { all, layerwise, uniform_k, static_p };
Routing parse_routing(const std::string& s);
enum class Sampling { continuous, binomial };

struct LossTermConfig {
  std::string name;  // faithfulness | stochastic_recon | stochastic_recon_layerwise |
                     // stochastic_recon_subset | pgd_recon | pgd_recon_subset |
                     // ci_masked_recon | unmasked_recon | importance_minimality
  double coeff = 1.0;  // 0: computed as a monitor only (at log steps, no gradient)
  // stochastic recon terms
  Routing routing = Routing::all;
  double route_p = 0.5;  // static_p routing: probability that a layer is masked
  int n_mask_samples = 1;
  // importance minimality: p annealed linearly from p to p_final over [anneal_start, anneal_end]
  double p = 1.0, p_final = -1.0, anneal_start = 0.0, anneal_end = 1.0;
  double beta = 0.0;  // VPD's frequency term coefficient
  // sign-PGD adversarial sources (pgd_recon terms, METHODS 4): init uniform | ones | zeros;
  // scope shared (one source per layer for the whole batch) | per_example
  std::string pgd_init = "uniform", pgd_scope = "shared";
  int pgd_steps = 1;
  double pgd_step_size = 1.0;
  double p_at(double frac) const;
};

struct TrainConfig {
  int64_t steps = 1000, batch_size = 1024;
  double lr = 1e-3;
  std::string schedule = "cosine";  // cosine | linear | constant (after warmup)
  double warmup_frac = 0.0, final_frac = 0.0;
  double clip_components = 0.0, clip_ci = 0.0;  // global grad-norm clip per group; 0 = off
  int64_t faith_warmup_steps = 0;
  double faith_warmup_lr = 1e-2, faith_warmup_wd = 0.1;
  int64_t log_every = 100;
  int64_t checkpoint_every = 0;  // > 0: pd decompose writes checkpoint.safetensors every N steps
};

struct DenseKGroup {
  std::string name;
  std::vector<std::string> layers;
  int64_t k = 0;
};

struct SPDConfig {
  ComponentModelOptions model;
  std::vector<LossTermConfig> losses;
  Sampling sampling = Sampling::continuous;
  bool delta = true;
  double leaky_alpha = 0.01;
  TrainConfig train;
  uint64_t seed = 0;
  double ci_threshold = 0.1;
  int64_t eval_batch = 10000;
  // Layers expected to show a dense-k CI pattern on one-hot inputs (layer name -> k), e.g.
  // the TMS identity layer (k = n_hidden) or residual-MLP mlp_out (k = d_mlp).
  std::map<std::string, int64_t> dense_k;
  // Cross-layer dense-k patterns: the one-hot CI matrices of the named layers side by side
  // ([n_features, sum C]) must form one dense block of k components, e.g. the residual MLP's
  // mlp_out layers as one rank-50 (2L) or rank-51 (3L) block spread over all layers.
  std::vector<DenseKGroup> dense_k_groups;
};

// Parses the "decomposition" part of a config (everything but the target). `where` names the
// file in error messages. Unknown keys are errors.
SPDConfig parse_spd_config(const nlohmann::json& j, const std::string& where);

// ---- per-step computation -------------------------------------------------------------------
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

  // Mask sources r for every layer ([..., C], uniform or Bernoulli(0.5)) and delta sources
  // [..., 1] -- plain tensors; the caller may make them leaves.
  struct Sources {
    std::vector<ad::Tensor> r, r_delta;
  };
  Sources draw_sources(const StepState& st, ad::Rng& rng) const;
  // m = g + (1 - g) r per layer, m_delta = r_delta (undefined when delta is off).
  std::vector<LayerMask> masks_from(const StepState& st, const Sources& src) const;
  // Per-example routing masks route_l [B, 1, ..., 1] for uniform-k / static-p subsets.
  std::vector<ad::Tensor> draw_routes(const StepState& st, Routing routing, double p, ad::Rng& rng) const;

  ad::Tensor distance(const ad::Tensor& out, const ad::Tensor& target_out) const;
  // The target's forward with masked layers replaced. With `cache` (from prepare() on this
  // same batch), the pass reuses the cached target pass where its values are identical.
  ad::Tensor forward_masked(const Batch& batch, const std::vector<LayerMask>& masks,
                            TargetPassCache* cache = nullptr) const;

  // Loss terms (METHODS 3.4). Each draws fresh masks from rng.
  ad::Tensor faithfulness() const;
  ad::Tensor importance_minimality(const StepState& st, double p, double beta) const;
  ad::Tensor stochastic_recon(const Batch& b, const StepState& st, Routing routing, double route_p,
                              int n_samples, ad::Rng& rng) const;
  // Reconstruction under adversarial masks m = g + (1 - g) s (METHODS 4, sign PGD): the
  // sources s ascend the same loss for t.pgd_steps steps, then the loss at the final s
  // (a constant) is returned. Routing (all / uniform_k / static_p) is drawn once.
  ad::Tensor pgd_recon(const Batch& b, const StepState& st, const LossTermConfig& t, ad::Rng& rng) const;
  ad::Tensor ci_masked_recon(const Batch& b, const StepState& st) const;
  ad::Tensor unmasked_recon(const Batch& b, const StepState& st) const;
  ad::Tensor term(const LossTermConfig& t, const Batch& b, const StepState& st, double frac, ad::Rng& rng) const;

  // Total training loss (sum of coeff * term over terms with coeff != 0); per-term values
  // (unweighted) in `values`. With monitors = true, coeff-0 terms are evaluated too.
  ad::Tensor total_loss(const Batch& b, double frac, ad::Rng& rng, std::map<std::string, double>* values,
                        bool monitors) const;

  std::vector<ad::Tensor> all_params() const;
  std::vector<std::string> all_param_names() const;
};

// ---- training ---------------------------------------------------------------------------------
struct TrainLog {
  std::vector<int64_t> steps;
  std::map<std::string, std::vector<double>> values;  // per term (+ "total", "lr")
  double seconds = 0;
};
// Resuming and checkpointing a run (the file format lives in experiments/spd/spd_checkpoint).
// A run stopped at step k and resumed gives the same bits as an uninterrupted run, provided
// restore_optimizer loads the Adam state and the caller restored the parameters, the rng and
// the log as they were at step k.
struct TrainHooks {
  int64_t start_step = 0;   // > 0: resume here (the faithfulness warmup is not repeated)
  int64_t stop_after = -1;  // >= 0: stop after this many total steps (checkpoint called)
  std::function<void(ad::Adam&)> restore_optimizer;  // called once, before the first step
  // Called every train.checkpoint_every steps and at an early stop: next_step is the first
  // step not yet taken.
  std::function<void(int64_t next_step, const ad::Adam&, const ad::Rng&, const TrainLog&)> checkpoint;
};

// Faithfulness warmup (if configured), then cfg.train.steps of Adam. `log` may be null.
// progress(step, values) is called at log steps (may be empty). Returns the number of steps
// taken in total (< cfg.train.steps only when hooks->stop_after stopped it).
int64_t train_spd(SPD& spd, ad::Rng& rng, TrainLog* log,
                  const std::function<void(int64_t, const std::map<std::string, double>&)>& progress = {},
                  const TrainHooks* hooks = nullptr);

// The configured schedule: linear warmup, then cosine/linear/constant decay to final_frac.
ad::LrSchedule lr_schedule(const TrainConfig& t);

}  // namespace decomp
