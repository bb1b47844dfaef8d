// Training a decomposition: the optional faithfulness warmup (METHODS 3.4), then Adam over
// the components and CI functions with the configured schedule and per-group clipping
// (METHODS 3.5).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autodiff/optim.hpp"
#include "decomp/spd.hpp"

namespace decomp {

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
