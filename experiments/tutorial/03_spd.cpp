// Tutorial chapter 3 (docs/tutorial.md): SPD on TMS 5-2, one piece at a time (METHODS 3).
// The components, one CI function evaluation, one stochastic mask, each loss term's value, a
// short training run, and the causal importances on one-hot inputs printed as text.
//   make tutorial && build/tutorial/03_spd
#include <chrono>
#include <cstdio>

#include "autodiff/error.hpp"
#include "decomp/evaluate.hpp"
#include "decomp/run/target.hpp"
#include "decomp/spd.hpp"
#include "decomp/trainer.hpp"
#include "experiments/decomp_report.hpp"

using decomp::to_mat;

int main() try {
  // ---- 0. The shipped config, with a short schedule --------------------------------------------
  // experiments/configs/spd_tms_5-2.json: C 20, mlp[16] CI functions, importance minimality 3e-3
  // (p 1), stochastic + layerwise reconstruction, delta component, 200 faithfulness warmup steps.
  // Its 10k steps at lr 1e-3 become 500 steps at lr 3e-2 (cosine to 0), batch 1024.
  const std::string path = "experiments/configs/spd_tms_5-2.json";
  models::json j = models::read_json_file(path);
  j["train"]["steps"] = 500, j["train"]["lr"] = 0.03, j["train"]["batch_size"] = 1024, j["train"]["log_every"] = 100;
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, path);
  // The target: trained from experiments/configs/tms_5-2.json (10k steps, under a second).
  const decomp::LoadedTarget lt = decomp::load_target(j, path, "", ad::DType::f32, /*quiet=*/true);

  // ---- 1. Components: V [d_in, C], U [C, d_out] per layer, W ~ (V U)^T ------------------------
  ad::Rng init_rng(cfg.seed);
  decomp::SPD spd(lt.target, cfg, init_rng);
  for (const decomp::LayerComponents& L : spd.cm.layers)
    std::printf("layer %s: W [%lld, %lld], C = %lld, %s\n", L.name.c_str(), (long long)L.d_out, (long long)L.d_in,
                (long long)L.C, L.tied_src < 0 ? "V [d_in, C] and U [C, d_out] of its own" : "tied: V = U1^T, U = V1^T");
  std::printf("faithfulness at init = %.5f\n", decomp::faithfulness(spd.cm).item());

  // ---- 2. One CI function evaluation -------------------------------------------------------
  // prepare(): the target pass (each layer's input x), h = x V, z = Gamma(h) (one scalar MLP per
  // component), g = lower_leaky(z) for masks, g_upper for importance minimality.
  ad::Rng rng(7);
  const decomp::Batch batch = lt.target.sample(1024, rng);
  const decomp::StepState st = spd.prepare(batch, rng);
  int64_t row = 0;  // the first example with an active feature
  while (ad::sum(ad::slice(batch.x, 0, row, row + 1)).item() == 0) ++row;
  auto row_of = [&](const ad::Tensor& t) { return to_mat(ad::slice(t, 0, row, row + 1)); };
  const std::vector<int64_t> first8 = {0, 1, 2, 3, 4, 5, 6, 7};
  std::printf("\nexample %lld, layer linear1, components 0-7\n", (long long)row);
  std::printf("x       %s", decomp::mat_text(row_of(batch.x), {}, 3).c_str());
  std::printf("h = xV  %s", decomp::mat_text(row_of(st.cache.h[0]), first8, 3).c_str());
  std::printf("z       %s", decomp::mat_text(row_of(st.z[0]), first8, 3).c_str());
  std::printf("g       %s", decomp::mat_text(row_of(st.g_lower[0]), first8, 3).c_str());

  // ---- 3. One stochastic mask m = g + (1 - g) r, and the masked forward ------------------------
  const decomp::MaskSources src = spd.draw_sources(st, rng);
  const std::vector<decomp::LayerMask> masks = spd.masks_from(st, src);
  std::printf("r       %s", decomp::mat_text(row_of(src.r[0]), first8, 3).c_str());
  std::printf("m       %s", decomp::mat_text(row_of(masks[0].m), first8, 3).c_str());
  std::printf("m_delta (this example, linear1) = %.3f\n", row_of(masks[0].m_delta)(0, 0));
  const ad::Tensor out = spd.forward_masked(batch, masks, &st.cache);
  std::printf("MSE(f(x | this mask), f_target(x)) over the batch = %.3e\n", spd.distance(out, st.target_out).item());

  // ---- 4. Every configured loss term on this batch (coeff 0: a monitor, not trained) -----------
  std::printf("\nloss terms at init (batch of 1024)\n");
  for (const auto& t : cfg.losses)
    std::printf("  %-28s coeff %-6g value %.4e\n", t->label.c_str(), t->coeff, spd.term(*t, batch, st, 0.0, rng).item());

  // ---- 5. Training: faithfulness warmup, then Adam on U, V and the CI functions ----------------
  std::printf("\ntraining (200 warmup steps, then %lld steps)\n", (long long)cfg.train.steps);
  decomp::TrainLog log;
  const auto t0 = std::chrono::steady_clock::now();
  decomp::train_decomposition(spd, &log, [](int64_t step, const std::map<std::string, double>& v) {
    std::printf("  step %4lld  total %.4e  importance_minimality %.4f  stochastic_recon %.3e\n", (long long)step,
                v.at("total"), v.at("importance_minimality"), v.at("stochastic_recon"));
  });

  // ---- 6. Evaluation: CI on one-hot inputs (0.75 e_i), the same table as `pd decompose` --------
  ad::Rng eval_rng(cfg.seed + 1000003);
  const decomp::EvalResult ev = decomp::evaluate(spd, eval_rng);
  for (const decomp::LayerEval& e : ev.layers) {
    std::printf("\nCI of %s on one-hot inputs (rows: features; columns: the 5 matched components, then 3 more)\n",
                e.name.c_str());
    const std::vector<int64_t> shown(e.order.begin(), e.order.begin() + 8);  // of 20 columns
    std::printf("%s", decomp::mat_text(e.ci_onehot, shown, 2, 0.005, "feature ").c_str());
    std::printf("%s: identity-CI error %lld, alive components %lld\n", e.name.c_str(), (long long)e.identity_error,
                (long long)e.alive);
  }
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n%s", pd::result_table(spd, ev, wall_s).c_str());
  return 0;
} catch (const ad::Error& e) {
  std::fprintf(stderr, "03_spd: %s (run it from the repository root)\n", e.what());
  return 1;
}
