#include "decomp/run/files.hpp"

#include "autodiff/safetensors.hpp"

namespace decomp {

using nlohmann::json;

// Per feature, how many of the k dense-k block columns have CI > ci_threshold on its one-hot input.
static json coverage_json(const BlockCoverage& b) {
  return {{"min", b.min}, {"median", b.median}, {"max", b.max}, {"features_using_all_k", b.features_using_all}};
}

json metrics_json(const Decomposition& spd, const EvalResult& ev, const TrainLog& log,
                  const json& extra) {
  json j = extra;
  j["method"] = spd.method_name();
  json layers = json::object();
  const LayerEval* tms = nullptr;  // the first layer with MMCS (TMS linear1): the run's figures
  for (const LayerEval& e : ev.layers) {
    json l = {{"ci_l0", e.ci_l0},
              {"alive_components", e.alive},
              {"large_norm_components", e.large_norm},
              {"C", spd.cm.components()}};
    if (e.identity_error >= 0) l["identity_ci_error"] = e.identity_error;
    if (e.dense_k >= 0)
      l["dense_k"] = e.dense_k, l["dense_k_error"] = e.dense_k_error,
      l["dense_k_block_columns_per_feature"] = coverage_json(e.block_coverage);
    if (e.has_mmcs) {
      l["mmcs"] = e.mm.mmcs, l["ml2r"] = e.mm.ml2r;
      l["cos_per_feature"] = e.mm.cos_per_col, l["norm_ratio_per_feature"] = e.mm.ratio_per_col;
      l["mmcs_large_norm"] = e.mm_large_norm.mmcs, l["ml2r_large_norm"] = e.mm_large_norm.ml2r;
      if (!tms) tms = &e;
    }
    layers[e.name] = l;
  }
  j["layers"] = layers;
  if (!ev.groups.empty()) {
    json groups = json::object();
    for (const GroupEval& g : ev.groups)
      groups[g.group.name] = {{"layers", g.group.layers},
                              {"dense_k", g.group.k},
                              {"dense_k_error", g.dense_k_error},
                              {"onehot_active_components", g.onehot_active},
                              {"dense_k_block_columns_per_feature", coverage_json(g.block_coverage)}};
    j["dense_k_groups"] = groups;
  }
  if (tms)
    j["mmcs"] = tms->mm.mmcs, j["ml2r"] = tms->mm.ml2r, j["mmcs_large_norm"] = tms->mm_large_norm.mmcs,
    j["ml2r_large_norm"] = tms->mm_large_norm.ml2r;
  j["eval_losses"] = ev.losses;
  if (ev.recon_zero > 0) j["recon_zero"] = ev.recon_zero;
  if (ev.has_lm) j["lm"] = ev.lm.to_json();
  if (!ev.failure_modes.empty()) j["failure_modes"] = failure_modes_json(ev.failure_modes);
  json last = json::object();
  for (auto& kv : log.values)
    if (!kv.second.empty()) last[kv.first] = kv.second.back();
  j["final_train_losses"] = last;
  j["train_seconds"] = log.seconds;
  j["steps"] = spd.cfg.train.steps;
  j["steps_per_s"] = log.seconds > 0 ? (double)spd.cfg.train.steps / log.seconds : 0.0;
  return j;
}

void save_decomposition(const Decomposition& spd, const std::string& path, const json& config,
                        const std::string& target_fingerprint) {
  std::map<std::string, ad::Tensor> t;
  std::vector<ad::Tensor> p = spd.all_params();
  std::vector<std::string> n = spd.all_param_names();
  for (size_t i = 0; i < p.size(); ++i) t[n[i]] = p[i];
  ad::save_safetensors(path, t, {{"spd_config", config.dump()}, {"target_fingerprint", target_fingerprint}, {"format", "pd-spd-v1"}});
}

void load_decomposition(Decomposition& spd, const std::string& path) {
  ad::SafeTensors st = ad::load_safetensors(path);
  std::vector<ad::Tensor> p = spd.all_params();
  std::vector<std::string> n = spd.all_param_names();
  for (size_t i = 0; i < p.size(); ++i) {
    auto it = st.tensors.find(n[i]);
    if (it == st.tensors.end()) ad::fail(path + ": tensor '" + n[i] + "' missing");
    ad::copy_loaded(p[i], it->second, path + ": tensor '" + n[i] + "'");
  }
}

}  // namespace decomp
