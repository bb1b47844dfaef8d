// report.html: the page a person opens to see a run, made only from the run folder's files
// (so `pd report DIR` rebuilds it at any time):
//   pd decompose  metrics.json, components.json, loss_curves.csv, ci_<layer>.png,
//                 ci_group_<name>.png, tms_directions.png
//   pd train      metrics.json, curve.csv, config.json
// and the comparison page of several decomposition runs (pd report --compare, pd sweep).
// Every page is one self-contained file (html.hpp), written with ad::write_file_atomic.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pd {

// dir/report.html of a pd decompose run; returns its path. Throws ad::Error naming the file
// when metrics.json is missing or malformed; a missing plot or components.json becomes a note.
std::string write_decompose_report(const std::string& dir);
// The same from the run's metrics in memory (pd decompose writes metrics.json after the report:
// metrics.json is the mark of a finished run).
std::string write_decompose_report(const std::string& dir, const nlohmann::json& metrics);

// dir/report.html of a pd train run (curves and metrics); returns its path.
std::string write_train_report(const std::string& dir);

// Whichever of the two the folder holds (a decomposition: metrics.json has "layers").
std::string write_report(const std::string& dir);

// out_dir/compare.html and out_dir/compare.csv: the runs side by side (method, seed, every
// scalar metric, the config keys in which they differ highlighted, loss curves overlaid).
// Returns the page's path.
std::string write_compare_report(const std::vector<std::string>& run_dirs, const std::string& out_dir,
                                 const std::string& title = "Runs side by side");

}  // namespace pd
