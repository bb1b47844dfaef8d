// `pd sweep CONFIG --seeds 0-4 [--set key=v1,v2 ...] [--jobs N] --out DIR`: the grid of configs
// (every combination of the --set values) times the seeds, each run a child `pd decompose`
// process. Layout of DIR:
//   configs/<point>.json   the derived config of each grid point (--set values applied)
//   <point>/seed_<s>/      the run's folder (metrics.json, report.html, ...)
//   logs/<point>_seed_<s>.log  the child's output
//   summary.csv, summary.md   mean, sd, min, max of every metric over the seeds, per point
//   compare.html, compare.csv every run side by side (report_html.hpp)
// A run whose folder has metrics.json is skipped; one with checkpoint.safetensors is resumed
// from it (pd decompose --resume), so an interrupted sweep continues where it stopped.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace pd {

// "0-4" -> 0..4, "0,2,7" -> those, "3" -> 3 (ranges and lists mix: "0-2,5"). Throws ad::Error
// naming --seeds on anything else.
std::vector<int64_t> parse_seeds(const std::string& s);

// "key=v1,v2": the dotted config key and its values, each parsed as JSON when it is JSON
// ("1e-3", "true", "[16,16]"), else taken as a string. Commas inside [] or {} do not split.
// Throws ad::Error quoting the argument when there is no '=', no key or no value.
std::pair<std::string, std::vector<nlohmann::json>> parse_set(const std::string& arg);

// cfg at the dotted path `key` (objects by name, arrays by index: "losses.0.coeff") set to v.
// Every part before the last must exist; throws ad::Error naming `source` and the key.
void set_dotted(nlohmann::json& cfg, const std::string& key, const nlohmann::json& v, const std::string& source);

struct GridPoint {
  std::string name;  // "base" without --set, else "key-value_key-value" (file-safe)
  nlohmann::json config;
};
std::vector<GridPoint> make_grid(const nlohmann::json& base,
                                 const std::vector<std::pair<std::string, std::vector<nlohmann::json>>>& sets,
                                 const std::string& source);

struct SweepOptions {
  std::string config_path, out_dir;
  std::vector<int64_t> seeds;
  std::vector<std::pair<std::string, std::vector<nlohmann::json>>> sets;
  int jobs = 0;                   // 0: one per core
  int64_t steps = -1;             // >= 0: passed to every run (--steps)
  int64_t stop_after = -1;        // >= 0: every run stops there with a checkpoint (resumed next time)
  int64_t checkpoint_every = -1;  // > 0: train.checkpoint_every of the derived configs
  std::string target_checkpoint;  // passed to every run
  std::string pd_program;         // empty: this executable
  bool quiet = false;
};

// Returns the exit code: 0 when every run finished (summary written) or stopped at
// --stop-after, 1 when a run failed.
int run_sweep(const SweepOptions& o);

// summary.csv and summary.md of finished runs: per grid point (run folders <out>/<point>/seed_*)
// and metric, n, mean, sd (n-1; 0 for one run), min, max.
void write_sweep_summary(const std::string& out_dir, const std::vector<GridPoint>& grid,
                         const std::vector<int64_t>& seeds, const std::string& command);

}  // namespace pd
