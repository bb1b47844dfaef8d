// Training of the target models (METHODS section 1) from a JSON run config:
//   {"model": {...make_model config...},
//    "data":  {"type": "sparse_features" | "induction" | "text", ...},
//    "train": {"steps", "batch_size", "lr", "schedule", "weight_decay", "seed", ...}}
// AdamW through the one training loop (autodiff/train_loop.hpp: step t's batch comes from
// Rng(step_seed(seed, t)), so a resumed run sees the same data), progress line on stderr,
// curve CSV, metrics.json, model + checkpoint safetensors -- all files written atomically.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autodiff/optim.hpp"
#include "autodiff/train_loop.hpp"
#include "models/config.hpp"
#include "models/data.hpp"
#include "models/model.hpp"

namespace models {

struct DataConfig {
  std::string type;  // "sparse_features" | "induction" | "text"
  // sparse_features
  SparseFeatureSpec sparse;
  std::string labels = "identity";  // "identity" (TMS: y = x) | "x_plus_relu" (resid MLP)
  double importance_decay = 1.0;    // feature i weighs importance_decay^i in the MSE
  // induction
  int64_t half_len = 16;
  // text
  std::string corpus = "builtin:stories", tokenizer = "char";
  int64_t seq_len = 64;
  double val_fraction = 0.1;
  json to_json() const;
};

// The shared schedule (ad::TrainSchedule, read by read_train_schedule) plus what a target run
// adds. Defaults: constant lr, batch 256, AdamW weight decay 0.01.
struct TrainConfig : ad::TrainSchedule {
  TrainConfig() { weight_decay = 0.01; }
  uint64_t seed = 0;
  int64_t eval_batches = 8;           // fixed held-out batches for the final evaluation
  std::string dtype = "float32";
  json to_json() const;
};

struct RunConfig {
  json model;  // resolved model config (with defaults filled in)
  DataConfig data;
  TrainConfig train;
  std::string source;  // file the config came from (for messages)
  json to_json() const;
};

// Strict parsing: unknown keys / wrong types throw ConfigError naming `source` and the key.
RunConfig parse_run_config(const json& j, const std::string& source);
RunConfig load_run_config(const std::string& path);

struct TrainOptions {
  std::string out_dir;      // empty: write nothing
  std::string resume_from;  // checkpoint.safetensors to resume from
  int64_t stop_after = -1;  // >= 0: stop (and checkpoint) after this many total steps
  bool progress = true;     // progress line on stderr
};

struct TrainResult {
  std::unique_ptr<Model> model;
  json metrics;
  ad::TrainLog log;  // rows: "loss" (mean over the row's steps), "lr", "time_s", "grad_norm_params"
  int64_t steps_done = 0;
  double wall_s = 0, steps_per_s = 0, tokens_per_s = 0;
};

TrainResult train(const RunConfig& cfg, const TrainOptions& opts = {});

// The run's task: draws batches, computes the training loss, evaluates. Holds the text
// dataset (loaded once). Exposed for benchmarks, tests and decompositions that need the
// target task's data or loss.
class Task {
 public:
  virtual ~Task() = default;
  // Loss of one freshly drawn batch (builds the graph); adds the batch's token count (sequence
  // tasks) or sample count (vector tasks) to *items when given.
  virtual ad::Tensor loss(Model& m, int64_t batch_size, ad::Rng& rng, int64_t* items = nullptr) = 0;
  // Metrics on `n_batches` held-out batches drawn from a fixed seed (same for every run).
  virtual json evaluate(Model& m, int64_t batch_size, int64_t n_batches) = 0;
  virtual bool sequence_task() const { return false; }
};
std::unique_ptr<Task> make_task(const RunConfig& cfg);
// Text runs: the dataset the run trains on (corpus + tokenizer + train/val split).
TextDataset make_run_dataset(const DataConfig& d);

// Checkpoints: ad::save_checkpoint of kind "train" with every model parameter, the AdamW
// state and the log; metadata "model_config" and "run_config".
void save_checkpoint(const std::string& path, const Model& m, const ad::Adam& opt, int64_t step,
                     const ad::TrainLog& log, const RunConfig& cfg);
// Restores a checkpoint into a freshly built model + optimiser; refuses one made with another
// model or run config. Returns the first step not taken.
int64_t load_checkpoint(const std::string& path, Model& m, ad::Adam& opt, ad::TrainLog& log, const RunConfig& cfg);

// curve.csv: step,loss,lr,time_s
std::string curve_csv(const ad::TrainLog& log);

}  // namespace models
