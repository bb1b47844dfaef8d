// End-to-end: SPD on a TMS 5-2 target recovers its five features (small budget).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "decomp/trainer.hpp"
#include "decomp/metrics.hpp"
#include "decomp/evaluate.hpp"
#include "decomp/run/audit.hpp"
#include "tests/spd_test_util.hpp"

TEST_CASE("spd: TMS 5-2 decomposition recovers the five features (slow-ish, ~tens of seconds)") {
  spd_test::TinyTMS tms(5, 2, false, ad::DType::f32);
  decomp::Target tgt = tms.target();
  nlohmann::json j = nlohmann::json::parse(R"({
    "seed": 0, "C": 20, "ci_fn": {"type": "mlp", "hidden": [16]}, "delta": true,
    "losses": [{"name": "importance_minimality", "coeff": 3e-3, "p": 1},
               {"name": "stochastic_recon", "coeff": 1},
               {"name": "stochastic_recon_layerwise", "coeff": 1}],
    "train": {"steps": 1500, "batch_size": 1024, "lr": 3e-3, "schedule": "cosine", "log_every": 250}
  })");
  decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "test config");
  ad::Rng rng(cfg.seed);
  decomp::SPD spd(tgt, cfg, rng);
  auto t0 = std::chrono::steady_clock::now();
  decomp::TrainLog log;
  decomp::train_decomposition(spd, &log);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  decomp::EvalResult ev = decomp::evaluate(spd, rng);
  MESSAGE("TMS 5-2 SPD: " << secs << " s, MMCS " << ev.layers[0].mm.mmcs << " ML2R " << ev.layers[0].mm.ml2r
                          << " id-err W " << ev.layers[0].identity_error << " W^T " << ev.layers[1].identity_error);
  CHECK(ev.layers[0].mm.mmcs >= 0.99);
  CHECK(ev.layers[0].mm.ml2r >= 0.9);
  CHECK(ev.layers[0].mm.ml2r <= 1.1);
  CHECK(ev.layers[0].identity_error == 0);
  CHECK(ev.layers[1].identity_error == 0);
  CHECK(ev.layers[0].alive == 5);
}

TEST_CASE("spd: pd audit passes on the TMS 5-2 and residual MLP configs (float64 gradient check of one step)") {
  for (const char* cfg : {"experiments/configs/spd_tms_5-2.json", "experiments/configs/spd_tms_5-2-id.json",
                          "experiments/configs/spd_resid_mlp1.json", "experiments/configs/spd_resid_mlp2.json"}) {
    std::ostringstream out;
    const bool ok = decomp::audit_config(cfg, 6, 8, false, out);
    INFO(out.str());
    CHECK_MESSAGE(ok, cfg);
    CHECK(out.str().find("audit passed") != std::string::npos);
  }
}
