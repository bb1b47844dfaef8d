// Check 3b: the U-AND construction of computation in superposition (Hänni, Mendel, Vaintrob,
// Chan 2024), METHODS.md section 6. d neurons h_i = ReLU(sum_a W_ia f_a - 1) with W_ia in {0,1},
// P(W_ia = 1) = p; the AND of features a and b is read as the mean of h over the neurons wired to
// both (N_ab). Inputs: m boolean features, exactly l of them on.
#pragma once
#include <string>
#include <vector>

#include "experiments/bounds/report.hpp"
#include "experiments/bounds/rng.hpp"

namespace pd::bounds {

struct UAnd {
  int m = 0, d = 0;
  double p = 0.0;
  std::vector<std::vector<int>> wired;  // [m] sorted neuron indices i with W_ia = 1
};
UAnd build_uand(int m, int d, double p, Rng& rng);

// Measured U-AND readout error (a result, not an exception).
struct UAndErrorStats {
  double rms = 0;        // RMS of (y_hat_ab - AND(a,b)), pair classes both/one/none weighted equally
  double noise_rms = 0;  // same with each class's mean error removed (the fluctuating part)
  double bias_both = 0, bias_one = 0, bias_none = 0;  // mean error per class
  double empty_fraction = 0;  // fraction of read pairs with no neuron wired to both (read as 0)
};
// trials random inputs with exactly l active features; per input: every active pair (both), l
// pairs with one active feature, l pairs with none.
UAndErrorStats measure_uand(const UAnd& net, int l, int trials, Rng& rng);

void run_uand(bool quick, std::uint64_t seed, const std::string& out_dir, std::vector<CheckRow>& rows);

}  // namespace pd::bounds
