// Audit cases for the core ops: elementwise (with broadcasting), matmul/linear, sum/mean,
// reshape, mse. Shapes use 1s and primes so no size is a multiple of a vector width.
#include "tests/audit.hpp"

using ad::Shape;
using ad::Tensor;
using In = std::vector<Tensor>;

AUDIT_CASE("binary ops, same shape and broadcast") {
  ad::Rng rng(11);
  const Shape pairs[][2] = {{{3, 5}, {3, 5}}, {{3, 1, 5}, {7, 1}}, {{5}, {2, 3, 5}}, {{2, 1}, {1}}, {{4, 3}, {}}};
  for (auto& p : pairs) {
    Tensor a = audit::input(p[0], rng), b = audit::input(p[1], rng);
    Tensor bpos = audit::input(p[1], rng, 0.5, 2.0);
    CHECK_GRADIENTS([](const In& v) { return ad::add(v[0], v[1]); }, In({a, b}));
    CHECK_GRADIENTS([](const In& v) { return ad::sub(v[0], v[1]); }, In({a, b}));
    CHECK_GRADIENTS([](const In& v) { return ad::mul(v[0], v[1]); }, In({a, b}));
    CHECK_GRADIENTS([](const In& v) { return ad::div(v[0], v[1]); }, In({a, bpos}));
    CHECK_GRADIENTS([](const In& v) { return ad::div(v[1], v[0]); }, In({audit::input(p[0], rng, 0.5, 2), b}));
  }
}

AUDIT_CASE("binary ops, one tensor used twice and a diamond") {
  ad::Rng rng(12);
  Tensor x = audit::input({3, 7}, rng, 0.5, 1.5), w = audit::input({7}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::mul(v[0], v[0]); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::div(v[0], v[0] + 1.0); }, In({x}));
  // diamond: y = x*w; z = y*x - y/w  (x and w both reach z by two paths)
  CHECK_GRADIENTS([](const In& v) {
    Tensor y = ad::mul(v[0], v[1]);
    return ad::sub(ad::mul(y, v[0]), ad::div(y, v[1] + 3.0));
  }, In({x, w}));
  // an input that needs no gradient next to one that does
  Tensor c = audit::input({3, 7}, rng, -1, 1, false);
  CHECK_GRADIENTS([](const In& v) { return ad::mul(v[0], v[1]); }, In({x, c}));
}

AUDIT_CASE("unary ops") {
  ad::Rng rng(13);
  Tensor x = audit::input({3, 5}, rng, -2, 2), pos = audit::input({2, 7}, rng, 0.3, 2);
  auto chk = [&](Tensor (*op)(const Tensor&), const Tensor& in) {
    CHECK_GRADIENTS([op](const In& v) { return op(v[0]); }, In({in}));
  };
  chk(ad::neg, x); chk(ad::exp, x); chk(ad::log, pos); chk(ad::sqrt, pos); chk(ad::abs, x);
  chk(ad::square, x); chk(ad::relu, x); chk(ad::gelu_tanh, x); chk(ad::gelu_erf, x);
  chk(ad::sigmoid, x); chk(ad::tanh, x);
  CHECK_GRADIENTS([](const In& v) { return ad::add_scalar(v[0], 0.7); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::mul_scalar(v[0], -1.3); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::pow(v[0], 2.5); }, In({pos}));
  CHECK_GRADIENTS([](const In& v) { return ad::pow(v[0], 3.0); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::pow(v[0], 0.5); }, In({pos}));   // the sqrt path
  CHECK_GRADIENTS([](const In& v) { return ad::pow(v[0], 0.45); }, In({pos}));  // APD Schatten p = 0.9
  CHECK_GRADIENTS([](const In& v) { return ad::clamp(v[0], -0.5, 0.8); }, In({x}));
  // reuse: f(x) * x
  CHECK_GRADIENTS([](const In& v) { return ad::mul(ad::gelu_erf(v[0]), v[0]); }, In({x}));
}

AUDIT_CASE("leaky hard sigmoids (true-derivative regions)") {
  // Where the custom rule equals the true derivative (z in (0,1) or z > 1 for lower-leaky,
  // everywhere for upper-leaky) finite differences apply; the rule's special region
  // (z <= 0 with g < 0) is checked against the hand-written rule in test_autograd.cpp.
  ad::Rng rng(14);
  Tensor in01 = audit::input({3, 5}, rng, 0.05, 0.95), above = audit::input({2, 3}, rng, 1.05, 2);
  Tensor x = audit::input({3, 7}, rng, -2, 2);
  CHECK_GRADIENTS([](const In& v) { return ad::lower_leaky_hard_sigmoid(v[0]); }, In({in01}));
  CHECK_GRADIENTS([](const In& v) { return ad::lower_leaky_hard_sigmoid(v[0]); }, In({above}));
  CHECK_GRADIENTS([](const In& v) { return ad::upper_leaky_hard_sigmoid(v[0], 0.01); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::upper_leaky_hard_sigmoid(v[0], 0.3); }, In({x}));
}

AUDIT_CASE("matmul: all transposes, batched, broadcast 2-d operand") {
  ad::Rng rng(15);
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int64_t M = 3, K = 5, N = 7;
      Tensor a = audit::input(ta ? Shape{K, M} : Shape{M, K}, rng);
      Tensor b = audit::input(tb ? Shape{N, K} : Shape{K, N}, rng);
      CHECK_GRADIENTS([ta, tb](const In& v) { return ad::matmul(v[0], v[1], ta, tb); }, In({a, b}));
      Tensor a3 = audit::input(ta ? Shape{2, 3, K, M} : Shape{2, 3, M, K}, rng);
      CHECK_GRADIENTS([ta, tb](const In& v) { return ad::matmul(v[0], v[1], ta, tb); }, In({a3, b}));
      Tensor b3 = audit::input(tb ? Shape{2, 3, N, K} : Shape{2, 3, K, N}, rng);
      CHECK_GRADIENTS([ta, tb](const In& v) { return ad::matmul(v[0], v[1], ta, tb); }, In({a3, b3}));
    }
  Tensor s = audit::input({5, 5}, rng);  // the same tensor on both sides: s s^T
  CHECK_GRADIENTS([](const In& v) { return ad::matmul(v[0], v[0], false, true); }, In({s}));
  // mostly-zero left operand with N >= 16 columns: the forward's sparse path
  Tensor sp = ad::zeros({2, 3, 9}, ad::DType::f64);
  sp.set_item(4, 0.7), sp.set_item(40, -1.3);
  sp.requires_grad_(true);
  Tensor wide = audit::input({9, 17}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::matmul(v[0], v[1]); }, In({sp, wide}));
}

AUDIT_CASE("linear with and without bias") {
  ad::Rng rng(16);
  Tensor x = audit::input({2, 3, 5}, rng), W = audit::input({7, 5}, rng), b = audit::input({7}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::linear(v[0], v[1], v[2]); }, In({x, W, b}));
  CHECK_GRADIENTS([](const In& v) { return ad::linear(v[0], v[1]); }, In({x, W}));
  Tensor sq = audit::input({5, 5}, rng);  // x = W: the weight is also the input
  CHECK_GRADIENTS([](const In& v) { return ad::linear(v[0], v[0]); }, In({sq}));
}

AUDIT_CASE("sum and mean over axes") {
  ad::Rng rng(17);
  Tensor x = audit::input({3, 1, 5, 2}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::sum(v[0]); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::sum(v[0], {0, 2}); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::sum(v[0], {-1}, true); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::mean(v[0], {1, 3}); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::mean(v[0]); }, In({x}));
}

AUDIT_CASE("reshape view") {
  ad::Rng rng(18);
  Tensor x = audit::input({3, 10}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::reshape(v[0], {5, -1, 2}); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::mul(ad::reshape(v[0], {30}), ad::reshape(v[0], {30})); }, In({x}));
}

AUDIT_CASE("mse loss") {
  ad::Rng rng(19);
  Tensor p = audit::input({3, 7}, rng), t = audit::input({3, 7}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::mse_loss(v[0], v[1]); }, In({p, t}));
  CHECK_GRADIENTS([](const In& v) { return ad::mse_loss(ad::relu(v[0]), v[0]); }, In({p}));
}
