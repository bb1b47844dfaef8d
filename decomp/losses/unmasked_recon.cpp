#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/spd.hpp"

namespace decomp {

using ad::Tensor;

Tensor unmasked_recon(const SPD& spd, const Batch& b, const StepState& st) {
  std::vector<LayerMask> masks(spd.cm.layers.size());
  for (size_t l = 0; l < masks.size(); ++l) masks[l].m = ad::ones(st.g_lower[l].shape(), st.g_lower[l].dtype());
  return spd.distance(spd.forward_masked(b, masks, spd.reuse_target_pass ? &st.cache : nullptr), st.target_out);
}

namespace {
struct UnmaskedReconTerm : LossTerm {
  Tensor value(const TermContext& c) const override { return unmasked_recon(c.spd, c.batch, c.st); }
};
}  // namespace

PD_LOSS_TERM(unmasked_recon, true, [] { return std::make_unique<UnmaskedReconTerm>(); });

}  // namespace decomp
