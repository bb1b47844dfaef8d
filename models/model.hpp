// The small interface every target model offers, so training, checkpointing and the
// decomposition methods treat TMS, residual MLPs and transformers alike:
//   - named parameters (name -> Tensor, with a frozen flag: frozen ones are not trained),
//   - the decomposable layers (name, weight [d_out, d_in], bias, tie information),
//   - forward with optional ForwardHooks* (record layer inputs / replace a layer),
//   - the model config as JSON and a factory that rebuilds a model from it.
// Vector models (TMS, residual MLP, plain MLP) map x: [B, n_in] -> [B, n_out]; sequence
// models (induction transformer, tiny LM) map token ids [B, T] -> logits [B, T, vocab].
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autodiff/random.hpp"
#include "autodiff/tensor.hpp"
#include "models/config.hpp"
#include "models/hooks.hpp"

namespace models {

struct NamedParam {
  std::string name;
  ad::Tensor value;
  bool frozen = false;  // fixed during target training (TMS-id identity, residual W_E)
};

struct LayerInfo {
  std::string name;  // the name the forward passes to apply_linear
  ad::Tensor weight; // the weight apply_linear receives: [d_out, d_in] (for a tied layer,
                     // a fresh tensor computed from the parameter it is tied to)
  ad::Tensor bias;   // [d_out] or undefined
  int64_t d_in = 0, d_out = 0;
  // Non-empty when this layer's weight is not a parameter of its own but derived from
  // another layer's: TMS linear2 = linear1^T, the tiny LM's lm_head = embedding, the
  // residual MLP's W_U = W_E^T.
  std::string tied_to;
  bool tied_transposed = false;
  bool frozen = false;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual std::string type() const = 0;  // "tms", "resid_mlp", "mlp", "induction", "tiny_lm"
  virtual json config() const = 0;       // includes "type"; make_model(config()) rebuilds it
  virtual std::vector<NamedParam> parameters() const = 0;
  virtual std::vector<LayerInfo> layers() const = 0;
  virtual ad::DType dtype() const = 0;

  // Vector models: x: [B, n_in] -> [B, n_out].
  virtual bool takes_tokens() const { return false; }
  virtual ad::Tensor forward(const ad::Tensor& x, ForwardHooks* hooks = nullptr);
  // Sequence models: ids [B, T] -> logits [B, T, vocab].
  virtual ad::Tensor forward_tokens(const ad::Indices& ids, ForwardHooks* hooks = nullptr);

  // Convenience on top of parameters().
  ad::Tensor param(const std::string& name) const;  // throws naming the model and the name
  std::vector<ad::Tensor> trainable() const;
  int64_t num_params(bool trainable_only = false) const;
  // Copies `values` into the parameters of the same names (dtype converted). Every
  // parameter must be present with its exact shape; errors name the tensor.
  void load_params(const std::vector<std::pair<std::string, ad::Tensor>>& values, const std::string& source);
};

// Builds an initialised model from its config (the `model` section of a training config,
// or a saved model.json). Unknown keys / wrong types throw ConfigError naming `source`.
std::unique_ptr<Model> make_model(const json& cfg, ad::Rng& rng, ad::DType dtype = ad::DType::f32,
                                  const std::string& source = "<model config>");

// Save / load weights + config as safetensors (the config goes into the metadata under
// "model_config", so a file alone rebuilds the model). Loading checks names and shapes.
void save_model(const Model& m, const std::string& path);
std::unique_ptr<Model> load_model(const std::string& path, ad::DType dtype = ad::DType::f32);

// Initialisers shared by the models.
void init_xavier_normal(ad::Tensor& w, ad::Rng& rng);  // w: [fan_out, fan_in]
void init_normal(ad::Tensor& w, double std, ad::Rng& rng);
ad::Tensor new_param(const ad::Shape& s, ad::DType dtype, bool trainable = true);  // zeros

}  // namespace models
