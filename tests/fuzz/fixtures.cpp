#include "tests/fuzz/fixtures.hpp"

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "autodiff/fileio.hpp"
#include "experiments/cli.hpp"
#include "tests/child_process.hpp"

namespace fuzz {

using nlohmann::json;

int run_pd_in_process(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return pd::command_registry().at(args[0]).fn((int)argv.size(), argv.data());
}

static Fixtures make_fixtures() {
  Fixtures f;
  f.dir = testutil::make_temp_dir("pd_fuzz_");
  f.run_config = f.dir + "/tms.json";
  f.spd_config = f.dir + "/spd.json";
  ad::write_file_atomic(f.run_config, json::parse(R"({
    "model": {"type": "tms", "n_features": 5, "n_hidden": 2, "n_hidden_layers": 0},
    "data": {"type": "sparse_features", "feature_prob": 0.05, "value_range": [0.0, 1.0], "mode": "at_least_zero"},
    "train": {"steps": 20, "batch_size": 64, "lr": 0.005, "schedule": "constant", "weight_decay": 0.01, "seed": 0,
              "log_every": 10}})").dump(1));
  json spd = json::parse(R"({
    "seed": 1, "C": 6, "ci_fn": {"type": "mlp", "hidden": [4]}, "delta": true, "eval_batch": 64,
    "losses": [{"name": "importance_minimality", "coeff": 3e-3, "p": 1}, {"name": "stochastic_recon", "coeff": 1},
               {"name": "faithfulness", "coeff": 1}],
    "train": {"steps": 6, "batch_size": 32, "lr": 1e-3, "schedule": "constant", "log_every": 2,
              "faith_warmup_steps": 2}})");
  spd["target"] = {{"run_config", f.run_config}};
  ad::write_file_atomic(f.spd_config, spd.dump(1));
  auto pd = [](std::vector<std::string> args) {
    if (run_pd_in_process(std::move(args)) != 0) throw std::runtime_error("fuzz fixtures: a pd command failed");
  };
  pd({"train", f.run_config, "--out", f.dir + "/target", "--quiet"});
  pd({"train", f.run_config, "--out", f.dir + "/target_stop", "--stop-after", "10", "--quiet"});
  f.model = f.dir + "/target/model.safetensors";
  f.train_checkpoint = f.dir + "/target_stop/checkpoint.safetensors";
  pd({"decompose", f.spd_config, "--target-checkpoint", f.model, "--out", f.dir + "/spd_run", "--quiet"});
  pd({"decompose", f.spd_config, "--target-checkpoint", f.model, "--out", f.dir + "/spd_stop", "--stop-after", "3",
      "--quiet"});
  f.decomposition = f.dir + "/spd_run/decomposition.safetensors";
  f.spd_checkpoint = f.dir + "/spd_stop/checkpoint.safetensors";
  f.metrics = f.dir + "/spd_run/metrics.json";
  const std::string repo = testutil::sibling_binary("../experiments/configs/");
  f.run_configs = {f.run_config, repo + "tms_5-2.json", repo + "resid_mlp1.json", repo + "ih.json"};
  f.decomp_configs = {f.spd_config, repo + "spd_tms_5-2.json", repo + "apd_tms_5-2.json", repo + "spd_resid_mlp1.json"};
  return f;
}

namespace {
// Removes the folder when the test binary exits (not when a forked child does).
struct RemoveAtExit {
  std::string dir;
  pid_t owner = getpid();
  ~RemoveAtExit() {
    std::error_code ec;
    if (getpid() == owner) std::filesystem::remove_all(dir, ec);
  }
};
}  // namespace

const Fixtures& fixtures() {
  static const Fixtures f = make_fixtures();
  static const RemoveAtExit cleanup{f.dir};
  return f;
}

std::string Tally::report(const std::string& what) const {
  return what + ": " + std::to_string(accepted + rejected + unnamed + crashed + timed_out) + " cases: " +
         std::to_string(accepted) + " accepted, " + std::to_string(rejected) + " rejected naming the file, " +
         std::to_string(unnamed) + " rejected without naming it, " + std::to_string(crashed) + " crashed, " +
         std::to_string(timed_out) + " over the time limit";
}

}  // namespace fuzz
