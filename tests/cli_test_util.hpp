// What the command-line tests share: running a pd command in process, capturing its output, a
// fresh temporary folder, and the tiny TMS and tiny LM runs they use.
#pragma once
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
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

// What `fn` writes to file descriptor `fd` (1: stdout, 2: stderr; child processes' output
// included): the descriptor points at a temporary file while fn runs.
inline std::string capture_output(int fd, const std::function<void()>& fn) {
  char tmpl[] = "/tmp/pd_capture_XXXXXX";
  const int file = mkstemp(tmpl);
  REQUIRE(file >= 0);
  std::cout.flush();
  std::fflush(nullptr);
  const int saved = dup(fd);
  dup2(file, fd);
  fn();
  std::cout.flush();
  std::fflush(nullptr);
  dup2(saved, fd);
  close(saved);
  close(file);
  const std::string text = ad::read_file(tmpl);
  unlink(tmpl);
  return text;
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

// A one-layer d_model 16 tiny LM on `corpus` ("builtin:stories:40" or a file; 30 steps) and
// 10 SPD steps on two of its layers (C 12), by pd decompose into dir/name (configs
// dir/name_lm.json, dir/name_spd.json). Returns the run folder.
inline std::string tiny_lm_run(const std::string& dir, const std::string& corpus, const std::string& name) {
  using nlohmann::json;
  json lm = json::parse(R"({
    "model": {"type": "tiny_lm", "d_model": 16, "n_heads": 2, "n_layers": 1, "d_mlp": 32, "max_len": 32},
    "data": {"type": "text", "tokenizer": "char", "seq_len": 32, "val_fraction": 0.1},
    "train": {"steps": 30, "batch_size": 16, "lr": 0.01, "schedule": "constant", "seed": 0, "log_every": 10, "eval_batches": 1}
  })");
  lm["data"]["corpus"] = corpus;
  ad::write_file_atomic(dir + "/" + name + "_lm.json", lm.dump());
  json spd = json::parse(R"({
    "target": {"layers": ["blocks.0.attn.q_proj", "blocks.0.mlp.c_fc"]},
    "seed": 0, "C": 12, "ci_fn": {"type": "vector_mlp", "hidden": [8]}, "delta": true, "eval_batch": 8,
    "losses": [{"name": "faithfulness", "coeff": 100}, {"name": "importance_minimality", "coeff": 0.01, "p": 1},
               {"name": "stochastic_recon", "coeff": 1}],
    "train": {"steps": 10, "batch_size": 4, "lr": 0.001, "schedule": "constant", "log_every": 5}
  })");
  spd["target"]["run_config"] = dir + "/" + name + "_lm.json";
  ad::write_file_atomic(dir + "/" + name + "_spd.json", spd.dump());
  const std::string run = dir + "/" + name;
  REQUIRE(run_pd({"decompose", dir + "/" + name + "_spd.json", "--out", run, "--quiet"}) == 0);
  return run;
}

// The pd program the tests start as a child process (PD_BIN, set by make test; else build/pd).
inline std::string pd_program() {
  const char* e = std::getenv("PD_BIN");
  return e && *e ? e : "build/pd";
}
