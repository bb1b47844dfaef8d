// Check 3a: the toy-model-of-superposition sparsity sweep (Elhage et al. 2022 settings, METHODS.md
// section 1.1): n = 20 features, m = 5 hidden, importance I_i = 0.7^i, x_i ~ U[0,1] with
// probability 1 - S (S = sparsity), h = W x, y = ReLU(W^T h + b), loss = E[sum_i I_i (x_i - y_i)^2].
// Trained with the project's TMS model and training loop (models::TMS, models::train). tms_loss
// below is the same objective written directly on the engine, kept as a tested reference.
// Measures ||W||_F^2 against m, the number of represented features, and the feature
// dimensionalities D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 (plateaus at 1, 1/2, 2/5, ...).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/tensor.hpp"
#include "experiments/bounds/report.hpp"

namespace pd::bounds {

struct TmsSweepConfig {
  int n_features = 20, n_hidden = 5;
  double importance_decay = 0.7;
  int steps = 4000, batch = 1024;
  double lr = 5e-3;  // Adam, constant
  int restarts = 1;  // independent inits per sparsity; the lowest final loss is kept
};

struct TmsRun {
  double sparsity = 0;
  double final_loss = 0;
  std::vector<double> W;  // [n_hidden, n_features] row-major (column i = feature i's direction)
  std::vector<double> b;  // [n_features]
  double frob2 = 0;       // ||W||_F^2
  std::vector<double> norms2;  // ||W_i||^2 per feature
  std::vector<double> dims;    // D_i per feature (0 for features with ||W_i|| ~ 0)
  int represented = 0;         // features with ||W_i|| > 0.5
};

// Importance-weighted TMS loss on the engine: mean over batch and features of I_i (y_i - x_i)^2
// (= E[sum_i I_i (x_i - y_i)^2] / n). W: [m, n], b: [n], x: [B, n], importance: [n].
ad::Tensor tms_loss(const ad::Tensor& W, const ad::Tensor& b, const ad::Tensor& x, const ad::Tensor& importance);

// D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 for every feature column i of W [m, n].
std::vector<double> feature_dimensionalities(const std::vector<double>& W, int m, int n);

TmsRun train_tms(const TmsSweepConfig& cfg, double sparsity, std::uint64_t seed);

void run_tms(bool quick, std::uint64_t seed, const std::string& out_dir, std::vector<CheckRow>& rows);

}  // namespace pd::bounds
