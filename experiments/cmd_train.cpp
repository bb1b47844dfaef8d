// pd train <config.json> [--out DIR] [--resume CHECKPOINT] [--stop-after N] [--quiet]
// Trains a target model (models/train.hpp) and writes into DIR (default runs/<config name>):
//   config.json          the resolved run config (every default filled in)
//   model_config.json    the model's config (make_model rebuilds the architecture from it)
//   model.safetensors    the weights, with the model config in the metadata
//   metrics.json         final losses / task metrics, wall time, steps/s (tokens/s)
//   curve.csv            step,loss,lr,time_s
//   report.html          curves and metrics as one self-contained page (pd report DIR rebuilds it)
//   checkpoint.safetensors  (with --stop-after or train.checkpoint_every) weights + AdamW state
#include <CLI/CLI.hpp>
#include <cstdio>

#include "experiments/cli.hpp"
#include "experiments/report_html.hpp"
#include "models/train.hpp"

static std::string stem_of(const std::string& path) {
  size_t s = path.find_last_of('/');
  std::string f = s == std::string::npos ? path : path.substr(s + 1);
  size_t d = f.rfind(".json");
  return d == std::string::npos ? f : f.substr(0, d);
}

static int cmd_train(int argc, char** argv) {
  CLI::App app{"Train a target model (TMS, residual MLP, induction transformer, tiny LM) from a JSON config"};
  std::string config, out, resume;
  int64_t stop_after = -1;
  bool quiet = false;
  app.add_option("config", config, "run config, e.g. experiments/configs/tms_5-2.json")->required();
  app.add_option("--out", out, "output directory (default runs/<config name>)");
  app.add_option("--resume", resume, "resume from a checkpoint.safetensors written by an earlier run");
  app.add_option("--stop-after", stop_after, "stop after this many total steps and write a checkpoint")
      ->check(pd::at_least(0));
  app.add_flag("--quiet", quiet, "no progress line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  models::RunConfig cfg = models::load_run_config(config);
  if (out.empty()) out = "runs/" + stem_of(config);
  models::TrainOptions opts;
  opts.out_dir = out;
  opts.resume_from = resume;
  opts.stop_after = stop_after;
  opts.progress = !quiet;
  std::fprintf(stderr, "train: %s (%s) -> %s\n", config.c_str(), cfg.model.at("type").get<std::string>().c_str(), out.c_str());
  models::TrainResult r = models::train(cfg, opts);
  std::printf("%s\n", r.metrics.dump().c_str());
  if (r.steps_done >= r.metrics.value("steps_total", int64_t(0)))  // finished: metrics.json written
    std::fprintf(stderr, "report: %s\n", pd::write_train_report(out).c_str());
  return 0;
}

PD_COMMAND(train, "train a target model from a JSON config (pd train CONFIG [--out DIR])", cmd_train);
