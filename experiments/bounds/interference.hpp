// Check 1: interference between random unit vectors (Johnson-Lindenstrauss regime).
// METHODS.md section 6: mean cos^2 = 1/n, max |cos| ~ 2 sqrt(ln m / n), readout noise of one of
// l active features ~ sqrt(l/n), reliable readout while l << n / (c ln m) with c <= 8.
#pragma once
#include <string>
#include <vector>

#include "experiments/bounds/report.hpp"
#include "experiments/bounds/rng.hpp"

namespace pd::bounds {

// m random unit vectors in R^n: row-major [m, n], rows i.i.d. uniform on the sphere.
std::vector<double> random_unit_vectors(int n, int m, Rng& rng);

struct OverlapStats {
  double mean_cos2 = 0.0;    // mean over the m(m-1)/2 pairs of (v_i . v_j)^2
  double max_abs_cos = 0.0;  // max over pairs of |v_i . v_j|
};
// V: [m, n] unit rows. Gram matrix by cblas_dsyrk.
OverlapStats overlap_stats(const std::vector<double>& V, int n, int m);

// RMS readout of features that are NOT active when l features (value 1 each, chosen at random)
// are superposed as h = sum_active v_a and feature i is read as v_i . h. Its noise variance is
// exactly l/n in expectation, so this is the quantity the sqrt(l/n) law predicts.
double readout_noise_rms(const std::vector<double>& V, int n, int m, int l, int trials, Rng& rng);

// Fraction of trials in which thresholding every readout v_i . h at 1/2 recovers the active set
// exactly (no false positive among the m - l inactive, no miss among the l active).
double exact_recovery_rate(const std::vector<double>& V, int n, int m, int l, int trials, Rng& rng);

// Largest l with exact_recovery_rate >= reliability (bisection; recovery falls with l).
int largest_reliable_l(const std::vector<double>& V, int n, int m, int trials, double reliability, Rng& rng);

// Runs the whole check, appends rows to `rows`, writes plots into out_dir.
void run_interference(bool quick, std::uint64_t seed, const std::string& out_dir, std::vector<CheckRow>& rows);

}  // namespace pd::bounds
