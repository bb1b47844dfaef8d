#include "experiments/bounds/circuits.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "autodiff/gemm.hpp"

namespace pd::bounds {

// ---------------------------------------------------------------- embedding and coupling

double packing_limit(int K, int S) { return static_cast<double>(K) * (K - 1) / (static_cast<double>(S) * (S - 1)); }

Embedding build_embedding(int K, int T, int S, Rng& rng) {
  if (K <= 0 || T <= 0 || S <= 1 || S > K)
    ad::fail("build_embedding: need K > 0, T > 0, 1 < S <= K (got K=" + std::to_string(K) +
             " T=" + std::to_string(T) + " S=" + std::to_string(S) + ")");
  Embedding E;
  E.K = K;
  E.S = S;
  E.rows.reserve(T);
  std::vector<char> linked(static_cast<size_t>(K) * K, 0);  // pair (n, m) already inside some circuit
  std::vector<int> usage(K, 0);
  std::vector<int> order(K);
  std::vector<std::uint64_t> key(K);
  for (int t = 0; t < T; ++t) {
    std::vector<int> chosen;
    for (int attempt = 0; attempt < 8 && static_cast<int>(chosen.size()) < S; ++attempt) {
      chosen.clear();
      // Least-used first keeps usage ~ T S / K for every position, which is what the
      // delta = d/D - 1/(S T) formula assumes; random keys break ties differently per attempt.
      for (int n = 0; n < K; ++n) order[n] = n, key[n] = rng.next_u64();
      std::sort(order.begin(), order.end(), [&](int a, int b) {
        return usage[a] != usage[b] ? usage[a] < usage[b] : key[a] < key[b];
      });
      for (int n : order) {
        bool ok = true;
        for (int m : chosen)
          if (linked[static_cast<size_t>(n) * K + m]) { ok = false; break; }
        if (ok) chosen.push_back(n);
        if (static_cast<int>(chosen.size()) == S) break;
      }
    }
    if (static_cast<int>(chosen.size()) < S)
      throw PackingError("build_embedding: greedy packing failed at circuit " + std::to_string(t) + " of T=" +
                          std::to_string(T) + " (K=" + std::to_string(K) + ", S=" + std::to_string(S) +
                               ", packing limit " + std::to_string(packing_limit(K, S)) + ")");
    std::sort(chosen.begin(), chosen.end());
    for (int n : chosen) {
      ++usage[n];
      for (int m : chosen) linked[static_cast<size_t>(n) * K + m] = 1;
    }
    E.rows.push_back(std::move(chosen));
  }
  return E;
}

double measured_delta(const Embedding& E) {
  // Rows share at most one position, so sum over pairs of |E_t ∩ E_u|^2 = sum over pairs of
  // |E_t ∩ E_u| = sum_n C(usage_n, 2).
  std::vector<long> usage(E.K, 0);
  for (const auto& row : E.rows)
    for (int n : row) ++usage[n];
  double shared = 0.0;
  for (long u : usage) shared += 0.5 * u * (u - 1.0);
  const double pairs = 0.5 * E.T() * (E.T() - 1.0);
  return pairs > 0 ? shared / (pairs * E.S * E.S) : 0.0;
}

Coupling build_coupling(const Embedding& E) {
  Coupling c;
  c.K = E.K;
  const size_t KK = static_cast<size_t>(E.K) * E.K;
  std::vector<char> linked(KK, 0);
  for (const auto& row : E.rows)
    for (int n : row)
      for (int m : row) linked[static_cast<size_t>(n) * E.K + m] = 1;
  c.n_in = std::count(linked.begin(), linked.end(), 1);
  const long n_all = static_cast<long>(KK);
  // All pairs linked (e.g. one circuit covering every position): no unlinked pair to correct.
  c.chi = (n_all > c.n_in) ? static_cast<double>(c.n_in) / static_cast<double>(n_all - c.n_in) : 0.0;
  c.C.resize(KK);
  for (size_t k = 0; k < KK; ++k) c.C[k] = linked[k] ? 1.0 : -c.chi;
  return c;
}

// ---------------------------------------------------------------- rotation circuit

std::array<double, 16> RotationCircuits::weight(int t, int l) const {
  const double th = theta[static_cast<size_t>(l - 1) * T + t];
  const double c = std::cos(th), s = std::sin(th);
  // R = [[c, -s], [s, c]]; corr = (1,1) - R (1,1), so p' = R p + alpha*corr*on = R x + alpha*on*(1,1).
  // beta on - beta: the on column also carries +beta, the bias -beta (see CircuitConfig::beta).
  const double corr0 = alpha * (1.0 - (c - s)) + beta, corr1 = alpha * (1.0 - (s + c)) + beta;
  return {2.0,           -2.0,           0.0, 0.0,   // h1 <- 2 (h1 - h2)
          2.0,           -2.0,           0.0, 0.0,   // h2 <- 2 (h1 - h2)
          corr0,         -corr0,         c,   -s,    // p1
          corr1,         -corr1,         s,   c};    // p2
}

SuperposedNetwork build_network(const CircuitConfig& cfg) {
  if (cfg.D % kRotD != 0) ad::fail("rotation construction: D must be a multiple of d=4 (D=" + std::to_string(cfg.D) + ")");
  if (cfg.z < 1 || cfg.z > cfg.T) ad::fail("rotation construction: need 1 <= z <= T");
  if (cfg.L < 1) ad::fail("rotation construction: need L >= 1");
  SuperposedNetwork net;
  net.cfg = cfg;
  net.K = cfg.D / kRotD;
  Rng rng(cfg.seed * 0x9E3779B97F4A7C15ULL + 17);
  net.E = build_embedding(net.K, cfg.T, cfg.S, rng);
  net.C = build_coupling(net.E);
  net.circuits.T = cfg.T;
  net.circuits.L = cfg.L;
  net.circuits.alpha = cfg.alpha;
  if (cfg.beta < 0) ad::fail("rotation construction: beta must be >= 0");
  net.circuits.beta = cfg.beta;
  net.circuits.theta.resize(static_cast<size_t>(cfg.L) * cfg.T);
  for (auto& th : net.circuits.theta) th = 2.0 * M_PI * rng.uniform();
  return net;
}

std::vector<double> SuperposedNetwork::layer_weight(int l) const {
  const int D = cfg.D, S = cfg.S, T = cfg.T, d = kRotD;
  // wbar^l = mean_t w^l_t; dw_t = w_t - wbar.
  std::vector<std::array<double, 16>> w(T);
  std::array<double, 16> wbar{};
  for (int t = 0; t < T; ++t) {
    w[t] = circuits.weight(t, l);
    for (int k = 0; k < 16; ++k) wbar[k] += w[t][k] / T;
  }
  std::vector<double> W(static_cast<size_t>(D) * D);
  const double invS = 1.0 / S;
  for (int i = 0; i < d; ++i)
    for (int n = 0; n < K; ++n) {
      double* row = &W[static_cast<size_t>(i * K + n) * D];
      const double* crow = &C.C[static_cast<size_t>(n) * K];
      for (int j = 0; j < d; ++j) {
        const double a = wbar[i * d + j] * invS;
        for (int m = 0; m < K; ++m) row[j * K + m] = a * crow[m];
      }
    }
  for (int t = 0; t < T; ++t) {
    std::array<double, 16> dw;
    for (int k = 0; k < 16; ++k) dw[k] = (w[t][k] - wbar[k]) * invS;
    for (int n : E.rows[t])
      for (int i = 0; i < d; ++i) {
        double* row = &W[static_cast<size_t>(i * K + n) * D];
        for (int m : E.rows[t])
          for (int j = 0; j < d; ++j) row[j * K + m] += dw[i * d + j];
      }
  }
  return W;
}

// ---------------------------------------------------------------- predictions

double predicted_delta(const CircuitConfig& cfg) {
  return static_cast<double>(kRotD) / cfg.D - 1.0 / (static_cast<double>(cfg.S) * cfg.T);
}

LayerStats predict_layer(const CircuitConfig& cfg, int l, double delta) {
  LayerStats p;
  p.layer = l;
  const double a2 = cfg.alpha * cfg.alpha;
  const double c1 = 1.0 + 2.0 * a2;  // E||x + alpha(1,1)||^2 over the unit circle (= 9 for alpha = 2)
  const double z = cfg.z;
  // METHODS.md: MSE_x(l) = 9 l (z-1) delta + (l-1) T delta^2 (z + 8 (z-1)), written for general alpha.
  const double L = l, T = cfg.T;  // doubles: (l-1)*T overflows int in the capacity bisection
  p.pred_x_active = c1 * L * (z - 1) * delta + (L - 1) * T * delta * delta * (z + 2.0 * a2 * (z - 1));
  // Inactive circuits: z delta ||a||^2 at every layer; ||a||^2 of the x pair is c1, of on is 1.
  p.pred_x_inactive = z * delta * c1;
  p.pred_on_inactive = z * delta;
  // Active on-indicator: the step re-cleans it every layer, so at most one layer's overlap error.
  p.pred_on_active_bound = (z - 1) * delta;
  p.pred_active_fraction = z * cfg.S * kRotD / static_cast<double>(cfg.D);
  return p;
}

double predicted_T_max(const CircuitConfig& cfg, double target) {
  // The formula's active MSE_x at layer L increases with T; bisection on T in [S+1, 1e9].
  auto mse = [&](double T) {
    CircuitConfig c = cfg;
    c.T = static_cast<int>(std::min(T, 2e9));
    // (predict_layer works in doubles, so T up to 2e9 is safe)
    const double delta = std::max(0.0, static_cast<double>(kRotD) / c.D - 1.0 / (c.S * T));
    return predict_layer(c, c.L, delta).pred_x_active;
  };
  double lo = cfg.S + 1.0, hi = 1e9;
  if (mse(lo) > target) return 0.0;
  if (mse(hi) <= target) return hi;
  for (int it = 0; it < 200; ++it) {
    const double mid = std::sqrt(lo * hi);
    (mse(mid) <= target ? lo : hi) = mid;
  }
  return lo;
}

// ---------------------------------------------------------------- the forward pass

RotationResult run_rotation(const CircuitConfig& cfg) { return run_rotation(build_network(cfg)); }

RotationResult run_rotation(const SuperposedNetwork& net) {
  const CircuitConfig& cfg = net.cfg;
  const int D = cfg.D, K = net.K, S = cfg.S, T = cfg.T, z = cfg.z, B = cfg.trials, d = kRotD;
  const double alpha = cfg.alpha;
  Rng rng(cfg.seed * 0xA24BAED4963EE407ULL + 99);
  RotationResult res;
  res.cfg = cfg;
  res.delta = predicted_delta(cfg);
  res.delta_measured = measured_delta(net.E);
  res.chi = net.C.chi;
  res.load = T * (static_cast<double>(d) / D) * (static_cast<double>(d) / D);

  // Active sets and their true x per layer: active[b][k] = circuit, x[b][k] = current x.
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
    // Pre-activations Z = W_l A + b (layer 1: the per-circuit input space, see header).
    for (int i = 0; i < d; ++i)
      for (int n = 0; n < K; ++n) std::fill_n(&Z[static_cast<size_t>(i * K + n) * B], B, bias[i]);
    if (l == 1) {
      for (int b = 0; b < B; ++b)
        for (int k = 0; k < z; ++k) {
          const int t = active[b][k];
          const auto w = net.circuits.weight(t, 1);
          const double a0[4] = {1.5, 0.5, x[b][k][0] + alpha, x[b][k][1] + alpha};
          for (int i = 0; i < d; ++i) {
            double pre = 0.0;
            for (int j = 0; j < d; ++j) pre += w[i * d + j] * a0[j];
            for (int n : net.E.rows[t]) Z[static_cast<size_t>(i * K + n) * B + b] += pre;
          }
        }
    } else {
      const auto W = net.layer_weight(l);
      ad::gemm(false, false, D, B, D, 1.0, W.data(), D, A.data(), B, 1.0, Z.data(), B);
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
    // Readout: a_hat_{t,i} = (1/S) sum_{n in E_t} A[(i,n)], for every circuit and trial.
    LayerStats st = predict_layer(cfg, l, res.delta);
    double sx_act = 0, son_act = 0, sx_in = 0, son_in = 0;
    std::vector<int> slot(T, -1);
    for (int b = 0; b < B; ++b) {
      for (int k = 0; k < z; ++k) slot[active[b][k]] = k;
      for (int t = 0; t < T; ++t) {
        double ah[4];
        for (int i = 0; i < d; ++i) {
          double s = 0.0;
          for (int n : net.E.rows[t]) s += A[static_cast<size_t>(i * K + n) * B + b];
          ah[i] = s / S;
        }
        const double on_hat = ah[0] - ah[1];
        if (slot[t] >= 0) {
          const auto& xt = x[b][slot[t]];
          const double e0 = ah[2] - (xt[0] + alpha), e1 = ah[3] - (xt[1] + alpha);
          sx_act += e0 * e0 + e1 * e1;
          son_act += (on_hat - 1.0) * (on_hat - 1.0);
        } else {
          sx_in += ah[2] * ah[2] + ah[3] * ah[3];
          son_in += on_hat * on_hat;
        }
      }
      for (int k = 0; k < z; ++k) slot[active[b][k]] = -1;
    }
    const double n_act = static_cast<double>(B) * z, n_in = static_cast<double>(B) * (T - z);
    st.mse_x_active = sx_act / n_act;
    st.on_active = son_act / n_act;
    st.mse_x_inactive = n_in > 0 ? sx_in / n_in : 0.0;
    st.on_inactive = n_in > 0 ? son_in / n_in : 0.0;
    st.active_fraction = static_cast<double>(positive) / (static_cast<double>(D) * B);
    res.layers.push_back(st);
  }
  return res;
}

std::string format_rotation(const RotationResult& r) {
  std::ostringstream os;
  char buf[400];
  const auto& c = r.cfg;
  std::snprintf(buf, sizeof buf,
                "rotation circuits in superposition: D=%d T=%d S=%d L=%d z=%d d=4 alpha=%g beta=%g trials=%d seed=%llu\n"
                "  T(d/D)^2=%.5f  delta(formula d/D-1/(ST))=%.6f  delta(measured on E)=%.6f  chi=%.5f  "
                "packing limit T<=%.0f\n",
                c.D, c.T, c.S, c.L, c.z, c.alpha, c.beta, c.trials, static_cast<unsigned long long>(c.seed), r.load, r.delta,
                r.delta_measured, r.chi, packing_limit(c.D / kRotD, c.S));
  os << buf;
  std::snprintf(buf, sizeof buf, "%5s | %11s %11s %6s | %11s %11s %6s | %10s %10s | %10s %10s %6s | %7s %7s\n", "layer",
                "MSE_x act", "pred", "ratio", "MSE_x inact", "pred", "ratio", "on act", "bound", "on inact", "pred",
                "ratio", "frac", "pred");
  os << buf;
  for (const auto& s : r.layers) {
    std::snprintf(buf, sizeof buf,
                  "%5d | %11.4g %11.4g %6.2f | %11.4g %11.4g %6.2f | %10.3g %10.3g | %10.3g %10.3g %6.2f | %7.4f %7.4f\n",
                  s.layer, s.mse_x_active, s.pred_x_active,
                  s.pred_x_active > 0 ? s.mse_x_active / s.pred_x_active : NAN, s.mse_x_inactive, s.pred_x_inactive,
                  s.mse_x_inactive / s.pred_x_inactive, s.on_active, s.pred_on_active_bound, s.on_inactive,
                  s.pred_on_inactive, s.on_inactive / s.pred_on_inactive, s.active_fraction, s.pred_active_fraction);
    os << buf;
  }
  return os.str();
}

// ---------------------------------------------------------------- capacity

int largest_T_meeting(CircuitConfig cfg, double target, int T_lo, int T_hi, int steps) {
  // Returns the largest T in [T_lo, T_hi] found by geometric bisection with mean active MSE_x at
  // layer L <= target; T values whose packing fails count as not meeting the target. Returns 0 if
  // even T_lo fails.
  auto meets = [&](int T) {
    cfg.T = T;
    try {
      const auto r = run_rotation(cfg);
      return r.layers.back().mse_x_active <= target;
    } catch (const PackingError&) {
      return false;  // packing infeasible
    }
  };
  if (!meets(T_lo)) return 0;
  if (meets(T_hi)) return T_hi;
  int lo = T_lo, hi = T_hi;
  for (int s = 0; s < steps && hi - lo > 1; ++s) {
    const int mid = static_cast<int>(std::lround(std::sqrt(static_cast<double>(lo) * hi)));
    if (mid <= lo || mid >= hi) break;
    (meets(mid) ? lo : hi) = mid;
  }
  return lo;
}

}  // namespace pd::bounds

// ---------------------------------------------------------------- the check driver

namespace pd::bounds {

double same_position_coupling_mse(const SuperposedNetwork& net) {
  // Derived here (not in METHODS.md): every circuit t' that owns a copy-position n of an active
  // circuit t applies its own dw_t' to the activations at n. With usage u = T S / K circuits per
  // position, the readout of t picks up (1/S^2) sum_{n in E_t} sum_{t' owns n, t' != t} dw_t' a_t,
  // whose mean square is (u - 1)/S^3 E||dw a||^2; for the x pair dw a = (R_t' - Rbar) x, and
  // E_x ||M x||^2 = ||M||_F^2 / 2 for x uniform on the unit circle. Evaluated for layer 2.
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

static std::string cfg_params(const CircuitConfig& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "D=%d T=%d S=%d z=%d L=%d", c.D, c.T, c.S, c.z, c.L);
  return buf;
}

static std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Per-layer plot of one run: measured vs predicted active / inactive MSE_x and on-indicator.
static void plot_layers(const RotationResult& r, const std::string& out_dir, const std::string& name) {
  PlotSeries ma{"active MSE_x measured", {}, {}, false}, pa{"active MSE_x predicted", {}, {}, true};
  PlotSeries mi{"inactive MSE_x measured", {}, {}, false}, pi{"inactive MSE_x predicted", {}, {}, true};
  PlotSeries mo{"inactive on-indicator measured", {}, {}, false}, po{"inactive on-indicator predicted", {}, {}, true};
  for (const auto& s : r.layers) {
    const double l = s.layer;
    if (s.mse_x_active > 0) ma.x.push_back(l), ma.y.push_back(s.mse_x_active);
    if (s.pred_x_active > 0) pa.x.push_back(l), pa.y.push_back(s.pred_x_active);
    mi.x.push_back(l), mi.y.push_back(s.mse_x_inactive);
    pi.x.push_back(l), pi.y.push_back(s.pred_x_inactive);
    mo.x.push_back(l), mo.y.push_back(s.on_inactive);
    po.x.push_back(l), po.y.push_back(s.pred_on_inactive);
  }
  plot_xy(out_dir, name, "Rotation circuits in superposition: " + cfg_params(r.cfg) + " T(d/D)^2=" + fmt("%.4f", r.load),
          "layer", "mean squared readout error", {ma, pa, mi, pi, mo, po}, false, true);
}

// Rows for one run at layer l.
static void layer_rows(const RotationResult& r, int l, const std::string& tag, std::vector<CheckRow>& rows,
                       bool with_on_and_fraction) {
  const auto& s = r.layers.at(l - 1);
  const std::string p = cfg_params(r.cfg) + " l=" + std::to_string(l);
  const std::string load = "T(d/D)^2=" + fmt("%.4f", r.load) + tag;
  if (s.pred_x_active > 0)
    rows.push_back({"circuits", "active MSE_x", p, CheckKind::Ratio, s.mse_x_active, s.pred_x_active, 1.5, load});
  rows.push_back({"circuits", "inactive MSE_x", p, CheckKind::Ratio, s.mse_x_inactive, s.pred_x_inactive, 1.5, load});
  if (!with_on_and_fraction) return;
  rows.push_back({"circuits", "inactive on-indicator err", p, CheckKind::Ratio, s.on_inactive, s.pred_on_inactive, 1.5, load});
  if (r.cfg.z > 1)
    rows.push_back({"circuits", "active on-indicator err (bound)", p, CheckKind::Bound, s.on_active,
                    s.pred_on_active_bound, 1.5, load + "; step clears noise < 0.25"});
  rows.push_back({"circuits", "active-neuron fraction", p, CheckKind::Ratio, s.active_fraction, s.pred_active_fraction,
                  1.5, load + "; pred z S d / D"});
}

void run_circuits(bool quick, std::uint64_t seed, const std::string& out_dir, std::vector<CheckRow>& rows) {
  const int trials = quick ? 600 : 2000;
  auto base = [&](int D, int T, int z, int L) {
    CircuitConfig c;
    c.D = D, c.T = T, c.S = 6, c.z = z, c.L = L, c.trials = trials, c.seed = seed;
    return c;
  };

  // (a) The configuration of the issue, per layer.
  {
    const auto r = run_rotation(base(1000, 557, 2, 5));
    std::fputs(format_rotation(r).c_str(), stderr);
    for (int l = 1; l <= 5; ++l) layer_rows(r, l, "", rows, l == 1 || l == 5);
    plot_layers(r, out_dir, "circuits_layers_T557");
  }

  // (b) Sweep the load T (d/D)^2 at fixed D, z, L: where measurement and prediction part.
  {
    const int D = quick ? 1000 : 2000, z = 2, L = quick ? 4 : 5;
    // 0.024 (T = 1500 at D = 1000) is past what greedy packing reaches for S = 6.
    const std::vector<double> loads = {0.001, 0.002, 0.003, 0.006, 0.012, 0.018};
    PlotSeries ra{"active MSE_x, layer L", {}, {}, false}, ri{"inactive MSE_x, layer L", {}, {}, false};
    PlotSeries r1{"active MSE_x, layer 1", {}, {}, false}, one{"measured = predicted", {}, {}, true};
    for (double load : loads) {
      const int T = static_cast<int>(std::lround(load * D * D / (kRotD * kRotD)));
      RotationResult r;
      try {
        r = run_rotation(base(D, T, z, L));
      } catch (const PackingError& e) {
        std::fprintf(stderr, "[bounds] load %.4f skipped: %s\n", load, e.what());
        continue;
      }
      layer_rows(r, 1, "", rows, false);
      layer_rows(r, L, "", rows, true);
      const auto& s = r.layers.back();
      ra.x.push_back(r.load), ra.y.push_back(s.mse_x_active / s.pred_x_active);
      ri.x.push_back(r.load), ri.y.push_back(s.mse_x_inactive / s.pred_x_inactive);
      r1.x.push_back(r.load), r1.y.push_back(r.layers[0].mse_x_active / r.layers[0].pred_x_active);
      one.x.push_back(r.load), one.y.push_back(1.0);
    }
    plot_xy(out_dir, "circuits_load_sweep",
            "measured / predicted MSE vs T(d/D)^2 (D=" + std::to_string(D) + ", z=2, L=" + std::to_string(L) + ")",
            "T (d/D)^2", "measured / predicted", {r1, ra, ri, one}, true, true);
  }

  // (c) Sweep z at fixed load.
  {
    const int D = 1000, T = 125, L = 4;
    PlotSeries m{"measured active MSE_x, layer L", {}, {}, false}, p{"predicted", {}, {}, true};
    for (int z : {1, 2, 3, 4, 6}) {
      const auto r = run_rotation(base(D, T, z, L));
      const auto& s = r.layers.back();
      rows.push_back({"circuits", "active MSE_x", cfg_params(r.cfg) + " l=" + std::to_string(L), CheckKind::Ratio,
                      s.mse_x_active, s.pred_x_active, 1.5, "z sweep, T(d/D)^2=" + fmt("%.4f", r.load)});
      rows.push_back({"circuits", "inactive MSE_x", cfg_params(r.cfg) + " l=" + std::to_string(L), CheckKind::Ratio,
                      s.mse_x_inactive, s.pred_x_inactive, 1.5, "z sweep, T(d/D)^2=" + fmt("%.4f", r.load)});
      m.x.push_back(z), m.y.push_back(s.mse_x_active);
      p.x.push_back(z), p.y.push_back(s.pred_x_active);
    }
    plot_xy(out_dir, "circuits_z_sweep", "active MSE_x at layer 4 vs z (D=1000, T=125, S=6)", "z", "MSE_x", {m, p});
  }

  // (d) Depth: growth of the error with depth below and above the breakdown load. Inactive
  // circuits are predicted flat in depth (slope 0 in log-log); active ones follow the formula.
  {
    const int D = 1000, L = quick ? 8 : 12;
    struct DepthRun { int T; double beta; };
    for (const auto& dr : {DepthRun{62, 0.0}, DepthRun{375, 0.0}, DepthRun{62, 1.0}}) {
      const int T = dr.T;
      CircuitConfig c = base(D, T, 2, L);
      c.beta = dr.beta;
      const auto r = run_rotation(c);
      std::vector<double> ls, mi, ma, pa;
      for (const auto& s : r.layers) {
        ls.push_back(s.layer);
        mi.push_back(s.mse_x_inactive);
        ma.push_back(s.mse_x_active);
        pa.push_back(s.pred_x_active);
      }
      const std::string note = "T(d/D)^2=" + fmt("%.4f", r.load) + " layers 1.." + std::to_string(L) +
                               (dr.beta > 0 ? "; variant beta=" + fmt("%g", dr.beta) + " (thresholded x pair)" : "");
      const auto fi = fit_loglog(ls, mi, "inactive MSE vs layer");
      rows.push_back({"circuits", "slope inactive MSE_x vs layer", cfg_params(r.cfg), CheckKind::Slope, fi.slope, 0.0,
                      0.25, note});
      const auto fa = fit_loglog(ls, ma, "active MSE vs layer");
      const auto fp = fit_loglog(ls, pa, "predicted active MSE vs layer");
      rows.push_back({"circuits", "slope active MSE_x vs layer", cfg_params(r.cfg), CheckKind::Slope, fa.slope, fp.slope,
                      0.25, note + "; predicted slope from the formula"});
      plot_layers(r, out_dir, "circuits_depth_T" + std::to_string(T) + (dr.beta > 0 ? "_beta1" : ""));
    }
  }

  // (e) The same-position coupling term (derived here) against the z = 1 error at layer 2, where
  // the METHODS formula only has T delta^2.
  {
    for (int T : {150, 600}) {
      const auto net = build_network(base(1000, T, 1, 2));
      const auto r = run_rotation(net);
      const auto& s = r.layers[1];
      rows.push_back({"circuits", "active MSE_x (METHODS formula)", cfg_params(r.cfg) + " l=2", CheckKind::Ratio,
                      s.mse_x_active, s.pred_x_active, 1.5, "z=1: only (l-1) T delta^2 remains"});
      rows.push_back({"circuits", "active MSE_x (same-position term)", cfg_params(r.cfg) + " l=2", CheckKind::Ratio,
                      s.mse_x_active, same_position_coupling_mse(net), 1.5,
                      "derived here: (TS/K-1)/S^3 E||(R_t-Rbar)x||^2"});
    }
  }

  // (f) Capacity: largest T with active MSE_x at layer L <= target, against D (slope 2), z and L
  // (slope -1 each, from T_max ~ D^2 / (d^2 z L)). The D sweep is run at z = 1 (no first-order
  // overlap term, so a small target is reachable) and at z = 2 with a target above the
  // 9 L (z-1) delta floor of the smallest D.
  {
    const int steps = quick ? 5 : 7;
    auto tmax = [&](int D, int z, int L, double target) {
      CircuitConfig c = base(D, 0, z, L);
      c.trials = quick ? 120 : 500;
      const int K = D / kRotD;
      const int lo = std::max(8, K / c.S + 1);  // at least one use per position on average
      const int hi = static_cast<int>(0.6 * packing_limit(K, c.S));
      return std::pair<int, double>(largest_T_meeting(c, target, lo, hi, steps), predicted_T_max(c, target));
    };
    struct Sweep {
      char var;  // 'D', 'z' or 'L'
      std::vector<int> values;
      double law_slope;
      int D, z, L;  // held fixed when not swept
      double target;
    };
    const std::vector<int> Ds = quick ? std::vector<int>{500, 1000, 2000} : std::vector<int>{500, 1000, 2000, 4000};
    // z and L sweeps at D = 2000 with target 0.3: the first-order term 9 L (z-1) delta stays well
    // below the target and T_max well above the search floor K/S (where delta ~ 0).
    const std::vector<Sweep> sweeps = {{'D', Ds, 2.0, 0, 1, 3, 0.05},
                                       {'D', Ds, 2.0, 0, 2, 3, 0.3},
                                       {'z', {1, 2, 3, 4}, -1.0, 2000, 0, 3, 0.3},
                                       {'L', {2, 3, 4, 6}, -1.0, 2000, 2, 0, 0.3}};
    for (const auto& sw : sweeps) {
      std::vector<double> xs, meas, pred;
      char fixed[64];
      std::snprintf(fixed, sizeof fixed, "%sS=6 %s%s MSE<=%.2g", sw.var == 'D' ? "" : ("D=" + std::to_string(sw.D) + " ").c_str(),
                    sw.var == 'z' ? "" : ("z=" + std::to_string(sw.z) + " ").c_str(),
                    sw.var == 'L' ? "" : ("L=" + std::to_string(sw.L)).c_str(), sw.target);
      for (int v : sw.values) {
        const int D = sw.var == 'D' ? v : sw.D;
        const int z = sw.var == 'z' ? v : sw.z;
        const int L = sw.var == 'L' ? v : sw.L;
        const auto [tm, tp] = tmax(D, z, L, sw.target);
        char params[96];
        std::snprintf(params, sizeof params, "D=%d S=6 z=%d L=%d MSE<=%.2g", D, z, L, sw.target);
        rows.push_back({"capacity", "largest T meeting MSE target", params, CheckKind::Ratio, static_cast<double>(tm), tp,
                        1.5, "pred: METHODS formula solved for T"});
        if (tm > 0) xs.push_back(v), meas.push_back(tm), pred.push_back(tp);
      }
      if (xs.size() >= 2) {
        const std::string var(1, sw.var);
        const auto f = fit_loglog(xs, meas, "T_max vs " + var);
        const auto fp = fit_loglog(xs, pred, "predicted T_max vs " + var);
        rows.push_back({"capacity", "slope d log T_max / d log " + var, fixed, CheckKind::Slope, f.slope, sw.law_slope, 0.3,
                        "law T_max ~ D^2/(d^2 z L); formula's own slope " + fmt("%.2f", fp.slope)});
        PlotSeries m{"measured T_max", xs, meas, false}, p{"METHODS formula", xs, pred, true};
        std::string name = "capacity_vs_" + var;
        if (sw.var == 'D') name += "_z" + std::to_string(sw.z);
        plot_xy(out_dir, name, "largest T with MSE_x <= target vs " + var + " (" + fixed + ")", var, "T_max",
                {m, p, fit_line("fit slope " + fmt("%.2f", f.slope), f, xs.front(), xs.back())});
      }
    }
  }
}

}  // namespace pd::bounds
