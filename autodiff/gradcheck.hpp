// Finite-difference audit of reverse-mode gradients (float64).
//
// For a function f of some input tensors, draws a random upstream gradient R (never a plain
// sum, which would hide transposition and broadcasting mistakes), and compares
//   analytic:  d<f(x), R>/dx  from backward(f(x), R)
//   numeric:   (<f(x + eps e_i), R> - <f(x - eps e_i), R>) / (2 eps)   per coordinate
// with |a - n| <= atol + rtol |n| (torch.autograd.gradcheck's eps 1e-6, atol 1e-5,
// rtol 1e-3 by default). It also pre-fills every input's .grad with a random sentinel and
// checks backward ADDED to it, adds a second path into every input so an op that overwrites
// its input gradient instead of accumulating is caught, checks that inputs not requiring a gradient never got one,
// and that two forward evaluations agree bit for bit.
//
// Absolute tolerances assume gradients of order 1. A loss whose gradients are all far below
// atol (a decomposition step's are) passes whatever backward computes, so audits of such
// losses set `scaled`: each input is judged against its own gradient scale instead (see
// GradcheckOptions::scaled).
#pragma once
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "autodiff/tensor.hpp"

namespace ad {

struct GradcheckOptions {
  double eps = 1e-6, atol = 1e-5, rtol = 1e-3;
  uint64_t seed = 12345;
  int64_t max_coords_per_input = -1;  // -1: every coordinate; else a sample
  // Per-input scale. With s = max |analytic gradient| of the input, the test becomes
  // |a - n| <= atol s + rtol |n|, which is the unscaled test applied to the loss divided by s
  // (gradients of order 1, whatever the loss's units). A sample then takes the largest-|a|
  // coordinates for half its size (where a wrong backward shows most) and draws the rest
  // from the other nonzero coordinates (zeros only when too few are nonzero); an input whose
  // analytic gradient is entirely zero fails, because nothing was checked.
  bool scaled = false;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_err = 0, max_rel_err = 0;
  int64_t coords_checked = 0;
  // Scaled mode, per input: max |analytic gradient| (0 if it needs none), and how many
  // coordinates have a nonzero analytic gradient.
  std::vector<double> grad_scale;
  std::vector<int64_t> nonzero_grad;
  std::string report;  // what failed, naming input and coordinate
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;
GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opt = GradcheckOptions());

// Op names whose backward ran inside any gradcheck so far (for the audit-coverage test).
std::set<std::string>& audited_ops();

}  // namespace ad
