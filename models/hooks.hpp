// How decomposition methods reach inside a model's forward pass.
//
// Every decomposable layer of every model is computed through apply_linear /
// apply_embedding with its stable name ("linear1", "layers.0.mlp_in",
// "blocks.1.attn.q_proj", ...). With no hooks that is just x W^T + b. A decomposition passes
// a ForwardHooks object that can
//   (a) record each named layer's input (SPD's CI functions read the TARGET model's layer
//       inputs from one cached target pass), and
//   (b) replace the layer's computation (masked component forward, APD's top-k forward).
// Names are passed by reference to strings the model owns, so a hooked forward allocates
// nothing per call.
#pragma once
#include <string>

#include "autodiff/ops.hpp"

namespace models {

struct ForwardHooks {
  virtual ~ForwardHooks() = default;
  // x: [..., d_in], weight: [d_out, d_in], bias: [d_out] or undefined.
  // Return an undefined Tensor to compute the layer normally, or the replacement output.
  virtual ad::Tensor linear(const std::string& name, const ad::Tensor& x, const ad::Tensor& weight,
                            const ad::Tensor& bias) {
    (void)name, (void)x, (void)weight, (void)bias;
    return ad::Tensor();
  }
  // ids: token ids, weight: [vocab, d]. Return undefined to compute normally.
  virtual ad::Tensor embedding(const std::string& name, const ad::Indices& ids, const ad::Tensor& weight) {
    (void)name, (void)ids, (void)weight;
    return ad::Tensor();
  }
  // Called with every named layer's output (after replacement, if any): lets APD record
  // layer outputs h_l for attributions, and tests observe activations.
  virtual void output(const std::string& name, const ad::Tensor& out) { (void)name, (void)out; }
};

inline ad::Tensor apply_linear(ForwardHooks* hooks, const std::string& name, const ad::Tensor& x,
                               const ad::Tensor& weight, const ad::Tensor& bias = ad::Tensor()) {
  ad::Tensor out;
  if (hooks) out = hooks->linear(name, x, weight, bias);
  if (!out.defined()) out = ad::linear(x, weight, bias);
  if (hooks) hooks->output(name, out);
  return out;
}

inline ad::Tensor apply_embedding(ForwardHooks* hooks, const std::string& name, const ad::Indices& ids,
                                  const ad::Tensor& weight) {
  ad::Tensor out;
  if (hooks) out = hooks->embedding(name, ids, weight);
  if (!out.defined()) out = ad::embedding(weight, ids);
  if (hooks) hooks->output(name, out);
  return out;
}

// Records every named layer's input (detached) -- the one cached target pass SPD needs.
struct RecordInputs : ForwardHooks {
  std::vector<std::pair<std::string, ad::Tensor>> inputs;  // in call order
  ad::Tensor linear(const std::string& name, const ad::Tensor& x, const ad::Tensor&, const ad::Tensor&) override {
    inputs.emplace_back(name, ad::detach(x));
    return ad::Tensor();
  }
  const ad::Tensor& get(const std::string& name) const {
    for (auto& p : inputs)
      if (p.first == name) return p.second;
    ad::fail("RecordInputs: no input recorded for layer '" + name + "'");
  }
};

}  // namespace models
