// Training of the target models (METHODS section 1) from a JSON run config:
//   {"model": {...make_model config...},
//    "data":  {"type": "sparse_features" | "induction" | "text", ...},
//    "train": {"steps", "batch_size", "lr", "schedule", "weight_decay", "seed", ...}}
// AdamW, lr schedule, deterministic batches (step t's batch comes from an Rng seeded by
// (seed, t), so a resumed run sees the same data), progress line on stderr, curve CSV,
// metrics.json, model + checkpoint safetensors -- all files written atomically.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autodiff/optim.hpp"
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

struct TrainConfig {
  int64_t steps = 1000, batch_size = 256;
  double lr = 1e-3;
  std::string schedule = "constant";  // constant | linear | cosine
  double final_lr_frac = 0.0;         // linear / cosine end at final_lr_frac * lr
  int64_t warmup_steps = 0;
  double weight_decay = 0.01, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double grad_clip = 0;               // > 0: clip the global gradient norm
  uint64_t seed = 0;
  int64_t log_every = 100;            // one curve row per log_every steps
  int64_t eval_batches = 8;           // fixed held-out batches for the final evaluation
  int64_t checkpoint_every = 0;       // > 0: write checkpoint.safetensors every N steps
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

struct CurveRow {
  int64_t step = 0;  // steps completed
  double loss = 0;   // mean training loss over the rows's window
  double lr = 0;
  double time_s = 0;
};

struct TrainOptions {
  std::string out_dir;      // empty: write nothing
  std::string resume_from;  // checkpoint.safetensors to resume from
  int64_t stop_after = -1;  // >= 0: stop (and checkpoint) after this many total steps
  bool progress = true;     // progress line on stderr
};

struct TrainResult {
  std::unique_ptr<Model> model;
  json metrics;
  std::vector<CurveRow> curve;
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

// Checkpoints: model parameters + AdamW moments + step + curve, one safetensors file.
// (window_loss, window_n): the partial curve window at the checkpoint, so a resumed run's
// curve rows equal an uninterrupted run's even when the step is not a multiple of log_every.
void save_checkpoint(const std::string& path, const Model& m, const ad::Adam& opt, int64_t step,
                     const std::vector<CurveRow>& curve, const RunConfig& cfg, double window_loss = 0,
                     int64_t window_n = 0);
// Restores a checkpoint into a freshly built model + optimiser; returns the step.
int64_t load_checkpoint(const std::string& path, Model& m, ad::Adam& opt, std::vector<CurveRow>& curve,
                        double* window_loss = nullptr, int64_t* window_n = nullptr);

std::string curve_csv(const std::vector<CurveRow>& curve);

}  // namespace models
