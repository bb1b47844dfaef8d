// What `pd decompose` shows a person: plots (gnuplot, pngcairo) and the result table printed
// to stdout.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "decomp/run/files.hpp"

namespace pd {

// Plots into dir: loss_curves.png (+ loss_curves.csv), ci_<layer>.png (permuted one-hot CI
// matrix per layer), tms_directions.png (TMS: subcomponent columns against the target's).
// Missing gnuplot prints a warning and writes only the data files.
void write_plots(const decomp::Decomposition& spd, const decomp::EvalResult& ev, const decomp::TrainLog& log,
                 const std::string& dir);

// Human-readable table of the per-layer results and the final losses.
std::string result_table(const decomp::Decomposition& spd, const decomp::EvalResult& ev, double wall_s);

// Layer name usable in a file name ("layers.0.mlp_in" stays, "/" and spaces become "_").
std::string file_safe(const std::string& s);

}  // namespace pd
