// Circuits in superposition: T conditional-rotation circuits (d = 4) embedded in one large ReLU
// network of width D, run for real (D x D weights, a batch of random active sets), read out per
// circuit and layer, and compared with the predicted errors of METHODS.md section 6.
//
// Two constructions (`pd bounds rotation --construction NAME`):
//   published       (default) the construction of the authors' public reference code as METHODS.md
//                   section 6 details it: a new, row-permuted embedding per layer; the mean
//                   weights coupled through the capped link matrix with its correction kappa; the
//                   pair stores x + on (1, 1) (alpha = 1) over a bias -b (b = 1); the readout
//                   subtracts the estimated on value.
//   fixed-embedding one embedding E for every layer, mean weight = the circuits' average coupled
//                   through C with chi (mean over all entries zero), alpha = 2, b = 0, a new
//                   rotation per circuit and layer, readout against the true on value. Kept as a
//                   contrast: its same-position coupling adds an error term the theory does not
//                   have (same_position_coupling_mse, docs/bounds.md).
//
// The small circuit, neurons (a0, a1, a2, a3), on = a0 - a1, (a2, a3) = x + alpha on (1, 1):
//   a0' = ReLU(2 on - 0.5), a1' = ReLU(2 on - 1.5)   (a step: removes on-noise below 0.25)
//   (a2, a3)' = ReLU(R x + alpha on (1, 1) + b (on - 1)) = R x + alpha (1, 1) when on, 0 when off.
// Layer 1 of the large network is the identity plus the biases applied to the active circuits'
// first-layer pre-activations w_t a_0 embedded with the first embedding, so it computes one
// circuit's first layer exactly; layers 2..L are W_l A + b with the weights below.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "experiments/bounds/embedding.hpp"

namespace pd::bounds {

constexpr int kRotD = 4;  // small-circuit width of the rotation circuit

enum class Construction { Published, FixedEmbedding };
const char* construction_name(Construction c);
Construction parse_construction(const std::string& name);  // throws ad::Error naming the value

// Which random rotation a circuit applies at layer l (METHODS.md: "the random rotation R_t").
enum class Rotations { PerCircuit, PerLayer };
const char* rotations_name(Rotations r);
Rotations parse_rotations(const std::string& name);

struct CircuitConfig {
  int D = 1000, T = 557, S = 6, L = 5, z = 2;
  Construction construction = Construction::Published;
  double alpha = 1.0;  // offset: the pair stores x + alpha on (1, 1)
  double beta = 1.0;   // b: the pair's bias is -b, its lift from on is alpha + b
  Rotations rotations = Rotations::PerCircuit;
  Packing packing = Packing::Balanced;
  int trials = 200;  // forward passes (random active sets), run as one batch
  std::uint64_t seed = 1;
};
// The defaults of a construction (alpha, beta, rotations); sizes, trials and seed untouched.
CircuitConfig with_construction_defaults(CircuitConfig cfg, Construction c);

// The T rotation circuits: angle theta[l-1][t] of circuit t at layer l, uniform on [0, 2 pi).
struct RotationCircuits {
  int T = 0, L = 0;
  double alpha = 1.0, beta = 1.0;
  std::vector<double> theta;  // [L, T]
  // Small weight matrix w^l_t [4 out, 4 in] (row-major) for layer l in 1..L.
  std::array<double, 16> weight(int t, int l) const;
  // The part every circuit shares (published split): the on step and the lift (alpha + b) on.
  std::array<double, 16> shared_weight() const;
  std::array<double, 4> bias() const { return {-0.5, -1.5, -beta, -beta}; }
};

struct LayerWeights {
  std::vector<double> W;  // [D, D] row-major, row = output neuron (i, n) = i K + n
  double link_correction = 0.0;  // kappa (published) or chi (fixed-embedding)
};

struct SuperposedNetwork {
  CircuitConfig cfg;
  int K = 0;
  std::vector<Embedding> emb;  // emb[l-1]: where the circuits sit in layer l (1..L)
  RotationCircuits circuits;
  // The mean weight of layer l: shared_weight() (published) or the circuits' average (fixed).
  std::array<double, 16> mean_weight(int l) const;
  // Layer l >= 2: W[(i,n),(j,m)] = (1/S) [ C[n,m] mean[i,j] + sum_t E_l[t,n] (w_t - mean)[i,j] E_{l-1}[t,m] ]
  // with C the link matrix from emb[l-2] to emb[l-1] (build_link).
  LayerWeights layer_weight(int l) const;
};
SuperposedNetwork build_network(const CircuitConfig& cfg);

// Readout of circuit t from the activations A [D, B] (column b): est_a_i = (1/S) E[t] . A_i per
// block, est_on = est_a0 - est_a1, est_x = (est_a2, est_a3) - alpha on_ref, where on_ref is the
// estimated on (published) or the given true on (fixed-embedding).
struct CircuitEstimate {
  std::array<double, 4> a{};
  double on = 0.0;
  std::array<double, 2> x{};
};
CircuitEstimate read_circuit(const SuperposedNetwork& net, int layer, int t, const double* A, int B, int b,
                             double on_true);

struct LayerStats {
  int layer = 0;
  // Measured: means over (trial, circuit).
  double mse_x_active = 0, mse_x_inactive = 0;  // ||est_x - x||^2, ||est_x||^2 (two coordinates summed)
  double on_active = 0, on_inactive = 0;        // (1 - est_on)^2, est_on^2
  double active_fraction = 0;                   // fraction of the D large neurons with activation > 0
  double link_correction = 0;                   // kappa or chi of the layer's link matrix (0 at layer 1)
  // Predicted (METHODS.md section 6 with delta = d/D - 1/(S T)).
  double pred_x_active = 0, pred_x_inactive = 0, pred_on_active_bound = 0, pred_on_inactive = 0,
         pred_active_fraction = 0;
};
struct RotationResult {
  CircuitConfig cfg;
  double delta = 0, delta_measured = 0, load = 0;  // load = T (d/D)^2
  std::vector<LayerStats> layers;                  // layers 1..L
};

// Predicted per-layer numbers for layer l (1-based): active MSE_x(l) = c1 l (z-1) delta +
// (l-1) T delta^2 (z + c2 (z-1)) with METHODS.md's c1 = 9, c2 = 8 (published), or
// c1 = 1 + 2 alpha^2, c2 = 2 alpha^2 (fixed-embedding, where the readout keeps the offset).
LayerStats predict_layer(const CircuitConfig& cfg, int l, double delta);
double predicted_delta(const CircuitConfig& cfg);

// Runs cfg.trials forward passes of the real ReLU network on random active sets (z distinct
// circuits, x uniform on the unit circle) and measures readout errors per layer.
RotationResult run_rotation(const SuperposedNetwork& net);
RotationResult run_rotation(const CircuitConfig& cfg);

std::string format_rotation(const RotationResult& r);
// One JSON object: the parameters and `layers` (the figures of format_rotation).
std::string rotation_json(const RotationResult& r);

// Fixed-embedding only: the same-position coupling contribution to active MSE_x at layer 2.
double same_position_coupling_mse(const SuperposedNetwork& net);

}  // namespace pd::bounds
