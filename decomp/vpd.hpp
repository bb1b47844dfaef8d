// VPD, adversarial Parameter Decomposition (METHODS section 4): SPD's parametrisation, CI
// functions, masks and loss terms (decomp/spd.hpp), plus masks whose sources persist across
// training steps and are trained to HURT reconstruction (persistent PGD). The frequency term
// (importance_minimality's beta), subset routing and the global CI function are SPD pieces a
// VPD config switches on.
//
// Persistent PGD, per configured persistent_pgd_recon term and decomposed layer l:
//   sources s_l [n, (S,) C] and s_delta_l [n, (S,) 1] in [0, 1] (METHODS' [n, S, C+1], the delta
//   channel kept as its own tensor); n and the position axis follow the term's scope:
//     shared       [1, (1,) C]     one source for everything
//     per_position [1, S, C]       one per position, broadcast over the batch (toys: = shared)
//     repeat       [n, S, C]       n sources, example b reads row b mod n (n divides the batch)
//     per_example  [B, S, C]       one per example and position (B = train.batch_size)
//   Masks m_l = g_l + (1 - g_l) s_l (decomp/losses/losses.hpp source_masks).
//   Each training step: `inner_steps` Adam ASCENT steps on the current batch (g, U, V constant),
//   then the training loss at the sources; the term's gradient dD/ds with respect to the sources
//   is applied as one more ascent step after the optimiser step (after_step). It comes from the
//   step's one backward, which leaves coeff dD/ds in the sources' .grad (the total is
//   sum coeff x term), so after_step divides by coeff: the same numbers as a separate pass on D
//   before the backward, on the scale of the inner steps' gradients (the Adam moments mix both). Adam: lr_t = lr min(1, (t + 1) / (warmup
//   T)) for training step t of T, betas (0.5, 0.99), eps 1e-8, bias-corrected; clamp to [0, 1]
//   after each update. The sources and Adam moments are in checkpoints (persistent_state), so a
//   resumed run repeats the uninterrupted one bit for bit.
// Outside a training step (evaluation, monitors, the audit) the term is the distance at the
// current sources, which stay untouched.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "decomp/loss_term.hpp"
#include "decomp/spd.hpp"

namespace decomp {

struct PersistentPgdParams {
  Routing routing = Routing::all;
  double route_p = 0.5;
  std::string scope = "per_example";  // shared | per_position | repeat | per_example
  int64_t n_sources = 1;              // rows for scope repeat
  int inner_steps = 2;
  double lr = 0.01, warmup = 0.025, beta1 = 0.5, beta2 = 0.99, eps = 1e-8;
  std::string init = "uniform";       // uniform | ones | zeros
  double start_frac = 0.0;            // the term is 0 (and the sources rest) before this fraction
};

// The persistent_pgd_recon loss term's parameters (read in decomp/losses/persistent_pgd_recon.cpp).
struct PersistentPgdReconTerm : LossTerm {
  PersistentPgdParams p;
  void read(models::ConfigSection& s) override;
  nlohmann::json params() const override;
  ad::Tensor value(const TermContext& c) const override;
  bool reads_persistent_state() const override { return true; }
};

// One term's sources and their Adam state. Tensors are plain (no graph) except during a
// training step, when `s` and `s_delta` are leaves whose .grad the main backward fills.
struct PersistentSources {
  PersistentPgdParams p;
  double coeff = 1;                             // the term's coefficient in the total loss (> 0)
  std::vector<ad::Tensor> s, s_delta;           // per layer
  std::vector<ad::Tensor> m1, m2;               // Adam moments of s then s_delta, layer by layer
  ad::Tensor t;                                 // [1] f64: Adam updates taken so far
  bool armed = false;                           // a training step may update the sources
  bool pending = false;                         // the step's loss used them: after_step applies .grad
  double last_lr = 0;                           // this step's ascent lr
  double lr_at(double frac, int64_t total_steps) const;
  // One bias-corrected Adam ascent step on every source with gradients `grads` (s_l, s_delta_l
  // order), lr `lr`, then clamp to [0, 1]. Increments t.
  void ascend(const std::vector<ad::Tensor>& grads, double lr);
  std::vector<ad::Tensor> leaves() const;       // s_l, s_delta_l in ascend's order
};

class VPD : public SPD {
 public:
  VPD(const Target& target, const DecompConfig& cfg, ad::Rng& init_rng);

  // By term label. Mutable: the term updates its sources during a const loss evaluation.
  mutable std::map<std::string, PersistentSources> adversaries;

  void before_step() override;  // arms every term's sources for this step
  void after_step() override;   // applies each used term's pending source gradient
  std::vector<StateTensor> persistent_state() const override;

  // The term's loss at this step (decomp/losses/persistent_pgd_recon.cpp): inner ascent when
  // armed, then D at the sources.
  ad::Tensor persistent_pgd_recon(const std::string& label, const Batch& b, const StepState& st, double frac,
                                  ad::Rng& rng) const;
};

}  // namespace decomp
