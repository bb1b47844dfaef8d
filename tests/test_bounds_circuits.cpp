// Tests for the circuits-in-superposition constructions (experiments/bounds/rotation.*,
// embedding.*): the published construction's per-layer embeddings, its corrected link matrix on a
// hand-computed case, exactness for one circuit, the readout formula, the figures the authors
// quote, and the fixed-embedding contrast.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "experiments/bounds/circuits.hpp"

using namespace pd::bounds;

namespace {

Embedding hand_embedding(int K, int S, std::vector<std::vector<int>> rows) {
  Embedding E;
  E.K = K, E.S = S, E.rows = std::move(rows);
  return E;
}

CircuitConfig small_config(Construction c, int D, int T, int S, int z, int L, int trials, std::uint64_t seed) {
  CircuitConfig cfg = with_construction_defaults(CircuitConfig{}, c);
  cfg.D = D, cfg.T = T, cfg.S = S, cfg.z = z, cfg.L = L, cfg.trials = trials, cfg.seed = seed;
  return cfg;
}

}  // namespace

TEST_CASE("circuits: kappa makes the mean unwanted coupling zero (hand-computed case)") {
  // K = 4, S = 2, T = 3. E_0 rows {0,1}, {2,3}, {0,2}; E_1 = E_0 with rows permuted (2, 0, 1).
  const auto E0 = hand_embedding(4, 2, {{0, 1}, {2, 3}, {0, 2}});
  const auto E1 = hand_embedding(4, 2, {{0, 2}, {0, 1}, {2, 3}});
  // Chat[n, m] = 1 iff some t has n in E1[t], m in E0[t]:
  //   t0: n {0,2} x m {0,1};  t1: n {0,1} x m {2,3};  t2: n {2,3} x m {0,2}  -> 11 distinct entries.
  // U over t < u of linked entries between E1[t] and E0[u]: (0,1): 3, (0,2): 4, (1,2): 3 -> U = 10;
  // P = S^2 T (T-1) / 2 = 12, kappa = U / (P - U) = 5.
  const auto C = build_link(E1, E0, LinkCorrection::CircuitPairs);
  CHECK(C.n_linked == 11);
  CHECK(C.unwanted_linked == 10);
  CHECK(C.unwanted_total == 12);
  CHECK(C.correction == doctest::Approx(5.0));
  const std::vector<double> expect = {1, 1, 1, 1,    // n = 0
                                      -5, -5, 1, 1,  // n = 1
                                      1, 1, 1, -5,   // n = 2
                                      1, -5, 1, -5}; // n = 3
  for (int k = 0; k < 16; ++k) CHECK(C.C[k] == expect[k]);
  CHECK(std::fabs(mean_unwanted_coupling(C, E1, E0)) < 1e-15);
  // Without the correction the mean unwanted coupling is U / P = 10/12.
  auto raw = C;
  for (double& c : raw.C) c = std::max(c, 0.0);
  CHECK(mean_unwanted_coupling(raw, E1, E0) == doctest::Approx(10.0 / 12.0));
  // One circuit: no pairs, nothing to correct.
  const auto one = hand_embedding(4, 2, {{1, 3}});
  CHECK(build_link(one, one, LinkCorrection::CircuitPairs).correction == 0.0);
}

TEST_CASE("circuits: kappa zeroes the unwanted coupling of a packed, permuted embedding; chi zeroes the total") {
  Rng rng(9);
  const auto E0 = build_embedding(60, 80, 4, rng);
  const auto E1 = permute_rows(E0, rng);
  const auto kappa = build_link(E1, E0, LinkCorrection::CircuitPairs);
  CHECK(std::fabs(mean_unwanted_coupling(kappa, E1, E0)) < 1e-12);
  CHECK(kappa.correction > 0.0);
  const auto chi = build_link(E0, E0, LinkCorrection::AllEntries);
  double sum = 0;
  for (double c : chi.C) sum += c;
  CHECK(std::fabs(sum) < 1e-9);
  CHECK(chi.correction == doctest::Approx(static_cast<double>(chi.n_linked) / (60.0 * 60.0 - chi.n_linked)));
  for (const auto& row : E0.rows)
    for (int n : row)
      for (int m : row) CHECK(chi.C[n * 60 + m] == 1.0);
}

TEST_CASE("circuits: every later layer's embedding is a row permutation of the first") {
  const auto net = build_network(small_config(Construction::Published, 400, 120, 4, 2, 4, 10, 3));
  REQUIRE(net.emb.size() == 4u);
  auto sorted_rows = [](const Embedding& E) {
    auto r = E.rows;
    std::sort(r.begin(), r.end());
    return r;
  };
  for (int l = 1; l < 4; ++l) {
    CHECK(sorted_rows(net.emb[l]) == sorted_rows(net.emb[0]));
    CHECK(net.emb[l].rows != net.emb[0].rows);  // 120! orders: equal only by a broken permutation
  }
  const auto fixed = build_network(small_config(Construction::FixedEmbedding, 400, 120, 4, 2, 4, 10, 3));
  for (int l = 1; l < 4; ++l) CHECK(fixed.emb[l].rows == fixed.emb[0].rows);
}

TEST_CASE("circuits: layer weights equal the construction formula entry by entry") {
  for (auto c : {Construction::Published, Construction::FixedEmbedding}) {
    CAPTURE(construction_name(c));
    const auto net = build_network(small_config(c, 80, 30, 3, 1, 3, 1, 4));
    const int K = net.K, d = kRotD, D = 80, S = 3;
    const auto lw = net.layer_weight(3);
    const auto& Eo = net.emb[2].rows;
    const auto& Ei = net.emb[1].rows;
    const auto link = build_link(net.emb[2], net.emb[1],
                                 c == Construction::Published ? LinkCorrection::CircuitPairs : LinkCorrection::AllEntries);
    const auto mean = net.mean_weight(3);
    if (c == Construction::Published) {
      CHECK(mean == net.circuits.shared_weight());
      CHECK(mean[8] == doctest::Approx(2.0));  // lift alpha + b = 2 from a0 to a2
    }
    double worst = 0;
    for (int i = 0; i < d; ++i)
      for (int n = 0; n < K; ++n)
        for (int j = 0; j < d; ++j)
          for (int m = 0; m < K; ++m) {
            double expect = mean[i * d + j] * link.C[n * K + m];
            for (int t = 0; t < 30; ++t) {
              const bool en = std::count(Eo[t].begin(), Eo[t].end(), n) > 0;
              const bool em = std::count(Ei[t].begin(), Ei[t].end(), m) > 0;
              if (en && em) expect += net.circuits.weight(t, 3)[i * d + j] - mean[i * d + j];
            }
            worst = std::max(worst, std::fabs(lw.W[(i * K + n) * D + (j * K + m)] - expect / S));
          }
    CHECK(worst < 1e-12);
    CHECK(lw.link_correction == doctest::Approx(link.correction));
  }
}

TEST_CASE("circuits: the small circuit is exact: step on-indicator, x + on (1,1) rotated when on, 0 when off") {
  RotationCircuits rc;
  rc.T = 1, rc.L = 1, rc.alpha = 1.0, rc.beta = 1.0, rc.theta = {0.7};
  const auto w = rc.weight(0, 1);
  const auto b = rc.bias();
  const double x0 = std::cos(2.0), x1 = std::sin(2.0);
  const double on_state[4] = {1.5, 0.5, x0 + 1, x1 + 1}, off_state[4] = {0, 0, 0, 0};
  double out_on[4], out_off[4];
  for (int i = 0; i < 4; ++i) {
    double p = b[i], q = b[i];
    for (int j = 0; j < 4; ++j) p += w[i * 4 + j] * on_state[j], q += w[i * 4 + j] * off_state[j];
    out_on[i] = std::max(p, 0.0), out_off[i] = std::max(q, 0.0);
  }
  CHECK(out_on[0] == doctest::Approx(1.5));
  CHECK(out_on[1] == doctest::Approx(0.5));
  CHECK(out_on[2] == doctest::Approx(std::cos(0.7) * x0 - std::sin(0.7) * x1 + 1.0));
  CHECK(out_on[3] == doctest::Approx(std::sin(0.7) * x0 + std::cos(0.7) * x1 + 1.0));
  for (double v : out_off) CHECK(v == 0.0);
}

TEST_CASE("circuits: one active circuit alone is computed exactly through every layer") {
  // T = 1 (no other circuit), and T S <= K (disjoint rows: other circuits never light up).
  for (auto c : {Construction::Published, Construction::FixedEmbedding})
    for (auto [D, T] : {std::pair<int, int>{20, 1}, std::pair<int, int>{400, 16}}) {
      CAPTURE(construction_name(c));
      CAPTURE(T);
      const auto r = run_rotation(small_config(c, D, T, 5, 1, 6, 20, 2));
      REQUIRE(r.layers.size() == 6u);
      for (const auto& s : r.layers) {
        CHECK(s.mse_x_active < 1e-24);
        CHECK(s.on_active < 1e-24);
        CHECK(s.mse_x_inactive < 1e-24);
      }
    }
}

TEST_CASE("circuits: the readout subtracts the estimated on value (published) or the true one (fixed)") {
  // K = 3, S = 2, B = 2 trials; circuit 0 sits on positions {0, 2}. A is [D = 12, B = 2].
  CircuitConfig cfg = small_config(Construction::Published, 12, 1, 2, 1, 1, 2, 1);
  SuperposedNetwork net;
  net.cfg = cfg;
  net.K = 3;
  net.emb = {hand_embedding(3, 2, {{0, 2}})};
  std::vector<double> A(12 * 2, 0.0);
  auto set = [&](int i, int n, double v) { A[(i * 3 + n) * 2 + 1] = v; };  // trial b = 1
  set(0, 0, 1.4), set(0, 2, 1.6);  // est_a0 = 1.5
  set(1, 0, 0.7), set(1, 2, 0.5);  // est_a1 = 0.6  -> est_on = 0.9
  set(2, 0, 1.2), set(2, 2, 1.0);  // est_a2 = 1.1
  set(3, 0, 0.1), set(3, 2, 0.5);  // est_a3 = 0.3
  set(2, 1, 99.0);                 // position 1 is not the circuit's: never read
  const auto e = read_circuit(net, 1, 0, A.data(), 2, 1, 1.0);
  CHECK(e.a[0] == doctest::Approx(1.5));
  CHECK(e.on == doctest::Approx(0.9));
  CHECK(e.x[0] == doctest::Approx(1.1 - 0.9));
  CHECK(e.x[1] == doctest::Approx(0.3 - 0.9));
  net.cfg = with_construction_defaults(cfg, Construction::FixedEmbedding);  // alpha 2, true on = 1
  const auto f = read_circuit(net, 1, 0, A.data(), 2, 1, 1.0);
  CHECK(f.x[0] == doctest::Approx(1.1 - 2.0));
  CHECK(f.x[1] == doctest::Approx(0.3 - 2.0));
  const auto zero = read_circuit(net, 1, 0, A.data(), 2, 0, 0.0);  // trial 0 is all zero
  CHECK(zero.on == 0.0);
  CHECK(zero.x[0] == 0.0);
}

TEST_CASE("circuits: published construction gives the authors' figures at D=2000 T=400 L=4 z=1") {
  // The authors' reference code gives active MSE_x ~ 0.0010, 0.0026, 0.0043 at layers 2..4
  // (METHODS formula: 0.0010, 0.0020, 0.0030); the fixed-embedding contrast is 15-120x above.
  auto cfg = small_config(Construction::Published, 2000, 400, 6, 1, 4, 300, 1);
  const auto r = run_rotation(cfg);
  const double authors[3] = {0.0010, 0.0026, 0.0043};
  for (int l = 2; l <= 4; ++l) {
    CAPTURE(l);
    CHECK(r.layers[l - 1].mse_x_active / authors[l - 2] == doctest::Approx(1.0).epsilon(0.2));
  }
  CHECK(r.layers[1].pred_x_active == doctest::Approx(0.001003).epsilon(0.01));
  const auto fixed = run_rotation(with_construction_defaults(cfg, Construction::FixedEmbedding));
  CHECK(fixed.layers[3].mse_x_active > 50 * r.layers[3].mse_x_active);
}

TEST_CASE("circuits: same-position coupling term predicts the fixed-embedding z=1 layer-2 error") {
  const auto net = build_network(small_config(Construction::FixedEmbedding, 1000, 300, 6, 1, 2, 600, 6));
  const auto r = run_rotation(net);
  CHECK(r.layers[1].mse_x_active / same_position_coupling_mse(net) == doctest::Approx(1.0).epsilon(0.3));
  CHECK_THROWS_AS(same_position_coupling_mse(build_network(small_config(Construction::Published, 1000, 300, 6, 1, 2, 1, 6))),
                  ad::Error);
}

TEST_CASE("circuits: small-size predictions hold below breakdown and breakdown is reported broken") {
  // T (d/D)^2 = 0.002, z = 2, 4 layers: active and inactive errors within 1.5x at every layer.
  const auto ok = run_rotation(small_config(Construction::Published, 1000, 125, 6, 2, 4, 600, 3));
  for (const auto& s : ok.layers) {
    CAPTURE(s.layer);
    CHECK(CheckRow{"c", "active", "", CheckKind::Ratio, s.mse_x_active, s.pred_x_active, 1.5, ""}.held());
    CHECK(CheckRow{"c", "inactive", "", CheckKind::Ratio, s.mse_x_inactive, s.pred_x_inactive, 1.5, ""}.held());
  }
  CHECK(ok.delta_measured == doctest::Approx(ok.delta).epsilon(0.05));
  // Far past breakdown (T (d/D)^2 = 0.012, 4 layers): inactive circuits leak through the ReLUs.
  const auto bad = run_rotation(small_config(Construction::Published, 1000, 750, 6, 2, 4, 200, 3));
  const auto& s = bad.layers.back();
  CHECK_FALSE(CheckRow{"c", "inactive", "", CheckKind::Ratio, s.mse_x_inactive, s.pred_x_inactive, 1.5, ""}.held());
  CHECK(s.mse_x_inactive > 5 * s.pred_x_inactive);
  CHECK(s.active_fraction > 3 * s.pred_active_fraction);
}

TEST_CASE("circuits: active-neuron fraction is z S d / D when active circuits are disjoint") {
  const auto r = run_rotation(small_config(Construction::Published, 400, 20, 5, 3, 1, 50, 8));
  CHECK(r.layers[0].active_fraction == doctest::Approx(3.0 * 5 * 4 / 400.0).epsilon(1e-12));
  CHECK(r.layers[0].pred_active_fraction == doctest::Approx(0.15));
}

TEST_CASE("circuits: --json carries the table's figures per layer") {
  const auto r = run_rotation(small_config(Construction::Published, 400, 60, 4, 2, 3, 40, 5));
  const auto j = nlohmann::json::parse(rotation_json(r));
  CHECK(j["construction"] == "published");
  CHECK(j["D"] == 400);
  CHECK(j["alpha"] == 1.0);
  CHECK(j["b"] == 1.0);
  REQUIRE(j["layers"].size() == 3u);
  for (int l = 0; l < 3; ++l) {
    const auto& jl = j["layers"][l];
    const auto& s = r.layers[l];
    CHECK(jl["layer"] == l + 1);
    CHECK(jl["mse_x_active"].get<double>() == s.mse_x_active);
    CHECK(jl["mse_x_active_pred"].get<double>() == s.pred_x_active);
    CHECK(jl["mse_x_inactive"].get<double>() == s.mse_x_inactive);
    CHECK(jl["mse_x_inactive_pred"].get<double>() == s.pred_x_inactive);
    CHECK(jl["mse_on_active"].get<double>() == s.on_active);
    CHECK(jl["active_neuron_fraction"].get<double>() == s.active_fraction);
  }
}

TEST_CASE("circuits: bad names and sizes are errors naming the value") {
  CHECK_THROWS_WITH_AS(parse_construction("fixed"), doctest::Contains("'fixed'"), ad::Error);
  CHECK_THROWS_WITH_AS(parse_rotations("each"), doctest::Contains("'each'"), ad::Error);
  CHECK_THROWS_WITH_AS(parse_packing("tight"), doctest::Contains("'tight'"), ad::Error);
  CHECK_THROWS_AS(build_network(small_config(Construction::Published, 402, 10, 3, 1, 2, 1, 1)), ad::Error);
  CHECK_THROWS_AS(build_network(small_config(Construction::Published, 400, 10, 3, 1, 2, 0, 1)), ad::Error);
  auto cfg = small_config(Construction::Published, 400, 10, 3, 1, 2, 1, 1);
  cfg.beta = -1;
  CHECK_THROWS_AS(build_network(cfg), ad::Error);
}
