// APD minimality (METHODS 2): L_min = D(f_topk(x), f_target(x)), the target's output
// distance (MSE on the toy models) of the forward with only the batch top-k components on.
#include "decomp/apd.hpp"
#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"

namespace decomp {

using ad::Tensor;

Tensor apd_minimality(const APD& apd, const Batch& b, const StepState& st) {
  return apd.distance(apd.topk_forward(b, st).out, st.target_out);
}

namespace {
struct MinimalityTerm : LossTerm {
  Tensor value(const TermContext& c) const override { return apd_minimality(c.apd(), c.batch, c.st); }
};
}  // namespace

PD_LOSS_TERM(minimality, kAPD, true, [] { return std::make_unique<MinimalityTerm>(); });

}  // namespace decomp
