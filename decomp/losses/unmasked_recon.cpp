#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/decomposition.hpp"

namespace decomp {

using ad::Tensor;

Tensor unmasked_recon(const Decomposition& d, const Batch& b, const StepState& st) {
  std::vector<LayerMask> masks(d.cm.layers.size());
  for (size_t l = 0; l < masks.size(); ++l) {
    std::vector<int64_t> s = st.inputs[l].shape().to_vector();  // [..., d_in] -> [..., C]
    s.back() = d.cm.layers[l].C;
    masks[l].m = ad::ones(ad::Shape::from_vector(s), st.inputs[l].dtype());
  }
  return d.distance(d.forward_masked(b, masks, d.reuse_target_pass ? &st.cache : nullptr), st.target_out);
}

namespace {
struct UnmaskedReconTerm : LossTerm {
  Tensor value(const TermContext& c) const override { return unmasked_recon(c.dec, c.batch, c.st); }
};
}  // namespace

PD_LOSS_TERM(unmasked_recon, kCI | kAPD, true, [] { return std::make_unique<UnmaskedReconTerm>(); });

}  // namespace decomp
