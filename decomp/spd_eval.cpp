#include "decomp/spd_eval.hpp"

namespace decomp {

using ad::Tensor;

Mat to_mat(const Tensor& t) {
  const int64_t cols = t.size(-1), rows = t.numel() / cols;
  Mat m(rows, cols);
  std::vector<double> v = t.to_vector();
  m.a = std::move(v);
  return m;
}

EvalResult evaluate(const SPD& spd, ad::Rng& rng, const std::map<std::string, int64_t>& dense_k) {
  ad::NoGradGuard ng;
  EvalResult r;
  const ComponentModel& cm = spd.cm;
  const double thr = spd.cfg.ci_threshold;
  Batch b = spd.target.sample(spd.cfg.eval_batch, rng);
  StepState st = spd.prepare(b, rng);
  for (const LossTermConfig& t : spd.cfg.losses) r.losses[t.name] = spd.term(t, b, st, 1.0, rng).item();
  // Monitors are always reported, configured or not.
  r.losses["ci_masked_recon"] = spd.ci_masked_recon(b, st).item();
  r.losses["unmasked_recon"] = spd.unmasked_recon(b, st).item();
  r.losses["faithfulness"] = spd.faithfulness().item();
  r.losses["stochastic_recon"] = spd.stochastic_recon(b, st, Routing::all, 0.5, 1, rng).item();

  StepState one;
  const int64_t nf = spd.target.n_features;
  if (nf > 0) {
    Batch ob;
    ob.size = nf;
    ob.x = ad::zeros({nf, nf}, spd.target.dtype);
    for (int64_t i = 0; i < nf; ++i) ob.x.set_item(i * nf + i, 0.75);
    one = spd.prepare(ob, rng);
  }
  for (size_t l = 0; l < cm.layers.size(); ++l) {
    const LayerComponents& L = cm.layers[l];
    LayerEval e;
    e.name = L.name;
    Mat g = to_mat(st.g_lower[l]);
    e.ci_l0 = ci_l0(g, thr);
    e.alive = alive_components(g, thr);
    if (nf > 0) {
      e.ci_onehot = to_mat(one.g_lower[l]);
      auto it = dense_k.find(L.name);
      e.identity_error = identity_ci_error(e.ci_onehot, &e.order);
      if (it != dense_k.end()) {
        e.dense_k = it->second;
        e.dense_k_error = dense_k_error(e.ci_onehot, it->second, &e.order);
      }
    }
    if (nf > 0 && !L.embedding && L.tied_src < 0 && L.d_in == nf) {
      e.has_mmcs = true;
      e.mm = mmcs_ml2r(to_mat(L.W), to_mat(L.V), to_mat(L.U));
    }
    r.layers.push_back(e);
  }
  return r;
}

}  // namespace decomp
