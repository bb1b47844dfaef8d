// `pd compare RUN_DIR... [--out FILE]`: one table of finished decomposition runs (their
// metrics.json), one row per run, sorted by target then method: the teaching view of what
// SPD and APD find on the same target. experiments/side_by_side.sh runs both methods on the
// toy targets and calls this.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "autodiff/error.hpp"
#include "autodiff/fileio.hpp"
#include "experiments/cli.hpp"
#include "experiments/run_summary.hpp"

namespace {

using nlohmann::json;
using pd::fixed;
using pd::per_layer;

struct Row {
  std::string target, method, cells;
};

Row row_of(const std::string& dir) {
  const pd::RunSummary run = pd::read_run(dir);
  const json& m = run.metrics;
  const json& layers = m["layers"];
  std::string dense = per_layer(layers, "dense_k_error");
  if (m.contains("dense_k_groups")) {
    if (!m["dense_k_groups"].is_object())
      ad::fail(dir + "/metrics.json: dense_k_groups: expected an object (group name -> metrics)");
    for (auto it = m["dense_k_groups"].begin(); it != m["dense_k_groups"].end(); ++it)
      dense += "; " + ad::clip_for_message(it.key()) + " " +
               (it->is_object() ? (*it).value("dense_k_error", json()).dump() : "-");
  }
  Row r;
  r.target = run.target;
  r.method = run.method;
  std::string names;  // the order of every per-layer column
  for (const std::string& l : run.layers) names += (names.empty() ? "" : " / ") + l;
  std::ostringstream c;
  c << "| " << r.target << " | " << r.method << " | " << m.value("seed", json()).dump() << " | " << fixed(m.value("mmcs", json()), 4)
    << " | " << fixed(m.value("ml2r", json()), 4) << " | " << names << " | " << per_layer(layers, "identity_ci_error") << " | " << dense
    << " | " << per_layer(layers, "alive_components") << " | " << m["steps"].dump() << " | "
    << fixed(m.value("wall_time_s", json()), 0) << " s | " << dir << " |";
  r.cells = c.str();
  return r;
}

int cmd_compare(int argc, char** argv) {
  CLI::App app{"One table of finished decomposition runs (SPD and APD side by side)"};
  std::vector<std::string> dirs;
  std::string out;
  app.add_option("runs", dirs, "run directories holding metrics.json (pd decompose --out DIR)")->required();
  app.add_option("--out", out, "also write the table (markdown) to this file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::vector<Row> rows;
  for (const std::string& d : dirs) rows.push_back(row_of(d));
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.target != b.target ? a.target < b.target : a.method > b.method;  // spd before apd
  });
  std::string table =
      "| target | method | seed | MMCS | ML2R | layers | identity err per layer | dense-k err per layer | alive per layer | steps | wall | run |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Row& r : rows) table += r.cells + "\n";
  std::fputs(table.c_str(), stdout);
  if (!out.empty()) ad::write_file_atomic(out, table);
  return 0;
}

}  // namespace

PD_COMMAND(compare, "one table of finished decomposition runs (pd compare RUN_DIR... [--out FILE])", cmd_compare);
