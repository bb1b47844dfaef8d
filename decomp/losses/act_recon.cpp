// APD hidden-activation reconstruction (METHODS 2, residual MLPs): the mean over the named
// layers l of MSE(a_l^topk, a_l^target), a_l the input of decomposed layer l (for a residual
// MLP's mlp_out: the MLP's post-ReLU activations) in the top-k forward and in the target pass.
#include "decomp/apd.hpp"
#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"

namespace decomp {

using ad::Tensor;

Tensor apd_act_recon(const APD& apd, const Batch& b, const StepState& st, const std::vector<std::string>& layers) {
  const StepState::TopkPass& pass = apd.topk_forward(b, st);
  Tensor total;
  for (const std::string& name : layers) {
    const int l = apd.cm.index_of(name);
    if (l < 0) ad::fail("loss term act_recon: layer '" + name + "' is not a decomposed layer");
    Tensor e = ad::mse_loss(pass.inputs[(size_t)l], st.inputs[(size_t)l]);
    total = total.defined() ? total + e : e;
  }
  return total / (double)layers.size();
}

namespace {
struct ActReconTerm : LossTerm {
  std::vector<std::string> layers;  // decomposed layers whose inputs are compared
  void read(models::ConfigSection& s) override {
    const nlohmann::json l = s.has("layers") ? s.get_raw("layers") : nlohmann::json();
    if (!l.is_array() || l.empty()) s.error("layers", "must be a non-empty list of decomposed layer names");
    for (const auto& n : l) {
      if (!n.is_string()) s.error("layers", "must be a list of layer names, found " + models::shown(n));
      layers.push_back(n.get<std::string>());
    }
  }
  nlohmann::json params() const override { return {{"layers", layers}}; }
  Tensor value(const TermContext& c) const override { return apd_act_recon(c.apd(), c.batch, c.st, layers); }
};
}  // namespace

PD_LOSS_TERM(act_recon, kAPD, false, [] { return std::make_unique<ActReconTerm>(); });

}  // namespace decomp
