// Fuzzing the pd program itself: every subcommand that reads a file, run as a subprocess on a
// mutated config or safetensors file. A case passes when pd exits 0, or exits non-zero with a
// message naming the mutated file; a signal, a sanitizer report ("runtime error:",
// "AddressSanitizer"), or a run over the time limit fails the test. Runs are cut short
// (--stop-after) so an accepted mutation costs a few steps. Case i draws from ad::Rng(7919 * i).
#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

#include "autodiff/fileio.hpp"
#include "tests/child_process.hpp"
#include "tests/fuzz/fixtures.hpp"
#include "tests/fuzz/mutator.hpp"

namespace {

using nlohmann::json;

struct Scenario {
  const char* name;
  std::string base;      // the valid file that is mutated
  std::string mutated;   // where the mutated file goes
  std::vector<std::string> args;  // pd's arguments; "OUT" becomes a fresh output folder
};

std::vector<Scenario> scenarios(const fuzz::Fixtures& fx) {
  const std::string d = fx.dir + "/cli_";
  const std::string run = d + "run.json", spd = d + "spd.json", st = d + "file.safetensors";
  return {
      {"train CONFIG", fx.run_config, run, {"train", run, "--out", "OUT", "--stop-after", "2", "--quiet"}},
      {"train --resume", fx.train_checkpoint, st, {"train", fx.run_config, "--resume", st, "--out", "OUT", "--quiet"}},
      {"decompose CONFIG", fx.spd_config, spd,
       {"decompose", spd, "--target-checkpoint", fx.model, "--out", "OUT", "--stop-after", "2", "--quiet"}},
      {"decompose --resume", fx.spd_checkpoint, st, {"decompose", fx.spd_config, "--resume", st, "--out", "OUT", "--quiet"}},
      {"decompose --evaluate", fx.decomposition, st, {"decompose", fx.spd_config, "--evaluate", st, "--out", "OUT", "--quiet"}},
      {"decompose --target-checkpoint", fx.model, st,
       {"decompose", fx.spd_config, "--target-checkpoint", st, "--out", "OUT", "--stop-after", "2", "--quiet"}},
      {"audit CONFIG", fx.spd_config, spd, {"audit", spd, "--coords", "1", "--batch", "2"}},
      {"compare RUN_DIR", fx.metrics, d + "cmp/metrics.json", {"compare", d + "cmp"}},
  };
}

bool is_safetensors(const std::string& path) { return path.size() > 12 && path.substr(path.size() - 12) == ".safetensors"; }

}  // namespace

TEST_CASE("fuzz: pd train, decompose (--resume, --evaluate, --target-checkpoint), audit and compare on mutated files") {
  const fuzz::Fixtures& fx = fuzz::fixtures();
  const std::string pd = testutil::sibling_binary("pd");
  ad::prepare_output_dir(fx.dir + "/cli_cmp");
  const std::vector<Scenario> all = scenarios(fx);
  const int64_t n = fuzz::case_count(4) * (int64_t)all.size();
  fuzz::Tally tally;
  std::vector<std::string> failures;
  for (int64_t i = 0; i < n; ++i) {
    const Scenario& s = all[(size_t)i % all.size()];
    ad::Rng rng(7919 * (uint64_t)i);
    const std::string valid = ad::read_file(s.base);
    ad::write_file_atomic(s.mutated, is_safetensors(s.base) ? fuzz::mutate_safetensors(valid, rng)
                                                            : fuzz::mutate_config(json::parse(valid), rng));
    std::vector<std::string> argv{pd};
    const std::string out = fx.dir + "/cli_out_" + std::to_string(i);
    for (const std::string& a : s.args) argv.push_back(a == "OUT" ? out : a);
    const testutil::ProcessResult r = testutil::run_program(argv, 120);
    std::string bad;
    if (r.output.find("runtime error:") != std::string::npos || r.output.find("Sanitizer") != std::string::npos)
      ++tally.crashed, bad = "sanitizer report";
    else if (r.signal == SIGALRM) ++tally.timed_out, bad = "over the time limit";
    else if (r.signal != 0) ++tally.crashed, bad = "killed by signal " + std::to_string(r.signal);
    else if (r.exit_code == 0) ++tally.accepted;
    else if (r.output.find(s.mutated) != std::string::npos) ++tally.rejected;
    else ++tally.unnamed, bad = "exit " + std::to_string(r.exit_code) + " without naming the file";
    if (!bad.empty())
      failures.push_back(std::string("pd ") + s.name + " case " + std::to_string(i) + ": " + bad + ": " +
                         ad::clip_for_message(r.output, 400));
    std::system(("rm -rf '" + out + "'").c_str());
  }
  MESSAGE(tally.report("pd subcommands"));
  for (size_t k = 0; k < failures.size() && k < 20; ++k) MESSAGE(failures[k]);
  CHECK_MESSAGE(failures.empty(), failures.size(), " failing cases");
}
