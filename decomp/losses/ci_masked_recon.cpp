#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/spd.hpp"

namespace decomp {

using ad::Tensor;

Tensor ci_masked_recon(const SPD& spd, const Batch& b, const StepState& st) {
  std::vector<LayerMask> masks(spd.cm.layers.size());
  for (size_t l = 0; l < masks.size(); ++l) masks[l].m = st.g_lower[l];  // m = g, no delta
  return spd.distance(spd.forward_masked(b, masks, spd.reuse_target_pass ? &st.cache : nullptr), st.target_out);
}

namespace {
struct CIMaskedReconTerm : LossTerm {
  Tensor value(const TermContext& c) const override { return ci_masked_recon(c.spd(), c.batch, c.st); }
};
}  // namespace

PD_LOSS_TERM(ci_masked_recon, kCI, true, [] { return std::make_unique<CIMaskedReconTerm>(); });

}  // namespace decomp
