// `pd components RUN_DIR`: what each component of a finished decomposition does. Reopens the
// run folder as `pd decompose --evaluate` does (open_run_folder), recomputes the numbers of
// its components.json with the same seeds (analyse_components), prints per layer the alive
// components with CI frequency, mean CI, norm, ablation effect and, for sequence targets,
// their top-activating contexts (toys: the one-hot features they serve), and with --probe
// the ground-truth probe of a story-corpus language model (experiments/story_probe.hpp).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iostream>

#include "autodiff/fileio.hpp"
#include "experiments/cli.hpp"
#include "experiments/components.hpp"
#include "experiments/story_probe.hpp"

namespace {

using nlohmann::json;

int cmd_components(int argc, char** argv) {
  CLI::App app{"per-component table of a decomposition run: CI frequency, norm, ablation effect, top contexts"};
  std::string dir, json_out, sort = "freq";
  pd::ComponentTableOptions t;
  decomp::ContextOptions ctx;
  pd::ProbeOptions probe_opt;
  bool probe = false;
  int64_t contexts = t.contexts;
  app.add_option("run_dir", dir, "a pd decompose output folder")->required();
  app.add_option("--top", t.top, "components shown per layer (0: every alive one)")->check(pd::at_least(0));
  app.add_option("--contexts", contexts, "top-activating contexts per component (sequence targets; 0: none)")
      ->check(pd::at_least(0));
  app.add_option("--sequences", ctx.sequences, "evaluation sequences searched for the contexts")->check(pd::at_least(1));
  app.add_option("--layer", t.layer, "show only this decomposed layer");
  app.add_option("--sort", sort, "order of the components: freq (CI frequency) or ablation (ablation effect)")
      ->check(CLI::IsMember({"freq", "ablation"}));
  app.add_option("--json", json_out, "also write everything (all components, the probe) to this JSON file");
  app.add_flag("--probe", probe, "ground-truth probe of a language model on the built-in story corpus");
  app.add_option("--probe-sequences", probe_opt.sequences, "sequences of the probe's generated stories")
      ->check(pd::at_least(1));
  CLI11_PARSE(app, argc, argv);
  t.by_ablation = sort == "ablation";
  t.contexts = contexts;
  // At least components.json's number, so that --json holds what the run's file holds.
  ctx.per_component = std::max<int64_t>(contexts, ctx.per_component);
  if (contexts == 0) ctx.sequences = 0;
  try {
    std::unique_ptr<pd::Run> r = pd::open_run_folder(dir, true);
    const decomp::Decomposition& spd = *r->spd;
    // Cheap checks first: the analysis below evaluates the whole decomposition.
    if (!t.layer.empty() && spd.cm.index_of(t.layer) < 0) {
      std::string names;
      for (const auto& L : spd.cm.layers) names += (names.empty() ? "" : ", ") + L.name;
      ad::fail(dir + ": --layer: no decomposed layer '" + t.layer + "' (the run decomposes " + names + ")");
    }
    if (probe) pd::require_story_corpus(*r, dir);
    const pd::ComponentAnalysis a = pd::analyse_components(*r, ctx, pd::evaluate_run(*r));
    json c = pd::components_json(spd, a);
    std::string method = spd.method_name();
    for (char& ch : method) ch = (char)std::toupper((unsigned char)ch);
    std::cout << method << " decomposition of " << spd.target.name << " in " << dir << ": evaluation on "
              << r->sc.eval_batch << (spd.target.n_features > 0 ? " examples" : " sequences") << ", ablation on "
              << a.ablation_batch;
    if (a.has_contexts)
      std::cout << ", contexts from " << ctx.sequences << " sequences of " << a.contexts.seq_len << " tokens";
    std::cout << "\n\n" << pd::components_table(c, t);
    if (probe) {
      const pd::ProbeResult p = pd::story_probe(*r, probe_opt, dir);
      std::cout << "\n" << pd::probe_table(p);
      c["probe"] = pd::probe_json(p);
    }
    if (!json_out.empty()) {
      ad::write_file_atomic(json_out, c.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
      std::cout << "wrote " << json_out << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pd components: %s\n", e.what());
    return 1;
  }
}

}  // namespace

PD_COMMAND(components, "per-component table of a decomposition run (top-activating contexts; --probe on stories)",
           cmd_components);
