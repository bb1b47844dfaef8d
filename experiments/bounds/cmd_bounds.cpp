// build/pd bounds [--quick] [--out DIR] [--seed N] [--only GROUP] [--construction NAME]
//   Runs every superposition-bound check (interference, circuits in superposition, capacity,
//   U-AND, TMS sparsity sweep), prints the table and writes DIR/bounds.{json,csv} + PNG plots.
// build/pd bounds rotation --D 2000 --T 400 --S 6 --L 4 --z 1 [--construction NAME] [--json] ...
//   Builds one rotation-circuit construction and prints per-layer measured vs predicted errors.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "autodiff/fileio.hpp"
#include "experiments/bounds/circuits.hpp"
#include "experiments/bounds/interference.hpp"
#include "experiments/bounds/report.hpp"
#include "experiments/bounds/tms_sweep.hpp"
#include "experiments/bounds/uand.hpp"
#include "experiments/cli.hpp"

namespace {

// --construction sets alpha, b and rotations to that construction's defaults; an explicit
// --alpha, --b or --rotations then overrides them.
int cmd_rotation(int argc, char** argv) {
  pd::bounds::CircuitConfig cfg;
  std::string construction = "published", rotations, packing = "balanced";
  std::optional<double> alpha, beta;
  bool json = false;
  CLI::App app{"one rotation-circuit construction: per-layer measured vs predicted MSE", "bounds rotation"};
  app.add_option("--construction", construction, "published (METHODS.md section 6) or fixed-embedding (contrast)")
      ->check(CLI::IsMember({"published", "fixed-embedding"}))
      ->capture_default_str();
  app.add_option("--D", cfg.D, "large-network width (multiple of 4)")->capture_default_str();
  app.add_option("--T", cfg.T, "number of circuits")->capture_default_str();
  app.add_option("--S", cfg.S, "copies per small neuron")->capture_default_str();
  app.add_option("--L", cfg.L, "layers")->capture_default_str();
  app.add_option("--z", cfg.z, "active circuits per forward pass")->capture_default_str();
  app.add_option("--alpha", alpha, "offset: the pair stores x + alpha on (1,1) (published 1, fixed-embedding 2)");
  app.add_option("--b,--beta", beta, "bias -b of the pair, lifted by (alpha + b) on (published 1, fixed-embedding 0)");
  app.add_option("--rotations", rotations, "per-circuit (one R_t for every layer) or per-layer (a new angle per layer)")
      ->check(CLI::IsMember({"per-circuit", "per-layer"}));
  app.add_option("--packing", packing, "first embedding: balanced (least-used positions) or random (first fit)")
      ->check(CLI::IsMember({"balanced", "random"}))
      ->capture_default_str();
  app.add_option("--trials", cfg.trials, "forward passes (random active sets)")->capture_default_str();
  app.add_option("--seed", cfg.seed, "seed")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object (parameters and per-layer figures) instead of the table");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  cfg = pd::bounds::with_construction_defaults(cfg, pd::bounds::parse_construction(construction));
  if (alpha) cfg.alpha = *alpha;
  if (beta) cfg.beta = *beta;
  if (!rotations.empty()) cfg.rotations = pd::bounds::parse_rotations(rotations);
  cfg.packing = pd::bounds::parse_packing(packing);
  const auto r = pd::bounds::run_rotation(cfg);
  std::fputs((json ? pd::bounds::rotation_json(r) : pd::bounds::format_rotation(r)).c_str(), stdout);
  return 0;
}

int cmd_bounds(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "rotation") == 0) return cmd_rotation(argc - 1, argv + 1);
  bool quick = false;
  std::string out = "runs/bounds";
  std::uint64_t seed = 1;
  std::string only, construction = "published";
  CLI::App app{"superposition-bound checks: predicted vs measured (subcommand: rotation)", "bounds"};
  app.add_flag("--quick", quick, "small sizes (< 5 minutes on 2 cores)");
  app.add_option("--out", out, "output directory")->capture_default_str();
  app.add_option("--seed", seed, "seed")->capture_default_str();
  app.add_option("--only", only, "run one group: interference, circuits, uand, tms")
      ->check(CLI::IsMember({"interference", "circuits", "uand", "tms"}));
  app.add_option("--construction", construction, "circuits construction: published, or fixed-embedding (contrast)")
      ->check(CLI::IsMember({"published", "fixed-embedding"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::filesystem::create_directories(out);
  std::vector<pd::bounds::CheckRow> rows;
  auto timed = [&](const char* name, auto&& fn) {
    if (!only.empty() && only != name) return;
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "[bounds] %s done in %.1f s\n", name, s);
  };
  timed("interference", [&] { pd::bounds::run_interference(quick, seed, out, rows); });
  timed("circuits", [&] { pd::bounds::run_circuits(quick, seed, pd::bounds::parse_construction(construction), out, rows); });
  timed("uand", [&] { pd::bounds::run_uand(quick, seed, out, rows); });
  timed("tms", [&] { pd::bounds::run_tms(quick, seed, out, rows); });
  pd::bounds::write_table_json(out + "/bounds.json", rows);
  pd::bounds::write_table_csv(out + "/bounds.csv", rows);
  ad::write_file_atomic(out + "/bounds.md", pd::bounds::format_table_markdown(rows));
  std::fputs(pd::bounds::format_table(rows).c_str(), stdout);
  int held = 0;
  for (const auto& r : rows) held += r.held();
  std::printf("\n%d of %zu predictions held; table in %s/bounds.{json,csv,md}, plots in %s/*.png\n", held, rows.size(),
              out.c_str(), out.c_str());
  return 0;
}

}  // namespace

PD_COMMAND(bounds, "superposition-bound checks: theory vs measurement (bounds rotation: one construction)", cmd_bounds);
