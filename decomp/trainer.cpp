#include "decomp/trainer.hpp"

#include <cmath>

namespace decomp {

using ad::Tensor;

void faithfulness_warmup(SPD& spd) {
  const TrainConfig& tc = spd.cfg.train;
  ad::AdamW warm({ad::ParamGroup("components", spd.cm.component_params())},
                 ad::AdamConfig{tc.faith_warmup_lr, {0.9, 0.999}, 1e-8, tc.faith_warmup_wd});
  for (int64_t s = 0; s < tc.faith_warmup_steps; ++s) {
    warm.zero_grad();
    ad::backward(faithfulness(spd.cm));
    warm.step(tc.faith_warmup_lr);
  }
}

namespace {

double frac_at(const TrainConfig& tc, int64_t step) { return (double)step / (double)std::max<int64_t>(1, tc.steps); }

// A non-finite training loss: the message names the step and every term's value, then
// replays the step (same seed, same step: same batch and masks) with the engine's NaN guard
// on, which names the first op whose output was not finite (with its shapes).
[[noreturn]] void fail_non_finite(const SPD& spd, int64_t step, const std::map<std::string, double>& vals) {
  std::string msg = "SPD training: the loss is not finite at step " + std::to_string(step) + " (";
  bool first = true;
  for (const auto& kv : vals) {
    msg += (first ? "" : ", ") + kv.first + " = " + std::to_string(kv.second);
    first = false;
  }
  msg += ")";
  try {
    ad::NanGuardScope guard;
    ad::Rng rng(ad::step_seed(spd.cfg.seed, step, kDecomposeStream));
    const Batch b = spd.target.sample(spd.cfg.train.batch_size, rng);
    spd.total_loss(b, frac_at(spd.cfg.train, step), rng, nullptr, false);
  } catch (const ad::Error& e) {
    ad::fail(msg + "; first non-finite op: " + e.what());
  }
  ad::fail(msg);
}

}  // namespace

int64_t train_spd(SPD& spd, TrainLog* log,
                  const std::function<void(int64_t, const std::map<std::string, double>&)>& progress,
                  const TrainHooks* hooks) {
  const TrainConfig& tc = spd.cfg.train;
  const int64_t start = hooks ? hooks->start_step : 0;
  if (tc.faith_warmup_steps > 0 && start == 0) faithfulness_warmup(spd);
  ad::AdamW opt({ad::ParamGroup("components", spd.cm.component_params(), tc.clip_for("components")),
                 ad::ParamGroup("ci_fns", spd.cm.ci_params(), tc.clip_for("ci_fns"))},
                ad::AdamConfig{tc.lr, {tc.beta1, tc.beta2}, tc.eps, tc.weight_decay});
  if (hooks && hooks->restore_optimizer) hooks->restore_optimizer(opt);
  TrainLog no_log;
  if (!log) log = &no_log;
  ad::TrainLoopOptions lo;
  lo.seed = spd.cfg.seed;
  lo.stream = kDecomposeStream;
  lo.start_step = start;
  lo.stop_after = hooks ? hooks->stop_after : -1;
  lo.on_log = progress;
  lo.on_non_finite = [&](int64_t step, const std::map<std::string, double>& v) { fail_non_finite(spd, step, v); };
  if (hooks && hooks->checkpoint) lo.checkpoint = [&](int64_t next) { hooks->checkpoint(next, opt, *log); };
  return ad::run_train_loop(opt, tc, [&](int64_t step, ad::Rng& rng, bool log_now, std::map<std::string, double>& v) {
    const Batch b = spd.target.sample(tc.batch_size, rng);
    return spd.total_loss(b, frac_at(tc, step), rng, &v, log_now);
  }, *log, lo);
}

}  // namespace decomp
