#include "experiments/bounds/tms_sweep.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "autodiff/autograd.hpp"
#include "autodiff/error.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/optim.hpp"
#include "autodiff/random.hpp"
#include "models/toy_models.hpp"
#include "models/train.hpp"

namespace pd::bounds {

ad::Tensor tms_loss(const ad::Tensor& W, const ad::Tensor& b, const ad::Tensor& x, const ad::Tensor& importance) {
  const ad::Tensor h = ad::linear(x, W);                  // [B, m] = x W^T
  const ad::Tensor y = ad::relu(ad::matmul(h, W) + b);    // [B, n] = ReLU(h W + b)
  return ad::mean(importance * ad::square(y - x));        // importance [n] broadcasts over B
}

std::vector<double> feature_dimensionalities(const std::vector<double>& W, int m, int n) {
  if (static_cast<int>(W.size()) != m * n) ad::fail("feature_dimensionalities: W must be [m, n]");
  std::vector<double> dims(n, 0.0);
  for (int i = 0; i < n; ++i) {
    double norm2 = 0;
    for (int k = 0; k < m; ++k) norm2 += W[k * n + i] * W[k * n + i];
    if (norm2 < 1e-12) continue;  // not represented: D_i = 0
    double denom = 0;
    for (int j = 0; j < n; ++j) {
      double dot = 0;
      for (int k = 0; k < m; ++k) dot += W[k * n + i] * W[k * n + j];
      denom += dot * dot / norm2;  // (W_i_hat . W_j)^2
    }
    dims[i] = norm2 / denom;
  }
  return dims;
}

TmsRun train_tms(const TmsSweepConfig& cfg, double sparsity, std::uint64_t seed) {
  if (!(sparsity >= 0 && sparsity < 1)) ad::fail("train_tms: sparsity must be in [0, 1)");
  const int n = cfg.n_features, m = cfg.n_hidden;
  TmsRun best;
  best.final_loss = INFINITY;
  for (int restart = 0; restart < cfg.restarts; ++restart) {
    // The project's TMS model and training loop (models/toy_models.hpp, models/train.hpp):
    // importance-weighted MSE, Adam (AdamW with weight decay 0), constant lr, float64.
    const models::json j = {
        {"model", {{"type", "tms"}, {"n_features", n}, {"n_hidden", m}}},
        {"data", {{"type", "sparse_features"}, {"feature_prob", 1.0 - sparsity}, {"importance_decay", cfg.importance_decay}}},
        {"train",
         {{"steps", cfg.steps},
          {"batch_size", cfg.batch},
          {"lr", cfg.lr},
          {"weight_decay", 0.0},
          {"seed", seed * 1000003ULL + restart * 7919ULL + static_cast<std::uint64_t>(sparsity * 1e6)},
          {"log_every", 100},
          {"dtype", "float64"}}}};
    const models::RunConfig rc = models::parse_run_config(j, "bounds tms sweep");
    models::TrainOptions opts;
    opts.progress = false;
    models::TrainResult r = models::train(rc, opts);
    if (r.log.steps.empty()) ad::fail("train_tms: training returned no loss curve");
    const double last = r.log.values.at("loss").back();  // mean training loss over the last log window
    if (!std::isfinite(last)) ad::fail("train_tms: loss diverged at sparsity " + std::to_string(sparsity));
    if (last < best.final_loss) {
      const auto& tms = dynamic_cast<const models::TMS&>(*r.model);
      best.final_loss = last;
      best.W = tms.W().to_vector();
      best.b = tms.b().to_vector();
    }
  }
  best.sparsity = sparsity;
  best.norms2.assign(n, 0.0);
  for (int k = 0; k < m; ++k)
    for (int i = 0; i < n; ++i) best.norms2[i] += best.W[k * n + i] * best.W[k * n + i];
  best.frob2 = 0;
  for (double v : best.norms2) best.frob2 += v;
  best.represented = static_cast<int>(std::count_if(best.norms2.begin(), best.norms2.end(), [](double v) { return v > 0.25; }));
  best.dims = feature_dimensionalities(best.W, m, n);
  return best;
}

static std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void run_tms(bool quick, std::uint64_t seed, const std::string& out_dir, std::vector<CheckRow>& rows) {
  TmsSweepConfig cfg;
  cfg.steps = quick ? 3000 : 10000;
  cfg.restarts = quick ? 1 : 2;
  const std::vector<double> sparsities = quick ? std::vector<double>{0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.997}
                                               : std::vector<double>{0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.93, 0.95, 0.97,
                                                                     0.98, 0.99, 0.995, 0.997, 0.999};
  const int m = cfg.n_hidden;
  std::vector<TmsRun> runs;
  for (double s : sparsities) runs.push_back(train_tms(cfg, s, seed));

  PlotSeries dpf{"m / ||W||_F^2 (dimensions per feature)", {}, {}, true}, scatter{"D_i of represented features", {}, {}, false, true};
  PlotSeries half{"1/2", {}, {}, true}, one{"1", {}, {}, true};
  int near_half = 0, near_two_fifths = 0, near_one_sparse = 0;
  for (const auto& r : runs) {
    const double x = 1.0 / (1.0 - r.sparsity);
    dpf.x.push_back(x), dpf.y.push_back(m / r.frob2);
    half.x.push_back(x), half.y.push_back(0.5), one.x.push_back(x), one.y.push_back(1.0);
    for (size_t i = 0; i < r.dims.size(); ++i)
      if (r.norms2[i] > 0.25) {
        scatter.x.push_back(x), scatter.y.push_back(r.dims[i]);
        if (r.sparsity > 0) {
          near_half += std::fabs(r.dims[i] - 0.5) < 0.05;
          near_two_fifths += std::fabs(r.dims[i] - 0.4) < 0.03;
          near_one_sparse += std::fabs(r.dims[i] - 1.0) < 0.05;
        }
      }
    std::fprintf(stderr, "[tms] S=%.3f loss=%.5f ||W||_F^2=%.3f represented=%d dims:", r.sparsity, r.final_loss, r.frob2,
                 r.represented);
    for (size_t i = 0; i < r.dims.size(); ++i)
      if (r.norms2[i] > 0.25) std::fprintf(stderr, " %.2f", r.dims[i]);
    std::fprintf(stderr, "\n");
  }
  const auto& dense = runs.front();
  const auto& sparse = runs.back();
  const std::string p = "n=20 m=5 I=0.7^i steps=" + std::to_string(cfg.steps);
  rows.push_back({"tms", "||W||_F^2, dense (S=0)", p, CheckKind::Ratio, dense.frob2, static_cast<double>(m), 1.15,
                  "no superposition: m orthogonal unit features"});
  rows.push_back({"tms", "features represented, dense (S=0)", p, CheckKind::Ratio, static_cast<double>(dense.represented),
                  static_cast<double>(m), 1.01, "||W_i||^2 > 1/4"});
  double mean_dim_dense = 0;
  int cnt = 0;
  for (int i = 0; i < cfg.n_features; ++i)
    if (dense.norms2[i] > 0.25) mean_dim_dense += dense.dims[i], ++cnt;
  rows.push_back({"tms", "mean D_i of represented, dense", p, CheckKind::Ratio, cnt ? mean_dim_dense / cnt : 0.0, 1.0, 1.05,
                  "plateau at 1"});
  rows.push_back({"tms", "||W||_F^2, sparsest", p + " S=" + fmt("%g", sparse.sparsity), CheckKind::Above, sparse.frob2,
                  static_cast<double>(m), 0.0, "superposition: ||W||_F^2 exceeds m"});
  rows.push_back({"tms", "features represented, sparsest", p + " S=" + fmt("%g", sparse.sparsity), CheckKind::Above,
                  static_cast<double>(sparse.represented), m + 1.0, 0.0, "more than m features (||W_i||^2 > 1/4)"});
  rows.push_back({"tms", "#D_i within 0.05 of 1/2 (S>0)", p, CheckKind::Above, static_cast<double>(near_half), 2.0, 0.0,
                  "the 1/2 plateau (antipodal pairs); #near 2/5: " + std::to_string(near_two_fifths) +
                      ", #near 1 (S>0): " + std::to_string(near_one_sparse)});
  // Superposition onset: first sparsity of the sweep with more than m represented features.
  double onset = 0;
  for (const auto& r : runs)
    if (r.represented > m) { onset = 1.0 / (1.0 - r.sparsity); break; }
  rows.push_back({"tms", "onset 1/(1-S) of superposition", p, CheckKind::Above, onset, 1.0 + 1e-9, 0.0,
                  "dense runs (1/(1-S)=1) must not superpose; 0 = never superposed"});
  plot_xy(out_dir, "tms_dimensionality", "TMS n=20 m=5: feature dimensionality vs 1/(1-S)", "1/(1-S)",
          "dimensionality", {scatter, dpf, half, one}, true, false);
}

}  // namespace pd::bounds
