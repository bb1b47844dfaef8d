#include "experiments/bounds/interference.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "autodiff/error.hpp"
#include "autodiff/gemm.hpp"

namespace pd::bounds {

std::vector<double> random_unit_vectors(int n, int m, Rng& rng) {
  if (n <= 0 || m <= 0) ad::fail("random_unit_vectors: n and m must be positive");
  std::vector<double> V(static_cast<size_t>(m) * n);
  for (int i = 0; i < m; ++i) {
    double* row = &V[static_cast<size_t>(i) * n];
    double norm2 = 0.0;
    for (int k = 0; k < n; ++k) {
      row[k] = rng.normal();
      norm2 += row[k] * row[k];
    }
    const double inv = 1.0 / std::sqrt(norm2);
    for (int k = 0; k < n; ++k) row[k] *= inv;
  }
  return V;
}

OverlapStats overlap_stats(const std::vector<double>& V, int n, int m) {
  // G = V V^T  [m, m]; only the upper triangle is filled by dsyrk.
  std::vector<double> G(static_cast<size_t>(m) * m, 0.0);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, m, n, 1.0, V.data(), n, 0.0, G.data(), m);
  OverlapStats s;
  double sum = 0.0;
  for (int i = 0; i < m; ++i)
    for (int j = i + 1; j < m; ++j) {
      const double c = G[static_cast<size_t>(i) * m + j];
      sum += c * c;
      s.max_abs_cos = std::max(s.max_abs_cos, std::fabs(c));
    }
  s.mean_cos2 = sum / (0.5 * m * (m - 1.0));
  return s;
}

// Builds a batch of superposed states H [n, B] (column b = sum of the l active rows of V for
// trial b) and the readouts R = V H [m, B]; `active` gets the active sets.
static void superpose_and_read(const std::vector<double>& V, int n, int m, int l, int B, Rng& rng,
                               std::vector<double>& R, std::vector<std::vector<int>>& active) {
  std::vector<double> H(static_cast<size_t>(n) * B, 0.0);
  active.assign(B, {});
  for (int b = 0; b < B; ++b) {
    active[b] = sample_distinct(rng, m, l);
    for (int a : active[b]) {
      const double* v = &V[static_cast<size_t>(a) * n];
      for (int k = 0; k < n; ++k) H[static_cast<size_t>(k) * B + b] += v[k];
    }
  }
  R.assign(static_cast<size_t>(m) * B, 0.0);
  ad::gemm(false, false, m, B, n, 1.0, V.data(), n, H.data(), B, 0.0, R.data(), B);
}

double readout_noise_rms(const std::vector<double>& V, int n, int m, int l, int trials, Rng& rng) {
  if (l < 1 || l >= m) ad::fail("readout_noise_rms: need 1 <= l < m");
  std::vector<double> R;
  std::vector<std::vector<int>> active;
  double sum = 0.0;
  long count = 0;
  const int B = std::min(trials, 256);
  for (int done = 0; done < trials; done += B) {
    const int nb = std::min(B, trials - done);
    superpose_and_read(V, n, m, l, nb, rng, R, active);
    for (int b = 0; b < nb; ++b) {
      std::vector<char> is_active(m, 0);
      for (int a : active[b]) is_active[a] = 1;
      for (int i = 0; i < m; ++i)
        if (!is_active[i]) {
          const double r = R[static_cast<size_t>(i) * nb + b];
          sum += r * r;
          ++count;
        }
    }
  }
  return std::sqrt(sum / count);
}

double exact_recovery_rate(const std::vector<double>& V, int n, int m, int l, int trials, Rng& rng) {
  std::vector<double> R;
  std::vector<std::vector<int>> active;
  int ok = 0;
  const int B = std::min(trials, 256);
  for (int done = 0; done < trials; done += B) {
    const int nb = std::min(B, trials - done);
    superpose_and_read(V, n, m, l, nb, rng, R, active);
    for (int b = 0; b < nb; ++b) {
      std::vector<char> is_active(m, 0);
      for (int a : active[b]) is_active[a] = 1;
      bool good = true;
      for (int i = 0; i < m && good; ++i) good = (R[static_cast<size_t>(i) * nb + b] > 0.5) == (is_active[i] != 0);
      ok += good;
    }
  }
  return static_cast<double>(ok) / trials;
}

// True iff at least `reliability` of `trials` inputs are recovered exactly. Runs in batches and
// stops as soon as the answer is decided (too many failures, or enough successes).
static bool reliable_at(const std::vector<double>& V, int n, int m, int l, int trials, double reliability, Rng& rng) {
  const int allowed_failures = static_cast<int>(std::floor((1.0 - reliability) * trials + 1e-9));
  int failures = 0, done = 0;
  const int B = 50;
  while (done < trials) {
    const int nb = std::min(B, trials - done);
    failures += nb - static_cast<int>(std::lround(exact_recovery_rate(V, n, m, l, nb, rng) * nb));
    done += nb;
    if (failures > allowed_failures) return false;
    if (failures + (trials - done) <= allowed_failures) return true;
  }
  return true;
}

int largest_reliable_l(const std::vector<double>& V, int n, int m, int trials, double reliability, Rng& rng) {
  // Bracket around the theory's n / (8 ln m), widening until lo is reliable and hi is not, then
  // bisect. Invariant: lo reliable (l = 0 trivially), hi unreliable (or the cap).
  const int cap = std::min(m - 1, n);
  const int guess = std::max(1, static_cast<int>(n / (8.0 * std::log(static_cast<double>(m)))));
  int lo = std::max(1, guess / 2), hi = std::min(cap, 2 * guess + 1);
  while (lo > 1 && !reliable_at(V, n, m, lo, trials, reliability, rng)) hi = lo, lo /= 2;
  if (lo == 1 && !reliable_at(V, n, m, 1, trials, reliability, rng)) return 0;
  while (hi < cap && reliable_at(V, n, m, hi, trials, reliability, rng)) lo = hi, hi = std::min(cap, 2 * hi);
  if (hi == cap && reliable_at(V, n, m, cap, trials, reliability, rng)) return cap;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    (reliable_at(V, n, m, mid, trials, reliability, rng) ? lo : hi) = mid;
  }
  return lo;
}

static std::string nm(int n, int m) { return "n=" + std::to_string(n) + " m=" + std::to_string(m); }

void run_interference(bool quick, std::uint64_t seed, const std::string& out_dir, std::vector<CheckRow>& rows) {
  Rng rng(seed ^ 0x1A7EF);
  const std::vector<int> ns = quick ? std::vector<int>{64, 128, 256, 512} : std::vector<int>{64, 128, 256, 512, 1024, 2048};
  const std::vector<int> ms = {256, 1024, 4096};  // m = 8192 would need a 0.5 GB Gram matrix

  // (a) mean cos^2 against 1/n, and (b) max |cos| against 2 sqrt(ln m / n), over an (n, m) grid.
  std::vector<double> xs_n, mean_c2;
  std::vector<PlotSeries> max_series;
  std::vector<double> max_slopes;
  for (int m : ms) {
    PlotSeries s;
    s.title = "max |cos|, m=" + std::to_string(m);
    for (int n : ns) {
      auto V = random_unit_vectors(n, m, rng);
      const auto st = overlap_stats(V, n, m);
      const double pred_max = 2.0 * std::sqrt(std::log(static_cast<double>(m)) / n);
      rows.push_back({"interference", "max |cos| (pairs)", nm(n, m), CheckKind::Ratio, st.max_abs_cos, pred_max, 1.25,
                      "pred 2 sqrt(ln m/n)"});
      s.x.push_back(n);
      s.y.push_back(st.max_abs_cos);
      if (m == 1024) {
        xs_n.push_back(n);
        mean_c2.push_back(st.mean_cos2);
        rows.push_back({"interference", "mean cos^2", nm(n, m), CheckKind::Ratio, st.mean_cos2, 1.0 / n, 1.1,
                        "pred 1/n"});
      }
    }
    const auto f = fit_loglog(s.x, s.y, "max |cos| vs n");
    rows.push_back({"interference", "slope d log max|cos| / d log n", "m=" + std::to_string(m), CheckKind::Slope,
                    f.slope, -0.5, 0.1, "R^2=" + std::to_string(f.r2)});
    max_series.push_back(s);
    PlotSeries pred;
    pred.title = "2 sqrt(ln m/n), m=" + std::to_string(m);
    pred.line = true;
    for (int n : ns) {
      pred.x.push_back(n);
      pred.y.push_back(2.0 * std::sqrt(std::log(static_cast<double>(m)) / n));
    }
    max_series.push_back(pred);
  }
  {
    const auto f = fit_loglog(xs_n, mean_c2, "mean cos^2 vs n");
    rows.push_back({"interference", "slope d log mean cos^2 / d log n", "m=1024", CheckKind::Slope, f.slope, -1.0, 0.05,
                    "R^2=" + std::to_string(f.r2)});
    PlotSeries meas{"measured mean cos^2 (m=1024)", xs_n, mean_c2, false};
    PlotSeries pred{"1/n", {}, {}, true};
    for (double n : xs_n) pred.x.push_back(n), pred.y.push_back(1.0 / n);
    plot_xy(out_dir, "interference_mean_cos2", "Mean squared overlap of random unit vectors", "n", "mean cos^2",
            {meas, pred, fit_line("fit slope " + std::to_string(f.slope).substr(0, 6), f, xs_n.front(), xs_n.back())});
  }
  plot_xy(out_dir, "interference_max_cos", "Max |overlap| of m random unit vectors", "n", "max |cos|", max_series);

  // (c) readout noise of an inactive feature with l active ones against sqrt(l/n).
  {
    const int n = 256, m = 1024;
    auto V = random_unit_vectors(n, m, rng);
    const std::vector<int> ls = quick ? std::vector<int>{2, 8, 32, 128} : std::vector<int>{2, 4, 8, 16, 32, 64, 128, 256};
    std::vector<double> lx, noise;
    for (int l : ls) {
      const double r = readout_noise_rms(V, n, m, l, quick ? 64 : 256, rng);
      rows.push_back({"interference", "readout noise std", nm(n, m) + " l=" + std::to_string(l), CheckKind::Ratio, r,
                      std::sqrt(static_cast<double>(l) / n), 1.1, "pred sqrt(l/n)"});
      lx.push_back(l);
      noise.push_back(r);
    }
    const auto f = fit_loglog(lx, noise, "readout noise vs l");
    rows.push_back({"interference", "slope d log noise / d log l", nm(n, m), CheckKind::Slope, f.slope, 0.5, 0.05,
                    "R^2=" + std::to_string(f.r2)});
    PlotSeries pred{"sqrt(l/n)", {}, {}, true};
    for (double l : lx) pred.x.push_back(l), pred.y.push_back(std::sqrt(l / n));
    plot_xy(out_dir, "interference_readout_noise", "Readout noise with l active features (n=256, m=1024)", "l",
            "readout noise std", {PlotSeries{"measured", lx, noise, false}, pred});
  }

  // (d) largest reliably readable l against n / (c ln m); c fitted by least squares in log space
  // (log l_max = log(n / ln m) - log c), i.e. c = geometric mean of n / (l_max ln m).
  {
    const std::vector<int> rn = {256, 512, 1024, 2048};
    const std::vector<int> rm = quick ? std::vector<int>{512, 2048} : std::vector<int>{512, 2048, 8192};
    const int trials = quick ? 100 : 300;
    const double reliability = 0.9;
    struct Pt { int n, m, lmax; };
    std::vector<Pt> pts;
    for (int m : rm)
      for (int n : rn) {
        auto V = random_unit_vectors(n, m, rng);
        pts.push_back({n, m, largest_reliable_l(V, n, m, trials, reliability, rng)});
      }
    double sum_log_c = 0.0;
    int used = 0;
    for (const auto& p : pts)
      if (p.lmax > 0) sum_log_c += std::log(p.n / (p.lmax * std::log(static_cast<double>(p.m)))), ++used;
    if (used == 0) ad::fail("interference: no configuration could read out even one feature");
    const double c_fit = std::exp(sum_log_c / used);
    std::vector<PlotSeries> series;
    PlotSeries meas{"measured l_max", {}, {}, false};
    for (const auto& p : pts) {
      const double x = p.n / std::log(static_cast<double>(p.m));
      rows.push_back({"interference", "largest reliable l", nm(p.n, p.m), CheckKind::Ratio, static_cast<double>(p.lmax),
                      x / c_fit, 1.25, "pred n/(c ln m), c fitted"});
      meas.x.push_back(x);
      meas.y.push_back(std::max(p.lmax, 1));
    }
    rows.push_back({"interference", "fitted c in l_max = n/(c ln m)", "reliability 0.9, threshold 1/2", CheckKind::Bound,
                    c_fit, 8.0, 1.25, "theory: c <= 8"});
    for (int m : rm) {
      std::vector<double> x, y;
      for (const auto& p : pts)
        if (p.m == m && p.lmax > 0) x.push_back(p.n), y.push_back(p.lmax);
      if (x.size() >= 2) {
        const auto f = fit_loglog(x, y, "l_max vs n");
        rows.push_back({"interference", "slope d log l_max / d log n", "m=" + std::to_string(m), CheckKind::Slope,
                        f.slope, 1.0, 0.15, "R^2=" + std::to_string(f.r2)});
      }
    }
    PlotSeries pred{"n/(c ln m), c=" + std::to_string(c_fit).substr(0, 5), {}, {}, true};
    double xmin = 1e300, xmax = 0;
    for (double x : meas.x) xmin = std::min(xmin, x), xmax = std::max(xmax, x);
    pred.x = {xmin, xmax};
    pred.y = {xmin / c_fit, xmax / c_fit};
    plot_xy(out_dir, "interference_lmax", "Largest reliably readable l (90% exact recovery)", "n / ln m", "l_max",
            {meas, pred});
  }
}

}  // namespace pd::bounds
