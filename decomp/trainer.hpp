// Training a decomposition (any method) on the one training loop (autodiff/train_loop.hpp): the optional
// faithfulness warmup (METHODS 3.4: AdamW on U, V towards W), then AdamW (weight decay 0 by
// default, i.e. Adam) over the components and CI functions with the configured schedule and
// per-group clipping (METHODS 3.5). Each step starts with dec.before_step(); dec.after_backward()
// runs between backward and the optimiser step, dec.after_step() after it. Step t's batch and masks come from
// Rng(step_seed(cfg.seed, t, kDecomposeStream)).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autodiff/optim.hpp"
#include "autodiff/train_loop.hpp"
#include "decomp/decomposition.hpp"

namespace decomp {

using TrainLog = ad::TrainLog;
inline constexpr uint64_t kDecomposeStream = 1;

// Resuming and checkpointing a run (the file: decomp/run/checkpoint.hpp). A run stopped at
// step k and resumed gives the same bits as an uninterrupted run, provided the caller restored
// the parameters and the log as they were at step k and restore_optimizer loads the state.
struct TrainHooks {
  int64_t start_step = 0;   // > 0: resume here (the faithfulness warmup is not repeated)
  int64_t stop_after = -1;  // >= 0: stop after this many total steps (checkpoint called)
  std::function<void(ad::Optimizer&)> restore_optimizer;  // called once, before the first step
  // Called every train.checkpoint_every steps and at an early stop: next_step is the first
  // step not yet taken.
  std::function<void(int64_t next_step, const ad::Optimizer&, const TrainLog&)> checkpoint;
};

// Faithfulness warmup (if configured and start_step = 0), then cfg.train.steps of training.
// `log` may be null. progress(steps_done, row) is called at log rows. Returns the number of
// steps taken in total (< cfg.train.steps only when hooks->stop_after stopped it).
int64_t train_decomposition(Decomposition& dec, TrainLog* log,
                  const std::function<void(int64_t, const std::map<std::string, double>&)>& progress = {},
                  const TrainHooks* hooks = nullptr);

// The faithfulness warmup alone (METHODS 3.4): faith_warmup_steps of AdamW on U, V.
void faithfulness_warmup(Decomposition& dec);

}  // namespace decomp
