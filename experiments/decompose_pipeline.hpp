// The run / evaluate pipeline behind `pd decompose`, written once:
//   open    config (+ command-line overrides) -> target (trained first when the config gives
//           no checkpoint) -> decomposition
//   train   from scratch or resumed from a checkpoint, writing checkpoints on the way
//   finish  evaluate -> metrics.json (-> decomposition.safetensors) -> plots -> components.json
//           (analyse_components) -> report.html -> result table
// --evaluate runs open + finish on a saved decomposition.safetensors or an unfinished run's
// checkpoint.safetensors, under the config's (possibly newer) evaluation fields.
// open_run_folder reopens a finished run's folder the same way, for `pd components`.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "decomp/component_stats.hpp"
#include "decomp/evaluate.hpp"
#include "decomp/run/checkpoint.hpp"
#include "decomp/run/target.hpp"

namespace pd {

struct DecomposeOptions {
  std::string config_path;
  std::string out_dir;            // empty: runs/<config name> (or beside --resume / --evaluate)
  std::string target_checkpoint;  // overrides the config's target.checkpoint
  std::string resume;             // checkpoint.safetensors to continue
  std::string evaluate;           // decomposition or checkpoint to evaluate without training
  int64_t seed = -1, steps = -1;  // >= 0: override the config's
  int64_t stop_after = -1;        // >= 0: stop after this many total steps, with a checkpoint
  bool quiet = false;
};

// Both return the process exit code; errors throw ad::Error naming the file or key.
int run_decomposition(const DecomposeOptions& o);
int evaluate_saved_decomposition(const DecomposeOptions& o);

// A config, its target and a decomposition of it. Held by pointer: the decomposition refers
// to lt.target.
struct Run {
  nlohmann::json cfg;
  decomp::DecompConfig sc;
  decomp::LoadedTarget lt;
  std::string fingerprint;  // of the target's weights
  std::unique_ptr<decomp::Decomposition> spd;
  decomp::TrainLog log;
};

// What a saved decomposition.safetensors or checkpoint.safetensors says about itself.
struct SavedDecomposition {
  std::string path;
  bool is_checkpoint = false;
  decomp::SpdCheckpoint ck;           // checkpoint only
  nlohmann::json made_with;           // its config (target.checkpoint filled in when known)
  std::string made_with_fingerprint;  // of its target's weights; "" in files from before it was stored
};
SavedDecomposition read_saved_decomposition(const std::string& path);

// The finished (decomposition.safetensors) or unfinished (checkpoint.safetensors) run in
// folder `dir`, reopened under the config it was made with, its parameters restored: what
// `pd decompose --evaluate` opens, without writing anything (the target must have a
// checkpoint; when the recorded path does not exist, dir/target/model.safetensors is used;
// the target's weights must match the recorded fingerprint either way).
std::unique_ptr<Run> open_run_folder(const std::string& dir, bool quiet);

// The evaluation finish_run reports: decomp::evaluate on the run's own evaluation stream
// (Rng(seed + 1000003)) with the config's dense-k patterns.
decomp::EvalResult evaluate_run(const Run& r);

// What finish_run reports per component (components.json), from `ev` = evaluate_run(r) and
// further fixed-seed streams of the run's seed, so `pd components` and components.json agree:
// ablation effects (decomp::ablation_effects on 1000 examples, 8 sequences for sequence
// targets) and, for sequence targets, top-activating contexts (when ctx.sequences > 0).
struct ComponentAnalysis {
  decomp::EvalResult ev;
  std::vector<std::vector<double>> ablation;
  int64_t ablation_batch = 0;
  bool has_contexts = false;
  decomp::TopContexts contexts;
};
ComponentAnalysis analyse_components(const Run& r, const decomp::ContextOptions& ctx, decomp::EvalResult ev);

}  // namespace pd
