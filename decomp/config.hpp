// The "decomposition" part of a config (everything but the target), read strictly through
// models::ConfigSection: unknown keys and wrong types are errors naming the file and the key
// path ("spd_tms_5-2.json: losses[1].routing: ...").
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodiff/train_loop.hpp"
#include "decomp/component_model.hpp"
#include "decomp/loss_term.hpp"
#include "decomp/masks.hpp"

namespace decomp {

// The shared schedule plus the faithfulness warmup. Defaults: batch 1024, lr 1e-3 cosine,
// weight decay 0 (METHODS 3.5: Adam).
struct TrainConfig : ad::TrainSchedule {
  TrainConfig() {
    batch_size = 1024;
    schedule = "cosine";
  }
  int64_t faith_warmup_steps = 0;
  double faith_warmup_lr = 1e-2, faith_warmup_wd = 0.1;
};

// A layer group expected to show one dense-k CI block on one-hot inputs, across layers.
struct DenseKGroup {
  std::string name;
  std::vector<std::string> layers;
  int64_t k = 0;
};

// Which method decomposes: SPD (METHODS 3), APD (METHODS 2) or VPD (METHODS 4: SPD's
// parametrisation with persistent adversarial masks). Values are the loss-term table's bits.
enum class Method { spd = 1, apd = 2, vpd = 4 };
const char* method_name(Method m);  // "spd" | "apd" | "vpd"

// APD's own keys (METHODS 2). C components, each of rank m in every decomposed layer.
enum class Attribution { gradient, ablation, activation };
const char* attribution_name(Attribution a);
struct APDOptions {
  int64_t m = 0;                 // rank per component and layer (required)
  double topk = 1.0;             // batch top-k keeps K = floor(topk * B) of the [B, C] attributions
  Attribution attribution = Attribution::gradient;
  // Gradient attributions of the target model (METHODS 2), or of the APD model with every
  // component on (layer weights sum_c P_{c,l}, its own layer inputs): the APD paper's TMS 5-2
  // runs needed the latter ("attributions taken from the APD model").
  bool attribute_apd_model = false;
  // Unit-norm A columns (over d_in) at the start of every step, with the gradient component
  // parallel to each column removed before the optimiser step (residual-MLP configs).
  bool unit_norm_A = false;
};

struct DecompConfig {
  std::string source;  // the config file (errors building the decomposition name it)
  Method method = Method::spd;
  APDOptions apd;
  ComponentModelOptions model;
  std::vector<std::shared_ptr<const LossTerm>> losses;  // labels unique
  Sampling sampling = Sampling::continuous;
  bool delta = true;
  double leaky_alpha = 0.01;
  TrainConfig train;
  uint64_t seed = 0;
  double ci_threshold = 0.1;
  int64_t eval_batch = 10000;
  // Layers expected to show a dense-k CI pattern on one-hot inputs (layer name -> k), e.g.
  // the TMS identity layer (k = n_hidden) or residual-MLP mlp_out (k = d_mlp).
  std::map<std::string, int64_t> dense_k;
  // Cross-layer dense-k patterns: the one-hot CI matrices of the named layers side by side
  // ([n_features, sum C]) must form one dense block of k components, e.g. the residual MLP's
  // mlp_out layers as one rank-50 (2L) or rank-51 (3L) block spread over all layers.
  std::vector<DenseKGroup> dense_k_groups;
};

// `where` names the file in error messages.
DecompConfig parse_decomp_config(const nlohmann::json& j, const std::string& where);

}  // namespace decomp
