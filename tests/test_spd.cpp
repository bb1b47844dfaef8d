// SPD unit tests: loss values against hand computations on tiny cases, finite-difference
// audits of every loss term and CI function type, mask and routing statistics, metrics.
#include <doctest/doctest.h>

#include <filesystem>

#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "decomp/trainer.hpp"
#include "decomp/ci_ops.hpp"
#include "decomp/metrics.hpp"
#include "decomp/evaluate.hpp"
#include "models/train.hpp"
#include "experiments/decomp_report.hpp"
#include "tests/audit.hpp"
#include "tests/spd_test_util.hpp"

using ad::Tensor;

namespace {

// One linear layer y = x W^T + b, W [2, 3], decomposed with C = 2.
struct OneLinear {
  Tensor W = ad::from_vector({1, 2, 0, -1, 0.5, 3}, {2, 3}, ad::DType::f64);
  Tensor b = ad::from_vector({0.1, -0.2}, {2}, ad::DType::f64);
  decomp::Target target() const {
    decomp::Target t;
    t.dtype = ad::DType::f64;
    t.layers.push_back({"fc", W, false, ""});
    Tensor Wc = W, bc = b;
    t.forward = [Wc, bc](const decomp::Batch& bt, models::ForwardHooks* hk) {
      return models::apply_linear(hk, "fc", bt.x, Wc, bc);
    };
    t.sample = [](int64_t B, ad::Rng& rng) {
      decomp::Batch bt;
      bt.size = B;
      bt.x = ad::rand_uniform({B, 3}, -1, 1, rng, ad::DType::f64);
      return bt;
    };
    return t;
  }
};

decomp::DecompConfig small_config(const std::string& ci = "mlp", bool delta = true) {
  nlohmann::json j = {{"C", 2},
                      {"ci_fn", {{"type", ci}, {"hidden", {3}}}},
                      {"delta", delta},
                      {"losses", {{{"name", "stochastic_recon"}, {"coeff", 1}}}}};
  return decomp::parse_decomp_config(j, "test");
}

void set(Tensor& t, const std::vector<double>& v) {
  REQUIRE(t.numel() == (int64_t)v.size());
  for (size_t i = 0; i < v.size(); ++i) t.set_item((int64_t)i, v[i]);
}

}  // namespace

TEST_CASE("spd: faithfulness equals the hand-computed Frobenius residual") {
  OneLinear m;
  decomp::Target t = m.target();
  ad::Rng rng(1);
  decomp::SPD spd(t, small_config(), rng);
  // V [3, 2], U [2, 2]: V U = [[1, 0], [0, 1], [1, 1]]; W^T = [[1, -1], [2, 0.5], [0, 3]]
  set(spd.cm.layers[0].V, {1, 0, 0, 1, 1, 1});
  set(spd.cm.layers[0].U, {1, 0, 0, 1});
  // residual: [[0, -1], [2, -0.5], [-1, 2]] -> squares 0 + 1 + 4 + 0.25 + 1 + 4 = 10.25, / 6
  CHECK(decomp::faithfulness(spd.cm).item() == doctest::Approx(10.25 / 6).epsilon(1e-12));
}

TEST_CASE("spd: importance minimality (p, beta) equals the hand-computed value") {
  OneLinear m;
  decomp::Target t = m.target();
  ad::Rng rng(1);
  decomp::SPD spd(t, small_config(), rng);
  decomp::StepState st;
  st.g_upper = {ad::from_vector({0.5, 0, 1, 0.25}, {2, 2}, ad::DType::f64)};
  // p = 1: S = [1.5, 0.25], f = S / 2, sum f = 0.875 (+ the 1e-12 shifts)
  CHECK(decomp::importance_minimality(st.g_upper, 1.0, 0.0).item() == doctest::Approx(0.875).epsilon(1e-9));
  // p = 2: S = [1.25, 0.0625] -> 0.65625
  CHECK(decomp::importance_minimality(st.g_upper, 2.0, 0.0).item() == doctest::Approx(0.65625).epsilon(1e-9));
  // beta = 0.5, p = 1: + 0.5 (0.75 log2 2.5 + 0.125 log2 1.25)
  const double want = 0.875 + 0.5 * (0.75 * std::log2(2.5) + 0.125 * std::log2(1.25));
  CHECK(decomp::importance_minimality(st.g_upper, 1.0, 0.5).item() == doctest::Approx(want).epsilon(1e-9));
  // two layers are summed
  st.g_upper.push_back(ad::from_vector({1, 1, 1, 1}, {2, 2}, ad::DType::f64));
  CHECK(decomp::importance_minimality(st.g_upper, 1.0, 0.0).item() == doctest::Approx(0.875 + 2.0).epsilon(1e-9));
  // p annealing: linear between the fractions
  decomp::PAnnealing lt;
  lt.p = 2, lt.p_final = 0.5, lt.anneal_start = 0.2, lt.anneal_end = 0.6;
  CHECK(lt.p_at(0.1) == 2.0);
  CHECK(lt.p_at(0.4) == doctest::Approx(1.25));
  CHECK(lt.p_at(0.9) == 0.5);
}

TEST_CASE("spd: masked forward with delta equals (h*m)U + m_delta (x W^T - hU) + b") {
  OneLinear m;
  decomp::Target t = m.target();
  ad::Rng rng(1);
  decomp::SPD spd(t, small_config(), rng);
  set(spd.cm.layers[0].V, {1, 0, 0, 1, 1, 1});
  set(spd.cm.layers[0].U, {1, 0, 0, 1});
  Tensor x = ad::from_vector({1, 2, 3}, {1, 3}, ad::DType::f64);
  decomp::LayerMask mk;
  mk.m = ad::from_vector({0.5, 0.25}, {1, 2}, ad::DType::f64);
  mk.m_delta = ad::from_vector({0.4}, {1, 1}, ad::DType::f64);
  // h = x V = [4, 5]; (h*m) U = [2, 1.25]; x W^T = [5, 9]; h U = [4, 5];
  // out = [2, 1.25] + 0.4 [1, 4] + [0.1, -0.2] = [2.5, 2.65]
  Tensor out = spd.cm.masked_forward(0, x, m.b, mk);
  CHECK(out.item(0) == doctest::Approx(2.5));
  CHECK(out.item(1) == doctest::Approx(2.65));
  // without delta: [2.1, 1.05]
  mk.m_delta = Tensor();
  out = spd.cm.masked_forward(0, x, m.b, mk);
  CHECK(out.item(0) == doctest::Approx(2.1));
  CHECK(out.item(1) == doctest::Approx(1.05));
  // routed off (route 0): exactly the target x W^T + b
  mk.route = ad::zeros({1, 1}, ad::DType::f64);
  out = spd.cm.masked_forward(0, x, m.b, mk);
  CHECK(out.item(0) == doctest::Approx(5.1));
  CHECK(out.item(1) == doctest::Approx(8.8));
}

TEST_CASE("spd: recon losses equal hand-assembled MSEs; unmasked with exact VU is 0") {
  OneLinear m;
  decomp::Target t = m.target();
  ad::Rng rng(1);
  decomp::SPD spd(t, small_config(), rng);
  // Exact rank-2 decomposition of W^T [3, 2]: V = W^T, U = I  -> unmasked recon = 0.
  set(spd.cm.layers[0].V, {1, -1, 2, 0.5, 0, 3});
  set(spd.cm.layers[0].U, {1, 0, 0, 1});
  decomp::Batch b = t.sample(4, rng);
  decomp::StepState st = spd.prepare(b, rng);
  CHECK(decomp::unmasked_recon(spd, b, st).item() == doctest::Approx(0).epsilon(1e-20));
  CHECK(decomp::faithfulness(spd.cm).item() == doctest::Approx(0).epsilon(1e-20));
  // CI-masked: m = g, no delta:  out = (h*g) U + b, D = mean of squared differences
  Tensor h = ad::matmul(b.x, spd.cm.layers[0].V);
  double want = 0;
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t o = 0; o < 2; ++o) {
      double y = m.b.item(o), yt = m.b.item(o);
      for (int64_t c = 0; c < 2; ++c) {
        y += h.item(i * 2 + c) * st.g_lower[0].item(i * 2 + c) * spd.cm.layers[0].U.item(c * 2 + o);
        yt += h.item(i * 2 + c) * spd.cm.layers[0].U.item(c * 2 + o);
      }
      want += (y - yt) * (y - yt) / 8;
    }
  CHECK(decomp::ci_masked_recon(spd, b, st).item() == doctest::Approx(want).epsilon(1e-10));
  // Stochastic recon with exact components: out = (h*(m - md)) U + md (h U) + b, so the
  // error is h*(m-1)*(1-md)... checked against the same sources drawn from a copy of the rng.
  ad::Rng r1(77), r2(77);
  const double got = decomp::stochastic_recon(spd, b, st, decomp::Routing::all, 0.5, 1, r1).item();
  decomp::MaskSources src = spd.draw_sources(st, r2);
  double want2 = 0;
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t o = 0; o < 2; ++o) {
      double diff = 0;
      const double md = src.r_delta[0].item(i);
      for (int64_t c = 0; c < 2; ++c) {
        const double g = st.g_lower[0].item(i * 2 + c), mm = g + (1 - g) * src.r[0].item(i * 2 + c);
        diff += h.item(i * 2 + c) * (mm - md) * spd.cm.layers[0].U.item(c * 2 + o);
      }
      // exact decomposition: x W^T = h U, so out - target = sum_c h (m - md) U + md hU - hU
      double hu = 0;
      for (int64_t c = 0; c < 2; ++c) hu += h.item(i * 2 + c) * spd.cm.layers[0].U.item(c * 2 + o);
      diff += md * hu - hu;
      want2 += diff * diff / 8;
    }
  CHECK(got == doctest::Approx(want2).epsilon(1e-10));
}

TEST_CASE("spd: KL distance (language-model targets) equals the hand-computed value") {
  OneLinear m;
  decomp::Target t = m.target();
  t.distance = decomp::Distance::kl;
  ad::Rng rng(1);
  decomp::SPD spd(t, small_config(), rng);
  Tensor tgt = ad::from_vector({std::log(3.0), 0, 0, 0}, {2, 2}, ad::DType::f64);
  Tensor q = ad::from_vector({0, 0, 0, std::log(4.0)}, {2, 2}, ad::DType::f64);
  // row 0: p = (.75, .25), q = (.5, .5); row 1: p = (.5, .5), q = (.2, .8)
  const double r0 = 0.75 * std::log(1.5) + 0.25 * std::log(0.5);
  const double r1 = 0.5 * std::log(0.5 / 0.2) + 0.5 * std::log(0.5 / 0.8);
  CHECK(spd.distance(q, tgt).item() == doctest::Approx((r0 + r1) / 2).epsilon(1e-12));
  t.distance = decomp::Distance::mse;
  // MSE: sum of squares / numel = (log3^2 + log4^2) / 4
  CHECK(spd.distance(q, tgt).item() == doctest::Approx((std::log(3.0) * std::log(3.0) + std::log(4.0) * std::log(4.0)) / 4));
}

AUDIT_CASE("ci_scalar_mlp (SPD's fused mlp CI function)") {
  ad::Rng rng(11);
  std::vector<Tensor> in = {audit::input({3, 2, 4}, rng, -2, 2), audit::input({4, 5}, rng, -2, 2),
                            audit::input({4, 5}, rng), audit::input({4, 5}, rng), audit::input({4}, rng)};
  auto r = ad::gradcheck([](const std::vector<Tensor>& x) { return decomp::ci_scalar_mlp(x[0], x[1], x[2], x[3], x[4]); },
                         in);
  CHECK_MESSAGE(r.ok, r.report);
  // examples whose h row is exactly 0 take the shared zero-row path (forward and backward)
  for (int64_t row : {0, 3, 4})
    for (int64_t c = 0; c < 4; ++c) in[0].set_item(row * 4 + c, 0.0);
  r = ad::gradcheck([](const std::vector<Tensor>& x) { return decomp::ci_scalar_mlp(x[0], x[1], x[2], x[3], x[4]); }, in);
  CHECK_MESSAGE(r.ok, r.report);
}

TEST_CASE("spd: fused mlp CI kernel (float, AVX2 GELU) matches the composed float64 ops") {
  ad::Rng rng(5);
  Tensor h = ad::rand_uniform({37, 3}, -4, 4, rng, ad::DType::f64), W1 = ad::rand_normal({3, 16}, 0, 1.4, rng, ad::DType::f64),
         b1 = ad::rand_normal({3, 16}, 0, 1, rng, ad::DType::f64), W2 = ad::rand_normal({3, 16}, 0, 0.25, rng, ad::DType::f64),
         b2 = ad::rand_normal({3}, 0, 1, rng, ad::DType::f64);
  for (int64_t n = 0; n < 37; n += 4)  // every 4th example has h = 0 (the shared zero-row path)
    for (int64_t c = 0; c < 3; ++c) h.set_item(n * 3 + c, 0.0);
  Tensor ref = ad::sum(ad::gelu_erf(ad::reshape(h, {37, 3, 1}) * W1 + b1) * W2, {-1}) + b2;
  auto f32 = [](const Tensor& t) { return ad::to_dtype(t, ad::DType::f32); };
  Tensor got = decomp::ci_scalar_mlp(f32(h), f32(W1), f32(b1), f32(W2), f32(b2));
  double maxerr = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) maxerr = std::max(maxerr, std::fabs(ref.item(i) - got.item(i)));
  CHECK(maxerr < 2e-5);
  // gradients (random upstream) of the float kernel against the float64 composition
  std::vector<Tensor> in64 = {h, W1, b1, W2, b2}, in32;
  for (Tensor& t : in64) t.requires_grad_(true), in32.push_back(f32(t).requires_grad_(true));
  Tensor R = ad::rand_normal({37, 3}, 0, 1, rng, ad::DType::f64);
  std::vector<Tensor> g64 = ad::grad(ad::sum(ad::gelu_erf(ad::reshape(in64[0], {37, 3, 1}) * in64[1] + in64[2]) * in64[3], {-1}) + in64[4],
                                     in64, R);
  std::vector<Tensor> g32 = ad::grad(decomp::ci_scalar_mlp(in32[0], in32[1], in32[2], in32[3], in32[4]), in32, f32(R));
  for (size_t k = 0; k < in64.size(); ++k) {
    INFO("input " << k);
    double err = 0, scale = 0;
    for (int64_t i = 0; i < g64[k].numel(); ++i)
      err = std::max(err, std::fabs(g64[k].item(i) - g32[k].item(i))), scale = std::max(scale, std::fabs(g64[k].item(i)));
    CHECK(err <= 1e-5 * (1 + scale));
  }
}

// Gradient audit of every loss term x CI function type, float64, all parameters (sampled
// coordinates). The lower leaky sigmoid's backward is deliberately not a derivative (it
// passes alpha*g for z <= 0 when g < 0), so these audits use leaky_alpha = 0, under which
// it is the true derivative of clamp; the leak itself is audited with the engine's ops.
TEST_CASE("spd: sign-PGD adversarial sources match a hand computation (shared and per-example scope)") {
  // One linear layer, C = 2, delta on, B = 4. With sources s (per example i and component c)
  // and delta source sd_i: m_ic = g_ic + (1 - g_ic) s_ic,
  //   out_io = sum_c h_ic (m_ic - sd_i) U_co + sd_i (x W^T)_io + b_o,  L = mean_io (out - y)^2.
  OneLinear m;
  decomp::Target t = m.target();
  ad::Rng rng(1);
  decomp::SPD spd(t, small_config(), rng);
  set(spd.cm.layers[0].V, {0.7, -1.2, 1.5, 0.4, -0.3, 2.1});  // not an exact decomposition
  set(spd.cm.layers[0].U, {1.1, 0.2, -0.4, 0.9});
  decomp::Batch b = t.sample(4, rng);
  decomp::StepState st = spd.prepare(b, rng);
  Tensor h = ad::matmul(b.x, spd.cm.layers[0].V), xw = ad::matmul(b.x, ad::transpose(m.W, 0, 1));
  auto hand_loss = [&](const std::vector<double>& S, const std::vector<double>& Sd) {  // S [4, 2], Sd [4]
    double L = 0;
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t o = 0; o < 2; ++o) {
        double out = m.b.item(o) + Sd[i] * xw.item(i * 2 + o);
        for (int64_t c = 0; c < 2; ++c) {
          const double g = st.g_lower[0].item(i * 2 + c), mm = g + (1 - g) * S[i * 2 + c];
          out += h.item(i * 2 + c) * (mm - Sd[i]) * spd.cm.layers[0].U.item(c * 2 + o);
        }
        const double d = out - (xw.item(i * 2 + o) + m.b.item(o));
        L += d * d / 8;
      }
    return L;
  };
  auto term = [](const std::string& scope, const std::string& init, int steps) {
    decomp::PgdParams lt;
    lt.scope = scope, lt.init = init, lt.steps = steps, lt.step_size = 1.0;
    return lt;
  };
  ad::Rng r(5);
  // no ascent: zeros = the CI-masked loss (m = g, m_delta = 0); ones = the target (m = m_delta = 1)
  CHECK(decomp::pgd_recon(spd, b, st, term("shared", "zeros", 0), r).item() ==
        doctest::Approx(decomp::ci_masked_recon(spd, b, st).item()).epsilon(1e-12));
  CHECK(decomp::pgd_recon(spd, b, st, term("shared", "ones", 0), r).item() == doctest::Approx(0).epsilon(1e-20));
  CHECK(decomp::pgd_recon(spd, b, st, term("shared", "zeros", 0), r).item() ==
        doctest::Approx(hand_loss(std::vector<double>(8, 0.0), std::vector<double>(4, 0.0))).epsilon(1e-12));
  // one unit sign step from a uniform start u: s = clamp(u + sign(dL/ds), 0, 1), i.e. 1 where
  // dL/ds > 0 and 0 where < 0 (central differences of the hand loss at u give the sign; shared
  // scope perturbs that source in every row at once). u is redrawn from a copy of the rng in the
  // order pgd_recon draws it: s [rows, 2], then the delta source [rows, 1].
  const double eps = 1e-6;
  for (const std::string scope : {"shared", "per_example"}) {
    const int64_t rows = scope == "shared" ? 1 : 4;
    ad::Rng r_pgd(11), r_copy(11);
    const Tensor u = ad::rand_uniform({rows, 2}, 0.0, 1.0, r_copy, ad::DType::f64);
    const Tensor ud = ad::rand_uniform({rows, 1}, 0.0, 1.0, r_copy, ad::DType::f64);
    std::vector<double> S0(8), D0(4);
    for (int64_t k = 0; k < 4; ++k) {
      const int64_t row = rows == 1 ? 0 : k;
      S0[k * 2] = u.item(row * 2), S0[k * 2 + 1] = u.item(row * 2 + 1), D0[k] = ud.item(row);
    }
    std::vector<double> S = S0, Sd = D0;
    int ups = 0, downs = 0;
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t c = 0; c <= 2; ++c) {  // c = 2: the delta source
        std::vector<double> Sp = S0, Sm = S0, Dp = D0, Dm = D0;
        for (int64_t k = 0; k < 4; ++k) {
          if (rows == 4 && k != i) continue;
          if (c < 2) Sp[k * 2 + c] += eps, Sm[k * 2 + c] -= eps;
          else Dp[k] += eps, Dm[k] -= eps;
        }
        const double dL = (hand_loss(Sp, Dp) - hand_loss(Sm, Dm)) / (2 * eps);
        REQUIRE(std::abs(dL) > 1e-8);  // the test case has no ties
        (dL > 0 ? ups : downs) += 1;
        for (int64_t k = 0; k < 4; ++k) {
          if (rows == 4 && k != i) continue;
          if (c < 2) S[k * 2 + c] = dL > 0 ? 1.0 : 0.0;
          else Sd[k] = dL > 0 ? 1.0 : 0.0;
        }
      }
    }
    const double got = decomp::pgd_recon(spd, b, st, term(scope, "uniform", 1), r_pgd).item();
    INFO("scope " << scope << ": " << ups << " sources up, " << downs << " down");
    CHECK(got == doctest::Approx(hand_loss(S, Sd)).epsilon(1e-12));
    {  // as an evaluation monitor, inside a NoGradGuard, the inner ascent still runs
      ad::NoGradGuard ng;
      ad::Rng r_mon(11);
      CHECK(decomp::pgd_recon(spd, b, st, term(scope, "uniform", 1), r_mon).item() == doctest::Approx(got).epsilon(1e-14));
    }
    CHECK(got > hand_loss(S0, D0));  // the step made the masks worse than the start
    CHECK(downs > 0);
    if (rows == 4) CHECK(ups > 0);  // per example both directions occur, so a sign error would show
  }
}

TEST_CASE("spd: gradient audit of every loss term and CI function type (float64, finite differences)") {
  for (const char* ci : {"mlp", "vector_mlp", "shared_mlp", "global"}) {
    for (const char* term : {"faithfulness", "stochastic_recon", "stochastic_recon_layerwise", "stochastic_recon_subset",
                             "pgd_recon", "pgd_recon_subset", "ci_masked_recon", "unmasked_recon",
                             "importance_minimality"}) {
      for (bool binomial : {false, true}) {
        if (binomial && std::string(term) != "stochastic_recon") continue;
        spd_test::TinyTMS tms(5, 2, true, ad::DType::f64);
        decomp::Target t = tms.target();
        nlohmann::json j = {{"C", 3},
                            {"ci_fn", {{"type", std::string(ci) == "global" ? "mlp" : ci}, {"hidden", {4}}, {"global", std::string(ci) == "global"}}},
                            {"leaky_alpha", 0.0},
                            {"sampling", binomial ? "binomial" : "continuous"},
                            {"losses", {{{"name", term}, {"coeff", 1}}}}};
        if (std::string(term) == "importance_minimality") j["losses"][0]["p"] = 1.5, j["losses"][0]["beta"] = 0.3;
        if (std::string(term).rfind("pgd_recon", 0) == 0) {
          // two steps of 0.3 from a uniform start leave sources inside (0, 1) as well as on the
          // bounds; pgd_recon per example, the subset variant with one shared source
          j["losses"][0]["pgd_steps"] = 2, j["losses"][0]["pgd_step_size"] = 0.3;
          j["losses"][0]["pgd_scope"] = std::string(term) == "pgd_recon" ? "per_example" : "shared";
        }
        decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "audit");
        ad::Rng rng(2);
        decomp::SPD spd(t, cfg, rng);
        ad::Rng data_rng(9);
        t.sample = [&tms](int64_t B, ad::Rng& r) {  // denser data so every feature shows up
          decomp::Batch b;
          b.size = B;
          b.x = ad::rand_uniform({B, 5}, 0, 1, r, ad::DType::f64);
          (void)tms;
          return b;
        };
        decomp::Batch b = t.sample(6, data_rng);
        std::vector<Tensor> params = spd.all_params();
        auto f = [&](const std::vector<Tensor>&) {
          ad::Rng r(123);  // identical masks in every evaluation
          decomp::StepState st = spd.prepare(b, r);
          return spd.term(*cfg.losses[0], b, st, 0.5, r);
        };
        ad::GradcheckOptions o;
        o.max_coords_per_input = 6;
        auto res = ad::gradcheck(f, params, o);
        INFO("CI " << ci << ", term " << term << (binomial ? " (binomial)" : ""));
        CHECK_MESSAGE(res.ok, res.report);
      }
    }
  }
}

TEST_CASE("spd: mask and routing statistics") {
  spd_test::TinyTMS tms(5, 2, true, ad::DType::f64);
  decomp::Target t = tms.target();
  nlohmann::json j = {{"C", 4}, {"losses", {{{"name", "stochastic_recon"}, {"coeff", 1}}}}};
  ad::Rng init(1);
  decomp::SPD spd(t, decomp::parse_decomp_config(j, "t"), init);
  decomp::StepState st;
  const int64_t B = 20000;
  for (int l = 0; l < 3; ++l) st.g_lower.push_back(ad::full({B, 4}, 0.3, ad::DType::f64));
  ad::Rng rng(4);
  // continuous: m = g + (1-g) r, r ~ U(0,1): mean 0.3 + 0.7/2 = 0.65, min >= g
  auto masks = spd.masks_from(st, spd.draw_sources(st, rng));
  double s = 0, mn = 1, sd = 0;
  for (int64_t i = 0; i < B * 4; ++i) s += masks[0].m.item(i), mn = std::min(mn, masks[0].m.item(i));
  for (int64_t i = 0; i < B; ++i) sd += masks[0].m_delta.item(i);
  CHECK(s / (B * 4) == doctest::Approx(0.65).epsilon(0.01));
  CHECK(mn >= 0.3);
  CHECK(sd / B == doctest::Approx(0.5).epsilon(0.02));
  // binomial: r in {0, 1} -> m in {g, 1}, half each
  spd.cfg.sampling = decomp::Sampling::binomial;
  masks = spd.masks_from(st, spd.draw_sources(st, rng));
  int64_t ones = 0, gs = 0;
  for (int64_t i = 0; i < B * 4; ++i) {
    const double v = masks[0].m.item(i);
    ones += std::fabs(v - 1) < 1e-12, gs += std::fabs(v - 0.3) < 1e-12;
  }
  CHECK(ones + gs == B * 4);
  CHECK((double)ones / (B * 4) == doctest::Approx(0.5).epsilon(0.02));
  // uniform-k over M = 3 layers: k uniform on {1,2,3}; each layer routed w.p. (M+1)/(2M) = 2/3
  auto routes = spd.draw_routes(st, decomp::Routing::uniform_k, 0, rng);
  int64_t count_k[4] = {0, 0, 0, 0}, per_layer[3] = {0, 0, 0};
  for (int64_t b = 0; b < B; ++b) {
    int k = 0;
    for (int l = 0; l < 3; ++l) k += routes[l].item(b) > 0.5, per_layer[l] += routes[l].item(b) > 0.5;
    count_k[k]++;
  }
  CHECK(count_k[0] == 0);
  for (int k = 1; k <= 3; ++k) CHECK((double)count_k[k] / B == doctest::Approx(1.0 / 3).epsilon(0.04));
  for (int l = 0; l < 3; ++l) CHECK((double)per_layer[l] / B == doctest::Approx(2.0 / 3).epsilon(0.03));
  // static p = 0.25
  routes = spd.draw_routes(st, decomp::Routing::static_p, 0.25, rng);
  int64_t on = 0;
  for (int64_t b = 0; b < B; ++b) on += routes[1].item(b) > 0.5;
  CHECK((double)on / B == doctest::Approx(0.25).epsilon(0.05));
}

TEST_CASE("spd: mat_text prints a matrix in a column order, small entries as dots") {
  decomp::Mat m(2, 3);
  m.a = {0.004, 1.0, -0.5, 0.25, 0.0, 0.75};
  CHECK(decomp::mat_text(m) == "  0.00  1.00 -0.50\n  0.25  0.00  0.75\n");
  CHECK(decomp::mat_text(m, {2, 0}, 1, 0.01, "f") == "f0 | -0.5    .\nf1 |  0.8  0.2\n");
  CHECK(decomp::mat_text(decomp::Mat(0, 3)) == "");
  CHECK_THROWS_WITH_AS(decomp::mat_text(m, {3}), doctest::Contains("column 3 is outside"), ad::Error);
  CHECK_THROWS_AS(decomp::mat_text(m, {}, 13), ad::Error);
}

TEST_CASE("spd: metrics (Hungarian, identity and dense-k patterns, CI_L0, MMCS/ML2R)") {
  decomp::Mat s(3, 4);
  // best assignment: row0->col2 (9), row1->col0 (8), row2->col3 (7) = 24
  s.a = {1, 2, 9, 0, 8, 7, 1, 0, 0, 6, 0, 7};
  auto a = decomp::hungarian_max(s);
  CHECK(a == std::vector<int64_t>{2, 0, 3});
  // identity pattern: permuted identity with one extra dead column -> 0 errors
  decomp::Mat ci(3, 4);
  ci.a = {0, 0, 1, 0, 0.95, 0, 0, 0, 0, 0, 0, 1};
  std::vector<int64_t> order;
  CHECK(decomp::identity_ci_error(ci, &order) == 0);
  CHECK(order == std::vector<int64_t>{2, 0, 3, 1});
  ci(0, 1) = 0.2;  // one off-diagonal error
  ci(1, 0) = 0.5;  // one weak diagonal
  CHECK(decomp::identity_ci_error(ci) == 2);
  // dense-k: two columns fully on, rest off -> 0 errors for k = 2; k = 3 misses one
  decomp::Mat d(3, 4);
  d.a = {1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0.05};
  CHECK(decomp::dense_k_error(d, 2) == 0);
  CHECK(decomp::dense_k_error(d, 3) == 1);
  // block coverage: every feature switches on both block columns (k = 2); with k = 3 the third
  // column (mass 0.05) is never above 0.1
  decomp::BlockCoverage bc = decomp::dense_k_block_coverage(d, 2, 0.1);
  CHECK(bc.min == 2);
  CHECK(bc.max == 2);
  CHECK(bc.median == 2.0);
  CHECK(bc.features_using_all == 3);
  CHECK(decomp::dense_k_block_coverage(d, 3, 0.1).features_using_all == 0);
  // a block the dense-k error accepts although features use only part of it: 4 features,
  // columns by mass 0, 2, 1 (col 3 dead); per feature on-counts 1, 3, 2, 2 of k = 3
  decomp::Mat part(4, 4);
  part.a = {0.95, 0, 0, 0, 0.9, 0.92, 0.95, 0, 0.5, 0, 0.93, 0, 0.6, 0.3, 0, 0};
  CHECK(decomp::dense_k_error(part, 3) == 0);
  bc = decomp::dense_k_block_coverage(part, 3, 0.1);
  CHECK(bc.k == 3);
  CHECK(bc.min == 1);
  CHECK(bc.max == 3);
  CHECK(bc.median == 2.0);
  CHECK(bc.features_using_all == 1);
  CHECK(decomp::dense_k_block_coverage(part, 6, 0.1).max == 3);  // a block wider than C
  CHECK(decomp::dense_k_block_coverage(part, 2, 0.1).median == 1.5);  // counts 1, 2, 2, 1 over cols 0, 2
  CHECK(decomp::dense_k_block_coverage(part, 2, 0.5).median == 1.0);  // 0.5 is not above 0.5: 1, 2, 1, 1
  CHECK_THROWS_WITH(decomp::dense_k_block_coverage(part, 0, 0.1), doctest::Contains("k >= 1"));
  CHECK(decomp::ci_l0(d, 0.1) == doctest::Approx(2.0));
  CHECK(decomp::alive_components(d, 0.1) == 2);
  CHECK(decomp::alive_components(d, 0.01) == 3);
  // large-norm subcomponents: norms ||V[:, c]|| ||U[c, :]|| = 2*3, 1*1, 0.1*1, 0 -> with
  // rel 0.1 (threshold 0.6) two count, with rel 0.01 (0.06) three
  decomp::Mat Vn(2, 4), Un(4, 3);
  Vn(0, 0) = 2, Vn(1, 1) = 1, Vn(0, 2) = 0.1;
  Un(0, 1) = 3, Un(1, 2) = 1, Un(2, 0) = 1;
  CHECK(decomp::large_norm_components(Vn, Un) == 2);
  CHECK(decomp::large_norm_components(Vn, Un, 0.01) == 3);
  CHECK(decomp::large_norm_components(decomp::Mat(2, 4), Un) == 0);
  CHECK_THROWS_WITH(decomp::large_norm_components(Vn, decomp::Mat(3, 3)), doctest::Contains("disagree on C"));
  // MMCS/ML2R: exact per-column rank-1 decomposition of W [2, 3] -> 1, 1; halved -> ML2R 0.5
  decomp::Mat W(2, 3), V(3, 3), U(3, 2);
  W.a = {1, 0, 2, 0, 3, 1};
  for (int j = 0; j < 3; ++j) {
    V(j, j) = 1;
    U(j, 0) = W(0, j), U(j, 1) = W(1, j);
  }
  auto r = decomp::mmcs_ml2r(W, V, U);
  CHECK(r.mmcs == doctest::Approx(1));
  CHECK(r.ml2r == doctest::Approx(1));
  for (int j = 0; j < 3; ++j) V(j, j) = 0.5;
  r = decomp::mmcs_ml2r(W, V, U);
  CHECK(r.mmcs == doctest::Approx(1));
  CHECK(r.ml2r == doctest::Approx(0.5));
  // A near-zero-norm 4th subcomponent exactly along W[:, 0] while subcomponent 0 is slightly
  // off: the METHODS max picks the tiny one (ratio 1e-3 on column 0); restricted to the
  // large-norm subcomponents (rel 0.1) subcomponent 0 carries column 0 again.
  decomp::Mat V4(3, 4), U4(4, 2);
  for (int j = 0; j < 3; ++j) {
    V4(j, j) = 1;
    U4(j, 0) = W(0, j), U4(j, 1) = W(1, j);
  }
  U4(0, 1) = 0.05;  // W[:, 0] = (1, 0): cos 0.9988, norm ratio 1.00125
  V4(0, 3) = 1e-3, U4(3, 0) = 1;
  r = decomp::mmcs_ml2r(W, V4, U4);
  CHECK(r.best_c[0] == 3);
  CHECK(r.cos_per_col[0] == doctest::Approx(1));
  CHECK(r.ratio_per_col[0] == doctest::Approx(1e-3));
  CHECK(r.ml2r == doctest::Approx((1e-3 + 2) / 3));
  r = decomp::mmcs_ml2r(W, V4, U4, 0.1);
  CHECK(r.best_c[0] == 0);
  CHECK(r.cos_per_col[0] == doctest::Approx(1 / std::sqrt(1 + 0.05 * 0.05)));
  CHECK(r.ratio_per_col[0] == doctest::Approx(std::sqrt(1 + 0.05 * 0.05)));
  CHECK(r.best_c[1] == 1);
  CHECK(r.best_c[2] == 2);
  CHECK(r.mmcs == doctest::Approx((1 / std::sqrt(1 + 0.05 * 0.05) + 2) / 3));
  // all-zero components: no candidate, cosine and ratio 0 rather than a sentinel
  r = decomp::mmcs_ml2r(W, decomp::Mat(3, 4), U4, 0.1);
  CHECK(r.mmcs == 0);
  CHECK(r.ml2r == 0);
}

TEST_CASE("spd: cross-layer dense-k groups join the layers' one-hot CI matrices") {
  // Two layers, each holding half of one dense block: per layer k = 2 fails (one column each
  // is missing), joined k = 2 passes; a stray entry > 0.1 outside the block is one error.
  decomp::Mat a(3, 2), b(3, 3);
  a.a = {1, 0, 0.95, 0, 1, 0};
  b.a = {0, 1, 0, 0, 0.92, 0, 0, 1, 0};
  const decomp::Mat j = decomp::join_columns({&a, &b});
  REQUIRE(j.rows == 3);
  REQUIRE(j.cols == 5);
  CHECK(j(1, 0) == 0.95);
  CHECK(j(1, 3) == 0.92);
  CHECK(decomp::dense_k_error(a, 2) == 1);
  CHECK(decomp::dense_k_error(b, 2) == 1);
  CHECK(decomp::dense_k_error(j, 2) == 0);
  b(2, 2) = 0.3;
  CHECK(decomp::dense_k_error(decomp::join_columns({&a, &b}), 2) == 1);
  decomp::Mat short_rows(2, 2);
  CHECK_THROWS_WITH(decomp::join_columns({&a, &short_rows}), doctest::Contains("row counts differ"));

  // Wiring through evaluate(): the group's error is the dense-k error of the joined matrices
  // of exactly the named layers, and config / layer-name errors name the group.
  spd_test::TinyTMS tms(5, 3, true, ad::DType::f64);
  decomp::Target tgt = tms.target();
  nlohmann::json cj = nlohmann::json::parse(R"({
    "C": 4, "losses": [{"name": "stochastic_recon", "coeff": 1}], "eval_batch": 64,
    "dense_k_groups": [{"name": "hidden and out", "layers": ["hidden_layers.0", "linear2"], "k": 3}]
  })");
  decomp::DecompConfig cfg = decomp::parse_decomp_config(cj, "groups.json");
  REQUIRE(cfg.dense_k_groups.size() == 1);
  ad::Rng rng(5);
  decomp::SPD spd(tgt, cfg, rng);
  ad::Rng eval_rng(9);
  decomp::EvalResult ev = decomp::evaluate(spd, eval_rng, cfg.dense_k, cfg.dense_k_groups);
  REQUIRE(ev.groups.size() == 1);
  const decomp::Mat joined = decomp::join_columns({&ev.layers[1].ci_onehot, &ev.layers[2].ci_onehot});
  CHECK(joined.cols == 8);
  CHECK(ev.groups[0].dense_k_error == decomp::dense_k_error(joined, 3));
  CHECK(ev.groups[0].onehot_active == decomp::alive_components(joined, cfg.ci_threshold));
  CHECK(ev.groups[0].block_coverage.median == decomp::dense_k_block_coverage(joined, 3, cfg.ci_threshold).median);
  CHECK(ev.groups[0].block_coverage.features_using_all ==
        decomp::dense_k_block_coverage(joined, 3, cfg.ci_threshold).features_using_all);
  decomp::DenseKGroup bad{"typo group", {"linear1", "linear3"}, 2};
  CHECK_THROWS_WITH(decomp::evaluate(spd, eval_rng, {}, {bad}),
                    doctest::Contains("dense_k_groups[0].layers: no decomposed layer 'linear3' (the "));
  cj["dense_k_groups"][0].erase("k");
  CHECK_THROWS_WITH(decomp::parse_decomp_config(cj, "groups.json"), doctest::Contains("groups.json: dense_k_groups[0].k: required key is missing"));
  cj["dense_k_groups"][0]["k"] = 2;
  cj["dense_k_groups"][0]["layer"] = {"linear1"};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(cj, "groups.json"), doctest::Contains("groups.json: dense_k_groups[0].layer: unknown key"));
}

TEST_CASE("spd: config errors name the file and field") {
  nlohmann::json j = {{"C", 2}, {"losses", {{{"name", "stochastic_recon"}, {"coef", 1}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"),
                    doctest::Contains("cfg.json: losses[0].coef: is not a key of loss term 'stochastic_recon'"));
  j = {{"C", 2}, {"losses", {{{"name", "stochastic"}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"),
                    doctest::Contains("cfg.json: losses[0].name: unknown loss term 'stochastic'"));
  j = {{"C", 2}, {"ci_fn", {{"type", "mlp"}, {"hidden", {4, 4}}}}, {"losses", {{{"name", "faithfulness"}}}}};
  OneLinear m;
  decomp::Target t = m.target();
  ad::Rng rng(1);
  CHECK_THROWS_WITH(decomp::SPD(t, decomp::parse_decomp_config(j, "c"), rng), doctest::Contains("exactly one hidden layer"));
  // sign-PGD fields: only on pgd_recon terms, and checked
  j = {{"C", 2}, {"losses", {{{"name", "stochastic_recon"}, {"pgd_steps", 2}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"),
                    doctest::Contains("cfg.json: losses[0].pgd_steps: is not a key of loss term 'stochastic_recon'"));
  j = {{"C", 2}, {"losses", {{{"name", "pgd_recon_subset"}, {"pgd_init", "random"}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"), doctest::Contains("losses[0].pgd_init: must be uniform, ones or zeros"));
  j = {{"C", 2}, {"losses", {{{"name", "pgd_recon"}, {"pgd_scope", "batch"}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"), doctest::Contains("pgd_scope: must be shared or per_example"));
  j = {{"C", 2}, {"losses", {{{"name", "pgd_recon"}, {"pgd_step_size", 0}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"), doctest::Contains("pgd_step_size: must be > 0"));
  j = {{"C", 2}, {"losses", {{{"name", "pgd_recon"}, {"routing", "layerwise"}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"), doctest::Contains("routing all, uniform_k or static_p"));
  j = {{"C", 2}, {"losses", {{{"name", "pgd_recon_subset"}, {"pgd_steps", 3}}}}};
  const decomp::DecompConfig ok = decomp::parse_decomp_config(j, "cfg.json");
  const nlohmann::json okp = ok.losses[0]->params();
  CHECK(okp["routing"] == "uniform_k");
  CHECK(okp["pgd_steps"] == 3);
  CHECK(okp["pgd_init"] == "uniform");
  CHECK(okp["pgd_scope"] == "shared");
  // A field the term would ignore is refused, naming the term.
  j = {{"C", 2}, {"losses", {{{"name", "pgd_recon"}, {"n_mask_samples", 4}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"),
                    doctest::Contains("losses[0].n_mask_samples: is not a key of loss term 'pgd_recon'"));
  j = {{"C", 2}, {"losses", {{{"name", "faithfulness"}, {"p", 1}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"), doctest::Contains("losses[0].p: is not a key of loss term 'faithfulness'"));
  j = {{"C", 2}, {"losses", {{{"name", "ci_masked_recon"}, {"routing", "all"}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"), doctest::Contains("routing: is not a key of loss term 'ci_masked_recon'"));
  j = {{"C", 2}, {"losses", {{{"name", "stochastic_recon_layerwise"}, {"route_p", 0.5}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"),
                    doctest::Contains("route_p: is not a key of loss term 'stochastic_recon_layerwise'"));
  j = {{"C", 2},
       {"losses",
        {{{"name", "stochastic_recon_layerwise"}, {"n_mask_samples", 2}},
         {{"name", "stochastic_recon"}, {"routing", "static_p"}, {"route_p", 0.5}},
         {{"name", "importance_minimality"}, {"p", 1}, {"p_final", 0.5}, {"beta", 2}}}}};
  const decomp::DecompConfig fields = decomp::parse_decomp_config(j, "cfg.json");
  CHECK(fields.losses[0]->params()["n_mask_samples"] == 2);
  CHECK(fields.losses[1]->params()["routing"] == "static_p");
  CHECK(fields.losses[2]->params()["beta"] == 2);
  // A kind configured twice needs distinct labels; metrics and logs use the labels.
  j = {{"C", 2}, {"losses", {{{"name", "stochastic_recon"}}, {{"name", "stochastic_recon"}, {"n_mask_samples", 2}}}}};
  CHECK_THROWS_WITH(decomp::parse_decomp_config(j, "cfg.json"),
                    doctest::Contains("losses[1].label: 'stochastic_recon' names two terms"));
  j["losses"][1]["label"] = "stochastic_recon_x2";
  const decomp::DecompConfig twice = decomp::parse_decomp_config(j, "cfg.json");
  CHECK(twice.losses[1]->label == "stochastic_recon_x2");
  CHECK(twice.losses[1]->kind == "stochastic_recon");
}

// Evaluation reports each configured term with its own parameters under its label; the
// monitor kinds fill in only the names no configured term took. A stochastic_recon routed
// to no layer (static_p, p = 0) reconstructs the target exactly, so its value is 0, while the
// default stochastic_recon (every layer masked) is not.
TEST_CASE("spd: evaluation reports a configured term with its own parameters, and each label once") {
  OneLinear m;
  decomp::Target t = m.target();
  t.n_features = 0;
  nlohmann::json j = {{"C", 2},
                      {"eval_batch", 64},
                      {"losses",
                       {{{"name", "stochastic_recon"}, {"routing", "static_p"}, {"route_p", 0.0}},
                        {{"name", "stochastic_recon"}, {"label", "stochastic_recon_all"}, {"n_mask_samples", 2}},
                        {{"name", "ci_masked_recon"}, {"coeff", 0}}}}};
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "eval.json");
  ad::Rng init(4);
  decomp::SPD spd(t, cfg, init);
  ad::Rng eval_rng(6);
  const decomp::EvalResult ev = decomp::evaluate(spd, eval_rng);
  REQUIRE(ev.losses.count("stochastic_recon") == 1);
  CHECK(ev.losses.at("stochastic_recon") == 0.0);
  REQUIRE(ev.losses.count("stochastic_recon_all") == 1);
  CHECK(ev.losses.at("stochastic_recon_all") > 1e-6);
  // the monitors not configured are there once, under their kind names
  for (const char* k : {"ci_masked_recon", "unmasked_recon", "faithfulness"}) CHECK(ev.losses.count(k) == 1);
  CHECK(ev.losses.size() == 5);
  const std::vector<std::shared_ptr<const decomp::LossTerm>> terms = decomp::evaluated_terms(cfg);
  CHECK(terms.size() == 5);
}

TEST_CASE("spd: a non-finite loss stops training with the step, the term values and the first bad op") {
  OneLinear m;
  decomp::Target t = m.target();
  decomp::DecompConfig cfg = small_config();
  cfg.train.steps = 5;
  ad::Rng init(2);
  decomp::SPD spd(t, cfg, init);
  // a NaN in one subcomponent entry: x V is NaN for every example from step 0 on
  Tensor V = spd.cm.layers[0].V;
  V.set_item(1, std::nan(""));
  try {
    decomp::train_decomposition(spd, nullptr);
    FAIL("train_decomposition did not stop");
  } catch (const ad::Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("not finite at step 0") != std::string::npos);
    CHECK(msg.find("stochastic_recon = nan") != std::string::npos);
    CHECK(msg.find("NaN guard: forward of op 'matmul'") != std::string::npos);  // h = x V
  }
  CHECK_FALSE(ad::nan_guard());  // the replay's guard is switched off again
}

// The printed table: a layer expected to be dense-k shows its dense-k error and no identity
// error (it has no identity pattern to miss); metrics.json still carries both numbers.
TEST_CASE("spd: result table prints '-' for the identity error of a dense-k layer, metrics.json keeps it") {
  spd_test::TinyTMS tms(5, 3, true, ad::DType::f64);
  decomp::Target tgt = tms.target();
  nlohmann::json cj = nlohmann::json::parse(R"({
    "C": 4, "losses": [{"name": "stochastic_recon", "coeff": 1}], "eval_batch": 64,
    "dense_k": {"hidden_layers.0": 3}
  })");
  decomp::DecompConfig cfg = decomp::parse_decomp_config(cj, "table.json");
  ad::Rng rng(5);
  decomp::SPD spd(tgt, cfg, rng);
  ad::Rng eval_rng(9);
  const decomp::EvalResult ev = decomp::evaluate(spd, eval_rng, cfg.dense_k, cfg.dense_k_groups);
  REQUIRE(ev.layers.size() == 3);
  REQUIRE(ev.layers[1].name == "hidden_layers.0");
  REQUIRE(ev.layers[1].identity_error >= 0);
  REQUIRE(ev.layers[1].dense_k == 3);
  // Row fields: layer C alive norm>.1 CI_L0 id-err dense-k-error (k=..) MMCS ML2R
  std::map<std::string, std::vector<std::string>> rows;
  std::istringstream table(pd::result_table(spd, ev, -1));
  for (std::string line; std::getline(table, line);) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (f.size() >= 7) rows[f[0]] = f;
  }
  REQUIRE(rows.count("linear1"));
  REQUIRE(rows.count("hidden_layers.0"));
  CHECK(rows["linear1"][5] == std::to_string(ev.layers[0].identity_error));
  CHECK(rows["linear1"][6] == "-");
  CHECK(rows["hidden_layers.0"][5] == "-");
  CHECK(rows["hidden_layers.0"][6] == std::to_string(ev.layers[1].dense_k_error));
  CHECK(rows["hidden_layers.0"][7] == "(k=3)");
  const nlohmann::json m = decomp::metrics_json(spd, ev, decomp::TrainLog{}, nlohmann::json::object());
  CHECK(m["layers"]["hidden_layers.0"]["identity_ci_error"] == ev.layers[1].identity_error);
  CHECK(m["layers"]["hidden_layers.0"]["dense_k_error"] == ev.layers[1].dense_k_error);
  const decomp::BlockCoverage bc = decomp::dense_k_block_coverage(ev.layers[1].ci_onehot, 3, cfg.ci_threshold);
  const nlohmann::json& mc = m["layers"]["hidden_layers.0"]["dense_k_block_columns_per_feature"];
  CHECK(mc["min"] == bc.min);
  CHECK(mc["max"] == bc.max);
  CHECK(mc["median"] == bc.median);
  CHECK(mc["features_using_all_k"] == bc.features_using_all);
  CHECK(!m["layers"]["linear1"].contains("dense_k_block_columns_per_feature"));
  CHECK(pd::result_table(spd, ev, -1).find("hidden_layers.0: a feature switches on " + std::to_string(bc.min) + "-" +
                                               std::to_string(bc.max) + " of the 3 dense-k block columns") !=
        std::string::npos);
}

// Every shipped config parses with the current readers (keys renamed or retired would throw).
TEST_CASE("configs: every shipped run and decomposition config parses") {
  int n = 0;
  for (const char* dir : {"experiments/configs", "experiments/configs/variants"})
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.path().extension() != ".json") continue;
      const std::string path = e.path().string(), name = e.path().filename().string();
      INFO(path);
      if (name.rfind("spd_", 0) == 0 || name.rfind("apd_", 0) == 0 || name.rfind("vpd_", 0) == 0)
        CHECK_NOTHROW(decomp::parse_decomp_config(models::read_json_file(path), path));
      else CHECK_NOTHROW(models::load_run_config(path));
      ++n;
    }
  CHECK(n >= 25);
}
