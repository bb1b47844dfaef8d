// Check 2: circuits in superposition — the corrected construction of Linsefors & Bushnaq
// (METHODS.md section 6) with the conditional-rotation circuit (d = 4), run as a real ReLU
// network built from the construction's weights.
//
// Layout of the large network: D neurons per layer split into d blocks of K = D/d. Large neuron
// (i, n) = block i (the small circuit's neuron index), position n in [0, K); flat index i*K + n.
// Circuit t owns positions E_t (S of them) in every block, so each small neuron has exactly S
// copies, and readout of small neuron i of circuit t is the mean of its S copies.
//
// The rotation circuit (our concrete choice where METHODS.md is silent; see docs/bounds.md):
//   small neurons 0,1 = on-indicator pair (h1, h2), on = h1 - h2;
//   small neurons 2,3 = p = x + alpha*on*(1,1), x on the unit circle, alpha = 2 by default
//   (the constants 9 = 1 + 2 alpha^2 and 8 = 2 alpha^2 in the predicted MSE imply alpha = 2).
//   One layer:  h1 = ReLU(2 on - 0.5),  h2 = ReLU(2 on - 1.5)
//               -> on' = h1 - h2 is a step: 0 for on <= 0.25, 1 for on >= 0.75 (slope 2 between),
//                  so on-indicator noise below 0.25 is removed every layer;
//               p' = ReLU(R_{t,l} p + alpha (1 - R_{t,l} 1) on)  = ReLU(R x + alpha on 1)
//                  which rotates x by the circuit's fixed random angle when on = 1 and is 0 when off.
//   An active circuit starts from a0 = (1.5, 0.5, x + alpha 1) (the fixed point of the on pair).
//   Layer 1 is fed from a per-circuit input space (weights E_tn w^1_{t,ij}), so the input itself is
//   not superposed; every later layer reads only the superposed large-network activations.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/error.hpp"
#include "experiments/bounds/report.hpp"
#include "experiments/bounds/rng.hpp"

namespace pd::bounds {

constexpr int kRotD = 4;  // small-circuit width of the rotation circuit

// E in {0,1}^{T x K} stored as the S positions of each row (sorted).
struct Embedding {
  int K = 0, S = 0;
  std::vector<std::vector<int>> rows;  // [T][S]
  int T() const { return static_cast<int>(rows.size()); }
};

// build_embedding could not place every circuit: T too close to the packing limit.
struct PackingError : ad::Error {
  using ad::Error::Error;
};

// Balanced greedy packing: each circuit takes the S least-used positions (random tie-break) that
// keep every pair of positions in at most one circuit. Throws PackingError if it cannot place a
// circuit (T too close to the packing limit K(K-1)/(S(S-1))), ad::Error on bad arguments.
Embedding build_embedding(int K, int T, int S, Rng& rng);
// Largest possible T for (K, S): K(K-1)/(S(S-1)).
double packing_limit(int K, int S);
// Measured mean over circuit pairs of (|E_t ∩ E_u| / S)^2 — what delta = d/D - 1/(S T) predicts.
double measured_delta(const Embedding& E);

// C_nm = 1 if some circuit contains both n and m (n = m: some circuit contains n), else -chi,
// chi = N_in / (N_all - N_in), so sum_nm C_nm = 0 (mean cross-circuit coupling via wbar is zero).
struct Coupling {
  int K = 0;
  std::vector<double> C;  // [K, K] row-major
  double chi = 0.0;
  long n_in = 0;  // number of linked (n, m) entries, diagonal included
};
Coupling build_coupling(const Embedding& E);

struct CircuitConfig {
  int D = 1000, T = 557, S = 6, L = 5, z = 2;
  double alpha = 2.0;
  // Threshold beta >= 0 on the x-storing pair: p' = ReLU(R x + alpha on + beta on - beta). Exact
  // for the small circuit (on is 0 or 1); beta > 0 makes inactive p-neurons drop noise < beta the
  // way the on-indicator step does. Default 0 = the plain construction in METHODS.md.
  double beta = 0.0;
  int trials = 200;  // forward passes (random active sets), run as one batch
  std::uint64_t seed = 1;
};

// The T rotation circuits: angle theta[l][t] (l = 0..L-1 for layers 1..L), uniform on [0, 2pi).
struct RotationCircuits {
  int T = 0, L = 0;
  double alpha = 2.0, beta = 0.0;
  std::vector<double> theta;  // [L, T]
  // Small weight matrix w^l_t [4 out, 4 in] (row-major) for layer l in 1..L.
  std::array<double, 16> weight(int t, int l) const;
  std::array<double, 4> bias() const { return {-0.5, -1.5, -beta, -beta}; }
};

// The large network for one configuration.
struct SuperposedNetwork {
  CircuitConfig cfg;
  int K = 0;
  Embedding E;
  Coupling C;
  RotationCircuits circuits;
  // W_l [D, D] for l >= 2 (layer 1 reads the per-circuit input space):
  //   W_{(i,n),(j,m)} = (1/S) [ sum_t E_tn dw^l_{t,ij} E_tm + wbar^l_ij C_nm ].
  std::vector<double> layer_weight(int l) const;
};
SuperposedNetwork build_network(const CircuitConfig& cfg);

struct LayerStats {
  int layer = 0;
  // Measured: mean over (trial, circuit) of squared readout errors.
  double mse_x_active = 0, mse_x_inactive = 0;  // ||p_hat - p_true||^2 over the two x-storing neurons
  double on_active = 0, on_inactive = 0;        // (on_hat - on_true)^2, on_hat = h1_hat - h2_hat
  double active_fraction = 0;                   // fraction of the D large neurons with activation > 0
  // Predicted (METHODS.md section 6 with delta = d/D - 1/(S T)).
  double pred_x_active = 0, pred_x_inactive = 0, pred_on_active_bound = 0, pred_on_inactive = 0,
         pred_active_fraction = 0;
};
struct RotationResult {
  CircuitConfig cfg;
  double delta = 0, delta_measured = 0, chi = 0, load = 0;  // load = T (d/D)^2
  std::vector<LayerStats> layers;                          // layers 1..L
};

// Predicted per-layer numbers for layer l (1-based).
LayerStats predict_layer(const CircuitConfig& cfg, int l, double delta);
double predicted_delta(const CircuitConfig& cfg);

// Runs cfg.trials forward passes of the real ReLU network on random active sets (z distinct
// circuits, x uniform on the unit circle) and measures readout errors per layer.
RotationResult run_rotation(const SuperposedNetwork& net);
RotationResult run_rotation(const CircuitConfig& cfg);

std::string format_rotation(const RotationResult& r);

// Capacity: largest T (bisection over feasible packings) whose mean active MSE_x at layer L is
// <= target; and the T at which the METHODS.md formula reaches the target.
int largest_T_meeting(CircuitConfig cfg, double target, int T_lo, int T_hi, int steps);
double predicted_T_max(const CircuitConfig& cfg, double target);

// Derived here: the same-position coupling contribution to active MSE_x at layer 2 (see .cpp).
double same_position_coupling_mse(const SuperposedNetwork& net);

void run_circuits(bool quick, std::uint64_t seed, const std::string& out_dir, std::vector<CheckRow>& rows);

}  // namespace pd::bounds
