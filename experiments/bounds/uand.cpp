#include "experiments/bounds/uand.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "autodiff/error.hpp"

namespace pd::bounds {

UAnd build_uand(int m, int d, double p, Rng& rng) {
  if (m < 2 || d < 1 || !(p > 0 && p <= 1))
    ad::fail("build_uand: need m >= 2, d >= 1, 0 < p <= 1 (got m=" + std::to_string(m) +
             " d=" + std::to_string(d) + " p=" + std::to_string(p) + ")");
  UAnd net;
  net.m = m, net.d = d, net.p = p;
  net.wired.resize(m);
  for (int a = 0; a < m; ++a)
    for (int i = 0; i < d; ++i)
      if (rng.bernoulli(p)) net.wired[a].push_back(i);
  return net;
}

UAndErrorStats measure_uand(const UAnd& net, int l, int trials, Rng& rng) {
  if (l < 2 || l > net.m - 2) ad::fail("measure_uand: need 2 <= l <= m - 2");
  std::vector<int> count(net.d, 0);  // sum_a W_ia f_a for the current input
  std::vector<int> common;
  // per class: sum of error, sum of squared error, number of pairs
  double s[3] = {0, 0, 0}, s2[3] = {0, 0, 0}, n[3] = {0, 0, 0};
  long empty = 0, reads = 0;
  auto read = [&](int a, int b, double target, int cls) {
    common.clear();
    std::set_intersection(net.wired[a].begin(), net.wired[a].end(), net.wired[b].begin(), net.wired[b].end(),
                          std::back_inserter(common));
    double y = 0.0;
    for (int i : common) y += std::max(count[i] - 1, 0);  // h_i = ReLU(sum_a W_ia f_a - 1)
    if (common.empty())
      ++empty;
    else
      y /= static_cast<double>(common.size());
    ++reads;
    const double e = y - target;
    s[cls] += e, s2[cls] += e * e, n[cls] += 1;
  };
  for (int trial = 0; trial < trials; ++trial) {
    auto act = sample_distinct(rng, net.m, net.m);  // a random permutation: first l are active
    for (int k = 0; k < l; ++k)
      for (int i : net.wired[act[k]]) ++count[i];
    for (int x = 0; x < l; ++x)
      for (int y = x + 1; y < l; ++y) read(act[x], act[y], 1.0, 0);
    for (int k = 0; k < l; ++k) {
      const int inactive_a = act[l + static_cast<int>(rng.below(net.m - l))];
      int inactive_b = act[l + static_cast<int>(rng.below(net.m - l))];
      while (inactive_b == inactive_a) inactive_b = act[l + static_cast<int>(rng.below(net.m - l))];
      read(act[rng.below(l)], inactive_a, 0.0, 1);
      read(inactive_a, inactive_b, 0.0, 2);
    }
    for (int k = 0; k < l; ++k)
      for (int i : net.wired[act[k]]) --count[i];
  }
  UAndErrorStats r;
  double ms = 0, noise = 0;
  double bias[3];
  for (int c = 0; c < 3; ++c) {
    bias[c] = s[c] / n[c];
    ms += s2[c] / n[c] / 3.0;
    noise += (s2[c] / n[c] - bias[c] * bias[c]) / 3.0;
  }
  r.rms = std::sqrt(ms);
  r.noise_rms = std::sqrt(std::max(noise, 0.0));
  r.bias_both = bias[0], r.bias_one = bias[1], r.bias_none = bias[2];
  r.empty_fraction = static_cast<double>(empty) / reads;
  return r;
}

static std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void run_uand(bool quick, std::uint64_t seed, const std::string& out_dir, std::vector<CheckRow>& rows) {
  Rng rng(seed ^ 0x0A4D);
  const int l = 3;
  const int trials = quick ? 400 : 1500;

  // (a) error against p at fixed m, d: the optimum p* against eps*/l.
  {
    const int m = 2000, d = quick ? 2000 : 4000;
    std::vector<double> ps, errs, noises;
    for (double p = 0.04; p <= 0.81; p *= 1.25) {
      const auto net = build_uand(m, d, p, rng);
      const auto e = measure_uand(net, l, trials, rng);
      ps.push_back(p), errs.push_back(e.rms), noises.push_back(e.noise_rms);
    }
    const size_t best = std::min_element(errs.begin(), errs.end()) - errs.begin();
    const double p_star = ps[best], eps_star = errs[best];
    char params[96];
    std::snprintf(params, sizeof params, "m=%d d=%d l=%d", m, d, l);
    rows.push_back({"uand", "optimal p", params, CheckKind::Ratio, p_star, eps_star / l, 2.0,
                    "pred p* ~ eps*/l, eps*=" + fmt("%.3f", eps_star) + "; grid step 1.25x"});
    rows.push_back({"uand", "optimum is interior of the p grid", params, CheckKind::Below,
                    (best == 0 || best + 1 == ps.size()) ? 1.0 : 0.0, 0.0, 0.0, "1 = optimum at grid edge"});
    PlotSeries e{"RMS error", ps, errs, false}, nz{"noise part (class bias removed)", ps, noises, false};
    PlotSeries mark{"eps*/l", {eps_star / l, eps_star / l}, {eps_star * 0.5, eps_star * 2}, true};
    plot_xy(out_dir, "uand_error_vs_p", "U-AND error vs p (m=2000, d=" + std::to_string(d) + ", l=3)", "p",
            "error", {e, nz, mark});
  }

  // (b) error against d at fixed p: the noise part falls as 1/sqrt(d); the total error is also
  // reported (it floors at the class bias, which does not depend on d).
  {
    const int m = 2000;
    const double p = 0.15;
    const std::vector<int> ds = quick ? std::vector<int>{500, 1000, 2000, 4000, 8000}
                                      : std::vector<int>{500, 1000, 2000, 4000, 8000, 16000, 32000};
    std::vector<double> xs, noise, total;
    for (int d : ds) {
      const auto net = build_uand(m, d, p, rng);
      const auto e = measure_uand(net, l, trials, rng);
      xs.push_back(d), noise.push_back(e.noise_rms), total.push_back(e.rms);
    }
    const auto fn = fit_loglog(xs, noise, "uand noise vs d");
    const auto ft = fit_loglog(xs, total, "uand error vs d");
    rows.push_back({"uand", "slope d log noise / d log d", "m=2000 p=0.15 l=3", CheckKind::Slope, fn.slope, -0.5, 0.1,
                    "R^2=" + fmt("%.3f", fn.r2)});
    rows.push_back({"uand", "slope d log error / d log d", "m=2000 p=0.15 l=3", CheckKind::Slope, ft.slope, -0.5, 0.1,
                    "total error incl. bias (l-1)p of one-active pairs"});
    plot_xy(out_dir, "uand_error_vs_d", "U-AND error vs d (m=2000, p=0.15, l=3)", "d", "error",
            {PlotSeries{"noise part", xs, noise, false}, PlotSeries{"RMS error", xs, total, false},
             fit_line("fit noise slope " + fmt("%.2f", fn.slope), fn, xs.front(), xs.back())});
  }

  // (c) error against m at fixed d, p: flat up to logs.
  {
    const int d = 2000;
    const double p = 0.15;
    const std::vector<int> ms = quick ? std::vector<int>{250, 1000, 4000, 16000} : std::vector<int>{250, 1000, 4000, 16000, 64000};
    std::vector<double> xs, total;
    for (int m : ms) {
      const auto net = build_uand(m, d, p, rng);
      const auto e = measure_uand(net, l, trials, rng);
      xs.push_back(m), total.push_back(e.rms);
    }
    const auto f = fit_loglog(xs, total, "uand error vs m");
    rows.push_back({"uand", "slope d log error / d log m", "d=2000 p=0.15 l=3", CheckKind::Slope, f.slope, 0.0, 0.1,
                    "flat in m up to logs"});
    plot_xy(out_dir, "uand_error_vs_m", "U-AND error vs m (d=2000, p=0.15, l=3)", "m", "RMS error",
            {PlotSeries{"RMS error", xs, total, false}, fit_line("fit slope " + fmt("%.3f", f.slope), f, xs.front(), xs.back())});
  }
}

}  // namespace pd::bounds
