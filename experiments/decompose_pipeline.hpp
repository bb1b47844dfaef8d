// The run / evaluate pipeline behind `pd decompose`, written once:
//   open    config (+ command-line overrides) -> target (trained first when the config gives
//           no checkpoint) -> decomposition
//   train   from scratch or resumed from a checkpoint, writing checkpoints on the way
//   finish  evaluate -> metrics.json (-> decomposition.safetensors) -> plots -> result table
// --evaluate runs open + finish on a saved decomposition.safetensors or an unfinished run's
// checkpoint.safetensors, under the config's (possibly newer) evaluation fields.
#pragma once
#include <cstdint>
#include <string>

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

}  // namespace pd
