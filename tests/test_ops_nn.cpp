// Values of the fused NN ops and losses: each is compared (values AND gradients, float64)
// with the same computation composed from primitive ops, plus hand-computed values, the
// float32 fast-exp path against float64, error messages and the NaN guard.
#include <doctest/doctest.h>

#include <cmath>
#include <algorithm>
#include <functional>
#include <limits>
#include <string>

#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"
#include "autodiff/rowmath.hpp"

using ad::Shape;
using ad::Tensor;
using In = std::vector<Tensor>;
using Fn = std::function<Tensor(const In&)>;

namespace {

Tensor leaf(const Shape& s, ad::Rng& rng, double lo = -1, double hi = 1, bool rg = true) {
  Tensor t = ad::rand_uniform(s, lo, hi, rng, ad::DType::f64);
  t.requires_grad_(rg);
  return t;
}

// Runs fused and composed on the same inputs; checks equal values and equal gradients
// d<y, R>/d input for one random upstream R (relative to the largest magnitude).
void check_fused_matches_composed(const Fn& fused, const Fn& composed, const In& inputs, double tol = 1e-12) {
  Tensor a = fused(inputs), b = composed(inputs);
  REQUIRE(a.shape() == b.shape());
  double scale = 1e-300;
  for (int64_t i = 0; i < a.numel(); ++i) scale = std::max(scale, std::abs(b.item(i)));
  for (int64_t i = 0; i < a.numel(); ++i) {
    INFO("value " << i << ": fused " << a.item(i) << " composed " << b.item(i));
    CHECK(std::abs(a.item(i) - b.item(i)) <= tol * scale);
  }
  ad::Rng rng(99);
  Tensor R = ad::rand_normal(a.shape(), 0, 1, rng, ad::DType::f64);
  std::vector<Tensor> wrt;
  for (const Tensor& t : inputs)
    if (t.requires_grad()) wrt.push_back(t);
  auto ga = ad::grad(a, wrt, R), gb = ad::grad(b, wrt, R);
  for (size_t k = 0; k < wrt.size(); ++k) {
    double gs = 1e-300;
    for (int64_t i = 0; i < gb[k].numel(); ++i) gs = std::max(gs, std::abs(gb[k].item(i)));
    for (int64_t i = 0; i < ga[k].numel(); ++i) {
      INFO("input " << k << " grad " << i << ": fused " << ga[k].item(i) << " composed " << gb[k].item(i));
      CHECK(std::abs(ga[k].item(i) - gb[k].item(i)) <= tol * gs);
    }
  }
}

// Composed references (primitive ops only). Softmax without the max shift: inputs are small.
Tensor softmax_ref(const Tensor& x, int axis) {
  Tensor e = ad::exp(x);
  return ad::div(e, ad::sum(e, {axis}, true));
}
Tensor log_softmax_ref(const Tensor& x, int axis) { return ad::sub(x, ad::log(ad::sum(ad::exp(x), {axis}, true))); }
Tensor rms_norm_ref(const Tensor& x, const Tensor& w, double eps) {
  Tensor r = ad::sqrt(ad::add_scalar(ad::mean(ad::square(x), {-1}, true), eps));
  Tensor y = ad::div(x, r);
  return w.defined() ? ad::mul(y, w) : y;
}
Tensor layer_norm_ref(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  Tensor c = ad::sub(x, ad::mean(x, {-1}, true));
  Tensor y = ad::div(c, ad::sqrt(ad::add_scalar(ad::mean(ad::square(c), {-1}, true), eps)));
  if (w.defined()) y = ad::mul(y, w);
  if (b.defined()) y = ad::add(y, b);
  return y;
}
Tensor one_hot(const ad::Indices& ids, int64_t V) {
  Tensor t = ad::zeros({ids.numel(), V}, ad::DType::f64);
  for (int64_t i = 0; i < ids.numel(); ++i) t.set_item(i * V + ids.v[(size_t)i], 1.0);
  return t;
}
// [T, Dh] tables of cos / sin of (offset + t) base^(-2i/Dh), each half repeated.
Tensor rope_table(int64_t T, int64_t Dh, double base, int64_t off, bool sine) {
  Tensor t = ad::empty({T, Dh}, ad::DType::f64);
  for (int64_t p = 0; p < T; ++p)
    for (int64_t i = 0; i < Dh / 2; ++i) {
      double a = (double)(off + p) * std::pow(base, -2.0 * (double)i / (double)Dh);
      t.set_item(p * Dh + i, sine ? std::sin(a) : std::cos(a));
      t.set_item(p * Dh + i + Dh / 2, sine ? std::sin(a) : std::cos(a));
    }
  return t;
}
Tensor rope_ref(const Tensor& x, double base, int64_t off) {
  const int64_t T = x.size(-2), Dh = x.size(-1);
  Tensor x1 = ad::slice(x, -1, 0, Dh / 2), x2 = ad::slice(x, -1, Dh / 2, Dh);
  Tensor rot = ad::concat({ad::neg(x2), x1}, -1);  // rotate_half
  return ad::add(ad::mul(x, rope_table(T, Dh, base, off, false)), ad::mul(rot, rope_table(T, Dh, base, off, true)));
}
Tensor attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  const int64_t Tq = q.size(2), Tk = k.size(2);
  Tensor s = ad::mul_scalar(ad::matmul(q, k, false, true), 1.0 / std::sqrt((double)q.size(3)));
  if (causal) {
    Tensor mask = ad::zeros({Tq, Tk}, ad::DType::f64);
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = i + (Tk - Tq) + 1; j < Tk; ++j) mask.set_item(i * Tk + j, -INFINITY);
    s = ad::add(s, mask);
  }
  return ad::matmul(softmax_ref(s, -1), v);
}

}  // namespace

TEST_CASE("autodiff: fused softmax / log_softmax match their primitive composition") {
  ad::Rng rng(1);
  Tensor x = leaf({3, 4, 5}, rng, -2, 2);
  for (int axis : {0, 1, 2}) {
    check_fused_matches_composed([axis](const In& v) { return ad::softmax(v[0], axis); },
                                 [axis](const In& v) { return softmax_ref(v[0], axis); }, {x});
    check_fused_matches_composed([axis](const In& v) { return ad::log_softmax(v[0], axis); },
                                 [axis](const In& v) { return log_softmax_ref(v[0], axis); }, {x});
  }
}

TEST_CASE("autodiff: fused rms_norm / layer_norm match their primitive composition") {
  ad::Rng rng(2);
  Tensor x = leaf({2, 3, 11}, rng, -2, 2), w = leaf({11}, rng), b = leaf({11}, rng);
  check_fused_matches_composed([](const In& v) { return ad::rms_norm(v[0], v[1], 1e-6); },
                               [](const In& v) { return rms_norm_ref(v[0], v[1], 1e-6); }, {x, w});
  check_fused_matches_composed([](const In& v) { return ad::rms_norm(v[0], Tensor(), 0.5); },
                               [](const In& v) { return rms_norm_ref(v[0], Tensor(), 0.5); }, {x});
  check_fused_matches_composed([](const In& v) { return ad::layer_norm(v[0], v[1], v[2], 1e-5); },
                               [](const In& v) { return layer_norm_ref(v[0], v[1], v[2], 1e-5); }, {x, w, b});
  check_fused_matches_composed([](const In& v) { return ad::layer_norm(v[0], Tensor(), Tensor(), 0.1); },
                               [](const In& v) { return layer_norm_ref(v[0], Tensor(), Tensor(), 0.1); }, {x});
}

TEST_CASE("autodiff: fused cross_entropy / kl_divergence match their primitive composition") {
  ad::Rng rng(3);
  Tensor x = leaf({6, 9}, rng, -3, 3);
  ad::Indices t({8, 0, 3, 3, 5, 1}, {6});
  Tensor oh = one_hot(t, 9);
  check_fused_matches_composed([t](const In& v) { return ad::cross_entropy(v[0], t); },
                               [oh](const In& v) { return ad::neg(ad::mean(ad::sum(ad::mul(log_softmax_ref(v[0], -1), oh), {1}))); },
                               {x});
  Tensor target = leaf({2, 3, 9}, rng, -3, 3, false), y = leaf({2, 3, 9}, rng, -3, 3);
  check_fused_matches_composed(
      [](const In& v) { return ad::kl_divergence(v[1], v[0]); },
      [](const In& v) {
        Tensor lp = log_softmax_ref(v[1], -1);
        Tensor p = ad::exp(lp);
        return ad::mean(ad::sum(ad::mul(p, ad::sub(lp, log_softmax_ref(v[0], -1))), {-1}));
      },
      {y, target});
}

TEST_CASE("autodiff: kl_divergence sends no gradient to the target logits") {
  ad::Rng rng(4);
  Tensor target = leaf({3, 5}, rng), x = leaf({3, 5}, rng);
  Tensor loss = ad::kl_divergence(target, x);
  ad::backward(loss);
  CHECK_FALSE(target.grad().defined());
  REQUIRE(x.grad().defined());
  // KL(p || p) = 0 with zero gradient
  Tensor same = ad::kl_divergence(x, x);
  CHECK(std::abs(same.item()) < 1e-15);
}

TEST_CASE("autodiff: fused rope / attention match their primitive composition") {
  ad::Rng rng(5);
  Tensor x = leaf({2, 3, 5, 6}, rng);
  check_fused_matches_composed([](const In& v) { return ad::rope(v[0], 10000.0, 0); },
                               [](const In& v) { return rope_ref(v[0], 10000.0, 0); }, {x});
  check_fused_matches_composed([](const In& v) { return ad::rope(v[0], 500.0, 17); },
                               [](const In& v) { return rope_ref(v[0], 500.0, 17); }, {x});
  Tensor q = leaf({2, 3, 5, 4}, rng, -2, 2), k = leaf({2, 3, 5, 4}, rng, -2, 2), v = leaf({2, 3, 5, 4}, rng);
  for (bool causal : {true, false})
    check_fused_matches_composed([causal](const In& t) { return ad::attention(t[0], t[1], t[2], causal); },
                                 [causal](const In& t) { return attention_ref(t[0], t[1], t[2], causal); }, {q, k, v});
  Tensor q2 = leaf({1, 2, 3, 4}, rng, -2, 2), k2 = leaf({1, 2, 8, 4}, rng, -2, 2), v2 = leaf({1, 2, 8, 4}, rng);
  for (bool causal : {true, false})
    check_fused_matches_composed([causal](const In& t) { return ad::attention(t[0], t[1], t[2], causal); },
                                 [causal](const In& t) { return attention_ref(t[0], t[1], t[2], causal); }, {q2, k2, v2});
  // long enough for several causal query blocks (64 rows each), with Tq < Tk
  Tensor q3 = leaf({1, 2, 131, 3}, rng, -2, 2), k3 = leaf({1, 2, 140, 3}, rng, -2, 2), v3 = leaf({1, 2, 140, 3}, rng);
  for (bool causal : {true, false})
    check_fused_matches_composed([causal](const In& t) { return ad::attention(t[0], t[1], t[2], causal); },
                                 [causal](const In& t) { return attention_ref(t[0], t[1], t[2], causal); }, {q3, k3, v3});
  check_fused_matches_composed([](const In& t) { return ad::attention(t[0], t[0], t[1], true); },
                               [](const In& t) { return attention_ref(t[0], t[0], t[1], true); },
                               {ad::slice(k3, 2, 0, 131), ad::slice(v3, 2, 0, 131)});
}

TEST_CASE("autodiff: hand-computed values of the NN ops") {
  Tensor x = ad::from_vector({0, std::log(3.0), 1, 1}, {2, 2}, ad::DType::f64);
  Tensor sm = ad::softmax(x);
  const double expect[4] = {0.25, 0.75, 0.5, 0.5};
  for (int i = 0; i < 4; ++i) CHECK(sm.item(i) == doctest::Approx(expect[i]).epsilon(1e-15));
  CHECK(ad::log_softmax(x).item(0) == doctest::Approx(std::log(0.25)).epsilon(1e-14));
  // cross entropy: rows pick 0.75 and 0.5 -> mean(-log) = (log(4/3) + log 2) / 2
  CHECK(ad::cross_entropy(x, ad::Indices({1, 0}, {2})).item() ==
        doctest::Approx((std::log(4.0 / 3.0) + std::log(2.0)) / 2).epsilon(1e-14));
  // rms_norm of [3, 4]: rms = sqrt(12.5)
  Tensor r = ad::rms_norm(ad::from_vector({3, 4}, {1, 2}, ad::DType::f64), Tensor(), 0.0);
  CHECK(r.item(1) == doctest::Approx(4 / std::sqrt(12.5)).epsilon(1e-14));
  // layer_norm of [1, 3]: mean 2, var 1 -> [-1, 1]
  Tensor ln = ad::layer_norm(ad::from_vector({1, 3}, {2}, ad::DType::f64), Tensor(), Tensor(), 0.0);
  CHECK(ln.to_vector() == std::vector<double>{-1, 1});
  // rope rotates position 1 of a Dh = 2 vector by exactly 1 radian
  Tensor ro = ad::rope(ad::from_vector({1, 0, 1, 0}, {1, 1, 2, 2}, ad::DType::f64));
  CHECK(ro.to_vector() == std::vector<double>{1, 0, std::cos(1.0), std::sin(1.0)});
  // causal attention: the first query sees only the first value
  Tensor q = ad::from_vector({1, 2, 3, 4}, {1, 1, 2, 2}, ad::DType::f64);
  Tensor v = ad::from_vector({5, 6, 7, 8}, {1, 1, 2, 2}, ad::DType::f64);
  Tensor o = ad::attention(q, q, v, true);
  CHECK(o.item(0) == 5.0);
  CHECK(o.item(1) == 6.0);
  // embedding rows
  Tensor W = ad::from_vector({0, 1, 10, 11, 20, 21}, {3, 2}, ad::DType::f64);
  CHECK(ad::embedding(W, ad::Indices({2, 0}, {2})).to_vector() == std::vector<double>{20, 21, 0, 1});
  // shape ops
  Tensor m = ad::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, ad::DType::f64);
  CHECK(ad::transpose(m, 0, 1).to_vector() == std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(ad::slice(m, 1, 1, 3).to_vector() == std::vector<double>{2, 3, 5, 6});
  CHECK(ad::concat({m, ad::slice(m, 1, 0, 1)}, 1).to_vector() == std::vector<double>{1, 2, 3, 1, 4, 5, 6, 4});
  Tensor p = ad::permute(ad::reshape(m, {1, 2, 3}), {2, 0, 1});
  CHECK(p.shape() == Shape{3, 1, 2});
  CHECK(p.to_vector() == std::vector<double>{1, 4, 2, 5, 3, 6});
}

TEST_CASE("autodiff: float32 fast exp and softmax-family ops agree with float64") {
  // the vectorised exp over a wide range, including the tail handled by the scalar path
  std::vector<float> in, out(203);
  for (int i = 0; i < 203; ++i) in.push_back(-87.0f + 0.43f * (float)i);
  float s = ad::rowmath::exp_shift_sum(in.data(), out.data(), 203, 0.0f);
  double ref_sum = 0;
  for (int i = 0; i < 203; ++i) {
    double e = std::exp((double)in[(size_t)i]);
    ref_sum += e;
    INFO("x = " << in[(size_t)i]);
    CHECK(std::abs(out[(size_t)i] - e) <= 4e-7 * e);
  }
  CHECK(std::abs(s - ref_sum) <= 1e-6 * ref_sum);
  // special values: -inf and very negative -> 0, NaN stays NaN, in both code paths
  std::vector<float> sp = {-INFINITY, -1000.0f, NAN, 0.0f, -INFINITY, -1000.0f, NAN, 0.0f, -INFINITY, NAN};
  std::vector<float> so(sp.size());
  ad::rowmath::exp_shift_sum(sp.data(), so.data(), (int64_t)sp.size(), 0.0f);
  for (size_t i = 0; i < sp.size(); ++i) {
    if (std::isnan(sp[i])) CHECK(std::isnan(so[i]));
    else CHECK(so[i] == (sp[i] == 0.0f ? 1.0f : 0.0f));
  }
  // whole ops, float32 vs float64 on identical inputs
  ad::Rng rng(6);
  Tensor x64 = ad::rand_uniform({7, 37}, -8, 8, rng, ad::DType::f64), x32 = ad::to_dtype(x64, ad::DType::f32);
  auto close = [](const Tensor& a32, const Tensor& a64, double tol) {
    for (int64_t i = 0; i < a64.numel(); ++i) CHECK(std::abs(a32.item(i) - a64.item(i)) <= tol * (1 + std::abs(a64.item(i))));
  };
  close(ad::softmax(x32), ad::softmax(x64), 2e-6);
  close(ad::log_softmax(x32), ad::log_softmax(x64), 2e-6);
  ad::Indices t({1, 5, 36, 0, 2, 2, 9}, {7});
  close(ad::cross_entropy(x32, t), ad::cross_entropy(x64, t), 2e-6);
  Tensor y64 = ad::rand_uniform({7, 37}, -8, 8, rng, ad::DType::f64);
  close(ad::kl_divergence(ad::to_dtype(y64, ad::DType::f32), x32), ad::kl_divergence(y64, x64), 1e-5);
  Tensor q64 = ad::rand_normal({2, 2, 19, 8}, 0, 1, rng, ad::DType::f64);
  Tensor q32 = ad::to_dtype(q64, ad::DType::f32);
  close(ad::attention(q32, q32, q32, true), ad::attention(q64, q64, q64, true), 1e-5);
}

TEST_CASE("autodiff: NN ops reject bad shapes and ids with clear messages") {
  auto msg = [](const std::function<void()>& f) {
    try { f(); } catch (const ad::Error& e) { return std::string(e.what()); }
    return std::string("no error");
  };
  Tensor W = ad::zeros({5, 3});
  CHECK(msg([&] { ad::embedding(W, ad::Indices({1, 5}, {2})); }).find("id 5") != std::string::npos);
  CHECK(msg([&] { ad::cross_entropy(W, ad::Indices({1, 2}, {2})); }).find("5 rows") != std::string::npos);
  CHECK(msg([&] { ad::cross_entropy(W, ad::Indices({0, 1, 2, -1, 0}, {5})); }).find("target -1") != std::string::npos);
  CHECK(msg([&] { ad::rope(ad::zeros({1, 1, 4, 3})); }).find("must be even") != std::string::npos);
  CHECK(msg([&] { ad::attention(ad::zeros({1, 1, 4, 2}), ad::zeros({1, 1, 3, 2}), ad::zeros({1, 1, 3, 2}), true); })
            .find("Tq <= Tk") != std::string::npos);
  CHECK(msg([&] { ad::rms_norm(W, ad::ones({5})); }).find("rms_norm") != std::string::npos);
  CHECK(msg([&] { ad::slice(W, 0, 2, 7); }).find("[2, 7)") != std::string::npos);
  CHECK(msg([&] { ad::concat({W, ad::zeros({5, 4})}, 0); }).find("tensor 1 [5, 4]") != std::string::npos);
  CHECK(msg([&] { ad::permute(W, {0, 0}); }).find("twice") != std::string::npos);
  CHECK(msg([&] { ad::kl_divergence(W, ad::zeros({5, 4})); }).find("kl_divergence") != std::string::npos);
}

TEST_CASE("autodiff: NaN guard sees fused ops (log_softmax with an inf input)") {
  Tensor x = ad::from_vector({1.0, INFINITY, 0.5}, {1, 3}, ad::DType::f64);
  x.requires_grad_();
  {
    ad::NanGuardScope guard;
    try {
      ad::log_softmax(x);
      FAIL("no error");
    } catch (const ad::Error& e) {
      CHECK(std::string(e.what()).find("forward of op 'log_softmax'") != std::string::npos);
    }
    // and a backward that produces a non-finite gradient: rms_norm of an all-zero row, eps 0
    Tensor z = ad::zeros({1, 4}, ad::DType::f64);
    z.requires_grad_();
    try {
      ad::rms_norm(z, Tensor(), 0.0);
      FAIL("no error");
    } catch (const ad::Error& e) {
      CHECK(std::string(e.what()).find("forward of op 'rms_norm'") != std::string::npos);
    }
  }
  CHECK(std::isnan(ad::log_softmax(x).item(1)));  // guard off: NaN comes through, no error
}

TEST_CASE("autodiff: a repeated transformer-style step allocates nothing once warmed up") {
  ad::Rng rng(7);
  Tensor E = ad::rand_normal({11, 8}, 0, 0.3, rng), g = ad::ones({8});
  E.requires_grad_();
  g.requires_grad_();
  ad::Indices ids({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1}, {2, 6});
  ad::Indices next({2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2}, {12});
  auto step = [&] {
    Tensor h = ad::rms_norm(ad::embedding(E, ids), g);                      // [2, 6, 8]
    Tensor q = ad::rope(ad::permute(ad::reshape(h, {2, 6, 2, 4}), {0, 2, 1, 3}));  // [2, 2, 6, 4]
    Tensor a = ad::attention(q, q, q, true);
    Tensor o = ad::reshape(ad::transpose(a, 1, 2), {12, 8});
    Tensor loss = ad::add(ad::cross_entropy(ad::linear(o, E), next), ad::kl_divergence(ad::detach(o), ad::softmax(o)));
    ad::backward(loss);
  };
  step();
  step();
  uint64_t before = ad::pool_stats().heap_allocs;
  for (int i = 0; i < 5; ++i) step();
  CHECK(ad::pool_stats().heap_allocs == before);
}

TEST_CASE("autodiff: where, max and topk_mask values and rules") {
  Tensor a = ad::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, ad::DType::f64), b = ad::full({1}, -1.0, ad::DType::f64);
  Tensor c = ad::from_vector({1, 0, 1}, {3}, ad::DType::f32);
  a.requires_grad_();
  b.requires_grad_();
  Tensor w = ad::where(c, a, b);
  CHECK(w.to_vector() == std::vector<double>{1, -1, 3, 4, -1, 6});
  ad::backward(ad::sum(w));
  CHECK(a.grad().to_vector() == std::vector<double>{1, 0, 1, 1, 0, 1});
  CHECK(b.grad().item() == 2.0);  // broadcast b collects both rows' middle entries

  // max: ties send the whole gradient to the FIRST argmax
  Tensor x = ad::from_vector({2, 5, 5, 1, 7, 7, 7, 0}, {2, 4}, ad::DType::f64);
  x.requires_grad_();
  Tensor m = ad::max(x, 1);
  CHECK(m.shape() == Shape{2});
  CHECK(m.to_vector() == std::vector<double>{5, 7});
  ad::backward(m, ad::from_vector({10, 20}, {2}, ad::DType::f64));
  CHECK(x.grad().to_vector() == std::vector<double>{0, 10, 0, 0, 20, 0, 0, 0});
  Tensor m0 = ad::max(x, 0, true);
  CHECK(m0.shape() == Shape{1, 4});
  CHECK(m0.to_vector() == std::vector<double>{7, 7, 7, 1});

  // topk_mask over the whole tensor, ties to the lower flat index, never a gradient
  Tensor s = ad::from_vector({0.5, 0.9, 0.1, 0.9, 0.7, 0.9}, {2, 3}, ad::DType::f64);
  s.requires_grad_();
  Tensor k2 = ad::topk_mask(s, 2);
  CHECK_FALSE(k2.requires_grad());
  CHECK(k2.to_vector() == std::vector<double>{0, 1, 0, 1, 0, 0});
  CHECK(ad::topk_mask(s, 4).to_vector() == std::vector<double>{0, 1, 0, 1, 1, 1});
  CHECK(ad::topk_mask(s, 0).to_vector() == std::vector<double>(6, 0.0));
  CHECK(ad::topk_mask(s, 6).to_vector() == std::vector<double>(6, 1.0));
  CHECK_THROWS_AS(ad::topk_mask(s, 7), ad::Error);
  // a large random case against a full sort
  ad::Rng rng(8);
  Tensor r = ad::rand_normal({37, 29}, 0, 1, rng);
  Tensor mask = ad::topk_mask(r, 101);
  std::vector<double> vals = r.to_vector();
  std::vector<double> sorted = vals;
  std::sort(sorted.begin(), sorted.end(), std::greater<double>());
  double count = 0;
  for (size_t i = 0; i < vals.size(); ++i) {
    count += mask.item((int64_t)i);
    if (mask.item((int64_t)i) == 1) CHECK(vals[i] >= sorted[100]);
    else CHECK(vals[i] < sorted[100]);
  }
  CHECK(count == 101);
  Tensor bad = ad::from_vector({1, NAN}, {2});
  CHECK_THROWS_AS(ad::topk_mask(bad, 1), ad::Error);
}

TEST_CASE("autodiff: float32 gradients of the vectorised kernels agree with float64") {
  // Row lengths 37 and 19 cover both the 8-lane AVX2 bodies and their scalar tails.
  ad::Rng rng(9);
  using F = std::function<Tensor(const Tensor&)>;
  auto compare = [&](const Shape& s, const F& f, double tol) {
    Tensor x64 = ad::rand_uniform(s, -3, 3, rng, ad::DType::f64), x32 = ad::to_dtype(x64, ad::DType::f32);
    x64.requires_grad_();
    x32.requires_grad_();
    Tensor y64 = f(x64), y32 = f(x32);
    Tensor R64 = ad::rand_normal(y64.shape(), 0, 1, rng, ad::DType::f64), R32 = ad::to_dtype(R64, ad::DType::f32);
    Tensor g64 = ad::grad(y64, {x64}, R64)[0], g32 = ad::grad(y32, {x32}, R32)[0];
    double scale = 0;
    for (int64_t i = 0; i < g64.numel(); ++i) scale = std::max(scale, std::abs(g64.item(i)));
    for (int64_t i = 0; i < g64.numel(); ++i) CHECK(std::abs(g32.item(i) - g64.item(i)) <= tol * scale);
  };
  compare({5, 37}, [](const Tensor& x) { return ad::softmax(x); }, 1e-5);
  compare({5, 37}, [](const Tensor& x) { return ad::log_softmax(x); }, 1e-5);
  compare({6, 37}, [](const Tensor& x) { return ad::cross_entropy(x, ad::Indices({0, 36, 5, 8, 8, 1}, {6})); }, 1e-5);
  Tensor t64 = ad::rand_uniform({6, 37}, -3, 3, rng, ad::DType::f64);
  compare({6, 37}, [t64](const Tensor& x) { return ad::kl_divergence(ad::to_dtype(t64, x.dtype()), x); }, 1e-5);
  compare({2, 3, 19, 8}, [](const Tensor& x) {
    return ad::attention(x, ad::mul_scalar(x, 0.5), ad::mul_scalar(x, -0.3), true);
  }, 1e-5);
  compare({2, 3, 19, 8}, [](const Tensor& x) { return ad::attention(x, x, x, false); }, 1e-5);
}

TEST_CASE("autodiff: float32 vectorised tanh-GELU agrees with the float64 formula") {
  // values from -12 to 12 (both tails) in a length that is not a multiple of 8
  const int64_t n = 4803;
  std::vector<double> v((size_t)n);
  for (int64_t i = 0; i < n; ++i) v[(size_t)i] = -12.0 + 24.0 * (double)i / (double)(n - 1);
  Tensor x32 = ad::from_vector(v, {n}, ad::DType::f32);
  x32.requires_grad_();
  for (int which = 0; which < 1; ++which) {  // gelu_erf: tests/test_gelu_f32.cpp
    INFO("op " << (which == 0 ? "gelu_tanh" : "gelu_erf"));
    auto f = [which](const Tensor& t) { return which == 0 ? ad::gelu_tanh(t) : ad::gelu_erf(t); };
    Tensor y32 = f(x32);
    Tensor g32 = ad::grad(y32, {x32}, ad::ones({n}, ad::DType::f32))[0];
    double worst_y = 0, worst_g = 0, worst_gx = 0, worst_yx = 0;
    for (int64_t i = 0; i < n; ++i) {
      // compare against float64 evaluated at the float32-rounded input
      const double xi = x32.item(i);
      Tensor one = ad::from_vector({xi}, {1}, ad::DType::f64);
      one.requires_grad_();
      Tensor yo = f(one);
      const double gy = ad::grad(yo, {one}, ad::ones({1}, ad::DType::f64))[0].item();
      const double ry = std::abs(y32.item(i) - yo.item()) / std::max(1e-20, std::abs(yo.item()));
      if (ry > worst_y) worst_y = ry, worst_yx = xi;
      if (std::abs(g32.item(i) - gy) > worst_g) worst_g = std::abs(g32.item(i) - gy), worst_gx = xi;
    }
    INFO("worst relative value error " << worst_y << " at x = " << worst_yx << ", worst absolute derivative error " << worst_g << " at x = " << worst_gx);
    CHECK(worst_y < 1e-5);  // relative, even in the far negative tail
    CHECK(worst_g < 1e-6);
  }
}
