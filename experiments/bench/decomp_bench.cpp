// `pd bench spd_tms_5-2 | spd_tms_40-10 | spd_resid_mlp1`: steps/s of one full SPD training
// step of METHODS 3.6 (importance minimality + stochastic + layerwise reconstruction, delta
// component on, mlp[16] CI functions, Adam update) with the config's batch size, on a freshly
// initialised target (a step's cost does not depend on the target's weights).
// experiments/pytorch/spd_step_bench.py is the same step in plain PyTorch eager.
// `pd bench apd_tms_5-2 | apd_tms_40-10 | apd_resid_mlp1`: one full APD training step of the
// shipped config (gradient attributions of the target, batch top-k, every loss term, the
// unit-norm A step where configured, Adam); experiments/pytorch/apd_step_bench.py is the same
// step in PyTorch eager.
// `pd bench vpd_ih | vpd_tiny_lm`: one full VPD training step of the shipped config (global
// transformer CI function, every loss term, the persistent sources' inner ascent steps, Adam,
// after_step's source update); experiments/pytorch/vpd_step_bench.py is the same step in
// PyTorch eager. Token targets also report their vocab and sequence length (the script's sizes).
#include "autodiff/optim.hpp"
#include "experiments/bench/bench.hpp"
#include "decomp/run/target.hpp"

namespace {

// Median time of one training step (sample, forward, backward, Adam) of `sc` on `target`.
pd::BenchJson time_spd_step(const decomp::Target& target, const decomp::DecompConfig& sc, int64_t batch, double lr,
                            const pd::BenchOptions& opt) {
  ad::Rng rng(0);
  std::unique_ptr<decomp::Decomposition> dec = decomp::make_decomposition(target, sc, rng);
  ad::Adam adam({ad::ParamGroup("components", dec->cm.component_params()), ad::ParamGroup("ci_fns", dec->cm.ci_params())},
                ad::AdamConfig{lr, {0.9, 0.999}, 1e-8, 0.0});
  auto step = [&] {
    dec->before_step();
    decomp::Batch b = target.sample(batch, rng);
    adam.zero_grad();
    ad::backward(dec->total_loss(b, 0.5, rng, nullptr, false));
    dec->after_backward();
    adam.step(lr);
    dec->after_step();
  };
  pd::Timing t = pd::time_it(step, opt.min_seconds < 2.0 && !opt.quick ? 2.0 : opt.min_seconds);
  return {{"steps_per_s", 1.0 / t.median_s}, {"best_steps_per_s", 1.0 / t.best_s}, {"ms_per_step", 1e3 * t.median_s},
          {"batch", batch}, {"C", dec->cm.components()}, {"reps", t.reps}};
}

pd::BenchJson bench_spd(const char* spd_config, const char* run_config, const pd::BenchOptions& opt) {
  nlohmann::json cfg = nlohmann::json::parse(R"({"C": 20, "ci_fn": {"type": "mlp", "hidden": [16]}, "delta": true,
    "losses": [{"name": "importance_minimality", "coeff": 3e-3, "p": 1.0},
               {"name": "stochastic_recon", "coeff": 1.0}, {"name": "stochastic_recon_layerwise", "coeff": 1.0}]})");
  (void)spd_config;
  models::RunConfig run = models::load_run_config(run_config);
  const bool tms = run.model.at("type") == "tms";
  cfg["C"] = tms ? (run.model.at("n_features").get<int64_t>() == 5 ? 20 : 200) : 100;
  if (!tms) cfg["losses"][0]["coeff"] = 1e-5, cfg["losses"][0]["p"] = 2.0;
  const int64_t batch = opt.quick ? 256 : (tms ? 4096 : 2048);
  decomp::DecompConfig sc = decomp::parse_decomp_config(cfg, spd_config);
  ad::Rng mrng(0);
  std::shared_ptr<models::Model> model = models::make_model(run.model, mrng, ad::DType::f32, run_config);
  return time_spd_step(decomp::make_target(model, run, {}), sc, batch, 1e-3, opt);
}

// One training step of a shipped decomposition config (its C, CI functions, every loss term
// with its coefficient, its batch size) on a freshly initialised target: the per-step cost
// of `pd decompose` on that config, for profiling the longer runs (--profile).
pd::BenchJson bench_spd_config(const char* spd_config, const pd::BenchOptions& opt) {
  const nlohmann::json cfg = models::read_json_file(spd_config);
  const nlohmann::json& target_cfg = cfg.at("target");
  models::RunConfig run = models::load_run_config(target_cfg.at("run_config").get<std::string>());
  std::vector<std::string> layers = target_cfg.value("layers", std::vector<std::string>{});
  decomp::DecompConfig sc = decomp::parse_decomp_config(cfg, spd_config);
  if (sc.method == decomp::Method::apd) sc.apd.attribute_apd_model = false;  // the PyTorch script's step
  const int64_t batch = opt.quick ? std::min<int64_t>(sc.train.batch_size, 64) : sc.train.batch_size;
  ad::Rng mrng(0);
  std::shared_ptr<models::Model> model = models::make_model(run.model, mrng, ad::DType::f32, spd_config);
  const decomp::Target target = decomp::make_target(model, run, layers);
  pd::BenchJson out = time_spd_step(target, sc, batch, sc.train.lr, opt);
  if (model->takes_tokens()) {
    ad::Rng probe(0);
    out["vocab"] = model->config().at("vocab");
    out["seq_len"] = target.sample(1, probe).ids.shape[1];
  }
  return out;
}

pd::BenchJson bench_tms52(const pd::BenchOptions& o) { return bench_spd("spd_tms_5-2", "experiments/configs/tms_5-2.json", o); }
pd::BenchJson bench_tms4010(const pd::BenchOptions& o) { return bench_spd("spd_tms_40-10", "experiments/configs/tms_40-10.json", o); }
pd::BenchJson bench_resid1(const pd::BenchOptions& o) { return bench_spd("spd_resid_mlp1", "experiments/configs/resid_mlp1.json", o); }

}  // namespace

PD_BENCH("spd_tms_5-2", "SPD training step on TMS 5-2 (C 20, batch 4096)", bench_tms52);
PD_BENCH("spd_tms_40-10", "SPD training step on TMS 40-10 (C 200, batch 4096)", bench_tms4010);
PD_BENCH("spd_config_ih", "one pd decompose step of experiments/configs/spd_ih.json (fresh target)",
         [](const pd::BenchOptions& o) { return bench_spd_config("experiments/configs/spd_ih.json", o); });
PD_BENCH("spd_config_resid_mlp2", "one pd decompose step of experiments/configs/spd_resid_mlp2.json (fresh target)",
         [](const pd::BenchOptions& o) { return bench_spd_config("experiments/configs/spd_resid_mlp2.json", o); });
PD_BENCH("spd_config_resid_mlp3", "one pd decompose step of experiments/configs/spd_resid_mlp3.json (fresh target)",
         [](const pd::BenchOptions& o) { return bench_spd_config("experiments/configs/spd_resid_mlp3.json", o); });
PD_BENCH("spd_resid_mlp1", "SPD training step on the 1-layer residual MLP (C 100, batch 2048)", bench_resid1);
PD_BENCH("vpd_ih", "VPD training step of experiments/configs/vpd_ih.json (C 100 on 8 layers, transformer CI, batch 16)",
         [](const pd::BenchOptions& o) { return bench_spd_config("experiments/configs/vpd_ih.json", o); });
PD_BENCH("vpd_tiny_lm", "VPD training step of experiments/configs/vpd_tiny_lm.json (C 64 on 12 layers, transformer CI, batch 16)",
         [](const pd::BenchOptions& o) { return bench_spd_config("experiments/configs/vpd_tiny_lm.json", o); });
PD_BENCH("apd_tms_5-2", "APD training step of experiments/configs/apd_tms_5-2.json (C 5, m 3, batch 2048)",
         [](const pd::BenchOptions& o) { return bench_spd_config("experiments/configs/apd_tms_5-2.json", o); });
PD_BENCH("apd_tms_40-10", "APD training step of experiments/configs/apd_tms_40-10.json (C 50, m 11, batch 2048)",
         [](const pd::BenchOptions& o) { return bench_spd_config("experiments/configs/apd_tms_40-10.json", o); });
PD_BENCH("apd_resid_mlp1", "APD training step of experiments/configs/apd_resid_mlp1.json (C 130, m 50, batch 256)",
         [](const pd::BenchOptions& o) { return bench_spd_config("experiments/configs/apd_resid_mlp1.json", o); });
