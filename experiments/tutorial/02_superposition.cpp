// Tutorial chapter 2 (docs/tutorial.md): superposition in the toy model (METHODS 1.1).
// Train TMS 5-2 (5 features in 2 dimensions) and look at its five columns: a pentagon. Then
// the sparsity sweep of Elhage et al. (20 features in 5 dimensions): as inputs get sparser the
// model stores more features than it has dimensions, and each feature's dimensionality D_i
// sticks at 1, 1/2, 2/5.
//   make tutorial && build/tutorial/02_superposition
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "autodiff/error.hpp"
#include "experiments/bounds/tms_sweep.hpp"
#include "models/toy_models.hpp"
#include "models/train.hpp"

int main() try {
  // ---- 1. Train TMS 5-2 with the shipped run config ------------------------------------------
  // h = W x, y = ReLU(W^T h + b); x: each feature on with p = 0.05, value U[0, 1]; MSE to x;
  // AdamW lr 5e-3, 10k steps, batch 1024 (experiments/configs/tms_5-2.json).
  const models::RunConfig rc = models::load_run_config("experiments/configs/tms_5-2.json");
  models::TrainOptions quiet;
  quiet.progress = false;
  models::TrainResult r = models::train(rc, quiet);
  const auto& tms = dynamic_cast<const models::TMS&>(*r.model);
  std::printf("TMS 5-2 trained: %lld steps, eval loss %.5f (a model storing only 2 features: 0.0100)\n",
              (long long)r.steps_done, r.metrics["eval_loss"].get<double>());

  // ---- 2. The five columns W[:, i]: norms and angles --------------------------------------------
  const std::vector<double> W = tms.W().to_vector(), b = tms.b().to_vector();  // W: [2, 5] row-major
  const int n = 5;
  std::vector<double> angle(n);
  std::printf("feature  |W_i|  angle(deg)   b_i\n");
  for (int i = 0; i < n; ++i) {
    angle[i] = std::atan2(W[n + i], W[i]) * 180.0 / M_PI;
    std::printf("  %d     %.3f   %7.1f   %7.3f\n", i, std::hypot(W[i], W[n + i]), angle[i], b[i]);
  }
  // Going round the circle, the gaps between neighbouring columns: a regular pentagon has 72 each.
  std::vector<double> sorted = angle;
  std::sort(sorted.begin(), sorted.end());
  double min_gap = 360, max_gap = 0;
  for (int i = 0; i < n; ++i) {
    const double gap = i + 1 < n ? sorted[i + 1] - sorted[i] : sorted[0] + 360 - sorted[i];
    min_gap = std::min(min_gap, gap), max_gap = std::max(max_gap, gap);
  }
  std::printf("gaps between neighbouring columns: min %.1f deg, max %.1f deg\n", min_gap, max_gap);
  // D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2: a feature alone in its dimension has D_i = 1;
  // five features sharing two dimensions evenly have D_i = 2/5.
  const std::vector<double> d5 = pd::bounds::feature_dimensionalities(W, 2, n);
  std::printf("dimensionality D_i:");
  for (double d : d5) std::printf(" %.3f", d);
  std::printf("\n");

  // ---- 3. The sparsity sweep: 20 features, 5 dimensions, importance 0.7^i -----------------------
  // pd::bounds::train_tms trains the same models::TMS through the same models::train (float64,
  // Adam, importance-weighted MSE); `pd bounds --only tms` runs the full sweep.
  pd::bounds::TmsSweepConfig cfg;  // n = 20, m = 5, importance 0.7^i, lr 5e-3
  cfg.steps = 2000;
  const std::vector<double> sparsities = {0.0, 0.7, 0.9, 0.97, 0.99};
  std::printf("\nsparsity sweep (n = 20, m = 5, %d steps each)\n", cfg.steps);
  std::printf("     S  1/(1-S)   loss     ||W||_F^2  represented  D_i of represented features\n");
  int near_one = 0, near_half = 0, near_two_fifths = 0;
  for (double S : sparsities) {
    const pd::bounds::TmsRun run = pd::bounds::train_tms(cfg, S, 1);
    std::printf("  %.2f  %7.1f  %.5f  %8.3f  %6d        ", S, 1 / (1 - S), run.final_loss, run.frob2, run.represented);
    std::vector<double> dims;
    for (int i = 0; i < cfg.n_features; ++i)
      if (run.norms2[i] > 0.25) dims.push_back(run.dims[i]);  // represented: ||W_i||^2 > 1/4
    std::sort(dims.rbegin(), dims.rend());
    for (double d : dims) {
      std::printf(" %.2f", d);
      near_one += std::fabs(d - 1.0) < 0.05;
      near_half += std::fabs(d - 0.5) < 0.05;
      near_two_fifths += std::fabs(d - 0.4) < 0.03;
    }
    std::printf("\n");
  }
  std::printf("plateaus: D_i within 0.05 of 1: %d, of 1/2: %d, within 0.03 of 2/5: %d\n", near_one, near_half,
              near_two_fifths);
  return 0;
} catch (const ad::Error& e) {
  std::fprintf(stderr, "02_superposition: %s (run it from the repository root)\n", e.what());
  return 1;
}
