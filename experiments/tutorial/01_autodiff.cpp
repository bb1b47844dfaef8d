// Tutorial chapter 1 (docs/tutorial.md): the autodiff engine.
// Build a graph by hand, run backward, check one gradient by finite differences, and see that
// gradients accumulate until they are zeroed.
//   make tutorial && build/tutorial/01_autodiff
#include <cmath>
#include <cstdio>

#include "autodiff/gradcheck.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"

using ad::Tensor;

int main() {
  // ---- 1. A graph of scalars: L = (a b + c)^2 ------------------------------------------------
  // Every op call appends a node whose inputs point back at a, b, c (define-by-run).
  Tensor a = ad::scalar(2.0, ad::DType::f64).requires_grad_();
  Tensor b = ad::scalar(-3.0, ad::DType::f64).requires_grad_();
  Tensor c = ad::scalar(10.0, ad::DType::f64).requires_grad_();
  Tensor d = a * b + c;       // d = 4
  Tensor L = ad::square(d);   // L = 16
  std::printf("graph: d = a*b + c = %g, L = d^2 = %g (L was made by op '%s')\n", d.item(), L.item(), L.op_name());

  ad::backward(L);  // dL/dx for every leaf x, written into x.grad()
  // By hand: dL/dd = 2d = 8, so dL/da = 8 b = -24, dL/db = 8 a = 16, dL/dc = 8.
  std::printf("dL/da = %g  dL/db = %g  dL/dc = %g\n", a.grad().item(), b.grad().item(), c.grad().item());

  // ---- 2. Gradients accumulate -----------------------------------------------------------------
  // backward ADDS into .grad. A second forward + backward without zeroing doubles the gradient,
  // which is why every training step starts with zero_grad().
  ad::backward(ad::square(a * b + c));
  std::printf("after a second backward: dL/da = %g (accumulated)\n", a.grad().item());
  a.zero_grad();
  ad::backward(ad::square(a * b + c));
  std::printf("after zero_grad and backward: dL/da = %g\n", a.grad().item());

  // ---- 3. A small layer, checked by finite differences --------------------------------------
  // loss(W) = MSE(tanh(x W^T + bias), t), x: [4, 3], W: [2, 3]. float64, so a central difference
  // with eps 1e-6 agrees with backward to ~1e-9.
  ad::Rng rng(1);
  Tensor x = ad::rand_normal({4, 3}, 0.0, 1.0, rng, ad::DType::f64);
  Tensor t = ad::rand_normal({4, 2}, 0.0, 1.0, rng, ad::DType::f64);
  Tensor W = ad::rand_normal({2, 3}, 0.0, 0.5, rng, ad::DType::f64).requires_grad_();
  Tensor bias = ad::zeros({2}, ad::DType::f64).requires_grad_();
  auto loss_of = [&](const Tensor& w) { return ad::mse_loss(ad::tanh(ad::linear(x, w, bias)), t); };

  Tensor loss = loss_of(W);
  ad::backward(loss);
  const int64_t i = 1 * 3 + 2;  // W[1, 2], flat row-major index
  const double analytic = W.grad().item(i);

  const double eps = 1e-6, w0 = W.item(i);
  double numeric;
  {
    ad::NoGradGuard no_grad;  // the two extra forwards record no graph
    W.set_item(i, w0 + eps);
    const double up = loss_of(W).item();
    W.set_item(i, w0 - eps);
    const double down = loss_of(W).item();
    W.set_item(i, w0);
    numeric = (up - down) / (2 * eps);
  }
  std::printf("layer loss = %.6f\n", loss.item());
  std::printf("dloss/dW[1,2]: backward = %.9f  finite difference = %.9f  |diff| = %.1e\n", analytic, numeric,
              std::fabs(analytic - numeric));

  // ---- 4. The same check for every coordinate and input: ad::gradcheck -------------------------
  // It uses a random upstream gradient (not a plain sum), checks that backward adds to .grad
  // and that two forwards agree bit for bit. Every op of the engine passes it in the tests.
  ad::GradcheckResult r = ad::gradcheck(
      [&](const std::vector<Tensor>& in) { return ad::tanh(ad::linear(x, in[0], in[1])); }, {W, bias});
  std::printf("gradcheck of tanh(linear(x, W, bias)): %s, %lld coordinates, max abs error %.1e\n",
              r.ok ? "ok" : "FAILED", (long long)r.coords_checked, r.max_abs_err);
  return r.ok ? 0 : 1;
}
