#include <cmath>

#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/spd.hpp"

namespace decomp {

using ad::Tensor;

double PAnnealing::p_at(double frac) const {
  if (p_final < 0) return p;
  if (frac <= anneal_start) return p;
  if (frac >= anneal_end) return p_final;
  return p + (p_final - p) * (frac - anneal_start) / (anneal_end - anneal_start);
}

Tensor importance_minimality(const std::vector<Tensor>& g_upper, double p, double beta) {
  // per layer: S_c = sum_b (u_bc + 1e-12)^p, f_c = S_c / B;  sum_l sum_c [f_c + beta f_c log2(1 + S_c)]
  Tensor total;
  for (const Tensor& u : g_upper) {
    const int64_t C = u.size(-1), N = u.numel() / C;
    Tensor flat = ad::reshape(u, {N, C});
    // p = 1 and p = 2 skip the generic pow (same values, cheaper)
    Tensor shifted = flat + 1e-12;
    Tensor up = p == 1.0 ? shifted : (p == 2.0 ? ad::square(shifted) : ad::pow(shifted, p));
    Tensor S = ad::sum(up, {0});  // [C]
    Tensor f = S / (double)N;
    Tensor t = ad::sum(f);
    if (beta != 0) t = t + ad::sum(f * ad::log(S + 1.0)) * (beta / std::log(2.0));
    total = total.defined() ? total + t : t;
  }
  return total;
}

namespace {
struct ImportanceMinimalityTerm : LossTerm {
  PAnnealing p;
  double beta = 0.0;  // VPD's frequency term coefficient
  void read(models::ConfigSection& s) override {
    p.p = s.get_double("p", p.p);
    p.p_final = s.get_double("p_final", p.p_final);
    p.anneal_start = s.get_double("anneal_start", p.anneal_start);
    p.anneal_end = s.get_double("anneal_end", p.anneal_end);
    beta = s.get_double("beta", beta);
    if (!(p.p > 0)) s.error("p", "must be > 0");
    if (p.anneal_end < p.anneal_start) s.error("anneal_end", "must be >= anneal_start");
  }
  nlohmann::json params() const override {
    return {{"p", p.p}, {"p_final", p.p_final}, {"anneal_start", p.anneal_start}, {"anneal_end", p.anneal_end},
            {"beta", beta}};
  }
  Tensor value(const TermContext& c) const override { return importance_minimality(c.st.g_upper, p.p_at(c.frac), beta); }
};
}  // namespace

PD_LOSS_TERM(importance_minimality, kCI, false, [] { return std::make_unique<ImportanceMinimalityTerm>(); });

}  // namespace decomp
