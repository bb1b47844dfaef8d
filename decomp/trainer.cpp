#include "decomp/trainer.hpp"

#include <chrono>
#include <cmath>

namespace decomp {

using ad::Tensor;

ad::LrSchedule lr_schedule(const TrainConfig& t) {
  ad::LrSchedule s;
  s.kind = ad::LrSchedule::parse_kind(t.schedule);
  s.final_frac = t.final_frac;
  s.warmup_frac = t.warmup_frac;
  return s;
}

// A non-finite training loss: the message names the step and every term's value, then
// replays the step's loss with the engine's NaN guard on, which names the first op whose
// output was not finite (with its shapes). Nothing is written: the caller stops.
[[noreturn]] static void fail_non_finite(const SPD& spd, const Batch& b, double frac, ad::Rng rng, int64_t step,
                                         const std::map<std::string, double>& vals) {
  std::string msg = "SPD training: the loss is not finite at step " + std::to_string(step) + " (";
  bool first = true;
  for (const auto& kv : vals) {
    msg += (first ? "" : ", ") + kv.first + " = " + std::to_string(kv.second);
    first = false;
  }
  msg += ")";
  try {
    ad::NanGuardScope guard;
    spd.total_loss(b, frac, rng, nullptr, false);
  } catch (const ad::Error& e) {
    ad::fail(msg + "; first non-finite op: " + e.what());
  }
  ad::fail(msg);
}

int64_t train_spd(SPD& spd, ad::Rng& rng, TrainLog* log,
                  const std::function<void(int64_t, const std::map<std::string, double>&)>& progress,
                  const TrainHooks* hooks) {
  const TrainConfig& tc = spd.cfg.train;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<Tensor> comp = spd.cm.component_params(), cip = spd.cm.ci_params();
  const int64_t start = hooks ? hooks->start_step : 0;
  const int64_t end = hooks && hooks->stop_after >= 0 ? std::min(hooks->stop_after, tc.steps) : tc.steps;
  if (start < 0 || start > tc.steps)
    ad::fail("train_spd: resume step " + std::to_string(start) + " outside [0, " + std::to_string(tc.steps) + "]");
  if (tc.faith_warmup_steps > 0 && start == 0) {
    // AdamW on U, V alone towards W (METHODS 3.4, faithfulness warmup).
    ad::AdamW warm({ad::ParamGroup("components", comp)},
                   ad::AdamConfig{tc.faith_warmup_lr, {0.9, 0.999}, 1e-8, tc.faith_warmup_wd});
    for (int64_t s = 0; s < tc.faith_warmup_steps; ++s) {
      warm.zero_grad();
      ad::backward(faithfulness(spd.cm));
      warm.step(tc.faith_warmup_lr);
    }
  }
  // Adam (no weight decay) with separate gradient-norm clipping for components and CI fns.
  ad::Adam opt({ad::ParamGroup("components", comp, tc.clip_components), ad::ParamGroup("ci_fns", cip, tc.clip_ci)},
               ad::AdamConfig{tc.lr, {0.9, 0.999}, 1e-8, 0.0});
  if (hooks && hooks->restore_optimizer) hooks->restore_optimizer(opt);
  const ad::LrSchedule sched = lr_schedule(tc);
  TrainLog no_log;
  if (!log) log = &no_log;
  const double seconds_before = log->seconds;  // time of the steps before a resume
  auto seconds_now = [&] {
    return seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  int64_t step = start;
  for (; step < end; ++step) {
    const double frac = (double)step / (double)std::max<int64_t>(1, tc.steps);
    const bool log_now = step % tc.log_every == 0 || step + 1 == tc.steps;
    Batch b = spd.target.sample(tc.batch_size, rng);
    opt.zero_grad();
    std::map<std::string, double> vals;
    const ad::Rng rng_at_step = rng;  // to replay this step if its loss is not finite
    Tensor loss = spd.total_loss(b, frac, rng, &vals, log_now);
    if (!std::isfinite(vals["total"])) fail_non_finite(spd, b, frac, rng_at_step, step, vals);
    ad::backward(loss);
    const double lr = sched.lr_at(tc.lr, step, tc.steps);
    opt.step(lr);
    if (log_now) {
      vals["lr"] = lr;
      vals["grad_norm_components"] = opt.last_grad_norm(0);
      vals["grad_norm_ci"] = opt.last_grad_norm(1);
      log->steps.push_back(step);
      for (auto& kv : vals) log->values[kv.first].push_back(kv.second);
      if (progress) progress(step, vals);
    }
    const bool stopping = step + 1 == end && end < tc.steps;
    if (hooks && hooks->checkpoint &&
        (stopping || (tc.checkpoint_every > 0 && (step + 1) % tc.checkpoint_every == 0 && step + 1 < tc.steps))) {
      log->seconds = seconds_now();
      hooks->checkpoint(step + 1, opt, rng, *log);
    }
  }
  log->seconds = seconds_now();
  return step;
}

}  // namespace decomp
