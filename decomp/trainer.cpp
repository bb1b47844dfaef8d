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
    Tensor loss = faithfulness(dec.cm);
    const double v = loss.item();
    if (!std::isfinite(v))
      ad::fail_non_finite(std::string(dec.method_name()) + " faithfulness warmup (before training step 0, " +
                              std::to_string(tc.faith_warmup_steps) + " warmup steps)",
                          s, {{"faithfulness", v}}, [&] { faithfulness(dec.cm); });
    ad::backward(loss);
    warm.step(tc.faith_warmup_lr);
  }
}

namespace {

double frac_at(const TrainConfig& tc, int64_t step) { return (double)step / (double)std::max<int64_t>(1, tc.steps); }

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
  lo.after_step = [&] { dec.after_step(); };
  lo.what = std::string(dec.method_name()) + " training";
  if (hooks && hooks->checkpoint) lo.checkpoint = [&](int64_t next) { hooks->checkpoint(next, opt, *log); };
  return ad::run_train_loop(opt, tc, [&](int64_t step, ad::Rng& rng, bool log_now, std::map<std::string, double>& v) {
    dec.before_step();
    const Batch b = dec.target.sample(tc.batch_size, rng);
    return dec.total_loss(b, frac_at(tc, step), rng, &v, log_now);
  }, *log, lo);
}

}  // namespace decomp
