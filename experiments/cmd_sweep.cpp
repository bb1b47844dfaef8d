// `pd sweep CONFIG --seeds 0-4 [--set key=v1,v2 ...] [--jobs N] --out DIR`: seeds x parameter
// grid of pd decompose runs as child processes, resumable; summary.csv / summary.md / a
// comparison page. The sweep itself: experiments/sweep.hpp.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "experiments/cli.hpp"
#include "experiments/sweep.hpp"

namespace {

int cmd_sweep(int argc, char** argv) {
  CLI::App app{"Seeds x parameter grid of pd decompose runs (resumable), with a summary over seeds"};
  pd::SweepOptions o;
  std::string seeds;
  std::vector<std::string> sets;
  app.add_option("config", o.config_path, "decomposition config (experiments/configs/{spd,apd,vpd}_*.json)")->required();
  app.add_option("--seeds", seeds, "seeds: a range 0-4, a list 0,2,5, or both 0-2,7")->required();
  app.add_option("--set", sets, "key=v1,v2: a config key (dotted for nested keys, e.g. train.lr) and its values; "
                                "repeat for a grid");
  app.add_option("--jobs", o.jobs, "runs at a time (default: one per core); each gets cores/jobs threads")
      ->check(pd::at_least(1));
  app.add_option("--out", o.out_dir, "sweep folder")->required();
  app.add_option("--steps", o.steps, "override train.steps of every run")->check(pd::at_least(0));
  app.add_option("--stop-after", o.stop_after, "stop every run after this many steps with a checkpoint "
                                               "(the next sweep resumes them)")->check(pd::at_least(0));
  app.add_option("--checkpoint-every", o.checkpoint_every,
                 "set train.checkpoint_every in the derived configs, so a killed sweep resumes close to where it was")
      ->check(pd::at_least(1));
  app.add_option("--target-checkpoint", o.target_checkpoint, "trained target for every run");
  app.add_option("--pd", o.pd_program, "the pd program for the runs (default: this one)");
  CLI11_PARSE(app, argc, argv);
  try {
    o.seeds = pd::parse_seeds(seeds);
    for (const std::string& s : sets) o.sets.push_back(pd::parse_set(s));
    return pd::run_sweep(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pd sweep: %s\n", e.what());
    return 1;
  }
}

}  // namespace

PD_COMMAND(sweep, "seeds x parameter grid of decompositions (pd sweep CONFIG --seeds 0-4 --out DIR)", cmd_sweep);
