// A finished decomposition run as its metrics.json tells it: the one reader behind `pd compare`
// (the markdown table), `pd report --compare` (page + CSV) and `pd sweep` (summary over seeds).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace pd {

struct RunSummary {
  std::string dir;
  nlohmann::json metrics;  // the whole metrics.json
  std::string target, method;
  std::vector<std::string> layers;  // in metrics.json's order
};

// dir/metrics.json, checked to be a pd decompose metrics file; throws ad::Error naming the file
// (missing folder or file, invalid JSON, a missing field).
RunSummary read_run(const std::string& dir);
// The same checks on a metrics object already in memory (`dir`'s metrics.json to be).
RunSummary summarize_run(const std::string& dir, nlohmann::json metrics);

// v with `digits` decimals, "-" when v is not a number.
std::string fixed(const nlohmann::json& v, int digits);
// Per decomposed layer "a / b / c" of one field of metrics.json's "layers" ("-" where a layer
// lacks it; "-" alone when none has it).
std::string per_layer(const nlohmann::json& layers, const char* key);

// The run's numbers by name, in a fixed order: mmcs, ml2r, per layer <layer>.<field> (alive,
// large-norm, CI_L0, identity / dense-k error), eval.<loss term>, steps, wall_time_s. What
// comparison tables and sweep summaries are made of.
std::vector<std::pair<std::string, double>> scalar_metrics(const RunSummary& r);

// A config flattened to dotted paths ("train.lr", "losses.0.coeff") -> the value as JSON text
// (a string as itself).
std::map<std::string, std::string> flat_config(const nlohmann::json& cfg);

}  // namespace pd
