// `pd decompose <config.json> [--out DIR]`: SPD on a target model (training the target first
// when the config gives no checkpoint), then metrics.json, decomposition.safetensors, plots
// and a result table. Long runs can be split: train.checkpoint_every / --stop-after write
// DIR/checkpoint.safetensors, and --resume continues from it with the same bits as an
// uninterrupted run. --evaluate re-evaluates a saved decomposition.safetensors (or an
// unfinished run's checkpoint) under the config's (possibly newer) evaluation fields without
// training. The pipeline itself is experiments/decompose_pipeline.hpp.
// `pd audit <config.json>`: one training step of that config in float64, every parameter's
// gradient checked against central finite differences (a sample of coordinates per tensor).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "decomp/run/audit.hpp"
#include "experiments/cli.hpp"
#include "experiments/decompose_pipeline.hpp"

namespace {

int cmd_decompose(int argc, char** argv) {
  CLI::App app{"parameter decomposition of a target model: SPD, APD or VPD (METHODS sections 2-4), by the config's method"};
  pd::DecomposeOptions o;
  app.add_option("config", o.config_path, "decomposition config (experiments/configs/{spd,apd,vpd}_*.json)")->required();
  app.add_option("--out", o.out_dir, "output directory (default runs/<config name>)");
  app.add_option("--seed", o.seed, "override the config's seed")->check(pd::at_least(0));
  app.add_option("--steps", o.steps, "override train.steps")->check(pd::at_least(0));
  app.add_option("--target-checkpoint", o.target_checkpoint, "use this trained target instead of the config's");
  app.add_option("--resume", o.resume, "continue the run saved in this checkpoint.safetensors (same config and target)");
  app.add_option("--stop-after", o.stop_after, "stop after this many total steps, writing DIR/checkpoint.safetensors")
      ->check(pd::at_least(0));
  app.add_option("--evaluate", o.evaluate,
                 "no training: evaluate this decomposition.safetensors or checkpoint.safetensors (same config up to "
                 "its evaluation fields) into --out (default: DIR/reevaluated, DIR/evaluated_step_N for a checkpoint)");
  app.add_flag("--quiet", o.quiet, "no progress lines");
  CLI11_PARSE(app, argc, argv);
  if (!o.evaluate.empty() && !o.resume.empty()) {
    std::fprintf(stderr, "pd decompose: --evaluate and --resume exclude each other\n");
    return 1;
  }
  try {
    return o.evaluate.empty() ? pd::run_decomposition(o) : pd::evaluate_saved_decomposition(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pd decompose: %s\n", e.what());
    return 1;
  }
}

int cmd_audit(int argc, char** argv) {
  CLI::App app{"float64 finite-difference audit of one SPD, APD or VPD training step of a config"};
  std::string config_path;
  int64_t coords = 12, batch = 32;
  bool trained = false;
  app.add_option("config", config_path, "decomposition config")->required();
  // 0 coordinates would pass having checked nothing.
  app.add_option("--coords", coords, "coordinates checked per tensor (the largest-gradient half, then random)")
      ->check(pd::at_least(1));
  app.add_option("--batch", batch, "batch size of the audited step")->check(pd::at_least(1));
  app.add_flag("--trained-target", trained,
               "use the config's trained target (trains it when no checkpoint); default: a freshly "
               "initialised target of the same architecture, which exercises the same code");
  CLI11_PARSE(app, argc, argv);
  try {
    return decomp::audit_config(config_path, coords, batch, trained, std::cout) ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pd audit: %s\n", e.what());
    return 1;
  }
}

}  // namespace

PD_COMMAND(decompose, "SPD, APD or VPD decomposition of a target model: metrics.json, safetensors, plots", cmd_decompose);
PD_COMMAND(audit, "float64 finite-difference gradient audit of one SPD, APD or VPD training step", cmd_audit);
