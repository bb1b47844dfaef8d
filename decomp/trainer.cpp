#include "decomp/trainer.hpp"

#include <cmath>

namespace decomp {

using ad::Tensor;

void faithfulness_warmup(Decomposition& dec) {
  const TrainConfig& tc = dec.cfg.train;
  ad::AdamW warm({ad::ParamGroup("components", dec.cm.component_params())},
                 ad::AdamConfig{tc.faith_warmup_lr, {0.9, 0.999}, 1e-8, tc.faith_warmup_wd});
  for (int64_t s = 0; s < tc.faith_warmup_steps; ++s) {
    warm.zero_grad();
    ad::backward(faithfulness(dec.cm));
    warm.step(tc.faith_warmup_lr);
  }
}

namespace {

double frac_at(const TrainConfig& tc, int64_t step) { return (double)step / (double)std::max<int64_t>(1, tc.steps); }

// A non-finite training loss: the message names the step and every term's value, then
// replays the step (same seed, same step: same batch and masks) with the engine's NaN guard
// on, which names the first op whose output was not finite (with its shapes).
[[noreturn]] void fail_non_finite(const Decomposition& dec, int64_t step, const std::map<std::string, double>& vals) {
  std::string msg = std::string(dec.method_name()) + " training: the loss is not finite at step " + std::to_string(step) + " (";
  bool first = true;
  for (const auto& kv : vals) {
    msg += (first ? "" : ", ") + kv.first + " = " + std::to_string(kv.second);
    first = false;
  }
  msg += ")";
  try {
    ad::NanGuardScope guard;
    ad::Rng rng(ad::step_seed(dec.cfg.seed, step, kDecomposeStream));
    const Batch b = dec.target.sample(dec.cfg.train.batch_size, rng);
    dec.total_loss(b, frac_at(dec.cfg.train, step), rng, nullptr, false);
  } catch (const ad::Error& e) {
    ad::fail(msg + "; first non-finite op: " + e.what());
  }
  ad::fail(msg);
}

}  // namespace

int64_t train_decomposition(Decomposition& dec, TrainLog* log,
                  const std::function<void(int64_t, const std::map<std::string, double>&)>& progress,
                  const TrainHooks* hooks) {
  const TrainConfig& tc = dec.cfg.train;
  const int64_t start = hooks ? hooks->start_step : 0;
  if (tc.faith_warmup_steps > 0 && start == 0) faithfulness_warmup(dec);
  ad::AdamW opt({ad::ParamGroup("components", dec.cm.component_params(), tc.clip_for("components")),
                 ad::ParamGroup("ci_fns", dec.cm.ci_params(), tc.clip_for("ci_fns"))},
                ad::AdamConfig{tc.lr, {tc.beta1, tc.beta2}, tc.eps, tc.weight_decay});
  if (hooks && hooks->restore_optimizer) hooks->restore_optimizer(opt);
  TrainLog no_log;
  if (!log) log = &no_log;
  ad::TrainLoopOptions lo;
  lo.seed = dec.cfg.seed;
  lo.stream = kDecomposeStream;
  lo.start_step = start;
  lo.stop_after = hooks ? hooks->stop_after : -1;
  lo.on_log = progress;
  lo.after_backward = [&] { dec.after_backward(); };
  lo.on_non_finite = [&](int64_t step, const std::map<std::string, double>& v) { fail_non_finite(dec, step, v); };
  if (hooks && hooks->checkpoint) lo.checkpoint = [&](int64_t next) { hooks->checkpoint(next, opt, *log); };
  return ad::run_train_loop(opt, tc, [&](int64_t step, ad::Rng& rng, bool log_now, std::map<std::string, double>& v) {
    dec.before_step();
    const Batch b = dec.target.sample(tc.batch_size, rng);
    return dec.total_loss(b, frac_at(tc, step), rng, &v, log_now);
  }, *log, lo);
}

}  // namespace decomp
