// Fuzzing every loader in process: mutated safetensors files (model, train checkpoint,
// decomposition checkpoint, decomposition) against every safetensors loader, mutated configs
// against the run-config and decomposition-config readers, mutated metrics.json against
// pd compare. Each case runs in a forked child under a time limit. A case passes when the
// loader accepts the file or throws an ad::Error naming it; a crash, a sanitizer report, another
// exception type, an error not naming the file, or a run over the limit fails the test. Seeds
// are fixed: case i of base file b draws from ad::Rng(1000003 * b + i).
#include <doctest/doctest.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "autodiff/fileio.hpp"
#include "autodiff/optim.hpp"
#include "decomp/run/checkpoint.hpp"
#include "decomp/run/files.hpp"
#include "decomp/run/target.hpp"
#include "models/config.hpp"
#include "models/model.hpp"
#include "models/train.hpp"
#include "tests/child_process.hpp"
#include "tests/fuzz/fixtures.hpp"
#include "tests/fuzz/mutator.hpp"

namespace {

using nlohmann::json;
using Load = std::function<void(const std::string& path)>;
struct Loader {
  const char* name;
  Load load;
};

constexpr unsigned kCaseSeconds = 60;  // a hang, not a slow machine

// Tallies one case's outcome; a failing one gets a line in `failures`.
void judge(const testutil::ChildResult& r, const std::string& path, const std::string& label, fuzz::Tally& t,
           std::vector<std::string>& failures) {
  std::string bad;
  switch (r.kind) {
    case testutil::ChildResult::returned: ++t.accepted; return;
    case testutil::ChildResult::error:
      if (r.message.find(path) != std::string::npos) { ++t.rejected; return; }
      ++t.unnamed, bad = "error without the file name";
      break;
    case testutil::ChildResult::other_exception: ++t.unnamed, bad = "not an ad::Error"; break;
    case testutil::ChildResult::crashed: ++t.crashed, bad = "crashed"; break;
    case testutil::ChildResult::timed_out: ++t.timed_out, bad = "over the time limit"; break;
  }
  failures.push_back(label + ": " + bad + ": " + ad::clip_for_message(r.message, 300));
}

// Mutates each base file with `mutate` (cases 0..n-1, then the `found` ones: cases that failed
// in longer runs, kept as regressions; case i of base b: seed 1000003 b + i) and runs every
// loader on each variant, in forked children.
void fuzz_files(const std::vector<std::string>& bases, const std::vector<Loader>& loaders, int64_t n,
                const std::function<std::string(const std::string& valid, ad::Rng&)>& mutate, const std::string& target,
                const std::string& what, const std::vector<int64_t>& found = {}) {
  std::vector<int64_t> cases;
  for (int64_t i = 0; i < n; ++i) cases.push_back(i);
  for (int64_t i : found)
    if (i >= n) cases.push_back(i);
  fuzz::Tally tally;
  std::vector<std::string> failures;
  for (size_t b = 0; b < bases.size(); ++b) {
    const std::string valid = ad::read_file(bases[b]);
    const std::string base = bases[b].substr(bases[b].find_last_of('/') + 1);
    for (const Loader& l : loaders) {
      const std::vector<testutil::ChildResult> results =
          testutil::run_cases_in_children((int64_t)cases.size(), [&](int64_t k) {
            ad::Rng rng(1000003 * b + (uint64_t)cases[(size_t)k]);
            ad::write_file_atomic(target, mutate(valid, rng));
            l.load(target);
          }, kCaseSeconds);
      for (size_t k = 0; k < cases.size(); ++k)
        judge(results[k], target, base + " seed " + std::to_string(1000003 * b + (uint64_t)cases[k]) + " " + l.name,
              tally, failures);
    }
  }
  MESSAGE(tally.report(what));
  for (size_t k = 0; k < failures.size() && k < 20; ++k) MESSAGE(failures[k]);
  CHECK_MESSAGE(failures.empty(), failures.size(), " failing cases");
  std::remove(target.c_str());
}

// A decomposition of the fixture's SPD config on an untrained target, as pd decompose builds it.
std::unique_ptr<decomp::Decomposition> fixture_decomposition(decomp::LoadedTarget& lt) {
  const std::string& cfg_path = fuzz::fixtures().spd_config;
  const json cfg = models::read_json_file(cfg_path);
  lt = decomp::untrained_target(cfg, cfg_path);
  ad::Rng rng(0);
  return decomp::make_decomposition(lt.target, decomp::parse_decomp_config(cfg, cfg_path), rng);
}

std::vector<Loader> safetensors_loaders() {
  return {
      {"load_safetensors", [](const std::string& p) { ad::load_safetensors(p); }},
      {"load_model", [](const std::string& p) { models::load_model(p); }},
      {"train checkpoint", [](const std::string& p) {
         const models::RunConfig rc = models::load_run_config(fuzz::fixtures().run_config);
         ad::Rng rng(0);
         std::unique_ptr<models::Model> m = models::make_model(rc.model, rng);
         ad::AdamW opt({ad::ParamGroup("params", m->trainable())});
         ad::TrainLog log;
         models::load_checkpoint(p, *m, opt, log, rc);
       }},
      {"decomposition checkpoint", [](const std::string& p) {
         decomp::LoadedTarget lt;
         auto dec = fixture_decomposition(lt);
         const decomp::SpdCheckpoint ck = decomp::read_spd_checkpoint(p);
         decomp::restore_params(ck, *dec);
         ad::AdamW opt({ad::ParamGroup("components", dec->cm.component_params()),
                        ad::ParamGroup("ci_fns", dec->cm.ci_params())});
         decomp::restore_optimizer(ck, opt);
       }},
      {"load_decomposition", [](const std::string& p) {
         decomp::LoadedTarget lt;
         auto dec = fixture_decomposition(lt);
         decomp::load_decomposition(*dec, p);
       }},
  };
}

}  // namespace

TEST_CASE("fuzz: mutated safetensors files (model, checkpoints, decomposition) against every loader") {
  const fuzz::Fixtures& fx = fuzz::fixtures();
  fuzz_files(fx.safetensors(), safetensors_loaders(), fuzz::case_count(120), fuzz::mutate_safetensors,
             fx.dir + "/case.safetensors", "safetensors loaders", {246 /* run_config metadata a number */});
}

TEST_CASE("fuzz: mutated run configs and decomposition configs against their readers") {
  const fuzz::Fixtures& fx = fuzz::fixtures();
  auto mutate = [](const std::string& valid, ad::Rng& rng) { return fuzz::mutate_config(json::parse(valid), rng); };
  const Loader run{"load_run_config", [](const std::string& p) { models::load_run_config(p); }};
  fuzz_files(fx.run_configs, {run}, fuzz::case_count(200), mutate, fx.dir + "/case_run.json", "run configs");
  const Loader dec{"decomposition config", [](const std::string& p) {
                     const json cfg = models::read_json_file(p);
                     const decomp::DecompConfig c = decomp::parse_decomp_config(cfg, p);
                     decomp::LoadedTarget lt = decomp::untrained_target(cfg, p);
                     ad::Rng rng(0);
                     decomp::make_decomposition(lt.target, c, rng);
                   }};
  fuzz_files(fx.decomp_configs, {dec}, fuzz::case_count(200), mutate, fx.dir + "/case_decomp.json", "decomposition configs");
}

TEST_CASE("fuzz: mutated metrics.json against pd compare") {
  const fuzz::Fixtures& fx = fuzz::fixtures();
  const std::string dir = fx.dir + "/compare";
  ad::prepare_output_dir(dir);
  auto mutate = [](const std::string& valid, ad::Rng& rng) { return fuzz::mutate_config(json::parse(valid), rng); };
  const Loader compare{"pd compare", [dir](const std::string&) {
                         if (!std::freopen("/dev/null", "w", stdout)) return;  // the child's table
                         fuzz::run_pd_in_process({"compare", dir});
                       }};
  fuzz_files({fx.metrics}, {compare}, fuzz::case_count(150), mutate, dir + "/metrics.json", "metrics files");
}
