// The seam between a decomposition and the model it decomposes: a batch, the target's forward
// (every decomposed layer goes through models::apply_linear / apply_embedding, so hooks can
// replace it), a batch sampler and the output distance. Built from a models/ target by
// decomp/run/target.hpp, or by hand in tests.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autodiff/ops.hpp"
#include "decomp/component_model.hpp"
#include "models/hooks.hpp"

namespace models {
class Tokenizer;  // models/data.hpp
}

namespace decomp {

struct Batch {
  ad::Tensor x;       // [B, n_in] float inputs (toy models), or undefined
  ad::Indices ids;    // token ids (sequence models)
  int64_t size = 0;   // number of examples
};

// D(out, target_out): MSE for vector outputs, KL(p_target || q) for logits.
enum class Distance { mse, kl };
Distance parse_distance(const std::string& s);

struct Target {
  std::string name;
  std::vector<LayerSpec> layers;  // the layers to decompose, in forward order
  std::function<ad::Tensor(const Batch&, models::ForwardHooks*)> forward;
  std::function<Batch(int64_t batch_size, ad::Rng&)> sample;
  Distance distance = Distance::mse;
  int64_t n_features = 0;  // > 0: inputs are feature vectors; one-hot identity-CI checks apply
  ad::DType dtype = ad::DType::f32;
  // Text targets: the tokenizer of Batch::ids (for showing contexts); null for other targets
  // (token ids are shown as numbers).
  std::shared_ptr<const models::Tokenizer> tokenizer;
};

}  // namespace decomp
