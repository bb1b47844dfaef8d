// Tutorial chapter 6 (docs/tutorial.md): circuits in superposition (METHODS 6).
// One conditional-rotation circuit (4 neurons) alone, run by hand; then T = 400 of them in one
// ReLU network of D = 2000 neurons (the published construction), measured against the predicted
// error per layer; then the load at which the prediction breaks, and the construction with one
// fixed embedding for contrast.
//   make tutorial && build/tutorial/06_circuits
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "autodiff/error.hpp"
#include "experiments/bounds/rotation.hpp"

using pd::bounds::CircuitConfig;
using pd::bounds::Construction;

// One layer of the small circuit: a' = ReLU(w a + bias).
static std::array<double, 4> small_layer(const pd::bounds::RotationCircuits& rc, const std::array<double, 4>& a) {
  const auto w = rc.weight(0, 1);
  const auto bias = rc.bias();
  std::array<double, 4> out{};
  for (int i = 0; i < 4; ++i) {
    double pre = bias[i];
    for (int j = 0; j < 4; ++j) pre += w[i * 4 + j] * a[j];
    out[i] = std::max(pre, 0.0);
  }
  return out;
}

static CircuitConfig config(int D, int T, int z, int L, Construction c) {
  CircuitConfig cfg = pd::bounds::with_construction_defaults(CircuitConfig{}, c);
  cfg.D = D, cfg.T = T, cfg.S = 6, cfg.z = z, cfg.L = L, cfg.trials = 200, cfg.seed = 1;
  return cfg;
}

int main() try {
  // ---- 1. One circuit alone ----------------------------------------------------------------
  // Neurons (a0, a1, a2, a3): on = a0 - a1; (a2, a3) = x + on (1, 1); rotation by 0.5 rad.
  pd::bounds::RotationCircuits rc;
  rc.T = 1, rc.L = 1, rc.alpha = 1.0, rc.beta = 1.0, rc.theta = {0.5};
  std::array<double, 4> a = {1.5, 0.5, 1.0 + 1.0, 0.0 + 1.0};  // on, x = (1, 0)
  std::printf("one circuit, on, x = (1, 0), rotated by 0.5 rad per layer:\n");
  for (int l = 1; l <= 3; ++l) {
    a = small_layer(rc, a);
    const double on = a[0] - a[1];
    std::printf("  layer %d: on = %.3f  x = (%.4f, %.4f)  exact (%.4f, %.4f)\n", l, on, a[2] - on, a[3] - on,
                std::cos(0.5 * l), std::sin(0.5 * l));
  }
  // The on-indicator is a step: noise below 0.25 is removed, above 0.75 it is restored to 1.
  for (double noisy_on : {0.2, 0.9}) {
    const auto s = small_layer(rc, {noisy_on + 0.5, 0.5, 0.0, 0.0});
    std::printf("  noisy on %.1f -> on' = %.3f\n", noisy_on, s[0] - s[1]);
  }

  // ---- 2. T = 400 circuits in D = 2000 neurons, one active at a time ---------------------------
  // Each small neuron has S = 6 copies; circuits share neurons, so a readout picks up the others.
  // delta = d/D - 1/(S T); predicted active MSE_x(l) = 9 l (z-1) delta + (l-1) T delta^2 (z + 8(z-1)).
  const auto net = pd::bounds::build_network(config(2000, 400, 1, 4, Construction::Published));
  const auto r = pd::bounds::run_rotation(net);
  std::printf("\nD=2000 T=400 S=6 z=1: delta = %.6f, T (d/D)^2 = %.4f, kappa = %.4f\n", r.delta, r.load,
              r.layers[1].link_correction);
  for (const auto& s : r.layers)
    std::printf("  layer %d: active MSE_x %.5f (pred %.5f)  inactive MSE_x %.5f (pred %.5f)\n", s.layer,
                s.mse_x_active, s.pred_x_active, s.mse_x_inactive, s.pred_x_inactive);

  // ---- 3. Two active circuits: low load holds, high load leaks ----------------------------------
  for (int T : {125, 750}) {
    const auto rz = pd::bounds::run_rotation(config(1000, T, 2, 4, Construction::Published));
    const auto& s = rz.layers.back();
    std::printf("z=2 T=%d load %.4f, layer 4: active %.4f (pred %.4f, ratio %.2f), inactive ratio %.2f, "
                "active neurons %.3f (pred %.3f)\n",
                T, rz.load, s.mse_x_active, s.pred_x_active, s.mse_x_active / s.pred_x_active,
                s.mse_x_inactive / s.pred_x_inactive, s.active_fraction, s.pred_active_fraction);
  }

  // ---- 4. Contrast: one embedding for every layer -------------------------------------------------
  const auto rf = pd::bounds::run_rotation(config(2000, 400, 1, 4, Construction::FixedEmbedding));
  std::printf("\nfixed embedding, D=2000 T=400 z=1: layer 4 active MSE_x %.4f (%.0fx the prediction)\n",
              rf.layers[3].mse_x_active, rf.layers[3].mse_x_active / rf.layers[3].pred_x_active);
  return 0;
} catch (const ad::Error& e) {
  std::fprintf(stderr, "06_circuits: %s\n", e.what());
  return 1;
}
