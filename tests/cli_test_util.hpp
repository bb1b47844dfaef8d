// What the command-line tests share: running a pd command in process, a fresh temporary
// folder, and the tiny TMS target + SPD configs their runs use.
#pragma once
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodiff/fileio.hpp"
#include "experiments/cli.hpp"

// pd <args...> through the command registry (args[0] is the command).
inline int run_pd(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return pd::command_registry().at(args[0]).fn((int)argv.size(), argv.data());
}

inline std::string make_tmp_dir() {
  char tmpl[] = "/tmp/pd_spd_cliXXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

// A fresh temporary folder removed with everything in it when the test case ends.
struct ScopedTmpDir {
  std::string path = make_tmp_dir();
  ScopedTmpDir() = default;
  ScopedTmpDir(const ScopedTmpDir&) = delete;
  ScopedTmpDir& operator=(const ScopedTmpDir&) = delete;
  ~ScopedTmpDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// dir/tms.json (a TMS 5-2 target trained for 200 steps) and dir/spd.json (30 SPD steps at a
// constant rate, so the first N steps of this run are the same as an N-step run); returns
// the SPD config.
inline nlohmann::json write_tiny_tms_configs(const std::string& dir) {
  using nlohmann::json;
  json target = json::parse(R"({
    "model": {"type": "tms", "n_features": 5, "n_hidden": 2, "n_hidden_layers": 0},
    "data": {"type": "sparse_features", "feature_prob": 0.05, "value_range": [0.0, 1.0], "mode": "at_least_zero"},
    "train": {"steps": 200, "batch_size": 256, "lr": 0.005, "schedule": "constant", "weight_decay": 0.01, "seed": 0, "log_every": 100}
  })");
  ad::write_file_atomic(dir + "/tms.json", target.dump());
  json spd = json::parse(R"({
    "seed": 1, "C": 8, "ci_fn": {"type": "mlp", "hidden": [4]}, "delta": true, "eval_batch": 500,
    "losses": [{"name": "importance_minimality", "coeff": 3e-3, "p": 1}, {"name": "stochastic_recon", "coeff": 1}],
    "train": {"steps": 30, "batch_size": 128, "lr": 1e-3, "schedule": "constant", "log_every": 10}
  })");
  spd["target"] = {{"run_config", dir + "/tms.json"}};
  ad::write_file_atomic(dir + "/spd.json", spd.dump());
  return spd;
}

// The pd program the tests start as a child process (PD_BIN, set by make test; else build/pd).
inline std::string pd_program() {
  const char* e = std::getenv("PD_BIN");
  return e && *e ? e : "build/pd";
}
