#include "experiments/decomp_report.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "autodiff/fileio.hpp"
#include "autodiff/safetensors.hpp"
#include "experiments/plot.hpp"

namespace pd {

std::string file_safe(const std::string& s) {
  std::string o = s;
  for (char& c : o)
    if (c == '/' || c == ' ' || c == '\\') c = '_';
  return o;
}

static std::string coverage_line(const std::string& what, const decomp::BlockCoverage& b, int64_t n_features) {
  std::ostringstream o;
  o << what << ": a feature switches on " << b.min << "-" << b.max << " of the " << b.k
    << " dense-k block columns (median " << b.median << "); " << b.features_using_all << " of " << n_features
    << " features switch on all " << b.k << "\n";
  return o.str();
}

// base.gp -> base.png. noenhanced: layer and loss names contain '_', which would otherwise
// become subscripts.
static void plot(const std::string& base, const std::string& terminal, const std::string& body) {
  pd::plot_png(base + ".gp", base + ".png", terminal, "set termoption noenhanced\n" + body);
}

// Heatmap of a CI matrix on one-hot inputs ([n_features, C], rows = features) with columns in
// `order`, truncated after the last column with any CI > 0.01 (at least n_features columns,
// so a missing feature stays visible). Writes base.dat, base.gp and base.png.
static void plot_ci_matrix(const std::string& base, const std::string& name, const std::string& order_kind,
                           const decomp::Mat& ci, const std::vector<int64_t>& order) {
  int64_t K = std::min<int64_t>(ci.cols, ci.rows);
  for (int64_t r = 0; r < (int64_t)order.size(); ++r) {
    double mx = 0;
    for (int64_t i = 0; i < ci.rows; ++i) mx = std::max(mx, ci(i, order[r]));
    if (mx > 0.01) K = std::max(K, r + 1);
  }
  std::ostringstream dat;
  for (int64_t i = 0; i < ci.rows; ++i) {
    for (int64_t r = 0; r < K; ++r) dat << (r ? " " : "") << ci(i, order.empty() ? r : order[r]);
    dat << "\n";
  }
  ad::write_file_atomic(base + ".dat", dat.str());
  std::ostringstream gp;
  const int w = (int)std::max<int64_t>(760, std::min<int64_t>(1600, 300 + 18 * K)),
            h = (int)std::min<int64_t>(1200, 200 + 18 * ci.rows);
  gp << "set title "
     << pd::gnuplot_quote("CI on one-hot inputs (x0.75), " + name + " (columns permuted, " + order_kind + ")")
     << " noenhanced\n"
     << "set xlabel 'subcomponent (permuted)'\nset ylabel 'input feature'\nset cbrange [0:1]\n"
     << "set palette defined (0 'white', 1 'dark-blue')\nset yrange [" << ci.rows - 0.5 << ":-0.5]\n"
     << "set xrange [-0.5:" << K - 0.5 << "]\nplot " << pd::gnuplot_quote(base + ".dat")
     << " matrix with image notitle\n";
  plot(base, "pngcairo size " + std::to_string(w) + "," + std::to_string(h), gp.str());
}

void write_plots(const decomp::Decomposition& spd, const decomp::EvalResult& ev, const decomp::TrainLog& log,
                 const std::string& dir) {
  // ---- loss curves (none for a re-evaluation, which has no training log)
  if (!log.steps.empty()) {
    std::vector<std::string> cols;
    for (auto& kv : log.values)
      if (kv.first != "lr" && kv.first != "time_s" && kv.first.rfind("grad_norm", 0) != 0) cols.push_back(kv.first);
    std::ostringstream csv;
    csv << "step";
    for (auto& c : cols) csv << "," << c;
    csv << "\n";
    for (size_t i = 0; i < log.steps.size(); ++i) {
      csv << log.steps[i];
      for (auto& c : cols) {
        const auto& v = log.values.at(c);
        csv << "," << std::setprecision(8) << (i < v.size() ? v[i] : NAN);
      }
      csv << "\n";
    }
    ad::write_file_atomic(dir + "/loss_curves.csv", csv.str());
    std::ostringstream gp;
    // Key below the axes: beside them it took half the width and the step labels ran together.
    gp << "set datafile separator ','\nset logscale y\nset format y '%.0e'\nset key below maxrows 3\nset xlabel 'step'\n"
       << "set ylabel 'loss term (unweighted)'\nset title " << pd::gnuplot_quote(std::string(spd.method_name()) + " loss terms: " + spd.target.name)
       << "\nplot ";
    for (size_t k = 0; k < cols.size(); ++k)
      gp << (k ? ", " : "") << pd::gnuplot_quote(dir + "/loss_curves.csv") << " using 1:" << k + 2
         << " with lines lw 2 title " << pd::gnuplot_quote(cols[k]);
    gp << "\n";
    plot(dir + "/loss_curves", "pngcairo size 900,620", gp.str());
  }
  // ---- permuted CI matrices on one-hot inputs: per layer, and per cross-layer group
  for (const decomp::LayerEval& e : ev.layers)
    if (e.ci_onehot.rows > 0)
      plot_ci_matrix(dir + "/ci_" + file_safe(e.name), e.name, e.dense_k >= 0 ? "dense-k order" : "Hungarian order",
                     e.ci_onehot, e.order);
  for (const decomp::GroupEval& g : ev.groups)
    plot_ci_matrix(dir + "/ci_group_" + file_safe(g.group.name), g.group.name + " (layers side by side)",
                   "dense-k order", g.ci_onehot, g.order);
  // ---- TMS: subcomponent columns against the target's columns
  for (const decomp::LayerEval& e : ev.layers) {
    if (!e.has_mmcs) continue;
    const decomp::LayerComponents& L = spd.cm.layers[spd.cm.index_of(e.name)];
    decomp::Mat W = decomp::to_mat(L.W), V = decomp::to_mat(L.V), U = decomp::to_mat(L.U);
    const std::string base = dir + "/tms_directions";
    const int64_t m = spd.cm.opt.group;  // columns per component (APD's rank)
    std::vector<double> p;               // P_c[:, j]
    std::ostringstream dat, gp;
    std::string terminal;
    if (L.d_out == 2) {
      // per feature j: target column W[:, j] and the best subcomponent's P_c[:, j] = u_c v_c[j]
      for (int64_t j = 0; j < L.d_in; ++j) {
        decomp::component_row(V, U, e.mm.best_c[j], m, j, p);
        dat << W(0, j) << " " << W(1, j) << " " << p[0] << " " << p[1] << " " << j << "\n";
      }
      ad::write_file_atomic(base + ".dat", dat.str());
      terminal = "pngcairo size 900,900";
      gp << "set size square\n"
         << "set title 'TMS: target columns W[:,j] (grey) vs best subcomponent P_c[:,j] (red), MMCS "
         << e.mm.mmcs << ", ML2R " << e.mm.ml2r << "' noenhanced\n"
         << "set xrange [-1.6:1.6]\nset yrange [-1.6:1.6]\n"
         << "plot " << pd::gnuplot_quote(base + ".dat") << " using (0):(0):1:2 with vectors lw 8 lc rgb '#bbbbbb' title 'target column', "
         << "'' using (0):(0):3:4 with vectors lw 2 lc rgb 'red' title 'subcomponent', "
         << "'' using 1:2:(sprintf('f%d', $5)) with labels offset 1,1 notitle\n";
    } else {
      // cos(W[:, j], P_c[:, j]) for every feature j and every subcomponent c
      for (int64_t j = 0; j < L.d_in; ++j) {
        for (int64_t c = 0; c < L.C / m; ++c) {
          decomp::component_row(V, U, c, m, j, p);
          double dot = 0, pn = 0, wn = 0;
          for (int64_t o = 0; o < L.d_out; ++o) dot += p[o] * W(o, j), pn += p[o] * p[o], wn += W(o, j) * W(o, j);
          dat << (c ? " " : "") << (pn > 0 && wn > 0 ? dot / std::sqrt(pn * wn) : 0.0);
        }
        dat << "\n";
      }
      ad::write_file_atomic(base + ".dat", dat.str());
      terminal = "pngcairo size 1400,500";
      gp << "set title 'TMS: cos(P_c[:,j], W[:,j]) per feature j (rows) and subcomponent c, MMCS " << e.mm.mmcs
         << ", ML2R " << e.mm.ml2r << "' noenhanced\nset cbrange [-1:1]\n"
         << "set palette defined (-1 'red', 0 'white', 1 'blue')\nset xlabel 'subcomponent'\nset ylabel 'feature'\n"
         << "plot " << pd::gnuplot_quote(base + ".dat") << " matrix with image notitle\n";
    }
    plot(base, terminal, gp.str());
    break;
  }
}

std::string result_table(const decomp::Decomposition& spd, const decomp::EvalResult& ev, double wall_s) {
  std::ostringstream o;
  std::string method = spd.method_name();
  for (char& ch : method) ch = (char)std::toupper((unsigned char)ch);
  o << method << " decomposition of " << spd.target.name << " (seed " << spd.cfg.seed << ", " << spd.cfg.train.steps
    << " steps, batch " << spd.cfg.train.batch_size << ")\n";
  o << std::left << std::setw(20) << "layer" << std::right << std::setw(6) << "C" << std::setw(7) << "alive"
    << std::setw(8) << "norm>.1" << std::setw(9) << "CI_L0" << std::setw(9) << "id-err" << std::setw(12)
    << "dense-k err" << std::setw(9)
    << "MMCS" << std::setw(9) << "ML2R" << "\n";
  for (const decomp::LayerEval& e : ev.layers) {
    o << std::left << std::setw(20) << e.name << std::right << std::setw(6)
      << spd.cm.components() << std::setw(7) << e.alive << std::setw(8) << e.large_norm
      << std::setw(9) << std::fixed
      << std::setprecision(3) << e.ci_l0 << std::setw(9);
    // A layer expected to be dense-k has no identity pattern to miss; metrics.json keeps the number.
    if (e.identity_error >= 0 && e.dense_k < 0) o << e.identity_error;
    else o << "-";
    o << std::setw(12);
    if (e.dense_k >= 0) o << (std::to_string(e.dense_k_error) + " (k=" + std::to_string(e.dense_k) + ")");
    else o << "-";
    if (e.has_mmcs) o << std::setw(9) << std::setprecision(4) << e.mm.mmcs << std::setw(9) << e.mm.ml2r;
    else o << std::setw(9) << "-" << std::setw(9) << "-";
    o << "\n";
  }
  for (const decomp::LayerEval& e : ev.layers)
    if (e.has_mmcs && (std::abs(e.mm.mmcs - e.mm_large_norm.mmcs) > 5e-5 || std::abs(e.mm.ml2r - e.mm_large_norm.ml2r) > 5e-5))
      o << e.name << ": over the norm>.1 subcomponents only, MMCS " << std::setprecision(4) << e.mm_large_norm.mmcs
        << ", ML2R " << e.mm_large_norm.ml2r << " (a near-zero-norm subcomponent wins some column's cosine)\n";
  for (const decomp::LayerEval& e : ev.layers)
    if (e.dense_k >= 0) o << coverage_line(e.name, e.block_coverage, e.ci_onehot.rows);
  for (const decomp::GroupEval& g : ev.groups) {
    o << "cross-layer dense-k '" << g.group.name << "' (" << g.group.layers.size() << " layers): error "
      << g.dense_k_error << " (k=" << g.group.k << "), " << g.onehot_active << " components active on one-hot inputs\n";
    o << coverage_line("  '" + g.group.name + "'", g.block_coverage, g.ci_onehot.rows);
  }
  o << "final losses (eval batch):";
  for (auto& kv : ev.losses) o << "  " << kv.first << "=" << std::scientific << std::setprecision(3) << kv.second;
  o << "\n";
  if (ev.has_lm) {
    o << "masking strategy      KL         CE    ce_unrecovered   (target CE " << std::fixed << std::setprecision(4)
      << ev.lm.ce_target << ", " << ev.lm.sequences << " sequences)\n";
    for (const decomp::MaskingEval& m : ev.lm.strategies)
      o << std::left << std::setw(16) << m.strategy << std::right << std::setw(10) << std::setprecision(4) << m.kl
        << std::setw(11) << m.ce << std::setw(14) << m.ce_unrecovered << "\n";
  }
  if (!ev.failure_modes.empty()) o << decomp::failure_modes_text(ev.failure_modes);
  if (wall_s >= 0) o << "wall time " << std::fixed << std::setprecision(1) << wall_s << " s\n";
  return o.str();
}

}  // namespace pd
