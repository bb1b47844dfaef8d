#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/spd.hpp"

namespace decomp {

using ad::Tensor;

Tensor faithfulness(const ComponentModel& cm) {
  // sum_l ||W_l - (V_l U_l)^T||_F^2 / sum_l numel(W_l)   (tied layers count separately)
  Tensor total;
  int64_t n = 0;
  for (size_t l = 0; l < cm.layers.size(); ++l) {
    Tensor s = ad::sum(ad::square(cm.VU((int)l) - cm.layers[l].WT));
    total = total.defined() ? total + s : s;
    n += cm.layers[l].WT.numel();
  }
  return total / (double)n;
}

namespace {
struct FaithfulnessTerm : LossTerm {
  Tensor value(const TermContext& c) const override { return faithfulness(c.dec.cm); }
};
}  // namespace

PD_LOSS_TERM(faithfulness, kCI | kAPD, true, [] { return std::make_unique<FaithfulnessTerm>(); });

}  // namespace decomp
