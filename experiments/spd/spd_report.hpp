// Outputs of `pd decompose`: metrics.json, the decomposition as safetensors, plots (gnuplot,
// pngcairo) and the result table printed to stdout.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "decomp/spd_eval.hpp"

namespace pd_spd {

// Everything a finished run reports.
nlohmann::json metrics_json(const decomp::SPD& spd, const decomp::EvalResult& ev, const decomp::TrainLog& log,
                            const nlohmann::json& extra);
// V, U of every untied layer and every CI-function parameter, named as all_param_names();
// metadata: the config.
// metadata: spd_config (the config, target.checkpoint filled in), target_fingerprint, format
void save_decomposition(const decomp::SPD& spd, const std::string& path, const nlohmann::json& config,
                        const std::string& target_fingerprint);
// Loads parameters saved by save_decomposition into spd (names and shapes must match).
void load_decomposition(decomp::SPD& spd, const std::string& path);

// Plots into dir: loss_curves.png (+ loss_curves.csv), ci_<layer>.png (permuted one-hot CI
// matrix per layer), tms_directions.png (TMS: subcomponent columns against the target's).
// Missing gnuplot prints a warning and writes only the data files.
void write_plots(const decomp::SPD& spd, const decomp::EvalResult& ev, const decomp::TrainLog& log,
                 const std::string& dir);

// Human-readable table of the per-layer results and the final losses.
std::string result_table(const decomp::SPD& spd, const decomp::EvalResult& ev, double wall_s);

// Layer name usable in a file name ("layers.0.mlp_in" stays, "/" and spaces become "_").
std::string file_safe(const std::string& s);

}  // namespace pd_spd
