// `pd decompose <config.json> [--out DIR]`: SPD on a target model (training the target first
// when the config gives no checkpoint), then metrics.json, decomposition.safetensors, plots
// and a result table. Long runs can be split: train.checkpoint_every / --stop-after write
// DIR/checkpoint.safetensors, and --resume continues from it with the same bits as an
// uninterrupted run. --evaluate re-evaluates a saved decomposition.safetensors (or an
// unfinished run's checkpoint) under the config's (possibly newer) evaluation fields without
// training.
// `pd audit <config.json>`: one training step of that config in float64, every parameter's
// gradient checked against central finite differences (a sample of coordinates per tensor).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "autodiff/fileio.hpp"
#include "autodiff/gradcheck.hpp"
#include "decomp/spd_eval.hpp"
#include "experiments/cli.hpp"
#include "models/config.hpp"
#include "experiments/spd/spd_audit.hpp"
#include "experiments/spd/spd_checkpoint.hpp"
#include "experiments/spd/spd_report.hpp"
#include "experiments/spd/spd_target.hpp"

namespace {

using nlohmann::json;

// The part of a config that determines training: without target.checkpoint (a resumed run
// may find its target by another path; the weights' fingerprint is what must match) and
// without the evaluation-only fields, which may change between a run's start and its end,
// and without train.checkpoint_every.
json training_part(json c) {
  if (c.contains("target") && c["target"].is_object()) c["target"].erase("checkpoint");
  for (const char* k : {"comment", "ci_threshold", "eval_batch", "dense_k", "dense_k_groups"}) c.erase(k);
  // How often checkpoints are written does not change the run (saving only reads the state).
  if (c.contains("train") && c["train"].is_object()) c["train"].erase("checkpoint_every");
  return c;
}

// Error naming up to five JSON paths at which `made_with` and `cfg` differ in training.
void require_same_training(const json& made_with, const json& cfg, const std::string& file, const std::string& what) {
  const json diff = json::diff(training_part(made_with), training_part(cfg));
  if (diff.empty()) return;
  std::string paths;
  for (size_t i = 0; i < diff.size() && i < 5; ++i) paths += (i ? ", " : "") + diff[i].value("path", std::string("?"));
  ad::fail(file + ": the " + what + " was made with another config (" + std::to_string(diff.size()) +
           " difference(s), at " + paths + "); use the same config, seed and steps");
}

std::string stem(const std::string& path) {
  std::string s = std::filesystem::path(path).stem().string();
  return s.empty() ? "run" : s;
}

int cmd_decompose(int argc, char** argv) {
  CLI::App app{"SPD decomposition of a target model (METHODS section 3)"};
  std::string config_path, out_dir, checkpoint, resume, evaluate;
  int64_t seed = -1, steps = -1, stop_after = -1;
  bool quiet = false;
  app.add_option("config", config_path, "decomposition config (experiments/configs/spd_*.json)")->required();
  app.add_option("--out", out_dir, "output directory (default runs/<config name>)");
  app.add_option("--seed", seed, "override the config's seed");
  app.add_option("--steps", steps, "override train.steps");
  app.add_option("--target-checkpoint", checkpoint, "use this trained target instead of the config's");
  app.add_option("--resume", resume, "continue the run saved in this checkpoint.safetensors (same config and target)");
  app.add_option("--stop-after", stop_after, "stop after this many total steps, writing DIR/checkpoint.safetensors");
  app.add_option("--evaluate", evaluate,
                 "no training: evaluate this decomposition.safetensors or checkpoint.safetensors (same config up to "
                 "its evaluation fields) into --out (default: DIR/reevaluated, DIR/evaluated_step_N for a checkpoint)");
  app.add_flag("--quiet", quiet, "no progress lines");
  CLI11_PARSE(app, argc, argv);
  if (!evaluate.empty() && !resume.empty()) {
    std::fprintf(stderr, "pd decompose: --evaluate and --resume exclude each other\n");
    return 1;
  }
  try {
    auto t_start = std::chrono::steady_clock::now();
    json cfg = models::read_json_file(config_path);
    if (seed >= 0) cfg["seed"] = seed;
    if (steps >= 0) cfg["train"]["steps"] = steps;
    if (!checkpoint.empty()) cfg["target"]["checkpoint"] = checkpoint;
    pd_spd::SpdCheckpoint ck;
    if (!resume.empty()) {
      ck = pd_spd::read_spd_checkpoint(resume);
      if (!cfg["target"].contains("checkpoint")) cfg["target"]["checkpoint"] = ck.target_checkpoint;
      require_same_training(ck.config, cfg, resume, "checkpoint");
      if (out_dir.empty()) out_dir = std::filesystem::path(resume).parent_path().string();
    }
    json made_with;
    std::string made_with_fingerprint;  // of the decomposition's target (files from before it was stored: empty)
    // --evaluate takes a finished run's decomposition.safetensors or an unfinished run's
    // checkpoint.safetensors (a look at a long schedule midway; the run can still be resumed).
    bool evaluate_checkpoint = false;
    pd_spd::SpdCheckpoint eval_ck;
    if (!evaluate.empty()) {
      ad::SafeTensors st = ad::load_safetensors(evaluate);
      auto fmt = st.metadata.find("format");
      evaluate_checkpoint = fmt != st.metadata.end() && fmt->second == pd_spd::kSpdCheckpointFormat;
      if (evaluate_checkpoint) {
        eval_ck = pd_spd::read_spd_checkpoint(evaluate, std::move(st));
        made_with = eval_ck.config;
        made_with["target"]["checkpoint"] = eval_ck.target_checkpoint;
        made_with_fingerprint = eval_ck.target_fingerprint;
      } else {
        auto it = st.metadata.find("spd_config");
        if (it == st.metadata.end())
          ad::fail(evaluate + ": neither a pd decomposition (no spd_config metadata) nor an SPD checkpoint");
        try {
          made_with = json::parse(it->second);
        } catch (const json::parse_error& e) {
          ad::fail(evaluate + ": metadata spd_config is not valid JSON (" + e.what() + ")");
        }
        auto fp = st.metadata.find("target_fingerprint");
        if (fp != st.metadata.end()) made_with_fingerprint = fp->second;
      }
      if (!cfg["target"].contains("checkpoint") && made_with.contains("target") && made_with["target"].contains("checkpoint"))
        cfg["target"]["checkpoint"] = made_with["target"]["checkpoint"];
      require_same_training(made_with, cfg, evaluate, evaluate_checkpoint ? "checkpoint" : "decomposition");
      if (out_dir.empty())
        out_dir = (std::filesystem::path(evaluate).parent_path() /
                   (evaluate_checkpoint ? "evaluated_step_" + std::to_string(eval_ck.step) : std::string("reevaluated")))
                      .string();
    }
    decomp::SPDConfig sc = decomp::parse_spd_config(cfg, config_path);
    if (out_dir.empty()) out_dir = "runs/" + stem(config_path);
    std::filesystem::create_directories(out_dir);
    pd_spd::LoadedTarget lt = pd_spd::load_target(cfg, config_path, out_dir + "/target", ad::DType::f32, quiet);
    const std::string fingerprint = pd_spd::target_fingerprint(*lt.model);
    ad::Rng rng(sc.seed);
    decomp::SPD spd(lt.target, sc, rng);
    decomp::TrainLog log;
    if (!evaluate.empty()) {
      if (!made_with_fingerprint.empty() && made_with_fingerprint != fingerprint)
        ad::fail(evaluate + ": the " + (evaluate_checkpoint ? "checkpoint" : "decomposition") +
                 " was made against other target weights (fingerprint " +
                 made_with_fingerprint + ", " + lt.checkpoint + " has " + fingerprint + ")");
      if (evaluate_checkpoint) {
        pd_spd::restore_params(eval_ck, spd);
        log = eval_ck.log;  // loss curves up to the checkpoint
      } else {
        pd_spd::load_decomposition(spd, evaluate);
      }
      ad::Rng eval_rng(sc.seed + 1000003);
      decomp::EvalResult ev = decomp::evaluate(spd, eval_rng, sc.dense_k, sc.dense_k_groups);
      json extra = {{"config_file", config_path}, {"config", cfg},   {"target", lt.target.name},
                    {"target_checkpoint", lt.checkpoint}, {"seed", sc.seed}, {"evaluated_from", evaluate}};
      if (evaluate_checkpoint) {
        extra["evaluated_at_step"] = eval_ck.step;  // steps taken of train.steps
        extra["wall_time_s_to_checkpoint"] = eval_ck.wall_s;
      }
      json m = pd_spd::metrics_json(spd, ev, log, extra);
      for (const char* k : {"final_train_losses", "spd_train_seconds", "steps_per_s"}) m.erase(k);
      ad::write_file_atomic(out_dir + "/metrics.json", m.dump(2) + "\n");
      pd_spd::write_plots(spd, ev, log, out_dir);
      if (evaluate_checkpoint)
        std::cout << "unfinished run, evaluated at its checkpoint: step " << eval_ck.step << " of " << sc.train.steps << "\n";
      std::cout << pd_spd::result_table(spd, ev, -1) << "outputs in " << out_dir << "/ (metrics.json, ci_<layer>.png)\n";
      return 0;
    }
    decomp::TrainHooks hooks;
    double wall_before = 0;  // wall time of the run's earlier parts
    if (!resume.empty()) {
      if (ck.target_fingerprint != fingerprint)
        ad::fail(resume + ": the checkpoint was made against other target weights (fingerprint " + ck.target_fingerprint +
                 ", " + lt.checkpoint + " has " + fingerprint + ")");
      pd_spd::restore_params(ck, spd);
      rng.set_state(ck.rng);
      log = ck.log;
      wall_before = ck.wall_s;
      hooks.start_step = ck.step;
      hooks.restore_optimizer = [&](ad::Adam& opt) { pd_spd::restore_optimizer(ck, spd, opt); };
      if (!quiet) std::fprintf(stderr, "resuming %s at step %lld\n", resume.c_str(), (long long)ck.step);
    }
    const std::string ckpt_path = out_dir + "/checkpoint.safetensors";
    auto wall_now = [&] {
      return wall_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    };
    hooks.stop_after = stop_after;
    hooks.checkpoint = [&](int64_t next_step, const ad::Adam& opt, const ad::Rng& r, const decomp::TrainLog& l) {
      pd_spd::save_spd_checkpoint(ckpt_path, spd, opt, r, l, next_step, wall_now(), cfg, lt.checkpoint, fingerprint);
    };
    const int64_t total = sc.train.steps;
    const int64_t done = decomp::train_spd(spd, rng, &log, [&](int64_t step, const std::map<std::string, double>& v) {
      if (quiet) return;
      std::fprintf(stderr, "step %6lld/%lld", (long long)step, (long long)total);
      for (auto& kv : v)
        if (kv.first != "lr" && kv.first.rfind("grad_norm", 0) != 0) std::fprintf(stderr, "  %s %.3e", kv.first.c_str(), kv.second);
      std::fprintf(stderr, "\n");
    }, &hooks);
    if (done < total) {
      std::cout << "stopped after step " << done << " of " << total << "; checkpoint " << ckpt_path
                << "\ncontinue with: pd decompose " << config_path << " --resume " << ckpt_path << "\n";
      return 0;
    }
    ad::Rng eval_rng(sc.seed + 1000003);
    decomp::EvalResult ev = decomp::evaluate(spd, eval_rng, sc.dense_k, sc.dense_k_groups);
    const double wall = wall_now();
    json extra = {{"config_file", config_path},
                  {"config", cfg},
                  {"target", lt.target.name},
                  {"target_checkpoint", lt.checkpoint},
                  {"target_train_seconds", lt.train_seconds},
                  {"seed", sc.seed},
                  {"wall_time_s", wall},
                  {"resumed_from_step", resume.empty() ? 0 : ck.step}};
    json m = pd_spd::metrics_json(spd, ev, log, extra);
    ad::write_file_atomic(out_dir + "/metrics.json", m.dump(2) + "\n");
    json saved_cfg = cfg;
    saved_cfg["target"]["checkpoint"] = lt.checkpoint;
    pd_spd::save_decomposition(spd, out_dir + "/decomposition.safetensors", saved_cfg, fingerprint);
    pd_spd::write_plots(spd, ev, log, out_dir);
    std::filesystem::remove(ckpt_path);  // superseded by decomposition.safetensors
    std::cout << pd_spd::result_table(spd, ev, wall) << "outputs in " << out_dir
              << "/ (metrics.json, decomposition.safetensors, loss_curves.png, ci_<layer>.png"
              << (m.contains("mmcs") ? ", tms_directions.png" : "") << ")\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pd decompose: %s\n", e.what());
    return 1;
  }
}

int cmd_audit(int argc, char** argv) {
  CLI::App app{"float64 finite-difference audit of one SPD training step of a config"};
  std::string config_path;
  int64_t coords = 12, batch = 32;
  bool trained = false;
  app.add_option("config", config_path, "decomposition config")->required();
  app.add_option("--coords", coords, "coordinates checked per tensor (random sample)");
  app.add_option("--batch", batch, "batch size of the audited step");
  app.add_flag("--trained-target", trained,
               "use the config's trained target (trains it when no checkpoint); default: a freshly "
               "initialised target of the same architecture, which exercises the same code");
  CLI11_PARSE(app, argc, argv);
  try {
    return pd_spd::audit_config(config_path, coords, batch, trained, std::cout) ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pd audit: %s\n", e.what());
    return 1;
  }
}

}  // namespace

PD_COMMAND(decompose, "SPD decomposition of a target model: metrics.json, safetensors, plots", cmd_decompose);
PD_COMMAND(audit, "float64 finite-difference gradient audit of one SPD training step", cmd_audit);
