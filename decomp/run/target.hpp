// Builds the Target for a models/ target from the "target" section of a
// decomposition config:
//   "target": {"run_config": "experiments/configs/tms_5-2.json" | {...inline run config...},
//              "checkpoint": "path/model.safetensors" (optional: trained first when absent),
//              "layers": ["linear1", ...] (optional: default every layer the model lists)}
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "decomp/spd.hpp"
#include "models/model.hpp"
#include "models/train.hpp"

namespace decomp {

struct LoadedTarget {
  std::shared_ptr<models::Model> model;
  models::RunConfig run;
  Target target;
  double train_seconds = 0;  // target training time (0 when loaded from a checkpoint)
  std::string checkpoint;    // where the target weights came from / were written
};

// `config_path` is used to resolve relative paths and in error messages. When the target is
// trained, its outputs go to train_dir (if non-empty). `dtype` f64 is used by audits.
LoadedTarget load_target(const nlohmann::json& cfg, const std::string& config_path, const std::string& train_dir,
                         ad::DType dtype = ad::DType::f32, bool quiet = false);

// The config's target on a freshly initialised model of its architecture: no training, no
// checkpoint read. For audits, and for checking config keys that name layers before a long
// run starts (it fails, naming the key, on what load_target would refuse).
LoadedTarget untrained_target(const nlohmann::json& cfg, const std::string& config_path, ad::DType dtype = ad::DType::f32);

// Target over an existing model (the data distribution from run.data).
Target make_target(std::shared_ptr<models::Model> model, const models::RunConfig& run,
                           const std::vector<std::string>& layer_names);

}  // namespace decomp
