// Tutorial chapter 4 (docs/tutorial.md): APD on TMS 5-2 (METHODS 2).
// Components of rank m spanning both layers, the gradient attributions of one input, the batch
// top-k mask, each loss term's value, a short training run and the top-k mask on one-hot inputs.
//   make tutorial && build/tutorial/04_apd
#include <chrono>
#include <cstdio>

#include "autodiff/error.hpp"
#include "decomp/apd.hpp"
#include "decomp/attributions.hpp"
#include "decomp/evaluate.hpp"
#include "decomp/run/target.hpp"
#include "decomp/trainer.hpp"
#include "experiments/decomp_report.hpp"

using decomp::to_mat;

int main() try {
  // ---- 0. The shipped config, with a short schedule --------------------------------------------
  // experiments/configs/apd_tms_5-2.json: C 5 components of rank m 3, gradient attributions of
  // the target, batch top-k 0.211, faithfulness 1, minimality 1, simplicity 0.7 (p 1), lr 3e-2
  // after a 5% warmup. Its 20k steps at batch 2048 become 500 steps at batch 1024.
  const std::string path = "experiments/configs/apd_tms_5-2.json";
  models::json j = models::read_json_file(path);
  j["train"]["steps"] = 500, j["train"]["batch_size"] = 1024, j["train"]["log_every"] = 100;
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, path);
  const decomp::LoadedTarget lt = decomp::load_target(j, path, "", ad::DType::f32, /*quiet=*/true);

  // ---- 1. Components: P_{c,l} = A_{c,l} B_{c,l}, stored as the columns of V and rows of U -------
  ad::Rng init_rng(cfg.seed);
  decomp::APD apd(lt.target, cfg, init_rng);
  const decomp::LayerComponents& L1 = apd.cm.layers[0];
  std::printf("C = %lld components of rank m = %lld; linear1: V [%lld, %lld] = [A_1 | ... | A_C], U [%lld, %lld]\n",
              (long long)apd.C(), (long long)apd.m(), (long long)L1.V.size(0), (long long)L1.V.size(1),
              (long long)L1.U.size(0), (long long)L1.U.size(1));
  std::printf("linear2 is tied: P_{c,2} = P_{c,1}^T; faithfulness at init = %.5f\n",
              decomp::faithfulness(apd.cm).item());

  // ---- 2. Attributions of one input and the batch top-k mask -------------------------------------
  // prepare(): the target pass, A_c(x) = sum_o (sum_l g_{l,o} . (a_l P_{c,l}))^2 for every row,
  // then s = 1 on the K = floor(0.211 B) largest entries of the whole [B, C] matrix.
  ad::Rng rng(7);
  const decomp::Batch batch = lt.target.sample(1024, rng);
  const decomp::StepState st = apd.prepare(batch, rng);
  int64_t row = 0;  // the first example with an active feature
  while (ad::sum(ad::slice(batch.x, 0, row, row + 1)).item() == 0) ++row;
  auto row_of = [&](const ad::Tensor& t) { return to_mat(ad::slice(t, 0, row, row + 1)); };
  std::printf("\nexample %lld\n", (long long)row);
  std::printf("x                        %s", decomp::mat_text(row_of(batch.x), {}, 3).c_str());
  std::printf("gradient attributions    %s", decomp::mat_text(row_of(st.attributions), {}, 4).c_str());
  const ad::Tensor act = decomp::activation_attributions(apd, st);  // the "activation" alternative
  std::printf("activation attributions  %s", decomp::mat_text(row_of(act), {}, 4).c_str());
  std::printf("top-k mask s             %s", decomp::mat_text(row_of(st.topk), {}, 0).c_str());
  const int64_t K = decomp::batch_topk_k(cfg.apd.topk, batch.size, apd.C());
  std::printf("batch top-k: K = floor(%.3f * %lld) = %lld of %lld entries kept; mean kept per example %.3f\n",
              cfg.apd.topk, (long long)batch.size, (long long)K, (long long)(batch.size * apd.C()),
              ad::sum(st.topk).item() / (double)batch.size);

  // ---- 3. Every configured loss term on this batch -----------------------------------------------
  std::printf("\nloss terms at init (batch of 1024)\n");
  for (const auto& t : cfg.losses)
    std::printf("  %-16s coeff %-5g value %.4e\n", t->label.c_str(), t->coeff, apd.term(*t, batch, st, 0.0, rng).item());

  // ---- 4. Training: Adam on A and B ----------------------------------------------------------------
  std::printf("\ntraining (%lld steps)\n", (long long)cfg.train.steps);
  decomp::TrainLog log;
  const auto t0 = std::chrono::steady_clock::now();
  decomp::train_decomposition(apd, &log, [](int64_t step, const std::map<std::string, double>& v) {
    std::printf("  step %4lld  total %.4e  faithfulness %.3e  minimality %.3e  simplicity %.3e\n", (long long)step,
                v.at("total"), v.at("faithfulness"), v.at("minimality"), v.at("simplicity"));
  });

  // ---- 5. Evaluation: the top-k mask on one-hot inputs (one component per row) ------------------
  ad::Rng eval_rng(cfg.seed + 1000003);
  const decomp::EvalResult ev = decomp::evaluate(apd, eval_rng);
  const decomp::LayerEval& e = ev.layers[0];  // every layer shows the same mask: components span layers
  std::printf("\ntop-k mask on one-hot inputs (rows: features; columns: components, matched first)\n");
  std::printf("%s", decomp::mat_text(e.ci_onehot, e.order, 0, 0.5, "feature ").c_str());
  std::printf("identity error %lld\n", (long long)e.identity_error);
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n%s", pd::result_table(apd, ev, wall_s).c_str());
  return 0;
} catch (const ad::Error& e) {
  std::fprintf(stderr, "04_apd: %s (run it from the repository root)\n", e.what());
  return 1;
}
