#include "decomp/evaluate_lm.hpp"

#include <cmath>

#include "decomp/losses/losses.hpp"
#include "decomp/mask_ops.hpp"
#include "decomp/spd.hpp"

namespace decomp {

using ad::Tensor;
using nlohmann::json;

Tensor next_token_ce(const Tensor& logits, const ad::Indices& ids) {
  const int64_t B = logits.size(0), S = logits.size(1), V = logits.size(2);
  if (ids.shape.nd != 2 || ids.shape[0] != B || ids.shape[1] != S)
    ad::fail("next_token_ce: ids " + ids.shape.str() + " do not match logits " + logits.shape().str());
  if (S < 2) ad::fail("next_token_ce: sequences of length " + std::to_string(S) + " have no next token");
  std::vector<int32_t> next;
  next.reserve((size_t)(B * (S - 1)));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 1; t < S; ++t) next.push_back(ids.v[(size_t)(b * S + t)]);
  const Tensor pred = ad::reshape(ad::slice(logits, 1, 0, S - 1), {B * (S - 1), V});
  return ad::cross_entropy(pred, ad::Indices(std::move(next), {B * (S - 1)}));
}

const MaskingEval* LMEval::find(const std::string& strategy) const {
  for (const MaskingEval& m : strategies)
    if (m.strategy == strategy) return &m;
  return nullptr;
}

json LMEval::to_json() const {
  json s = json::object();
  for (const MaskingEval& m : strategies)
    s[m.strategy] = {{"kl", m.kl}, {"ce", m.ce}, {"ce_unrecovered", m.ce_unrecovered}};
  return {{"ce_target", ce_target},
          {"strategies", s},
          {"sequences", sequences},
          {"positions", positions},
          {"adversarial", {{"scope", "shared"}, {"steps", kAdversarialEvalSteps}, {"step_size", kAdversarialEvalStepSize}}}};
}

namespace {

const char* const kStrategies[] = {"unmasked", "ci_masked", "stochastic", "random", "rounded", "zero", "adversarial"};

// The masks of one strategy for every layer.
std::vector<LayerMask> strategy_masks(const SPD& spd, const std::string& name, const Batch& b, const StepState& st,
                                      ad::Rng& rng) {
  const std::vector<Tensor>& g = st.g_lower;
  std::vector<LayerMask> masks(g.size());
  if (name == "stochastic") return spd.masks_from(st, spd.draw_sources(st, rng));
  if (name == "adversarial") {
    PgdParams p;
    p.scope = "shared";
    p.init = "uniform";
    p.steps = kAdversarialEvalSteps;
    p.step_size = kAdversarialEvalStepSize;
    return pgd_masks(spd, b, st, p, rng);
  }
  for (size_t l = 0; l < g.size(); ++l) {
    const ad::Shape& s = g[l].shape();
    const ad::DType dt = g[l].dtype();
    if (name == "unmasked") masks[l].m = ad::ones(s, dt);
    else if (name == "ci_masked") masks[l].m = g[l];
    else if (name == "random") masks[l].m = ad::rand_uniform(s, 0.0, 1.0, rng, dt);
    else if (name == "rounded") masks[l].m = ad::where(ad::relu(g[l] - spd.cfg.ci_threshold), ad::ones(s, dt), ad::zeros(s, dt));
    else masks[l].m = ad::zeros(s, dt);  // zero
  }
  return masks;
}

}  // namespace

LMEval evaluate_lm(const Decomposition& dec, ad::Rng& rng, int64_t total, int64_t chunk) {
  const SPD* spd = dynamic_cast<const SPD*>(&dec);
  if (!spd) ad::fail(std::string("evaluate_lm: needs a method with CI functions (spd or vpd), this is ") + dec.method_name());
  ad::NoGradGuard ng;
  LMEval r;
  r.strategies.resize(std::size(kStrategies));
  for (size_t i = 0; i < r.strategies.size(); ++i) r.strategies[i].strategy = kStrategies[i];
  for (int64_t done = 0; done < total; done += chunk) {
    const int64_t n = std::min(chunk, total - done);
    const Batch b = dec.target.sample(n, rng);
    if (b.ids.shape.nd != 2) ad::fail("evaluate_lm: the target's batches are not token sequences");
    const StepState st = dec.prepare(b, rng);
    const int64_t pos = n * (b.ids.shape[1] - 1);
    r.ce_target += (double)pos * next_token_ce(st.target_out, b.ids).item();
    for (MaskingEval& m : r.strategies) {
      const Tensor out = dec.forward_masked(b, strategy_masks(*spd, m.strategy, b, st, rng),
                                            dec.reuse_target_pass ? &st.cache : nullptr);
      m.kl += (double)pos * dec.distance(out, st.target_out).item();
      m.ce += (double)pos * next_token_ce(out, b.ids).item();
    }
    r.sequences += n;
    r.positions += pos;
  }
  const double P = (double)std::max<int64_t>(1, r.positions);
  r.ce_target /= P;
  for (MaskingEval& m : r.strategies) m.kl /= P, m.ce /= P;
  const double ce_zero = r.find("zero")->ce;
  for (MaskingEval& m : r.strategies)
    m.ce_unrecovered = ce_zero != r.ce_target ? (m.ce - r.ce_target) / (ce_zero - r.ce_target) : NAN;
  return r;
}

}  // namespace decomp
