// Optimisers, schedules and clipping. Reference numbers marked "torch" were produced by
// torch.optim 1.13 in float64 (script in the comment of each case) and are hard-coded so
// the test does not need Python.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <unistd.h>

#include "autodiff/ops.hpp"
#include "autodiff/optim.hpp"
#include "autodiff/random.hpp"
#include "autodiff/safetensors.hpp"

using ad::DType;
using ad::Shape;
using ad::Tensor;

namespace {

// The gradient sequence every reference run uses (fed directly as .grad, so it does not
// depend on the parameter values).
const std::vector<std::vector<double>> kGrads = {{0.5, -0.1, 0.0}, {-0.2, 0.3, 1.0}, {0.1, 0.1, -0.4}};

Tensor fresh_param(DType t) {
  Tensor p = ad::from_vector({1.0, -2.0, 0.5}, {3}, t);
  p.requires_grad_();
  return p;
}

void run_sequence(ad::Optimizer& opt, Tensor& p) {
  for (const auto& g : kGrads) {
    p.set_grad(ad::from_vector(g, {3}, p.dtype()));
    opt.step();
  }
}

void check_close(const Tensor& p, const std::vector<double>& want, double tol) {
  for (size_t i = 0; i < want.size(); ++i) CHECK(p.item((int64_t)i) == doctest::Approx(want[i]).epsilon(tol));
}

}  // namespace

// torch: p = [1,-2,.5]; for g in kGrads: p.grad = g; opt.step()
TEST_CASE("optim: Adam (L2 weight decay) matches torch.optim.Adam over 3 steps, f64 and f32") {
  const std::vector<double> torch_ref = {0.7901621834311943, -1.8182380381954297, 0.2872237258872382};
  for (DType t : {DType::f64, DType::f32}) {
    Tensor p = fresh_param(t);
    ad::Adam opt({{"all", {p}}}, ad::AdamConfig{0.1, {0.9, 0.999}, 1e-8, 0.1});
    run_sequence(opt, p);
    check_close(p, torch_ref, t == DType::f64 ? 1e-12 : 1e-6);
    CHECK(opt.param_steps(0) == 3);
  }
}

TEST_CASE("optim: AdamW (decoupled decay) matches torch.optim.AdamW over 3 steps") {
  const std::vector<double> torch_ref = {0.7058817572119398, -1.7357517833836933, 0.3280369131479289};
  for (DType t : {DType::f64, DType::f32}) {
    Tensor p = fresh_param(t);
    ad::AdamW opt({{"all", {p}}}, ad::AdamConfig{0.1, {0.8, 0.99}, 1e-3, 0.5});
    run_sequence(opt, p);
    check_close(p, torch_ref, t == DType::f64 ? 1e-12 : 1e-6);
  }
}

TEST_CASE("optim: SGD plain / momentum+L2 / nesterov match torch.optim.SGD") {
  Tensor p = fresh_param(DType::f64);
  ad::SGD plain({{"all", {p}}}, ad::SgdConfig{0.1});
  run_sequence(plain, p);
  // by hand: 1 - 0.1 (0.5 - 0.2 + 0.1) = 0.96, etc.
  check_close(p, {0.96, -2.03, 0.44}, 1e-14);

  Tensor q = fresh_param(DType::f64);
  ad::SGD mom({{"all", {q}}}, ad::SgdConfig{0.1, 0.9, 0.1});
  run_sequence(mom, q);
  check_close(q, {0.8385739999999999, -1.928737, 0.3231895}, 1e-12);

  Tensor r = fresh_param(DType::f32);
  ad::SGD nest({{"all", {r}}}, ad::SgdConfig{0.1, 0.9, 0.0, true});
  run_sequence(nest, r);
  check_close(r, {0.8632500000000001, -2.06591, 0.305}, 1e-6);
}

TEST_CASE("optim: first Adam step by hand; AdamW decay applied before the update") {
  // t = 1: m_hat = g, v_hat = g^2, so p -= lr g / (|g| + eps).
  Tensor p = ad::from_vector({2.0, -1.0}, {2}, DType::f64);
  p.requires_grad_();
  ad::AdamW opt({{"w", {p}}}, ad::AdamConfig{0.01, {0.9, 0.999}, 0.5, 0.1});
  p.set_grad(ad::from_vector({1.5, -0.5}, {2}, DType::f64));
  opt.step();
  // decay: 2 (1 - 0.01 * 0.1) = 1.998; update 0.01 * 1.5 / (1.5 + 0.5) = 0.0075
  CHECK(p.item(0) == doctest::Approx(1.998 - 0.0075).epsilon(1e-14));
  // decay: -0.999; update 0.01 * -0.5 / (0.5 + 0.5) = -0.005
  CHECK(p.item(1) == doctest::Approx(-0.999 + 0.005).epsilon(1e-14));
  // the state holds the raw moments: m = 0.1 g, v = 0.001 g^2
  CHECK(opt.exp_avg(0).item(0) == doctest::Approx(0.15));
  CHECK(opt.exp_avg_sq(0).item(1) == doctest::Approx(0.001 * 0.25));
}

TEST_CASE("optim: groups get their own lr scale and weight decay; params without grad are skipped") {
  Tensor a = ad::from_vector({1.0}, {1}, DType::f64), b = ad::from_vector({1.0}, {1}, DType::f64);
  Tensor c = ad::from_vector({5.0}, {1}, DType::f64);
  a.requires_grad_();
  b.requires_grad_();
  c.requires_grad_();
  ad::SGD opt({{"a", {a}}, {"b", {b, c}, 0.0, /*lr_scale*/ 2.0, /*weight_decay*/ 1.0}}, ad::SgdConfig{0.1});
  a.set_grad(ad::ones({1}, DType::f64));
  b.set_grad(ad::ones({1}, DType::f64));
  opt.step(0.5);
  CHECK(a.item() == doctest::Approx(1.0 - 0.5 * 1.0));
  CHECK(b.item() == doctest::Approx(1.0 - 1.0 * (1.0 + 1.0 * 1.0)));  // lr 0.5*2, g + wd p
  CHECK(c.item() == 5.0);  // no gradient: untouched (even with weight decay)
}

TEST_CASE("optim: schedules at key points") {
  using K = ad::LrSchedule::Kind;
  ad::LrSchedule cst{K::constant};
  CHECK(cst.lr_at(0.1, 0, 100) == 0.1);
  CHECK(cst.lr_at(0.1, 99, 100) == 0.1);

  ad::LrSchedule cos{K::cosine, 0.1};
  CHECK(cos.lr_at(2.0, 0, 100) == doctest::Approx(2.0));
  CHECK(cos.lr_at(2.0, 50, 100) == doctest::Approx(2.0 * (0.1 + 0.9 * 0.5)));  // cos(pi/2) = 0
  CHECK(cos.lr_at(2.0, 25, 100) == doctest::Approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + std::sqrt(0.5)))));
  CHECK(cos.lr_at(2.0, 100, 100) == doctest::Approx(0.2));

  ad::LrSchedule lin{K::linear, 0.0};
  CHECK(lin.lr_at(1.0, 0, 10) == doctest::Approx(1.0));
  CHECK(lin.lr_at(1.0, 5, 10) == doctest::Approx(0.5));
  CHECK(lin.lr_at(1.0, 9, 10) == doctest::Approx(0.1));

  // 10% warmup of 100 steps: steps 0..9 ramp (step+1)/10, then cosine over the last 90.
  ad::LrSchedule wc{K::cosine, 0.0, 0.1};
  CHECK(wc.warmup_for(100) == 10);
  CHECK(wc.lr_at(1.0, 0, 100) == doctest::Approx(0.1));
  CHECK(wc.lr_at(1.0, 4, 100) == doctest::Approx(0.5));
  CHECK(wc.lr_at(1.0, 9, 100) == doctest::Approx(1.0));
  CHECK(wc.lr_at(1.0, 10, 100) == doctest::Approx(1.0));
  CHECK(wc.lr_at(1.0, 55, 100) == doctest::Approx(0.5));  // t = 45 = T/2
  ad::LrSchedule ws{K::constant, 0.0, 0.5, 3};           // warmup_steps overrides the fraction
  CHECK(ws.warmup_for(100) == 3);
  CHECK(ws.lr_at(3.0, 1, 100) == doctest::Approx(2.0));

  CHECK(ad::LrSchedule::parse_kind("cosine") == K::cosine);
  CHECK_THROWS_WITH_AS(ad::LrSchedule::parse_kind("cosin"), doctest::Contains("cosin"), ad::Error);
  CHECK_THROWS_AS(cos.lr_at(1.0, 0, 0), ad::Error);
}

TEST_CASE("optim: gradient clipping per group returns the pre-clip norm (torch clip_grad_norm_)") {
  Tensor p = ad::from_vector({1, 2}, {2}, DType::f64), q = ad::from_vector({3}, {1}, DType::f64);
  p.requires_grad_();
  q.requires_grad_();
  p.set_grad(ad::from_vector({3, 4}, {2}, DType::f64));
  q.set_grad(ad::from_vector({12}, {1}, DType::f64));
  CHECK(ad::clip_grad_norm({p, q}, 2.0) == doctest::Approx(13.0));
  // torch: [0.46153842603550577, 0.615384568047341], [1.846153704142023]
  CHECK(p.grad().item(0) == doctest::Approx(0.46153842603550577).epsilon(1e-12));
  CHECK(p.grad().item(1) == doctest::Approx(0.615384568047341).epsilon(1e-12));
  CHECK(q.grad().item(0) == doctest::Approx(1.846153704142023).epsilon(1e-12));
  CHECK(ad::grad_norm({p, q}) == doctest::Approx(2.0).epsilon(1e-6));

  // Inside an optimiser: group "big" clipped to 1, group "free" not clipped.
  Tensor a = ad::zeros({2}, DType::f32), b = ad::zeros({1}, DType::f32);
  a.requires_grad_();
  b.requires_grad_();
  ad::SGD opt({{"big", {a}, /*clip*/ 1.0}, {"free", {b}}}, ad::SgdConfig{1.0});
  a.set_grad(ad::from_vector({6, 8}, {2}));
  b.set_grad(ad::from_vector({-7}, {1}));
  opt.step();
  CHECK(opt.last_grad_norm(0) == doctest::Approx(10.0));
  CHECK(opt.last_grad_norm(1) == doctest::Approx(7.0));
  CHECK(a.item(0) == doctest::Approx(-0.6).epsilon(1e-5));  // unit-norm gradient applied
  CHECK(a.item(1) == doctest::Approx(-0.8).epsilon(1e-5));
  CHECK(b.item(0) == doctest::Approx(7.0));

  // A non-finite gradient in a clipped group is an error naming the group.
  a.set_grad(ad::from_vector({NAN, 1}, {2}));
  CHECK_THROWS_WITH_AS(opt.step(), doctest::Contains("group 'big'"), ad::Error);
}

TEST_CASE("optim: bad parameters are rejected with the group name") {
  Tensor leaf_no_grad = ad::ones({2});
  CHECK_THROWS_WITH_AS(ad::Adam({{"ci_fns", {leaf_no_grad}}}), doctest::Contains("ci_fns"), ad::Error);
  Tensor x = ad::ones({2});
  x.requires_grad_();
  Tensor y = ad::mul_scalar(x, 2.0);
  CHECK_THROWS_WITH_AS(ad::SGD({{"g", {y}}}), doctest::Contains("not a leaf"), ad::Error);
  CHECK_THROWS_AS(ad::Adam({{"g", {x}}}, ad::AdamConfig{1e-3, {1.0, 0.999}}), ad::Error);
}

// Linear regression y = X w* + b*: every optimiser must fit it; once warmed up, a full
// training step (forward, backward, zero_grad, step) takes nothing from the heap.
TEST_CASE("optim: tiny regression converges with Adam, AdamW and SGD; no heap use after warm-up") {
  ad::Rng rng(7);
  const int64_t N = 64, D = 4;
  Tensor X = ad::rand_normal({N, D}, 0, 1, rng, DType::f32);
  Tensor w_true = ad::from_vector({0.5, -1.0, 2.0, 0.25}, {1, D});
  Tensor y = ad::add_scalar(ad::linear(X, w_true), 0.3);  // [N, 1]
  for (int which = 0; which < 3; ++which) {
    Tensor W = ad::zeros({1, D}), b = ad::zeros({1});
    W.requires_grad_();
    b.requires_grad_();
    std::unique_ptr<ad::Optimizer> opt;
    if (which == 0) opt.reset(new ad::Adam({{"w", {W, b}}}, ad::AdamConfig{0.05}));
    if (which == 1) opt.reset(new ad::AdamW({{"w", {W}}, {"b", {b}, 0, 1, 0.0}}, ad::AdamConfig{0.05, {0.9, 0.999}, 1e-8, 1e-4}));
    if (which == 2) opt.reset(new ad::SGD({{"w", {W, b}}}, ad::SgdConfig{0.05, 0.9}));
    ad::LrSchedule sched{ad::LrSchedule::Kind::cosine, 0.01, 0.05};
    const int steps = 600;
    double loss = 0;
    uint64_t allocs_after_warmup = 0;
    for (int s = 0; s < steps; ++s) {
      if (s == 5) allocs_after_warmup = ad::pool_stats().heap_allocs;
      opt->zero_grad();
      Tensor l = ad::mse_loss(ad::linear(X, W, b), y);
      loss = l.item();
      ad::backward(l);
      opt->step(sched.lr_at(opt->default_lr(), s, steps));
    }
    INFO("optimiser " << which);
    CHECK(loss < 1e-5);
    CHECK(W.item(2) == doctest::Approx(2.0).epsilon(1e-2));
    CHECK(b.item(0) == doctest::Approx(0.3).epsilon(1e-2));
    CHECK(ad::pool_stats().heap_allocs == allocs_after_warmup);
  }
}

// Checkpoint after 5 steps (parameters + optimiser state through a safetensors file), then
// 5 more steps both ways: the resumed run must be bit-identical to the uninterrupted one.
TEST_CASE("optim: state() / load_state() through safetensors resume bit-identically") {
  ad::Rng rng(11);
  Tensor X = ad::rand_normal({16, 3}, 0, 1, rng), Y = ad::rand_normal({16, 2}, 0, 1, rng);
  Tensor W0 = ad::rand_normal({2, 3}, 0, 0.5, rng), b0 = ad::zeros({2});
  auto make_params = [&](const Tensor& W_init, const Tensor& b_init) {
    Tensor W = ad::clone(W_init), b = ad::clone(b_init);
    W.requires_grad_();
    b.requires_grad_();
    return std::make_pair(W, b);
  };
  for (int kind = 0; kind < 2; ++kind) {
    INFO("kind " << kind);
    auto make_opt = [&](Tensor& W, Tensor& b) -> std::unique_ptr<ad::Optimizer> {
      if (kind == 0) return std::make_unique<ad::AdamW>(std::vector<ad::ParamGroup>{{"w", {W}}, {"b", {b}}}, ad::AdamConfig{0.01, {0.9, 0.99}, 1e-8, 0.1});
      return std::make_unique<ad::SGD>(std::vector<ad::ParamGroup>{{"w", {W}}, {"b", {b}}}, ad::SgdConfig{0.05, 0.9});
    };
    auto train = [&](ad::Optimizer& opt, Tensor& W, Tensor& b, int steps) {
      for (int s = 0; s < steps; ++s) {
        opt.zero_grad();
        ad::backward(ad::mse_loss(ad::linear(X, W, b), Y));
        opt.step();
      }
    };
    auto [W, b] = make_params(W0, b0);
    auto opt = make_opt(W, b);
    train(*opt, W, b, 5);
    std::map<std::string, Tensor> ckpt = opt->state();
    ckpt["param.W"] = W;
    ckpt["param.b"] = b;
    const std::string path = "/tmp/pd_optim_resume_" + std::to_string(getpid()) + ".safetensors";
    ad::save_safetensors(path, ckpt);
    train(*opt, W, b, 5);

    ad::SafeTensors loaded = ad::load_safetensors(path);
    std::remove(path.c_str());
    auto [W2, b2] = make_params(loaded.tensors["param.W"], loaded.tensors["param.b"]);
    auto opt2 = make_opt(W2, b2);
    opt2->load_state(loaded.tensors);
    CHECK(opt2->steps_taken() == 5);
    train(*opt2, W2, b2, 5);
    CHECK(W2.to_vector() == W.to_vector());
    CHECK(b2.to_vector() == b.to_vector());

    // A state from differently named groups, or from another optimiser, is refused with
    // the missing name.
    Tensor Wx = ad::clone(W0), bx = ad::clone(b0);
    Wx.requires_grad_();
    bx.requires_grad_();
    ad::AdamW other({{"weights", {Wx}}, {"b", {bx}}});
    CHECK_THROWS_WITH_AS(other.load_state(loaded.tensors),
                         doctest::Contains(kind == 0 ? "'adamw.weights.0.exp_avg' is missing" : "'adamw.param_steps' is missing"),
                         ad::Error);
  }
}
