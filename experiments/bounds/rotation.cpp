#include "experiments/bounds/rotation.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "autodiff/gemm.hpp"

namespace pd::bounds {

// ---------------------------------------------------------------- names

const char* construction_name(Construction c) { return c == Construction::Published ? "published" : "fixed-embedding"; }

Construction parse_construction(const std::string& name) {
  if (name == "published") return Construction::Published;
  if (name == "fixed-embedding") return Construction::FixedEmbedding;
  ad::fail("construction: '" + name + "' is not one of published, fixed-embedding");
}

const char* rotations_name(Rotations r) { return r == Rotations::PerCircuit ? "per-circuit" : "per-layer"; }

Rotations parse_rotations(const std::string& name) {
  if (name == "per-circuit") return Rotations::PerCircuit;
  if (name == "per-layer") return Rotations::PerLayer;
  ad::fail("rotations: '" + name + "' is not one of per-circuit, per-layer");
}

CircuitConfig with_construction_defaults(CircuitConfig cfg, Construction c) {
  cfg.construction = c;
  if (c == Construction::Published) {
    cfg.alpha = 1.0, cfg.beta = 1.0, cfg.rotations = Rotations::PerCircuit;
  } else {
    cfg.alpha = 2.0, cfg.beta = 0.0, cfg.rotations = Rotations::PerLayer;
  }
  return cfg;
}

// ---------------------------------------------------------------- the small circuit

std::array<double, 16> RotationCircuits::weight(int t, int l) const {
  const double th = theta[static_cast<size_t>(l - 1) * T + t];
  const double c = std::cos(th), s = std::sin(th);
  // R = [[c, -s], [s, c]]. From a0 and a1 the pair gets (alpha + b) on - alpha R (1, 1) on, so
  // R (x + alpha on 1) + that - b = R x + alpha on 1 + b (on - 1).
  const double corr0 = alpha * (1.0 - (c - s)) + beta, corr1 = alpha * (1.0 - (s + c)) + beta;
  return {2.0,   -2.0,   0.0, 0.0,   // a0 <- 2 (a0 - a1)
          2.0,   -2.0,   0.0, 0.0,   // a1 <- 2 (a0 - a1)
          corr0, -corr0, c,   -s,    // a2
          corr1, -corr1, s,   c};    // a3
}

std::array<double, 16> RotationCircuits::shared_weight() const {
  const double lift = alpha + beta;
  return {2.0, -2.0, 0, 0, 2.0, -2.0, 0, 0, lift, -lift, 0, 0, lift, -lift, 0, 0};
}

// ---------------------------------------------------------------- the large network

SuperposedNetwork build_network(const CircuitConfig& cfg) {
  if (cfg.D <= 0 || cfg.D % kRotD != 0)
    ad::fail("rotation construction: D must be a positive multiple of d=4 (D=" + std::to_string(cfg.D) + ")");
  if (cfg.z < 1 || cfg.z > cfg.T) ad::fail("rotation construction: need 1 <= z <= T");
  if (cfg.L < 1) ad::fail("rotation construction: need L >= 1");
  if (cfg.trials < 1) ad::fail("rotation construction: need trials >= 1");
  if (!(cfg.beta >= 0) || !std::isfinite(cfg.beta)) ad::fail("rotation construction: beta (b) must be finite and >= 0");
  if (!std::isfinite(cfg.alpha)) ad::fail("rotation construction: alpha must be finite");
  SuperposedNetwork net;
  net.cfg = cfg;
  net.K = cfg.D / kRotD;
  Rng rng(cfg.seed * 0x9E3779B97F4A7C15ULL + 17);
  const Embedding first = build_embedding(net.K, cfg.T, cfg.S, rng, cfg.packing);
  net.circuits.T = cfg.T;
  net.circuits.L = cfg.L;
  net.circuits.alpha = cfg.alpha;
  net.circuits.beta = cfg.beta;
  net.circuits.theta.resize(static_cast<size_t>(cfg.L) * cfg.T);
  if (cfg.rotations == Rotations::PerLayer) {
    for (auto& th : net.circuits.theta) th = 2.0 * M_PI * rng.uniform();
  } else {
    for (int t = 0; t < cfg.T; ++t) net.circuits.theta[t] = 2.0 * M_PI * rng.uniform();
    for (int l = 1; l < cfg.L; ++l)
      std::copy_n(net.circuits.theta.begin(), cfg.T, net.circuits.theta.begin() + static_cast<long>(l) * cfg.T);
  }
  net.emb.push_back(first);
  for (int l = 2; l <= cfg.L; ++l)
    net.emb.push_back(cfg.construction == Construction::Published ? permute_rows(first, rng) : first);
  return net;
}

std::array<double, 16> SuperposedNetwork::mean_weight(int l) const {
  if (cfg.construction == Construction::Published) return circuits.shared_weight();
  std::array<double, 16> wbar{};
  for (int t = 0; t < cfg.T; ++t) {
    const auto w = circuits.weight(t, l);
    for (int k = 0; k < 16; ++k) wbar[k] += w[k] / cfg.T;
  }
  return wbar;
}

LayerWeights SuperposedNetwork::layer_weight(int l) const {
  if (l < 2 || l > cfg.L) ad::fail("layer_weight: layer " + std::to_string(l) + " is not in 2..L");
  const int D = cfg.D, S = cfg.S, T = cfg.T, d = kRotD;
  const Embedding& E_out = emb[l - 1];
  const Embedding& E_in = emb[l - 2];
  const LinkMatrix link = build_link(E_out, E_in,
                                     cfg.construction == Construction::Published ? LinkCorrection::CircuitPairs
                                                                                 : LinkCorrection::AllEntries);
  const auto mean = mean_weight(l);
  LayerWeights out;
  out.link_correction = link.correction;
  out.W.assign(static_cast<size_t>(D) * D, 0.0);
  std::vector<double>& W = out.W;
  const double invS = 1.0 / S;
  for (int i = 0; i < d; ++i)
    for (int n = 0; n < K; ++n) {
      double* row = &W[static_cast<size_t>(i * K + n) * D];
      const double* crow = &link.C[static_cast<size_t>(n) * K];
      for (int j = 0; j < d; ++j) {
        const double a = mean[i * d + j] * invS;
        for (int m = 0; m < K; ++m) row[j * K + m] = a * crow[m];
      }
    }
  for (int t = 0; t < T; ++t) {
    const auto w = circuits.weight(t, l);
    std::array<double, 16> dw;
    for (int k = 0; k < 16; ++k) dw[k] = (w[k] - mean[k]) * invS;
    for (int n : E_out.rows[t])
      for (int i = 0; i < d; ++i) {
        double* row = &W[static_cast<size_t>(i * K + n) * D];
        for (int m : E_in.rows[t])
          for (int j = 0; j < d; ++j) row[j * K + m] += dw[i * d + j];
      }
  }
  return out;
}

CircuitEstimate read_circuit(const SuperposedNetwork& net, int layer, int t, const double* A, int B, int b,
                             double on_true) {
  CircuitEstimate e;
  const int K = net.K, S = net.cfg.S;
  for (int i = 0; i < kRotD; ++i) {
    double s = 0.0;
    for (int n : net.emb[layer - 1].rows[t]) s += A[static_cast<size_t>(i * K + n) * B + b];
    e.a[i] = s / S;
  }
  e.on = e.a[0] - e.a[1];
  const double on_ref = net.cfg.construction == Construction::Published ? e.on : on_true;
  e.x = {e.a[2] - net.cfg.alpha * on_ref, e.a[3] - net.cfg.alpha * on_ref};
  return e;
}

// ---------------------------------------------------------------- predictions

double predicted_delta(const CircuitConfig& cfg) {
  return static_cast<double>(kRotD) / cfg.D - 1.0 / (static_cast<double>(cfg.S) * cfg.T);
}

LayerStats predict_layer(const CircuitConfig& cfg, int l, double delta) {
  LayerStats p;
  p.layer = l;
  const bool published = cfg.construction == Construction::Published;
  const double a2 = cfg.alpha * cfg.alpha;
  // Fixed-embedding: E||x + alpha (1,1)||^2 over the unit circle = 1 + 2 alpha^2 (9 for alpha = 2).
  const double c1 = published ? 9.0 : 1.0 + 2.0 * a2, c2 = published ? 8.0 : 2.0 * a2;
  const double z = cfg.z, L = l, T = cfg.T;  // doubles: (l-1)*T overflows int in the capacity bisection
  p.pred_x_active = c1 * L * (z - 1) * delta + (L - 1) * T * delta * delta * (z + c2 * (z - 1));
  // Inactive circuits: z delta ||a||^2 at every layer. Published: METHODS' z delta for the readout
  // est_x, whose offset is removed with the estimated on; fixed-embedding: ||a||^2 of the pair is c1.
  p.pred_x_inactive = published ? z * delta : z * delta * c1;
  p.pred_on_inactive = z * delta;
  // Active on-indicator: the step re-cleans it every layer, so at most one layer's overlap error.
  p.pred_on_active_bound = (z - 1) * delta;
  p.pred_active_fraction = z * cfg.S * kRotD / static_cast<double>(cfg.D);
  return p;
}

// ---------------------------------------------------------------- the forward pass

RotationResult run_rotation(const CircuitConfig& cfg) { return run_rotation(build_network(cfg)); }

// Layer 1: biases plus the active circuits' first-layer pre-activations w_t a_0 on their copies.
static void input_layer(const SuperposedNetwork& net, const std::vector<std::vector<int>>& active,
                        const std::vector<std::vector<std::array<double, 2>>>& x, std::vector<double>& Z) {
  const int K = net.K, B = net.cfg.trials, d = kRotD;
  const double alpha = net.cfg.alpha;
  for (int b = 0; b < B; ++b)
    for (size_t k = 0; k < active[b].size(); ++k) {
      const int t = active[b][k];
      const auto w = net.circuits.weight(t, 1);
      const double a0[4] = {1.5, 0.5, x[b][k][0] + alpha, x[b][k][1] + alpha};
      for (int i = 0; i < d; ++i) {
        double pre = 0.0;
        for (int j = 0; j < d; ++j) pre += w[i * d + j] * a0[j];
        for (int n : net.emb[0].rows[t]) Z[static_cast<size_t>(i * K + n) * B + b] += pre;
      }
    }
}

// Mean readout errors of every circuit at `layer`, active ones against their true x.
static void measure_layer(const SuperposedNetwork& net, int layer, const std::vector<double>& A,
                          const std::vector<std::vector<int>>& active,
                          const std::vector<std::vector<std::array<double, 2>>>& x, LayerStats& st) {
  const int T = net.cfg.T, z = net.cfg.z, B = net.cfg.trials;
  double sx_act = 0, son_act = 0, sx_in = 0, son_in = 0;
  std::vector<int> slot(T, -1);
  for (int b = 0; b < B; ++b) {
    for (int k = 0; k < z; ++k) slot[active[b][k]] = k;
    for (int t = 0; t < T; ++t) {
      const bool on = slot[t] >= 0;
      const auto e = read_circuit(net, layer, t, A.data(), B, b, on ? 1.0 : 0.0);
      if (on) {
        const auto& xt = x[b][slot[t]];
        sx_act += (e.x[0] - xt[0]) * (e.x[0] - xt[0]) + (e.x[1] - xt[1]) * (e.x[1] - xt[1]);
        son_act += (e.on - 1.0) * (e.on - 1.0);
      } else {
        sx_in += e.x[0] * e.x[0] + e.x[1] * e.x[1];
        son_in += e.on * e.on;
      }
    }
    for (int k = 0; k < z; ++k) slot[active[b][k]] = -1;
  }
  const double n_act = static_cast<double>(B) * z, n_in = static_cast<double>(B) * (T - z);
  st.mse_x_active = sx_act / n_act;
  st.on_active = son_act / n_act;
  st.mse_x_inactive = n_in > 0 ? sx_in / n_in : 0.0;
  st.on_inactive = n_in > 0 ? son_in / n_in : 0.0;
}

RotationResult run_rotation(const SuperposedNetwork& net) {
  const CircuitConfig& cfg = net.cfg;
  const int D = cfg.D, K = net.K, T = cfg.T, z = cfg.z, B = cfg.trials, d = kRotD;
  Rng rng(cfg.seed * 0xA24BAED4963EE407ULL + 99);
  RotationResult res;
  res.cfg = cfg;
  res.delta = predicted_delta(cfg);
  res.delta_measured = measured_delta(net.emb[0]);
  res.load = T * (static_cast<double>(d) / D) * (static_cast<double>(d) / D);

  // Active sets and their true x: active[b][k] = circuit, x[b][k] = its current x.
  std::vector<std::vector<int>> active(B);
  std::vector<std::vector<std::array<double, 2>>> x(B);
  for (int b = 0; b < B; ++b) {
    active[b] = sample_distinct(rng, T, z);
    for (int k = 0; k < z; ++k) {
      const double phi = 2.0 * M_PI * rng.uniform();
      x[b].push_back({std::cos(phi), std::sin(phi)});
    }
  }
  const auto bias = net.circuits.bias();
  // A: activations [D, B] row-major (row = large neuron, column = trial).
  std::vector<double> A(static_cast<size_t>(D) * B), Z(static_cast<size_t>(D) * B);
  for (int l = 1; l <= cfg.L; ++l) {
    LayerStats st = predict_layer(cfg, l, res.delta);
    for (int i = 0; i < d; ++i)
      for (int n = 0; n < K; ++n) std::fill_n(&Z[static_cast<size_t>(i * K + n) * B], B, bias[i]);
    if (l == 1) {
      input_layer(net, active, x, Z);
    } else {
      const auto lw = net.layer_weight(l);
      st.link_correction = lw.link_correction;
      ad::gemm(false, false, D, B, D, 1.0, lw.W.data(), D, A.data(), B, 1.0, Z.data(), B);
    }
    long positive = 0;
    for (size_t k = 0; k < A.size(); ++k) {
      A[k] = Z[k] > 0.0 ? Z[k] : 0.0;
      positive += A[k] > 0.0;
    }
    // Advance the truth: x <- R_{t,l} x for every active circuit.
    for (int b = 0; b < B; ++b)
      for (int k = 0; k < z; ++k) {
        const double th = net.circuits.theta[static_cast<size_t>(l - 1) * T + active[b][k]];
        const double c = std::cos(th), s = std::sin(th), x0 = x[b][k][0], x1 = x[b][k][1];
        x[b][k] = {c * x0 - s * x1, s * x0 + c * x1};
      }
    measure_layer(net, l, A, active, x, st);
    st.active_fraction = static_cast<double>(positive) / (static_cast<double>(D) * B);
    res.layers.push_back(st);
  }
  return res;
}

// ---------------------------------------------------------------- output

std::string format_rotation(const RotationResult& r) {
  std::ostringstream os;
  char buf[480];
  const auto& c = r.cfg;
  std::snprintf(buf, sizeof buf,
                "rotation circuits in superposition (%s construction): D=%d T=%d S=%d L=%d z=%d d=4 alpha=%g b=%g "
                "rotations=%s packing=%s trials=%d seed=%llu\n"
                "  T(d/D)^2=%.5f  delta(formula d/D-1/(ST))=%.6f  delta(measured on E)=%.6f  packing limit T<=%.0f\n",
                construction_name(c.construction), c.D, c.T, c.S, c.L, c.z, c.alpha, c.beta, rotations_name(c.rotations),
                packing_name(c.packing), c.trials, static_cast<unsigned long long>(c.seed), r.load, r.delta,
                r.delta_measured, packing_limit(c.D / kRotD, c.S));
  os << buf;
  std::snprintf(buf, sizeof buf, "%5s | %11s %11s %6s | %11s %11s %6s | %10s %10s | %10s %10s %6s | %7s %7s | %8s\n",
                "layer", "MSE_x act", "pred", "ratio", "MSE_x inact", "pred", "ratio", "MSE_on act", "bound",
                "on inact", "pred", "ratio", "frac", "pred",
                c.construction == Construction::Published ? "kappa" : "chi");
  os << buf;
  for (const auto& s : r.layers) {
    std::snprintf(buf, sizeof buf,
                  "%5d | %11.4g %11.4g %6.2f | %11.4g %11.4g %6.2f | %10.3g %10.3g | %10.3g %10.3g %6.2f | %7.4f %7.4f | "
                  "%8.4g\n",
                  s.layer, s.mse_x_active, s.pred_x_active,
                  s.pred_x_active > 0 ? s.mse_x_active / s.pred_x_active : NAN, s.mse_x_inactive, s.pred_x_inactive,
                  s.mse_x_inactive / s.pred_x_inactive, s.on_active, s.pred_on_active_bound, s.on_inactive,
                  s.pred_on_inactive, s.on_inactive / s.pred_on_inactive, s.active_fraction, s.pred_active_fraction,
                  s.link_correction);
    os << buf;
  }
  return os.str();
}

std::string rotation_json(const RotationResult& r) {
  const auto& c = r.cfg;
  nlohmann::json j = {{"construction", construction_name(c.construction)},
                      {"D", c.D}, {"T", c.T}, {"S", c.S}, {"L", c.L}, {"z", c.z}, {"d", kRotD},
                      {"alpha", c.alpha}, {"b", c.beta}, {"rotations", rotations_name(c.rotations)},
                      {"packing", packing_name(c.packing)}, {"trials", c.trials}, {"seed", c.seed},
                      {"load", r.load}, {"delta", r.delta}, {"delta_measured", r.delta_measured}};
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& s : r.layers)
    layers.push_back({{"layer", s.layer},
                      {"mse_x_active", s.mse_x_active},
                      {"mse_x_active_pred", s.pred_x_active},
                      {"mse_x_inactive", s.mse_x_inactive},
                      {"mse_x_inactive_pred", s.pred_x_inactive},
                      {"mse_on_active", s.on_active},
                      {"mse_on_inactive", s.on_inactive},
                      {"active_neuron_fraction", s.active_fraction},
                      {"active_neuron_fraction_pred", s.pred_active_fraction},
                      {"link_correction", s.link_correction}});
  j["layers"] = layers;
  return j.dump(2) + "\n";
}

double same_position_coupling_mse(const SuperposedNetwork& net) {
  // Fixed embedding: every circuit t' that owns a copy-position n of an active circuit t applies
  // its own dw_t' to the activations at n. With usage u = T S / K circuits per position, the
  // readout of t picks up (1/S^2) sum_{n in E_t} sum_{t' owns n, t' != t} dw_t' a_t, whose mean
  // square is (u - 1)/S^3 E||dw a||^2; for the x pair dw a = (R_t' - Rbar) x, and
  // E_x ||M x||^2 = ||M||_F^2 / 2 for x uniform on the unit circle. Evaluated for layer 2.
  if (net.cfg.construction != Construction::FixedEmbedding || net.cfg.L < 2)
    ad::fail("same_position_coupling_mse: needs the fixed-embedding construction with L >= 2");
  const int T = net.cfg.T, S = net.cfg.S;
  double rbar[4] = {0, 0, 0, 0};
  std::vector<std::array<double, 4>> R(T);
  for (int t = 0; t < T; ++t) {
    const double th = net.circuits.theta[static_cast<size_t>(1) * T + t];
    R[t] = {std::cos(th), -std::sin(th), std::sin(th), std::cos(th)};
    for (int k = 0; k < 4; ++k) rbar[k] += R[t][k] / T;
  }
  double fro = 0.0;
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < 4; ++k) fro += (R[t][k] - rbar[k]) * (R[t][k] - rbar[k]) / T;
  const double usage = static_cast<double>(T) * S / net.K;
  return std::max(0.0, usage - 1.0) / (static_cast<double>(S) * S * S) * fro / 2.0;
}

}  // namespace pd::bounds
