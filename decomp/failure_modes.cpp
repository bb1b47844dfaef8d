#include "decomp/failure_modes.hpp"

#include <cmath>
#include <cstdio>

#include "decomp/evaluate.hpp"

namespace decomp {

namespace {

FailureMode ci_collapse(const EvalResult& ev, double th) {
  FailureMode f{"ci_collapse", false, 0, th, true, ""};
  for (const LayerEval& e : ev.layers)
    if (e.alive == 0) {
      f.triggered = true, f.figure = 1;
      f.detail = "layer " + e.name + " has no alive component";
      return f;
    }
  if (ev.has_lm) {
    f.figure = ev.lm.find("ci_masked")->ce_unrecovered;
    f.detail = "ce_unrecovered with m = g";
  } else {
    auto it = ev.losses.find("ci_masked_recon");
    if (it == ev.losses.end() || !(ev.recon_zero > 0)) {
      f.applicable = false, f.detail = "no ci_masked_recon or zero-ablation loss";
      return f;
    }
    f.figure = it->second / ev.recon_zero;
    f.detail = "ci_masked_recon / loss with every component ablated";
  }
  f.triggered = !(f.figure <= th);
  return f;
}

FailureMode dense(const Decomposition& dec, const EvalResult& ev, double th) {
  FailureMode f{"dense", false, 0, th, true, "max CI_L0 / C over layers without a dense-k pattern"};
  for (const LayerEval& e : ev.layers) {
    if (e.dense_k >= 0 || dec.cfg.dense_k.count(e.name)) continue;
    const double frac = e.ci_l0 / (double)dec.cm.components();
    if (frac > f.figure) f.figure = frac, f.detail = "CI_L0 / C of layer " + e.name;
  }
  f.triggered = f.figure > th;
  return f;
}

FailureMode polysemantic(const Decomposition& dec, const EvalResult& ev, double frequent) {
  FailureMode f{"polysemantic", false, 0, /*threshold: any such component*/ 0, true, ""};
  const double thr = dec.cfg.ci_threshold;
  int64_t count = 0;
  for (const LayerEval& e : ev.layers) {
    if (e.dense_k >= 0 || dec.cfg.dense_k.count(e.name)) continue;
    if (e.ci_onehot.rows > 0) {
      for (int64_t c = 0; c < e.ci_onehot.cols; ++c) {
        int64_t on = 0;
        for (int64_t i = 0; i < e.ci_onehot.rows; ++i) on += e.ci_onehot(i, c) > thr;
        count += on >= 2;
      }
    } else {
      for (double q : e.ci_freq) count += q > frequent;
    }
  }
  const bool toy = !ev.layers.empty() && ev.layers[0].ci_onehot.rows > 0;
  f.figure = (double)count;
  f.detail = toy ? "components on for >= 2 one-hot features (layers without a dense-k pattern)"
                 : "components on for more than " + std::to_string((int)std::lround(100 * frequent)) + "% of tokens";
  f.triggered = count > 0;
  return f;
}

FailureMode unconverged(const ad::TrainLog& log, double th) {
  FailureMode f{"unconverged", false, 0, th, true, "relative fall of the training total over the last tenth"};
  auto it = log.values.find("total");
  if (it == log.values.end() || it->second.size() < 3 || it->second.size() != log.steps.size()) {
    f.applicable = false, f.detail = "too few logged rows";
    return f;
  }
  const std::vector<double>& v = it->second;
  const double last_step = (double)log.steps.back();
  size_t k = 0;  // the row nearest to 0.9 of the last step
  for (size_t i = 0; i < log.steps.size(); ++i)
    if (std::fabs((double)log.steps[i] - 0.9 * last_step) < std::fabs((double)log.steps[k] - 0.9 * last_step)) k = i;
  if (k + 1 >= v.size()) {
    f.applicable = false, f.detail = "too few logged rows";
    return f;
  }
  f.figure = (v[k] - v.back()) / std::fabs(v[k]);
  f.triggered = f.figure > th;
  return f;
}

}  // namespace

std::vector<FailureMode> detect_failure_modes(const Decomposition& dec, const EvalResult& ev, const ad::TrainLog& log,
                                              const FailureThresholds& th) {
  return {ci_collapse(ev, th.collapse), dense(dec, ev, th.dense), polysemantic(dec, ev, th.frequent),
          unconverged(log, th.unconverged)};
}

nlohmann::json failure_modes_json(const std::vector<FailureMode>& fs) {
  nlohmann::json j = nlohmann::json::object();
  for (const FailureMode& f : fs)
    j[f.name] = {{"triggered", f.triggered}, {"figure", f.figure}, {"threshold", f.threshold},
                 {"applicable", f.applicable}, {"detail", f.detail}};
  return j;
}

std::string failure_modes_text(const std::vector<FailureMode>& fs) {
  std::string out = "failure modes:\n";
  char buf[512];
  for (const FailureMode& f : fs) {
    if (!f.applicable)
      std::snprintf(buf, sizeof buf, "  %-13s  n/a  (%s)\n", f.name.c_str(), f.detail.c_str());
    else
      std::snprintf(buf, sizeof buf, "  %-13s  %-3s  %.4g (threshold %.4g): %s\n", f.name.c_str(), f.triggered ? "YES" : "no",
                    f.figure, f.threshold, f.detail.c_str());
    out += buf;
  }
  return out;
}

}  // namespace decomp
