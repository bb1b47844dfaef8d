// `pd report RUN_DIR` rebuilds a run folder's report.html from its files (pd decompose and
// pd train write it themselves); `pd report --compare DIR... --out DIR` writes compare.html
// and compare.csv with the runs side by side. The pages: experiments/report_html.hpp.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "experiments/cli.hpp"
#include "experiments/report_html.hpp"

namespace {

int cmd_report(int argc, char** argv) {
  CLI::App app{"report.html of a run folder, or a comparison page of several runs"};
  std::vector<std::string> dirs, compare;
  std::string out;
  app.add_option("run_dir", dirs, "run folder (pd decompose or pd train output) whose report.html to rebuild");
  app.add_option("--compare", compare, "finished decomposition runs to put side by side")->expected(1, -1);
  app.add_option("--out", out, "with --compare: folder for compare.html and compare.csv");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!compare.empty()) {
      if (!dirs.empty()) throw CLI::ValidationError("give run folders either before or after --compare, not both");
      if (out.empty()) throw CLI::ValidationError("--compare needs --out DIR");
      std::printf("%s\n", pd::write_compare_report(compare, out).c_str());
      return 0;
    }
    if (dirs.size() != 1) throw CLI::ValidationError("give one run folder (or --compare DIR... --out DIR)");
    if (!out.empty()) throw CLI::ValidationError("--out goes with --compare");
    std::printf("%s\n", pd::write_report(dirs[0]).c_str());
    return 0;
  } catch (const CLI::Error& e) {
    std::fprintf(stderr, "pd report: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pd report: %s\n", e.what());
    return 1;
  }
}

}  // namespace

PD_COMMAND(report, "report.html of a run (pd report RUN_DIR), or runs side by side (--compare DIR... --out DIR)",
           cmd_report);
