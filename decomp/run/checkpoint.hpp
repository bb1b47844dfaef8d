// Decomposition checkpoints: the one checkpoint format (ad::save_checkpoint, kind
// "decompose") with U, V and CI parameters under SPD::all_param_names(), the optimiser state
// and the loss log, plus what the run was made of: its config, where the target's weights came
// from and their fingerprint, which a resume checks. Everything a stopped `pd decompose` run
// needs to continue with the same bits as an uninterrupted one (the randomness of step t comes
// from (seed, t), so no generator state is stored).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodiff/train_loop.hpp"
#include "decomp/trainer.hpp"
#include "models/model.hpp"

namespace decomp {

inline constexpr const char* kDecomposeCheckpointKind = "decompose";

struct SpdCheckpoint {
  ad::Checkpoint file;             // step, log, wall time, tensors
  nlohmann::json config;           // the decomposition config of the run
  std::string target_checkpoint;   // where the target's weights came from
  std::string target_fingerprint;  // of the target's parameters (target_fingerprint())
};

// FNV-1a 64 over every parameter's name, dtype, shape and bytes, as 16 hex digits.
std::string target_fingerprint(const models::Model& m);

void save_spd_checkpoint(const std::string& path, const Decomposition& spd, const ad::Optimizer& opt, const TrainLog& log,
                         int64_t step, double wall_s, const nlohmann::json& config, const std::string& target_checkpoint,
                         const std::string& fingerprint);

// True when the loaded file is a decomposition checkpoint (not a decomposition).
bool is_spd_checkpoint(const ad::SafeTensors& file);
// Reads and validates the file (format, every metadata field); errors name the file and field.
SpdCheckpoint read_spd_checkpoint(const std::string& path);
// The same for a file already loaded from `path` (no second read).
SpdCheckpoint read_spd_checkpoint(const std::string& path, ad::SafeTensors file);

// Copies the checkpoint's parameters into spd (every name present, shapes equal).
void restore_params(const SpdCheckpoint& ck, Decomposition& spd);
// Loads the optimiser state (groups built as train_decomposition builds them).
void restore_optimizer(const SpdCheckpoint& ck, ad::Optimizer& opt);

}  // namespace decomp
