// VPD (METHODS 4): the persistent-PGD update against a hand computation (two training steps),
// source tiling, a bit-identical resume with the sources in the checkpoint, config errors, and
// the gradient audit of a shipped VPD config (sources included).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "decomp/evaluate.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/run/audit.hpp"
#include "decomp/run/checkpoint.hpp"
#include "decomp/run/target.hpp"
#include "models/train.hpp"
#include "decomp/trainer.hpp"
#include "decomp/vpd.hpp"
#include "tests/spd_test_util.hpp"

namespace {

using Vec = std::vector<double>;

// One linear layer y = x W^T (W [2, 3]) on dense normal inputs, float64.
struct OneLinear {
  ad::Tensor W = ad::from_vector({0.7, -0.4, 0.2, 0.1, 0.9, -0.6}, {2, 3}, ad::DType::f64);
  decomp::Target target() const {
    decomp::Target t;
    t.name = "one_linear";
    t.dtype = ad::DType::f64;
    t.layers.push_back({"lin", W, false, ""});
    const ad::Tensor w = W;
    t.forward = [w](const decomp::Batch& b, models::ForwardHooks* hk) { return models::apply_linear(hk, "lin", b.x, w); };
    t.sample = [](int64_t B, ad::Rng& rng) {
      decomp::Batch b;
      b.size = B;
      b.x = ad::rand_normal({B, 3}, 0.0, 1.0, rng, ad::DType::f64);
      return b;
    };
    return t;
  }
};

// Hand Adam ascent on a flat vector (bias-corrected, clamp to [0, 1]).
struct HandAdam {
  Vec m, v;
  int t = 0;
  void step(Vec& x, const Vec& g, double lr, double b1 = 0.5, double b2 = 0.99, double eps = 1e-8) {
    if (m.empty()) m.assign(x.size(), 0.0), v.assign(x.size(), 0.0);
    ++t;
    for (size_t i = 0; i < x.size(); ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(b1, t)), vh = v[i] / (1 - std::pow(b2, t));
      x[i] = std::min(1.0, std::max(0.0, x[i] + lr * mh / (std::sqrt(vh) + eps)));
    }
  }
};

}  // namespace

TEST_CASE("vpd: persistent PGD matches a hand computation over two training steps") {
  OneLinear ol;
  const decomp::Target tgt = ol.target();
  const int64_t B = 4, C = 3, T = 200;  // warmup 0.025 T = 5 steps: lr 0.002 at step 0, 0.004 at step 1
  const nlohmann::json j = nlohmann::json::parse(R"({"method": "vpd", "seed": 1, "C": 3,
    "ci_fn": {"type": "mlp", "hidden": [4]}, "delta": true,
    "losses": [{"name": "persistent_pgd_recon", "coeff": 0.5, "pgd_scope": "per_example", "pgd_inner_steps": 2}],
    "train": {"steps": 200, "batch_size": 4}})");
  decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "test");
  cfg.model.dtype = ad::DType::f64;
  ad::Rng init(1);
  decomp::VPD vpd(tgt, cfg, init);
  decomp::PersistentSources& ps = vpd.adversaries.at("persistent_pgd_recon");
  REQUIRE(ps.s.size() == 1);
  CHECK(ps.s[0].shape() == ad::Shape({B, C}));
  CHECK(ps.s_delta[0].shape() == ad::Shape({B, 1}));
  Vec s = ps.s[0].to_vector(), sd = ps.s_delta[0].to_vector();
  const Vec V = vpd.cm.layers[0].V.to_vector(), U = vpd.cm.layers[0].U.to_vector(), W = ol.W.to_vector();
  HandAdam adam_s, adam_d;
  for (int step = 0; step < 2; ++step) {
    ad::Rng data(100 + step);
    const decomp::Batch b = tgt.sample(B, data);
    ad::Rng r0(5);
    const Vec g = vpd.prepare(b, r0).g_lower[0].to_vector();  // continuous sampling: no draws
    const Vec x = b.x.to_vector();
    // D and its gradient with respect to s, sd at the current hand sources
    auto hand = [&](Vec& ds, Vec& dsd) {
      ds.assign(B * C, 0.0), dsd.assign(B, 0.0);
      double D = 0;
      for (int64_t i = 0; i < B; ++i) {
        Vec h(C, 0.0), xw(2, 0.0), hU(2, 0.0), out(2, 0.0);
        for (int64_t c = 0; c < C; ++c)
          for (int k = 0; k < 3; ++k) h[c] += x[i * 3 + k] * V[k * C + c];
        for (int o = 0; o < 2; ++o) {
          for (int k = 0; k < 3; ++k) xw[o] += x[i * 3 + k] * W[o * 3 + k];
          for (int64_t c = 0; c < C; ++c) hU[o] += h[c] * U[c * 2 + o];
        }
        for (int o = 0; o < 2; ++o) {
          for (int64_t c = 0; c < C; ++c) out[o] += h[c] * (g[i * C + c] + (1 - g[i * C + c]) * s[i * C + c]) * U[c * 2 + o];
          out[o] += sd[i] * (xw[o] - hU[o]);
        }
        for (int o = 0; o < 2; ++o) {
          const double r = out[o] - xw[o], dout = 2 * r / (double)(B * 2);
          D += r * r / (double)(B * 2);
          for (int64_t c = 0; c < C; ++c) ds[i * C + c] += (1 - g[i * C + c]) * h[c] * dout * U[c * 2 + o];
          dsd[i] += dout * (xw[o] - hU[o]);
        }
      }
      return D;
    };
    const double lr = 0.01 * std::min(1.0, (step + 1.0) / 5.0);
    Vec ds, dsd;
    for (int k = 0; k < 2; ++k) {  // inner ascent steps
      hand(ds, dsd);
      adam_s.step(s, ds, lr), adam_d.step(sd, dsd, lr);
    }
    // the term's value, and the gradient after_step applies: dD/ds, not the total's 0.5 dD/ds
    const double D = hand(ds, dsd);
    adam_s.step(s, ds, lr), adam_d.step(sd, dsd, lr);

    vpd.before_step();
    ad::Rng r1(7);
    ad::Tensor loss = vpd.total_loss(b, (double)step / (double)T, r1, nullptr, false);
    CHECK(loss.item() == doctest::Approx(0.5 * D).epsilon(1e-12));
    ad::backward(loss);
    vpd.after_step();
    const Vec got_s = ps.s[0].to_vector(), got_d = ps.s_delta[0].to_vector();
    for (size_t i = 0; i < s.size(); ++i) CHECK(got_s[i] == doctest::Approx(s[i]).epsilon(1e-12));
    for (size_t i = 0; i < sd.size(); ++i) CHECK(got_d[i] == doctest::Approx(sd[i]).epsilon(1e-12));
    CHECK(ps.t.item() == 3.0 * (step + 1));
    CHECK_FALSE(ps.s[0].requires_grad());
  }
  // outside a training step the term evaluates at the sources and leaves them alone
  const Vec before = ps.s[0].to_vector();
  ad::Rng data(300), r2(8);
  const decomp::Batch b = tgt.sample(7, data);  // 7 examples read the 4 source rows cyclically
  const decomp::StepState st = vpd.prepare(b, r2);
  const double v = vpd.term(*cfg.losses[0], b, st, 0.5, r2).item();
  CHECK(std::isfinite(v));
  CHECK(ps.s[0].to_vector() == before);
  CHECK(ps.t.item() == 6.0);
}

TEST_CASE("vpd: sources tile along the batch (example b reads row b mod n) and their gradient sums the copies") {
  ad::Tensor g = ad::from_vector({0.0, 0.5, 0.0, 0.5, 0.0, 0.5, 0.0, 0.5, 0.0, 0.5}, {5, 2}, ad::DType::f64);
  ad::Tensor s = ad::from_vector({0.1, 0.2, 0.3, 0.4}, {2, 2}, ad::DType::f64);
  s.requires_grad_(true);
  const std::vector<decomp::LayerMask> m = decomp::source_masks({g}, {s}, {}, {}, false);
  const Vec mv = m[0].m.to_vector();
  for (int b = 0; b < 5; ++b) {
    CHECK(mv[b * 2] == doctest::Approx(s.to_vector()[(b % 2) * 2]));
    CHECK(mv[b * 2 + 1] == doctest::Approx(0.5 + 0.5 * s.to_vector()[(b % 2) * 2 + 1]));
  }
  // d sum(m) / d s: rows 0 (examples 0, 2, 4) and 1 (examples 1, 3), times (1 - g)
  const Vec gs = ad::grad(ad::sum(m[0].m), {s})[0].to_vector();
  CHECK(gs == Vec{3.0, 1.5, 2.0, 1.0});
}

TEST_CASE("vpd: stop + checkpoint + resume gives the same bits, sources and their Adam state included") {
  spd_test::TinyTMS tms(5, 2, false, ad::DType::f32);
  decomp::Target tgt = tms.target();
  const nlohmann::json j = nlohmann::json::parse(R"({"method": "vpd", "seed": 2, "C": 6,
    "ci_fn": {"type": "shared_mlp", "hidden": [8], "global": true}, "delta": true,
    "losses": [{"name": "importance_minimality", "coeff": 3e-3, "p": 2, "p_final": 0.5, "beta": 0.5},
               {"name": "stochastic_recon_subset", "coeff": 1},
               {"name": "persistent_pgd_recon_subset", "coeff": 1, "pgd_scope": "repeat", "pgd_sources": 4}],
    "train": {"steps": 20, "batch_size": 32, "lr": 3e-3, "log_every": 5, "faith_warmup_steps": 3}})");
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "test config");
  ad::Rng rng_a(cfg.seed);
  decomp::VPD a(tgt, cfg, rng_a);
  const Vec s_init = a.adversaries.begin()->second.s[0].to_vector();
  decomp::TrainLog log_a;
  CHECK(decomp::train_decomposition(a, &log_a) == 20);
  CHECK(a.adversaries.begin()->second.s[0].to_vector() != s_init);  // the sources moved
  const std::string path = (std::filesystem::temp_directory_path() / "pd_test_vpd_checkpoint.safetensors").string();
  {
    ad::Rng rng_b(cfg.seed);
    decomp::VPD b(tgt, cfg, rng_b);
    decomp::TrainLog log_b;
    decomp::TrainHooks hooks;
    hooks.stop_after = 9;
    hooks.checkpoint = [&](int64_t next, const ad::Optimizer& opt, const decomp::TrainLog& l) {
      decomp::save_spd_checkpoint(path, b, opt, l, next, 1.0, j, "tiny", "0123456789abcdef");
    };
    CHECK(decomp::train_decomposition(b, &log_b, {}, &hooks) == 9);
  }
  const decomp::SpdCheckpoint ck = decomp::read_spd_checkpoint(path);
  ad::Rng rng_c(999);
  decomp::VPD c(tgt, cfg, rng_c);
  decomp::restore_params(ck, c);
  decomp::TrainLog log_c = ck.file.log;
  decomp::TrainHooks hooks;
  hooks.start_step = ck.file.step;
  hooks.restore_optimizer = [&](ad::Optimizer& opt) { decomp::restore_optimizer(ck, opt); };
  CHECK(decomp::train_decomposition(c, &log_c, {}, &hooks) == 20);
  const auto sa = a.persistent_state(), sc = c.persistent_state();
  REQUIRE(sa.size() == sc.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    INFO("state " << sa[i].name);
    CHECK(sa[i].t.to_vector() == sc[i].t.to_vector());
  }
  const std::vector<ad::Tensor> pa = a.all_params(), pc = c.all_params();
  for (size_t i = 0; i < pa.size(); ++i) CHECK(pa[i].to_vector() == pc[i].to_vector());
  for (auto& kv : log_a.values)
    if (kv.first != "time_s") CHECK(kv.second == log_c.values.at(kv.first));
  std::filesystem::remove(path);
}

TEST_CASE("vpd: config errors name the key") {
  auto err = [](const std::string& losses, const std::string& method = "vpd") {
    const std::string text = R"({"method": ")" + method + R"(", "C": 4, "losses": [)" + losses + "]}";
    try {
      decomp::parse_decomp_config(nlohmann::json::parse(text), "v.json");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string ok = R"({"name": "persistent_pgd_recon", "coeff": 1})";
  CHECK(err(ok) == "no error");
  CHECK(err(ok, "spd").find("'persistent_pgd_recon' is not a loss term of method spd") != std::string::npos);
  CHECK(err(R"({"name": "persistent_pgd_recon", "coeff": 0})").find("losses[0].coeff") != std::string::npos);
  CHECK(err(R"({"name": "persistent_pgd_recon", "pgd_scope": "row"})").find("losses[0].pgd_scope") != std::string::npos);
  CHECK(err(R"({"name": "persistent_pgd_recon", "pgd_sources": 4})").find("applies to pgd_scope repeat") != std::string::npos);
  CHECK(err(R"({"name": "persistent_pgd_recon", "pgd_beta1": 1.0})").find("losses[0].pgd_beta1") != std::string::npos);
  CHECK(err(R"({"name": "persistent_pgd_recon", "routing": "layerwise"})").find("losses[0].routing") != std::string::npos);
  CHECK(err(ok, "xpd").find("must be spd, apd or vpd") != std::string::npos);
}

TEST_CASE("vpd: pd audit passes on the shipped VPD TMS config and audits the persistent sources") {
  std::ostringstream out;
  const bool ok = decomp::audit_config("experiments/configs/vpd_tms_5-2.json", 6, 8, false, out);
  CHECK_MESSAGE(ok, out.str());
  CHECK_MESSAGE(out.str().find("adversary.persistent_pgd_recon.s.linear1") != std::string::npos, out.str());
  CHECK_MESSAGE(out.str().find("adversary.persistent_pgd_recon.s_delta.linear2") != std::string::npos, out.str());
}

namespace {
// A tiny untrained induction transformer (vocab 8, d 8, one layer) as a token target, float64,
// decomposed on its q and v projections.
struct TinySeqTarget {
  std::shared_ptr<models::Model> model;
  decomp::Target target;
  TinySeqTarget() {
    const nlohmann::json run = nlohmann::json::parse(R"({"model": {"type": "induction", "vocab": 8, "d_model": 8,
      "n_heads": 2, "n_layers": 1, "max_len": 16}, "data": {"type": "induction", "half_len": 4},
      "train": {"steps": 1, "batch_size": 2, "lr": 0.001}})");
    const models::RunConfig rc = models::parse_run_config(run, "tiny ih");
    ad::Rng rng(3);
    model = models::make_model(rc.model, rng, ad::DType::f64);
    target = decomp::make_target(model, rc, {"blocks.0.attn.q_proj", "blocks.0.attn.v_proj"});
  }
};
}  // namespace

TEST_CASE("vpd: next-token CE reads position t's logits against token t + 1") {
  // B 1, S 3, V 2: logits favour token 1 at position 0 and token 0 at position 1; position 2 unused
  const ad::Tensor logits = ad::from_vector({0, 2, 1, 0, 5, -5}, {1, 3, 2}, ad::DType::f64);
  const ad::Indices ids({0, 1, 0}, {1, 3});
  const double want = 0.5 * (std::log(1 + std::exp(-2.0)) + std::log(1 + std::exp(-1.0)));
  CHECK(decomp::next_token_ce(logits, ids).item() == doctest::Approx(want).epsilon(1e-12));
  CHECK_THROWS_WITH_AS(decomp::next_token_ce(logits, ad::Indices({0, 1}, {1, 2})), doctest::Contains("do not match"),
                       ad::Error);
}

TEST_CASE("vpd: LM evaluation: exact components give the target's CE unmasked; zero ablation is ce_unrecovered 1") {
  TinySeqTarget t;
  const nlohmann::json j = nlohmann::json::parse(R"({"method": "vpd", "C": 8, "ci_fn": {"type": "vector_mlp",
    "hidden": [4]}, "losses": [{"name": "stochastic_recon", "coeff": 1},
    {"name": "persistent_pgd_recon", "coeff": 1, "pgd_scope": "per_position"}], "train": {"batch_size": 3}})");
  decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "test");
  cfg.model.dtype = ad::DType::f64;
  ad::Rng init(1);
  decomp::VPD vpd(t.target, cfg, init);
  ad::Rng probe(0);
  const int64_t S = t.target.sample(1, probe).ids.shape[1];
  CHECK(vpd.adversaries.begin()->second.s[0].shape() == ad::Shape({1, S, 8}));  // [1, S, C]
  // V = I, U = W^T: V U = W^T exactly, so m = 1 without delta is the target
  for (decomp::LayerComponents& L : vpd.cm.layers) {
    for (int64_t i = 0; i < 8; ++i)
      for (int64_t c = 0; c < 8; ++c) {
        L.V.set_item(i * 8 + c, i == c ? 1.0 : 0.0);
        L.U.set_item(i * 8 + c, L.WT.item(i * 8 + c));
      }
  }
  ad::Rng rng(5);
  const decomp::LMEval ev = decomp::evaluate_lm(vpd, rng, 5, 2);
  CHECK(ev.sequences == 5);
  CHECK(ev.positions == 5 * (S - 1));
  CHECK(ev.strategies.size() == 7);
  const decomp::MaskingEval* un = ev.find("unmasked");
  const decomp::MaskingEval* zero = ev.find("zero");
  REQUIRE(un);
  REQUIRE(zero);
  CHECK(std::fabs(un->kl) < 1e-12);
  CHECK(un->ce == doctest::Approx(ev.ce_target).epsilon(1e-12));
  CHECK(std::fabs(un->ce_unrecovered) < 1e-9);
  CHECK(zero->ce_unrecovered == 1.0);
  CHECK(zero->kl > 0);
  // the adversarial masks hurt at least as much as the CI masks they start from, on average
  CHECK(ev.find("adversarial")->kl >= ev.find("ci_masked")->kl - 1e-12);
  const nlohmann::json js = ev.to_json();
  for (const char* k : {"unmasked", "ci_masked", "stochastic", "random", "rounded", "zero", "adversarial"})
    CHECK(js["strategies"].contains(k));
}

TEST_CASE("vpd: failure-mode detectors trigger on their figure and name it") {
  spd_test::TinyTMS tms(5, 2, false, ad::DType::f64);
  const decomp::Target tgt = tms.target();
  const nlohmann::json j = nlohmann::json::parse(R"({"C": 6, "losses": [{"name": "stochastic_recon", "coeff": 1}]})");
  decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "test");
  cfg.model.dtype = ad::DType::f64;
  ad::Rng init(1);
  decomp::SPD spd(tgt, cfg, init);
  decomp::EvalResult ev;
  decomp::LayerEval a;
  a.name = "linear1";
  a.alive = 3;
  a.ci_l0 = 4.0;  // 4 of 6 on per example: dense
  a.ci_onehot = decomp::Mat(5, 6, 0.0);
  a.ci_onehot(0, 2) = a.ci_onehot(1, 2) = 0.9;  // one component for two features
  ev.layers.push_back(a);
  ev.losses["ci_masked_recon"] = 0.02;
  ev.recon_zero = 0.1;  // CI masks lose 20% of what ablating everything loses: collapse
  ad::TrainLog log;
  for (int s = 1; s <= 10; ++s) log.steps.push_back(s * 100), log.values["total"].push_back(s <= 9 ? 1.0 : 0.5);
  std::vector<decomp::FailureMode> f = decomp::detect_failure_modes(spd, ev, log);
  REQUIRE(f.size() == 4);
  CHECK(f[0].name == "ci_collapse");
  CHECK(f[0].triggered);
  CHECK(f[0].figure == doctest::Approx(0.2));
  CHECK(f[1].triggered);
  CHECK(f[1].figure == doctest::Approx(4.0 / 6.0));
  CHECK(f[2].triggered);
  CHECK(f[2].figure == 1);
  CHECK(f[3].triggered);
  CHECK(f[3].figure == doctest::Approx(0.5));
  // the healthy versions
  ev.layers[0].ci_l0 = 1.0;
  ev.layers[0].ci_onehot(1, 2) = 0.0;
  ev.losses["ci_masked_recon"] = 0.001;
  log.values["total"].back() = 0.99;
  f = decomp::detect_failure_modes(spd, ev, log);
  for (const decomp::FailureMode& m : f) CHECK_MESSAGE(!m.triggered, m.name);
  ev.layers[0].alive = 0;
  CHECK(decomp::detect_failure_modes(spd, ev, log)[0].detail.find("no alive component") != std::string::npos);
  CHECK(decomp::failure_modes_text(f).find("ci_collapse") != std::string::npos);
}
