#include "models/model.hpp"

#include <cmath>

#include "models/toy_models.hpp"
#include "models/transformers.hpp"

namespace models {

ad::Tensor Model::forward(const ad::Tensor& x, ForwardHooks*) {
  ad::fail(type() + ".forward: this model takes token ids (use forward_tokens), got a tensor " + x.shape().str());
}

ad::Tensor Model::forward_tokens(const ad::Indices& ids, ForwardHooks*) {
  ad::fail(type() + ".forward_tokens: this model takes a float tensor (use forward), got ids " + ids.shape.str());
}

ad::Tensor Model::param(const std::string& name) const {
  for (auto& p : parameters())
    if (p.name == name) return p.value;
  ad::fail(type() + ": no parameter named '" + name + "'");
}

std::vector<ad::Tensor> Model::trainable() const {
  std::vector<ad::Tensor> t;
  for (auto& p : parameters())
    if (!p.frozen) t.push_back(p.value);
  return t;
}

int64_t Model::num_params(bool trainable_only) const {
  int64_t n = 0;
  for (auto& p : parameters())
    if (!trainable_only || !p.frozen) n += p.value.numel();
  return n;
}

void Model::load_params(const std::vector<std::pair<std::string, ad::Tensor>>& values, const std::string& source) {
  for (auto& p : parameters()) {
    const ad::Tensor* found = nullptr;
    for (auto& v : values)
      if (v.first == p.name) found = &v.second;
    if (!found) ad::fail(source + ": missing tensor '" + p.name + "' for " + type() + " model");
    ad::copy_loaded(p.value, *found, source + ": tensor '" + p.name + "' of the " + type() + " model");
  }
  for (auto& v : values) {
    bool known = false;
    for (auto& p : parameters()) known |= p.name == v.first;
    if (!known) ad::fail(source + ": tensor '" + ad::clip_for_message(v.first) + "' is not a parameter of the " + type() + " model");
  }
}

std::unique_ptr<Model> make_model(const json& cfg, ad::Rng& rng, ad::DType dtype, const std::string& source) {
  ConfigSection s(cfg, source, "model");
  const std::string type = s.get_string("type");
  std::unique_ptr<Model> m;
  if (type == "tms") m.reset(new TMS(TMSConfig::from(s), rng, dtype));
  else if (type == "resid_mlp") m.reset(new ResidMLP(ResidMLPConfig::from(s), rng, dtype));
  else if (type == "mlp") m.reset(new MLP(MLPConfig::from(s), rng, dtype));
  else if (type == "induction") m.reset(new InductionTransformer(InductionConfig::from(s), rng, dtype));
  else if (type == "tiny_lm") m.reset(new TinyLM(TinyLMConfig::from(s), rng, dtype));
  else s.error("type", "unknown model type '" + type + "' (tms, resid_mlp, mlp, induction, tiny_lm)");
  s.finish();
  return m;
}

ad::Tensor new_param(const ad::Shape& s, ad::DType dtype, bool trainable) {
  ad::Tensor t = ad::zeros(s, dtype);
  if (trainable) t.requires_grad_(true);
  return t;
}

void init_xavier_normal(ad::Tensor& w, ad::Rng& rng) {
  // std = sqrt(2 / (fan_in + fan_out)) for w: [fan_out, fan_in]
  const double std = std::sqrt(2.0 / (double)(w.size(0) + w.size(1)));
  ad::fill_normal(w, 0.0, std, rng);
}

void init_normal(ad::Tensor& w, double std, ad::Rng& rng) { ad::fill_normal(w, 0.0, std, rng); }

}  // namespace models
