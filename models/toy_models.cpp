#include "models/toy_models.hpp"

#include <cmath>

namespace models {

// Layer counts are checked before any layer is built: 2^62 layers used to allocate until the
// machine ran out of memory. (Sizes are checked where tensors are allocated, ad::zeros.)
constexpr int64_t kMaxLayers = 1000;

// ---- TMS ---------------------------------------------------------------------------------

json TMSConfig::to_json() const {
  return json{{"type", "tms"}, {"n_features", n_features}, {"n_hidden", n_hidden}, {"n_hidden_layers", n_hidden_layers}};
}

TMSConfig TMSConfig::from(ConfigSection& s) {
  TMSConfig c;
  s.accept("type");
  c.n_features = s.get_int("n_features");
  c.n_hidden = s.get_int("n_hidden");
  c.n_hidden_layers = s.get_int("n_hidden_layers", 0);
  if (c.n_features < 1) s.error("n_features", "must be >= 1");
  if (c.n_hidden < 1) s.error("n_hidden", "must be >= 1");
  if (c.n_hidden_layers < 0 || c.n_hidden_layers > kMaxLayers)
    s.error("n_hidden_layers", "must be in [0, " + std::to_string(kMaxLayers) + "]");
  return c;
}

TMS::TMS(const TMSConfig& cfg, ad::Rng& rng, ad::DType dtype) : cfg_(cfg) {
  W_ = new_param({cfg.n_hidden, cfg.n_features}, dtype);
  init_xavier_normal(W_, rng);
  b_ = new_param({cfg.n_features}, dtype);  // b = 0
  for (int64_t i = 0; i < cfg.n_hidden_layers; ++i) {
    // Frozen identity: the -id variants keep the function of plain TMS but give SPD a
    // full-rank square layer whose ideal decomposition is n_hidden rank-1 pieces.
    ad::Tensor I = ad::zeros({cfg.n_hidden, cfg.n_hidden}, dtype);
    for (int64_t j = 0; j < cfg.n_hidden; ++j) I.set_item(j * cfg.n_hidden + j, 1.0);
    hidden_.push_back(I);
    hidden_names_.push_back("hidden_layers." + std::to_string(i));
  }
}

std::vector<NamedParam> TMS::parameters() const {
  std::vector<NamedParam> p{{"linear1.weight", W_, false}};
  for (size_t i = 0; i < hidden_.size(); ++i) p.push_back({hidden_names_[i] + ".weight", hidden_[i], true});
  p.push_back({"linear2.bias", b_, false});
  return p;
}

std::vector<LayerInfo> TMS::layers() const {
  std::vector<LayerInfo> l;
  l.push_back({name_linear1_, W_, ad::Tensor(), cfg_.n_features, cfg_.n_hidden, "", false, false});
  for (size_t i = 0; i < hidden_.size(); ++i)
    l.push_back({hidden_names_[i], hidden_[i], ad::Tensor(), cfg_.n_hidden, cfg_.n_hidden, "", false, true});
  l.push_back({name_linear2_, ad::transpose(W_, 0, 1), b_, cfg_.n_hidden, cfg_.n_features, name_linear1_, true, false});
  return l;
}

ad::Tensor TMS::forward(const ad::Tensor& x, ForwardHooks* hooks) {
  if (x.dim() < 1 || x.size(-1) != cfg_.n_features)
    ad::fail("TMS.forward: input " + x.shape().str() + " needs last dim n_features=" + std::to_string(cfg_.n_features));
  // x: [B, n_features] -> h: [B, n_hidden]
  ad::Tensor h = apply_linear(hooks, name_linear1_, x, W_);
  for (size_t i = 0; i < hidden_.size(); ++i) h = apply_linear(hooks, hidden_names_[i], h, hidden_[i]);
  // linear2's weight is W^T: [n_features, n_hidden]; passed as a tensor of its own so a
  // decomposition can replace linear2 independently of linear1.
  ad::Tensor Wt = ad::transpose(W_, 0, 1);
  return ad::relu(apply_linear(hooks, name_linear2_, h, Wt, b_));
}

// ---- Residual MLP --------------------------------------------------------------------------

json ResidMLPConfig::to_json() const {
  return json{{"type", "resid_mlp"}, {"n_features", n_features}, {"d_embed", d_embed},
              {"d_mlp", d_mlp},      {"n_layers", n_layers},     {"bias", bias}};
}

ResidMLPConfig ResidMLPConfig::from(ConfigSection& s) {
  ResidMLPConfig c;
  s.accept("type");
  c.n_features = s.get_int("n_features");
  c.d_embed = s.get_int("d_embed");
  c.d_mlp = s.get_int("d_mlp");
  c.n_layers = s.get_int("n_layers", 1);
  c.bias = s.get_bool("bias", false);
  if (c.n_features < 1) s.error("n_features", "must be >= 1");
  if (c.d_embed < 1) s.error("d_embed", "must be >= 1");
  if (c.d_mlp < 1) s.error("d_mlp", "must be >= 1");
  if (c.n_layers < 1 || c.n_layers > kMaxLayers) s.error("n_layers", "must be in [1, " + std::to_string(kMaxLayers) + "]");
  return c;
}

ResidMLP::ResidMLP(const ResidMLPConfig& cfg, ad::Rng& rng, ad::DType dtype) : cfg_(cfg) {
  // W_E rows ~ N(0, I) normalised to unit norm: features get nearly orthogonal directions.
  W_E_ = ad::zeros({cfg.n_features, cfg.d_embed}, dtype);
  ad::fill_normal(W_E_, 0.0, 1.0, rng);
  for (int64_t i = 0; i < cfg.n_features; ++i) {
    double nrm = 0;
    for (int64_t j = 0; j < cfg.d_embed; ++j) nrm += W_E_.item(i * cfg.d_embed + j) * W_E_.item(i * cfg.d_embed + j);
    nrm = std::sqrt(nrm);
    for (int64_t j = 0; j < cfg.d_embed; ++j) W_E_.set_item(i * cfg.d_embed + j, W_E_.item(i * cfg.d_embed + j) / nrm);
  }
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l);
    in_names_.push_back(p + ".mlp_in");
    out_names_.push_back(p + ".mlp_out");
    // PyTorch nn.Linear's default scale, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    ad::Tensor wi = new_param({cfg.d_mlp, cfg.d_embed}, dtype), wo = new_param({cfg.d_embed, cfg.d_mlp}, dtype);
    ad::fill_uniform(wi, -1.0 / std::sqrt((double)cfg.d_embed), 1.0 / std::sqrt((double)cfg.d_embed), rng);
    ad::fill_uniform(wo, -1.0 / std::sqrt((double)cfg.d_mlp), 1.0 / std::sqrt((double)cfg.d_mlp), rng);
    w_in_.push_back(wi);
    w_out_.push_back(wo);
    if (cfg.bias) {
      b_in_.push_back(new_param({cfg.d_mlp}, dtype));
      b_out_.push_back(new_param({cfg.d_embed}, dtype));
    } else {
      b_in_.emplace_back();
      b_out_.emplace_back();
    }
  }
}

std::vector<NamedParam> ResidMLP::parameters() const {
  std::vector<NamedParam> p{{"W_E", W_E_, true}};
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    p.push_back({in_names_[l] + ".weight", w_in_[l], false});
    if (cfg_.bias) p.push_back({in_names_[l] + ".bias", b_in_[l], false});
    p.push_back({out_names_[l] + ".weight", w_out_[l], false});
    if (cfg_.bias) p.push_back({out_names_[l] + ".bias", b_out_[l], false});
  }
  return p;
}

std::vector<LayerInfo> ResidMLP::layers() const {
  std::vector<LayerInfo> out;
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    out.push_back({in_names_[l], w_in_[l], b_in_[l], cfg_.d_embed, cfg_.d_mlp, "", false, false});
    out.push_back({out_names_[l], w_out_[l], b_out_[l], cfg_.d_mlp, cfg_.d_embed, "", false, false});
  }
  return out;
}

ad::Tensor ResidMLP::forward(const ad::Tensor& x, ForwardHooks* hooks) {
  if (x.dim() < 1 || x.size(-1) != cfg_.n_features)
    ad::fail("ResidMLP.forward: input " + x.shape().str() + " needs last dim n_features=" + std::to_string(cfg_.n_features));
  ad::Tensor r = ad::matmul(x, W_E_);  // [B, d_embed]
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    ad::Tensor a = ad::relu(apply_linear(hooks, in_names_[l], r, w_in_[l], b_in_[l]));  // [B, d_mlp]
    r = r + apply_linear(hooks, out_names_[l], a, w_out_[l], b_out_[l]);
  }
  return ad::matmul(r, W_E_, false, true);  // r W_E^T: [B, n_features]
}

// ---- plain MLP -----------------------------------------------------------------------------

json MLPConfig::to_json() const { return json{{"type", "mlp"}, {"sizes", sizes}, {"bias", bias}}; }

MLPConfig MLPConfig::from(ConfigSection& s) {
  MLPConfig c;
  s.accept("type");
  std::vector<double> sz = s.get_doubles("sizes", {});
  if (sz.size() < 2) s.error("sizes", "needs at least [d_in, d_out]");
  if ((int64_t)sz.size() > kMaxLayers + 1) s.error("sizes", "more than " + std::to_string(kMaxLayers) + " layers");
  c.sizes.clear();
  for (double v : sz) {
    if (!(v >= 1 && v <= 0x1p40) || v != std::floor(v)) s.error("sizes", "entries must be whole numbers in [1, 2^40]");
    c.sizes.push_back((int64_t)v);
  }
  c.bias = s.get_bool("bias", true);
  return c;
}

MLP::MLP(const MLPConfig& cfg, ad::Rng& rng, ad::DType dtype) : cfg_(cfg) {
  for (size_t i = 0; i + 1 < cfg.sizes.size(); ++i) {
    ad::Tensor w = new_param({cfg.sizes[i + 1], cfg.sizes[i]}, dtype);
    const double a = 1.0 / std::sqrt((double)cfg.sizes[i]);
    ad::fill_uniform(w, -a, a, rng);
    w_.push_back(w);
    if (cfg.bias) {
      ad::Tensor b = new_param({cfg.sizes[i + 1]}, dtype);
      ad::fill_uniform(b, -a, a, rng);
      b_.push_back(b);
    } else {
      b_.emplace_back();
    }
    names_.push_back("linear" + std::to_string(i + 1));
  }
}

std::vector<NamedParam> MLP::parameters() const {
  std::vector<NamedParam> p;
  for (size_t i = 0; i < w_.size(); ++i) {
    p.push_back({names_[i] + ".weight", w_[i], false});
    if (cfg_.bias) p.push_back({names_[i] + ".bias", b_[i], false});
  }
  return p;
}

std::vector<LayerInfo> MLP::layers() const {
  std::vector<LayerInfo> l;
  for (size_t i = 0; i < w_.size(); ++i)
    l.push_back({names_[i], w_[i], b_[i], cfg_.sizes[i], cfg_.sizes[i + 1], "", false, false});
  return l;
}

ad::Tensor MLP::forward(const ad::Tensor& x, ForwardHooks* hooks) {
  if (x.dim() < 1 || x.size(-1) != cfg_.sizes[0])
    ad::fail("MLP.forward: input " + x.shape().str() + " needs last dim " + std::to_string(cfg_.sizes[0]));
  ad::Tensor h = x;
  for (size_t i = 0; i < w_.size(); ++i) {
    h = apply_linear(hooks, names_[i], h, w_[i], b_[i]);
    if (i + 1 < w_.size()) h = ad::relu(h);
  }
  return h;
}

}  // namespace models
