// Tutorial chapter 5 (docs/tutorial.md): VPD on TMS 5-2 (METHODS 4).
// One global CI function over both layers' inputs, the persistent adversarial sources and what a
// few ascent steps on them do to the reconstruction, each loss term's value, a short training
// run, and the causal importances on one-hot inputs.
//   make tutorial && build/tutorial/05_vpd
#include <chrono>
#include <cstdio>

#include "autodiff/error.hpp"
#include "decomp/evaluate.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/run/target.hpp"
#include "decomp/trainer.hpp"
#include "decomp/vpd.hpp"
#include "experiments/decomp_report.hpp"

using decomp::to_mat;

int main() try {
  // ---- 0. The shipped config, with chapter 3's short schedule ------------------------------------
  // experiments/configs/vpd_tms_5-2.json: chapter 3's SPD (C 20, delta, importance minimality 3e-3,
  // stochastic + layerwise reconstruction) with one global shared-MLP CI function (hidden 64) and
  // a persistent_pgd_recon term (one source per example, 2 inner ascent steps per training step).
  // Its 10k steps at lr 1e-3, batch 4096, become 500 steps at lr 3e-2 (cosine to 0), batch 1024.
  const std::string path = "experiments/configs/vpd_tms_5-2.json";
  models::json j = models::read_json_file(path);
  j["train"]["steps"] = 500, j["train"]["lr"] = 0.03, j["train"]["batch_size"] = 1024, j["train"]["log_every"] = 100;
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, path);
  const decomp::LoadedTarget lt = decomp::load_target(j, path, "", ad::DType::f32, /*quiet=*/true);

  // ---- 1. One CI function for all layers ------------------------------------------------------
  // z_1, z_2 = split(MLP(concat(rms(x_1), rms(x_2)))): the first matrix is stored as one block per
  // layer (the blocks' sum over layers is the concatenated product), the last split per layer.
  ad::Rng init_rng(cfg.seed);
  decomp::VPD vpd(lt.target, cfg, init_rng);
  const std::vector<ad::Tensor> ci_params = vpd.cm.global_ci->parameters();
  const std::vector<std::string> ci_names = vpd.cm.ci_param_names();
  std::printf("global CI function: %zu tensors\n", ci_params.size());
  for (size_t i = 0; i < ci_params.size(); ++i)
    std::printf("  %-28s %s\n", ci_names[i].c_str(), ci_params[i].shape().str().c_str());

  // ---- 2. Persistent sources and what ascent does to them -------------------------------------
  // Masks m = g + (1 - g) s with sources s in [0, 1] that are trained to HURT: Adam ascent on
  // D(f(x | m), f(x)). A copy of the run's sources, so the training below starts where
  // `pd decompose` starts.
  ad::Rng rng(7);
  const decomp::Batch batch = lt.target.sample(1024, rng);
  const decomp::StepState st = vpd.prepare(batch, rng);
  decomp::PersistentSources adv = vpd.adversaries.at("persistent_pgd_recon");
  for (auto* v : {&adv.s, &adv.s_delta, &adv.m1, &adv.m2})
    for (ad::Tensor& x : *v) x = ad::clone(x);
  adv.t = ad::clone(adv.t);
  std::printf("\nsources of linear1 %s, of its delta %s (scope %s)\n", adv.s[0].shape().str().c_str(),
              adv.s_delta[0].shape().str().c_str(), adv.p.scope.c_str());
  auto D_at_sources = [&] {
    const auto masks = decomp::source_masks(st.g_lower, adv.s, adv.s_delta, {}, cfg.delta);
    return vpd.distance(vpd.forward_masked(batch, masks, &st.cache), st.target_out).item();
  };
  int64_t row = 0;  // the first example with an active feature
  while (ad::sum(ad::slice(batch.x, 0, row, row + 1)).item() == 0) ++row;
  const std::vector<int64_t> first8 = {0, 1, 2, 3, 4, 5, 6, 7};
  const int64_t srow = row % adv.s[0].size(0);  // example b reads source row b mod n
  auto s_row = [&] { return decomp::mat_text(to_mat(ad::slice(adv.s[0], 0, srow, srow + 1)), first8, 3); };
  std::printf("example %lld, linear1, components 0-7\n", (long long)row);
  std::printf("s before     %s", s_row().c_str());
  std::printf("ascent step 0: D(f(x | m), f(x)) = %.4e\n", D_at_sources());
  for (int k = 1; k <= 20; ++k) {
    adv.ascend(decomp::source_gradients(vpd, batch, st, adv.s, adv.s_delta, {}), adv.p.lr);
    if (k == 1 || k == 2 || k == 5 || k == 20) std::printf("ascent step %d: D = %.4e\n", k, D_at_sources());
  }
  std::printf("s after 20   %s", s_row().c_str());

  // ---- 3. Every configured loss term on this batch ---------------------------------------------
  std::printf("\nloss terms at init (batch of 1024)\n");
  for (const auto& t : cfg.losses)
    std::printf("  %-28s coeff %-6g value %.4e\n", t->label.c_str(), t->coeff, vpd.term(*t, batch, st, 0.0, rng).item());

  // ---- 4. Training: per step 2 inner ascent steps, the loss, Adam, then one more ascent step ----
  std::printf("\ntraining (200 warmup steps, then %lld steps)\n", (long long)cfg.train.steps);
  decomp::TrainLog log;
  const auto t0 = std::chrono::steady_clock::now();
  decomp::train_decomposition(vpd, &log, [](int64_t step, const std::map<std::string, double>& v) {
    std::printf("  step %4lld  total %.4e  stochastic_recon %.3e  persistent_pgd_recon %.3e\n", (long long)step,
                v.at("total"), v.at("stochastic_recon"), v.at("persistent_pgd_recon"));
  });

  // ---- 5. Evaluation: CI on one-hot inputs, the same table as `pd decompose` ---------------------
  ad::Rng eval_rng(cfg.seed + 1000003);
  const decomp::EvalResult ev = decomp::evaluate(vpd, eval_rng);
  for (const decomp::LayerEval& e : ev.layers) {
    std::printf("\nCI of %s on one-hot inputs (rows: features; columns: the 5 matched components, then 3 more)\n",
                e.name.c_str());
    const std::vector<int64_t> shown(e.order.begin(), e.order.begin() + 8);  // of 20 columns
    std::printf("%s", decomp::mat_text(e.ci_onehot, shown, 2, 0.005, "feature ").c_str());
    std::printf("%s: identity-CI error %lld, alive components %lld\n", e.name.c_str(), (long long)e.identity_error,
                (long long)e.alive);
  }
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n%s", pd::result_table(vpd, ev, wall_s).c_str());
  return 0;
} catch (const ad::Error& e) {
  std::fprintf(stderr, "05_vpd: %s (run it from the repository root)\n", e.what());
  return 1;
}
