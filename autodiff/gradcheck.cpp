#include "autodiff/gradcheck.hpp"

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

  // Sentinel: backward must add to what is already there.
  std::vector<Tensor> sentinel(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor x = inputs[k];
    x.clear_grad();
    if (x.requires_grad()) {
      sentinel[k] = rand_normal(x.shape(), 0, 1, rng, DType::f64);
      x.set_grad(sentinel[k]);
    }
  }
  // Backward of  <f(x), R> + sum_k <x_k, S_k>: the second path reaches each input first in
  // reverse order, so an op that overwrites its input's gradient instead of adding loses
  // S_k and fails the comparison below.
  std::vector<Tensor> side(inputs.size());
  Tensor total = sum(mul(y, R));
  for (size_t k = 0; k < inputs.size(); ++k)
    if (inputs[k].requires_grad()) {
      side[k] = rand_normal(inputs[k].shape(), 0, 1, rng, DType::f64);
      total = add(total, sum(mul(inputs[k], side[k])));
    }
  set_backward_observer(record_op);
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
    Tensor g = x.grad();
    std::vector<int64_t> coords;
    const int64_t n = x.numel();
    if (opt.max_coords_per_input < 0 || opt.max_coords_per_input >= n) {
      for (int64_t i = 0; i < n; ++i) coords.push_back(i);
    } else {
      auto perm = rng.permutation(n);
      coords.assign(perm.begin(), perm.begin() + opt.max_coords_per_input);
    }
    double* px = x.data<double>();
    for (int64_t i : coords) {
      const double analytic = g.item(i) - sentinel[k].item(i) - side[k].item(i);
      const double orig = px[i];
      px[i] = orig + opt.eps;
      const double lp = projected(f, inputs, R);
      px[i] = orig - opt.eps;
      const double lm = projected(f, inputs, R);
      px[i] = orig;
      const double numeric = (lp - lm) / (2 * opt.eps);
      const double err = std::abs(analytic - numeric);
      const double rel = err / std::max(std::abs(numeric), 1e-12);
      res.max_abs_err = std::max(res.max_abs_err, err);
      if (std::abs(numeric) > opt.atol) res.max_rel_err = std::max(res.max_rel_err, rel);
      ++res.coords_checked;
      if (!(err <= opt.atol + opt.rtol * std::abs(numeric))) {
        if (res.ok || rep.tellp() < 2000)
          rep << "input " << k << " " << x.shape().str() << " coord " << i << ": analytic " << analytic
              << " numeric " << numeric << " (|diff| " << err << ")\n";
        res.ok = false;
      }
    }
    x.clear_grad();
  }
  res.report = rep.str();
  return res;
}

}  // namespace ad
