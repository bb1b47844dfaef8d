// Check 2: circuits in superposition (METHODS.md section 6) — the table rows of `pd bounds` for
// the rotation construction (rotation.hpp) and its capacity, with plots.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "experiments/bounds/report.hpp"
#include "experiments/bounds/rotation.hpp"

namespace pd::bounds {

// Capacity: largest T (geometric bisection over feasible packings) whose mean active MSE_x at
// layer L is <= target; and the T at which the METHODS.md formula reaches the target.
int largest_T_meeting(CircuitConfig cfg, double target, int T_lo, int T_hi, int steps);
double predicted_T_max(const CircuitConfig& cfg, double target);

// Every circuits / capacity row, with the given construction's defaults (published unless told
// otherwise), plus the fixed-embedding contrast rows.
void run_circuits(bool quick, std::uint64_t seed, Construction construction, const std::string& out_dir,
                  std::vector<CheckRow>& rows);

}  // namespace pd::bounds
