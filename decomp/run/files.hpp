// The files of a decomposition run: metrics.json's content and the decomposition as
// safetensors (V, U of every untied layer and every CI-function parameter, named as
// SPD::all_param_names(); metadata: spd_config (the config, target.checkpoint filled in),
// target_fingerprint, format "pd-spd-v1").
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "decomp/evaluate.hpp"
#include "decomp/trainer.hpp"

namespace decomp {

// Everything a finished run reports.
nlohmann::json metrics_json(const Decomposition& spd, const EvalResult& ev, const TrainLog& log,
                            const nlohmann::json& extra);
void save_decomposition(const Decomposition& spd, const std::string& path, const nlohmann::json& config,
                        const std::string& target_fingerprint);
// Loads parameters saved by save_decomposition into spd (names and shapes must match).
void load_decomposition(Decomposition& spd, const std::string& path);

}  // namespace decomp
