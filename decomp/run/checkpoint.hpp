// SPD training checkpoints: everything a stopped `pd decompose` run needs to continue with
// the same bits as an uninterrupted one -- U, V and CI parameters, Adam moments and step
// counts, the training rng, the loss log, the wall time so far -- and what the run was made
// of (its config, a fingerprint of the target's weights), which a resume checks.
//
// File: safetensors, metadata "format" = "pd-spd-checkpoint-v1"; tensors "param/<name>",
// "adam.exp_avg/<name>", "adam.exp_avg_sq/<name>" for every trained tensor (names as in
// decomposition.safetensors). Written to a temporary file and renamed.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodiff/safetensors.hpp"
#include "decomp/trainer.hpp"
#include "models/model.hpp"

namespace decomp {

inline constexpr const char* kSpdCheckpointFormat = "pd-spd-checkpoint-v1";  // metadata "format"

struct SpdCheckpoint {
  std::string path;
  int64_t step = 0;                // first step not yet taken
  nlohmann::json config;           // the decomposition config of the run
  std::string target_checkpoint;   // where the target's weights came from
  std::string target_fingerprint;  // of the target's parameters (target_fingerprint())
  double wall_s = 0;               // pd decompose wall time up to the checkpoint
  std::vector<int64_t> param_steps;
  ad::Rng::State rng{};
  TrainLog log;
  ad::SafeTensors file;
};

// FNV-1a 64 over every parameter's name, dtype, shape and bytes, as 16 hex digits.
std::string target_fingerprint(const models::Model& m);

void save_spd_checkpoint(const std::string& path, const SPD& spd, const ad::Adam& opt, const ad::Rng& rng,
                         const TrainLog& log, int64_t step, double wall_s, const nlohmann::json& config,
                         const std::string& target_checkpoint, const std::string& fingerprint);

// Reads and validates the file (format, every metadata field); errors name the file and field.
SpdCheckpoint read_spd_checkpoint(const std::string& path);
// The same for a file already loaded from `path` (no second read).
SpdCheckpoint read_spd_checkpoint(const std::string& path, ad::SafeTensors file);

// Copies the checkpoint's parameters into spd (every name present, shapes equal).
void restore_params(const SpdCheckpoint& ck, SPD& spd);
// Loads the Adam moments and step counts (slots follow SPD::all_params()).
void restore_optimizer(const SpdCheckpoint& ck, const SPD& spd, ad::Adam& opt);

}  // namespace decomp
