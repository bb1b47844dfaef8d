// What every decomposition method shares (METHODS sections 2-4): the component model of a
// target, the step's one cached target pass, masked forward passes, the output distance and
// the total loss over the configured loss terms (decomp/loss_term.hpp, decomp/losses/).
// A method (SPD: decomp/spd.hpp, APD: decomp/apd.hpp) adds what decides which components are
// on for an input: SPD's causal-importance functions, APD's attributions and batch top-k.
// Training is decomp/trainer.hpp, evaluation decomp/evaluate.hpp, files decomp/run/.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "decomp/component_model.hpp"
#include "decomp/config.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/masks.hpp"
#include "decomp/target.hpp"

namespace decomp {

// The target pass and the per-step quantities the loss terms read.
struct StepState {
  ad::Tensor target_out;              // f_target(x), constant
  std::vector<ad::Tensor> inputs;     // target's input to each decomposed layer, constant
  // Per layer, how much each component is on for each example [..., C] (evaluation reads it):
  // SPD the lower-leaky CI g; APD the top-k mask s (the same tensor for every layer).
  std::vector<ad::Tensor> g_lower;
  // SPD only.
  std::vector<ad::Tensor> z;          // CI pre-sigmoid [..., C]
  std::vector<ad::Tensor> g_upper;    // upper-leaky CI (importance minimality)
  // APD only (constants).
  ad::Tensor attributions;            // A_c(x) [B, C]
  ad::Tensor topk;                    // s [B, C]: 1 where batch top-k keeps the component
  ad::Tensor topk_columns;            // s repeated over each component's m columns [B, C m]
  struct TopkPass {
    ad::Tensor out;                   // f_topk(x)
    std::vector<ad::Tensor> inputs;   // its input to each decomposed layer
  };
  mutable TopkPass topk_pass;         // filled once per step by APD::topk_forward
  // Reused by the masked passes of this step (filled by prepare; h lazily by masked passes).
  mutable TargetPassCache cache;
};

class Decomposition {
 public:
  Decomposition(const Target& target, const DecompConfig& cfg, ad::Rng& init_rng);
  virtual ~Decomposition() = default;

  const Target& target;
  DecompConfig cfg;
  ComponentModel cm;
  // Masked passes reuse the step's cached target pass (TargetPassCache). Same values and
  // gradients either way (tests compare); off only to check that or to measure the saving.
  bool reuse_target_pass = true;

  const char* method_name() const { return decomp::method_name(cfg.method); }

  // The step's cached target pass plus what the method computes from it. `rng`: the step's
  // generator (SPD's binomial variant draws from it).
  virtual StepState prepare(const Batch& batch, ad::Rng& rng) const = 0;
  // Per layer, [n, C] on-values for the n rows of `onehot` (one-hot feature inputs), for the
  // identity and dense-k checks. Default: prepare(onehot).g_lower.
  virtual std::vector<ad::Tensor> onehot_on(const Batch& onehot, ad::Rng& rng) const;
  // Called by the trainer at the start of each step and between backward and the optimiser
  // step (APD's unit-norm A columns and their gradient projection; VPD arms its sources).
  // Default: nothing.
  virtual void before_step() {}
  virtual void after_backward() {}
  // Called after the optimiser step (VPD's persistent sources take their ascent step). Default: nothing.
  virtual void after_step() {}
  // State besides the parameters that a checkpoint must hold for a bit-identical resume
  // (VPD's persistent sources and their Adam moments). Default: none.
  struct StateTensor {
    std::string name;
    ad::Tensor t;
    bool audited = false;  // the loss depends on it (pd audit checks its gradient)
  };
  virtual std::vector<StateTensor> persistent_state() const { return {}; }

  ad::Tensor distance(const ad::Tensor& out, const ad::Tensor& target_out) const;
  // The target's forward with masked layers replaced. With `cache` (from prepare() on this
  // same batch), the pass reuses the cached target pass where its values are identical.
  // `inputs_out` (optional) receives each decomposed layer's input in this pass.
  ad::Tensor forward_masked(const Batch& batch, const std::vector<LayerMask>& masks,
                            TargetPassCache* cache = nullptr, std::vector<ad::Tensor>* inputs_out = nullptr) const;

  // One configured term's value at this step (draws its masks from rng).
  ad::Tensor term(const LossTerm& t, const Batch& b, const StepState& st, double frac, ad::Rng& rng) const;
  // Total training loss (sum of coeff * term over terms with coeff != 0); per-term values
  // (unweighted, by label) in `values`. With monitors = true, coeff-0 terms are evaluated too.
  ad::Tensor total_loss(const Batch& b, double frac, ad::Rng& rng, std::map<std::string, double>* values,
                        bool monitors) const;

  std::vector<ad::Tensor> all_params() const;
  std::vector<std::string> all_param_names() const;

 protected:
  // The one cached target pass: st.target_out, st.inputs (embeddings as one-hot rows), st.cache.
  void record_target_pass(const Batch& batch, StepState& st) const;
  // Each decomposed layer's input shape for a one-example batch ([1, (S,) d_in]), from one
  // target pass with its own generator.
  std::vector<ad::Shape> layer_input_shapes() const;

 private:
  // Fails unless every decomposed layer's input is [B, S, d] (for the transformer CI function).
  void check_sequence_inputs() const;
};

// A decomposition of the method cfg.method names.
std::unique_ptr<Decomposition> make_decomposition(const Target& target, const DecompConfig& cfg, ad::Rng& init_rng);

}  // namespace decomp
