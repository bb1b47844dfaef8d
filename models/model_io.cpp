// Model files and training checkpoints, both safetensors.
//   model.safetensors:      every parameter under its name (e.g. "linear1.weight"); metadata
//                           "model_config" = the model's JSON config, so the file alone
//                           rebuilds the model. Same names as the PyTorch reference modules.
//   checkpoint.safetensors: ad::save_checkpoint (autodiff/train_loop.hpp) of kind "train",
//                           with metadata "model_config" and "run_config".
#include "autodiff/safetensors.hpp"
#include "autodiff/json_depth.hpp"
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
  return ad::parse_json(it->second, path + ": metadata \"" + key + "\"");
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

static std::vector<std::pair<std::string, ad::Tensor>> named_params(const Model& m) {
  std::vector<std::pair<std::string, ad::Tensor>> v;
  for (auto& p : m.parameters()) v.emplace_back(p.name, p.value);
  return v;
}

void save_checkpoint(const std::string& path, const Model& m, const ad::Adam& opt, int64_t step,
                     const ad::TrainLog& log, const RunConfig& cfg) {
  ad::save_checkpoint(path, "train", named_params(m), opt, step, log, log.seconds,
                      {{"model_config", m.config().dump()}, {"run_config", cfg.to_json().dump()}});
}

int64_t load_checkpoint(const std::string& path, Model& m, ad::Adam& opt, ad::TrainLog& log, const RunConfig& cfg) {
  const ad::Checkpoint ck = ad::read_checkpoint(path, "train");
  json saved_model = parse_meta(ck.file, "model_config", path), saved_run = parse_meta(ck.file, "run_config", path);
  if (saved_model != m.config())
    ad::fail(path + ": checkpoint model config " + ad::clip_for_message(saved_model.dump(), 400) + " differs from the run's " +
             ad::clip_for_message(m.config().dump(), 400));
  // Everything but how often checkpoints are written must match: a resumed run continues the
  // same schedule with the same data.
  json now = cfg.to_json();
  if (!saved_run.is_object() || !saved_run.contains("train") || !saved_run["train"].is_object())
    ad::fail(path + ": metadata \"run_config\" is not a run config (an object with a \"train\" object)");
  saved_run["train"].erase("checkpoint_every");
  now["train"].erase("checkpoint_every");
  const json diff = json::diff(saved_run, now);
  if (!diff.empty()) {
    std::string paths;
    for (size_t i = 0; i < diff.size() && i < 5; ++i) paths += (i ? ", " : "") + diff[i].value("path", std::string("?"));
    ad::fail(path + ": the checkpoint was made with another run config (" + std::to_string(diff.size()) +
             " difference(s), at " + paths + "); resume with the same config");
  }
  if (ck.step > cfg.train.steps)
    ad::fail(path + ": checkpoint step " + std::to_string(ck.step) + " is beyond the run's " +
             std::to_string(cfg.train.steps) + " steps");
  ad::restore_checkpoint(ck, named_params(m), &opt);
  log = ck.log;
  return ck.step;
}

}  // namespace models
