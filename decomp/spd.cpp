#include "decomp/spd.hpp"

namespace decomp {

using ad::Tensor;

SPD::SPD(const Target& t, const DecompConfig& c, ad::Rng& init_rng) : Decomposition(t, c, init_rng) {}

StepState SPD::prepare(const Batch& batch, ad::Rng& rng) const {
  StepState st;
  record_target_pass(batch, st);
  st.z = cm.ci_pre_sigmoid(st.inputs, &st.cache.h);
  for (const Tensor& z : st.z) {
    Tensor zl = z;
    if (cfg.sampling == Sampling::binomial) {
      // Binomial variant: lower-leaky input 1.05 z - 0.05 u, u ~ U(0,1) (METHODS 3.2).
      zl = z * 1.05 - ad::rand_uniform(z.shape(), 0.0, 0.05, rng, z.dtype());
    }
    st.g_lower.push_back(ad::lower_leaky_hard_sigmoid(zl, cfg.leaky_alpha));
    st.g_upper.push_back(ad::upper_leaky_hard_sigmoid(z, cfg.leaky_alpha));
  }
  return st;
}

MaskSources SPD::draw_sources(const StepState& st, ad::Rng& rng) const {
  return decomp::draw_sources(st.g_lower, cfg.sampling, cfg.delta, rng);
}
std::vector<LayerMask> SPD::masks_from(const StepState& st, const MaskSources& src) const {
  return decomp::masks_from(st.g_lower, src, cfg.delta);
}
std::vector<Tensor> SPD::draw_routes(const StepState& st, Routing routing, double p, ad::Rng& rng) const {
  return decomp::draw_routes(st.g_lower, routing, p, rng);
}

}  // namespace decomp
