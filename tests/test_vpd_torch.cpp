// VPD against PyTorch float64 (tests/torch/vpd_step.py): one full training step of
// decomp::train_decomposition on a tiny LM -- the persistent sources' inner Adam ascent, the
// loss terms and the total, the gradients of every U, V and CI-transformer parameter (after
// the component group's clip), the optimiser's update and after_step's source update -- agree
// with an independent float64 PyTorch computation to 1e-9.
//
// Tolerance rule: a tensor's error is max_i |got_i - want_i| / max_i |want_i| (relative to the
// tensor's scale, torch_ref::max_rel_err); a scalar's is |got - want| / |want|. Both < 1e-9.
//
// Randomness: the trainer draws step t's batch and masks from Rng(step_seed(seed, t, stream)).
// The test replays that generator through the same functions in the step's order (batch,
// then the terms in config order: stochastic_recon_subset's mask sources and routes,
// persistent_pgd_recon_subset's routes; faithfulness and importance minimality draw nothing),
// so no hook enters the library; a replay out of step with the trainer would show up as
// different losses.
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "autodiff/optim.hpp"
#include "autodiff/train_loop.hpp"
#include "decomp/trainer.hpp"
#include "decomp/vpd.hpp"
#include "models/model.hpp"
#include "tests/torch_runner.hpp"

using ad::Tensor;
using nlohmann::json;
using torch_ref::max_rel_err;
using torch_ref::tensor_json;

namespace {

constexpr int64_t kVocab = 11, kSeq = 6, kBatch = 4, kC = 4, kStep = 3;
const char* const kLayers[] = {"blocks.0.attn.q_proj", "blocks.0.attn.k_proj", "blocks.0.attn.v_proj",
                               "blocks.0.attn.o_proj", "blocks.0.mlp.c_fc",   "blocks.0.mlp.down_proj"};

// The decomposition config: every VPD training term, p annealed 2 -> 0.4 over [0.1, 0.9] (so
// p = 1.6 at step 3 of 10), the frequency term, repeat-scope sources (2 rows for a batch of
// 4) with 2 inner steps and a source warmup still running at step 3, cosine lr with warmup,
// and a component clip small enough to act.
const char* const kConfig = R"({"method": "vpd", "seed": 5, "C": 4, "delta": true,
  "ci_fn": {"type": "transformer", "global": true, "d_model": 8, "n_heads": 2, "n_blocks": 1, "d_mlp": 8, "rope": true},
  "losses": [{"name": "faithfulness", "coeff": 2.0},
             {"name": "importance_minimality", "coeff": 0.05, "p": 2.0, "p_final": 0.4, "anneal_start": 0.1,
              "anneal_end": 0.9, "beta": 0.5},
             {"name": "stochastic_recon_subset", "coeff": 0.7},
             {"name": "persistent_pgd_recon_subset", "coeff": 0.5, "pgd_scope": "repeat", "pgd_sources": 2,
              "pgd_inner_steps": 2, "pgd_warmup": 0.5}],
  "train": {"steps": 10, "batch_size": 4, "lr": 0.01, "schedule": "cosine", "final_lr_frac": 0.1, "warmup_frac": 0.2,
            "log_every": 1, "checkpoint_every": 3, "grad_clip": {"components": 0.05}}})";

// A float64 tiny LM (vocab 11, d 8, 2 heads, 1 layer, d_mlp 16, context 6) with weights large
// enough that attention, the MLP and the logits are far from linear, as a token target.
struct TinyLMTarget {
  std::shared_ptr<models::Model> model;
  decomp::Target target;
  TinyLMTarget() {
    const json mc = {{"type", "tiny_lm"}, {"vocab", kVocab}, {"d_model", 8},  {"n_heads", 2},
                     {"n_layers", 1},     {"d_mlp", 16},     {"max_len", kSeq}};
    ad::Rng rng(11);
    model = models::make_model(mc, rng, ad::DType::f64);
    for (models::NamedParam& p : model->parameters()) {
      if (p.value.dim() == 1) ad::fill_uniform(p.value, 0.7, 1.3, rng);  // norm gains
      else ad::fill_normal(p.value, 0.0, 0.5, rng);
    }
    target.name = "tiny_lm";
    target.dtype = ad::DType::f64;
    target.distance = decomp::Distance::kl;
    for (const char* name : kLayers)
      for (const models::LayerInfo& li : model->layers())
        if (li.name == name) target.layers.push_back({li.name, ad::detach(li.weight), false, ""});
    auto m = model;
    target.forward = [m](const decomp::Batch& b, models::ForwardHooks* h) { return m->forward_tokens(b.ids, h); };
    target.sample = [](int64_t B, ad::Rng& r) {
      std::vector<int32_t> ids((size_t)(B * kSeq));
      for (int32_t& v : ids) v = (int32_t)r.below(kVocab);
      decomp::Batch b;
      b.size = B;
      b.ids = ad::Indices(ids, {B, kSeq});
      return b;
    };
  }
};

json tensors_json(const std::vector<Tensor>& ts) {
  json a = json::array();
  for (const Tensor& t : ts) a.push_back(tensor_json(t));
  return a;
}

// What the reference needs before step kStep: target weights, the decomposition's parameters
// and Adam state, the persistent sources and their Adam state, and the step's batch and draws.
json export_before_step(const TinyLMTarget& t, const decomp::VPD& vpd, const ad::Optimizer& opt) {
  json in;
  in["config"] = json::parse(kConfig);
  in["step"] = kStep;
  in["leaky_alpha"] = vpd.cfg.leaky_alpha;
  in["model_config"] = t.model->config();
  for (const models::NamedParam& p : t.model->parameters()) in["target"][p.name] = tensor_json(p.value);
  in["layers"] = json::array();
  for (const char* name : kLayers) in["layers"].push_back(name);
  const std::vector<Tensor> params = vpd.all_params();
  const std::vector<std::string> names = vpd.all_param_names();
  const auto& adam = dynamic_cast<const ad::Adam&>(opt);
  for (size_t i = 0; i < params.size(); ++i) {
    in["params"][names[i]] = tensor_json(params[i]);
    in["adam"][names[i]] = {{"exp_avg", tensor_json(adam.exp_avg(i))},
                            {"exp_avg_sq", tensor_json(adam.exp_avg_sq(i))},
                            {"step", adam.param_steps(i)}};
  }
  in["component_params"] = vpd.cm.component_param_names();
  in["ci_params"] = vpd.cm.ci_param_names();
  const decomp::PersistentSources& ps = vpd.adversaries.at("persistent_pgd_recon_subset");
  in["sources"] = {{"s", tensors_json(ps.s)}, {"s_delta", tensors_json(ps.s_delta)}, {"m1", tensors_json(ps.m1)},
                   {"m2", tensors_json(ps.m2)}, {"t", ps.t.item()}};
  // replay of the step's generator (see the file comment)
  ad::Rng rng(ad::step_seed(vpd.cfg.seed, kStep, decomp::kDecomposeStream));
  const decomp::Batch b = vpd.target.sample(kBatch, rng);
  in["ids"] = {{"shape", b.ids.shape.to_vector()}, {"data", b.ids.v}};
  const std::vector<Tensor> g_like(std::size(kLayers), ad::zeros({kBatch, kSeq, kC}, ad::DType::f64));
  const decomp::MaskSources src = decomp::draw_sources(g_like, decomp::Sampling::continuous, true, rng);
  in["stochastic"] = {{"r", tensors_json(src.r)},
                      {"r_delta", tensors_json(src.r_delta)},
                      {"routes", tensors_json(decomp::draw_routes(g_like, decomp::Routing::uniform_k, 0.5, rng))}};
  in["pgd_routes"] = tensors_json(decomp::draw_routes(g_like, decomp::Routing::uniform_k, 0.5, rng));
  return in;
}

void check_scalar(const json& want, double got, const std::string& what) {
  INFO(what << ": got " << got << ", want " << want);
  REQUIRE(want.is_number());
  CHECK(std::abs(got - want.get<double>()) <= 1e-9 * std::abs(want.get<double>()));
}

}  // namespace

TEST_CASE("vpd: one full training step on a tiny LM matches PyTorch float64 to 1e-9") {
  TinyLMTarget t;
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(json::parse(kConfig), "test");
  ad::Rng init(cfg.seed);
  decomp::VPD vpd(t.target, cfg, init);
  const std::vector<Tensor> params = vpd.all_params();
  const decomp::PersistentSources& ps = vpd.adversaries.at("persistent_pgd_recon_subset");
  // Steps 0..2 run first, so the sources and the optimiser carry state into step 3; the
  // checkpoint hook sees the state between steps (after step 2, and after step 3 at the stop).
  json in;
  std::vector<Tensor> before, after, grads;
  decomp::TrainHooks hooks;
  hooks.stop_after = kStep + 1;
  hooks.checkpoint = [&](int64_t next, const ad::Optimizer& opt, const decomp::TrainLog&) {
    if (next == kStep) {
      in = export_before_step(t, vpd, opt);
      for (const Tensor& p : params) before.push_back(ad::clone(p));
    } else if (next == kStep + 1) {
      for (const Tensor& p : params) after.push_back(ad::clone(p)), grads.push_back(ad::clone(p.grad()));
    }
  };
  decomp::TrainLog log;
  REQUIRE(decomp::train_decomposition(vpd, &log, {}, &hooks) == kStep + 1);
  REQUIRE(after.size() == params.size());

  const torch_ref::Result ref = torch_ref::run("tests/torch/vpd_step.py", in);
  if (ref.skipped) {
    MESSAGE("skipped: " << ref.reason);
    return;
  }
  REQUIRE_MESSAGE(ref.exit_code == 0, "torch reference failed: " << ref.reason);
  const json& r = ref.out;
  // the log row of step 3 holds that step's values alone (log_every 1)
  REQUIRE(log.steps.back() == kStep + 1);
  auto logged = [&](const std::string& k) { return log.values.at(k).back(); };
  for (const char* term : {"faithfulness", "importance_minimality", "stochastic_recon_subset",
                           "persistent_pgd_recon_subset", "total"})
    check_scalar(r["terms"][term], logged(term), term);
  check_scalar(r["lr"], logged("lr"), "lr");
  check_scalar(r["grad_norm_components"], logged("grad_norm_components"), "component gradient norm (before clip)");
  check_scalar(r["grad_norm_ci_fns"], logged("grad_norm_ci_fns"), "CI gradient norm");
  CHECK(logged("grad_norm_components") > 0.05);  // the clip acted on this step
  const std::vector<std::string> names = vpd.all_param_names();
  for (size_t i = 0; i < params.size(); ++i) {
    CAPTURE(names[i]);
    CHECK(max_rel_err(grads[i], r["grads"][names[i]]) < 1e-9);                // after the clip
    CHECK(max_rel_err(after[i] - before[i], r["updates"][names[i]]) < 1e-9);  // the optimiser's step
  }
  // after_step's ascent: sources and their Adam state
  for (size_t l = 0; l < ps.s.size(); ++l) {
    CAPTURE(kLayers[l]);
    CHECK(max_rel_err(ps.s[l], r["sources"]["s"][l]) < 1e-9);
    CHECK(max_rel_err(ps.s_delta[l], r["sources"]["s_delta"][l]) < 1e-9);
  }
  for (size_t i = 0; i < ps.m1.size(); ++i) {
    CAPTURE(i);
    CHECK(max_rel_err(ps.m1[i], r["sources"]["m1"][i]) < 1e-9);
    CHECK(max_rel_err(ps.m2[i], r["sources"]["m2"][i]) < 1e-9);
  }
  CHECK(ps.t.item() == r["sources"]["t"].get<double>());
}
