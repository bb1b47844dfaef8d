// The valid files the fuzz tests mutate, made once per test run in a temporary folder by the
// real commands (in process): a tiny TMS 5-2 target (config, model, mid-run checkpoint), a
// tiny SPD run on it (config, decomposition, mid-run checkpoint, metrics.json).
#pragma once
#include <string>
#include <vector>

namespace fuzz {

struct Fixtures {
  std::string dir;                        // everything below lives here
  std::string run_config, spd_config;     // tiny TMS 5-2 run config, SPD config on it
  std::string model, train_checkpoint;    // pd train outputs (full run; stopped at step 10)
  std::string decomposition, spd_checkpoint, metrics;  // pd decompose outputs (full; stopped at 3)
  // Config files to mutate: the two above and the repository's (run and decomposition configs).
  std::vector<std::string> run_configs, decomp_configs;
  std::vector<std::string> safetensors() const { return {model, train_checkpoint, decomposition, spd_checkpoint}; }
};

const Fixtures& fixtures();

// Runs a pd subcommand in process (argv[0] is the subcommand).
int run_pd_in_process(std::vector<std::string> args);

// The fuzz cases of one kind, tallied for the report line each test prints.
struct Tally {
  int64_t accepted = 0, rejected = 0, unnamed = 0, crashed = 0, timed_out = 0;
  std::string report(const std::string& what) const;
};

}  // namespace fuzz
