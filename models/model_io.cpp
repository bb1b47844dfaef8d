// Model files and training checkpoints, both safetensors.
//   model.safetensors:      every parameter under its name (e.g. "linear1.weight"); metadata
//                           "model_config" = the model's JSON config, so the file alone
//                           rebuilds the model. Same names as the PyTorch reference modules.
//   checkpoint.safetensors: "param/<name>" for every parameter, "adam.exp_avg/<name>" and
//                           "adam.exp_avg_sq/<name>" for every trainable one; metadata
//                           "step", "param_steps" (AdamW's per-parameter step counts),
//                           "curve" (rows so far), "model_config", "run_config".
#include "autodiff/safetensors.hpp"
#include "models/model.hpp"
#include "models/train.hpp"

namespace models {

void save_model(const Model& m, const std::string& path) {
  std::map<std::string, ad::Tensor> t;
  for (auto& p : m.parameters()) t[p.name] = p.value;
  ad::save_safetensors(path, t, {{"model_config", m.config().dump()}, {"format", "pd-model-v1"}});
}

static json parse_meta(const ad::SafeTensors& st, const std::string& key, const std::string& path) {
  auto it = st.metadata.find(key);
  if (it == st.metadata.end()) ad::fail(path + ": metadata has no \"" + key + "\" entry");
  try {
    return json::parse(it->second);
  } catch (const json::parse_error& e) {
    ad::fail(path + ": metadata \"" + key + "\" is not valid JSON: " + e.what());
  }
}

std::unique_ptr<Model> load_model(const std::string& path, ad::DType dtype) {
  ad::SafeTensors st = ad::load_safetensors(path);
  json cfg = parse_meta(st, "model_config", path);
  ad::Rng rng(0);
  std::unique_ptr<Model> m = make_model(cfg, rng, dtype, path + " (model_config)");
  std::vector<std::pair<std::string, ad::Tensor>> vals(st.tensors.begin(), st.tensors.end());
  m->load_params(vals, path);
  return m;
}

void save_checkpoint(const std::string& path, const Model& m, const ad::Adam& opt, int64_t step,
                     const std::vector<CurveRow>& curve, const RunConfig& cfg, double window_loss,
                     int64_t window_n) {
  std::map<std::string, ad::Tensor> t;
  json param_steps = json::array();
  size_t slot = 0;
  for (auto& p : m.parameters()) {
    t["param/" + p.name] = p.value;
    if (p.frozen) continue;
    // AdamW's slots follow Model::trainable(), i.e. the non-frozen parameters in order.
    t["adam.exp_avg/" + p.name] = opt.exp_avg(slot);
    t["adam.exp_avg_sq/" + p.name] = opt.exp_avg_sq(slot);
    param_steps.push_back(opt.param_steps(slot));
    ++slot;
  }
  json jc = json::array();
  for (auto& r : curve) jc.push_back({r.step, r.loss, r.lr, r.time_s});
  ad::save_safetensors(path, t,
                       {{"format", "pd-checkpoint-v1"},
                        {"step", std::to_string(step)},
                        {"param_steps", param_steps.dump()},
                        {"curve", jc.dump()},
                        {"window", json::array({window_loss, window_n}).dump()},
                        {"model_config", m.config().dump()},
                        {"run_config", cfg.to_json().dump()}});
}

int64_t load_checkpoint(const std::string& path, Model& m, ad::Adam& opt, std::vector<CurveRow>& curve,
                        double* window_loss, int64_t* window_n) {
  ad::SafeTensors st = ad::load_safetensors(path);
  auto fmt = st.metadata.find("format");
  if (fmt == st.metadata.end() || fmt->second != "pd-checkpoint-v1")
    ad::fail(path + ": not a training checkpoint (metadata format != pd-checkpoint-v1)");
  json saved_cfg = parse_meta(st, "model_config", path);
  if (saved_cfg != m.config())
    ad::fail(path + ": checkpoint model config " + saved_cfg.dump() + " differs from the run's " + m.config().dump());
  auto get = [&](const std::string& name) -> const ad::Tensor& {
    auto it = st.tensors.find(name);
    if (it == st.tensors.end()) ad::fail(path + ": missing tensor '" + name + "'");
    return it->second;
  };
  json steps = parse_meta(st, "param_steps", path);
  size_t slot = 0;
  for (auto& p : m.parameters()) {
    const ad::Tensor& src = get("param/" + p.name);
    if (src.shape() != p.value.shape())
      ad::fail(path + ": tensor 'param/" + p.name + "' has shape " + src.shape().str() + ", model needs " + p.value.shape().str());
    ad::Tensor dst = p.value;
    ad::copy_into(dst, src);
    if (p.frozen) continue;
    ad::Tensor m1 = opt.exp_avg(slot), m2 = opt.exp_avg_sq(slot);
    ad::copy_into(m1, get("adam.exp_avg/" + p.name));
    ad::copy_into(m2, get("adam.exp_avg_sq/" + p.name));
    if (!steps.is_array() || slot >= steps.size()) ad::fail(path + ": param_steps has too few entries");
    opt.set_param_steps(slot, steps[slot].get<int64_t>());
    ++slot;
  }
  curve.clear();
  for (auto& r : parse_meta(st, "curve", path)) curve.push_back({r[0].get<int64_t>(), r[1].get<double>(), r[2].get<double>(), r[3].get<double>()});
  json w = parse_meta(st, "window", path);
  if (window_loss) *window_loss = w.at(0).get<double>();
  if (window_n) *window_n = w.at(1).get<int64_t>();
  return std::stoll(st.metadata.at("step"));
}

}  // namespace models
