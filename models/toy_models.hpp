// The toy target models of METHODS section 1.1-1.2 plus a plain MLP.
#pragma once
#include "models/model.hpp"

namespace models {

// TMS (METHODS 1.1):  h = W x  (linear1, W: [n_hidden, n_features], no bias)
//                     [-id: h <- I h for each frozen identity layer "hidden_layers.i"]
//                     y = ReLU(W^T h + b)  (linear2, weight W^T tied to linear1, b: [n_features])
struct TMSConfig {
  int64_t n_features = 5, n_hidden = 2;
  int64_t n_hidden_layers = 0;  // 1 for the -id variants
  json to_json() const;
  static TMSConfig from(ConfigSection& s);
};

class TMS : public Model {
 public:
  TMS(const TMSConfig& cfg, ad::Rng& rng, ad::DType dtype);
  std::string type() const override { return "tms"; }
  json config() const override { return cfg_.to_json(); }
  std::vector<NamedParam> parameters() const override;
  std::vector<LayerInfo> layers() const override;
  ad::DType dtype() const override { return W_.dtype(); }
  ad::Tensor forward(const ad::Tensor& x, ForwardHooks* hooks = nullptr) override;

  const TMSConfig& cfg() const { return cfg_; }
  const ad::Tensor& W() const { return W_; }  // [n_hidden, n_features]
  const ad::Tensor& b() const { return b_; }  // [n_features]

 private:
  TMSConfig cfg_;
  ad::Tensor W_, b_;
  std::vector<ad::Tensor> hidden_;  // [n_hidden, n_hidden], identity, frozen
  std::string name_linear1_ = "linear1", name_linear2_ = "linear2";
  std::vector<std::string> hidden_names_;
};

// Residual MLP (METHODS 1.2):  r_0 = x W_E;  r <- r + W_out ReLU(W_in r) per layer;
// y_hat = r W_U with W_U = W_E^T. W_E: [n_features, d_embed] has unit-norm random rows and
// is frozen; layers "layers.i.mlp_in" ([d_mlp, d_embed]) and "layers.i.mlp_out"
// ([d_embed, d_mlp]) carry no biases unless `bias` is set.
struct ResidMLPConfig {
  int64_t n_features = 100, d_embed = 1000, d_mlp = 50, n_layers = 1;
  bool bias = false;
  json to_json() const;
  static ResidMLPConfig from(ConfigSection& s);
};

class ResidMLP : public Model {
 public:
  ResidMLP(const ResidMLPConfig& cfg, ad::Rng& rng, ad::DType dtype);
  std::string type() const override { return "resid_mlp"; }
  json config() const override { return cfg_.to_json(); }
  std::vector<NamedParam> parameters() const override;
  std::vector<LayerInfo> layers() const override;
  ad::DType dtype() const override { return W_E_.dtype(); }
  ad::Tensor forward(const ad::Tensor& x, ForwardHooks* hooks = nullptr) override;

  const ResidMLPConfig& cfg() const { return cfg_; }
  const ad::Tensor& W_E() const { return W_E_; }
  const ad::Tensor& mlp_in(int64_t l) const { return w_in_[l]; }
  const ad::Tensor& mlp_out(int64_t l) const { return w_out_[l]; }

 private:
  ResidMLPConfig cfg_;
  ad::Tensor W_E_;
  std::vector<ad::Tensor> w_in_, w_out_, b_in_, b_out_;
  std::vector<std::string> in_names_, out_names_;
};

// Plain MLP: "linear1" ... "linearN" with ReLU between them (none after the last).
// sizes = [d_in, h1, ..., d_out].
struct MLPConfig {
  std::vector<int64_t> sizes = {2, 16, 2};
  bool bias = true;
  json to_json() const;
  static MLPConfig from(ConfigSection& s);
};

class MLP : public Model {
 public:
  MLP(const MLPConfig& cfg, ad::Rng& rng, ad::DType dtype);
  std::string type() const override { return "mlp"; }
  json config() const override { return cfg_.to_json(); }
  std::vector<NamedParam> parameters() const override;
  std::vector<LayerInfo> layers() const override;
  ad::DType dtype() const override { return w_[0].dtype(); }
  ad::Tensor forward(const ad::Tensor& x, ForwardHooks* hooks = nullptr) override;

 private:
  MLPConfig cfg_;
  std::vector<ad::Tensor> w_, b_;
  std::vector<std::string> names_;
};

}  // namespace models
