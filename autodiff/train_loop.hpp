// The one training loop, for target models and decompositions alike, and its checkpoint file.
//
// Randomness: step t draws everything from Rng(step_seed(seed, t, stream)), so a step's
// batch and masks depend only on (seed, step) -- a resumed run sees the same data without
// storing any generator state, and log steps that evaluate extra monitors change nothing else.
//
// Logging: after step t (0-based), when (t + 1) % log_every == 0 or t + 1 == steps, one log
// row labelled t + 1 (steps completed): every value the step function reported is averaged
// over the steps of the row's window where it was reported (monitors reported only at log
// steps are their one value), plus "lr" and "grad_norm_<group>" at that step and "time_s".
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autodiff/autograd.hpp"
#include "autodiff/optim.hpp"
#include "autodiff/random.hpp"
#include "autodiff/safetensors.hpp"

namespace ad {

// splitmix64 over (seed, step, stream): nearby steps and streams get unrelated generators.
uint64_t step_seed(uint64_t seed, int64_t step, uint64_t stream = 0);

// Every run's schedule: one struct, one spelling of each key (read from JSON by
// models::read_train_schedule, which refuses the old spellings).
struct TrainSchedule {
  int64_t steps = 1000, batch_size = 256;
  double lr = 1e-3;
  std::string schedule = "constant";  // constant | linear | cosine (after the warmup)
  double warmup_frac = 0;             // fraction of steps in linear warmup
  double final_lr_frac = 0;           // linear / cosine end at final_lr_frac * lr
  double weight_decay = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  // Gradient-norm clipping, each parameter group on its own (0 = off): grad_clip for every
  // group, or per group name (grad_clip_group, e.g. "components", "ci_fns").
  double grad_clip = 0;
  std::map<std::string, double> grad_clip_group;
  double clip_for(const std::string& group) const;
  int64_t log_every = 100;
  int64_t checkpoint_every = 0;       // > 0: checkpoint every N steps
  LrSchedule lr_schedule() const;
};

struct TrainLog {
  std::vector<int64_t> steps;                         // steps completed at each row
  std::map<std::string, std::vector<double>> values;  // per key, one entry per row it appears in
  double seconds = 0;                                 // training time so far (over resumes)
  // The open window: per key, the sum and count of values since the last row.
  std::map<std::string, std::pair<double, int64_t>> window;
};

// What one step computes: the loss to minimise (graph built), with named values reported into
// `values` (log = true at log steps: report the monitors too). rng is the step's generator.
using TrainStepFn = std::function<Tensor(int64_t step, Rng& rng, bool log, std::map<std::string, double>& values)>;

struct TrainLoopOptions {
  uint64_t seed = 0, stream = 1;
  int64_t start_step = 0;   // resume here (the optimiser state is the caller's to restore)
  int64_t stop_after = -1;  // >= 0: stop after this many total steps (then checkpoint called)
  std::function<void(int64_t steps_done, const std::map<std::string, double>& row)> on_log;
  // Called every checkpoint_every steps and at an early stop with the first step not taken.
  std::function<void(int64_t next_step)> checkpoint;
  // Names the run in errors: "<what>: the loss is not finite at step N ...".
  std::string what = "training";
  // Called between backward and the optimiser step (e.g. to project gradients).
  std::function<void()> after_backward;
  // Called after the optimiser step (e.g. state that updates from this step's gradients).
  std::function<void()> after_step;
};

// Runs steps [start_step, min(stop_after, steps)). Returns the number of steps completed. A
// non-finite loss stops it through fail_non_finite, replaying the step (same seed and step: same
// batch and masks) under the NaN guard.
int64_t run_train_loop(Optimizer& opt, const TrainSchedule& s, const TrainStepFn& step, TrainLog& log,
                       const TrainLoopOptions& o);

// A non-finite loss at `step`: throws ad::Error "<what>: the loss is not finite at step N (k = v,
// ...)" with the reported values, then "; first non-finite op: <the NaN guard's message>" when
// `replay` (which must recompute the same loss) throws under the engine's NaN guard.
[[noreturn]] void fail_non_finite(const std::string& what, int64_t step, const std::map<std::string, double>& values,
                                  const std::function<void()>& replay);

// ---- checkpoints -------------------------------------------------------------------------------
// checkpoint.safetensors: tensors "param/<name>" (every tensor the run restores) and
// "optim/<name>" (Optimizer::state()); metadata "format" = kCheckpointFormat, "kind" (who
// wrote it: "train" | "decompose"), "step" (first step not taken), "log" (TrainLog with its
// open window), "wall_s", plus the writer's own fields. Written atomically.
inline constexpr const char* kCheckpointFormat = "pd-checkpoint-v2";

struct Checkpoint {
  std::string path, kind;
  int64_t step = 0;
  double wall_s = 0;
  TrainLog log;
  SafeTensors file;  // tensors and every metadata field
  const std::string& meta(const std::string& key) const;  // throws naming the file and key
};

void save_checkpoint(const std::string& path, const std::string& kind,
                     const std::vector<std::pair<std::string, Tensor>>& params, const Optimizer& opt, int64_t step,
                     const TrainLog& log, double wall_s, const std::map<std::string, std::string>& meta);
// Reads and validates the file; `kind` must match. Errors name the file and field.
Checkpoint read_checkpoint(const std::string& path, const std::string& kind);
Checkpoint read_checkpoint(const std::string& path, const std::string& kind, SafeTensors file);
// Copies "param/<name>" into each tensor (shapes and dtypes must match) and the optimiser state.
void restore_checkpoint(const Checkpoint& ck, const std::vector<std::pair<std::string, Tensor>>& params, Optimizer* opt);

}  // namespace ad
