#include "experiments/decompose_pipeline.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "autodiff/fileio.hpp"
#include "autodiff/json_depth.hpp"
#include "decomp/evaluate.hpp"
#include "decomp/run/checkpoint.hpp"
#include "decomp/run/files.hpp"
#include "decomp/run/target.hpp"
#include "experiments/components.hpp"
#include "experiments/decomp_report.hpp"
#include "experiments/report_html.hpp"
#include "models/config.hpp"

namespace pd {

using nlohmann::json;

namespace {

// The part of a config that determines training: without target.checkpoint (a resumed run
// may find its target by another path; the weights' fingerprint is what must match), without
// the evaluation-only fields, which may change between a run's start and its end, and
// without train.checkpoint_every (saving only reads the state).
json training_part(json c) {
  if (c.contains("target") && c["target"].is_object()) c["target"].erase("checkpoint");
  for (const char* k : {"comment", "ci_threshold", "eval_batch", "dense_k", "dense_k_groups"}) c.erase(k);
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

void require_same_target(const std::string& made_with, const std::string& fingerprint, const std::string& file,
                         const std::string& what, const std::string& target_file) {
  if (made_with.empty() || made_with == fingerprint) return;  // empty: files from before it was stored
  ad::fail(file + ": the " + what + " was made against other target weights (fingerprint " + made_with + ", " +
           target_file + " has " + fingerprint + ")");
}

std::string stem(const std::string& path) {
  std::string s = std::filesystem::path(path).stem().string();
  return s.empty() ? "run" : s;
}

// The evaluation batch's randomness: one stream per run, apart from training's.
uint64_t eval_seed(const decomp::DecompConfig& sc) { return sc.seed + 1000003; }

json read_config(const DecomposeOptions& o) {
  json cfg = models::read_json_file(o.config_path);
  if (o.seed >= 0) cfg["seed"] = o.seed;
  if (o.steps >= 0) cfg["train"]["steps"] = o.steps;
  if (!o.target_checkpoint.empty()) cfg["target"]["checkpoint"] = o.target_checkpoint;
  return cfg;
}

// A config, its target and a freshly initialised decomposition of it. out_dir "": nothing is
// prepared or written (the config must then name a target checkpoint).
std::unique_ptr<Run> open_run(json cfg, const std::string& config_path, const std::string& out_dir, bool quiet) {
  auto r = std::make_unique<Run>();
  r->cfg = std::move(cfg);
  r->sc = decomp::parse_decomp_config(r->cfg, config_path);
  // Layer names in dense_k / dense_k_groups, checked on the untrained architecture: evaluation
  // needs them only at the end, after the target and the decomposition have trained.
  decomp::check_dense_k(decomp::untrained_target(r->cfg, config_path).target, r->sc.dense_k, r->sc.dense_k_groups,
                        config_path);
  if (!out_dir.empty()) ad::prepare_output_dir(out_dir);  // before the target and the decomposition train
  r->lt = decomp::load_target(r->cfg, config_path, out_dir.empty() ? "" : out_dir + "/target", ad::DType::f32, quiet);
  r->fingerprint = decomp::target_fingerprint(*r->lt.model);
  ad::Rng init_rng(r->sc.seed);  // initial components and CI functions
  r->spd = decomp::make_decomposition(r->lt.target, r->sc, init_rng);
  return r;
}

// Restores the saved parameters into a run opened under cfg; the target must be the one the
// file was made against.
std::unique_ptr<Run> open_saved(const SavedDecomposition& s, const json& cfg, const std::string& config_path,
                                const std::string& out_dir, bool quiet) {
  std::unique_ptr<Run> r = open_run(cfg, config_path, out_dir, quiet);
  const std::string what = s.is_checkpoint ? "checkpoint" : "decomposition";
  require_same_target(s.made_with_fingerprint, r->fingerprint, s.path, what, r->lt.checkpoint);
  if (s.is_checkpoint) {
    decomp::restore_params(s.ck, *r->spd);
    r->log = s.ck.file.log;  // loss curves up to the checkpoint
  } else {
    decomp::load_decomposition(*r->spd, s.path);
  }
  return r;
}

// evaluate -> metrics.json (-> decomposition.safetensors) -> plots -> result table.
// The per-component analysis comes after the decomposition is saved: a long run's result
// must not depend on it.
void finish_run(const Run& r, json extra, const std::string& out_dir, double wall_s, bool save, bool evaluated) {
  const decomp::EvalResult ev = evaluate_run(r);
  extra["config"] = r.cfg;
  extra["target"] = r.lt.target.name;
  extra["target_checkpoint"] = r.lt.checkpoint;
  extra["seed"] = r.sc.seed;
  json m = decomp::metrics_json(*r.spd, ev, r.log, extra);
  if (evaluated)
    for (const char* k : {"final_train_losses", "train_seconds", "steps_per_s"}) m.erase(k);
  // metrics.json last: it marks a finished run (pd sweep skips a folder that has it), so a run
  // killed on the way here is resumed from its checkpoint, not taken as done.
  if (save) {
    json saved_cfg = r.cfg;
    saved_cfg["target"]["checkpoint"] = r.lt.checkpoint;
    decomp::save_decomposition(*r.spd, out_dir + "/decomposition.safetensors", saved_cfg, r.fingerprint);
  }
  write_plots(*r.spd, ev, r.log, out_dir);
  write_components_json(*r.spd, analyse_components(r, decomp::ContextOptions{}, ev), out_dir);
  write_decompose_report(out_dir, m);
  ad::write_file_atomic(out_dir + "/metrics.json", m.dump(2) + "\n");
  std::cout << result_table(*r.spd, ev, wall_s) << "outputs in " << out_dir << "/ (metrics.json, "
            << (save ? "decomposition.safetensors, loss_curves.png, " : "") << "ci_<layer>.png"
            << (save && m.contains("mmcs") ? ", tms_directions.png" : "") << ", components.json, report.html)\n";
}

void print_progress(int64_t step, int64_t total, const std::map<std::string, double>& v) {
  std::fprintf(stderr, "step %6lld/%lld", (long long)step, (long long)total);
  for (auto& kv : v)
    if (kv.first != "lr" && kv.first != "time_s" && kv.first.rfind("grad_norm", 0) != 0) std::fprintf(stderr, "  %s %.3e", kv.first.c_str(), kv.second);
  std::fprintf(stderr, "\n");
}

}  // namespace

int run_decomposition(const DecomposeOptions& o) {
  const auto t_start = std::chrono::steady_clock::now();
  json cfg = read_config(o);
  std::string out_dir = o.out_dir;
  decomp::SpdCheckpoint ck;
  if (!o.resume.empty()) {
    ck = decomp::read_spd_checkpoint(o.resume);
    if (!cfg["target"].contains("checkpoint")) cfg["target"]["checkpoint"] = ck.target_checkpoint;
    require_same_training(ck.config, cfg, o.resume, "checkpoint");
    if (out_dir.empty()) out_dir = std::filesystem::path(o.resume).parent_path().string();
  }
  if (out_dir.empty()) out_dir = "runs/" + stem(o.config_path);
  std::unique_ptr<Run> r = open_run(cfg, o.config_path, out_dir, o.quiet);
  decomp::Decomposition& spd = *r->spd;
  decomp::TrainHooks hooks;
  double wall_before = 0;  // wall time of the run's earlier parts
  if (!o.resume.empty()) {
    require_same_target(ck.target_fingerprint, r->fingerprint, o.resume, "checkpoint", r->lt.checkpoint);
    decomp::restore_params(ck, spd);
    r->log = ck.file.log;
    wall_before = ck.file.wall_s;
    hooks.start_step = ck.file.step;
    hooks.restore_optimizer = [&](ad::Optimizer& opt) { decomp::restore_optimizer(ck, opt); };
    if (!o.quiet) std::fprintf(stderr, "resuming %s at step %lld\n", o.resume.c_str(), (long long)ck.file.step);
  }
  const std::string ckpt_path = out_dir + "/checkpoint.safetensors";
  auto wall_now = [&] {
    return wall_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  };
  hooks.stop_after = o.stop_after;
  hooks.checkpoint = [&](int64_t next_step, const ad::Optimizer& opt, const decomp::TrainLog& l) {
    decomp::save_spd_checkpoint(ckpt_path, spd, opt, l, next_step, wall_now(), r->cfg, r->lt.checkpoint, r->fingerprint);
  };
  const int64_t total = r->sc.train.steps;
  const int64_t done = decomp::train_decomposition(spd, &r->log, [&](int64_t step, const std::map<std::string, double>& v) {
    if (!o.quiet) print_progress(step, total, v);
  }, &hooks);
  if (done < total) {
    std::cout << "stopped after step " << done << " of " << total << "; checkpoint " << ckpt_path
              << "\ncontinue with: pd decompose " << o.config_path << " --resume " << ckpt_path << "\n";
    return 0;
  }
  const double wall = wall_now();
  json extra = {{"config_file", o.config_path},
                {"target_train_seconds", r->lt.train_seconds},
                {"wall_time_s", wall},
                {"resumed_from_step", o.resume.empty() ? 0 : ck.file.step}};
  finish_run(*r, extra, out_dir, wall, true, false);
  std::filesystem::remove(ckpt_path);  // superseded by decomposition.safetensors
  return 0;
}

SavedDecomposition read_saved_decomposition(const std::string& path) {
  SavedDecomposition s;
  s.path = path;
  ad::SafeTensors file = ad::load_safetensors(path);
  s.is_checkpoint = decomp::is_spd_checkpoint(file);
  if (s.is_checkpoint) {
    s.ck = decomp::read_spd_checkpoint(path, std::move(file));
    s.made_with = s.ck.config;
    s.made_with["target"]["checkpoint"] = s.ck.target_checkpoint;
    s.made_with_fingerprint = s.ck.target_fingerprint;
    return s;
  }
  auto it = file.metadata.find("spd_config");
  if (it == file.metadata.end())
    ad::fail(path + ": neither a pd decomposition (no spd_config metadata) nor a decomposition checkpoint");
  s.made_with = ad::parse_json(it->second, path + ": metadata spd_config");
  if (!s.made_with.is_object() || (s.made_with.contains("target") && !s.made_with["target"].is_object()))
    ad::fail(path + ": metadata spd_config is not a decomposition config (an object)");
  auto fp = file.metadata.find("target_fingerprint");
  if (fp != file.metadata.end()) s.made_with_fingerprint = fp->second;
  return s;
}

int evaluate_saved_decomposition(const DecomposeOptions& o) {
  json cfg = read_config(o);
  // A finished run's decomposition.safetensors or an unfinished run's checkpoint.safetensors
  // (a look at a long schedule midway; the run can still be resumed).
  const SavedDecomposition s = read_saved_decomposition(o.evaluate);
  const json& made_with = s.made_with;
  if (!cfg["target"].contains("checkpoint") && made_with.contains("target") && made_with["target"].contains("checkpoint"))
    cfg["target"]["checkpoint"] = made_with["target"]["checkpoint"];
  require_same_training(made_with, cfg, o.evaluate, s.is_checkpoint ? "checkpoint" : "decomposition");
  std::string out_dir = o.out_dir;
  if (out_dir.empty())
    out_dir = (std::filesystem::path(o.evaluate).parent_path() /
               (s.is_checkpoint ? "evaluated_step_" + std::to_string(s.ck.file.step) : std::string("reevaluated")))
                  .string();
  std::unique_ptr<Run> r = open_saved(s, cfg, o.config_path, out_dir, o.quiet);
  json extra = {{"config_file", o.config_path}, {"evaluated_from", o.evaluate}};
  if (s.is_checkpoint) {
    extra["evaluated_at_step"] = s.ck.file.step;  // steps taken of train.steps
    extra["wall_time_s_to_checkpoint"] = s.ck.file.wall_s;
    std::cout << "unfinished run, evaluated at its checkpoint: step " << s.ck.file.step << " of " << r->sc.train.steps << "\n";
  }
  finish_run(*r, extra, out_dir, -1, false, true);
  return 0;
}

std::unique_ptr<Run> open_run_folder(const std::string& dir, bool quiet) {
  if (!std::filesystem::is_directory(dir)) ad::fail(dir + ": no such run folder");
  std::string file = dir + "/decomposition.safetensors";
  if (!std::filesystem::exists(file)) file = dir + "/checkpoint.safetensors";
  if (!std::filesystem::exists(file))
    ad::fail(dir + ": no decomposition.safetensors or checkpoint.safetensors (not a pd decompose run folder)");
  const SavedDecomposition s = read_saved_decomposition(file);
  json cfg = s.made_with;
  if (!cfg.contains("target") || !cfg["target"].is_object() || !cfg["target"].contains("checkpoint") ||
      !cfg["target"]["checkpoint"].is_string() || cfg["target"]["checkpoint"].get<std::string>().empty())
    ad::fail(file + ": the run records no target checkpoint (its target was not saved)");
  const std::string own = dir + "/target/model.safetensors";
  if (!std::filesystem::exists(cfg["target"]["checkpoint"].get<std::string>()) && std::filesystem::exists(own))
    cfg["target"]["checkpoint"] = own;  // a moved folder or another working directory
  // Relative paths in the config resolve against the working directory, then the config
  // file's folder: the config the run was started with, as metrics.json records it.
  std::string config_path = file;
  const std::string metrics = dir + "/metrics.json";
  if (std::filesystem::exists(metrics)) {
    const json m = models::read_json_file(metrics);
    if (m.is_object() && m.contains("config_file") && m["config_file"].is_string()) config_path = m["config_file"];
  }
  return open_saved(s, cfg, config_path, "", quiet);
}

decomp::EvalResult evaluate_run(const Run& r) {
  ad::Rng eval_rng(eval_seed(r.sc));
  decomp::EvalResult ev = decomp::evaluate(*r.spd, eval_rng, r.sc.dense_k, r.sc.dense_k_groups);
  ev.failure_modes = decomp::detect_failure_modes(*r.spd, ev, r.log);
  return ev;
}

ComponentAnalysis analyse_components(const Run& r, const decomp::ContextOptions& ctx, decomp::EvalResult ev) {
  ComponentAnalysis a;
  a.ev = std::move(ev);
  // Ablation effects on a batch of their own (the evaluation's numbers stay as they were).
  ad::Rng ablation_rng(eval_seed(r.sc) + 1);
  a.ablation_batch = r.lt.target.n_features > 0 ? 1000 : 8;
  a.ablation = decomp::ablation_effects(*r.spd, a.ev.layers, ablation_rng, a.ablation_batch);
  if (r.lt.target.n_features == 0 && ctx.sequences > 0) {
    a.has_contexts = true;
    a.contexts = decomp::top_contexts(*r.spd, ctx, eval_seed(r.sc) + 2);
  }
  return a;
}

}  // namespace pd
