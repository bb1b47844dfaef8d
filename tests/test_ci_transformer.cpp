// The global bidirectional transformer CI function (decomp/ci_transformer.hpp): gradients,
// bidirectionality, positions, the per-layer blocks against explicit concatenation, config
// errors, and a tiny SPD run on an induction-head target with a checkpoint round trip.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "autodiff/fileio.hpp"
#include "decomp/ci_transformer.hpp"
#include "decomp/run/audit.hpp"
#include "decomp/run/checkpoint.hpp"
#include "decomp/run/target.hpp"
#include "decomp/trainer.hpp"
#include "tests/audit.hpp"
#include "tests/spd_test_util.hpp"

using ad::Tensor;
using decomp::CITransformerOptions;
using decomp::GlobalCITransformer;

namespace {

CITransformerOptions opts(int64_t D, int64_t H, int64_t blocks, int64_t d_mlp, bool rope) {
  CITransformerOptions o;
  o.d_model = D, o.n_heads = H, o.n_blocks = blocks, o.d_mlp = d_mlp, o.rope = rope;
  return o;
}

// Every parameter moved off its initial value (biases off 0, gains off 1), so no term of the
// backward can hide behind a zero or a one.
void perturb(const GlobalCITransformer& t, uint64_t seed) {
  ad::Rng r(seed);
  for (Tensor p : t.parameters())
    for (int64_t i = 0; i < p.numel(); ++i) p.set_item(i, p.item(i) + r.uniform(-0.3, 0.3));
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.item(i) - b.item(i)));
  return m;
}

// x with the sequence positions of axis 1 reordered: out[:, s] = x[:, perm[s]].
Tensor permute_positions(const Tensor& x, const std::vector<int64_t>& perm) {
  std::vector<Tensor> cols;
  for (int64_t s : perm) cols.push_back(ad::slice(x, 1, s, s + 1));
  return ad::detach(ad::concat(cols, 1));
}

// The composed reference of the input norm: x / sqrt(mean(x^2) + 1e-6) (no gain).
Tensor rms_ref(const Tensor& x) { return x / ad::sqrt(ad::mean(ad::square(x), {-1}, true) + 1e-6); }

}  // namespace

TEST_CASE("ci transformer: float64 finite differences w.r.t. every parameter and input, one input feeding two layers") {
  for (bool rope : {true, false}) {
    CAPTURE(rope);
    // rope needs an even head dim: 3 heads of 2; without rope 2 heads of 3
    GlobalCITransformer t;
    ad::Rng rng(1);
    t.init(opts(6, rope ? 3 : 2, 2, 5, rope), {3, 7, 3}, {4, 6, 5}, ad::DType::f64, rng);
    perturb(t, 2);
    ad::Rng data(3);
    const Tensor x0 = audit::input({2, 5, 3}, data), x1 = audit::input({2, 5, 7}, data);
    std::vector<Tensor> inputs = {x0, x1};
    for (const Tensor& p : t.parameters()) inputs.push_back(p);
    // layer 2 reads the same tensor as layer 0: its gradient is the sum of both paths
    auto f = [&](const std::vector<Tensor>&) { return ad::concat(t.forward({x0, x1, x0}), -1); };
    CHECK_GRADIENTS(f, inputs);
  }
}

// embed() takes layers reading one tensor (q, k, v) as one norm and one product with their
// in_w summed; a copy of the input in another tensor takes the per-layer path: the same
// values and gradients (input, every in_w) to rounding.
TEST_CASE("ci transformer: a shared layer input (one product with the summed in_w) equals separate inputs") {
  GlobalCITransformer t;
  ad::Rng rng(13);
  t.init(opts(6, 2, 1, 5, false), {3, 7, 3, 3}, {4, 6, 5, 2}, ad::DType::f64, rng);
  perturb(t, 14);
  ad::Rng data(15);
  const Tensor x0 = audit::input({2, 5, 3}, data), x1 = audit::input({2, 5, 7}, data);
  const Tensor x0b = ad::clone(x0).requires_grad_(true), x0c = ad::clone(x0).requires_grad_(true);
  const Tensor shared = t.embed({x0, x1, x0, x0}), separate = t.embed({x0, x1, x0b, x0c});
  CHECK(max_abs_diff(shared, separate) < 1e-13);
  ad::Rng r(16);
  const Tensor R = ad::rand_normal(shared.shape(), 0, 1, r, ad::DType::f64);
  std::vector<Tensor> wrt = t.in_w;
  wrt.push_back(x0);
  const std::vector<Tensor> gs = ad::grad(shared, wrt, R);
  wrt.push_back(x0b), wrt.push_back(x0c);
  const std::vector<Tensor> gp = ad::grad(separate, wrt, R);
  for (size_t i = 0; i < t.in_w.size(); ++i) CHECK(max_abs_diff(gs[i], gp[i]) < 1e-13);
  CHECK(max_abs_diff(gs[4], gp[4] + gp[5] + gp[6]) < 1e-13);  // x0's three paths
}

TEST_CASE("ci transformer: bidirectional (the last position changes z at position 0), and rope breaks permutation symmetry") {
  for (bool rope : {true, false}) {
    CAPTURE(rope);
    GlobalCITransformer t;
    ad::Rng rng(4);
    t.init(opts(8, 2, 2, 16, rope), {5, 3}, {4, 6}, ad::DType::f64, rng);
    perturb(t, 5);
    ad::Rng data(6);
    const int64_t B = 2, S = 6;
    const Tensor x0 = ad::rand_normal({B, S, 5}, 0, 1, data, ad::DType::f64);
    const Tensor x1 = ad::rand_normal({B, S, 3}, 0, 1, data, ad::DType::f64);
    const std::vector<Tensor> z = t.forward({x0, x1});
    // change only the last position of the first layer's input
    Tensor x0b = ad::clone(x0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < 5; ++j) x0b.set_item((b * S + S - 1) * 5 + j, data.normal());
    const std::vector<Tensor> zb = t.forward({x0b, x1});
    for (size_t l = 0; l < z.size(); ++l) {
      CAPTURE(l);
      CHECK(max_abs_diff(ad::slice(z[l], 1, 0, 1), ad::slice(zb[l], 1, 0, 1)) > 1e-3);
    }
    // a sequence reordered: without positions z is reordered the same way; with rope it is not
    const std::vector<int64_t> perm = {3, 0, 5, 1, 4, 2};
    const std::vector<Tensor> zp = t.forward({permute_positions(x0, perm), permute_positions(x1, perm)});
    double dev = 0;
    for (size_t l = 0; l < z.size(); ++l) dev = std::max(dev, max_abs_diff(zp[l], permute_positions(z[l], perm)));
    if (rope) CHECK(dev > 1e-2);
    else CHECK(dev < 1e-12);
  }
}

TEST_CASE("ci transformer: per-layer input and output blocks equal concatenate -> project -> split; shapes; init scale") {
  GlobalCITransformer t;
  ad::Rng rng(7);
  t.init(opts(6, 3, 1, 7, true), {3, 7, 2}, {4, 6, 1}, ad::DType::f64, rng);
  perturb(t, 8);
  ad::Rng data(9);
  const Tensor x0 = ad::rand_normal({2, 5, 3}, 0, 1, data, ad::DType::f64);
  const Tensor x1 = ad::rand_normal({2, 5, 7}, 0, 3, data, ad::DType::f64);
  const Tensor x2 = ad::rand_normal({2, 5, 2}, 0, 0.1, data, ad::DType::f64);
  const std::vector<Tensor> z = t.forward({x0, x1, x2});
  REQUIRE(z.size() == 3);
  CHECK(z[0].shape() == ad::Shape({2, 5, 4}));
  CHECK(z[1].shape() == ad::Shape({2, 5, 6}));
  CHECK(z[2].shape() == ad::Shape({2, 5, 1}));
  // input: concat_l rms(x_l) [.., 12] times the blocks stacked by rows [12, D]
  const Tensor a_ref = ad::matmul(ad::concat({rms_ref(x0), rms_ref(x1), rms_ref(x2)}, -1), ad::concat(t.in_w, 0)) + t.in_b;
  CHECK(max_abs_diff(t.embed({x0, x1, x2}), a_ref) < 1e-12);
  // output: h times the blocks side by side [D, 11] plus the biases concatenated, split
  const Tensor zc = ad::matmul(t.trunk(a_ref), ad::concat(t.out_w, 1)) + ad::concat(t.out_b, 0);
  int64_t off = 0;
  for (size_t l = 0; l < z.size(); ++l) {
    const int64_t C = z[l].size(-1);
    CHECK(max_abs_diff(z[l], ad::slice(zc, -1, off, off + C)) < 1e-12);
    off += C;
  }
  CHECK(off == zc.size(-1));
  // inputs must be [B, S, d] with one B, S
  CHECK_THROWS_WITH(t.forward({x0, ad::slice(x1, 1, 0, 4), x2}), doctest::Contains("layer input 1 is [2, 4, 7]"));
  CHECK_THROWS_WITH(t.forward({ad::reshape(x0, {10, 3}), x1, x2}), doctest::Contains("shared_mlp"));

  // Initial z (no perturbation) are O(1) whatever the input scales; same seed, same bits.
  GlobalCITransformer a, b;
  ad::Rng ra(11), rb(11);
  a.init(opts(32, 4, 2, 64, true), {16, 48}, {20, 30}, ad::DType::f32, ra);
  b.init(opts(32, 4, 2, 64, true), {16, 48}, {20, 30}, ad::DType::f32, rb);
  ad::Rng d2(12);
  const Tensor y0 = ad::rand_normal({4, 16, 16}, 0, 50, d2), y1 = ad::rand_normal({4, 16, 48}, 0, 0.01, d2);
  const std::vector<Tensor> za = a.forward({y0, y1}), zb = b.forward({y0, y1});
  for (size_t l = 0; l < za.size(); ++l) {
    CHECK(za[l].to_vector() == zb[l].to_vector());
    double s2 = 0;
    for (int64_t i = 0; i < za[l].numel(); ++i) s2 += za[l].item(i) * za[l].item(i);
    const double rms = std::sqrt(s2 / (double)za[l].numel());
    CAPTURE(l);
    CHECK(rms > 0.5);
    CHECK(rms < 2.0);
  }
}

TEST_CASE("ci transformer: config keys and errors name the file and key") {
  auto cfg = [](nlohmann::json ci) {
    return nlohmann::json{{"C", 4}, {"ci_fn", ci}, {"losses", {{{"name", "stochastic_recon"}, {"coeff", 1}}}}};
  };
  const decomp::DecompConfig ok = decomp::parse_decomp_config(
      cfg({{"type", "transformer"}, {"global", true}, {"d_model", 12}, {"n_heads", 3}, {"n_blocks", 1}, {"d_mlp", 20}}), "c.json");
  CHECK(ok.model.ci_type == decomp::CIType::transformer);
  CHECK(ok.model.global_ci);
  CHECK(ok.model.ci_transformer.d_model == 12);
  CHECK(ok.model.ci_transformer.n_heads == 3);
  CHECK(ok.model.ci_transformer.n_blocks == 1);
  CHECK(ok.model.ci_transformer.d_mlp == 20);
  CHECK(ok.model.ci_transformer.rope);
  CHECK_THROWS_WITH(decomp::parse_decomp_config(cfg({{"type", "transformer"}}), "c.json"),
                    doctest::Contains("c.json: ci_fn.global: type transformer is a global CI function"));
  CHECK_THROWS_WITH(decomp::parse_decomp_config(cfg({{"type", "transformer"}, {"global", true}, {"n_heads", 5}}), "c.json"),
                    doctest::Contains("c.json: ci_fn.n_heads: must divide d_model 64, got 5"));
  CHECK_THROWS_WITH(
      decomp::parse_decomp_config(cfg({{"type", "transformer"}, {"global", true}, {"d_model", 6}, {"n_heads", 2}}), "c.json"),
      doctest::Contains("c.json: ci_fn.rope: needs an even head dimension d_model / n_heads, got 3"));
  CHECK_FALSE(decomp::parse_decomp_config(
                  cfg({{"type", "transformer"}, {"global", true}, {"d_model", 6}, {"n_heads", 2}, {"rope", false}}), "c.json")
                  .model.ci_transformer.rope);
  CHECK_THROWS_WITH(decomp::parse_decomp_config(cfg({{"type", "transformer"}, {"global", true}, {"n_blocks", 0}}), "c.json"),
                    doctest::Contains("c.json: ci_fn.n_blocks: must be >= 1"));
  CHECK_THROWS_WITH(decomp::parse_decomp_config(cfg({{"type", "transformer"}, {"global", true}, {"hidden", {8}}}), "c.json"),
                    doctest::Contains("c.json: ci_fn.hidden: is not a key of the transformer CI function"));
  CHECK_THROWS_WITH(decomp::parse_decomp_config(cfg({{"type", "shared_mlp"}, {"global", true}, {"d_model", 8}}), "c.json"),
                    doctest::Contains("c.json: ci_fn.d_model: unknown key"));
  // a toy target ([B, d] layer inputs) is refused when the decomposition is built
  spd_test::TinyTMS tms(5, 2, false, ad::DType::f32);
  const decomp::Target toy = tms.target();
  ad::Rng rng(1);
  CHECK_THROWS_WITH(decomp::make_decomposition(toy, decomp::parse_decomp_config(cfg({{"type", "transformer"}, {"global", true}}), "toy.json"), rng),
                    doctest::Contains("toy.json: building the spd decomposition (C 4): ci_fn.type: the transformer CI function "
                                      "needs sequence inputs [B, S, d] to every decomposed layer, but layer 'linear1'"));
  CHECK_THROWS_WITH(decomp::make_decomposition(toy, decomp::parse_decomp_config(cfg({{"type", "transformer"}, {"global", true}}), "toy.json"), rng),
                    doctest::Contains("gets [1, 5] (no sequence axis); use {\"type\": \"shared_mlp\", \"global\": true}"));
  // built without the config reader: still global only
  decomp::ComponentModelOptions mo;
  mo.ci_type = decomp::CIType::transformer;
  CHECK_THROWS_WITH(decomp::ComponentModel(toy.layers, mo, rng), doctest::Contains("global only"));
}

namespace {
// A one-block attention-only induction transformer (untrained), q/v/o of its block decomposed.
nlohmann::json ih_config() {
  return nlohmann::json::parse(R"({
    "target": {"run_config": {"model": {"type": "induction", "vocab": 8, "d_model": 8, "n_heads": 2, "n_layers": 1, "max_len": 8},
                              "data": {"type": "induction", "half_len": 4}, "train": {"steps": 1, "batch_size": 4, "lr": 1e-3}},
               "layers": ["blocks.0.attn.q_proj", "blocks.0.attn.v_proj", "blocks.0.attn.o_proj"]},
    "seed": 3, "C": 5,
    "ci_fn": {"type": "transformer", "global": true, "d_model": 8, "n_heads": 2, "n_blocks": 1, "d_mlp": 12},
    "losses": [{"name": "faithfulness", "coeff": 1},
               {"name": "importance_minimality", "coeff": 1e-2, "p": 1},
               {"name": "stochastic_recon", "coeff": 1}],
    "train": {"steps": 20, "batch_size": 4, "lr": 1e-2, "schedule": "constant", "log_every": 1}
  })");
}
}  // namespace

TEST_CASE("ci transformer: a tiny SPD run on an induction-head target trains, and a checkpoint restores identical z") {
  const nlohmann::json j = ih_config();
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "ih.json");
  const decomp::LoadedTarget lt = decomp::untrained_target(j, "ih.json");
  ad::Rng init(cfg.seed);
  decomp::SPD spd(lt.target, cfg, init);
  const std::vector<std::string> names = spd.cm.ci_param_names();
  REQUIRE(names.size() == spd.cm.ci_params().size());
  for (const std::string& n : names) CHECK(n.rfind("ci_global.", 0) == 0);
  CHECK(names.front() == "ci_global.in_w.blocks.0.attn.q_proj");
  CHECK(names.back() == "ci_global.out_b.blocks.0.attn.o_proj");
  std::vector<std::vector<double>> ci_before;
  for (const Tensor& p : spd.cm.ci_params()) ci_before.push_back(p.to_vector());

  decomp::TrainLog log;
  CHECK(decomp::train_decomposition(spd, &log) == 20);
  const std::vector<double>& total = log.values.at("total");
  REQUIRE(total.size() == 20);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += total[i], last += total[15 + i];
  MESSAGE("mean total loss, steps 1-5: " << first / 5 << ", steps 16-20: " << last / 5);
  CHECK(last < 0.7 * first);
  size_t moved = 0;
  const std::vector<Tensor> ci_after = spd.cm.ci_params();
  for (size_t i = 0; i < ci_after.size(); ++i) moved += ci_after[i].to_vector() != ci_before[i];
  CHECK(moved == ci_after.size());  // every CI tensor got a gradient and moved

  // checkpoint round trip: a fresh decomposition (other initial values) restored from the file
  const std::string path = (std::filesystem::temp_directory_path() / "pd_test_ci_transformer.safetensors").string();
  ad::Adam adam({ad::ParamGroup("components", spd.cm.component_params()), ad::ParamGroup("ci_fns", spd.cm.ci_params())});
  decomp::save_spd_checkpoint(path, spd, adam, log, 20, 0.1, j, "none", "0000000000000000");
  ad::Rng other(99);
  decomp::SPD fresh(lt.target, cfg, other);
  ad::Rng data(5);
  const decomp::Batch b = lt.target.sample(3, data);
  REQUIRE(b.ids.shape.nd == 2);
  ad::Rng r1(1), r2(1);
  const decomp::StepState s_orig = spd.prepare(b, r1);
  CHECK(s_orig.z[0].to_vector() != fresh.prepare(b, r2).z[0].to_vector());
  decomp::restore_params(decomp::read_spd_checkpoint(path), fresh);
  ad::Rng r3(1);
  const decomp::StepState s_rest = fresh.prepare(b, r3);
  REQUIRE(s_rest.z.size() == 3);
  for (size_t l = 0; l < 3; ++l) {
    CHECK(s_rest.z[l].shape() == ad::Shape({3, b.ids.shape[1], 5}));
    CHECK(s_rest.z[l].to_vector() == s_orig.z[l].to_vector());
  }
  std::filesystem::remove(path);
}

TEST_CASE("ci transformer: pd audit checks every ci_global tensor of a decomposition") {
  const std::string path = (std::filesystem::temp_directory_path() / "pd_test_ci_transformer_audit.json").string();
  ad::write_file_atomic(path, ih_config().dump());
  std::ostringstream out;
  const bool ok = decomp::audit_config(path, 2, 2, false, out);
  std::filesystem::remove(path);
  INFO(out.str());
  CHECK(ok);
  for (const char* n : {"ci_global.in_w.blocks.0.attn.v_proj", "ci_global.blocks.0.wk", "ci_global.blocks.0.attn_norm",
                        "ci_global.final_norm", "ci_global.out_w.blocks.0.attn.o_proj"})
    CHECK(out.str().find(n) != std::string::npos);
  CHECK(out.str().find("ZERO-GRAD") == std::string::npos);
}
