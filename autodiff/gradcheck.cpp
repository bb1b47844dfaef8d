#include "autodiff/gradcheck.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"

namespace ad {

std::set<std::string>& audited_ops() {
  static std::set<std::string> ops;
  return ops;
}
static void record_op(const char* op) { audited_ops().insert(op); }

// <f(x), R> evaluated without recording.
static double projected(const GradcheckFn& f, const std::vector<Tensor>& in, const Tensor& R) {
  NoGradGuard ng;
  Tensor y = f(in);
  const double *py = y.data<double>(), *pr = R.data<double>();
  double acc = 0;
  for (int64_t i = 0; i < y.numel(); ++i) acc += py[i] * pr[i];
  return acc;
}

// The coordinates to difference: all, a uniform sample, or (scaled) the largest |analytic|
// half of the sample plus a uniform draw from the other nonzero coordinates.
static std::vector<int64_t> sample_coords(const std::vector<double>& analytic, const GradcheckOptions& opt, Rng& rng) {
  const int64_t n = (int64_t)analytic.size(), m = opt.max_coords_per_input;
  std::vector<int64_t> all(n);
  for (int64_t i = 0; i < n; ++i) all[i] = i;
  if (m < 0 || m >= n) return all;
  if (!opt.scaled) {
    auto perm = rng.permutation(n);
    return std::vector<int64_t>(perm.begin(), perm.begin() + m);
  }
  const int64_t top = (m + 1) / 2;
  auto larger = [&](int64_t i, int64_t j) { return std::abs(analytic[i]) > std::abs(analytic[j]); };
  std::partial_sort(all.begin(), all.begin() + top, all.end(), larger);
  // The rest, nonzero before zero, each group in random order (partial Fisher-Yates).
  auto nonzero_end = std::partition(all.begin() + top, all.end(), [&](int64_t i) { return analytic[i] != 0; });
  for (int64_t j = top; j < m; ++j) {
    const int64_t end = all.begin() + j < nonzero_end ? nonzero_end - all.begin() : n;
    std::swap(all[j], all[j + (int64_t)rng.below((uint64_t)(end - j))]);
  }
  all.resize(m);
  return all;
}

static std::vector<double> values_of(const Tensor& t) {
  std::vector<double> v((size_t)t.numel());
  std::memcpy(v.data(), t.data<double>(), v.size() * sizeof(double));
  return v;
}

// Scaled mode: d<f(x), R>/dx_k by a plain backward (graph retained for the audited pass). The
// audited pass subtracts order-1 sentinels, whose rounding (~1e-16) would swamp gradients of
// 1e-12 and hide exact zeros; these clean values give each input's scale and its zeros.
static std::vector<std::vector<double>> clean_gradients(const Tensor& y, const Tensor& R, const std::vector<Tensor>& inputs) {
  for (Tensor x : inputs) x.clear_grad();
  backward(sum(mul(y, R)), Tensor(), /*retain_graph=*/true);
  std::vector<std::vector<double>> g(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor x = inputs[k];
    g[k] = x.requires_grad() && x.grad().defined() ? values_of(x.grad()) : std::vector<double>((size_t)x.numel(), 0.0);
    x.clear_grad();
  }
  return g;
}

// Central differences of <f, R> at the sampled coordinates of input k against `analytic`.
static void check_input(const GradcheckFn& f, const std::vector<Tensor>& inputs, size_t k, const Tensor& R,
                        const std::vector<double>& analytic, const std::vector<int64_t>& coords, double atol,
                        const GradcheckOptions& opt, GradcheckResult& res, std::ostringstream& rep) {
  Tensor x = inputs[k];
  double* px = x.data<double>();
  for (int64_t i : coords) {
    const double orig = px[i];
    px[i] = orig + opt.eps;
    const double lp = projected(f, inputs, R);
    px[i] = orig - opt.eps;
    const double lm = projected(f, inputs, R);
    px[i] = orig;
    const double a = analytic[(size_t)i], numeric = (lp - lm) / (2 * opt.eps);
    const double err = std::abs(a - numeric);
    res.max_abs_err = std::max(res.max_abs_err, err);
    if (std::abs(numeric) > atol) res.max_rel_err = std::max(res.max_rel_err, err / std::abs(numeric));
    ++res.coords_checked;
    if (!(err <= atol + opt.rtol * std::abs(numeric))) {
      if (res.ok || rep.tellp() < 2000)
        rep << "input " << k << " " << x.shape().str() << " coord " << i << ": analytic " << a << " numeric "
            << numeric << " (|diff| " << err << ")\n";
      res.ok = false;
    }
  }
}

GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  GradcheckResult res;
  std::ostringstream rep;
  for (size_t k = 0; k < inputs.size(); ++k)
    if (inputs[k].dtype() != DType::f64) fail("gradcheck: input " + std::to_string(k) + " is not float64");
  Rng rng(opt.seed);

  Tensor y = f(inputs);
  if (y.dtype() != DType::f64) fail("gradcheck: output is not float64");
  {  // determinism: a second evaluation must match exactly
    NoGradGuard ng;
    Tensor y2 = f(inputs);
    if (y2.shape() != y.shape() || std::memcmp(y.raw(), y2.raw(), y.node()->bytes()) != 0) {
      res.ok = false;
      rep << "forward is not deterministic (two evaluations differ)\n";
    }
  }
  if (!y.requires_grad()) fail("gradcheck: output does not require a gradient");
  Tensor R = rand_normal(y.shape(), 0, 1, rng, DType::f64);
  set_backward_observer(record_op);
  std::vector<std::vector<double>> clean;
  if (opt.scaled) clean = clean_gradients(y, R, inputs);
  res.grad_scale.assign(inputs.size(), 0.0);
  res.nonzero_grad.assign(inputs.size(), 0);
  for (size_t k = 0; k < clean.size(); ++k)
    for (double g : clean[k]) res.grad_scale[k] = std::max(res.grad_scale[k], std::abs(g)), res.nonzero_grad[k] += g != 0;

  // Sentinel: backward must add to what is already there. Scaled, the sentinel and the side
  // path below are of the input's gradient scale, so subtracting them costs no precision.
  std::vector<Tensor> sentinel(inputs.size()), side(inputs.size());
  auto noise = [&](size_t k) {
    Tensor r = rand_normal(inputs[k].shape(), 0, 1, rng, DType::f64);
    if (opt.scaled) r = mul_scalar(r, res.grad_scale[k]);
    return r;
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor x = inputs[k];
    x.clear_grad();
    if (x.requires_grad()) {
      sentinel[k] = noise(k);
      x.set_grad(sentinel[k]);
    }
  }
  // Backward of  <f(x), R> + sum_k <x_k, S_k>: the second path reaches each input first in
  // reverse order, so an op that overwrites its input's gradient instead of adding loses
  // S_k and fails the comparison below.
  Tensor total = sum(mul(y, R));
  for (size_t k = 0; k < inputs.size(); ++k)
    if (inputs[k].requires_grad()) {
      side[k] = noise(k);
      total = add(total, sum(mul(inputs[k], side[k])));
    }
  backward(total);
  set_backward_observer(nullptr);

  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor x = inputs[k];
    if (!x.requires_grad()) {
      if (x.grad().defined()) {
        res.ok = false;
        rep << "input " << k << " does not require a gradient but received one\n";
      }
      continue;
    }
    std::vector<double> analytic = values_of(x.grad());
    const double *ps = sentinel[k].data<double>(), *pd = side[k].data<double>();
    for (size_t i = 0; i < analytic.size(); ++i) analytic[i] = analytic[i] - ps[i] - pd[i];
    x.clear_grad();
    if (opt.scaled && res.grad_scale[k] == 0) {
      res.ok = false;
      rep << "input " << k << " " << x.shape().str() << ": the analytic gradient is zero everywhere, so nothing can be checked\n";
      continue;
    }
    const double atol = opt.scaled ? opt.atol * res.grad_scale[k] : opt.atol;
    const std::vector<int64_t> coords = sample_coords(opt.scaled ? clean[k] : analytic, opt, rng);
    check_input(f, inputs, k, R, analytic, coords, atol, opt, res, rep);
  }
  res.report = rep.str();
  return res;
}

}  // namespace ad
