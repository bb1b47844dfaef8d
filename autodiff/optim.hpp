// Optimisers over named parameter groups, learning-rate schedules and gradient clipping.
//
//   ad::AdamW opt({{"components", comp_params, /*clip_norm*/ 0.01}, {"ci_fns", ci_params}},
//                 ad::AdamConfig{1e-3, {0.9, 0.999}, 1e-8, /*weight_decay*/ 0.0});
//   ad::LrSchedule sched{ad::LrSchedule::Kind::cosine, /*final_frac*/ 0.1, /*warmup_frac*/ 0.01};
//   for (int64_t step = 0; step < steps; ++step) {
//     opt.zero_grad();
//     ad::backward(loss(...));
//     opt.step(sched.lr_at(1e-3, step, steps));  // clips each group with clip_norm > 0 first
//     double comp_norm = opt.last_grad_norm(0);   // that group's pre-clip gradient norm
//   }
//
// Semantics follow PyTorch (torch.optim 1.13) so runs can be compared number for number:
//   SGD    d = g + wd p;  buf = mu buf + d (buf = d on the first step);
//          p -= lr (nesterov ? d + mu buf : buf)     (plain  p -= lr d  when mu = 0)
//   Adam   g' = g + wd p (L2, coupled);  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2
//          p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
//   AdamW  p -= lr wd p  (decoupled), then the Adam update with g' = g
// t counts the steps in which that parameter had a gradient (PyTorch's per-parameter
// "step"). Parameters whose .grad is undefined are skipped, as in PyTorch.
//
// Parameters may be float32 or float64 (mixed within one optimiser); the state (momentum /
// moments) has each parameter's dtype and is allocated in the constructor, so step()
// performs no allocation at all. The arithmetic of one update is done in the parameter's
// precision except the bias corrections and the gradient norms, which are double.
#pragma once
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/tensor.hpp"

namespace ad {

struct ParamGroup {
  std::string name;            // used in error messages and logs
  std::vector<Tensor> params;  // leaves with requires_grad
  double clip_norm = 0;        // > 0: rescale this group's gradient to L2 norm <= clip_norm
  double lr_scale = 1;         // this group's lr = lr_scale * the lr passed to step()
  // weight decay for this group; NaN = the optimiser's default
  double weight_decay = std::numeric_limits<double>::quiet_NaN();

  ParamGroup(std::string name_, std::vector<Tensor> params_, double clip_norm_ = 0, double lr_scale_ = 1,
             double weight_decay_ = std::numeric_limits<double>::quiet_NaN())
      : name(std::move(name_)), params(std::move(params_)), clip_norm(clip_norm_), lr_scale(lr_scale_),
        weight_decay(weight_decay_) {}
};

// ---- gradient norms and clipping ---------------------------------------------------------
// L2 norm of the concatenation of all defined .grad of `params` (computed in double).
double grad_norm(const std::vector<Tensor>& params);
// PyTorch's clip_grad_norm_: if the norm exceeds max_norm, every gradient is multiplied by
// max_norm / (norm + 1e-6). Returns the norm before clipping. A non-finite norm throws
// ad::Error naming `what` and the first parameter whose gradient is non-finite.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, const std::string& what = "params");

// ---- learning-rate schedules ----------------------------------------------------------------
// lr_at(base, step, total) for step in [0, total):
//   warmup (W = warmup_steps if > 0, else floor(warmup_frac * total)):
//     step < W:  base * (step + 1) / W          (the first step already moves)
//   then t = step - W, T = total - W:
//     constant:  base
//     linear:    base * (final_frac + (1 - final_frac) (1 - t/T))
//     cosine:    base * (final_frac + (1 - final_frac) 0.5 (1 + cos(pi t / T)))
// so lr_at(base, total, total) = final_frac * base for linear and cosine.
struct LrSchedule {
  enum class Kind { constant, linear, cosine };
  Kind kind = Kind::constant;
  double final_frac = 0;     // linear / cosine end at final_frac * base
  double warmup_frac = 0;    // fraction of total steps spent in linear warmup
  int64_t warmup_steps = 0;  // > 0 overrides warmup_frac

  double lr_at(double base_lr, int64_t step, int64_t total_steps) const;
  int64_t warmup_for(int64_t total_steps) const;
  // "constant" | "linear" | "cosine"; anything else throws ad::Error listing the choices.
  static Kind parse_kind(const std::string& name);
};
const char* schedule_kind_name(LrSchedule::Kind k);

// ---- optimisers -------------------------------------------------------------------------------
class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Clips the groups that have clip_norm > 0 (recording every group's pre-clip norm, see
  // last_grad_norm), then updates every parameter with a gradient using learning rate
  // lr * group.lr_scale.
  void step(double lr);
  void step() { step(default_lr_); }
  // Sets every stored gradient to zero, keeping the buffers (no allocation next backward).
  void zero_grad();

  // Checkpointing: the optimiser's state as named tensors (moments, momentum buffers, step
  // counts), e.g. to store next to the parameters with save_safetensors, and its inverse.
  // Names are "<kind>.<group>.<index>.<buffer>" plus "<kind>.param_steps" and
  // "optimizer.steps_taken". Loading checks every name and shape (the groups must be built
  // the same way) and converts dtypes; resumed training then continues bit-identically.
  virtual std::map<std::string, Tensor> state() const;
  virtual void load_state(const std::map<std::string, Tensor>& state);

  const std::vector<ParamGroup>& groups() const { return groups_; }
  // Gradient L2 norm of group g before clipping, from the last step() (0 before any step).
  double last_grad_norm(size_t g) const { return last_norms_.at(g); }
  int64_t steps_taken() const { return steps_taken_; }
  double default_lr() const { return default_lr_; }

 protected:
  // One parameter's update; `slot` indexes the per-parameter state in the group order.
  virtual void update(size_t slot, Tensor& p, double lr, double weight_decay) = 0;
  double group_weight_decay(const ParamGroup& g) const;
  // "<kind>.<group>.<index>." for parameter `slot`
  std::string slot_prefix(const char* kind, size_t slot) const;
  static const Tensor& state_entry(const std::map<std::string, Tensor>& st, const std::string& name,
                                   const Shape& shape);

  std::vector<ParamGroup> groups_;
  std::vector<double> last_norms_;
  double default_lr_ = 1e-3;
  double default_wd_ = 0;
  int64_t steps_taken_ = 0;
};

struct SgdConfig {
  double lr = 1e-2;
  double momentum = 0;
  double weight_decay = 0;  // L2 (coupled), as torch.optim.SGD
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, SgdConfig cfg = {});

 protected:
  void update(size_t slot, Tensor& p, double lr, double weight_decay) override;

 public:
  std::map<std::string, Tensor> state() const override;
  void load_state(const std::map<std::string, Tensor>& state) override;

 private:
  SgdConfig cfg_;
  std::vector<Tensor> momentum_;  // one per parameter (undefined when momentum = 0)
  std::vector<uint8_t> has_buf_;
};

struct AdamConfig {
  double lr = 1e-3;
  std::pair<double, double> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0;  // Adam: L2 added to the gradient; AdamW: decoupled decay
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, AdamConfig cfg = {});
  const AdamConfig& config() const { return cfg_; }
  // The moment estimates of parameter `slot` (group order), for inspection and checkpoints.
  const Tensor& exp_avg(size_t slot) const { return m_.at(slot); }
  const Tensor& exp_avg_sq(size_t slot) const { return v_.at(slot); }
  int64_t param_steps(size_t slot) const { return t_.at(slot); }
  // Restores a parameter's step count when resuming from a checkpoint (the moments are
  // restored by writing into exp_avg / exp_avg_sq, which share the state's storage).
  void set_param_steps(size_t slot, int64_t t) { t_.at(slot) = t; }
  std::map<std::string, Tensor> state() const override;
  void load_state(const std::map<std::string, Tensor>& state) override;

 protected:
  Adam(std::vector<ParamGroup> groups, AdamConfig cfg, bool decoupled);
  void update(size_t slot, Tensor& p, double lr, double weight_decay) override;

 private:
  AdamConfig cfg_;
  bool decoupled_ = false;
  std::vector<Tensor> m_, v_;  // first / second moments, one per parameter
  std::vector<int64_t> t_;     // per-parameter step count for the bias corrections
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamConfig cfg = {}) : Adam(std::move(groups), cfg, true) {}
};

}  // namespace ad
