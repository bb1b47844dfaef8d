// SPD checkpoints: a run stopped part-way, written to a checkpoint file and resumed from it
// ends with the same bits as an uninterrupted run; malformed files get errors naming them.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>

#include "autodiff/fileio.hpp"
#include "decomp/trainer.hpp"
#include "decomp/run/checkpoint.hpp"
#include "tests/spd_test_util.hpp"

namespace {
nlohmann::json tiny_config() {
  return nlohmann::json::parse(R"({
    "seed": 4, "C": 6, "ci_fn": {"type": "mlp", "hidden": [8]}, "delta": true,
    "losses": [{"name": "importance_minimality", "coeff": 3e-3, "p": 1},
               {"name": "stochastic_recon", "coeff": 1},
               {"name": "stochastic_recon_layerwise", "coeff": 1}],
    "train": {"steps": 30, "batch_size": 64, "lr": 3e-3, "schedule": "cosine", "log_every": 7,
              "faith_warmup_steps": 5}
  })");
}
}  // namespace

TEST_CASE("spd: stop + checkpoint file + resume gives the same bits as an uninterrupted run") {
  spd_test::TinyTMS tms(5, 2, true, ad::DType::f32);
  decomp::Target tgt = tms.target();
  const nlohmann::json j = tiny_config();
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "test config");
  // uninterrupted
  ad::Rng rng_a(cfg.seed);
  decomp::SPD a(tgt, cfg, rng_a);
  decomp::TrainLog log_a;
  CHECK(decomp::train_decomposition(a, &log_a) == 30);
  // stopped after 13 steps (not a log step), checkpoint written to a file
  const std::string path = (std::filesystem::temp_directory_path() / "pd_test_spd_checkpoint.safetensors").string();
  {
    ad::Rng rng_b(cfg.seed);
    decomp::SPD b(tgt, cfg, rng_b);
    decomp::TrainLog log_b;
    decomp::TrainHooks hooks;
    hooks.stop_after = 13;
    int saves = 0;
    hooks.checkpoint = [&](int64_t next, const ad::Optimizer& opt, const decomp::TrainLog& l) {
      ++saves;
      decomp::save_spd_checkpoint(path, b, opt, l, next, 1.5, j, "tiny", "0123456789abcdef");
    };
    CHECK(decomp::train_decomposition(b, &log_b, {}, &hooks) == 13);
    CHECK(saves == 1);
  }
  // a fresh process: new SPD with other initial values, everything restored from the file
  const decomp::SpdCheckpoint ck = decomp::read_spd_checkpoint(path);
  CHECK(ck.file.step == 13);
  CHECK(ck.file.wall_s == 1.5);
  CHECK(ck.target_fingerprint == "0123456789abcdef");
  CHECK(ck.config == j);
  ad::Rng rng_c(999);
  decomp::SPD c(tgt, cfg, rng_c);
  decomp::restore_params(ck, c);
  decomp::TrainLog log_c = ck.file.log;
  decomp::TrainHooks hooks;
  hooks.start_step = ck.file.step;
  hooks.restore_optimizer = [&](ad::Optimizer& opt) { decomp::restore_optimizer(ck, opt); };
  CHECK(decomp::train_decomposition(c, &log_c, {}, &hooks) == 30);
  const std::vector<ad::Tensor> pa = a.all_params(), pc = c.all_params();
  REQUIRE(pa.size() == pc.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    INFO("tensor " << a.all_param_names()[i]);
    CHECK(pa[i].to_vector() == pc[i].to_vector());
  }
  CHECK(log_a.steps == log_c.steps);
  // every logged value but the wall-clock time
  for (auto& kv : log_a.values)
    if (kv.first != "time_s") CHECK(kv.second == log_c.values.at(kv.first));
  std::filesystem::remove(path);
}

TEST_CASE("spd: checkpoint files that are not SPD checkpoints or are damaged get errors naming the file") {
  const std::string path = (std::filesystem::temp_directory_path() / "pd_test_not_spd_checkpoint.safetensors").string();
  ad::save_safetensors(path, {{"x", ad::zeros({2})}}, {{"format", "pd-spd-v1"}});
  CHECK_THROWS_WITH(decomp::read_spd_checkpoint(path), doctest::Contains((path + ": not a pd checkpoint").c_str()));
  const std::string log = R"({"steps": [], "values": {}, "seconds": 0, "window": {}})";
  ad::save_safetensors(path, {{"x", ad::zeros({2})}},
                       {{"format", "pd-checkpoint-v2"}, {"kind", "train"}, {"step", "3"}, {"wall_s", "1"}, {"log", log}});
  CHECK_THROWS_WITH(decomp::read_spd_checkpoint(path), doctest::Contains("a 'train' checkpoint, this run needs a 'decompose' one"));
  ad::save_safetensors(path, {{"x", ad::zeros({2})}},
                       {{"format", "pd-checkpoint-v2"}, {"kind", "decompose"}, {"step", "1e3"}, {"wall_s", "1"}, {"log", log}});
  CHECK_THROWS_WITH(decomp::read_spd_checkpoint(path), doctest::Contains("metadata 'step' must be a non-negative integer, got '1e3'"));
  ad::save_safetensors(path, {{"x", ad::zeros({2})}},
                       {{"format", "pd-checkpoint-v2"}, {"kind", "decompose"}, {"step", "3"}, {"config", "{"},
                        {"target_checkpoint", "t"}, {"target_fingerprint", "f"}, {"wall_s", "1"}, {"log", log}});
  CHECK_THROWS_WITH(decomp::read_spd_checkpoint(path), doctest::Contains("metadata 'config': invalid JSON"));
  // valid metadata but the run's tensors are missing
  spd_test::TinyTMS tms(5, 2, false, ad::DType::f32);
  decomp::Target tgt = tms.target();
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(tiny_config(), "test config");
  ad::Rng rng(1);
  decomp::SPD spd(tgt, cfg, rng);
  ad::save_safetensors(path, {{"x", ad::zeros({2})}},
                       {{"format", "pd-checkpoint-v2"}, {"kind", "decompose"}, {"step", "3"}, {"config", "{}"},
                        {"target_checkpoint", "t"}, {"target_fingerprint", "f"}, {"wall_s", "1"}, {"log", log}});
  const decomp::SpdCheckpoint ck = decomp::read_spd_checkpoint(path);
  CHECK_THROWS_WITH(decomp::restore_params(ck, spd), doctest::Contains("tensor 'param/"));
  std::filesystem::remove(path);
}

TEST_CASE("spd: faithfulness warmup fits sum_c U V to W before training and leaves the CI functions alone") {
  // Steps 0: train_decomposition runs only the warmup (AdamW on U, V towards W, METHODS 3.4).
  spd_test::TinyTMS tms(5, 2, true, ad::DType::f32);
  decomp::Target tgt = tms.target();
  nlohmann::json j = tiny_config();
  j["train"]["steps"] = 0;
  j["train"]["faith_warmup_steps"] = 0;
  const decomp::DecompConfig no_warm = decomp::parse_decomp_config(j, "test config");
  j["train"]["faith_warmup_steps"] = 200;
  j["train"]["faith_warmup_lr"] = 0.01;
  j["train"]["faith_warmup_wd"] = 0.0;
  const decomp::DecompConfig warm = decomp::parse_decomp_config(j, "test config");
  ad::Rng rng_a(no_warm.seed), rng_b(warm.seed);  // initial values
  decomp::SPD a(tgt, no_warm, rng_a), b(tgt, warm, rng_b);
  const std::vector<double> ci_before = b.cm.ci_params()[0].to_vector();
  CHECK(decomp::train_decomposition(a, nullptr) == 0);
  CHECK(decomp::train_decomposition(b, nullptr) == 0);
  const double f_init = decomp::faithfulness(a.cm).item(), f_warm = decomp::faithfulness(b.cm).item();
  MESSAGE("faithfulness: initial " << f_init << ", after 200 warmup steps " << f_warm);
  CHECK(f_init > 0.01);
  CHECK(f_warm < 1e-3 * f_init);
  CHECK(b.cm.ci_params()[0].to_vector() == ci_before);
}
