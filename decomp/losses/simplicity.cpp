// APD simplicity (METHODS 2, Schatten-p):
//   L_S = sum_{b,l,c,k} ( s_{b,c} ||A_{c,l,:,k}||^2 ||B_{c,l,k,:}||^2 + 1e-16 )^{p/2} / (N B)
// with s the batch top-k mask, N the decomposed parameter count (a tied layer counts again,
// as in faithfulness) and B the rows of the batch. In the column layout, column j = c m + k
// of layer l has ||A_{c,l,:,k}|| = ||V_l[:, j]|| and ||B_{c,l,k,:}|| = ||U_l[j, :]||; a tied
// layer's A and B are its source's B^T and A^T, so it repeats its source's sum.
#include <cmath>

#include "decomp/apd.hpp"
#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"

namespace decomp {

using ad::Tensor;

Tensor apd_simplicity(const APD& apd, const StepState& st, double p) {
  // s is 0/1, so each (b, j) term is (n_j + 1e-16)^{p/2} where s_{b,j} = 1 and the constant
  // (1e-16)^{p/2} elsewhere: the sum is sum_j count_j (n_j + 1e-16)^{p/2} + (B C m - sum_j count_j)
  // (1e-16)^{p/2} with count_j = sum_b s_{b,j}. The same number as the formula above, with the
  // power taken over C m column norms instead of B C m entries.
  const ComponentModel& cm = apd.cm;
  const int64_t rows = st.topk_columns.size(0), cols = st.topk_columns.size(1);
  const Tensor count = ad::sum(st.topk_columns, {0});  // [C m], constant
  const double kept = ad::sum(count).item();
  const double floor_term = ((double)rows * (double)cols - kept) * std::pow(1e-16, p / 2.0);
  Tensor total;
  int64_t N = 0;
  for (size_t l = 0; l < cm.layers.size(); ++l) {
    const LayerComponents& L = cm.layers[l];
    N += L.d_in * L.d_out;
    const LayerComponents& own = L.tied_src >= 0 ? cm.layers[(size_t)L.tied_src] : L;
    // [C m]: ||A column||^2 ||B row||^2
    const Tensor norms = ad::sum(ad::square(own.V), {0}) * ad::sum(ad::square(own.U), {1});
    const Tensor t = ad::sum(count * ad::pow(norms + 1e-16, p / 2.0)) + floor_term;
    total = total.defined() ? total + t : t;
  }
  return total / ((double)N * (double)rows);
}

namespace {
struct SimplicityTerm : LossTerm {
  double p = 1.0;
  void read(models::ConfigSection& s) override {
    p = s.get_double("p", p);
    if (!(p > 0) || !std::isfinite(p)) s.error("p", "must be a finite number > 0");
  }
  nlohmann::json params() const override { return {{"p", p}}; }
  Tensor value(const TermContext& c) const override { return apd_simplicity(c.apd(), c.st, p); }
};
}  // namespace

PD_LOSS_TERM(simplicity, kAPD, false, [] { return std::make_unique<SimplicityTerm>(); });

}  // namespace decomp
