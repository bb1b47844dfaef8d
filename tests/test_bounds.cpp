// Tests for experiments/bounds: construction invariants, predictions at small sizes, breakdown
// reported as broken, fits and the held/broken logic.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "experiments/bounds/circuits.hpp"
#include "experiments/bounds/interference.hpp"
#include "experiments/bounds/report.hpp"
#include "experiments/bounds/rng.hpp"

using namespace pd::bounds;

TEST_CASE("bounds: rng is reproducible and its normals have unit variance") {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 10; ++i) CHECK(a.next_u64() == b.next_u64());
  CHECK(Rng(42).next_u64() != c.next_u64());
  Rng r(7);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = r.normal();
    s += x, s2 += x * x;
  }
  CHECK(std::fabs(s / n) < 0.01);
  CHECK(std::fabs(s2 / n - 1.0) < 0.015);
  auto idx = sample_distinct(r, 50, 20);
  CHECK(std::set<int>(idx.begin(), idx.end()).size() == 20);
}

TEST_CASE("bounds: fit_loglog recovers an exact power law and rejects bad input") {
  std::vector<double> x = {1, 2, 4, 8, 16}, y;
  for (double v : x) y.push_back(3.0 * std::pow(v, -0.75));
  const auto f = fit_loglog(x, y, "test");
  CHECK(f.slope == doctest::Approx(-0.75).epsilon(1e-12));
  CHECK(std::exp(f.intercept) == doctest::Approx(3.0).epsilon(1e-12));
  CHECK(f.r2 == doctest::Approx(1.0));
  CHECK_THROWS_AS(fit_loglog({1.0}, {1.0}, "one point"), ad::Error);
  CHECK_THROWS_AS(fit_loglog({1.0, 2.0}, {1.0, -1.0}, "negative"), ad::Error);
}

TEST_CASE("bounds: held/broken follows the stated tolerance for each kind") {
  CheckRow r{"t", "q", "p", CheckKind::Ratio, 1.4, 1.0, 1.5, ""};
  CHECK(r.held());
  r.measured = 0.6;  // ratio 0.6 < 1/1.5
  CHECK_FALSE(r.held());
  r.measured = 1.6;
  CHECK_FALSE(r.held());
  CheckRow s{"t", "q", "p", CheckKind::Slope, 1.8, 2.0, 0.3, ""};
  CHECK(s.held());
  s.measured = 1.6;
  CHECK_FALSE(s.held());
  CheckRow b{"t", "q", "p", CheckKind::Bound, 0.0, 1.0, 1.5, ""};
  CHECK(b.held());
  b.measured = 1.6;
  CHECK_FALSE(b.held());
  CheckRow nan_row{"t", "q", "p", CheckKind::Ratio, std::nan(""), 1.0, 1.5, ""};
  CHECK_FALSE(nan_row.held());  // a failed measurement is never reported as held
}

TEST_CASE("bounds: interference of random unit vectors matches 1/n and sqrt(l/n)") {
  Rng rng(3);
  const int n = 128, m = 512;
  auto V = random_unit_vectors(n, m, rng);
  for (int i = 0; i < m; ++i) {
    double s = 0;
    for (int k = 0; k < n; ++k) s += V[i * n + k] * V[i * n + k];
    REQUIRE(s == doctest::Approx(1.0).epsilon(1e-12));
  }
  const auto st = overlap_stats(V, n, m);
  CHECK(st.mean_cos2 * n == doctest::Approx(1.0).epsilon(0.05));
  // max |cos| is below 2 sqrt(ln m / n) at these sizes but within the table's 1.25 tolerance
  const double pred = 2.0 * std::sqrt(std::log(m) / n);
  CHECK(st.max_abs_cos < 1.25 * pred);
  CHECK(st.max_abs_cos > pred / 1.25);
  const double noise = readout_noise_rms(V, n, m, 16, 64, rng);
  CHECK(noise / std::sqrt(16.0 / n) == doctest::Approx(1.0).epsilon(0.06));
  CHECK(exact_recovery_rate(V, n, m, 1, 20, rng) == 1.0);
  CHECK(exact_recovery_rate(V, n, m, n, 20, rng) == 0.0);
}

TEST_CASE("bounds: embedding has S ones per row and rows share at most one neuron") {
  Rng rng(11);
  const int K = 100, T = 300, S = 5;
  const auto E = build_embedding(K, T, S, rng);
  REQUIRE(E.T() == T);
  std::vector<int> usage(K, 0);
  for (const auto& row : E.rows) {
    REQUIRE(static_cast<int>(row.size()) == S);
    CHECK(std::set<int>(row.begin(), row.end()).size() == static_cast<size_t>(S));
    for (int n : row) {
      REQUIRE(n >= 0);
      REQUIRE(n < K);
      ++usage[n];
    }
  }
  int worst = 0;
  for (int t = 0; t < T; ++t)
    for (int u = t + 1; u < T; ++u) {
      int shared = 0;
      for (int n : E.rows[t]) shared += std::count(E.rows[u].begin(), E.rows[u].end(), n);
      worst = std::max(worst, shared);
    }
  CHECK(worst <= 1);
  // least-used-first keeps the load balanced, which the delta formula assumes
  CHECK(*std::max_element(usage.begin(), usage.end()) - *std::min_element(usage.begin(), usage.end()) <= 2);
  const double delta_formula = 1.0 / K - 1.0 / (static_cast<double>(S) * T);  // d/D = 1/K
  CHECK(measured_delta(E) == doctest::Approx(delta_formula).epsilon(0.05));
}

TEST_CASE("bounds: packing past the limit is an error, not a silent bad embedding") {
  Rng rng(5);
  CHECK(packing_limit(20, 5) == doctest::Approx(19.0));
  CHECK_THROWS_AS(build_embedding(20, 30, 5, rng), PackingError);
  CHECK_THROWS_AS(build_embedding(20, 3, 1, rng), ad::Error);
  // Bad arguments must not pass for a packing failure: largest_T_meeting treats those as "T too large".
  bool packing = false;
  try {
    build_embedding(20, 3, 1, rng);
  } catch (const PackingError&) {
    packing = true;
  } catch (const ad::Error&) {
  }
  CHECK_FALSE(packing);
}

// ---------------------------------------------------------------- U-AND

#include "experiments/bounds/uand.hpp"

TEST_CASE("bounds: U-AND reads an AND of the only two active features exactly") {
  Rng rng(21);
  const auto net = build_uand(400, 3000, 0.2, rng);
  for (const auto& w : net.wired) REQUIRE(std::is_sorted(w.begin(), w.end()));
  const auto e = measure_uand(net, 2, 400, rng);
  // both-active pair: every neuron wired to both sees exactly sum = 2 -> h = 1
  CHECK(e.bias_both == doctest::Approx(0.0).epsilon(1e-12));
  CHECK(e.empty_fraction == 0.0);
  // one-active pair (a on, b off): h_i = [the other active feature is wired to i] -> mean p
  CHECK(e.bias_one == doctest::Approx(0.2).epsilon(0.15));
  // no-active pair: needs two active features wired to i for h_i > 0 -> mean ~ p^2 * (l-1 choose ..) small
  CHECK(e.bias_none < 0.05);
  CHECK_THROWS_AS(build_uand(1, 10, 0.1, rng), ad::Error);
  CHECK_THROWS_AS(measure_uand(net, 1, 10, rng), ad::Error);
}

TEST_CASE("bounds: U-AND noise falls with d at fixed p") {
  Rng rng(22);
  const auto small = measure_uand(build_uand(1000, 500, 0.15, rng), 3, 600, rng);
  const auto large = measure_uand(build_uand(1000, 8000, 0.15, rng), 3, 600, rng);
  // 16x the neurons: the noise part should shrink ~4x (1/sqrt(d)); accept 2.5x..6x
  const double ratio = small.noise_rms / large.noise_rms;
  CHECK(ratio > 2.5);
  CHECK(ratio < 6.0);
}

// ---------------------------------------------------------------- TMS

#include "autodiff/gradcheck.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"
#include "experiments/bounds/tms_sweep.hpp"

TEST_CASE("bounds: TMS importance-weighted loss gradient matches finite differences") {
  ad::Rng rng(31);
  const int n = 7, m = 3, B = 6;
  ad::Tensor W = ad::rand_normal({m, n}, 0.0, 0.6, rng, ad::DType::f64);
  ad::Tensor b = ad::rand_normal({n}, 0.1, 0.3, rng, ad::DType::f64);
  ad::Tensor x = ad::rand_uniform({B, n}, 0.0, 1.0, rng, ad::DType::f64);
  std::vector<double> imp(n);
  for (int i = 0; i < n; ++i) imp[i] = std::pow(0.7, i);
  const ad::Tensor importance = ad::from_vector(imp, {n}, ad::DType::f64);
  W.requires_grad_();
  b.requires_grad_();
  const auto res = ad::gradcheck(
      [&](const std::vector<ad::Tensor>& in) { return tms_loss(in[0], in[1], x, importance); }, {W, b});
  INFO(res.report);
  CHECK(res.ok);
  CHECK(res.coords_checked == m * n + n);
  // and the value is the importance-weighted mean squared error
  const auto Wv = W.to_vector(), bv = b.to_vector(), xv = x.to_vector();
  double expect = 0;
  for (int r = 0; r < B; ++r)
    for (int i = 0; i < n; ++i) {
      double y = bv[i];
      for (int k = 0; k < m; ++k) {
        double h = 0;
        for (int j = 0; j < n; ++j) h += Wv[k * n + j] * xv[r * n + j];
        y += h * Wv[k * n + i];
      }
      y = std::max(y, 0.0);
      expect += imp[i] * (y - xv[r * n + i]) * (y - xv[r * n + i]) / (B * n);
    }
  CHECK(tms_loss(W, b, x, importance).item() == doctest::Approx(expect).epsilon(1e-12));
}

TEST_CASE("bounds: feature dimensionality is 1, 1/2 and 2/5 on the known geometries") {
  // W [m=2, n=5]: feature 0 alone on axis 0; features 1,2 antipodal on axis 1; 3,4 zero.
  std::vector<double> W = {1, 0, 0, 0, 0,  //
                           0, 1, -1, 0, 0};
  auto D = feature_dimensionalities(W, 2, 5);
  CHECK(D[0] == doctest::Approx(1.0));
  CHECK(D[1] == doctest::Approx(0.5));
  CHECK(D[2] == doctest::Approx(0.5));
  CHECK(D[3] == 0.0);
  // regular pentagon of unit vectors in 2D: D_i = 2/5
  std::vector<double> P(10);
  for (int i = 0; i < 5; ++i) P[i] = std::cos(2 * M_PI * i / 5), P[5 + i] = std::sin(2 * M_PI * i / 5);
  for (double d : feature_dimensionalities(P, 2, 5)) CHECK(d == doctest::Approx(0.4));
}

TEST_CASE("bounds: dense TMS learns m orthogonal features, sparse TMS superposes (short runs)") {
  TmsSweepConfig cfg;
  cfg.steps = 1200;
  cfg.batch = 512;
  const auto dense = train_tms(cfg, 0.0, 5);
  CHECK(dense.represented == 5);
  CHECK(dense.frob2 == doctest::Approx(5.0).epsilon(0.15));
  const auto sparse = train_tms(cfg, 0.95, 5);
  CHECK(sparse.represented > 5);
  CHECK(sparse.frob2 > 5.5);
}

TEST_CASE("bounds: the markdown table escapes '|' inside cells, so every row keeps its ten columns") {
  pd::bounds::CheckRow r;
  r.check = "tms";
  r.quantity = "||W||_F^2 / m";
  r.params = "n=20 m=5";
  r.note = "a|b";
  const std::string md = pd::bounds::format_table_markdown({r});
  const std::string row = md.substr(md.rfind("| tms"));
  int unescaped = 0;
  for (size_t i = 0; i < row.size(); ++i) unescaped += row[i] == '|' && (i == 0 || row[i - 1] != '\\');
  CHECK(unescaped == 11);
  CHECK(row.find("\\|\\|W\\|\\|_F^2") != std::string::npos);
}
